//! Brings the box's web page to the machine the lab runs on, as an
//! operator brings it from a box in service (`ssh -L
//! 9680:/run/torwart/api.sock BOX`): this forwarder listens on the host's
//! 127.0.0.1 and carries each connection to the daemon's API socket, whose
//! group is the access control (over TCP, without a token, the daemon
//! serves no member's data). A person opens `http://127.0.0.1:PORT/`.
//!
//! One thread accepts; each connection gets a thread that connects and
//! copies one way, and one that copies the other. Stops when its flag is
//! set.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Listens on the host's 127.0.0.1 (`port`, else any free one) and forwards
/// to the API socket `target`; returns the host's address.
pub fn start(target: &Path, port: u16, stop: Arc<AtomicBool>) -> Result<SocketAddr, String> {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .or_else(|_| TcpListener::bind(("127.0.0.1", 0)))
        .map_err(|e| format!("cannot listen on the host's 127.0.0.1: {e}"))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let target = target.to_owned();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((client, _)) => {
                    let target = target.clone();
                    std::thread::spawn(move || {
                        let _ = carry(client, &target);
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    Ok(addr)
}

fn carry(client: TcpStream, target: &PathBuf) -> Result<(), String> {
    client.set_nonblocking(false).map_err(|e| e.to_string())?;
    let server = UnixStream::connect(target).map_err(|e| e.to_string())?;
    // An idle connection ends after a minute (both ways, below).
    server.set_read_timeout(Some(Duration::from_secs(60))).map_err(|e| e.to_string())?;
    client.set_read_timeout(Some(Duration::from_secs(60))).map_err(|e| e.to_string())?;
    let (c2, s2) = (client.try_clone().map_err(|e| e.to_string())?, server.try_clone().map_err(|e| e.to_string())?);
    let up = std::thread::spawn(move || {
        copy(&c2, &s2);
        // The request is complete: the daemon may answer and close.
        let _ = s2.shutdown(Shutdown::Write);
    });
    copy(&server, &client);
    // The answer is over (or the daemon is gone, or it idled): end both
    // ways, so that the other thread's read returns too.
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
    let _ = up.join();
    Ok(())
}

fn copy(mut from: impl Read, mut to: impl Write) {
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
}
