//! [`PacketAdmission`]: with AF_PACKET ports, an XDP program admits transit
//! frames only as fast as the worker takes them, so that the kernel's
//! receive cannot starve the worker (receive livelock).
//!
//! # Why
//! An AF_PACKET socket is fed in softirq: the driver's poll, the skb, the
//! socket's copy all run on the receiving core ahead of any thread. On the
//! worker's own core, at a rate the worker cannot keep up with, that work
//! takes the whole core, the worker gets a sliver of it and forwards almost
//! nothing, while the socket buffer overflows: the kernel spends its time
//! on frames that are dropped anyway (36 kpps forwarded of 666 kpps offered
//! in `docs/benchmarks.md`). Interrupt-driven receive has done this since
//! the 1990s (Mogul and Ramakrishnan, "Eliminating receive livelock in an
//! interrupt-driven kernel"); the cure is to stop taking frames in early,
//! where dropping them is cheap, when the consumer falls behind.
//!
//! # How
//! The worker holds credit, one frame each, in a one-element array map that
//! both sides see (`BPF_F_MMAPABLE`, mapped by [`Credits`]). The program
//! (the splitter's classification, module [`program`](super::program)):
//! - frames for the kernel (ARP, multicast, link-local IPv6, the box's own
//!   addresses, other ethertypes) → `XDP_PASS`, whatever the credit: the box
//!   stays reachable under any flood;
//! - a transit frame while credit is positive → `XDP_PASS`, taking one;
//! - a transit frame without credit → `XDP_DROP`, counted per CPU
//!   ([`PacketAdmission::refused`], the stats' `af_packet_not_admitted`).
//!
//! The port gives credit back as it receives ([`Credits::took`]) and sets it
//! to the full window whenever it finds the socket empty
//! ([`Credits::drained`]): nothing admitted is then waiting, so any credit
//! lost on the way (a frame the kernel dropped after admitting it, two CPUs
//! overdrawing at once) is restored. Hence at most `window` transit frames
//! are between the program and the worker at any time: the kernel's work
//! per worker poll is bounded, and what the worker cannot take is dropped
//! in the driver (native XDP: before an skb exists) instead of after the
//! kernel has paid for it. A worker that keeps up never sees a drop:
//! credit stays at the window, which is larger than any batch.
//!
//! Native mode is where it pays: generic XDP runs after the skb exists.
//! Like every XDP attachment it needs the interface to have no other XDP
//! program; it detaches when dropped (BPF link).

use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI64, Ordering};

use super::program::{attach_in, ifindex, load, percpu_sum, Hook, LocalMap, XdpMode, XdpVerdict};
use super::sys;
use crate::IoError;

/// Transit frames admitted ahead of the worker by default: more than a few
/// receive batches (a worker that keeps up never runs out), small enough
/// that the socket buffer holds them all.
pub const DEFAULT_ADMISSION_WINDOW: u32 = 1024;

/// The XDP admission program on one AF_PACKET port, with its maps.
///
/// Dropping it detaches the program; [`Credits`] mapped from it stay valid
/// (the mapping holds the map) but no longer admit anything.
#[derive(Debug)]
pub struct PacketAdmission {
    ifname: String,
    ifindex: u32,
    mode: XdpMode,
    window: u32,
    // Field order is drop order: detach first, then the program, then maps.
    _link: OwnedFd,
    prog: OwnedFd,
    local_map: LocalMap,
    credit_map: OwnedFd,
    /// Transit frames dropped for want of credit (one `u64` per possible CPU).
    refused_map: OwnedFd,
}

impl PacketAdmission {
    /// Loads the program for `ifname` and attaches it in `mode` (see
    /// [`XdpProgram::attach`](super::XdpProgram::attach)), with `window`
    /// frames of credit (at least 1). Until local addresses are set, frames
    /// to the box's own addresses are treated as transit: call
    /// [`set_local_addresses`](Self::set_local_addresses) right after.
    pub fn attach(ifname: &str, mode: XdpMode, window: u32) -> Result<PacketAdmission, IoError> {
        let window = window.max(1);
        let ifindex = ifindex(ifname)?;
        let local_map = LocalMap::create(ifname)?;
        let credit_map = sys::map_create_flags(sys::MAP_TYPE_ARRAY, 4, 8, 1, sys::BPF_F_MMAPABLE, "tw_credit")
            .map_err(|e| IoError::interface(ifname, "create the admission credit map", e))?;
        sys::map_update(&credit_map, &0u32.to_ne_bytes(), &i64::from(window).to_ne_bytes())
            .map_err(|e| IoError::interface(ifname, "set the admission credit", e))?;
        let refused_map = sys::map_create(sys::MAP_TYPE_PERCPU_ARRAY, 4, 8, 1, "tw_refused")
            .map_err(|e| IoError::interface(ifname, "create the refused-frames counter", e))?;
        let hook = Hook::XdpAdmit { credit_map_fd: credit_map.as_raw_fd(), refused_map_fd: refused_map.as_raw_fd() };
        let prog = load(ifname, hook, &local_map)?;
        let (link, mode) = attach_in(ifname, &prog, ifindex, mode)?;
        Ok(PacketAdmission {
            ifname: ifname.to_owned(),
            ifindex,
            mode,
            window,
            _link: link,
            prog,
            local_map,
            credit_map,
            refused_map,
        })
    }

    /// The interface it is attached to.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The mode actually used: [`XdpMode::Native`] or [`XdpMode::Generic`].
    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    /// The credit the port holds when it is keeping up, in frames.
    pub fn window(&self) -> u32 {
        self.window
    }

    /// The credit, shared with the program, for the port that reads this
    /// interface ([`PacketPort::admit_with`](crate::PacketPort::admit_with)).
    pub fn credits(&self) -> Result<Credits, IoError> {
        Credits::map(&self.credit_map, i64::from(self.window))
            .map_err(|e| IoError::interface(&self.ifname, "map the admission credit", e))
    }

    /// Transit frames dropped for want of credit since attachment, summed
    /// over CPUs.
    pub fn refused(&self) -> Result<u64, IoError> {
        percpu_sum(&self.refused_map)
            .map_err(|e| IoError::interface(&self.ifname, "read the refused-frames counter", e))
    }

    /// Replaces the set of the box's own addresses (frames to them always
    /// pass), as [`XdpProgram::set_local_addresses`](super::XdpProgram::set_local_addresses).
    pub fn set_local_addresses(&self, addrs: &[IpAddr]) -> Result<(), IoError> {
        self.local_map.set(&self.ifname, addrs)
    }

    /// True if `addr` is in the local-address map.
    pub fn is_local(&self, addr: IpAddr) -> Result<bool, IoError> {
        self.local_map.contains(&self.ifname, addr)
    }

    /// Runs the program once on `frame` (`BPF_PROG_TEST_RUN`) and returns
    /// the verdict. It is the real program on the real maps: an admitted
    /// transit frame takes a credit, a refused one is counted.
    pub fn dry_run(&self, frame: &[u8]) -> Result<XdpVerdict, IoError> {
        let ctx = sys::XdpMd {
            data_end: u32::try_from(frame.len()).unwrap_or(u32::MAX),
            ingress_ifindex: self.ifindex,
            ..Default::default()
        };
        sys::test_run(&self.prog, frame, Some(&ctx))
            .map(XdpVerdict::from)
            .map_err(|e| IoError::interface(&self.ifname, "test-run the XDP admission program", e))
    }
}

/// A port's view of its admission credit: the map's value, mapped into
/// this process. Owned by the one port that receives from the interface.
#[derive(Debug)]
pub struct Credits {
    value: NonNull<AtomicI64>,
    len: usize,
    window: i64,
}

// SAFETY: the mapping is process-wide memory that stays valid until `drop`
// unmaps it; all access goes through the atomic, so moving the owner to
// another thread (the worker's) is sound. Not `Sync`: one port owns it.
unsafe impl Send for Credits {}

impl Credits {
    fn map(map: &OwnedFd, window: i64) -> std::io::Result<Credits> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let len = usize::try_from(page).ok().filter(|&p| p >= 8).unwrap_or(4096);
        // SAFETY: maps `len` bytes (the array's one page of values) of the
        // map's descriptor, shared; the kernel checks the descriptor and the
        // length, and the result is checked below.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        // The first value is at offset 0, 8-byte aligned (page-aligned).
        let value =
            NonNull::new(addr.cast::<AtomicI64>()).ok_or_else(|| std::io::Error::other("mmap returned null"))?;
        Ok(Credits { value, len, window })
    }

    fn cell(&self) -> &AtomicI64 {
        // SAFETY: `value` points into our live, 8-byte aligned mapping of an
        // `i64` that the kernel and we only access atomically.
        unsafe { self.value.as_ref() }
    }

    /// The port received `frames`: give as much credit back, up to the window.
    pub fn took(&self, frames: usize) {
        let n = i64::try_from(frames).unwrap_or(i64::MAX).min(self.window);
        let after = self.cell().fetch_add(n, Ordering::Relaxed).saturating_add(n);
        if after > self.window {
            // A race with the program only lowers it again; the next top-up
            // or drain corrects any excess or shortfall.
            self.cell().store(self.window, Ordering::Relaxed);
        }
    }

    /// The port found its socket empty: nothing admitted is waiting, so the
    /// whole window is available again.
    pub fn drained(&self) {
        self.cell().store(self.window, Ordering::Relaxed);
    }

    /// The credit now (it may be slightly negative after concurrent
    /// admissions on several CPUs).
    pub fn available(&self) -> i64 {
        self.cell().load(Ordering::Relaxed)
    }

    /// The full credit.
    pub fn window(&self) -> i64 {
        self.window
    }
}

impl Drop for Credits {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `map` made; nothing refers to
        // it after this (the reference `cell` hands out cannot outlive self).
        unsafe {
            libc::munmap(self.value.as_ptr().cast(), self.len);
        }
    }
}
