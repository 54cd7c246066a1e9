//! The process allocator: the system's, plus huge pages for large tables.
//!
//! The flow table, its index and the scenario templates are hundreds of
//! megabytes read at random, one cache line per packet. With 4 KiB pages
//! nearly every such read also misses the TLB, and under virtualisation a
//! page walk costs several memory reads of its own. Asking for transparent
//! huge pages (`MADV_HUGEPAGE`) on every allocation of 4 MiB or more, before
//! it is first touched, makes the same tables use 2 MiB pages. This works
//! whether the system's THP mode is `always` or `madvise`; with `never` it
//! changes nothing.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations at least this large are aligned to, and advised as, huge pages.
const HUGE: usize = 4 << 20;
const HUGE_PAGE: usize = 2 << 20;

#[derive(Debug)]
pub struct HugeTables;

impl HugeTables {
    fn huge(layout: Layout) -> Option<Layout> {
        (layout.size() >= HUGE).then(|| Layout::from_size_align(layout.size(), layout.align().max(HUGE_PAGE)).ok())?
    }

    fn advise(p: *mut u8, size: usize) {
        if !p.is_null() {
            // SAFETY: `p..p+size` is the allocation just made for the caller;
            // madvise only changes how the kernel backs it, not its contents.
            unsafe {
                libc::madvise(p.cast(), size, libc::MADV_HUGEPAGE);
            }
        }
    }
}

// SAFETY: every call is forwarded to `System` with a layout at least as
// strictly aligned as the caller's, and freed with that same layout.
unsafe impl GlobalAlloc for HugeTables {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match Self::huge(layout) {
            Some(l) => {
                // SAFETY: `l` has a non-zero size (at least HUGE).
                let p = unsafe { System.alloc(l) };
                Self::advise(p, l.size());
                p
            }
            // SAFETY: forwarded as is.
            None => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match Self::huge(layout) {
            Some(l) => {
                // SAFETY: `l` has a non-zero size.
                let p = unsafe { System.alloc(l) };
                Self::advise(p, l.size());
                if !p.is_null() {
                    // SAFETY: `p` points to `l.size()` writable bytes.
                    unsafe { p.write_bytes(0, l.size()) };
                }
                p
            }
            // SAFETY: forwarded as is.
            None => unsafe { System.alloc_zeroed(layout) },
        }
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        let l = Self::huge(layout).unwrap_or(layout);
        // SAFETY: `p` was allocated by `alloc` with exactly `l`.
        unsafe { System.dealloc(p, l) }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Ok(new) = Layout::from_size_align(new_size, layout.align()) else {
            return core::ptr::null_mut();
        };
        if Self::huge(layout).is_none() && Self::huge(new).is_none() {
            // SAFETY: both layouts are the caller's own; forwarded as is.
            return unsafe { System.realloc(p, layout, new_size) };
        }
        // SAFETY: a fresh allocation of the new layout through this allocator.
        let q = unsafe { self.alloc(new) };
        if !q.is_null() {
            // SAFETY: both blocks are valid for the smaller of the sizes and distinct.
            unsafe {
                core::ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
                self.dealloc(p, layout);
            }
        }
        q
    }
}
