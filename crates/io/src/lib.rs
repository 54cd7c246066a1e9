//! Packet I/O for torwart: one batched device trait and its backends.
//!
//! Every source and sink of frames — an AF_XDP socket in production, an
//! AF_PACKET socket where XDP is not available, a pcap file in `torwart replay` and the golden tests, an in-memory
//! queue in unit tests — is a [`PacketIo`]. The dataplane loop is written once
//! against it: `recv` a [`Batch`], process it, `send` what leaves, repeat.
//! Because the same loop runs over files and memory, the pipeline that is
//! tested is the pipeline that runs (STYLE habit 10).
//!
//! Batches, not packets: a backend moves a whole batch per call and must not
//! make a syscall, allocation or lock per frame (DESIGN: "no allocation, lock
//! or syscall per packet"). Buffers belong to the caller and are reused
//! ([`Batch`], [`PacketBuf`]), so steady-state I/O allocates nothing.
//!
//! Modules:
//! - [`xdp`]: [`XdpProgram`] (the XDP program that splits transit traffic
//!   from the kernel's) and [`XdpPort`] (an AF_XDP socket), the production
//!   backend.
//! - [`afpacket`]: [`PacketPort`], the AF_PACKET fallback.
//! - [`buf`]: [`PacketBuf`] and [`Batch`].
//! - [`memory`]: [`MemoryIo`], queues that tests fill and read.
//! - [`pcap`]: [`PcapReader`] (pcap and pcapng, several link types, turned
//!   into Ethernet) and [`PcapWriter`] (Ethernet, nanosecond pcap).
//! - [`merge`]: [`Merged`], two timestamped sources as one stream in time order.
//! - [`wrap`]: [`Tap`] (trace to pcap), [`Faults`] (seeded fault injection),
//!   [`Duplex`] (receive from one device, send to another).
//!
//! Time: backends report when a frame was received (`PacketBuf::ts_ns`), from
//! the capture or, for live ports, the rx time; they never feed a clock into
//! logic. The engine takes `now` as an argument.

pub mod afpacket;
pub mod buf;
pub mod error;
pub mod memory;
pub mod merge;
pub mod pcap;
pub mod wrap;
pub mod xdp;

pub use afpacket::{interface_mtu, PacketConfig, PacketPort, PacketPortStats};
pub use buf::{Batch, PacketBuf, DEFAULT_FRAME_CAPACITY};
pub use error::IoError;
pub use memory::{MemoryIo, SharedMemoryIo};
pub use merge::Merged;
pub use pcap::{PcapReader, PcapWriter};
pub use wrap::{Duplex, FaultRates, Faults, Tap};
pub use xdp::{
    BusyPoll, Credits, GuardVerdict, LiveFrames, PacketAdmission, PacketGuard, XdpConfig, XdpMode, XdpPort,
    XdpPortStats, XdpProgram, XskCopyMode,
};

/// A port of the gateway: which wire a frame came in on or goes out by
/// (e.g. 0 = inside, 1 = outside; the dataplane's configuration names them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PortId(pub u8);

impl std::fmt::Display for PortId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "port {}", self.0)
    }
}

/// A device that receives and sends Ethernet frames in batches.
///
/// # Contract
/// - **Ownership.** The caller owns every buffer. `recv` copies (or, for a
///   future zero-copy backend, places) frames into the free slots of the
///   caller's [`Batch`]; `send` reads the caller's frames and never keeps a
///   reference to them after it returns.
/// - **Order.** `recv` appends frames in the order the device received them,
///   after those already in the batch, which it leaves untouched. `send`
///   transmits `frames` in slice order; if it accepts `n`, those are exactly
///   `frames[..n]`.
/// - **Back-pressure.** `send` returns how many frames it accepted. The rest
///   were *not* sent: the caller counts them as dropped (a full tx ring is a
///   named drop reason, not a retry loop).
/// - **Nothing now vs. the end.** `recv` returns `Ok(0)` when nothing is
///   available right now (or the batch has no free slot) and
///   `Err(IoError::Eof)` when a finite source is exhausted and will never
///   deliver again; after a partial final batch it returns the count first
///   and `Eof` on the next call.
/// - **Cost.** A real backend makes at most a constant number of syscalls per
///   call (one rx/tx ring kick), never one per frame it sends (only, on
///   AF_PACKET, up to two more per frame the kernel refuses as too long),
///   and allocates nothing.
/// - **Errors.** Any other error names the device or file and what went
///   wrong; frames already appended to the batch before the error stay there.
pub trait PacketIo {
    /// Appends up to `batch.free()` received frames to `batch`; returns how
    /// many it appended.
    fn recv(&mut self, batch: &mut Batch) -> Result<usize, IoError>;

    /// Transmits a prefix of `frames`; returns its length. A frame too
    /// large for the device is taken out of the prefix without being sent
    /// (so that the frames behind it still go), and counted for
    /// [`tx_refused`](PacketIo::tx_refused).
    fn send(&mut self, frames: &[PacketBuf]) -> Result<usize, IoError>;

    /// How many frames of the prefixes `send` returned since the last call
    /// were refused as too large for the device rather than sent. Counted
    /// without a syscall; the caller asks after each `send`.
    fn tx_refused(&mut self) -> u64 {
        0
    }

    /// Pushes out anything buffered (a file's write buffer, a tx ring's
    /// pending descriptors). Devices without buffering need not override it.
    fn flush(&mut self) -> Result<(), IoError> {
        Ok(())
    }

    /// The device's name for logs and errors (interface name or file path).
    fn name(&self) -> &str;

    /// A descriptor that polls readable (`POLLIN`) when `recv` has frames,
    /// for an idle worker to sleep on; `None` for devices without one
    /// (files, memory), which the worker then polls on a timer.
    fn ready_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }

    /// Frames the kernel dropped on their way in since the device was
    /// opened, before `recv` could take them: its receive ring was full or
    /// had no buffer for them (the reader fell behind), and frames longer
    /// than a buffer, which are not delivered. One syscall: for a
    /// periodic stats pass, never per batch. Devices the kernel does not
    /// feed lose nothing this way.
    fn receive_lost(&mut self) -> u64 {
        0
    }
}

/// A source whose frames carry timestamps in nondecreasing order and can be
/// pulled one at a time: what [`Merged`] interleaves.
pub trait TimedSource {
    /// The timestamp of the next frame without consuming it; `None` when the
    /// source has (for now) nothing more.
    fn peek_ts(&mut self) -> Result<Option<u64>, IoError>;

    /// Reads the next frame into `slot`; `false` when there is none.
    fn read_next(&mut self, slot: &mut PacketBuf) -> Result<bool, IoError>;

    /// Frames skipped so far because they were larger than a slot.
    fn oversized(&self) -> u64 {
        0
    }
}

impl<T: PacketIo + ?Sized> PacketIo for Box<T> {
    fn recv(&mut self, batch: &mut Batch) -> Result<usize, IoError> {
        (**self).recv(batch)
    }
    fn send(&mut self, frames: &[PacketBuf]) -> Result<usize, IoError> {
        (**self).send(frames)
    }
    fn flush(&mut self) -> Result<(), IoError> {
        (**self).flush()
    }
    fn name(&self) -> &str {
        (**self).name()
    }
    fn ready_fd(&self) -> Option<std::os::fd::RawFd> {
        (**self).ready_fd()
    }
    fn receive_lost(&mut self) -> u64 {
        (**self).receive_lost()
    }
    fn tx_refused(&mut self) -> u64 {
        (**self).tx_refused()
    }
}

impl<T: PacketIo + ?Sized> PacketIo for &mut T {
    fn recv(&mut self, batch: &mut Batch) -> Result<usize, IoError> {
        (**self).recv(batch)
    }
    fn send(&mut self, frames: &[PacketBuf]) -> Result<usize, IoError> {
        (**self).send(frames)
    }
    fn flush(&mut self) -> Result<(), IoError> {
        (**self).flush()
    }
    fn name(&self) -> &str {
        (**self).name()
    }
    fn ready_fd(&self) -> Option<std::os::fd::RawFd> {
        (**self).ready_fd()
    }
    fn receive_lost(&mut self) -> u64 {
        (**self).receive_lost()
    }
    fn tx_refused(&mut self) -> u64 {
        (**self).tx_refused()
    }
}

impl<T: TimedSource + ?Sized> TimedSource for Box<T> {
    fn peek_ts(&mut self) -> Result<Option<u64>, IoError> {
        (**self).peek_ts()
    }
    fn read_next(&mut self, slot: &mut PacketBuf) -> Result<bool, IoError> {
        (**self).read_next(slot)
    }
    fn oversized(&self) -> u64 {
        (**self).oversized()
    }
}

/// Fills the free slots of `batch` from a [`TimedSource`], one frame at a
/// time; returns how many it added. Shared by the file-like backends so their
/// `recv` follows the [`PacketIo`] contract the same way.
pub(crate) fn fill_from<S: TimedSource + ?Sized>(src: &mut S, batch: &mut Batch) -> Result<usize, IoError> {
    let mut n = 0;
    while let Some(slot) = batch.next_slot() {
        if !src.read_next(slot)? {
            break;
        }
        let committed = batch.commit_slot();
        debug_assert!(committed, "next_slot returned a slot, so there was room");
        n += 1;
    }
    Ok(n)
}

/// `setsockopt(fd, level, name, &value)` for an int option.
pub(crate) fn setsockopt_int(
    fd: std::os::fd::RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> std::io::Result<()> {
    // SAFETY: `value` is a live c_int and we pass its size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
