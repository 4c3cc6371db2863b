//! The HTTP client for calls to providers: hyper-util's pooled client over rustls (Mozilla's
//! roots through webpki-roots, HTTP/2 where the provider offers it by ALPN), used directly.
//! Through reqwest the same call cost about a fifth more CPU: reqwest 0.12 parses the URL twice
//! more per request (its redirect layer runs even with redirects off) and adds a layer of boxed
//! futures (bench/results/profiling.md).
//!
//! HTTP/2 carries every request to a host on one connection, and a server takes at most its
//! `SETTINGS_MAX_CONCURRENT_STREAMS` at once (100 at Google, 128-256 at others): hyper's pool
//! keeps one HTTP/2 connection per host and queues the requests beyond that limit until a stream
//! ends, which for LLM streams means minutes. So requests go out on [`Lanes`]: clients with pools
//! of their own, each carrying at most [`LANE_STREAMS`] requests before the next lane (a new
//! connection to an HTTP/2 host) is used. For HTTP/1.1 hosts a lane is one more pool.
//!
//! Which HTTP version is spoken is the Provider's `httpVersion`: `auto` lets TLS (ALPN) choose
//! and speaks HTTP/1.1 over plain `http://`; `http1` offers only HTTP/1.1; `http2` only HTTP/2,
//! which over plain `http://` is h2c with prior knowledge (a local server's streams then share
//! a few connections instead of one each). Each version has lanes of its own.
//!
//! Destinations the environment sends through a proxy (`HTTPS_PROXY`, `HTTP_PROXY`,
//! `ALL_PROXY`, less `NO_PROXY`, read once at start-up as reqwest does) go through reqwest, which
//! speaks to proxies: CONNECT tunnels for https, absolute-form requests for http, proxy
//! credentials from the proxy URL.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use switchyard_config::HttpVersion;
use switchyard_providers::{ErrorKind, ProviderError};

/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an idle pooled connection is kept.
pub const POOL_IDLE: Duration = Duration::from_secs(90);
/// Idle connections kept per provider host.
pub const POOL_PER_HOST: usize = 1024;
/// Requests one lane carries at once before the next is used: below the HTTP/2 stream limits
/// providers advertise, so no request waits for another's stream to end.
pub const LANE_STREAMS: usize = 64;
/// Most lanes of one client: `LANE_STREAMS * MAX_LANES` requests at once before they share.
pub const MAX_LANES: usize = 64;

/// Sends requests to providers.
pub struct UpstreamClient {
    direct: Versions<Full<Bytes>>,
    /// The same, for bodies forwarded as they arrive (pass-through); lanes of their own, so the
    /// LLM endpoints' client keeps its plain body type.
    streamed: Versions<axum::body::Body>,
    proxied: reqwest::Client,
    /// The environment's proxy settings; `None` when it names no proxy.
    proxies: Option<Matcher>,
}

impl UpstreamClient {
    /// A client with the proxy settings of this process's environment. `proxied` serves the
    /// destinations a proxy applies to (it reads the same variables).
    pub fn new(proxied: reqwest::Client) -> Result<Self, rustls::Error> {
        Ok(Self {
            direct: Versions::new()?,
            streamed: Versions::new()?,
            proxied,
            proxies: proxy_env_set().then(Matcher::from_env),
        })
    }
}

/// Lanes for each HTTP version a Provider may ask for.
struct Versions<B> {
    auto: Lanes<B>,
    http1: Lanes<B>,
    http2: Lanes<B>,
}

impl<B> Versions<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn new() -> Result<Self, rustls::Error> {
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(POOL_PER_HOST)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new());
        let mut http2 = builder.clone();
        http2.http2_only(true);
        Ok(Self {
            auto: Lanes::new(builder.clone(), connector(HttpVersion::Auto)?, LANE_STREAMS),
            http1: Lanes::new(builder, connector(HttpVersion::Http1)?, LANE_STREAMS),
            http2: Lanes::new(http2, connector(HttpVersion::Http2)?, LANE_STREAMS),
        })
    }

    fn get(&self, version: HttpVersion) -> &Lanes<B> {
        match version {
            HttpVersion::Auto => &self.auto,
            HttpVersion::Http1 => &self.http1,
            HttpVersion::Http2 => &self.http2,
        }
    }
}

/// TCP (no delay, connect timeout) and TLS (webpki roots; the ALPN protocols `version` allows).
fn connector(version: HttpVersion) -> Result<HttpsConnector<HttpConnector>, rustls::Error> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    Ok(match version {
        HttpVersion::Auto => https.enable_http1().enable_http2().wrap_connector(http),
        HttpVersion::Http1 => https.enable_http1().wrap_connector(http),
        HttpVersion::Http2 => https.enable_http2().wrap_connector(http),
    })
}

impl UpstreamClient {
    /// Whether requests to `uri` go through a proxy.
    fn proxied(&self, uri: &Uri) -> bool {
        self.proxies.as_ref().is_some_and(|m| m.intercept(uri).is_some())
    }

    /// Sends one request in `version`; resolves once the response headers arrived.
    pub async fn send(
        &self,
        version: HttpVersion,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Response<UpstreamBody>, ProviderError> {
        if self.proxied(&uri) {
            let resp = self
                .proxied
                .request(method, uri.to_string())
                .headers(headers)
                .body(body)
                .send()
                .await
                .map_err(|e| reqwest_error(&e))?;
            return Ok(http::Response::from(resp).map(UpstreamBody::Proxied));
        }
        let mut headers = headers;
        if !headers.contains_key(http::header::HOST) {
            if let Some(host) = host_header(&uri) {
                headers.insert(http::header::HOST, host);
            }
        }
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        self.direct.get(version).request(req).await
    }
}

/// The `Host` header hyper-util's client adds to a request without one (`host[:port]`, the
/// port left out when it is the scheme's default), built here without its `format!`, which
/// cost ~2.5 k instructions per upstream call (bench/results/profiling.md, sixth pass).
fn host_header(uri: &Uri) -> Option<http::HeaderValue> {
    let host = uri.host()?;
    let secure = matches!(uri.scheme_str(), Some("https" | "wss"));
    let port = uri
        .port()
        .filter(|p| !matches!((p.as_u16(), secure), (443, true) | (80, false)));
    match port {
        None => http::HeaderValue::from_str(host).ok(),
        Some(port) => {
            let mut v = Vec::with_capacity(host.len() + 1 + port.as_str().len());
            v.extend_from_slice(host.as_bytes());
            v.push(b':');
            v.extend_from_slice(port.as_str().as_bytes());
            http::HeaderValue::from_maybe_shared(Bytes::from(v)).ok()
        }
    }
}

impl UpstreamClient {
    /// Sends one request whose body is forwarded as it arrives; resolves once the response
    /// headers arrived.
    pub async fn send_streamed(
        &self,
        version: HttpVersion,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: axum::body::Body,
    ) -> Result<Response<UpstreamBody>, ProviderError> {
        if self.proxied(&uri) {
            let resp = self
                .proxied
                .request(method, uri.to_string())
                .headers(headers)
                .body(reqwest::Body::wrap_stream(body.into_data_stream()))
                .send()
                .await
                .map_err(|e| reqwest_error(&e))?;
            return Ok(http::Response::from(resp).map(UpstreamBody::Proxied));
        }
        let mut req = Request::new(body);
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        self.streamed.get(version).request(req).await
    }
}

/// Clients with pools of their own; a request takes the first with fewer than `per_lane`
/// requests in flight (a response's body counts until it is dropped), a new lane when all are
/// that busy, up to [`MAX_LANES`], else the least busy.
pub struct Lanes<B> {
    lanes: RwLock<Vec<Arc<Lane<B>>>>,
    builder: hyper_util::client::legacy::Builder,
    connector: HttpsConnector<HttpConnector>,
    per_lane: usize,
}

struct Lane<B> {
    client: Client<HttpsConnector<HttpConnector>, B>,
    in_flight: Arc<AtomicUsize>,
}

/// One request's hold on its lane, released when its response (body included) is dropped.
pub struct LaneHold(Arc<AtomicUsize>);

impl Drop for LaneHold {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<B> Lanes<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Lanes built by `builder` over `connector`, `per_lane` requests each; one to start with.
    pub fn new(
        builder: hyper_util::client::legacy::Builder,
        connector: HttpsConnector<HttpConnector>,
        per_lane: usize,
    ) -> Self {
        let first = Arc::new(Lane {
            client: builder.build(connector.clone()),
            in_flight: Arc::new(AtomicUsize::new(0)),
        });
        Self {
            lanes: RwLock::new(vec![first]),
            builder,
            connector,
            per_lane: per_lane.max(1),
        }
    }

    /// How many lanes there are now.
    #[cfg(test)]
    fn count(&self) -> usize {
        self.lanes.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The lane for the next request, held.
    fn take(&self) -> (Arc<Lane<B>>, LaneHold) {
        let lane = self.pick().unwrap_or_else(|| self.grow());
        lane.in_flight.fetch_add(1, Ordering::Relaxed);
        let hold = LaneHold(lane.in_flight.clone());
        (lane, hold)
    }

    fn pick(&self) -> Option<Arc<Lane<B>>> {
        let lanes = self.lanes.read().unwrap_or_else(|p| p.into_inner());
        lanes
            .iter()
            .find(|l| l.in_flight.load(Ordering::Relaxed) < self.per_lane)
            .cloned()
    }

    fn grow(&self) -> Arc<Lane<B>> {
        let mut lanes = self.lanes.write().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = lanes
            .iter()
            .find(|l| l.in_flight.load(Ordering::Relaxed) < self.per_lane)
        {
            return l.clone();
        }
        if lanes.len() < MAX_LANES {
            let lane = Arc::new(Lane {
                client: self.builder.build(self.connector.clone()),
                in_flight: Arc::new(AtomicUsize::new(0)),
            });
            lanes.push(lane.clone());
            return lane;
        }
        lanes
            .iter()
            .min_by_key(|l| l.in_flight.load(Ordering::Relaxed))
            .cloned()
            .unwrap_or_else(|| unreachable!("lanes are never empty"))
    }

    /// Sends `req` on a lane; resolves once the response headers arrived.
    pub async fn request(&self, req: Request<B>) -> Result<Response<UpstreamBody>, ProviderError> {
        let (lane, hold) = self.take();
        let resp = lane.client.request(req).await.map_err(|e| client_error(&e))?;
        Ok(resp.map(|body| UpstreamBody::Direct(body, hold)))
    }
}

/// Whether the environment names a proxy (reqwest's variables, either case).
fn proxy_env_set() -> bool {
    [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

/// A provider's response body, from either path.
pub enum UpstreamBody {
    /// Straight from hyper, holding its lane.
    Direct(Incoming, LaneHold),
    /// Through reqwest (a proxy).
    Proxied(reqwest::Body),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = ProviderError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, ProviderError>>> {
        match self.get_mut() {
            UpstreamBody::Direct(b, _) => Pin::new(b).poll_frame(cx).map_err(|e| body_error(&e)),
            UpstreamBody::Proxied(b) => Pin::new(b).poll_frame(cx).map_err(|e| reqwest_error(&e)),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Direct(b, _) => b.is_end_stream(),
            UpstreamBody::Proxied(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Direct(b, _) => b.size_hint(),
            UpstreamBody::Proxied(b) => b.size_hint(),
        }
    }
}

/// `e` and its causes, for a message ("client error (Connect): tcp connect error: Connection
/// refused (os error 111)"). URLs never carry credentials here (keys go in headers).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    msg
}

/// Whether `e` or a cause of it is an I/O time-out (the connect timeout, say).
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        next = e.source();
    }
    false
}

fn client_error(e: &hyper_util::client::legacy::Error) -> ProviderError {
    let kind = if timed_out(e) {
        ErrorKind::Timeout
    } else if e.is_connect() {
        ErrorKind::Connect
    } else {
        ErrorKind::Server
    };
    ProviderError::new(kind, format!("upstream request failed: {}", chain(e)))
}

fn body_error(e: &hyper::Error) -> ProviderError {
    let kind = if e.is_timeout() || timed_out(e) {
        ErrorKind::Timeout
    } else {
        ErrorKind::Server
    };
    ProviderError::new(kind, format!("upstream response failed: {}", chain(e)))
}

pub(crate) fn reqwest_error(e: &reqwest::Error) -> ProviderError {
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else if e.is_connect() {
        ErrorKind::Connect
    } else {
        ErrorKind::Server
    };
    // reqwest's Display includes the URL, which never carries credentials here.
    ProviderError::new(kind, format!("upstream request failed: {e}"))
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::Duration;

    use http_body_util::BodyExt;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    use super::*;

    #[test]
    fn the_host_header_is_the_one_hyper_util_would_write() {
        let host = |u: &str| host_header(&u.parse().unwrap()).unwrap();
        assert_eq!(host("http://127.0.0.1:8000/v1/chat/completions"), "127.0.0.1:8000");
        assert_eq!(host("https://api.openai.com/v1/chat/completions"), "api.openai.com");
        assert_eq!(host("https://api.openai.com:443/v1"), "api.openai.com");
        assert_eq!(host("http://vllm:80/v1"), "vllm");
        assert_eq!(host("http://vllm:443/v1"), "vllm:443");
        assert_eq!(host("http://[::1]:8080/v1"), "[::1]:8080");
    }

    /// An HTTP/2 (h2c) server taking at most `streams` streams per connection, whose requests
    /// wait until `want` are in flight at once (or 5 s); returns its address, the peak and the
    /// connections that carried at least one request. (A cold burst can open one spare
    /// connection that carries none: hyper-util's pool lets a request that registered as a
    /// waiter take the connect lock just after the first connection was pooled; the spare is
    /// pooled behind the first and closed.)
    async fn h2_server(want: usize, streams: u32) -> (std::net::SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let active = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let (p, c) = (peak.clone(), connections.clone());
        tokio::spawn(async move {
            loop {
                let (sock, _) = listener.accept().await.unwrap();
                let (active, peak, c) = (active.clone(), p.clone(), c.clone());
                let carried = Arc::new(std::sync::atomic::AtomicBool::new(false));
                tokio::spawn(async move {
                    let svc = service_fn(move |_req| {
                        let (active, peak) = (active.clone(), peak.clone());
                        if !carried.swap(true, Ordering::SeqCst) {
                            c.fetch_add(1, Ordering::SeqCst);
                        }
                        async move {
                            let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(now, Ordering::SeqCst);
                            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                            while active.load(Ordering::SeqCst) < want && tokio::time::Instant::now() < deadline {
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            active.fetch_sub(1, Ordering::SeqCst);
                            Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
                        }
                    });
                    let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                    b.max_concurrent_streams(streams);
                    let _ = b.serve_connection(TokioIo::new(sock), svc).await;
                });
            }
        });
        (addr, peak, connections)
    }

    async fn get(lanes: &Lanes<Full<Bytes>>, addr: std::net::SocketAddr) -> Result<(), ProviderError> {
        let mut req = Request::new(Full::new(Bytes::new()));
        *req.uri_mut() = format!("http://{addr}/").parse().unwrap();
        let resp = lanes.request(req).await?;
        let _ = resp.into_body().collect().await;
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_beyond_a_connections_stream_limit_take_another_connection() {
        // 32 requests at once to an HTTP/2 server that takes 8 streams a connection: one
        // connection would queue 24 of them until others end; lanes of 4 run all 32 together.
        let (addr, peak, connections) = h2_server(32, 8).await;
        let mut builder = Client::builder(TokioExecutor::new());
        builder.http2_only(true).timer(TokioTimer::new());
        let lanes = Arc::new(Lanes::<Full<Bytes>>::new(
            builder,
            connector(HttpVersion::Http2).unwrap(),
            4,
        ));
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let lanes = lanes.clone();
                tokio::spawn(async move { get(&lanes, addr).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 32, "every request was in flight at once");
        assert_eq!(lanes.count(), 8);
        assert!(connections.load(Ordering::SeqCst) >= 8);
        // Every hold released with its response: the next request takes the first lane.
        let (lane, _hold) = lanes.take();
        assert!(Arc::ptr_eq(&lane, &lanes.lanes.read().unwrap()[0]));
    }

    /// A Provider's `httpVersion`: `http2` speaks h2c (prior knowledge) to a plain-HTTP server
    /// that only speaks HTTP/2, and many requests share a few connections; `auto` and `http1`
    /// speak HTTP/1.1 to it, which it cannot answer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn http2_speaks_h2c_to_a_plain_http_upstream() {
        let (addr, peak, connections) = h2_server(16, 100).await;
        let client = Arc::new(UpstreamClient::new(reqwest::Client::new()).unwrap());
        let send = |client: Arc<UpstreamClient>, version| async move {
            let uri: Uri = format!("http://{addr}/").parse().unwrap();
            let resp = client
                .send(version, Method::GET, uri, HeaderMap::new(), Bytes::new())
                .await?;
            let _ = resp.into_body().collect().await;
            Ok::<_, ProviderError>(())
        };
        let tasks: Vec<_> = (0..16)
            .map(|_| tokio::spawn(send(client.clone(), HttpVersion::Http2)))
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 16, "every request was in flight at once");
        // One connection carries them all (HTTP/1.1 would have taken 16).
        assert_eq!(connections.load(Ordering::SeqCst), 1);
        for version in [HttpVersion::Auto, HttpVersion::Http1] {
            let result = tokio::time::timeout(Duration::from_secs(5), send(client.clone(), version)).await;
            assert!(matches!(result, Ok(Err(_))), "{version:?} spoke HTTP/2: {result:?}");
        }
    }
}
