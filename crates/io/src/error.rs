//! The crate's one error type.
//!
//! Every message names what the operator has to look at: the file, the
//! record number (1-based, as Wireshark numbers frames) and the numbers that
//! disagree. `Eof` is not a failure but the end of a finite source; it is an
//! error variant so that a replay loop can stop with `?`-free matching.

/// What went wrong in packet I/O.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IoError {
    /// A finite source (a capture file, a merge of them) has no more frames.
    #[error("end of input")]
    Eof,

    /// An operating-system I/O error on a named file or device.
    #[error("cannot {op} \"{path}\": {source}")]
    File {
        /// What we were doing: "open", "read", "create", "write", "flush".
        op: &'static str,
        /// The file or device.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },

    /// The file does not start with a pcap or pcapng header.
    #[error("\"{path}\" is not a pcap or pcapng file: {detail}")]
    NotCapture {
        /// The file.
        path: String,
        /// Why not.
        detail: String,
    },

    /// The capture's link type is not one torwart can turn into Ethernet.
    #[error("unsupported link type {link_type} in \"{path}\" (supported: Ethernet, Linux cooked SLL/SLL2, raw IP)")]
    UnsupportedLinkType {
        /// The file.
        path: String,
        /// The LINKTYPE_ number from the file.
        link_type: u32,
    },

    /// The file ends in the middle of a record.
    #[error("{format} file \"{path}\": record {record} truncated (header says {wanted} bytes, {left} left)")]
    TruncatedRecord {
        /// "pcap" or "pcapng".
        format: &'static str,
        /// The file.
        path: String,
        /// The record being read, 1-based.
        record: u64,
        /// How many bytes the record's header announces.
        wanted: u64,
        /// How many the file still has.
        left: u64,
    },

    /// The file ends inside a record's own header.
    #[error("{format} file \"{path}\": record {record} truncated in its {header_len}-byte header ({left} bytes left)")]
    TruncatedHeader {
        /// "pcap" or "pcapng".
        format: &'static str,
        /// The file.
        path: String,
        /// The record being read, 1-based.
        record: u64,
        /// The length of the record (or block) header.
        header_len: u64,
        /// How many bytes the file still has.
        left: u64,
    },

    /// A record announces a size no capture record can have (corrupt file).
    #[error("{format} file \"{path}\": record {record} claims {len} bytes, more than the {max} a record may have")]
    RecordTooLarge {
        /// "pcap" or "pcapng".
        format: &'static str,
        /// The file.
        path: String,
        /// The record being read, 1-based.
        record: u64,
        /// The announced length.
        len: u64,
        /// Our limit.
        max: u64,
    },

    /// A record or block is inconsistent (bad lengths, bad interface id...).
    #[error("{format} file \"{path}\": record {record} is malformed: {detail}")]
    MalformedRecord {
        /// "pcap" or "pcapng".
        format: &'static str,
        /// The file.
        path: String,
        /// The record being read, 1-based.
        record: u64,
        /// What is wrong.
        detail: String,
    },

    /// A frame is longer than the buffers of the batch it should go into.
    #[error("frame of {len} bytes does not fit the {capacity}-byte buffer (record {record} of \"{origin}\")")]
    FrameTooLarge {
        /// The frame's length.
        len: usize,
        /// The buffer's capacity.
        capacity: usize,
        /// The record (file) or injection (memory) number, 1-based.
        record: u64,
        /// The file or device it came from.
        origin: String,
    },

    /// A frame cannot be written in the output format (e.g. a timestamp
    /// beyond what pcap can hold).
    #[error("cannot write frame {frame} to \"{path}\": {detail}")]
    Unwritable {
        /// The file.
        path: String,
        /// The frame's number in the output, 1-based.
        frame: u64,
        /// Why.
        detail: String,
    },

    /// The named network interface does not exist (in this network namespace).
    #[error("no network interface \"{ifname}\" (in this network namespace)")]
    NoSuchInterface {
        /// The interface name as given.
        ifname: String,
    },

    /// A system call on a live interface failed.
    #[error("interface \"{ifname}\": cannot {op}: {source}{hint}")]
    Interface {
        /// The interface.
        ifname: String,
        /// What we were doing ("create the XSKMAP", "bind the AF_XDP socket"...).
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
        /// What to check, e.g. " (needs root or CAP_BPF/CAP_NET_ADMIN)"; may be empty.
        hint: &'static str,
    },

    /// The driver refused to attach the XDP program in the requested mode.
    #[error("interface \"{ifname}\" refused XDP in {mode} mode: {source}")]
    XdpRefused {
        /// The interface.
        ifname: String,
        /// "native" or "generic".
        mode: &'static str,
        /// The OS error from BPF_LINK_CREATE.
        source: std::io::Error,
    },

    /// The kernel's verifier rejected the XDP program (a bug in torwart or a
    /// kernel too old for it); the log says which instruction.
    #[error("the kernel rejected the XDP program for \"{ifname}\": {source}; verifier log:\n{log}")]
    VerifierRejected {
        /// The interface the program was for.
        ifname: String,
        /// The OS error from BPF_PROG_LOAD.
        source: std::io::Error,
        /// The verifier's log (may be truncated).
        log: String,
    },

    /// More local addresses than the XDP program's map holds.
    #[error("interface \"{ifname}\": {count} local addresses, the XDP program's map holds at most {max}")]
    TooManyAddresses {
        /// The interface.
        ifname: String,
        /// How many were given.
        count: usize,
        /// The map's size.
        max: usize,
    },

    /// The device cannot do this at all (sending to a capture file reader).
    #[error("\"{device}\" cannot {op}")]
    Unsupported {
        /// The device's name.
        device: String,
        /// "send" or "receive".
        op: &'static str,
    },
}

impl IoError {
    /// An [`IoError::Interface`] from an OS error, with a hint for the
    /// errors an operator can fix (missing privileges).
    pub fn interface(ifname: &str, op: &'static str, source: std::io::Error) -> Self {
        let hint = match source.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => " (needs root or CAP_BPF/CAP_NET_ADMIN)",
            Some(libc::ENOMEM) => " (locked-memory limit? check `ulimit -l` or run as root)",
            _ => "",
        };
        IoError::Interface { ifname: ifname.to_owned(), op, source, hint }
    }

    /// True for [`IoError::Eof`].
    pub fn is_eof(&self) -> bool {
        matches!(self, IoError::Eof)
    }

    /// True if the operating system refused for want of a privilege
    /// (`EPERM`, `EACCES`), anywhere in the error's chain of sources.
    pub fn is_permission_denied(&self) -> bool {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cur {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::PermissionDenied
                    || matches!(io.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES))
                {
                    return true;
                }
            }
            cur = e.source();
        }
        false
    }
}
