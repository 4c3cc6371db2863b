//! The request path of the LLM endpoints, top to bottom in [`serve`]:
//! auth -> read and parse (`crate::ingress`) -> route -> limits (`crate::limits`) -> cache
//! (`crate::cache`) -> attempts (`crate::route`) -> respond (`crate::respond`) -> account
//! (`crate::account`).
//!
//! Each stage lives in its own module; this one only orders them and owns what spans the whole
//! request (its headers, id, span and labels). It must not grow logic of its own: a stage that
//! needs more than a few lines here belongs in its module.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{post, MethodRouter};
use bytes::BytesMut;
use http::{HeaderMap, HeaderValue};
use switchyard_config::{RouteMode, Settings};
use switchyard_providers::Operation;

use crate::account::{self, Account, InFlight, Labels};
use crate::error::GatewayError;
use crate::estimate::Prompt;
use crate::ingress::{Codec, ANTHROPIC};
use crate::request::{self, Request};
use crate::respond::{self, Served};
use crate::runtime::{Key, Route, Runtime};
use crate::telemetry::RequestSpan;
use crate::{cache, limits, route, Gateway};

/// `x-request-id`, named once.
static REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// The route of one LLM endpoint: `op` in the format of `codec`.
pub(crate) fn endpoint(op: Operation, codec: &'static dyn Codec) -> MethodRouter<Arc<Gateway>> {
    // The headers are copied before the handler's future is made: hyper's map would otherwise
    // live in that future (its arguments are dropped only when it ends) until a stream's first
    // token, keeping the connection's read buffer with it (`owned_headers`).
    post(move |State(gw): State<Arc<Gateway>>, headers: HeaderMap, body: Body| {
        handle(gw, op, codec, owned_headers(&headers), body)
    })
}

/// One request, from its head to its response (a stream's body runs on after it returns).
/// `headers` are the request's, in memory of their own (`owned_headers`).
async fn handle(
    gw: Arc<Gateway>,
    op: Operation,
    codec: &'static dyn Codec,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let start = Instant::now();
    let _in_flight = InFlight::new(&gw.metrics.in_flight);
    let mut labels = Labels::new(request_id(&headers));
    labels.llm_operation = Some(op);
    let mut span = RequestSpan::start(gw.tracing(), op, codec.name() == ANTHROPIC.name(), &headers);
    labels.trace_id = span.trace_id();
    let result = serve(&gw, op, codec, &headers, body, start, &mut labels, &mut span).await;
    let (mut response, error) = match result {
        Ok(r) => (r, None),
        Err(e) => {
            let error = (e.message.clone(), e.kind);
            (codec.error(e), Some(error))
        }
    };
    let status = response.status().as_u16();
    // A stream's span is the forwarder's by now (empty here): it ends with the stream.
    span.served(&labels.route, &labels.backend, labels.attempts, labels.fallback_depth);
    span.status(status, error.as_ref().map(|e| e.1));
    if let Ok(v) = HeaderValue::from_str(&labels.request_id) {
        response.headers_mut().insert(&REQUEST_ID, v);
    }
    account::finish(&gw, &labels, status, start, error.as_ref().map(|e| e.0.as_str()));
    response
}

/// The stages, in order.
#[allow(clippy::too_many_arguments)]
async fn serve(
    gw: &Arc<Gateway>,
    op: Operation,
    codec: &'static dyn Codec,
    headers: &HeaderMap,
    body: Body,
    start: Instant,
    labels: &mut Labels,
    span: &mut RequestSpan,
) -> Result<Response, GatewayError> {
    // Auth: the virtual key.
    let rt = gw.runtime();
    let key = authenticate(&rt, headers)?;
    labels.team.clone_from(&key.team);
    // Every line after authentication names its key, refusals (404, 403, 429) included.
    labels.key.clone_from(&key.id);
    span.key(&key.team, &labels.request_id);

    // Read and parse, in the client's format (crate::ingress), into the typed request; a large
    // body whose prompt its route cannot take is refused from its outline, before it is parsed.
    let screen = |bytes: &[u8]| screen(&rt, &key, codec, bytes);
    let mut req = read(body, op, codec, &rt.config.settings, screen).await?;
    span.request(&req.model, &req.raw, req.stream);

    // Route: the key's route for the model, and whether it serves this endpoint.
    let route = rt.route_for(&key, &req.model)?;
    span.routed(req.op, &req.model);
    labels.set_route(&route);
    check_mode(req.op, &route, &req.model)?;
    check_backends(&rt, req.op, &route)?;

    // Limits (crate::limits): the key's rpm, tpm, slots in flight and budget reservation, taken
    // in one atomic step once the route (and so the prices) is known. Refusals are 429s with
    // OpenAI's x-ratelimit-* headers.
    let prompt = Prompt::measure(&req.raw);
    let admission = match limits::admit_measured(&gw.limits, &key, &route, || prompt.clone()).await {
        Ok(a) => a,
        Err(refused) => return Ok(respond::refused(codec, refused)),
    };
    let rate = admission.headers().clone();

    // Cache (crate::cache): exact match; a hit is replayed (a stream as a stream) and costs nothing.
    let cache = cache::Lookup::new(
        &route.config,
        headers,
        &key.config.namespace,
        &key.config.labels,
        codec.name(),
        &req,
    );
    if let Some(hit) = cache::hit(cache.as_ref(), gw.state().as_ref()).await {
        account::cache_hit(gw, labels, admission, start);
        labels.backend = "cache".into();
        let served = Served::cache_hit(&req, &labels.route, start.elapsed(), &rate);
        return Ok(respond::response(gw, hit.into_body(), &served));
    }

    // Attempts: rules, strategy, retries, fallbacks, cooldowns, hedging (crate::route).
    let (upstream, outcome) = route::execute(
        &gw.routing,
        &rt,
        &route,
        &key,
        &req.raw,
        req.original.as_ref(),
        prompt,
        headers,
        req.op,
        req.stream,
        span.parent(),
    )
    .await?;
    // The client's bytes served their purpose (every attempt is made): not held for a stream.
    req.original = None;
    let requested = std::mem::take(&mut labels.route);
    labels.served(&outcome);
    if route.config.log_prompts {
        account::log_prompt(labels, &req);
    }

    // Respond in the client's format (crate::respond); account (crate::account) when the usage
    // is known: now for a whole body, when it ends for a stream.
    let fill = cache.as_ref().and_then(cache::Lookup::fill);
    let account = Account::new(gw.clone(), labels.clone(), &outcome, start, admission, fill);
    let (body, stream) = respond::answer(codec, req, upstream, account, &outcome, labels, span)?;
    let overhead = start.elapsed().saturating_sub(outcome.upstream_elapsed);
    account::overhead(gw, labels, overhead);
    let looked_up = cache.is_some().then_some(&*requested);
    let served = Served::upstream(stream, &labels.route, overhead, &rate, looked_up, &outcome);
    Ok(respond::response(gw, body, &served))
}

/// The key presented in `Authorization: Bearer` or `x-api-key`, if it is one of ours.
pub(crate) fn authenticate(rt: &Runtime, headers: &HeaderMap) -> Result<Arc<Key>, GatewayError> {
    rt.authenticate(presented_key(headers)?, unix_now())
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

/// Bodies from this size on are screened ([`screen`]) before they are parsed.
const SCREENED_BYTES: usize = 256 * 1024;

/// Refuses a large body whose prompt no backend of its route could take (`route::refuse_unfit`),
/// from its outline: the tree a parse would build of many tiny items is ~25 times the body.
/// Anything the outline cannot settle (no model, an unknown one, not JSON) is the parse's.
fn screen(rt: &Runtime, key: &Key, codec: &dyn Codec, bytes: &[u8]) -> Result<(), GatewayError> {
    if bytes.len() < SCREENED_BYTES {
        return Ok(());
    }
    let Some(outline) = codec.outline(bytes) else {
        return Ok(());
    };
    match outline.model.as_deref().map(|m| rt.route_for(key, m)) {
        Some(Ok(route)) => route::refuse_unfit(&route, &outline.prompt()),
        _ => Ok(()),
    }
}

/// Refuses (413) a body of [`SCREENED_BYTES`] or more that holds more JSON values than
/// `maxRequestValues`, before anything parses it into a tree.
pub(crate) fn values_within(bytes: &[u8], settings: &Settings) -> Result<(), GatewayError> {
    if bytes.len() >= SCREENED_BYTES && request::values_over(bytes, settings.max_request_values) {
        return Err(GatewayError::too_many_values(settings.max_request_values));
    }
    Ok(())
}

/// The body, at most `maxRequestBytes` bytes (and, from [`SCREENED_BYTES`] on, at most
/// `maxRequestValues` JSON values), checked by `screen` and parsed by the client's codec.
pub(crate) async fn read(
    body: Body,
    op: Operation,
    codec: &dyn Codec,
    settings: &Settings,
    screen: impl FnOnce(&[u8]) -> Result<(), GatewayError>,
) -> Result<Request, GatewayError> {
    let limit = settings.max_request_bytes;
    // The bytes are dropped here, parsed: the body shares hyper's 8 KiB read buffer, and a
    // `Bytes` kept until the response ended would hold that buffer for as long as a stream stays
    // open (hyper reads into a new one meanwhile): 8 KiB more per open stream.
    let bytes = axum::body::to_bytes(body, usize::try_from(limit).unwrap_or(usize::MAX))
        .await
        .map_err(|e| {
            let too_large = std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                || e.to_string().contains("length limit");
            if too_large {
                GatewayError::too_large(limit)
            } else {
                GatewayError::bad_request(format!("could not read the request body: {e}"), None)
            }
        })?;
    values_within(&bytes, settings)?;
    screen(&bytes)?;
    codec.parse(op, &bytes)
}

pub(crate) fn check_mode(op: Operation, route: &Route, model: &str) -> Result<(), GatewayError> {
    if crate::runtime::serves(route.config.mode, op) {
        Ok(())
    } else {
        let mode = match route.config.mode {
            RouteMode::Chat => "chat",
            RouteMode::Embeddings => "embeddings",
            RouteMode::Completions => "completions",
            RouteMode::Moderation => "moderation",
            RouteMode::Rerank => "rerank",
            RouteMode::ImageGeneration => "image generation",
            RouteMode::AudioTranscription => "audio transcription",
            RouteMode::AudioSpeech => "audio speech",
        };
        Err(GatewayError::bad_request(
            format!("model `{model}` is a {mode} route and does not serve this endpoint"),
            Some("model"),
        ))
    }
}

/// A route with a backend whose provider's API lacks the endpoint (moderations on Groq, rerank
/// on OpenAI) is refused before any attempt, naming the route, the backend and its provider.
pub(crate) fn check_backends(rt: &Runtime, op: Operation, route: &Route) -> Result<(), GatewayError> {
    let lacking = route.config.backends.iter().find_map(|b| {
        let p = rt.provider(&b.provider)?;
        (!switchyard_providers::serves(p.kind, op)).then_some((b, p))
    });
    match lacking {
        None => Ok(()),
        Some((b, p)) => Err(GatewayError::bad_request(
            format!(
                "route `{}/{}` cannot serve {}: its backend `{}` is on provider `{}` of type {}, whose API has no such endpoint",
                route.config.namespace,
                route.config.model,
                op.path(),
                b.name,
                p.id,
                p.kind.as_str()
            ),
            Some("model"),
        )),
    }
}

/// The request id: the client's `x-request-id` when it is short printable ASCII, else a new one.
pub(crate) fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| random_hex(rand::random::<[u8; 16]>()), str::to_owned)
}

/// Random bytes as lowercase hex, for ids made per request: `format!("{:x}")` and
/// `hex::encode` each cost ~1 k instructions more than this loop.
pub(crate) fn random_hex<const N: usize>(bytes: [u8; N]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = Vec::with_capacity(2 * N);
    for b in bytes {
        hex.push(DIGITS[usize::from(b >> 4)]);
        hex.push(DIGITS[usize::from(b & 0xf)]);
    }
    String::from_utf8(hex).unwrap_or_default()
}

/// The request's headers in memory of their own (one buffer for all the values). hyper parses
/// header values as slices of the connection's 8 KiB read buffer, so headers kept for a whole
/// request keep that buffer alive while hyper reads on into a new one: 8 KiB more per request
/// in flight, i.e. per open stream (massif, bench/results/profiling.md).
pub(crate) fn owned_headers(headers: &HeaderMap) -> HeaderMap {
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

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::ingress::OPENAI;

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
        let h = handle(gw, Operation::Chat, &OPENAI, HeaderMap::new(), Body::empty());
        assert!(std::mem::size_of_val(&h) <= 4096, "{} bytes", std::mem::size_of_val(&h));
    }
}
