//! Packet formats, as zero-copy views over bytes and checked representations.
//!
//! Every format follows one pattern (after smoltcp): a `Packet<T: AsRef<[u8]>>`
//! view whose `new_checked` validates lengths once, after which no accessor can
//! panic on packet content; header offsets are named once in a private
//! `field` module. Mutable accessors exist where torwart rewrites headers
//! (addresses, ports, TTL, checksums).
//!
//! This crate has no dependencies and allocates nothing, so it can be fuzzed
//! and reused anywhere.
#![cfg_attr(not(feature = "std"), no_std)]

pub mod flow;

pub use flow::{Family, FlowKey};

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
