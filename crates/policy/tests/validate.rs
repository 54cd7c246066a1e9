//! Every validation rule, accepted and refused, with the message an operator reads.

mod common;

use common::*;
use policy::{compile, sample, Member, Rule, Status, Table};

#[test]
fn the_documented_example_compiles() {
    let p = accepted(&sample::example());
    assert_eq!(p.len(), 5);
}

#[test]
fn duplicate_ids_are_named_per_table() {
    let mut db = base();
    member(&mut db, 7);
    member(&mut db, 7);
    addr(&mut db, 3, 7, "10.0.0.1/32");
    addr(&mut db, 3, 7, "10.0.0.2/32");
    db.plans.push(db.plans[0].clone());
    let p = problems(&db);
    assert_eq!(
        p,
        [
            "plans row 1: the id 1 is used by 2 rows; ids must be unique",
            "members row 7: the id 7 is used by 2 rows; ids must be unique",
            "member_addresses row 3: the id 3 is used by 2 rows; ids must be unique",
        ]
    );
}

#[test]
fn unknown_plan_and_members_are_named() {
    let mut db = base();
    member(&mut db, 44);
    db.members[0].plan_id = Some(9);
    refused(&db, "members row 44: plan 9 does not exist");

    let mut db = base();
    member(&mut db, 1);
    addr(&mut db, 1, 1, "10.0.0.1/32");
    addr(&mut db, 17, 99, "10.0.0.2/32");
    public(&mut db, 3, 98, "198.51.100.7", 1, 65535);
    forward(&mut db, 2, 97, 80, "10.0.0.1", 80);
    opening(&mut db, 5, 96, "2001:db8::/64", 22, 22);
    assert_eq!(
        problems(&db),
        [
            "member_addresses row 17: member 99 does not exist",
            "public_addresses row 3: member 98 does not exist",
            "port_forwards row 2: member 97 does not exist",
            "ipv6_openings row 5: member 96 does not exist",
        ]
    );
}

#[test]
fn plan_rates_are_checked() {
    let mut db = base();
    accepted(&db);
    db.plans[0].rates.down_ceil_kbit = db.plans[0].rates.down_rate_kbit; // rate == ceil is fine
    accepted(&db);

    db.plans[0].rates.down_ceil_kbit = 5_000;
    refused(&db, "plans row 1: plan \"basic\": down rate 10000 kbit/s is above its ceiling 5000 kbit/s");

    let mut db = base();
    db.plans[0].rates.up_rate_kbit = 0;
    db.plans[0].rates.burst_bytes = 1000;
    db.plans[0].rates.weight = 0;
    assert_eq!(
        problems(&db),
        [
            "plans row 1: plan \"basic\": up rate is 0 kbit/s; rates must be at least 1 kbit/s",
            "plans row 1: plan \"basic\": burst 1000 bytes is less than one full-size packet (1500 bytes)",
            "plans row 1: plan \"basic\": weight is 0; weights must be at least 1",
        ]
    );
}

#[test]
fn test_accounts_need_a_plan_others_do_not() {
    let mut db = base();
    db.members.push(Member { id: 5, name: "lab".into(), status: Status::Test, plan_id: None });
    refused(&db, "members row 5: member 5 (\"lab\") is a test account without a plan; test accounts must have one");
    db.members[0].status = Status::Active;
    accepted(&db);
    db.members[0].status = Status::Blocked;
    accepted(&db);
}

#[test]
fn member_addresses_must_be_inside_an_internal_network() {
    let mut db = base();
    member(&mut db, 1);
    addr(&mut db, 1, 1, "10.1.0.0/16");
    addr(&mut db, 2, 1, "2001:db8:1::/48");
    accepted(&db);
    addr(&mut db, 3, 1, "192.168.1.0/24");
    addr(&mut db, 4, 1, "2001:db9::/64");
    addr(&mut db, 5, 1, "0.0.0.0/0");
    assert_eq!(
        problems(&db),
        [
            "member_addresses row 3: 192.168.1.0/24 of member 1 is outside every internal network",
            "member_addresses row 4: 2001:db9::/64 of member 1 is outside every internal network",
            "member_addresses row 5: 0.0.0.0/0 of member 1 is outside every internal network",
        ]
    );
}

#[test]
fn internal_networks_may_be_split_and_the_union_counts() {
    let mut db = base();
    db.networks[0].prefix = "10.0.0.0/9".parse().unwrap();
    db.networks.push(policy::Network {
        id: 4,
        prefix: "10.128.0.0/9".parse().unwrap(),
        kind: policy::NetworkKind::Internal,
    });
    member(&mut db, 1);
    addr(&mut db, 1, 1, "10.0.0.0/8");
    refused(
        &db,
        "member_addresses row 1: 10.0.0.0/8 of member 1 overlaps the box's own 10.255.255.1/32 (networks row 3)",
    );
    db.networks[2].prefix = "192.0.2.1/32".parse().unwrap();
    accepted(&db);
}

#[test]
fn member_addresses_must_not_be_the_box() {
    let mut db = base();
    member(&mut db, 1);
    addr(&mut db, 8, 1, "10.255.255.0/24");
    refused(
        &db,
        "member_addresses row 8: 10.255.255.0/24 of member 1 overlaps the box's own 10.255.255.1/32 (networks row 3)",
    );
}

#[test]
fn members_may_nest_their_own_addresses_but_not_overlap_others() {
    let mut db = base();
    member(&mut db, 9);
    member(&mut db, 12);
    addr(&mut db, 4, 12, "10.0.3.7/32");
    addr(&mut db, 5, 12, "10.0.3.0/29"); // own /29 around own device: fine
    addr(&mut db, 6, 9, "10.0.4.0/24");
    addr(&mut db, 7, 9, "10.0.4.0/25");
    addr(&mut db, 8, 9, "10.0.4.128/32");
    let p = accepted(&db);
    assert_eq!(p.addresses(p.by_id(9).unwrap()).len(), 3);

    addr(&mut db, 17, 9, "10.0.3.0/24");
    refused(
        &db,
        "member_addresses row 17: 10.0.3.0/24 of member 9 overlaps member_addresses rows 4 (10.0.3.7/32 of member 12) \
         and 5 (10.0.3.0/29 of member 12)",
    );

    // Reported against the later row, whichever sorts first.
    let mut db = base();
    member(&mut db, 9);
    member(&mut db, 12);
    addr(&mut db, 17, 9, "10.0.3.0/24");
    addr(&mut db, 4, 12, "10.0.3.7/32");
    refused(
        &db,
        "member_addresses row 17: 10.0.3.0/24 of member 9 overlaps member_addresses row 4 (10.0.3.7/32 of member 12)",
    );
    let e = compile(&db, 1).unwrap_err();
    assert_eq!(e.problems()[0].rule, Rule::AddressOverlap);
    assert_eq!(e.problems()[0].related, [(Table::MemberAddresses, 4)]);
}

#[test]
fn ipv6_prefixes_must_not_overlap_either() {
    let mut db = base();
    member(&mut db, 1);
    member(&mut db, 2);
    addr(&mut db, 1, 1, "2001:db8:0:1::/64");
    addr(&mut db, 2, 2, "2001:db8:0:2::/64");
    accepted(&db);
    addr(&mut db, 3, 2, "2001:db8::/56");
    refused(
        &db,
        "member_addresses row 3: 2001:db8::/56 of member 2 overlaps member_addresses row 1 (2001:db8:0:1::/64 of member 1)",
    );
}

#[test]
fn a_member_address_listed_twice_is_named() {
    let mut db = base();
    member(&mut db, 3);
    addr(&mut db, 4, 3, "10.0.0.0/24");
    addr(&mut db, 5, 3, "10.0.0.9/32");
    addr(&mut db, 9, 3, "10.0.0.9/32");
    refused(&db, "member_addresses row 9: 10.0.0.9/32 of member 3 is already listed (member_addresses row 5)");
}

#[test]
fn shared_public_addresses_need_disjoint_port_ranges() {
    let mut db = base();
    member(&mut db, 5);
    member(&mut db, 8);
    public(&mut db, 3, 5, "198.51.100.7", 1024, 2047);
    public(&mut db, 9, 8, "198.51.100.7", 2048, 4000); // touching is fine
    accepted(&db);
    db.public_addresses[1].first_port = 2000;
    refused(&db, "public_addresses rows 3 and 9: members 5 and 8 share 198.51.100.7 with overlapping ports 1024-2047 and 2000-4000");
    db.public_addresses[1].address = "198.51.100.8".parse().unwrap();
    accepted(&db);
}

#[test]
fn a_member_has_at_most_one_public_address() {
    let mut db = base();
    member(&mut db, 5);
    public(&mut db, 3, 5, "198.51.100.7", 1, 65535);
    public(&mut db, 9, 5, "198.51.100.8", 1, 65535);
    refused(
        &db,
        "public_addresses rows 3 and 9: member 5 has 2 public addresses (198.51.100.7 ports 1-65535, \
         198.51.100.8 ports 1-65535); a member has at most one",
    );
}

#[test]
fn port_ranges_must_be_usable() {
    let mut db = base();
    member(&mut db, 5);
    member(&mut db, 6);
    public(&mut db, 3, 5, "198.51.100.7", 5000, 4000);
    public(&mut db, 4, 6, "198.51.100.8", 0, 100);
    assert_eq!(
        problems(&db),
        [
            "public_addresses row 3: port range 5000-4000 is empty (the first port is above the last)",
            "public_addresses row 4: port range 0-100 includes port 0, which is never used; start at 1",
        ]
    );
}

fn forwarding_db() -> policy::MemberDb {
    let mut db = base();
    member(&mut db, 7);
    member(&mut db, 8);
    addr(&mut db, 1, 7, "10.0.0.0/29");
    addr(&mut db, 2, 8, "10.0.0.8/29");
    public(&mut db, 1, 7, "198.51.100.7", 1024, 2047);
    public(&mut db, 2, 8, "198.51.100.7", 2048, 4095);
    forward(&mut db, 1, 7, 1080, "10.0.0.3", 80);
    db
}

#[test]
fn port_forwards_reach_the_members_own_address() {
    let mut db = forwarding_db();
    accepted(&db);
    forward(&mut db, 2, 7, 1081, "10.0.0.99", 80);
    forward(&mut db, 3, 7, 1082, "10.0.0.9", 80);
    assert_eq!(
        problems(&db),
        [
            "port_forwards row 2: internal address 10.0.0.99 is not an address of member 7",
            "port_forwards row 3: internal address 10.0.0.9 is not an address of member 7 (it is member 8's)",
        ]
    );
}

#[test]
fn port_forwards_stay_in_the_members_port_range() {
    let mut db = forwarding_db();
    forward(&mut db, 2, 7, 2048, "10.0.0.3", 80);
    refused(&db, "port_forwards row 2: public port 2048 is outside member 7's port range 1024-2047 on 198.51.100.7");
}

#[test]
fn port_forwards_need_a_public_address_and_real_ports() {
    let mut db = forwarding_db();
    member(&mut db, 9);
    addr(&mut db, 3, 9, "10.0.0.16/29");
    forward(&mut db, 2, 9, 80, "10.0.0.17", 80);
    forward(&mut db, 3, 7, 1090, "10.0.0.3", 0);
    assert_eq!(
        problems(&db),
        [
            "port_forwards row 2: member 9 has no public address to forward from",
            "port_forwards row 3: port 0 cannot be forwarded (public port 1090, internal port 0)",
        ]
    );
}

#[test]
fn a_public_port_is_forwarded_once() {
    let mut db = forwarding_db();
    forward(&mut db, 4, 7, 1080, "10.0.0.4", 80);
    refused(
        &db,
        "port_forwards rows 1 and 4: forward the same tcp port 1080 of 198.51.100.7 (member 7); a public port reaches one device",
    );
    db.port_forwards[1].protocol = policy::Protocol::Udp; // same port, other protocol: fine
    accepted(&db);
}

#[test]
fn ipv6_openings_lie_in_the_members_prefix() {
    let mut db = base();
    member(&mut db, 7);
    member(&mut db, 8);
    addr(&mut db, 1, 7, "2001:db8:0:7::/64");
    addr(&mut db, 2, 8, "2001:db8:0:8::/64");
    opening(&mut db, 1, 7, "2001:db8:0:7::10/128", 22, 22);
    opening(&mut db, 2, 7, "2001:db8:0:7::/64", 1, 65535);
    accepted(&db);
    opening(&mut db, 3, 7, "2001:db8:0:8::10/128", 22, 22);
    opening(&mut db, 4, 7, "2001:db8::/48", 22, 22);
    opening(&mut db, 5, 7, "2001:db8:0:7::10/128", 100, 99);
    assert_eq!(
        problems(&db),
        [
            "ipv6_openings row 3: 2001:db8:0:8::10/128 is not inside an IPv6 prefix of member 7",
            "ipv6_openings row 4: 2001:db8::/48 is not inside an IPv6 prefix of member 7",
            "ipv6_openings row 5: port range 100-99 is empty (the first port is above the last)",
        ]
    );
}

#[test]
fn every_problem_is_reported_at_once_in_table_order() {
    let mut db = forwarding_db();
    db.members.push(Member { id: 44, name: "x".into(), status: Status::Test, plan_id: Some(9) });
    addr(&mut db, 17, 8, "10.0.0.0/28");
    forward(&mut db, 2, 7, 1081, "10.0.0.99", 80);
    db.plans[0].rates.weight = 0;
    let e = compile(&db, 1).unwrap_err();
    let tables: Vec<Table> = e.problems().iter().map(|p| p.table).collect();
    assert_eq!(tables, [Table::Plans, Table::Members, Table::MemberAddresses, Table::PortForwards]);
    let text = e.to_string();
    assert!(text.starts_with("the member database has 4 problems\nplans row 1: "), "{text}");
    assert!(
        text.contains("\nmember_addresses row 17: 10.0.0.0/28 of member 8 overlaps member_addresses row 1"),
        "{text}"
    );
}

#[test]
fn a_wide_overlap_is_one_problem_per_later_row() {
    // The later row is at fault: a wide prefix added last is one problem...
    let mut db = base();
    for m in 1..=5u32 {
        member(&mut db, m);
        addr(&mut db, i64::from(m), m, &format!("10.0.0.{}/32", m));
    }
    member(&mut db, 6);
    addr(&mut db, 60, 6, "10.0.0.0/24");
    refused(
        &db,
        "member_addresses row 60: 10.0.0.0/24 of member 6 overlaps member_addresses rows 1 (10.0.0.1/32 of member 1), \
         2 (10.0.0.2/32 of member 2), 3 (10.0.0.3/32 of member 3) and 2 more",
    );
    assert_eq!(compile(&db, 1).unwrap_err().problems()[0].related.len(), 5);

    // ...while devices added inside an older prefix are each at fault.
    db.member_addresses.last_mut().unwrap().id = 0;
    let p = problems(&db);
    assert_eq!(p.len(), 5);
    assert_eq!(
        p[0],
        "member_addresses row 1: 10.0.0.1/32 of member 1 overlaps member_addresses row 0 (10.0.0.0/24 of member 6)"
    );
}

#[test]
fn names_in_messages_are_escaped() {
    let mut db = base();
    let name = "eve\n1764000000.000 INFO  policy reloaded\u{1b}[2J";
    db.members.push(Member { id: 5, name: name.into(), status: Status::Test, plan_id: None });
    let err = policy::compile(&db, 1).unwrap_err().to_string();
    assert!(err.contains(r#"member 5 ("eve\n1764000000.000 INFO  policy reloaded\u{1b}[2J")"#), "{err}");
    assert!(!err.contains('\u{1b}') && !err.lines().any(|l| l.starts_with("1764")), "{err}");
}
