//! `lua_gc`, and the requests each Lua version takes to set and read the collector's settings
//! (how each stores them: `params.rs`).
//!
//! Go's GOGC percent `p` means: start a cycle when the heap has grown `p`% over the live size
//! after the previous one. Lua's incremental collector expresses the same with its *pause* (a
//! cycle starts when the heap reaches `pause`% of the live size after the last one), so
//! `pause = 100 + p` in every version. The requests differ:
//!
//! | version | request |
//! |---|---|
//! | 5.1, 5.2, 5.3, LuaJIT | `LUA_GCSETPAUSE` (answers the previous value) |
//! | 5.4 | `LUA_GCSETPAUSE` / `LUA_GCINC`; generational mode: major multiplier = `p` (`LUA_GCGEN`) |
//! | 5.5 | `LUA_GCPARAM, LUA_GCPPAUSE` (read with -1) |
//!
//! In generational mode (Lua 5.4, 5.5) a cycle is a minor collection, and `p` is what decides
//! when a minor collection becomes a major one: 5.4's major multiplier, 5.5's minor-major
//! multiplier, as Go's GOGC decides when the heap has grown enough to collect it.
//!
//! The module remembers the exact `p` it set, so `get_gc_percent` returns it unchanged even where
//! Lua stores an approximation. Lua 5.4 and 5.5 answer -1 to every request while they run
//! finalizers during a collection ([`Busy`]); 5.1, 5.2, 5.3 and LuaJIT always answer.
//!
//! Where the state's internals are usable (`internals.rs`), the collector's settings and its
//! threshold are read there (during finalizers too), the mode is known without switching it, and
//! a new percent applies at once: the threshold of the cycle being waited for is recomputed as
//! Lua will compute the next ones.

use std::ffi::c_int;

use mlua::ffi::{self, lua_State};

use super::internals::{Internals, InternalsCache, Phase};
use super::protected;
use crate::text::{Text, text};

/// Lua refuses collector requests now: it is running finalizers during a collection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Busy;

impl Busy {
    /// Why, for messages.
    pub(crate) const REASON: &'static str =
        "Lua refuses collector requests while it runs finalizers during a collection";
}

/// Why a requested collection or setting did not happen.
#[derive(Clone, Copy, Debug)]
pub(crate) enum CollectError {
    Busy,
    /// A finalizer raised an error that Lua propagated (5.1 to 5.3 do; 5.4 and 5.5 turn such
    /// errors into warnings).
    Raised(Text),
}

use super::params::stored_pause;
pub(crate) use super::params::{DEFAULT_PERCENT, PERCENT_MAX, effective_percent};

/// The heap size at which the next cycle starts, computed as Lua does when a cycle ends:
/// `(live / 100) * pause`, where `live` is the heap after the last cycle.
pub(crate) fn next_cycle_at(live_after_cycle: u64, effective_percent: i64) -> u64 {
    (live_after_cycle / 100).saturating_mul((100 + effective_percent.max(0)) as u64)
}

/// The collector of the state a module function was called from.
pub(crate) struct Collector {
    l: *mut lua_State,
    internals: Option<Internals>,
}

impl Collector {
    /// The collector as the API shows it.
    ///
    /// # Safety
    /// `l` is a running state, valid for as long as the collector is used.
    pub(crate) unsafe fn new(l: *mut lua_State) -> Collector {
        Collector { l, internals: None }
    }

    /// The collector, read in the state's internals where they are usable.
    ///
    /// # Safety
    /// As [`Collector::new`]; `cache` is the state's.
    pub(crate) unsafe fn with_internals(l: *mut lua_State, cache: &InternalsCache) -> Collector {
        // SAFETY: per the contract.
        Collector { l, internals: unsafe { cache.get(l) } }
    }

    /// A request that neither collects nor runs finalizers, so cannot raise.
    fn request(&self, what: c_int, data: c_int) -> Result<c_int, Busy> {
        // SAFETY: `l` is running; see above.
        let answer = unsafe { ffi::lua_gc(self.l, what, data) };
        if answer == -1 && version::REFUSES_WHEN_BUSY { Err(Busy) } else { Ok(answer) }
    }

    /// Whether the collector runs (`None` when the version cannot tell: Lua 5.1 without its
    /// internals).
    pub(crate) fn is_running(&self) -> Result<Option<bool>, Busy> {
        if let Some(internals) = &self.internals {
            return Ok(Some(!internals.stopped_by_user()));
        }
        match version::IS_RUNNING {
            Some(what) => self.request(what, 0).map(|running| Some(running != 0)),
            None => Ok(None),
        }
    }

    /// Bytes in use, as Lua counts them (exactly: Lua adds up every size it gives its allocator).
    pub(crate) fn heap_bytes(&self) -> Result<u64, Busy> {
        let kbytes = self.request(ffi::LUA_GCCOUNT, 0)?;
        let bytes = self.request(ffi::LUA_GCCOUNTB, 0)?;
        Ok(kbytes as u64 * 1024 + bytes as u64)
    }

    /// The percent the collector is set to, given the exact percent the module last set.
    ///
    /// If the stored pause is the one `requested` maps to, `requested` is the answer (the exact
    /// round trip). Otherwise something else changed the pause (`collectgarbage("setpause")`,
    /// `collectgarbage("incremental", ...)`) and the pause itself is translated back; a pause
    /// under 100 reads as 0, since a negative percent means "off".
    pub(crate) fn percent(&self, requested: i64) -> Result<i64, Busy> {
        if let Some(internals) = &self.internals {
            let setting = internals.setting();
            return Ok(if setting == internals.setting_for(requested) { requested } else { setting.percent() });
        }
        let pause = version::read_pause(self)?;
        Ok(if pause == stored_pause(requested) { requested } else { (pause - 100).max(0) })
    }

    /// The heap size at which the next cycle starts, from Lua's own figures: its threshold
    /// while it waits for the next cycle, the threshold it computes from its live estimate and
    /// the setting while a cycle runs. `None` where the internals are not usable.
    pub(crate) fn next_threshold(&self) -> Option<u64> {
        let internals = self.internals.as_ref()?;
        Some(match internals.phase() {
            Phase::Waiting { threshold } => threshold,
            Phase::Collecting => internals.threshold_for_setting(),
        })
    }

    /// The threshold Lua will set when the cycle whose finalizers run now ends, from its live
    /// estimate and the setting. `None` where the internals are not usable.
    pub(crate) fn threshold_after_cycle(&self) -> Option<u64> {
        self.internals.as_ref().map(Internals::threshold_after_cycle)
    }

    /// Makes the current setting apply at once: while the collector waits for its next cycle,
    /// that cycle's threshold is recomputed from Lua's live estimate, as Lua will compute the
    /// following ones (the next cycle starts at the next allocation if the heap is already
    /// past it). Incremental mode; nothing while a cycle runs (its end applies the setting),
    /// in generational mode (the multiplier is read after every minor collection), while the
    /// collector is stopped, or without the internals (then the setting applies from the next
    /// cycle on).
    pub(crate) fn apply_at_once(&self) {
        if let Some(internals) = &self.internals
            && !internals.generational()
            && !internals.stopped_by_user()
            && let Phase::Waiting { .. } = internals.phase()
        {
            // SAFETY: `l` runs a module function now: on the state's thread, between two of
            // Lua's steps.
            unsafe { internals.set_threshold(internals.threshold_for_setting()) };
        }
    }

    pub(crate) fn stop(&self) -> Result<(), Busy> {
        self.request(ffi::LUA_GCSTOP, 0).map(drop)
    }

    pub(crate) fn restart(&self) -> Result<(), Busy> {
        self.request(ffi::LUA_GCRESTART, 0).map(drop)
    }

    /// Applies `percent` (clamped to 0..=PERCENT_MAX): the pause in incremental mode; in
    /// generational mode, the multiplier that makes a minor collection major (with the
    /// internals, without switching modes).
    pub(crate) fn apply_percent(&self, percent: i64) -> Result<(), CollectError> {
        let percent = percent.clamp(0, PERCENT_MAX);
        match &self.internals {
            Some(internals) if internals.generational() => version::apply_generational(self, internals, percent),
            Some(_) => version::apply_incremental(self, percent),
            None => version::apply_percent(self, percent),
        }
    }

    /// A full collection (`collectgarbage("collect")`), protected.
    pub(crate) fn collect(&self) -> Result<(), CollectError> {
        self.protected(collect_raw, 0)
    }

    /// Runs `f` protected with a [`Request`] holding `argument`; `f` sets `done` to false if Lua
    /// refused (busy).
    fn protected(&self, f: ffi::lua_CFunction, argument: i64) -> Result<(), CollectError> {
        let mut request = Request { argument, done: false };
        // SAFETY: `f` reads and writes the request only during this call; on failure the error
        // object is read and popped, so the stack is as it was.
        unsafe {
            match protected::call(self.l, f, &mut request as *mut Request) {
                Ok(()) if request.done => Ok(()),
                Ok(()) => Err(CollectError::Busy),
                Err(()) => {
                    let message = error_text(self.l);
                    ffi::lua_settop(self.l, -2);
                    Err(CollectError::Raised(message))
                }
            }
        }
    }
}

/// The data of a protected collector request.
struct Request {
    /// Read by Lua 5.4's `apply_percent_raw` only.
    #[cfg_attr(not(feature = "lua54"), allow(dead_code))]
    argument: i64,
    done: bool,
}

/// The error object on top of the stack, as text, without allocating in Lua.
unsafe fn error_text(l: *mut lua_State) -> Text {
    // SAFETY: `lua_tolstring` on a string value does not convert, so it cannot raise.
    unsafe {
        if ffi::lua_type(l, -1) == ffi::LUA_TSTRING {
            let mut len = 0;
            let ptr = ffi::lua_tolstring(l, -1, &mut len);
            Text::from_bytes(std::slice::from_raw_parts(ptr.cast::<u8>(), len))
        } else {
            text!("a finalizer raised a non-string error")
        }
    }
}

unsafe extern "C-unwind" fn collect_raw(l: *mut lua_State) -> c_int {
    // SAFETY: only for the armed request (see `Collector::protected`).
    unsafe {
        if let Some(request) = protected::armed::<Request>(l) {
            (*request).done = ffi::lua_gc(l, ffi::LUA_GCCOLLECT, 0) != -1 || !version::REFUSES_WHEN_BUSY;
        }
    }
    protected::NO_RESULTS
}

/// Lua 5.1, 5.2, 5.3 and LuaJIT: an integer pause, set and read with `LUA_GCSETPAUSE`.
#[cfg(any(feature = "lua51", feature = "lua52", feature = "lua53", feature = "luajit"))]
mod version {
    use super::*;

    pub(super) const REFUSES_WHEN_BUSY: bool = false;

    /// 5.1 has no way to ask; LuaJIT 2.1 adds 5.2's request (number 9).
    #[cfg(feature = "lua51")]
    pub(super) const IS_RUNNING: Option<c_int> = None;
    #[cfg(feature = "luajit")]
    pub(super) const IS_RUNNING: Option<c_int> = Some(9);
    #[cfg(any(feature = "lua52", feature = "lua53"))]
    pub(super) const IS_RUNNING: Option<c_int> = Some(ffi::LUA_GCISRUNNING);

    /// `LUA_GCSETPAUSE` answers the previous pause; it is written back unchanged.
    pub(super) fn read_pause(collector: &Collector) -> Result<i64, Busy> {
        let pause = collector.request(ffi::LUA_GCSETPAUSE, 200)?;
        collector.request(ffi::LUA_GCSETPAUSE, pause)?;
        Ok(pause as i64)
    }

    pub(super) fn apply_percent(collector: &Collector, percent: i64) -> Result<(), CollectError> {
        collector
            .request(ffi::LUA_GCSETPAUSE, stored_pause(percent) as c_int)
            .map(drop)
            .map_err(|Busy| CollectError::Busy)
    }

    pub(super) fn apply_incremental(collector: &Collector, percent: i64) -> Result<(), CollectError> {
        apply_percent(collector, percent)
    }

    /// Lua 5.2's generational mode collects fully when the heap grows past its major increment
    /// (`100 + p`, as a pause); the other versions have no generational mode.
    pub(super) fn apply_generational(
        collector: &Collector,
        _internals: &Internals,
        percent: i64,
    ) -> Result<(), CollectError> {
        #[cfg(feature = "lua52")]
        return collector
            .request(ffi::LUA_GCSETMAJORINC, stored_pause(percent) as c_int)
            .map(drop)
            .map_err(|Busy| CollectError::Busy);
        #[cfg(not(feature = "lua52"))]
        return apply_percent(collector, percent);
    }
}

/// Lua 5.4: the pause divided by 4 in a byte; generational mode has a major multiplier instead.
#[cfg(feature = "lua54")]
mod version {
    use super::*;

    pub(super) const REFUSES_WHEN_BUSY: bool = true;
    pub(super) const IS_RUNNING: Option<c_int> = Some(ffi::LUA_GCISRUNNING);

    /// Lua 5.4 has no read-only request for the pause: `LUA_GCSETPAUSE` answers the previous
    /// value, which is written back unchanged (a multiple of 4, so exact).
    pub(super) fn read_pause(collector: &Collector) -> Result<i64, Busy> {
        let pause = collector.request(ffi::LUA_GCSETPAUSE, 200)?;
        collector.request(ffi::LUA_GCSETPAUSE, pause)?;
        Ok(pause as i64)
    }

    /// Lua 5.4 can only tell the mode by switching to one: `LUA_GCINC` sets the pause and
    /// answers the previous mode. In incremental mode (the default) that is all. In
    /// generational mode the collector is switched back with the new major multiplier, which
    /// makes Lua run one full collection; it runs under `lua_pcall`.
    pub(super) fn apply_percent(collector: &Collector, percent: i64) -> Result<(), CollectError> {
        collector.protected(apply_percent_raw, percent)
    }

    /// The pause, without touching the mode (the internals said it is incremental).
    pub(super) fn apply_incremental(collector: &Collector, percent: i64) -> Result<(), CollectError> {
        collector
            .request(ffi::LUA_GCSETPAUSE, stored_pause(percent) as c_int)
            .map(drop)
            .map_err(|Busy| CollectError::Busy)
    }

    /// The major multiplier, in generational mode: `LUA_GCGEN` with the mode unchanged sets
    /// it without a collection, and Lua reads it after every minor collection.
    pub(super) fn apply_generational(
        collector: &Collector,
        _internals: &Internals,
        percent: i64,
    ) -> Result<(), CollectError> {
        // A multiplier of 0 cannot be passed (0 means "unchanged"); 1 is stored as 0 quarters.
        // SAFETY: `l` is running; the mode stays generational, so nothing is collected.
        let previous = unsafe { ffi::lua_gc(collector.l, ffi::LUA_GCGEN, 0, (percent as c_int).max(1)) };
        if previous == -1 { Err(CollectError::Busy) } else { Ok(()) }
    }

    unsafe extern "C-unwind" fn apply_percent_raw(l: *mut lua_State) -> c_int {
        // SAFETY: only for the armed request (see `Collector::protected`).
        unsafe {
            let Some(request) = protected::armed::<Request>(l) else {
                return protected::NO_RESULTS;
            };
            let percent = (*request).argument;
            let previous_mode = ffi::lua_gc(l, ffi::LUA_GCINC, stored_pause(percent) as c_int, 0, 0);
            (*request).done = match previous_mode {
                -1 => false,
                ffi::LUA_GCGEN => {
                    // A major multiplier of 0 cannot be passed (0 means "unchanged"); 1 is
                    // stored as 0 quarters, the same value.
                    ffi::lua_gc(l, ffi::LUA_GCGEN, 0, (percent as c_int).max(1)) != -1
                }
                _ => true,
            };
        }
        protected::NO_RESULTS
    }
}

/// Lua 5.5: the pause is an 8-bit float (`luaO_codeparam`), set and read with `LUA_GCPARAM`.
#[cfg(feature = "lua55")]
mod version {
    use super::*;

    pub(super) const REFUSES_WHEN_BUSY: bool = true;
    pub(super) const IS_RUNNING: Option<c_int> = Some(ffi::LUA_GCISRUNNING);

    pub(super) fn read_pause(collector: &Collector) -> Result<i64, Busy> {
        // SAFETY: `LUA_GCPARAM` with -1 only reads; `l` is running.
        let pause = unsafe { ffi::lua_gc(collector.l, ffi::LUA_GCPARAM, ffi::LUA_GCPPAUSE, -1) };
        if pause == -1 { Err(Busy) } else { Ok(pause as i64) }
    }

    pub(super) fn apply_percent(collector: &Collector, percent: i64) -> Result<(), CollectError> {
        set_param(collector, ffi::LUA_GCPPAUSE, 100 + percent)
    }

    pub(super) fn apply_incremental(collector: &Collector, percent: i64) -> Result<(), CollectError> {
        apply_percent(collector, percent)
    }

    /// The minor-major multiplier: a minor collection becomes major once the heap has grown
    /// this much over its size after the last major one.
    pub(super) fn apply_generational(
        collector: &Collector,
        _internals: &Internals,
        percent: i64,
    ) -> Result<(), CollectError> {
        set_param(collector, ffi::LUA_GCPMINORMAJOR, percent)
    }

    fn set_param(collector: &Collector, param: c_int, value: i64) -> Result<(), CollectError> {
        // SAFETY: sets one parameter; `l` is running.
        let answer =
            unsafe { ffi::lua_gc(collector.l, ffi::LUA_GCPARAM, param, value.min(c_int::MAX as i64) as c_int) };
        if answer == -1 { Err(CollectError::Busy) } else { Ok(()) }
    }
}
