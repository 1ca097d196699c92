//! Which Lua thread of a state runs now, as the module's `coroutine.resume` and `coroutine.wrap`
//! record it (`ffi/running.rs` puts them in place, once something needs to know): the thread a
//! heap sample's stack is read from, and the one the CPU budget's timer interrupts.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// The running thread of one state (`usize` of a `lua_State`; 0 until tracked).
#[derive(Default)]
pub(crate) struct RunningThread {
    running: AtomicUsize,
    main: AtomicUsize,
}

impl RunningThread {
    /// Whether the running thread is tracked.
    pub(crate) fn tracking(&self) -> bool {
        self.main.load(Relaxed) != 0
    }

    /// Starts tracking, with `main`, the state's main thread, running.
    pub(crate) fn start(&self, main: usize) {
        self.running.store(main, Relaxed);
        self.main.store(main, Relaxed);
    }

    /// The thread running now (0: not tracked).
    #[inline(always)]
    pub(crate) fn running(&self) -> usize {
        self.running.load(Relaxed)
    }

    /// The thread a resume is about to run; returns the one to restore when it returns.
    pub(crate) fn enter(&self, thread: usize) -> usize {
        self.running.swap(thread, Relaxed)
    }

    /// Restores the running thread after a resume.
    pub(crate) fn leave(&self, previous: usize) {
        self.running.store(previous, Relaxed);
    }
}
