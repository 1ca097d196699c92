//! Facts about a Lua thread that the hooks and the profilers need: the state's main thread, and
//! LuaJIT's compiler turned off.

#[cfg(feature = "luajit")]
use std::ffi::c_int;

use mlua::ffi::{self, lua_State};

#[cfg(feature = "luajit")]
unsafe extern "C" {
    fn luaJIT_setmode(l: *mut lua_State, idx: c_int, mode: c_int) -> c_int;
}

/// Flushes LuaJIT's compiled code and turns its compiler off: hooks run only in the interpreter,
/// and compiled traces have no Lua stack to read. Nothing in other versions.
///
/// # Safety
/// `l` is a live thread.
#[cfg(feature = "luajit")]
pub(crate) unsafe fn jit_off(l: *mut lua_State) {
    const LUAJIT_MODE_ENGINE: c_int = 0;
    const LUAJIT_MODE_OFF: c_int = 0x0000;
    const LUAJIT_MODE_FLUSH: c_int = 0x0200;
    // SAFETY: `luaJIT_setmode` on a live state; it neither allocates Lua objects nor raises.
    unsafe {
        luaJIT_setmode(l, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_FLUSH);
        luaJIT_setmode(l, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
    }
}

/// The state's main thread, which lives as long as the state (null where it cannot be found
/// without allocating: Lua 5.1 and LuaJIT called from a coroutine, LuaJIT's hook being the
/// state's anyway; or where a script replaced the registry's entry and the call comes from a
/// coroutine).
///
/// # Safety
/// `l` is a running thread with a free stack slot.
pub(crate) unsafe fn main_thread(l: *mut lua_State) -> *mut lua_State {
    // SAFETY: pushing a thread and reading the registry by integer key allocate nothing; every
    // thread has room for one more value; the stacks are restored.
    unsafe {
        let is_main = |thread: *mut lua_State| {
            let main = ffi::lua_pushthread(thread) == 1;
            ffi::lua_settop(thread, -2);
            main
        };
        if is_main(l) {
            return l;
        }
        #[cfg(not(any(feature = "lua51", feature = "luajit")))]
        {
            // A script with `debug` can put any thread there (a coroutine that dies later):
            // only the main thread says it is one.
            ffi::lua_rawgeti(l, ffi::LUA_REGISTRYINDEX, ffi::LUA_RIDX_MAINTHREAD);
            let main = ffi::lua_tothread(l, -1);
            ffi::lua_settop(l, -2);
            if !main.is_null() && is_main(main) {
                return main;
            }
        }
        std::ptr::null_mut()
    }
}

#[cfg(not(feature = "luajit"))]
pub(crate) unsafe fn jit_off(_: *mut lua_State) {}
