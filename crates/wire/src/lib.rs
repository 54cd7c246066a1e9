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
