//! Many states' figures for Prometheus and pprof stores (feature `http`): `WatchedStates` in a
//! `prometheus_client` registry, read back by Python's `prometheus_client` parsers, and
//! `lua_system::serve` over real HTTP, its profiles read by `go tool pprof`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;

use lua_system::{SystemLua, WatchedStates};
use prometheus_client::registry::Registry;

/// A Python with `prometheus_client` (Debian's python3-prometheus-client, which CI installs).
fn python_with_prometheus_client() -> Option<PathBuf> {
    // Debian's package is for Debian's Python, which another `python3` may shadow on PATH.
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

/// One parsed sample: its name and labels (`name{k="v"}` as text) and value.
type Parsed = BTreeMap<String, f64>;

/// Parses an exposition with prometheus_client's parser for `format` ("prometheus" or
/// "openmetrics"); also returns the families' names and types.
fn parse(python: &PathBuf, format: &str, exposition: &str) -> (Parsed, Vec<(String, String)>) {
    const PARSE: &str = r#"
import sys
if sys.argv[1] == "openmetrics":
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
else:
    from prometheus_client.parser import text_string_to_metric_families
def escape(value):
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
for family in text_string_to_metric_families(sys.stdin.read()):
    print("family\t%s\t%s" % (family.name, family.type))
    for s in family.samples:
        labels = ",".join('%s="%s"' % (k, escape(v)) for k, v in sorted(s.labels.items()))
        print("sample\t%s\t%r" % (s.name + ("{" + labels + "}" if labels else ""), float(s.value)))
"#;
    let mut child = Command::new(python)
        .args(["-c", PARSE, format])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(exposition.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "prometheus_client ({format}) refused:\n{exposition}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (mut samples, mut families) = (Parsed::new(), Vec::new());
    for line in text.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields[0] {
            "family" => families.push((fields[1].to_owned(), fields[2].to_owned())),
            _ => {
                let previous = samples.insert(fields[1].to_owned(), fields[2].parse().unwrap());
                assert!(previous.is_none(), "{} appears twice:\n{exposition}", fields[1]);
            }
        }
    }
    (samples, families)
}

/// Two states with different heaps, watched under the label `state`.
fn two_states() -> (SystemLua, SystemLua, Arc<WatchedStates>) {
    let (a, b) = (SystemLua::new().unwrap(), SystemLua::new().unwrap());
    a.load("keep = {} for i = 1, 20000 do keep[i] = {i} end collectgarbage()").exec().unwrap();
    b.load("keep = string.rep('b', 3 * 1048576) collectgarbage() collectgarbage()").exec().unwrap();
    let states = Arc::new(WatchedStates::new());
    states.add(&a, &[("state", "worker-1")]).unwrap();
    states.add(&b, &[("state", "worker \"2\"\n")]).unwrap(); // escaped as the formats require
    (a, b, states)
}

#[test]
fn two_states_in_a_prometheus_client_registry_read_back_by_pythons_parsers() {
    let Some(python) = python_with_prometheus_client() else { return };
    let (a, b, states) = two_states();
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Arc::clone(&states)));

    let (sa, sb) = (a.mem_stats().unwrap(), b.mem_stats().unwrap());
    let mut openmetrics = String::new();
    prometheus_client::encoding::text::encode(&mut openmetrics, &registry).unwrap();
    let mut prometheus = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut prometheus, &registry).unwrap();
    for (format, text) in [("openmetrics", &openmetrics), ("prometheus", &prometheus)] {
        let (samples, families) = parse(&python, format, text);
        let a_sample = |name: &str| samples[&format!("{name}{{state=\"worker-1\"}}")];
        let b_sample = |name: &str| samples[&format!("{name}{{state=\"worker \\\"2\\\"\\n\"}}")];
        // The states' own figures, exactly as mem_stats() reads them (nothing ran since).
        assert_eq!(a_sample("lua_heap_alloc_bytes"), sa.alloc as f64, "{format}");
        assert_eq!(b_sample("lua_heap_alloc_bytes"), sb.alloc as f64, "{format}");
        assert_eq!(a_sample("lua_heap_objects"), sa.heap_objects as f64);
        assert_eq!(a_sample("lua_gc_cycles_total"), sa.num_gc as f64);
        assert_eq!(b_sample("lua_gc_cycles_total"), sb.num_gc as f64);
        assert_eq!(b_sample("lua_heap_allocated_bytes_total"), sb.total_alloc as f64);
        assert_eq!(a_sample("lua_gc_percent"), sa.gc_percent.unwrap() as f64); // the version's default
        assert!(b_sample("lua_heap_alloc_bytes") > a_sample("lua_heap_alloc_bytes") + 1e6);
        // The process's figures once, unlabelled.
        assert_eq!(samples["lua_process_cpus"], lua_system::num_cpu() as f64);
        assert!(samples["lua_process_resident_memory_bytes"] > sb.alloc as f64);
        assert_eq!(samples.keys().filter(|k| k.starts_with("lua_process_cpus")).count(), 1);
        // Every family once, counters typed as counters.
        let names: Vec<&str> = families.iter().map(|(n, _)| n.as_str()).collect();
        assert!(families.contains(&("lua_gc_cycles".into(), "counter".into())), "{format}: {families:?}");
        assert!(families.contains(&("lua_heap_alloc_bytes".into(), "gauge".into())));
        let mut unique = names.clone();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
    }
    // The library's own texts are the registry's (the process's heap moved meanwhile: the
    // states' lines are compared).
    let states_lines =
        |text: &str| text.lines().filter(|l| !l.starts_with("lua_process_")).collect::<Vec<_>>().join("\n");
    assert_eq!(states_lines(&states.to_openmetrics()), states_lines(&openmetrics));
    assert_eq!(states_lines(&states.to_prometheus()), states_lines(&prometheus));

    // A state that closes leaves the registry.
    drop(b);
    let mut after = String::new();
    prometheus_client::encoding::text::encode(&mut after, &registry).unwrap();
    let (samples, _) = parse(&python, "openmetrics", &after);
    assert!(samples.keys().all(|k| !k.contains("worker \\\"2")), "{after}");
    assert!(samples.contains_key("lua_heap_alloc_bytes{state=\"worker-1\"}"));
    assert_eq!(states.len(), 1);
    drop(a);
    assert!(states.is_empty());
}

#[test]
fn process_figures_appear_once_whatever_the_number_of_states() {
    let states = Arc::new(WatchedStates::new());
    let lua: Vec<SystemLua> = (0..50).map(|_| SystemLua::new().unwrap()).collect();
    for (i, state) in lua.iter().enumerate() {
        states.add(state, &[("state", &i.to_string())]).unwrap();
    }
    let text = states.to_prometheus();
    let samples = |name: &str| text.lines().filter(|l| l.starts_with(name) && !l.starts_with('#')).count();
    assert_eq!(samples("lua_heap_alloc_bytes{"), 50);
    for process in ["lua_process_cpus ", "lua_max_procs ", "lua_process_resident_memory_bytes "] {
        assert_eq!(samples(process), 1, "{process}");
    }
    assert_eq!(text.matches("# TYPE lua_heap_alloc_bytes ").count(), 1);
}

#[test]
fn states_are_refused_with_clear_errors() {
    let states = WatchedStates::new();
    let a = SystemLua::new().unwrap();
    let bad = states.add(&a, &[("1st", "x")]).unwrap_err().to_string();
    assert!(bad.contains("invalid Prometheus label name '1st'"), "{bad}");
    assert!(states.add(&a, &[("__reserved", "x")]).is_err());
    states.add(&a, &[("state", "a")]).unwrap();
    let twice = states.add(&a, &[("state", "a")]).unwrap_err().to_string();
    assert!(twice.contains("already has the labels"), "{twice}");
    // Labels compare as Prometheus compares series: in any order; an empty value is no label.
    let b = SystemLua::new().unwrap();
    states.add(&b, &[("state", "b"), ("pool", "x")]).unwrap();
    assert!(states.add(&b, &[("pool", "x"), ("state", "b")]).unwrap_err().to_string().contains("already has"));
    assert!(states.add(&b, &[("pool", "x"), ("state", "b"), ("zone", "")]).is_err(), "an empty value is no label");
    let repeated = states.add(&b, &[("state", "x"), ("state", "y")]).unwrap_err().to_string();
    assert!(repeated.contains("the label 'state' is given twice"), "{repeated}");
    assert!(states.remove(&[("pool", "x"), ("state", "b")]), "removed in any order");
    let plain = lua_system::mlua::Lua::new();
    let missing = states.add(&plain, &[("state", "plain")]).unwrap_err().to_string();
    assert!(!missing.is_empty());
    assert_eq!(states.len(), 1, "nothing added by a refusal");
    drop(b);
    assert!(states.remove(&[("state", "a")]));
    assert!(!states.remove(&[("state", "a")]));
    assert!(states.is_empty());
}

/// An HTTP/1.0 request; the status, headers and body of the answer.
fn get(address: SocketAddr, request: &str) -> (u16, String, Vec<u8>) {
    let mut connection = TcpStream::connect(address).unwrap();
    connection.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    connection.read_to_end(&mut answer).unwrap();
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").expect("a header");
    let head = String::from_utf8(answer[..split].to_vec()).unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head, answer[split + 4..].to_vec())
}

/// `go tool pprof -top -raw`... the sample lines of a profile file, by pprof's own reader.
fn pprof_raw(profile: &[u8]) -> Option<String> {
    let dir = std::env::temp_dir().join(format!("lua-system-exporting-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("heap.pb.gz");
    std::fs::write(&path, profile).unwrap();
    let output =
        match Command::new("go").args(["tool", "pprof", "-raw", path.to_str().unwrap()]).env("HOME", &dir).output() {
            Ok(output) => output,
            Err(_) if std::env::var_os("CI").is_none() => {
                eprintln!("skipped: `go` is not installed (CI installs golang-go)");
                return None;
            }
            Err(error) => panic!("go tool pprof: {error}"),
        };
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    Some(String::from_utf8(output.stdout).unwrap())
}

#[test]
fn serve_answers_metrics_and_heap_profiles_over_http_and_nothing_else() {
    let (a, b, states) = two_states();
    for state in [&a, &b] {
        lua_system::set_heap_profile_rate(state, 1).unwrap();
    }
    a.load("function grow() local t = {} for i = 1, 2000 do t[i] = 'a' .. i end return t end kept = grow()")
        .exec()
        .unwrap();
    b.load("function fill() return string.rep('y', 100000) end kept = fill()").exec().unwrap();
    let server = lua_system::serve("127.0.0.1:0", Arc::clone(&states)).unwrap();
    let address = server.address();
    assert!(address.ip().is_loopback() && address.port() != 0);

    let (status, head, body) = get(address, "GET /metrics HTTP/1.0\r\n\r\n");
    assert_eq!(status, 200);
    assert!(head.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"), "{head}");
    let body = String::from_utf8(body).unwrap();
    assert!(body.contains(r#"lua_heap_alloc_bytes{state="worker-1"} "#), "{body}");
    assert!(!body.contains("# EOF"));

    let ask = "GET /metrics HTTP/1.0\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n\r\n";
    let (status, head, body) = get(address, ask);
    assert_eq!(status, 200);
    assert!(head.contains("Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8"), "{head}");
    assert!(String::from_utf8(body).unwrap().ends_with("# EOF\n"));

    // The profile of both states, each sample labelled with its state; one state by label.
    let (status, head, both) = get(address, "GET /debug/pprof/heap HTTP/1.0\r\n\r\n");
    assert_eq!(status, 200);
    assert!(head.contains("Content-Type: application/octet-stream"), "{head}");
    assert_eq!(&both[..2], b"\x1f\x8b", "gzipped");
    let (status, _, one) = get(address, "GET /debug/pprof/heap?state=worker-1&gc=1 HTTP/1.0\r\n\r\n");
    assert_eq!(status, 200);
    if let (Some(both), Some(one)) = (pprof_raw(&both), pprof_raw(&one)) {
        assert!(both.contains("grow") && both.contains("fill"), "{both}");
        assert!(both.contains("state:[worker-1]") || both.contains("state:worker-1"), "{both}");
        assert!(one.contains("grow") && !one.contains("fill"), "{one}");
    }

    for (request, expected) in [
        ("GET /debug/pprof/heap?seconds=5 HTTP/1.0\r\n\r\n", 400),
        ("GET /debug/pprof/heap?debug=1 HTTP/1.0\r\n\r\n", 400),
        ("GET /debug/pprof/profile HTTP/1.0\r\n\r\n", 404),
        ("GET / HTTP/1.0\r\n\r\n", 404),
        ("POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n", 405),
        ("DELETE /debug/pprof/heap HTTP/1.0\r\n\r\n", 405),
    ] {
        assert_eq!(get(address, request).0, expected, "{request:?}");
    }
    let (status, _, _) = get(address, "HEAD /metrics HTTP/1.0\r\n\r\n");
    assert_eq!(status, 200);

    drop(server);
    // The listening socket closes as the server's accept thread sees the stop (moments later).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while TcpStream::connect(address).is_ok() {
        assert!(std::time::Instant::now() < deadline, "the server stopped listening");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn a_scrape_reads_a_state_while_its_script_runs() {
    let lua = SystemLua::new().unwrap();
    let states = Arc::new(WatchedStates::new());
    states.add(&lua, &[("state", "busy")]).unwrap();
    let server = lua_system::serve("127.0.0.1:0", Arc::clone(&states)).unwrap();
    let address = server.address();
    let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scraper = {
        let finished = Arc::clone(&finished);
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while seen.len() < 20 {
                let (_, _, body) = get(address, "GET /metrics HTTP/1.0\r\n\r\n");
                let body = String::from_utf8(body).unwrap();
                let line = body.lines().find(|l| l.starts_with("lua_heap_allocated_bytes_total{")).unwrap();
                seen.push(line.rsplit(' ').next().unwrap().parse::<f64>().unwrap());
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            finished.store(true, std::sync::atomic::Ordering::Relaxed);
            seen
        })
    };
    // The script runs on this thread until the scraper has its 20 readings.
    let done = lua.create_function(move |_, ()| Ok(finished.load(std::sync::atomic::Ordering::Relaxed))).unwrap();
    lua.globals().set("done", done).unwrap();
    lua.load("while not done() do local t = {} for i = 1, 1000 do t[i] = {} end end").exec().unwrap();
    let scrapes = scraper.join().unwrap();
    assert!(scrapes.windows(2).all(|w| w[0] <= w[1]));
    assert!(scrapes.last() > scrapes.first(), "the scrapes saw the script allocate: {scrapes:?}");
}

#[test]
fn a_merged_profile_takes_the_rate_of_the_first_state_with_samples() {
    let states = WatchedStates::new();
    let unprofiled = SystemLua::new().unwrap();
    let every = SystemLua::new().unwrap();
    let sparse = SystemLua::new().unwrap();
    lua_system::set_heap_profile_rate(&every, 1).unwrap();
    lua_system::set_heap_profile_rate(&sparse, 4096).unwrap();
    for lua in [&every, &sparse] {
        lua.load("kept = {} for i = 1, 5000 do kept[i] = { i } end").exec().unwrap();
    }
    states.add(&unprofiled, &[("state", "unprofiled")]).unwrap();
    states.add(&every, &[("state", "every")]).unwrap();
    states.add(&sparse, &[("state", "sparse")]).unwrap();
    let profile = states.heap_profile(&[]);
    assert_eq!(profile.rate, 1);
    assert!(profile.samples.iter().all(|s| s.labels == [("state".to_string(), "every".to_string())]));
    assert!(profile.comments.iter().any(|c| c.contains("sparse") && c.contains("4096")), "{:?}", profile.comments);
    let sparse_only = states.heap_profile(&[("state", "sparse")]);
    assert_eq!(sparse_only.rate, 4096);
    assert!(!sparse_only.samples.is_empty());
}

/// Sends a request head and reads one whole answer (by its Content-Length) on `connection`.
fn request_on(connection: &mut TcpStream, request: &str) -> u16 {
    use std::io::BufRead;
    connection.write_all(request.as_bytes()).unwrap();
    let mut reader = std::io::BufReader::new(connection.try_clone().unwrap());
    let (mut line, mut length) = (String::new(), 0usize);
    reader.read_line(&mut line).unwrap();
    let status = line.split(' ').nth(1).unwrap().parse().unwrap();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).unwrap();
        if header == "\r\n" {
            break;
        }
        if let Some(value) = header.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    status
}

#[test]
fn clients_that_stall_block_neither_scrapes_nor_the_servers_stop() {
    let (a, _b, states) = two_states();
    let server = lua_system::serve("127.0.0.1:0", Arc::clone(&states)).unwrap();
    let address = server.address();
    let quick = |what: &str| {
        let started = std::time::Instant::now();
        let (status, _, body) = get(address, "GET /metrics HTTP/1.0\r\n\r\n");
        assert_eq!(status, 200, "{what}");
        assert!(!body.is_empty());
        started.elapsed()
    };

    // A client that asks for thousands of answers and reads none: its thread's writes time
    // out; the others answer.
    let mut hog = TcpStream::connect(address).unwrap();
    hog.write_all("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(3000).as_bytes()).unwrap();
    // Idle clients with half a request head each.
    let idle: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut stream = TcpStream::connect(address).unwrap();
            stream.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
            stream
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    for i in 0..5 {
        let took = quick(&format!("scrape {i} beside stalled clients"));
        assert!(took < std::time::Duration::from_secs(2), "scrape {i} took {took:?}");
    }

    // A head past the bound is refused, whatever it carries.
    let mut big = TcpStream::connect(address).unwrap();
    let mut head = String::from("GET /metrics HTTP/1.1\r\nX-Big: ");
    head.push_str(&"a".repeat(64 * 1024));
    let _ = big.write_all(head.as_bytes()); // the server may close before reading it all
    let mut answer = Vec::new();
    let _ = big.read_to_end(&mut answer);
    assert!(answer.starts_with(b"HTTP/1.1 431") || answer.is_empty(), "{}", String::from_utf8_lossy(&answer));

    // Kept-alive connections, as Prometheus keeps them; pipelined requests answered in order.
    let mut kept = TcpStream::connect(address).unwrap();
    for path in ["/metrics", "/debug/pprof/heap", "/nothing"] {
        let status = request_on(&mut kept, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert_eq!(status, if path == "/nothing" { 404 } else { 200 });
    }

    // Stopping does not wait for the clients.
    let started = std::time::Instant::now();
    drop(server);
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "stopped in {:?}", started.elapsed());
    drop((hog, idle, a));
}

#[test]
fn stopping_leaves_kept_alive_connections_at_once() {
    let (_a, _b, states) = two_states();
    let server = lua_system::serve("127.0.0.1:0", Arc::clone(&states)).unwrap();
    let mut kept = TcpStream::connect(server.address()).unwrap();
    assert_eq!(request_on(&mut kept, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), 200);
    // The connection waits for its next request, as a scraper's does between scrapes.
    let started = std::time::Instant::now();
    drop(server);
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_millis(800), "the program's exit waited {took:?}");
    let mut rest = Vec::new();
    assert_eq!(kept.read_to_end(&mut rest).unwrap(), 0, "the server closed the kept connection");
}
