//! The binary's global allocator: mimalloc, called the way its plain `malloc` is fastest.
//!
//! The `mimalloc` crate (0.1.52) sends every allocation to `mi_malloc_aligned`, alignment 1
//! or 8 included. mimalloc v3 serves an aligned request from its fast path only below 1 KiB;
//! above that it takes the plain path only when the block size is a power of two, and
//! otherwise over-allocates in a generic path that costs ~500 instructions. hyper's 8 KiB
//! read buffers and our ~1.8 KiB per-request future hit it on every request: callgrind
//! counted ~1,150 instructions per proxied HTTP/1.1 request in `mi_malloc_aligned` (4 % of
//! the process), most of it there (purpleprotocol/mimalloc_rust#170 is the same fix, not
//! released).
//!
//! So a layout that any mimalloc block satisfies goes to `mi_malloc`: alignment at most 16
//! (`MI_MAX_ALIGN_SIZE`: every page's first block is 16-aligned, and the size classes of a
//! multiple of 8 or 16 bytes stay multiples of it) and a size that is a multiple of the
//! alignment. Every other layout keeps the aligned calls. `mi_free` frees both kinds.
//!
//! This is the one `unsafe` module of svc-proxy: `GlobalAlloc` is an unsafe trait, and the
//! calls are FFI.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The largest alignment every mimalloc block has (`MI_MAX_ALIGN_SIZE`).
const NATURAL_ALIGN: usize = 16;

/// mimalloc, with plain calls where the alignment comes for free.
pub struct MiMalloc;

/// Whether a plain `mi_malloc` of `size` bytes is aligned to `align`.
#[inline]
fn natural(size: usize, align: usize) -> bool {
    align <= NATURAL_ALIGN && size >= align && size.is_multiple_of(align)
}

// SAFETY: every pointer handed out comes from mimalloc and is aligned to the layout's
// alignment (see the module docs for why a plain call suffices for `natural` layouts);
// `mi_free` and `mi_realloc*` accept any pointer mimalloc returned, aligned or not.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: FFI calls with a non-zero size (GlobalAlloc's caller guarantees it).
        unsafe {
            if natural(layout.size(), layout.align()) {
                mi::mi_malloc(layout.size()) as *mut u8
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()) as *mut u8
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe {
            if natural(layout.size(), layout.align()) {
                mi::mi_zalloc(layout.size()) as *mut u8
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator, i.e. from mimalloc.
        unsafe { mi::mi_free(ptr as *mut c_void) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from mimalloc; the new block must satisfy the same alignment
        // at its new size, which `natural` checks again.
        unsafe {
            if natural(new_size, layout.align()) {
                mi::mi_realloc(ptr as *mut c_void, new_size) as *mut u8
            } else {
                mi::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size up to 8 KiB at every alignment up to 64 comes back aligned, writable,
    /// and keeps its bytes through a realloc (plain and aligned paths both).
    #[test]
    fn every_layout_is_aligned_and_keeps_its_bytes_through_realloc() {
        let a = MiMalloc;
        for align in [1usize, 2, 4, 8, 16, 32, 64] {
            for size in (1..=8192usize).filter(|s| s.is_multiple_of(align) || s.is_multiple_of(7)) {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: non-zero size; the pointer is checked, written within `size`,
                // and freed with its layout.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    p.write_bytes(0xA5, size);
                    let grown = size * 3 + 5;
                    let q = a.realloc(p, layout, grown);
                    assert!(!q.is_null());
                    assert_eq!(q as usize % align, 0, "realloc to {grown}, align {align}");
                    assert!((0..size).all(|i| *q.add(i) == 0xA5));
                    a.dealloc(q, Layout::from_size_align(grown, align).unwrap());
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0);
                    assert!((0..size).all(|i| *z.add(i) == 0));
                    a.dealloc(z, layout);
                }
            }
        }
    }

    #[test]
    fn only_layouts_every_block_satisfies_take_the_plain_call() {
        assert!(natural(8192, 1));
        assert!(natural(1832, 8));
        assert!(natural(48, 16));
        assert!(!natural(8, 16), "smaller than its alignment");
        assert!(!natural(24, 16), "not a multiple of its alignment");
        assert!(!natural(256, 128), "tokio's cache-padded task cells");
    }
}
