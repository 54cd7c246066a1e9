//! Brings the box's web page to the machine the lab runs on: the daemon
//! serves its API on 127.0.0.1 inside the box's namespace (a loopback
//! address, so no token), and this forwarder listens on the host's
//! 127.0.0.1 and carries each connection into the namespace. A person
//! opens `http://127.0.0.1:PORT/` (or tunnels to it with `ssh -L`).
//!
//! One thread accepts; each connection gets a thread that enters the box's
//! namespace to connect, and two that copy. Stops when its flag is set.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Listens on the host's 127.0.0.1 (`port`, else any free one) and forwards
/// to `target` inside namespace `ns`; returns the host's address.
pub fn start(ns: &str, target: SocketAddr, port: u16, stop: Arc<AtomicBool>) -> Result<SocketAddr, String> {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .or_else(|_| TcpListener::bind(("127.0.0.1", 0)))
        .map_err(|e| format!("cannot listen on the host's 127.0.0.1: {e}"))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((client, _)) => {
                    let ns = ns.clone();
                    std::thread::spawn(move || {
                        let _ = carry(client, &ns, target);
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    Ok(addr)
}

fn carry(client: TcpStream, ns: &str, target: SocketAddr) -> Result<(), String> {
    client.set_nonblocking(false).map_err(|e| e.to_string())?;
    super::netns::enter(ns)?;
    let server = TcpStream::connect_timeout(&target, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    let (c2, s2) = (client.try_clone().map_err(|e| e.to_string())?, server.try_clone().map_err(|e| e.to_string())?);
    let up = std::thread::spawn(move || copy(c2, s2));
    copy(server, client);
    let _ = up.join();
    Ok(())
}

fn copy(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
