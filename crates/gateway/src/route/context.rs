//! A request's routing context ([`Ctx`]), which every layer reads, and [`Routing`], the
//! process-wide handles it borrows from: how to call a backend, cooldowns, meters, metrics, and
//! the balancing state of the running config.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;
use http::HeaderMap;
use switchyard_config::{ProviderConfig, RouteConfig};
use switchyard_providers::{Json, Operation, Original};
use tokio::time::Instant;

use super::meters::Meters;
use super::quota::{self, QuotaHold};
use super::strategy::{Balance, Dice};
use super::upstream::{Dispatch, Upstream};
use crate::estimate::Prompt;
use crate::metrics::Metrics;
use crate::runtime::{Key, Route, Runtime};
use crate::state::{CooldownStore, Leases, Slot};
use crate::telemetry::Parent;

/// What routing needs from the gateway process, kept across config reloads: how to call a
/// backend, the cooldowns and meters of backends, the balancing state of the running config,
/// and the metrics the layers count.
pub struct Routing {
    dispatch: Arc<dyn Dispatch>,
    cooldowns: Arc<dyn CooldownStore>,
    meters: Meters,
    metrics: Metrics,
    /// Where Provider quotas are taken (the gateway's shared state), and their slots kept alive
    /// while the attempt holding them runs.
    quotas: Arc<Leases>,
    balances: ArcSwap<Balances>,
    /// The previous config's, for requests that began on it and route after the swap.
    previous: ArcSwap<Balances>,
    /// Held while a config generation's balances are built, so they are built once.
    building: Mutex<()>,
}

/// Balancing state of one config generation: one [`Balance`] per route, by `Route::index`.
pub(crate) struct Balances {
    /// The `Runtime::id` they were built for.
    runtime: u64,
    routes: Vec<Balance>,
}

impl Balances {
    fn new(rt: &Runtime) -> Self {
        Self {
            runtime: rt.id,
            routes: rt.config.routes.iter().map(Balance::new).collect(),
        }
    }

    /// The `Runtime::id` this state belongs to.
    #[cfg(test)]
    pub(crate) fn runtime(&self) -> u64 {
        self.runtime
    }

    fn none() -> Self {
        Self {
            runtime: 0,
            routes: Vec::new(),
        }
    }
}

impl Routing {
    /// Routing that calls backends through `dispatch`.
    pub fn new(dispatch: Arc<dyn Dispatch>, cooldowns: Arc<dyn CooldownStore>, metrics: Metrics) -> Self {
        Self {
            dispatch,
            cooldowns,
            meters: Meters::default(),
            metrics,
            quotas: quota::leases(Arc::new(Slot::default())),
            balances: ArcSwap::from_pointee(Balances::none()),
            previous: ArcSwap::from_pointee(Balances::none()),
            building: Mutex::new(()),
        }
    }

    /// Takes Provider quotas in `state` (the gateway's shared state; in memory by default).
    pub fn with_state(mut self, state: Arc<Slot>) -> Self {
        self.quotas = quota::leases(state);
        self
    }

    /// The same with a shorter quota lease (tests).
    #[cfg(test)]
    pub(crate) fn with_quota_lease_ttl(mut self, ms: i64) -> Self {
        self.quotas = Arc::new(Leases::new(self.quotas.state().clone(), ms, quota::now_ms));
        self
    }

    /// Builds the balancing state of a config about to be swapped in, and each route's meters, so
    /// that its first requests find them (on the config thread: for 1,000 routes this is thousands of
    /// allocations a request worker would otherwise make while others wait for it). Returns the
    /// state it retires, to be freed there too.
    pub(crate) fn prepare(&self, rt: &Runtime) -> Option<Arc<Balances>> {
        let _building = self.building.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.balances.load_full();
        if current.runtime >= rt.id {
            return None;
        }
        let fresh = Balances::new(rt);
        for (route, balance) in rt.config.routes.iter().zip(&fresh.routes) {
            balance.meters(rt, &self.meters, route);
        }
        self.balances.store(Arc::new(fresh));
        Some(self.previous.swap(current))
    }

    /// The runtimes the current and previous balancing state were built for.
    #[cfg(test)]
    pub(crate) fn built_for(&self) -> (u64, u64) {
        (self.balances.load().runtime, self.previous.load().runtime)
    }

    /// The balancing state of `rt`'s routes: built when its config was swapped in (or by the
    /// first request, if that came first); a request on the config before keeps that one's; a
    /// request on an even older config gets state of its own.
    fn balances(&self, rt: &Runtime) -> Arc<Balances> {
        let current = self.balances.load_full();
        if current.runtime == rt.id {
            return current;
        }
        if current.runtime > rt.id {
            let previous = self.previous.load_full();
            if previous.runtime == rt.id {
                return previous;
            }
            return Arc::new(Balances::new(rt));
        }
        // A request on a config newer than the state (the swap's `prepare` has not run yet):
        // build it as the swap would, then take it (or, if a newer config won meanwhile, the
        // previous slot or state of its own, as above).
        drop(self.prepare(rt));
        self.balances(rt)
    }
}

/// One request's routing context: what every layer reads.
pub(super) struct Ctx<'a> {
    pub(super) rt: &'a Runtime,
    pub(super) balances: Arc<Balances>,
    /// The key: its labels for rules, its `allowedRoutes` for rule targets and fallbacks.
    pub(super) key: &'a Key,
    pub(super) key_labels: &'a BTreeMap<String, String>,
    pub(super) headers: &'a HeaderMap,
    pub(super) request: &'a Json,
    /// The client's bytes of `request`, when it came in OpenAI's format.
    pub(super) original: Option<&'a Original>,
    pub(super) op: Operation,
    pub(super) stream: bool,
    pub(super) dispatch: &'a dyn Dispatch,
    pub(super) cooldowns: &'a dyn CooldownStore,
    pub(super) meters: &'a Meters,
    pub(super) metrics: &'a Metrics,
    pub(super) quota_leases: &'a Arc<Leases>,
    /// Provider quotas taken by `choose` for the attempt about to start on a backend (index).
    pub(super) quotas: Mutex<Vec<(usize, Arc<QuotaHold>)>>,
    pub(super) dice: Dice,
    pub(super) prompt: Prompt,
    pub(super) exact_tokens: tokio::sync::OnceCell<u64>,
    /// Backend selectors in force: once applied, for the rest of the request.
    pub(super) selectors: Mutex<Vec<BTreeMap<String, String>>>,
    /// Routes entered (by address), so no route is tried twice.
    pub(super) visited: Mutex<Vec<usize>>,
    pub(super) attempts: AtomicU32,
    pub(super) first_attempt: OnceLock<Instant>,
    /// The request's span, when traces are on: each attempt is a child span.
    pub(super) trace: Option<&'a Parent>,
}

/// A successful attempt.
pub(super) struct Served {
    pub(super) upstream: Upstream,
    pub(super) route: Arc<Route>,
    pub(super) index: usize,
    pub(super) provider: Arc<ProviderConfig>,
    pub(super) depth: u32,
}

impl<'a> Ctx<'a> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        routing: &'a Routing,
        rt: &'a Runtime,
        key: &'a Key,
        headers: &'a HeaderMap,
        request: &'a Json,
        original: Option<&'a Original>,
        prompt: Prompt,
        op: Operation,
        stream: bool,
        dice: Dice,
        trace: Option<&'a Parent>,
    ) -> Self {
        Ctx {
            rt,
            balances: routing.balances(rt),
            key,
            key_labels: &key.config.labels,
            headers,
            request,
            original,
            op,
            stream,
            dispatch: routing.dispatch.as_ref(),
            cooldowns: routing.cooldowns.as_ref(),
            meters: &routing.meters,
            metrics: &routing.metrics,
            quota_leases: &routing.quotas,
            quotas: Mutex::new(Vec::new()),
            dice,
            prompt,
            exact_tokens: tokio::sync::OnceCell::new(),
            selectors: Mutex::new(Vec::new()),
            visited: Mutex::new(Vec::new()),
            attempts: AtomicU32::new(0),
            first_attempt: OnceLock::new(),
            trace,
        }
    }

    /// The balancing state of a route of this request's config.
    pub(super) fn balance(&self, route: &Route) -> &Balance {
        &self.balances.routes[route.index]
    }

    /// Whether the request entered a route already.
    pub(super) fn was_visited(&self, route: &Arc<Route>) -> bool {
        let id = Arc::as_ptr(route) as usize;
        self.visited.lock().unwrap_or_else(|p| p.into_inner()).contains(&id)
    }

    /// Marks a route entered.
    pub(super) fn visit(&self, route: &Arc<Route>) {
        let id = Arc::as_ptr(route) as usize;
        self.visited.lock().unwrap_or_else(|p| p.into_inner()).push(id);
    }
}

/// A route's name in metrics and messages: `namespace/model`.
pub(super) fn label(route: &RouteConfig) -> String {
    format!("{}/{}", route.namespace, route.model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::testing::{backend, config, route_config, Harness};

    /// A swap prepares the next config's state before that config is visible: from then on a
    /// request on the serving config still finds the state it had (kept as the previous one,
    /// nothing rebuilt on a request worker), and the first request on the new config finds its
    /// state built.
    #[test]
    fn state_prepared_for_the_next_config_leaves_the_serving_one_its_own() {
        let routes = || {
            vec![route_config(
                "m",
                vec![backend("a", "m", 1, 0), backend("b", "m", 1, 0)],
            )]
        };
        let h = Harness::new(routes());
        let serving = &h.rt;
        drop(h.routing.prepare(serving));
        let before = h.routing.balances(serving);
        let next = Runtime::new(config(routes()), 2);
        assert!(h.routing.prepare(&next).is_some());
        assert!(
            Arc::ptr_eq(&h.routing.balances(serving), &before),
            "the serving config keeps its state"
        );
        let built = h.routing.balances(&next);
        assert_eq!(built.runtime, next.id);
        assert!(
            Arc::ptr_eq(&h.routing.balances(&next), &built),
            "built once, not per request"
        );
        assert!(h.routing.prepare(&next).is_none(), "a second prepare builds nothing");
    }
}
