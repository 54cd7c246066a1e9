//! Capture files as devices: [`PcapReader`] is a finite source, [`PcapWriter`]
//! a sink.
//!
//! They let the whole pipeline run on recorded traffic (`torwart replay`, the
//! golden tests: input pcap → expected output pcap + counters) and let a live
//! port be traced ([`crate::Tap`]).
//!
//! Reading accepts what operators actually have: classic pcap in either byte
//! order with micro- or nanosecond timestamps, and pcapng (several sections
//! and interfaces, `if_tsresol`/`if_tsoffset` honoured), with Ethernet, Linux
//! cooked (SLL, SLL2) or raw-IP link types, all delivered as Ethernet frames
//! (see `link`). Parsing of records and blocks is the `pcap-file` crate's;
//! buffering is ours, so that a file cut short is reported with the record
//! number and the byte counts instead of a bare "unexpected end of file", and
//! a corrupt length cannot make us allocate gigabytes.
//!
//! Writing produces one format only — little-endian pcap with nanosecond
//! timestamps and Ethernet link type — so that output files are
//! byte-for-byte reproducible and can be compared in golden tests.
//!
//! Invariants: records are numbered from 1 in file order, counting packet
//! records only (what Wireshark calls frame numbers), and every error names
//! the file and that number. Timestamps are nanoseconds since the Unix epoch.

mod link;
mod read;
mod write;

pub use read::{PcapReader, PcapStats};
pub use write::PcapWriter;

/// The largest record or block the reader accepts. Far above any real
/// snaplen (tcpdump's default is 262144), it only bounds what a corrupt
/// length field can make us buffer.
pub const MAX_RECORD_BYTES: usize = 16 << 20;
