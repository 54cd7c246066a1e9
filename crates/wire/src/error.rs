//! The crate's error types.
//!
//! [`ParseError`] is what a parser says when it refuses bytes. Its variants
//! are *drop reasons*: the engine counts every dropped frame under exactly one
//! of them, so the list is declared once here, each variant has a stable
//! snake_case [`name`](ParseError::name) (the counter's name) and a dense
//! [`index`](ParseError::index) into [`ParseError::ALL`] (the counter array's
//! slot). Variants are field-less on purpose: a counter array needs a finite
//! list, and a drop reason must not carry packet data.
//!
//! [`BuildError`] is the other direction, for code that writes packets
//! (`Repr::emit`, the [`build`](crate::build) helpers); it is never a drop
//! reason, which is why it is kept out of `ParseError::ALL`.

use core::fmt;

macro_rules! parse_errors {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// Why a frame (or a header inside it) was refused.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ParseError {
            $($(#[$doc])* $variant,)*
        }

        impl ParseError {
            /// Every variant, in [`index`](ParseError::index) order.
            pub const ALL: &'static [ParseError] = &[$(ParseError::$variant,)*];

            /// Stable snake_case name, used as the drop counter's name.
            pub const fn name(&self) -> &'static str {
                match self {
                    $(ParseError::$variant => $name,)*
                }
            }
        }
    };
}

parse_errors! {
    /// The bytes are shorter than a header they claim to hold.
    Truncated => "truncated",
    /// The frame is longer than 65535 bytes, the most an offset in [`Meta`](crate::classify::Meta) can name.
    FrameTooLong => "frame_too_long",
    /// After the VLAN tags the EtherType is neither IPv4 nor IPv6 (ARP, LLDP, ...).
    NotIp => "not_ip",
    /// More than two 802.1Q/802.1ad tags.
    TooManyVlanTags => "too_many_vlan_tags",
    /// The IP version nibble disagrees with the EtherType (or the expected family).
    IpVersionMismatch => "ip_version_mismatch",
    /// IPv4 IHL below 5.
    Ipv4BadHeaderLen => "ipv4_bad_header_len",
    /// IPv4 total length below the header length or beyond the frame.
    Ipv4BadTotalLen => "ipv4_bad_total_len",
    /// IPv4 header checksum does not verify.
    Ipv4BadChecksum => "ipv4_bad_checksum",
    /// A malformed IPv4 option (length 0/1 or beyond the options area).
    Ipv4BadOption => "ipv4_bad_option",
    /// IPv6 payload length beyond the frame.
    Ipv6BadPayloadLen => "ipv6_bad_payload_len",
    /// More than 8 IPv6 extension headers or more than 512 bytes of them.
    Ipv6ExtChainTooLong => "ipv6_ext_chain_too_long",
    /// A malformed IPv6 extension header (hop-by-hop not first, bad option).
    Ipv6BadExtHeader => "ipv6_bad_ext_header",
    /// A first IPv6 fragment does not hold the whole header chain (RFC 7112).
    HeaderChainSplit => "header_chain_split",
    /// A first fragment too short for the transport header, or a TCP fragment at offset 8 (RFC 1858).
    TinyFragment => "tiny_fragment",
    /// TCP data offset below 5 or beyond the segment.
    TcpBadHeaderLen => "tcp_bad_header_len",
    /// A malformed TCP option (zero length, beyond the header, wrong fixed size).
    TcpBadOption => "tcp_bad_option",
    /// UDP length field below 8 or beyond the datagram.
    UdpBadLength => "udp_bad_length",
    /// An ICMP/ICMPv6 message shorter than its 8-byte header.
    IcmpTruncated => "icmp_truncated",
    /// The packet quoted in an ICMP error lacks its IP header or the first 8 bytes after it.
    IcmpErrorBadInner => "icmp_error_bad_inner",
    /// Source address that no host may send from (multicast, limited broadcast).
    BadIpAddress => "bad_ip_address",
    /// ARP for something other than Ethernet/IPv4.
    ArpUnsupported => "arp_unsupported",
}

impl ParseError {
    /// Position of `self` in [`ParseError::ALL`].
    #[inline]
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            ParseError::Truncated => "frame shorter than a header it claims",
            ParseError::FrameTooLong => "frame longer than 65535 bytes",
            ParseError::NotIp => "not an IP frame",
            ParseError::TooManyVlanTags => "more than two VLAN tags",
            ParseError::IpVersionMismatch => "IP version does not match",
            ParseError::Ipv4BadHeaderLen => "IPv4 header length below 20",
            ParseError::Ipv4BadTotalLen => "IPv4 total length inconsistent",
            ParseError::Ipv4BadChecksum => "IPv4 header checksum mismatch",
            ParseError::Ipv4BadOption => "malformed IPv4 option",
            ParseError::Ipv6BadPayloadLen => "IPv6 payload length beyond frame",
            ParseError::Ipv6ExtChainTooLong => "IPv6 extension header chain too long",
            ParseError::Ipv6BadExtHeader => "malformed IPv6 extension header",
            ParseError::HeaderChainSplit => "first fragment lacks the full header chain",
            ParseError::TinyFragment => "fragment too small to hold the transport header",
            ParseError::TcpBadHeaderLen => "TCP data offset inconsistent",
            ParseError::TcpBadOption => "malformed TCP option",
            ParseError::UdpBadLength => "UDP length inconsistent",
            ParseError::IcmpTruncated => "ICMP message shorter than its header",
            ParseError::IcmpErrorBadInner => "ICMP error quotes an unparseable packet",
            ParseError::BadIpAddress => "invalid source address",
            ParseError::ArpUnsupported => "ARP for other than Ethernet/IPv4",
        };
        f.write_str(what)
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ParseError {}

/// Why a packet could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BuildError {
    /// The caller's buffer cannot hold the packet.
    BufferTooSmall,
    /// Source and destination addresses are of different families.
    FamilyMismatch,
    /// A length or offset that the format cannot express (e.g. a payload over 65535 bytes, a fragment offset not a multiple of 8).
    BadArgument,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BuildError::BufferTooSmall => "buffer too small",
            BuildError::FamilyMismatch => "source and destination address families differ",
            BuildError::BadArgument => "length or offset not representable",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for BuildError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_dense_and_named() {
        for (i, e) in ParseError::ALL.iter().enumerate() {
            assert_eq!(e.index(), i);
            assert!(e.name().bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
            #[cfg(feature = "std")]
            assert!(!std::format!("{e}").is_empty());
        }
        let mut names: std::vec::Vec<_> = ParseError::ALL.iter().map(|e| e.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ParseError::ALL.len());
    }
}
