//! The accept loop: hyper-util's HTTP/1.1 + HTTP/2 (prior knowledge) server, configured for an
//! LLM gateway rather than left at `axum::serve`'s defaults:
//!
//! - `TCP_NODELAY` on every accepted socket: streams are many small writes, and under Nagle's
//!   algorithm each chunk after the first waited for the client's delayed ACK (~40 ms per
//!   streamed response, 10× fewer streams per second; bench/results/profiling.md).
//! - HTTP/1 read buffer capped at [`READ_BUFFER`]: hyper's buffer otherwise grows to 16 KiB on
//!   the second read of every connection (the protocol sniff hands it 24 bytes first, and the
//!   next 8 KiB read then doubles it), 8 KiB more per open stream. The cap bounds a request's
//!   head (request line and headers) at 8 KiB, answered with 431 beyond; bodies are read in
//!   8 KiB pieces.
//! - Slow and idle clients are bounded ([`Limits`], from `GatewayConfig.settings.connections`):
//!   a request head must arrive within the header timeout (counted from the accept, or from the
//!   first byte of the next request on a kept-alive connection), a connection with no request in
//!   flight is closed after the idle timeout, and a body must arrive within the body timeout of
//!   its head (else 408). Beyond the connection cap a new connection is refused at once (a 503,
//!   then a close) while the open ones keep being served, so file descriptors never run out.
//!   hyper's own header timeout is off: it also runs while a connection is idle, so it cannot
//!   tell a slow head from a quiet keep-alive connection.
//! - Graceful shutdown: stop accepting, let each connection finish the request it is serving
//!   (idle keep-alive connections close at once), resolve when all are closed.
//!
//! This module must not know routes or requests' meaning: it sees connections, heads and bodies.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::response::IntoResponse;
use axum::Router;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Version};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use switchyard_config::{ConnectionsConfig, DEFAULT_MAX_CONNECTIONS};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tower::util::Oneshot;
use tower::ServiceExt;

use crate::{GatewayError, Metrics};

/// hyper's HTTP/1 read buffer, and so the largest request head (hyper's minimum).
pub const READ_BUFFER: usize = 8192;

/// How long an idle HTTP/2 connection gets to close after its GOAWAY before it is dropped.
const GOAWAY_GRACE: Duration = Duration::from_secs(1);

/// What a client connection may take. Read from the running config for each new connection, so
/// a changed setting applies to connections accepted after the swap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// From the accept, or from the first byte of a request on a kept-alive connection, to the
    /// end of the request head; then the connection is closed.
    pub header_read: Duration,
    /// A connection with no request in flight is closed after this.
    pub idle: Duration,
    /// From the request head to the end of its body; then 408 and the connection is closed.
    pub body_read: Duration,
    /// Connections open at once; more are refused.
    pub max_connections: usize,
}

impl Limits {
    /// The limits a config sets; an unset cap is half the open file limit (the other half is for
    /// upstream connections), at most [`DEFAULT_MAX_CONNECTIONS`].
    pub fn from_config(c: &ConnectionsConfig) -> Self {
        let ms = |v: u64| Duration::from_millis(v.max(1));
        Self {
            header_read: ms(c.header_read_timeout_ms),
            idle: ms(c.idle_timeout_ms),
            body_read: ms(c.body_read_timeout_ms),
            max_connections: c
                .max
                .map_or_else(default_max_connections, |m| usize::try_from(m).unwrap_or(usize::MAX)),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::from_config(&ConnectionsConfig::default())
    }
}

fn default_max_connections() -> usize {
    static MAX: OnceLock<usize> = OnceLock::new();
    *MAX.get_or_init(|| {
        let cap = DEFAULT_MAX_CONNECTIONS as usize;
        match rustix::process::getrlimit(rustix::process::Resource::Nofile).current {
            Some(files) => usize::try_from(files / 2).unwrap_or(cap).clamp(1, cap),
            None => cap,
        }
    })
}

/// Why a connection or a request was cut; the `kind` label of `switchyard_connection_timeouts_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timeout {
    Header,
    Idle,
    Body,
}

impl Timeout {
    fn label(self) -> &'static str {
        match self {
            Timeout::Header => "header",
            Timeout::Idle => "idle",
            Timeout::Body => "body",
        }
    }
}

/// Serves `app` on `listener` until `stop` resolves, then shuts down gracefully: resolves once
/// every connection has closed. `limits` is asked for each new connection.
pub async fn run(
    listener: TcpListener,
    app: Router,
    limits: impl Fn() -> Limits,
    metrics: Metrics,
    stop: impl Future<Output = ()>,
) -> io::Result<()> {
    // The tokenizer that counts prompts and streamed completions loads in about a second (more
    // in debug builds): loaded now, beside the first connections, rather than inside the first
    // request that counts tokens.
    tokio::task::spawn_blocking(crate::estimate::warm);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .max_buf_size(READ_BUFFER)
        .header_read_timeout(None::<Duration>);
    let open = Arc::new(AtomicUsize::new(0));
    let stopping = CancellationToken::new();
    // Each connection task holds a sender; `recv` returns `None` once all have ended.
    let (alive, mut all_closed) = tokio::sync::mpsc::channel::<()>(1);
    let mut stop = std::pin::pin!(stop);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => break,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                accept_error(e).await;
                continue;
            }
        };
        let limits = limits();
        if open.load(Ordering::Acquire) >= limits.max_connections {
            refuse(&tcp);
            metrics.connections_refused.inc();
            continue;
        }
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let counted = Open::new(&open, &metrics);
        let conn = Arc::new(Conn::new(limits, metrics.clone()));
        let io = TokioIo::new(Watched {
            tcp,
            conn: conn.clone(),
        });
        let service = Serve {
            app: app.clone(),
            conn: conn.clone(),
        };
        // Boxed once: moved by value into the task and then into `watch`, each async frame would
        // keep a slot of its own for it (hyper-util's connection is ~1.5 KiB, sized for HTTP/2
        // even when it serves HTTP/1), and a task lives as long as its connection.
        let connection = Box::pin(builder.serve_connection(io, service).into_owned());
        let (stopping, alive) = (stopping.clone(), alive.clone());
        tokio::spawn(async move {
            watch(connection, &conn, &stopping).await;
            drop((counted, alive));
        });
    }
    drop(listener);
    stopping.cancel();
    drop(alive);
    let _ = all_closed.recv().await;
    Ok(())
}

/// A failed accept: a connection reset before it was accepted is nothing; anything else (out of
/// file descriptors, say) is logged and retried after a pause, as hyper's and axum's servers do.
async fn accept_error(e: io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset) {
        return;
    }
    tracing::error!(error = %e, "accept failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// A connection over the cap: a 503 in the OpenAI error shape if the socket takes it at once
/// (never waited for), then the close.
fn refuse(tcp: &TcpStream) {
    static REFUSAL: OnceLock<Vec<u8>> = OnceLock::new();
    let bytes = REFUSAL.get_or_init(|| {
        let body = GatewayError::unavailable("The gateway is serving as many connections as it allows; retry shortly.")
            .body()
            .to_string();
        format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    });
    let _ = tcp.try_write(bytes);
}

/// One open connection in `switchyard_connections_open` and the cap's count, until dropped.
struct Open {
    count: Arc<AtomicUsize>,
    gauge: prometheus::IntGauge,
}

impl Open {
    fn new(count: &Arc<AtomicUsize>, metrics: &Metrics) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        metrics.connections_open.inc();
        Self {
            count: count.clone(),
            gauge: metrics.connections_open.clone(),
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
        self.gauge.dec();
    }
}

/// What a connection is doing, for its deadlines. Written by the socket reader (a head begins),
/// the service (a request begins) and the response body (a request ends); read by [`watch`].
/// Times are milliseconds after `born`.
struct Conn {
    born: Instant,
    limits: Limits,
    metrics: Metrics,
    /// Requests (HTTP/2: streams) from their head to the end of their response.
    in_flight: AtomicU32,
    /// When the last request in flight ended.
    idle_since: AtomicU64,
    /// When the bytes of the next head began to arrive, plus 1; 0 while none has.
    head_since: AtomicU64,
    /// Idle, and nothing read since: the next byte read begins a head.
    awaiting_head: AtomicBool,
    /// A head began since [`watch`] last looked.
    head_news: AtomicBool,
    /// HTTP/2: bytes between streams are frames (pings, window updates), not heads.
    h2: AtomicBool,
}

impl Conn {
    fn new(limits: Limits, metrics: Metrics) -> Self {
        Self {
            born: Instant::now(),
            limits,
            metrics,
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(0),
            // A new connection is reading its first head from the start.
            head_since: AtomicU64::new(1),
            awaiting_head: AtomicBool::new(false),
            head_news: AtomicBool::new(false),
            h2: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn at(&self, ms: u64) -> Instant {
        self.born + Duration::from_millis(ms)
    }

    fn bytes_read(&self) {
        if self.awaiting_head.load(Ordering::Relaxed) {
            self.awaiting_head.store(false, Ordering::Relaxed);
            self.head_since.store(self.now_ms() + 1, Ordering::Release);
            self.head_news.store(true, Ordering::Release);
        }
    }

    fn request_started(&self, version: Version) {
        if version == Version::HTTP_2 {
            self.h2.store(true, Ordering::Relaxed);
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    fn request_ended(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle_since.store(self.now_ms(), Ordering::Release);
            self.head_since.store(0, Ordering::Release);
            self.awaiting_head.store(true, Ordering::Release);
        }
    }

    /// The next deadline and what it enforces; `None`: only a time to look again (a request is
    /// in flight, and its end is not signalled: looking again an idle timeout later is soon
    /// enough to close the connection an idle timeout after that end).
    fn deadline(&self) -> (Instant, Option<Timeout>) {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return (Instant::now() + self.limits.idle, None);
        }
        let head = self.head_since.load(Ordering::Acquire);
        if head != 0 && !self.h2.load(Ordering::Relaxed) {
            return (self.at(head - 1) + self.limits.header_read, Some(Timeout::Header));
        }
        let idle = self.idle_since.load(Ordering::Acquire);
        (self.at(idle) + self.limits.idle, Some(Timeout::Idle))
    }

    fn timed_out(&self, kind: Timeout) {
        self.metrics
            .connection_timeouts
            .with_label_values(&[kind.label()])
            .inc();
    }
}

type Connection = auto::Connection<'static, TokioIo<Watched>, Serve, TokioExecutor>;

/// Drives one connection to its end, closing it at its deadlines and shutting it down
/// gracefully once `stopping` is cancelled.
async fn watch(mut connection: Pin<Box<Connection>>, conn: &Conn, stopping: &CancellationToken) {
    let mut stopped = std::pin::pin!(stopping.cancelled());
    let mut sleep = std::pin::pin!(tokio::time::sleep_until(conn.deadline().0));
    let mut registered = false;
    let mut shutting_down = false;
    // Set once an idle connection was asked to close: drop it at this instant if it has not.
    let mut closing_by: Option<Instant> = None;
    let ended = std::future::poll_fn(|cx| loop {
        if let Poll::Ready(result) = connection.as_mut().poll(cx) {
            return Poll::Ready(result.err());
        }
        // Registered once: the task's waker does not change, and a flag check is cheaper than a
        // poll on every wake-up of a busy connection.
        if !registered {
            let _ = stopped.as_mut().poll(cx);
            registered = true;
        }
        if !shutting_down && stopping.is_cancelled() {
            shutting_down = true;
            connection.as_mut().graceful_shutdown();
            continue;
        }
        if conn.head_news.load(Ordering::Acquire) && closing_by.is_none() {
            conn.head_news.store(false, Ordering::Relaxed);
            sleep.as_mut().reset(conn.deadline().0);
        }
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        if closing_by.is_some() {
            return Poll::Ready(None);
        }
        match conn.deadline() {
            (at, _) if at > Instant::now() => sleep.as_mut().reset(at),
            (_, None) => sleep.as_mut().reset(Instant::now() + conn.limits.idle),
            (_, Some(Timeout::Header)) => {
                conn.timed_out(Timeout::Header);
                tracing::debug!("closing a connection whose request head did not arrive in time");
                return Poll::Ready(None);
            }
            (_, Some(_)) => {
                conn.timed_out(Timeout::Idle);
                // HTTP/1: closes at once; HTTP/2: a GOAWAY first, so the client opens a new one.
                connection.as_mut().graceful_shutdown();
                let by = Instant::now() + GOAWAY_GRACE;
                closing_by = Some(by);
                sleep.as_mut().reset(by);
            }
        }
    })
    .await;
    if let Some(e) = ended {
        tracing::trace!(error = %e, "connection ended with an error");
    }
}

/// The socket, telling [`Conn`] when the bytes of a new head arrive.
struct Watched {
    tcp: TcpStream,
    conn: Arc<Conn>,
}

impl AsyncRead for Watched {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.tcp).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.conn.bytes_read();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// The app, with each request's body under its deadline and each request counted in flight.
#[derive(Clone)]
struct Serve {
    app: Router,
    conn: Arc<Conn>,
}

/// One request from its head to the end of its response (the last of the request body, the
/// response future and the response body to be dropped).
struct InFlight {
    conn: Arc<Conn>,
    version: Version,
    body_timed_out: AtomicBool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.conn.request_ended();
    }
}

impl hyper::service::Service<Request<Incoming>> for Serve {
    type Response = Response<Tracked>;
    type Error = Infallible;
    type Future = Respond;

    fn call(&self, req: Request<Incoming>) -> Respond {
        self.conn.request_started(req.version());
        let request = Arc::new(InFlight {
            conn: self.conn.clone(),
            version: req.version(),
            body_timed_out: AtomicBool::new(false),
        });
        let deadline = Instant::now() + self.conn.limits.body_read;
        let req = req.map(|body| {
            Body::new(Deadline {
                body,
                deadline,
                sleep: None,
                request: request.clone(),
            })
        });
        Respond {
            inner: self.app.clone().oneshot(req),
            request: Some(request),
        }
    }
}

/// The app's response, replaced by a 408 when the request body missed its deadline (the app
/// then saw a body error and answered whatever it answers to one).
struct Respond {
    inner: Oneshot<Router, Request<Body>>,
    request: Option<Arc<InFlight>>,
}

impl Future for Respond {
    type Output = Result<Response<Tracked>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let response = match ready!(Pin::new(&mut this.inner).poll(cx)) {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let request = this.request.take();
        let response = match &request {
            Some(r) if r.body_timed_out.load(Ordering::Acquire) => body_timeout_response(r),
            _ => response,
        };
        Poll::Ready(Ok(response.map(|body| Tracked {
            body,
            _request: request,
        })))
    }
}

fn body_timeout_response(request: &InFlight) -> Response<Body> {
    let mut response = GatewayError {
        status: StatusCode::REQUEST_TIMEOUT,
        message: format!(
            "The request body did not arrive within {} ms of its headers.",
            request.conn.limits.body_read.as_millis()
        ),
        kind: "invalid_request_error",
        code: Some("request_timeout".into()),
        param: None,
        retry_after: None,
    }
    .into_response();
    // The rest of the body is still on its way: the connection cannot carry another request.
    if request.version < Version::HTTP_2 {
        response
            .headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A request body that fails once its deadline passes while it waits for the client. The sleep
/// is made only when the body is not all there already (most are read with their head).
struct Deadline {
    body: Incoming,
    deadline: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
    request: Arc<InFlight>,
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error(transparent)]
    Read(hyper::Error),
    #[error("the request body did not arrive in time")]
    TimedOut,
}

impl http_body::Body for Deadline {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            if frame.is_none() {
                this.sleep = None;
            }
            return Poll::Ready(frame.map(|f| f.map_err(BodyError::Read)));
        }
        let deadline = this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        ready!(sleep.as_mut().poll(cx));
        if !this.request.body_timed_out.swap(true, Ordering::AcqRel) {
            this.request.conn.timed_out(Timeout::Body);
        }
        Poll::Ready(Some(Err(BodyError::TimedOut)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The response body, holding its request in flight until it is dropped.
struct Tracked {
    body: Body,
    _request: Option<Arc<InFlight>>,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests;
