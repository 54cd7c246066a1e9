//! Packet formats, as zero-copy views over bytes and checked representations.
//!
//! Every format follows one pattern (after smoltcp): a `Packet<T: AsRef<[u8]>>`
//! view whose `new_checked` validates lengths once, after which no accessor can
//! panic on packet content; header offsets are named once in a private
//! `field` module. Mutable accessors exist where torwart rewrites headers
//! (addresses, ports, TTL, checksums).
//!
//! [`classify`](classify::classify) is the hot-path entry point: the single
//! place where untrusted frames are checked, yielding offsets, a flow key and
//! the transport fields the engine needs. The format modules (`ethernet`,
//! `vlan`, `arp`, `ipv4`, `ipv6`, `tcp`, `udp`, `icmpv4`, `icmpv6`) hold the
//! views used to read and rewrite headers; `checksum` holds the Internet
//! checksum and its incremental update (RFC 1624); `build` crafts valid
//! frames for tests, benchmarks and fuzz seeds. `named` holds the
//! [`named_counters!`] macro with which this crate and the ones above it
//! declare drop reasons and other counted lists once.
//!
//! This crate has no dependencies, no `unsafe` and allocates nothing, so it
//! can be fuzzed and reused anywhere (`no_std` without the `std` feature).
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]

pub mod arp;
pub mod build;
pub mod checksum;
pub mod classify;
pub mod error;
pub mod ethernet;
pub mod flow;
pub mod icmpv4;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod named;
pub mod nat;
pub mod tcp;
pub mod udp;
pub mod vlan;

#[cfg(test)]
mod tests;

pub use classify::{classify, Fragment, Meta, L4};
pub use error::{BuildError, ParseError};
pub use ethernet::{EtherType, MacAddr};
pub use flow::{Family, FlowKey};
pub use tcp::TcpFlags;

/// Storage that holds one Ethernet frame: what the engine reads and rewrites.
///
/// The I/O backends own the buffers (heap, UMEM frames, pcap records); the
/// engine sees them only through this trait, so it never depends on how they
/// are stored.
pub trait FrameBuf {
    /// The frame's bytes, from the Ethernet header to its last byte.
    fn bytes(&self) -> &[u8];
    /// The same bytes, for rewriting headers in place.
    fn bytes_mut(&mut self) -> &mut [u8];
}

impl FrameBuf for [u8] {
    fn bytes(&self) -> &[u8] {
        self
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        self
    }
}

impl<const N: usize> FrameBuf for [u8; N] {
    fn bytes(&self) -> &[u8] {
        self
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        self
    }
}

#[cfg(feature = "std")]
impl FrameBuf for std::vec::Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        self
    }
}
