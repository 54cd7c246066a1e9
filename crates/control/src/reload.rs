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
use policy::MemberDb;
pub use policy::{Generation, ENDED_WINDOW};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// The member database the running generation was compiled from (names,
    /// plans, forwards: what the API shows next to the figures).
    members: Arc<ArcSwap<MemberDb>>,
    key: [u64; 4],
}

impl Reloader {
    /// Loads and compiles the database for the first time. Fails if it does
    /// not compile: there is no running policy to keep.
    pub async fn start(db: Database, key: [u64; 4]) -> Result<Reloader, DbError> {
        let members = db.load().await?;
        Reloader::start_from(db, members, key)
    }

    /// The first policy from `members` (the last good member database, when
    /// `db` could not give one); the reloads read `db`. Fails if it does not
    /// compile.
    pub fn start_from(db: Database, members: MemberDb, key: [u64; 4]) -> Result<Reloader, DbError> {
        let policy = policy::compile_with_key(&members, 1, key).map_err(DbError::Invalid)?;
        let first = Generation::first(Arc::new(policy));
        let members = Arc::new(ArcSwap::from_pointee(members));
        Ok(Reloader { db, published: Arc::new(ArcSwap::from_pointee(first)), members, key })
    }

    /// The cell workers read.
    pub fn published(&self) -> Arc<Published> {
        Arc::clone(&self.published)
    }

    /// The member database of the running generation.
    pub fn members(&self) -> Arc<ArcSwap<MemberDb>> {
        Arc::clone(&self.members)
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
        let ended_count = ended.len();
        let compile = t0.elapsed();
        self.published.store(Arc::new(current.next(Arc::new(policy), ended)));
        self.members.store(Arc::new(members));
        Ok(Reloaded { generation: next, changes: diff.to_string(), ended: ended_count, compile })
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
