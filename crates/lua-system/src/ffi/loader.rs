//! `require("system")`: the loader that builds the module table, and putting it in place.
//!
//! The loader finds the state's record through the state's allocator, like every module
//! function: it has no upvalue, so `package.preload.system` carries nothing a script could
//! misuse. Loading again (`package.loaded.system = nil; require("system")`) gives a new table
//! over the same record.

use std::ffi::c_int;

use mlua::ffi::{self, lua_State};

use super::call::{Module, prepare_slots, push_module};
use super::{Record, coroutines, protected, sentinel, states};

/// The loader (`package.preload.system`, and `luaopen_system`'s body): returns the module
/// table. Raises an error if the module's allocator does not serve the state.
pub(crate) unsafe extern "C-unwind" fn loader<M: Module>(l: *mut lua_State) -> c_int {
    // SAFETY: a Lua function: it may raise. Rust frames here hold nothing to drop.
    unsafe {
        let Some(record) = states::record::<M::Record>(l) else {
            ffi::lua_pushstring(l, c"system: the module's allocator does not serve this state".as_ptr());
            ffi::lua_error(l);
        };
        ffi::lua_settop(l, 0);
        prepare_slots(l);
        push_module::<M>(l);
        if record.sentinel().missing() {
            sentinel::arm(l, record);
        }
        record.loaded(&super::Collector::with_internals(l, record.internals()));
        record.emergencies().set_main(super::thread::main_thread(l));
        // The library's functions are patched in place only where this Lua's layout was
        // checked against the headers the module was built with (internals usable).
        coroutines::track(l, record.internals().get(l).is_some());
        coroutines::learn_thread_offset(l, record.thread_blocks());
    }
    1
}

/// Puts the loader in `package.preload.system` (so `require` works again after
/// `package.loaded.system = nil`) and its table in `package.loaded.system`, and returns the
/// table. The state's allocator must be the module's.
pub(crate) fn install<M: Module>(lua: &mlua::Lua) -> mlua::Result<mlua::Table> {
    // SAFETY: on the locked state; `register` runs protected and checks the armed data; the
    // error object of a failure is read as text and popped.
    let failure = unsafe {
        states::with_raw_state(lua, |l| match protected::call(l, register::<M>, l) {
            Ok(()) => None,
            Err(()) => {
                let message = message_on_top(l);
                ffi::lua_settop(l, -2);
                Some(message)
            }
        })?
    };
    if let Some(message) = failure {
        return Err(mlua::Error::runtime(format!("lua-system: cannot install the module: {message}")));
    }
    let loaded: mlua::Table = lua.named_registry_value("_LOADED")?;
    loaded.get("system")
}

/// The error object on top of the stack, as text (without converting it).
unsafe fn message_on_top(l: *mut lua_State) -> String {
    // SAFETY: `lua_tolstring` on a string value does not convert, so it cannot raise.
    unsafe {
        if ffi::lua_type(l, -1) != ffi::LUA_TSTRING {
            return "(error object is not a string)".to_owned();
        }
        let mut len = 0;
        let ptr = ffi::lua_tolstring(l, -1, &mut len);
        String::from_utf8_lossy(std::slice::from_raw_parts(ptr.cast::<u8>(), len)).into_owned()
    }
}

/// The registry's table of loaded modules (Lua 5.1 keeps it there too, as `_LOADED`).
const LOADED: &std::ffi::CStr = c"_LOADED";

unsafe extern "C-unwind" fn register<M: Module>(l: *mut lua_State) -> c_int {
    // SAFETY: only for the armed call; may allocate and raise (protected).
    unsafe {
        if protected::armed::<lua_State>(l).is_none() {
            return protected::NO_RESULTS;
        }
        ffi::lua_settop(l, 0);
        // package.preload.system = loader, where there is a package library.
        ffi::lua_getglobal(l, c"package".as_ptr());
        if ffi::lua_type(l, 1) == ffi::LUA_TTABLE {
            ffi::lua_getfield(l, 1, c"preload".as_ptr());
            if ffi::lua_type(l, 2) == ffi::LUA_TTABLE {
                ffi::lua_pushcfunction(l, loader::<M>);
                ffi::lua_setfield(l, 2, c"system".as_ptr());
            }
        }
        ffi::lua_settop(l, 0);
        // registry._LOADED.system = loader()
        ffi::lua_getfield(l, ffi::LUA_REGISTRYINDEX, LOADED.as_ptr());
        if ffi::lua_type(l, 1) != ffi::LUA_TTABLE {
            ffi::lua_settop(l, 0);
            ffi::lua_createtable(l, 0, 1);
            ffi::lua_pushvalue(l, 1);
            ffi::lua_setfield(l, ffi::LUA_REGISTRYINDEX, LOADED.as_ptr());
        }
        ffi::lua_pushcfunction(l, loader::<M>);
        ffi::lua_pushstring(l, c"system".as_ptr());
        ffi::lua_call(l, 1, 1);
        ffi::lua_setfield(l, 1, c"system".as_ptr());
    }
    protected::NO_RESULTS
}
