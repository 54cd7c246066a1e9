//! Fragments in the pipeline: a first fragment is judged as an unfragmented
//! packet would be (tracked, or passed as a related ICMP error) and its
//! verdict is recorded for the datagram; a later fragment follows the
//! recorded verdict, or is held until there is one ([`crate::frag`]). A
//! forwarded later fragment is charged to its first fragment's flow and
//! translated as that flow is ([`follow`]).

use super::{ended, Charge, Engine, Lane};
use crate::conntrack::{Conntrack, NO_ACCOUNT};
use crate::counters::{DropReason, Reason};
use crate::frag::{datagram_key, FlowRef, Outcome, Piece};
use crate::members::Accounts;
use crate::time::Time;
use crate::{Side, Verdict};
use wire::classify::{Fragment, Meta, L4};
use wire::flow::proto;

impl Engine {
    /// A fragment, first or later, in `lane`. Returns the verdict and, if
    /// it is forwarded on a member's flow, the account it was charged to.
    pub(super) fn fragment(
        &mut self,
        now: Time,
        from: Side,
        m: &Meta,
        frag: Fragment,
        lane: Lane,
        bytes: &mut [u8],
    ) -> (Verdict, Option<Charge>) {
        let key = datagram_key(&m.key, frag.ident);
        let len = m.l3_end.saturating_sub(frag.data_offset);
        let (piece, evicted) = match self.frags.piece(now, key, from, frag, len, m.key.proto == proto::TCP, &m.key) {
            Ok(p) => p,
            Err(r) => {
                self.counters.drops[DropReason::from(r.reason).index()] += u64::from(r.also_dropped);
                return (self.drop(r.reason), None);
            }
        };
        self.counters.drops[DropReason::from(Reason::FragmentTableFull).index()] += u64::from(evicted);
        match piece {
            Piece::Decided(o) => self.apply(o, from, m, bytes),
            Piece::First(e) => {
                let (v, hit, charge) = match m.l4 {
                    L4::IcmpError { inner, .. } => {
                        let (v, charge) = self.related(now, from, m, bytes, &inner);
                        (v, None, charge)
                    }
                    _ => self.track(now, from, m, lane, bytes),
                };
                let outcome = match v {
                    Verdict::Forward(to) => {
                        Outcome::Forward { to, flow: hit.map(|h| FlowRef { flow: h.flow, dir: h.dir, key: m.key }) }
                    }
                    Verdict::Drop(r) => Outcome::Drop(r),
                    Verdict::Held => Outcome::Pending,
                };
                let dropped = self.frags.decide(e, outcome);
                self.counters.drops[DropReason::from(Reason::FragmentOfDropped).index()] += u64::from(dropped);
                (v, charge)
            }
            Piece::Undecided(e) => match self.frags.hold(e, bytes) {
                Ok(()) => {
                    self.counters.fragments_held += 1;
                    (Verdict::Held, None)
                }
                Err(r) => (self.drop(r), None),
            },
        }
    }

    /// A later fragment of a datagram whose first fragment was decided.
    fn apply(&mut self, o: Outcome, from: Side, m: &Meta, bytes: &mut [u8]) -> (Verdict, Option<Charge>) {
        match o {
            Outcome::Forward { to, flow } => match follow(&mut self.ct, &mut self.accounts, flow, from, m, bytes) {
                Ok(charge) => (Verdict::Forward(to), charge),
                Err(r) => (self.drop(r), None),
            },
            Outcome::Drop(_) => (self.drop(Reason::FragmentOfDropped), None),
            Outcome::Poisoned => (self.drop(Reason::FragmentOverlap), None),
            Outcome::Pending => (self.drop(Reason::FragmentTableFull), None),
        }
    }
}

/// Accounts a later fragment to the flow its first fragment matched and
/// translates it as that flow is translated. Returns the account it was
/// charged to, if the flow is a member's.
pub(super) fn follow(
    ct: &mut Conntrack,
    accounts: &mut Accounts,
    flow: Option<FlowRef>,
    from: Side,
    m: &Meta,
    bytes: &mut [u8],
) -> Result<Option<Charge>, Reason> {
    let Some(r) = flow else { return Ok(None) };
    let f = ct.flow(r.flow);
    let dir = r.dir as usize;
    if !f.is_live() || f.keys[dir] != r.key {
        // The flow has ended since the first fragment (expired, evicted,
        // its member blocked): nothing is left to translate, charge or
        // check the fragment by, and it must not leave as it came.
        return Err(Reason::FragmentFlowEnded);
    }
    let came_from = if dir == 0 { f.orig_side } else { f.reply_side };
    if from != came_from {
        return Err(Reason::WrongSide);
    }
    let account = f.account;
    if account != NO_ACCOUNT && ended(ct, accounts, r.flow, account) {
        return Err(Reason::MemberBlocked);
    }
    let up = (dir == 0) == (f.orig_side == Side::Inside);
    let charge = super::charge(accounts, account, up, bytes.len());
    let f = ct.flow_mut(r.flow);
    f.packets[dir] = f.packets[dir].wrapping_add(1);
    f.bytes[dir] += bytes.len() as u64;
    if f.translated {
        let out = f.keys[1 - dir].reversed();
        // A later fragment has no transport header: only addresses change.
        let fake = Meta { key: r.key, ..*m };
        wire::nat::translate_v4(bytes, &fake, &out).map_err(|_| Reason::NatUntranslatable)?;
    }
    Ok(charge)
}
