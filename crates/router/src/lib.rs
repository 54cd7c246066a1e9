//! torwart's routed mode: the kernel's FIB and neighbours mirrored into an
//! immutable snapshot, and the per-packet forwarding decision.
//!
//! Linux is the control plane (DESIGN.md): the kernel owns addresses,
//! routes and neighbour tables; torwart forwards with a copy. The crate has
//! three parts:
//!
//! - [`tables`]: [`RouteTables`], the snapshot (links, IPv4/IPv6
//!   longest-prefix-match FIBs, neighbours, the box's own addresses), and
//!   [`TablesBuilder`] to assemble one. Lookups allocate nothing.
//! - [`forward`]: [`Router`], the per-core decision over a frame:
//!   [`Router::check_ttl`] before the engine, [`Router::forward`] after it
//!   (route, neighbour, MTU, TTL, MAC rewrite; ICMP errors per RFC 1812 and
//!   RFC 4443, rate-limited; IPv4 fragmentation). Pure logic: time is an
//!   argument, no syscalls. The calling order is documented there.
//! - [`mirror`]: [`Mirror`], the background thread that keeps the snapshot
//!   in step with the kernel over rtnetlink and asks the kernel to resolve
//!   neighbours on the workers' behalf ([`Resolver`]).
//!
//! Frames are untrusted: every header is read through `wire`'s checked
//! views, and no frame content can make this crate panic.

mod flat;
pub mod forward;
mod fragment;
mod icmp;
pub mod mirror;
mod ratelimit;
mod reason;
pub mod tables;

pub use forward::{Counters, Decision, Icmp, Router, RouterConfig};
pub use fragment::{FragmentBufs, FragmentSink, NoFragments};
pub use mirror::{Mirror, MirrorConfig, MirrorStats, Resolver};
pub use ratelimit::TokenBucket;
pub use reason::{IcmpSuppressed, Reason};
pub use tables::{IfAddr, Link, LocalKind, Route, RouteKind, RouteTables, TablesBuilder};

/// The crate's errors: all from talking to the kernel.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Opening, configuring or using an rtnetlink socket failed.
    #[error("rtnetlink socket: {0}")]
    Socket(#[source] std::io::Error),
    /// The kernel refused a request.
    #[error("rtnetlink request refused: {0}")]
    Request(#[source] std::io::Error),
    /// The mirror thread could not be started.
    #[error("spawning the mirror thread: {0}")]
    Spawn(#[source] std::io::Error),
}

#[cfg(test)]
mod tests;
