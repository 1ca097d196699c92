//! Many states' figures for Prometheus and pprof stores: [`WatchedStates`], a set of Lua states
//! told apart by labels, read from any thread without entering Lua.
//!
//! The set holds no state alive: it keeps a weak reference to each state's record, and a state
//! that closes leaves the set (at the next read). Reading it never touches a Lua state: the
//! figures come from the module's counters (atomics) and the heap profiler's samples (behind
//! its own lock, which the state's thread takes only to record a sampled allocation).
//!
//! With the feature `prometheus`, the set is a `prometheus_client` collector: register it in the
//! registry the host already has. Each state's families get one sample per state, labelled; the
//! process's (`lua_process_*`, `lua_max_procs`) appear once, unlabelled. So register one set per
//! registry: two would both report the process's figures.

use std::sync::{Mutex, MutexGuard, Weak};

use mlua::Lua;

use crate::ffi::states;
use crate::figures::mem_stats::MemStats;
#[cfg(feature = "prometheus")]
use crate::figures::metrics::{FAMILIES, Scope};
use crate::figures::metrics::{Metrics, render_labels};
use crate::heap_profile::HeapProfile;
use crate::state::StateRecord;

/// Labels telling one state apart: `[("state", "worker-1")]`.
pub type Labels = Vec<(String, String)>;

/// A set of Lua states whose figures are exported (see the module docs): to Prometheus through
/// `to_prometheus`, `to_openmetrics` or its `prometheus_client` collector (feature
/// `prometheus`), and to pprof through [`WatchedStates::heap_profile`].
///
/// ```
/// # fn main() -> mlua::Result<()> {
/// use lua_system::{SystemLua, WatchedStates};
///
/// let states = WatchedStates::new();
/// let (a, b) = (SystemLua::new()?, SystemLua::new()?);
/// states.add(&a, &[("state", "worker-1")])?;
/// states.add(&b, &[("state", "worker-2")])?;
/// a.load("big = string.rep('x', 1048576)").exec()?; // (no `<<` in Lua 5.1)
/// let figures = states.metrics(); // from any thread, without entering Lua
/// let heap = |i: usize| figures[i].1.get("lua_heap_alloc_bytes").unwrap();
/// assert_eq!(figures[0].0, [("state".to_string(), "worker-1".to_string())]);
/// assert!(heap(0) > heap(1) + 1e6);
/// drop(b); // a state that closes leaves the set
/// assert_eq!(states.len(), 1);
/// # Ok(())
/// # }
/// ```
#[derive(Default)]
pub struct WatchedStates {
    states: Mutex<Vec<Watched>>,
}

struct Watched {
    labels: Labels,
    record: Weak<StateRecord>,
}

impl std::fmt::Debug for WatchedStates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let labels: Vec<Labels> = self.live().iter().map(|watched| watched.labels.clone()).collect();
        f.debug_struct("WatchedStates").field("states", &labels).finish()
    }
}

impl WatchedStates {
    /// An empty set.
    pub fn new() -> WatchedStates {
        WatchedStates::default()
    }

    /// Adds `lua`'s state (a [`SystemLua`](crate::SystemLua), or a state the module was
    /// [`install`](crate::install)ed in), told apart from the others by `labels`, which are
    /// compared as Prometheus compares series: in any order, a label with an empty value being
    /// none. Refused: a state without the module, a label name Prometheus does not allow or
    /// given twice, or labels another state of the set already has (their samples could not be
    /// told apart). The same state may be added under several label sets (a sum over them then
    /// counts it as often).
    pub fn add(&self, lua: &Lua, labels: &[(&str, &str)]) -> mlua::Result<()> {
        render_labels(labels).map_err(mlua::Error::external)?;
        let labels = normalized(labels);
        if let Some(pair) = labels.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            let name = &pair[0].0;
            return Err(mlua::Error::runtime(format!("lua-system: the label '{name}' is given twice")));
        }
        let record = states::published::<StateRecord>(lua)?;
        let mut live = self.live();
        if live.iter().any(|watched| watched.labels == labels) {
            return Err(mlua::Error::runtime(format!("lua-system: a watched state already has the labels {labels:?}")));
        }
        live.push(Watched { labels, record: std::sync::Arc::downgrade(&record) });
        Ok(())
    }

    /// Takes the state with these labels (in any order) out of the set; whether there was one.
    pub fn remove(&self, labels: &[(&str, &str)]) -> bool {
        let labels = normalized(labels);
        let mut live = self.live();
        let before = live.len();
        live.retain(|watched| watched.labels != labels);
        live.len() != before
    }

    /// How many states the set holds (closed states have left it).
    pub fn len(&self) -> usize {
        self.live().len()
    }

    /// Whether the set holds no state.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The states, closed ones dropped.
    fn live(&self) -> MutexGuard<'_, Vec<Watched>> {
        let mut states = self.states.lock().unwrap_or_else(|poison| poison.into_inner());
        states.retain(|watched| watched.record.strong_count() > 0);
        states
    }

    /// Each state's figures now, with its labels. Every figure is included (permissions limit
    /// what scripts see, not the host). The GC percent and the next cycle's threshold are as
    /// the state's thread last knew them (see [`Probe`](crate::Probe)).
    pub fn metrics(&self) -> Vec<(Labels, Metrics)> {
        let live = self.live();
        live.iter()
            .filter_map(|watched| {
                let record = watched.record.upgrade()?;
                Some((watched.labels.clone(), MemStats::observe(&record).metrics()))
            })
            .collect()
    }

    /// The figures in the Prometheus text format (version 0.0.4), as `prometheus_client`
    /// encodes this set registered alone.
    #[cfg(feature = "prometheus")]
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry());
        out
    }

    /// The same in the OpenMetrics text format (a counter's family without `_total`; `# EOF`).
    #[cfg(feature = "prometheus")]
    pub fn to_openmetrics(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry());
        out
    }

    /// A registry holding this set's figures now.
    #[cfg(feature = "prometheus")]
    fn registry(&self) -> prometheus_client::registry::Registry {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(Snapshot(self.metrics())));
        registry
    }

    /// The heap profile of the states whose labels include every pair of `selector` (all of
    /// them for an empty selector), each sample labelled with its state's labels
    /// ([`heap_profile::Sample::labels`](crate::heap_profile::Sample::labels)). Profiles of
    /// states sampled at another rate than the first state with samples cannot be scaled as
    /// one: they are left out, and a comment names them.
    pub fn heap_profile(&self, selector: &[(&str, &str)]) -> HeapProfile {
        let chosen: Vec<(Labels, HeapProfile)> = {
            let live = self.live();
            live.iter()
                .filter(|watched| selector.iter().all(|pair| watched.labels.iter().any(|l| same_pair(l, pair))))
                .filter_map(|watched| {
                    Some((watched.labels.clone(), watched.record.upgrade()?.heap_sampler().profile()))
                })
                .collect()
        };
        merge(chosen)
    }
}

fn same_pair((name, value): &(String, String), (other_name, other_value): &(&str, &str)) -> bool {
    name == other_name && value == other_value
}

/// Labels as Prometheus tells series apart: by name, whatever the order, and a label with an
/// empty value is no label at all.
fn normalized(labels: &[(&str, &str)]) -> Labels {
    let mut labels: Labels =
        labels.iter().filter(|(_, value)| !value.is_empty()).map(|(k, v)| (k.to_string(), v.to_string())).collect();
    labels.sort();
    labels
}

/// One profile from several states' (see [`WatchedStates::heap_profile`]).
fn merge(profiles: Vec<(Labels, HeapProfile)>) -> HeapProfile {
    // The first state with samples sets the rate (a state never profiled has none).
    let rate = profiles.iter().find(|(_, p)| !p.samples.is_empty()).map_or(1, |(_, p)| p.rate);
    let mut merged = HeapProfile { rate, samples: Vec::new(), time_nanos: 0, duration_nanos: 0, comments: Vec::new() };
    for (labels, profile) in profiles {
        let sampled = !profile.samples.is_empty();
        if sampled && profile.rate != rate {
            merged.comments.push(format!(
                "left out: the state {labels:?}, sampled every {} bytes (this profile: every {rate})",
                profile.rate
            ));
            continue;
        }
        merged.time_nanos = merged.time_nanos.max(profile.time_nanos);
        merged.duration_nanos = merged.duration_nanos.max(profile.duration_nanos);
        for comment in profile.comments {
            if !merged.comments.contains(&comment) {
                merged.comments.push(comment);
            }
        }
        merged.samples.extend(profile.samples.into_iter().map(|mut sample| {
            sample.labels.extend(labels.iter().cloned());
            sample
        }));
    }
    merged
}

#[cfg(feature = "prometheus")]
impl prometheus_client::collector::Collector for WatchedStates {
    fn encode(&self, encoder: prometheus_client::encoding::DescriptorEncoder) -> std::fmt::Result {
        Snapshot(self.metrics()).encode(encoder)
    }
}

/// The set's figures at one moment, as a collector.
#[cfg(feature = "prometheus")]
#[derive(Debug)]
struct Snapshot(Vec<(Labels, Metrics)>);

#[cfg(feature = "prometheus")]
impl prometheus_client::collector::Collector for Snapshot {
    /// Each family once: the states' with one labelled sample per state, the process's with
    /// one unlabelled sample (from the first state that has it).
    fn encode(&self, mut encoder: prometheus_client::encoding::DescriptorEncoder) -> std::fmt::Result {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::MetricType;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;

        let states = &self.0;
        let no_labels = Labels::new();
        for family in FAMILIES {
            let samples: Vec<(&Labels, f64)> = match family.scope {
                Scope::State => states.iter().filter_map(|(l, m)| m.get(family.name).map(|v| (l, v))).collect(),
                Scope::Process => {
                    states.iter().find_map(|(_, m)| m.get(family.name)).map(|v| (&no_labels, v)).into_iter().collect()
                }
            };
            if samples.is_empty() {
                continue;
            }
            // The client library adds `_total` to counters itself, and a period to nothing.
            let counter = family.kind == "counter";
            let (name, kind) = match counter {
                true => (family.name.strip_suffix("_total").unwrap_or(family.name), MetricType::Counter),
                false => (family.name, MetricType::Gauge),
            };
            let mut metric = encoder.encode_descriptor(name, family.help, None, kind)?;
            for (labels, value) in samples {
                let sample = metric.encode_family(labels)?;
                if counter {
                    ConstCounter::new(value as u64).encode(sample)?;
                } else if value.fract() == 0.0 && value.abs() < 9.0e15 {
                    ConstGauge::new(value as i64).encode(sample)?;
                } else {
                    ConstGauge::new(value).encode(sample)?;
                }
            }
        }
        Ok(())
    }
}
