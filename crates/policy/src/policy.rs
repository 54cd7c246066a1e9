//! The compiled policy: what the packet path asks about members.
//!
//! A [`Policy`] is built once by [`crate::compile()`] and never changed; a
//! reload builds a new one with the next generation number and the
//! dataplane swaps a pointer. Every question a packet can ask is answered
//! by one keyed hash probe or one binary search, without allocation:
//!
//! | question | structure |
//! |---|---|
//! | which member sent this (inside source) | hash of device addresses (/32), then sorted IPv4 / IPv6 intervals |
//! | which member is this (public address, port) | sorted `(address, first port)` keys |
//! | is this a port forward | hash of `(public address, protocol, port)` |
//! | may this IPv6 packet come in unsolicited | the owner's prefix, then that member's own openings |
//! | is this source allowed on the inside (BCP 38) | union of member, `internal` and `box` ranges |
//! | is this globally blocked | union of block prefixes per direction |
//!
//! Members are numbered densely by [`MemberRef`] in the order of their
//! stable database id, so a `MemberRef` indexes arrays the engine keeps per
//! member, and is valid within one generation only. Across generations the
//! stable id ([`MemberInfo::id`]) is what counts; [`Policy::by_id`] maps it
//! back and [`crate::diff()`] compares by it.
//!
//! Invariants established by the compiler: member address ranges of
//! different members are disjoint; shared public addresses have disjoint
//! port ranges; every forward targets one of its member's addresses inside
//! that member's port range; every opening lies in its member's prefix.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::collections::HashMap;

use crate::table::{AddrTable, Value};
use ahash::RandomState;

use crate::interval::Intervals;
use crate::model::{BlockDirection, NetworkKind, Protocol, Rates, Status};
use crate::prefix::{IpPrefix, Ipv6Prefix};

/// A member within one policy generation: a dense index `0..len()`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct MemberRef(u32);

impl MemberRef {
    /// The reference with index `i` (valid only if `i < policy.len()`).
    pub const fn from_index(i: u32) -> MemberRef {
        MemberRef(i)
    }

    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// A member's plan, as the shaper needs it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct PlanInfo {
    /// The plan's id in the database.
    pub id: u32,
    pub rates: Rates,
}

/// A member's public IPv4 address and port range.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct PublicRange {
    pub address: Ipv4Addr,
    pub first_port: u16,
    pub last_port: u16,
}

/// A port forward as one member's listing shows it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ForwardRule {
    pub protocol: Protocol,
    pub public_port: u16,
    pub internal_address: Ipv4Addr,
    pub internal_port: u16,
}

/// An inbound IPv6 opening of one member.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Opening {
    pub destination: Ipv6Prefix,
    pub protocol: Protocol,
    pub first_port: u16,
    pub last_port: u16,
}

/// Where a port forward leads: the answer of [`Policy::port_forward`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Forward {
    pub member: MemberRef,
    pub internal: Ipv4Addr,
    pub port: u16,
}

/// Everything the policy knows about one member.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct MemberInfo {
    /// The stable member id from the database.
    pub id: u32,
    pub name: String,
    pub status: Status,
    pub plan: Option<PlanInfo>,
    pub public: Option<PublicRange>,
    // Spans into the policy's flat per-member arrays.
    pub(crate) addresses: (u32, u32),
    pub(crate) forwards: (u32, u32),
    pub(crate) openings: (u32, u32),
}

/// The direction a packet travels through the box.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Direction {
    /// From the outside (internet) to the inside (members).
    Inbound,
    /// From the inside to the outside.
    Outbound,
}

/// Per-family lookup tables of one kind of range.
#[derive(Clone, Debug)]
pub(crate) struct RangeSet {
    v4: Intervals<u32, ()>,
    v6: Intervals<u128, ()>,
}

impl RangeSet {
    pub(crate) fn from_prefixes(prefixes: impl IntoIterator<Item = IpPrefix>) -> RangeSet {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for p in prefixes {
            match p {
                IpPrefix::V4(p) => v4.push((p.first(), p.last(), ())),
                IpPrefix::V6(p) => v6.push((p.first(), p.last(), ())),
            }
        }
        RangeSet { v4: Intervals::union(v4), v6: Intervals::union(v6) }
    }

    /// True if the union holds every address of `p`.
    pub(crate) fn covers(&self, p: IpPrefix) -> bool {
        match p {
            IpPrefix::V4(p) => self.v4.covers(p.first(), p.last()),
            IpPrefix::V6(p) => self.v6.covers(p.first(), p.last()),
        }
    }

    #[inline]
    pub(crate) fn contains(&self, a: IpAddr) -> bool {
        match a {
            IpAddr::V4(a) => self.v4.contains(u32::from(a)),
            IpAddr::V6(a) => self.v6.contains(u128::from(a)),
        }
    }
}

/// An immutable, generation-numbered compiled member database.
#[derive(Clone, Debug)]
pub struct Policy {
    pub(crate) generation: u64,
    /// Sorted by `id`; index = `MemberRef`.
    pub(crate) members: Vec<MemberInfo>,
    /// `members[i].id`, densely: what steering reads per packet (4 bytes a
    /// member stay in cache where the 96-byte records do not).
    pub(crate) ids: Vec<u32>,
    pub(crate) addresses: Vec<IpPrefix>,
    pub(crate) forward_rules: Vec<ForwardRule>,
    pub(crate) openings: Vec<Opening>,
    /// Device addresses (/32), the common case of an inside source.
    pub(crate) hosts_v4: AddrTable,
    /// Shorter IPv4 prefixes, merged per member.
    pub(crate) inside_v4: Intervals<u32, MemberRef>,
    pub(crate) inside_v6: Intervals<u128, MemberRef>,
    /// Member IPv6 prefixes up to /64 by length, longest first: upper 64
    /// bits → member index (the per-packet form of `inside_v6`).
    pub(crate) v6_tables: Vec<(u8, AddrTable<u64>)>,
    /// Some member prefix is longer than /64 (then `inside_v6` answers).
    pub(crate) v6_long: bool,
    /// Public address → its member and port range, or where its ranges
    /// lie in `public_ranges` if members share it.
    pub(crate) public_index: AddrTable<u32, PublicSlot>,
    /// The ranges of shared public addresses, by address, then port.
    pub(crate) public_ranges: Vec<PortRange>,
    /// The lowest and highest public address (`lo > hi` if there are none).
    pub(crate) public_span: (u32, u32),
    /// Key `address << 24 | protocol << 16 | port`.
    pub(crate) forwards: HashMap<u64, Forward, RandomState>,
    /// The other way: key `internal << 24 | protocol << 16 | internal
    /// port` → the forward's public address and port (the lowest public
    /// port where several forwards reach one device's port).
    pub(crate) forwarded_from: HashMap<u64, (Ipv4Addr, u16), RandomState>,
    /// `internal` ∪ `box` networks (member addresses lie inside `internal` ones: a compile rule).
    pub(crate) internal: RangeSet,
    pub(crate) boxes: RangeSet,
    pub(crate) blocked_inbound: RangeSet,
    pub(crate) blocked_outbound: RangeSet,
    /// The global rows, sorted, for `diff`.
    pub(crate) networks: Vec<(IpPrefix, NetworkKind)>,
    pub(crate) blocks: Vec<(IpPrefix, BlockDirection)>,
}

/// What [`Policy::public_index`] holds for a public address. Most
/// addresses have one member, and then the slot answers a lookup by
/// itself: one cache line per packet, where a search of the ranges read
/// three (the key, the last port and the member were separate arrays).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PublicSlot {
    /// One member's address: the member's index. A shared address:
    /// [`SHARED`] and the index of its first range in `public_ranges`.
    value: u32,
    /// One member's address: the first and last port of its range. A
    /// shared address: its number of ranges, high and low half.
    a: u16,
    b: u16,
}

/// [`PublicSlot::value`] of an address that members share.
const SHARED: u32 = 1 << 31;

impl PublicSlot {
    /// The slot of an address whose only range is `first..=last` of `m`.
    pub(crate) fn sole(m: MemberRef, first: u16, last: u16) -> PublicSlot {
        PublicSlot { value: m.0, a: first, b: last }
    }

    /// The slot of an address shared by the `count` ranges that start at
    /// `start` in `public_ranges` (both below 2³¹: one range per member).
    pub(crate) fn shared(start: u32, count: u32) -> PublicSlot {
        debug_assert!(start < SHARED && count >= 2);
        PublicSlot { value: SHARED | start, a: (count >> 16) as u16, b: count as u16 }
    }

    /// `Ok(member, first, last)` for one member's address, else `Err(ranges)`.
    #[inline]
    fn get(self) -> Result<(MemberRef, u16, u16), core::ops::Range<usize>> {
        if self.value & SHARED == 0 {
            return Ok((MemberRef(self.value), self.a, self.b));
        }
        let start = (self.value & !SHARED) as usize;
        Err(start..start + ((self.a as usize) << 16 | self.b as usize))
    }
}

impl Value for PublicSlot {
    /// `SHARED` with the largest start: no policy has 2³¹ ranges.
    const EMPTY: PublicSlot = PublicSlot { value: u32::MAX, a: 0, b: 0 };
}

/// One member's port range on a shared public address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PortRange {
    pub(crate) first: u16,
    pub(crate) last: u16,
    pub(crate) member: MemberRef,
}

/// The mask of the first `len` (0 to 64) bits of the upper half of an IPv6 address.
#[inline]
const fn top_mask(len: u8) -> u64 {
    if len == 0 {
        0
    } else {
        u64::MAX << (64 - len as u32)
    }
}

pub(crate) const fn forward_key(public: Ipv4Addr, proto: u8, port: u16) -> u64 {
    (public.to_bits() as u64) << 24 | (proto as u64) << 16 | port as u64
}

impl Policy {
    /// The generation number given to [`crate::compile()`].
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Number of members (`MemberRef`s are `0..len()`).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The member behind `m`. Panics if `m` is not of this generation's range.
    #[inline]
    pub fn member(&self, m: MemberRef) -> &MemberInfo {
        &self.members[m.index()]
    }

    /// The database id of `m` (the same as `member(m).id`, from a dense
    /// array: the per-packet form).
    #[inline]
    pub fn member_id(&self, m: MemberRef) -> u32 {
        self.ids[m.index()]
    }

    /// All members in id order.
    pub fn members(&self) -> impl ExactSizeIterator<Item = (MemberRef, &MemberInfo)> + '_ {
        self.members.iter().enumerate().map(|(i, m)| (MemberRef(i as u32), m))
    }

    /// The member with stable database id `id`, in this generation.
    pub fn by_id(&self, id: u32) -> Option<MemberRef> {
        self.members.binary_search_by_key(&id, |m| m.id).ok().map(|i| MemberRef(i as u32))
    }

    /// The member owning inside address `addr`: the member whose device
    /// address or prefix holds it.
    #[inline]
    pub fn member_of_inside(&self, addr: IpAddr) -> Option<MemberRef> {
        match addr {
            IpAddr::V4(a) => {
                let bits = u32::from(a);
                if let Some(m) = self.hosts_v4.get(bits) {
                    return Some(MemberRef::from_index(m));
                }
                self.inside_v4.find(bits).map(|(_, _, m)| m)
            }
            IpAddr::V6(a) => self.member_of_v6(a),
        }
    }

    /// The member whose IPv6 prefix holds `a`.
    #[inline]
    fn member_of_v6(&self, a: Ipv6Addr) -> Option<MemberRef> {
        let bits = u128::from(a);
        if !self.v6_long {
            let top = (bits >> 64) as u64;
            for (len, table) in &self.v6_tables {
                if let Some(m) = table.get(top & top_mask(*len)) {
                    return Some(MemberRef::from_index(m));
                }
            }
            return None;
        }
        self.inside_v6.find(bits).map(|(_, _, m)| m)
    }

    /// False if `addr` is certainly no member's public address: it lies
    /// outside the span from the lowest to the highest of them. One
    /// comparison pair, which spares the lookup for most destinations.
    #[inline]
    pub fn may_be_public(&self, addr: Ipv4Addr) -> bool {
        let (lo, hi) = self.public_span;
        (lo..=hi).contains(&addr.to_bits())
    }

    /// The member whose public address is `addr` and whose port range holds `port`.
    #[inline]
    pub fn member_of_public(&self, addr: Ipv4Addr, port: u16) -> Option<MemberRef> {
        match self.public_index.get(addr.to_bits())?.get() {
            Ok((m, first, last)) => (first <= port && port <= last).then_some(m),
            // A shared address's ranges lie together, a handful of 8-byte
            // entries: a binary search among them reads a line or two.
            Err(ranges) => {
                let ranges = self.public_ranges.get(ranges)?;
                let r = ranges[..ranges.partition_point(|r| r.first <= port)].last()?;
                (port <= r.last).then_some(r.member)
            }
        }
    }

    /// The member of public address `addr` when it is the address's only
    /// member (its ports not shared out): what a frame without ports (a
    /// later fragment, another protocol) to that address belongs to.
    #[inline]
    pub fn sole_member_of_public(&self, addr: Ipv4Addr) -> Option<MemberRef> {
        self.public_index.get(addr.to_bits())?.get().ok().map(|(m, _, _)| m)
    }

    /// Hints the CPU to load what [`member_of_inside`](Self::member_of_inside)
    /// reads first for an IPv4 address, so a batch can ask for the next
    /// frames' members while it works on this one's.
    #[inline]
    pub fn prefetch_inside_v4(&self, addr: Ipv4Addr) {
        self.hosts_v4.prefetch(addr.to_bits());
    }

    /// The same for an IPv6 address (the table of the longest member
    /// prefixes, which most lookups end in).
    #[inline]
    pub fn prefetch_inside_v6(&self, addr: Ipv6Addr) {
        if let Some((len, table)) = self.v6_tables.first() {
            table.prefetch((u128::from(addr) >> 64) as u64 & top_mask(*len));
        }
    }

    /// The same for [`member_of_public`](Self::member_of_public).
    #[inline]
    pub fn prefetch_public(&self, addr: Ipv4Addr) {
        self.public_index.prefetch(addr.to_bits());
    }

    /// The member's public address and port range `(address, first, last)`.
    #[inline]
    pub fn public_of(&self, m: MemberRef) -> Option<(Ipv4Addr, u16, u16)> {
        self.members[m.index()].public.map(|p| (p.address, p.first_port, p.last_port))
    }

    /// The forward of `port` (protocol number `proto`, 6 or 17) on public address `public`.
    #[inline]
    pub fn port_forward(&self, public: Ipv4Addr, proto: u8, port: u16) -> Option<Forward> {
        self.forwards.get(&forward_key(public, proto, port)).copied()
    }

    /// The public address and port a forward reaches the device's `internal`,
    /// `proto`, `port` from, if one does: what the device sends from that
    /// port leaves from there, as the forward's own answers do. Of several
    /// forwards to one device's port, the lowest public port.
    #[inline]
    pub fn forwarded_from(&self, internal: Ipv4Addr, proto: u8, port: u16) -> Option<(Ipv4Addr, u16)> {
        if self.forwarded_from.is_empty() {
            return None;
        }
        self.forwarded_from.get(&forward_key(internal, proto, port)).copied()
    }

    /// The member that opened `dst`, `proto`, `port` for unsolicited inbound
    /// IPv6. Costs one prefix lookup plus a scan of that member's own
    /// openings (a handful), independent of the number of members.
    #[inline]
    pub fn ipv6_opening(&self, dst: Ipv6Addr, proto: u8, port: u16) -> Option<MemberRef> {
        let (_, _, m) = self.inside_v6.find(u128::from(dst))?;
        let open = self.openings(m).iter().any(|o| {
            o.protocol.number() == proto && (o.first_port..=o.last_port).contains(&port) && o.destination.contains(dst)
        });
        open.then_some(m)
    }

    /// True if `addr` may appear as a source on the inside (BCP 38): it
    /// belongs to a member, an `internal` network or the box. Inside
    /// packets from anything else are spoofed and dropped.
    #[inline]
    pub fn is_internal(&self, addr: IpAddr) -> bool {
        self.internal.contains(addr)
    }

    /// True if `addr` is one of the box's own (`networks` of kind `box`).
    #[inline]
    pub fn is_box(&self, addr: IpAddr) -> bool {
        self.boxes.contains(addr)
    }

    /// True if a global block drops a packet from `src` to `dst` travelling
    /// in `direction`: a block applies to packets of its direction whose
    /// source or destination is in its prefix.
    #[inline]
    pub fn blocked(&self, src: IpAddr, dst: IpAddr, direction: Direction) -> bool {
        let set = match direction {
            Direction::Inbound => &self.blocked_inbound,
            Direction::Outbound => &self.blocked_outbound,
        };
        set.contains(src) || set.contains(dst)
    }

    /// The member's addresses and prefixes, sorted.
    /// Every forwarded public (address, protocol, port): what the NAT must
    /// never hand out. O(forwards), not O(members).
    pub fn forwarded_ports(&self) -> impl Iterator<Item = (Ipv4Addr, u8, u16)> + '_ {
        self.forwards.keys().map(|k| (Ipv4Addr::from((k >> 24) as u32), (k >> 16) as u8, *k as u16))
    }

    pub fn addresses(&self, m: MemberRef) -> &[IpPrefix] {
        let (a, b) = self.members[m.index()].addresses;
        &self.addresses[a as usize..b as usize]
    }

    /// The member's port forwards, sorted by protocol and public port.
    pub fn forwards(&self, m: MemberRef) -> &[ForwardRule] {
        let (a, b) = self.members[m.index()].forwards;
        &self.forward_rules[a as usize..b as usize]
    }

    /// The member's inbound IPv6 openings, sorted.
    pub fn openings(&self, m: MemberRef) -> &[Opening] {
        let (a, b) = self.members[m.index()].openings;
        &self.openings[a as usize..b as usize]
    }

    /// The `networks` rows (prefix, kind), sorted and without duplicates.
    pub fn networks(&self) -> &[(IpPrefix, NetworkKind)] {
        &self.networks
    }

    /// The `global_blocks` rows (prefix, direction), sorted and without duplicates.
    pub fn blocks(&self) -> &[(IpPrefix, BlockDirection)] {
        &self.blocks
    }
}

/// The worker core that owns member `member_id` when there are `cores`
/// workers (`cores` 0 counts as 1).
///
/// It depends on the stable database id only, never on a generation's
/// `MemberRef`, so a member stays on the same core across reloads and their
/// flows, NAT bindings and queues never have to move. (It moves only when
/// the number of cores changes, which is a restart.)
#[inline]
pub fn owner(member_id: u32, cores: usize) -> usize {
    // Steering asks once per frame: a mask, not a division, for the usual
    // power-of-two core counts (the same worker either way).
    let cores = cores.max(1);
    if cores.is_power_of_two() {
        member_id as usize & (cores - 1)
    } else {
        member_id as usize % cores
    }
}
