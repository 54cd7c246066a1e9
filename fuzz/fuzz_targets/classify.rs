//! `classify` on arbitrary bytes, then every view accessor reachable from the
//! returned offsets: the invariants documented on `Meta` must make all of
//! them panic-free. Run: `cargo fuzz run classify fuzz/seeds`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wire::classify::{classify, L4};
use wire::{icmpv4, icmpv6, ipv4, ipv6, tcp, udp, Family};

fuzz_target!(|frame: &[u8]| {
    let Ok(m) = classify(frame) else { return };
    assert!(
        m.l3_offset <= m.l4_offset
            && m.l4_offset <= m.l3_end
            && usize::from(m.l3_end) <= frame.len()
    );
    let l3 = m.l3(frame);
    let l4 = m.l4(frame);
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
        L4::Tcp { .. } => {
            let t = tcp::Packet::new_checked(l4).expect("classify checked the TCP header");
            for o in t.option_iter() {
                let _ = o;
            }
            let _ = (t.payload().len(), t.urgent_at(), t.checksum());
        }
        L4::Udp => {
            let u = udp::Packet::new_unchecked(l4);
            let _ = (u.src_port(), u.dst_port(), u.len(), u.checksum());
        }
        L4::IcmpEcho { .. } | L4::IcmpOther { .. } | L4::IcmpError { .. } => {
            let i4 = icmpv4::Packet::new_checked(l4).expect("classify checked 8 ICMP bytes");
            let i6 = icmpv6::Packet::new_checked(l4).expect("classify checked 8 ICMP bytes");
            let _ = (
                i4.embedded(),
                i4.next_hop_mtu(),
                i6.mtu(),
                i6.nd_target(),
                i6.embedded(),
            );
            if let L4::IcmpError {
                inner_l3_offset, ..
            } = m.l4
            {
                let inner = &frame[usize::from(inner_l3_offset)..usize::from(m.l3_end)];
                match m.key.family {
                    Family::V4 => {
                        let ip = ipv4::Packet::new_unchecked(inner);
                        let _ = (ip.src_addr(), ip.dst_addr(), ip.protocol());
                    }
                    Family::V6 => {
                        let ip = ipv6::Packet::new_unchecked(inner);
                        let _ = (
                            ip.src_addr(),
                            ip.dst_addr(),
                            ipv6::walk_chain(ip.next_header(), &inner[40..]),
                        );
                    }
                }
            }
        }
        L4::Other | L4::Fragment => {}
    }
});
