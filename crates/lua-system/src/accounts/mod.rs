//! What the module's allocator and hooks write for a state, on the hot path: plain counters,
//! safe Rust, below the unsafe layer that writes them (`ffi/`).
//!
//! * `heap.rs`: the heap's accounts (bytes, blocks, the memory limit, the peak between cycles).
//! * `heap_sampler.rs`: the heap profiler's samples and their stacks.
//! * `cpu_budget.rs`: the CPU time a state's Lua code may use, and what it has used.
//! * `running.rs`: which of a state's Lua threads runs now.

pub(crate) mod cpu_budget;
pub(crate) mod heap;
pub(crate) mod heap_sampler;
pub(crate) mod running;
