//! The worker loop in its steady state allocates nothing: two workers
//! stepped on a virtual clock, member traffic on both (half of it handed
//! to the other worker), stats published every 20 ms. Once every flow and
//! account exists, a second of steps (50 stats snapshots each) must not
//! ask the allocator for anything.

mod common;

use common::*;
use core::net::{IpAddr, Ipv4Addr};
use dataplane::{Lockstep, PortQueue, Totals};
use engine::{Side, Time};
use io::{Batch, IoError, PacketBuf, PacketIo, PortId};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use wire::build;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// The system allocator, counting the allocations of each thread (the
/// workers run in the test's own thread).
struct Counting;

// SAFETY: every call goes to the system allocator unchanged; counting only
// touches a const-initialised thread local that needs no allocation.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: the caller keeps `alloc`'s contract, which is System's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from System with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: `ptr` came from System with this layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// A port that receives the same frames over and over (`per_recv` a
/// call) and counts what it is given to send, allocating nothing.
struct Looping {
    frames: Vec<Vec<u8>>,
    next: usize,
    per_recv: usize,
    sent: Arc<AtomicU64>,
    port: PortId,
}

impl PacketIo for Looping {
    fn recv(&mut self, batch: &mut Batch) -> Result<usize, IoError> {
        let mut n = 0;
        while n < self.per_recv && !self.frames.is_empty() {
            if !batch.push_copy(&self.frames[self.next], 0, self.port) {
                break;
            }
            self.next = (self.next + 1) % self.frames.len();
            n += 1;
        }
        Ok(n)
    }

    fn send(&mut self, frames: &[PacketBuf]) -> Result<usize, IoError> {
        self.sent.fetch_add(frames.len() as u64, Ordering::Relaxed);
        Ok(frames.len())
    }

    fn name(&self) -> &str {
        "looping"
    }
}

/// UDP from four ports of each member's first device, for `members` members.
fn member_traffic(members: u32) -> Vec<Vec<u8>> {
    let server = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10));
    let mut frames = Vec::new();
    for m in 0..members {
        let device = IpAddr::V4(Ipv4Addr::from(policy::sample::campus_block(m).first() + 1));
        for p in 0..4u16 {
            let mut buf = [0u8; 256];
            let n = build::udp(&mut buf, &ETH, device, server, 40000 + p, 53, 64).unwrap();
            frames.push(buf[..n].to_vec());
        }
    }
    frames
}

#[test]
fn a_worker_in_its_steady_state_allocates_nothing() {
    const WORKERS: usize = 2;
    let sent = Arc::new(AtomicU64::new(0));
    let setups = (0..WORKERS)
        .map(|w| {
            let mut s = worker(w, WORKERS, &port("unused", 0), &port("unused", 1));
            // Every worker sees every member's traffic: half of it is the
            // other worker's, handed over.
            let inside = Looping {
                frames: member_traffic(64),
                next: w * 7,
                per_recv: 16,
                sent: Arc::clone(&sent),
                port: PortId(0),
            };
            let outside =
                Looping { frames: Vec::new(), next: 0, per_recv: 0, sent: Arc::clone(&sent), port: PortId(1) };
            s.ports = vec![
                PortQueue { name: "inside".into(), side: Side::Inside, io: Box::new(inside) },
                PortQueue { name: "outside".into(), side: Side::Outside, io: Box::new(outside) },
            ];
            s
        })
        .collect();
    let mut workers = Lockstep::new(setups, Some(published(64)), T0);
    let ms = |k: u64| Time(T0.0 + k * 1_000_000);
    // Warm-up: every flow, binding and account made, the stats published
    // (20 ms apart) a hundred times.
    for k in 0..2_000 {
        workers.step(ms(k));
    }
    let before = allocations();
    let sent_before = sent.load(Ordering::Relaxed);
    for k in 2_000..3_000 {
        workers.step(ms(k));
    }
    let allocated = allocations() - before;
    let forwarded = sent.load(Ordering::Relaxed) - sent_before;

    let stats = workers.published();
    assert!(stats.iter().all(|s| s.at >= ms(2_980)), "the workers published as they stepped");
    let totals = Totals::of(stats.iter().map(|s| &**s));
    assert!(forwarded >= 1_000 * 16, "the workers forwarded {forwarded} frames in 1,000 steps");
    assert!(totals.dataplane.handed_off > 0, "some frames were handed over");
    assert_eq!(totals.engine.total_drops(), 0, "{:?}", totals.engine.entries());
    assert_eq!(allocated, 0, "allocations in 1,000 steps of the steady state (50 stats snapshots each worker)");

    // A reader that holds snapshots while the workers go on publishing
    // keeps them as they were (the workers fill others).
    let held = workers.published();
    let copies: Vec<_> = held.iter().map(|s| (s.at, s.engine.clone(), s.accounts.clone())).collect();
    for k in 3_000..3_100 {
        workers.step(ms(k));
    }
    assert!(workers.published().iter().all(|s| s.at >= ms(3_080)));
    for (s, (at, engine, accounts)) in held.iter().zip(copies) {
        assert_eq!((s.at, &s.engine, &s.accounts), (at, &engine, &accounts));
    }
}
