//! What the module records of a state's collector: completed cycles (counted by the cycle
//! sentinel, `ffi/sentinel.rs`), the live heap after the last one (the base of `next_gc`), the
//! GC percent as last set or read, forced collections, and the host's cycle hook.

use std::sync::Mutex;
use std::sync::atomic::{
    AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::ffi::Collector;
use crate::ffi::collector::{Busy, DEFAULT_PERCENT, effective_percent, next_cycle_at};

/// A completed collection cycle, as [`SystemLua::on_gc_cycle`](crate::SystemLua::on_gc_cycle)
/// reports it (the `--gctrace` line of the runner).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Cycle {
    /// 1 for the state's first cycle.
    pub number: u64,
    /// When the cycle ended, since the state was created (serialized in seconds, as samples'
    /// times are).
    #[serde(serialize_with = "seconds")]
    pub at: Duration,
    /// The largest heap since the previous cycle ended: the heap the cycle started from (the
    /// first cycle after the hook was installed: the largest since it was installed), in bytes.
    pub heap_before: u64,
    /// The heap when the cycle ended (its finalizers running), in bytes.
    pub heap_after: u64,
    /// Where the next cycle starts, in bytes; `None` while the collector is stopped. The
    /// threshold Lua sets as the cycle ends, from its own figures where the collector's
    /// internals are readable. One case is known only after the hook ran: in Lua 5.4's
    /// generational mode, a major collection that freed less than half the heap's growth since
    /// the previous one makes Lua wait a whole pause (`heap_after` times the GC percent)
    /// instead of the minor step given here; `mem_stats().next_gc` reads Lua's figure.
    pub next_gc: Option<u64>,
    /// Live heap blocks when the cycle ended.
    pub objects: u64,
    /// Whether a full collection was asked for (`system.gc()`, `collectgarbage("collect")` in
    /// the runner) rather than run by the collector on its own. An automatic cycle that was
    /// already past its marking when the collection was asked for ends within it, and is
    /// reported forced too.
    pub forced: bool,
    /// How long a forced collection took; automatic cycles run in steps between the script's
    /// own work, so their length is not measured. Serialized in seconds.
    #[serde(serialize_with = "optional_seconds")]
    pub duration: Option<Duration>,
}

fn seconds<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64())
}

fn optional_seconds<S: serde::Serializer>(duration: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
    match duration {
        Some(duration) => seconds(duration, serializer),
        None => serializer.serialize_none(),
    }
}

/// `next_gc` while the collector is stopped: no cycle is scheduled. Lua's largest integer
/// (`math.maxinteger`) from 5.3 on; 2^53 where numbers are doubles (5.1, 5.2, LuaJIT), the
/// largest integer they hold exactly, so the figure is an integer there too.
pub(crate) const STOPPED_NEXT_GC: u64 =
    if cfg!(any(feature = "lua51", feature = "lua52", feature = "luajit")) { 1 << 53 } else { i64::MAX as u64 };

/// Where [`MemStats::next_gc`](crate::MemStats::next_gc) comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NextGcSource {
    /// Lua's own threshold, read in its internals: exact.
    Threshold,
    /// Computed from the live heap measured when the last cycle's finalizers ran (the
    /// internals of this Lua build are not usable): see docs/figures.md for the bound.
    Estimate,
    /// The collector is stopped: no cycle is scheduled.
    Stopped,
}

impl NextGcSource {
    /// The name scripts see in `mem_stats().next_gc_source`.
    pub fn as_str(self) -> &'static str {
        match self {
            NextGcSource::Threshold => "threshold",
            NextGcSource::Estimate => "estimate",
            NextGcSource::Stopped => "stopped",
        }
    }
}

/// What [`SystemLua::on_gc_cycle`](crate::SystemLua::on_gc_cycle) calls for every completed cycle.
pub type CycleHook = Box<dyn Fn(&Cycle) + Send + Sync>;

/// The collector-related record of one state.
pub(crate) struct Cycles {
    /// When the state was created: the origin of cycle times.
    born: Instant,
    /// Completed cycles.
    count: AtomicU64,
    /// Live bytes when the last cycle ended; `u64::MAX` while unknown.
    live_after_cycle: AtomicU64,
    /// The effective percent when the last cycle ended: the one Lua applied to the threshold
    /// it then set (for states whose internals are not usable).
    effective_at_cycle_end: AtomicI64,
    /// The last `next_gc` the state's thread knew (at a cycle's end, or read by `mem_stats`),
    /// for readers on other threads; `u64::MAX` while unknown or stopped.
    next_gc_seen: AtomicU64,
    /// When the last cycle ended, in nanoseconds since the Unix epoch; 0 before the first.
    last_cycle_unix_ns: AtomicU64,
    /// The exact percent last set through the module, 0..=PERCENT_MAX.
    requested_percent: AtomicI64,
    /// The effective percent last read or set (-1: stopped), for readers that cannot ask Lua
    /// (a sampler on another thread, a finalizer).
    effective_percent: AtomicI64,
    /// Whether the module stopped the collector: Lua 5.1 cannot be asked.
    stopped: AtomicBool,
    /// When the outermost forced collection running started, in nanoseconds since `born` plus
    /// one; 0: none running.
    forced_since: AtomicU64,
    /// Forced collections running: a finalizer may force one inside another.
    forced_depth: AtomicU32,
    hook: Mutex<Option<CycleHook>>,
    /// Whether `hook` holds one: a cycle with none takes no lock.
    hooked: AtomicBool,
    /// Whether the module has been loaded into the state at least once.
    loaded: AtomicBool,
}

const UNKNOWN: u64 = u64::MAX;

impl Cycles {
    pub(crate) fn new() -> Cycles {
        Cycles {
            born: Instant::now(),
            count: AtomicU64::new(0),
            live_after_cycle: AtomicU64::new(UNKNOWN),
            effective_at_cycle_end: AtomicI64::new(effective_percent(DEFAULT_PERCENT)),
            next_gc_seen: AtomicU64::new(UNKNOWN),
            last_cycle_unix_ns: AtomicU64::new(0),
            requested_percent: AtomicI64::new(DEFAULT_PERCENT),
            effective_percent: AtomicI64::new(effective_percent(DEFAULT_PERCENT)),
            stopped: AtomicBool::new(false),
            forced_since: AtomicU64::new(0),
            forced_depth: AtomicU32::new(0),
            hook: Mutex::new(None),
            hooked: AtomicBool::new(false),
            loaded: AtomicBool::new(false),
        }
    }

    pub(crate) fn count(&self) -> u64 {
        self.count.load(Acquire)
    }

    pub(crate) fn last_cycle_unix_ns(&self) -> u64 {
        self.last_cycle_unix_ns.load(Relaxed)
    }

    pub(crate) fn live_after_cycle(&self) -> Option<u64> {
        Some(self.live_after_cycle.load(Relaxed)).filter(|&b| b != UNKNOWN)
    }

    /// Before the first cycle, `next_gc` is based on the heap when the module was first loaded,
    /// with the effective percent then.
    pub(crate) fn set_initial_base(&self, live_bytes: u64) {
        self.live_after_cycle.store(live_bytes, Relaxed);
        self.effective_at_cycle_end.store(self.cached_effective_percent(), Relaxed);
    }

    /// `next_gc` where the collector's internals cannot be read: the live heap after the last
    /// cycle, times the percent that applied when it ended (a percent set since applies from
    /// the next cycle on, so it is not this threshold's); `None` before anything was recorded.
    pub(crate) fn estimated_next_gc(&self) -> Option<u64> {
        let effective = self.effective_at_cycle_end.load(Relaxed);
        self.live_after_cycle().map(|base| next_cycle_at(base, effective))
    }

    /// Remembers the `next_gc` just read or computed, for other threads (`u64::MAX`: none).
    pub(crate) fn note_next_gc(&self, next_gc: u64) {
        self.next_gc_seen.store(next_gc, Relaxed);
    }

    /// The last `next_gc` the state's thread knew.
    pub(crate) fn next_gc_seen(&self) -> Option<u64> {
        Some(self.next_gc_seen.load(Relaxed)).filter(|&n| n != UNKNOWN)
    }

    pub(crate) fn requested_percent(&self) -> i64 {
        self.requested_percent.load(Relaxed)
    }

    pub(crate) fn set_requested_percent(&self, percent: i64) {
        self.requested_percent.store(percent, Relaxed);
    }

    pub(crate) fn cached_effective_percent(&self) -> i64 {
        self.effective_percent.load(Relaxed)
    }

    pub(crate) fn set_effective_percent(&self, effective: i64) {
        self.effective_percent.store(effective, Relaxed);
    }

    /// Whether the module stopped the collector (for Lua 5.1, which cannot be asked).
    pub(crate) fn stopped_by_module(&self) -> bool {
        self.stopped.load(Relaxed)
    }

    pub(crate) fn set_stopped_by_module(&self, stopped: bool) {
        self.stopped.store(stopped, Relaxed);
    }

    pub(crate) fn born(&self) -> Instant {
        self.born
    }

    /// Records that the module was loaded; true the first time.
    pub(crate) fn mark_loaded(&self) -> bool {
        !self.loaded.swap(true, Relaxed)
    }

    /// Reads the collector's setting from Lua and brings the record of it up to date: the GC
    /// percent in effect (-1 while the collector is stopped), which it returns, the effective
    /// percent and `next_gc`. Readers that cannot ask Lua (a probe on another thread, a
    /// finalizer, a scrape) see what the last refresh found; `live_bytes` is the heap now.
    pub(crate) fn refresh_setting(&self, collector: &Collector, live_bytes: u64) -> Result<i64, Busy> {
        // Lua 5.1 cannot say whether its collector runs: the module's own record answers.
        let running = collector.is_running()?.unwrap_or(!self.stopped_by_module());
        let percent = if running { collector.percent(self.requested_percent())? } else { -1 };
        let effective = if percent < 0 { -1 } else { effective_percent(percent) };
        self.set_effective_percent(effective);
        self.next_gc(collector, effective, live_bytes);
        Ok(percent)
    }

    /// The heap size at which the next cycle starts, and where that figure comes from, given the
    /// effective percent (-1: stopped) and the heap now; remembered for readers on other threads.
    pub(crate) fn next_gc(&self, collector: &Collector, effective: i64, live_bytes: u64) -> (u64, NextGcSource) {
        let (next_gc, source) = match (effective, collector.next_threshold()) {
            (effective, _) if effective < 0 => (STOPPED_NEXT_GC, NextGcSource::Stopped),
            (_, Some(threshold)) => (threshold, NextGcSource::Threshold),
            (effective, None) => {
                let estimate = self.estimated_next_gc();
                (estimate.unwrap_or_else(|| next_cycle_at(live_bytes, effective)), NextGcSource::Estimate)
            }
        };
        self.note_next_gc(if effective < 0 { u64::MAX } else { next_gc });
        (next_gc, source)
    }

    /// Records a completed cycle, and reports it to the hook if there is one; `peak` and
    /// `objects` are the heap's; `next` is the threshold Lua sets when the cycle ends, where the
    /// collector's internals tell it.
    pub(crate) fn record(&self, live_bytes: u64, peak: Option<u64>, objects: u64, next: Option<u64>) {
        self.live_after_cycle.store(live_bytes, Relaxed);
        let effective = self.cached_effective_percent();
        self.effective_at_cycle_end.store(effective, Relaxed);
        let next_gc =
            if effective < 0 { None } else { Some(next.unwrap_or_else(|| next_cycle_at(live_bytes, effective))) };
        self.note_next_gc(next_gc.unwrap_or(UNKNOWN));
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        self.last_cycle_unix_ns.store(now, Relaxed);
        // The cycle's time (for the hook only: a second clock read otherwise spent on every
        // cycle) is taken before the count moves (a probe reads the count, then the time): a
        // sample that counts this cycle is never dated before it.
        let hooked = self.hooked.load(Acquire);
        let at = if hooked { self.born.elapsed() } else { Duration::ZERO };
        let number = self.count.load(Relaxed) + 1;
        self.count.store(number, Release);

        if !hooked {
            return;
        }
        let hook = self.hook.lock().unwrap_or_else(|poison| poison.into_inner());
        let Some(hook) = hook.as_ref() else { return };
        let forced_since = self.forced_since.load(Relaxed);
        hook(&Cycle {
            number,
            at,
            heap_before: peak.unwrap_or(live_bytes),
            heap_after: live_bytes,
            next_gc,
            objects,
            forced: forced_since != 0,
            duration: (forced_since != 0).then(|| at.saturating_sub(Duration::from_nanos(forced_since - 1))),
        });
    }

    /// Reports every completed cycle to `hook` (replacing any previous one).
    pub(crate) fn set_hook(&self, hook: Option<CycleHook>) {
        let mut slot = self.hook.lock().unwrap_or_else(|poison| poison.into_inner());
        self.hooked.store(hook.is_some(), Release);
        *slot = hook;
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
}
