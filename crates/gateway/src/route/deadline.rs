//! Deadlines: `request` bounds everything routing does for a request (waits and fallbacks
//! included; a fallback route's own `request` may only shorten it), `perTry` one attempt,
//! `firstToken` the wait for response headers and, for streams, for the first token (the
//! provider's stream idle timeout when the route sets none). Once a stream's first token is out,
//! none of these applies any more.

use std::future::Future;
use std::time::Duration;

use switchyard_config::{ProviderConfig, RouteConfig};
use switchyard_providers::{ErrorKind, ProviderError};
use tokio::time::Instant;

/// The deadline on entering `route`: its `request` timeout from now, or `outer` when sooner.
pub(super) fn request(route: &RouteConfig, outer: Option<Instant>) -> Option<Instant> {
    earliest(
        outer,
        route
            .timeouts
            .request_ms
            .map(|ms| Instant::now() + Duration::from_millis(ms)),
    )
}

/// Whether waiting `wait` still leaves time before the deadline.
pub(super) fn fits(deadline: Option<Instant>, wait: Duration) -> bool {
    deadline.is_none_or(|d| Instant::now() + wait < d)
}

/// Whether the deadline has passed.
pub(super) fn passed(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// The deadlines of one attempt.
pub(super) struct Attempt {
    per_try: Option<Instant>,
    /// The sooner of the per-try deadline and the request's.
    bound: Option<Instant>,
    /// When a stream's first token must have arrived.
    pub(super) first_token: Instant,
    /// How long to wait for the response headers.
    pub(super) headers: Duration,
}

impl Attempt {
    /// The deadlines of an attempt started at `start` under the request's `deadline`.
    pub(super) fn new(
        start: Instant,
        route: &RouteConfig,
        provider: &ProviderConfig,
        deadline: Option<Instant>,
    ) -> Self {
        let t = &route.timeouts;
        let per_try = t.per_try_ms.map(|ms| start + Duration::from_millis(ms));
        Self {
            per_try,
            bound: earliest(per_try, deadline),
            first_token: start + Duration::from_millis(t.first_token_ms.unwrap_or(provider.timeouts.stream_idle_ms)),
            headers: Duration::from_millis(t.first_token_ms.unwrap_or(provider.timeouts.request_ms)),
        }
    }

    /// Runs `work` until the sooner of the per-try and the request deadline; past it, a timeout
    /// that says which one passed.
    pub(super) async fn bound<T>(
        &self,
        work: impl Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        let Some(d) = self.bound else {
            return work.await;
        };
        match tokio::time::timeout_at(d, work).await {
            Ok(r) => r,
            Err(_) => Err(ProviderError::new(
                ErrorKind::Timeout,
                if self.per_try == self.bound {
                    "the upstream did not answer within the route's per-try timeout"
                } else {
                    "the route's request deadline passed"
                },
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_sooner_deadline_bounds_and_names_itself() {
        let mut route = crate::route::testing::route_config("r", vec![]);
        route.timeouts.per_try_ms = Some(100);
        let provider = crate::route::testing::provider("default/p");
        let now = Instant::now();
        let slow = || async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok::<(), ProviderError>(())
        };
        let per_try = Attempt::new(now, &route, &provider, Some(now + Duration::from_secs(5)));
        let e = per_try.bound(slow()).await.err().map(|e| e.message);
        assert_eq!(
            e.as_deref(),
            Some("the upstream did not answer within the route's per-try timeout")
        );
        let now = Instant::now();
        let overall = Attempt::new(now, &route, &provider, Some(now + Duration::from_millis(50)));
        let e = overall.bound(slow()).await.err().map(|e| e.message);
        assert_eq!(e.as_deref(), Some("the route's request deadline passed"));
        assert!(fits(
            Some(Instant::now() + Duration::from_secs(1)),
            Duration::from_millis(999)
        ));
        assert!(!fits(
            Some(Instant::now() + Duration::from_secs(1)),
            Duration::from_secs(1)
        ));
        assert!(passed(Some(Instant::now())));
        assert!(!passed(None));
    }
}
