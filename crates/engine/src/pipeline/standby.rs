//! The other box of a pair: flows reported to it and flows installed from it.
//!
//! With [`Engine::sync_with_peer`] on, the flow table logs what the other
//! box must hear of: a flow answered, a TCP connection established, a flow
//! that outlived a timeout, a flow ended. Flows nobody answered (a SYN
//! flood's, a scan's) cost the sync nothing: their openers try again after
//! a failover. Closing TCP states are not reported; the other box learns
//! them from the packets, liberally. [`Engine::take_changes`] turns the
//! log into [`Synced`] flows. Flows the other box reports are installed at once,
//! ready to forward ([`Engine::install`]): the same keys, the same NAT
//! public port, TCP tracking resumed liberally. Such a flow is *synced*
//! until a packet of it passes here: its changes and its end are the other
//! box's to report, so nothing echoes back, and it lives here until the
//! other box reports its end (its own deadline is a backstop, one timeout
//! later than the other box's). A full resync from the other box names
//! every flow it holds; [`Engine::sweep_unnamed`] then ends the synced
//! flows it did not name.
//!
//! The packet path pays one predictable branch per packet for this.

use super::Engine;
use crate::conntrack::{Change, NewFlow, ProtoState, NO_ACCOUNT, NO_BINDING};
use crate::nat::NatRefusal;
use crate::time::Time;
use crate::Side;
use core::net::Ipv4Addr;
use core::time::Duration;
use policy::Status;
use wire::{Family, FlowKey};

/// A flow as one box of a pair reports it to the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Synced {
    /// `[original, reply]` keys as each direction arrives.
    pub keys: [FlowKey; 2],
    pub orig_side: Side,
    pub reply_side: Side,
    pub answered: bool,
    pub state: ProtoState,
    /// Until the flow expires on the reporting box.
    pub remaining: Duration,
    /// The member's id, if it is a member's flow.
    pub member_id: Option<u32>,
    /// The NAT binding's public address and port, if it holds one.
    pub nat: Option<(Ipv4Addr, u16)>,
    pub packets: [u32; 2],
    pub bytes: [u64; 2],
    /// The reporting box holds it as a copy of the other's (installed from
    /// it, no packet of it there since), not as its own: a resync sends
    /// such copies too, and they never overwrite the flow they copy.
    pub copy: bool,
}

/// A change for the other box.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncChange {
    Flow(Synced),
    Ended { key: FlowKey, member_id: Option<u32> },
}

/// Why a reported flow was not installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstallRefusal {
    /// The member is not in this box's policy (yet, or any more).
    UnknownMember,
    MemberBlocked,
    /// The NAT binding disagrees with one held here.
    NatConflict,
    TableFull,
    /// Keys or binding that no box makes (the flow is refused whole).
    Inconsistent,
}

/// What [`Engine::install`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Installed {
    New,
    /// The copy held here was brought up to date.
    Updated,
}

impl Engine {
    /// Starts logging changes for the other box of a pair, at most
    /// `capacity` between two [`take_changes`](Self::take_changes).
    pub fn sync_with_peer(&mut self, capacity: usize) {
        self.ct.log_changes(capacity);
        self.changes = Vec::with_capacity(capacity.max(1));
    }

    /// Hands the changes logged since the last call to `out`, in order;
    /// returns how many did not fit the log (the other box then needs a resync).
    pub fn take_changes(&mut self, now: Time, mut out: impl FnMut(SyncChange)) -> u64 {
        let mut changes = core::mem::take(&mut self.changes);
        let lost = self.ct.swap_changes(&mut changes);
        for c in changes.drain(..) {
            match c {
                // A flow made and ended since the last call is reported ended only.
                Change::Flow(i) => {
                    if let Some(s) = self.export(now, i) {
                        out(SyncChange::Flow(s));
                    }
                }
                Change::Ended { key, account } => {
                    let member_id = (account != NO_ACCOUNT).then(|| self.accounts.member_id(account));
                    out(SyncChange::Ended { key, member_id });
                }
            }
        }
        self.changes = changes;
        lost
    }

    /// Flow `i` as the other box needs it, if it is live.
    pub fn export(&self, now: Time, i: u32) -> Option<Synced> {
        let f = self.ct.flow(i);
        if !f.is_live() {
            return None;
        }
        let member_id = (f.account != NO_ACCOUNT).then(|| self.accounts.member_id(f.account));
        let nat = (f.binding != NO_BINDING).then(|| {
            let b = self.nat.binding(f.binding);
            (b.public, b.public_port)
        });
        Some(Synced {
            keys: f.keys,
            orig_side: f.orig_side,
            reply_side: f.reply_side,
            answered: f.answered,
            state: f.state,
            remaining: f.expires.since(now),
            member_id,
            nat,
            packets: f.packets,
            bytes: f.bytes,
            copy: f.synced,
        })
    }

    /// Exports the live answered flows from slab index `from` on, looking
    /// at most at `budget` entries; returns where to go on, or `None` at the end.
    pub fn export_from(&self, now: Time, from: u32, budget: usize, mut out: impl FnMut(Synced)) -> Option<u32> {
        let end = (from as usize).saturating_add(budget).min(self.ct.capacity());
        for i in from..end as u32 {
            if let Some(s) = self.export(now, i).filter(|s| s.answered) {
                out(s);
            }
        }
        (end < self.ct.capacity()).then_some(end as u32)
    }

    /// Installs a flow the other box reports, or brings the copy held here
    /// up to date. `resync` names the other box's resync it came in (see
    /// [`sweep_unnamed`](Self::sweep_unnamed)).
    pub fn install(&mut self, now: Time, s: &Synced, resync: u32) -> Result<Installed, InstallRefusal> {
        let k = &s.keys;
        if k[0].family != k[1].family || k[0].proto != k[1].proto {
            return Err(InstallRefusal::Inconsistent);
        }
        let grace = |state_timeout: Duration| now + s.remaining + state_timeout;
        let state = match s.state {
            ProtoState::Tcp(t) => ProtoState::Tcp(t.resumed()),
            other => other,
        };
        if let Some(hit) = self.ct.lookup(self.ct.hash(&k[0]), &k[0]) {
            let same = hit.dir == 0 && self.export(now, hit.flow).is_some_and(|h| h.keys[1] == k[1] && h.nat == s.nat);
            if !same {
                return Err(InstallRefusal::Inconsistent);
            }
            if !self.ct.flow(hit.flow).synced && s.copy {
                // The other box's copy of a flow that passed here (a
                // resync sends copies too): this box's is newer. Named in
                // the resync all the same.
                self.ct.name_in_resync(hit.flow, resync);
                return Ok(Installed::Updated);
            }
            let (f, timeouts) = self.ct.flow_and_timeouts(hit.flow);
            // The other box's own: its packets pass there now (a flow this
            // box adopted and its peer carries again), so what it reports
            // is newer, and this box holds a copy again, ended when the
            // other box ends it.
            f.synced = true;
            f.state = state;
            f.answered |= s.answered;
            // A copy the other box holds says what is left there, no more:
            // a flow both boxes hold as a copy (each took the other's
            // report) is not kept alive by their resyncs.
            let deadline = if s.copy { now + s.remaining } else { grace(f.timeout(timeouts)) };
            f.expires = f.expires.max(deadline);
            self.counters.flows_evicted_half_open += u64::from(self.ct.settle(hit.flow));
            self.ct.name_in_resync(hit.flow, resync);
            return Ok(Installed::Updated);
        }
        let account = match s.member_id {
            Some(id) => self.member_account(id)?,
            None => NO_ACCOUNT,
        };
        let binding = match s.nat {
            Some((public, port)) => self.adopt_binding(s, public, port)?,
            None => NO_BINDING,
        };
        let new = NewFlow {
            keys: s.keys,
            state,
            orig_side: s.orig_side,
            reply_side: s.reply_side,
            account,
            binding,
            epoch: self.epoch,
            synced: true,
            // Assured already or not: an established connection does not
            // push out the member's oldest handshake.
            answered: s.answered,
        };
        let (stored, evicted) = self.ct.insert(&new, now);
        self.counters.flows_evicted += u64::from(evicted.table);
        self.counters.flows_evicted_half_open += u64::from(evicted.half_open);
        let Ok(i) = stored else {
            if binding != NO_BINDING {
                self.nat.release(binding);
            }
            return Err(InstallRefusal::TableFull);
        };
        let (f, timeouts) = self.ct.flow_and_timeouts(i);
        f.packets = s.packets;
        f.bytes = s.bytes;
        // Later than the timer set at insert: the wheel finds it lazily.
        f.expires = grace(f.timeout(timeouts));
        self.ct.name_in_resync(i, resync);
        Ok(Installed::New)
    }

    /// The account of member `id`, if this box's policy has it and it may
    /// have flows.
    fn member_account(&mut self, id: u32) -> Result<u32, InstallRefusal> {
        if let Some(p) = &self.policy {
            let m = p.by_id(id).ok_or(InstallRefusal::UnknownMember)?;
            if p.member(m).status == Status::Blocked {
                return Err(InstallRefusal::MemberBlocked);
            }
        }
        Ok(self.accounts.slot(id))
    }

    fn adopt_binding(&mut self, s: &Synced, public: Ipv4Addr, port: u16) -> Result<u32, InstallRefusal> {
        let (Some(id), Family::V4, Side::Inside) = (s.member_id, s.keys[0].family, s.orig_side) else {
            return Err(InstallRefusal::Inconsistent);
        };
        let k = &s.keys[0];
        self.nat.adopt(id, k.proto, k.src_v4(), k.src_port, public, port).map_err(|e| match e {
            NatRefusal::TableFull => InstallRefusal::TableFull,
            _ => InstallRefusal::NatConflict,
        })
    }

    /// Ends the flow with original key `key` if it is a synced copy (the
    /// other box reports its end); a flow that passed here is this box's.
    pub fn end_synced(&mut self, key: &FlowKey) -> bool {
        match self.ct.lookup(self.ct.hash(key), key) {
            Some(hit) if hit.dir == 0 && self.ct.flow(hit.flow).synced => {
                self.ct.remove(hit.flow);
                true
            }
            _ => false,
        }
    }

    /// Makes the synced copies from slab index `from` on this box's own, a
    /// bounded slice at a time (returns where to go on, or `None` at the
    /// end; `adopted` counts them): when the other box comes back as a new
    /// session, what it held before is gone with it, and the copies here
    /// are the only ones. Its first resync must not sweep them (an idle
    /// connection this box carried meanwhile would lose its state and its
    /// NAT port); from now on this box reports their changes and ends.
    ///
    /// A copy's deadline had a whole timeout of grace on top of what the
    /// other box said was left ([`install`](Self::install)): adopted at
    /// `now`, it is due one timeout after `now` at the latest, as if its
    /// last packet passed then (else an idle copy could stay a day).
    pub fn adopt_synced(&mut self, now: Time, from: u32, budget: usize, adopted: &mut u64) -> Option<u32> {
        let end = (from as usize).saturating_add(budget).min(self.ct.capacity());
        for i in from..end as u32 {
            let (f, timeouts) = self.ct.flow_and_timeouts(i);
            if f.is_live() && f.synced {
                f.synced = false;
                let due = now + f.timeout(timeouts);
                if due < f.expires {
                    f.expires = due;
                    // The wheel is lazy about later deadlines, not earlier ones.
                    self.ct.reschedule(i);
                }
                *adopted += 1;
            }
        }
        (end < self.ct.capacity()).then_some(end as u32)
    }

    /// Ends the synced flows the other box's resync `resync` did not name,
    /// from slab index `from` on, a bounded slice at a time; returns where
    /// to go on, or `None` at the end. `ended` counts the flows ended.
    pub fn sweep_unnamed(&mut self, resync: u32, from: u32, budget: usize, ended: &mut u64) -> Option<u32> {
        let end = (from as usize).saturating_add(budget).min(self.ct.capacity());
        for i in from..end as u32 {
            let f = self.ct.flow(i);
            if f.is_live() && f.synced && self.ct.resync_of(i) != resync {
                self.ct.remove(i);
                *ended += 1;
            }
        }
        (end < self.ct.capacity()).then_some(end as u32)
    }
}
