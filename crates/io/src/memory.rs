//! An in-memory device for tests: frames go in through [`MemoryIo::inject`]
//! and come out of [`MemoryIo::take_sent`].
//!
//! It behaves like a real port as far as the [`PacketIo`] contract goes:
//! `recv` copies into the caller's batch and returns `Ok(0)` when the rx queue
//! is empty (or `Eof` once [`MemoryIo::close_rx`] was called and the queue has
//! drained), and an optional tx ring size makes `send` accept fewer frames
//! than offered, as a full AF_XDP tx ring would, until the test drains the
//! ring with `take_sent`. It allocates per frame, which is fine for tests and
//! the reason it is not a production backend.

use std::collections::VecDeque;

use crate::{Batch, IoError, PacketBuf, PacketIo, PortId, TimedSource};

/// A frame held by [`MemoryIo`]: exactly its bytes, with time and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The frame's bytes.
    pub data: Vec<u8>,
    /// Nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// The port it arrived on or was sent to.
    pub port: PortId,
}

/// In-memory rx queue and tx log.
#[derive(Debug)]
pub struct MemoryIo {
    name: String,
    port: PortId,
    rx: VecDeque<Frame>,
    injected: u64,
    received: u64,
    rx_closed: bool,
    tx: Vec<Frame>,
    tx_ring: Option<usize>,
}

impl MemoryIo {
    /// An empty device; injected frames arrive on `port`.
    pub fn new(name: impl Into<String>, port: PortId) -> Self {
        MemoryIo {
            name: name.into(),
            port,
            rx: VecDeque::new(),
            injected: 0,
            received: 0,
            rx_closed: false,
            tx: Vec::new(),
            tx_ring: None,
        }
    }

    /// Limits the tx log to `slots` frames, like a tx ring the NIC has not
    /// drained: `send` accepts only what fits, [`take_sent`](Self::take_sent)
    /// frees the slots.
    pub fn with_tx_ring(mut self, slots: usize) -> Self {
        self.tx_ring = Some(slots);
        self
    }

    /// Queues a frame for `recv`, on this device's port.
    pub fn inject(&mut self, frame: &[u8], ts_ns: u64) {
        let port = self.port;
        self.inject_on(frame, ts_ns, port);
    }

    /// Queues a frame for `recv`, tagged with `port`.
    pub fn inject_on(&mut self, frame: &[u8], ts_ns: u64, port: PortId) {
        self.injected += 1;
        self.rx.push_back(Frame { data: frame.to_vec(), ts_ns, port });
    }

    /// Declares that nothing more will be injected: once the queue drains,
    /// `recv` returns `Eof` instead of `Ok(0)`.
    pub fn close_rx(&mut self) {
        self.rx_closed = true;
    }

    /// How many injected frames `recv` has not delivered yet.
    pub fn rx_pending(&self) -> usize {
        self.rx.len()
    }

    /// Everything sent since the last call, in order; frees the tx ring.
    pub fn take_sent(&mut self) -> Vec<Frame> {
        std::mem::take(&mut self.tx)
    }

    fn pop_into(&mut self, slot: &mut PacketBuf) -> Result<bool, IoError> {
        let Some(front) = self.rx.front() else {
            return Ok(false);
        };
        if !slot.copy_from(&front.data) {
            // The frame stays queued: the error is the test's to see.
            return Err(IoError::FrameTooLarge {
                len: front.data.len(),
                capacity: slot.capacity(),
                record: self.received + 1,
                origin: self.name.clone(),
            });
        }
        slot.ts_ns = front.ts_ns;
        slot.port = front.port;
        self.rx.pop_front();
        self.received += 1;
        Ok(true)
    }
}

impl PacketIo for MemoryIo {
    fn recv(&mut self, batch: &mut Batch) -> Result<usize, IoError> {
        if self.rx.is_empty() && self.rx_closed {
            return Err(IoError::Eof);
        }
        crate::fill_from(self, batch)
    }

    fn send(&mut self, frames: &[PacketBuf]) -> Result<usize, IoError> {
        let room = match self.tx_ring {
            Some(slots) => slots.saturating_sub(self.tx.len()),
            None => usize::MAX,
        };
        let accepted = frames.len().min(room);
        self.tx.extend(frames[..accepted].iter().map(|f| Frame {
            data: f.as_slice().to_vec(),
            ts_ns: f.ts_ns,
            port: f.port,
        }));
        Ok(accepted)
    }

    fn name(&self) -> &str {
        &self.name
    }
}

impl TimedSource for MemoryIo {
    fn peek_ts(&mut self) -> Result<Option<u64>, IoError> {
        Ok(self.rx.front().map(|f| f.ts_ns))
    }

    fn read_next(&mut self, slot: &mut PacketBuf) -> Result<bool, IoError> {
        self.pop_into(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recv_delivers_in_order_and_respects_batch_room() {
        let mut io = MemoryIo::new("mem", PortId(3));
        for i in 0..5u8 {
            io.inject(&[i; 3], u64::from(i) * 10);
        }
        let mut batch = Batch::new(3, 64);
        assert_eq!(io.recv(&mut batch).unwrap(), 3);
        assert_eq!(io.recv(&mut batch).unwrap(), 0, "batch full");
        assert_eq!(batch[2].as_slice(), &[2, 2, 2]);
        assert_eq!(batch[2].ts_ns, 20);
        assert_eq!(batch[2].port, PortId(3));
        batch.clear();
        assert_eq!(io.recv(&mut batch).unwrap(), 2);
        assert_eq!(io.recv(&mut batch).unwrap(), 0, "empty, not closed");
        io.close_rx();
        assert!(io.recv(&mut batch).unwrap_err().is_eof());
    }

    #[test]
    fn send_limit_acts_like_a_full_ring() {
        let mut io = MemoryIo::new("mem", PortId(0)).with_tx_ring(3);
        let mut batch = Batch::new(5, 64);
        for i in 0..5u8 {
            assert!(batch.push_copy(&[i], 0, PortId(1)));
        }
        assert_eq!(io.send(batch.frames()).unwrap(), 3);
        assert_eq!(io.send(&batch.frames()[3..]).unwrap(), 0, "ring still full");
        let sent = io.take_sent();
        assert_eq!(sent.len(), 3);
        assert_eq!(sent[2].data, [2]);
        assert_eq!(sent[2].port, PortId(1));
        assert_eq!(io.send(&batch.frames()[3..]).unwrap(), 2, "drained ring has room");
        assert_eq!(io.take_sent()[1].data, [4]);
    }

    #[test]
    fn oversize_frame_is_an_error_naming_the_frame() {
        let mut io = MemoryIo::new("mem", PortId(0));
        io.inject(&[0; 10], 0);
        io.inject(&[0; 100], 0);
        let mut batch = Batch::new(4, 64);
        let err = io.recv(&mut batch).unwrap_err();
        assert_eq!(batch.len(), 1, "frames before the bad one stay");
        assert_eq!(err.to_string(), "frame of 100 bytes does not fit the 64-byte buffer (record 2 of \"mem\")");
    }
}

/// A [`MemoryIo`] shared between the worker that owns it as a port and the
/// test or replay that fills and drains it (through a mutex: for tests and
/// replay, never a production backend).
#[derive(Clone, Debug)]
pub struct SharedMemoryIo(std::sync::Arc<std::sync::Mutex<MemoryIo>>);

impl SharedMemoryIo {
    pub fn new(io: MemoryIo) -> Self {
        SharedMemoryIo(std::sync::Arc::new(std::sync::Mutex::new(io)))
    }

    /// Runs `f` on the device.
    pub fn with<R>(&self, f: impl FnOnce(&mut MemoryIo) -> R) -> R {
        let mut io = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut io)
    }

    pub fn inject(&self, frame: &[u8], ts_ns: u64) {
        self.with(|io| io.inject(frame, ts_ns));
    }

    pub fn take_sent(&self) -> Vec<Frame> {
        self.with(MemoryIo::take_sent)
    }
}

impl PacketIo for SharedMemoryIo {
    fn recv(&mut self, batch: &mut Batch) -> Result<usize, IoError> {
        self.with(|io| io.recv(batch))
    }

    fn send(&mut self, frames: &[PacketBuf]) -> Result<usize, IoError> {
        self.with(|io| io.send(frames))
    }

    fn name(&self) -> &str {
        "shared memory"
    }
}
