//! A state's CPU budget: how much CPU time its Lua code may use before every instruction
//! raises an error (`set_cpu_limit`).
//!
//! `ffi/budget_hook.rs` charges the budget when it is due (a timer on the running thread's CPU
//! clock expired) with the CPU time the running thread used since the previous charge
//! (`CLOCK_THREAD_CPUTIME_ID`): the state's own work, whichever thread runs it, and not the
//! time other threads of the process use meanwhile. Time inside one C function (pattern
//! matching, `string.rep`) is charged when it returns, at the next instruction.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::Duration;

use rustix::time::{ClockId, clock_gettime};

const NONE: u64 = u64::MAX;
/// No charge yet: the next one only starts the clock.
const NO_THREAD: u64 = 0;

/// The budget and what has been charged against it.
pub(crate) struct CpuBudget {
    /// The limit in nanoseconds (`NONE`: no limit).
    limit_ns: AtomicU64,
    /// CPU time charged since the limit was set.
    used_ns: AtomicU64,
    /// The thread of the last charge (its kernel id, 0: none yet) and its CPU clock then.
    last_thread: AtomicU64,
    last_clock_ns: AtomicU64,
    /// The Lua thread the budget was set from (the state's main thread, from the host), as an
    /// address: once the budget is spent, its hook too runs at every instruction.
    home_thread: AtomicUsize,
}

impl Default for CpuBudget {
    fn default() -> Self {
        CpuBudget {
            limit_ns: AtomicU64::new(NONE),
            used_ns: AtomicU64::new(0),
            last_thread: AtomicU64::new(0),
            last_clock_ns: AtomicU64::new(0),
            home_thread: AtomicUsize::new(0),
        }
    }
}

impl CpuBudget {
    /// Sets the limit (`None`: none) and starts charging from zero at the first charge (the
    /// first check of running Lua code: what the host's thread does before is not charged).
    /// Returns the previous limit.
    pub(crate) fn set(&self, limit: Option<Duration>) -> Option<Duration> {
        let ns = limit.map_or(NONE, |d| d.as_nanos().min(u128::from(NONE - 1)) as u64);
        self.used_ns.store(0, Relaxed);
        self.last_thread.store(NO_THREAD, Relaxed);
        let previous = self.limit_ns.swap(ns, Relaxed);
        (previous != NONE).then(|| Duration::from_nanos(previous))
    }

    /// Remembers the Lua thread the budget was set from (an address, never dereferenced here).
    pub(crate) fn set_home_thread(&self, thread: usize) {
        self.home_thread.store(thread, Relaxed);
    }

    /// The Lua thread the budget was set from (0: none).
    pub(crate) fn home_thread(&self) -> usize {
        self.home_thread.load(Relaxed)
    }

    /// The limit, if any.
    pub(crate) fn limit(&self) -> Option<Duration> {
        let ns = self.limit_ns.load(Relaxed);
        (ns != NONE).then(|| Duration::from_nanos(ns))
    }

    /// CPU time charged since the limit was set.
    pub(crate) fn used(&self) -> Duration {
        Duration::from_nanos(self.used_ns.load(Relaxed))
    }

    /// Whether the budget is spent (without charging).
    pub(crate) fn spent(&self) -> bool {
        self.used_ns.load(Relaxed) > self.limit_ns.load(Relaxed)
    }

    /// Charges the CPU time the calling thread used since the last charge; whether the budget
    /// is now spent. A charge on another thread than the last one starts from that thread's
    /// clock now (the time since the state changed threads is not known, and not charged).
    pub(crate) fn charge(&self) -> bool {
        if self.spent() {
            return true;
        }
        let (thread, now) = (current_thread(), thread_cpu_ns());
        let last = self.last_clock_ns.swap(now, Relaxed);
        if self.last_thread.swap(thread, Relaxed) == thread {
            self.used_ns.fetch_add(now.saturating_sub(last), Relaxed);
        }
        self.spent()
    }
}

/// The calling thread's kernel id, read once per thread (a system call).
fn current_thread() -> u64 {
    thread_local! {
        static TID: u64 = u64::from(rustix::thread::gettid().as_raw_nonzero().get().unsigned_abs());
    }
    TID.with(|tid| *tid)
}

fn thread_cpu_ns() -> u64 {
    let t = clock_gettime(ClockId::ThreadCPUTime);
    (t.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(t.tv_nsec as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_is_spent_by_work_on_the_thread() {
        let budget = CpuBudget::default();
        assert!(!budget.charge(), "no limit");
        assert_eq!(budget.set(Some(Duration::from_millis(20))), None);
        let mut x = 0u64;
        // Work before the first charge is not the script's.
        for i in 0..5_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        assert!(!budget.charge() && budget.used() == Duration::ZERO, "the first charge starts the clock");
        while !budget.charge() {
            for i in 0..10_000u64 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
            }
        }
        assert!(budget.used() > Duration::from_millis(20) && budget.used() < Duration::from_millis(200));
        assert_eq!(budget.set(None), Some(Duration::from_millis(20)));
        assert!(!budget.charge() && budget.used() < Duration::from_millis(5), "reset");
    }

    #[test]
    fn sleeping_is_not_charged() {
        let budget = CpuBudget::default();
        budget.set(Some(Duration::from_millis(10)));
        budget.charge();
        std::thread::sleep(Duration::from_millis(30));
        assert!(!budget.charge(), "used {:?}", budget.used());
    }
}
