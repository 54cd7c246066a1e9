//! Long-lived traffic for the pair's lab, in threads entered into the
//! namespaces (no scripts, so that an installed torwart can run it): an
//! echo server for TCP and UDP on the far side, and on the member's side
//! chatty TCP connections (a line every 50 ms, each timing the longest wait
//! between two echoes: the outage it saw), idle connections (like SSH
//! sessions: a line at the start and one at the end), and a UDP stream (a
//! datagram every 10 ms). The servers remember every source address a
//! connection or stream came from: a NAT port that changed shows two.
//! Every client counts the bytes it sent and received.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Sources seen by name ("c3", "i17", "udp").
pub type SourceMap = BTreeMap<String, BTreeSet<SocketAddr>>;
pub type Sources = Arc<Mutex<SourceMap>>;

/// TCP and UDP echo on `addr` in namespace `ns`, until `stop`.
pub fn echo_server(ns: &str, addr: SocketAddr, stop: Arc<AtomicBool>) -> Result<Sources, String> {
    let sources: Sources = Arc::default();
    let (ns, seen) = (ns.to_owned(), Arc::clone(&sources));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let bound = super::netns::enter(&ns).and_then(|()| {
            let t = TcpListener::bind(addr).map_err(|e| format!("echo server {addr}: {e}"))?;
            let u = UdpSocket::bind(addr).map_err(|e| format!("echo server {addr}/udp: {e}"))?;
            t.set_nonblocking(true).map_err(|e| e.to_string())?;
            u.set_read_timeout(Some(Duration::from_millis(50))).map_err(|e| e.to_string())?;
            Ok((t, u))
        });
        let (tcp, udp) = match bound {
            Ok(b) => {
                let _ = ready_tx.send(Ok(()));
                b
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        let udp_seen = Arc::clone(&seen);
        let udp_stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !udp_stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = udp.recv_from(&mut buf) {
                    // The stream's sources are remembered; bulk flows' (each
                    // from a new port) are not.
                    if buf[..n].starts_with(b"udp ") {
                        note(&udp_seen, "udp", from);
                    }
                    let _ = udp.send_to(&buf[..n], from);
                }
            }
        });
        while !stop.load(Ordering::Relaxed) {
            match tcp.accept() {
                Ok((conn, from)) => {
                    let seen = Arc::clone(&seen);
                    std::thread::spawn(move || echo(conn, from, &seen));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    ready_rx.recv().map_err(|_| "the echo server died".to_owned())??;
    Ok(sources)
}

fn note(seen: &Sources, name: &str, from: SocketAddr) {
    let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
    if !s.get(name).is_some_and(|v| v.contains(&from)) {
        s.entry(name.to_owned()).or_default().insert(from);
    }
}

fn echo(conn: TcpStream, from: SocketAddr, seen: &Sources) {
    let _ = conn.set_nonblocking(false);
    let Ok(mut out) = conn.try_clone() else { return };
    let mut lines = BufReader::new(conn);
    let mut line = String::new();
    while lines.read_line(&mut line).is_ok_and(|n| n > 0) {
        if let Some(name) = line.split_whitespace().next() {
            note(seen, name, from);
        }
        if out.write_all(line.as_bytes()).is_err() {
            return;
        }
        line.clear();
    }
}

/// What one client saw.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// The longest wait between two answers once open, seconds.
    pub longest: f64,
    /// What ended it early ("reset" for a TCP RST).
    pub error: Option<String>,
    /// When it ended early: seconds after it was opened.
    pub ended_after: f64,
    pub sent: u64,
    pub received: u64,
}

/// `n` chatty connections to `server` from namespace `ns`, each a line every
/// 50 ms, for `run`.
pub fn chatty(ns: &str, server: SocketAddr, n: usize, run: Duration) -> JoinHandle<Vec<Seen>> {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        if let Err(e) = super::netns::enter(&ns) {
            return vec![Seen { error: Some(e), ..Default::default() }; n];
        }
        let end = Instant::now() + run;
        let threads: Vec<_> = (0..n)
            .map(|i| {
                std::thread::sleep(Duration::from_millis(10));
                std::thread::spawn(move || talk(server, &format!("c{i}"), end, Duration::from_millis(50)))
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap_or_default()).collect()
    })
}

/// One connection: a line every `every` until `end`, each answer awaited.
fn talk(server: SocketAddr, name: &str, end: Instant, every: Duration) -> Seen {
    let mut seen = Seen::default();
    let opened = Instant::now();
    let result = (|| -> std::io::Result<()> {
        let s = TcpStream::connect_timeout(&server, Duration::from_secs(10))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut out = s.try_clone()?;
        let mut lines = BufReader::new(s);
        let (mut last, mut k, mut line) = (Instant::now(), 0u64, String::new());
        while Instant::now() < end {
            let msg = format!("{name} {k}\n");
            out.write_all(msg.as_bytes())?;
            seen.sent += msg.len() as u64;
            line.clear();
            if lines.read_line(&mut line)? == 0 {
                return Err(std::io::Error::new(ErrorKind::UnexpectedEof, "closed"));
            }
            seen.received += line.len() as u64;
            seen.longest = seen.longest.max(last.elapsed().as_secs_f64());
            last = Instant::now();
            k += 1;
            std::thread::sleep(every);
        }
        Ok(())
    })();
    if let Err(e) = result {
        seen.error = Some(if e.kind() == ErrorKind::ConnectionReset { "reset".into() } else { e.to_string() });
        seen.ended_after = opened.elapsed().as_secs_f64();
    }
    seen
}

/// Idle connections: opened (a line each) by [`Idle::open`], and asked
/// again by [`Idle::check`].
#[derive(Debug)]
pub struct Idle {
    conns: Vec<(String, Option<Conn>, Seen)>,
}

impl Idle {
    /// `n` connections to `server` from namespace `ns`, each answered once.
    pub fn open(ns: &str, server: SocketAddr, n: usize) -> Result<Idle, String> {
        let ns = ns.to_owned();
        std::thread::spawn(move || {
            super::netns::enter(&ns)?;
            let conns = (0..n)
                .map(|i| {
                    let name = format!("i{i}");
                    let mut seen = Seen::default();
                    let conn = exchange(server, &name, &mut seen, None);
                    (name, conn, seen)
                })
                .collect();
            Ok(Idle { conns })
        })
        .join()
        .map_err(|_| "the idle connections' thread died".to_owned())?
    }

    /// A line on every connection, each answered (or why not).
    pub fn check(mut self) -> Vec<Seen> {
        for (name, conn, seen) in &mut self.conns {
            if let Some(c) = conn.take() {
                exchange(SocketAddr::from(([0, 0, 0, 0], 0)), name, seen, Some(c));
            }
        }
        self.conns.into_iter().map(|(_, _, s)| s).collect()
    }
}

type Conn = (TcpStream, BufReader<TcpStream>);

/// One line and its echo, on `conn` or a new connection to `server`.
fn exchange(server: SocketAddr, name: &str, seen: &mut Seen, conn: Option<Conn>) -> Option<Conn> {
    let r = (|| -> std::io::Result<Conn> {
        let (mut out, mut lines) = match conn {
            Some(c) => c,
            None => {
                let s = TcpStream::connect_timeout(&server, Duration::from_secs(10))?;
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                (s.try_clone()?, BufReader::new(s))
            }
        };
        let msg = format!("{name} {}\n", seen.sent);
        out.write_all(msg.as_bytes())?;
        seen.sent += msg.len() as u64;
        let mut line = String::new();
        if lines.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(ErrorKind::UnexpectedEof, "closed"));
        }
        seen.received += line.len() as u64;
        Ok((out, lines))
    })();
    match r {
        Ok(c) => Some(c),
        Err(e) => {
            seen.error = Some(if e.kind() == ErrorKind::ConnectionReset { "reset".into() } else { e.to_string() });
            None
        }
    }
}

/// Many flows at once: from each address of `sources` (in namespace `ns`),
/// one datagram to `server` from each of `per_source` ports (from 1024 up),
/// each from its own socket: a new flow on the gateway, answered by the
/// echo; at most `rate` a second. Returns the datagrams sent and the
/// seconds it took.
pub fn bulk(
    ns: &str,
    sources: Vec<std::net::Ipv4Addr>,
    per_source: u16,
    server: SocketAddr,
    rate: u32,
) -> Result<(u64, f64), String> {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        super::netns::enter(&ns)?;
        let t0 = Instant::now();
        let mut sent = 0;
        for src in sources {
            for port in 1024..1024u16.saturating_add(per_source) {
                let Ok(s) = UdpSocket::bind((src, port)) else { continue };
                if s.send_to(b"bulk", server).is_ok() {
                    sent += 1;
                }
                if sent % 1000 == 0 {
                    let due = Duration::from_secs_f64(sent as f64 / f64::from(rate));
                    std::thread::sleep(due.saturating_sub(t0.elapsed()));
                }
            }
        }
        Ok((sent, t0.elapsed().as_secs_f64()))
    })
    .join()
    .map_err(|_| "the bulk sender died".to_owned())?
}

/// A datagram every 10 ms to `server` from namespace `ns` for `run`; the
/// longest wait between two echoes.
pub fn udp_stream(ns: &str, server: SocketAddr, run: Duration) -> JoinHandle<Seen> {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        let mut seen = Seen::default();
        let r = (|| -> Result<(), String> {
            super::netns::enter(&ns)?;
            let s = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
            s.connect(server).map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_millis(5))).map_err(|e| e.to_string())?;
            let end = Instant::now() + run;
            let (mut last, mut next, mut k, mut buf) = (None::<Instant>, Instant::now(), 0u64, [0u8; 256]);
            while Instant::now() < end {
                if Instant::now() >= next {
                    let msg = format!("udp {k}");
                    if s.send(msg.as_bytes()).is_ok() {
                        seen.sent += msg.len() as u64;
                    }
                    k += 1;
                    next += Duration::from_millis(10);
                }
                if let Ok(n) = s.recv(&mut buf) {
                    seen.received += n as u64;
                    if let Some(l) = last {
                        seen.longest = seen.longest.max(l.elapsed().as_secs_f64());
                    }
                    last = Some(Instant::now());
                }
            }
            Ok(())
        })();
        seen.error = r.err();
        seen
    })
}
