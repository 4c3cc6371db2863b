//! Retries on one route: attempts until one succeeds or the route's policy gives up. A failure
//! the policy retries (`retries.on`) is followed at once by a backend not tried yet when one is
//! available; otherwise by the same backends after an exponential backoff with jitter, never
//! before a rate limit's retry-after, and never past the deadline.

use std::sync::Arc;
use std::time::Duration;

use switchyard_config::RetryConfig;
use tokio::time::Instant;

use super::context::{label, Ctx, Served};
use super::deadline;
use super::failure::{retry_reason, Failure};
use super::rules::Plan;
use super::strategy::Dice;
use crate::runtime::Route;

/// Backoff jitter: each wait is its nominal value times a factor in [1 - J, 1 + J].
const JITTER: f64 = 0.2;

/// The `n`th backoff (0-based): `backoff × 2^n`, capped, with jitter.
fn backoff(policy: &RetryConfig, n: u32, dice: &Dice) -> Duration {
    let max = Duration::from_millis(policy.max_backoff_ms);
    let nominal = Duration::from_millis(policy.backoff_ms)
        .saturating_mul(1u32 << n.min(20))
        .min(max);
    let factor = 1.0 - JITTER + 2.0 * JITTER * dice.unit();
    nominal.mul_f64(factor).min(max)
}

/// The `n`th backoff of `policy`, with fresh jitter: for callers outside the route's attempts
/// (speech retries its own backends).
pub(crate) fn nth_backoff(policy: &RetryConfig, n: u32) -> Duration {
    backoff(policy, n, &Dice::random())
}

impl Ctx<'_> {
    /// The attempts on one route: retries with backoff until one succeeds or the policy gives up.
    pub(super) async fn attempts(
        &self,
        route: &Arc<Route>,
        plan: &Plan,
        deadline: Option<Instant>,
    ) -> Result<Served, Failure> {
        let cfg = &route.config;
        let meters = self.balance(route).meters(self.rt, self.meters, cfg);
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
                        && deadline::fits(deadline, wait)
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
            let failure = match self.hedged(route, plan, meters, pick, &mut tried, deadline).await {
                Ok(s) => return Ok(s),
                Err(f) => f,
            };
            if retries_left == 0 || !failure.retryable(&cfg.retries.on) || !deadline::fits(deadline, Duration::ZERO) {
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
            if !deadline::fits(deadline, wait) {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::testing::*;

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
        assert_eq!(&*outcome.backend, "only");
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
        assert_eq!((&*outcome.backend, outcome.attempts), ("b", 3));
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
        assert_eq!((&*outcome.backend, outcome.attempts), ("b", 2));
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
        assert_eq!(&*outcome.backend, "b");
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
}
