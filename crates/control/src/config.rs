//! The daemon's configuration file (TOML): which ports, which cores, which
//! database, and the knobs an operator tunes. `docs/torwart.example.toml` is
//! the documented example; every field not given takes the default written
//! there.
//!
//! Loading checks everything that can be checked without touching the
//! system (types, ranges, one inside and one outside port, no port twice,
//! durations that parse) and names the field that is wrong. What needs the
//! system (does the interface exist, may we attach XDP, is the database
//! reachable) is checked by the daemon at start, with its own messages.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration \"{path}\": {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the configuration \"{path}\" is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Which side of the box a port faces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortSide {
    Inside,
    Outside,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    /// The network interface.
    pub interface: String,
    pub side: PortSide,
}

/// How frames reach torwart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// AF_XDP sockets fed by an XDP program (production).
    #[default]
    Xdp,
    /// AF_PACKET sockets: for interfaces without XDP; the kernel must not forward.
    AfPacket,
}

/// Where the XDP program runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum XdpMode {
    /// Native (in the driver) where the driver has it, else generic.
    #[default]
    Auto,
    Native,
    Generic,
}

/// Whether AF_XDP sockets move frames without a copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ZeroCopy {
    /// Zero-copy where the driver has it, else copy.
    #[default]
    Auto,
    /// Zero-copy, or refuse to start.
    On,
    /// Always copy.
    Off,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IoConfig {
    pub backend: Backend,
    pub xdp_mode: XdpMode,
    /// Frames per receive batch.
    pub batch: usize,
    /// AF_XDP zero-copy (xdp only).
    pub zero_copy: ZeroCopy,
    /// Kick the kernel only when it says it needs it (xdp only; off: a
    /// system call per transmitted batch).
    pub need_wakeup: bool,
    /// Busy polling (xdp only): the workers run the driver's receive in
    /// their own time, at most `busy_poll_budget` frames per poll, and a
    /// blocking wait spins this long in the driver, e.g. "50us"; "0s": off.
    pub busy_poll: String,
    pub busy_poll_budget: u16,
    /// AF_PACKET only: drop the kernel's original of every transit frame at
    /// tc ingress, after the socket's copy (needs CAP_BPF and Linux 6.6).
    /// false: run without; then only the kernel's forwarding being off
    /// keeps it from carrying transit frames past the policy.
    pub guard: bool,
    /// AF_PACKET only: an XDP program (in `xdp_mode`) admits transit frames
    /// only as fast as the worker takes them and drops the rest before the
    /// kernel works on them, counted as `af_packet_not_admitted`; without
    /// it a flood the worker cannot keep up with starves it (receive
    /// livelock). false: run without (an interface that already has an XDP
    /// program).
    pub admission: bool,
}

impl Default for IoConfig {
    fn default() -> Self {
        IoConfig {
            backend: Backend::Xdp,
            xdp_mode: XdpMode::Auto,
            batch: 64,
            zero_copy: ZeroCopy::Auto,
            need_wakeup: true,
            busy_poll: "0s".into(),
            busy_poll_budget: 64,
            guard: true,
            admission: true,
        }
    }
}

impl IoConfig {
    /// The AF_XDP socket settings, without queue and port; the error names
    /// the field.
    fn xdp_socket(&self, dur: impl Fn(&str, &str) -> Result<Duration, String>) -> Result<io::XdpConfig, String> {
        let busy = dur("io.busy_poll", &self.busy_poll)?;
        if busy > Duration::from_millis(10) {
            return Err(format!(
                "io.busy_poll = \"{}\": at most 10ms (a waiting worker spins this long)",
                self.busy_poll
            ));
        }
        if !(1..=1024).contains(&self.busy_poll_budget) {
            return Err(format!("io.busy_poll_budget = {}: give 1 to 1024", self.busy_poll_budget));
        }
        let defaults = IoConfig::default();
        if self.backend == Backend::Xdp && !self.guard {
            return Err("io.guard applies to backend = \"af_packet\" (the XDP program keeps transit from the \
                        kernel)"
                .into());
        }
        if self.backend == Backend::Xdp && !self.admission {
            return Err("io.admission applies to backend = \"af_packet\" (AF_XDP's receive ring bounds what \
                        the kernel hands the worker)"
                .into());
        }
        if !busy.is_zero() && (self.zero_copy == ZeroCopy::Off || self.xdp_mode == XdpMode::Generic) {
            return Err(format!(
                "io.busy_poll = \"{}\": only zero-copy sockets can busy-poll (not with zero_copy = \"off\" or \
                 xdp_mode = \"generic\")",
                self.busy_poll
            ));
        }
        if self.backend == Backend::AfPacket {
            for (field, set) in [
                ("zero_copy", self.zero_copy != defaults.zero_copy),
                ("need_wakeup", self.need_wakeup != defaults.need_wakeup),
                ("busy_poll", !busy.is_zero()),
            ] {
                if set {
                    return Err(format!("io.{field} applies to backend = \"xdp\", not \"af_packet\""));
                }
            }
        }
        let usecs = u32::try_from(busy.as_micros()).unwrap_or(u32::MAX);
        if !busy.is_zero() && usecs == 0 {
            return Err(format!("io.busy_poll = \"{}\": at least 1us", self.busy_poll));
        }
        Ok(io::XdpConfig {
            copy_mode: match self.zero_copy {
                ZeroCopy::Auto => io::XskCopyMode::Auto,
                ZeroCopy::On => io::XskCopyMode::ZeroCopy,
                ZeroCopy::Off => io::XskCopyMode::Copy,
            },
            need_wakeup: self.need_wakeup,
            busy_poll: (usecs > 0).then_some(io::BusyPoll { usecs, budget: self.busy_poll_budget }),
            ..io::XdpConfig::default()
        })
    }
}

/// How workers wait when idle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum IdleMode {
    /// Spin (production: lowest latency, the worker's core is always busy).
    #[default]
    Busy,
    /// Sleep briefly after a run of empty polls (labs, shared machines).
    Sleep,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkersConfig {
    /// CPUs to pin one worker each to. Empty: `count` unpinned workers.
    pub cpus: Vec<usize>,
    /// Workers when `cpus` is empty (default 1).
    pub count: Option<usize>,
    pub idle: IdleMode,
    /// With `idle = "sleep"`: interrupt moderation while traffic flows, e.g.
    /// "100us" (a nap of this long instead of a wake-up per frame); "0s": none.
    pub coalesce: String,
}

impl Default for WorkersConfig {
    fn default() -> Self {
        WorkersConfig { cpus: Vec::new(), count: None, idle: IdleMode::default(), coalesce: "100us".into() }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Most flows per worker.
    pub max_flows: u32,
    /// Idle timeout of established TCP connections, e.g. "12h".
    pub established_timeout: String,
    /// Take over TCP connections seen mid-stream (after a restart): from the
    /// inside, and from the outside through port forwards and IPv6 openings.
    pub tcp_loose: bool,
    /// NAT bindings one member may hold at once.
    pub nat_quota: u32,
    /// Unanswered flows and unfinished TCP handshakes one member may have
    /// open per worker, on each side: opened by its devices, and opened to
    /// it from the outside (port forwards, IPv6 openings). Past it, the
    /// oldest is evicted: a SYN flood holds this many, not the table.
    pub half_open_per_member: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_flows: 262_144,
            established_timeout: "12h".into(),
            tcp_loose: true,
            nat_quota: 8192,
            half_open_per_member: engine::conntrack::HALF_OPEN_PER_MEMBER,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccountingConfig {
    /// How often usage is written to the database, e.g. "60s". Also written at stop.
    pub flush_interval: String,
    /// Where usage the database would not take at a stop is kept until the
    /// next start. Default: next to an SQLite database file
    /// (`<file>.usage-spool`), else `/var/lib/torwart/usage.spool`.
    pub spool: Option<PathBuf>,
}

impl Default for AccountingConfig {
    fn default() -> Self {
        AccountingConfig { flush_interval: "60s".into(), spool: None }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterConfig {
    /// ICMP errors (time exceeded, unreachable, too big) per second and worker.
    pub icmp_errors_per_second: u32,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig { icmp_errors_per_second: 1000 }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShapingConfig {
    /// Shape members whose plan has rates (the plans table).
    pub enabled: bool,
    /// Capacity of the uplink towards the internet (members' upload), Mbit/s. 0: unlimited.
    pub uplink_up_mbit: u64,
    /// Capacity towards the members (download), Mbit/s. 0: unlimited.
    pub uplink_down_mbit: u64,
    /// CoDel's target queueing delay, e.g. "5ms".
    pub codel_target: String,
    /// CoDel's interval, e.g. "100ms".
    pub codel_interval: String,
    /// Packets older than this are dropped at dequeue (unresponsive floods), e.g. "10ms".
    pub sojourn_limit: String,
    /// Frames one worker can hold queued.
    pub pool_frames: u32,
}

impl Default for ShapingConfig {
    fn default() -> Self {
        ShapingConfig {
            enabled: true,
            uplink_up_mbit: 0,
            uplink_down_mbit: 0,
            codel_target: "5ms".into(),
            codel_interval: "100ms".into(),
            sojourn_limit: "10ms".into(),
            pool_frames: 16_384,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    /// This box's address and port on the sync link ("10.99.0.1:7400").
    pub local: Option<String>,
    /// The other box's address and port on the sync link.
    pub peer: Option<String>,
    /// The shared key file (the same on both boxes, mode 600; `torwart sync-key` makes one).
    pub key_file: Option<PathBuf>,
    /// Written "0" when this box may take over the other's traffic, "1"
    /// while it is still receiving the other's state (keepalived's `track_file`).
    pub ready_file: Option<PathBuf>,
    /// The largest datagram on the sync link, in bytes: 1452 for a 1500-byte
    /// MTU (the default), up to 8952 with jumbo frames. The same on both boxes.
    pub datagram: Option<usize>,
}

impl SyncConfig {
    /// The sync link, if one is configured; the error names the field.
    fn check(&self) -> Result<Option<crate::pair::PairConfig>, String> {
        let (local, peer, key_file) = match (&self.local, &self.peer, &self.key_file) {
            (None, None, None) if self.ready_file.is_none() && self.datagram.is_none() => return Ok(None),
            (Some(l), Some(p), Some(k)) => (l, p, k),
            _ => return Err("sync: give local, peer and key_file together (or none of them)".into()),
        };
        let addr = |field: &str, v: &str| {
            v.parse::<std::net::SocketAddr>().map_err(|_| {
                format!("sync.{field} = \"{v}\": not an address and port (\"10.99.0.1:7400\", \"[fd00::1]:7400\")")
            })
        };
        let (local, peer) = (addr("local", local)?, addr("peer", peer)?);
        if local.is_ipv4() != peer.is_ipv4() {
            return Err("sync: local and peer are of different address families".into());
        }
        if local.port() == 0 || local.ip().is_unspecified() {
            // The other box writes this box's usage under this name if this
            // one goes: it must be the one the other box has as its peer.
            return Err(format!(
                "sync.local = \"{local}\": this box's own address and port on the sync link, as the other box's \
                 sync.peer names it (not a wildcard)"
            ));
        }
        if peer.port() == 0 || peer.ip().is_unspecified() || peer == local {
            return Err(format!("sync.peer = \"{peer}\": the other box's own address and port"));
        }
        let max_datagram = self.datagram.unwrap_or(1452);
        if !(1024..=sync::message::MAX_LEN).contains(&max_datagram) {
            return Err(format!("sync.datagram = {max_datagram}: give 1024 to {} bytes", sync::message::MAX_LEN));
        }
        Ok(Some(crate::pair::PairConfig {
            local,
            peer,
            key_file: key_file.clone(),
            ready_file: self.ready_file.clone(),
            max_datagram,
        }))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatsConfig {
    /// A JSON file rewritten every `interval` and at stop with the counters,
    /// per-member usage and per-worker figures (for `torwart lab` and scripts).
    pub file: Option<PathBuf>,
    pub interval: String,
    /// A one-line summary in the log every so often ("0s": never).
    pub log_interval: String,
}

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig { file: None, interval: "1s".into(), log_interval: "60s".into() }
    }
}

/// `[api]`: where the HTTP API, `/metrics` and the web page are served.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// A TCP address and port ("" serves none). Any address that is not a
    /// loopback one needs `token_file`.
    pub listen: String,
    /// A Unix socket for the CLI, mode 0660 ("" serves none).
    pub socket: PathBuf,
    /// A file (not readable by others) holding the bearer token every
    /// request on `listen` must carry.
    pub token_file: Option<PathBuf>,
    /// Per-member series in `/metrics`: the busiest members first.
    pub member_series: usize,
}

/// Where the CLI finds the daemon unless told.
pub const DEFAULT_API_SOCKET: &str = "/run/torwart/api.sock";

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: "127.0.0.1:9680".into(),
            socket: PathBuf::from(DEFAULT_API_SOCKET),
            token_file: None,
            member_series: 1000,
        }
    }
}

impl ApiConfig {
    /// The TCP address, if any; the error names the field.
    fn check(&self) -> Result<Option<std::net::SocketAddr>, String> {
        if self.member_series > 100_000 {
            return Err(format!("api.member_series = {}: at most 100000", self.member_series));
        }
        if self.listen.is_empty() {
            return Ok(None);
        }
        let addr: std::net::SocketAddr = self.listen.parse().map_err(|_| {
            format!("api.listen = \"{}\": not an address and port (\"127.0.0.1:9680\", \"[::1]:9680\")", self.listen)
        })?;
        if !addr.ip().is_loopback() && self.token_file.is_none() {
            return Err(format!(
                "api.listen = \"{}\": an address others can reach needs api.token_file (a bearer token), \
                 or listen on 127.0.0.1",
                self.listen
            ));
        }
        Ok(Some(addr))
    }
}

/// The whole file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The member database: a path (SQLite) or a URL (sqlite://, postgres://).
    pub database: String,
    /// The last member database that compiled, written after every start
    /// and reload that read one, so that a start the database cannot give
    /// a policy (down, or holding a row the compiler refuses) forwards with
    /// it instead of not at all. Default: next to an SQLite database file
    /// (`<file>.last-good.json`), else `/var/lib/torwart/members.last-good.json`;
    /// `""` keeps none.
    #[serde(default)]
    pub last_good: Option<PathBuf>,
    pub ports: Vec<PortConfig>,
    #[serde(default)]
    pub workers: WorkersConfig,
    #[serde(default)]
    pub io: IoConfig,
    #[serde(default)]
    pub engine: EngineConfig,
    #[serde(default)]
    pub accounting: AccountingConfig,
    #[serde(default)]
    pub router: RouterConfig,
    #[serde(default)]
    pub shaping: ShapingConfig,
    #[serde(default)]
    pub stats: StatsConfig,
    /// The HTTP API, the metrics and the web page (`docs/api.md`).
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub sync: SyncConfig,
}

/// Durations and counts, parsed and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    pub established_timeout: Duration,
    pub flush_interval: Duration,
    pub stats_interval: Duration,
    pub log_interval: Duration,
    pub workers: usize,
    /// `workers.coalesce`.
    pub coalesce: Duration,
    /// The AF_XDP socket settings of `[io]` (queue and port set per socket).
    pub xdp_socket: io::XdpConfig,
    pub codel_target: Duration,
    pub codel_interval: Duration,
    pub sojourn_limit: Duration,
    /// The sync link to the other box of a pair (`[sync]`), if any.
    pub pair: Option<crate::pair::PairConfig>,
    /// `api.listen`, parsed.
    pub api_listen: Option<std::net::SocketAddr>,
    /// Benchmarks only (`torwart run --bench-null-engine`, never from the
    /// file): the workers bypass the engine, see
    /// [`dataplane::WorkerConfig::null_engine`].
    pub null_engine: bool,
}

impl Config {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<(Config, Checked), ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Config::parse(&text).map_err(|message| ConfigError::Invalid { path: path.to_owned(), message })
    }

    /// Parses and checks `text` for this machine (its CPUs and memory);
    /// the error names the field.
    pub fn parse(text: &str) -> Result<(Config, Checked), String> {
        Config::parse_for(text, &Machine { cpus: allowed_cpus(), memory: memory_total() })
    }

    /// Parses and checks `text` for `machine`.
    pub fn parse_for(text: &str, machine: &Machine) -> Result<(Config, Checked), String> {
        // The error quotes the line it stopped at: a database URL's password too.
        let c: Config = toml::from_str(text).map_err(|e| crate::db::redacted_text(e.to_string().trim_end()))?;
        let checked = c.check(machine)?;
        Ok((c, checked))
    }

    fn check(&self, machine: &Machine) -> Result<Checked, String> {
        let dur = |field: &str, v: &str| {
            humantime::parse_duration(v).map_err(|e| format!("{field} = \"{v}\": {e} (write e.g. \"60s\", \"12h\")"))
        };
        if self.database.trim().is_empty() {
            return Err("database is empty: give a path (SQLite) or a postgres:// URL".into());
        }
        for side in [PortSide::Inside, PortSide::Outside] {
            if !self.ports.iter().any(|p| p.side == side) {
                let name = if side == PortSide::Inside { "inside" } else { "outside" };
                return Err(format!("ports: no {name} port; torwart needs one inside and one outside port"));
            }
        }
        for (i, p) in self.ports.iter().enumerate() {
            if p.interface.is_empty() || p.interface.len() >= 16 || p.interface.contains(['/', ' ']) {
                return Err(format!("ports[{i}].interface = \"{}\" is not an interface name", p.interface));
            }
            if self.ports[..i].iter().any(|q| q.interface == p.interface) {
                return Err(format!("ports[{i}]: interface \"{}\" is listed twice", p.interface));
            }
        }
        if self.ports.len() > 16 {
            return Err(format!("ports: {} ports; at most 16", self.ports.len()));
        }
        let workers =
            if self.workers.cpus.is_empty() { self.workers.count.unwrap_or(1) } else { self.workers.cpus.len() };
        if workers == 0 || workers > 256 {
            return Err(format!("workers: {workers} workers; give 1 to 256"));
        }
        if self.workers.count.is_some() && !self.workers.cpus.is_empty() && self.workers.count != Some(workers) {
            return Err("workers: count and cpus disagree; give one of them".into());
        }
        check_cpus(&self.workers.cpus, &machine.cpus)?;
        if !(1..=1024).contains(&self.io.batch) {
            return Err(format!("io.batch = {}: give 1 to 1024", self.io.batch));
        }
        // A worker reads its ports only while each ring to another worker
        // has room for a batch from every port: with rings of
        // HANDOFF_DEPTH frames, a larger need would stop all receiving.
        // Half the ring leaves the other worker time to take what it holds.
        let need = self.io.batch * self.ports.len();
        if workers > 1 && need > dataplane::HANDOFF_DEPTH / 2 {
            return Err(format!(
                "io.batch = {} with {} ports and {workers} workers: a worker receives only while its ring to each \
                 other worker has room for a batch from every port ({need} frames), and a ring holds {}; give \
                 io.batch at most {}",
                self.io.batch,
                self.ports.len(),
                dataplane::HANDOFF_DEPTH,
                dataplane::HANDOFF_DEPTH / 2 / self.ports.len().max(1)
            ));
        }
        let xdp_socket = self.io.xdp_socket(dur)?;
        check_max_flows(self.engine.max_flows, workers, machine.memory)?;
        if self.engine.nat_quota == 0 {
            return Err("engine.nat_quota = 0: a member could open no connection".into());
        }
        if self.engine.half_open_per_member < 16 {
            return Err(format!(
                "engine.half_open_per_member = {}: at least 16 (each new connection is one until answered)",
                self.engine.half_open_per_member
            ));
        }
        let coalesce = dur("workers.coalesce", &self.workers.coalesce)?;
        if coalesce > Duration::from_millis(1) {
            return Err(format!(
                "workers.coalesce = \"{}\": at most 1ms (it delays every packet by up to this much)",
                self.workers.coalesce
            ));
        }
        let established_timeout = dur("engine.established_timeout", &self.engine.established_timeout)?;
        let flush_interval = dur("accounting.flush_interval", &self.accounting.flush_interval)?;
        if flush_interval < Duration::from_secs(1) {
            return Err("accounting.flush_interval: at least 1s".into());
        }
        let stats_interval = dur("stats.interval", &self.stats.interval)?;
        if stats_interval < Duration::from_millis(100) {
            return Err("stats.interval: at least 100ms".into());
        }
        let log_interval = dur("stats.log_interval", &self.stats.log_interval)?;
        let codel_target = dur("shaping.codel_target", &self.shaping.codel_target)?;
        let codel_interval = dur("shaping.codel_interval", &self.shaping.codel_interval)?;
        let sojourn_limit = dur("shaping.sojourn_limit", &self.shaping.sojourn_limit)?;
        if codel_target.is_zero() || codel_interval < codel_target {
            return Err("shaping: codel_target must be above 0 and at most codel_interval".into());
        }
        if !(64..=1 << 20).contains(&self.shaping.pool_frames) {
            return Err(format!("shaping.pool_frames = {}: give 64 to 1048576", self.shaping.pool_frames));
        }
        let spool = self.spool_path();
        let name = spool.file_name().map_or(0, |n| n.len());
        if name == 0 || name > MAX_SPOOL_NAME {
            let field = if self.accounting.spool.is_some() { "accounting.spool" } else { "the database's usage spool" };
            return Err(format!(
                "{field} \"{}\": its file name is {name} bytes; give a file name of 1 to {MAX_SPOOL_NAME} bytes (torwart \
                 writes beside it under that name and a suffix, and a file name has at most 255)",
                spool.display()
            ));
        }
        let field = if self.accounting.spool.is_some() { "accounting.spool" } else { "the database's usage spool" };
        replaceable(field, &spool)?;
        if let Some(path) = self.last_good_path() {
            replaceable(if self.last_good.is_some() { "last_good" } else { "the last good member database" }, &path)?;
        }
        if let Some(path) = &self.stats.file {
            replaceable("stats.file", path)?;
        }
        if let Some(path) = &self.sync.ready_file {
            replaceable("sync.ready_file", path)?;
        }
        Ok(Checked {
            established_timeout,
            flush_interval,
            stats_interval,
            log_interval,
            workers,
            coalesce,
            xdp_socket,
            codel_target,
            codel_interval,
            sojourn_limit,
            pair: self.sync.check()?,
            api_listen: self.api.check()?,
            null_engine: false,
        })
    }
}

/// Checks a file the daemon replaces whole ([`crate::files::write_private`]:
/// written beside it, then renamed over it): what is at `path` now must be
/// a file, or nothing. A directory there would fail each write (for the
/// spool, at the stop, when the usage needs it), and a device or a link
/// would be replaced by a file (`/dev/null` by the stats).
fn replaceable(field: &str, path: &Path) -> Result<(), String> {
    if path.file_name().is_none_or(|n| n.len() > 250) {
        return Err(format!(
            "{field} \"{}\": give a file name of 1 to 250 bytes (it is written under that name and \".tmp\" first)",
            path.display()
        ));
    }
    let Ok(meta) = std::fs::symlink_metadata(path) else { return Ok(()) };
    let kind = meta.file_type();
    let what = if kind.is_file() {
        return Ok(());
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    };
    Err(format!(
        "{field} \"{}\" is {what}; give the path of a file (torwart replaces it whole), or of none yet",
        path.display()
    ))
}

/// The longest file name of the usage spool: it is also written under
/// that name plus `.tmp` while it is replaced, and usage it cannot take
/// goes to `<name>.<ns since 1970>` beside it; a file name has at most 255
/// bytes.
pub const MAX_SPOOL_NAME: usize = 200;

impl Config {
    /// Where usage the database would not take at a stop is kept
    /// (`accounting.spool`, or its default).
    pub fn spool_path(&self) -> PathBuf {
        if let Some(p) = &self.accounting.spool {
            return p.clone();
        }
        match self.sqlite_file() {
            Some(path) => PathBuf::from(format!("{}.usage-spool", path.display())),
            None => PathBuf::from("/var/lib/torwart/usage.spool"),
        }
    }

    /// Where the last member database that compiled is kept (`last_good`,
    /// or its default); `None` if `last_good = ""`.
    pub fn last_good_path(&self) -> Option<PathBuf> {
        match &self.last_good {
            Some(p) if p.as_os_str().is_empty() => None,
            Some(p) => Some(p.clone()),
            None => Some(match self.sqlite_file() {
                Some(path) => PathBuf::from(format!("{}.last-good.json", path.display())),
                None => PathBuf::from("/var/lib/torwart/members.last-good.json"),
            }),
        }
    }

    /// The SQLite database's file (`sqlite://path` or a plain path), if
    /// the database is one.
    pub fn sqlite_file(&self) -> Option<PathBuf> {
        let db = self.database.as_str();
        let db = db.strip_prefix("sqlite://").or_else(|| db.strip_prefix("sqlite:")).unwrap_or(db);
        (!db.contains("://")).then(|| PathBuf::from(db.split('?').next().unwrap_or(db)))
    }
}

/// What the configuration is checked against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    /// CPUs the daemon may run on (empty: unknown, not checked).
    pub cpus: Vec<usize>,
    /// Bytes of memory (None: unknown, not checked).
    pub memory: Option<u64>,
}

/// The CPUs this process may run on (its affinity mask), ascending; empty
/// if the kernel does not say.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most
    // size_of::<cpu_set_t>() bytes into it, and CPU_ISSET reads within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set)).collect()
    }
}

/// `workers.cpus`: each CPU once, and one the process may run on.
fn check_cpus(cpus: &[usize], allowed: &[usize]) -> Result<(), String> {
    for (i, &c) in cpus.iter().enumerate() {
        if cpus[..i].contains(&c) {
            return Err(format!("workers.cpus: CPU {c} is listed twice (one worker per CPU)"));
        }
    }
    for &c in cpus {
        if !allowed.is_empty() && !allowed.contains(&c) {
            return Err(format!("workers.cpus: CPU {c} is not one this process may run on (allowed: {allowed:?})"));
        }
    }
    Ok(())
}

/// The machine's memory in bytes (`MemTotal` of /proc/meminfo), if known.
fn memory_total() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `engine.max_flows`: at least 1024, at most [`engine::MAX_FLOWS`], and
/// the tables of all workers must fit in the machine's memory; the message
/// says what the figure would take.
pub fn check_max_flows(max_flows: u32, workers: usize, memory: Option<u64>) -> Result<(), String> {
    let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
    let per_worker = engine::Config::flow_memory(max_flows);
    let total = per_worker.saturating_mul(workers as u64);
    if max_flows < 1024 {
        return Err(format!("engine.max_flows = {max_flows}: at least 1024"));
    }
    if max_flows > engine::MAX_FLOWS {
        return Err(format!(
            "engine.max_flows = {max_flows}: at most {} per worker (this figure would take {:.1} GiB per worker)",
            engine::MAX_FLOWS,
            gib(per_worker)
        ));
    }
    if let Some(memory) = memory.filter(|&m| total > m / 2) {
        return Err(format!(
            "engine.max_flows = {max_flows}: {workers} worker(s) would take {:.1} GiB for their flow tables, \
             more than half of this machine's {:.1} GiB",
            gib(total),
            gib(memory)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        database = "torwart.db"
        [[ports]]
        interface = "eth1"
        side = "inside"
        [[ports]]
        interface = "eth2"
        side = "outside"
    "#;

    #[test]
    fn minimal_file_takes_defaults() {
        let (c, k) = Config::parse(GOOD).unwrap();
        assert_eq!(c.io.backend, Backend::Xdp);
        assert_eq!(k.workers, 1);
        assert_eq!(k.established_timeout, Duration::from_secs(12 * 3600));
        assert_eq!(k.coalesce, Duration::from_micros(100));
        assert_eq!(k.xdp_socket, io::XdpConfig::default());
    }

    #[test]
    fn the_last_good_member_database_lies_beside_the_database_or_under_var_lib() {
        let (c, _) = Config::parse(GOOD).unwrap();
        assert_eq!(c.last_good_path(), Some(PathBuf::from("torwart.db.last-good.json")));
        let (c, _) = Config::parse(&GOOD.replace("torwart.db", "postgres://torwart@db/members")).unwrap();
        assert_eq!(c.last_good_path(), Some(PathBuf::from("/var/lib/torwart/members.last-good.json")));
        let (c, _) = Config::parse(&format!("last_good = \"/srv/lg.json\"\n{GOOD}")).unwrap();
        assert_eq!(c.last_good_path(), Some(PathBuf::from("/srv/lg.json")));
        let (c, _) = Config::parse(&format!("last_good = \"\"\n{GOOD}")).unwrap();
        assert_eq!(c.last_good_path(), None);
        let e = Config::parse(&format!("last_good = \"/tmp\"\n{GOOD}")).unwrap_err();
        assert!(e.contains("last_good \"/tmp\""), "{e}");
    }

    #[test]
    fn a_spool_whose_name_leaves_no_room_for_its_suffixes_is_refused() {
        let (c, _) = Config::parse(GOOD).unwrap();
        assert_eq!(c.spool_path(), PathBuf::from("torwart.db.usage-spool"));
        for (url, file) in [
            ("sqlite:///var/lib/torwart/m.db", Some("/var/lib/torwart/m.db")),
            ("sqlite:/var/lib/torwart/m.db?mode=rw", Some("/var/lib/torwart/m.db")),
            ("/var/lib/torwart/m.db", Some("/var/lib/torwart/m.db")),
            ("postgres://torwart@db/members", None),
        ] {
            let (c, _) = Config::parse(&GOOD.replace("torwart.db", url)).unwrap();
            assert_eq!(c.sqlite_file(), file.map(PathBuf::from), "{url}");
        }
        let long = "u".repeat(MAX_SPOOL_NAME + 1);
        let e = Config::parse(&format!("{GOOD}\n[accounting]\nspool = \"/var/lib/torwart/{long}\"")).unwrap_err();
        assert!(e.contains("accounting.spool \"/var/lib/torwart/uuu") && e.contains("file name is 201 bytes"), "{e}");
        let fits = "u".repeat(MAX_SPOOL_NAME);
        let (c, _) = Config::parse(&format!("{GOOD}\n[accounting]\nspool = \"/var/lib/torwart/{fits}\"")).unwrap();
        assert_eq!(c.spool_path().file_name().unwrap().len(), MAX_SPOOL_NAME);
        // The default spool is named after the database file.
        let db = "d".repeat(MAX_SPOOL_NAME);
        let e = Config::parse(&GOOD.replace("torwart.db", &db)).unwrap_err();
        assert!(e.starts_with("the database's usage spool \"ddd") && e.contains("212 bytes"), "{e}");
        // A spool path that is there but is no file: refused, not replaced.
        let dir = std::env::temp_dir().join(format!("torwart-spool-dir-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let link = dir.join("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("/etc/hostname", &link).unwrap();
        for (path, what) in
            [(dir.as_path(), "a directory"), (Path::new("/dev/null"), "not a regular file"), (&link, "a symbolic link")]
        {
            let e = Config::parse(&format!("{GOOD}\n[accounting]\nspool = \"{}\"", path.display())).unwrap_err();
            assert_eq!(e, format!("accounting.spool \"{}\" is {what}; give the path of a file (torwart replaces it whole), or of none yet", path.display()));
        }
        let e = Config::parse(&format!("{GOOD}\n[stats]\nfile = \"/dev/null\"")).unwrap_err();
        assert!(e.starts_with("stats.file \"/dev/null\" is not a regular file"), "{e}");
        let e = Config::parse(&format!("{GOOD}\n[stats]\nfile = \"{}\"", dir.display())).unwrap_err();
        assert!(e.starts_with("stats.file") && e.contains("is a directory"), "{e}");
        let e = Config::parse(&format!("{GOOD}\n[stats]\nfile = \"/run/{}\"", "s".repeat(251))).unwrap_err();
        assert!(e.contains("give a file name of 1 to 250 bytes"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
        for nameless in ["/", ""] {
            let e = Config::parse(&format!("{GOOD}\n[accounting]\nspool = \"{nameless}\"")).unwrap_err();
            assert!(e.starts_with(&format!("accounting.spool \"{nameless}\": its file name is 0 bytes")), "{e}");
        }
    }

    /// Workers that hand frames to each other need rings with room for a
    /// batch from every port, else none would ever receive.
    #[test]
    fn a_batch_the_handoff_rings_cannot_take_is_refused() {
        let with = |count: usize, batch: usize| {
            Config::parse(&format!("{GOOD}\n[workers]\ncount = {count}\n[io]\nbatch = {batch}"))
        };
        let e = with(2, 512).unwrap_err();
        assert!(
            e.starts_with("io.batch = 512 with 2 ports and 2 workers") && e.ends_with("give io.batch at most 256"),
            "{e}"
        );
        assert!(with(2, 256).is_ok());
        assert!(with(1, 1024).is_ok(), "one worker hands nothing over");
    }

    #[test]
    fn the_options_for_real_nics() {
        let text = format!(
            "{GOOD}\n[io]\nzero_copy = \"on\"\nneed_wakeup = false\nbusy_poll = \"50us\"\nbusy_poll_budget = 128"
        );
        let (_, k) = Config::parse(&text).unwrap();
        assert_eq!(k.xdp_socket.copy_mode, io::XskCopyMode::ZeroCopy);
        assert!(!k.xdp_socket.need_wakeup);
        assert_eq!(k.xdp_socket.busy_poll, Some(io::BusyPoll { usecs: 50, budget: 128 }));
        let (_, k) = Config::parse(&format!("{GOOD}\n[io]\nzero_copy = \"off\"")).unwrap();
        assert_eq!(k.xdp_socket.copy_mode, io::XskCopyMode::Copy);
        assert_eq!(k.xdp_socket.busy_poll, None);
    }

    #[test]
    fn the_example_in_the_docs_is_valid() {
        let text = include_str!("../../../docs/torwart.example.toml");
        // On the machine it was written for: CPUs 2 and 3 exist.
        let machine = Machine { cpus: (0..8).collect(), memory: Some(32 << 30) };
        let (c, k) = Config::parse_for(text, &machine).unwrap();
        assert_eq!(c.ports.len(), 2);
        assert_eq!(k.workers, 2);
    }

    /// A TOML error shows the line it stopped at: a database URL's
    /// password there is hidden (it would go to the journal).
    #[test]
    fn a_broken_database_line_does_not_show_its_password() {
        let text = GOOD.replace("database = \"torwart.db\"", "database = \"postgres://torwart:pa ss\\q@db/members\"");
        let e = Config::parse(&text).unwrap_err();
        assert!(e.contains("postgres://torwart:***@db/members") && !e.contains("pa ss"), "{e}");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (GOOD.replace("\"inside\"", "\"middle\""), "unknown variant `middle`"),
            (GOOD.replace("eth2", "eth1"), "listed twice"),
            (GOOD.replace("side = \"outside\"", "side = \"inside\""), "no outside port"),
            (format!("{GOOD}\n[engine]\nestablished_timeout = \"12 parsecs\""), "engine.established_timeout"),
            (format!("{GOOD}\n[engine]\nmax_flow = 5"), "unknown field `max_flow`"),
            (format!("{GOOD}\n[workers]\ncount = 0"), "1 to 256"),
            (format!("{GOOD}\n[workers]\ncoalesce = \"2ms\""), "workers.coalesce = \"2ms\": at most 1ms"),
            (format!("{GOOD}\n[workers]\ncoalesce = \"soon\""), "workers.coalesce"),
            (GOOD.replace("database = \"torwart.db\"", ""), "missing field `database`"),
            (format!("{GOOD}\n[engine]\nmax_flows = 4294967295"), "GiB per worker"),
            (format!("{GOOD}\n[engine]\nmax_flows = 100"), "at least 1024"),
            (format!("{GOOD}\n[workers]\ncpus = [1000]"), "CPU 1000 is not one this process may run on"),
            (format!("{GOOD}\n[workers]\ncpus = [0, 0, 0]"), "CPU 0 is listed twice"),
            (format!("{GOOD}\n[sync]\npeer = \"10.99.0.2:7400\""), "give local, peer and key_file together"),
            (format!("{GOOD}\n[io]\nzero_copy = \"yes\""), "unknown variant `yes`"),
            (format!("{GOOD}\n[io]\nbusy_poll = \"1s\""), "io.busy_poll = \"1s\": at most 10ms"),
            (format!("{GOOD}\n[io]\nbusy_poll = \"100ns\""), "io.busy_poll = \"100ns\": at least 1us"),
            (format!("{GOOD}\n[io]\nbusy_poll_budget = 0"), "io.busy_poll_budget = 0: give 1 to 1024"),
            (format!("{GOOD}\n[io]\nguard = false"), "io.guard applies to backend = \"af_packet\""),
            (format!("{GOOD}\n[io]\nadmission = false"), "io.admission applies to backend = \"af_packet\""),
            (
                format!("{GOOD}\n[io]\nbusy_poll = \"50us\"\nzero_copy = \"off\""),
                "only zero-copy sockets can busy-poll",
            ),
            (
                format!("{GOOD}\n[io]\nbackend = \"af_packet\"\nbusy_poll = \"50us\""),
                "io.busy_poll applies to backend = \"xdp\"",
            ),
            (
                format!("{GOOD}\n[sync]\nlocal = \"10.99.0.1\"\npeer = \"10.99.0.2:7400\"\nkey_file = \"k\""),
                "sync.local = \"10.99.0.1\": not an address and port",
            ),
            (
                format!("{GOOD}\n[sync]\nlocal = \"10.99.0.1:7400\"\npeer = \"[fd00::2]:7400\"\nkey_file = \"k\""),
                "different address families",
            ),
            (
                format!("{GOOD}\n[sync]\nlocal = \"10.99.0.1:7400\"\npeer = \"10.99.0.2:7400\"\nkey_file = \"k\"\ndatagram = 9000"),
                "sync.datagram = 9000: give 1024 to 8952 bytes",
            ),
            (
                format!("{GOOD}\n[sync]\nlocal = \"10.99.0.1:7400\"\npeer = \"10.99.0.1:7400\"\nkey_file = \"k\""),
                "the other box's own address",
            ),
            (
                format!("{GOOD}\n[sync]\nlocal = \"0.0.0.0:7400\"\npeer = \"10.99.0.2:7400\"\nkey_file = \"k\""),
                "sync.local = \"0.0.0.0:7400\": this box's own address and port on the sync link",
            ),
        ];
        for (text, want) in cases {
            let err = Config::parse(&text).unwrap_err();
            assert!(err.contains(want), "{err:?} should say {want:?}");
        }
    }

    #[test]
    fn a_sync_link() {
        let text = format!("{GOOD}\n[sync]\nlocal = \"10.99.0.1:7400\"\npeer = \"10.99.0.2:7400\"\nkey_file = \"/etc/torwart/sync.key\"");
        let (_, checked) = Config::parse(&text).unwrap();
        let pair = checked.pair.unwrap();
        assert_eq!((pair.local.to_string(), pair.peer.to_string()), ("10.99.0.1:7400".into(), "10.99.0.2:7400".into()));
        assert_eq!(Config::parse(GOOD).unwrap().1.pair, None);
    }

    #[test]
    fn flow_tables_must_fit_in_memory() {
        let gib = 1u64 << 30;
        assert!(check_max_flows(262_144, 2, Some(24 * gib)).is_ok());
        let err = check_max_flows(engine::MAX_FLOWS, 8, Some(8 * gib)).unwrap_err();
        assert!(err.contains("8 worker(s) would take") && err.contains("8.0 GiB"), "{err}");
        assert!(check_max_flows(engine::MAX_FLOWS, 1, None).is_ok());
    }

    #[test]
    fn naps_up_to_a_millisecond_are_allowed() {
        let text = format!("{GOOD}\n[workers]\nidle = \"sleep\"\ncoalesce = \"1ms\"");
        let (_, k) = Config::parse(&text).unwrap();
        assert_eq!(k.coalesce, Duration::from_millis(1));
        let (_, k) = Config::parse(&format!("{GOOD}\n[workers]\ncoalesce = \"0s\"")).unwrap();
        assert!(k.coalesce.is_zero());
    }
}
