//! Containment for untrusted scripts: the sandbox's standard library, `collectgarbage` under
//! the module's permissions, and the state's CPU budget.
//!
//! [`sandbox`] makes a state fit for code the host does not trust. What it leaves, in every Lua
//! version (SECURITY.md has the table, tested line by line by `tests/sandbox.rs`):
//!
//! | | sandbox |
//! |---|---|
//! | base library | all but `dofile`, `loadfile`, `newproxy`; `load` (and 5.1's `loadstring`) text only; `setmetatable` refuses `__gc` (finalizers run with hooks off, beyond the CPU budget); `xpcall` does not pass the budget's error to the script's handler (for the same reason) |
//! | `string`, `table`, `math`, `utf8`, `coroutine`, `bit32` | all but `string.dump`; once the CPU budget is spent, `coroutine.close` and `coroutine.wrap` no longer run `__close` handlers (Lua would run them with hooks off) |
//! | `os` | `clock`, `time`, `date`, `difftime` |
//! | `io`, `debug`, LuaJIT's `ffi` and `jit` | none |
//! | `require` | modules the host preloaded or loaded (`system`): no files, no C modules |
//! | `collectgarbage` | `count` (and reading options); the rest as the profile allows `gc` and `set_gc_percent` (denied) |
//! | `system` | [`Profile::Sandbox`](crate::Profile::Sandbox) |
//! | memory | a limit of [`SANDBOX_MEMORY_LIMIT`] unless the host set one |
//! | CPU | a budget of [`SANDBOX_CPU_LIMIT`] unless the host set one |

use std::time::Duration;

use mlua::Lua;

use super::install::{memory_limit, set_memory_limit, set_permissions};
use crate::ffi::{budget_hook, states};
use crate::functions::permissions::{Permissions, Profile};
use crate::state::StateRecord;

/// The memory limit [`sandbox`] sets where the host set none: 64 MiB.
pub const SANDBOX_MEMORY_LIMIT: usize = 64 << 20;

/// The CPU budget [`sandbox`] sets where the host set none: 10 seconds of CPU time.
pub const SANDBOX_CPU_LIMIT: Duration = Duration::from_secs(10);

/// Makes the state a sandbox for untrusted code (the table above): removes what reaches the
/// file system, processes, native code and the debug interface from the libraries the host
/// opened, sets the module's permissions to [`Profile::Sandbox`], and a memory limit and a CPU
/// budget where the host set none. The module must be installed ([`SystemLua`](crate::SystemLua)
/// or [`install`](crate::install)). Call it before running untrusted code, and give that code
/// only values the sandbox's globals can reach.
pub fn sandbox(lua: &Lua) -> mlua::Result<()> {
    set_permissions(lua, Permissions::profile(Profile::Sandbox))?;
    if memory_limit(lua)?.is_none() {
        set_memory_limit(lua, Some(SANDBOX_MEMORY_LIMIT))?;
    }
    if cpu_limit(lua)?.is_none() {
        set_cpu_limit(lua, Some(SANDBOX_CPU_LIMIT))?;
    }
    // A C function, not a Rust closure: what a script could reach of it through `debug` is
    // checked (`ffi/budget_hook.rs`).
    let cpu_spent = budget_hook::spent_function::<StateRecord>(lua)?;
    lua.load(include_str!("sandbox.lua")).set_name("=lua-system sandbox").call(cpu_spent)
}

/// Sets the state's CPU budget (`None`: none) and returns the previous one. The budget counts
/// the CPU time of the thread that calls this (the one that runs the state's Lua code), from
/// this call on, and not the time other threads use meanwhile: a timer on that thread's CPU
/// clock interrupts the running code when the budget is spent (within the kernel's timer
/// resolution, a few milliseconds, plus one C call), and until then costs nothing. The host's
/// own work on the thread counts too, so a host that does its own work between two runs sets
/// the budget again before each run. A state moved to another thread is charged when its first
/// thread's budget is due. Once it is spent, the
/// running code gets the error "CPU limit exceeded: ...", and so does every instruction after
/// it (a `pcall` cannot swallow it): the host's call fails with it, unless the code caught it
/// in its very last call (`return pcall(f)`, a tail call, leaves no instruction to fail): a host
/// that must know asks [`cpu_limit_exceeded`] after each call. Set the budget again (or `None`)
/// before running more code in the state.
///
/// Covered: the main thread and the coroutine running when the budget is spent, as the
/// module's `coroutine.resume` and `coroutine.wrap` record it (a coroutine resumed by a C
/// module is stopped when it yields back), and the coroutines created after that. The timer
/// signals the thread with `SIGRTMIN + 6`; a handler the host had installed for that signal
/// still gets the signals that are not the module's. Not interrupted: one call of a C function (a pattern match, `string.rep`),
/// whose time is charged when it returns; code Lua runs with hooks off: finalizers (`__gc`),
/// and the message handler of an `xpcall` handling the budget's own error ([`sandbox`] closes
/// both). LuaJIT runs no hooks in compiled code: its compiler
/// is turned off while a budget is set.
pub fn set_cpu_limit(lua: &Lua, limit: Option<Duration>) -> mlua::Result<Option<Duration>> {
    let message = limit.map(exceeded_message);
    budget_hook::set::<StateRecord>(lua, message.as_deref(), limit)
}

/// The error the state's code gets once its CPU budget of `limit` is spent.
fn exceeded_message(limit: Duration) -> String {
    format!("CPU limit exceeded: the state's Lua code used more than {:.3} s of CPU time", limit.as_secs_f64())
}

/// The CPU budget's error message if the state's budget is spent (then every instruction
/// raises it: a host may report it whatever error object reached it), `None` otherwise.
pub fn cpu_limit_exceeded(lua: &Lua) -> mlua::Result<Option<String>> {
    states::with_record(lua, |record: &StateRecord, _| {
        let budget = record.cpu_budget();
        budget.limit().filter(|_| budget.spent()).map(exceeded_message)
    })
}

/// The state's CPU budget, if any ([`set_cpu_limit`]).
pub fn cpu_limit(lua: &Lua) -> mlua::Result<Option<Duration>> {
    states::with_record(lua, |record: &StateRecord, _| record.cpu_budget().limit())
}

/// The CPU time charged against the state's budget since it was set.
pub fn cpu_used(lua: &Lua) -> mlua::Result<Duration> {
    states::with_record(lua, |record: &StateRecord, _| record.cpu_budget().used())
}
