//! The module's figures for monitoring: `system.metrics()` (the Prometheus text exposition
//! format), the [`Metrics`] struct for Rust hosts (`serde::Serialize`), and [`Probe`], which
//! samples a state from another thread while its script runs.

use std::fmt::Write as _;

use crate::ffi::{Call, Reply};
use crate::memory::MemStats;
use crate::permissions::{Operation, Permissions};
use crate::process;
use crate::procs;
use crate::state::StateData;
use crate::text::Text;

/// A state's and its process's figures, flat, for serialisation (JSON, Prometheus). Figures the
/// module cannot measure in this state are `None` (see [`MemStats`] for why).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct Metrics {
    pub accounting: &'static str,
    pub heap_alloc_bytes: Option<u64>,
    pub heap_allocated_bytes_total: Option<u64>,
    pub heap_objects: Option<u64>,
    pub heap_mallocs_total: Option<u64>,
    pub heap_frees_total: Option<u64>,
    pub gc_cycles_total: Option<u64>,
    pub gc_last_cycle_timestamp_seconds: Option<f64>,
    pub gc_next_bytes: Option<u64>,
    pub gc_percent: Option<i64>,
    pub max_procs: Option<u64>,
    pub cpus: Option<u64>,
    pub process_resident_memory_bytes: Option<u64>,
    pub process_sys_bytes: Option<u64>,
    pub process_stack_bytes: Option<u64>,
    pub process_heap_sys_bytes: Option<u64>,
    pub process_heap_in_use_bytes: Option<u64>,
    pub process_heap_idle_bytes: Option<u64>,
    pub process_heap_released_bytes: Option<u64>,
    pub process_allocator_metadata_bytes: Option<u64>,
}

impl MemStats {
    /// The figures as [`Metrics`].
    pub fn metrics(&self) -> Metrics {
        let process = self.process.as_ref().ok();
        let heap = process.and_then(|p| p.heap.as_ref().ok());
        let stopped = self.gc_percent == Ok(-1);
        Metrics {
            accounting: self.accounting.as_str(),
            heap_alloc_bytes: self.alloc.ok(),
            heap_allocated_bytes_total: self.total_alloc.ok(),
            heap_objects: self.heap_objects.ok(),
            heap_mallocs_total: self.mallocs.ok(),
            heap_frees_total: self.frees.ok(),
            gc_cycles_total: Some(self.num_gc),
            gc_last_cycle_timestamp_seconds: (self.last_gc > 0).then(|| self.last_gc as f64 / 1e9),
            gc_next_bytes: if stopped { None } else { self.next_gc.ok() },
            gc_percent: self.gc_percent.ok(),
            max_procs: Some(procs::max_procs() as u64),
            cpus: Some(procs::num_cpu() as u64),
            process_resident_memory_bytes: process.map(|p| p.rss),
            process_sys_bytes: process.map(|p| p.sys),
            process_stack_bytes: process.map(|p| p.stack_sys),
            process_heap_sys_bytes: heap.map(|h| h.heap_sys),
            process_heap_in_use_bytes: heap.map(|h| h.heap_in_use),
            process_heap_idle_bytes: heap.map(|h| h.heap_idle),
            process_heap_released_bytes: heap.map(|h| h.heap_released),
            process_allocator_metadata_bytes: heap.map(|h| h.mspan_sys),
        }
    }
}

/// One Prometheus metric: name, type, help, value.
type Family = (&'static str, &'static str, &'static str, Option<f64>);

impl Metrics {
    fn families(&self) -> [Family; 19] {
        let b = |v: Option<u64>| v.map(|v| v as f64);
        [
            ("lua_heap_alloc_bytes", "gauge", "Bytes of the Lua state's heap in use.", b(self.heap_alloc_bytes)),
            (
                "lua_heap_allocated_bytes_total",
                "counter",
                "Bytes the Lua state has allocated since it was created.",
                b(self.heap_allocated_bytes_total),
            ),
            ("lua_heap_objects", "gauge", "Live blocks of the Lua state's heap.", b(self.heap_objects)),
            ("lua_heap_mallocs_total", "counter", "Blocks the Lua state has allocated.", b(self.heap_mallocs_total)),
            ("lua_heap_frees_total", "counter", "Blocks the Lua state has freed.", b(self.heap_frees_total)),
            (
                "lua_gc_cycles_total",
                "counter",
                "Completed collection cycles of the Lua state.",
                b(self.gc_cycles_total),
            ),
            (
                "lua_gc_last_cycle_timestamp_seconds",
                "gauge",
                "When the last collection cycle ended, in seconds since the Unix epoch.",
                self.gc_last_cycle_timestamp_seconds,
            ),
            (
                "lua_gc_next_bytes",
                "gauge",
                "Heap size at which the next collection cycle starts.",
                b(self.gc_next_bytes),
            ),
            (
                "lua_gc_percent",
                "gauge",
                "The collector's GC percent (Go's GOGC); -1 when stopped.",
                self.gc_percent.map(|p| p as f64),
            ),
            ("lua_max_procs", "gauge", "Process-wide limit on CPUs executing at once.", b(self.max_procs)),
            ("process_cpus", "gauge", "Logical CPUs usable by the process at start.", b(self.cpus)),
            (
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                b(self.process_resident_memory_bytes),
            ),
            (
                "process_sys_bytes",
                "gauge",
                "Memory obtained from the OS for data (private writable mappings and stack).",
                b(self.process_sys_bytes),
            ),
            ("process_stack_bytes", "gauge", "The main thread's stack mapping.", b(self.process_stack_bytes)),
            (
                "process_heap_sys_bytes",
                "gauge",
                "Heap memory obtained from the OS by the allocator.",
                b(self.process_heap_sys_bytes),
            ),
            (
                "process_heap_in_use_bytes",
                "gauge",
                "Allocator memory holding live blocks.",
                b(self.process_heap_in_use_bytes),
            ),
            (
                "process_heap_idle_bytes",
                "gauge",
                "Allocator memory holding no live block.",
                b(self.process_heap_idle_bytes),
            ),
            (
                "process_heap_released_bytes",
                "gauge",
                "Idle allocator memory returned to the OS.",
                b(self.process_heap_released_bytes),
            ),
            (
                "process_allocator_metadata_bytes",
                "gauge",
                "The allocator's own metadata.",
                b(self.process_allocator_metadata_bytes),
            ),
        ]
    }

    /// Writes the Prometheus text exposition format, one line at a time (each with its `\n`).
    /// Figures that are unavailable are left out.
    fn write_lines(&self, mut line: impl FnMut(std::fmt::Arguments<'_>)) {
        // `iter()`, not `into_iter()`: a Lua error may unwind (longjmp) out of `line`, and
        // nothing on this frame may own a destructor then.
        for (name, kind, help, value) in self.families().iter() {
            let Some(value) = value else { continue };
            line(format_args!("# HELP {name} {help}\n"));
            line(format_args!("# TYPE {name} {kind}\n"));
            line(format_args!("{name} {}\n", PromNumber(*value)));
        }
    }

    /// For `system.metrics()`: each line as inline text (no label, so each fits), which a Lua
    /// buffer takes without anything here owning memory if Lua raises.
    pub(crate) fn write_prometheus(&self, mut line: impl FnMut(&str)) {
        self.write_lines(|args| line(Text::format(args).as_str()));
    }

    /// The Prometheus text exposition format.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        self.write_lines(|args| {
            let _ = out.write_fmt(args);
        });
        out
    }

    /// The same, every sample labelled, e.g. `to_prometheus_with_labels(&[("state", "main")])`.
    /// For several states in one exposition, use [`Metrics::to_prometheus_many`]: blocks of
    /// this function must not be concatenated (a family may appear only once).
    pub fn to_prometheus_with_labels(&self, labels: &[(&str, &str)]) -> Result<String, InvalidLabel> {
        Metrics::to_prometheus_many(&[(labels, self)])
    }

    /// Several states' figures in one exposition: each family once, with one sample per state
    /// told apart by its labels, e.g. `[(&[("state", "worker-1")], &a), (&[("state", "worker-2")], &b)]`.
    /// Label values are escaped as the format requires; a label name that is not
    /// `[a-zA-Z_][a-zA-Z0-9_]*`, or starts with `__` (reserved), is refused. The `process_*`
    /// figures are the process's: the same in every state.
    pub fn to_prometheus_many(states: &[(&[(&str, &str)], &Metrics)]) -> Result<String, InvalidLabel> {
        let labels: Vec<String> = states.iter().map(|(labels, _)| render_labels(labels)).collect::<Result<_, _>>()?;
        let families: Vec<[Family; 19]> = states.iter().map(|(_, metrics)| metrics.families()).collect();
        let mut out = String::new();
        let Some(first) = families.first() else { return Ok(out) };
        for (index, (name, kind, help, _)) in first.iter().enumerate() {
            let samples: Vec<(&str, f64)> = families
                .iter()
                .zip(&labels)
                .filter_map(|(families, labels)| families[index].3.map(|value| (labels.as_str(), value)))
                .collect();
            if samples.is_empty() {
                continue;
            }
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {}", PromNumber(value));
            }
        }
        Ok(out)
    }

    /// Leaves out every figure the permissions hide: `system.metrics()` reveals nothing that the
    /// functions the state may call would not (each figure stays if any function reporting it
    /// is allowed).
    pub(crate) fn hide_denied(&mut self, permissions: Permissions) {
        fn keep<T>(allowed: bool, figure: &mut Option<T>) {
            if !allowed {
                *figure = None;
            }
        }
        let stats = permissions.allows(Operation::MemStats);
        keep(stats || permissions.allows(Operation::Allocated), &mut self.heap_alloc_bytes);
        keep(stats || permissions.allows(Operation::HeapObjects), &mut self.heap_objects);
        keep(stats || permissions.allows(Operation::GetGcPercent), &mut self.gc_percent);
        keep(permissions.allows(Operation::GoMaxProcs), &mut self.max_procs);
        keep(permissions.allows(Operation::NumCpu), &mut self.cpus);
        for figure in [
            &mut self.heap_allocated_bytes_total,
            &mut self.heap_mallocs_total,
            &mut self.heap_frees_total,
            &mut self.gc_cycles_total,
            &mut self.gc_next_bytes,
            &mut self.process_resident_memory_bytes,
            &mut self.process_sys_bytes,
            &mut self.process_stack_bytes,
            &mut self.process_heap_sys_bytes,
            &mut self.process_heap_in_use_bytes,
            &mut self.process_heap_idle_bytes,
            &mut self.process_heap_released_bytes,
            &mut self.process_allocator_metadata_bytes,
        ] {
            keep(stats, figure);
        }
        if !stats {
            self.gc_last_cycle_timestamp_seconds = None;
        }
    }
}

/// `{name="value",...}`, or empty for no labels.
fn render_labels(labels: &[(&str, &str)]) -> Result<String, InvalidLabel> {
    let mut rendered = String::new();
    for (i, (name, value)) in labels.iter().enumerate() {
        let mut chars = name.chars();
        let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with("__");
        if !valid {
            return Err(InvalidLabel(name.to_string()));
        }
        rendered.push(if i == 0 { '{' } else { ',' });
        rendered.push_str(name);
        rendered.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => rendered.push_str("\\\\"),
                '"' => rendered.push_str("\\\""),
                '\n' => rendered.push_str("\\n"),
                c => rendered.push(c),
            }
        }
        rendered.push('"');
    }
    if !rendered.is_empty() {
        rendered.push('}');
    }
    Ok(rendered)
}

/// A label name the Prometheus format does not allow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidLabel(pub String);

impl std::fmt::Display for InvalidLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid Prometheus label name '{}'", self.0)
    }
}

impl std::error::Error for InvalidLabel {}

/// A number as Prometheus writes it: integers without a fraction.
struct PromNumber(f64);

impl std::fmt::Display for PromNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.fract() == 0.0 && self.0.abs() < 1e15 {
            write!(f, "{}", self.0 as i64)
        } else {
            write!(f, "{}", self.0)
        }
    }
}

/// `system.metrics()`: the figures in the Prometheus text exposition format.
pub(crate) fn metrics(call: &Call<'_>) -> Result<Reply, Text> {
    let data = call.data();
    let mut metrics = MemStats::read(data, &call.collector()).metrics();
    metrics.hide_denied(data.permissions());
    Ok(Reply::Metrics(metrics))
}

/// One sample of a running state, taken from any thread (see [`Probe`]).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct Sample {
    /// Since the state was created.
    pub seconds: f64,
    pub heap_alloc: u64,
    pub heap_objects: u64,
    /// Where the next cycle starts; `None` while stopped. A probe cannot ask Lua: it uses the
    /// collector's setting as the module last saw it (set or read through the module, or by
    /// [`gc_percent`](crate::gc_percent)); a script's own `collectgarbage("stop")` shows at
    /// the next such read.
    pub next_gc: Option<u64>,
    pub num_gc: u64,
    /// The process's resident memory.
    pub resident: Option<u64>,
}

/// Reads a state's figures from another thread while its script runs, without entering Lua:
/// only the module's own counters (exact states) and the kernel are read.
#[derive(Clone, Copy)]
pub struct Probe<'a> {
    pub(crate) data: &'a StateData,
}

impl Probe<'_> {
    pub fn sample(&self) -> Sample {
        let data = self.data;
        // Frees first: read from another thread, a free counted after the mallocs were read
        // could otherwise make the difference negative.
        let frees = data.heap.figures().frees;
        let mallocs = data.heap.figures().mallocs;
        let effective = data.gc.cached_effective_percent();
        Sample {
            seconds: data.gc.born().elapsed().as_secs_f64(),
            heap_alloc: data.heap.live_bytes(),
            heap_objects: mallocs.saturating_sub(frees),
            next_gc: data
                .gc
                .live_after_cycle()
                .filter(|_| effective >= 0)
                .map(|base| crate::ffi::collector::next_cycle_at(base, effective)),
            num_gc: data.gc.cycles(),
            resident: process::resident_bytes(),
        }
    }
}

// A probe is handed to a sampling thread.
const _: () = {
    const fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<Probe<'static>>();
};
