//! The API's JSON documents (`docs/api.md`), built from a [`Snapshot`] and
//! the member database of the running policy. Shapes are stated once here;
//! the CLI reads them back with the same types.

use super::live::{Rates, Snapshot};
use crate::stats::{PairStats, PortStatus};
use policy::{MemberDb, Status};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatusDoc {
    pub version: String,
    pub uptime_s: u64,
    pub generation: u64,
    pub published_generation: u64,
    pub routes_generation: u64,
    pub forwarding: bool,
    pub flows: usize,
    pub nat_bindings: usize,
    pub rates: RatesDoc,
    pub totals: Totals,
    pub workers: Vec<WorkerDoc>,
    pub ports: Vec<PortStatus>,
    pub pair: Option<PairStats>,
    /// The latest reload was refused: the running policy is older than
    /// the member database. (Why is in `/api/reloads`, which may name
    /// members: not for every local user, as this document is.)
    pub policy_refused: bool,
    /// The running policy is the last good member database's: the start
    /// could not have one from the database, and no reload has been done
    /// since.
    pub policy_from_last_good: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RatesDoc {
    pub up_bps: f64,
    pub down_bps: f64,
    pub rx_pps: f64,
    pub tx_pps: f64,
    pub drops_ps: f64,
}

impl From<Rates> for RatesDoc {
    fn from(r: Rates) -> Self {
        RatesDoc { up_bps: r.up_bps, down_bps: r.down_bps, rx_pps: r.rx_pps, tx_pps: r.tx_pps, drops_ps: r.drops_ps }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Totals {
    pub up_bytes: u64,
    pub down_bytes: u64,
    pub rx_frames: u64,
    pub tx_frames: u64,
    pub drops: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkerDoc {
    pub worker: usize,
    pub load: f64,
    pub flows: usize,
    pub rx_pps: f64,
    pub handed_off: u64,
    pub naps: u64,
}

/// One member as the API shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemberDoc {
    pub member_id: u32,
    /// None for a member no longer in the database (usage from before a reload).
    pub name: Option<String>,
    pub status: Option<String>,
    pub plan: Option<String>,
    pub up_bytes: u64,
    pub down_bytes: u64,
    pub up_packets: u64,
    pub down_packets: u64,
    pub up_bps: f64,
    pub down_bps: f64,
    /// The plan's rates, bit/s.
    pub plan_up_bps: Option<u64>,
    pub plan_down_bps: Option<u64>,
    /// The longer of the two directions' last queue delays in torwart's shaper.
    pub queue_delay_us: Option<u64>,
    pub shaper_drops: u64,
    pub rtt_inside_us: Option<u64>,
    pub rtt_outside_us: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MembersDoc {
    pub total: usize,
    pub offset: usize,
    pub members: Vec<MemberDoc>,
}

/// A member's usage over a period, from the accounting table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Usage {
    pub up_bytes: u64,
    pub down_bytes: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Forward {
    pub protocol: String,
    pub public: String,
    pub internal: String,
}

/// One member, in full.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemberPage {
    #[serde(flatten)]
    pub member: MemberDoc,
    pub today: Usage,
    pub month: Usage,
    pub addresses: Vec<String>,
    pub public_addresses: Vec<String>,
    pub forwards: Vec<Forward>,
}

/// How members are ordered in a list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sort {
    /// Busiest now first.
    Rate,
    /// Most bytes since the start first.
    Usage,
    Id,
}

pub fn status(s: &Snapshot, uptime_s: u64, reloads: &super::live::ReloadCounts) -> StatusDoc {
    let st = &s.stats;
    StatusDoc {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_s,
        generation: st.generation,
        published_generation: st.published_generation,
        routes_generation: st.routes_generation,
        forwarding: st.forwarding,
        flows: st.flows,
        nat_bindings: st.nat_bindings,
        rates: s.rates.into(),
        totals: Totals {
            up_bytes: st.members.iter().map(|m| m.up_bytes).sum(),
            down_bytes: st.members.iter().map(|m| m.down_bytes).sum(),
            rx_frames: st.counter("rx_frames"),
            tx_frames: st.counter("tx_frames"),
            drops: s.drops().values().sum(),
        },
        workers: st
            .workers
            .iter()
            .enumerate()
            .map(|(i, w)| WorkerDoc {
                worker: w.worker,
                load: s.load.get(i).copied().unwrap_or(0.0),
                flows: w.flows,
                rx_pps: s.worker_rx_pps.get(i).copied().unwrap_or(0.0),
                handed_off: w.handed_off,
                naps: w.naps,
            })
            .collect(),
        ports: st.ports.clone(),
        pair: st.pair.clone(),
        policy_refused: reloads.policy_refused(),
        policy_from_last_good: reloads.policy_from_last_good(),
    }
}

/// Every member of the database and every member with usage, in `sort` order.
pub fn members(s: &Snapshot, db: &MemberDb, sort: Sort) -> Vec<MemberDoc> {
    let mut all: BTreeMap<u32, MemberDoc> = BTreeMap::new();
    let plans: HashMap<u32, &policy::Plan> = db.plans.iter().map(|p| (p.id, p)).collect();
    for m in &db.members {
        let plan = m.plan_id.and_then(|id| plans.get(&id));
        all.insert(
            m.id,
            MemberDoc {
                member_id: m.id,
                name: Some(m.name.clone()),
                status: Some(status_name(m.status).to_owned()),
                plan: plan.map(|p| p.name.clone()),
                plan_up_bps: plan.map(|p| u64::from(p.rates.up_rate_kbit) * 1000),
                plan_down_bps: plan.map(|p| u64::from(p.rates.down_rate_kbit) * 1000),
                ..Default::default()
            },
        );
    }
    for u in &s.stats.members {
        let m = all.entry(u.member_id).or_insert_with(|| MemberDoc { member_id: u.member_id, ..Default::default() });
        (m.up_bytes, m.down_bytes, m.up_packets, m.down_packets) =
            (u.up_bytes, u.down_bytes, u.up_packets, u.down_packets);
    }
    for l in &s.stats.latency {
        if let Some(m) = all.get_mut(&l.member_id) {
            (m.rtt_inside_us, m.rtt_outside_us) = (l.inside_us, l.outside_us);
        }
    }
    for (id, [up, down]) in &s.member_bps {
        if let Some(m) = all.get_mut(id) {
            (m.up_bps, m.down_bps) = (*up, *down);
        }
    }
    for sh in &s.stats.shaping {
        let Some(m) = all.get_mut(&sh.member_id) else { continue };
        for d in [&sh.up, &sh.down].into_iter().flatten() {
            m.queue_delay_us = Some(m.queue_delay_us.unwrap_or(0).max(d.queue_delay_us));
            m.shaper_drops += d.drops.values().sum::<u64>();
        }
    }
    let mut out: Vec<MemberDoc> = all.into_values().collect();
    match sort {
        Sort::Id => {}
        Sort::Rate => out.sort_by(|a, b| (b.up_bps + b.down_bps).total_cmp(&(a.up_bps + a.down_bps))),
        Sort::Usage => out.sort_by_key(|m| std::cmp::Reverse(m.up_bytes + m.down_bytes)),
    }
    out
}

/// The member's addresses, public addresses and forwards from the database.
pub fn member_page(member: MemberDoc, db: &MemberDb, today: Usage, month: Usage) -> MemberPage {
    let id = member.member_id;
    let public: Vec<_> = db.public_addresses.iter().filter(|p| p.member_id == id).collect();
    let public_of = |port: u16| public.first().map_or_else(|| format!("?:{port}"), |p| format!("{}:{port}", p.address));
    MemberPage {
        addresses: db.member_addresses.iter().filter(|a| a.member_id == id).map(|a| a.network.to_string()).collect(),
        public_addresses: public.iter().map(|p| p.address.to_string()).collect(),
        forwards: db
            .port_forwards
            .iter()
            .filter(|f| f.member_id == id)
            .map(|f| Forward {
                protocol: protocol_name(f.protocol.number()).to_owned(),
                public: public_of(f.public_port),
                internal: format!("{}:{}", f.internal_address, f.internal_port),
            })
            .collect(),
        member,
        today,
        month,
    }
}

pub fn status_name(s: Status) -> &'static str {
    match s {
        Status::Active => "active",
        Status::Blocked => "blocked",
        Status::Test => "test",
    }
}

/// One flow, as `conntrack -L` shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FlowDoc {
    pub protocol: String,
    pub state: String,
    pub remaining_s: u64,
    pub inside: String,
    pub outside: String,
    /// The NAT binding's public address and port (none for IPv6).
    pub public: Option<String>,
    pub member_id: Option<u32>,
    pub worker: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FlowsDoc {
    pub flows: Vec<FlowDoc>,
    /// More flows matched than `limit`.
    pub truncated: bool,
}

pub fn flow(f: &dataplane::FlowInfo) -> FlowDoc {
    FlowDoc {
        protocol: protocol_name(f.protocol).to_owned(),
        state: f.state.to_owned(),
        remaining_s: f.remaining.as_secs(),
        inside: f.inside.to_string(),
        outside: f.outside.to_string(),
        public: f.public.map(|p| p.to_string()),
        member_id: f.member_id,
        worker: f.worker,
    }
}

/// A protocol by name (`wire::flow::proto_name`'s) or number.
pub fn protocol_number(name: &str) -> Option<u8> {
    use wire::flow::proto;
    [proto::TCP, proto::UDP, proto::ICMP, proto::ICMPV6]
        .into_iter()
        .find(|p| wire::flow::proto_name(*p) == Some(name))
        .or_else(|| name.parse().ok())
}

/// The name of an IP protocol number, as `conntrack -L` says it.
pub fn protocol_name(p: u8) -> &'static str {
    wire::flow::proto_name(p).unwrap_or("other")
}
