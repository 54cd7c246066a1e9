//! The sync protocol's parsers and state machine: what the peer box (or
//! anyone on the sync link) sends. Errors are fine and counted; panics,
//! hangs and unbounded memory are not.
//!
//! Input: one mode byte, then the data.
//! - mode % 4 == 0: a datagram, opened with the box's keys (what a forger
//!   without the key reaches: length, magic, key id, tag);
//! - mode % 4 == 1: a datagram's records, decoded as if authenticated; a
//!   record that decodes encodes back to the same bytes;
//! - mode % 4 == 2: a key file;
//! - mode % 4 == 3: a peer holding the key sending anything: the data is
//!   cut into datagrams at each 0xff byte, each signed with the key and
//!   given to a `Peer`, which must stay within its bounds.
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run sync` (see fuzz/README.md).
#![no_main]

use engine::Time;
use libfuzzer_sys::fuzz_target;
use sync::message::{self, Header, Kind, HEADER_LEN, MIN_LEN};
use sync::{record, Config, Key, Keys, Peer};

fn keys() -> Keys {
    Keys::from_keys(Key::new(&[0x5a; 32]), [])
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else { return };
    match mode % 4 {
        0 => {
            if let Ok((_, _, payload)) = message::open(&keys(), data) {
                let _ = record::decode(payload, |_| {});
            }
        }
        1 => {
            let mut out = vec![0u8; record::MAX_RECORD_LEN];
            let mut at = 0;
            let _ = record::decode(data, |r| {
                let n = record::encode(&r, &mut out).expect("a record fits the largest record");
                assert_eq!(&out[..n], &data[at..at + n], "a decoded record encodes back to its bytes");
                at += n;
            });
        }
        2 => {
            if let Ok(text) = std::str::from_utf8(data) {
                let _ = Keys::parse(text);
            }
        }
        _ => {
            let keys = keys();
            let cfg = Config { send_window: 8, reorder_window: 8, queue: 64, ..Config::default() };
            let mut peer = Peer::new(cfg, keys.clone(), [1; 32], Time::from_secs(1));
            let mut buf = vec![0u8; message::MAX_LEN];
            let mut now = Time::from_secs(1);
            for chunk in data.split(|&b| b == 0xff) {
                // The first 8 bytes choose the header's fields, the rest is the payload.
                let word = |i: usize| chunk.get(i).copied().map_or(0, u64::from);
                let kind = [Kind::Hello, Kind::Data, Kind::Ack][word(0) as usize % 3];
                let status = peer.status(now);
                let h = Header {
                    sender: word(1),
                    receiver: if word(2) % 2 == 0 { status.session } else { word(2) },
                    number: word(3),
                    seq: word(4),
                    ack: word(5),
                    sack: word(6) * 0x0101_0101,
                    nonce: word(7),
                    echo: word(7),
                };
                let payload = chunk.get(8..).unwrap_or(&[]);
                let payload = if kind == Kind::Data { &payload[..payload.len().min(buf.len() - MIN_LEN)] } else { &[] };
                buf[HEADER_LEN..HEADER_LEN + payload.len()].copy_from_slice(payload);
                let n = message::seal(&keys, kind, &h, &mut buf, payload.len());
                let datagram = buf[..n].to_vec();
                peer.handle_datagram(now, &datagram, |_| {});
                while peer.poll_transmit(now, &mut buf).is_some() {}
                while peer.poll_event().is_some() {}
                now = Time(now.as_nanos() + word(0) * 1_000_000);
                let s = peer.status(now);
                assert!(s.queued <= cfg.queue && s.unacked <= cfg.send_window);
            }
        }
    }
});
