//! Handoff rings: how a frame that arrived on one core reaches the core
//! that owns its member.
//!
//! Every member is owned by exactly one worker (DESIGN.md, "member
//! affinity"), but a NIC spreads frames over queues by its own hash, so a
//! frame can arrive on the wrong core. It then crosses over through a
//! single-producer single-consumer ring, as VPP's NAT handoff does, and every
//! crossing is counted: same core, handed off, or dropped because the ring
//! was full (a named drop reason, never a wait).
//!
//! Between two workers `a → b` there are two rings: `frames` carries filled
//! buffers from `a` to `b`, and `free` carries empty buffers back. Buffers
//! move, bytes are never copied: the sender swaps a free buffer into its
//! batch in place of the frame, the receiver swaps the frame into its batch
//! and sends back the buffer it displaced. Each pair owns exactly `depth`
//! buffers, so the `frames` ring can never overflow: a sender without a
//! free buffer is the "ring full" case.
//!
//! Rings are [`rtrb`]'s wait-free SPSC queues; nothing here locks or
//! allocates after [`mesh`] built them.

use io::{Batch, PacketBuf};
use rtrb::{Consumer, Producer, RingBuffer};

/// Most frames moved through a ring in one chunk (one pair of index updates).
const CHUNK: usize = 256;

/// One worker's end of the rings to another worker.
#[derive(Debug)]
pub struct Outbox {
    frames: Producer<PacketBuf>,
    free: Consumer<PacketBuf>,
    /// Filled frames waiting for [`Outbox::flush`] (one ring update per batch).
    stage: Vec<PacketBuf>,
    /// Free buffers taken from the ring in one chunk, for the next sends.
    spares: Vec<PacketBuf>,
}

/// One worker's end of the rings from another worker.
#[derive(Debug)]
pub struct Inbox {
    frames: Consumer<PacketBuf>,
    free: Producer<PacketBuf>,
    /// Displaced buffers going back, in one chunk.
    returns: Vec<PacketBuf>,
}

/// A worker's handoff ends: an outbox per other worker (indexed by worker,
/// `None` for itself) and an inbox per other worker.
#[derive(Debug)]
pub struct Handoff {
    pub(crate) outboxes: Vec<Option<Outbox>>,
    pub(crate) inboxes: Vec<Inbox>,
}

/// The rings between `workers` workers, `depth` frames deep per direction
/// and pair, with buffers of `frame_capacity` bytes: element `i` belongs to
/// worker `i`.
pub fn mesh(workers: usize, depth: usize, frame_capacity: usize) -> Vec<Handoff> {
    let mut ends: Vec<Handoff> =
        (0..workers).map(|_| Handoff { outboxes: (0..workers).map(|_| None).collect(), inboxes: Vec::new() }).collect();
    for a in 0..workers {
        for b in 0..workers {
            if a == b {
                continue;
            }
            let (frames_tx, frames_rx) = RingBuffer::<PacketBuf>::new(depth);
            let (mut free_tx, free_rx) = RingBuffer::<PacketBuf>::new(depth);
            for _ in 0..depth {
                // Cannot fail: the ring was just made `depth` deep.
                let _ = free_tx.push(PacketBuf::with_capacity(frame_capacity));
            }
            let chunk = CHUNK.min(depth);
            ends[a].outboxes[b] = Some(Outbox {
                frames: frames_tx,
                free: free_rx,
                stage: Vec::with_capacity(depth),
                spares: Vec::with_capacity(chunk),
            });
            ends[b].inboxes.push(Inbox { frames: frames_rx, free: free_tx, returns: Vec::with_capacity(chunk) });
        }
    }
    ends
}

impl Outbox {
    /// Hands the frame in `frame` over (at the next [`Outbox::flush`]);
    /// `frame` gets an empty buffer in exchange. Returns false (and changes
    /// nothing) if no free buffer is left: the ring is full.
    #[inline]
    pub fn send(&mut self, frame: &mut PacketBuf) -> bool {
        if self.spares.is_empty() {
            let n = self.free.slots().min(self.spares.capacity());
            if let Ok(chunk) = self.free.read_chunk(n) {
                self.spares.extend(chunk);
            }
        }
        let Some(mut spare) = self.spares.pop() else {
            return false;
        };
        std::mem::swap(frame, &mut spare);
        self.stage.push(spare);
        true
    }

    /// Publishes the staged frames to the receiving worker in one chunk.
    #[inline]
    pub fn flush(&mut self) {
        let n = self.stage.len();
        if n == 0 {
            return;
        }
        // Cannot fail: the pair owns `depth` buffers, so the frames ring
        // (`depth` deep) has room for every buffer this side holds.
        if let Ok(chunk) = self.frames.write_chunk_uninit(n) {
            chunk.fill_from_iter(self.stage.drain(..));
        }
    }

    /// Free buffers: how many frames can be handed over now.
    #[inline]
    pub fn room(&self) -> usize {
        self.free.slots() + self.spares.len()
    }

    /// Whether `n` frames can be handed over now. The spares in hand
    /// usually answer it; only when they do not is the free ring's index
    /// read, a line the other core writes (a miss whenever it has).
    #[inline]
    pub fn has_room(&self, n: usize) -> bool {
        self.spares.len() >= n || self.room() >= n
    }

    /// True when the receiving worker has stopped (dropped its end).
    pub fn is_abandoned(&self) -> bool {
        self.frames.is_abandoned()
    }

    /// Frames handed over that the receiving worker, now stopped, never
    /// took (0 while it runs).
    pub fn stranded(&self) -> usize {
        if !self.is_abandoned() {
            return 0;
        }
        self.frames.buffer().capacity() - self.frames.slots() + self.stage.len()
    }
}

impl Inbox {
    /// Moves waiting frames into `batch` (as many as fit); returns how many.
    #[inline]
    pub fn recv_into(&mut self, batch: &mut Batch) -> usize {
        let n = self.frames.slots().min(batch.free()).min(self.returns.capacity());
        if n == 0 {
            return 0;
        }
        let Ok(chunk) = self.frames.read_chunk(n) else { return 0 };
        for mut frame in chunk {
            // Cannot fail: the batch has room. `frame` now holds the spare.
            let _ = batch.push_swap(&mut frame);
            self.returns.push(frame);
        }
        // Cannot fail: the free ring has room for every buffer of the pair.
        if let Ok(chunk) = self.free.write_chunk_uninit(self.returns.len()) {
            chunk.fill_from_iter(self.returns.drain(..));
        }
        n
    }

    /// Frames waiting.
    pub fn waiting(&self) -> usize {
        self.frames.slots()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use io::PortId;

    #[test]
    fn frames_cross_without_copies_and_a_full_ring_refuses() {
        let mut ends = mesh(2, 2, 64);
        let mut b = ends.pop().unwrap();
        let mut a = ends.pop().unwrap();
        let out = a.outboxes[1].as_mut().unwrap();
        let mut f = PacketBuf::with_capacity(64);
        for i in 0..2u8 {
            assert!(f.copy_from(&[i; 10]));
            f.port = PortId(i);
            assert!(out.send(&mut f));
            assert!(f.is_empty() || f.as_slice() != [i; 10], "sender got another buffer");
        }
        assert!(f.copy_from(&[7; 10]));
        assert_eq!(out.room(), 0);
        assert!(out.has_room(0) && !out.has_room(1));
        assert!(!out.send(&mut f), "ring full");
        assert_eq!(f.as_slice(), &[7; 10], "a refused frame stays with the sender");
        let mut early = Batch::new(4, 64);
        assert_eq!(b.inboxes[0].recv_into(&mut early), 0, "nothing is visible before the flush");
        out.flush();

        let mut batch = Batch::new(4, 64);
        assert_eq!(b.inboxes[0].recv_into(&mut batch), 2);
        assert_eq!(batch[0].as_slice(), &[0; 10]);
        assert_eq!(batch[1].port, PortId(1));
        // The buffers went back: the sender can send again.
        let out = a.outboxes[1].as_mut().unwrap();
        assert_eq!(out.room(), 2);
        assert!(out.has_room(2) && !out.has_room(3), "the free ring is read when the spares fall short");
        assert!(out.send(&mut f));
        assert!(out.has_room(1) && !out.has_room(2), "one spare in hand, one sent");
        assert!(a.outboxes[0].is_none());
        // The receiving worker stops: what it never took is stranded, counted
        // by the sender (one flushed, one staged).
        let out = a.outboxes[1].as_mut().unwrap();
        assert_eq!(out.stranded(), 0, "while it runs, nothing is");
        out.flush();
        assert!(out.send(&mut f));
        drop(b);
        let out = a.outboxes[1].as_mut().unwrap();
        assert_eq!(out.stranded(), 2);
    }
}
