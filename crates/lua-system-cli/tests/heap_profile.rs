//! `--heap-profile` through the runner, read back by `go tool pprof` (Debian's golang-go; CI
//! installs it): accuracy at Go's default rate against a workload whose truth is known, the
//! formats agreeing with each other, profiles written on every way out.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn out_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lua-system-heap-profile-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `go tool pprof -top` of `profile` for `sample_index`: (function -> cum%), and the total.
fn pprof_top(profile: &Path, sample_index: &str) -> Option<(Vec<(String, f64)>, String)> {
    let output = match Command::new("go")
        .args(["tool", "pprof", "-top", &format!("-sample_index={sample_index}"), profile.to_str().unwrap()])
        .env("HOME", std::env::temp_dir())
        .output()
    {
        Ok(output) => output,
        Err(_) if std::env::var_os("CI").is_none() => {
            eprintln!("skipped: `go` is not installed (CI installs golang-go)");
            return None;
        }
        Err(error) => panic!("go tool pprof: {error}"),
    };
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{text}{}", String::from_utf8_lossy(&output.stderr));
    let rows = text
        .lines()
        .skip_while(|line| !line.trim_start().starts_with("flat"))
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let cum = fields.get(4)?.trim_end_matches('%').parse::<f64>().ok()?;
            Some((fields[5..].join(" "), cum))
        })
        .collect();
    Some((rows, text))
}

fn cum(rows: &[(String, f64)], function: &str) -> f64 {
    rows.iter().find(|(name, _)| name == function).map_or(0.0, |(_, cum)| *cum)
}

/// One function allocates three times the bytes of another, both with `string.rep` and table
/// constructors (over 400 MB in all): at Go's default rate, `alloc_space` attributes 75% and
/// 25% (within 5 points). Then the script keeps one structure (620 MB) and drops another:
/// `inuse_space` attributes the kept one within 10% of its true size (`allocated()` deltas),
/// the dropped one nothing. Sampling error: the 400 MB give about 800 samples (the 25% share
/// within 1.5 points, one standard deviation); the 620 MB about 1,200 (2.9%). Three seeds, so
/// no lucky draw passes it (one on the other Lua versions).
#[test]
fn the_default_rate_attributes_what_each_function_allocates_and_keeps() {
    let dir = out_dir("accuracy");
    let script = temp_script(
        "accuracy.lua",
        r#"
local system = require("system")
local function small(n)
  for i = 1, n do local s = string.rep("x", 2000) .. i; local t = { s, i, i, i, i, i, i, i } end
end
local function big(n)
  for i = 1, n do local s = string.rep("x", 2000) .. i; local t = { s, i, i, i, i, i, i, i } end
end
local function keep(n)
  local t = {}
  for i = 1, n do t[i] = { string.rep("k", 3000) .. i, i } end
  return t
end
local function drop(n)
  local t = {}
  for i = 1, n do t[i] = { string.rep("d", 3000) .. i, i } end
  return t
end
small(17000)
big(51000)
collectgarbage() collectgarbage()
local before = system.allocated()
KEPT = keep(200000)
collectgarbage() collectgarbage()
local kept = system.allocated() - before
local dropped = drop(40000)
dropped = nil
collectgarbage() collectgarbage()
print(kept)
"#,
    );
    if cfg!(feature = "lua51") {
        // Lua 5.1's string.rep copies one character at a time through a buffer: 600 MB take ten
        // minutes in a debug build. Lua 5.1's attribution is tested at rate 1 (the library's
        // tests/heap_profiler.rs), where it is exact.
        eprintln!("skipped on Lua 5.1 (too slow in a debug build)");
        return;
    }
    // Three seeds on the default Lua (5.4); one on the others, which CI also runs.
    let seeds: &[&str] = if cfg!(feature = "lua54") { &["1", "2", "3"] } else { &["1"] };
    for &seed in seeds {
        let profile = dir.join(format!("accuracy-{seed}.pb.gz"));
        let out = runner()
            .env("LUA_SYSTEM_HEAP_PROFILE_SEED", seed)
            .args(["--heap-profile", profile.to_str().unwrap(), script.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let kept: f64 = stdout(&out).trim().parse().unwrap();
        let Some((alloc, text)) = pprof_top(&profile, "alloc_space") else { return };
        let (small, big) = (cum(&alloc, "small"), cum(&alloc, "big"));
        // What else the script allocates (keep, drop) is left out of the ratio.
        let share = |part: f64| 100.0 * part / (small + big);
        assert!((share(big) - 75.0).abs() <= 5.0, "seed {seed}: big {:.1}%\n{text}", share(big));
        assert!((share(small) - 25.0).abs() <= 5.0, "seed {seed}: small {:.1}%\n{text}", share(small));
        let (inuse, text) = pprof_top(&profile, "inuse_space").unwrap();
        let total = total_bytes(&text);
        let attributed = cum(&inuse, "keep") / 100.0 * total;
        assert!(
            (attributed - kept).abs() <= 0.10 * kept,
            "seed {seed}: keep {attributed:.0} bytes, truly {kept}\n{text}"
        );
        assert_eq!(cum(&inuse, "drop"), 0.0, "seed {seed}: drop keeps nothing\n{text}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The total of `go tool pprof -top`'s header ("Total samples = 1.23MB" or "of 12345B total"),
/// in bytes.
fn total_bytes(top: &str) -> f64 {
    let line = top.lines().find(|line| line.contains("Total samples =")).unwrap();
    let value = line.rsplit("= ").next().unwrap().trim();
    let (number, unit) = value.split_at(value.find(|c: char| c.is_ascii_alphabetic()).unwrap());
    let scale = match unit {
        "B" => 1.0,
        "kB" => 1024.0,
        "MB" => 1024.0 * 1024.0,
        "GB" => 1024.0 * 1024.0 * 1024.0,
        other => panic!("unit {other}"),
    };
    number.parse::<f64>().unwrap() * scale
}

/// The profile is written on every way out: the end of the script, an error, `os.exit`; the
/// folded stacks sum to the pprof total; a bad file name is refused before anything runs.
#[test]
fn the_profile_is_written_on_every_way_out() {
    let dir = out_dir("ways-out");
    let body = "local function grow() local t = {} for i = 1, 20000 do t[i] = string.rep('g', 100) .. i end return t end\nKEEP = grow()\n";
    for (name, tail, code) in [("end.lua", "", 0), ("error.lua", "error('stop')\n", 1), ("exit.lua", "os.exit(7)\n", 7)]
    {
        let script = temp_script(name, &format!("{body}{tail}"));
        for extension in ["pb.gz", "folded", "svg"] {
            let path = dir.join(format!("{name}.{extension}"));
            let out =
                run(&["--heap-profile", path.to_str().unwrap(), "--heap-profile-rate", "1", script.to_str().unwrap()]);
            assert_eq!(out.status.code(), Some(code), "{name}: {}", stderr(&out));
            assert!(path.exists(), "{name}: {extension} written");
        }
        let folded = std::fs::read_to_string(dir.join(format!("{name}.folded"))).unwrap();
        assert!(folded.contains(";grow ("), "{folded}");
        let svg = std::fs::read_to_string(dir.join(format!("{name}.svg"))).unwrap();
        assert!(svg.starts_with("<?xml") && svg.contains("grow"), "{name}");
    }
    // One profile in two formats (written by the script, one right after the other): the
    // folded stacks sum to pprof's total. (Two runs of a script need not end with the same
    // garbage: Lua 5.2 seeds its hashes by address.)
    let script = temp_script(
        "both.lua",
        &format!(
            "{body}local system = require('system')\n\
             assert(system.write_heap_profile('{dir}/both.folded'))\n\
             assert(system.write_heap_profile('{dir}/both.pb.gz'))\n",
            dir = dir.display()
        ),
    );
    let end = dir.join("end.folded");
    let out = run(&["--heap-profile", end.to_str().unwrap(), "--heap-profile-rate", "1", script.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let folded = std::fs::read_to_string(dir.join("both.folded")).unwrap();
    let folded_total: u64 = folded.lines().map(|line| line.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap()).sum();
    if let Some((_, text)) = pprof_top(&dir.join("both.pb.gz"), "inuse_space") {
        let total = total_bytes(&text);
        // pprof rounds its header to 3 significant digits.
        assert!((total - folded_total as f64).abs() <= total * 0.01, "{total} vs {folded_total}");
    }
    let out = run(&["--heap-profile", "/tmp/profile.txt", "-e", "print('ran')"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("must end in .pb.gz, .pprof, .folded or .svg") && stdout(&out).is_empty());
    let out = run(&["--heap-profile-rate", "1", "-e", "print('ran')"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("'--heap-profile-rate' needs '--heap-profile FILE' or '--listen'"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The README's three commands: the example profiled into `.pb.gz` and read by `go tool pprof
/// -top` (the records `load_record` keeps are most of what is in use), then as a flamegraph.
#[test]
fn the_readme_commands_profile_the_example() {
    let dir = out_dir("readme");
    let pb = dir.join("heap.pb.gz");
    let out = run(&["--heap-profile", pb.to_str().unwrap(), "examples/where_memory_goes.lua"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("20000 records cached"));
    // The runner says where the profile went, what it holds and how to read it.
    let said = stderr(&out);
    assert!(said.contains(&format!(": wrote {} (", pb.display())), "{said}");
    assert!(said.contains(&format!("; read it with: go tool pprof -top {})", pb.display())), "{said}");
    if let Some((rows, text)) = pprof_top(&pb, "inuse_space") {
        assert!(cum(&rows, "load_record") > 70.0, "{text}");
        assert!(cum(&rows, "parse_line") < 5.0, "garbage is not in use\n{text}");
    }
    let svg = dir.join("heap.svg");
    let out = run(&["--heap-profile", svg.to_str().unwrap(), "examples/where_memory_goes.lua"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("load_record"));
    // The flamegraph's title gives the total in use (not only its tooltips), the figure the
    // runner's message gives.
    let said = stderr(&out);
    let total = said
        .split_once(&format!(": wrote {} (a flamegraph of ", svg.display()))
        .and_then(|(_, rest)| rest.split_once(" in use, "))
        .unwrap_or_else(|| panic!("{said}"))
        .0;
    assert!(total.ends_with(" MiB"), "{total}");
    assert!(text.contains(&format!(">Lua heap: {total} in use<")), "{total}");
    std::fs::remove_dir_all(&dir).unwrap();
}
