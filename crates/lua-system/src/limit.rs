//! The memory limit, the analog of Go's `debug.SetMemoryLimit`: `set_memory_limit(bytes)` and
//! `get_memory_limit()` for scripts, `lua_system::set_memory_limit` and `memory_limit` for hosts.
//!
//! The limit is enforced by the allocator of the state. Past it an allocation fails: Lua
//! collects garbage and retries (5.2 and later), then raises "not enough memory", which `pcall`
//! catches; other states and the host are not affected; once memory is freed, allocations
//! succeed again. A limit below the bytes in use is accepted and stops growth.
//!
//! | state | enforced by |
//! |---|---|
//! | exact, interposed | the module's allocator |
//! | observed, made by mlua | mlua's allocator (its own limit) |
//! | observed, LuaJIT's `system.so` | nothing: unavailable |

use mlua::Lua;

use crate::args;
use crate::ffi::{Call, Reply};
use crate::state::{Accounting, StateData};
use crate::text::{Text, text};

/// Sets the limit of `data`'s state (`None`: no limit) and returns the previous one. `lua` is
/// the state's mlua handle, needed where mlua enforces the limit.
pub(crate) fn set(data: &StateData, lua: Option<&Lua>, limit: Option<usize>) -> Result<Option<usize>, Text> {
    match (data.accounting, lua) {
        (Accounting::Exact | Accounting::Interposed, _) => Ok(data.heap.set_memory_limit(limit)),
        (Accounting::Observed, Some(lua)) if data.mlua_limit => {
            // mlua reads 0 as "no limit"; a limit of 0 bytes is as good as 1.
            let previous = lua.set_memory_limit(limit.map_or(0, |l| l.max(1))).map_err(|e| text!("{e}"))?;
            Ok(Some(previous).filter(|&l| l != 0))
        }
        _ => Err(text!("unavailable: nothing enforces a memory limit on a state whose allocator is LuaJIT's own")),
    }
}

/// The limit of `data`'s state (`None`: no limit).
pub(crate) fn get(data: &StateData, lua: Option<&Lua>) -> Result<Option<usize>, Text> {
    match (data.accounting, lua) {
        (Accounting::Exact | Accounting::Interposed, _) => Ok(data.heap.memory_limit()),
        (Accounting::Observed, Some(lua)) if data.mlua_limit => {
            // mlua has no getter: setting returns the previous limit, which is set back.
            let limit = lua.set_memory_limit(0).map_err(|e| text!("{e}"))?;
            lua.set_memory_limit(limit).map_err(|e| text!("{e}"))?;
            Ok(Some(limit).filter(|&l| l != 0))
        }
        _ => Ok(None),
    }
}

fn as_lua(limit: Option<usize>) -> i64 {
    limit.map_or(-1, |bytes| bytes.min(i64::MAX as usize) as i64)
}

/// `system.set_memory_limit(bytes)`: -1 removes the limit; returns the previous one (-1: none).
/// Values beyond 2^63 are clamped.
pub(crate) fn set_memory_limit(call: &Call<'_>) -> Result<Reply, Text> {
    let limit = match args::integer(call, 1)? {
        -1 => None,
        bytes if bytes < -1 => {
            return Err(args::bad_argument(
                call,
                1,
                format_args!("value out of range: -1 for no limit, or a number of bytes, got {bytes}"),
            ));
        }
        bytes => Some(bytes as usize),
    };
    let previous = set(call.data(), call.mlua(), limit).map_err(|e| text!("{}: {e}", call.name()))?;
    Ok(Reply::Integer(as_lua(previous)))
}

/// `system.get_memory_limit()`: the limit in bytes, -1 if none.
pub(crate) fn get_memory_limit(call: &Call<'_>) -> Result<Reply, Text> {
    let limit = get(call.data(), call.mlua()).map_err(|e| text!("{}: {e}", call.name()))?;
    Ok(Reply::Integer(as_lua(limit)))
}
