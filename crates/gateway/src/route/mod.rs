//! Which backend serves a request, and what happens when it fails: rules, balancing strategies,
//! priority tiers, retries with backoff, per-try / first-token / overall deadlines, fallback
//! routes, cooldowns and circuit breakers, hedging.
//!
//! [`execute`] takes a routed request and returns an upstream answer that has not failed yet:
//! a whole response, or a stream whose first token has arrived (so a stream is retried or falls
//! back only before anything reached the client). It does not translate for the client, count
//! usage or spend, or enforce key limits: the pipeline in `proxy` does that with what it returns.
//!
//! Order of a request: rules pick the route's plan (or another route) -> candidates (selector,
//! weight, context window, cooldown, limits) -> best priority tier -> strategy -> attempt (hedged
//! if configured) -> on a retryable failure, the next attempt, preferring a backend not yet tried
//! and backing off when none is left -> when the route gives up, its fallbacks whose triggers
//! match, depth first, at most [`MAX_FALLBACK_DEPTH`] levels.
//!
//! Deadlines: `perTry` bounds one attempt, `firstToken` the wait for response headers and, for
//! streams, for the first token; `request` bounds everything here, waits and fallbacks included.
//! They end where this module's work ends: once a stream's first token is out, only the provider's
//! stream idle timeout applies (in the forwarder), so a long generation is never cut for length.
//!
//! Shared state: cooldowns go through [`CooldownStore`] (in memory, or shared by a fleet), keyed
//! by deployment (`provider|model`) so every route using a failing deployment skips it. Meters
//! (in flight, per-minute windows, latency averages) are per process.

mod cooldown;
mod estimate;
mod meters;
mod rules;
mod strategy;
mod upstream;

#[cfg(test)]
pub(crate) mod tests;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
use http::HeaderMap;
use switchyard_config::{FallbackTrigger, Price, ProviderConfig, RetryConfig, RetryOn, RouteConfig, RouteMode};
use switchyard_providers::{ErrorKind, Json, Operation, ProviderError};
use tokio::time::Instant;

pub use cooldown::{Availability, BackendState, CooldownStore, MemoryCooldowns, Strike, PROBE_LEASE};
pub use meters::Meters;
pub use strategy::Balance;
pub use upstream::{Call, Dispatch, HttpDispatch, Upstream};

use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::runtime::{Key, Route, Runtime};
use crate::telemetry::{AttemptSpan, Parent};
use crate::Gateway;
use estimate::Prompt;
use meters::InFlight;
use rules::{Facts, Plan};
use strategy::{BackendMeters, Candidate, Choice, Dice};

/// Most fallback levels a request goes through (compile refuses deeper chains; this holds for
/// any config).
pub const MAX_FALLBACK_DEPTH: u32 = 3;
/// Most rule redirections (`action.route`) a request follows.
const MAX_REDIRECTS: usize = 3;
/// Backoff jitter: each wait is its nominal value times a factor in [1 - J, 1 + J].
const JITTER: f64 = 0.2;

/// Routing state a gateway process keeps across config reloads.
pub struct Resilience {
    /// Cooldowns and circuit breakers.
    pub cooldowns: Arc<dyn CooldownStore>,
    /// In-flight counts, rate windows, latency averages.
    pub meters: Meters,
}

impl Resilience {
    /// State in this process's memory.
    pub fn in_memory() -> Self {
        Self {
            cooldowns: Arc::new(MemoryCooldowns::default()),
            meters: Meters::default(),
        }
    }
}

/// What served a request.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The route that served it (`namespace/model`): the requested one, a rule's target or a
    /// fallback.
    pub route: String,
    /// The backend's name within that route.
    pub backend: String,
    /// Its provider.
    pub provider: Arc<ProviderConfig>,
    /// The backend's prices.
    pub price: Option<Price>,
    /// Upstream attempts made, hedges included.
    pub attempts: u32,
    /// Fallback levels gone through (0: the requested route, or its rule's target, served).
    pub fallback_depth: u32,
    /// From the first attempt until the answer (waits between attempts included).
    pub upstream_elapsed: Duration,
}

/// Serves a routed request: see the module docs.
#[allow(clippy::too_many_arguments)]
pub async fn execute(
    gw: &Gateway,
    rt: &Runtime,
    route: &Arc<Route>,
    key: &Key,
    request: &Json,
    headers: &HeaderMap,
    op: Operation,
    stream: bool,
    trace: Option<&Parent>,
) -> Result<(Upstream, Outcome), GatewayError> {
    let dispatch = HttpDispatch { gw };
    let ctx = Ctx {
        rt,
        key_labels: &key.config.labels,
        headers,
        request,
        op,
        stream,
        dispatch: &dispatch,
        cooldowns: gw.resilience.cooldowns.as_ref(),
        meters: &gw.resilience.meters,
        metrics: &gw.metrics,
        dice: Dice::random(),
        prompt: Prompt::measure(op, request),
        exact_tokens: tokio::sync::OnceCell::new(),
        selectors: Mutex::new(Vec::new()),
        visited: Mutex::new(Vec::new()),
        attempts: AtomicU32::new(0),
        first_attempt: OnceLock::new(),
        trace,
    };
    ctx.run(route).await
}

/// One request's routing context.
struct Ctx<'a> {
    rt: &'a Runtime,
    key_labels: &'a BTreeMap<String, String>,
    headers: &'a HeaderMap,
    request: &'a Json,
    op: Operation,
    stream: bool,
    dispatch: &'a dyn Dispatch,
    cooldowns: &'a dyn CooldownStore,
    meters: &'a Meters,
    metrics: &'a Metrics,
    dice: Dice,
    prompt: Prompt,
    exact_tokens: tokio::sync::OnceCell<u64>,
    /// Backend selectors in force: once applied, for the rest of the request.
    selectors: Mutex<Vec<BTreeMap<String, String>>>,
    /// Routes entered (by address), so no route is tried twice.
    visited: Mutex<Vec<usize>>,
    attempts: AtomicU32,
    first_attempt: OnceLock<Instant>,
    /// The request's span, when traces are on: each attempt is a child span.
    trace: Option<&'a Parent>,
}

/// A successful attempt.
struct Served {
    upstream: Upstream,
    route: Arc<Route>,
    index: usize,
    provider: Arc<ProviderConfig>,
    depth: u32,
}

/// Why a route (or an attempt) did not serve.
#[derive(Debug)]
enum Failure {
    /// The upstream failed, or would have (context window).
    Upstream { error: ProviderError, backend: String },
    /// Every eligible backend is cooling down or at its limits.
    Cooling { retry_after: Duration, route: String },
    /// No backend of the route may serve this request at all.
    NoBackend { route: String, reason: String },
}

const ALL_TRIGGERS: [FallbackTrigger; 5] = [
    FallbackTrigger::RateLimit,
    FallbackTrigger::ServerError,
    FallbackTrigger::Timeout,
    FallbackTrigger::ContextWindow,
    FallbackTrigger::ContentPolicy,
];

fn trigger_label(t: FallbackTrigger) -> &'static str {
    match t {
        FallbackTrigger::RateLimit => "rate-limit",
        FallbackTrigger::ServerError => "server-error",
        FallbackTrigger::Timeout => "timeout",
        FallbackTrigger::ContextWindow => "context-window",
        FallbackTrigger::ContentPolicy => "content-policy",
    }
}

impl Failure {
    /// Whether this failure triggers a fallback listed with `t`.
    fn triggers(&self, t: FallbackTrigger) -> bool {
        match self {
            Failure::Upstream { error, .. } => match error.kind {
                ErrorKind::RateLimit => t == FallbackTrigger::RateLimit,
                ErrorKind::Timeout => t == FallbackTrigger::Timeout,
                ErrorKind::ContextWindow => t == FallbackTrigger::ContextWindow,
                ErrorKind::ContentPolicy => t == FallbackTrigger::ContentPolicy,
                // What the client would see as 502: the upstream, not the request, is at fault.
                ErrorKind::Server
                | ErrorKind::Connect
                | ErrorKind::Protocol
                | ErrorKind::Auth
                | ErrorKind::PermissionDenied
                | ErrorKind::NotFound => t == FallbackTrigger::ServerError,
                ErrorKind::BadRequest => false,
            },
            Failure::Cooling { .. } => matches!(t, FallbackTrigger::RateLimit | FallbackTrigger::ServerError),
            Failure::NoBackend { .. } => true,
        }
    }

    /// Whether the route's retry policy retries it.
    fn retryable(&self, on: &[RetryOn]) -> bool {
        let Failure::Upstream { error, .. } = self else {
            return false;
        };
        let class = match error.kind {
            ErrorKind::RateLimit => RetryOn::RateLimit,
            ErrorKind::Server | ErrorKind::Protocol => RetryOn::ServerError,
            ErrorKind::Timeout => RetryOn::Timeout,
            ErrorKind::Connect => RetryOn::ConnectError,
            // Client faults never succeed on retry; a provider's 401/403/404 is configuration.
            ErrorKind::BadRequest
            | ErrorKind::ContextWindow
            | ErrorKind::ContentPolicy
            | ErrorKind::Auth
            | ErrorKind::PermissionDenied
            | ErrorKind::NotFound => return false,
        };
        on.contains(&class)
    }

    fn retry_after(&self) -> Duration {
        match self {
            Failure::Upstream { error, .. } => error.retry_after.unwrap_or_default(),
            Failure::Cooling { retry_after, .. } => *retry_after,
            Failure::NoBackend { .. } => Duration::ZERO,
        }
    }

    fn into_error(self) -> GatewayError {
        match self {
            Failure::Upstream { error, backend } => GatewayError::upstream(&error, &backend),
            Failure::Cooling { retry_after, route } => {
                let secs = retry_after.as_secs_f64().ceil().max(1.0);
                let mut e = GatewayError::unavailable(format!(
                    "No backend of route `{route}` is available now (cooling down after failures, or at its limits); try again in {secs} seconds."
                ));
                e.retry_after = Some(retry_after.max(Duration::from_secs(1)));
                e
            }
            Failure::NoBackend { route, reason } => GatewayError::unavailable(format!(
                "No backend of route `{route}` may serve this request: {reason}."
            )),
        }
    }
}

fn retry_reason(f: &Failure) -> &'static str {
    match f {
        Failure::Upstream { error, .. } => match error.kind {
            ErrorKind::RateLimit => "rate-limit",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connect => "connect-error",
            _ => "server-error",
        },
        Failure::Cooling { .. } => "cooling",
        Failure::NoBackend { .. } => "no-backend",
    }
}

/// Whether a route's mode serves an operation.
fn serves(op: Operation, mode: RouteMode) -> bool {
    matches!(
        (op, mode),
        (Operation::Chat | Operation::Responses, RouteMode::Chat)
            | (Operation::Embeddings, RouteMode::Embeddings)
            | (Operation::Completions, RouteMode::Completions | RouteMode::Chat)
    )
}

fn label(route: &RouteConfig) -> String {
    format!("{}/{}", route.namespace, route.model)
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Whether waiting `wait` still leaves time before the deadline.
fn fits(deadline: Option<Instant>, wait: Duration) -> bool {
    deadline.is_none_or(|d| Instant::now() + wait < d)
}

/// The `n`th backoff (0-based): `backoff × 2^n`, capped, with jitter.
fn backoff(policy: &RetryConfig, n: u32, dice: &Dice) -> Duration {
    let max = Duration::from_millis(policy.max_backoff_ms);
    let nominal = Duration::from_millis(policy.backoff_ms)
        .saturating_mul(1u32 << n.min(20))
        .min(max);
    let factor = 1.0 - JITTER + 2.0 * JITTER * dice.unit();
    nominal.mul_f64(factor).min(max)
}

/// What a failure does to the backend's cooldown and circuit.
fn strike(error: &ProviderError, provider: &ProviderConfig, retries: &RetryConfig) -> Option<Strike> {
    let cb = &provider.circuit_breaker;
    let open_for = Duration::from_millis(cb.cooldown_ms);
    let base = Strike {
        counts: false,
        threshold: cb.consecutive_failures,
        open_for,
        cool_for: None,
    };
    match error.kind {
        // A 429 cools the backend for its retry-after (else one backoff step); it does not count
        // toward opening the circuit: the backend is busy, not broken.
        ErrorKind::RateLimit => Some(Strike {
            cool_for: Some(
                error
                    .retry_after
                    .unwrap_or(Duration::from_millis(retries.backoff_ms))
                    .min(open_for.max(Duration::from_secs(1))),
            ),
            ..base
        }),
        ErrorKind::Server
        | ErrorKind::Timeout
        | ErrorKind::Connect
        | ErrorKind::Protocol
        | ErrorKind::Auth
        | ErrorKind::PermissionDenied
        | ErrorKind::NotFound => Some(Strike { counts: true, ..base }),
        ErrorKind::BadRequest | ErrorKind::ContextWindow | ErrorKind::ContentPolicy => None,
    }
}

/// The backends that may take the request now.
struct Pool {
    /// Available now (probe candidates included).
    ready: Vec<Candidate>,
    /// When the soonest unavailable one frees up.
    soonest: Option<Duration>,
}

impl Ctx<'_> {
    async fn run(&self, route: &Arc<Route>) -> Result<(Upstream, Outcome), GatewayError> {
        let deadline = route
            .config
            .timeouts
            .request_ms
            .map(|ms| Instant::now() + Duration::from_millis(ms));
        match self.serve(route.clone(), 0, deadline).await {
            Ok(s) => {
                let backend = &s.route.config.backends[s.index];
                let outcome = Outcome {
                    route: label(&s.route.config),
                    backend: backend.name.clone(),
                    provider: s.provider,
                    price: backend.price,
                    attempts: self.attempts.load(Ordering::Relaxed),
                    fallback_depth: s.depth,
                    upstream_elapsed: self.first_attempt.get().map_or(Duration::ZERO, |t| t.elapsed()),
                };
                Ok((s.upstream, outcome))
            }
            Err(f) => Err(f.into_error()),
        }
    }

    /// Serves on a route, then on its fallbacks (depth first).
    fn serve(
        &self,
        route: Arc<Route>,
        depth: u32,
        deadline: Option<Instant>,
    ) -> BoxFuture<'_, Result<Served, Failure>> {
        Box::pin(async move {
            let (route, plan) = self.resolve(route);
            let deadline = earliest(
                deadline,
                route
                    .config
                    .timeouts
                    .request_ms
                    .map(|ms| Instant::now() + Duration::from_millis(ms)),
            );
            let failure = match self.attempts(&route, &plan, deadline).await {
                Ok(mut s) => {
                    s.depth = depth;
                    return Ok(s);
                }
                Err(f) => f,
            };
            if depth >= MAX_FALLBACK_DEPTH {
                return Err(failure);
            }
            let own: Vec<FallbackTrigger> = ALL_TRIGGERS.into_iter().filter(|t| failure.triggers(*t)).collect();
            let mut last = failure;
            for fb in &route.config.fallbacks {
                let Some(trigger) = fb.on.iter().copied().find(|t| own.contains(t)) else {
                    continue;
                };
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let Some(next) = self.rt.route(&route.config.namespace, &fb.route) else {
                    continue;
                };
                if self.was_visited(next) || !serves(self.op, next.config.mode) {
                    continue;
                }
                let next_label = label(&next.config);
                tracing::debug!(from = %label(&route.config), to = %next_label, trigger = trigger_label(trigger), "fallback");
                self.metrics
                    .fallbacks
                    .with_label_values(&[
                        label(&route.config).as_str(),
                        next_label.as_str(),
                        trigger_label(trigger),
                    ])
                    .inc();
                match self.serve(next.clone(), depth + 1, deadline).await {
                    Ok(s) => return Ok(s),
                    Err(f) => last = f,
                }
            }
            Err(last)
        })
    }

    fn was_visited(&self, route: &Arc<Route>) -> bool {
        let id = Arc::as_ptr(route) as usize;
        self.visited.lock().unwrap_or_else(|p| p.into_inner()).contains(&id)
    }

    fn visit(&self, route: &Arc<Route>) {
        let id = Arc::as_ptr(route) as usize;
        self.visited.lock().unwrap_or_else(|p| p.into_inner()).push(id);
    }

    /// Applies the route's first matching rule: its selector for the rest of the request, and
    /// either a redirect to another route or its weights and tiers.
    fn resolve(&self, mut route: Arc<Route>) -> (Arc<Route>, Plan) {
        self.visit(&route);
        let facts = Facts {
            key_labels: self.key_labels,
            headers: self.headers,
            request: self.request,
        };
        for _ in 0..=MAX_REDIRECTS {
            let Some(rule) = rules::first_match(&route.config, &facts) else {
                break;
            };
            if let Some(sel) = &rule.backend_selector {
                self.selectors
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(sel.clone());
            }
            let target = rule
                .route
                .as_deref()
                .and_then(|t| self.rt.route(&route.config.namespace, t));
            match target {
                Some(next) if !self.was_visited(next) && serves(self.op, next.config.mode) => {
                    tracing::debug!(rule = %rule.name, to = %label(&next.config), "rule sends the request to another route");
                    let next = next.clone();
                    self.visit(&next);
                    route = next;
                }
                _ => {
                    let plan = {
                        let sel = self.selectors.lock().unwrap_or_else(|p| p.into_inner());
                        Plan::new(&route.config, Some(rule), &sel)
                    };
                    return (route, plan);
                }
            }
        }
        let plan = {
            let sel = self.selectors.lock().unwrap_or_else(|p| p.into_inner());
            Plan::new(&route.config, None, &sel)
        };
        (route, plan)
    }

    /// The prompt's token count, when it may matter for a context window of `smallest` tokens.
    async fn prompt_tokens(&self, smallest: u64) -> u64 {
        if self.prompt.upper_bound() <= smallest {
            return self.prompt.upper_bound();
        }
        *self
            .exact_tokens
            .get_or_init(|| estimate::count(self.op, self.request, &self.prompt))
            .await
    }

    /// The available backends of a route under a plan, or why there are none.
    async fn pool(&self, route: &Route, plan: &Plan, meters: &[BackendMeters]) -> Result<Pool, Failure> {
        let cfg = &route.config;
        let eligible: Vec<usize> = (0..cfg.backends.len())
            .filter(|i| plan.allowed[*i] && plan.weights[*i] > 0)
            .collect();
        if eligible.is_empty() {
            let reason = if plan.allowed.iter().any(|a| *a) {
                "every backend it may use has weight 0".to_owned()
            } else {
                format!(
                    "a rule restricts backends by labels ({}) that none of its backends has",
                    self.selectors
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .iter()
                        .flat_map(|s| s.iter().map(|(k, v)| format!("{k}={v}")))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            return Err(Failure::NoBackend {
                route: label(cfg),
                reason,
            });
        }
        // Context windows, checked before sending.
        let smallest = eligible
            .iter()
            .filter_map(|i| cfg.backends[*i].context_window)
            .min()
            .map(u64::from);
        let mut fitting = eligible;
        if let Some(smallest) = smallest {
            let tokens = self.prompt_tokens(smallest).await;
            let largest = fitting
                .iter()
                .map(|i| cfg.backends[*i].context_window.map_or(u64::MAX, u64::from))
                .max()
                .unwrap_or(u64::MAX);
            fitting.retain(|i| cfg.backends[*i].context_window.is_none_or(|w| tokens <= u64::from(w)));
            if fitting.is_empty() {
                let mut error = ProviderError::new(
                    ErrorKind::ContextWindow,
                    format!(
                        "This model's maximum context length is {largest} tokens. However, your messages resulted in about {tokens} tokens (estimated by the gateway before sending). Please reduce the length of the messages."
                    ),
                );
                error.code = Some("context_length_exceeded".into());
                error.param = Some("messages".into());
                return Err(Failure::Upstream {
                    error,
                    backend: "-".into(),
                });
            }
        }
        let availability = self.cooldowns.availability(&route.balance.keys).await;
        let mut ready = Vec::with_capacity(fitting.len());
        let mut soonest: Option<Duration> = None;
        for i in fitting {
            let mut wait = match availability.get(i).copied().unwrap_or(Availability::Ready) {
                Availability::Cooling(d) => Some(d),
                Availability::Ready | Availability::Probe => None,
            };
            if wait.is_none() {
                let m = &meters[i];
                let (free_b, wait_b) = m.deployment.headroom(&cfg.backends[i].limits);
                let (free_p, wait_p) = m.provider.headroom(&m.quota);
                if free_b <= 0.0 || free_p <= 0.0 {
                    wait = Some(wait_b.max(wait_p).max(Duration::from_millis(100)));
                }
            }
            match wait {
                Some(d) => soonest = Some(soonest.map_or(d, |s| s.min(d))),
                None => ready.push(Candidate {
                    index: i,
                    weight: plan.weights[i],
                    priority: plan.priorities[i],
                    probe: availability.get(i) == Some(&Availability::Probe),
                }),
            }
        }
        Ok(Pool { ready, soonest })
    }

    /// Picks the next backend: among those not tried yet when any is available (all of them
    /// otherwise, unless `fresh_only`), the best tier, then the strategy. Claims a half-open
    /// backend's probe.
    async fn choose(
        &self,
        route: &Route,
        plan: &Plan,
        meters: &[BackendMeters],
        tried: &[bool],
        fresh_only: bool,
    ) -> Result<Candidate, Failure> {
        let pool = self.pool(route, plan, meters).await?;
        let cooling = |soonest: Option<Duration>| Failure::Cooling {
            retry_after: soonest.unwrap_or(Duration::from_secs(1)),
            route: label(&route.config),
        };
        let mut cands = pool.ready;
        if cands.iter().any(|c| !tried[c.index]) || fresh_only {
            cands.retain(|c| !tried[c.index]);
        }
        loop {
            let choice = Choice {
                balance: &route.balance,
                backends: &route.config.backends,
                meters,
                strategy: route.config.strategy,
                stream: self.stream,
                prompt: &self.prompt,
                dice: &self.dice,
            };
            let Some(at) = strategy::pick(&choice, &cands) else {
                return Err(cooling(pool.soonest));
            };
            let c = cands[at];
            if !c.probe || self.cooldowns.claim_probe(&route.balance.keys[c.index]).await {
                return Ok(c);
            }
            // Another request holds the probe.
            cands.remove(at);
        }
    }

    /// The attempts on one route: retries with backoff until one succeeds or the policy gives up.
    async fn attempts(&self, route: &Arc<Route>, plan: &Plan, deadline: Option<Instant>) -> Result<Served, Failure> {
        let cfg = &route.config;
        let meters = route.balance.meters(self.rt, self.meters, cfg);
        let max_backoff = Duration::from_millis(cfg.retries.max_backoff_ms);
        let mut tried = vec![false; cfg.backends.len()];
        let mut retries_left = cfg.retries.attempts;
        let mut waits = 0u32;
        let mut last: Option<Failure> = None;
        loop {
            let pick = match self.choose(route, plan, meters, &tried, false).await {
                Ok(c) => c,
                Err(none) => {
                    // Everything is cooling: wait for the soonest when that is short.
                    let wait = none.retry_after();
                    if matches!(none, Failure::Cooling { .. })
                        && retries_left > 0
                        && wait <= max_backoff
                        && fits(deadline, wait)
                    {
                        retries_left -= 1;
                        self.count_retry(cfg, "-", "cooling");
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    return Err(match (last, none) {
                        // The upstream's own error says more than "cooling down" after it.
                        (Some(prev), Failure::Cooling { .. }) => prev,
                        (_, none) => none,
                    });
                }
            };
            let failure = match self.dispatch(route, plan, meters, pick, &mut tried, deadline).await {
                Ok(s) => return Ok(s),
                Err(f) => f,
            };
            if retries_left == 0 || !failure.retryable(&cfg.retries.on) || !fits(deadline, Duration::ZERO) {
                return Err(failure);
            }
            retries_left -= 1;
            // A backend not tried yet is tried at once; the same ones again after a backoff,
            // and never before a rate limit's retry-after.
            let pool = self.pool(route, plan, meters).await.ok();
            let fresh = pool.as_ref().is_some_and(|p| p.ready.iter().any(|c| !tried[c.index]));
            let wait = if fresh {
                Duration::ZERO
            } else {
                // Nothing ready: until the soonest frees up (a 429's retry-after is its cooldown).
                // Only the failed backend ready (its cooldown was not recorded): its retry-after.
                let failed = match &failure {
                    Failure::Upstream { backend, .. } => Some(backend.as_str()),
                    _ => None,
                };
                let must = match &pool {
                    Some(p) if p.ready.is_empty() => p.soonest.unwrap_or_default(),
                    Some(p)
                        if p.ready
                            .iter()
                            .any(|c| Some(cfg.backends[c.index].name.as_str()) != failed) =>
                    {
                        Duration::ZERO
                    }
                    _ => failure.retry_after(),
                };
                if must > max_backoff {
                    return Err(failure);
                }
                let b = backoff(&cfg.retries, waits, &self.dice);
                waits += 1;
                b.max(must)
            };
            if !fits(deadline, wait) {
                return Err(failure);
            }
            let backend = match &failure {
                Failure::Upstream { backend, .. } => backend.as_str(),
                _ => "-",
            };
            self.count_retry(cfg, backend, retry_reason(&failure));
            tracing::debug!(route = %label(cfg), backend, wait_ms = wait.as_millis() as u64, error = ?failure, "retrying");
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            last = Some(failure);
        }
    }

    fn count_retry(&self, cfg: &RouteConfig, backend: &str, reason: &str) {
        self.metrics
            .retries
            .with_label_values(&[label(cfg).as_str(), backend, reason])
            .inc();
    }

    /// One attempt, hedged when the route says so: if the first backend has produced nothing
    /// after `hedge_after_ms`, a second (not yet tried) starts too; the first to answer wins and
    /// the other is dropped, which cancels its upstream request.
    async fn dispatch(
        &self,
        route: &Arc<Route>,
        plan: &Plan,
        meters: &[BackendMeters],
        first: Candidate,
        tried: &mut [bool],
        deadline: Option<Instant>,
    ) -> Result<Served, Failure> {
        let primary = self.one(route, meters, first, deadline);
        let Some(after) = route.config.hedge_after_ms.map(Duration::from_millis) else {
            let r = primary.await;
            tried[first.index] = true;
            return r;
        };
        tokio::pin!(primary);
        tokio::select! {
            r = &mut primary => {
                tried[first.index] = true;
                return r;
            }
            () = tokio::time::sleep(after) => {}
        }
        let mut busy = tried.to_vec();
        busy[first.index] = true;
        let Ok(second) = self.choose(route, plan, meters, &busy, true).await else {
            tried[first.index] = true;
            return primary.await;
        };
        let hedge = self.one(route, meters, second, deadline);
        tokio::pin!(hedge);
        let route_label = label(&route.config);
        let won = |winner: &str| {
            self.metrics
                .hedges
                .with_label_values(&[route_label.as_str(), winner])
                .inc();
        };
        tried[first.index] = true;
        tried[second.index] = true;
        tokio::select! {
            r = &mut primary => match r {
                Ok(s) => { won("primary"); Ok(s) }
                Err(_) => {
                    let r = hedge.await;
                    won(if r.is_ok() { "hedge" } else { "none" });
                    r
                }
            },
            r = &mut hedge => match r {
                Ok(s) => { won("hedge"); Ok(s) }
                Err(_) => {
                    let r = primary.await;
                    won(if r.is_ok() { "primary" } else { "none" });
                    r
                }
            },
        }
    }

    /// One call to one backend, under its deadlines, recorded in cooldowns and meters.
    async fn one(
        &self,
        route: &Arc<Route>,
        meters: &[BackendMeters],
        c: Candidate,
        deadline: Option<Instant>,
    ) -> Result<Served, Failure> {
        let cfg = &route.config;
        let backend = &cfg.backends[c.index];
        let key = route.balance.keys[c.index].as_str();
        let failed = |error| Failure::Upstream {
            error,
            backend: backend.name.clone(),
        };
        let Some(provider) = self.rt.provider(&backend.provider) else {
            return Err(failed(ProviderError::new(
                ErrorKind::Server,
                format!("backend {:?} has no provider", backend.name),
            )));
        };
        let n = self.attempts.fetch_add(1, Ordering::Relaxed) + 1;
        let span = AttemptSpan::start(self.trace, self.op, n, cfg, backend, provider);
        let start = Instant::now();
        self.first_attempt.get_or_init(|| start);
        let m = &meters[c.index];
        let in_flight = InFlight::start(&[&m.deployment, &m.provider]);
        let tokens = self.prompt.rough();
        m.deployment.sent(tokens);
        m.provider.sent(tokens);

        let t = &cfg.timeouts;
        let per_try = t.per_try_ms.map(|ms| start + Duration::from_millis(ms));
        let try_deadline = earliest(per_try, deadline);
        let first_token = start + Duration::from_millis(t.first_token_ms.unwrap_or(provider.timeouts.stream_idle_ms));
        let call = Call {
            op: self.op,
            request: self.request,
            provider,
            backend,
            drop_unsupported_params: cfg.drop_unsupported_params,
            stream: self.stream,
            headers_timeout: Duration::from_millis(t.first_token_ms.unwrap_or(provider.timeouts.request_ms)),
            trace: span.headers(),
        };
        let work = async {
            match self.dispatch.send(call).await? {
                Upstream::Full(full) => Ok(Upstream::Full(full)),
                Upstream::Stream(chunks, translator) => {
                    let (rest, primed) = upstream::prime(chunks, translator, first_token).await?;
                    Ok(Upstream::Stream(rest, Box::new(primed.hold(in_flight))))
                }
            }
        };
        let result = match try_deadline {
            None => work.await,
            Some(d) => match tokio::time::timeout_at(d, work).await {
                Ok(r) => r,
                Err(_) => Err(ProviderError::new(
                    ErrorKind::Timeout,
                    if per_try == try_deadline {
                        "the upstream did not answer within the route's per-try timeout"
                    } else {
                        "the route's request deadline passed"
                    },
                )),
            },
        };
        let elapsed = start.elapsed();
        match result {
            Ok(upstream) => {
                let state = self.cooldowns.success(key).await;
                self.backend_state(backend, state);
                m.deployment.observe(self.stream, elapsed);
                if let Upstream::Full(full) = &upstream {
                    if let Some(u) = full.usage {
                        m.deployment.tokens(u.completion_tokens);
                        m.provider.tokens(u.completion_tokens);
                    }
                }
                Ok(Served {
                    upstream: span.succeeded(upstream),
                    route: route.clone(),
                    index: c.index,
                    provider: provider.clone(),
                    depth: 0,
                })
            }
            Err(error) => {
                // The request's own deadline says nothing about the backend.
                let overall = error.kind == ErrorKind::Timeout && deadline.is_some_and(|d| Instant::now() >= d);
                if !overall {
                    if let Some(s) = strike(&error, provider, &cfg.retries) {
                        let state = self.cooldowns.failure(key, s).await;
                        self.backend_state(backend, state);
                    }
                }
                if matches!(error.kind, ErrorKind::Timeout | ErrorKind::Server | ErrorKind::Connect) {
                    // Failing slowly is slow: the latency strategy steers away.
                    m.deployment.observe(self.stream, elapsed);
                }
                tracing::debug!(route = %label(cfg), backend = %backend.name, kind = ?error.kind, error = %error.message, "attempt failed");
                span.failed(&error);
                Err(failed(error))
            }
        }
    }

    /// Keeps the one-hot state gauge of a backend current; counts changes (the first healthy
    /// report of a backend is not a change).
    fn backend_state(&self, backend: &switchyard_config::BackendConfig, state: BackendState) {
        let g = &self.metrics.backend_state;
        let (p, m) = (backend.provider.as_str(), backend.model.as_str());
        if g.with_label_values(&[p, m, state.as_str()]).get() == 1 {
            return;
        }
        let was_unhealthy = BackendState::ALL
            .iter()
            .any(|s| *s != BackendState::Healthy && g.with_label_values(&[p, m, s.as_str()]).get() == 1);
        for s in BackendState::ALL {
            g.with_label_values(&[p, m, s.as_str()]).set(i64::from(s == state));
        }
        if state != BackendState::Healthy || was_unhealthy {
            self.metrics
                .backend_state_changes
                .with_label_values(&[p, m, state.as_str()])
                .inc();
        }
    }
}
