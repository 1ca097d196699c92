//! The heap profile writers, through the public API: pprof files read back by `go tool pprof`,
//! folded stacks, the flamegraph SVG, Go's scaling, and `write_to_path`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use lua_system::heap_profile::{Frame, HeapProfile, Sample, View};

fn frame(function: &str, file: &str, line: i64) -> Frame {
    Frame { function: function.into(), file: file.into(), line }
}

fn sample(stack: Vec<Frame>, object_type: &'static str, alloc: (u64, u64), inuse: (u64, u64)) -> Sample {
    Sample {
        stack,
        object_type,
        alloc_objects: alloc.0,
        alloc_bytes: alloc.1,
        inuse_objects: inuse.0,
        inuse_bytes: inuse.1,
        labels: vec![],
    }
}

/// Several stacks sharing frames (`main chunk`, `build`), two samples on one stack (two object
/// types), a recursive function, a C function and an anonymous one.
fn profile(rate: u64) -> HeapProfile {
    let main = |line| frame("main chunk", "app.lua", line);
    let build = |line| frame("build", "app.lua", line);
    let walk = |line| frame("walk", "app.lua", line);
    HeapProfile {
        rate,
        samples: vec![
            sample(vec![frame("string.rep", "[C]", 0), build(10), main(30)], "string", (4, 4_000_000), (2, 2_000_000)),
            sample(vec![frame("function <app.lua:40>", "app.lua", 41), main(31)], "table", (10, 560), (3, 168)),
            sample(vec![build(12), main(30)], "table", (7, 392), (7, 392)),
            sample(vec![build(12), main(30)], "string", (5, 5000), (0, 0)),
            sample(vec![walk(50), walk(52), main(33)], "table", (20, 1120), (1, 56)),
        ],
        time_nanos: 1_700_000_000_000_000_000,
        duration_nanos: 5_000_000_000,
        comments: vec!["made by hand".into()],
    }
}

const RATES: [u64; 2] = [1, 512 * 1024];

/// A fresh directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lua-system-heap-profile-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn names_in(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir).unwrap().map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

#[test]
fn scaling_follows_gos_formula_per_pair() {
    let one = |rate, alloc, inuse| {
        let profile = HeapProfile { rate, samples: vec![sample(vec![], "string", alloc, inuse)], ..profile(rate) };
        profile.scaled(&profile.samples[0])
    };
    // rate 524288, one 1000-byte object: scale 1/(1 - exp(-1000/524288)) = 524.788...; the
    // in-use pair (3 objects of 100 bytes) has its own scale, 1/(1 - exp(-100/524288)).
    let scaled = one(524_288, (1, 1000), (3, 300));
    let scale = 1.0 / (1.0 - (-1000.0f64 / 524_288.0).exp());
    assert_eq!((scaled.alloc_objects, scaled.alloc_bytes), (scale as i64, (1000.0 * scale) as i64));
    assert_eq!((scaled.alloc_objects, scaled.alloc_bytes), (524, 524_788));
    assert_eq!((scaled.inuse_objects, scaled.inuse_bytes), (15_730, 1_573_014));
    // Every allocation recorded: unchanged; an empty pair stays empty.
    let unscaled = one(1, (1, 1000), (3, 300));
    assert_eq!((unscaled.alloc_objects, unscaled.alloc_bytes, unscaled.inuse_objects), (1, 1000, 3));
    let freed = one(524_288, (2, 64), (0, 0));
    assert_eq!((freed.inuse_objects, freed.inuse_bytes), (0, 0));
    assert!(freed.alloc_bytes > 64);
    assert_eq!(profile(1).total(View::InuseSpace), 2_000_000 + 168 + 392 + 56);
    assert_eq!(profile(1).total(View::AllocObjects), 4 + 10 + 7 + 5 + 20);
}

/// Whether `go` is installed: CI must have it; elsewhere its absence skips (with a note).
fn have_go() -> bool {
    let found = Command::new("go").arg("version").output().is_ok();
    assert!(found || std::env::var_os("CI").is_none(), "`go` is not on PATH: CI must have it to check pprof files");
    if !found {
        eprintln!("skipped: `go` is not on PATH, `go tool pprof` cannot read the profile");
    }
    found
}

/// `go tool pprof`'s answer.
fn go_pprof(args: &[&str], file: &Path) -> String {
    let output = Command::new("go").args(["tool", "pprof"]).args(args).arg(file).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "go tool pprof {args:?} failed: {stderr}");
    String::from_utf8(output.stdout).unwrap()
}

/// The rows of `go tool pprof -top -unit=B`: function name to (flat, cum).
fn top_rows(top: &str) -> BTreeMap<String, (i64, i64)> {
    let value = |field: &str| field.trim_end_matches('B').parse::<i64>().unwrap();
    let mut rows = BTreeMap::new();
    for line in top.lines().skip_while(|line| !line.trim_start().starts_with("flat")).skip(1) {
        let mut rest = line.trim_start();
        let mut fields = Vec::new();
        for _ in 0..5 {
            let (field, tail) = rest.split_once(' ').unwrap();
            fields.push(field);
            rest = tail.trim_start();
        }
        let row: &mut (i64, i64) = rows.entry(rest.to_owned()).or_default();
        row.0 += value(fields[0]);
        row.1 += value(fields[3]);
    }
    rows
}

/// What pprof should show by function: flat from the innermost frame, cum once per sample.
fn expected_rows(profile: &HeapProfile, view: View) -> BTreeMap<String, (i64, i64)> {
    let mut rows = BTreeMap::<String, (i64, i64)>::new();
    for sample in &profile.samples {
        let value = profile.scaled(sample).get(view);
        rows.entry(sample.stack[0].function.clone()).or_default().0 += value;
        for function in sample.stack.iter().map(|frame| &frame.function).collect::<BTreeSet<_>>() {
            rows.entry(function.clone()).or_default().1 += value;
        }
    }
    rows.retain(|_, &mut (_, cum)| cum != 0);
    rows
}

#[test]
fn go_tool_pprof_reads_the_scaled_figures_by_function() {
    if !have_go() {
        return;
    }
    let dir = scratch("pprof");
    for rate in RATES {
        let profile = profile(rate);
        let path = dir.join(format!("rate{rate}.pb.gz"));
        profile.write_to_path(&path).unwrap();
        for view in View::ALL {
            let sample_index = format!("-sample_index={}", view.name());
            let top = go_pprof(&["-top", "-nodefraction=0", "-unit=B", &sample_index], &path);
            assert!(top.contains(&format!("Type: {}", view.name())), "{top}");
            let total = profile.total(view);
            assert!(top.contains(&format!("Total samples = {total}B")), "rate {rate}, {view:?}: {top}");
            assert_eq!(top_rows(&top), expected_rows(&profile, view), "rate {rate}, {view:?}: {top}");
        }
        let top = go_pprof(&["-top"], &path);
        assert!(top.contains("Type: inuse_space"), "inuse_space is the default: {top}");
        let raw = go_pprof(&["-raw"], &path);
        assert!(raw.contains(&format!("Period: {rate}")) && raw.contains("PeriodType: space bytes"), "{raw}");
        assert!(raw.contains("Duration: 5s"), "{raw}");
        for label in ["object:[string]", "object:[table]", "bytes:[1000000]", "bytes:[56]"] {
            assert!(raw.contains(label), "no label {label}: {raw}");
        }
        assert!(raw.contains("string.rep [C]:0") && raw.contains("walk app.lua:52"), "{raw}");
    }
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn pprof_file_is_gzipped() {
    let mut out = Vec::new();
    profile(1).write_pprof(&mut out).unwrap();
    assert_eq!(out[..2], [0x1f, 0x8b]);
}

fn folded(profile: &HeapProfile, view: View) -> String {
    let mut out = Vec::new();
    profile.write_folded(view, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn folded_lines_sum_to_the_total_with_the_outermost_frame_first() {
    for rate in RATES {
        let profile = profile(rate);
        for view in View::ALL {
            let text = folded(&profile, view);
            let lines: Vec<&str> = text.lines().collect();
            let mut sorted = lines.clone();
            sorted.sort();
            assert_eq!(lines, sorted);
            let mut sum = 0;
            for line in &lines {
                let (stack, value) = line.rsplit_once(' ').unwrap();
                let value: i64 = value.parse().unwrap();
                assert!(value > 0, "{line}");
                sum += value;
                assert!(stack.starts_with("main chunk (app.lua:3"), "{line}");
            }
            assert_eq!(sum, profile.total(view), "rate {rate}, {view:?}:\n{text}");
        }
    }
    // Two samples on one stack make one line; in-use, the freed string's stack is left out.
    let inuse = folded(&profile(1), View::InuseSpace);
    assert_eq!(
        inuse,
        "main chunk (app.lua:30);build (app.lua:10);string.rep ([C]) 2000000\n\
         main chunk (app.lua:30);build (app.lua:12) 392\n\
         main chunk (app.lua:31);function <app.lua:40> (app.lua:41) 168\n\
         main chunk (app.lua:33);walk (app.lua:52);walk (app.lua:50) 56\n"
    );
    assert!(folded(&profile(1), View::AllocSpace).contains("main chunk (app.lua:30);build (app.lua:12) 5392\n"));
}

#[test]
fn folded_frames_hold_no_separator_nor_line_break() {
    let odd = frame("odd;name\nhere", "we;ird.lua", 3);
    let profile = HeapProfile {
        samples: vec![sample(vec![odd, frame("main chunk", "we;ird.lua", 1)], "table", (1, 40), (1, 40))],
        ..profile(1)
    };
    let text = folded(&profile, View::InuseSpace);
    assert_eq!(text.lines().count(), 1);
    assert_eq!(text.matches(';').count(), 1, "{text}");
}

fn svg(profile: &HeapProfile, view: View) -> String {
    let mut out = Vec::new();
    profile.write_svg(view, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn svg_is_xml_naming_the_view_and_every_frame() {
    let frames =
        ["main chunk (app.lua:30)", "build (app.lua:10)", "string.rep ([C])", "function <app.lua:40> (app.lua:41)"];
    // Counted in objects, the four sampled strings of `string.rep` are too thin to be drawn.
    // The title gives the view's total (the estimate of the heap), the subtitle how it was made.
    let sampled = profile(512 * 1024);
    let in_use = sampled.total(View::InuseSpace);
    let allocated = sampled.total(View::AllocObjects);
    assert!(in_use > 1 << 20 && in_use < 1 << 30, "{in_use}");
    let drawn = [
        (View::InuseSpace, format!("Lua heap: {:.2} MiB in use", in_use as f64 / (1 << 20) as f64), &frames[..]),
        (View::AllocObjects, format!("Lua heap: {allocated} objects allocated since profiling started"), &frames[3..]),
    ];
    for (view, title, frames) in drawn {
        let text = svg(&sampled, view);
        let options = roxmltree::ParsingOptions { allow_dtd: true, ..Default::default() };
        let document = roxmltree::Document::parse_with_options(&text, options).unwrap();
        let texts: Vec<&str> = document.descendants().filter_map(|node| node.text()).collect();
        assert!(texts.contains(&title.as_str()), "{title}: {texts:?}");
        let subtitle = "estimated from sampled allocations, one per 512.0 KiB allocated on average";
        assert!(texts.contains(&subtitle), "{texts:?}");
        // A frame's tooltip: `name (value unit, share%)`.
        let tooltips: Vec<&str> =
            document.descendants().filter(|node| node.has_tag_name("title")).filter_map(|node| node.text()).collect();
        for frame in frames {
            assert!(tooltips.iter().any(|tip| tip.starts_with(frame)), "no frame {frame}: {tooltips:?}");
        }
        let all = tooltips.iter().find_map(|tip| tip.strip_prefix("all (")).unwrap();
        let (value, unit) = all.split_once(' ').unwrap();
        assert_eq!(value.replace(',', "").parse::<i64>().unwrap(), profile(512 * 1024).total(view));
        assert!(unit.starts_with(view.unit()), "{all}");
    }
}

#[test]
fn svg_of_an_empty_view_fails_writing_nothing() {
    let freed =
        HeapProfile { samples: vec![sample(vec![frame("f", "a.lua", 1)], "table", (1, 40), (0, 0))], ..profile(1) };
    let mut out = Vec::new();
    let error = freed.write_svg(View::InuseSpace, &mut out).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidData);
    assert!(error.to_string().contains("nothing to draw"), "{error}");
    assert!(out.is_empty());
    assert!(!svg(&freed, View::AllocSpace).is_empty());
}

#[test]
fn write_to_path_picks_the_format_from_the_extension() {
    let dir = scratch("paths");
    let profile = profile(512 * 1024);
    for name in ["heap.pb.gz", "heap.pprof", "heap.folded", "heap.svg"] {
        profile.write_to_path(&dir.join(name)).unwrap();
    }
    assert_eq!(names_in(&dir), ["heap.folded", "heap.pb.gz", "heap.pprof", "heap.svg"].map(String::from).into());
    assert_eq!(fs::read(dir.join("heap.pb.gz")).unwrap()[..2], [0x1f, 0x8b]);
    assert_eq!(fs::read(dir.join("heap.pprof")).unwrap()[..2], [0x1f, 0x8b]);
    assert_eq!(fs::read_to_string(dir.join("heap.folded")).unwrap(), folded(&profile, View::InuseSpace));
    assert_eq!(fs::read_to_string(dir.join("heap.svg")).unwrap(), svg(&profile, View::InuseSpace));
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn write_to_path_refuses_an_unknown_extension_creating_nothing() {
    let dir = scratch("unknown");
    for name in ["heap.txt", "heap", "heap.gz"] {
        let error = profile(1).write_to_path(&dir.join(name)).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidInput);
        let message = error.to_string();
        for accepted in [".pb.gz", ".pprof", ".folded", ".svg", name] {
            assert!(message.contains(accepted), "{message}");
        }
    }
    assert!(names_in(&dir).is_empty());
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_failed_write_keeps_the_previous_file_and_leaves_no_temporary() {
    let dir = scratch("failed");
    let path = dir.join("heap.svg");
    profile(1).write_to_path(&path).unwrap();
    let before = fs::read(&path).unwrap();
    let empty = HeapProfile { samples: vec![], ..profile(1) };
    assert_eq!(empty.write_to_path(&path).unwrap_err().kind(), ErrorKind::InvalidData);
    assert_eq!(fs::read(&path).unwrap(), before);
    assert_eq!(names_in(&dir), BTreeSet::from(["heap.svg".to_owned()]));
    fs::remove_dir_all(dir).unwrap();
}
