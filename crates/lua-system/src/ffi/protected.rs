//! Running a C function of the module under a protected call, without allocating first.
//!
//! Lua 5.2 and later push a C function without allocating (a "light" C function), then
//! `lua_pcall` it. Lua 5.1 and LuaJIT make a closure for `lua_pushcfunction`, an allocation that
//! could raise a memory error before any protection, so there `lua_cpcall` is used: it makes the
//! closure inside the protected call. Either way the function receives its data as a light
//! userdata, argument 1, and returns nothing on the stack: results travel through the data.
//!
//! A script can get hold of such a function while it runs (a call hook with `debug.getinfo`)
//! and call it later with anything. Each helper therefore checks that its argument is the data
//! armed for the call in progress on this thread ([`armed`]), and does nothing otherwise.

use std::cell::Cell;
use std::ffi::{c_int, c_void};
use std::ptr;

use mlua::ffi::{self, lua_State};

thread_local! {
    /// The data of the protected call in progress on this thread (null: none).
    static ARMED: Cell<*mut c_void> = const { Cell::new(ptr::null_mut()) };
}

/// Runs `f` protected, with `data` as its argument 1. `Err(())` leaves the error object on top
/// of the stack.
///
/// # Safety
/// `l` is a running state with room for two values; `f` reads `data` only as [`armed`] allows.
pub(crate) unsafe fn call(l: *mut lua_State, f: ffi::lua_CFunction, data: *mut c_void) -> Result<(), ()> {
    let previous = ARMED.with(|armed| armed.replace(data));
    // SAFETY: per the contract; the pushes below need no memory in these versions.
    let status = unsafe {
        #[cfg(any(feature = "lua51", feature = "luajit"))]
        {
            ffi::lua_cpcall(l, f, data)
        }
        #[cfg(not(any(feature = "lua51", feature = "luajit")))]
        {
            ffi::lua_pushcfunction(l, f);
            ffi::lua_pushlightuserdata(l, data);
            ffi::lua_pcall(l, 1, 0, 0)
        }
    };
    ARMED.with(|armed| armed.set(previous));
    if status == ffi::LUA_OK { Ok(()) } else { Err(()) }
}

/// Arms `data` for a protected call made without [`call`] (with results on the stack); returns
/// what was armed before, to be armed again after the call. (Lua 5.1 and LuaJIT return every
/// result through [`call`].)
#[cfg_attr(any(feature = "lua51", feature = "luajit"), allow(dead_code))]
pub(crate) fn arm(data: *mut c_void) -> *mut c_void {
    ARMED.with(|armed| armed.replace(data))
}

/// The data of the protected call running `l`'s current C function, if argument 1 is it; `None`
/// when a script called the helper itself.
///
/// # Safety
/// `l` is running a C function started by [`call`] (or by a script).
pub(crate) unsafe fn armed<T>(l: *mut lua_State) -> Option<*mut T> {
    // SAFETY: reading argument 1 neither allocates nor raises.
    let data = unsafe {
        if ffi::lua_type(l, 1) != ffi::LUA_TLIGHTUSERDATA {
            return None;
        }
        ffi::lua_touserdata(l, 1)
    };
    let expected = ARMED.with(|armed| armed.get());
    (!data.is_null() && data == expected).then_some(data.cast())
}

/// How many values a protected helper returns: none (results travel through the data).
pub(crate) const NO_RESULTS: c_int = 0;
