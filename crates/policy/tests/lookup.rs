//! The packet path's questions, asked of the documented example database.

mod common;

use common::*;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use policy::{compile, owner, sample, Direction, Forward, MemberRef, Policy, Status};

fn example() -> Policy {
    compile(&sample::example(), 7).unwrap()
}

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn id(p: &Policy, m: Option<MemberRef>) -> Option<u32> {
    m.map(|m| p.member(m).id)
}

#[test]
fn members_are_numbered_in_id_order() {
    let p = example();
    assert_eq!(p.generation(), 7);
    assert_eq!(p.len(), 5);
    let ids: Vec<u32> = p.members().map(|(_, m)| m.id).collect();
    assert_eq!(ids, [101, 102, 103, 104, 105]);
    for (r, m) in p.members() {
        assert_eq!(p.by_id(m.id), Some(r));
    }
    assert_eq!(p.by_id(100), None);
    let test = p.member(p.by_id(102).unwrap());
    assert_eq!(test.status, Status::Test);
    assert_eq!(test.name, "test-lab");
    let plan = test.plan.unwrap();
    assert_eq!((plan.id, plan.rates.down_ceil_kbit), (2, 4_000));
    assert_eq!(p.member(p.by_id(103).unwrap()).status, Status::Blocked);
}

#[test]
fn inside_sources_by_device_address_prefix_and_ipv6() {
    let p = example();
    assert_eq!(id(&p, p.member_of_inside(ip("10.0.1.1"))), Some(101)); // device /32
    assert_eq!(id(&p, p.member_of_inside(ip("10.0.1.2"))), Some(101));
    assert_eq!(id(&p, p.member_of_inside(ip("10.0.3.0"))), Some(104)); // /29 bounds
    assert_eq!(id(&p, p.member_of_inside(ip("10.0.3.7"))), Some(104));
    assert_eq!(id(&p, p.member_of_inside(ip("10.0.3.8"))), Some(105));
    assert_eq!(id(&p, p.member_of_inside(ip("10.0.3.15"))), Some(105));
    assert_eq!(p.member_of_inside(ip("10.0.3.16")), None);
    assert_eq!(p.member_of_inside(ip("10.0.1.3")), None);
    assert_eq!(id(&p, p.member_of_inside(ip("2001:db8:0:101::1"))), Some(101));
    assert_eq!(id(&p, p.member_of_inside(ip("2001:db8:0:101:ffff:ffff:ffff:ffff"))), Some(101));
    assert_eq!(p.member_of_inside(ip("2001:db8:0:102::1")), None);
    assert_eq!(p.member_of_inside(ip("::ffff:10.0.1.1")), None); // v4-mapped is not v4
}

#[test]
fn a_device_inside_its_members_prefix_is_found_either_way() {
    let mut db = base();
    member(&mut db, 1);
    member(&mut db, 2);
    addr(&mut db, 1, 1, "10.0.0.8/29");
    addr(&mut db, 2, 1, "10.0.0.9/32");
    addr(&mut db, 3, 2, "10.0.0.16/29");
    addr(&mut db, 4, 2, "10.0.0.42/32"); // a device outside its member's prefix
    let p = accepted(&db);
    assert_eq!(id(&p, p.member_of_inside(ip("10.0.0.9"))), Some(1));
    assert_eq!(id(&p, p.member_of_inside(ip("10.0.0.10"))), Some(1));
    assert_eq!(id(&p, p.member_of_inside(ip("10.0.0.23"))), Some(2));
    assert_eq!(id(&p, p.member_of_inside(ip("10.0.0.42"))), Some(2));
    assert_eq!(p.member_of_inside(ip("10.0.0.41")), None);
    let listed: Vec<String> = p.addresses(p.by_id(1).unwrap()).iter().map(ToString::to_string).collect();
    assert_eq!(listed, ["10.0.0.8/29", "10.0.0.9/32"]);
}

#[test]
fn public_addresses_shared_by_port_range() {
    let p = example();
    let shared = v4("198.51.100.20");
    assert_eq!(id(&p, p.member_of_public(shared, 1024)), Some(104));
    assert_eq!(id(&p, p.member_of_public(shared, 32767)), Some(104));
    assert_eq!(id(&p, p.member_of_public(shared, 32768)), Some(105));
    assert_eq!(id(&p, p.member_of_public(shared, 65535)), Some(105));
    assert_eq!(p.member_of_public(shared, 1023), None); // below every range
    assert_eq!(id(&p, p.member_of_public(v4("198.51.100.10"), 1)), Some(101));
    assert_eq!(p.member_of_public(v4("198.51.100.9"), 65535), None);
    assert_eq!(p.member_of_public(v4("198.51.100.12"), 1), None);
    assert_eq!(p.public_of(p.by_id(105).unwrap()), Some((shared, 32768, 65535)));
    assert_eq!(p.public_of(p.by_id(101).unwrap()), Some((v4("198.51.100.10"), 1, 65535)));

    let mut db = base();
    member(&mut db, 1);
    let p = accepted(&db);
    assert_eq!(p.public_of(p.by_id(1).unwrap()), None);
}

#[test]
fn port_forwards_by_public_address_protocol_and_port() {
    let p = example();
    let m = p.by_id(101).unwrap();
    let public = v4("198.51.100.10");
    assert_eq!(p.port_forward(public, 6, 8080), Some(Forward { member: m, internal: v4("10.0.1.2"), port: 80 }));
    assert_eq!(p.port_forward(public, 17, 8080), None);
    assert_eq!(p.port_forward(public, 6, 8081), None);
    assert_eq!(p.port_forward(v4("198.51.100.11"), 6, 8080), None);
    assert_eq!(p.forwards(m).len(), 1);
    assert!(p.forwards(p.by_id(102).unwrap()).is_empty());
    assert_eq!(p.forwarded_ports().collect::<Vec<_>>(), vec![(public, 6, 8080)]);
}

#[test]
fn ipv6_openings_by_destination_protocol_and_port() {
    let p = example();
    let host: Ipv6Addr = "2001:db8:0:101::10".parse().unwrap();
    assert_eq!(id(&p, p.ipv6_opening(host, 6, 443)), Some(101));
    assert_eq!(p.ipv6_opening(host, 6, 444), None);
    assert_eq!(p.ipv6_opening(host, 17, 443), None);
    assert_eq!(p.ipv6_opening("2001:db8:0:101::11".parse().unwrap(), 6, 443), None);
    assert_eq!(p.ipv6_opening("2001:db8:0:999::10".parse().unwrap(), 6, 443), None);
    assert_eq!(p.openings(p.by_id(101).unwrap()).len(), 1);
}

#[test]
fn anti_spoofing_knows_members_internal_networks_and_the_box() {
    let p = example();
    assert!(p.is_internal(ip("10.0.1.1"))); // a member's device
    assert!(p.is_internal(ip("10.0.200.1"))); // internal, no member
    assert!(p.is_internal(ip("10.255.0.7"))); // infrastructure
    assert!(p.is_internal(ip("2001:db8:5::1")));
    assert!(!p.is_internal(ip("192.168.1.1")));
    assert!(!p.is_internal(ip("10.1.0.1")));
    assert!(!p.is_internal(ip("2001:db9::1")));
    assert!(!p.is_internal(ip("198.51.100.10"))); // public addresses are not inside sources
    assert!(p.is_box(ip("10.255.0.1")));
    assert!(p.is_box(ip("2001:db8:ffff::1")));
    assert!(!p.is_box(ip("10.255.0.2")));
}

#[test]
fn global_blocks_by_direction() {
    let p = example(); // 203.0.113.0/24 blocked both ways
    let (bad, member, web) = (ip("203.0.113.9"), ip("10.0.1.1"), ip("192.0.2.80"));
    assert!(p.blocked(member, bad, Direction::Outbound));
    assert!(p.blocked(bad, member, Direction::Inbound));
    assert!(!p.blocked(member, web, Direction::Outbound));
    assert!(!p.blocked(web, member, Direction::Inbound));

    let mut db = sample::example();
    db.global_blocks[0].direction = policy::BlockDirection::Inbound;
    db.global_blocks.push(policy::GlobalBlock {
        id: 2,
        prefix: "2001:db8:bad::/48".parse().unwrap(),
        direction: policy::BlockDirection::Outbound,
        comment: String::new(),
    });
    let p = compile(&db, 1).unwrap();
    assert!(p.blocked(bad, member, Direction::Inbound));
    assert!(!p.blocked(member, bad, Direction::Outbound));
    let (v6m, v6bad) = (ip("2001:db8:0:101::1"), ip("2001:db8:bad::1"));
    assert!(p.blocked(v6m, v6bad, Direction::Outbound));
    assert!(!p.blocked(v6bad, v6m, Direction::Inbound));
    assert_eq!(p.blocks().len(), 2);
}

#[test]
fn owner_core_depends_on_the_stable_id_only() {
    assert_eq!(owner(101, 4), 1);
    assert_eq!(owner(104, 4), 0);
    assert_eq!(owner(7, 1), 0);
    assert_eq!(owner(7, 0), 0);
    // Every core count: the member id modulo the cores.
    for cores in 1..=12 {
        for id in [0, 1, 5, 101, 4095, 4096, u32::MAX] {
            assert_eq!(owner(id, cores), id as usize % cores, "member {id}, {cores} cores");
        }
    }
    // The same member on the same core in two generations whose refs differ.
    let mut db = sample::example();
    let a = compile(&db, 1).unwrap();
    db.members.push(policy::Member { id: 1, name: "new".into(), status: Status::Active, plan_id: None });
    let b = compile(&db, 2).unwrap();
    let (ra, rb) = (a.by_id(104).unwrap(), b.by_id(104).unwrap());
    assert_ne!(ra, rb);
    assert_eq!(owner(a.member(ra).id, 3), owner(b.member(rb).id, 3));
}

#[test]
fn hash_keys_change_nothing_observable() {
    let db = sample::campus(300);
    let a = policy::compile_with_key(&db, 1, [1, 2, 3, 4]).unwrap();
    let b = policy::compile_with_key(&db, 1, [5, 6, 7, 8]).unwrap();
    for m in 0..300u32 {
        let dev = IpAddr::V4(Ipv4Addr::from(sample::campus_block(m).first() + 1));
        assert_eq!(a.member_of_inside(dev), b.member_of_inside(dev));
        assert_eq!(a.member(a.member_of_inside(dev).unwrap()).id, m + 1);
    }
}
