//! State sync between the two boxes of a pair, as pure logic.
//!
//! Each box streams the changes of its flows, NAT bindings and usage to
//! the other, so that the survivor of a failover forwards every connection
//! at once, with the same public ports, and writes the usage its peer
//! counted. This crate is the protocol and nothing else: [`record`] says
//! what travels, [`message`] how a datagram is built and authenticated
//! ([`key`]), and [`peer`] is the state machine of one end (sessions,
//! ordered and acknowledged delivery, resyncs), driven by the caller's
//! clock. The daemon moves its datagrams over UDP and its records between
//! the workers and the [`Peer`].

pub mod key;
pub mod message;
pub mod peer;
pub mod record;

pub use key::{Key, KeyFileError, Keys};
pub use peer::{Config, Counters, Event, Peer, Status};
pub use record::{FlowRecord, FlowState, Record, Usage};
