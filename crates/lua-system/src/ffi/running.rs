//! Which Lua thread of a state runs now (`accounts/running.rs`), for what must know it from
//! outside the thread's own code: the heap profiler reads the stack of the thread an allocation
//! is made on, and the CPU budget's timer interrupts the thread that runs when it expires.
//!
//! The module puts `coroutine.resume` and `coroutine.wrap` behind functions that record the
//! coroutine they resume for as long as it runs (errors and results pass through unchanged).
//! A coroutine resumed by C code (`lua_resume`) is not seen: the thread that resumed it counts
//! as running meanwhile.

use std::ffi::c_int;

use mlua::ffi::{self, lua_State};

use super::Record;

/// Why the running thread cannot be tracked.
pub(crate) enum NotTracked {
    /// Lua 5.1 and LuaJIT: asked from a coroutine, where the main thread cannot be found
    /// without allocating (and a coroutine taken for it could be collected while in use).
    NotMainThread,
    /// Putting the coroutine functions behind the module's raised an error (no memory).
    Failed,
}

/// Starts tracking which thread of `record`'s state runs (once; nothing if it already is).
///
/// # Safety
/// `l` is a running thread of the state `record` serves, with a few free stack slots, outside
/// any allocation.
pub(crate) unsafe fn track<R: Record>(l: *mut lua_State, record: &R) -> Result<(), NotTracked> {
    let running = record.running_thread();
    if running.tracking() {
        return Ok(());
    }
    // SAFETY: per the contract; the wrapping runs under `protected::call`.
    unsafe {
        let main = super::thread::main_thread(l);
        if main.is_null() {
            return Err(NotTracked::NotMainThread);
        }
        if super::protected::call(l, wrap_armed::<R>, l).is_err() {
            ffi::lua_settop(l, -2);
            return Err(NotTracked::Failed);
        }
        running.start(main as usize);
    }
    Ok(())
}

/// The wrapping, run protected (argument: the armed state, checked).
unsafe extern "C-unwind" fn wrap_armed<R: Record>(l: *mut lua_State) -> c_int {
    // SAFETY: a helper run by `protected::call`; it holds nothing to drop.
    unsafe {
        if super::protected::armed::<lua_State>(l).is_some() {
            wrap_coroutine_functions::<R>(l);
        }
    }
    super::protected::NO_RESULTS
}

/// Pushes `package.loaded` (the registry's `_LOADED`, read raw: no metamethod runs).
///
/// # Safety
/// `l` is running with a free stack slot, under a protected call (the key's string may need
/// memory).
pub(crate) unsafe fn push_loaded(l: *mut lua_State) {
    // SAFETY: per the contract.
    unsafe {
        ffi::lua_pushstring(l, c"_LOADED".as_ptr());
        ffi::lua_rawget(l, ffi::LUA_REGISTRYINDEX);
    }
}

/// Puts `coroutine.resume` and `coroutine.wrap` (in `package.loaded.coroutine`, so the global
/// table's too) behind the module's (upvalue 1: the function replaced, a library function any
/// script can call).
///
/// # Safety
/// `l` is running, under a protected call, with a few free slots.
unsafe fn wrap_coroutine_functions<R: Record>(l: *mut lua_State) {
    // SAFETY: under `track`'s protected call (the strings and closures made here may need
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
        let running = super::states::record::<R>(l).map(|record| record.running_thread());
        let previous = running.map(|running| running.enter(co as usize));
        let status = ffi::lua_pcall(l, arguments, ffi::LUA_MULTRET, 0);
        if let (Some(running), Some(previous)) = (running, previous) {
            running.leave(previous);
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
