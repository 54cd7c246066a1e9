//! IPv4 fragmentation in the forwarding path (RFC 791 §3.2, RFC 1812 §5.2.6).
//!
//! A packet larger than the egress MTU without DF is split into fragments
//! whose data (except the last's) is a multiple of 8 bytes. The first
//! fragment carries every option of the original header; later fragments
//! carry only options with the *copied* flag (the type byte's top bit),
//! padded with End-of-List to a 4-byte boundary. A packet that is itself a
//! fragment is split further: offsets add to its own, and the last piece
//! keeps its MF flag. Every fragment keeps the identification, DSCP/ECN,
//! TTL (already decremented by the caller) and protocol, and gets a fresh
//! header checksum.
//!
//! Fragments go into buffers the caller owns, through [`FragmentSink`]; this
//! module allocates nothing. The count is computed first and checked against
//! [`FragmentSink::remaining`], so a sink is not left half-filled unless one
//! of its buffers turns out too small.

use wire::ethernet::{self, EtherType};
use wire::ipv4::{self, Ipv4Option, OptionIter};
use wire::MacAddr;

/// Where the forwarder writes the fragments of a packet.
///
/// The dataplane implements it over its own frame buffers (UMEM frames);
/// the sink is reset by the caller for every packet.
pub trait FragmentSink {
    /// How many more frames the sink can take.
    fn remaining(&self) -> usize;
    /// A buffer for the next frame, exactly `len` bytes long (the sink
    /// records the length); `None` if it has none that large.
    fn next_frame(&mut self, len: usize) -> Option<&mut [u8]>;
}

/// A sink without buffers: fragmentable packets are dropped as
/// [`Reason::NeedsFragmentation`](crate::Reason::NeedsFragmentation).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoFragments;

impl FragmentSink for NoFragments {
    fn remaining(&self) -> usize {
        0
    }
    fn next_frame(&mut self, _len: usize) -> Option<&mut [u8]> {
        None
    }
}

/// A sink over caller-owned, fixed-size buffers: `bufs[i][..lens[i]]` is the
/// i-th fragment frame after a forward, for `i < used`.
#[derive(Debug)]
pub struct FragmentBufs<'a, const N: usize> {
    bufs: &'a mut [[u8; N]],
    lens: &'a mut [usize],
    used: usize,
}

impl<'a, const N: usize> FragmentBufs<'a, N> {
    /// Use `bufs` (and `lens`, at least as long) for the fragments of one packet.
    pub fn new(bufs: &'a mut [[u8; N]], lens: &'a mut [usize]) -> Self {
        FragmentBufs { bufs, lens, used: 0 }
    }

    /// The frames written so far.
    pub fn frames(&self) -> impl Iterator<Item = &[u8]> {
        self.bufs.iter().zip(self.lens.iter()).take(self.used).map(|(b, &l)| &b[..l.min(N)])
    }

    pub fn used(&self) -> usize {
        self.used
    }
}

impl<const N: usize> FragmentSink for FragmentBufs<'_, N> {
    fn remaining(&self) -> usize {
        self.bufs.len().min(self.lens.len()).saturating_sub(self.used)
    }

    fn next_frame(&mut self, len: usize) -> Option<&mut [u8]> {
        if len > N || self.remaining() == 0 {
            return None;
        }
        let i = self.used;
        self.used += 1;
        *self.lens.get_mut(i)? = len;
        self.bufs.get_mut(i).map(|b| &mut b[..len])
    }
}

/// Most bytes of IPv4 options.
const MAX_OPTIONS: usize = 40;
/// The option type's "copied" flag (RFC 791 §3.1).
const OPTION_COPIED: u8 = 0x80;
/// Fragment data is sized in units of 8 bytes.
const FRAGMENT_UNIT: usize = 8;
/// Option bytes are padded to a multiple of 4 (IHL counts 32-bit words).
const HEADER_WORD: usize = 4;

/// Fragment the IPv4 packet at `frame[l3..]` (checked by the caller) for
/// `mtu`, writing Ethernet frames from `src_mac` to `dst_mac` into `sink`.
/// Returns the number of fragments, or `None` if it cannot (MTU too small
/// for the header, too few or too small buffers).
pub(crate) fn fragment_v4<S: FragmentSink + ?Sized>(
    frame: &[u8],
    l3: usize,
    mtu: u32,
    src_mac: MacAddr,
    dst_mac: MacAddr,
    sink: &mut S,
) -> Option<usize> {
    let pkt = ipv4::Packet::new_checked(frame.get(l3..)?).ok()?;
    let header = pkt.header();
    let hl = header.len();
    let data = pkt.payload();
    let (orig_offset, orig_more) = (usize::from(pkt.frag_offset()), pkt.more_frags());

    // Options for the later fragments: the copied ones only.
    let mut later_opts = [0u8; MAX_OPTIONS];
    let mut later_opts_len = 0;
    let opts = pkt.options();
    let mut rest = opts;
    for opt in OptionIter::new(opts) {
        let Ok(opt) = opt else { break };
        let consumed = match opt {
            Ipv4Option::EndOfList => break,
            Ipv4Option::NoOperation => 1,
            Ipv4Option::Other { kind, data } => {
                let n = data.len() + 2;
                if kind & OPTION_COPIED != 0 {
                    later_opts.get_mut(later_opts_len..later_opts_len + n)?.copy_from_slice(rest.get(..n)?);
                    later_opts_len += n;
                }
                n
            }
        };
        rest = rest.get(consumed..)?;
    }
    let later_opts_len_padded = later_opts_len.div_ceil(HEADER_WORD) * HEADER_WORD;
    let later_hl = ipv4::HEADER_LEN + later_opts_len_padded;

    let mtu = usize::try_from(mtu).ok()?;
    let first_room = mtu.checked_sub(hl)? / FRAGMENT_UNIT * FRAGMENT_UNIT;
    let later_room = mtu.checked_sub(later_hl)? / FRAGMENT_UNIT * FRAGMENT_UNIT;
    if first_room == 0 || later_room == 0 {
        return None;
    }
    let count = if data.len() <= first_room { 1 } else { 1 + (data.len() - first_room).div_ceil(later_room) };
    if sink.remaining() < count {
        return None;
    }

    let mut pos = 0;
    for i in 0..count {
        let first = i == 0;
        let room = if first { first_room } else { later_room };
        let chunk = data.get(pos..(pos + room).min(data.len()))?;
        let last = pos + chunk.len() == data.len();
        let this_hl = if first { hl } else { later_hl };
        let ip_len = this_hl + chunk.len();
        let buf = sink.next_frame(ethernet::HEADER_LEN + ip_len)?;
        let mut eth = ethernet::Frame::new_checked(&mut *buf).ok()?;
        eth.set_dst_addr(dst_mac);
        eth.set_src_addr(src_mac);
        eth.set_ethertype(EtherType::IPV4);
        let ip = buf.get_mut(ethernet::HEADER_LEN..)?;
        if first {
            ip.get_mut(..hl)?.copy_from_slice(header);
        } else {
            ip.get_mut(..ipv4::HEADER_LEN)?.copy_from_slice(header.get(..ipv4::HEADER_LEN)?);
            let opt_area = ip.get_mut(ipv4::HEADER_LEN..later_hl)?;
            opt_area.fill(ipv4::option::END_OF_LIST);
            opt_area.get_mut(..later_opts_len)?.copy_from_slice(later_opts.get(..later_opts_len)?);
        }
        ip.get_mut(this_hl..ip_len)?.copy_from_slice(chunk);
        let mut p = ipv4::Packet::new_unchecked(&mut *ip);
        p.set_version_and_header_len(u8::try_from(this_hl).ok()?);
        p.set_total_len(u16::try_from(ip_len).ok()?);
        p.set_more_frags(!last || orig_more);
        p.set_frag_offset(u16::try_from(orig_offset + pos).ok()?);
        p.fill_checksum();
        pos += chunk.len();
    }
    Some(count)
}
