//! Egress: where a frame the engine forwards leaves, and what happens to it
//! on the way out.
//!
//! Two modes:
//! - **Static**: each side has one port and frames leave unchanged by the
//!   port of the side the engine chose. For in-memory tests and the
//!   benchmark, where there is no kernel to mirror.
//! - **Routed** (production): the router's FIB, mirrored from the kernel
//!   (in replay, given in a file), picks the egress interface and next
//!   hop; the frame gets the next hop's MAC, its TTL or hop limit is
//!   decremented, and what a router must answer (time exceeded,
//!   unreachable, too big) is answered. A frame whose next hop the kernel
//!   has not resolved yet waits for it (as Linux's `unres_qlen`), a few
//!   per next hop and for a second at most, instead of being dropped:
//!   the first packets after a link came up, a route moved or a takeover.

use crate::counters::{DataplaneCounters, Drop};
use arc_swap::ArcSwap;
use core::net::IpAddr;
use engine::{Side, Time};
use io::{Batch, PacketBuf};
use router::{Decision, FragmentSink, Icmp, Resolver, RouteTables, Router, RouterConfig};
use std::sync::Arc;

/// Egress counters that are not the dataplane's own drops.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EgressStats {
    /// Route table generation in use (0 in static mode).
    pub routes_generation: u64,
    /// The router's counters (none in static mode): copied as they are,
    /// so that a snapshot allocates nothing; named by [`EgressStats::router_named`].
    pub router: Option<router::Counters>,
}

impl EgressStats {
    /// The router's counters by name (forwarded, drops by reason, ICMP sent
    /// and suppressed). The drops keep their reason's name; the suppressed
    /// ICMP errors are told apart (`not_unicast` is both).
    pub fn router_named(&self) -> impl Iterator<Item = (String, u64)> + '_ {
        self.router.iter().flat_map(|c| {
            c.named().map(|(group, n, v)| match group {
                "icmp_suppressed" => (format!("icmp_suppressed_{n}"), v),
                _ => (n.to_owned(), v),
            })
        })
    }
}

/// Most fragments one IPv4 packet is split into (a 9000-byte packet over a 1280-byte link needs 8).
const MAX_FRAGMENTS: usize = 16;

/// Frames that may wait for their next hop's resolution, in all, and for
/// one next hop (Linux keeps about 100 per neighbour by default,
/// `unres_qlen_bytes`; a worker is one of several).
const WAITING_FRAMES: usize = 64;
const WAITING_PER_HOP: usize = 16;
/// How long a frame waits for its next hop (Linux's 3 solicitations a
/// second apart would be 3 s; a frame that old is rarely wanted).
const WAITING_NS: u64 = 1_000_000_000;

/// ICMP errors generated after the engine wait here, per side they travel
/// from, to go through the engine (which translates them back like any
/// related error) on the next loop.
const REINJECT_BATCH: usize = 64;

/// A worker's egress.
#[derive(Debug)]
pub struct Egress {
    mode: Mode,
    /// ICMP errors to run through the engine, by the side they come from.
    pub(crate) reinject: [Batch; 2],
}

#[derive(Debug)]
enum Mode {
    Static { port_of_side: [usize; 2] },
    Routed(Box<Routed>),
}

#[derive(Debug)]
struct Routed {
    source: Arc<ArcSwap<RouteTables>>,
    tables: Arc<RouteTables>,
    router: Router,
    resolver: Resolver,
    /// `(ifindex, side)` of each port, by port index.
    ports: Vec<(u32, Side)>,
    icmp: Box<[u8; 2048]>,
    frags: Fragments,
    /// Frames waiting for their next hop; `None` while they are released
    /// (one that meets an unresolved neighbour again is then dropped).
    waiting: Option<Box<Waiting>>,
}

/// Frames waiting for their next hop: `bufs[..held.len()]`, oldest first.
#[derive(Debug)]
struct Waiting {
    bufs: Vec<PacketBuf>,
    held: Vec<Held>,
    /// Swapped in for a frame on its way out.
    spare: PacketBuf,
    /// The kernel's tables the waiting frames were last routed with: they
    /// are routed again once there are new ones.
    routed_with: Option<Arc<RouteTables>>,
}

#[derive(Clone, Copy, Debug)]
struct Held {
    from: Option<usize>,
    to: Option<Side>,
    ifindex: u32,
    next_hop: IpAddr,
    since: u64,
}

impl Waiting {
    fn new() -> Box<Waiting> {
        Box::new(Waiting {
            bufs: (0..WAITING_FRAMES).map(|_| PacketBuf::default()).collect(),
            held: Vec::with_capacity(WAITING_FRAMES),
            spare: PacketBuf::default(),
            routed_with: None,
        })
    }

    /// The waiting frames were routed with other tables than `now`.
    fn stale(&self, now: &Arc<RouteTables>) -> bool {
        self.routed_with.as_ref().is_none_or(|t| !Arc::ptr_eq(t, now))
    }

    /// Takes `frame` (its buffer swapped for a free one) to wait for
    /// `next_hop`, if there is room.
    fn hold(&mut self, frame: &mut PacketBuf, h: Held) -> bool {
        let n = self.held.len();
        let same = self.held.iter().filter(|o| o.ifindex == h.ifindex && o.next_hop == h.next_hop).count();
        if n == WAITING_FRAMES || same >= WAITING_PER_HOP {
            return false;
        }
        core::mem::swap(frame, &mut self.bufs[n]);
        self.held.push(h);
        true
    }
}

/// The fragment sink: preallocated frames.
#[derive(Debug)]
struct Fragments {
    bufs: Vec<PacketBuf>,
    used: usize,
}

impl FragmentSink for Fragments {
    fn remaining(&self) -> usize {
        self.bufs.len() - self.used
    }
    fn next_frame(&mut self, len: usize) -> Option<&mut [u8]> {
        let b = self.bufs.get_mut(self.used)?;
        if !b.set_len(len) {
            return None;
        }
        self.used += 1;
        Some(b.as_mut_slice())
    }
}

impl Egress {
    /// Static mode: frames for `Side::Inside` leave by port `inside`, for
    /// `Side::Outside` by port `outside` (port indexes of the worker).
    pub fn fixed(inside: usize, outside: usize) -> Egress {
        Egress { mode: Mode::Static { port_of_side: [inside, outside] }, reinject: reinject_batches() }
    }

    /// Routed mode over `tables` (the route mirror's); `ports` gives each
    /// port's interface index and side, in port order. `now` is the workers'
    /// clock at start (the ICMP rate limiter's).
    pub fn routed(
        tables: Arc<ArcSwap<RouteTables>>,
        resolver: Resolver,
        ports: Vec<(u32, Side)>,
        config: RouterConfig,
        now: Time,
    ) -> Egress {
        let loaded = tables.load_full();
        let frags = Fragments { bufs: (0..MAX_FRAGMENTS).map(|_| PacketBuf::default()).collect(), used: 0 };
        Egress {
            mode: Mode::Routed(Box::new(Routed {
                source: tables,
                tables: loaded,
                router: Router::new(config, now.0),
                resolver,
                ports,
                icmp: Box::new([0; 2048]),
                frags,
                waiting: Some(Waiting::new()),
            })),
            reinject: reinject_batches(),
        }
    }

    /// Called once per loop before any frame: picks up new route tables.
    #[inline]
    pub(crate) fn begin_batch(&mut self) {
        if let Mode::Routed(r) = &mut self.mode {
            let current = r.source.load();
            if !Arc::ptr_eq(&r.tables, &current) {
                r.tables = arc_swap::Guard::into_inner(current);
            }
        }
    }

    /// Checks a frame on arrival by port `port`, before the engine (and so
    /// before it can create any state): in routed mode, a TTL that runs out
    /// here is answered with ICMP time exceeded on the ingress port.
    ///
    /// An ICMP error the router writes, and the fragments it cuts, carry
    /// the timestamp of the frame they are about (its arrival), not the
    /// loop's `now`: a replay writes them beside it.
    #[inline]
    pub(crate) fn check_arrival(
        &mut self,
        now: Time,
        port: usize,
        frame: &mut PacketBuf,
        tx: &mut [Batch],
        counters: &mut DataplaneCounters,
    ) -> Result<(), Drop> {
        let Mode::Routed(r) = &mut self.mode else { return Ok(()) };
        let ingress = r.ports.get(port).map_or(0, |p| p.0);
        match r.router.check_ttl(&r.tables, ingress, frame.as_slice(), now.0, &mut r.icmp[..]) {
            None => Ok(()),
            Some(Decision::Drop { icmp: Icmp::Sent { ifindex, len }, .. }) => {
                let sent =
                    r.ports.iter().position(|q| q.0 == ifindex).and_then(|p| {
                        tx.get_mut(p).map(|b| b.push_copy(&r.icmp[..len], frame.ts_ns, io::PortId(p as u8)))
                    });
                if sent == Some(false) {
                    // The time-exceeded answer found its port's batch full.
                    counters.drop(Drop::TxBatchFull);
                }
                Err(Drop::Routing)
            }
            Some(_) => Err(Drop::Routing),
        }
    }

    /// Sends `frame` (forwarded by the engine towards `to`; it came in by
    /// port `from` if known) to the tx batch of its egress port. The frame's
    /// buffer is swapped, not copied. Drops are counted. A frame `retried`
    /// from the waiting ones whose next hop is still not resolved is left
    /// as it is: returns false.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub(crate) fn forward(
        &mut self,
        now: Time,
        from: Option<usize>,
        to: Option<Side>,
        frame: &mut PacketBuf,
        tx: &mut [Batch],
        counters: &mut DataplaneCounters,
        retried: bool,
    ) -> bool {
        match &mut self.mode {
            Mode::Static { port_of_side } => {
                let Some(side) = to else {
                    counters.drop(Drop::NotViaPort);
                    return true;
                };
                queue(tx, port_of_side[side.index()], frame, counters);
            }
            Mode::Routed(r) => {
                // Released fragments do not know their port: use one on the other side.
                let ingress = match (from, to) {
                    (Some(p), _) => r.ports.get(p).map_or(0, |q| q.0),
                    (None, Some(to)) => r.ports.iter().find(|q| q.1 != to).map_or(0, |q| q.0),
                    (None, None) => 0,
                };
                r.frags.used = 0;
                let d =
                    r.router.forward(&r.tables, ingress, frame.as_mut_slice(), now.0, &mut r.icmp[..], &mut r.frags);
                match d {
                    Decision::Out { ifindex } | Decision::Fragmented { ifindex, .. } => {
                        let Some(p) = r.ports.iter().position(|q| q.0 == ifindex) else {
                            counters.drop(Drop::NotViaPort);
                            return true;
                        };
                        if to.is_some_and(|to| r.ports[p].1 != to) {
                            counters.drop(Drop::SideMismatch);
                            return true;
                        }
                        if let Decision::Out { .. } = d {
                            queue(tx, p, frame, counters);
                        } else {
                            for f in &mut r.frags.bufs[..r.frags.used] {
                                f.ts_ns = frame.ts_ns;
                                f.port = frame.port;
                                queue(tx, p, f, counters);
                            }
                        }
                    }
                    Decision::NeighbourMissing { ifindex, next_hop } => {
                        if r.resolver.resolve(ifindex, next_hop) {
                            counters.resolutions += 1;
                        }
                        if retried {
                            // Still waiting (perhaps for another next hop now).
                            return false;
                        }
                        let held = Held { from, to, ifindex, next_hop, since: now.0 };
                        if let Some(w) = r.waiting.as_mut().and_then(|w| w.hold(frame, held).then_some(w)) {
                            // Routed with these tables, as every frame that
                            // waits already is: the step released them first.
                            if w.stale(&r.tables) {
                                w.routed_with = Some(Arc::clone(&r.tables));
                            }
                            counters.neighbour_waited += 1;
                        } else {
                            counters.drop(Drop::NeighbourUnresolved);
                        }
                    }
                    Decision::Drop { icmp, .. } => {
                        counters.drop(Drop::Routing);
                        if let Icmp::Sent { len, .. } = icmp {
                            // The error travels back the way the packet came:
                            // through the engine as if from the side it was
                            // going to, so that a translated packet's error is
                            // translated back (RFC 5508) to the member's device.
                            let side = to.unwrap_or(Side::Outside);
                            counters.icmp_generated += 1;
                            let reinject = &mut self.reinject[side.index()];
                            if !reinject.push_copy(&r.icmp[..len], frame.ts_ns, io::PortId(u8::MAX)) {
                                counters.drop(Drop::ReinjectOverflow);
                            }
                        }
                    }
                }
            }
        }
        true
    }

    /// Frames waiting for their next hop's resolution.
    pub(crate) fn waiting(&self) -> usize {
        match &self.mode {
            Mode::Routed(r) => r.waiting.as_ref().map_or(0, |w| w.held.len()),
            Mode::Static { .. } => 0,
        }
    }

    /// Routes the waiting frames again once the kernel's tables change (a
    /// neighbour resolved, or the route moved to one that is), sending
    /// those that now can go, oldest first; drops (counted) those that
    /// waited [`WAITING_NS`]; with `all`, every one still waiting (the
    /// worker stops). Returns how many were sent or dropped.
    pub(crate) fn release_waiting(
        &mut self,
        now: Time,
        all: bool,
        tx: &mut [Batch],
        counters: &mut DataplaneCounters,
    ) -> usize {
        let Mode::Routed(r) = &mut self.mode else { return 0 };
        if r.waiting.as_ref().is_none_or(|w| w.held.is_empty()) {
            return 0;
        }
        let new_tables = r.waiting.as_ref().is_some_and(|w| w.stale(&r.tables));
        let Some(mut w) = r.waiting.take() else { return 0 };
        let (mut kept, mut done) = (0, 0);
        for i in 0..w.held.len() {
            let h = w.held[i];
            if new_tables && !all {
                core::mem::swap(&mut w.bufs[i], &mut w.spare);
                if self.forward(now, h.from, h.to, &mut w.spare, tx, counters, true) {
                    done += 1;
                    continue;
                }
                core::mem::swap(&mut w.bufs[i], &mut w.spare);
            }
            if all || now.0.saturating_sub(h.since) >= WAITING_NS {
                counters.drop(Drop::NeighbourUnresolved);
                done += 1;
            } else {
                w.bufs.swap(kept, i);
                w.held[kept] = h;
                kept += 1;
            }
        }
        w.held.truncate(kept);
        if let Mode::Routed(r) = &mut self.mode {
            w.routed_with = (kept > 0).then(|| Arc::clone(&r.tables));
            r.waiting = Some(w);
        }
        done
    }

    /// Makes sure the neighbour packets to `dst` go through is known, or
    /// asks the kernel to resolve it: a box of a pair does so for the flows
    /// it installs from the other, so that after a takeover their first
    /// packets are not dropped while it resolves. Returns whether it asked.
    pub(crate) fn prime(&mut self, dst: IpAddr) -> bool {
        let Mode::Routed(r) = &mut self.mode else { return false };
        let Some(route) = r.tables.lookup(dst) else { return false };
        if route.ifindex == 0 || !r.ports.iter().any(|p| p.0 == route.ifindex) {
            return false;
        }
        let next_hop = route.gateway.unwrap_or(dst);
        r.tables.neighbour(route.ifindex, next_hop).is_none() && r.resolver.resolve(route.ifindex, next_hop)
    }

    pub(crate) fn stats(&self) -> EgressStats {
        match &self.mode {
            Mode::Static { .. } => EgressStats::default(),
            Mode::Routed(r) => {
                EgressStats { routes_generation: r.tables.generation(), router: Some(r.router.counters().clone()) }
            }
        }
    }
}

fn reinject_batches() -> [Batch; 2] {
    [Batch::new(REINJECT_BATCH, io::DEFAULT_FRAME_CAPACITY), Batch::new(REINJECT_BATCH, io::DEFAULT_FRAME_CAPACITY)]
}

/// Appends `frame` to port `p`'s tx batch (swapping buffers).
#[inline]
fn queue(tx: &mut [Batch], p: usize, frame: &mut PacketBuf, counters: &mut DataplaneCounters) {
    match tx.get_mut(p) {
        Some(batch) => {
            if !batch.push_swap(frame) {
                counters.drop(Drop::TxBatchFull)
            }
        }
        None => counters.drop(Drop::NotViaPort),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use router::{IfAddr, Link, Route, RouteKind, TablesBuilder};
    use wire::build::Eth;
    use wire::ethernet::MacAddr;

    const GW_MAC: MacAddr = MacAddr([2, 0xbb, 0, 0, 0, 1]);

    fn tables(gw_known: bool) -> RouteTables {
        let link = |ifindex, addr: &str| Link {
            ifindex,
            name: format!("p{ifindex}"),
            mac: MacAddr([2, 0, 0, 0, 0, ifindex as u8]),
            mtu: 1500,
            up: true,
            addrs: vec![IfAddr { addr: addr.parse().unwrap(), prefix_len: 24 }],
        };
        let route = |p: &str, len, ifindex, gw: Option<&str>| Route {
            prefix: p.parse().unwrap(),
            prefix_len: len,
            kind: RouteKind::Unicast,
            ifindex,
            gateway: gw.map(|g| g.parse().unwrap()),
            mtu: None,
            metric: 0,
        };
        let mut b = TablesBuilder::new();
        b.link(link(1, "10.0.1.1"))
            .link(link(2, "192.0.2.1"))
            .route(route("10.0.1.0", 24, 1, None))
            .route(route("192.0.2.0", 24, 2, None))
            .route(route("203.0.113.0", 24, 2, Some("192.0.2.2")))
            .route(route("198.51.100.0", 24, 2, Some("192.0.2.3")));
        if gw_known {
            b.neighbour(2, "192.0.2.2".parse().unwrap(), GW_MAC);
        }
        b.build()
    }

    fn frame(dst: &str, seq: u16) -> PacketBuf {
        let mut b = PacketBuf::default();
        let eth = Eth { src: MacAddr([2, 0xaa, 0, 0, 0, 1]), dst: MacAddr([2, 0, 0, 0, 0, 1]), vlan: None };
        let src = "10.0.1.2".parse().unwrap();
        let mut bytes = [0u8; 128];
        let n = wire::build::udp(&mut bytes, &eth, src, dst.parse().unwrap(), 40_000 + seq, 53, 20).unwrap();
        assert!(b.copy_from(&bytes[..n]));
        b
    }

    /// Frames to a next hop not resolved yet wait for it (a few), go out
    /// in order once it is, and are dropped (counted) after a second.
    #[test]
    fn frames_wait_for_their_next_hop() {
        let source = Arc::new(ArcSwap::from_pointee(tables(false)));
        let (resolver, asked) = Resolver::channel(16);
        let now = Time(1_000_000_000);
        let mut e = Egress::routed(
            Arc::clone(&source),
            resolver,
            vec![(1, Side::Inside), (2, Side::Outside)],
            RouterConfig::default(),
            now,
        );
        let mut tx = [Batch::new(64, io::DEFAULT_FRAME_CAPACITY), Batch::new(64, io::DEFAULT_FRAME_CAPACITY)];
        let mut c = DataplaneCounters::new(2);
        for seq in 0..20 {
            let mut f = frame("203.0.113.9", seq);
            e.forward(now, Some(0), Some(Side::Outside), &mut f, &mut tx, &mut c, false);
        }
        assert_eq!(e.waiting(), WAITING_PER_HOP);
        assert_eq!((c.neighbour_waited, c.dropped(Drop::NeighbourUnresolved)), (WAITING_PER_HOP as u64, 4));
        assert!(tx[1].is_empty());
        assert_eq!(asked.try_recv().unwrap(), (2, "192.0.2.2".parse().unwrap()));
        // Another next hop, never resolved.
        let mut f = frame("198.51.100.7", 99);
        e.forward(now, Some(0), Some(Side::Outside), &mut f, &mut tx, &mut c, false);
        assert_eq!(e.waiting(), WAITING_PER_HOP + 1);
        // Nothing resolved yet: nothing moves.
        assert_eq!(e.release_waiting(now, false, &mut tx, &mut c), 0);
        // The kernel resolved 192.0.2.2: its frames go, in order, to its MAC.
        source.store(Arc::new(tables(true)));
        e.begin_batch();
        let later = Time(now.0 + 5_000_000);
        assert_eq!(e.release_waiting(later, false, &mut tx, &mut c), WAITING_PER_HOP);
        assert_eq!(tx[1].len(), WAITING_PER_HOP);
        for (seq, f) in tx[1].frames().iter().enumerate() {
            let m = wire::classify::classify(f.as_slice()).unwrap();
            assert_eq!(m.key.src_port, 40_000 + seq as u16);
            assert_eq!(&f.as_slice()[..6], &GW_MAC.0);
        }
        assert_eq!(e.waiting(), 1);
        // The other waits its second, then is dropped.
        assert_eq!(e.release_waiting(Time(now.0 + WAITING_NS - 1), false, &mut tx, &mut c), 0);
        assert_eq!(e.release_waiting(Time(now.0 + WAITING_NS), false, &mut tx, &mut c), 1);
        assert_eq!((e.waiting(), c.dropped(Drop::NeighbourUnresolved)), (0, 5));
        // At a stop, whatever waits is dropped.
        let mut f = frame("198.51.100.7", 100);
        e.forward(later, Some(0), Some(Side::Outside), &mut f, &mut tx, &mut c, false);
        assert_eq!(e.release_waiting(later, true, &mut tx, &mut c), 1);
        assert_eq!((e.waiting(), c.dropped(Drop::NeighbourUnresolved)), (0, 6));
    }
}
