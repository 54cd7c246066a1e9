//! The usage spool: member usage the database would not take when the
//! daemon stopped, kept on disk until it does.
//!
//! At a stop the daemon writes the usage counted since the last flush; if
//! the database refuses until a deadline (locked, moved, unreachable), the
//! usage goes to the spool file instead, and the daemon exits non-zero. At
//! the next start (and before every flush while a spool exists) the spool
//! is written to the database, period by period, and each period is taken
//! out of the file only once the database has it. So usage is never lost
//! silently: it is in the database, in the spool, or in the error.
//!
//! The file is JSON lines, one [`Record`] each, written whole with
//! [`files::write_private`] (owner-only, no link followed, synced before
//! it replaces the old one). A line that does not parse stops the replay
//! with an error naming the line; the file is then kept as it is for the
//! operator. It is read only up to [`MAX_BYTES`].
//!
//! Each record carries the number its usage was counted under (the box's
//! writer name and flush number, [`crate::ledger::Part`]), and is written
//! with [`Database::write_accounting_once`]: a flush in doubt when it was
//! spooled (its commit may have happened), or a replay cut off between the
//! database's commit and the rewrite of the file, is written once. Records
//! from before the numbers (no `writer`) are written as they are.

use crate::db::{Database, DbError, MemberTraffic};
use crate::files;
use crate::ledger::Part;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The largest spool read back (a day of hourly periods for a million members is far below).
pub const MAX_BYTES: u64 = 256 << 20;

/// One member's usage in one period, as spooled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Start of the accounting period, Unix seconds (UTC).
    pub period_start: i64,
    /// The box that counted it and the flush number it was counted under
    /// (`torwart_usage_flushes`); absent in spools from before them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flush: Option<i64>,
    pub member_id: u32,
    pub up_bytes: u64,
    pub down_bytes: u64,
    pub up_packets: u64,
    pub down_packets: u64,
}

/// Why the spool could not be read, written or replayed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("usage spool {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("usage spool {path} line {line}: {message} (the file is kept; fix or remove it)")]
    Parse { path: PathBuf, line: usize, message: String },
    #[error("usage spool {path}: larger than {MAX_BYTES} bytes (the file is kept; fix or remove it)")]
    TooLarge { path: PathBuf },
    #[error("usage spool {path}: not owned by uid {euid} alone (owner {owner}, mode {mode:o}); kept, not trusted")]
    NotOurs { path: PathBuf, euid: u32, owner: u32, mode: u32 },
    #[error("usage spool {path}: the database did not take it: {source}")]
    Database { path: PathBuf, source: DbError },
}

/// The spool at one path.
#[derive(Clone, Debug)]
pub struct Spool {
    path: PathBuf,
}

impl Spool {
    pub fn new(path: impl Into<PathBuf>) -> Spool {
        Spool { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True if a spool file exists (there is usage to replay).
    pub fn exists(&self) -> bool {
        self.path.symlink_metadata().is_ok()
    }

    /// The records in the file, in file order (none if there is no file).
    pub fn read(&self) -> Result<Vec<Record>, SpoolError> {
        let io = |source| SpoolError::Io { path: self.path.clone(), source };
        let opened =
            std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(&self.path);
        let file = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(e)),
        };
        let meta = file.metadata().map_err(io)?;
        // Usage records are trusted only from a file nobody else could have written.
        let euid = crate::sys::euid();
        if meta.uid() != euid || meta.mode() & 0o022 != 0 {
            let (owner, mode) = (meta.uid(), meta.mode() & 0o777);
            return Err(SpoolError::NotOurs { path: self.path.clone(), euid, owner, mode });
        }
        if meta.len() > MAX_BYTES {
            return Err(SpoolError::TooLarge { path: self.path.clone() });
        }
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::Read::take(file, MAX_BYTES), &mut text).map_err(io)?;
        parse(&self.path, &text)
    }

    /// Adds `parts` of `writer`'s usage to the file (after what it holds
    /// already), each under its number; a part without a period goes to
    /// the one starting at `period_now`. Returns the file it went to. If the
    /// file is there but cannot be used (it does not parse, is too large,
    /// is not ours), it is left as it is and the usage goes to a new file
    /// beside it, named after the time: the operator's to look at, never
    /// overwritten.
    pub fn append(&self, writer: &str, parts: &[Part], period_now: i64) -> Result<PathBuf, SpoolError> {
        let new = parts.iter().flat_map(|p| {
            p.traffic.iter().map(move |t| Record {
                period_start: p.period_start.unwrap_or(period_now),
                writer: Some(writer.to_owned()),
                flush: Some(p.flush),
                member_id: t.member_id,
                up_bytes: t.up_bytes,
                down_bytes: t.down_bytes,
                up_packets: t.up_packets,
                down_packets: t.down_packets,
            })
        });
        match self.read() {
            Ok(mut records) => {
                records.extend(new);
                self.write(&records).map(|()| self.path.clone())
            }
            Err(e @ SpoolError::Io { .. }) => Err(e),
            Err(_) => {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                let aside = Spool::new(format!("{}.{}", self.path.display(), now.as_nanos()));
                aside.write(&new.collect::<Vec<_>>()).map(|()| aside.path)
            }
        }
    }

    fn write(&self, records: &[Record]) -> Result<(), SpoolError> {
        let io = |source| SpoolError::Io { path: self.path.clone(), source };
        if records.is_empty() {
            return match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(e)),
                _ => Ok(()),
            };
        }
        let mut text = String::new();
        for r in records {
            text.push_str(&serde_json::to_string(r).map_err(|e| io(std::io::Error::other(e)))?);
            text.push('\n');
        }
        files::write_private(&self.path, text.as_bytes(), files::SPOOL_MODE, true).map_err(io)
    }

    /// Writes the spooled usage to `db`, one flush (or, unnumbered, one
    /// period) per transaction, taking each out of the file once written;
    /// the file is gone when all are. Returns the records written (a
    /// numbered flush the database had already counts as written).
    pub async fn replay(&self, db: &Database) -> Result<usize, SpoolError> {
        let mut records = self.read()?;
        type Key = (i64, Option<String>, Option<i64>);
        let mut groups: BTreeMap<Key, Vec<MemberTraffic>> = BTreeMap::new();
        for r in &records {
            groups.entry((r.period_start, r.writer.clone(), r.flush)).or_default().push(MemberTraffic {
                member_id: r.member_id,
                up_bytes: r.up_bytes,
                down_bytes: r.down_bytes,
                up_packets: r.up_packets,
                down_packets: r.down_packets,
            });
        }
        let mut written = 0;
        for ((start, writer, flush), traffic) in &groups {
            let db_err = |source| SpoolError::Database { path: self.path.clone(), source };
            match (writer, flush) {
                (Some(w), Some(f)) => {
                    db.write_accounting_once(w, *f, *start, traffic).await.map_err(db_err)?;
                }
                _ => db.write_accounting(*start, traffic).await.map_err(db_err)?,
            }
            written += traffic.len();
            records.retain(|r| (r.period_start, &r.writer, &r.flush) != (*start, writer, flush));
            self.write(&records)?;
        }
        Ok(written)
    }
}

/// The records of a spool's text, one JSON object per line (`path` names
/// it in messages).
pub fn parse(path: &Path, text: &str) -> Result<Vec<Record>, SpoolError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let record = serde_json::from_str(line).map_err(|e| SpoolError::Parse {
            path: path.to_owned(),
            line: i + 1,
            message: e.to_string(),
        })?;
        out.push(record);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(id: u32, up: u64) -> MemberTraffic {
        MemberTraffic { member_id: id, up_bytes: up, up_packets: 1, ..Default::default() }
    }

    #[test]
    fn appends_read_back_in_order_and_a_bad_line_is_named() {
        let d = std::env::temp_dir().join(format!("torwart-spool-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let s = Spool::new(d.join("usage.spool"));
        assert!(s.read().unwrap().is_empty());
        let part =
            |flush, period_start, traffic: &[MemberTraffic]| Part { flush, period_start, traffic: traffic.to_vec() };
        s.append("host:a", &[part(1, Some(3600), &[t(1, 10), t(2, 20)])], 0).unwrap();
        s.append("host:a", &[part(2, None, &[t(1, 5)])], 7200).unwrap();
        let r = s.read().unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!((r[2].period_start, r[2].member_id, r[2].up_bytes, r[2].flush), (7200, 1, 5, Some(2)));
        let mut text = std::fs::read_to_string(s.path()).unwrap();
        text.push_str("{\"period_start\": 1}\n");
        files::write_private(s.path(), text.as_bytes(), files::SPOOL_MODE, false).unwrap();
        let e = s.read().unwrap_err().to_string();
        assert!(e.contains("line 4") && e.contains("missing field"), "{e}");
        // Usage added to a spool that does not parse goes to a file beside it.
        let aside = s.append("host:a", &[part(3, None, &[t(9, 1)])], 7200).unwrap();
        assert_ne!(aside, s.path());
        assert_eq!(Spool::new(&aside).read().unwrap().len(), 1);
        assert_eq!(std::fs::read_to_string(s.path()).unwrap(), text, "the bad spool is left as it was");
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A numbered flush that reached the database before it was spooled
    /// (in doubt at the stop), or a spool replayed twice (cut off between
    /// the commit and the rewrite of the file), is written once.
    #[test]
    fn a_numbered_flush_is_written_once_however_often_it_is_replayed() {
        let d = std::env::temp_dir().join(format!("torwart-spool-once-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let db = Database::open_or_create(&format!("sqlite://{}", d.join("t.db").display())).await.unwrap();
            db.init().await.unwrap();
            let up = |db: &Database| {
                let db = db.clone();
                async move { db.read_accounting(7).await.unwrap().iter().map(|p| p.up_bytes).sum::<u64>() }
            };
            // Flush 1 was committed, its answer lost; flush 2 never sent.
            db.write_accounting_once("host:a", 1, 3600, &[t(7, 50)]).await.unwrap();
            let parts = [
                Part { flush: 1, period_start: Some(3600), traffic: vec![t(7, 50)] },
                Part { flush: 2, period_start: None, traffic: vec![t(7, 30)] },
            ];
            let s = Spool::new(d.join("usage.spool"));
            s.append("host:a", &parts, 7200).unwrap();
            let copy = Spool::new(d.join("copy.spool"));
            std::fs::copy(s.path(), copy.path()).unwrap();
            assert_eq!(s.replay(&db).await.unwrap(), 2);
            assert!(!s.exists());
            assert_eq!(up(&db).await, 80, "flush 1 once, flush 2 once");
            assert_eq!(copy.replay(&db).await.unwrap(), 2);
            assert_eq!(up(&db).await, 80, "replayed again: nothing twice");
            // A spool from before the numbers is written as it is.
            let old = "{\"period_start\":7200,\"member_id\":7,\"up_bytes\":5,\"down_bytes\":0,\"up_packets\":1,\"down_packets\":0}\n";
            files::write_private(s.path(), old.as_bytes(), files::SPOOL_MODE, false).unwrap();
            assert_eq!(s.replay(&db).await.unwrap(), 1);
            assert_eq!(up(&db).await, 85);
            db.close().await;
        });
        let _ = std::fs::remove_dir_all(&d);
    }
}
