//! Diffs between generations, by stable member id.

use policy::{compile, diff, sample, Changes, MemberDb, Status};

fn both(old: &MemberDb, new: &MemberDb) -> policy::Diff {
    diff(&compile(old, 1).unwrap(), &compile(new, 2).unwrap())
}

#[test]
fn identical_databases_have_an_empty_diff() {
    let db = sample::example();
    let d = both(&db, &db);
    assert!(d.is_empty());
    assert_eq!(d.len(), 0);
    assert_eq!(d.flows_to_end().count(), 0);
    assert_eq!(d.to_string(), "0 added, 0 removed, 0 changed");
}

#[test]
fn members_added_and_removed() {
    let old = sample::example();
    let mut new = old.clone();
    // Remove member 103 (and its rows), add member 106.
    new.members.retain(|m| m.id != 103);
    new.member_addresses.retain(|a| a.member_id != 103);
    new.public_addresses.retain(|a| a.member_id != 103);
    new.members.push(policy::Member { id: 106, name: "room-d1".into(), status: Status::Active, plan_id: None });
    let d = both(&old, &new);
    assert_eq!(d.added, [106]);
    assert_eq!(d.removed.len(), 1);
    assert_eq!(d.removed[0].0, 103);
    assert!(d.changed.is_empty(), "{:?}", d.changed);
    assert_eq!(d.flows_to_end().collect::<Vec<_>>(), [103]);
    assert_eq!(d.to_string(), "1 added, 1 removed, 0 changed");
}

#[test]
fn blocking_a_member_ends_their_flows_unblocking_does_not() {
    let old = sample::example();
    let mut new = old.clone();
    new.members.iter_mut().find(|m| m.id == 101).unwrap().status = Status::Blocked;
    new.members.iter_mut().find(|m| m.id == 103).unwrap().status = Status::Active;
    let d = both(&old, &new);
    assert_eq!(d.changed.len(), 2);
    assert!(d.changed.iter().all(|c| c.changes == Changes::STATUS));
    assert_eq!(d.flows_to_end().collect::<Vec<_>>(), [101]);
}

#[test]
fn plan_changes_reclass_but_keep_flows() {
    let old = sample::example();
    let mut new = old.clone();
    new.members.iter_mut().find(|m| m.id == 104).unwrap().plan_id = Some(2);
    new.plans[0].rates.down_ceil_kbit += 1; // plan 1's rates: every plan-1 member changes
    let d = both(&old, &new);
    let ids: Vec<u32> = d.changed.iter().map(|c| c.id).collect();
    assert_eq!(ids, [101, 103, 104, 105]);
    assert!(d.changed.iter().all(|c| c.changes == Changes::PLAN));
    assert_eq!(d.flows_to_end().count(), 0);
}

#[test]
fn address_and_public_address_changes_end_flows() {
    let old = sample::example();
    let mut new = old.clone();
    new.member_addresses.iter_mut().find(|a| a.id == 5).unwrap().network = "10.0.2.2/32".parse().unwrap();
    let p = new.public_addresses.iter_mut().find(|p| p.member_id == 104).unwrap();
    p.last_port = 30000;
    let d = both(&old, &new);
    let changes: Vec<(u32, Changes)> = d.changed.iter().map(|c| (c.id, c.changes)).collect();
    assert_eq!(changes, [(103, Changes::ADDRESSES), (104, Changes::PUBLIC)]);
    assert_eq!(d.flows_to_end().collect::<Vec<_>>(), [103, 104]);
}

#[test]
fn forwards_openings_and_names_are_changes_that_keep_flows() {
    let old = sample::example();
    let mut new = old.clone();
    new.port_forwards[0].internal_port = 8080;
    new.ipv6_openings[0].last_port = 444;
    new.members.iter_mut().find(|m| m.id == 105).unwrap().name = "room-c303".into();
    let d = both(&old, &new);
    let changes: Vec<(u32, Changes)> = d.changed.iter().map(|c| (c.id, c.changes)).collect();
    assert_eq!(changes, [(101, Changes::FORWARDS.with(Changes::OPENINGS)), (105, Changes::NAME)]);
    assert_eq!(d.changed[0].changes.to_string(), "forwards, openings");
    assert_eq!(d.flows_to_end().count(), 0);
}

#[test]
fn device_labels_and_row_order_are_not_changes() {
    let old = sample::example();
    let mut new = old.clone();
    new.member_addresses[0].device = Some("phone".into());
    new.member_addresses.reverse();
    new.members.reverse();
    for (i, a) in new.member_addresses.iter_mut().enumerate() {
        a.id = 100 + i as i64; // renumbered rows, same content
    }
    assert!(both(&old, &new).is_empty());
}

#[test]
fn global_rules_are_one_flag() {
    let old = sample::example();
    let mut new = old.clone();
    new.global_blocks.clear();
    let d = both(&old, &new);
    assert!(d.globals_changed);
    assert!(!d.is_empty());
    assert_eq!(d.len(), 0);
    assert_eq!(d.to_string(), "0 added, 0 removed, 0 changed, global rules changed");
}

#[test]
fn refs_are_per_generation_ids_are_stable() {
    let old = sample::example();
    let mut new = old.clone();
    new.members.push(policy::Member { id: 1, name: "first".into(), status: Status::Active, plan_id: None });
    new.members.iter_mut().find(|m| m.id == 104).unwrap().status = Status::Blocked;
    let (a, b) = (compile(&old, 1).unwrap(), compile(&new, 2).unwrap());
    let d = diff(&a, &b);
    let c = d.changed[0];
    assert_eq!(c.id, 104);
    assert_eq!(a.member(c.old).id, 104);
    assert_eq!(b.member(c.new).id, 104);
    assert_ne!(c.old, c.new); // member 1 shifted every ref
    assert_eq!((c.old_status, c.new_status), (Status::Active, Status::Blocked));
}
