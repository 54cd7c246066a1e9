//! [`XdpPort`]: one AF_XDP socket on one queue of one interface, as a
//! [`PacketIo`] device.
//!
//! # Layout
//! Each port owns its UMEM (simple; sharing one between ports is a later
//! optimisation): `rx_frames + tx_frames` chunks of `frame_size` bytes in one
//! anonymous mapping. The first `rx_frames` chunks belong to the receive
//! side and circulate fill ring → kernel → rx ring → us → fill ring; the
//! rest belong to the transmit side and circulate free list → tx ring →
//! kernel → completion ring → free list. The rings are as large as the
//! frame pools, so a ring can never be asked to take more than it holds.
//!
//! # Copies
//! `recv` copies each frame from its UMEM chunk into the caller's
//! [`PacketBuf`] and gives the chunk straight back to the fill ring; `send`
//! copies the caller's frames into free tx chunks. That is one memcpy per
//! frame each way (cheap next to the syscalls it replaces) and keeps the
//! [`PacketIo`] contract: the caller owns every buffer. Handing out UMEM
//! chunks themselves (zero-copy into the engine) is a later improvement
//! behind the same [`wire::FrameBuf`] view.
//!
//! # Kernel modes
//! The socket binds in zero-copy mode where the driver supports it and falls
//! back to copy mode (XDP_COPY) otherwise (veth is copy-only), unless a mode
//! is forced. `need_wakeup` is requested by default: the kernel then says
//! when it must be kicked, and a busy port makes no syscalls at all; without
//! it, `send` kicks on every call that leaves frames pending. In copy mode
//! the kernel transmits at most 32 frames per kick, so `send` kicks once per
//! call while descriptors are pending and [`flush`](PacketIo::flush) kicks
//! until the ring is drained (bounded).
//!
//! # Busy polling
//! With [`XdpConfig::busy_poll`] and in zero-copy mode (a copy-mode socket
//! has no NAPI instance to poll), the socket asks the kernel to leave the
//! queue's NAPI context to it (`SO_PREFER_BUSY_POLL`, `SO_BUSY_POLL`,
//! `SO_BUSY_POLL_BUDGET`): each `recv` then makes one non-blocking
//! `recvfrom` that runs the driver's receive for at most `budget` frames in
//! the worker's own time, and each `send` with pending frames one `sendto`.
//! That is one system call per batch, and the receive work can never crowd
//! out the worker (the kernel runs it when the worker asks). For the
//! interrupts to stay off while the worker polls, the interface needs
//! `napi_defer_hard_irqs` and `gro_flush_timeout` set
//! (`/sys/class/net/<if>/`); without them busy polling still works but
//! interrupts keep coming.
//!
//! # Invariants
//! - Every rx chunk is in exactly one place: the fill ring, the kernel, the
//!   rx ring, or `rx_spare` (taken from the rx ring, not yet refilled).
//!   Every tx chunk is in `tx_free`, the tx ring, the kernel or the
//!   completion ring. So `rx_spare.len() <= rx_frames` and
//!   `tx_free.len() <= tx_frames` and neither vector ever reallocates.
//! - Descriptors from the kernel are bounds-checked against their pool
//!   before any byte is read; a bad one is counted, never trusted.
//! - The UMEM mapping outlives the sockets and rings (field order).

use std::ffi::CString;
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, RawFd};
use std::ptr::NonNull;

use xdpilone::xdp::XdpDesc;
use xdpilone::{DeviceQueue, IfInfo, RingRx, RingTx, Socket, SocketConfig, Umem, UmemConfig, User};

use crate::{Batch, IoError, PacketBuf, PacketIo, PortId};

/// How the socket moves frames between the driver and the UMEM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum XskCopyMode {
    /// Zero-copy if the driver supports it, else copy.
    Auto,
    /// Zero-copy or fail.
    ZeroCopy,
    /// Always copy (works on every interface).
    Copy,
}

/// Configuration of an [`XdpPort`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpConfig {
    /// The interface queue to bind to.
    pub queue: u32,
    /// The port received frames are tagged with.
    pub port: PortId,
    /// UMEM chunk size: 2048 or 4096. In copy mode the kernel puts 256
    /// bytes of headroom in front of a received frame, so 2048 holds frames
    /// up to 1792 bytes (any 1500-byte-MTU frame).
    pub frame_size: u32,
    /// Receive chunks (= fill and rx ring size); a power of two.
    pub rx_frames: u32,
    /// Transmit chunks (= tx and completion ring size); a power of two.
    /// A chunk comes back when the kernel has sent the frame; in copy mode
    /// that is when the skb it was copied into is freed, and on veth that
    /// is only once the receiving socket has read the data. So with TCP
    /// receivers on the far side of a veth, the receivers' buffers are in
    /// flight, and 2048 chunks ran out about a hundred times in the
    /// shaping side-by-side (`tx_ring_full`); 8192 (16 MiB per port, mapped
    /// as used) cut that fivefold.
    pub tx_frames: u32,
    /// Zero-copy or copy.
    pub copy_mode: XskCopyMode,
    /// Bind with `XDP_USE_NEED_WAKEUP` (kick the kernel only when it says
    /// so). Off: a kick on every `send` that leaves frames pending.
    pub need_wakeup: bool,
    /// Drive the queue's NAPI context from the worker (see the module
    /// documentation); `None`: interrupts and softirqs as usual. Ignored
    /// when the socket ends up in copy mode, which cannot busy-poll
    /// ([`XdpPort::is_busy_polling`] says).
    pub busy_poll: Option<BusyPoll>,
}

/// Busy-polling settings of an [`XdpPort`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusyPoll {
    /// `SO_BUSY_POLL` in microseconds: non-zero turns busy polling on. It
    /// is how long a blocking read would spin; torwart's reads do not
    /// block, so each runs one round of the driver's poll.
    pub usecs: u32,
    /// `SO_BUSY_POLL_BUDGET`: most frames the driver handles per poll.
    pub budget: u16,
}

impl Default for XdpConfig {
    fn default() -> Self {
        XdpConfig {
            queue: 0,
            port: PortId::default(),
            frame_size: 2048,
            rx_frames: 2048,
            tx_frames: 8192,
            copy_mode: XskCopyMode::Auto,
            need_wakeup: true,
            busy_poll: None,
        }
    }
}

impl XdpConfig {
    /// The longest frame a socket with these settings receives: a chunk
    /// less the kernel's 256 bytes of headroom, and at most what a
    /// worker's buffer holds ([`crate::DEFAULT_FRAME_CAPACITY`]).
    pub fn largest_frame(&self) -> usize {
        (self.frame_size as usize).saturating_sub(XDP_HEADROOM).min(crate::DEFAULT_FRAME_CAPACITY)
    }
}

/// What the kernel keeps in front of a received frame in each chunk
/// (`XDP_PACKET_HEADROOM`).
const XDP_HEADROOM: usize = 256;

/// What the kernel counts for an AF_XDP socket (`XDP_STATISTICS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XskKernelStats {
    /// Frames dropped for reasons other than the two below.
    pub rx_dropped: u64,
    /// Invalid descriptors we put on the fill ring.
    pub rx_invalid_descs: u64,
    /// Invalid descriptors we put on the tx ring.
    pub tx_invalid_descs: u64,
    /// Frames dropped because the rx ring was full (we were too slow).
    pub rx_ring_full: u64,
    /// Frames dropped because the fill ring was empty.
    pub rx_fill_ring_empty_descs: u64,
    /// Times the kernel found the tx ring empty.
    pub tx_ring_empty_descs: u64,
}

/// Counters of an [`XdpPort`]: ours, plus the kernel's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpPortStats {
    /// Frames received into a batch.
    pub rx_frames: u64,
    /// Their bytes.
    pub rx_bytes: u64,
    /// Frames accepted for transmission.
    pub tx_frames: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// `recv` calls that found the rx ring empty.
    pub rx_empty_polls: u64,
    /// Received frames longer than the batch's buffers (dropped).
    pub rx_too_large: u64,
    /// Rx descriptors outside the receive pool (dropped; a kernel bug).
    pub rx_invalid: u64,
    /// `recv` calls after which fewer than a quarter of the rx chunks were
    /// on the fill ring (the kernel was about to run dry).
    pub fill_ring_low: u64,
    /// `send` calls that could not take all frames (tx ring or free chunks
    /// exhausted).
    pub tx_ring_full: u64,
    /// Frames longer than a UMEM chunk (not sent; `send` skips them).
    pub tx_oversize: u64,
    /// Transmit kicks (`sendto`).
    pub tx_kicks: u64,
    /// Kicks that failed with something other than "try again".
    pub tx_kick_errors: u64,
    /// Receive polls (`recvfrom`) when busy-polling.
    pub busy_polls: u64,
    /// The kernel's counters (zero if it could not be asked).
    pub kernel: XskKernelStats,
}

/// An anonymous, page-aligned mapping: the UMEM.
#[derive(Debug)]
struct Area {
    ptr: NonNull<u8>,
    len: usize,
}

impl Area {
    fn new(len: usize) -> std::io::Result<Area> {
        // SAFETY: an anonymous private mapping with no address hint has no
        // preconditions; the result is checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENOMEM))?;
        Ok(Area { ptr, len })
    }

    fn as_slice_ptr(&self) -> NonNull<[u8]> {
        NonNull::slice_from_raw_parts(self.ptr, self.len)
    }

    /// The bytes `[offset, offset + len)`, if inside the area.
    fn bytes(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let start = usize::try_from(offset).ok()?;
        if start.checked_add(len)? > self.len {
            return None;
        }
        // SAFETY: the range is inside our live mapping (checked above). The
        // chunk it lies in was handed to us by the rx ring (acquire-ordered
        // by xdpilone), so the kernel does not write it until we return it
        // on the fill ring, which happens after this borrow ends.
        Some(unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(start), len) })
    }

    /// The bytes `[offset, offset + len)` for writing, if inside the area.
    fn bytes_mut(&mut self, offset: u64, len: usize) -> Option<&mut [u8]> {
        let start = usize::try_from(offset).ok()?;
        if start.checked_add(len)? > self.len {
            return None;
        }
        // SAFETY: inside our live mapping (checked above); the chunk is on
        // our tx free list, so the kernel does not read it until we put its
        // descriptor on the tx ring after this borrow ends.
        Some(unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(start), len) })
    }
}

impl Drop for Area {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping `new` created; nothing
        // refers to it any more (the sockets that registered it were dropped
        // before this field, see the field order of `XdpPort`).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// An AF_XDP socket bound to one queue of one interface.
///
/// Frames reach it only through an [`XdpProgram`](super::XdpProgram) on the
/// same interface that has this socket registered for the queue
/// ([`XdpProgram::register_socket`](super::XdpProgram::register_socket)).
/// [`AsRawFd`] gives the descriptor to register and to `poll()` on (POLLIN:
/// frames in the rx ring) when a worker goes idle.
pub struct XdpPort {
    ifname: String,
    port: PortId,
    queue: u32,
    zero_copy: bool,
    need_wakeup: bool,
    busy_poll: bool,
    frame_size: u32,
    rx_frames: u32,
    tx_frames: u32,
    fd: RawFd,
    stats: XdpPortStats,
    /// `stats.tx_oversize` as of the last `tx_refused`.
    oversize_told: u64,
    rx_spare: Vec<u64>,
    tx_free: Vec<u64>,
    // Drop order: rings, then the fill/completion pair, the socket and the
    // UMEM registration, and the mapping last.
    rx: RingRx,
    tx: RingTx,
    device: DeviceQueue,
    user: User,
    _umem: Umem,
    area: Area,
}

// SAFETY: the raw pointers inside (`Area`, xdpilone's `Umem`) point into
// mappings this port owns exclusively; nothing is tied to the creating
// thread (no thread-locals; the socket belongs to its network namespace,
// not to a thread), so moving the port to a worker thread is sound. It is
// not `Sync`: all methods that touch rings take `&mut self`.
unsafe impl Send for XdpPort {}

impl std::fmt::Debug for XdpPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpPort")
            .field("ifname", &self.ifname)
            .field("queue", &self.queue)
            .field("port", &self.port)
            .field("zero_copy", &self.zero_copy)
            .field("need_wakeup", &self.need_wakeup)
            .field("busy_poll", &self.busy_poll)
            .field("fd", &self.fd)
            .finish_non_exhaustive()
    }
}

const XDP_OPTIONS: libc::c_int = 8;
const XDP_OPTIONS_ZEROCOPY: u32 = 1;
/// Upper bound on kicks per `flush` (32 frames each in copy mode), so that
/// a stuck interface cannot make `flush` spin.
const KICK_ROUNDS_PER_FLUSH: u32 = 64;

fn errno_of(e: &xdpilone::Errno) -> std::io::Error {
    std::io::Error::from_raw_os_error(e.get_raw().abs())
}

impl XdpPort {
    /// Opens a socket on `ifname` (in the calling thread's network
    /// namespace) and binds it to `config.queue`.
    pub fn open(ifname: &str, config: &XdpConfig) -> Result<XdpPort, IoError> {
        let invalid = |what: &'static str| IoError::Interface {
            ifname: ifname.to_owned(),
            op: "configure the AF_XDP socket",
            source: std::io::Error::from_raw_os_error(libc::EINVAL),
            hint: what,
        };
        if config.frame_size != 2048 && config.frame_size != 4096 {
            return Err(invalid(" (frame_size must be 2048 or 4096)"));
        }
        if !config.rx_frames.is_power_of_two() || !config.tx_frames.is_power_of_two() {
            return Err(invalid(" (rx_frames and tx_frames must be powers of two)"));
        }
        if config.rx_frames.checked_add(config.tx_frames).is_none_or(|n| n > 1 << 20) {
            return Err(invalid(" (at most 2^20 frames)"));
        }
        if config.busy_poll.is_some_and(|b| b.usecs == 0 || b.budget == 0) {
            return Err(invalid(" (busy polling needs usecs and budget above 0)"));
        }
        super::program::ifindex(ifname)?;
        match config.copy_mode {
            XskCopyMode::Copy => Self::open_with(ifname, config, false),
            XskCopyMode::ZeroCopy => Self::open_with(ifname, config, true),
            XskCopyMode::Auto => Self::open_with(ifname, config, true).or_else(|e| match e {
                IoError::Interface { op: "bind the AF_XDP socket", .. } => Self::open_with(ifname, config, false),
                other => Err(other),
            }),
        }
    }

    fn open_with(ifname: &str, config: &XdpConfig, zero_copy: bool) -> Result<XdpPort, IoError> {
        let os = |op: &'static str| move |e: xdpilone::Errno| IoError::interface(ifname, op, errno_of(&e));
        let frames = config.rx_frames + config.tx_frames;
        let area = Area::new(frames as usize * config.frame_size as usize)
            .map_err(|e| IoError::interface(ifname, "map the UMEM", e))?;
        let umem_config = UmemConfig {
            fill_size: config.rx_frames,
            complete_size: config.tx_frames,
            frame_size: config.frame_size,
            headroom: 0,
            flags: 0,
        };
        // SAFETY: `area` is a page-aligned mapping of exactly this length,
        // and it is dropped after the `Umem` and every socket (field order
        // of `XdpPort`; on an early return here, locals drop in reverse
        // declaration order, so `area` also goes last).
        let umem = unsafe { Umem::new(umem_config, area.as_slice_ptr()) }.map_err(os("register the UMEM"))?;
        let mut info = IfInfo::invalid();
        let cname = CString::new(ifname).map_err(|_| IoError::NoSuchInterface { ifname: ifname.to_owned() })?;
        info.from_name(&cname).map_err(|_| IoError::NoSuchInterface { ifname: ifname.to_owned() })?;
        info.set_queue(config.queue);
        let sock = Socket::with_shared(&info, &umem).map_err(os("create the AF_XDP socket"))?;
        let mut device = umem.fq_cq(&sock).map_err(os("create the fill and completion rings"))?;
        let mode_flag = if zero_copy { SocketConfig::XDP_BIND_ZEROCOPY } else { SocketConfig::XDP_BIND_COPY };
        let user = umem
            .rx_tx(
                &sock,
                &SocketConfig {
                    rx_size: NonZeroU32::new(config.rx_frames),
                    tx_size: NonZeroU32::new(config.tx_frames),
                    bind_flags: if config.need_wakeup {
                        SocketConfig::XDP_BIND_NEED_WAKEUP | mode_flag
                    } else {
                        mode_flag
                    },
                },
            )
            .map_err(os("create the rx and tx rings"))?;
        let rx = user.map_rx().map_err(os("map the rx ring"))?;
        let tx = user.map_tx().map_err(os("map the tx ring"))?;

        // Every rx chunk starts on the fill ring, so the kernel can receive
        // as soon as the socket is bound.
        let fs = u64::from(config.frame_size);
        {
            let mut w = device.fill(config.rx_frames);
            let n = w.insert((0..u64::from(config.rx_frames)).map(|i| i * fs));
            w.commit();
            if n != config.rx_frames {
                return Err(IoError::interface(
                    ifname,
                    "fill the fill ring",
                    std::io::Error::from_raw_os_error(libc::ENOSPC),
                ));
            }
        }
        umem.bind(&user).map_err(|e| match e.get_raw().abs() {
            libc::EOPNOTSUPP if zero_copy => IoError::Interface {
                ifname: ifname.to_owned(),
                op: "bind the AF_XDP socket",
                source: errno_of(&e),
                hint: " (the driver has no AF_XDP zero-copy support; use copy mode)",
            },
            libc::EBUSY => IoError::Interface {
                ifname: ifname.to_owned(),
                op: "bind the AF_XDP socket",
                source: errno_of(&e),
                hint: " (another AF_XDP socket is bound to this queue)",
            },
            _ => os("bind the AF_XDP socket")(e),
        })?;

        let mut tx_free = Vec::with_capacity(config.tx_frames as usize);
        tx_free.extend((u64::from(config.rx_frames)..u64::from(frames)).map(|i| i * fs));
        let fd = user.as_raw_fd();
        let zero_copy = zero_copy && query_zero_copy(fd).unwrap_or(zero_copy);
        // Only a zero-copy socket knows its NAPI instance (Linux 6.13 and
        // later): a copy-mode socket cannot busy-poll, and a recvfrom per
        // batch would be a system call for nothing.
        let busy_poll = config.busy_poll.filter(|_| zero_copy);
        if let Some(b) = busy_poll {
            for (opt, value) in [
                (libc::SO_PREFER_BUSY_POLL, 1),
                (libc::SO_BUSY_POLL, i32::try_from(b.usecs).unwrap_or(i32::MAX)),
                (libc::SO_BUSY_POLL_BUDGET, i32::from(b.budget)),
            ] {
                crate::setsockopt_int(fd, libc::SOL_SOCKET, opt, value).map_err(|source| {
                    let hint = match source.raw_os_error() {
                        Some(libc::EPERM) => " (SO_BUSY_POLL and SO_BUSY_POLL_BUDGET need CAP_NET_ADMIN)",
                        Some(libc::ENOPROTOOPT) => {
                            " (the kernel has no busy polling: before Linux 5.11, or built without \
                             CONFIG_NET_RX_BUSY_POLL)"
                        }
                        _ => "",
                    };
                    IoError::Interface { ifname: ifname.to_owned(), op: "enable busy polling", source, hint }
                })?;
            }
        }
        Ok(XdpPort {
            ifname: ifname.to_owned(),
            port: config.port,
            queue: config.queue,
            zero_copy,
            need_wakeup: config.need_wakeup,
            busy_poll: busy_poll.is_some(),
            frame_size: config.frame_size,
            rx_frames: config.rx_frames,
            tx_frames: config.tx_frames,
            fd,
            stats: XdpPortStats::default(),
            oversize_told: 0,
            rx_spare: Vec::with_capacity(config.rx_frames as usize),
            tx_free,
            rx,
            tx,
            device,
            user,
            _umem: umem,
            area,
        })
    }

    /// The queue it is bound to.
    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// True if the driver moves frames to and from the UMEM without a copy
    /// (false on veth and in generic XDP mode).
    pub fn is_zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// Our counters and the kernel's (one `getsockopt`; not for the hot
    /// path, but cheap enough for a metrics scrape).
    pub fn stats(&self) -> XdpPortStats {
        let mut s = self.stats;
        if let Ok(k) = self.user.statistics_v2() {
            s.kernel = XskKernelStats {
                rx_dropped: k.rx_dropped,
                rx_invalid_descs: k.rx_invalid_descs,
                tx_invalid_descs: k.tx_invalid_descs,
                rx_ring_full: k.rx_ring_full,
                rx_fill_ring_empty_descs: k.rx_fill_ring_empty_descs,
                tx_ring_empty_descs: k.tx_ring_empty_descs,
            };
        }
        s
    }

    /// Gives received chunks back to the fill ring, as many as it takes.
    fn refill(&mut self) {
        if self.rx_spare.is_empty() {
            return;
        }
        let n = u32::try_from(self.rx_spare.len()).unwrap_or(u32::MAX);
        let mut w = self.device.fill(n);
        let take = w.capacity() as usize;
        let from = self.rx_spare.len() - take.min(self.rx_spare.len());
        w.insert(self.rx_spare[from..].iter().copied());
        w.commit();
        drop(w);
        self.rx_spare.truncate(from);
        if self.device.needs_wakeup() {
            self.device.wake();
        }
        if self.device.pending() < self.rx_frames / 4 {
            self.stats.fill_ring_low += 1;
        }
    }

    /// Moves completed tx chunks back to the free list.
    fn reap_completions(&mut self) {
        let room = self.tx_frames.saturating_sub(u32::try_from(self.tx_free.len()).unwrap_or(u32::MAX));
        if room == 0 {
            return;
        }
        let tx_base = u64::from(self.rx_frames) * u64::from(self.frame_size);
        let mask = !(u64::from(self.frame_size) - 1);
        let mut done = self.device.complete(room);
        while let Some(addr) = done.read() {
            let chunk = addr & mask;
            // A chunk outside the tx pool would corrupt our accounting; the
            // kernel only returns what we gave it, so this is a guard.
            if chunk >= tx_base && (chunk as usize) < self.area.len {
                self.tx_free.push(chunk);
            }
        }
        done.release();
    }

    /// True if it busy-polls: [`XdpConfig::busy_poll`] was given and the
    /// socket is in zero-copy mode (a copy-mode socket cannot).
    pub fn is_busy_polling(&self) -> bool {
        self.busy_poll
    }

    /// Kicks the kernel to transmit if it asked for it (copy mode always
    /// does), or always without `need_wakeup` or when busy-polling (the
    /// kick is what runs the driver then). "Try again" answers are normal:
    /// the kernel took its 32.
    fn kick(&mut self) {
        if self.need_wakeup && !self.busy_poll && !self.tx.needs_wakeup() {
            return;
        }
        self.stats.tx_kicks += 1;
        // SAFETY: a zero-length, non-blocking sendto on our own AF_XDP
        // socket: no buffers are passed, so nothing is read or written.
        let r = unsafe { libc::sendto(self.fd, std::ptr::null(), 0, libc::MSG_DONTWAIT, std::ptr::null(), 0) };
        if r < 0 {
            let e = std::io::Error::last_os_error().raw_os_error();
            if !matches!(e, Some(libc::EAGAIN) | Some(libc::EBUSY) | Some(libc::ENOBUFS) | Some(libc::EINTR)) {
                self.stats.tx_kick_errors += 1;
            }
        }
    }
}

/// Asks the kernel whether the bound socket is in zero-copy mode.
fn query_zero_copy(fd: RawFd) -> Option<bool> {
    let mut flags: u32 = 0;
    let mut len = std::mem::size_of::<u32>() as libc::socklen_t;
    // SAFETY: `flags` and `len` are live locals of the sizes we declare;
    // XDP_OPTIONS writes one `struct xdp_options { __u32 flags; }`.
    let r = unsafe { libc::getsockopt(fd, libc::SOL_XDP, XDP_OPTIONS, (&mut flags as *mut u32).cast(), &mut len) };
    (r == 0).then_some(flags & XDP_OPTIONS_ZEROCOPY != 0)
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl PacketIo for XdpPort {
    fn ready_fd(&self) -> Option<RawFd> {
        Some(self.fd)
    }

    fn recv(&mut self, batch: &mut Batch) -> Result<usize, IoError> {
        let want = u32::try_from(batch.free()).unwrap_or(u32::MAX);
        if want == 0 {
            return Ok(0);
        }
        if self.busy_poll {
            self.stats.busy_polls += 1;
            // SAFETY: a zero-length, non-blocking recvfrom on our own AF_XDP
            // socket: no buffers are passed. It runs the driver's receive
            // (at most the budget); "try again" is the normal answer.
            unsafe {
                libc::recvfrom(
                    self.fd,
                    std::ptr::null_mut(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                )
            };
        }
        let rx_limit = u64::from(self.rx_frames) * u64::from(self.frame_size);
        let mask = !(u64::from(self.frame_size) - 1);
        let mut got = 0usize;
        {
            let mut read = self.rx.receive(want);
            if read.capacity() == 0 {
                drop(read);
                self.stats.rx_empty_polls += 1;
                // Chunks may still wait for the fill ring after an earlier
                // short refill; and a zero-copy driver may want a wake-up.
                self.refill();
                return Ok(0);
            }
            let ts_ns = now_ns();
            while let Some(XdpDesc { addr, len, .. }) = read.read() {
                let chunk = addr & mask;
                let len = len as usize;
                if chunk >= rx_limit || addr - chunk + len as u64 > u64::from(self.frame_size) {
                    self.stats.rx_invalid += 1;
                    continue;
                }
                self.rx_spare.push(chunk);
                let Some(bytes) = self.area.bytes(addr, len) else {
                    self.stats.rx_invalid += 1;
                    continue;
                };
                let Some(slot) = batch.next_slot() else { break };
                if !slot.copy_from(bytes) {
                    self.stats.rx_too_large += 1;
                    continue;
                }
                slot.ts_ns = ts_ns;
                slot.port = self.port;
                if batch.commit_slot() {
                    got += 1;
                    self.stats.rx_bytes += len as u64;
                }
            }
            read.release();
        }
        self.stats.rx_frames += got as u64;
        self.refill();
        Ok(got)
    }

    fn send(&mut self, frames: &[PacketBuf]) -> Result<usize, IoError> {
        self.reap_completions();
        let offer = frames.len().min(self.tx_free.len());
        // `taken` counts the frames of the prefix: those put on the ring and
        // those refused as longer than a chunk (skipped, so that the frames
        // behind them still go).
        let mut accepted = 0usize;
        let mut taken = 0usize;
        if offer > 0 {
            let frame_size = self.frame_size as usize;
            let mut w = self.tx.transmit(u32::try_from(offer).unwrap_or(u32::MAX));
            let room = w.capacity() as usize;
            for frame in frames {
                let len = frame.len();
                if len > frame_size {
                    self.stats.tx_oversize += 1;
                    taken += 1;
                    continue;
                }
                if accepted == room {
                    break;
                }
                let Some(&chunk) = self.tx_free.last() else { break };
                let Some(dst) = self.area.bytes_mut(chunk, len) else { break };
                dst.copy_from_slice(frame.as_slice());
                if !w.insert_once(XdpDesc { addr: chunk, len: len as u32, options: 0 }) {
                    break;
                }
                self.tx_free.pop();
                accepted += 1;
                taken += 1;
                self.stats.tx_bytes += len as u64;
            }
            w.commit();
        }
        if taken < frames.len() {
            self.stats.tx_ring_full += 1;
        }
        self.stats.tx_frames += accepted as u64;
        if self.tx.pending() > 0 {
            self.kick();
        }
        Ok(taken)
    }

    fn flush(&mut self) -> Result<(), IoError> {
        let mut before = None;
        for _ in 0..KICK_ROUNDS_PER_FLUSH {
            self.reap_completions();
            let pending = self.tx.pending();
            // Done, or the last kick moved nothing (the device's queue is
            // full: it answers each kick "try again"): no more system calls
            // now, when the worker is busiest; the next step kicks again.
            if pending == 0 || before.is_some_and(|b| pending >= b) {
                break;
            }
            before = Some(pending);
            self.kick();
        }
        self.reap_completions();
        Ok(())
    }

    fn name(&self) -> &str {
        &self.ifname
    }

    fn tx_refused(&mut self) -> u64 {
        let refused = self.stats.tx_oversize - self.oversize_told;
        self.oversize_told = self.stats.tx_oversize;
        refused
    }

    fn receive_lost(&mut self) -> u64 {
        // The kernel's drops (a frame longer than a chunk among them), and
        // ours of frames longer than a worker's buffer.
        let s = self.stats();
        s.kernel.rx_dropped + s.kernel.rx_ring_full + s.rx_too_large
    }
}

impl AsRawFd for XdpPort {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}
