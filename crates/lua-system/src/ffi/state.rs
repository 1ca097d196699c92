//! Creating and closing states, building the module table, and the cycle sentinel.

use std::ffi::{c_int, c_void};
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::NonNull;

use mlua::ffi::{self, lua_State};

use mlua::Lua;

use super::Collector;
use super::alloc::{Chain, accounted, interposed};
use super::call::push_function;
use super::coroutines;
use crate::memory::MemStats;
use crate::module::FUNCTIONS;
use crate::state::{Accounting, StateData};

/// A state created by the module, with the module's allocator from its first byte, and the
/// [`StateData`] that allocator records into. Dropping it closes the state, then frees the data.
pub(crate) struct AccountedState {
    l: NonNull<lua_State>,
    data: NonNull<StateData>,
}

impl AccountedState {
    /// Creates the state with the base library open, and mlua's handle on it. Returns `None` if
    /// Lua could not allocate it.
    pub(crate) fn new(accounting: Accounting) -> Option<AccountedState> {
        let data = NonNull::from(Box::leak(Box::new(StateData::new(accounting))));
        // SAFETY: `accounted` follows the lua_Alloc contract; `data` is freed only in `drop`,
        // after `lua_close`.
        let l = unsafe { new_state(data.as_ptr().cast()) };
        let Some(l) = NonNull::new(l) else {
            // SAFETY: `data` came from `Box::leak` above and nothing else refers to it.
            drop(unsafe { Box::from_raw(data.as_ptr()) });
            return None;
        };
        let state = AccountedState { l, data };
        // SAFETY: `l` is a fresh state; `open_base` runs under lua_pcall.
        let opened = unsafe {
            ffi::lua_atpanic(l.as_ptr(), on_panic);
            ffi::lua_pushcfunction(l.as_ptr(), open_base);
            ffi::lua_pcall(l.as_ptr(), 0, 0, 0) == ffi::LUA_OK
        };
        opened.then_some(state)
    }

    pub(crate) fn data(&self) -> NonNull<StateData> {
        self.data
    }

    /// Tracks the heap's peak between cycles (`on`) or stops, by switching the state's allocator
    /// function: the unwatched one does no peak bookkeeping at all.
    pub(crate) fn watch_peaks(&self, on: bool) {
        let allocator: ffi::lua_Alloc = if on { super::alloc::accounted_watching_peaks } else { accounted };
        // SAFETY: `data` is alive as long as `self`. `AccountedState` is neither `Send` nor
        // `Sync`, so this runs on the thread that owns the state, between two allocations
        // (even when Lua is running a callback that got here). Both functions serve the same
        // blocks with the same `ud`, so either may free or resize what the other allocated.
        unsafe {
            self.data.as_ref().heap.watch_peaks(on);
            ffi::lua_setallocf(self.l.as_ptr(), allocator, self.data.as_ptr().cast());
        }
    }

    /// mlua's handle on the state (mlua registers it on first use, as for a Lua module).
    ///
    /// # Safety
    /// Neither the returned `Lua` nor any clone of it may be used after `self` is dropped.
    pub(crate) unsafe fn lua(&self) -> Lua {
        // SAFETY: `l` is the main thread of a live state; per the contract for the lifetime.
        unsafe { Lua::get_or_init_from_ptr(self.l.as_ptr()).clone() }
    }
}

impl Drop for AccountedState {
    fn drop(&mut self) {
        // `lua_close` runs every finalizer, the cycle sentinel's too: that is no cycle to report.
        // SAFETY: `data` is alive until the box is dropped below.
        unsafe { self.data.as_ref() }.gc.set_hook(None);
        // SAFETY: the state is not running (we hold it by value) and is never used again; the
        // allocator's data outlives `lua_close` and is freed right after it.
        unsafe {
            ffi::lua_close(self.l.as_ptr());
            drop(Box::from_raw(self.data.as_ptr()));
        }
    }
}

/// mlua's view of a state, for the Rust API: reads `MemStats` on the state's current thread.
pub(crate) fn read_stats(lua: &Lua, data: &StateData) -> mlua::Result<MemStats> {
    let mut stats = None;
    // SAFETY: `exec_raw` runs the closure under lua_pcall on the locked state; reading the
    // stats raises no Lua error.
    unsafe {
        lua.exec_raw::<()>((), |l| stats = Some(MemStats::read(data, &Collector::new(l))))?;
    }
    stats.ok_or_else(|| mlua::Error::runtime("lua-system: the statistics could not be read"))
}

/// The collector's percent as `system.get_gc_percent()` answers it, on the state's current
/// thread; reading it also refreshes what a [`Probe`](crate::Probe) sees.
pub(crate) fn read_gc_percent(lua: &Lua, data: &StateData) -> mlua::Result<i64> {
    let mut percent = None;
    // SAFETY: as in `read_stats`: under lua_pcall, and reading the collector raises no error.
    unsafe {
        lua.exec_raw::<()>((), |l| percent = Some(crate::gc::current_percent(data, &Collector::new(l))))?;
    }
    match percent {
        Some(Ok(percent)) => Ok(percent),
        _ => Err(mlua::Error::runtime("lua-system: the collector is running finalizers")),
    }
}

/// `lua_newstate`; Lua 5.5 also takes a hash seed, made as `luaL_newstate` makes it.
unsafe fn new_state(ud: *mut c_void) -> *mut lua_State {
    // SAFETY: `accounted` follows the lua_Alloc contract; `ud` per `AccountedState::new`.
    unsafe {
        #[cfg(feature = "lua55")]
        return ffi::lua_newstate(accounted, ud, ffi::luaL_makeseed(std::ptr::null_mut()));
        #[cfg(not(feature = "lua55"))]
        return ffi::lua_newstate(accounted, ud);
    }
}

unsafe extern "C-unwind" fn open_base(l: *mut lua_State) -> c_int {
    // SAFETY: called under lua_pcall by `AccountedState::new`.
    unsafe {
        ffi::luaL_requiref(l, c"_G".as_ptr(), ffi::luaopen_base, 1);
        ffi::lua_settop(l, 0);
    }
    0
}

/// What `luaL_newstate` installs: report an error raised outside any protected call. Lua
/// aborts the process when this returns.
unsafe extern "C-unwind" fn on_panic(l: *mut lua_State) -> c_int {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the error object is on top of the stack; a string is read without converting.
        let message = unsafe {
            if ffi::lua_type(l, -1) == ffi::LUA_TSTRING {
                let mut len = 0;
                let ptr = ffi::lua_tolstring(l, -1, &mut len);
                String::from_utf8_lossy(std::slice::from_raw_parts(ptr.cast::<u8>(), len)).into_owned()
            } else {
                "error object is not a string".to_owned()
            }
        };
        let _ = writeln!(std::io::stderr(), "PANIC: unprotected error in call to Lua API ({message})");
    }));
    0
}

/// `lua_CFunction` making the `require` loader of the module: a closure of [`load_module`] over
/// the state's [`StateData`], given as light userdata argument 1.
///
/// # Safety
/// Called by Lua with a `StateData` pointer that lives as long as the state.
pub(crate) unsafe extern "C-unwind" fn make_loader(l: *mut lua_State) -> c_int {
    // SAFETY: per the contract; the argument becomes the closure's upvalue.
    unsafe {
        ffi::lua_settop(l, 1);
        ffi::lua_pushcclosure(l, load_module, 1);
    }
    1
}

/// The module's loader (`package.preload.system`): builds the table of functions. The first
/// time in a state it also reads the collector's settings and arms the cycle sentinel.
unsafe extern "C-unwind" fn load_module(l: *mut lua_State) -> c_int {
    // SAFETY: the upvalue was set by `make_loader`; `push_function` needs two slots, the
    // sentinel three.
    unsafe {
        let data = ffi::lua_touserdata(l, ffi::lua_upvalueindex(1)) as *const StateData;
        ffi::lua_createtable(l, 0, FUNCTIONS.len() as c_int);
        for entry in FUNCTIONS {
            push_function(l, entry, data);
            ffi::lua_setfield(l, -2, entry.name.as_ptr());
        }
        if !(*data).gc.installed() {
            let _ = catch_unwind(AssertUnwindSafe(|| (*data).on_install(&Collector::new(l))));
        }
        if (*data).gc.claim_sentinel() {
            arm_sentinel(l, data);
        }
        coroutines::track(l, &*data);
    }
    1
}

/// Registry field holding the module's record of a state it was loaded into (light userdata
/// for interposed states, the userdata holding it for observed ones).
const RECORD_KEY: &std::ffi::CStr = c"lua-system state";

/// `luaopen_system` for a state an interpreter created: finds the module's record of the state,
/// or makes one, then returns the module table (argument 1, the module name, is ignored).
///
/// # Safety
/// Called by Lua (`require`) on a running state.
#[cfg(feature = "module")]
pub(crate) unsafe extern "C-unwind" fn open_in_interpreter(l: *mut lua_State) -> c_int {
    // SAFETY: per the contract; `attach` leaves the stack as it found it.
    unsafe {
        let data = attach(l);
        ffi::lua_pushlightuserdata(l, data as *mut c_void);
        ffi::lua_pushcclosure(l, load_module, 1);
        ffi::lua_call(l, 0, 1);
    }
    1
}

/// [`attach`] for a state mlua did not create with its own allocator (`Lua::get_or_init_from_ptr`).
pub(crate) fn attach_to(lua: &Lua) -> mlua::Result<NonNull<StateData>> {
    let mut data = std::ptr::null();
    // SAFETY: `exec_raw` runs the closure under lua_pcall on the locked state.
    unsafe { lua.exec_raw::<()>((), |l| data = attach(l))? };
    NonNull::new(data as *mut StateData).ok_or_else(|| mlua::Error::runtime("lua-system: cannot attach"))
}

/// The module's record of `l`'s state, made on first use.
///
/// Lua 5.1 to 5.5: the module's allocator is put in front of the interpreter's, counting from
/// Lua's own total of bytes in use; the record lives until the state's last block is freed
/// (see [`interposed`]). LuaJIT: interposing would leak its internal allocator (destroyed at
/// close only if it is still installed), so the record is observed only, and lives in a
/// userdata in the registry, freed with the state after every finalizer has run. It holds no
/// heap memory of its own in that mode, so it needs no destructor.
unsafe fn attach(l: *mut lua_State) -> *const StateData {
    // SAFETY: reads and sets one registry field; the stack is restored.
    unsafe {
        ffi::lua_getfield(l, ffi::LUA_REGISTRYINDEX, RECORD_KEY.as_ptr());
        let existing = ffi::lua_touserdata(l, -1) as *const StateData;
        ffi::lua_settop(l, -2);
        if !existing.is_null() {
            return existing;
        }
        let collector = Collector::new(l);
        if cfg!(feature = "luajit") {
            let slot = ffi::lua_newuserdata(l, std::mem::size_of::<StateData>()) as *mut StateData;
            slot.write(StateData::new(Accounting::Observed));
            ffi::lua_setfield(l, ffi::LUA_REGISTRYINDEX, RECORD_KEY.as_ptr());
            slot as *const StateData
        } else {
            let mut ud = std::ptr::null_mut();
            let alloc = ffi::lua_getallocf(l, &mut ud);
            let live = collector.heap_bytes().unwrap_or(0);
            let data = Box::leak(Box::new(StateData::interposed(Chain::new(alloc, ud), live))) as *const StateData;
            ffi::lua_setallocf(l, interposed, data as *mut c_void);
            ffi::lua_pushlightuserdata(l, data as *mut c_void);
            ffi::lua_setfield(l, ffi::LUA_REGISTRYINDEX, RECORD_KEY.as_ptr());
            data
        }
    }
}

/// Creates the sentinel: an unreachable zero-size userdata whose finalizer counts a completed
/// cycle, so that every cycle finalizes it exactly once. Userdata take `__gc` in every version
/// (tables do not in 5.1 and LuaJIT).
unsafe fn arm_sentinel(l: *mut lua_State, data: *const StateData) {
    // SAFETY: pushes and pops three values; `data` outlives the state.
    unsafe {
        ffi::lua_createtable(l, 0, 1);
        ffi::lua_pushlightuserdata(l, data as *mut c_void);
        ffi::lua_pushcclosure(l, on_sentinel_collected, 1);
        ffi::lua_setfield(l, -2, c"__gc".as_ptr());
        new_sentinel(l);
        ffi::lua_settop(l, -2);
    }
}

/// Makes a sentinel with the metatable on top of the stack (left there), and drops it.
unsafe extern "C-unwind" fn new_sentinel(l: *mut lua_State) -> c_int {
    // SAFETY: the metatable is on top; one slot is pushed and popped.
    unsafe {
        ffi::lua_newuserdata(l, 0);
        ffi::lua_pushvalue(l, -2);
        ffi::lua_setmetatable(l, -2);
        ffi::lua_settop(l, -2);
    }
    0
}

/// The sentinel's `__gc`: a cycle has completed. The sentinel then comes back for the next one.
unsafe extern "C-unwind" fn on_sentinel_collected(l: *mut lua_State) -> c_int {
    // SAFETY: the upvalue was set by `arm_sentinel`; argument 1 is the sentinel.
    unsafe {
        let data = &*(ffi::lua_touserdata(l, ffi::lua_upvalueindex(1)) as *const StateData);
        let _ = catch_unwind(AssertUnwindSafe(|| data.on_cycle_end(&Collector::new(l))));
        if ffi::lua_getmetatable(l, 1) != 0 {
            rearm(l);
        }
    }
    0
}

/// Lua 5.3, 5.4 and 5.5 clear an object's "finalized" mark before calling its `__gc`: setting
/// the metatable again marks it for finalization once more, without allocating. While the state
/// closes, Lua ignores that.
///
/// # Safety
/// The sentinel is argument 1 and its metatable on top of the stack.
#[cfg(any(feature = "lua53", feature = "lua54", feature = "lua55"))]
unsafe fn rearm(l: *mut lua_State) {
    // SAFETY: per the contract.
    unsafe {
        ffi::lua_setmetatable(l, 1);
    }
}

/// Lua 5.1, 5.2 and LuaJIT finalize an object once: a new sentinel replaces it, made under
/// `lua_pcall` because a finalizer's error would propagate to whatever triggered the collection
/// in these versions. If even that fails (out of memory), counting stops until the module is
/// loaded again.
///
/// # Safety
/// The sentinel's metatable is on top of the stack.
#[cfg(any(feature = "lua51", feature = "lua52", feature = "luajit"))]
unsafe fn rearm(l: *mut lua_State) {
    // SAFETY: per the contract; the pcall leaves one value (nothing or the error), popped.
    unsafe {
        ffi::lua_pushcfunction(l, new_sentinel);
        ffi::lua_insert(l, -2);
        if ffi::lua_pcall(l, 1, 0, 0) != ffi::LUA_OK {
            ffi::lua_settop(l, -2);
            let data = &*(ffi::lua_touserdata(l, ffi::lua_upvalueindex(1)) as *const StateData);
            data.gc.release_sentinel();
        }
    }
}
