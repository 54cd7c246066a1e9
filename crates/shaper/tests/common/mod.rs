//! A virtual-time harness: open-loop and AIMD sources feeding one or more
//! shapers that share an uplink exchange, stepped alternately, recording
//! every departure. No clock is read; nothing sleeps.
#![allow(dead_code)]

use std::sync::Arc;

use shaper::{Config, Departure, Packet, Plan, Shaper, UplinkConfig, UplinkExchange, Verdict};

pub const US: u64 = 1_000;
pub const MS: u64 = 1_000_000;
pub const SEC: u64 = 1_000_000_000;
pub const MBIT: u64 = 1_000_000;

/// How a source decides when to send.
#[derive(Clone, Copy, Debug)]
pub enum Pace {
    /// Constant bit rate, ignores drops.
    Open { rate_bps: u64 },
    /// A TCP-like sender: rate += one packet per RTT each RTT, halved at most
    /// once per RTT on a drop or mark seen one RTT later.
    Aimd { rate_bps: u64, rtt_ns: u64 },
    /// A window-based (Reno-like) sender: at most `cwnd` packets in flight,
    /// +1/cwnd per ack, halved at most once per RTT on a drop or mark; an ack
    /// or a loss notice arrives one RTT after the packet left or was dropped.
    Window { cwnd_milli: u64, rtt_ns: u64 },
}

#[derive(Clone, Debug)]
pub struct Source {
    pub core: usize,
    pub member: u32,
    pub flow_hash: u32,
    pub len: u32,
    pub ect: bool,
    pub pace: Pace,
    next_ns: u64,
    /// Times at which a congestion signal reaches the sender.
    signals: Vec<u64>,
    last_cut_ns: u64,
    last_increase_ns: u64,
    inflight: u64,
    /// Times at which an in-flight packet is acknowledged or known lost.
    acks: Vec<u64>,
}

impl Source {
    pub fn new(core: usize, member: u32, flow_hash: u32, len: u32, pace: Pace) -> Source {
        Source {
            core,
            member,
            flow_hash,
            len,
            ect: false,
            pace,
            next_ns: 0,
            signals: Vec::new(),
            last_cut_ns: 0,
            last_increase_ns: 0,
            inflight: 0,
            acks: Vec::new(),
        }
    }

    pub fn ect(mut self) -> Source {
        self.ect = true;
        self
    }

    fn rate(&self) -> u64 {
        match self.pace {
            Pace::Open { rate_bps } | Pace::Aimd { rate_bps, .. } => rate_bps,
            Pace::Window { .. } => u64::MAX,
        }
    }

    fn interval(&self) -> u64 {
        (u64::from(self.len) * 8 * SEC / self.rate().max(1)).max(1)
    }

    fn react(&mut self, now: u64) {
        if let Pace::Window { ref mut cwnd_milli, rtt_ns } = self.pace {
            let before = self.acks.len();
            self.acks.retain(|&t| t > now);
            for _ in self.acks.len()..before {
                self.inflight = self.inflight.saturating_sub(1);
                *cwnd_milli += 1_000_000 / (*cwnd_milli).max(1_000);
            }
            let before = self.signals.len();
            self.signals.retain(|&t| t > now);
            if self.signals.len() < before && now >= self.last_cut_ns + rtt_ns {
                *cwnd_milli = (*cwnd_milli / 2).max(2_000);
                self.last_cut_ns = now;
            }
            // Window-limited: send now whatever the window allows.
            if self.inflight * 1_000 < *cwnd_milli {
                self.next_ns = self.next_ns.min(now);
            } else {
                self.next_ns = u64::MAX;
            }
            return;
        }
        if let Pace::Aimd { ref mut rate_bps, rtt_ns } = self.pace {
            let len = u64::from(self.len);
            let before = self.signals.len();
            self.signals.retain(|&t| t > now);
            if self.signals.len() < before && now >= self.last_cut_ns + rtt_ns {
                *rate_bps = (*rate_bps / 2).max(len * 8 * SEC / rtt_ns);
                self.last_cut_ns = now;
            }
            if now >= self.last_increase_ns + rtt_ns {
                *rate_bps += len * 8 * SEC / rtt_ns;
                self.last_increase_ns = now;
            }
        }
    }
}

/// A record of one packet's fate.
#[derive(Clone, Copy, Debug, Default)]
pub struct Fate {
    pub source: usize,
    pub member: u32,
    pub core: usize,
    pub len: u32,
    pub enqueued_ns: u64,
    /// Time of release (or drop), `None` while queued.
    pub out_ns: Option<u64>,
    pub released: bool,
    pub marked: bool,
    /// Order of coming out (release or drop) over the whole run.
    pub out_seq: u64,
}

pub struct Sim {
    pub exchange: Arc<UplinkExchange>,
    pub shapers: Vec<Shaper<u64>>,
    pub sources: Vec<Source>,
    pub fates: Vec<Fate>,
    pub now: u64,
    pub step_ns: u64,
    pub budget: usize,
    /// Offer packets at the step they become due rather than at their own
    /// time (as a worker does, which takes a batch per loop).
    pub arrivals_at_step: bool,
    out: Vec<Departure<u64>>,
    settled: u64,
}

impl Sim {
    pub fn new(uplink: UplinkConfig, config: Config) -> Sim {
        let exchange = Arc::new(UplinkExchange::new(uplink));
        let shapers = (0..uplink.cores).map(|c| Shaper::new(config, exchange.clone(), c, 0).unwrap()).collect();
        Sim {
            exchange,
            shapers,
            sources: Vec::new(),
            fates: Vec::new(),
            now: 0,
            step_ns: 10 * US,
            budget: 256,
            arrivals_at_step: false,
            out: Vec::with_capacity(1024),
            settled: 0,
        }
    }

    pub fn member(&mut self, core: usize, slot: u32, plan: Plan) {
        let mut sink = Vec::new();
        self.shapers[core].set_member(self.now, slot, Some(plan), &mut sink).unwrap();
        assert!(sink.is_empty());
    }

    pub fn add(&mut self, source: Source) -> usize {
        self.sources.push(source);
        self.sources.len() - 1
    }

    /// Runs until `until`: per step, sources send what is due, then every core
    /// polls, cores taken in turn (core 0 first on even steps, last on odd ones).
    pub fn run(&mut self, until: u64) {
        let mut step = 0u64;
        while self.now < until {
            self.now += self.step_ns;
            let now = self.now;
            for i in 0..self.sources.len() {
                self.sources[i].react(now);
                while self.sources[i].next_ns <= now {
                    let at = self.sources[i].next_ns;
                    let s = &self.sources[i];
                    let handle = self.fates.len() as u64;
                    self.fates.push(Fate {
                        source: i,
                        member: s.member,
                        core: s.core,
                        len: s.len,
                        enqueued_ns: at,
                        ..Fate::default()
                    });
                    let packet = Packet { handle, len: s.len, flow_hash: s.flow_hash, ect: s.ect };
                    let offered_at = if self.arrivals_at_step { now } else { at };
                    let verdict = self.shapers[s.core].enqueue(offered_at, s.member, packet);
                    let interval = match s.pace {
                        Pace::Window { cwnd_milli, .. } => {
                            let inflight = s.inflight + 1;
                            if inflight * 1_000 < cwnd_milli {
                                0
                            } else {
                                u64::MAX - at
                            }
                        }
                        _ => s.interval(),
                    };
                    self.sources[i].inflight += 1;
                    match verdict {
                        Verdict::Pass(h) => self.settle(h, at, true, false),
                        Verdict::Queued => {}
                        Verdict::Dropped(h, _) => self.settle(h, at, false, false),
                    }
                    self.sources[i].next_ns = at.saturating_add(interval);
                }
            }
            let cores = self.shapers.len();
            for k in 0..cores {
                let core = if step % 2 == 0 { k } else { cores - 1 - k };
                let mut out = std::mem::take(&mut self.out);
                self.shapers[core].poll(now, self.budget, &mut out);
                for d in out.drain(..) {
                    match d {
                        Departure::Release { handle, ecn_mark, .. } => self.settle(handle, now, true, ecn_mark),
                        Departure::Dropped { handle, .. } => self.settle(handle, now, false, false),
                    }
                }
                self.out = out;
            }
            step += 1;
        }
    }

    fn settle(&mut self, handle: u64, at: u64, released: bool, marked: bool) {
        let f = &mut self.fates[handle as usize];
        assert!(f.out_ns.is_none(), "handle {handle} came out twice");
        f.out_ns = Some(at);
        self.settled += 1;
        f.out_seq = self.settled;
        f.released = released;
        f.marked = marked;
        let source = f.source;
        if !released || marked {
            if let Some(s) = self.sources.get_mut(source) {
                if let Pace::Aimd { rtt_ns, .. } | Pace::Window { rtt_ns, .. } = s.pace {
                    s.signals.push(at + rtt_ns);
                }
            }
        }
        if let Some(s) = self.sources.get_mut(source) {
            if let Pace::Window { rtt_ns, .. } = s.pace {
                s.acks.push(at + rtt_ns);
            }
        }
    }

    /// Bytes released for `member` of `core` in `[from, to)`.
    pub fn released_bytes(&self, core: usize, member: u32, from: u64, to: u64) -> u64 {
        self.fates
            .iter()
            .filter(|f| f.core == core && f.member == member && f.released)
            .filter(|f| f.out_ns.is_some_and(|t| t >= from && t < to))
            .map(|f| u64::from(f.len))
            .sum()
    }

    /// Sojourn times (release − enqueue) of released packets of `source` enqueued in `[from, to)`.
    pub fn sojourns(&self, source: usize, from: u64, to: u64) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .fates
            .iter()
            .filter(|f| f.source == source && f.released && f.enqueued_ns >= from && f.enqueued_ns < to)
            .filter_map(|f| f.out_ns.map(|t| t - f.enqueued_ns))
            .collect();
        v.sort_unstable();
        v
    }
}

pub fn plan(rate_bps: u64, ceil_bps: u64, weight: u32) -> Plan {
    Plan { rate_bps, ceil_bps, burst_bytes: 15_000, weight }
}

pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// Jain's fairness index of `xs`: (Σx)² / (n Σx²).
pub fn jain(xs: &[f64]) -> f64 {
    let sum: f64 = xs.iter().sum();
    let sq: f64 = xs.iter().map(|x| x * x).sum();
    sum * sum / (xs.len() as f64 * sq)
}

/// Reference weighted max-min allocation of `capacity` among demands, by
/// progressive filling (independent of the crate's solver): each member
/// gets `min(demand, ceil, weight × level)`, at least its rate.
pub fn max_min(capacity: f64, members: &[(f64, f64, f64, f64)]) -> Vec<f64> {
    // (demand, rate, ceil, weight)
    let mut lo = 0.0;
    let mut hi = capacity * 10.0;
    let alloc =
        |level: f64| -> Vec<f64> { members.iter().map(|&(d, r, c, w)| (w * level).max(r).min(c).min(d)).collect() };
    for _ in 0..200 {
        let mid = (lo + hi) / 2.0;
        if alloc(mid).iter().sum::<f64>() > capacity {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    alloc(lo)
}
