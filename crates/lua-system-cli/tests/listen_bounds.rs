//! `--listen` against clients that try to lock every scraper out (issue 23): a thousand
//! sockets that send nothing, a hundred that drip a request head a byte a second, and eight
//! greedy kept-alive clients, while a sandboxed script runs; and eight heap profiles asked at
//! once. Real clients over loopback; every loop bounded.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStdout, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{runner, temp_script};

/// The attack the issue measured.
const IDLE: usize = 1000;
const DRIP: usize = 100;
const GREEDY: usize = 8;

/// What the server may keep open at most (SECURITY.md): so many connections, and a few
/// descriptors of the runner's own.
const MAX_CONNECTIONS: usize = 1024;
const OWN_DESCRIPTORS: usize = 16;

/// Kills a child process when dropped, so a failing test leaves nothing running.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the runner with `args` and `--listen` on a free port; the address it serves and its
/// stdout.
fn start(args: &[&str]) -> (Running, String, BufReader<ChildStdout>) {
    let mut child = runner()
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stderr.take().unwrap()).read_line(&mut first).unwrap();
    let address = common::served_address(&first);
    let stdout = BufReader::new(child.stdout.take().unwrap());
    (Running(child), address, stdout)
}

fn line(stdout: &mut BufReader<ChildStdout>) -> String {
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    line
}

/// Raises this process's descriptor limit (which the runner inherits) towards `wanted`, as far
/// as the hard limit allows; the limit now.
fn raise_descriptor_limit(wanted: u64) -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    if current < wanted {
        let raised = limit.maximum.map_or(wanted, |hard| hard.min(wanted));
        let _ = setrlimit(Resource::Nofile, rustix::process::Rlimit { current: Some(raised), ..limit });
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// A figure of `/proc/PID/status` (`Threads`, `VmHWM` in KiB...).
fn status(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = text.lines().find(|l| l.starts_with(&format!("{field}:"))).unwrap_or_else(|| panic!("{field}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

fn connect(address: &str) -> Option<TcpStream> {
    TcpStream::connect_timeout(&address.parse().unwrap(), Duration::from_secs(2)).ok()
}

/// Reads one answer (by its Content-Length); its status.
fn read_answer(reader: &mut impl BufRead) -> std::io::Result<u16> {
    let mut status = String::new();
    reader.read_line(&mut status)?;
    let code = status.split(' ').nth(1).and_then(|code| code.parse().ok());
    let code = code.ok_or_else(|| std::io::Error::other(format!("no answer: {status:?}")))?;
    let mut length = 0;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if header == "\r\n" {
            break;
        }
        if let Some(value) = header.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().unwrap();
        }
    }
    reader.read_exact(&mut vec![0; length])?;
    Ok(code)
}

/// Sleeps `duration` in short steps, returning early once `stop` is set.
fn nap(duration: Duration, stop: &AtomicBool) {
    let until = Instant::now() + duration;
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20).min(until.saturating_duration_since(Instant::now())));
    }
}

/// The attackers, each on threads of the test, reconnecting whenever the server closes them.
struct Attack {
    stop: Arc<AtomicBool>,
    idle_open: Arc<AtomicUsize>,
    greedy_answers: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<()>>,
}

impl Attack {
    fn start(address: &str, idle: usize) -> Attack {
        let stop = Arc::new(AtomicBool::new(false));
        let (idle_open, greedy_answers) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut threads = Vec::new();
        // Sockets that send nothing: opened again as soon as the server closes them.
        threads.push({
            let (address, stop, open) = (address.to_owned(), Arc::clone(&stop), Arc::clone(&idle_open));
            std::thread::spawn(move || {
                let mut sockets: Vec<Option<TcpStream>> = (0..idle).map(|_| None).collect();
                while !stop.load(Ordering::Relaxed) {
                    for socket in sockets.iter_mut() {
                        let closed = socket.as_mut().is_none_or(
                            |s| !matches!(s.read(&mut [0]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
                        );
                        if closed && !stop.load(Ordering::Relaxed) {
                            *socket = connect(&address);
                            socket.as_ref().map(|s| s.set_nonblocking(true));
                        }
                    }
                    open.store(sockets.iter().filter(|s| s.is_some()).count(), Ordering::Relaxed);
                    nap(Duration::from_millis(100), &stop);
                }
            })
        });
        // Sockets that drip a request head that never ends, a byte a second.
        threads.push({
            let (address, stop) = (address.to_owned(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut sockets: Vec<Option<TcpStream>> = (0..DRIP).map(|_| connect(&address)).collect();
                let head = b"GET /metrics HTTP/1.1\r\nX-Drip: ";
                for second in 0usize.. {
                    nap(Duration::from_secs(1), &stop);
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    for socket in sockets.iter_mut() {
                        let byte = head.get(second).copied().unwrap_or(b'a');
                        if socket.as_mut().is_none_or(|s| s.write_all(&[byte]).is_err()) {
                            *socket = connect(&address);
                        }
                    }
                }
            })
        });
        // Greedy kept-alive clients: a first request, then each answer followed by the first
        // byte of the next request, the rest sent a while later (one of them waits close to the
        // server's head deadline).
        for client in 0..GREEDY {
            let (address, stop, answers) = (address.to_owned(), Arc::clone(&stop), Arc::clone(&greedy_answers));
            threads.push(std::thread::spawn(move || {
                let request = b"GET /metrics HTTP/1.1\r\nHost: greedy\r\n\r\n";
                let pause = Duration::from_millis(if client == 0 { 4500 } else { 1000 + 100 * client as u64 });
                while !stop.load(Ordering::Relaxed) {
                    let Some(stream) = connect(&address) else { continue };
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                    let (mut writer, mut reader) = (stream.try_clone().unwrap(), BufReader::new(stream));
                    if writer.write_all(request).is_err() || read_answer(&mut reader).is_err() {
                        continue;
                    }
                    answers.fetch_add(1, Ordering::Relaxed);
                    while !stop.load(Ordering::Relaxed) {
                        if writer.write_all(&request[..1]).is_err() {
                            break;
                        }
                        nap(pause, &stop);
                        if writer.write_all(&request[1..]).is_err() || read_answer(&mut reader).is_err() {
                            break;
                        }
                        answers.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        Attack { stop, idle_open, greedy_answers, threads }
    }
}

impl Drop for Attack {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A fresh client's GET /metrics: how long the answer took, or why there was none.
fn probe(address: &str) -> Result<Duration, String> {
    let started = Instant::now();
    let mut stream = connect(address).ok_or("cannot connect")?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).map_err(|e| format!("{e} after {:?}", started.elapsed()))?;
    let took = started.elapsed();
    match answer.starts_with("HTTP/1.1 200 ") && answer.contains("\nlua_heap_alloc_bytes ") {
        true => Ok(took),
        false => Err(format!("not the figures: {answer:?}")),
    }
}

#[test]
fn fresh_scrapers_are_answered_while_idle_dripping_and_greedy_clients_hold_on() {
    // The test's own sockets need descriptors too: the attack shrinks to what the limit allows.
    let limit = raise_descriptor_limit(4096);
    let idle = IDLE.min(usize::try_from(limit).unwrap_or(usize::MAX).saturating_sub(DRIP + GREEDY + 100));
    let cap = MAX_CONNECTIONS.min(usize::try_from(limit / 2).unwrap_or(usize::MAX));
    eprintln!(
        "descriptor limit {limit}: {idle} idle, {DRIP} dripping, {GREEDY} greedy clients; the server's cap {cap}"
    );

    // A sandboxed script that computes for a while, then ends by itself.
    // Its `print` reaches the pipe only at exit in 5.1 and LuaJIT, whose `print` does not flush
    // (as their `lua` does), and the sandbox has no `io` to flush with: the server answering is
    // the sign it runs (the script starts as soon as the address is printed).
    let script = "local stop = os.time() + 25 while os.time() < stop do end print('ending')";
    let (mut running, address, mut stdout) = start(&["--profile", "sandbox", "--cpu-limit", "100", "-e", script]);
    let pid = running.0.id();
    let attack = Attack::start(&address, idle);
    let deadline = Instant::now() + Duration::from_secs(20);
    while attack.idle_open.load(Ordering::Relaxed) < idle * 9 / 10 {
        let open = attack.idle_open.load(Ordering::Relaxed);
        assert!(Instant::now() < deadline, "the server took {open} of the {idle} idle connections");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2)); // the drips and the greedy clients under way

    // Probes across the server's head deadline, as the idle sockets are closed and come back.
    let greedy_before = attack.greedy_answers.load(Ordering::Relaxed);
    let (mut took, mut most_descriptors, mut most_threads, mut open_idle) = (Vec::new(), 0, 0, Vec::new());
    for _ in 0..12 {
        assert!(running.0.try_wait().unwrap().is_none(), "the script ended before the probes did");
        let answered = probe(&address).unwrap_or_else(|why| panic!("a fresh scraper was not answered: {why}"));
        took.push(answered);
        open_idle.push(attack.idle_open.load(Ordering::Relaxed));
        most_descriptors = most_descriptors.max(descriptors(pid));
        most_threads = most_threads.max(status(pid, "Threads"));
        std::thread::sleep(Duration::from_millis(500));
    }
    let greedy_during = attack.greedy_answers.load(Ordering::Relaxed) - greedy_before;
    eprintln!(
        "probes answered in {took:?}; idle sockets open at each probe {open_idle:?}; the runner's \
         descriptors at most {most_descriptors}, threads at most {most_threads}; {greedy_during} greedy answers meanwhile"
    );
    // The requirement is 1 s; the test allows for a loaded machine, and checks that the
    // attackers held on meanwhile.
    assert!(took.iter().all(|t| *t < Duration::from_secs(5)), "{took:?}");
    assert!(greedy_during >= GREEDY, "the greedy clients were answered too: {greedy_during}");
    assert!(open_idle.iter().filter(|open| **open >= idle / 2).count() >= 6, "the idle sockets held on: {open_idle:?}");
    assert!(most_descriptors >= cap.min(idle) / 2, "the server held the attackers' connections: {most_descriptors}");
    assert!(most_descriptors <= cap + OWN_DESCRIPTORS, "descriptors bounded by the cap {cap}: {most_descriptors}");
    // The runner's thread, the server's loop and the heap profiles' encoder (not started here).
    assert!(most_threads <= 3, "threads: {most_threads}");

    // The script ends with every attacker still connected: the process exits at once.
    assert_eq!(line(&mut stdout), "ending\n");
    let ended = Instant::now();
    let exit = running.0.wait().unwrap();
    let exiting = ended.elapsed();
    eprintln!("exited {exiting:?} after the script ended");
    assert!(exit.success());
    assert!(exiting < Duration::from_secs(3), "the exit waited for clients: {exiting:?}");
    drop(attack);
}

/// A script whose heap profile fills the profiler's store (SECURITY.md: at most 32 MiB of
/// stacks): two thousand distinct stacks sixty frames deep, with long names. It waits on stdin.
const FILL_THE_PROFILE: &str = r#"
local load = loadstring or load -- 5.1's load takes a function
local long = string.rep("x", 240)
local deep = load(([[
  local t = {}
  function t.d%s(n, f) if n == 0 then return f() end local r = t.d%s(n - 1, f) return r end
  return t.d%s]]):format(long, long, long), "=deep")()
KEEP = {}
for i = 1, 2000 do
  local f = load("return function() return {} end", "=f" .. i .. long)()
  KEEP[i] = deep(60, f)
end
print("full")
io.stdout:flush() -- 5.1's and LuaJIT's `print` do not flush
io.read()
"#;

fn heap_profile(address: &str) -> Vec<u8> {
    let mut stream = connect(address).unwrap();
    stream.write_all(b"GET /debug/pprof/heap HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    assert!(
        answer[..split].starts_with(b"HTTP/1.") && answer[8..].starts_with(b" 200 "),
        "{}",
        String::from_utf8_lossy(&answer[..split])
    );
    answer.split_off(split + 4)
}

#[test]
fn heap_profiles_asked_at_once_do_not_multiply_peak_memory() {
    let script = temp_script("listen_fill_profile.lua", FILL_THE_PROFILE);
    let (running, address, mut stdout) = start(&["--heap-profile-rate", "1", script.to_str().unwrap()]);
    let pid = running.0.id();
    assert_eq!(line(&mut stdout), "full\n");
    let peak = || status(pid, "VmHWM") * 1024;
    let filled = peak();
    let one = heap_profile(&address);
    assert_eq!(&one[..2], b"\x1f\x8b", "gzipped");
    let after_one = peak();
    for _ in 0..3 {
        let askers: Vec<_> = (0..8)
            .map(|_| {
                let address = address.clone();
                std::thread::spawn(move || heap_profile(&address))
            })
            .collect();
        for asker in askers {
            assert_eq!(&asker.join().unwrap()[..2], b"\x1f\x8b");
        }
    }
    let after_eight = peak();
    let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
    eprintln!(
        "peak RSS {:.1} MiB with the store full, {:.1} MiB after one profile, {:.1} MiB after 3 x 8 at once",
        mib(filled),
        mib(after_one),
        mib(after_eight)
    );
    // One encoding at a time: eight at once take what one takes (the allocator may keep some
    // pages of the previous one), where eight copies of the stacks took eight times as much.
    let one_encoding = after_one - filled;
    assert!(
        after_eight - filled <= 2 * one_encoding + (16 << 20),
        "eight profiles at once raised the peak by {:.1} MiB, one by {:.1} MiB",
        mib(after_eight - filled),
        mib(one_encoding)
    );
}
