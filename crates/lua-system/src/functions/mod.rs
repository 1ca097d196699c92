//! What scripts call: the Lua-visible table `system`. [`FUNCTIONS`] is its registry, one line
//! per function like a `luaL_Reg` array, with what the function does (for permissions,
//! `permissions.rs`). Each function lives in the file named after its concern; every answer
//! and failure is formatted in `answer.rs`, every argument checked in `args.rs`. The module
//! table, the permission profiles and the fuzz target all follow this list.

pub(crate) mod answer;
pub(crate) mod args;
mod gc;
mod identity;
mod limit;
pub(crate) use limit::{LUAJIT_INTERPOSED, STOCK_LUAJIT};
mod memory;
mod metrics;
pub(crate) mod permissions;
mod profiler;
mod runtime;

use std::ffi::CStr;

use crate::ffi::Call;
use crate::state::StateRecord;
use crate::text::Text;
use answer::{Failure, Reply};

/// What a function does, for permissions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Reads figures of the state or the process.
    Reads,
    /// Reads the host's identity (host name, process id).
    Identifies,
    /// Changes something: the collector, a limit.
    Changes,
    /// Reads when called without an argument, changes when called with one.
    ReadsOrChanges,
}

/// A module function: reads its arguments from the [`Call`], answers a [`Reply`] or a
/// [`Failure`].
pub(crate) type Function = fn(&Call<'_, StateRecord>) -> Result<Reply, Failure>;

/// One line of the registry.
pub(crate) struct Entry {
    pub name: &'static CStr,
    pub function: Function,
    pub kind: Kind,
}

const fn entry(name: &'static CStr, function: Function, kind: Kind) -> Entry {
    Entry { name, function, kind }
}

#[rustfmt::skip]
pub(crate) static FUNCTIONS: &[Entry] = &[
    // Memory (memory.rs)
    entry(c"mem_stats",        memory::mem_stats,       Kind::Reads),
    entry(c"allocated",        memory::allocated,       Kind::Reads),
    entry(c"heap_objects",     memory::heap_objects,    Kind::Reads),
    // Garbage collector (gc.rs)
    entry(c"gc",               gc::gc,                  Kind::Changes),
    entry(c"set_gc_percent",   gc::set_gc_percent,      Kind::Changes),
    entry(c"get_gc_percent",   gc::get_gc_percent,      Kind::Reads),
    // Runtime (runtime.rs)
    entry(c"num_goroutines",   runtime::num_goroutines, Kind::Reads),
    entry(c"go_max_procs",     runtime::go_max_procs,   Kind::ReadsOrChanges),
    entry(c"num_cpu",          runtime::num_cpu,        Kind::Reads),
    // The host's identity (identity.rs)
    entry(c"hostname",         identity::hostname,      Kind::Identifies),
    entry(c"pid",              identity::pid,           Kind::Identifies),
    // Not in the spec: the memory limit (limit.rs), Go's debug.SetMemoryLimit
    entry(c"set_memory_limit", limit::set_memory_limit, Kind::Changes),
    entry(c"get_memory_limit", limit::get_memory_limit, Kind::Reads),
    // Not in the spec: monitoring (metrics.rs)
    entry(c"metrics",          metrics::metrics,        Kind::Reads),
    // Not in the spec: the heap profiler (profiler.rs), Go's MemProfileRate and WriteHeapProfile
    entry(c"set_heap_profile_rate", profiler::set_heap_profile_rate, Kind::Changes),
    entry(c"write_heap_profile",    profiler::write_heap_profile,    Kind::Changes),
];

/// Whether the call changes something: always for [`Kind::Changes`], with an argument for
/// [`Kind::ReadsOrChanges`].
fn changes(kind: Kind, call: &Call<'_, StateRecord>) -> bool {
    match kind {
        Kind::Changes => true,
        Kind::ReadsOrChanges => !call.lacks(1),
        Kind::Reads | Kind::Identifies => false,
    }
}

/// The name of function `index` for messages: `system` when there is none.
fn name(index: usize) -> &'static str {
    FUNCTIONS.get(index).and_then(|entry| entry.name.to_str().ok()).unwrap_or("system")
}

/// The registry as the trampoline sees it.
pub(crate) struct Module;

impl crate::ffi::call::Module for Module {
    type Record = StateRecord;
    type Value = Reply;
    type Failure = Failure;

    fn names() -> impl Iterator<Item = &'static CStr> {
        FUNCTIONS.iter().map(|entry| entry.name)
    }

    // Every call goes through here: nothing is formatted, and the function's name is not even
    // looked at, unless the call fails (`message`). Reading the name (a UTF-8 check) and mapping
    // every answer to a message (a copy of the whole answer) on every call made a cheap call
    // cost more than a whole `collectgarbage("count")` (bench/cost-gate).
    fn run(call: &Call<'_, StateRecord>, index: usize) -> Result<Reply, Failure> {
        let Some(entry) = FUNCTIONS.get(index) else {
            return Err(Failure::Failed(crate::text::text!("not a function of the module")));
        };
        if crate::faults::active(crate::faults::Fault::Panic) {
            panic!("injected fault in {}", name(index));
        }
        if call.record().permits(index, changes(entry.kind, call)) {
            (entry.function)(call)
        } else {
            Err(Failure::Denied)
        }
    }

    fn message(index: usize, failure: &Failure) -> Text {
        failure.message(name(index))
    }

    fn failed(index: usize, what: &str) -> Text {
        Failure::Failed(crate::text::text!("{what}")).message(name(index))
    }
}
