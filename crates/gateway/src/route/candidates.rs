//! The backends that may take a request now, and the pick among them: a route's backends under
//! the request's plan (selectors, weights), those whose context window fits the prompt, those
//! not cooling down and under their limits; then the best priority tier and the route's
//! strategy. A half-open backend is taken only with its probe claimed.

use std::time::Duration;

use switchyard_config::BackendConfig;
use switchyard_providers::{ErrorKind, ProviderError};

use super::context::{label, Ctx};
use super::failure::Failure;
use super::quota;
use super::rules::Plan;
use super::strategy::{self, BackendMeters, Candidate, Choice};
use crate::error::GatewayError;
use crate::estimate::{self, Prompt};
use crate::runtime::Route;
use crate::state::Availability;

/// The backends that may take the request now.
pub(super) struct Pool {
    /// Available now (probe candidates included).
    pub(super) ready: Vec<Candidate>,
    /// When the soonest unavailable one frees up.
    pub(super) soonest: Option<Duration>,
}

/// The largest context window of `backends`, `None` when one of them has none (it takes any
/// prompt).
pub(crate) fn largest_window<'a>(backends: impl IntoIterator<Item = &'a BackendConfig>) -> Option<u64> {
    backends
        .into_iter()
        .map(|b| b.context_window.map(u64::from))
        .try_fold(0, |max, w| w.map(|w| max.max(w)))
}

/// The refusal of a prompt of about `tokens` tokens that no backend's window (the largest
/// `largest`) takes, in OpenAI's words.
pub(crate) fn context_exceeded(largest: u64, tokens: u64) -> ProviderError {
    let mut error = ProviderError::new(
        ErrorKind::ContextWindow,
        format!(
            "This model's maximum context length is {largest} tokens. However, your messages resulted in about {tokens} tokens (estimated by the gateway before sending). Please reduce the length of the messages."
        ),
    );
    error.code = Some("context_length_exceeded".into());
    error.param = Some("messages".into());
    error
}

/// Refuses, before its body is parsed, a prompt that no backend of `route` could take whatever
/// the rest of the body holds: its lower bound is over the largest window. Routes with
/// fallbacks or rules (which may send it elsewhere) and backends without a window take it on.
pub fn refuse_unfit(route: &Route, prompt: &Prompt) -> Result<(), GatewayError> {
    let cfg = &route.config;
    if !cfg.fallbacks.is_empty() || !cfg.rules.is_empty() {
        return Ok(());
    }
    match largest_window(&cfg.backends) {
        Some(largest) if prompt.lower_bound() > largest => Err(GatewayError::upstream(
            &context_exceeded(largest, prompt.lower_bound()),
            "-",
        )),
        _ => Ok(()),
    }
}

impl Ctx<'_> {
    /// The prompt's token count, when it may matter for context windows of `smallest` to
    /// `largest` tokens: a bound when that settles it (every window fits it, or none does).
    pub(super) async fn prompt_tokens(&self, smallest: u64, largest: u64) -> u64 {
        if self.prompt.upper_bound() <= smallest {
            return self.prompt.upper_bound();
        }
        if self.prompt.lower_bound() > largest {
            return self.prompt.lower_bound();
        }
        *self
            .exact_tokens
            .get_or_init(|| estimate::count(self.op, self.request, &self.prompt))
            .await
    }

    /// The available backends of a route under a plan, or why there are none.
    pub(super) async fn pool(&self, route: &Route, plan: &Plan, meters: &[BackendMeters]) -> Result<Pool, Failure> {
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
            let largest = largest_window(fitting.iter().map(|i| &cfg.backends[*i])).unwrap_or(u64::MAX);
            let tokens = self.prompt_tokens(smallest, largest).await;
            fitting.retain(|i| cfg.backends[*i].context_window.is_none_or(|w| tokens <= u64::from(w)));
            if fitting.is_empty() {
                return Err(Failure::Upstream {
                    error: context_exceeded(largest, tokens),
                    backend: "-".into(),
                });
            }
        }
        let availability = self.cooldowns.availability(&self.balance(route).keys).await;
        let mut ready = Vec::with_capacity(fitting.len());
        let mut soonest: Option<Duration> = None;
        for i in fitting {
            let mut wait = match availability.get(i).copied().unwrap_or(Availability::Ready) {
                Availability::Cooling(d) => Some(d),
                Availability::Ready | Availability::Probe => None,
            };
            if wait.is_none() {
                let m = &meters[i];
                // The Provider's quota is taken in the shared state when a backend is chosen.
                let (free_b, wait_b) = m.deployment.headroom(&cfg.backends[i].limits);
                if free_b <= 0.0 {
                    wait = Some(wait_b.max(Duration::from_millis(100)));
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
    pub(super) async fn choose(
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
        let mut soonest = pool.soonest;
        if cands.iter().any(|c| !tried[c.index]) || fresh_only {
            cands.retain(|c| !tried[c.index]);
        }
        loop {
            let choice = Choice {
                balance: self.balance(route),
                backends: &route.config.backends,
                meters,
                strategy: route.config.strategy,
                stream: self.stream,
                prompt: &self.prompt,
                dice: &self.dice,
            };
            let Some(at) = strategy::pick(&choice, &cands) else {
                return Err(cooling(soonest));
            };
            let c = cands[at];
            // The Provider's quota, taken now: at quota, the backend is skipped like a cooling one.
            let backend = &route.config.backends[c.index];
            let hold = match quota::take(
                self.quota_leases,
                &backend.provider,
                &meters[c.index].quota,
                self.prompt.rough(),
            )
            .await
            {
                Ok(hold) => hold,
                Err(wait_ms) => {
                    let d = Duration::from_millis(u64::try_from(wait_ms.unwrap_or(1000)).unwrap_or(1000).max(1));
                    soonest = Some(soonest.map_or(d, |s| s.min(d)));
                    cands.remove(at);
                    continue;
                }
            };
            if !c.probe || self.cooldowns.claim_probe(&self.balance(route).keys[c.index]).await {
                if let Some(hold) = hold {
                    self.quotas
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((c.index, hold));
                }
                return Ok(c);
            }
            // Another request holds the probe.
            cands.remove(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::route::testing::*;

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
        assert_eq!(&*h.ok("r", false).await.0.backend, "small");

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
}
