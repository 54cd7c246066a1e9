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

use engine::Side;
use policy::Policy;
use wire::classify::Meta;
use wire::flow::Family;

/// The worker that owns the frame described by `meta`, arriving from
/// `side`; `None` when no worker owns it (process it where it is).
#[inline]
pub fn owner(policy: Option<&Policy>, workers: usize, side: Side, meta: &Meta) -> Option<usize> {
    if workers <= 1 {
        return None;
    }
    let key = &meta.key;
    let Some(policy) = policy else {
        return Some(symmetric_hash(&key.src, &key.dst) as usize % workers);
    };
    let member = match side {
        Side::Inside => policy.member_of_inside(key.src_ip()),
        Side::Outside => match key.family {
            Family::V4 => policy.member_of_public(key.dst_v4(), key.dst_port),
            Family::V6 => policy.member_of_inside(key.dst_ip()),
        },
    }?;
    Some(policy::owner(policy.member(member).id, workers))
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
