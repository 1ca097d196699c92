//! What the module keeps for each Lua state it is installed in.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use crate::alloc::Heap;
use crate::ffi::Collector;
use crate::ffi::alloc::Chain;
use crate::ffi::collector::ANSWERS_DURING_FINALIZERS;
use crate::gc::GcState;
use crate::permissions::Permissions;

/// How much of a state's memory the module can see.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Accounting {
    /// The module's allocator has served the state since its first byte
    /// ([`SystemLua`](crate::SystemLua)): every figure is exact.
    Exact,
    /// An interpreter created the state and the module, loaded into it, put its allocator in
    /// front of the interpreter's (`system.so` in Lua 5.1 to 5.5). Exact from then on: bytes
    /// in use (counted from Lua's own total at load), cycles, coroutines created since; blocks
    /// allocated before the load cannot be counted, so block counts and cumulative bytes are
    /// unavailable.
    Interposed,
    /// The module reads what Lua itself reports (bytes in use, cycles, collector settings) and
    /// counts coroutines made by the coroutine library; block counts and cumulative bytes are
    /// unavailable, and so is `next_gc` where Lua does not report the heap during finalizers
    /// (5.4). Used where interposing is unsound: mlua's states ([`install`](crate::install)),
    /// whose allocator record mlua frees only if its allocator is still in place at close, and
    /// LuaJIT's (`system.so`), whose internal allocator is destroyed at close only if in place.
    Observed,
}

impl Accounting {
    /// The name scripts see in `mem_stats().accounting`.
    pub fn as_str(self) -> &'static str {
        match self {
            Accounting::Exact => "exact",
            Accounting::Interposed => "interposed",
            Accounting::Observed => "observed",
        }
    }
}

/// The per-state record. Lives at a fixed address from before the module is installed until
/// after the state is closed: the allocator and every module function point to it.
pub(crate) struct StateData {
    pub(crate) heap: Heap,
    pub(crate) gc: GcState,
    pub(crate) accounting: Accounting,
    /// For interposed states: the interpreter's allocator, which serves every block.
    pub(crate) chain: Option<Chain>,
    /// What scripts may do (`permissions.rs`), as bits.
    pub(crate) permissions: AtomicU32,
    /// For observed states mlua created: mlua's allocator enforces the memory limit.
    pub(crate) mlua_limit: bool,
}

impl StateData {
    pub(crate) fn new(accounting: Accounting) -> StateData {
        StateData {
            heap: Heap::new(),
            gc: GcState::new(),
            accounting,
            chain: None,
            permissions: AtomicU32::new(Permissions::default().to_bits()),
            mlua_limit: false,
        }
    }

    /// The record of a state whose allocator is `chain`, holding `live_bytes` now.
    pub(crate) fn interposed(chain: Chain, live_bytes: u64) -> StateData {
        let data = StateData { chain: Some(chain), ..StateData::new(Accounting::Interposed) };
        data.heap.set_initial_live_bytes(live_bytes);
        data
    }

    pub(crate) fn permissions(&self) -> Permissions {
        Permissions::from_bits(self.permissions.load(Relaxed))
    }

    pub(crate) fn set_permissions(&self, permissions: Permissions) {
        self.permissions.store(permissions.to_bits(), Relaxed);
    }

    /// Whether the allocator counts coroutines (see `ffi/coroutines.rs` for the other way).
    pub(crate) fn coroutines_by_allocator(&self) -> bool {
        crate::ffi::coroutines::ALLOCATOR_SEES_THREADS && self.accounting != Accounting::Observed
    }

    /// Bytes in use, when the module's own accounts hold them.
    pub(crate) fn owned_live_bytes(&self) -> Option<u64> {
        (self.accounting != Accounting::Observed).then(|| self.heap.live_bytes())
    }

    /// Whether every block of the state went through the module's allocator.
    pub(crate) fn counts_every_block(&self) -> bool {
        self.accounting == Accounting::Exact
    }

    /// Called once, when the module is first loaded into the state: the collector's current
    /// percent becomes the remembered one (a host may have tuned it), and the heap now is the
    /// base of `next_gc` until the first cycle ends.
    pub(crate) fn on_install(&self, collector: &Collector) {
        if let Ok(percent) = collector.percent(self.gc.requested_percent()) {
            self.gc.set_requested_percent(percent);
        }
        // Lua's count is a base only where the sentinel can also read it when cycles end.
        let lua_count = || ANSWERS_DURING_FINALIZERS.then(|| collector.heap_bytes().ok()).flatten();
        self.gc.set_initial_base(self.owned_live_bytes().or_else(lua_count));
    }

    /// Called by the cycle sentinel's finalizer. Where the module's accounts do not hold the
    /// heap size, Lua's count serves, in versions that answer during finalizers.
    pub(crate) fn on_cycle_end(&self, collector: &Collector) {
        let live = self.owned_live_bytes().or_else(|| collector.heap_bytes().ok());
        let peak = self.heap.take_peak();
        let figures = self.heap.figures();
        let objects = self.counts_every_block().then_some(figures.mallocs - figures.frees);
        self.gc.record_cycle(live, peak, objects);
    }
}
