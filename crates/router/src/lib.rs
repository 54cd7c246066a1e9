//! torwart's routed mode: the kernel's FIB and neighbours as an immutable
//! snapshot, and the per-packet forwarding decision. Pure: no sockets, no
//! threads; the control plane's route mirror (`control::mirror`) fills the
//! snapshot from the kernel and resolves neighbours for the workers.
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
//! - [`resolve`]: [`Resolver`], how a worker asks for a neighbour's
//!   resolution without blocking (a bounded channel to the mirror).
//!
//! Frames are untrusted: every header is read through `wire`'s checked
//! views, and no frame content can make this crate panic.

mod flat;
pub mod forward;
mod fragment;
mod icmp;
mod ratelimit;
mod reason;
pub mod resolve;
pub mod tables;

pub use forward::{Counters, Decision, Icmp, Router, RouterConfig};
pub use fragment::{FragmentBufs, FragmentSink, NoFragments};
pub use ratelimit::TokenBucket;
pub use reason::{IcmpSuppressed, Reason};
pub use resolve::{Resolver, ResolverCounters};
pub use tables::{IfAddr, Link, LocalKind, Route, RouteKind, RouteTables, TablesBuilder};

#[cfg(test)]
mod tests;
