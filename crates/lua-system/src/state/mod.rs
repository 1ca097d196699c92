//! What the module keeps for each Lua state: its record ([`StateRecord`]), which holds the
//! heap's accounts (`accounts/`), the collector's record (`cycles.rs`), how the state is
//! accounted, and what its scripts may do.
//!
//! This layer sits above `ffi/` and below the figures and functions: the record implements
//! [`ffi::Record`](crate::ffi::Record), which is all the unsafe layer knows of it.

pub(crate) mod cycles;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use crate::accounts::cpu_budget::CpuBudget;
use crate::accounts::heap::Heap;
use crate::accounts::heap_sampler::HeapSampler;
use crate::accounts::running::RunningThread;
use crate::ffi::Collector;
use crate::ffi::coroutines::ThreadBlocks;
use crate::ffi::internals::InternalsCache;
use crate::ffi::lua_alloc::Chain;
use crate::ffi::sentinel::SentinelState;
use cycles::Cycles;

/// Which blocks of a state the module's counts cover.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Accounting {
    /// The module's allocator has served the state since its first byte
    /// ([`SystemLua`](crate::SystemLua), the `lua-system` runner): every block is counted.
    Exact,
    /// The state was made elsewhere (an interpreter loading `system.so`, `mlua::Lua::new()`, a
    /// C host) and the module put its allocator in front of the state's own when it was first
    /// loaded. Bytes in use are exact (counted from Lua's own total at the load); block counts
    /// and cumulative bytes cover the blocks allocated since the load, as Python's tracemalloc
    /// covers those allocated since tracing started (README, "Accounting modes").
    Interposed,
}

impl Accounting {
    /// The name scripts see in `mem_stats().accounting`.
    pub fn as_str(self) -> &'static str {
        match self {
            Accounting::Exact => "exact",
            Accounting::Interposed => "interposed",
        }
    }
}

/// How the state's allocations reach the module: each mode's allocator function is a different
/// one (`ffi/lua_alloc.rs`).
pub(crate) enum Mode {
    /// The module's allocator serves every block: [`Accounting::Exact`].
    Exact,
    /// The state's own allocator serves, the module counts every block (its counts started from
    /// the state's exact figures when it took over): [`Accounting::Exact`].
    Chained(Chain),
    /// The state's own allocator serves, the module counts the blocks allocated since it was
    /// loaded: [`Accounting::Interposed`].
    Interposed(Chain),
}

/// The per-state record. Lives at a fixed address from before the module counts the state's
/// first block until after its last: the allocator and every module function point to it.
pub(crate) struct StateRecord {
    heap: Heap,
    cycles: Cycles,
    mode: Mode,
    internals: InternalsCache,
    /// The cycle sentinel (`ffi/sentinel.rs`).
    sentinel: SentinelState,
    /// The addresses of live coroutine blocks (`ffi/coroutines.rs`).
    thread_blocks: ThreadBlocks,
    /// The state's own jemalloc arena, once it has a memory limit (`ffi/arena.rs`).
    #[cfg(feature = "jemalloc")]
    arena: crate::ffi::arena::ArenaSlot,
    /// What scripts may do, one bit per function of the registry (`functions/permissions.rs`
    /// makes them): may read, may change.
    permissions: [AtomicU64; 2],
    /// The metric families `system.metrics()` may show, one bit per family: those some
    /// permitted function reports too (`functions/permissions.rs`).
    visible_families: AtomicU32,
    /// How much CPU time its Lua code may use (`set_cpu_limit`).
    cpu_budget: CpuBudget,
    /// The timer that tells the budget is due (`ffi/budget_hook.rs`).
    budget_timer: crate::ffi::budget_hook::BudgetTimer,
    /// The heap profiler's samples (`accounts/heap_sampler.rs`).
    heap_sampler: HeapSampler,
    /// Which of its threads runs (`accounts/running.rs`).
    running_thread: RunningThread,
    /// Its emergency collections, seen from the allocator (`ffi/emergency.rs`).
    emergencies: crate::ffi::emergency::Emergencies,
}

impl StateRecord {
    /// The record of a state the module creates.
    pub(crate) fn exact() -> StateRecord {
        StateRecord::with_mode(Mode::Exact)
    }

    /// The record of a state made elsewhere, whose requests go on to `chain` and which holds
    /// `live_bytes` now.
    pub(crate) fn interposed(chain: Chain, live_bytes: u64) -> StateRecord {
        let data = StateRecord::with_mode(Mode::Interposed(chain));
        data.heap.start_from(live_bytes, 0);
        data
    }

    /// The record of a state whose requests go on to `chain` and which holds exactly
    /// `live_bytes` in `blocks` blocks now: every block is counted from here.
    pub(crate) fn chained(chain: Chain, live_bytes: u64, blocks: u64) -> StateRecord {
        let data = StateRecord::with_mode(Mode::Chained(chain));
        data.heap.start_from(live_bytes, blocks);
        data
    }

    fn with_mode(mode: Mode) -> StateRecord {
        StateRecord {
            heap: Heap::new(),
            cycles: Cycles::new(),
            mode,
            internals: InternalsCache::default(),
            sentinel: SentinelState::default(),
            thread_blocks: ThreadBlocks::default(),
            #[cfg(feature = "jemalloc")]
            arena: Default::default(),
            // Everything, until a host sets permissions.
            permissions: [AtomicU64::new(u64::MAX), AtomicU64::new(u64::MAX)],
            visible_families: AtomicU32::new(u32::MAX),
            cpu_budget: CpuBudget::default(),
            budget_timer: Default::default(),
            heap_sampler: HeapSampler::new(),
            running_thread: RunningThread::default(),
            emergencies: Default::default(),
        }
    }

    pub(crate) fn heap(&self) -> &Heap {
        &self.heap
    }

    pub(crate) fn cycles(&self) -> &Cycles {
        &self.cycles
    }

    pub(crate) fn cpu_budget(&self) -> &CpuBudget {
        &self.cpu_budget
    }

    pub(crate) fn heap_sampler(&self) -> &HeapSampler {
        &self.heap_sampler
    }

    pub(crate) fn accounting(&self) -> Accounting {
        match self.mode {
            Mode::Exact | Mode::Chained(_) => Accounting::Exact,
            Mode::Interposed(_) => Accounting::Interposed,
        }
    }

    /// Whether function `index` of the registry may be called, to change something (`change`)
    /// or only to read.
    #[inline]
    pub(crate) fn permits(&self, index: usize, change: bool) -> bool {
        index < 64 && self.permissions[change as usize].load(Relaxed) & (1 << index) != 0
    }

    /// The permission bits: may read, may change.
    pub(crate) fn permission_bits(&self) -> [u64; 2] {
        [self.permissions[0].load(Relaxed), self.permissions[1].load(Relaxed)]
    }

    /// Sets the permission bits, and the metric families they leave visible.
    pub(crate) fn set_permission_bits(&self, [read, change]: [u64; 2], visible_families: u32) {
        self.permissions[0].store(read, Relaxed);
        self.permissions[1].store(change, Relaxed);
        self.visible_families.store(visible_families, Relaxed);
    }

    /// The metric families `system.metrics()` may show, one bit per family.
    pub(crate) fn visible_families(&self) -> u32 {
        self.visible_families.load(Relaxed)
    }

    /// Called when the module is loaded into the state; the first time, the collector's current
    /// percent becomes the remembered one (a host may have tuned it), and the heap now is the
    /// base of `next_gc` until the first cycle ends.
    pub(crate) fn loaded(&self, collector: &Collector) {
        if !self.cycles.mark_loaded() {
            return;
        }
        if let Ok(percent) = collector.percent(self.cycles.requested_percent()) {
            self.cycles.set_requested_percent(percent);
        }
        // Busy (Lua runs finalizers): the record keeps the default until the next refresh.
        let _ = self.cycles.refresh_setting(collector, self.heap.live_bytes());
        self.cycles.set_initial_base(self.heap.live_bytes());
    }
}

impl crate::ffi::Record for StateRecord {
    fn heap(&self) -> &Heap {
        &self.heap
    }

    fn chain(&self) -> Option<&Chain> {
        match &self.mode {
            Mode::Chained(chain) | Mode::Interposed(chain) => Some(chain),
            Mode::Exact => None,
        }
    }

    fn tracks_blocks(&self) -> bool {
        matches!(self.mode, Mode::Interposed(_))
    }

    fn cycle_ended(&self, collector: &Collector) {
        let live = self.heap.live_bytes();
        let peak = self.heap.take_peak();
        // The threshold Lua sets once this cycle's finalizers have run: from its own estimate
        // where the internals are usable, otherwise from the heap now.
        let stopped = self.cycles.cached_effective_percent() < 0;
        let next = collector.threshold_after_cycle().filter(|_| !stopped);
        self.cycles.record(live, peak, self.heap.figures().objects(), next);
    }

    fn sentinel(&self) -> &SentinelState {
        &self.sentinel
    }

    fn thread_blocks(&self) -> &ThreadBlocks {
        &self.thread_blocks
    }

    #[cfg(feature = "jemalloc")]
    fn arena_slot(&self) -> &crate::ffi::arena::ArenaSlot {
        &self.arena
    }

    fn loaded(&self, collector: &Collector) {
        StateRecord::loaded(self, collector);
    }

    fn internals(&self) -> &InternalsCache {
        &self.internals
    }

    fn cpu_budget(&self) -> &CpuBudget {
        StateRecord::cpu_budget(self)
    }

    fn budget_timer(&self) -> &crate::ffi::budget_hook::BudgetTimer {
        &self.budget_timer
    }

    fn heap_sampler(&self) -> &HeapSampler {
        StateRecord::heap_sampler(self)
    }

    fn running_thread(&self) -> &RunningThread {
        &self.running_thread
    }

    fn emergencies(&self) -> &crate::ffi::emergency::Emergencies {
        &self.emergencies
    }
}
