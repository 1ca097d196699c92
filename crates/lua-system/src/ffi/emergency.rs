//! Emergency collections, seen from the state's allocator.
//!
//! Lua 5.2 to 5.5, refused a growth, may collect in full at once (`luaC_fullgc(L, 1)`, an
//! "emergency" collection) and then ask the allocator again with the same arguments. Such a
//! cycle runs no finalizers, so the cycle sentinel cannot count it (`sentinel.rs`). A host can
//! report it by wrapping `luaC_fullgc` (the runner does: `emergency_collection_ended`); a stock
//! interpreter loading `system.so` cannot. Here the allocator sees it instead: a refusal after
//! which Lua will collect puts [`after_refusal`] in the allocator's place (`lua_setallocf`),
//! which passes the collection's frees on, and at the next request puts the allocator back and,
//! when it is the refused one again, reports the emergency cycle that ran in between, unless the
//! host already did. The allocators call [`refuse`] where the memory limit refuses, in tail
//! position: nothing of this is on their path (callgrind: within 0.2% of the instructions
//! without it on table churn, binary trees and closures).
//!
//! Whether Lua collects after a refusal is Lua's own test, read in its global state (so only
//! where the collector's internals are usable, `internals.rs`): 5.2 collects while the collector
//! runs (`gcrunning`), 5.3 always once the state is built, 5.4 and 5.5 unless `gcstopem` says
//! not now (set while a stack is resized and while the collector itself works). Where Lua does
//! not collect, it raises "not enough memory" and the next request is a new one, even when its
//! arguments happen to be the same: hence the test at the refusal, not at the retry. A retry
//! refused again is not watched (Lua raises then, it does not collect twice).
//!
//! Lua 5.1 and LuaJIT have no emergency collections: nothing here runs for them.

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};

use mlua::ffi::{self, lua_State};

use super::{Collector, Record};

/// Whether this Lua collects in an emergency.
const EMERGENCY_COLLECTIONS: bool =
    cfg!(any(feature = "lua52", feature = "lua53", feature = "lua54", feature = "lua55"));

/// One state's watch for emergency collections.
#[derive(Default)]
pub(crate) struct Emergencies {
    /// The state's main thread (set when the module is loaded; 0 before): the thread the
    /// allocator is swapped through and a report reads the collector through, from inside the
    /// allocator, which gets no thread.
    main: AtomicUsize,
    /// The allocator [`after_refusal`] stands in for while a refusal is pending.
    allocator: AtomicUsize,
    /// The refused request Lua will make again after collecting.
    block: AtomicUsize,
    osize: AtomicUsize,
    nsize: AtomicUsize,
    /// Emergency collections reported so far, by the host's wrapper or by the allocator.
    reported: AtomicU64,
    /// `reported` when the pending refusal was made.
    reported_before: AtomicU64,
    /// Lua's retry is being served: its refusal is not watched.
    retrying: AtomicBool,
}

impl Emergencies {
    /// The module was loaded into the state whose main thread is `main` (null: not known).
    pub(crate) fn set_main(&self, main: *mut lua_State) {
        self.main.store(main as usize, Relaxed);
    }

    /// An emergency collection has been reported (by anyone).
    pub(crate) fn note_reported(&self) {
        self.reported.fetch_add(1, Relaxed);
    }
}

/// Answers a growth refused under the memory limit (NULL), after remembering it if Lua will
/// collect and ask again: then [`after_refusal`] takes the allocator's place until the next
/// request. Called in tail position where the allocators refuse (so nothing of it is on their
/// path). Not called where the process's allocator itself fails: a state out of the process's
/// memory counts its emergency cycle with the next one, as without the internals.
///
/// # Safety
/// `ud` is the state's record of type `R`, called from its allocator on the thread running it.
#[cold]
#[inline(never)]
pub(crate) unsafe fn refuse<R: Record>(ud: *mut c_void, block: *mut c_void, osize: usize, nsize: usize) -> *mut c_void {
    if EMERGENCY_COLLECTIONS {
        // SAFETY: per the contract.
        unsafe { watch::<R>(ud, block, osize, nsize) };
    }
    std::ptr::null_mut()
}

/// Remembers the refused request if Lua will collect and ask again.
///
/// # Safety
/// As [`refuse`].
unsafe fn watch<R: Record>(ud: *mut c_void, block: *mut c_void, osize: usize, nsize: usize) {
    // SAFETY: per the contract.
    let record = unsafe { &*(ud as *const R) };
    let emergencies = record.emergencies();
    let main = emergencies.main.load(Relaxed) as *mut lua_State;
    if main.is_null() || emergencies.retrying.load(Relaxed) {
        return;
    }
    let Some(internals) = record.internals().checked() else { return };
    if !internals.collects_after_refusal() {
        return;
    }
    emergencies.block.store(block as usize, Relaxed);
    emergencies.osize.store(osize, Relaxed);
    emergencies.nsize.store(nsize, Relaxed);
    emergencies.reported_before.store(emergencies.reported.load(Relaxed), Relaxed);
    // SAFETY: the main thread lives as long as the state; reading and setting the allocator
    // only read and write two fields of the global state, which Lua reads again at each call.
    unsafe {
        let mut current = std::ptr::null_mut();
        let allocator = ffi::lua_getallocf(main, &mut current);
        emergencies.allocator.store(allocator as usize, Relaxed);
        ffi::lua_setallocf(main, after_refusal::<R>, ud);
    }
}

/// The allocator between a refusal and Lua's next request: frees (the emergency collection's)
/// are passed on; the next request puts the allocator back, reports the emergency cycle if it is
/// the refused request again, and is served.
///
/// # Safety
/// The `lua_Alloc` contract; installed only by [`watch`], with the record as `ud`.
pub(crate) unsafe extern "C" fn after_refusal<R: Record>(
    ud: *mut c_void,
    block: *mut c_void,
    osize: usize,
    nsize: usize,
) -> *mut c_void {
    // SAFETY: `ud` is the record (see `watch`); the allocator stored there is the state's own,
    // a `lua_Alloc` of this module, put back before anything else is served.
    unsafe {
        let record = &*(ud as *const R);
        let emergencies = record.emergencies();
        let allocator: ffi::lua_Alloc =
            std::mem::transmute::<usize, ffi::lua_Alloc>(emergencies.allocator.load(Relaxed));
        if nsize == 0 {
            // A free may be the state's last, and take the record with it: nothing after.
            return allocator(ud, block, osize, nsize);
        }
        let main = emergencies.main.load(Relaxed) as *mut lua_State;
        ffi::lua_setallocf(main, allocator, ud);
        let again = emergencies.nsize.load(Relaxed) == nsize
            && emergencies.block.load(Relaxed) == block as usize
            && emergencies.osize.load(Relaxed) == osize;
        if again && emergencies.reported.load(Relaxed) == emergencies.reported_before.load(Relaxed) {
            // Lua is between its emergency collection and the allocation it retries, where the
            // host's wrapper reports too.
            report(record, main);
        }
        emergencies.retrying.store(again, Relaxed);
        let answer = allocator(ud, block, osize, nsize);
        emergencies.retrying.store(false, Relaxed);
        answer
    }
}

/// Reports an emergency collection of `record`'s state, through `l`, as the sentinel reports
/// the other cycles.
///
/// # Safety
/// `l` is a thread of the state `record` accounts, on the thread running it, right after Lua's
/// emergency collection returned (no Lua call is made).
pub(crate) unsafe fn report<R: Record>(record: &R, l: *mut lua_State) {
    record.emergencies().note_reported();
    record.internals().note_cycle_end();
    // SAFETY: per the contract.
    let collector = unsafe { Collector::with_internals(l, record.internals()) };
    let _ = catch_unwind(AssertUnwindSafe(|| record.cycle_ended(&collector)));
}
