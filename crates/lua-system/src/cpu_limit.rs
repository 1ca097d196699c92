//! The process-wide limit on CPUs executing at once: Go's GOMAXPROCS, made real.
//!
//! * The CPUs usable at start are the affinity mask of the process when the module is first
//!   used (the runner uses it at start). [`num_cpu`] is their count, like Go's `NumCPU`.
//! * The default limit is the `GOMAXPROCS` environment variable when it holds a positive
//!   integer, otherwise [`std::thread::available_parallelism`] (affinity and cgroup CPU quota).
//! * Setting the limit to `n` narrows the CPU affinity of every thread of the process to the
//!   first `n` of the CPUs usable at start; raising it widens it back. New threads inherit the
//!   mask of the thread that creates them, so they obey the limit too. Values above the usable
//!   CPU count are kept (as Go keeps them) and mean "all of them"; the value is capped at 1024,
//!   Go's own maximum.
//! * Reads are one atomic load. Changes are serialised by one lock, which readers never take.
//!   Rust hosts can subscribe to changes to size their own thread pools.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};

/// Go's cap on GOMAXPROCS.
pub const MAX_PROCS_CAP: usize = 1024;

/// A callback run after each change with `(previous, current)`.
type Listener = Box<dyn Fn(usize, usize) + Send + Sync>;

struct Procs {
    current: AtomicUsize,
    /// The CPUs usable at start, ascending.
    cpus: Vec<usize>,
    /// Serialises changes; holds the subscribers.
    changes: Mutex<Listeners>,
}

#[derive(Default)]
struct Listeners {
    next_id: u64,
    listeners: Vec<(u64, Listener)>,
}

static PROCS: OnceLock<Procs> = OnceLock::new();

thread_local! {
    /// Set while this thread runs change listeners: a listener changing the limit would
    /// deadlock on the change lock.
    static IN_LISTENER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks this thread as running listeners until dropped (also if a listener panics).
struct ListenerGuard;

impl ListenerGuard {
    fn enter() -> ListenerGuard {
        IN_LISTENER.with(|flag| flag.set(true));
        ListenerGuard
    }
}

impl Drop for ListenerGuard {
    fn drop(&mut self) {
        IN_LISTENER.with(|flag| flag.set(false));
    }
}

fn procs() -> &'static Procs {
    PROCS.get_or_init(|| {
        let cpus = affinity::usable_cpus();
        let from_env =
            std::env::var("GOMAXPROCS").ok().and_then(|v| v.trim().parse::<usize>().ok()).filter(|&n| n >= 1);
        let default = std::thread::available_parallelism().map_or(cpus.len(), |n| n.get());
        let current = from_env.unwrap_or(default).min(MAX_PROCS_CAP);
        if from_env.is_some() && current < cpus.len() {
            // Best effort at start: if the affinity cannot be narrowed the value still stands,
            // and a later `set_max_procs` reports the error.
            let _ = affinity::restrict_process(&cpus[..current], &cpus);
        }
        Procs { current: AtomicUsize::new(current), cpus, changes: Mutex::new(Listeners::default()) }
    })
}

/// The current limit (Go's `runtime.GOMAXPROCS(0)`). One atomic load.
pub fn max_procs() -> usize {
    procs().current.load(Relaxed)
}

/// Logical CPUs usable by the process at start (Go's `runtime.NumCPU()`).
pub fn num_cpu() -> usize {
    procs().cpus.len()
}

/// Why [`set_max_procs`] changed nothing.
#[derive(Debug)]
#[non_exhaustive]
pub enum SetMaxProcsError {
    /// `n` was 0.
    Zero,
    /// Called from a change listener.
    FromListener,
    /// The kernel refused to change a thread's CPU affinity (a restricted container, for
    /// instance); threads already changed were restored.
    Affinity(std::io::Error),
}

impl fmt::Display for SetMaxProcsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetMaxProcsError::Zero => f.write_str("the limit must be at least 1"),
            SetMaxProcsError::FromListener => f.write_str("cannot change the limit from a change listener"),
            SetMaxProcsError::Affinity(e) => write!(f, "cannot set the CPU affinity of the process's threads: {e}"),
        }
    }
}

impl std::error::Error for SetMaxProcsError {}

/// Sets the limit to `n` (capped at [`MAX_PROCS_CAP`]) and returns the previous one. On error
/// nothing changed.
pub fn set_max_procs(n: usize) -> Result<usize, SetMaxProcsError> {
    if n == 0 {
        return Err(SetMaxProcsError::Zero);
    }
    if IN_LISTENER.with(|flag| flag.get()) {
        return Err(SetMaxProcsError::FromListener);
    }
    let procs = procs();
    let n = n.min(MAX_PROCS_CAP);
    let changes = procs.changes.lock().unwrap_or_else(|poison| poison.into_inner());
    let previous = procs.current.load(Relaxed);
    if n == previous {
        return Ok(previous);
    }
    let usable = |limit: usize| &procs.cpus[..limit.min(procs.cpus.len())];
    if usable(n) != usable(previous) {
        affinity::restrict_process(usable(n), usable(previous)).map_err(SetMaxProcsError::Affinity)?;
    }
    procs.current.store(n, Relaxed);
    let _guard = ListenerGuard::enter();
    for (_, listener) in &changes.listeners {
        listener(previous, n);
    }
    Ok(previous)
}

/// Runs `listener(previous, current)` after every change of the limit, on the thread that made
/// it, until the returned [`Subscription`] is dropped. Listeners run one change at a time, in
/// order; they must not change the limit themselves.
pub fn on_max_procs_change(listener: impl Fn(usize, usize) + Send + Sync + 'static) -> Subscription {
    let mut changes = procs().changes.lock().unwrap_or_else(|poison| poison.into_inner());
    let id = changes.next_id;
    changes.next_id += 1;
    changes.listeners.push((id, Box::new(listener)));
    Subscription { id }
}

/// Keeps a listener registered; dropping it unregisters the listener.
#[must_use = "dropping the subscription unregisters the listener"]
#[derive(Debug)]
pub struct Subscription {
    id: u64,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut changes = procs().changes.lock().unwrap_or_else(|poison| poison.into_inner());
        changes.listeners.retain(|(id, _)| *id != self.id);
    }
}

#[cfg(target_os = "linux")]
mod affinity {
    use super::BTreeSet;
    use rustix::process::Pid;
    use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};
    use std::io;

    /// The CPUs in this thread's affinity mask (at least one).
    pub(super) fn usable_cpus() -> Vec<usize> {
        match sched_getaffinity(None) {
            Ok(set) => (0..CpuSet::MAX_CPU).filter(|&cpu| set.is_set(cpu)).collect(),
            Err(_) => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
        }
    }

    fn cpu_set(cpus: &[usize]) -> CpuSet {
        let mut set = CpuSet::new();
        for &cpu in cpus {
            set.set(cpu);
        }
        set
    }

    fn threads() -> io::Result<BTreeSet<i32>> {
        std::fs::read_dir("/proc/self/task")?
            .map(|entry| Ok(entry?.file_name().to_str().and_then(|name| name.parse().ok()).unwrap_or(0)))
            .filter(|tid: &io::Result<i32>| !matches!(tid, Ok(0)))
            .collect()
    }

    /// Sets the affinity of every thread to `cpus`. Threads started meanwhile inherit the mask
    /// of their creator, which may not have been changed yet, so the thread list is read again
    /// until no new thread shows up. On failure, threads already changed get `previous` back.
    pub(super) fn restrict_process(cpus: &[usize], previous: &[usize]) -> io::Result<()> {
        let set = cpu_set(cpus);
        let mut done = BTreeSet::new();
        loop {
            let pending: Vec<i32> = threads()?.difference(&done).copied().collect();
            if pending.is_empty() {
                return Ok(());
            }
            for tid in pending {
                let refused = crate::faults::active(crate::faults::Fault::AffinityRefused) && !done.is_empty();
                let result = if refused {
                    Some(Err(rustix::io::Errno::PERM))
                } else {
                    Pid::from_raw(tid).map(|pid| sched_setaffinity(Some(pid), &set))
                };
                match result {
                    Some(Ok(())) | None => {}
                    Some(Err(rustix::io::Errno::SRCH)) => {} // exited meanwhile
                    Some(Err(e)) => {
                        let restore = cpu_set(previous);
                        for &tid in &done {
                            if let Some(pid) = Pid::from_raw(tid) {
                                let _ = sched_setaffinity(Some(pid), &restore);
                            }
                        }
                        return Err(e.into());
                    }
                }
                done.insert(tid);
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod affinity {
    //! Elsewhere the limit is recorded and published to subscribers, without affinity changes.
    use super::BTreeSet;
    use std::io;

    pub(super) fn usable_cpus() -> Vec<usize> {
        (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect()
    }

    pub(super) fn restrict_process(_cpus: &[usize], _previous: &[usize]) -> io::Result<()> {
        let _ = BTreeSet::<i32>::new();
        Ok(())
    }
}
