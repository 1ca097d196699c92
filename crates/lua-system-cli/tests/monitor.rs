//! Watching memory through the runner: `--gctrace`, `--mem-profile` (svg, csv, json), `--stats`
//! and `system.metrics()`, each read back with a real parser.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// Makes garbage, builds and drops a live set, forces three cycles (two `system.gc()`, one
/// `collectgarbage()`), stops the collector for a forced cycle, and prints `num_gc` last, with
/// the collector stopped so that no cycle follows it.
const WORKLOAD: &str = r#"
local system = require("system")
for _ = 1, 20 do
  local scratch = {}
  for i = 1, 5000 do scratch[i] = { i, tostring(i) } end
end
local live = {}
for i = 1, 100000 do live[i] = { i } end
system.gc()
live = nil
collectgarbage()
system.set_gc_percent(-1)
system.gc()
print(system.mem_stats().num_gc)
"#;

fn workload() -> PathBuf {
    temp_script("monitor_workload.lua", WORKLOAD)
}

fn temp_file(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lua-system-monitor-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    path
}

/// Runs the workload with `options` and returns its final `num_gc` and stderr.
fn run_workload(options: &[&str]) -> (u64, String) {
    let script = workload();
    let mut args = options.to_vec();
    args.push(script.to_str().unwrap());
    let out = run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let num_gc = stdout(&out).trim().parse().expect("num_gc on stdout");
    (num_gc, stderr(&out))
}

/// A `--gctrace` line, parsed by its documented format:
/// `gc N @T.TTTs: B -> A -> (N|off) MB, O objects, forced|auto, D.DDD ms|-`.
#[derive(Debug)]
struct TraceLine {
    number: u64,
    seconds: f64,
    before_mb: f64,
    after_mb: f64,
    next_mb: Option<f64>,
    objects: u64,
    forced: bool,
    duration_ms: Option<f64>,
}

fn parse_trace_line(line: &str) -> Option<TraceLine> {
    let rest = line.strip_prefix("gc ")?;
    let (number, rest) = rest.split_once(" @")?;
    let (seconds, rest) = rest.split_once("s: ")?;
    let (heap, rest) = rest.split_once(" MB, ")?;
    let mut heap = heap.split(" -> ");
    let (before, after, next) = (heap.next()?, heap.next()?, heap.next()?);
    let (objects, rest) = rest.split_once(" objects, ")?;
    let (kind, duration) = rest.split_once(", ")?;
    Some(TraceLine {
        number: number.parse().ok()?,
        seconds: seconds.parse().ok()?,
        before_mb: before.parse().ok()?,
        after_mb: after.parse().ok()?,
        next_mb: if next == "off" { None } else { Some(next.parse().ok()?) },
        objects: objects.parse().ok()?,
        forced: match kind {
            "forced" => true,
            "auto" => false,
            _ => return None,
        },
        duration_ms: if duration == "-" { None } else { Some(duration.strip_suffix(" ms")?.parse().ok()?) },
    })
}

#[test]
fn gctrace_prints_one_parsable_line_per_cycle_and_counts_as_num_gc_does() {
    let (num_gc, err) = run_workload(&["--gctrace"]);
    let lines: Vec<TraceLine> =
        err.lines().map(|l| parse_trace_line(l).unwrap_or_else(|| panic!("not a trace line: {l:?}"))).collect();
    assert!(lines.len() >= 5, "cycles traced: {}\n{err}", lines.len());

    // Every cycle of the state is traced, from the first (the interpreter's start runs it, before
    // the script), numbered without gaps up to num_gc.
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line.number, 1 + i as u64, "cycle numbers start at 1 and have no gap");
    }
    assert_eq!(lines.last().unwrap().number, num_gc, "the last traced cycle is num_gc");

    // Two system.gc() and one collectgarbage(); an automatic cycle already sweeping when one
    // of them was asked for ends within it and counts as forced too.
    let forced: Vec<&TraceLine> = lines.iter().filter(|l| l.forced).collect();
    assert!((3..=6).contains(&forced.len()), "forced cycles: {}\n{err}", forced.len());
    assert!(forced.iter().all(|l| l.duration_ms.is_some_and(|d| d >= 0.0)), "forced cycles are timed");
    assert!(lines.iter().filter(|l| !l.forced).all(|l| l.duration_ms.is_none()), "automatic ones are not");
    assert!(lines.windows(2).all(|w| w[0].seconds <= w[1].seconds), "times do not go back");
    for line in &lines {
        assert!(line.before_mb >= line.after_mb, "before >= after: {line:?}");
        assert!(line.objects > 0, "objects: {line:?}");
        // Lua 5.2 bases the threshold on the memory its marking traversed, which can be below
        // the heap: the next cycle then starts at once.
        if let Some(next) = line.next_mb
            && !cfg!(feature = "lua52")
        {
            assert!(next >= line.after_mb, "the target is above the live heap: {line:?}");
        }
    }
    // The live set of 100,000 tables is freed by the collection after `live = nil`.
    let built = forced.iter().position(|l| l.after_mb > 5.0).expect("a forced cycle with the live set");
    let (built, freed) = (&forced[built], forced[built + 1..].iter().find(|l| l.after_mb < 1.0).expect("freed"));
    assert!(built.after_mb > 5.0 && freed.after_mb < 1.0, "{built:?} then {freed:?}");
    assert!(freed.objects + 90_000 < built.objects, "{built:?} then {freed:?}");
    // The last cycle ran with the collector stopped: no target.
    assert_eq!(lines.last().unwrap().next_mb, None, "the target is off while stopped");
}

#[test]
fn mem_profile_svg_is_valid_xml_with_the_series_and_a_marker_per_cycle() {
    let path = temp_file("profile.svg");
    let (num_gc, err) = run_workload(&["--mem-profile", path.to_str().unwrap(), "--mem-profile-interval", "1"]);
    // The runner says where the chart went, and what it holds.
    let said = format!("wrote {} (a chart of {num_gc} GC cycles, ", path.display());
    assert!(err.contains(&said), "{err}");
    let svg = std::fs::read_to_string(&path).unwrap();
    let document = roxmltree::Document::parse(&svg).expect("valid XML");
    let root = document.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    let texts: Vec<&str> = root
        .descendants()
        .filter(|n| n.is_element() && n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .map(str::trim)
        .collect();
    for label in
        ["heap (alloc)", "next_gc (next cycle's target)", "process resident memory", "time (s)", "memory (MiB)"]
    {
        assert!(texts.contains(&label), "the chart has '{label}': {texts:?}");
    }
    // Three series are lines with many points (plus their legend swatches).
    let long_lines = root
        .descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .filter(|n| n.attribute("points").is_some_and(|p| p.split_whitespace().count() >= 5))
        .count();
    assert!(long_lines >= 3, "heap, next_gc and resident lines: {long_lines}");
    // One circle per cycle, plus the legend's; the title counts the cycles as num_gc does.
    let circles = root.descendants().filter(|n| n.has_tag_name("circle")).count() as u64;
    assert!(circles >= 6 && circles == num_gc + 1, "{circles} markers for {num_gc} cycles");
    let title = texts.iter().find(|t| t.starts_with("Lua heap over time")).expect("a title");
    assert!(title.starts_with(&format!("Lua heap over time: {num_gc} GC cycles (")), "{title}");
    assert!(["(3 forced)", "(4 forced)", "(5 forced)", "(6 forced)"].iter().any(|f| title.contains(f)), "{title}");
}

#[test]
fn mem_profile_csv_round_trips_through_a_csv_parser() {
    let path = temp_file("profile.csv");
    let (num_gc, _) = run_workload(&["--mem-profile", path.to_str().unwrap(), "--mem-profile-interval", "1"]);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(str::to_owned).collect();
    assert_eq!(header, ["seconds", "heap_alloc", "heap_objects", "next_gc", "num_gc", "resident", "event"]);

    type Row = (f64, u64, u64, Option<u64>, u64, Option<u64>, String);
    let rows: Vec<Row> = reader.deserialize().collect::<Result<_, _>>().expect("every row parses");
    let interval: Vec<&Row> = rows.iter().filter(|r| r.6 == "interval").collect();
    assert!(interval.len() >= 5, "{} samples", interval.len());
    assert!(rows.windows(2).all(|w| w[0].0 <= w[1].0), "time goes forward");
    assert!(rows.windows(2).all(|w| w[0].4 <= w[1].4), "num_gc never decreases");
    assert!(rows.iter().all(|r| r.1 > 0 && r.2 > 0), "heap and objects are measured");
    assert!(interval.iter().all(|r| r.5.is_some_and(|rss| rss > r.1)), "resident memory holds the heap");
    assert!(rows.iter().all(|r| ["interval", "cycle_start", "cycle_end"].contains(&r.6.as_str())));
    assert!(rows.last().unwrap().4 <= num_gc);
    assert!(rows.iter().map(|r| r.1).max().unwrap() > 5 << 20, "the 100,000-table live set is seen");

    // Every cycle that ended while the script ran has its start and end: the heap before it,
    // then the heap after it, one cycle later.
    let ends: Vec<&Row> = rows.iter().filter(|r| r.6 == "cycle_end").collect();
    let starts: Vec<&Row> = rows.iter().filter(|r| r.6 == "cycle_start").collect();
    assert_eq!(ends.len(), starts.len());
    assert!(ends.len() >= 6, "{} cycles", ends.len());
    assert_eq!(ends.len() as u64, num_gc, "every cycle of the state, as num_gc counts them");
    for (start, end) in starts.iter().zip(&ends) {
        assert_eq!(start.4 + 1, end.4, "one cycle from start to end");
        assert!(start.0 <= end.0 && start.1 >= end.1, "{start:?} -> {end:?}");
    }
    // A cycle's start shows the target in force until its end: the one the row before shows (a
    // forced collection's start is not the target it will set).
    for (i, row) in rows.iter().enumerate().skip(1) {
        if row.6 == "cycle_start" {
            assert_eq!(row.3, rows[i - 1].3, "the target at a cycle's start: {:?} then {row:?}", rows[i - 1]);
        }
    }
    let forced_start = rows.iter().position(|r| r.6 == "cycle_start" && r.1 > 5 << 20).expect("the live set's cycle");
    let forced_end = forced_start + rows[forced_start..].iter().position(|r| r.6 == "cycle_end").unwrap();
    assert!(rows[forced_start..forced_end].windows(2).all(|w| w[0].3 == w[1].3), "no dip in the target");

    // Written back with the same parser, the samples give the same text.
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(&header).unwrap();
    for row in &rows {
        let opt = |v: Option<u64>| v.map_or(String::new(), |v| v.to_string());
        writer
            .write_record([
                format!("{:.6}", row.0),
                row.1.to_string(),
                row.2.to_string(),
                opt(row.3),
                row.4.to_string(),
                opt(row.5),
                row.6.clone(),
            ])
            .unwrap();
    }
    assert_eq!(String::from_utf8(writer.into_inner().unwrap()).unwrap(), text);
}

#[test]
fn mem_profile_json_holds_samples_and_cycles() {
    let path = temp_file("profile.json");
    let (num_gc, _) = run_workload(&["--mem-profile", path.to_str().unwrap(), "--mem-profile-interval", "2"]);
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(json["interval_ms"], 2.0);
    let samples = json["samples"].as_array().unwrap();
    assert!(samples.len() >= 3);
    assert!(samples.iter().all(|s| s["heap_alloc"].as_u64().is_some_and(|h| h > 0)));
    let cycles = json["cycles"].as_array().unwrap();
    assert_eq!(cycles.last().unwrap()["number"], num_gc);
    assert!((3..=6).contains(&cycles.iter().filter(|c| c["forced"] == true).count()));
    assert!(cycles.iter().all(|c| c["heap_before"].as_u64() >= c["heap_after"].as_u64()));
    // One time format throughout: seconds since the state was created, as numbers.
    assert!(samples.iter().all(|s| s["seconds"].is_f64()));
    assert!(cycles.iter().all(|c| c["at"].is_f64()));
    assert!(cycles.iter().all(|c| c["duration"].is_f64() == (c["forced"] == true)));
    // Each cycle's end is a sample, at the cycle's time, with the heap it left.
    for cycle in cycles.iter().filter(|c| c["at"].as_f64().unwrap() > samples[0]["seconds"].as_f64().unwrap()) {
        let end = samples
            .iter()
            .find(|s| s["event"] == "cycle_end" && s["num_gc"] == cycle["number"])
            .unwrap_or_else(|| panic!("cycle {} has its end sample", cycle["number"]));
        assert_eq!(end["seconds"], cycle["at"]);
        assert_eq!(end["heap_alloc"], cycle["heap_after"]);
    }
}

#[test]
fn mem_profile_checks_its_file_name_before_running() {
    let out = run(&["--mem-profile", "profile.txt", "-e", "print('ran')"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("must end in .svg, .csv or .json"), "{}", stderr(&out));
    assert_eq!(stdout(&out), "", "the script did not run");
    let out = run(&["--mem-profile", "p.csv", "--mem-profile-interval", "0", "-e", "print('ran')"]);
    assert_eq!(out.status.code(), Some(1));
    let out = run(&["--mem-profile-interval", "5", "-e", "print('ran')"]);
    assert_eq!(out.status.code(), Some(1), "an interval without a profile is a mistake");
    assert!(stderr(&out).contains("needs '--mem-profile FILE'"), "{}", stderr(&out));
    let out = run(&["--gctrace", "--state", "plain", "-e", "print('ran')"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("need the accounted state"), "{}", stderr(&out));
}

#[test]
fn stats_json_prints_the_final_figures() {
    let (num_gc, err) = run_workload(&["--stats", "json"]);
    let json: serde_json::Value = serde_json::from_str(&err).expect("JSON on stderr");
    assert_eq!(json["accounting"], "exact");
    assert_eq!(
        json["lua_gc_cycles_total"].as_u64(),
        Some(num_gc),
        "the collector was stopped after num_gc was printed"
    );
    // Counts and bytes are JSON integers (`365`, not `365.0`).
    for name in ["lua_heap_alloc_bytes", "lua_heap_objects", "lua_heap_mallocs_total", "lua_gc_percent"] {
        assert!(json[name].is_i64(), "{name}: {}", json[name]);
    }
    assert_eq!(json["lua_gc_percent"], -1.0);
    assert!(json["lua_gc_next_bytes"].is_null(), "no target while stopped");
    let heap = json["lua_heap_alloc_bytes"].as_f64().unwrap();
    assert!(heap > 0.0 && json["lua_heap_allocated_bytes_total"].as_f64().unwrap() > heap);
    assert!(json["lua_process_resident_memory_bytes"].as_f64().unwrap() > heap);

    let out = run(&["--stats", "xml", "-e", "print('ran')"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("json or prometheus"), "{}", stderr(&out));
}

/// A Python with the `prometheus_client` package (Debian's python3-prometheus-client, which CI
/// installs). Outside CI, a machine without it skips the check, saying so.
fn python_with_prometheus_client() -> Option<PathBuf> {
    for python in ["/usr/bin/python3", "python3"] {
        let found = Command::new(python).args(["-c", "import prometheus_client"]).output();
        if found.is_ok_and(|o| o.status.success()) {
            return Some(PathBuf::from(python));
        }
    }
    assert!(std::env::var_os("CI").is_none(), "CI must install python3-prometheus-client");
    eprintln!("skipped: no python3 with prometheus_client (apt-get install python3-prometheus-client)");
    None
}

/// Parses `exposition` with prometheus_client's own parser; returns `name type value` lines.
fn parse_with_prometheus_client(python: &Path, exposition: &str) -> String {
    const PARSE: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        print(family.name, family.type, sample.name, repr(sample.value))
"#;
    let mut child = Command::new(python)
        .args(["-c", PARSE])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(exposition.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "prometheus_client refused:\n{exposition}\n{}", stderr(&out));
    stdout(&out)
}

fn sample_value(parsed: &str, sample: &str) -> Option<f64> {
    parsed.lines().find_map(|l| {
        let fields: Vec<&str> = l.split(' ').collect();
        (fields[2] == sample).then(|| fields[3].parse().unwrap())
    })
}

#[test]
fn metrics_and_stats_pass_the_prometheus_client_parser() {
    let Some(python) = python_with_prometheus_client() else { return };

    // system.metrics() from a script; num_gc on stderr.
    // num_gc before and after: Lua 5.5 steps its collector for large strings even when it is
    // stopped (luaL_pushresult), so a cycle may end around the call.
    let script = "collectgarbage('stop'); local s = require('system'); local n0 = s.mem_stats().num_gc; \
                  local m = s.metrics(); local n1 = s.mem_stats().num_gc; \
                  io.write(m); io.stderr:write(n0, ' ', n1)";
    let out = run(&["-e", script]);
    assert!(out.status.success(), "{}", stderr(&out));
    let counts: Vec<f64> = stderr(&out).split(' ').map(|n| n.parse().unwrap()).collect();
    let exposition = stdout(&out);
    let parsed = parse_with_prometheus_client(&python, &exposition);
    for family in [
        "lua_heap_alloc_bytes gauge",
        "lua_gc_cycles counter",
        "lua_heap_objects gauge",
        "lua_process_resident_memory_bytes gauge",
    ] {
        assert!(parsed.lines().any(|l| l.starts_with(family)), "{family} in\n{parsed}");
    }
    let cycles = sample_value(&parsed, "lua_gc_cycles_total").unwrap();
    assert!(counts[0] <= cycles && cycles <= counts[1], "{cycles} cycles, num_gc {counts:?}");
    assert!(sample_value(&parsed, "lua_heap_alloc_bytes").is_some_and(|b| b > 0.0));

    // --stats prometheus at exit.
    let (num_gc, err) = run_workload(&["--stats", "prometheus"]);
    let parsed = parse_with_prometheus_client(&python, &err);
    assert_eq!(sample_value(&parsed, "lua_gc_cycles_total"), Some(num_gc as f64));
    assert_eq!(sample_value(&parsed, "lua_gc_percent"), Some(-1.0));
    assert_eq!(sample_value(&parsed, "lua_gc_next_bytes"), None, "no target while stopped");
}

#[test]
fn os_exit_still_writes_the_profile_and_the_stats_and_keeps_its_status() {
    let path = temp_file("exit.json");
    let script = temp_script(
        "exits.lua",
        "local s = require('system') local t = {} for i = 1, 50000 do t[i] = { i } end s.gc() os.exit(3, true)",
    );
    let out = run(&["--gctrace", "--mem-profile", path.to_str().unwrap(), "--stats", "json", script.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    let json_start = err.find("{\n").expect("stats on stderr");
    let stats: serde_json::Value = serde_json::from_str(&err[json_start..]).expect("the stats are JSON");
    let cycles = stats["lua_gc_cycles_total"].as_f64().unwrap() as u64;
    // Every trace line comes before the stats (then the line naming the profile written);
    // closing the state (os.exit's `true`) adds none.
    let traced: Vec<&str> = err[..json_start].lines().filter(|l| !l.contains(": wrote ")).collect();
    assert!(err[..json_start].contains(&format!(": wrote {} (", path.display())), "{err}");
    assert!(traced.iter().all(|l| l.starts_with("gc ")), "{err}");
    assert!(traced.last().unwrap().starts_with(&format!("gc {cycles} ")), "{err}");
    assert!(err[json_start..].lines().all(|l| !l.starts_with("gc ")), "nothing traced after the stats: {err}");
    let profile: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(!profile["samples"].as_array().unwrap().is_empty());
    assert_eq!(profile["cycles"].as_array().unwrap().last().unwrap()["number"], cycles);
}

#[test]
fn metrics_reveal_nothing_the_allowed_functions_would_not() {
    let script = "io.write((require('system').metrics()))";
    let out = run(&["--deny", "mem_stats,num_cpu", "-e", script]);
    let text = stdout(&out);
    assert!(text.contains("\nlua_heap_alloc_bytes "), "allocated() is allowed: {text}{}", stderr(&out));
    assert!(text.contains("\nlua_heap_objects "), "heap_objects() is allowed: {text}");
    assert!(text.contains("\nlua_gc_percent "), "get_gc_percent() is allowed: {text}");
    assert!(text.contains("\nlua_max_procs "), "go_max_procs() is allowed: {text}");
    for hidden in [
        "lua_process_cpus",
        "lua_heap_allocated_bytes_total",
        "lua_gc_cycles_total",
        "lua_process_resident_memory_bytes",
    ] {
        assert!(!text.contains(hidden), "{hidden} is mem_stats()'s or num_cpu()'s: {text}");
    }
    let out = run(&["--deny", "mem_stats,allocated,heap_objects,get_gc_percent,go_max_procs,num_cpu", "-e", script]);
    assert_eq!(stdout(&out), "", "nothing left to reveal: an empty exposition");
}

/// The README's first command: the main example with `--mem-profile memory.svg`.
#[test]
fn the_main_example_charts_the_heap_growing_and_falling_with_cycles_marked() {
    let json = temp_file("example.json");
    let out = run(&["--mem-profile", json.to_str().unwrap(), "examples/memory_monitor.lua"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let profile: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let heap: Vec<u64> =
        profile["samples"].as_array().unwrap().iter().map(|s| s["heap_alloc"].as_u64().unwrap()).collect();
    let peak = heap.iter().copied().enumerate().max_by_key(|&(_, h)| h).unwrap();
    assert!(peak.1 > 10 << 20, "the cache grows the heap past 10 MiB: {peak:?}");
    assert!(heap[..peak.0].windows(2).any(|w| w[1] < w[0]), "the garbage phase saws up and down");
    assert!(*heap.last().unwrap() < 2 << 20, "dropping the cache frees it");
    let cycles = profile["cycles"].as_array().unwrap();
    assert!(cycles.len() >= 10 && cycles.iter().any(|c| c["forced"] == true));

    let svg = temp_file("example.svg");
    let out = run(&["--mem-profile", svg.to_str().unwrap(), "examples/memory_monitor.lua"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&svg).unwrap();
    let document = roxmltree::Document::parse(&text).expect("valid XML");
    assert!(document.descendants().filter(|n| n.has_tag_name("circle")).count() >= 10, "cycles are marked");
}

/// Ctrl-C stops the script with lua.c's `interrupted!` error, and what the runner was asked to
/// write at the end is still written: the `--stats` figures and the `--mem-profile` file.
#[test]
fn an_interrupted_script_still_gets_its_stats_and_profile() {
    use std::io::Read;
    let profile = temp_file("interrupted.csv");
    let mut child = runner()
        .args(["--stats", "json", "--mem-profile", profile.to_str().unwrap(), "-e"])
        .arg(
            "if jit then jit.off() end local t = {} io.stdout:write('started\\n') io.stdout:flush() \
              while true do t[#t % 1000 + 1] = {} end",
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut started = [0u8; 8];
    out.read_exact(&mut started).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let output = child.wait_with_output().unwrap();
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains("interrupted!"), "{err}");
    let (start, end) = (err.find('{').expect("the --stats JSON"), err.rfind('}').unwrap());
    let json: serde_json::Value = serde_json::from_str(&err[start..=end]).expect("JSON on stderr");
    assert!(json["lua_heap_alloc_bytes"].as_f64().unwrap() > 0.0);
    let csv = std::fs::read_to_string(&profile).expect("the profile was written");
    assert!(csv.lines().count() > 2, "{csv}");
}

#[test]
fn with_threads_of_its_own_the_runner_keeps_closed_standard_streams_on_dev_null() {
    // docs/runner.md: the sampler of --mem-profile opens files while the script runs, so a closed
    // stdin is /dev/null there (the end of input); without it, stdin stays closed, as in lua.
    let profile = temp_file("closed-stdin.csv");
    let read = |options: &[&str]| {
        let out = Command::new("bash")
            .args(["-c", "exec \"$0\" \"$@\" <&-", env!("CARGO_BIN_EXE_lua-system")])
            .args(options)
            .args(["-e", "print(io.read('*l'))"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    assert_eq!(read(&["--mem-profile", profile.to_str().unwrap()]), "nil\n");
    assert_eq!(read(&[]), "nil\tBad file descriptor\t9\n");
}
