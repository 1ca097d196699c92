//! `lua_gc`, and everything that depends on how a Lua version encodes its collector settings.
//!
//! Go's GOGC percent `p` means: start a cycle when the heap has grown `p`% over the live size
//! after the previous one. Lua 5.4 expresses the same with the *pause* of its incremental
//! collector (a cycle starts when the heap reaches `pause`% of the live size), so
//! `pause = 100 + p`; in generational mode the *major multiplier* plays that role, so
//! `majormul = p`. Lua 5.4 stores both divided by 4 in a byte: the representable pauses are
//! 0, 4, ..., 1020, so `p` is clamped to 0..=920 and takes effect rounded down to a multiple of 4.
//! The module remembers the exact `p` it was given, so `get_gc_percent` returns it unchanged.
//!
//! While Lua runs finalizers during a collection it answers -1 to every `lua_gc` request; that
//! is reported as [`Busy`].

use std::ffi::c_int;

use mlua::ffi::{self, lua_State};

use crate::text::{Text, text};

/// Lua refuses collector requests now: it is running finalizers during a collection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Busy;

/// Why a requested collection did not happen.
#[derive(Clone, Copy, Debug)]
pub(crate) enum CollectError {
    Busy,
    /// A finalizer raised an error that Lua propagated (Lua 5.4 turns them into warnings, so
    /// this is only a memory error while reporting one).
    Raised(Text),
}

/// The largest GC percent Lua 5.4 can represent: pause 1020 = 100 + 920.
pub(crate) const PERCENT_MAX: i64 = 920;

/// Lua 5.4's default pause, 200, is Go's default GOGC, 100.
pub(crate) const DEFAULT_PERCENT: i64 = 100;

/// The percent the collector really uses for `percent` (clamped to 0..=PERCENT_MAX first).
pub(crate) fn effective_percent(percent: i64) -> i64 {
    pause_for(percent) as i64 - 100
}

/// The heap size at which the next cycle starts, computed as Lua 5.4 does in `setpause`:
/// `(live / 100) * pause`, where `live` is the heap after the last cycle.
pub(crate) fn next_cycle_at(live_after_cycle: u64, effective_percent: i64) -> u64 {
    (live_after_cycle / 100).saturating_mul((100 + effective_percent.max(0)) as u64)
}

/// The pause Lua stores for `percent`: `100 + percent` rounded down to a multiple of 4.
fn pause_for(percent: i64) -> c_int {
    let pause = 100 + percent.clamp(0, PERCENT_MAX) as c_int;
    pause / 4 * 4
}

/// The collector of the state a module function was called from.
pub(crate) struct Collector {
    l: *mut lua_State,
}

impl Collector {
    /// # Safety
    /// `l` is a running state, valid for as long as the collector is used.
    pub(crate) unsafe fn new(l: *mut lua_State) -> Collector {
        Collector { l }
    }

    fn request(&self, what: c_int, data: c_int) -> Result<c_int, Busy> {
        // SAFETY: these requests neither collect nor run finalizers, so they cannot raise.
        let answer = unsafe { ffi::lua_gc(self.l, what, data) };
        if answer == -1 { Err(Busy) } else { Ok(answer) }
    }

    pub(crate) fn is_running(&self) -> Result<bool, Busy> {
        self.request(ffi::LUA_GCISRUNNING, 0)
            .map(|running| running != 0)
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
        let pause = self.pause()?;
        Ok(if pause == pause_for(requested) {
            requested
        } else {
            (pause as i64 - 100).max(0)
        })
    }

    /// Reads the pause. Lua 5.4 has no read-only request for it: `LUA_GCSETPAUSE` answers the
    /// previous value, which is then written back unchanged (it is a multiple of 4, so exact).
    fn pause(&self) -> Result<c_int, Busy> {
        let pause = self.request(ffi::LUA_GCSETPAUSE, 200)?;
        self.request(ffi::LUA_GCSETPAUSE, pause)?;
        Ok(pause)
    }

    pub(crate) fn stop(&self) -> Result<(), Busy> {
        self.request(ffi::LUA_GCSTOP, 0).map(drop)
    }

    pub(crate) fn restart(&self) -> Result<(), Busy> {
        self.request(ffi::LUA_GCRESTART, 0).map(drop)
    }

    /// Applies `percent` (already clamped to 0..=PERCENT_MAX) in whichever mode the collector is.
    ///
    /// Lua 5.4 can only tell the mode by switching to one: `LUA_GCINC` sets the pause and
    /// answers the previous mode. In incremental mode (the default) that is all. In
    /// generational mode the collector is switched back with the new major multiplier, which
    /// makes Lua run one full collection.
    pub(crate) fn apply_percent(&self, percent: i64) -> Result<(), CollectError> {
        let percent = percent.clamp(0, PERCENT_MAX) as ffi::lua_Integer;
        self.protected(apply_percent_raw, percent)
    }

    /// A full collection (`collectgarbage("collect")`), under `lua_pcall`.
    pub(crate) fn collect(&self) -> Result<(), CollectError> {
        self.protected(collect_raw, 0)
    }

    /// Runs `f(argument)` under `lua_pcall`; `f` answers false if Lua refused (busy).
    fn protected(
        &self,
        f: ffi::lua_CFunction,
        argument: ffi::lua_Integer,
    ) -> Result<(), CollectError> {
        let l = self.l;
        // SAFETY: pushes a light C function and an integer (no allocation), calls it protected,
        // and pops what it left: the stack is as it was.
        unsafe {
            ffi::lua_pushcfunction(l, f);
            ffi::lua_pushinteger(l, argument);
            let status = ffi::lua_pcall(l, 1, 1, 0);
            let outcome = if status == ffi::LUA_OK {
                if ffi::lua_toboolean(l, -1) != 0 {
                    Ok(())
                } else {
                    Err(CollectError::Busy)
                }
            } else {
                Err(CollectError::Raised(error_text(l)))
            };
            ffi::lua_settop(l, -2);
            outcome
        }
    }
}

/// The error object on top of the stack, as text, without allocating.
unsafe fn error_text(l: *mut lua_State) -> Text {
    // SAFETY: `lua_tolstring` on a string value does not convert, so it cannot raise.
    unsafe {
        if ffi::lua_type(l, -1) == ffi::LUA_TSTRING {
            let mut len = 0;
            let ptr = ffi::lua_tolstring(l, -1, &mut len);
            let bytes = std::slice::from_raw_parts(ptr.cast::<u8>(), len);
            text!("{}", String::from_utf8_lossy(bytes))
        } else {
            text!("a finalizer raised a non-string error")
        }
    }
}

unsafe extern "C-unwind" fn collect_raw(l: *mut lua_State) -> c_int {
    // SAFETY: called by `Collector::protected` with one integer argument.
    unsafe {
        let done = ffi::lua_gc(l, ffi::LUA_GCCOLLECT, 0) != -1;
        ffi::lua_pushboolean(l, done as c_int);
    }
    1
}

unsafe extern "C-unwind" fn apply_percent_raw(l: *mut lua_State) -> c_int {
    // SAFETY: called by `Collector::protected` with the percent as argument 1.
    unsafe {
        let percent = ffi::lua_tointegerx(l, 1, std::ptr::null_mut()) as c_int;
        let previous_mode = ffi::lua_gc(l, ffi::LUA_GCINC, pause_for(percent as i64), 0, 0);
        let done = match previous_mode {
            -1 => false,
            ffi::LUA_GCGEN => {
                // A major multiplier of 0 cannot be passed (0 means "unchanged"); 1 is stored
                // as 1 / 4 = 0, the same value.
                ffi::lua_gc(l, ffi::LUA_GCGEN, 0, percent.max(1)) != -1
            }
            _ => true,
        };
        ffi::lua_pushboolean(l, done as c_int);
    }
    1
}

impl Busy {
    /// Why, for messages.
    pub(crate) const REASON: &'static str =
        "Lua refuses collector requests while it runs finalizers during a collection";
}
