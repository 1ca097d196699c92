//! The module's `lua_Alloc` functions.
//!
//! * [`accounted`]: states the module creates. Every block goes through the Rust global
//!   allocator, so a process allocator (jemalloc in the runner) sees the Lua heap as part of the
//!   process heap, and every event is recorded in the state's [`Heap`](crate::alloc::Heap).
//!   Blocks are aligned as `malloc` aligns them.
//! * [`interposed`]: states an interpreter created, when the module is loaded into them. The
//!   interpreter's allocator keeps serving every block (those allocated before the module was
//!   loaded included: they are freed by the allocator that made them); the module records each
//!   event on the way. When the state's last block is freed (`lua_close` frees the main thread
//!   last), the module's record is freed too.

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error, realloc};
use std::ffi::c_void;
use std::ptr;

use mlua::ffi;

use crate::state::StateData;

/// The allocator the module's interposed allocator passes every request on to.
#[derive(Clone, Copy)]
pub(crate) struct Chain {
    alloc: ffi::lua_Alloc,
    ud: usize,
}

impl Chain {
    pub(crate) fn new(alloc: ffi::lua_Alloc, ud: *mut c_void) -> Chain {
        Chain { alloc, ud: ud as usize }
    }

    pub(crate) fn ud(&self) -> *mut c_void {
        self.ud as *mut c_void
    }
}

const ALIGN: usize = ffi::SYS_MIN_ALIGN;

/// Whether a new block is a coroutine. When `ptr` is NULL, Lua 5.2 and later pass the type of
/// the object being created in `osize` (`LUA_TTHREAD` for a thread); 5.1 and LuaJIT pass 0.
#[inline]
fn is_thread_tag(osize: usize) -> bool {
    super::coroutines::ALLOCATOR_SEES_THREADS && osize == ffi::LUA_TTHREAD as usize
}

/// The allocator of accounted states; its `ud` is the state's [`StateData`].
///
/// Follows the `lua_Alloc` contract: `nsize == 0` frees, a NULL `ptr` allocates, anything else
/// resizes; a failed growth answers NULL (Lua then collects and retries, or raises "not enough
/// memory"), and a shrink never fails. It never unwinds.
pub(crate) unsafe extern "C" fn accounted(
    ud: *mut c_void,
    block: *mut c_void,
    osize: usize,
    nsize: usize,
) -> *mut c_void {
    // SAFETY: forwarded under the same contract.
    unsafe { accounted_with::<false>(ud, block, osize, nsize) }
}

/// [`accounted`], also tracking the heap's peak for the cycle hook (`--gctrace`: the heap a
/// cycle started from). The two serve the same blocks, so a state switches between them with
/// `lua_setallocf` at any time (`AccountedState::watch_peaks`).
pub(crate) unsafe extern "C" fn accounted_watching_peaks(
    ud: *mut c_void,
    block: *mut c_void,
    osize: usize,
    nsize: usize,
) -> *mut c_void {
    // SAFETY: forwarded under the same contract.
    unsafe { accounted_with::<true>(ud, block, osize, nsize) }
}

#[inline(always)]
unsafe fn accounted_with<const PEAKS: bool>(
    ud: *mut c_void,
    block: *mut c_void,
    osize: usize,
    nsize: usize,
) -> *mut c_void {
    // SAFETY: `ud` is the `StateData` passed to `lua_newstate`, freed only after `lua_close`.
    let heap = unsafe { &(*(ud as *const StateData)).heap };

    if nsize == 0 {
        if !block.is_null() {
            heap.record_free(block as usize, osize);
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
        if !heap.admits(nsize) {
            return ptr::null_mut();
        }
        // SAFETY: `layout` has a non-zero size.
        let new = unsafe { alloc(layout) };
        if new.is_null() {
            return ptr::null_mut();
        }
        // The state's first block is its main thread; later thread blocks are coroutines.
        if is_thread_tag(osize) && heap.figures().mallocs > 0 && !heap.record_coroutine(new as usize, nsize) {
            // SAFETY: allocated just above with `layout`.
            unsafe { dealloc(new, layout) };
            return ptr::null_mut();
        }
        heap.record_new(nsize);
        if PEAKS {
            heap.note_peak();
        }
        return new.cast();
    }

    if nsize > osize && !heap.admits(nsize - osize) {
        return ptr::null_mut();
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

/// The allocator of states the module was loaded into; its `ud` is the state's [`StateData`],
/// a `Box` leaked by `attach`, which this function frees after the state's last block.
pub(crate) unsafe extern "C" fn interposed(
    ud: *mut c_void,
    block: *mut c_void,
    osize: usize,
    nsize: usize,
) -> *mut c_void {
    // SAFETY: `ud` is the `StateData` installed with this function by `attach`, alive until the
    // state's last block is freed (below).
    let data = unsafe { &*(ud as *const StateData) };
    let heap = &data.heap;
    let Some(chain) = data.chain else {
        return ptr::null_mut(); // unreachable: interposed states always have a chain
    };
    let next = |block, osize, nsize| {
        // SAFETY: the interpreter's allocator, with its own `ud`, under the lua_Alloc contract.
        unsafe { (chain.alloc)(chain.ud(), block, osize, nsize) }
    };

    if nsize == 0 {
        if !block.is_null() {
            heap.record_free(block as usize, osize);
            next(block, osize, 0);
            if heap.live_bytes() == 0 {
                // That was the main thread, freed last by `lua_close`: nothing will call this
                // allocator again.
                // SAFETY: leaked by `attach` with `Box::leak`; no reference to it remains.
                drop(unsafe { Box::from_raw(ud as *mut StateData) });
            }
        }
        return ptr::null_mut();
    }

    if block.is_null() {
        if !heap.admits(nsize) {
            return ptr::null_mut();
        }
        let new = next(ptr::null_mut(), osize, nsize);
        if new.is_null() {
            return new;
        }
        if is_thread_tag(osize) && !heap.record_coroutine(new as usize, nsize) {
            next(new, nsize, 0);
            return ptr::null_mut();
        }
        heap.record_new(nsize);
        return new;
    }

    if nsize > osize && !heap.admits(nsize - osize) {
        return ptr::null_mut();
    }
    let resized = next(block, osize, nsize);
    if !resized.is_null() {
        heap.record_resize(osize, nsize);
    }
    resized
}
