//! `docs/members.md` shows `sample::example()` row for row; this keeps the
//! two from drifting apart (the SQL itself is checked against SQLite and
//! PostgreSQL by hand, see the page).

use policy::sample;

#[test]
fn the_documented_example_is_the_sample() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/members.md")).unwrap();
    let db = sample::example();
    let row = |s: String| assert!(doc.contains(&s), "docs/members.md lacks {s}");
    for p in &db.plans {
        row(format!("({}, '{}', ", p.id, p.name));
    }
    for m in &db.members {
        row(format!("({}, '{}', ", m.id, m.name));
        row(format!("'{}',", m.status));
    }
    for a in &db.member_addresses {
        row(format!("({}, {}, '{}',", a.id, a.member_id, a.network));
    }
    for p in &db.public_addresses {
        row(format!("({}, {}, '{}', ", p.id, p.member_id, p.address));
    }
    for f in &db.port_forwards {
        row(format!(
            "({}, {}, '{}', {}, '{}', {})",
            f.id, f.member_id, f.protocol, f.public_port, f.internal_address, f.internal_port
        ));
    }
    for o in &db.ipv6_openings {
        row(format!(
            "({}, {}, '{}', '{}', {}, {})",
            o.id, o.member_id, o.destination, o.protocol, o.first_port, o.last_port
        ));
    }
    for n in &db.networks {
        row(format!("'{}',", n.prefix));
    }
    for b in &db.global_blocks {
        row(format!("({}, '{}', '{}', '{}')", b.id, b.prefix, b.direction, b.comment));
    }
}
