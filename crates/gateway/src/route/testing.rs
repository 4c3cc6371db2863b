//! The harness of the routing layers' scenario tests: config builders, a scripted upstream
//! ([`Fake`]) and a [`Harness`] that routes through it on tokio's paused clock, so every timing
//! in the tests is exact simulated time and the suites run in milliseconds.

pub(crate) use std::collections::{BTreeMap, HashMap};
pub(crate) use std::sync::atomic::{AtomicU32, Ordering};
pub(crate) use std::sync::{Arc, Mutex, OnceLock};
pub(crate) use std::time::Duration;

pub(crate) use bytes::Bytes;
pub(crate) use futures::future::BoxFuture;
pub(crate) use futures::StreamExt;
pub(crate) use http::HeaderMap;
pub(crate) use switchyard_config::*;
pub(crate) use switchyard_providers::{
    self as providers, ErrorKind, Json, Operation, ProviderError, Translated, Usage,
};
pub(crate) use tokio::time::Instant;

use super::context::Ctx;
pub(crate) use super::strategy::Dice;
pub(crate) use super::{Call, Dispatch, Outcome, Routing, Upstream};
pub(crate) use crate::error::GatewayError;
pub(crate) use crate::metrics::Metrics;
pub(crate) use crate::runtime::{Key, Runtime};
pub(crate) use crate::state::MemoryCooldowns;

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

pub(crate) fn provider(id: &str) -> ProviderConfig {
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
        http_version: Default::default(),
    }
}

/// A config with the routes and one provider per provider id their backends name.
pub(crate) fn config(routes: Vec<RouteConfig>) -> GatewayConfig {
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

pub(crate) fn retries(attempts: u32, backoff_ms: u64) -> RetryConfig {
    RetryConfig {
        attempts,
        backoff_ms,
        ..RetryConfig::default()
    }
}

pub(crate) fn fallback(route: &str, on: &[FallbackTrigger]) -> FallbackConfig {
    FallbackConfig {
        route: route.into(),
        on: on.to_vec(),
    }
}

pub(crate) fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

pub(crate) fn key(pairs: &[(&str, &str)]) -> Key {
    Key::new(KeyConfig {
        namespace: "default".into(),
        name: "k".into(),
        hashes: vec![],
        allowed_routes: vec![],
        allowed_passthrough: Vec::new(),
        limits: LimitsConfig::default(),
        budget: None,
        expires_at: None,
        blocked: false,
        labels: labels(pairs),
    })
}

pub(crate) fn chat(model: &str, text: &str) -> Json {
    let v = serde_json::json!({"model": model, "messages": [{"role": "user", "content": text}]});
    match v {
        serde_json::Value::Object(m) => m,
        _ => Json::new(),
    }
}

pub(crate) fn error(kind: ErrorKind) -> ProviderError {
    ProviderError::new(kind, format!("scripted {kind:?}"))
}

// ---------------------------------------------------------------------------------------------
// The scripted upstream.

/// What one upstream model does.
#[derive(Clone, Default)]
pub(crate) struct Script {
    /// Fail the first N calls (then answer).
    pub(crate) fail_first: u32,
    /// Fail every call.
    pub(crate) always_fail: bool,
    /// The failure (default: a 500).
    pub(crate) error: Option<ProviderError>,
    /// Wait before the response (headers).
    pub(crate) delay: Duration,
    /// Streams: wait before the first chunk.
    pub(crate) first_token: Duration,
    /// Streams: break after the first chunk.
    pub(crate) cut: bool,
}

pub(crate) fn fails(kind: ErrorKind) -> Script {
    Script {
        always_fail: true,
        error: Some(error(kind)),
        ..Script::default()
    }
}

pub(crate) fn slow(delay: Duration) -> Script {
    Script {
        delay,
        ..Script::default()
    }
}

/// Counts an upstream call that was dropped before it finished.
pub(crate) struct Cancel {
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
pub(crate) struct Fake {
    scripts: Mutex<HashMap<String, Script>>,
    calls: Mutex<Vec<(u64, String)>>,
    counts: Mutex<HashMap<String, u32>>,
    pub(crate) cancelled: Arc<AtomicU32>,
    started: OnceLock<Instant>,
}

impl Fake {
    pub(crate) fn script(&self, model: &str, s: Script) {
        self.scripts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(model.into(), s);
    }

    /// Models called, in order.
    pub(crate) fn calls(&self) -> Vec<String> {
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(_, m)| m.clone())
            .collect()
    }

    /// Milliseconds since the harness started, per call.
    pub(crate) fn times(&self) -> Vec<u64> {
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(t, _)| *t)
            .collect()
    }

    pub(crate) fn clear(&self) {
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

pub(crate) struct Harness {
    pub(crate) rt: Runtime,
    pub(crate) fake: Arc<Fake>,
    pub(crate) routing: Routing,
    metrics: Metrics,
    seed: AtomicU32,
}

impl Harness {
    pub(crate) fn new(routes: Vec<RouteConfig>) -> Self {
        Self::with(config(routes))
    }

    pub(crate) fn with(cfg: GatewayConfig) -> Self {
        Self::with_state(cfg, Arc::new(crate::state::Slot::default()))
    }

    /// A harness whose Provider quotas are taken in `state`.
    pub(crate) fn with_state(cfg: GatewayConfig, state: Arc<crate::state::Slot>) -> Self {
        let metrics = Metrics::new().unwrap_or_else(|e| unreachable!("{e}"));
        let fake = Arc::new(Fake::default());
        let h = Self {
            rt: Runtime::new(cfg, 1),
            routing: Routing::new(fake.clone(), Arc::new(MemoryCooldowns::default()), metrics.clone())
                .with_state(state),
            fake,
            metrics,
            seed: AtomicU32::new(1),
        };
        h.fake.started.get_or_init(Instant::now);
        h
    }

    pub(crate) async fn call(&self, model: &str, stream: bool) -> Result<(Upstream, Outcome), GatewayError> {
        self.call_as(&key(&[]), &HeaderMap::new(), &chat(model, "hello"), stream)
            .await
    }

    pub(crate) async fn call_as(
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
        let dice = Dice::new(u64::from(self.seed.fetch_add(1, Ordering::Relaxed)));
        let ctx = Ctx::new(
            &self.routing,
            &self.rt,
            key,
            headers,
            request,
            None,
            crate::estimate::Prompt::measure(request),
            Operation::Chat,
            stream,
            dice,
            None,
        );
        ctx.run(route).await
    }

    /// Calls and expects success; returns the outcome and the body (streams drained).
    pub(crate) async fn ok(&self, model: &str, stream: bool) -> (Outcome, String) {
        match self.call(model, stream).await {
            Ok((up, outcome)) => {
                let (body, err) = drain(up).await;
                assert!(err.is_none(), "{err:?}");
                (outcome, body)
            }
            Err(e) => unreachable!("{model}: {e}"),
        }
    }

    pub(crate) async fn err(&self, model: &str, stream: bool) -> GatewayError {
        match self.call(model, stream).await {
            Ok((_, o)) => unreachable!("{model} served by {}", o.backend),
            Err(e) => e,
        }
    }

    /// Sum of a metric's samples whose labels include `labels`, from the text exposition.
    pub(crate) fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
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
pub(crate) async fn drain(up: Upstream) -> (String, Option<ProviderError>) {
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

pub(crate) fn gaps(times: &[u64]) -> Vec<u64> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}
