//! The memory limit, the analog of Go's `debug.SetMemoryLimit`: `set_memory_limit(bytes)` and
//! `get_memory_limit()` for scripts, `lua_system::set_memory_limit`, `memory_limit` and `MemoryReserve` for hosts (`host/install.rs`).
//!
//! The limit is enforced by the module's allocator, which serves every state the module is in.
//! Past it an allocation fails: Lua collects garbage and retries (5.2 and later), then raises
//! "not enough memory", which `pcall` catches; other states and the host are not affected; once
//! memory is freed, allocations succeed again. A limit below the bytes in use is accepted and
//! stops growth. The limit bounds the state's heap, not the process (see SECURITY.md).

use crate::ffi::Call;
use crate::functions::answer::{Failure, Reply};
use crate::functions::args;
use crate::state::{Accounting, StateRecord};
use crate::text::text;

/// Why a state of a stock LuaJIT (`system.so`) gets no limit: LuaJIT's own path for an
/// allocation its allocator refuses is not safe there (Debian's LuaJIT 2.1.0-beta3 crashes in a
/// `pcall` loop that fills memory at a limit, with any allocator that refuses, `-joff` too). The
/// runner's vendored LuaJIT, whose states the module makes, survives it (`tests/hostile`).
pub(crate) const LUAJIT_INTERPOSED: &str =
    "not available in a stock LuaJIT (its failure path at a refused allocation crashes): use the lua-system runner";

/// Whether the LuaJIT this build runs on is a stock one: `system.so` in an interpreter, or a
/// host linking the system's LuaJIT. mlua's vendored LuaJIT is the runner's, which survives the
/// hostile corpus at its limit, in states the module makes and in states it interposes on.
pub(crate) const STOCK_LUAJIT: bool = cfg!(all(feature = "luajit", not(feature = "vendored")));

fn as_lua(limit: Option<usize>) -> i64 {
    limit.map_or(-1, |bytes| bytes.min(i64::MAX as usize) as i64)
}

/// `system.set_memory_limit(bytes)`: -1 removes the limit; returns the previous one (-1: none).
/// Values beyond 2^63 are clamped.
pub(crate) fn set_memory_limit(call: &Call<'_, StateRecord>) -> Result<Reply, Failure> {
    let bytes = args::integer(call, 1)?;
    let limit = match bytes.value {
        -1 => None,
        value if value < -1 => {
            return Err(args::bad_argument(
                1,
                format_args!("value out of range: -1 for no limit, or a number of bytes, got {bytes}"),
            ));
        }
        value => Some(value as usize),
    };
    if STOCK_LUAJIT && limit.is_some() && call.record().accounting() == Accounting::Interposed {
        return Err(Failure::Failed(text!("{}", LUAJIT_INTERPOSED)));
    }
    if limit.is_some() {
        call.contain();
    }
    Ok(Reply::Integer(as_lua(call.record().heap().set_memory_limit(limit))))
}

/// `system.get_memory_limit()`: the limit in bytes, -1 if none.
pub(crate) fn get_memory_limit(call: &Call<'_, StateRecord>) -> Result<Reply, Failure> {
    Ok(Reply::Integer(as_lua(call.record().heap().memory_limit())))
}
