//! torwart's per-core packet pipeline, as pure logic.
//!
//! An [`Engine`] owns everything one worker core needs to decide about
//! packets: the flow table ([`conntrack`]), fragment tracking ([`frag`]),
//! and its [`Counters`]. It takes a batch of frames from one side
//! ([`Engine::process`]), rewrites them in place where needed, and gives a
//! [`Verdict`] per frame. It never reads a clock (`now` is an argument),
//! never touches a socket, never takes a lock and never allocates on the
//! packet path, so the same code runs under the live dataplane, under
//! `torwart replay` on captures, and under tests with virtual time.
//!
//! Calling order, per worker loop iteration:
//! 1. [`Engine::process`] for each received batch (inside or outside);
//! 2. [`Engine::poll_released`] for frames the engine held and now lets go
//!    (fragments that came before their first fragment);
//! 3. [`Engine::poll_timers`] once per loop, to expire flows and fragments.
//!
//! The stages of DESIGN.md's per-packet flow sit in [`pipeline`]: parse →
//! conntrack (fast path for known flows) → policy for new flows → verdict.
//! Member lookup, NAT, accounting and shaping slot in between conntrack
//! and verdict without changing the batch structure.

pub mod conntrack;
pub mod counters;
pub mod frag;
pub mod members;
pub mod nat;
pub mod pipeline;
pub mod rtt;
pub mod shaping;
pub mod table;
pub mod tcp;
pub mod time;
pub mod wheel;

pub use conntrack::{Flow, Timeouts};
pub use counters::{Counters, DropReason, Reason};
pub use pipeline::{Config, Engine, InstallRefusal, Installed, Parsed, SyncChange, Synced, MAX_BATCH, MAX_FLOWS};
pub use shaping::ShapingConfig;
pub use time::Time;

/// The two sides of the box.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
#[repr(u8)]
pub enum Side {
    /// Towards the members (core routers).
    Inside = 0,
    /// Towards the internet (border routers).
    Outside = 1,
}

impl Side {
    #[inline]
    pub const fn other(self) -> Side {
        match self {
            Side::Inside => Side::Outside,
            Side::Outside => Side::Inside,
        }
    }

    #[inline]
    pub const fn index(self) -> usize {
        self as usize
    }

    pub const fn name(self) -> &'static str {
        match self {
            Side::Inside => "inside",
            Side::Outside => "outside",
        }
    }
}

/// What happens to one frame.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Verdict {
    /// Send it out towards this side (the frame may have been rewritten).
    Forward(Side),
    /// Drop it, for this reason (already counted).
    Drop(DropReason),
    /// The engine copied it and will hand it out later through
    /// [`Engine::poll_released`] (or drop and count it); the caller's
    /// buffer is free.
    Held,
}

/// Hints the CPU to bring in the first two cache lines of a frame: the
/// Ethernet, IP and transport headers of every frame the classifier reads
/// in full. A frame written by a NIC or on another core is not in this
/// core's cache, and its first read would stall.
#[inline(always)]
pub fn prefetch_headers(bytes: &[u8]) {
    let p = bytes.as_ptr();
    prefetch(p);
    prefetch(p.wrapping_add(64));
}

/// Hints the CPU to bring `p`'s cache line in; never faults, whatever `p` is.
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint: it does not dereference in the language
    // sense and cannot fault, even on an invalid address.
    unsafe {
        core::arch::x86_64::_mm_prefetch(p as *const i8, core::arch::x86_64::_MM_HINT_T0)
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
