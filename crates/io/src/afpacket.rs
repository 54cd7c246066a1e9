//! [`PacketPort`]: an AF_PACKET socket as a [`PacketIo`] device, the
//! fallback where AF_XDP is not available (old kernels, odd drivers,
//! containers without CAP_BPF).
//!
//! One `SOCK_RAW` socket per interface, bound to its ifindex for all
//! ethertypes, non-blocking, batched with `recvmmsg`/`sendmmsg`: one system
//! call per `recv` or `send`, never one per frame. The `mmsghdr`/`iovec`
//! arrays are allocated once; `recv` points them straight at the free
//! buffers of the caller's [`Batch`], so the kernel copies each frame once,
//! into its final place. `PACKET_IGNORE_OUTGOING` keeps our own (and the
//! kernel's) transmissions out of the receive queue, and
//! `PACKET_QDISC_BYPASS` sends straight to the driver (the shaper is ours;
//! the qdisc would only add a second queue).
//!
//! # The kernel sees every frame too
//! AF_PACKET taps the receive path: it gets a copy of each frame and the
//! kernel still processes the original. A box that runs torwart over
//! AF_PACKET must therefore have kernel forwarding **off**
//! (`net.ipv4.conf.all.forwarding = 0`, `net.ipv6.conf.all.forwarding = 0`),
//! or every transit packet is forwarded twice. The caller checks this with
//! [`kernel_forwarding_enabled`] before starting, and attaches a
//! [`PacketGuard`](crate::PacketGuard) to each port where the kernel has
//! tcx links (Linux 6.6): it drops the kernel's original of every transit
//! frame right after the tap, so a kernel switched to forwarding later
//! forwards nothing, and the kernel spends no IP-stack work on frames it
//! would drop. Local traffic (ARP, NDP, SSH to the box) works as usual;
//! torwart sees it as well and must ignore what is not transit.
//!
//! # Receive livelock
//! The kernel fills the socket in softirq, ahead of the worker on the same
//! core; at a rate the worker cannot keep up with it takes the core and the
//! worker forwards almost nothing. A port given the credit of a
//! [`PacketAdmission`](crate::PacketAdmission) ([`PacketPort::admit_with`])
//! has transit frames admitted only as fast as it receives them; the rest
//! are dropped in XDP, before the kernel works on them.
//!
//! # Limits
//! - Receive offloads change what AF_PACKET sees: with GRO/LRO on, frames
//!   arrive coalesced beyond the MTU (they do not fit a buffer and are
//!   counted as `rx_too_large`), and with rx VLAN offload the tag is
//!   stripped into metadata we do not read. Turn them off on AF_PACKET
//!   ports (`ethtool -K <if> gro off lro off rxvlan off`).
//! - It is a copy per frame through the socket buffer and a syscall per
//!   batch: a few hundred thousand frames per second per core, not millions.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::{Batch, Credits, IoError, PacketBuf, PacketIo, PortId};

/// Configuration of a [`PacketPort`].
#[derive(Debug, Clone)]
pub struct PacketConfig {
    /// The port received frames are tagged with.
    pub port: PortId,
    /// Most frames moved per system call (the `mmsghdr` array size): `send`
    /// accepts at most this many per call, `recv` returns at most this many.
    pub max_batch: usize,
    /// Socket receive buffer in bytes (forced past `rmem_max` when root).
    pub rcvbuf: usize,
    /// Send straight to the driver, bypassing the qdisc.
    pub qdisc_bypass: bool,
}

impl Default for PacketConfig {
    fn default() -> Self {
        PacketConfig { port: PortId::default(), max_batch: 256, rcvbuf: 8 << 20, qdisc_bypass: true }
    }
}

/// Counters of a [`PacketPort`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacketPortStats {
    /// Frames received into a batch.
    pub rx_frames: u64,
    /// Their bytes.
    pub rx_bytes: u64,
    /// Frames accepted by the kernel for transmission.
    pub tx_frames: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// `recv` calls that found nothing.
    pub rx_empty_polls: u64,
    /// Frames longer than the batch's buffers (dropped).
    pub rx_too_large: u64,
    /// `send` calls the kernel did not take completely (device queue full).
    pub tx_full: u64,
    /// Frames the kernel refused as too long for the device (not sent).
    pub tx_oversize: u64,
    /// Frames the kernel dropped because the socket buffer was full
    /// (`PACKET_STATISTICS`, read by [`PacketPort::stats`]).
    pub kernel_drops: u64,
}

/// An AF_PACKET socket on one interface.
pub struct PacketPort {
    ifname: String,
    port: PortId,
    fd: OwnedFd,
    max_batch: usize,
    msgs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    stats: PacketPortStats,
    /// `stats.tx_oversize` as of the last `tx_refused`.
    oversize_told: u64,
    /// The longest frame the device takes (its MTU and an Ethernet header
    /// with a VLAN tag), read at the open, at each `stats` and when the
    /// kernel refuses a frame; 0 if unknown.
    longest: usize,
    /// The admission credit of the interface's XDP program, if it has one.
    credits: Option<Credits>,
}

// SAFETY: the raw pointers inside `msgs`/`iovs` are scratch: they are
// rewritten before every system call and never dereferenced by us, so the
// port can move to another thread. It is not `Sync` (all I/O takes
// `&mut self`).
unsafe impl Send for PacketPort {}

impl std::fmt::Debug for PacketPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketPort")
            .field("ifname", &self.ifname)
            .field("port", &self.port)
            .field("fd", &self.fd)
            .field("max_batch", &self.max_batch)
            .finish_non_exhaustive()
    }
}

const ETH_P_ALL: u16 = 0x0003;
/// An Ethernet header, and one with a VLAN tag.
const ETH_HEADER: usize = 14;
const ETH_VLAN_HEADER: usize = 18;

/// An [`IoError::Interface`]; AF_PACKET needs CAP_NET_RAW, not the BPF
/// capabilities the generic hint names.
fn packet_error(ifname: &str, op: &'static str, source: std::io::Error) -> IoError {
    match source.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            IoError::Interface { ifname: ifname.to_owned(), op, source, hint: " (needs root or CAP_NET_RAW)" }
        }
        _ => IoError::interface(ifname, op, source),
    }
}

fn empty_msg() -> libc::mmsghdr {
    // SAFETY: `mmsghdr` is plain old data (integers and raw pointers), for
    // which all-zero bytes are a valid value (null pointers, zero lengths).
    unsafe { std::mem::zeroed() }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// True if the kernel forwards IPv4 or IPv6 (`/proc/sys/net/ipv4/conf/all/forwarding`,
/// `/proc/sys/net/ipv6/conf/all/forwarding`) in the calling thread's network
/// namespace. Running [`PacketPort`]s while this is true forwards every
/// transit packet twice.
pub fn kernel_forwarding_enabled() -> std::io::Result<bool> {
    Ok(kernel_forwarding(&[])?.is_some())
}

/// The first forwarding setting that is on, as its `/proc/sys` path: the
/// namespace-wide ones and, for each of `interfaces`, its own IPv4 and IPv6
/// settings (IPv4 forwarding is decided by the receiving interface's own
/// setting). `None` if the kernel forwards nothing on them. A setting that
/// does not exist (no IPv6, no such interface) forwards nothing; any other
/// error to read one is returned, so a caller can fail closed.
pub fn kernel_forwarding(interfaces: &[&str]) -> std::io::Result<Option<String>> {
    let mut paths =
        vec!["/proc/sys/net/ipv4/conf/all/forwarding".to_owned(), "/proc/sys/net/ipv6/conf/all/forwarding".to_owned()];
    for i in interfaces {
        paths.push(format!("/proc/sys/net/ipv4/conf/{i}/forwarding"));
        paths.push(format!("/proc/sys/net/ipv6/conf/{i}/forwarding"));
    }
    for path in paths {
        match std::fs::read_to_string(&path) {
            Ok(s) if s.trim() != "0" => return Ok(Some(path)),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(std::io::Error::new(e.kind(), format!("{path}: {e}"))),
        }
    }
    Ok(None)
}

/// `ifname`'s MTU (in the calling thread's network namespace).
pub fn interface_mtu(ifname: &str) -> std::io::Result<u32> {
    // SAFETY: plain socket(2) call; the result is checked.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    mtu_of(fd.as_raw_fd(), ifname)
}

/// `SIOCGIFMTU` for `ifname` on socket `fd`.
fn mtu_of(fd: RawFd, ifname: &str) -> std::io::Result<u32> {
    let name = ifname.as_bytes();
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(&0) {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    // SAFETY: all-zero is a valid `ifreq`; we fill in the name.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFMTU reads the name from and writes the MTU into the
    // live `ifreq` we pass.
    let r = unsafe { libc::ioctl(fd, libc::SIOCGIFMTU as _, &mut req as *mut libc::ifreq) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFMTU set the union's `ifru_mtu`.
    Ok(u32::try_from(unsafe { req.ifr_ifru.ifru_mtu }).unwrap_or(0))
}

impl PacketPort {
    /// Opens a socket on `ifname` (in the calling thread's network namespace).
    pub fn open(ifname: &str, config: &PacketConfig) -> Result<PacketPort, IoError> {
        let ifindex = crate::xdp::program::ifindex(ifname)?;
        let os = |op: &'static str| move |e: std::io::Error| packet_error(ifname, op, e);
        // Protocol 0 at creation: the socket receives nothing until `bind`
        // names the interface, so no other interface's frames sneak in.
        // SAFETY: plain socket(2) call; the result is checked.
        let raw =
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(os("create the AF_PACKET socket")(std::io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        crate::setsockopt_int(fd.as_raw_fd(), libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1)
            .map_err(os("set PACKET_IGNORE_OUTGOING"))?;
        if config.qdisc_bypass {
            crate::setsockopt_int(fd.as_raw_fd(), libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1)
                .map_err(os("set PACKET_QDISC_BYPASS"))?;
        }
        let rcvbuf = libc::c_int::try_from(config.rcvbuf).unwrap_or(libc::c_int::MAX);
        crate::setsockopt_int(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, rcvbuf)
            .or_else(|_| crate::setsockopt_int(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, rcvbuf))
            .map_err(os("set the receive buffer size"))?;

        // SAFETY: all-zero is a valid `sockaddr_ll`; we fill the fields bind needs.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ALL.to_be();
        sll.sll_ifindex = libc::c_int::try_from(ifindex).unwrap_or(0);
        // SAFETY: `sll` is a live, initialised sockaddr_ll and we pass its size.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(os("bind the AF_PACKET socket")(std::io::Error::last_os_error()));
        }

        let max_batch = config.max_batch.clamp(1, 1024);
        let mut port = PacketPort {
            ifname: ifname.to_owned(),
            port: config.port,
            fd,
            max_batch,
            msgs: (0..max_batch).map(|_| empty_msg()).collect(),
            iovs: (0..max_batch).map(|_| libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }).collect(),
            stats: PacketPortStats::default(),
            oversize_told: 0,
            longest: 0,
            credits: None,
        };
        port.refresh_longest();
        Ok(port)
    }

    /// Gives the admission credit of the interface's
    /// [`PacketAdmission`](crate::PacketAdmission) to this port: from now on
    /// each receive returns credit for what it took, and one that finds the
    /// socket empty restores the full window.
    pub fn admit_with(&mut self, credits: Credits) {
        credits.drained();
        self.credits = Some(credits);
    }

    /// The longest frame the device takes now (its MTU may change while
    /// the port is open); unknown (0) if the kernel cannot say.
    fn refresh_longest(&mut self) {
        self.longest = mtu_of(self.fd.as_raw_fd(), &self.ifname).map_or(0, |mtu| mtu as usize + ETH_VLAN_HEADER);
    }

    /// Our counters, plus the kernel's drop count since the last call
    /// (`PACKET_STATISTICS` resets on read, so the port accumulates it).
    /// Also reads the device's MTU again, for `send`.
    pub fn stats(&mut self) -> PacketPortStats {
        self.refresh_longest();
        let mut st = libc::tpacket_stats { tp_packets: 0, tp_drops: 0 };
        let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: `st` and `len` are live locals of the declared sizes.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats).cast(),
                &mut len,
            )
        };
        if r == 0 {
            self.stats.kernel_drops += u64::from(st.tp_drops);
        }
        self.stats
    }

    /// Points message `i` at one buffer.
    fn set_msg(&mut self, i: usize, base: *mut libc::c_void, len: usize) {
        self.iovs[i] = libc::iovec { iov_base: base, iov_len: len };
        let iov: *mut libc::iovec = &mut self.iovs[i];
        let m = &mut self.msgs[i];
        m.msg_hdr.msg_name = std::ptr::null_mut();
        m.msg_hdr.msg_namelen = 0;
        m.msg_hdr.msg_iov = iov;
        m.msg_hdr.msg_iovlen = 1;
        m.msg_hdr.msg_control = std::ptr::null_mut();
        m.msg_hdr.msg_controllen = 0;
        m.msg_hdr.msg_flags = 0;
        m.msg_len = 0;
    }
}

impl PacketIo for PacketPort {
    fn ready_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }

    fn recv(&mut self, batch: &mut Batch) -> Result<usize, IoError> {
        let n = batch.free().min(self.max_batch);
        if n == 0 {
            return Ok(0);
        }
        // Claim the free slots so that their storage can be handed to the
        // kernel all at once; they are given back (truncate) below.
        let start = batch.len();
        for _ in 0..n {
            if batch.next_slot().is_none() || !batch.commit_slot() {
                break;
            }
        }
        let claimed = batch.len() - start;
        for (i, slot) in batch.frames_mut()[start..].iter_mut().enumerate() {
            let storage = slot.storage_mut();
            self.set_msg(i, storage.as_mut_ptr().cast(), storage.len());
        }
        // SAFETY: the first `claimed` messages each point to one iovec that
        // points to a distinct, live batch buffer of the stated length; the
        // batch is not touched until the call returns.
        let r = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                self.msgs.as_mut_ptr(),
                claimed as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            batch.truncate(start);
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) => {
                    self.stats.rx_empty_polls += 1;
                    if let Some(c) = &self.credits {
                        c.drained();
                    }
                    Ok(0)
                }
                Some(libc::EINTR) => Ok(0),
                _ => Err(packet_error(&self.ifname, "receive (recvmmsg)", e)),
            };
        }
        let got = usize::try_from(r).unwrap_or(0).min(claimed);
        if let Some(c) = &self.credits {
            c.took(got);
        }
        let ts_ns = now_ns();
        let frames = batch.frames_mut();
        let mut kept = start;
        for i in 0..got {
            let m = &self.msgs[i];
            let len = m.msg_len as usize;
            let slot = &mut frames[start + i];
            if m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 || !slot.set_len(len) {
                self.stats.rx_too_large += 1;
                continue;
            }
            slot.ts_ns = ts_ns;
            slot.port = self.port;
            self.stats.rx_bytes += len as u64;
            frames.swap(kept, start + i);
            kept += 1;
        }
        batch.truncate(kept);
        let delivered = kept - start;
        self.stats.rx_frames += delivered as u64;
        Ok(delivered)
    }

    fn send(&mut self, frames: &[PacketBuf]) -> Result<usize, IoError> {
        let n = frames.len().min(self.max_batch);
        if n == 0 {
            return Ok(0);
        }
        for (i, f) in frames[..n].iter().enumerate() {
            let bytes = f.as_slice();
            // The kernel only reads through a send iovec; the cast to *mut
            // is what the C struct wants.
            self.set_msg(i, bytes.as_ptr().cast_mut().cast(), bytes.len());
        }
        // One call sends the batch unless a frame is refused: the kernel
        // then returns what it sent before it (or, if the refused frame came
        // first, the error). A frame too long for the device is skipped so
        // that the frames behind it still go; anything else ends the call.
        // Each round moves past at least one frame: at most `n` rounds.
        let mut done = 0;
        let mut sent = 0;
        while done < n {
            // SAFETY: messages `done..n` each point to one iovec that points
            // to a live frame of the caller's, which outlives the call;
            // sendmmsg only reads them.
            let r = unsafe {
                libc::sendmmsg(
                    self.fd.as_raw_fd(),
                    self.msgs[done..].as_mut_ptr(),
                    (n - done) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EMSGSIZE) => {
                        self.stats.tx_oversize += 1;
                        done += 1;
                        // The MTU may have come down since it was read.
                        self.refresh_longest();
                        continue;
                    }
                    Some(libc::EAGAIN) | Some(libc::ENOBUFS) | Some(libc::EINTR) | Some(libc::EBUSY) => {
                        self.stats.tx_full += 1;
                        break;
                    }
                    // What went before was sent; the error comes back on the next call.
                    _ if done > 0 => break,
                    _ => return Err(packet_error(&self.ifname, "send (sendmmsg)", e)),
                }
            }
            let took = usize::try_from(r).unwrap_or(0).min(n - done);
            self.stats.tx_bytes += frames[done..done + took].iter().map(|f| f.len() as u64).sum::<u64>();
            sent += took;
            done += took;
            if took == 0 || done == n {
                break;
            }
            // Short: the device queue is full, or the next frame was
            // refused. One longer than the device takes is skipped without
            // asking; one that fits means the queue is full. Asking costs a
            // system call that fails, at every full queue.
            let len = frames[done].len();
            if self.longest > 0 && len > self.longest {
                self.stats.tx_oversize += 1;
                done += 1;
            } else if self.longest > 0 && len + ETH_VLAN_HEADER - ETH_HEADER <= self.longest {
                self.stats.tx_full += 1;
                break;
            }
        }
        self.stats.tx_frames += sent as u64;
        Ok(done)
    }

    fn tx_refused(&mut self) -> u64 {
        let refused = self.stats.tx_oversize - self.oversize_told;
        self.oversize_told = self.stats.tx_oversize;
        refused
    }

    fn name(&self) -> &str {
        &self.ifname
    }

    fn receive_lost(&mut self) -> u64 {
        // With the frames longer than a buffer (truncated, not delivered).
        let s = self.stats();
        s.kernel_drops + s.rx_too_large
    }
}

impl AsRawFd for PacketPort {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
