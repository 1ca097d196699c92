//! The runner's backstop behind `--cpu-limit`: what the state's CPU budget cannot stop (one C
//! function running long, such as a backtracking pattern match, or code Lua runs with hooks
//! off) a timer on the CPU time of the thread that runs the script stops. Only that thread
//! counts: the threads that serve `--listen` or sample `--mem-profile` spend nothing of the
//! script's budget. Past the budget and its grace the timer's signal (`SIGXCPU`, sent to that
//! thread) ends the process with status 1 and says why.

use std::time::Duration;

/// The CPU time the script's thread may use beyond the script's budget: the runner's own work
/// on that thread, and the budget's reaction time.
const GRACE: Duration = Duration::from_secs(1);

/// Ends the process once the calling thread (the one that runs the script) has used `limit`
/// plus [`GRACE`] of CPU time. The timer lives as long as the process.
pub fn arm(limit: Duration) {
    let after = limit + GRACE;
    // SAFETY: installing a handler that only calls async-signal-safe functions (`write`,
    // `_exit`); a zeroed `sigevent` with the fields `SIGEV_THREAD_ID` reads; a timer on this
    // thread's CPU clock, armed once and never deleted.
    unsafe {
        libc::signal(libc::SIGXCPU, on_sigxcpu as *const () as libc::sighandler_t);
        let mut event: libc::sigevent = std::mem::zeroed();
        event.sigev_notify = libc::SIGEV_THREAD_ID;
        event.sigev_signo = libc::SIGXCPU;
        event.sigev_notify_thread_id = libc::gettid();
        let mut timer: libc::timer_t = std::ptr::null_mut();
        if libc::timer_create(libc::CLOCK_THREAD_CPUTIME_ID, &mut event, &mut timer) != 0 {
            return;
        }
        let spec = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec { tv_sec: after.as_secs() as libc::time_t, tv_nsec: after.subsec_nanos() as _ },
        };
        libc::timer_settime(timer, 0, &spec, std::ptr::null_mut());
    }
}

extern "C" fn on_sigxcpu(_: libc::c_int) {
    const MESSAGE: &[u8] =
        b"lua-system: CPU limit exceeded: the script used its CPU budget and its grace (the budget could not stop it: a long C call, or code Lua runs with hooks off)\n";
    // SAFETY: `write` and `_exit` are async-signal-safe.
    unsafe {
        libc::write(2, MESSAGE.as_ptr().cast(), MESSAGE.len());
        libc::_exit(1);
    }
}
