//! Capture files end to end: what PcapWriter writes PcapReader reads back
//! unchanged, hand-made files of every supported flavour read correctly, and
//! broken files give errors that name the file and record.

use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use io::{Batch, IoError, Merged, PacketBuf, PacketIo, PcapReader, PcapWriter, PortId};

/// A unique temp file path, removed when dropped.
struct TempPath(PathBuf);

impl TempPath {
    fn new(tag: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        TempPath(std::env::temp_dir().join(format!("torwart-io-{}-{tag}-{n}.pcap", std::process::id())))
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Builds a classic pcap file.
struct Pcap {
    big: bool,
    bytes: Vec<u8>,
}

impl Pcap {
    fn new(big: bool, nanos: bool, link: u32, snaplen: u32) -> Self {
        let mut p = Pcap { big, bytes: Vec::new() };
        p.u32(if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 });
        p.u16(2);
        p.u16(4);
        p.u32(0);
        p.u32(0);
        p.u32(snaplen);
        p.u32(link);
        p
    }
    fn u16(&mut self, v: u16) {
        let b = if self.big { v.to_be_bytes() } else { v.to_le_bytes() };
        self.bytes.extend_from_slice(&b);
    }
    fn u32(&mut self, v: u32) {
        let b = if self.big { v.to_be_bytes() } else { v.to_le_bytes() };
        self.bytes.extend_from_slice(&b);
    }
    fn record(mut self, sec: u32, frac: u32, data: &[u8], orig_len: u32) -> Self {
        self.u32(sec);
        self.u32(frac);
        self.u32(data.len() as u32);
        self.u32(orig_len);
        self.bytes.extend_from_slice(data);
        self
    }
}

/// Builds a little-endian pcapng file.
struct PcapNg(Vec<u8>);

impl PcapNg {
    fn new() -> Self {
        let mut body = Vec::new();
        body.extend_from_slice(&0x1a2b_3c4du32.to_le_bytes());
        body.extend_from_slice(&1u16.to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes());
        body.extend_from_slice(&(-1i64).to_le_bytes());
        PcapNg(Vec::new()).block(0x0a0d_0d0a, &body)
    }
    fn block(mut self, kind: u32, body: &[u8]) -> Self {
        let mut body = body.to_vec();
        while body.len() % 4 != 0 {
            body.push(0);
        }
        let len = (body.len() + 12) as u32;
        self.0.extend_from_slice(&kind.to_le_bytes());
        self.0.extend_from_slice(&len.to_le_bytes());
        self.0.extend_from_slice(&body);
        self.0.extend_from_slice(&len.to_le_bytes());
        self
    }
    /// Interface description with an optional if_tsresol.
    fn iface(self, link: u16, snaplen: u32, tsresol: Option<u8>) -> Self {
        let mut body = Vec::new();
        body.extend_from_slice(&link.to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes());
        body.extend_from_slice(&snaplen.to_le_bytes());
        if let Some(r) = tsresol {
            body.extend_from_slice(&9u16.to_le_bytes());
            body.extend_from_slice(&1u16.to_le_bytes());
            body.extend_from_slice(&[r, 0, 0, 0]);
            body.extend_from_slice(&[0; 4]); // opt_endofopt
        }
        self.block(1, &body)
    }
    fn epb(self, iface: u32, ts_units: u64, data: &[u8], orig_len: u32) -> Self {
        let mut body = Vec::new();
        body.extend_from_slice(&iface.to_le_bytes());
        body.extend_from_slice(&((ts_units >> 32) as u32).to_le_bytes());
        body.extend_from_slice(&(ts_units as u32).to_le_bytes());
        body.extend_from_slice(&(data.len() as u32).to_le_bytes());
        body.extend_from_slice(&orig_len.to_le_bytes());
        body.extend_from_slice(data);
        self.block(6, &body)
    }
    fn spb(self, data: &[u8]) -> Self {
        let mut body = (data.len() as u32).to_le_bytes().to_vec();
        body.extend_from_slice(data);
        self.block(3, &body)
    }
    /// An interface statistics block (skipped by the reader).
    fn isb(self) -> Self {
        let mut body = 0u32.to_le_bytes().to_vec();
        body.extend_from_slice(&[0; 8]);
        self.block(5, &body)
    }
}

/// Reads every frame as (bytes, ts, port).
fn read_all<R: Read>(reader: &mut PcapReader<R>) -> Result<Vec<(Vec<u8>, u64, u8)>, IoError> {
    let mut batch = Batch::new(3, 2048);
    let mut out = Vec::new();
    loop {
        batch.clear();
        match reader.recv(&mut batch) {
            Ok(_) => out.extend(batch.frames().iter().map(|f| (f.as_slice().to_vec(), f.ts_ns, f.port.0))),
            Err(IoError::Eof) => return Ok(out),
            Err(e) => return Err(e),
        }
    }
}

fn reader(bytes: &[u8]) -> PcapReader<&[u8]> {
    PcapReader::new("test.pcap", bytes).unwrap()
}

/// A reader that hands out at most a few bytes per call, to exercise
/// records that straddle reads.
struct Dribble<'a> {
    bytes: &'a [u8],
    step: usize,
}

impl Read for Dribble<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.step = self.step % 7 + 1;
        let n = self.step.min(buf.len()).min(self.bytes.len());
        buf[..n].copy_from_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        Ok(n)
    }
}

fn frames() -> Vec<(Vec<u8>, u64)> {
    (0..50u32)
        .map(|i| {
            let len = 14 + (i as usize * 37) % 1500;
            let bytes = (0..len).map(|j| (j as u32 ^ i) as u8).collect();
            (bytes, 1_700_000_000_123_456_789 + u64::from(i) * 1_001)
        })
        .collect()
}

#[test]
fn written_file_reads_back_identical() {
    let path = TempPath::new("roundtrip");
    let mut w = PcapWriter::create(&path.0).unwrap();
    let mut batch = Batch::new(50, 2048);
    for (bytes, ts) in frames() {
        assert!(batch.push_copy(&bytes, ts, PortId(1)));
    }
    assert_eq!(w.send(&batch.frames()[..20]).unwrap(), 20);
    assert_eq!(w.send(&batch.frames()[20..]).unwrap(), 30);
    assert_eq!(w.frames_written(), 50);
    w.finish().unwrap();

    let mut r = PcapReader::open(&path.0).unwrap().with_port(PortId(4));
    let got = read_all(&mut r).unwrap();
    let want: Vec<_> = frames().into_iter().map(|(b, ts)| (b, ts, 4)).collect();
    assert_eq!(got, want);
    assert_eq!(r.stats().records, 50);
    assert_eq!(r.stats().snapped, 0);

    // Writing what was read gives the same file, byte for byte.
    let first = std::fs::read(&path.0).unwrap();
    let mut again = PcapWriter::new("again", Vec::new()).unwrap();
    for (bytes, ts, _) in &got {
        again.write_frame(bytes, *ts).unwrap();
    }
    assert_eq!(again.finish().unwrap(), first);
}

#[test]
fn records_straddling_reads() {
    let mut w = PcapWriter::new("mem", Vec::new()).unwrap();
    for (bytes, ts) in frames() {
        w.write_frame(&bytes, ts).unwrap();
    }
    let file = w.finish().unwrap();
    let mut r = PcapReader::new("dribble.pcap", Dribble { bytes: &file, step: 0 }).unwrap();
    let got = read_all(&mut r).unwrap();
    assert_eq!(got.len(), 50);
    assert_eq!(got[49].0, frames()[49].0);
}

#[test]
fn microsecond_nanosecond_and_big_endian_headers() {
    let eth = [0xffu8; 60];
    let micro = Pcap::new(false, false, 1, 65535).record(10, 500_000, &eth, 60);
    let got = read_all(&mut reader(&micro.bytes)).unwrap();
    assert_eq!(got, [(eth.to_vec(), 10_500_000_000, 0)]);

    let nano = Pcap::new(false, true, 1, 65535).record(10, 123_456_789, &eth, 60);
    assert_eq!(read_all(&mut reader(&nano.bytes)).unwrap()[0].1, 10_123_456_789);

    let big = Pcap::new(true, false, 1, 65535).record(1, 1, &eth[..20], 20).record(2, 2, &eth[..30], 30);
    let got = read_all(&mut reader(&big.bytes)).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!((got[1].0.len(), got[1].1), (30, 2_000_002_000));

    let big_nano = Pcap::new(true, true, 1, 65535).record(3, 7, &eth, 60);
    assert_eq!(read_all(&mut reader(&big_nano.bytes)).unwrap()[0].1, 3_000_000_007);
}

#[test]
fn snapped_records_are_delivered_and_counted() {
    let p = Pcap::new(false, false, 1, 96).record(1, 0, &[1; 96], 1514).record(2, 0, &[2; 60], 60);
    let mut r = reader(&p.bytes);
    let got = read_all(&mut r).unwrap();
    assert_eq!(got[0].0, vec![1; 96]);
    assert_eq!(r.stats().snapped, 1);
    assert_eq!(r.stats().records, 2);
    assert_eq!(r.stats().bytes, 156);
}

#[test]
fn linux_cooked_and_raw_ip_become_ethernet() {
    let ipv4 = [0x45u8, 0, 0, 20, 1, 2, 3, 4, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
    let ipv6_start = [0x60u8, 0, 0, 0, 0, 0, 17, 64];
    let eth = |ethertype: [u8; 2], payload: &[u8]| {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&ethertype);
        f.extend_from_slice(payload);
        f
    };

    // SLL: packet type, ARPHRD, address length, 8 address bytes, protocol.
    let mut sll = vec![0, 4, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0x08, 0x00];
    sll.extend_from_slice(&ipv4);
    let p = Pcap::new(false, false, 113, 65535).record(1, 0, &sll, sll.len() as u32);
    assert_eq!(read_all(&mut reader(&p.bytes)).unwrap()[0].0, eth([8, 0], &ipv4));

    // SLL2: protocol, reserved, ifindex, ARPHRD, packet type, address length, address.
    let mut sll2 = vec![0x86, 0xdd, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0];
    sll2.extend_from_slice(&ipv6_start);
    let p = Pcap::new(false, false, 276, 65535).record(1, 0, &sll2, sll2.len() as u32);
    assert_eq!(read_all(&mut reader(&p.bytes)).unwrap()[0].0, eth([0x86, 0xdd], &ipv6_start));

    // LINKTYPE_RAW tells the version from the first nibble.
    let p = Pcap::new(false, false, 101, 65535).record(1, 0, &ipv4, 20).record(2, 0, &ipv6_start, 8).record(
        3,
        0,
        &[0x12, 0x34],
        2,
    );
    let mut r = reader(&p.bytes);
    let got = read_all(&mut r).unwrap();
    assert_eq!(got[0].0, eth([8, 0], &ipv4));
    assert_eq!(got[1].0, eth([0x86, 0xdd], &ipv6_start));
    assert_eq!(got[2].0, eth([0, 0], &[0x12, 0x34]));
    assert_eq!(r.stats().unknown_ip_version, 1);

    // LINKTYPE_IPV4 and _IPV6 say it in the header.
    let p = Pcap::new(false, false, 228, 65535).record(1, 0, &ipv4, 20);
    assert_eq!(read_all(&mut reader(&p.bytes)).unwrap()[0].0, eth([8, 0], &ipv4));
    let p = Pcap::new(false, false, 229, 65535).record(1, 0, &ipv6_start, 8);
    assert_eq!(read_all(&mut reader(&p.bytes)).unwrap()[0].0, eth([0x86, 0xdd], &ipv6_start));

    // A cooked record too short for its header names the record.
    let p = Pcap::new(false, false, 113, 65535).record(1, 0, &sll, sll.len() as u32).record(2, 0, &sll[..10], 10);
    let err = read_all(&mut reader(&p.bytes)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "pcap file \"test.pcap\": record 2 is malformed: 10 bytes are too few for its 16-byte link-layer header"
    );
}

#[test]
fn pcapng_sections_interfaces_and_resolutions() {
    let eth = [0xabu8; 61];
    let mut raw = vec![0x45u8];
    raw.extend_from_slice(&[0; 19]);
    let file = PcapNg::new()
        .iface(1, 0, None) // µs, the default
        .iface(101, 0, Some(9)) // ns
        .epb(0, 1_000_000, &eth, 61) // 1 s in µs
        .isb()
        .epb(1, 2_000_000_001, &raw, 1500) // 2 s + 1 ns, snapped
        .spb(&eth[..13]) // no timestamp: inherits the last one
        .block(0x0a0d_0d0a, &{
            // A second section resets the interfaces.
            let mut b = 0x1a2b_3c4du32.to_le_bytes().to_vec();
            b.extend_from_slice(&[1, 0, 0, 0]);
            b.extend_from_slice(&(-1i64).to_le_bytes());
            b
        })
        .iface(1, 0, Some(0x80 | 10)) // 2^-10 s
        .epb(0, 5 * 1024 + 512, &eth[..20], 20);
    let mut r = PcapReader::new("ng.pcapng", file.0.as_slice()).unwrap();
    let got = read_all(&mut r).unwrap();
    assert_eq!(got.len(), 4);
    assert_eq!((got[0].0.as_slice(), got[0].1), (&eth[..], 1_000_000_000));
    assert_eq!(got[1].1, 2_000_000_001);
    assert_eq!(&got[1].0[12..15], &[8, 0, 0x45], "raw IP became Ethernet");
    assert_eq!((got[2].0.as_slice(), got[2].1), (&eth[..13], 2_000_000_001));
    assert_eq!(got[3].1, 5_500_000_000);
    let stats = r.stats();
    assert_eq!((stats.records, stats.snapped, stats.skipped_blocks), (4, 1, 1));

    // The same file read a few bytes at a time.
    let mut r = PcapReader::new("ng.pcapng", Dribble { bytes: &file.0, step: 0 }).unwrap();
    assert_eq!(read_all(&mut r).unwrap(), got);
}

#[test]
fn pcapng_errors_name_the_record() {
    let file = PcapNg::new().iface(1, 0, None).epb(0, 1, &[0; 20], 20).epb(3, 2, &[0; 20], 20);
    let err = read_all(&mut PcapReader::new("x.pcapng", file.0.as_slice()).unwrap()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "pcapng file \"x.pcapng\": record 2 is malformed: packet from interface 3, but its section describes 1"
    );

    let file = PcapNg::new().iface(105, 0, None).epb(0, 1, &[0; 20], 20);
    let err = read_all(&mut PcapReader::new("x.pcapng", file.0.as_slice()).unwrap()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unsupported link type 105 in \"x.pcapng\" (supported: Ethernet, Linux cooked SLL/SLL2, raw IP)"
    );

    let mut file = PcapNg::new().iface(1, 0, None).epb(0, 1, &[0; 20], 20).epb(0, 2, &[0; 100], 100);
    file.0.truncate(file.0.len() - 50);
    let err = read_all(&mut PcapReader::new("x.pcapng", file.0.as_slice()).unwrap()).unwrap_err();
    assert_eq!(err.to_string(), "pcapng file \"x.pcapng\": record 2 truncated (header says 132 bytes, 82 left)");
}

#[test]
fn truncated_record_names_record_and_sizes() {
    let mut p = Pcap::new(false, false, 1, 65535);
    for i in 0..16 {
        p = p.record(i, 0, &[0; 60], 60);
    }
    let mut bytes = p.record(17, 0, &[0; 1514], 1514).bytes;
    bytes.truncate(bytes.len() - 1314);
    let path = TempPath::new("truncated");
    std::fs::write(&path.0, &bytes).unwrap();
    let mut r = PcapReader::open(&path.0).unwrap();
    let err = read_all(&mut r).unwrap_err();
    assert!(matches!(err, IoError::TruncatedRecord { record: 17, wanted: 1514, left: 200, .. }));
    assert_eq!(
        err.to_string(),
        format!("pcap file \"{}\": record 17 truncated (header says 1514 bytes, 200 left)", path.0.display())
    );
    assert_eq!(r.stats().records, 16, "everything before it was delivered");

    // Cut inside the record header.
    let bytes = Pcap::new(false, false, 1, 65535).record(1, 0, &[0; 60], 60).bytes;
    assert_eq!(read_all(&mut reader(&bytes)).unwrap().len(), 1);
    let mut cut = bytes.clone();
    cut.extend_from_slice(&[0; 5]);
    let err = read_all(&mut reader(&cut)).unwrap_err();
    assert_eq!(err.to_string(), "pcap file \"test.pcap\": record 2 truncated in its 16-byte header (5 bytes left)");
}

#[test]
fn oversize_frames_are_skipped_and_counted() {
    // A jumbo frame and a 64 KiB GRO super-packet between ordinary frames.
    let p = Pcap::new(false, false, 1, 65535)
        .record(1, 0, &[0; 60], 60)
        .record(2, 0, &[0; 9000], 9000)
        .record(3, 0, &[0; 60], 60)
        .record(4, 0, &vec![0; 65535], 65535)
        .record(5, 0, &[0; 60], 60);
    let mut r = reader(&p.bytes);
    let got = read_all(&mut r).unwrap();
    assert_eq!(got.iter().map(|f| f.1 / 1_000_000_000).collect::<Vec<_>>(), [1, 3, 5]);
    assert_eq!(r.stats().oversized, 2);
    assert_eq!(r.stats().records, 3);
    // A peek skips them too: its timestamp is the next read's.
    let mut r = reader(&p.bytes);
    let mut slot = PacketBuf::default();
    assert!(r.read_next(&mut slot).unwrap());
    assert_eq!(r.peek_ts().unwrap(), Some(3_000_000_000));
    assert!(r.read_next(&mut slot).unwrap());
    assert_eq!(slot.ts_ns, 3_000_000_000);
    assert_eq!(r.stats().oversized, 1, "counted once, though peeked and read");

    // A corrupt length is refused before we try to buffer it.
    let mut bytes = Pcap::new(false, false, 1, 65535).record(1, 0, &[0; 60], 60).bytes;
    bytes[24 + 8..24 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
    let err = read_all(&mut reader(&bytes)).unwrap_err();
    assert!(matches!(err, IoError::RecordTooLarge { record: 1, .. }), "{err}");
}

#[test]
fn bad_files_give_clear_errors() {
    let err = PcapReader::new("empty.pcap", &[][..]).unwrap_err();
    assert_eq!(err.to_string(), "\"empty.pcap\" is not a pcap or pcapng file: the file is empty");

    let err = PcapReader::new("junk.pcap", &b"GET / HTTP/1.1\r\n"[..]).unwrap_err();
    assert_eq!(err.to_string(), "\"junk.pcap\" is not a pcap or pcapng file: unknown magic number 47 45 54 20");

    let header = Pcap::new(false, false, 1, 65535).bytes;
    let err = PcapReader::new("short.pcap", &header[..10]).unwrap_err();
    assert!(matches!(err, IoError::NotCapture { .. }), "{err}");

    let p = Pcap::new(false, false, 105, 65535);
    let err = PcapReader::new("x.pcap", p.bytes.as_slice()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unsupported link type 105 in \"x.pcap\" (supported: Ethernet, Linux cooked SLL/SLL2, raw IP)"
    );

    let err = PcapReader::open("/nonexistent/torwart/x.pcap").unwrap_err();
    assert!(err.to_string().starts_with("cannot open \"/nonexistent/torwart/x.pcap\": "), "{err}");

    // A header-only file is a valid, empty capture.
    let mut r = reader(&header);
    assert_eq!(r.peek_ts().unwrap(), None);
    assert!(r.recv(&mut Batch::new(1, 64)).unwrap_err().is_eof());
}

#[test]
fn peek_does_not_consume() {
    let p = Pcap::new(false, true, 1, 65535).record(1, 5, &[1; 20], 20).record(2, 6, &[2; 20], 20);
    let mut r = reader(&p.bytes);
    assert_eq!(r.peek_ts().unwrap(), Some(1_000_000_005));
    assert_eq!(r.peek_ts().unwrap(), Some(1_000_000_005));
    let mut slot = PacketBuf::default();
    assert!(r.read_next(&mut slot).unwrap());
    assert_eq!((slot.as_slice(), slot.ts_ns), (&[1u8; 20][..], 1_000_000_005));
    assert_eq!(r.peek_ts().unwrap(), Some(2_000_000_006));
    assert!(r.read_next(&mut slot).unwrap());
    assert_eq!(r.peek_ts().unwrap(), None);
    assert!(!r.read_next(&mut slot).unwrap());
    assert_eq!(r.stats().records, 2);
}

#[test]
fn merge_two_captures_by_time() {
    let inside = Pcap::new(false, true, 1, 65535)
        .record(0, 10, &[1; 14], 14)
        .record(0, 30, &[2; 14], 14)
        .record(0, 30, &[3; 14], 14);
    let outside = Pcap::new(true, false, 1, 65535) // other byte order and resolution
        .record(0, 0, &[11; 14], 14) // 0 ns
        .record(0, 0, &[12; 14], 14) // 0 ns
        .record(0, 30, &[13; 14], 14); // 30 µs
    let mut m = Merged::new(reader(&inside.bytes), PortId(0), reader(&outside.bytes), PortId(1));
    let mut batch = Batch::new(4, 64);
    let mut got = Vec::new();
    loop {
        batch.clear();
        match m.recv(&mut batch) {
            Ok(_) => got.extend(batch.frames().iter().map(|f| (f.as_slice()[0], f.port.0, f.ts_ns))),
            Err(IoError::Eof) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(got, [(11, 1, 0), (12, 1, 0), (1, 0, 10), (2, 0, 30), (3, 0, 30), (13, 1, 30_000),]);
    let (a, b) = m.sources();
    assert_eq!((a.stats().records, b.stats().records), (3, 3));
}

#[test]
fn ties_across_sources_go_to_the_first() {
    let a = Pcap::new(false, true, 1, 65535).record(0, 5, &[1; 14], 14).record(0, 5, &[2; 14], 14);
    let b = Pcap::new(false, true, 1, 65535).record(0, 5, &[3; 14], 14).record(0, 4, &[4; 14], 14);
    let mut m = Merged::new(reader(&b.bytes), PortId(1), reader(&a.bytes), PortId(0));
    let mut slot = PacketBuf::default();
    let mut order = Vec::new();
    while io::TimedSource::read_next(&mut m, &mut slot).unwrap() {
        order.push(slot.as_slice()[0]);
    }
    // b's second frame goes back in time; b keeps its own order regardless.
    assert_eq!(order, [3, 4, 1, 2]);
}
