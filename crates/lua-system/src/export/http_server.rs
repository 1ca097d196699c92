//! `/metrics` and `/debug/pprof/heap` over HTTP for a set of states ([`serve`]), as Go services
//! expose them with `promhttp` and `net/http/pprof`: Prometheus scrapes the first, `go tool
//! pprof http://HOST:PORT/debug/pprof/heap` (or Pyroscope, Parca) reads the second.
//!
//! The server reads only [`WatchedStates`] (the module's counters and the profiler's samples),
//! never a Lua state, so the scripts run on while it answers. Nothing else is served: any other
//! path is 404, any method but GET and HEAD 405.
//!
//! Why an event loop: a pool of threads, each staying with its connection, is held by as many
//! clients as it has threads (a few greedy or idle clients locked every scraper out). Here
//! hyper's HTTP/1 server runs on a single-threaded tokio runtime that the server's own thread
//! owns: a connection costs a task, not a thread, and no runtime reaches the host. The bounds:
//!
//! * at most [`connection_cap`] connections; at the cap an idle one is closed to admit the
//!   newcomer ([`close_longest_idle`] says which), so a fresh client gets in whoever holds the
//!   others (one is refused only while every connection is being answered, which lasts an
//!   encoding);
//! * a request head of at most [`MAX_HEAD`] bytes and [`MAX_HEADERS`] headers (431 past
//!   either), complete within [`HEAD_DEADLINE`] of the connection's start or of its previous
//!   answer (hyper's header timer), which also closes kept-alive connections left idle;
//! * a write that makes no progress for [`WRITE_STALL`] closes the connection;
//! * heap profiles, whose size is the script's to choose, are encoded on a thread beside the
//!   loop ([`ENCODING_THREADS`]), so a slow one stalls no other client; one at a time, requests
//!   that arrive during an encoding get its result, and at most [`PROFILE_ANSWERS`] encoded
//!   profiles are alive at once (a slot is held until the last client has been sent its copy).
//!   `/metrics` is encoded on the loop: its cost is the host's number of states, which no
//!   client or script can raise.
//!
//! Dropping the [`MetricsServer`] closes the listener and the idle connections at once; answers
//! in flight get [`STOP_GRACE`] on the server's thread, which nothing waits for.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ACCEPT, ALLOW, CONTENT_DISPOSITION, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::task::AbortHandle;

use crate::export::watched_states::{Labels, WatchedStates};

/// The most connections open at once, whatever the descriptor limit allows.
const MAX_CONNECTIONS: usize = 1024;

/// Connections the kernel holds until they are accepted (it lowers it to its own maximum): a
/// burst of connections waits there rather than having its first packets dropped, which costs a
/// client a second before it tries again.
const BACKLOG: u32 = MAX_CONNECTIONS as u32;

/// The largest request head (request line and headers) read.
const MAX_HEAD: usize = 16 * 1024;

/// The most headers a request may have.
const MAX_HEADERS: usize = 64;

/// How long a client may take to send a request head, counted from the connection's start or
/// from its previous answer (a kept-alive connection idle that long is closed).
const HEAD_DEADLINE: Duration = Duration::from_secs(5);

/// How long a write may make no progress before the connection is dropped.
const WRITE_STALL: Duration = Duration::from_secs(5);

/// How long answers in flight may take once the server stops.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// How long dropping a [`MetricsServer`] waits for the server's thread to close its listener
/// (it takes a moment; the bound only covers a thread that died).
const STOP_ACK: Duration = Duration::from_secs(1);

/// Threads beside the loop that encode heap profiles. One: profiles are encoded one at a time,
/// and on one thread the allocator reuses the memory of the last encoding for the next.
const ENCODING_THREADS: usize = 1;

/// Encoded heap profiles alive at once (being encoded, or held by clients being sent them).
const PROFILE_ANSWERS: usize = 2;

/// How long accepting pauses after an error (the process out of descriptors, ...).
const ACCEPT_RETRY: Duration = Duration::from_millis(10);

/// What `/metrics` answers by default: the Prometheus text format 0.0.4.
const PROMETHEUS_TEXT: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// What `/metrics` answers a scraper that accepts it (Prometheus asks for it first).
const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

const PLAIN_TEXT: &str = "text/plain; charset=utf-8";

/// A running server (see [`serve`]); dropping it stops the server: the listener and the idle
/// connections close at once, and answers in flight get a second on the server's thread, which
/// the drop does not wait for.
pub struct MetricsServer {
    address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    listener_closed: std::sync::mpsc::Receiver<()>,
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
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Once this returns, the port is free again.
        let _ = self.listener_closed.recv_timeout(STOP_ACK);
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
///   than 0 and `seconds=N` (delta profiles) are refused with 400. Requests that arrive while a
///   profile is being encoded get that profile.
///
/// The server runs on a thread of its own (with a single-threaded tokio runtime of its own, so
/// none reaches the host) and stays bounded whatever its clients do: connections, request
/// heads, waits, threads and the memory of profile encodings (SECURITY.md, "What a host must
/// do", gives the bounds).
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
    let socket = bind(address)?;
    let address = socket.local_addr()?;
    let (stop, stopped) = oneshot::channel();
    let (closed, listener_closed) = std::sync::mpsc::channel();
    let (started, start) = std::sync::mpsc::sync_channel(1);
    // The runtime is made on the server's thread and stays there: a host inside a runtime of
    // its own never enters or drops this one.
    std::thread::Builder::new().name("lua-system http".into()).spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .max_blocking_threads(ENCODING_THREADS)
            .thread_name("lua-system http encoding")
            .build();
        let runtime = match runtime {
            Ok(runtime) => runtime,
            Err(error) => return drop(started.send(Err(error))),
        };
        let listener = {
            let _entered = runtime.enter();
            socket.listen(BACKLOG)
        };
        let listener = match listener {
            Ok(listener) => listener,
            Err(error) => return drop(started.send(Err(error))),
        };
        let _ = started.send(Ok(()));
        runtime.block_on(run(listener, states, stopped, closed));
        // An encoding still running finishes on its own; nothing waits for it.
        runtime.shutdown_background();
    })?;
    start.recv().unwrap_or_else(|_| Err(io::Error::other("the server's thread ended as it started")))?;
    Ok(MetricsServer { address, stop: Some(stop), listener_closed })
}

/// A socket bound to the first of `address`'s addresses that can be bound, as
/// `std::net::TcpListener::bind` binds, to listen with a backlog of our own.
fn bind(address: impl ToSocketAddrs) -> io::Result<TcpSocket> {
    let mut failed = io::Error::new(io::ErrorKind::InvalidInput, "could not resolve to any addresses");
    for address in address.to_socket_addrs()? {
        let socket = if address.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        match socket.bind(address) {
            Ok(()) => return Ok(socket),
            Err(error) => failed = error,
        }
    }
    Err(failed)
}

/// What every connection shares.
struct Server {
    states: Arc<WatchedStates>,
    http: hyper::server::conn::http1::Builder,
    profiles: Profiles,
    /// The zero of [`Seen`]'s times.
    epoch: Instant,
}

/// The server's life: accepts until told to stop, then closes the listener, lets answers in
/// flight finish within [`STOP_GRACE`], and returns (dropping every connection left).
async fn run(
    listener: TcpListener,
    states: Arc<WatchedStates>,
    stop: oneshot::Receiver<()>,
    listener_closed: std::sync::mpsc::Sender<()>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEAD_DEADLINE)
        .max_buf_size(MAX_HEAD)
        .max_header_size(MAX_HEAD)
        .max_headers(MAX_HEADERS)
        .title_case_headers(true);
    let server = Arc::new(Server { states, http, profiles: Profiles::new(), epoch: Instant::now() });
    let (closing, closing_seen) = watch::channel(false);
    // Each connection holds a sender: the receiver hears `None` once every connection ended.
    let (alive, mut connections) = mpsc::channel::<()>(1);
    let accepting = tokio::spawn(accept(listener, server, closing_seen, alive));
    // Told to stop, or the handle is gone: either way, stop.
    let _ = stop.await;
    accepting.abort();
    let _ = accepting.await;
    let _ = closing.send(true);
    let _ = listener_closed.send(());
    let _ = tokio::time::timeout(STOP_GRACE, connections.recv()).await;
}

/// A connection as the accepting task tracks it.
struct Open {
    seen: Arc<Seen>,
    task: AbortHandle,
}

/// Accepts connections, each served by a task of its own, within [`connection_cap`].
async fn accept(listener: TcpListener, server: Arc<Server>, closing: watch::Receiver<bool>, alive: mpsc::Sender<()>) {
    let cap = connection_cap();
    let mut open: Vec<Open> = Vec::with_capacity(cap);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of descriptors: make room, and let the process's own files have them
                // first. Any error: pause, so that one that repeats does not spin the loop.
                if out_of_descriptors(&error) {
                    open.retain(|connection| !connection.task.is_finished());
                    close_longest_idle(&mut open);
                }
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        open.retain(|connection| !connection.task.is_finished());
        if open.len() >= cap {
            if !close_longest_idle(&mut open) {
                continue; // every connection is being answered: this one is refused (closed)
            }
            // The closed connection's task ends (and its socket closes) before the next accept,
            // so descriptors stay within the cap.
            tokio::task::yield_now().await;
        }
        let seen = Arc::new(Seen::new(server.epoch));
        let task =
            tokio::spawn(connection(stream, Arc::clone(&server), Arc::clone(&seen), closing.clone(), alive.clone()));
        open.push(Open { seen, task: task.abort_handle() });
    }
}

/// Closes an idle connection, if there is one: of those that never sent a whole request, the
/// one silent the longest; else the kept-alive one silent the longest (scrapers that keep their
/// connection keep it through a flood of connections that send nothing). Whether one was.
fn close_longest_idle(open: &mut Vec<Open>) -> bool {
    let longest = open
        .iter()
        .enumerate()
        .filter(|(_, connection)| !connection.seen.answering.load(Ordering::Relaxed))
        .min_by_key(|(_, connection)| {
            (connection.seen.asked.load(Ordering::Relaxed), connection.seen.last.load(Ordering::Relaxed))
        })
        .map(|(index, _)| index);
    match longest {
        Some(index) => {
            open.swap_remove(index).task.abort();
            true
        }
        None => false,
    }
}

/// Connections open at once: [`MAX_CONNECTIONS`], or half the process's descriptors if that is
/// fewer, so that clients never take the descriptors the script and the host need.
fn connection_cap() -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    limit.map_or(MAX_CONNECTIONS, |limit| usize::try_from(limit / 2).unwrap_or(usize::MAX).clamp(1, MAX_CONNECTIONS))
}

fn out_of_descriptors(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

/// When a connection last made progress, whether it is being answered and whether it ever sent
/// a whole request: what the accepting task reads to choose the connection it closes at the cap.
struct Seen {
    epoch: Instant,
    /// Milliseconds from `epoch` to the last byte read or written.
    last: AtomicU64,
    answering: AtomicBool,
    asked: AtomicBool,
}

impl Seen {
    fn new(epoch: Instant) -> Seen {
        let seen =
            Seen { epoch, last: AtomicU64::new(0), answering: AtomicBool::new(false), asked: AtomicBool::new(false) };
        seen.now();
        seen
    }

    fn now(&self) {
        self.last.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// Marks a connection as being answered while it lives.
struct Answering(Arc<Seen>);

impl Answering {
    fn new(seen: Arc<Seen>) -> Answering {
        seen.answering.store(true, Ordering::Relaxed);
        seen.asked.store(true, Ordering::Relaxed);
        Answering(seen)
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.now();
        self.0.answering.store(false, Ordering::Relaxed);
    }
}

/// Serves one connection until it closes, breaks a bound, is closed to make room, or the
/// server stops (then an answer in flight finishes, and an idle connection closes at once).
async fn connection(
    stream: TcpStream,
    server: Arc<Server>,
    seen: Arc<Seen>,
    closing: watch::Receiver<bool>,
    _alive: mpsc::Sender<()>,
) {
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(Watched { stream, seen: Arc::clone(&seen), stalled: None });
    let service = hyper::service::service_fn(|request| {
        let (server, answering) = (Arc::clone(&server), Answering::new(Arc::clone(&seen)));
        async move {
            let response = server.answer(request).await;
            drop(answering);
            Ok::<_, Infallible>(response)
        }
    });
    let mut connection = pin!(server.http.serve_connection(io, service));
    let mut closing = closing;
    let mut stopping = pin!(closing.wait_for(|closing| *closing));
    let mut told = false;
    let _ = poll_fn(|cx| {
        if !told && stopping.as_mut().poll(cx).is_ready() {
            connection.as_mut().graceful_shutdown();
            told = true;
        }
        connection.as_mut().poll(cx)
    })
    .await;
}

/// A connection's socket, noting progress in [`Seen`] and failing a write that makes none for
/// [`WRITE_STALL`] (hyper has no write timeout).
struct Watched {
    stream: TcpStream,
    seen: Arc<Seen>,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Watched {
    /// What a write that could not proceed answers: wait, or fail once stalled too long.
    fn stall<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let stalled = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE_STALL)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::ErrorKind::TimedOut.into())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn wrote(&mut self, result: Poll<io::Result<usize>>, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        match result {
            Poll::Ready(result) => {
                self.stalled = None;
                if matches!(result, Ok(written) if written > 0) {
                    self.seen.now();
                }
                Poll::Ready(result)
            }
            Poll::Pending => self.stall(cx),
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.seen.now();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.wrote(result, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.wrote(result, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

impl Server {
    /// The answer to `request`.
    async fn answer(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let arrived = Instant::now();
        if request.method() != Method::GET && request.method() != Method::HEAD {
            let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
            response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        match request.uri().path() {
            "/metrics" => {
                let openmetrics =
                    request.headers().get_all(ACCEPT).iter().any(|value| {
                        String::from_utf8_lossy(value.as_bytes()).contains("application/openmetrics-text")
                    });
                let (content_type, text) = match openmetrics {
                    true => (OPENMETRICS_TEXT, self.states.to_openmetrics()),
                    false => (PROMETHEUS_TEXT, self.states.to_prometheus()),
                };
                whole(StatusCode::OK, content_type, text)
            }
            "/debug/pprof/heap" => {
                let selector = match selector(request.uri().query().unwrap_or("")) {
                    Ok(selector) => selector,
                    Err(why) => return plain(StatusCode::BAD_REQUEST, why),
                };
                match self.profiles.encoded(&self.states, selector, arrived).await {
                    Ok(profile) => {
                        let mut response = whole(StatusCode::OK, "application/octet-stream", profile);
                        let attachment = HeaderValue::from_static("attachment; filename=\"heap\"");
                        response.headers_mut().insert(CONTENT_DISPOSITION, attachment);
                        response
                    }
                    Err((status, why)) => whole(status, PLAIN_TEXT, why),
                }
            }
            _ => plain(StatusCode::NOT_FOUND, "404 page not found\n"),
        }
    }
}

/// An answer sent whole, with its length (for HEAD, hyper sends the head alone).
fn whole(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    whole(status, PLAIN_TEXT, text)
}

/// The states `/debug/pprof/heap?query` selects, sorted (the same selection is the same
/// profile), or why the query is refused. Go's parameters read as Go reads them: `debug` and
/// `seconds` as integers, empty or absent meaning 0.
fn selector(query: &str) -> Result<Labels, &'static str> {
    let mut selector = Labels::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (key, value) = (decode(key), decode(value));
        let number = || value.trim().parse::<i64>().ok().or(value.trim().is_empty().then_some(0));
        match key.as_str() {
            "debug" if number() != Some(0) => return Err("only debug=0 (pprof's format) is served\n"),
            "seconds" if number() != Some(0) => return Err("delta profiles (seconds=N) are not served\n"),
            "debug" | "seconds" | "gc" => {}
            _ => selector.push((key, value)),
        }
    }
    selector.sort();
    selector.dedup();
    Ok(selector)
}

/// Heap profiles being encoded and sent: one encoding at a time, and at most
/// [`PROFILE_ANSWERS`] encoded profiles alive.
struct Profiles {
    last: Mutex<Option<Encoded>>,
    answers: Arc<Semaphore>,
}

/// The last profile encoded.
struct Encoded {
    selector: Labels,
    finished: Instant,
    body: Bytes,
}

/// An encoded profile and its slot, which returns when the last copy of the answer is dropped
/// (sent, or its connection gone).
struct Answer {
    gzipped: Vec<u8>,
    _slot: OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Answer {
    fn as_ref(&self) -> &[u8] {
        &self.gzipped
    }
}

impl Profiles {
    fn new() -> Profiles {
        Profiles { last: Mutex::new(None), answers: Arc::new(Semaphore::new(PROFILE_ANSWERS)) }
    }

    /// The gzipped profile of the states `selector` selects, made after `arrived` or finished
    /// after it (then it was being encoded when the request arrived); or the status and reason
    /// it cannot be.
    async fn encoded(
        &self,
        states: &Arc<WatchedStates>,
        selector: Labels,
        arrived: Instant,
    ) -> Result<Bytes, (StatusCode, String)> {
        fn failed<E>(_: E) -> (StatusCode, String) {
            (StatusCode::INTERNAL_SERVER_ERROR, "the encoding failed\n".into())
        }
        let mut last = self.last.lock().await;
        if let Some(encoded) = last.as_ref().filter(|last| last.selector == selector && last.finished >= arrived) {
            return Ok(encoded.body.clone());
        }
        // Its slot returns once its clients have it.
        *last = None;
        let slot = Arc::clone(&self.answers).acquire_owned().await.map_err(failed)?;
        let states = Arc::clone(states);
        let chosen = selector.clone();
        let gzipped = tokio::task::spawn_blocking(move || {
            let selector: Vec<(&str, &str)> = chosen.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let mut gzipped = Vec::new();
            states.heap_profile(&selector).write_pprof(&mut gzipped).map(|()| gzipped)
        });
        let gzipped =
            gzipped.await.map_err(failed)?.map_err(|error| (StatusCode::BAD_REQUEST, format!("{error}\n")))?;
        let body = Bytes::from_owner(Answer { gzipped, _slot: slot });
        *last = Some(Encoded { selector, finished: Instant::now(), body: body.clone() });
        Ok(body)
    }
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
    fn profile_queries_are_read_as_gos_handler_reads_them() {
        let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert_eq!(
            selector("state=b&gc=1&debug=0&seconds=&state=a&state=a"),
            Ok(vec![pair("state", "a"), pair("state", "b")])
        );
        assert_eq!(selector("debug=1"), Err("only debug=0 (pprof's format) is served\n"));
        assert_eq!(selector("seconds=5"), Err("delta profiles (seconds=N) are not served\n"));
        assert_eq!(selector(""), Ok(vec![]));
    }
}
