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
//! and call it later with anything, even with the data of another helper's call in progress
//! (`debug.getlocal` reads it from the stack while a metamethod of the script runs inside that
//! call). Each helper therefore checks that its argument is the data armed for the call in
//! progress on this thread, and of the type it reads ([`armed`]), and does nothing otherwise.

use std::any::TypeId;
use std::cell::Cell;
use std::ffi::{c_int, c_void};
use std::ptr;

use mlua::ffi::{self, lua_State};

/// The data of a protected call and the type it points to.
#[derive(Clone, Copy)]
pub(crate) struct Armed {
    data: *mut c_void,
    kind: Option<TypeId>,
}

impl Armed {
    const NONE: Armed = Armed { data: ptr::null_mut(), kind: None };

    fn of<T: 'static>(data: *mut T) -> Armed {
        Armed { data: data.cast(), kind: Some(TypeId::of::<T>()) }
    }
}

thread_local! {
    /// The data of the protected call in progress on this thread (null: none).
    static ARMED: Cell<Armed> = const { Cell::new(Armed::NONE) };
}

/// Runs `f` protected, with `data` as its argument 1. `Err(())` leaves the error object on top
/// of the stack.
///
/// # Safety
/// `l` is a running state with room for two values; `f` reads `data` only as [`armed`] allows.
pub(crate) unsafe fn call<T: 'static>(l: *mut lua_State, f: ffi::lua_CFunction, data: *mut T) -> Result<(), ()> {
    let previous = ARMED.with(|armed| armed.replace(Armed::of(data)));
    // SAFETY: per the contract; the pushes below need no memory in these versions.
    let status = unsafe {
        #[cfg(any(feature = "lua51", feature = "luajit"))]
        {
            closure_call(l, f, data.cast())
        }
        #[cfg(not(any(feature = "lua51", feature = "luajit")))]
        {
            ffi::lua_pushcfunction(l, f);
            ffi::lua_pushlightuserdata(l, data.cast());
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
        // Only `f`'s own closure: a script can put anything in the registry (`debug`).
        if ffi::lua_tocfunction(l, -1).is_some_and(|kept| kept as usize == f as usize) {
            ffi::lua_pushlightuserdata(l, data);
            return ffi::lua_pcall(l, 1, 0, 0);
        }
        ffi::lua_settop(l, -2);
        let status = ffi::lua_cpcall(l, f, data);
        if status == ffi::LUA_OK {
            let previous = ARMED.with(|armed| armed.replace(Armed::of(key as *mut Keep)));
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
        let Some(key) = armed::<Keep>(l) else { return NO_RESULTS };
        let f = std::mem::transmute::<*mut Keep, ffi::lua_CFunction>(key);
        ffi::lua_pushcfunction(l, f);
        ffi::lua_rawsetp(l, ffi::LUA_REGISTRYINDEX, key.cast());
    }
    NO_RESULTS
}

/// What [`keep`] is armed with: the address of a C function (a type of its own, so no other
/// helper's data passes for it).
#[cfg(any(feature = "lua51", feature = "luajit"))]
enum Keep {}

/// Arms `data` for a protected call made without [`call`] (with results on the stack); returns
/// what was armed before, to be armed again after the call ([`restore`]). (Lua 5.1 and LuaJIT
/// return every result through [`call`].)
#[cfg_attr(any(feature = "lua51", feature = "luajit"), allow(dead_code))]
pub(crate) fn arm<T: 'static>(data: *mut T) -> Armed {
    ARMED.with(|armed| armed.replace(Armed::of(data)))
}

/// Arms again what [`arm`] returned.
#[cfg_attr(any(feature = "lua51", feature = "luajit"), allow(dead_code))]
pub(crate) fn restore(previous: Armed) {
    ARMED.with(|armed| armed.set(previous));
}

/// The data of the protected call running `l`'s current C function, if argument 1 is it and it
/// was armed as a `T`; `None` when a script called the helper itself, whatever it passed.
///
/// # Safety
/// `l` is running a C function started by [`call`] (or by a script).
pub(crate) unsafe fn armed<T: 'static>(l: *mut lua_State) -> Option<*mut T> {
    // SAFETY: reading argument 1 neither allocates nor raises.
    let data = unsafe {
        if ffi::lua_type(l, 1) != ffi::LUA_TLIGHTUSERDATA {
            return None;
        }
        ffi::lua_touserdata(l, 1)
    };
    let expected = ARMED.with(|armed| armed.get());
    let matches = !data.is_null() && data == expected.data && expected.kind == Some(TypeId::of::<T>());
    matches.then_some(data.cast())
}

/// How many values a protected helper returns: none (results travel through the data).
pub(crate) const NO_RESULTS: c_int = 0;
