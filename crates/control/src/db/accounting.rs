//! Persisting the traffic counters: the `accounting` table.
//!
//! The daemon sums the worker cores' per-member counters and hands the sums
//! of a period to [`Database::write_accounting`] periodically and at
//! shutdown. Each call *adds* to the rows of that period
//! (`INSERT ... ON CONFLICT DO UPDATE SET bytes = bytes + excluded.bytes`),
//! in one transaction, so the caller flushes deltas: what was counted since
//! the last flush, never a running total. A flush that fails leaves the
//! table as it was, and the caller keeps its deltas for the next attempt.
//!
//! One row per member, period and direction: `outbound` is what the
//! member sent (up), `inbound` what they received (down). A direction with
//! neither bytes nor packets in a flush writes nothing, so idle members
//! cost no rows.

use crate::sys::unix_now;
use std::collections::BTreeMap;

use super::backend::{Stmt, Tx, Value};
use super::{Database, DbError};

/// How long a box's flush marks are kept, in milliseconds (a week).
const MARKS_KEPT_MS: i64 = 7 * 24 * 3600 * 1000;

/// One member's traffic (in a flush, in the stats file), as the cores counted it.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub struct MemberTraffic {
    pub member_id: u32,
    /// From the member (`outbound`).
    pub up_bytes: u64,
    /// To the member (`inbound`).
    pub down_bytes: u64,
    pub up_packets: u64,
    pub down_packets: u64,
}

/// A member's traffic in one period, as stored.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct AccountingPeriod {
    /// Start of the period, Unix seconds (UTC).
    pub period_start: i64,
    pub up_bytes: u64,
    pub down_bytes: u64,
    pub up_packets: u64,
    pub down_packets: u64,
}

/// Rows per statement: well below SQLite's and PostgreSQL's parameter limits.
const BATCH: usize = 200;

const UPSERT_TAIL: &str = " ON CONFLICT (member_id, period_start, direction) DO UPDATE SET \
    bytes = accounting.bytes + excluded.bytes, packets = accounting.packets + excluded.packets";

impl Database {
    /// Adds `traffic` to the period starting at `period_start_unix`, in one
    /// transaction. Several entries for one member are summed first.
    pub async fn write_accounting(&self, period_start_unix: i64, traffic: &[MemberTraffic]) -> Result<(), DbError> {
        let err = |e| self.sql("cannot write accounting", e);
        let mut tx = self.pool.begin().await.map_err(err)?;
        self.add_rows(&mut tx, period_start_unix, traffic).await?;
        tx.commit().await.map_err(err)
    }

    /// The rows of [`write_accounting`](Self::write_accounting), in `tx`.
    async fn add_rows(&self, tx: &mut Tx, period_start_unix: i64, traffic: &[MemberTraffic]) -> Result<(), DbError> {
        let mut sums: BTreeMap<u32, [u64; 4]> = BTreeMap::new();
        for t in traffic {
            let s = sums.entry(t.member_id).or_default();
            for (sum, add) in s.iter_mut().zip([t.up_bytes, t.up_packets, t.down_bytes, t.down_packets]) {
                *sum = sum.checked_add(add).ok_or_else(|| too_large(t.member_id))?;
            }
        }
        let mut rows: Vec<[Value; 5]> = Vec::with_capacity(2 * sums.len());
        for (member, [up_bytes, up_packets, down_bytes, down_packets]) in sums {
            for (direction, bytes, packets) in
                [("outbound", up_bytes, up_packets), ("inbound", down_bytes, down_packets)]
            {
                if bytes == 0 && packets == 0 {
                    continue;
                }
                let bytes = i64::try_from(bytes).map_err(|_| too_large(member))?;
                let packets = i64::try_from(packets).map_err(|_| too_large(member))?;
                rows.push([
                    Value::from(member),
                    Value::Int(period_start_unix),
                    Value::from(direction),
                    Value::Int(bytes),
                    Value::Int(packets),
                ]);
            }
        }
        let err = |e| self.sql("cannot write accounting", e);
        for chunk in rows.chunks(BATCH) {
            let mut sql =
                String::from("INSERT INTO accounting (member_id, period_start, direction, bytes, packets) VALUES ");
            let mut params = Vec::with_capacity(5 * chunk.len());
            for (i, row) in chunk.iter().enumerate() {
                let n = 5 * i;
                sql.push_str(&format!(
                    "{}(${}, ${}, ${}, ${}, ${})",
                    if i > 0 { ", " } else { "" },
                    n + 1,
                    n + 2,
                    n + 3,
                    n + 4,
                    n + 5
                ));
                params.extend(row.iter().cloned());
            }
            sql.push_str(UPSERT_TAIL);
            tx.execute(Stmt::new(sql, params)).await.map_err(err)?;
        }
        Ok(())
    }

    /// As [`write_accounting`](Self::write_accounting), once only for the
    /// flush `flush` of box `writer`: the mark goes into
    /// `torwart_usage_flushes` in the same transaction, so a flush that one
    /// box of a pair wrote for the other (which died before it said so) is
    /// not written again. Returns false, writing nothing, if it was written.
    pub async fn write_accounting_once(
        &self,
        writer: &str,
        flush: i64,
        period_start_unix: i64,
        traffic: &[MemberTraffic],
    ) -> Result<bool, DbError> {
        let err = |e| self.sql("cannot write accounting", e);
        let mut tx = self.pool.begin().await.map_err(err)?;
        // `init` makes the table; a database made before it existed gets it
        // here, once. Not on every flush: PostgreSQL checks the right to
        // create in the schema even when the table is there, which a
        // least-privileged daemon's role (15 and later: no CREATE on
        // `public` by default) does not have.
        if self.base_table(&mut tx, "torwart_usage_flushes").await?.is_none() {
            tx.execute(Stmt::new(super::schema::USAGE_FLUSHES_TABLE, vec![])).await.map_err(err)?;
        }
        let mark = Stmt::new(
            "INSERT INTO torwart_usage_flushes (writer, flush, written_at) VALUES ($1, $2, $3) \
             ON CONFLICT (writer, flush) DO NOTHING",
            vec![Value::from(writer), Value::Int(flush), Value::Int(unix_now())],
        );
        if tx.execute(mark).await.map_err(err)? == 0 {
            return Ok(false);
        }
        // A writer's marks older than a week are of no use (a flush is in
        // doubt for seconds): the table stays a week of flushes long.
        // Flush numbers are milliseconds since the epoch (`crate::ledger`).
        let prune = Stmt::new(
            "DELETE FROM torwart_usage_flushes WHERE writer = $1 AND flush < $2",
            vec![Value::from(writer), Value::Int(flush.saturating_sub(MARKS_KEPT_MS))],
        );
        tx.execute(prune).await.map_err(err)?;
        self.add_rows(&mut tx, period_start_unix, traffic).await?;
        tx.commit().await.map_err(err)?;
        Ok(true)
    }

    /// Every period recorded for `member_id`, oldest first.
    pub async fn read_accounting(&self, member_id: u32) -> Result<Vec<AccountingPeriod>, DbError> {
        self.usage_since(member_id, i64::MIN).await
    }

    /// The periods recorded for `member_id` that start at or after `since`
    /// (Unix seconds), oldest first.
    pub async fn usage_since(&self, member_id: u32, since: i64) -> Result<Vec<AccountingPeriod>, DbError> {
        let sql = "SELECT period_start, direction, bytes, packets FROM accounting \
                   WHERE member_id = $1 AND period_start >= $2 ORDER BY period_start, direction";
        let doing = format!("cannot read accounting of member {member_id}");
        let params = vec![Value::from(member_id), Value::from(since)];
        let rows = self.pool.fetch(Stmt::new(sql, params)).await.map_err(|e| self.sql(&doing, e))?;
        let mut periods: Vec<AccountingPeriod> = Vec::new();
        for i in 0..rows.len() {
            let Some(row) = rows.get(i) else { continue };
            let bad = |cause: String| DbError::Value(format!("{doing}: {cause}"));
            let int = |column: &str| -> Result<i64, DbError> {
                row.int(column)
                    .map_err(|c| bad(format!("column {column} {c}")))?
                    .ok_or_else(|| bad(format!("column {column} is NULL")))
            };
            let count = |column: &str| -> Result<u64, DbError> {
                let v = int(column)?;
                u64::try_from(v).map_err(|_| bad(format!("column {column} is negative ({v})")))
            };
            let start = int("period_start")?;
            let direction = row.text("direction").map_err(bad)?.unwrap_or_default();
            let (bytes, packets) = (count("bytes")?, count("packets")?);
            if periods.last().is_none_or(|p| p.period_start != start) {
                periods.push(AccountingPeriod { period_start: start, ..AccountingPeriod::default() });
            }
            let Some(p) = periods.last_mut() else { continue };
            match direction.as_str() {
                "outbound" => (p.up_bytes, p.up_packets) = (bytes, packets),
                "inbound" => (p.down_bytes, p.down_packets) = (bytes, packets),
                other => return Err(bad(format!("unknown direction \"{other}\""))),
            }
        }
        Ok(periods)
    }
}

fn too_large(member: u32) -> DbError {
    DbError::Value(format!("accounting of member {member}: a counter exceeds 2^63-1, the largest BIGINT"))
}
