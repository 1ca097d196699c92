//! The collector's own figures, read (and a few set) in Lua's global state.
//!
//! Lua's API tells neither the heap size at which the next cycle starts nor whether a cycle is
//! running, and applies a new pause only when the running cycle ends. Inside the global state,
//! Lua keeps both: where the collector is (`gcstate`), its threshold (the debt, or an absolute
//! threshold), and its estimate of the live heap from which every threshold is computed. Reading
//! them gives `next_gc` exactly (Lua's own figure, not a prediction); setting the threshold makes
//! a new GC percent take effect at once, as Go's `SetGCPercent` does.
//!
//! The layouts below are those of the Lua releases this crate vendors (5.1.5, 5.2.4, 5.3.6,
//! 5.4.9, 5.5.1, LuaJIT 2.1) on 64-bit targets (a 32-bit build does not compile), which are also
//! those of Debian's interpreters (5.1.5, 5.2.4, 5.3.6, 5.4.4 and LuaJIT 2.1.0-beta3+git2022:
//! the fields used here sit at the same offsets). `tests/c/offsets.c` prints them with
//! `offsetof` from a release's own headers; the test at the end of this file compiles it
//! against the vendored sources of the version built and compares. No layout is trusted untested: for each state
//! the global state is found through its thread and checked against what the API reports (the
//! allocator function and its data, the registry table, the byte count) before anything is read,
//! and nothing is ever written unless that check passed. A state whose layout does not match
//! (another release, another build configuration) gets the API-only behaviour, described in
//! docs/figures.md; so does every state when `LUA_SYSTEM_NO_INTERNALS` is set.

use std::ffi::c_void;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering::Relaxed};

use mlua::ffi::{self, lua_State};

#[cfg(any(feature = "lua54", feature = "lua55"))]
use super::params;

// The offsets below assume 64-bit pointers and sizes (every release's layout differs on 32-bit).
#[cfg(not(target_pointer_width = "64"))]
compile_error!("lua-system reads Lua's collector internals with 64-bit layouts: build for a 64-bit target");

/// A release's layout: its fields' offsets and the constants read with them, each as this
/// release's headers define it. `tests/c/offsets.c` prints the same names from the headers, and
/// the test `the_layout_is_the_vendored_headers` compares the two.
macro_rules! layout {
    ($($name:ident: $type:ty = $value:expr),* $(,)?) => {
        $(pub(super) const $name: $type = $value;)*
        /// Every name and value, for the test against the headers.
        #[cfg(test)]
        pub(super) const ALL: &[(&str, u64)] = &[$((stringify!($name), $value as u64)),*];
    };
}

/// Where a state's global state is, once checked (kept in the module's record of the state).
#[derive(Default)]
pub(crate) struct InternalsCache {
    /// 0 (the default): not checked yet; 1: checked and usable; 2: not usable.
    checked: AtomicU8,
    global: AtomicUsize,
    /// Whether a cycle has ended since the module was loaded (so the live estimate, which
    /// `lua_newstate` leaves unset until the first cycle's atomic phase in 5.1, 5.4 and LuaJIT,
    /// holds a value).
    cycle_ended: AtomicBool,
}

const USABLE: u8 = 1;
const UNUSABLE: u8 = 2;

/// Whether internals may be used at all (`LUA_SYSTEM_NO_INTERNALS` unset).
fn allowed() -> bool {
    static ALLOWED: OnceLock<bool> = OnceLock::new();
    *ALLOWED.get_or_init(|| std::env::var_os("LUA_SYSTEM_NO_INTERNALS").is_none())
}

impl InternalsCache {
    /// A cycle has ended (the sentinel's finalizer runs).
    pub(crate) fn note_cycle_end(&self) {
        self.cycle_ended.store(true, Relaxed);
    }

    /// The global state, if it was checked and is usable (no check is made: for the allocator,
    /// which has no thread to check through).
    pub(crate) fn checked(&self) -> Option<Internals> {
        (self.checked.load(Relaxed) == USABLE)
            .then(|| Internals { g: self.global.load(Relaxed) as *mut u8, cycle_ended: self.cycle_ended.load(Relaxed) })
    }

    /// The checked global state of `l`'s state, checking it the first time (which needs Lua to
    /// answer `lua_gc(LUA_GCCOUNT)`: not while Lua 5.4 and 5.5 run finalizers; then the check
    /// waits for a later call).
    ///
    /// # Safety
    /// `l` is a thread of the state this cache belongs to, running on this thread.
    pub(crate) unsafe fn get(&self, l: *mut lua_State) -> Option<Internals> {
        match self.checked.load(Relaxed) {
            USABLE => {
                Some(Internals { g: self.global.load(Relaxed) as *mut u8, cycle_ended: self.cycle_ended.load(Relaxed) })
            }
            UNUSABLE => None,
            _ => {
                // SAFETY: per the contract.
                let verdict = unsafe { check(l) };
                match verdict {
                    Check::Usable(internals) => {
                        self.global.store(internals.g as usize, Relaxed);
                        self.checked.store(USABLE, Relaxed);
                        Some(internals)
                    }
                    Check::Unusable => {
                        self.checked.store(UNUSABLE, Relaxed);
                        None
                    }
                    Check::NotNow => None,
                }
            }
        }
    }
}

enum Check {
    Usable(Internals),
    Unusable,
    NotNow,
}

/// Finds the global state through the thread and checks it.
unsafe fn check(l: *mut lua_State) -> Check {
    if !allowed() {
        return Check::Unusable;
    }
    // SAFETY: `l` points to a live thread at least as large as the prefix read here; the value
    // read is dereferenced only after it proved to hold the allocator pair.
    unsafe {
        let g = *(l.cast::<u8>().add(layout::THREAD_GLOBAL) as *const *mut u8);
        if g.is_null() || !(g as usize).is_multiple_of(std::mem::align_of::<usize>()) {
            return Check::Unusable;
        }
        let mut ud = std::ptr::null_mut();
        let allocator = ffi::lua_getallocf(l, &mut ud);
        let internals = Internals { g, cycle_ended: false };
        if internals.read::<usize>(layout::FREALLOC) != allocator as usize
            || internals.read::<*mut c_void>(layout::UD) != ud
        {
            return Check::Unusable;
        }
        // The allocator pair matched: `g` is the global state, the fields below are inside it.
        let kbytes = ffi::lua_gc(l, ffi::LUA_GCCOUNT, 0);
        let bytes = ffi::lua_gc(l, ffi::LUA_GCCOUNTB, 0);
        if kbytes < 0 || bytes < 0 {
            return Check::NotNow; // Lua is busy (finalizers): check again later
        }
        let counted = kbytes as u64 * 1024 + bytes as u64;
        let registry = ffi::lua_topointer(l, ffi::LUA_REGISTRYINDEX) as usize;
        if internals.total_bytes() != counted || internals.registry() != registry || !internals.state_is_valid() {
            return Check::Unusable;
        }
        Check::Usable(internals)
    }
}

/// A checked global state.
#[derive(Clone, Copy)]
pub(crate) struct Internals {
    g: *mut u8,
    /// See [`InternalsCache`]'s field (read for Lua 5.1, 5.4 and LuaJIT).
    #[cfg_attr(not(any(feature = "lua51", feature = "lua54", feature = "luajit")), allow(dead_code))]
    cycle_ended: bool,
}

/// The stored setting the GC percent maps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Setting {
    /// A pause, in percent (`100 + p`). (Lua 5.5 stores its parameters as codes instead.)
    #[cfg_attr(feature = "lua55", allow(dead_code))]
    Pause(i64),
    /// A multiplier, in percent (`p`): Lua 5.4's generational major multiplier.
    #[cfg_attr(not(feature = "lua54"), allow(dead_code))]
    Multiplier(i64),
    /// A Lua 5.5 parameter byte, and the offset the percent is counted from (100 for the pause).
    #[allow(dead_code)]
    Code(u8, i64),
}

impl Setting {
    /// The GC percent the setting stands for (a pause under 100 reads as 0: a negative percent
    /// means "off").
    pub(crate) fn percent(self) -> i64 {
        match self {
            Setting::Pause(pause) => (pause - 100).max(0),
            Setting::Multiplier(percent) => percent,
            #[cfg(feature = "lua55")]
            Setting::Code(code, offset) => (params::decode(code) - offset).max(0),
            #[cfg(not(feature = "lua55"))]
            Setting::Code(..) => 0,
        }
    }
}

/// Where the collector is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Between cycles (or, in generational mode, between collections): the next one starts when
    /// the heap reaches this many bytes.
    Waiting { threshold: u64 },
    /// A cycle is under way.
    Collecting,
}

impl Internals {
    fn read<T: Copy>(&self, offset: usize) -> T {
        // SAFETY: the global state was checked (see `check`); `offset` is a field of it of type
        // `T` in this release's layout.
        unsafe { (self.g.add(offset) as *const T).read() }
    }

    /// Writes a field of Lua's global state.
    ///
    /// # Safety
    /// On the state's thread, between two of Lua's own steps (from a module function, never
    /// from the allocator or a finalizer), and `value` keeps the collector's invariants.
    unsafe fn write<T: Copy>(&self, offset: usize, value: T) {
        // SAFETY: as `read` for the address; the caller's contract for the moment.
        unsafe { (self.g.add(offset) as *mut T).write(value) }
    }
}

/// Where a C function object holds its C function (Lua 5.1's `CClosure`, LuaJIT's `GCfuncC`):
/// the object `lua_topointer` gives, this many bytes in (`coroutines.rs` patches it).
#[cfg(any(feature = "lua51", feature = "luajit"))]
pub(crate) const C_FUNCTION_OFFSET: usize = layout::CFUNCTION_F;

/// Lua 5.1: an absolute threshold; the estimate is kept in `estimate`.
#[cfg(feature = "lua51")]
mod layout {
    layout! {
        THREAD_GLOBAL: usize = 32,
        FREALLOC: usize = 16,
        UD: usize = 24,
        GCSTATE: usize = 33,
        THRESHOLD: usize = 112,
        TOTALBYTES: usize = 120,
        ESTIMATE: usize = 128,
        PAUSE: usize = 144,
        REGISTRY: usize = 160,
        STATE_PAUSE: u8 = 0,
        STATES: u8 = 5,
        // A C function object (`CClosure`): where its C function is.
        CFUNCTION_F: usize = 32,
    }
}

/// Lua 5.1's and LuaJIT's threshold (`estimate / 100 * pause`) once the running finalizer
/// returns: `GCSfinalize` takes `GCFINALIZECOST` (100) off the estimate after each finalizer,
/// while it stays above that.
#[cfg(any(feature = "lua51", feature = "luajit"))]
fn threshold_after_finalizer(estimate: u64, pause: i64) -> u64 {
    const GCFINALIZECOST: u64 = 100;
    let estimate = if estimate > GCFINALIZECOST { estimate - GCFINALIZECOST } else { estimate };
    // Wrapping, as Lua's unsigned arithmetic: 5.1's estimate itself can wrap below zero at a
    // memory error, and the threshold Lua sets then is this product.
    (estimate / 100).wrapping_mul(pause.max(0) as u64)
}

#[cfg(feature = "lua51")]
impl Internals {
    fn total_bytes(&self) -> u64 {
        self.read::<usize>(layout::TOTALBYTES) as u64
    }

    fn registry(&self) -> usize {
        self.read::<usize>(layout::REGISTRY)
    }

    fn state_is_valid(&self) -> bool {
        self.read::<u8>(layout::GCSTATE) < layout::STATES
    }

    pub(crate) fn phase(&self) -> Phase {
        if self.read::<u8>(layout::GCSTATE) == layout::STATE_PAUSE {
            Phase::Waiting { threshold: self.read::<usize>(layout::THRESHOLD) as u64 }
        } else {
            Phase::Collecting
        }
    }

    /// The threshold Lua computes for `pause` (in percent) when a cycle ends.
    pub(crate) fn threshold_for(&self, pause: i64) -> u64 {
        (self.estimate() / 100).saturating_mul(pause.max(0) as u64)
    }

    /// Lua's live estimate, set by each cycle's atomic phase: `lua_newstate` never sets it, so
    /// before the module has seen a cycle end, outside the states that follow the atomic phase,
    /// the heap stands for it.
    fn estimate(&self) -> u64 {
        const AFTER_ATOMIC: std::ops::RangeInclusive<u8> = 2..=4; // GCSsweepstring ..= GCSfinalize
        if !self.cycle_ended && !AFTER_ATOMIC.contains(&self.read::<u8>(layout::GCSTATE)) {
            return self.total_bytes();
        }
        self.read::<usize>(layout::ESTIMATE) as u64
    }

    /// # Safety
    /// As [`Internals::write`].
    pub(crate) unsafe fn set_threshold(&self, bytes: u64) {
        // SAFETY: per the contract; below `MAX_LUMEM`, the threshold that means "stopped".
        unsafe { self.write::<usize>(layout::THRESHOLD, bytes.min(usize::MAX as u64 - 3) as usize) };
    }

    /// The pause Lua stores, in percent.
    pub(crate) fn pause(&self) -> i64 {
        i64::from(self.read::<i32>(layout::PAUSE))
    }

    pub(crate) fn generational(&self) -> bool {
        false
    }

    /// `lua_gc(LUA_GCSTOP)` sets the threshold out of reach (`MAX_LUMEM`).
    pub(crate) fn stopped_by_user(&self) -> bool {
        self.read::<usize>(layout::THRESHOLD) == usize::MAX - 2
    }

    /// Lua 5.1 and LuaJIT never collect in an emergency: a refused allocation raises.
    pub(crate) fn collects_after_refusal(&self) -> bool {
        false
    }

    /// The stored setting the GC percent maps to: the pause.
    pub(crate) fn setting(&self) -> Setting {
        Setting::Pause(self.pause())
    }

    pub(crate) fn setting_for(&self, percent: i64) -> Setting {
        Setting::Pause(100 + percent.max(0))
    }

    pub(crate) fn threshold_for_setting(&self) -> u64 {
        self.threshold_for(self.pause())
    }

    /// The threshold Lua sets when the cycle whose finalizers run now ends: each finalizer
    /// takes `GCFINALIZECOST` off the estimate once it returns, this one included (finalizers
    /// still pending after it take theirs too).
    pub(crate) fn threshold_after_cycle(&self) -> u64 {
        threshold_after_finalizer(self.read::<usize>(layout::ESTIMATE) as u64, self.pause())
    }
}

/// Lua 5.2, 5.3 and 5.4: the threshold is `totalbytes` while the debt is negative (`totalbytes +
/// GCdebt` is the heap). 5.4 adds a generational mode with its own multipliers.
#[cfg(any(feature = "lua52", feature = "lua53", feature = "lua54"))]
mod layout {
    #[cfg(feature = "lua52")]
    layout! {
        THREAD_GLOBAL: usize = 24,
        FREALLOC: usize = 0,
        UD: usize = 8,
        TOTALBYTES: usize = 16,
        GCDEBT: usize = 24,
        ESTIMATE: usize = 40,
        REGISTRY: usize = 64,
        GCSTATE: usize = 85,
        GCKIND: usize = 86,
        GCRUNNING: usize = 87,
        PAUSE: usize = 240,
        MAJORINC: usize = 244,
        STATE_PAUSE: u8 = 5,
        STATES: u8 = 6,
        KIND_GENERATIONAL: u8 = 2,
    }
    #[cfg(feature = "lua53")]
    layout! {
        THREAD_GLOBAL: usize = 24,
        FREALLOC: usize = 0,
        UD: usize = 8,
        TOTALBYTES: usize = 16,
        GCDEBT: usize = 24,
        ESTIMATE: usize = 40,
        REGISTRY: usize = 64,
        GCSTATE: usize = 85,
        GCKIND: usize = 86,
        GCRUNNING: usize = 87,
        PAUSE: usize = 180,
        STATE_PAUSE: u8 = 7,
        STATES: u8 = 8,
    }
    /// No generational mode in 5.3.
    #[cfg(feature = "lua53")]
    pub(super) const KIND_GENERATIONAL: u8 = u8::MAX;
    #[cfg(feature = "lua54")]
    layout! {
        THREAD_GLOBAL: usize = 24,
        FREALLOC: usize = 0,
        UD: usize = 8,
        TOTALBYTES: usize = 16,
        GCDEBT: usize = 24,
        ESTIMATE: usize = 32,
        REGISTRY: usize = 64,
        GCSTATE: usize = 101,
        GCKIND: usize = 102,
        GENMINORMUL: usize = 104,
        GCSTOPEM: usize = 103,
        GENMAJORMUL: usize = 105,
        GCSTP: usize = 106,
        PAUSE: usize = 108,
        STATE_PAUSE: u8 = 8,
        STATES: u8 = 9,
        KIND_GENERATIONAL: u8 = 1,
    }
}

#[cfg(any(feature = "lua52", feature = "lua53", feature = "lua54"))]
impl Internals {
    fn total_bytes(&self) -> u64 {
        (self.read::<isize>(layout::TOTALBYTES) + self.read::<isize>(layout::GCDEBT)) as u64
    }

    fn registry(&self) -> usize {
        self.read::<usize>(layout::REGISTRY)
    }

    fn state_is_valid(&self) -> bool {
        self.read::<u8>(layout::GCSTATE) < layout::STATES
    }

    pub(crate) fn generational(&self) -> bool {
        self.read::<u8>(layout::GCKIND) == layout::KIND_GENERATIONAL
    }

    pub(crate) fn phase(&self) -> Phase {
        // Between cycles (incremental) or between collections (generational, whose state stays
        // at "propagate"), the debt is the bytes left before the next step: negative.
        let waiting = self.generational() || self.read::<u8>(layout::GCSTATE) == layout::STATE_PAUSE;
        if waiting && self.read::<isize>(layout::GCDEBT) <= 0 {
            Phase::Waiting { threshold: self.read::<isize>(layout::TOTALBYTES).max(0) as u64 }
        } else {
            Phase::Collecting
        }
    }

    /// The threshold Lua computes for `pause` (in percent) when a cycle ends: `setpause`.
    pub(crate) fn threshold_for(&self, pause: i64) -> u64 {
        (self.estimate() / 100).saturating_mul(pause.max(0) as u64)
    }

    /// Lua's live estimate. Lua 5.4's `lua_newstate` leaves it unset until the first cycle's
    /// atomic phase: before the module has seen a cycle end and outside a cycle's sweep, it is
    /// not read (it may be uninitialised memory), and the heap stands for it.
    fn estimate(&self) -> u64 {
        #[cfg(feature = "lua54")]
        {
            const SWEEPING: std::ops::RangeInclusive<u8> = 3..=7; // GCSswpallgc ..= GCScallfin
            if !self.cycle_ended && !SWEEPING.contains(&self.read::<u8>(layout::GCSTATE)) {
                return self.total_bytes();
            }
        }
        self.read::<usize>(layout::ESTIMATE) as u64
    }

    /// `luaE_setdebt(g, heap - bytes)`: the next cycle starts when the heap reaches `bytes` (at
    /// the next allocation if it already has).
    ///
    /// # Safety
    /// As [`Internals::write`].
    pub(crate) unsafe fn set_threshold(&self, bytes: u64) {
        let heap = self.total_bytes() as i64;
        let threshold = bytes.min(i64::MAX as u64 / 2) as i64;
        // SAFETY: per the contract; the pair keeps `totalbytes + GCdebt` the heap, as Lua's
        // `luaE_setdebt` does.
        unsafe {
            self.write::<isize>(layout::TOTALBYTES, threshold as isize);
            self.write::<isize>(layout::GCDEBT, (heap - threshold) as isize);
        }
    }

    /// The pause Lua stores, in percent (5.4 stores a quarter of it).
    pub(crate) fn pause(&self) -> i64 {
        #[cfg(feature = "lua54")]
        return params::from_quarters(self.read::<u8>(layout::PAUSE));
        #[cfg(not(feature = "lua54"))]
        return i64::from(self.read::<i32>(layout::PAUSE));
    }

    /// Whether `lua_gc(LUA_GCSTOP)` stopped the collector: 5.2 and 5.3 clear `gcrunning`,
    /// 5.4 sets the user bit of `gcstp`.
    pub(crate) fn stopped_by_user(&self) -> bool {
        #[cfg(feature = "lua54")]
        return self.read::<u8>(layout::GCSTP) & 1 != 0;
        #[cfg(not(feature = "lua54"))]
        return self.read::<u8>(layout::GCRUNNING) == 0;
    }

    /// Whether Lua, refused an allocation now, collects in an emergency and asks again: 5.2 while
    /// the collector runs (`gcrunning`), 5.3 always (the state is built), 5.4 unless `gcstopem`
    /// (a stack being resized, the collector at work).
    pub(crate) fn collects_after_refusal(&self) -> bool {
        #[cfg(feature = "lua52")]
        return self.read::<u8>(layout::GCRUNNING) != 0;
        #[cfg(feature = "lua53")]
        return true;
        #[cfg(feature = "lua54")]
        return self.read::<u8>(layout::GCSTOPEM) == 0;
    }

    /// The stored setting the GC percent maps to: the pause in incremental mode; in
    /// generational mode 5.4's major multiplier (in percent), 5.2's major increment.
    pub(crate) fn setting(&self) -> Setting {
        if self.generational() {
            #[cfg(feature = "lua54")]
            return Setting::Multiplier(params::from_quarters(self.read::<u8>(layout::GENMAJORMUL)));
            #[cfg(feature = "lua52")]
            return Setting::Pause(i64::from(self.read::<i32>(layout::MAJORINC)));
        }
        Setting::Pause(self.pause())
    }

    /// The stored setting `percent` maps to in the current mode.
    pub(crate) fn setting_for(&self, percent: i64) -> Setting {
        let percent = percent.max(0);
        if self.generational() {
            #[cfg(feature = "lua54")]
            return Setting::Multiplier(params::stored(percent));
            #[cfg(feature = "lua52")]
            return Setting::Pause(100 + percent);
        }
        #[cfg(feature = "lua54")]
        return Setting::Pause(params::stored(100 + percent));
        #[cfg(not(feature = "lua54"))]
        return Setting::Pause(100 + percent);
    }

    /// The threshold Lua computes from its live estimate and the setting when a cycle ends; in
    /// generational mode, where a collection is due, the heap now.
    pub(crate) fn threshold_for_setting(&self) -> u64 {
        if self.generational() {
            return self.total_bytes();
        }
        self.threshold_for(self.pause())
    }

    /// The threshold Lua sets when the cycle whose finalizers run now ends: in generational mode
    /// (5.4), the next minor collection's, `genminormul`% of the heap further.
    pub(crate) fn threshold_after_cycle(&self) -> u64 {
        // Lua 5.2 runs a cycle's finalizers after it has set the next threshold (`luaC_forcestep`
        // calls `GCTM` once `incstep` reached the pause): it is there to read, in both modes.
        // Its estimate counts only the memory traversed, so the threshold may be below the heap.
        #[cfg(feature = "lua52")]
        if let Phase::Waiting { threshold } = self.phase() {
            return threshold;
        }
        #[cfg(feature = "lua54")]
        if self.generational() {
            let heap = self.total_bytes();
            return heap + heap / 100 * u64::from(self.read::<u8>(layout::GENMINORMUL));
        }
        self.threshold_for(self.pause())
    }
}

/// Lua 5.5: `GCtotalbytes - GCdebt` is the heap; the debt counts down to the next step, so the
/// threshold is `GCtotalbytes` while waiting. Parameters are 8-bit floats.
#[cfg(feature = "lua55")]
mod layout {
    layout! {
        THREAD_GLOBAL: usize = 24,
        FREALLOC: usize = 0,
        UD: usize = 8,
        TOTALBYTES: usize = 16,
        GCDEBT: usize = 24,
        MARKED: usize = 32,
        MAJORMINOR: usize = 40,
        REGISTRY: usize = 64,
        PARAMS: usize = 100,
        GCSTATE: usize = 107,
        GCKIND: usize = 108,
        GCSTOPEM: usize = 109,
        GCSTP: usize = 110,
        STATE_PAUSE: u8 = 8,
        STATES: u8 = 9,
        KIND_INCREMENTAL: u8 = 0,
        // `LUA_GCPMINORMUL`, `LUA_GCPMINORMAJOR`, `LUA_GCPPAUSE`
        PARAM_MINORMUL: usize = 0,
        PARAM_MINORMAJOR: usize = 2,
        PARAM_PAUSE: usize = 3,
    }
}

#[cfg(feature = "lua55")]
impl Internals {
    fn total_bytes(&self) -> u64 {
        (self.read::<isize>(layout::TOTALBYTES) - self.read::<isize>(layout::GCDEBT)) as u64
    }

    fn registry(&self) -> usize {
        self.read::<usize>(layout::REGISTRY)
    }

    fn state_is_valid(&self) -> bool {
        self.read::<u8>(layout::GCSTATE) < layout::STATES
    }

    pub(crate) fn generational(&self) -> bool {
        self.read::<u8>(layout::GCKIND) != layout::KIND_INCREMENTAL
    }

    pub(crate) fn phase(&self) -> Phase {
        let waiting = self.generational() || self.read::<u8>(layout::GCSTATE) == layout::STATE_PAUSE;
        if waiting && self.read::<isize>(layout::GCDEBT) > 0 {
            Phase::Waiting { threshold: self.read::<isize>(layout::TOTALBYTES).max(0) as u64 }
        } else {
            Phase::Collecting
        }
    }

    /// The threshold Lua computes for a pause whose stored byte is `code` when a cycle ends:
    /// `setpause`, `luaO_applyparam(pause, GCmarked)`.
    pub(crate) fn threshold_for_code(&self, code: u8) -> u64 {
        params::apply(code, self.read::<isize>(layout::MARKED).max(0) as i64) as u64
    }

    /// `luaE_setdebt(g, bytes - heap)`.
    ///
    /// # Safety
    /// As [`Internals::write`].
    pub(crate) unsafe fn set_threshold(&self, bytes: u64) {
        let heap = self.total_bytes() as i64;
        let threshold = bytes.min(i64::MAX as u64 / 2) as i64;
        let debt = (threshold - heap).max(0);
        // SAFETY: per the contract; the pair keeps `GCtotalbytes - GCdebt` the heap, as Lua's
        // `luaE_setdebt` does.
        unsafe {
            self.write::<isize>(layout::TOTALBYTES, (heap + debt) as isize);
            self.write::<isize>(layout::GCDEBT, debt as isize);
        }
    }

    fn param(&self, index: usize) -> u8 {
        self.read::<u8>(layout::PARAMS + index)
    }

    /// Whether `lua_gc(LUA_GCSTOP)` stopped the collector (the user bit of `gcstp`).
    pub(crate) fn stopped_by_user(&self) -> bool {
        self.read::<u8>(layout::GCSTP) & 1 != 0
    }

    /// Whether Lua, refused an allocation now, collects in an emergency and asks again: unless
    /// `gcstopem` (a stack being resized, the collector at work).
    pub(crate) fn collects_after_refusal(&self) -> bool {
        self.read::<u8>(layout::GCSTOPEM) == 0
    }

    /// The stored setting the GC percent maps to: the pause in incremental mode, the
    /// minor-major multiplier in generational mode (both 8-bit floats).
    pub(crate) fn setting(&self) -> Setting {
        if self.generational() {
            Setting::Code(self.param(layout::PARAM_MINORMAJOR), 0)
        } else {
            Setting::Code(self.param(layout::PARAM_PAUSE), 100)
        }
    }

    pub(crate) fn setting_for(&self, percent: i64) -> Setting {
        let percent = percent.clamp(0, 1_000_000) as u32;
        if self.generational() {
            Setting::Code(params::encode(percent), 0)
        } else {
            Setting::Code(params::encode(100 + percent), 100)
        }
    }

    pub(crate) fn threshold_for_setting(&self) -> u64 {
        if self.generational() {
            return self.total_bytes();
        }
        self.threshold_for_code(self.param(layout::PARAM_PAUSE))
    }

    /// The threshold Lua sets when the cycle whose finalizers run now ends: in generational
    /// mode, `setminordebt`'s (the minor multiplier applied to the major-minor counter).
    pub(crate) fn threshold_after_cycle(&self) -> u64 {
        if self.generational() {
            let counter = self.read::<isize>(layout::MAJORMINOR).max(0) as i64;
            return self.total_bytes() + params::apply(self.param(layout::PARAM_MINORMUL), counter) as u64;
        }
        self.threshold_for_setting()
    }
}

/// LuaJIT 2.1: an absolute threshold and an estimate in `g->gc`; the registry is a tagged value.
#[cfg(feature = "luajit")]
mod layout {
    layout! {
        THREAD_GLOBAL: usize = 16,
        FREALLOC: usize = 0,
        UD: usize = 8,
        TOTAL: usize = 16,
        THRESHOLD: usize = 24,
        GCSTATE: usize = 33,
        ESTIMATE: usize = 96,
        PAUSE: usize = 108,
        REGISTRY: usize = 272,
        STATE_PAUSE: u8 = 0,
        STATES: u8 = 6,
        // A C function object (`GCfuncC`): where its C function is.
        CFUNCTION_F: usize = 40,
    }
    /// The low 47 bits of a GC64 tagged value hold the object's address.
    pub(super) const ADDRESS_MASK: usize = (1 << 47) - 1;
}

#[cfg(feature = "luajit")]
impl Internals {
    fn total_bytes(&self) -> u64 {
        self.read::<u64>(layout::TOTAL)
    }

    fn registry(&self) -> usize {
        self.read::<usize>(layout::REGISTRY) & layout::ADDRESS_MASK
    }

    fn state_is_valid(&self) -> bool {
        self.read::<u8>(layout::GCSTATE) < layout::STATES
    }

    pub(crate) fn generational(&self) -> bool {
        false
    }

    pub(crate) fn phase(&self) -> Phase {
        if self.read::<u8>(layout::GCSTATE) == layout::STATE_PAUSE {
            Phase::Waiting { threshold: self.read::<u64>(layout::THRESHOLD) }
        } else {
            Phase::Collecting
        }
    }

    /// The threshold LuaJIT computes for `pause` (in percent) when a cycle ends.
    pub(crate) fn threshold_for(&self, pause: i64) -> u64 {
        (self.estimate() / 100).saturating_mul(pause.max(0) as u64)
    }

    /// LuaJIT's live estimate, set by each cycle's atomic phase and 0 before the first: before
    /// the module has seen a cycle end, outside the states that follow the atomic phase, the
    /// heap stands for it.
    fn estimate(&self) -> u64 {
        const AFTER_ATOMIC: std::ops::RangeInclusive<u8> = 3..=5; // GCSsweepstring ..= GCSfinalize
        if !self.cycle_ended && !AFTER_ATOMIC.contains(&self.read::<u8>(layout::GCSTATE)) {
            return self.total_bytes();
        }
        self.read::<u64>(layout::ESTIMATE)
    }

    /// # Safety
    /// As [`Internals::write`].
    pub(crate) unsafe fn set_threshold(&self, bytes: u64) {
        // SAFETY: per the contract; below `LJ_MAX_MEM`, the threshold that means "stopped".
        unsafe { self.write::<u64>(layout::THRESHOLD, bytes.min((1 << 47) - 1)) };
    }

    pub(crate) fn pause(&self) -> i64 {
        i64::from(self.read::<u32>(layout::PAUSE))
    }

    /// `lua_gc(LUA_GCSTOP)` sets the threshold out of reach (`LJ_MAX_MEM`, 2^47 with GC64).
    pub(crate) fn stopped_by_user(&self) -> bool {
        self.read::<u64>(layout::THRESHOLD) == 1 << 47
    }

    /// Lua 5.1 and LuaJIT never collect in an emergency: a refused allocation raises.
    pub(crate) fn collects_after_refusal(&self) -> bool {
        false
    }

    pub(crate) fn setting(&self) -> Setting {
        Setting::Pause(self.pause())
    }

    pub(crate) fn setting_for(&self, percent: i64) -> Setting {
        Setting::Pause(100 + percent.max(0))
    }

    pub(crate) fn threshold_for_setting(&self) -> u64 {
        self.threshold_for(self.pause())
    }

    /// The threshold LuaJIT sets when the cycle whose finalizers run now ends (as Lua 5.1's,
    /// see [`threshold_after_finalizer`]).
    pub(crate) fn threshold_after_cycle(&self) -> u64 {
        threshold_after_finalizer(self.read::<u64>(layout::ESTIMATE), self.pause())
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// The source folder of the Lua this build vendors, with its private headers: the `lua-src`
    /// (or `luajit-src`) package mlua builds from, at the version Cargo.lock names, in cargo's
    /// registry.
    fn vendored_sources() -> PathBuf {
        let package = if cfg!(feature = "luajit") { "luajit-src" } else { "lua-src" };
        let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock")).unwrap();
        let entry = lock.split("[[package]]").find(|p| p.contains(&format!("name = \"{package}\""))).unwrap();
        let version = entry.lines().find_map(|l| l.strip_prefix("version = ")).unwrap().trim_matches('"');
        let home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(&std::env::var_os("HOME").unwrap()).join(".cargo"));
        let registries = std::fs::read_dir(home.join("registry/src")).expect("cargo's registry sources");
        let root = registries
            .map(|r| r.unwrap().path().join(format!("{package}-{version}")))
            .find(|p| p.is_dir())
            .expect("the vendored Lua's sources in cargo's registry");
        let release = if cfg!(feature = "luajit") {
            "luajit2/src"
        } else if cfg!(feature = "lua51") {
            "lua-5.1.5"
        } else if cfg!(feature = "lua52") {
            "lua-5.2.4"
        } else if cfg!(feature = "lua53") {
            "lua-5.3.6"
        } else if cfg!(feature = "lua54") {
            "lua-5.4.9"
        } else {
            "lua-5.5.1"
        };
        root.join(release)
    }

    #[test]
    fn the_layout_is_the_vendored_headers() {
        let sources = vendored_sources();
        assert!(sources.join(if cfg!(feature = "luajit") { "lj_obj.h" } else { "lstate.h" }).exists(), "{sources:?}");
        let probe = std::env::temp_dir().join(format!("lua-system-offsets-{}", std::process::id()));
        let c_file = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/c/offsets.c");
        let mut cc = Command::new("cc");
        cc.arg("-I").arg(&sources).arg(c_file).arg("-o").arg(&probe);
        if cfg!(feature = "luajit") {
            cc.arg("-DLUAJIT");
        }
        let compiled = cc.status().expect("a C compiler");
        assert!(compiled.success(), "tests/c/offsets.c did not compile against {sources:?}");
        let printed = Command::new(&probe).output().expect("the probe runs");
        let _ = std::fs::remove_file(&probe);
        let printed = String::from_utf8(printed.stdout).unwrap();
        let headers: Vec<(&str, u64)> = printed
            .lines()
            .map(|line| {
                let (name, value) = line.split_once(' ').unwrap();
                (name, value.parse().unwrap())
            })
            .collect();
        let mut ours = super::layout::ALL.to_vec();
        let mut theirs = headers.clone();
        ours.sort();
        theirs.sort();
        assert_eq!(ours, theirs, "internals.rs's layout (left) against the headers' (right)");
    }
}
