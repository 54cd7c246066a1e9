//! `torwart run`: the daemon.
//!
//! Start, in order, each step failing with a message that names what is
//! wrong and an exit code per kind of failure ([`Failure`]):
//! 1. the configuration (file, fields);
//! 2. the signals: SIGTERM/SIGINT stop, a second one forces the exit;
//! 3. the ports: interfaces exist, we are root, the kernel does not forward
//!    (it would carry what torwart's policy refused past it);
//! 4. the member database (reachable, valid): the first policy; a usage
//!    spool left by an earlier stop is written to it;
//! 5. the route mirror (rtnetlink), whose tables the workers read;
//! 6. the ports' XDP programs and sockets (or AF_PACKET), and the workers.
//!
//! Then, until SIGTERM or SIGINT: reload on database change (and on
//! SIGHUP); an unreachable database or an invalid change keeps the running
//! policy, is logged, and the watch is retried; the box's own addresses are
//! kept in the XDP programs' pass-to-kernel map as the kernel's change;
//! usage is written to the database every `accounting.flush_interval`; a
//! port whose interface disappears is logged and counted, and when it is
//! back the workers start again on it, with their engines (flows, NAT,
//! accounts) kept; a stats file and a log line are written every so often.
//!
//! Stop: the workers stop receiving, drain and publish their final
//! counters; the usage is written one last time, retried until
//! [`STOP_FLUSH_DEADLINE`], else spooled ([`crate::spool`]) and the exit is
//! non-zero; the database is closed; exit 0.
//!
//! Everything is logged through `tracing` ([`crate::logging`]: one line per
//! event, control characters escaped).

use crate::config::{Backend, Checked, Config, ConfigError, IdleMode, PortSide, XdpMode};
use crate::db::{Database, DbError, WatchOptions};
use crate::files;
use crate::ledger::{Ledger, Periods};
use crate::reload::{Published, Reloader};
use crate::spool::{Spool, SpoolError};
use crate::stats::{ProgramDrops, Stats};
use crate::sys::unix_now;
use dataplane::{
    Dataplane, DataplaneCounters, Egress, Idle, PortQueue, Totals, WorkerConfig, WorkerSetup, WorkerStats,
};
use engine::Side;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the last usage flush at a stop is retried before the usage is spooled.
pub const STOP_FLUSH_DEADLINE: Duration = Duration::from_secs(10);

/// The longest a periodic database write (a usage flush, the spool, the
/// other box's usage) may hold the control loop: a database that went
/// away without a word (a partition) must not stop the stats, the API's
/// figures, the port watch or a SIGTERM for the minutes TCP takes to give up.
pub const DB_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest a reload (read, compile, publish) may take: far above a
/// campus's (a second or two), far below TCP's patience.
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// After a periodic flush failed, the next is tried this much later.
pub const FLUSH_RETRY: Duration = Duration::from_secs(10);

/// Why the daemon could not start or had to stop. A failure keeps the
/// error it comes from as its source; the exit code tells the kind.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The configuration file cannot be read or is not valid.
    #[error(transparent)]
    ConfigFile(#[from] ConfigError),
    /// A setting this system or this build refuses, found at start.
    #[error("{0}")]
    Config(String),
    /// A port's interface does not exist.
    #[error("port {port}: no such network interface (ports[].interface in the configuration)")]
    NoInterface { port: String },
    /// A port's interface carries frames longer than torwart takes.
    #[error(
        "port {port}: MTU {mtu}, but torwart takes frames of at most {largest} bytes (with the Ethernet header \
         and a VLAN tag: an MTU of at most {}); longer frames would be dropped: set the interface's MTU \
         (ip link set dev {port} mtu 1500)",
        largest - FRAME_OVERHEAD
    )]
    PortMtu { port: String, mtu: usize, largest: usize },
    /// A port cannot be set up (XDP program, socket); `hint` says what to check.
    #[error("{source}{}", hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default())]
    Port {
        #[source]
        source: io::IoError,
        hint: Option<String>,
    },
    /// The process lacks capabilities the ports need (`missing`, by name).
    #[error(
        "torwart run lacks {} (the {backend} backend needs {}): run it as root, or give it these capabilities as \
         the packaged unit does (docs/packaging.md)",
        missing.join(", "),
        needed.join(", ")
    )]
    MissingCapabilities { backend: &'static str, needed: Vec<&'static str>, missing: Vec<&'static str> },
    /// The member database cannot be opened, read or compiled at start.
    #[error("member database: {0}")]
    Database(#[source] Box<DbError>),
    /// At the stop, usage the database did not take went to the spool.
    #[error(
        "usage of {members} member(s) not written to the database ({cause}); kept in {}, written at the next start",
        path.display()
    )]
    UsageSpooled {
        members: usize,
        path: PathBuf,
        #[source]
        cause: FlushError,
    },
    /// As [`UsageSpooled`](Failure::UsageSpooled), to a file beside an unusable spool.
    #[error(
        "usage of {members} member(s) not written to the database ({cause}); kept in {} because the spool {} is \
         unusable (in /run/torwart, the next start writes it, until a reboot; elsewhere, move it to the spool's \
         place)",
        path.display(),
        spool.display()
    )]
    UsageBesideSpool {
        members: usize,
        path: PathBuf,
        spool: PathBuf,
        #[source]
        cause: FlushError,
    },
    /// At the stop, usage neither the database nor the spool took.
    #[error("usage of {members} member(s) LOST: not written to the database ({cause}), nor to the spool ({spool})")]
    UsageLost {
        members: usize,
        #[source]
        cause: FlushError,
        spool: Box<SpoolError>,
    },
    /// The system refused what the daemon needs: `doing` says what that was.
    #[error("{doing}: {source}")]
    System {
        doing: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Why the last flush of usage at a stop did not reach the database.
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    #[error(transparent)]
    Database(Box<DbError>),
    #[error("no answer within {} s", STOP_FLUSH_DEADLINE.as_secs())]
    NoAnswer,
}

impl Failure {
    /// Exit codes: 2 configuration, 3 port, 4 permission, 5 database, 6 other system error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::ConfigFile(_) | Failure::Config(_) => 2,
            Failure::Port { source, .. } if source.is_permission_denied() => 4,
            Failure::NoInterface { .. } | Failure::PortMtu { .. } | Failure::Port { .. } => 3,
            Failure::MissingCapabilities { .. } => 4,
            Failure::Database(_)
            | Failure::UsageSpooled { .. }
            | Failure::UsageBesideSpool { .. }
            | Failure::UsageLost { .. } => 5,
            Failure::System { .. } => 6,
        }
    }

    /// A [`Failure::System`]: `doing` failed for `source`.
    pub fn system(doing: impl Into<String>, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Failure {
        Failure::System { doing: doing.into(), source: source.into() }
    }

    /// The API's start refused: the token file is the operator's to fix,
    /// like the configuration; the rest is the system's.
    fn api(e: crate::api::ApiError) -> Failure {
        match e {
            crate::api::ApiError::Token { .. } => Failure::Config(e.to_string()),
            e => Failure::system("cannot serve the API", e),
        }
    }

    fn database(source: DbError) -> Failure {
        Failure::Database(Box::new(source))
    }

    /// A [`Failure::Port`] from `source`, with `hint` unless the system
    /// refused for want of a privilege (then the hint is beside the point).
    fn port(source: io::IoError, hint: Option<String>) -> Failure {
        let hint = hint.filter(|_| !source.is_permission_denied());
        Failure::Port { source, hint }
    }
}

/// Runs the daemon with the configuration at `path` until SIGTERM/SIGINT.
pub fn run(path: &Path) -> Result<(), Failure> {
    // First of all: a SIGHUP (`systemctl reload`) that came while the
    // configuration loads would otherwise end the process, and systemd
    // counts that a clean exit, not to be restarted.
    let signals = Signals::install()?;
    let (config, checked) = Config::load(path)?;
    warn_of_a_shown_password(path, &config.database);
    run_config(config, checked, signals)
}

/// `torwart run --check`: what `torwart run` checks before it changes
/// anything, in the same order and with the same errors (and exit codes),
/// without changing anything: the configuration, the ports (they exist,
/// their MTUs), the privileges, the kernel's forwarding, the member
/// database (it opens, read-only, and its policy compiles), the API's
/// token file, socket and address, the pair's key file and address. No
/// port is attached, no socket left bound, no file written; safe beside a
/// running daemon (an address or socket it holds counts as free). Not
/// checked: whether the XDP program attaches to the ports' drivers. What
/// an operator runs after editing the file and before `systemctl restart
/// torwart`, which would otherwise find a mistake by taking the gateway
/// down. Returns the report to print.
pub fn check(path: &Path) -> Result<String, Failure> {
    use std::fmt::Write;
    let (config, checked) = Config::load(path)?;
    let mut report = format!("configuration  {}: valid\n", path.display());
    let mut warnings = Vec::new();
    {
        use std::os::unix::fs::MetadataExt;
        let mode = std::fs::metadata(path).map(|m| m.mode()).unwrap_or(0);
        warnings.extend(shown_password(path, &config.database, mode));
    }
    find_ports(&config)?;
    check_port_mtus(&config, &checked)?;
    let ports: Vec<String> = config
        .ports
        .iter()
        .map(|p| {
            let side = if p.side == PortSide::Inside { "inside" } else { "outside" };
            let mtu = io::interface_mtu(&p.interface).map_or_else(|_| "MTU unknown".into(), |m| format!("MTU {m}"));
            format!("{side} {} ({mtu})", p.interface)
        })
        .collect();
    let backend = match config.io.backend {
        Backend::Xdp => "xdp",
        Backend::AfPacket => "af_packet",
    };
    let _ = writeln!(report, "ports          {}; backend {backend}, {} worker(s)", ports.join(", "), checked.workers);
    if config.io.backend == Backend::Xdp {
        warnings.extend(config.ports.iter().filter_map(|p| unserved_queues(&p.interface, checked.workers)));
    }
    require_capabilities(&config)?;
    let _ = writeln!(report, "privileges     held here for the {backend} backend (the unit grants the daemon its own)");
    check_kernel_forwarding(&config)?;
    let _ = writeln!(report, "forwarding     off in the kernel (torwart forwards)");

    // The database, as Control::start opens it (read-only here). A root
    // shell lacks the unit's PGPASSFILE: the unit's file is used if there.
    let postgres = config.sqlite_file().is_none();
    let pgpass = std::env::var_os("PGPASSFILE").map(PathBuf::from).or_else(|| {
        let unit = Path::new(UNIT_PGPASSFILE);
        postgres.then_some(unit).filter(|p| p.exists()).map(|p| {
            // Still one thread: the runtime that reads it starts below.
            std::env::set_var("PGPASSFILE", p);
            p.to_owned()
        })
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::system("cannot start the control runtime", e))?;
    let (url, summary) = runtime
        .block_on(async {
            let db = Database::open_read_only(&config.database).await?;
            let report = db.check().await;
            let url = db.url().to_owned();
            db.close().await;
            match report? {
                crate::db::CheckReport::Valid(summary) => Ok((url, summary)),
                crate::db::CheckReport::Invalid(e) => Err(DbError::Invalid(e)),
            }
        })
        .map_err(|e| {
            // Still a failure: what a start would fall back on is named.
            if let Some(path) = config.last_good_path().filter(|p| p.exists()) {
                let usable = crate::db::read_last_good(&path)
                    .and_then(|m| policy::compile(&m, 1).map_err(DbError::Invalid).map(|_| ()));
                match usable {
                    Ok(()) => tracing::warn!(
                        "a start would forward with the last good member database {} until the database gives a \
                         policy",
                        path.display()
                    ),
                    Err(le) => tracing::warn!("a start could not fall back on the last good member database: {le}"),
                }
            }
            Failure::database(e)
        })?;
    let _ = writeln!(report, "database       {url}: {summary}; the policy compiles");

    // The API, as its start: the token file, the socket, the address. One
    // that the running daemon holds is free for the daemon that replaces it.
    crate::api::check_token(&config.api).map_err(Failure::api)?;
    let running = crate::api::check_socket(&config.api.socket).map_err(Failure::api)?;
    let mut api = Vec::new();
    if let Some(addr) = checked.api_listen {
        let free = held_or_free(std::net::TcpListener::bind(addr).map(drop), running, &mut warnings)
            .map_err(|e| Failure::system("cannot serve the API", e))?;
        let token = if config.api.token_file.is_some() { ", token file read" } else { "" };
        api.push(format!("http://{addr}/{token}{free}"));
    }
    if !config.api.socket.as_os_str().is_empty() {
        let held = if running { " (the running daemon's)" } else { "" };
        api.push(format!("socket {}{held}", config.api.socket.display()));
    }
    let _ = writeln!(report, "api            {}", if api.is_empty() { "none".into() } else { api.join(", ") });
    if let Some(pair) = &checked.pair {
        crate::pair::load_keys(&pair.key_file).map_err(Failure::Config)?;
        let free = held_or_free(std::net::UdpSocket::bind(pair.local).map(drop), running, &mut warnings)
            .map_err(|e| Failure::system(format!("sync link {} → {}", pair.local, pair.peer), e))?;
        let _ = writeln!(
            report,
            "pair           this box {}{free}, the other {}; key file {} read",
            pair.local,
            pair.peer,
            pair.key_file.display()
        );
    }

    // Run as root, what the unit's user could not open: root opens all.
    let mut needs: Vec<(&Path, Need)> = vec![(path, Need::Read)];
    needs.extend(config.api.token_file.as_deref().map(|p| (p, Need::Read)));
    needs.extend(checked.pair.as_ref().map(|p| (p.key_file.as_path(), Need::Read)));
    needs.extend(pgpass.as_deref().map(|p| (p, Need::Read)));
    let sqlite = config.sqlite_file();
    needs.extend(sqlite.as_deref().map(|p| (p, Need::ReadWrite)));
    let sqlite_dir =
        sqlite.as_deref().map(|p| p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")));
    needs.extend(sqlite_dir.map(|d| (d, Need::WriteDir)));
    let (refused, cannot_write) = service_user_cannot(SERVICE_USER, &needs);
    if let Some(first) = refused.first() {
        return Err(Failure::Config(format!(
            "{first}{}",
            if refused.len() > 1 {
                format!(" (and {} more: {})", refused.len() - 1, refused[1..].join("; "))
            } else {
                String::new()
            }
        )));
    }
    warnings.extend(cannot_write);
    for w in &warnings {
        let _ = writeln!(report, "warning        {w}");
    }
    report.push_str(if warnings.is_empty() {
        "torwart run would start with this (nothing was changed: no port attached, no file written)\n"
    } else {
        "torwart run would start with this, but see the warnings (nothing was changed)\n"
    });
    Ok(report)
}

/// What is wrong when `ifname` has more receive queues than there are
/// workers (AF_XDP serves queue `w` with worker `w`), if it has.
fn unserved_queues(ifname: &str, workers: usize) -> Option<String> {
    let rx_queues = io::xdp::rx_queue_count(ifname) as usize;
    (rx_queues > workers).then(|| {
        format!(
            "port {ifname}: {rx_queues} receive queues but {workers} worker(s): transit frames arriving on queues \
             {workers} to {} are dropped and counted (xdp_unserved); set workers.count = {rx_queues}, or \
             `ethtool -L {ifname} combined {workers}` (kept across reboots by a systemd .link file with \
             CombinedChannels={workers}, docs/packaging.md)",
            rx_queues - 1
        )
    })
}

/// The PGPASSFILE the package's unit sets.
const UNIT_PGPASSFILE: &str = "/etc/torwart/pgpass";

/// A bind's outcome, for the report: free; held by the running daemon
/// (`running`: its API socket answers), which a restart frees; in use by
/// something the check cannot name (a warning: the running daemon without
/// an API socket, or a start would fail). Any other refusal (an address
/// not on this box, a port that needs a privilege) is the start's.
fn held_or_free(
    bound: std::io::Result<()>,
    running: bool,
    warnings: &mut Vec<String>,
) -> std::io::Result<&'static str> {
    match bound {
        Ok(()) => Ok(""),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && running => Ok(" (the running daemon's)"),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            warnings.push(
                "an address above is in use now, and no daemon answers on the API socket: if it is not \
                           torwart's own, a start fails"
                    .into(),
            );
            Ok(" (in use now)")
        }
        Err(e) => Err(e),
    }
}

/// The user the package's unit runs the daemon as.
const SERVICE_USER: &str = "torwart";

/// What the daemon must be able to do with a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Need {
    Read,
    /// The SQLite database: read to start, write to record usage.
    ReadWrite,
    /// The SQLite database's directory: SQLite makes its journal there.
    WriteDir,
}

/// When the check runs as root and `user` exists: the files of `needs`
/// that `user` could not read (the start would fail), and those it could
/// read but not write (usage could not be recorded). Root may open every
/// file, so a check as root alone would pass a key file only root may
/// read, or an SQLite database that root made, where the daemon, run by
/// the unit as `user`, fails. Judged from the owner, group and mode of
/// each file and the directories above it (the user's primary group only).
fn service_user_cannot(user: &str, needs: &[(&Path, Need)]) -> (Vec<String>, Vec<String>) {
    let (mut refused, mut cannot_write) = (Vec::new(), Vec::new());
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return (refused, cannot_write);
    }
    let Some(ids) = user_ids(user) else { return (refused, cannot_write) };
    for &(path, need) in needs {
        let Ok(path) = std::fs::canonicalize(path) else { continue };
        let blocked = path.ancestors().skip(1).find(|d| !may(ids, d, 0o1)).map(Path::to_owned);
        let (read, write) = match need {
            Need::Read => (0o4, 0),
            Need::ReadWrite => (0o4, 0o2),
            Need::WriteDir => (0o1, 0o2),
        };
        let shown = describe(&path);
        if let Some(d) = blocked {
            refused.push(format!(
                "{}: the daemon, run as {user} by the unit, may not reach it: the directory {} ({}) does not let {user} through",
                path.display(),
                d.display(),
                describe(&d)
            ));
        } else if !may(ids, &path, read) {
            refused.push(format!(
                "{}: the daemon, run as {user} by the unit, may not read it ({shown}); chown {user}",
                path.display()
            ));
        } else if write != 0 && !may(ids, &path, write) {
            cannot_write.push(format!(
                "{}: the daemon, run as {user} by the unit, may not write it ({shown}): usage would not be recorded; chown {user}",
                path.display()
            ));
        }
    }
    (refused, cannot_write)
}

/// Whether `ids` (uid, primary gid) may do `bits` (r 4, w 2, x 1) to `path`.
fn may(ids: (u32, u32), path: &Path, bits: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(path) else { return false };
    let shift = if meta.uid() == ids.0 {
        6
    } else if meta.gid() == ids.1 {
        3
    } else {
        0
    };
    (meta.mode() >> shift) & bits == bits
}

/// Owner, group and mode, for a message.
fn describe(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map_or_else(
        |e| e.to_string(),
        |m| format!("owner uid {}, group gid {}, mode {:o}", m.uid(), m.gid(), m.mode() & 0o7777),
    )
}

/// The uid and primary gid of `user`, if it exists.
fn user_ids(user: &str) -> Option<(u32, u32)> {
    let name = std::ffi::CString::new(user).ok()?;
    // SAFETY: `passwd` is plain data (integers and pointers), for which
    // all zeroes is a valid value; getpwnam_r fills it.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call, `buf` its stated length;
    // getpwnam_r writes only into `pwd`, `buf` and `found`.
    let rc = unsafe { libc::getpwnam_r(name.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found) };
    (rc == 0 && !found.is_null()).then_some((pwd.pw_uid, pwd.pw_gid))
}

/// Warns when the configuration file holds the database's password and
/// others than its owner may read it ([`shown_password`]).
fn warn_of_a_shown_password(path: &Path, database: &str) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(path) else { return };
    if let Some(warning) = shown_password(path, database, meta.mode()) {
        tracing::warn!("{warning}");
    }
}

/// What to say when the configuration file at `path`, of `mode`, holds
/// the database's password and others than its owner may read it: the
/// packaged file is `root:torwart` 0640, and the group is the operators
/// who may read usage, not write the member database. A pgpass file
/// (`PGPASSFILE`) keeps the password apart.
fn shown_password(path: &Path, database: &str, mode: u32) -> Option<String> {
    (crate::db::redacted(database) != database && mode & 0o077 != 0).then(|| {
        format!(
            "{}: the database URL holds a password, and the file's mode {:o} lets others than its owner read it \
             (the group torwart is the operators who may read usage); put the password in a pgpass file, mode 600, \
             named by PGPASSFILE (docs/members.md)",
            path.display(),
            mode & 0o777
        )
    })
}

/// Benchmarks only: the daemon with the engine bypassed (`torwart run
/// --bench-null-engine`), to measure the I/O floor that everything the
/// engine does comes on top of. Every transit frame is forwarded unexamined:
/// no firewall, NAT, accounting or shaping.
pub fn run_null_engine(path: &Path) -> Result<(), Failure> {
    let signals = Signals::install()?;
    let (config, mut checked) = Config::load(path)?;
    checked.null_engine = true;
    tracing::warn!(
        "benchmark mode (--bench-null-engine): the engine is bypassed, every transit frame is forwarded unexamined; \
         no firewall, NAT, accounting or shaping"
    );
    run_config(config, checked, signals)
}

fn run_config(config: Config, checked: Checked, signals: Signals) -> Result<(), Failure> {
    if let Some(pair) = &checked.pair {
        crate::pair::mark_not_ready(pair);
    }
    let mut ports = find_ports(&config)?;
    check_port_mtus(&config, &checked)?;
    ports.largest_mtu = largest_frame(&config, &checked) - FRAME_OVERHEAD;
    require_capabilities(&config)?;
    check_kernel_forwarding(&config)?;
    let control = Control::start(&config, &checked)?;
    replay_spool(&control, "at start");
    let mirror = crate::mirror::Mirror::start(crate::mirror::MirrorConfig {
        ports: config.ports.iter().map(|p| p.interface.clone()).collect(),
        ..Default::default()
    })
    .map_err(|e| Failure::system("cannot mirror the kernel's routes", e))?;
    let plan = WorkerPlan::new(&config, &checked);
    let pair = start_pair(&checked)?;
    ports.attached_now();
    let first = Running::start(&config, &plan, &mirror, &control.published, &ports, pair.as_ref(), Vec::new());
    let running = first.map_err(|(e, _)| e)?;
    control.live.flows.store(Some(Arc::new(running.dp.flow_queries())));
    tracing::info!("running: {} worker(s), {} port(s)", plan.workers, config.ports.len());
    // Started under systemd (`Type=notify`): the start is done when the
    // workers are started on the first policy, and a reload (SIGHUP) waits for it.
    tell_systemd(sd_notify::NotifyState::Ready);
    let ledger = checked.pair.as_ref().map_or_else(Ledger::new, |p| Ledger::for_pair(p.local.to_string()));
    let mut daemon = Daemon {
        config,
        checked,
        plan,
        control,
        mirror,
        ports,
        running: Some(running),
        pair,
        shared_flush: None,
        pair_lost: false,
        orphans: Vec::new(),
        ledger,
        parked: Vec::new(),
        spare: Vec::new(),
        carried: DataplaneCounters::default(),
        carried_program_drops: ProgramDrops::default(),
        restarts: 0,
        flushes: [0; 2],
        last_restart_try: Instant::now(),
    };
    daemon.serve(&signals);
    daemon.stop()
}

/// The running daemon: what the main loop keeps between its rounds.
struct Daemon {
    config: Config,
    checked: Checked,
    plan: WorkerPlan,
    control: Control,
    mirror: crate::mirror::Mirror,
    ports: Ports,
    /// The workers, unless they are stopped for a restart.
    running: Option<Running>,
    /// The sync thread, if this box is one of a pair.
    pair: Option<crate::pair::Pair>,
    /// The last flush the other box was told of.
    shared_flush: Option<i64>,
    /// The sync thread's end was logged.
    pair_lost: bool,
    /// The other box's usage still to be written for it, each from when.
    orphans: Vec<(Instant, crate::pair::Orphaned)>,
    ledger: Ledger,
    /// The last stats of stopped workers, while none run: their usage is
    /// still to be flushed.
    parked: Vec<Arc<WorkerStats>>,
    /// Stopped workers' engines and generations, for the next start.
    spare: Vec<Option<dataplane::Kept>>,
    /// Dataplane counters of workers stopped for a restart.
    carried: DataplaneCounters,
    /// Frames the BPF programs of earlier starts dropped.
    carried_program_drops: ProgramDrops,
    restarts: u64,
    /// Periodic usage flushes `[written, failed]`.
    flushes: [u64; 2],
    last_restart_try: Instant,
}

impl Daemon {
    /// Until SIGTERM or SIGINT (or a worker's death): reloads on SIGHUP,
    /// follows the box's addresses and the ports, flushes usage, writes
    /// the stats file and the log line.
    fn serve(&mut self, signals: &Signals) {
        let mut last_flush = Instant::now();
        let mut flush_wait = self.checked.flush_interval;
        let mut last_stats = Instant::now();
        let mut last_log = Instant::now();
        let mut last_share = Instant::now();
        let mut last_publish: Option<Instant> = None;
        let mut last_sample = Instant::now();
        let mut routes_generation = self.mirror.load().generation();
        self.ports.follow_links(&self.mirror.load());
        while !signals.terminate.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
            if signals.hangup.swap(false, Ordering::Relaxed) {
                tracing::info!("SIGHUP: reloading the member database");
                self.control.reload_now.notify_one();
            }
            let tables = self.mirror.load();
            if tables.generation() != routes_generation {
                routes_generation = tables.generation();
                self.ports.follow_links(&tables);
                if let Some(r) = &self.running {
                    r.set_local_addresses(&local_addresses(&tables));
                }
            }
            self.ports.follow_overdue();
            // A port that came back: the workers start again on the ports as
            // they are. Its link state is read again under its new index.
            if self.ports.poll() {
                self.ports.follow_links(&tables);
                if self.ports.all_present() {
                    self.stop_workers();
                }
            }
            if self.running.is_none() {
                self.try_restart();
            }
            if self.running.as_ref().is_some_and(|r| !r.dp.running()) {
                tracing::error!("a worker stopped unexpectedly; stopping");
                return;
            }
            let stats = self.stats();
            if last_flush.elapsed() >= flush_wait {
                last_flush = Instant::now();
                if self.control.spool.exists() || !fallback_spools(&self.control.spool).is_empty() {
                    replay_spool(&self.control, "before the flush");
                }
                let ok = flush_usage(&self.control, &mut self.ledger, &stats);
                self.flushes[usize::from(!ok)] += 1;
                // A failed flush holds this loop up to DB_WRITE_TIMEOUT: it is
                // tried again in FLUSH_RETRY, whatever the interval.
                flush_wait = if ok { self.checked.flush_interval } else { FLUSH_RETRY };
            }
            self.exchange_usage(&stats, &mut last_share);
            // One document for whichever of its readers is due: the API
            // (every second), the stats file, the log line.
            let publish = last_publish.is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
            let file = self.config.stats.file.is_some() && last_stats.elapsed() >= self.checked.stats_interval;
            let log = !self.checked.log_interval.is_zero() && last_log.elapsed() >= self.checked.log_interval;
            if !(publish || file || log) {
                continue;
            }
            let doc = Stats::collect(&stats, &self.context());
            let now = Instant::now();
            if file {
                last_stats = now;
                write_stats(&self.config, &doc);
            }
            if log {
                last_log = now;
                log_summary(&doc);
            }
            if publish {
                self.control.live.publish(doc, now, unix_now(), last_publish);
                last_publish = Some(now);
                if last_sample.elapsed() >= crate::api::live::SAMPLE_EVERY {
                    last_sample = now;
                    self.control.live.sample();
                }
            }
        }
    }

    /// In a pair: tells the other box, twice a second, what this one counted
    /// and has not written, and when it wrote a flush; writes what the
    /// other box counted and did not write, if it is gone.
    fn exchange_usage(&mut self, stats: &[Arc<WorkerStats>], last_share: &mut Instant) {
        let Some(p) = &self.pair else { return };
        if !p.running() && !self.pair_lost {
            self.pair_lost = true;
            tracing::error!("the sync thread stopped: this box no longer syncs with the other (a bug; see above)");
        }
        if let Some(f) = self.ledger.last_flush().filter(|f| self.shared_flush != Some(*f)) {
            p.flushed(f);
            self.shared_flush = Some(f);
        }
        if last_share.elapsed() >= Duration::from_millis(500) {
            *last_share = Instant::now();
            p.share_usage(&self.ledger, &crate::stats::usage(stats));
        }
        let (orphaned, restarted) = p.take_orphaned();
        let now = Instant::now();
        if restarted {
            // Its old process is gone: nothing it left is its own to write.
            self.orphans.iter_mut().for_each(|(due, _)| *due = now);
        }
        // A box that went silent may be alive behind a broken sync link and
        // write the flush itself, with what it counted since it last shared:
        // it gets two flush intervals and a retry to do so first (then this
        // box's write of the same flush is refused, and nothing is lost).
        let grace = 2 * self.checked.flush_interval + FLUSH_RETRY;
        for o in orphaned {
            if o.silent {
                let s = grace.as_secs();
                tracing::warn!(box_ = %o.writer, flush = o.flush, "the other box went silent: its usage is written here in {s} s unless it writes it first");
            }
            self.orphans.push((if o.silent { now + grace } else { now }, o));
        }
        self.orphans.retain_mut(|(due, o)| {
            if *due > now {
                return true;
            }
            match write_orphan(&self.control, o) {
                Ok(()) => false,
                Err(e) => {
                    // Not every pass: a database that does not answer would
                    // hold the loop up each time.
                    tracing::warn!("the other box's usage not written (retrying in {} s): {e}", FLUSH_RETRY.as_secs());
                    *due = now + FLUSH_RETRY;
                    true
                }
            }
        });
    }

    /// At a stop: the other box's usage not written yet is written now
    /// (due or not: this box may not be back before the other's grace
    /// ends), else spooled under its name and number.
    fn settle_orphans(&mut self) {
        if let Some(p) = &self.pair {
            let (orphaned, _) = p.take_orphaned();
            self.orphans.extend(orphaned.into_iter().map(|o| (Instant::now(), o)));
        }
        for (_, o) in std::mem::take(&mut self.orphans) {
            let Err(e) = write_orphan(&self.control, &o) else { continue };
            let part = crate::ledger::Part { flush: o.flush, period_start: None, traffic: o.traffic };
            let members = part.traffic.len();
            match spool_usage(&self.control.spool, &o.writer, &[part], Periods::HOURLY.start(unix_now())) {
                Ok(path) => {
                    tracing::warn!(box_ = %o.writer, flush = o.flush, "the other box's usage not written ({e}): {members} member(s) kept in {}", path.display())
                }
                Err(s) => {
                    tracing::error!(box_ = %o.writer, flush = o.flush, "the other box's usage of {members} member(s) LOST: not written ({e}), nor spooled ({s})")
                }
            }
        }
    }

    /// The workers' latest stats, or the last of the stopped ones.
    fn stats(&self) -> Vec<Arc<WorkerStats>> {
        self.running.as_ref().map_or_else(|| self.parked.clone(), |r| r.dp.stats())
    }

    /// What the daemon adds to the workers' figures in the stats.
    fn context(&self) -> crate::stats::Context {
        crate::stats::Context {
            published_generation: self.control.published.load().number(),
            routes_generation: self.mirror.load().generation(),
            forwarding: self.running.is_some(),
            ports: self.ports.status(),
            carried: self.carried.clone(),
            program_drops: self.carried_program_drops.plus(self.running.as_ref().map(Running::program_drops)),
            restarts: self.restarts,
            flushes: self.flushes,
            pair: self.pair.as_ref().map(crate::pair::Pair::stats),
            mirror: self.mirror.stats(),
        }
    }

    /// Stops the workers for a restart, keeping their engines.
    fn stop_workers(&mut self) {
        let Some(r) = self.running.take() else { return };
        self.control.live.flows.store(None);
        tracing::info!("restarting the workers on the ports as they are now (flows, NAT and usage kept)");
        let (stats, kept, dropped) = r.stop();
        self.carried.add(&Totals::of(stats.iter().map(|s| &**s)).dataplane);
        self.carried_program_drops = self.carried_program_drops.plus(Some(dropped));
        self.parked = stats;
        self.spare = kept;
        self.settle_if_lost();
        self.last_restart_try = Instant::now() - Duration::from_secs(1);
    }

    /// Starts the workers again, at most once a second, once every port is
    /// there and the kernel does not forward.
    fn try_restart(&mut self) {
        if !self.ports.all_present() || self.last_restart_try.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_restart_try = Instant::now();
        if let Err(e) = check_kernel_forwarding(&self.config) {
            // Started anyway: with the programs attached, transit frames
            // never reach the kernel (no worker, or no socket yet: dropped
            // and counted); without them every frame would, and the kernel
            // would forward it past the policy until someone noticed.
            tracing::error!("{e}; the workers start again anyway (frames passed to the kernel may be forwarded)");
        }
        let kept = std::mem::take(&mut self.spare);
        let pair = self.pair.as_ref();
        match Running::start(&self.config, &self.plan, &self.mirror, &self.control.published, &self.ports, pair, kept) {
            Ok(r) => {
                self.ports.attached_now();
                self.control.live.flows.store(Some(Arc::new(r.dp.flow_queries())));
                self.restarts += 1;
                self.parked.clear();
                self.running = Some(r);
                tracing::info!("running again: {} worker(s), {} port(s)", self.plan.workers, self.config.ports.len());
            }
            Err((e, kept)) => {
                tracing::error!("cannot start the workers again (retrying every second): {e}");
                self.spare = kept;
                self.settle_if_lost();
            }
        }
    }

    /// If a worker's engine is gone (a worker died, or could not start),
    /// its counters are too: the usage counted so far is spooled (written
    /// at the next flush), and all workers start afresh, so that the ledger
    /// can count from zero again without writing anything twice.
    fn settle_if_lost(&mut self) {
        if self.spare.len() == self.plan.workers && self.spare.iter().all(Option::is_some) {
            return;
        }
        tracing::warn!("a worker's state is lost: the workers start afresh (flows and NAT bindings end)");
        let unwritten = self.ledger.unwritten(&crate::stats::usage(&self.parked));
        let members: usize = unwritten.iter().map(|p| p.traffic.len()).sum();
        let spooled =
            spool_usage(&self.control.spool, self.ledger.writer(), &unwritten, Periods::HOURLY.start(unix_now()));
        match spooled {
            Ok(path) if path != self.control.spool.path() => {
                tracing::error!("usage of {members} member(s) kept in {} (the spool is unusable)", path.display())
            }
            Ok(_) => {}
            Err(e) => tracing::error!("usage of {members} member(s) LOST: {e}"),
        }
        self.ledger = self.ledger.fresh();
        self.spare.clear();
        self.parked.clear();
    }

    /// Stops the workers, writes the usage one last time (or spools it),
    /// the stats and the log line; closes the database.
    fn stop(mut self) -> Result<(), Failure> {
        tracing::info!("stopping: draining the workers");
        tell_systemd(sd_notify::NotifyState::Stopping);
        if let Some(p) = &self.pair {
            p.leave();
        }
        self.control.live.flows.store(None);
        if let Some(r) = self.running.take() {
            let (stats, _, dropped) = r.stop();
            self.carried_program_drops = self.carried_program_drops.plus(Some(dropped));
            self.parked = stats;
        }
        let flushed = final_flush(&self.control, &mut self.ledger, &self.parked);
        self.settle_orphans();
        if let Some(p) = self.pair.take() {
            // The other box must not write what this one just did.
            if let (Ok(()), Some(f)) = (&flushed, self.ledger.last_flush()) {
                p.flushed(f);
                std::thread::sleep(Duration::from_millis(100));
            }
            p.stop();
        }
        let last = Stats::collect(&self.parked, &self.context());
        write_stats(&self.config, &last);
        log_summary(&last);
        self.mirror.stop();
        self.control.stop();
        match &flushed {
            Ok(()) => tracing::info!("stopped"),
            Err(e) => tracing::error!("stopped: {e}"),
        }
        flushed
    }
}

/// Step 5: the sync link to the other box of a pair, if one is configured.
fn start_pair(checked: &Checked) -> Result<Option<crate::pair::Pair>, Failure> {
    let Some(cfg) = &checked.pair else { return Ok(None) };
    let keys = crate::pair::load_keys(&cfg.key_file).map_err(Failure::Config)?;
    crate::pair::Pair::start(cfg, keys, true)
        .map(Some)
        .map_err(|e| Failure::system(format!("sync link {} → {}", cfg.local, cfg.peer), e))
}

/// Tells systemd, if it started torwart as a `Type=notify` service (it
/// sets `NOTIFY_SOCKET`), where the start or the stop is; nothing otherwise.
fn tell_systemd(state: sd_notify::NotifyState) {
    if let Err(e) = sd_notify::notify(&[state]) {
        tracing::warn!("cannot notify systemd: {e}");
    }
}

/// The signal flags. SIGTERM and SIGINT set `terminate`; a second one while
/// it is set ends the process at once (exit 1), for a stop that hangs.
struct Signals {
    terminate: Arc<AtomicBool>,
    hangup: Arc<AtomicBool>,
}

impl Signals {
    fn install() -> Result<Signals, Failure> {
        let terminate = Arc::new(AtomicBool::new(false));
        let hangup = Arc::new(AtomicBool::new(false));
        let failed = |e: std::io::Error| Failure::system("cannot install the signal handlers", e);
        for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            // The order matters: the exit is checked before the flag is set.
            signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&terminate)).map_err(failed)?;
            signal_hook::flag::register(sig, Arc::clone(&terminate)).map_err(failed)?;
        }
        signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hangup)).map_err(failed)?;
        Ok(Signals { terminate, hangup })
    }
}

/// The configured ports and whether their interfaces exist now.
#[derive(Debug)]
struct Ports {
    ports: Vec<PortWatch>,
    /// When the workers last attached to the ports (started).
    attached: Instant,
    /// The largest MTU a port may have: frames of a larger one are dropped.
    largest_mtu: usize,
}

#[derive(Debug)]
struct PortWatch {
    name: String,
    side: Side,
    /// The interface's index while it exists.
    ifindex: Option<u32>,
    /// Times the interface disappeared (deleted, or replaced by another).
    lost: u64,
    /// Up with carrier, as the kernel's tables last said (unknown: true).
    up: bool,
    /// Times it went down (administratively, or its carrier).
    downs: u64,
    /// It went down while the workers attached to it; an error is due at
    /// this time if it is still down then.
    down_attaching: Option<Instant>,
    /// An MTU above what torwart takes, once logged.
    mtu_logged: Option<u32>,
}

/// How long after the workers attach to the ports a link may go down
/// without an error: a driver resets the link to attach an XDP program
/// (a NIC for a second or two, veth briefly), so a down in this window is
/// expected, and only one that outlasts it is an error.
const ATTACH_GRACE: Duration = Duration::from_secs(5);

/// What a port's link did, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LinkNote {
    Up,
    /// Down while the workers attach: expected, for now.
    DownAttaching,
    Down,
    /// Went down while the workers attached, and still is after the grace.
    StillDown,
}

impl PortWatch {
    /// The link is `up` as of `now`; the workers attached to the ports at
    /// `attached`. Counts a down; says what to log, if anything changed.
    fn link(&mut self, up: bool, now: Instant, attached: Instant) -> Option<LinkNote> {
        if up == self.up {
            return None;
        }
        self.up = up;
        if up {
            self.down_attaching = None;
            return Some(LinkNote::Up);
        }
        self.downs += 1;
        if now.saturating_duration_since(attached) < ATTACH_GRACE {
            self.down_attaching = Some(attached + ATTACH_GRACE);
            return Some(LinkNote::DownAttaching);
        }
        Some(LinkNote::Down)
    }

    /// A link that went down as the workers attached and is still down
    /// once the grace is over.
    fn overdue(&mut self, now: Instant) -> Option<LinkNote> {
        let due = self.down_attaching?;
        if now < due {
            return None;
        }
        self.down_attaching = None;
        Some(LinkNote::StillDown)
    }

    fn log(&self, note: LinkNote) {
        let name = &self.name;
        match note {
            LinkNote::Up => tracing::info!("port {name}: link up"),
            LinkNote::DownAttaching => tracing::info!(
                "port {name}: link down as the workers attach (a driver resets the link for an XDP program); \
                 an error if it is still down in {} s",
                ATTACH_GRACE.as_secs()
            ),
            LinkNote::Down => {
                tracing::error!("port {name}: link down (or no carrier); nothing crosses it until it is up")
            }
            LinkNote::StillDown => tracing::error!(
                "port {name}: link down (or no carrier) since the workers attached; nothing crosses it until it is up"
            ),
        }
    }
}

/// Step 3: every port's interface exists.
fn find_ports(config: &Config) -> Result<Ports, Failure> {
    let mut ports = Vec::new();
    for p in &config.ports {
        let idx = ifindex(&p.interface).ok_or_else(|| Failure::NoInterface { port: p.interface.clone() })?;
        let side = if p.side == PortSide::Inside { Side::Inside } else { Side::Outside };
        ports.push(PortWatch {
            name: p.interface.clone(),
            side,
            ifindex: Some(idx),
            lost: 0,
            up: true,
            downs: 0,
            down_attaching: None,
            mtu_logged: None,
        });
    }
    Ok(Ports { ports, attached: Instant::now(), largest_mtu: usize::MAX })
}

impl Ports {
    /// Looks at the interfaces again; logs and counts one that went away
    /// and one that came back. True if any changed.
    fn poll(&mut self) -> bool {
        let mut changed = false;
        for p in &mut self.ports {
            let now = ifindex(&p.name);
            if now == p.ifindex {
                continue;
            }
            changed = true;
            if p.ifindex.is_some() {
                p.lost += 1;
                tracing::error!(
                    "port {}: the interface is gone (deleted or replaced); nothing crosses it until it is back",
                    p.name
                );
            }
            if let Some(i) = now {
                tracing::info!("port {}: the interface is back (index {i})", p.name);
            }
            p.ifindex = now;
        }
        changed
    }

    /// Follows the ports' link state in the kernel's tables: a link that
    /// goes down (or loses its carrier) is logged and counted; nothing is
    /// forwarded out of it meanwhile (`router_egress_down`), and the
    /// workers go on, so that it carries traffic again as soon as it is up.
    /// A down as the workers attach is an error only if it lasts
    /// ([`ATTACH_GRACE`], [`Ports::follow_overdue`]).
    fn follow_links(&mut self, tables: &router::RouteTables) {
        let now = Instant::now();
        for p in &mut self.ports {
            let Some(link) = p.ifindex.and_then(|i| tables.link(i)) else { continue };
            if let Some(note) = p.link(link.up, now, self.attached) {
                p.log(note);
            }
            // Raised while torwart runs: frames longer than a buffer are
            // dropped on the way in (`rx_lost`) and out (`tx_oversize`).
            let too_large = link.mtu as usize > self.largest_mtu;
            if too_large && p.mtu_logged != Some(link.mtu) {
                tracing::error!(
                    "port {}: MTU {} is above the {} torwart takes: longer frames are dropped; set it back \
                     (ip link set dev {} mtu 1500)",
                    p.name,
                    link.mtu,
                    self.largest_mtu,
                    p.name
                );
            }
            p.mtu_logged = too_large.then_some(link.mtu);
        }
    }

    /// Logs the links that went down as the workers attached and are still
    /// down after the grace.
    fn follow_overdue(&mut self) {
        let now = Instant::now();
        for p in &mut self.ports {
            if let Some(note) = p.overdue(now) {
                p.log(note);
            }
        }
    }

    /// The workers attached to the ports just now.
    fn attached_now(&mut self) {
        self.attached = Instant::now();
    }

    fn status(&self) -> Vec<crate::stats::PortStatus> {
        self.ports
            .iter()
            .map(|p| crate::stats::PortStatus {
                interface: p.name.clone(),
                side: p.side.name().to_owned(),
                present: p.ifindex.is_some(),
                lost: p.lost,
                up: p.ifindex.is_some() && p.up,
                downs: p.downs,
            })
            .collect()
    }

    fn all_present(&self) -> bool {
        self.ports.iter().all(|p| p.ifindex.is_some())
    }

    /// `(ifindex, side)` by port index, for the router.
    fn map(&self) -> Vec<(u32, Side)> {
        self.ports.iter().map(|p| (p.ifindex.unwrap_or(0), p.side)).collect()
    }
}

/// Step 3: the privileges the ports need. Not root as such but the
/// capabilities, so that the packaged unit can run torwart as its own user
/// with only these (found by running the lab so, docs/packaging.md):
/// CAP_NET_ADMIN attaches the XDP program, creates its XSKMAP and asks the
/// kernel to resolve neighbours (RTM_NEWNEIGH); CAP_NET_RAW opens AF_XDP and
/// AF_PACKET sockets; CAP_BPF loads the program and its maps (CAP_SYS_ADMIN
/// before Linux 5.8). An AF_XDP UMEM is locked memory: without CAP_IPC_LOCK
/// the locked-memory limit must hold every port's UMEMs, which is only
/// warned about (a finite limit may be large enough).
fn require_capabilities(config: &Config) -> Result<(), Failure> {
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_NET_RAW: u32 = 13;
    const CAP_IPC_LOCK: u32 = 14;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_BPF: u32 = 39;
    let (backend, needed): (_, &[(u32, &'static str)]) = match config.io.backend {
        Backend::Xdp => {
            ("xdp", &[(CAP_NET_ADMIN, "CAP_NET_ADMIN"), (CAP_NET_RAW, "CAP_NET_RAW"), (CAP_BPF, "CAP_BPF")])
        }
        // CAP_BPF for the guard (io.guard) and the admission program (io.admission).
        Backend::AfPacket if config.io.guard || config.io.admission => {
            ("af_packet", &[(CAP_NET_ADMIN, "CAP_NET_ADMIN"), (CAP_NET_RAW, "CAP_NET_RAW"), (CAP_BPF, "CAP_BPF")])
        }
        Backend::AfPacket => ("af_packet", &[(CAP_NET_ADMIN, "CAP_NET_ADMIN"), (CAP_NET_RAW, "CAP_NET_RAW")]),
    };
    // The effective set, from the `CapEff:` line of /proc/self/status (hex).
    let effective = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("CapEff:").map(|v| u64::from_str_radix(v.trim(), 16))))
        .and_then(Result::ok)
        .unwrap_or(0);
    let has = |cap: u32| effective & (1 << cap) != 0;
    // Kernels before 5.8 have no CAP_BPF: CAP_SYS_ADMIN does its work there (and still may).
    let granted = |cap: u32| has(cap) || (cap == CAP_BPF && has(CAP_SYS_ADMIN));
    let missing: Vec<_> = needed.iter().filter(|&&(cap, _)| !granted(cap)).map(|&(_, name)| name).collect();
    if !missing.is_empty() {
        let needed = needed.iter().map(|&(_, name)| name).collect();
        return Err(Failure::MissingCapabilities { backend, needed, missing });
    }
    let mut memlock = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes only the struct it is given.
    let limited =
        unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut memlock) } == 0 && memlock.rlim_cur != libc::RLIM_INFINITY;
    if config.io.backend == Backend::Xdp && !has(CAP_IPC_LOCK) && limited {
        let xdp = io::XdpConfig::default();
        let umem = u64::from(xdp.rx_frames + xdp.tx_frames) * u64::from(xdp.frame_size);
        tracing::warn!(
            "no CAP_IPC_LOCK and a locked-memory limit of {} KiB: the ports' AF_XDP memory ({} KiB per port and \
             worker) may not fit (give CAP_IPC_LOCK or LimitMEMLOCK=infinity)",
            memlock.rlim_cur / 1024,
            umem / 1024
        );
    }
    Ok(())
}

/// What a frame carries besides its IP packet: the Ethernet header and
/// one VLAN tag.
const FRAME_OVERHEAD: usize = 18;

/// The longest frame the configured backend receives whole.
fn largest_frame(config: &Config, checked: &Checked) -> usize {
    match config.io.backend {
        Backend::Xdp => checked.xdp_socket.largest_frame(),
        Backend::AfPacket => io::DEFAULT_FRAME_CAPACITY,
    }
}

/// Refuses a port whose interface's MTU lets frames through that are
/// longer than the backend takes: they would be dropped on the way in
/// (by the kernel, for AF_XDP) and out, a black hole for large packets.
fn check_port_mtus(config: &Config, checked: &Checked) -> Result<(), Failure> {
    let largest = largest_frame(config, checked);
    for p in &config.ports {
        let Ok(mtu) = io::interface_mtu(&p.interface) else { continue };
        let mtu = mtu as usize;
        if mtu + FRAME_OVERHEAD > largest {
            return Err(Failure::PortMtu { port: p.interface.clone(), mtu, largest });
        }
    }
    Ok(())
}

/// Step 3: the kernel must not forward. With AF_PACKET it sees every frame
/// too; with XDP it sees what the program passes to it (ARP, multicast,
/// frames to the box, VLAN-tagged frames). Either way a forwarding kernel
/// could carry past torwart what torwart's policy refuses.
fn check_kernel_forwarding(config: &Config) -> Result<(), Failure> {
    let ports: Vec<&str> = config.ports.iter().map(|p| p.interface.as_str()).collect();
    match io::afpacket::kernel_forwarding(&ports) {
        Ok(None) => Ok(()),
        Ok(Some(path)) => Err(Failure::Config(format!(
            "the kernel forwards ({path} is not 0): it would carry frames past torwart's policy; \
             set it to 0 (torwart does the forwarding), and keep it 0 across reboots in \
             /etc/sysctl.d/ (a file there that sets it to 1, as a router's often does, must go)"
        ))),
        Err(e) => Err(Failure::system("cannot tell whether the kernel forwards", e)),
    }
}

/// Step 4, when the member database cannot give the first policy (`e`:
/// it does not answer, or holds rows the compiler refuses): the last good
/// member database's, if there is one that compiles; the reloads go on
/// asking the database. Otherwise `e`, as before there was a last good one.
fn start_from_last_good(
    config: &Config,
    last_good: Option<&Path>,
    key: [u64; 4],
    e: DbError,
) -> Result<(Database, Reloader, String), Failure> {
    let Some(path) = last_good.filter(|p| p.exists()) else { return Err(Failure::database(e)) };
    let members = match crate::db::read_last_good(path) {
        Ok(m) => m,
        Err(le) => {
            tracing::error!("{le}");
            return Err(Failure::database(e));
        }
    };
    let why = crate::api::live::abridged(&e.to_string());
    let db = Database::open_lazy(&config.database).map_err(Failure::database)?;
    let reloader = match Reloader::start_from(db.clone(), members, key) {
        Ok(r) => r,
        Err(le) => {
            tracing::error!("the last good member database {} does not compile: {le}", path.display());
            return Err(Failure::database(e));
        }
    };
    let written = std::fs::metadata(path).and_then(|m| m.modified()).ok().map(humantime::format_rfc3339_seconds);
    tracing::error!(
        "the member database gives no policy ({why}); forwarding with the last good one, {} (written {}), until a \
         reload from the database is done",
        path.display(),
        written.map_or_else(|| "at an unknown time".to_owned(), |t| t.to_string())
    );
    Ok((db, reloader, format!("started from the last good member database {}: {why}", path.display())))
}

/// Writes the member database of the running policy as the last good one
/// (a JSON import file, personal data: the owner's alone), off the packet
/// path. A failure is logged and counted; the running policy does not
/// depend on it. Whether the file now holds `members`.
fn keep_last_good(path: Option<&Path>, members: &policy::MemberDb, live: &crate::api::live::Live) -> bool {
    let Some(path) = path else { return true };
    let text = crate::db::last_good_json(members);
    let counts = &live.reload_counts;
    match crate::files::write_private(path, text.as_bytes(), crate::files::SPOOL_MODE, true) {
        Ok(()) => {
            counts.last_good_written.store(unix_now(), Ordering::Relaxed);
            true
        }
        Err(e) => {
            counts.last_good_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("cannot keep the last good member database in {}: {e}", path.display());
            false
        }
    }
}

/// Step 4: the control runtime, the database, the first policy and the reload task.
struct Control {
    runtime: tokio::runtime::Runtime,
    /// What the API serves, published by the main loop.
    live: Arc<crate::api::live::Live>,
    api: crate::api::Api,
    db: Database,
    published: Arc<Published>,
    reload_now: Arc<tokio::sync::Notify>,
    reload_task: tokio::task::JoinHandle<()>,
    spool: Spool,
}

impl Control {
    fn start(config: &Config, checked: &Checked) -> Result<Control, Failure> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .thread_name("torwart-control")
            .build()
            .map_err(|e| Failure::system("cannot start the control runtime", e))?;
        let last_good = config.last_good_path();
        let key = random_key();
        let started = runtime.block_on(async {
            let db = Database::open(&config.database).await?;
            let reloader = Reloader::start(db.clone(), key).await?;
            Ok::<_, DbError>((db, reloader))
        });
        let (db, reloader, fallback) = match started {
            Ok((db, reloader)) => (db, reloader, None),
            Err(e) => {
                // The lazy pool's upkeep is a task of this runtime.
                let _in = runtime.enter();
                let (db, reloader, why) = start_from_last_good(config, last_good.as_deref(), key, e)?;
                (db, reloader, Some(why))
            }
        };
        let published = reloader.published();
        tracing::info!(
            "policy generation={} members={} database={}",
            published.load().number(),
            published.load().policy.len(),
            db.url()
        );
        let reload_now = Arc::new(tokio::sync::Notify::new());
        let live = Arc::new(crate::api::live::Live::new(reloader.members()));
        let state = crate::api::ApiState {
            live: Arc::clone(&live),
            db: Some(db.clone()),
            reload_now: Arc::clone(&reload_now),
            member_series: config.api.member_series,
        };
        let api = crate::api::Api::start(&runtime, &config.api, checked.api_listen, state).map_err(Failure::api)?;
        if let Some(addr) = api.listening {
            tracing::info!("api: http://{addr}/ (web page, /api, /metrics)");
        }
        if !config.api.socket.as_os_str().is_empty() {
            tracing::info!("api: socket {}", config.api.socket.display());
        }
        // Only now, past the API's socket: a second daemon on this
        // configuration stops there having written nothing.
        match fallback {
            Some(why) => live.started_from_last_good(unix_now(), why),
            None => {
                keep_last_good(last_good.as_deref(), &live.members.load(), &live);
            }
        }
        let reload_task =
            runtime.spawn(reload_loop(db.clone(), reloader, Arc::clone(&reload_now), Arc::clone(&live), last_good));
        let spool = Spool::new(config.spool_path());
        Ok(Control { runtime, live, api, db, published, reload_now, reload_task, spool })
    }

    /// Ends the reload task (it holds a connection: a PostgreSQL LISTEN),
    /// then closes the pool, which waits for its connections to come back.
    fn stop(self) {
        self.api.stop();
        self.reload_task.abort();
        let closed = self.runtime.block_on(async {
            let _ = self.reload_task.await;
            tokio::time::timeout(Duration::from_secs(5), self.db.close()).await
        });
        if closed.is_err() {
            tracing::warn!("the member database did not close within 5 s; leaving it");
        }
        self.runtime.shutdown_timeout(Duration::from_secs(2));
    }
}

/// Where usage the database would not take at a stop is kept:
/// `accounting.spool`, else next to an SQLite database file, else
/// `/var/lib/torwart/usage.spool`.
/// Writes a spool left by an earlier stop (and the files that went to
/// [`SPOOL_FALLBACK_DIR`] instead) to the database; on failure a spool
/// stays for the next try. Numbered usage is written once however often
/// it is replayed ([`Spool`]).
fn replay_spool(control: &Control, when: &str) {
    let mut spools = fallback_spools(&control.spool);
    if control.spool.exists() {
        spools.insert(0, control.spool.clone());
    }
    for spool in spools {
        let replay = spool.replay(&control.db);
        match control.runtime.block_on(async { tokio::time::timeout(DB_WRITE_TIMEOUT, replay).await }) {
            Ok(Ok(n)) => tracing::info!("usage spool {} written {when}: {n} record(s)", spool.path().display()),
            Ok(Err(e)) => tracing::warn!("{e}; kept for the next flush"),
            Err(_) => {
                tracing::warn!(
                    "usage spool {}: no answer from the database within {} s; kept for the next flush, and so \
                     are the others (a start under systemd must not wait for each in turn)",
                    spool.path().display(),
                    DB_WRITE_TIMEOUT.as_secs()
                );
                break;
            }
        }
    }
}

/// How workers are built, the same at every (re)start.
struct WorkerPlan {
    workers: usize,
    /// `[io]`'s AF_XDP socket settings (queue and port set per socket).
    xdp_socket: io::XdpConfig,
    idle: Idle,
    shaping: Option<engine::ShapingConfig>,
    established_timeout: Duration,
    null_engine: bool,
}

impl WorkerPlan {
    fn new(config: &Config, checked: &Checked) -> WorkerPlan {
        let workers = checked.workers;
        let idle = match config.workers.idle {
            IdleMode::Busy => Idle::Busy,
            IdleMode::Sleep => Idle::Sleep { spins: 16, sleep: Duration::from_millis(1), coalesce: checked.coalesce },
        };
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
        WorkerPlan {
            workers,
            xdp_socket: checked.xdp_socket.clone(),
            idle,
            shaping,
            established_timeout: checked.established_timeout,
            null_engine: checked.null_engine,
        }
    }

    fn engine_config(&self, config: &Config, worker: usize) -> engine::Config {
        let mut engine = engine::Config { max_flows: config.engine.max_flows, ..Default::default() };
        engine.hash_key = random_key();
        engine.timeouts.tcp_established = self.established_timeout;
        engine.tcp_loose = config.engine.tcp_loose;
        engine.nat_quota = config.engine.nat_quota;
        engine.half_open_per_member = config.engine.half_open_per_member;
        engine.shaping = self.shaping.as_ref().map(|s| s.for_core(worker));
        engine
    }
}

/// The ports' BPF programs and the workers on the ports' queues.
struct Running {
    programs: Programs,
    dp: Dataplane,
}

/// The BPF programs on the ports: the XDP splitters (backend xdp), or the
/// AF_PACKET guards and admission programs.
#[derive(Default)]
struct Programs {
    xdp: Vec<io::XdpProgram>,
    guards: Vec<io::PacketGuard>,
    admissions: Vec<io::PacketAdmission>,
}

impl Programs {
    /// What they dropped since they were attached.
    fn drops(&self) -> ProgramDrops {
        ProgramDrops {
            unserved: self.xdp.iter().filter_map(|p| p.unserved().ok()).sum(),
            not_admitted: self.admissions.iter().filter_map(|a| a.refused().ok()).sum(),
        }
    }
}

impl Running {
    /// Step 6: opens the ports and starts the workers, with `engines` from
    /// workers stopped before (by worker index) where there are some. On
    /// failure the engines are handed back.
    #[allow(clippy::result_large_err)]
    fn start(
        config: &Config,
        plan: &WorkerPlan,
        mirror: &crate::mirror::Mirror,
        published: &Arc<Published>,
        ports: &Ports,
        pair: Option<&crate::pair::Pair>,
        mut kept: Vec<Option<dataplane::Kept>>,
    ) -> Result<Running, (Failure, Vec<Option<dataplane::Kept>>)> {
        let (programs, queues) = match open_ports(config, plan, mirror) {
            Ok(opened) => opened,
            Err(e) => return Err((e, kept)),
        };
        // A pair's rings outlive a restart of the workers (a port came
        // back) when every worker left its own: what the sync thread put in
        // them meanwhile, acknowledged to the other box already, is
        // installed, not lost with new rings.
        let rings = (kept.len() == plan.workers)
            .then(|| kept.iter_mut().map(|k| k.as_mut().and_then(|k| k.sync.take())).collect::<Option<Vec<_>>>())
            .flatten();
        kept.resize_with(plan.workers, || None);
        let router_cfg = router::RouterConfig {
            icmp_rate: config.router.icmp_errors_per_second,
            icmp_burst: config.router.icmp_errors_per_second.clamp(1, 50),
        };
        let setups = queues
            .into_iter()
            .zip(kept)
            .enumerate()
            .map(|(w, (ports_of_worker, kept))| WorkerSetup {
                config: WorkerConfig {
                    index: w,
                    workers: plan.workers,
                    cpu: config.workers.cpus.get(w).copied(),
                    engine: plan.engine_config(config, w),
                    batch: config.io.batch,
                    idle: plan.idle,
                    stats_every: Duration::from_millis(250),
                    null_engine: plan.null_engine,
                },
                ports: ports_of_worker,
                egress: Egress::routed(
                    mirror.tables(),
                    mirror.resolver(),
                    ports.map(),
                    router_cfg,
                    dataplane::monotonic_now(),
                ),
                generation: kept.as_ref().and_then(|k| k.generation.clone()),
                engine: kept.map(|k| k.engine),
            })
            .collect();
        let policy = Some(Arc::clone(published));
        let started = match pair {
            Some(p) => Dataplane::try_start_synced(setups, policy, rings.unwrap_or_else(|| p.attach(plan.workers))),
            None => Dataplane::try_start(setups, policy),
        };
        let dp = started.map_err(|e| (Failure::system("cannot start the workers", e.error), e.kept))?;
        Ok(Running { programs, dp })
    }

    fn set_local_addresses(&self, local: &[IpAddr]) {
        let p = &self.programs;
        let xdp = p.xdp.iter().map(|p| (p.ifname(), p.set_local_addresses(local)));
        let guards = p.guards.iter().map(|g| (g.ifname(), g.set_local_addresses(local)));
        let admissions = p.admissions.iter().map(|a| (a.ifname(), a.set_local_addresses(local)));
        for (ifname, result) in xdp.chain(guards).chain(admissions) {
            if let Err(e) = result {
                tracing::warn!("port {ifname}: cannot update the box's addresses: {e}");
            }
        }
    }

    /// What the ports' programs dropped (no socket on the queue, no credit).
    fn program_drops(&self) -> ProgramDrops {
        self.programs.drops()
    }

    /// Stops the workers, then detaches the programs; returns the
    /// workers' last stats and state, and what the programs dropped.
    fn stop(self) -> (Vec<Arc<WorkerStats>>, Vec<Option<dataplane::Kept>>, ProgramDrops) {
        let (stats, kept) = self.dp.stop_keeping_engines();
        (stats, kept, self.programs.drops())
    }
}

/// Busy polling keeps interrupts off only if the interface defers them
/// (`napi_defer_hard_irqs`, `gro_flush_timeout`): says so if it does not.
fn warn_busy_poll_interrupts(ifname: &str) {
    let read = |f: &str| {
        std::fs::read_to_string(format!("/sys/class/net/{ifname}/{f}")).ok().and_then(|t| t.trim().parse::<u64>().ok())
    };
    if let (Some(0), _) | (_, Some(0)) = (read("napi_defer_hard_irqs"), read("gro_flush_timeout")) {
        tracing::warn!(
            "port {ifname}: io.busy_poll is on but the interface does not defer its interrupts, so they keep \
             coming while the workers poll; set /sys/class/net/{ifname}/napi_defer_hard_irqs (e.g. 2) and \
             gro_flush_timeout (e.g. 200000)"
        );
    }
}

/// Attaches the XDP programs and opens one socket per port and worker
/// (queue `w` for worker `w`), or the AF_PACKET guards, admission
/// programs and sockets.
fn open_ports(
    config: &Config,
    plan: &WorkerPlan,
    mirror: &crate::mirror::Mirror,
) -> Result<(Programs, Vec<Vec<PortQueue>>), Failure> {
    let workers = plan.workers;
    let mut programs = Programs::default();
    let mut queues: Vec<Vec<PortQueue>> = (0..workers).map(|_| Vec::new()).collect();
    for p in &config.ports {
        let side = if p.side == PortSide::Inside { Side::Inside } else { Side::Outside };
        let mode = match config.io.xdp_mode {
            XdpMode::Auto => io::XdpMode::Auto,
            XdpMode::Native => io::XdpMode::Native,
            XdpMode::Generic => io::XdpMode::Generic,
        };
        match config.io.backend {
            Backend::Xdp => {
                let prog = io::XdpProgram::attach(&p.interface, mode).map_err(|e| Failure::port(e, None))?;
                tracing::info!("port {} side={} xdp={} workers={workers}", p.interface, side.name(), prog.mode());
                if plan.xdp_socket.busy_poll.is_some() {
                    warn_busy_poll_interrupts(&p.interface);
                }
                if let Some(unserved) = unserved_queues(&p.interface, workers) {
                    tracing::error!("{unserved}");
                }
                prog.set_local_addresses(&local_addresses(&mirror.load())).map_err(|e| Failure::port(e, None))?;
                for (w, q) in queues.iter_mut().enumerate() {
                    let cfg = io::XdpConfig { queue: w as u32, ..plan.xdp_socket.clone() };
                    let sock = io::XdpPort::open(&p.interface, &cfg).map_err(|e| {
                        let hint = format!(
                            "worker {w} uses queue {w} of {}: does it have {workers} queues? (ethtool -l {})",
                            p.interface, p.interface
                        );
                        Failure::port(e, Some(hint))
                    })?;
                    if w == 0 && plan.xdp_socket.busy_poll.is_some() && !sock.is_busy_polling() {
                        tracing::warn!(
                            "port {}: io.busy_poll is set but the socket is in copy mode, which cannot busy-poll; \
                             interrupts as usual",
                            p.interface
                        );
                    }
                    prog.register_socket(w as u32, &sock).map_err(|e| Failure::port(e, None))?;
                    q.push(PortQueue { name: p.interface.clone(), side, io: Box::new(sock) });
                }
                programs.xdp.push(prog);
            }
            Backend::AfPacket => {
                if workers > 1 {
                    return Err(Failure::Config(
                        "io.backend = \"af_packet\" runs one worker (workers.count = 1); use xdp for more".into(),
                    ));
                }
                // Transit frames stop after the socket's tap, before the
                // kernel's stack: they cannot be forwarded past the policy
                // even if forwarding is switched on, and cost the kernel
                // nothing more (receive livelock on a busy core).
                let guarded = if config.io.guard {
                    let hint = || Some("or run without the guard: io.guard = false".to_owned());
                    let guard = io::PacketGuard::attach(&p.interface).map_err(|e| Failure::port(e, hint()))?;
                    guard
                        .set_local_addresses(&local_addresses(&mirror.load()))
                        .map_err(|e| Failure::port(e, hint()))?;
                    programs.guards.push(guard);
                    "guarded"
                } else {
                    "unguarded (io.guard = false: only the kernel's forwarding being off keeps transit in torwart)"
                };
                let mut sock = io::PacketPort::open(&p.interface, &io::PacketConfig::default())
                    .map_err(|e| Failure::port(e, None))?;
                // Transit is admitted only as fast as the worker takes it
                // (no receive livelock); the rest is dropped in XDP.
                let admitted = if config.io.admission {
                    let hint = || Some("or run without admission control: io.admission = false".to_owned());
                    let adm = io::PacketAdmission::attach(&p.interface, mode, io::xdp::DEFAULT_ADMISSION_WINDOW)
                        .map_err(|e| Failure::port(e, hint()))?;
                    adm.set_local_addresses(&local_addresses(&mirror.load())).map_err(|e| Failure::port(e, hint()))?;
                    sock.admit_with(adm.credits().map_err(|e| Failure::port(e, hint()))?);
                    let note = format!("admission xdp={} window={}", adm.mode(), adm.window());
                    programs.admissions.push(adm);
                    note
                } else {
                    "without admission (io.admission = false: a flood can starve the worker)".to_owned()
                };
                tracing::info!("port {} side={} af_packet {guarded}, {admitted}", p.interface, side.name());
                queues[0].push(PortQueue { name: p.interface.clone(), side, io: Box::new(sock) });
            }
        }
    }
    Ok((programs, queues))
}

/// Reloads on every change the database reports and on SIGHUP; a failure
/// keeps the running policy, and a broken watch is re-established.
/// A reload, at most [`RELOAD_TIMEOUT`]: one that gets no answer must not
/// hold the reload loop (and every later reload) for the minutes TCP takes
/// to give up on a partition.
async fn reload(reloader: &mut Reloader, db: &Database) -> Result<crate::reload::Reloaded, crate::db::DbError> {
    match tokio::time::timeout(RELOAD_TIMEOUT, reloader.reload()).await {
        Ok(r) => r,
        Err(_) => Err(crate::db::DbError::NoAnswer {
            url: db.url().to_owned(),
            doing: "cannot reload the member database".into(),
            seconds: RELOAD_TIMEOUT.as_secs(),
        }),
    }
}

/// How soon a reload that could not read the member database is tried again.
const RELOAD_RETRY: Duration = Duration::from_secs(5);

async fn reload_loop(
    db: Database,
    mut reloader: Reloader,
    now: Arc<tokio::sync::Notify>,
    live: Arc<crate::api::live::Live>,
    last_good: Option<PathBuf>,
) {
    let from_last_good = live.reload_counts.policy_from_last_good();
    // The member database last written as the last good one: not written
    // again while unchanged (a reload that the usage flushes set off).
    let mut kept = (!from_last_good && live.reload_counts.last_good_written.load(Ordering::Relaxed) > 0)
        .then(|| live.members.load_full());
    // Whether a reload is owed: changes may have been missed (a watch
    // lost or not yet made, a start from the last good one), or a reload
    // could not read the database. Owed until one is done, or refused for
    // the database's rows (then the next change brings the next); tried
    // again every RELOAD_RETRY.
    let mut owed = from_last_good;
    let mut attempt = |r: Result<crate::reload::Reloaded, crate::db::DbError>| -> bool {
        match r {
            Ok(r) => {
                tracing::info!(
                    "policy reloaded generation={} changes=\"{}\" flows_ended_members={} compile_ms={:.1}",
                    r.generation,
                    r.changes,
                    r.ended,
                    r.compile.as_secs_f64() * 1e3
                );
                if live.reload_counts.policy_from_last_good() {
                    tracing::info!("the member database gives a policy again; the last good one is left");
                }
                live.reloaded(unix_now(), &r);
                let members = live.members.load_full();
                // A file of megabytes for a large database: the runtime's
                // other tasks (the API) go on meanwhile. One that failed is
                // tried again at the next reload.
                if kept.as_deref() != Some(&*members)
                    && tokio::task::block_in_place(|| keep_last_good(last_good.as_deref(), &members, &live))
                {
                    kept = Some(members);
                }
                false
            }
            Err(e) => {
                let owed = !matches!(e, crate::db::DbError::Invalid(_));
                let why = crate::api::live::abridged(&e.to_string());
                tracing::warn!("reload refused, the running policy stays: {why}");
                live.refused(unix_now(), why);
                owed
            }
        }
    };
    loop {
        let mut watch = match db.watch(WatchOptions::default()).await {
            Ok(w) => w,
            Err(e) => {
                owed = true;
                tracing::warn!("cannot watch the member database (retrying in 5 s): {e}");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = now.notified() => owed = attempt(reload(&mut reloader, &db).await),
                }
                continue;
            }
        };
        if owed {
            owed = attempt(reload(&mut reloader, &db).await);
        }
        loop {
            tokio::select! {
                changed = watch.changed() => match changed {
                    Ok(()) => owed = attempt(reload(&mut reloader, &db).await),
                    Err(e) => {
                        tracing::warn!("member database watch: {e}");
                        if watch.is_closed() {
                            break;
                        }
                    }
                },
                _ = now.notified() => owed = attempt(reload(&mut reloader, &db).await),
                _ = tokio::time::sleep(RELOAD_RETRY), if owed => owed = attempt(reload(&mut reloader, &db).await),
            }
        }
        owed = true;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A periodic flush, at most [`DB_WRITE_TIMEOUT`]: what fails stays in the
/// ledger for the next one. Returns whether it was written.
fn flush_usage(control: &Control, ledger: &mut Ledger, stats: &[Arc<WorkerStats>]) -> bool {
    if stats.is_empty() {
        return true;
    }
    let totals = crate::stats::usage(stats);
    let flush = ledger.flush(&control.db, Periods::HOURLY, unix_now(), &totals);
    match control.runtime.block_on(async { tokio::time::timeout(DB_WRITE_TIMEOUT, flush).await }) {
        Ok(Ok(0)) => true,
        Ok(Ok(n)) => {
            tracing::info!("usage written members={n}");
            true
        }
        Ok(Err(e)) => {
            tracing::warn!("usage not written (kept for the next flush): {e}");
            false
        }
        Err(_) => {
            let s = DB_WRITE_TIMEOUT.as_secs();
            let doubt = if ledger.in_doubt() { "; the flush is in doubt, and sent again first" } else { "" };
            tracing::warn!(
                "usage not written (kept for the next flush): no answer from the database within {s} s{doubt}"
            );
            false
        }
    }
}

/// The flush at a stop: retried until [`STOP_FLUSH_DEADLINE`]; then the
/// usage goes to the spool and the stop is an error, so that nothing is
/// lost silently.
fn final_flush(control: &Control, ledger: &mut Ledger, stats: &[Arc<WorkerStats>]) -> Result<(), Failure> {
    let totals = crate::stats::usage(stats);
    let deadline = Instant::now() + STOP_FLUSH_DEADLINE;
    let cause = loop {
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
        let attempt = control.runtime.block_on(async {
            tokio::time::timeout(left, ledger.flush(&control.db, Periods::HOURLY, unix_now(), &totals)).await
        });
        let e = match attempt {
            Ok(Ok(0)) => return Ok(()),
            Ok(Ok(n)) => {
                tracing::info!("usage written members={n}");
                return Ok(());
            }
            Ok(Err(e)) => FlushError::Database(Box::new(e)),
            Err(_) => FlushError::NoAnswer,
        };
        if Instant::now() + Duration::from_millis(500) >= deadline {
            break e;
        }
        tracing::warn!("usage not written ({e}); retrying until the deadline");
        std::thread::sleep(Duration::from_millis(500));
    };
    let unwritten = ledger.unwritten(&totals);
    let (spool, members) = (&control.spool, unwritten.iter().map(|p| p.traffic.len()).sum());
    Err(match spool_usage(spool, ledger.writer(), &unwritten, Periods::HOURLY.start(unix_now())) {
        Ok(path) if path == spool.path() => Failure::UsageSpooled { members, path, cause },
        Ok(path) => Failure::UsageBesideSpool { members, path, spool: spool.path().to_owned(), cause },
        Err(spool) => Failure::UsageLost { members, cause, spool: Box::new(spool) },
    })
}

/// Where usage goes when its spool cannot take it (its disk is full, its
/// directory unwritable): a file of its own in [`SPOOL_FALLBACK_DIR`]
/// (memory: until a reboot), named after the spool ([`fallback_prefix`]),
/// which the next start writes to the database as it does the spool (the
/// operator may also move it to the spool's place). Returns the file it
/// went to, or the spool's error.
fn spool_usage(
    spool: &Spool,
    writer: &str,
    parts: &[crate::ledger::Part],
    period_now: i64,
) -> Result<PathBuf, SpoolError> {
    spool.append(writer, parts, period_now).or_else(|e| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let name = format!("{}{}", fallback_prefix(spool), now.as_nanos());
        Spool::new(Path::new(SPOOL_FALLBACK_DIR).join(name)).append(writer, parts, period_now).map_err(|_| e)
    })
}

/// Writes the other box's usage `o` under its name and number, once.
fn write_orphan(control: &Control, o: &crate::pair::Orphaned) -> Result<(), String> {
    let period = Periods::HOURLY.start(unix_now());
    let write = control.db.write_accounting_once(&o.writer, o.flush, period, &o.traffic);
    match control.runtime.block_on(async { tokio::time::timeout(DB_WRITE_TIMEOUT, write).await }) {
        Ok(Ok(true)) => {
            tracing::info!(box_ = %o.writer, flush = o.flush, members = o.traffic.len(), "wrote the other box's usage");
            Ok(())
        }
        Ok(Ok(false)) => {
            tracing::info!(box_ = %o.writer, flush = o.flush, "the other box had written its usage");
            Ok(())
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", DB_WRITE_TIMEOUT.as_secs())),
    }
}

/// The start of the names of `spool`'s files in [`SPOOL_FALLBACK_DIR`]:
/// its path with `/` as `%`, so that each database's daemon finds its own.
/// A path too long for that (a file name has at most 255 bytes, and the
/// name gets a time and, while it is written, `.tmp`) is named by a hash
/// of it instead, one that stays the same across restarts and versions
/// (64-bit FNV-1a): the next start must find the files.
fn fallback_prefix(spool: &Spool) -> String {
    const ROOM: usize = 255 - ".18446744073709551615".len() - ".tmp".len();
    let path = spool.path().as_os_str().as_encoded_bytes();
    let readable = format!("usage-spool.{}.", spool.path().to_string_lossy().replace('/', "%"));
    if readable.len() <= ROOM {
        return readable;
    }
    let hash = path.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("usage-spool.#{hash:016x}.")
}

/// `spool`'s files in [`SPOOL_FALLBACK_DIR`], oldest first.
fn fallback_spools(spool: &Spool) -> Vec<Spool> {
    let prefix = fallback_prefix(spool);
    let Ok(dir) = std::fs::read_dir(SPOOL_FALLBACK_DIR) else { return Vec::new() };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix) && n[prefix.len()..].bytes().all(|b| b.is_ascii_digit()))
        .collect();
    names.sort_by_key(|n| (n.len(), n.clone()));
    names.into_iter().map(|n| Spool::new(Path::new(SPOOL_FALLBACK_DIR).join(n))).collect()
}

/// See [`spool_usage`].
pub const SPOOL_FALLBACK_DIR: &str = "/run/torwart";

/// The stats file (`stats.file`): the [`Stats`] document.
fn write_stats(config: &Config, stats: &Stats) {
    let Some(path) = &config.stats.file else { return };
    let written = serde_json::to_vec_pretty(stats)
        .map_err(std::io::Error::other)
        .and_then(|b| files::write_private(path, &b, files::STATS_MODE, false));
    if let Err(e) = written {
        tracing::warn!("cannot write the stats file {}: {e}", path.display());
    }
}

/// The periodic log line: traffic, drops, table sizes.
fn log_summary(stats: &Stats) {
    let drops = |names: &mut dyn Iterator<Item = &'static str>| names.map(|n| stats.counter(n)).sum::<u64>();
    tracing::info!(
        "stats rx={} tx={} engine_drops={} dataplane_drops={} xdp_unserved={} flows={} nat_bindings={} \
         handed_off={} ports_missing={}",
        stats.counter("rx_frames"),
        stats.counter("tx_frames"),
        drops(&mut engine::DropReason::all().map(|d| d.name())),
        drops(&mut dataplane::Drop::ALL.iter().map(|d| d.name())),
        stats.counter("xdp_unserved"),
        stats.flows,
        stats.nat_bindings,
        stats.counter("handoff_handed_off"),
        stats.ports.iter().filter(|p| !p.present).count()
    );
}

/// The box's own addresses, which the XDP programs pass to the kernel.
fn local_addresses(tables: &router::RouteTables) -> Vec<IpAddr> {
    // Every interface's, not only the ports': the kernel takes a frame to
    // any of its addresses on any interface (a loopback router id, the
    // management interface's).
    let mut out: Vec<IpAddr> = tables.own_addresses().collect();
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    /// Run as root, the check names the files the service's user could
    /// not read (the start would fail) or write (the SQLite database),
    /// judged as the kernel would from owner, group and mode, the
    /// directories above included; `nobody` stands in for `torwart`,
    /// which this machine may not have.
    #[test]
    fn files_the_service_user_may_not_use_are_named() {
        use std::os::unix::fs::PermissionsExt;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            println!("skipped: needs root");
            return;
        }
        let (uid, gid) = user_ids("nobody").expect("the user nobody");
        let dir = std::env::temp_dir().join(format!("torwart-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let f = dir.join("secret");
        std::fs::write(&f, "x").unwrap();
        let set = |path: &Path, mode: u32, owner: Option<u32>, group: Option<u32>| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
            std::os::unix::fs::chown(path, owner.or(Some(0)), group.or(Some(0))).unwrap();
        };
        let cannot = |need: Need| service_user_cannot("nobody", &[(f.as_path(), need)]);
        set(&f, 0o600, None, None);
        let (refused, _) = cannot(Need::Read);
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(
            refused[0].contains("may not read it (owner uid 0, group gid 0, mode 600); chown nobody"),
            "{refused:?}"
        );
        set(&f, 0o600, Some(uid), None);
        assert_eq!(cannot(Need::ReadWrite), (vec![], vec![]), "its owner reads and writes");
        set(&f, 0o640, None, Some(gid));
        assert_eq!(cannot(Need::Read), (vec![], vec![]), "its group reads");
        let (refused, cannot_write) = cannot(Need::ReadWrite);
        assert!(refused.is_empty() && cannot_write.len() == 1, "its group reads, may not write: {cannot_write:?}");
        assert!(cannot_write[0].contains("usage would not be recorded"), "{cannot_write:?}");
        set(&f, 0o644, None, None);
        assert_eq!(cannot(Need::Read), (vec![], vec![]), "everyone reads");
        // A directory above that does not let the user through.
        set(&dir, 0o750, None, None);
        let (refused, _) = cannot(Need::Read);
        assert!(refused.len() == 1 && refused[0].contains("does not let nobody through"), "{refused:?}");
        // The database's directory, where SQLite makes its journal.
        set(&dir, 0o755, Some(uid), None);
        assert_eq!(service_user_cannot("nobody", &[(dir.as_path(), Need::WriteDir)]), (vec![], vec![]));
        set(&dir, 0o755, None, None);
        let (_, cannot_write) = service_user_cannot("nobody", &[(dir.as_path(), Need::WriteDir)]);
        assert_eq!(cannot_write.len(), 1, "{cannot_write:?}");
        assert_eq!(service_user_cannot("no-such-user-here", &[(f.as_path(), Need::ReadWrite)]), (vec![], vec![]));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A password in a file the operators' group reads is warned of,
    /// without the password; none, or a file its owner alone reads, is not.
    #[test]
    fn a_password_others_may_read_is_warned_of() {
        let path = Path::new("/etc/torwart/torwart.toml");
        let url = "postgres://torwart:s3cret@db/members";
        let w = shown_password(path, url, 0o100640).expect("a warning");
        assert!(w.contains("mode 640") && w.contains("PGPASSFILE") && !w.contains("s3cret"), "{w}");
        assert_eq!(shown_password(path, url, 0o100600), None);
        assert_eq!(shown_password(path, "postgres://torwart@db/members", 0o100644), None);
        assert_eq!(shown_password(path, "/var/lib/torwart/members.db", 0o100644), None);
    }

    fn refused(errno: i32) -> io::IoError {
        io::IoError::interface("eth1", "attach the XDP program", std::io::Error::from_raw_os_error(errno))
    }

    #[test]
    fn a_link_down_as_the_workers_attach_is_an_error_only_if_it_lasts() {
        let t0 = Instant::now();
        let mut p = PortWatch {
            name: "eth1".into(),
            side: Side::Inside,
            ifindex: Some(2),
            lost: 0,
            up: true,
            downs: 0,
            down_attaching: None,
            mtu_logged: None,
        };
        let ms = |n| t0 + Duration::from_millis(n);
        // The driver resets the link for the XDP program: down, then up.
        assert_eq!(p.link(false, ms(300), t0), Some(LinkNote::DownAttaching));
        assert_eq!(p.link(false, ms(400), t0), None, "no change, no note");
        assert_eq!(p.overdue(ms(1000)), None);
        assert_eq!(p.link(true, ms(1000), t0), Some(LinkNote::Up));
        assert_eq!(p.overdue(ms(9000)), None, "it came up in time");
        // Down again, long after: an error at once.
        assert_eq!(p.link(false, ms(60_000), t0), Some(LinkNote::Down));
        assert_eq!(p.link(true, ms(61_000), t0), Some(LinkNote::Up));
        // Down as the workers attach again (a restart), and it stays down.
        let t1 = ms(70_000);
        assert_eq!(p.link(false, t1 + Duration::from_millis(100), t1), Some(LinkNote::DownAttaching));
        assert_eq!(p.overdue(t1 + Duration::from_secs(4)), None);
        assert_eq!(p.overdue(t1 + ATTACH_GRACE), Some(LinkNote::StillDown));
        assert_eq!(p.overdue(t1 + ATTACH_GRACE * 2), None, "reported once");
        assert_eq!(p.downs, 3, "every down is counted");
    }

    #[test]
    fn a_port_refused_for_want_of_a_privilege_is_a_permission_failure() {
        let f = Failure::port(refused(libc::EPERM), Some("worker 1 uses queue 1".into()));
        assert_eq!(f.exit_code(), 4);
        assert!(!f.to_string().contains("queue 1"), "{f}");
        let f = Failure::port(refused(libc::ENODEV), Some("worker 1 uses queue 1".into()));
        assert_eq!(f.exit_code(), 3);
        assert!(f.to_string().ends_with(" (worker 1 uses queue 1)"), "{f}");
        // The kernel's refusal stays reachable, typed.
        let os = f.source().and_then(|s| s.source()).and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(os.and_then(|e| e.raw_os_error()), Some(libc::ENODEV));
    }

    #[test]
    fn missing_capabilities_are_named_and_a_permission_failure() {
        let f = Failure::MissingCapabilities {
            backend: "xdp",
            needed: vec!["CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_BPF"],
            missing: vec!["CAP_BPF"],
        };
        assert_eq!(f.exit_code(), 4);
        assert!(
            f.to_string().starts_with(
                "torwart run lacks CAP_BPF (the xdp backend needs CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF): run it as root"
            ),
            "{f}"
        );
    }

    /// A spool's files in the fallback directory are named after its path;
    /// a path too long to be part of a file name is named by a hash, the
    /// same at every start, and such a file can be written.
    #[test]
    fn a_long_spool_path_gets_fallback_names_that_fit() {
        let short = Spool::new("/var/lib/torwart/t.db.usage-spool");
        assert_eq!(fallback_prefix(&short), "usage-spool.%var%lib%torwart%t.db.usage-spool.");
        let deep = |leaf: &str| Spool::new(format!("/srv/{}/{leaf}", "accounting/".repeat(25)));
        let long = deep("t.db.usage-spool");
        let prefix = fallback_prefix(&long);
        assert!(prefix.starts_with("usage-spool.#") && prefix.len() == "usage-spool.#".len() + 17, "{prefix}");
        assert_eq!(prefix, fallback_prefix(&deep("t.db.usage-spool")), "the same at every start");
        assert_ne!(prefix, fallback_prefix(&deep("u.db.usage-spool")));
        let longest_readable = fallback_prefix(&Spool::new(format!("/{}", "x".repeat(216))));
        assert_eq!(longest_readable.len(), 230, "{longest_readable}");
        assert!(fallback_prefix(&Spool::new(format!("/{}", "x".repeat(217)))).contains('#'));

        // Both kinds of name, with the longest time after them, take usage
        // (and the `.tmp` name it is written under first).
        let dir = std::env::temp_dir().join(format!("torwart-fallback-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let traffic =
            vec![crate::db::MemberTraffic { member_id: 7, up_bytes: 1, down_bytes: 2, up_packets: 1, down_packets: 1 }];
        let written: Vec<_> = [prefix, longest_readable]
            .iter()
            .map(|p| {
                let file = dir.join(format!("{p}{}", u64::MAX));
                let part = crate::ledger::Part { period_start: None, flush: 1, traffic: traffic.clone() };
                let got = Spool::new(&file).append("a", &[part], 0).map_err(|e| e.to_string());
                (got, file.exists(), file)
            })
            .collect();
        std::fs::remove_dir_all(&dir).unwrap();
        for (got, exists, file) in written {
            assert_eq!(got, Ok(file.clone()));
            assert!(exists, "{}", file.display());
        }
    }

    #[test]
    fn usage_left_at_a_stop_says_where_it_is_and_keeps_why() {
        let path = PathBuf::from("/var/lib/torwart/t.db.usage-spool");
        let f = Failure::UsageSpooled { members: 3, path, cause: FlushError::NoAnswer };
        assert_eq!(f.exit_code(), 5);
        assert_eq!(
            f.to_string(),
            "usage of 3 member(s) not written to the database (no answer within 10 s); kept in \
             /var/lib/torwart/t.db.usage-spool, written at the next start"
        );
        assert!(f.source().is_some_and(|s| s.is::<FlushError>()));
    }

    #[test]
    fn system_failures_say_what_failed_and_keep_why() {
        let f = Failure::system("cannot start the workers", std::io::Error::from_raw_os_error(libc::EAGAIN));
        assert_eq!(f.exit_code(), 6);
        assert!(f.to_string().starts_with("cannot start the workers: "), "{f}");
        let os = f.source().and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(os.and_then(|e| e.raw_os_error()), Some(libc::EAGAIN));
    }
}
