//! Frame buffers and batches: the memory every backend fills and every stage reads.
//!
//! A [`PacketBuf`] is one frame's storage with a fixed capacity chosen at
//! construction; a [`Batch`] is a fixed number of them, allocated once and then
//! reused for the life of a worker. Nothing here allocates after construction:
//! receiving a frame is a copy into a buffer that already exists, dropping one
//! is a swap, and clearing a batch only resets a counter.
//!
//! Invariants:
//! - `PacketBuf::len() <= PacketBuf::capacity()`, always; every setter checks.
//! - `Batch` holds exactly `capacity()` buffers. The first `len()` of them are
//!   the batch's frames, in arrival order; the rest are spare slots whose
//!   contents mean nothing.
//!
//! Why copies and not zero-copy? The pcap and in-memory backends read from
//! files and queues, so a copy happens anyway. The AF_XDP backend (a later
//! issue) will hand out UMEM frames; it can start in copy mode into these
//! buffers and later gain a zero-copy batch type behind the same
//! [`wire::FrameBuf`] view, which is all the engine depends on.

use crate::PortId;

/// Default capacity of one frame buffer: a 1500-byte MTU Ethernet frame with
/// VLAN tags and room to spare, rounded to the AF_XDP default frame size.
pub const DEFAULT_FRAME_CAPACITY: usize = 2048;

/// One frame: owned bytes with a fixed capacity, the frame's length, when it
/// was received and on which port.
#[derive(Clone, PartialEq, Eq)]
pub struct PacketBuf {
    data: Box<[u8]>,
    len: usize,
    /// Receive time in nanoseconds since the Unix epoch (from the capture
    /// file, or the rx time of a live port). Backends never invent it from
    /// the clock in logic code: the engine takes `now` separately.
    pub ts_ns: u64,
    /// The port the frame arrived on, or should leave by.
    pub port: PortId,
}

impl PacketBuf {
    /// An empty buffer that can hold frames of up to `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        PacketBuf { data: vec![0; capacity].into_boxed_slice(), len: 0, ts_ns: 0, port: PortId::default() }
    }

    /// The largest frame this buffer can hold.
    pub fn capacity(&self) -> usize {
        self.data.len()
    }

    /// The frame's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if the buffer holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The frame's bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.data[..self.len]
    }

    /// The frame's bytes, for rewriting in place.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.data[..self.len]
    }

    /// The whole storage, `capacity()` bytes, for a backend that writes a
    /// frame in place and then calls [`set_len`](Self::set_len).
    pub fn storage_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }

    /// Sets the frame's length. Returns false (and changes nothing) if `len`
    /// exceeds the capacity. Growing exposes whatever the storage held.
    #[must_use = "a false return means the length was not changed"]
    pub fn set_len(&mut self, len: usize) -> bool {
        if len > self.data.len() {
            return false;
        }
        self.len = len;
        true
    }

    /// Replaces the frame with a copy of `bytes`. Returns false (and leaves the
    /// buffer unchanged) if they do not fit.
    #[must_use = "a false return means nothing was copied"]
    pub fn copy_from(&mut self, bytes: &[u8]) -> bool {
        let Some(dst) = self.data.get_mut(..bytes.len()) else {
            return false;
        };
        dst.copy_from_slice(bytes);
        self.len = bytes.len();
        true
    }
}

impl Default for PacketBuf {
    fn default() -> Self {
        PacketBuf::with_capacity(DEFAULT_FRAME_CAPACITY)
    }
}

impl std::fmt::Debug for PacketBuf {
    // The storage is mostly stale bytes; show what matters.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketBuf")
            .field("len", &self.len)
            .field("capacity", &self.data.len())
            .field("ts_ns", &self.ts_ns)
            .field("port", &self.port)
            .finish()
    }
}

impl wire::FrameBuf for PacketBuf {
    fn bytes(&self) -> &[u8] {
        self.as_slice()
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        self.as_mut_slice()
    }
}

/// A fixed-capacity batch of frames, allocated once and reused.
///
/// Backends append to it ([`push_copy`](Self::push_copy), or
/// [`next_slot`](Self::next_slot) + [`commit_slot`](Self::commit_slot) to fill
/// a buffer in place); stages read and rewrite
/// [`frames_mut`](Self::frames_mut); the worker [`clear`](Self::clear)s it
/// before the next receive.
#[derive(Debug, Clone)]
pub struct Batch {
    bufs: Vec<PacketBuf>,
    len: usize,
}

impl Batch {
    /// A batch of `capacity_frames` buffers of `frame_capacity` bytes each.
    /// This is the only allocation the batch ever makes.
    pub fn new(capacity_frames: usize, frame_capacity: usize) -> Self {
        Batch { bufs: (0..capacity_frames).map(|_| PacketBuf::with_capacity(frame_capacity)).collect(), len: 0 }
    }

    /// How many frames the batch can hold.
    pub fn capacity(&self) -> usize {
        self.bufs.len()
    }

    /// How many frames it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// How many more frames fit.
    pub fn free(&self) -> usize {
        self.bufs.len() - self.len
    }

    /// True if it holds no frames.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True if no more frames fit.
    pub fn is_full(&self) -> bool {
        self.len == self.bufs.len()
    }

    /// Forgets all frames; the buffers stay allocated for reuse.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Keeps the first `len` frames (no-op if it holds fewer).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Appends a copy of `bytes`. Returns false if the batch is full or the
    /// frame does not fit a buffer; the batch is then unchanged.
    #[must_use = "a false return means the frame was not added"]
    pub fn push_copy(&mut self, bytes: &[u8], ts_ns: u64, port: PortId) -> bool {
        let Some(slot) = self.bufs.get_mut(self.len) else {
            return false;
        };
        if !slot.copy_from(bytes) {
            return false;
        }
        slot.ts_ns = ts_ns;
        slot.port = port;
        self.len += 1;
        true
    }

    /// The next free buffer, emptied, for a backend to fill in place; `None`
    /// if the batch is full. It becomes part of the batch only after
    /// [`commit_slot`](Self::commit_slot), so a backend that fails half-way
    /// leaves the batch as it was.
    pub fn next_slot(&mut self) -> Option<&mut PacketBuf> {
        let slot = self.bufs.get_mut(self.len)?;
        slot.len = 0;
        slot.ts_ns = 0;
        slot.port = PortId::default();
        Some(slot)
    }

    /// Makes the buffer last returned by [`next_slot`](Self::next_slot) part
    /// of the batch. Returns false if the batch is full.
    #[must_use = "a false return means nothing was committed"]
    pub fn commit_slot(&mut self) -> bool {
        if self.is_full() {
            return false;
        }
        self.len += 1;
        true
    }

    /// Appends the frame in `buf` by swapping buffers: `buf` gets the spare
    /// buffer the batch had in that place. No bytes are copied. Returns false
    /// (and swaps nothing) if the batch is full.
    #[must_use = "a false return means the frame was not added"]
    pub fn push_swap(&mut self, buf: &mut PacketBuf) -> bool {
        let Some(slot) = self.bufs.get_mut(self.len) else {
            return false;
        };
        std::mem::swap(slot, buf);
        self.len += 1;
        true
    }

    /// The frames, in arrival order.
    pub fn frames(&self) -> &[PacketBuf] {
        &self.bufs[..self.len]
    }

    /// The frames, for rewriting in place.
    pub fn frames_mut(&mut self) -> &mut [PacketBuf] {
        &mut self.bufs[..self.len]
    }

    /// Keeps the frames for which `keep` returns true, in their order; the
    /// others' buffers move to the spare part. `keep` sees every frame once,
    /// in order, and may rewrite it. Moves are swaps: no allocation, no copy
    /// of frame bytes.
    pub fn retain_mut<F: FnMut(&mut PacketBuf) -> bool>(&mut self, mut keep: F) {
        let mut kept = 0;
        let bufs = &mut self.bufs[..self.len];
        for i in 0..bufs.len() {
            if keep(&mut bufs[i]) {
                // Until the first frame goes, every kept one is in place:
                // no swap (three 40-byte moves) per frame of a batch that
                // keeps them all.
                if kept != i {
                    bufs.swap(kept, i);
                }
                kept += 1;
            }
        }
        self.len = kept;
    }
}

impl std::ops::Index<usize> for Batch {
    type Output = PacketBuf;
    fn index(&self, i: usize) -> &PacketBuf {
        &self.frames()[i]
    }
}

impl std::ops::IndexMut<usize> for Batch {
    fn index_mut(&mut self, i: usize) -> &mut PacketBuf {
        &mut self.frames_mut()[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::FrameBuf;

    #[test]
    fn packet_buf_checks_lengths() {
        let mut b = PacketBuf::with_capacity(4);
        assert!(b.copy_from(&[1, 2, 3]));
        assert_eq!(b.as_slice(), &[1, 2, 3]);
        assert!(!b.copy_from(&[0; 5]));
        assert_eq!(b.as_slice(), &[1, 2, 3], "a failed copy changes nothing");
        assert!(!b.set_len(5));
        assert!(b.set_len(4));
        assert_eq!(b.len(), 4);
        b.bytes_mut()[0] = 9;
        assert_eq!(b.bytes(), &[9, 2, 3, 0]);
        assert_eq!(PacketBuf::default().capacity(), DEFAULT_FRAME_CAPACITY);
    }

    #[test]
    fn batch_fills_and_reuses() {
        let mut batch = Batch::new(2, 8);
        assert!(batch.is_empty());
        assert!(batch.push_copy(&[1], 10, PortId(1)));
        assert!(!batch.push_copy(&[0; 9], 11, PortId(1)), "too long");
        let slot = batch.next_slot().unwrap();
        assert!(slot.copy_from(&[2, 2]));
        slot.ts_ns = 20;
        assert!(batch.commit_slot());
        assert!(batch.is_full());
        assert!(batch.next_slot().is_none());
        assert!(!batch.commit_slot());
        assert!(!batch.push_copy(&[3], 30, PortId(0)));
        assert_eq!(batch.frames()[0].as_slice(), &[1]);
        assert_eq!(batch.frames()[0].port, PortId(1));
        assert_eq!(batch[1].as_slice(), &[2, 2]);
        assert_eq!(batch[1].ts_ns, 20);
        batch.clear();
        assert_eq!((batch.len(), batch.free()), (0, 2));
    }

    #[test]
    fn retain_keeps_order() {
        let mut batch = Batch::new(5, 4);
        for i in 0..5u8 {
            assert!(batch.push_copy(&[i], u64::from(i), PortId(0)));
        }
        batch.retain_mut(|f| f.as_slice()[0] % 2 == 0);
        let kept: Vec<u8> = batch.frames().iter().map(|f| f.as_slice()[0]).collect();
        assert_eq!(kept, [0, 2, 4]);
        assert_eq!(batch.free(), 2);
    }
}
