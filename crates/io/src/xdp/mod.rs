//! AF_XDP, torwart's production packet I/O: an XDP program that hands
//! transit IPv4/IPv6 frames to user space and everything else to the kernel,
//! and the sockets that receive and send them.
//!
//! The kernel stays the control plane (DESIGN, "Where it sits"): it keeps
//! the addresses, routes, neighbour tables and the box's own traffic. The
//! [`XdpProgram`] on each port therefore passes ARP, multicast, link-local
//! IPv6 (NDP) and frames addressed to the box to the kernel, and redirects
//! the rest into the [`XdpPort`] of the queue the frame arrived on.
//!
//! Setup, per interface and queue:
//! ```text
//! let prog = XdpProgram::attach("eth1", XdpMode::Auto)?;   // native, else generic
//! prog.set_local_addresses(&box_addresses)?;                // before sockets
//! let port = XdpPort::open("eth1", &XdpConfig { queue: 0, ..Default::default() })?;
//! prog.register_socket(0, &port)?;                          // transit now flows to `port`
//! ```
//! Drop order does not matter for correctness: dropping the program detaches
//! it (BPF link), dropping a port unregisters it (the XSKMAP holds sockets
//! weakly: a closed socket disappears from the map).
//!
//! Modules: [`program`] (the BPF program, its maps, its attachment),
//! [`guard`] (the same classification at tc ingress, for AF_PACKET ports),
//! [`admit`] (and in XDP, admitting transit to an AF_PACKET port only as
//! fast as its worker takes it),
//! [`live`] (a generator that hands frames to an interface as XDP frames, for testbeds),
//! [`socket`] (the AF_XDP socket as a [`crate::PacketIo`]), `sys` (raw
//! `bpf(2)` calls).

pub mod admit;
pub mod guard;
pub mod live;
pub mod program;
pub mod socket;
mod sys;

pub use admit::{Credits, PacketAdmission, DEFAULT_ADMISSION_WINDOW};
pub use guard::{GuardVerdict, PacketGuard};
pub use live::LiveFrames;
pub use program::{rx_queue_count, XdpMode, XdpProgram, XdpVerdict, MAX_LOCAL_ADDRESSES};
pub use socket::{BusyPoll, XdpConfig, XdpPort, XdpPortStats, XskCopyMode, XskKernelStats};
