//! The named benchmark scenarios of DESIGN.md, generated from a seed.
//!
//! A scenario is a population (members, their devices, the servers they
//! talk to), a set of established flows, and a packet sequence over them:
//! the same seed gives the same bytes on every machine. Generation is
//! deliberately outside the measured loop: the benchmark copies prepared
//! headers into its batch buffers (as a NIC writes frames into memory) and
//! runs the engine on them.
//!
//! Address plan (documented in docs/benchmarks.md):
//! * member `m` owns the IPv4 block `10.0.0.0 + 8*(m+1)` /29; device `d` is
//!   host `d + 1` in it; IPv6 prefix `2001:db8:(m>>16):(m & 0xffff)::/64`;
//! * servers are `198.19.0.0/16` and `2001:db8:ffff:<n>::1`.
//!
//! Traffic: 80 % of flows TCP, 18 % UDP, 2 % ICMP echo; 20 % IPv6. Packet
//! sizes follow an IMIX-like 64/576/1500-byte mix, skewed so that inbound
//! packets carry about 80 % of the bytes. A share of packets (1 % in the
//! campus scenarios) opens a new flow from the inside.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use serde::Serialize;
use wire::build::{self, Eth};
use wire::ethernet::MacAddr;
use wire::flow::proto;
use wire::tcp::TcpFlags;

/// Bytes of each template that a benchmark copies into a frame: every header
/// torwart reads fits (Ethernet + IPv6 + TCP is 74).
pub const HEADER_BYTES: usize = 96;

/// The parameters of a named scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    pub name: &'static str,
    pub members: u32,
    pub devices_per_member: u32,
    pub flows: u32,
    /// Shaped classes the scenario stands for (used by the shaper's benchmarks).
    pub shaped_classes: u32,
    /// New flows per 1,000 packets.
    pub new_per_mille: u32,
    /// Packets per 1,000 that are attack SYNs (spoofed, half from each side).
    pub attack_per_mille: u32,
}

pub const SCENARIOS: &[Params] = &[
    Params {
        name: "campus-2018",
        members: 6_000,
        devices_per_member: 2,
        flows: 200_000,
        shaped_classes: 24_000,
        new_per_mille: 10,
        attack_per_mille: 0,
    },
    Params {
        name: "campus-10x",
        members: 60_000,
        devices_per_member: 2,
        flows: 2_000_000,
        shaped_classes: 240_000,
        new_per_mille: 10,
        attack_per_mille: 0,
    },
    Params {
        name: "synflood",
        members: 6_000,
        devices_per_member: 2,
        flows: 200_000,
        shaped_classes: 24_000,
        new_per_mille: 10,
        attack_per_mille: 500,
    },
];

pub fn by_name(name: &str) -> Option<&'static Params> {
    SCENARIOS.iter().find(|p| p.name == name)
}

pub const INSIDE_ROUTER: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
pub const OUTSIDE_ROUTER: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x02]);
pub const BOX_INSIDE: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x11]);
pub const BOX_OUTSIDE: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x12]);

/// The Ethernet header of frames arriving from the inside / outside.
pub fn eth_from_inside() -> Eth {
    Eth { src: INSIDE_ROUTER, dst: BOX_INSIDE, vlan: None }
}

pub fn eth_from_outside() -> Eth {
    Eth { src: OUTSIDE_ROUTER, dst: BOX_OUTSIDE, vlan: None }
}

/// Device `d` of member `m`.
pub fn device_v4(m: u32, d: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000 | ((m + 1) << 3) | (d + 1))
}

pub fn device_v6(m: u32, d: u32) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, (m >> 16) as u16, m as u16, 0, 0, 0, d as u16 + 1)
}

pub fn server_v4(n: u32) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, (n >> 8) as u8, n as u8)
}

pub fn server_v6(n: u32) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0xffff, n as u16, 0, 0, 0, 1)
}

/// One connection of the scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowSpec {
    /// Position in its core's flow list.
    pub index: u32,
    pub member: u32,
    pub client: IpAddr,
    pub server: IpAddr,
    pub proto: u8,
    pub client_port: u16,
    pub server_port: u16,
    pub client_isn: u32,
    pub server_isn: u32,
}

impl FlowSpec {
    /// The packets that open this flow, in order, with the side each comes from.
    pub fn handshake(&self, out: &mut Vec<(bool, Vec<u8>)>) {
        let (ein, eout) = (eth_from_inside(), eth_from_outside());
        let mut buf = vec![0u8; 256];
        let mut push = |from_inside: bool, n: usize, buf: &[u8]| out.push((from_inside, buf[..n].to_vec()));
        match self.proto {
            proto::TCP => {
                let (c, s) = (self.client_isn, self.server_isn);
                let n = build::tcp(
                    &mut buf,
                    &ein,
                    self.client,
                    self.server,
                    self.client_port,
                    self.server_port,
                    c,
                    0,
                    TcpFlags::SYN,
                    64_240,
                    0,
                )
                .expect("fits");
                push(true, n, &buf);
                let n = build::tcp(
                    &mut buf,
                    &eout,
                    self.server,
                    self.client,
                    self.server_port,
                    self.client_port,
                    s,
                    c.wrapping_add(1),
                    TcpFlags::SYN | TcpFlags::ACK,
                    65_160,
                    0,
                )
                .expect("fits");
                push(false, n, &buf);
                let n = build::tcp(
                    &mut buf,
                    &ein,
                    self.client,
                    self.server,
                    self.client_port,
                    self.server_port,
                    c.wrapping_add(1),
                    s.wrapping_add(1),
                    TcpFlags::ACK,
                    502,
                    0,
                )
                .expect("fits");
                push(true, n, &buf);
            }
            proto::UDP => {
                let n = build::udp(&mut buf, &ein, self.client, self.server, self.client_port, self.server_port, 32)
                    .expect("fits");
                push(true, n, &buf);
                let n = build::udp(&mut buf, &eout, self.server, self.client, self.server_port, self.client_port, 32)
                    .expect("fits");
                push(false, n, &buf);
            }
            _ => {
                let n = build::icmp_echo(&mut buf, &ein, self.client, self.server, true, self.client_port, 1, 32)
                    .expect("fits");
                push(true, n, &buf);
                let n = build::icmp_echo(&mut buf, &eout, self.server, self.client, false, self.client_port, 1, 32)
                    .expect("fits");
                push(false, n, &buf);
            }
        }
    }

    /// A mid-connection packet of `frame_len` bytes (or the smallest
    /// possible), from the inside (`outbound`) or the outside.
    pub fn data_packet(&self, outbound: bool, frame_len: usize, buf: &mut [u8]) -> usize {
        let v6 = self.client.is_ipv6();
        let l3 = if v6 { 40 } else { 20 };
        let l4 = match self.proto {
            proto::TCP => 20,
            _ => 8,
        };
        let payload = frame_len.saturating_sub(14 + l3 + l4);
        let (eth, src, dst, sp, dp) = if outbound {
            (eth_from_inside(), self.client, self.server, self.client_port, self.server_port)
        } else {
            (eth_from_outside(), self.server, self.client, self.server_port, self.client_port)
        };
        let (c, s) = (self.client_isn.wrapping_add(1), self.server_isn.wrapping_add(1));
        let r = match self.proto {
            proto::TCP => {
                let (seq, ack) = if outbound { (c, s) } else { (s, c) };
                build::tcp(buf, &eth, src, dst, sp, dp, seq, ack, TcpFlags::ACK | TcpFlags::PSH, 502, payload)
            }
            proto::UDP => build::udp(buf, &eth, src, dst, sp, dp, payload),
            _ => build::icmp_echo(buf, &eth, src, dst, outbound, self.client_port, 2, payload),
        };
        r.expect("template buffer is large enough")
    }
}

/// Frame sizes and weights for each direction (IMIX-like, inbound heavy).
const OUTBOUND_SIZES: [(usize, u32); 3] = [(64, 9), (576, 2), (1500, 1)];
const INBOUND_SIZES: [(usize, u32); 3] = [(64, 2), (576, 3), (1500, 7)];

fn pick_size(rng: &mut fastrand::Rng, table: &[(usize, u32)]) -> usize {
    let total: u32 = table.iter().map(|t| t.1).sum();
    let mut x = rng.u32(0..total);
    for &(size, w) in table {
        if x < w {
            return size;
        }
        x -= w;
    }
    table[0].0
}

/// Generates `n` flows of members `members` (an iterator over member numbers
/// owned by the caller), deterministically from `rng`.
pub fn flows(p: &Params, members: &[u32], n: usize, rng: &mut fastrand::Rng) -> Vec<FlowSpec> {
    let mut ports = std::collections::HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let m = members[rng.usize(0..members.len())];
        let d = rng.u32(0..p.devices_per_member);
        let v6 = rng.u32(0..100) < 20;
        let srv = rng.u32(0..65_536);
        let (client, server) = if v6 {
            (IpAddr::V6(device_v6(m, d)), IpAddr::V6(server_v6(srv)))
        } else {
            (IpAddr::V4(device_v4(m, d)), IpAddr::V4(server_v4(srv)))
        };
        let r = rng.u32(0..100);
        let (proto_no, server_port) = match r {
            0..80 => (proto::TCP, [443u16, 443, 443, 80, 993, 22][rng.usize(0..6)]),
            80..98 => (proto::UDP, [53u16, 443, 123, 51_820][rng.usize(0..4)]),
            _ => (if v6 { proto::ICMPV6 } else { proto::ICMP }, 0),
        };
        let client_port = rng.u16(1024..=65_535);
        if !ports.insert((client, server, proto_no, client_port, server_port)) {
            continue;
        }
        out.push(FlowSpec {
            index: out.len() as u32,
            member: m,
            client,
            server,
            proto: proto_no,
            client_port,
            server_port,
            client_isn: rng.u32(..),
            server_isn: rng.u32(..),
        });
    }
    out
}

/// A prepared header: the first [`HEADER_BYTES`] of a frame and its length.
#[derive(Clone, Copy)]
pub struct Template {
    pub head: [u8; HEADER_BYTES],
    pub len: u16,
    /// Offset of the source port (ICMP: identifier) within the frame.
    pub port_at: u8,
}

impl core::fmt::Debug for Template {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Template({} bytes)", self.len)
    }
}

impl Template {
    pub fn from_frame(frame: &[u8]) -> Template {
        let mut head = [0u8; HEADER_BYTES];
        let n = frame.len().min(HEADER_BYTES);
        head[..n].copy_from_slice(&frame[..n]);
        let port_at = match wire::classify::classify(frame) {
            Ok(m) if matches!(m.l4, wire::classify::L4::IcmpEcho { .. }) => m.l4_offset + 4,
            Ok(m) => m.l4_offset,
            Err(_) => 0,
        };
        Template { head, len: frame.len() as u16, port_at: port_at as u8 }
    }
}

/// One batch of the packet sequence: all from one side.
#[derive(Clone, Debug)]
pub struct SeqBatch {
    pub from_inside: bool,
    /// Indices into [`Traffic::templates`]; with [`NEW_FLOW`] set, into
    /// [`Traffic::new_flows`] (whose source port the runner varies per lap
    /// so the flow is new every time).
    pub packets: Vec<u32>,
}

pub const NEW_FLOW: u32 = 1 << 31;

/// Everything one core needs to run a scenario.
#[derive(Debug)]
pub struct Traffic {
    pub flows: Vec<FlowSpec>,
    /// Two per flow: `2*f` outbound, `2*f + 1` inbound.
    pub templates: Vec<Template>,
    /// First packets of new flows (and attack SYNs).
    pub new_flows: Vec<Template>,
    /// Whether each new-flow template comes from the inside.
    pub new_from_inside: Vec<bool>,
    pub sequence: Vec<SeqBatch>,
    pub packets: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl Traffic {
    /// Re-addresses the inbound templates to where the flows really are on
    /// the outside: `endpoints[f]` is flow `f`'s public address and port
    /// (after NAT), `None` if it was not opened (its packets stay addressed
    /// to the private address and are dropped, as they would be).
    pub fn readdress_inbound(&mut self, endpoints: &[Option<(IpAddr, u16)>]) {
        let mut buf = vec![0u8; 2048];
        for (f, ep) in self.flows.iter().zip(endpoints) {
            let Some((addr, port)) = *ep else { continue };
            let seen = FlowSpec { client: addr, client_port: port, ..*f };
            let t = &mut self.templates[2 * (f.index as usize) + 1];
            let n = seen.data_packet(false, usize::from(t.len), &mut buf);
            *t = Template::from_frame(&buf[..n]);
        }
    }
}

/// Which established flow each packet belongs to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Locality {
    /// Any flow, uniformly: every packet's flow (and member) is cold in a
    /// large table. The worst case, and what the figures before it measured.
    #[default]
    Uniform,
    /// As traffic is: a flow's packets come in trains (a burst of a TCP
    /// window: [`TRAIN_MEAN`] packets on average, in the same batch and
    /// direction), and flows are popular by a Zipf law (exponent 1: the
    /// k-th most popular flow is k times rarer than the first), so a few
    /// flows, and their members, carry most packets.
    Realistic,
}

/// The mean length of a flow's train of packets under [`Locality::Realistic`].
pub const TRAIN_MEAN: u32 = 8;

/// Draws flow indices in `0..n` by a Zipf law of exponent 1 (rank 0 the
/// most popular): the cumulative weights, searched.
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize) -> Zipf {
        let mut sum = 0.0;
        let cumulative = (1..=n.max(1))
            .map(|k| {
                sum += 1.0 / k as f64;
                sum
            })
            .collect();
        Zipf { cumulative }
    }

    fn draw(&self, rng: &mut fastrand::Rng) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(1.0);
        let x = rng.f64() * total;
        self.cumulative.partition_point(|&c| c <= x).min(self.cumulative.len() - 1)
    }
}

/// Builds one core's traffic: `flows` established flows of `members`, and a
/// sequence of `batches` batches of `batch` packets.
pub fn traffic(p: &Params, members: &[u32], flows_n: usize, batches: usize, batch: usize, seed: u64) -> Traffic {
    traffic_with(p, members, flows_n, batches, batch, seed, Locality::Uniform)
}

/// [`traffic`], with the packets' flows drawn as `locality` says.
pub fn traffic_with(
    p: &Params,
    members: &[u32],
    flows_n: usize,
    batches: usize,
    batch: usize,
    seed: u64,
    locality: Locality,
) -> Traffic {
    let mut rng = fastrand::Rng::with_seed(seed);
    let flows = flows(p, members, flows_n, &mut rng);
    // Popularity ranks are a random permutation of the flows, so that the
    // popular ones are spread over members and the table.
    let (zipf, rank) = match locality {
        Locality::Uniform => (None, Vec::new()),
        Locality::Realistic => {
            let mut rank: Vec<usize> = (0..flows.len()).collect();
            rng.shuffle(&mut rank);
            (Some(Zipf::new(flows.len())), rank)
        }
    };
    let mut buf = vec![0u8; 2048];
    let mut templates = Vec::with_capacity(flows.len() * 2);
    for f in &flows {
        for outbound in [true, false] {
            let table = if outbound { &OUTBOUND_SIZES[..] } else { &INBOUND_SIZES[..] };
            let n = f.data_packet(outbound, pick_size(&mut rng, table), &mut buf);
            templates.push(Template::from_frame(&buf[..n]));
        }
    }

    let mut new_flows = Vec::new();
    let mut new_from_inside = Vec::new();
    let mut sequence = Vec::with_capacity(batches);
    let (mut bytes_in, mut bytes_out, mut packets) = (0u64, 0u64, 0u64);
    for _ in 0..batches {
        let from_inside = rng.bool();
        let mut pk = Vec::with_capacity(batch);
        let mut train: Option<usize> = None;
        for _ in 0..batch {
            let roll = rng.u32(0..1000);
            if roll < p.attack_per_mille {
                // A spoofed SYN: from the inside with a forged member source,
                // or from the outside at a random member device.
                let m = members[rng.usize(0..members.len())];
                let src_in = IpAddr::V4(device_v4(m, rng.u32(0..8)));
                let dst_out = IpAddr::V4(server_v4(rng.u32(0..65_536)));
                let (eth, s, d) = if from_inside {
                    (eth_from_inside(), src_in, dst_out)
                } else {
                    (eth_from_outside(), IpAddr::V4(Ipv4Addr::from(rng.u32(..))), src_in)
                };
                let n = build::tcp(&mut buf, &eth, s, d, rng.u16(1024..), 80, rng.u32(..), 0, TcpFlags::SYN, 1024, 0)
                    .expect("fits");
                pk.push(NEW_FLOW | new_flows.len() as u32);
                new_flows.push(Template::from_frame(&buf[..n]));
                new_from_inside.push(from_inside);
                packets += 1;
                continue;
            }
            // Only inside batches open flows: twice the rate there is the rate overall.
            if from_inside && roll < p.attack_per_mille + 2 * p.new_per_mille {
                let f = self::flows(p, members, 1, &mut rng)[0];
                let mut hs = Vec::new();
                f.handshake(&mut hs);
                pk.push(NEW_FLOW | new_flows.len() as u32);
                new_flows.push(Template::from_frame(&hs[0].1));
                new_from_inside.push(true);
                bytes_out += hs[0].1.len() as u64;
                packets += 1;
                continue;
            }
            let f = match (&zipf, train) {
                (None, _) => rng.usize(0..flows.len()),
                // The train goes on (on average TRAIN_MEAN packets long).
                (Some(_), Some(f)) if rng.u32(0..TRAIN_MEAN) != 0 => f,
                (Some(z), _) => rank[z.draw(&mut rng)],
            };
            train = Some(f);
            let t = 2 * f + usize::from(!from_inside);
            let len = u64::from(templates[t].len);
            if from_inside {
                bytes_out += len;
            } else {
                bytes_in += len;
            }
            packets += 1;
            pk.push(t as u32);
        }
        sequence.push(SeqBatch { from_inside, packets: pk });
    }
    Traffic { flows, templates, new_flows, new_from_inside, sequence, packets, bytes_in, bytes_out }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Realistic locality: packets come in trains of about TRAIN_MEAN, and
    /// the most popular flows carry a large share, where uniform traffic
    /// spreads them evenly.
    #[test]
    fn realistic_traffic_comes_in_trains_of_popular_flows() {
        let p = by_name("campus-2018").unwrap();
        let members: Vec<u32> = (1..=100).collect();
        let share_of_top = |t: &Traffic| {
            let mut count = vec![0u32; t.templates.len()];
            let mut n = 0;
            for b in &t.sequence {
                for &k in b.packets.iter().filter(|&&k| k & NEW_FLOW == 0) {
                    count[(k / 2) as usize] += 1;
                    n += 1;
                }
            }
            count.sort_unstable_by(|a, b| b.cmp(a));
            f64::from(count[..100].iter().sum::<u32>()) / f64::from(n)
        };
        let runs = |t: &Traffic| {
            let (mut packets, mut trains) = (0u32, 0u32);
            for b in &t.sequence {
                let flows: Vec<u32> = b.packets.iter().filter(|&&k| k & NEW_FLOW == 0).map(|k| k / 2).collect();
                packets += flows.len() as u32;
                trains += flows.windows(2).filter(|w| w[0] != w[1]).count() as u32 + u32::from(!flows.is_empty());
            }
            f64::from(packets) / f64::from(trains)
        };
        let uniform = traffic_with(p, &members, 10_000, 200, 32, 1, Locality::Uniform);
        let realistic = traffic_with(p, &members, 10_000, 200, 32, 1, Locality::Realistic);
        assert!(share_of_top(&uniform) < 0.1, "uniform: {}", share_of_top(&uniform));
        // The top 1 % of 10,000 flows under Zipf(1): H(100) / H(10,000), about 0.53.
        assert!(share_of_top(&realistic) > 0.4, "realistic: {}", share_of_top(&realistic));
        assert!(runs(&uniform) < 1.1, "uniform trains: {}", runs(&uniform));
        let mean = runs(&realistic);
        assert!((4.0..=10.0).contains(&mean), "realistic trains: {mean}");
    }
}
