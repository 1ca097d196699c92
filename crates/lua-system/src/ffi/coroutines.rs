//! Counting coroutines: which exist, and which of them are still alive.
//!
//! Lua 5.2 and later tell the allocator which new blocks are threads, so the module's allocator
//! knows every coroutine block ([`ThreadBlocks`]); the thread itself lies a fixed
//! distance into its block (after Lua's extra space), learned once per state by making one
//! coroutine ([`learn_thread_offset`]). Lua 5.1 and LuaJIT do not tag thread blocks: there
//! `coroutine.create` and `coroutine.wrap` are wrapped, and each new coroutine goes into a
//! weak-keyed table in the registry, from which the collector removes it when it frees it
//! (coroutines made from C, `lua_newthread`, are not seen there).
//!
//! A coroutine counts while it can still run: running, normal (it resumed another), suspended,
//! or not started. A finished one (returned, or stopped by an error) no longer counts, even
//! while something still refers to it, as a finished goroutine is gone. Counting inspects each
//! coroutine's status: O(coroutines that exist).

use std::cell::UnsafeCell;
use std::ffi::{CStr, c_int};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use mlua::ffi::{self, lua_State};

use super::protected;
use crate::address_hash::AddressTable;

/// Registry field holding the weak table of recorded coroutines (5.1, LuaJIT).
const REGISTRY_KEY: &CStr = c"lua-system coroutines";

/// Whether a new block's `osize` tags threads (Lua 5.2 and later).
pub(crate) const ALLOCATOR_SEES_THREADS: bool = cfg!(not(any(feature = "lua51", feature = "luajit")));

/// The addresses of live coroutine blocks, kept by the state's allocator.
///
/// Every coroutine block has the same size (Lua's `sizeof(LX)`), learned from the first one, so
/// a free is looked up only when its size matches and some coroutine is alive. The set is
/// touched only when coroutines are created or may be freed, never on the common paths.
///
/// The set has no lock: like the allocator's other records, it is touched only by the thread
/// running the state (its allocator, and `num_goroutines` counting), and Lua runs a state on
/// one thread at a time (a lock was a seventh of a coroutine's cost here: BENCHMARKS.md). Other
/// threads read only the atomics.
pub(crate) struct ThreadBlocks {
    /// The size of a thread block while some coroutine is alive; `NONE_ALIVE` otherwise. One
    /// comparison on every free tells whether the block may be a coroutine's.
    watched_size: AtomicUsize,
    live: AtomicUsize,
    /// The last block remembered (to learn where the thread lies in its block).
    last: AtomicUsize,
    /// Where a thread (`lua_State`) lies in its block: after Lua's extra space. Learned once per
    /// state ([`learn_thread_offset`]); `usize::MAX` until then.
    offset: AtomicUsize,
    /// The block of the embedding library's own thread (mlua keeps one to hold references),
    /// never reported; 0: none.
    hidden: AtomicUsize,
    addresses: Addresses,
}

/// [`ThreadBlocks::watched_size`] when no coroutine is alive: no block has this size.
const NONE_ALIVE: usize = usize::MAX;

/// The set of thread blocks, touched only by the thread running the state (see [`ThreadBlocks`]).
struct Addresses(UnsafeCell<AddressTable>);

// SAFETY: only the thread running the state touches the table (the `unsafe` methods of
// `ThreadBlocks` say so), and Lua runs a state on one thread at a time (a host moving a state
// between threads synchronises the move itself). Readers on other threads read only atomics.
unsafe impl Sync for Addresses {}

impl Default for ThreadBlocks {
    fn default() -> ThreadBlocks {
        ThreadBlocks {
            watched_size: AtomicUsize::new(NONE_ALIVE),
            live: AtomicUsize::new(0),
            last: AtomicUsize::new(0),
            offset: AtomicUsize::new(usize::MAX),
            hidden: AtomicUsize::new(0),
            addresses: Addresses(UnsafeCell::new(AddressTable::default())),
        }
    }
}

impl ThreadBlocks {
    /// The table.
    ///
    /// # Safety
    /// Only on the thread running the state, and not while another reference from here lives.
    #[allow(clippy::mut_from_ref)]
    #[inline(always)]
    unsafe fn table(&self) -> &mut AddressTable {
        // SAFETY: per the contract (see `Addresses`).
        unsafe { &mut *self.addresses.0.get() }
    }

    /// Records a new thread block. Returns false if it could not be recorded (out of memory);
    /// the caller then fails the allocation so the record never drifts. Out of line: rare, and
    /// kept off the allocator's common paths so they need fewer registers.
    ///
    /// # Safety
    /// From the state's allocator.
    #[cold]
    #[inline(never)]
    pub(crate) unsafe fn remember(&self, address: usize, size: usize) -> bool {
        // SAFETY: per the contract.
        unsafe { self.remember_inline(address, size) }
    }

    /// [`ThreadBlocks::remember`], for callers that are out of line themselves.
    ///
    /// # Safety
    /// As [`ThreadBlocks::remember`].
    #[inline(always)]
    pub(crate) unsafe fn remember_inline(&self, address: usize, size: usize) -> bool {
        // SAFETY: per the contract.
        let table = unsafe { self.table() };
        if !table.insert(address) {
            return false;
        }
        self.last.store(address, Relaxed);
        self.watched_size.store(size, Relaxed);
        self.live.store(table.len(), Relaxed);
        true
    }

    /// A block is freed: if it may be a coroutine's (its size is a thread block's and some
    /// coroutine is alive), looks it up, out of line.
    ///
    /// # Safety
    /// From the state's allocator.
    #[inline(always)]
    pub(crate) unsafe fn forget(&self, address: usize, size: usize) {
        if self.may_hold(size) {
            // SAFETY: per the contract.
            unsafe { self.forget_block(address) };
        }
    }

    /// Whether a block of `size` bytes may be a coroutine's: its size is a thread block's and
    /// some coroutine is alive.
    #[inline(always)]
    pub(crate) fn may_hold(&self, size: usize) -> bool {
        size == self.watched_size.load(Relaxed)
    }

    /// A block that [`ThreadBlocks::may_hold`] is freed: forgotten if it is a coroutine's.
    ///
    /// # Safety
    /// From the state's allocator.
    #[cold]
    #[inline(never)]
    unsafe fn forget_block(&self, address: usize) {
        // SAFETY: per the contract.
        unsafe { self.forget_inline(address) };
    }

    /// [`ThreadBlocks::forget_block`], for callers that are out of line themselves.
    ///
    /// # Safety
    /// From the state's allocator.
    #[inline(always)]
    pub(crate) unsafe fn forget_inline(&self, address: usize) {
        // SAFETY: per the contract.
        let table = unsafe { self.table() };
        if table.remove(address) {
            self.live.store(table.len(), Relaxed);
            if table.len() == 0 {
                self.watched_size.store(NONE_ALIVE, Relaxed);
            }
            if self.hidden.load(Relaxed) == address {
                self.hidden.store(0, Relaxed);
            }
        }
    }

    pub(crate) fn last(&self) -> usize {
        self.last.load(Relaxed)
    }

    /// Where a thread lies in its block, once learned.
    pub(crate) fn offset(&self) -> Option<usize> {
        Some(self.offset.load(Relaxed)).filter(|&o| o != usize::MAX)
    }

    pub(crate) fn set_offset(&self, offset: usize) {
        self.offset.store(offset, Relaxed);
    }

    /// Marks the thread block alive now, if there is exactly one, as the embedding library's
    /// own: it is not the script's and is never reported. For a state just made, before any
    /// script runs: mlua makes one thread of its own (its reference thread) when it opens a
    /// state; more would be a new mlua's doing, and the tests counting coroutines would see them.
    ///
    /// # Safety
    /// On the thread running the state.
    pub(crate) unsafe fn hide_current(&self) {
        // SAFETY: per the contract.
        let table = unsafe { self.table() };
        if table.len() == 1 {
            self.hidden.store(table.iter().next().unwrap_or(0), Relaxed);
        }
    }

    /// The live thread blocks that are not hidden, to be inspected by `f` (which must not
    /// allocate in the state).
    ///
    /// # Safety
    /// On the thread running the state.
    pub(crate) unsafe fn each(&self, mut f: impl FnMut(usize)) {
        let live = self.live.load(Relaxed);
        if live == 0 {
            return;
        }
        // SAFETY: per the contract; `f` does not allocate in the state, so the allocator does
        // not touch the table meanwhile.
        let table = unsafe { self.table() };
        table.shrink();
        let hidden = self.hidden.load(Relaxed);
        // Only the hidden block (it stays in the set until freed): no walk over the table's
        // slots (`num_goroutines` without coroutines, the common call).
        if live == 1 && hidden != 0 {
            return;
        }
        for address in table.iter() {
            if address != hidden {
                f(address);
            }
        }
    }
}

/// Whether coroutine `co` can still run (see the module docs).
///
/// # Safety
/// `co` is a live thread of the running state.
unsafe fn is_alive(co: *mut lua_State) -> bool {
    // SAFETY: status queries on a live thread neither allocate nor raise.
    unsafe {
        match ffi::lua_status(co) {
            ffi::LUA_YIELD => true,
            ffi::LUA_OK => {
                let mut ar = std::mem::MaybeUninit::<ffi::lua_Debug>::zeroed();
                ffi::lua_getstack(co, 0, ar.as_mut_ptr()) != 0 || ffi::lua_gettop(co) > 0
            }
            _ => false, // stopped by an error
        }
    }
}

/// Coroutines alive among the thread blocks the allocator knows.
///
/// # Safety
/// The caller runs the state on this thread (a module function); `threads` are the blocks of
/// its live threads.
pub(crate) unsafe fn count_alive_blocks(threads: &ThreadBlocks) -> u64 {
    let Some(offset) = threads.offset() else {
        let mut all = 0;
        // SAFETY: the caller runs the state, on this thread.
        unsafe { threads.each(|_| all += 1) };
        return all; // not learned (no memory then): every coroutine that exists counts
    };
    let mut alive = 0;
    // SAFETY: as above; `is_alive` does not allocate.
    unsafe {
        threads.each(|block| {
            // SAFETY: the block is a live thread's (freed blocks leave the set before Lua
            // reuses them), and the thread lies `offset` bytes into it.
            if is_alive((block + offset) as *mut lua_State) {
                alive += 1;
            }
        })
    };
    alive
}

/// Learns where a thread lies in its block, by making one coroutine and comparing the thread
/// Lua returns with the block the allocator just saw. Lua 5.2 and later; protected.
///
/// # Safety
/// `l` is running, with room for two values; `threads` are its state's.
pub(crate) unsafe fn learn_thread_offset(l: *mut lua_State, threads: &ThreadBlocks) {
    if !ALLOCATOR_SEES_THREADS || threads.offset().is_some() {
        return;
    }
    let mut thread: *mut lua_State = std::ptr::null_mut();
    // SAFETY: `new_thread` writes the new thread into `thread`, armed for this call.
    let made = unsafe { protected::call(l, new_thread, &mut thread as *mut *mut lua_State) };
    if made.is_err() {
        // SAFETY: the error object is on top.
        unsafe { ffi::lua_settop(l, -2) };
        return;
    }
    let block = threads.last();
    let offset = (thread as usize).wrapping_sub(block);
    // Lua's extra space is a pointer or two at most; anything else means the block seen was
    // not this thread's.
    if offset <= 64 {
        threads.set_offset(offset);
    }
}

unsafe extern "C-unwind" fn new_thread(l: *mut lua_State) -> c_int {
    // SAFETY: the armed data is a `*mut *mut lua_State` owned by `learn_thread_offset`.
    unsafe {
        if let Some(out) = protected::armed::<*mut lua_State>(l) {
            *out = ffi::lua_newthread(l);
        }
    }
    protected::NO_RESULTS
}

/// Makes `coroutine.create` and `coroutine.wrap` record the coroutines they make, if they do not
/// yet (the coroutine library may be opened after the module, so this runs on every load of
/// the module).
///
/// Each is patched in place where it can be: the C function inside the library's function
/// object is replaced by one that calls it and records its coroutine, so a script or library
/// that saved the function before loading the module (`local create = coroutine.create`, as
/// libraries do) records its coroutines too. Where the global is not a C function whose
/// object holds the C function where Lua's headers put it (checked against
/// `lua_tocfunction`), or was another C function in another state of this process, the global
/// is replaced by a wrapper instead, which saved copies bypass.
///
/// `layout_checked`: this Lua's global state matched the layout of the headers the module was
/// built with (`internals.rs`), the sign that its function objects do too; otherwise wrappers.
///
/// # Safety
/// `l` is running, protected (this allocates), with room for four values.
pub(crate) unsafe fn track(l: *mut lua_State, layout_checked: bool) {
    if ALLOCATOR_SEES_THREADS {
        return;
    }
    // SAFETY: per the contract; every path restores the stack top.
    unsafe {
        let top = ffi::lua_gettop(l);
        ffi::lua_getglobal(l, c"coroutine".as_ptr());
        if ffi::lua_type(l, -1) == ffi::LUA_TTABLE {
            registry_table(l);
            ffi::lua_settop(l, top + 1);
            record_from(l, c"create", &patch::CREATE, create_and_record, layout_checked);
            record_from(l, c"wrap", &patch::WRAP, wrap_and_record, layout_checked);
        }
        ffi::lua_settop(l, top);
    }
}

/// With the coroutine table on top: makes `coroutine[name]` record its coroutines, patched in
/// place or else wrapped (see [`track`]); nothing if it does already.
unsafe fn record_from(
    l: *mut lua_State,
    name: &CStr,
    patched: &patch::Patched,
    wrapper: ffi::lua_CFunction,
    patchable: bool,
) {
    // SAFETY: pushes one value, popped before returning.
    unsafe {
        ffi::lua_getfield(l, -1, name.as_ptr());
        let current = ffi::lua_tocfunction(l, -1);
        let done = current.is_some_and(|f| f as usize == patched.function as usize || f as usize == wrapper as usize);
        let done = done || (patchable && patch::apply(l, patched));
        ffi::lua_settop(l, -2);
        if !done {
            wrap_field(l, name, wrapper);
        }
    }
}

/// Patching the library's C functions in place (Lua 5.1 and LuaJIT; later versions count
/// coroutines in the allocator).
mod patch {
    use std::ffi::c_int;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    use mlua::ffi::{self, lua_State};

    /// A C function to put inside a library function's object, and the one it replaced (the
    /// same in every state of the process: the library's code; 0 until the first patch).
    pub(super) struct Patched {
        pub(super) function: ffi::lua_CFunction,
        original: AtomicUsize,
    }

    pub(super) static CREATE: Patched = Patched { function: create, original: AtomicUsize::new(0) };
    pub(super) static WRAP: Patched = Patched { function: wrap, original: AtomicUsize::new(0) };

    /// Never called: Lua 5.2 and later need no patch.
    #[cfg(not(any(feature = "lua51", feature = "luajit")))]
    pub(super) unsafe fn apply(_: *mut lua_State, _: &Patched) -> bool {
        false
    }

    /// With a function on top: puts `patched.function` in its object if it is a C function
    /// without upvalues whose object holds it where Lua's headers say, and the same C function
    /// that every earlier patch in this process replaced. Returns whether it did.
    ///
    /// # Safety
    /// `l` is running; the value on top is alive (it is on the stack).
    #[cfg(any(feature = "lua51", feature = "luajit"))]
    pub(super) unsafe fn apply(l: *mut lua_State, patched: &Patched) -> bool {
        // SAFETY: reading the value on top; the object is alive while it is on the stack.
        unsafe {
            let Some(original) = ffi::lua_tocfunction(l, -1) else { return false };
            // Upvalues would belong to the closure, not to the C function: a C function that
            // uses them is not the library's (5.1 and LuaJIT register theirs without any).
            if !ffi::lua_getupvalue(l, -1, 1).is_null() {
                ffi::lua_settop(l, -2);
                return false;
            }
            let agreed = patched.original.compare_exchange(0, original as usize, Relaxed, Relaxed);
            if agreed.is_err_and(|first| first != original as usize) {
                return false;
            }
            let object = ffi::lua_topointer(l, -1) as *mut u8;
            let slot = object.add(super::super::internals::C_FUNCTION_OFFSET) as *mut usize;
            if object.is_null() || slot.read() != original as usize {
                return false;
            }
            // SAFETY: the slot holds the object's C function (it equals what
            // `lua_tocfunction` read from it); the replacement has the same signature, and
            // the collector does not look at it.
            slot.write(patched.function as usize);
            ffi::lua_tocfunction(l, -1).is_some_and(|f| f as usize == patched.function as usize)
        }
    }

    /// The C function a patch replaced.
    fn original(patched: &Patched) -> Option<ffi::lua_CFunction> {
        let address = patched.original.load(Relaxed);
        // SAFETY: a nonzero value was stored from a `lua_CFunction` by `apply`.
        (address != 0).then(|| unsafe { std::mem::transmute::<usize, ffi::lua_CFunction>(address) })
    }

    /// `coroutine.create`, patched: the library's, then the coroutine recorded.
    unsafe extern "C-unwind" fn create(l: *mut lua_State) -> c_int {
        // SAFETY: called by Lua as the library's function was, in the same frame: the
        // library's runs as if called directly (its errors name the script's call).
        unsafe {
            let Some(library) = original(&CREATE) else { return 0 };
            let results = library(l);
            if results == 1 {
                super::record(l, -1);
            }
            results
        }
    }

    /// `coroutine.wrap`, patched: the library's, then the coroutine (the function's upvalue 1)
    /// recorded.
    unsafe extern "C-unwind" fn wrap(l: *mut lua_State) -> c_int {
        // SAFETY: as `create`.
        unsafe {
            let Some(library) = original(&WRAP) else { return 0 };
            let results = library(l);
            if results == 1 {
                super::record_upvalue(l);
            }
            results
        }
    }
}

/// Pushes the weak-keyed registry table, creating it if needed (only then does it allocate).
unsafe fn registry_table(l: *mut lua_State) {
    // SAFETY: pushes one value (plus temporaries popped here).
    unsafe {
        ffi::lua_getfield(l, ffi::LUA_REGISTRYINDEX, REGISTRY_KEY.as_ptr());
        if ffi::lua_type(l, -1) == ffi::LUA_TTABLE {
            return;
        }
        ffi::lua_settop(l, -2);
        ffi::lua_createtable(l, 0, 0);
        ffi::lua_createtable(l, 0, 1);
        ffi::lua_pushstring(l, c"k".as_ptr());
        ffi::lua_setfield(l, -2, c"__mode".as_ptr());
        ffi::lua_setmetatable(l, -2);
        ffi::lua_pushvalue(l, -1);
        ffi::lua_setfield(l, ffi::LUA_REGISTRYINDEX, REGISTRY_KEY.as_ptr());
    }
}

/// With the coroutine table on top: replaces `coroutine[name]` by a closure of `wrapper` over
/// the original (its only upvalue: replacing it from a script changes what the wrapper calls,
/// nothing else).
unsafe fn wrap_field(l: *mut lua_State, name: &CStr, wrapper: ffi::lua_CFunction) {
    // SAFETY: pushes two values, consumed by the closure and `lua_setfield`.
    unsafe {
        ffi::lua_getfield(l, -1, name.as_ptr());
        ffi::lua_pushcclosure(l, wrapper, 1);
        ffi::lua_setfield(l, -2, name.as_ptr());
    }
}

/// Records the thread at `index` in the registry table.
unsafe fn record(l: *mut lua_State, index: c_int) {
    // SAFETY: called from the wrappers, which may raise (they are Lua functions).
    unsafe {
        let index = ffi::lua_absindex(l, index);
        if ffi::lua_type(l, index) == ffi::LUA_TTHREAD {
            registry_table(l);
            ffi::lua_pushvalue(l, index);
            ffi::lua_pushboolean(l, 1);
            ffi::lua_rawset(l, -3);
        }
        ffi::lua_settop(l, index);
    }
}

/// Calls the original function (upvalue 1) with the function argument, leaving its result on
/// top. The argument is checked here first, as the original checks it (Lua 5.1 wants a Lua
/// function), so an error names the script's function, as the original's own check would.
pub(crate) unsafe fn call_original(l: *mut lua_State) {
    // SAFETY: errors raised propagate as the original's own.
    unsafe {
        #[cfg(feature = "lua51")]
        if ffi::lua_type(l, 1) != ffi::LUA_TFUNCTION || ffi::lua_iscfunction(l, 1) != 0 {
            ffi::luaL_argerror(l, 1, c"Lua function expected".as_ptr());
        }
        ffi::luaL_checktype(l, 1, ffi::LUA_TFUNCTION);
        ffi::lua_settop(l, 1);
        ffi::lua_pushvalue(l, ffi::lua_upvalueindex(1));
        ffi::lua_insert(l, 1);
        ffi::lua_call(l, 1, 1);
    }
}

/// `coroutine.create(f)`, recorded.
unsafe extern "C-unwind" fn create_and_record(l: *mut lua_State) -> c_int {
    // SAFETY: a wrapper made by `wrap_field`.
    unsafe {
        call_original(l);
        record(l, -1);
    }
    1
}

/// `coroutine.wrap(f)`, recorded: the thread is the first upvalue of the function `wrap` makes.
unsafe extern "C-unwind" fn wrap_and_record(l: *mut lua_State) -> c_int {
    // SAFETY: a wrapper made by `wrap_field`.
    unsafe {
        call_original(l);
        record_upvalue(l);
    }
    1
}

/// With the function `coroutine.wrap` made on top: records its coroutine (its upvalue 1).
unsafe fn record_upvalue(l: *mut lua_State) {
    // SAFETY: may raise (a Lua function's caller); the stack top is restored.
    unsafe {
        let function = ffi::lua_gettop(l);
        if ffi::lua_type(l, function) == ffi::LUA_TFUNCTION && !ffi::lua_getupvalue(l, function, 1).is_null() {
            record(l, -1);
        }
        ffi::lua_settop(l, function);
    }
}

/// Coroutines recorded by the wrappers that are still alive. Never raises (`lua_next` on a
/// table whose keys are not modified).
///
/// # Safety
/// `l` is running, with room for three values.
pub(crate) unsafe fn count_alive_recorded(l: *mut lua_State) -> u64 {
    let mut count = 0;
    // SAFETY: walks the registry table, restoring the stack top.
    unsafe {
        let top = ffi::lua_gettop(l);
        ffi::lua_getfield(l, ffi::LUA_REGISTRYINDEX, REGISTRY_KEY.as_ptr());
        if ffi::lua_type(l, -1) == ffi::LUA_TTABLE {
            ffi::lua_pushnil(l);
            while ffi::lua_next(l, -2) != 0 {
                if ffi::lua_type(l, -2) == ffi::LUA_TTHREAD && is_alive(ffi::lua_tothread(l, -2)) {
                    count += 1;
                }
                ffi::lua_settop(l, -2);
            }
        }
        ffi::lua_settop(l, top);
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_blocks_are_forgotten_only_by_their_own_address() {
        let threads = ThreadBlocks::default();
        // SAFETY: one thread plays the state's.
        unsafe {
            assert!(threads.remember(0x10, 208));
            threads.hide_current();
            assert!(threads.remember(0x20, 208));
            threads.forget(0x30, 208); // another block of the same size
            let mut seen = vec![];
            threads.each(|a| seen.push(a));
            assert_eq!(seen, vec![0x20], "the hidden block is not reported");
            threads.forget(0x10, 208);
            assert!(threads.remember(0x40, 208));
            let mut seen = vec![];
            threads.each(|a| seen.push(a));
            seen.sort();
            assert_eq!(seen, vec![0x20, 0x40]);
            threads.forget(0x20, 208);
            threads.forget(0x40, 208);
            assert!(!threads.may_hold(208), "none alive: frees are not looked up");
        }
    }
}
