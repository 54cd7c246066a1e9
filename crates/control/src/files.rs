//! Files the daemon writes that hold member usage (the stats file, the
//! usage spool): personal data, so never world-readable, and never written
//! through a link someone else planted.
//!
//! [`write_private`] writes the whole file anew: to `<path>.tmp`, created
//! with `O_CREAT | O_EXCL | O_NOFOLLOW` (a symlink or any file already at
//! that name is removed first, never followed, and if one reappears the
//! write fails instead of following it) at the given mode, then renamed
//! over `path`. Readers see the old file or the new one, never half of one.
//! A missing directory is created, for its owner only.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Mode of the stats file: the owner reads and writes, its group (an
/// operator's monitoring) reads, nobody else.
pub const STATS_MODE: u32 = 0o640;
/// Mode of the usage spool: the owner only.
pub const SPOOL_MODE: u32 = 0o600;

/// Why the daemon could not read a secret at `path` (`e`), with the fix
/// when it lacks the permission: the packaged unit runs it as user
/// `torwart`, and a file root made with `chmod 600` is root's alone.
pub fn unreadable(path: &Path, e: &std::io::Error) -> String {
    if e.kind() != std::io::ErrorKind::PermissionDenied {
        return e.to_string();
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    format!("{e}: this process (uid {uid}) may not read it; under the packaged unit make it the user torwart's: chown torwart: {}", path.display())
}

/// `path` with ".tmp" added to its file name.
pub fn temporary(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Replaces the file at `path` with `bytes`, created at `mode`; with
/// `durable`, the data is on disk before the rename.
pub fn write_private(path: &Path, bytes: &[u8], mode: u32, durable: bool) -> std::io::Result<()> {
    let tmp = temporary(path);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.exists() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)?;
    let written = file.write_all(bytes).and_then(|()| if durable { file.sync_data() } else { Ok(()) });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path)?;
    if durable {
        // The rename itself on disk too.
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("torwart-files-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_planted_link_is_not_followed_and_the_file_is_private() {
        let d = dir("link");
        let victim = d.join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let stats = d.join("stats.json");
        std::os::unix::fs::symlink(&victim, temporary(&stats)).unwrap();
        write_private(&stats, b"{}", STATS_MODE, false).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::read_to_string(&stats).unwrap(), "{}");
        let mode = std::fs::metadata(&stats).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o007, 0, "not world-readable: {mode:o}");
        assert!(!temporary(&stats).exists());
        // A file already at the final name that is a link is replaced, not followed.
        std::fs::remove_file(&stats).unwrap();
        std::os::unix::fs::symlink(&victim, &stats).unwrap();
        write_private(&stats, b"[]", SPOOL_MODE, true).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::metadata(&stats).unwrap().permissions().mode() & 0o777, SPOOL_MODE & 0o777);
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A secret the daemon may not read says who it is and the fix; any
    /// other failure is said as it is.
    #[test]
    fn an_unreadable_secret_names_the_fix() {
        let path = Path::new("/etc/torwart/sync.key");
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let said = unreadable(path, &denied);
        assert!(said.contains("uid ") && said.contains("chown torwart: /etc/torwart/sync.key"), "{said}");
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert_eq!(unreadable(path, &missing), missing.to_string());
    }
}
