//! Why a packet was not forwarded, and why no ICMP error went back: the
//! counters of the routing stage.
//!
//! Both lists are declared once here, with [`wire::named_counters!`]. Every
//! variant has a stable snake_case [`name`](Reason::name) (the counter's and
//! the metric's name) and a dense `index` into `ALL` (the counter array's
//! slot). Variants carry no packet data on purpose: a counter array needs a
//! finite list.

wire::named_counters! {
    /// Why the routing stage did not forward a packet.
    pub enum Reason {
        /// Addressed to one of the box's own addresses (XDP should have
        /// passed it to the kernel), or matched a `local` route.
        Local => "local",
        /// Addressed to the directed broadcast address of one of the box's
        /// subnets (RFC 2644: not forwarded).
        DirectedBroadcast => "directed_broadcast",
        /// Multicast or limited-broadcast destination: torwart routes unicast only.
        NotUnicast => "not_unicast",
        /// Link-local source or destination (169.254/16, fe80::/10): never
        /// forwarded off its link (RFC 3927 §7, RFC 4291 §2.5.6).
        LinkLocal => "link_local",
        /// TTL or hop limit was 0 or 1 on arrival (ICMP time exceeded).
        TtlExceeded => "ttl_exceeded",
        /// No route matched (ICMP net unreachable / no route).
        NoRoute => "no_route",
        /// An `unreachable` route matched (ICMP host unreachable / no route).
        UnreachableRoute => "unreachable_route",
        /// A `prohibit` route matched (ICMP administratively prohibited).
        ProhibitRoute => "prohibit_route",
        /// A `blackhole` route matched (silent).
        BlackholeRoute => "blackhole_route",
        /// The route leaves through an interface that is not a torwart port.
        EgressNotPort => "egress_not_port",
        /// The egress port is down.
        EgressDown => "egress_down",
        /// No usable neighbour entry for the next hop (resolution requested).
        NeighbourMissing => "neighbour_missing",
        /// Larger than the egress MTU and not fragmentable (IPv4 DF, IPv6):
        /// ICMP fragmentation needed / packet too big.
        TooBig => "too_big",
        /// Larger than the egress MTU, fragmentable, but the caller gave no
        /// (or too few) buffers for the fragments.
        NeedsFragmentation => "needs_fragmentation",
        /// The frame carries a VLAN tag; routed mode forwards untagged frames.
        VlanTagged => "vlan_tagged",
        /// Not IPv4 or IPv6.
        NotIp => "not_ip",
        /// The IP header does not parse.
        Malformed => "malformed",
    }
}

wire::named_counters! {
    /// Why an ICMP error that a drop called for was not sent.
    pub enum IcmpSuppressed {
        /// The per-core token bucket was empty.
        RateLimited => "rate_limited",
        /// The offending packet is itself an ICMP error (RFC 1812 §4.3.2.7, RFC 4443 §2.4(e)).
        AboutIcmpError => "about_icmp_error",
        /// The offending packet is a fragment other than the first.
        NonFirstFragment => "non_first_fragment",
        /// The offending packet went to a multicast/broadcast IP or MAC address.
        NotUnicast => "not_unicast",
        /// The offending packet's source does not name one host (unspecified,
        /// loopback, multicast, broadcast, class E).
        BadSource => "bad_source",
        /// The offending packet's headers could not be walked far enough to decide.
        Unparseable => "unparseable",
        /// The ingress interface is not a known port.
        IngressUnknown => "ingress_unknown",
        /// The ingress interface has no address of the family to send from.
        NoSourceAddress => "no_source_address",
        /// The caller's ICMP buffer is too small.
        BufferTooSmall => "buffer_too_small",
    }
}
