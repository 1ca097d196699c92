//! Collection and the GC percent (Go's GOGC): `gc()`, `set_gc_percent(p)`, `get_gc_percent()`.
//!
//! The encoding of the percent for each Lua version lives in `ffi/collector.rs`. A negative
//! percent stops the collector and reads back as -1, as in Go; a percent above what Lua can
//! store is clamped (README). Cycles are counted by the cycle sentinel (`ffi/sentinel.rs`) into
//! the state's record (`state/cycles.rs`).

use crate::ffi::Call;
use crate::ffi::Collector;
use crate::ffi::collector::{Busy, CollectError, PERCENT_MAX, effective_percent};
use crate::functions::answer::{Failure, Reply};
use crate::functions::args;
use crate::state::StateRecord;
use crate::text::text;

/// The GC percent in effect (-1: stopped), the record of the setting brought up to date.
fn current_percent(record: &StateRecord, collector: &Collector) -> Result<i64, Failure> {
    record.cycles().refresh_setting(collector, record.heap().live_bytes()).map_err(busy)
}

fn refused(error: CollectError) -> Failure {
    match error {
        CollectError::Busy => Failure::Failed(text!("{}", Busy::REASON)),
        CollectError::Raised(message) => Failure::Failed(message),
    }
}

fn busy(_: Busy) -> Failure {
    refused(CollectError::Busy)
}

/// `system.gc()`: a full collection; `true`. A stopped collector stays stopped (Lua 5.1 and
/// LuaJIT restart it after a full collection; the module stops it again).
pub(crate) fn gc(call: &Call<'_, StateRecord>) -> Result<Reply, Failure> {
    let record = call.record();
    let collector = call.collector();
    let stopped = current_percent(record, &collector)? < 0;
    record.cycles().mark_forced(true);
    let collected = collector.collect();
    record.cycles().mark_forced(false);
    collected.map_err(refused)?;
    if stopped {
        collector.stop().map_err(busy)?;
    }
    Ok(Reply::Boolean(true))
}

/// `system.get_gc_percent()`: the percent in effect, -1 while the collector is stopped.
pub(crate) fn get_gc_percent(call: &Call<'_, StateRecord>) -> Result<Reply, Failure> {
    Ok(Reply::Integer(current_percent(call.record(), &call.collector())?))
}

/// `system.set_gc_percent(p)`: sets GOGC, returns the previous value.
pub(crate) fn set_gc_percent(call: &Call<'_, StateRecord>) -> Result<Reply, Failure> {
    let requested = args::integer(call, 1)?.value;
    let record = call.record();
    let collector = call.collector();
    let previous = current_percent(record, &collector)?;
    if requested < 0 {
        collector.stop().map_err(busy)?;
        record.cycles().set_stopped_by_module(true);
        record.cycles().set_effective_percent(-1);
        return Ok(Reply::Integer(previous));
    }
    let percent = requested.min(PERCENT_MAX);
    // Recorded before Lua is told: applying it may run a collection (Lua 5.4 without the
    // internals learns the mode by switching it, which in generational mode collects), and the
    // end of that collection, which records the percent then in effect, is under the new one.
    let recorded = (record.cycles().requested_percent(), record.cycles().cached_effective_percent());
    record.cycles().set_requested_percent(percent);
    record.cycles().set_effective_percent(effective_percent(percent));
    if let Err(error) = collector.apply_percent(percent) {
        record.cycles().set_requested_percent(recorded.0);
        record.cycles().set_effective_percent(recorded.1);
        return Err(refused(error));
    }
    if previous < 0 {
        collector.restart().map_err(busy)?;
        record.cycles().set_stopped_by_module(false);
    }
    // As Go's SetGCPercent: the next cycle starts at the new target, not at the old one.
    collector.apply_at_once();
    Ok(Reply::Integer(previous))
}
