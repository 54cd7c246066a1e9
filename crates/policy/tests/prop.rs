//! Property tests: the compiled lookups and the overlap rule agree with
//! naive linear scans over random layouts.

mod common;

use common::*;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use policy::{compile, IpPrefix, Ipv4Prefix, Ipv6Prefix, MemberDb, Rule};
use proptest::prelude::*;

/// A random IPv4 prefix in 10.0.0.0/16 (lengths 20..=32, so they collide
/// often) or an IPv6 prefix in 2001:db8::/56 (lengths 60..=128).
fn prefix() -> impl Strategy<Value = IpPrefix> {
    prop_oneof![
        (any::<u16>(), 20u8..=32).prop_map(|(low, len)| {
            let bits = 0x0a00_0000 | u32::from(low);
            let mask = u32::MAX << (32 - len);
            IpPrefix::V4(Ipv4Prefix::new(Ipv4Addr::from(bits & mask), len).unwrap())
        }),
        (any::<u8>(), any::<u64>(), 60u8..=128).prop_map(|(sub, low, len)| {
            let base = u128::from(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0));
            let bits = base | u128::from(sub) << 64 | u128::from(low);
            let mask = u128::MAX << (128 - len);
            IpPrefix::V6(Ipv6Prefix::new(Ipv6Addr::from(bits & mask), len).unwrap())
        }),
    ]
}

fn overlap(a: IpPrefix, b: IpPrefix) -> bool {
    match (a, b) {
        (IpPrefix::V4(a), IpPrefix::V4(b)) => a.first() <= b.last() && b.first() <= a.last(),
        (IpPrefix::V6(a), IpPrefix::V6(b)) => a.first() <= b.last() && b.first() <= a.last(),
        _ => false,
    }
}

/// Random (prefix, member) rows, six possible members.
fn rows() -> impl Strategy<Value = Vec<(IpPrefix, u32)>> {
    proptest::collection::vec((prefix(), 1u32..=6), 0..40)
}

/// An IPv6 prefix of the usual member lengths (/40 to /64) in
/// 2001:db8::/32, so that the lookup answers from its per-length tables
/// (a layout with a prefix longer than /64 takes the interval search).
fn short_v6() -> impl Strategy<Value = IpPrefix> {
    (any::<u32>(), 40u8..=64).prop_map(|(mid, len)| {
        let base = u128::from(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0));
        let bits = base | u128::from(mid & 0xffff) << 80 | u128::from(mid >> 16) << 64;
        let mask = u128::MAX << (128 - len);
        IpPrefix::V6(Ipv6Prefix::new(Ipv6Addr::from(bits & mask), len).unwrap())
    })
}

fn db_of(rows: &[(IpPrefix, u32)]) -> MemberDb {
    let mut db = base();
    for m in 1..=6 {
        member(&mut db, m);
    }
    for (i, (p, m)) in rows.iter().enumerate() {
        addr(&mut db, i as i64 + 1, *m, &p.to_string());
    }
    db
}

/// Keeps a row only if it overlaps no kept row of another member and does not repeat one.
fn valid_layout(rows: Vec<(IpPrefix, u32)>) -> Vec<(IpPrefix, u32)> {
    let mut kept: Vec<(IpPrefix, u32)> = Vec::new();
    for (p, m) in rows {
        if !kept.iter().any(|&(q, n)| (overlap(p, q) && n != m) || q == p) {
            kept.push((p, m));
        }
    }
    kept
}

/// Addresses worth asking about: every prefix's edges and their neighbours, plus randoms.
fn probes(rows: &[(IpPrefix, u32)], extra: &[IpPrefix]) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for p in rows.iter().map(|r| r.0).chain(extra.iter().copied()) {
        match p {
            IpPrefix::V4(p) => {
                for x in [p.first().wrapping_sub(1), p.first(), p.last(), p.last().wrapping_add(1)] {
                    out.push(IpAddr::V4(Ipv4Addr::from(x)));
                }
            }
            IpPrefix::V6(p) => {
                for x in [p.first().wrapping_sub(1), p.first(), p.last(), p.last().wrapping_add(1)] {
                    out.push(IpAddr::V6(Ipv6Addr::from(x)));
                }
            }
        }
    }
    out
}

/// `member_of_inside` of the compiled `layout` against a scan of it, at its edges.
fn agrees_with_a_linear_scan(layout: Vec<(IpPrefix, u32)>, extra: &[IpPrefix]) -> Result<(), TestCaseError> {
    let p = compile(&db_of(&layout), 1).unwrap();
    for a in probes(&layout, extra) {
        let naive = layout.iter().find(|(q, _)| q.contains(a)).map(|&(_, m)| m);
        let got = p.member_of_inside(a).map(|r| p.member(r).id);
        prop_assert_eq!(got, naive, "address {}", a);
    }
    Ok(())
}

/// Random public ranges: (member, address 198.51.100.1-3, first, last),
/// never from port 0 (the compiler refuses that, as it never carries traffic),
/// one per member, overlapping ones dropped (the compiler refuses them).
fn public_layout() -> impl Strategy<Value = Vec<(u32, u8, u16, u16)>> {
    proptest::collection::vec((1u8..=3, 1u16..=u16::MAX, 0u16..4096), 0..30).prop_map(|rows| {
        let mut kept: Vec<(u32, u8, u16, u16)> = Vec::new();
        for (i, (a, first, span)) in rows.into_iter().enumerate() {
            let last = first.saturating_add(span);
            if !kept.iter().any(|&(_, b, f, l)| b == a && first <= l && f <= last) {
                kept.push((i as u32 + 1, a, first, last));
            }
        }
        kept
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn member_of_inside_agrees_with_a_linear_scan(raw in rows(), extra in proptest::collection::vec(prefix(), 0..8)) {
        agrees_with_a_linear_scan(valid_layout(raw), &extra)?;
    }

    #[test]
    fn member_of_inside_by_prefix_tables_agrees_with_a_linear_scan(
        raw in proptest::collection::vec((short_v6(), 1u32..=6), 0..40),
        extra in proptest::collection::vec(short_v6(), 0..8),
    ) {
        agrees_with_a_linear_scan(valid_layout(raw), &extra)?;
    }

    #[test]
    fn overlaps_are_refused_exactly_when_a_pairwise_scan_finds_one(raw in rows()) {
        let mut seen = Vec::new();
        let mut naive_bad = false;
        for &(p, m) in &raw {
            naive_bad |= seen.iter().any(|&(q, n)| overlap(p, q) && (n != m || p == q));
            seen.push((p, m));
        }
        match compile(&db_of(&raw), 1) {
            Ok(_) => prop_assert!(!naive_bad),
            Err(e) => {
                prop_assert!(naive_bad);
                prop_assert!(e.problems().iter().all(|p| matches!(p.rule, Rule::AddressOverlap | Rule::DuplicateAddress)));
                // Every row that overlaps a later row of another member is named somewhere.
                for (i, &(p, m)) in raw.iter().enumerate() {
                    for &(q, n) in &raw[i + 1..] {
                        if overlap(p, q) && n != m {
                            let named = e.problems().iter().any(|pr| {
                                pr.rows.contains(&(i as i64 + 1)) || pr.related.iter().any(|r| r.1 == i as i64 + 1)
                            });
                            prop_assert!(named, "row {} ({}) is not named", i + 1, p);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn member_of_public_agrees_with_a_linear_scan(layout in public_layout(), extra in proptest::collection::vec(any::<u16>(), 0..16)) {
        let mut db = base();
        for (i, &(m, a, first, last)) in layout.iter().enumerate() {
            member(&mut db, m);
            public(&mut db, i as i64 + 1, m, &format!("198.51.100.{a}"), first, last);
        }
        let p = compile(&db, 1).unwrap();
        let mut ports: Vec<u16> = extra;
        for &(_, _, first, last) in &layout {
            ports.extend([first.wrapping_sub(1), first, last, last.wrapping_add(1)]);
        }
        for a in 0u8..=4 {
            let addr = Ipv4Addr::new(198, 51, 100, a);
            let own: Vec<u32> = layout.iter().filter(|r| r.1 == a).map(|r| r.0).collect();
            let sole = if let [m] = own[..] { Some(m) } else { None };
            prop_assert_eq!(p.sole_member_of_public(addr).map(|r| p.member(r).id), sole, "{} alone", addr);
            prop_assert!(own.is_empty() || p.may_be_public(addr), "{} is public", addr);
            for &port in &ports {
                let naive = layout.iter().find(|&&(_, b, f, l)| b == a && f <= port && port <= l).map(|r| r.0);
                let got = p.member_of_public(addr, port).map(|r| p.member(r).id);
                prop_assert_eq!(got, naive, "{}:{}", addr, port);
            }
        }
    }
}
