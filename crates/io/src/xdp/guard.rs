//! [`PacketGuard`]: with AF_PACKET ports, transit frames stop at tc
//! ingress, after the socket has taken its copy and before the kernel's IP
//! stack.
//!
//! AF_PACKET taps the receive path: the kernel keeps the original frame and
//! runs it through its own stack. Two things follow, both fixed here:
//! - **Fail closed.** A kernel that starts forwarding after torwart has
//!   started (someone sets `net.ipv4.ip_forward = 1`) would carry every
//!   transit frame past torwart's policy. With the guard, the kernel never
//!   sees a transit frame, whatever its settings.
//! - **Receive livelock.** The kernel's work on a frame it is only going to
//!   drop (IP input, a route lookup) is done in softirq, ahead of the worker
//!   on the same core. At a high enough rate it leaves the worker too little
//!   time to forward anything. The guard ends that work right after the tap.
//!
//! The classification is the XDP program's (module [`program`](super::program)):
//! ARP, multicast, link-local IPv6 (NDP) and frames to the box's own
//! addresses go on to the kernel (`TCX_NEXT`); other IPv4/IPv6 frames are
//! dropped (`TCX_DROP`). Two differences, both from where it runs: the
//! program first pulls the headers into the skb's linear part (a driver
//! may have left them in page fragments) and drops an IPv4/IPv6 frame
//! whose header it still cannot read; and by tc ingress the kernel has
//! taken a VLAN tag off into metadata, so a tagged frame is judged by its
//! inner header (the XDP program passes tagged frames). The taps run
//! before tc ingress in `__netif_receive_skb_core`, so the AF_PACKET
//! socket has its copy by then.
//!
//! It attaches with a tcx BPF link (Linux 6.6 and later) in front of any tc
//! programs already there (none of them can let a transit frame past it),
//! and detaches when dropped (or when the process dies). Loading it needs
//! CAP_BPF (or CAP_SYS_ADMIN), attaching CAP_NET_ADMIN.

use std::net::IpAddr;
use std::os::fd::OwnedFd;

use super::program::{ifindex, load, Hook, LocalMap, TCX_DROP, TCX_NEXT};
use super::sys;
use crate::IoError;

/// What the guard decided for a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GuardVerdict {
    /// On to the kernel (`TCX_NEXT`).
    Pass,
    /// Dropped before the kernel's stack (`TCX_DROP`).
    Drop,
    /// Anything else (cannot happen with our program).
    Other(i32),
}

/// The guard on one interface, with its local-address map.
///
/// Dropping it detaches the program (the BPF link closes) and frees the map.
#[derive(Debug)]
pub struct PacketGuard {
    ifname: String,
    // Field order is drop order: detach first, then the program, then the map.
    _link: OwnedFd,
    prog: OwnedFd,
    local_map: LocalMap,
}

impl PacketGuard {
    /// Loads the guard for `ifname` and attaches it at tc ingress. Until
    /// local addresses are set, frames to the box's own addresses are
    /// dropped too: call [`set_local_addresses`](Self::set_local_addresses)
    /// right after.
    pub fn attach(ifname: &str) -> Result<PacketGuard, IoError> {
        let ifindex = ifindex(ifname)?;
        let local_map = LocalMap::create(ifname)?;
        let prog = load(ifname, Hook::TcIngress, &local_map)?;
        let link = sys::link_create(&prog, ifindex, sys::ATTACH_TYPE_TCX_INGRESS, sys::BPF_F_BEFORE).map_err(|e| {
            let hint = match e.raw_os_error() {
                Some(libc::EINVAL) => " (tcx links need Linux 6.6 or later)",
                Some(libc::EPERM) | Some(libc::EACCES) => " (needs CAP_NET_ADMIN)",
                _ => "",
            };
            IoError::Interface { ifname: ifname.to_owned(), op: "attach the tc guard program", source: e, hint }
        })?;
        Ok(PacketGuard { ifname: ifname.to_owned(), _link: link, prog, local_map })
    }

    /// The interface it is attached to.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Replaces the set of the box's own addresses (frames to them go on to
    /// the kernel), as [`XdpProgram::set_local_addresses`](super::XdpProgram::set_local_addresses).
    pub fn set_local_addresses(&self, addrs: &[IpAddr]) -> Result<(), IoError> {
        self.local_map.set(&self.ifname, addrs)
    }

    /// True if `addr` is in the local-address map.
    pub fn is_local(&self, addr: IpAddr) -> Result<bool, IoError> {
        self.local_map.contains(&self.ifname, addr)
    }

    /// Runs the program once on `frame` (`BPF_PROG_TEST_RUN`) and returns
    /// the verdict; nothing is dropped or passed on.
    pub fn dry_run(&self, frame: &[u8]) -> Result<GuardVerdict, IoError> {
        let verdict = sys::test_run(&self.prog, frame, None)
            .map_err(|e| IoError::interface(&self.ifname, "test-run the tc guard program", e))?;
        Ok(match verdict as i32 {
            TCX_NEXT => GuardVerdict::Pass,
            TCX_DROP => GuardVerdict::Drop,
            other => GuardVerdict::Other(other),
        })
    }
}
