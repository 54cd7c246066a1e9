//! What one box tells the other: records of flows and usage, and their encoding.
//!
//! A record is a type byte, a 16-bit length and a body of exactly that
//! length for the type (big-endian throughout). Decoding reads each byte
//! once and checks every field it will rely on: families, sides, flags and
//! the TCP snapshot, so an installed record can never hold a value the
//! engine itself could not have made.
//!
//! * [`Record::Flow`] carries everything needed to forward the flow's
//!   packets on the other box at once: both keys, the sides, TCP tracking,
//!   the time left before it expires, the member, the NAT binding's public
//!   address and port. It is sent when a flow is made and when its state
//!   changes, and it replaces whatever the receiver held for that flow.
//! * [`Record::Ended`] names a flow (by its original key and its member)
//!   that is gone.
//! * [`Record::Usage`] is a member's traffic counted since the sender's
//!   last write to the database, as running totals; [`Record::Flushed`]
//!   says those totals were written. A box that takes over writes what its
//!   peer counted and did not write.
//! * [`Record::ResyncBegin`] opens a full resync: the receiver drops, at
//!   its end, every flow of the sender's that the resync did not name.
//!   [`Record::ResyncEnd`] closes it; [`Record::Gap`] says
//!   records were lost before it (the receiver is incomplete until the
//!   next resync ends).

use core::net::Ipv4Addr;
use core::time::Duration;
use engine::conntrack::ProtoState;
use engine::tcp::{TcpTrack, SNAPSHOT_LEN};
use engine::{Side, Synced};
use wire::flow::Family;
use wire::FlowKey;

/// The protocol state of a synced flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowState {
    /// TCP tracking as [`TcpTrack::snapshot`] wrote it (checked on decode).
    Tcp([u8; SNAPSHOT_LEN]),
    Udp,
    Icmp,
    Other,
}

/// A flow as the other box needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowRecord {
    /// `[original, reply]` keys as each direction arrives.
    pub keys: [FlowKey; 2],
    pub orig_side: Side,
    pub reply_side: Side,
    pub answered: bool,
    pub state: FlowState,
    /// Milliseconds until the flow expires on the sender.
    pub remaining_ms: u32,
    /// The member's id, if it is a member's flow.
    pub member: Option<u32>,
    /// The NAT binding's public address and port, if the flow is translated.
    pub nat: Option<(Ipv4Addr, u16)>,
    /// The sender holds it as a copy of the receiver's flow, not as its
    /// own ([`Synced::copy`]).
    pub copy: bool,
}

impl FlowRecord {
    /// The record of a flow an engine reports ([`engine::Engine::take_changes`]).
    pub fn from_synced(s: &Synced) -> FlowRecord {
        let state = match &s.state {
            ProtoState::Tcp(t) => FlowState::Tcp(t.snapshot()),
            ProtoState::Udp => FlowState::Udp,
            ProtoState::Icmp => FlowState::Icmp,
            ProtoState::Other => FlowState::Other,
        };
        FlowRecord {
            keys: s.keys,
            orig_side: s.orig_side,
            reply_side: s.reply_side,
            answered: s.answered,
            state,
            remaining_ms: u32::try_from(s.remaining.as_millis()).unwrap_or(u32::MAX),
            member: s.member_id,
            nat: s.nat,
            copy: s.copy,
        }
    }

    /// The flow to install ([`engine::Engine::install`]); `None` if its TCP
    /// snapshot is not one (never for a decoded record).
    pub fn to_synced(&self) -> Option<Synced> {
        let state = match &self.state {
            FlowState::Tcp(b) => ProtoState::Tcp(TcpTrack::resume(b)?),
            FlowState::Udp => ProtoState::Udp,
            FlowState::Icmp => ProtoState::Icmp,
            FlowState::Other => ProtoState::Other,
        };
        Some(Synced {
            keys: self.keys,
            orig_side: self.orig_side,
            reply_side: self.reply_side,
            answered: self.answered,
            state,
            remaining: Duration::from_millis(u64::from(self.remaining_ms)),
            member_id: self.member,
            nat: self.nat,
            // Statistics of the other box, not carried.
            packets: [0; 2],
            bytes: [0; 2],
            copy: self.copy,
        })
    }
}

/// A member's usage counted and not yet written to the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// The sender's flush these totals will be written in.
    pub flush: u64,
    pub member: u32,
    /// `[from the member, to the member]`, since the last flush.
    pub bytes: [u64; 2],
    pub packets: [u64; 2],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    Flow(FlowRecord),
    Ended {
        key: FlowKey,
        member: u32,
    },
    Usage(Usage),
    /// The sender wrote its flush `flush` to the database.
    Flushed {
        flush: u64,
    },
    /// A full resync `id` follows: every flow the sender holds.
    ResyncBegin {
        id: u32,
    },
    /// The full resync `id` is complete: `flows` flows were in it.
    ResyncEnd {
        id: u32,
        flows: u64,
    },
    /// Records were lost before this one (the sender's queue was full).
    Gap,
}

/// Why a record could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// The payload ends inside a record.
    Truncated,
    /// A record type this version does not know.
    UnknownType(u8),
    /// A known type with the wrong body length.
    Length { kind: u8, len: usize },
    /// A field holds a value no sender makes.
    Field(&'static str),
}

const FLOW: u8 = 1;
const ENDED: u8 = 2;
const USAGE: u8 = 3;
const FLUSHED: u8 = 4;
const RESYNC_END: u8 = 5;
const GAP: u8 = 6;
const RESYNC_BEGIN: u8 = 7;

/// The longest key on the wire (IPv6); an IPv4 key takes [`KEY_V4_LEN`].
const KEY_LEN: usize = 38;
const KEY_V4_LEN: usize = 14;
/// A flow's member on the wire when it has none.
const NO_MEMBER: u32 = u32::MAX;
/// The longest flow body: IPv6 keys, TCP, a binding (IPv4 only, so never
/// with IPv6 keys; the bound is generous).
const FLOW_LEN: usize = 2 * KEY_LEN + 2 + SNAPSHOT_LEN + 4 + 4 + 6;
const USAGE_LEN: usize = 8 + 4 + 32;
/// The longest ended-flow body.
const ENDED_LEN: usize = KEY_LEN + 4;

/// Bytes a record takes on the wire, its type and length included.
pub fn encoded_len(r: &Record) -> usize {
    3 + body_len(r)
}

fn key_len(k: &FlowKey) -> usize {
    if k.family == Family::V4 {
        KEY_V4_LEN
    } else {
        KEY_LEN
    }
}

fn body_len(r: &Record) -> usize {
    match r {
        Record::Flow(f) => {
            let tcp = if matches!(f.state, FlowState::Tcp(_)) { SNAPSHOT_LEN } else { 0 };
            2 * key_len(&f.keys[0]) + 2 + tcp + 4 + 4 + if f.nat.is_some() { 6 } else { 0 }
        }
        Record::Ended { key, .. } => key_len(key) + 4,
        Record::Usage(_) => USAGE_LEN,
        Record::Flushed { .. } => 8,
        Record::ResyncBegin { .. } => 4,
        Record::ResyncEnd { .. } => 12,
        Record::Gap => 0,
    }
}

/// The largest record's encoded length.
pub const MAX_RECORD_LEN: usize = 3 + FLOW_LEN;

/// Writes `r` at the start of `out`; returns the bytes written, or `None`
/// if it does not fit.
pub fn encode(r: &Record, out: &mut [u8]) -> Option<usize> {
    let n = encoded_len(r);
    let out = out.get_mut(..n)?;
    let mut w = Writer { b: out, at: 0 };
    let kind = match r {
        Record::Flow(_) => FLOW,
        Record::Ended { .. } => ENDED,
        Record::Usage(_) => USAGE,
        Record::Flushed { .. } => FLUSHED,
        Record::ResyncBegin { .. } => RESYNC_BEGIN,
        Record::ResyncEnd { .. } => RESYNC_END,
        Record::Gap => GAP,
    };
    w.u8(kind);
    w.u16(body_len(r) as u16);
    match r {
        Record::Flow(f) => write_flow(&mut w, f),
        Record::Ended { key, member } => {
            write_key(&mut w, key);
            w.u32(*member);
        }
        Record::Usage(u) => {
            w.u64(u.flush);
            w.u32(u.member);
            u.bytes.iter().chain(&u.packets).for_each(|v| w.u64(*v));
        }
        Record::Flushed { flush } => w.u64(*flush),
        Record::ResyncBegin { id } => w.u32(*id),
        Record::ResyncEnd { id, flows } => {
            w.u32(*id);
            w.u64(*flows);
        }
        Record::Gap => {}
    }
    debug_assert_eq!(w.at, n);
    Some(n)
}

/// Reads the records of `payload` in order, calling `each` for every one,
/// or stops at the first malformed record. Linear in the payload's length.
pub fn decode(payload: &[u8], mut each: impl FnMut(Record)) -> Result<usize, Malformed> {
    let mut r = Reader { b: payload, at: 0 };
    let mut count = 0;
    while r.at < payload.len() {
        let kind = r.u8()?;
        let len = usize::from(r.u16()?);
        let body = r.take(len)?;
        let mut b = Reader { b: body, at: 0 };
        let longest = match kind {
            FLOW => FLOW_LEN,
            ENDED => ENDED_LEN,
            USAGE => USAGE_LEN,
            FLUSHED => 8,
            RESYNC_BEGIN => 4,
            RESYNC_END => 12,
            GAP => 0,
            other => return Err(Malformed::UnknownType(other)),
        };
        if len > longest {
            return Err(Malformed::Length { kind, len });
        }
        let record = match kind {
            FLOW => Record::Flow(read_flow(&mut b)?),
            ENDED => Record::Ended { key: read_key(&mut b)?, member: b.u32()? },
            USAGE => Record::Usage(Usage {
                flush: b.u64()?,
                member: b.u32()?,
                bytes: [b.u64()?, b.u64()?],
                packets: [b.u64()?, b.u64()?],
            }),
            FLUSHED => Record::Flushed { flush: b.u64()? },
            RESYNC_BEGIN => Record::ResyncBegin { id: b.u32()? },
            RESYNC_END => Record::ResyncEnd { id: b.u32()?, flows: b.u64()? },
            _ => Record::Gap,
        };
        // The body is exactly what the record's fields take.
        if b.at != len || body_len(&record) != len {
            return Err(Malformed::Length { kind, len });
        }
        each(record);
        count += 1;
    }
    Ok(count)
}

fn write_key(w: &mut Writer<'_>, k: &FlowKey) {
    w.u8(k.family as u8);
    let n = if k.family == Family::V4 { 4 } else { 16 };
    w.bytes(&k.src[..n]);
    w.bytes(&k.dst[..n]);
    w.u16(k.src_port);
    w.u16(k.dst_port);
    w.u8(k.proto);
}

fn read_key(r: &mut Reader<'_>) -> Result<FlowKey, Malformed> {
    let (family, n) = match r.u8()? {
        4 => (Family::V4, 4),
        6 => (Family::V6, 16),
        _ => return Err(Malformed::Field("family")),
    };
    // An IPv4 address sits in the first four bytes, the rest zero.
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src[..n].copy_from_slice(r.take(n)?);
    dst[..n].copy_from_slice(r.take(n)?);
    let (src_port, dst_port, proto) = (r.u16()?, r.u16()?, r.u8()?);
    Ok(FlowKey { src, dst, src_port, dst_port, proto, family })
}

fn side(v: u8) -> Result<Side, Malformed> {
    match v {
        0 => Ok(Side::Inside),
        1 => Ok(Side::Outside),
        _ => Err(Malformed::Field("side")),
    }
}

fn write_flow(w: &mut Writer<'_>, f: &FlowRecord) {
    write_key(w, &f.keys[0]);
    write_key(w, &f.keys[1]);
    let flags = f.orig_side as u8
        | (f.reply_side as u8) << 1
        | u8::from(f.answered) << 2
        | u8::from(f.nat.is_some()) << 3
        | u8::from(f.copy) << 4;
    w.u8(flags);
    match &f.state {
        FlowState::Tcp(s) => {
            w.u8(1);
            w.bytes(s);
        }
        FlowState::Udp => w.u8(2),
        FlowState::Icmp => w.u8(3),
        FlowState::Other => w.u8(4),
    }
    w.u32(f.remaining_ms);
    w.u32(f.member.unwrap_or(NO_MEMBER));
    if let Some((addr, port)) = f.nat {
        w.bytes(&addr.octets());
        w.u16(port);
    }
}

fn read_flow(r: &mut Reader<'_>) -> Result<FlowRecord, Malformed> {
    let keys = [read_key(r)?, read_key(r)?];
    if keys[0].family != keys[1].family || keys[0].proto != keys[1].proto {
        return Err(Malformed::Field("keys of different families or protocols"));
    }
    let flags = r.u8()?;
    if flags & !0b1_1111 != 0 {
        return Err(Malformed::Field("flags"));
    }
    let state = match r.u8()? {
        1 => {
            let mut tcp = [0u8; SNAPSHOT_LEN];
            tcp.copy_from_slice(r.take(SNAPSHOT_LEN)?);
            if TcpTrack::resume(&tcp).is_none() {
                return Err(Malformed::Field("TCP tracking"));
            }
            FlowState::Tcp(tcp)
        }
        2 => FlowState::Udp,
        3 => FlowState::Icmp,
        4 => FlowState::Other,
        _ => return Err(Malformed::Field("protocol state")),
    };
    let remaining_ms = r.u32()?;
    let member = Some(r.u32()?).filter(|m| *m != NO_MEMBER);
    let nat = if flags & 8 != 0 {
        let mut addr = [0u8; 4];
        addr.copy_from_slice(r.take(4)?);
        let (addr, port) = (Ipv4Addr::from(addr), r.u16()?);
        if addr.is_unspecified() || keys[0].family != Family::V4 {
            return Err(Malformed::Field("NAT binding"));
        }
        Some((addr, port))
    } else {
        None
    };
    Ok(FlowRecord {
        keys,
        orig_side: side(flags & 1)?,
        reply_side: side(flags >> 1 & 1)?,
        answered: flags & 4 != 0,
        state,
        remaining_ms,
        member,
        nat,
        copy: flags & 16 != 0,
    })
}

struct Writer<'a> {
    b: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn bytes(&mut self, v: &[u8]) {
        self.b[self.at..self.at + v.len()].copy_from_slice(v);
        self.at += v.len();
    }
    fn u8(&mut self, v: u8) {
        self.bytes(&[v]);
    }
    fn u16(&mut self, v: u16) {
        self.bytes(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_be_bytes());
    }
}

/// Reads big-endian fields from a byte slice, refusing to read past its end.
pub(crate) struct Reader<'a> {
    pub(crate) b: &'a [u8],
    pub(crate) at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len()).ok_or(Malformed::Truncated)?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, Malformed> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, Malformed> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, Malformed> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::tcp::Segment;

    pub(crate) fn flow(i: u32) -> FlowRecord {
        let v4 = |a: [u8; 4]| {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a);
            b
        };
        let ip = i.to_be_bytes();
        let orig = FlowKey {
            src: v4([10, ip[1], ip[2], ip[3]]),
            dst: v4([192, 0, 2, 7]),
            src_port: 40000,
            dst_port: 443,
            proto: 6,
            family: Family::V4,
        };
        let reply = FlowKey { src: orig.dst, dst: v4([198, 51, 100, 1]), src_port: 443, dst_port: 2000, ..orig };
        let syn = Segment { syn: true, seq: i, window: 1000, ..Segment::default() };
        FlowRecord {
            keys: [orig, reply],
            orig_side: Side::Inside,
            reply_side: Side::Outside,
            answered: false,
            state: FlowState::Tcp(TcpTrack::open(&syn).snapshot()),
            remaining_ms: 120_000,
            member: Some(i),
            nat: Some((Ipv4Addr::new(198, 51, 100, 1), 2000)),
            copy: false,
        }
    }

    fn all() -> Vec<Record> {
        vec![
            Record::Flow(flow(1)),
            Record::Flow(FlowRecord { state: FlowState::Udp, nat: None, member: None, copy: true, ..flow(2) }),
            Record::Ended { key: flow(3).keys[0], member: 3 },
            Record::Usage(Usage { flush: 9, member: 4, bytes: [1, 2], packets: [3, 4] }),
            Record::Flushed { flush: 9 },
            Record::ResyncBegin { id: 2 },
            Record::ResyncEnd { id: 2, flows: 200_000 },
            Record::Gap,
        ]
    }

    #[test]
    fn records_round_trip() {
        let mut buf = vec![0u8; 4096];
        let mut at = 0;
        for r in all() {
            at += encode(&r, &mut buf[at..]).unwrap();
        }
        let mut back = Vec::new();
        assert_eq!(decode(&buf[..at], |r| back.push(r)), Ok(all().len()));
        assert_eq!(back, all());
        // Every cut inside the payload is refused, never a panic.
        for cut in 1..at {
            let _ = decode(&buf[..cut], |_| {});
        }
    }

    #[test]
    fn fields_no_sender_makes_are_refused() {
        let mut buf = [0u8; MAX_RECORD_LEN];
        let n = encode(&Record::Flow(flow(1)), &mut buf).unwrap();
        // An IPv4 TCP flow with a binding: keys at 3 and 17, flags at 31,
        // the state's kind at 32, the TCP snapshot from 33.
        assert_eq!(n, 3 + 2 * KEY_V4_LEN + 2 + SNAPSHOT_LEN + 8 + 6);
        let cases: [(usize, u8, &str); 5] = [
            (3, 5, "family"),
            (3 + KEY_V4_LEN + 13, 17, "keys of different families or protocols"),
            (3 + 2 * KEY_V4_LEN, 0x20, "flags"),
            (3 + 2 * KEY_V4_LEN + 1, 9, "protocol state"),
            (3 + 2 * KEY_V4_LEN + 2, 9, "TCP tracking"),
        ];
        for (at, value, what) in cases {
            let mut bad = buf;
            bad[at] = value;
            assert_eq!(decode(&bad[..n], |_| {}), Err(Malformed::Field(what)), "byte {at}");
        }
        assert_eq!(decode(&[9, 0, 0], |_| {}), Err(Malformed::UnknownType(9)));
        assert_eq!(decode(&[GAP, 0, 1, 0], |_| {}), Err(Malformed::Length { kind: GAP, len: 1 }));
        assert_eq!(decode(&[GAP, 0], |_| {}), Err(Malformed::Truncated));
        // A binding flag without the binding: the body is too short for it.
        let mut short = buf;
        short[3 + 2 * KEY_V4_LEN] &= !8;
        assert!(matches!(decode(&short[..n], |_| {}), Err(Malformed::Length { .. })));
    }
}
