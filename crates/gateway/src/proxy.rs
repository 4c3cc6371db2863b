//! Request handlers. `handle` is the whole pipeline, top to bottom:
//! auth -> read and parse -> route -> pick backend -> translate -> upstream -> forward -> account.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures::stream::{BoxStream, StreamExt};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::Value;
use switchyard_config::RouteMode;
use switchyard_providers::{
    self as providers, sse, ErrorKind, Json, Operation, ProviderError, StreamTranslator, Usage,
};

use crate::error::GatewayError;
use crate::metrics::status_class;
use crate::route::{self, Upstream};
use crate::runtime::{Key, Route};
use crate::telemetry::RequestSpan;
use crate::{cache, limits, Gateway};

type Gw = State<Arc<Gateway>>;

pub async fn chat_completions(State(gw): Gw, headers: HeaderMap, body: Body) -> Response {
    handle(gw, Operation::Chat, Ingress::OpenAi, headers, body).await
}

pub async fn completions(State(gw): Gw, headers: HeaderMap, body: Body) -> Response {
    handle(gw, Operation::Completions, Ingress::OpenAi, headers, body).await
}

pub async fn embeddings(State(gw): Gw, headers: HeaderMap, body: Body) -> Response {
    handle(gw, Operation::Embeddings, Ingress::OpenAi, headers, body).await
}

pub async fn responses(State(gw): Gw, headers: HeaderMap, body: Body) -> Response {
    handle(gw, Operation::Responses, Ingress::OpenAi, headers, body).await
}

/// Anthropic's Messages API, for clients that speak it: translated to an OpenAI chat request,
/// routed like any other, and answered in Anthropic's shape (errors included).
pub async fn messages(State(gw): Gw, headers: HeaderMap, body: Body) -> Response {
    handle(gw, Operation::Chat, Ingress::Anthropic, headers, body).await
}

/// The API shape a client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ingress {
    OpenAi,
    Anthropic,
}

impl Ingress {
    fn error_response(self, e: GatewayError) -> Response {
        match self {
            Ingress::OpenAi => e.into_response(),
            Ingress::Anthropic => {
                let kind = match e.status.as_u16() {
                    401 => ErrorKind::Auth,
                    403 => ErrorKind::PermissionDenied,
                    404 => ErrorKind::NotFound,
                    429 => ErrorKind::RateLimit,
                    504 => ErrorKind::Timeout,
                    s if s >= 500 => ErrorKind::Server,
                    _ => ErrorKind::BadRequest,
                };
                let (_, body) = providers::anthropic::ingress::error_body(kind, &e.message);
                let mut r = Response::new(Body::from(body));
                *r.status_mut() = e.status;
                r.headers_mut()
                    .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                if let Some(ra) = e.retry_after {
                    if let Ok(v) = HeaderValue::from_str(&ra.as_secs_f64().ceil().max(1.0).to_string()) {
                        r.headers_mut().insert(http::header::RETRY_AFTER, v);
                    }
                }
                r
            }
        }
    }
}

pub async fn models(State(gw): Gw, headers: HeaderMap) -> Response {
    let rt = gw.runtime();
    let key = match presented_key(&headers).and_then(|k| rt.authenticate(k, unix_now())) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    let data: Vec<Value> = rt
        .models_for(&key)
        .into_iter()
        .map(|id| serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": "switchyard"}))
        .collect();
    axum::Json(serde_json::json!({"object": "list", "data": data})).into_response()
}

pub async fn readyz(State(gw): Gw) -> Response {
    if gw.ready() {
        let rt = gw.runtime();
        (
            StatusCode::OK,
            format!("ready generation={} hash={}\n", rt.generation, rt.hash),
        )
            .into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

pub async fn metrics(State(gw): Gw) -> Response {
    gw.budgets.publish(&gw.metrics, gw.clock.now_ms());
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        gw.metrics.render(),
    )
        .into_response()
}

pub async fn not_found() -> Response {
    GatewayError::not_found("Unknown path. Switchyard serves /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/responses and /v1/models.").into_response()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The key from `Authorization: Bearer` or `x-api-key`.
fn presented_key(headers: &HeaderMap) -> Result<&str, GatewayError> {
    if let Some(v) = headers.get(http::header::AUTHORIZATION) {
        let v = v.to_str().unwrap_or("");
        let token = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .unwrap_or("")
            .trim();
        if !token.is_empty() {
            return Ok(token);
        }
    }
    if let Some(v) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        if !v.trim().is_empty() {
            return Ok(v.trim());
        }
    }
    Err(GatewayError::unauthorized(
        "You didn't provide an API key. Send it as `Authorization: Bearer <key>` or `x-api-key: <key>`.",
    ))
}

/// Counts a request in flight for as long as it lives.
struct InFlight<'a>(&'a prometheus::IntGauge);

impl<'a> InFlight<'a> {
    fn new(g: &'a prometheus::IntGauge) -> Self {
        g.inc();
        Self(g)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Labels of a request, once known.
#[derive(Clone)]
struct Labels {
    route: String,
    backend: String,
    provider: &'static str,
    team: String,
    /// `x-request-id`: the client's (sanitised) or a new one; in the access log and the response.
    request_id: String,
    /// The VirtualKey (`namespace/name`), never its value.
    key: String,
    /// Upstream attempts made.
    attempts: u32,
    /// Fallback levels gone through.
    fallback_depth: u32,
    /// The request reached an upstream: its access log line is written by `Account::record`.
    accounted: bool,
    /// Trace id of the request's span, when traces are on: joins the log line to the trace.
    trace_id: Option<String>,
}

impl Labels {
    fn unknown() -> Self {
        Self {
            route: "-".into(),
            backend: "-".into(),
            provider: "-",
            team: String::new(),
            request_id: String::new(),
            key: String::new(),
            attempts: 0,
            trace_id: None,
            fallback_depth: 0,
            accounted: false,
        }
    }
}

async fn handle(gw: Arc<Gateway>, op: Operation, ingress: Ingress, headers: HeaderMap, body: Body) -> Response {
    let start = Instant::now();
    let headers = owned_headers(&headers);
    let _in_flight = InFlight::new(&gw.metrics.in_flight);
    let mut labels = Labels::unknown();
    labels.request_id = request_id(&headers);
    let mut span = RequestSpan::start(gw.tracing(), op, ingress == Ingress::Anthropic, &headers);
    labels.trace_id = span.trace_id();
    let result = pipeline(&gw, op, ingress, &headers, body, start, &mut labels, &mut span).await;
    let mut error = None;
    let mut error_type = None;
    let mut response = match result {
        Ok(resp) => resp,
        Err(e) => {
            error = Some(e.message.clone());
            error_type = Some(e.kind);
            ingress.error_response(e)
        }
    };
    let status = response.status().as_u16();
    // A stream's span is the forwarder's by now (empty here): it ends with the stream.
    span.served(&labels.route, &labels.backend, labels.attempts, labels.fallback_depth);
    span.status(status, error_type);
    if let Ok(v) = HeaderValue::from_str(&labels.request_id) {
        response.headers_mut().insert("x-request-id", v);
    }
    if !labels.accounted {
        // Refused before any upstream (auth, validation, limits, cache hits): logged here; the
        // others are logged when their usage is known (`Account::record`).
        access_log(&labels, status, start.elapsed(), None, None, error.as_deref());
    }
    gw.metrics
        .requests
        .with_label_values(&[
            labels.route.as_str(),
            labels.backend.as_str(),
            labels.provider,
            status_class(status),
        ])
        .inc();
    response
}

#[allow(clippy::too_many_arguments)]
async fn pipeline(
    gw: &Arc<Gateway>,
    op: Operation,
    ingress: Ingress,
    headers: &HeaderMap,
    body: Body,
    start: Instant,
    labels: &mut Labels,
    span: &mut RequestSpan,
) -> Result<Response, GatewayError> {
    // Auth.
    let rt = gw.runtime();
    let key = rt.authenticate(presented_key(headers)?, unix_now())?;
    labels.team.clone_from(&key.team);
    span.key(&key.team, &labels.request_id);

    // Read and parse.
    let limit = rt.config.settings.max_request_bytes;
    let request = {
        // Scoped: the body shares hyper's 8 KiB read buffer, and a `Bytes` kept until the response
        // ended would hold that buffer for as long as a stream stays open (hyper reads into a new
        // one meanwhile): 8 KiB more per open stream.
        let bytes = read_body(body, limit).await?;
        parse_body(op, ingress, &bytes)?
    };
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let stream = request.get("stream").and_then(Value::as_bool).unwrap_or(false) && op != Operation::Embeddings;
    span.request(op, &model, &request, stream);

    // Route.
    let route = rt.route_for(&key, &model)?;
    labels.route = format!("{}/{}", route.config.namespace, route.config.model);
    check_mode(op, &route, &model)?;

    // Limits (crate::limits): the key's rpm, tpm, slots in flight and budget reservation, taken
    // in one atomic step once the route (and so the prices) is known. Refusals are 429s with
    // OpenAI's x-ratelimit-* headers.
    let admission = match limits::admit(&gw.limits, &key, &route, &request).await {
        Ok(a) => a,
        Err(refused) => {
            let mut r = ingress.error_response(refused.error);
            refused.headers.apply(r.headers_mut());
            return Ok(r);
        }
    };
    let rate_headers = admission.headers().clone();

    // Cache (crate::cache): exact match; a hit is replayed (a stream as a stream) and costs nothing.
    let cache = cache::Lookup::new(
        &route.config,
        headers,
        &key.config.labels,
        op,
        ingress == Ingress::Anthropic,
        &request,
        stream,
    );
    if let Some(lookup) = &cache {
        if let Some(hit) = lookup.get(gw.state().as_ref()).await {
            admission.settle(0.0, Some(0));
            labels.backend = "cache".into();
            let mut r = hit.into_response();
            let h = r.headers_mut();
            cache::annotate(&gw.metrics, &labels.route, h, true);
            rate_headers.apply(h);
            if let Ok(v) = HeaderValue::from_str(&start.elapsed().as_micros().to_string()) {
                h.insert("x-switchyard-overhead-us", v);
            }
            if let Ok(v) = HeaderValue::from_str(&labels.route) {
                h.insert("x-switchyard-route", v);
            }
            h.insert("x-switchyard-attempts", HeaderValue::from_static("0"));
            gw.metrics
                .latency
                .with_label_values(&[labels.route.as_str()])
                .observe(start.elapsed().as_secs_f64());
            return Ok(r);
        }
    }
    let cache_route = labels.route.clone();

    // Attempts: rules, strategy, retries, fallbacks, cooldowns, hedging (crate::route).
    let (attempt, outcome) = route::execute(
        &gw.routing,
        &rt,
        &route,
        &key,
        &request,
        headers,
        op,
        stream,
        span.parent(),
    )
    .await?;
    labels.route.clone_from(&outcome.route);
    labels.backend.clone_from(&outcome.backend);
    labels.provider = outcome.provider.kind.as_str();
    let provider = outcome.provider.clone();
    let price = outcome.price;
    let upstream_elapsed = outcome.upstream_elapsed;
    labels.attempts = outcome.attempts;
    labels.fallback_depth = outcome.fallback_depth;
    labels.key = format!("{}/{}", key.config.namespace, key.config.name);
    labels.accounted = true;
    if route.config.log_prompts {
        // Only routes that opt in (spec.logPrompts) log prompts: they often hold personal data.
        let prompt = request
            .get("messages")
            .or_else(|| request.get("input"))
            .or_else(|| request.get("prompt"))
            .map(|m| m.to_string())
            .unwrap_or_default();
        tracing::info!(target: "switchyard::prompts", request_id = %labels.request_id, route = %labels.route, %prompt, "prompt");
    }

    let mut account = Account {
        gw: gw.clone(),
        labels: labels.clone(),
        price,
        start,
        key,
        admission: Some(admission),
        fill: cache.as_ref().and_then(cache::Lookup::fill),
        span: RequestSpan::default(),
    };
    let mut response = match attempt {
        Upstream::Full(translated) => {
            account.record(translated.usage.as_ref());
            span.response(&translated.body, translated.usage.as_ref());
            let body = match ingress {
                Ingress::OpenAi => translated.body,
                Ingress::Anthropic => providers::anthropic::ingress::response_from_openai(&translated.body, &model)
                    .map_err(|e| GatewayError::upstream(&e, &labels.backend))?,
            };
            account.observe(&body);
            account.complete();
            let mut r = Response::new(Body::from(body));
            r.headers_mut().reserve(RESPONSE_HEADERS);
            r.headers_mut()
                .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        Upstream::Stream(chunks, translator) => {
            let egress: Option<Box<dyn StreamTranslator>> = match ingress {
                Ingress::OpenAi => None,
                Ingress::Anthropic => Some(Box::new(providers::anthropic::ingress::StreamFromOpenAi::new(
                    model.clone(),
                ))),
            };
            // The Anthropic egress needs the usage chunk for its message_delta.
            let wants_usage = egress.is_some()
                || request
                    .get("stream_options")
                    .and_then(|o| o.get("include_usage"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
            let idle = Duration::from_millis(provider.timeouts.stream_idle_ms);
            span.served(&labels.route, &labels.backend, labels.attempts, labels.fallback_depth);
            span.status(200, None);
            account.span = std::mem::take(span);
            let body = forward(chunks, translator, egress, account, idle, wants_usage);
            let mut r = Response::new(Body::from_stream(body));
            let h = r.headers_mut();
            h.reserve(RESPONSE_HEADERS);
            h.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream; charset=utf-8"),
            );
            h.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            r
        }
    };
    let overhead = start.elapsed().saturating_sub(upstream_elapsed);
    gw.metrics
        .overhead
        .with_label_values(&[labels.route.as_str()])
        .observe(overhead.as_secs_f64());
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&overhead.as_micros().to_string()) {
        h.insert("x-switchyard-overhead-us", v);
    }
    if let Ok(v) = HeaderValue::from_str(&labels.backend) {
        h.insert("x-switchyard-backend", v);
    }
    if let Ok(v) = HeaderValue::from_str(&labels.route) {
        h.insert("x-switchyard-route", v);
    }
    rate_headers.apply(h);
    if cache.is_some() {
        cache::annotate(&gw.metrics, &cache_route, h, false);
    }
    h.insert("x-switchyard-attempts", HeaderValue::from(outcome.attempts));
    h.insert("x-switchyard-fallback-depth", HeaderValue::from(outcome.fallback_depth));
    Ok(response)
}

/// The request's headers in memory of their own (one buffer for all the values). hyper parses
/// header values as slices of the connection's 8 KiB read buffer, so headers kept for a whole
/// request keep that buffer alive while hyper reads on into a new one: 8 KiB more per request
/// in flight, i.e. per open stream (massif, bench/results/profiling.md).
fn owned_headers(headers: &HeaderMap) -> HeaderMap {
    let size = headers.values().map(HeaderValue::len).sum();
    let mut values = BytesMut::with_capacity(size);
    for v in headers.values() {
        values.extend_from_slice(v.as_bytes());
    }
    let values = values.freeze();
    let mut owned = HeaderMap::with_capacity(headers.len());
    let mut at = 0;
    // `iter` yields every value, repeated names included, in the order `values` did.
    for (name, v) in headers {
        let end = at + v.len();
        if let Ok(mut copy) = HeaderValue::from_maybe_shared(values.slice(at..end)) {
            copy.set_sensitive(v.is_sensitive());
            owned.append(name.clone(), copy);
        }
        at = end;
    }
    owned
}

/// Headers a proxied response carries (content type, the `x-switchyard-*`, `x-ratelimit-*` and
/// `x-request-id` ones): reserved at once, since growing the map mid-way (6 -> 12 -> 24 entries)
/// moved every entry and showed in callgrind at ~2.5 k instructions per request.
const RESPONSE_HEADERS: usize = 16;

async fn read_body(body: Body, limit: u64) -> Result<Bytes, GatewayError> {
    axum::body::to_bytes(body, usize::try_from(limit).unwrap_or(usize::MAX))
        .await
        .map_err(|e| {
            let too_large = std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                || e.to_string().contains("length limit");
            if too_large {
                GatewayError::too_large(limit)
            } else {
                GatewayError::bad_request(format!("could not read the request body: {e}"), None)
            }
        })
}

/// The client's request in OpenAI's shape (an Anthropic Messages request is converted).
fn parse_body(op: Operation, ingress: Ingress, bytes: &[u8]) -> Result<Json, GatewayError> {
    match ingress {
        Ingress::OpenAi => parse_request(op, bytes),
        Ingress::Anthropic => {
            let native: Json = serde_json::from_slice(bytes).map_err(|e| {
                GatewayError::bad_request(format!("We could not parse the JSON body of your request ({e})."), None)
            })?;
            let converted = providers::anthropic::ingress::request_to_openai(&native)
                .map_err(|e| GatewayError::bad_request(e.message, e.param.as_deref()))?;
            parse_request(op, &serde_json::to_vec(&converted).unwrap_or_default())
        }
    }
}

fn parse_request(op: Operation, bytes: &[u8]) -> Result<Json, GatewayError> {
    let request: Json = serde_json::from_slice(bytes).map_err(|e| {
        GatewayError::bad_request(
            format!("We could not parse the JSON body of your request ({e}). The body must be a JSON object."),
            None,
        )
    })?;
    match request.get("model") {
        Some(Value::String(m)) if !m.is_empty() => {}
        _ => {
            return Err(GatewayError::bad_request(
                "you must provide a model parameter",
                Some("model"),
            ))
        }
    }
    match op {
        Operation::Chat => match request.get("messages") {
            Some(Value::Array(m)) if !m.is_empty() => {}
            Some(Value::Array(_)) => {
                return Err(GatewayError::bad_request(
                    "'messages' must contain at least one message",
                    Some("messages"),
                ))
            }
            _ => {
                return Err(GatewayError::bad_request(
                    "'messages' is a required property",
                    Some("messages"),
                ))
            }
        },
        Operation::Embeddings => {
            if !request.contains_key("input") {
                return Err(GatewayError::bad_request(
                    "'input' is a required property",
                    Some("input"),
                ));
            }
        }
        Operation::Completions => {
            if !request.contains_key("prompt") {
                return Err(GatewayError::bad_request(
                    "'prompt' is a required property",
                    Some("prompt"),
                ));
            }
        }
        Operation::Responses => {
            if !request.contains_key("input") {
                return Err(GatewayError::bad_request(
                    "'input' is a required property",
                    Some("input"),
                ));
            }
        }
    }
    Ok(request)
}

fn check_mode(op: Operation, route: &Route, model: &str) -> Result<(), GatewayError> {
    let ok = matches!(
        (op, route.config.mode),
        (Operation::Chat | Operation::Responses, RouteMode::Chat)
            | (Operation::Embeddings, RouteMode::Embeddings)
            | (Operation::Completions, RouteMode::Completions | RouteMode::Chat)
    );
    if ok {
        Ok(())
    } else {
        let mode = match route.config.mode {
            RouteMode::Chat => "chat",
            RouteMode::Embeddings => "embeddings",
            RouteMode::Completions => "completions",
        };
        Err(GatewayError::bad_request(
            format!("model `{model}` is a {mode} route and does not serve this endpoint"),
            Some("model"),
        ))
    }
}

/// Usage accounting of one request; for streams it runs when the stream ends or the client
/// goes away, with the usage seen so far.
///
/// It also settles the key's admission (slots, token window, budget reservation, spend and
/// alerts) with the real cost, and fills the response cache once a response completed.
struct Account {
    gw: Arc<Gateway>,
    labels: Labels,
    price: Option<switchyard_config::Price>,
    start: Instant,
    #[allow(dead_code)]
    key: Arc<Key>,
    admission: Option<limits::Admission>,
    fill: Option<cache::Fill>,
    /// A stream's request span, ended when the stream is (empty for whole responses).
    span: RequestSpan,
}

impl Account {
    /// Bytes the client received, for the cache.
    fn observe(&mut self, b: &Bytes) {
        if let Some(f) = self.fill.as_mut() {
            f.push(b);
        }
    }

    /// The response completed: store it in the cache.
    fn complete(&mut self) {
        if let Some(f) = self.fill.take() {
            f.store(self.gw.state().clone());
        }
    }

    fn record(&mut self, usage: Option<&Usage>) {
        let cost = match (usage, &self.price) {
            (Some(u), Some(p)) => Some(p.cost(u.prompt_tokens, u.completion_tokens, u.cached_tokens)),
            _ => None,
        };
        self.span.usage(usage);
        access_log(&self.labels, 200, self.start.elapsed(), usage, cost, None);
        let m = &self.gw.metrics;
        let route = self.labels.route.as_str();
        m.latency
            .with_label_values(&[route])
            .observe(self.start.elapsed().as_secs_f64());
        if let Some(u) = usage {
            m.tokens.with_label_values(&[route, "input"]).inc_by(u.prompt_tokens);
            m.tokens
                .with_label_values(&[route, "output"])
                .inc_by(u.completion_tokens);
            if u.cached_tokens > 0 {
                m.tokens.with_label_values(&[route, "cached"]).inc_by(u.cached_tokens);
            }
            if let Some(p) = &self.price {
                let cost = p.cost(u.prompt_tokens, u.completion_tokens, u.cached_tokens);
                m.spend
                    .with_label_values(&[route, self.labels.team.as_str()])
                    .inc_by(cost);
            }
        }
        if let Some(a) = self.admission.take() {
            let cost = match (usage, &self.price) {
                (Some(u), Some(p)) => p.cost(u.prompt_tokens, u.completion_tokens, u.cached_tokens),
                _ => 0.0,
            };
            a.settle(cost, usage.map(Usage::total));
        }
    }
}

/// Records usage exactly once: at the end of the stream, or on drop when the client left.
struct StreamAccount {
    account: Account,
    usage: Option<Usage>,
    done: bool,
}

impl Drop for StreamAccount {
    fn drop(&mut self) {
        if !self.done {
            self.done = true;
            self.account.record(self.usage.as_ref());
        }
    }
}

/// Forwards a stream chunk by chunk through its translator. Never buffers the response; ends
/// with an error event when the upstream fails or goes silent for `idle`.
fn forward(
    mut chunks: BoxStream<'static, Result<Bytes, ProviderError>>,
    mut translator: Box<dyn StreamTranslator>,
    mut egress: Option<Box<dyn StreamTranslator>>,
    account: Account,
    idle: Duration,
    wants_usage: bool,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    async_stream::stream! {
        let mut acct = StreamAccount { account, usage: None, done: false };
        let mut out: Vec<Bytes> = Vec::with_capacity(4);
        let mut translated: Vec<Bytes> = Vec::with_capacity(4);
        let mut first = true;
        loop {
            let next = match tokio::time::timeout(idle, chunks.next()).await {
                Err(_) => Some(Err(ProviderError::new(ErrorKind::Timeout, "the upstream stream went silent"))),
                Ok(n) => n,
            };
            let result = match next {
                Some(Ok(chunk)) => translator.feed(chunk, &mut out),
                Some(Err(e)) => Err(e),
                None => {
                    let mut r = translator.finish(&mut out);
                    if r.is_ok() {
                        r = egress_pass(&mut egress, &mut out, &mut translated, true);
                    }
                    if r.is_ok() {
                        for b in translated.drain(..) {
                            if let Some(b) = filter_usage(b, wants_usage) {
                                acct.account.observe(&b);
                                yield Ok(b);
                            }
                        }
                        acct.usage = translator.usage();
                        if translator.complete() {
                            acct.account.complete();
                        }
                        break;
                    }
                    r
                }
            };
            acct.usage = translator.usage();
            let result = result.and_then(|()| egress_pass(&mut egress, &mut out, &mut translated, false));
            for b in translated.drain(..) {
                if let Some(b) = filter_usage(b, wants_usage) {
                    if first {
                        first = false;
                        let elapsed = acct.account.start.elapsed();
                        acct.account.span.first_token(elapsed, &b);
                        let ttft = elapsed.as_secs_f64();
                        acct.account.gw.metrics.ttft.with_label_values(&[acct.account.labels.route.as_str()]).observe(ttft);
                    }
                    acct.account.observe(&b);
                    yield Ok(b);
                }
            }
            if let Err(e) = result {
                acct.account
                    .gw
                    .metrics
                    .stream_errors
                    .with_label_values(&[acct.account.labels.route.as_str(), acct.account.labels.backend.as_str()])
                    .inc();
                acct.account.span.failed(e.kind);
                let err = GatewayError::upstream(&e, &acct.account.labels.backend);
                let event = if egress.is_some() {
                    providers::anthropic::ingress::error_event(e.kind, &err.message)
                } else {
                    sse::data(err.body().to_string().as_bytes())
                };
                yield Ok(event);
                break;
            }
        }
        acct.done = true;
        acct.account.record(acct.usage.as_ref());
    }
}

/// The request id: the client's `x-request-id` when it is short printable ASCII, else a new one.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| format!("{:032x}", rand::random::<u128>()), str::to_owned)
}

/// One structured line per request (JSON with `SWITCHYARD_LOG_FORMAT=json`): who, what, how it
/// went, tokens and cost. Never the key value, never the prompt.
fn access_log(
    l: &Labels,
    status: u16,
    latency: Duration,
    usage: Option<&Usage>,
    cost: Option<f64>,
    error: Option<&str>,
) {
    tracing::info!(
        target: "switchyard::access",
        request_id = %l.request_id,
        trace_id = l.trace_id.as_deref(),
        route = %l.route,
        backend = %l.backend,
        provider = l.provider,
        key = %l.key,
        team = %l.team,
        status,
        attempts = l.attempts,
        fallback_depth = l.fallback_depth,
        latency_ms = latency.as_secs_f64() * 1000.0,
        prompt_tokens = usage.map(|u| u.prompt_tokens),
        completion_tokens = usage.map(|u| u.completion_tokens),
        cached_tokens = usage.map(|u| u.cached_tokens),
        cost_usd = cost,
        error,
        "request"
    );
}

/// Passes translated OpenAI chunks through the egress translator (Anthropic ingress), or moves
/// them unchanged. `end` also finishes the egress stream.
fn egress_pass(
    egress: &mut Option<Box<dyn StreamTranslator>>,
    out: &mut Vec<Bytes>,
    translated: &mut Vec<Bytes>,
    end: bool,
) -> Result<(), ProviderError> {
    match egress {
        None => {
            translated.append(out);
            Ok(())
        }
        Some(e) => {
            for b in out.drain(..) {
                e.feed(b, translated)?;
            }
            if end {
                e.finish(translated)?;
            }
            Ok(())
        }
    }
}

/// Drops usage-only chunks (`"choices":[]` with `usage`) unless the client asked for them with
/// `stream_options.include_usage`: the gateway always asks upstream for usage so it can count
/// every stream, but a client that did not ask must not see an extra chunk without choices.
fn filter_usage(b: Bytes, wants_usage: bool) -> Option<Bytes> {
    // Built once: `memmem::find` sets up its searcher on every call.
    static NO_CHOICES: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"choices\":[]"));
    // Every chunk names `"usage"` (as `null` until the last), so look for the empty choices.
    if wants_usage || NO_CHOICES.find(&b).is_none() {
        return Some(b);
    }
    let mut kept = BytesMut::with_capacity(b.len());
    for event in b.split_inclusive_events() {
        let is_usage_only = memchr::memmem::find(event, b"\"choices\":[]").is_some()
            && memchr::memmem::find(event, b"\"usage\"").is_some();
        if !is_usage_only {
            kept.extend_from_slice(event);
        }
    }
    (!kept.is_empty()).then(|| kept.freeze())
}

trait SplitEvents {
    fn split_inclusive_events(&self) -> Vec<&[u8]>;
}

impl SplitEvents for Bytes {
    /// Splits SSE bytes after each blank line, keeping separators.
    fn split_inclusive_events(&self) -> Vec<&[u8]> {
        let mut out = Vec::new();
        let mut start = 0;
        let s: &[u8] = self;
        let mut i = 0;
        while i + 1 < s.len() {
            if s[i] == b'\n' && s[i + 1] == b'\n' {
                out.push(&s[start..i + 2]);
                start = i + 2;
                i += 2;
            } else {
                i += 1;
            }
        }
        if start < s.len() {
            out.push(&s[start..]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_headers_keep_every_value_and_let_go_of_the_read_buffer() {
        // Values as hyper makes them: slices of one read buffer.
        let read = Bytes::from(b"Bearer sk-1application/jsonabc; rid=1".to_vec());
        let mut parsed = HeaderMap::new();
        let mut value = HeaderValue::from_maybe_shared(read.slice(0..11)).unwrap();
        value.set_sensitive(true);
        parsed.insert("authorization", value);
        parsed.insert(
            "content-type",
            HeaderValue::from_maybe_shared(read.slice(11..27)).unwrap(),
        );
        parsed.append("x-tag", HeaderValue::from_maybe_shared(read.slice(27..30)).unwrap());
        parsed.append("x-tag", HeaderValue::from_maybe_shared(read.slice(30..37)).unwrap());

        let owned = owned_headers(&parsed);
        assert_eq!(owned, parsed);
        assert!(owned["authorization"].is_sensitive());
        let tags: Vec<_> = owned.get_all("x-tag").iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(tags, ["abc", "; rid=1"]);
        // Once the parsed map is gone, nothing refers to the read buffer any more.
        drop(parsed);
        assert!(read.try_into_mut().is_ok(), "the read buffer is no longer shared");
    }

    /// A request's handler future lives as long as its request (a stream's until its first
    /// token: the open-streams benchmark holds 1,000 of them), so its size is memory per stream.
    /// 1.5 KiB today; an unboxed large future awaited in the pipeline would show here.
    #[test]
    fn the_handler_future_stays_small() {
        let gw = Gateway::new(switchyard_config::GatewayConfig::default(), 1).unwrap_or_else(|e| panic!("{e}"));
        let h = handle(gw, Operation::Chat, Ingress::OpenAi, HeaderMap::new(), Body::empty());
        assert!(std::mem::size_of_val(&h) <= 4096, "{} bytes", std::mem::size_of_val(&h));
    }

    #[test]
    fn usage_only_chunks_are_dropped_unless_asked() {
        let b = Bytes::from_static(b"data: {\"choices\":[{\"delta\":{}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\n\ndata: [DONE]\n\n");
        assert_eq!(filter_usage(b.clone(), true), Some(b.clone()));
        assert_eq!(
            filter_usage(b, false),
            Some(Bytes::from_static(
                b"data: {\"choices\":[{\"delta\":{}}]}\n\ndata: [DONE]\n\n"
            ))
        );
        let only = Bytes::from_static(b"data: {\"choices\":[],\"usage\":{}}\n\n");
        assert_eq!(filter_usage(only, false), None);
        // Chunks with choices (and `"usage":null`, as OpenAI sends them) pass without a copy.
        let chunk = Bytes::from_static(b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\n");
        let kept = filter_usage(chunk.clone(), false).unwrap_or_default();
        assert_eq!((kept.as_ptr(), kept.len()), (chunk.as_ptr(), chunk.len()));
    }
}
