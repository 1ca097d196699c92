//! The runner's backstop behind `--cpu-limit`: what the state's count hook cannot stop (one C
//! function running long, such as a backtracking pattern match) the kernel does. The process's
//! CPU time is capped (`RLIMIT_CPU`) a little above the script's budget; past it the kernel
//! sends `SIGXCPU`, and the runner prints why and exits with status 1.

use std::time::Duration;

/// The CPU time the process may use beyond the script's budget: the runner's own start and
/// monitoring, and the count hook's reaction time.
const GRACE: Duration = Duration::from_secs(1);

/// Caps the process's CPU time at `limit` plus [`GRACE`], whole seconds rounded up.
pub fn arm(limit: Duration) {
    let seconds = (limit + GRACE).as_secs_f64().ceil() as u64;
    // SAFETY: installing a handler that only calls async-signal-safe functions (`write`,
    // `_exit`), then lowering the process's own soft limit.
    unsafe {
        libc::signal(libc::SIGXCPU, on_sigxcpu as *const () as libc::sighandler_t);
        let mut current = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        libc::getrlimit(libc::RLIMIT_CPU, &mut current);
        let soft = seconds.min(current.rlim_max);
        let limit = libc::rlimit { rlim_cur: soft, rlim_max: current.rlim_max };
        libc::setrlimit(libc::RLIMIT_CPU, &limit);
    }
}

extern "C" fn on_sigxcpu(_: libc::c_int) {
    const MESSAGE: &[u8] =
        b"lua-system: CPU limit exceeded: the process used the script's CPU budget and its grace (the count hook could not stop the script: a long C call, or code Lua runs with hooks off)\n";
    // SAFETY: `write` and `_exit` are async-signal-safe.
    unsafe {
        libc::write(2, MESSAGE.as_ptr().cast(), MESSAGE.len());
        libc::_exit(1);
    }
}
