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
//!   unreachable, too big) is answered.

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
    /// The router's counters by name (forwarded, drops by reason, ICMP sent and suppressed).
    pub router: Vec<(String, u64)>,
}

/// Most fragments one IPv4 packet is split into (a 9000-byte packet over a 1280-byte link needs 8).
const MAX_FRAGMENTS: usize = 16;

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
    ) -> Result<(), Drop> {
        let Mode::Routed(r) = &mut self.mode else { return Ok(()) };
        let ingress = r.ports.get(port).map_or(0, |p| p.0);
        match r.router.check_ttl(&r.tables, ingress, frame.as_slice(), now.0, &mut r.icmp[..]) {
            None => Ok(()),
            Some(Decision::Drop { icmp: Icmp::Sent { ifindex, len }, .. }) => {
                if let Some(p) = r.ports.iter().position(|q| q.0 == ifindex) {
                    if let Some(b) = tx.get_mut(p) {
                        let _ = b.push_copy(&r.icmp[..len], frame.ts_ns, io::PortId(p as u8));
                    }
                }
                Err(Drop::Routing)
            }
            Some(_) => Err(Drop::Routing),
        }
    }

    /// Sends `frame` (forwarded by the engine towards `to`; it came in by
    /// port `from` if known) to the tx batch of its egress port. The frame's
    /// buffer is swapped, not copied. Drops are counted.
    #[inline]
    pub(crate) fn forward(
        &mut self,
        now: Time,
        from: Option<usize>,
        to: Option<Side>,
        frame: &mut PacketBuf,
        tx: &mut [Batch],
        counters: &mut DataplaneCounters,
    ) {
        match &mut self.mode {
            Mode::Static { port_of_side } => {
                let Some(side) = to else {
                    counters.drop(Drop::NotViaPort);
                    return;
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
                            return;
                        };
                        if to.is_some_and(|to| r.ports[p].1 != to) {
                            counters.drop(Drop::SideMismatch);
                            return;
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
                        counters.drop(Drop::Routing);
                        if r.resolver.resolve(ifindex, next_hop) {
                            counters.resolutions += 1;
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
            Mode::Routed(r) => EgressStats {
                routes_generation: r.tables.generation(),
                router: r.router.counters().named().map(|(_, n, v)| (n.to_owned(), v)).collect(),
            },
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
