//! The other end of c/emergency.c: Lua's emergency collections, reported to the module (Lua 5.2
//! to 5.5, vendored; build.rs links the wrapper in).

use lua_system::mlua::ffi::lua_State;

/// Called by c/emergency.c right after Lua's emergency collection of `l`'s state returned.
///
/// # Safety
/// Called by C with a thread of the running state, as `lua_system::emergency_collection_ended`
/// requires (which catches its own panics: none crosses into C).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lua_system_cli_emergency_collection(l: *mut lua_State) {
    // SAFETY: per the contract, right after the collection, before Lua retries its allocation.
    unsafe { lua_system::emergency_collection_ended(l) }
}
