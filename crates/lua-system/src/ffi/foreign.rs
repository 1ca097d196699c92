//! Loading the module into a state made elsewhere: by an interpreter (`system.so`), by mlua
//! (`Lua::new()` then `install`), or by a C host.
//!
//! The module puts its allocator in front of the state's own ([`interposed`]): the state's
//! allocator keeps serving every block, and the module sees every event from then on. Its
//! record of the state lives until the state no longer needs it:
//!
//! * Lua 5.1 to 5.5 free the main state last, through the allocator: the interposed allocator
//!   frees the record after that last block.
//! * LuaJIT destroys its own allocator's arena at close only if that allocator is still
//!   installed (otherwise the arena leaks). A userdata kept in the registry, whose finalizer
//!   runs only when the state closes, gives the state's own allocator back and frees the
//!   record; module functions called by later finalizers answer that the state is closing.
//! * A state mlua made for a [`SystemLua`](crate::SystemLua) gets mlua's allocator back when the
//!   `SystemLua` is dropped ([`give_back`]), before mlua closes it.

#[cfg(any(feature = "luajit", feature = "module"))]
use std::ffi::c_int;
use std::ffi::c_void;

use std::sync::Arc;

use mlua::Lua;

use mlua::ffi::{self, lua_State};

use super::lua_alloc::{Chain, function_for};
#[cfg(feature = "luajit")]
use super::protected;
use super::{Collector, Record, states};

/// The module's record of `l`'s state, made on first use (see the module docs). `None` if the
/// state's heap cannot be read now (Lua 5.4 and 5.5 answer nothing while they run finalizers
/// during a collection).
///
/// # Safety
/// `l` is a running thread, with room for three values; `make` builds the record of a state
/// holding the given bytes, whose requests go on to the given chain.
pub(crate) unsafe fn attach<R: Record>(l: *mut lua_State, make: impl FnOnce(Chain, u64) -> R) -> Option<Arc<R>> {
    // SAFETY: per the contract.
    unsafe {
        if let Some(record) = states::record::<R>(l) {
            return Some(states::shared(record));
        }
        let live = Collector::new(l).heap_bytes().ok()?;
        let mut ud = std::ptr::null_mut();
        let original = ffi::lua_getallocf(l, &mut ud);
        let record = Arc::new(make(Chain::new(original, ud, true), live));
        // The allocator's own reference, released after the state's last block.
        let held = Arc::into_raw(Arc::clone(&record));
        ffi::lua_setallocf(l, function_for(&*record, false), held as *mut c_void);
        #[cfg(feature = "luajit")]
        if protected::call(l, make_close_detector::<R>, &DETECTOR_KEY as *const u8 as *mut u8).is_err() {
            // Without a detector the arena would leak at close: give the allocator back now.
            ffi::lua_settop(l, -2);
            ffi::lua_setallocf(l, original, ud);
            drop(Arc::from_raw(held));
            return None;
        }
        Some(record)
    }
}

/// The state's own allocator and its data, for a record its owner frees to chain to.
///
/// # Safety
/// `l` is a thread of a live state.
unsafe fn own_allocator(l: *mut lua_State) -> Chain {
    let mut ud = std::ptr::null_mut();
    // SAFETY: per the contract.
    let original = unsafe { ffi::lua_getallocf(l, &mut ud) };
    Chain::new(original, ud, false)
}

/// Gives the state its own allocator back, if the module's for `record` is installed.
///
/// # Safety
/// `l` is a thread of a live state, not running an allocation.
pub(crate) unsafe fn give_back<R: Record>(l: *mut lua_State, record: &R) {
    // SAFETY: per the contract.
    unsafe {
        if states::record::<R>(l).is_some_and(|installed| std::ptr::eq(installed, record))
            && let Some(chain) = record.chain()
        {
            let (original, ud) = chain.original();
            ffi::lua_setallocf(l, original, ud);
        }
    }
}

/// Registry key of LuaJIT's close detector.
#[cfg(feature = "luajit")]
static DETECTOR_KEY: u8 = 0;

/// Makes the close detector: a userdata in the registry whose metatable's `__gc` is
/// [`closing`].
#[cfg(feature = "luajit")]
unsafe extern "C-unwind" fn make_close_detector<R: Record>(l: *mut lua_State) -> c_int {
    // SAFETY: only for the armed call; pushes three values and stores them.
    unsafe {
        let Some(key) = protected::armed::<u8>(l) else {
            return protected::NO_RESULTS;
        };
        ffi::lua_newuserdata(l, 0);
        ffi::lua_createtable(l, 0, 1);
        ffi::lua_pushcfunction(l, closing::<R>);
        ffi::lua_setfield(l, -2, c"__gc".as_ptr());
        ffi::lua_pushvalue(l, -1);
        ffi::lua_rawsetp(l, ffi::LUA_REGISTRYINDEX, key.cast::<u8>().add(1).cast());
        ffi::lua_setmetatable(l, -2);
        ffi::lua_rawsetp(l, ffi::LUA_REGISTRYINDEX, key.cast());
    }
    protected::NO_RESULTS
}

/// The close detector's finalizer: gives LuaJIT its own allocator back and frees the record.
/// Argument 1 must be the detector itself (the userdata the registry holds under its key). A
/// script with `debug` can call it with the detector before the state closes: the state then
/// has its own allocator back early, the module's functions answer that their record is gone,
/// and the call at close finds no record (nothing is freed twice). Telling that call from
/// `lua_close`'s by the stack does not work: LuaJIT runs the finalizers at close above a frame.
#[cfg(feature = "luajit")]
unsafe extern "C-unwind" fn closing<R: Record>(l: *mut lua_State) -> c_int {
    // SAFETY: reads argument 1 and the registry, restoring the stack; the record is freed only
    // once its allocator is no longer installed.
    unsafe {
        let Some(record) = states::record::<R>(l) else { return 0 };
        ffi::lua_rawgetp(l, ffi::LUA_REGISTRYINDEX, &DETECTOR_KEY as *const u8 as *const c_void);
        let is_detector = ffi::lua_type(l, 1) == ffi::LUA_TUSERDATA && ffi::lua_rawequal(l, 1, -1) != 0;
        ffi::lua_settop(l, -2);
        if !is_detector || closing_state_is_running(l) {
            return 0; // a script calling it, or the detector collected while the state runs
        }
        let Some(chain) = record.chain() else { return 0 };
        let (original, ud) = chain.original();
        ffi::lua_setallocf(l, original, ud);
        // The allocator's reference (see `attach`).
        drop(Arc::from_raw(record as *const R));
    }
    0
}

/// Whether the state is still running normally: the detector is in the registry only until
/// `lua_close` (or a script removing it with `debug`). Finalized while still registered means
/// the state is closing.
#[cfg(feature = "luajit")]
unsafe fn closing_state_is_running(l: *mut lua_State) -> bool {
    // SAFETY: reads one registry field.
    unsafe {
        ffi::lua_rawgetp(l, ffi::LUA_REGISTRYINDEX, &DETECTOR_KEY as *const u8 as *const c_void);
        let registered = ffi::lua_type(l, -1) == ffi::LUA_TUSERDATA;
        ffi::lua_settop(l, -2);
        !registered
    }
}

/// [`attach`] for a state reached through mlua: the module's allocator goes in front of the
/// state's own, with a record made by `make`, published for the Rust API.
pub(crate) fn attach_to<R: Record + Send>(lua: &Lua, make: impl FnOnce(Chain, u64) -> R) -> mlua::Result<()> {
    // SAFETY: `with_raw_state` runs on the locked state, protected; `attach` raises nothing
    // outside its own protected calls.
    let attached = unsafe { states::with_raw_state(lua, |l| attach::<R>(l, make))? };
    let record =
        attached.ok_or_else(|| mlua::Error::runtime("lua-system: cannot load the module while Lua runs finalizers"))?;
    states::publish(lua, record);
    Ok(())
}

/// Puts the module's allocator in front of the state's own (a state mlua made, with nothing but
/// mlua's own objects in it) with a record made by `make` from the state's allocator and its
/// bytes in use, publishes it, and returns it. The allocator holds
/// no reference of its own: the caller must [`give_back_to`] the allocator before dropping the
/// last reference.
pub(crate) fn take_over<R: Record + Send>(lua: &Lua, make: impl FnOnce(Chain, u64) -> R) -> mlua::Result<Arc<R>> {
    // SAFETY: as in `attach_to`; the record is installed at its final address (in the `Arc`).
    let record = unsafe {
        states::with_raw_state(lua, |l| {
            let live = Collector::new(l).heap_bytes().ok()?;
            let record = Arc::new(make(own_allocator(l), live));
            ffi::lua_setallocf(l, function_for(&*record, false), Arc::as_ptr(&record) as *mut c_void);
            // mlua keeps one coroutine of its own (its reference thread), the state's only one
            // now; it is not the script's. On the state's thread, under its lock.
            record.thread_blocks().hide_current();
            Some(record)
        })?
    }
    .ok_or_else(|| mlua::Error::runtime("lua-system: the state's heap could not be read"))?;
    states::publish(lua, Arc::clone(&record));
    Ok(record)
}

/// [`give_back`] for a state reached through mlua; also unpublishes the record.
pub(crate) fn give_back_to<R: Record + Send>(lua: &Lua, record: &R) -> mlua::Result<()> {
    states::unpublish::<R>(lua);
    #[cfg(feature = "jemalloc")]
    if record.arena().is_some()
        && let Some(chain) = record.chain()
    {
        // Blocks of the state's arena cannot go to mlua's allocator: the module's stays, with a
        // reference of its own to the record, until the state's last block (mlua closes the
        // state when its last handle goes).
        // SAFETY: `record` lives in an `Arc` (the owner's), alive now.
        unsafe { std::sync::Arc::increment_strong_count(record as *const R) };
        chain.hand_over();
        return Ok(());
    }
    // SAFETY: on the locked state, outside any allocation; mlua's call needs a little memory,
    // so the limit is lifted for it.
    record.heap().over_limit(|| unsafe { states::with_raw_state(lua, |l| give_back(l, record)) })
}

/// Switches the state's allocator to the one tracking peaks (`on`) or back, for `record`'s state
/// reached through mlua.
pub(crate) fn watch_peaks<R: Record>(lua: &Lua, record: &R, on: bool) -> mlua::Result<()> {
    record.heap().watch_peaks(on);
    // SAFETY: on the locked state, outside any allocation; both functions serve the same blocks
    // for the same record.
    unsafe {
        states::with_raw_state(lua, |l| {
            if states::record::<R>(l).is_some_and(|installed| std::ptr::eq(installed, record)) {
                ffi::lua_setallocf(l, function_for(record, on), record as *const R as *mut c_void);
            }
        })
    }
}

/// `luaopen_system` of `system.so`: attaches to the interpreter's state (a record made by
/// `make`), then runs the loader. Raises a Lua error if the state cannot be attached to now.
///
/// # Safety
/// Called by Lua's `require` with a running state.
#[cfg(feature = "module")]
pub(crate) unsafe fn open<M: super::call::Module>(
    l: *mut lua_State,
    make: impl FnOnce(Chain, u64) -> M::Record,
) -> c_int {
    // SAFETY: per the contract; a Lua function may raise, and nothing here owns a destructor
    // then.
    unsafe {
        if attach::<M::Record>(l, make).is_none() {
            ffi::lua_pushstring(l, c"system: cannot load the module while Lua runs finalizers".as_ptr());
            ffi::lua_error(l);
        }
        super::loader::loader::<M>(l)
    }
}
