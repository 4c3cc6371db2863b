//! What a request cost and how it went: the key's admission settled with the real cost (slots,
//! token window, budget reservation, spend and alerts, in `crate::limits`), token, spend and
//! latency metrics, the access log line, the prompt log of routes that opt in, and the cache
//! fill once a response completed.
//!
//! Every request is counted exactly once: a refused or cached one when `handle` ends
//! ([`finish`]), one that reached an upstream when its usage is known ([`Account::record`]):
//! for a stream, when the stream ends or the client goes away ([`StreamAccount`]). Nothing
//! here decides how a request is served.
//!
//! A stream that ended without its provider's usage (the client left, the upstream cut or went
//! silent, or it never sent any) is billed what it consumed, estimated: the prompt
//! ([`StreamPrompt`], unless the provider already reported it) and the completion tokens the
//! client was sent ([`Delivered`]); never less than any usage the provider did report. Its
//! access log line says `usage_estimated=true`. docs/limits.md, "What is charged when".

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchyard_providers::{Operation, ProviderError, Usage};

use crate::error::GatewayError;
use crate::estimate::{Delivered, StreamPrompt};
use crate::metrics::{status_class, RouteMetrics, TokenKind};
use crate::request::Request;
use crate::route::Outcome;
use crate::runtime::Route;
use crate::telemetry::RequestSpan;
use crate::{cache, limits, Gateway};

/// Counts a request in flight for as long as it lives.
pub(crate) struct InFlight<'a>(&'a prometheus::IntGauge);

impl<'a> InFlight<'a> {
    pub(crate) fn new(g: &'a prometheus::IntGauge) -> Self {
        g.inc();
        Self(g)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Labels of a request, once known: its metrics and its access log line.
#[derive(Clone)]
pub(crate) struct Labels {
    // Shared strings: a request's labels are copied for its accounting and taken from the key,
    // route and backend that name them, each a reference count rather than an allocation.
    // `route` is set with `set_route` or `name_route`, which keep `route_metrics` its handles.
    pub(crate) route: Arc<str>,
    /// The metric handles of `route`, when it is a route of the config (else the metrics are
    /// found by its name).
    pub(crate) route_metrics: Option<Arc<RouteMetrics>>,
    pub(crate) backend: Arc<str>,
    pub(crate) provider: &'static str,
    pub(crate) team: Arc<str>,
    /// `x-request-id`: the client's (sanitised) or a new one; in the access log and the response.
    pub(crate) request_id: Arc<str>,
    /// The VirtualKey (`namespace/name`), never its value.
    pub(crate) key: Arc<str>,
    /// Upstream attempts made.
    pub(crate) attempts: u32,
    /// Fallback levels gone through.
    pub(crate) fallback_depth: u32,
    /// The request reached an upstream: its access log line is written by `Account::record`.
    pub(crate) accounted: bool,
    /// Trace id of the request's span, when traces are on: joins the log line to the trace.
    pub(crate) trace_id: Option<String>,
    /// The endpoint family, for the requests that are not LLM calls: `passthrough`
    /// (`crate::passthrough`), `files`, `batches`; none for the LLM endpoints.
    pub(crate) operation: Option<&'static str>,
    /// The LLM operation, for the LLM endpoints.
    pub(crate) llm_operation: Option<Operation>,
}

impl Labels {
    /// A request nothing is known of yet but its id.
    pub(crate) fn new(request_id: String) -> Self {
        Self {
            route: unknown(),
            route_metrics: None,
            backend: unknown(),
            provider: "-",
            team: empty(),
            request_id: request_id.into(),
            key: empty(),
            attempts: 0,
            trace_id: None,
            fallback_depth: 0,
            accounted: false,
            operation: None,
            llm_operation: None,
        }
    }

    /// The `operation` label of `switchyard_requests_total`: an LLM operation's GenAI name
    /// (`chat`, `embeddings`, `rerank`...), else the endpoint family (`files`, `batches`,
    /// `passthrough`).
    pub(crate) fn operation_label(&self) -> &'static str {
        match (self.llm_operation, self.operation) {
            (Some(op), _) => crate::telemetry::operation_name(op),
            (None, Some(family)) => family,
            (None, None) => "-",
        }
    }

    /// The request is on `route` of the config.
    pub(crate) fn set_route(&mut self, route: &Route) {
        self.route.clone_from(&route.id);
        self.route_metrics = Some(route.metrics.clone());
    }

    /// The request's route label is `name`, not a route of the config (a pass-through or batch
    /// call's).
    pub(crate) fn name_route(&mut self, name: Arc<str>) {
        self.route = name;
        self.route_metrics = None;
    }

    /// The metric handles of the request's route: its route's, or made for this call.
    fn with_route_metrics<T>(&self, f: impl FnOnce(&RouteMetrics) -> T) -> T {
        match &self.route_metrics {
            Some(m) => f(m),
            None => f(&RouteMetrics::once(self.route.clone())),
        }
    }

    /// An upstream answered: who served, after how many attempts.
    pub(crate) fn served(&mut self, outcome: &Outcome) {
        self.route = outcome.route.clone();
        self.route_metrics.clone_from(&outcome.metrics);
        self.backend = outcome.backend.clone();
        self.provider = outcome.provider.kind.as_str();
        self.attempts = outcome.attempts;
        self.fallback_depth = outcome.fallback_depth;
        self.accounted = true;
    }
}

/// `-`, the label of what is not known (yet), shared rather than made per request.
pub(crate) fn unknown() -> Arc<str> {
    static UNKNOWN: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("-"));
    UNKNOWN.clone()
}

/// The empty label, shared.
fn empty() -> Arc<str> {
    static EMPTY: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from(""));
    EMPTY.clone()
}

/// The end of `handle`: the request counter, and the access log line of a request that never
/// reached an upstream (refused by auth, validation or limits, or a cache hit); the others are
/// logged when their usage is known (`Account::record`).
pub(crate) fn finish(gw: &Gateway, labels: &Labels, status: u16, start: Instant, error: Option<&str>) {
    if !labels.accounted {
        access_log(labels, status, start.elapsed(), None, None, false, error);
    }
    labels.with_route_metrics(|r| {
        r.count_request(
            &gw.metrics,
            &labels.backend,
            labels.provider,
            status_class(status),
            labels.operation_label(),
        );
    });
}

/// A cache hit: costs nothing (the reservation is released at zero), counted in latency.
pub(crate) fn cache_hit(gw: &Gateway, labels: &Labels, admission: limits::Admission, start: Instant) {
    admission.settle(0.0, Some(0));
    let elapsed = start.elapsed().as_secs_f64();
    labels.with_route_metrics(|r| r.latency(&gw.metrics).observe(elapsed));
}

/// The gateway's own time on a request that reached an upstream.
pub(crate) fn overhead(gw: &Gateway, labels: &Labels, overhead: Duration) {
    labels.with_route_metrics(|r| r.overhead(&gw.metrics).observe(overhead.as_secs_f64()));
}

/// Only routes that opt in (spec.logPrompts) log prompts: they often hold personal data.
pub(crate) fn log_prompt(labels: &Labels, request: &Request) {
    let prompt = request.prompt();
    tracing::info!(target: "switchyard::prompts", request_id = %labels.request_id, route = %labels.route, %prompt, "prompt");
}

/// Usage accounting of one request that reached an upstream; for streams it runs when the
/// stream ends or the client goes away, with the usage seen so far ([`StreamAccount`]).
///
/// It also settles the key's admission with the real cost, and fills the response cache once
/// a response completed.
pub(crate) struct Account {
    gw: Arc<Gateway>,
    labels: Labels,
    price: Option<switchyard_config::Price>,
    start: Instant,
    admission: Option<limits::Admission>,
    fill: Option<cache::Fill>,
    /// A stream's request span, ended when the stream is (empty for whole responses).
    span: RequestSpan,
}

impl Account {
    pub(crate) fn new(
        gw: Arc<Gateway>,
        labels: Labels,
        outcome: &Outcome,
        start: Instant,
        admission: limits::Admission,
        fill: Option<cache::Fill>,
    ) -> Self {
        Self {
            gw,
            labels,
            price: outcome.price,
            start,
            admission: Some(admission),
            fill,
            span: RequestSpan::default(),
        }
    }

    /// An account with no admission to settle, for tests of what is billed.
    #[cfg(test)]
    pub(crate) fn unadmitted(gw: Arc<Gateway>, labels: Labels, price: Option<switchyard_config::Price>) -> Self {
        Self {
            gw,
            labels,
            price,
            start: Instant::now(),
            admission: None,
            fill: None,
            span: RequestSpan::default(),
        }
    }

    /// Bytes the client received, for the cache.
    pub(crate) fn observe(&mut self, b: &Bytes) {
        if let Some(f) = self.fill.as_mut() {
            f.push(b);
        }
    }

    /// The response completed: store it in the cache.
    pub(crate) fn complete(&mut self) {
        if let Some(f) = self.fill.take() {
            f.store(self.gw.state().clone());
        }
    }

    /// Counts the request with its usage: access log, metrics, spend, and the admission settled.
    pub(crate) fn record(&mut self, usage: Option<&Usage>) {
        self.record_usage(usage, false);
    }

    /// [`Account::record`], saying whether `usage` is the gateway's estimate.
    fn record_usage(&mut self, usage: Option<&Usage>, estimated: bool) {
        self.span.usage(usage);
        let cost = count(
            &self.gw,
            &self.labels,
            200,
            self.start,
            usage,
            self.price.as_ref(),
            estimated,
        );
        if let Some(a) = self.admission.take() {
            a.settle(cost.unwrap_or(0.0), usage.map(Usage::total));
        }
    }

    /// Hands the request's span to a stream, to end when the stream does. `prompt`: the
    /// request's prompt, counted if the provider does not; `delivered` counts the completion the
    /// client is sent.
    pub(crate) fn stream(mut self, span: RequestSpan, prompt: StreamPrompt, delivered: Delivered) -> StreamAccount {
        self.span = span;
        StreamAccount {
            account: self,
            usage: None,
            done: false,
            first: true,
            completed: false,
            prompt,
            delivered,
        }
    }
}

/// Counts a request that reached an upstream, with its `usage` at `price`: the access log line,
/// latency, token and spend metrics. Returns its cost, when both are known.
fn count(
    gw: &Gateway,
    labels: &Labels,
    status: u16,
    start: Instant,
    usage: Option<&Usage>,
    price: Option<&switchyard_config::Price>,
    estimated: bool,
) -> Option<f64> {
    let cost = usage.zip(price).map(|(u, p)| p.cost_of(&tokens(u)));
    let elapsed = start.elapsed();
    access_log(labels, status, elapsed, usage, cost, estimated, None);
    let m = &gw.metrics;
    labels.with_route_metrics(|r| {
        r.latency(m).observe(elapsed.as_secs_f64());
        if let Some(u) = usage {
            r.tokens(m, TokenKind::Input).inc_by(u.prompt_tokens);
            r.tokens(m, TokenKind::Output).inc_by(u.completion_tokens);
            if u.cached_tokens > 0 {
                r.tokens(m, TokenKind::Cached).inc_by(u.cached_tokens);
            }
        }
        if let Some(cost) = cost {
            r.spend(m, &labels.team, cost);
        }
    });
    cost
}

/// A pass-through request's response ended (or its client left): counted like any request
/// that reached an upstream, with the upstream's `status` and the `usage` its body reported
/// (none when it reported none the adapter reads), priced at `price`; the admission is settled
/// with the cost, zero when it is unknown.
pub(crate) fn passthrough(
    gw: &Gateway,
    labels: &Labels,
    status: u16,
    start: Instant,
    usage: Option<&Usage>,
    price: Option<&switchyard_config::Price>,
    admission: limits::Admission,
) {
    let cost = count(gw, labels, status, start, usage, price, false);
    admission.settle(cost.unwrap_or(0.0), usage.map(Usage::total));
}

/// A stream's accounting. Records usage exactly once: at the end of the stream, or on drop
/// when the client left.
pub(crate) struct StreamAccount {
    account: Account,
    usage: Option<Usage>,
    done: bool,
    /// No byte has reached the client yet.
    first: bool,
    /// The upstream's stream ended with its terminal event: its usage, if any, is final.
    completed: bool,
    /// The prompt, counted when the provider did not report its tokens.
    prompt: StreamPrompt,
    /// Completion tokens sent to the client.
    delivered: Delivered,
}

impl StreamAccount {
    /// Usage the stream's translator has seen so far.
    pub(crate) fn usage(&mut self, usage: Option<Usage>) {
        self.usage = usage;
    }

    /// Chunks (OpenAI's format, before the client's egress) on their way to the client: their
    /// completion text is counted, for a stream that ends without usage.
    pub(crate) fn delivering(&mut self, chunks: &[Bytes]) {
        for c in chunks {
            self.delivered.add(c);
        }
    }

    /// Bytes sent to the client; the first ones time the first token.
    pub(crate) fn sent(&mut self, b: &Bytes) {
        if std::mem::take(&mut self.first) {
            let a = &self.account;
            let elapsed = a.start.elapsed();
            a.span.first_token(elapsed, b);
            a.labels
                .with_route_metrics(|r| r.ttft(&a.gw.metrics).observe(elapsed.as_secs_f64()));
        }
        self.account.observe(b);
    }

    /// Bytes of the stream's end (the flush after the upstream ended): not a first token.
    pub(crate) fn sent_last(&mut self, b: &Bytes) {
        self.account.observe(b);
    }

    /// The upstream's stream ended with its terminal event: the response may be cached.
    pub(crate) fn complete(&mut self) {
        self.completed = true;
        self.account.complete();
    }

    /// The stream failed after its first byte: counted, and the error the client is told.
    pub(crate) fn failed(&mut self, e: &ProviderError) -> GatewayError {
        let a = &self.account;
        a.gw.metrics
            .stream_errors
            .with_label_values(&[&*a.labels.route, &*a.labels.backend])
            .inc();
        a.span.failed(e.kind);
        GatewayError::upstream(e, &a.labels.backend)
    }

    /// The stream ended (completed or failed): records its usage.
    pub(crate) fn end(mut self) {
        self.record();
    }

    /// What the stream is billed, and whether it is an estimate: the provider's usage when the
    /// stream completed with it; else the prompt (the provider's count, or the estimate) and the
    /// completion delivered, each never less than what the provider reported. A stream that
    /// delivered nothing and reported nothing costs nothing.
    fn billed(&self) -> (Option<Usage>, bool) {
        if let Some(u) = self.usage.filter(|_| self.completed) {
            return (Some(u), false);
        }
        // Counted only here: a stream that completed with its usage never tokenizes its text.
        let delivered = self.delivered.tokens();
        match self.usage {
            None if delivered == 0 => (None, false),
            reported => {
                let mut u = reported.unwrap_or_default();
                if u.prompt_tokens == 0 {
                    u.prompt_tokens = self.prompt.tokens();
                }
                u.completion_tokens = u.completion_tokens.max(delivered);
                let estimated = reported.is_none_or(|r| r != u);
                (Some(u), estimated)
            }
        }
    }

    /// Records the stream's usage, once.
    fn record(&mut self) {
        if !std::mem::replace(&mut self.done, true) {
            let (usage, estimated) = self.billed();
            self.account.record_usage(usage.as_ref(), estimated);
        }
    }
}

impl Drop for StreamAccount {
    fn drop(&mut self) {
        self.record();
    }
}

/// One structured line per request (JSON with `SWITCHYARD_LOG_FORMAT=json`): who, what, how it
/// went, tokens and cost. Never the key value, never the prompt.
fn access_log(
    l: &Labels,
    status: u16,
    latency: Duration,
    usage: Option<&Usage>,
    cost: Option<f64>,
    usage_estimated: bool,
    error: Option<&str>,
) {
    tracing::info!(
        target: "switchyard::access",
        request_id = %l.request_id,
        trace_id = l.trace_id.as_deref(),
        operation = l.operation,
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
        usage_estimated,
        error,
        // Pass-through lines say when no price or usage was found for them.
        cost_unknown = l.operation.map(|_| cost.is_none()),
        "request"
    );
}

/// The token kinds a price bills, from the provider's usage (OpenAI's convention on both sides:
/// prompt includes cache reads and writes, completion includes reasoning).
fn tokens(u: &Usage) -> switchyard_config::Tokens {
    switchyard_config::Tokens {
        prompt: u.prompt_tokens,
        completion: u.completion_tokens,
        cached: u.cached_tokens,
        cache_write: u.cache_write_tokens,
        cache_write_1h: u.cache_write_1h_tokens,
        reasoning: u.reasoning_tokens,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Anthropic's 1-hour cache writes are billed at their own price (2x input, where 5-minute
    /// writes are 1.25x): the usage's split reaches `Price::cost_of`.
    #[test]
    fn one_hour_cache_writes_are_priced_apart() {
        // Claude Sonnet 4.5, USD per million tokens.
        let price: switchyard_config::Price = serde_json::from_value(serde_json::json!({
            "input": 3.0, "output": 15.0, "cachedInput": 0.3, "cacheWrite": 3.75, "cacheWrite1h": 6.0
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        // The usage of crates/providers/testdata/anthropic/cache_1h_usage_response.json.
        let usage = Usage {
            prompt_tokens: 2048 + 1800 + 248,
            completion_tokens: 503,
            cached_tokens: 1800,
            cache_write_tokens: 248,
            cache_write_1h_tokens: 100,
            reasoning_tokens: 0,
        };
        let expected = (2048.0 * 3.0 + 1800.0 * 0.3 + 148.0 * 3.75 + 100.0 * 6.0 + 503.0 * 15.0) / 1e6;
        let billed = price.cost_of(&tokens(&usage));
        assert!((billed - expected).abs() < 1e-12, "{billed} vs {expected}");
    }
}
