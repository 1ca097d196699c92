//! `system.so`: `require("system")` in a stock Lua interpreter. The interpreter created the
//! state; see the README's "Accounting modes" for what the module measures there.
//!
//! The same library answers to two names: `system` (copied as `system.so`, by
//! scripts/build-module) and `lua_system` (as the LuaRocks rock installs it, next to the
//! `system.lua` of `lua/`, which coexists with luasystem's `system`).

#![deny(unsafe_code)]

use std::ffi::c_int;

use lua_system::mlua::ffi::lua_State;

/// `require("system")`.
///
/// # Safety
/// Called by the interpreter's `require` with a running state.
#[allow(unsafe_code)] // an entry point the interpreter calls: unsafe by nature
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn luaopen_system(l: *mut lua_State) -> c_int {
    // SAFETY: per the contract.
    unsafe { lua_system::luaopen_system(l) }
}

/// `require("lua_system")`.
///
/// # Safety
/// Called by the interpreter's `require` with a running state.
#[allow(unsafe_code)] // an entry point the interpreter calls: unsafe by nature
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn luaopen_lua_system(l: *mut lua_State) -> c_int {
    // SAFETY: per the contract.
    unsafe { lua_system::luaopen_system(l) }
}
