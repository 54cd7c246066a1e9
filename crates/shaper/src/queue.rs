//! Per-member fair queues: a handful of flow queues, deficit round robin
//! with new flows first, CoDel on each (fq_codel, RFC 8290).
//!
//! A member's packets are spread by flow hash over `flows_per_member` flow
//! queues (8 by default: a member has few simultaneous heavy flows, and the
//! state must stay small for 240,000 members), set-associatively
//! ([`pick_flow`]): a flow takes a queue of its own while one is idle, so a
//! member's call does not share a queue with its own bulk transfer by hash
//! accident. Dequeueing follows RFC 8290
//! section 4.2: flows that just became active are on the *new* list and are
//! served before the *old* list, so a sparse flow (a game, a call, DNS, TCP
//! ACKs) waits for at most the packet in flight of the member's other flows,
//! not for their queues; each flow spends a byte deficit of one quantum per
//! round, so bulk flows share the member's rate evenly; CoDel runs on each
//! flow at dequeue, so one flow's standing queue is signalled without
//! punishing the others.
//!
//! Packets live in one fixed-capacity [`Pool`] per core, linked into flow
//! queues by index: queueing allocates nothing, and memory is bounded by the
//! pool size, not by members × queue limit. Besides CoDel, two limits keep
//! delay bounded for senders that do not back off: a tail drop at the
//! member's packet/byte limit and a head drop of packets older than the
//! sojourn limit (unresponsive floods would otherwise sit at the limit).

use crate::codel::{Codel, CodelParams, Signal};
use crate::Reason;

/// No index (end of a list, empty queue).
pub const NIL: u32 = u32::MAX;
/// No flow (end of a member's flow list).
const NO_FLOW: u8 = u8::MAX;
/// Flow queues per member are indexed by `u8`, with [`NO_FLOW`] reserved.
pub const MAX_FLOWS_PER_MEMBER: u32 = 128;

/// A queued packet.
#[derive(Clone, Copy, Debug)]
struct Node<H> {
    handle: Option<H>,
    len: u32,
    ect: bool,
    enqueued_ns: u64,
    next: u32,
}

/// The core's packets in waiting, linked by index.
#[derive(Debug)]
pub struct Pool<H> {
    nodes: Vec<Node<H>>,
    free: u32,
    used: u32,
}

impl<H: Copy> Pool<H> {
    /// A pool for `capacity` packets (at most `u32::MAX - 1`).
    pub fn new(capacity: u32) -> Pool<H> {
        let capacity = capacity.min(NIL - 1);
        let nodes = (0..capacity)
            .map(|i| Node {
                handle: None,
                len: 0,
                ect: false,
                enqueued_ns: 0,
                next: if i + 1 < capacity { i + 1 } else { NIL },
            })
            .collect();
        Pool { nodes, free: if capacity > 0 { 0 } else { NIL }, used: 0 }
    }

    /// Packets held.
    pub fn used(&self) -> u32 {
        self.used
    }

    fn alloc(&mut self, handle: H, len: u32, ect: bool, now: u64) -> Option<u32> {
        let index = self.free;
        let node = self.nodes.get_mut(index as usize)?;
        self.free = node.next;
        *node = Node { handle: Some(handle), len, ect, enqueued_ns: now, next: NIL };
        self.used += 1;
        Some(index)
    }

    /// Frees a node, giving back what it held.
    fn release(&mut self, index: u32) -> Option<(H, u32, bool, u64)> {
        let free = self.free;
        let node = self.nodes.get_mut(index as usize)?;
        let handle = node.handle.take()?;
        let out = (handle, node.len, node.ect, node.enqueued_ns);
        node.next = free;
        self.free = index;
        self.used -= 1;
        Some(out)
    }
}

/// Which list of its member a flow is on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum FlowList {
    #[default]
    Idle,
    New,
    Old,
}

/// One flow queue of a member.
#[derive(Clone, Copy, Debug)]
pub struct Flow {
    head: u32,
    tail: u32,
    bytes: u32,
    deficit: i32,
    list: FlowList,
    /// Next flow on the same member list.
    next: u8,
    /// The flow hash of the packets this queue holds (meaningful while it
    /// is not idle): how [`pick_flow`] finds a flow's queue again.
    tag: u32,
    /// Packets of other flows than `tag`'s were put here too (every queue
    /// was busy): those flows must keep coming here until it drains.
    mixed: bool,
    codel: Codel,
}

impl Default for Flow {
    fn default() -> Flow {
        Flow {
            head: NIL,
            tail: NIL,
            bytes: 0,
            deficit: 0,
            list: FlowList::Idle,
            next: NO_FLOW,
            tag: 0,
            mixed: false,
            codel: Codel::default(),
        }
    }
}

/// A member's flow lists and backlog; its flows are a slice held by the caller.
#[derive(Clone, Copy, Debug)]
pub struct MemberQueue {
    new_head: u8,
    new_tail: u8,
    old_head: u8,
    old_tail: u8,
    /// Packets queued.
    pub packets: u32,
    /// Bytes queued.
    pub bytes: u64,
}

impl Default for MemberQueue {
    fn default() -> MemberQueue {
        MemberQueue { new_head: NO_FLOW, new_tail: NO_FLOW, old_head: NO_FLOW, old_tail: NO_FLOW, packets: 0, bytes: 0 }
    }
}

/// The queueing parameters shared by all members of a core.
#[derive(Clone, Copy, Debug)]
pub struct QueueParams {
    pub codel: CodelParams,
    /// Whether ECN-capable packets are marked instead of dropped.
    pub ecn: bool,
    /// DRR quantum per flow and round, bytes.
    pub quantum_bytes: u32,
    pub limit_packets: u32,
    pub limit_bytes: u64,
}

/// A packet handed out by [`MemberQueue::dequeue`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dequeued<H> {
    pub handle: H,
    pub len: u32,
    pub ecn_mark: bool,
    pub sojourn_ns: u64,
}

impl MemberQueue {
    /// Queues a packet on flow `flow` of `flows`, or says why not.
    #[allow(clippy::too_many_arguments)]
    pub fn enqueue<H: Copy>(
        &mut self,
        flows: &mut [Flow],
        pool: &mut Pool<H>,
        params: &QueueParams,
        flow: usize,
        handle: H,
        len: u32,
        ect: bool,
        now: u64,
    ) -> Result<(), Reason> {
        if self.packets >= params.limit_packets || self.bytes.saturating_add(u64::from(len)) > params.limit_bytes {
            return Err(Reason::QueueFull);
        }
        let Some(f) = flows.get_mut(flow) else { return Err(Reason::NoPlan) };
        let index = pool.alloc(handle, len, ect, now).ok_or(Reason::PoolFull)?;
        if f.tail == NIL {
            f.head = index;
        } else if let Some(node) = pool.nodes.get_mut(f.tail as usize) {
            node.next = index;
        }
        f.tail = index;
        f.bytes = f.bytes.saturating_add(len);
        self.packets += 1;
        self.bytes += u64::from(len);
        if f.list == FlowList::Idle {
            f.deficit = quantum(params);
            f.list = FlowList::New;
            self.push(flows, FlowList::New, flow as u8);
        }
        Ok(())
    }

    /// Takes the next packet by DRR and CoDel. Packets CoDel (or the sojourn
    /// limit) drops on the way are given to `dropped`. `None` when empty.
    pub fn dequeue<H: Copy>(
        &mut self,
        flows: &mut [Flow],
        pool: &mut Pool<H>,
        params: &QueueParams,
        sojourn_limit_ns: u64,
        now: u64,
        dropped: &mut impl FnMut(H, Reason),
    ) -> Option<Dequeued<H>> {
        // Each turn either returns, drops a packet, or moves a flow between
        // lists; a flow moves at most twice without being served, so this
        // ends within packets + 2 × flows turns.
        loop {
            let (list, flow) = if self.new_head != NO_FLOW {
                (FlowList::New, self.new_head)
            } else if self.old_head != NO_FLOW {
                (FlowList::Old, self.old_head)
            } else {
                return None;
            };
            let fi = usize::from(flow);
            let f = flows.get_mut(fi)?;
            if f.deficit <= 0 {
                f.deficit = f.deficit.saturating_add(quantum(params));
                self.pop(flows, list);
                self.push(flows, FlowList::Old, flow);
                continue;
            }
            let Some((handle, len, ect, enqueued_ns)) = self.pop_packet(f, pool) else {
                // Empty: a new flow goes to the old list once (RFC 8290 4.2,
                // so it cannot starve the old ones by re-entering); an old one leaves.
                f.codel.on_empty();
                self.pop(flows, list);
                if list == FlowList::New {
                    self.push(flows, FlowList::Old, flow);
                } else if let Some(f) = flows.get_mut(fi) {
                    f.list = FlowList::Idle;
                }
                continue;
            };
            let sojourn_ns = now.saturating_sub(enqueued_ns);
            if sojourn_ns > sojourn_limit_ns {
                dropped(handle, Reason::SojournLimit);
                continue;
            }
            let signal = f.codel.on_dequeue(now, sojourn_ns, u64::from(f.bytes), &params.codel);
            let mut ecn_mark = false;
            if signal == Signal::Congested {
                if params.ecn && ect {
                    ecn_mark = true;
                } else {
                    dropped(handle, Reason::CodelDrop);
                    continue;
                }
            }
            f.deficit = f.deficit.saturating_sub(i32::try_from(len).unwrap_or(i32::MAX));
            return Some(Dequeued { handle, len, ecn_mark, sojourn_ns });
        }
    }

    /// Frees every queued packet (member removed), giving each to `dropped`.
    pub fn drain<H: Copy>(&mut self, flows: &mut [Flow], pool: &mut Pool<H>, dropped: &mut impl FnMut(H)) {
        for f in flows.iter_mut() {
            while let Some((handle, ..)) = self.pop_packet(f, pool) {
                dropped(handle);
            }
            *f = Flow::default();
        }
        *self = MemberQueue::default();
    }

    /// The sojourn so far of the oldest packet at the head of any flow (for statistics).
    pub fn head_enqueued_ns<H: Copy>(&self, flows: &[Flow], pool: &Pool<H>) -> Option<u64> {
        flows.iter().filter_map(|f| pool.nodes.get(f.head as usize).map(|n| n.enqueued_ns)).min()
    }

    fn pop_packet<H: Copy>(&mut self, f: &mut Flow, pool: &mut Pool<H>) -> Option<(H, u32, bool, u64)> {
        let index = f.head;
        let next = pool.nodes.get(index as usize)?.next;
        let out = pool.release(index)?;
        f.head = next;
        if next == NIL {
            f.tail = NIL;
        }
        f.bytes = f.bytes.saturating_sub(out.1);
        self.packets = self.packets.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(u64::from(out.1));
        Some(out)
    }

    fn push(&mut self, flows: &mut [Flow], list: FlowList, flow: u8) {
        let (head, tail) = match list {
            FlowList::New => (&mut self.new_head, &mut self.new_tail),
            _ => (&mut self.old_head, &mut self.old_tail),
        };
        if let Some(last) = flows.get_mut(usize::from(*tail)) {
            last.next = flow;
        } else {
            *head = flow;
        }
        *tail = flow;
        if let Some(f) = flows.get_mut(usize::from(flow)) {
            f.next = NO_FLOW;
            f.list = list;
        }
    }

    fn pop(&mut self, flows: &mut [Flow], list: FlowList) {
        let (head, tail) = match list {
            FlowList::New => (&mut self.new_head, &mut self.new_tail),
            _ => (&mut self.old_head, &mut self.old_tail),
        };
        let Some(f) = flows.get_mut(usize::from(*head)) else { return };
        *head = f.next;
        f.next = NO_FLOW;
        if *head == NO_FLOW {
            *tail = NO_FLOW;
        }
    }
}

fn quantum(params: &QueueParams) -> i32 {
    i32::try_from(params.quantum_bytes.max(1)).unwrap_or(i32::MAX)
}

/// The flow queue a hash picks, out of `flows` (uses the hash's high bits).
pub fn flow_of(hash: u32, flows: u32) -> usize {
    ((u64::from(hash) * u64::from(flows)) >> 32) as usize
}

/// The queue for a packet of flow hash `hash` among a member's `flows`:
/// set-associative, as CAKE does it, so that a member's few flows do not
/// share a queue by hash accident (with plain hashing, a call next to three
/// bulk transfers lands in one of their queues a third of the time and
/// waits behind it). In order:
///
/// 1. the queue that holds this flow (its tag);
/// 2. its home queue ([`flow_of`]) if that is marked mixed: the flow may
///    have packets there from step 4;
/// 3. its home queue if idle, else any idle queue (tagged for this flow);
/// 4. (none idle) the home queue, shared, and marked mixed.
///
/// A flow's packets are therefore only ever in one queue, so nothing is
/// reordered. A member has at most [`MAX_FLOWS_PER_MEMBER`] queues, so the
/// scan is short, and it runs only for packets that queue (a member under
/// its rate passes without it).
pub fn pick_flow(flows: &mut [Flow], hash: u32) -> usize {
    let home = flow_of(hash, flows.len() as u32);
    let busy = |f: &Flow| f.list != FlowList::Idle;
    let Some(h) = flows.get(home) else { return home };
    if busy(h) && h.tag == hash {
        return home;
    }
    // One pass: this flow's queue if it has one, else the first idle queue.
    let mut first_idle = None;
    for (i, f) in flows.iter().enumerate() {
        if !busy(f) {
            first_idle = first_idle.or(Some(i));
        } else if f.tag == hash {
            return i;
        }
    }
    if busy(h) && h.mixed {
        return home;
    }
    let idle = if busy(h) { first_idle } else { Some(home) };
    match idle {
        Some(i) => {
            let f = &mut flows[i];
            f.tag = hash;
            f.mixed = false;
            i
        }
        None => {
            flows[home].mixed = true;
            home
        }
    }
}
