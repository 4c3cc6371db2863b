//! Scenario tests of the attempts loop against a scripted upstream, on tokio's paused clock:
//! every timing below is exact simulated time, and the suite runs in milliseconds.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::StreamExt;
use http::HeaderMap;
use switchyard_config::*;
use switchyard_providers::{self as providers, ErrorKind, Json, Operation, ProviderError, Translated, Usage};
use tokio::time::Instant;

use super::*;
use crate::runtime::Key;

// ---------------------------------------------------------------------------------------------
// Config builders.

pub(crate) fn backend(name: &str, model: &str, weight: u32, priority: u32) -> BackendConfig {
    BackendConfig {
        name: name.into(),
        provider: "default/p".into(),
        model: model.into(),
        weight,
        priority,
        labels: BTreeMap::new(),
        context_window: None,
        max_output_tokens: None,
        limits: LimitsConfig::default(),
        price: None,
    }
}

pub(crate) fn route_config(model: &str, backends: Vec<BackendConfig>) -> RouteConfig {
    RouteConfig {
        namespace: "default".into(),
        name: model.into(),
        model: model.into(),
        aliases: vec![],
        mode: RouteMode::Chat,
        backends,
        strategy: Strategy::Weighted,
        retries: RetryConfig::default(),
        timeouts: RouteTimeoutsConfig::default(),
        fallbacks: vec![],
        rules: vec![],
        cache: None,
        hedge_after_ms: None,
        drop_unsupported_params: false,
        log_prompts: false,
        shared_with: vec![],
    }
}

fn provider(id: &str) -> ProviderConfig {
    ProviderConfig {
        id: id.into(),
        kind: ProviderKind::OpenaiCompatible,
        base_url: "http://upstream.invalid/v1".into(),
        credentials: None,
        region: None,
        api_version: None,
        project: None,
        headers: BTreeMap::new(),
        quota: LimitsConfig::default(),
        timeouts: ProviderTimeoutsConfig::default(),
        circuit_breaker: CircuitBreakerConfig::default(),
        mock: None,
    }
}

/// A config with the routes and one provider per provider id their backends name.
fn config(routes: Vec<RouteConfig>) -> GatewayConfig {
    let mut ids: Vec<String> = routes
        .iter()
        .flat_map(|r| r.backends.iter().map(|b| b.provider.clone()))
        .collect();
    ids.sort();
    ids.dedup();
    GatewayConfig {
        version: SCHEMA_VERSION,
        providers: ids.iter().map(|id| provider(id)).collect(),
        routes,
        ..Default::default()
    }
}

fn retries(attempts: u32, backoff_ms: u64) -> RetryConfig {
    RetryConfig {
        attempts,
        backoff_ms,
        ..RetryConfig::default()
    }
}

fn fallback(route: &str, on: &[FallbackTrigger]) -> FallbackConfig {
    FallbackConfig {
        route: route.into(),
        on: on.to_vec(),
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn key(pairs: &[(&str, &str)]) -> Key {
    Key::new(KeyConfig {
        namespace: "default".into(),
        name: "k".into(),
        hashes: vec![],
        allowed_routes: vec![],
        limits: LimitsConfig::default(),
        budget: None,
        expires_at: None,
        blocked: false,
        labels: labels(pairs),
    })
}

fn chat(model: &str, text: &str) -> Json {
    let v = serde_json::json!({"model": model, "messages": [{"role": "user", "content": text}]});
    match v {
        serde_json::Value::Object(m) => m,
        _ => Json::new(),
    }
}

fn error(kind: ErrorKind) -> ProviderError {
    ProviderError::new(kind, format!("scripted {kind:?}"))
}

// ---------------------------------------------------------------------------------------------
// The scripted upstream.

/// What one upstream model does.
#[derive(Clone, Default)]
struct Script {
    /// Fail the first N calls (then answer).
    fail_first: u32,
    /// Fail every call.
    always_fail: bool,
    /// The failure (default: a 500).
    error: Option<ProviderError>,
    /// Wait before the response (headers).
    delay: Duration,
    /// Streams: wait before the first chunk.
    first_token: Duration,
    /// Streams: break after the first chunk.
    cut: bool,
}

fn fails(kind: ErrorKind) -> Script {
    Script {
        always_fail: true,
        error: Some(error(kind)),
        ..Script::default()
    }
}

fn slow(delay: Duration) -> Script {
    Script {
        delay,
        ..Script::default()
    }
}

/// Counts an upstream call that was dropped before it finished.
struct Cancel {
    counter: Arc<AtomicU32>,
    done: bool,
}

impl Cancel {
    fn finish(&mut self) {
        self.done = true;
    }
}

impl Drop for Cancel {
    fn drop(&mut self) {
        if !self.done {
            self.counter.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[derive(Default)]
struct Fake {
    scripts: Mutex<HashMap<String, Script>>,
    calls: Mutex<Vec<(u64, String)>>,
    counts: Mutex<HashMap<String, u32>>,
    cancelled: Arc<AtomicU32>,
    started: OnceLock<Instant>,
}

impl Fake {
    fn script(&self, model: &str, s: Script) {
        self.scripts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(model.into(), s);
    }

    /// Models called, in order.
    fn calls(&self) -> Vec<String> {
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(_, m)| m.clone())
            .collect()
    }

    /// Milliseconds since the harness started, per call.
    fn times(&self) -> Vec<u64> {
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(t, _)| *t)
            .collect()
    }

    fn clear(&self) {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

impl Dispatch for Fake {
    fn send<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<Upstream, ProviderError>> {
        let model = call.backend.model.clone();
        let script = self
            .scripts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&model)
            .cloned()
            .unwrap_or_default();
        let n = {
            let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
            let c = counts.entry(model.clone()).or_default();
            *c += 1;
            *c - 1
        };
        let at = self.started.get_or_init(Instant::now).elapsed().as_millis() as u64;
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((at, model.clone()));
        let stream = call.stream;
        let mut cancel = Cancel {
            counter: self.cancelled.clone(),
            done: false,
        };
        Box::pin(async move {
            tokio::time::sleep(script.delay).await;
            if script.always_fail || n < script.fail_first {
                cancel.finish();
                return Err(script.error.clone().unwrap_or_else(|| error(ErrorKind::Server)));
            }
            let text = format!("answer from {model}");
            if !stream {
                cancel.finish();
                let body = serde_json::json!({"model": model, "choices": [{"message": {"content": text}}]});
                return Ok(Upstream::Full(Translated {
                    body: Bytes::from(body.to_string()),
                    usage: Some(Usage {
                        prompt_tokens: 1,
                        completion_tokens: 3,
                        ..Usage::default()
                    }),
                }));
            }
            let first_token = script.first_token;
            let cut = script.cut;
            let chunks = async_stream::stream! {
                let mut cancel = cancel;
                tokio::time::sleep(first_token).await;
                yield Ok(Bytes::from(format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"{text}\"}}}}]}}\n\n")));
                if cut {
                    cancel.finish();
                    yield Err(ProviderError::new(ErrorKind::Protocol, "connection cut"));
                    return;
                }
                yield Ok(Bytes::from_static(b"data: [DONE]\n\n"));
                cancel.finish();
            };
            Ok(Upstream::Stream(
                chunks.boxed(),
                Box::new(providers::openai::Passthrough::default()),
            ))
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The harness: a runtime, the fake, and the shared state a gateway would hold.

struct Harness {
    rt: Runtime,
    fake: Fake,
    cooldowns: MemoryCooldowns,
    meters: Meters,
    metrics: Metrics,
    seed: AtomicU32,
}

impl Harness {
    fn new(routes: Vec<RouteConfig>) -> Self {
        Self::with(config(routes))
    }

    fn with(cfg: GatewayConfig) -> Self {
        let h = Self {
            rt: Runtime::new(cfg, 1),
            fake: Fake::default(),
            cooldowns: MemoryCooldowns::default(),
            meters: Meters::default(),
            metrics: Metrics::new().unwrap_or_else(|e| unreachable!("{e}")),
            seed: AtomicU32::new(1),
        };
        h.fake.started.get_or_init(Instant::now);
        h
    }

    async fn call(&self, model: &str, stream: bool) -> Result<(Upstream, Outcome), GatewayError> {
        self.call_as(&key(&[]), &HeaderMap::new(), &chat(model, "hello"), stream)
            .await
    }

    async fn call_as(
        &self,
        key: &Key,
        headers: &HeaderMap,
        request: &Json,
        stream: bool,
    ) -> Result<(Upstream, Outcome), GatewayError> {
        let model = request.get("model").and_then(|m| m.as_str()).unwrap_or_default();
        let Some(route) = self.rt.route("default", model) else {
            return Err(GatewayError::model_not_found(model));
        };
        let op = Operation::Chat;
        let ctx = Ctx {
            rt: &self.rt,
            key_labels: &key.config.labels,
            headers,
            request,
            op,
            stream,
            dispatch: &self.fake,
            cooldowns: &self.cooldowns,
            meters: &self.meters,
            metrics: &self.metrics,
            dice: Dice::new(u64::from(self.seed.fetch_add(1, Ordering::Relaxed))),
            prompt: Prompt::measure(op, request),
            exact_tokens: tokio::sync::OnceCell::new(),
            selectors: Mutex::new(Vec::new()),
            visited: Mutex::new(Vec::new()),
            attempts: AtomicU32::new(0),
            first_attempt: OnceLock::new(),
            trace: None,
        };
        ctx.run(route).await
    }

    /// Calls and expects success; returns the outcome and the body (streams drained).
    async fn ok(&self, model: &str, stream: bool) -> (Outcome, String) {
        match self.call(model, stream).await {
            Ok((up, outcome)) => {
                let (body, err) = drain(up).await;
                assert!(err.is_none(), "{err:?}");
                (outcome, body)
            }
            Err(e) => unreachable!("{model}: {e}"),
        }
    }

    async fn err(&self, model: &str, stream: bool) -> GatewayError {
        match self.call(model, stream).await {
            Ok((_, o)) => unreachable!("{model} served by {}", o.backend),
            Err(e) => e,
        }
    }

    /// Sum of a metric's samples whose labels include `labels`, from the text exposition.
    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.metrics
            .render()
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
            .sum()
    }
}

/// Reads an answer to its end as the forwarder would: the body, and the error that ended a
/// stream early.
async fn drain(up: Upstream) -> (String, Option<ProviderError>) {
    match up {
        Upstream::Full(t) => (String::from_utf8_lossy(&t.body).into_owned(), None),
        Upstream::Stream(mut chunks, mut tr) => {
            let mut out = Vec::new();
            let mut err = None;
            while let Some(c) = chunks.next().await {
                match c.and_then(|c| tr.feed(c, &mut out)) {
                    Ok(()) => {}
                    Err(e) => {
                        err = Some(e);
                        break;
                    }
                }
            }
            if err.is_none() {
                err = tr.finish(&mut out).err();
            }
            let body = out.iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect();
            (body, err)
        }
    }
}

fn gaps(times: &[u64]) -> Vec<u64> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

// ---------------------------------------------------------------------------------------------
// Retries.

#[tokio::test(start_paused = true)]
async fn retry_sequence_backs_off_exponentially_with_jitter() {
    let mut r = route_config("r", vec![backend("only", "flaky", 1, 0)]);
    r.retries = retries(3, 1_000);
    let h = Harness::new(vec![r]);
    h.fake.script(
        "flaky",
        Script {
            fail_first: 3,
            ..Script::default()
        },
    );
    let (outcome, body) = h.ok("r", false).await;
    assert!(body.contains("answer from flaky"));
    assert_eq!(outcome.attempts, 4);
    assert_eq!(outcome.backend, "only");
    let g = gaps(&h.fake.times());
    // Nominal 1 s, 2 s, 4 s, each within ±20%.
    for (gap, nominal) in g.iter().zip([1_000u64, 2_000, 4_000]) {
        let (lo, hi) = (nominal * 8 / 10, nominal * 12 / 10);
        assert!((lo..=hi).contains(gap), "gaps {g:?}");
    }
    assert_eq!(h.metric("switchyard_retries_total", &[("reason", "server-error")]), 3.0);

    // Out of retries: the upstream's error, after 1 + 2 attempts.
    let mut r = route_config("r", vec![backend("only", "down", 1, 0)]);
    r.retries = retries(2, 100);
    let h = Harness::new(vec![r]);
    h.fake.script("down", fails(ErrorKind::Server));
    let e = h.err("r", false).await;
    assert_eq!(e.status.as_u16(), 502);
    assert_eq!(h.fake.calls().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn backoff_is_capped() {
    let policy = RetryConfig {
        attempts: 10,
        backoff_ms: 1_000,
        max_backoff_ms: 5_000,
        on: vec![],
    };
    let d = Dice::new(3);
    for n in 0..10 {
        let b = backoff(&policy, n, &d);
        assert!(b <= Duration::from_secs(5), "{n}: {b:?}");
    }
    assert!(backoff(&policy, 0, &d) >= Duration::from_millis(800));
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured() {
    let mut r = route_config("r", vec![backend("only", "limited", 1, 0)]);
    r.retries = retries(2, 100);
    let h = Harness::new(vec![r]);
    let mut e = error(ErrorKind::RateLimit);
    e.retry_after = Some(Duration::from_secs(3));
    h.fake.script(
        "limited",
        Script {
            fail_first: 1,
            error: Some(e),
            ..Script::default()
        },
    );
    let (outcome, _) = h.ok("r", false).await;
    assert_eq!(outcome.attempts, 2);
    let g = gaps(&h.fake.times());
    // The backoff is 100 ms, but the provider asked for 3 s.
    assert!(g[0] >= 3_000 && g[0] < 3_200, "{g:?}");

    // A retry-after longer than the longest backoff is not waited for: the client gets the 429
    // and its retry-after.
    let mut r = route_config("r", vec![backend("only", "very-limited", 1, 0)]);
    r.retries = retries(2, 100);
    let h = Harness::new(vec![r]);
    let mut e = error(ErrorKind::RateLimit);
    e.retry_after = Some(Duration::from_secs(60));
    h.fake.script(
        "very-limited",
        Script {
            always_fail: true,
            error: Some(e),
            ..Script::default()
        },
    );
    let e = h.err("r", false).await;
    assert_eq!(e.status.as_u16(), 429);
    assert_eq!(e.retry_after, Some(Duration::from_secs(60)));
    assert_eq!(h.fake.calls().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_only_holds_back_its_own_backend() {
    let mut r = route_config("r", vec![backend("a", "limited", 1, 0), backend("b", "flaky", 1, 0)]);
    r.retries = retries(2, 1_000);
    let h = Harness::new(vec![r]);
    let mut e = error(ErrorKind::RateLimit);
    e.retry_after = Some(Duration::from_secs(10));
    h.fake.script(
        "limited",
        Script {
            always_fail: true,
            error: Some(e),
            ..Script::default()
        },
    );
    h.fake.script(
        "flaky",
        Script {
            fail_first: 1,
            ..Script::default()
        },
    );
    let (outcome, _) = h.ok("r", false).await;
    // a: 429 for 10 s; b at once: 500; b again after one backoff (1 s ± 20%), not 10 s.
    assert_eq!(h.fake.calls(), vec!["limited", "flaky", "flaky"]);
    let g = gaps(&h.fake.times());
    assert_eq!(g[0], 0);
    assert!((800..=1_200).contains(&g[1]), "{g:?}");
    assert_eq!((outcome.backend.as_str(), outcome.attempts), ("b", 3));
}

#[tokio::test(start_paused = true)]
async fn client_errors_are_not_retried() {
    for (kind, status) in [
        (ErrorKind::BadRequest, 400),
        (ErrorKind::ContentPolicy, 400),
        (ErrorKind::Auth, 502),
        (ErrorKind::PermissionDenied, 502),
        (ErrorKind::NotFound, 502),
    ] {
        let mut r = route_config("r", vec![backend("a", "bad", 1, 0), backend("b", "good", 1, 0)]);
        r.retries = retries(3, 100);
        let h = Harness::new(vec![r]);
        h.fake.script("bad", fails(kind));
        let e = h.err("r", false).await;
        assert_eq!(e.status.as_u16(), status, "{kind:?}");
        assert_eq!(h.fake.calls(), vec!["bad"], "{kind:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn another_backend_is_tried_at_once() {
    let mut r = route_config("r", vec![backend("a", "down", 1, 0), backend("b", "up", 1, 0)]);
    r.retries = retries(2, 1_000);
    let h = Harness::new(vec![r]);
    h.fake.script("down", fails(ErrorKind::Connect));
    let (outcome, _) = h.ok("r", false).await;
    assert_eq!(h.fake.calls(), vec!["down", "up"]);
    assert_eq!(gaps(&h.fake.times()), vec![0]);
    assert_eq!((outcome.backend.as_str(), outcome.attempts), ("b", 2));
}

#[tokio::test(start_paused = true)]
async fn per_try_timeout_and_overall_deadline() {
    let mut r = route_config("r", vec![backend("a", "stuck", 1, 0), backend("b", "up", 1, 0)]);
    r.retries = retries(2, 100);
    r.timeouts.per_try_ms = Some(1_000);
    let h = Harness::new(vec![r]);
    h.fake.script("stuck", slow(Duration::from_secs(30)));
    let start = Instant::now();
    let (outcome, _) = h.ok("r", false).await;
    assert_eq!(outcome.backend, "b");
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(h.fake.cancelled.load(Ordering::Relaxed), 1);

    // The overall deadline stops retries, waits included.
    let mut r = route_config("r", vec![backend("a", "stuck", 1, 0)]);
    r.retries = retries(10, 100);
    r.timeouts.per_try_ms = Some(1_000);
    r.timeouts.request_ms = Some(2_500);
    let h = Harness::new(vec![r]);
    h.fake.script("stuck", slow(Duration::from_secs(30)));
    let start = Instant::now();
    let e = h.err("r", false).await;
    assert_eq!(e.status.as_u16(), 504);
    assert!(start.elapsed() <= Duration::from_millis(2_500), "{:?}", start.elapsed());
    assert_eq!(h.fake.calls().len(), 3);
}

// ---------------------------------------------------------------------------------------------
// Fallbacks.

#[tokio::test(start_paused = true)]
async fn fallbacks_go_in_order_by_trigger_and_stop_at_depth_three() {
    use FallbackTrigger::*;
    let mut routes = Vec::new();
    for (model, fallbacks) in [
        (
            "r0",
            vec![
                fallback("r1", &[ServerError]),
                fallback("r2", &[RateLimit]),
                fallback("r3", &[ServerError]),
            ],
        ),
        ("r1", vec![fallback("r1a", &[ServerError])]),
        ("r1a", vec![fallback("r1b", &[ServerError])]),
        ("r1b", vec![fallback("r1c", &[ServerError])]),
        ("r1c", vec![]),
        ("r2", vec![]),
        ("r3", vec![]),
    ] {
        let mut r = route_config(model, vec![backend(model, model, 1, 0)]);
        r.retries = retries(0, 100);
        r.fallbacks = fallbacks;
        routes.push(r);
    }
    let h = Harness::new(routes);
    for m in ["r0", "r1", "r1a", "r1b", "r2"] {
        h.fake.script(m, fails(ErrorKind::Server));
    }
    let (outcome, body) = h.ok("r0", false).await;
    // r1c sits at depth 4 and is never tried; r2 is for rate limits only.
    assert_eq!(h.fake.calls(), vec!["r0", "r1", "r1a", "r1b", "r3"]);
    assert!(body.contains("answer from r3"));
    assert_eq!(
        (outcome.route.as_str(), outcome.fallback_depth, outcome.attempts),
        ("default/r3", 1, 5)
    );
    assert_eq!(
        h.metric(
            "switchyard_fallbacks_total",
            &[
                ("route", "default/r1a"),
                ("fallback", "default/r1b"),
                ("trigger", "server-error")
            ]
        ),
        1.0
    );

    // When r3 fails too, the client sees the last failure.
    h.fake.script("r3", fails(ErrorKind::RateLimit));
    h.fake.clear();
    let e = h.err("r0", false).await;
    assert_eq!(e.status.as_u16(), 429);
    assert_eq!(h.fake.calls(), vec!["r0", "r1", "r1a", "r1b", "r3"]);

    // Served at depth 3.
    h.fake.script("r1b", Script::default());
    let (outcome, _) = h.ok("r0", false).await;
    assert_eq!((outcome.route.as_str(), outcome.fallback_depth), ("default/r1b", 3));
}

#[tokio::test(start_paused = true)]
async fn a_rate_limited_route_falls_back() {
    let mut primary = route_config("primary", vec![backend("a", "mock-429", 1, 0)]);
    primary.retries = retries(1, 100);
    primary.fallbacks = vec![fallback("backup", &[FallbackTrigger::RateLimit])];
    let backup = route_config("backup", vec![backend("b", "ok", 1, 0)]);
    let h = Harness::new(vec![primary, backup]);
    let mut e = error(ErrorKind::RateLimit);
    e.retry_after = Some(Duration::from_secs(1));
    h.fake.script(
        "mock-429",
        Script {
            always_fail: true,
            error: Some(e),
            ..Script::default()
        },
    );
    let start = Instant::now();
    let (outcome, _) = h.ok("primary", false).await;
    assert_eq!((outcome.route.as_str(), outcome.fallback_depth), ("default/backup", 1));
    // One retry after the retry-after, then the fallback.
    assert_eq!(h.fake.calls(), vec!["mock-429", "mock-429", "ok"]);
    assert!(start.elapsed() >= Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn context_window_is_checked_before_sending() {
    let mut small = backend("small", "small-model", 1, 0);
    small.context_window = Some(100);
    let mut r = route_config("r", vec![small]);
    r.fallbacks = vec![fallback("big", &[FallbackTrigger::ContextWindow])];
    let mut big = backend("big", "big-model", 1, 0);
    big.context_window = Some(128_000);
    let h = Harness::new(vec![r.clone(), route_config("big", vec![big])]);
    let long = "lorem ipsum dolor sit amet ".repeat(100);
    let req = chat("r", &long);
    let (up, outcome) = match h.call_as(&key(&[]), &HeaderMap::new(), &req, false).await {
        Ok(x) => x,
        Err(e) => unreachable!("{e}"),
    };
    assert!(drain(up).await.0.contains("answer from big-model"));
    assert_eq!(
        h.fake.calls(),
        vec!["big-model"],
        "the small model is never sent the prompt"
    );
    assert_eq!(outcome.fallback_depth, 1);
    // A short prompt stays on the small model.
    assert_eq!(h.ok("r", false).await.0.backend, "small");

    // Without a fallback: the client's 400, and still nothing sent.
    r.fallbacks.clear();
    let h = Harness::new(vec![r]);
    let Err(e) = h.call_as(&key(&[]), &HeaderMap::new(), &chat("r", &long), false).await else {
        unreachable!("served");
    };
    assert_eq!(e.status.as_u16(), 400);
    assert_eq!(e.code.as_deref(), Some("context_length_exceeded"));
    assert!(h.fake.calls().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Cooldowns and circuit breaking.

#[tokio::test(start_paused = true)]
async fn circuit_opens_after_five_failures_and_half_opens_after_the_cooldown() {
    let mut r = route_config(
        "r",
        vec![backend("primary", "bad", 1, 0), backend("standby", "good", 1, 1)],
    );
    r.retries = retries(1, 100);
    let h = Harness::new(vec![r]);
    h.fake.script("bad", fails(ErrorKind::Server));
    // Five requests: each fails on the primary, then the standby serves at once.
    for i in 0..5 {
        let (o, _) = h.ok("r", false).await;
        assert_eq!((o.backend.as_str(), o.attempts), ("standby", 2), "request {i}");
    }
    assert_eq!(
        h.metric("switchyard_backend_state", &[("model", "bad"), ("state", "open")]),
        1.0
    );
    h.fake.clear();
    // Open: the primary is skipped.
    for _ in 0..3 {
        let (o, _) = h.ok("r", false).await;
        assert_eq!((o.backend.as_str(), o.attempts), ("standby", 1));
    }
    tokio::time::advance(Duration::from_secs(299)).await;
    assert_eq!(h.ok("r", false).await.0.attempts, 1);
    assert_eq!(h.fake.calls(), vec!["good"; 4]);
    // Half-open after the five-minute cooldown: one probe, which fails and re-opens.
    tokio::time::advance(Duration::from_secs(1)).await;
    h.fake.clear();
    let (o, _) = h.ok("r", false).await;
    assert_eq!(o.attempts, 2);
    assert_eq!(h.ok("r", false).await.0.attempts, 1);
    assert_eq!(h.fake.calls(), vec!["bad", "good", "good"]);

    // The primary recovers; the next probe closes the circuit and it takes traffic again.
    h.fake.script("bad", slow(Duration::from_millis(500)));
    tokio::time::advance(Duration::from_secs(300)).await;
    h.fake.clear();
    // Two requests at once: only one may probe; the other goes to the standby.
    let (a, b) = tokio::join!(h.call("r", false), h.call("r", false));
    let mut served: Vec<String> = [a, b]
        .into_iter()
        .map(|r| r.map(|(_, o)| o.backend).unwrap_or_default())
        .collect();
    served.sort();
    assert_eq!(served, vec!["primary", "standby"]);
    for _ in 0..3 {
        assert_eq!(h.ok("r", false).await.0.backend, "primary");
    }
    assert_eq!(
        h.metric("switchyard_backend_state", &[("model", "bad"), ("state", "healthy")]),
        1.0
    );
}

#[tokio::test(start_paused = true)]
async fn every_backend_cooling_is_a_503_with_retry_after() {
    let mut r = route_config("r", vec![backend("only", "bad", 1, 0)]);
    r.retries = retries(0, 100);
    let h = Harness::new(vec![r]);
    h.fake.script("bad", fails(ErrorKind::Server));
    for _ in 0..5 {
        assert_eq!(h.err("r", false).await.status.as_u16(), 502);
    }
    let e = h.err("r", false).await;
    assert_eq!(e.status.as_u16(), 503);
    assert_eq!(e.retry_after, Some(Duration::from_secs(300)));
    assert_eq!(h.fake.calls().len(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_429_cools_the_backend_for_its_retry_after() {
    let mut r = route_config("r", vec![backend("a", "limited", 1, 0), backend("b", "ok", 1, 0)]);
    r.retries = retries(1, 100);
    let h = Harness::new(vec![r]);
    let mut e = error(ErrorKind::RateLimit);
    e.retry_after = Some(Duration::from_secs(10));
    h.fake.script(
        "limited",
        Script {
            fail_first: 1,
            error: Some(e),
            ..Script::default()
        },
    );
    assert_eq!(h.ok("r", false).await.0.backend, "b");
    // Cooling for 10 s: every request goes to b.
    for _ in 0..4 {
        assert_eq!(h.ok("r", false).await.0.backend, "b");
    }
    tokio::time::advance(Duration::from_secs(10)).await;
    let served: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(h.ok("r", false).await.0.backend);
        }
        v
    };
    assert!(served.iter().any(|b| b == "a"), "{served:?}");
}

// ---------------------------------------------------------------------------------------------
// Streams.

#[tokio::test(start_paused = true)]
async fn a_stream_fails_over_before_its_first_byte_but_not_after() {
    // Before: a backend that sends headers but no token within the first-token timeout, and one
    // whose first event is an error.
    let mut r = route_config(
        "r",
        vec![
            backend("a", "silent", 1, 0),
            backend("b", "err", 1, 0),
            backend("c", "ok", 1, 0),
        ],
    );
    r.retries = retries(2, 100);
    r.timeouts.first_token_ms = Some(500);
    let h = Harness::new(vec![r]);
    h.fake.script(
        "silent",
        Script {
            first_token: Duration::from_secs(30),
            ..Script::default()
        },
    );
    h.fake.script(
        "err",
        Script {
            always_fail: true,
            error: Some(error(ErrorKind::Server)),
            ..Script::default()
        },
    );
    let start = Instant::now();
    let (outcome, body) = h.ok("r", true).await;
    assert_eq!(h.fake.calls(), vec!["silent", "err", "ok"]);
    assert_eq!(start.elapsed(), Duration::from_millis(500));
    assert!(
        body.contains("answer from ok") && body.ends_with("data: [DONE]\n\n"),
        "{body}"
    );
    assert_eq!((outcome.backend.as_str(), outcome.attempts), ("c", 3));
    assert_eq!(
        h.fake.cancelled.load(Ordering::Relaxed),
        1,
        "the silent stream was dropped"
    );

    // After: the first token reached the client, then the stream broke. No retry: the stream
    // ends with the error (the forwarder turns it into a terminal error event).
    let mut r = route_config("r", vec![backend("a", "cut", 1, 0), backend("b", "ok", 1, 0)]);
    r.retries = retries(2, 100);
    let h = Harness::new(vec![r]);
    h.fake.script(
        "cut",
        Script {
            cut: true,
            ..Script::default()
        },
    );
    let Ok((up, outcome)) = h.call("r", true).await else {
        unreachable!("the stream started");
    };
    assert_eq!((outcome.backend.as_str(), outcome.attempts), ("a", 1));
    let (body, err) = drain(up).await;
    assert!(body.contains("answer from cut"));
    assert!(matches!(err, Some(e) if e.kind == ErrorKind::Protocol));
    assert_eq!(h.fake.calls(), vec!["cut"]);
}

#[tokio::test(start_paused = true)]
async fn a_failing_stream_falls_back_to_another_route() {
    let mut r = route_config("r", vec![backend("a", "down", 1, 0)]);
    r.retries = retries(0, 100);
    r.fallbacks = vec![fallback("backup", &[FallbackTrigger::ServerError])];
    let h = Harness::new(vec![r, route_config("backup", vec![backend("b", "ok", 1, 0)])]);
    h.fake.script("down", fails(ErrorKind::Server));
    let (outcome, body) = h.ok("r", true).await;
    assert_eq!((outcome.route.as_str(), outcome.fallback_depth), ("default/backup", 1));
    assert!(body.contains("answer from ok"));
}

// ---------------------------------------------------------------------------------------------
// Hedging.

#[tokio::test(start_paused = true)]
async fn hedging_answers_from_the_fast_backend_and_cancels_the_slow_one() {
    let mut r = route_config("r", vec![backend("slow", "slow", 1, 0), backend("fast", "fast", 1, 0)]);
    r.hedge_after_ms = Some(200);
    let h = Harness::new(vec![r]);
    h.fake.script(
        "slow",
        Script {
            first_token: Duration::from_secs(5),
            delay: Duration::from_secs(5),
            ..Script::default()
        },
    );
    h.fake.script(
        "fast",
        Script {
            first_token: Duration::from_millis(50),
            delay: Duration::from_millis(50),
            ..Script::default()
        },
    );
    for stream in [true, false] {
        h.fake.clear();
        let before = h.fake.cancelled.load(Ordering::Relaxed);
        // Weighted round robin starts with the first backend, the slow one.
        let start = Instant::now();
        let (outcome, body) = h.ok("r", stream).await;
        assert!(body.contains("answer from fast"), "{body}");
        assert_eq!((outcome.backend.as_str(), outcome.attempts), ("fast", 2));
        let took = start.elapsed();
        // The hedge starts at 200 ms; the fast backend answers 50 ms later (first token 50 ms
        // after that when streaming). The slow one would have taken 5 s.
        assert_eq!(took, Duration::from_millis(if stream { 300 } else { 250 }));
        assert_eq!(h.fake.calls(), vec!["slow", "fast"]);
        assert_eq!(h.fake.cancelled.load(Ordering::Relaxed), before + 1, "stream={stream}");
        // Round robin now starts with the fast one, which answers in time: no hedge.
        h.fake.clear();
        let (outcome, _) = h.ok("r", stream).await;
        assert_eq!((outcome.backend.as_str(), outcome.attempts), ("fast", 1));
        assert_eq!(h.fake.calls(), vec!["fast"]);
    }
    assert_eq!(h.metric("switchyard_hedges_total", &[("winner", "hedge")]), 2.0);
}

// ---------------------------------------------------------------------------------------------
// Rules.

#[tokio::test(start_paused = true)]
async fn premium_keys_prefer_azure_and_others_bedrock() {
    let mut azure = backend("azure", "gpt-4o-azure", 1, 1);
    azure.provider = "default/azure".into();
    let mut bedrock = backend("bedrock", "claude-bedrock", 1, 0);
    bedrock.provider = "default/bedrock".into();
    let mut r = route_config("chat", vec![azure, bedrock]);
    r.rules = vec![RuleConfig {
        name: "premium-prefers-azure".into(),
        key_labels: labels(&[("tier", "premium")]),
        headers: BTreeMap::new(),
        metadata: BTreeMap::new(),
        backend_selector: None,
        weights: None,
        priorities: Some([("azure".to_owned(), 0), ("bedrock".to_owned(), 1)].into()),
        route: None,
    }];
    let h = Harness::new(vec![r]);
    let none = HeaderMap::new();
    let req = chat("chat", "hi");
    for _ in 0..5 {
        let (_, o) = h
            .call_as(&key(&[("tier", "premium")]), &none, &req, false)
            .await
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(o.backend, "azure");
        let (_, o) = h
            .call_as(&key(&[("tier", "standard")]), &none, &req, false)
            .await
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(o.backend, "bedrock");
    }
    // Azure down: premium keys still get an answer, from Bedrock.
    h.fake.script("gpt-4o-azure", fails(ErrorKind::Server));
    let (_, o) = h
        .call_as(&key(&[("tier", "premium")]), &none, &req, false)
        .await
        .unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!((o.backend.as_str(), o.attempts), ("bedrock", 2));
}

#[tokio::test(start_paused = true)]
async fn headers_and_metadata_send_to_another_route() {
    let mut r = route_config("chat", vec![backend("a", "default-model", 1, 0)]);
    r.rules = vec![RuleConfig {
        name: "batch-to-cheap".into(),
        key_labels: BTreeMap::new(),
        headers: labels(&[("x-priority", "batch")]),
        metadata: labels(&[("team", "research")]),
        backend_selector: None,
        weights: None,
        priorities: None,
        route: Some("cheap".into()),
    }];
    let h = Harness::new(vec![r, route_config("cheap", vec![backend("c", "cheap-model", 1, 0)])]);
    let mut headers = HeaderMap::new();
    headers.insert("x-priority", http::HeaderValue::from_static("batch"));
    let mut req = chat("chat", "hi");
    req.insert("metadata".into(), serde_json::json!({"team": "research"}));
    let (_, o) = h
        .call_as(&key(&[]), &headers, &req, false)
        .await
        .unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(
        (o.route.as_str(), o.backend.as_str(), o.fallback_depth),
        ("default/cheap", "c", 0)
    );
    let (_, o) = h
        .call_as(&key(&[]), &HeaderMap::new(), &req, false)
        .await
        .unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(o.route, "default/chat");
}

/// Whatever fails, a key labelled region=eu never reaches a backend outside the EU: random
/// routes, backends, fallbacks, redirects and failures, 300 seeds.
#[tokio::test(start_paused = true)]
async fn an_eu_key_never_reaches_a_non_eu_backend() {
    let mut served_eu = 0;
    for seed in 0..300u64 {
        let dice = Dice::new(seed);
        let n_routes = 2 + dice.below(4) as usize;
        let mut routes = Vec::new();
        let mut region_of: HashMap<String, bool> = HashMap::new();
        let mut scripts: Vec<(String, Script)> = Vec::new();
        for ri in 0..n_routes {
            let n_backends = 1 + dice.below(4) as usize;
            let mut backends = Vec::new();
            for bi in 0..n_backends {
                let model = format!("m{ri}-{bi}");
                let eu = dice.below(2) == 0;
                let mut b = backend(&format!("b{bi}"), &model, dice.below(3) as u32, dice.below(2) as u32);
                b.provider = if eu { "default/eu".into() } else { "default/us".into() };
                b.labels = labels(&[
                    ("region", if eu { "eu-west-1" } else { "us-east-1" }),
                    ("residency", if eu { "eu" } else { "us" }),
                ]);
                if dice.below(4) == 0 {
                    b.context_window = Some(1 + dice.below(20) as u32);
                }
                region_of.insert(model.clone(), eu);
                let script = match dice.below(6) {
                    0 => Script::default(),
                    1 => fails(ErrorKind::Server),
                    2 => {
                        let mut e = error(ErrorKind::RateLimit);
                        e.retry_after = Some(Duration::from_millis(dice.below(3_000)));
                        Script {
                            always_fail: true,
                            error: Some(e),
                            ..Script::default()
                        }
                    }
                    3 => slow(Duration::from_secs(60)),
                    4 => Script {
                        fail_first: 1 + dice.below(3) as u32,
                        ..Script::default()
                    },
                    _ => fails(ErrorKind::ContextWindow),
                };
                scripts.push((model, script));
                backends.push(b);
            }
            let mut r = route_config(&format!("r{ri}"), backends);
            r.strategy = [
                Strategy::Weighted,
                Strategy::Shuffle,
                Strategy::LeastBusy,
                Strategy::Latency,
                Strategy::Cheapest,
                Strategy::Usage,
            ][dice.below(6) as usize];
            r.retries = retries(dice.below(3) as u32, 10);
            r.timeouts.per_try_ms = Some(1_000);
            if dice.below(3) == 0 {
                r.hedge_after_ms = Some(100);
            }
            // Fallbacks and redirects anywhere, loops included: the runtime must cope.
            for _ in 0..dice.below(3) {
                r.fallbacks
                    .push(fallback(&format!("r{}", dice.below(n_routes as u64)), &ALL_TRIGGERS));
            }
            if ri > 0 && dice.below(3) == 0 {
                r.rules.push(RuleConfig {
                    name: "redirect".into(),
                    key_labels: BTreeMap::new(),
                    headers: BTreeMap::new(),
                    metadata: BTreeMap::new(),
                    backend_selector: None,
                    weights: Some([("b0".to_owned(), 5)].into()),
                    priorities: None,
                    route: (dice.below(2) == 0).then(|| format!("r{}", dice.below(n_routes as u64))),
                });
            }
            routes.push(r);
        }
        // Only the requested route carries the residency rule.
        routes[0].rules.insert(
            0,
            RuleConfig {
                name: "eu-data-stays-in-eu".into(),
                key_labels: labels(&[("region", "eu")]),
                headers: BTreeMap::new(),
                metadata: BTreeMap::new(),
                backend_selector: Some(labels(&[("residency", "eu")])),
                weights: None,
                priorities: None,
                route: None,
            },
        );
        let h = Harness::new(routes);
        for (m, s) in scripts {
            h.fake.script(&m, s);
        }
        let eu_key = key(&[("region", "eu"), ("team", "x")]);
        let words = "word ".repeat(dice.below(40) as usize + 1);
        for _ in 0..3 {
            let r = h
                .call_as(&eu_key, &HeaderMap::new(), &chat("r0", &words), dice.below(2) == 0)
                .await;
            if let Ok((up, o)) = r {
                let _ = drain(up).await;
                assert!(o.provider.id == "default/eu", "seed {seed}: served by {}", o.backend);
                served_eu += 1;
            }
            tokio::time::advance(Duration::from_millis(dice.below(5_000))).await;
        }
        for m in h.fake.calls() {
            assert_eq!(region_of.get(&m), Some(&true), "seed {seed}: the EU key reached {m}");
        }
    }
    assert!(served_eu > 100, "{served_eu}");
}
