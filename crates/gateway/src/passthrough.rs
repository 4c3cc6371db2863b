//! Pass-through: `/passthrough/{provider}/{path}` forwards a request the gateway does not model
//! (any method, query string kept) to `{baseUrl}/{path}` of a Provider of the key's namespace,
//! with the Provider's credentials set as its adapter sets them (Vertex AI's OAuth token from the
//! gateway's token cache, Bedrock's SigV4 signature by its adapter's signer), and streams the
//! answer back with its status and headers. docs/passthrough.md.
//!
//! In order, in [`serve`]: auth (the virtual key) -> the Provider, which the key must name in
//! `allowedPassthrough` -> limits (`crate::limits::admit_passthrough`: rpm, parallel, a spent
//! budget; nothing reserved) -> upstream -> the answer, forwarded frame by frame ([`Forward`])
//! -> account (`crate::account::passthrough`) when it ends, with the usage of a JSON answer or
//! an event stream when the adapter reads one (or, for Bedrock's InvokeModel, of its headers).
//!
//! Bodies are not held whole either way: the request streams to the provider as it arrives,
//! the response to the client as it comes. The exception is a request the adapter signs over
//! its body (Bedrock's SigV4), read whole first, at most `maxRequestBytes`. Only a JSON answer
//! is also kept, up to the fleet's `maxResponseBytes`, to read its usage at the end; an event
//! stream (`text/event-stream`, or Bedrock's ConverseStream) goes through the Provider's stream
//! translator on its way (its output dropped) for its usage, and its first 16 KiB are kept for
//! the model it names. The client's credentials and hop-by-hop headers never reach the
//! provider; hop-by-hop headers of the answer never reach the client.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, MethodRouter};
use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method};
use http_body::{Frame, SizeHint};
use switchyard_config::{Price, ProviderConfig, ProviderKind};
use switchyard_providers::{self as providers, ErrorKind, Operation, ProviderError, Target, Usage};

use crate::account::{self, InFlight, Labels};
use crate::error::GatewayError;
use crate::ingress::OPENAI;
use crate::limits::{self, Admission};
use crate::pipeline::{authenticate, request_id};
use crate::runtime::{Key, Runtime};
use crate::upstream_client::UpstreamBody;
use crate::{respond, Gateway};

/// The route label of pass-through requests in metrics and access log lines (their backend
/// label is the Provider, `namespace/name`).
pub(crate) const OPERATION: &str = "passthrough";

/// The route of `/passthrough/{*path}`, every method.
pub(crate) fn endpoint() -> MethodRouter<Arc<Gateway>> {
    any(
        // The router is not nested: the request's URI is the one the client sent.
        |State(gw): State<Arc<Gateway>>, method: Method, uri: http::Uri, headers: HeaderMap, body: Body| {
            handle(gw, method, uri, headers, body)
        },
    )
}

/// Hop-by-hop headers (RFC 9110 section 7.6.1), never forwarded in either direction; nor are
/// the ones a `connection` header names.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Where clients put a key (the virtual key, here): the gateway's own two, and the headers
/// provider SDKs send theirs in. None of them is forwarded; the Provider's credentials are set.
const CLIENT_CREDENTIALS: [&str; 4] = ["authorization", "x-api-key", "api-key", "x-goog-api-key"];

async fn handle(gw: Arc<Gateway>, method: Method, uri: http::Uri, headers: HeaderMap, body: Body) -> Response {
    let start = Instant::now();
    let _in_flight = InFlight::new(&gw.metrics.in_flight);
    let mut labels = Labels::new(request_id(&headers));
    labels.name_route(OPERATION.into());
    labels.operation = Some(OPERATION);
    let result = serve(&gw, method, &uri, headers, body, start, &mut labels).await;
    let (mut response, error) = match result {
        Ok(r) => (r, None),
        Err(e) => {
            let message = e.message.clone();
            (e.into_response(), Some(message))
        }
    };
    if let Ok(v) = HeaderValue::from_str(&labels.request_id) {
        response.headers_mut().insert("x-request-id", v);
    }
    account::finish(&gw, &labels, response.status().as_u16(), start, error.as_deref());
    response
}

/// The stages, in order.
async fn serve(
    gw: &Arc<Gateway>,
    method: Method,
    uri: &http::Uri,
    headers: HeaderMap,
    body: Body,
    start: Instant,
    labels: &mut Labels,
) -> Result<Response, GatewayError> {
    // Auth: the virtual key.
    let rt = gw.runtime();
    let key = authenticate(&rt, &headers)?;
    labels.team.clone_from(&key.team);
    labels.key = key.id.clone();

    // The Provider: of the key's namespace, named in its allowedPassthrough, one with an HTTP API.
    let (name, rest) = split(uri.path()).ok_or_else(|| unknown_provider(""))?;
    let provider = provider_for(&rt, &key, name)?;
    labels.backend = provider.id.as_str().into();
    labels.provider = provider.kind.as_str();
    forwards_to(&provider)?;
    let url = upstream_url(&provider.base_url, rest, uri.query())?;
    let uri = crate::urls::parse(&url).map_err(|e| GatewayError::bad_request(e, None))?;
    let limit = rt.config.settings.max_request_bytes;
    if content_length(&headers).is_some_and(|n| n > limit) {
        return Err(GatewayError::too_large(limit));
    }

    // Limits: rpm, requests in flight, a budget already spent; nothing reserved.
    let admission = match limits::admit_passthrough(&gw.limits, &key, OPERATION).await {
        Ok(a) => a,
        Err(refused) => return Ok(respond::refused(&OPENAI, refused)),
    };

    // Upstream: the Provider's credentials as its adapter sets them (an OAuth token from the
    // cache routing uses; a signature over the whole body, read first, at most maxRequestBytes
    // of it); else the body streams as it arrives, at most maxRequestBytes of it.
    let adapter = providers::adapter(provider.kind);
    let bearer = gw
        .tokens
        .get(&gw.audio_client, &provider)
        .await
        .map_err(|e| GatewayError::upstream(&e, &provider.id))?;
    let target = Target {
        bearer: bearer.as_deref(),
        ..any_model(&provider)
    };
    let limited = http_body_util::Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    let (credentials, body) = if adapter.signs_body() {
        let whole = read_whole(limited, limit).await?;
        let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let forwarded = providers::Forwarded {
            method: &method,
            url: &url,
            content_type,
            body: &whole,
        };
        let credentials = adapter
            .credentials_for(&forwarded, &target)
            .map_err(|e| GatewayError::upstream(&e, &provider.id))?;
        (credentials, Body::from(whole))
    } else {
        let credentials = adapter
            .credentials(&target)
            .map_err(|e| GatewayError::upstream(&e, &provider.id))?;
        (credentials, Body::new(limited))
    };
    let mut up_headers = request_headers(&headers, &credentials);
    if let Ok(v) = HeaderValue::from_str(&labels.request_id) {
        up_headers.insert("x-request-id", v);
    }
    let wait = Duration::from_millis(provider.timeouts.request_ms);
    let sent = gw
        .upstream
        .send_streamed(provider.http_version, method, uri, up_headers, body);
    let resp = match tokio::time::timeout(wait, sent).await {
        Err(_) => {
            let e = ProviderError::new(ErrorKind::Timeout, "the upstream did not answer in time");
            return Err(GatewayError::upstream(&e, &provider.id));
        }
        Ok(Err(e)) => return Err(GatewayError::upstream(&e, &provider.id)),
        Ok(Ok(r)) => r,
    };

    // The answer, as it comes; accounted when it ends (`Forward`).
    let (mut parts, upstream) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if key.config.limits.rpm.is_some() || key.config.limits.tpm.is_some() {
        // The key's limits are what its client is held to: the provider account's would mislead.
        drop_rate_headers(&mut parts.headers);
        admission.headers().apply(&mut parts.headers);
    }
    let status = parts.status.as_u16();
    let ok = (200..300).contains(&status);
    let model = path_model(provider.kind, rest);
    let counted = ok.then(|| counted_usage(provider.kind, &parts.headers)).flatten();
    let keep = ok && counted.is_none() && is_plain_json(&parts.headers);
    let events = (ok && counted.is_none())
        .then(|| stream_operation(provider.kind, rest, &parts.headers))
        .flatten()
        .map(|op| Events::new(&provider, model.as_deref().unwrap_or(""), op));
    let cap = usize::try_from(rt.config.settings.max_response_bytes).unwrap_or(usize::MAX);
    labels.accounted = true;
    let idle = Duration::from_millis(provider.timeouts.stream_idle_ms);
    let forward = Forward {
        body: upstream,
        idle,
        timer: Box::pin(tokio::time::sleep(idle)),
        seen: keep.then(BytesMut::new),
        cap,
        events,
        end: Some(End {
            gw: gw.clone(),
            labels: labels.clone(),
            status,
            start,
            admission,
            provider,
            model,
            counted,
        }),
    };
    Ok(Response::from_parts(parts, Body::new(forward)))
}

/// The Provider name and the rest of a `/passthrough/{provider}/{path}` path, as the client
/// wrote it (percent-encoding kept).
fn split(path: &str) -> Option<(&str, &str)> {
    let tail = path.strip_prefix("/passthrough/")?;
    let (name, rest) = tail.split_once('/').unwrap_or((tail, ""));
    (!name.is_empty()).then_some((name, rest))
}

fn unknown_provider(name: &str) -> GatewayError {
    GatewayError::not_found(format!(
        "Provider `{name}` not found. Pass-through reaches the Providers of the API key's namespace by name: \
         /passthrough/{{provider}}/{{path}}."
    ))
}

/// The Provider `name` of the key's namespace, if the key may pass through to it: 404 when the
/// namespace has none of that name (whatever other namespaces have), 403 when the key does not
/// name it in `allowedPassthrough`.
fn provider_for(rt: &Runtime, key: &Key, name: &str) -> Result<Arc<ProviderConfig>, GatewayError> {
    if name.contains('/') {
        return Err(unknown_provider(name));
    }
    let Some(provider) = rt.provider(&format!("{}/{name}", key.config.namespace)) else {
        return Err(unknown_provider(name));
    };
    if !key.config.allowed_passthrough.iter().any(|a| a == name) {
        return Err(GatewayError::forbidden(format!(
            "This API key may not pass through to provider `{name}`: its VirtualKey does not name it in spec.allowedPassthrough."
        )));
    }
    Ok(provider.clone())
}

/// 400 for a Provider with no HTTP API to forward to (the in-gateway mock).
fn forwards_to(provider: &ProviderConfig) -> Result<(), GatewayError> {
    if provider.kind == ProviderKind::Mock || provider.base_url.is_empty() {
        return Err(GatewayError::bad_request(
            format!(
                "pass-through does not serve provider `{}`: providers of type {} have no HTTP API to forward to",
                provider.id,
                provider.kind.as_str()
            ),
            None,
        ));
    }
    Ok(())
}

/// A request body read whole (for a signature over it): 413 past `limit` bytes.
async fn read_whole(body: http_body_util::Limited<Body>, limit: u64) -> Result<Bytes, GatewayError> {
    use http_body_util::BodyExt;
    match body.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(GatewayError::too_large(limit)),
        Err(e) => Err(GatewayError::bad_request(
            format!("the request body could not be read: {e}"),
            None,
        )),
    }
}

/// The Provider as a target with no model: pass-through names none.
fn any_model(provider: &ProviderConfig) -> Target<'_> {
    Target {
        provider,
        model: "",
        drop_unsupported_params: false,
        now: SystemTime::now(),
        bearer: None,
    }
}

/// `{base}/{rest}?{query}`. Dot segments (`.`, `..`, percent-encoded too) are refused: a path
/// must not climb out of the Provider's base URL.
fn upstream_url(base: &str, rest: &str, query: Option<&str>) -> Result<String, GatewayError> {
    let climbs = rest.split('/').any(|seg| {
        let seg = seg.to_ascii_lowercase().replace("%2e", ".");
        seg == "." || seg == ".."
    });
    if climbs {
        return Err(GatewayError::bad_request(
            "pass-through paths may not hold `.` or `..` segments",
            None,
        ));
    }
    let mut url = format!("{}/{rest}", base.trim_end_matches('/'));
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    Ok(url)
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// Drops hop-by-hop headers and those the `connection` header names.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(n);
    }
}

/// Drops `x-ratelimit-*` headers.
fn drop_rate_headers(h: &mut HeaderMap) {
    let names: Vec<HeaderName> = h
        .keys()
        .filter(|n| n.as_str().starts_with("x-ratelimit-"))
        .cloned()
        .collect();
    for n in names {
        h.remove(n);
    }
}

/// The client's headers as they go upstream: without hop-by-hop headers, `host` (the
/// Provider's), `accept-encoding` (a compressed answer's usage could not be read; the client
/// gets it uncompressed) and the client's credentials; with the Provider's `credentials`,
/// except their `content-type` (the client's body is forwarded as it is) and an
/// `anthropic-version` the client chose.
fn request_headers(client: &HeaderMap, credentials: &HeaderMap) -> HeaderMap {
    let mut out = client.clone();
    strip_hop_by_hop(&mut out);
    for n in CLIENT_CREDENTIALS {
        out.remove(n);
    }
    out.remove(header::HOST);
    out.remove(header::ACCEPT_ENCODING);
    if credentials.contains_key("x-amz-date") {
        // A SigV4 signature: the client's own `x-amz-*` headers (a date, a session token, a
        // payload hash) would contradict it.
        let theirs: Vec<HeaderName> = out
            .keys()
            .filter(|n| n.as_str().starts_with("x-amz-"))
            .cloned()
            .collect();
        for n in theirs {
            out.remove(n);
        }
    }
    for (name, value) in credentials {
        if name == header::CONTENT_TYPE || (name == "anthropic-version" && out.contains_key(name)) {
            continue;
        }
        out.insert(name.clone(), value.clone());
    }
    out
}

/// The media type of an answer the gateway can read (lowercase, without parameters): `None`
/// when it has none or is compressed.
fn plain_media_type(h: &HeaderMap) -> Option<String> {
    let plain = h
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|e| e.trim().eq_ignore_ascii_case("identity"));
    let t = h.get(header::CONTENT_TYPE)?.to_str().ok()?.split(';').next()?;
    plain.then(|| t.trim().to_ascii_lowercase())
}

/// A JSON answer the gateway can read: `application/json` (or `+json`), not compressed.
fn is_plain_json(h: &HeaderMap) -> bool {
    plain_media_type(h).is_some_and(|t| t == "application/json" || t.ends_with("+json"))
}

/// A stream of server-sent events the gateway can read, not compressed.
fn is_plain_events(h: &HeaderMap) -> bool {
    plain_media_type(h).is_some_and(|t| t == "text/event-stream")
}

/// The operation whose stream format an answer is read in, if it is a stream the Provider's
/// translator reads: server-sent events (OpenAI's Responses and legacy completions by their
/// path, anything else read as a chat stream, each provider's own), and Bedrock's
/// ConverseStream (AWS's binary event stream; InvokeModelWithResponseStream's chunks are
/// another format, not read).
fn stream_operation(kind: ProviderKind, rest: &str, h: &HeaderMap) -> Option<Operation> {
    let path = rest.split('?').next().unwrap_or(rest).trim_end_matches('/');
    if kind == ProviderKind::Bedrock {
        let converse = plain_media_type(h).is_some_and(|t| t == "application/vnd.amazon.eventstream");
        return (converse && path.ends_with("/converse-stream")).then_some(Operation::Chat);
    }
    if !is_plain_events(h) {
        return None;
    }
    Some(if path.ends_with("/responses") || path == "responses" {
        Operation::Responses
    } else if path.ends_with("/completions") && !path.ends_with("/chat/completions") || path == "completions" {
        Operation::Completions
    } else {
        Operation::Chat
    })
}

/// The model a path names, for the providers that name it there rather than in the answer:
/// Bedrock's `model/{modelId}/...` and Vertex AI's `.../models/{model}:{method}`
/// (percent-decoded).
fn path_model(kind: ProviderKind, rest: &str) -> Option<String> {
    let path = rest.split('?').next().unwrap_or(rest);
    let raw = match kind {
        ProviderKind::Bedrock => {
            let mut segments = path.split('/');
            segments.find(|s| *s == "model")?;
            segments.next()?
        }
        ProviderKind::Vertex => {
            let (_, tail) = path.rsplit_once("/models/")?;
            tail.split(':').next()?
        }
        _ => return None,
    };
    let decoded = percent_decoded(raw)?;
    (!decoded.is_empty()).then_some(decoded)
}

/// `%XX` escapes decoded; `None` when they are malformed or the result is not UTF-8.
fn percent_decoded(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Usage an answer's headers count: Bedrock's InvokeModel reports its tokens in
/// `x-amzn-bedrock-input-token-count` and `x-amzn-bedrock-output-token-count`, whatever the
/// model's body format.
fn counted_usage(kind: ProviderKind, h: &HeaderMap) -> Option<Usage> {
    if kind != ProviderKind::Bedrock {
        return None;
    }
    let count = |name: &str| -> Option<u64> { h.get(name)?.to_str().ok()?.trim().parse().ok() };
    let prompt = count("x-amzn-bedrock-input-token-count")?;
    Some(Usage {
        prompt_tokens: prompt,
        completion_tokens: count("x-amzn-bedrock-output-token-count").unwrap_or(0),
        ..Usage::default()
    })
}

/// How much of an event stream's start is kept to find the model it names.
const EVENTS_HEAD_BYTES: usize = 16 * 1024;

/// An event stream read on its way through for its usage: the Provider's own stream
/// translator (its output is dropped), and the stream's start, for the model.
struct Events {
    translator: Box<dyn providers::StreamTranslator>,
    scratch: Vec<Bytes>,
    head: BytesMut,
}

impl Events {
    /// `model`: the one the path names, else empty.
    fn new(provider: &ProviderConfig, model: &str, op: Operation) -> Self {
        let target = Target {
            model,
            ..any_model(provider)
        };
        Self {
            translator: providers::adapter(provider.kind).stream(op, &target),
            scratch: Vec::new(),
            head: BytesMut::new(),
        }
    }

    /// Reads one chunk; `false` once the stream cannot be read (it is forwarded all the same).
    fn feed(&mut self, data: &Bytes) -> bool {
        let room = EVENTS_HEAD_BYTES.saturating_sub(self.head.len());
        self.head.extend_from_slice(&data[..data.len().min(room)]);
        let ok = self.translator.feed(data.clone(), &mut self.scratch).is_ok();
        self.scratch.clear();
        ok
    }

    /// The model the stream names in its first events: `model` (OpenAI-style chunks),
    /// `message.model` (Anthropic's `message_start`), `response.model` (Responses), or
    /// `modelVersion` (Gemini).
    fn model(&self) -> Option<String> {
        let text = String::from_utf8_lossy(&self.head);
        text.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str::<serde_json::Value>(d.trim()).ok())
            .find_map(|v| {
                [
                    v.get("model"),
                    v.pointer("/message/model"),
                    v.pointer("/response/model"),
                    v.get("modelVersion"),
                ]
                .into_iter()
                .flatten()
                .find_map(|m| m.as_str().map(str::to_owned))
            })
    }
}

/// A JSON answer's usage, as the Provider's adapter reads a chat answer (OpenAI's `usage`, and
/// each native format's: Bedrock's Converse, Gemini's, Claude's on Vertex AI by the path's
/// model), and its price: the price of a backend on this Provider serving the model (the
/// path's, else the answer's `model`), else the built-in table's for the Provider's type.
fn usage_and_price(
    rt: &Runtime,
    provider: &ProviderConfig,
    path_model: Option<&str>,
    body: &[u8],
) -> (Option<Usage>, Option<Price>) {
    #[derive(serde::Deserialize)]
    struct Model {
        #[serde(default)]
        model: Option<String>,
        /// Gemini's.
        #[serde(default, rename = "modelVersion")]
        model_version: Option<String>,
    }
    let target = Target {
        model: path_model.unwrap_or(""),
        ..any_model(provider)
    };
    let usage = providers::adapter(provider.kind)
        .parse(Operation::Chat, body, &target)
        .ok()
        .and_then(|t| t.usage);
    let Some(usage) = usage else {
        return (None, None);
    };
    let model = path_model.map(str::to_owned).or_else(|| {
        serde_json::from_slice::<Model>(body)
            .ok()
            .and_then(|m| m.model.or(m.model_version))
    });
    (Some(usage), model.and_then(|m| price_of(rt, provider, &m)))
}

/// The price of `model` on `provider`: a backend's on this Provider serving that model, else the
/// built-in table's for the Provider's type.
fn price_of(rt: &Runtime, provider: &ProviderConfig, model: &str) -> Option<Price> {
    rt.config
        .routes
        .iter()
        .flat_map(|r| &r.backends)
        .find(|b| b.provider == provider.id && b.model == model && b.price.is_some())
        .and_then(|b| b.price)
        .or_else(|| switchyard_config::prices::lookup_for(provider.kind, model).map(|i| i.price))
}

/// The upstream's answer on its way to the client, frame by frame: an idle timeout per
/// frame, a JSON body kept (up to `cap` bytes) for its usage, and the request accounted once,
/// when the body ends, fails, or the client goes away.
struct Forward {
    body: UpstreamBody,
    idle: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    /// The body so far, while it is one whose usage can be read and under `cap`.
    seen: Option<BytesMut>,
    cap: usize,
    /// An event stream, read for its usage while it can be.
    events: Option<Events>,
    end: Option<End>,
}

/// What accounting a pass-through request needs when its answer ends.
struct End {
    gw: Arc<Gateway>,
    labels: Labels,
    status: u16,
    start: Instant,
    admission: Admission,
    provider: Arc<ProviderConfig>,
    /// The model the path names (Bedrock, Vertex AI).
    model: Option<String>,
    /// Usage the answer's headers counted (Bedrock's InvokeModel).
    counted: Option<Usage>,
}

impl Forward {
    /// Accounts the request, once; `complete`: the whole body went by.
    fn finish(&mut self, complete: bool) {
        let Some(end) = self.end.take() else { return };
        let seen = self.seen.take().filter(|_| complete);
        let (usage, price) = match (seen, self.events.take()) {
            // Counted in the headers: true however the body ends.
            _ if end.counted.is_some() => {
                let price = end
                    .model
                    .as_deref()
                    .and_then(|m| price_of(&end.gw.runtime(), &end.provider, m));
                (end.counted, price)
            }
            (Some(body), _) => usage_and_price(&end.gw.runtime(), &end.provider, end.model.as_deref(), &body),
            // A stream's usage as far as it went: a stream cut before its usage event costs
            // what its events reported (Anthropic's input tokens come first), else nothing known.
            (None, Some(events)) => match events.translator.usage() {
                Some(usage) => {
                    let price = end
                        .model
                        .clone()
                        .or_else(|| events.model())
                        .and_then(|m| price_of(&end.gw.runtime(), &end.provider, &m));
                    (Some(usage), price)
                }
                None => (None, None),
            },
            (None, None) => (None, None),
        };
        account::passthrough(
            &end.gw,
            &end.labels,
            end.status,
            end.start,
            usage.as_ref(),
            price.as_ref(),
            end.admission,
        );
    }
}

impl http_body::Body for Forward {
    type Data = Bytes;
    type Error = ProviderError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, ProviderError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let next = tokio::time::Instant::now() + this.idle;
                this.timer.as_mut().reset(next);
                if let (Some(data), Some(seen)) = (frame.data_ref(), this.seen.as_mut()) {
                    if seen.len() + data.len() > this.cap {
                        // Too large to read for usage: forwarded all the same, cost unknown.
                        this.seen = None;
                    } else {
                        seen.extend_from_slice(data);
                    }
                }
                if let (Some(data), Some(events)) = (frame.data_ref(), this.events.as_mut()) {
                    if !events.feed(data) {
                        // Not the Provider's event format: forwarded all the same, cost unknown.
                        this.events = None;
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.finish(false);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.finish(true);
                Poll::Ready(None)
            }
            Poll::Pending => {
                if std::future::Future::poll(this.timer.as_mut(), cx).is_ready() {
                    this.finish(false);
                    return Poll::Ready(Some(Err(ProviderError::new(
                        ErrorKind::Timeout,
                        "the upstream went silent",
                    ))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        // The server stops polling once a body of known length is all sent: that is complete.
        let complete = http_body::Body::is_end_stream(&self.body);
        self.finish(complete);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn paths_name_the_provider_and_keep_the_rest_as_written() {
        assert_eq!(split("/passthrough/openai/v1/files"), Some(("openai", "v1/files")));
        assert_eq!(split("/passthrough/openai/v1/a%2Fb"), Some(("openai", "v1/a%2Fb")));
        assert_eq!(split("/passthrough/openai"), Some(("openai", "")));
        assert_eq!(split("/passthrough/"), None);
        assert_eq!(split("/v1/chat/completions"), None);
    }

    #[test]
    fn urls_join_the_base_and_keep_the_query() {
        let u = upstream_url("https://api.openai.com/v1/", "files/f-1/content", Some("a=1&b=%20"));
        assert_eq!(
            u.ok().as_deref(),
            Some("https://api.openai.com/v1/files/f-1/content?a=1&b=%20")
        );
        let u = upstream_url("https://x.example/v1", "", None);
        assert_eq!(u.ok().as_deref(), Some("https://x.example/v1/"));
    }

    #[test]
    fn paths_may_not_climb_out_of_the_base_url() {
        for rest in ["../admin", "v1/./x", "v1/%2e%2E/secrets", "v1/.."] {
            let e = upstream_url("https://x.example/tenant/v1", rest, None).err();
            assert_eq!(e.map(|e| e.status), Some(http::StatusCode::BAD_REQUEST), "{rest}");
        }
        assert!(upstream_url("https://x.example/v1", "files/..hidden", None).is_ok());
    }

    #[test]
    fn the_clients_key_never_goes_upstream_and_the_providers_does() {
        let client = map(&[
            ("authorization", "Bearer sk-virtual"),
            ("x-api-key", "sk-virtual"),
            ("api-key", "sk-virtual"),
            ("x-goog-api-key", "sk-virtual"),
            ("host", "gateway.example"),
            ("connection", "keep-alive, x-drop-me"),
            ("x-drop-me", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("accept-encoding", "gzip"),
            ("content-type", "multipart/form-data; boundary=x"),
            ("content-length", "42"),
            ("anthropic-version", "2023-01-01"),
            ("anthropic-beta", "files-api-2025-04-14"),
            ("openai-beta", "assistants=v2"),
        ]);
        let mut creds = map(&[
            ("content-type", "application/json"),
            ("anthropic-version", "2023-06-01"),
            ("x-provider-extra", "yes"),
        ]);
        creds.insert("x-api-key", HeaderValue::from_static("sk-provider"));
        let out = request_headers(&client, &creds);
        assert_eq!(out["x-api-key"], "sk-provider");
        for gone in [
            "authorization",
            "api-key",
            "x-goog-api-key",
            "host",
            "connection",
            "x-drop-me",
            "keep-alive",
            "transfer-encoding",
            "accept-encoding",
        ] {
            assert!(!out.contains_key(gone), "{gone} was forwarded");
        }
        // The client's body type, version and other headers stay; the Provider's extras join.
        assert_eq!(out["content-type"], "multipart/form-data; boundary=x");
        assert_eq!(out["content-length"], "42");
        assert_eq!(out["anthropic-version"], "2023-01-01");
        assert_eq!(out["anthropic-beta"], "files-api-2025-04-14");
        assert_eq!(out["openai-beta"], "assistants=v2");
        assert_eq!(out["x-provider-extra"], "yes");
        // Without the client's, the adapter's version is sent.
        let out = request_headers(&map(&[]), &creds);
        assert_eq!(out["anthropic-version"], "2023-06-01");
    }

    #[test]
    fn each_provider_type_gets_its_own_credential_header() {
        use switchyard_config::{CredentialsConfig, SecretString};
        let provider = |kind: ProviderKind| ProviderConfig {
            id: "ns/p".into(),
            kind,
            base_url: "https://upstream.example".into(),
            credentials: Some(CredentialsConfig::ApiKey {
                key: SecretString::new("sk-provider"),
            }),
            region: None,
            api_version: None,
            project: None,
            headers: Default::default(),
            quota: Default::default(),
            timeouts: Default::default(),
            circuit_breaker: Default::default(),
            mock: None,
            http_version: Default::default(),
        };
        let header_of = |kind| {
            let p = provider(kind);
            forwards_to(&p).map_err(|e| e.message)?;
            let target = Target {
                bearer: Some("ya29.token"),
                ..any_model(&p)
            };
            providers::adapter(kind).credentials(&target).map_err(|e| e.message)
        };
        let h = header_of(ProviderKind::Openai).unwrap();
        assert_eq!(h["authorization"], "Bearer sk-provider");
        let h = header_of(ProviderKind::Groq).unwrap();
        assert_eq!(h["authorization"], "Bearer sk-provider");
        let h = header_of(ProviderKind::AzureOpenai).unwrap();
        assert_eq!(h["api-key"], "sk-provider");
        let h = header_of(ProviderKind::Anthropic).unwrap();
        assert_eq!(h["x-api-key"], "sk-provider");
        assert!(h.contains_key("anthropic-version"));
        let h = header_of(ProviderKind::Gemini).unwrap();
        assert_eq!(h["x-goog-api-key"], "sk-provider");
        for kind in [ProviderKind::Cohere, ProviderKind::Voyage] {
            assert_eq!(header_of(kind).unwrap()["authorization"], "Bearer sk-provider");
        }
        // Vertex AI: the OAuth token of the gateway's token cache.
        let h = header_of(ProviderKind::Vertex).unwrap();
        assert_eq!(h["authorization"], "Bearer ya29.token");
        // Bedrock signs each request over its body: see `credentials_for`.
        assert!(providers::adapter(ProviderKind::Bedrock).signs_body());
        let e = header_of(ProviderKind::Mock).err().unwrap();
        assert!(e.contains("mock"), "{e}");
    }

    #[test]
    fn a_sigv4_signature_is_not_contradicted_by_the_clients_aws_headers() {
        let client = map(&[
            ("x-amz-date", "20000101T000000Z"),
            ("x-amz-security-token", "theirs"),
            ("x-amzn-bedrock-trace", "ENABLED"),
            ("content-type", "application/json"),
        ]);
        let creds = map(&[
            ("x-amz-date", "20261203T000000Z"),
            ("x-amz-content-sha256", "abc"),
            ("authorization", "AWS4-HMAC-SHA256 ..."),
        ]);
        let out = request_headers(&client, &creds);
        assert_eq!(out["x-amz-date"], "20261203T000000Z");
        assert!(!out.contains_key("x-amz-security-token"));
        assert_eq!(out["x-amzn-bedrock-trace"], "ENABLED");
        // Without a signature, the client's are the client's.
        let out = request_headers(&client, &map(&[("authorization", "Bearer k")]));
        assert_eq!(out["x-amz-security-token"], "theirs");
    }

    #[test]
    fn bedrock_and_vertex_paths_name_their_model() {
        assert_eq!(
            path_model(
                ProviderKind::Bedrock,
                "model/us.anthropic.claude-3-5-haiku-20241022-v1%3A0/invoke"
            )
            .as_deref(),
            Some("us.anthropic.claude-3-5-haiku-20241022-v1:0")
        );
        assert_eq!(
            path_model(ProviderKind::Bedrock, "model/amazon.nova-lite-v1:0/converse?x=1").as_deref(),
            Some("amazon.nova-lite-v1:0")
        );
        assert_eq!(
            path_model(
                ProviderKind::Vertex,
                "v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent"
            )
            .as_deref(),
            Some("gemini-2.5-flash")
        );
        assert_eq!(path_model(ProviderKind::Bedrock, "async-invoke"), None);
        assert_eq!(path_model(ProviderKind::Openai, "model/x/invoke"), None);
        assert_eq!(path_model(ProviderKind::Bedrock, "model/%zz/invoke"), None);
    }

    #[test]
    fn bedrock_counts_invoke_model_tokens_in_its_headers() {
        let h = map(&[
            ("x-amzn-bedrock-input-token-count", "12"),
            ("x-amzn-bedrock-output-token-count", "34"),
        ]);
        let u = counted_usage(ProviderKind::Bedrock, &h).unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (12, 34));
        assert_eq!(counted_usage(ProviderKind::Openai, &h), None);
        assert_eq!(counted_usage(ProviderKind::Bedrock, &map(&[])), None);
    }

    #[test]
    fn hop_by_hop_headers_of_the_answer_are_dropped() {
        let mut h = map(&[
            ("connection", "close, x-hop"),
            ("x-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("content-type", "text/event-stream"),
            ("openai-processing-ms", "12"),
        ]);
        strip_hop_by_hop(&mut h);
        let names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["content-type", "openai-processing-ms"]);
        let mut h = map(&[
            ("x-ratelimit-limit-requests", "10000"),
            ("x-ratelimit-remaining-tokens", "99"),
            ("x-request-id", "req-1"),
        ]);
        drop_rate_headers(&mut h);
        let names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["x-request-id"]);
    }

    #[test]
    fn event_streams_are_read_in_the_format_their_path_names() {
        let sse = map(&[("content-type", "text/event-stream")]);
        let op = |kind, rest| stream_operation(kind, rest, &sse);
        assert_eq!(op(ProviderKind::Openai, "v1/chat/completions"), Some(Operation::Chat));
        assert_eq!(op(ProviderKind::Openai, "v1/responses"), Some(Operation::Responses));
        assert_eq!(op(ProviderKind::Openai, "responses?x=1"), Some(Operation::Responses));
        assert_eq!(op(ProviderKind::Openai, "v1/completions"), Some(Operation::Completions));
        assert_eq!(op(ProviderKind::Anthropic, "v1/messages"), Some(Operation::Chat));
        assert_eq!(
            stream_operation(ProviderKind::Openai, "v1/chat/completions", &map(&[])),
            None
        );
        // Bedrock's ConverseStream, in AWS's binary event stream; no other Bedrock stream.
        let aws = map(&[("content-type", "application/vnd.amazon.eventstream")]);
        assert_eq!(
            stream_operation(ProviderKind::Bedrock, "model/m/converse-stream", &aws),
            Some(Operation::Chat)
        );
        assert_eq!(
            stream_operation(ProviderKind::Bedrock, "model/m/invoke-with-response-stream", &aws),
            None
        );
        assert_eq!(
            stream_operation(ProviderKind::Bedrock, "model/m/converse-stream", &sse),
            None
        );
    }

    #[test]
    fn an_event_stream_names_its_model_in_its_first_events() {
        let provider = crate::route::testing::provider("p");
        let mut e = Events::new(&provider, "", Operation::Chat);
        assert!(e.feed(&Bytes::from_static(
            b"event: message_start\ndata: {\"type\":\"message_start\","
        )));
        let _ = e.feed(&Bytes::from_static(b"\"message\":{\"model\":\"claude-x\"}}\n\n"));
        assert_eq!(e.model().as_deref(), Some("claude-x"));
        let mut e = Events::new(&provider, "", Operation::Chat);
        let _ = e.feed(&Bytes::from_static(b"data: {\"modelVersion\":\"gemini-2.5-pro\"}\n\n"));
        assert_eq!(e.model().as_deref(), Some("gemini-2.5-pro"));
    }

    #[test]
    fn only_plain_json_answers_are_read_for_usage() {
        assert!(is_plain_json(&map(&[(
            "content-type",
            "application/json; charset=utf-8"
        )])));
        assert!(is_plain_json(&map(&[("content-type", "application/problem+json")])));
        assert!(!is_plain_json(&map(&[("content-type", "text/event-stream")])));
        assert!(!is_plain_json(&map(&[
            ("content-type", "application/json"),
            ("content-encoding", "gzip")
        ])));
        assert!(!is_plain_json(&map(&[])));
    }
}
