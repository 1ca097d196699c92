//! The process the states run in: its memory figures (`memory.rs`: the kernel's and the process
//! allocator's) and the process-wide CPU limit behind `go_max_procs` (`max_procs.rs`).

pub(crate) mod max_procs;
pub(crate) mod memory;
