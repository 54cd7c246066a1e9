//! The rings between the workers and the sync thread (the pair's state sync).
//!
//! Each worker has two wait-free SPSC rings with the sync thread: `out`
//! carries the records of its flows' changes ([`engine::Engine::take_changes`])
//! and of a full resync (its whole flow table, a bounded slice per step),
//! `incoming` carries what the other box reported about flows this worker
//! owns, which it installs between batches. Nothing else crosses: a resync
//! is asked for and its end reported through two atomics, and the worker's
//! counts are published as atomics it alone writes. A full `out` ring loses
//! the record, counted; the sync thread then tells the peer, and a resync
//! follows.

use core::net::IpAddr;
use engine::{Engine, InstallRefusal, Installed, SyncChange, Time};
use rtrb::{Consumer, Producer, RingBuffer};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use sync::{FlowRecord, Record};

/// Records per ring and direction.
pub const RING_DEPTH: usize = 16_384;
/// Flow table entries a resync looks at per step.
const DUMP_SLICE: usize = 1024;
/// Records installed per step, at most.
const INSTALL_BATCH: usize = 1024;
/// Flow table entries an adoption looks at per step (a flag each).
const ADOPT_SLICE: usize = 8192;

/// What a worker and the sync thread share besides the rings.
#[derive(Debug, Default)]
pub struct SyncShared {
    /// The resync the sync thread asks for (0: none yet).
    pub requested: AtomicU32,
    /// The last resync this worker finished.
    pub done: AtomicU32,
    /// Flows in that resync.
    pub done_flows: AtomicU64,
    /// The other box's restarts, counted by the sync thread: at each, the
    /// copies this worker holds become its own ([`engine::Engine::adopt_synced`])
    /// before it installs anything more (stored before any record of the
    /// new session is pushed).
    pub adopt: AtomicU32,
    /// The last adoption this worker finished (the sync thread asks new
    /// rings for one the old ones did not finish).
    pub adopt_done: AtomicU32,
    pub counts: SyncCounts,
}

/// A worker's sync counts, written by it alone.
#[derive(Debug, Default)]
pub struct SyncCounts {
    pub reported: AtomicU64,
    /// Records lost: the change log or the `out` ring was full.
    pub lost: AtomicU64,
    pub dumped: AtomicU64,
    pub installed: AtomicU64,
    pub updated: AtomicU64,
    pub ended: AtomicU64,
    /// Synced flows a resync did not name.
    pub swept: AtomicU64,
    /// Synced flows made this box's own when the other box restarted.
    pub adopted: AtomicU64,
    pub refused_unknown_member: AtomicU64,
    pub refused_member_blocked: AtomicU64,
    pub refused_nat_conflict: AtomicU64,
    pub refused_table_full: AtomicU64,
    pub refused_inconsistent: AtomicU64,
}

impl SyncCounts {
    /// Every count with its name.
    pub fn named(&self) -> [(&'static str, u64); 13] {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("reported", g(&self.reported)),
            ("lost", g(&self.lost)),
            ("dumped", g(&self.dumped)),
            ("installed", g(&self.installed)),
            ("updated", g(&self.updated)),
            ("ended", g(&self.ended)),
            ("swept", g(&self.swept)),
            ("adopted", g(&self.adopted)),
            ("refused_unknown_member", g(&self.refused_unknown_member)),
            ("refused_member_blocked", g(&self.refused_member_blocked)),
            ("refused_nat_conflict", g(&self.refused_nat_conflict)),
            ("refused_table_full", g(&self.refused_table_full)),
            ("refused_inconsistent", g(&self.refused_inconsistent)),
        ]
    }
}

fn bump(a: &AtomicU64, n: u64) {
    if n > 0 {
        // One writer: a load and a store, no locked instruction.
        a.store(a.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }
}

/// A worker's end.
#[derive(Debug)]
pub struct WorkerSync {
    out: Producer<Record>,
    incoming: Consumer<Record>,
    shared: Arc<SyncShared>,
    /// The resync being dumped: its id, where the walk is, flows so far.
    dump: Option<(u32, u32, u64)>,
    /// This worker's count of the peer's resyncs: installs are named with
    /// it, and the sweep after a resync ends what it did not name.
    mark: u32,
    /// The sweep under way, and where it is.
    sweep: Option<u32>,
    /// The last adoption asked for ([`SyncShared::adopt`]) this worker took
    /// up, and where its walk is while it goes on.
    adopted: u32,
    adopting: Option<u32>,
}

/// The sync thread's end of one worker's rings.
#[derive(Debug)]
pub struct HubEnd {
    pub out: Consumer<Record>,
    pub incoming: Producer<Record>,
    pub shared: Arc<SyncShared>,
}

/// The rings for `workers` workers: element `i` of the first goes to
/// worker `i`, the second is the sync thread's.
pub fn links(workers: usize) -> (Vec<WorkerSync>, Vec<HubEnd>) {
    (0..workers)
        .map(|_| {
            let (out_p, out_c) = RingBuffer::new(RING_DEPTH);
            let (in_p, in_c) = RingBuffer::new(RING_DEPTH);
            let shared = Arc::new(SyncShared::default());
            let w = WorkerSync {
                out: out_p,
                incoming: in_c,
                shared: Arc::clone(&shared),
                dump: None,
                mark: 0,
                sweep: None,
                adopted: 0,
                adopting: None,
            };
            (w, HubEnd { out: out_c, incoming: in_p, shared })
        })
        .unzip()
}

impl WorkerSync {
    /// Makes `engine` log its changes for the other box.
    pub fn attach(&self, engine: &mut Engine) {
        engine.sync_with_peer(RING_DEPTH);
    }

    /// Between batches: report changes, go on with a resync, install what
    /// the other box reported (and `prime` the addresses of each flow
    /// installed: see [`crate::egress::Egress::prime`]). Returns the
    /// records moved (work done).
    pub fn step(&mut self, engine: &mut Engine, now: Time, prime: impl FnMut(IpAddr)) -> usize {
        let c = &self.shared.counts;
        let (mut sent, mut lost) = (0u64, 0u64);
        let out = &mut self.out;
        lost += engine.take_changes(now, |change| {
            let r = match change {
                SyncChange::Flow(s) => Record::Flow(FlowRecord::from_synced(&s)),
                SyncChange::Ended { key, member_id } => Record::Ended { key, member: member_id.unwrap_or(u32::MAX) },
            };
            match out.push(r) {
                Ok(()) => sent += 1,
                Err(_) => lost += 1,
            }
        });
        bump(&c.reported, sent);
        bump(&c.lost, lost);
        // What may be installed this step, counted before the adoption
        // asked for is read: the sync thread asks before it pushes any
        // record of the peer's new session, so a record seen here comes
        // with the request it followed (the ring's acquire).
        let available = self.incoming.slots();
        if self.adopt_some(engine, now) {
            // Nothing is dumped, installed or swept until every copy held
            // before the other box restarted is this box's: its new
            // session's resync must not sweep them, nor this box's resync
            // to it call them copies. Work was done: the worker steps
            // again soon instead of napping.
            return sent as usize + 1;
        }
        let dumped = self.dump_some(engine, now);
        let installed = self.install_some(engine, now, prime, available);
        self.sweep_some(engine);
        sent as usize + dumped + installed
    }

    /// A slice of the adoption the sync thread asked for, if one is due;
    /// true while it goes on (and in the step that ends it: an adoption
    /// asked meanwhile starts in the next).
    fn adopt_some(&mut self, engine: &mut Engine, now: Time) -> bool {
        if self.adopting.is_none() {
            let asked = self.shared.adopt.load(Ordering::Acquire);
            if asked == self.adopted {
                return false;
            }
            self.adopted = asked;
            self.adopting = Some(0);
        }
        let Some(from) = self.adopting else { return false };
        let mut n = 0;
        self.adopting = engine.adopt_synced(now, from, ADOPT_SLICE, &mut n);
        bump(&self.shared.counts.adopted, n);
        if self.adopting.is_none() {
            self.shared.adopt_done.store(self.adopted, Ordering::Release);
        }
        true
    }

    /// A slice of the resync the sync thread asked for, if one is asked
    /// and the ring has room for a whole slice besides live changes.
    fn dump_some(&mut self, engine: &Engine, now: Time) -> usize {
        let requested = self.shared.requested.load(Ordering::Acquire);
        if requested != 0
            && self.dump.is_none_or(|(id, _, _)| id != requested)
            && self.shared.done.load(Ordering::Relaxed) != requested
        {
            self.dump = Some((requested, 0, 0));
        }
        let Some((id, from, mut flows)) = self.dump else { return 0 };
        if self.out.slots() < DUMP_SLICE + RING_DEPTH / 4 {
            return 0;
        }
        let out = &mut self.out;
        let mut n = 0;
        let next = engine.export_from(now, from, DUMP_SLICE, |s| {
            // Room was checked: a slice never fills the ring.
            if out.push(Record::Flow(FlowRecord::from_synced(&s))).is_ok() {
                n += 1;
            }
        });
        flows += n as u64;
        bump(&self.shared.counts.dumped, n as u64);
        match next {
            Some(at) => self.dump = Some((id, at, flows)),
            None => {
                self.dump = None;
                self.shared.done_flows.store(flows, Ordering::Relaxed);
                self.shared.done.store(id, Ordering::Release);
            }
        }
        n
    }

    fn install_some(
        &mut self,
        engine: &mut Engine,
        now: Time,
        mut prime: impl FnMut(IpAddr),
        available: usize,
    ) -> usize {
        let c = &self.shared.counts;
        let n = available.min(INSTALL_BATCH);
        for _ in 0..n {
            let Ok(r) = self.incoming.pop() else { break };
            match r {
                Record::Flow(f) => {
                    let Some(s) = f.to_synced() else {
                        bump(&c.refused_inconsistent, 1);
                        continue;
                    };
                    match engine.install(now, &s, self.mark) {
                        Ok(Installed::New) => {
                            bump(&c.installed, 1);
                            // Where its packets go: each direction leaves towards
                            // the end the other comes from.
                            prime(s.keys[0].src_ip());
                            prime(s.keys[1].src_ip());
                        }
                        Ok(Installed::Updated) => bump(&c.updated, 1),
                        Err(e) => bump(
                            match e {
                                InstallRefusal::UnknownMember => &c.refused_unknown_member,
                                InstallRefusal::MemberBlocked => &c.refused_member_blocked,
                                InstallRefusal::NatConflict => &c.refused_nat_conflict,
                                InstallRefusal::TableFull => &c.refused_table_full,
                                InstallRefusal::Inconsistent => &c.refused_inconsistent,
                            },
                            1,
                        ),
                    }
                }
                Record::Ended { key, .. } => {
                    if engine.end_synced(&key) {
                        bump(&c.ended, 1);
                    }
                }
                Record::ResyncBegin { .. } => {
                    self.mark = self.mark.wrapping_add(1).max(1);
                    self.sweep = None;
                }
                Record::ResyncEnd { .. } => self.sweep = Some(0),
                Record::Usage(_) | Record::Flushed { .. } | Record::Gap => {}
            }
        }
        n
    }

    fn sweep_some(&mut self, engine: &mut Engine) {
        let Some(from) = self.sweep else { return };
        let mut swept = 0;
        self.sweep = engine.sweep_unnamed(self.mark, from, DUMP_SLICE, &mut swept);
        bump(&self.shared.counts.swept, swept);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration;
    use engine::conntrack::ProtoState;
    use engine::{Config, Side, Synced};

    /// An answered UDP flow the other box reports as its own (no member
    /// policy here).
    fn reported(port: u16) -> Record {
        let k = wire::FlowKey::v4([10, 0, 0, 1].into(), [192, 0, 2, 1].into(), wire::flow::proto::UDP, port, 53);
        Record::Flow(FlowRecord::from_synced(&Synced {
            keys: [k, k.reversed()],
            orig_side: Side::Inside,
            reply_side: Side::Outside,
            answered: true,
            state: ProtoState::Udp,
            remaining: Duration::from_secs(100),
            member_id: None,
            nat: None,
            packets: [1, 1],
            bytes: [100, 100],
            copy: false,
        }))
    }

    /// Steps until the worker has installed, swept and adopted all.
    fn steps(w: &mut WorkerSync, engine: &mut Engine, now: Time) {
        for _ in 0..100_000 {
            w.step(engine, now, |_| {});
            if w.adopting.is_none() && w.sweep.is_none() && w.incoming.is_empty() {
                return;
            }
        }
        panic!("the worker never finished");
    }

    /// The other box restarted: the copies its old session left here are
    /// adopted before its new session's first resync (in the same ring,
    /// right behind the request) can sweep them; a copy of the new
    /// session's stays its own, swept when a resync of it does not name it.
    #[test]
    fn copies_left_by_a_restarted_peer_are_adopted_before_its_resync_sweeps() {
        let now = Time::from_secs(1000);
        let mut engine = Engine::new(Config::default(), now);
        let (mut workers, mut hubs) = links(1);
        let (w, hub) = (&mut workers[0], &mut hubs[0]);
        w.attach(&mut engine);
        let push = |hub: &mut HubEnd, records: &[Record]| {
            for r in records {
                hub.incoming.push(*r).unwrap();
            }
        };
        push(hub, &[Record::ResyncBegin { id: 1 }, reported(1), reported(2), Record::ResyncEnd { id: 1, flows: 2 }]);
        steps(w, &mut engine, now);
        assert_eq!(engine.conntrack().len(), 2);
        // The peer restarts: the request, then its new session's resync.
        hub.shared.adopt.store(1, Ordering::Release);
        push(hub, &[Record::ResyncBegin { id: 1 }, reported(3), Record::ResyncEnd { id: 1, flows: 1 }]);
        steps(w, &mut engine, now);
        assert_eq!(engine.conntrack().len(), 3, "the copies of the old session were swept");
        assert_eq!(hub.shared.counts.adopted.load(Ordering::Relaxed), 2);
        push(hub, &[Record::ResyncBegin { id: 2 }, Record::ResyncEnd { id: 2, flows: 0 }]);
        steps(w, &mut engine, now);
        assert_eq!(engine.conntrack().len(), 2, "the new session's copy is still its own");
        assert_eq!(hub.shared.counts.swept.load(Ordering::Relaxed), 1);
    }
}
