//! Drop reasons and counters, declared once.
//!
//! Every packet the engine does not forward has exactly one [`DropReason`],
//! and every reason is a counter with a stable snake_case name that the
//! replay report, the benchmarks and (later) the metrics endpoint print as
//! is. Malformed packets carry the parser's own reason
//! ([`wire::classify::ParseError`]), so one list of names covers both.
//!
//! Counters are plain `u64`s owned by one engine (one core); whoever wants a
//! total sums the engines' counters. Nothing here is shared or atomic.

use wire::ParseError;

macro_rules! reasons {
    ($( $(#[$doc:meta])* $variant:ident => $name:literal, )*) => {
        /// Why the engine dropped a packet (beyond malformed input, see [`DropReason::Malformed`]).
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
        pub enum Reason {
            $( $(#[$doc])* $variant, )*
        }

        impl Reason {
            pub const ALL: &'static [Reason] = &[ $( Reason::$variant, )* ];

            pub const fn name(self) -> &'static str {
                match self { $( Reason::$variant => $name, )* }
            }
        }
    };
}

reasons! {
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

/// Why a packet was dropped: malformed (the parser's reason) or refused (the engine's).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum DropReason {
    Malformed(ParseError),
    Refused(Reason),
}

impl DropReason {
    /// Number of distinct reasons: the length of a counter array.
    pub const COUNT: usize = ParseError::ALL.len() + Reason::ALL.len();

    /// A dense index in `0..COUNT`, stable within a build.
    #[inline]
    pub fn index(self) -> usize {
        match self {
            DropReason::Malformed(p) => p.index(),
            DropReason::Refused(r) => ParseError::ALL.len() + r as usize,
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

/// What one engine has done since it started. Plain integers: one owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counters {
    /// Packets received, by the side they came from ([`crate::Side`] index).
    pub rx_packets: [u64; 2],
    pub rx_bytes: [u64; 2],
    /// Packets forwarded, by the side they leave towards.
    pub tx_packets: [u64; 2],
    pub tx_bytes: [u64; 2],
    /// Packets that matched a flow (fast path).
    pub fast_path: u64,
    /// Packets that went to the slow path (no flow yet).
    pub slow_path: u64,
    /// ICMP errors passed as related to a flow.
    pub icmp_related: u64,
    pub flows_created: u64,
    pub flows_expired: u64,
    /// Unanswered flows evicted to make room for new ones.
    pub flows_evicted: u64,
    /// Flows taken over mid-stream (TCP loose pick-up).
    pub flows_picked_up: u64,
    /// Flows ended because a reload ended their member's.
    pub flows_ended: u64,
    pub fragments_held: u64,
    pub fragments_released: u64,
    /// Shaped packets sent at once (the member had tokens and nothing queued).
    pub shaper_passed: u64,
    /// Shaped packets queued, and released later.
    pub shaper_queued: u64,
    pub shaper_released: u64,
    /// Released packets marked CE instead of dropped (ECN).
    pub shaper_ecn_marked: u64,
    /// Shaped packets dropped (the drop reasons say why).
    pub shaper_dropped: u64,
    pub drops: [u64; DropReason::COUNT],
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            rx_packets: [0; 2],
            rx_bytes: [0; 2],
            tx_packets: [0; 2],
            tx_bytes: [0; 2],
            fast_path: 0,
            slow_path: 0,
            icmp_related: 0,
            flows_created: 0,
            flows_expired: 0,
            flows_evicted: 0,
            flows_picked_up: 0,
            flows_ended: 0,
            fragments_held: 0,
            fragments_released: 0,
            shaper_passed: 0,
            shaper_queued: 0,
            shaper_released: 0,
            shaper_ecn_marked: 0,
            shaper_dropped: 0,
            drops: [0; DropReason::COUNT],
        }
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

    /// Combines every counter with the same one of `o`: the one list of
    /// fields that `add` and `subtract` share.
    fn combine(&mut self, o: &Counters, f: impl Fn(u64, u64) -> u64) {
        for i in 0..2 {
            self.rx_packets[i] = f(self.rx_packets[i], o.rx_packets[i]);
            self.rx_bytes[i] = f(self.rx_bytes[i], o.rx_bytes[i]);
            self.tx_packets[i] = f(self.tx_packets[i], o.tx_packets[i]);
            self.tx_bytes[i] = f(self.tx_bytes[i], o.tx_bytes[i]);
        }
        for (a, b) in [
            (&mut self.fast_path, o.fast_path),
            (&mut self.slow_path, o.slow_path),
            (&mut self.icmp_related, o.icmp_related),
            (&mut self.flows_created, o.flows_created),
            (&mut self.flows_expired, o.flows_expired),
            (&mut self.flows_evicted, o.flows_evicted),
            (&mut self.flows_picked_up, o.flows_picked_up),
            (&mut self.flows_ended, o.flows_ended),
            (&mut self.fragments_held, o.fragments_held),
            (&mut self.fragments_released, o.fragments_released),
            (&mut self.shaper_passed, o.shaper_passed),
            (&mut self.shaper_queued, o.shaper_queued),
            (&mut self.shaper_released, o.shaper_released),
            (&mut self.shaper_ecn_marked, o.shaper_ecn_marked),
            (&mut self.shaper_dropped, o.shaper_dropped),
        ] {
            *a = f(*a, b);
        }
        for (a, b) in self.drops.iter_mut().zip(o.drops.iter()) {
            *a = f(*a, *b);
        }
    }

    /// Adds another engine's counters to these (the control side sums cores).
    pub fn add(&mut self, o: &Counters) {
        self.combine(o, |a, b| a + b);
    }

    /// Takes an earlier snapshot away: what was counted since it.
    pub fn subtract(&mut self, earlier: &Counters) {
        self.combine(earlier, |a, b| a.saturating_sub(b));
    }

    /// Every scalar counter as (name, value), drops last, in a stable order.
    pub fn entries(&self) -> Vec<(&'static str, u64)> {
        let mut v = vec![
            ("rx_inside_packets", self.rx_packets[0]),
            ("rx_inside_bytes", self.rx_bytes[0]),
            ("rx_outside_packets", self.rx_packets[1]),
            ("rx_outside_bytes", self.rx_bytes[1]),
            ("tx_inside_packets", self.tx_packets[0]),
            ("tx_inside_bytes", self.tx_bytes[0]),
            ("tx_outside_packets", self.tx_packets[1]),
            ("tx_outside_bytes", self.tx_bytes[1]),
            ("fast_path", self.fast_path),
            ("slow_path", self.slow_path),
            ("icmp_related", self.icmp_related),
            ("flows_created", self.flows_created),
            ("flows_expired", self.flows_expired),
            ("flows_evicted", self.flows_evicted),
            ("flows_picked_up", self.flows_picked_up),
            ("flows_ended", self.flows_ended),
            ("fragments_held", self.fragments_held),
            ("fragments_released", self.fragments_released),
            ("shaper_passed", self.shaper_passed),
            ("shaper_queued", self.shaper_queued),
            ("shaper_released", self.shaper_released),
            ("shaper_ecn_marked", self.shaper_ecn_marked),
            ("shaper_dropped", self.shaper_dropped),
        ];
        v.extend(DropReason::all().map(|r| (r.name(), self.drops[r.index()])));
        v
    }
}
