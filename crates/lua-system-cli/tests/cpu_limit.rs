//! `--cpu-limit`: the script's own CPU time is what is limited, whatever else the process does,
//! and a script made of long C calls is stopped as soon as the budget is spent (SECURITY.md,
//! "CPU limit"). The bounds asserted are on CPU time the kernel accounted, not on wall time.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::runner;

/// Runs the runner with `args` to its end; its exit status, stderr and CPU time (user + system).
fn run_measured(args: &[&str]) -> (Option<i32>, String, Duration) {
    let mut child =
        runner().args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    let (status, cpu) = reap(child.id() as libc::pid_t);
    std::mem::forget(child); // reaped by `wait4`
    (status, stderr, cpu)
}

fn reap(pid: libc::pid_t) -> (Option<i32>, Duration) {
    let mut status = 0;
    // SAFETY: a zeroed `rusage` is valid; `wait4` fills it for the child it reaps.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is a child of this process, not reaped yet.
    assert_eq!(unsafe { libc::wait4(pid, &mut status, 0, &mut usage) }, pid);
    let seconds = |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    (libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)), seconds(usage.ru_utime) + seconds(usage.ru_stime))
}

#[test]
fn a_loop_of_long_c_calls_stops_when_the_budget_is_spent() {
    // Each iteration is one C call of several milliseconds: a budget checked every so many
    // instructions let it run to the kernel's backstop (1.9 s for a 0.05 s budget).
    let (status, stderr, cpu) =
        run_measured(&["--cpu-limit", "0.05", "-e", "while true do local s = ('x'):rep(4e6) end"]);
    assert_eq!(status, Some(1), "{stderr}");
    assert!(stderr.contains("CPU limit exceeded: the state's Lua code used more than 0.050 s"), "{stderr}");
    // The budget, the runner's start and one C call; far from the second of the backstop.
    assert!(cpu < Duration::from_millis(400), "stopped after {cpu:?} of CPU time");
}

#[test]
fn the_budget_stops_a_coroutine_that_loops() {
    let (status, stderr, cpu) = run_measured(&[
        "--cpu-limit",
        "0.05",
        "-e",
        "local co = coroutine.wrap(function() while true do end end) co()",
    ]);
    assert_eq!(status, Some(1), "{stderr}");
    assert!(stderr.contains("CPU limit exceeded"), "{stderr}");
    assert!(cpu < Duration::from_millis(400), "stopped after {cpu:?} of CPU time");
}

#[test]
fn what_the_servers_threads_spend_is_not_the_scripts() {
    // The script waits (its child processes sleep), using almost no CPU time of its own, while
    // clients keep the server encoding heap profiles of every allocation. A limit on the whole
    // process's CPU time (RLIMIT_CPU) killed such a script for its server's work.
    let script = "for _ = 1, 15 do os.execute('sleep 0.2') end print('done')";
    let mut child = runner()
        .args(["--cpu-limit", "0.5", "--heap-profile-rate", "1", "--listen", "127.0.0.1:0", "-e", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let address = common::served_address(&first);
    let deadline = Instant::now() + Duration::from_secs(3);
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let address = address.clone();
            std::thread::spawn(move || {
                let mut served = 0;
                while Instant::now() < deadline {
                    let Ok(mut stream) = TcpStream::connect(&address) else { break };
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                    let request = "GET /debug/pprof/heap HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
                    if stream.write_all(request.as_bytes()).is_err() {
                        break;
                    }
                    let mut body = Vec::new();
                    let _ = stream.read_to_end(&mut body);
                    served += 1;
                }
                served
            })
        })
        .collect();
    let served: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    let stderr: Vec<String> = lines.map_while(Result::ok).collect();
    let mut stdout = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    let (status, cpu) = reap(child.id() as libc::pid_t);
    std::mem::forget(child);
    println!("{served} profiles served; the process used {cpu:?} of CPU time");
    assert_eq!((status, stdout.as_str()), (Some(0), "done\n"), "{}", stderr.join("\n"));
}
