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
//! two, so both directions meet there (the flow's accounting for the other
//! member is counted on that worker too; totals are summed over workers).
//!
//! Frames that belong to no member stay on the core they arrived on: they
//! are dropped there (unsolicited, spoofed) or, without a member policy
//! (connection tracking only), steered by a symmetric hash of the address
//! pair, so both directions of a flow meet on one core.
//!
//! Known gap: a later fragment has no ports; towards an address that several
//! members share it is steered by the address alone (port 0), which picks
//! the member holding the lowest ports. Fragments of inbound datagrams to
//! shared addresses can therefore end on a core that never saw their first
//! fragment and are then dropped as orphans (counted).

use core::net::{IpAddr, Ipv4Addr};
use engine::Side;
use policy::Policy;
use wire::classify::Meta;
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
    /// No member policy: a symmetric hash of the address pair.
    Hash(u64),
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
        return Key::Hash(symmetric_hash(&k.src, &k.dst));
    }
    match (side, k.family) {
        (Side::Inside, Family::V4) => Key::InsideV4(k.src_v4(), k.dst_v4(), k.dst_port),
        (Side::Inside, Family::V6) => Key::Inside(k.src_ip()),
        (Side::Outside, Family::V4) => Key::Public(k.dst_v4(), k.dst_port),
        (Side::Outside, Family::V6) => Key::Inside(k.dst_ip()),
    }
}

/// Starts loading what [`owner_of`] will read for `key`.
#[inline]
pub fn prefetch(policy: Option<&Policy>, key: &Key) {
    match (policy, key) {
        (Some(p), Key::Inside(IpAddr::V4(a)) | Key::InsideV4(a, ..)) => p.prefetch_inside_v4(*a),
        (Some(p), Key::Inside(IpAddr::V6(a))) => p.prefetch_inside_v6(*a),
        (Some(p), Key::Public(a, _)) => p.prefetch_public(*a),
        _ => {}
    }
}

/// The worker that owns a frame with steering key `key`; `None`: here.
#[inline]
pub fn owner_of(policy: Option<&Policy>, workers: usize, key: &Key) -> Option<usize> {
    let member = match (policy, *key) {
        (_, Key::Here) => return None,
        (_, Key::Hash(h)) => return Some(h as usize % workers.max(1)),
        (None, _) => return None,
        (Some(p), Key::Inside(addr)) => p.member_of_inside(addr),
        (Some(p), Key::InsideV4(src, dst, port)) => {
            let id = p.member_id(p.member_of_inside(IpAddr::V4(src))?);
            let hairpin = p.may_be_public(dst).then(|| p.member_of_public(dst, port)).flatten();
            let id = hairpin.map_or(id, |other| id.min(p.member_id(other)));
            return Some(policy::owner(id, workers));
        }
        (Some(p), Key::Public(addr, port)) => p.member_of_public(addr, port),
    }?;
    let policy = policy?;
    Some(policy::owner(policy.member_id(member), workers))
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
