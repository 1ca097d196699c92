//! The hostile corpus (`tests/hostile/`, its README says what each outcome means): every script
//! under every profile, with a memory limit and a CPU budget, ends by itself with the outcome
//! its first line declares, and the process's peak resident memory stays bounded. The scripts
//! expected to survive also run under each of the runner's monitoring options, which put
//! functions of their own where scripts reach them.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The bound on a hostile script's peak resident memory under `--memory-limit 16M`
/// (SECURITY.md, "Memory limit": the limit bounds the Lua heap, not the process).
const RSS_BOUND_KIB: i64 = (16 + 48) * 1024;

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/hostile");
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "lua"))
        .collect();
    scripts.sort();
    scripts
}

struct Run {
    status: Option<i32>,
    stdout: String,
    stderr: String,
    peak_rss_kib: i64,
    wall: Duration,
}

/// The runner's monitoring options, one set per run (the first: none). Each puts functions of
/// its own in front of Lua's: `collectgarbage` (`--gctrace`, `--mem-profile`), `os.exit`
/// (`--stats`, `--mem-profile`, `--heap-profile`, `--listen`), the coroutine functions (the heap
/// profiler's, `--heap-profile`, `--listen`).
fn monitors(outputs: &Path) -> Vec<Vec<String>> {
    let path = |name: &str| outputs.join(name).to_string_lossy().into_owned();
    vec![
        vec![],
        vec!["--gctrace".into()],
        vec!["--stats".into(), "json".into()],
        vec!["--mem-profile".into(), path("profile.json")],
        vec!["--heap-profile".into(), path("heap.folded")],
        vec!["--listen".into(), "127.0.0.1:0".into()],
    ]
}

/// Runs the runner on `script` with `options` and waits for it, reading its peak RSS from
/// `wait4`.
#[allow(clippy::zombie_processes)] // reaped by `wait4`, not `Child::wait`
fn run(profile: &str, options: &[String], script: &Path) -> Run {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lua-system"))
        .args(["--profile", profile, "--memory-limit", "16M", "--cpu-limit", "1"])
        .args(options)
        .arg(script)
        .arg(profile)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let read = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = read(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = read(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    // Reaped here rather than by `Child::wait`, for its resource usage.
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; `wait4` fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child, which nothing else waits for.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4");
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    Run {
        status: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).chars().take(2000).collect(),
        peak_rss_kib: usage.ru_maxrss,
        wall: started.elapsed(),
    }
}

#[test]
fn every_hostile_script_is_contained_under_every_profile() {
    let outputs = std::env::temp_dir().join(format!("lua-system-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&outputs).unwrap();
    let monitors = monitors(&outputs);
    let mut failures = Vec::new();
    for script in corpus() {
        let text = std::fs::read_to_string(&script).unwrap();
        let expect = text.lines().next().and_then(|l| l.strip_prefix("-- expect: ")).expect("an expect line").trim();
        let name = script.file_name().unwrap().to_string_lossy().into_owned();
        // Bombs and hogs take their limits' time: once each; the rest under every option too.
        let options = if expect == "survives" { &monitors[..] } else { &monitors[..1] };
        for profile in ["full", "observe", "sandbox"] {
            for options in options {
                let run = run(profile, options, &script);
                let how =
                    std::iter::once(profile.to_owned()).chain(options.iter().cloned()).collect::<Vec<_>>().join(" ");
                let case = format!(
                    "{name} ({how}): status {:?}, {} KiB, {:?}\n{}{}",
                    run.status, run.peak_rss_kib, run.wall, run.stdout, run.stderr
                );
                println!("{name} ({how}): status {:?}, peak RSS {} KiB, {:?}", run.status, run.peak_rss_kib, run.wall);
                let outcome_ok = match expect {
                    // A slow build (debug, 5.1) may reach the CPU budget first: contained as well.
                    "memory" => {
                        run.status == Some(1)
                            && (run.stderr.contains("not enough memory") || run.stderr.contains("CPU limit exceeded"))
                    }
                    "cpu" => run.status == Some(1) && run.stderr.contains("CPU limit exceeded"),
                    "limit" => {
                        // LuaJIT's message handler may itself run out of memory at the limit (the
                        // reserve covers PUC Lua's error paths): the script is stopped all the same.
                        let luajit_at_limit =
                            cfg!(feature = "luajit") && run.stderr.contains("error in error handling");
                        run.status == Some(1)
                            && (run.stderr.contains("CPU limit exceeded")
                                || run.stderr.contains("not enough memory")
                                || luajit_at_limit)
                    }
                    "error" => run.status == Some(1) && !run.stderr.is_empty(),
                    "survives" => {
                        let word = if profile == "sandbox" && name == "escapes.lua" { "contained" } else { "survived" };
                        run.status == Some(0) && run.stdout.contains(word)
                    }
                    other => panic!("{name}: unknown expectation {other}"),
                };
                if !outcome_ok {
                    failures.push(format!("expected {expect}: {case}"));
                }
                if run.peak_rss_kib > RSS_BOUND_KIB {
                    failures.push(format!("peak RSS over {RSS_BOUND_KIB} KiB: {case}"));
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&outputs);
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}
