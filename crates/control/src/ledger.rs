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
//! In a pair ([`Ledger::for_pair`]) every flush is numbered and written once
//! only ([`Database::write_accounting_once`]): the other box holds what this
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

#[derive(Debug, Default)]
pub struct Ledger {
    written: HashMap<u32, MemberTraffic>,
    /// In a pair: this box's name, and the number of its next flush.
    pair: Option<(String, i64)>,
    last_flush: Option<i64>,
}

impl Ledger {
    pub fn new() -> Ledger {
        Ledger::default()
    }

    /// A ledger whose flushes are numbered and written once, as box `writer`.
    pub fn for_pair(writer: String) -> Ledger {
        Ledger { pair: Some((writer, unix_ms())), ..Ledger::default() }
    }

    /// A ledger that counts from zero again (the workers start afresh),
    /// numbering on where this one was.
    pub fn fresh(&self) -> Ledger {
        Ledger { pair: self.pair.clone(), ..Ledger::default() }
    }

    /// The number the next flush will have (in a pair).
    pub fn next_flush(&self) -> Option<i64> {
        self.pair.as_ref().map(|p| p.1)
    }

    /// The number of the last flush written (in a pair).
    pub fn last_flush(&self) -> Option<i64> {
        self.last_flush
    }

    /// What would be written now: `totals` (summed per member) minus what
    /// was written before. A total below what was written means the counters
    /// started again (the engine restarted): all of it is new.
    pub fn pending(&self, totals: &[MemberTraffic]) -> Vec<MemberTraffic> {
        summed(totals)
            .into_values()
            .filter_map(|t| {
                let w = self.written.get(&t.member_id).copied().unwrap_or_default();
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

    /// Writes what was counted since the last flush to the period of
    /// `now_unix`. Returns the members written.
    pub async fn flush(
        &mut self,
        db: &Database,
        periods: Periods,
        now_unix: i64,
        totals: &[MemberTraffic],
    ) -> Result<usize, DbError> {
        let delta = self.pending(totals);
        if delta.is_empty() {
            return Ok(0);
        }
        match &mut self.pair {
            None => db.write_accounting(periods.start(now_unix), &delta).await?,
            Some((writer, flush)) => {
                if !db.write_accounting_once(writer, *flush, periods.start(now_unix), &delta).await? {
                    tracing::warn!(flush = *flush, "usage flush already written by the other box of the pair");
                }
                self.last_flush = Some(*flush);
                *flush = (*flush + 1).max(unix_ms());
            }
        }
        for (id, t) in summed(totals) {
            self.written.insert(id, t);
        }
        Ok(delta.len())
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
}
