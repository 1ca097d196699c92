//! Collection, the GC percent (Go's GOGC) and cycle counting.
//!
//! * `gc()`: one full collection of the calling state (`collectgarbage("collect")`).
//! * `set_gc_percent(p)`, `get_gc_percent()`: GOGC on the state's collector; the encoding for
//!   each Lua version lives in `ffi/collector.rs`. A negative percent stops the collector and
//!   reads back as -1, as in Go; a percent above what Lua can store is clamped (see README).
//! * Cycles are counted by a sentinel object that every completed cycle finalizes once
//!   (`ffi/state.rs`); the heap measured then is the base of `next_gc`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::args;
use crate::ffi::collector::{Busy, CollectError, DEFAULT_PERCENT, PERCENT_MAX, effective_percent, next_cycle_at};
use crate::ffi::{Call, Collector, Reply};
use crate::state::StateData;
use crate::text::{Text, text};

/// A completed collection cycle, as [`SystemLua::on_gc_cycle`](crate::SystemLua::on_gc_cycle)
/// reports it (the `--gctrace` line of the runner).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Cycle {
    /// 1 for the state's first cycle.
    pub number: u64,
    /// When the cycle ended, since the state was created.
    pub at: Duration,
    /// The largest heap since the previous cycle ended: the heap the cycle started from (the
    /// first cycle after the hook was installed: the largest since it was installed).
    pub heap_before: u64,
    /// The heap when the cycle ended (its finalizers running).
    pub heap_after: u64,
    /// Where the next cycle starts; `None` while the collector is stopped.
    pub next_gc: Option<u64>,
    /// Live heap blocks when the cycle ended.
    pub objects: u64,
    /// Whether a full collection was asked for (`system.gc()`, `collectgarbage("collect")` in
    /// the runner) rather than run by the collector on its own. An automatic cycle that was
    /// already past its marking when the collection was asked for ends within it, and is
    /// reported forced too.
    pub forced: bool,
    /// How long a forced collection took; automatic cycles run in steps between the script's
    /// own work, so their length is not measured.
    pub duration: Option<Duration>,
}

/// What [`SystemLua::on_gc_cycle`](crate::SystemLua::on_gc_cycle) calls for every completed cycle.
pub type CycleHook = Box<dyn Fn(&Cycle) + Send + Sync>;

/// The collector-related record of one state.
pub(crate) struct GcState {
    /// When the state was created: the origin of cycle times.
    born: Instant,
    /// The effective percent last read or set (-1: stopped), for readers that cannot ask Lua
    /// (a sampler on another thread, a finalizer).
    effective: AtomicI64,
    /// When the outermost forced collection running started, in nanoseconds since `born` plus
    /// one; 0: none running.
    forced_since: AtomicU64,
    /// Forced collections running: a finalizer may force one inside another.
    forced_depth: AtomicU32,
    hook: Mutex<Option<CycleHook>>,
    /// The exact percent last set through the module, 0..=PERCENT_MAX.
    percent: AtomicI64,
    /// Completed cycles.
    cycles: AtomicU64,
    /// Live bytes when the last cycle ended; `u64::MAX` while unknown.
    live_after_cycle: AtomicU64,
    /// When the last cycle ended, in nanoseconds since the Unix epoch; 0 before the first.
    last_cycle_unix_ns: AtomicU64,
    /// Whether the cycle sentinel exists (one per state, however often the module is opened).
    sentinel: AtomicBool,
    /// Whether the module stopped the collector: Lua 5.1 cannot be asked.
    stopped: AtomicBool,
    installed: AtomicBool,
}

const UNKNOWN: u64 = u64::MAX;

impl GcState {
    pub(crate) fn new() -> GcState {
        GcState {
            born: Instant::now(),
            effective: AtomicI64::new(crate::ffi::collector::effective_percent(DEFAULT_PERCENT)),
            forced_since: AtomicU64::new(0),
            forced_depth: AtomicU32::new(0),
            hook: Mutex::new(None),
            percent: AtomicI64::new(DEFAULT_PERCENT),
            cycles: AtomicU64::new(0),
            live_after_cycle: AtomicU64::new(UNKNOWN),
            last_cycle_unix_ns: AtomicU64::new(0),
            sentinel: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            installed: AtomicBool::new(false),
        }
    }

    pub(crate) fn cycles(&self) -> u64 {
        self.cycles.load(Relaxed)
    }

    pub(crate) fn last_cycle_unix_ns(&self) -> u64 {
        self.last_cycle_unix_ns.load(Relaxed)
    }

    pub(crate) fn live_after_cycle(&self) -> Option<u64> {
        Some(self.live_after_cycle.load(Relaxed)).filter(|&b| b != UNKNOWN)
    }

    /// Before the first cycle, `next_gc` is based on the heap when the module was installed.
    pub(crate) fn set_initial_base(&self, live_bytes: Option<u64>) {
        if let Some(bytes) = live_bytes {
            self.live_after_cycle.store(bytes, Relaxed);
        }
    }

    pub(crate) fn requested_percent(&self) -> i64 {
        self.percent.load(Relaxed)
    }

    pub(crate) fn set_requested_percent(&self, percent: i64) {
        self.percent.store(percent, Relaxed);
    }

    /// Records a completed cycle, and reports it to the hook if there is one; `peak` and
    /// `objects` are the heap's, where the module counts them.
    pub(crate) fn record_cycle(&self, live_bytes: Option<u64>, peak: Option<u64>, objects: Option<u64>) {
        if let Some(bytes) = live_bytes {
            self.live_after_cycle.store(bytes, Relaxed);
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        self.last_cycle_unix_ns.store(now, Relaxed);
        let number = self.cycles.load(Relaxed) + 1;
        self.cycles.store(number, Relaxed);

        let hook = self.hook.lock().unwrap_or_else(|poison| poison.into_inner());
        let Some(hook) = hook.as_ref() else { return };
        let at = self.born.elapsed();
        let forced_since = self.forced_since.load(Relaxed);
        let effective = self.effective.load(Relaxed);
        let heap_after = live_bytes.unwrap_or(0);
        hook(&Cycle {
            number,
            at,
            heap_before: peak.unwrap_or(heap_after),
            heap_after,
            next_gc: (effective >= 0).then(|| next_cycle_at(heap_after, effective)),
            objects: objects.unwrap_or(0),
            forced: forced_since != 0,
            duration: (forced_since != 0).then(|| at.saturating_sub(Duration::from_nanos(forced_since - 1))),
        });
    }

    /// Reports every completed cycle to `hook` (replacing any previous one).
    pub(crate) fn set_hook(&self, hook: Option<CycleHook>) {
        *self.hook.lock().unwrap_or_else(|poison| poison.into_inner()) = hook;
    }

    /// Marks the start (`true`) or end of a forced collection. Marks nest: a collection forced
    /// by a finalizer during another ends only its own mark. Called on the state's thread.
    pub(crate) fn mark_forced(&self, forced: bool) {
        let depth = self.forced_depth.load(Relaxed);
        if forced {
            if depth == 0 {
                self.forced_since.store(self.born.elapsed().as_nanos() as u64 + 1, Relaxed);
            }
            self.forced_depth.store(depth + 1, Relaxed);
        } else if depth > 0 {
            self.forced_depth.store(depth - 1, Relaxed);
            if depth == 1 {
                self.forced_since.store(0, Relaxed);
            }
        }
    }

    pub(crate) fn born(&self) -> Instant {
        self.born
    }

    pub(crate) fn cached_effective_percent(&self) -> i64 {
        self.effective.load(Relaxed)
    }

    pub(crate) fn set_stopped(&self, stopped: bool) {
        self.stopped.store(stopped, Relaxed);
    }

    /// True if no sentinel exists: the caller arms one.
    pub(crate) fn claim_sentinel(&self) -> bool {
        !self.sentinel.swap(true, Relaxed)
    }

    /// The sentinel could not come back (out of memory in Lua 5.1, 5.2 or LuaJIT): the next
    /// load of the module arms a new one.
    #[cfg(any(feature = "lua51", feature = "lua52", feature = "luajit"))]
    pub(crate) fn release_sentinel(&self) {
        self.sentinel.store(false, Relaxed);
    }

    /// Whether the module has read the collector's settings in this state (first load).
    pub(crate) fn installed(&self) -> bool {
        self.installed.swap(true, Relaxed)
    }
}

/// The GC percent in effect: -1 while the collector is stopped.
pub(crate) fn current_percent(data: &StateData, collector: &Collector) -> Result<i64, Busy> {
    // Lua 5.1 cannot say whether its collector runs: the module's own record answers.
    let running = collector.is_running()?.unwrap_or(!data.gc.stopped.load(Relaxed));
    let percent = if running { collector.percent(data.gc.requested_percent())? } else { -1 };
    let effective = if percent < 0 { -1 } else { effective_percent(percent) };
    data.gc.effective.store(effective, Relaxed);
    Ok(percent)
}

fn refused(call: &Call<'_>, error: CollectError) -> Text {
    match error {
        CollectError::Busy => text!("{}: {}", call.name(), Busy::REASON),
        CollectError::Raised(message) => text!("{}: {}", call.name(), message),
    }
}

/// `system.gc()`: a full collection; `true`. A stopped collector stays stopped (Lua 5.1 and
/// LuaJIT restart it after a full collection; the module stops it again).
pub(crate) fn gc(call: &Call<'_>) -> Result<Reply, Text> {
    let data = call.data();
    let collector = call.collector();
    let stopped = current_percent(data, &collector).map_err(|_| refused(call, CollectError::Busy))? < 0;
    data.gc.mark_forced(true);
    let collected = collector.collect();
    data.gc.mark_forced(false);
    collected.map_err(|e| refused(call, e))?;
    if stopped {
        collector.stop().map_err(|_| refused(call, CollectError::Busy))?;
    }
    Ok(Reply::Boolean(true))
}

/// `system.get_gc_percent()`: the percent in effect, -1 while the collector is stopped.
pub(crate) fn get_gc_percent(call: &Call<'_>) -> Result<Reply, Text> {
    let percent = current_percent(call.data(), &call.collector()).map_err(|_| refused(call, CollectError::Busy))?;
    Ok(Reply::Integer(percent))
}

/// `system.set_gc_percent(p)`: sets GOGC, returns the previous value.
pub(crate) fn set_gc_percent(call: &Call<'_>) -> Result<Reply, Text> {
    let requested = args::integer(call, 1)?;
    let data = call.data();
    let collector = call.collector();
    let busy = |_| refused(call, CollectError::Busy);
    let previous = current_percent(data, &collector).map_err(busy)?;
    if requested < 0 {
        collector.stop().map_err(busy)?;
        data.gc.set_stopped(true);
        data.gc.effective.store(-1, Relaxed);
        return Ok(Reply::Integer(previous));
    }
    let percent = requested.min(PERCENT_MAX);
    collector.apply_percent(percent).map_err(|e| refused(call, e))?;
    data.gc.set_requested_percent(percent);
    data.gc.effective.store(effective_percent(percent), Relaxed);
    if previous < 0 {
        collector.restart().map_err(busy)?;
        data.gc.set_stopped(false);
    }
    Ok(Reply::Integer(previous))
}
