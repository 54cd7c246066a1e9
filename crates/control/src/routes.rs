//! A box's routing state written in a file: its links, routes and
//! neighbours as `ip addr`, `ip route` and `ip neigh` would show them.
//!
//! The daemon follows the kernel's state ([`crate::mirror`]); `torwart
//! replay --routes` and the golden tests have no kernel to follow, and take
//! the same [`RouteTables`] from this file instead, so that a replay routes
//! as the gateway would: next hop and MAC rewrite, TTL, ICMP errors.
//!
//! ```toml
//! [[link]]                    # one per interface, numbered (ifindex) from 1 in file order
//! name = "lan0"
//! side = "inside"             # a port of torwart; without it, another interface of the box
//! mac = "02:00:00:00:00:11"
//! mtu = 1500                  # the default
//! addrs = ["10.255.0.1/24"]   # the box's own addresses on it
//!
//! [[route]]                   # the main table, connected routes included
//! to = "0.0.0.0/0"
//! via = "192.0.2.2"           # the gateway; without it, on-link
//! dev = "wan0"                # none for blackhole, unreachable, prohibit
//! kind = "unicast"            # the default; or blackhole, unreachable, prohibit
//! mtu = 1400                  # a route MTU, if any
//! metric = 0                  # the default; the lowest wins among routes to one prefix
//!
//! [[neighbour]]               # usable entries only (REACHABLE, STALE, PERMANENT)
//! ip = "192.0.2.2"
//! dev = "wan0"
//! mac = "02:00:00:00:00:02"
//! ```
//!
//! Nothing is implied: as in the kernel's table, an address's connected
//! route is a route of its own (`ip route` lists it). Errors name the entry.

use crate::config::PortSide;
use engine::Side;
use router::{IfAddr, Link, Route, RouteKind, RouteTables, TablesBuilder};
use serde::Deserialize;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use wire::MacAddr;

/// Why a routes file was refused.
#[derive(Debug, thiserror::Error)]
pub enum RoutesError {
    #[error("cannot read the routes \"{path}\": {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the routes \"{path}\" are not valid: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The routing state of a file.
#[derive(Clone, Debug)]
pub struct StaticRoutes {
    pub tables: RouteTables,
    /// `(ifindex, side)` of the links that are torwart's ports, in file order.
    pub ports: Vec<(u32, Side)>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    link: Vec<LinkEntry>,
    #[serde(default)]
    route: Vec<RouteEntry>,
    #[serde(default)]
    neighbour: Vec<NeighbourEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkEntry {
    name: String,
    side: Option<PortSide>,
    mac: String,
    #[serde(default = "default_mtu")]
    mtu: u32,
    #[serde(default)]
    addrs: Vec<String>,
}

fn default_mtu() -> u32 {
    1500
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteEntry {
    to: String,
    via: Option<IpAddr>,
    dev: Option<String>,
    #[serde(default)]
    kind: Kind,
    mtu: Option<u32>,
    #[serde(default)]
    metric: u32,
}

#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    #[default]
    Unicast,
    Blackhole,
    Unreachable,
    Prohibit,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NeighbourEntry {
    ip: IpAddr,
    dev: String,
    mac: String,
}

impl StaticRoutes {
    pub fn load(path: &Path) -> Result<StaticRoutes, RoutesError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| RoutesError::Read { path: path.to_owned(), source })?;
        StaticRoutes::parse(&text).map_err(|message| RoutesError::Invalid { path: path.to_owned(), message })
    }

    /// Parses `text`; the error names the entry that is wrong.
    pub fn parse(text: &str) -> Result<StaticRoutes, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())?;
        let mut b = TablesBuilder::new();
        let mut ports = Vec::new();
        for (i, l) in file.link.iter().enumerate() {
            let ifindex = i as u32 + 1;
            let what = || format!("link {:?}", l.name);
            if file.link[..i].iter().any(|o| o.name == l.name) {
                return Err(format!("{}: a second link of that name", what()));
            }
            let mac = mac(&l.mac).ok_or_else(|| format!("{}: mac = {:?} is not a MAC address", what(), l.mac))?;
            if !(68..=65_535).contains(&l.mtu) {
                return Err(format!("{}: mtu = {}: give 68 to 65535", what(), l.mtu));
            }
            let addrs = l
                .addrs
                .iter()
                .map(|a| {
                    address(a).ok_or_else(|| format!("{}: {a:?} is not an address with its prefix length", what()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            match l.side {
                Some(side) => {
                    let side = if side == PortSide::Inside { Side::Inside } else { Side::Outside };
                    ports.push((ifindex, side));
                    b.link(Link { ifindex, name: l.name.clone(), mac, mtu: l.mtu, up: true, addrs });
                }
                None => {
                    for a in addrs {
                        b.local_addr(a);
                    }
                }
            }
        }
        let dev = |name: &str| file.link.iter().position(|l| l.name == name).map(|i| i as u32 + 1);
        for r in &file.route {
            let what = || format!("route to {:?}", r.to);
            let to = address(&r.to).ok_or_else(|| format!("{}: not a prefix (write e.g. \"0.0.0.0/0\")", what()))?;
            let ifindex = match &r.dev {
                Some(name) => {
                    dev(name).ok_or_else(|| format!("{}: dev = {name:?} is not a link of this file", what()))?
                }
                None => 0,
            };
            let kind = match r.kind {
                Kind::Unicast => RouteKind::Unicast,
                Kind::Blackhole => RouteKind::Blackhole,
                Kind::Unreachable => RouteKind::Unreachable,
                Kind::Prohibit => RouteKind::Prohibit,
            };
            if matches!(kind, RouteKind::Unicast) && ifindex == 0 {
                return Err(format!("{}: a unicast route needs dev", what()));
            }
            if r.via.is_some_and(|v| v.is_ipv4() != to.addr.is_ipv4()) {
                return Err(format!("{}: via is of the other address family", what()));
            }
            b.route(Route {
                prefix: to.addr,
                prefix_len: to.prefix_len,
                kind,
                ifindex,
                gateway: r.via,
                mtu: r.mtu,
                metric: r.metric,
            });
        }
        for n in &file.neighbour {
            let what = || format!("neighbour {}", n.ip);
            let ifindex =
                dev(&n.dev).ok_or_else(|| format!("{}: dev = {:?} is not a link of this file", what(), n.dev))?;
            let mac = mac(&n.mac).ok_or_else(|| format!("{}: mac = {:?} is not a MAC address", what(), n.mac))?;
            b.neighbour(ifindex, n.ip, mac);
        }
        Ok(StaticRoutes { tables: b.build(), ports })
    }
}

/// `02:00:00:00:00:11`.
fn mac(s: &str) -> Option<MacAddr> {
    let mut out = [0u8; 6];
    let mut parts = s.trim().split(':');
    for byte in &mut out {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(MacAddr(out))
}

/// `10.255.0.1/24`: an address and its prefix length (host bits allowed).
fn address(s: &str) -> Option<IfAddr> {
    let (a, len) = s.trim().split_once('/')?;
    let addr: IpAddr = a.parse().ok()?;
    let prefix_len: u8 = len.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (prefix_len <= max).then_some(IfAddr { addr, prefix_len })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOX: &str = r#"
        [[link]]
        name = "lan0"
        side = "inside"
        mac = "02:00:00:00:00:11"
        addrs = ["10.255.0.1/24"]

        [[link]]
        name = "wan0"
        side = "outside"
        mac = "02:00:00:00:00:12"
        mtu = 9000
        addrs = ["192.0.2.1/24"]

        [[link]]
        name = "lo"
        mac = "00:00:00:00:00:00"
        addrs = ["10.255.255.1/32"]

        [[route]]
        to = "0.0.0.0/0"
        via = "192.0.2.2"
        dev = "wan0"

        [[route]]
        to = "192.0.2.0/24"
        dev = "wan0"

        [[route]]
        to = "100.64.0.0/10"
        kind = "unreachable"

        [[neighbour]]
        ip = "192.0.2.2"
        dev = "wan0"
        mac = "02:00:00:00:00:02"
    "#;

    #[test]
    fn a_box_with_two_ports() {
        let r = StaticRoutes::parse(BOX).unwrap();
        assert_eq!(r.ports, vec![(1, Side::Inside), (2, Side::Outside)]);
        let t = &r.tables;
        assert_eq!(t.links().len(), 2, "lo is not a port");
        assert_eq!(t.link(2).unwrap().mtu, 9000);
        assert_eq!(t.link(1).unwrap().mtu, 1500);
        assert!(t.is_local("10.255.255.1".parse().unwrap()), "a non-port's address is the box's own");
        let default = t.lookup("198.19.0.1".parse().unwrap()).unwrap();
        assert_eq!((default.ifindex, default.gateway), (2, Some("192.0.2.2".parse().unwrap())));
        assert_eq!(t.lookup("100.64.3.4".parse().unwrap()).unwrap().kind, RouteKind::Unreachable);
        assert_eq!(t.lookup("192.0.2.9".parse().unwrap()).unwrap().gateway, None);
        assert_eq!(t.neighbour(2, "192.0.2.2".parse().unwrap()), Some(MacAddr([2, 0, 0, 0, 0, 2])));
        assert!(t.lookup("2001:db8::1".parse().unwrap()).is_none());
    }

    #[test]
    fn errors_name_the_entry() {
        let bad = |text: &str| StaticRoutes::parse(text).unwrap_err();
        assert!(bad("[[link]]\nname = \"a\"\nmac = \"02:00\"\n").contains("link \"a\": mac"));
        assert!(bad("[[route]]\nto = \"0.0.0.0/0\"\ndev = \"eth9\"\n").contains("route to \"0.0.0.0/0\": dev"));
        assert!(bad("[[route]]\nto = \"0.0.0.0/0\"\n").contains("needs dev"));
        assert!(bad("[[route]]\nto = \"10.0.0.0\"\nkind = \"blackhole\"\n").contains("not a prefix"));
        assert!(bad("[[route]]\nto = \"::/0\"\nvia = \"192.0.2.1\"\ndev = \"x\"\n").contains("dev"));
        assert!(bad("[[neighbour]]\nip = \"192.0.2.2\"\ndev = \"x\"\nmac = \"02:00:00:00:00:02\"\n")
            .contains("neighbour 192.0.2.2: dev"));
        assert!(bad("[[link]]\nname = \"a\"\nmac = \"02:00:00:00:00:01\"\nspeed = 10\n").contains("speed"));
    }

    #[test]
    fn macs() {
        assert_eq!(mac("02:00:00:00:00:1f"), Some(MacAddr([2, 0, 0, 0, 0, 0x1f])));
        assert_eq!(mac("02:00:00:00:00"), None);
        assert_eq!(mac("02:00:00:00:00:00:00"), None);
        assert_eq!(mac("2:0:0:0:0:1"), None);
    }
}
