//! Per-member round-trip times, measured passively from TCP handshakes.
//!
//! The box sits between a member's devices and the internet and sees both
//! halves of every TCP handshake (RFC 9293 §3.5) it forwards: the opener's
//! SYN at `t0`, the answer's SYN-ACK at `t1`, the opener's ACK of it at
//! `t2`. `t1 - t0` is the round trip from the box to the *responder* and
//! back, `t2 - t1` the round trip to the *opener* and back. For a flow a
//! member opened from the inside, that is the outside RTT (box ↔ internet)
//! and the inside RTT (box ↔ device: the member's Wi-Fi, their switch);
//! for a flow opened from the outside to a member (a port forward, an IPv6
//! opening) the other way round. An operator comparing the two sees at a
//! glance whether a member's slowness is theirs, the box's or the
//! internet's. A hairpinned flow (one member reaching another's forward)
//! has another member's device as its responder: that leg is not the
//! flow's member's and is not recorded; the opener's leg is.
//!
//! The times are those at which the engine is handed the segments, before
//! shaping. A segment that waits in the member's shaper leaves the box
//! later than it was timed, so the wait counts in the round trip of the
//! side it leaves towards (a SYN-ACK queued for the member's download
//! lengthens the inside RTT): the box's own share, which the shaper's
//! statistics show apart.
//!
//! Karn's rule (Karn and Partridge 1987; RFC 6298 §3): a segment that was
//! sent twice gives no sample, since its answer may be the first copy's.
//! A SYN seen again before the answer drops the responder's sample; a
//! SYN-ACK seen again, or the opener's SYN seen again after the answer,
//! drops the opener's. The handshake is timed only as the box sees it: a
//! copy lost before the box (a SYN-ACK the responder had to resend) is
//! invisible, and its resend makes a sample too long by the resender's
//! retransmission timeout. [`Rtt::min_ns`] is the estimate such outliers
//! do not move.
//!
//! Samples longer than [`MAX_SAMPLE_NS`] (4 s) are dropped: with the
//! initial retransmission timeout of 1 s (RFC 6298 §2), a handshake leg that
//! long was resent, where the box saw it (Karn's rule dropped it) or where
//! it did not; either way it is not a path's round trip.
//!
//! Cost. A flow keeps one timestamp, [`Flow::handshake_at`](crate::Flow):
//! the time of the segment the next sample is measured from (the SYN, then
//! the SYN-ACK), or [`UNTIMED`]. It sits in 8 bytes of the flow's third
//! cache line that were padding, a line the packet path writes for every
//! packet anyway (the flow's counters): no memory per flow beyond what the
//! flow had, and no cache line touched that was not. Per packet, the fast
//! path compares the connection's state before and after the segment (both
//! in cache) and does more only in the handshake's two states, out of
//! line. A member's estimates live in its
//! [`Account`](crate::members::Account), in 20 bytes of the cache line the
//! packet path has fetched already. Measured on `campus-2018` (`torwart
//! bench`, one core, 48 alternated pairs of runs against the engine
//! without it): +4 ns per packet in the engine (median of the pairs'
//! differences; the pairs themselves vary by ±15 ns), and no more
//! instructions per packet (callgrind: 1,142 before, 1,140 after).
//!
//! Not done: TCP timestamp option samples (RFC 7323 §4, TSval echoed by
//! TSecr) on established flows. They need the option parsed by the
//! classifier (`wire`), and a sample in flight per direction kept where the
//! packet path would read it for every segment.

use crate::tcp::{Segment, TcpState};
use crate::time::Time;
use crate::Side;

/// [`Flow::handshake_at`](crate::Flow) of a flow with nothing to time: not
/// opened by a SYN the box saw, already timed, or made ambiguous by a
/// retransmission.
pub const UNTIMED: Time = Time::MAX;

/// Longest sample kept, in nanoseconds: a handshake leg beyond this was
/// retransmitted (see the module docs), and it is what a `u32` of
/// nanoseconds holds with room to spare.
pub const MAX_SAMPLE_NS: u32 = 4_000_000_000;

/// A member's round-trip time on one side of the box, as one core (or,
/// merged, several) measured it. `samples == 0`: not measured (the other
/// fields are then 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rtt {
    /// Smoothed RTT, nanoseconds: each sample moves it 1/8 of the way
    /// (RFC 6298's SRTT, α = 1/8), the first sets it.
    pub srtt_ns: u32,
    /// The smallest sample, nanoseconds: the path's RTT without queueing
    /// (and without the outliers of unseen retransmissions).
    pub min_ns: u32,
    /// Samples taken (saturating). An [`Account`](crate::members::Account)
    /// counts at most 65,535 per core: a weight for [`Rtt::merge`] and a
    /// "measured" flag more than a statistic.
    pub samples: u32,
}

impl Rtt {
    /// Takes one sample of `ns` nanoseconds (at most [`MAX_SAMPLE_NS`]).
    #[inline]
    pub fn add(&mut self, ns: u32) {
        let (srtt, min, n) = (self.srtt_ns, self.min_ns, self.samples);
        if n == 0 {
            self.srtt_ns = ns;
            self.min_ns = ns;
        } else {
            // Between the old estimate and the sample: fits a u32.
            self.srtt_ns = (i64::from(srtt) + (i64::from(ns) - i64::from(srtt)) / 8) as u32;
            self.min_ns = min.min(ns);
        }
        self.samples = n.saturating_add(1);
    }

    pub fn is_measured(&self) -> bool {
        self.samples != 0
    }

    /// Folds another core's estimate of the same member and side into this
    /// one: the mean of the smoothed RTTs weighted by samples (truncated to
    /// the nanosecond), the smaller minimum, the samples added (saturating).
    /// An unmeasured side changes nothing.
    pub fn merge(&mut self, other: &Rtt) {
        let o = *other;
        let (a, b) = (u64::from(self.samples), u64::from(o.samples));
        if b == 0 {
            return;
        }
        if a == 0 {
            *self = o;
            return;
        }
        let mean = (u64::from(self.srtt_ns) * a + u64::from(o.srtt_ns) * b) / (a + b);
        // A mean of two u32s is a u32.
        self.srtt_ns = mean as u32;
        self.min_ns = self.min_ns.min(o.min_ns);
        self.samples = self.samples.saturating_add(o.samples);
    }
}

/// Which end of a connection a handshake sample is the round trip to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// The end that answered the SYN: `t1 - t0`.
    Responder,
    /// The end that sent the SYN: `t2 - t1`.
    Opener,
}

/// A round trip measured from a handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sample {
    pub(crate) end: End,
    pub(crate) ns: u32,
}

impl Sample {
    /// The side of the member's account ([`crate::members::INSIDE`] or
    /// `OUTSIDE`) this sample measures, for a flow opened from `orig_side`
    /// whose replies come from `reply_side`; `None` for the responder of a
    /// hairpinned flow (another member's device, not the flow's member).
    #[inline]
    pub(crate) fn account_side(&self, orig_side: Side, reply_side: Side) -> Option<usize> {
        // A flow opened from the inside is the opener's; one opened from
        // the outside is its responder's.
        let (side, members_end) = match self.end {
            End::Opener => (orig_side, orig_side == Side::Inside),
            End::Responder => (reply_side, orig_side == Side::Outside),
        };
        (side == Side::Outside || members_end).then_some(side.index())
    }
}

/// True if a segment that took a connection from state `before` to `after`
/// may concern the handshake's timing: the one test the packet path pays
/// for every TCP segment.
#[inline]
pub(crate) fn in_handshake(before: TcpState, after: TcpState) -> bool {
    matches!(before, TcpState::SynSent | TcpState::SynRecv) || matches!(after, TcpState::SynSent | TcpState::SynRecv)
}

/// Times a handshake by segment `seg`, accepted by the tracker in
/// direction `dir` (0: from the opener) at `now`, which took the connection
/// from state `before` to `after`. `at` is the flow's
/// [`handshake_at`](crate::Flow): what the next sample is measured from,
/// kept here. Returns the sample the segment completes, if any. Call only
/// when [`in_handshake`] says so (otherwise it changes nothing).
///
/// Out of line: a few segments per connection come here, and inlined it
/// would make the fast path's TCP step too large to inline in turn.
#[cold]
#[inline(never)]
pub(crate) fn handshake(
    at: &mut Time,
    before: TcpState,
    after: TcpState,
    dir: usize,
    seg: &Segment,
    now: Time,
) -> Option<Sample> {
    use TcpState::{Close, SynRecv, SynSent, TimeWait};
    let bare_syn = seg.syn && !seg.ack;
    let (next, end) = match (before, after) {
        // A new connection on a closed 4-tuple: its SYN starts the clock.
        (TimeWait | Close, SynSent) if dir == 0 && bare_syn => (now, None),
        // The opener's SYN again before any answer: its answer may be the
        // first copy's (Karn).
        (SynSent, SynSent) => (UNTIMED, None),
        // The answer: the responder's round trip ends, the opener's begins.
        (SynSent, SynRecv) if dir == 1 && seg.syn && seg.ack => (now, Some(End::Responder)),
        // Any SYN again after the answer (a SYN-ACK resent, the opener's
        // SYN resent): the opener's ACK may answer either copy (Karn).
        (SynRecv, SynRecv) if seg.syn => (UNTIMED, None),
        // The opener's acknowledgement completes the handshake.
        (SynRecv, _) if dir == 0 && seg.ack && !seg.syn && !seg.rst && after != SynRecv => (UNTIMED, Some(End::Opener)),
        (SynRecv, SynRecv) => return None,
        // Anything else into or out of the handshake (a simultaneous open,
        // the ends starting over on an open 4-tuple, a reset): nothing to time.
        _ => (UNTIMED, None),
    };
    let from = core::mem::replace(at, next);
    let end = end?;
    if from == UNTIMED || now < from {
        return None;
    }
    let ns = now.0 - from.0;
    (ns <= u64::from(MAX_SAMPLE_NS)).then_some(Sample { end, ns: ns as u32 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_sample_sets_the_estimate_and_later_ones_move_it_an_eighth() {
        let mut r = Rtt::default();
        assert!(!r.is_measured());
        r.add(8_000_000);
        assert_eq!((r.srtt_ns, r.min_ns, r.samples), (8_000_000, 8_000_000, 1));
        r.add(16_000_000);
        assert_eq!((r.srtt_ns, r.min_ns, r.samples), (9_000_000, 8_000_000, 2));
        r.add(1_000_000);
        assert_eq!((r.srtt_ns, r.min_ns, r.samples), (9_000_000 - 1_000_000, 1_000_000, 3));
        // The largest sample kept does not overflow the estimate.
        r.add(MAX_SAMPLE_NS);
        assert_eq!(r.srtt_ns, 8_000_000 + (MAX_SAMPLE_NS - 8_000_000) / 8);
    }

    #[test]
    fn samples_saturate() {
        let mut r = Rtt { srtt_ns: 5, min_ns: 5, samples: u32::MAX };
        r.add(5);
        assert_eq!(r.samples, u32::MAX);
        r.merge(&Rtt { srtt_ns: 5, min_ns: 1, samples: 7 });
        assert_eq!((r.min_ns, r.samples), (1, u32::MAX));
    }

    #[test]
    fn merging_weighs_by_samples_and_keeps_the_smaller_minimum() {
        let mut a = Rtt { srtt_ns: 10_000, min_ns: 4_000, samples: 3 };
        a.merge(&Rtt { srtt_ns: 2_000, min_ns: 1_000, samples: 1 });
        assert_eq!(a, Rtt { srtt_ns: 8_000, min_ns: 1_000, samples: 4 });
        // Unmeasured on either part: the measured one stands.
        let before = a;
        a.merge(&Rtt::default());
        assert_eq!(a, before);
        let mut none = Rtt::default();
        none.merge(&a);
        assert_eq!(none, a);
    }

    #[test]
    fn each_leg_goes_to_the_members_side() {
        use crate::members::{INSIDE, OUTSIDE};
        use Side::{Inside, Outside};
        let s = |end| Sample { end, ns: 1 };
        // Opened by a member's device.
        assert_eq!(s(End::Opener).account_side(Inside, Outside), Some(INSIDE));
        assert_eq!(s(End::Responder).account_side(Inside, Outside), Some(OUTSIDE));
        // Opened from the outside to a member's device.
        assert_eq!(s(End::Opener).account_side(Outside, Inside), Some(OUTSIDE));
        assert_eq!(s(End::Responder).account_side(Outside, Inside), Some(INSIDE));
        // Hairpinned: the responder is another member's device.
        assert_eq!(s(End::Opener).account_side(Inside, Inside), Some(INSIDE));
        assert_eq!(s(End::Responder).account_side(Inside, Inside), None);
    }
}
