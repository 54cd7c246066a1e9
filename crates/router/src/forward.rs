//! The forwarding decision: pure logic over a [`RouteTables`] snapshot and
//! one Ethernet frame. No clock (time is an argument), no syscall, no
//! allocation, no panic on any frame content.
//!
//! # Calling order (per packet, in the worker)
//!
//! 1. `tables = shared.load()` once per batch (an `arc_swap` load).
//! 2. [`Router::check_ttl`] on the frame as received, **before** the engine:
//!    a packet whose TTL/hop limit is ≤ 1 is answered with ICMP time
//!    exceeded and dropped here, so an expiring packet (a traceroute probe)
//!    never creates connection state or a NAT binding. `None` means "go on".
//! 3. The engine (conntrack, policy, NAT, accounting, shaping) may rewrite
//!    addresses and ports in place.
//! 4. [`Router::forward`] on the (possibly rewritten) frame: route lookup,
//!    neighbour lookup, MTU check, TTL decrement with RFC 1624 checksum
//!    update, MAC rewrite. The [`Decision`] says what to transmit where:
//!    - [`Decision::Out`]: transmit the rewritten frame on `ifindex`;
//!    - [`Decision::Fragmented`]: transmit the `count` frames the
//!      [`FragmentSink`] received on `ifindex`, drop the original;
//!    - [`Decision::NeighbourMissing`]: drop, and ask the mirror to resolve
//!      (`Resolver::resolve(ifindex, next_hop)`; never blocks);
//!    - [`Decision::Drop`]: drop; if its `icmp` is [`Icmp::Sent`], transmit
//!      the first `len` bytes of `icmp_out` on `ifindex` (the ingress port).
//!
//! Counters ([`Counters`]) are kept per `Router`, i.e. per core.
//!
//! **ICMP errors after NAT.** An error generated in step 4 quotes the packet
//! as rewritten and is addressed to its rewritten source. When the engine
//! translated the packet, the dataplane must hand the error frame to the
//! engine's reverse translation of related ICMP errors (as the kernel's
//! conntrack does for errors the stack originates) before sending it.
//!
//! # Forwarding rules (RFC 1812 §5.2-5.3, RFC 8200 §3, RFC 4443)
//!
//! In order: untagged IPv4/IPv6 only; not to the box's own or
//! directed-broadcast addresses; unicast only; nothing link-local; TTL/hop
//! limit > 1 on arrival; longest-prefix match (`blackhole`, `unreachable`,
//! `prohibit`, `local` routes act as their names say); the egress must be an
//! up torwart port; next hop = gateway, or the destination if on-link; a
//! usable neighbour entry for it; IP length ≤ egress MTU (the route's MTU if
//! set and smaller, else the link's), else IPv6 and IPv4-with-DF get "too
//! big" errors and other IPv4 packets are fragmented (RFC 791 §3.2, options
//! without the copy flag only in the first fragment).

use std::net::IpAddr;

use wire::checksum;
use wire::ethernet::{self, EtherType};
use wire::{ipv4, ipv6};

use crate::fragment::{fragment_v4, FragmentSink};
use crate::icmp::{self, IcmpError, Offending};
use crate::ratelimit::TokenBucket;
use crate::reason::{IcmpSuppressed, Reason};
use crate::tables::{is_link_local_v6, LocalKind, RouteKind, RouteTables};

/// Per-core router settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouterConfig {
    /// ICMP errors per second this core may originate (0: none).
    pub icmp_rate: u32,
    /// How many it may send at once after a quiet period.
    pub icmp_burst: u32,
}

impl Default for RouterConfig {
    /// Linux's default `icmp_msgs_per_sec` (1000) and `icmp_msgs_burst` (50).
    fn default() -> RouterConfig {
        RouterConfig { icmp_rate: 1000, icmp_burst: 50 }
    }
}

/// Whether an ICMP error went out with a drop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Icmp {
    /// The drop calls for no error (blackhole, neighbour missing, ...).
    None,
    /// An error frame of `len` bytes is in `icmp_out`: send it on `ifindex`.
    Sent { ifindex: u32, len: usize },
    /// The drop called for an error, but none was sent.
    Suppressed(IcmpSuppressed),
}

/// What to do with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The frame was rewritten in place; transmit it on `ifindex`.
    Out { ifindex: u32 },
    /// The packet was split into `count` frames, handed to the fragment sink;
    /// transmit those on `ifindex` and drop the original.
    Fragmented { ifindex: u32, count: usize },
    /// No usable neighbour entry for `next_hop` on `ifindex`: drop the frame
    /// and request resolution. Counted as [`Reason::NeighbourMissing`].
    NeighbourMissing { ifindex: u32, next_hop: IpAddr },
    /// Not forwarded, for `reason`.
    Drop { reason: Reason, icmp: Icmp },
}

impl Decision {
    /// The drop reason, if the frame is not forwarded.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            Decision::Out { .. } | Decision::Fragmented { .. } => None,
            Decision::NeighbourMissing { .. } => Some(Reason::NeighbourMissing),
            Decision::Drop { reason, .. } => Some(*reason),
        }
    }

    const fn drop(reason: Reason) -> Decision {
        Decision::Drop { reason, icmp: Icmp::None }
    }
}

/// The routing stage's counters, per core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counters {
    /// Packets forwarded whole.
    pub forwarded: u64,
    /// Packets forwarded as fragments, and the fragments sent for them.
    pub fragmented: u64,
    pub fragments: u64,
    /// Drops by [`Reason::index`].
    pub drops: [u64; Reason::COUNT],
    pub icmp_sent: u64,
    /// ICMP errors not sent, by [`IcmpSuppressed::index`].
    pub icmp_suppressed: [u64; IcmpSuppressed::COUNT],
}

impl Default for Counters {
    fn default() -> Counters {
        Counters {
            forwarded: 0,
            fragmented: 0,
            fragments: 0,
            drops: [0; Reason::COUNT],
            icmp_sent: 0,
            icmp_suppressed: [0; IcmpSuppressed::COUNT],
        }
    }
}

impl Counters {
    pub fn drop_count(&self, r: Reason) -> u64 {
        self.drops[r.index()]
    }

    pub fn suppressed_count(&self, s: IcmpSuppressed) -> u64 {
        self.icmp_suppressed[s.index()]
    }

    /// Every counter as (group, name, value), for metrics: group `""` for
    /// `forwarded`, `fragmented`, `fragments`, `icmp_sent`; group `"drop"`
    /// with a [`Reason`] name; group `"icmp_suppressed"` with an
    /// [`IcmpSuppressed`] name.
    pub fn named(&self) -> impl Iterator<Item = (&'static str, &'static str, u64)> + '_ {
        let plain = [
            ("", "forwarded", self.forwarded),
            ("", "fragmented", self.fragmented),
            ("", "fragments", self.fragments),
            ("", "icmp_sent", self.icmp_sent),
        ];
        plain
            .into_iter()
            .chain(Reason::ALL.iter().map(|r| ("drop", r.name(), self.drops[r.index()])))
            .chain(IcmpSuppressed::ALL.iter().map(|s| ("icmp_suppressed", s.name(), self.icmp_suppressed[s.index()])))
    }
}

/// The parts of the IP header the decision needs.
#[derive(Clone, Copy, Debug)]
struct IpInfo {
    at: Offending,
    ttl: u8,
    v6: bool,
}

/// Parse the frame far enough to route it. Frames are untrusted: every
/// access goes through wire's checked views.
fn parse(frame: &[u8]) -> Result<IpInfo, Reason> {
    let eth = ethernet::Frame::new_checked(frame).map_err(|_| Reason::Malformed)?;
    let l3 = ethernet::HEADER_LEN;
    let payload = frame.get(l3..).ok_or(Reason::Malformed)?;
    match eth.ethertype() {
        EtherType::IPV4 => {
            let p = ipv4::Packet::new_checked(payload).map_err(|_| Reason::Malformed)?;
            let at = Offending {
                l3,
                l3_end: l3 + usize::from(p.total_len()),
                src: IpAddr::V4(p.src_addr()),
                dst: IpAddr::V4(p.dst_addr()),
            };
            Ok(IpInfo { at, ttl: p.ttl(), v6: false })
        }
        EtherType::IPV6 => {
            let p = ipv6::Packet::new_checked(payload).map_err(|_| Reason::Malformed)?;
            let at = Offending {
                l3,
                l3_end: l3 + ipv6::HEADER_LEN + usize::from(p.payload_len()),
                src: IpAddr::V6(p.src_addr()),
                dst: IpAddr::V6(p.dst_addr()),
            };
            Ok(IpInfo { at, ttl: p.hop_limit(), v6: true })
        }
        t if t.is_vlan() => Err(Reason::VlanTagged),
        _ => Err(Reason::NotIp),
    }
}

/// The per-core router: the ICMP rate limiter and the counters. The tables
/// are passed to every call, so a worker uses whatever snapshot it loaded.
#[derive(Clone, Debug)]
pub struct Router {
    limiter: TokenBucket,
    counters: Counters,
}

impl Router {
    /// `now`: nanoseconds since the caller's epoch (the engine's `Time`).
    pub fn new(config: RouterConfig, now: u64) -> Router {
        Router { limiter: TokenBucket::new(config.icmp_rate, config.icmp_burst, now), counters: Counters::default() }
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Step 2 of the calling order: answer a packet whose TTL or hop limit
    /// is ≤ 1 with ICMP time exceeded before the engine sees it. Returns
    /// `None` when the packet may go on (TTL fine, or not forwardable
    /// anyway: addressed to the box, multicast, or malformed, which the
    /// engine's parser counts). `Some` is always a [`Decision::Drop`].
    pub fn check_ttl(
        &mut self,
        tables: &RouteTables,
        ingress: u32,
        frame: &[u8],
        now: u64,
        icmp_out: &mut [u8],
    ) -> Option<Decision> {
        let ip = parse(frame).ok()?;
        if ip.ttl > 1 || tables.local_kind(ip.at.dst).is_some() || !is_unicast(ip.at.dst) {
            return None;
        }
        let d = self.drop_with_icmp(
            tables,
            ingress,
            frame,
            &ip.at,
            Reason::TtlExceeded,
            IcmpError::TimeExceeded,
            now,
            icmp_out,
        );
        self.count(&d);
        Some(d)
    }

    /// Step 4 of the calling order: route the frame, rewriting it in place
    /// when it is forwarded. `frags` receives the fragments of an IPv4
    /// packet larger than the egress MTU (pass [`NoFragments`](crate::NoFragments)
    /// to drop those as [`Reason::NeedsFragmentation`] instead).
    #[allow(clippy::too_many_arguments)]
    pub fn forward<S: FragmentSink + ?Sized>(
        &mut self,
        tables: &RouteTables,
        ingress: u32,
        frame: &mut [u8],
        now: u64,
        icmp_out: &mut [u8],
        frags: &mut S,
    ) -> Decision {
        let d = self.decide(tables, ingress, frame, now, icmp_out, frags);
        self.count(&d);
        d
    }

    fn count(&mut self, d: &Decision) {
        let c = &mut self.counters;
        match *d {
            Decision::Out { .. } => c.forwarded += 1,
            Decision::Fragmented { count, .. } => {
                c.fragmented += 1;
                c.fragments += count as u64;
            }
            Decision::NeighbourMissing { .. } => c.drops[Reason::NeighbourMissing.index()] += 1,
            Decision::Drop { reason, icmp } => {
                c.drops[reason.index()] += 1;
                match icmp {
                    Icmp::None => {}
                    Icmp::Sent { .. } => c.icmp_sent += 1,
                    Icmp::Suppressed(s) => c.icmp_suppressed[s.index()] += 1,
                }
            }
        }
    }

    fn decide<S: FragmentSink + ?Sized>(
        &mut self,
        tables: &RouteTables,
        ingress: u32,
        frame: &mut [u8],
        now: u64,
        icmp_out: &mut [u8],
        frags: &mut S,
    ) -> Decision {
        let ip = match parse(frame) {
            Ok(ip) => ip,
            Err(r) => return Decision::drop(r),
        };
        let (src, dst) = (ip.at.src, ip.at.dst);
        match tables.local_kind(dst) {
            Some(LocalKind::Address) => return Decision::drop(Reason::Local),
            Some(LocalKind::Broadcast) => return Decision::drop(Reason::DirectedBroadcast),
            None => {}
        }
        if !is_unicast(dst) {
            return Decision::drop(Reason::NotUnicast);
        }
        if is_link_local(dst) || is_link_local(src) {
            return Decision::drop(Reason::LinkLocal);
        }
        let mut icmp = |r: &mut Router, reason, kind| {
            r.drop_with_icmp(tables, ingress, frame, &ip.at, reason, kind, now, icmp_out)
        };
        if ip.ttl <= 1 {
            return icmp(self, Reason::TtlExceeded, IcmpError::TimeExceeded);
        }
        let Some(route) = tables.lookup(dst) else {
            return icmp(self, Reason::NoRoute, IcmpError::NetUnreachable);
        };
        match route.kind {
            RouteKind::Unicast => {}
            RouteKind::Blackhole => return Decision::drop(Reason::BlackholeRoute),
            RouteKind::Unreachable => return icmp(self, Reason::UnreachableRoute, IcmpError::HostUnreachable),
            RouteKind::Prohibit => return icmp(self, Reason::ProhibitRoute, IcmpError::AdminProhibited),
            RouteKind::Local => return Decision::drop(Reason::Local),
        }
        let Some(out) = tables.link(route.ifindex) else {
            return Decision::drop(Reason::EgressNotPort);
        };
        if !out.up {
            return Decision::drop(Reason::EgressDown);
        }
        let next_hop = route.gateway.unwrap_or(dst);
        let Some(next_mac) = tables.neighbour(out.ifindex, next_hop) else {
            return Decision::NeighbourMissing { ifindex: out.ifindex, next_hop };
        };
        let mtu = match route.mtu {
            Some(m) if m > 0 => m.min(out.mtu),
            _ => out.mtu,
        };
        let ip_len = ip.at.l3_end - ip.at.l3;
        if ip_len as u64 > u64::from(mtu) {
            let dont_frag = ip.v6 || frame.get(ip.at.l3..).is_none_or(|b| ipv4::Packet::new_unchecked(b).dont_frag());
            if dont_frag {
                return icmp(self, Reason::TooBig, IcmpError::TooBig(mtu));
            }
            if frags.remaining() == 0 {
                return Decision::drop(Reason::NeedsFragmentation);
            }
            decrement_ttl(frame, ip.at.l3, ip.v6);
            return match fragment_v4(frame, ip.at.l3, mtu, out.mac, next_mac, frags) {
                Some(count) => Decision::Fragmented { ifindex: out.ifindex, count },
                None => Decision::drop(Reason::NeedsFragmentation),
            };
        }
        decrement_ttl(frame, ip.at.l3, ip.v6);
        let mut eth = ethernet::Frame::new_unchecked(&mut *frame);
        eth.set_src_addr(out.mac);
        eth.set_dst_addr(next_mac);
        Decision::Out { ifindex: out.ifindex }
    }

    #[allow(clippy::too_many_arguments)]
    fn drop_with_icmp(
        &mut self,
        tables: &RouteTables,
        ingress: u32,
        frame: &[u8],
        at: &Offending,
        reason: Reason,
        kind: IcmpError,
        now: u64,
        icmp_out: &mut [u8],
    ) -> Decision {
        let icmp = match self.send_icmp(tables, ingress, frame, at, kind, now, icmp_out) {
            Ok(len) => Icmp::Sent { ifindex: ingress, len },
            Err(s) => Icmp::Suppressed(s),
        };
        Decision::Drop { reason, icmp }
    }

    #[allow(clippy::too_many_arguments)]
    fn send_icmp(
        &mut self,
        tables: &RouteTables,
        ingress: u32,
        frame: &[u8],
        at: &Offending,
        kind: IcmpError,
        now: u64,
        icmp_out: &mut [u8],
    ) -> Result<usize, IcmpSuppressed> {
        icmp::eligible(tables, frame, at)?;
        if !self.limiter.try_take(now) {
            return Err(IcmpSuppressed::RateLimited);
        }
        icmp::write(tables, ingress, frame, at, kind, icmp_out).inspect_err(|_| self.limiter.refund())
    }
}

/// Decrement the TTL (patching the IPv4 header checksum with RFC 1624
/// eqn 3) or the hop limit. The caller checked the header and TTL > 1.
fn decrement_ttl(frame: &mut [u8], l3: usize, v6: bool) {
    let Some(b) = frame.get_mut(l3..) else { return };
    if v6 {
        let mut p = ipv6::Packet::new_unchecked(b);
        let h = p.hop_limit();
        p.set_hop_limit(h.saturating_sub(1));
    } else {
        let mut p = ipv4::Packet::new_unchecked(b);
        let (ttl, protocol) = (p.ttl(), p.protocol());
        // TTL shares its 16-bit checksum word with the protocol byte.
        let old = u16::from_be_bytes([ttl, protocol]);
        let new = u16::from_be_bytes([ttl.saturating_sub(1), protocol]);
        let c = checksum::update_u16(p.checksum(), old, new);
        p.set_ttl(ttl.saturating_sub(1));
        p.set_checksum(c);
    }
}

fn is_unicast(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v4) => !v4.is_multicast() && !v4.is_broadcast() && !v4.is_unspecified(),
        IpAddr::V6(v6) => !v6.is_multicast() && !v6.is_unspecified() && !v6.is_loopback(),
    }
}

fn is_link_local(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => is_link_local_v6(&v6),
    }
}
