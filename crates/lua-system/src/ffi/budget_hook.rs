//! The count hook that enforces a state's CPU budget (`accounts/cpu_budget.rs`).
//!
//! Armed on a thread, the hook runs every [`CHECK_EVERY`] instructions, there and in every
//! coroutine the thread creates afterwards (Lua copies a thread's hook into the threads it
//! creates; LuaJIT's hook is the state's). Once the budget is spent it raises "CPU limit
//! exceeded" and re-arms itself to run at *every* instruction of that thread: a script that
//! catches the error with `pcall` fails again at its next instruction, so the error reaches the
//! host. LuaJIT does not run hooks in compiled code: arming turns its JIT compiler off.

use std::ffi::c_int;

use mlua::ffi::{self, lua_Debug, lua_State};

use super::thread::{jit_off, main_thread};
use super::{Record, states};
use crate::accounts::cpu_budget::CHECK_EVERY;

/// Arms the hook on `l` (and so on the coroutines it creates from now on).
///
/// # Safety
/// `l` is a thread of a state whose allocator is the module's, with record type `R`.
pub(crate) unsafe fn arm<R: Record>(l: *mut lua_State) {
    // SAFETY: per the contract; setting a hook neither allocates nor raises.
    unsafe {
        ffi::lua_sethook(l, Some(hook::<R>), ffi::LUA_MASKCOUNT, CHECK_EVERY);
        jit_off(l);
    }
}

/// Removes the hook from `l`, if it is this module's.
///
/// # Safety
/// `l` is a live thread.
pub(crate) unsafe fn disarm<R: Record>(l: *mut lua_State) {
    // SAFETY: reading and clearing the hook neither allocates nor raises.
    unsafe {
        if ffi::lua_gethook(l).is_some_and(|f| f as usize == hook::<R> as ffi::lua_Hook as usize) {
            ffi::lua_sethook(l, None, 0, 0);
        }
    }
}

unsafe extern "C-unwind" fn hook<R: Record>(l: *mut lua_State, _ar: *mut lua_Debug) {
    // SAFETY: a hook may raise; the Rust frames here hold nothing to drop when it does. Lua
    // guarantees a hook `LUA_MINSTACK` free slots.
    unsafe {
        let Some(record) = states::record::<R>(l) else { return };
        let budget = record.cpu_budget();
        if !budget.charge() {
            return;
        }
        // Every instruction from now on, here and on the thread the budget was set from (the
        // main thread: a coroutine dying of the error must not let it go on), whose new
        // coroutines inherit the count.
        ffi::lua_sethook(l, Some(hook::<R>), ffi::LUA_MASKCOUNT, 1);
        let home = budget.home_thread() as *mut lua_State;
        if !home.is_null() && home != l {
            ffi::lua_sethook(home, Some(hook::<R>), ffi::LUA_MASKCOUNT, 1);
        }
        push_message(l);
        ffi::lua_error(l);
    }
}

/// Pushes the budget's error message. It was made when the budget was set: fetching it
/// allocates nothing, so a script at its memory limit gets it too. A script with `debug` can
/// replace it in the registry: anything but a string is replaced by a short message.
///
/// # Safety
/// `l` is running, with a free slot; raises only if the message was replaced and there is no
/// memory for the short one.
unsafe fn push_message(l: *mut lua_State) {
    // SAFETY: per the contract.
    unsafe {
        if ffi::lua_rawgetp(l, ffi::LUA_REGISTRYINDEX, message_key()) != ffi::LUA_TSTRING {
            ffi::lua_settop(l, -2);
            ffi::lua_pushstring(l, c"CPU limit exceeded".as_ptr());
        }
    }
}

/// The sandbox's `cpu_spent()` (`host/sandbox.lua`): the budget's error message once the
/// state's budget is spent, else nil. A C function without upvalues: the budget is found through
/// the state's allocator, as every module function finds its record.
unsafe extern "C-unwind" fn spent<R: Record>(l: *mut lua_State) -> c_int {
    // SAFETY: a C function called by Lua, with LUA_MINSTACK free slots; the record outlives it.
    unsafe {
        let budget = states::record::<R>(l).map(|record| record.cpu_budget());
        if budget.is_some_and(|budget| budget.limit().is_some() && budget.spent()) {
            push_message(l);
        } else {
            ffi::lua_pushnil(l);
        }
    }
    1
}

/// [`spent`] as a function value for the host's Lua code.
pub(crate) fn spent_function<R: Record>(lua: &mlua::Lua) -> mlua::Result<mlua::Function> {
    // SAFETY: `spent` follows the C function protocol and reads only what it checks.
    unsafe { lua.create_c_function(spent::<R>) }
}

/// The registry key of the error message (a light userdata: reading it allocates nothing).
fn message_key() -> *const std::ffi::c_void {
    static KEY: u8 = 0;
    &KEY as *const u8 as *const std::ffi::c_void
}

/// Arms the hook with `message` as its error (`Some`), or removes it, on the thread `lua` runs
/// on now: the main thread, from the host.
/// The message is stored past the state's memory limit: the host sets a budget whatever the
/// script left of its memory.
pub(crate) fn set<R: Record + Send>(lua: &mlua::Lua, message: Option<&str>) -> mlua::Result<()> {
    let record = states::published::<R>(lua)?;
    // SAFETY: `exec_raw` runs the closure on the locked state under a protected call (pushing
    // the message may raise a memory error there); the closure holds only `Copy` data; `arm`
    // and `disarm` neither allocate nor raise, and the module's allocator serves the state.
    record.heap().over_limit(|| unsafe {
        lua.exec_raw::<()>((), |l| match message {
            Some(message) => {
                ffi::lua_pushlstring(l, message.as_ptr().cast(), message.len());
                ffi::lua_rawsetp(l, ffi::LUA_REGISTRYINDEX, message_key());
                record.cpu_budget().set_home_thread(main_thread(l) as usize);
                arm::<R>(l);
            }
            None => disarm::<R>(l),
        })
    })
}
