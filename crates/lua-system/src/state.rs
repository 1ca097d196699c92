//! What the module keeps for each Lua state it is installed in.

use crate::alloc::Heap;
use crate::ffi::Collector;
use crate::gc::GcState;

/// How much of a state's memory the module can see.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Accounting {
    /// The module's allocator has served the state since its first byte
    /// ([`SystemLua`](crate::SystemLua)): every figure is exact.
    Exact,
    /// The state belongs to mlua's allocator ([`install`](crate::install) on an `mlua::Lua`):
    /// the module reads what Lua itself reports (bytes in use, cycles, collector settings) and
    /// declares the rest unavailable: block counts, cumulative bytes, coroutines, `next_gc`.
    Observed,
}

impl Accounting {
    /// The name scripts see in `mem_stats().accounting`.
    pub fn as_str(self) -> &'static str {
        match self {
            Accounting::Exact => "exact",
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
}

impl StateData {
    pub(crate) fn new(accounting: Accounting) -> StateData {
        StateData { heap: Heap::new(), gc: GcState::new(), accounting }
    }

    /// Whether the allocator counts coroutines (see `ffi/coroutines.rs` for the other way).
    pub(crate) fn coroutines_by_allocator(&self) -> bool {
        crate::ffi::coroutines::ALLOCATOR_SEES_THREADS && self.accounting == Accounting::Exact
    }

    /// Bytes in use, when the module's own accounts hold them.
    pub(crate) fn owned_live_bytes(&self) -> Option<u64> {
        (self.accounting == Accounting::Exact).then(|| self.heap.live_bytes())
    }

    /// Called once, when the module is first loaded into the state: the collector's current
    /// percent becomes the remembered one (a host may have tuned it), and the heap now is the
    /// base of `next_gc` until the first cycle ends.
    pub(crate) fn on_install(&self, collector: &Collector) {
        if let Ok(percent) = collector.percent(self.gc.requested_percent()) {
            self.gc.set_requested_percent(percent);
        }
        self.gc.set_initial_base(self.owned_live_bytes());
    }

    /// Called by the cycle sentinel's finalizer.
    pub(crate) fn on_cycle_end(&self) {
        self.gc.record_cycle(self.owned_live_bytes());
    }
}
