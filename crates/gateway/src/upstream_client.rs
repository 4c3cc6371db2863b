//! The HTTP client for calls to providers: hyper-util's pooled client over rustls (Mozilla's
//! roots through webpki-roots, HTTP/2 where the provider offers it by ALPN), used directly.
//! Through reqwest the same call cost about a fifth more CPU: reqwest 0.12 parses the URL twice
//! more per request (its redirect layer runs even with redirects off) and adds a layer of boxed
//! futures (bench/results/profiling.md).
//!
//! Destinations the environment sends through a proxy (`HTTPS_PROXY`, `HTTP_PROXY`,
//! `ALL_PROXY`, less `NO_PROXY`, read once at start-up as reqwest does) go through reqwest, which
//! speaks to proxies: CONNECT tunnels for https, absolute-form requests for http, proxy
//! credentials from the proxy URL.

use std::pin::Pin;
use std::sync::Arc;
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
use switchyard_providers::{ErrorKind, ProviderError};

/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an idle pooled connection is kept.
pub const POOL_IDLE: Duration = Duration::from_secs(90);
/// Idle connections kept per provider host.
pub const POOL_PER_HOST: usize = 1024;

/// Sends requests to providers.
pub struct UpstreamClient {
    direct: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// The same, for bodies forwarded as they arrive (pass-through); a pool of its own, so the
    /// LLM endpoints' client keeps its plain body type.
    streamed: Client<HttpsConnector<HttpConnector>, axum::body::Body>,
    proxied: reqwest::Client,
    /// The environment's proxy settings; `None` when it names no proxy.
    proxies: Option<Matcher>,
}

impl UpstreamClient {
    /// A client with the proxy settings of this process's environment. `proxied` serves the
    /// destinations a proxy applies to (it reads the same variables).
    pub fn new(proxied: reqwest::Client) -> Result<Self, rustls::Error> {
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
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(POOL_PER_HOST)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new());
        let direct = builder.build(https.clone());
        let streamed = builder.build(https);
        Ok(Self {
            direct,
            streamed,
            proxied,
            proxies: proxy_env_set().then(Matcher::from_env),
        })
    }

    /// Whether requests to `uri` go through a proxy.
    fn proxied(&self, uri: &Uri) -> bool {
        self.proxies.as_ref().is_some_and(|m| m.intercept(uri).is_some())
    }

    /// Sends one request; resolves once the response headers arrived.
    pub async fn send(
        &self,
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
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        let resp = self.direct.request(req).await.map_err(|e| client_error(&e))?;
        Ok(resp.map(UpstreamBody::Direct))
    }
}

impl UpstreamClient {
    /// Sends one request whose body is forwarded as it arrives; resolves once the response
    /// headers arrived.
    pub async fn send_streamed(
        &self,
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
        let resp = self.streamed.request(req).await.map_err(|e| client_error(&e))?;
        Ok(resp.map(UpstreamBody::Direct))
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
    /// Straight from hyper.
    Direct(Incoming),
    /// Through reqwest (a proxy).
    Proxied(reqwest::Body),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = ProviderError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, ProviderError>>> {
        match self.get_mut() {
            UpstreamBody::Direct(b) => Pin::new(b).poll_frame(cx).map_err(|e| body_error(&e)),
            UpstreamBody::Proxied(b) => Pin::new(b).poll_frame(cx).map_err(|e| reqwest_error(&e)),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Direct(b) => b.is_end_stream(),
            UpstreamBody::Proxied(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Direct(b) => b.size_hint(),
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
