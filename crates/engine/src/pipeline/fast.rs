//! Tracking a packet with a transport key, and the fast path.
//!
//! A packet whose flow is known takes the fast path: it must come from the
//! side its direction comes from, its TCP segment must fit the connection's
//! state (RFC 9293's window checks, as [`crate::tcp`] keeps them), and it
//! leaves translated as the flow is, charged to the flow's account. The
//! flow's deadline moves with every packet. A segment of a TCP handshake
//! also times it, and a round trip it completes goes to the member's
//! account ([`crate::rtt`]). A packet without a flow goes to the slow path
//! (`admit`).

use super::{charge, ended, Charge, Engine, Lane};
use crate::conntrack::{Flow, Hit, ProtoState, Timeouts, NO_ACCOUNT};
use crate::counters::Reason;
use crate::rtt::{self, Sample};
use crate::tcp::{Refusal, Segment, TcpState};
use crate::time::Time;
use crate::{Side, Verdict};
use core::time::Duration;
use wire::classify::{Meta, L4};
use wire::tcp::TcpFlags;

impl Engine {
    /// Connection tracking and policy for the packet in `lane`, which has
    /// a transport key. Returns the verdict, the flow the packet belongs to
    /// and, if it is forwarded on a member's flow, the account it was
    /// charged to. Inlined into pass 3 (a call per packet cost about 50
    /// instructions of saved registers and a returned triple); the slow
    /// path it calls for a packet without a flow is not.
    #[inline(always)]
    pub(super) fn track(
        &mut self,
        now: Time,
        from: Side,
        m: &Meta,
        lane: Lane,
        frame: &mut [u8],
    ) -> (Verdict, Option<Hit>, Option<Charge>) {
        let seg = segment(m);
        if seg.as_ref().is_some_and(Segment::bad_flags) {
            return (self.drop(Reason::TcpBadFlags), None, None);
        }
        match self.current_hit(now, m, lane) {
            Some(h) => {
                let (v, charge) = self.fast_path(now, from, m, h, seg.as_ref(), frame);
                (v, Some(h), charge)
            }
            None => self.slow_path(now, from, m, seg.as_ref(), frame),
        }
    }

    /// The live flow of the packet in `lane`, if any: pass 2's hit,
    /// checked again if an earlier packet of this batch added or removed a
    /// flow since. An expired flow is removed (and counted) here.
    #[inline]
    fn current_hit(&mut self, now: Time, m: &Meta, lane: Lane) -> Option<Hit> {
        let hit = if self.ct.generation() == self.hits_generation {
            self.hits[lane]
        } else {
            match self.hits[lane] {
                // The flow was prefetched: checking it is cheaper than looking again.
                Some(h) if self.ct.flow(h.flow).is_live() && self.ct.flow(h.flow).keys[h.dir as usize] == m.key => {
                    Some(h)
                }
                _ => self.ct.lookup(self.hashes[lane], &m.key),
            }
        };
        match hit {
            Some(h) if self.ct.flow(h.flow).expires <= now => {
                self.ct.remove(h.flow);
                self.counters.flows_expired += 1;
                None
            }
            h => h,
        }
    }

    /// A packet of the known flow `h`. Returns the verdict and, if it is
    /// forwarded on a member's flow, the account it was charged to.
    #[inline]
    fn fast_path(
        &mut self,
        now: Time,
        from: Side,
        m: &Meta,
        h: Hit,
        seg: Option<&Segment>,
        frame: &mut [u8],
    ) -> (Verdict, Option<Charge>) {
        let dir = h.dir as usize;
        let f = self.ct.flow(h.flow);
        let (came_from, goes_to) = if dir == 0 { (f.orig_side, f.reply_side) } else { (f.reply_side, f.orig_side) };
        if from != came_from {
            return (self.drop(Reason::WrongSide), None);
        }
        let account = f.account;
        let up = (dir == 0) == (f.orig_side == Side::Inside);
        if account != NO_ACCOUNT && ended(&self.ct, &self.accounts, h.flow, account) {
            // A reload ended this member's flows (blocked, removed, renumbered).
            self.ct.remove(h.flow);
            return (self.drop(Reason::MemberBlocked), None);
        }
        let logging = self.ct.logs_changes();
        let (f, timeouts) = self.ct.flow_and_timeouts(h.flow);
        let state_before = if logging { tcp_state(f) } else { None };
        let (timeout_before, rtt) = match tcp_step(f, timeouts, dir, seg, now) {
            Ok(step) => step,
            Err(r) => return (self.drop(r), None),
        };
        // What the other box of a pair must hear of: the first answer (a
        // flow nobody answered is not worth a failover: its opener tries
        // again), a TCP connection established, or the first packet here of
        // a flow it made. The closing states it learns from the packets.
        // Without a pair nothing is logged, and no flow is synced.
        let changed = logging && {
            let established = tcp_state(f) == Some(TcpState::Established) && state_before != tcp_state(f);
            f.synced || (dir == 1 && !f.answered) || established
        };
        if dir == 1 {
            f.answered = true;
        }
        f.packets[dir] = f.packets[dir].wrapping_add(1);
        f.bytes[dir] += frame.len() as u64;
        let timeout = f.timeout(timeouts);
        f.expires = now + timeout;
        let settle = f.needs_settle();
        // A packet leaves as the other direction expects to see it: the
        // reverse of the other direction's key.
        let translate = f.translated.then(|| (f.keys[1 - dir].reversed(), f.nat_sums[dir]));
        let rtt = rtt.and_then(|s| Some((s.account_side(f.orig_side, f.reply_side)?, s.ns)));
        if timeout < timeout_before {
            // The wheel is lazy about later deadlines, not earlier ones.
            self.ct.reschedule(h.flow);
        }
        if settle {
            // Answered, or its handshake done (or a TCP flow reopened).
            self.counters.flows_evicted_half_open += u64::from(self.ct.settle(h.flow));
        }
        if changed {
            self.ct.touched(h.flow);
        }
        if let Some((out, sums)) = translate {
            // The packet's key is the flow's `keys[dir]` (the lookup matched
            // it): what the sums were worked out from.
            if wire::nat::translate_v4_summed(frame, m, &out, sums).is_err() {
                return (self.drop(Reason::NatUntranslatable), None);
            }
        }
        let charge = charge(&mut self.accounts, account, up, frame.len());
        if let (Some(_), Some((side, ns))) = (charge, rtt) {
            self.accounts.add_rtt(account, side, ns);
        }
        self.counters.fast_path += 1;
        (Verdict::Forward(goes_to), charge)
    }
}

/// The TCP segment of a packet, if it is TCP.
#[inline]
fn segment(m: &Meta) -> Option<Segment> {
    let L4::Tcp { flags, seq, ack, window, payload_len, wscale } = m.l4 else { return None };
    Some(Segment {
        syn: flags.contains(TcpFlags::SYN),
        ack: flags.contains(TcpFlags::ACK),
        fin: flags.contains(TcpFlags::FIN),
        rst: flags.contains(TcpFlags::RST),
        seq,
        ack_no: ack,
        window,
        // A first fragment holds only part of the segment; the rest may be
        // up to what an IP datagram can carry. Assume the most, so the
        // receiver's ACK of all of it passes.
        payload_len: if m.frag.is_some() { u16::MAX - 60 } else { payload_len },
        wscale,
    })
}

/// The flow's TCP state, if it is TCP.
#[inline]
fn tcp_state(f: &Flow) -> Option<TcpState> {
    match &f.state {
        ProtoState::Tcp(t) => Some(t.state),
        _ => None,
    }
}

/// Moves a TCP flow's connection state by segment `seg` in direction
/// `dir` at `now`, or refuses the segment. Returns the flow's timeout
/// before the move (zero for other protocols: only TCP can move to a state
/// with a shorter timeout, which the timer wheel must be told of), and the
/// round trip the segment completes if it is the handshake's ([`rtt`]).
#[inline]
fn tcp_step(
    f: &mut Flow,
    timeouts: &Timeouts,
    dir: usize,
    seg: Option<&Segment>,
    now: Time,
) -> Result<(Duration, Option<Sample>), Reason> {
    let (ProtoState::Tcp(t), Some(seg)) = (&mut f.state, seg) else { return Ok((Duration::ZERO, None)) };
    let state = t.state;
    t.handle(dir, seg).map_err(|r| match r {
        Refusal::OutOfWindow => Reason::TcpOutOfWindow,
        Refusal::RstOutOfWindow => Reason::TcpRstOutOfWindow,
        Refusal::SynInConnection => Reason::TcpSynInConnection,
    })?;
    let was_closed = matches!(state, TcpState::Close | TcpState::TimeWait);
    if was_closed && t.state == TcpState::SynSent {
        // Reopened: a new connection, unanswered until it is.
        f.answered = false;
    }
    let sample = if rtt::in_handshake(state, t.state) {
        rtt::handshake(&mut f.handshake_at, state, t.state, dir, seg, now)
    } else {
        None
    };
    Ok((timeouts.tcp(state), sample))
}
