//! Drop reasons and counters, declared once.
//!
//! Every packet the engine does not forward has exactly one [`DropReason`],
//! and every reason is a counter with a stable snake_case name that the
//! replay report, the benchmarks and the stats file print as is (declared
//! with [`wire::named_counters!`]). Malformed packets carry the parser's own
//! reason ([`wire::ParseError`]), so one list of names covers both. The
//! other counters of [`Counters`] are declared once too, and their names
//! follow from that one list.
//!
//! Counters are plain `u64`s owned by one engine (one core); whoever wants a
//! total sums the engines' counters. Nothing here is shared or atomic.

use wire::ParseError;

wire::named_counters! {
    /// Why the engine dropped a packet (beyond malformed input, see [`DropReason::Malformed`]).
    pub enum Reason {
        /// A packet from the outside that belongs to no flow and that policy does not admit.
        UnsolicitedInbound => "unsolicited_inbound",
        /// A packet matched a flow but arrived on the side that flow direction does not come from.
        WrongSide => "wrong_side",
        /// Policy refused to open a new flow from the inside.
        NewFlowDenied => "new_flow_denied",
        /// A TCP packet without SYN that belongs to no flow (no loose pick-up for it).
        TcpNoFlow => "tcp_no_flow",
        /// A TCP flag combination no stack sends (SYN+FIN, SYN+RST, no flags, ...).
        TcpBadFlags => "tcp_bad_flags",
        /// A TCP segment outside the receiver's window (sequence or acknowledgement).
        TcpOutOfWindow => "tcp_out_of_window",
        /// A RST whose sequence number is not in the window (RFC 5961 blind reset).
        TcpRstOutOfWindow => "tcp_rst_out_of_window",
        /// A SYN inside an open connection whose sequence number is outside the window.
        TcpSynInConnection => "tcp_syn_in_connection",
        /// An informational ICMP message other than echo, opening nothing.
        IcmpNotTracked => "icmp_not_tracked",
        /// An ICMP error that refers to no flow we track.
        IcmpErrorNoFlow => "icmp_error_no_flow",
        /// An ICMP error whose embedded packet travels the wrong way for its flow.
        IcmpErrorWrongDirection => "icmp_error_wrong_direction",
        /// No room for a new flow, and no unanswered flow could be evicted.
        FlowTableFull => "flow_table_full",
        /// An inside source that is neither a member's nor the box's, nor in an internal network (BCP 38).
        SpoofedSource => "spoofed_source",
        /// An inside source in an internal network that belongs to no member.
        UnregisteredSource => "unregistered_source",
        /// The member is blocked (or their flows ended by a reload).
        MemberBlocked => "member_blocked",
        /// A source or destination in the database's global blocks.
        BlockedAddress => "blocked_address",
        /// A member without a public IPv4 address opened an IPv4 flow.
        NoPublicAddress => "no_public_address",
        /// The member holds its quota of NAT bindings.
        NatQuota => "nat_quota",
        /// Every port of the member's range is in use.
        NatPortsExhausted => "nat_ports_exhausted",
        /// A packet of a translated flow that cannot be rewritten (not IPv4, or cut short).
        NatUntranslatable => "nat_untranslatable",
        /// A new translated flow whose replies would match another live flow's (a protocol
        /// without ports, such as GRE, to the same remote from two devices behind one public
        /// address): one at a time, as in Linux.
        NatReplyInUse => "nat_reply_in_use",
        /// A fragment overlaps one already seen for the same datagram (RFC 5722, RFC 1858).
        FragmentOverlap => "fragment_overlap",
        /// A non-last fragment whose length is not a multiple of 8, or a datagram beyond 65535 bytes.
        FragmentBadLength => "fragment_bad_length",
        /// More fragments for one datagram than the engine tracks.
        FragmentTooMany => "fragment_too_many",
        /// No room to track another fragmented datagram or to hold an early fragment.
        FragmentTableFull => "fragment_table_full",
        /// Held fragments whose first fragment never came.
        FragmentTimeout => "fragment_timeout",
        /// A fragment of a datagram whose first fragment was dropped.
        FragmentOfDropped => "fragment_of_dropped",
        /// A later fragment whose flow ended after its first fragment passed: nothing is left to
        /// translate, charge or check it by.
        FragmentFlowEnded => "fragment_flow_ended",
        /// The member's shaping queue was full (tail drop).
        ShaperQueueFull => "shaper_queue_full",
        /// The core's shaping frame pool was full.
        ShaperPoolFull => "shaper_pool_full",
        /// CoDel dropped it: the member's queue stood above target for an interval.
        ShaperCodelDrop => "shaper_codel_drop",
        /// It waited longer than the sojourn limit (an unresponsive flood).
        ShaperSojournLimit => "shaper_sojourn_limit",
        /// Longer than the shaper's largest packet.
        ShaperTooLong => "shaper_too_long",
        /// Queued when the member's plan was removed (or the member left).
        ShaperMemberRemoved => "shaper_member_removed",
    }
}

/// Why a packet was dropped: malformed (the parser's reason) or refused (the engine's).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum DropReason {
    Malformed(ParseError),
    Refused(Reason),
}

impl DropReason {
    /// Number of distinct reasons: the length of a counter array.
    pub const COUNT: usize = ParseError::COUNT + Reason::COUNT;

    /// A dense index in `0..COUNT`, stable within a build.
    #[inline]
    pub fn index(self) -> usize {
        match self {
            DropReason::Malformed(p) => p.index(),
            DropReason::Refused(r) => ParseError::COUNT + r.index(),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed(p) => p.name(),
            DropReason::Refused(r) => r.name(),
        }
    }

    /// Every reason, in index order.
    pub fn all() -> impl Iterator<Item = DropReason> {
        ParseError::ALL
            .iter()
            .map(|p| DropReason::Malformed(*p))
            .chain(Reason::ALL.iter().map(|r| DropReason::Refused(*r)))
    }
}

impl From<Reason> for DropReason {
    fn from(r: Reason) -> Self {
        DropReason::Refused(r)
    }
}

impl From<ParseError> for DropReason {
    fn from(p: ParseError) -> Self {
        DropReason::Malformed(p)
    }
}

/// Declares [`Counters`] from one list of its fields, and from that list
/// what would otherwise be kept by hand beside it: `Default`, `combine`
/// (behind `add` and `subtract`) and `entries` (the names). A per-side
/// field is named once per side; a total is named as its field.
macro_rules! counters {
    (
        per side { $( $(#[$sdoc:meta])* $sfield:ident => [$inside:literal, $outside:literal], )* }
        totals { $( $(#[$doc:meta])* $field:ident, )* }
    ) => {
        /// What one engine has done since it started. Plain integers: one owner.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct Counters {
            $( $(#[$sdoc])* pub $sfield: [u64; 2], )*
            $( $(#[$doc])* pub $field: u64, )*
            /// Packets dropped, by [`DropReason::index`].
            pub drops: [u64; DropReason::COUNT],
        }

        impl Default for Counters {
            fn default() -> Self {
                Counters { $( $sfield: [0; 2], )* $( $field: 0, )* drops: [0; DropReason::COUNT] }
            }
        }

        impl Counters {
            /// Combines every counter with the same one of `o`.
            fn combine(&mut self, o: &Counters, f: impl Fn(u64, u64) -> u64) {
                for side in 0..2 {
                    $( self.$sfield[side] = f(self.$sfield[side], o.$sfield[side]); )*
                }
                $( self.$field = f(self.$field, o.$field); )*
                for (a, b) in self.drops.iter_mut().zip(o.drops.iter()) {
                    *a = f(*a, *b);
                }
            }

            /// Every counter as (name, value), drops last, in a stable order.
            pub fn entries(&self) -> Vec<(&'static str, u64)> {
                let mut v = vec![
                    $( ($inside, self.$sfield[0]), ($outside, self.$sfield[1]), )*
                    $( (stringify!($field), self.$field), )*
                ];
                v.extend(DropReason::all().map(|r| (r.name(), self.drops[r.index()])));
                v
            }
        }
    };
}

counters! {
    per side {
        /// Packets received, by the side they came from ([`crate::Side`] index).
        rx_packets => ["rx_inside_packets", "rx_outside_packets"],
        rx_bytes => ["rx_inside_bytes", "rx_outside_bytes"],
        /// Packets forwarded, by the side they leave towards.
        tx_packets => ["tx_inside_packets", "tx_outside_packets"],
        tx_bytes => ["tx_inside_bytes", "tx_outside_bytes"],
    }
    totals {
        /// Packets that matched a flow (fast path).
        fast_path,
        /// Packets that went to the slow path (no flow yet).
        slow_path,
        /// ICMP errors passed as related to a flow.
        icmp_related,
        flows_created,
        flows_expired,
        /// Unassured flows evicted to make room for new ones (table full).
        flows_evicted,
        /// A member's oldest unassured flow on one side, evicted for its
        /// new one: the member had `half_open_per_member` (a SYN flood at
        /// its port forward, or from it).
        flows_evicted_half_open,
        /// Flows taken over mid-stream (TCP loose pick-up).
        flows_picked_up,
        /// Flows ended because a reload ended their member's.
        flows_ended,
        fragments_held,
        fragments_released,
        /// Shaped packets sent at once (the member had tokens and nothing queued).
        shaper_passed,
        /// Shaped packets queued, and released later.
        shaper_queued,
        shaper_released,
        /// Released packets marked CE instead of dropped (ECN).
        shaper_ecn_marked,
        /// Shaped packets dropped (the drop reasons say why).
        shaper_dropped,
    }
}

impl Counters {
    #[inline]
    pub fn drop(&mut self, r: DropReason) {
        self.drops[r.index()] += 1;
    }

    pub fn dropped(&self, r: impl Into<DropReason>) -> u64 {
        self.drops[r.into().index()]
    }

    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// Adds another engine's counters to these (the control side sums cores).
    pub fn add(&mut self, o: &Counters) {
        self.combine(o, |a, b| a + b);
    }

    /// Takes an earlier snapshot away: what was counted since it.
    pub fn subtract(&mut self, earlier: &Counters) {
        self.combine(earlier, |a, b| a.saturating_sub(b));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_has_its_own_name() {
        let c = Counters::default();
        let mut names: Vec<&str> = c.entries().into_iter().map(|(n, _)| n).collect();
        let all = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all, "a name is used twice");
        assert!(DropReason::all().enumerate().all(|(i, r)| r.index() == i));
    }
}
