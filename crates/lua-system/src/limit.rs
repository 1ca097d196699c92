//! The memory limit, the analog of Go's `debug.SetMemoryLimit`: `set_memory_limit(bytes)` and
//! `get_memory_limit()` for scripts, `lua_system::set_memory_limit` and `memory_limit` for hosts.
//!
//! The limit is enforced by the module's allocator, which serves every state the module is in.
//! Past it an allocation fails: Lua collects garbage and retries (5.2 and later), then raises
//! "not enough memory", which `pcall` catches; other states and the host are not affected; once
//! memory is freed, allocations succeed again. A limit below the bytes in use is accepted and
//! stops growth. The limit bounds the state's heap, not the process (see SECURITY.md).

use std::sync::Arc;

use crate::answer::{Failure, Reply};
use crate::args;
use crate::ffi::Call;
use crate::state_data::StateData;

fn as_lua(limit: Option<usize>) -> i64 {
    limit.map_or(-1, |bytes| bytes.min(i64::MAX as usize) as i64)
}

/// `system.set_memory_limit(bytes)`: -1 removes the limit; returns the previous one (-1: none).
/// Values beyond 2^63 are clamped.
pub(crate) fn set_memory_limit(call: &Call<'_, StateData>) -> Result<Reply, Failure> {
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
    Ok(Reply::Integer(as_lua(call.record().heap().set_memory_limit(limit))))
}

/// `system.get_memory_limit()`: the limit in bytes, -1 if none.
pub(crate) fn get_memory_limit(call: &Call<'_, StateData>) -> Result<Reply, Failure> {
    Ok(Reply::Integer(as_lua(call.record().heap().memory_limit())))
}

/// Room past a state's memory limit for a host's last words: the error report and the exit
/// path. At the limit, a script's `error("boom")` cannot build its message, a message handler
/// cannot build its traceback and a wrapped `os.exit` cannot make its call; a host opens the
/// reserve around just those steps, so the script's own message and exit code survive.
///
/// The state's heap never exceeds its limit by more than the largest reserve opened (opening
/// again replaces the reserve, it does not add to it), so a reserve left open by a Lua error
/// raised inside it keeps that bound; close it when the protected call returns. Obtained with
/// [`memory_reserve`]; cloning shares it.
#[derive(Clone)]
pub struct MemoryReserve(Arc<StateData>);

impl MemoryReserve {
    /// What the runner reserves: enough for a traceback of Lua's 22 frames, an error message
    /// with its position, and an mlua callback.
    pub const DEFAULT_BYTES: usize = 64 * 1024;

    /// Lets the state hold up to `bytes` past its limit until [`close`](Self::close).
    pub fn open(&self, bytes: usize) {
        self.0.heap().open_reserve(bytes);
    }

    /// Applies the limit exactly again.
    pub fn close(&self) {
        self.0.heap().close_reserve();
    }
}

/// The memory reserve of `lua`'s state (see [`MemoryReserve`]). Fails if the module is not
/// installed in the state.
pub fn memory_reserve(lua: &mlua::Lua) -> mlua::Result<MemoryReserve> {
    crate::ffi::states::published::<StateData>(lua).map(MemoryReserve)
}
