//! IPv4 NAPT state: which public port each member's device uses.
//!
//! Behaviour (RFC 4787 terms):
//! * **Endpoint-independent mapping.** A device's (address, port, protocol)
//!   gets one public port, whatever it talks to, for as long as any flow
//!   uses it: a [`Binding`] counted by references. Games, calls and
//!   peer-to-peer software rely on this (REQ-1).
//! * **Filtering** is the flow table's: a packet from the outside passes only
//!   if it matches a flow (address-and-port-dependent filtering, REQ-8's
//!   safe choice), or a port forward.
//! * **Port preservation** when the device's own port is free and inside
//!   the member's range; otherwise a port chosen from a keyed hash of the
//!   device's address and port, then the next free one. TCP and UDP ports
//!   below 1024 are not handed out dynamically (they are kept for
//!   forwards); ICMP echo identifiers are translated the same way.
//! * **Quota.** A member holds at most `quota` bindings (RFC 6888 REQ-4), so
//!   one member cannot exhaust a shared public address; members sharing an
//!   address have disjoint port ranges, so they never compete for a port.
//! * **Never fails while a port is free.** The search walks the member's
//!   whole range if it must; the quota keeps the range lightly used, so the
//!   expected walk is one or two lookups.
//!
//! Bounded: at most `max_bindings` bindings, maps sized once at start with
//! keyed hashes. Port forwards reserve their public ports ([`Nat::reserve`])
//! so no outbound flow is ever given one.

use core::net::Ipv4Addr;
use foldhash::fast::FixedState;
use std::collections::HashMap;
use std::hash::BuildHasher;

/// Where a member's traffic is translated to: its public address and port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Public {
    pub addr: Ipv4Addr,
    pub first: u16,
    pub last: u16,
}

/// A device's mapping: private (address, port) → public port, shared by its flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding {
    pub member: u32,
    pub proto: u8,
    pub private: Ipv4Addr,
    pub private_port: u16,
    pub public: Ipv4Addr,
    pub public_port: u16,
    /// Flows using this binding.
    pub refs: u32,
}

/// Why no public port was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatRefusal {
    /// The member holds its quota of bindings.
    Quota,
    /// Every port of the member's range is in use (or reserved).
    Exhausted,
    /// The box holds `max_bindings` bindings.
    TableFull,
    /// Another box's binding ([`Nat::adopt`]) disagrees with one held here.
    Conflict,
}

type Key = (u32, u8, Ipv4Addr, u16);
type PortKey = (Ipv4Addr, u8, u16);
const RESERVED: u32 = u32::MAX;
const DYNAMIC_FLOOR: u16 = 1024;

#[derive(Debug)]
pub struct Nat {
    bindings: Vec<Binding>,
    free: Vec<u32>,
    by_device: HashMap<Key, u32, FixedState>,
    by_port: HashMap<PortKey, u32, FixedState>,
    per_member: HashMap<u32, u32, FixedState>,
    /// Ports forwards own, kept apart so that one a binding still held when
    /// it was reserved becomes reserved once that binding is gone.
    reserved: HashMap<PortKey, (), FixedState>,
    quota: u32,
    pick: FixedState,
}

impl Nat {
    pub fn new(max_bindings: u32, quota: u32, key: [u64; 4]) -> Nat {
        let n = max_bindings.max(1) as usize;
        let st = |i: u64| {
            FixedState::with_seed(key[0].wrapping_add(i).rotate_left(13) ^ key[2] ^ key[1].rotate_left(29) ^ key[3])
        };
        let blank = Binding {
            member: 0,
            proto: 0,
            private: Ipv4Addr::UNSPECIFIED,
            private_port: 0,
            public: Ipv4Addr::UNSPECIFIED,
            public_port: 0,
            refs: 0,
        };
        Nat {
            bindings: vec![blank; n],
            free: (0..n as u32).rev().collect(),
            by_device: HashMap::with_capacity_and_hasher(n, st(1)),
            // Forwards' reservations share the port map.
            by_port: HashMap::with_capacity_and_hasher(n + 4096, st(2)),
            per_member: HashMap::with_capacity_and_hasher(n.min(1 << 20), st(3)),
            reserved: HashMap::with_capacity_and_hasher(4096, st(5)),
            quota: quota.max(1),
            pick: st(4),
        }
    }

    pub fn len(&self) -> usize {
        self.bindings.len() - self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn binding(&self, b: u32) -> &Binding {
        &self.bindings[b as usize]
    }

    /// Bindings member `member` holds.
    pub fn held_by(&self, member: u32) -> u32 {
        self.per_member.get(&member).copied().unwrap_or(0)
    }

    /// Keeps `port` of `public` for a port forward: never given to a flow.
    /// False if a flow's binding holds it now; policy reload reserves
    /// forwards before members' new flows can take their ports.
    pub fn reserve(&mut self, public: Ipv4Addr, proto: u8, port: u16) -> bool {
        let key = (public, proto, port);
        self.reserved.insert(key, ());
        match self.by_port.get(&key) {
            Some(&b) if b != RESERVED => false,
            _ => {
                self.by_port.insert(key, RESERVED);
                true
            }
        }
    }

    /// Drops every reservation (before reserving a new policy's forwards).
    pub fn clear_reservations(&mut self) {
        self.by_port.retain(|_, b| *b != RESERVED);
        self.reserved.clear();
    }

    /// The binding for a device's (address, port) under `proto`: the
    /// existing one with one more reference, or a new one.
    pub fn acquire(
        &mut self,
        member: u32,
        public: Public,
        proto: u8,
        private: Ipv4Addr,
        private_port: u16,
    ) -> Result<u32, NatRefusal> {
        let key = (member, proto, private, private_port);
        if let Some(&b) = self.by_device.get(&key) {
            let bd = &mut self.bindings[b as usize];
            if bd.public == public.addr && (public.first..=public.last).contains(&bd.public_port) {
                bd.refs += 1;
                return Ok(b);
            }
        }
        let held = self.held_by(member);
        if held >= self.quota {
            return Err(NatRefusal::Quota);
        }
        if self.free.is_empty() {
            return Err(NatRefusal::TableFull);
        }
        let port = self.pick_port(public, proto, private, private_port).ok_or(NatRefusal::Exhausted)?;
        let b = self.free.pop().ok_or(NatRefusal::TableFull)?;
        self.bindings[b as usize] =
            Binding { member, proto, private, private_port, public: public.addr, public_port: port, refs: 1 };
        self.by_device.insert(key, b);
        self.by_port.insert((public.addr, proto, port), b);
        *self.per_member.entry(member).or_insert(0) += 1;
        Ok(b)
    }

    /// The binding another box made for a device: exactly `public_port`
    /// of `public` (a standby taking over keeps the ports its peer gave, so
    /// the servers see the same source port after a failover). The existing
    /// binding with one more reference if it is the same; refused if the
    /// device holds another port here or the port is another's (the two
    /// boxes disagree; the local binding stays). Not held to the quota:
    /// the peer enforced it.
    pub fn adopt(
        &mut self,
        member: u32,
        proto: u8,
        private: Ipv4Addr,
        private_port: u16,
        public: Ipv4Addr,
        public_port: u16,
    ) -> Result<u32, NatRefusal> {
        let key = (member, proto, private, private_port);
        let port = (public, proto, public_port);
        match (self.by_device.get(&key), self.by_port.get(&port)) {
            (Some(&b), Some(&p)) if b == p => {
                self.bindings[b as usize].refs += 1;
                return Ok(b);
            }
            (None, None) => {}
            _ => return Err(NatRefusal::Conflict),
        }
        let b = self.free.pop().ok_or(NatRefusal::TableFull)?;
        self.bindings[b as usize] = Binding { member, proto, private, private_port, public, public_port, refs: 1 };
        self.by_device.insert(key, b);
        self.by_port.insert(port, b);
        *self.per_member.entry(member).or_insert(0) += 1;
        Ok(b)
    }

    fn pick_port(&self, public: Public, proto: u8, private: Ipv4Addr, private_port: u16) -> Option<u16> {
        // Well-known ports are kept for forwards; ICMP identifiers are not ports.
        let floor = if proto == 1 || proto == 58 { 1 } else { DYNAMIC_FLOOR };
        let lo = public.first.max(floor).min(public.last);
        let hi = public.last;
        if lo > hi {
            return None;
        }
        let free = |p: u16| !self.by_port.contains_key(&(public.addr, proto, p));
        if (lo..=hi).contains(&private_port) && free(private_port) {
            return Some(private_port);
        }
        let span = u32::from(hi - lo) + 1;
        let start = (self.pick.hash_one((private, private_port, proto)) % u64::from(span)) as u32;
        (0..span).map(|i| lo + ((start + i) % span) as u16).find(|p| free(*p))
    }

    /// One flow less uses binding `b`; the last one frees it.
    pub fn release(&mut self, b: u32) {
        let bd = &mut self.bindings[b as usize];
        if bd.refs == 0 {
            return;
        }
        bd.refs -= 1;
        if bd.refs > 0 {
            return;
        }
        let bd = *bd;
        let device = (bd.member, bd.proto, bd.private, bd.private_port);
        // The device may have a newer binding (its member's range changed).
        if self.by_device.get(&device) == Some(&b) {
            self.by_device.remove(&device);
        }
        let port = (bd.public, bd.proto, bd.public_port);
        if self.by_port.get(&port) == Some(&b) {
            if self.reserved.contains_key(&port) {
                // A forward took this port while the binding held it.
                self.by_port.insert(port, RESERVED);
            } else {
                self.by_port.remove(&port);
            }
        }
        if let Some(n) = self.per_member.get_mut(&bd.member) {
            *n -= 1;
            if *n == 0 {
                self.per_member.remove(&bd.member);
            }
        }
        self.free.push(b);
    }

    /// The binding holding `port` of `public` for `proto`, if any.
    pub fn by_public(&self, public: Ipv4Addr, proto: u8, port: u16) -> Option<u32> {
        self.by_port.get(&(public, proto, port)).copied().filter(|b| *b != RESERVED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TCP: u8 = 6;
    const UDP: u8 = 17;

    fn public(first: u16, last: u16) -> Public {
        Public { addr: Ipv4Addr::new(198, 51, 100, 7), first, last }
    }

    fn dev(i: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, i)
    }

    #[test]
    fn mapping_is_endpoint_independent_and_reference_counted() {
        let mut n = Nat::new(100, 10, [1, 2, 3, 4]);
        let a = n.acquire(1, public(1024, 65535), TCP, dev(5), 40_000).unwrap();
        let b = n.acquire(1, public(1024, 65535), TCP, dev(5), 40_000).unwrap();
        assert_eq!(a, b);
        assert_eq!(n.binding(a).refs, 2);
        assert_eq!(n.binding(a).public_port, 40_000, "port preserved");
        n.release(a);
        assert_eq!(n.len(), 1);
        n.release(b);
        assert_eq!(n.len(), 0);
        assert_eq!(n.held_by(1), 0);
        assert_eq!(n.by_public(public(0, 0).addr, TCP, 40_000), None);
    }

    #[test]
    fn ports_outside_the_range_are_moved_into_it() {
        let mut n = Nat::new(100, 10, [1, 2, 3, 4]);
        let b = n.acquire(1, public(20_000, 20_099), UDP, dev(5), 53_000).unwrap();
        assert!((20_000..=20_099).contains(&n.binding(b).public_port));
    }

    #[test]
    fn quota_and_exhaustion() {
        let mut n = Nat::new(1000, 5, [1, 2, 3, 4]);
        for p in 0..5 {
            n.acquire(1, public(2000, 2009), UDP, dev(1), 3000 + p).unwrap();
        }
        assert_eq!(n.acquire(1, public(2000, 2009), UDP, dev(1), 4000), Err(NatRefusal::Quota));
        // Another member sharing the address with a disjoint range is unaffected.
        let mut n = Nat::new(1000, 100, [1, 2, 3, 4]);
        for p in 0..10 {
            n.acquire(1, public(2000, 2009), UDP, dev(1), 3000 + p).unwrap();
        }
        assert_eq!(n.acquire(1, public(2000, 2009), UDP, dev(1), 4000), Err(NatRefusal::Exhausted));
        n.acquire(2, public(2010, 2019), UDP, dev(2), 3000).unwrap();
    }

    #[test]
    fn a_port_forwarded_while_held_is_reserved_once_released() {
        let mut n = Nat::new(100, 100, [1, 2, 3, 4]);
        let b = n.acquire(1, public(2000, 2001), TCP, dev(1), 2000).unwrap();
        assert_eq!(n.binding(b).public_port, 2000);
        assert!(!n.reserve(public(0, 0).addr, TCP, 2000), "held by a flow now");
        n.release(b);
        // Now the forward's: never given to a flow.
        let b = n.acquire(1, public(2000, 2001), TCP, dev(1), 2000).unwrap();
        assert_eq!(n.binding(b).public_port, 2001);
        assert_eq!(n.acquire(1, public(2000, 2001), TCP, dev(2), 2000), Err(NatRefusal::Exhausted));
    }

    #[test]
    fn reserved_ports_are_never_given() {
        let mut n = Nat::new(100, 100, [1, 2, 3, 4]);
        for p in 2000..2010 {
            if p != 2005 {
                assert!(n.reserve(public(0, 0).addr, TCP, p));
            }
        }
        let b = n.acquire(1, public(2000, 2009), TCP, dev(1), 2003).unwrap();
        assert_eq!(n.binding(b).public_port, 2005);
        assert_eq!(n.acquire(1, public(2000, 2009), TCP, dev(1), 2004), Err(NatRefusal::Exhausted));
    }

    proptest! {
        /// However devices come and go, no public port is ever held by two
        /// bindings, and every binding's port is in its member's range.
        #[test]
        fn one_port_one_binding(ops in proptest::collection::vec((0u32..4, 1u8..6, 1000u16..1040, any::<bool>()), 1..400)) {
            let mut n = Nat::new(64, 16, [9, 8, 7, 6]);
            let range = |m: u32| public(2000 + m as u16 * 10, 2009 + m as u16 * 10);
            let mut held: Vec<u32> = Vec::new();
            for (m, d, p, release) in ops {
                if release && !held.is_empty() {
                    let b = held.remove(p as usize % held.len());
                    n.release(b);
                } else if let Ok(b) = n.acquire(m, range(m), UDP, dev(d + m as u8 * 10), p) {
                    held.push(b);
                }
                let mut seen = std::collections::HashSet::new();
                for b in held.iter().copied().collect::<std::collections::HashSet<_>>() {
                    let bd = n.binding(b);
                    prop_assert!(seen.insert(bd.public_port), "port {} twice", bd.public_port);
                    let r = range(bd.member);
                    prop_assert!((r.first..=r.last).contains(&bd.public_port));
                }
            }
        }
    }
}
