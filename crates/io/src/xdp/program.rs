//! The XDP program that splits a port's traffic between torwart and the
//! kernel, emitted as eBPF instructions from Rust, and its attachment.
//!
//! # What it does
//! For every frame the NIC receives:
//! - IPv4 whose destination is multicast (224.0.0.0/4), the limited broadcast
//!   255.255.255.255 or one of the box's own addresses → `XDP_PASS` (kernel);
//! - IPv6 whose destination is multicast (ff00::/8), link-local (fe80::/10,
//!   which covers NDP) or one of the box's own addresses → `XDP_PASS`;
//! - any other IPv4/IPv6 frame (transit traffic) → `bpf_redirect_map(xsks,
//!   rx_queue_index, XDP_DROP)`: to the AF_XDP socket of the queue it arrived
//!   on. A queue without a socket (more queues than workers, or a worker
//!   gone) drops the frame and counts it in the "unserved" per-CPU counter
//!   ([`XdpProgram::unserved`]): transit traffic never reaches the kernel,
//!   so it cannot cross the box past torwart's policy;
//! - every other ethertype (ARP, VLAN-tagged, LLDP, ...) and any frame too
//!   short for the header it claims → `XDP_PASS`.
//!
//! The box's own addresses live in a hash map ("local addresses": 16-byte
//! key, an IPv6 address or an IPv4 address mapped as `::ffff:a.b.c.d`, value
//! a `u8` that is ignored) that [`XdpProgram::set_local_addresses`] replaces
//! while the program runs.
//!
//! # Why hand-written instructions
//! Decided: no clang, no aya. The program is ~50 instructions, so emitting
//! them from Rust keeps the build free of a C/BPF toolchain and of generated
//! object files, and the loader is a handful of `bpf(2)` commands (module `sys`).
//! It is attached with `BPF_LINK_CREATE`, not netlink: a BPF link detaches
//! by itself when its last file descriptor closes, so a crashed or killed
//! torwart never leaves a program behind that redirects traffic into sockets
//! that no longer exist. The license string is "MIT": neither helper used
//! (`bpf_map_lookup_elem`, `bpf_redirect_map`) is GPL-only.
//!
//! # Invariants
//! - Every packet access is preceded by a bounds check against `data_end`
//!   covering it (the verifier insists; it also means no frame can make the
//!   program misbehave).
//! - Registers: r6 holds the context across helper calls (r1-r5 are
//!   clobbered by calls); r2 = data, r3 = data_end until the lookup; the
//!   lookup key is built at fp-16..fp-1, all 16 bytes written before use;
//!   the counter's key (0) at fp-24..fp-21.
//! - Loads see network-order bytes in native order, so every constant a
//!   loaded value is compared with is built with `from_ne_bytes` from the
//!   bytes as they are on the wire (correct on either endianness).

use std::ffi::CString;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};

use super::sys::{self, Insn};
use crate::IoError;

/// How the XDP program runs on the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum XdpMode {
    /// Try native, fall back to generic if the driver refuses.
    Auto,
    /// In the driver, before the kernel allocates an skb (fast; needs driver
    /// support, veth has it).
    Native,
    /// In the core stack after the skb exists (works on any interface;
    /// slower, and AF_XDP sockets can then only copy).
    Generic,
}

impl XdpMode {
    /// "auto", "native" or "generic", as in error messages and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            XdpMode::Auto => "auto",
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        }
    }
}

impl std::fmt::Display for XdpMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the program decided for a frame (the `XDP_*` return codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum XdpVerdict {
    /// `XDP_ABORTED` (0).
    Aborted,
    /// `XDP_DROP` (1).
    Drop,
    /// `XDP_PASS` (2): to the kernel.
    Pass,
    /// `XDP_TX` (3).
    Tx,
    /// `XDP_REDIRECT` (4): to the AF_XDP socket.
    Redirect,
    /// Anything else (cannot happen with our program).
    Other(u32),
}

impl From<u32> for XdpVerdict {
    fn from(v: u32) -> Self {
        match v {
            0 => XdpVerdict::Aborted,
            1 => XdpVerdict::Drop,
            2 => XdpVerdict::Pass,
            3 => XdpVerdict::Tx,
            4 => XdpVerdict::Redirect,
            other => XdpVerdict::Other(other),
        }
    }
}

/// Maximum number of local addresses the program's map holds.
pub const MAX_LOCAL_ADDRESSES: usize = 1024;

const KEY_LEN: usize = 16;
const XDP_DROP: i32 = 1;
const XDP_PASS: i32 = 2;
const XDP_REDIRECT: i32 = 4;
/// `TCX_NEXT` (`TC_ACT_UNSPEC`): on to the next tc program, or the stack.
pub(super) const TCX_NEXT: i32 = -1;
/// `TCX_DROP` (`TC_ACT_SHOT`).
pub(super) const TCX_DROP: i32 = 2;
const HELPER_MAP_LOOKUP_ELEM: i32 = 1;
const HELPER_SKB_PULL_DATA: i32 = 39;
const HELPER_REDIRECT_MAP: i32 = 51;

/// Ethernet and IP header fields the program reads (offsets from the start
/// of the frame, untagged Ethernet).
pub(super) mod field {
    pub const ETHERTYPE: i16 = 12;
    pub const ETH_HLEN: i32 = 14;
    /// IPv4 destination address (14 + 16).
    pub const IPV4_DST: i16 = 30;
    /// Minimal IPv4 header end (14 + 20).
    pub const IPV4_END: i32 = 34;
    /// IPv6 destination address (14 + 24).
    pub const IPV6_DST: i16 = 38;
    /// IPv6 fixed header end (14 + 40).
    pub const IPV6_END: i32 = 54;
    /// `struct xdp_md` fields.
    pub const MD_DATA: i16 = 0;
    pub const MD_DATA_END: i16 = 4;
    pub const MD_RX_QUEUE_INDEX: i16 = 16;
    /// `struct __sk_buff` fields (direct packet access: at tc ingress
    /// `data` is the Ethernet header).
    pub const SKB_LEN: i16 = 0;
    pub const SKB_DATA: i16 = 76;
    pub const SKB_DATA_END: i16 = 80;
}

/// Where the emitted program runs, and so what it does with transit frames.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Hook {
    /// The XDP splitter: transit to the queue's AF_XDP socket (map
    /// descriptors given), or dropped and counted if it has none.
    Xdp { xsk_map_fd: i32, unserved_map_fd: i32 },
    /// tc ingress behind AF_PACKET's tap: transit dropped (torwart has its
    /// copy), the rest on to the kernel.
    TcIngress,
    /// XDP in front of an AF_PACKET socket: transit passed while the
    /// worker's credit (the first `i64` of the mmap-able array
    /// `credit_map_fd`) is positive, which it takes one of; else dropped and
    /// counted per CPU in `refused_map_fd` ([`PacketAdmission`](super::PacketAdmission)).
    XdpAdmit { credit_map_fd: i32, refused_map_fd: i32 },
}

/// A tiny eBPF assembler: just the instruction forms the program uses, with
/// forward jumps to named labels resolved at the end.
pub(super) mod asm {
    use super::Insn;

    // Instruction classes, sizes, modes, operations (include/uapi/linux/bpf.h).
    const LDX: u8 = 0x01;
    const ST: u8 = 0x02;
    const STX: u8 = 0x03;
    const JMP: u8 = 0x05;
    const JMP32: u8 = 0x06;
    const ALU64: u8 = 0x07;
    const LD_IMM64: u8 = 0x18;
    const MEM: u8 = 0x60;
    const K: u8 = 0x00;
    const X: u8 = 0x08;
    const ADD: u8 = 0x00;
    const AND: u8 = 0x50;
    const MOV: u8 = 0xb0;
    const JA: u8 = 0x00;
    const JEQ: u8 = 0x10;
    const JGT: u8 = 0x20;
    const JNE: u8 = 0x50;
    const JSGT: u8 = 0x60;
    /// `BPF_ATOMIC` (formerly `BPF_XADD`) with `imm = BPF_ADD`: `lock *(dst + off) += src`.
    const ATOMIC: u8 = 0xc0;
    const CALL: u8 = 0x80;
    const EXIT: u8 = 0x90;
    /// `BPF_PSEUDO_MAP_FD`: the immediate of an `LD_IMM64` is a map fd.
    const PSEUDO_MAP_FD: u8 = 1;

    /// Load/store sizes.
    #[derive(Clone, Copy)]
    pub enum Size {
        B = 0x10,
        H = 0x08,
        W = 0x00,
        Dw = 0x18,
    }

    pub const R0: u8 = 0;
    pub const R1: u8 = 1;
    pub const R2: u8 = 2;
    pub const R3: u8 = 3;
    pub const R4: u8 = 4;
    pub const R5: u8 = 5;
    pub const R6: u8 = 6;
    pub const R8: u8 = 8;
    pub const R9: u8 = 9;
    pub const FP: u8 = 10;

    /// Jump targets.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub enum Label {
        Ipv4,
        Ipv6,
        Copy6,
        Pull,
        Lookup,
        Pass,
        Unserved,
        Drop,
        Store,
        Admit,
    }

    #[derive(Default)]
    pub struct Asm {
        insns: Vec<Insn>,
        fixups: Vec<(usize, Label)>,
        labels: Vec<(Label, usize)>,
    }

    fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn { code, regs: (src << 4) | (dst & 0x0f), off, imm }
    }

    impl Asm {
        pub fn label(&mut self, l: Label) {
            self.labels.push((l, self.insns.len()));
        }
        pub fn mov_reg(&mut self, dst: u8, src: u8) {
            self.insns.push(insn(ALU64 | MOV | X, dst, src, 0, 0));
        }
        pub fn mov_imm(&mut self, dst: u8, imm: i32) {
            self.insns.push(insn(ALU64 | MOV | K, dst, 0, 0, imm));
        }
        pub fn add_imm(&mut self, dst: u8, imm: i32) {
            self.insns.push(insn(ALU64 | ADD | K, dst, 0, 0, imm));
        }
        pub fn and_imm(&mut self, dst: u8, imm: i32) {
            self.insns.push(insn(ALU64 | AND | K, dst, 0, 0, imm));
        }
        pub fn load(&mut self, size: Size, dst: u8, src: u8, off: i16) {
            self.insns.push(insn(LDX | MEM | size as u8, dst, src, off, 0));
        }
        pub fn store_reg(&mut self, size: Size, dst: u8, off: i16, src: u8) {
            self.insns.push(insn(STX | MEM | size as u8, dst, src, off, 0));
        }
        pub fn store_imm(&mut self, size: Size, dst: u8, off: i16, imm: i32) {
            self.insns.push(insn(ST | MEM | size as u8, dst, 0, off, imm));
        }
        /// `lock *(size *)(dst + off) += src`, atomic against other CPUs and
        /// user space (`imm` 0 is `BPF_ADD`, without fetching the old value).
        pub fn atomic_add(&mut self, size: Size, dst: u8, off: i16, src: u8) {
            self.insns.push(insn(STX | ATOMIC | size as u8, dst, src, off, 0));
        }
        pub fn load_map_fd(&mut self, dst: u8, fd: i32) {
            self.insns.push(insn(LD_IMM64, dst, PSEUDO_MAP_FD, 0, fd));
            self.insns.push(insn(0, 0, 0, 0, 0));
        }
        fn jump(&mut self, code: u8, dst: u8, src: u8, imm: i32, to: Label) {
            self.fixups.push((self.insns.len(), to));
            self.insns.push(insn(code, dst, src, 0, imm));
        }
        pub fn ja(&mut self, to: Label) {
            self.jump(JMP | JA, 0, 0, 0, to);
        }
        pub fn jeq_imm(&mut self, dst: u8, imm: i32, to: Label) {
            self.jump(JMP | JEQ | K, dst, 0, imm, to);
        }
        /// Compares the low 32 bits only (so 0xffffffff is not sign-extended).
        pub fn jeq32_imm(&mut self, dst: u8, imm: i32, to: Label) {
            self.jump(JMP32 | JEQ | K, dst, 0, imm, to);
        }
        pub fn jne_imm(&mut self, dst: u8, imm: i32, to: Label) {
            self.jump(JMP | JNE | K, dst, 0, imm, to);
        }
        pub fn jgt_reg(&mut self, dst: u8, src: u8, to: Label) {
            self.jump(JMP | JGT | X, dst, src, 0, to);
        }
        /// Signed `dst > imm` on 64 bits.
        pub fn jsgt_imm(&mut self, dst: u8, imm: i32, to: Label) {
            self.jump(JMP | JSGT | K, dst, 0, imm, to);
        }
        pub fn call(&mut self, helper: i32) {
            self.insns.push(insn(JMP | CALL, 0, 0, 0, helper));
        }
        /// `r0 = bpf_map_lookup_elem(map, fp + key_at)`; a miss (null) jumps to `miss`.
        pub fn lookup_or(&mut self, map_fd: i32, key_at: i16, miss: Label) {
            self.load_map_fd(R1, map_fd);
            self.mov_reg(R2, FP);
            self.add_imm(R2, i32::from(key_at));
            self.call(super::HELPER_MAP_LOOKUP_ELEM);
            self.jeq_imm(R0, 0, miss);
        }
        /// Adds one to the `u64` at key `fp + key_at` of the per-CPU array
        /// `map_fd` (this CPU's slot: no atomics needed); a miss jumps to `miss`.
        pub fn count(&mut self, map_fd: i32, key_at: i16, miss: Label) {
            self.lookup_or(map_fd, key_at, miss);
            self.load(Size::Dw, R1, R0, 0);
            self.add_imm(R1, 1);
            self.store_reg(Size::Dw, R0, 0, R1);
        }
        pub fn exit(&mut self) {
            self.insns.push(insn(JMP | EXIT, 0, 0, 0, 0));
        }

        /// Resolves jumps; `None` if a label is missing or out of range
        /// (a bug in the program text, caught by the unit test).
        pub fn finish(mut self) -> Option<Vec<Insn>> {
            for &(at, to) in &self.fixups {
                let target = self.labels.iter().find(|(l, _)| *l == to)?.1;
                let off = i16::try_from(target as isize - at as isize - 1).ok()?;
                self.insns.get_mut(at)?.off = off;
            }
            Some(self.insns)
        }
    }
}

/// Emits the program for `hook`, with the local-address map `local_map_fd`.
/// The classification (what is transit) is the same for both hooks.
pub(crate) fn emit(hook: Hook, local_map_fd: i32) -> Option<Vec<Insn>> {
    use asm::{Label::*, Size::*, *};
    let mut a = Asm::default();

    // `short`: where an IPv4/IPv6 frame goes whose header is not there.
    // XDP's first buffer holds every header, so such a frame is truncated:
    // the kernel drops it. An skb may hold only the Ethernet header in its
    // linear part (drivers that build frames from page fragments): the tc
    // program pulls the headers in first, and drops what it still cannot
    // read, so that nothing reaches the kernel's stack unexamined.
    let (data, data_end, short) = match hook {
        Hook::Xdp { .. } | Hook::XdpAdmit { .. } => (field::MD_DATA, field::MD_DATA_END, Pass),
        Hook::TcIngress => (field::SKB_DATA, field::SKB_DATA_END, Drop),
    };
    a.mov_reg(R6, R1);
    if let Hook::TcIngress = hook {
        // bpf_skb_pull_data(skb, min(skb->len, 54)); its result does not
        // matter: the bounds checks below decide.
        a.load(W, R2, R6, field::SKB_LEN);
        a.mov_imm(R3, field::IPV6_END);
        a.jgt_reg(R3, R2, Pull);
        a.mov_reg(R2, R3);
        a.label(Pull);
        a.mov_reg(R1, R6);
        a.call(HELPER_SKB_PULL_DATA);
    }
    a.load(W, R2, R6, data);
    a.load(W, R3, R6, data_end);
    a.mov_reg(R4, R2);
    a.add_imm(R4, field::ETH_HLEN);
    a.jgt_reg(R4, R3, Pass);
    a.load(H, R5, R2, field::ETHERTYPE);
    a.jeq_imm(R5, i32::from(0x0800u16.to_be()), Ipv4);
    a.jeq_imm(R5, i32::from(0x86ddu16.to_be()), Ipv6);
    a.ja(Pass);

    a.label(Ipv4);
    a.mov_reg(R4, R2);
    a.add_imm(R4, field::IPV4_END);
    a.jgt_reg(R4, R3, short);
    a.load(W, R5, R2, field::IPV4_DST);
    // Constants are built from network-order bytes as the load sees them
    // (native order), and compared on 32 bits so none is sign-extended.
    a.mov_reg(R0, R5);
    a.and_imm(R0, i32::from_ne_bytes([0xf0, 0, 0, 0]));
    a.jeq32_imm(R0, i32::from_ne_bytes([0xe0, 0, 0, 0]), Pass); // 224.0.0.0/4
    a.jeq32_imm(R5, -1, Pass); // 255.255.255.255
    a.store_imm(Dw, FP, -16, 0);
    a.store_imm(W, FP, -8, i32::from_ne_bytes([0, 0, 0xff, 0xff]));
    a.store_reg(W, FP, -4, R5);
    a.ja(Lookup);

    a.label(Ipv6);
    a.mov_reg(R4, R2);
    a.add_imm(R4, field::IPV6_END);
    a.jgt_reg(R4, R3, short);
    a.load(B, R5, R2, field::IPV6_DST);
    a.jeq_imm(R5, 0xff, Pass); // ff00::/8
    a.jne_imm(R5, 0xfe, Copy6);
    a.load(B, R5, R2, field::IPV6_DST + 1);
    a.and_imm(R5, 0xc0);
    a.jeq_imm(R5, 0x80, Pass); // fe80::/10
    a.label(Copy6);
    a.load(Dw, R5, R2, field::IPV6_DST);
    a.store_reg(Dw, FP, -16, R5);
    a.load(Dw, R5, R2, field::IPV6_DST + 8);
    a.store_reg(Dw, FP, -8, R5);

    a.label(Lookup);
    a.load_map_fd(R1, local_map_fd);
    a.mov_reg(R2, FP);
    a.add_imm(R2, -16);
    a.call(HELPER_MAP_LOOKUP_ELEM);
    a.jne_imm(R0, 0, Pass);
    if let Hook::XdpAdmit { credit_map_fd, refused_map_fd } = hook {
        // Transit: admitted while there is credit, which it takes. The check
        // and the decrement are not one atomic step, so CPUs receiving at
        // once can overdraw by a frame each; the worker's top-up clamps.
        // The array's one element is always there: a failed lookup (which
        // the verifier makes us handle) admits, as with no program at all.
        a.store_imm(W, FP, -24, 0);
        a.lookup_or(credit_map_fd, -24, Pass);
        a.load(Dw, R1, R0, 0);
        a.jsgt_imm(R1, 0, Admit);
        a.count(refused_map_fd, -24, Drop);
        a.label(Drop);
        a.mov_imm(R0, XDP_DROP);
        a.exit();
        a.label(Admit);
        a.mov_imm(R1, -1);
        a.atomic_add(Dw, R0, 0, R1);
        a.label(Pass);
        a.mov_imm(R0, XDP_PASS);
        a.exit();
        return a.finish();
    }
    let Hook::Xdp { xsk_map_fd, unserved_map_fd } = hook else {
        // tc: transit, whose copy AF_PACKET took before this hook.
        a.label(Drop);
        a.mov_imm(R0, TCX_DROP);
        a.exit();
        a.label(Pass);
        a.mov_imm(R0, TCX_NEXT);
        a.exit();
        return a.finish();
    };
    a.load(W, R2, R6, field::MD_RX_QUEUE_INDEX);
    a.load_map_fd(R1, xsk_map_fd);
    a.mov_imm(R3, XDP_DROP);
    a.call(HELPER_REDIRECT_MAP);
    a.jne_imm(R0, XDP_REDIRECT, Unserved);
    a.exit();

    // No socket on this queue: count (per CPU, no atomics) and drop.
    a.label(Unserved);
    a.store_imm(W, FP, -24, 0);
    a.count(unserved_map_fd, -24, Drop);
    a.label(Drop);
    a.mov_imm(R0, XDP_DROP);
    a.exit();

    a.label(Pass);
    a.mov_imm(R0, XDP_PASS);
    a.exit();

    a.finish()
}

/// The key of `addr` in the local-address map.
fn local_key(addr: IpAddr) -> [u8; KEY_LEN] {
    match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The map of the box's own addresses that a program passes to the kernel.
#[derive(Debug)]
pub(super) struct LocalMap(OwnedFd);

impl LocalMap {
    pub(super) fn create(ifname: &str) -> Result<LocalMap, IoError> {
        sys::map_create(sys::MAP_TYPE_HASH, KEY_LEN as u32, 1, MAX_LOCAL_ADDRESSES as u32, "tw_local")
            .map(LocalMap)
            .map_err(|e| IoError::interface(ifname, "create the local-address map", e))
    }

    pub(super) fn fd(&self) -> i32 {
        self.0.as_raw_fd()
    }

    /// Replaces the set (see [`XdpProgram::set_local_addresses`]).
    pub(super) fn set(&self, ifname: &str, addrs: &[IpAddr]) -> Result<(), IoError> {
        if addrs.len() > MAX_LOCAL_ADDRESSES {
            return Err(IoError::TooManyAddresses {
                ifname: ifname.to_owned(),
                count: addrs.len(),
                max: MAX_LOCAL_ADDRESSES,
            });
        }
        let wanted: Vec<[u8; KEY_LEN]> = addrs.iter().map(|&a| local_key(a)).collect();
        for key in &wanted {
            sys::map_update(&self.0, key, &[1]).map_err(|e| IoError::interface(ifname, "insert a local address", e))?;
        }
        let mut stale = Vec::new();
        let mut cur: Option<[u8; KEY_LEN]> = None;
        // The map holds at most MAX_LOCAL_ADDRESSES keys; the bound only
        // guards against a kernel that keeps answering.
        for _ in 0..=MAX_LOCAL_ADDRESSES {
            let mut next = [0u8; KEY_LEN];
            let more = sys::map_next_key(&self.0, cur.as_ref().map(|k| &k[..]), &mut next)
                .map_err(|e| IoError::interface(ifname, "list the local addresses", e))?;
            if !more {
                break;
            }
            if !wanted.contains(&next) {
                stale.push(next);
            }
            cur = Some(next);
        }
        for key in &stale {
            sys::map_delete(&self.0, key).map_err(|e| IoError::interface(ifname, "remove a local address", e))?;
        }
        Ok(())
    }

    pub(super) fn contains(&self, ifname: &str, addr: IpAddr) -> Result<bool, IoError> {
        let mut value = [0u8; 1];
        sys::map_lookup(&self.0, &local_key(addr), &mut value)
            .map_err(|e| IoError::interface(ifname, "look up a local address", e))
    }
}

/// The XDP program attached to one interface, with its two maps.
///
/// Dropping it detaches the program (the BPF link closes) and frees the maps.
#[derive(Debug)]
pub struct XdpProgram {
    ifname: String,
    ifindex: u32,
    mode: XdpMode,
    /// Size of the XSKMAP: the interface's rx queue count from sysfs, but at
    /// least 64, because sysfs shows the devices of the namespace it was
    /// mounted in (not necessarily the caller's) and `ethtool -L` can add
    /// queues later. An unused slot costs a pointer.
    queues: u32,
    // Field order is drop order: detach first, then the program, then maps.
    _link: OwnedFd,
    prog: OwnedFd,
    xsk_map: OwnedFd,
    local_map: LocalMap,
    /// Transit frames dropped for want of a socket on their queue (one
    /// `u64` per possible CPU).
    unserved_map: OwnedFd,
}

/// The `u64` counter at key 0 of a per-CPU array, summed over CPUs.
pub(super) fn percpu_sum(map: &OwnedFd) -> std::io::Result<u64> {
    let mut values = vec![0u8; 8 * possible_cpus()];
    sys::map_lookup(map, &0u32.to_ne_bytes(), &mut values)?;
    Ok(values.chunks_exact(8).map(|c| u64::from_ne_bytes(c.try_into().unwrap_or_default())).sum())
}

/// The number of possible CPUs (`/sys/devices/system/cpu/possible`, e.g.
/// "0-7"): a per-CPU map's value as user space reads it has one slot each.
fn possible_cpus() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|t| t.trim().rsplit([',', '-']).next().and_then(|last| last.parse::<usize>().ok()))
        .map_or(libc::CPU_SETSIZE as usize, |last| last + 1)
}

/// The interface index of `ifname` in the calling thread's network namespace.
pub(crate) fn ifindex(ifname: &str) -> Result<u32, IoError> {
    let no_such = || IoError::NoSuchInterface { ifname: ifname.to_owned() };
    if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ {
        return Err(no_such());
    }
    let c = CString::new(ifname).map_err(|_| no_such())?;
    // SAFETY: `c` is a valid NUL-terminated string that lives across the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(no_such());
    }
    Ok(index)
}

/// The number of rx queues of `ifname` (from sysfs of the namespace sysfs
/// was mounted in; 1 if unknown), which sizes the XSKMAP: the program
/// indexes it by `rx_queue_index`.
pub fn rx_queue_count(ifname: &str) -> u32 {
    std::fs::read_dir(format!("/sys/class/net/{ifname}/queues"))
        .map(|d| d.filter_map(Result::ok).filter(|e| e.file_name().to_string_lossy().starts_with("rx-")).count())
        .ok()
        .and_then(|n| u32::try_from(n).ok())
        .filter(|&n| n > 0)
        .unwrap_or(1)
}

impl XdpProgram {
    /// Loads the program for `ifname` and attaches it in `mode`
    /// ([`XdpMode::Auto`]: native, else generic; see [`mode`](Self::mode)).
    ///
    /// Until sockets are registered, transit frames are dropped (and
    /// counted as unserved: they never fall back to the kernel), and until
    /// local addresses are set, frames to the box's own addresses go to the
    /// sockets once those exist: call
    /// [`set_local_addresses`](Self::set_local_addresses) before
    /// [`register_socket`](Self::register_socket).
    pub fn attach(ifname: &str, mode: XdpMode) -> Result<XdpProgram, IoError> {
        let ifindex = ifindex(ifname)?;
        let queues = rx_queue_count(ifname).max(64);
        let xsk_map = sys::map_create(sys::MAP_TYPE_XSKMAP, 4, 4, queues, "tw_xsks")
            .map_err(|e| IoError::interface(ifname, "create the XSKMAP", e))?;
        let local_map = LocalMap::create(ifname)?;
        let unserved_map = sys::map_create(sys::MAP_TYPE_PERCPU_ARRAY, 4, 8, 1, "tw_unserved")
            .map_err(|e| IoError::interface(ifname, "create the unserved-frames counter", e))?;
        let hook = Hook::Xdp { xsk_map_fd: xsk_map.as_raw_fd(), unserved_map_fd: unserved_map.as_raw_fd() };
        let prog = load(ifname, hook, &local_map)?;
        let (link, mode) = attach_in(ifname, &prog, ifindex, mode)?;
        Ok(XdpProgram {
            ifname: ifname.to_owned(),
            ifindex,
            mode,
            queues,
            _link: link,
            prog,
            xsk_map,
            local_map,
            unserved_map,
        })
    }

    /// The interface it is attached to.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The interface's index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The mode actually used: [`XdpMode::Native`] or [`XdpMode::Generic`].
    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    /// How many queue slots the socket map has.
    pub fn queue_slots(&self) -> u32 {
        self.queues
    }

    /// Makes transit frames that arrive on `queue` go to `socket` (an
    /// AF_XDP socket bound to this interface and queue, e.g.
    /// [`XdpPort`](super::XdpPort)'s descriptor).
    pub fn register_socket(&self, queue: u32, socket: &impl AsRawFd) -> Result<(), IoError> {
        let fd = socket.as_raw_fd();
        sys::map_update(&self.xsk_map, &queue.to_ne_bytes(), &fd.to_ne_bytes())
            .map_err(|e| IoError::interface(&self.ifname, "register the AF_XDP socket in the XSKMAP", e))
    }

    /// Transit frames the program dropped because no socket was registered
    /// for the queue they arrived on, summed over CPUs, since attachment.
    pub fn unserved(&self) -> Result<u64, IoError> {
        percpu_sum(&self.unserved_map)
            .map_err(|e| IoError::interface(&self.ifname, "read the unserved-frames counter", e))
    }

    /// Drops the transit frames of `queue` (counted as unserved) from now on.
    pub fn unregister_socket(&self, queue: u32) -> Result<(), IoError> {
        sys::map_delete(&self.xsk_map, &queue.to_ne_bytes())
            .map_err(|e| IoError::interface(&self.ifname, "remove an AF_XDP socket from the XSKMAP", e))
    }

    /// Replaces the set of the box's own addresses (frames to them go to
    /// the kernel). New addresses are inserted before stale ones are
    /// removed, so an address in both sets never leaves the map.
    pub fn set_local_addresses(&self, addrs: &[IpAddr]) -> Result<(), IoError> {
        self.local_map.set(&self.ifname, addrs)
    }

    /// True if `addr` is in the local-address map.
    pub fn is_local(&self, addr: IpAddr) -> Result<bool, IoError> {
        self.local_map.contains(&self.ifname, addr)
    }

    /// Runs the program once on `frame` as if it had arrived on `queue` of
    /// this interface (`BPF_PROG_TEST_RUN`) and returns the verdict. Nothing
    /// is redirected or passed on: this is for tests and diagnostics.
    /// [`XdpVerdict::Redirect`] needs a socket registered for `queue`.
    pub fn dry_run(&self, frame: &[u8], queue: u32) -> Result<XdpVerdict, IoError> {
        let ctx = sys::XdpMd {
            data_end: u32::try_from(frame.len()).unwrap_or(u32::MAX),
            ingress_ifindex: self.ifindex,
            rx_queue_index: queue,
            ..Default::default()
        };
        sys::test_run(&self.prog, frame, Some(&ctx))
            .map(XdpVerdict::from)
            .map_err(|e| IoError::interface(&self.ifname, "test-run the XDP program", e))
    }
}

/// Emits and loads the program for `hook`; on failure loads it again with
/// the verifier log on, so the error carries the log.
pub(super) fn load(ifname: &str, hook: Hook, local_map: &LocalMap) -> Result<OwnedFd, IoError> {
    let insns = emit(hook, local_map.fd()).ok_or_else(|| IoError::VerifierRejected {
        ifname: ifname.to_owned(),
        source: std::io::Error::from_raw_os_error(libc::EINVAL),
        log: "jump label unresolved in the emitted program (bug)".to_owned(),
    })?;
    let (prog_type, name, op) = match hook {
        Hook::Xdp { .. } => (sys::PROG_TYPE_XDP, "torwart_split", "load the XDP program"),
        Hook::TcIngress => (sys::PROG_TYPE_SCHED_CLS, "torwart_guard", "load the tc guard program"),
        Hook::XdpAdmit { .. } => (sys::PROG_TYPE_XDP, "torwart_admit", "load the XDP admission program"),
    };
    load_insns(ifname, prog_type, name, op, &insns)
}

/// Loads `insns` as a program of `prog_type`; on failure loads them again
/// with the verifier log on, so the error carries the log.
pub(super) fn load_insns(
    ifname: &str,
    prog_type: u32,
    name: &str,
    op: &'static str,
    insns: &[Insn],
) -> Result<OwnedFd, IoError> {
    let license = c"MIT";
    match sys::prog_load(prog_type, insns, license, name, &mut []) {
        Ok(fd) => Ok(fd),
        Err(first) if matches!(first.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) => {
            Err(IoError::interface(ifname, op, first))
        }
        Err(first) => {
            let mut log = vec![0u8; 1 << 16];
            let second = sys::prog_load(prog_type, insns, license, name, &mut log);
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]).into_owned();
            match second {
                // Loaded with logging on: a flake we do not understand; use it.
                Ok(fd) => Ok(fd),
                Err(_) => Err(IoError::VerifierRejected { ifname: ifname.to_owned(), source: first, log: text }),
            }
        }
    }
}

/// Attaches an XDP program in `mode` ([`XdpMode::Auto`]: native, else
/// generic); returns the link and the mode used.
pub(super) fn attach_in(
    ifname: &str,
    prog: &OwnedFd,
    ifindex: u32,
    mode: XdpMode,
) -> Result<(OwnedFd, XdpMode), IoError> {
    match mode {
        XdpMode::Native | XdpMode::Generic => Ok((link(ifname, prog, ifindex, mode)?, mode)),
        XdpMode::Auto => match link(ifname, prog, ifindex, XdpMode::Native) {
            Ok(l) => Ok((l, XdpMode::Native)),
            Err(IoError::XdpRefused { .. }) => Ok((link(ifname, prog, ifindex, XdpMode::Generic)?, XdpMode::Generic)),
            Err(e) => Err(e),
        },
    }
}

fn link(ifname: &str, prog: &OwnedFd, ifindex: u32, mode: XdpMode) -> Result<OwnedFd, IoError> {
    let flags = if mode == XdpMode::Native { sys::XDP_FLAGS_DRV_MODE } else { sys::XDP_FLAGS_SKB_MODE };
    sys::link_create(prog, ifindex, sys::ATTACH_TYPE_XDP, flags).map_err(|e| match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => IoError::interface(ifname, "attach the XDP program", e),
        Some(libc::EBUSY) | Some(libc::EEXIST) => IoError::Interface {
            ifname: ifname.to_owned(),
            op: "attach the XDP program",
            source: e,
            hint: " (another XDP program is attached; see `ip link show`)",
        },
        _ => IoError::XdpRefused { ifname: ifname.to_owned(), mode: mode.as_str(), source: e },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_assembles_and_jumps_forward() {
        for hook in [
            Hook::Xdp { xsk_map_fd: 3, unserved_map_fd: 5 },
            Hook::TcIngress,
            Hook::XdpAdmit { credit_map_fd: 3, refused_map_fd: 5 },
        ] {
            assert_jumps_forward(&emit(hook, 4).expect("labels resolve"));
        }
    }

    fn assert_jumps_forward(insns: &[Insn]) {
        assert!(insns.len() < 80, "{} instructions", insns.len());
        // Jumps: every offset lands inside the program.
        for (i, insn) in insns.iter().enumerate() {
            let class = insn.code & 0x07;
            let op = insn.code & 0xf0;
            if (class == 0x05 || class == 0x06) && op != 0x80 && op != 0x90 {
                let target = i as isize + 1 + insn.off as isize;
                assert!(target > i as isize && (target as usize) < insns.len(), "insn {i} jumps to {target}");
            }
        }
        // Ends with exit.
        assert_eq!(insns.last().map(|i| i.code), Some(0x95));
    }

    #[test]
    fn keys_map_ipv4_into_ipv6() {
        let k = local_key("10.77.0.2".parse().unwrap());
        assert_eq!(k, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 77, 0, 2]);
    }
}
