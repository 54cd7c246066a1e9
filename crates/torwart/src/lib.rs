//! The `torwart` command: subcommands over the engine and its I/O.
//!
//! * `replay`: captures in, verdicts out ([`replay`]).
//! * `bench`: the engine's cost on the named scenarios ([`bench`]).

pub mod alloc;
pub mod bench;
pub mod cli;
pub mod lab;
pub mod man;
pub mod replay;
pub mod scenario;
pub mod syncbench;

use std::path::PathBuf;

/// Everything the command can fail with, each naming what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Io(#[from] io::IoError),
    #[error("cannot {op} \"{path}\": {source}")]
    File { op: &'static str, path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Db(#[from] control::db::DbError),
    #[error(transparent)]
    Routes(#[from] control::routes::RoutesError),
    #[error("{0}")]
    Usage(String),
}

/// Runs `f` on a single-threaded async runtime (the database layer is async).
pub fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime").block_on(f)
}
