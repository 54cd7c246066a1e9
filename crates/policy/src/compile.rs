//! The compiler: a [`MemberDb`] in, a [`Policy`] or every problem out.
//!
//! Validation and building are one pass per table, in dependency order
//! (plans, members, networks, addresses, public addresses, forwards,
//! openings, blocks). A row with a problem is reported and left out, and
//! the pass goes on, so one run lists everything an operator has to fix;
//! if anything was reported the result is an error and the half-built
//! policy is thrown away (the running one stays).
//!
//! Cost: every rule is checked by sorting and one sweep, or by a lookup in
//! a structure built from earlier tables, never by comparing all pairs:
//! O(n log n) in the rows. Overlaps are found with the CIDR property that
//! two prefixes are nested or disjoint: sorted by start (longer ranges
//! first), an address overlaps an earlier one exactly when it starts
//! inside the latest range that is still open (the "cover").
//!
//! What a member may overlap: its own addresses (a device /32 inside the
//! member's /29 is the usual layout, and the lookup then answers from the
//! device hash first); never another member's, never the box's. Neither a
//! member address nor a public address may be special-purpose (loopback,
//! multicast, ...; see `special.rs`), and a public address is never the
//! box's own.
//!
//! One problem, one report: a row refused for its own fault is remembered
//! (a member's refused addresses, members whose public address was
//! refused), and the rows that depend on it (a forward to that address, an
//! opening inside it, a forward from that public address) are left out
//! without a second, misleading report ("not an address of member 7" when
//! the address is there but was refused for overlapping the box).

use core::fmt::Write as _;
use core::net::{IpAddr, Ipv4Addr};
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;

use crate::table::AddrTable;
use ahash::RandomState;

use crate::error::{PolicyError, Problem, Rule, Table};
use crate::interval::{Bits, Intervals};
use crate::model::{BlockDirection, Member, MemberDb, NetworkKind, Plan, PortForward, PublicAddress, Rates, Status};
use crate::policy::{
    forward_key, Forward, ForwardRule, MemberInfo, MemberRef, Opening, PlanInfo, Policy, PortRange, PublicRange,
    PublicSlot, RangeSet,
};
use crate::prefix::IpPrefix;
use crate::special::{special, Described};

/// The smallest burst a plan may have: one full-size Ethernet payload, or
/// a token bucket could never release a 1500-byte packet.
pub const MIN_BURST_BYTES: u32 = 1500;

/// Compiles `db` into generation `generation`, or lists every problem.
///
/// The keyed hashes of the policy get a fresh random key (from the
/// standard library's per-process random state).
pub fn compile(db: &MemberDb, generation: u64) -> Result<Policy, PolicyError> {
    let s = std::collections::hash_map::RandomState::new();
    let key = [s.hash_one(1u8), s.hash_one(2u8), s.hash_one(3u8), s.hash_one(4u8)];
    compile_with_key(db, generation, key)
}

/// [`compile`] with the hash key given, for callers that draw their own
/// secret (as the engine does for its flow table). The key changes no
/// answer, only which entries share hash buckets.
pub fn compile_with_key(db: &MemberDb, generation: u64, key: [u64; 4]) -> Result<Policy, PolicyError> {
    let mut cx = Cx { problems: Vec::new(), refused_addresses: HashMap::new(), refused_public: HashSet::new() };
    let hasher = RandomState::with_seeds(key[0], key[1], key[2], key[3]);
    let (members, mut infos) = cx.members_and_plans(db);
    let member_ids: Vec<u32> = members.iter().map(|m| m.id).collect();
    let member_ref = |id: u32| member_ids.binary_search(&id).ok().map(|i| MemberRef::from_index(i as u32));
    let nets = cx.networks(db);
    let inside = cx.member_addresses(db, &member_ref, &nets, &members, &hasher);
    let addresses = spans(&mut infos, inside.by_member, |i, s| i.addresses = s);
    let public = cx.public_addresses(db, &member_ref, &nets, &mut infos, &hasher);
    let mut policy = Policy {
        generation,
        ids: member_ids.clone(),
        members: infos,
        addresses,
        forward_rules: Vec::new(),
        openings: Vec::new(),
        hosts_v4: inside.hosts_v4,
        inside_v4: inside.inside_v4,
        inside_v6: inside.inside_v6,
        v6_tables: inside.v6_tables,
        v6_long: inside.v6_long,
        public_index: public.index,
        public_ranges: public.ranges,
        public_span: public.span,
        forwards: HashMap::with_hasher(hasher.clone()),
        forwarded_from: HashMap::with_hasher(hasher),
        internal: nets.internal,
        boxes: nets.boxes,
        blocked_inbound: RangeSet::from_prefixes(blocks(db, BlockDirection::Inbound)),
        blocked_outbound: RangeSet::from_prefixes(blocks(db, BlockDirection::Outbound)),
        networks: nets.rows,
        blocks: Vec::new(),
    };
    cx.port_forwards(db, &member_ref, &mut policy);
    cx.ipv6_openings(db, &member_ref, &mut policy);
    policy.blocks = cx.global_blocks(db);
    if cx.problems.is_empty() {
        Ok(policy)
    } else {
        cx.problems.sort_by_key(|p| (p.table, p.rows.first().copied()));
        Err(PolicyError::new(cx.problems))
    }
}

/// The networks table, as the compiler uses it.
struct Networks {
    /// Internal networks alone: where member addresses may be.
    internal_only: RangeSet,
    /// Every network (internal and the box's).
    internal: RangeSet,
    boxes: RangeSet,
    /// The box's networks with their rows, for messages.
    box_v4: Intervals<u32, (i64, IpPrefix)>,
    box_v6: Intervals<u128, (i64, IpPrefix)>,
    /// Every (prefix, kind), sorted and deduplicated, kept for diffs.
    rows: Vec<(IpPrefix, NetworkKind)>,
}

/// The member addresses, as the lookups of the policy hold them.
struct Inside {
    hosts_v4: AddrTable<u32>,
    inside_v4: Intervals<u32, MemberRef>,
    inside_v6: Intervals<u128, MemberRef>,
    v6_tables: Vec<(u8, AddrTable<u64>)>,
    v6_long: bool,
    /// Every accepted address with its member, for the members' spans.
    by_member: Vec<(MemberRef, IpPrefix)>,
}

/// The public addresses: each one's slot, the ranges of shared ones.
struct PublicTable {
    index: AddrTable<u32, PublicSlot>,
    ranges: Vec<PortRange>,
    span: (u32, u32),
}

impl Cx {
    /// Step 1: plans (their rates checked) and members (their plans found).
    fn members_and_plans<'a>(&mut self, db: &'a MemberDb) -> (Vec<&'a Member>, Vec<MemberInfo>) {
        let plans = self.unique(Table::Plans, &db.plans, |p| i64::from(p.id));
        for p in &plans {
            self.check_rates(p);
        }
        let plan_ids: Vec<u32> = plans.iter().map(|p| p.id).collect();
        let members = self.unique(Table::Members, &db.members, |m| i64::from(m.id));
        let mut infos: Vec<MemberInfo> = Vec::with_capacity(members.len());
        for m in &members {
            let plan = m.plan_id.and_then(|id| {
                let found = plan_ids.binary_search(&id).ok().map(|i| PlanInfo { id, rates: plans[i].rates });
                if found.is_none() {
                    let related = vec![(Table::Plans, i64::from(id))];
                    self.report(
                        Table::Members,
                        [m.id.into()],
                        related,
                        Rule::UnknownReference,
                        format!("plan {id} does not exist"),
                    );
                }
                found
            });
            if m.status == Status::Test && m.plan_id.is_none() {
                let msg = format!(
                    "member {} ({:?}) is a test account without a plan; test accounts must have one",
                    m.id, m.name
                );
                self.report(Table::Members, [m.id.into()], vec![], Rule::TestWithoutPlan, msg);
            }
            infos.push(MemberInfo {
                id: m.id,
                name: m.name.clone(),
                status: m.status,
                plan,
                public: None,
                addresses: (0, 0),
                forwards: (0, 0),
                openings: (0, 0),
            });
        }
        (members, infos)
    }

    /// Step 2: the networks: what is internal, what is the box.
    fn networks(&mut self, db: &MemberDb) -> Networks {
        let networks = self.unique(Table::Networks, &db.networks, |n| n.id);
        let internal_only =
            RangeSet::from_prefixes(networks.iter().filter(|n| n.kind == NetworkKind::Internal).map(|n| n.prefix));
        let internal = RangeSet::from_prefixes(networks.iter().map(|n| n.prefix));
        let boxes = RangeSet::from_prefixes(networks.iter().filter(|n| n.kind == NetworkKind::Box).map(|n| n.prefix));
        let (mut box_v4, mut box_v6) = (Vec::new(), Vec::new());
        for n in networks.iter().filter(|n| n.kind == NetworkKind::Box) {
            match n.prefix {
                IpPrefix::V4(p) => box_v4.push((p.first(), p.last(), (n.id, n.prefix))),
                IpPrefix::V6(p) => box_v6.push((p.first(), p.last(), (n.id, n.prefix))),
            }
        }
        let mut rows: Vec<(IpPrefix, NetworkKind)> = networks.iter().map(|n| (n.prefix, n.kind)).collect();
        rows.sort_unstable();
        rows.dedup();
        Networks {
            internal_only,
            internal,
            boxes,
            box_v4: Intervals::union(box_v4),
            box_v6: Intervals::union(box_v6),
            rows,
        }
    }

    /// Step 3: member addresses: inside an internal network, not special,
    /// not the box's, not another member's; then the lookup tables.
    fn member_addresses(
        &mut self,
        db: &MemberDb,
        member_ref: &impl Fn(u32) -> Option<MemberRef>,
        nets: &Networks,
        members: &[&Member],
        hasher: &RandomState,
    ) -> Inside {
        let rows = self.unique(Table::MemberAddresses, &db.member_addresses, |a| a.id);
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for a in rows {
            let Some(m) = member_ref(a.member_id) else {
                self.unknown_member(Table::MemberAddresses, a.id, a.member_id);
                continue;
            };
            if !self.member_address_allowed(a.id, a.member_id, a.network, nets) {
                continue;
            }
            match a.network {
                IpPrefix::V4(p) => {
                    v4.push(Entry { start: p.first(), end: p.last(), row: a.id, member: m, prefix: a.network })
                }
                IpPrefix::V6(p) => {
                    v6.push(Entry { start: p.first(), end: p.last(), row: a.id, member: m, prefix: a.network })
                }
            }
        }
        let v4 = self.sweep(v4, members);
        let v6 = self.sweep(v6, members);
        inside_tables(&v4, &v6, hasher)
    }

    /// Whether member address row `row` (`network` of `member_id`) may be
    /// one; reports why not.
    fn member_address_allowed(&mut self, row: i64, member_id: u32, network: IpPrefix, nets: &Networks) -> bool {
        if !nets.internal_only.covers(network) {
            let msg = format!("{network} of member {member_id} is outside every internal network");
            self.report(Table::MemberAddresses, [row], vec![], Rule::OutsideInternal, msg);
            self.refuse_address(member_id, network);
            return false;
        }
        if let Some(s) = special(network) {
            let what = format!("{network} of member {member_id}");
            let msg = format!(
                "{}; no device sends from such an address",
                Described { what: &what, prefix: network, special: s }
            );
            self.report(Table::MemberAddresses, [row], vec![], Rule::SpecialAddress, msg);
            self.refuse_address(member_id, network);
            return false;
        }
        let on_box = match network {
            IpPrefix::V4(p) => nets.box_v4.overlapping(p.first(), p.last()),
            IpPrefix::V6(p) => nets.box_v6.overlapping(p.first(), p.last()),
        };
        if let Some((box_row, prefix)) = on_box {
            let msg =
                format!("{network} of member {member_id} overlaps the box's own {prefix} (networks row {box_row})");
            self.report(Table::MemberAddresses, [row], vec![(Table::Networks, box_row)], Rule::BoxAddress, msg);
            self.refuse_address(member_id, network);
            return false;
        }
        true
    }

    /// Step 4: public addresses: at most one per member, shared ones with
    /// disjoint port ranges; each member learns its range.
    fn public_addresses(
        &mut self,
        db: &MemberDb,
        member_ref: &impl Fn(u32) -> Option<MemberRef>,
        nets: &Networks,
        infos: &mut [MemberInfo],
        hasher: &RandomState,
    ) -> PublicTable {
        // Sorted by address, then port; disjoint.
        let public = self.public_ranges(&db.public_addresses, member_ref, &nets.box_v4);
        let mut slots = Vec::new();
        let mut ranges = Vec::new();
        for run in public.chunk_by(|a, b| a.address == b.address) {
            for p in run {
                infos[p.member.index()].public =
                    Some(PublicRange { address: p.address, first_port: p.first, last_port: p.last });
            }
            let slot = match run {
                [p] => PublicSlot::sole(p.member, p.first, p.last),
                _ => {
                    let start = ranges.len() as u32;
                    ranges.extend(run.iter().map(|p| PortRange { first: p.first, last: p.last, member: p.member }));
                    PublicSlot::shared(start, run.len() as u32)
                }
            };
            slots.push((run[0].address.to_bits(), slot));
        }
        let span = match (public.first(), public.last()) {
            (Some(lo), Some(hi)) => (lo.address.to_bits(), hi.address.to_bits()),
            _ => (1, 0),
        };
        PublicTable { index: AddrTable::build(slots.into_iter(), hasher.clone()), ranges, span }
    }

    /// Step 5: port forwards: a port of the member's own range to one of
    /// the member's own devices, each public port once.
    fn port_forwards(&mut self, db: &MemberDb, member_ref: &impl Fn(u32) -> Option<MemberRef>, policy: &mut Policy) {
        let rows = self.unique(Table::PortForwards, &db.port_forwards, |f| f.id);
        let mut forwards = Vec::new();
        for f in rows {
            let Some(m) = member_ref(f.member_id) else {
                self.unknown_member(Table::PortForwards, f.id, f.member_id);
                continue;
            };
            let ok = self.check_forward(f, m, policy);
            if let (true, Some(p)) = (ok, policy.members[m.index()].public) {
                let rule = ForwardRule {
                    protocol: f.protocol,
                    public_port: f.public_port,
                    internal_address: f.internal_address,
                    internal_port: f.internal_port,
                };
                forwards.push((forward_key(p.address, f.protocol.number(), f.public_port), f.id, m, p.address, rule));
            }
        }
        forwards.sort_by_key(|f| (f.0, f.1));
        let mut rules = Vec::with_capacity(forwards.len());
        for group in forwards.chunk_by(|a, b| a.0 == b.0) {
            let (key, _, m, address, rule) = group[0];
            if let [_, _, ..] = group {
                let msg = format!(
                    "forward the same {} port {} of {} (member {}); a public port reaches one device",
                    rule.protocol,
                    rule.public_port,
                    address,
                    policy.members[m.index()].id
                );
                let rows = group.iter().map(|f| f.1).collect::<Vec<_>>();
                self.report(Table::PortForwards, rows, vec![], Rule::DuplicateForward, msg);
            }
            policy
                .forwards
                .insert(key, Forward { member: m, internal: rule.internal_address, port: rule.internal_port });
            // Sorted by public address and port: the first forward to a device's port is its lowest.
            let back = forward_key(rule.internal_address, rule.protocol.number(), rule.internal_port);
            policy.forwarded_from.entry(back).or_insert((address, rule.public_port));
            rules.push((m, rule));
        }
        policy.forward_rules = spans(&mut policy.members, rules, |i, s| i.forwards = s);
    }

    /// Step 6: IPv6 openings, inside the member's own prefixes.
    fn ipv6_openings(&mut self, db: &MemberDb, member_ref: &impl Fn(u32) -> Option<MemberRef>, policy: &mut Policy) {
        let rows = self.unique(Table::Ipv6Openings, &db.ipv6_openings, |o| o.id);
        let mut openings = Vec::new();
        for o in rows {
            let Some(m) = member_ref(o.member_id) else {
                self.unknown_member(Table::Ipv6Openings, o.id, o.member_id);
                continue;
            };
            let ports_ok = self.check_ports(Table::Ipv6Openings, o.id, o.first_port, o.last_port);
            let d = o.destination;
            let inside = policy.inside_v6.find(d.first()).is_some_and(|(_, end, owner)| owner == m && d.last() <= end);
            if !inside {
                // Inside a prefix of the member's that was refused: that row's problem says it all.
                if !self.in_refused_address(o.member_id, IpPrefix::V6(d)) {
                    let msg = format!("{d} is not inside an IPv6 prefix of member {}", o.member_id);
                    self.report(Table::Ipv6Openings, [o.id], vec![], Rule::OpeningOutsidePrefix, msg);
                }
            } else if ports_ok {
                let opening =
                    Opening { destination: d, protocol: o.protocol, first_port: o.first_port, last_port: o.last_port };
                openings.push((m, opening));
            }
        }
        policy.openings = spans(&mut policy.members, openings, |i, s| i.openings = s);
    }

    /// Step 7: the global blocks, sorted and deduplicated, kept for diffs.
    fn global_blocks(&mut self, db: &MemberDb) -> Vec<(IpPrefix, BlockDirection)> {
        let mut blocks: Vec<(IpPrefix, BlockDirection)> = self
            .unique(Table::GlobalBlocks, &db.global_blocks, |b| b.id)
            .iter()
            .map(|b| (b.prefix, b.direction))
            .collect();
        blocks.sort_unstable();
        blocks.dedup();
        blocks
    }
}

/// The lookup tables of the accepted member addresses (`sweep`ed: no two
/// members overlap).
fn inside_tables(v4: &[Entry<u32>], v6: &[Entry<u128>], hasher: &RandomState) -> Inside {
    let hosts: Vec<(u32, u32)> =
        v4.iter().filter(|e| e.start == e.end).map(|e| (e.start, e.member.index() as u32)).collect();
    let same = |a: &MemberRef, b: &MemberRef| a == b;
    let inside_v4 =
        Intervals::from_sorted(v4.iter().filter(|e| e.start != e.end).map(|e| (e.start, e.end, e.member)), same);
    let inside_v6 = Intervals::from_sorted(v6.iter().map(|e| (e.start, e.end, e.member)), same);
    // Per prefix length up to /64 (the usual member prefixes), an exact
    // table of the upper 64 bits, longest first: prefixes of different
    // members never overlap (`sweep` refuses it), so any hit is the owner.
    let mut lens: Vec<u8> = v6.iter().filter_map(|e| v6_len(e.prefix)).filter(|&l| l <= 64).collect();
    lens.sort_unstable_by(|a, b| b.cmp(a));
    lens.dedup();
    let v6_tables = lens
        .iter()
        .map(|&len| {
            let rows: Vec<(u64, u32)> = v6
                .iter()
                .filter(|e| v6_len(e.prefix) == Some(len))
                .map(|e| ((e.start >> 64) as u64, e.member.index() as u32))
                .collect();
            (len, AddrTable::build(rows.into_iter(), hasher.clone()))
        })
        .collect();
    Inside {
        hosts_v4: AddrTable::build(hosts.into_iter(), hasher.clone()),
        inside_v4,
        inside_v6,
        v6_tables,
        v6_long: v6.iter().any(|e| v6_len(e.prefix).is_some_and(|l| l > 64)),
        by_member: v4.iter().map(|e| (e.member, e.prefix)).chain(v6.iter().map(|e| (e.member, e.prefix))).collect(),
    }
}

/// The prefixes of global blocks that apply in `direction` (`Both` included).
fn blocks(db: &MemberDb, direction: BlockDirection) -> impl Iterator<Item = IpPrefix> + '_ {
    db.global_blocks
        .iter()
        .filter(move |b| b.direction == direction || b.direction == BlockDirection::Both)
        .map(|b| b.prefix)
}

/// Groups `(member, item)` pairs by member into one flat array, each
/// member's items sorted, and records each member's span of it. A counting
/// sort: members are dense indices, so this is linear.
fn spans<T: Ord>(
    infos: &mut [MemberInfo],
    items: Vec<(MemberRef, T)>,
    set: impl Fn(&mut MemberInfo, (u32, u32)),
) -> Vec<T> {
    let mut start = vec![0u32; infos.len() + 1];
    for (m, _) in &items {
        start[m.index() + 1] += 1;
    }
    for i in 1..start.len() {
        start[i] += start[i - 1];
    }
    let mut slots: Vec<Option<T>> = (0..items.len()).map(|_| None).collect();
    let mut next = start.clone();
    for (m, t) in items {
        slots[next[m.index()] as usize] = Some(t);
        next[m.index()] += 1;
    }
    let mut out: Vec<T> = slots.into_iter().flatten().collect();
    for (i, info) in infos.iter_mut().enumerate() {
        let (a, b) = (start[i], start[i + 1]);
        out[a as usize..b as usize].sort_unstable();
        set(info, (a, b));
    }
    out
}

/// A member address on its way through the overlap sweep.
#[derive(Clone, Copy, Debug)]
struct Entry<T> {
    start: T,
    end: T,
    row: i64,
    member: MemberRef,
    prefix: IpPrefix,
}

#[derive(Clone, Copy, Debug)]
struct Public {
    member: MemberRef,
    id: u32,
    row: i64,
    address: Ipv4Addr,
    first: u16,
    last: u16,
}

struct Cx {
    problems: Vec<Problem>,
    /// Member addresses refused so far, by member id: rows that refer to
    /// them are left out without a report of their own.
    refused_addresses: HashMap<u32, Vec<IpPrefix>>,
    /// Members whose public address row was refused.
    refused_public: HashSet<u32>,
}

impl Cx {
    fn report(
        &mut self,
        table: Table,
        rows: impl Into<Vec<i64>>,
        related: Vec<(Table, i64)>,
        rule: Rule,
        message: String,
    ) {
        self.problems.push(Problem { table, rows: rows.into(), related, rule, message });
    }

    fn refuse_address(&mut self, member: u32, prefix: IpPrefix) {
        self.refused_addresses.entry(member).or_default().push(prefix);
    }

    /// True if `prefix` lies in one of `member`'s refused addresses.
    fn in_refused_address(&self, member: u32, prefix: IpPrefix) -> bool {
        self.refused_addresses.get(&member).is_some_and(|refused| {
            refused.iter().any(|r| match (*r, prefix) {
                (IpPrefix::V4(r), IpPrefix::V4(p)) => r.covers(p),
                (IpPrefix::V6(r), IpPrefix::V6(p)) => r.covers(p),
                _ => false,
            })
        })
    }

    fn unknown_member(&mut self, table: Table, row: i64, member: u32) {
        let related = vec![(Table::Members, i64::from(member))];
        self.report(table, [row], related, Rule::UnknownReference, format!("member {member} does not exist"));
    }

    /// The rows of `table` sorted by id, each id once; reports ids used by
    /// several rows and keeps the first of them.
    fn unique<'a, R>(&mut self, table: Table, rows: &'a [R], id: impl Fn(&R) -> i64) -> Vec<&'a R> {
        // Databases usually hand rows over in key order: then there is nothing to sort.
        if rows.windows(2).all(|w| id(&w[0]) < id(&w[1])) {
            return rows.iter().collect();
        }
        let mut order: Vec<(i64, usize)> = rows.iter().enumerate().map(|(i, r)| (id(r), i)).collect();
        order.sort_unstable();
        let mut out = Vec::with_capacity(rows.len());
        for group in order.chunk_by(|a, b| a.0 == b.0) {
            if let [_, _, ..] = group {
                let msg = format!("the id {} is used by {} rows; ids must be unique", group[0].0, group.len());
                self.report(table, [group[0].0], vec![], Rule::DuplicateId, msg);
            }
            out.push(&rows[group[0].1]);
        }
        out
    }

    fn check_rates(&mut self, p: &Plan) {
        let r: Rates = p.rates;
        let mut bad = |msg: String| {
            self.report(
                Table::Plans,
                [i64::from(p.id)],
                vec![],
                Rule::InvalidRates,
                format!("plan {:?}: {msg}", p.name),
            );
        };
        for (dir, rate, ceil) in [("down", r.down_rate_kbit, r.down_ceil_kbit), ("up", r.up_rate_kbit, r.up_ceil_kbit)]
        {
            if rate == 0 {
                bad(format!("{dir} rate is 0 kbit/s; rates must be at least 1 kbit/s"));
            } else if rate > ceil {
                bad(format!("{dir} rate {rate} kbit/s is above its ceiling {ceil} kbit/s"));
            }
        }
        if r.burst_bytes < MIN_BURST_BYTES {
            bad(format!("burst {} bytes is less than one full-size packet ({MIN_BURST_BYTES} bytes)", r.burst_bytes));
        }
        if r.weight == 0 {
            bad("weight is 0; weights must be at least 1".to_owned());
        }
    }

    /// The public address rows that survive: one per member, not
    /// special-purpose and not the box's own (`boxes`), those sharing an
    /// address with disjoint port ranges; sorted by address and port.
    fn public_ranges(
        &mut self,
        rows: &[PublicAddress],
        member_ref: &impl Fn(u32) -> Option<MemberRef>,
        boxes: &Intervals<u32, (i64, IpPrefix)>,
    ) -> Vec<Public> {
        let rows = self.unique(Table::PublicAddresses, rows, |p| p.id);
        let mut public = Vec::new();
        for p in rows {
            let Some(m) = member_ref(p.member_id) else {
                self.unknown_member(Table::PublicAddresses, p.id, p.member_id);
                continue;
            };
            let mut usable = true;
            let host = IpPrefix::host(IpAddr::V4(p.address));
            if let Some(s) = special(host) {
                let what = format!("{} of member {}", p.address, p.member_id);
                let msg = format!(
                    "{}; a public address must be one the internet can reach the box at",
                    Described { what: &what, prefix: host, special: s }
                );
                self.report(Table::PublicAddresses, [p.id], vec![], Rule::SpecialAddress, msg);
                usable = false;
            } else if let Some((_, _, (row, prefix))) = boxes.find(p.address.to_bits()) {
                let msg = format!(
                    "{} of member {} is the box's own address ({prefix}, networks row {row}); \
                     members' connections cannot leave with it",
                    p.address, p.member_id
                );
                self.report(Table::PublicAddresses, [p.id], vec![(Table::Networks, row)], Rule::BoxAddress, msg);
                usable = false;
            }
            usable &= self.check_ports(Table::PublicAddresses, p.id, p.first_port, p.last_port);
            if !usable {
                self.refused_public.insert(p.member_id);
            }
            // Refused rows still count for "at most one per member", so one run names that too.
            let public_row = Public {
                member: m,
                id: p.member_id,
                row: p.id,
                address: p.address,
                first: p.first_port,
                last: p.last_port,
            };
            public.push((public_row, usable));
        }
        public.sort_by_key(|(p, _)| (p.member, p.row));
        let mut one_each: Vec<Public> = Vec::with_capacity(public.len());
        for group in public.chunk_by(|a, b| a.0.member == b.0.member) {
            if let [_, _, ..] = group {
                let mut msg = format!("member {} has {} public addresses (", group[0].0.id, group.len());
                for (i, (p, _)) in group.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    let _ = write!(msg, "{sep}{} ports {}-{}", p.address, p.first, p.last);
                }
                msg.push_str("); a member has at most one");
                let rows = group.iter().map(|(p, _)| p.row).collect::<Vec<_>>();
                self.report(Table::PublicAddresses, rows, vec![], Rule::SeveralPublicAddresses, msg);
            }
            one_each.extend(group.iter().find(|(_, usable)| *usable).map(|(p, _)| *p));
        }
        one_each.sort_by_key(|p| (p.address, p.first, p.last, p.row));
        let mut shared: Vec<Public> = Vec::with_capacity(one_each.len());
        for p in one_each {
            if let Some(c) = shared.last().filter(|c| c.address == p.address && p.first <= c.last) {
                let (a, b) = if c.row < p.row { (*c, p) } else { (p, *c) };
                let msg = format!(
                    "members {} and {} share {} with overlapping ports {}-{} and {}-{}",
                    a.id, b.id, a.address, a.first, a.last, b.first, b.last
                );
                self.report(Table::PublicAddresses, [a.row, b.row], vec![], Rule::PortRangeOverlap, msg);
                self.refused_public.insert(p.id);
                continue;
            }
            shared.push(p);
        }
        shared
    }

    /// True if forward `f` of member `m` is usable: real ports, inside the
    /// member's port range, to one of the member's own addresses.
    fn check_forward(&mut self, f: &PortForward, m: MemberRef, policy: &Policy) -> bool {
        let mut ok = true;
        if f.public_port == 0 || f.internal_port == 0 {
            let msg = format!(
                "port 0 cannot be forwarded (public port {}, internal port {})",
                f.public_port, f.internal_port
            );
            self.report(Table::PortForwards, [f.id], vec![], Rule::InvalidPorts, msg);
            ok = false;
        }
        match policy.members[m.index()].public {
            // A public address that was refused has its own problem.
            None if self.refused_public.contains(&f.member_id) => ok = false,
            None => {
                let msg = format!("member {} has no public address to forward from", f.member_id);
                self.report(Table::PortForwards, [f.id], vec![], Rule::NoPublicAddress, msg);
                ok = false;
            }
            Some(p) if !(p.first_port..=p.last_port).contains(&f.public_port) => {
                let msg = format!(
                    "public port {} is outside member {}'s port range {}-{} on {}",
                    f.public_port, f.member_id, p.first_port, p.last_port, p.address
                );
                self.report(Table::PortForwards, [f.id], vec![], Rule::PortOutsideRange, msg);
                ok = false;
            }
            Some(_) => {}
        }
        let owner = policy.member_of_inside(IpAddr::V4(f.internal_address));
        let target = IpPrefix::host(IpAddr::V4(f.internal_address));
        if owner != Some(m) && self.in_refused_address(f.member_id, target) {
            // The member's address is there but was refused: its row says why.
            ok = false;
        } else if owner != Some(m) {
            let mut msg =
                format!("internal address {} is not an address of member {}", f.internal_address, f.member_id);
            if let Some(o) = owner {
                let _ = write!(msg, " (it is member {}'s)", policy.members[o.index()].id);
            }
            self.report(Table::PortForwards, [f.id], vec![], Rule::NotMemberAddress, msg);
            ok = false;
        }
        ok
    }

    /// True if `first..=last` is a usable port range.
    fn check_ports(&mut self, table: Table, row: i64, first: u16, last: u16) -> bool {
        let msg = if first > last {
            format!("port range {first}-{last} is empty (the first port is above the last)")
        } else if first == 0 {
            format!("port range {first}-{last} includes port 0, which is never used; start at 1")
        } else {
            return true;
        };
        self.report(table, [row], vec![], Rule::InvalidPorts, msg);
        false
    }

    /// Sorts one family's member addresses and reports every pair of
    /// different members' overlapping addresses (once per later row, with
    /// all the rows it overlaps) and every address a member lists twice.
    /// Returns the rest, sorted by start, longer ranges first: the later
    /// row of every conflict is left out, so the survivors of different
    /// members are disjoint.
    fn sweep<T: Bits>(&mut self, mut entries: Vec<Entry<T>>, members: &[&Member]) -> Vec<Entry<T>> {
        entries.sort_unstable_by(|a, b| (a.start, b.end, a.row).cmp(&(b.start, a.end, b.row)));
        let id = |e: &Entry<T>| members[e.member.index()].id;
        // The chain of earlier entries that contain the current one's start:
        // prefixes nest, so this is a stack at most 33 (IPv4) or 129 (IPv6) deep.
        let mut open: Vec<Entry<T>> = Vec::new();
        let mut kept: Vec<Entry<T>> = Vec::with_capacity(entries.len());
        // (later row, earlier row) of every overlap between different members.
        let mut conflicts: Vec<(Entry<T>, Entry<T>)> = Vec::new();
        for e in entries {
            while open.last().is_some_and(|o| o.end < e.start) {
                open.pop();
            }
            if let Some(twin) = open.last().filter(|o| o.start == e.start && o.end == e.end && o.member == e.member) {
                let msg =
                    format!("{} of member {} is already listed (member_addresses row {})", e.prefix, id(&e), twin.row);
                let related = vec![(Table::MemberAddresses, twin.row)];
                self.report(Table::MemberAddresses, [e.row], related, Rule::DuplicateAddress, msg);
                continue;
            }
            for o in open.iter().filter(|o| o.member != e.member) {
                conflicts.push(if e.row > o.row { (e, *o) } else { (*o, e) });
            }
            open.push(e);
            kept.push(e);
        }
        if conflicts.is_empty() {
            return kept;
        }
        conflicts.sort_unstable_by_key(|(later, earlier)| (later.row, earlier.row));
        let mut at_fault = Vec::new();
        for group in conflicts.chunk_by(|a, b| a.0.row == b.0.row) {
            let e = group[0].0;
            at_fault.push(e.row);
            const SHOWN: usize = 3;
            let mut msg = format!("{} of member {} overlaps member_addresses row", e.prefix, id(&e));
            if group.len() > 1 {
                msg.push('s');
            }
            for (i, (_, o)) in group.iter().take(SHOWN).enumerate() {
                let sep = match i {
                    0 => " ",
                    _ if i + 1 == group.len() => " and ",
                    _ => ", ",
                };
                let _ = write!(msg, "{sep}{} ({} of member {})", o.row, o.prefix, id(o));
            }
            if group.len() > SHOWN {
                let _ = write!(msg, " and {} more", group.len() - SHOWN);
            }
            let related = group.iter().map(|(_, o)| (Table::MemberAddresses, o.row)).collect();
            self.report(Table::MemberAddresses, [e.row], related, Rule::AddressOverlap, msg);
        }
        at_fault.sort_unstable();
        let mut refused = Vec::new();
        kept.retain(|e| {
            let keep = at_fault.binary_search(&e.row).is_err();
            if !keep {
                refused.push((id(e), e.prefix));
            }
            keep
        });
        for (member, prefix) in refused {
            self.refuse_address(member, prefix);
        }
        kept
    }
}

/// The length of an IPv6 prefix; `None` for IPv4.
fn v6_len(p: IpPrefix) -> Option<u8> {
    match p {
        IpPrefix::V6(p) => Some(p.prefix_len()),
        IpPrefix::V4(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MemberAddress, Network, NetworkKind};
    use crate::sample;

    fn problems(db: &MemberDb) -> Vec<String> {
        match compile(db, 0) {
            Ok(_) => Vec::new(),
            Err(e) => e.problems().iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn public_addresses_are_never_special_or_the_boxs() {
        let mut db = sample::example();
        db.public_addresses[0].address = Ipv4Addr::new(127, 0, 0, 1);
        db.public_addresses[1].address = Ipv4Addr::BROADCAST;
        db.public_addresses[2].address = Ipv4Addr::UNSPECIFIED;
        db.public_addresses[3].address = Ipv4Addr::new(224, 0, 0, 1);
        db.public_addresses[4].address = Ipv4Addr::new(10, 255, 0, 1);
        assert_eq!(
            problems(&db),
            [
                "public_addresses row 1: 127.0.0.1 of member 101 is a loopback address (127.0.0.0/8); \
                 a public address must be one the internet can reach the box at",
                "public_addresses row 2: 255.255.255.255 of member 102 is the broadcast address \
                 (255.255.255.255/32); a public address must be one the internet can reach the box at",
                "public_addresses row 3: 0.0.0.0 of member 103 is an unspecified (\"this network\") address \
                 (0.0.0.0/8); a public address must be one the internet can reach the box at",
                "public_addresses row 4: 224.0.0.1 of member 104 is a multicast address (224.0.0.0/4); \
                 a public address must be one the internet can reach the box at",
                "public_addresses row 5: 10.255.0.1 of member 105 is the box's own address \
                 (10.255.0.1/32, networks row 4); members' connections cannot leave with it",
            ],
            "and member 101's forward, which has no public address now, is not reported again"
        );
        // Private addresses are fine as public ones (labs, carrier NAT).
        let mut db = sample::example();
        db.public_addresses[0].address = Ipv4Addr::new(192, 168, 1, 1);
        db.public_addresses[1].address = Ipv4Addr::new(100, 64, 0, 1);
        assert_eq!(problems(&db), Vec::<String>::new());
    }

    #[test]
    fn member_prefixes_are_never_special() {
        let mut db = sample::example();
        db.networks.push(Network { id: 6, prefix: "::/0".parse().unwrap(), kind: NetworkKind::Internal });
        let address =
            |id, network: &str| MemberAddress { id, member_id: 104, network: network.parse().unwrap(), device: None };
        db.member_addresses.push(address(8, "::1/128"));
        db.member_addresses.push(address(9, "ff02::/16"));
        assert_eq!(
            problems(&db),
            [
                "member_addresses row 8: ::1/128 of member 104 is the loopback address (::1/128); \
                 no device sends from such an address",
                "member_addresses row 9: ff02::/16 of member 104 is a multicast address (ff00::/8); \
                 no device sends from such an address",
            ]
        );
    }

    #[test]
    fn an_opening_in_a_refused_prefix_is_not_reported_again() {
        let mut db = sample::example();
        db.networks.push(Network { id: 6, prefix: "2001:db8:0:101::1/128".parse().unwrap(), kind: NetworkKind::Box });
        assert_eq!(
            problems(&db),
            ["member_addresses row 3: 2001:db8:0:101::/64 of member 101 overlaps the box's own \
              2001:db8:0:101::1/128 (networks row 6)"]
        );
    }

    #[test]
    fn a_box_network_over_a_forward_target_is_one_problem() {
        let mut db = sample::example();
        db.networks.push(Network { id: 6, prefix: "10.0.1.2/32".parse().unwrap(), kind: NetworkKind::Box });
        assert_eq!(
            problems(&db),
            ["member_addresses row 2: 10.0.1.2/32 of member 101 overlaps the box's own 10.0.1.2/32 (networks row 6)"]
        );
    }

    #[test]
    fn several_public_addresses_are_named_even_when_one_is_refused() {
        let mut db = sample::example();
        db.public_addresses.push(PublicAddress {
            id: 6,
            member_id: 101,
            address: Ipv4Addr::LOCALHOST,
            first_port: 1,
            last_port: 65535,
        });
        let p = problems(&db);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].starts_with("public_addresses rows 1 and 6: member 101 has 2 public addresses"), "{p:?}");
        assert!(p[1].starts_with("public_addresses row 6: 127.0.0.1 of member 101 is a loopback address"), "{p:?}");
    }
}
