//! The figures of `mem_stats()`: the [`MemStats`] struct, each figure documented on its field
//! as Go's `runtime/mstats.go` documents `MemStats`, and [`FIELDS`], the one table of the Lua
//! table's fields (name, meaning, scope), from which the Lua table is written and the README's
//! field table is checked (this file's test).
//!
//! "The state" is the Lua state that calls (its coroutines share it); "the process" is the whole
//! process. Byte counts are in bytes.

use std::ffi::CStr;
use std::time::Duration;

use crate::ffi::Collector;
use crate::ffi::call::TableWriter;
use crate::ffi::collector::{Busy, effective_percent, next_cycle_at};
use crate::process::memory::{self, HeapMemory, ProcessMemory};
use crate::state::cycles::{NextGcSource, STOPPED_NEXT_GC};
use crate::state::{Accounting, StateRecord};
use crate::text::{Text, text};

/// Why a figure is missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unavailable {
    /// Called while Lua runs finalizers during a collection; Lua 5.4 and 5.5 answer no collector
    /// request then.
    CollectorBusy,
    /// The process figures could not be read; [`MemStats::process`] holds the error.
    ProcessUnreadable,
    /// The process allocator's statistics could not be read or do not describe the allocator
    /// serving this state; [`ProcessMemory::heap`] holds the reason.
    AllocatorUnreadable,
}

impl Unavailable {
    /// Why, in words.
    pub fn reason(self) -> &'static str {
        match self {
            Unavailable::CollectorBusy => Busy::REASON,
            Unavailable::ProcessUnreadable => "the process memory figures could not be read",
            Unavailable::AllocatorUnreadable => "the process allocator's statistics could not be read",
        }
    }
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for Unavailable {}

impl From<Unavailable> for mlua::Error {
    fn from(why: Unavailable) -> mlua::Error {
        mlua::Error::external(why)
    }
}

/// A figure, or why it is missing.
pub type Figure<T> = Result<T, Unavailable>;

/// A snapshot of `mem_stats()`: the state's heap and collector, and the process's memory.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct MemStats {
    /// Which blocks the block counts (`total_alloc`, `heap_objects`, `mallocs`, `frees`)
    /// cover: every block of the state ([`Accounting::Exact`]) or those allocated since the
    /// module was loaded into it ([`Accounting::Interposed`]).
    pub accounting: Accounting,
    /// Bytes of the state's live heap blocks, every block included whatever the accounting
    /// (Go's `Alloc` and `HeapAlloc`). Exact: the sum of the sizes of the blocks the state holds
    /// now, as its allocator was asked for them.
    pub alloc: u64,
    /// Bytes allocated by the state, never decreasing (Go's `TotalAlloc`); a resize counts its
    /// full new size, as Go counts a grown slice. Interposed: the bytes in use when the module
    /// was loaded, plus every byte allocated since. Always `>= alloc`.
    pub total_alloc: u64,
    /// Live heap blocks (Go's `HeapObjects`): `mallocs - frees`. Each Lua object is one block; a
    /// table with an array or a hash part has more.
    pub heap_objects: u64,
    /// Blocks allocated (Go's `Mallocs`). Interposed: since the load, a block allocated before
    /// counting from its first resize.
    pub mallocs: u64,
    /// Blocks freed, among those `mallocs` counts (Go's `Frees`).
    pub frees: u64,
    /// Completed collection cycles of the state, automatic and forced, incremental,
    /// generational minor and major (Go's `NumGC`). Counted by an object each cycle finalizes.
    pub num_gc: u64,
    /// When the last cycle ended, in nanoseconds since the Unix epoch; 0 before the first (Go's
    /// `LastGC`).
    pub last_gc: u64,
    /// The heap size at which the next cycle starts (Go's `NextGC`); `i64::MAX` (2^53 on Lua 5.1,
    /// 5.2 and LuaJIT, whose numbers are doubles) while the
    /// collector is stopped. Lua's own threshold, read in its internals, where they are usable
    /// ([`NextGcSource::Threshold`]): while Lua waits for the next cycle, the threshold it will
    /// start it at; while a cycle runs, the one it computes from its live estimate and the
    /// setting. Elsewhere ([`NextGcSource::Estimate`]): the live heap when the last cycle's
    /// finalizers ran times `(100 + percent) / 100`, the percent being the one that applied then.
    pub next_gc: u64,
    /// Where `next_gc` comes from.
    pub next_gc_source: NextGcSource,
    /// The GC percent, as `get_gc_percent()` answers it (-1: stopped).
    pub gc_percent: Figure<i64>,
    /// The percent the collector really applies (Lua 5.4 stores it in steps of 4); -1: stopped.
    pub gc_percent_effective: Figure<i64>,
    /// The process's memory, or why it could not be read.
    pub process: Result<ProcessMemory, Text>,
    /// Age of the process figures: read at most every 10 ms by default (see
    /// [`set_process_sample_interval`](crate::set_process_sample_interval)).
    pub process_age: Duration,
}

/// One field of the Lua table: its name, its meaning (as the README's table shows it), its
/// scope, and how it is read from a [`MemStats`].
#[cfg_attr(not(test), allow(dead_code))] // meaning and scope: the documentation's (checked by a test)
pub(crate) struct Field {
    pub name: &'static CStr,
    pub meaning: &'static str,
    pub scope: &'static str,
    pub read: fn(&MemStats) -> Figure<i64>,
}

const fn field(
    name: &'static CStr,
    scope: &'static str,
    meaning: &'static str,
    read: fn(&MemStats) -> Figure<i64>,
) -> Field {
    Field { name, meaning, scope, read }
}

/// Every integer field of the Lua table, the spec's fifteen first.
#[rustfmt::skip]
pub(crate) static FIELDS: &[Field] = &[
    field(c"alloc", "state", "bytes of live heap blocks", |s| Ok(saturate(s.alloc))),
    field(c"total_alloc", "state", "bytes allocated, never decreasing (a resize counts its new size)", |s| Ok(saturate(s.total_alloc))),
    field(c"sys", "process", "memory obtained from the OS for data: heap, stacks, allocator metadata, other private writable mappings", |s| process(s, |p| p.sys)),
    field(c"heap_alloc", "state", "same as `alloc`", |s| Ok(saturate(s.alloc))),
    field(c"heap_sys", "process", "`heap_in_use + heap_idle`: heap memory obtained from the OS", |s| heap(s, |h| h.heap_sys)),
    field(c"heap_idle", "process", "allocator memory holding no live block", |s| heap(s, |h| h.heap_idle)),
    field(c"heap_in_use", "process", "allocator memory holding live blocks", |s| heap(s, |h| h.heap_in_use)),
    field(c"heap_released", "process", "the part of `heap_idle` returned to the OS", |s| heap(s, |h| h.heap_released)),
    field(c"heap_objects", "state", "live heap blocks (`mallocs - frees`)", |s| Ok(saturate(s.heap_objects))),
    field(c"stack_in_use", "process", "the main thread's stack", |s| process(s, |p| p.stack_in_use)),
    field(c"stack_sys", "process", "the main thread's stack mapping", |s| process(s, |p| p.stack_sys)),
    field(c"mspan_in_use", "process", "the allocator's own metadata", |s| heap(s, |h| h.mspan_in_use)),
    field(c"mspan_sys", "process", "the allocator's own metadata", |s| heap(s, |h| h.mspan_sys)),
    field(c"num_gc", "state", "completed collection cycles", |s| Ok(saturate(s.num_gc))),
    field(c"next_gc", "state", "heap size at which the next cycle starts (`math.maxinteger` while stopped; 2^53 on 5.1, 5.2, LuaJIT)", |s| Ok(saturate(s.next_gc))),
    field(c"mallocs", "state", "blocks allocated", |s| Ok(saturate(s.mallocs))),
    field(c"frees", "state", "blocks freed", |s| Ok(saturate(s.frees))),
    field(c"last_gc", "state", "end of the last cycle, nanoseconds since the Unix epoch; 0 before the first", |s| Ok(saturate(s.last_gc))),
    field(c"gc_percent", "state", "as `get_gc_percent()`", |s| s.gc_percent),
    field(c"gc_percent_effective", "state", "the percent the collector really applies; -1 when stopped", |s| s.gc_percent_effective),
    field(c"rss", "process", "resident memory", |s| process(s, |p| p.rss)),
    field(c"process_age_ns", "process", "age of the process figures, in nanoseconds", |s| process(s, |_| 0).map(|_| saturate(s.process_age.as_nanos() as u64))),
];

fn process(stats: &MemStats, pick: fn(&ProcessMemory) -> u64) -> Figure<i64> {
    match &stats.process {
        Ok(p) => Ok(saturate(pick(p))),
        Err(_) => Err(Unavailable::ProcessUnreadable),
    }
}

fn heap(stats: &MemStats, pick: fn(&HeapMemory) -> u64) -> Figure<i64> {
    match &stats.process {
        Ok(ProcessMemory { heap: Ok(h), .. }) => Ok(saturate(pick(h))),
        Ok(_) => Err(Unavailable::AllocatorUnreadable),
        Err(_) => Err(Unavailable::ProcessUnreadable),
    }
}

/// Lua integers are signed 64-bit; no byte count gets near 2^63, but never wrap.
pub(crate) fn saturate(value: u64) -> i64 {
    value.min(i64::MAX as u64) as i64
}

impl MemStats {
    /// Table slots to preallocate for the Lua table.
    pub(crate) const LUA_FIELDS: i32 = 27;

    pub(crate) fn read(record: &StateRecord, collector: &Collector) -> MemStats {
        let cycles = record.cycles();
        let live_bytes = record.heap().live_bytes();
        let gc_percent = cycles.refresh_setting(collector, live_bytes).map_err(|Busy| Unavailable::CollectorBusy);
        let gc_percent_effective = gc_percent.map(|p| if p < 0 { -1 } else { effective_percent(p) });
        // While Lua is busy, the collector's setting as last seen serves.
        let effective = gc_percent_effective.unwrap_or_else(|_| cycles.cached_effective_percent());
        let (next_gc, next_gc_source) = cycles.next_gc(collector, effective, live_bytes);
        MemStats::with_setting(record, next_gc, next_gc_source, gc_percent, gc_percent_effective)
    }

    /// The figures as another thread sees them, without entering Lua (a metrics scrape beside
    /// the script): the heap's and the cycles' counters are exact; the GC percent and `next_gc`
    /// are as the state's thread last knew them (when the last cycle ended, or the module last
    /// read or set them), so a script's own `collectgarbage("stop")` or `"setpause"` shows at
    /// the next read through the module.
    pub(crate) fn observe(record: &StateRecord) -> MemStats {
        let cycles = record.cycles();
        let effective = cycles.cached_effective_percent();
        let stopped = effective < 0;
        let (next_gc, next_gc_source) = match cycles.next_gc_seen() {
            _ if stopped => (STOPPED_NEXT_GC, NextGcSource::Stopped),
            Some(next_gc) => (next_gc, NextGcSource::Threshold),
            None => (next_cycle_at(record.heap().live_bytes(), effective), NextGcSource::Estimate),
        };
        let gc_percent = Ok(if stopped { -1 } else { cycles.requested_percent() });
        MemStats::with_setting(record, next_gc, next_gc_source, gc_percent, Ok(effective))
    }

    /// The state's counters and the process's figures now, with the collector's setting as
    /// [`read`](Self::read) or [`observe`](Self::observe) found it.
    fn with_setting(
        record: &StateRecord,
        next_gc: u64,
        next_gc_source: NextGcSource,
        gc_percent: Figure<i64>,
        gc_percent_effective: Figure<i64>,
    ) -> MemStats {
        let heap = record.heap().figures();
        let (process, process_age) = memory::sampled(heap.live_bytes);
        MemStats {
            accounting: record.accounting(),
            alloc: heap.live_bytes,
            total_alloc: heap.total_bytes,
            heap_objects: heap.objects(),
            mallocs: heap.mallocs,
            frees: heap.frees,
            num_gc: record.cycles().count(),
            last_gc: record.cycles().last_cycle_unix_ns(),
            next_gc,
            next_gc_source,
            gc_percent,
            gc_percent_effective,
            process: process.map(|p| covers_state(p, heap.live_bytes)),
            process_age,
        }
    }

    /// Writes the Lua table: the integer fields, the text fields `accounting` and
    /// `process_source`, and `unavailable = { field = reason, ... }` when something is missing.
    ///
    /// Runs under a protected call (see `TableWriter`): nothing here owns a destructor.
    pub(crate) fn write(&self, table: &mut TableWriter) {
        let mut missing = false;
        for field in FIELDS {
            match (field.read)(self) {
                Ok(value) => table.integer(field.name, value),
                Err(_) => {
                    table.nil(field.name);
                    missing = true;
                }
            }
        }
        table.bytes(c"accounting", self.accounting.as_str().as_bytes());
        table.bytes(c"next_gc_source", self.next_gc_source.as_str().as_bytes());
        match &self.process {
            Ok(ProcessMemory { heap: Ok(heap), .. }) => table.bytes(c"process_source", heap.source.as_bytes()),
            _ => table.nil(c"process_source"),
        }
        if !missing {
            table.nil(c"unavailable");
            return;
        }
        table.table(c"unavailable", |reasons| {
            for field in FIELDS {
                let Err(why) = (field.read)(self) else { continue };
                let detail = match (why, &self.process) {
                    (Unavailable::ProcessUnreadable, Err(error)) => *error,
                    (Unavailable::AllocatorUnreadable, Ok(ProcessMemory { heap: Err(error), .. })) => *error,
                    (why, _) => text!("{}", why.reason()),
                };
                reasons.bytes(field.name, detail.as_bytes());
            }
        });
    }
}

/// The state's heap is part of the process heap, so statistics reporting less in use than the
/// state holds describe another allocator than the one serving the state (glibc's figures while
/// `LD_PRELOAD` or valgrind replaced `malloc`, for instance). They are then declared unreadable
/// rather than reported wrong.
///
/// In a LuaJIT interpreter (`system.so`), the state's blocks live in LuaJIT's own arena, which
/// publishes no statistics: the heap figures are then the process allocator's plus the state's
/// live bytes in use (exact), and the arena's free space is not counted as idle
/// (`process_source` says so).
fn covers_state(mut process: ProcessMemory, alloc: u64) -> ProcessMemory {
    if !memory::STATE_IN_PROCESS_HEAP
        && let Ok(heap) = &mut process.heap
    {
        heap.heap_in_use = memory::in_use_for_state(heap, alloc);
        heap.heap_sys += alloc;
        heap.source = "glibc + the state's bytes in LuaJIT's arena";
        // The kernel's reading may predate the state's latest growth (readings are reused while
        // fresh): `sys` still holds what the heap figures say is held.
        let held = heap.heap_sys + process.stack_sys + heap.mspan_sys;
        process.sys = process.sys.max(held);
        return process;
    }
    if let Ok(heap) = process.heap
        && heap.heap_in_use < alloc
    {
        process.heap = Err(text!(
            "the {} statistics report {} bytes in use, less than the {alloc} this state holds: \
             the allocator serving this state is another one (an LD_PRELOAD one, valgrind's)",
            heap.source,
            heap.heap_in_use
        ));
    }
    process
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The field table of docs/figures.md, as the code defines it.
    fn field_table() -> String {
        let mut table = String::from("| field | meaning | scope |\n|---|---|---|\n");
        for field in FIELDS {
            let name = field.name.to_str().unwrap();
            table.push_str(&format!("| `{name}` | {} | {} |\n", field.meaning, field.scope));
        }
        table
    }

    #[test]
    fn the_documented_field_table_is_the_codes() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/figures.md");
        let docs = std::fs::read_to_string(path).unwrap();
        let table = field_table();
        assert!(docs.contains(&table), "docs/figures.md must contain the field table:\n\n{table}");
    }
}
