//! The runtime of this world: coroutines are its goroutines, CPUs are CPUs.
//!
//! * `num_goroutines()`: coroutines of the calling state that can still run, the main thread
//!   included.
//! * `go_max_procs([n])`: the process-wide CPU limit of `process/max_procs.rs`.
//! * `num_cpu()`: logical CPUs usable by the process at start.

use crate::ffi::Call;
use crate::functions::answer::{Failure, Reply};
use crate::functions::args;
use crate::process::max_procs;
use crate::state::StateRecord;
use crate::text::text;

/// `system.num_goroutines()`: 1 (the main thread) plus every coroutine of the state that can
/// still run: running, normal, suspended or not started. A finished coroutine does not count,
/// even while something refers to it, as a finished goroutine is gone.
///
/// Where the allocator cannot see thread blocks (Lua 5.1, LuaJIT), the coroutines made by
/// `coroutine.create` and `coroutine.wrap` since the module was loaded are the ones counted
/// (`ffi/coroutines.rs`).
pub(crate) fn num_goroutines(call: &Call<'_, StateRecord>) -> Result<Reply, Failure> {
    Ok(Reply::Integer(1 + call.alive_coroutines() as i64))
}

/// `system.go_max_procs([n])`: with no argument or nil, the current limit; with `n >= 1`, sets
/// it and returns the previous one. `n` above 1024 is clamped to 1024, as Go does.
pub(crate) fn go_max_procs(call: &Call<'_, StateRecord>) -> Result<Reply, Failure> {
    let Some(n) = args::optional_integer(call, 1)? else {
        return Ok(Reply::Integer(max_procs::max_procs() as i64));
    };
    if n.value < 1 {
        return Err(args::bad_argument(1, format_args!("value out of range: must be at least 1, got {n}")));
    }
    match max_procs::set_max_procs(n.value.min(max_procs::MAX_PROCS_CAP as i64) as usize) {
        Ok(previous) => Ok(Reply::Integer(previous as i64)),
        Err(error) => Err(Failure::Failed(text!("{error}"))),
    }
}

/// `system.num_cpu()`.
pub(crate) fn num_cpu(_call: &Call<'_, StateRecord>) -> Result<Reply, Failure> {
    Ok(Reply::Integer(max_procs::num_cpu() as i64))
}
