//! Member databases to test and benchmark with.
//!
//! [`example`] is the example dataset of `docs/members.md`, row for row, so
//! the documentation is compiled by the tests. [`campus`] generates the
//! member population of the benchmark scenarios (DESIGN.md: `campus-2018`
//! has 6,000 members, `campus-10x` 60,000) with the address plan of
//! `torwart bench` (`crates/torwart/src/scenario.rs`):
//!
//! * member `m` (id `m + 1`) owns the IPv4 block `10.0.0.0 + 8*(m+1)` /29,
//!   with devices `.1` and `.2` of it listed as /32s, and the IPv6 prefix
//!   `2001:db8:(m>>16):(m & 0xffff)::/64`;
//! * four members share each public address `198.18.0.0 + m/4`, member
//!   `m` taking the 16,384 ports `(m%4)*16384 ..` (port 0 left out);
//! * every 16th member forwards TCP port `first + 80` to its first device,
//!   every 32nd opens TCP 443 to its first IPv6 device (`::1`);
//! * every 50th member is a test account, every 97th is blocked.

use core::net::{Ipv4Addr, Ipv6Addr};

use crate::model::Ipv6Opening;
use crate::model::{
    BlockDirection, GlobalBlock, Member, MemberAddress, MemberDb, Network, NetworkKind, Plan, PortForward, Protocol,
    PublicAddress, Rates, Status,
};
use crate::prefix::{IpPrefix, Ipv4Prefix, Ipv6Prefix};

fn p(s: &str) -> IpPrefix {
    s.parse().expect("sample prefixes are canonical")
}

fn plans() -> Vec<Plan> {
    let standard = Rates {
        down_rate_kbit: 50_000,
        down_ceil_kbit: 200_000,
        up_rate_kbit: 20_000,
        up_ceil_kbit: 100_000,
        burst_bytes: 64_000,
        weight: 1,
    };
    let test = Rates {
        down_rate_kbit: 4_000,
        down_ceil_kbit: 4_000,
        up_rate_kbit: 2_000,
        up_ceil_kbit: 2_000,
        burst_bytes: 16_000,
        weight: 1,
    };
    vec![Plan { id: 1, name: "standard".into(), rates: standard }, Plan { id: 2, name: "test".into(), rates: test }]
}

/// The example dataset of `docs/members.md`.
pub fn example() -> MemberDb {
    let member = |id, name: &str, status, plan| Member { id, name: name.into(), status, plan_id: Some(plan) };
    let addr = |id, member_id, net: &str, device: Option<&str>| MemberAddress {
        id,
        member_id,
        network: p(net),
        device: device.map(Into::into),
    };
    let public = |id, member_id, a: [u8; 4], first_port, last_port| PublicAddress {
        id,
        member_id,
        address: Ipv4Addr::from(a),
        first_port,
        last_port,
    };
    let net = |id, prefix: &str, kind| Network { id, prefix: p(prefix), kind };
    MemberDb {
        plans: plans(),
        members: vec![
            member(101, "room-a101", Status::Active, 1),
            member(102, "test-lab", Status::Test, 2),
            member(103, "room-b204", Status::Blocked, 1),
            member(104, "room-c301", Status::Active, 1),
            member(105, "room-c302", Status::Active, 1),
        ],
        member_addresses: vec![
            addr(1, 101, "10.0.1.1/32", Some("laptop")),
            addr(2, 101, "10.0.1.2/32", Some("nas")),
            addr(3, 101, "2001:db8:0:101::/64", None),
            addr(4, 102, "10.0.9.1/32", Some("test box")),
            addr(5, 103, "10.0.2.1/32", Some("desktop")),
            addr(6, 104, "10.0.3.0/29", None),
            addr(7, 105, "10.0.3.8/29", None),
        ],
        public_addresses: vec![
            public(1, 101, [198, 51, 100, 10], 1, 65535),
            public(2, 102, [198, 51, 100, 30], 1, 65535),
            public(3, 103, [198, 51, 100, 11], 1, 65535),
            public(4, 104, [198, 51, 100, 20], 1024, 32767),
            public(5, 105, [198, 51, 100, 20], 32768, 65535),
        ],
        port_forwards: vec![PortForward {
            id: 1,
            member_id: 101,
            protocol: Protocol::Tcp,
            public_port: 8080,
            internal_address: Ipv4Addr::new(10, 0, 1, 2),
            internal_port: 80,
        }],
        ipv6_openings: vec![Ipv6Opening {
            id: 1,
            member_id: 101,
            destination: "2001:db8:0:101::10/128".parse().expect("canonical"),
            protocol: Protocol::Tcp,
            first_port: 443,
            last_port: 443,
        }],
        networks: vec![
            net(1, "10.0.0.0/16", NetworkKind::Internal),
            net(2, "2001:db8::/32", NetworkKind::Internal),
            net(3, "10.255.0.0/24", NetworkKind::Internal),
            net(4, "10.255.0.1/32", NetworkKind::Box),
            net(5, "2001:db8:ffff::1/128", NetworkKind::Box),
        ],
        global_blocks: vec![GlobalBlock {
            id: 1,
            prefix: p("203.0.113.0/24"),
            direction: BlockDirection::Both,
            comment: "abuse source, ticket 4711".into(),
        }],
    }
}

/// The inside IPv4 block of member index `m` (id `m + 1`).
pub fn campus_block(m: u32) -> Ipv4Prefix {
    Ipv4Prefix::new(Ipv4Addr::from(0x0a00_0000 | ((m + 1) << 3)), 29).expect("aligned /29")
}

/// The IPv6 prefix of member index `m`.
pub fn campus_v6(m: u32) -> Ipv6Prefix {
    Ipv6Prefix::new(Ipv6Addr::new(0x2001, 0xdb8, (m >> 16) as u16, m as u16, 0, 0, 0, 0), 64).expect("aligned /64")
}

/// The public address and port range of member index `m`.
pub fn campus_public(m: u32) -> (Ipv4Addr, u16, u16) {
    let first = ((m % 4) * 16384).max(1) as u16;
    let last = ((m % 4) * 16384 + 16383) as u16;
    (Ipv4Addr::from(0xc612_0000 + m / 4), first, last)
}

/// A generated database of `members` members (at most 2,000,000, which the
/// address plan holds) with the benchmark scenarios' address plan.
pub fn campus(members: u32) -> MemberDb {
    assert!(members <= 2_000_000, "the campus address plan holds 2,000,000 members");
    let n = members as usize;
    let mut db = MemberDb {
        plans: plans(),
        members: Vec::with_capacity(n),
        member_addresses: Vec::with_capacity(4 * n),
        public_addresses: Vec::with_capacity(n),
        port_forwards: Vec::new(),
        ipv6_openings: Vec::new(),
        networks: vec![
            Network { id: 1, prefix: p("10.0.0.0/8"), kind: NetworkKind::Internal },
            Network { id: 2, prefix: p("2001:db8::/32"), kind: NetworkKind::Internal },
            Network { id: 3, prefix: p("10.0.0.1/32"), kind: NetworkKind::Box },
        ],
        global_blocks: vec![GlobalBlock {
            id: 1,
            prefix: p("192.0.2.0/24"),
            direction: BlockDirection::Both,
            comment: "TEST-NET-1".into(),
        }],
    };
    let mut row = 0i64;
    let mut next = || {
        row += 1;
        row
    };
    for m in 0..members {
        let id = m + 1;
        let status = match m {
            _ if m % 97 == 96 => Status::Blocked,
            _ if m % 50 == 49 => Status::Test,
            _ => Status::Active,
        };
        let plan = Some(if status == Status::Test { 2 } else { 1 });
        db.members.push(Member { id, name: format!("m{id}"), status, plan_id: plan });
        let block = campus_block(m);
        let device = |d: u32| Ipv4Addr::from(block.first() + d + 1);
        db.member_addresses.push(MemberAddress { id: next(), member_id: id, network: block.into(), device: None });
        for d in 0..2 {
            let network = Ipv4Prefix::host(device(d)).into();
            db.member_addresses.push(MemberAddress {
                id: next(),
                member_id: id,
                network,
                device: Some(format!("d{d}")),
            });
        }
        let v6 = campus_v6(m);
        db.member_addresses.push(MemberAddress { id: next(), member_id: id, network: v6.into(), device: None });
        let (address, first_port, last_port) = campus_public(m);
        db.public_addresses.push(PublicAddress { id: i64::from(id), member_id: id, address, first_port, last_port });
        if m % 16 == 0 {
            db.port_forwards.push(PortForward {
                id: i64::from(id),
                member_id: id,
                protocol: Protocol::Tcp,
                public_port: first_port + 80,
                internal_address: device(0),
                internal_port: 80,
            });
        }
        if m % 32 == 0 {
            let host = Ipv6Addr::from(v6.first() + 1);
            db.ipv6_openings.push(Ipv6Opening {
                id: i64::from(id),
                member_id: id,
                destination: Ipv6Prefix::host(host),
                protocol: Protocol::Tcp,
                first_port: 443,
                last_port: 443,
            });
        }
    }
    db
}
