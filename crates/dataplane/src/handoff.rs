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

/// One worker's end of the rings to another worker.
#[derive(Debug)]
pub struct Outbox {
    frames: Producer<PacketBuf>,
    free: Consumer<PacketBuf>,
}

/// One worker's end of the rings from another worker.
#[derive(Debug)]
pub struct Inbox {
    frames: Consumer<PacketBuf>,
    free: Producer<PacketBuf>,
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
            ends[a].outboxes[b] = Some(Outbox { frames: frames_tx, free: free_rx });
            ends[b].inboxes.push(Inbox { frames: frames_rx, free: free_tx });
        }
    }
    ends
}

impl Outbox {
    /// Hands the frame in `frame` over; `frame` gets an empty buffer in
    /// exchange. Returns false (and changes nothing) if the ring is full.
    #[inline]
    pub fn send(&mut self, frame: &mut PacketBuf) -> bool {
        let Ok(mut spare) = self.free.pop() else {
            return false;
        };
        std::mem::swap(frame, &mut spare);
        // Cannot fail: the pair owns `depth` buffers and one was free.
        let _ = self.frames.push(spare);
        true
    }

    /// True when the receiving worker has stopped (dropped its end).
    pub fn is_abandoned(&self) -> bool {
        self.frames.is_abandoned()
    }
}

impl Inbox {
    /// Moves waiting frames into `batch` (as many as fit); returns how many.
    #[inline]
    pub fn recv_into(&mut self, batch: &mut Batch) -> usize {
        let mut n = 0;
        while !batch.is_full() {
            let Ok(mut frame) = self.frames.pop() else {
                break;
            };
            // Cannot fail: the batch has room. `frame` now holds the spare.
            let _ = batch.push_swap(&mut frame);
            let _ = self.free.push(frame);
            n += 1;
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
        assert!(!out.send(&mut f), "ring full");
        assert_eq!(f.as_slice(), &[7; 10], "a refused frame stays with the sender");

        let mut batch = Batch::new(4, 64);
        assert_eq!(b.inboxes[0].recv_into(&mut batch), 2);
        assert_eq!(batch[0].as_slice(), &[0; 10]);
        assert_eq!(batch[1].port, PortId(1));
        // The buffers went back: the sender can send again.
        assert!(a.outboxes[1].as_mut().unwrap().send(&mut f));
        assert!(a.outboxes[0].is_none());
    }
}
