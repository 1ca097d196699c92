//! What the module keeps for each Lua state: the heap's accounts, the collector's record, how
//! the state is accounted, and what its scripts may do.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::cpu_budget::CpuBudget;
use crate::cycles::Cycles;
use crate::ffi::Collector;
use crate::ffi::internals::InternalsCache;
use crate::ffi::lua_alloc::Chain;
use crate::ffi::sentinel::SentinelState;
use crate::heap::Heap;
use crate::heap_sampler::HeapSampler;
use crate::permissions::Permissions;

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
pub(crate) struct StateData {
    heap: Heap,
    cycles: Cycles,
    mode: Mode,
    internals: InternalsCache,
    /// The cycle sentinel (`ffi/sentinel.rs`).
    sentinel: SentinelState,
    /// What scripts may do (`permissions.rs`), as bits: reading, changing.
    permissions: [AtomicU64; 2],
    /// How much CPU time its Lua code may use (`set_cpu_limit`).
    cpu_budget: CpuBudget,
    /// The heap profiler's samples (`heap_sampler.rs`).
    heap_sampler: HeapSampler,
}

impl StateData {
    /// The record of a state the module creates.
    pub(crate) fn exact() -> StateData {
        StateData::with_mode(Mode::Exact)
    }

    /// The record of a state made elsewhere, whose requests go on to `chain` and which holds
    /// `live_bytes` now.
    pub(crate) fn interposed(chain: Chain, live_bytes: u64) -> StateData {
        let data = StateData::with_mode(Mode::Interposed(chain));
        data.heap.start_from(live_bytes, 0);
        data
    }

    /// The record of a state whose requests go on to `chain` and which holds exactly
    /// `live_bytes` in `blocks` blocks now: every block is counted from here.
    pub(crate) fn chained(chain: Chain, live_bytes: u64, blocks: u64) -> StateData {
        let data = StateData::with_mode(Mode::Chained(chain));
        data.heap.start_from(live_bytes, blocks);
        data
    }

    fn with_mode(mode: Mode) -> StateData {
        StateData {
            heap: Heap::new(),
            cycles: Cycles::new(),
            mode,
            internals: InternalsCache::default(),
            sentinel: SentinelState::default(),
            permissions: Self::permission_bits(Permissions::default()),
            cpu_budget: CpuBudget::default(),
            heap_sampler: HeapSampler::new(),
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

    fn permission_bits(permissions: Permissions) -> [AtomicU64; 2] {
        let bits = permissions.to_bits();
        [AtomicU64::new(bits as u64), AtomicU64::new((bits >> 64) as u64)]
    }

    pub(crate) fn permissions(&self) -> Permissions {
        let [read, change] = &self.permissions;
        Permissions::from_bits(u128::from(read.load(Relaxed)) | (u128::from(change.load(Relaxed)) << 64))
    }

    pub(crate) fn set_permissions(&self, permissions: Permissions) {
        let bits = permissions.to_bits();
        self.permissions[0].store(bits as u64, Relaxed);
        self.permissions[1].store((bits >> 64) as u64, Relaxed);
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
        let _ = crate::gc::current_percent(self, collector);
        self.cycles.set_initial_base(self.heap.live_bytes());
    }
}

impl crate::ffi::Record for StateData {
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

    fn loaded(&self, collector: &Collector) {
        StateData::loaded(self, collector);
    }

    fn internals(&self) -> &InternalsCache {
        &self.internals
    }

    fn cpu_budget(&self) -> &CpuBudget {
        StateData::cpu_budget(self)
    }

    fn heap_sampler(&self) -> &HeapSampler {
        StateData::heap_sampler(self)
    }
}
