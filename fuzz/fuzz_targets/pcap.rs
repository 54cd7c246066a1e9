//! `io::PcapReader` over arbitrary bytes: read every record until the end
//! or an error. Errors are fine (and their messages are formatted); panics,
//! hangs and unbounded buffering are not.
//!
//! Input: one mode byte, then the capture file.
//! - bits 0..=3: the source returns at most `1 << n` bytes per `read` call
//!   (15 = no limit), so records straddle the reader's refills;
//! - bit 4: `peek_ts` before every record, checked against the record's time;
//! - bit 5: read through `PacketIo::recv` into a `Batch` instead of `read_next`;
//! - bits 6..=7: frame buffer capacity 2048, 64, 1514 or 65,550 bytes.
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run pcap` (see fuzz/README.md).
#![no_main]

use std::io::Read;

use io::{Batch, IoError, PacketBuf, PacketIo, PcapReader};
use libfuzzer_sys::fuzz_target;

/// A byte slice that hands out at most `step` bytes per read.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.step).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

const CAPACITIES: [usize; 4] = [2048, 64, 1514, 65_550];

fuzz_target!(|input: &[u8]| {
    let Some((&mode, file)) = input.split_first() else { return };
    let step = if mode & 0x0f == 15 { usize::MAX } else { 1 << (mode & 0x0f) };
    let peek = mode & 0x10 != 0;
    let batched = mode & 0x20 != 0;
    let capacity = CAPACITIES[usize::from(mode >> 6)];

    let mut r = match PcapReader::new("fuzz.pcap", Trickle { data: file, step }) {
        Ok(r) => r,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let _ = format!("{r:?}");
    // Every record or block takes at least 12 bytes of the file, so this
    // many steps mean the reader is going round in circles.
    let max_steps = file.len() / 12 + 2;
    let mut delivered = 0u64;
    let mut steps = 0;
    let outcome = if batched {
        let mut batch = Batch::new(4, capacity);
        loop {
            steps += 1;
            assert!(steps <= max_steps, "reader loops without consuming input");
            batch.clear();
            match r.recv(&mut batch) {
                Ok(n) => {
                    assert!(n > 0 && n <= 4 && n == batch.len());
                    for f in batch.frames() {
                        assert!(f.len() <= capacity);
                    }
                    delivered += n as u64;
                }
                Err(e) => {
                    // Frames appended before an error stay in the batch.
                    delivered += batch.len() as u64;
                    if matches!(e, IoError::Eof) {
                        assert!(batch.is_empty(), "Eof with frames in the batch");
                        batch.clear();
                        assert!(matches!(r.recv(&mut batch), Err(IoError::Eof)), "Eof is sticky");
                    }
                    break e;
                }
            }
        }
    } else {
        let mut slot = PacketBuf::with_capacity(capacity);
        loop {
            steps += 1;
            assert!(steps <= max_steps, "reader loops without consuming input");
            let peeked = if peek {
                match r.peek_ts() {
                    Ok(t) => Some(t),
                    Err(e) => break e,
                }
            } else {
                None
            };
            match r.read_next(&mut slot) {
                Ok(true) => {
                    assert!(slot.len() <= capacity);
                    if let Some(t) = peeked {
                        assert_eq!(t, Some(slot.ts_ns), "peek_ts disagrees with the record read");
                    }
                    delivered += 1;
                }
                Ok(false) => {
                    if let Some(t) = peeked {
                        assert_eq!(t, None, "peek_ts saw a record that read_next did not deliver");
                    }
                    // The end is sticky.
                    assert!(matches!(r.read_next(&mut slot), Ok(false)));
                    assert!(matches!(r.peek_ts(), Ok(None)));
                    break IoError::Eof;
                }
                Err(e) => break e,
            }
        }
    };
    let _ = outcome.to_string();
    let _ = format!("{outcome:?}");
    assert_eq!(r.stats().records, delivered, "stats.records counts what was delivered");
});
