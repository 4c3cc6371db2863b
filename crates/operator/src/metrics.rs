//! The operator's own health and metrics: `/healthz` (the process runs), `/readyz` (caches
//! synced, or standing by as a follower), `/metrics` (Prometheus text).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

use crate::Error;

/// Reconcile counters and timings, by controller (`llmgateway`, `virtualkey`; failures also
/// `status`, the fleets' object status writers), failures by their kind ([`Error::reason`]).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    reconciles: IntCounterVec,
    failures: IntCounterVec,
    duration: HistogramVec,
    /// 1 while this replica is the leader.
    pub leader: IntGauge,
    ready: Arc<AtomicBool>,
}

impl Metrics {
    /// Registers the metrics.
    pub fn new() -> Result<Self, Error> {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new("switchyard_operator_reconciles_total", "Reconciles run"),
            &["controller"],
        )?;
        let failures = IntCounterVec::new(
            Opts::new(
                "switchyard_operator_reconcile_errors_total",
                "Reconciles that failed, by what failed",
            ),
            &["controller", "reason"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "switchyard_operator_reconcile_duration_seconds",
                "Time spent in one reconcile",
            )
            .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["controller"],
        )?;
        let leader = IntGauge::new("switchyard_operator_leader", "1 while this replica is the leader")?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        Ok(Self {
            registry,
            reconciles,
            failures,
            duration,
            leader,
            ready: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Starts timing one reconcile of `controller`.
    pub fn start(&self, controller: &'static str) -> ReconcileTimer {
        self.reconciles.with_label_values(&[controller]).inc();
        ReconcileTimer {
            histogram: self.duration.with_label_values(&[controller]),
            started: Instant::now(),
        }
    }

    /// Counts a failed reconcile of `controller`, labelled by the kind of `error`.
    pub fn failed(&self, controller: &'static str, error: &Error) {
        self.failures.with_label_values(&[controller, error.reason()]).inc();
    }

    /// Marks the operator ready (or not) for `/readyz`.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub(crate) fn render(&self) -> Result<Vec<u8>, prometheus::Error> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        Ok(buf)
    }
}

/// Records the duration when dropped.
pub struct ReconcileTimer {
    histogram: prometheus::Histogram,
    started: Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed().as_secs_f64());
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(m): State<Metrics>) -> impl IntoResponse {
    if m.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics(State(m): State<Metrics>) -> impl IntoResponse {
    match m.render() {
        Ok(body) => (StatusCode::OK, [("content-type", "text/plain; version=0.0.4")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The health and metrics routes.
pub fn router(m: Metrics) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(m)
}

/// Serves [`router`] on `addr` until the task is dropped.
pub async fn serve(addr: SocketAddr, m: Metrics) -> Result<(), Error> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Serve { addr, source })?;
    tracing::info!(%addr, "serving /healthz, /readyz and /metrics");
    axum::serve(listener, router(m))
        .await
        .map_err(|source| Error::Serve { addr, source })
}
