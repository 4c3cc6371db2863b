//! Prometheus metrics. Labels are low-cardinality: route, backend, provider, status class,
//! operation, key team — never a key, a prompt or a user id.

use prometheus::{
    exponential_buckets, CounterVec, Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

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
