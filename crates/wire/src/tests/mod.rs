//! Crate-level tests: real captured frames, one test per drop reason, and
//! property tests (build → classify round trips, robustness, checksums).

mod captured;
mod errors;
pub mod frames;
mod props;
mod seeds;
