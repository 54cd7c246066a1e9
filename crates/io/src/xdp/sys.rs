//! The few `bpf(2)` commands torwart needs, as raw system calls.
//!
//! Each command takes its own prefix of the kernel's `union bpf_attr`; we
//! declare exactly that prefix as a `#[repr(C)]` struct with no implicit
//! padding and pass its size. The kernel zero-extends a shorter attribute and
//! rejects a longer one whose tail it does not know unless the tail is zero,
//! so declaring only what we use is forward- and backward-compatible.
//!
//! Numbers are from `include/uapi/linux/bpf.h` (stable ABI).

use std::ffi::CStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

// Commands.
const BPF_MAP_CREATE: libc::c_int = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_int = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_int = 2;
const BPF_MAP_DELETE_ELEM: libc::c_int = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_int = 4;
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_TEST_RUN: libc::c_int = 10;
const BPF_LINK_CREATE: libc::c_int = 28;

/// `BPF_MAP_TYPE_HASH`.
pub(crate) const MAP_TYPE_HASH: u32 = 1;
/// `BPF_MAP_TYPE_ARRAY`.
pub(crate) const MAP_TYPE_ARRAY: u32 = 2;
/// `BPF_MAP_TYPE_PERCPU_ARRAY`.
pub(crate) const MAP_TYPE_PERCPU_ARRAY: u32 = 6;
/// `BPF_MAP_TYPE_XSKMAP`.
pub(crate) const MAP_TYPE_XSKMAP: u32 = 17;
/// `BPF_PROG_TYPE_SCHED_CLS` (tc).
pub(crate) const PROG_TYPE_SCHED_CLS: u32 = 3;
/// `BPF_PROG_TYPE_XDP`.
pub(crate) const PROG_TYPE_XDP: u32 = 6;
/// `BPF_XDP`, the attach type of an XDP link.
pub(crate) const ATTACH_TYPE_XDP: u32 = 37;
/// `BPF_TCX_INGRESS`: tc's ingress hook as a BPF link (Linux 6.6).
pub(crate) const ATTACH_TYPE_TCX_INGRESS: u32 = 46;
/// `BPF_F_MMAPABLE`: an array map whose values user space can `mmap`.
pub(crate) const BPF_F_MMAPABLE: u32 = 1 << 10;
/// `BPF_F_BEFORE`: a tcx link without a relative program goes first.
pub(crate) const BPF_F_BEFORE: u32 = 1 << 3;
/// `XDP_FLAGS_SKB_MODE`: generic XDP, run by the core stack after the skb exists.
pub(crate) const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
/// `XDP_FLAGS_DRV_MODE`: native XDP, run by the driver before any skb exists.
pub(crate) const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value_or_next_key: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// `BPF_F_TEST_XDP_LIVE_FRAMES`: a test run whose frames really go where
/// the program sends them (Linux 5.18).
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

/// `struct xdp_md` as a test run's context.
#[repr(C)]
#[derive(Default)]
pub(crate) struct XdpMd {
    pub data: u32,
    pub data_end: u32,
    pub data_meta: u32,
    pub ingress_ifindex: u32,
    pub rx_queue_index: u32,
    pub egress_ifindex: u32,
}

/// One eBPF instruction (`struct bpf_insn`): opcode, dst/src registers in
/// one byte (dst in the low nibble), a signed 16-bit offset and a signed
/// 32-bit immediate.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    pub code: u8,
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

/// Calls `bpf(cmd, attr, size_of(attr))`.
fn bpf<T>(cmd: libc::c_int, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, exclusively borrowed `#[repr(C)]` prefix of
    // `union bpf_attr` for `cmd`, and we pass its exact size; every pointer
    // inside it was set by our caller to memory that outlives this call.
    let ret = unsafe {
        libc::syscall(libc::SYS_bpf, cmd, attr as *mut T as *mut libc::c_void, std::mem::size_of::<T>() as libc::c_uint)
    };
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn fd_from(ret: libc::c_long) -> std::io::Result<OwnedFd> {
    let fd = libc::c_int::try_from(ret).map_err(|_| std::io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just returned `fd` as a new file descriptor that
    // nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn name16(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (o, b) in out.iter_mut().take(15).zip(name.bytes()) {
        *o = b;
    }
    out
}

/// Creates a map; the name (up to 15 characters) shows in `bpftool map`.
pub(crate) fn map_create(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    name: &str,
) -> std::io::Result<OwnedFd> {
    map_create_flags(map_type, key_size, value_size, max_entries, 0, name)
}

/// [`map_create`] with `map_flags` (e.g. [`BPF_F_MMAPABLE`]).
pub(crate) fn map_create_flags(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    name: &str,
) -> std::io::Result<OwnedFd> {
    let mut attr = MapCreateAttr {
        map_type,
        key_size,
        value_size,
        max_entries,
        map_flags,
        map_name: name16(name),
        ..Default::default()
    };
    fd_from(bpf(BPF_MAP_CREATE, &mut attr)?)
}

fn elem_attr(map: &OwnedFd, key: *const u8, value: u64, flags: u64) -> MapElemAttr {
    MapElemAttr { map_fd: map.as_raw_fd() as u32, _pad: 0, key: key as u64, value_or_next_key: value, flags }
}

/// Inserts or replaces `key` → `value`. The slices must have the map's key
/// and value sizes (the kernel reads exactly that many bytes).
pub(crate) fn map_update(map: &OwnedFd, key: &[u8], value: &[u8]) -> std::io::Result<()> {
    let mut attr = elem_attr(map, key.as_ptr(), value.as_ptr() as u64, 0);
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(|_| ())
}

/// Deletes `key`; a missing key is not an error.
pub(crate) fn map_delete(map: &OwnedFd, key: &[u8]) -> std::io::Result<()> {
    let mut attr = elem_attr(map, key.as_ptr(), 0, 0);
    match bpf(BPF_MAP_DELETE_ELEM, &mut attr) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        r => r.map(|_| ()),
    }
}

/// True if `key` is in the map (`value` receives its value).
pub(crate) fn map_lookup(map: &OwnedFd, key: &[u8], value: &mut [u8]) -> std::io::Result<bool> {
    let mut attr = elem_attr(map, key.as_ptr(), value.as_mut_ptr() as u64, 0);
    match bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The key after `key` (the first key if `key` is `None`); `false` at the end.
pub(crate) fn map_next_key(map: &OwnedFd, key: Option<&[u8]>, next: &mut [u8]) -> std::io::Result<bool> {
    let key_ptr = key.map_or(std::ptr::null(), |k| k.as_ptr());
    let mut attr = elem_attr(map, key_ptr, next.as_mut_ptr() as u64, 0);
    match bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Loads a program of `prog_type` (XDP or tc). With `log` non-empty the
/// verifier writes its log there (NUL-terminated); pass an empty slice for
/// the fast first attempt.
pub(crate) fn prog_load(
    prog_type: u32,
    insns: &[Insn],
    license: &CStr,
    name: &str,
    log: &mut [u8],
) -> std::io::Result<OwnedFd> {
    let mut attr = ProgLoadAttr {
        prog_type,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name16(name),
        expected_attach_type: if prog_type == PROG_TYPE_XDP { ATTACH_TYPE_XDP } else { 0 },
        ..Default::default()
    };
    if !log.is_empty() {
        attr.log_level = 1;
        attr.log_size = u32::try_from(log.len()).unwrap_or(u32::MAX);
        attr.log_buf = log.as_mut_ptr() as u64;
    }
    fd_from(bpf(BPF_PROG_LOAD, &mut attr)?)
}

/// Attaches a program to an interface as a BPF link (`attach_type`: XDP
/// with its mode `flags`, or tc ingress after any programs already there):
/// the attachment lives exactly as long as the returned descriptor.
pub(crate) fn link_create(prog: &OwnedFd, ifindex: u32, attach_type: u32, flags: u32) -> std::io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr { prog_fd: prog.as_raw_fd() as u32, target_ifindex: ifindex, attach_type, flags };
    fd_from(bpf(BPF_LINK_CREATE, &mut attr)?)
}

/// Runs the program once on `frame` (`BPF_PROG_TEST_RUN`) and returns its
/// verdict; nothing is transmitted or redirected. `ctx`: an XDP program's
/// context (a tc program runs without one).
pub(crate) fn test_run(prog: &OwnedFd, frame: &[u8], ctx: Option<&XdpMd>) -> std::io::Result<u32> {
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat: 1,
        ..Default::default()
    };
    if let Some(ctx) = ctx {
        attr.ctx_size_in = std::mem::size_of::<XdpMd>() as u32;
        attr.ctx_in = ctx as *const XdpMd as u64;
    }
    bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    Ok(attr.retval)
}

/// Runs an XDP program `repeat` times in live-frames mode: each run gets a
/// fresh frame initialised from `frame` (pages are recycled, so what a
/// program writes may still be there), and `XDP_TX` sends it out of the
/// interface `ctx.ingress_ifindex`, as if a driver had received it there.
/// `batch`: frames per transmit flush (the kernel's default is 64).
pub(crate) fn test_run_live(prog: &OwnedFd, frame: &[u8], ctx: &XdpMd, repeat: u32, batch: u32) -> std::io::Result<()> {
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat,
        ctx_size_in: std::mem::size_of::<XdpMd>() as u32,
        ctx_in: ctx as *const XdpMd as u64,
        flags: BPF_F_TEST_XDP_LIVE_FRAMES,
        batch_size: batch,
        ..Default::default()
    };
    bpf(BPF_PROG_TEST_RUN, &mut attr).map(|_| ())
}
