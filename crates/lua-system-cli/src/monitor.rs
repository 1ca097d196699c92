//! Watching memory while a script runs: `--gctrace`, `--mem-profile FILE`, `--heap-profile FILE`
//! and `--stats FORMAT`.
//!
//! * `--gctrace`: one line on stderr per completed collection cycle, in the spirit of Go's
//!   `GODEBUG=gctrace=1`:
//!
//!   ```text
//!   gc 12 @0.532s: 4.10 -> 2.01 -> 4.02 MB, 51234 objects, forced, 1.803 ms
//!   ```
//!
//!   cycle number; when it ended, since the state was created; heap before (the largest since
//!   the previous cycle) -> after (when the cycle ended) -> next target, in MiB (the target is
//!   `off` while the collector is stopped); live heap blocks; `forced` (by `system.gc()` or
//!   `collectgarbage("collect")`) or `auto`; the duration of a forced collection (automatic
//!   cycles run in steps between the script's own work, so theirs is `-`).
//! * `--mem-profile FILE`: samples the heap, its blocks, the next target and the process's
//!   resident memory every `--mem-profile-interval` milliseconds (default 10) on a thread of its
//!   own, and records every cycle, whose start and end join the samples (`Profile::timeline`);
//!   writes, by the file's extension, `.svg` (a chart), `.csv` or `.json` (the samples and the
//!   cycles). At most 2,000 interval samples are kept: past that, every other one is dropped and
//!   the interval doubles, so a long script gets a bounded profile.
//! * `--listen ADDRESS`: `/metrics` and `/debug/pprof/heap` served while the script runs
//!   (listen.rs).
//! * `--stats json|prometheus`: the final figures at exit, on stderr.
//!
//! The profile and the figures are written when the program ends, `os.exit` included (it is
//! wrapped to write them first).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lua_system::heap_profile::HeapProfile;
use lua_system::mlua::{self, Lua};
use lua_system::{Cycle, MemStats, Probe, Sample, SampleEvent, SystemLua};

use crate::options::Options;

/// The most samples a profile keeps.
pub const MAX_SAMPLES: usize = 2000;

/// The most cycles a profile records (a script may run millions).
const MAX_CYCLES: usize = 100_000;

/// What the runner was asked to watch, and the profile being recorded.
pub struct Watch {
    trace: bool,
    profile: Option<(PathBuf, Duration)>,
    stats: Option<String>,
    /// `--heap-profile`: where the heap profile is written at the end.
    heap_profile: Option<PathBuf>,
    heap_profile_rate: u64,
    /// `--listen`: where to serve, and the server while the program runs.
    listen: Option<String>,
    server: Mutex<Option<lua_system::MetricsServer>>,
    recorded: Mutex<Profile>,
    /// Set once the outputs are written: nothing more is traced or recorded after.
    finished: AtomicBool,
}

impl Watch {
    /// From the options; a bad `--mem-profile` file name is refused before anything runs.
    pub fn new(options: &Options) -> Result<Arc<Watch>, String> {
        let profile = match options.mem_profile.as_deref() {
            Some(path) => {
                Some((profile_path(path)?, Duration::from_millis(options.mem_profile_interval_ms.unwrap_or(10))))
            }
            None => None,
        };
        let interval_ms = profile.as_ref().map_or(0.0, |(_, interval)| interval.as_secs_f64() * 1e3);
        let heap_profile = options.heap_profile.as_deref().map(heap_profile_path).transpose()?;
        Ok(Arc::new(Watch {
            trace: options.gctrace,
            profile,
            stats: options.stats.clone(),
            heap_profile,
            heap_profile_rate: options.heap_profile_rate.unwrap_or(lua_system::DEFAULT_HEAP_PROFILE_RATE),
            listen: options.listen.clone(),
            server: Mutex::new(None),
            recorded: Mutex::new(Profile { interval_ms, ..Profile::default() }),
            finished: AtomicBool::new(false),
        }))
    }

    fn recorded(&self) -> std::sync::MutexGuard<'_, Profile> {
        self.recorded.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Traces and records the state's cycles, if asked to.
    pub fn watch_cycles(self: &Arc<Self>, state: &SystemLua) -> mlua::Result<()> {
        if !self.trace && self.profile.is_none() {
            return Ok(());
        }
        let watch = Arc::clone(self);
        state.on_gc_cycle(Some(Box::new(move |cycle| {
            if watch.finished.load(Ordering::Relaxed) {
                return; // os.exit(code, true) closing the state
            }
            if watch.trace {
                let _ = writeln!(std::io::stderr(), "{}", trace_line(cycle));
            }
            if watch.profile.is_some() {
                let mut recorded = watch.recorded();
                recorded.cycle_count = cycle.number;
                if recorded.cycles.len() < MAX_CYCLES {
                    recorded.cycles.push(*cycle);
                }
            }
        })))
    }

    /// Puts `collectgarbage` behind the module's stand-in (forced cycles, the setting read at
    /// once) when cycles are watched, starts the heap profiler and the server if asked, and has
    /// `os.exit` write the outputs and stop the server first when there is anything to write or
    /// stop. Both are the library's C functions, whose upvalues are checked: a script reaching
    /// them through `debug` gets an error, not the runner's memory.
    pub fn install(self: &Arc<Self>, lua: &Lua) -> mlua::Result<()> {
        if self.trace || self.profile.is_some() {
            lua_system::track_collectgarbage(lua)?;
        }
        if (self.heap_profile.is_some() || self.listen.is_some()) && self.heap_profile_rate > 0 {
            lua_system::set_heap_profile_rate(lua, self.heap_profile_rate)?;
        }
        if let Some(address) = &self.listen {
            let server = crate::listen::start(lua, address).map_err(mlua::Error::runtime)?;
            *self.server.lock().unwrap_or_else(|poison| poison.into_inner()) = Some(server);
        }
        if self.profile.is_some() || self.stats.is_some() || self.heap_profile.is_some() || self.listen.is_some() {
            // A sandboxed script has no `os.exit`: its outputs are written at the end.
            let watch = Arc::clone(self);
            lua_system::on_exit(lua, move |exiting| {
                watch.finish_with(|| Ok(exiting.mem_stats()), || Ok(exiting.heap_profile()));
            })?;
        }
        Ok(())
    }

    /// Runs `program`, sampling `state` on a thread of its own if a profile was asked for.
    pub fn run<T>(&self, state: Option<&SystemLua>, program: impl FnOnce() -> T) -> T {
        match (state, &self.profile) {
            (Some(state), Some((_, interval))) => sample_while(state, *interval, &self.recorded, program),
            _ => program(),
        }
    }

    /// Writes the profile and the final figures, once.
    pub fn finish(&self, lua: &Lua) {
        self.finish_with(|| lua_system::mem_stats(lua), || lua_system::heap_profile(lua));
    }

    /// [`Watch::finish`] with the state's figures and heap profile read by the caller (the
    /// runner, or the library's `os.exit` on the thread that called it).
    fn finish_with(
        &self,
        mem_stats: impl FnOnce() -> mlua::Result<MemStats>,
        heap_profile: impl FnOnce() -> mlua::Result<HeapProfile>,
    ) {
        if self.finished.swap(true, Ordering::Relaxed) {
            return;
        }
        drop(self.server.lock().unwrap_or_else(|poison| poison.into_inner()).take());
        // Each file written is named on stderr, with what it holds: a newcomer learns where the
        // output went and that it is whole.
        if let Some((path, _)) = &self.profile {
            let recorded = self.recorded();
            match write_profile(path, &recorded) {
                Ok(()) => eprintln!("{}: wrote {} ({})", crate::progname(), path.display(), recorded.summary(path)),
                Err(message) => eprintln!("{}: {message}", crate::progname()),
            }
        }
        if let Some(path) = &self.heap_profile {
            let written = heap_profile().and_then(|profile| {
                profile.write_to_path(path).map_err(|error| mlua::Error::runtime(error.to_string()))?;
                Ok(profile)
            });
            match written {
                Ok(profile) => {
                    eprintln!("{}: wrote {} ({})", crate::progname(), path.display(), heap_summary(path, &profile))
                }
                Err(error) => eprintln!("{}: --heap-profile: {error}", crate::progname()),
            }
        }
        if let Some(format) = &self.stats {
            match mem_stats().and_then(|stats| final_stats(&stats, format)) {
                Ok(stats) => {
                    let _ = std::io::stderr().write_all(stats.as_bytes());
                }
                Err(error) => eprintln!("{}: --stats: {error}", crate::progname()),
            }
        }
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// A line of `--gctrace`.
pub fn trace_line(cycle: &Cycle) -> String {
    let mb = |bytes: u64| bytes as f64 / MIB;
    let next = cycle.next_gc.map_or_else(|| "off".to_owned(), |n| format!("{:.2}", mb(n)));
    let duration = cycle.duration.map_or_else(|| "-".to_owned(), |d| format!("{:.3} ms", d.as_secs_f64() * 1e3));
    format!(
        "gc {} @{:.3}s: {:.2} -> {:.2} -> {} MB, {} objects, {}, {}",
        cycle.number,
        cycle.at.as_secs_f64(),
        mb(cycle.heap_before),
        mb(cycle.heap_after),
        next,
        cycle.objects,
        if cycle.forced { "forced" } else { "auto" },
        duration
    )
}

/// A bounded record of samples and cycles.
#[derive(Default)]
pub struct Profile {
    pub interval_ms: f64,
    pub samples: Vec<Sample>,
    pub cycles: Vec<Cycle>,
    /// The number of the last cycle seen: the state's cycles since its creation, as
    /// `mem_stats().num_gc` counts them (`cycles` stops at [`MAX_CYCLES`]).
    pub cycle_count: u64,
}

/// The most cycles whose start and end join the timeline: past it, cycles evenly spread over
/// the run (the last one included) stand for the rest.
const MAX_TIMELINE_CYCLES: usize = 5000;

impl Profile {
    /// The samples to write: those taken on the interval, and each cycle's start and end (the
    /// heap before and after it, so the saw-tooth is exact), in time order.
    pub fn timeline(&self) -> Vec<Sample> {
        let cycles = &self.cycles;
        let every = cycles.len().div_ceil(MAX_TIMELINE_CYCLES).max(1);
        let kept = cycles.iter().rev().step_by(every);
        let mut timeline: Vec<Sample> = self.samples.iter().copied().chain(kept.flat_map(Cycle::samples)).collect();
        timeline.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
        // A probe that read the count an instant before a cycle's end was recorded, and the
        // time an instant after, holds a stale count: the cycle's own samples say it better.
        let mut counted = 0;
        timeline.retain(|sample| {
            let stale = sample.event == SampleEvent::Interval && sample.num_gc < counted;
            counted = counted.max(sample.num_gc);
            !stale
        });
        // A cycle's start sample carries the target the cycle set at its end (`Cycle::samples`),
        // and a sample taken while the cycle runs the target its end will set from Lua's live
        // estimate of the moment (docs/figures.md, `next_gc_source`), which changes as it marks
        // (Lua 5.5 counts the bytes marked so far). Until the cycle's end, the target in force is
        // the one before: drawn as read, a forced collection's target would drop or jump at its
        // start and come back at its end.
        let mut in_force = None;
        let mut collecting = false;
        for sample in &mut timeline {
            match sample.event {
                SampleEvent::CycleStart => collecting = true,
                SampleEvent::CycleEnd => collecting = false,
                SampleEvent::Interval => {}
            }
            if collecting && let Some(before) = in_force {
                sample.next_gc = before;
            }
            in_force = Some(sample.next_gc);
        }
        timeline
    }

    /// What the file written holds, for the runner's message.
    pub fn summary(&self, path: &Path) -> String {
        let timeline = self.timeline();
        let seconds = timeline.last().map_or(0.0, |s| s.seconds);
        let chart = if path.extension().is_some_and(|e| e == "svg") { "a chart of " } else { "" };
        format!("{chart}{} GC cycles, {} samples over {seconds:.2} s", self.cycle_count, timeline.len())
    }

    /// Adds a sample; past [`MAX_SAMPLES`], drops every other one and returns true (the caller
    /// then doubles its interval).
    pub fn push(&mut self, sample: Sample) -> bool {
        self.samples.push(sample);
        if self.samples.len() < MAX_SAMPLES {
            return false;
        }
        // Keep every other sample counting from the newest, so the last one always stays.
        let mut from_end = self.samples.len();
        self.samples.retain(|_| {
            from_end -= 1;
            from_end.is_multiple_of(2)
        });
        self.interval_ms *= 2.0;
        true
    }
}

/// Runs `script` while a thread samples `state` into `profile` every `interval`; the sampler
/// stops when the script returns or panics.
fn sample_while<T>(state: &SystemLua, interval: Duration, profile: &Mutex<Profile>, script: impl FnOnce() -> T) -> T {
    let probe: Probe<'_> = state.probe();
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut interval = interval;
            loop {
                let sample = probe.sample();
                if profile.lock().unwrap_or_else(|p| p.into_inner()).push(sample) {
                    interval *= 2;
                }
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::park_timeout(interval);
            }
        });
        // Stops the sampler on the way out, a panic included (the scope waits for it).
        struct StopOnDrop<'a>(&'a AtomicBool, &'a std::thread::Thread);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
                self.1.unpark();
            }
        }
        let stopper = StopOnDrop(&stop, sampler.thread());
        let result = script();
        drop(stopper);
        let _ = sampler.join();
        result
    })
}

/// Writes `profile` to `path`: `.svg`, `.csv` or `.json`.
pub fn write_profile(path: &Path, profile: &Profile) -> Result<(), String> {
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let failed = |e: &dyn std::fmt::Display| format!("cannot write {}: {e}", path.display());
    match extension {
        "svg" => chart(path, profile).map_err(|e| failed(&e)),
        "csv" => std::fs::write(path, csv(profile)).map_err(|e| failed(&e)),
        "json" => {
            let written =
                Written { interval_ms: profile.interval_ms, samples: profile.timeline(), cycles: &profile.cycles };
            let json = serde_json::to_string_pretty(&written).map_err(|e| failed(&e))?;
            std::fs::write(path, json + "\n").map_err(|e| failed(&e))
        }
        other => Err(format!("--mem-profile: unknown extension '{other}' (svg, csv or json)")),
    }
}

/// The `.json` profile: the timeline as `samples`, then every cycle.
#[derive(serde::Serialize)]
struct Written<'a> {
    interval_ms: f64,
    samples: Vec<Sample>,
    cycles: &'a [Cycle],
}

/// The timeline as CSV, one row per sample (bytes; empty where unavailable); `event` says what
/// the sample was taken at (`interval`, `cycle_start`, `cycle_end`). The cycles' other details
/// are in the `.json` profile.
pub fn csv(profile: &Profile) -> String {
    let mut out = String::from("seconds,heap_alloc,heap_objects,next_gc,num_gc,resident,event\n");
    for s in profile.timeline() {
        let opt = |v: Option<u64>| v.map_or(String::new(), |v| v.to_string());
        let event = match s.event {
            SampleEvent::Interval => "interval",
            SampleEvent::CycleStart => "cycle_start",
            SampleEvent::CycleEnd => "cycle_end",
        };
        let _ = writeln!(
            out,
            "{:.6},{},{},{},{},{},{event}",
            s.seconds,
            s.heap_alloc,
            s.heap_objects,
            opt(s.next_gc),
            s.num_gc,
            opt(s.resident)
        );
    }
    out
}

/// The chart: heap and next target over time, collection cycles as markers on the heap line.
fn chart(path: &Path, profile: &Profile) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;

    let timeline = profile.timeline();
    let samples = &timeline;
    let end = samples.last().map_or(1.0, |s| s.seconds).max(1e-3);
    let top = samples
        .iter()
        .flat_map(|s| [Some(s.heap_alloc), s.next_gc, s.resident])
        .flatten()
        .chain(profile.cycles.iter().map(|c| c.heap_before))
        .max()
        .unwrap_or(1) as f64
        / MIB
        * 1.1;
    let root = SVGBackend::new(path, (960, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let forced = profile.cycles.iter().filter(|c| c.forced).count();
    let title = format!(
        "Lua heap over time: {} GC cycles ({} forced), samples every {} ms and at each cycle",
        profile.cycle_count, forced, profile.interval_ms
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..end, 0.0..top.max(0.01))?;
    chart.configure_mesh().x_desc("time (s)").y_desc("memory (MiB)").draw()?;

    let resident = samples.iter().filter_map(|s| s.resident.map(|r| (s.seconds, r as f64 / MIB)));
    chart
        .draw_series(LineSeries::new(resident, RGBColor(160, 160, 160)))?
        .label("process resident memory")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RGBColor(160, 160, 160)));
    chart
        .draw_series(LineSeries::new(steps(samples), RED.stroke_width(1)))?
        .label("next_gc (next cycle's target)")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED));
    let heap = samples.iter().map(|s| (s.seconds, s.heap_alloc as f64 / MIB));
    chart
        .draw_series(LineSeries::new(heap, BLUE.stroke_width(2)))?
        .label("heap (alloc)")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    let marks = profile.cycles.iter().map(|c| {
        let style = if c.forced { BLACK.filled() } else { GREEN.filled() };
        Circle::new((c.at.as_secs_f64(), c.heap_after as f64 / MIB), 3, style)
    });
    chart
        .draw_series(marks)?
        .label("GC cycle end (black: forced)")
        .legend(|(x, y)| Circle::new((x + 10, y), 3, GREEN.filled()));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;
    root.present()?;
    Ok(())
}

/// The next target as a step line: it changes at a cycle's end and holds until the next.
fn steps(samples: &[Sample]) -> Vec<(f64, f64)> {
    let mut points: Vec<(f64, f64)> = Vec::with_capacity(2 * samples.len());
    for sample in samples {
        let Some(next) = sample.next_gc else { continue };
        let y = next as f64 / MIB;
        if let Some(&(_, previous)) = points.last()
            && previous != y
        {
            points.push((sample.seconds, previous));
        }
        points.push((sample.seconds, y));
    }
    points
}

/// `--stats json|prometheus`: the state's final figures.
pub fn final_stats(stats: &MemStats, format: &str) -> mlua::Result<String> {
    let metrics = stats.metrics();
    match format {
        "json" => serde_json::to_string_pretty(&metrics).map(|j| j + "\n").map_err(mlua::Error::external),
        "prometheus" => Ok(metrics.to_prometheus()),
        other => Err(mlua::Error::runtime(format!("--stats: unknown format '{other}' (json or prometheus)"))),
    }
}

/// What a heap profile file holds, for the runner's message: the in-use heap it shows, and how
/// to read it.
fn heap_summary(path: &Path, profile: &lua_system::heap_profile::HeapProfile) -> String {
    let in_use = size(profile.total(lua_system::heap_profile::View::InuseSpace));
    let blocks: u64 = profile.samples.iter().map(|sample| sample.inuse_objects).sum();
    let how =
        if profile.rate <= 1 { "every block recorded".to_owned() } else { format!("from {blocks} sampled blocks") };
    let name = path.to_string_lossy().to_ascii_lowercase();
    if name.ends_with(".svg") {
        format!("a flamegraph of {in_use} in use, {how}")
    } else if name.ends_with(".folded") {
        format!("folded stacks of {in_use} in use, {how}")
    } else {
        format!("{in_use} in use, {how}; read it with: go tool pprof -top {}", path.display())
    }
}

/// Bytes as the flamegraph's title writes them: B, KiB, MiB or GiB.
fn size(bytes: i64) -> String {
    let value = bytes as f64;
    match bytes {
        ..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{:.1} KiB", value / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.2} MiB", value / MIB),
        _ => format!("{:.2} GiB", value / (1024.0 * MIB)),
    }
}

/// Where `--heap-profile` writes, checked before the script runs (the format follows the
/// extension: `lua_system::heap_profile::HeapProfile::write_to_path`).
fn heap_profile_path(path: &str) -> Result<PathBuf, String> {
    let lower = path.to_ascii_lowercase();
    if [".pb.gz", ".pprof", ".folded", ".svg"].iter().any(|extension| lower.ends_with(extension)) {
        Ok(PathBuf::from(path))
    } else {
        Err(format!("--heap-profile: '{path}' must end in .pb.gz, .pprof, .folded or .svg"))
    }
}

/// Where `--mem-profile` writes, checked before the script runs.
pub fn profile_path(path: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(path);
    match path.extension().and_then(|e| e.to_str()) {
        Some("svg" | "csv" | "json") => Ok(path),
        _ => Err(format!("--mem-profile: '{}' must end in .svg, .csv or .json", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Sample {
        let lua = SystemLua::new().unwrap();
        lua.probe().sample()
    }

    #[test]
    fn a_profile_stays_bounded_and_doubles_its_interval() {
        let mut profile = Profile { interval_ms: 10.0, ..Profile::default() };
        let template = sample();
        let mut doublings = 0;
        for i in 0..10 * MAX_SAMPLES {
            let mut next = template;
            next.seconds = i as f64;
            if profile.push(next) {
                doublings += 1;
            }
        }
        assert!(profile.samples.len() < MAX_SAMPLES);
        assert!(doublings >= 3);
        assert_eq!(profile.interval_ms, 10.0 * 2f64.powi(doublings));
        assert!(profile.samples.windows(2).all(|w| w[0].seconds < w[1].seconds));
    }
}
