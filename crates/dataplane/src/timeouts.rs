//! Flows by the time they have left in the table: a histogram per
//! protocol and state, for the API's `GET /api/timeouts`.
//!
//! Why: it is how the timeouts are judged. On the iptables box this gateway
//! replaces, this plot showed that established TCP connections sit idle for
//! hours and that 12 h was a sensible timeout for them; the same plot here
//! tells whether `[timeouts]` fit the network.
//!
//! How, without slowing the worker: a cursor walks the worker's own flow
//! table [`HISTOGRAM_SLICE`] entries at a time ([`Conntrack::slice`]), a
//! slice whenever one is due, paced so that a pass over the whole table
//! takes [`PASS_PERIOD`], with slices at least [`SLICE_GAP_MIN`] apart. Each
//! flow seen adds one to its (protocol, state) series at the bucket of its
//! remaining time; when a pass ends, its counts become the worker's latest
//! histogram, which goes out with its stats snapshot. So a 262,144-entry
//! table (the default) gives a fresh histogram every 2 s for a slice of 256
//! entries every 2 ms: some 3 µs of work (measured, release build, 200,000
//! flows: 10-20 ns an entry, the walk streams the table from memory), 0.2 %
//! of a core. A table of more than 512 Ki entries is walked at one slice a
//! millisecond (a pass of 4 s per million entries). A worker that steps
//! less often (an idle one waits up to 1 ms) makes its passes more slowly;
//! its table then hardly changes.
//!
//! The counts are fixed arrays, indexed by series and bucket: nothing is
//! allocated, nothing looked up. A pass is not an instant's picture: flows
//! made or ended while it runs may be counted or not, and each flow's
//! remaining time is taken when its slice is walked. Flows past their
//! deadline that the timers have not freed yet are not counted.

use engine::conntrack::{Conntrack, ProtoState, ANSWERED, UNANSWERED};
use engine::tcp::TcpState;
use engine::{Flow, Time};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds: bucket `i` counts flows with
/// remaining time ≤ `BOUNDS_S[i]` and above the bound before it; one more
/// bucket at the end counts the rest.
pub const BOUNDS_S: [u64; 12] = [10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 43200, 86400];
/// Buckets per series: the bounds and the overflow.
pub const BUCKETS: usize = BOUNDS_S.len() + 1;
/// The protocols of the series, as [`TimeoutHistogram::series_name`] names them.
pub const PROTOCOLS: [&str; 4] = ["tcp", "udp", "icmp", "other"];
/// Series: one per TCP state, and answered/unanswered for each other protocol.
pub const SERIES: usize = TcpState::ALL.len() + 2 * (PROTOCOLS.len() - 1);
/// Table entries (live or not) one slice of a pass looks at.
pub const HISTOGRAM_SLICE: usize = 256;
/// How long a pass over the whole table takes, for tables up to
/// [`PASS_PERIOD`] / [`SLICE_GAP_MIN`] × [`HISTOGRAM_SLICE`] entries (512 Ki).
pub const PASS_PERIOD: Duration = Duration::from_secs(2);
/// The least time between two slices: what bounds the cost for big tables.
pub const SLICE_GAP_MIN: Duration = Duration::from_millis(1);

/// Flows by (protocol, state) and remaining time, from one complete pass
/// over a worker's table (or summed over workers: [`TimeoutHistogram::sum`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeoutHistogram {
    /// `counts[series][bucket]`: series as [`TimeoutHistogram::series_name`]
    /// names them, buckets as [`BOUNDS_S`] bounds them.
    pub counts: [[u64; BUCKETS]; SERIES],
    /// Passes completed so far (0: none yet, the counts are empty). Summed
    /// over workers: the fewest any of them completed.
    pub passes: u64,
    /// When the pass ended (summed: the oldest of them).
    pub at: Time,
}

impl Default for TimeoutHistogram {
    fn default() -> Self {
        TimeoutHistogram { counts: [[0; BUCKETS]; SERIES], passes: 0, at: Time::ZERO }
    }
}

impl TimeoutHistogram {
    /// (protocol, state) of series `i` (below [`SERIES`]); the state is a
    /// name [`Flow::state_name`] gives.
    pub fn series_name(i: usize) -> (&'static str, &'static str) {
        let tcp = TcpState::ALL.len();
        match TcpState::ALL.get(i) {
            Some(s) => (PROTOCOLS[0], s.name()),
            None => {
                let other = i - tcp;
                let state = if other % 2 == 0 { ANSWERED } else { UNANSWERED };
                (PROTOCOLS[(1 + other / 2).min(PROTOCOLS.len() - 1)], state)
            }
        }
    }

    /// The series flow `f` counts in.
    #[inline]
    pub fn series_of(f: &Flow) -> usize {
        let tcp = TcpState::ALL.len();
        let unanswered = usize::from(!f.answered);
        match &f.state {
            ProtoState::Tcp(t) => t.state as usize,
            ProtoState::Udp => tcp + unanswered,
            ProtoState::Icmp => tcp + 2 + unanswered,
            ProtoState::Other => tcp + 4 + unanswered,
        }
    }

    /// The bucket of a remaining time.
    #[inline]
    pub fn bucket_of(remaining: Duration) -> usize {
        BOUNDS_S.partition_point(|&b| Duration::from_secs(b) < remaining)
    }

    /// Every series with its (protocol, state) names, in index order.
    pub fn series(&self) -> impl Iterator<Item = (&'static str, &'static str, &[u64; BUCKETS])> {
        self.counts.iter().enumerate().map(|(i, c)| {
            let (protocol, state) = Self::series_name(i);
            (protocol, state, c)
        })
    }

    /// The counts of one (protocol, state) series, if there is such a series.
    pub fn get(&self, protocol: &str, state: &str) -> Option<&[u64; BUCKETS]> {
        self.series().find(|(p, s, _)| *p == protocol && *s == state).map(|(_, _, c)| c)
    }

    /// Flows counted.
    pub fn flows(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    /// Adds another worker's histogram into this one.
    pub fn add(&mut self, o: &TimeoutHistogram) {
        for (a, b) in self.counts.iter_mut().flatten().zip(o.counts.iter().flatten()) {
            *a += b;
        }
    }

    /// The histogram of all workers: counts summed, the fewest passes and
    /// the oldest end of a pass (so `passes == 0` says some worker has not
    /// finished one yet).
    pub fn sum<'a>(workers: impl IntoIterator<Item = &'a TimeoutHistogram>) -> TimeoutHistogram {
        let mut t = TimeoutHistogram::default();
        let mut first = true;
        for w in workers {
            t.add(w);
            (t.passes, t.at) = if first { (w.passes, w.at) } else { (t.passes.min(w.passes), t.at.min(w.at)) };
            first = false;
        }
        t
    }
}

/// A worker's pass over its table, a slice when one is due
/// ([`TimeoutCursor::step`], between batches), and its last complete pass.
#[derive(Debug)]
pub(crate) struct TimeoutCursor {
    /// Where the pass goes on.
    at: u32,
    /// When the next slice is due.
    due: Time,
    counting: [[u64; BUCKETS]; SERIES],
    last: TimeoutHistogram,
}

impl TimeoutCursor {
    pub(crate) fn new() -> TimeoutCursor {
        TimeoutCursor { at: 0, due: Time::ZERO, counting: [[0; BUCKETS]; SERIES], last: TimeoutHistogram::default() }
    }

    /// The time between two slices for a table of `capacity` entries.
    pub(crate) fn gap(capacity: usize) -> Duration {
        let slices = capacity.div_ceil(HISTOGRAM_SLICE).max(1) as u32;
        (PASS_PERIOD / slices).max(SLICE_GAP_MIN)
    }

    /// Walks a slice of `ct` if one is due at `now`; returns the entries
    /// looked at (0 or at most [`HISTOGRAM_SLICE`]).
    pub(crate) fn step(&mut self, ct: &Conntrack, now: Time) -> usize {
        if now < self.due {
            return 0;
        }
        let (live, next) = ct.slice(self.at, HISTOGRAM_SLICE);
        for (_, f) in live {
            if f.expires > now {
                self.counting[TimeoutHistogram::series_of(f)][TimeoutHistogram::bucket_of(f.expires.since(now))] += 1;
            }
        }
        let looked = next.map_or(ct.capacity(), |n| n as usize) - self.at as usize;
        match next {
            Some(n) => self.at = n,
            None => {
                self.last = TimeoutHistogram {
                    counts: core::mem::replace(&mut self.counting, [[0; BUCKETS]; SERIES]),
                    passes: self.last.passes + 1,
                    at: now,
                };
                self.at = 0;
            }
        }
        self.due = now + Self::gap(ct.capacity());
        looked
    }

    /// The last complete pass.
    pub(crate) fn last(&self) -> &TimeoutHistogram {
        &self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_their_upper_bound() {
        let s = Duration::from_secs;
        assert_eq!(TimeoutHistogram::bucket_of(Duration::ZERO), 0);
        assert_eq!(TimeoutHistogram::bucket_of(s(10)), 0);
        assert_eq!(TimeoutHistogram::bucket_of(s(10) + Duration::from_nanos(1)), 1);
        assert_eq!(TimeoutHistogram::bucket_of(s(43_200)), 10);
        assert_eq!(TimeoutHistogram::bucket_of(s(43_199)), 10);
        assert_eq!(TimeoutHistogram::bucket_of(s(86_400)), 11);
        assert_eq!(TimeoutHistogram::bucket_of(s(86_401)), BUCKETS - 1);
        assert_eq!(TimeoutHistogram::bucket_of(Duration::MAX), BUCKETS - 1);
    }

    #[test]
    fn series_names_are_distinct_and_cover_every_protocol() {
        let names: Vec<_> = (0..SERIES).map(TimeoutHistogram::series_name).collect();
        for (i, n) in names.iter().enumerate() {
            assert!(!names[..i].contains(n), "{n:?} twice");
            assert!(Flow::state_names().any(|s| s == n.1), "{n:?}");
        }
        for p in PROTOCOLS {
            assert!(names.iter().any(|n| n.0 == p), "{p}");
        }
        for (i, s) in TcpState::ALL.iter().enumerate() {
            assert_eq!(names[i], ("tcp", s.name()), "TcpState's declaration order is ALL's");
        }
    }

    /// A flow's series is named with its own protocol and state name.
    #[test]
    fn a_flow_counts_in_the_series_of_its_state() {
        use core::net::Ipv4Addr;
        use engine::conntrack::{NewFlow, NO_ACCOUNT, NO_BINDING};
        use engine::tcp::{Segment, TcpTrack};
        use engine::{Side, Timeouts};
        use wire::FlowKey;
        let now = Time(0);
        let mut ct = Conntrack::new(64, [1, 2, 3, 4], Timeouts::default(), now);
        let syn = Segment { syn: true, window: 100, ..Default::default() };
        let kinds = [
            (6, ProtoState::Tcp(TcpTrack::open(&syn)), "tcp"),
            (17, ProtoState::Udp, "udp"),
            (1, ProtoState::Icmp, "icmp"),
            (58, ProtoState::Icmp, "icmp"),
            (47, ProtoState::Other, "other"),
        ];
        let mut port = 0;
        for (proto, state, name) in kinds {
            port += 1;
            let k = FlowKey::v4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(192, 0, 2, 1), proto, port, 53);
            let new = NewFlow {
                keys: [k, k.reversed()],
                state,
                orig_side: Side::Inside,
                reply_side: Side::Outside,
                account: NO_ACCOUNT,
                binding: NO_BINDING,
                epoch: 0,
                synced: false,
                answered: false,
            };
            let i = ct.insert(&new, now).0.unwrap();
            for answered in [false, true] {
                ct.flow_mut(i).answered = answered;
                let tcp = TcpState::ALL.iter().copied().filter(|_| proto == 6);
                for s in tcp.map(Some).chain([None].into_iter().filter(|_| proto != 6)) {
                    if let (ProtoState::Tcp(t), Some(s)) = (&mut ct.flow_mut(i).state, s) {
                        t.state = s;
                    }
                    let f = ct.flow(i);
                    let series = TimeoutHistogram::series_of(f);
                    assert_eq!(TimeoutHistogram::series_name(series), (name, f.state_name()), "{proto} {s:?}");
                }
            }
        }
    }

    #[test]
    fn the_gap_makes_a_pass_take_the_period_and_bounds_big_tables() {
        assert_eq!(TimeoutCursor::gap(4096), Duration::from_millis(125));
        assert_eq!(TimeoutCursor::gap(1), PASS_PERIOD);
        let g = TimeoutCursor::gap(262_144);
        assert!(g > Duration::from_micros(1900) && g < Duration::from_micros(2000), "{g:?}");
        assert_eq!(TimeoutCursor::gap(1 << 24), SLICE_GAP_MIN);
    }

    #[test]
    fn sums_take_the_fewest_passes() {
        let mut a = TimeoutHistogram { passes: 3, at: Time(30), ..Default::default() };
        a.counts[2][10] = 5;
        let mut b = TimeoutHistogram { passes: 1, at: Time(20), ..Default::default() };
        b.counts[2][10] = 2;
        b.counts[8][1] = 1;
        let t = TimeoutHistogram::sum([&a, &b]);
        assert_eq!(t.counts[2][10], 7);
        assert_eq!(t.get("tcp", "established").unwrap()[10], 7);
        assert_eq!(t.get("udp", "answered").unwrap()[1], 1);
        assert_eq!(t.flows(), 8);
        assert_eq!((t.passes, t.at), (1, Time(20)));
        assert_eq!(TimeoutHistogram::sum([]).passes, 0);
    }
}
