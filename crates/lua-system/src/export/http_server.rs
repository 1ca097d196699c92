//! `/metrics` and `/debug/pprof/heap` over HTTP for a set of states ([`serve`]), as Go services
//! expose them with `promhttp` and `net/http/pprof`: Prometheus scrapes the first, `go tool
//! pprof http://HOST:PORT/debug/pprof/heap` (or Pyroscope, Parca) reads the second.
//!
//! The server reads only [`WatchedStates`] (the module's counters and the profiler's samples),
//! never a Lua state, so the scripts run on while it answers. Nothing else is served: any other
//! path is 404, any method but GET and HEAD 405.
//!
//! Why by hand (on `httparse` for the request head): the server must stay bounded whatever its
//! clients do, and the small synchronous servers at hand are not (tiny_http, tried first, spends
//! a thread per connection without limit, reads headers without a size limit or timeout, and
//! lets one client that never reads its answer block every other scrape and the program's
//! exit). Here: [`WORKERS`] threads, each accepting and serving one connection at a time; a
//! request head of at most [`MAX_HEAD`] bytes, read within [`HEAD_DEADLINE`]; a kept-alive
//! connection closed after [`KEEP_ALIVE_IDLE`] without a request; every write bounded by
//! [`IO_TIMEOUT`]; other connections wait in the kernel's backlog. So clients that stall hold
//! at most every thread for a few seconds at a time, and never the program's exit. HTTP/1.0 and
//! 1.1, kept-alive connections (as Prometheus keeps them), answers sent whole with their length.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::export::watched_states::WatchedStates;

/// Threads answering: as many connections served at once.
const WORKERS: usize = 8;

/// The largest request head (request line and headers) read.
const MAX_HEAD: usize = 16 * 1024;

/// How long a client may take to send a request head.
const HEAD_DEADLINE: Duration = Duration::from_secs(5);

/// How long a kept-alive connection may stay idle before its next request: then it is closed,
/// and its thread serves another (a scraper reconnects at its next scrape).
const KEEP_ALIVE_IDLE: Duration = Duration::from_secs(2);

/// How long one write may block.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a connection waiting for a request checks whether the server stops.
const STOP_POLL: Duration = Duration::from_millis(100);

/// How long dropping a [`MetricsServer`] waits for answers in flight.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// What `/metrics` answers by default: the Prometheus text format 0.0.4.
const PROMETHEUS_TEXT: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// What `/metrics` answers a scraper that accepts it (Prometheus asks for it first).
const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A running server (see [`serve`]); dropping it stops the server: no connection is accepted
/// after, and answers in flight get a second to finish before the threads are left to end on
/// their own (within the I/O timeouts).
pub struct MetricsServer {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
}

impl MetricsServer {
    /// The address the server listens on (with the port the system chose, if 0 was asked).
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl std::fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsServer").field("address", &self.address).finish()
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Each worker blocked in `accept` takes one of these connections, sees the flag, ends.
        let wake = wake_address(self.address);
        for _ in 0..self.workers.len() {
            let _ = TcpStream::connect_timeout(&wake, Duration::from_millis(200));
        }
        let deadline = Instant::now() + STOP_GRACE;
        while self.workers.iter().any(|worker| !worker.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        for worker in self.workers.drain(..) {
            if worker.is_finished() {
                let _ = worker.join();
            }
        }
    }
}

/// Where to connect to reach a listener bound to `address` (an unspecified address listens on
/// loopback too).
fn wake_address(address: SocketAddr) -> SocketAddr {
    match address.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), address.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), address.port()),
        _ => address,
    }
}

/// Serves `states` on `address` (e.g. `"127.0.0.1:9464"`; port 0 picks a free one) until the
/// returned [`MetricsServer`] is dropped:
///
/// * `/metrics`: the states' and the process's figures ([`WatchedStates::to_prometheus`]), in
///   OpenMetrics when the request's `Accept` asks for `application/openmetrics-text`;
/// * `/debug/pprof/heap`: the states' heap profile in pprof's format (gzipped protobuf), as Go's
///   handler serves it. Query parameters other than Go's select states by label
///   (`?state=worker-1`); Go's `gc=1` is ignored (the server never enters Lua), `debug=N` other
///   than 0 and `seconds=N` (delta profiles) are refused with 400.
///
/// It stays bounded whatever its clients do: 8 threads, each serving one connection at a time
/// (others wait in the kernel's backlog); a request head of at most 16 KiB, sent within 5 s; a
/// kept-alive connection idle for 2 s closed; 5 s for each write, after which a client that
/// does not read is dropped.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::io::{Read, Write};
/// use std::sync::Arc;
///
/// let lua = lua_system::SystemLua::new()?;
/// let states = Arc::new(lua_system::WatchedStates::new());
/// states.add(&lua, &[("state", "main")])?;
/// let server = lua_system::serve("127.0.0.1:0", Arc::clone(&states))?;
///
/// let mut connection = std::net::TcpStream::connect(server.address())?;
/// connection.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
/// let mut response = String::new();
/// connection.read_to_string(&mut response)?;
/// assert!(response.contains(r#"lua_heap_alloc_bytes{state="main"} "#));
/// # Ok(())
/// # }
/// ```
pub fn serve(address: impl ToSocketAddrs, states: Arc<WatchedStates>) -> io::Result<MetricsServer> {
    let listener = Arc::new(TcpListener::bind(address)?);
    let address = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::with_capacity(WORKERS);
    for index in 0..WORKERS {
        let (listener, states, stopped) = (Arc::clone(&listener), Arc::clone(&states), Arc::clone(&stop));
        let spawned = std::thread::Builder::new()
            .name(format!("lua-system http {index}"))
            .spawn(move || accept_and_answer(&listener, &states, &stopped));
        match spawned {
            Ok(worker) => workers.push(worker),
            Err(error) => {
                drop(MetricsServer { address, stop, workers });
                return Err(error);
            }
        }
    }
    Ok(MetricsServer { address, stop, workers })
}

/// A worker: accepts a connection, answers it until it closes, and again, until stopped.
fn accept_and_answer(listener: &TcpListener, states: &WatchedStates, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) if !stop.load(Ordering::SeqCst) => {
                let _ = answer_connection(stream, states, stop);
            }
            Ok(_) => return,
            // Out of descriptors, a connection reset before it was taken...: try again shortly.
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// One request, as far as the server needs it.
struct Request {
    head_only: bool,
    path: String,
    query: String,
    openmetrics: bool,
    keep_alive: bool,
}

/// Answers the requests of one connection, until the client closes it, asks to, or breaks a
/// bound.
fn answer_connection(mut stream: TcpStream, states: &WatchedStates, stop: &AtomicBool) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut buffer = Vec::with_capacity(1024);
    for served in 0usize.. {
        let wait = if served == 0 || !buffer.is_empty() { HEAD_DEADLINE } else { KEEP_ALIVE_IDLE };
        let head = match read_head(&mut stream, &mut buffer, wait, stop)? {
            Some(head) => head,
            None => return Ok(()),
        };
        let request = match parse(&buffer[..head]) {
            Ok(request) => request,
            Err((status, reason)) => {
                return respond(&mut stream, status, "text/plain; charset=utf-8", reason.as_bytes(), false, false);
            }
        };
        buffer.drain(..head);
        let keep_alive = request.keep_alive && !stop.load(Ordering::SeqCst);
        let (status, content_type, body) = route(&request, states);
        respond(&mut stream, status, content_type, &body, request.head_only, keep_alive)?;
        if !keep_alive {
            return Ok(());
        }
    }
    Ok(())
}

/// Reads until `buffer` holds a whole request head; its length, or `None` when the client
/// closed the connection between requests. A head past [`MAX_HEAD`] or not complete within
/// `wait` is an error (the connection is dropped).
fn read_head(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
    wait: Duration,
    stop: &AtomicBool,
) -> io::Result<Option<usize>> {
    let deadline = Instant::now() + wait;
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(Some(end + 4));
        }
        if buffer.len() >= MAX_HEAD {
            let _ = respond(stream, 431, "text/plain; charset=utf-8", b"request head too large\n", false, false);
            return Err(io::Error::other("request head too large"));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        // Short waits, so that a stopping server leaves a connection waiting for its next
        // request at once.
        stream.set_read_timeout(Some(left.min(STOP_POLL)))?;
        let room = (MAX_HEAD - buffer.len()).min(chunk.len());
        match stream.read(&mut chunk[..room]) {
            Ok(0) if buffer.is_empty() => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
            Err(error) if matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                if stop.load(Ordering::SeqCst) {
                    return Ok(None);
                }
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
}

/// The request in `head`, or the status and reason to refuse it with.
fn parse(head: &[u8]) -> Result<Request, (u16, &'static str)> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Err(httparse::Error::TooManyHeaders) => return Err((431, "too many headers\n")),
        _ => return Err((400, "bad request\n")),
    }
    let headers: Vec<(&str, String)> =
        parsed.headers.iter().map(|h| (h.name, String::from_utf8_lossy(h.value).into_owned())).collect();
    let header = |name: &'static str| {
        headers.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    };
    let connection = header("Connection").collect::<Vec<_>>().join(",").to_ascii_lowercase();
    let version = parsed.version.unwrap_or(0);
    let keep_alive = match version {
        1 => !connection.contains("close"),
        _ => connection.contains("keep-alive"),
    };
    let method = parsed.method.unwrap_or("");
    if method != "GET" && method != "HEAD" {
        return Err((405, "only GET and HEAD\n"));
    }
    // A body on a GET is not read: answer, then close.
    let has_body = header("Content-Length").any(|v| v.trim() != "0") || header("Transfer-Encoding").next().is_some();
    // An absolute-form target (`GET http://host/metrics`), as proxies send it: its path.
    let target = parsed.path.unwrap_or("/");
    let target = match target.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |slash| &rest[slash..]),
        None => target,
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok(Request {
        head_only: method == "HEAD",
        path: path.to_owned(),
        query: query.to_owned(),
        openmetrics: header("Accept").any(|v| v.contains("application/openmetrics-text")),
        keep_alive: keep_alive && !has_body,
    })
}

/// The status, content type and body answering `request`.
fn route(request: &Request, states: &WatchedStates) -> (u16, &'static str, Vec<u8>) {
    match request.path.as_str() {
        "/metrics" if request.openmetrics => (200, OPENMETRICS_TEXT, states.to_openmetrics().into_bytes()),
        "/metrics" => (200, PROMETHEUS_TEXT, states.to_prometheus().into_bytes()),
        "/debug/pprof/heap" => match heap_profile(states, &request.query) {
            Ok(body) => (200, "application/octet-stream", body),
            Err(why) => (400, "text/plain; charset=utf-8", why.into_bytes()),
        },
        _ => (404, "text/plain; charset=utf-8", b"404 page not found\n".to_vec()),
    }
}

/// Writes a whole answer in one write.
fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &[u8],
    head_only: bool,
    keep_alive: bool,
) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Request Header Fields Too Large",
    };
    let mut answer = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: {}\r\n",
        body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    );
    if status == 405 {
        answer.push_str("Allow: GET, HEAD\r\n");
    }
    if content_type == "application/octet-stream" {
        answer.push_str("Content-Disposition: attachment; filename=\"heap\"\r\n");
    }
    answer.push_str("\r\n");
    let mut bytes = answer.into_bytes();
    if !head_only {
        bytes.extend_from_slice(body);
    }
    stream.write_all(&bytes)?;
    stream.flush()
}

/// The gzipped pprof profile `/debug/pprof/heap?query` asks for, or why it is refused. Go's
/// parameters read as Go reads them: `debug` and `seconds` as integers, empty or absent meaning
/// 0.
fn heap_profile(states: &WatchedStates, query: &str) -> Result<Vec<u8>, String> {
    let mut selector = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (key, value) = (decode(key), decode(value));
        let number = || value.trim().parse::<i64>().ok().or(value.trim().is_empty().then_some(0));
        match key.as_str() {
            "debug" => match number() {
                Some(0) => {}
                _ => return Err("only debug=0 (pprof's format) is served\n".into()),
            },
            "seconds" => match number() {
                Some(0) => {}
                _ => return Err("delta profiles (seconds=N) are not served\n".into()),
            },
            "gc" => {}
            _ => selector.push((key, value)),
        }
    }
    let selector: Vec<(&str, &str)> = selector.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut body = Vec::new();
    states.heap_profile(&selector).write_pprof(&mut body).map_err(|error| format!("{error}\n"))?;
    Ok(body)
}

/// A query component with `%XX` and `+` decoded (invalid escapes kept as they are).
fn decode(component: &str) -> String {
    let bytes = component.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                i += 3;
            }
            (b'+', _) => {
                decoded.push(b' ');
                i += 1;
            }
            (byte, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_components_are_decoded() {
        assert_eq!(decode("worker%2D1+a%zz"), "worker-1 a%zz");
        assert_eq!(decode("%"), "%");
    }

    #[test]
    fn requests_are_read_as_http_says() {
        let request = parse(b"GET http://host:1/metrics?x=1 HTTP/1.1\r\nHost: h\r\n\r\n").ok().unwrap();
        assert_eq!((request.path.as_str(), request.query.as_str(), request.keep_alive), ("/metrics", "x=1", true));
        let request = parse(b"HEAD /metrics HTTP/1.0\r\n\r\n").ok().unwrap();
        assert!(request.head_only && !request.keep_alive);
        let request = parse(b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n").ok().unwrap();
        assert!(!request.keep_alive);
        let request = parse(b"GET /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\n").ok().unwrap();
        assert!(!request.keep_alive, "a body is not read: the connection closes");
        assert_eq!(parse(b"POST /metrics HTTP/1.1\r\n\r\n").err(), Some((405, "only GET and HEAD\n")));
        assert_eq!(parse(b"GARBAGE\r\n\r\n").err().map(|e| e.0), Some(400));
    }
}
