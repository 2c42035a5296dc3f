//! The module's allocator: Redis's when running inside Redis, the system's otherwise (unit tests,
//! benchmarks), with a count of the bytes held (all threads) for INFO and benchmarks.

use std::alloc::{GlobalAlloc, Layout, System};

use redis_module::alloc::RedisAlloc;
use redis_module::raw;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// Wraps an allocator and counts what goes through it.
pub struct Counting<A>(pub A);

fn grew(bytes: usize) {
    let now = CURRENT.fetch_add(bytes, Relaxed) + bytes;
    // Read first: a new peak is rare, and `fetch_max` writes the shared line on every call.
    if now > PEAK.load(Relaxed) {
        PEAK.fetch_max(now, Relaxed);
    }
}

fn shrank(bytes: usize) {
    CURRENT.fetch_sub(bytes, Relaxed);
}

// SAFETY: every call is forwarded unchanged to the wrapped allocator; only counters are added.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Counting<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { self.0.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { self.0.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { self.0.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            shrank(layout.size());
            grew(new_size);
        }
        p
    }
}

/// Redis's allocator once `RedisModule_Init` has run (the first thing `RedisModule_OnLoad`
/// does, before any allocation of ours), the system's in a process that never loads us into
/// Redis. The choice never changes within a process, so every block is freed by the allocator
/// that made it.
pub struct RedisOrSystem;

fn in_redis() -> bool {
    // SAFETY: reads a function pointer Redis sets once, at load, before any allocation of ours.
    unsafe { std::ptr::addr_of!(raw::RedisModule_Alloc).read().is_some() }
}

// SAFETY: forwards to one of two allocators, always the same one within a process.
unsafe impl GlobalAlloc for RedisOrSystem {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        unsafe {
            if in_redis() {
                RedisAlloc.alloc(layout)
            } else {
                System.alloc(layout)
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours; the block came from the same allocator.
        unsafe {
            if in_redis() {
                RedisAlloc.dealloc(ptr, layout)
            } else {
                System.dealloc(ptr, layout)
            }
        }
    }
}

/// Bytes held now.
pub fn current() -> usize {
    CURRENT.load(Relaxed)
}

/// The most ever held since the process started.
pub fn peak() -> usize {
    PEAK.load(Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_what_is_held() {
        // The counters are global and other tests allocate meanwhile: sizes far above what they
        // hold (untouched pages of System's mmap cost nothing) make the change unmistakable.
        const MIB: usize = 1 << 20;
        const NOISE: usize = 32 * MIB;
        let a = Counting(std::alloc::System);
        let layout = Layout::from_size_align(256 * MIB, 8).unwrap();
        let before = current();
        // SAFETY: valid layouts; the block is freed with the layout it has then.
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            assert!(current() + NOISE >= before + 256 * MIB, "counted");
            let p = a.realloc(p, layout, 512 * MIB);
            assert!(!p.is_null());
            assert!(peak() >= 512 * MIB);
            let held = current();
            a.dealloc(p, Layout::from_size_align(512 * MIB, 8).unwrap());
            assert!(current() + 512 * MIB <= held + NOISE, "freed");
        }
    }
}
