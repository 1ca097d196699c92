//! The only place with `unsafe` code: the Lua C API, the allocator statistics, `pthread_atfork`.
//!
//! * [`call`]: the trampoline every module function runs through: it reads the arguments,
//!   catches panics and pushes the `value, err` pair.
//! * [`alloc`]: the `lua_Alloc` function that accounts a state's allocations.
//! * [`allocator`]: statistics of the process allocator (jemalloc or glibc).
//! * [`collector`]: `lua_gc`, and how each Lua version encodes the collector's parameters.
//! * [`coroutines`]: counting coroutines where the allocator cannot see them.
//! * [`fork`]: a handler run in children after `fork` (the pid cache).
//! * [`state`]: creating and closing states, building the module table, the cycle sentinel.
//!
//! Everything outside this directory is safe Rust.
//!
//! Lua raises errors with `longjmp`. Rust allows a `longjmp` only over frames that own nothing
//! to drop, so every Lua call that can raise runs either under `lua_pcall` or at a point where
//! the Rust frames in between hold only `Copy` data.

pub(crate) mod alloc;
pub(crate) mod allocator;
pub(crate) mod call;
pub(crate) mod collector;
pub(crate) mod coroutines;
pub(crate) mod fork;
pub(crate) mod state;

pub(crate) use call::{Arg, Call, Reply};
pub(crate) use collector::Collector;
