//! The audio endpoints: `/v1/audio/transcriptions` and `/v1/audio/translations` (multipart
//! uploads) and `/v1/audio/speech` (JSON in, audio bytes out), with the request path of the
//! other endpoints (auth -> route -> limits -> upstream -> account) but their own I/O: bodies
//! stream through both ways and are never held whole.
//!
//! An upload is read only up to its `model` part (which picks the route); what came before it
//! is held, at most the gateway's body limit (`maxRequestBytes`, 10 MiB by default), since
//! clients may send the file first. The rest streams to the upstream as it arrives, the whole
//! body still bounded by the same limit. The upstream model replaces the client's in the
//! `model` part. Speech audio streams back chunk by chunk.
//!
//! An upload goes to the route's best-priority backend in one attempt: an upload already
//! streamed cannot be sent again. Speech is retried by the route's `retries` policy across the
//! route's backends (before any audio reached the client), and holds the key's slot until its
//! audio is delivered. No fallback routes, hedges or cache here.
//! Billing (see `switchyard_providers::audio`): transcriptions by the provider's token usage or
//! the audio's seconds (the answer's, else the WAV header's), speech by input characters.

pub(crate) mod multipart;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{post, MethodRouter};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use http::{header, HeaderMap, HeaderValue};
use serde_json::Value;
use switchyard_providers::{self as providers, audio as wire, ErrorKind, Json, Operation, ProviderError, Target};

use crate::account::{self, Account, InFlight, Labels};
use crate::error::GatewayError;
use crate::ingress::{Codec, OPENAI};
use crate::limits::{self, Admission};
use crate::respond::{self, Served};
use crate::route::{nth_backoff, retry_class, Outcome};
use crate::runtime::{Key, Route, Runtime};
use crate::upstream_client::reqwest_error;
use crate::{pipeline, Gateway};

/// How much of an upload's start is kept to read the WAV header from.
const PROBE_BYTES: usize = 64 * 1024;

/// How much of an upstream error body is read.
const ERROR_BODY_BYTES: usize = 64 * 1024;

/// The route of an audio endpoint.
pub(crate) fn endpoint(op: Operation) -> MethodRouter<Arc<Gateway>> {
    // Copied before the handler's future is made, as in `pipeline::endpoint`.
    post(move |State(gw): State<Arc<Gateway>>, headers: HeaderMap, body: Body| {
        handle(gw, op, pipeline::owned_headers(&headers), body)
    })
}

/// `headers` in memory of their own (`pipeline::owned_headers`).
async fn handle(gw: Arc<Gateway>, op: Operation, headers: HeaderMap, body: Body) -> Response {
    let start = Instant::now();
    let _in_flight = InFlight::new(&gw.metrics.in_flight);
    let mut labels = Labels::new(pipeline::request_id(&headers));
    labels.llm_operation = Some(op);
    let result = if op == Operation::Speech {
        speech(&gw, &headers, body, start, &mut labels).await
    } else {
        upload(&gw, op, &headers, body, start, &mut labels).await
    };
    let (mut response, error) = match result {
        Ok(r) => (r, None),
        Err(e) => {
            let message = e.message.clone();
            let mut r = OPENAI.error(e);
            if op != Operation::Speech {
                // The upload may not have been read to its end: the connection cannot carry
                // another request, and the client must not try.
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            (r, Some(message))
        }
    };
    if let Ok(v) = HeaderValue::from_str(&labels.request_id) {
        response.headers_mut().insert("x-request-id", v);
    }
    account::finish(&gw, &labels, response.status().as_u16(), start, error.as_deref());
    response
}

/// A transcription or translation: the upload read up to its `model`, then streamed upstream.
async fn upload(
    gw: &Arc<Gateway>,
    op: Operation,
    headers: &HeaderMap,
    body: Body,
    start: Instant,
    labels: &mut Labels,
) -> Result<Response, GatewayError> {
    let rt = gw.runtime();
    let key = authenticate(&rt, headers, labels)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let boundary = multipart::boundary(content_type)
        .ok_or_else(|| GatewayError::bad_request("audio uploads must be multipart/form-data (with a boundary)", None))?
        .to_owned();
    let limit = rt.config.settings.max_request_bytes;
    let cap = usize::try_from(limit).unwrap_or(usize::MAX);

    // Read up to the end of the `model` part.
    let mut chunks = body.into_data_stream();
    let mut spool = BytesMut::new();
    let mut scan = multipart::Scan::new(&boundary);
    while !scan.advance(&spool)? {
        let chunk = match chunks.next().await {
            _ if scan.ended => None,
            Some(Ok(c)) => Some(c),
            Some(Err(e)) => {
                return Err(GatewayError::bad_request(
                    format!("could not read the request body: {e}"),
                    None,
                ))
            }
            None => None,
        };
        let Some(chunk) = chunk else {
            return Err(GatewayError::bad_request(
                "you must provide a model parameter",
                Some("model"),
            ));
        };
        if spool.len() + chunk.len() > cap {
            return Err(GatewayError::too_large(limit));
        }
        spool.extend_from_slice(&chunk);
    }
    let at = scan.model.clone().unwrap_or_default();
    let model = std::str::from_utf8(&spool[at.clone()]).unwrap_or("").trim().to_owned();
    if model.is_empty() {
        return Err(GatewayError::bad_request(
            "you must provide a model parameter",
            Some("model"),
        ));
    }
    let mut raw = Json::new();
    raw.insert("model".into(), model.clone().into());
    let mut a = match admit(gw, &rt, &key, op, &model, &raw, labels).await? {
        Ok(a) => a,
        Err(refused) => return Ok(refused),
    };

    // The upstream body: what was read, with the upstream model, then the rest as it comes.
    let spool = spool.freeze();
    let backend = a.backend(&a.route);
    let mut prefix = BytesMut::with_capacity(spool.len() + backend.model.len());
    prefix.extend_from_slice(&spool[..at.start]);
    prefix.extend_from_slice(backend.model.as_bytes());
    prefix.extend_from_slice(&spool[at.end..]);
    let probe = Arc::new(Probe {
        head: Mutex::new(spool[..spool.len().min(PROBE_BYTES)].to_vec()),
        too_large: AtomicBool::new(false),
    });
    let seen = spool.len() as u64;
    let tap = probe.clone();
    let rest = async_stream::stream! {
        yield Ok::<Bytes, std::io::Error>(prefix.freeze());
        let mut seen = seen;
        while let Some(chunk) = chunks.next().await {
            match chunk {
                Ok(c) => {
                    seen += c.len() as u64;
                    if seen > limit {
                        tap.too_large.store(true, Ordering::Relaxed);
                        yield Err(std::io::Error::other("the upload exceeded the body limit"));
                        break;
                    }
                    tap.keep(&c);
                    yield Ok(c);
                }
                Err(e) => {
                    yield Err(std::io::Error::other(e.to_string()));
                    break;
                }
            }
        }
    };
    let (url, up_headers) = a.head(op, content_type)?;
    let timeout = Duration::from_millis(a.outcome.provider.timeouts.request_ms);
    let sent = gw
        .audio_client
        .post(url)
        .headers(up_headers)
        .body(reqwest::Body::wrap_stream(rest))
        .timeout(timeout)
        .send()
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(_) if probe.too_large.load(Ordering::Relaxed) => return Err(GatewayError::too_large(limit)),
        Err(e) => return Err(GatewayError::upstream(&reqwest_error(&e), &a.outcome.backend)),
    };
    let resp = a.check(resp).await?;
    let answer_type = resp.headers().get(header::CONTENT_TYPE).cloned();
    let seconds = move || {
        let head = probe.head.lock().unwrap_or_else(|p| p.into_inner());
        multipart::file_start(&boundary, &head).and_then(|at| wire::wav_seconds(&head[at..]))
    };
    let events = answer_type
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/event-stream"));
    if events {
        // `stream: true`: the events go to the client as they come; the usage is in the last
        // (`transcript.text.done`), read from the tail kept of the stream.
        let tail = Arc::new(Mutex::new(Tail::default()));
        let keep = tail.clone();
        let idle = Duration::from_millis(a.outcome.provider.timeouts.stream_idle_ms);
        let chunks = resp.bytes_stream().inspect(move |c| {
            if let Ok(c) = c {
                keep.lock().unwrap_or_else(|p| p.into_inner()).keep(c);
            }
        });
        // A client that leaves early is billed as the provider bills: the whole upload.
        let usage = move || {
            let tail = tail.lock().unwrap_or_else(|p| p.into_inner());
            wire::transcription_usage(tail.bytes(), seconds())
        };
        let body = relay(chunks, idle);
        return Ok(a.answer(gw, start, labels, Reply::Stream(body, Box::new(usage)), answer_type));
    }
    let body = read_capped(resp, rt.config.settings.max_response_bytes)
        .await
        .map_err(|e| GatewayError::upstream(&e, &a.outcome.backend))?;
    let usage = wire::transcription_usage(&body, seconds());
    Ok(a.answer(gw, start, labels, Reply::Whole(body, usage), answer_type))
}

/// The end of an event stream, at most [`TAIL_BYTES`] (twice that while it grows), from a line
/// start: where a transcription stream's usage is.
#[derive(Default)]
struct Tail(Vec<u8>);

/// How much of a streamed transcription's end is kept to read its usage from.
const TAIL_BYTES: usize = 256 * 1024;

impl Tail {
    fn keep(&mut self, chunk: &[u8]) {
        self.0.extend_from_slice(chunk);
        if self.0.len() > 2 * TAIL_BYTES {
            let cut = self.0.len() - TAIL_BYTES;
            let line = self.0[cut..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(self.0.len(), |i| cut + i + 1);
            self.0.drain(..line);
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// An upstream body relayed chunk by chunk, cut with an error when the upstream goes silent
/// for `idle`.
fn relay(
    mut chunks: impl futures::Stream<Item = reqwest::Result<Bytes>> + Send + Unpin + 'static,
    idle: Duration,
) -> futures::stream::BoxStream<'static, Result<Bytes, std::io::Error>> {
    Box::pin(async_stream::stream! {
        loop {
            match tokio::time::timeout(idle, chunks.next()).await {
                Ok(Some(Ok(c))) => yield Ok::<Bytes, std::io::Error>(c),
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    yield Err(std::io::Error::other(e.to_string()));
                    break;
                }
                Err(_) => {
                    yield Err(std::io::Error::other("the upstream stream went silent"));
                    break;
                }
            }
        }
    })
}

/// Text to speech: the JSON request forwarded, the audio streamed back.
async fn speech(
    gw: &Arc<Gateway>,
    headers: &HeaderMap,
    body: Body,
    start: Instant,
    labels: &mut Labels,
) -> Result<Response, GatewayError> {
    let rt = gw.runtime();
    let key = authenticate(&rt, headers, labels)?;
    let req = pipeline::read(body, Operation::Speech, &OPENAI, &rt.config.settings, |_| Ok(())).await?;
    let Some(input) = req.raw.get("input").and_then(Value::as_str) else {
        return Err(GatewayError::bad_request("'input' must be a string", Some("input")));
    };
    let usage = wire::speech_usage(input);
    let mut a = match admit(gw, &rt, &key, Operation::Speech, &req.model, &req.raw, labels).await? {
        Ok(a) => a,
        Err(refused) => return Ok(refused),
    };
    let route = a.route.clone();
    let retries = &route.config.retries;
    let order = backend_order(&a.route);
    let tries = (retries.attempts as usize).saturating_add(1);
    let mut n = 0;
    let resp = loop {
        let index = order[n % order.len()];
        if n >= order.len() {
            // Every backend tried: back off before the next round, as routes do.
            let round = u32::try_from(n / order.len() - 1).unwrap_or(u32::MAX);
            tokio::time::sleep(nth_backoff(retries, round)).await;
        }
        n += 1;
        a.select(&rt, index)?;
        match a.speak(gw, &req.raw).await {
            Ok(resp) => break resp,
            Err(e) if n < tries && retry_class(e.kind).is_some_and(|c| retries.on.contains(&c)) => {
                tracing::debug!(backend = %a.outcome.backend, error = %e.message, "speech attempt failed; retrying");
            }
            Err(e) => return Err(GatewayError::upstream(&e, &a.outcome.backend)),
        }
    };
    let answer_type = resp.headers().get(header::CONTENT_TYPE).cloned();
    let idle = Duration::from_millis(a.outcome.provider.timeouts.stream_idle_ms);
    let body = relay(resp.bytes_stream(), idle);
    // Billed on the input, which the provider bills whole once it answered; the key's slot is
    // held until the audio is delivered (or the client leaves).
    let usage = move || Some(usage);
    Ok(a.answer(gw, start, labels, Reply::Stream(body, Box::new(usage)), answer_type))
}

/// The backends of a route in the order speech tries them: best priority tier first, the
/// route's order within a tier.
fn backend_order(route: &Route) -> Vec<usize> {
    let mut order: Vec<usize> = (0..route.config.backends.len()).collect();
    order.sort_by_key(|&i| route.config.backends[i].priority);
    order
}

fn authenticate(rt: &Runtime, headers: &HeaderMap, labels: &mut Labels) -> Result<Arc<Key>, GatewayError> {
    let key = pipeline::authenticate(rt, headers)?;
    labels.team.clone_from(&key.team);
    labels.key = key.id.clone();
    Ok(key)
}

/// The start of an upload, for its WAV header, and whether it outgrew the body limit.
struct Probe {
    head: Mutex<Vec<u8>>,
    too_large: AtomicBool,
}

impl Probe {
    fn keep(&self, chunk: &[u8]) {
        let mut head = self.head.lock().unwrap_or_else(|p| p.into_inner());
        let room = PROBE_BYTES.saturating_sub(head.len());
        head.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
}

/// A request routed and admitted, with the backend it goes to.
struct Admitted {
    route: Arc<Route>,
    /// The backend (index in the route) the request goes to.
    backend: usize,
    admission: Admission,
    outcome: Outcome,
    sent: Instant,
    /// Upstream calls made.
    tried: u32,
}

/// The usage of a streamed answer, known when its stream ends (or is dropped).
type LateUsage = Box<dyn FnOnce() -> Option<providers::Usage> + Send>;

/// What an audio request answers: a whole body and its usage, or a body streamed as the
/// upstream sends it.
enum Reply {
    Whole(Bytes, Option<providers::Usage>),
    Stream(
        futures::stream::BoxStream<'static, Result<Bytes, std::io::Error>>,
        LateUsage,
    ),
}

/// Settles a streamed answer's account when the stream ends or is dropped (the client left):
/// the key's slot and reservation are held while the audio is delivered.
struct Settle {
    account: Account,
    usage: Option<LateUsage>,
}

impl Drop for Settle {
    fn drop(&mut self) {
        let usage = self.usage.take().and_then(|f| f());
        self.account.record(usage.as_ref());
    }
}

/// Route, mode and backend checks, then the key's limits: a refusal is the response.
async fn admit(
    gw: &Gateway,
    rt: &Runtime,
    key: &Arc<Key>,
    op: Operation,
    model: &str,
    raw: &Json,
    labels: &mut Labels,
) -> Result<Result<Admitted, Response>, GatewayError> {
    let route = rt.route_for(key, model)?;
    labels.set_route(&route);
    pipeline::check_mode(op, &route, model)?;
    pipeline::check_backends(rt, op, &route)?;
    let index = backend_order(&route).first().copied();
    let (backend, provider) = index
        .and_then(|i| route.config.backends.get(i))
        .and_then(|b| Some((b, rt.provider(&b.provider)?.clone())))
        .ok_or_else(|| GatewayError::unavailable(format!("route `{}` has no backend to serve it", labels.route)))?;
    let admission = match limits::admit(&gw.limits, key, &route, raw).await {
        Ok(a) => a,
        Err(refused) => return Ok(Err(respond::refused(&OPENAI, refused))),
    };
    let outcome = Outcome {
        route: labels.route.clone(),
        metrics: labels.route_metrics.clone(),
        backend: backend.name.as_str().into(),
        provider,
        price: backend.price,
        attempts: 1,
        fallback_depth: 0,
        upstream_elapsed: Duration::ZERO,
    };
    Ok(Ok(Admitted {
        backend: index.unwrap_or(0),
        route,
        admission,
        outcome,
        sent: Instant::now(),
        tried: 0,
    }))
}

impl Admitted {
    fn backend<'r>(&self, route: &'r Route) -> &'r switchyard_config::BackendConfig {
        &route.config.backends[self.backend]
    }

    /// Sends the next attempt to backend `index` of the route.
    fn select(&mut self, rt: &Runtime, index: usize) -> Result<(), GatewayError> {
        let b = &self.route.config.backends[index];
        let provider = rt
            .provider(&b.provider)
            .ok_or_else(|| GatewayError::unavailable(format!("backend `{}` has no provider", b.name)))?;
        self.backend = index;
        self.outcome.backend = b.name.as_str().into();
        self.outcome.provider = provider.clone();
        self.outcome.price = b.price;
        Ok(())
    }

    /// One speech call to the selected backend: its answer once it succeeded.
    async fn speak(&mut self, gw: &Gateway, raw: &Json) -> Result<reqwest::Response, ProviderError> {
        let mut raw = raw.clone();
        if self.outcome.provider.kind == switchyard_config::ProviderKind::AzureOpenai {
            // Azure takes the deployment from the path.
            raw.remove("model");
        } else {
            raw.insert("model".into(), self.backend(&self.route).model.clone().into());
        }
        let json = serde_json::to_vec(&raw)
            .map_err(|e| ProviderError::new(ErrorKind::BadRequest, format!("cannot encode request: {e}")))?;
        let (url, up_headers) = self
            .head(Operation::Speech, "application/json")
            .map_err(|e| ProviderError::new(ErrorKind::Server, e.message))?;
        let provider = self.outcome.provider.clone();
        let sent = gw.audio_client.post(url).headers(up_headers).body(json).send();
        let resp = match tokio::time::timeout(Duration::from_millis(provider.timeouts.request_ms), sent).await {
            Err(_) => {
                return Err(ProviderError::new(
                    ErrorKind::Timeout,
                    "the upstream did not answer in time",
                ))
            }
            Ok(Err(e)) => return Err(reqwest_error(&e)),
            Ok(Ok(r)) => r,
        };
        self.answered(resp).await
    }

    /// The upstream URL and headers; the clock of the upstream call starts.
    fn head(&mut self, op: Operation, content_type: &str) -> Result<(String, HeaderMap), GatewayError> {
        let provider = &self.outcome.provider;
        self.tried += 1;
        let target = Target {
            provider,
            model: &self.route.config.backends[self.backend].model,
            drop_unsupported_params: false,
            now: SystemTime::now(),
            bearer: None,
        };
        self.sent = Instant::now();
        providers::openai::preset(provider.kind)
            .audio_head(op, &target, content_type)
            .map_err(|e| GatewayError::upstream(&e, &self.outcome.backend))
    }

    /// The upstream's answer when it succeeded, else its error mapped.
    async fn check(&self, resp: reqwest::Response) -> Result<reqwest::Response, GatewayError> {
        self.answered(resp)
            .await
            .map_err(|e| GatewayError::upstream(&e, &self.outcome.backend))
    }

    /// The upstream's answer when it succeeded, else the provider's error.
    async fn answered(&self, resp: reqwest::Response) -> Result<reqwest::Response, ProviderError> {
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(resp);
        }
        let headers = resp.headers().clone();
        let body = read_capped(resp, ERROR_BODY_BYTES as u64).await.unwrap_or_default();
        Err(providers::adapter(self.outcome.provider.kind).error(status, &headers, &body))
    }

    /// Accounts for the reply's usage (a stream's once it ends) and answers with it, in the
    /// upstream's content type.
    fn answer(
        mut self,
        gw: &Arc<Gateway>,
        start: Instant,
        labels: &mut Labels,
        reply: Reply,
        content_type: Option<HeaderValue>,
    ) -> Response {
        self.outcome.upstream_elapsed = self.sent.elapsed();
        self.outcome.attempts = self.tried.max(1);
        labels.served(&self.outcome);
        let rate = self.admission.headers().clone();
        let mut account = Account::new(gw.clone(), labels.clone(), &self.outcome, start, self.admission, None);
        let body = match reply {
            Reply::Whole(bytes, usage) => {
                account.record(usage.as_ref());
                Body::from(bytes)
            }
            Reply::Stream(mut audio, usage) => {
                let settle = Settle {
                    account,
                    usage: Some(usage),
                };
                Body::from_stream(async_stream::stream! {
                    let _settle = settle;
                    while let Some(c) = audio.next().await {
                        yield c;
                    }
                })
            }
        };
        let overhead = start.elapsed().saturating_sub(self.outcome.upstream_elapsed);
        account::overhead(gw, labels, overhead);
        let served = Served::upstream(false, &labels.route, overhead, &rate, None, &self.outcome);
        let mut r = respond::response(gw, body, &served);
        if let Some(ct) = content_type {
            r.headers_mut().insert(header::CONTENT_TYPE, ct);
        }
        r
    }
}

/// A whole upstream body, at most `limit` bytes.
async fn read_capped(mut resp: reqwest::Response, limit: u64) -> Result<Bytes, ProviderError> {
    let mut buf = BytesMut::new();
    while let Some(c) = resp.chunk().await.map_err(|e| reqwest_error(&e))? {
        if (buf.len() + c.len()) as u64 > limit {
            return Err(ProviderError::new(
                ErrorKind::Protocol,
                format!("upstream response exceeded {limit} bytes (the fleet's maxResponseBytes)"),
            ));
        }
        buf.extend_from_slice(&c);
    }
    Ok(buf.freeze())
}
