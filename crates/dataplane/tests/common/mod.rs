//! What the dataplane's tests share: workers between two in-memory ports,
//! and a sample member policy.
#![allow(dead_code)]

use arc_swap::ArcSwap;
use dataplane::{Egress, Idle, PortQueue, WorkerConfig, WorkerSetup};
use engine::{Config, Side, Time};
use io::{MemoryIo, PortId, SharedMemoryIo};
use policy::Generation;
use std::sync::Arc;
use std::time::Duration;
use wire::build::Eth;
use wire::MacAddr;

pub const T0: Time = Time(1_000_000_000);
pub const ETH: Eth = Eth { src: MacAddr([2, 0, 0, 0, 0, 1]), dst: MacAddr([2, 0, 0, 0, 0, 2]), vlan: None };
/// Entries of each worker's flow table.
pub const CAPACITY: u32 = 4096;

pub fn port(name: &str, id: u8) -> SharedMemoryIo {
    SharedMemoryIo::new(MemoryIo::new(name, PortId(id)))
}

/// Worker `index` of `workers` between an inside and an outside port.
pub fn worker(index: usize, workers: usize, inside: &SharedMemoryIo, outside: &SharedMemoryIo) -> WorkerSetup {
    let engine = Config { max_flows: CAPACITY, hash_key: [index as u64 + 7, 2, 3, 4], ..Default::default() };
    WorkerSetup {
        config: WorkerConfig {
            index,
            workers,
            cpu: None,
            engine,
            batch: 32,
            idle: Idle::Busy,
            stats_every: Duration::from_millis(20),
            null_engine: false,
        },
        ports: vec![
            PortQueue { name: "inside".into(), side: Side::Inside, io: Box::new(inside.clone()) },
            PortQueue { name: "outside".into(), side: Side::Outside, io: Box::new(outside.clone()) },
        ],
        egress: Egress::fixed(0, 1),
        engine: None,
        generation: None,
    }
}

/// Worker `w` of `ports.len()` on each pair of ports, each setup changed by `tweak`.
pub fn workers_on(ports: &[(SharedMemoryIo, SharedMemoryIo)], tweak: impl Fn(&mut WorkerSetup)) -> Vec<WorkerSetup> {
    let n = ports.len();
    ports
        .iter()
        .enumerate()
        .map(|(w, (i, o))| {
            let mut s = worker(w, n, i, o);
            tweak(&mut s);
            s
        })
        .collect()
}

/// The policy of `policy::sample::campus(members)`, published.
pub fn published(members: u32) -> Arc<ArcSwap<Generation>> {
    let members = policy::sample::campus(members);
    let compiled = policy::compile_with_key(&members, 1, [1, 2, 3, 4]).expect("sample compiles");
    Arc::new(ArcSwap::from_pointee(Generation::first(Arc::new(compiled))))
}
