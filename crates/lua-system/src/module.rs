//! The Lua-visible table `system`: one line per function, like a `luaL_Reg` array.
//! Each function lives in the file named after its concern.

use crate::ffi::call::Entry;
use crate::{gc, host, memory, runtime};

pub(crate) static FUNCTIONS: &[Entry] = &[
    // Memory (memory.rs)
    Entry { name: c"mem_stats", function: memory::mem_stats },
    Entry { name: c"allocated", function: memory::allocated },
    Entry { name: c"heap_objects", function: memory::heap_objects },
    // Garbage collector (gc.rs)
    Entry { name: c"gc", function: gc::gc },
    Entry { name: c"set_gc_percent", function: gc::set_gc_percent },
    Entry { name: c"get_gc_percent", function: gc::get_gc_percent },
    // Runtime (runtime.rs)
    Entry { name: c"num_goroutines", function: runtime::num_goroutines },
    Entry { name: c"go_max_procs", function: runtime::go_max_procs },
    Entry { name: c"num_cpu", function: runtime::num_cpu },
    // Host (host.rs)
    Entry { name: c"hostname", function: host::hostname },
    Entry { name: c"pid", function: host::pid },
];
