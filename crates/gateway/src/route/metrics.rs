//! What the routing layers count: retries (by reason), fallbacks (by trigger), hedges (by
//! winner), and the one-hot state of every backend with its changes.

use switchyard_config::{FallbackTrigger, RouteConfig};

use super::context::{label, Ctx};
use super::failure::trigger_label;
use crate::runtime::Route;
use crate::state::BackendState;

impl Ctx<'_> {
    /// A retry on a route (`backend` "-" when none failed: every backend was cooling).
    pub(super) fn count_retry(&self, cfg: &RouteConfig, backend: &str, reason: &str) {
        self.metrics
            .retries
            .with_label_values(&[label(cfg).as_str(), backend, reason])
            .inc();
    }

    /// A fallback from a route to another.
    pub(super) fn count_fallback(&self, from: &RouteConfig, to: &str, trigger: FallbackTrigger) {
        self.metrics
            .fallbacks
            .with_label_values(&[label(from).as_str(), to, trigger_label(trigger)])
            .inc();
    }

    /// A hedged attempt ended: `primary`, `hedge` or `none` won.
    pub(super) fn count_hedge(&self, route: &RouteConfig, winner: &str) {
        self.metrics
            .hedges
            .with_label_values(&[label(route).as_str(), winner])
            .inc();
    }

    /// Keeps the one-hot state gauge of the route's backend at `index` current; counts changes
    /// (the first healthy report of a backend is not a change).
    pub(super) fn backend_state(&self, route: &Route, index: usize, state: BackendState) {
        let Some(backend) = route.config.backends.get(index) else {
            return;
        };
        // Through the route's handles: one per state, made on first use.
        let gauge = |s| route.metrics.backend_state(self.metrics, index, backend, s);
        let on = |s| gauge(s).is_some_and(|g| g.get() == 1);
        // Unchanged, nearly always.
        if on(state) {
            return;
        }
        let was_unhealthy = BackendState::ALL.iter().any(|s| *s != BackendState::Healthy && on(*s));
        for s in BackendState::ALL {
            if let Some(g) = gauge(s) {
                g.set(i64::from(s == state));
            }
        }
        let (p, m) = (backend.provider.as_str(), backend.model.as_str());
        if state != BackendState::Healthy || was_unhealthy {
            self.metrics
                .backend_state_changes
                .with_label_values(&[p, m, state.as_str()])
                .inc();
        }
    }
}
