//! The cycle sentinel: how the module sees every collection cycle end.
//!
//! A sentinel is an unreachable zero-size userdata with a `__gc` metamethod. The cycle that
//! finds it unreachable finalizes it once; its finalizer reports the cycle
//! ([`Record::cycle_ended`]) and makes a new sentinel for the next cycle. Always a new one, never
//! the same one brought back: in generational mode (Lua 5.4, 5.5) an object that survives
//! becomes old and only major collections look at old objects, while a new object is looked at
//! by the very next minor collection. Userdata take `__gc` in every version (tables do not in
//! 5.1 and LuaJIT).
//!
//! The new sentinel is made under a protected call with the state's memory limit lifted for it
//! (a few dozen bytes), so counting does not stop when a script runs into its limit. If Lua
//! cannot allocate it at all, the next call of any module function makes it.
//!
//! In Lua 5.4 and 5.5 the finalizer of a state whose allocator is the module's own usually
//! makes it without a protected call of its own: Lua runs every finalizer under one already (an
//! error there becomes a warning, where 5.2 and 5.3 raise it again in the code that triggered
//! the collection), and when the state's limit admits the block and the metatable is at hand,
//! only the process running out of memory can raise (that cycle is then not counted, and the
//! next call of any module function makes the sentinel). States made elsewhere take the
//! protected way: the allocator the module passes their requests on to may refuse by its own
//! rules. The protected call cost 240 of the 1,200 instructions a cycle cost (callgrind, a
//! coroutine-heavy workload in generational mode, which collects every 110,000 instructions).
//!
//! Every version overwrites the new sentinel's slot with `nil` before popping it. The finalizer
//! runs where the collection found the stack top, which may be inside a Lua function's
//! registers: a value left there is marked whenever a collection runs while that function's
//! top is raised to its frame's end (a metamethod call, a hook), and a sentinel marked once is
//! not finalized by that cycle, and in generational mode grows old and waits for a major
//! collection (a review found counting stalled for thousands of cycles that way).
//!
//! LuaJIT, likewise, does not clear a slot when a C function pops it: inside a Lua function's
//! frame, the popped sentinel would stay reachable through a dead register until the function
//! returns (for a script's main loop, never).
//!
//! An emergency collection (Lua 5.2 to 5.5 run one when an allocation is refused, then try the
//! allocation again) runs no finalizers: the sentinel it finds unreachable waits for the next
//! cycle, which counts itself when it runs it. The emergency cycle itself is reported by
//! [`emergency_collection_ended`]: called by a host that links Lua with `luaC_fullgc` wrapped
//! (the runner: crates/lua-system-cli/c/emergency.c), and by the state's allocator when Lua asks
//! again for what it was refused (`emergency.rs`: where the collector's internals are usable),
//! whichever comes first. Cycles run by `lua_close` are not reported.

use std::ffi::c_int;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering::Relaxed};

use mlua::ffi::{self, lua_State};

use super::{Collector, Record, emergency, protected, states};

/// One state's sentinel: the one waiting for the next cycle, and where its metatable is kept.
///
/// A finalizer run tells its sentinel by address, and the metatable is fetched by an integer
/// reference (the registry's array part): a registry lookup by a light userdata key cost 160
/// instructions here, and a cycle ran three of them (callgrind: 1,500 instructions a cycle in
/// all, 1.3% of a coroutine-heavy run in generational mode, which collects every 100,000
/// instructions or so).
#[derive(Default)]
pub(crate) struct SentinelState {
    /// The address of the sentinel made for the next cycle (`lua_touserdata`: its memory
    /// block, unique while it lives, and it lives until its finalizer has run); 0: none (never
    /// made, or it could not be).
    current: AtomicUsize,
    /// The registry reference (`luaL_ref`) of the sentinels' metatable; 0 until made.
    metatable: AtomicI32,
}

impl SentinelState {
    /// Whether a sentinel must be made (none exists yet, or it could not be made).
    pub(crate) fn missing(&self) -> bool {
        self.current.load(Relaxed) == 0
    }
}

/// Makes a sentinel for the next cycle (and its metatable, the first time), outside the memory
/// limit. On failure the record says the sentinel is missing.
///
/// # Safety
/// `l` is a running thread of the state `record` belongs to, with room for two values.
pub(crate) unsafe fn arm<R: Record>(l: *mut lua_State, record: &R) {
    let sentinel = record.sentinel();
    // Missing until `make` has finished (it sets the address last).
    sentinel.current.store(0, Relaxed);
    let made = record.heap().over_limit(|| {
        // SAFETY: per the contract; `make::<R>` checks the armed data.
        unsafe { protected::call(l, make::<R>, sentinel as *const SentinelState as *mut SentinelState) }
    });
    if made.is_err() {
        // SAFETY: the error object is on top.
        unsafe { ffi::lua_settop(l, -2) };
    }
}

/// Makes one sentinel, leaving nothing reachable on the stack.
unsafe extern "C-unwind" fn make<R: Record>(l: *mut lua_State) -> c_int {
    // SAFETY: only runs for the armed call (see `protected`), whose data is the state's
    // `SentinelState`; pushes at most four values.
    unsafe {
        let Some(sentinel) = protected::armed::<SentinelState>(l) else {
            return protected::NO_RESULTS;
        };
        let sentinel = &*sentinel;
        if !push_metatable(l, sentinel) {
            ffi::lua_settop(l, -2);
            ffi::lua_createtable(l, 0, 1);
            ffi::lua_pushcfunction(l, collected::<R>);
            ffi::lua_setfield(l, -2, c"__gc".as_ptr());
            ffi::lua_pushvalue(l, -1);
            sentinel.metatable.store(ffi::luaL_ref(l, ffi::LUA_REGISTRYINDEX), Relaxed);
        }
        make_with_metatable(l, sentinel);
    }
    protected::NO_RESULTS
}

/// Pushes the sentinels' metatable; false if there is none yet (it pushed something else). A
/// script with `debug` can overwrite the registry entry: anything but a table is replaced (a
/// table is used as it is, as any metatable a script can reach).
///
/// # Safety
/// `l` has room for one value. Allocates nothing, raises nothing.
unsafe fn push_metatable(l: *mut lua_State, sentinel: &SentinelState) -> bool {
    // SAFETY: per the contract; `lua_rawgeti` on the registry's array part raises nothing.
    unsafe {
        let reference = sentinel.metatable.load(Relaxed);
        if reference > 0 {
            ffi::lua_rawgeti(l, ffi::LUA_REGISTRYINDEX, reference.into());
        } else {
            ffi::lua_pushnil(l);
        }
        ffi::lua_type(l, -1) == ffi::LUA_TTABLE
    }
}

/// Makes the sentinel, its metatable on top of the stack (popped); records its address last.
///
/// # Safety
/// `l` has room for three more values. Allocates the userdata: raises if it cannot.
unsafe fn make_with_metatable(l: *mut lua_State, sentinel: &SentinelState) {
    // SAFETY: per the contract.
    unsafe {
        new_userdata(l);
        let address = ffi::lua_touserdata(l, -1) as usize;
        ffi::lua_pushvalue(l, -2);
        ffi::lua_setmetatable(l, -2);
        sentinel.current.store(address, Relaxed);
        // Overwrite the sentinel's slot before popping it (see the module docs).
        ffi::lua_pushnil(l);
        ffi::lua_replace(l, -2);
        ffi::lua_settop(l, -3);
    }
}

/// The bytes a sentinel takes at most (a userdata of no bytes and no user values: 40 in 5.4).
#[cfg(any(feature = "lua54", feature = "lua55"))]
const SENTINEL_BYTES: usize = 64;

/// Lua 5.4 and 5.5, from the finalizer: makes the next sentinel without a protected call when
/// nothing but the system allocator can fail it (see the module docs); false if it must be
/// made the guarded way ([`arm`]).
///
/// # Safety
/// `l` runs the sentinel's finalizer of the state `record` belongs to (or a script's call of
/// it), with room for four values.
#[cfg(any(feature = "lua54", feature = "lua55"))]
unsafe fn arm_directly<R: Record>(l: *mut lua_State, record: &R) -> bool {
    let sentinel = record.sentinel();
    if record.chain().is_some() || !record.heap().admits(SENTINEL_BYTES) {
        return false; // another allocator decides, or at the limit: lifted, under protection
    }
    // SAFETY: per the contract. If the allocation raises, the error leaves through this frame
    // (no destructors in it) into the finalizer's protected call, with the sentinel missing:
    // the next module call makes it.
    unsafe {
        sentinel.current.store(0, Relaxed);
        new_userdata(l);
        if !push_metatable(l, sentinel) {
            ffi::lua_settop(l, -3); // a userdata with no finalizer: plain garbage
            return false;
        }
        ffi::lua_setmetatable(l, -2);
        sentinel.current.store(ffi::lua_touserdata(l, -1) as usize, Relaxed);
        // Overwrite the sentinel's slot before popping it (see the module docs).
        ffi::lua_pushnil(l);
        ffi::lua_replace(l, -2);
        ffi::lua_settop(l, -2);
    }
    true
}

/// A userdata of zero bytes (and no user values, in 5.4 and 5.5).
unsafe fn new_userdata(l: *mut lua_State) {
    // SAFETY: pushes one value.
    unsafe {
        #[cfg(any(feature = "lua54", feature = "lua55"))]
        ffi::lua_newuserdatauv(l, 0, 0);
        #[cfg(not(any(feature = "lua54", feature = "lua55")))]
        ffi::lua_newuserdata(l, 0);
    }
}

/// An emergency collection of `l`'s state (Lua's `luaC_fullgc(L, 1)`) has just completed a cycle:
/// reported as the sentinel reports the others (it runs no finalizers, so the sentinel cannot).
/// Nothing for a state the module is not in.
///
/// # Safety
/// `l` is a thread of a live state, on the thread running it, right after Lua's emergency
/// collection returned (no Lua call is made: the allocation Lua retries next is still pending).
pub(crate) unsafe fn emergency_collection_ended<R: Record>(l: *mut lua_State) {
    // SAFETY: per the contract; the record outlives the state.
    unsafe {
        let Some(record) = states::record::<R>(l) else { return };
        emergency::report(record, l);
    }
}

/// The sentinels' `__gc`: a cycle has completed. Argument 1 must be the state's current
/// sentinel; anything else (a script calling this function itself) is ignored.
unsafe extern "C-unwind" fn collected<R: Record>(l: *mut lua_State) -> c_int {
    // SAFETY: reads argument 1; the record outlives the state's finalizers.
    unsafe {
        let Some(record) = states::record::<R>(l) else {
            return 0; // LuaJIT closing: the state's own allocator is back
        };
        if ffi::lua_type(l, 1) != ffi::LUA_TUSERDATA {
            return 0;
        }
        let address = ffi::lua_touserdata(l, 1) as usize;
        if address == 0 || address != record.sentinel().current.load(Relaxed) {
            return 0;
        }
        // The next sentinel first: the cycle's figures (the live heap, the threshold Lua will
        // set from the heap in generational mode) then include its bytes, as Lua's will.
        #[cfg(any(feature = "lua54", feature = "lua55"))]
        let armed = arm_directly::<R>(l, record);
        #[cfg(not(any(feature = "lua54", feature = "lua55")))]
        let armed = false;
        if !armed {
            arm::<R>(l, record);
        }
        record.internals().note_cycle_end();
        let _ =
            catch_unwind(AssertUnwindSafe(|| record.cycle_ended(&Collector::with_internals(l, record.internals()))));
    }
    0
}
