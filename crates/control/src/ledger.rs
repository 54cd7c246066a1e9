//! The accounting ledger: from the cores' running totals to database rows.
//!
//! Each worker core counts its members' traffic as running totals that only
//! grow (`engine::members::Accounts`). The [`Ledger`] remembers what it has
//! already written; [`Ledger::flush`] takes the current totals (summed over
//! the cores by the caller), writes the difference to the period the flush
//! falls in, and only then remembers the new totals. A flush that fails
//! writes nothing and forgets nothing: the next flush writes it all. The
//! daemon flushes every `interval` and once more when it stops, so a clean
//! stop loses nothing that was counted.

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
}

impl Ledger {
    pub fn new() -> Ledger {
        Ledger::default()
    }

    /// What would be written now: `totals` minus what was written before.
    pub fn pending(&self, totals: &[MemberTraffic]) -> Vec<MemberTraffic> {
        totals
            .iter()
            .filter_map(|t| {
                let w = self.written.get(&t.member_id).copied().unwrap_or_default();
                let d = MemberTraffic {
                    member_id: t.member_id,
                    up_bytes: t.up_bytes.saturating_sub(w.up_bytes),
                    down_bytes: t.down_bytes.saturating_sub(w.down_bytes),
                    up_packets: t.up_packets.saturating_sub(w.up_packets),
                    down_packets: t.down_packets.saturating_sub(w.down_packets),
                };
                (d.up_packets + d.down_packets + d.up_bytes + d.down_bytes > 0).then_some(d)
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
        db.write_accounting(periods.start(now_unix), &delta).await?;
        for t in totals {
            self.written.insert(t.member_id, *t);
        }
        Ok(delta.len())
    }
}
