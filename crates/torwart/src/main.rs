//! `torwart`: a multi-core gateway for member networks.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use torwart::replay::{self, Input};
use torwart::{bench, cli, scenario, Error};

#[global_allocator]
static ALLOC: torwart::alloc::HugeTables = torwart::alloc::HugeTables;

#[derive(Parser, Debug)]
#[command(
    name = "torwart",
    version,
    about = "A multi-core gateway for member networks: firewall, NAT, accounting, shaping"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs captured traffic through the gateway's workers and writes what they would forward.
    ///
    /// Without --inside/--outside, replays an embedded demonstration capture.
    Replay(ReplayArgs),
    /// Runs the gateway on real interfaces (the daemon): see docs/torwart.example.toml.
    Run {
        /// The configuration file.
        #[arg(long, default_value = "/etc/torwart/torwart.toml")]
        config: PathBuf,
        /// Benchmarks only: bypass the engine (no firewall, NAT, accounting
        /// or shaping) to measure the I/O floor (scripts/sidebyside).
        #[arg(long, hide = true)]
        bench_null_engine: bool,
        /// Check everything the start checks (configuration, ports,
        /// privileges, kernel forwarding, token and key files, the member
        /// database and its policy) and exit, changing nothing: safe beside a
        /// running daemon, before `systemctl restart torwart`. Exit codes as
        /// for a start.
        #[arg(long, conflicts_with = "bench_null_engine")]
        check: bool,
    },
    /// Builds a member network in namespaces, runs torwart as its gateway,
    /// drives real traffic (ping, curl, traceroute, iperf3) and reports.
    ///
    /// Needs root. Installs missing tools with apt-get if it can.
    Lab(LabArgs),
    /// The member database: create, import, check.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Measures the engine on a named scenario with generated traffic.
    Bench(BenchArgs),
    /// Prints a new key file for the sync link of a pair (`[sync] key_file`):
    /// the same file on both boxes, mode 600. See docs/pair.md.
    SyncKey,
    /// The running daemon: policy generation, traffic, workers, ports, pair.
    Status {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long)]
        json: bool,
    },
    /// The busiest members, refreshed live (keys: r, u, i sort; q quits).
    Top {
        #[command(flatten)]
        api: ApiArgs,
        /// rate, usage or id.
        #[arg(long, default_value = "rate")]
        sort: String,
        /// Time between refreshes (100ms to 1h).
        #[arg(long, default_value = "1s", value_parser = refresh_interval)]
        interval: std::time::Duration,
    },
    /// Members with their usage, rates, queue delay and round-trip times.
    Members {
        #[command(flatten)]
        api: ApiArgs,
        /// rate, usage or id.
        #[arg(long, default_value = "rate")]
        sort: String,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// The flows in the daemon's tables, as `conntrack -L` lists them.
    Flows {
        #[command(flatten)]
        api: ApiArgs,
        /// Only this member's flows.
        #[arg(long)]
        member: Option<u32>,
        /// Only flows with this address (inside, outside or public).
        #[arg(long)]
        address: Option<std::net::IpAddr>,
        /// Only flows with this port.
        #[arg(long)]
        port: Option<u16>,
        /// tcp, udp, icmp, icmpv6 or a number.
        #[arg(long)]
        protocol: Option<String>,
        /// A state name (e.g. ESTABLISHED).
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Asks the daemon to reload the member database now (as SIGHUP does).
    Reload {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Writes the manual pages (torwart.1, torwart-<subcommand>.1) into DIR.
    #[command(hide = true)]
    Man { dir: PathBuf },
}

/// Where the daemon's API is.
#[derive(clap::Args, Debug)]
struct ApiArgs {
    /// The daemon's API socket (`api.socket` in its configuration).
    #[arg(long, default_value = control::config::DEFAULT_API_SOCKET)]
    socket: PathBuf,
}

/// Where the member database is: a path (SQLite) or a URL (sqlite://, postgres://).
const DEFAULT_DB: &str = "torwart.db";

#[derive(clap::Args, Debug)]
struct ReplayArgs {
    /// Capture taken on the inside port (towards the members): pcap or pcapng.
    #[arg(long)]
    inside: Option<PathBuf>,
    /// Capture taken on the outside port (towards the internet).
    #[arg(long)]
    outside: Option<PathBuf>,
    /// Where to write to-inside.pcap and to-outside.pcap.
    #[arg(long, default_value = "replay-out")]
    out_dir: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Most flows tracked at once.
    #[arg(long, default_value_t = 262_144)]
    max_flows: u32,
    /// Idle timeout of established TCP connections (e.g. 12h, 5d).
    #[arg(long, default_value = "12h", value_parser = humantime::parse_duration)]
    established_timeout: std::time::Duration,
    /// Do not take over TCP connections seen mid-stream.
    #[arg(long)]
    strict_tcp: bool,
    /// Seed of the (fixed, for reproducibility) flow hash key.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Workers (1 to 64): frames are spread over their queues by a hash,
    /// as a NIC does, and handed to the worker that owns their member.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// With --db: shape members by their plans (uplink unlimited).
    #[arg(long, requires = "db")]
    shaping: bool,
    /// Route as the gateway does, with the links, routes and neighbours of
    /// this file (TOML, see control::routes; one link of each side is a
    /// port) instead of forwarding frames unchanged by their side's port.
    #[arg(long)]
    routes: Option<PathBuf>,
    /// Member database (path or URL): apply the member policy (NAT,
    /// forwards, anti-spoofing, blocks) and print usage per member.
    #[arg(long)]
    db: Option<String>,
    /// With --db: add the usage per member to the database's accounting
    /// table (hourly periods, by the capture's time), as the daemon does.
    #[arg(long, requires = "db")]
    record_usage: bool,
}

#[derive(clap::Args, Debug)]
struct LabArgs {
    /// "xdp" (AF_XDP, the default) or "af_packet".
    #[arg(long, default_value = "xdp")]
    backend: String,
    /// Where the database, configuration, log and stats go.
    #[arg(long, default_value = "lab-out")]
    dir: PathBuf,
    /// Seconds of each iperf3 run.
    #[arg(long, default_value_t = 3)]
    iperf_seconds: u32,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// How torwart's worker waits when idle: sleep (shares the machine) or busy (spins).
    #[arg(long, default_value = "sleep")]
    idle: String,
    /// After the checks, leave the lab up for a person to look at the web
    /// page (some traffic keeps flowing); Ctrl-C tears it down.
    #[arg(long)]
    keep: bool,
    /// The pair instead (docs/pair.md): two boxes, keepalived, long-lived
    /// traffic, kill -9 of the active box and its return.
    #[arg(long, conflicts_with_all = ["keep", "backend"])]
    pair: bool,
    /// With --pair: answered UDP flows made through the surviving box
    /// while the other is gone, for the bulk resync at its return (e.g.
    /// 200000; a release build).
    #[arg(long, default_value_t = 0, requires = "pair")]
    pair_flows: usize,
    /// One box under attack instead (docs/reliability.md): a SYN flood at a
    /// port forward, a member scanning, blind RST/SYN and ICMP injection, a
    /// reload storm, with long-lived connections that must not notice.
    #[arg(long, conflicts_with_all = ["keep", "backend", "pair"])]
    attack: bool,
    /// With --attack: the longer version with higher rates (else the short one CI runs).
    #[arg(long, requires = "attack")]
    full: bool,
    /// With --attack: the soak's length in seconds (default 120, or 1800 with --full).
    #[arg(long, requires = "attack")]
    soak_seconds: Option<f64>,
    /// The port on this machine's 127.0.0.1 where the box's web page is
    /// forwarded (another free one if taken).
    #[arg(long, default_value_t = 9680)]
    page_port: u16,
}

#[derive(clap::Args, Debug)]
struct BenchArgs {
    /// campus-2018, campus-10x or synflood.
    #[arg(long, default_value = "campus-2018")]
    scenario: String,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Worker cores, one engine each.
    #[arg(long, default_value_t = 1)]
    cores: usize,
    /// Measured seconds per core.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Frames per batch (the daemon's `io.batch` default).
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Offered load per core in Mpps: the rate at which virtual time passes.
    #[arg(long, default_value_t = 1.0)]
    offered_mpps: f64,
    /// Scales the scenario's flow count (for quick runs).
    #[arg(long, default_value_t = 1.0)]
    flow_scale: f64,
    /// Print the report as JSON (progress still goes to stderr).
    #[arg(long)]
    json: bool,
    /// Connection tracking alone: no member policy, NAT or accounting.
    #[arg(long)]
    no_members: bool,
    /// Policy generations to recompile and publish during the run.
    #[arg(long, default_value_t = 0)]
    reloads: u32,
    /// Members of the scenario (default: the scenario's own count).
    #[arg(long)]
    members: Option<u32>,
    /// Shape every member by its plan (the scenario's plans).
    #[arg(long)]
    shaping: bool,
    /// Measure the pair's state sync instead: a full resync of the
    /// scenario's flows to a box that joins, over loopback UDP, and the CPU
    /// cost per change reported (docs/pair.md).
    #[arg(long)]
    sync: bool,
    /// With --sync: the largest datagram on the sync link, in bytes (1452
    /// for a 1500-byte MTU; up to 8952 with jumbo frames).
    #[arg(long, default_value_t = 1452)]
    sync_datagram: usize,
    /// With --shaping: the uplink's capacity per direction in Mbit/s (0: unlimited).
    #[arg(long, default_value_t = 0)]
    uplink_mbit: u64,
    /// Which flows the packets belong to: `uniform` (any flow, cold: the
    /// worst case) or `realistic` (trains of 8 packets a flow on average,
    /// flows popular by a Zipf law).
    #[arg(long, value_enum, default_value_t = torwart::scenario::Locality::Uniform)]
    locality: torwart::scenario::Locality,
    /// Run through the live dataplane's workers: frames arrive spread over
    /// the workers regardless of member and are handed to the owner.
    #[arg(long)]
    dataplane: bool,
    /// With --dataplane: serve the API while the workers run, and scrape
    /// /metrics, status and members every second.
    #[arg(long, requires = "dataplane")]
    scrape: bool,
    /// The workers bypass the engine: the floor of their loop (I/O,
    /// handoff, egress), which the engine's work comes on top of.
    #[arg(long, conflicts_with_all = ["sync", "shaping", "reloads"])]
    null_engine: bool,
    /// With --dataplane: each worker's ports play only its own members'
    /// traffic, so no frame is handed over (steering still runs): the
    /// reference for what the handoff costs.
    #[arg(long, requires = "dataplane")]
    no_handoff: bool,
    /// With --dataplane: each core runs a dataplane of its own with one
    /// worker and its own members' traffic (no steering, nothing shared):
    /// the ceiling for the workers' scaling, measured the same way.
    #[arg(long, requires = "dataplane", conflicts_with_all = ["no_handoff", "scrape"])]
    independent: bool,
}

#[derive(Subcommand, Debug)]
enum DbCommand {
    /// Creates the schema (docs/members.md); harmless on an existing database.
    Init {
        #[arg(long, default_value = DEFAULT_DB)]
        db: String,
    },
    /// Loads members from a JSON file or a folder of CSV files (one per table),
    /// after checking them; an invalid import changes nothing.
    Import {
        /// The JSON file or CSV folder.
        source: PathBuf,
        #[arg(long, default_value = DEFAULT_DB)]
        db: String,
    },
    /// Validates the database and explains every problem with the row it is in.
    Check {
        #[arg(long, default_value = DEFAULT_DB)]
        db: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The database, its journal, the stats file, the usage spool, the lab's
    // files and replay's captures hold member traffic and usage: nothing
    // any command creates is readable by others.
    // SAFETY: umask only sets the process's file mode mask.
    unsafe { libc::umask(0o027) };
    if let Command::Run { config, check: true, .. } = &cli.command {
        // What the start would only log (the locked-memory limit), on stderr.
        if std::env::var_os("TORWART_LOG").is_none() {
            std::env::set_var("TORWART_LOG", "warn");
        }
        control::logging::init();
        return match control::daemon::check(config) {
            Ok(report) => {
                print!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("torwart: {}", printable(&e.to_string()));
                ExitCode::from(e.exit_code())
            }
        };
    }
    if let Command::Run { config, bench_null_engine, .. } = &cli.command {
        control::logging::init();
        let run = if *bench_null_engine { control::daemon::run_null_engine } else { control::daemon::run };
        return match run(config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("torwart: {}", printable(&e.to_string()));
                ExitCode::from(e.exit_code())
            }
        };
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("torwart: {}", printable(&e.to_string()));
            ExitCode::FAILURE
        }
    }
}

/// A message for the terminal: its lines as they are, every other control
/// character (an escape sequence in a member's name) escaped.
fn printable(message: &str) -> String {
    message.split('\n').map(|line| control::logging::escape_controls(line).into_owned()).collect::<Vec<_>>().join("\n")
}

fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Run { .. } => unreachable!("handled in main"),
        Command::Lab(args) => lab(args),
        Command::Replay(args) => replay_command(args),
        Command::Db { command } => db(command),
        Command::Bench(args) => bench_command(args),
        Command::Status { api, json } => cli::status(&cli::Client::new(&api.socket), json).map_err(client),
        Command::Top { api, sort, interval } => {
            check_sort(&sort)?;
            cli::top(&cli::Client::new(&api.socket), sort, interval).map_err(client)
        }
        Command::Members { api, sort, limit, json } => {
            check_sort(&sort)?;
            cli::members(&cli::Client::new(&api.socket), &sort, limit, json).map_err(client)
        }
        Command::Flows { api, member, address, port, protocol, state, limit, json } => {
            let mut q = vec![format!("limit={limit}")];
            q.extend(member.map(|m| format!("member={m}")));
            q.extend(address.map(|a| format!("address={a}")));
            q.extend(port.map(|p| format!("port={p}")));
            for (k, v) in [("protocol", protocol), ("state", state)] {
                if let Some(v) = v {
                    if !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                        return Err(Error::Usage(format!("--{k} {v}: letters, digits and _ only")));
                    }
                    q.push(format!("{k}={v}"));
                }
            }
            cli::flows(&cli::Client::new(&api.socket), &q.join("&"), json).map_err(client)
        }
        Command::Reload { api } => cli::reload(&cli::Client::new(&api.socket)).map_err(client),
        Command::Man { dir } => {
            let pages = torwart::man::write(<Cli as clap::CommandFactory>::command(), &dir)
                .map_err(|source| Error::File { op: "write manual pages into", path: dir, source })?;
            pages.iter().for_each(|p| println!("{}", p.display()));
            Ok(())
        }
        Command::SyncKey => {
            let text = control::pair::new_key_file().map_err(|e| Error::Usage(format!("sync-key: {e}")))?;
            print!("{text}");
            Ok(())
        }
    }
}

fn client(e: cli::ClientError) -> Error {
    Error::Usage(e.to_string())
}

fn check_sort(sort: &str) -> Result<(), Error> {
    match sort {
        "rate" | "usage" | "id" => Ok(()),
        other => Err(Error::Usage(format!("--sort {other}: give rate, usage or id"))),
    }
}

fn lab(
    LabArgs { backend, dir, iperf_seconds, json, idle, keep, pair, pair_flows, attack, full, soak_seconds, page_port }: LabArgs,
) -> Result<(), Error> {
    if !["sleep", "busy"].contains(&idle.as_str()) {
        return Err(Error::Usage(format!("--idle {idle}: give sleep or busy")));
    }
    if !["xdp", "af_packet"].contains(&backend.as_str()) {
        return Err(Error::Usage(format!("--backend {backend}: give xdp or af_packet")));
    }
    if let Some(s) = soak_seconds.filter(|s| !(s.is_finite() && *s >= 1.0 && *s <= 86_400.0)) {
        return Err(Error::Usage(format!("--soak-seconds {s}: give a number of seconds from 1 to 86400")));
    }
    torwart::lab::preflight(!json).map_err(Error::Usage)?;
    let interrupted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let _ = signal_hook::flag::register(sig, std::sync::Arc::clone(&interrupted));
    }
    let torwart = std::env::current_exe().map_err(|e| Error::Usage(e.to_string()))?;
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    if attack {
        let opts = torwart::lab::attack::AttackOptions {
            torwart,
            prefix: "twla-".into(),
            dir,
            full,
            soak_seconds,
            verbose: !json,
        };
        let report = torwart::lab::attack::run(&opts, &interrupted).map_err(|e| Error::Usage(format!("lab: {e}")))?;
        if json {
            println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
        } else {
            torwart::lab::attack::print(&report);
        }
        return if report.passed() { Ok(()) } else { Err(Error::Usage("lab --attack: some checks failed".into())) };
    }
    if pair {
        let opts = torwart::lab::pair::PairOptions {
            torwart,
            prefix: "twlp-".into(),
            dir,
            chatty: 50,
            idle: 200,
            bulk: pair_flows,
            verbose: !json,
        };
        let report = torwart::lab::pair::run(&opts, &interrupted).map_err(|e| Error::Usage(format!("lab: {e}")))?;
        if json {
            println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
        } else {
            torwart::lab::pair::print(&report);
        }
        return if report.passed() { Ok(()) } else { Err(Error::Usage("lab --pair: some checks failed".into())) };
    }
    let opts = torwart::lab::Options {
        torwart,
        prefix: "twl-".into(),
        dir,
        backend,
        iperf_seconds,
        idle,
        verbose: !json,
        keep,
        page_port,
    };
    let report = torwart::lab::run(&opts, &interrupted).map_err(|e| Error::Usage(format!("lab: {e}")))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        torwart::lab::print(&report);
    }
    if !report.passed() {
        return Err(Error::Usage("lab: some checks failed".into()));
    }
    Ok(())
}

fn replay_command(
    ReplayArgs {
        inside,
        outside,
        out_dir,
        json,
        max_flows,
        established_timeout,
        strict_tcp,
        seed,
        workers,
        shaping,
        routes,
        db,
        record_usage,
    }: ReplayArgs,
) -> Result<(), Error> {
    let mut opts = replay::options(inside.as_deref(), outside.as_deref(), &out_dir, seed);
    if inside.is_none() && outside.is_none() {
        if !json {
            println!("no --inside/--outside given: replaying the embedded demonstration capture");
        }
        opts.inside = Input::Bytes("demo/inside.pcap", replay::DEMO_INSIDE);
        opts.outside = Input::Bytes("demo/outside.pcap", replay::DEMO_OUTSIDE);
    }
    if max_flows == 0 || max_flows > engine::MAX_FLOWS {
        let gib = engine::Config::flow_memory(max_flows) as f64 / f64::from(1u32 << 30);
        return Err(Error::Usage(format!(
            "--max-flows {max_flows}: give 1 to {} (this figure would take {gib:.1} GiB)",
            engine::MAX_FLOWS
        )));
    }
    if !(1..=64).contains(&workers) {
        return Err(Error::Usage(format!("--workers {workers}: give 1 to 64")));
    }
    opts.workers = workers;
    if let Some(path) = &routes {
        opts.routes = Some(control::routes::StaticRoutes::load(path)?);
    }
    if shaping {
        opts.shaping = Some(replay::shaping(workers));
    }
    opts.engine.max_flows = max_flows;
    opts.engine.timeouts.tcp_established = established_timeout;
    opts.engine.tcp_loose = !strict_tcp;
    if let Some(url) = &db {
        let members = torwart::block_on(async {
            let d = control::db::Database::open(url).await?;
            let m = d.load().await;
            d.close().await;
            m
        })?;
        let compiled = policy::compile(&members, 1).map_err(|e| {
            Error::Usage(format!("the member database {} is not valid:\n{e}", control::db::redacted(url)))
        })?;
        opts.policy = Some(std::sync::Arc::new(compiled));
    }
    let report = replay::run(&opts)?;
    if record_usage && inside.is_none() && outside.is_none() {
        return Err(Error::Usage(
            "--record-usage needs real captures (--inside/--outside): the demonstration is not anyone's usage".into(),
        ));
    }
    if let (true, Some(url)) = (record_usage, &db) {
        record_usage_of(&report, url, json)?;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report).expect("report serialises"));
    } else {
        replay::print(&report);
    }
    Ok(())
}

/// `replay --record-usage`: books the replay's usage per member into the
/// database's hourly period of the capture, as the daemon would.
fn record_usage_of(report: &replay::Report, url: &str, json: bool) -> Result<(), Error> {
    let hour = control::ledger::Periods::HOURLY;
    let first = (report.first_ts_ns / 1_000_000_000) as i64;
    let last = (report.last_ts_ns / 1_000_000_000) as i64;
    if hour.start(first) != hour.start(last) {
        return Err(Error::Usage(format!(
            "--record-usage books a capture into one hourly period, and this one spans {first}..{last} \
             (Unix seconds): split it by hour"
        )));
    }
    let totals = &report.members;
    let when = (report.last_ts_ns / 1_000_000_000) as i64;
    let n = torwart::block_on(async {
        let d = control::db::Database::open(url).await?;
        let mut ledger = control::ledger::Ledger::new();
        let n = ledger.flush(&d, control::ledger::Periods::HOURLY, when, totals).await;
        d.close().await;
        n
    })?;
    if !json {
        println!("recorded usage of {n} members in {}", control::db::redacted(url));
    }
    Ok(())
}

/// `top --interval`: at least 100 ms (the daemon publishes four times a
/// second; faster would only ask it again and again), at most an hour.
fn refresh_interval(text: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if !(std::time::Duration::from_millis(100)..=std::time::Duration::from_secs(3600)).contains(&d) {
        return Err(format!("{text}: give 100ms to 1h"));
    }
    Ok(d)
}

fn bench_command(a: BenchArgs) -> Result<(), Error> {
    let Some(p) = scenario::by_name(&a.scenario) else {
        let names: Vec<_> = scenario::SCENARIOS.iter().map(|s| s.name).collect();
        return Err(Error::Usage(format!("unknown scenario {:?} (known: {})", a.scenario, names.join(", "))));
    };
    if !(1..=engine::MAX_BATCH).contains(&a.batch) {
        return Err(Error::Usage(format!("--batch must be 1 to {}", engine::MAX_BATCH)));
    }
    let bounded = |x: f64, lo: f64, hi: f64| x.is_finite() && x >= lo && x <= hi;
    if !bounded(a.seconds, 0.01, 86_400.0) {
        return Err(Error::Usage("--seconds must be between 0.01 and 86400".into()));
    }
    if !bounded(a.offered_mpps, 0.001, 1000.0) {
        return Err(Error::Usage("--offered-mpps must be between 0.001 and 1000".into()));
    }
    if !bounded(a.flow_scale, 0.000_01, 10.0) {
        return Err(Error::Usage("--flow-scale must be between 0.00001 and 10".into()));
    }
    let mut p = p.clone();
    if let Some(m) = a.members {
        if !(1..=2_000_000).contains(&m) {
            return Err(Error::Usage("--members must be between 1 and 2000000".into()));
        }
        p.members = m;
    }
    if a.sync {
        let flows = ((f64::from(p.flows) * a.flow_scale) as usize).max(1);
        if !(256..=sync::message::MAX_LEN).contains(&a.sync_datagram) {
            return Err(Error::Usage(format!("--sync-datagram must be 256 to {}", sync::message::MAX_LEN)));
        }
        let r = torwart::syncbench::run(&p, flows, a.seed, a.sync_datagram).map_err(Error::Usage)?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
        } else {
            torwart::syncbench::print(&r);
        }
        return Ok(());
    }
    if a.shaping && a.no_members {
        return Err(Error::Usage("--shaping shapes members: it needs the member pipeline (drop --no-members)".into()));
    }
    if a.cores == 0 || a.cores > 1024 || a.cores as u32 > p.members {
        return Err(Error::Usage(format!(
            "--cores must be between 1 and {} (at least one member per core)",
            p.members.min(1024)
        )));
    }
    if a.reloads > 10_000 {
        return Err(Error::Usage("--reloads must be at most 10000".into()));
    }
    let uplink_bps = if a.uplink_mbit == 0 { u64::MAX / 4 } else { a.uplink_mbit.saturating_mul(1_000_000) };
    let opts = bench::Options {
        scenario: p,
        locality: a.locality,
        seed: a.seed,
        cores: a.cores,
        seconds: a.seconds,
        batch: a.batch,
        offered_mpps: a.offered_mpps,
        flow_scale: a.flow_scale,
        progress: true,
        members: !a.no_members,
        reloads: a.reloads,
        shaping: a.shaping.then_some(uplink_bps),
        dataplane: a.dataplane,
        scrape: a.scrape,
        null_engine: a.null_engine,
        no_handoff: a.no_handoff,
        independent: a.independent,
    };
    let report = bench::run(&opts);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report).expect("report serialises"));
    } else {
        bench::print(&report);
    }
    Ok(())
}

fn db(command: DbCommand) -> Result<(), Error> {
    use control::db::{CheckReport, Database};
    torwart::block_on(async {
        match command {
            DbCommand::Init { db } => {
                let d = Database::open_or_create(&db).await?;
                d.init().await?;
                println!("initialised the member database {}", d.url());
                d.close().await;
            }
            DbCommand::Import { source, db } => {
                let d = Database::open(&db).await?;
                let report = d.import(&source).await?;
                println!("{report}");
                d.close().await;
            }
            DbCommand::Check { db } => {
                let d = Database::open(&db).await?;
                let report = d.check().await?;
                d.close().await;
                match report {
                    CheckReport::Valid(_) => println!("{report}"),
                    CheckReport::Invalid(e) => return Err(Error::Usage(e.to_string())),
                }
            }
        }
        Ok(())
    })
}
