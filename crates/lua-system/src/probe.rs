//! Sampling a running state from another thread: [`Probe`] reads only the module's own
//! counters (atomics) and the kernel, never entering Lua, so a host's sampler may run beside
//! the script.

use crate::cycles::Cycles;
use crate::heap::Heap;
use crate::process_memory;
use crate::state_data::StateData;

/// One sample of a running state, taken from any thread (see [`Probe`]).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct Sample {
    /// Since the state was created, in seconds.
    pub seconds: f64,
    /// Bytes of the state's live heap blocks (`alloc`).
    pub heap_alloc: u64,
    /// The state's live heap blocks (`heap_objects`).
    pub heap_objects: u64,
    /// Where the next cycle starts, in bytes; `None` while stopped. A probe cannot ask Lua: it
    /// gives the threshold as the state's thread last knew it (when the last cycle ended, or
    /// `mem_stats()` last read it); a script's own `collectgarbage("stop")` shows at the next
    /// read through the module (or [`gc_percent`](crate::gc_percent)).
    pub next_gc: Option<u64>,
    /// Completed collection cycles (`num_gc`).
    pub num_gc: u64,
    /// The process's resident memory, in bytes.
    pub resident: Option<u64>,
}

/// Reads a state's figures from another thread while its script runs, without entering Lua.
#[derive(Clone, Copy)]
pub struct Probe<'a> {
    heap: &'a Heap,
    cycles: &'a Cycles,
}

impl<'a> Probe<'a> {
    pub(crate) fn new(data: &'a StateData) -> Probe<'a> {
        Probe { heap: data.heap(), cycles: data.cycles() }
    }

    /// The state's figures now.
    pub fn sample(&self) -> Sample {
        let heap = self.heap.figures();
        let stopped = self.cycles.cached_effective_percent() < 0;
        Sample {
            seconds: self.cycles.born().elapsed().as_secs_f64(),
            heap_alloc: heap.live_bytes,
            heap_objects: heap.objects(),
            next_gc: self.cycles.next_gc_seen().filter(|_| !stopped),
            num_gc: self.cycles.count(),
            resident: process_memory::resident_bytes(),
        }
    }
}

// A probe is handed to a sampling thread.
const _: () = {
    const fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<Probe<'static>>();
};
