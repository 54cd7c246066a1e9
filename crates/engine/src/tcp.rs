//! TCP connection tracking: the state machine and the window check.
//!
//! A middlebox sees both directions of a connection but is neither end, so
//! it follows the ends instead of driving them. The states are Linux
//! conntrack's (`SYN_SENT` ... `TIME_WAIT`, `CLOSE`), and each has its own
//! timeout ([`crate::Timeouts`]). The window check follows the one Linux
//! uses (G. van Rooij, "Real Stateful TCP Packet Filtering in IP Filter"):
//! for each direction we keep the highest sequence number sent (`end`), the
//! highest the receiver has allowed (`maxend`) and the largest window seen
//! (`maxwin`), and a segment must fall inside those bounds.
//!
//! What that buys (RFC 5961's concern, for a middlebox): a RST or SYN that
//! is not in the window cannot tear down or reset a connection, because the
//! tracker refuses it before the state changes; an in-window RST closes the
//! flow (the end will accept it too), an in-window SYN on an open connection
//! is passed without changing state (the end answers it with a challenge
//! ACK). A SYN on a flow in `TIME_WAIT` or `CLOSE` reopens it, as a new
//! connection reusing the 4-tuple would.
//!
//! Flows picked up mid-stream (the box restarted, the flow is older than the
//! box's state) cannot know the window scale and start *liberal*: bounds are
//! learnt but not enforced, except that RSTs are still checked once both
//! sides have been seen.

/// Linux conntrack's TCP states.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[repr(u8)]
pub enum TcpState {
    SynSent,
    SynRecv,
    Established,
    FinWait,
    CloseWait,
    LastAck,
    TimeWait,
    Close,
}

impl TcpState {
    pub const ALL: [TcpState; 8] = [
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::Established,
        TcpState::FinWait,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::TimeWait,
        TcpState::Close,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TcpState::SynSent => "syn_sent",
            TcpState::SynRecv => "syn_recv",
            TcpState::Established => "established",
            TcpState::FinWait => "fin_wait",
            TcpState::CloseWait => "close_wait",
            TcpState::LastAck => "last_ack",
            TcpState::TimeWait => "time_wait",
            TcpState::Close => "close",
        }
    }
}

/// The TCP fields the tracker reads from a segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
    pub seq: u32,
    pub ack_no: u32,
    pub window: u16,
    pub payload_len: u16,
    /// Window-scale option (only read on SYNs).
    pub wscale: Option<u8>,
}

impl Segment {
    /// True for flag combinations no conforming stack sends.
    pub fn bad_flags(&self) -> bool {
        (self.syn && (self.fin || self.rst)) || !(self.syn || self.ack || self.rst)
    }

    fn end(&self) -> u32 {
        self.seq
            .wrapping_add(u32::from(self.payload_len))
            .wrapping_add(u32::from(self.syn))
            .wrapping_add(u32::from(self.fin))
    }
}

/// What one direction of the connection has sent and been allowed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Peer {
    /// Highest sequence number sent, plus one.
    end: u32,
    /// Highest sequence number the other side's window allowed.
    maxend: u32,
    /// Largest (scaled) window advertised by this side.
    maxwin: u32,
    /// Sequence number just past this side's FIN.
    fin_end: u32,
    /// Window scale applied to this side's windows (0 unless both offered).
    scale: u8,
    /// The window scale this side offered in its SYN, [`NO_SCALE`] if none.
    offer: u8,
    /// [`SEEN`], [`FIN_SENT`], [`FIN_ACKED`]: one byte, so that a peer is
    /// 20 bytes and a flow's TCP state 48 (`Flow` has room for its NAT
    /// checksum changes).
    flags: u8,
}

/// This side has sent a packet.
const SEEN: u8 = 1;
/// This side has sent a FIN.
const FIN_SENT: u8 = 2;
/// This side's FIN has been acknowledged by the other.
const FIN_ACKED: u8 = 4;

impl Peer {
    #[inline]
    fn seen(&self) -> bool {
        self.flags & SEEN != 0
    }

    #[inline]
    fn fin_sent(&self) -> bool {
        self.flags & FIN_SENT != 0
    }

    #[inline]
    fn fin_acked(&self) -> bool {
        self.flags & FIN_ACKED != 0
    }
}

const NO_SCALE: u8 = 0xff;

/// Refusals the tracker can give; the engine turns them into drop reasons.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Refusal {
    OutOfWindow,
    RstOutOfWindow,
    SynInConnection,
}

/// Least acknowledgement lag accepted below what the other side sent (Linux's
/// MAXACKWINCONST); the acknowledging side's largest window counts if larger.
const MAX_ACK_WINDOW: u32 = 66_000;

#[inline]
fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

#[inline]
fn after(a: u32, b: u32) -> bool {
    before(b, a)
}

/// Tracking state of one TCP connection. Direction 0 is the side that opened it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpTrack {
    pub state: TcpState,
    liberal: bool,
    /// A bare SYN from the opener was let through without changing state
    /// (a new connection on a 4-tuple we still hold); `syn_seq` is its ISN.
    syn_pending: bool,
    /// ISN of the opener's latest bare SYN.
    syn_seq: u32,
    /// The handshake completed (or the connection was picked up in the
    /// middle): Linux's `IPS_ASSURED` for TCP. A handshake the other side
    /// refused with a RST ends in `Close` without it.
    established: bool,
    peer: [Peer; 2],
}

impl TcpTrack {
    /// A connection opened by `syn` (a SYN without ACK) in direction 0.
    pub fn open(syn: &Segment) -> TcpTrack {
        let mut t = TcpTrack {
            state: TcpState::SynSent,
            liberal: false,
            syn_pending: false,
            syn_seq: 0,
            established: false,
            peer: [Peer::default(); 2],
        };
        t.start(syn);
        t
    }

    /// A connection seen first in the middle (loose pick-up), from direction 0.
    pub fn pick_up(seg: &Segment) -> TcpTrack {
        let end = seg.end();
        let win = u32::from(seg.window).max(1);
        let mut p = Peer { end, maxend: end, maxwin: win, flags: SEEN, offer: NO_SCALE, ..Peer::default() };
        if seg.fin {
            p.flags |= FIN_SENT;
            p.fin_end = end;
        }
        TcpTrack {
            state: if seg.fin { TcpState::FinWait } else { TcpState::Established },
            liberal: true,
            syn_pending: false,
            syn_seq: 0,
            established: true,
            peer: [p, Peer { offer: NO_SCALE, ..Peer::default() }],
        }
    }

    fn start(&mut self, syn: &Segment) {
        let end = syn.end();
        let offer = syn.wscale.map_or(NO_SCALE, |w| w.min(14));
        self.peer = [
            Peer { end, maxend: end, maxwin: u32::from(syn.window).max(1), offer, flags: SEEN, ..Peer::default() },
            Peer { offer: NO_SCALE, ..Peer::default() },
        ];
        self.state = TcpState::SynSent;
        self.liberal = false;
        self.syn_pending = false;
        self.established = false;
        self.syn_seq = syn.seq;
    }

    /// The other side's first packet: its SYN (a SYN-ACK, or a bare SYN in a
    /// simultaneous open). Window scaling applies only if both offered it.
    fn answer(&mut self, seg: &Segment) {
        let end = seg.end();
        let offer = seg.wscale.map_or(NO_SCALE, |w| w.min(14));
        let both = self.peer[0].offer != NO_SCALE && offer != NO_SCALE;
        self.peer[0].scale = if both { self.peer[0].offer } else { 0 };
        self.peer[1] = Peer {
            end,
            maxend: end,
            maxwin: u32::from(seg.window).max(1),
            scale: if both { offer } else { 0 },
            offer,
            flags: SEEN,
            ..Peer::default()
        };
        if seg.ack {
            // The opener may now send up to what the answer's window allows.
            self.peer[0].maxend = seg.ack_no.wrapping_add(u32::from(seg.window).max(1));
        }
        self.state = TcpState::SynRecv;
    }

    /// Does `ack` acknowledge the opener's SYN? Anything from the SYN itself
    /// up to all the data it carried (TCP Fast Open: the server may refuse
    /// the data and acknowledge only the SYN).
    fn acks_syn(&self, ack: u32) -> bool {
        !before(ack, self.syn_seq.wrapping_add(1)) && !after(ack, self.peer[0].end)
    }

    pub fn is_liberal(&self) -> bool {
        self.liberal
    }

    /// The handshake completed once (or the connection was picked up in
    /// the middle), whatever the state now.
    pub fn established(&self) -> bool {
        self.established
    }

    /// True once both directions have carried packets.
    pub fn answered(&self) -> bool {
        self.peer[1].seen()
    }

    /// Feeds one segment travelling in direction `dir` (0 = from the opener).
    /// On refusal the state is unchanged.
    pub fn handle(&mut self, dir: usize, seg: &Segment) -> Result<(), Refusal> {
        let s = dir;

        // A new connection on an old 4-tuple.
        if seg.syn && !seg.ack && dir == 0 && matches!(self.state, TcpState::TimeWait | TcpState::Close) {
            self.start(seg);
            return Ok(());
        }

        // The answer to the SYN: initialise the other side.
        if seg.syn && seg.ack && dir == 1 && matches!(self.state, TcpState::SynSent | TcpState::SynRecv) {
            if !self.acks_syn(seg.ack_no) {
                return Err(Refusal::OutOfWindow);
            }
            self.answer(seg);
            return Ok(());
        }

        // The answer to a SYN we let through on an open connection: the ends
        // started over (one of them lost its state); so do we, liberally,
        // since the opener's SYN options are gone.
        if seg.syn && seg.ack && dir == 1 && self.syn_pending && seg.ack_no == self.syn_seq.wrapping_add(1) {
            let syn = Segment { syn: true, seq: self.syn_seq, window: 1, ..Segment::default() };
            self.start(&syn);
            self.answer(seg);
            self.liberal = true;
            return Ok(());
        }

        if !self.peer[1].seen() && !self.liberal {
            // Only the opener has spoken. Before the SYN-ACK, all the opener
            // may do is retransmit its SYN or give up; the other side may
            // only refuse (RST acknowledging the SYN).
            if seg.rst {
                let ok = if dir == 1 { seg.ack && self.acks_syn(seg.ack_no) } else { true };
                if !ok {
                    return Err(Refusal::RstOutOfWindow);
                }
                self.state = TcpState::Close;
                return Ok(());
            }
            if dir == 0 && seg.syn && !seg.ack {
                self.start(seg);
                return Ok(());
            }
            if dir == 1 && seg.syn {
                // Simultaneous open: the other end also sent a bare SYN.
                self.answer(seg);
                return Ok(());
            }
            return Err(Refusal::OutOfWindow);
        }

        if !self.peer[s].seen() {
            // Liberal pick-up, first packet of the other direction: learn it.
            let end = seg.end();
            self.peer[s] = Peer {
                end,
                maxend: end,
                maxwin: u32::from(seg.window).max(1),
                flags: self.peer[s].flags | SEEN,
                ..self.peer[s]
            };
        }

        let check = self.in_window(s, seg);
        let both_seen = self.peer[0].seen() && self.peer[1].seen();
        if seg.rst {
            let enforce = !self.liberal || both_seen;
            if enforce && !check.seq_ok {
                return Err(Refusal::RstOutOfWindow);
            }
            // RFC 5961: only a RST at exactly the expected sequence number
            // (the sender's next, what the receiver acknowledges) resets; one
            // merely in the window makes the end send a challenge ACK, so the
            // connection (and our state) goes on.
            if seg.seq == self.peer[s].end || self.liberal {
                self.state = TcpState::Close;
            }
            return Ok(());
        }
        if seg.syn {
            // A SYN inside an open connection: in the window it is harmless
            // (the end answers with a challenge ACK). Outside, it may be a new
            // connection whose ends lost the old one: pass it without any
            // change and start over if the other side answers it.
            if !check.seq_ok {
                if dir == 0 && !seg.ack {
                    self.syn_pending = true;
                    self.syn_seq = seg.seq;
                    return Ok(());
                }
                if !self.liberal {
                    return Err(Refusal::SynInConnection);
                }
            }
            return Ok(());
        }
        if !(self.liberal || check.seq_ok && check.ack_ok) {
            return Err(Refusal::OutOfWindow);
        }
        self.syn_pending = false;
        self.learn(s, seg);
        self.advance_state(s, seg);
        Ok(())
    }

    fn in_window(&self, s: usize, seg: &Segment) -> WindowCheck {
        let (snd, rcv) = (&self.peer[s], &self.peer[s ^ 1]);
        let end = seg.end();
        let seq_ok = !after(seg.seq, snd.maxend) && !before(end, snd.end.wrapping_sub(rcv.maxwin.max(1)));
        let lag = snd.maxwin.max(MAX_ACK_WINDOW);
        let ack_ok = !seg.ack || (!after(seg.ack_no, rcv.end) && !before(seg.ack_no, rcv.end.wrapping_sub(lag)));
        WindowCheck { seq_ok, ack_ok }
    }

    fn learn(&mut self, s: usize, seg: &Segment) {
        let r = s ^ 1;
        let end = seg.end();
        let scale = self.peer[s].scale;
        let win = (u32::from(seg.window) << scale).max(1);
        let snd = &mut self.peer[s];
        snd.maxwin = snd.maxwin.max(win);
        if after(end, snd.end) {
            snd.end = end;
        }
        if self.liberal && after(end, snd.maxend) {
            // Learning, not enforcing: the bound follows what is seen.
            snd.maxend = end;
        }
        snd.flags |= SEEN;
        if seg.fin && !snd.fin_sent() {
            snd.flags |= FIN_SENT;
            snd.fin_end = end;
        }
        if seg.ack {
            let limit = seg.ack_no.wrapping_add(win);
            let rcv = &mut self.peer[r];
            if after(limit, rcv.maxend) {
                rcv.maxend = limit;
            }
            if rcv.fin_sent() && !after(rcv.fin_end, seg.ack_no) {
                rcv.flags |= FIN_ACKED;
            }
        }
    }

    fn advance_state(&mut self, s: usize, seg: &Segment) {
        if self.state == TcpState::Close {
            // After a reset only a new SYN opens the 4-tuple again.
            return;
        }
        let [a, b] = &self.peer;
        self.state = match (a.fin_sent(), b.fin_sent()) {
            (false, false) => match self.state {
                // The opener's ACK of the SYN-ACK completes the handshake.
                TcpState::SynRecv if s == 0 && seg.ack => TcpState::Established,
                TcpState::SynSent | TcpState::SynRecv => self.state,
                _ => TcpState::Established,
            },
            (true, true) => {
                // Both sides closed: TIME_WAIT once the last FIN is acknowledged.
                if a.fin_acked() && b.fin_acked() {
                    TcpState::TimeWait
                } else {
                    TcpState::LastAck
                }
            }
            (true, false) | (false, true) => {
                let closer = if a.fin_sent() { a } else { b };
                if closer.fin_acked() {
                    TcpState::CloseWait
                } else {
                    TcpState::FinWait
                }
            }
        };
        self.established |= !matches!(self.state, TcpState::SynSent | TcpState::SynRecv | TcpState::Close);
    }
}

struct WindowCheck {
    seq_ok: bool,
    ack_ok: bool,
}

/// Bytes of a [`TcpTrack::snapshot`].
pub const SNAPSHOT_LEN: usize = 44;

const PEER_LEN: usize = 19;

impl Peer {
    fn write(&self, b: &mut [u8]) {
        for (i, v) in [self.end, self.maxend, self.maxwin, self.fin_end].into_iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&v.to_be_bytes());
        }
        b[16] = self.scale;
        b[17] = self.offer;
        b[18] = self.flags;
    }

    fn read(b: &[u8]) -> Option<Peer> {
        let word = |i: usize| u32::from_be_bytes([b[i * 4], b[i * 4 + 1], b[i * 4 + 2], b[i * 4 + 3]]);
        let (scale, offer, flags) = (b[16], b[17], b[18]);
        if scale > 14 || (offer > 14 && offer != NO_SCALE) || flags & !0b111 != 0 {
            return None;
        }
        Some(Peer { end: word(0), maxend: word(1), maxwin: word(2), fin_end: word(3), scale, offer, flags })
    }
}

impl TcpTrack {
    /// The tracking state as bytes, for a standby box to resume from.
    pub fn snapshot(&self) -> [u8; SNAPSHOT_LEN] {
        let mut b = [0u8; SNAPSHOT_LEN];
        b[0] = self.state as u8;
        b[1] = u8::from(self.liberal) | u8::from(self.syn_pending) << 1;
        b[2..6].copy_from_slice(&self.syn_seq.to_be_bytes());
        self.peer[0].write(&mut b[6..6 + PEER_LEN]);
        self.peer[1].write(&mut b[6 + PEER_LEN..]);
        b
    }

    /// A connection resumed from another box's [`snapshot`](Self::snapshot),
    /// or `None` if the bytes are not one.
    ///
    /// The snapshot is as old as the last state change the other box sent,
    /// so the sequence numbers in it have moved on since: the connection
    /// resumes *liberal*, as one picked up mid-stream, and each direction's
    /// bounds are learnt again from its next segment. What cannot be learnt
    /// mid-stream, the window scale each side agreed on and the FINs already
    /// exchanged, carries over.
    pub fn resume(b: &[u8; SNAPSHOT_LEN]) -> Option<TcpTrack> {
        let state = *TcpState::ALL.get(usize::from(b[0]))?;
        if b[1] & !0b11 != 0 {
            return None;
        }
        let t = TcpTrack {
            state,
            liberal: b[1] & 1 != 0,
            syn_pending: b[1] & 2 != 0,
            syn_seq: u32::from_be_bytes([b[2], b[3], b[4], b[5]]),
            // Not in the snapshot (its format predates it): past the
            // handshake, or closing by FINs, it was; a connection in `Close`
            // is taken as a refused handshake, evictable for its few seconds.
            established: !matches!(state, TcpState::SynSent | TcpState::SynRecv | TcpState::Close),
            peer: [Peer::read(&b[6..6 + PEER_LEN])?, Peer::read(&b[6 + PEER_LEN..])?],
        };
        Some(t.resumed())
    }

    /// This connection as a box that did not see its latest segments takes
    /// it over: liberal, each direction's bounds learnt again from its next
    /// segment, the agreed window scale and the FINs kept.
    pub fn resumed(&self) -> TcpTrack {
        let relearn = |p: Peer| Peer { flags: p.flags & !SEEN, ..p };
        TcpTrack { liberal: true, syn_pending: false, peer: [relearn(self.peer[0]), relearn(self.peer[1])], ..*self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(flags: &str, seq: u32, ack_no: u32, len: u16) -> Segment {
        Segment {
            syn: flags.contains('S'),
            ack: flags.contains('A'),
            fin: flags.contains('F'),
            rst: flags.contains('R'),
            seq,
            ack_no,
            window: 65_535,
            payload_len: len,
            wscale: if flags.contains('S') { Some(7) } else { None },
        }
    }

    /// Client ISN 1000, server ISN 5000, through the handshake.
    fn established() -> TcpTrack {
        let mut t = TcpTrack::open(&seg("S", 1000, 0, 0));
        assert_eq!(t.state, TcpState::SynSent);
        t.handle(1, &seg("SA", 5000, 1001, 0)).unwrap();
        assert_eq!(t.state, TcpState::SynRecv);
        t.handle(0, &seg("A", 1001, 5001, 0)).unwrap();
        assert_eq!(t.state, TcpState::Established);
        t
    }

    #[test]
    fn handshake_data_and_orderly_close() {
        let mut t = established();
        t.handle(0, &seg("A", 1001, 5001, 100)).unwrap();
        t.handle(1, &seg("A", 5001, 1101, 1400)).unwrap();
        t.handle(0, &seg("FA", 1101, 6401, 0)).unwrap();
        assert_eq!(t.state, TcpState::FinWait);
        t.handle(1, &seg("A", 6401, 1102, 0)).unwrap();
        assert_eq!(t.state, TcpState::CloseWait);
        t.handle(1, &seg("FA", 6401, 1102, 0)).unwrap();
        assert_eq!(t.state, TcpState::LastAck);
        t.handle(0, &seg("A", 1102, 6402, 0)).unwrap();
        assert_eq!(t.state, TcpState::TimeWait);
        // A new connection on the same 4-tuple.
        t.handle(0, &seg("S", 900_000, 0, 0)).unwrap();
        assert_eq!(t.state, TcpState::SynSent);
    }

    #[test]
    fn simultaneous_fin() {
        let mut t = established();
        t.handle(0, &seg("FA", 1001, 5001, 0)).unwrap();
        t.handle(1, &seg("FA", 5001, 1001, 0)).unwrap();
        assert_eq!(t.state, TcpState::LastAck);
        t.handle(0, &seg("A", 1002, 5002, 0)).unwrap();
        assert_eq!(t.state, TcpState::LastAck);
        t.handle(1, &seg("A", 5002, 1002, 0)).unwrap();
        assert_eq!(t.state, TcpState::TimeWait);
    }

    #[test]
    fn blind_reset_outside_the_window_is_refused() {
        let mut t = established();
        let before = t;
        assert_eq!(t.handle(1, &seg("R", 5001 + 100_000_000, 0, 0)), Err(Refusal::RstOutOfWindow));
        assert_eq!(t, before);
        assert_eq!(t.handle(0, &seg("R", 1001u32.wrapping_sub(10_000_000), 0, 0)), Err(Refusal::RstOutOfWindow));
        assert_eq!(t.state, TcpState::Established);
        // In the window: the connection closes.
        t.handle(1, &seg("R", 5001, 0, 0)).unwrap();
        assert_eq!(t.state, TcpState::Close);
    }

    #[test]
    fn syn_inside_an_open_connection_does_not_reset_it() {
        let mut t = established();
        // Out of the window: let through (it may be a new connection), state unchanged.
        t.handle(0, &seg("S", 77_000_000, 0, 0)).unwrap();
        assert_eq!(t.state, TcpState::Established);
        t.handle(0, &seg("S", 1001, 0, 0)).unwrap();
        assert_eq!(t.state, TcpState::Established);
        // From the other side, out of the window: refused.
        assert_eq!(t.handle(1, &seg("S", 99_000_000, 0, 0)), Err(Refusal::SynInConnection));
        // The connection goes on.
        t.handle(0, &seg("A", 1001, 5001, 10)).unwrap();
    }

    #[test]
    fn a_new_connection_on_a_stale_four_tuple_takes_over() {
        let mut t = established();
        // The client rebooted and reuses its port with a new ISN; the server answers.
        t.handle(0, &seg("S", 77_000_000, 0, 0)).unwrap();
        t.handle(1, &seg("SA", 123, 77_000_001, 0)).unwrap();
        assert_eq!(t.state, TcpState::SynRecv);
        t.handle(0, &seg("A", 77_000_001, 124, 0)).unwrap();
        assert_eq!(t.state, TcpState::Established);
        t.handle(1, &seg("A", 124, 77_000_001, 100)).unwrap();
    }

    #[test]
    fn a_reset_is_final_until_a_new_syn() {
        let mut t = established();
        t.handle(1, &seg("R", 5001, 0, 0)).unwrap();
        assert_eq!(t.state, TcpState::Close);
        // An ACK already in flight does not bring the connection back.
        t.handle(0, &seg("A", 1001, 5001, 0)).unwrap();
        assert_eq!(t.state, TcpState::Close);
        t.handle(0, &seg("S", 50_000, 0, 0)).unwrap();
        assert_eq!(t.state, TcpState::SynSent);
    }

    #[test]
    fn an_in_window_reset_that_is_not_exact_does_not_close() {
        let mut t = established();
        t.handle(1, &seg("R", 5001 + 1000, 0, 0)).unwrap();
        assert_eq!(t.state, TcpState::Established, "RFC 5961: the end sends a challenge ACK");
        t.handle(0, &seg("A", 1001, 5001, 10)).unwrap();
    }

    #[test]
    fn large_windows_allow_acks_far_behind() {
        let mut t = established();
        // 100 segments of 1400 bytes in flight from the server (scaled window).
        for k in 0..100u32 {
            t.handle(1, &seg("A", 5001 + k * 1400, 1001, 1400)).unwrap();
        }
        // The client's first ACK trails the server's end by 138,600 bytes.
        t.handle(0, &seg("A", 1001, 5001 + 1400, 0)).unwrap();
    }

    #[test]
    fn fast_open_syn_ack_may_acknowledge_only_the_syn() {
        let mut t = TcpTrack::open(&seg("S", 1000, 0, 100));
        t.handle(1, &seg("SA", 5000, 1001, 0)).unwrap();
        assert_eq!(t.state, TcpState::SynRecv);
        let mut t = TcpTrack::open(&seg("S", 1000, 0, 100));
        t.handle(1, &seg("SA", 5000, 1101, 0)).unwrap();
        assert_eq!(t.handle(1, &seg("SA", 5000, 1102, 0)), Err(Refusal::OutOfWindow));
    }

    #[test]
    fn data_beyond_the_window_is_refused() {
        let mut t = established();
        // The server advertised 65535 << 7; far beyond that is refused.
        assert_eq!(t.handle(0, &seg("A", 1001 + 200_000_000, 5001, 100)), Err(Refusal::OutOfWindow));
        // Acknowledging data the other side never sent is refused.
        assert_eq!(t.handle(0, &seg("A", 1001, 5001 + 1_000_000, 0)), Err(Refusal::OutOfWindow));
        // Retransmission of old data is fine.
        t.handle(0, &seg("A", 1001, 5001, 100)).unwrap();
        t.handle(0, &seg("A", 1001, 5001, 100)).unwrap();
    }

    #[test]
    fn syn_ack_must_acknowledge_the_syn() {
        let mut t = TcpTrack::open(&seg("S", 1000, 0, 0));
        assert_eq!(t.handle(1, &seg("SA", 5000, 4242, 0)), Err(Refusal::OutOfWindow));
        assert_eq!(t.state, TcpState::SynSent);
        // A refusal (RST) must acknowledge the SYN too.
        assert_eq!(t.handle(1, &seg("RA", 0, 999, 0)), Err(Refusal::RstOutOfWindow));
        t.handle(1, &seg("RA", 0, 1001, 0)).unwrap();
        assert_eq!(t.state, TcpState::Close);
    }

    #[test]
    fn data_before_the_handshake_completes_is_refused() {
        let mut t = TcpTrack::open(&seg("S", 1000, 0, 0));
        assert_eq!(t.handle(1, &seg("A", 5000, 1001, 10)), Err(Refusal::OutOfWindow));
        assert!(!t.answered());
    }

    #[test]
    fn simultaneous_open() {
        let mut t = TcpTrack::open(&seg("S", 1000, 0, 0));
        t.handle(1, &seg("S", 5000, 0, 0)).unwrap();
        assert_eq!(t.state, TcpState::SynRecv);
        t.handle(0, &seg("SA", 1000, 5001, 0)).unwrap();
        t.handle(1, &seg("SA", 5000, 1001, 0)).unwrap();
        t.handle(0, &seg("A", 1001, 5001, 0)).unwrap();
        assert_eq!(t.state, TcpState::Established);
    }

    #[test]
    fn picked_up_flow_is_liberal_but_closes_on_fin() {
        let mut t = TcpTrack::pick_up(&seg("A", 123_456, 999, 10));
        assert!(t.is_liberal());
        assert_eq!(t.state, TcpState::Established);
        t.handle(1, &seg("A", 999, 123_466, 1000)).unwrap();
        t.handle(0, &seg("FA", 123_466, 1999, 0)).unwrap();
        assert_eq!(t.state, TcpState::FinWait);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut t = TcpTrack::open(&seg("S", u32::MAX - 10, 0, 0));
        t.handle(1, &seg("SA", 7, u32::MAX - 9, 0)).unwrap();
        t.handle(0, &seg("A", u32::MAX - 9, 8, 0)).unwrap();
        t.handle(0, &seg("A", u32::MAX - 9, 8, 1000)).unwrap();
        t.handle(1, &seg("A", 8, (u32::MAX - 9).wrapping_add(1000), 0)).unwrap();
        assert_eq!(t.state, TcpState::Established);
    }

    #[test]
    fn bad_flag_combinations() {
        assert!(seg("SF", 1, 0, 0).bad_flags());
        assert!(seg("SR", 1, 0, 0).bad_flags());
        assert!(seg("", 1, 0, 0).bad_flags());
        assert!(seg("F", 1, 0, 0).bad_flags());
        assert!(!seg("S", 1, 0, 0).bad_flags());
        assert!(!seg("R", 1, 0, 0).bad_flags());
        assert!(!seg("FA", 1, 0, 0).bad_flags());
    }
    #[test]
    fn a_snapshot_resumes_liberal_with_the_agreed_scale() {
        let mut syn = seg("S", 1000, 0, 0);
        syn.wscale = Some(7);
        let mut t = TcpTrack::open(&syn);
        let mut synack = seg("SA", 5000, 1001, 0);
        synack.wscale = Some(9);
        t.handle(1, &synack).unwrap();
        t.handle(0, &seg("A", 1001, 5001, 0)).unwrap();
        assert_eq!(t.state, TcpState::Established);

        let r = TcpTrack::resume(&t.snapshot()).unwrap();
        assert_eq!(r.state, TcpState::Established);
        assert!(r.is_liberal());
        assert_eq!([r.peer[0].scale, r.peer[1].scale], [7, 9]);
        assert!(!r.peer[0].seen() && !r.peer[1].seen());

        // Far ahead of the snapshot in both directions: learnt, not refused.
        let mut r = r;
        r.handle(0, &seg("A", 90_000_000, 80_000_000, 100)).unwrap();
        r.handle(1, &seg("A", 80_000_000, 90_000_100, 100)).unwrap();
        assert_eq!(r.state, TcpState::Established);
    }

    #[test]
    fn a_malformed_snapshot_is_refused() {
        let good = TcpTrack::open(&seg("S", 1, 0, 0)).snapshot();
        assert!(TcpTrack::resume(&good).is_some());
        for (at, value) in [(0, 8), (1, 4), (6 + 16, 15), (6 + 17, 20), (6 + 18, 8)] {
            let mut bad = good;
            bad[at] = value;
            assert!(TcpTrack::resume(&bad).is_none(), "byte {at} = {value}");
        }
    }
}
