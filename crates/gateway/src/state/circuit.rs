//! Cooldowns and circuit breakers of backends, behind [`CooldownStore`] so a fleet can share them
//! (Redis) while a single process keeps them in memory ([`MemoryCooldowns`]).
//!
//! A backend is named by a string key, `"{provider_id}|{upstream model}"`: the deployment, shared
//! by every route that uses it, so a failing deployment is skipped by all of them. The store only
//! keeps time and counts; what counts as a failure is decided by the caller (`route::attempt`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;

/// How long a half-open backend's probe may stay unanswered before another request may probe:
/// a probe whose client went away never reports back.
pub const PROBE_LEASE: Duration = Duration::from_secs(60);

/// Whether a backend may take a request now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Availability {
    /// Closed circuit: send.
    Ready,
    /// Half-open: the cooldown is over and one probe may go; claim it with
    /// [`CooldownStore::claim_probe`] first.
    Probe,
    /// Skipped for this much longer (open circuit, a rate limit's retry-after, a probe in flight).
    Cooling(Duration),
}

/// What one failed request does to a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Strike {
    /// Counts toward the consecutive failures that open the circuit (5xx, timeouts, connection
    /// errors; not the client's own faults, not rate limits).
    pub counts: bool,
    /// Consecutive failures that open the circuit.
    pub threshold: u32,
    /// How long an opened circuit skips the backend before a probe.
    pub open_for: Duration,
    /// Skip the backend this long whatever the count (a 429's retry-after).
    pub cool_for: Option<Duration>,
}

/// The state of a backend after an event, for metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendState {
    /// Closed circuit, no cooldown.
    Healthy,
    /// Skipped for a while (rate limited).
    Cooling,
    /// Circuit open (or half-open, waiting for its probe).
    Open,
}

impl BackendState {
    /// Every state, in metric order.
    pub const ALL: [BackendState; 3] = [BackendState::Healthy, BackendState::Cooling, BackendState::Open];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendState::Healthy => "healthy",
            BackendState::Cooling => "cooling",
            BackendState::Open => "open",
        }
    }
}

/// Shared cooldown and circuit state of backends. Futures, so an implementation may ask Redis;
/// each call is one round trip at most, and [`CooldownStore::availability`] answers for every
/// backend of a route at once.
pub trait CooldownStore: Send + Sync {
    /// The availability of each key, in order.
    fn availability<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Vec<Availability>>;
    /// Claims the one probe of a half-open backend; `false` when another request holds it or the
    /// backend is not half-open.
    fn claim_probe<'a>(&'a self, key: &'a str) -> BoxFuture<'a, bool>;
    /// A request succeeded: the circuit closes and the failure count resets.
    fn success<'a>(&'a self, key: &'a str) -> BoxFuture<'a, BackendState>;
    /// A request failed.
    fn failure<'a>(&'a self, key: &'a str, strike: Strike) -> BoxFuture<'a, BackendState>;
}

#[derive(Debug, Default)]
struct Circuit {
    failures: u32,
    open_until: Option<Instant>,
    probe_until: Option<Instant>,
    cool_until: Option<Instant>,
}

impl Circuit {
    fn state(&self, now: Instant) -> BackendState {
        if self.open_until.is_some() {
            BackendState::Open
        } else if self.cool_until.is_some_and(|t| t > now) {
            BackendState::Cooling
        } else {
            BackendState::Healthy
        }
    }

    fn availability(&self, now: Instant) -> Availability {
        if let Some(t) = self.cool_until.filter(|t| *t > now) {
            return Availability::Cooling(t - now);
        }
        match self.open_until {
            None => Availability::Ready,
            Some(t) if now < t => Availability::Cooling(t - now),
            Some(_) => match self.probe_until.filter(|p| *p > now) {
                Some(p) => Availability::Cooling(p - now),
                None => Availability::Probe,
            },
        }
    }
}

/// Cooldowns of one process, in memory. Time is tokio's clock, so tests can pause it.
#[derive(Debug, Default)]
pub struct MemoryCooldowns {
    circuits: Mutex<HashMap<String, Circuit>>,
}

impl MemoryCooldowns {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Circuit>) -> T) -> T {
        let mut map = self.circuits.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut map)
    }
}

impl CooldownStore for MemoryCooldowns {
    fn availability<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Vec<Availability>> {
        let now = Instant::now();
        let out = self.with(|map| {
            if map.is_empty() {
                return vec![Availability::Ready; keys.len()];
            }
            keys.iter()
                .map(|k| map.get(k).map_or(Availability::Ready, |c| c.availability(now)))
                .collect()
        });
        Box::pin(std::future::ready(out))
    }

    fn claim_probe<'a>(&'a self, key: &'a str) -> BoxFuture<'a, bool> {
        let now = Instant::now();
        let claimed = self.with(|map| match map.get_mut(key) {
            Some(c) if c.availability(now) == Availability::Probe => {
                c.probe_until = Some(now + PROBE_LEASE);
                true
            }
            _ => false,
        });
        Box::pin(std::future::ready(claimed))
    }

    fn success<'a>(&'a self, key: &'a str) -> BoxFuture<'a, BackendState> {
        let now = Instant::now();
        self.with(|map| {
            // A success does not lift a rate limit's cooldown that another request just set.
            if let Some(c) = map.get_mut(key) {
                if c.cool_until.is_some_and(|t| t > now) {
                    c.failures = 0;
                    c.open_until = None;
                    c.probe_until = None;
                } else {
                    map.remove(key);
                }
            }
        });
        Box::pin(std::future::ready(BackendState::Healthy))
    }

    fn failure<'a>(&'a self, key: &'a str, strike: Strike) -> BoxFuture<'a, BackendState> {
        let now = Instant::now();
        let state = self.with(|map| {
            let c = map.entry(key.to_owned()).or_default();
            if let Some(d) = strike.cool_for {
                let until = now + d;
                c.cool_until = Some(c.cool_until.map_or(until, |t| t.max(until)));
            }
            if strike.counts {
                c.failures = c.failures.saturating_add(1);
                // A failed probe (or a straggler while open) re-opens for a full cooldown.
                if c.open_until.is_some() || c.failures >= strike.threshold.max(1) {
                    c.open_until = Some(now + strike.open_for);
                    c.probe_until = None;
                }
            }
            c.state(now)
        });
        Box::pin(std::future::ready(state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strike() -> Strike {
        Strike {
            counts: true,
            threshold: 5,
            open_for: Duration::from_secs(300),
            cool_for: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_then_half_opens_for_one_probe() {
        let s = MemoryCooldowns::default();
        let keys = vec!["p|m".to_owned()];
        for i in 1..=4 {
            assert_eq!(s.failure("p|m", strike()).await, BackendState::Healthy, "failure {i}");
            assert_eq!(s.availability(&keys).await, vec![Availability::Ready]);
        }
        assert_eq!(s.failure("p|m", strike()).await, BackendState::Open);
        assert_eq!(
            s.availability(&keys).await,
            vec![Availability::Cooling(Duration::from_secs(300))]
        );
        tokio::time::advance(Duration::from_secs(299)).await;
        assert!(matches!(s.availability(&keys).await[0], Availability::Cooling(_)));
        assert!(!s.claim_probe("p|m").await);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(s.availability(&keys).await, vec![Availability::Probe]);
        assert!(s.claim_probe("p|m").await);
        assert!(!s.claim_probe("p|m").await, "one probe at a time");
        assert!(matches!(s.availability(&keys).await[0], Availability::Cooling(_)));
        // The probe fails: a full cooldown again.
        assert_eq!(s.failure("p|m", strike()).await, BackendState::Open);
        tokio::time::advance(Duration::from_secs(300)).await;
        assert!(s.claim_probe("p|m").await);
        assert_eq!(s.success("p|m").await, BackendState::Healthy);
        assert_eq!(s.availability(&keys).await, vec![Availability::Ready]);
        // Closed again: the count starts over.
        assert_eq!(s.failure("p|m", strike()).await, BackendState::Healthy);
    }

    #[tokio::test(start_paused = true)]
    async fn abandoned_probe_expires() {
        let s = MemoryCooldowns::default();
        let keys = vec!["k".to_owned()];
        for _ in 0..5 {
            s.failure("k", strike()).await;
        }
        tokio::time::advance(Duration::from_secs(300)).await;
        assert!(s.claim_probe("k").await);
        tokio::time::advance(PROBE_LEASE).await;
        assert_eq!(s.availability(&keys).await, vec![Availability::Probe]);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_cools_without_opening() {
        let s = MemoryCooldowns::default();
        let keys = vec!["k".to_owned(), "other".to_owned()];
        let st = s
            .failure(
                "k",
                Strike {
                    counts: false,
                    cool_for: Some(Duration::from_secs(2)),
                    ..strike()
                },
            )
            .await;
        assert_eq!(st, BackendState::Cooling);
        assert_eq!(
            s.availability(&keys).await,
            vec![Availability::Cooling(Duration::from_secs(2)), Availability::Ready]
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            s.availability(&keys).await,
            vec![Availability::Ready, Availability::Ready]
        );
    }
}
