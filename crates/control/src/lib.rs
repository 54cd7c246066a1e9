//! torwart's control plane.
//!
//! DESIGN.md gives this crate the daemon: reading the member database,
//! compiling and swapping policies, mirroring routes and neighbours,
//! persisting accounting, the HTTP API and metrics. For now it holds the
//! first of these:
//!
//! * [`db`]: the member database (SQLite, the embedded default, or
//!   PostgreSQL): open, create the schema, load into [`policy::MemberDb`],
//!   import JSON/CSV, check, write accounting, watch for changes.
//! * [`ledger`]: running per-member totals to accounting rows, as deltas,
//!   so that periodic flushes and the last one at a stop lose nothing.
//! * [`reload`]: load, compile, diff and publish policy generations on
//!   every change; a database that does not compile changes nothing.
//! * [`routes`]: a box's routes and neighbours given in a file, for
//!   replay: the tables the route mirror ([`mirror`]) would take from the kernel.
//!
//! Unlike `wire`, `policy` and `engine`, this crate does I/O and runs on
//! tokio; none of it is on the packet path.

pub mod api;
pub mod config;
pub mod daemon;
pub mod db;
pub mod files;
pub mod ledger;
pub mod logging;
pub mod mirror;
pub mod pair;
pub mod reload;
pub mod routes;
pub mod spool;
pub mod stats;
pub mod sys;
