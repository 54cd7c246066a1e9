//! Reloading: database → compiled policy → published generation.
//!
//! The [`Reloader`] owns the running policy. [`Reloader::reload`] loads the
//! member database, compiles it off the packet path, diffs it against the
//! running generation, and publishes the result with one atomic pointer
//! swap ([`Published`]); workers notice with one atomic load between
//! batches and install it (`engine::Engine::set_policy`). A database that
//! does not compile is reported and changes nothing: the running policy
//! stays. [`Reloader::run`] reloads on every change the database reports
//! (LISTEN/NOTIFY or polling, [`crate::db::Database::watch`]).
//!
//! A published [`Generation`] carries the members whose flows must end for
//! the last [`ENDED_WINDOW`] generations, so a worker that skipped some
//! (two reloads between two of its batches) still ends every flow it must:
//! [`Generation::ended_since`].

use crate::db::{ChangeStream, Database, DbError};
use arc_swap::ArcSwap;
use policy::Policy;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Diffs a generation remembers.
pub const ENDED_WINDOW: usize = 64;

/// One published policy generation.
#[derive(Debug)]
pub struct Generation {
    pub policy: Arc<Policy>,
    /// `(generation, members whose flows end)` for the latest generations, newest last.
    ended: Vec<(u64, Vec<u32>)>,
}

impl Generation {
    pub fn number(&self) -> u64 {
        self.policy.generation()
    }

    /// The members whose flows end between generation `since` (what a worker
    /// runs) and this one; `None` if `since` is older than the window (the
    /// worker then ends the flows of every member the policy no longer
    /// admits).
    pub fn ended_since(&self, since: u64) -> Option<Vec<u32>> {
        if since >= self.number() {
            return Some(Vec::new());
        }
        let oldest = self.ended.first().map_or(self.number(), |(g, _)| *g);
        if since + 1 < oldest {
            return None;
        }
        let mut out: Vec<u32> =
            self.ended.iter().filter(|(g, _)| *g > since).flat_map(|(_, e)| e.iter().copied()).collect();
        out.sort_unstable();
        out.dedup();
        Some(out)
    }
}

/// Where workers find the current generation: one atomic pointer.
pub type Published = ArcSwap<Generation>;

/// What a reload did.
#[derive(Debug, Clone, PartialEq)]
pub struct Reloaded {
    pub generation: u64,
    /// `policy::Diff`'s summary ("3 added, 1 removed, 2 changed").
    pub changes: String,
    pub ended: usize,
    pub compile: Duration,
}

#[derive(Debug)]
pub struct Reloader {
    db: Database,
    published: Arc<Published>,
    key: [u64; 4],
}

impl Reloader {
    /// Loads and compiles the database for the first time. Fails if it does
    /// not compile: there is no running policy to keep.
    pub async fn start(db: Database, key: [u64; 4]) -> Result<Reloader, DbError> {
        let members = db.load().await?;
        let policy = policy::compile_with_key(&members, 1, key).map_err(DbError::Invalid)?;
        let first = Generation { policy: Arc::new(policy), ended: Vec::new() };
        Ok(Reloader { db, published: Arc::new(ArcSwap::from_pointee(first)), key })
    }

    /// The cell workers read.
    pub fn published(&self) -> Arc<Published> {
        Arc::clone(&self.published)
    }

    /// Reloads now. On an invalid database the running generation stays and
    /// the error names every problem.
    pub async fn reload(&mut self) -> Result<Reloaded, DbError> {
        let t0 = Instant::now();
        let members = self.db.load().await?;
        let current = self.published.load_full();
        let next = current.number() + 1;
        let policy = policy::compile_with_key(&members, next, self.key).map_err(DbError::Invalid)?;
        let diff = policy::diff(&current.policy, &policy);
        let ended: Vec<u32> = diff.flows_to_end().collect();
        let mut window = current.ended.clone();
        window.push((next, ended.clone()));
        if window.len() > ENDED_WINDOW {
            window.remove(0);
        }
        let compile = t0.elapsed();
        self.published.store(Arc::new(Generation { policy: Arc::new(policy), ended: window }));
        Ok(Reloaded { generation: next, changes: diff.to_string(), ended: ended.len(), compile })
    }

    /// Reloads whenever `changes` reports a change, until the watch stops
    /// (reported once as an error); `report` hears of every reload and every
    /// refused database.
    pub async fn run(mut self, mut changes: ChangeStream, mut report: impl FnMut(Result<Reloaded, DbError>)) {
        loop {
            match changes.changed().await {
                Ok(()) => report(self.reload().await),
                Err(e) => {
                    let stopped = changes.is_closed();
                    report(Err(e));
                    if stopped {
                        return;
                    }
                }
            }
        }
    }
}
