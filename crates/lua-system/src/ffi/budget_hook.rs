//! What enforces a state's CPU budget (`accounts/cpu_budget.rs`): a timer on the CPU time of
//! the thread that runs the state (`cpu_timer.rs`), and a hook it sets when it expires.
//!
//! Until the budget is due, nothing runs: no hook, so Lua's interpreter runs at full speed (a
//! count hook makes it test every instruction). When the timer expires, its signal handler sets
//! a count hook at the next instruction of the running thread (the coroutine the module's
//! `coroutine.resume` runs, `running.rs`) and of the main thread. The hook charges the thread's
//! CPU time; if the budget is spent it raises "CPU limit exceeded" and stays at *every*
//! instruction of those threads (and of the coroutines they create afterwards, which inherit
//! it): a script that catches the error with `pcall` fails again at its next instruction, so
//! the error reaches the host. If not (the state ran on another thread meanwhile), the hook
//! goes and the timer is armed for what is left. A long C function (`string.rep`) is
//! interrupted at the next instruction after it returns. LuaJIT does not run hooks in compiled
//! code: arming turns its JIT compiler off.

use std::sync::Mutex;
use std::time::Duration;

use std::ffi::c_int;

use mlua::ffi::{self, lua_Debug, lua_State};

use super::cpu_timer::CpuTimer;
use super::thread::{jit_off, main_thread};
use super::{Record, states};

/// Instructions between two charges where no timer can be had (the kernel refused, or 256
/// states already have one): the count hook of old, which costs what the timer saves.
const FALLBACK_EVERY: i32 = 10_000;

/// Where a state's record keeps the timer of its CPU budget.
#[derive(Default)]
pub(crate) struct BudgetTimer(Mutex<Option<CpuTimer>>);

impl BudgetTimer {
    fn with<T>(&self, f: impl FnOnce(&mut Option<CpuTimer>) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|poison| poison.into_inner()))
    }
}

/// Sets the hook on `l`, at every instruction.
///
/// # Safety
/// `l` is a live thread of a state whose allocator is the module's, with record type `R`.
unsafe fn hook_every_instruction<R: Record>(l: *mut lua_State) {
    // SAFETY: per the contract; setting a hook neither allocates nor raises, and may be done in
    // a signal handler.
    unsafe { ffi::lua_sethook(l, Some(hook::<R>), ffi::LUA_MASKCOUNT, 1) };
}

/// Removes the hook from `l`, if it is this module's.
///
/// # Safety
/// `l` is a live thread.
unsafe fn disarm<R: Record>(l: *mut lua_State) {
    // SAFETY: reading and clearing the hook neither allocates nor raises.
    unsafe {
        if ffi::lua_gethook(l).is_some_and(|f| f as usize == hook::<R> as ffi::lua_Hook as usize) {
            ffi::lua_sethook(l, None, 0, 0);
        }
    }
}

/// The timer's expiry, in its signal handler: the hook at the next instruction of the running
/// thread and of the main thread. `data` is the state's record.
///
/// # Safety
/// `data` is a live record of type `R` (the timer is dropped with it).
unsafe fn due<R: Record>(data: usize) {
    // SAFETY: per the contract; only atomics are read, and `lua_sethook` may be called in a
    // signal handler.
    unsafe {
        let record = &*(data as *const R);
        let home = record.cpu_budget().home_thread() as *mut lua_State;
        let running = record.running_thread().running() as *mut lua_State;
        for thread in [running, home] {
            if !thread.is_null() {
                hook_every_instruction::<R>(thread);
            }
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
            // Not spent (the state ran on another thread meanwhile): no hook until the timer
            // says the rest is due.
            disarm::<R>(l);
            let home = budget.home_thread() as *mut lua_State;
            if !home.is_null() {
                disarm::<R>(home);
            }
            let left = budget.limit().unwrap_or_default().saturating_sub(budget.used());
            let timed = record
                .budget_timer()
                .with(|timer| timer.as_ref().map(|timer| timer.arm(left.max(Duration::from_micros(100)))).is_some());
            if !timed {
                ffi::lua_sethook(l, Some(hook::<R>), ffi::LUA_MASKCOUNT, FALLBACK_EVERY);
            }
            return;
        }
        // Every instruction from now on, here and on the thread the budget was set from (the
        // main thread: a coroutine dying of the error must not let it go on), whose new
        // coroutines inherit the hook.
        hook_every_instruction::<R>(l);
        let home = budget.home_thread() as *mut lua_State;
        if !home.is_null() && home != l {
            hook_every_instruction::<R>(home);
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

/// Sets the budget to `limit` with `message` as its error (`Some`), from now on, on the thread
/// `lua` runs on (the main thread, from the host); or removes it (`None`). Returns the previous
/// limit. The message is stored past the state's memory limit: the host sets a budget whatever
/// the script left of its memory.
pub(crate) fn set<R: Record + Send>(
    lua: &mlua::Lua,
    message: Option<&str>,
    limit: Option<Duration>,
) -> mlua::Result<Option<Duration>> {
    let record = states::published::<R>(lua)?;
    let budget = record.cpu_budget();
    let mut previous = budget.limit();
    // SAFETY: `exec_raw` runs the closure on the locked state under a protected call (pushing
    // the message and tracking coroutines may raise a memory error there); the closure holds
    // only `Copy` data; setting hooks neither allocates nor raises, and the module's allocator
    // serves the state. The timer's function is `due::<R>` on this record, which outlives it
    // (the record's timer is dropped with the record).
    record.heap().over_limit(|| unsafe {
        lua.exec_raw::<()>((), |l| {
            let home = main_thread(l);
            for thread in [l, home, record.running_thread().running() as *mut lua_State] {
                if !thread.is_null() {
                    disarm::<R>(thread);
                }
            }
            let (Some(message), Some(limit)) = (message, limit) else {
                record.budget_timer().with(|timer| *timer = None);
                previous = budget.set(None);
                return;
            };
            ffi::lua_pushlstring(l, message.as_ptr().cast(), message.len());
            ffi::lua_rawsetp(l, ffi::LUA_REGISTRYINDEX, message_key());
            budget.set_home_thread(if home.is_null() { l as usize } else { home as usize });
            // Best effort: without it (Lua 5.1 from a coroutine, no memory), the hook reaches
            // the main thread only, and a coroutine is stopped when it yields or ends. LuaJIT's
            // hook is the whole state's: nothing to track there (and a resume behind a C
            // function of the module's costs nested coroutines C stack LuaJIT does not bound).
            #[cfg(not(feature = "luajit"))]
            let _ = super::running::track(l, &*record);
            previous = budget.set(Some(limit));
            budget.charge(); // starts the clock, on this thread
            jit_off(l);
            let timed = record.budget_timer().with(|timer| {
                if timer.is_none() {
                    *timer = CpuTimer::new(due::<R>, &*record as *const R as usize);
                }
                timer.as_ref().map(|timer| timer.arm(limit.max(Duration::from_nanos(1)))).is_some()
            });
            if !timed {
                ffi::lua_sethook(l, Some(hook::<R>), ffi::LUA_MASKCOUNT, FALLBACK_EVERY);
            }
        })
    })?;
    Ok(previous)
}
