//! Sampling a running state from another thread: [`Probe`] reads only the module's own
//! counters (atomics) and the kernel, never entering Lua, so a host's sampler may run beside
//! the script.

use crate::accounts::heap::Heap;
use crate::process::memory;
use crate::state::StateRecord;
use crate::state::cycles::{Cycle, Cycles};

/// What a [`Sample`] was taken at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SampleEvent {
    /// A probe's reading, on the sampler's interval ([`Probe::sample`]).
    Interval,
    /// A collection cycle's start: the heap it started from ([`Cycle::samples`]).
    CycleStart,
    /// A collection cycle's end: the heap it left ([`Cycle::samples`]).
    CycleEnd,
}

/// One sample of a running state, taken from any thread (see [`Probe`]), or at a collection
/// cycle's start or end ([`Cycle::samples`]).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct Sample {
    /// Since the state was created, in seconds.
    pub seconds: f64,
    /// What the sample was taken at.
    pub event: SampleEvent,
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
    pub(crate) fn new(record: &'a StateRecord) -> Probe<'a> {
        Probe { heap: record.heap(), cycles: record.cycles() }
    }

    /// The state's figures now.
    pub fn sample(&self) -> Sample {
        // The count before the time: a sample counting a cycle is dated after it (`Cycles::record`).
        let num_gc = self.cycles.count();
        let seconds = self.cycles.born().elapsed().as_secs_f64();
        let heap = self.heap.figures();
        let stopped = self.cycles.cached_effective_percent() < 0;
        Sample {
            seconds,
            event: SampleEvent::Interval,
            heap_alloc: heap.live_bytes,
            heap_objects: heap.objects(),
            next_gc: self.cycles.next_gc_seen().filter(|_| !stopped),
            num_gc,
            resident: memory::resident_bytes(),
        }
    }
}

impl Cycle {
    /// The heap at the cycle's start and at its end, as samples for a memory chart, so that
    /// the collector's saw-tooth is exact whatever the sampling interval. The start sample is
    /// the heap the cycle started from (`heap_before`, with the blocks at its end: the count
    /// at its start is not kept), dated when the forced collection began, or at the end for an
    /// automatic cycle (whose start, spread over steps, is not dated); `num_gc` is one less.
    /// Both carry the target the cycle set (`next_gc`): the one in force before it is not
    /// kept, and a chart of the target in force takes it from the sample before the start (the
    /// runner's does). Neither carries the resident memory (not read at cycle ends).
    pub fn samples(&self) -> [Sample; 2] {
        let end = Sample {
            seconds: self.at.as_secs_f64(),
            event: SampleEvent::CycleEnd,
            heap_alloc: self.heap_after,
            heap_objects: self.objects,
            next_gc: self.next_gc,
            num_gc: self.number,
            resident: None,
        };
        let began = self.duration.map_or(self.at, |duration| self.at.saturating_sub(duration));
        let start = Sample {
            seconds: began.as_secs_f64(),
            event: SampleEvent::CycleStart,
            heap_alloc: self.heap_before,
            num_gc: self.number - 1,
            ..end
        };
        [start, end]
    }
}

// A probe is handed to a sampling thread.
const _: () = {
    const fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<Probe<'static>>();
};
