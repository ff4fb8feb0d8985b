//! The SDK's global allocator in wasm builds (feature `arena`, on by default): a bump arena in
//! the module's zero-initialised data, in front of the system allocator.
//!
//! Why: a plugin call allocates a few short-lived values (the arguments the host copies in,
//! the answer it copies out). With only the system allocator, the first allocation of every
//! fresh instance grows linear memory, and on the host that growth — and undoing it when the
//! instance's memory slot is reused — changes page protections, which costs inter-processor
//! interrupts. The arena is part of the initial memory, so small calls never grow it.
//!
//! How: allocation bumps a pointer; freeing the most recent allocation rolls the pointer back;
//! when the last live arena allocation is freed (typically in the call's post-return), the
//! arena resets entirely. Requests that do not fit, and everything once the arena is full,
//! go to the system allocator, so correctness never depends on the arena.

#![allow(unsafe_code)] // a global allocator is unsafe by definition

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

const SIZE: usize = 128 << 10;

#[repr(C, align(16))]
struct Memory(UnsafeCell<[u8; SIZE]>);

// SAFETY: the arena is only reached through `ArenaAllocator`, whose bookkeeping makes every
// handed-out range disjoint; wasm32 plugins are single-threaded.
unsafe impl Sync for Memory {}

static MEMORY: Memory = Memory(UnsafeCell::new([0; SIZE]));
/// Bytes of the arena in use (the bump pointer, as an offset).
static TOP: AtomicUsize = AtomicUsize::new(0);
/// Arena allocations not yet freed.
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// A bump arena in front of [`System`].
pub struct ArenaAllocator;

fn base() -> usize {
    MEMORY.0.get() as usize
}

fn in_arena(ptr: *mut u8) -> bool {
    let p = ptr as usize;
    p >= base() && p < base() + SIZE
}

// SAFETY: arena ranges are carved from `MEMORY` without overlap (the bump pointer only moves
// back over the most recent allocation once it is freed, or to zero when nothing is live);
// everything else is delegated to `System` with the caller's layout.
unsafe impl GlobalAlloc for ArenaAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let top = TOP.load(Relaxed);
        let start = (base() + top).next_multiple_of(layout.align());
        let end = start + layout.size();
        if end <= base() + SIZE {
            TOP.store(end - base(), Relaxed);
            LIVE.fetch_add(1, Relaxed);
            return start as *mut u8;
        }
        // SAFETY: forwarded with the caller's valid layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !in_arena(ptr) {
            // SAFETY: `ptr` came from `System.alloc` with this layout.
            return unsafe { System.dealloc(ptr, layout) };
        }
        if LIVE.fetch_sub(1, Relaxed) == 1 {
            TOP.store(0, Relaxed);
        } else if ptr as usize + layout.size() == base() + TOP.load(Relaxed) {
            TOP.store(ptr as usize - base(), Relaxed);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = ptr as usize;
        // The most recent arena allocation can grow or shrink in place.
        if in_arena(ptr) && p + layout.size() == base() + TOP.load(Relaxed) && p + new_size <= base() + SIZE {
            TOP.store(p + new_size - base(), Relaxed);
            return ptr;
        }
        if !in_arena(ptr) {
            // SAFETY: `ptr` came from `System` with this layout.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: the new layout is valid (same alignment, size checked by the caller).
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: a fresh allocation, then a copy of the smaller of the two sizes.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test drives the single static arena through its cases in order.
    #[test]
    fn bump_rollback_reset_in_place_growth_and_fallback() {
        let a = ArenaAllocator;
        let l = |size| Layout::from_size_align(size, 8).unwrap();
        unsafe {
            let x = a.alloc(l(100));
            let y = a.alloc(l(50));
            assert!(in_arena(x) && in_arena(y));
            assert_eq!(y as usize, (x as usize + 100).next_multiple_of(8));
            x.write_bytes(1, 100);
            y.write_bytes(2, 50);
            // The last allocation grows in place.
            let y2 = a.realloc(y, l(50), 500);
            assert_eq!(y2, y);
            // Not the last one: moved, contents kept.
            let x2 = a.realloc(x, l(100), 200);
            assert_ne!(x2, x);
            assert_eq!(std::slice::from_raw_parts(x2, 100), [1u8; 100]);
            // Too big for the arena: the system allocator serves it.
            let big = a.alloc(l(SIZE + 1));
            assert!(!big.is_null() && !in_arena(big));
            a.dealloc(big, l(SIZE + 1));
            // Everything freed: the arena resets to empty.
            a.dealloc(y2, l(500));
            a.dealloc(x2, l(200));
            assert_eq!((TOP.load(Relaxed), LIVE.load(Relaxed)), (0, 0));
            // When full, allocation falls back instead of failing.
            let fill = a.alloc(l(SIZE - 64));
            let spill = a.alloc(l(128));
            assert!(in_arena(fill) && !in_arena(spill));
            a.dealloc(spill, l(128));
            a.dealloc(fill, l(SIZE - 64));
            assert_eq!(TOP.load(Relaxed), 0);
        }
    }
}
