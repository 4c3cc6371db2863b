//! Which backend serves a request, and what happens when it fails: rules, balancing strategies,
//! priority tiers, retries with backoff, per-try / first-token / overall deadlines, fallback
//! routes, cooldowns and circuit breakers, hedging.
//!
//! [`execute`] takes a routed request and returns an upstream answer that has not failed yet:
//! a whole response, or a stream whose first token has arrived (so a stream is retried or falls
//! back only before anything reached the client). It does not translate for the client, count
//! usage or spend, or enforce key limits: the pipeline in `proxy` does that with what it returns.
//!
//! One module per layer, outermost first, each with its own tests:
//!
//! - [`fallback`]: the route, then its fallbacks whose triggers match, depth first, at most
//!   [`MAX_FALLBACK_DEPTH`] levels; [`rules`] pick the route's plan (or another route) on entry.
//! - [`retry`]: the attempts on one route; on a retryable failure the next attempt, preferring a
//!   backend not yet tried and backing off when none is left.
//! - [`candidates`]: the backends that may take the request now (selector, weight, context
//!   window, cooldown, limits), the best priority tier, then the [`strategy`].
//! - [`hedge`]: one attempt, hedged if the route says so.
//! - [`attempt`]: one call to one backend under its deadlines ([`deadline`]), recorded in
//!   cooldowns and meters; [`upstream`] makes the call.
//! - [`metrics`]: what the layers count (retries, fallbacks, hedges, backend states).
//!
//! Deadlines: `perTry` bounds one attempt, `firstToken` the wait for response headers and, for
//! streams, for the first token; `request` bounds everything here, waits and fallbacks included.
//! They end where this module's work ends: once a stream's first token is out, only the provider's
//! stream idle timeout applies (in the forwarder), so a long generation is never cut for length.
//!
//! Shared state: cooldowns go through `state::CooldownStore` (in memory, or shared by a fleet),
//! keyed by deployment (`provider|model`) so every route using a failing deployment skips it.
//! Provider quotas are taken in the shared state ([`quota`]), exact across a fleet sharing Redis.
//! Meters (in flight, per-minute windows, latency averages; backend limits) are per process. Balancing state
//! (round-robin counters) belongs to one config generation ([`Routing`] keeps it beside the
//! `Runtime` it was built for).

mod attempt;
mod candidates;
mod context;
mod deadline;
mod failure;
mod fallback;
mod hedge;
mod meters;
mod metrics;
mod quota;
mod retry;
mod rules;
mod strategy;
mod upstream;

#[cfg(test)]
pub(crate) mod testing;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use switchyard_config::{Price, ProviderConfig};
use switchyard_providers::{Json, Operation, Original};

pub use candidates::refuse_unfit;
pub(crate) use context::Balances;
pub use context::Routing;
pub(crate) use failure::retry_class;
pub use meters::Meters;
pub(crate) use retry::nth_backoff;
pub use strategy::Balance;
pub use switchyard_config::MAX_FALLBACK_DEPTH;
pub use upstream::{Call, Dispatch, HttpDispatch, Upstream};

use crate::error::GatewayError;
use crate::estimate::Prompt;
use crate::metrics::RouteMetrics;
pub use crate::runtime::serves;
use crate::runtime::{Key, Route, Runtime};
use crate::telemetry::Parent;
use context::Ctx;
use strategy::Dice;

/// What served a request.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The route that served it (`namespace/model`): the requested one, a rule's target or a
    /// fallback.
    pub route: Arc<str>,
    /// The route's metric handles (none for a route made for one call, such as a batch's).
    pub metrics: Option<Arc<RouteMetrics>>,
    /// The backend's name within that route.
    pub backend: Arc<str>,
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
    routing: &Routing,
    rt: &Runtime,
    route: &Arc<Route>,
    key: &Key,
    request: &Json,
    original: Option<&Original>,
    prompt: Prompt,
    headers: &HeaderMap,
    op: Operation,
    stream: bool,
    trace: Option<&Parent>,
) -> Result<(Upstream, Outcome), GatewayError> {
    let ctx = Ctx::new(
        routing,
        rt,
        key,
        headers,
        request,
        original,
        prompt,
        op,
        stream,
        Dice::random(),
        trace,
    );
    ctx.run(route).await
}

impl Ctx<'_> {
    async fn run(&self, route: &Arc<Route>) -> Result<(Upstream, Outcome), GatewayError> {
        let deadline = deadline::request(&route.config, None);
        match self.serve(route.clone(), 0, deadline).await {
            Ok(s) => {
                let backend = &s.route.config.backends[s.index];
                let outcome = Outcome {
                    route: s.route.id.clone(),
                    metrics: Some(s.route.metrics.clone()),
                    backend: s.route.backend_names[s.index].clone(),
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
}
