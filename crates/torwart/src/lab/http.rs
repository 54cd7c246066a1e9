//! A tiny HTTP server for the lab: it answers every request with who it is
//! and who it sees (`you are ADDRESS:PORT`), so a client learns the address
//! its connection arrived with, the translation the gateway made. A request
//! with a body (an upload) is answered with the number of bytes received,
//! which tells that large packets crossed (path MTU discovery).
//!
//! One thread per listening socket, entered into the namespace first; one
//! short-lived thread per connection. Bounded: headers up to 8 KiB, bodies
//! up to 64 MiB, 10 s per connection. Stops when its flag is set.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

const MAX_HEADER: usize = 8 * 1024;
const MAX_BODY: usize = 64 << 20;

/// Serves `name` on `addrs` inside namespace `ns` until `stop` is set.
pub fn serve(ns: &str, name: &str, addrs: &[SocketAddr], stop: Arc<AtomicBool>) -> Result<Vec<JoinHandle<()>>, String> {
    let mut threads = Vec::new();
    for &addr in addrs {
        let (ns, name, stop) = (ns.to_owned(), name.to_owned(), Arc::clone(&stop));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        threads.push(std::thread::spawn(move || {
            let listener = super::netns::enter(&ns).and_then(|()| {
                let l = TcpListener::bind(addr).map_err(|e| format!("{name}: cannot listen on {addr}: {e}"))?;
                l.set_nonblocking(true).map_err(|e| e.to_string())?;
                Ok(l)
            });
            let listener = match listener {
                Ok(l) => {
                    let _ = ready_tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, peer)) => {
                        let name = name.clone();
                        std::thread::spawn(move || {
                            let _ = answer(stream, peer, &name);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }));
        ready_rx.recv().map_err(|_| "a server thread died".to_owned())??;
    }
    Ok(threads)
}

fn answer(mut s: TcpStream, peer: SocketAddr, name: &str) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 16 * 1024];
    let header_end = loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEADER {
            return Ok(());
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0)
        .min(MAX_BODY);
    if head.contains("expect: 100-continue") {
        s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let mut got = buf.len() - header_end;
    while got < length {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let body = if length > 0 {
        format!("{name}: received {got} bytes from {peer}\n")
    } else {
        format!("hello from {name}; you are {peer}\n")
    };
    let reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\nContent-Type: text/plain\r\n\r\n{body}",
        body.len()
    );
    s.write_all(reply.as_bytes())
}
