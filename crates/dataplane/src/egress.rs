//! Egress: where a frame the engine forwards leaves, and what happens to it
//! on the way out.
//!
//! Two modes:
//! - **Static**: each side has one port and frames leave unchanged by the
//!   port of the side the engine chose. For in-memory tests and the
//!   benchmark, where there is no kernel to mirror.
//! - **Routed** (production): the router's FIB, mirrored from the kernel,
//!   picks the egress interface and next hop; the frame gets the next hop's
//!   MAC, its TTL or hop limit is decremented, and what a router must answer
//!   (time exceeded, unreachable, too big) is answered.

use crate::counters::{DataplaneCounters, Drop};
use engine::{Side, Time};
use io::{Batch, PacketBuf};
use wire::classify::Meta;

/// Egress counters that are not drops.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EgressStats {
    /// Route table generation in use (0 in static mode).
    pub routes_generation: u64,
}

/// A worker's egress.
#[derive(Debug)]
pub struct Egress {
    mode: Mode,
}

#[derive(Debug)]
enum Mode {
    Static { port_of_side: [usize; 2] },
}

impl Egress {
    /// Static mode: frames for `Side::Inside` leave by port `inside`, for
    /// `Side::Outside` by port `outside` (port indexes of the worker).
    pub fn fixed(inside: usize, outside: usize) -> Egress {
        Egress { mode: Mode::Static { port_of_side: [inside, outside] } }
    }

    /// Called once per loop before any frame: picks up new route tables.
    #[inline]
    pub(crate) fn begin_batch(&mut self) {}

    /// Checks a frame on arrival, before the engine (and so before it can
    /// create any state): in routed mode, a TTL that runs out here is
    /// answered with ICMP time exceeded.
    #[inline]
    pub(crate) fn check_arrival(
        &mut self,
        _now: Time,
        _port: usize,
        _frame: &mut PacketBuf,
        _meta: &Meta,
        _tx: &mut [Batch],
    ) -> Result<(), Drop> {
        match &self.mode {
            Mode::Static { .. } => Ok(()),
        }
    }

    /// Sends `frame` (forwarded by the engine towards `to`; it came in by
    /// port `from` if known) to the tx batch of its egress port. The frame's
    /// buffer is swapped, not copied. Drops are counted in `counters`.
    #[inline]
    pub(crate) fn forward(
        &mut self,
        _now: Time,
        _from: Option<usize>,
        to: Option<Side>,
        frame: &mut PacketBuf,
        tx: &mut [Batch],
        counters: &mut DataplaneCounters,
    ) {
        match &self.mode {
            Mode::Static { port_of_side } => {
                let Some(side) = to else {
                    counters.drop(Drop::RouterOther);
                    return;
                };
                let p = port_of_side[side.index()];
                queue(tx, p, frame, counters);
            }
        }
    }

    pub(crate) fn stats(&self) -> EgressStats {
        EgressStats::default()
    }
}

/// Appends `frame` to port `p`'s tx batch (swapping buffers).
#[inline]
fn queue(tx: &mut [Batch], p: usize, frame: &mut PacketBuf, counters: &mut DataplaneCounters) {
    match tx.get_mut(p) {
        Some(batch) => {
            if !batch.push_swap(frame) {
                counters.drop(Drop::TxRingFull)
            }
        }
        None => counters.drop(Drop::NotViaPort),
    }
}
