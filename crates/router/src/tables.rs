//! The routing tables as one immutable snapshot: links, FIBs, neighbours and
//! the box's own addresses.
//!
//! A [`RouteTables`] is built off the packet path (by the
//! [`Mirror`](crate::Mirror) from rtnetlink, or by a [`TablesBuilder`] in
//! tests), published behind an `Arc`, and only read afterwards: workers load
//! the current snapshot between batches and never see a half-applied change.
//!
//! **Longest-prefix match.** Each family keeps one hash map per prefix
//! length that is present (at most 33 for IPv4, 129 for IPv6), keyed by the
//! masked prefix, and a lookup probes the present lengths from the longest
//! down; the first hit is the longest match. Cost: one masked hash probe per
//! present length, so O(lengths present), independent of the number of
//! routes; a typical FIB of connected networks, a few statics and a default
//! route has 3-6 lengths. Memory is linear in the routes (unlike DIR-24-8's
//! 32 MiB), and the build is a plain sort and insert. A full Internet table
//! (~25 IPv4 lengths) would want a binary search over lengths with markers
//! (Waldvogel et al.) or a DIR-24-8; the lookup interface would not change.
//!
//! When the kernel holds several routes for one prefix (different metrics),
//! the one with the lowest metric wins, as in the kernel. Prefixes are
//! normalised (host bits cleared) on insertion.
//!
//! **Neighbours** are keyed by (ifindex, IP) and hold only usable entries
//! (the mirror filters by NUD state). **Local addresses** are every address
//! of every link (not only torwart's ports), plus the IPv4 directed
//! broadcast address of each subnet, which a router must not forward by
//! default (RFC 2644).
//!
//! Invariants: lookups allocate nothing, never panic and are bounded; links
//! are sorted by ifindex; route indices stored in the maps are in bounds.

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::hash::{BuildHasher, Hash};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use wire::MacAddr;

use crate::flat::{FlatKey, FlatMap};

/// What the kernel does with packets that match a route (`RTN_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouteKind {
    /// Forward to the gateway, or to the destination if it is on-link.
    Unicast,
    /// Drop silently.
    Blackhole,
    /// Drop with ICMP destination unreachable (host unreachable / no route).
    Unreachable,
    /// Drop with ICMP destination unreachable, administratively prohibited.
    Prohibit,
    /// Destined to the box itself.
    Local,
}

/// One route of the main table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Destination prefix (host bits are cleared by the builder).
    pub prefix: IpAddr,
    pub prefix_len: u8,
    pub kind: RouteKind,
    /// Outgoing interface; 0 for routes without one (blackhole, ...).
    pub ifindex: u32,
    /// Next hop; `None` when the destination is on-link.
    pub gateway: Option<IpAddr>,
    /// Route MTU (`ip route ... mtu N`); `None` means the link's MTU.
    pub mtu: Option<u32>,
    /// Kernel priority; lower wins among routes to one prefix.
    pub metric: u32,
}

/// An address the box has on a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IfAddr {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

/// A network interface torwart forwards through (one of its ports).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub ifindex: u32,
    pub name: String,
    pub mac: MacAddr,
    /// Link MTU: the largest IP packet the link carries.
    pub mtu: u32,
    /// Administratively up and with carrier (`IFF_UP` and `IFF_RUNNING`).
    pub up: bool,
    /// Addresses in kernel order (primary before secondary).
    pub addrs: Vec<IfAddr>,
}

impl Link {
    /// Source of ICMPv4 errors about packets that came in on this link:
    /// its first IPv4 address.
    pub fn icmp_source_v4(&self) -> Option<Ipv4Addr> {
        self.addrs.iter().find_map(|a| match a.addr {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
    }

    /// Source of ICMPv6 errors: the first global address, else the first
    /// link-local one (RFC 4443 §2.2 asks for an address of the interface;
    /// a global one lets the error cross routers).
    pub fn icmp_source_v6(&self) -> Option<Ipv6Addr> {
        let v6 = || {
            self.addrs.iter().filter_map(|a| match a.addr {
                IpAddr::V6(v6) if !v6.is_loopback() && !v6.is_unspecified() => Some(v6),
                _ => None,
            })
        };
        v6().find(|a| !is_link_local_v6(a)).or_else(|| v6().next())
    }
}

/// `fe80::/10`.
pub(crate) fn is_link_local_v6(a: &Ipv6Addr) -> bool {
    const LINK_LOCAL_MASK: u16 = 0xffc0;
    const LINK_LOCAL_PREFIX: u16 = 0xfe80;
    a.segments()[0] & LINK_LOCAL_MASK == LINK_LOCAL_PREFIX
}

/// IPv4 subnets this long or longer have no broadcast address (RFC 3021).
const POINT_TO_POINT_LEN: u8 = 31;

/// What an address of the box is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalKind {
    /// An address assigned to one of the box's interfaces.
    Address,
    /// The directed broadcast address of one of its IPv4 subnets.
    Broadcast,
}

/// An address family's integer form, for masking and hashing.
trait FibAddr: FlatKey + Hash {
    const WIDTH: u8;
    fn mask(self, len: u8) -> Self;
    fn to_ip(self) -> IpAddr;
}

impl FibAddr for u32 {
    const WIDTH: u8 = 32;
    fn to_ip(self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(self))
    }
    #[inline]
    fn mask(self, len: u8) -> u32 {
        match len {
            0 => 0,
            l if l >= Self::WIDTH => self,
            l => self & (u32::MAX << (Self::WIDTH - l)),
        }
    }
}

impl FibAddr for u128 {
    const WIDTH: u8 = 128;
    fn to_ip(self) -> IpAddr {
        IpAddr::V6(Ipv6Addr::from(self))
    }
    #[inline]
    fn mask(self, len: u8) -> u128 {
        match len {
            0 => 0,
            l if l >= Self::WIDTH => self,
            l => self & (u128::MAX << (Self::WIDTH - l)),
        }
    }
}

/// One family's FIB: a map per present prefix length, longest first.
#[derive(Clone, Debug)]
struct Fib<K> {
    /// Present prefix lengths, descending; parallel to `maps`.
    lengths: Vec<u8>,
    /// Masked prefix → index into `routes`.
    maps: Vec<FlatMap<K, u32>>,
    routes: Vec<Route>,
}

impl<K: FibAddr> Fib<K> {
    /// `routes` must all be of this family, with `key` giving the prefix as K.
    fn build(mut routes: Vec<Route>, key: impl Fn(&IpAddr) -> K, seed: u64) -> Fib<K> {
        routes.retain(|r| r.prefix_len <= K::WIDTH);
        // Lowest metric first so that, per prefix, the first route seen wins.
        routes.sort_by(|a, b| (b.prefix_len, a.metric).cmp(&(a.prefix_len, b.metric)));
        let mut lengths: Vec<u8> = routes.iter().map(|r| r.prefix_len).collect();
        lengths.dedup();
        let mut maps = Vec::with_capacity(lengths.len());
        let mut kept: Vec<Route> = Vec::with_capacity(routes.len());
        let mut start = 0;
        for &len in &lengths {
            let end = start + routes[start..].iter().take_while(|r| r.prefix_len == len).count();
            let mut entries: Vec<(K, u32)> = Vec::new();
            let mut seen: HashSet<K> = HashSet::new();
            for r in &routes[start..end] {
                let k = key(&r.prefix).mask(len);
                // Per prefix, keep the first (lowest-metric) route only.
                if !seen.insert(k) {
                    continue;
                }
                let mut r = r.clone();
                r.prefix = K::to_ip(k);
                entries.push((k, kept.len() as u32));
                kept.push(r);
            }
            maps.push(FlatMap::build(entries, seed));
            start = end;
        }
        Fib { lengths, maps, routes: kept }
    }

    #[inline]
    fn lookup(&self, addr: K) -> Option<&Route> {
        for (len, map) in self.lengths.iter().zip(&self.maps) {
            if let Some(i) = map.get(&addr.mask(*len)) {
                return self.routes.get(i as usize);
            }
        }
        None
    }
}

/// The routing state torwart forwards with: an immutable snapshot.
#[derive(Clone, Debug)]
pub struct RouteTables {
    generation: u64,
    /// Sorted by ifindex.
    links: Vec<Link>,
    fib4: Fib<u32>,
    fib6: Fib<u128>,
    /// (ifindex << 32 | IPv4 address) → MAC.
    neigh4: FlatMap<u64, MacAddr>,
    neigh6: FlatMap<(u32, u128), MacAddr>,
    local4: FlatMap<u32, LocalKind>,
    local6: FlatMap<u128, LocalKind>,
}

#[inline]
fn neigh4_key(ifindex: u32, a: Ipv4Addr) -> u64 {
    (u64::from(ifindex) << 32) | u64::from(u32::from(a))
}

impl RouteTables {
    /// Tables with nothing in them: every lookup misses.
    pub fn empty() -> RouteTables {
        TablesBuilder::new().build()
    }

    /// Counts the snapshots a mirror published (0 for hand-built tables).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The link with this ifindex, if it is one of torwart's ports.
    #[inline]
    pub fn link(&self, ifindex: u32) -> Option<&Link> {
        self.links.binary_search_by_key(&ifindex, |l| l.ifindex).ok().and_then(|i| self.links.get(i))
    }

    /// The ports, by ifindex.
    pub fn links(&self) -> &[Link] {
        &self.links
    }

    /// Longest-prefix match.
    #[inline]
    pub fn lookup(&self, dst: IpAddr) -> Option<&Route> {
        match dst {
            IpAddr::V4(a) => self.lookup_v4(a),
            IpAddr::V6(a) => self.lookup_v6(a),
        }
    }

    #[inline]
    pub fn lookup_v4(&self, dst: Ipv4Addr) -> Option<&Route> {
        self.fib4.lookup(u32::from(dst))
    }

    #[inline]
    pub fn lookup_v6(&self, dst: Ipv6Addr) -> Option<&Route> {
        self.fib6.lookup(u128::from(dst))
    }

    /// Every route, IPv4 first, longest prefixes first.
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.fib4.routes.iter().chain(&self.fib6.routes)
    }

    /// The MAC of a usable neighbour entry.
    #[inline]
    pub fn neighbour(&self, ifindex: u32, ip: IpAddr) -> Option<MacAddr> {
        match ip {
            IpAddr::V4(a) => self.neigh4.get(&neigh4_key(ifindex, a)),
            IpAddr::V6(a) => self.neigh6.get(&(ifindex, u128::from(a))),
        }
    }

    /// Every usable neighbour as (ifindex, IP, MAC), in no particular order.
    pub fn neighbours(&self) -> impl Iterator<Item = (u32, IpAddr, MacAddr)> + '_ {
        let v4 = self.neigh4.iter().map(|(k, m)| ((k >> 32) as u32, IpAddr::V4(Ipv4Addr::from(k as u32)), m));
        let v6 = self.neigh6.iter().map(|((i, a), m)| (i, IpAddr::V6(Ipv6Addr::from(a)), m));
        v4.chain(v6)
    }

    /// The box's own addresses, on every interface (no broadcast ones).
    pub fn own_addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        let v4 = self.local4.iter().filter(|(_, k)| *k == LocalKind::Address).map(|(a, _)| IpAddr::V4(a.into()));
        let v6 = self.local6.iter().filter(|(_, k)| *k == LocalKind::Address).map(|(a, _)| IpAddr::V6(a.into()));
        v4.chain(v6)
    }

    /// Whether `addr` is one of the box's own addresses (on any interface).
    #[inline]
    pub fn is_local(&self, addr: IpAddr) -> bool {
        self.local_kind(addr) == Some(LocalKind::Address)
    }

    /// Whether `addr` belongs to the box: one of its addresses, or the
    /// directed broadcast address of one of its IPv4 subnets.
    #[inline]
    pub fn local_kind(&self, addr: IpAddr) -> Option<LocalKind> {
        match addr {
            IpAddr::V4(a) => self.local4.get(&u32::from(a)),
            IpAddr::V6(a) => self.local6.get(&u128::from(a)),
        }
    }
}

/// Assembles a [`RouteTables`]; used by the mirror and by tests.
#[derive(Clone, Debug, Default)]
pub struct TablesBuilder {
    generation: u64,
    links: Vec<Link>,
    /// Addresses of interfaces that are not ports: local, but no link entry.
    other_addrs: Vec<IfAddr>,
    routes: Vec<Route>,
    neighbours: Vec<(u32, IpAddr, MacAddr)>,
}

impl TablesBuilder {
    pub fn new() -> TablesBuilder {
        TablesBuilder::default()
    }

    pub fn generation(&mut self, g: u64) -> &mut Self {
        self.generation = g;
        self
    }

    /// Add a port; its addresses become local. A second link with the same
    /// ifindex replaces the first.
    pub fn link(&mut self, link: Link) -> &mut Self {
        self.links.retain(|l| l.ifindex != link.ifindex);
        self.links.push(link);
        self
    }

    /// An address of an interface that is not a port (loopback, the
    /// management interface): the box's own, but not forwarded through.
    pub fn local_addr(&mut self, addr: IfAddr) -> &mut Self {
        self.other_addrs.push(addr);
        self
    }

    pub fn route(&mut self, route: Route) -> &mut Self {
        self.routes.push(route);
        self
    }

    /// A usable neighbour entry.
    pub fn neighbour(&mut self, ifindex: u32, ip: IpAddr, mac: MacAddr) -> &mut Self {
        self.neighbours.push((ifindex, ip, mac));
        self
    }

    pub fn build(&self) -> RouteTables {
        let seed = RandomState::new().hash_one(0x7477_7274u32);
        let mut links = self.links.clone();
        links.sort_by_key(|l| l.ifindex);
        let (v4, v6): (Vec<Route>, Vec<Route>) = self.routes.iter().cloned().partition(|r| r.prefix.is_ipv4());
        let fib4 = Fib::build(
            v4,
            |a| match a {
                IpAddr::V4(a) => u32::from(*a),
                IpAddr::V6(_) => 0,
            },
            seed,
        );
        let fib6 = Fib::build(
            v6,
            |a| match a {
                IpAddr::V6(a) => u128::from(*a),
                IpAddr::V4(_) => 0,
            },
            seed,
        );
        let neigh4 = FlatMap::build(
            self.neighbours.iter().filter_map(|&(i, ip, m)| match ip {
                IpAddr::V4(a) => Some((neigh4_key(i, a), m)),
                IpAddr::V6(_) => None,
            }),
            seed,
        );
        let neigh6 = FlatMap::build(
            self.neighbours.iter().filter_map(|&(i, ip, m)| match ip {
                IpAddr::V6(a) => Some(((i, u128::from(a)), m)),
                IpAddr::V4(_) => None,
            }),
            seed,
        );
        let all_addrs = || links.iter().flat_map(|l| l.addrs.iter()).chain(&self.other_addrs);
        // Broadcast entries first, so that an address that is both (a /32
        // peer setup) ends up as an address: later pairs replace earlier ones.
        let broadcasts = all_addrs().filter_map(|a| match a.addr {
            IpAddr::V4(v4) if a.prefix_len < POINT_TO_POINT_LEN => {
                Some((u32::from(v4) | (u32::MAX >> a.prefix_len), LocalKind::Broadcast))
            }
            _ => None,
        });
        let addrs4 = all_addrs().filter_map(|a| match a.addr {
            IpAddr::V4(v4) => Some((u32::from(v4), LocalKind::Address)),
            IpAddr::V6(_) => None,
        });
        let local4 = FlatMap::build(broadcasts.chain(addrs4), seed);
        let local6 = FlatMap::build(
            all_addrs().filter_map(|a| match a.addr {
                IpAddr::V6(v6) => Some((u128::from(v6), LocalKind::Address)),
                IpAddr::V4(_) => None,
            }),
            seed,
        );
        RouteTables { generation: self.generation, links, fib4, fib6, neigh4, neigh6, local4, local6 }
    }
}
