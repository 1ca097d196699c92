//! The process's memory, in Go's terms: what the allocator and the kernel report.
//!
//! | field | meaning here | source |
//! |---|---|---|
//! | `heap_in_use` | bytes in allocator pages/chunks that hold live blocks | allocator |
//! | `heap_idle` | bytes the allocator holds with nothing live in them | allocator |
//! | `heap_released` | the part of `heap_idle` returned to the OS, still reserved | allocator |
//! | `heap_sys` | `heap_in_use + heap_idle`: heap memory obtained from the OS | allocator |
//! | `mspan_in_use`, `mspan_sys` | the allocator's own metadata | allocator |
//! | `stack_in_use`, `stack_sys` | the main thread's stack (`VmStk`) | kernel |
//! | `sys` | private writable memory plus stack (`VmData + VmStk`): all memory obtained from the OS for data; at least `heap_sys + stack_sys + mspan_sys` (see [`read`]) | kernel |
//! | `rss` | resident memory (`VmRSS`) | kernel |
//!
//! Linux grows the main stack mapping as the stack deepens and never shrinks it, and labels no
//! other thread's stack (they are ordinary private mappings, inside `sys`); so both stack
//! figures are the main stack's mapping.
//!
//! The kernel and the allocator cannot be read at the same instant, and other threads allocate
//! meanwhile: a 64 MB block mapped or unmapped between the two readings would put the allocator's
//! heap above the kernel's `sys`. [`read`] therefore reads the kernel's data size on both sides
//! of the allocator's reading and retries until it stays the same (see there).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use crate::faults::{self, Fault};
use crate::ffi::allocator_stats as allocator;
use crate::text::{Text, text};

/// The process figures of `mem_stats()`, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessMemory {
    /// Memory obtained from the OS for data (Go's `Sys`): private writable mappings plus the
    /// stack (`VmData + VmStk`), at least `heap_sys + stack_sys + mspan_sys`.
    pub sys: u64,
    /// The main thread's stack in use (Go's `StackInuse`): its mapping (`VmStk`), which Linux
    /// grows as the stack deepens and never shrinks.
    pub stack_in_use: u64,
    /// The main thread's stack obtained from the OS (Go's `StackSys`); equals `stack_in_use`.
    pub stack_sys: u64,
    /// Resident set size (`VmRSS`).
    pub rss: u64,
    /// The heap figures, from the process allocator's statistics, or why they are missing.
    pub heap: Result<HeapMemory, Text>,
}

/// The process heap in Go's terms, from the allocator's statistics, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeapMemory {
    /// Heap memory obtained from the OS (Go's `HeapSys`): `heap_in_use + heap_idle`.
    pub heap_sys: u64,
    /// Memory the allocator holds with no live block in it (Go's `HeapIdle`).
    pub heap_idle: u64,
    /// Memory in the allocator's pages or chunks that hold live blocks (Go's `HeapInuse`);
    /// at least the live bytes of every state it serves.
    pub heap_in_use: u64,
    /// The part of `heap_idle` returned to the OS, still reserved (Go's `HeapReleased`); 0
    /// with glibc, which gives trimmed memory back outright.
    pub heap_released: u64,
    /// The allocator's own metadata in use (Go's `MSpanInuse`); 0 with glibc, which keeps its
    /// chunk headers inside `heap_in_use`.
    pub mspan_in_use: u64,
    /// The allocator's own metadata obtained from the OS (Go's `MSpanSys`).
    pub mspan_sys: u64,
    /// Which allocator the figures come from: `"jemalloc"` or `"glibc"` (in a LuaJIT
    /// interpreter, glibc's plus the state's bytes in LuaJIT's own arena).
    pub source: &'static str,
}

/// How many times [`read`] reads the kernel's and the allocator's figures, at most, waiting
/// for the kernel's data size to stay the same across the allocator's reading.
const ATTEMPTS: u32 = 4;

/// Readings taken again by [`read`], and readings whose `sys` was raised, since the process
/// started.
static RETRIES: AtomicU64 = AtomicU64::new(0);
static RAISED: AtomicU64 = AtomicU64::new(0);

/// Reads the figures now. The kernel's figures are required; the allocator's may be missing
/// (their absence is in [`ProcessMemory::heap`]).
///
/// The kernel's figures (`/proc/self/status`) are read, then the allocator's statistics, then
/// the kernel's data size again (`VmData + VmStk`, from `/proc/self/statm`, which costs a few
/// microseconds; a second allocator reading would cost as much as the first, jemalloc merging
/// its arenas' statistics). If the data size changed, a thread mapped or unmapped memory
/// between the readings, and all three are read again, up to 4 times in all. The figures
/// reported are the last kernel and allocator readings, each a true reading. `sys` is the
/// kernel's `VmData + VmStk`, unless that is below `heap_sys + stack_sys + mspan_sys` (the
/// memory changed at every attempt, or the allocator holds memory the kernel does not count as
/// data): then it is that sum, memory obtained from the OS, at least what the allocator holds.
/// So `sys >= heap_sys + stack_sys + mspan_sys` holds on every reading.
pub fn read() -> Result<ProcessMemory, Text> {
    let mut attempt = 1;
    loop {
        let kernel = KernelFigures::read()?;
        let allocator = allocator::read();
        // Without allocator figures there is nothing to reconcile with the kernel's; if statm
        // cannot be read, the floor on `sys` still holds the invariant.
        let settled = allocator.is_err() || data_bytes().is_none_or(|now| now == kernel.data + kernel.stack);
        if settled || attempt == ATTEMPTS {
            return Ok(assemble(&kernel, allocator));
        }
        RETRIES.fetch_add(1, Relaxed);
        attempt += 1;
    }
}

/// The figures from one kernel reading and one allocator reading, `sys` at least what the
/// allocator holds.
fn assemble(kernel: &KernelFigures, allocator: Result<allocator::AllocatorStats, Text>) -> ProcessMemory {
    let heap = allocator.map(|heap| HeapMemory {
        heap_sys: heap.in_use + heap.idle,
        heap_idle: heap.idle,
        heap_in_use: heap.in_use,
        heap_released: heap.released,
        mspan_in_use: heap.metadata,
        mspan_sys: heap.metadata,
        source: heap.source,
    });
    let mut sys = kernel.data + kernel.stack;
    if let Ok(heap) = &heap {
        let held = heap.heap_sys + kernel.stack + heap.mspan_sys;
        if sys < held {
            RAISED.fetch_add(1, Relaxed);
            sys = held;
        }
    }
    ProcessMemory { sys, stack_in_use: kernel.stack, stack_sys: kernel.stack, rss: kernel.rss, heap }
}

impl ProcessMemory {
    /// How many times, since the process started, the process figures were read again because
    /// a thread mapped or unmapped memory while they were read (see [`read`]).
    pub fn retries() -> u64 {
        RETRIES.load(Relaxed)
    }

    /// How many readings, since the process started, reported `sys` as
    /// `heap_sys + stack_sys + mspan_sys` because the kernel's `VmData + VmStk` was below it
    /// (see [`read`]).
    pub fn raised_sys() -> u64 {
        RAISED.load(Relaxed)
    }
}

/// How old the process figures `mem_stats()` reports may be: [`sampled`] reads them again when
/// the last reading is older. Reading costs tens of microseconds (the kernel formats
/// `/proc/self/status`, jemalloc merges its arenas' statistics); a state's own figures are
/// always read at the call.
static MAX_AGE_NS: AtomicU64 = AtomicU64::new(10_000_000);

/// Sets how old the process figures of `mem_stats()` may be (default 10 ms; zero: read at every
/// call). Figures that would contradict the calling state's own (a process heap smaller than
/// the state's) are always read again, so Go's invariants hold on every call.
pub fn set_process_sample_interval(interval: Duration) {
    MAX_AGE_NS.store(interval.as_nanos().min(u64::MAX as u128) as u64, Relaxed);
}

/// Whether the states' blocks come from the process allocator, whose statistics must then
/// count them. Not in a LuaJIT interpreter (`system.so`): LuaJIT serves its states from its own
/// arena, which publishes no statistics, and `mem_stats()` adds the state's bytes to the process
/// allocator's (see [`in_use_for_state`]).
pub(crate) const STATE_IN_PROCESS_HEAP: bool = !cfg!(all(feature = "luajit", feature = "module"));

/// The heap in use `mem_stats()` reports for a state holding `state_bytes`, from the allocator's
/// figures: theirs, plus the state's bytes where they are not among them.
pub(crate) fn in_use_for_state(heap: &HeapMemory, state_bytes: u64) -> u64 {
    if STATE_IN_PROCESS_HEAP { heap.heap_in_use } else { heap.heap_in_use + state_bytes }
}

/// One reading of the process figures.
struct Sample {
    taken: Instant,
    memory: Result<ProcessMemory, Text>,
}

impl Sample {
    /// Whether this reading can stand for now, for a state holding `state_bytes`: fresh enough,
    /// and its heap in use, as `mem_stats()` would report it for the state, at least the state's
    /// (it was read before the state grew past it, or the statistics describe another
    /// allocator: a new reading tells).
    fn serves(&self, state_bytes: u64) -> bool {
        let fresh = self.taken.elapsed().as_nanos() <= u128::from(MAX_AGE_NS.load(Relaxed));
        let covers = match &self.memory {
            Ok(ProcessMemory { heap: Ok(heap), .. }) => in_use_for_state(heap, state_bytes) >= state_bytes,
            _ => true,
        };
        fresh && covers
    }
}

static LATEST: ArcSwapOption<Sample> = ArcSwapOption::const_empty();
static REFRESH: Mutex<()> = Mutex::new(());

/// The process figures as `mem_stats()` reports them, and their age: the latest reading if it
/// [serves](Sample::serves), a new one otherwise. The common path is a lock-free load; a new
/// reading is taken by one thread at a time.
pub(crate) fn sampled(state_bytes: u64) -> (Result<ProcessMemory, Text>, Duration) {
    if let Some(sample) = LATEST.load().as_ref()
        && sample.serves(state_bytes)
    {
        return (sample.memory, sample.taken.elapsed());
    }
    let _refreshing = REFRESH.lock().unwrap_or_else(|poison| poison.into_inner());
    if let Some(sample) = LATEST.load().as_ref()
        && sample.serves(state_bytes)
    {
        return (sample.memory, sample.taken.elapsed()); // another thread just read them
    }
    let sample = Sample { taken: Instant::now(), memory: read() };
    let memory = sample.memory;
    LATEST.store(Some(Arc::new(sample)));
    (memory, Duration::ZERO)
}

/// A file of `/proc/<pid>/` kept open: opening it costs as much as reading it. The file is
/// named by pid, not `self`, and reopened when the pid changes, so a forked child reads its own.
struct ProcFile {
    name: &'static str,
    open: Mutex<Option<(u32, File)>>,
}

impl ProcFile {
    const fn new(name: &'static str) -> ProcFile {
        ProcFile { name, open: Mutex::new(None) }
    }

    /// Reads the whole file (up to the buffer's size) as text.
    fn read<'b>(&self, buffer: &'b mut [u8]) -> Result<&'b str, Text> {
        let name = self.name;
        if faults::active(Fault::ProcUnreadable) {
            return Err(text!("cannot read /proc/self/{name}: Permission denied (os error 13)"));
        }
        let pid = std::process::id();
        let mut open = self.open.lock().unwrap_or_else(|poison| poison.into_inner());
        let file = match open.take() {
            Some((owner, file)) if owner == pid => file,
            _ => {
                let path = format!("/proc/{pid}/{name}");
                File::open(&path).map_err(|e| text!("cannot open {path}: {e}"))?
            }
        };
        let read = file.read_at(buffer, 0);
        *open = Some((pid, file));
        let len = read.map_err(|e| text!("cannot read /proc/self/{name}: {e}"))?;
        std::str::from_utf8(&buffer[..len]).map_err(|_| text!("/proc/self/{name} is not text"))
    }
}

/// `/proc/<pid>/statm`: sizes in pages, cheaper to read than `status` (no formatting of every
/// field).
static STATM: ProcFile = ProcFile::new("statm");

/// Field `index` of statm, in bytes. `None` if it cannot be read.
fn statm_bytes(index: usize) -> Option<u64> {
    let mut buffer = [0u8; 128];
    let pages: u64 = STATM.read(&mut buffer).ok()?.split_whitespace().nth(index)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}

/// The process's resident memory (statm's second field), for samplers. `None` if it cannot be
/// read.
pub(crate) fn resident_bytes() -> Option<u64> {
    statm_bytes(1)
}

/// The process's data size now (statm's sixth field: `VmData + VmStk` of `status`). `None` if
/// it cannot be read.
fn data_bytes() -> Option<u64> {
    statm_bytes(5)
}

/// What `/proc/self/status` says, in bytes.
struct KernelFigures {
    data: u64,
    stack: u64,
    rss: u64,
}

impl KernelFigures {
    const PATH: &'static str = "/proc/self/status";

    fn read() -> Result<KernelFigures, Text> {
        static STATUS: ProcFile = ProcFile::new("status");
        let mut buffer = [0u8; 8192];
        Self::parse(STATUS.read(&mut buffer)?)
    }

    fn parse(status: &str) -> Result<KernelFigures, Text> {
        let field = |name: &str| -> Result<u64, Text> {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|value| value.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
                .map(|kib| kib * 1024)
                .ok_or_else(|| text!("{} has no readable {name} line", Self::PATH))
        };
        Ok(KernelFigures { data: field("VmData")?, stack: field("VmStk")?, rss: field("VmRSS")? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_status() {
        let status = "Name:\tx\nVmRSS:\t    2048 kB\nVmData:\t  10240 kB\nVmStk:\t     132 kB\n";
        let k = KernelFigures::parse(status).unwrap();
        assert_eq!((k.data, k.stack, k.rss), (10240 * 1024, 132 * 1024, 2048 * 1024));
    }

    #[test]
    fn a_missing_field_is_an_error_naming_it() {
        let e = KernelFigures::parse("VmRSS: 1 kB\n").err().unwrap();
        assert!(e.to_string_lossy().contains("VmData"), "{e}");
    }

    #[test]
    fn sys_is_the_kernels_unless_below_what_the_allocator_holds() {
        let kernel = KernelFigures { data: 100 << 20, stack: 132 << 10, rss: 50 << 20 };
        let heap = |in_use: u64, idle: u64, metadata: u64| {
            Ok(allocator::AllocatorStats { in_use, idle, released: 0, metadata, source: "test" })
        };
        let p = assemble(&kernel, heap(60 << 20, 10 << 20, 1 << 20));
        assert_eq!(p.sys, (100 << 20) + (132 << 10), "the kernel's reading, which covers the heap");
        // A 64 MB block mapped after the kernel was read, before the allocator was.
        let raised = ProcessMemory::raised_sys();
        let p = assemble(&kernel, heap(124 << 20, 10 << 20, 1 << 20));
        assert_eq!(p.sys, (135 << 20) + (132 << 10), "heap_sys + stack_sys + mspan_sys");
        assert!(ProcessMemory::raised_sys() > raised);
        let p = assemble(&kernel, Err(text!("no statistics")));
        assert_eq!(p.sys, (100 << 20) + (132 << 10), "nothing to raise it to");
    }

    #[test]
    fn statm_data_is_status_vm_data_plus_vm_stk() {
        // Other tests map memory meanwhile: some pair of readings is taken while nothing does.
        let agrees = (0..1000).any(|_| {
            let kernel = KernelFigures::read().unwrap();
            data_bytes() == Some(kernel.data + kernel.stack)
        });
        assert!(agrees);
    }

    #[test]
    fn live_figures_hold_go_invariants() {
        let p = read().unwrap();
        let h = p.heap.unwrap();
        assert_eq!(h.heap_sys, h.heap_idle + h.heap_in_use);
        assert!(h.heap_released <= h.heap_idle);
        assert!(p.sys >= h.heap_sys + p.stack_sys + h.mspan_sys, "{p:?}");
    }
}
