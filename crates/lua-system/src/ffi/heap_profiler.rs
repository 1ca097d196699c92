//! The heap profiler's contact with Lua: starting it in a state (naming the functions reachable
//! from `package.loaded`, installing the sampling allocator), and knowing which coroutine runs.
//! Reading the stack of a sampled allocation is `stack_walk.rs`'s.
//!
//! * Which coroutine runs: the profiler puts `coroutine.resume` and `coroutine.wrap` behind
//!   functions that record the coroutine they resume for as long as it runs (errors and
//!   results pass through unchanged). A coroutine resumed by C code (`lua_resume`) is not
//!   seen: its allocations go to the thread that resumed it.
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
            let main = super::thread::main_thread(l);
            if main.is_null() {
                return Err(NotStarted::NotMainThread);
            }
            let mut start = Start { names: HashMap::new() };
            let data = &mut start as *mut Start;
            if super::protected::call(l, start_up::<R>, data).is_err() {
                ffi::lua_settop(l, -2);
                return Err(NotStarted::Failed);
            }
            sampler.start(main as usize, start.names);
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

/// The start-up's Lua side, run protected: names the functions, wraps the coroutine functions.
/// Argument 1 is the armed [`Start`]; anything else does nothing.
unsafe extern "C-unwind" fn start_up<R: Record>(l: *mut lua_State) -> c_int {
    // SAFETY: a helper run by `protected::call`; the only Rust value alive across a raising
    // call is the `&mut Start`, owned by the caller outside the protected call.
    unsafe {
        let Some(start) = super::protected::armed::<Start>(l) else {
            return super::protected::NO_RESULTS;
        };
        qualified_names(l, &mut (*start).names);
        track_coroutines::<R>(l);
    }
    super::protected::NO_RESULTS
}

/// Pushes `package.loaded` (the registry's `_LOADED`, read raw: no metamethod runs).
///
/// # Safety
/// `l` is running with a free stack slot, under a protected call (the key's string may need
/// memory).
unsafe fn push_loaded(l: *mut lua_State) {
    // SAFETY: per the contract.
    unsafe {
        ffi::lua_pushstring(l, c"_LOADED".as_ptr());
        ffi::lua_rawget(l, ffi::LUA_REGISTRYINDEX);
    }
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
        push_loaded(l);
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

/// Puts `coroutine.resume` and `coroutine.wrap` behind the profiler's own (upvalue 1: the
/// function replaced, a library function any script can call).
unsafe fn track_coroutines<R: Record>(l: *mut lua_State) {
    // SAFETY: under the start-up's protected call (the strings and closures made here may need
    // memory); tables are read and set raw (no metamethod runs); the stack is restored.
    unsafe {
        let top = ffi::lua_gettop(l);
        push_loaded(l);
        if ffi::lua_type(l, -1) == ffi::LUA_TTABLE {
            ffi::lua_pushstring(l, c"coroutine".as_ptr());
            ffi::lua_rawget(l, -2);
        }
        if ffi::lua_type(l, -1) == ffi::LUA_TTABLE {
            for (name, wrapper) in
                [(c"resume", resume::<R> as ffi::lua_CFunction), (c"wrap", wrap::<R> as ffi::lua_CFunction)]
            {
                ffi::lua_pushstring(l, name.as_ptr());
                ffi::lua_pushvalue(l, -1);
                ffi::lua_rawget(l, -3);
                if ffi::lua_type(l, -1) == ffi::LUA_TFUNCTION {
                    ffi::lua_pushcclosure(l, wrapper, 1);
                    ffi::lua_rawset(l, -3);
                } else {
                    ffi::lua_settop(l, -3);
                }
            }
        }
        ffi::lua_settop(l, top);
    }
}

/// Calls the value at `function` (an upvalue index) with the frame's values as arguments, with
/// `co` (the thread at `co_index`) recorded as the running coroutine meanwhile; returns the
/// call's status, with its results (or error) from index 2 on. A copy of `co` stays in this
/// frame's slot 1 until the call returns: neither the callee nor a script that replaced the
/// wrapper's upvalues can let it be collected while it is recorded. One rotation puts both
/// below the arguments, and the results are returned from above it (no removal): a resume is
/// the profiler's hottest wrapper.
unsafe fn run_as<R: Record>(l: *mut lua_State, co: *mut lua_State, co_index: c_int, function: c_int) -> c_int {
    // SAFETY: `lua_pcall` catches every error, so the running thread is always restored before
    // anything raises past this frame, which owns nothing to drop. A C function has
    // LUA_MINSTACK free slots.
    unsafe {
        let arguments = ffi::lua_gettop(l);
        ffi::lua_pushvalue(l, co_index);
        ffi::lua_pushvalue(l, function);
        ffi::lua_rotate(l, 1, 2); // [co, f, args...]
        let sampler = super::states::record::<R>(l).map(|record| record.heap_sampler());
        let previous = sampler.map(|sampler| sampler.enter(co as usize));
        let status = ffi::lua_pcall(l, arguments, ffi::LUA_MULTRET, 0);
        if let (Some(sampler), Some(previous)) = (sampler, previous) {
            sampler.leave(previous);
        }
        status
    }
}

/// `coroutine.resume`, recording the coroutine it runs.
unsafe extern "C-unwind" fn resume<R: Record>(l: *mut lua_State) -> c_int {
    // SAFETY: a C function called by Lua; upvalue 1 is the library's `coroutine.resume`.
    unsafe {
        let co = ffi::lua_tothread(l, 1);
        if co.is_null() {
            // The library's own wording: 5.4 and 5.5 check for a thread, 5.3 expects a
            // thread, 5.1, 5.2 and LuaJIT a coroutine.
            #[cfg(any(feature = "lua54", feature = "lua55"))]
            ffi::luaL_checktype(l, 1, ffi::LUA_TTHREAD);
            let expected = if cfg!(feature = "lua53") { c"thread expected" } else { c"coroutine expected" };
            return ffi::luaL_argerror(l, 1, expected.as_ptr());
        }
        if run_as::<R>(l, co, 1, ffi::lua_upvalueindex(1)) != ffi::LUA_OK {
            ffi::lua_error(l);
        }
        ffi::lua_gettop(l) - 1
    }
}

/// `coroutine.wrap`: the library's function, behind one that records the coroutine it runs.
unsafe extern "C-unwind" fn wrap<R: Record>(l: *mut lua_State) -> c_int {
    // SAFETY: a C function called by Lua; upvalue 1 is the library's `coroutine.wrap`, whose
    // result is a C closure holding its coroutine as upvalue 1.
    unsafe {
        super::coroutines::call_original(l);
        if ffi::lua_getupvalue(l, -1, 1).is_null() {
            return 1;
        }
        if ffi::lua_type(l, -1) != ffi::LUA_TTHREAD {
            ffi::lua_settop(l, -2);
            return 1;
        }
        ffi::lua_pushcclosure(l, wrapped::<R>, 2);
        1
    }
}

/// A function made by `coroutine.wrap` (upvalue 1: the library's; 2: its coroutine).
unsafe extern "C-unwind" fn wrapped<R: Record>(l: *mut lua_State) -> c_int {
    // SAFETY: a C function called by Lua with the upvalues `wrap` gave it (a script may have
    // replaced them with `debug.setupvalue`: then it calls what it put there, and a coroutine
    // that is not one is not recorded).
    unsafe {
        let co = ffi::lua_tothread(l, ffi::lua_upvalueindex(2));
        let status = if co.is_null() {
            // What the script put there, called as is (after a placeholder for slot 1).
            ffi::lua_pushnil(l);
            ffi::lua_pushvalue(l, ffi::lua_upvalueindex(1));
            ffi::lua_rotate(l, 1, 2);
            ffi::lua_pcall(l, ffi::lua_gettop(l) - 2, ffi::LUA_MULTRET, 0)
        } else {
            run_as::<R>(l, co, ffi::lua_upvalueindex(2), ffi::lua_upvalueindex(1))
        };
        if status != ffi::LUA_OK {
            // The library's function added the position of its caller, this C function (none):
            // add the caller's, as it would have (not to a memory error's message).
            #[cfg(any(feature = "lua51", feature = "lua52"))]
            let is_text = ffi::lua_isstring(l, -1) != 0;
            #[cfg(not(any(feature = "lua51", feature = "lua52")))]
            let is_text = ffi::lua_type(l, -1) == ffi::LUA_TSTRING;
            if is_text && status != ffi::LUA_ERRMEM {
                ffi::luaL_where(l, 1);
                ffi::lua_insert(l, -2);
                ffi::lua_concat(l, 2);
            }
            ffi::lua_error(l);
        }
        ffi::lua_gettop(l) - 1 // the results, above slot 1
    }
}
