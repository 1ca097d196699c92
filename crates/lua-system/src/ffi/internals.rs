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
//! 5.4.9, 5.5.1, LuaJIT 2.1), which are also those of Debian's interpreters (5.1.5, 5.2.4, 5.3.6,
//! 5.4.4 and LuaJIT 2.1.0-beta3+git2022: the fields used here sit at the same offsets, printed
//! with `offsetof` from each release's headers). No layout is trusted untested: for each state
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

/// Where a state's global state is, once checked (kept in the module's record of the state).
#[derive(Default)]
pub(crate) struct InternalsCache {
    /// 0 (the default): not checked yet; 1: checked and usable; 2: not usable.
    checked: AtomicU8,
    global: AtomicUsize,
    /// Whether a cycle has ended since the module was loaded (so Lua 5.4's live estimate,
    /// which `lua_newstate` leaves unset until the first cycle's atomic phase, holds a value).
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
        if g.is_null() || (g as usize) % std::mem::align_of::<usize>() != 0 {
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
    /// See [`InternalsCache`]'s field (read for Lua 5.4 only).
    #[cfg_attr(not(feature = "lua54"), allow(dead_code))]
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

    fn write<T: Copy>(&self, offset: usize, value: T) {
        // SAFETY: as `read`; called on the state's thread, between two of Lua's own steps.
        unsafe { (self.g.add(offset) as *mut T).write(value) }
    }
}

/// Lua 5.1: an absolute threshold; the estimate is kept in `estimate`.
#[cfg(feature = "lua51")]
mod layout {
    pub(super) const THREAD_GLOBAL: usize = 32;
    pub(super) const FREALLOC: usize = 16;
    pub(super) const UD: usize = 24;
    pub(super) const GCSTATE: usize = 33;
    pub(super) const THRESHOLD: usize = 112;
    pub(super) const TOTALBYTES: usize = 120;
    pub(super) const ESTIMATE: usize = 128;
    pub(super) const PAUSE: usize = 144;
    pub(super) const REGISTRY: usize = 160;
    pub(super) const STATE_PAUSE: u8 = 0;
    pub(super) const STATES: u8 = 5;
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
        (self.read::<usize>(layout::ESTIMATE) as u64 / 100).saturating_mul(pause.max(0) as u64)
    }

    pub(crate) fn set_threshold(&self, bytes: u64) {
        self.write::<usize>(layout::THRESHOLD, bytes.min(usize::MAX as u64 - 1) as usize);
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
    pub(super) const THREAD_GLOBAL: usize = 24;
    pub(super) const FREALLOC: usize = 0;
    pub(super) const UD: usize = 8;
    pub(super) const TOTALBYTES: usize = 16;
    pub(super) const GCDEBT: usize = 24;
    pub(super) const REGISTRY: usize = 64;
    #[cfg(feature = "lua52")]
    mod release {
        pub(crate) const ESTIMATE: usize = 40;
        pub(crate) const GCSTATE: usize = 85;
        pub(crate) const GCKIND: usize = 86;
        pub(crate) const GCRUNNING: usize = 87;
        pub(crate) const PAUSE: usize = 240;
        pub(crate) const MAJORINC: usize = 244;
        pub(crate) const STATE_PAUSE: u8 = 5;
        pub(crate) const STATES: u8 = 6;
        pub(crate) const KIND_GENERATIONAL: u8 = 2;
    }
    #[cfg(feature = "lua53")]
    mod release {
        pub(crate) const ESTIMATE: usize = 40;
        pub(crate) const GCSTATE: usize = 85;
        pub(crate) const GCKIND: usize = 86;
        pub(crate) const GCRUNNING: usize = 87;
        pub(crate) const PAUSE: usize = 180;
        pub(crate) const STATE_PAUSE: u8 = 7;
        pub(crate) const STATES: u8 = 8;
        pub(crate) const KIND_GENERATIONAL: u8 = u8::MAX; // none in 5.3
    }
    #[cfg(feature = "lua54")]
    mod release {
        pub(crate) const ESTIMATE: usize = 32;
        pub(crate) const GCSTATE: usize = 101;
        pub(crate) const GCKIND: usize = 102;
        pub(crate) const GENMINORMUL: usize = 104;
        pub(crate) const GENMAJORMUL: usize = 105;
        pub(crate) const GCSTP: usize = 106;
        pub(crate) const PAUSE: usize = 108;
        pub(crate) const STATE_PAUSE: u8 = 8;
        pub(crate) const STATES: u8 = 9;
        pub(crate) const KIND_GENERATIONAL: u8 = 1;
    }
    pub(super) use release::*;
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
    pub(crate) fn set_threshold(&self, bytes: u64) {
        let heap = self.total_bytes() as i64;
        let threshold = bytes.min(i64::MAX as u64 / 2) as i64;
        self.write::<isize>(layout::TOTALBYTES, threshold as isize);
        self.write::<isize>(layout::GCDEBT, (heap - threshold) as isize);
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
    pub(super) const THREAD_GLOBAL: usize = 24;
    pub(super) const FREALLOC: usize = 0;
    pub(super) const UD: usize = 8;
    pub(super) const TOTALBYTES: usize = 16;
    pub(super) const GCDEBT: usize = 24;
    pub(super) const MARKED: usize = 32;
    pub(super) const MAJORMINOR: usize = 40;
    pub(super) const REGISTRY: usize = 64;
    pub(super) const PARAMS: usize = 100;
    pub(super) const GCSTATE: usize = 107;
    pub(super) const GCKIND: usize = 108;
    pub(super) const GCSTP: usize = 110;
    pub(super) const STATE_PAUSE: u8 = 8;
    pub(super) const STATES: u8 = 9;
    pub(super) const KIND_INCREMENTAL: u8 = 0;
    /// `LUA_GCPMINORMUL`, `LUA_GCPMINORMAJOR`, `LUA_GCPPAUSE`
    pub(super) const PARAM_MINORMUL: usize = 0;
    pub(super) const PARAM_MINORMAJOR: usize = 2;
    pub(super) const PARAM_PAUSE: usize = 3;
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
    pub(crate) fn set_threshold(&self, bytes: u64) {
        let heap = self.total_bytes() as i64;
        let threshold = bytes.min(i64::MAX as u64 / 2) as i64;
        let debt = (threshold - heap).max(0);
        self.write::<isize>(layout::TOTALBYTES, (heap + debt) as isize);
        self.write::<isize>(layout::GCDEBT, debt as isize);
    }

    fn param(&self, index: usize) -> u8 {
        self.read::<u8>(layout::PARAMS + index)
    }

    /// Whether `lua_gc(LUA_GCSTOP)` stopped the collector (the user bit of `gcstp`).
    pub(crate) fn stopped_by_user(&self) -> bool {
        self.read::<u8>(layout::GCSTP) & 1 != 0
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
    pub(super) const THREAD_GLOBAL: usize = 16;
    pub(super) const FREALLOC: usize = 0;
    pub(super) const UD: usize = 8;
    pub(super) const TOTAL: usize = 16;
    pub(super) const THRESHOLD: usize = 24;
    pub(super) const GCSTATE: usize = 33;
    pub(super) const ESTIMATE: usize = 96;
    pub(super) const PAUSE: usize = 108;
    pub(super) const REGISTRY: usize = 272;
    pub(super) const STATE_PAUSE: u8 = 0;
    pub(super) const STATES: u8 = 6;
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
        (self.read::<u64>(layout::ESTIMATE) / 100).saturating_mul(pause.max(0) as u64)
    }

    pub(crate) fn set_threshold(&self, bytes: u64) {
        self.write::<u64>(layout::THRESHOLD, bytes);
    }

    pub(crate) fn pause(&self) -> i64 {
        i64::from(self.read::<u32>(layout::PAUSE))
    }

    /// `lua_gc(LUA_GCSTOP)` sets the threshold out of reach (`LJ_MAX_MEM`, 2^47 with GC64).
    pub(crate) fn stopped_by_user(&self) -> bool {
        self.read::<u64>(layout::THRESHOLD) == 1 << 47
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
