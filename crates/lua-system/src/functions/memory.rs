//! Heap figures: `mem_stats()`, `allocated()`, `heap_objects()`.
//!
//! A state's own figures come from the module's allocator accounts (`accounts/heap.rs`); process
//! figures from `process/memory.rs`. What cannot be measured is left out of the table and
//! explained in its `unavailable` sub-table, never guessed (see `figures/mem_stats.rs`).

use crate::ffi::{Arg, Call};
use crate::figures::mem_stats::{MemStats, saturate};
use crate::functions::answer::{Failure, Reply};
use crate::functions::args;
use crate::state::StateRecord;

/// `system.mem_stats([t])`: the table described in the README; given a table `t`, fills it
/// instead of making a new one (no garbage when called in a loop), and returns it.
pub(crate) fn mem_stats(call: &Call<'_, StateRecord>) -> Result<Reply, Failure> {
    let refill = match call.arg(1) {
        Arg::Absent | Arg::Nil => false,
        Arg::Other("table") => true,
        other => return Err(args::bad_argument(1, format_args!("table expected, got {}", other.type_name()))),
    };
    Ok(Reply::Stats(MemStats::read(call.record(), &call.collector()), refill))
}

/// `system.allocated()`: bytes of the state's live heap blocks, in O(1).
pub(crate) fn allocated(call: &Call<'_, StateRecord>) -> Result<Reply, Failure> {
    Ok(Reply::Integer(saturate(call.record().heap().live_bytes())))
}

/// `system.heap_objects()`: the state's live heap blocks, in O(1).
pub(crate) fn heap_objects(call: &Call<'_, StateRecord>) -> Result<Reply, Failure> {
    Ok(Reply::Integer(saturate(call.record().heap().figures().objects())))
}
