//! The control plane's few calls into libc that are not about packets.

/// The process's effective user id.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// True when running as root (effective uid 0).
pub fn is_root() -> bool {
    euid() == 0
}
