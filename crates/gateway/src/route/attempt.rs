//! One attempt: one call to one backend, under the attempt's deadlines, counted in the backend's
//! meters (in flight, requests and tokens, latency) and recorded in its cooldown and circuit:
//! a success closes the circuit; a failure strikes it as [`super::failure::strike`] says (the
//! request's own deadline passing says nothing about the backend). A stream's attempt ends at
//! its first token: it then carries its in-flight count and trace span until the stream ends.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use switchyard_config::ProviderConfig;
use switchyard_providers::{ErrorKind, ProviderError};
use tokio::time::Instant;

use super::context::{label, Ctx, Served};
use super::deadline;
use super::failure::{strike, Failure};
use super::meters::InFlight;
use super::strategy::{BackendMeters, Candidate};
use super::upstream::{self, Call, Upstream};
use crate::runtime::Route;
use crate::telemetry::AttemptSpan;

impl Ctx<'_> {
    /// One call to one backend, under its deadlines, recorded in cooldowns and meters.
    pub(super) async fn one(
        &self,
        route: &Arc<Route>,
        meters: &[BackendMeters],
        c: Candidate,
        deadline: Option<Instant>,
    ) -> Result<Served, Failure> {
        let cfg = &route.config;
        let backend = &cfg.backends[c.index];
        let key = self.balance(route).keys[c.index].as_str();
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
        let quota = {
            let mut held = self.quotas.lock().unwrap_or_else(|p| p.into_inner());
            held.iter()
                .rposition(|(i, _)| *i == c.index)
                .map(|at| held.swap_remove(at).1)
        };
        let in_flight = InFlight::start(&[&m.deployment, &m.provider]).with_quota(quota.clone());
        let tokens = self.prompt.rough();
        m.deployment.sent(tokens);
        m.provider.sent(tokens);

        let deadlines = deadline::Attempt::new(start, cfg, provider, deadline);
        let call = Call {
            op: self.op,
            request: self.request,
            original: self.original,
            provider,
            backend,
            drop_unsupported_params: cfg.drop_unsupported_params,
            stream: self.stream,
            headers_timeout: deadlines.headers,
            trace: span.headers(),
            max_response_bytes: self.rt.config.settings.max_response_bytes,
        };
        // The work is written in the call: bound to a local first, its future would take a slot
        // of its own in this one beside the copy inside `bound`'s (rustc keeps both), and this
        // future lives until a stream's first token.
        let result = deadlines
            .bound(async {
                match self.dispatch.send(call).await? {
                    Upstream::Full(full) => Ok(Upstream::Full(full)),
                    Upstream::Stream(chunks, translator) => {
                        let (rest, primed) = upstream::prime(chunks, translator, deadlines.first_token).await?;
                        Ok(Upstream::Stream(rest, Box::new(primed.hold(in_flight))))
                    }
                }
            })
            .await;
        let elapsed = start.elapsed();
        match result {
            Ok(upstream) => {
                let state = self.cooldowns.success(key).await;
                self.backend_state(route, c.index, state);
                m.deployment.observe(self.stream, elapsed);
                if let Upstream::Full(full) = &upstream {
                    if let Some(u) = full.usage {
                        m.deployment.tokens(u.completion_tokens);
                        m.provider.tokens(u.completion_tokens);
                        if let Some(q) = &quota {
                            q.tokens(u.completion_tokens);
                        }
                    }
                }
                let upstream = match upstream {
                    Upstream::Full(full) => {
                        span.answered(&full);
                        Upstream::Full(full)
                    }
                    Upstream::Stream(chunks, translator) => Upstream::Stream(chunks, span.streaming(translator)),
                };
                Ok(Served {
                    upstream,
                    route: route.clone(),
                    index: c.index,
                    provider: provider.clone(),
                    depth: 0,
                })
            }
            Err(mut error) => {
                self.count_too_large(provider, &error);
                // A provider's answer to bad credentials often echoes the key (masked or not):
                // the operators get it, redacted, in the log; the client a message of our own.
                if matches!(error.kind, ErrorKind::Auth | ErrorKind::PermissionDenied) {
                    tracing::warn!(
                        route = %label(cfg),
                        backend = %backend.name,
                        provider = %provider.id,
                        status = ?error.status,
                        error = %crate::error::redact(&error.message),
                        "the provider refused the gateway's credentials"
                    );
                    error.message = credentials_refused(&provider.id, error.status);
                    error.param = None;
                    error.code = None;
                }
                // The request's own deadline says nothing about the backend.
                let overall = error.kind == ErrorKind::Timeout && deadline::passed(deadline);
                if !overall {
                    if let Some(s) = strike(&error, provider, &cfg.retries) {
                        let state = self.cooldowns.failure(key, s).await;
                        self.backend_state(route, c.index, state);
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
}

impl Ctx<'_> {
    /// Counts an upstream answer cut off for size.
    fn count_too_large(&self, provider: &ProviderConfig, error: &ProviderError) {
        let part = match error.code.as_deref() {
            Some(crate::error::UPSTREAM_TOO_LARGE) => "body",
            Some(switchyard_providers::sse::EVENT_TOO_LARGE) => "event",
            _ => return,
        };
        self.metrics
            .upstream_too_large
            .with_label_values(&[provider.id.as_str(), part])
            .inc();
    }
}

/// What a client is told when a provider refused the gateway's own credentials (a 401 or 403
/// upstream): the provider's name, never its answer.
fn credentials_refused(provider: &str, status: Option<u16>) -> String {
    let status = status.map(|s| format!(" (HTTP {s})")).unwrap_or_default();
    format!("upstream rejected the gateway's credentials for provider {provider:?}{status}; the Provider's credentials need fixing")
}

#[cfg(test)]
mod tests {
    use crate::route::testing::*;

    // Cooldowns and circuit breaking.

    #[tokio::test(start_paused = true)]
    async fn circuit_opens_after_five_failures_and_half_opens_after_the_cooldown() {
        let mut r = route_config(
            "r",
            vec![backend("primary", "bad", 1, 0), backend("standby", "good", 1, 1)],
        );
        r.retries = retries(1, 100);
        let h = Harness::new(vec![r]);
        h.fake.script("bad", fails(ErrorKind::Server));
        // Five requests: each fails on the primary, then the standby serves at once.
        for i in 0..5 {
            let (o, _) = h.ok("r", false).await;
            assert_eq!((&*o.backend, o.attempts), ("standby", 2), "request {i}");
        }
        assert_eq!(
            h.metric("switchyard_backend_state", &[("model", "bad"), ("state", "open")]),
            1.0
        );
        h.fake.clear();
        // Open: the primary is skipped.
        for _ in 0..3 {
            let (o, _) = h.ok("r", false).await;
            assert_eq!((&*o.backend, o.attempts), ("standby", 1));
        }
        tokio::time::advance(Duration::from_secs(299)).await;
        assert_eq!(h.ok("r", false).await.0.attempts, 1);
        assert_eq!(h.fake.calls(), vec!["good"; 4]);
        // Half-open after the five-minute cooldown: one probe, which fails and re-opens.
        tokio::time::advance(Duration::from_secs(1)).await;
        h.fake.clear();
        let (o, _) = h.ok("r", false).await;
        assert_eq!(o.attempts, 2);
        assert_eq!(h.ok("r", false).await.0.attempts, 1);
        assert_eq!(h.fake.calls(), vec!["bad", "good", "good"]);

        // The primary recovers; the next probe closes the circuit and it takes traffic again.
        h.fake.script("bad", slow(Duration::from_millis(500)));
        tokio::time::advance(Duration::from_secs(300)).await;
        h.fake.clear();
        // Two requests at once: only one may probe; the other goes to the standby.
        let (a, b) = tokio::join!(h.call("r", false), h.call("r", false));
        let mut served: Vec<String> = [a, b]
            .into_iter()
            .map(|r| r.map(|(_, o)| o.backend.to_string()).unwrap_or_default())
            .collect();
        served.sort();
        assert_eq!(served, vec!["primary", "standby"]);
        for _ in 0..3 {
            assert_eq!(&*h.ok("r", false).await.0.backend, "primary");
        }
        assert_eq!(
            h.metric("switchyard_backend_state", &[("model", "bad"), ("state", "healthy")]),
            1.0
        );
    }

    #[tokio::test(start_paused = true)]
    async fn every_backend_cooling_is_a_503_with_retry_after() {
        let mut r = route_config("r", vec![backend("only", "bad", 1, 0)]);
        r.retries = retries(0, 100);
        let h = Harness::new(vec![r]);
        h.fake.script("bad", fails(ErrorKind::Server));
        for _ in 0..5 {
            assert_eq!(h.err("r", false).await.status.as_u16(), 502);
        }
        let e = h.err("r", false).await;
        assert_eq!(e.status.as_u16(), 503);
        assert_eq!(e.retry_after, Some(Duration::from_secs(300)));
        assert_eq!(h.fake.calls().len(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_cools_the_backend_for_its_retry_after() {
        let mut r = route_config("r", vec![backend("a", "limited", 1, 0), backend("b", "ok", 1, 0)]);
        r.retries = retries(1, 100);
        let h = Harness::new(vec![r]);
        let mut e = error(ErrorKind::RateLimit);
        e.retry_after = Some(Duration::from_secs(10));
        h.fake.script(
            "limited",
            Script {
                fail_first: 1,
                error: Some(e),
                ..Script::default()
            },
        );
        assert_eq!(&*h.ok("r", false).await.0.backend, "b");
        // Cooling for 10 s: every request goes to b.
        for _ in 0..4 {
            assert_eq!(&*h.ok("r", false).await.0.backend, "b");
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        let served: Vec<String> = {
            let mut v = Vec::new();
            for _ in 0..4 {
                v.push(h.ok("r", false).await.0.backend.to_string());
            }
            v
        };
        assert!(served.iter().any(|b| b == "a"), "{served:?}");
    }

    // Streams.

    #[tokio::test(start_paused = true)]
    async fn a_stream_fails_over_before_its_first_byte_but_not_after() {
        // Before: a backend that sends headers but no token within the first-token timeout, and one
        // whose first event is an error.
        let mut r = route_config(
            "r",
            vec![
                backend("a", "silent", 1, 0),
                backend("b", "err", 1, 0),
                backend("c", "ok", 1, 0),
            ],
        );
        r.retries = retries(2, 100);
        r.timeouts.first_token_ms = Some(500);
        let h = Harness::new(vec![r]);
        h.fake.script(
            "silent",
            Script {
                first_token: Duration::from_secs(30),
                ..Script::default()
            },
        );
        h.fake.script(
            "err",
            Script {
                always_fail: true,
                error: Some(error(ErrorKind::Server)),
                ..Script::default()
            },
        );
        let start = Instant::now();
        let (outcome, body) = h.ok("r", true).await;
        assert_eq!(h.fake.calls(), vec!["silent", "err", "ok"]);
        assert_eq!(start.elapsed(), Duration::from_millis(500));
        assert!(
            body.contains("answer from ok") && body.ends_with("data: [DONE]\n\n"),
            "{body}"
        );
        assert_eq!((&*outcome.backend, outcome.attempts), ("c", 3));
        assert_eq!(
            h.fake.cancelled.load(Ordering::Relaxed),
            1,
            "the silent stream was dropped"
        );

        // After: the first token reached the client, then the stream broke. No retry: the stream
        // ends with the error (the forwarder turns it into a terminal error event).
        let mut r = route_config("r", vec![backend("a", "cut", 1, 0), backend("b", "ok", 1, 0)]);
        r.retries = retries(2, 100);
        let h = Harness::new(vec![r]);
        h.fake.script(
            "cut",
            Script {
                cut: true,
                ..Script::default()
            },
        );
        let Ok((up, outcome)) = h.call("r", true).await else {
            unreachable!("the stream started");
        };
        assert_eq!((&*outcome.backend, outcome.attempts), ("a", 1));
        let (body, err) = drain(up).await;
        assert!(body.contains("answer from cut"));
        assert!(matches!(err, Some(e) if e.kind == ErrorKind::Protocol));
        assert_eq!(h.fake.calls(), vec!["cut"]);
    }
}
