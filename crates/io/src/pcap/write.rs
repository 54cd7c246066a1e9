//! Writing Ethernet pcap files with nanosecond timestamps.
//!
//! The format is simple enough to emit directly (a 24-byte file header, a
//! 16-byte header per record), which keeps the writer allocation-free and
//! lets `flush` reach the underlying writer. Output is little-endian whatever
//! the host, so the same frames always give the same bytes.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::{Batch, IoError, PacketBuf, PacketIo};

/// pcap magic for nanosecond timestamps (as written in little-endian it
/// reads 4d 3c b2 a1).
const MAGIC_NANOS: u32 = 0xa1b2_3c4d;
const VERSION_MAJOR: u16 = 2;
const VERSION_MINOR: u16 = 4;
/// What we declare as snaplen: tcpdump's default, larger than any frame we
/// forward, so readers never think our records were cut.
const SNAPLEN: u32 = 262_144;
const LINKTYPE_ETHERNET: u32 = 1;
const NANOS_PER_SEC: u64 = 1_000_000_000;

/// A pcap sink: every frame sent is appended as a record.
pub struct PcapWriter<W: Write = BufWriter<File>> {
    path: String,
    out: W,
    frames: u64,
}

impl PcapWriter<BufWriter<File>> {
    /// Creates (or truncates) the file at `path` and writes the file header.
    pub fn create(path: impl AsRef<Path>) -> Result<Self, IoError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let file = File::create(path).map_err(|source| IoError::File { op: "create", path: name.clone(), source })?;
        PcapWriter::new(name, BufWriter::with_capacity(1 << 16, file))
    }
}

impl<W: Write> PcapWriter<W> {
    /// Writes the file header to `out`; `name` is used in errors.
    pub fn new(name: impl Into<String>, out: W) -> Result<Self, IoError> {
        let mut w = PcapWriter { path: name.into(), out, frames: 0 };
        let mut header = [0u8; 24];
        header[0..4].copy_from_slice(&MAGIC_NANOS.to_le_bytes());
        header[4..6].copy_from_slice(&VERSION_MAJOR.to_le_bytes());
        header[6..8].copy_from_slice(&VERSION_MINOR.to_le_bytes());
        // 8..16: thiszone and sigfigs, zero as the format asks.
        header[16..20].copy_from_slice(&SNAPLEN.to_le_bytes());
        header[20..24].copy_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        w.write_all(&header)?;
        Ok(w)
    }

    /// Appends one Ethernet frame received or sent at `ts_ns`.
    pub fn write_frame(&mut self, frame: &[u8], ts_ns: u64) -> Result<(), IoError> {
        let number = self.frames + 1;
        let secs = u32::try_from(ts_ns / NANOS_PER_SEC).map_err(|_| IoError::Unwritable {
            path: self.path.clone(),
            frame: number,
            detail: format!("timestamp {ts_ns} ns is after 2106, beyond pcap's 32-bit seconds"),
        })?;
        let len = u32::try_from(frame.len()).ok().filter(|&l| l <= SNAPLEN).ok_or_else(|| IoError::Unwritable {
            path: self.path.clone(),
            frame: number,
            detail: format!("{} bytes exceed the snaplen of {SNAPLEN}", frame.len()),
        })?;
        // Below 10^9, so it fits.
        let nanos = (ts_ns % NANOS_PER_SEC) as u32;
        let mut header = [0u8; 16];
        header[0..4].copy_from_slice(&secs.to_le_bytes());
        header[4..8].copy_from_slice(&nanos.to_le_bytes());
        header[8..12].copy_from_slice(&len.to_le_bytes());
        header[12..16].copy_from_slice(&len.to_le_bytes());
        self.write_all(&header)?;
        self.write_all(frame)?;
        self.frames = number;
        Ok(())
    }

    /// How many frames were written.
    pub fn frames_written(&self) -> u64 {
        self.frames
    }

    /// Pushes buffered records to the underlying writer.
    pub fn flush(&mut self) -> Result<(), IoError> {
        self.out.flush().map_err(|source| IoError::File { op: "flush", path: self.path.clone(), source })
    }

    /// Flushes and returns the underlying writer (for a file, dropping it
    /// closes it).
    pub fn finish(mut self) -> Result<W, IoError> {
        self.flush()?;
        Ok(self.out)
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<(), IoError> {
        self.out.write_all(bytes).map_err(|source| IoError::File { op: "write", path: self.path.clone(), source })
    }
}

impl<W: Write> PacketIo for PcapWriter<W> {
    /// A writer has nothing to receive.
    fn recv(&mut self, _batch: &mut Batch) -> Result<usize, IoError> {
        Err(IoError::Unsupported { device: self.path.clone(), op: "receive (it is a pcap writer)" })
    }

    /// Writes all frames (a file never pushes back); stops at the first error,
    /// after the frames before it were written.
    fn send(&mut self, frames: &[PacketBuf]) -> Result<usize, IoError> {
        for f in frames {
            self.write_frame(f.as_slice(), f.ts_ns)?;
        }
        Ok(frames.len())
    }

    fn flush(&mut self) -> Result<(), IoError> {
        PcapWriter::flush(self)
    }

    fn name(&self) -> &str {
        &self.path
    }
}

impl<W: Write> std::fmt::Debug for PcapWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcapWriter").field("path", &self.path).field("frames", &self.frames).finish_non_exhaustive()
    }
}
