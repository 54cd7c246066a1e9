//! Devices built from devices: tracing, fault injection, and a split rx/tx.
//!
//! As in smoltcp's `phy` wrappers, each wrapper is itself a [`PacketIo`], so
//! the dataplane does not know whether it runs on a bare port, a traced one
//! or one that loses packets on purpose.
//!
//! - [`Tap`] copies every frame received and every frame accepted for sending
//!   into a pcap file. It writes through a buffered writer: no syscall per
//!   frame, but a copy per frame, so it is a debugging aid, not a production
//!   path.
//! - [`Faults`] damages received frames: drops, truncations and single-bit
//!   flips, each with a configured probability, decided by a seeded xorshift
//!   generator. The same seed and input give the same damage on every run and
//!   every machine, so a failure found with it can be replayed.
//! - [`Duplex`] receives from one device and sends to another, e.g. replaying
//!   a capture into the engine while writing the output to another file.

use std::io::Write;

use crate::{Batch, IoError, PacketBuf, PacketIo, PcapWriter};

/// Traces a device into a pcap file.
#[derive(Debug)]
pub struct Tap<I, W: Write = std::io::BufWriter<std::fs::File>> {
    inner: I,
    trace: PcapWriter<W>,
}

impl<I: PacketIo, W: Write> Tap<I, W> {
    /// Wraps `inner`, writing its traffic to `trace`.
    pub fn new(inner: I, trace: PcapWriter<W>) -> Self {
        Tap { inner, trace }
    }

    /// The wrapped device.
    pub fn inner(&self) -> &I {
        &self.inner
    }

    /// The wrapped device, mutably (e.g. to inject frames into a memory
    /// device).
    pub fn inner_mut(&mut self) -> &mut I {
        &mut self.inner
    }

    /// Flushes the trace and returns both parts.
    pub fn finish(self) -> Result<(I, W), IoError> {
        Ok((self.inner, self.trace.finish()?))
    }
}

impl<I: PacketIo, W: Write> PacketIo for Tap<I, W> {
    /// Receives from the inner device, then traces the new frames. If tracing
    /// fails, the frames stay in the batch and the error is returned: a trace
    /// that silently lost frames would mislead.
    fn recv(&mut self, batch: &mut Batch) -> Result<usize, IoError> {
        let before = batch.len();
        let n = self.inner.recv(batch)?;
        for f in &batch.frames()[before..] {
            self.trace.write_frame(f.as_slice(), f.ts_ns)?;
        }
        Ok(n)
    }

    /// Sends through the inner device and traces what it accepted (the
    /// frames it refused as too long, [`PacketIo::tx_refused`], among them:
    /// which ones it does not say).
    fn send(&mut self, frames: &[PacketBuf]) -> Result<usize, IoError> {
        let n = self.inner.send(frames)?;
        for f in &frames[..n] {
            self.trace.write_frame(f.as_slice(), f.ts_ns)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> Result<(), IoError> {
        self.inner.flush()?;
        self.trace.flush()
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn ready_fd(&self) -> Option<std::os::fd::RawFd> {
        self.inner.ready_fd()
    }

    fn receive_lost(&mut self) -> u64 {
        self.inner.receive_lost()
    }

    fn tx_refused(&mut self) -> u64 {
        self.inner.tx_refused()
    }
}

/// Probabilities (each in 0.0..=1.0) that a received frame is damaged.
/// They are exclusive: a frame suffers at most one fault. If they sum to more
/// than 1, later ones get what is left (drop wins over truncate over flip).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FaultRates {
    /// The frame is removed from the batch.
    pub drop: f64,
    /// The frame is cut to a random shorter length (possibly 0).
    pub truncate: f64,
    /// One random bit of the frame is inverted.
    pub bit_flip: f64,
}

/// What [`Faults`] has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Frames it saw.
    pub seen: u64,
    /// Frames it dropped.
    pub dropped: u64,
    /// Frames it truncated.
    pub truncated: u64,
    /// Frames it flipped a bit in.
    pub flipped: u64,
}

/// Damages a device's received frames, deterministically from a seed.
#[derive(Debug)]
pub struct Faults<I> {
    inner: I,
    rng: XorShift64,
    /// Cumulative thresholds over [0, 2^64): draw < t[0] drops, < t[1]
    /// truncates, < t[2] flips. u128 so that a probability of 1 is exact.
    thresholds: [u128; 3],
    stats: FaultStats,
}

impl<I: PacketIo> Faults<I> {
    /// Wraps `inner`; `seed` picks the damage pattern.
    pub fn new(inner: I, rates: FaultRates, seed: u64) -> Self {
        let mut cumulative = 0.0;
        let thresholds = [rates.drop, rates.truncate, rates.bit_flip].map(|p| {
            // NaN and negatives count as 0; clamping keeps the sum in [0, 1].
            cumulative = (cumulative + p.max(0.0)).min(1.0);
            // Exact for 0 and 1; `as` saturates, which the clamp makes moot.
            (cumulative * 18_446_744_073_709_551_616.0) as u128
        });
        Faults { inner, rng: XorShift64::new(seed), thresholds, stats: FaultStats::default() }
    }

    /// What it has done so far.
    pub fn stats(&self) -> &FaultStats {
        &self.stats
    }

    /// The wrapped device.
    pub fn inner_mut(&mut self) -> &mut I {
        &mut self.inner
    }

    /// Decides and applies the fault for one frame; false means drop it.
    fn damage(&mut self, frame: &mut PacketBuf) -> bool {
        self.stats.seen += 1;
        let draw = u128::from(self.rng.next());
        if draw < self.thresholds[0] {
            self.stats.dropped += 1;
            return false;
        }
        if draw < self.thresholds[1] {
            let len = frame.len();
            if len > 0 {
                let cut = (self.rng.next() % len as u64) as usize;
                let shortened = frame.set_len(cut);
                debug_assert!(shortened);
                self.stats.truncated += 1;
            }
        } else if draw < self.thresholds[2] {
            let bits = frame.len() as u64 * 8;
            if bits > 0 {
                let bit = self.rng.next() % bits;
                frame.as_mut_slice()[(bit / 8) as usize] ^= 1 << (bit % 8);
                self.stats.flipped += 1;
            }
        }
        true
    }
}

impl<I: PacketIo> PacketIo for Faults<I> {
    /// Receives from the inner device, then damages the new frames; returns
    /// how many remain.
    fn recv(&mut self, batch: &mut Batch) -> Result<usize, IoError> {
        let before = batch.len();
        self.inner.recv(batch)?;
        let mut index = 0;
        batch.retain_mut(|frame| {
            let keep = index < before || self.damage(frame);
            index += 1;
            keep
        });
        Ok(batch.len() - before)
    }

    /// Sends unharmed: faults model a lossy wire into the gateway.
    fn send(&mut self, frames: &[PacketBuf]) -> Result<usize, IoError> {
        self.inner.send(frames)
    }

    fn flush(&mut self) -> Result<(), IoError> {
        self.inner.flush()
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn ready_fd(&self) -> Option<std::os::fd::RawFd> {
        self.inner.ready_fd()
    }

    fn receive_lost(&mut self) -> u64 {
        self.inner.receive_lost()
    }

    fn tx_refused(&mut self) -> u64 {
        self.inner.tx_refused()
    }
}

/// xorshift64* (Vigna, "An experimental exploration of Marsaglia's xorshift
/// generators", 2016): tiny, fast, and good enough to pick faults. Not for
/// anything an attacker may predict.
#[derive(Debug, Clone)]
struct XorShift64 {
    state: u64,
}

impl XorShift64 {
    fn new(seed: u64) -> Self {
        // Zero is xorshift's one fixed point; any other constant will do.
        XorShift64 { state: if seed == 0 { 0x9e37_79b9_7f4a_7c15 } else { seed } }
    }

    fn next(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Receives from `rx`, sends to `tx`.
#[derive(Debug)]
pub struct Duplex<Rx, Tx> {
    rx: Rx,
    tx: Tx,
    name: String,
}

impl<Rx: PacketIo, Tx: PacketIo> Duplex<Rx, Tx> {
    /// Joins a receiving and a sending device into one.
    pub fn new(rx: Rx, tx: Tx) -> Self {
        let name = format!("{} -> {}", rx.name(), tx.name());
        Duplex { rx, tx, name }
    }

    /// Gives both devices back.
    pub fn into_parts(self) -> (Rx, Tx) {
        (self.rx, self.tx)
    }

    /// The receiving device.
    pub fn rx_mut(&mut self) -> &mut Rx {
        &mut self.rx
    }

    /// The sending device.
    pub fn tx_mut(&mut self) -> &mut Tx {
        &mut self.tx
    }
}

impl<Rx: PacketIo, Tx: PacketIo> PacketIo for Duplex<Rx, Tx> {
    fn recv(&mut self, batch: &mut Batch) -> Result<usize, IoError> {
        self.rx.recv(batch)
    }

    fn send(&mut self, frames: &[PacketBuf]) -> Result<usize, IoError> {
        self.tx.send(frames)
    }

    fn flush(&mut self) -> Result<(), IoError> {
        self.tx.flush()
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn ready_fd(&self) -> Option<std::os::fd::RawFd> {
        self.rx.ready_fd()
    }

    fn receive_lost(&mut self) -> u64 {
        self.rx.receive_lost()
    }

    fn tx_refused(&mut self) -> u64 {
        self.tx.tx_refused()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemoryIo, PcapReader, PortId};

    fn faulty(seed: u64, rates: FaultRates) -> (Vec<Vec<u8>>, FaultStats) {
        let mut mem = MemoryIo::new("mem", PortId(0));
        for i in 0..200u32 {
            mem.inject(&i.to_be_bytes().repeat(4), u64::from(i));
        }
        let mut dev = Faults::new(mem, rates, seed);
        let mut batch = Batch::new(32, 64);
        let mut out = Vec::new();
        while dev.inner_mut().rx_pending() > 0 {
            batch.clear();
            dev.recv(&mut batch).unwrap();
            out.extend(batch.frames().iter().map(|f| f.as_slice().to_vec()));
        }
        (out, *dev.stats())
    }

    #[test]
    fn faults_are_deterministic_and_counted() {
        let rates = FaultRates { drop: 0.1, truncate: 0.1, bit_flip: 0.1 };
        let (a, sa) = faulty(7, rates);
        let (b, sb) = faulty(7, rates);
        assert_eq!(a, b, "same seed, same damage");
        assert_eq!(sa, sb);
        let (c, _) = faulty(8, rates);
        assert_ne!(a, c, "another seed, other damage");

        assert_eq!(sa.seen, 200);
        assert_eq!(a.len() as u64, 200 - sa.dropped);
        // Roughly 10% each; loose bounds, exact values are pinned by the seed.
        for n in [sa.dropped, sa.truncated, sa.flipped] {
            assert!((5..=40).contains(&n), "{sa:?}");
        }
        let short = a.iter().filter(|f| f.len() < 16).count() as u64;
        assert_eq!(short, sa.truncated);
    }

    #[test]
    fn faults_extremes() {
        let (none, s) = faulty(1, FaultRates::default());
        assert_eq!((none.len(), s.dropped + s.truncated + s.flipped), (200, 0));
        let (all, s) = faulty(1, FaultRates { drop: 1.0, ..FaultRates::default() });
        assert_eq!((all.len(), s.dropped), (0, 200));
    }

    #[test]
    fn faults_leave_earlier_frames_alone() {
        let mut mem = MemoryIo::new("mem", PortId(0));
        mem.inject(&[1], 0);
        let mut dev = Faults::new(mem, FaultRates { drop: 1.0, ..FaultRates::default() }, 3);
        let mut batch = Batch::new(4, 16);
        assert!(batch.push_copy(&[9], 0, PortId(0)));
        assert_eq!(dev.recv(&mut batch).unwrap(), 0);
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].as_slice(), &[9]);
    }

    #[test]
    fn tap_traces_both_directions() {
        let mut mem = MemoryIo::new("mem", PortId(0)).with_tx_ring(1);
        mem.inject(&[1; 20], 1_000);
        let trace = PcapWriter::new("trace", Vec::new()).unwrap();
        let mut tap = Tap::new(mem, trace);
        let mut batch = Batch::new(4, 64);
        assert_eq!(tap.recv(&mut batch).unwrap(), 1);
        assert!(batch.push_copy(&[2; 30], 2_000, PortId(1)));
        // The ring takes one: only the accepted frame is traced.
        assert_eq!(tap.send(batch.frames()).unwrap(), 1);
        let (_, bytes) = tap.finish().unwrap();

        let mut reader = PcapReader::new("trace", bytes.as_slice()).unwrap();
        let mut out = Batch::new(4, 64);
        assert_eq!(reader.recv(&mut out).unwrap(), 2);
        assert_eq!(out[0].as_slice(), &[1; 20]);
        assert_eq!(out[0].ts_ns, 1_000);
        assert_eq!(out[1].as_slice(), &[1; 20], "the received frame, sent back");
        assert_eq!(out[1].ts_ns, 1_000);
    }

    #[test]
    fn duplex_splits_directions() {
        let mut rx = MemoryIo::new("in", PortId(0));
        rx.inject(&[5], 1);
        let tx = MemoryIo::new("out", PortId(1));
        let mut d = Duplex::new(rx, tx);
        assert_eq!(d.name(), "in -> out");
        let mut batch = Batch::new(2, 16);
        assert_eq!(d.recv(&mut batch).unwrap(), 1);
        assert_eq!(d.send(batch.frames()).unwrap(), 1);
        let (_, mut tx) = d.into_parts();
        assert_eq!(tx.take_sent()[0].data, [5]);
    }
}
