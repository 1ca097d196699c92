//! The only place with `unsafe` code: the Lua C API, the allocators (and the block bitmap of
//! interposed states), the allocator statistics, `pthread_atfork`. The crate root denies
//! `unsafe_code` everywhere else, but for the entry points that are unsafe by contract
//! (docs/design.md names them).
//!
//! * [`call`]: the trampoline every module function runs through: reads the arguments, catches
//!   panics, pushes the `value, err` pair.
//! * [`lua_alloc`]: the `lua_Alloc` functions that account a state's allocations.
//! * [`states`]: creating and closing the states the module makes; finding a state's record.
//! * [`foreign`]: loading the module into states made elsewhere (interpreters, mlua, C hosts).
//! * [`heap_profiler`]: starting the heap profiler in a state, the running coroutine.
//! * [`stack_walk`]: the Lua stack of a sampled allocation, read inside the allocator.
//! * [`running`]: which thread of a state runs (`coroutine.resume` and `wrap` behind the
//!   module's).
//! * [`stand_in`]: functions standing in for another (`collectgarbage` under permissions,
//!   `os.exit` with a host's last step), Rust code around the call.
//! * [`thread`]: a state's main thread; LuaJIT's compiler turned off.
//! * [`loader`]: `require("system")`: building the module table and putting it in place.
//! * [`block_set`]: the blocks an interposed state's allocator has seen (an address bitmap).
//! * `arena`: a limited state's own jemalloc arena, which bounds what it keeps resident
//!   (feature `jemalloc`).
//! * [`budget_hook`]: what enforces a state's CPU budget: a timer, and the hook it sets.
//! * [`cpu_timer`]: a timer on a thread's CPU time, which interrupts it with a signal.
//! * [`sentinel`]: the object every collection cycle finalizes once (cycle counting).
//! * [`emergency`]: the emergency collections (no finalizers run in them) a refused allocation
//!   leads to, seen by the allocator when Lua asks again.
//! * [`collector`]: `lua_gc`, and the requests each Lua version takes for its settings.
//! * [`internals`]: the collector's own figures in Lua's global state, checked before use.
//! * [`params`]: how each Lua version stores the collector's parameters.
//! * [`coroutines`]: counting coroutines (the set of their blocks the allocator keeps), and
//!   whether each is still alive.
//! * [`protected`]: running a C function under `lua_pcall` without allocating first.
//! * [`allocator_stats`]: statistics of the process allocator (jemalloc or glibc).
//! * [`fork`]: a handler run in children after `fork` (the pid cache).
//! * [`panic`]: what happens on an error outside any protected call.
//!
//! The layer imports only what lies below it (`accounts/`: [`Heap`], the heap sampler, the CPU
//! budget; the leaves: [`Text`](crate::text::Text), faults, address tables, the heap profile's
//! frames; `tests/layers.rs` checks it): what it needs from the module's record of a state is
//! the [`Record`] trait, which `state/mod.rs` implements, and what it needs from the registry
//! of functions is [`call::Module`], which `functions/mod.rs` implements.
//!
//! Lua raises errors with `longjmp`. Rust allows a `longjmp` only over frames that own nothing
//! to drop, so every Lua call that can raise runs either under a protected call or at a point
//! where the Rust frames in between hold only `Copy` data.
//!
//! Every C function the module hands to Lua (module functions, stand-ins, loaders, finalizers,
//! helpers run under `lua_pcall`) has no upvalue holding a pointer, and checks what it reads: its
//! upvalues (a number, a value it only calls as any function is called), its arguments (helpers:
//! the data armed for them, of their type), the registry entries it relies on (a script can
//! replace any of them). A script that gets hold of one through `debug`, or changes its upvalues,
//! can call it with anything, and nothing breaks. No Rust closure of mlua's is handed to Lua
//! (mlua's trampoline trusts its upvalue, a userdata whose `__gc` a script can call), and nothing
//! the module runs while a script runs calls into mlua (its helpers, pushed for `lua_pcall`,
//! trust their argument, and a call hook catches them).

pub(crate) mod allocator_stats;
#[cfg(feature = "jemalloc")]
pub(crate) mod arena;
pub(crate) mod block_set;
pub(crate) mod budget_hook;
pub(crate) mod call;
pub(crate) mod collector;
pub(crate) mod coroutines;
pub(crate) mod cpu_timer;
pub(crate) mod emergency;
pub(crate) mod foreign;
pub(crate) mod fork;
pub(crate) mod heap_profiler;
pub(crate) mod internals;
pub(crate) mod loader;
pub(crate) mod lua_alloc;
pub(crate) mod panic;
pub(crate) mod params;
pub(crate) mod protected;
pub(crate) mod running;
pub(crate) mod sentinel;
pub(crate) mod stack_walk;
pub(crate) mod stand_in;
pub(crate) mod states;
pub(crate) mod thread;

pub(crate) use call::{Arg, Call};
pub(crate) use collector::Collector;

use crate::accounts::heap::Heap;

/// What the FFI layer needs from the module's record of a state (`state::StateRecord`).
///
/// The record lives at a fixed address from before the module counts the state's first block
/// until after its last: the state's allocator points to it, and every module function finds it
/// through the allocator (`lua_getallocf`), never through a value a script could reach.
pub(crate) trait Record: Sync + Sized + 'static {
    /// The accounts the allocator writes.
    fn heap(&self) -> &Heap;

    /// For a state created elsewhere: the allocator every request is passed on to.
    fn chain(&self) -> Option<&lua_alloc::Chain>;

    /// Whether the counts cover only the blocks seen allocated since the module was loaded
    /// (tracked one by one), rather than every block of the state.
    fn tracks_blocks(&self) -> bool;

    /// A collection cycle has completed (called from the cycle sentinel's finalizer).
    fn cycle_ended(&self, collector: &Collector);

    /// The state's cycle sentinel.
    fn sentinel(&self) -> &sentinel::SentinelState;

    /// The addresses of the state's live coroutine blocks.
    fn thread_blocks(&self) -> &coroutines::ThreadBlocks;

    /// Where the state's own arena is kept, made once it has a memory limit (feature
    /// `jemalloc`).
    #[cfg(feature = "jemalloc")]
    fn arena_slot(&self) -> &arena::ArenaSlot;

    /// The state's own arena, if it has one.
    #[cfg(feature = "jemalloc")]
    #[inline(always)]
    fn arena(&self) -> Option<&arena::Arena> {
        self.arena_slot().get()
    }

    /// The module was loaded into the state (`require`); called on every load.
    fn loaded(&self, collector: &Collector);

    /// Where the state's collector internals are, once checked.
    fn internals(&self) -> &internals::InternalsCache;

    /// The state's CPU budget (charged by [`budget_hook`]).
    fn cpu_budget(&self) -> &crate::accounts::cpu_budget::CpuBudget;

    /// The timer of the state's CPU budget.
    fn budget_timer(&self) -> &budget_hook::BudgetTimer;

    /// The state's heap profiler records (written by the sampling allocator).
    fn heap_sampler(&self) -> &crate::accounts::heap_sampler::HeapSampler;

    /// Which of the state's threads runs (once something tracks it).
    fn running_thread(&self) -> &crate::accounts::running::RunningThread;

    /// The state's watch for emergency collections (`emergency.rs`).
    fn emergencies(&self) -> &emergency::Emergencies;
}
