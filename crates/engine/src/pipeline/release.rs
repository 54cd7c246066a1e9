//! What the engine does between batches: hand out the frames it held and
//! has now let go ([`Engine::poll_released`]: shaped frames whose time has
//! come, fragments whose first fragment passed), and end what is due
//! ([`Engine::poll_timers`]: expired flows and fragments, the flows of
//! members a reload ended). Both do bounded work per call.

use super::fragments::follow;
use super::{ended, Engine};
use crate::conntrack::{EXPIRE_BUDGET, NO_ACCOUNT};
use crate::counters::{DropReason, Reason};
use crate::time::Time;
use crate::Side;
use wire::classify::classify;

impl Engine {
    /// Hands out frames the engine held and has now decided to forward.
    pub fn poll_released(&mut self, mut out: impl FnMut(Side, &[u8])) -> usize {
        let Engine { frags, ct, counters, accounts, shaping, .. } = self;
        let mut n = 0;
        if let Some(sh) = shaping {
            let (mut released, mut marked) = (0, 0);
            n += sh.release(&mut released, &mut marked, |to, bytes| {
                counters.tx_packets[to.index()] += 1;
                counters.tx_bytes[to.index()] += bytes.len() as u64;
                out(to, bytes)
            });
            counters.shaper_released += released;
            counters.shaper_ecn_marked += marked;
        }
        n + frags.poll_released(|from, to, flow, bytes| {
            let verdict = match classify(bytes) {
                Ok(m) => follow(ct, accounts, flow, from, &m, bytes).map(|_| ()),
                Err(_) => Err(Reason::NatUntranslatable),
            };
            match verdict {
                Ok(()) => {
                    counters.fragments_released += 1;
                    counters.tx_packets[to.index()] += 1;
                    counters.tx_bytes[to.index()] += bytes.len() as u64;
                    out(to, bytes)
                }
                Err(r) => counters.drop(r.into()),
            }
        })
    }

    /// Ends, a bounded slice at a time, the flows of members a reload ended.
    fn sweep_ended(&mut self) {
        let Some(start) = self.sweep else { return };
        let end = (start as usize + EXPIRE_BUDGET).min(self.ct.capacity());
        for i in start..end as u32 {
            let f = self.ct.flow(i);
            if f.is_live() && f.account != NO_ACCOUNT && ended(&self.ct, &self.accounts, i, f.account) {
                self.ct.remove(i);
                self.counters.flows_ended += 1;
            }
        }
        self.sweep = (end < self.ct.capacity()).then_some(end as u32);
    }

    /// Expires flows and fragments due by `now`; bounded work per call.
    /// Returns how many flows expired.
    pub fn poll_timers(&mut self, now: Time) -> usize {
        let now = now.max(self.last_now);
        self.last_now = now;
        let n = self.ct.expire(now, EXPIRE_BUDGET);
        self.counters.flows_expired += n as u64;
        self.sweep_ended();
        let Engine { ct, nat, .. } = self;
        for (_, b) in ct.take_released() {
            nat.release(b);
        }
        if let Some(sh) = &mut self.shaping {
            sh.poll(now.0, &mut self.counters);
        }
        let timed_out = self.frags.expire(now, 64);
        self.counters.drops[DropReason::from(Reason::FragmentTimeout).index()] += timed_out;
        n
    }
}
