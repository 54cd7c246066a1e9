//! The `campus-10x` population (60,000 members, 120,000 devices) compiles,
//! and its lookups answer; times are printed, not asserted (debug builds
//! on a shared machine say little; `torwart bench` measures release).

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use policy::{compile, diff, sample, Status};
use std::time::Instant;

const MEMBERS: u32 = 60_000;

#[test]
fn campus_10x_compiles_and_answers() {
    let t = Instant::now();
    let db = sample::campus(MEMBERS);
    let built = t.elapsed();
    assert_eq!(db.member_addresses.len(), 4 * MEMBERS as usize);

    let t = Instant::now();
    let p = compile(&db, 1).unwrap_or_else(|e| panic!("{e}"));
    let compiled = t.elapsed();
    println!("campus-10x: generated in {built:?}, compiled in {compiled:?} (this build's profile)");
    assert_eq!(p.len(), MEMBERS as usize);

    for m in (0..MEMBERS).step_by(997).chain([0, MEMBERS - 1]) {
        let id = m + 1;
        let block = sample::campus_block(m);
        let dev = IpAddr::V4(Ipv4Addr::from(block.first() + 1));
        let other = IpAddr::V4(Ipv4Addr::from(block.first() + 5));
        let v6 = IpAddr::V6(Ipv6Addr::from(sample::campus_v6(m).first() + 0x1234));
        for a in [dev, other, v6] {
            assert_eq!(p.member(p.member_of_inside(a).unwrap()).id, id, "{a}");
        }
        let (public, first, last) = sample::campus_public(m);
        let r = p.member_of_public(public, first).unwrap();
        assert_eq!(p.member_of_public(public, last), Some(r));
        assert_eq!(p.member(r).id, id);
        assert_eq!(p.public_of(r), Some((public, first, last)));
        assert!(p.is_internal(dev));
    }

    // A reload that blocks one member: the diff names just that one.
    let mut next = db.clone();
    next.members[12_345].status = Status::Blocked;
    let t = Instant::now();
    let q = compile(&next, 2).unwrap();
    let recompiled = t.elapsed();
    let t = Instant::now();
    let d = diff(&p, &q);
    println!("campus-10x: recompiled in {recompiled:?}, diffed in {:?}: {d}", t.elapsed());
    assert_eq!(d.flows_to_end().collect::<Vec<_>>(), [12_346]);
}
