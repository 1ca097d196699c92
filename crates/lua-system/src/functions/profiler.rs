//! The heap profiler, the analog of Go's `runtime.MemProfileRate` and
//! `pprof.WriteHeapProfile`: `set_heap_profile_rate(bytes)` and `write_heap_profile(path)` for
//! scripts; `lua_system::set_heap_profile_rate` and `heap_profile` for hosts (`host/install.rs`). How samples are drawn
//! and counted: `accounts/heap_sampler.rs`; how the Lua stack is read: `ffi/stack_walk.rs`; the
//! formats written: `heap_profile/`.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::ffi::Call;
use crate::ffi::heap_profiler::NotStarted;
use crate::functions::answer::{Failure, Reply};
use crate::functions::args;
use crate::state::StateRecord;
use crate::text::text;

/// `system.set_heap_profile_rate(bytes)`: sample on average one allocation per `bytes`
/// allocated (1: every allocation; 0: stop); returns the previous rate (0 before the first).
pub(crate) fn set_heap_profile_rate(call: &Call<'_, StateRecord>) -> Result<Reply, Failure> {
    let bytes = args::integer(call, 1)?;
    if bytes.value < 0 {
        return Err(args::bad_argument(
            1,
            format_args!("value out of range: a number of bytes (0 stops, 1 samples every allocation), got {bytes}"),
        ));
    }
    match call.set_heap_profile_rate(bytes.value as u64) {
        Ok(previous) => Ok(Reply::Integer(previous.min(i64::MAX as u64) as i64)),
        Err(NotStarted::NotMainThread) => {
            Err(Failure::Failed(text!("start the profiler from the main thread (Lua 5.1 and LuaJIT)")))
        }
        Err(NotStarted::Failed) => Err(Failure::Failed(text!("cannot start the profiler: not enough memory"))),
    }
}

/// `system.write_heap_profile(path)`: writes the profile so far, in the format the file's
/// extension names (`.pb.gz`/`.pprof`, `.folded`, `.svg`); returns `true`.
pub(crate) fn write_heap_profile(call: &Call<'_, StateRecord>) -> Result<Reply, Failure> {
    let Some(path) = call.string(1) else {
        return Err(args::bad_argument(1, format_args!("string expected, got {}", call.arg(1).type_name())));
    };
    if path.is_empty() || path.contains(&0) {
        return Err(args::bad_argument(1, format_args!("not a file name")));
    }
    // A path is bytes on Unix, UTF-8 or not.
    let path = Path::new(std::ffi::OsStr::from_bytes(path));
    let profile = call.record().heap_sampler().profile();
    match profile.write_to_path(path) {
        Ok(()) => Ok(Reply::Boolean(true)),
        Err(error) => Err(Failure::Failed(text!("{error}"))),
    }
}
