//! What a scrape costs: `/metrics` for one state and for 1,000 (the exposition built from the
//! states' counters, and the whole HTTP request over loopback, client included), and
//! `/debug/pprof/heap` for one profiled state.
//!
//!   cargo bench -p lua-system --features http --bench scrape
//!
//! The server answers on one thread, one request at a time: a request's wall time here bounds
//! its CPU time. BENCHMARKS.md has the figures.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use lua_system::{SystemLua, WatchedStates};

/// One connection kept open, as Prometheus keeps its scrape connections (a new connection per
/// request would measure the kernel's TCP setup, and run out of ports in a benchmark's loop).
struct Client {
    connection: BufReader<TcpStream>,
}

impl Client {
    fn new(address: SocketAddr) -> Client {
        let connection = TcpStream::connect(address).unwrap();
        connection.set_nodelay(true).unwrap(); // as Go's HTTP client (Prometheus) sets it
        Client { connection: BufReader::new(connection) }
    }

    /// GET `path`; the body's length.
    fn get(&mut self, path: &str) -> usize {
        let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n");
        self.connection.get_mut().write_all(request.as_bytes()).unwrap();
        let (mut line, mut length) = (String::new(), None);
        self.connection.read_line(&mut line).unwrap();
        assert!(line.starts_with("HTTP/1.1 200"), "{line}");
        loop {
            line.clear();
            self.connection.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = Some(value.trim().parse::<usize>().unwrap());
            }
        }
        let mut body = vec![0; length.expect("a Content-Length")];
        self.connection.read_exact(&mut body).unwrap();
        body.len()
    }
}

fn watched(count: usize) -> (Vec<SystemLua>, Arc<WatchedStates>) {
    let states = Arc::new(WatchedStates::new());
    let lua: Vec<SystemLua> = (0..count).map(|_| SystemLua::new().unwrap()).collect();
    for (i, state) in lua.iter().enumerate() {
        state.load("live = {} for i = 1, 100 do live[i] = { i } end").exec().unwrap();
        states.add(state, &[("state", &format!("worker-{i}"))]).unwrap();
    }
    (lua, states)
}

fn scrape(c: &mut Criterion) {
    let mut group = c.benchmark_group("scrape");
    for count in [1, 1000] {
        let (lua, states) = watched(count);
        let text = states.to_prometheus();
        let process_lines =
            text.lines().filter(|l| l.starts_with("lua_process_") || l.starts_with("lua_max_procs")).count();
        eprintln!("{count} states: exposition of {} bytes, {process_lines} process samples", text.len());
        group.bench_function(format!("to_prometheus, {count} states"), |b| b.iter(|| states.to_prometheus()));
        let server = lua_system::serve("127.0.0.1:0", Arc::clone(&states)).unwrap();
        let mut client = Client::new(server.address());
        group.bench_function(format!("GET /metrics, {count} states"), |b| b.iter(|| client.get("/metrics")));
        drop(client);
        drop(server);
        drop(lua);
    }
    let (lua, states) = watched(1);
    lua_system::set_heap_profile_rate(&lua[0], 4096).unwrap();
    lua[0].load("kept = {} for i = 1, 20000 do kept[i] = { name = 'record ' .. i } end").exec().unwrap();
    let server = lua_system::serve("127.0.0.1:0", Arc::clone(&states)).unwrap();
    let mut client = Client::new(server.address());
    group.bench_function("GET /debug/pprof/heap, 1 state", |b| b.iter(|| client.get("/debug/pprof/heap")));
    group.finish();
}

criterion_group!(benches, scrape);
criterion_main!(benches);
