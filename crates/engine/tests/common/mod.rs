//! What the engine's integration tests share: an engine on a virtual clock
//! fed frames built with [`wire::build`], and counters read by name.

use core::time::Duration;
use engine::{Config, Engine, Side, Time, Verdict};
use wire::build::Eth;
use wire::ethernet::MacAddr;

pub const IN: Eth = Eth { src: MacAddr([2, 0, 0, 0, 0, 1]), dst: MacAddr([2, 0, 0, 0, 0, 0x11]), vlan: None };
pub const OUT: Eth = Eth { src: MacAddr([2, 0, 0, 0, 0, 2]), dst: MacAddr([2, 0, 0, 0, 0, 0x12]), vlan: None };

/// The Ethernet header of frames arriving on `side`.
pub fn eth(side: Side) -> &'static Eth {
    match side {
        Side::Inside => &IN,
        Side::Outside => &OUT,
    }
}

/// A frame written by one of [`wire::build`]'s builders.
pub fn frame(f: impl FnOnce(&mut [u8]) -> Result<usize, wire::BuildError>) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let n = f(&mut buf).expect("frame fits");
    buf.truncate(n);
    buf
}

/// An engine with a virtual clock, fed one frame or one batch at a time.
#[derive(Debug)]
pub struct Harness {
    pub e: Engine,
    pub now: Time,
}

impl Harness {
    pub fn with(cfg: Config) -> Harness {
        let now = Time::from_secs(1_000);
        Harness { e: Engine::new(cfg, now), now }
    }

    /// Moves the clock on and runs the timers once.
    pub fn advance(&mut self, d: Duration) {
        self.now = self.now + d;
        self.e.poll_timers(self.now);
    }

    pub fn send(&mut self, from: Side, mut frame: Vec<u8>) -> Verdict {
        let mut v = [Verdict::Held];
        self.e.process(self.now, from, std::slice::from_mut(&mut frame), &mut v);
        v[0]
    }

    /// The frames the engine held and has now let go, with where they go.
    pub fn released(&mut self) -> Vec<(Side, Vec<u8>)> {
        let mut out = Vec::new();
        self.e.poll_released(|to, b| out.push((to, b.to_vec())));
        out
    }

    /// A counter by the name the stats file gives it.
    pub fn count(&self, name: &str) -> u64 {
        let entries = self.e.counters().entries();
        entries.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("no counter {name}")).1
    }
}
