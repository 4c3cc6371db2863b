//! Fallbacks: when a route gives up, its fallback routes whose triggers match the failure, in
//! order, depth first, at most [`MAX_FALLBACK_DEPTH`] levels, never a route twice, and never
//! past the request's deadline. Each route entered goes through its rules first.

use std::sync::Arc;

use futures::future::BoxFuture;
use switchyard_config::FallbackTrigger;
use tokio::time::Instant;

use super::context::{label, Ctx, Served};
use super::deadline;
use super::failure::{trigger_label, Failure, ALL_TRIGGERS};
use crate::runtime::serves;
use crate::runtime::Route;
use switchyard_config::MAX_FALLBACK_DEPTH;

impl Ctx<'_> {
    /// Serves on a route, then on its fallbacks (depth first).
    pub(super) fn serve(
        &self,
        route: Arc<Route>,
        depth: u32,
        deadline: Option<Instant>,
    ) -> BoxFuture<'_, Result<Served, Failure>> {
        Box::pin(async move {
            let (route, plan) = self.resolve(route);
            let deadline = deadline::request(&route.config, deadline);
            let failure = match self.attempts(&route, &plan, deadline).await {
                Ok(mut s) => {
                    s.depth = depth;
                    return Ok(s);
                }
                Err(f) => f,
            };
            if depth as usize >= MAX_FALLBACK_DEPTH {
                return Err(failure);
            }
            let own: Vec<FallbackTrigger> = ALL_TRIGGERS.into_iter().filter(|t| failure.triggers(*t)).collect();
            let mut last = failure;
            for fb in &route.config.fallbacks {
                let Some(trigger) = fb.on.iter().copied().find(|t| own.contains(t)) else {
                    continue;
                };
                if deadline::passed(deadline) {
                    break;
                }
                let Some(next) = self.rt.route(&route.config.namespace, &fb.route) else {
                    continue;
                };
                // A fallback to a route the key may not use is skipped, as if it were not there.
                if self.was_visited(next) || !serves(next.config.mode, self.op) || !self.key.allows(&next.config) {
                    continue;
                }
                let next_label = label(&next.config);
                tracing::debug!(from = %label(&route.config), to = %next_label, trigger = trigger_label(trigger), "fallback");
                self.count_fallback(&route.config, &next_label, trigger);
                match self.serve(next.clone(), depth + 1, deadline).await {
                    Ok(s) => return Ok(s),
                    Err(f) => last = f,
                }
            }
            Err(last)
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::route::testing::*;

    // Fallbacks.

    #[tokio::test(start_paused = true)]
    async fn fallbacks_go_in_order_by_trigger_and_stop_at_depth_three() {
        use FallbackTrigger::*;
        let mut routes = Vec::new();
        for (model, fallbacks) in [
            (
                "r0",
                vec![
                    fallback("r1", &[ServerError]),
                    fallback("r2", &[RateLimit]),
                    fallback("r3", &[ServerError]),
                ],
            ),
            ("r1", vec![fallback("r1a", &[ServerError])]),
            ("r1a", vec![fallback("r1b", &[ServerError])]),
            ("r1b", vec![fallback("r1c", &[ServerError])]),
            ("r1c", vec![]),
            ("r2", vec![]),
            ("r3", vec![]),
        ] {
            let mut r = route_config(model, vec![backend(model, model, 1, 0)]);
            r.retries = retries(0, 100);
            r.fallbacks = fallbacks;
            routes.push(r);
        }
        let h = Harness::new(routes);
        for m in ["r0", "r1", "r1a", "r1b", "r2"] {
            h.fake.script(m, fails(ErrorKind::Server));
        }
        let (outcome, body) = h.ok("r0", false).await;
        // r1c sits at depth 4 and is never tried; r2 is for rate limits only.
        assert_eq!(h.fake.calls(), vec!["r0", "r1", "r1a", "r1b", "r3"]);
        assert!(body.contains("answer from r3"));
        assert_eq!(
            (&*outcome.route, outcome.fallback_depth, outcome.attempts),
            ("default/r3", 1, 5)
        );
        assert_eq!(
            h.metric(
                "switchyard_fallbacks_total",
                &[
                    ("route", "default/r1a"),
                    ("fallback", "default/r1b"),
                    ("trigger", "server-error")
                ]
            ),
            1.0
        );

        // When r3 fails too, the client sees the last failure.
        h.fake.script("r3", fails(ErrorKind::RateLimit));
        h.fake.clear();
        let e = h.err("r0", false).await;
        assert_eq!(e.status.as_u16(), 429);
        assert_eq!(h.fake.calls(), vec!["r0", "r1", "r1a", "r1b", "r3"]);

        // Served at depth 3.
        h.fake.script("r1b", Script::default());
        let (outcome, _) = h.ok("r0", false).await;
        assert_eq!((&*outcome.route, outcome.fallback_depth), ("default/r1b", 3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_limited_route_falls_back() {
        let mut primary = route_config("primary", vec![backend("a", "mock-429", 1, 0)]);
        primary.retries = retries(1, 100);
        primary.fallbacks = vec![fallback("backup", &[FallbackTrigger::RateLimit])];
        let backup = route_config("backup", vec![backend("b", "ok", 1, 0)]);
        let h = Harness::new(vec![primary, backup]);
        let mut e = error(ErrorKind::RateLimit);
        e.retry_after = Some(Duration::from_secs(1));
        h.fake.script(
            "mock-429",
            Script {
                always_fail: true,
                error: Some(e),
                ..Script::default()
            },
        );
        let start = Instant::now();
        let (outcome, _) = h.ok("primary", false).await;
        assert_eq!((&*outcome.route, outcome.fallback_depth), ("default/backup", 1));
        // One retry after the retry-after, then the fallback.
        assert_eq!(h.fake.calls(), vec!["mock-429", "mock-429", "ok"]);
        assert!(start.elapsed() >= Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_stream_falls_back_to_another_route() {
        let mut r = route_config("r", vec![backend("a", "down", 1, 0)]);
        r.retries = retries(0, 100);
        r.fallbacks = vec![fallback("backup", &[FallbackTrigger::ServerError])];
        let h = Harness::new(vec![r, route_config("backup", vec![backend("b", "ok", 1, 0)])]);
        h.fake.script("down", fails(ErrorKind::Server));
        let (outcome, body) = h.ok("r", true).await;
        assert_eq!((&*outcome.route, outcome.fallback_depth), ("default/backup", 1));
        assert!(body.contains("answer from ok"));
    }

    /// A fallback to a route the key's `allowedRoutes` leave out is skipped: the next fallback
    /// serves, or the route's own failure is the answer.
    #[tokio::test(start_paused = true)]
    async fn fallbacks_respect_allowed_routes() {
        let mut r = route_config("r", vec![backend("a", "down", 1, 0)]);
        r.retries = retries(0, 100);
        r.fallbacks = vec![
            fallback("forbidden", &[FallbackTrigger::ServerError]),
            fallback("allowed", &[FallbackTrigger::ServerError]),
        ];
        let h = Harness::new(vec![
            r,
            route_config("forbidden", vec![backend("f", "forbidden-model", 1, 0)]),
            route_config("allowed", vec![backend("b", "allowed-model", 1, 0)]),
        ]);
        h.fake.script("down", fails(ErrorKind::Server));
        let mut k = key(&[]);
        Arc::make_mut(&mut k.config).allowed_routes = vec!["r".into(), "allowed".into()];
        let (_, o) = h
            .call_as(&k, &HeaderMap::new(), &chat("r", "hi"), false)
            .await
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(&*o.route, "default/allowed");
        assert_eq!(h.fake.calls(), vec!["down", "allowed-model"]);
        // Only the forbidden fallback: the client sees the route's own failure.
        h.fake.clear();
        Arc::make_mut(&mut k.config).allowed_routes = vec!["r".into()];
        let e = h
            .call_as(&k, &HeaderMap::new(), &chat("r", "hi"), false)
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(e.status.as_u16(), 502, "{e}");
        assert_eq!(h.fake.calls(), vec!["down"]);
        // A key without allowedRoutes reaches the first fallback.
        h.fake.clear();
        let (o, _) = h.ok("r", false).await;
        assert_eq!(&*o.route, "default/forbidden");
    }
}
