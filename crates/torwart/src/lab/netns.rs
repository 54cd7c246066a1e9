//! Network namespaces for the lab and the end-to-end tests: made with
//! iproute2, entered per thread with `setns`, deleted when the owner drops
//! (also after a panic or an error half-way).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `ip ARGS` (in the caller's namespace); the error quotes the command and what it printed.
pub fn ip(args: &[&str]) -> Result<(), String> {
    run_checked("ip", args)
}

/// Runs a command and fails with its stderr if it fails.
pub fn run_checked(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out =
        Command::new(cmd).args(args).stdin(Stdio::null()).output().map_err(|e| format!("cannot run {cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("`{cmd} {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// The namespaces a lab made; all of them are deleted on drop, and the
/// processes started in them are killed first.
#[derive(Debug, Default)]
pub struct Namespaces {
    names: Vec<String>,
    children: Vec<(String, Child)>,
}

impl Namespaces {
    pub fn new() -> Namespaces {
        Namespaces::default()
    }

    /// Makes namespace `name` (removing a stale one of that name first) with loopback up.
    pub fn add(&mut self, name: &str) -> Result<(), String> {
        let _ = Command::new("ip").args(["netns", "del", name]).stderr(Stdio::null()).status();
        ip(&["netns", "add", name])?;
        self.names.push(name.to_owned());
        self.exec(name, "ip", &["link", "set", "lo", "up"])?;
        // A router namespace must forward; a host one does not mind.
        let _ = self.exec(name, "sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
        let _ = self.exec(name, "sysctl", &["-qw", "net.ipv6.conf.all.forwarding=1"]);
        Ok(())
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Runs a command in namespace `ns` and fails with its stderr if it fails.
    pub fn exec(&self, ns: &str, cmd: &str, args: &[&str]) -> Result<(), String> {
        let mut all = vec!["netns", "exec", ns, cmd];
        all.extend_from_slice(args);
        run_checked("ip", &all).map_err(|e| e.replacen("`ip netns exec ", "`(in ", 1))
    }

    /// Runs a command in `ns` with a deadline; returns its output whatever its status.
    pub fn output(&self, ns: &str, cmd: &str, args: &[&str], limit: Duration) -> Result<Output, String> {
        let mut all = vec!["netns", "exec", ns, "timeout", "-k", "1"];
        let secs = format!("{}", limit.as_secs_f64());
        all.push(&secs);
        all.push(cmd);
        all.extend_from_slice(args);
        Command::new("ip").args(&all).stdin(Stdio::null()).output().map_err(|e| format!("cannot run {cmd}: {e}"))
    }

    /// Starts a long-running process in `ns`; it is killed when the lab ends.
    /// A process of the same name that has exited is forgotten (a restart);
    /// one that still runs is an error.
    pub fn spawn(&mut self, what: &str, ns: &str, cmd: &str, args: &[&str], log: Option<File>) -> Result<(), String> {
        if self.alive(what) {
            return Err(format!("{what} runs already"));
        }
        self.children.retain(|(w, _)| w != what);
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, cmd]).args(args).stdin(Stdio::null());
        match log {
            Some(f) => {
                let f2 = f.try_clone().map_err(|e| e.to_string())?;
                c.stdout(f).stderr(f2);
            }
            None => {
                c.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let child = c.spawn().map_err(|e| format!("cannot start {what} ({cmd}): {e}"))?;
        self.children.push((what.to_owned(), child));
        Ok(())
    }

    /// Sends SIGTERM to the process started as `what` and waits up to `limit`
    /// for it to exit; returns its exit status (None if it had to be killed).
    pub fn stop(&mut self, what: &str, limit: Duration) -> Option<std::process::ExitStatus> {
        let i = self.children.iter().position(|(w, _)| w == what)?;
        let (_, mut child) = self.children.remove(i);
        // SAFETY: kill() with a pid we spawned and a valid signal number; at
        // worst the process is already gone and kill returns ESRCH.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// The process id of the process started as `what`.
    pub fn pid(&self, what: &str) -> Option<u32> {
        self.children.iter().find(|(w, _)| w == what).map(|(_, c)| c.id())
    }

    /// True while the process started as `what` runs.
    pub fn alive(&mut self, what: &str) -> bool {
        self.children.iter_mut().find(|(w, _)| w == what).is_some_and(|(_, c)| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for (_, mut c) in self.children.drain(..) {
            // SAFETY: as in `stop`.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in self.names.drain(..).rev() {
            let _ = Command::new("ip").args(["netns", "del", &n]).stderr(Stdio::null()).status();
        }
    }
}

/// Moves the calling thread into namespace `ns` (threads it spawns later follow it).
pub fn enter(ns: &str) -> Result<(), String> {
    let f = File::open(format!("/var/run/netns/{ns}")).map_err(|e| format!("namespace {ns}: {e}"))?;
    // SAFETY: setns with a namespace file descriptor we own; it changes only
    // the calling thread's network namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(format!("cannot enter namespace {ns}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}
