//! `require("system")` under the runner (docs/runner.md, "`require("system")` beside luasystem
//! and a project's own `system`"): the built-in module, with the fields of any other module
//! named `system` on `package.path` or `package.cpath` added where their names are free. That
//! other module is luasystem (busted and other tools use its clock), or a project's own
//! `system.lua`; it runs as `require` would run it, and its errors are raised as `require`
//! would raise them. The built-in module alone is `require("lua_system")`, as the LuaRocks rock
//! names its native part.
//!
//! The loader is a C function of the Lua C API rather than Lua code: it costs nothing until a
//! script asks for `system` (parsing even a short chunk at every start-up was a tenth of the
//! runner's start), and a Lua error raised by the other module passes through it untouched.

use std::ffi::c_int;

use lua_system::mlua::{self, Lua};
use mlua::ffi::{self, lua_State};

/// Puts the built-in module under `lua_system` and makes `require("system")` add another
/// `system` module's fields to it. Not in the sandbox, whose `require` reaches no file.
pub fn share_the_name(lua: &Lua) -> mlua::Result<()> {
    // SAFETY: `exec_raw` runs the closure on the locked state under a protected call: what
    // allocates here may raise there. The stack is left as it was found.
    unsafe {
        lua.exec_raw::<()>((), |l| {
            ffi::lua_getglobal(l, c"package".as_ptr());
            if ffi::lua_type(l, -1) != ffi::LUA_TTABLE {
                return;
            }
            let package = ffi::lua_gettop(l);
            ffi::lua_getfield(l, package, c"preload".as_ptr());
            ffi::lua_getfield(l, package, c"loaded".as_ptr());
            let (preload, loaded) = (package + 1, package + 2);
            if ffi::lua_type(l, preload) != ffi::LUA_TTABLE || ffi::lua_type(l, loaded) != ffi::LUA_TTABLE {
                ffi::lua_settop(l, package - 1);
                return;
            }
            // preload.lua_system, loaded.lua_system = preload.system, loaded.system
            ffi::lua_getfield(l, preload, c"system".as_ptr());
            ffi::lua_pushvalue(l, -1);
            ffi::lua_setfield(l, preload, c"lua_system".as_ptr());
            ffi::lua_getfield(l, loaded, c"system".as_ptr());
            ffi::lua_setfield(l, loaded, c"lua_system".as_ptr());
            ffi::lua_pushnil(l);
            ffi::lua_setfield(l, loaded, c"system".as_ptr());
            // preload.system = the loader, the built-in loader its upvalue
            ffi::lua_pushcclosure(l, load_system, 1);
            ffi::lua_setfield(l, preload, c"system".as_ptr());
            ffi::lua_settop(l, package - 1);
        })
    }
}

/// `package.preload.system`: the built-in module (a table of its own each time, as the
/// built-in loader makes it, reporting the same state), with the other `system`'s fields added.
unsafe extern "C-unwind" fn load_system(l: *mut lua_State) -> c_int {
    // SAFETY: a C function Lua calls with the module's name as argument 1; every value it
    // calls may raise, and this frame holds nothing to drop. At most six slots are used.
    unsafe {
        ffi::lua_settop(l, 1);
        ffi::lua_pushvalue(l, ffi::lua_upvalueindex(1));
        ffi::lua_pushvalue(l, 1);
        ffi::lua_call(l, 1, 1);
        let system = 2;
        if ffi::lua_type(l, system) != ffi::LUA_TTABLE {
            return 1;
        }
        ffi::lua_getglobal(l, c"package".as_ptr());
        if ffi::lua_type(l, 3) != ffi::LUA_TTABLE {
            ffi::lua_settop(l, system);
            return 1;
        }
        ffi::lua_getfield(l, 3, c"searchers".as_ptr());
        if ffi::lua_type(l, 4) != ffi::LUA_TTABLE {
            ffi::lua_pop(l, 1);
            ffi::lua_getfield(l, 3, c"loaders".as_ptr()); // Lua 5.1, LuaJIT
        }
        let searchers = 4;
        if ffi::lua_type(l, searchers) == ffi::LUA_TTABLE {
            // The first searcher is preload's (this function); the others search the paths.
            let mut i = 2;
            loop {
                ffi::lua_rawgeti(l, searchers, i);
                if ffi::lua_type(l, -1) != ffi::LUA_TFUNCTION {
                    break;
                }
                ffi::lua_pushvalue(l, 1);
                ffi::lua_call(l, 1, 2); // loader, extra (a message when not found)
                if ffi::lua_type(l, -2) == ffi::LUA_TFUNCTION {
                    ffi::lua_pushvalue(l, 1);
                    ffi::lua_insert(l, -2);
                    ffi::lua_call(l, 2, 1); // loader(name, extra)
                    add_free_fields(l, system, ffi::lua_gettop(l));
                    break;
                }
                ffi::lua_pop(l, 2);
                i += 1;
            }
        }
        ffi::lua_settop(l, system);
        1
    }
}

/// Adds to the table at `into` each field of the value at `from` (if a table) that it lacks.
///
/// # Safety
/// `l` is running with two free slots; both indices are absolute.
unsafe fn add_free_fields(l: *mut lua_State, into: c_int, from: c_int) {
    // SAFETY: per the contract; `lua_next` on a table being read, not written.
    unsafe {
        if ffi::lua_type(l, from) != ffi::LUA_TTABLE {
            return;
        }
        ffi::lua_pushnil(l);
        while ffi::lua_next(l, from) != 0 {
            ffi::lua_pushvalue(l, -2);
            ffi::lua_rawget(l, into);
            let free = ffi::lua_type(l, -1) == ffi::LUA_TNIL;
            ffi::lua_pop(l, 1);
            if free {
                ffi::lua_pushvalue(l, -2);
                ffi::lua_insert(l, -2);
                ffi::lua_rawset(l, into);
            } else {
                ffi::lua_pop(l, 1);
            }
        }
    }
}
