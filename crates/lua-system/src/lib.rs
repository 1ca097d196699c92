//! The Lua module `system`: memory statistics, garbage-collector control, parallelism, CPU
//! count, hostname and process id, for Lua states embedded with [mlua].
//!
//! Scripts written for the Go original run unchanged: eleven functions, each returning
//! `value, nil` on success and `nil, message` on failure. The Go runtime of the original is,
//! here, the calling Lua state (its heap and collector) and the process it runs in; the README
//! maps every function and `mem_stats()` field.
//!
//! ```
//! # fn main() -> mlua::Result<()> {
//! let lua = lua_system::SystemLua::new()?;
//! lua.load(r#"
//!     local system = require("system")
//!     local before = system.mem_stats().num_gc
//!     assert(system.gc())
//!     assert(system.mem_stats().num_gc > before)
//!     local previous = system.set_gc_percent(50)   -- Go's GOGC; returns the previous one
//!     assert(previous >= 0 and system.get_gc_percent() == 50)
//!     local ok, err = system.set_gc_percent("fast")
//!     assert(ok == nil and err:find("bad argument #1 to 'set_gc_percent'"))
//! "#).exec()?;
//! let stats = lua.mem_stats()?;
//! assert!(stats.alloc > 0 && stats.heap_objects > 0);
//! # Ok(())
//! # }
//! ```
//!
//! For a state created elsewhere, [`install`] adds the module, counting from then on. The
//! process-wide CPU limit behind `go_max_procs` is available to Rust hosts through
//! [`max_procs`], [`set_max_procs`] and [`on_max_procs_change`].
//!
//! The crate is layered: the Lua-visible functions (`module.rs` lists them; `memory.rs`,
//! `gc.rs`, `runtime.rs`, `host.rs`, `limit.rs`, `metrics.rs`), then the per-state record
//! (`state_data.rs`: `heap.rs`, `cycles.rs`) and the process (`process_memory.rs`,
//! `cpu_limit.rs`), then `ffi/` at the bottom, the only unsafe code, which imports nothing above
//! it but leaf types.
//!
//! [mlua]: https://docs.rs/mlua

#![warn(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod address_hash;
mod answer;
mod args;
mod cpu_budget;
mod cpu_limit;
mod cycles;
mod faults;
mod ffi;
mod gc;
mod heap;
pub mod heap_profile;
mod heap_sampler;
mod host;
#[cfg(feature = "http")]
mod http_server;
mod limit;
mod memory;
mod metrics;
mod module;
mod permissions;
mod probe;
mod process_memory;
mod profiler;
mod runtime;
mod sandbox;
mod state_data;
mod stats;
mod system_lua;
mod text;
mod watched_states;

pub use cpu_limit::{
    MAX_PROCS_CAP, SetMaxProcsError, Subscription, max_procs, num_cpu, on_max_procs_change, set_max_procs,
};
pub use cycles::{Cycle, CycleHook};
#[cfg(feature = "fault-injection")]
pub use faults::{Fault, inject as inject_fault};
pub use heap_sampler::DEFAULT_RATE as DEFAULT_HEAP_PROFILE_RATE;
#[cfg(feature = "http")]
pub use http_server::{MetricsServer, serve};
pub use limit::{MemoryReserve, memory_reserve};
pub use metrics::{InvalidLabel, Metrics};
pub use mlua;
pub use permissions::{Permissions, Profile, UnknownFunction};
pub use probe::{Probe, Sample, SampleEvent};
pub use process_memory::{HeapMemory, ProcessMemory, read as process_memory, set_process_sample_interval};
pub use sandbox::{
    SANDBOX_CPU_LIMIT, SANDBOX_MEMORY_LIMIT, cpu_limit, cpu_limit_exceeded, cpu_used, sandbox, set_cpu_limit,
};
pub use state_data::Accounting;
pub use stats::{Figure, MemStats, NextGcSource, Unavailable};
pub use system_lua::{
    SystemLua, gc_percent, heap_profile, install, mark_forced_collection, mem_stats, memory_limit, permissions,
    set_heap_profile_rate, set_memory_limit, set_permissions,
};
pub use text::Text;
pub use watched_states::{Labels, WatchedStates};

/// `luaopen_system` for `system.so` (crates/lua-system-module): the module in a state an
/// interpreter created.
///
/// # Safety
/// Called by Lua's `require` with a running state.
#[cfg(feature = "module")]
#[doc(hidden)]
pub unsafe extern "C-unwind" fn luaopen_system(l: *mut mlua::ffi::lua_State) -> std::ffi::c_int {
    // SAFETY: per the contract.
    unsafe { ffi::foreign::open::<module::Module>(l, state_data::StateData::interposed) }
}

/// jemalloc, for a host that wants `mem_stats()`'s process heap figures from it (feature
/// `jemalloc`): install it as the global allocator, and the figures come from its statistics
/// (docs/figures.md, "Process memory"). The library never installs it itself.
///
/// ```ignore
/// #[global_allocator]
/// static GLOBAL: lua_system::Jemalloc = lua_system::Jemalloc;
/// ```
#[cfg(feature = "jemalloc")]
pub use tikv_jemallocator::Jemalloc;

/// The Rust examples of the README and of docs/rust.md, compiled and run as doctests so they
/// cannot rot (docs/rust.md's serve one: with the feature `http`, as `cargo test --workspace`
/// builds the library for the runner).
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
#[cfg_attr(feature = "http", doc = include_str!("../../../docs/rust.md"))]
struct DocumentedExamples;
