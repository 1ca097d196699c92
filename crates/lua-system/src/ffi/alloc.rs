//! The `lua_Alloc` function of the states the module creates.
//!
//! Every block goes through the Rust global allocator, so a process allocator (jemalloc in the
//! runner) sees the Lua heap as part of the process heap, and every event is recorded in the
//! state's [`Heap`](crate::alloc::Heap). Blocks are aligned as `malloc` aligns them.

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error, realloc};
use std::ffi::c_void;
use std::ptr;

use mlua::ffi;

use crate::state::StateData;

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
    resized.cast()
}
