//! `torwart run`: the daemon.
//!
//! Start, in order, each step failing with a message that names what is
//! wrong and an exit code per kind of failure ([`Failure`]):
//! 1. the configuration (file, fields);
//! 2. the ports (interfaces exist; XDP attaches, or AF_PACKET with the
//!    kernel's forwarding off);
//! 3. the member database (reachable, valid): the first policy;
//! 4. the route mirror (rtnetlink), whose tables the workers read;
//! 5. the workers.
//!
//! Then, until SIGTERM or SIGINT: reload on database change (and on
//! SIGHUP); an unreachable database or an invalid change keeps the running
//! policy, is logged, and the watch is retried; the box's own addresses are
//! kept in the XDP programs' pass-to-kernel map as the kernel's change;
//! usage is written to the database every `accounting.flush_interval`; a
//! stats file and a log line are written every so often.
//!
//! Stop: the workers stop receiving, drain and publish their final
//! counters; the usage is written one last time; exit 0.

use crate::config::{Backend, Checked, Config, IdleMode, PortSide, XdpMode};
use crate::db::{Database, MemberTraffic, WatchOptions};
use crate::ledger::{Ledger, Periods};
use crate::reload::{Published, Reloader};
use dataplane::{Dataplane, Egress, Idle, PortQueue, Totals, WorkerConfig, WorkerSetup, WorkerStats};
use engine::Side;
use serde_json::json;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why the daemon could not start or had to stop; the exit code tells the kind.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Port(String),
    #[error("{0}")]
    Permission(String),
    #[error("{0}")]
    Database(String),
    #[error("{0}")]
    System(String),
}

impl Failure {
    /// Exit codes: 2 configuration, 3 port, 4 permission, 5 database, 6 other system error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Config(_) => 2,
            Failure::Port(_) => 3,
            Failure::Permission(_) => 4,
            Failure::Database(_) => 5,
            Failure::System(_) => 6,
        }
    }
}

/// Logs a line with a level and key=value pairs: one line per event, parseable.
#[macro_export]
macro_rules! log {
    ($level:literal, $($arg:tt)*) => {{
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        eprintln!("{}.{:03} {:5} {}", now.as_secs(), now.subsec_millis(), $level, format_args!($($arg)*));
    }};
}

/// Runs the daemon with the configuration at `path` until SIGTERM/SIGINT.
pub fn run(path: &Path) -> Result<(), Failure> {
    let (config, checked) = Config::load(path).map_err(|e| Failure::Config(e.to_string()))?;
    run_config(config, checked)
}

pub fn run_config(config: Config, checked: Checked) -> Result<(), Failure> {
    if config.api.is_some() {
        log!("WARN", "api: the HTTP API is not served yet; the setting is ignored");
    }
    if config.sync.peer.is_some() {
        log!("WARN", "sync.peer: state synchronisation is not implemented yet; the setting is ignored");
    }
    let terminate = Arc::new(AtomicBool::new(false));
    let hangup = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&terminate)).map_err(|e| Failure::System(e.to_string()))?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hangup))
        .map_err(|e| Failure::System(e.to_string()))?;

    // 2. Ports: check they exist before anything else touches the system.
    let mut ifindexes = Vec::new();
    for p in &config.ports {
        let idx = ifindex(&p.interface).ok_or_else(|| {
            Failure::Port(format!(
                "port {}: no such network interface (ports[].interface in the configuration)",
                p.interface
            ))
        })?;
        ifindexes.push(idx);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Failure::Permission(
            "torwart run needs root (or CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF and CAP_SYS_ADMIN) to attach XDP \
             programs and open packet sockets"
                .into(),
        ));
    }

    // 3. The database and the first policy (in a runtime thread that stays for reloads and accounting).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("torwart-control")
        .build()
        .map_err(|e| Failure::System(format!("cannot start the control runtime: {e}")))?;
    let db = runtime
        .block_on(Database::open(&config.database))
        .map_err(|e| Failure::Database(format!("member database: {e}")))?;
    let key = random_key();
    let reloader = runtime.block_on(Reloader::start(db.clone(), key)).map_err(|e| Failure::Database(e.to_string()))?;
    let published = reloader.published();
    log!(
        "INFO",
        "policy generation={} members={} database={}",
        published.load().number(),
        published.load().policy.len(),
        config.database
    );
    let reload_now = Arc::new(tokio::sync::Notify::new());
    runtime.spawn(reload_loop(db.clone(), reloader, Arc::clone(&reload_now)));

    // 4. Routes and neighbours from the kernel.
    let mirror = router::Mirror::start(router::MirrorConfig {
        ports: config.ports.iter().map(|p| p.interface.clone()).collect(),
        ..Default::default()
    })
    .map_err(|e| Failure::System(format!("cannot mirror the kernel's routes: {e}")))?;

    // 5. Ports' queues and workers.
    let workers = checked.workers;
    let idle = match config.workers.idle {
        IdleMode::Busy => Idle::Busy,
        IdleMode::Sleep => Idle::Sleep { spins: 16, sleep: Duration::from_millis(1), coalesce: checked.coalesce },
    };
    let mut programs = Vec::new();
    let mut queues: Vec<Vec<PortQueue>> = (0..workers).map(|_| Vec::new()).collect();
    for p in &config.ports {
        let side = match p.side {
            PortSide::Inside => Side::Inside,
            PortSide::Outside => Side::Outside,
        };
        match config.io.backend {
            Backend::Xdp => {
                let mode = match config.io.xdp_mode {
                    XdpMode::Auto => io::XdpMode::Auto,
                    XdpMode::Native => io::XdpMode::Native,
                    XdpMode::Generic => io::XdpMode::Generic,
                };
                let prog = io::XdpProgram::attach(&p.interface, mode).map_err(port_failure)?;
                log!("INFO", "port {} side={} xdp={} workers={workers}", p.interface, side.name(), prog.mode());
                prog.set_local_addresses(&local_addresses(&mirror.load())).map_err(port_failure)?;
                for (w, q) in queues.iter_mut().enumerate() {
                    let cfg = io::XdpConfig { queue: w as u32, ..Default::default() };
                    let sock = io::XdpPort::open(&p.interface, &cfg).map_err(|e| {
                        with_hint(
                            port_failure(e),
                            &format!(
                                "worker {w} uses queue {w} of {}: does it have {workers} queues? (ethtool -l {})",
                                p.interface, p.interface
                            ),
                        )
                    })?;
                    prog.register_socket(w as u32, &sock).map_err(port_failure)?;
                    q.push(PortQueue { name: p.interface.clone(), side, io: Box::new(sock) });
                }
                programs.push(prog);
            }
            Backend::AfPacket => {
                check_forwarding_off(&p.interface)?;
                if workers > 1 {
                    return Err(Failure::Config(
                        "io.backend = \"af_packet\" runs one worker (workers.count = 1); use xdp for more".into(),
                    ));
                }
                let sock = io::PacketPort::open(&p.interface, &io::PacketConfig::default()).map_err(port_failure)?;
                log!("INFO", "port {} side={} af_packet", p.interface, side.name());
                queues[0].push(PortQueue { name: p.interface.clone(), side, io: Box::new(sock) });
            }
        }
    }
    let port_map: Vec<(u32, Side)> = config
        .ports
        .iter()
        .zip(&ifindexes)
        .map(|(p, &i)| (i, if p.side == PortSide::Inside { Side::Inside } else { Side::Outside }))
        .collect();
    let shaping = config.shaping.enabled.then(|| {
        // 0 means "no uplink limit": plans alone shape.
        let bps = |mbit: u64| if mbit == 0 { u64::MAX / 4 } else { mbit.saturating_mul(1_000_000) };
        // A sleeping worker polls its shapers only after a nap or a wait,
        // plus the loop's own work (a margin): the shapers are built for that.
        let poll_gap = match idle {
            Idle::Busy => Duration::ZERO,
            Idle::Sleep { .. } => idle.poll_gap() + Duration::from_micros(50),
        };
        let mut s = engine::ShapingConfig::new(
            [bps(config.shaping.uplink_up_mbit), bps(config.shaping.uplink_down_mbit)],
            workers,
            0,
            poll_gap.as_nanos() as u64,
        );
        s.pool_frames = config.shaping.pool_frames;
        s.shaper.codel_target_ns = checked.codel_target.as_nanos() as u64;
        s.shaper.codel_interval_ns = checked.codel_interval.as_nanos() as u64;
        s.shaper.sojourn_limit_ns = checked.sojourn_limit.as_nanos() as u64;
        s
    });
    let mut setups = Vec::new();
    for (w, ports) in queues.into_iter().enumerate() {
        let mut engine = engine::Config { max_flows: config.engine.max_flows, ..Default::default() };
        engine.hash_key = random_key();
        engine.timeouts.tcp_established = checked.established_timeout;
        engine.tcp_loose = config.engine.tcp_loose;
        engine.nat_quota = config.engine.nat_quota;
        engine.shaping = shaping.as_ref().map(|s| s.for_core(w));
        let router_cfg = router::RouterConfig {
            icmp_rate: config.router.icmp_errors_per_second,
            icmp_burst: config.router.icmp_errors_per_second.clamp(1, 50),
        };
        setups.push(WorkerSetup {
            config: WorkerConfig {
                index: w,
                workers,
                cpu: config.workers.cpus.get(w).copied(),
                engine,
                batch: config.io.batch,
                idle,
                stats_every: Duration::from_millis(250),
            },
            ports,
            egress: Egress::routed(mirror.tables(), mirror.resolver(), port_map.clone(), router_cfg),
            engine: None,
        });
    }
    let dp = Dataplane::start(setups, Some(Arc::clone(&published)))
        .map_err(|e| Failure::System(format!("cannot start the workers: {e}")))?;
    log!("INFO", "running: {workers} worker(s), {} port(s)", config.ports.len());

    // The main loop: signals, addresses, accounting, stats.
    let mut ledger = Ledger::new();
    let mut last_flush = Instant::now();
    let mut last_stats = Instant::now();
    let mut last_log = Instant::now();
    let mut routes_generation = mirror.load().generation();
    while !terminate.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if hangup.swap(false, Ordering::Relaxed) {
            log!("INFO", "SIGHUP: reloading the member database");
            reload_now.notify_one();
        }
        let tables = mirror.load();
        if tables.generation() != routes_generation {
            routes_generation = tables.generation();
            let local = local_addresses(&tables);
            for prog in &programs {
                if let Err(e) = prog.set_local_addresses(&local) {
                    log!("WARN", "port {}: cannot update the box's addresses: {e}", prog.ifname());
                }
            }
        }
        if !dp.running() {
            log!("ERROR", "a worker stopped unexpectedly; stopping");
            terminate.store(true, Ordering::Relaxed);
        }
        if last_flush.elapsed() >= checked.flush_interval {
            last_flush = Instant::now();
            flush_usage(&runtime, &db, &mut ledger, &dp.stats());
        }
        if config.stats.file.is_some() && last_stats.elapsed() >= checked.stats_interval {
            last_stats = Instant::now();
            write_stats(&config, &published, &dp.stats(), &mirror);
        }
        if !checked.log_interval.is_zero() && last_log.elapsed() >= checked.log_interval {
            last_log = Instant::now();
            log_summary(&dp.stats());
        }
    }
    log!("INFO", "stopping: draining the workers");
    let last = dp.stop();
    flush_usage(&runtime, &db, &mut ledger, &last);
    write_stats(&config, &published, &last, &mirror);
    log_summary(&last);
    drop(programs);
    mirror.stop();
    runtime.block_on(db.close());
    runtime.shutdown_timeout(Duration::from_secs(2));
    log!("INFO", "stopped");
    Ok(())
}

/// Adds a hint to a port failure's message.
fn with_hint(f: Failure, hint: &str) -> Failure {
    match f {
        Failure::Port(m) => Failure::Port(format!("{m} ({hint})")),
        other => other,
    }
}

fn port_failure(e: io::IoError) -> Failure {
    let m = e.to_string();
    if m.contains("permission") || m.contains("Permission") || m.contains("EPERM") {
        Failure::Permission(m)
    } else {
        Failure::Port(m)
    }
}

/// Reloads on every change the database reports and on SIGHUP; a failure
/// keeps the running policy, and a broken watch is re-established.
async fn reload_loop(db: Database, mut reloader: Reloader, now: Arc<tokio::sync::Notify>) {
    let report = |r: Result<crate::reload::Reloaded, crate::db::DbError>| match r {
        Ok(r) => log!(
            "INFO",
            "policy reloaded generation={} changes=\"{}\" flows_ended_members={} compile_ms={:.1}",
            r.generation,
            r.changes,
            r.ended,
            r.compile.as_secs_f64() * 1e3
        ),
        Err(e) => log!("WARN", "reload refused, the running policy stays: {e}"),
    };
    loop {
        let mut watch = match db.watch(WatchOptions::default()).await {
            Ok(w) => w,
            Err(e) => {
                log!("WARN", "cannot watch the member database (retrying in 5 s): {e}");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = now.notified() => report(reloader.reload().await),
                }
                continue;
            }
        };
        loop {
            tokio::select! {
                changed = watch.changed() => match changed {
                    Ok(()) => report(reloader.reload().await),
                    Err(e) => {
                        log!("WARN", "member database watch: {e}");
                        if watch.is_closed() {
                            break;
                        }
                    }
                },
                _ = now.notified() => report(reloader.reload().await),
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn flush_usage(runtime: &tokio::runtime::Runtime, db: &Database, ledger: &mut Ledger, stats: &[Arc<WorkerStats>]) {
    let totals: Vec<MemberTraffic> = stats
        .iter()
        .flat_map(|w| w.accounts.iter())
        .map(|a| MemberTraffic {
            member_id: a.member_id,
            up_bytes: a.bytes[0],
            down_bytes: a.bytes[1],
            up_packets: a.packets[0],
            down_packets: a.packets[1],
        })
        .collect();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    match runtime.block_on(ledger.flush(db, Periods::HOURLY, now, &totals)) {
        Ok(0) => {}
        Ok(n) => log!("INFO", "usage written members={n}"),
        Err(e) => log!("WARN", "usage not written (kept for the next flush): {e}"),
    }
}

/// The stats file: counters, usage per member, per-worker figures.
fn write_stats(config: &Config, published: &Published, stats: &[Arc<WorkerStats>], mirror: &router::Mirror) {
    let Some(path) = &config.stats.file else { return };
    let totals = Totals::of(stats.iter().map(|s| &**s));
    let mut counters = BTreeMap::new();
    for (name, v) in totals.engine.entries() {
        counters.insert(name.to_owned(), v);
    }
    for (d, v) in totals.dataplane.drops() {
        counters.insert(d.name().to_owned(), v);
    }
    counters.insert("handoff_same_core".into(), totals.dataplane.same_core);
    counters.insert("handoff_handed_off".into(), totals.dataplane.handed_off);
    for s in stats {
        for (name, v) in s.egress.router.iter() {
            *counters.entry(format!("router_{name}")).or_insert(0) += v;
        }
    }
    let mut members: BTreeMap<u32, [u64; 4]> = BTreeMap::new();
    for a in stats.iter().flat_map(|s| s.accounts.iter()) {
        let m = members.entry(a.member_id).or_default();
        m[0] += a.bytes[0];
        m[1] += a.packets[0];
        m[2] += a.bytes[1];
        m[3] += a.packets[1];
    }
    let members: Vec<_> = members
        .iter()
        .map(|(id, m)| {
            json!({"member_id": id, "up_bytes": m[0], "up_packets": m[1], "down_bytes": m[2], "down_packets": m[3]})
        })
        .collect();
    let workers: Vec<_> = stats
        .iter()
        .map(|s| {
            json!({
                "worker": s.worker, "generation": s.generation, "flows": s.flows, "nat_bindings": s.nat_bindings,
                "rx": s.dataplane.rx, "tx": s.dataplane.tx, "same_core": s.dataplane.same_core,
                "handed_off": s.dataplane.handed_off, "handed_in": s.dataplane.handed_in,
                "loops": s.dataplane.loops, "idle_loops": s.dataplane.idle_loops, "waits": s.dataplane.waits, "naps": s.dataplane.naps,
            })
        })
        .collect();
    let dir = |m: &Option<shaper::MemberStats>| {
        m.as_ref().map(|m| {
            let reasons: BTreeMap<&str, u64> =
                shaper::Reason::ALL.iter().map(|r| (r.name(), m.reasons.get(*r))).filter(|(_, v)| *v > 0).collect();
            json!({
                "rate_bps": m.rate_bps, "allowed_bps": m.allowed_bps, "plan_rate_bps": m.plan.rate_bps,
                "plan_ceil_bps": m.plan.ceil_bps, "backlog_packets": m.backlog_packets,
                "backlog_bytes": m.backlog_bytes, "queue_delay_us": m.last_sojourn_ns / 1000,
                "released_packets": m.released_packets, "passed_packets": m.passed_packets, "drops": reasons,
            })
        })
    };
    let shaping: Vec<_> = stats
        .iter()
        .flat_map(|s| s.shaped.iter())
        .map(|(id, m)| json!({"member_id": id, "up": dir(&m[0]), "down": dir(&m[1])}))
        .collect();
    let shaper_load: Vec<_> = stats
        .iter()
        .filter_map(|s| {
            let [up, down] = s.shaper.as_ref()?;
            Some(json!({
                "worker": s.worker, "held_frames": s.shaper_held,
                "up": {"members": up.members, "backlogged": up.backlogged_members, "backlog_bytes": up.backlog_bytes, "share_bps": up.share_bps},
                "down": {"members": down.members, "backlogged": down.backlogged_members, "backlog_bytes": down.backlog_bytes, "share_bps": down.share_bps},
            }))
        })
        .collect();
    let generation = stats.iter().map(|s| s.generation).min().unwrap_or(0);
    let doc = json!({
        "generation": generation,
        "published_generation": published.load().number(),
        "routes_generation": mirror.load().generation(),
        "flows": totals.flows,
        "nat_bindings": totals.nat_bindings,
        "counters": counters,
        "members": members,
        "workers": workers,
        "shaping": shaping,
        "shaper_load": shaper_load,
    });
    let tmp = path.with_extension("tmp");
    let written = serde_json::to_vec_pretty(&doc)
        .map_err(std::io::Error::other)
        .and_then(|b| std::fs::write(&tmp, b))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        log!("WARN", "cannot write the stats file {}: {e}", path.display());
    }
}

fn log_summary(stats: &[Arc<WorkerStats>]) {
    let t = Totals::of(stats.iter().map(|s| &**s));
    let rx: u64 = t.dataplane.rx.iter().sum();
    let tx: u64 = t.dataplane.tx.iter().sum();
    log!(
        "INFO",
        "stats rx={rx} tx={tx} engine_drops={} dataplane_drops={} flows={} nat_bindings={} handed_off={}",
        t.engine.total_drops(),
        t.dataplane.total_drops(),
        t.flows,
        t.nat_bindings,
        t.dataplane.handed_off
    );
}

/// The box's own addresses, which the XDP programs pass to the kernel.
fn local_addresses(tables: &router::RouteTables) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = tables.links().iter().flat_map(|l| l.addrs.iter().map(|a| a.addr)).collect();
    out.sort();
    out.dedup();
    out.truncate(io::xdp::MAX_LOCAL_ADDRESSES);
    out
}

fn ifindex(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: if_nametoindex reads the NUL-terminated string we pass.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// With AF_PACKET the kernel sees every frame too: its own forwarding must be off.
fn check_forwarding_off(interface: &str) -> Result<(), Failure> {
    for path in ["/proc/sys/net/ipv4/ip_forward".to_owned(), format!("/proc/sys/net/ipv6/conf/{interface}/forwarding")]
    {
        if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() != "0") {
            return Err(Failure::Config(format!(
                "io.backend = \"af_packet\": the kernel would forward the same frames too; set {path} to 0"
            )));
        }
    }
    Ok(())
}

fn random_key() -> [u64; 4] {
    let mut k = [0u8; 32];
    let ok = std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut k)).is_ok();
    if !ok {
        // No urandom: fall back on the clock and addresses (still secret enough for a hash seed).
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        k[..16].copy_from_slice(&t.as_nanos().to_le_bytes());
        let here = &t as *const _ as u64;
        k[16..24].copy_from_slice(&here.to_le_bytes());
    }
    let w = |i: usize| u64::from_le_bytes(k[i * 8..i * 8 + 8].try_into().unwrap_or_default());
    [w(0), w(1), w(2), w(3)]
}
