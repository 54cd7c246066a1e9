//! The kernel's state as the mirror knows it, kept up to date from dumps
//! and notifications, and turned into a [`RouteTables`] snapshot.
//!
//! The model keeps more than the snapshot: links, addresses and neighbours
//! of every interface (a port may be created or renamed later), and every
//! route of the main table. The snapshot is filtered when it is built:
//! links and neighbours of torwart's ports only, addresses of every
//! interface (they are all the box's own), every route (a route via a
//! non-port interface must still win its longest-prefix match, so that the
//! forwarder drops its traffic as `egress_not_port` instead of sending it
//! along a less specific route).
//!
//! Keys follow the kernel's identity of each object: a link by ifindex, an
//! address by (ifindex, address, prefix length), a route by (destination,
//! prefix length, TOS, priority), a neighbour by (ifindex, address).

use std::collections::HashMap;
use std::net::IpAddr;

use wire::MacAddr;

use router::tables::{IfAddr, Link, Route, RouteTables, TablesBuilder};

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LinkState {
    pub name: String,
    pub mac: MacAddr,
    pub mtu: u32,
    pub up: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AddrState {
    pub secondary: bool,
    /// Arrival order, so that the kernel's order survives a rebuild.
    pub seq: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct RouteKey {
    pub prefix: IpAddr,
    pub prefix_len: u8,
    pub tos: u8,
    pub metric: u32,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Model {
    pub links: HashMap<u32, LinkState>,
    pub addrs: HashMap<(u32, IpAddr, u8), AddrState>,
    pub routes: HashMap<RouteKey, Route>,
    pub neighbours: HashMap<(u32, IpAddr), MacAddr>,
    seq: u64,
}

impl Model {
    pub fn set_link(&mut self, ifindex: u32, link: LinkState) {
        self.links.insert(ifindex, link);
    }

    /// A deleted link takes its addresses, neighbours and routes along (the
    /// kernel flushes IPv4 routes of a vanished device without notifying).
    pub fn del_link(&mut self, ifindex: u32) {
        self.links.remove(&ifindex);
        self.addrs.retain(|k, _| k.0 != ifindex);
        self.neighbours.retain(|k, _| k.0 != ifindex);
        self.routes.retain(|_, r| r.ifindex != ifindex);
    }

    pub fn set_addr(&mut self, ifindex: u32, addr: IpAddr, prefix_len: u8, secondary: bool) {
        self.seq += 1;
        let seq = self.seq;
        let e = self.addrs.entry((ifindex, addr, prefix_len)).or_insert(AddrState { secondary, seq });
        e.secondary = secondary;
    }

    pub fn del_addr(&mut self, ifindex: u32, addr: IpAddr, prefix_len: u8) {
        self.addrs.remove(&(ifindex, addr, prefix_len));
    }

    pub fn set_route(&mut self, key: RouteKey, route: Route) {
        self.routes.insert(key, route);
    }

    pub fn del_route(&mut self, key: &RouteKey) {
        self.routes.remove(key);
    }

    /// `mac: None` (an unusable state) removes the entry.
    pub fn set_neighbour(&mut self, ifindex: u32, ip: IpAddr, mac: Option<MacAddr>) {
        match mac {
            Some(m) => {
                self.neighbours.insert((ifindex, ip), m);
            }
            None => {
                self.neighbours.remove(&(ifindex, ip));
            }
        }
    }

    /// The snapshot; `ports` empty means every interface is a port.
    pub fn build(&self, ports: &[String], generation: u64) -> RouteTables {
        let is_port = |l: &LinkState| ports.is_empty() || ports.contains(&l.name);
        let mut b = TablesBuilder::new();
        b.generation(generation);
        let mut addrs: Vec<(&(u32, IpAddr, u8), &AddrState)> = self.addrs.iter().collect();
        addrs.sort_by_key(|(k, s)| (k.0, s.secondary, s.seq));
        for (&ifindex, l) in &self.links {
            let link_addrs = addrs
                .iter()
                .filter(|(k, _)| k.0 == ifindex)
                .map(|(k, _)| IfAddr { addr: k.1, prefix_len: k.2 })
                .collect::<Vec<_>>();
            if is_port(l) {
                b.link(Link { ifindex, name: l.name.clone(), mac: l.mac, mtu: l.mtu, up: l.up, addrs: link_addrs });
            } else {
                for a in link_addrs {
                    b.local_addr(a);
                }
            }
        }
        for r in self.routes.values() {
            b.route(r.clone());
        }
        for (&(ifindex, ip), &mac) in &self.neighbours {
            if self.links.get(&ifindex).is_some_and(is_port) {
                b.neighbour(ifindex, ip, mac);
            }
        }
        b.build()
    }
}
