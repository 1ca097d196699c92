//! `/metrics` and `/debug/pprof/heap` over HTTP for a set of states ([`serve`]), as Go services
//! expose them with `promhttp` and `net/http/pprof`: Prometheus scrapes the first, `go tool
//! pprof http://HOST:PORT/debug/pprof/heap` (or Pyroscope, Parca) reads the second.
//!
//! One thread answers, one request at a time; it reads only [`WatchedStates`] (the module's
//! counters and the profiler's samples), never a Lua state, so the scripts run on while it
//! answers. Nothing else is served: any other path is 404, any method but GET and HEAD 405.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::thread::JoinHandle;

use tiny_http::{Header, Method, Request, Response};

use crate::watched_states::WatchedStates;

/// What `/metrics` answers by default: the Prometheus text format 0.0.4.
const PROMETHEUS_TEXT: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// What `/metrics` answers a scraper that accepts it (Prometheus asks for it first).
const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A running server (see [`serve`]); dropping it stops the server.
pub struct MetricsServer {
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
    address: SocketAddr,
}

impl MetricsServer {
    /// The address the server listens on (with the port the system chose, if 0 was asked).
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsServer").field("address", &self.address).finish()
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
    let listener = std::net::TcpListener::bind(address)?;
    // Answers go out whole: with Nagle's algorithm, the last segment of an answer on a kept-alive
    // connection waits for the scraper's delayed ACK (40 ms on Linux). Accepted sockets inherit
    // the option from the listening one.
    rustix::net::sockopt::set_tcp_nodelay(&listener, true)?;
    let server = tiny_http::Server::from_listener(listener, None).map_err(io::Error::other)?;
    let address = server.server_addr().to_ip().ok_or_else(|| io::Error::other("not an IP address"))?;
    let server = Arc::new(server);
    let serving = Arc::clone(&server);
    let thread = std::thread::Builder::new().name("lua-system metrics".into()).spawn(move || {
        for request in serving.incoming_requests() {
            let _ = answer(request, &states);
        }
    })?;
    Ok(MetricsServer { server, thread: Some(thread), address })
}

fn answer(request: Request, states: &WatchedStates) -> io::Result<()> {
    if !matches!(request.method(), Method::Get | Method::Head) {
        return request.respond(text(405, "only GET and HEAD\n").with_header(header("Allow", "GET, HEAD")));
    }
    let (path, query) = request.url().split_once('?').unwrap_or((request.url(), ""));
    match path {
        "/metrics" => {
            let openmetrics = request
                .headers()
                .iter()
                .any(|h| h.field.equiv("Accept") && h.value.as_str().contains("application/openmetrics-text"));
            let (body, content_type) = match openmetrics {
                true => (states.to_openmetrics(), OPENMETRICS_TEXT),
                false => (states.to_prometheus(), PROMETHEUS_TEXT),
            };
            request.respond(whole(Response::from_string(body)).with_header(header("Content-Type", content_type)))
        }
        "/debug/pprof/heap" => match heap_profile(states, query) {
            Ok(body) => request.respond(
                whole(Response::from_data(body))
                    .with_header(header("Content-Type", "application/octet-stream"))
                    .with_header(header("Content-Disposition", "attachment; filename=\"heap\"")),
            ),
            Err(why) => request.respond(text(400, &why)),
        },
        _ => request.respond(text(404, "404 page not found\n")),
    }
}

/// The gzipped pprof profile `/debug/pprof/heap?query` asks for, or why it is refused.
fn heap_profile(states: &WatchedStates, query: &str) -> Result<Vec<u8>, String> {
    let mut selector = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (key, value) = (decode(key), decode(value));
        match key.as_str() {
            "debug" if value != "0" => return Err("only debug=0 (pprof's format) is served\n".into()),
            "seconds" => return Err("delta profiles (seconds=N) are not served\n".into()),
            "debug" | "gc" => {}
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

/// An answer sent with its `Content-Length`, never in chunks (tiny_http chunks bodies past 32 KiB
/// by default): the body is built before the answer starts anyway.
fn whole(response: Response<io::Cursor<Vec<u8>>>) -> Response<io::Cursor<Vec<u8>>> {
    response.with_chunked_threshold(usize::MAX)
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("a valid header")
}

fn text(status: u16, body: &str) -> Response<io::Cursor<Vec<u8>>> {
    Response::from_string(body)
        .with_status_code(status)
        .with_header(header("Content-Type", "text/plain; charset=utf-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_components_are_decoded() {
        assert_eq!(decode("worker%2D1+a%zz"), "worker-1 a%zz");
        assert_eq!(decode("%"), "%");
    }
}
