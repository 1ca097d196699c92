//! The heap profiler's contact with Lua: starting it in a state (naming the functions reachable
//! from `package.loaded`, installing the sampling allocator), and knowing which coroutine runs.
//! Reading the stack of a sampled allocation is `stack_walk.rs`'s.
//!
//! * Which coroutine runs: `running.rs` puts `coroutine.resume` and `coroutine.wrap` behind
//!   functions that record the coroutine they resume for as long as it runs. A coroutine
//!   resumed by C code (`lua_resume`) is not seen: its allocations go to the thread that
//!   resumed it.
//! * LuaJIT: the JIT compiler is turned off while the profiler runs (compiled traces have no
//!   Lua stack to read), as for the CPU budget.

use std::collections::HashMap;
use std::ffi::c_int;

use mlua::ffi::{self, lua_State};

use super::Record;
use super::stack_walk::{bounded, text};

/// Why the profiler could not start.
pub(crate) enum NotStarted {
    /// Lua 5.1 and LuaJIT: called from a coroutine, where the main thread cannot be found
    /// without allocating (and a coroutine taken for it could be collected while in use).
    NotMainThread,
    /// Naming the functions or putting the coroutine functions behind the profiler's raised an
    /// error (no memory): nothing was started.
    Failed,
}

/// What the protected start-up fills in.
struct Start {
    names: HashMap<usize, String>,
}

/// Sets the state's sampling rate (bytes; 0 stops, 1 samples every allocation) and returns the
/// previous one. The first start with a rate above 0 names the functions reachable from
/// `package.loaded`, puts the coroutine functions behind the profiler's (both under a protected
/// call), and installs the sampling allocator.
///
/// # Safety
/// `l` is a running thread of the state `record` serves, with a few free stack slots, outside
/// any allocation.
pub(crate) unsafe fn set_rate<R: Record>(l: *mut lua_State, record: &R, rate: u64) -> Result<u64, NotStarted> {
    let sampler = record.heap_sampler();
    // SAFETY: per the contract; the start-up's Lua calls run under `protected::call`, and what
    // runs outside it reads the registry by integer key or sets the allocator (no raise).
    unsafe {
        if rate > 0 && !sampler.started() {
            match super::running::track(l, record) {
                Ok(()) => {}
                Err(super::running::NotTracked::NotMainThread) => return Err(NotStarted::NotMainThread),
                Err(super::running::NotTracked::Failed) => return Err(NotStarted::Failed),
            }
            let mut start = Start { names: HashMap::new() };
            let data = &mut start as *mut Start;
            if super::protected::call(l, start_up::<R>, data).is_err() {
                ffi::lua_settop(l, -2);
                return Err(NotStarted::Failed);
            }
            sampler.start(start.names);
            let mut ud = std::ptr::null_mut();
            ffi::lua_getallocf(l, &mut ud);
            ffi::lua_setallocf(l, super::lua_alloc::function_for(record, record.heap().watching_peaks()), ud);
        }
        if rate > 0 {
            super::thread::jit_off(l);
        }
        Ok(sampler.set_rate(rate))
    }
}

/// [`set_rate`] from a host, on the state behind `lua` (its record `record`).
pub(crate) fn set_rate_of<R: Record>(lua: &mlua::Lua, record: &R, rate: u64) -> mlua::Result<Result<u64, NotStarted>> {
    // SAFETY: on the locked state, outside any allocation, under a protected call; the record
    // is the state's (the caller found it published for `lua`).
    unsafe { super::states::with_raw_state(lua, |l| set_rate(l, record, rate)) }
}

/// The start-up's Lua side, run protected: names the functions.
/// Argument 1 is the armed [`Start`]; anything else does nothing.
unsafe extern "C-unwind" fn start_up<R: Record>(l: *mut lua_State) -> c_int {
    // SAFETY: a helper run by `protected::call`; the only Rust value alive across a raising
    // call is the `&mut Start`, owned by the caller outside the protected call.
    unsafe {
        let Some(start) = super::protected::armed::<Start>(l) else {
            return super::protected::NO_RESULTS;
        };
        qualified_names(l, &mut (*start).names);
    }
    super::protected::NO_RESULTS
}

/// The qualified names of the functions in `package.loaded`'s tables, by identity, into
/// `names`: `string.rep`, and `print` for the base library, as Lua 5.4's traceback names them.
///
/// # Safety
/// `l` is running, with 4 free stack slots, under a protected call; the stack is restored.
unsafe fn qualified_names(l: *mut lua_State, names: &mut HashMap<usize, String>) {
    // SAFETY: only `push_loaded` may raise (before anything is read); then raw reads with
    // `lua_next` over existing keys allocate nothing, and only string keys are read as text (no
    // conversion in place).
    unsafe {
        let top = ffi::lua_gettop(l);
        super::running::push_loaded(l);
        if ffi::lua_type(l, -1) == ffi::LUA_TTABLE {
            ffi::lua_pushnil(l);
            while ffi::lua_next(l, -2) != 0 {
                if ffi::lua_type(l, -2) == ffi::LUA_TSTRING && ffi::lua_type(l, -1) == ffi::LUA_TTABLE {
                    let module = bounded(text(ffi::lua_tolstring(l, -2, std::ptr::null_mut())));
                    ffi::lua_pushnil(l);
                    while ffi::lua_next(l, -2) != 0 {
                        if ffi::lua_type(l, -2) == ffi::LUA_TSTRING && ffi::lua_type(l, -1) == ffi::LUA_TFUNCTION {
                            let key = bounded(text(ffi::lua_tolstring(l, -2, std::ptr::null_mut())));
                            let id = ffi::lua_topointer(l, -1) as usize;
                            if module == "_G" {
                                names.entry(id).or_insert(key);
                            } else {
                                names.insert(id, format!("{module}.{key}"));
                            }
                        }
                        ffi::lua_settop(l, -2);
                    }
                }
                ffi::lua_settop(l, -2);
            }
        }
        ffi::lua_settop(l, top);
    }
}
