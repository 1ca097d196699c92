//! The runtime of this world: coroutines are its goroutines, CPUs are CPUs.
//!
//! * `num_goroutines()`: coroutines alive in the calling state, the main thread included.
//! * `go_max_procs([n])`: the process-wide CPU limit of `procs.rs`.
//! * `num_cpu()`: logical CPUs usable by the process at start.

use crate::args;
use crate::ffi::{Call, Reply};
use crate::permissions::Operation;
use crate::procs;
use crate::text::{Text, text};

/// `system.num_goroutines()`: 1 (the main thread) plus every coroutine the state has created
/// and the collector has not yet freed, whatever its status. A finished coroutine that is still
/// referenced counts until it is collected, as its memory does.
///
/// Where the allocator cannot see thread blocks (Lua 5.1, LuaJIT, states the module did not
/// create), the coroutines made by `coroutine.create` and `coroutine.wrap` since the module was
/// loaded are counted instead (`ffi/coroutines.rs`).
pub(crate) fn num_goroutines(call: &Call<'_>) -> Result<Reply, Text> {
    let data = call.data();
    let coroutines =
        if data.coroutines_by_allocator() { data.heap.live_coroutines() } else { call.recorded_coroutines() };
    Ok(Reply::Integer(1 + coroutines as i64))
}

/// `system.go_max_procs([n])`: with no argument or nil, the current limit; with `n >= 1`, sets
/// it and returns the previous one. `n` above 1024 is clamped to 1024, as Go does.
pub(crate) fn go_max_procs(call: &Call<'_>) -> Result<Reply, Text> {
    let Some(n) = args::optional_integer(call, 1)? else {
        return Ok(Reply::Integer(procs::max_procs() as i64));
    };
    call.permit(Operation::SetGoMaxProcs)?;
    if n < 1 {
        return Err(args::bad_argument(call, 1, format_args!("value out of range: must be at least 1, got {n}")));
    }
    match procs::set_max_procs(n.min(procs::MAX_PROCS_CAP as i64) as usize) {
        Ok(previous) => Ok(Reply::Integer(previous as i64)),
        Err(error) => Err(text!("{}: {error}", call.name())),
    }
}

/// `system.num_cpu()`.
pub(crate) fn num_cpu(call: &Call<'_>) -> Result<Reply, Text> {
    let _ = call;
    Ok(Reply::Integer(procs::num_cpu() as i64))
}
