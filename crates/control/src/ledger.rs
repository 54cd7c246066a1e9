//! The accounting ledger: from the cores' running totals to database rows.
//!
//! Each worker core counts its members' traffic as running totals that only
//! grow (`engine::members::Accounts`). The [`Ledger`] remembers what it has
//! already written; [`Ledger::flush`] takes the current totals (one entry per
//! member and core, or already summed), writes the difference to the period the flush
//! falls in, and only then remembers the new totals. A flush that fails
//! writes nothing and forgets nothing: the next flush writes it all. The
//! daemon flushes every `interval` and once more when it stops, so a clean
//! stop loses nothing that was counted.
//!
//! Every flush is numbered and written once only
//! ([`Database::write_accounting_once`]). A flush whose outcome is unknown
//! (the database went away, or did not answer in time, after the commit
//! may have been sent) stays *in doubt*: the next flush first sends exactly
//! it again, under the same number, before anything new. Written or not the
//! first time, it is then written once.
//!
//! In a pair ([`Ledger::for_pair`]) the other box holds what this
//! one counted and has not written (sent twice a second, [`crate::pair`]), and
//! writes it under this box's name and number if this one dies. Should this
//! box come back and find its flush written, it counts it as written: what
//! it counted in the last half second before the other box took over is lost
//! (at most that), and nothing is written twice.

use crate::db::{Database, DbError, MemberTraffic};
use std::collections::HashMap;

/// Where accounting periods start: every `period` seconds since the epoch (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Periods {
    pub seconds: i64,
}

impl Periods {
    pub const HOURLY: Periods = Periods { seconds: 3600 };

    /// The start of the period `unix` falls in.
    pub fn start(&self, unix: i64) -> i64 {
        unix - unix.rem_euclid(self.seconds.max(1))
    }
}

#[derive(Debug)]
pub struct Ledger {
    written: HashMap<u32, MemberTraffic>,
    /// This box's name in `torwart_usage_flushes`.
    writer: String,
    /// The number of the next flush: milliseconds since the epoch when the
    /// ledger was made, then one more each flush (never reused after a restart).
    next: i64,
    /// In a pair (the other box may write this one's flushes).
    paired: bool,
    last_flush: Option<i64>,
    in_doubt: Option<InDoubt>,
}

/// A flush sent whose outcome is unknown.
#[derive(Debug)]
struct InDoubt {
    flush: i64,
    period_start: i64,
    delta: Vec<MemberTraffic>,
    /// What is written once it is.
    totals: std::collections::BTreeMap<u32, MemberTraffic>,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger::new()
    }
}

impl Ledger {
    /// The ledger of a box on its own, named by its host name and the
    /// start of its machine id (`host:gw1/3f2a9c01`): two boxes that
    /// share a database and a host name do not take each other's flushes
    /// for their own.
    pub fn new() -> Ledger {
        let read = |path| std::fs::read_to_string(path).unwrap_or_default();
        let (host, id) = (read("/proc/sys/kernel/hostname"), read("/etc/machine-id"));
        Ledger::named(writer_name(host.trim(), id.trim()), false)
    }

    /// The ledger of box `writer` of a pair.
    pub fn for_pair(writer: String) -> Ledger {
        Ledger::named(writer, true)
    }

    fn named(writer: String, paired: bool) -> Ledger {
        Ledger { written: HashMap::new(), writer, next: unix_ms(), paired, last_flush: None, in_doubt: None }
    }

    /// A ledger that counts from zero again (the workers start afresh),
    /// numbering on past the numbers [`Ledger::unwritten`] gave out. Call
    /// once what is unwritten is kept elsewhere (spooled).
    pub fn fresh(&self) -> Ledger {
        Ledger { next: self.next + 1, last_flush: self.last_flush, ..Ledger::named(self.writer.clone(), self.paired) }
    }

    /// This box's name in `torwart_usage_flushes`.
    pub fn writer(&self) -> &str {
        &self.writer
    }

    /// What is not known to be written, in numbered parts, for a spool or
    /// the other box of a pair: the flush in doubt under its number and
    /// period, then what was counted since under the next number (its
    /// period is when it is written). Each part written under its number
    /// is written once, however often it is sent.
    pub fn unwritten(&self, totals: &[MemberTraffic]) -> Vec<Part> {
        let mut parts = Vec::new();
        let since = match &self.in_doubt {
            Some(d) => {
                parts.push(Part { flush: d.flush, period_start: Some(d.period_start), traffic: d.delta.clone() });
                let mut base = self.written.clone();
                base.extend(d.totals.iter().map(|(k, v)| (*k, *v)));
                delta(totals, &base)
            }
            None => self.pending(totals),
        };
        if !since.is_empty() {
            parts.push(Part { flush: self.next, period_start: None, traffic: since });
        }
        parts
    }

    /// The number the next flush will have, in a pair: the other box writes
    /// this box's pending usage under it if this box dies. A flush in doubt
    /// keeps its number: written by either box, it is written once.
    pub fn next_flush(&self) -> Option<i64> {
        self.paired.then(|| self.in_doubt.as_ref().map_or(self.next, |d| d.flush))
    }

    /// A flush was sent and its outcome is unknown (retried first at the next).
    pub fn in_doubt(&self) -> bool {
        self.in_doubt.is_some()
    }

    /// The number of the last flush written (in a pair).
    pub fn last_flush(&self) -> Option<i64> {
        self.last_flush
    }

    /// What would be written now: `totals` (summed per member) minus what
    /// was written before. A total below what was written means the counters
    /// started again (the engine restarted): all of it is new.
    pub fn pending(&self, totals: &[MemberTraffic]) -> Vec<MemberTraffic> {
        delta(totals, &self.written)
    }

    /// Writes what was counted since the last flush to the period of
    /// `now_unix`, after the flush in doubt if there is one. Returns the
    /// members written. If the future is dropped or fails after it began
    /// writing, the flush is in doubt (see the module docs).
    pub async fn flush(
        &mut self,
        db: &Database,
        periods: Periods,
        now_unix: i64,
        totals: &[MemberTraffic],
    ) -> Result<usize, DbError> {
        let mut members = 0;
        if let Some(d) = &self.in_doubt {
            if db.write_accounting_once(&self.writer, d.flush, d.period_start, &d.delta).await? {
                members += d.delta.len();
                tracing::info!(flush = d.flush, "usage flush in doubt: written now");
            } else {
                tracing::info!(flush = d.flush, "usage flush in doubt: had been written");
            }
            self.settle();
        }
        let delta = self.pending(totals);
        if delta.is_empty() {
            return Ok(members);
        }
        let flush = self.next;
        self.next = (flush + 1).max(unix_ms());
        let period_start = periods.start(now_unix);
        let d = self.in_doubt.insert(InDoubt { flush, period_start, delta, totals: summed(totals) });
        if !db.write_accounting_once(&self.writer, flush, period_start, &d.delta).await? && self.paired {
            tracing::warn!(flush, "usage flush already written by the other box of the pair");
        }
        members += d.delta.len();
        self.settle();
        Ok(members)
    }

    /// The flush in doubt is written (now or before): its totals are.
    fn settle(&mut self) {
        if let Some(d) = self.in_doubt.take() {
            self.written.extend(d.totals);
            self.last_flush = Some(d.flush);
        }
    }
}

/// `totals` (summed per member) minus `written`; a total below what was
/// written means the counters started again: all of it is new.
fn delta(totals: &[MemberTraffic], written: &HashMap<u32, MemberTraffic>) -> Vec<MemberTraffic> {
    summed(totals)
        .into_values()
        .filter_map(|t| {
            let w = written.get(&t.member_id).copied().unwrap_or_default();
            let restarted = t.up_bytes < w.up_bytes
                || t.down_bytes < w.down_bytes
                || t.up_packets < w.up_packets
                || t.down_packets < w.down_packets;
            let d = if restarted {
                t
            } else {
                MemberTraffic {
                    member_id: t.member_id,
                    up_bytes: t.up_bytes - w.up_bytes,
                    down_bytes: t.down_bytes - w.down_bytes,
                    up_packets: t.up_packets - w.up_packets,
                    down_packets: t.down_packets - w.down_packets,
                }
            };
            let any = d.up_bytes != 0 || d.down_bytes != 0 || d.up_packets != 0 || d.down_packets != 0;
            any.then_some(d)
        })
        .collect()
}

/// A numbered part of the usage not known to be written ([`Ledger::unwritten`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// Its number under the ledger's writer.
    pub flush: i64,
    /// The period it belongs to; `None`: the one it is written in.
    pub period_start: Option<i64>,
    pub traffic: Vec<MemberTraffic>,
}

/// A box's writer name from its host name and machine id (either may be
/// empty or odd: only letters, digits, `-`, `.` and `_` of them are kept).
fn writer_name(host: &str, machine_id: &str) -> String {
    let clean = |s: &str, max: usize| -> String {
        s.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')).take(max).collect()
    };
    let host = clean(host, 64);
    let id = clean(machine_id, 8);
    let host = if host.is_empty() { "torwart".to_owned() } else { host };
    if id.is_empty() {
        format!("host:{host}")
    } else {
        format!("host:{host}/{id}")
    }
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The totals per member (several entries of one member, e.g. one per core, added).
fn summed(totals: &[MemberTraffic]) -> std::collections::BTreeMap<u32, MemberTraffic> {
    let mut out = std::collections::BTreeMap::new();
    for t in totals {
        let s: &mut MemberTraffic =
            out.entry(t.member_id).or_insert(MemberTraffic { member_id: t.member_id, ..Default::default() });
        s.up_bytes += t.up_bytes;
        s.down_bytes += t.down_bytes;
        s.up_packets += t.up_packets;
        s.down_packets += t.down_packets;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(id: u32, ub: u64, up: u64) -> MemberTraffic {
        MemberTraffic { member_id: id, up_bytes: ub, up_packets: up, ..Default::default() }
    }

    #[test]
    fn a_box_is_named_by_its_host_and_machine() {
        assert_eq!(writer_name("gw1", "3f2a9c0117d24e8b9a6f"), "host:gw1/3f2a9c01");
        assert_eq!(writer_name("", ""), "host:torwart");
        assert_eq!(writer_name("gw\n1 x", "zz\u{1b}[31m"), "host:gw1x/zz31m");
    }

    #[test]
    fn per_core_entries_are_summed_and_restarts_lose_nothing() {
        let mut l = Ledger::new();
        // Two cores count member 7.
        assert_eq!(l.pending(&[t(7, 100, 1), t(7, 50, 1)]), vec![t(7, 150, 2)]);
        l.written.insert(7, t(7, 150, 2));
        assert!(l.pending(&[t(7, 100, 1), t(7, 50, 1)]).is_empty());
        assert_eq!(l.pending(&[t(7, 120, 2), t(7, 50, 1)]), vec![t(7, 20, 1)]);
        // The counters started again below what was written: all of it is new.
        assert_eq!(l.pending(&[t(7, 30, 1)]), vec![t(7, 30, 1)]);
    }

    /// What is not known to be written comes in numbered parts: the flush
    /// in doubt under its own number and period, what came after it under
    /// the next number; a fresh ledger never reuses either number.
    #[test]
    fn unwritten_usage_is_the_flush_in_doubt_and_the_rest_each_under_its_number() {
        let mut l = Ledger::new();
        assert!(l.unwritten(&[]).is_empty());
        l.written.insert(7, t(7, 100, 1));
        let (next, hour) = (l.next, Periods::HOURLY.start(7200));
        assert_eq!(
            l.unwritten(&[t(7, 130, 2), t(8, 5, 1)]),
            vec![Part { flush: next, period_start: None, traffic: vec![t(7, 30, 1), t(8, 5, 1)] }]
        );
        let totals = summed(&[t(7, 150, 2)]);
        l.in_doubt = Some(InDoubt { flush: next, period_start: hour, delta: vec![t(7, 50, 1)], totals });
        l.next += 1;
        assert_eq!(
            l.unwritten(&[t(7, 180, 3), t(8, 5, 1)]),
            vec![
                Part { flush: next, period_start: Some(hour), traffic: vec![t(7, 50, 1)] },
                Part { flush: next + 1, period_start: None, traffic: vec![t(7, 30, 1), t(8, 5, 1)] },
            ]
        );
        assert_eq!(l.unwritten(&[t(7, 150, 2)]).len(), 1, "nothing after the flush in doubt");
        assert!(l.fresh().next > next + 1);
    }

    /// A flush in doubt is sent again, under its number, before anything
    /// new: written once whether its first commit happened or not.
    #[test]
    fn a_flush_in_doubt_is_written_once() {
        let file = std::env::temp_dir().join(format!("torwart-ledger-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&file);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let db = Database::open_or_create(&format!("sqlite://{}", file.display())).await.unwrap();
            db.init().await.unwrap();
            let written = |db: &Database| {
                let db = db.clone();
                async move { db.read_accounting(7).await.unwrap().iter().map(|p| p.up_bytes).sum::<u64>() }
            };
            let mut l = Ledger::new();
            let hour = Periods::HOURLY;
            assert_eq!(l.flush(&db, hour, 7200, &[t(7, 100, 1)]).await.unwrap(), 1);
            assert_eq!(written(&db).await, 100);
            // A flush sent whose answer was lost: the next number, `delta`
            // of member 7 in the first period, to total `total` bytes.
            let doubt = |l: &mut Ledger, delta: u64, total: u64, packets: u64| {
                let flush = l.next;
                l.next += 1;
                let (delta, totals) = (vec![t(7, delta, 1)], summed(&[t(7, total, packets)]));
                l.in_doubt = Some(InDoubt { flush, period_start: hour.start(7200), delta, totals });
                flush
            };
            // Committed before the answer was lost.
            let flush = doubt(&mut l, 50, 150, 2);
            db.write_accounting_once(&l.writer, flush, hour.start(7200), &[t(7, 50, 1)]).await.unwrap();
            assert_eq!(l.pending(&[t(7, 180, 3)]), vec![t(7, 80, 2)], "in doubt is pending");
            assert_eq!(l.flush(&db, hour, 7300, &[t(7, 180, 3)]).await.unwrap(), 1);
            assert_eq!(written(&db).await, 180, "the doubtful flush once, then the rest");
            assert!(!l.in_doubt());
            // Lost before the commit.
            let flush = doubt(&mut l, 20, 200, 4);
            assert_eq!(l.flush(&db, hour, 7400, &[t(7, 200, 4)]).await.unwrap(), 1);
            assert_eq!(written(&db).await, 200);
            assert_eq!(l.last_flush(), Some(flush));
            db.close().await;
        });
        let _ = std::fs::remove_file(&file);
    }
}
