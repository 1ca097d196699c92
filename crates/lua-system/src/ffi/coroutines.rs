//! Counting coroutines where the allocator cannot: Lua 5.1 and LuaJIT, which do not tell their
//! allocator which blocks are threads, and states whose allocator the module does not own.
//!
//! There, `coroutine.create` and `coroutine.wrap` are wrapped: each new coroutine is recorded in a
//! weak-keyed table in the registry, from which the collector removes it when it frees it. The
//! count is the table's size, read by walking it: O(live coroutines). Coroutines made from C
//! (`lua_newthread`) are not seen. Elsewhere (Lua 5.2 and later, with the module's allocator)
//! the allocator counts every thread block in O(1), and nothing is wrapped.

use std::ffi::{CStr, c_int};

use mlua::ffi::{self, lua_State};

use crate::state::StateData;

/// Registry field holding the weak table of live coroutines.
const REGISTRY_KEY: &CStr = c"lua-system coroutines";

/// Registry field holding the wrapped `coroutine.create`, to recognise it.
const WRAPPER_KEY: &CStr = c"lua-system coroutine.create";

/// Whether a new block's `osize` tags threads (Lua 5.2 and later).
pub(crate) const ALLOCATOR_SEES_THREADS: bool = cfg!(not(any(feature = "lua51", feature = "luajit")));

/// Wraps `coroutine.create` and `coroutine.wrap` if this state needs it and they are not
/// wrapped yet (the coroutine library may be opened after the module, so this runs on every
/// load of the module).
///
/// # Safety
/// `l` is running, with room for four values.
pub(crate) unsafe fn track(l: *mut lua_State, data: &StateData) {
    if data.coroutines_by_allocator() {
        return;
    }
    // SAFETY: per the contract; every path restores the stack top.
    unsafe {
        let top = ffi::lua_gettop(l);
        ffi::lua_getglobal(l, c"coroutine".as_ptr());
        if ffi::lua_type(l, -1) == ffi::LUA_TTABLE {
            // Already wrapped if `coroutine.create` is the wrapper recorded in the registry.
            ffi::lua_getfield(l, -1, c"create".as_ptr());
            ffi::lua_getfield(l, ffi::LUA_REGISTRYINDEX, WRAPPER_KEY.as_ptr());
            let wrapped = ffi::lua_rawequal(l, -1, -2) != 0;
            ffi::lua_settop(l, top + 1);
            if !wrapped {
                registry_table(l);
                wrap_field(l, c"create", create_and_track);
                wrap_field(l, c"wrap", wrap_and_track);
                ffi::lua_getfield(l, top + 1, c"create".as_ptr());
                ffi::lua_setfield(l, ffi::LUA_REGISTRYINDEX, WRAPPER_KEY.as_ptr());
                ffi::lua_settop(l, top + 1);
            }
        }
        ffi::lua_settop(l, top);
    }
}

/// Pushes the weak-keyed registry table, creating it if needed.
unsafe fn registry_table(l: *mut lua_State) {
    // SAFETY: pushes one value (plus temporaries popped here).
    unsafe {
        ffi::lua_getfield(l, ffi::LUA_REGISTRYINDEX, REGISTRY_KEY.as_ptr());
        if ffi::lua_type(l, -1) != ffi::LUA_TTABLE {
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
}

/// With the coroutine table at -2 and the registry table at -1: replaces `coroutine[name]` by a
/// closure of `wrapper` over the original and the registry table.
unsafe fn wrap_field(l: *mut lua_State, name: &CStr, wrapper: ffi::lua_CFunction) {
    // SAFETY: pushes three values, consumed by the closure and `lua_setfield`.
    unsafe {
        ffi::lua_getfield(l, -2, name.as_ptr());
        ffi::lua_pushvalue(l, -2);
        ffi::lua_pushcclosure(l, wrapper, 2);
        ffi::lua_setfield(l, -3, name.as_ptr());
    }
}

/// Records the thread at `index` in the table of upvalue 2.
unsafe fn record(l: *mut lua_State, index: c_int) {
    // SAFETY: called from the wrappers, whose upvalue 2 is the registry table.
    unsafe {
        let index = ffi::lua_absindex(l, index);
        if ffi::lua_type(l, index) == ffi::LUA_TTHREAD {
            ffi::lua_pushvalue(l, ffi::lua_upvalueindex(2));
            ffi::lua_pushvalue(l, index);
            ffi::lua_pushboolean(l, 1);
            ffi::lua_rawset(l, -3);
            ffi::lua_settop(l, -2);
        }
    }
}

/// Calls the original function (upvalue 1) with the function argument, leaving its result on
/// top. The argument is checked here first, so an error names the script's function, as the
/// original's own check would.
unsafe fn call_original(l: *mut lua_State) {
    // SAFETY: called from the wrappers, whose upvalue 1 is the original; errors it raises
    // propagate as its own.
    unsafe {
        ffi::luaL_checktype(l, 1, ffi::LUA_TFUNCTION);
        ffi::lua_settop(l, 1);
        ffi::lua_pushvalue(l, ffi::lua_upvalueindex(1));
        ffi::lua_insert(l, 1);
        ffi::lua_call(l, 1, 1);
    }
}

/// `coroutine.create(f)`, recorded.
unsafe extern "C-unwind" fn create_and_track(l: *mut lua_State) -> c_int {
    // SAFETY: a wrapper made by `wrap_field`.
    unsafe {
        call_original(l);
        record(l, -1);
    }
    1
}

/// `coroutine.wrap(f)`, recorded: the thread is the first upvalue of the function `wrap` makes.
unsafe extern "C-unwind" fn wrap_and_track(l: *mut lua_State) -> c_int {
    // SAFETY: a wrapper made by `wrap_field`.
    unsafe {
        call_original(l);
        if !ffi::lua_getupvalue(l, -1, 1).is_null() {
            record(l, -1);
            ffi::lua_settop(l, -2);
        }
    }
    1
}

/// Coroutines recorded and not yet collected. Never raises (`lua_next` on a table whose keys are
/// not modified).
///
/// # Safety
/// `l` is running, with room for three values.
pub(crate) unsafe fn count_recorded(l: *mut lua_State) -> u64 {
    let mut count = 0;
    // SAFETY: walks the registry table, restoring the stack top.
    unsafe {
        let top = ffi::lua_gettop(l);
        ffi::lua_getfield(l, ffi::LUA_REGISTRYINDEX, REGISTRY_KEY.as_ptr());
        if ffi::lua_type(l, -1) == ffi::LUA_TTABLE {
            ffi::lua_pushnil(l);
            while ffi::lua_next(l, -2) != 0 {
                count += 1;
                ffi::lua_settop(l, -2);
            }
        }
        ffi::lua_settop(l, top);
    }
    count
}
