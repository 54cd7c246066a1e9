//! ICMP errors, passed as related to the flow whose packet they quote
//! (RFC 792, RFC 4443; translated as RFC 5508 says). They never create
//! state. They are charged to the flow's member and shaped with its
//! traffic, as the kernel's accounting rules and HTB classes take them:
//! errors of any size and rate would otherwise carry data past both.

use super::{charge, ended, Charge, Engine};
use crate::conntrack::NO_ACCOUNT;
use crate::counters::Reason;
use crate::time::Time;
use crate::{Side, Verdict};
use wire::classify::Meta;
use wire::FlowKey;

impl Engine {
    /// An ICMP error passes if it quotes a packet of a tracked flow, comes
    /// from the side that packet went to, and is addressed to the packet's
    /// source; it goes back to the sender, translated into what the sender
    /// sent if the flow is translated (RFC 5508). Returns the verdict and
    /// the account it was charged to (the flow's member's, if any).
    pub(super) fn related(
        &mut self,
        now: Time,
        from: Side,
        m: &Meta,
        frame: &mut [u8],
        inner: &FlowKey,
    ) -> (Verdict, Option<Charge>) {
        // The quoted packet left the box as the reverse of the other
        // direction's key: look that key up.
        let probe = inner.reversed();
        let Some(h) = self.ct.lookup(self.ct.hash(&probe), &probe) else {
            return (self.drop(Reason::IcmpErrorNoFlow), None);
        };
        let f = self.ct.flow(h.flow);
        if f.expires <= now {
            return (self.drop(Reason::IcmpErrorNoFlow), None);
        }
        let account = f.account;
        if account != NO_ACCOUNT && ended(&self.ct, &self.accounts, h.flow, account) {
            return (self.drop(Reason::MemberBlocked), None);
        }
        // The direction of the quoted packet.
        let d = 1 - h.dir as usize;
        let (sender_side, went_to) = if d == 0 { (f.orig_side, f.reply_side) } else { (f.reply_side, f.orig_side) };
        if from != went_to || m.key.dst != inner.src || m.key.family != inner.family {
            return (self.drop(Reason::IcmpErrorWrongDirection), None);
        }
        if from == Side::Inside && !f.translated && self.spoofed_inside(m.key.src_ip()) {
            // An untranslated error leaves with its own source (IPv6): from
            // the inside, that must be an address that may be there (a
            // member's, the box's, or an internal network's, such as a
            // router on the way to the device), as for any other packet
            // (BCP 38). A translated one leaves as from the public address.
            return (self.drop(Reason::SpoofedSource), None);
        }
        if f.translated && m.frag.is_some_and(|fr| fr.more) {
            // The first fragment of an error: its later fragments could not
            // be translated (no flow is recorded for an error), so it is
            // dropped whole. An ICMPv4 error is at most 576 bytes (RFC
            // 1812): a fragmented one is a forgery or a broken router.
            return (self.drop(Reason::NatUntranslatable), None);
        }
        if f.translated {
            let sent = f.keys[d];
            // An error from the far end itself names it as the sender knows
            // it. So does one from the inside, whoever sent it (a router on
            // the way to the device): no inside address leaves the box, and
            // a device cannot send the outside an error under any source it
            // likes (BCP 38). An error from the outside keeps its source (a
            // router on the way out, as a traceroute from inside shows it).
            let far_seen = f.keys[1 - d].src;
            let outer_src = if m.key.src == far_seen || from == Side::Inside { sent.dst_v4() } else { m.key.src_v4() };
            if wire::nat::translate_icmp_error_v4(frame, m, (outer_src, sent.src_v4()), &sent).is_err() {
                return (self.drop(Reason::NatUntranslatable), None);
            }
        }
        self.counters.icmp_related += 1;
        let charge = charge(&mut self.accounts, account, from == Side::Inside, frame.len());
        (Verdict::Forward(sender_side), charge)
    }

    /// With a member policy: `src` is no address the inside may use (no
    /// member's, not the box's, in no internal network).
    fn spoofed_inside(&self, src: core::net::IpAddr) -> bool {
        self.policy.as_ref().is_some_and(|p| p.member_of_inside(src).is_none() && !p.is_box(src) && !p.is_internal(src))
    }
}
