//! Copy buffers lent per burst from a per-thread pool.
//!
//! A flow takes a buffer when its socket has data and gives it back as soon as a read would
//! block, so an idle flow holds none: 5,000 idle flows held two 64 KiB buffers each before
//! (see BENCHMARKS.md). Each worker is one thread, so the pool needs no lock; it keeps at most
//! `POOL_MAX` (64) buffers per thread, so a burst of many active flows leaves at most that much
//! behind, and at most `POOL_BYTES` (4 MiB) of them, whatever their size. Buffers are never
//! zeroed: reads fill their spare capacity (`try_read_buf`), so a buffer costs memory only for
//! the bytes a read has put in it. The pool holds buffers of more than one size (a bulk flow
//! moves to a larger one, see `copy`); a flow gets one of the size it asks for.

use std::cell::{Cell, RefCell};
use std::ops::{Deref, DerefMut};

/// Buffers kept per thread for reuse (4 MiB at the default 64 KiB).
const POOL_MAX: usize = 64;

/// Bytes of buffers kept per thread for reuse.
const POOL_BYTES: usize = 4 << 20;

thread_local! {
    static POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static POOLED_BYTES: Cell<usize> = const { Cell::new(0) };
    static LENT: Cell<usize> = const { Cell::new(0) };
}

/// An empty buffer with room for `capacity` bytes, given back to this thread's pool when
/// dropped.
#[derive(Debug)]
pub struct Buffer(Vec<u8>);

impl Buffer {
    /// A buffer from the pool, or a new one.
    pub fn take(capacity: usize) -> Self {
        let pooled = POOL
            .try_with(|p| {
                let mut p = p.borrow_mut();
                // The most recently pooled of that size (warm in cache), usually the last.
                let at = p.iter().rposition(|b| b.capacity() == capacity)?;
                let _ = POOLED_BYTES.try_with(|n| n.set(n.get().saturating_sub(capacity)));
                Some(p.swap_remove(at))
            })
            .ok()
            .flatten();
        let _ = LENT.try_with(|n| n.set(n.get() + 1));
        Self(pooled.unwrap_or_else(|| Vec::with_capacity(capacity)))
    }

    /// Buffers taken on this thread and not given back yet.
    pub fn lent() -> usize {
        LENT.try_with(Cell::get).unwrap_or(0)
    }

    /// Buffers waiting in this thread's pool.
    pub fn pooled() -> usize {
        POOL.try_with(|p| p.borrow().len()).unwrap_or(0)
    }

    /// Buffers of `capacity` bytes waiting in this thread's pool.
    #[cfg(test)]
    pub(crate) fn pooled_of(capacity: usize) -> usize {
        POOL.try_with(|p| {
            p.borrow()
                .iter()
                .filter(|b| b.capacity() == capacity)
                .count()
        })
        .unwrap_or(0)
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        let _ = LENT.try_with(|n| n.set(n.get().saturating_sub(1)));
        let mut buf = std::mem::take(&mut self.0);
        buf.clear();
        // During thread teardown the pool may be gone; the buffer is then simply freed.
        let _ = POOL.try_with(|p| {
            let mut p = p.borrow_mut();
            let bytes = POOLED_BYTES.try_with(Cell::get).unwrap_or(usize::MAX);
            if p.len() < POOL_MAX && bytes.saturating_add(buf.capacity()) <= POOL_BYTES {
                let _ = POOLED_BYTES.try_with(|n| n.set(bytes + buf.capacity()));
                p.push(buf);
            }
        });
    }
}

impl Deref for Buffer {
    type Target = Vec<u8>;

    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl DerefMut for Buffer {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_empty_and_are_reused() {
        let mut b = Buffer::take(4096);
        b.extend_from_slice(b"data");
        let ptr = b.as_ptr();
        drop(b);
        assert_eq!(Buffer::pooled(), 1);
        let b = Buffer::take(4096);
        assert_eq!((b.as_ptr(), b.len(), b.capacity()), (ptr, 0, 4096));
        assert_eq!(Buffer::pooled(), 0);
    }

    #[test]
    fn each_size_gets_its_own_and_none_is_thrown_away() {
        let small = Buffer::take(2048);
        let large = Buffer::take(8192);
        let (small_ptr, large_ptr) = (small.as_ptr(), large.as_ptr());
        drop(large);
        drop(small);
        assert_eq!(Buffer::pooled(), 2);
        // The last one pooled is the small one: asking for a large one must not drop it.
        let large = Buffer::take(8192);
        assert_eq!((large.as_ptr(), large.capacity()), (large_ptr, 8192));
        let small = Buffer::take(2048);
        assert_eq!((small.as_ptr(), small.capacity()), (small_ptr, 2048));
        assert_eq!(Buffer::pooled(), 0);
    }

    #[test]
    fn the_pool_is_bounded_in_bytes() {
        let all: Vec<_> = (0..8).map(|_| Buffer::take(1 << 20)).collect();
        drop(all);
        assert_eq!(Buffer::pooled(), POOL_BYTES >> 20);
    }

    #[test]
    fn the_pool_is_bounded() {
        let all: Vec<_> = (0..POOL_MAX + 10).map(|_| Buffer::take(1024)).collect();
        drop(all);
        assert_eq!(Buffer::pooled(), POOL_MAX);
    }
}
