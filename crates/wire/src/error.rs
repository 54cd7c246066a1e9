//! The crate's error types.
//!
//! [`ParseError`] is what a parser says when it refuses bytes. Its variants
//! are *drop reasons*: the engine counts every dropped frame under exactly one
//! of them, so the list is declared once here, with
//! [`named_counters!`](crate::named_counters): each variant has a stable
//! snake_case [`name`](ParseError::name) (the counter's name), a dense
//! [`index`](ParseError::index) into [`ParseError::ALL`] (the counter array's
//! slot) and a text for people (its `Display`). Variants are field-less on
//! purpose: a counter array needs a finite list, and a drop reason must not
//! carry packet data.
//!
//! [`BuildError`] is the other direction, for code that writes packets
//! (`Repr::emit`, the [`build`](crate::build) helpers); it is never a drop
//! reason, which is why it is kept out of `ParseError::ALL`.

use core::fmt;

crate::named_counters! {
    /// Why a frame (or a header inside it) was refused.
    pub enum ParseError {
        /// The bytes are shorter than a header they claim to hold.
        Truncated => "truncated" ("frame shorter than a header it claims"),
        /// The frame is longer than 65535 bytes, the most an offset in [`Meta`](crate::classify::Meta) can name.
        FrameTooLong => "frame_too_long" ("frame longer than 65535 bytes"),
        /// After the VLAN tags the EtherType is neither IPv4 nor IPv6 (ARP, LLDP, ...).
        NotIp => "not_ip" ("not an IP frame"),
        /// More than two 802.1Q/802.1ad tags.
        TooManyVlanTags => "too_many_vlan_tags" ("more than two VLAN tags"),
        /// The IP version nibble disagrees with the EtherType (or the expected family).
        IpVersionMismatch => "ip_version_mismatch" ("IP version does not match"),
        /// IPv4 IHL below 5.
        Ipv4BadHeaderLen => "ipv4_bad_header_len" ("IPv4 header length below 20"),
        /// IPv4 total length below the header length or beyond the frame.
        Ipv4BadTotalLen => "ipv4_bad_total_len" ("IPv4 total length inconsistent"),
        /// IPv4 header checksum does not verify.
        Ipv4BadChecksum => "ipv4_bad_checksum" ("IPv4 header checksum mismatch"),
        /// A malformed IPv4 option (length 0/1 or beyond the options area).
        Ipv4BadOption => "ipv4_bad_option" ("malformed IPv4 option"),
        /// IPv6 payload length beyond the frame.
        Ipv6BadPayloadLen => "ipv6_bad_payload_len" ("IPv6 payload length beyond frame"),
        /// More than 8 IPv6 extension headers or more than 512 bytes of them.
        Ipv6ExtChainTooLong => "ipv6_ext_chain_too_long" ("IPv6 extension header chain too long"),
        /// A malformed IPv6 extension header (hop-by-hop not first, bad option).
        Ipv6BadExtHeader => "ipv6_bad_ext_header" ("malformed IPv6 extension header"),
        /// A first IPv6 fragment does not hold the whole header chain (RFC 7112).
        HeaderChainSplit => "header_chain_split" ("first fragment lacks the full header chain"),
        /// A first fragment too short for the transport header, or a TCP fragment at offset 8 (RFC 1858).
        TinyFragment => "tiny_fragment" ("fragment too small to hold the transport header"),
        /// TCP data offset below 5 or beyond the segment.
        TcpBadHeaderLen => "tcp_bad_header_len" ("TCP data offset inconsistent"),
        /// A malformed TCP option (zero length, beyond the header, wrong fixed size).
        TcpBadOption => "tcp_bad_option" ("malformed TCP option"),
        /// UDP length field below 8 or beyond the datagram.
        UdpBadLength => "udp_bad_length" ("UDP length inconsistent"),
        /// An ICMP/ICMPv6 message shorter than its 8-byte header.
        IcmpTruncated => "icmp_truncated" ("ICMP message shorter than its header"),
        /// The packet quoted in an ICMP error lacks its IP header or the first 8 bytes after it.
        IcmpErrorBadInner => "icmp_error_bad_inner" ("ICMP error quotes an unparseable packet"),
        /// Source address that no host may send from (multicast, limited broadcast).
        BadIpAddress => "bad_ip_address" ("invalid source address"),
        /// ARP for something other than Ethernet/IPv4.
        ArpUnsupported => "arp_unsupported" ("ARP for other than Ethernet/IPv4"),
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
