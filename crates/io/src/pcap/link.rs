//! Link-layer headers of captures, turned into the Ethernet frames the engine
//! expects.
//!
//! torwart forwards Ethernet, but useful captures often are not: `tcpdump -i
//! any` writes Linux cooked headers (SLL, or SLL2 since libpcap 1.10), tunnel
//! and firewall logs write bare IP packets. Rather than teaching the engine
//! other link layers, the reader rewrites each record as an Ethernet frame
//! with a synthetic header: zero MAC addresses (the capture did not have
//! both, and zeros are obviously synthetic in a trace) and the EtherType from
//! the cooked header's protocol field or from the IP version.
//!
//! References: <https://www.tcpdump.org/linktypes/LINKTYPE_LINUX_SLL.html>,
//! <https://www.tcpdump.org/linktypes/LINKTYPE_LINUX_SLL2.html>,
//! <https://www.tcpdump.org/linktypes.html> (RAW, IPV4, IPV6).

use crate::PacketBuf;

/// Header layouts, named once.
mod field {
    use std::ops::Range;

    pub const ETH_HEADER_LEN: usize = 14;
    /// Destination and source MAC addresses: left zero in synthetic headers.
    pub const ETH_MACS: Range<usize> = 0..12;
    pub const ETH_TYPE: Range<usize> = 12..14;

    pub const SLL_HEADER_LEN: usize = 16;
    pub const SLL_PROTOCOL: Range<usize> = 14..16;

    pub const SLL2_HEADER_LEN: usize = 20;
    pub const SLL2_PROTOCOL: Range<usize> = 0..2;
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
/// Values below this in an EtherType position are 802.3 lengths, not types
/// (IEEE 802.3 clause 3.2.6); Linux cooked headers use such small values for
/// non-Ethernet-II framings (e.g. 0x0004, 802.2 LLC).
const ETHERTYPE_MIN: u16 = 0x0600;
/// The largest valid 802.3 length field.
const ETH_MAX_LENGTH_FIELD: usize = 1500;

/// The link types the reader accepts, by their LINKTYPE_ number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkType {
    /// LINKTYPE_ETHERNET (1): delivered as is.
    Ethernet,
    /// LINKTYPE_LINUX_SLL (113).
    LinuxSll,
    /// LINKTYPE_LINUX_SLL2 (276).
    LinuxSll2,
    /// LINKTYPE_RAW (101): IPv4 or IPv6, told apart by the version nibble.
    RawIp,
    /// LINKTYPE_IPV4 (228).
    Ipv4,
    /// LINKTYPE_IPV6 (229).
    Ipv6,
}

/// Why a record could not become a frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ConvertError {
    /// The resulting frame would be this long, more than the buffer holds.
    TooLarge(usize),
    /// The record is too short for its link header.
    ShortHeader { need: usize, have: usize },
}

/// What a successful conversion noticed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Converted {
    Ok,
    /// A raw-IP record whose version nibble is neither 4 nor 6: delivered
    /// with EtherType 0 so the engine drops it under its own reason.
    UnknownIpVersion,
}

impl LinkType {
    pub(crate) fn from_code(code: u32) -> Option<LinkType> {
        Some(match code {
            1 => LinkType::Ethernet,
            113 => LinkType::LinuxSll,
            276 => LinkType::LinuxSll2,
            101 => LinkType::RawIp,
            228 => LinkType::Ipv4,
            229 => LinkType::Ipv6,
            _ => return None,
        })
    }

    /// Writes `record` into `slot` as an Ethernet frame. On error `slot`'s
    /// length is unspecified (the caller does not commit it).
    /// The length of the Ethernet frame [`to_ethernet`](Self::to_ethernet)
    /// makes of a record of `record_len` bytes (without converting it).
    pub(crate) fn ethernet_len(self, record_len: usize) -> usize {
        match self {
            LinkType::Ethernet => record_len,
            LinkType::LinuxSll => field::ETH_HEADER_LEN + record_len.saturating_sub(field::SLL_HEADER_LEN),
            LinkType::LinuxSll2 => field::ETH_HEADER_LEN + record_len.saturating_sub(field::SLL2_HEADER_LEN),
            LinkType::RawIp | LinkType::Ipv4 | LinkType::Ipv6 => field::ETH_HEADER_LEN + record_len,
        }
    }

    pub(crate) fn to_ethernet(self, record: &[u8], slot: &mut PacketBuf) -> Result<Converted, ConvertError> {
        let (ethertype, payload, outcome) = match self {
            LinkType::Ethernet => {
                return if slot.copy_from(record) {
                    Ok(Converted::Ok)
                } else {
                    Err(ConvertError::TooLarge(record.len()))
                };
            }
            LinkType::LinuxSll => {
                let (proto, payload) = split_header(record, field::SLL_HEADER_LEN, field::SLL_PROTOCOL)?;
                (cooked_ethertype(proto, payload), payload, Converted::Ok)
            }
            LinkType::LinuxSll2 => {
                let (proto, payload) = split_header(record, field::SLL2_HEADER_LEN, field::SLL2_PROTOCOL)?;
                (cooked_ethertype(proto, payload), payload, Converted::Ok)
            }
            LinkType::RawIp => match record.first().map(|b| b >> 4) {
                Some(4) => (ETHERTYPE_IPV4, record, Converted::Ok),
                Some(6) => (ETHERTYPE_IPV6, record, Converted::Ok),
                _ => (0, record, Converted::UnknownIpVersion),
            },
            LinkType::Ipv4 => (ETHERTYPE_IPV4, record, Converted::Ok),
            LinkType::Ipv6 => (ETHERTYPE_IPV6, record, Converted::Ok),
        };
        let len = field::ETH_HEADER_LEN + payload.len();
        if !slot.set_len(len) {
            return Err(ConvertError::TooLarge(len));
        }
        let frame = slot.as_mut_slice();
        frame[field::ETH_MACS].fill(0);
        frame[field::ETH_TYPE].copy_from_slice(&ethertype.to_be_bytes());
        frame[field::ETH_HEADER_LEN..].copy_from_slice(payload);
        Ok(outcome)
    }
}

/// Splits a cooked header off `record`: (protocol field, payload).
fn split_header(
    record: &[u8],
    header_len: usize,
    protocol: std::ops::Range<usize>,
) -> Result<(u16, &[u8]), ConvertError> {
    if record.len() < header_len {
        return Err(ConvertError::ShortHeader { need: header_len, have: record.len() });
    }
    let proto = u16::from_be_bytes([record[protocol.start], record[protocol.start + 1]]);
    Ok((proto, &record[header_len..]))
}

/// A cooked header's protocol is an EtherType when it is one; otherwise the
/// payload is an 802.2/802.3 frame, and Ethernet carries those with a length
/// in the EtherType position.
fn cooked_ethertype(proto: u16, payload: &[u8]) -> u16 {
    if proto >= ETHERTYPE_MIN {
        proto
    } else {
        // Bounded by the check, so the cast cannot truncate.
        payload.len().min(ETH_MAX_LENGTH_FIELD) as u16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert(link: LinkType, record: &[u8]) -> (Result<Converted, ConvertError>, Vec<u8>) {
        let mut slot = PacketBuf::with_capacity(64);
        let r = link.to_ethernet(record, &mut slot);
        (r, slot.as_slice().to_vec())
    }

    #[test]
    fn sll_becomes_ethernet() {
        let mut rec = vec![0, 0, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0, 0x86, 0xdd];
        rec.extend_from_slice(&[0x60, 1, 2]);
        let (r, frame) = convert(LinkType::LinuxSll, &rec);
        assert_eq!(r, Ok(Converted::Ok));
        assert_eq!(&frame[..12], &[0; 12]);
        assert_eq!(&frame[12..], &[0x86, 0xdd, 0x60, 1, 2]);
    }

    #[test]
    fn sll_non_ethertype_protocol_becomes_length() {
        let mut rec = vec![0; 16];
        rec[15] = 4; // ETH_P_802_2
        rec.extend_from_slice(&[0xaa; 5]);
        let (_, frame) = convert(LinkType::LinuxSll, &rec);
        assert_eq!(&frame[12..14], &[0, 5]);
    }

    #[test]
    fn raw_ip_uses_version_nibble() {
        assert_eq!(&convert(LinkType::RawIp, &[0x45, 0]).1[12..], &[8, 0, 0x45, 0]);
        assert_eq!(&convert(LinkType::RawIp, &[0x60]).1[12..], &[0x86, 0xdd, 0x60]);
        let (r, frame) = convert(LinkType::RawIp, &[0x10]);
        assert_eq!(r, Ok(Converted::UnknownIpVersion));
        assert_eq!(&frame[12..], &[0, 0, 0x10]);
    }

    #[test]
    fn short_and_long_records_are_errors() {
        assert_eq!(convert(LinkType::LinuxSll2, &[0; 19]).0, Err(ConvertError::ShortHeader { need: 20, have: 19 }));
        assert_eq!(convert(LinkType::Ipv4, &[0x45; 51]).0, Err(ConvertError::TooLarge(65)));
        assert_eq!(convert(LinkType::Ethernet, &[0; 65]).0, Err(ConvertError::TooLarge(65)));
    }
}
