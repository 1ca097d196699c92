//! The module's `lua_Alloc` functions. A state's accounting, and whether someone watches its
//! peaks, are chosen once by installing one of these functions (`lua_setallocf`), so none of
//! them branches on a mode.
//!
//! * [`exact`]: states the module creates. Every block goes through the Rust global allocator
//!   (jemalloc in the runner), so the process allocator sees the Lua heap as part of the process
//!   heap, and every event is recorded in the state's [`Heap`]. Blocks are aligned as `malloc`
//!   aligns them. The state's accounts are its record's `Heap`.
//! * [`chained`]: states made by mlua for [`SystemLua`](crate::SystemLua): mlua's allocator keeps
//!   serving every block (and gets its allocator back when the `SystemLua` is dropped); the
//!   module records every event on the way. Its counts start from the bare state's, known
//!   exactly (`host/system_lua.rs`), so they cover every block.
//! * [`interposed`]: states made elsewhere, when the module is loaded into them. As `chained`,
//!   and the module tracks which blocks it has seen allocated (the [`Chain`]'s set), so that
//!   block counts cover exactly those.
//! * `PEAKS`: the same, also tracking the heap's peak between cycles (for a cycle hook).
//! * `PROFILE`: the same, wrapped by [`profiled`], which samples for the heap profiler. The
//!   functions without it are the accounting alone, untouched by the profiler's code.
//!
//! Every variant serves the same blocks, so a state switches between them at any time.
//!
//! Every function follows the `lua_Alloc` contract: `nsize == 0` frees, a NULL `block`
//! allocates (then `osize` is a type tag in Lua 5.2 and later), anything else resizes; a failed
//! growth answers NULL (Lua then collects and retries, or raises "not enough memory"), and a
//! shrink never fails. None of them unwinds.

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error, realloc};
use std::cell::UnsafeCell;
use std::ffi::c_void;
use std::ptr;

use mlua::ffi;

use super::block_set::BlockSet;
use super::coroutines::ThreadBlocks;
use super::{Record, emergency};
use crate::accounts::heap::Heap;
use crate::accounts::heap_sampler::HeapSampler;
use crate::accounts::running::RunningThread;

const ALIGN: usize = ffi::SYS_MIN_ALIGN;

/// Whether a new block is a coroutine. When `block` is NULL, Lua 5.2 and later pass the type of
/// the object being created in `osize` (`LUA_TTHREAD` for a thread); 5.1 and LuaJIT pass 0.
#[inline(always)]
fn is_thread_tag(osize: usize) -> bool {
    super::coroutines::ALLOCATOR_SEES_THREADS && osize == ffi::LUA_TTHREAD as usize
}

/// The allocator of accounted states; its `ud` is the state's record. `PEAKS`: also tracking
/// the heap's peak between cycles; `PROFILE`: sampling for the heap profiler.
pub(crate) unsafe extern "C" fn exact<R: Record, const PEAKS: bool, const PROFILE: bool>(
    ud: *mut c_void,
    block: *mut c_void,
    osize: usize,
    nsize: usize,
) -> *mut c_void {
    // SAFETY: forwarded under the same contract.
    unsafe {
        if PROFILE {
            profiled::<R>(ud, block, osize, nsize, exact_with::<R, PEAKS>)
        } else {
            exact_with::<R, PEAKS>(ud, block, osize, nsize)
        }
    }
}

#[inline(always)]
unsafe fn exact_with<R: Record, const PEAKS: bool>(
    ud: *mut c_void,
    block: *mut c_void,
    osize: usize,
    nsize: usize,
) -> *mut c_void {
    // SAFETY: `ud` is the record passed to `lua_newstate`, freed only after `lua_close`.
    let record = unsafe { &*(ud as *const R) };
    let (heap, threads) = (record.heap(), record.thread_blocks());

    if nsize == 0 {
        if !block.is_null() {
            heap.record_free(osize);
            if threads.may_hold(osize) {
                // SAFETY: as below.
                return unsafe { free_thread_block(threads, block, osize) };
            }
            // SAFETY: Lua passes the size the block was allocated or last resized with, and
            // that size formed a valid layout then.
            unsafe { dealloc(block.cast(), Layout::from_size_align_unchecked(osize, ALIGN)) };
        }
        return ptr::null_mut();
    }

    let Ok(layout) = Layout::from_size_align(nsize, ALIGN) else {
        return ptr::null_mut();
    };

    if block.is_null() {
        if is_thread_tag(osize) {
            // SAFETY: `layout` has a non-zero size; `ud` is the record.
            return unsafe { new_thread_block::<R, PEAKS>(heap, threads, layout, ud) };
        }
        // SAFETY: as above; called by the state's allocator.
        let refuse = move || unsafe { emergency::refuse::<R>(ud, block, osize, nsize) };
        // SAFETY: as above.
        return unsafe { new_block::<PEAKS>(heap, layout, |_| true, refuse) };
    }

    if nsize > osize && !heap.admits(nsize - osize) {
        // SAFETY: called by the state's allocator.
        return unsafe { emergency::refuse::<R>(ud, block, osize, nsize) };
    }
    // SAFETY: `block` was allocated here with size `osize` (see `dealloc` above); `nsize` is
    // non-zero and forms a valid layout.
    let resized = unsafe { realloc(block.cast(), Layout::from_size_align_unchecked(osize, ALIGN), nsize) };
    if resized.is_null() {
        if nsize <= osize {
            // Lua assumes a shrink cannot fail and would keep using the old size.
            handle_alloc_error(layout);
        }
        return ptr::null_mut();
    }
    heap.record_resize(osize, nsize);
    if PEAKS && nsize > osize {
        heap.note_peak();
    }
    resized.cast()
}

/// A new block for an accounted state, recorded if admitted under the limit, allocated, and
/// accepted by `keep` (which, refusing, has recorded nothing: the block is given back).
///
/// # Safety
/// `layout` has a non-zero size.
#[inline(always)]
unsafe fn new_block<const PEAKS: bool>(
    heap: &Heap,
    layout: Layout,
    keep: impl FnOnce(*mut u8) -> bool,
    refuse: impl FnOnce() -> *mut c_void,
) -> *mut c_void {
    if !heap.admits(layout.size()) {
        return refuse();
    }
    // SAFETY: per the contract.
    let new = unsafe { alloc(layout) };
    if new.is_null() {
        return ptr::null_mut();
    }
    if !keep(new) {
        // SAFETY: allocated just above with `layout`.
        unsafe { dealloc(new, layout) };
        return ptr::null_mut();
    }
    heap.record_new(layout.size());
    if PEAKS {
        heap.note_peak();
    }
    new.cast()
}

/// A new thread block for an accounted state: the state's first is its main thread, later ones
/// are coroutines, remembered (`ThreadBlocks`). Out of line and called in tail position, as
/// [`free_thread_block`] is: a call with values live after it makes `exact` save more registers
/// on every allocation (BENCHMARKS.md, "What the allocation paths cost").
///
/// # Safety
/// As [`new_block`].
#[cold]
#[inline(never)]
unsafe fn new_thread_block<R: Record, const PEAKS: bool>(
    heap: &Heap,
    threads: &ThreadBlocks,
    layout: Layout,
    ud: *mut c_void,
) -> *mut c_void {
    let coroutine = heap.figures().mallocs > 0;
    // A refusal of the request Lua made: a new block (NULL) tagged as a thread.
    // SAFETY: `ud` is the record, and this is its allocator.
    let refuse =
        move || unsafe { emergency::refuse::<R>(ud, ptr::null_mut(), ffi::LUA_TTHREAD as usize, layout.size()) };
    // SAFETY: per the contract.
    unsafe {
        new_block::<PEAKS>(
            heap,
            layout,
            |new| !coroutine || threads.remember_inline(new as usize, layout.size()),
            refuse,
        )
    }
}

/// Frees a block of an accounted state that may be a coroutine's (`ThreadBlocks::may_hold`),
/// forgetting it if it is; answers NULL. Out of line, as [`new_thread_block`].
///
/// # Safety
/// As for the free in `exact`.
#[cold]
#[inline(never)]
unsafe fn free_thread_block(threads: &ThreadBlocks, block: *mut c_void, osize: usize) -> *mut c_void {
    // SAFETY: per the contract (this is the state's allocator).
    unsafe { threads.forget_inline(block as usize) };
    // SAFETY: per the contract.
    unsafe { dealloc(block.cast(), Layout::from_size_align_unchecked(osize, ALIGN)) };
    ptr::null_mut()
}

/// The allocator an interposed state's requests are passed on to, and the blocks the module has
/// seen allocated (or resized) since it was loaded.
pub(crate) struct Chain {
    alloc: ffi::lua_Alloc,
    ud: usize,
    tracked: Tracked,
    /// Whether the interposed allocator frees the record after the state's last block (records
    /// of states the module was loaded into), rather than its owner (a `SystemLua`).
    freed_with_state: bool,
    /// Whether the owner has let go of a state whose allocator could not be given back (it had
    /// blocks in an arena of its own): the contained allocator then frees the record after the
    /// state's last block, and the module's functions answer that the record is gone.
    handed_over: std::sync::atomic::AtomicBool,
}

/// The set of tracked blocks, touched only by the state's allocator.
struct Tracked(UnsafeCell<BlockSet>);

// SAFETY: only `interposed` touches the set, and Lua calls a state's allocator from one thread at
// a time (a host moving a state between threads synchronises the move itself). Readers on other
// threads never touch it.
unsafe impl Sync for Tracked {}

impl Chain {
    /// The chain to the allocator `alloc` with its data `ud`; `freed_with_state` if the record
    /// holding the chain is leaked, to be freed after the state's last block.
    pub(crate) fn new(alloc: ffi::lua_Alloc, ud: *mut c_void, freed_with_state: bool) -> Chain {
        Chain {
            alloc,
            ud: ud as usize,
            tracked: Tracked(UnsafeCell::new(BlockSet::default())),
            freed_with_state,
            handed_over: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Records that the owner let go of the state (see the field).
    #[cfg_attr(not(feature = "jemalloc"), allow(dead_code))] // only arenas need it
    pub(crate) fn hand_over(&self) {
        self.handed_over.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether the owner let go of the state.
    #[inline]
    pub(crate) fn handed_over(&self) -> bool {
        self.handed_over.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The state's own allocator and its data.
    pub(crate) fn original(&self) -> (ffi::lua_Alloc, *mut c_void) {
        (self.alloc, self.ud as *mut c_void)
    }

    #[inline(always)]
    fn next(&self, block: *mut c_void, osize: usize, nsize: usize) -> *mut c_void {
        // SAFETY: the state's own allocator, with its own `ud`, under the lua_Alloc contract.
        unsafe { (self.alloc)(self.ud as *mut c_void, block, osize, nsize) }
    }

    /// The tracked set; only from the state's allocator (see [`Tracked`]).
    #[allow(clippy::mut_from_ref)]
    #[inline(always)]
    unsafe fn tracked(&self) -> &mut BlockSet {
        // SAFETY: per the contract, no other reference to the set exists meanwhile.
        unsafe { &mut *self.tracked.0.get() }
    }
}

/// The allocator of states made by mlua for a `SystemLua`: counts every block, passes every
/// request on to the state's own allocator. Its `ud` is the state's record, owned by the
/// `SystemLua`. `PEAKS` and `PROFILE` as for [`exact`].
pub(crate) unsafe extern "C" fn chained<R: Record, const PEAKS: bool, const PROFILE: bool>(
    ud: *mut c_void,
    block: *mut c_void,
    osize: usize,
    nsize: usize,
) -> *mut c_void {
    // SAFETY: forwarded under the same contract.
    unsafe {
        if PROFILE {
            profiled::<R>(ud, block, osize, nsize, chained_with::<R, PEAKS>)
        } else {
            chained_with::<R, PEAKS>(ud, block, osize, nsize)
        }
    }
}

#[inline(always)]
unsafe fn chained_with<R: Record, const PEAKS: bool>(
    ud: *mut c_void,
    block: *mut c_void,
    osize: usize,
    nsize: usize,
) -> *mut c_void {
    // SAFETY: `ud` is the record installed with this function, alive while it is installed.
    let record = unsafe { &*(ud as *const R) };
    let (heap, threads) = (record.heap(), record.thread_blocks());
    let Some(chain) = record.chain() else {
        return ptr::null_mut(); // unreachable: chained records always have a chain
    };

    if nsize == 0 {
        if !block.is_null() {
            heap.record_free(osize);
            // SAFETY: this is the state's allocator.
            unsafe { threads.forget(block as usize, osize) };
            chain.next(block, osize, 0);
        }
        return ptr::null_mut();
    }

    if block.is_null() {
        if !heap.admits(nsize) {
            // SAFETY: called by the state's allocator.
            return unsafe { emergency::refuse::<R>(ud, block, osize, nsize) };
        }
        let new = chain.next(ptr::null_mut(), osize, nsize);
        if new.is_null() {
            return new;
        }
        // SAFETY: this is the state's allocator.
        if is_thread_tag(osize) && !unsafe { threads.remember(new as usize, nsize) } {
            chain.next(new, nsize, 0);
            return ptr::null_mut();
        }
        heap.record_new(nsize);
        if PEAKS {
            heap.note_peak();
        }
        return new;
    }

    if nsize > osize && !heap.admits(nsize - osize) {
        // SAFETY: called by the state's allocator.
        return unsafe { emergency::refuse::<R>(ud, block, osize, nsize) };
    }
    let resized = chain.next(block, osize, nsize);
    if !resized.is_null() {
        heap.record_resize(osize, nsize);
        if PEAKS && nsize > osize {
            heap.note_peak();
        }
    }
    resized
}

/// The allocator of states the module was loaded into; its `ud` is the state's record, of which
/// it holds a reference (`Arc::into_raw`) that it releases after the state's last block (Lua 5.1
/// to 5.5 free the main state last: once no byte is live, nothing will call it again).
pub(crate) unsafe extern "C" fn interposed<R: Record, const PROFILE: bool>(
    ud: *mut c_void,
    block: *mut c_void,
    osize: usize,
    nsize: usize,
) -> *mut c_void {
    // SAFETY: forwarded under the same contract.
    unsafe {
        if PROFILE {
            profiled::<R>(ud, block, osize, nsize, interposed_with::<R>)
        } else {
            interposed_with::<R>(ud, block, osize, nsize)
        }
    }
}

#[inline(always)]
unsafe fn interposed_with<R: Record>(ud: *mut c_void, block: *mut c_void, osize: usize, nsize: usize) -> *mut c_void {
    // SAFETY: `ud` is the record installed with this function, alive until freed below.
    let record = unsafe { &*(ud as *const R) };
    let (heap, threads) = (record.heap(), record.thread_blocks());
    let Some(chain) = record.chain() else {
        return ptr::null_mut(); // unreachable: interposed records always have a chain
    };
    // SAFETY: this is the state's allocator, the only user of the set.
    let tracked = unsafe { chain.tracked() };

    if nsize == 0 {
        if !block.is_null() {
            if tracked.remove(block as usize) {
                heap.record_free(osize);
            } else {
                heap.record_untracked_free(osize);
            }
            // SAFETY: this is the state's allocator.
            unsafe { threads.forget(block as usize, osize) };
            chain.next(block, osize, 0);
            if heap.live_bytes() == 0 && chain.freed_with_state && !cfg!(feature = "luajit") {
                // That was the main state, freed last by `lua_close`. (LuaJIT gives its own
                // allocator back before that: `foreign.rs`.)
                // SAFETY: the allocator's reference, made by `foreign::attach` with
                // `Arc::into_raw`; nothing calls this allocator again.
                drop(unsafe { std::sync::Arc::from_raw(ud as *const R) });
            }
        }
        return ptr::null_mut();
    }

    if block.is_null() {
        if !heap.admits(nsize) {
            // SAFETY: called by the state's allocator.
            return unsafe { emergency::refuse::<R>(ud, block, osize, nsize) };
        }
        let new = chain.next(ptr::null_mut(), osize, nsize);
        if new.is_null() {
            return new;
        }
        // A block the set cannot record (no memory for its bitmap) is given back and the
        // allocation fails: Lua collects and retries, and the set never drifts.
        if tracked.insert(new as usize).is_err() {
            chain.next(new, nsize, 0);
            return ptr::null_mut();
        }
        // SAFETY: this is the state's allocator.
        if is_thread_tag(osize) && !unsafe { threads.remember(new as usize, nsize) } {
            tracked.remove(new as usize);
            chain.next(new, nsize, 0);
            return ptr::null_mut();
        }
        heap.record_new(nsize);
        return new;
    }

    if nsize > osize && !heap.admits(nsize - osize) {
        // SAFETY: called by the state's allocator.
        return unsafe { emergency::refuse::<R>(ud, block, osize, nsize) };
    }
    let resized = chain.next(block, osize, nsize);
    if resized.is_null() {
        return resized;
    }
    let was_tracked = tracked.remove(block as usize);
    // Without memory to record the resized block, it leaves the tracked set: its bytes stay
    // counted, its block no longer is (a shrink, which Lua assumes never fails, must succeed).
    let recorded = tracked.insert(resized as usize).is_ok();
    match (recorded, was_tracked) {
        (true, true) => heap.record_resize(osize, nsize),
        (true, false) => heap.record_adopted(osize, nsize),
        (false, true) => {
            heap.record_free(osize);
            heap.record_untracked_resize(0, nsize);
        }
        (false, false) => heap.record_untracked_resize(osize, nsize),
    }
    resized
}

/// The allocator of a state with a memory limit and an arena of its own (feature `jemalloc`,
/// `arena.rs`): new blocks come from the arena, and the limit counts the arena's resident pages
/// as well as the live bytes; blocks allocated before the arena (by the module's own allocator
/// or a chain) are freed where they came from, and moved into the arena when they are resized.
/// `PEAKS` and `PROFILE` as for [`exact`].
#[cfg(feature = "jemalloc")]
pub(crate) unsafe extern "C" fn contained<R: Record, const PEAKS: bool, const PROFILE: bool>(
    ud: *mut c_void,
    block: *mut c_void,
    osize: usize,
    nsize: usize,
) -> *mut c_void {
    // SAFETY: forwarded under the same contract.
    unsafe {
        if PROFILE {
            profiled::<R>(ud, block, osize, nsize, contained_with::<R, PEAKS>)
        } else {
            contained_with::<R, PEAKS>(ud, block, osize, nsize)
        }
    }
}

#[cfg(feature = "jemalloc")]
#[inline(always)]
unsafe fn contained_with<R: Record, const PEAKS: bool>(
    ud: *mut c_void,
    block: *mut c_void,
    osize: usize,
    nsize: usize,
) -> *mut c_void {
    // SAFETY: `ud` is the record installed with this function, alive while it is installed.
    let record = unsafe { &*(ud as *const R) };
    let (heap, threads) = (record.heap(), record.thread_blocks());
    let Some(arena) = record.arena() else {
        return ptr::null_mut(); // unreachable: this function is installed with an arena
    };
    // Whether the state may grow by `growth` bytes: its live bytes and its arena's charged
    // resident pages under the limit, after a purge if need be.
    let admits = |growth: usize| {
        heap.admits_resident(growth, arena.charged_bytes()) || {
            arena.purge();
            heap.admits_resident(growth, arena.charged_bytes())
        }
    };

    if nsize == 0 {
        if !block.is_null() {
            heap.record_free(osize);
            // SAFETY: this is the state's allocator; the block is the arena's or the previous
            // allocator's.
            unsafe {
                threads.forget(block as usize, osize);
                if !arena.free(block, osize) {
                    free_elsewhere(record, block, osize);
                }
            }
            if heap.live_bytes() == 0 && record.chain().is_some_and(Chain::handed_over) {
                // That was the main state, freed last by `lua_close`, of a state its owner let
                // go of: the reference `foreign::give_back_to` left to this allocator goes.
                // SAFETY: that reference, made with `Arc::increment_strong_count`; nothing
                // calls this allocator again.
                drop(unsafe { std::sync::Arc::from_raw(ud as *const R) });
            }
        }
        return ptr::null_mut();
    }

    if block.is_null() {
        if !admits(nsize) {
            // SAFETY: called by the state's allocator.
            return unsafe { emergency::refuse::<R>(ud, block, osize, nsize) };
        }
        // SAFETY: this is the state's allocator; `nsize` is non-zero.
        let new = unsafe { arena.alloc(nsize) };
        if new.is_null() {
            return new;
        }
        // The state's first block is its main thread (a state contained from birth).
        let coroutine = is_thread_tag(osize) && heap.figures().mallocs > 0;
        // SAFETY: this is the state's allocator.
        if coroutine && !unsafe { threads.remember(new as usize, nsize) } {
            // SAFETY: allocated just above.
            unsafe { arena.free(new, nsize) };
            return ptr::null_mut();
        }
        heap.record_new(nsize);
        if PEAKS {
            heap.note_peak();
        }
        return new;
    }

    if nsize > osize && !admits(nsize - osize) {
        // SAFETY: called by the state's allocator.
        return unsafe { emergency::refuse::<R>(ud, block, osize, nsize) };
    }
    // SAFETY: this is the state's allocator; `block` was allocated or last resized to `osize`,
    // by the arena or before it.
    let resized = unsafe {
        if arena.holds(block) {
            arena.realloc(block, osize, nsize)
        } else {
            // Moved into the arena: copied, then freed where it came from.
            let moved = arena.alloc(nsize);
            if !moved.is_null() {
                ptr::copy_nonoverlapping(block.cast::<u8>(), moved.cast::<u8>(), osize.min(nsize));
                free_elsewhere(record, block, osize);
            }
            moved
        }
    };
    if resized.is_null() {
        if nsize <= osize {
            // Lua assumes a shrink cannot fail and would keep using the old size.
            handle_alloc_error(Layout::from_size_align(nsize, ALIGN).unwrap_or(Layout::new::<u8>()));
        }
        return resized;
    }
    if resized != block && threads.may_hold(osize) {
        // A coroutine's block moved (Lua does not resize thread blocks; kept exact anyway).
        // SAFETY: this is the state's allocator.
        unsafe {
            threads.forget(block as usize, osize);
            threads.remember(resized as usize, nsize);
        }
    }
    heap.record_resize(osize, nsize);
    if PEAKS && nsize > osize {
        heap.note_peak();
    }
    resized
}

/// Frees a block of a contained state that its arena does not hold: the module's own
/// allocator's (a state the module made) or its chain's.
///
/// # Safety
/// From the state's allocator; `block` was allocated or last resized to `size` before the
/// arena.
#[cfg(feature = "jemalloc")]
#[cold]
unsafe fn free_elsewhere<R: Record>(record: &R, block: *mut c_void, size: usize) {
    match record.chain() {
        Some(chain) => {
            chain.next(block, size, 0);
        }
        // SAFETY: the module's own allocator made it with this size and alignment.
        None => unsafe { dealloc(block.cast(), Layout::from_size_align_unchecked(size, ALIGN)) },
    }
}

/// The accounting `lua_Alloc` functions, which [`profiled`] wraps.
type Inner = unsafe fn(*mut c_void, *mut c_void, usize, usize) -> *mut c_void;

/// A `lua_Alloc` call through `inner` (the accounting), sampled for the heap profiler: a block
/// about to be made or resized is sampled on average once per `rate` bytes, and its Lua stack
/// read before `inner` runs (while a stack being moved is still where Lua's pointers say); a
/// freed or moved block leaves the profile's in-use figures. A resize counts as the free of the
/// old block and a new block of the new size.
///
/// The common case (nothing sampled, a block never sampled) is a countdown and a filter test,
/// then a tail call of `inner`; the rest is out of line.
#[inline(always)]
unsafe fn profiled<R: Record>(
    ud: *mut c_void,
    block: *mut c_void,
    osize: usize,
    nsize: usize,
    inner: Inner,
) -> *mut c_void {
    // SAFETY: `ud` is the record installed with the calling function, alive while it is.
    let sampler = unsafe { &*(ud as *const R) }.heap_sampler();
    let common = if nsize == 0 {
        block.is_null() || !sampler.may_be_sampled(block as usize)
    } else if block.is_null() {
        !sampler.take(nsize)
    } else {
        // A resize: the new size is drawn whatever the old block was (`take` counts the bytes
        // toward the next sample), so both are asked first, then combined.
        let draws = sampler.take(nsize);
        let old_may_be_sampled = sampler.may_be_sampled(block as usize);
        !draws && !old_may_be_sampled
    };
    // SAFETY: forwarded under the same contract.
    unsafe {
        if common {
            inner(ud, block, osize, nsize)
        } else {
            sampled(sampler, (*(ud as *const R)).running_thread(), ud, block, osize, nsize, inner)
        }
    }
}

/// [`profiled`]'s rare case: a block that may have been sampled is freed or moved, or the
/// block being made or resized is sampled (`take` has said so: the next call draws again).
#[cold]
#[inline(never)]
unsafe fn sampled(
    sampler: &HeapSampler,
    running: &RunningThread,
    ud: *mut c_void,
    block: *mut c_void,
    osize: usize,
    nsize: usize,
    inner: Inner,
) -> *mut c_void {
    if nsize == 0 {
        sampler.forget(block as usize);
        // SAFETY: forwarded under the same contract.
        return unsafe { inner(ud, block, osize, nsize) };
    }
    // Sampled now, unless this is a resize that reached here because the old block may have
    // been sampled: `take` counted its bytes already, and `is_due` tells.
    let stack = sampler.is_due().then(|| {
        // SAFETY: the state's allocator, before the block is made or moved.
        unsafe { super::stack_walk::capture(sampler, running) }
    });
    // SAFETY: forwarded under the same contract.
    let result = unsafe { inner(ud, block, osize, nsize) };
    if result.is_null() {
        // Nothing was made, and a block that failed to move is still in place; the sample
        // that was due is drawn again.
        if stack.is_some() {
            sampler.redraw();
        }
        return result;
    }
    let object_type =
        if block.is_null() { Some(super::stack_walk::object_type(osize)) } else { sampler.forget(block as usize) };
    if let Some(stack) = stack {
        sampler.record(result as usize, nsize, object_type.unwrap_or("other"), stack);
    }
    result
}

/// Whose blocks an allocator function serves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Serves {
    /// Its arena's, with those allocated before it ([`contained`]).
    #[cfg(feature = "jemalloc")]
    Contained,
    /// Its own ([`exact`]).
    Own,
    /// The state's own allocator's, every one counted ([`chained`]).
    Chained,
    /// The state's own allocator's, those seen since the load counted ([`interposed`]).
    Interposed,
}

/// One of the module's allocator functions: whose blocks it serves, whether it tracks the heap's
/// peak, whether it samples for the heap profiler.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Variant {
    serves: Serves,
    peaks: bool,
    profile: bool,
}

/// Every allocator function of the module for records of type `R`: the one table from which
/// [`function_for`] picks and [`is_ours`] recognises. (Interposed states track a set of blocks
/// and do not watch peaks.)
struct Functions<R>(std::marker::PhantomData<R>);

impl<R: Record> Functions<R> {
    #[rustfmt::skip]
    const ALL: &'static [(Variant, ffi::lua_Alloc)] = &[
        (Variant { serves: Serves::Own, peaks: false, profile: false }, exact::<R, false, false>),
        (Variant { serves: Serves::Own, peaks: true, profile: false }, exact::<R, true, false>),
        (Variant { serves: Serves::Own, peaks: false, profile: true }, exact::<R, false, true>),
        (Variant { serves: Serves::Own, peaks: true, profile: true }, exact::<R, true, true>),
        (Variant { serves: Serves::Chained, peaks: false, profile: false }, chained::<R, false, false>),
        (Variant { serves: Serves::Chained, peaks: true, profile: false }, chained::<R, true, false>),
        (Variant { serves: Serves::Chained, peaks: false, profile: true }, chained::<R, false, true>),
        (Variant { serves: Serves::Chained, peaks: true, profile: true }, chained::<R, true, true>),
        (Variant { serves: Serves::Interposed, peaks: false, profile: false }, interposed::<R, false>),
        (Variant { serves: Serves::Interposed, peaks: false, profile: true }, interposed::<R, true>),
        #[cfg(feature = "jemalloc")]
        (Variant { serves: Serves::Contained, peaks: false, profile: false }, contained::<R, false, false>),
        #[cfg(feature = "jemalloc")]
        (Variant { serves: Serves::Contained, peaks: true, profile: false }, contained::<R, true, false>),
        #[cfg(feature = "jemalloc")]
        (Variant { serves: Serves::Contained, peaks: false, profile: true }, contained::<R, false, true>),
        #[cfg(feature = "jemalloc")]
        (Variant { serves: Serves::Contained, peaks: true, profile: true }, contained::<R, true, true>),
    ];
}

/// Whether `f` is one of the module's allocator functions for records of type `R`: then the
/// state's allocator data is such a record.
///
/// Every module call asks (`states::record`): the usual function (a state the module made, its
/// peaks not watched, no heap profiler) is one comparison; the table is read out of line.
#[inline]
pub(crate) fn is_ours<R: Record>(f: ffi::lua_Alloc) -> bool {
    ptr::fn_addr_eq(f, exact::<R, false, false> as ffi::lua_Alloc) || in_the_table::<R>(f)
}

#[inline(never)]
fn in_the_table<R: Record>(f: ffi::lua_Alloc) -> bool {
    Functions::<R>::ALL.iter().any(|&(_, g)| ptr::fn_addr_eq(f, g))
        // Standing in for one of those between a refused growth and Lua's next request.
        || ptr::fn_addr_eq(f, emergency::after_refusal::<R> as ffi::lua_Alloc)
}

/// The allocator function for a record: its own blocks, or passing them on to its chain; with or
/// without peaks; sampling for the heap profiler once it has started in the state (it then
/// stays, so that frees of sampled blocks are seen).
pub(crate) fn function_for<R: Record>(record: &R, watching_peaks: bool) -> ffi::lua_Alloc {
    let serves = match (record.chain(), record.tracks_blocks()) {
        #[cfg(feature = "jemalloc")]
        _ if record.arena().is_some() && !record.tracks_blocks() => Serves::Contained,
        (None, _) => Serves::Own,
        (Some(_), false) => Serves::Chained,
        (Some(_), true) => Serves::Interposed,
    };
    let peaks = watching_peaks && serves != Serves::Interposed;
    let wanted = Variant { serves, peaks, profile: record.heap_sampler().started() };
    let found = Functions::<R>::ALL.iter().find(|(variant, _)| *variant == wanted);
    found.expect("the table holds every variant a record can want").1
}
