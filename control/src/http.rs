//! The HTTP server of the control API: an accept loop over hyper with
//! timeouts, size limits and a connection cap that idle clients cannot use
//! to lock others out. Plain HTTP/1.1, or with `tls_cert` HTTPS
//! ([`crate::tls`]): HTTP/2 or HTTP/1.1 as ALPN agrees, the handshake
//! bounded by the header timeout.
//!
//! * **Connection cap** ([`HttpConfig::max_connections`]). When it is
//!   reached, a new connection closes the open connection that has been
//!   idle the longest (no request in flight: waiting for its first or next
//!   request, or dribbling a request head), so a client holding many idle
//!   connections cannot keep a load balancer's `/healthz` probe out. Only
//!   when every connection has a request in flight is the new one refused:
//!   it gets a best-effort `503 {"code": "too_many_connections"}` and is
//!   closed.
//! * **Header timeout** ([`HttpConfig::header_timeout_secs`]): a request
//!   head must arrive completely within it, counted from the connection's
//!   start or from the first byte of a later request. hyper's own
//!   `header_read_timeout` is off: hyper 1.x starts it whenever it waits for
//!   a head, idle keep-alive time included, which would fold the idle
//!   timeout into it. The connection task watches its socket's reads
//!   instead.
//! * **Idle timeout** ([`HttpConfig::idle_timeout_secs`]): a keep-alive
//!   connection waiting for its next request is closed after it.
//! * **Request timeout** ([`HttpConfig::request_timeout_secs`]): from the
//!   parsed head to the answer, reading the body included; a request over
//!   it (a stalled body, say) is answered 408
//!   ([`ApiError::RequestTimeout`]) with `Connection: close`.
//! * **Head size** ([`HttpConfig::max_header_bytes`],
//!   [`HttpConfig::max_headers`]): hyper answers 431 and closes.
//! * **Body size**: a `Content-Length` over [`MAX_BODY_BYTES`] is answered
//!   413 before the token check and the connection closed unread
//!   ([`refuse_oversized`], a route layer of [`crate::api::app`]); a
//!   chunked body is cut at the limit while it is read.
//!
//! * **Streaming answers** (`GET /v1/events`): a handler marks a response
//!   whose body goes on for as long as the client listens with
//!   [`Streaming`]. Its request then stays in flight until the body ends,
//!   so neither the idle timeout nor eviction closes the connection under
//!   a live stream (the request timeout only bounds producing the answer's
//!   head). Such a stream ends when the client goes away or at shutdown
//!   ([`crate::events::Events::close`]); any other answer's request ends
//!   once its head is produced, as before.
//!
//! Each connection runs in its own task of a [`JoinSet`] owned by the
//! accept loop, so aborting the server task aborts every connection. On
//! shutdown the loop stops accepting, closes idle connections at once and
//! lets the ones with a request in flight finish theirs.
//!
//! The counters are [`HttpStats`], rendered by [`crate::metrics::render_http`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinSet;
use tower::ServiceExt as _;

use crate::config::HttpConfig;
use crate::error::{ApiError, MAX_BODY_BYTES};
use crate::tls::{Negotiated, ServerTls};

/// Descriptors kept free for everything but HTTP connections (media
/// sockets, the listener, logs, files) when the connection cap is fitted
/// under the open-file limit.
pub const RESERVED_FDS: u64 = 64;

/// How long the accept loop pauses after an accept error such as `EMFILE`,
/// so it does not spin while no descriptor is free.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(20);

/// How long the accept loop waits for an evicted connection to close (it
/// closes at once unless a request slipped in; then it finishes that one).
const EVICTION_WAIT: Duration = Duration::from_millis(100);

/// A response extension: the body streams until the client goes away or
/// the node shuts down, and the connection is busy until then (see the
/// [module documentation](self)).
#[derive(Debug, Clone, Copy)]
pub struct Streaming;

/// Counters of the HTTP server, for `/metrics`.
#[derive(Debug, Default)]
pub struct HttpStats {
    open: AtomicU64,
    accepted: AtomicU64,
    evicted: AtomicU64,
    refused: AtomicU64,
    accept_errors: AtomicU64,
    header_timeouts: AtomicU64,
    idle_timeouts: AtomicU64,
    request_timeouts: AtomicU64,
}

/// A snapshot of [`HttpStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpCounts {
    /// Connections open now.
    pub open: u64,
    /// Connections accepted.
    pub accepted: u64,
    /// Idle connections closed to admit a new one at the cap.
    pub evicted: u64,
    /// Connections refused at the cap (every one had a request in flight).
    pub refused: u64,
    /// Failed `accept` calls (e.g. `EMFILE`).
    pub accept_errors: u64,
    /// Connections closed for a request head not received in time.
    pub header_timeouts: u64,
    /// Keep-alive connections closed for waiting too long.
    pub idle_timeouts: u64,
    /// Requests answered 408.
    pub request_timeouts: u64,
}

impl HttpStats {
    /// The counters now.
    pub fn counts(&self) -> HttpCounts {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        HttpCounts {
            open: read(&self.open),
            accepted: read(&self.accepted),
            evicted: read(&self.evicted),
            refused: read(&self.refused),
            accept_errors: read(&self.accept_errors),
            header_timeouts: read(&self.header_timeouts),
            idle_timeouts: read(&self.idle_timeouts),
            request_timeouts: read(&self.request_timeouts),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The server's limits, as durations.
#[derive(Debug, Clone, Copy)]
struct Limits {
    header: Duration,
    request: Duration,
    idle: Duration,
    max_connections: usize,
    max_header_bytes: usize,
    max_headers: usize,
}

impl Limits {
    fn new(config: &HttpConfig, max_connections: usize) -> Self {
        Self {
            header: Duration::from_secs(config.header_timeout_secs),
            request: Duration::from_secs(config.request_timeout_secs),
            idle: Duration::from_secs(config.idle_timeout_secs),
            max_connections: max_connections.max(1),
            max_header_bytes: config.max_header_bytes,
            max_headers: config.max_headers,
        }
    }
}

/// The connection cap that fits under an open-file soft limit of `nofile`
/// with [`RESERVED_FDS`] to spare (at least 1), and whether `wanted` had to
/// be lowered to it.
pub fn fit_connection_cap(wanted: usize, nofile: u64) -> (usize, bool) {
    let room = usize::try_from(nofile.saturating_sub(RESERVED_FDS).max(1)).unwrap_or(usize::MAX);
    if wanted > room {
        (room, true)
    } else {
        (wanted, false)
    }
}

/// Serves `app` on `listener` with the limits of `config` (the connection
/// cap being `max_connections`) until `stop` fires or its sender is
/// dropped; then stops accepting, closes idle connections and waits for
/// the requests in flight.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    config: &HttpConfig,
    max_connections: usize,
    stats: Arc<HttpStats>,
    tls: Option<Arc<ServerTls>>,
    mut stop: oneshot::Receiver<()>,
) -> io::Result<()> {
    let limits = Limits::new(config, max_connections);
    let table = Arc::new(Table::new(limits.max_connections));
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut last_error_log: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => accepted,
        };
        while tasks.try_join_next().is_some() {}
        let (stream, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                bump(&stats.accept_errors);
                if last_error_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    tracing::warn!(error = %e, "accept failed");
                    last_error_log = Some(Instant::now());
                }
                tokio::select! {
                    _ = &mut stop => break,
                    () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let conn = match table.admit() {
            Admission::Admitted(conn) => conn,
            Admission::Evicting { conn, victim } => {
                bump(&stats.evicted);
                // Wait until the victim's socket is closed, so a flood of
                // connections cannot hold more descriptors than the cap
                // (plus the one being admitted) while the victims' tasks
                // have not run yet.
                let mut closed = victim.closed.subscribe();
                let _ = tokio::time::timeout(EVICTION_WAIT, closed.wait_for(|c| *c)).await;
                conn
            }
            Admission::Full => {
                bump(&stats.refused);
                // Plain text in a TLS socket helps nobody: just close.
                if tls.is_none() {
                    refuse(&stream);
                }
                continue;
            }
        };
        bump(&stats.accepted);
        stats.open.fetch_add(1, Ordering::Relaxed);
        let open = OpenGuard {
            table: Arc::clone(&table),
            conn: Arc::clone(&conn),
            stats: Arc::clone(&stats),
        };
        let connection = Connection {
            app: app.clone(),
            limits,
            conn,
            remote,
            stats: Arc::clone(&stats),
            shutdown: shutdown_rx.clone(),
        };
        let tls = tls.clone();
        tasks.spawn(async move {
            let _open = open;
            connection.run(stream, tls).await;
        });
    }
    drop(listener);
    let _ = shutdown.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Writes a 503 without waiting (the socket buffer of a new connection has
/// room) and drops the connection.
fn refuse(stream: &TcpStream) {
    const BODY: &str = r#"{"error":"too many open connections","code":"too_many_connections"}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = stream.try_write(answer.as_bytes());
}

/// The open connections, for the cap and eviction.
#[derive(Debug)]
struct Table {
    conns: Mutex<HashMap<u64, Arc<ConnState>>>,
    next_id: AtomicU64,
    max: usize,
    epoch: Instant,
}

enum Admission {
    Admitted(Arc<ConnState>),
    /// Admitted, after telling `victim`, idle the longest, to close.
    Evicting {
        conn: Arc<ConnState>,
        victim: Arc<ConnState>,
    },
    Full,
}

impl Table {
    fn new(max: usize) -> Self {
        Self {
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            max,
            epoch: Instant::now(),
        }
    }

    fn admit(&self) -> Admission {
        let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        let mut evicted = None;
        if conns.len() >= self.max {
            let idlest = conns
                .values()
                .filter(|c| c.in_flight.load(Ordering::Acquire) == 0)
                .min_by_key(|c| c.last_active.load(Ordering::Relaxed))
                .map(|c| c.id);
            let Some(victim) = idlest.and_then(|id| conns.remove(&id)) else {
                return Admission::Full;
            };
            victim.evict.notify_one();
            evicted = Some(victim);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(ConnState::new(id, self.epoch));
        conns.insert(id, Arc::clone(&conn));
        match evicted {
            Some(victim) => Admission::Evicting { conn, victim },
            None => Admission::Admitted(conn),
        }
    }

    fn remove(&self, id: u64) {
        self.conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }
}

/// Removes a finished connection (its socket closed) from the table and
/// the open gauge, and tells an accept loop waiting for it.
struct OpenGuard {
    table: Arc<Table>,
    conn: Arc<ConnState>,
    stats: Arc<HttpStats>,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.table.remove(self.conn.id);
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
        self.conn.closed.send_replace(true);
    }
}

/// No head in progress (in [`ConnState::head_started`]).
const NO_HEAD: u64 = u64::MAX;

/// What the accept loop and the connection's task share. Times are
/// milliseconds since the table's epoch.
#[derive(Debug)]
struct ConnState {
    id: u64,
    epoch: Instant,
    /// Requests whose answer is not produced yet (0 or 1 in HTTP/1.1).
    in_flight: AtomicUsize,
    /// When the connection last finished a request (or was accepted).
    last_active: AtomicU64,
    /// When the current request head started: the connection's start, or
    /// the first byte read while idle; [`NO_HEAD`] while idle or busy.
    head_started: AtomicU64,
    /// Told to close by [`Table::admit`].
    evict: Notify,
    /// Set once the connection's socket is closed.
    closed: watch::Sender<bool>,
}

/// Why a connection's timer closed it.
enum Expired {
    Header,
    Idle,
}

impl ConnState {
    fn new(id: u64, epoch: Instant) -> Self {
        let now = millis_since(epoch);
        Self {
            id,
            epoch,
            in_flight: AtomicUsize::new(0),
            last_active: AtomicU64::new(now),
            head_started: AtomicU64::new(now),
            evict: Notify::new(),
            closed: watch::Sender::new(false),
        }
    }

    fn now(&self) -> u64 {
        millis_since(self.epoch)
    }

    /// Bytes arrived: while idle they start a request head.
    fn on_read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0 {
            let now = self.now();
            let _ = self.head_started.compare_exchange(
                NO_HEAD,
                now,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
    }

    /// The time this connection's timer should look again, and whether it
    /// has expired by `now`.
    fn deadline(&self, limits: &Limits, now: u64) -> (u64, Option<Expired>) {
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        if self.in_flight.load(Ordering::Acquire) > 0 {
            // The request timeout runs in the service; look again later.
            return (now.saturating_add(millis(limits.request)), None);
        }
        let head = self.head_started.load(Ordering::Acquire);
        let (at, why) = if head == NO_HEAD {
            let idle_since = self.last_active.load(Ordering::Relaxed);
            (
                idle_since.saturating_add(millis(limits.idle)),
                Expired::Idle,
            )
        } else {
            (head.saturating_add(millis(limits.header)), Expired::Header)
        };
        (at, (now >= at).then_some(why))
    }
}

fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Marks a request in flight for as long as it lives.
struct Busy(Arc<ConnState>);

impl Busy {
    fn new(conn: &Arc<ConnState>) -> Self {
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        conn.head_started.store(NO_HEAD, Ordering::Release);
        Self(Arc::clone(conn))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.last_active.store(self.0.now(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A streaming body that keeps its request in flight while it lives.
struct BusyBody {
    body: axum::body::Body,
    _busy: Busy,
}

impl hyper::body::Body for BusyBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// One accepted connection and what its task needs.
struct Connection {
    app: Router,
    limits: Limits,
    conn: Arc<ConnState>,
    remote: SocketAddr,
    stats: Arc<HttpStats>,
    shutdown: watch::Receiver<bool>,
}

impl Connection {
    /// Serves the connection (after the TLS handshake when `tls` is set,
    /// in the protocol ALPN agreed) until hyper closes it, a timer or
    /// eviction closes it, or shutdown lets its request finish.
    async fn run(self, stream: TcpStream, tls: Option<Arc<ServerTls>>) {
        let watched = Watched {
            inner: stream,
            conn: Arc::clone(&self.conn),
            heads: true,
        };
        let Some(tls) = tls else {
            let served = self
                .http1()
                .serve_connection(TokioIo::new(watched), self.service());
            return self.drive(served).await;
        };
        // The handshake is the first part of the request head: it has the
        // header timeout, and eviction or shutdown closes a connection
        // still in it at once (an idle connection, for the cap).
        let mut shutdown = self.shutdown.clone();
        let handshake = tokio::time::timeout(self.limits.header, tls.acceptor().accept(watched));
        let stream = tokio::select! {
            done = handshake => match done {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(remote = %self.remote, error = %e, "TLS handshake failed");
                    return bump(&tls.stats.handshake_failures);
                }
                Err(_) => {
                    bump(&self.stats.header_timeouts);
                    return bump(&tls.stats.handshake_failures);
                }
            },
            () = self.conn.evict.notified() => return bump(&tls.stats.handshake_failures),
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        bump(&tls.stats.handshakes);
        match crate::tls::negotiated(stream.get_ref().1) {
            Negotiated::Http1 => {
                let served = self
                    .http1()
                    .serve_connection(TokioIo::new(stream), self.service());
                self.drive(served).await;
            }
            Negotiated::Http2 => {
                let mut stream = stream;
                // HTTP/2 reads frames between requests (pings, window
                // updates): they do not start a request head; the idle and
                // request timeouts bound an HTTP/2 connection.
                stream.get_mut().0.heads = false;
                let mut builder = http2::Builder::new(TokioExecutor::new());
                // Flow-control windows and send buffers sized to the API's
                // bodies, so one connection's 32 streams hold about what
                // 32 HTTP/1.1 requests would, not hyper's megabytes.
                builder
                    .timer(TokioTimer::new())
                    .initial_stream_window_size(H2_WINDOW)
                    .initial_connection_window_size(2 * H2_WINDOW)
                    .max_send_buf_size(H2_WINDOW as usize)
                    .max_concurrent_streams(H2_MAX_STREAMS)
                    .max_header_list_size(
                        u32::try_from(self.limits.max_header_bytes).unwrap_or(u32::MAX),
                    );
                let served = builder.serve_connection(TokioIo::new(stream), self.service());
                self.drive(served).await;
            }
        }
    }

    /// The HTTP/1.1 connection builder with the server's limits.
    fn http1(&self) -> http1::Builder {
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            .keep_alive(true)
            .max_headers(self.limits.max_headers)
            .max_header_size(self.limits.max_header_bytes);
        builder
    }

    /// The service of one connection: the app with the request timeout,
    /// each request marked in flight while its answer is produced.
    fn service(
        &self,
    ) -> impl hyper::service::Service<
        hyper::Request<Incoming>,
        Response = Response,
        Error = Infallible,
        Future = impl Future<Output = Result<Response, Infallible>> + Send + 'static,
    > + Clone
    + Send
    + 'static {
        let app = self.app.clone();
        let conn = Arc::clone(&self.conn);
        let stats = Arc::clone(&self.stats);
        let (remote, request_timeout) = (self.remote, self.limits.request);
        hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            let busy = Busy::new(&conn);
            req.extensions_mut().insert(ConnectInfo(remote));
            let app = app.clone();
            let stats = Arc::clone(&stats);
            async move {
                match tokio::time::timeout(request_timeout, app.oneshot(req)).await {
                    Ok(Ok(mut response)) => {
                        if response.extensions_mut().remove::<Streaming>().is_some() {
                            // Busy until hyper drops the finished (or
                            // abandoned) body.
                            response = response
                                .map(|body| axum::body::Body::new(BusyBody { body, _busy: busy }));
                        }
                        Ok::<_, Infallible>(response)
                    }
                    Ok(Err(never)) => match never {},
                    Err(_) => {
                        bump(&stats.request_timeouts);
                        Ok(ApiError::RequestTimeout.into_response())
                    }
                }
            }
        })
    }

    /// Runs `served` under the connection's timers, eviction and shutdown.
    async fn drive<C: Graceful>(mut self, served: C) {
        tokio::pin!(served);
        let mut closing = false;
        loop {
            let now = self.conn.now();
            let (at, expired) = self.conn.deadline(&self.limits, now);
            match expired {
                Some(Expired::Header) => return bump(&self.stats.header_timeouts),
                Some(Expired::Idle) => return bump(&self.stats.idle_timeouts),
                None => {}
            }
            let sleep = tokio::time::sleep(Duration::from_millis(at - now));
            tokio::select! {
                result = served.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(remote = %self.remote, error = %e, "HTTP connection ended");
                    }
                    return;
                }
                () = self.conn.evict.notified(), if !closing => {}
                changed = self.shutdown.changed(), if !closing => {
                    if changed.is_ok() && !*self.shutdown.borrow() {
                        continue;
                    }
                }
                () = sleep, if !closing => continue,
            }
            // Evicted or shutting down: close now if idle, else after the request.
            if self.conn.in_flight.load(Ordering::Acquire) == 0 {
                return;
            }
            served.as_mut().shutdown();
            closing = true;
        }
    }
}

/// Concurrent requests on one HTTP/2 connection.
const H2_MAX_STREAMS: u32 = 32;

/// HTTP/2 flow-control window of a stream (twice that per connection)
/// and send buffer per stream: a request body's limit.
const H2_WINDOW: u32 = MAX_BODY_BYTES as u32;

/// A hyper server connection that can be shut down gracefully.
trait Graceful: Future<Output = Result<(), hyper::Error>> {
    fn shutdown(self: Pin<&mut Self>);
}

impl<I, S> Graceful for http1::Connection<I, S>
where
    S: hyper::service::HttpService<Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn shutdown(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, E> Graceful for http2::Connection<I, S, E>
where
    S: hyper::service::HttpService<Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn shutdown(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// A TCP stream that tells its [`ConnState`] when bytes arrive.
struct Watched {
    inner: TcpStream,
    conn: Arc<ConnState>,
    /// Whether bytes read while idle start a request head (HTTP/1.1).
    heads: bool,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if self.heads && matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.on_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Route layer: answers 413 (with `Connection: close`) to a request whose
/// `Content-Length` is over [`MAX_BODY_BYTES`] before anything reads its
/// body or checks its token; hyper then closes the connection without
/// reading the body.
pub async fn refuse_oversized(req: Request, next: Next) -> Response {
    let oversized = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|n| n > MAX_BODY_BYTES as u64);
    if !oversized {
        return next.run(req).await;
    }
    let mut response = ApiError::PayloadTooLarge.into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_cap_fits_under_the_descriptor_limit() {
        assert_eq!(fit_connection_cap(1024, 1_048_576), (1024, false));
        assert_eq!(fit_connection_cap(1024, 1024), (960, true));
        assert_eq!(fit_connection_cap(1024, 10), (1, true));
    }

    #[test]
    fn the_idlest_connection_is_evicted_and_busy_ones_never() {
        let table = Table::new(2);
        let Admission::Admitted(a) = table.admit() else {
            panic!("room for a")
        };
        let Admission::Admitted(b) = table.admit() else {
            panic!("room for b")
        };
        // a served a request recently; b never did: b is idle longest.
        a.last_active.store(10, Ordering::Relaxed);
        b.last_active.store(5, Ordering::Relaxed);
        let Admission::Evicting { conn: c, victim } = table.admit() else {
            panic!("b is evicted for c")
        };
        assert_eq!(victim.id, b.id);
        let ids: Vec<u64> = {
            let mut ids: Vec<u64> = table
                .conns
                .lock()
                .expect("not poisoned")
                .keys()
                .copied()
                .collect();
            ids.sort_unstable();
            ids
        };
        assert_eq!(ids, vec![a.id, c.id]);
        // Both remaining connections busy: the next one is refused.
        let _busy_a = Busy::new(&a);
        let _busy_c = Busy::new(&c);
        assert!(matches!(table.admit(), Admission::Full));
    }
}
