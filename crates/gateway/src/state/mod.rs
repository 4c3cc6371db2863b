//! State that must agree across gateway replicas: rate windows, concurrency slots, budget
//! reservations and spend counters, once-only marks (alerts), backend cooldowns and circuits
//! ([`CooldownStore`]) and the response cache.
//!
//! One trait, [`SharedState`], with two implementations chosen once at start-up: [`Memory`]
//! (the default, one process) and [`Redis`] (a fleet, Lua scripts for atomicity, hash tags so
//! Redis Cluster works, fail open or closed while Redis is unreachable). Everything a limit
//! needs to check for one scope (a key, a provider, a backend) happens in one atomic step:
//! either all of it is taken or none of it.
//!
//! This module knows nothing of HTTP, routes or prices: callers pass limits and amounts in.

mod circuit;
mod cooldowns;
mod leases;
mod memory;
mod redis;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use switchyard_config::{FailMode, RedisConfig};

pub use circuit::{Availability, BackendState, CooldownStore, MemoryCooldowns, Strike, PROBE_LEASE};
pub use cooldowns::SharedCooldowns;
pub use leases::Leases;
pub use memory::Memory;
pub use redis::Redis;

/// Length of a rate window. Windows slide in one-second buckets.
pub const WINDOW_MS: i64 = 60_000;

/// Shared state is unreachable (fail-closed mode), or a call failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("shared state unavailable: {0}")]
pub struct StateError(pub String);

/// What one scope asks for at the start of a request. `None` limits are not checked.
#[derive(Clone, Debug, Default)]
pub struct Acquire {
    /// The scope: `k:<namespace>/<name>` for a key, `p:<provider>` or `b:<backend>`.
    pub scope: String,
    /// Milliseconds since the epoch (the gateway's clock, offset for tests). Redis places
    /// windows and lease expiries by its own `TIME` instead, so replicas with skewed clocks agree.
    pub now_ms: i64,
    /// Requests per minute.
    pub rpm: Option<u32>,
    /// Tokens per minute.
    pub tpm: Option<u64>,
    /// Tokens this request is estimated to take.
    pub tokens: u64,
    /// Requests in flight.
    pub max_parallel: Option<u32>,
    /// Unique id of this request's concurrency slot and reservation.
    pub lease: String,
    /// How long a slot or reservation outlives a gateway that crashed holding it.
    pub lease_ttl_ms: i64,
    /// The budget to reserve from.
    pub budget: Option<Hold>,
}

/// A budget reservation.
#[derive(Clone, Debug, Default)]
pub struct Hold {
    /// Period id (`d2026-11-25`, `w2026-11-23`, `m2026-11`, `total`).
    pub period: String,
    /// USD per period.
    pub max_spend: f64,
    /// USD reserved for this request (its worst-case cost).
    pub reserve: f64,
    /// Refuse when spent (`false`: count and alert only).
    pub enforce: bool,
    /// Milliseconds until the period ends, for `retry-after`; `None` never resets.
    pub resets_in_ms: Option<i64>,
}

impl Hold {
    /// The reservation's member in the reservation set: the lease and the amount.
    pub fn member(&self, lease: &str) -> String {
        format!("{lease}:{}", fmt_usd(self.reserve))
    }
}

/// USD as a decimal string without an exponent (Redis `INCRBYFLOAT` and Lua read it back).
pub fn fmt_usd(v: f64) -> String {
    let s = format!("{:.12}", v.max(0.0));
    let s = s.trim_end_matches('0');
    s.strip_suffix('.').unwrap_or(s).to_owned()
}

/// Why a scope refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The budget of the period is spent.
    Budget,
    /// Requests per minute.
    Requests,
    /// Tokens per minute.
    Tokens,
    /// Requests in flight.
    Parallel,
    /// The remaining budget is held by requests in flight; one of them must finish first.
    BudgetHeld,
}

impl Reason {
    /// The reason the `ACQUIRE` script returns as a number (0 is granted).
    fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            1 => Reason::Budget,
            2 => Reason::Requests,
            3 => Reason::Tokens,
            4 => Reason::Parallel,
            5 => Reason::BudgetHeld,
            _ => return None,
        })
    }

    /// Label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Budget => "budget",
            Reason::Requests => "rpm",
            Reason::Tokens => "tpm",
            Reason::Parallel => "parallel",
            Reason::BudgetHeld => "budget_held",
        }
    }
}

/// The state of a scope's windows after a decision, for `x-ratelimit-*` headers.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Requests left in the window (when an rpm limit is set).
    pub requests_remaining: u64,
    /// Until the request window is back to full, ms.
    pub requests_reset_ms: i64,
    /// Tokens left in the window (when a tpm limit is set).
    pub tokens_remaining: u64,
    /// Until the token window is back to full, ms.
    pub tokens_reset_ms: i64,
    /// Spend of the budget period so far, USD.
    pub spend: f64,
    /// When the state decided, ms since the epoch, by the state's clock (Redis' `TIME` with
    /// Redis, so every replica places a request in the same window whatever its own clock):
    /// the token window bucket a release corrects is this one's.
    pub at_ms: i64,
}

/// The outcome of an [`Acquire`].
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Everything was taken. `local` says it was taken from the process-local fallback.
    Granted {
        /// Window state.
        snapshot: Snapshot,
        /// Taken from the local fallback while Redis is unreachable (fail open).
        local: bool,
    },
    /// Nothing was taken.
    Refused {
        /// The first limit hit.
        reason: Reason,
        /// When a retry can succeed, ms; `None` never (a total budget).
        retry_after_ms: Option<i64>,
        /// Window state.
        snapshot: Snapshot,
    },
}

/// What a request gives back at its end.
#[derive(Clone, Debug, Default)]
pub struct Release {
    /// The scope.
    pub scope: String,
    /// Now, ms since the epoch.
    pub now_ms: i64,
    /// The concurrency slot to free.
    pub lease: Option<String>,
    /// Token window correction: the bucket (seconds) the estimate went to, and real minus
    /// estimate.
    pub tokens: Option<(i64, i64)>,
    /// Spend to add, and the reservation to drop.
    pub settle: Option<Settle>,
    /// The grant came from the local fallback.
    pub local: bool,
}

/// Spend of one request.
#[derive(Clone, Debug, Default)]
pub struct Settle {
    /// Period id.
    pub period: String,
    /// The reservation member ([`Hold::member`]), when one was taken.
    pub member: Option<String>,
    /// Real cost, USD.
    pub cost: f64,
    /// How long the period's counter is kept after its last write, ms (`None`: forever).
    pub keep_ms: Option<i64>,
}

/// Pushes back the expiry of what a live request holds: its slot and its budget reservation.
#[derive(Clone, Debug, Default)]
pub struct Renew {
    /// The scope.
    pub scope: String,
    /// Now, ms since the epoch (Redis uses its own clock).
    pub now_ms: i64,
    /// The concurrency slot, when one was taken.
    pub lease: Option<String>,
    /// The reservation: period and member ([`Hold::member`]), when one was taken.
    pub hold: Option<(String, String)>,
    /// The new lease, from now, ms.
    pub lease_ttl_ms: i64,
    /// The grant came from the local fallback.
    pub local: bool,
}

/// Where the state lives, for logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// This process.
    Memory,
    /// Redis.
    Redis,
}

/// Shared state. Implementations must make each [`Acquire`] and [`Release`] atomic for its
/// scope, and must never lose a [`Settle`]: spend that cannot be written now is queued.
pub trait SharedState: Send + Sync + 'static {
    /// Checks every limit of one scope and takes them all, or none.
    fn acquire<'a>(&'a self, req: &'a Acquire) -> BoxFuture<'a, Result<Verdict, StateError>>;

    /// Frees a slot, corrects the token window, drops the reservation and adds the spend.
    /// Returns the period's spend after it, when known.
    fn release<'a>(&'a self, rel: &'a Release) -> BoxFuture<'a, Result<Option<f64>, StateError>>;

    /// Renews a live request's slot and reservation for another lease; a no-op for what was
    /// released or expired already.
    fn renew<'a>(&'a self, r: &'a Renew) -> BoxFuture<'a, Result<(), StateError>>;

    /// Spend of a scope in a period.
    fn spend<'a>(&'a self, scope: &'a str, period: &'a str) -> BoxFuture<'a, Result<f64, StateError>>;

    /// Sets a mark unless it is set; `true` when this call set it. Marks expire after `ttl`.
    fn mark<'a>(&'a self, name: &'a str, ttl: Duration) -> BoxFuture<'a, Result<bool, StateError>>;

    /// Removes a mark.
    fn unmark<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), StateError>>;

    /// Whether a mark is set (cooldowns).
    fn marked<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool, StateError>>;

    /// A cached response.
    fn cache_get<'a>(&'a self, key: &'a [u8; 32]) -> BoxFuture<'a, Option<Bytes>>;

    /// Stores a response for `ttl`.
    fn cache_put<'a>(&'a self, key: &'a [u8; 32], value: Bytes, ttl: Duration) -> BoxFuture<'a, ()>;

    /// Where the state lives.
    fn backend(&self) -> Backend;

    /// Whether the shared store answers (always true in memory).
    fn up(&self) -> bool;

    /// Writes queued spend now, if the store answers. Called at shutdown.
    fn flush(&self) -> BoxFuture<'_, ()>;
}

/// A process's shared state, chosen once: by the first config (its Redis settings), else in
/// memory on first use. Shared by the parts of the gateway that read or write it.
#[derive(Default)]
pub struct Slot(std::sync::OnceLock<Arc<dyn SharedState>>);

impl Slot {
    /// The state (in memory, if none was chosen yet).
    pub fn get(&self) -> &Arc<dyn SharedState> {
        self.0.get_or_init(|| Arc::new(Memory::new()))
    }

    /// Whether the state was chosen (or first used) already.
    pub fn is_chosen(&self) -> bool {
        self.0.get().is_some()
    }

    /// Chooses the state; ignored once one is chosen.
    pub fn choose(&self, state: Arc<dyn SharedState>) {
        let _ = self.0.set(state);
    }
}

/// The state for a fleet's settings: Redis when it names one, else memory; and the Redis
/// handle, for the backend cooldowns ([`SharedCooldowns`]). Must run inside a Tokio runtime when
/// Redis is configured (it starts the connection and health tasks).
pub fn from_settings(redis: Option<&RedisConfig>) -> (Arc<dyn SharedState>, Option<Redis>) {
    let Some(cfg) = redis else {
        return (Arc::new(Memory::new()), None);
    };
    match Redis::start(cfg) {
        Ok(r) => (Arc::new(r.clone()), Some(r)),
        Err(e) => {
            // A malformed URL is a configuration error; refuse everything rather than silently
            // counting per process when the operator asked for closed.
            tracing::error!(error = %e, "redis settings unusable");
            let state: Arc<dyn SharedState> = match cfg.fail_mode {
                FailMode::Open => Arc::new(Memory::new()),
                FailMode::Closed => Arc::new(Unavailable(e.to_string())),
            };
            (state, None)
        }
    }
}

/// A state that refuses everything (fail closed on unusable settings).
struct Unavailable(String);

impl SharedState for Unavailable {
    fn acquire<'a>(&'a self, _: &'a Acquire) -> BoxFuture<'a, Result<Verdict, StateError>> {
        Box::pin(async move { Err(StateError(self.0.clone())) })
    }
    fn release<'a>(&'a self, _: &'a Release) -> BoxFuture<'a, Result<Option<f64>, StateError>> {
        Box::pin(async move { Err(StateError(self.0.clone())) })
    }
    fn renew<'a>(&'a self, _: &'a Renew) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move { Err(StateError(self.0.clone())) })
    }
    fn spend<'a>(&'a self, _: &'a str, _: &'a str) -> BoxFuture<'a, Result<f64, StateError>> {
        Box::pin(async move { Err(StateError(self.0.clone())) })
    }
    fn mark<'a>(&'a self, _: &'a str, _: Duration) -> BoxFuture<'a, Result<bool, StateError>> {
        Box::pin(async move { Err(StateError(self.0.clone())) })
    }
    fn unmark<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move { Err(StateError(self.0.clone())) })
    }
    fn marked<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<bool, StateError>> {
        Box::pin(async move { Err(StateError(self.0.clone())) })
    }
    fn cache_get<'a>(&'a self, _: &'a [u8; 32]) -> BoxFuture<'a, Option<Bytes>> {
        Box::pin(async { None })
    }
    fn cache_put<'a>(&'a self, _: &'a [u8; 32], _: Bytes, _: Duration) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
    fn backend(&self) -> Backend {
        Backend::Redis
    }
    fn up(&self) -> bool {
        false
    }
    fn flush(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// One sliding window of one-second buckets: drops buckets older than the window and says
/// whether `cost` more fits under `limit`. The Redis Lua script does the same steps.
#[derive(Debug, PartialEq)]
pub(crate) struct WindowCheck {
    pub fits: bool,
    /// Left after this request when it fits, else what is left now.
    pub remaining: u64,
    /// Until the window is back to full, ms (after this request when it fits).
    pub reset_ms: i64,
    /// When it does not fit: until enough old buckets leave the window, ms.
    pub retry_ms: i64,
}

pub(crate) fn check_window(
    buckets: &mut std::collections::BTreeMap<i64, i64>,
    now_ms: i64,
    limit: u64,
    cost: u64,
) -> WindowCheck {
    let sec = now_ms.div_euclid(1000);
    buckets.retain(|b, _| *b > sec - WINDOW_MS / 1000);
    let used: i64 = buckets.values().fold(0i64, |a, b| a.saturating_add(*b)).max(0);
    let limit_i = i64::try_from(limit).unwrap_or(i64::MAX);
    let cost_i = i64::try_from(cost).unwrap_or(i64::MAX);
    let until_empty = |newest: i64| (newest + WINDOW_MS / 1000) * 1000 - now_ms;
    if used.saturating_add(cost_i) <= limit_i {
        return WindowCheck {
            fits: true,
            remaining: u64::try_from(limit_i - used - cost_i).unwrap_or(0),
            reset_ms: if used + cost_i > 0 { until_empty(sec) } else { 0 },
            retry_ms: 0,
        };
    }
    let need = used.saturating_add(cost_i) - limit_i;
    let mut freed = 0i64;
    let mut retry_ms = WINDOW_MS;
    if cost_i <= limit_i {
        for (b, v) in buckets.iter() {
            freed = freed.saturating_add(*v);
            if freed >= need {
                retry_ms = until_empty(*b);
                break;
            }
        }
    }
    let newest = buckets.keys().next_back().copied().unwrap_or(sec);
    WindowCheck {
        fits: false,
        remaining: u64::try_from(limit_i - used).unwrap_or(0),
        reset_ms: until_empty(newest),
        retry_ms: retry_ms.max(1),
    }
}

#[cfg(test)]
pub(crate) mod tests;
