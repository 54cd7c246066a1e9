//! A traffic generator for testbeds: frames handed to an interface as XDP
//! frames, the way a NIC driver hands them to the stack, not as skbs.
//!
//! On veth, frames sent by a socket (`AF_PACKET`, kbgen) arrive at the peer
//! as skbs, and an XDP program there must copy each skb into a page of its
//! own first (`skb_pp_cow_data`): a cost no NIC imposes, a third of the box
//! core in the side-by-side's profile. Frames transmitted by an XDP program
//! (`XDP_TX`, `ndo_xdp_xmit`) arrive at the peer veth as XDP frames instead:
//! an XDP program runs on them directly (torwart's splitter), and without
//! one the stack builds its skb around the page without a copy (the kernel's
//! forwarding path), as after a driver's receive.
//!
//! [`LiveFrames`] runs a tiny XDP program with `BPF_PROG_TEST_RUN` in
//! live-frames mode (Linux 5.18) on the generator's side of the link: each
//! run takes a fresh copy of a template frame, writes into it the varying
//! bytes of the next frame of a table (round robin, a counter in a map), and
//! returns `XDP_TX`, which sends it out of that interface to the peer. The
//! frames of the table may differ only in bytes [`VARYING`] (for IPv4/UDP:
//! header checksum, addresses, ports, UDP length and checksum), which is
//! what a flow generator varies.

use std::ops::Range;
use std::os::fd::{AsRawFd, OwnedFd};

use super::program::asm::{Label::*, Size::*, *};
use super::program::{field, ifindex, load_insns};
use super::sys;
use crate::IoError;

/// The bytes in which the frames of a table may differ.
pub const VARYING: Range<usize> = 24..48;
/// The most frames a table holds.
pub const MAX_FRAMES: usize = 1 << 22;
/// The longest frame: a live-frames test run puts each in one page, after
/// its headroom and before the room the kernel keeps for its own use.
pub const MAX_FRAME_LEN: usize = 3_500;

const XDP_DROP: i32 = 1;
const XDP_TX: i32 = 3;

/// A table of frames sent, round robin, as XDP frames out of one interface.
#[derive(Debug)]
pub struct LiveFrames {
    ifname: String,
    ifindex: u32,
    template: Vec<u8>,
    prog: OwnedFd,
    /// `[next frame, frames sent]`, two u64s at key 0.
    state: OwnedFd,
    _frames: OwnedFd,
}

fn invalid(ifname: &str, what: String) -> IoError {
    IoError::Interface {
        ifname: ifname.to_owned(),
        op: "set up the frame generator",
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, what),
        hint: "",
    }
}

impl LiveFrames {
    /// Loads the generator for `ifname` with `frames`: all of one length,
    /// at least [`VARYING`]'s end, differing only within [`VARYING`].
    pub fn new(ifname: &str, frames: &[Vec<u8>]) -> Result<LiveFrames, IoError> {
        let ifindex = ifindex(ifname)?;
        let Some(first) = frames.first() else { return Err(invalid(ifname, "no frames".to_owned())) };
        if frames.len() > MAX_FRAMES {
            return Err(invalid(ifname, format!("{} frames, at most {MAX_FRAMES}", frames.len())));
        }
        if first.len() < VARYING.end || first.len() > MAX_FRAME_LEN {
            return Err(invalid(
                ifname,
                format!("frames of {} bytes, {} to {MAX_FRAME_LEN} possible", first.len(), VARYING.end),
            ));
        }
        for (i, f) in frames.iter().enumerate() {
            if f.len() != first.len() {
                return Err(invalid(ifname, format!("frame {i} has {} bytes, frame 0 {}", f.len(), first.len())));
            }
            if f[..VARYING.start] != first[..VARYING.start] || f[VARYING.end..] != first[VARYING.end..] {
                return Err(invalid(ifname, format!("frame {i} differs from frame 0 outside bytes {VARYING:?}")));
            }
        }
        let count = frames.len() as u32;
        let width = VARYING.len() as u32;
        let state = sys::map_create(sys::MAP_TYPE_ARRAY, 4, 16, 1, "twgen_state")
            .map_err(|e| IoError::interface(ifname, "create the generator's counter", e))?;
        let table = sys::map_create(sys::MAP_TYPE_ARRAY, 4, width, count, "twgen_frames")
            .map_err(|e| IoError::interface(ifname, "create the generator's frame table", e))?;
        for (i, f) in frames.iter().enumerate() {
            sys::map_update(&table, &(i as u32).to_ne_bytes(), &f[VARYING])
                .map_err(|e| IoError::interface(ifname, "fill the generator's frame table", e))?;
        }
        let insns = emit(state.as_raw_fd(), table.as_raw_fd(), count).ok_or_else(|| {
            invalid(ifname, "jump label unresolved in the emitted generator program (bug)".to_owned())
        })?;
        let prog = load_insns(ifname, sys::PROG_TYPE_XDP, "torwart_gen", "load the generator program", &insns)?;
        Ok(LiveFrames { ifname: ifname.to_owned(), ifindex, template: first.clone(), prog, state, _frames: table })
    }

    /// Sends the next `count` frames of the table, transmitted in batches
    /// of `batch` (1 to 256). Returns when they are sent, or early with
    /// `EINTR` if a signal arrived. The peer's refusals (a full ring) are
    /// counted by the interfaces (veth: the sender's `tx_dropped`), not here.
    pub fn send(&self, count: u32, batch: u32) -> Result<(), IoError> {
        let ctx =
            sys::XdpMd { data_end: self.template.len() as u32, ingress_ifindex: self.ifindex, ..Default::default() };
        sys::test_run_live(&self.prog, &self.template, &ctx, count, batch.clamp(1, 256))
            .map_err(|e| IoError::interface(&self.ifname, "send frames (BPF_PROG_TEST_RUN, live frames)", e))
    }

    /// Frames the program has handed to `XDP_TX` since it was loaded, an
    /// interrupted [`send`](Self::send)'s included. Whether the interface
    /// and its peer took them, its counters say (veth: `tx_packets`, and
    /// `tx_dropped` for a full ring).
    pub fn sent(&self) -> Result<u64, IoError> {
        let mut value = [0u8; 16];
        sys::map_lookup(&self.state, &0u32.to_ne_bytes(), &mut value)
            .map_err(|e| IoError::interface(&self.ifname, "read the generator's counter", e))?;
        Ok(u64::from_ne_bytes(value[8..].try_into().unwrap_or_default()))
    }
}

/// The program: `i = state[0]; state[0] = (i + 1) % count; state[1] += 1;
/// frame[VARYING] = frames[i]; XDP_TX`.
fn emit(state_fd: i32, frames_fd: i32, count: u32) -> Option<Vec<sys::Insn>> {
    let mut a = Asm::default();
    a.mov_reg(R6, R1);
    a.store_imm(W, FP, -4, 0);
    a.lookup_or(state_fd, -4, Drop);
    a.load(Dw, R8, R0, 0);
    a.mov_reg(R9, R8);
    a.add_imm(R9, 1);
    a.jne_imm(R9, i32::try_from(count).ok()?, Store);
    a.mov_imm(R9, 0);
    a.label(Store);
    a.store_reg(Dw, R0, 0, R9);
    a.load(Dw, R9, R0, 8);
    a.add_imm(R9, 1);
    a.store_reg(Dw, R0, 8, R9);
    a.store_reg(W, FP, -8, R8);
    a.lookup_or(frames_fd, -8, Drop);
    a.load(W, R2, R6, field::MD_DATA);
    a.load(W, R3, R6, field::MD_DATA_END);
    a.mov_reg(R4, R2);
    a.add_imm(R4, VARYING.end as i32);
    a.jgt_reg(R4, R3, Drop);
    for off in (0..VARYING.len()).step_by(8) {
        a.load(Dw, R5, R0, off as i16);
        a.store_reg(Dw, R2, (VARYING.start + off) as i16, R5);
    }
    a.mov_imm(R0, XDP_TX);
    a.exit();
    a.label(Drop);
    a.mov_imm(R0, XDP_DROP);
    a.exit();
    a.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_assembles() {
        let insns = emit(3, 4, 200_000).unwrap();
        assert!(insns.len() > 20);
        assert!(emit(3, 4, u32::MAX).is_none(), "a count beyond the immediate's range is refused");
    }
}
