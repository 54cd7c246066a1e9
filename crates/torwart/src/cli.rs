//! The operator's commands over the running daemon's API (`docs/api.md`):
//! `torwart status`, `top`, `members`, `flows`, `reload`. They speak HTTP
//! over the daemon's Unix socket (`api.socket`, default
//! `/run/torwart/api.sock`), whose file mode decides who may ask; the
//! documents are read back with the daemon's own types
//! (`control::api::json`), so the two cannot drift apart.

use control::api::json::{MemberDoc, MembersDoc, StatusDoc};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use serde::de::DeserializeOwned;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a command got no answer it could use.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no torwart daemon answers on {0} (is it running? `systemctl status torwart`; another socket: --socket)")]
    NotRunning(PathBuf),
    #[error("cannot open the API socket {0}: permission denied (run as root, or as a member of the socket's group)")]
    Denied(PathBuf),
    #[error("API socket {path}: {source}")]
    Socket { path: PathBuf, source: std::io::Error },
    #[error("the daemon refused {what}: {status} {message}")]
    Refused { what: String, status: StatusCode, message: String },
    #[error("the daemon's answer to {what} is not what this torwart understands ({why}); are both the same version?")]
    Garbled { what: String, why: String },
    #[error("the daemon did not answer {what} within {} s", TIMEOUT.as_secs())]
    Timeout { what: String },
}

const TIMEOUT: Duration = Duration::from_secs(10);

/// A connection-per-request client on the daemon's socket.
#[derive(Debug)]
pub struct Client {
    socket: PathBuf,
    runtime: tokio::runtime::Runtime,
}

impl Client {
    pub fn new(socket: &Path) -> Client {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
        Client { socket: socket.to_owned(), runtime }
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::GET, path)
    }

    pub fn post<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::POST, path)
    }

    fn call<T: DeserializeOwned>(&self, method: Method, path: &str) -> Result<T, ClientError> {
        let what = format!("{method} {path}");
        let answer = self.runtime.block_on(async { tokio::time::timeout(TIMEOUT, self.request(method, path)).await });
        let (status, body) = answer.map_err(|_| ClientError::Timeout { what: what.clone() })??;
        if !status.is_success() {
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            return Err(ClientError::Refused { what, status, message });
        }
        serde_json::from_slice(&body).map_err(|e| ClientError::Garbled { what, why: e.to_string() })
    }

    async fn request(&self, method: Method, path: &str) -> Result<(StatusCode, Bytes), ClientError> {
        let stream = tokio::net::UnixStream::connect(&self.socket).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                ClientError::NotRunning(self.socket.clone())
            }
            std::io::ErrorKind::PermissionDenied => ClientError::Denied(self.socket.clone()),
            _ => ClientError::Socket { path: self.socket.clone(), source: e },
        })?;
        let broken =
            |e: hyper::Error| ClientError::Socket { path: self.socket.clone(), source: std::io::Error::other(e) };
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.map_err(broken)?;
        tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "torwart")
            .body(Full::new(Bytes::new()))
            .map_err(|e| ClientError::Socket { path: self.socket.clone(), source: std::io::Error::other(e) })?;
        let resp = sender.send_request(req).await.map_err(broken)?;
        let status = resp.status();
        let body = resp.into_body().collect().await.map_err(broken)?.to_bytes();
        Ok((status, body))
    }
}

/// `torwart status`.
pub fn status(c: &Client, json: bool) -> Result<(), ClientError> {
    let s: StatusDoc = c.get("/api/status")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
        return Ok(());
    }
    print!("{}", status_text(&s));
    Ok(())
}

fn status_text(s: &StatusDoc) -> String {
    let mut out = String::new();
    let forwarding = if s.forwarding { "forwarding" } else { "NOT forwarding" };
    out += &format!(
        "torwart {}, up {}, {forwarding}, policy generation {} (published {})\n",
        s.version,
        humantime::format_duration(Duration::from_secs(s.uptime_s)),
        s.generation,
        s.published_generation
    );
    if s.policy_from_last_good {
        out += "policy: STARTED FROM THE LAST GOOD member database, because the database gave none (down, or \
                refused); it is reloaded as soon as the database gives one (`torwart db check`)\n";
    } else if s.policy_refused {
        out += "policy: the latest reload was REFUSED, so the running policy is older than the member \
                database (`torwart db check` lists the problems)\n";
    }
    out += &format!(
        "traffic: up {} down {}, {} in {} out, {:.0} drops/s\n",
        bits(s.rates.up_bps),
        bits(s.rates.down_bps),
        pps(s.rates.rx_pps),
        pps(s.rates.tx_pps),
        s.rates.drops_ps
    );
    out += &format!("flows {}, NAT bindings {}, drops since start {}\n", s.flows, s.nat_bindings, s.totals.drops);
    for w in &s.workers {
        out +=
            &format!("worker {}: load {:>3.0} %, {} in, {} flows\n", w.worker, w.load * 100.0, pps(w.rx_pps), w.flows);
    }
    for p in &s.ports {
        let state = if p.present { "present" } else { "MISSING" };
        out += &format!("port {} ({}): {state}, lost {} times\n", p.interface, p.side, p.lost);
    }
    if let Some(p) = &s.pair {
        let peer = match p.peer_protocol {
            Some(v) if p.peer_alive => format!("alive (protocol {v}, this box {})", p.protocol),
            _ if p.peer_alive => "alive".to_owned(),
            _ => "SILENT".to_owned(),
        };
        out += &format!(
            "pair: sync {}, peer {peer}, {}, {}, {} queued\n",
            if p.running { "running" } else { "STOPPED" },
            if p.ready { "ready to take over" } else { "NOT ready" },
            if p.complete { "holds the peer's whole state" } else { "does NOT hold the peer's whole state" },
            p.queued
        );
    }
    out
}

/// `torwart members`.
pub fn members(c: &Client, sort: &str, limit: usize, json: bool) -> Result<(), ClientError> {
    let m: MembersDoc = c.get(&format!("/api/members?sort={sort}&limit={limit}"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&m).unwrap_or_default());
        return Ok(());
    }
    print!("{}", members_table(&m.members));
    println!("({} of {} members)", m.members.len(), m.total);
    Ok(())
}

fn members_table(members: &[MemberDoc]) -> String {
    let mut out = format!(
        "{:>8}  {:<16} {:<8} {:>11} {:>11} {:>10} {:>10} {:>9} {:>9} {:>9}\n",
        "member", "name", "status", "up", "down", "up total", "down total", "queue", "rtt in", "rtt out"
    );
    let ms = |us: Option<u64>| us.map_or_else(|| "-".to_owned(), |u| format!("{:.1} ms", u as f64 / 1e3));
    for m in members {
        let name: String = m.name.as_deref().unwrap_or("(gone)").chars().filter(|c| !c.is_control()).take(16).collect();
        out += &format!(
            "{:>8}  {:<16} {:<8} {:>11} {:>11} {:>10} {:>10} {:>9} {:>9} {:>9}\n",
            m.member_id,
            name,
            m.status.as_deref().unwrap_or("-"),
            bits(m.up_bps),
            bits(m.down_bps),
            bytes(m.up_bytes),
            bytes(m.down_bytes),
            ms(m.queue_delay_us),
            ms(m.rtt_inside_us),
            ms(m.rtt_outside_us),
        );
    }
    out
}

/// `torwart flows`: the query string is the API's (`member=`, `address=`, ...).
pub fn flows(c: &Client, query: &str, json: bool) -> Result<(), ClientError> {
    let f: serde_json::Value = c.get(&format!("/api/flows?{query}"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&f).unwrap_or_default());
        return Ok(());
    }
    let empty = Vec::new();
    let list = f.get("flows").and_then(|l| l.as_array()).unwrap_or(&empty);
    let s = |v: &serde_json::Value, k: &str| match v.get(k) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Null) | None => "-".to_owned(),
        Some(other) => other.to_string(),
    };
    println!(
        "{:<6} {:<12} {:>8} {:<40} {:<40} {:<22} {:>8}",
        "proto", "state", "left s", "inside", "outside", "public", "member"
    );
    for x in list {
        println!(
            "{:<6} {:<12} {:>8} {:<40} {:<40} {:<22} {:>8}",
            s(x, "protocol"),
            s(x, "state"),
            s(x, "remaining_s"),
            s(x, "inside"),
            s(x, "outside"),
            s(x, "public"),
            s(x, "member_id")
        );
    }
    let truncated = f.get("truncated").and_then(|t| t.as_bool()).unwrap_or(false);
    println!("({} flows{})", list.len(), if truncated { ", more not shown: raise --limit" } else { "" });
    Ok(())
}

/// `torwart reload`.
pub fn reload(c: &Client) -> Result<(), ClientError> {
    let _: serde_json::Value = c.post("/api/reload")?;
    println!("reload requested; `torwart status` shows the generation, the daemon's log what changed");
    Ok(())
}

/// `torwart top`: status and the busiest members, refreshed every
/// `interval` until q or Ctrl-C; r, u and i sort by rate, usage or id.
pub fn top(c: &Client, mut sort: String, interval: Duration) -> Result<(), ClientError> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(sig, std::sync::Arc::clone(&stop));
    }
    let keys = Keys::raw();
    let rows = terminal_rows().saturating_sub(12).clamp(5, 200);
    let result = loop {
        let frame = c
            .get::<StatusDoc>("/api/status")
            .and_then(|s| Ok((s, c.get::<MembersDoc>(&format!("/api/members?sort={sort}&limit={rows}"))?)));
        let (s, m) = match frame {
            Ok(f) => f,
            Err(e) => break Err(e),
        };
        let mut out = String::from("\x1b[H\x1b[2J");
        out += &status_text(&s);
        out += &format!("\nmembers by {sort} (r: rate, u: usage, i: id, q: quit)\n");
        out += &members_table(&m.members);
        print!("{}", out.replace('\n', "\r\n"));
        let _ = std::io::stdout().flush();
        match keys.wait(interval, &stop) {
            Some(b'q') | None => break Ok(()),
            Some(b'r') => sort = "rate".into(),
            Some(b'u') => sort = "usage".into(),
            Some(b'i') => sort = "id".into(),
            Some(_) => {}
        }
    };
    drop(keys);
    println!();
    result
}

/// The terminal in non-canonical mode for single keys, restored on drop.
struct Keys {
    saved: Option<libc::termios>,
}

impl Keys {
    fn raw() -> Keys {
        // SAFETY: isatty, tcgetattr and tcsetattr read and write the termios we own.
        unsafe {
            if libc::isatty(0) != 1 {
                return Keys { saved: None };
            }
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return Keys { saved: None };
            }
            let saved = t;
            t.c_lflag &= !(libc::ICANON | libc::ECHO);
            t.c_cc[libc::VMIN] = 0;
            t.c_cc[libc::VTIME] = 0;
            libc::tcsetattr(0, libc::TCSANOW, &t);
            Keys { saved: Some(saved) }
        }
    }

    /// A key pressed within `d`, `Some(0)` if none, `None` when asked to stop.
    fn wait(&self, d: Duration, stop: &std::sync::atomic::AtomicBool) -> Option<u8> {
        let deadline = std::time::Instant::now() + d;
        while std::time::Instant::now() < deadline {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                return None;
            }
            if self.saved.is_none() {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            let mut fd = libc::pollfd { fd: 0, events: libc::POLLIN, revents: 0 };
            // SAFETY: poll reads one pollfd we own; read writes one byte into ours.
            unsafe {
                if libc::poll(&mut fd, 1, 50) == 1 {
                    let mut b = 0u8;
                    if libc::read(0, (&mut b as *mut u8).cast(), 1) == 1 {
                        return Some(b);
                    }
                }
            }
        }
        Some(0)
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            // SAFETY: restores the termios saved in raw().
            unsafe { libc::tcsetattr(0, libc::TCSANOW, t) };
        }
    }
}

fn terminal_rows() -> usize {
    // SAFETY: TIOCGWINSZ writes one winsize we own.
    unsafe {
        let mut w: libc::winsize = std::mem::zeroed();
        if libc::ioctl(1, libc::TIOCGWINSZ, &mut w) == 0 && w.ws_row > 0 {
            return w.ws_row as usize;
        }
    }
    40
}

fn bits(bps: f64) -> String {
    scaled(bps, "bit/s")
}

fn pps(v: f64) -> String {
    scaled(v, "p/s")
}

fn scaled(v: f64, unit: &str) -> String {
    let (v, p) = if v >= 1e9 {
        (v / 1e9, "G")
    } else if v >= 1e6 {
        (v / 1e6, "M")
    } else if v >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    format!("{v:.1} {p}{unit}")
}

fn bytes(b: u64) -> String {
    let b = b as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{b} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_daemon_is_named_with_its_socket() {
        let c = Client::new(Path::new("/nonexistent/torwart/api.sock"));
        let e = c.get::<StatusDoc>("/api/status").unwrap_err();
        assert!(matches!(e, ClientError::NotRunning(_)), "{e}");
        assert!(e.to_string().contains("/nonexistent/torwart/api.sock"), "{e}");
    }

    #[test]
    fn a_refused_policy_is_the_status_second_line() {
        let mut s = StatusDoc { forwarding: true, generation: 4, ..Default::default() };
        assert!(!status_text(&s).contains("REFUSED"));
        s.policy_refused = true;
        let text = status_text(&s);
        assert!(text.lines().nth(1).unwrap_or_default().starts_with("policy: the latest reload was REFUSED"), "{text}");
        s.policy_from_last_good = true;
        let text = status_text(&s);
        assert!(text.lines().nth(1).unwrap_or_default().starts_with("policy: STARTED FROM THE LAST GOOD"), "{text}");
    }

    #[test]
    fn the_pair_line_says_whether_the_box_holds_the_peers_state_and_both_protocols() {
        let pair = control::stats::PairStats {
            running: true,
            ready: true,
            peer_alive: true,
            protocol: 2,
            peer_protocol: Some(1),
            ..Default::default()
        };
        let mut s = StatusDoc { forwarding: true, pair: Some(pair), ..Default::default() };
        let text = status_text(&s);
        assert!(
            text.contains(
                "pair: sync running, peer alive (protocol 1, this box 2), ready to take over, does NOT hold the \
                 peer's whole state, 0 queued"
            ),
            "{text}"
        );
        if let Some(p) = s.pair.as_mut() {
            (p.complete, p.peer_alive) = (true, false);
        }
        assert!(status_text(&s).contains("peer SILENT, ready to take over, holds the peer's whole state"));
    }

    #[test]
    fn figures_read_in_units() {
        assert_eq!(bits(2_500_000.0), "2.5 Mbit/s");
        assert_eq!(bytes(1_500), "1.5 kB");
        assert_eq!(pps(12.0), "12.0 p/s");
    }
}
