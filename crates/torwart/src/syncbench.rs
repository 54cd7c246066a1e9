//! `torwart bench --sync`: what the pair's state sync costs, measured.
//!
//! Two engines and two [`sync::Peer`]s in one process, talking over real
//! UDP sockets on the loopback interface, each side on its own thread:
//!
//! * **Resync**: box A holds a scenario's flows (all opened through its
//!   engine, with NAT); box B starts empty, joins, and A sends it every
//!   flow. Measured: the time from B's first hello until B holds them all
//!   and says it is complete, and that B installed every one.
//! * **Cost**: on A alone, the CPU time per reported change: taking the
//!   change from the engine's log, making the record, queueing it, packing
//!   and signing the datagrams and sending them. Given per new flow
//!   (the changes a TCP flow reports: answered, established, ended)
//!   and as a share of one core at the scenario's flow-creation rate.

use crate::scenario::{self, FlowSpec, Params};
use engine::{Config, Engine, SyncChange, Time};
use policy::Policy;
use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant};
use sync::{Event, FlowRecord, Key, Keys, Peer, Record};

/// What one run measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SyncReport {
    pub scenario: String,
    pub flows: usize,
    pub resync_seconds: f64,
    pub installed: usize,
    pub resync_flows_per_second: f64,
    /// CPU nanoseconds per reported change, on the sending box.
    pub ns_per_change: f64,
    /// Changes a TCP flow reports: answered, established, ended.
    pub changes_per_flow: u32,
    /// New flows per second the scenario's packet rate makes.
    pub new_flows_per_second: f64,
    /// The sending box's sync work at that rate, in percent of one core.
    pub core_percent: f64,
}

/// The packet rate the flow-creation rate is taken at: the network this is
/// built for saturated its kernel box at 700,000 packets per second.
const PACKETS_PER_SECOND: f64 = 700_000.0;

/// Runs both measurements on `flows` of scenario `p`, with datagrams of at
/// most `datagram` bytes (1452 for a 1500-byte link, up to 8952 for jumbo frames).
pub fn run(p: &Params, flows: usize, seed: u64, datagram: usize) -> Result<SyncReport, String> {
    let cfg = sync::Config { max_datagram: datagram, ..sync::Config::default() };
    let db = policy::sample::campus(p.members);
    let policy = Arc::new(policy::compile(&db, 1).map_err(|e| format!("the scenario's database: {e}"))?);
    let members: Vec<u32> = (0..p.members).collect();
    let mut rng = fastrand::Rng::with_seed(seed);
    let specs = scenario::flows(p, &members, flows, &mut rng);
    let now = Time::from_secs(1_000);
    let mut a = engine(&policy, flows, now);
    let opened = specs.iter().filter(|f| open(&mut a, now, f)).count();
    // What opening them logged is not the resync's: start clean.
    a.take_changes(now, |_| {});
    let (resync_seconds, installed) = resync(cfg, a, &policy, flows, now)?;
    let ns_per_change = cost(cfg, &policy, &specs[..specs.len().min(50_000)], now)?;
    let changes_per_flow = 3;
    let new_flows_per_second = PACKETS_PER_SECOND * f64::from(p.new_per_mille) / 1000.0;
    Ok(SyncReport {
        scenario: p.name.to_owned(),
        flows: opened,
        resync_seconds,
        installed,
        resync_flows_per_second: installed as f64 / resync_seconds,
        ns_per_change,
        changes_per_flow,
        new_flows_per_second,
        core_percent: new_flows_per_second * f64::from(changes_per_flow) * ns_per_change / 1e9 * 100.0,
    })
}

fn engine(policy: &Arc<Policy>, flows: usize, now: Time) -> Engine {
    let cfg = Config { max_flows: (flows as u32 * 2).next_power_of_two().max(1024), ..Config::default() };
    let mut e = Engine::new(cfg, now);
    e.set_policy(Arc::clone(policy), &[]);
    e.sync_with_peer(1 << 16);
    e
}

/// Opens `f` through `e` as its ends would (`bench`'s warm-up does the same).
fn open(e: &mut Engine, now: Time, f: &FlowSpec) -> bool {
    let mut frame = crate::bench::Frame { data: Box::new([0; 2048]), len: 0 };
    crate::bench::open_flow(e, now, f, &mut frame).is_some()
}

fn keys() -> Keys {
    Keys::from_keys(Key::new(&[0x42; 32]), [])
}

fn sockets() -> Result<(UdpSocket, UdpSocket), String> {
    let e = |e: std::io::Error| format!("loopback sockets: {e}");
    let (x, y) = (UdpSocket::bind("127.0.0.1:0").map_err(e)?, UdpSocket::bind("127.0.0.1:0").map_err(e)?);
    x.connect(y.local_addr().map_err(e)?).map_err(e)?;
    y.connect(x.local_addr().map_err(e)?).map_err(e)?;
    for s in [&x, &y] {
        s.set_nonblocking(true).map_err(e)?;
        control::pair::receive_buffer(s, 8 << 20);
    }
    Ok((x, y))
}

/// Waits until `s` has a datagram, or `timeout` passed.
fn wait(s: &UdpSocket, timeout: Duration) {
    let mut fd = libc::pollfd { fd: std::os::fd::AsRawFd::as_raw_fd(s), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut fd, 1, timeout.as_millis() as libc::c_int) };
}

fn clock(start: Instant) -> Time {
    Time::from_secs(1_000) + start.elapsed()
}

/// Box A (holding the flows) resyncs a box B that joins; returns the
/// seconds until B is complete and the flows B installed.
fn resync(
    cfg: sync::Config,
    a: Engine,
    policy: &Arc<Policy>,
    flows: usize,
    now0: Time,
) -> Result<(f64, usize), String> {
    let (sa, sb) = sockets()?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(60);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let sender = std::thread::spawn(move || {
        let mut peer = Peer::new(cfg, keys(), [1; 32], clock(start));
        let mut buf = vec![0u8; sync::message::MAX_LEN];
        let mut dump: Option<(u32, Option<u32>, u64)> = None;
        while Instant::now() < deadline && !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let now = clock(start);
            while let Ok(n) = sa.recv(&mut buf) {
                peer.handle_datagram(now, &buf[..n], |_| {});
            }
            while let Some(e) = peer.poll_event() {
                if let Event::Resync { id } = e {
                    dump = Some((id, Some(0), 0));
                }
            }
            if let Some((id, Some(from), mut n)) = dump {
                let next = if peer.room() > 2048 {
                    a.export_from(now0, from, 1024, |s| {
                        peer.push(Record::Flow(FlowRecord::from_synced(&s)));
                        n += 1;
                    })
                } else {
                    Some(from)
                };
                if next.is_none() {
                    peer.resync_done(id, n);
                }
                dump = Some((id, next, n));
            }
            while let Some(n) = peer.poll_transmit(now, &mut buf) {
                let _ = sa.send(&buf[..n]);
            }
            let st = peer.status(now);
            let dumping = dump.is_some_and(|d| d.1.is_some()) && peer.room() > 2048;
            if !dumping && (st.queued == 0 || st.unacked >= cfg.send_window) {
                wait(&sa, Duration::from_millis(1));
            }
        }
    });
    let mut b = engine(policy, flows, now0);
    let mut peer = Peer::new(cfg, keys(), [2; 32], clock(start));
    let mut buf = vec![0u8; sync::message::MAX_LEN];
    let mut installed = 0;
    let mut joined = None;
    let done = loop {
        let now = clock(start);
        if Instant::now() > deadline {
            return Err(format!("resync not complete after 60 s: {installed} of {flows} flows installed"));
        }
        while let Ok(n) = sb.recv(&mut buf) {
            peer.handle_datagram(now, &buf[..n], |r| {
                if let Record::Flow(f) = r {
                    if f.to_synced().is_some_and(|s| b.install(now0, &s, 1).is_ok()) {
                        installed += 1;
                    }
                }
            });
        }
        let mut complete = false;
        while let Some(e) = peer.poll_event() {
            match e {
                Event::PeerUp { .. } => joined = Some(Instant::now()),
                Event::Complete => complete = true,
                _ => {}
            }
        }
        while let Some(n) = peer.poll_transmit(now, &mut buf) {
            let _ = sb.send(&buf[..n]);
        }
        if complete {
            break joined.map_or(start.elapsed(), |j| j.elapsed());
        }
        wait(&sb, Duration::from_millis(1));
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = sender.join();
    b.take_changes(now0, |_| {});
    Ok((done.as_secs_f64(), installed))
}

/// CPU nanoseconds per change reported, on the sending side: the flows of
/// `specs` opened and their changes taken, made into records, queued,
/// packed, signed and sent; the acknowledgements of a peer on the other
/// socket taken in.
fn cost(cfg: sync::Config, policy: &Arc<Policy>, specs: &[FlowSpec], now: Time) -> Result<f64, String> {
    let (sa, sb) = sockets()?;
    let start = Instant::now();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    // The receiving box, only to acknowledge.
    let receiver = std::thread::spawn(move || {
        let mut peer = Peer::new(cfg, keys(), [2; 32], clock(start));
        let mut buf = vec![0u8; sync::message::MAX_LEN];
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let now = clock(start);
            while let Ok(n) = sb.recv(&mut buf) {
                peer.handle_datagram(now, &buf[..n], |_| {});
            }
            while peer.poll_event().is_some() {}
            while let Some(n) = peer.poll_transmit(now, &mut buf) {
                let _ = sb.send(&buf[..n]);
            }
            wait(&sb, Duration::from_millis(1));
        }
    });
    let mut e = engine(policy, specs.len(), now);
    let mut peer = Peer::new(cfg, keys(), [1; 32], clock(start));
    let mut buf = vec![0u8; sync::message::MAX_LEN];
    // The handshake first: until then there is nobody to send to.
    let joined = Instant::now() + Duration::from_secs(5);
    while !peer.status(clock(start)).peer_alive || peer.status(clock(start)).resync.is_some() {
        if Instant::now() > joined {
            return Err("the peers did not meet on the loopback".into());
        }
        let now = clock(start);
        while let Ok(n) = sa.recv(&mut buf) {
            peer.handle_datagram(now, &buf[..n], |_| {});
        }
        while let Some(ev) = peer.poll_event() {
            if let Event::Resync { id } = ev {
                peer.resync_done(id, 0);
            }
        }
        while let Some(n) = peer.poll_transmit(now, &mut buf) {
            let _ = sa.send(&buf[..n]);
        }
    }
    let mut batch = control::pair::SendBatch::new(cfg.max_datagram, 32);
    // Opening the flows is the engine's work, not sync's: timed apart.
    let mut changes = 0u64;
    let mut sync_time = Duration::ZERO;
    for chunk in specs.chunks(256) {
        for f in chunk {
            open(&mut e, now, f);
        }
        let t0 = cpu_now();
        let t = clock(start);
        e.take_changes(now, |c| {
            let r = match c {
                SyncChange::Flow(s) => Record::Flow(FlowRecord::from_synced(&s)),
                SyncChange::Ended { key, member_id } => Record::Ended { key, member: member_id.unwrap_or(u32::MAX) },
            };
            peer.push(r);
            changes += 1;
        });
        while let Ok(n) = sa.recv(&mut buf) {
            peer.handle_datagram(t, &buf[..n], |_| {});
        }
        while let Some(slot) = batch.buffer() {
            let Some(n) = peer.poll_transmit(t, slot) else { break };
            batch.push(n);
            if batch.is_full() {
                batch.send(&sa);
            }
        }
        batch.send(&sa);
        sync_time += cpu_now().saturating_sub(t0);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = receiver.join();
    if changes == 0 {
        return Err("no change was reported".into());
    }
    Ok(sync_time.as_nanos() as f64 / changes as f64)
}

/// This thread's CPU time.
fn cpu_now() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into the valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

pub fn print(r: &SyncReport) {
    println!("scenario       {} ({} flows open on box A)", r.scenario, r.flows);
    println!(
        "resync         {} flows to a box that joins in {:.2} s ({:.0} flows/s), {} installed",
        r.flows, r.resync_seconds, r.resync_flows_per_second, r.installed
    );
    println!(
        "cost           {:.0} ns of CPU per change reported; at {:.0} new flows/s ({} changes each): {:.2} % of a core",
        r.ns_per_change, r.new_flows_per_second, r.changes_per_flow, r.core_percent
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_resync_installs_every_flow_and_costs_something() {
        let p = scenario::by_name("campus-2018").unwrap();
        let small = Params { members: 200, ..p.clone() };
        let r = run(&small, 2_000, 7, 1452).unwrap();
        assert!(r.flows > 1_900, "{r:?}");
        assert_eq!(r.installed, r.flows, "{r:?}");
        assert!(r.ns_per_change > 0.0 && r.core_percent > 0.0, "{r:?}");
    }
}
