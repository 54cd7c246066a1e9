//! `classify` on arbitrary bytes, then every view accessor reachable from the
//! returned offsets: the invariants documented on `Meta` must make all of
//! them panic-free. Also checks that `classify_into` over a stale `Meta`
//! (as the engine reuses them) gives the same answer as a fresh `classify`.
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run classify` (see fuzz/README.md).
#![no_main]

use core::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use wire::classify::{classify, classify_into, Fragment, Meta, L4};
use wire::{icmpv4, icmpv6, ipv4, ipv6, tcp, udp, Family, FlowKey, TcpFlags};

/// A `Meta` with every field set to something a real frame could leave behind.
const STALE: Meta = Meta {
    vlan: Some(0xfff),
    l3_offset: 0xfff0,
    l4_offset: 0xfff8,
    l3_end: 0xffff,
    key: FlowKey::v4(Ipv4Addr::new(1, 2, 3, 4), Ipv4Addr::new(5, 6, 7, 8), 6, 9, 10),
    frag: Some(Fragment { ident: 7, offset: 1480, more: true, data_offset: 34 }),
    l4: L4::Tcp { flags: TcpFlags::SYN, seq: 1, ack: 2, window: 3, payload_len: 4, wscale: Some(7) },
    ttl: 1,
    ecn: 3,
};

fn fieldwise_eq(a: &FlowKey, b: &FlowKey) -> bool {
    a.src == b.src
        && a.dst == b.dst
        && a.src_port == b.src_port
        && a.dst_port == b.dst_port
        && a.proto == b.proto
        && a.family == b.family
}

fuzz_target!(|frame: &[u8]| {
    let fresh = classify(frame);
    let mut reused = STALE;
    let again = classify_into(frame, &mut reused);
    assert_eq!(fresh.is_ok(), again.is_ok(), "classify and classify_into disagree");
    if let (Err(a), Err(b)) = (fresh, again) {
        assert_eq!(a, b);
    }
    let Ok(m) = fresh else { return };
    assert_eq!(m, reused, "classify_into left a stale field");

    // FlowKey equality (word-wise) must agree with field-wise equality.
    let r = m.key.reversed();
    assert!(r.reversed() == m.key);
    assert_eq!(r == m.key, fieldwise_eq(&r, &m.key));
    if let L4::IcmpError { inner, .. } = m.l4 {
        assert_eq!(inner == m.key, fieldwise_eq(&inner, &m.key));
        assert_eq!(inner.reversed() == m.key, fieldwise_eq(&inner.reversed(), &m.key));
    }

    assert!(
        m.l3_offset <= m.l4_offset
            && m.l4_offset <= m.l3_end
            && usize::from(m.l3_end) <= frame.len()
    );
    let l3 = m.l3(frame);
    let l4 = m.l4(frame);
    assert_eq!(l3.len(), usize::from(m.l3_end - m.l3_offset));
    assert_eq!(l4.len(), usize::from(m.l3_end - m.l4_offset));
    let _ = m.is_later_fragment();
    match m.key.family {
        Family::V4 => {
            let ip = ipv4::Packet::new_checked(l3).expect("classify checked the IPv4 header");
            assert!(ip.verify_checksum());
            for o in ip.option_iter() {
                let _ = o;
            }
            let _ = (ip.payload().len(), ip.dscp(), ip.ident(), ip.frag_offset());
        }
        Family::V6 => {
            let ip = ipv6::Packet::new_checked(l3).expect("classify checked the IPv6 header");
            let chain = ip.walk_chain().expect("classify walked this chain");
            if chain.ext_count > 0 && ipv6::is_extension(ip.next_header()) {
                if let Ok(h) = ipv6::OptionsHeader::new_checked(ip.payload()) {
                    for o in h.option_iter() {
                        let _ = o;
                    }
                }
            }
            let _ = (ip.flow_label(), ip.traffic_class());
        }
    }
    match m.l4 {
        L4::Tcp { payload_len, .. } => {
            let t = tcp::Packet::new_checked(l4).expect("classify checked the TCP header");
            for o in t.option_iter() {
                let _ = o;
            }
            assert_eq!(usize::from(payload_len), t.payload().len());
            let _ = (t.urgent_at(), t.checksum(), tcp::window_scale(t.options()));
        }
        L4::Udp => {
            assert!(l4.len() >= udp::HEADER_LEN, "classify promised 8 UDP bytes");
            let u = udp::Packet::new_unchecked(l4);
            let _ = (u.src_port(), u.dst_port(), u.len(), u.checksum());
        }
        L4::IcmpEcho { .. } | L4::IcmpOther { .. } | L4::IcmpError { .. } => {
            let i4 = icmpv4::Packet::new_checked(l4).expect("classify checked 8 ICMP bytes");
            let i6 = icmpv6::Packet::new_checked(l4).expect("classify checked 8 ICMP bytes");
            let _ = (i4.embedded(), i4.next_hop_mtu(), i6.mtu(), i6.nd_target(), i6.embedded());
            if let L4::IcmpError { inner_l3_offset, .. } = m.l4 {
                assert!(inner_l3_offset >= m.l4_offset && inner_l3_offset <= m.l3_end);
                let inner = &frame[usize::from(inner_l3_offset)..usize::from(m.l3_end)];
                match m.key.family {
                    Family::V4 => {
                        // Documented: the quoted header and 8 bytes lie within l3_end.
                        let ip = ipv4::Packet::new_unchecked(inner);
                        let hl = usize::from(inner[0] & 0x0f) * 4;
                        assert!(hl + 8 <= inner.len(), "quoted IPv4 header + 8 bytes beyond l3_end");
                        let _ = (ip.src_addr(), ip.dst_addr(), ip.protocol(), ip.header_len());
                    }
                    Family::V6 => {
                        assert!(inner.len() >= ipv6::HEADER_LEN + 8, "quoted IPv6 header + 8 bytes beyond l3_end");
                        let ip = ipv6::Packet::new_unchecked(inner);
                        let _ = (
                            ip.src_addr(),
                            ip.dst_addr(),
                            ipv6::walk_chain(ip.next_header(), &inner[ipv6::HEADER_LEN..]),
                        );
                    }
                }
            }
        }
        L4::Other | L4::Fragment => {}
    }
});
