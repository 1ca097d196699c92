//! Emergency collections, seen from the state's allocator.
//!
//! Lua 5.2 to 5.5, refused a growth, may collect in full at once (`luaC_fullgc(L, 1)`, an
//! "emergency" collection) and then ask the allocator again with the same arguments. Such a
//! cycle runs no finalizers, so the cycle sentinel cannot count it (`sentinel.rs`). A host can
//! report it by wrapping `luaC_fullgc` (the runner does: `emergency_collection_ended`); a stock
//! interpreter loading `system.so` cannot. Here the allocator sees it instead: a refusal after
//! which Lua will collect is remembered, and when the same request comes again, the emergency
//! cycle between the two has completed and is reported, unless the host already reported it.
//!
//! Whether Lua collects after a refusal is Lua's own test, read in its global state (so only
//! where the collector's internals are usable, `internals.rs`): 5.2 collects while the collector
//! runs (`gcrunning`), 5.3 always once the state is built, 5.4 and 5.5 unless `gcstopem` says
//! not now (set while a stack is resized and while the collector itself works). Where Lua does
//! not collect, it raises "not enough memory" and the next request is a new one, even when its
//! arguments happen to be the same: hence the test at the refusal, not at the retry. A retry
//! refused again is not remembered (Lua raises then, it does not collect twice).
//!
//! Lua 5.1 and LuaJIT have no emergency collections: nothing here runs for them.

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use mlua::ffi::lua_State;

use super::{Collector, Record};

/// Whether this Lua collects in an emergency.
const EMERGENCY_COLLECTIONS: bool =
    cfg!(any(feature = "lua52", feature = "lua53", feature = "lua54", feature = "lua55"));

/// One state's watch for emergency collections.
#[derive(Default)]
pub(crate) struct Emergencies {
    /// The state's main thread (set when the module is loaded; 0 before): the thread a report
    /// reads the collector through, from inside the allocator, which gets no thread.
    main: AtomicUsize,
    /// The refused request Lua will make again after collecting; `nsize` 0: none.
    block: AtomicUsize,
    osize: AtomicUsize,
    nsize: AtomicUsize,
    /// Emergency collections reported so far, by the host's wrapper or by the allocator.
    reported: AtomicU64,
    /// `reported` when the pending refusal was made.
    reported_before: AtomicU64,
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

    /// Remembers a refused request if Lua will collect and ask again.
    #[cold]
    fn refused<R: Record>(&self, record: &R, block: *mut c_void, osize: usize, nsize: usize) {
        if self.main.load(Relaxed) == 0 {
            return;
        }
        let Some(internals) = record.internals().checked() else { return };
        if !internals.collects_after_refusal() {
            return;
        }
        self.block.store(block as usize, Relaxed);
        self.osize.store(osize, Relaxed);
        self.reported_before.store(self.reported.load(Relaxed), Relaxed);
        self.nsize.store(nsize, Relaxed);
    }

    /// A request while a refusal is pending: whether it is Lua asking again (then the emergency
    /// collection has completed, and is reported here unless the host reported it).
    ///
    /// # Safety
    /// Called by the state's allocator, on the thread running the state.
    #[cold]
    unsafe fn retried<R: Record>(&self, record: &R, block: *mut c_void, osize: usize, nsize: usize) -> bool {
        let pending = self.nsize.swap(0, Relaxed);
        let again = pending == nsize && self.block.load(Relaxed) == block as usize && self.osize.load(Relaxed) == osize;
        if again && self.reported.load(Relaxed) == self.reported_before.load(Relaxed) {
            // SAFETY: the main thread lives as long as the state; Lua is between its emergency
            // collection and the allocation it retries, where the host's wrapper reports too.
            unsafe { report(record, self.main.load(Relaxed) as *mut lua_State) };
        }
        again
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

/// Serves a request with `serve`, watching for the emergency collections it leads to.
///
/// # Safety
/// `ud` is the state's record of type `R`, alive for the call; called by the state's allocator
/// (the `lua_Alloc` contract), with `serve` the allocator's own work.
#[inline(always)]
pub(crate) unsafe fn watch<R: Record>(
    ud: *mut c_void,
    block: *mut c_void,
    osize: usize,
    nsize: usize,
    serve: impl FnOnce() -> *mut c_void,
) -> *mut c_void {
    // A free may be the state's last (the record goes with it): nothing is read for one.
    if !EMERGENCY_COLLECTIONS || nsize == 0 {
        return serve();
    }
    // SAFETY: per the contract.
    let record = unsafe { &*(ud as *const R) };
    let emergencies = record.emergencies();
    // SAFETY: per the contract.
    let retry = emergencies.nsize.load(Relaxed) != 0 && unsafe { emergencies.retried(record, block, osize, nsize) };
    let new = serve();
    if new.is_null() && !retry {
        emergencies.refused(record, block, osize, nsize);
    }
    new
}
