//! The slow path: a packet without a flow may open one.
//!
//! First the protocol must allow it (a TCP SYN, or a mid-stream segment
//! when loose pick-up is on; an echo request; any UDP or
//! other datagram), then the policy: without a member policy the inside
//! may open flows and the outside may not; with one, the policy says whose
//! the flow is, how it leaves (IPv4 NAPT: the device's binding to a port of
//! the member's public range, within its quota, [`crate::nat`]), and which
//! side its replies come from (port forwards and hairpinning).
//! The flow is then stored and charged to its member's account.

use super::{charge, Charge, Engine};
use crate::conntrack::{Conntrack, Evicted, Hit, NewFlow, ProtoState, NO_ACCOUNT, NO_BINDING};
use crate::counters::Reason;
use crate::nat::{Nat, NatRefusal, Public};
use crate::tcp::{Segment, TcpTrack};
use crate::time::Time;
use crate::{Side, Verdict};
use core::net::IpAddr;
use policy::{Direction, Policy, Status};
use wire::classify::{Meta, L4};
use wire::FlowKey;

/// What policy decided for a flow's first packet.
struct Admit {
    /// The key the packet leaves with (translated or not).
    out: FlowKey,
    reply_side: Side,
    /// The member the flow is accounted to (its stable id), if any.
    member_id: Option<u32>,
    binding: u32,
}

impl Engine {
    /// A packet without a flow. Returns the verdict, the flow it opened
    /// and, if it is a member's flow, the account it was charged to.
    /// Kept out of line: a packet in a hundred takes it, and inlined into
    /// the fast path's loop it costs every packet registers.
    #[inline(never)]
    pub(super) fn slow_path(
        &mut self,
        now: Time,
        from: Side,
        m: &Meta,
        seg: Option<&Segment>,
        frame: &mut [u8],
    ) -> (Verdict, Option<Hit>, Option<Charge>) {
        self.counters.slow_path += 1;
        let (state, picked_up) = match self.new_state(from, m, seg) {
            Ok(s) => s,
            Err(r) => return (self.drop(r), None, None),
        };
        let admit = match self.admit(from, m) {
            Ok(a) => a,
            Err(r) => return (self.drop(r), None, None),
        };
        // A flow translated by address alone (no ports to bind) may look
        // like another from outside; one with a binding cannot (its public
        // port is its device's alone), and a forward's replies come from
        // its device, whose own port it names.
        let unbound = admit.binding == NO_BINDING && from == Side::Inside;
        if unbound && admit.out != m.key && self.reply_in_use(now, &admit.out) {
            self.release_binding(admit.binding);
            return (self.drop(Reason::NatReplyInUse), None, None);
        }
        if admit.out != m.key && wire::nat::translate_v4(frame, m, &admit.out).is_err() {
            self.release_binding(admit.binding);
            return (self.drop(Reason::NatUntranslatable), None, None);
        }
        let account = admit.member_id.map_or(NO_ACCOUNT, |id| self.accounts.slot(id));
        let new = NewFlow {
            keys: [m.key, admit.out.reversed()],
            state,
            orig_side: from,
            reply_side: admit.reply_side,
            account,
            binding: admit.binding,
            epoch: self.epoch,
            synced: false,
            answered: false,
        };
        let (stored, evicted) = self.ct.insert(&new, now);
        self.counters.flows_evicted += u64::from(evicted.table);
        self.counters.flows_evicted_half_open += u64::from(evicted.half_open);
        let Ok(idx) = stored else {
            self.release_binding(admit.binding);
            return (self.drop(Reason::FlowTableFull), None, None);
        };
        self.counters.flows_created += 1;
        if evicted != Evicted::default() {
            // What the evicted flows held is free for the next new flow
            // (a member at its limit of half-open flows opens one per one
            // it loses: its NAT bindings stay within the same limit).
            let Engine { ct, nat, .. } = self;
            for (_, b) in ct.take_released() {
                nat.release(b);
            }
        }
        self.counters.flows_picked_up += u64::from(picked_up);
        let f = self.ct.flow_mut(idx);
        f.packets[0] = 1;
        f.bytes[0] = frame.len() as u64;
        if matches!(f.state, ProtoState::Tcp(_)) && !picked_up {
            // Its SYN: the clock of the handshake starts (see `crate::rtt`).
            f.handshake_at = now;
        }
        let charge = charge(&mut self.accounts, account, from == Side::Inside, frame.len());
        (Verdict::Forward(admit.reply_side), Some(Hit { flow: idx, dir: 0 }), charge)
    }

    /// The state a packet without a flow opens one in, and whether that is
    /// a TCP connection picked up mid-stream; or why the protocol lets it
    /// open none.
    #[inline]
    fn new_state(&self, from: Side, m: &Meta, seg: Option<&Segment>) -> Result<(ProtoState, bool), Reason> {
        match (m.l4, seg) {
            (_, Some(s)) if s.syn && !s.ack => Ok((ProtoState::Tcp(TcpTrack::open(s)), false)),
            // Mid-stream pick-up (after a restart): from the inside, and
            // from the outside where the policy lets a connection in (a
            // port forward, an IPv6 opening; `admit` refuses the rest).
            (_, Some(s)) if self.cfg.tcp_loose && s.ack && !s.rst && !s.syn => {
                Ok((ProtoState::Tcp(TcpTrack::pick_up(s)), true))
            }
            (_, Some(_)) if from == Side::Outside => Err(Reason::UnsolicitedInbound),
            (_, Some(_)) => Err(Reason::TcpNoFlow),
            (L4::IcmpEcho { request: false }, _) if from == Side::Outside => Err(Reason::UnsolicitedInbound),
            (L4::IcmpEcho { request: false }, _) => Err(Reason::NewFlowDenied),
            // Only echo is tracked: other informational ICMP has no reply to pair.
            (L4::IcmpOther { .. }, _) if from == Side::Outside => Err(Reason::UnsolicitedInbound),
            (L4::IcmpOther { .. }, _) => Err(Reason::IcmpNotTracked),
            (_, None) => Ok((Conntrack::state_for_new(m.key.proto), false)),
        }
    }

    /// Whether the replies of a translated flow leaving as `out` would be
    /// taken for another live flow's: translated by address alone (no
    /// ports to bind), two devices' flows to one remote look alike from
    /// outside, and the replies would reach whichever the index holds. An
    /// expired flow in the way is removed.
    fn reply_in_use(&mut self, now: Time, out: &FlowKey) -> bool {
        let reply = out.reversed();
        let Some(h) = self.ct.lookup(self.ct.hash(&reply), &reply) else { return false };
        if self.ct.flow(h.flow).expires > now {
            return true;
        }
        self.ct.remove(h.flow);
        self.counters.flows_expired += 1;
        false
    }

    fn release_binding(&mut self, b: u32) {
        if b != NO_BINDING {
            self.nat.release(b);
        }
    }

    /// The policy's answer for a packet that opens a flow: how it leaves
    /// (translated or not), where its replies come from, whose it is.
    /// Without a member policy, the inside may open flows (untranslated,
    /// nobody's) and the outside may not.
    fn admit(&mut self, from: Side, m: &Meta) -> Result<Admit, Reason> {
        match (&self.policy, from) {
            (Some(p), Side::Outside) => admit_inbound(p, m),
            (Some(p), Side::Inside) => admit_outbound(&mut self.nat, p, m),
            (None, Side::Outside) => Err(Reason::UnsolicitedInbound),
            (None, Side::Inside) => {
                Ok(Admit { out: m.key, reply_side: Side::Outside, member_id: None, binding: NO_BINDING })
            }
        }
    }
}

/// [`Engine::admit`] for a packet from the inside: a member's (or the box's
/// own), translated to the member's public address and a port of its range
/// (a binding of `nat`) when it is IPv4.
#[inline]
fn admit_outbound(nat: &mut Nat, p: &Policy, m: &Meta) -> Result<Admit, Reason> {
    let k = &m.key;
    let (src, dst) = (k.src_ip(), k.dst_ip());
    // Whose is it?
    let Some(r) = p.member_of_inside(src) else {
        if p.is_box(src) {
            return Ok(Admit { out: *k, reply_side: Side::Outside, member_id: None, binding: NO_BINDING });
        }
        return Err(if p.is_internal(src) { Reason::UnregisteredSource } else { Reason::SpoofedSource });
    };
    let info = p.member(r);
    if info.status == Status::Blocked {
        return Err(Reason::MemberBlocked);
    }
    if p.blocked(src, dst, Direction::Outbound) {
        return Err(Reason::BlockedAddress);
    }
    let id = info.id;
    if k.family != wire::Family::V4 {
        return Ok(Admit { out: *k, reply_side: Side::Outside, member_id: Some(id), binding: NO_BINDING });
    }
    let public = info.public.ok_or(Reason::NoPublicAddress)?;
    let mut out = *k;
    let mut reply_side = Side::Outside;
    // Hairpinning: a member reaching a public address behind this box.
    if let Some(fw) = p.port_forward(k.dst_v4(), k.proto, k.dst_port) {
        if p.member(fw.member).status == Status::Blocked {
            return Err(Reason::MemberBlocked);
        }
        out.set_dst_v4(fw.internal);
        out.dst_port = fw.port;
        reply_side = Side::Inside;
    } else if p.member_of_public(k.dst_v4(), k.dst_port).is_some() {
        return Err(Reason::UnsolicitedInbound);
    }
    // A forward's device sending from its forwarded port: the forward's
    // connection, seen first from the inside (its retransmission beat the
    // remote's after a restart, or a UDP answer outlived its flow). It
    // leaves from the port the remote wrote to; a NAT port would be a
    // stranger to the remote, and the connection would stall. Not when
    // hairpinned (a device reaching its own forward would meet itself),
    // nor while a flow's binding still holds the port (a forward added
    // since): then it is translated as any flow.
    if reply_side == Side::Outside {
        if let Some((address, port)) = p.forwarded_from(k.src_v4(), k.proto, k.src_port) {
            if nat.by_public(address, k.proto, port).is_none() {
                out.set_src_v4(address);
                out.src_port = port;
                return Ok(Admit { out, reply_side, member_id: Some(id), binding: NO_BINDING });
            }
        }
    }
    out.set_src_v4(public.address);
    let range = Public { addr: public.address, first: public.first_port, last: public.last_port };
    let binding = match m.l4 {
        L4::Tcp { .. } | L4::Udp | L4::IcmpEcho { .. } => {
            let b = nat.acquire(id, range, k.proto, k.src_v4(), k.src_port).map_err(|e| match e {
                NatRefusal::Quota => Reason::NatQuota,
                NatRefusal::Exhausted => Reason::NatPortsExhausted,
                NatRefusal::TableFull | NatRefusal::Conflict => Reason::FlowTableFull,
            })?;
            out.src_port = nat.binding(b).public_port;
            b
        }
        // No ports to translate: the address alone.
        _ => NO_BINDING,
    };
    Ok(Admit { out, reply_side, member_id: Some(id), binding })
}

/// [`Engine::admit`] for a packet from the outside: it opens a flow only
/// through a port forward (IPv4) or a member's IPv6 opening, and never when
/// its source or the member is blocked.
#[inline]
fn admit_inbound(p: &Policy, m: &Meta) -> Result<Admit, Reason> {
    let k = &m.key;
    let (src, dst) = (k.src_ip(), k.dst_ip());
    if p.blocked(src, dst, Direction::Inbound) {
        return Err(Reason::BlockedAddress);
    }
    let (member, out) = if k.family == wire::Family::V4 {
        let fw = p.port_forward(k.dst_v4(), k.proto, k.dst_port).ok_or(Reason::UnsolicitedInbound)?;
        let mut out = *k;
        out.set_dst_v4(fw.internal);
        out.dst_port = fw.port;
        (fw.member, out)
    } else {
        let IpAddr::V6(d6) = dst else { return Err(Reason::UnsolicitedInbound) };
        (p.ipv6_opening(d6, k.proto, k.dst_port).ok_or(Reason::UnsolicitedInbound)?, *k)
    };
    let info = p.member(member);
    if info.status == Status::Blocked {
        return Err(Reason::MemberBlocked);
    }
    Ok(Admit { out, reply_side: Side::Inside, member_id: Some(info.id), binding: NO_BINDING })
}
