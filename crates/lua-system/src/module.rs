//! The Lua-visible table `system`: one line per function, like a `luaL_Reg` array.
//! Each function lives in the file named after its concern.

use crate::ffi::call::Entry;
use crate::permissions::Operation as Op;
use crate::{gc, host, limit, memory, metrics, runtime};

pub(crate) static FUNCTIONS: &[Entry] = &[
    // Memory (memory.rs)
    Entry { name: c"mem_stats", function: memory::mem_stats, operation: Op::MemStats },
    Entry { name: c"allocated", function: memory::allocated, operation: Op::Allocated },
    Entry { name: c"heap_objects", function: memory::heap_objects, operation: Op::HeapObjects },
    // Garbage collector (gc.rs)
    Entry { name: c"gc", function: gc::gc, operation: Op::Gc },
    Entry { name: c"set_gc_percent", function: gc::set_gc_percent, operation: Op::SetGcPercent },
    Entry { name: c"get_gc_percent", function: gc::get_gc_percent, operation: Op::GetGcPercent },
    // Runtime (runtime.rs)
    Entry { name: c"num_goroutines", function: runtime::num_goroutines, operation: Op::NumGoroutines },
    Entry { name: c"go_max_procs", function: runtime::go_max_procs, operation: Op::GoMaxProcs },
    Entry { name: c"num_cpu", function: runtime::num_cpu, operation: Op::NumCpu },
    // Host (host.rs)
    Entry { name: c"hostname", function: host::hostname, operation: Op::Hostname },
    Entry { name: c"pid", function: host::pid, operation: Op::Pid },
    // Memory limit (limit.rs), Go's debug.SetMemoryLimit: not in the spec
    Entry { name: c"set_memory_limit", function: limit::set_memory_limit, operation: Op::SetMemoryLimit },
    Entry { name: c"get_memory_limit", function: limit::get_memory_limit, operation: Op::GetMemoryLimit },
    // Monitoring (metrics.rs): not in the spec
    Entry { name: c"metrics", function: metrics::metrics, operation: Op::Metrics },
];
