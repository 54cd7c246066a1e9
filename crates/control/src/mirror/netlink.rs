//! rtnetlink plumbing: a synchronous socket for requests and dumps, a
//! subscribed socket for notifications, and the translation of
//! `netlink-packet-route` messages into the mirror's [`Model`].
//!
//! Two sockets keep the streams apart: dump replies and acks arrive only on
//! the request socket, notifications only on the event socket, so a dump
//! never has to skip interleaved events and vice versa. Message boundaries
//! are walked by hand (`nlmsg_len`, aligned to 4) so that one message the
//! library cannot decode is counted and skipped instead of losing the rest
//! of the datagram.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteMetric, RouteType, RouteVia,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr};
use wire::MacAddr;

use super::model::{LinkState, Model, RouteKey};
use super::Error;
use router::tables::{Route, RouteKind};

/// Receive buffer: larger than any datagram the kernel sends (dump skbs are
/// at most 32 KiB; notifications are small).
const RECV_BUF: usize = 256 * 1024;
/// Socket receive buffer for notifications, so bursts (a routing daemon
/// installing a table) do not overrun it. Forced past `rmem_max` as root.
const EVENT_SOCKET_RCVBUF: libc::c_int = 8 * 1024 * 1024;
/// Length of `struct nlmsghdr`.
const NLMSG_HDR_LEN: usize = 16;
const NLMSG_ALIGN: usize = 4;
/// Bytes of the `nlmsg_len` field at the start of a message.
const NLMSG_LEN_FIELD: usize = 4;
/// Neighbour states whose link-layer address may be used to send
/// (`NUD_VALID` minus `NUD_INCOMPLETE`/`NUD_FAILED`/`NUD_NONE`).
fn usable(state: NeighbourState) -> bool {
    matches!(
        state,
        NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent
            | NeighbourState::Noarp
    )
}

/// Notification groups the mirror follows (`RTNLGRP_*`).
const GROUPS: [libc::c_uint; 6] = [
    libc::RTNLGRP_LINK,
    libc::RTNLGRP_IPV4_IFADDR,
    libc::RTNLGRP_IPV6_IFADDR,
    libc::RTNLGRP_IPV4_ROUTE,
    libc::RTNLGRP_IPV6_ROUTE,
    libc::RTNLGRP_NEIGH,
];

/// The kernel's main routing table (`RT_TABLE_MAIN`).
const RT_TABLE_MAIN: u32 = RouteHeader::RT_TABLE_MAIN as u32;

fn sock_err(e: io::Error) -> Error {
    Error::Socket(e)
}

/// A synchronous rtnetlink socket with a sequence counter and a buffer.
pub(crate) struct Netlink {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netlink").field("fd", &self.sock.as_raw_fd()).field("seq", &self.seq).finish()
    }
}

impl Netlink {
    /// A request socket, in the calling thread's network namespace.
    pub fn request() -> Result<Netlink, Error> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(sock_err)?;
        sock.bind_auto().map_err(sock_err)?;
        sock.connect(&SocketAddr::new(0, 0)).map_err(sock_err)?;
        Ok(Netlink { sock, seq: 0, buf: vec![0; RECV_BUF] })
    }

    /// A non-blocking socket subscribed to the mirror's groups.
    pub fn events() -> Result<Netlink, Error> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(sock_err)?;
        sock.bind_auto().map_err(sock_err)?;
        for g in GROUPS {
            sock.add_membership(g).map_err(sock_err)?;
        }
        force_rcvbuf(sock.as_raw_fd(), EVENT_SOCKET_RCVBUF);
        sock.set_non_blocking(true).map_err(sock_err)?;
        Ok(Netlink { sock, seq: 0, buf: vec![0; RECV_BUF] })
    }

    pub fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<u32, io::Error> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut req = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        req.finalize();
        let mut out = vec![0u8; req.buffer_len()];
        req.serialize(&mut out);
        self.sock.send(&out, 0)?;
        Ok(self.seq)
    }

    /// Dump one kind of object, handing every message to `each`. A dump the
    /// kernel flags as interrupted (`NLM_F_DUMP_INTR`: the table changed
    /// meanwhile) is reported as such, so the caller can start over.
    pub fn dump(
        &mut self,
        req: RouteNetlinkMessage,
        each: &mut dyn FnMut(RouteNetlinkMessage),
        decode_errors: &mut u64,
    ) -> Result<bool, Error> {
        let seq = self.send(req, NLM_F_REQUEST | NLM_F_DUMP).map_err(sock_err)?;
        let mut interrupted = false;
        loop {
            let n = self.sock.recv(&mut &mut self.buf[..], 0).map_err(sock_err)?;
            let mut done = false;
            for_each_message(&self.buf[..n.min(self.buf.len())], decode_errors, &mut |hdr, payload| {
                if hdr.sequence_number != seq {
                    return Ok(());
                }
                if hdr.flags & NLM_F_DUMP_INTR != 0 {
                    interrupted = true;
                }
                match payload {
                    NetlinkPayload::Done(_) => done = true,
                    NetlinkPayload::Error(e) if e.code.is_some() => {
                        done = true;
                        return Err(Error::Request(e.to_io()));
                    }
                    NetlinkPayload::InnerMessage(m) => each(m),
                    _ => {}
                }
                Ok(())
            })?;
            if done {
                return Ok(!interrupted);
            }
        }
    }

    /// Send a request and wait for its acknowledgement.
    pub fn request_ack(&mut self, req: RouteNetlinkMessage, flags: u16) -> Result<(), Error> {
        let seq = self.send(req, NLM_F_REQUEST | NLM_F_ACK | flags).map_err(sock_err)?;
        let mut ignored = 0;
        loop {
            let n = self.sock.recv(&mut &mut self.buf[..], 0).map_err(sock_err)?;
            let mut result = None;
            for_each_message(&self.buf[..n.min(self.buf.len())], &mut ignored, &mut |hdr, payload| {
                if hdr.sequence_number == seq {
                    if let NetlinkPayload::Error(e) = payload {
                        result = Some(match e.code {
                            None => Ok(()),
                            Some(_) => Err(Error::Request(e.to_io())),
                        });
                    }
                }
                Ok(())
            })?;
            if let Some(r) = result {
                return r;
            }
        }
    }

    /// Read what is queued without blocking, handing every message to
    /// `each`. `Ok(false)`: the socket overran (`ENOBUFS`), notifications
    /// were lost, and the caller must dump again.
    pub fn drain(&mut self, each: &mut dyn FnMut(RouteNetlinkMessage), decode_errors: &mut u64) -> Result<bool, Error> {
        loop {
            match self.sock.recv(&mut &mut self.buf[..], libc::MSG_DONTWAIT) {
                Ok(n) => for_each_message(&self.buf[..n.min(self.buf.len())], decode_errors, &mut |_, p| {
                    if let NetlinkPayload::InnerMessage(m) = p {
                        each(m);
                    }
                    Ok(())
                })?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    // What is still queued is older than the dump the
                    // caller makes next: applied after it, it would undo
                    // it (deleted routes back, live ones gone). Dropped.
                    self.discard_queued();
                    return Ok(false);
                }
                Err(e) => return Err(sock_err(e)),
            }
        }
    }

    /// Reads and drops what is queued (bounded: a storm that goes on is
    /// newer than the dump anyway).
    fn discard_queued(&mut self) {
        for _ in 0..4096 {
            match self.sock.recv(&mut &mut self.buf[..], libc::MSG_DONTWAIT) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    /// Ask the kernel to resolve `ip` on `ifindex`: `RTM_NEWNEIGH` with
    /// `NTF_USE` (create if missing, `NUD_NONE`). The kernel then treats the
    /// entry as used by a packet (`neigh_event_send`): an absent or stale
    /// entry starts ARP/NDP probing, a valid one is left as it is.
    pub fn resolve(&mut self, ifindex: u32, ip: IpAddr) -> Result<(), Error> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = match ip {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        msg.header.ifindex = ifindex;
        msg.header.state = NeighbourState::None;
        msg.header.flags = NeighbourFlags::Use;
        msg.attributes.push(NeighbourAttribute::Destination(match ip {
            IpAddr::V4(a) => NeighbourAddress::Inet(a),
            IpAddr::V6(a) => NeighbourAddress::Inet6(a),
        }));
        self.request_ack(RouteNetlinkMessage::NewNeighbour(msg), NLM_F_CREATE | NLM_F_REPLACE)
    }
}

/// `SO_RCVBUFFORCE` (root), falling back to `SO_RCVBUF`; failures leave the
/// default, which only makes overruns (and re-dumps) likelier.
fn force_rcvbuf(fd: RawFd, size: libc::c_int) {
    let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: `fd` is an open socket owned by the caller; the option
        // value points to a live c_int of the length passed.
        let r = unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, opt, (&size as *const libc::c_int).cast(), len) };
        if r == 0 {
            return;
        }
    }
}

type Handler<'a> = dyn FnMut(&NetlinkHeader, NetlinkPayload<RouteNetlinkMessage>) -> Result<(), Error> + 'a;

/// Walk the messages of one datagram by their `nlmsg_len`.
fn for_each_message(mut b: &[u8], decode_errors: &mut u64, f: &mut Handler<'_>) -> Result<(), Error> {
    while b.len() >= NLMSG_HDR_LEN {
        let len_bytes: [u8; NLMSG_LEN_FIELD] = b[..NLMSG_LEN_FIELD].try_into().unwrap_or([0; NLMSG_LEN_FIELD]);
        let len = u32::from_ne_bytes(len_bytes) as usize;
        if len < NLMSG_HDR_LEN || len > b.len() {
            *decode_errors += 1;
            return Ok(());
        }
        match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&b[..len]) {
            Ok(m) => {
                let (hdr, payload) = m.into_parts();
                f(&hdr, payload)?;
            }
            Err(_) => *decode_errors += 1,
        }
        let next = len.div_ceil(NLMSG_ALIGN) * NLMSG_ALIGN;
        b = b.get(next..).unwrap_or(&[]);
    }
    Ok(())
}

/// Dump requests, in the order the model needs them (links before the
/// objects that refer to them).
pub(crate) fn dump_requests() -> [RouteNetlinkMessage; 4] {
    [
        RouteNetlinkMessage::GetLink(LinkMessage::default()),
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        RouteNetlinkMessage::GetRoute(RouteMessage::default()),
        RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default()),
    ]
}

/// What applying a message did to the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Change {
    None,
    Changed,
    /// A link went up or down, or an IPv4 address went away: the kernel
    /// flushes (or restores) routes of a downed device, and older kernels
    /// flushed those using the address as their source, without notifying, so the
    /// routes must be dumped again.
    Resync,
}

/// Apply one message (dumped or notified) to the model.
pub(crate) fn apply(model: &mut Model, msg: RouteNetlinkMessage) -> Change {
    match msg {
        // A bridge's notices about its ports (family AF_BRIDGE: a port
        // joined or left the bridge) are not the interface's own: a
        // `DelLink` of that family comes while the interface lives on.
        RouteNetlinkMessage::NewLink(l) | RouteNetlinkMessage::DelLink(l)
            if l.header.interface_family == AddressFamily::Bridge =>
        {
            Change::None
        }
        RouteNetlinkMessage::NewLink(l) => match link_state(&l) {
            Some(s) => {
                let was_up = model.links.get(&l.header.index).map(|old| old.up);
                let now_up = s.up;
                model.set_link(l.header.index, s);
                if was_up.is_some_and(|w| w != now_up) {
                    Change::Resync
                } else {
                    Change::Changed
                }
            }
            None => Change::None,
        },
        RouteNetlinkMessage::DelLink(l) => {
            model.del_link(l.header.index);
            Change::Changed
        }
        RouteNetlinkMessage::NewAddress(a) => match address(&a) {
            Some((ip, secondary)) => {
                model.set_addr(a.header.index, ip, a.header.prefix_len, secondary);
                Change::Changed
            }
            None => Change::None,
        },
        RouteNetlinkMessage::DelAddress(a) => match address(&a) {
            Some((ip, _)) => {
                model.del_addr(a.header.index, ip, a.header.prefix_len);
                // The kernel flushes the IPv4 routes whose preferred source
                // was this address; older kernels did so without
                // `RTM_DELROUTE` (6.18 tells).
                if ip.is_ipv4() {
                    Change::Resync
                } else {
                    Change::Changed
                }
            }
            None => Change::None,
        },
        RouteNetlinkMessage::NewRoute(r) => match route(&r) {
            Some((k, route)) => {
                model.set_route(k, route);
                Change::Changed
            }
            None => Change::None,
        },
        RouteNetlinkMessage::DelRoute(r) => match route(&r) {
            Some((k, _)) => {
                model.del_route(&k);
                Change::Changed
            }
            None => Change::None,
        },
        RouteNetlinkMessage::NewNeighbour(n) => match neighbour(&n) {
            Some((ifindex, ip, mac)) => {
                model.set_neighbour(ifindex, ip, mac);
                Change::Changed
            }
            None => Change::None,
        },
        RouteNetlinkMessage::DelNeighbour(n) => match neighbour(&n) {
            Some((ifindex, ip, _)) => {
                model.set_neighbour(ifindex, ip, None);
                Change::Changed
            }
            None => Change::None,
        },
        _ => Change::None,
    }
}

fn link_state(l: &LinkMessage) -> Option<LinkState> {
    let mut name = None;
    let mut mac = MacAddr::ZERO;
    let mut mtu = 0;
    for a in &l.attributes {
        match a {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::Address(b) => mac = MacAddr::from_bytes(b).unwrap_or(MacAddr::ZERO),
            LinkAttribute::Mtu(m) => mtu = *m,
            _ => {}
        }
    }
    let f = l.header.flags;
    let up = f.contains(LinkFlags::Up) && f.contains(LinkFlags::Running);
    Some(LinkState { name: name?, mac, mtu, up })
}

/// The address (IFA_LOCAL for IPv4, which differs from IFA_ADDRESS on
/// point-to-point links; IFA_ADDRESS for IPv6) and whether it is secondary.
fn address(a: &AddressMessage) -> Option<(IpAddr, bool)> {
    let mut local = None;
    let mut address = None;
    for attr in &a.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    let secondary = a.header.flags.contains(AddressHeaderFlags::Secondary);
    local.or(address).map(|ip| (ip, secondary))
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// A main-table route of a kind the forwarder acts on. Source-specific and
/// TOS routes and cached clones are ignored. Of a multipath route the first
/// next hop is taken (ECMP is not implemented).
fn route(r: &RouteMessage) -> Option<(RouteKey, Route)> {
    let h = &r.header;
    let kind = match h.kind {
        RouteType::Unicast => RouteKind::Unicast,
        RouteType::BlackHole => RouteKind::Blackhole,
        RouteType::Unreachable => RouteKind::Unreachable,
        RouteType::Prohibit => RouteKind::Prohibit,
        RouteType::Local => RouteKind::Local,
        _ => return None,
    };
    if h.source_prefix_length != 0 || h.tos != 0 || h.flags.contains(RouteFlags::Cloned) {
        return None;
    }
    let family_any = match h.address_family {
        AddressFamily::Inet => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        AddressFamily::Inet6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    let mut table = u32::from(h.table);
    let mut prefix = None;
    let mut ifindex = 0;
    let mut gateway = None;
    let mut mtu = None;
    let mut metric = 0;
    for a in &r.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(d) => prefix = route_addr(d),
            RouteAttribute::Oif(i) => ifindex = *i,
            RouteAttribute::Gateway(g) => gateway = route_addr(g),
            RouteAttribute::Via(RouteVia::Inet(v4)) => gateway = Some(IpAddr::V4(*v4)),
            RouteAttribute::Via(RouteVia::Inet6(v6)) => gateway = Some(IpAddr::V6(*v6)),
            RouteAttribute::Priority(p) => metric = *p,
            RouteAttribute::Metrics(ms) => {
                for m in ms {
                    if let RouteMetric::Mtu(v) = m {
                        mtu = Some(*v).filter(|v| *v > 0);
                    }
                }
            }
            RouteAttribute::MultiPath(hops) => {
                if let Some(first) = hops.first() {
                    if ifindex == 0 {
                        ifindex = first.interface_index;
                    }
                    for a in &first.attributes {
                        match a {
                            RouteAttribute::Gateway(g) if gateway.is_none() => gateway = route_addr(g),
                            RouteAttribute::Via(RouteVia::Inet6(v6)) if gateway.is_none() => {
                                gateway = Some(IpAddr::V6(*v6))
                            }
                            _ => {}
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if table != RT_TABLE_MAIN {
        return None;
    }
    let prefix = prefix.unwrap_or(family_any);
    let key = RouteKey { prefix, prefix_len: h.destination_prefix_length, tos: h.tos, metric };
    Some((key, Route { prefix, prefix_len: h.destination_prefix_length, kind, ifindex, gateway, mtu, metric }))
}

/// (ifindex, IP, MAC if usable). Entries without a destination or of other
/// families (bridge FDB) yield `None`.
fn neighbour(n: &NeighbourMessage) -> Option<(u32, IpAddr, Option<MacAddr>)> {
    if !matches!(n.header.family, AddressFamily::Inet | AddressFamily::Inet6) {
        return None;
    }
    let mut ip = None;
    let mut mac = None;
    for a in &n.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => ip = Some(IpAddr::V4(*v4)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => ip = Some(IpAddr::V6(*v6)),
            NeighbourAttribute::LinkLayerAddress(b) => mac = MacAddr::from_bytes(b),
            _ => {}
        }
    }
    let usable_mac = mac.filter(|m| !m.is_multicast() && *m != MacAddr::ZERO && usable(n.header.state));
    Some((n.header.ifindex, ip?, usable_mac))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(family: AddressFamily, index: u32) -> LinkMessage {
        let mut l = LinkMessage::default();
        l.header.interface_family = family;
        l.header.index = index;
        l.header.flags = LinkFlags::Up | LinkFlags::Running;
        l.attributes.push(LinkAttribute::IfName("p0".into()));
        l
    }

    /// A bridge's notice that a port left it (`ip link set p0 nomaster`:
    /// `RTM_DELLINK`, family AF_BRIDGE) does not delete the interface.
    #[test]
    fn a_port_leaving_a_bridge_stays_mirrored() {
        let mut model = Model::default();
        assert_eq!(apply(&mut model, RouteNetlinkMessage::NewLink(link(AddressFamily::Unspec, 7))), Change::Changed);
        assert_eq!(apply(&mut model, RouteNetlinkMessage::NewLink(link(AddressFamily::Bridge, 7))), Change::None);
        assert_eq!(apply(&mut model, RouteNetlinkMessage::DelLink(link(AddressFamily::Bridge, 7))), Change::None);
        assert!(model.links.contains_key(&7), "still there");
        apply(&mut model, RouteNetlinkMessage::DelLink(link(AddressFamily::Unspec, 7)));
        assert!(!model.links.contains_key(&7), "deleted itself");
    }
}
