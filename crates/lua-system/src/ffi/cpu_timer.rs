//! A timer on the CPU time of the thread that runs a state (`CLOCK_THREAD_CPUTIME_ID`), whose
//! expiry interrupts that thread with a signal: how the CPU budget learns it is due without
//! looking at the clock every few thousand instructions (a count hook makes Lua's interpreter
//! test every instruction: BENCHMARKS.md, "The CPU budget").
//!
//! The signal is `SIGRTMIN + 6`, delivered to the thread that armed the timer (`SIGEV_THREAD_ID`).
//! Its handler does only what may be done in one: it reads a slot of a fixed table (the timer's
//! value names the slot, so a signal still queued after its timer is gone finds the slot empty)
//! and calls the function the slot holds, which sets a Lua hook (`lua_sethook`, which Lua
//! allows in a signal handler: lua.c's Ctrl-C does the same). A signal that is not one of these
//! timers' goes to the handler that was installed before.

use std::ffi::c_int;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering::Acquire, Ordering::Release};
use std::time::Duration;

/// What a timer's expiry runs, in the signal handler, with the data given when it was made.
pub(crate) type Fire = unsafe fn(usize);

/// Timers alive at once (one per state with a CPU budget).
const SLOTS: usize = 256;

/// Each slot: the function (0: free) and its data.
static TABLE: [(AtomicUsize, AtomicUsize); SLOTS] = [const { (AtomicUsize::new(0), AtomicUsize::new(0)) }; SLOTS];

/// The handler that was installed before ours, for signals that are not our timers'.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

/// The signal the timers send.
pub(crate) fn signal() -> c_int {
    libc::SIGRTMIN() + 6
}

/// A timer on the calling thread's CPU time. Deleted when dropped.
pub(crate) struct CpuTimer {
    id: libc::timer_t,
    slot: usize,
}

// SAFETY: a `timer_t` is a kernel handle, usable from any thread of the process.
unsafe impl Send for CpuTimer {}
// SAFETY: as above; arming is one system call.
unsafe impl Sync for CpuTimer {}

impl CpuTimer {
    /// A timer on the calling thread's CPU clock that runs `fire(data)` in a signal handler on
    /// this thread when it expires. Not armed. `None` if the table is full or the kernel refuses.
    ///
    /// # Safety
    /// `fire(data)` is async-signal-safe, and valid until the timer is dropped.
    pub(crate) unsafe fn new(fire: Fire, data: usize) -> Option<CpuTimer> {
        install_handler()?;
        let slot = TABLE.iter().position(|(f, _)| {
            f.compare_exchange(0, fire as usize, Acquire, std::sync::atomic::Ordering::Relaxed).is_ok()
        })?;
        TABLE[slot].1.store(data, Release);
        // SAFETY: a zeroed `sigevent` is valid; the fields set are those `SIGEV_THREAD_ID`
        // reads. The clock and the thread are the calling thread's.
        let id = unsafe {
            let mut event: libc::sigevent = std::mem::zeroed();
            event.sigev_notify = libc::SIGEV_THREAD_ID;
            event.sigev_signo = signal();
            event.sigev_value = libc::sigval { sival_ptr: slot as *mut libc::c_void };
            event.sigev_notify_thread_id = libc::gettid();
            let mut id: libc::timer_t = std::ptr::null_mut();
            if libc::timer_create(libc::CLOCK_THREAD_CPUTIME_ID, &mut event, &mut id) != 0 {
                TABLE[slot].0.store(0, Release);
                return None;
            }
            id
        };
        Some(CpuTimer { id, slot })
    }

    /// Expires once after `after` more of the thread's CPU time (0: disarmed).
    pub(crate) fn arm(&self, after: Duration) {
        let spec = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec {
                tv_sec: after.as_secs().min(i64::MAX as u64) as libc::time_t,
                tv_nsec: after.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: a timer of ours, alive until `drop`.
        unsafe { libc::timer_settime(self.id, 0, &spec, std::ptr::null_mut()) };
    }
}

impl Drop for CpuTimer {
    fn drop(&mut self) {
        // The slot first: a signal still queued finds it empty.
        TABLE[self.slot].0.store(0, Release);
        // SAFETY: a timer of ours, deleted once.
        unsafe { libc::timer_delete(self.id) };
    }
}

/// Installs the handler of [`signal`] once; `None` if the kernel refused.
fn install_handler() -> Option<()> {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    let installed = *INSTALLED.get_or_init(|| {
        // SAFETY: a zeroed `sigaction` is valid; the handler is async-signal-safe.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            let mut previous: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal(), &action, &mut previous) != 0 {
                return false;
            }
            let _ = PREVIOUS.set(previous);
        }
        true
    });
    installed.then_some(())
}

/// The signal handler: runs the slot the timer names, or passes the signal on.
extern "C" fn on_signal(signo: c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    const SI_TIMER: c_int = -2;
    // SAFETY: the kernel passes a valid `siginfo_t`; for a POSIX timer (`si_code` SI_TIMER) its
    // `si_value` is the `sigevent`'s, at offset 24 of Linux's 64-bit layout (`si_tid`,
    // `si_overrun`, then the value). Only atomics are read and the slot's function called, which
    // its maker promised is async-signal-safe.
    unsafe {
        if !info.is_null() && (*info).si_code == SI_TIMER {
            let slot = *info.cast::<u8>().add(24).cast::<usize>();
            if slot < SLOTS {
                let (fire, data) = &TABLE[slot];
                let f = fire.load(Acquire);
                if f != 0 {
                    let f: Fire = std::mem::transmute::<usize, Fire>(f);
                    f(data.load(Acquire));
                }
                return;
            }
        }
        // Not ours: to the handler installed before, if it was a function.
        if let Some(previous) = PREVIOUS.get() {
            let handler = previous.sa_sigaction;
            if handler != libc::SIG_DFL && handler != libc::SIG_IGN {
                if previous.sa_flags & libc::SA_SIGINFO != 0 {
                    let f: extern "C" fn(c_int, *mut libc::siginfo_t, *mut libc::c_void) = std::mem::transmute(handler);
                    f(signo, info, context);
                } else {
                    let f: extern "C" fn(c_int) = std::mem::transmute(handler);
                    f(signo);
                }
            }
        }
    }
}
