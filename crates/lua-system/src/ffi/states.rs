//! The states the module creates, and finding the module's record of any state.

use std::ffi::c_void;
use std::mem::ManuallyDrop;
use std::ptr::NonNull;
use std::sync::Arc;

use mlua::ffi::{self, lua_State};
use mlua::{Lua, StdLib};

use super::lua_alloc::{exact, function_for, is_ours};
use super::{Collector, Record};

/// The module's record of the state `l` belongs to (any of its threads), found through the
/// state's allocator: `None` if the allocator is not the module's (the module was never loaded,
/// or the state is closing and its own allocator was given back).
///
/// # Safety
/// `l` is a thread of a live state.
pub(crate) unsafe fn record<'a, R: Record>(l: *mut lua_State) -> Option<&'a R> {
    let mut ud = std::ptr::null_mut();
    // SAFETY: `lua_getallocf` only reads the global state.
    let f = unsafe { ffi::lua_getallocf(l, &mut ud) };
    // SAFETY: our allocator functions are installed only with a live record of type `R` as their
    // data, which outlives every call made on the state (see `lua_alloc.rs`).
    (is_ours::<R>(f) && !ud.is_null()).then(|| unsafe { &*(ud as *const R) })
}

/// A reference of its own to a record the state's allocator is using: every installed record is
/// backed by a live `Arc` (held by the allocator, a `SystemLua` or an `AccountedState`).
///
/// # Safety
/// `record` was found through the state's allocator ([`record`]).
pub(crate) unsafe fn shared<R: Record>(record: &R) -> Arc<R> {
    // SAFETY: per the contract, `record` lives in an `Arc` whose count is at least one.
    unsafe {
        Arc::increment_strong_count(record as *const R);
        Arc::from_raw(record as *const R)
    }
}

/// A state created by the module, with the module's allocator from its first byte, the record
/// that allocator writes, and mlua's handle on it. Dropping it drops the handle, closes the
/// state, then frees the record.
pub(crate) struct AccountedState<R: Record> {
    lua: ManuallyDrop<Lua>,
    l: NonNull<lua_State>,
    record: Arc<R>,
}

impl<R: Record> AccountedState<R> {
    /// Creates the state with the base library open, and mlua's handle on it (mlua registers
    /// it as for a Lua module, and makes its reference thread, which is not the script's: it is
    /// hidden from the coroutine count). `None` if Lua could not allocate it.
    ///
    /// # Safety
    /// Neither the handle ([`AccountedState::lua`]) nor any clone of it may be used after `self`
    /// is dropped: mlua cannot know that the module closes the state.
    pub(crate) unsafe fn new(record: R) -> Option<AccountedState<R>> {
        let record = Arc::new(record);
        // SAFETY: `exact` follows the lua_Alloc contract; `record` is dropped only in `drop`,
        // after `lua_close`.
        let l = NonNull::new(unsafe { new_state(exact::<R, false, false>, Arc::as_ptr(&record) as *mut c_void) })?;
        // SAFETY: `l` is a fresh state. The base library is opened exactly as mlua opens it in
        // the states it creates (`host/system_lua.rs` compares the two): unprotected, so a memory
        // error here (the process is out of memory) goes to the panic function. The handle
        // stays in `self` until `drop`; the caller promises the same for its clones. The
        // reference thread is the state's only coroutine now, on the thread that made it.
        let lua = unsafe {
            ffi::lua_atpanic(l.as_ptr(), super::panic::report);
            ffi::luaL_requiref(l.as_ptr(), c"_G".as_ptr(), ffi::luaopen_base, 1);
            ffi::lua_settop(l.as_ptr(), -2);
            let lua = Lua::get_or_init_from_ptr(l.as_ptr()).clone();
            record.thread_blocks().hide_current();
            lua
        };
        Some(AccountedState { lua: ManuallyDrop::new(lua), l, record })
    }

    pub(crate) fn record(&self) -> &Arc<R> {
        &self.record
    }

    /// mlua's handle on the state.
    pub(crate) fn lua(&self) -> &Lua {
        &self.lua
    }

    /// Tracks the heap's peak between cycles (`on`) or stops, by switching the state's allocator
    /// function: the unwatched one does no peak bookkeeping at all.
    pub(crate) fn watch_peaks(&self, on: bool) {
        self.record().heap().watch_peaks(on);
        // SAFETY: `AccountedState` is neither `Send` nor `Sync`, so this runs on the thread that
        // owns the state, between two allocations (even when Lua is running a callback that got
        // here). Both functions serve the same blocks with the same record.
        unsafe {
            ffi::lua_setallocf(
                self.l.as_ptr(),
                function_for(&*self.record, on),
                Arc::as_ptr(&self.record) as *mut c_void,
            )
        };
    }
}

impl<R: Record> Drop for AccountedState<R> {
    fn drop(&mut self) {
        // SAFETY: the handle is dropped once, here, before the state is closed. The state is
        // not running (we hold it by value) and is never used again; the record outlives
        // `lua_close` (it is dropped with `self`, after this).
        unsafe {
            ManuallyDrop::drop(&mut self.lua);
            ffi::lua_close(self.l.as_ptr());
        }
    }
}

/// The bytes and live blocks of a bare state as mlua makes it (`Lua::new_with(StdLib::NONE)`,
/// then two full collections), measured in a state the module makes the same way with its own
/// allocator and `record` (mlua's setup code is the same for both). `None` if it failed.
pub(crate) fn bare_state_figures<R: Record>(record: R) -> Option<(u64, u64)> {
    // SAFETY: the handle is used only here, and never cloned.
    let state = unsafe { AccountedState::new(record)? };
    let lua = state.lua();
    // What `Lua::new_with(StdLib::NONE)` runs after setting the state up.
    lua.load_std_libs(StdLib::NONE).ok()?;
    lua.gc_collect().ok()?;
    lua.gc_collect().ok()?;
    let heap = state.record().heap().figures();
    Some((heap.live_bytes, heap.objects()))
}

/// The module's record of a state, in mlua's app data: the Rust API finds it there without
/// calling into Lua (which needs memory, and may be at its limit).
struct Published<R>(Arc<R>);

/// Makes `record` the one the Rust API finds for `lua`.
pub(crate) fn publish<R: Record + Send>(lua: &Lua, record: Arc<R>) {
    lua.set_app_data(Published(record));
}

/// Forgets the record published for `lua` (its allocator no longer serves the state).
pub(crate) fn unpublish<R: Record + Send>(lua: &Lua) {
    lua.remove_app_data::<Published<R>>();
}

/// The record published for `lua`.
pub(crate) fn published<R: Record + Send>(lua: &Lua) -> mlua::Result<Arc<R>> {
    lua.app_data_ref::<Published<R>>()
        .map(|published| Arc::clone(&published.0))
        .ok_or_else(|| mlua::Error::runtime("lua-system: the module is not installed in this state"))
}

/// Runs `f` with the module's record of `lua`'s state and its collector, under mlua's lock and
/// a protected call: for the Rust API. The state's memory limit is lifted meanwhile (mlua needs
/// a little memory to make the call), so hosts read figures of a state at its limit too. Fails
/// if the module is not installed in the state.
pub(crate) fn with_record<R: Record + Send, T>(lua: &Lua, f: impl FnOnce(&R, &Collector) -> T) -> mlua::Result<T> {
    let record = published::<R>(lua)?;
    let mut result = None;
    record.heap().over_limit(|| {
        // SAFETY: `exec_raw` runs the closure on the locked state under lua_pcall; the record
        // is held by the `Arc`; callers only read through this layer's API, which raises no Lua
        // error.
        unsafe {
            lua.exec_raw::<()>((), |l| result = Some(f(&record, &Collector::with_internals(l, record.internals()))))
        }
    })?;
    result.ok_or_else(|| mlua::Error::runtime("lua-system: the state could not be read"))
}

/// Runs `f` with the raw state behind `lua`, under mlua's lock and a protected call.
///
/// # Safety
/// `f` must not raise a Lua error outside a protected call of its own.
pub(crate) unsafe fn with_raw_state<T>(lua: &Lua, f: impl FnOnce(*mut lua_State) -> T) -> mlua::Result<T> {
    let mut result = None;
    // SAFETY: per the contract.
    unsafe { lua.exec_raw::<()>((), |l| result = Some(f(l)))? };
    result.ok_or_else(|| mlua::Error::runtime("lua-system: the state could not be reached"))
}

/// Gives `record`'s state an arena of its own, where its blocks are allocated from now on, and
/// switches its allocator function to the one that uses it (`arena.rs`): from then on its
/// memory limit bounds the pages it keeps resident. Nothing for states the module was loaded
/// into (their blocks are their interpreter's allocator's), nor without feature `jemalloc`.
///
/// # Safety
/// `l` is a thread of `record`'s state, on the thread running it, between two allocations.
pub(crate) unsafe fn contain<R: Record>(l: *mut lua_State, record: &R) {
    // LuaJIT states mlua made keep mlua's allocator: LuaJIT frees its main state through the
    // allocator it was made with, which must then be mlua's.
    let mlua_made_luajit = cfg!(feature = "luajit") && record.chain().is_some();
    #[cfg(feature = "jemalloc")]
    if !record.tracks_blocks()
        && !mlua_made_luajit
        && record.arena().is_none()
        && record.arena_slot().get_or_make().is_some()
    {
        let mut ud = std::ptr::null_mut();
        // SAFETY: per the contract; the new function serves every block the old one did, with
        // the same record as its data.
        unsafe {
            ffi::lua_getallocf(l, &mut ud);
            ffi::lua_setallocf(l, function_for(record, record.heap().watching_peaks()), ud);
        }
    }
    let _ = (l, record, mlua_made_luajit);
}

/// [`contain`] for a state reached through mlua.
pub(crate) fn contain_state<R: Record + Send>(lua: &Lua, record: &R) -> mlua::Result<()> {
    // SAFETY: on the locked state, under a protected call, outside any allocation.
    record.heap().over_limit(|| unsafe { with_raw_state(lua, |l| contain(l, record)) })
}

/// `lua_newstate`; Lua 5.5 also takes a hash seed, made as `luaL_newstate` makes it.
unsafe fn new_state(f: ffi::lua_Alloc, ud: *mut c_void) -> *mut lua_State {
    // SAFETY: `f` follows the lua_Alloc contract; `ud` per `AccountedState::new`.
    unsafe {
        #[cfg(feature = "lua55")]
        return ffi::lua_newstate(f, ud, ffi::luaL_makeseed(std::ptr::null_mut()));
        #[cfg(not(feature = "lua55"))]
        return ffi::lua_newstate(f, ud);
    }
}
