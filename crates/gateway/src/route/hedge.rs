//! Hedging: when a route sets `hedgeAfterMs` and the first backend has produced nothing by
//! then, a second backend (not tried yet) starts too; the first to answer wins, and dropping the
//! other cancels its upstream request. Without it, an attempt is one call.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::context::{Ctx, Served};
use super::failure::Failure;
use super::rules::Plan;
use super::strategy::{BackendMeters, Candidate};
use crate::runtime::Route;

impl Ctx<'_> {
    /// One attempt, hedged when the route says so: if the first backend has produced nothing
    /// after `hedge_after_ms`, a second (not yet tried) starts too; the first to answer wins and
    /// the other is dropped, which cancels its upstream request.
    pub(super) async fn hedged(
        &self,
        route: &Arc<Route>,
        plan: &Plan,
        meters: &[BackendMeters],
        first: Candidate,
        tried: &mut [bool],
        deadline: Option<Instant>,
    ) -> Result<Served, Failure> {
        // Boxed, as the hedge below: rustc keeps a future awaited by value in two slots (the
        // binding and the await's), and every request's routing future carries this one until a
        // stream's first token (memory per open stream, bench/results/profiling.md).
        let mut primary = Box::pin(self.one(route, meters, first, deadline));
        let Some(after) = route.config.hedge_after_ms.map(Duration::from_millis) else {
            let r = primary.await;
            tried[first.index] = true;
            return r;
        };
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
        // Boxed: inline, the second attempt's future would double the size of every request's
        // routing future, hedged or not, and that future lives until a stream's first token
        // (memory per open stream, bench/results/profiling.md).
        let mut hedge = Box::pin(self.one(route, meters, second, deadline));
        let won = |winner: &str| self.count_hedge(&route.config, winner);
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
}

#[cfg(test)]
mod tests {
    use crate::route::testing::*;

    // Hedging.

    #[tokio::test(start_paused = true)]
    async fn hedging_answers_from_the_fast_backend_and_cancels_the_slow_one() {
        let mut r = route_config("r", vec![backend("slow", "slow", 1, 0), backend("fast", "fast", 1, 0)]);
        r.hedge_after_ms = Some(200);
        let h = Harness::new(vec![r]);
        h.fake.script(
            "slow",
            Script {
                first_token: Duration::from_secs(5),
                delay: Duration::from_secs(5),
                ..Script::default()
            },
        );
        h.fake.script(
            "fast",
            Script {
                first_token: Duration::from_millis(50),
                delay: Duration::from_millis(50),
                ..Script::default()
            },
        );
        for stream in [true, false] {
            h.fake.clear();
            let before = h.fake.cancelled.load(Ordering::Relaxed);
            // Weighted round robin starts with the first backend, the slow one.
            let start = Instant::now();
            let (outcome, body) = h.ok("r", stream).await;
            assert!(body.contains("answer from fast"), "{body}");
            assert_eq!((&*outcome.backend, outcome.attempts), ("fast", 2));
            let took = start.elapsed();
            // The hedge starts at 200 ms; the fast backend answers 50 ms later (first token 50 ms
            // after that when streaming). The slow one would have taken 5 s.
            assert_eq!(took, Duration::from_millis(if stream { 300 } else { 250 }));
            assert_eq!(h.fake.calls(), vec!["slow", "fast"]);
            assert_eq!(h.fake.cancelled.load(Ordering::Relaxed), before + 1, "stream={stream}");
            // Round robin now starts with the fast one, which answers in time: no hedge.
            h.fake.clear();
            let (outcome, _) = h.ok("r", stream).await;
            assert_eq!((&*outcome.backend, outcome.attempts), ("fast", 1));
            assert_eq!(h.fake.calls(), vec!["fast"]);
        }
        assert_eq!(h.metric("switchyard_hedges_total", &[("winner", "hedge")]), 2.0);
    }
}
