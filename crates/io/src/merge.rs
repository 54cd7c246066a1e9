//! Two timestamped sources as one stream in time order.
//!
//! A gateway sees traffic on two sides; captures of the inside and the
//! outside port are two files. `torwart replay` needs them as the gateway saw
//! them: one stream, ordered by time, each frame tagged with the port it
//! arrived on. [`Merged`] is that stream.
//!
//! Invariants:
//! - Frames come out in nondecreasing timestamp order provided each source's
//!   do (captures normally are; if one is not, its own order is kept and the
//!   merge stays well-defined, just not sorted).
//! - Stable: on equal timestamps the first source's frame comes first, and
//!   each source's frames keep their relative order.
//! - Every frame's `port` is the port given for its source, whatever the
//!   source set.
//!
//! The engine processes a batch for one port at a time, so
//! [`Merged::recv_same_port`] fills a batch with a run of consecutive frames
//! from one port and stops where the port changes.

use crate::{Batch, IoError, PacketBuf, PacketIo, PortId, TimedSource};

/// One side of the merge, with its next timestamp cached so that a source is
/// peeked once per frame, not once per comparison.
#[derive(Debug)]
struct Side<S> {
    src: S,
    port: PortId,
    /// `None`: not peeked since the last read.
    next: Option<Option<u64>>,
}

impl<S: TimedSource> Side<S> {
    fn peek(&mut self) -> Result<Option<u64>, IoError> {
        if let Some(next) = self.next {
            return Ok(next);
        }
        let next = self.src.peek_ts()?;
        self.next = Some(next);
        Ok(next)
    }

    fn read(&mut self, slot: &mut PacketBuf) -> Result<bool, IoError> {
        self.next = None;
        let got = self.src.read_next(slot)?;
        slot.port = self.port;
        Ok(got)
    }
}

/// Merges sources `A` and `B` by timestamp.
#[derive(Debug)]
pub struct Merged<A, B> {
    a: Side<A>,
    b: Side<B>,
    name: String,
}

/// Which source the next frame comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    A,
    B,
    End,
}

impl<A: TimedSource, B: TimedSource> Merged<A, B> {
    /// Merges `a` (frames tagged `a_port`) with `b` (tagged `b_port`).
    pub fn new(a: A, a_port: PortId, b: B, b_port: PortId) -> Self {
        Merged {
            a: Side { src: a, port: a_port, next: None },
            b: Side { src: b, port: b_port, next: None },
            name: format!("merge of {a_port} and {b_port}"),
        }
    }

    /// The two sources, e.g. to read their statistics.
    pub fn sources(&self) -> (&A, &B) {
        (&self.a.src, &self.b.src)
    }

    /// Gives the sources back.
    pub fn into_sources(self) -> (A, B) {
        (self.a.src, self.b.src)
    }

    fn choose(&mut self) -> Result<Next, IoError> {
        Ok(match (self.a.peek()?, self.b.peek()?) {
            (None, None) => Next::End,
            (Some(_), None) => Next::A,
            (None, Some(_)) => Next::B,
            // Ties go to A: the merge is stable.
            (Some(ta), Some(tb)) => {
                if ta <= tb {
                    Next::A
                } else {
                    Next::B
                }
            }
        })
    }

    /// The port of the next frame, or `None` at the end.
    pub fn peek_port(&mut self) -> Result<Option<PortId>, IoError> {
        Ok(match self.choose()? {
            Next::A => Some(self.a.port),
            Next::B => Some(self.b.port),
            Next::End => None,
        })
    }

    /// Fills the batch's free slots with consecutive frames that share the
    /// port of the first one, stopping where the port changes (or the batch
    /// is full). Appends only frames of the port of the batch's last frame,
    /// if it has any, so calls can top up a batch. `Eof` at the end.
    pub fn recv_same_port(&mut self, batch: &mut Batch) -> Result<usize, IoError> {
        let mut port = batch.frames().last().map(|f| f.port);
        let mut n = 0;
        while !batch.is_full() {
            let next = self.choose()?;
            let side_port = match next {
                Next::A => self.a.port,
                Next::B => self.b.port,
                Next::End if n == 0 => return Err(IoError::Eof),
                Next::End => break,
            };
            if port.is_some_and(|p| p != side_port) {
                break;
            }
            port = Some(side_port);
            let slot = batch.next_slot().expect("batch is not full");
            if self.read(next, slot)? {
                let committed = batch.commit_slot();
                debug_assert!(committed);
                n += 1;
            }
        }
        Ok(n)
    }

    fn read(&mut self, next: Next, slot: &mut PacketBuf) -> Result<bool, IoError> {
        match next {
            Next::A => self.a.read(slot),
            Next::B => self.b.read(slot),
            Next::End => Ok(false),
        }
    }
}

impl<A: TimedSource, B: TimedSource> TimedSource for Merged<A, B> {
    fn peek_ts(&mut self) -> Result<Option<u64>, IoError> {
        Ok(match self.choose()? {
            Next::A => self.a.peek()?,
            Next::B => self.b.peek()?,
            Next::End => None,
        })
    }

    fn read_next(&mut self, slot: &mut PacketBuf) -> Result<bool, IoError> {
        let next = self.choose()?;
        self.read(next, slot)
    }

    fn oversized(&self) -> u64 {
        self.a.src.oversized() + self.b.src.oversized()
    }
}

impl<A: TimedSource, B: TimedSource> PacketIo for Merged<A, B> {
    /// Fills the batch's free slots in time order, across ports; `Eof` when
    /// both sources are exhausted.
    fn recv(&mut self, batch: &mut Batch) -> Result<usize, IoError> {
        if batch.is_full() {
            return Ok(0);
        }
        match crate::fill_from(self, batch)? {
            0 => Err(IoError::Eof),
            n => Ok(n),
        }
    }

    fn send(&mut self, _frames: &[PacketBuf]) -> Result<usize, IoError> {
        Err(IoError::Unsupported { device: self.name.clone(), op: "send (it merges captures)" })
    }

    fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryIo;

    fn source(frames: &[(u8, u64)]) -> MemoryIo {
        let mut m = MemoryIo::new("src", PortId(9));
        for &(id, ts) in frames {
            m.inject(&[id], ts);
        }
        m
    }

    fn drain(m: &mut Merged<MemoryIo, MemoryIo>) -> Vec<(u8, u64, u8)> {
        let mut batch = Batch::new(3, 16);
        let mut out = Vec::new();
        loop {
            batch.clear();
            match m.recv(&mut batch) {
                Ok(_) => out.extend(batch.frames().iter().map(|f| (f.as_slice()[0], f.ts_ns, f.port.0))),
                Err(e) if e.is_eof() => return out,
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn merges_by_time_ties_first_source_first() {
        let a = source(&[(1, 10), (2, 20), (3, 20), (4, 40)]);
        let b = source(&[(11, 5), (12, 20), (13, 30), (14, 50), (15, 60)]);
        let mut m = Merged::new(a, PortId(0), b, PortId(1));
        assert_eq!(
            drain(&mut m),
            [
                (11, 5, 1),
                (1, 10, 0),
                (2, 20, 0),
                (3, 20, 0),
                (12, 20, 1),
                (13, 30, 1),
                (4, 40, 0),
                (14, 50, 1),
                (15, 60, 1),
            ]
        );
    }

    #[test]
    fn one_empty_side() {
        let mut m = Merged::new(source(&[]), PortId(0), source(&[(1, 1), (2, 2)]), PortId(1));
        assert_eq!(drain(&mut m), [(1, 1, 1), (2, 2, 1)]);
    }

    #[test]
    fn same_port_runs() {
        let a = source(&[(1, 1), (2, 2), (3, 6)]);
        let b = source(&[(11, 3), (12, 4), (13, 5)]);
        let mut m = Merged::new(a, PortId(0), b, PortId(1));
        let mut batch = Batch::new(2, 16);
        let mut runs = Vec::new();
        loop {
            batch.clear();
            match m.recv_same_port(&mut batch) {
                Ok(_) => runs.push(batch.frames().iter().map(|f| (f.port.0, f.as_slice()[0])).collect::<Vec<_>>()),
                Err(e) if e.is_eof() => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(runs, [vec![(0, 1), (0, 2)], vec![(1, 11), (1, 12)], vec![(1, 13)], vec![(0, 3)],]);
    }
}
