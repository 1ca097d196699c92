//! Heap figures: `mem_stats()`, `allocated()`, `heap_objects()`.
//!
//! A state's own figures come from the module's allocator accounts (`alloc.rs`) or, when the
//! module does not own the allocator, from what Lua reports; process figures come from
//! `process.rs`. What cannot be measured is left out of the table and explained in its
//! `unavailable` sub-table, never guessed.

use std::ffi::CStr;

use crate::args;
use crate::ffi::call::TableWriter;
use crate::ffi::collector::{Busy, effective_percent, next_cycle_at};
use crate::ffi::{Arg, Call, Collector, Reply};
use crate::gc::current_percent;
use crate::process::{self, HeapMemory, ProcessMemory};
use crate::state::{Accounting, StateData};
use crate::text::{Text, text};

/// Why a figure is missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unavailable {
    /// The module does not own the state's allocator, so it cannot see each block.
    NotOurAllocator,
    /// Called while Lua runs finalizers during a collection; Lua answers no collector request.
    CollectorBusy,
    /// The process figures could not be read; [`MemStats::process`] holds the error.
    ProcessUnreadable,
    /// The process allocator's statistics could not be read or do not describe the allocator
    /// serving this state; [`ProcessMemory::heap`] holds the reason.
    AllocatorUnreadable,
}

impl Unavailable {
    pub fn reason(self) -> &'static str {
        match self {
            Unavailable::NotOurAllocator => {
                "the module's allocator did not serve every block of this state (it was \
                 created by mlua, an interpreter or another host), so it cannot count them; \
                 create the state with lua_system::SystemLua for this figure"
            }
            Unavailable::CollectorBusy => Busy::REASON,
            Unavailable::ProcessUnreadable => "the process memory figures could not be read",
            Unavailable::AllocatorUnreadable => "the process allocator's statistics could not be read",
        }
    }
}

/// A figure, or why it is missing.
pub type Figure<T> = Result<T, Unavailable>;

/// A snapshot of `mem_stats()`. Byte counts are in bytes; see the README's mapping table for
/// each field's meaning, scope and source.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct MemStats {
    pub accounting: Accounting,
    /// Live bytes of the state's heap (`alloc` and `heap_alloc`).
    pub alloc: Figure<u64>,
    pub total_alloc: Figure<u64>,
    pub heap_objects: Figure<u64>,
    pub mallocs: Figure<u64>,
    pub frees: Figure<u64>,
    pub num_gc: u64,
    /// End of the last cycle, nanoseconds since the Unix epoch; 0 before the first.
    pub last_gc: u64,
    /// Heap size at which the next cycle starts; `i64::MAX` while the collector is stopped.
    pub next_gc: Figure<u64>,
    /// As `get_gc_percent()`: -1 while the collector is stopped.
    pub gc_percent: Figure<i64>,
    /// The percent Lua really applies (Lua 5.4 stores it in steps of 4); -1 when stopped.
    pub gc_percent_effective: Figure<i64>,
    pub process: Result<ProcessMemory, Text>,
    /// Age of the process figures: they are read at most every 10 ms by default (see
    /// [`set_process_sample_interval`](crate::set_process_sample_interval)).
    pub process_age: std::time::Duration,
}

impl MemStats {
    /// Table slots to preallocate for the Lua table.
    pub(crate) const LUA_FIELDS: i32 = 26;

    pub(crate) fn read(data: &StateData, collector: &Collector) -> MemStats {
        let exact = data.counts_every_block();
        let heap = data.heap.figures();
        let owned = |value: u64| {
            if exact { Ok(value) } else { Err(Unavailable::NotOurAllocator) }
        };
        let alloc = match data.owned_live_bytes() {
            Some(bytes) => Ok(bytes),
            None => collector.heap_bytes().map_err(|Busy| Unavailable::CollectorBusy),
        };
        let (process, process_age) = process::sampled(alloc.ok());
        let gc_percent = current_percent(data, collector).map_err(|Busy| Unavailable::CollectorBusy);
        let gc_percent_effective = gc_percent.map(|p| if p < 0 { -1 } else { effective_percent(p) });
        let next_gc = match gc_percent_effective {
            Ok(-1) => Ok(i64::MAX as u64),
            Ok(effective) => data
                .gc
                .live_after_cycle()
                .map(|base| next_cycle_at(base, effective))
                .ok_or(Unavailable::NotOurAllocator),
            Err(why) => Err(why),
        };
        MemStats {
            accounting: data.accounting,
            alloc,
            total_alloc: owned(heap.total_bytes),
            heap_objects: owned(heap.mallocs - heap.frees),
            mallocs: owned(heap.mallocs),
            frees: owned(heap.frees),
            num_gc: data.gc.cycles(),
            last_gc: data.gc.last_cycle_unix_ns(),
            next_gc,
            gc_percent,
            gc_percent_effective,
            process: process.map(|p| covers_state(p, alloc)),
            process_age,
        }
    }

    /// Every integer field under its Lua name, in the spec's order then the extras.
    fn integer_fields(&self) -> [(&'static CStr, Figure<i64>); 22] {
        let bytes = |f: Figure<u64>| f.map(saturate);
        let process = |pick: fn(&ProcessMemory) -> u64| match &self.process {
            Ok(p) => Ok(saturate(pick(p))),
            Err(_) => Err(Unavailable::ProcessUnreadable),
        };
        let heap = |pick: fn(&HeapMemory) -> u64| match &self.process {
            Ok(ProcessMemory { heap: Ok(h), .. }) => Ok(saturate(pick(h))),
            Ok(_) => Err(Unavailable::AllocatorUnreadable),
            Err(_) => Err(Unavailable::ProcessUnreadable),
        };
        [
            (c"alloc", bytes(self.alloc)),
            (c"total_alloc", bytes(self.total_alloc)),
            (c"sys", process(|p| p.sys)),
            (c"heap_alloc", bytes(self.alloc)),
            (c"heap_sys", heap(|h| h.heap_sys)),
            (c"heap_idle", heap(|h| h.heap_idle)),
            (c"heap_in_use", heap(|h| h.heap_in_use)),
            (c"heap_released", heap(|h| h.heap_released)),
            (c"heap_objects", bytes(self.heap_objects)),
            (c"stack_in_use", process(|p| p.stack_in_use)),
            (c"stack_sys", process(|p| p.stack_sys)),
            (c"mspan_in_use", heap(|h| h.mspan_in_use)),
            (c"mspan_sys", heap(|h| h.mspan_sys)),
            (c"num_gc", Ok(saturate(self.num_gc))),
            (c"next_gc", bytes(self.next_gc)),
            (c"mallocs", bytes(self.mallocs)),
            (c"frees", bytes(self.frees)),
            (c"last_gc", Ok(saturate(self.last_gc))),
            (c"gc_percent", self.gc_percent),
            (c"gc_percent_effective", self.gc_percent_effective),
            (c"rss", process(|p| p.rss)),
            (c"process_age_ns", process(|_| 0).map(|_| saturate(self.process_age.as_nanos() as u64))),
        ]
    }

    /// Writes the Lua table: integer fields, the text fields `accounting` and `process_source`,
    /// and `unavailable = { field = reason, ... }` when something is missing.
    ///
    /// Runs under `lua_pcall` (see `TableWriter`): nothing here owns a destructor.
    pub(crate) fn write(&self, table: &mut TableWriter) {
        let fields = self.integer_fields();
        let mut missing = false;
        for (name, value) in &fields {
            match value {
                Ok(value) => table.integer(name, *value),
                Err(_) => {
                    table.nil(name);
                    missing = true;
                }
            }
        }
        table.text(c"accounting", self.accounting.as_str());
        match &self.process {
            Ok(ProcessMemory { heap: Ok(heap), .. }) => table.text(c"process_source", heap.source),
            _ => table.nil(c"process_source"),
        }
        if !missing {
            table.nil(c"unavailable");
        } else {
            table.table(c"unavailable", |reasons| {
                for (name, value) in &fields {
                    match value {
                        Err(Unavailable::ProcessUnreadable) => match &self.process {
                            Err(error) => reasons.text(name, error.as_str()),
                            Ok(_) => reasons.text(name, Unavailable::ProcessUnreadable.reason()),
                        },
                        Err(Unavailable::AllocatorUnreadable) => match &self.process {
                            Ok(ProcessMemory { heap: Err(error), .. }) => reasons.text(name, error.as_str()),
                            _ => reasons.text(name, Unavailable::AllocatorUnreadable.reason()),
                        },
                        Err(why) => reasons.text(name, why.reason()),
                        Ok(_) => {}
                    }
                }
            });
        }
    }
}

/// The state's heap is part of the process heap, so statistics reporting less in use than the
/// state holds describe another allocator than the one serving the state (glibc's figures
/// while `LD_PRELOAD` or valgrind replaced `malloc`, for instance). They are then declared
/// unreadable rather than reported wrong.
fn covers_state(mut process: ProcessMemory, alloc: Figure<u64>) -> ProcessMemory {
    if let (Ok(heap), Ok(alloc)) = (process.heap, alloc)
        && heap.heap_in_use < alloc
    {
        process.heap = Err(text!(
            "the {} statistics report {} bytes in use, less than the {alloc} this state holds: \
             the allocator serving this state is another one (LuaJIT's own, an LD_PRELOAD one, \
             valgrind's)",
            heap.source,
            heap.heap_in_use
        ));
    }
    process
}

/// Lua integers are signed 64-bit; no byte count gets near 2^63, but never wrap.
fn saturate(value: u64) -> i64 {
    value.min(i64::MAX as u64) as i64
}

fn unavailable(call: &Call<'_>, why: Unavailable) -> Text {
    text!("{}: unavailable: {}", call.name(), why.reason())
}

/// `system.mem_stats([t])`: the table described in the README; given a table `t`, fills it
/// instead of making a new one (no garbage when called in a loop), and returns it.
pub(crate) fn mem_stats(call: &Call<'_>) -> Result<Reply, Text> {
    let refill = match call.arg(1) {
        Arg::Absent | Arg::Nil => false,
        Arg::Other("table") => true,
        other => {
            return Err(args::bad_argument(call, 1, format_args!("table expected, got {}", other.type_name())));
        }
    };
    Ok(Reply::Stats(MemStats::read(call.data(), &call.collector()), refill))
}

/// `system.allocated()`: live bytes of the state's heap, in O(1).
pub(crate) fn allocated(call: &Call<'_>) -> Result<Reply, Text> {
    let data = call.data();
    let bytes = match data.owned_live_bytes() {
        Some(bytes) => bytes,
        None => call.collector().heap_bytes().map_err(|Busy| unavailable(call, Unavailable::CollectorBusy))?,
    };
    Ok(Reply::Integer(saturate(bytes)))
}

/// `system.heap_objects()`: live blocks of the state's heap, in O(1).
pub(crate) fn heap_objects(call: &Call<'_>) -> Result<Reply, Text> {
    let data = call.data();
    if !data.counts_every_block() {
        return Err(unavailable(call, Unavailable::NotOurAllocator));
    }
    let heap = data.heap.figures();
    Ok(Reply::Integer(saturate(heap.mallocs - heap.frees)))
}
