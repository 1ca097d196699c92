//! A script's last words survive its memory limit: its error message, the traceback lua.c adds,
//! and the exit code it passes to `os.exit`.
//!
//! At the limit, nothing that needs memory can be made: `error("boom")` cannot add the position
//! to its message, the message handler cannot build the traceback, and a wrapped `os.exit`
//! (`--stats`, `--mem-profile`) cannot make the call that writes the outputs. Each would end in
//! "not enough memory" and exit status 1 instead of the script's own message and code. So the
//! runner opens the state's [`MemoryReserve`] around exactly those steps, none of which calls
//! script code (`__tostring` of an error object runs before the reserve opens; a collection step
//! inside one may run finalizers, within the same bound).
//!
//! Bound: the heap never exceeds the limit by more than [`MemoryReserve::DEFAULT_BYTES`]. A
//! step that still fails raises past the reserve's `close`; the reserve is not cumulative, and
//! the protected call that runs the script closes it when it returns ([`close`] in `docall`).

use std::cell::RefCell;
use std::ffi::c_int;

use lua_system::MemoryReserve;
use lua_system::mlua::{self, Lua, ffi, ffi::lua_State};

thread_local! {
    /// The runner's state's reserve (one state, on the main thread).
    static RESERVE: RefCell<Option<MemoryReserve>> = const { RefCell::new(None) };
}

/// Opens the reserve, if the state has one.
pub fn open() {
    RESERVE.with(|reserve| {
        if let Some(reserve) = &*reserve.borrow() {
            reserve.open(MemoryReserve::DEFAULT_BYTES);
        }
    });
}

/// Closes the reserve: the limit applies exactly again.
pub fn close() {
    RESERVE.with(|reserve| {
        if let Some(reserve) = &*reserve.borrow() {
            reserve.close();
        }
    });
}

/// Keeps `lua`'s reserve for the message handler, and puts `error` and `os.exit` (if the
/// script has it) behind it. Call after anything else that wraps `os.exit`.
pub fn install(lua: &Lua) -> mlua::Result<()> {
    let reserve = lua_system::memory_reserve(lua)?;
    RESERVE.with(|kept| *kept.borrow_mut() = Some(reserve));
    // SAFETY: under `exec_raw`'s protected call; the stack is left as found.
    unsafe {
        lua.exec_raw::<()>((), |l| {
            ffi::lua_pushcfunction(l, error);
            ffi::lua_setglobal(l, c"error".as_ptr());
            if ffi::lua_getglobal(l, c"os".as_ptr()) == ffi::LUA_TTABLE
                && ffi::lua_getfield(l, -1, c"exit".as_ptr()) == ffi::LUA_TFUNCTION
            {
                ffi::lua_pushcclosure(l, exit, 1);
                ffi::lua_setfield(l, -2, c"exit".as_ptr());
            }
            ffi::lua_settop(l, 0);
        })
    }
}

/// Lua's `error`, as every version's base library has it, with the message built inside the
/// reserve.
unsafe extern "C-unwind" fn error(l: *mut lua_State) -> c_int {
    // SAFETY: a C function called by Lua: the argument checks raise Lua errors as `error`'s
    // own; no Rust value that needs dropping is alive when anything raises.
    unsafe {
        let level = ffi::luaL_optinteger(l, 2, 1) as c_int;
        ffi::lua_settop(l, 1);
        if message_takes_a_position(l) && level > 0 {
            open();
            ffi::luaL_where(l, level);
            ffi::lua_pushvalue(l, 1);
            ffi::lua_concat(l, 2);
            close();
        }
        ffi::lua_error(l)
    }
}

/// Whether `error` prefixes its message (index 1) with the position: strings only from Lua
/// 5.3 on; Lua 5.1, 5.2 and LuaJIT also prefix numbers (`error(42)` says `f.lua:1: 42`).
///
/// # Safety
/// `l` is a live state with index 1 on its stack.
unsafe fn message_takes_a_position(l: *mut lua_State) -> bool {
    // SAFETY: the caller's promise.
    unsafe {
        if cfg!(any(feature = "lua51", feature = "lua52", feature = "luajit")) {
            ffi::lua_isstring(l, 1) != 0
        } else {
            ffi::lua_type(l, 1) == ffi::LUA_TSTRING
        }
    }
}

/// `os.exit` (upvalue 1: the function it replaces) called inside the reserve: the exit code
/// reaches the process even when the call it makes needs memory.
///
/// The stock function's argument check comes first, here: an error raised by the function it
/// calls would name neither `os.exit` nor the script's line (the caller is this C function).
unsafe extern "C-unwind" fn exit(l: *mut lua_State) -> c_int {
    // SAFETY: a C function called by Lua; upvalue 1 is a function (`install`). A Lua error
    // raised by the call leaves the reserve open for `docall` to close.
    unsafe {
        // `os.exit(true|false)` from Lua 5.2 on and in LuaJIT; a number (or nothing) everywhere.
        let boolean_status = !cfg!(feature = "lua51") && ffi::lua_type(l, 1) == ffi::LUA_TBOOLEAN;
        if !boolean_status {
            ffi::luaL_optinteger(l, 1, 0);
        }
        open();
        ffi::lua_pushvalue(l, ffi::lua_upvalueindex(1));
        ffi::lua_insert(l, 1);
        ffi::lua_call(l, ffi::lua_gettop(l) - 1, ffi::LUA_MULTRET);
        close();
        ffi::lua_gettop(l)
    }
}
