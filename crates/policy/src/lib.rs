//! torwart's member model and its compiler to an immutable `Policy`.
//!
//! The member database is the source of truth of a torwart network: who
//! the members are, which addresses are theirs, which public IPv4 address
//! (and ports) they leave with, which ports they forward, which plan
//! shapes them, whether they are blocked. The kernel setup torwart replaces
//! turned that into 1.6 million iptables rules and rebuilt them every few
//! minutes; torwart compiles it into lookup structures whose cost does not
//! grow with the number of members, and swaps them atomically.
//!
//! * [`model`]: the database as plain data ([`MemberDb`], one struct per
//!   row), as `docs/members.md` defines it.
//! * [`compile`](compile()): validation and building. A database with
//!   problems gives a [`PolicyError`] that lists every one, naming tables
//!   and rows; the running policy stays.
//! * [`Policy`]: the compiled, immutable, generation-numbered answer to the
//!   packet path's questions (which member owns this address, this public
//!   port, this forward; is this source spoofed; is this blocked), each in
//!   O(1) or O(log n) without allocation.
//! * [`diff`](diff()): what changed between two generations, by stable
//!   member id, so reload work is proportional to the change.
//! * [`owner`]: which worker core owns a member, stable across reloads.
//!
//! Pure logic: no I/O, no clock, no threads, no database driver. The daemon
//! reads rows and calls [`compile`](compile()) off the packet path.

pub mod compile;
pub mod diff;
pub mod error;
pub mod generation;
mod interval;
pub mod model;
pub mod policy;
pub mod prefix;
pub mod sample;
mod special;
mod table;

pub use compile::{compile, compile_with_key, MIN_BURST_BYTES};
pub use diff::{diff, Changes, Diff, MemberChange};
pub use error::{ParseError, PolicyError, Problem, Rule, Table};
pub use generation::{Generation, ENDED_WINDOW};
pub use model::{
    BlockDirection, GlobalBlock, Ipv6Opening, Member, MemberAddress, MemberDb, Network, NetworkKind, Plan, PortForward,
    Protocol, PublicAddress, Rates, Status,
};
pub use policy::{
    owner, Direction, Forward, ForwardRule, MemberInfo, MemberRef, Opening, PlanInfo, Policy, PublicRange,
};
pub use prefix::{IpPrefix, Ipv4Prefix, Ipv6Prefix};
