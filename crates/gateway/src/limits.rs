//! Limits: a key's requests and tokens per minute, requests in flight and budget reservation,
//! checked in one atomic step right after authentication, and the reservations on the Budgets
//! over groups of keys that cover the key (one atomic step each, taken first). (A Provider's quota is the routing's,
//! taken in the same shared state when a backend is chosen: `route::quota`; a backend's own
//! limits are per process, `route::meters`.)
//!
//! A request that passes holds an [`Admission`]: its concurrency slot, its token estimate and
//! its budget reservation. The admission is settled with the real usage and cost when the
//! request ends (streams included, and when the client goes away); dropping it unsettled
//! releases everything at zero cost. Spend is written by the shared state, never dropped.
//!
//! This module decides and shapes refusals; it never reads HTTP bodies or picks backends.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use switchyard_config::{BudgetAction, BudgetPeriod};
use switchyard_providers::Json;

use crate::alerts::Alerts;
use crate::budget::{Clock, Period, TeamBudget};
use crate::error::GatewayError;
#[cfg(test)]
use crate::estimate::completion_cap;
use crate::estimate::{Prompt, WORST_COMPLETION};
use crate::metrics::Metrics;
use crate::runtime::{Key, Route};
use crate::state::{
    Acquire, Backend, Hold, Leases, Reason, Release, Renew, Settle, Slot, Snapshot, StateError, Verdict,
};

/// How long a concurrency slot or reservation outlives a gateway that died holding it. A live
/// request's are renewed every third of this, so they never lapse while it runs.
pub const LEASE_TTL_MS: i64 = 15 * 60 * 1000;

/// What limits need from the gateway process: the shared state, the clock, spend alerts, the
/// `limited` metric, and the count of settlements still running.
pub(crate) struct Limits {
    state: Arc<Slot>,
    clock: Clock,
    alerts: Arc<Alerts>,
    metrics: Metrics,
    settling: Settling,
    /// Slots and reservations of live requests, renewed while they live (lease
    /// [`LEASE_TTL_MS`]; shorter in tests).
    leases: Arc<Leases>,
}

impl Limits {
    /// Limits over `state`, timed by `clock`.
    pub(crate) fn new(state: Arc<Slot>, clock: Clock, alerts: Arc<Alerts>, metrics: Metrics) -> Self {
        Self {
            state: state.clone(),
            clock,
            alerts,
            metrics,
            settling: Settling::default(),
            leases: Arc::new(Leases::new(state, LEASE_TTL_MS, move || clock.now_ms())),
        }
    }

    /// The same with a shorter lease (tests).
    #[cfg(test)]
    pub(crate) fn with_lease_ttl(mut self, ms: i64) -> Self {
        let clock = self.clock;
        self.leases = Arc::new(Leases::new(self.state.clone(), ms, move || clock.now_ms()));
        self
    }

    /// Waits until no settlement runs, at most `limit`.
    pub(crate) async fn settled(&self, limit: Duration) {
        self.settling.wait(limit).await;
    }
}

/// The `x-ratelimit-*` headers of a key, as OpenAI sends them.
#[derive(Clone, Debug, Default)]
pub(crate) struct RateHeaders {
    rpm: Option<u32>,
    tpm: Option<u64>,
    snapshot: Snapshot,
}

static LIMIT_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-limit-requests");
static REMAINING_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-requests");
static RESET_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-reset-requests");
static LIMIT_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-limit-tokens");
static REMAINING_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");
static RESET_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-reset-tokens");

impl RateHeaders {
    /// Adds the headers of the limits the key has. On every response of a limited key, so it
    /// formats integers only (no float formatting, no name parsing; bench/results/profiling.md).
    pub(crate) fn apply(&self, h: &mut HeaderMap) {
        if let Some(rpm) = self.rpm {
            h.insert(&LIMIT_REQUESTS, HeaderValue::from(rpm));
            h.insert(&REMAINING_REQUESTS, HeaderValue::from(self.snapshot.requests_remaining));
            h.insert(&RESET_REQUESTS, reset_value(self.snapshot.requests_reset_ms));
        }
        if let Some(tpm) = self.tpm {
            h.insert(&LIMIT_TOKENS, HeaderValue::from(tpm));
            h.insert(&REMAINING_TOKENS, HeaderValue::from(self.snapshot.tokens_remaining));
            h.insert(&RESET_TOKENS, reset_value(self.snapshot.tokens_reset_ms));
        }
    }
}

fn reset_value(ms: i64) -> HeaderValue {
    // Written on the stack: the value is copied once, into the header (a `String` first took
    // two more allocations on every response).
    let mut out = Stack::default();
    write_reset(&mut out, ms);
    // Digits, `m`, `s` and `.`: always a valid value.
    HeaderValue::from_bytes(out.bytes()).unwrap_or(HeaderValue::from_static("0ms"))
}

/// A few bytes formatted on the stack; what does not fit is cut (a reset fits: at most 23 bytes).
#[derive(Default)]
struct Stack {
    buf: [u8; 32],
    len: usize,
}

impl Stack {
    fn bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

impl std::fmt::Write for Stack {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let slot = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// A duration as OpenAI writes resets: `20ms`, `1s`, `6.5s`, `6m0s`.
pub(crate) fn fmt_reset(ms: i64) -> String {
    let mut out = String::with_capacity(12);
    write_reset(&mut out, ms);
    out
}

fn write_reset(out: &mut impl std::fmt::Write, ms: i64) {
    let ms = ms.max(0);
    if ms < 1000 {
        let _ = write!(out, "{ms}ms");
        return;
    }
    let (m, rest) = (ms / 60_000, ms % 60_000);
    if m > 0 {
        let _ = write!(out, "{m}m");
    }
    let (secs, mut frac) = (rest / 1000, rest % 1000);
    if frac == 0 {
        let _ = write!(out, "{secs}s");
    } else {
        // The milliseconds as a decimal fraction without trailing zeros: 6.5s, 1.25s, 2.005s.
        let mut width = 3;
        while frac % 10 == 0 {
            frac /= 10;
            width -= 1;
        }
        let _ = write!(out, "{secs}.{frac:0width$}s");
    }
}

/// A refused request: the error and the headers that go with it.
pub(crate) struct Refused {
    pub error: GatewayError,
    pub headers: RateHeaders,
}

/// Counts settlements still running, so shutdown can wait for them.
#[derive(Default)]
pub(crate) struct Settling {
    running: AtomicUsize,
    idle: tokio::sync::Notify,
}

struct SettlingGuard(Arc<Limits>);

impl Drop for SettlingGuard {
    fn drop(&mut self) {
        if self.0.settling.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.settling.idle.notify_waiters();
        }
    }
}

impl Settling {
    /// Waits until no settlement runs, at most `limit`.
    async fn wait(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, async {
            loop {
                let idle = self.idle.notified();
                if self.running.load(Ordering::Acquire) == 0 {
                    return;
                }
                idle.await;
            }
        })
        .await;
    }
}

/// What an admitted request holds until it ends.
pub(crate) struct Admission {
    limits: Arc<Limits>,
    key: Arc<Key>,
    lease: Option<String>,
    /// Bucket (seconds) and size of the token estimate.
    tokens: Option<(i64, u64)>,
    period: Period,
    member: Option<String>,
    local: bool,
    /// What it holds on each Budget over a group of keys that covers the key.
    teams: Vec<TeamHold>,
    headers: RateHeaders,
    settled: bool,
    /// Its entries among the holds the renewer keeps alive.
    open: Vec<u64>,
}

/// A request's part in one Budget over a group of keys: its reservation (when the Budget
/// blocks) and the period its spend goes to.
struct TeamHold {
    budget: Arc<TeamBudget>,
    period: Period,
    member: Option<String>,
    local: bool,
}

/// A release of one Budget over a group of keys, with what its alerts need.
type TeamRelease = (Arc<TeamBudget>, Period, Release);

impl Admission {
    /// The headers for the response.
    pub(crate) fn headers(&self) -> &RateHeaders {
        &self.headers
    }

    /// Releases what the request held and adds its real cost to the key's spend and to the
    /// spend of every Budget that covers the key (alerts follow).
    pub(crate) fn settle(mut self, cost: f64, tokens: Option<u64>) {
        self.settle_inner(cost, tokens);
    }

    fn settle_inner(&mut self, cost: f64, tokens: Option<u64>) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        for id in self.open.drain(..) {
            self.limits.leases.close(id);
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let now_ms = self.limits.clock.now_ms();
        let cost = cost.max(0.0);
        let rel = Release {
            scope: self.key.scope.clone(),
            now_ms,
            lease: self.lease.take(),
            tokens: self.tokens.map(|(bucket, estimate)| {
                let real = tokens.unwrap_or(estimate);
                (
                    bucket,
                    i64::try_from(real).unwrap_or(i64::MAX) - i64::try_from(estimate).unwrap_or(i64::MAX),
                )
            }),
            settle: Some(Settle {
                period: self.period.id.clone(),
                member: self.member.take(),
                cost,
                keep_ms: self.period.keep_ms(now_ms),
            }),
            local: self.local,
        };
        let teams = self.team_releases(now_ms, cost);
        dispatch(&self.limits, &self.key, Some((rel, self.period.clone())), teams);
    }

    /// Releases of the Budgets over groups of keys: the reservation, and `cost` added to each.
    fn team_releases(&mut self, now_ms: i64, cost: f64) -> Vec<TeamRelease> {
        self.teams
            .drain(..)
            // Nothing held and nothing spent: nothing to write.
            .filter(|t| t.member.is_some() || cost > 0.0)
            .map(|t| {
                let rel = Release {
                    scope: t.budget.scope.clone(),
                    now_ms,
                    settle: Some(Settle {
                        period: t.period.id.clone(),
                        member: t.member,
                        cost,
                        keep_ms: t.period.keep_ms(now_ms),
                    }),
                    local: t.local,
                    ..Release::default()
                };
                (t.budget, t.period, rel)
            })
            .collect()
    }

    /// A refusal: gives back the reservations taken on Budgets over groups of keys (nothing
    /// was taken from the key itself) and spends nothing.
    fn give_back(&mut self) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        for id in self.open.drain(..) {
            self.limits.leases.close(id);
        }
        self.teams.retain(|t| t.member.is_some());
        if self.teams.is_empty() || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let teams = self.team_releases(self.limits.clock.now_ms(), 0.0);
        dispatch(&self.limits, &self.key, None, teams);
    }
}

/// Runs the releases of a request (its key's, its Budgets') and checks alerts on the spend
/// they return. In memory a release completes on its first poll: no task on the hot path.
fn dispatch(limits: &Arc<Limits>, key: &Arc<Key>, own: Option<(Release, Period)>, teams: Vec<TeamRelease>) {
    let state = limits.state.get();
    if state.backend() == Backend::Memory {
        if let Some((rel, period)) = &own {
            if let Some(Ok(Some(spend))) = state.release(rel).now_or_never() {
                limits.alerts.check(state, key, period, spend);
            }
        }
        for (team, period, rel) in &teams {
            if let Some(Ok(Some(spend))) = state.release(rel).now_or_never() {
                limits.alerts.check_team(state, team, key, period, spend);
            }
        }
        return;
    }
    limits.settling.running.fetch_add(1, Ordering::AcqRel);
    let guard = SettlingGuard(limits.clone());
    let key = key.clone();
    tokio::spawn(async move {
        let limits = guard.0.clone();
        let state = limits.state.get();
        if let Some((rel, period)) = &own {
            match state.release(rel).await {
                Ok(Some(spend)) => limits.alerts.check(state, &key, period, spend),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, key = %key.id, "settling a request failed"),
            }
        }
        for (team, period, rel) in &teams {
            match state.release(rel).await {
                Ok(Some(spend)) => limits.alerts.check_team(state, team, &key, period, spend),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, key = %key.id, budget = %team.id, "settling a request failed"),
            }
        }
        drop(guard);
    });
}

impl Drop for Admission {
    fn drop(&mut self) {
        // The request ended before usage was known (an error, or a refusal downstream).
        self.settle_inner(0.0, None);
    }
}

/// Checks the key's limits and reserves its budget and the budgets of every Budget over a
/// group of keys that covers it: admitted only if all have room. Keys without limits or a
/// blocking budget skip the shared state; they are still settled, so their spend is counted.
///
/// The Budgets are reserved first, one atomic step each (their scopes live apart, in Redis
/// Cluster too), then the key's own limits; a refusal anywhere gives back what was reserved,
/// so a refused request holds nothing and spends nothing.
pub(crate) async fn admit(
    limits: &Arc<Limits>,
    key: &Arc<Key>,
    route: &Route,
    request: &Json,
) -> Result<Admission, Refused> {
    admit_measured(limits, key, route, || Prompt::measure(request)).await
}

/// [`admit`] for a request whose prompt the caller measures (`measured`, called only when a
/// limit applies), so that it is measured once for limits and routing.
pub(crate) async fn admit_measured(
    limits: &Arc<Limits>,
    key: &Arc<Key>,
    route: &Route,
    measured: impl FnOnce() -> Prompt,
) -> Result<Admission, Refused> {
    let label = || route.id.to_string();
    let measure = |reserve: bool| {
        let measured = measured();
        let prompt = measured.rough();
        let cap = measured.max_completion;
        // Saturating: `max_tokens` is the client's number; a wrapped sum would shrink the estimate.
        let tokens = prompt.saturating_add(cap.unwrap_or(0));
        (tokens, if reserve { worst_cost(route, prompt, cap) } else { 0.0 })
    };
    admit_with(limits, key, label, measure).await
}

/// [`admit`] for a pass-through request, counted under `label`: it has no model and so no
/// price to reserve, nor tokens to estimate. It reserves nothing, and a blocking budget
/// (the key's or a Budget's over it) refuses it only once spent (or all of it is reserved by
/// requests in flight); what it cost is charged when its response says.
pub(crate) async fn admit_passthrough(limits: &Arc<Limits>, key: &Arc<Key>, label: &str) -> Result<Admission, Refused> {
    admit_with(limits, key, || label.to_owned(), |_| (0, 0.0)).await
}

/// [`admit`], with the request's metric label (`label`, made only when a limit applies) and
/// its size (`measure(reserve)`: the token estimate, and the cost to reserve when `reserve`).
async fn admit_with(
    limits: &Arc<Limits>,
    key: &Arc<Key>,
    label: impl FnOnce() -> String,
    measure: impl FnOnce(bool) -> (u64, f64),
) -> Result<Admission, Refused> {
    let cfg = &key.config;
    let now_ms = limits.clock.now_ms();
    let budget = cfg.budget.as_ref();
    let period = Period::of(budget.map_or(BudgetPeriod::Monthly, |b| b.period), now_ms);
    let enforce = budget.is_some_and(|b| b.action == BudgetAction::Block);
    let headers = RateHeaders {
        rpm: cfg.limits.rpm,
        tpm: cfg.limits.tpm,
        snapshot: Snapshot::default(),
    };
    let teams: Vec<TeamHold> = key
        .budgets
        .iter()
        .map(|b| TeamHold {
            budget: b.clone(),
            period: Period::of(b.config.budget.period, now_ms),
            member: None,
            local: false,
        })
        .collect();
    let teams_enforce = teams.iter().any(|t| t.budget.enforces());
    let mut admission = Admission {
        limits: limits.clone(),
        key: key.clone(),
        lease: None,
        tokens: None,
        period,
        member: None,
        local: false,
        teams,
        headers,
        settled: false,
        open: Vec::new(),
    };
    let own_limits = !cfg.limits.is_unlimited() || enforce;
    if !own_limits && !teams_enforce {
        return Ok(admission);
    }
    let (tokens, reserve) = measure(enforce || teams_enforce);
    let lease = crate::pipeline::random_hex(rand::random::<[u8; 8]>());
    let route_label = label();
    for i in 0..admission.teams.len() {
        let t = &admission.teams[i];
        if !t.budget.enforces() {
            continue;
        }
        let hold = Hold {
            period: t.period.id.clone(),
            max_spend: t.budget.config.budget.max_spend,
            reserve,
            enforce: true,
            resets_in_ms: t.period.resets_in_ms(now_ms),
        };
        let req = Acquire {
            scope: t.budget.scope.clone(),
            now_ms,
            lease: lease.clone(),
            lease_ttl_ms: limits.leases.ttl_ms(),
            budget: Some(hold.clone()),
            ..Acquire::default()
        };
        let verdict = limits.state.get().acquire(&req).await;
        let error = match verdict {
            Ok(Verdict::Granted { local, .. }) => {
                let t = &mut admission.teams[i];
                t.member = Some(hold.member(&lease));
                t.local = local;
                continue;
            }
            Ok(Verdict::Refused {
                reason,
                retry_after_ms,
                snapshot,
            }) => {
                let label = if reason == Reason::BudgetHeld {
                    "team_budget_held"
                } else {
                    "team_budget"
                };
                limits
                    .metrics
                    .limited
                    .with_label_values(&[route_label.as_str(), label])
                    .inc();
                team_refusal(t, key, reason, retry_after_ms, &snapshot)
            }
            Err(e) => {
                limits
                    .metrics
                    .limited
                    .with_label_values(&[route_label.as_str(), "unavailable"])
                    .inc();
                unavailable(&e)
            }
        };
        admission.give_back();
        return Err(Refused {
            error,
            headers: admission.headers.clone(),
        });
    }
    if !own_limits {
        admission.renew_teams(now_ms);
        return Ok(admission);
    }
    let hold = budget.filter(|_| enforce).map(|b| Hold {
        period: admission.period.id.clone(),
        max_spend: b.max_spend,
        reserve,
        enforce: true,
        resets_in_ms: admission.period.resets_in_ms(now_ms),
    });
    let req = Acquire {
        scope: key.scope.clone(),
        now_ms,
        rpm: cfg.limits.rpm,
        tpm: cfg.limits.tpm,
        tokens,
        max_parallel: cfg.limits.max_parallel,
        lease: lease.clone(),
        lease_ttl_ms: limits.leases.ttl_ms(),
        budget: hold.clone(),
    };
    let verdict = limits.state.get().acquire(&req).await;
    match verdict {
        Ok(Verdict::Granted { snapshot, local }) => {
            admission.headers.snapshot = snapshot;
            admission.local = local;
            admission.lease = cfg.limits.max_parallel.map(|_| lease.clone());
            // The bucket the state placed the estimate in (Redis' clock with Redis).
            admission.tokens = cfg.limits.tpm.map(|_| (snapshot.at_ms.div_euclid(1000), tokens));
            admission.member = hold.map(|h| h.member(&lease));
            if admission.lease.is_some() || admission.member.is_some() {
                let id = limits.leases.hold(Renew {
                    scope: key.scope.clone(),
                    now_ms,
                    lease: admission.lease.clone(),
                    hold: admission.member.clone().map(|m| (admission.period.id.clone(), m)),
                    lease_ttl_ms: limits.leases.ttl_ms(),
                    local,
                });
                admission.open.push(id);
            }
            admission.renew_teams(now_ms);
            Ok(admission)
        }
        Ok(Verdict::Refused {
            reason,
            retry_after_ms,
            snapshot,
        }) => {
            admission.give_back();
            limits
                .metrics
                .limited
                .with_label_values(&[route_label.as_str(), reason.as_str()])
                .inc();
            let mut headers = admission.headers.clone();
            headers.snapshot = snapshot;
            let error = refusal(key, reason, retry_after_ms, &snapshot, tokens, &admission.period);
            Err(Refused { error, headers })
        }
        Err(e) => {
            admission.give_back();
            limits
                .metrics
                .limited
                .with_label_values(&[route_label.as_str(), "unavailable"])
                .inc();
            Err(Refused {
                error: unavailable(&e),
                headers: admission.headers.clone(),
            })
        }
    }
}

impl Admission {
    /// Hands the reservations on Budgets over groups of keys to the renewer.
    fn renew_teams(&mut self, now_ms: i64) {
        for t in &self.teams {
            if let Some(m) = &t.member {
                let id = self.limits.leases.hold(Renew {
                    scope: t.budget.scope.clone(),
                    now_ms,
                    lease: None,
                    hold: Some((t.period.id.clone(), m.clone())),
                    lease_ttl_ms: self.limits.leases.ttl_ms(),
                    local: t.local,
                });
                self.open.push(id);
            }
        }
    }
}

/// The refusal of a Budget over a group of keys: the shape, status and codes of a key budget's
/// refusal, naming the Budget.
fn team_refusal(t: &TeamHold, key: &Key, reason: Reason, retry_after_ms: Option<i64>, s: &Snapshot) -> GatewayError {
    let retry_after = retry_after_ms.map(|ms| Duration::from_millis(u64::try_from(ms.max(1)).unwrap_or(1)));
    let (budget, key_id) = (&t.budget.id, &key.id);
    let max = t.budget.config.budget.max_spend;
    let (code, message) = if reason == Reason::BudgetHeld {
        (
            "budget_reserved",
            format!(
                "The rest of Budget `{budget}` (spent ${:.6} of ${max:.6}), which key `{key_id}` falls under, is reserved by requests in flight. Please try again in {}.",
                s.spend,
                retry_after_ms.map(fmt_reset).unwrap_or_default()
            ),
        )
    } else {
        let reset = t
            .period
            .end_ms
            .map(|e| format!(" It resets at {}.", crate::budget::rfc3339(e)))
            .unwrap_or_default();
        (
            "budget_exceeded",
            format!(
                "Budget exceeded for Budget `{budget}`, which key `{key_id}` falls under: spent ${:.6} of ${max:.6} this period.{reset}",
                s.spend
            ),
        )
    };
    GatewayError {
        status: StatusCode::TOO_MANY_REQUESTS,
        message,
        kind: "insufficient_quota",
        code: Some(code.to_owned()),
        param: None,
        retry_after,
    }
}

fn unavailable(e: &StateError) -> GatewayError {
    tracing::debug!(error = %e, "limits unavailable");
    GatewayError {
        retry_after: Some(Duration::from_secs(1)),
        ..GatewayError::unavailable(
            "Limits and budgets cannot be checked right now (shared state unreachable); the gateway fails closed.",
        )
    }
}

fn refusal(
    key: &Key,
    reason: Reason,
    retry_after_ms: Option<i64>,
    s: &Snapshot,
    tokens: u64,
    period: &Period,
) -> GatewayError {
    let retry_after = retry_after_ms.map(|ms| Duration::from_millis(u64::try_from(ms.max(1)).unwrap_or(1)));
    let wait = retry_after_ms.map(fmt_reset).unwrap_or_default();
    let limits = &key.config.limits;
    let id = &key.id;
    let (kind, code, message) = match reason {
        Reason::Requests => {
            let limit = limits.rpm.unwrap_or(0);
            (
                "requests",
                "rate_limit_exceeded",
                format!(
                    "Rate limit reached for key `{id}` on requests per min (RPM): Limit {limit}, Used {}, Requested 1. Please try again in {wait}.",
                    u64::from(limit).saturating_sub(s.requests_remaining)
                ),
            )
        }
        Reason::Tokens => {
            let limit = limits.tpm.unwrap_or(0);
            (
                "tokens",
                "rate_limit_exceeded",
                format!(
                    "Rate limit reached for key `{id}` on tokens per min (TPM): Limit {limit}, Used {}, Requested {tokens}. Please try again in {wait}.",
                    limit.saturating_sub(s.tokens_remaining)
                ),
            )
        }
        Reason::Parallel => (
            "requests",
            "rate_limit_exceeded",
            format!(
                "Too many requests in flight for key `{id}`: Limit {}. Please try again in {wait}.",
                limits.max_parallel.unwrap_or(0)
            ),
        ),
        Reason::Budget => {
            let max = key.config.budget.as_ref().map_or(0.0, |b| b.max_spend);
            let reset = period
                .end_ms
                .map(|e| format!(" It resets at {}.", crate::budget::rfc3339(e)))
                .unwrap_or_default();
            (
                "insufficient_quota",
                "budget_exceeded",
                format!(
                    "Budget exceeded for key `{id}`: spent ${:.6} of ${max:.6} this period.{reset}",
                    s.spend
                ),
            )
        }
        Reason::BudgetHeld => {
            let max = key.config.budget.as_ref().map_or(0.0, |b| b.max_spend);
            (
                "insufficient_quota",
                "budget_reserved",
                format!(
                    "The rest of the budget of key `{id}` (spent ${:.6} of ${max:.6}) is reserved by requests in flight. Please try again in {wait}.",
                    s.spend
                ),
            )
        }
    };
    let kind = match kind {
        "insufficient_quota" => "insufficient_quota",
        _ => "rate_limit_error",
    };
    GatewayError {
        status: StatusCode::TOO_MANY_REQUESTS,
        message,
        kind,
        code: Some(code.to_owned()),
        param: None,
        retry_after,
    }
}

/// Prompt tokens of a request, as limits count them ([`Prompt::rough`]).
#[cfg(test)]
fn estimate_prompt_tokens(request: &Json) -> u64 {
    Prompt::measure(request).rough()
}

/// The most this request can cost on any backend it can reach from the route (its own, its
/// rules' targets', its fallbacks'): what a budget reserves.
pub(crate) fn worst_cost(route: &Route, prompt: u64, cap: Option<u64>) -> f64 {
    route
        .reachable
        .iter()
        .map(|(price, max_output)| {
            let completion = cap.or(max_output.map(u64::from)).unwrap_or(WORST_COMPLETION);
            price.cost(prompt, completion, 0)
        })
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod team_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Runtime;
    use switchyard_config::RouteConfig;

    #[test]
    fn resets_are_written_like_openai() {
        assert_eq!(fmt_reset(17), "17ms");
        assert_eq!(fmt_reset(1000), "1s");
        assert_eq!(fmt_reset(6500), "6.5s");
        assert_eq!(fmt_reset(360_000), "6m0s");
        assert_eq!(fmt_reset(61_250), "1m1.25s");
        assert_eq!(fmt_reset(-5), "0ms");
        assert_eq!(fmt_reset(2005), "2.005s");
        // The header is written on the stack: the same text, the largest included.
        for ms in [0, 17, 1000, 6500, 61_250, 2005, i64::MAX] {
            assert_eq!(reset_value(ms).to_str().unwrap(), fmt_reset(ms), "{ms}");
        }
        assert_eq!(fmt_reset(i64::MAX), "153722867280912m55.807s");
        assert_eq!(fmt_reset(59_990), "59.99s");
        assert_eq!(fmt_reset(120_050), "2m0.05s");
    }

    #[test]
    fn estimates_cover_the_text_and_the_cap() {
        let req: Json = serde_json::from_str(
            r#"{"model":"m","max_tokens":16,"messages":[{"role":"user","content":"hello there, how are you today?"}]}"#,
        )
        .unwrap_or_default();
        let prompt = estimate_prompt_tokens(&req);
        // 4 bytes of role + 31 of content = 35 bytes -> 12, + 4 for the message + 3.
        assert_eq!(prompt, 19);
        assert_eq!(completion_cap(&req), Some(16));
        let mut route = priced_route("r", &[(1.0, 2.0, None), (10.0, 20.0, Some(100))]);
        let rt = |r: &RouteConfig| Runtime::new(config(vec![r.clone()]), 1);
        let reserve = |r: &RouteConfig, cap| {
            let rt = rt(r);
            let route = rt.route("default", "r").cloned().unwrap_or_else(|| panic!("no route"));
            worst_cost(&route, 19, cap)
        };
        // The dearer backend bounds the reservation.
        assert!((reserve(&route, Some(16)) - (19.0 * 10.0 + 16.0 * 20.0) / 1e6).abs() < 1e-12);
        // Without max_tokens the backend's output limit, else 4096, is assumed.
        assert!(
            (reserve(&route, None) - (19.0_f64 * 1.0 + 4096.0 * 2.0).max(19.0 * 10.0 + 100.0 * 20.0) / 1e6).abs()
                < 1e-12
        );
        route.backends.iter_mut().for_each(|b| b.price = None);
        assert_eq!(reserve(&route, Some(16)), 0.0);
    }

    pub(super) fn priced_route(model: &str, backends: &[(f64, f64, Option<u32>)]) -> RouteConfig {
        let backends: Vec<_> = backends
            .iter()
            .enumerate()
            .map(|(i, (input, output, max))| {
                serde_json::json!({
                    "name": format!("b{i}"), "provider": "default/p", "model": format!("{model}-{i}"),
                    "weight": 1, "priority": 0, "maxOutputTokens": max,
                    "price": {"input": input, "output": output, "cachedInput": 0.0}
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "namespace": "default", "name": model, "model": model, "mode": "chat", "strategy": "weighted",
            "retries": {"attempts": 0, "backoffMs": 1, "maxBackoffMs": 1, "on": []},
            "backends": backends,
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    pub(super) fn config(routes: Vec<RouteConfig>) -> switchyard_config::GatewayConfig {
        switchyard_config::GatewayConfig {
            version: switchyard_config::SCHEMA_VERSION,
            routes,
            ..Default::default()
        }
    }

    fn test_limits(lease_ms: i64) -> Arc<Limits> {
        let clock = Clock::default();
        let metrics = Metrics::new().unwrap_or_else(|e| panic!("{e}"));
        let alerts = Arc::new(Alerts::new(
            reqwest::Client::new(),
            clock,
            Arc::new(crate::budget::BudgetGauges::default()),
            metrics.clone(),
        ));
        Arc::new(Limits::new(Arc::new(Slot::default()), clock, alerts, metrics).with_lease_ttl(lease_ms))
    }

    fn limited_key(name: &str, limits: switchyard_config::LimitsConfig, budget: Option<f64>) -> Arc<Key> {
        Arc::new(Key::new(switchyard_config::KeyConfig {
            namespace: "default".into(),
            name: name.into(),
            hashes: vec![],
            allowed_routes: vec![],
            allowed_passthrough: Vec::new(),
            limits,
            budget: budget.map(|max_spend| switchyard_config::BudgetConfig {
                max_spend,
                period: BudgetPeriod::Monthly,
                action: BudgetAction::Block,
                alert_thresholds: vec![],
                webhook: None,
            }),
            expires_at: None,
            blocked: false,
            labels: Default::default(),
        }))
    }

    /// A request that lives longer than a lease keeps its slot and its reservation: the one
    /// renewer pushes them back while it lives, and they free when it ends.
    #[tokio::test]
    async fn long_requests_keep_their_slot_and_reservation() {
        let limits = test_limits(300);
        let rt = Runtime::new(config(vec![priced_route("r", &[(1000.0, 1000.0, None)])]), 1);
        let route = rt.route("default", "r").cloned().unwrap_or_else(|| panic!("no route"));
        let req: Json =
            serde_json::from_str(r#"{"model":"r","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}"#)
                .unwrap_or_default();
        let par = limited_key(
            "par",
            switchyard_config::LimitsConfig {
                max_parallel: Some(1),
                ..Default::default()
            },
            None,
        );
        // Room for one reservation, not two.
        let one = worst_cost(&route, Prompt::measure(&req).rough(), Some(100));
        let budget = limited_key("budget", Default::default(), Some(one * 1.5));
        let code = |r: Result<Admission, Refused>| match r {
            Ok(_) => "granted".to_owned(),
            Err(r) => format!("{}: {}", r.error.code.unwrap_or_default(), r.error.message),
        };
        let first_par = admit(&limits, &par, &route, &req).await.map_err(|r| r.error.message);
        let first_budget = admit(&limits, &budget, &route, &req).await.map_err(|r| r.error.message);
        assert!(first_par.is_ok() && first_budget.is_ok());
        // Four leases later, both still hold.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let second = code(admit(&limits, &par, &route, &req).await);
        assert!(second.contains("in flight"), "{second}");
        let second = code(admit(&limits, &budget, &route, &req).await);
        assert!(second.starts_with("budget_reserved"), "{second}");
        drop((first_par, first_budget));
        assert_eq!(code(admit(&limits, &par, &route, &req).await), "granted");
        assert_eq!(code(admit(&limits, &budget, &route, &req).await), "granted");
    }

    /// A rule or a fallback can send a request to a dearer route: the reservation covers the
    /// dearest backend reachable (rule targets, fallbacks up to `MAX_FALLBACK_DEPTH` levels),
    /// so a budget is overshot by at most one request.
    #[test]
    fn reservations_cover_rule_targets_and_fallbacks() {
        use switchyard_config::{FallbackConfig, FallbackTrigger, RuleConfig};
        let fallback = |to: &str| FallbackConfig {
            route: to.into(),
            on: vec![FallbackTrigger::ServerError],
        };
        let mut r = priced_route("r", &[(1.0, 1.0, None)]);
        r.rules = vec![RuleConfig {
            name: "to-premium".into(),
            key_labels: Default::default(),
            headers: [("x-tier".to_owned(), "premium".to_owned())].into(),
            metadata: Default::default(),
            backend_selector: None,
            weights: None,
            priorities: None,
            route: Some("premium".into()),
        }];
        r.fallbacks = vec![fallback("f1")];
        let premium = priced_route("premium", &[(5.0, 5.0, None)]);
        let mut f1 = priced_route("f1", &[(2.0, 2.0, None)]);
        f1.fallbacks = vec![fallback("f2")];
        let mut f2 = priced_route("f2", &[(3.0, 3.0, None)]);
        f2.fallbacks = vec![fallback("f3")];
        let mut f3 = priced_route("f3", &[(7.0, 7.0, None)]);
        f3.fallbacks = vec![fallback("f4")];
        // Four fallback levels away: never tried, never reserved for.
        let f4 = priced_route("f4", &[(100.0, 100.0, None)]);
        let unrelated = priced_route("other", &[(50.0, 50.0, None)]);
        let rt = Runtime::new(config(vec![r, premium, f1, f2, f3, f4, unrelated]), 1);
        let cost = |model: &str| {
            let route = rt
                .route("default", model)
                .cloned()
                .unwrap_or_else(|| panic!("no {model}"));
            worst_cost(&route, 10, Some(10))
        };
        let per_usd = |p: f64| (10.0 * p + 10.0 * p) / 1e6;
        assert!((cost("r") - per_usd(7.0)).abs() < 1e-12, "{}", cost("r"));
        assert!((cost("f1") - per_usd(100.0)).abs() < 1e-12);
        assert!((cost("premium") - per_usd(5.0)).abs() < 1e-12);
        // A fallback of the rule's target is reachable too.
        let mut premium = priced_route("premium", &[(5.0, 5.0, None)]);
        premium.fallbacks = vec![fallback("other")];
        let rt = Runtime::new(config(vec![priced_route("r", &[]), premium]), 1);
        let mut only_r = rt.config.routes.clone();
        only_r[0].rules = vec![RuleConfig {
            name: "to-premium".into(),
            key_labels: Default::default(),
            headers: Default::default(),
            metadata: Default::default(),
            backend_selector: None,
            weights: None,
            priorities: None,
            route: Some("premium".into()),
        }];
        only_r.push(priced_route("other", &[(50.0, 50.0, None)]));
        let rt = Runtime::new(config(only_r), 1);
        let route = rt.route("default", "r").cloned().unwrap_or_else(|| panic!("no r"));
        assert!((worst_cost(&route, 10, Some(10)) - per_usd(50.0)).abs() < 1e-12);
    }

    #[test]
    fn headers_follow_openai_names() {
        let h = RateHeaders {
            rpm: Some(10),
            tpm: None,
            snapshot: Snapshot {
                requests_remaining: 3,
                requests_reset_ms: 42_000,
                ..Snapshot::default()
            },
        };
        let mut map = HeaderMap::new();
        h.apply(&mut map);
        assert_eq!(map["x-ratelimit-limit-requests"], "10");
        assert_eq!(map["x-ratelimit-remaining-requests"], "3");
        assert_eq!(map["x-ratelimit-reset-requests"], "42s");
        assert!(map.get("x-ratelimit-limit-tokens").is_none());
    }
}
