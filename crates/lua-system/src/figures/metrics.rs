//! The module's figures for monitoring: the [`Metrics`] struct, which `system.metrics()` writes
//! in the Prometheus text exposition format and Rust hosts serialize (`serde::Serialize`,
//! Prometheus text).
//!
//! [`FAMILIES`] is the one table of metrics: name, type, help, scope, where the value comes
//! from, and which functions report the same figure (a state whose permissions deny all of
//! them does not get it from `metrics()` either). Every name starts with `lua_`, so none
//! collides with what Prometheus client libraries' own process collectors export.

use std::fmt::Write as _;

use crate::figures::mem_stats::MemStats;
use crate::process::max_procs;
use crate::state::cycles::STOPPED_NEXT_GC;
use crate::text::Text;

/// Whose figure a metric is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The Lua state's: one sample per state.
    State,
    /// The process's: the same in every state, one sample per process.
    Process,
}

/// One metric family.
pub(crate) struct Family {
    pub name: &'static str,
    pub kind: &'static str,
    pub help: &'static str,
    pub scope: Scope,
    /// Its value in a snapshot; `None` when the figure is unavailable.
    pub read: fn(&MemStats) -> Option<f64>,
    /// The functions that report the same figure.
    pub reported_by: &'static [&'static str],
}

const STATS: &[&str] = &["mem_stats"];

#[rustfmt::skip]
pub(crate) static FAMILIES: &[Family] = &[
    Family { name: "lua_heap_alloc_bytes", kind: "gauge", help: "Bytes of the Lua state's live heap blocks.", scope: Scope::State, read: |s| Some(s.alloc as f64), reported_by: &["mem_stats", "allocated"] },
    Family { name: "lua_heap_allocated_bytes_total", kind: "counter", help: "Bytes the Lua state has allocated.", scope: Scope::State, read: |s| Some(s.total_alloc as f64), reported_by: STATS },
    Family { name: "lua_heap_objects", kind: "gauge", help: "Live heap blocks of the Lua state.", scope: Scope::State, read: |s| Some(s.heap_objects as f64), reported_by: &["mem_stats", "heap_objects"] },
    Family { name: "lua_heap_mallocs_total", kind: "counter", help: "Heap blocks the Lua state has allocated.", scope: Scope::State, read: |s| Some(s.mallocs as f64), reported_by: STATS },
    Family { name: "lua_heap_frees_total", kind: "counter", help: "Heap blocks the Lua state has freed.", scope: Scope::State, read: |s| Some(s.frees as f64), reported_by: STATS },
    Family { name: "lua_gc_cycles_total", kind: "counter", help: "Completed collection cycles of the Lua state.", scope: Scope::State, read: |s| Some(s.num_gc as f64), reported_by: STATS },
    Family { name: "lua_gc_last_cycle_timestamp_seconds", kind: "gauge", help: "When the last collection cycle ended, in seconds since the Unix epoch.", scope: Scope::State, read: |s| (s.last_gc > 0).then(|| s.last_gc as f64 / 1e9), reported_by: STATS },
    Family { name: "lua_gc_next_bytes", kind: "gauge", help: "Heap size at which the next collection cycle starts.", scope: Scope::State, read: |s| (s.next_gc < STOPPED_NEXT_GC).then_some(s.next_gc as f64), reported_by: STATS },
    Family { name: "lua_gc_percent", kind: "gauge", help: "The collector's GC percent (Go's GOGC); -1 when stopped.", scope: Scope::State, read: |s| s.gc_percent.ok().map(|p| p as f64), reported_by: &["mem_stats", "get_gc_percent"] },
    Family { name: "lua_max_procs", kind: "gauge", help: "Process-wide limit on CPUs executing Lua at once.", scope: Scope::Process, read: |_| Some(max_procs::max_procs() as f64), reported_by: &["go_max_procs"] },
    Family { name: "lua_process_cpus", kind: "gauge", help: "Logical CPUs usable by the process at start.", scope: Scope::Process, read: |_| Some(max_procs::num_cpu() as f64), reported_by: &["num_cpu"] },
    Family { name: "lua_process_resident_memory_bytes", kind: "gauge", help: "Resident memory of the process.", scope: Scope::Process, read: |s| s.process.as_ref().ok().map(|p| p.rss as f64), reported_by: STATS },
    Family { name: "lua_process_sys_bytes", kind: "gauge", help: "Memory the process obtained from the OS for data.", scope: Scope::Process, read: |s| s.process.as_ref().ok().map(|p| p.sys as f64), reported_by: STATS },
    Family { name: "lua_process_stack_bytes", kind: "gauge", help: "The process's main thread stack mapping.", scope: Scope::Process, read: |s| s.process.as_ref().ok().map(|p| p.stack_sys as f64), reported_by: STATS },
    Family { name: "lua_process_heap_sys_bytes", kind: "gauge", help: "Heap memory the process allocator obtained from the OS.", scope: Scope::Process, read: |s| heap(s, |h| h.heap_sys), reported_by: STATS },
    Family { name: "lua_process_heap_in_use_bytes", kind: "gauge", help: "Process allocator memory holding live blocks.", scope: Scope::Process, read: |s| heap(s, |h| h.heap_in_use), reported_by: STATS },
    Family { name: "lua_process_heap_idle_bytes", kind: "gauge", help: "Process allocator memory holding no live block.", scope: Scope::Process, read: |s| heap(s, |h| h.heap_idle), reported_by: STATS },
    Family { name: "lua_process_heap_released_bytes", kind: "gauge", help: "Idle process allocator memory returned to the OS.", scope: Scope::Process, read: |s| heap(s, |h| h.heap_released), reported_by: STATS },
    Family { name: "lua_process_allocator_metadata_bytes", kind: "gauge", help: "The process allocator's own metadata.", scope: Scope::Process, read: |s| heap(s, |h| h.mspan_sys), reported_by: STATS },
];

/// The number of metric families.
const N: usize = 19;
const _: () = assert!(FAMILIES.len() == N);
const _: () = assert!(N <= 32, "one bit per family in a state's visible families");

fn heap(stats: &MemStats, pick: fn(&crate::process::memory::HeapMemory) -> u64) -> Option<f64> {
    stats.process.as_ref().ok()?.heap.as_ref().ok().map(|h| pick(h) as f64)
}

/// A state's and its process's figures, one value per metric family (docs/watching-memory.md
/// lists them); `None` where the figure is unavailable or hidden by permissions. Serializes as a map
/// from metric name to value, with `accounting` first; whole values (counts, bytes, the GC
/// percent) as integers, the rest (the last cycle's timestamp) as floats.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Metrics {
    accounting: &'static str,
    values: [Option<f64>; N],
}

impl MemStats {
    /// The figures as [`Metrics`].
    pub fn metrics(&self) -> Metrics {
        let mut values = [None; N];
        for (value, family) in values.iter_mut().zip(FAMILIES) {
            *value = (family.read)(self);
        }
        Metrics { accounting: self.accounting.as_str(), values }
    }
}

impl serde::Serialize for Metrics {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(N + 1))?;
        map.serialize_entry("accounting", self.accounting)?;
        for (family, value) in FAMILIES.iter().zip(&self.values) {
            map.serialize_entry(family.name, &value.map(JsonNumber))?;
        }
        map.end()
    }
}

/// A figure as JSON: counts and bytes as integers (`365`, not `365.0`), fractions as floats.
struct JsonNumber(f64);

impl serde::Serialize for JsonNumber {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Integers a double holds exactly (below 2^53).
        if self.0.fract() == 0.0 && self.0.abs() < 9_007_199_254_740_992.0 {
            serializer.serialize_i64(self.0 as i64)
        } else {
            serializer.serialize_f64(self.0)
        }
    }
}

impl Metrics {
    /// How the state is accounted (`mem_stats().accounting`).
    pub fn accounting(&self) -> &'static str {
        self.accounting
    }

    /// The value of the metric `name` (e.g. `"lua_heap_alloc_bytes"`), if present.
    pub fn get(&self, name: &str) -> Option<f64> {
        FAMILIES.iter().position(|f| f.name == name).and_then(|i| self.values[i])
    }

    /// Every metric present: name and value.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, f64)> + '_ {
        FAMILIES.iter().zip(&self.values).filter_map(|(family, value)| value.map(|v| (family.name, v)))
    }

    /// Writes the Prometheus text exposition format, one line at a time (each with its `\n`).
    /// Figures that are unavailable are left out.
    fn write_lines(&self, mut line: impl FnMut(std::fmt::Arguments<'_>)) {
        // `iter()` over arrays: a Lua error may unwind (longjmp) out of `line`, and nothing on
        // this frame may own a destructor then.
        for (family, value) in FAMILIES.iter().zip(self.values.iter()) {
            let Some(value) = value else { continue };
            let name = family.name;
            line(format_args!("# HELP {name} {}\n", family.help));
            line(format_args!("# TYPE {name} {}\n", family.kind));
            line(format_args!("{name} {}\n", PromNumber(*value)));
        }
    }

    /// For `system.metrics()`: each line as inline text (no label, so each fits), which a Lua
    /// buffer takes without anything here owning memory if Lua raises.
    pub(crate) fn write_prometheus(&self, mut line: impl FnMut(&Text)) {
        self.write_lines(|args| line(&Text::format(args)));
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
    /// The process's figures (`lua_process_*`, `lua_max_procs`) are the same in every state:
    /// they appear once, without the states' labels. Label values are escaped as the format
    /// requires; a label name that is not `[a-zA-Z_][a-zA-Z0-9_]*`, or starts with `__`
    /// (reserved), is refused.
    pub fn to_prometheus_many(states: &[(&[(&str, &str)], &Metrics)]) -> Result<String, InvalidLabel> {
        let labels: Vec<String> = states.iter().map(|(labels, _)| render_labels(labels)).collect::<Result<_, _>>()?;
        let mut out = String::new();
        for (index, family) in FAMILIES.iter().enumerate() {
            let mut samples = states.iter().zip(&labels).filter_map(|((_, m), l)| m.values[index].map(|v| (l, v)));
            let samples: Vec<(&String, f64)> = match family.scope {
                Scope::State => samples.collect(),
                Scope::Process => samples.next().into_iter().collect(),
            };
            if samples.is_empty() {
                continue;
            }
            let name = family.name;
            let _ = write!(out, "# HELP {name} {}\n# TYPE {name} {}\n", family.help, family.kind);
            for (labels, value) in samples {
                let labels = if family.scope == Scope::Process && states.len() > 1 { "" } else { labels.as_str() };
                let _ = writeln!(out, "{name}{labels} {}", PromNumber(value));
            }
        }
        Ok(out)
    }

    /// Leaves out every family whose bit in `visible` is clear (bit `i`: `FAMILIES[i]`):
    /// `system.metrics()` reveals nothing that the functions the state may call would not
    /// (`functions/permissions.rs` says which families stay visible).
    pub(crate) fn keep_only(&mut self, visible: u32) {
        for (index, value) in self.values.iter_mut().enumerate() {
            if visible & (1 << index) == 0 {
                *value = None;
            }
        }
    }
}

/// `{name="value",...}`, or empty for no labels.
pub(crate) fn render_labels(labels: &[(&str, &str)]) -> Result<String, InvalidLabel> {
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
