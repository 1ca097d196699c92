//! Running a C function of the module under a protected call, without allocating first.
//!
//! Lua 5.2 and later push a C function without allocating (a "light" C function), then
//! `lua_pcall` it. Lua 5.1 and LuaJIT make a closure for `lua_pushcfunction`, an allocation that
//! could raise a memory error before any protection, so there the closure is made once, inside
//! a protected call (`lua_cpcall`), and kept in the registry under the function's address: later
//! calls fetch it, allocating nothing (a module call that allocated 40 bytes of garbage each
//! time would show in the very figures it reports). Either way the function receives its data as a light
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
            closure_call(l, f, data)
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

/// Lua 5.1 and LuaJIT: calls `f`'s closure from the registry, made and kept there the first
/// time (see the module docs).
#[cfg(any(feature = "lua51", feature = "luajit"))]
unsafe fn closure_call(l: *mut lua_State, f: ffi::lua_CFunction, data: *mut c_void) -> c_int {
    let key = f as *const c_void;
    // SAFETY: the caller left room for two values; fetching from the registry by a light
    // userdata key and pushing a light userdata allocate nothing; `lua_cpcall` protects the
    // closures it makes; `keep` is armed with `key` for its call.
    unsafe {
        ffi::lua_rawgetp(l, ffi::LUA_REGISTRYINDEX, key);
        if ffi::lua_type(l, -1) == ffi::LUA_TFUNCTION {
            ffi::lua_pushlightuserdata(l, data);
            return ffi::lua_pcall(l, 1, 0, 0);
        }
        ffi::lua_settop(l, -2);
        let status = ffi::lua_cpcall(l, f, data);
        if status == ffi::LUA_OK {
            let previous = ARMED.with(|armed| armed.replace(key as *mut c_void));
            if ffi::lua_cpcall(l, keep, key as *mut c_void) != ffi::LUA_OK {
                ffi::lua_settop(l, -2); // no memory for it now: made again next time
            }
            ARMED.with(|armed| armed.set(previous));
        }
        status
    }
}

/// Keeps the closure of the C function whose address is argument 1 in the registry, under that
/// address. Only for the armed call: a script calling it with another address gets nothing.
#[cfg(any(feature = "lua51", feature = "luajit"))]
unsafe extern "C-unwind" fn keep(l: *mut lua_State) -> c_int {
    // SAFETY: the armed key is the address of a module C function (`closure_call`); pushing its
    // closure and storing it may raise a memory error, inside `lua_cpcall`'s protection.
    unsafe {
        let Some(key) = armed::<c_void>(l) else { return NO_RESULTS };
        let f = std::mem::transmute::<*mut c_void, ffi::lua_CFunction>(key);
        ffi::lua_pushcfunction(l, f);
        ffi::lua_rawsetp(l, ffi::LUA_REGISTRYINDEX, key);
    }
    NO_RESULTS
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
