//! The accounts kept of one Lua state's heap, written by the module's allocator
//! (`ffi/lua_alloc.rs`) on every allocation, resize and free, and read by everything else.
//!
//! * `live_bytes`: bytes in blocks the state holds now (Go's `HeapAlloc`).
//! * `total_bytes`: bytes ever allocated, never decreasing (Go's `TotalAlloc`). A resize counts
//!   its full new size, as Go counts a grown slice: the state asked for a block of that size.
//! * `mallocs`, `frees`: blocks allocated and freed (Go's `Mallocs`, `Frees`); their difference
//!   is the live block count, Go's `HeapObjects`.
//! * the memory limit the allocator enforces, and the heap's peak between cycles (tracked only
//!   while someone watches, by a second allocator function).
//!
//! Which blocks the counts cover depends on the state's accounting (`state/mod.rs`): every
//! block since the state was created, or those seen since the module was loaded into it.
//!
//! Lua calls the allocator of a state from one thread at a time (a state is never run by two
//! threads at once), so each counter has a single writer and is updated with a relaxed load and
//! store: plain moves on every mainstream CPU, no read-modify-write. Atomics keep reads from
//! other threads (a host's sampler) well defined.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};

use crate::faults::{self, Fault};

/// A counter with a single writer (see the module docs).
#[derive(Default)]
struct Counter(AtomicU64);

impl Counter {
    #[inline(always)]
    fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    #[inline(always)]
    fn sub(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_sub(n), Relaxed);
    }

    #[inline(always)]
    fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }

    fn set(&self, n: u64) {
        self.0.store(n, Relaxed);
    }
}

/// No limit: the largest `usize`, so the admission check needs no branch for "unset".
const NO_LIMIT: usize = usize::MAX;

/// The allocation accounts of one state.
pub(crate) struct Heap {
    live_bytes: Counter,
    total_bytes: Counter,
    mallocs: Counter,
    frees: Counter,
    limit: AtomicUsize,
    /// Bytes the state may hold past its limit just now: 0; a host's reserve for its error and
    /// exit paths ([`Heap::open_reserve`]); or unbounded while the module itself allocates
    /// something it cannot do without (the cycle sentinel, [`Heap::over_limit`]).
    allowance: AtomicUsize,
    /// What a reserve is counted from: the limit, or the heap's size when the limit was set if
    /// that was larger (a limit below the bytes in use stops growth, and a reserve then still
    /// gives room).
    reserve_base: AtomicUsize,
    /// The most `live_bytes` reached since the last cycle ended (the heap a cycle started from),
    /// tracked only while `watching_peaks`.
    peak_bytes: Counter,
    watching_peaks: AtomicBool,
}

/// What [`Heap::figures`] reads in one go.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HeapFigures {
    pub live_bytes: u64,
    pub total_bytes: u64,
    pub mallocs: u64,
    pub frees: u64,
}

impl HeapFigures {
    /// Live blocks. Read from another thread, a free counted after the mallocs were read could
    /// make the difference negative: never below zero.
    pub fn objects(&self) -> u64 {
        self.mallocs.saturating_sub(self.frees)
    }
}

impl Heap {
    pub(crate) fn new() -> Heap {
        Heap {
            live_bytes: Counter::default(),
            total_bytes: Counter::default(),
            mallocs: Counter::default(),
            frees: Counter::default(),
            limit: AtomicUsize::new(NO_LIMIT),
            allowance: AtomicUsize::new(0),
            reserve_base: AtomicUsize::new(NO_LIMIT),
            peak_bytes: Counter::default(),
            watching_peaks: AtomicBool::new(false),
        }
    }

    /// For a state created elsewhere: the bytes (and, when known, the blocks) it holds when the
    /// module starts counting. They count as allocated then, so `total_bytes >= live_bytes` and
    /// `mallocs >= frees` hold from the start.
    pub(crate) fn start_from(&self, live_bytes: u64, blocks: u64) {
        self.live_bytes.set(live_bytes);
        self.total_bytes.set(live_bytes);
        self.mallocs.set(blocks);
    }

    /// Whether the state may grow by `growth` bytes under its memory limit. Lua answers a refusal
    /// with an emergency collection and, failing that, a "not enough memory" error.
    #[inline(always)]
    pub(crate) fn admits(&self, growth: usize) -> bool {
        if faults::active(Fault::AllocatorFails) {
            return false;
        }
        let ceiling = self.limit.load(Relaxed).saturating_add(self.allowance.load(Relaxed));
        (self.live_bytes.get() as usize).saturating_add(growth) <= ceiling
    }

    /// Whether a state whose allocator also holds `resident` bytes of pages (its own arena's)
    /// may grow by `growth` bytes: the larger of its live bytes and its resident pages, under
    /// the limit.
    #[cfg_attr(not(feature = "jemalloc"), allow(dead_code))] // the arena's
    #[inline(always)]
    pub(crate) fn admits_resident(&self, growth: usize, resident: usize) -> bool {
        if faults::active(Fault::AllocatorFails) {
            return false;
        }
        let ceiling = self.limit.load(Relaxed).saturating_add(self.allowance.load(Relaxed));
        (self.live_bytes.get() as usize).max(resident).saturating_add(growth) <= ceiling
    }

    /// Runs `f` with the memory limit lifted: for the few blocks the module must have (the
    /// cycle sentinel), so that counting never stops at the limit.
    pub(crate) fn over_limit<T>(&self, f: impl FnOnce() -> T) -> T {
        let previous = self.allowance.swap(usize::MAX, Relaxed);
        let result = f();
        self.allowance.store(previous, Relaxed);
        result
    }

    /// Lets the state hold up to `bytes` past its limit (or past the heap's size when the limit
    /// was set, if that was larger) until [`Heap::close_reserve`]. Not cumulative: opening
    /// again replaces the reserve, so the heap never exceeds that base by more than the largest
    /// reserve opened, whether or not it is closed.
    pub(crate) fn open_reserve(&self, bytes: usize) {
        let past_limit = self.reserve_base.load(Relaxed).saturating_sub(self.limit.load(Relaxed));
        self.allowance.store(past_limit.saturating_add(bytes), Relaxed);
    }

    /// Ends the reserve: the limit applies exactly again.
    pub(crate) fn close_reserve(&self) {
        self.allowance.store(0, Relaxed);
    }

    #[inline(always)]
    pub(crate) fn record_new(&self, size: usize) {
        self.live_bytes.add(size as u64);
        self.total_bytes.add(size as u64);
        self.mallocs.add(1);
    }

    #[inline(always)]
    pub(crate) fn record_resize(&self, old_size: usize, new_size: usize) {
        self.live_bytes.add((new_size as u64).wrapping_sub(old_size as u64));
        self.total_bytes.add(new_size as u64);
    }

    /// A resize of a block the counts do not cover yet (interposed states: allocated before the
    /// module was loaded): from now on they do, as if it had just been allocated.
    #[inline(always)]
    pub(crate) fn record_adopted(&self, old_size: usize, new_size: usize) {
        self.live_bytes.add((new_size as u64).wrapping_sub(old_size as u64));
        self.total_bytes.add(new_size as u64);
        self.mallocs.add(1);
    }

    /// A free of a block the counts cover.
    #[inline(always)]
    pub(crate) fn record_free(&self, size: usize) {
        self.live_bytes.sub(size as u64);
        self.frees.add(1);
    }

    /// A resize of a block the counts do not cover, which stays uncovered (the module could not
    /// record it): only the bytes change.
    #[inline(always)]
    pub(crate) fn record_untracked_resize(&self, old_size: usize, new_size: usize) {
        self.live_bytes.add((new_size as u64).wrapping_sub(old_size as u64));
        self.total_bytes.add(new_size as u64);
    }

    /// A free of a block the counts do not cover: only the bytes change.
    #[inline(always)]
    pub(crate) fn record_untracked_free(&self, size: usize) {
        self.live_bytes.sub(size as u64);
    }

    #[inline(always)]
    pub(crate) fn live_bytes(&self) -> u64 {
        self.live_bytes.get()
    }

    pub(crate) fn figures(&self) -> HeapFigures {
        // Frees before mallocs: a reader on another thread never sees more frees than mallocs.
        let frees = self.frees.get();
        HeapFigures {
            live_bytes: self.live_bytes.get(),
            total_bytes: self.total_bytes.get(),
            mallocs: self.mallocs.get(),
            frees,
        }
    }

    pub(crate) fn memory_limit(&self) -> Option<usize> {
        Some(self.limit.load(Relaxed)).filter(|&l| l != NO_LIMIT)
    }

    /// Sets the limit (`None`: none) and returns the previous one. A limit below the bytes in
    /// use is accepted: it stops growth until enough is freed.
    pub(crate) fn set_memory_limit(&self, limit: Option<usize>) -> Option<usize> {
        let limit = limit.unwrap_or(NO_LIMIT);
        self.reserve_base.store(limit.max(self.live_bytes.get() as usize), Relaxed);
        let previous = self.limit.swap(limit, Relaxed);
        Some(previous).filter(|&l| l != NO_LIMIT)
    }

    /// Called by the watching allocator after a block grew the heap.
    #[inline(always)]
    pub(crate) fn note_peak(&self) {
        let live = self.live_bytes.get();
        if live > self.peak_bytes.get() {
            self.peak_bytes.set(live);
        }
    }

    /// Starts (from the bytes live now) or stops tracking the peak; the caller switches the
    /// state's allocator function to match.
    pub(crate) fn watch_peaks(&self, on: bool) {
        self.peak_bytes.set(self.live_bytes.get());
        self.watching_peaks.store(on, Relaxed);
    }

    /// Whether the peak is tracked (the allocator function must match).
    pub(crate) fn watching_peaks(&self) -> bool {
        self.watching_peaks.load(Relaxed)
    }

    /// The peak since the last call, which starts a new period at the bytes live now; `None`
    /// unless peaks are watched.
    pub(crate) fn take_peak(&self) -> Option<u64> {
        if !self.watching_peaks.load(Relaxed) {
            return None;
        }
        let live = self.live_bytes.get();
        let peak = self.peak_bytes.get().max(live);
        self.peak_bytes.set(live);
        Some(peak)
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
        heap.record_resize(80, 30);
        heap.record_free(100);
        let f = heap.figures();
        assert_eq!(heap.live_bytes(), 30);
        assert_eq!(f.total_bytes, 260);
        assert_eq!((f.mallocs, f.frees, f.objects()), (2, 1, 1));
    }

    #[test]
    fn limit_admits_up_to_and_including_the_limit() {
        let heap = Heap::new();
        heap.record_new(100);
        assert_eq!(heap.set_memory_limit(Some(150)), None);
        assert!(heap.admits(50));
        assert!(!heap.admits(51));
        assert!(heap.over_limit(|| heap.admits(1000)), "lifted for the module's own blocks");
        assert!(!heap.admits(51), "and only then");
        heap.open_reserve(10);
        assert!(heap.admits(60) && !heap.admits(61), "a reserve: ten bytes more");
        heap.open_reserve(10);
        assert!(!heap.admits(61), "opening again does not add up");
        heap.close_reserve();
        assert!(!heap.admits(51), "closed: the limit again");
        heap.set_memory_limit(Some(0));
        assert!(!heap.admits(1), "a limit below the heap stops growth");
        heap.open_reserve(10);
        assert!(heap.admits(10) && !heap.admits(11), "the reserve counts from the heap then");
        heap.close_reserve();
        assert_eq!(heap.set_memory_limit(None), Some(0));
        assert!(heap.admits(usize::MAX));
    }
}
