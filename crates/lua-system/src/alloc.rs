//! The accounts kept of one Lua state's allocations.
//!
//! Lua routes every allocation, resize and free of a state through a single `lua_Alloc`
//! function. When that function is ours (`ffi::alloc`), it reports each event here, so the
//! figures below are exact: they are sums over every block, not samples or estimates.
//!
//! * `live_bytes`: bytes in blocks the state holds now (Go's `HeapAlloc`).
//! * `total_bytes`: bytes ever allocated, never decreasing (Go's `TotalAlloc`). A resize counts
//!   its full new size, as Go counts a grown slice: the state asked for a block of that size.
//! * `mallocs`, `frees`: blocks allocated and freed (Go's `Mallocs`, `Frees`); their difference
//!   is the live block count, Go's `HeapObjects`.
//! * coroutines: Lua tells the allocator which new blocks are threads (the `osize` tag of a new
//!   block), so the live coroutines are tracked by address, exactly.
//!
//! Lua calls the allocator of a state from one thread at a time (a state is never run by two
//! threads at once), so each counter has a single writer and is updated with a relaxed load and
//! store, which costs no more than a plain add. Atomics keep reads from other threads (a host's
//! sampler) well defined.

use std::collections::HashSet;

use crate::faults::{self, Fault};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};

/// A counter with a single writer (see the module docs).
#[derive(Default)]
struct Counter(AtomicU64);

impl Counter {
    #[inline]
    fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    #[inline]
    fn sub(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_sub(n), Relaxed);
    }

    #[inline]
    fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// No limit: the largest `usize`, so the admission check needs no branch for "unset".
const NO_LIMIT: usize = usize::MAX;

/// The allocation accounts of one state.
pub(crate) struct Heap {
    live_bytes: Counter,
    /// The most `live_bytes` reached since the last cycle ended (the heap a cycle started from),
    /// tracked only while `watching_peaks`: by a second allocator function, so that states
    /// nobody watches pay nothing for it (`ffi/alloc.rs`).
    peak_bytes: Counter,
    watching_peaks: AtomicBool,
    total_bytes: Counter,
    mallocs: Counter,
    frees: Counter,
    limit: AtomicUsize,
    coroutines: Coroutines,
}

/// What [`Heap::figures`] reads in one go.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HeapFigures {
    pub total_bytes: u64,
    pub mallocs: u64,
    pub frees: u64,
}

impl Heap {
    pub(crate) fn new() -> Heap {
        Heap {
            live_bytes: Counter::default(),
            peak_bytes: Counter::default(),
            watching_peaks: AtomicBool::new(false),
            total_bytes: Counter::default(),
            mallocs: Counter::default(),
            frees: Counter::default(),
            limit: AtomicUsize::new(NO_LIMIT),
            coroutines: Coroutines::default(),
        }
    }

    /// Whether the state may grow by `growth` bytes under its memory limit. Lua answers a refusal
    /// with an emergency collection and, failing that, a "not enough memory" error.
    #[inline]
    pub(crate) fn admits(&self, growth: usize) -> bool {
        if faults::active(Fault::AllocatorFails) {
            return false;
        }
        let limit = self.limit.load(Relaxed);
        limit == NO_LIMIT || (self.live_bytes.get() as usize).saturating_add(growth) <= limit
    }

    /// Called by the watching allocator after a block grew the heap.
    #[inline]
    pub(crate) fn note_peak(&self) {
        let live = self.live_bytes.get();
        if live > self.peak_bytes.get() {
            self.peak_bytes.0.store(live, Relaxed);
        }
    }

    /// Starts (from the bytes live now) or stops tracking the peak; the caller switches the
    /// state's allocator function to match.
    pub(crate) fn watch_peaks(&self, on: bool) {
        self.peak_bytes.0.store(self.live_bytes.get(), Relaxed);
        self.watching_peaks.store(on, Relaxed);
    }

    /// The peak since the last call, which starts a new period at the bytes live now; `None`
    /// unless peaks are watched.
    pub(crate) fn take_peak(&self) -> Option<u64> {
        if !self.watching_peaks.load(Relaxed) {
            return None;
        }
        let peak = self.peak_bytes.get().max(self.live_bytes.get());
        self.peak_bytes.0.store(self.live_bytes.get(), Relaxed);
        Some(peak)
    }

    #[inline]
    pub(crate) fn record_new(&self, size: usize) {
        self.live_bytes.add(size as u64);
        self.total_bytes.add(size as u64);
        self.mallocs.add(1);
    }

    #[inline]
    pub(crate) fn record_resize(&self, old_size: usize, new_size: usize) {
        self.live_bytes.sub(old_size as u64);
        self.live_bytes.add(new_size as u64);
        self.total_bytes.add(new_size as u64);
    }

    #[inline]
    pub(crate) fn record_free(&self, address: usize, size: usize) {
        self.live_bytes.sub(size as u64);
        self.frees.add(1);
        self.coroutines.forget(address, size);
    }

    /// Records a new coroutine block. Returns false if the address could not be recorded
    /// (out of memory); the caller then fails the allocation so the count never drifts.
    pub(crate) fn record_coroutine(&self, address: usize, size: usize) -> bool {
        self.coroutines.remember(address, size)
    }

    /// Marks the coroutines alive now as the embedding library's own (mlua keeps one to hold
    /// references): they are not the script's and are not reported.
    pub(crate) fn hide_current_coroutines(&self) {
        self.coroutines.hidden.store(self.coroutines.live.load(Relaxed), Relaxed);
    }

    /// For a state created elsewhere: the bytes it held when the module started counting.
    pub(crate) fn set_initial_live_bytes(&self, bytes: u64) {
        self.live_bytes.0.store(bytes, Relaxed);
    }

    pub(crate) fn live_bytes(&self) -> u64 {
        self.live_bytes.get()
    }

    pub(crate) fn figures(&self) -> HeapFigures {
        HeapFigures { total_bytes: self.total_bytes.get(), mallocs: self.mallocs.get(), frees: self.frees.get() }
    }

    /// Coroutines alive, not counting the main thread or hidden ones.
    pub(crate) fn live_coroutines(&self) -> u64 {
        let live = self.coroutines.live.load(Relaxed);
        live.saturating_sub(self.coroutines.hidden.load(Relaxed)) as u64
    }

    pub(crate) fn memory_limit(&self) -> Option<usize> {
        Some(self.limit.load(Relaxed)).filter(|&l| l != NO_LIMIT)
    }

    /// Sets the limit (`None`: none) and returns the previous one. A limit below the bytes in
    /// use is accepted: it stops growth until enough is freed.
    pub(crate) fn set_memory_limit(&self, limit: Option<usize>) -> Option<usize> {
        let previous = self.limit.swap(limit.unwrap_or(NO_LIMIT), Relaxed);
        Some(previous).filter(|&l| l != NO_LIMIT)
    }
}

/// Live coroutine blocks, by address.
///
/// Every coroutine block has the same size (Lua's `sizeof(LX)`), learned from the first one, so
/// a free is looked up only when its size matches and some coroutine is alive. The set is
/// touched only when coroutines are created or may be freed, never on the common paths.
#[derive(Default)]
struct Coroutines {
    block_size: AtomicUsize,
    live: AtomicUsize,
    hidden: AtomicUsize,
    addresses: Mutex<HashSet<usize>>,
}

impl Coroutines {
    fn remember(&self, address: usize, size: usize) -> bool {
        let mut addresses = self.addresses.lock().unwrap_or_else(|poison| poison.into_inner());
        if addresses.try_reserve(1).is_err() {
            return false;
        }
        addresses.insert(address);
        self.block_size.store(size, Relaxed);
        self.live.store(addresses.len(), Relaxed);
        true
    }

    #[inline]
    fn forget(&self, address: usize, size: usize) {
        if size != self.block_size.load(Relaxed) || self.live.load(Relaxed) == 0 {
            return;
        }
        let mut addresses = self.addresses.lock().unwrap_or_else(|poison| poison.into_inner());
        if addresses.remove(&address) {
            self.live.store(addresses.len(), Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_blocks_bytes_and_resizes() {
        let heap = Heap::new();
        heap.record_new(100);
        heap.record_new(50);
        heap.record_resize(50, 80);
        heap.record_free(0x1000, 100);
        let f = heap.figures();
        assert_eq!(heap.live_bytes(), 80);
        assert_eq!(f.total_bytes, 230);
        assert_eq!((f.mallocs, f.frees), (2, 1));
    }

    #[test]
    fn limit_admits_up_to_and_including_the_limit() {
        let heap = Heap::new();
        heap.record_new(100);
        assert_eq!(heap.set_memory_limit(Some(150)), None);
        assert!(heap.admits(50));
        assert!(!heap.admits(51));
        assert_eq!(heap.set_memory_limit(None), Some(150));
        assert!(heap.admits(usize::MAX));
    }

    #[test]
    fn coroutines_are_forgotten_only_by_their_own_address() {
        let heap = Heap::new();
        assert!(heap.record_coroutine(0x10, 208));
        assert!(heap.record_coroutine(0x20, 208));
        heap.record_free(0x30, 208); // another block of the same size
        assert_eq!(heap.live_coroutines(), 2);
        heap.record_free(0x10, 208);
        assert_eq!(heap.live_coroutines(), 1);
    }
}
