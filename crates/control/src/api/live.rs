//! What the API serves from: the daemon's main loop turns the workers'
//! published stats into a [`Snapshot`] once a second (rates are the change
//! since the one before), keeps ten minutes of [`Sample`]s for the page's
//! plots, and a log of reloads. Requests read the latest snapshot with one
//! atomic load; they never reach a worker (listing flows excepted, which
//! asks the workers through `dataplane`'s bounded queries).

use crate::stats::Stats;
use arc_swap::ArcSwap;
use policy::MemberDb;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a sample goes into the history, and how many are kept.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
pub const SAMPLES: usize = 120;
/// Reloads remembered.
pub const RELOADS: usize = 100;
/// Buckets of the reload duration histogram, in seconds.
pub const RELOAD_BOUNDS: [f64; 10] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0];

/// The daemon's figures at one moment, with rates over the second before.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Unix seconds.
    pub unix: i64,
    pub stats: Stats,
    /// Totals: bit/s up (from members) and down, frames/s in and out, drops/s.
    pub rates: Rates,
    /// Per member id, bit/s `[up, down]`, for members whose usage moved.
    pub member_bps: BTreeMap<u32, [f64; 2]>,
    /// Per worker: the share of its loops that found work, and frames/s in.
    pub load: Vec<f64>,
    pub worker_rx_pps: Vec<f64>,
    /// Drops per second by reason (those that moved).
    pub drop_rates: BTreeMap<String, f64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Rates {
    pub up_bps: f64,
    pub down_bps: f64,
    pub rx_pps: f64,
    pub tx_pps: f64,
    pub drops_ps: f64,
}

/// One point of the history.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Sample {
    pub t: i64,
    #[serde(flatten)]
    pub rates: Rates,
    pub load: Vec<f64>,
    pub drops: BTreeMap<String, f64>,
}

/// One reload, done or refused.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReloadEntry {
    pub at: i64,
    pub generation: Option<u64>,
    pub changes: Option<String>,
    pub ended: Option<usize>,
    pub compile_ms: Option<f64>,
    /// Why it was refused (the running policy stayed).
    pub refused: Option<String>,
}

/// The reloads, for the metrics.
#[derive(Debug, Default)]
pub struct ReloadCounts {
    pub ok: AtomicU64,
    pub refused: AtomicU64,
    /// Per bucket of [`RELOAD_BOUNDS`] (not cumulative), then the rest.
    pub buckets: [AtomicU64; RELOAD_BOUNDS.len() + 1],
    /// Sum of durations in microseconds.
    pub sum_us: AtomicU64,
    /// The latest reload was refused: the running policy is older than
    /// the member database (until a reload is done).
    pub behind: AtomicBool,
    /// The running policy is the last good member database's: the start
    /// could not have one from the database (until a reload is done).
    pub from_last_good: AtomicBool,
    /// When the last good member database was last written (Unix
    /// seconds; 0: not by this process), and the writes that failed.
    pub last_good_written: AtomicI64,
    pub last_good_failures: AtomicU64,
}

impl ReloadCounts {
    /// The latest reload was refused (and none was done since).
    pub fn policy_refused(&self) -> bool {
        self.behind.load(Ordering::Relaxed)
    }

    /// The running policy came from the last good member database at the
    /// start, and no reload from the database has been done since.
    pub fn policy_from_last_good(&self) -> bool {
        self.from_last_good.load(Ordering::Relaxed)
    }
}

/// Everything the API reads, shared between the main loop (writer) and
/// the API's tasks (readers).
#[derive(Debug)]
pub struct Live {
    pub started: Instant,
    pub snapshot: ArcSwap<Snapshot>,
    pub history: Mutex<VecDeque<Sample>>,
    pub reloads: Mutex<VecDeque<ReloadEntry>>,
    pub reload_counts: ReloadCounts,
    /// The member database the running policy came from.
    pub members: Arc<ArcSwap<MemberDb>>,
    /// The running workers' flow listings (none while they are stopped).
    pub flows: arc_swap::ArcSwapOption<dataplane::FlowQueries>,
}

impl Live {
    pub fn new(members: Arc<ArcSwap<MemberDb>>) -> Live {
        Live {
            started: Instant::now(),
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            history: Mutex::new(VecDeque::with_capacity(SAMPLES)),
            reloads: Mutex::new(VecDeque::with_capacity(RELOADS)),
            reload_counts: ReloadCounts::default(),
            members,
            flows: arc_swap::ArcSwapOption::empty(),
        }
    }

    /// Publishes the figures of `stats`, taken at `at` (Unix `unix`).
    pub fn publish(&self, stats: Stats, at: Instant, unix: i64, prev_at: Option<Instant>) {
        let prev = self.snapshot.load();
        let dt = prev_at.map_or(0.0, |p| at.saturating_duration_since(p).as_secs_f64());
        let next = Snapshot::next(&prev, stats, unix, dt);
        self.snapshot.store(Arc::new(next));
    }

    /// Adds the latest snapshot to the history.
    pub fn sample(&self) {
        let s = self.snapshot.load();
        let sample = Sample { t: s.unix, rates: s.rates, load: s.load.clone(), drops: s.drop_rates.clone() };
        let mut h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        if h.len() == SAMPLES {
            h.pop_front();
        }
        h.push_back(sample);
    }

    /// Notes a reload that was done.
    pub fn reloaded(&self, unix: i64, r: &crate::reload::Reloaded) {
        let c = &self.reload_counts;
        c.ok.fetch_add(1, Ordering::Relaxed);
        c.behind.store(false, Ordering::Relaxed);
        c.from_last_good.store(false, Ordering::Relaxed);
        let secs = r.compile.as_secs_f64();
        let i = RELOAD_BOUNDS.iter().position(|b| secs <= *b).unwrap_or(RELOAD_BOUNDS.len());
        c.buckets[i].fetch_add(1, Ordering::Relaxed);
        c.sum_us.fetch_add(r.compile.as_micros() as u64, Ordering::Relaxed);
        self.remember(ReloadEntry {
            at: unix,
            generation: Some(r.generation),
            changes: Some(r.changes.clone()),
            ended: Some(r.ended),
            compile_ms: Some(secs * 1e3),
            refused: None,
        });
    }

    /// Notes a reload that was refused.
    /// A refused reload, its reason [`abridged`]: a database with thousands
    /// of bad rows must not keep megabytes in each of the entries kept.
    pub fn refused(&self, unix: i64, why: String) {
        let why = abridged(&why);
        self.reload_counts.refused.fetch_add(1, Ordering::Relaxed);
        self.reload_counts.behind.store(true, Ordering::Relaxed);
        self.remember(ReloadEntry {
            at: unix,
            generation: None,
            changes: None,
            ended: None,
            compile_ms: None,
            refused: Some(why),
        });
    }

    /// Notes a start from the last good member database, because the
    /// database could not give a policy (`why`): as a refused reload, until
    /// one is done.
    pub fn started_from_last_good(&self, unix: i64, why: String) {
        self.refused(unix, why);
        self.reload_counts.from_last_good.store(true, Ordering::Relaxed);
    }

    fn remember(&self, e: ReloadEntry) {
        let mut r = self.reloads.lock().unwrap_or_else(|e| e.into_inner());
        if r.len() == RELOADS {
            r.pop_back();
        }
        r.push_front(e);
    }
}

/// The lines of a refusal kept and logged: the first problems, and how
/// many more (`torwart db check` lists them all).
pub const REFUSAL_LINES: usize = 20;
/// And at most this many bytes of them.
const REFUSAL_BYTES: usize = 8192;

/// `why` cut to its first [`REFUSAL_LINES`] lines (and [`REFUSAL_BYTES`]
/// bytes), saying how much was left out.
pub fn abridged(why: &str) -> String {
    let total = why.lines().count();
    let mut out = String::new();
    let mut kept = 0;
    for line in why.lines().take(REFUSAL_LINES) {
        if out.len() + line.len() + 1 > REFUSAL_BYTES {
            break;
        }
        if kept > 0 {
            out.push('\n');
        }
        out.push_str(line);
        kept += 1;
    }
    if kept < total {
        out.push_str(&format!("\n... and {} more line(s): `torwart db check` lists every problem", total - kept));
    }
    out
}

impl Snapshot {
    /// The snapshot after `prev`, `dt` seconds later (0: no rates yet).
    pub fn next(prev: &Snapshot, stats: Stats, unix: i64, dt: f64) -> Snapshot {
        let per_s = |now: u64, before: u64| if dt > 0.0 { now.saturating_sub(before) as f64 / dt } else { 0.0 };
        let (up, down) = usage_totals(&stats);
        let (up0, down0) = usage_totals(&prev.stats);
        let drops = total_drops(&stats);
        let rates = Rates {
            up_bps: per_s(up, up0) * 8.0,
            down_bps: per_s(down, down0) * 8.0,
            rx_pps: per_s(stats.counter("rx_frames"), prev.stats.counter("rx_frames")),
            tx_pps: per_s(stats.counter("tx_frames"), prev.stats.counter("tx_frames")),
            drops_ps: per_s(drops, total_drops(&prev.stats)),
        };
        let mut member_bps = BTreeMap::new();
        let mut before = prev.stats.members.iter().peekable();
        for m in &stats.members {
            while before.peek().is_some_and(|b| b.member_id < m.member_id) {
                before.next();
            }
            let b = before.peek().filter(|b| b.member_id == m.member_id);
            let (bu, bd) = b.map_or((0, 0), |b| (b.up_bytes, b.down_bytes));
            let r = [per_s(m.up_bytes, bu) * 8.0, per_s(m.down_bytes, bd) * 8.0];
            if r[0] > 0.0 || r[1] > 0.0 {
                member_bps.insert(m.member_id, r);
            }
        }
        let mut load = Vec::with_capacity(stats.workers.len());
        let mut worker_rx_pps = Vec::with_capacity(stats.workers.len());
        for w in &stats.workers {
            let p = prev.stats.workers.iter().find(|p| p.worker == w.worker);
            let (loops, idle) = p.map_or((0, 0), |p| (p.loops, p.idle_loops));
            let (dl, di) = (w.loops.saturating_sub(loops), w.idle_loops.saturating_sub(idle));
            load.push(if dl == 0 { 0.0 } else { dl.saturating_sub(di) as f64 / dl as f64 });
            let rx0: u64 = p.map_or(0, |p| p.rx.iter().sum());
            worker_rx_pps.push(per_s(w.rx.iter().sum(), rx0));
        }
        let mut drop_rates = BTreeMap::new();
        for name in drop_names() {
            let r = per_s(stats.counter(name), prev.stats.counter(name));
            if r > 0.0 {
                drop_rates.insert(name.to_owned(), r);
            }
        }
        Snapshot { unix, stats, rates, member_bps, load, worker_rx_pps, drop_rates }
    }

    /// Drops by reason since the start (those that happened).
    pub fn drops(&self) -> BTreeMap<String, u64> {
        drop_names().map(|n| (n.to_owned(), self.stats.counter(n))).filter(|(_, v)| *v > 0).collect()
    }
}

/// Every drop reason's counter name: the engine's, the dataplane's and the
/// ports' BPF programs' (frames no socket took, frames not admitted).
pub fn drop_names() -> impl Iterator<Item = &'static str> {
    engine::DropReason::all()
        .map(|d| d.name())
        .chain(dataplane::Drop::ALL.iter().map(|d| d.name()))
        .chain(["xdp_unserved", "af_packet_not_admitted"])
}

fn total_drops(stats: &Stats) -> u64 {
    drop_names().map(|n| stats.counter(n)).sum()
}

fn usage_totals(stats: &Stats) -> (u64, u64) {
    stats.members.iter().fold((0, 0), |(u, d), m| (u + m.up_bytes, d + m.down_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::MemberTraffic;

    #[test]
    fn a_refusal_of_many_problems_is_kept_short() {
        let many: Vec<String> =
            (0..50_000).map(|i| format!("members row {i}: status: \"x\" is not a status")).collect();
        let why = abridged(&many.join("\n"));
        assert_eq!(why.lines().count(), REFUSAL_LINES + 1);
        assert!(why.starts_with("members row 0: status"));
        assert!(why.ends_with("... and 49980 more line(s): `torwart db check` lists every problem"), "{why}");
        assert_eq!(abridged("one problem"), "one problem");
        let long = "x".repeat(REFUSAL_BYTES * 2);
        let why = abridged(&format!("first\n{long}"));
        assert!(why.len() < REFUSAL_BYTES && why.starts_with("first\n... and 1 more"), "{why}");
    }

    #[test]
    fn rates_are_the_change_over_the_time_between() {
        let mut a = Stats::default();
        a.members.push(MemberTraffic { member_id: 3, up_bytes: 1000, down_bytes: 5000, ..Default::default() });
        a.counters.insert("rx_frames".into(), 100);
        a.workers.push(crate::stats::Worker { worker: 0, loops: 100, idle_loops: 50, ..Default::default() });
        let first = Snapshot::next(&Snapshot::default(), a.clone(), 10, 0.0);
        assert_eq!(first.rates, Rates::default());
        let mut b = a;
        b.members[0].up_bytes += 500;
        b.members.push(MemberTraffic { member_id: 9, down_bytes: 250, ..Default::default() });
        b.counters.insert("rx_frames".into(), 300);
        b.workers[0].loops = 200;
        b.workers[0].idle_loops = 75;
        let second = Snapshot::next(&first, b, 12, 2.0);
        assert_eq!(second.rates.up_bps, 2000.0);
        assert_eq!(second.rates.down_bps, 1000.0);
        assert_eq!(second.rates.rx_pps, 100.0);
        assert_eq!(second.member_bps.get(&3), Some(&[2000.0, 0.0]));
        assert_eq!(second.member_bps.get(&9), Some(&[0.0, 1000.0]));
        assert_eq!(second.load, [0.75]);
    }
}
