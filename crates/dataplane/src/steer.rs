//! Steering: which worker owns a frame.
//!
//! A member's flows, NAT ports, queues and counters live on one worker
//! ([`policy::owner`] of the member id), so a frame must be processed there.
//! From the inside the member is found by the source address (a device or a
//! member's IPv6 prefix); from the outside by the destination: a public IPv4
//! address and, where members share one, the port (for echo replies the
//! identifier, which the classifier puts in the destination port), or the
//! member's IPv6 prefix.
//!
//! Hairpinning (a member's device reaching another member through that
//! member's public address) joins two members in one flow, whose frames
//! come from the inside in both directions with a different source member
//! each: such a frame goes to the worker of the lower member id of the
//! two, so both directions meet there (the flow is charged to the member
//! who opened it, both ways, on that worker; totals are summed over
//! workers).
//!
//! Frames that belong to no member stay on the core they arrived on: they
//! are dropped there (unsolicited, spoofed) or, without a member policy
//! (connection tracking only), steered by a symmetric hash of the address
//! pair, so both directions of a flow meet on one core.
//!
//! An ICMP error is steered by the packet it quotes (the flow it is about):
//! from the outside by the quoted sender, which is a member's public
//! address and port; from the inside by the quoted receiver (the device
//! the packet went to: the error may come from a router on the way, whose
//! own address is no member's) and the quoted sender, so an error about a
//! hairpinned flow meets the flow.
//!
//! A frame without ports (a later fragment, another protocol) to a public
//! address goes to the address's member when the address has only one.
//! Towards an address that several members share, a later fragment has no
//! owner of its own: it follows its datagram's first fragment, whose ports
//! name the member. Each worker remembers where it sent the first
//! fragments of inbound IPv4 datagrams ([`Fragments`]: bounded, keyed by
//! a secret hash, an entry for a few seconds), and a later fragment that
//! arrives on the same worker goes there too. A NIC spreads the fragments
//! of one datagram by their addresses alone (they have no ports to hash
//! on), so they all arrive on one queue. A later fragment that comes
//! before its first, or after its entry was overwritten, or whose
//! datagram had first fragments for different members (a forgery, or an
//! identification reused within seconds), stays where it arrived and is
//! dropped there when its first never comes (counted): no member's
//! fragments are handed to another.

use core::net::{IpAddr, Ipv4Addr};
use engine::Side;
use policy::Policy;
use wire::classify::{Meta, L4};
use wire::flow::Family;

/// The worker that owns the frame described by `meta`, arriving from
/// `side`; `None` when no worker owns it (process it where it is).
#[inline]
pub fn owner(policy: Option<&Policy>, workers: usize, side: Side, meta: &Meta) -> Option<usize> {
    owner_of(policy, workers, &key(policy.is_some(), workers, side, meta))
}

/// What steering looks up for a frame: taken from the parse in a first
/// pass over the batch (which prefetches it, [`prefetch`]) and resolved to
/// a worker in a second ([`owner_of`]), so that the lookups of a batch
/// overlap their cache misses instead of waiting for each in turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    /// Stays where it arrived (one worker, or a frame that did not parse).
    Here,
    /// Worker `i mod n`: without a member policy, `i` is a symmetric hash
    /// of the address pair; for a later fragment, the worker its
    /// datagram's first fragment went to.
    Index(u64),
    /// From the inside: the source address.
    Inside(IpAddr),
    /// From the inside, IPv4: the source, and the destination and its port
    /// (which may be another member's public address: hairpinning).
    InsideV4(Ipv4Addr, Ipv4Addr, u16),
    /// From the outside, IPv4: the public destination and its port.
    Public(Ipv4Addr, u16),
}

/// The steering key of a parsed frame.
#[inline]
pub fn key(has_policy: bool, workers: usize, side: Side, meta: &Meta) -> Key {
    if workers <= 1 {
        return Key::Here;
    }
    let k = &meta.key;
    if !has_policy {
        return Key::Index(symmetric_hash(&k.src, &k.dst));
    }
    match (side, k.family) {
        (Side::Inside, Family::V4) => match &meta.l4 {
            L4::IcmpError { inner, .. } if inner.family == Family::V4 => {
                Key::InsideV4(inner.dst_v4(), inner.src_v4(), inner.src_port)
            }
            _ => Key::InsideV4(k.src_v4(), k.dst_v4(), k.dst_port),
        },
        (Side::Inside, Family::V6) => match &meta.l4 {
            L4::IcmpError { inner, .. } if inner.family == Family::V6 => Key::Inside(inner.dst_ip()),
            _ => Key::Inside(k.src_ip()),
        },
        (Side::Outside, Family::V4) => match &meta.l4 {
            L4::IcmpError { inner, .. } if inner.family == Family::V4 => Key::Public(inner.src_v4(), inner.src_port),
            _ => Key::Public(k.dst_v4(), k.dst_port),
        },
        (Side::Outside, Family::V6) => Key::Inside(k.dst_ip()),
    }
}

/// Starts loading what [`owner_of`] will read for `key`.
#[inline]
pub fn prefetch(policy: Option<&Policy>, key: &Key) {
    match (policy, key) {
        (Some(p), Key::Inside(IpAddr::V4(a))) => p.prefetch_inside_v4(*a),
        (Some(p), Key::InsideV4(src, dst, _)) => {
            p.prefetch_inside_v4(*src);
            if p.may_be_public(*dst) {
                p.prefetch_public(*dst);
            }
        }
        (Some(p), Key::Inside(IpAddr::V6(a))) => p.prefetch_inside_v6(*a),
        (Some(p), Key::Public(a, _)) => p.prefetch_public(*a),
        _ => {}
    }
}

/// The worker that owns a frame with steering key `key`; `None`: here.
/// Always inlined: the steering loop must not pay a call per frame (a
/// second caller, the fragments' pass, made it a call).
#[inline(always)]
pub fn owner_of(policy: Option<&Policy>, workers: usize, key: &Key) -> Option<usize> {
    let member = match (policy, *key) {
        (_, Key::Here) => return None,
        (_, Key::Index(i)) => return Some(i as usize % workers.max(1)),
        (None, _) => return None,
        (Some(p), Key::Inside(addr)) => p.member_of_inside(addr),
        (Some(p), Key::InsideV4(src, dst, port)) => {
            let id = p.member_id(p.member_of_inside(IpAddr::V4(src))?);
            let hairpin = p.may_be_public(dst).then(|| public_member(p, dst, port)).flatten();
            let id = hairpin.map_or(id, |other| id.min(p.member_id(other)));
            return Some(policy::owner(id, workers));
        }
        (Some(p), Key::Public(addr, port)) => public_member(p, addr, port),
    }?;
    let policy = policy?;
    Some(policy::owner(policy.member_id(member), workers))
}

/// The member of public `addr` and `port`; for a frame without ports
/// (port 0: later fragments, other protocols), the address's sole member.
#[inline]
fn public_member(p: &Policy, addr: Ipv4Addr, port: u16) -> Option<policy::MemberRef> {
    match p.member_of_public(addr, port) {
        None if port == 0 => p.sole_member_of_public(addr),
        found => found,
    }
}

/// What steering notes about a fragment of an inbound IPv4 datagram: its
/// datagram (source, destination, protocol, identification) and whether
/// it is the first fragment (the one with the ports).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FragmentNote {
    datagram: wire::FlowKey,
    first: bool,
}

/// The note for a frame from `side`, if it is a fragment of an inbound
/// IPv4 datagram.
#[inline]
fn fragment_note(side: Side, meta: &Meta) -> Option<FragmentNote> {
    let f = meta.frag?;
    if side != Side::Outside || meta.key.family != Family::V4 {
        return None;
    }
    let k = &meta.key;
    let datagram = wire::FlowKey::v4(k.src_v4(), k.dst_v4(), k.proto, (f.ident >> 16) as u16, f.ident as u16);
    Some(FragmentNote { datagram, first: f.offset == 0 })
}

/// How long a worker remembers where a datagram's first fragment went:
/// its later fragments come right behind it.
const FRAGMENT_MEMORY: core::time::Duration = core::time::Duration::from_secs(5);
/// Entries of a worker's memory (direct-mapped: a new datagram overwrites
/// the one in its slot).
const FRAGMENT_SLOTS: usize = 1024;
/// The worker of a datagram whose first fragments named different members.
const CONTESTED: u16 = u16::MAX;

/// Where one worker steered the first fragments of inbound IPv4
/// datagrams (to itself or another worker), so that their later fragments
/// follow.
#[derive(Debug)]
pub struct Fragments {
    hasher: engine::table::Hasher,
    slots: Box<[Option<(wire::FlowKey, u16, engine::Time)>]>,
}

impl Fragments {
    /// An empty memory, hashing under `key` (a secret drawn at start).
    pub fn new(key: [u64; 4]) -> Fragments {
        Fragments {
            hasher: engine::table::Hasher::new([key[2], key[3], key[0], key[1] ^ 0x0073_7465_6572]),
            slots: vec![None; FRAGMENT_SLOTS].into_boxed_slice(),
        }
    }

    /// After pass 1, the steering keys of the batch's fragments (`lanes`,
    /// their frames' indices; their parses in `parsed`): a first fragment
    /// of an inbound datagram is resolved now and its worker remembered, a
    /// later one without an owner of its own takes its first fragment's.
    /// Returns how many later fragments followed their first. Out of line:
    /// most batches have no fragment, and the steering loop stays small.
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    pub fn steer(
        &mut self,
        policy: Option<&Policy>,
        workers: usize,
        side: Side,
        parsed: &engine::Parsed,
        lanes: &[usize],
        keys: &mut [Key],
        now: engine::Time,
    ) -> u64 {
        // Without a member policy every fragment of an address pair goes
        // to one worker by the pair's hash already.
        if policy.is_none() {
            return 0;
        }
        let mut followed = 0;
        for &i in lanes {
            let (Some(meta), Some(key)) = (parsed.meta(i), keys.get_mut(i)) else { continue };
            let Some(note) = fragment_note(side, meta) else { continue };
            let (owner, f) = self.follow(&note, owner_of(policy, workers, key), now);
            *key = owner.map_or(Key::Here, |w| Key::Index(w as u64));
            followed += u64::from(f);
        }
        followed
    }

    /// Steering's answer for a frame with `note`, given `owner` (the
    /// answer from its own headers): a first fragment's owner is
    /// remembered, and a later fragment without an owner takes its first
    /// fragment's, unless first fragments for different members came (the
    /// datagram is contested: its later fragments stay where they are).
    /// Returns the owner, and whether a later fragment followed its first.
    #[inline]
    fn follow(&mut self, note: &FragmentNote, owner: Option<usize>, now: engine::Time) -> (Option<usize>, bool) {
        let slot = (self.hasher.hash(&note.datagram) as usize) % self.slots.len();
        let remembered = match self.slots[slot] {
            Some((d, w, at))
                if d == note.datagram && now.0.saturating_sub(at.0) <= FRAGMENT_MEMORY.as_nanos() as u64 =>
            {
                Some(w)
            }
            _ => None,
        };
        if note.first {
            match (remembered, owner) {
                (None, Some(w)) => self.slots[slot] = Some((note.datagram, w as u16, now)),
                // Another first fragment of the same datagram for another
                // member (forged to another member's port, or the sender
                // reused the identification): neither first is followed.
                // The later fragments stay where they arrive and are
                // dropped there; following either could hand one member's
                // data to another.
                (Some(w), Some(o)) if w != CONTESTED && usize::from(w) != o => {
                    self.slots[slot] = Some((note.datagram, CONTESTED, now));
                }
                _ => {}
            }
            return (owner, false);
        }
        match (owner, remembered) {
            (Some(_), _) | (None, None | Some(CONTESTED)) => (owner, false),
            (None, Some(w)) => (Some(usize::from(w)), true),
        }
    }
}

/// The worker that owns a flow the other box of a pair reports: its
/// member's; without a member policy, where both directions of its packets
/// are steered. Another flow of no member (the box's own traffic) stays
/// where its packets arrive, so any worker may hold it: worker 0.
pub fn owner_of_flow(has_policy: bool, workers: usize, member: Option<u32>, key: &wire::FlowKey) -> usize {
    match member {
        Some(m) => policy::owner(m, workers),
        None if !has_policy => (symmetric_hash(&key.src, &key.dst) % workers.max(1) as u64) as usize,
        None => 0,
    }
}

/// A hash of an address pair that does not depend on the pair's order.
#[inline]
fn symmetric_hash(a: &[u8; 16], b: &[u8; 16]) -> u64 {
    let fold = |x: &[u8; 16]| {
        let lo = u64::from_le_bytes(x[..8].try_into().unwrap_or_default());
        let hi = u64::from_le_bytes(x[8..].try_into().unwrap_or_default());
        lo ^ hi.rotate_left(17)
    };
    let h = fold(a) ^ fold(b);
    // A multiply-shift finaliser spreads the bits before the modulo.
    (h ^ (h >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9) >> 32
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;
    use wire::FlowKey;

    /// The member id whose worker (of 1000, so the id shows) owns a frame.
    fn owner_id(p: &Policy, side: Side, key: FlowKey, l4: L4) -> Option<usize> {
        let mut meta = Meta::EMPTY;
        (meta.key, meta.l4) = (key, l4);
        owner(Some(p), 1000, side, &meta)
    }

    fn icmp_error(inner: FlowKey) -> L4 {
        L4::IcmpError { msg_type: 3, code: 4, inner, inner_l3_offset: 42 }
    }

    #[test]
    fn a_later_fragment_follows_its_first_for_a_while() {
        let mut f = Fragments::new([1, 2, 3, 4]);
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let mut meta = Meta::EMPTY;
        meta.key = FlowKey::v4(ip("203.0.113.1"), ip("198.18.0.1"), 17, 53, 1000);
        meta.frag = Some(wire::classify::Fragment { ident: 9, offset: 0, more: true, data_offset: 20 });
        let first = fragment_note(Side::Outside, &meta).expect("a first fragment from the outside");
        assert_eq!(fragment_note(Side::Inside, &meta), None, "from the inside the source names the member");
        meta.key.src_port = 0;
        meta.key.dst_port = 0;
        meta.frag = Some(wire::classify::Fragment { ident: 9, offset: 1480, more: false, data_offset: 20 });
        let later = fragment_note(Side::Outside, &meta).unwrap();
        meta.frag = Some(wire::classify::Fragment { ident: 10, offset: 1480, more: false, data_offset: 20 });
        let other = fragment_note(Side::Outside, &meta).unwrap();
        let t = |s: u64| engine::Time(s * 1_000_000_000);

        assert_eq!(f.follow(&later, None, t(1)), (None, false), "nothing remembered yet");
        assert_eq!(f.follow(&first, Some(3), t(1)), (Some(3), false));
        assert_eq!(f.follow(&later, None, t(2)), (Some(3), true));
        assert_eq!(f.follow(&later, Some(1), t(2)), (Some(1), false), "an owner of its own wins");
        assert_eq!(f.follow(&other, None, t(2)), (None, false), "another datagram");
        assert_eq!(f.follow(&later, None, t(7)), (None, false), "forgotten after 5 s");

        // A copy of the first fragment changes nothing.
        assert_eq!(f.follow(&first, Some(0), t(10)), (Some(0), false));
        assert_eq!(f.follow(&first, Some(0), t(10)), (Some(0), false));
        assert_eq!(f.follow(&first, None, t(10)), (None, false), "to no member: dropped where it is");
        assert_eq!(f.follow(&later, None, t(10)), (Some(0), true));
        // A second first fragment for another member (a forgery, before or
        // after the real one) goes to its own, and nothing follows either.
        assert_eq!(f.follow(&first, Some(1), t(11)), (Some(1), false));
        assert_eq!(f.follow(&later, None, t(11)), (None, false), "contested");
        assert_eq!(f.follow(&first, Some(0), t(12)), (Some(0), false));
        assert_eq!(f.follow(&later, None, t(12)), (None, false), "still contested");
        assert_eq!(f.follow(&first, Some(2), t(20)), (Some(2), false), "forgotten: a new datagram");
        assert_eq!(f.follow(&later, None, t(20)), (Some(2), true));
    }

    #[test]
    fn hairpinned_flows_fragments_and_icmp_errors_meet_their_flow() {
        // Member 101: 10.0.1.1-2, public 198.51.100.10 alone; forward :8080 -> 10.0.1.2:80.
        // Members 104 (10.0.3.0/29) and 105 share 198.51.100.20: ports 1024-32767 and 32768-65535.
        let p = policy::compile(&policy::sample::example(), 1).unwrap();
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let (pub101, pub104, web) = (ip("198.51.100.10"), ip("198.51.100.20"), ip("198.19.0.80"));
        let syn = FlowKey::v4(ip("10.0.3.1"), pub101, 6, 6000, 8080);
        let answer = FlowKey::v4(ip("10.0.1.2"), pub104, 6, 80, 6000);
        assert_eq!(owner_id(&p, Side::Inside, syn, L4::Udp), Some(101), "the lower member's worker");
        assert_eq!(owner_id(&p, Side::Inside, answer, L4::Udp), Some(101));
        // The NAS's ICMP error about the hairpinned flow quotes pub104:6000 -> nas:80.
        let quoted = FlowKey::v4(pub104, ip("10.0.1.2"), 6, 6000, 80);
        let err = FlowKey::v4(ip("10.0.1.2"), pub104, 1, 0, 0);
        assert_eq!(owner_id(&p, Side::Inside, err, icmp_error(quoted)), Some(101));
        // So does one from a router on the way to the NAS (no member's address).
        let err = FlowKey::v4(ip("10.255.0.2"), pub104, 1, 0, 0);
        assert_eq!(owner_id(&p, Side::Inside, err, icmp_error(quoted)), Some(101));
        // A router's error about a download to member 104's device.
        let quoted = FlowKey::v4(web, ip("10.0.3.1"), 17, 53, 5000);
        let err = FlowKey::v4(ip("10.255.0.2"), web, 1, 0, 0);
        assert_eq!(owner_id(&p, Side::Inside, err, icmp_error(quoted)), Some(104));
        // And in IPv6: a router's Packet Too Big about a download to member 101's prefix.
        let ip6 = |s: &str| s.parse::<core::net::Ipv6Addr>().unwrap();
        let (remote, device) = (ip6("2001:db8:aaaa::80"), ip6("2001:db8:0:101::7"));
        let quoted = FlowKey::v6(remote, device, 6, 443, 40000);
        let err = FlowKey::v6(ip6("fd00:255::2"), remote, 58, 0, 0);
        assert_eq!(owner_id(&p, Side::Inside, err, icmp_error(quoted)), Some(101));
        // An ordinary flow is its member's.
        let out = FlowKey::v4(ip("10.0.3.1"), web, 17, 5000, 53);
        assert_eq!(owner_id(&p, Side::Inside, out, L4::Udp), Some(104));
        // From the outside: a later fragment (no ports) to an address of one
        // member is that member's; to a shared address, nobody's.
        let frag = |dst| FlowKey::v4(web, dst, 17, 0, 0);
        assert_eq!(owner_id(&p, Side::Outside, frag(pub101), L4::Fragment), Some(101));
        assert_eq!(owner_id(&p, Side::Outside, frag(pub104), L4::Fragment), None);
        // An ICMP error (fragmentation needed) about member 105's upload
        // quotes pub104:40000 -> web:443: member 105's port range.
        let quoted = FlowKey::v4(pub104, web, 6, 40000, 443);
        let err = FlowKey::v4(ip("198.19.0.1"), pub104, 1, 0, 0);
        assert_eq!(owner_id(&p, Side::Outside, err, icmp_error(quoted)), Some(105));
    }

    #[test]
    fn both_directions_meet_without_a_policy() {
        let mut meta = Meta::EMPTY;
        for i in 0..200u32 {
            let a = Ipv4Addr::from(0x0a00_0000 + i);
            let b = Ipv4Addr::from(0xc633_6400 + i * 7);
            meta.key = FlowKey::v4(a, b, 6, 1000, 80);
            let out = owner(None, 4, Side::Inside, &meta);
            meta.key = FlowKey::v4(b, a, 6, 80, 1000);
            assert_eq!(out, owner(None, 4, Side::Outside, &meta));
        }
    }
}
