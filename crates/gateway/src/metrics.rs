//! Prometheus metrics. Labels are low-cardinality: route, backend, provider, status class,
//! operation, key team — never a key, a prompt or a user id.

use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use prometheus::{
    exponential_buckets, Counter, CounterVec, Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use switchyard_config::BackendConfig;

use crate::state::BackendState;

/// Every metric the gateway exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Requests by route, backend, provider, status class and operation.
    pub requests: IntCounterVec,
    /// Total request latency by route.
    pub latency: HistogramVec,
    /// Time to first token of streams by route.
    pub ttft: HistogramVec,
    /// Gateway overhead (total minus upstream) by route.
    pub overhead: HistogramVec,
    /// Tokens by route and type (input, output, cached).
    pub tokens: IntCounterVec,
    /// Spend in USD by route and key team.
    pub spend: CounterVec,
    /// Requests refused by a key's limits or budget, or by a `Budget` over its group of keys, by
    /// route and reason (rpm, tpm, parallel, budget, budget_held, team_budget, team_budget_held,
    /// unavailable).
    pub limited: IntCounterVec,
    /// Response cache lookups by route and result (hit, miss).
    pub cache: IntCounterVec,
    /// Budget left in the current period by key team, USD (summed over the team's keys).
    pub budget_remaining: GaugeVec,
    /// Highest fraction of its budget any key of the team has spent this period.
    pub budget_used: GaugeVec,
    /// Spend of each `Budget` (over a group of keys) in its current period, USD, by namespace
    /// and Budget name.
    pub team_budget_spend: GaugeVec,
    /// `maxSpend` of each `Budget`, USD, by namespace and Budget name.
    pub team_budget_max: GaugeVec,
    /// Spend alerts by result (delivered, failed).
    pub alerts: IntCounterVec,
    /// Requests in flight.
    pub in_flight: IntGauge,
    /// Generation of the running config.
    pub config_generation: IntGauge,
    /// Config reloads refused.
    pub reload_failures: IntCounter,
    /// Streams that ended with an error after the first byte.
    pub stream_errors: IntCounterVec,
    /// Retries by route, backend that failed, and reason.
    pub retries: IntCounterVec,
    /// Fallbacks by route, fallback route and trigger.
    pub fallbacks: IntCounterVec,
    /// Hedged attempts by route and winner (primary, hedge, none).
    pub hedges: IntCounterVec,
    /// Backend (provider, upstream model) state: 1 for the current one of healthy, cooling, open.
    pub backend_state: IntGaugeVec,
    /// Backend state changes by the state entered.
    pub backend_state_changes: IntCounterVec,
    /// Client connections open.
    pub connections_open: IntGauge,
    /// Client connections refused because [`crate::server::Limits::max_connections`] were open.
    pub connections_refused: IntCounter,
    /// Client connections and requests cut by a timeout, by kind (header, idle, body).
    pub connection_timeouts: IntCounterVec,
    /// Upstream answers cut off for size, by provider and part (`body`: a whole response over
    /// `maxResponseBytes`; `event`: a stream event over 1 MiB before the first token).
    pub upstream_too_large: IntCounterVec,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        // From 5 µs (gateway overhead) to ~10 min (long generations).
        let latency_buckets = exponential_buckets(0.000_005, 2.5, 20)?;
        let requests = IntCounterVec::new(
            Opts::new(
                "switchyard_requests_total",
                "Requests by route, backend, provider, status class and operation (chat, embeddings, rerank, files, batches, passthrough...).",
            ),
            &["route", "backend", "provider", "status", "operation"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new("switchyard_request_duration_seconds", "Total request latency.")
                .buckets(latency_buckets.clone()),
            &["route"],
        )?;
        let ttft = HistogramVec::new(
            HistogramOpts::new(
                "switchyard_time_to_first_token_seconds",
                "Time to the first streamed byte.",
            )
            .buckets(latency_buckets.clone()),
            &["route"],
        )?;
        let overhead = HistogramVec::new(
            HistogramOpts::new("switchyard_overhead_seconds", "Gateway time excluding the upstream.")
                .buckets(latency_buckets),
            &["route"],
        )?;
        let tokens = IntCounterVec::new(
            Opts::new(
                "switchyard_tokens_total",
                "Tokens by route and type (input, output, cached).",
            ),
            &["route", "type"],
        )?;
        let spend = CounterVec::new(
            Opts::new("switchyard_spend_usd_total", "Spend in USD by route and key team."),
            &["route", "team"],
        )?;
        let limited = IntCounterVec::new(
            Opts::new(
                "switchyard_limited_total",
                "Requests refused by key limits or budgets, by route and reason.",
            ),
            &["route", "reason"],
        )?;
        let cache = IntCounterVec::new(
            Opts::new("switchyard_cache_total", "Response cache lookups by route and result."),
            &["route", "result"],
        )?;
        let budget_remaining = GaugeVec::new(
            Opts::new(
                "switchyard_budget_remaining_usd",
                "Budget left in the current period by key team, USD, summed over the team's keys with a budget.",
            ),
            &["team"],
        )?;
        let budget_used = GaugeVec::new(
            Opts::new(
                "switchyard_budget_used_ratio",
                "Highest fraction of its budget (spend / maxSpend) any key of the team has spent this period.",
            ),
            &["team"],
        )?;
        let team_budget_spend = GaugeVec::new(
            Opts::new(
                "switchyard_team_budget_spend_usd",
                "Spend of each Budget (over a group of keys) in its current period, USD, as of the last request this replica settled.",
            ),
            &["namespace", "budget"],
        )?;
        let team_budget_max = GaugeVec::new(
            Opts::new("switchyard_team_budget_max_usd", "maxSpend of each Budget, USD."),
            &["namespace", "budget"],
        )?;
        let alerts = IntCounterVec::new(
            Opts::new("switchyard_spend_alerts_total", "Spend alerts by result."),
            &["result"],
        )?;
        let in_flight = IntGauge::new("switchyard_requests_in_flight", "Requests in flight.")?;
        let config_generation = IntGauge::new("switchyard_config_generation", "Generation of the running config.")?;
        let reload_failures = IntCounter::new("switchyard_config_reload_failures_total", "Config reloads refused.")?;
        let stream_errors = IntCounterVec::new(
            Opts::new(
                "switchyard_stream_errors_total",
                "Streams ended by an error after their first byte.",
            ),
            &["route", "backend"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(ttft.clone()))?;
        registry.register(Box::new(overhead.clone()))?;
        registry.register(Box::new(tokens.clone()))?;
        registry.register(Box::new(spend.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(limited.clone()))?;
        registry.register(Box::new(cache.clone()))?;
        registry.register(Box::new(alerts.clone()))?;
        registry.register(Box::new(budget_remaining.clone()))?;
        registry.register(Box::new(budget_used.clone()))?;
        registry.register(Box::new(team_budget_spend.clone()))?;
        registry.register(Box::new(team_budget_max.clone()))?;
        registry.register(Box::new(config_generation.clone()))?;
        registry.register(Box::new(reload_failures.clone()))?;
        registry.register(Box::new(stream_errors.clone()))?;
        let retries = IntCounterVec::new(
            Opts::new(
                "switchyard_retries_total",
                "Retries by route, failed backend and reason (rate-limit, server-error, timeout, connect-error, cooling).",
            ),
            &["route", "backend", "reason"],
        )?;
        let fallbacks = IntCounterVec::new(
            Opts::new(
                "switchyard_fallbacks_total",
                "Fallbacks by route, fallback route and trigger.",
            ),
            &["route", "fallback", "trigger"],
        )?;
        let hedges = IntCounterVec::new(
            Opts::new(
                "switchyard_hedges_total",
                "Hedged attempts by route and winner (primary, hedge, none).",
            ),
            &["route", "winner"],
        )?;
        let backend_state = IntGaugeVec::new(
            Opts::new(
                "switchyard_backend_state",
                "1 for the current state (healthy, cooling, open) of each provider and upstream model.",
            ),
            &["provider", "model", "state"],
        )?;
        let backend_state_changes = IntCounterVec::new(
            Opts::new(
                "switchyard_backend_state_changes_total",
                "Backend state changes by provider, upstream model and the state entered.",
            ),
            &["provider", "model", "state"],
        )?;
        registry.register(Box::new(retries.clone()))?;
        registry.register(Box::new(fallbacks.clone()))?;
        registry.register(Box::new(hedges.clone()))?;
        registry.register(Box::new(backend_state.clone()))?;
        registry.register(Box::new(backend_state_changes.clone()))?;
        let connections_open = IntGauge::new("switchyard_connections_open", "Client connections open.")?;
        let connections_refused = IntCounter::new(
            "switchyard_connections_refused_total",
            "Client connections refused because the connection cap was reached.",
        )?;
        let connection_timeouts = IntCounterVec::new(
            Opts::new(
                "switchyard_connection_timeouts_total",
                "Client connections closed, or requests answered 408, by a timeout: header (the request head took too long), idle (no request on a kept-alive connection), body (the request body took too long).",
            ),
            &["kind"],
        )?;
        registry.register(Box::new(connections_open.clone()))?;
        registry.register(Box::new(connections_refused.clone()))?;
        registry.register(Box::new(connection_timeouts.clone()))?;
        let upstream_too_large = IntCounterVec::new(
            Opts::new(
                "switchyard_upstream_too_large_total",
                "Upstream answers cut off for size, by provider and part: body (a whole response over maxResponseBytes, answered 502), event (a stream event over 1 MiB).",
            ),
            &["provider", "part"],
        )?;
        registry.register(Box::new(upstream_too_large.clone()))?;
        Ok(Self {
            registry,
            requests,
            latency,
            ttft,
            overhead,
            tokens,
            spend,
            in_flight,
            limited,
            cache,
            alerts,
            budget_remaining,
            budget_used,
            team_budget_spend,
            team_budget_max,
            config_generation,
            reload_failures,
            stream_errors,
            retries,
            fallbacks,
            hedges,
            backend_state,
            backend_state_changes,
            connections_open,
            connections_refused,
            connection_timeouts,
            upstream_too_large,
        })
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// `2xx`, `4xx`, `5xx`.
pub fn status_class(status: u16) -> &'static str {
    match status {
        200..=299 => "2xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// A route's metric handles, looked up once and then used in place. `with_label_values` hashes
/// every label value, takes the vector's lock and clones the child on each call: seven calls a
/// request on the hot path. Each handle is made on its route's first use of it, so a route's
/// series appear in the exposition exactly when they did before (a route that never streamed
/// has no time-to-first-token series).
///
/// A configured route's handles live with it (`runtime::Route`) and are dropped with its config;
/// the series stay in the registry, as they always did. A handle belongs to the [`Metrics`] it
/// was first made from: a gateway's routes are only ever counted in its own.
pub struct RouteMetrics {
    route: Arc<str>,
    latency: OnceLock<Histogram>,
    overhead: OnceLock<Histogram>,
    ttft: OnceLock<Histogram>,
    /// `input`, `output`, `cached`.
    tokens: [OnceLock<IntCounter>; 3],
    /// `switchyard_requests_total`'s children for this route, by the other labels.
    requests: Kept<RequestLabels, IntCounter>,
    /// `switchyard_spend_usd_total`'s children for this route, by key team.
    spend: Kept<Arc<str>, Counter>,
    /// `switchyard_backend_state` of each backend (by its index in the route) in each state
    /// (`BackendState::ALL`'s order), read on every answer.
    backend_states: Box<[[OnceLock<IntGauge>; 3]]>,
}

impl std::fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteMetrics")
            .field("route", &self.route)
            .finish_non_exhaustive()
    }
}

/// The labels of `switchyard_requests_total` besides the route.
struct RequestLabels {
    backend: Arc<str>,
    provider: &'static str,
    class: &'static str,
    operation: &'static str,
}

/// How many children of one vector a route keeps handles to.
const KEPT_SERIES: usize = 32;

/// The kinds of token counted in `switchyard_tokens_total`.
#[derive(Clone, Copy)]
pub(crate) enum TokenKind {
    Input = 0,
    Output = 1,
    Cached = 2,
}

impl TokenKind {
    fn label(self) -> &'static str {
        match self {
            Self::Input => "input",
            Self::Output => "output",
            Self::Cached => "cached",
        }
    }
}

impl RouteMetrics {
    /// The handles of the route named `route` (`namespace/model`, or `-`) with `backends`
    /// backends, none made yet.
    pub(crate) fn new(route: Arc<str>, backends: usize) -> Self {
        Self {
            backend_states: (0..backends).map(|_| Default::default()).collect(),
            route,
            latency: OnceLock::new(),
            overhead: OnceLock::new(),
            ttft: OnceLock::new(),
            tokens: [OnceLock::new(), OnceLock::new(), OnceLock::new()],
            requests: Kept::new(true),
            spend: Kept::new(true),
        }
    }

    /// Handles for one call on the route named `route` (a pass-through, a batch, a request
    /// refused before it had a route): each is made when used, and none is kept for another.
    pub(crate) fn once(route: Arc<str>) -> Self {
        Self {
            requests: Kept::new(false),
            spend: Kept::new(false),
            ..Self::new(route, 0)
        }
    }

    /// `switchyard_request_duration_seconds`.
    pub(crate) fn latency(&self, m: &Metrics) -> &Histogram {
        self.latency
            .get_or_init(|| m.latency.with_label_values(&[&*self.route]))
    }

    /// `switchyard_overhead_seconds`.
    pub(crate) fn overhead(&self, m: &Metrics) -> &Histogram {
        self.overhead
            .get_or_init(|| m.overhead.with_label_values(&[&*self.route]))
    }

    /// `switchyard_time_to_first_token_seconds`.
    pub(crate) fn ttft(&self, m: &Metrics) -> &Histogram {
        self.ttft.get_or_init(|| m.ttft.with_label_values(&[&*self.route]))
    }

    /// `switchyard_tokens_total` of one kind.
    pub(crate) fn tokens(&self, m: &Metrics, kind: TokenKind) -> &IntCounter {
        self.tokens[kind as usize].get_or_init(|| m.tokens.with_label_values(&[&*self.route, kind.label()]))
    }

    /// `switchyard_backend_state` of `backend`, the route's backend at `index`, in `state`
    /// (none when the route has no backend at `index`).
    pub(crate) fn backend_state(
        &self,
        m: &Metrics,
        index: usize,
        backend: &BackendConfig,
        state: BackendState,
    ) -> Option<&IntGauge> {
        let slot = BackendState::ALL.iter().position(|s| *s == state)?;
        let gauge = self.backend_states.get(index)?.get(slot)?;
        Some(gauge.get_or_init(|| {
            m.backend_state
                .with_label_values(&[backend.provider.as_str(), backend.model.as_str(), state.as_str()])
        }))
    }

    /// Counts a request in `switchyard_requests_total`.
    pub(crate) fn count_request(
        &self,
        m: &Metrics,
        backend: &Arc<str>,
        provider: &'static str,
        class: &'static str,
        operation: &'static str,
    ) {
        let is = |l: &RequestLabels| {
            l.provider == provider && l.class == class && l.operation == operation && same(&l.backend, backend)
        };
        let make = || {
            let labels = RequestLabels {
                backend: backend.clone(),
                provider,
                class,
                operation,
            };
            let child = m
                .requests
                .with_label_values(&[&*self.route, &**backend, provider, class, operation]);
            (labels, child)
        };
        self.requests.with(is, make, IntCounter::inc);
    }

    /// Adds `cost` to `switchyard_spend_usd_total` of the key team `team`.
    pub(crate) fn spend(&self, m: &Metrics, team: &Arc<str>, cost: f64) {
        let make = || (team.clone(), m.spend.with_label_values(&[&*self.route, &**team]));
        self.spend.with(|t| same(t, team), make, |c| c.inc_by(cost));
    }
}

/// The same label value: the same shared string, or equal ones.
fn same(a: &Arc<str>, b: &Arc<str>) -> bool {
    Arc::ptr_eq(a, b) || a == b
}

/// Children of a metric vector kept by the labels that tell them apart within a route, at most
/// [`KEPT_SERIES`] of them (the labels come from the config, so the bound is only a guard):
/// beyond it, and for one call's handles ([`RouteMetrics::once`]), a child is found through
/// the vector each time.
struct Kept<L, C>(Option<RwLock<Vec<(L, C)>>>);

impl<L, C> Kept<L, C> {
    fn new(keep: bool) -> Self {
        Self(keep.then(|| RwLock::new(Vec::new())))
    }

    /// Applies `f` to the child whose labels `is` picks; `make` makes the labels and the child
    /// when none is kept.
    fn with(&self, is: impl Fn(&L) -> bool, make: impl FnOnce() -> (L, C), f: impl FnOnce(&C)) {
        if let Some(kept) = &self.0 {
            let known = kept.read().unwrap_or_else(PoisonError::into_inner);
            if let Some((_, c)) = known.iter().find(|(l, _)| is(l)) {
                f(c);
                return;
            }
        }
        let (labels, child) = make();
        f(&child);
        let Some(kept) = &self.0 else {
            return;
        };
        let mut known = kept.write().unwrap_or_else(PoisonError::into_inner);
        if known.len() < KEPT_SERIES && !known.iter().any(|(l, _)| is(l)) {
            known.push((labels, child));
        }
    }

    #[cfg(test)]
    fn kept(&self) -> Option<usize> {
        self.0.as_ref().map(|k| k.read().map_or(0, |k| k.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A series' value (a histogram's `_count`), if it is in the exposition.
    fn value(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        m.render()
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .find(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    #[test]
    fn a_routes_handles_count_in_the_series_the_vectors_name() {
        let m = Metrics::new().unwrap_or_else(|e| panic!("{e}"));
        let r = RouteMetrics::new("ns/chat".into(), 2);
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        for _ in 0..3 {
            r.count_request(&m, &a, "openai", "2xx", "chat");
        }
        // Another Arc with the same name is the same series.
        r.count_request(&m, &"a".into(), "openai", "2xx", "chat");
        r.count_request(&m, &a, "openai", "5xx", "chat");
        r.count_request(&m, &b, "anthropic", "2xx", "chat");
        let requests = |backend, class| {
            value(
                &m,
                "switchyard_requests_total",
                &[("route", "ns/chat"), ("backend", backend), ("status", class)],
            )
        };
        assert_eq!(requests("a", "2xx"), Some(4.0));
        assert_eq!(requests("a", "5xx"), Some(1.0));
        assert_eq!(requests("b", "2xx"), Some(1.0));
        r.tokens(&m, TokenKind::Output).inc_by(7);
        r.tokens(&m, TokenKind::Output).inc_by(3);
        r.latency(&m).observe(0.1);
        let tokens = |kind| value(&m, "switchyard_tokens_total", &[("route", "ns/chat"), ("type", kind)]);
        assert_eq!(tokens("output"), Some(10.0));
        // Series not used are not made: no zero series appear for them.
        assert_eq!(tokens("cached"), None);
        assert_eq!(
            value(
                &m,
                "switchyard_time_to_first_token_seconds_count",
                &[("route", "ns/chat")]
            ),
            None
        );
        assert_eq!(
            value(&m, "switchyard_request_duration_seconds_count", &[("route", "ns/chat")]),
            Some(1.0)
        );
        let (apps, apps2, ml): (Arc<str>, Arc<str>, Arc<str>) = ("apps".into(), "apps".into(), "ml".into());
        r.spend(&m, &apps, 0.25);
        r.spend(&m, &apps2, 0.5);
        r.spend(&m, &ml, 1.0);
        let spend = |team| {
            value(
                &m,
                "switchyard_spend_usd_total",
                &[("route", "ns/chat"), ("team", team)],
            )
        };
        assert_eq!((spend("apps"), spend("ml")), (Some(0.75), Some(1.0)));
        // The vector and the handles count the same series.
        m.requests
            .with_label_values(&["ns/chat", "a", "openai", "2xx", "chat"])
            .inc();
        assert_eq!(requests("a", "2xx"), Some(5.0));
    }

    #[test]
    fn a_route_with_more_request_series_than_it_keeps_still_counts_them_all() {
        let m = Metrics::new().unwrap_or_else(|e| panic!("{e}"));
        let r = RouteMetrics::new("ns/chat".into(), 2);
        let backends: Vec<Arc<str>> = (0..KEPT_SERIES + 8).map(|i| format!("b{i}").into()).collect();
        for _ in 0..2 {
            for b in &backends {
                r.count_request(&m, b, "openai", "2xx", "chat");
            }
        }
        for b in &backends {
            let v = value(&m, "switchyard_requests_total", &[("route", "ns/chat"), ("backend", b)]);
            assert_eq!(v, Some(2.0), "{b}");
        }
        assert_eq!(r.requests.kept(), Some(KEPT_SERIES));
        // One call's handles keep nothing, and count all the same.
        let once = RouteMetrics::once("-".into());
        once.count_request(&m, &backends[0], "openai", "4xx", "chat");
        assert_eq!(once.requests.kept(), None);
        let v = value(&m, "switchyard_requests_total", &[("route", "-"), ("status", "4xx")]);
        assert_eq!(v, Some(1.0));
    }
}
