//! The answer to a request: its body in the client's shape (a whole body, or a stream
//! forwarded chunk by chunk) and its headers, written by [`response`] for every answer, from
//! the cache or from an upstream. Errors take the codec's error shape (`Codec::error`);
//! `x-request-id` is set on every response, errors included, by `pipeline::handle`.
//!
//! What a response costs is not decided here: the body is handed to `crate::account` as it
//! goes out.

use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use http::{HeaderName, HeaderValue};
use switchyard_providers::{ErrorKind, ProviderError, StreamTranslator};

use crate::account::{Account, Labels, StreamAccount};
use crate::error::GatewayError;
use crate::estimate::{Delivered, StreamPrompt};
use crate::ingress::{Codec, Egress};
use crate::limits::{RateHeaders, Refused};
use crate::request::Request;
use crate::route::{Outcome, Upstream};
use crate::telemetry::RequestSpan;
use crate::{cache, Gateway};

/// Headers a proxied response carries (content type, the `x-switchyard-*`, `x-ratelimit-*` and
/// `x-request-id` ones): reserved at once, since growing the map mid-way (6 -> 12 -> 24 entries)
/// moved every entry and showed in callgrind at ~2.5 k instructions per request.
const RESPONSE_HEADERS: usize = 16;

/// The names of the `x-switchyard-*` headers, built once (a `&str` name is parsed and checked
/// on every insert).
static OVERHEAD_US: HeaderName = HeaderName::from_static("x-switchyard-overhead-us");
static BACKEND: HeaderName = HeaderName::from_static("x-switchyard-backend");
static ROUTE: HeaderName = HeaderName::from_static("x-switchyard-route");
static ATTEMPTS: HeaderName = HeaderName::from_static("x-switchyard-attempts");
static FALLBACK_DEPTH: HeaderName = HeaderName::from_static("x-switchyard-fallback-depth");

/// How a request was served: what the response's headers tell the client.
pub(crate) struct Served<'a> {
    /// A stream (`text/event-stream`) or a whole JSON body.
    stream: bool,
    /// The route that served, after rules and fallbacks: `x-switchyard-route`.
    route: &'a str,
    /// The gateway's own time, upstream excluded: `x-switchyard-overhead-us`.
    overhead: Duration,
    /// The key's `x-ratelimit-*`.
    rate: &'a RateHeaders,
    /// On routes with a cache, the route looked up and whether it hit: `x-switchyard-cache`.
    cache: Option<(&'a str, bool)>,
    /// The upstream answer (`x-switchyard-backend`, `-attempts`, `-fallback-depth`); `None` for
    /// a cache hit, which made no attempt.
    upstream: Option<&'a Outcome>,
}

impl<'a> Served<'a> {
    /// A response replayed from the cache of `route`.
    pub(crate) fn cache_hit(request: &Request, route: &'a str, overhead: Duration, rate: &'a RateHeaders) -> Self {
        Self {
            stream: request.stream,
            route,
            overhead,
            rate,
            cache: Some((route, true)),
            upstream: None,
        }
    }

    /// A response from an upstream; `looked_up`: the route whose cache missed, if it has one.
    pub(crate) fn upstream(
        stream: bool,
        route: &'a str,
        overhead: Duration,
        rate: &'a RateHeaders,
        looked_up: Option<&'a str>,
        outcome: &'a Outcome,
    ) -> Self {
        Self {
            stream,
            route,
            overhead,
            rate,
            cache: looked_up.map(|r| (r, false)),
            upstream: Some(outcome),
        }
    }
}

/// A count as a header value: the usual ones (attempts, fallback depth) without the allocation
/// that formatting takes.
fn small(n: u32) -> HeaderValue {
    const DIGITS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    match DIGITS.get(n as usize) {
        Some(d) => HeaderValue::from_static(d),
        None => HeaderValue::from(n),
    }
}

/// The response for `body`, with every header that says how it was served.
pub(crate) fn response(gw: &Gateway, body: Body, s: &Served<'_>) -> Response {
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.reserve(RESPONSE_HEADERS);
    if s.stream {
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
        h.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    } else {
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    let micros = u64::try_from(s.overhead.as_micros()).unwrap_or(u64::MAX);
    h.insert(&OVERHEAD_US, HeaderValue::from(micros));
    if let Some(o) = s.upstream {
        if let Ok(v) = HeaderValue::from_str(&o.backend) {
            h.insert(&BACKEND, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(s.route) {
        h.insert(&ROUTE, v);
    }
    s.rate.apply(h);
    if let Some((route, hit)) = s.cache {
        cache::annotate(&gw.metrics, route, h, hit);
    }
    match s.upstream {
        Some(o) => {
            h.insert(&ATTEMPTS, small(o.attempts));
            h.insert(&FALLBACK_DEPTH, small(o.fallback_depth));
        }
        None => {
            h.insert(&ATTEMPTS, HeaderValue::from_static("0"));
        }
    }
    r
}

/// A request the key's limits refused: the codec's error with the key's rate headers.
pub(crate) fn refused(codec: &dyn Codec, refused: Refused) -> Response {
    let mut r = codec.error(refused.error);
    refused.headers.apply(r.headers_mut());
    r
}

/// An upstream's answer in the client's shape, and whether it streams. A whole body is
/// accounted now; a stream when it ends, and it takes the request's span along.
pub(crate) fn answer(
    codec: &'static dyn Codec,
    mut request: Request,
    upstream: Upstream,
    mut account: Account,
    outcome: &Outcome,
    labels: &Labels,
    span: &mut RequestSpan,
) -> Result<(Body, bool), GatewayError> {
    match upstream {
        Upstream::Full(translated) => {
            account.record(translated.usage.as_ref());
            span.response(&translated.body, translated.usage.as_ref());
            let body = codec
                .body(translated.body, &request)
                .map_err(|e| GatewayError::upstream(&e, &labels.backend))?;
            account.observe(&body);
            account.complete();
            Ok((Body::from(body), false))
        }
        Upstream::Stream(chunks, translator) => {
            let idle = Duration::from_millis(outcome.provider.timeouts.stream_idle_ms);
            span.served(&labels.route, &labels.backend, labels.attempts, labels.fallback_depth);
            span.status(200, None);
            let egress = codec.stream(&request);
            let prompt = StreamPrompt::take(request.op, &mut request.raw);
            let account = account.stream(std::mem::take(span), prompt, Delivered::new(request.op));
            let body = forward(chunks, translator, egress, codec, account, idle);
            Ok((Body::from_stream(body), true))
        }
    }
}

/// Forwards a stream chunk by chunk through its translator and the client's egress. Never
/// buffers the response; ends with the codec's error event when the upstream fails or goes
/// silent for `idle`. The completion text of every chunk sent is counted (`StreamAccount`), so
/// that a stream that ends without usage is billed what it delivered.
fn forward(
    mut chunks: BoxStream<'static, Result<Bytes, ProviderError>>,
    mut translator: Box<dyn StreamTranslator>,
    mut egress: Egress,
    codec: &'static dyn Codec,
    mut account: StreamAccount,
    idle: Duration,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    async_stream::stream! {
        let mut out: Vec<Bytes> = Vec::with_capacity(4);
        let mut sent: Vec<Bytes> = Vec::with_capacity(4);
        let timer = tokio::time::sleep(idle);
        tokio::pin!(timer);
        loop {
            let next = match next_within(&mut chunks, timer.as_mut(), idle).await {
                None => Some(Err(ProviderError::new(ErrorKind::Timeout, "the upstream stream went silent"))),
                Some(n) => n,
            };
            let result = match next {
                Some(Ok(chunk)) => translator.feed(chunk, &mut out),
                Some(Err(e)) => Err(e),
                None => {
                    let r = translator.finish(&mut out).and_then(|()| {
                        account.delivering(&out);
                        egress.pass(&mut out, &mut sent, true)
                    });
                    if r.is_ok() {
                        for b in sent.drain(..) {
                            account.sent_last(&b);
                            yield Ok(b);
                        }
                        account.usage(translator.usage());
                        if translator.complete() {
                            account.complete();
                        }
                        break;
                    }
                    r
                }
            };
            account.usage(translator.usage());
            let result = result.and_then(|()| {
                account.delivering(&out);
                egress.pass(&mut out, &mut sent, false)
            });
            for b in sent.drain(..) {
                account.sent(&b);
                yield Ok(b);
            }
            if let Err(e) = result {
                let err = account.failed(&e);
                yield Ok(codec.stream_error(e.kind, &err));
                break;
            }
        }
        account.end();
    }
}

/// The next chunk, or `None` when none came within `idle` of asking. One timer serves the
/// whole stream: it is only pushed back when it fires before the wait it is for has lasted
/// `idle` (its deadline is never later than the wait's, since waits start later and later).
/// A `tokio::time::timeout` per chunk put a timer in tokio's wheel and took it out for every
/// chunk.
async fn next_within<S: futures::Stream + Unpin>(
    chunks: &mut S,
    mut timer: std::pin::Pin<&mut tokio::time::Sleep>,
    idle: Duration,
) -> Option<Option<S::Item>> {
    let deadline = tokio::time::Instant::now() + idle;
    loop {
        tokio::select! {
            biased;
            next = chunks.next() => return Some(next),
            () = timer.as_mut() => {
                if tokio::time::Instant::now() >= deadline {
                    return None;
                }
                timer.as_mut().reset(deadline);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use switchyard_config::{
        CircuitBreakerConfig, GatewayConfig, LimitsConfig, ProviderConfig, ProviderKind, ProviderTimeoutsConfig,
    };
    use switchyard_providers::Operation;

    use super::*;

    fn outcome() -> Outcome {
        Outcome {
            route: "ns/m".into(),
            metrics: None,
            backend: "b".into(),
            provider: Arc::new(ProviderConfig {
                id: "ns/p".into(),
                kind: ProviderKind::Mock,
                base_url: String::new(),
                credentials: None,
                region: None,
                api_version: None,
                project: None,
                headers: BTreeMap::new(),
                quota: LimitsConfig::default(),
                timeouts: ProviderTimeoutsConfig::default(),
                circuit_breaker: CircuitBreakerConfig::default(),
                mock: None,
                http_version: Default::default(),
            }),
            price: None,
            attempts: 2,
            fallback_depth: 1,
            upstream_elapsed: Duration::ZERO,
        }
    }

    const PROMPT: &[u8] =
        br#"{"model":"m","messages":[{"role":"user","content":"alpha bravo charlie"}],"stream":true}"#;

    fn price() -> switchyard_config::Price {
        serde_json::from_value(serde_json::json!({"input": 300.0, "output": 900.0, "cachedInput": 150.0}))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn chunk(content: &str) -> Bytes {
        Bytes::from(format!(
            "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{content}\"}}}}]}}\n\n"
        ))
    }

    type ClientBody = std::pin::Pin<Box<dyn futures::Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

    /// A stream forwarded from an in-process upstream (a channel the test writes chunks to), and
    /// the gateway whose Prometheus spend it settles into.
    fn forwarded(
        upstream: futures::channel::mpsc::UnboundedReceiver<Result<Bytes, ProviderError>>,
    ) -> (Arc<Gateway>, ClientBody) {
        let gw = Gateway::new(GatewayConfig::default(), 1).unwrap_or_else(|e| panic!("{e}"));
        let mut request = Request::parse(Operation::Chat, PROMPT).unwrap_or_else(|e| panic!("{e}"));
        let mut labels = Labels::new("r".into());
        labels.name_route("ns/m".into());
        labels.team = "t".into();
        let account = Account::unadmitted(gw.clone(), labels, Some(price()));
        let codec: &'static dyn Codec = &crate::ingress::OPENAI;
        let egress = codec.stream(&request);
        let prompt = StreamPrompt::take(Operation::Chat, &mut request.raw);
        let account = account.stream(RequestSpan::default(), prompt, Delivered::new(Operation::Chat));
        let translator: Box<dyn StreamTranslator> = Box::<switchyard_providers::openai::Passthrough>::default();
        let body = forward(
            upstream.boxed(),
            translator,
            egress,
            codec,
            account,
            Duration::from_secs(5),
        );
        (gw, Box::pin(body))
    }

    fn spend(gw: &Gateway) -> f64 {
        gw.metrics.spend.with_label_values(&["ns/m", "t"]).get()
    }

    /// What a stream that ended without usage must be billed: the prompt counted with the
    /// tokenizer and the completion tokens of the chunks sent.
    fn estimated_cost(sent: &[Bytes]) -> f64 {
        let mut delivered = Delivered::new(Operation::Chat);
        sent.iter().for_each(|c| delivered.add(c));
        assert!(delivered.tokens() > 0);
        let mut request = Request::parse(Operation::Chat, PROMPT).unwrap_or_else(|e| panic!("{e}"));
        let prompt = StreamPrompt::take(Operation::Chat, &mut request.raw).tokens();
        price().cost(prompt, delivered.tokens(), 0)
    }

    #[tokio::test(start_paused = true)]
    async fn the_idle_timeout_counts_each_wait_not_the_stream() {
        let (tx, mut rx) = futures::channel::mpsc::unbounded::<u32>();
        let idle = Duration::from_secs(5);
        let timer = tokio::time::sleep(idle);
        tokio::pin!(timer);
        // Chunks 4 s apart: every wait is under `idle`, the stream far over it.
        for i in 0..5 {
            let tx = tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(4)).await;
                tx.unbounded_send(i).unwrap();
            });
            assert_eq!(next_within(&mut rx, timer.as_mut(), idle).await, Some(Some(i)));
        }
        // A wait that began late (the client was slow to take the last chunk) gets all of `idle`.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let tx2 = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(4900)).await;
            tx2.unbounded_send(5).unwrap();
        });
        assert_eq!(next_within(&mut rx, timer.as_mut(), idle).await, Some(Some(5)));
        // Then silence: the wait ends `idle` after it began.
        let began = tokio::time::Instant::now();
        assert_eq!(next_within(&mut rx, timer.as_mut(), idle).await, None);
        let waited = began.elapsed();
        assert!(waited >= idle && waited < idle + Duration::from_millis(5), "{waited:?}");
        // The end of the upstream is an answer, not silence.
        drop(tx);
        assert_eq!(next_within(&mut rx, timer.as_mut(), idle).await, Some(None));
    }

    #[tokio::test]
    async fn a_stream_the_client_leaves_is_billed_what_it_delivered() {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let (gw, mut body) = forwarded(rx);
        let words = ["Hello", " there", ", alpha", " bravo", " charlie"];
        let mut sent = Vec::new();
        for w in words {
            let c = chunk(w);
            tx.unbounded_send(Ok(c.clone())).unwrap();
            let got = body.next().await.unwrap().unwrap();
            assert_eq!(got, c);
            sent.push(c);
        }
        // The user pressed stop: the response body is dropped, usage never arrived.
        drop(body);
        let billed = spend(&gw);
        assert!(billed > 0.0);
        assert!(
            (billed - estimated_cost(&sent)).abs() < 1e-12,
            "{billed} vs {}",
            estimated_cost(&sent)
        );
        drop(tx);
    }

    #[tokio::test]
    async fn a_stream_cut_upstream_before_its_usage_is_billed_what_it_delivered() {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let (gw, body) = forwarded(rx);
        let sent: Vec<Bytes> = ["Hello", " world", " again"].into_iter().map(chunk).collect();
        for c in &sent {
            tx.unbounded_send(Ok(c.clone())).unwrap();
        }
        // The connection is cut before usage and [DONE].
        drop(tx);
        let out: Vec<Bytes> = body.map(|r| r.unwrap()).collect().await;
        assert_eq!(&out[..3], &sent[..]);
        assert!(std::str::from_utf8(&out[3]).unwrap().contains("error"), "{out:?}");
        let billed = spend(&gw);
        assert!(billed > 0.0);
        assert!(
            (billed - estimated_cost(&sent)).abs() < 1e-12,
            "{billed} vs {}",
            estimated_cost(&sent)
        );
    }

    #[tokio::test]
    async fn a_stream_that_completes_with_usage_is_billed_the_providers_usage() {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let (gw, body) = forwarded(rx);
        tx.unbounded_send(Ok(chunk("Hello world, a long answer of many words")))
            .unwrap();
        let usage = br#"data: {"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;
        tx.unbounded_send(Ok(Bytes::from([&usage[..], b"\n\ndata: [DONE]\n\n"].concat())))
            .unwrap();
        drop(tx);
        let _: Vec<_> = body.collect().await;
        // Exactly what the provider reported, even below the gateway's estimate.
        assert!((spend(&gw) - price().cost(3, 2, 0)).abs() < 1e-12, "{}", spend(&gw));
    }

    #[test]
    fn cache_hits_and_upstream_answers_are_decorated_alike() {
        let gw = Gateway::new(GatewayConfig::default(), 1).unwrap_or_else(|e| panic!("{e}"));
        let rate = RateHeaders::default();
        let body = br#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":true}"#;
        let request = Request::parse(Operation::Chat, body).unwrap_or_else(|e| panic!("{e}"));
        let overhead = Duration::from_micros(7);
        let hit = response(
            &gw,
            Body::empty(),
            &Served::cache_hit(&request, "ns/m", overhead, &rate),
        );
        let outcome = outcome();
        let served = Served::upstream(true, "ns/m", overhead, &rate, Some("ns/m"), &outcome);
        let answered = response(&gw, Body::empty(), &served);
        for r in [&hit, &answered] {
            let h = r.headers();
            assert_eq!(h["content-type"], "text/event-stream; charset=utf-8");
            assert_eq!(h["cache-control"], "no-cache");
            assert_eq!(h["x-switchyard-route"], "ns/m");
            assert_eq!(h["x-switchyard-overhead-us"], "7");
        }
        let (hit, answered) = (hit.headers(), answered.headers());
        assert_eq!(hit["x-switchyard-cache"], "hit");
        assert_eq!(answered["x-switchyard-cache"], "miss");
        assert_eq!(hit["x-switchyard-attempts"], "0");
        assert_eq!(answered["x-switchyard-attempts"], "2");
        // A hit made no attempt: no backend, no fallback depth.
        assert!(hit.get("x-switchyard-backend").is_none() && hit.get("x-switchyard-fallback-depth").is_none());
        assert_eq!(answered["x-switchyard-backend"], "b");
        assert_eq!(answered["x-switchyard-fallback-depth"], "1");
    }
}
