//! Small hand-built databases for the tests.
#![allow(dead_code)]

use core::net::Ipv4Addr;
use policy::{
    compile, Ipv6Opening, Member, MemberAddress, MemberDb, Network, NetworkKind, Plan, Policy, PortForward, Protocol,
    PublicAddress, Rates, Status,
};

pub const RATES: Rates = Rates {
    down_rate_kbit: 10_000,
    down_ceil_kbit: 20_000,
    up_rate_kbit: 5_000,
    up_ceil_kbit: 10_000,
    burst_bytes: 3000,
    weight: 1,
};

/// Plan 1, internal 10.0.0.0/8 and 2001:db8::/32, the box at 10.255.255.1, no members.
pub fn base() -> MemberDb {
    MemberDb {
        plans: vec![Plan { id: 1, name: "basic".into(), rates: RATES }],
        networks: vec![
            Network { id: 1, prefix: "10.0.0.0/8".parse().unwrap(), kind: NetworkKind::Internal },
            Network { id: 2, prefix: "2001:db8::/32".parse().unwrap(), kind: NetworkKind::Internal },
            Network { id: 3, prefix: "10.255.255.1/32".parse().unwrap(), kind: NetworkKind::Box },
        ],
        ..MemberDb::default()
    }
}

pub fn member(db: &mut MemberDb, id: u32) {
    db.members.push(Member { id, name: format!("m{id}"), status: Status::Active, plan_id: Some(1) });
}

pub fn addr(db: &mut MemberDb, row: i64, member: u32, net: &str) {
    db.member_addresses.push(MemberAddress { id: row, member_id: member, network: net.parse().unwrap(), device: None });
}

pub fn public(db: &mut MemberDb, row: i64, member: u32, a: &str, first_port: u16, last_port: u16) {
    db.public_addresses.push(PublicAddress {
        id: row,
        member_id: member,
        address: a.parse().unwrap(),
        first_port,
        last_port,
    });
}

pub fn forward(db: &mut MemberDb, row: i64, member: u32, public_port: u16, internal: &str, internal_port: u16) {
    db.port_forwards.push(PortForward {
        id: row,
        member_id: member,
        protocol: Protocol::Tcp,
        public_port,
        internal_address: internal.parse::<Ipv4Addr>().unwrap(),
        internal_port,
    });
}

pub fn opening(db: &mut MemberDb, row: i64, member: u32, dst: &str, first_port: u16, last_port: u16) {
    db.ipv6_openings.push(Ipv6Opening {
        id: row,
        member_id: member,
        destination: dst.parse().unwrap(),
        protocol: Protocol::Tcp,
        first_port,
        last_port,
    });
}

/// The problems of a database that must not compile, as displayed.
pub fn problems(db: &MemberDb) -> Vec<String> {
    match compile(db, 1) {
        Ok(_) => panic!("expected the database to be refused"),
        Err(e) => e.problems().iter().map(ToString::to_string).collect(),
    }
}

/// Asserts the database has exactly this one problem.
#[track_caller]
pub fn refused(db: &MemberDb, expected: &str) {
    assert_eq!(problems(db), vec![expected.to_owned()]);
}

#[track_caller]
pub fn accepted(db: &MemberDb) -> Policy {
    compile(db, 1).unwrap_or_else(|e| panic!("expected the database to compile: {e}"))
}
