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
//! The crate is in layers, one folder each, every import pointing down (`tests/layers.rs`
//! checks it):
//!
//! | folder | what it holds |
//! |---|---|
//! | `export/` | many states' figures and profiles for Prometheus and pprof, the HTTP server |
//! | `host/` | for Rust hosts: [`SystemLua`], [`install()`], [`sandbox()`], [`Probe`] |
//! | `functions/` | what scripts call: the registry, one file per concern, answers, arguments, permissions |
//! | `figures/` | the figure types: [`MemStats`], [`Metrics`] |
//! | `state/` | the module's record of a state: how it is accounted, its collection cycles, permissions |
//! | `process/` | the process: its memory, the CPU limit behind `go_max_procs` |
//! | `ffi/` | the only unsafe code (the compiler holds it there): the Lua C API, the allocators, the trampoline |
//! | `accounts/` | what the allocator and hooks write: heap accounts, heap samples, CPU budget |
//! | leaves | `text.rs`, `faults.rs`, `address_hash.rs`, [`heap_profile`](mod@heap_profile) (the profile and its formats) |
//!
//! [mlua]: https://docs.rs/mlua

#![warn(missing_docs)]
#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod accounts;
mod address_hash;
mod export;
mod faults;
#[allow(unsafe_code)] // the one place for it
mod ffi;
mod figures;
mod functions;
pub mod heap_profile;
mod host;
mod process;
mod state;
mod text;

pub use accounts::heap_sampler::DEFAULT_RATE as DEFAULT_HEAP_PROFILE_RATE;
#[cfg(feature = "http")]
pub use export::http_server::{MetricsServer, serve};
pub use export::watched_states::{Labels, WatchedStates};
#[cfg(feature = "fault-injection")]
pub use faults::{Fault, inject as inject_fault};
pub use figures::mem_stats::{Figure, MemStats, Unavailable};
pub use figures::metrics::{InvalidLabel, Metrics};
pub use functions::permissions::{Permissions, Profile, UnknownFunction};
pub use host::install::{
    MemoryReserve, gc_percent, heap_profile, install, mark_forced_collection, mem_stats, memory_limit, memory_reserve,
    permissions, refresh_gc_setting, set_heap_profile_rate, set_memory_limit, set_permissions,
};
pub use host::probe::{Probe, Sample, SampleEvent};
pub use host::sandbox::{
    SANDBOX_CPU_LIMIT, SANDBOX_MEMORY_LIMIT, cpu_limit, cpu_limit_exceeded, cpu_used, sandbox, set_cpu_limit,
};
pub use host::stand_ins::{Exiting, on_exit, track_collectgarbage};
pub use host::system_lua::SystemLua;
pub use mlua;
pub use process::max_procs::{
    MAX_PROCS_CAP, SetMaxProcsError, Subscription, max_procs, num_cpu, on_max_procs_change, set_max_procs,
};
pub use process::memory::{HeapMemory, ProcessMemory, read as process_memory, set_process_sample_interval};
pub use state::Accounting;
pub use state::cycles::{Cycle, CycleHook, NextGcSource};
pub use text::Text;

/// `luaopen_system` for `system.so` (crates/lua-system-module): the module in a state an
/// interpreter created.
///
/// # Safety
/// Called by Lua's `require` with a running state.
#[cfg(feature = "module")]
#[doc(hidden)]
#[allow(unsafe_code)] // the entry point C calls, unsafe by nature; its body is ffi's
pub unsafe extern "C-unwind" fn luaopen_system(l: *mut mlua::ffi::lua_State) -> std::ffi::c_int {
    // SAFETY: per the contract.
    unsafe { ffi::foreign::open::<functions::Module>(l, state::StateRecord::interposed) }
}

/// Reports an emergency collection of `l`'s state that has just ended: for a host that links
/// Lua 5.2 to 5.5 statically with `luaC_fullgc` wrapped (`-Wl,--wrap=luaC_fullgc`), calling this
/// after the real one when its `isemergency` is true, as the runner does
/// (crates/lua-system-cli/c/emergency.c). Lua runs such a collection when an allocation is
/// refused, and runs no finalizers in it, so the module's cycle sentinel cannot see it: without
/// this, `num_gc` counts it only with the next cycle, as one (docs/figures.md).
///
/// # Safety
/// `l` is a running thread of a live state, on the thread running it, right after Lua's
/// emergency collection returned; nothing else of Lua runs meanwhile.
#[allow(unsafe_code)] // called from C with Lua's own pointer; its body is ffi's
pub unsafe fn emergency_collection_ended(l: *mut mlua::ffi::lua_State) {
    // SAFETY: per the contract.
    unsafe { ffi::sentinel::emergency_collection_ended::<state::StateRecord>(l) }
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
