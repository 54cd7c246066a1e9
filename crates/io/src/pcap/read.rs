//! Reading pcap and pcapng files as a finite, timestamped source of Ethernet
//! frames.
//!
//! The reader keeps its own input buffer and hands slices of it to
//! `pcap-file`'s parsers, one record (pcap) or block (pcapng) at a time. When
//! a parser needs more bytes we read another chunk; at the end of the file a
//! partial record becomes [`IoError::TruncatedRecord`] with the numbers an
//! operator needs. Before reading more we check the length the record
//! announces against [`MAX_RECORD_BYTES`], so a corrupt header cannot make
//! the buffer grow without bound.
//!
//! Peeking ([`PcapReader::peek_ts`]) parses the next packet record without
//! consuming it (pcapng section and interface blocks in front of it are
//! consumed, since they only change the reader's state), which is what lets
//! [`crate::Merged`] interleave two captures by time.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use pcap_file::pcap::PcapParser;
use pcap_file::pcapng::blocks::interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption};
use pcap_file::pcapng::{Block, PcapNgParser};
use pcap_file::{Endianness, PcapError, PcapResult, TsResolution};

use super::link::{ConvertError, Converted, LinkType};
use super::MAX_RECORD_BYTES;
use crate::{Batch, IoError, PacketBuf, PacketIo, PortId, TimedSource};

/// How much we ask the OS for at a time: large enough that reading costs a
/// syscall per many records, not per record.
const READ_CHUNK: usize = 1 << 16;
const NANOS_PER_SEC: u64 = 1_000_000_000;

/// File-format constants, named once.
mod field {
    use std::ops::Range;

    pub const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];
    /// The classic pcap magics (µs and ns) in both byte orders.
    pub const PCAP_MAGICS: [[u8; 4]; 4] =
        [[0xa1, 0xb2, 0xc3, 0xd4], [0xd4, 0xc3, 0xb2, 0xa1], [0xa1, 0xb2, 0x3c, 0x4d], [0x4d, 0x3c, 0xb2, 0xa1]];
    pub const MAGIC: Range<usize> = 0..4;

    /// pcap record header: ts_sec, ts_frac, incl_len, orig_len.
    pub const PCAP_RECORD_HEADER_LEN: usize = 16;
    pub const PCAP_INCL_LEN: Range<usize> = 8..12;

    /// pcapng block: type, total length, body, total length.
    pub const PCAPNG_BLOCK_MIN_LEN: usize = 12;
    pub const PCAPNG_BLOCK_LEN: Range<usize> = 4..8;

    /// pcapng's default timestamp resolution: 10^-6 s (if_tsresol absent).
    pub const DEFAULT_TSRESOL: u8 = 6;
    /// if_tsresol's high bit selects powers of two instead of ten.
    pub const TSRESOL_BASE2: u8 = 0x80;
}

/// The largest frame a reader delivers: the frame buffers' capacity. A
/// record that would make a larger frame (a jumbo frame, a GRO super-packet
/// captured before segmentation) is skipped and counted as oversized: a
/// gateway on these links would never receive it whole.
pub const MAX_FRAME: usize = crate::DEFAULT_FRAME_CAPACITY;

/// What the reader has seen so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PcapStats {
    /// Packet records delivered.
    pub records: u64,
    /// Bytes delivered (as Ethernet frames, after link conversion).
    pub bytes: u64,
    /// Records whose captured length is less than the original length
    /// (cut by the capture's snaplen); delivered as captured.
    pub snapped: u64,
    /// Raw-IP records with a version nibble other than 4 or 6; delivered
    /// with EtherType 0.
    pub unknown_ip_version: u64,
    /// pcapng blocks that carry no packet (interface statistics, name
    /// resolution, custom...), skipped.
    pub skipped_blocks: u64,
    /// Packet records larger than the frame buffer (jumbo frames, GRO
    /// super-packets captured before segmentation), skipped: a gateway on
    /// a 1500-byte link would never receive them whole.
    pub oversized: u64,
}

/// A pcap or pcapng file as a finite source of Ethernet frames.
pub struct PcapReader<R: Read = File> {
    path: String,
    port: PortId,
    input: Input<R>,
    format: Format,
    /// Packet records consumed so far; the next one is number `consumed + 1`.
    consumed: u64,
    /// Time of the last packet delivered, for pcapng simple packet blocks,
    /// which carry none.
    last_ts: u64,
    stats: PcapStats,
}

enum Format {
    Pcap {
        parser: PcapParser,
        link: LinkType,
        nanos: bool,
        big_endian: bool,
    },
    PcapNg {
        parser: PcapNgParser,
        /// The current section's interfaces, indexed by interface id.
        ifaces: Vec<Iface>,
    },
}

/// What the reader needs from a pcapng interface description.
struct Iface {
    /// The link type, or its number if we cannot convert it (an error only
    /// once a packet from this interface shows up).
    link: Result<LinkType, u32>,
    tsresol: u8,
    tsoffset_s: u64,
    snaplen: u32,
}

/// The outcome of parsing at the front of the buffer.
enum Step {
    /// The record or block is not complete in the buffer.
    NeedMore,
    /// A block without a packet, this many bytes long.
    Skip(usize),
    /// A packet record of `used` bytes with this timestamp (delivered into
    /// the slot if one was given).
    Packet { used: usize, ts_ns: u64 },
    /// A packet record of `used` bytes whose frame would be larger than
    /// [`MAX_FRAME`]: counted in [`PcapStats::oversized`] and skipped, by a
    /// peek as by a read, so a peek's timestamp is the next read's.
    Oversized(usize),
}

/// Why a record failed, before we add the file and record number.
enum RecordError {
    Malformed(String),
    Convert(ConvertError),
    UnsupportedLink(u32),
}

impl PcapReader<File> {
    /// Opens a capture file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, IoError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let file = File::open(path).map_err(|source| IoError::File { op: "open", path: name.clone(), source })?;
        PcapReader::new(name, file)
    }
}

impl<R: Read> PcapReader<R> {
    /// Reads a capture from `src`; `name` is used in errors. Reads and checks
    /// the file header now, so a file that is not a capture (or has an
    /// unsupported link type) fails here.
    pub fn new(name: impl Into<String>, src: R) -> Result<Self, IoError> {
        let path = name.into();
        let mut input = Input { src, buf: vec![0; READ_CHUNK], start: 0, end: 0, eof: false };
        while input.len() < field::MAGIC.end && input.fill(&path)? {}
        let not_capture = |detail: String| IoError::NotCapture { path: path.clone(), detail };
        let magic: [u8; 4] = match input.avail().get(field::MAGIC) {
            Some(m) => m.try_into().expect("range of four"),
            None if input.len() == 0 => return Err(not_capture("the file is empty".into())),
            None => return Err(not_capture(format!("only {} bytes, too short for a capture header", input.len()))),
        };
        let format = if magic == field::PCAPNG_MAGIC {
            let parser = parse_file_header(&mut input, &path, "pcapng section header", PcapNgParser::new)?;
            Format::PcapNg { parser, ifaces: Vec::new() }
        } else if field::PCAP_MAGICS.contains(&magic) {
            let parser = parse_file_header(&mut input, &path, "pcap file header", PcapParser::new)?;
            let header = parser.header();
            let code = u32::from(header.datalink);
            let link = LinkType::from_code(code)
                .ok_or_else(|| IoError::UnsupportedLinkType { path: path.clone(), link_type: code })?;
            Format::Pcap {
                link,
                nanos: header.ts_resolution == TsResolution::NanoSecond,
                big_endian: header.endianness == Endianness::Big,
                parser,
            }
        } else {
            return Err(not_capture(format!(
                "unknown magic number {:02x} {:02x} {:02x} {:02x}",
                magic[0], magic[1], magic[2], magic[3]
            )));
        };
        Ok(PcapReader {
            path,
            port: PortId::default(),
            input,
            format,
            consumed: 0,
            last_ts: 0,
            stats: PcapStats::default(),
        })
    }

    /// Tags every frame with `port` (default: port 0).
    pub fn with_port(mut self, port: PortId) -> Self {
        self.port = port;
        self
    }

    /// What the reader has seen so far.
    pub fn stats(&self) -> &PcapStats {
        &self.stats
    }

    /// The file's name as given.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The timestamp of the next packet without consuming it; `None` at the
    /// end of the file.
    pub fn peek_ts(&mut self) -> Result<Option<u64>, IoError> {
        self.advance(None)
    }

    /// Reads the next packet into `slot` as an Ethernet frame; `false` at the
    /// end of the file.
    pub fn read_next(&mut self, slot: &mut PacketBuf) -> Result<bool, IoError> {
        Ok(self.advance(Some(slot))?.is_some())
    }

    /// Parses up to the next packet record. With a slot, delivers and
    /// consumes it; without, only reports its timestamp.
    fn advance(&mut self, mut slot: Option<&mut PacketBuf>) -> Result<Option<u64>, IoError> {
        loop {
            let avail = &self.input.buf[self.input.start..self.input.end];
            let step = match &mut self.format {
                Format::Pcap { parser, link, nanos, .. } => {
                    pcap_step(parser, *link, *nanos, avail, slot.as_deref_mut(), &mut self.stats)
                }
                Format::PcapNg { parser, ifaces } => {
                    pcapng_step(parser, ifaces, self.last_ts, avail, slot.as_deref_mut(), &mut self.stats)
                }
            };
            match step.map_err(|e| self.record_error(e, slot.as_deref()))? {
                Step::Skip(used) => self.input.start += used,
                // Skipped by a peek as by a read (counted once: it is consumed).
                Step::Oversized(used) => {
                    self.input.start += used;
                    self.consumed += 1;
                }
                Step::Packet { used, ts_ns } => {
                    if let Some(slot) = slot {
                        self.input.start += used;
                        self.consumed += 1;
                        self.last_ts = ts_ns;
                        slot.ts_ns = ts_ns;
                        slot.port = self.port;
                    }
                    return Ok(Some(ts_ns));
                }
                Step::NeedMore => {
                    if self.input.eof {
                        return if self.input.len() == 0 { Ok(None) } else { Err(self.incomplete_error()) };
                    }
                    self.check_announced_len()?;
                    self.input.fill(&self.path)?;
                }
            }
        }
    }

    /// The length the partial record at the front announces:
    /// (header length, Some((bytes announced, bytes of it present))).
    fn announced(&self) -> (usize, Option<(u64, u64)>) {
        let avail = self.input.avail();
        let read_u32 = |r: std::ops::Range<usize>, big: bool| {
            let b: [u8; 4] = avail[r].try_into().expect("range of four");
            u64::from(if big { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) })
        };
        match &self.format {
            Format::Pcap { big_endian, .. } => {
                let hl = field::PCAP_RECORD_HEADER_LEN;
                let announced = (avail.len() >= hl).then(|| {
                    let incl = read_u32(field::PCAP_INCL_LEN, *big_endian);
                    (incl, (avail.len() - hl) as u64)
                });
                (hl, announced)
            }
            Format::PcapNg { parser, .. } => {
                let big = parser.section().endianness == Endianness::Big;
                let hl = field::PCAPNG_BLOCK_MIN_LEN;
                let announced =
                    (avail.len() >= hl).then(|| (read_u32(field::PCAPNG_BLOCK_LEN, big), avail.len() as u64));
                (hl, announced)
            }
        }
    }

    /// Before reading more for a partial record: refuse absurd lengths, and
    /// notice a record that is complete but which the parser still finds
    /// short (inconsistent inner lengths), which more input would not fix.
    fn check_announced_len(&self) -> Result<(), IoError> {
        let Some((len, present)) = self.announced().1 else {
            return Ok(());
        };
        if len > MAX_RECORD_BYTES as u64 {
            return Err(IoError::RecordTooLarge {
                format: self.format_name(),
                path: self.path.clone(),
                record: self.consumed + 1,
                len,
                max: MAX_RECORD_BYTES as u64,
            });
        }
        if present >= len {
            return Err(self.malformed("its inner lengths exceed its own length".into()));
        }
        Ok(())
    }

    /// The error for a file that ends inside a record.
    fn incomplete_error(&self) -> IoError {
        let (header_len, announced) = self.announced();
        let Some((wanted, left)) = announced else {
            return IoError::TruncatedHeader {
                format: self.format_name(),
                path: self.path.clone(),
                record: self.consumed + 1,
                header_len: header_len as u64,
                left: self.input.len() as u64,
            };
        };
        if left >= wanted {
            return self.malformed("its inner lengths exceed its own length".into());
        }
        IoError::TruncatedRecord {
            format: self.format_name(),
            path: self.path.clone(),
            record: self.consumed + 1,
            wanted,
            left,
        }
    }

    fn record_error(&self, e: RecordError, slot: Option<&PacketBuf>) -> IoError {
        match e {
            RecordError::Malformed(detail) => self.malformed(detail),
            RecordError::UnsupportedLink(link_type) => {
                IoError::UnsupportedLinkType { path: self.path.clone(), link_type }
            }
            RecordError::Convert(ConvertError::ShortHeader { need, have }) => {
                self.malformed(format!("{have} bytes are too few for its {need}-byte link-layer header"))
            }
            RecordError::Convert(ConvertError::TooLarge(len)) => IoError::FrameTooLarge {
                len,
                capacity: slot.map_or(0, PacketBuf::capacity),
                record: self.consumed + 1,
                origin: self.path.clone(),
            },
        }
    }

    fn malformed(&self, detail: String) -> IoError {
        IoError::MalformedRecord {
            format: self.format_name(),
            path: self.path.clone(),
            record: self.consumed + 1,
            detail,
        }
    }

    fn format_name(&self) -> &'static str {
        match self.format {
            Format::Pcap { .. } => "pcap",
            Format::PcapNg { .. } => "pcapng",
        }
    }
}

/// Parses one pcap record at the front of `avail`.
fn pcap_step(
    parser: &PcapParser,
    link: LinkType,
    nanos: bool,
    avail: &[u8],
    slot: Option<&mut PacketBuf>,
    stats: &mut PcapStats,
) -> Result<Step, RecordError> {
    let (rem, raw) = match parser.next_raw_packet(avail) {
        Ok(ok) => ok,
        Err(PcapError::IncompleteBuffer) => return Ok(Step::NeedMore),
        Err(e) => return Err(RecordError::Malformed(e.to_string())),
    };
    let frac_ns = if nanos { u64::from(raw.ts_frac) } else { u64::from(raw.ts_frac) * 1000 };
    let ts_ns = u64::from(raw.ts_sec) * NANOS_PER_SEC + frac_ns;
    let used = avail.len() - rem.len();
    if link.ethernet_len(raw.data.len()) > MAX_FRAME {
        stats.oversized += 1;
        return Ok(Step::Oversized(used));
    }
    if let Some(slot) = slot {
        deliver(link, &raw.data, u64::from(raw.orig_len), slot, stats)?;
    }
    Ok(Step::Packet { used, ts_ns })
}

/// Parses one pcapng block at the front of `avail`.
fn pcapng_step(
    parser: &mut PcapNgParser,
    ifaces: &mut Vec<Iface>,
    last_ts: u64,
    avail: &[u8],
    slot: Option<&mut PacketBuf>,
    stats: &mut PcapStats,
) -> Result<Step, RecordError> {
    let (rem, block) = match parser.next_block(avail) {
        Ok(ok) => ok,
        Err(PcapError::IncompleteBuffer) => return Ok(Step::NeedMore),
        Err(e) => return Err(RecordError::Malformed(e.to_string())),
    };
    let used = avail.len() - rem.len();
    // (interface id, timestamp in the interface's units or None, original length, data)
    let (iface_id, raw_ts, orig_len, data) = match block {
        Block::SectionHeader(_) => {
            ifaces.clear();
            return Ok(Step::Skip(used));
        }
        Block::InterfaceDescription(idb) => {
            ifaces.push(Iface::new(&idb));
            return Ok(Step::Skip(used));
        }
        Block::EnhancedPacket(epb) => {
            // pcap-file 2 reads the 64-bit timestamp as nanoseconds whatever
            // the interface's resolution; undo that and scale it ourselves.
            let units = u64::try_from(epb.timestamp.as_nanos()).unwrap_or(u64::MAX);
            (epb.interface_id, Some(units), epb.original_len, epb.data)
        }
        Block::Packet(pb) => (u32::from(pb.interface_id), Some(pb.timestamp), pb.original_len, pb.data),
        Block::SimplePacket(spb) => (0, None, spb.original_len, spb.data),
        _ => {
            stats.skipped_blocks += 1;
            return Ok(Step::Skip(used));
        }
    };
    let iface = ifaces.get(iface_id as usize).ok_or_else(|| {
        RecordError::Malformed(format!("packet from interface {iface_id}, but its section describes {}", ifaces.len()))
    })?;
    let link = iface.link.map_err(RecordError::UnsupportedLink)?;
    let ts_ns = raw_ts.map_or(last_ts, |units| iface.to_ns(units));
    let mut data: &[u8] = &data;
    if raw_ts.is_none() {
        // A simple packet block's body is the packet padded to 32 bits,
        // cut at the snaplen: its length is implied (RFC draft
        // pcapng 4.4).
        let mut cap = orig_len as usize;
        if iface.snaplen != 0 {
            cap = cap.min(iface.snaplen as usize);
        }
        data = &data[..cap.min(data.len())];
    }
    if link.ethernet_len(data.len()) > MAX_FRAME {
        stats.oversized += 1;
        return Ok(Step::Oversized(used));
    }
    if let Some(slot) = slot {
        deliver(link, data, u64::from(orig_len), slot, stats)?;
    }
    Ok(Step::Packet { used, ts_ns })
}

/// Converts a record into the slot and counts it.
fn deliver(
    link: LinkType,
    data: &[u8],
    orig_len: u64,
    slot: &mut PacketBuf,
    stats: &mut PcapStats,
) -> Result<(), RecordError> {
    let outcome = link.to_ethernet(data, slot).map_err(RecordError::Convert)?;
    if outcome == Converted::UnknownIpVersion {
        stats.unknown_ip_version += 1;
    }
    if (data.len() as u64) < orig_len {
        stats.snapped += 1;
    }
    stats.records += 1;
    stats.bytes += slot.len() as u64;
    Ok(())
}

impl Iface {
    fn new(idb: &InterfaceDescriptionBlock<'_>) -> Iface {
        let code = u32::from(idb.linktype);
        let mut iface = Iface {
            link: LinkType::from_code(code).ok_or(code),
            tsresol: field::DEFAULT_TSRESOL,
            tsoffset_s: 0,
            snaplen: idb.snaplen,
        };
        for opt in &idb.options {
            match opt {
                InterfaceDescriptionOption::IfTsResol(r) => iface.tsresol = *r,
                InterfaceDescriptionOption::IfTsOffset(s) => iface.tsoffset_s = *s,
                _ => {}
            }
        }
        iface
    }

    /// Converts a timestamp in this interface's units to nanoseconds since
    /// the epoch (if_tsresol: 10^-n s, or 2^-n s with the high bit set).
    fn to_ns(&self, units: u64) -> u64 {
        let exp = u32::from(self.tsresol & !field::TSRESOL_BASE2);
        let ns = if self.tsresol & field::TSRESOL_BASE2 != 0 {
            let scaled = (u128::from(units) * u128::from(NANOS_PER_SEC)) >> exp;
            u64::try_from(scaled).unwrap_or(u64::MAX)
        } else if exp <= 9 {
            units.saturating_mul(10u64.pow(9 - exp))
        } else {
            10u64.checked_pow(exp - 9).map_or(0, |div| units / div)
        };
        ns.saturating_add(self.tsoffset_s.saturating_mul(NANOS_PER_SEC))
    }
}

/// Parses a file header at the start of the buffer, reading until it is
/// complete.
fn parse_file_header<R: Read, T>(
    input: &mut Input<R>,
    path: &str,
    what: &str,
    parse: impl Fn(&[u8]) -> PcapResult<(&[u8], T)>,
) -> Result<T, IoError> {
    let not_capture = |detail: String| IoError::NotCapture { path: path.to_owned(), detail };
    loop {
        let avail = input.avail();
        match parse(avail) {
            Ok((rem, parsed)) => {
                input.start += avail.len() - rem.len();
                return Ok(parsed);
            }
            Err(PcapError::IncompleteBuffer) => {}
            Err(e) => return Err(not_capture(format!("bad {what}: {e}"))),
        }
        if input.eof || input.len() > MAX_RECORD_BYTES {
            return Err(not_capture(format!("{what} truncated (file has {} bytes)", input.len())));
        }
        input.fill(path)?;
    }
}

/// Our read buffer: `buf[start..end]` holds bytes read but not yet parsed.
struct Input<R> {
    src: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
}

impl<R: Read> Input<R> {
    fn avail(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn len(&self) -> usize {
        self.end - self.start
    }

    /// Reads another chunk after the buffered bytes, moving them to the
    /// front first. Returns false at the end of the input. The buffer grows
    /// only when one record is larger than it, bounded by the caller's
    /// [`MAX_RECORD_BYTES`] check.
    fn fill(&mut self, path: &str) -> Result<bool, IoError> {
        if self.eof {
            return Ok(false);
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < READ_CHUNK {
            self.buf.resize(self.end + READ_CHUNK, 0);
        }
        loop {
            match self.src.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(false);
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => return Err(IoError::File { op: "read", path: path.to_owned(), source }),
            }
        }
    }
}

impl<R: Read> PacketIo for PcapReader<R> {
    /// Fills the batch's free slots; `Eof` once the file is exhausted.
    fn recv(&mut self, batch: &mut Batch) -> Result<usize, IoError> {
        if batch.is_full() {
            return Ok(0);
        }
        match crate::fill_from(self, batch)? {
            0 => Err(IoError::Eof),
            n => Ok(n),
        }
    }

    fn send(&mut self, _frames: &[PacketBuf]) -> Result<usize, IoError> {
        Err(IoError::Unsupported { device: self.path.clone(), op: "send (it is a pcap reader)" })
    }

    fn name(&self) -> &str {
        &self.path
    }
}

impl<R: Read> TimedSource for PcapReader<R> {
    fn peek_ts(&mut self) -> Result<Option<u64>, IoError> {
        PcapReader::peek_ts(self)
    }

    fn read_next(&mut self, slot: &mut PacketBuf) -> Result<bool, IoError> {
        PcapReader::read_next(self, slot)
    }

    fn oversized(&self) -> u64 {
        self.stats.oversized
    }
}

impl<R: Read> std::fmt::Debug for PcapReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcapReader")
            .field("path", &self.path)
            .field("format", &self.format_name())
            .field("port", &self.port)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}
