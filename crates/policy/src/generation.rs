//! Published policy generations: a compiled [`Policy`] plus which members'
//! flows must end, for the workers that install it.
//!
//! The control plane publishes one [`Generation`] per reload through one
//! atomic pointer; each worker notices it between batches and installs it.
//! A generation carries the members whose flows end for the last
//! [`ENDED_WINDOW`] generations, so a worker that skipped some (two reloads
//! between two of its batches) still ends every flow it must
//! ([`Generation::ended_since`]).

use crate::Policy;
use std::sync::Arc;

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
    /// The first generation: nothing ended before it.
    pub fn first(policy: Arc<Policy>) -> Generation {
        Generation { policy, ended: Vec::new() }
    }

    /// The generation after `self`: `policy` (numbered `self.number() + 1`
    /// by its compiler) ends the flows of `ended`.
    pub fn next(&self, policy: Arc<Policy>, ended: Vec<u32>) -> Generation {
        let mut window = self.ended.clone();
        window.push((policy.generation(), ended));
        if window.len() > ENDED_WINDOW {
            window.remove(0);
        }
        Generation { policy, ended: window }
    }

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
