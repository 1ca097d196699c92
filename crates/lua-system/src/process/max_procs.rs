//! The process-wide limit on CPUs executing Lua at once: Go's GOMAXPROCS.
//!
//! * [`num_cpu`] is the number of CPUs in the process's affinity mask when the module is first
//!   used, like Go's `NumCPU`: the main thread's mask (`sched_getaffinity` of the process id,
//!   which names the main thread), whichever thread asks first. A worker thread pinned to one
//!   CPU that happens to ask first does not make it 1.
//! * The default limit, fixed when first read or changed, is Go 1.25's: the `GOMAXPROCS` environment
//!   variable when it holds a positive integer; otherwise [`num_cpu`], lowered to the cgroup
//!   CPU bandwidth limit when one is set (`quota / period` rounded up, and at least 2, as Go
//!   rounds it). Go reads the limit of the process's own cgroup only; here the tightest limit
//!   from that cgroup up to the root of the mounted hierarchy counts, since a parent's limit
//!   binds its children too.
//! * [`set_max_procs`] (`go_max_procs(n)`) stores the limit and runs the listeners of
//!   [`on_max_procs_change`]; it changes no setting of the operating system: no thread's CPU
//!   affinity, nothing a child process inherits. As Go's GOMAXPROCS limits Go's scheduler and
//!   not the CPUs the process may use, the limit is for the host to apply to the pools that run
//!   its Lua states. A child started by `os.execute` or `io.popen` sees every CPU of the process.
//!   (Affinity could not serve: a child inherits the mask of the thread that starts it, and
//!   glibc's `system` and `popen` start children with `posix_spawn`, which runs no `fork`
//!   handler that could restore it. Nor would a thread created while the limit changed be sure
//!   to get the new mask; with nothing applied to threads, no such race exists.)
//! * Values above the CPU count are kept (as Go keeps them) and mean "all of them"; the value is
//!   capped at 1024, Go's own maximum.
//! * Reads are one atomic load. Changes are serialised by one lock, which readers never take.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};

/// Go's cap on GOMAXPROCS.
pub const MAX_PROCS_CAP: usize = 1024;

/// A callback run after each change with `(previous, current)`.
type Listener = Box<dyn Fn(usize, usize) + Send + Sync>;

struct Procs {
    /// The limit; 0 until the default is first read (reading the cgroup limit takes a dozen
    /// system calls, which a script that never asks should not pay at start-up).
    current: AtomicUsize,
    /// The CPUs in the process's affinity mask at first use.
    cpus: usize,
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
        let cpus = system::process_cpus();
        Procs { current: AtomicUsize::new(0), cpus, changes: Mutex::new(Listeners::default()) }
    })
}

/// The limit now: the default (read once, from the environment and the cgroup) until changed.
fn current(procs: &Procs) -> usize {
    match procs.current.load(Relaxed) {
        0 => {
            let from_env = std::env::var("GOMAXPROCS").ok();
            let default = default_limit(from_env.as_deref(), procs.cpus, system::cgroup_cpu_limit());
            // Another thread may have read or set it meanwhile: the first value stays.
            let _ = procs.current.compare_exchange(0, default, Relaxed, Relaxed);
            procs.current.load(Relaxed)
        }
        limit => limit,
    }
}

/// Go 1.25's default GOMAXPROCS: `env` (the `GOMAXPROCS` variable) when it holds a positive
/// integer, otherwise `cpus` lowered to the cgroup CPU limit (already rounded up) but not below
/// 2; capped at [`MAX_PROCS_CAP`].
fn default_limit(env: Option<&str>, cpus: usize, cgroup_limit: Option<usize>) -> usize {
    let from_env = env.and_then(|v| v.trim().parse::<usize>().ok()).filter(|&n| n >= 1);
    let default = match cgroup_limit {
        Some(limit) => cpus.min(limit.max(2)),
        None => cpus,
    };
    from_env.unwrap_or(default).clamp(1, MAX_PROCS_CAP)
}

/// The current limit (Go's `runtime.GOMAXPROCS(0)`). One atomic load.
pub fn max_procs() -> usize {
    current(procs())
}

/// Logical CPUs usable by the process (Go's `runtime.NumCPU()`): the CPUs in the main thread's
/// affinity mask when the module was first used, whichever thread used it first. Computed once
/// per process.
pub fn num_cpu() -> usize {
    procs().cpus
}

/// Why [`set_max_procs`] changed nothing.
#[derive(Debug)]
#[non_exhaustive]
pub enum SetMaxProcsError {
    /// `n` was 0.
    Zero,
    /// Called from a change listener.
    FromListener,
}

impl fmt::Display for SetMaxProcsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetMaxProcsError::Zero => f.write_str("the limit must be at least 1"),
            SetMaxProcsError::FromListener => f.write_str("cannot change the limit from a change listener"),
        }
    }
}

impl std::error::Error for SetMaxProcsError {}

/// Sets the limit to `n` (capped at [`MAX_PROCS_CAP`]), runs the listeners of
/// [`on_max_procs_change`] if it changed, and returns the previous one. Changes no setting of
/// the operating system (no thread's CPU affinity): the host applies the limit to the pools that
/// run its Lua states. On error nothing changed.
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
    let previous = current(procs);
    procs.current.store(n, Relaxed);
    if n != previous {
        let _guard = ListenerGuard::enter();
        for (_, listener) in &changes.listeners {
            listener(previous, n);
        }
    }
    Ok(previous)
}

/// Runs `listener(previous, current)` after every change of the limit, on the thread that made
/// it, until the returned [`Subscription`] is dropped. Listeners run one change at a time, in
/// order; they must not change the limit themselves. This is how a host applies the limit, for
/// instance by resizing the thread pool that runs its Lua states.
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

/// What the operating system says about the process's CPUs.
#[cfg(target_os = "linux")]
mod system {
    use rustix::thread::sched_getaffinity;
    use std::path::{Path, PathBuf};

    /// The CPUs in the main thread's affinity mask (at least one). The process id names the main
    /// thread; if it cannot be read (the main thread has exited), the calling thread's mask.
    pub(super) fn process_cpus() -> usize {
        let main = Some(rustix::process::getpid());
        match sched_getaffinity(main).or_else(|_| sched_getaffinity(None)) {
            Ok(set) => (set.count() as usize).max(1),
            Err(_) => std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }

    /// The CPU bandwidth limit of the process's cgroup, in CPUs rounded up; `None` when there is
    /// none or it cannot be read.
    pub(super) fn cgroup_cpu_limit() -> Option<usize> {
        let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        cpu_limit(&cgroup, &mountinfo)
    }

    /// Which cgroup interface holds the CPU bandwidth limit.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(super) enum Version {
        /// `cpu.cfs_quota_us` and `cpu.cfs_period_us` of the `cpu` controller's hierarchy.
        V1,
        /// `cpu.max` of the unified hierarchy.
        V2,
    }

    /// The limit for a process whose `/proc/self/cgroup` and `/proc/self/mountinfo` read
    /// `cgroup` and `mountinfo`: the tightest limit from its cgroup's directory up to the root of
    /// the mounted hierarchy. A v1 `cpu` controller is preferred (in the hybrid layout the
    /// unified hierarchy holds no CPU controller).
    pub(super) fn cpu_limit(cgroup: &str, mountinfo: &str) -> Option<usize> {
        let (version, mount_point, dir) = [Version::V1, Version::V2]
            .into_iter()
            .find_map(|version| locate(version, cgroup, mountinfo).map(|(m, d)| (version, m, d)))?;
        let mut dir = dir.as_path();
        let mut tightest: Option<usize> = None;
        loop {
            if let Some(limit) = limit_in(version, dir) {
                tightest = Some(tightest.map_or(limit, |t| t.min(limit)));
            }
            match dir.parent() {
                Some(parent) if dir != mount_point => dir = parent,
                _ => return tightest,
            }
        }
    }

    /// The mount point of the hierarchy and the directory of the process's cgroup in it.
    pub(super) fn locate(version: Version, cgroup: &str, mountinfo: &str) -> Option<(PathBuf, PathBuf)> {
        let path = cgroup.lines().find_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (id, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            let ours = match version {
                Version::V1 => controllers.split(',').any(|c| c == "cpu"),
                Version::V2 => id == "0" && controllers.is_empty(),
            };
            ours.then_some(path)
        })?;
        mountinfo.lines().find_map(|line| {
            // "id parent major:minor root mount-point options [optional...] - type source super-options"
            let (mount, filesystem) = line.split_once(" - ")?;
            let mut mount = mount.split(' ');
            let root = unescape(mount.nth(3)?);
            let mount_point = PathBuf::from(unescape(mount.next()?));
            let mut filesystem = filesystem.split(' ');
            let (kind, options) = (filesystem.next()?, filesystem.nth(1).unwrap_or(""));
            let ours = match version {
                Version::V1 => kind == "cgroup" && options.split(',').any(|o| o == "cpu"),
                Version::V2 => kind == "cgroup2",
            };
            if !ours {
                return None;
            }
            // The mount shows the hierarchy from `root` down; the process's cgroup must be there.
            let relative = match root.as_str() {
                "/" => path,
                root => path.strip_prefix(root).filter(|rest| rest.is_empty() || rest.starts_with('/'))?,
            };
            let dir = mount_point.join(relative.trim_start_matches('/'));
            Some((mount_point, dir))
        })
    }

    /// The limit set on the cgroup at `dir` itself, in CPUs rounded up.
    pub(super) fn limit_in(version: Version, dir: &Path) -> Option<usize> {
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
        let (quota, period) = match version {
            Version::V2 => {
                let max = read("cpu.max")?;
                let mut fields = max.split_whitespace();
                (fields.next()?.to_owned(), fields.next()?.to_owned())
            }
            Version::V1 => (read("cpu.cfs_quota_us")?, read("cpu.cfs_period_us")?),
        };
        // "max" (v2) and -1 (v1) mean no limit: neither parses as a positive integer.
        let quota: u64 = quota.trim().parse().ok()?;
        let period: u64 = period.trim().parse().ok().filter(|&p| p > 0)?;
        usize::try_from(quota.div_ceil(period)).ok()
    }

    /// mountinfo escapes space, tab, newline and backslash in paths as `\ooo` (octal).
    fn unescape(field: &str) -> String {
        let bytes = field.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let octal =
                bytes.get(i + 1..i + 4).filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
            match octal {
                Some(d) => {
                    out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                    i += 4;
                }
                None => {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[cfg(not(target_os = "linux"))]
mod system {
    pub(super) fn process_cpus() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    pub(super) fn cgroup_cpu_limit() -> Option<usize> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_gomaxprocs_else_the_cpus_lowered_to_the_cgroup_limit_but_not_below_2() {
        assert_eq!(default_limit(Some("3"), 8, Some(2)), 3, "the variable wins");
        assert_eq!(default_limit(Some(" 12 "), 2, None), 12, "above the CPU count: kept");
        assert_eq!(default_limit(Some("5000"), 2, None), MAX_PROCS_CAP);
        for ignored in ["0", "-1", "two", "", "1.5"] {
            assert_eq!(default_limit(Some(ignored), 8, None), 8, "{ignored:?} is not a positive integer");
        }
        assert_eq!(default_limit(None, 8, None), 8);
        assert_eq!(default_limit(None, 8, Some(3)), 3);
        assert_eq!(default_limit(None, 8, Some(1)), 2, "a limit under 2 counts as 2, as in Go");
        assert_eq!(default_limit(None, 1, Some(1)), 1, "but never above the CPUs");
        assert_eq!(default_limit(None, 4, Some(16)), 4);
    }

    #[cfg(target_os = "linux")]
    mod cgroups {
        use super::super::system::{Version, cpu_limit, limit_in, locate};
        use std::path::{Path, PathBuf};

        /// A fresh directory standing for a cgroup file system.
        fn tree(name: &str) -> PathBuf {
            let dir = std::env::temp_dir().join(format!("lua-system-cgroup-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            dir
        }

        fn write(dir: &Path, file: &str, text: &str) {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join(file), text).unwrap();
        }

        fn mountinfo_line(root: &str, mount_point: &Path, kind: &str, options: &str) -> String {
            format!("41 31 0:38 {root} {} rw,relatime - {kind} {kind} {options}\n", mount_point.display())
        }

        #[test]
        fn v2_quota_is_rounded_up_and_the_tightest_ancestor_counts() {
            let root = tree("v2");
            write(&root.join("a"), "cpu.max", "150000 100000\n");
            write(&root.join("a/b"), "cpu.max", "max 100000\n");
            let mountinfo = mountinfo_line("/", &root, "cgroup2", "rw");
            assert_eq!(cpu_limit("0::/a/b\n", &mountinfo), Some(2), "1.5 CPUs in the parent, none in the leaf");
            write(&root.join("a/b"), "cpu.max", "100000 100000\n");
            assert_eq!(cpu_limit("0::/a/b\n", &mountinfo), Some(1));
            write(&root.join("a"), "cpu.max", "max 100000\n");
            write(&root.join("a/b"), "cpu.max", "max 100000\n");
            assert_eq!(cpu_limit("0::/a/b\n", &mountinfo), None, "no limit anywhere");
            std::fs::remove_dir_all(&root).unwrap();
        }

        #[test]
        fn v1_quota_of_the_cpu_controller_and_a_mount_showing_a_subtree() {
            let root = tree("v1");
            // The container sees its own cgroup (/docker/x on the host) at the mount point.
            write(&root, "cpu.cfs_quota_us", "250000\n");
            write(&root, "cpu.cfs_period_us", "100000\n");
            let cgroup = "12:memory:/docker/x\n4:cpu,cpuacct:/docker/x\n0::/\n";
            let mountinfo = mountinfo_line("/", Path::new("/nonexistent/unified"), "cgroup2", "rw")
                + &mountinfo_line("/docker/x", &root, "cgroup", "rw,cpu,cpuacct");
            assert_eq!(locate(Version::V1, cgroup, &mountinfo), Some((root.clone(), root.clone())));
            assert_eq!(cpu_limit(cgroup, &mountinfo), Some(3), "2.5 CPUs, rounded up");
            write(&root, "cpu.cfs_quota_us", "-1\n");
            assert_eq!(limit_in(Version::V1, &root), None, "-1: no limit");
            std::fs::remove_dir_all(&root).unwrap();
        }

        #[test]
        fn escaped_mount_points_and_cgroups_outside_the_mount() {
            let root = tree("escaped dir");
            write(&root, "cpu.max", "400000 100000\n");
            let escaped = root.display().to_string().replace(' ', "\\040");
            let mountinfo = format!("41 31 0:38 / {escaped} rw - cgroup2 cgroup2 rw\n");
            assert_eq!(cpu_limit("0::/\n", &mountinfo), Some(4));
            let elsewhere = mountinfo_line("/other", &root, "cgroup2", "rw");
            assert_eq!(locate(Version::V2, "0::/mine\n", &elsewhere), None);
            assert_eq!(cpu_limit("0::/mine\n", ""), None, "no mount");
            std::fs::remove_dir_all(&root).unwrap();
        }
    }
}
