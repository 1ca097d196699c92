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

use mlua::{Function, IntoLuaMulti, Lua, MultiValue, Value};

use crate::ffi::budget_hook;
use crate::permissions::{Permissions, Profile};
use crate::state_data::StateData;
use crate::system_lua::{memory_limit, permissions, set_memory_limit, set_permissions};

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
    let cpu_spent = lua.create_function(|lua, ()| cpu_limit_exceeded(lua))?;
    lua.load(include_str!("sandbox.lua")).set_name("=lua-system sandbox").call(cpu_spent)
}

/// Sets the state's CPU budget (`None`: none) and returns the previous one. The budget counts
/// the CPU time the state's Lua code uses on the threads that run it (not the time other
/// threads use meanwhile), checked every 10,000 instructions, from the first check after this
/// call: the thread's CPU time between two checks is charged whole, so a host that does its
/// own work between two runs sets the budget again before each run. Once it is spent, the
/// running code gets the error "CPU limit exceeded: ...", and so does every instruction after
/// it (a `pcall` cannot swallow it): the host's call fails with it, unless the code caught it
/// in its very last call (`return pcall(f)`, a tail call, leaves no instruction to fail): a host
/// that must know asks [`cpu_limit_exceeded`] after each call. Set the budget again (or `None`)
/// before running more code in the state.
///
/// Covered: the thread running now (the main thread, from the host) and the coroutines created
/// after this call. Not interrupted: one call of a C function (a pattern match, `string.rep`),
/// whose time is charged when it returns; code Lua runs with hooks off: finalizers (`__gc`),
/// and the message handler of an `xpcall` handling the budget's own error ([`sandbox`] closes
/// both). LuaJIT runs no hooks in compiled code: its compiler
/// is turned off while a budget is set.
pub fn set_cpu_limit(lua: &Lua, limit: Option<Duration>) -> mlua::Result<Option<Duration>> {
    let message = limit.map(exceeded_message);
    budget_hook::set::<StateData>(lua, message.as_deref())?;
    crate::ffi::states::with_record(lua, |data: &StateData, _| data.cpu_budget().set(limit))
}

/// The error the state's code gets once its CPU budget of `limit` is spent.
fn exceeded_message(limit: Duration) -> String {
    format!("CPU limit exceeded: the state's Lua code used more than {:.3} s of CPU time", limit.as_secs_f64())
}

/// The CPU budget's error message if the state's budget is spent (then every instruction
/// raises it: a host may report it whatever error object reached it), `None` otherwise.
pub fn cpu_limit_exceeded(lua: &Lua) -> mlua::Result<Option<String>> {
    crate::ffi::states::with_record(lua, |data: &StateData, _| {
        let budget = data.cpu_budget();
        budget.limit().filter(|_| budget.spent()).map(exceeded_message)
    })
}

/// The state's CPU budget, if any ([`set_cpu_limit`]).
pub fn cpu_limit(lua: &Lua) -> mlua::Result<Option<Duration>> {
    crate::ffi::states::with_record(lua, |data: &StateData, _| data.cpu_budget().limit())
}

/// The CPU time charged against the state's budget since it was set.
pub fn cpu_used(lua: &Lua) -> mlua::Result<Duration> {
    crate::ffi::states::with_record(lua, |data: &StateData, _| data.cpu_budget().used())
}

/// What `collectgarbage(option)` does, as the module's permissions see it: the function whose
/// change it amounts to, or `None` for reading.
fn collectgarbage_needs(option: &[u8], argument_count: usize) -> Option<&'static str> {
    match option {
        b"count" | b"isrunning" => None,
        // Lua 5.5 reads a parameter when no value is given.
        b"param" if argument_count < 3 => None,
        b"collect" | b"step" => Some("gc"),
        b"stop" | b"restart" | b"setpause" | b"setstepmul" | b"incremental" | b"generational" | b"param" => {
            Some("set_gc_percent")
        }
        // Not an option of any version: Lua reports it.
        _ => None,
    }
}

const GATED_KEY: &str = "lua-system: collectgarbage gated";

/// Puts `collectgarbage` under the module's permissions, once: reading options stay allowed; a
/// collection (`collect`, `step`) needs `gc`, every setting (`stop`, `restart`, `setpause`,
/// `incremental`, `generational`, `param` with a value, ...) needs `set_gc_percent`. A denied
/// call answers `nil, "permission denied: collectgarbage(\"stop\")"` and changes nothing.
/// Called whenever permissions deny either change; states whose scripts may do everything keep
/// Lua's own function.
pub(crate) fn gate_collectgarbage(lua: &Lua) -> mlua::Result<()> {
    if lua.named_registry_value::<bool>(GATED_KEY).unwrap_or(false) {
        return Ok(());
    }
    let Value::Function(original) = lua.globals().raw_get::<Value>("collectgarbage")? else { return Ok(()) };
    let gate = lua.create_function(move |lua, args: MultiValue| gated_call(lua, &original, args))?;
    lua.globals().raw_set("collectgarbage", gate)?;
    lua.set_named_registry_value(GATED_KEY, true)
}

fn gated_call(lua: &Lua, original: &Function, args: MultiValue) -> mlua::Result<MultiValue> {
    let option = match args.front() {
        None | Some(Value::Nil) => b"collect".to_vec(),
        // Lua compares options as C strings: up to the first NUL ("stop\0" is "stop").
        Some(Value::String(s)) => s.as_bytes().split(|&b| b == 0).next().unwrap_or_default().to_vec(),
        // Lua reports the bad option itself.
        Some(_) => return original.call(args),
    };
    if let Some(function) = collectgarbage_needs(&option, args.len())
        && !permissions(lua)?.allows_change(function)
    {
        let message = format!("permission denied: collectgarbage(\"{}\")", String::from_utf8_lossy(&option));
        return (Value::Nil, message).into_lua_multi(lua);
    }
    original.call(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_options_need_nothing_and_the_rest_need_a_change() {
        assert_eq!(collectgarbage_needs(b"count", 1), None);
        assert_eq!(collectgarbage_needs(b"isrunning", 1), None);
        assert_eq!(collectgarbage_needs(b"param", 2), None);
        assert_eq!(collectgarbage_needs(b"param", 3), Some("set_gc_percent"));
        assert_eq!(collectgarbage_needs(b"collect", 1), Some("gc"));
        assert_eq!(collectgarbage_needs(b"step", 2), Some("gc"));
        for option in ["stop", "restart", "setpause", "setstepmul", "incremental", "generational"] {
            assert_eq!(collectgarbage_needs(option.as_bytes(), 1), Some("set_gc_percent"), "{option}");
        }
        assert_eq!(collectgarbage_needs(b"bogus", 1), None, "Lua's own error");
    }
}
