//! `system.so`: `require("system")` in a stock Lua interpreter. The interpreter created the
//! state; see the README's "Accounting modes" for what the module measures there.

use std::ffi::c_int;

use lua_system::mlua::ffi::lua_State;

/// The entry point `require("system")` looks for.
///
/// # Safety
/// Called by the interpreter's `require` with a running state.
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn luaopen_system(l: *mut lua_State) -> c_int {
    // SAFETY: per the contract.
    unsafe { lua_system::luaopen_system(l) }
}
