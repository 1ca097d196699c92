//! `lua-system --listen`: a real Prometheus server (Debian's `prometheus`) scrapes the running
//! script, with the scrape configuration the README shows, and `go tool pprof` reads its live
//! heap profile with the README's command. Everything on loopback, bounded in time, stopped by
//! the test.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{repo_root, run, runner, stderr, stdout, temp_script};

/// Kills a child process when dropped, so a failing test leaves nothing running.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The fenced block of the README that follows the line containing `marker`.
fn readme_block(marker: &str) -> String {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let after = &readme[readme.find(marker).unwrap_or_else(|| panic!("README has {marker:?}"))..];
    let start = after.find("```").unwrap();
    let body = &after[start..];
    let body = &body[body.find('\n').unwrap() + 1..];
    body[..body.find("```").unwrap()].to_owned()
}

/// The address the README's examples listen on, which the tests replace with their own.
const README_ADDRESS: &str = "127.0.0.1:9464";

/// The script: a live set built by a named function, then a steady heap (collector stopped, no
/// allocation) until SIGINT; it prints its own figures, taken before the wait, at the end.
const STEADY: &str = r#"
if jit then jit.off() end -- LuaJIT runs no hook (SIGINT) in compiled loops
local system = require("system")
local function build_records(n)
  local records = {}
  for i = 1, n do records[i] = { id = i, name = "record " .. i } end
  return records
end
kept = build_records(40000)
system.gc()
system.gc()
collectgarbage("stop")
local stats = system.mem_stats()
local spin = function() while true do end end
local steady = system.allocated() -- the heap from here on: nothing below allocates until SIGINT
io.stderr:write("steady\n")
pcall(spin)
print(steady, stats.num_gc)
"#;

/// Starts the runner on `script` with `--listen` on a port the system picks; returns it and
/// the address it serves, read from its stderr, and the rest of its stderr lines.
fn start_runner(
    script: &Path,
    extra: &[&str],
) -> (Running, String, std::io::Lines<BufReader<std::process::ChildStderr>>) {
    let mut child = runner()
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let address = common::served_address(&first);
    (Running(child), address, lines)
}

/// `prometheus`, or `None` (with a message) on a machine without it outside CI.
fn prometheus_binary() -> Option<PathBuf> {
    let found = Command::new("prometheus").arg("--version").output();
    if found.is_ok_and(|o| o.status.success()) {
        return Some(PathBuf::from("prometheus"));
    }
    assert!(std::env::var_os("CI").is_none(), "CI must install prometheus");
    eprintln!("skipped: prometheus is not installed (apt-get install prometheus)");
    None
}

/// An HTTP GET on loopback; the body, if the answer is 200.
fn http_get(address: &str, path: &str) -> Option<String> {
    use std::io::Write;
    let mut connection = std::net::TcpStream::connect(address).ok()?;
    write!(connection, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").ok()?;
    let mut answer = String::new();
    connection.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    // Go answers an HTTP/1.0 request as HTTP/1.0.
    (head.starts_with("HTTP/1.1 200 ") || head.starts_with("HTTP/1.0 200 ")).then(|| body.to_owned())
}

/// Asks Prometheus for the latest value of `query` until it has one (or the deadline passes).
fn query(prometheus: &str, query: &str, deadline: Instant) -> f64 {
    loop {
        let answer = http_get(prometheus, &format!("/api/v1/query?query={query}"));
        if let Some(answer) = answer {
            let json: serde_json::Value = serde_json::from_str(&answer).unwrap();
            if let Some(value) = json["data"]["result"][0]["value"][1].as_str() {
                return value.parse().unwrap();
            }
        }
        assert!(Instant::now() < deadline, "Prometheus has no {query} yet");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn interrupt(child: &Running) {
    let status = Command::new("kill").args(["-INT", &child.0.id().to_string()]).status().unwrap();
    assert!(status.success());
}

#[test]
fn prometheus_scrapes_the_running_script_with_the_readmes_configuration() {
    let Some(prometheus) = prometheus_binary() else { return };
    let script = temp_script("listen_steady.lua", STEADY);
    let (mut runner, address, mut lines) = start_runner(&script, &[]);
    assert_eq!(lines.next().unwrap().unwrap(), "steady");

    let dir = std::env::temp_dir().join(format!("lua-system-prometheus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = readme_block("prometheus.yml").replace(README_ADDRESS, &address);
    assert!(config.contains(&address), "the README's configuration targets {README_ADDRESS}:\n{config}");
    std::fs::write(dir.join("prometheus.yml"), &config).unwrap();
    let web = format!("127.0.0.1:{}", free_port());
    let server = Running(
        Command::new(prometheus)
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    let heap = query(&web, "lua_heap_alloc_bytes", deadline);
    let cycles = query(&web, "lua_gc_cycles_total", deadline);
    assert_eq!(query(&web, "up", deadline), 1.0, "the scrape succeeded");
    assert_eq!(query(&web, "lua_process_cpus", deadline), lua_system::num_cpu() as f64);
    drop(server);

    interrupt(&runner);
    let mut out = String::new();
    runner.0.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let _ = runner.0.wait();
    let seen: Vec<f64> = out.split_whitespace().map(|n| n.parse().unwrap()).collect();
    assert_eq!(seen.len(), 2, "the script's own figures: {out}");
    assert_eq!(heap, seen[0], "Prometheus has the heap the script saw");
    assert_eq!(cycles, seen[1], "Prometheus has the cycles the script counted");
}

/// `go tool pprof`, or `None` (with a message) on a machine without Go outside CI.
fn go_available() -> bool {
    if Command::new("go").arg("version").output().is_ok_and(|o| o.status.success()) {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "CI must install golang-go");
    eprintln!("skipped: `go` is not installed (apt-get install golang-go)");
    false
}

#[test]
fn go_tool_pprof_reads_the_live_heap_profile_with_the_readmes_command() {
    if !go_available() {
        return;
    }
    let script = temp_script("listen_pprof.lua", STEADY);
    let (runner, address, mut lines) = start_runner(&script, &[]);
    assert_eq!(lines.next().unwrap().unwrap(), "steady");
    let command = readme_block("go tool pprof against the running script").replace(README_ADDRESS, &address);
    let words: Vec<&str> = command.split_whitespace().collect();
    assert_eq!(words[..3], ["go", "tool", "pprof"], "{command}");
    let home = std::env::temp_dir().join(format!("lua-system-pprof-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    let output = Command::new(words[0]).args(&words[1..]).env("HOME", &home).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}{}", String::from_utf8_lossy(&output.stderr));
    // The live set (40,000 records, ~4 MiB) is where build_records made it.
    let row = text.lines().find(|l| l.ends_with(" build_records")).unwrap_or_else(|| panic!("{text}"));
    // pprof picks the unit per report (kB, MB, GB): 5.1's records took 12194.98kB.
    let cum = row.split_whitespace().nth(3).unwrap();
    let (number, scale) = [("GB", 1024.0), ("MB", 1.0), ("kB", 1.0 / 1024.0), ("B", 1.0 / (1024.0 * 1024.0))]
        .iter()
        .find_map(|(unit, scale)| cum.strip_suffix(unit).map(|n| (n, *scale)))
        .unwrap_or_else(|| panic!("a size: {row}"));
    let cum_mb = number.parse::<f64>().unwrap_or_else(|_| panic!("a size: {row}")) * scale;
    assert!(cum_mb > 2.0, "build_records holds the live set: {row}");
    interrupt(&runner);
}

#[test]
fn listen_refuses_what_it_cannot_serve_before_the_script_runs() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let ran = ["-e", "print('ran')"];
    for (args, message) in [
        (vec!["--listen", address.as_str(), ran[0], ran[1]], "cannot listen on"),
        (vec!["--listen", "not an address", ran[0], ran[1]], "cannot listen on"),
        (vec!["--listen", ":9464", ran[0], ran[1]], "needs a host: 127.0.0.1:9464"),
        (vec![ran[0], ran[1], "--listen"], "'--listen' needs argument"),
        (vec!["--heap-profile-rate", "1K", ran[0], ran[1]], "needs '--heap-profile FILE' or '--listen'"),
        (vec!["--heap-profile", "h.pb.gz", "--heap-profile-rate", "0", ran[0], ran[1]], "positive number of bytes"),
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
        assert_eq!(stdout(&out), "", "the script did not run");
    }
    // --heap-profile-rate 0 with --listen: no profiler, an empty profile, the figures served.
    let out = run(&["--listen", "127.0.0.1:0", "--heap-profile-rate", "0", "-e", "print('ran')"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "ran\n");
    // A sandboxed script (no os.exit to wrap) is served too, with --stats written at its end.
    let out = run(&["--profile", "sandbox", "--listen", "127.0.0.1:0", "--stats", "prometheus", "-e", "print('ran')"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "ran\n");
    assert!(stderr(&out).contains("lua_heap_alloc_bytes"), "{}", stderr(&out));
}

#[test]
fn the_server_stops_with_the_script_and_with_os_exit() {
    for ending in ["", "os.exit(3)"] {
        let script =
            temp_script(&format!("listen_end{}.lua", ending.len()), &format!("io.stderr:write('up\\n') {ending}"));
        let (mut runner, address, mut lines) = start_runner(&script, &[]);
        assert_eq!(lines.next().unwrap().unwrap(), "up");
        let status = runner.0.wait().unwrap();
        assert_eq!(status.code(), Some(if ending.is_empty() { 0 } else { 3 }));
        assert!(std::net::TcpStream::connect(&address).is_err(), "nothing listens after the runner exits");
    }
}
