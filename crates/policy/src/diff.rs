//! What changed between two policy generations, member by member.
//!
//! A reload swaps the whole [`Policy`], but the work that follows (ending
//! flows, re-classing shaper queues, updating per-member counters) should
//! be proportional to what changed, not to the size of the network: the
//! kernel setup torwart replaces regenerated 1.6 million rules for every
//! edit. [`diff`] compares two generations by stable member id (never by
//! `MemberRef`, which is per generation) with one merge walk over both
//! id-sorted member lists, and lists members added, removed and changed,
//! with what changed about each.
//!
//! [`Diff::flows_to_end`] is the reload's duty from DESIGN.md: "a blocked
//! member's flows end". Flows end for members removed, newly blocked, or
//! whose inside addresses or public address changed (their flows' source
//! or NAT binding no longer belongs to them). A plan change only re-classes
//! the member's queues; changed forwards or openings apply to new flows.

use core::fmt;

use crate::model::Status;
use crate::policy::{MemberRef, Policy};

/// What changed about a member, as a small set of flags.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Changes(u8);

impl Changes {
    pub const STATUS: Changes = Changes(1);
    pub const PLAN: Changes = Changes(1 << 1);
    pub const ADDRESSES: Changes = Changes(1 << 2);
    pub const PUBLIC: Changes = Changes(1 << 3);
    pub const FORWARDS: Changes = Changes(1 << 4);
    pub const OPENINGS: Changes = Changes(1 << 5);
    pub const NAME: Changes = Changes(1 << 6);

    const NAMES: [(Changes, &'static str); 7] = [
        (Changes::STATUS, "status"),
        (Changes::PLAN, "plan"),
        (Changes::ADDRESSES, "addresses"),
        (Changes::PUBLIC, "public address"),
        (Changes::FORWARDS, "forwards"),
        (Changes::OPENINGS, "openings"),
        (Changes::NAME, "name"),
    ];

    pub const fn empty() -> Changes {
        Changes(0)
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// True if every flag of `other` is set in `self`.
    pub const fn contains(self, other: Changes) -> bool {
        self.0 & other.0 == other.0
    }

    /// `self` with the flags of `other` set too.
    pub const fn with(self, other: Changes) -> Changes {
        Changes(self.0 | other.0)
    }
}

impl fmt::Debug for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Changes({self})")
    }
}

impl fmt::Display for Changes {
    /// `status, plan`; `nothing` when empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("nothing");
        }
        let mut first = true;
        for (flag, name) in Changes::NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str(", ")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

/// A member present in both generations with something changed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MemberChange {
    /// The stable member id.
    pub id: u32,
    /// The member in the old and the new generation.
    pub old: MemberRef,
    pub new: MemberRef,
    pub old_status: Status,
    pub new_status: Status,
    pub changes: Changes,
}

impl MemberChange {
    /// True if the member's existing flows must end: newly blocked, or
    /// their addresses or public address changed.
    pub fn ends_flows(&self) -> bool {
        (self.new_status == Status::Blocked && self.old_status != Status::Blocked)
            || self.changes.contains(Changes::ADDRESSES)
            || self.changes.contains(Changes::PUBLIC)
    }
}

/// The differences between two generations, by stable member id, each
/// list sorted by id.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Diff {
    /// Ids of members only in the new generation.
    pub added: Vec<u32>,
    /// Ids of members only in the old generation, with their old `MemberRef`.
    pub removed: Vec<(u32, MemberRef)>,
    pub changed: Vec<MemberChange>,
    /// The `networks` or `global_blocks` rows differ.
    pub globals_changed: bool,
}

impl Diff {
    /// True if nothing at all changed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0 && !self.globals_changed
    }

    /// Members added, removed or changed.
    pub fn len(&self) -> usize {
        self.added.len() + self.removed.len() + self.changed.len()
    }

    /// Stable ids of the members whose flows must end: removed, newly
    /// blocked, or with changed inside addresses or public address.
    pub fn flows_to_end(&self) -> impl Iterator<Item = u32> + '_ {
        let removed = self.removed.iter().map(|&(id, _)| id);
        removed.chain(self.changed.iter().filter(|c| c.ends_flows()).map(|c| c.id))
    }
}

impl fmt::Display for Diff {
    /// `3 added, 1 removed, 2 changed` (plus `, global rules changed`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} added, {} removed, {} changed", self.added.len(), self.removed.len(), self.changed.len())?;
        if self.globals_changed {
            f.write_str(", global rules changed")?;
        }
        Ok(())
    }
}

/// What changed from `old` to `new`; O(members + their rows).
pub fn diff(old: &Policy, new: &Policy) -> Diff {
    let mut d =
        Diff { globals_changed: old.networks() != new.networks() || old.blocks() != new.blocks(), ..Diff::default() };
    let (mut a, mut b) = (old.members().peekable(), new.members().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some(&(r, m)), None) => {
                d.removed.push((m.id, r));
                a.next();
            }
            (None, Some(&(_, n))) => {
                d.added.push(n.id);
                b.next();
            }
            (Some(&(r, m)), Some(&(s, n))) => {
                if m.id < n.id {
                    d.removed.push((m.id, r));
                    a.next();
                } else if n.id < m.id {
                    d.added.push(n.id);
                    b.next();
                } else {
                    let mut changes = Changes::empty();
                    let mut flag = |differs: bool, c: Changes| {
                        if differs {
                            changes = changes.with(c);
                        }
                    };
                    flag(m.status != n.status, Changes::STATUS);
                    flag(m.plan != n.plan, Changes::PLAN);
                    flag(old.addresses(r) != new.addresses(s), Changes::ADDRESSES);
                    flag(m.public != n.public, Changes::PUBLIC);
                    flag(old.forwards(r) != new.forwards(s), Changes::FORWARDS);
                    flag(old.openings(r) != new.openings(s), Changes::OPENINGS);
                    flag(m.name != n.name, Changes::NAME);
                    if !changes.is_empty() {
                        d.changed.push(MemberChange {
                            id: m.id,
                            old: r,
                            new: s,
                            old_status: m.status,
                            new_status: n.status,
                            changes,
                        });
                    }
                    a.next();
                    b.next();
                }
            }
        }
    }
    d
}
