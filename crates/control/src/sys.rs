//! The control plane's few calls into libc that are not about packets.

/// The process's effective user id.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Seconds since the Unix epoch (UTC), 0 if the clock is before it.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// True when running as root (effective uid 0).
pub fn is_root() -> bool {
    euid() == 0
}
