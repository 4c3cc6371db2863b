//! The data plane: an axum server that authenticates virtual keys, routes a request to a
//! backend, translates it for the provider, forwards the response (streams chunk by chunk) and
//! accounts for usage.
//!
//! It reads only `GatewayConfig` (swapped atomically through `arc_swap`) and knows nothing of
//! Kubernetes. Wire formats live in `switchyard-providers`; this crate does the I/O.
//!
//! Module map, in the order of a request; imports point down this list, never back up
//! (`scripts/module-cycles.sh` checks it). `proxy` (the HTTP handlers) runs the pipeline and is
//! the only module that sees the whole [`Gateway`] (`gateway`: the process, which builds the
//! handles below and swaps configs); every other module gets a narrow handle. `runtime` is the
//! config indexed for lookups (keys, routes, providers), pure. `limits` takes a key's limits and
//! budget reservation ([`limits::Limits`]: shared state + clock + `alerts`, which follow spend
//! and deliver webhooks, with `budget` periods and gauges). `cache` is the response cache.
//! `route` picks a backend and makes the attempts, one module per layer (fallback, retry,
//! candidates and `strategy`, hedge, attempt, deadline), through [`route::Routing`] (an upstream
//! client with OAuth `tokens`, cooldowns, meters); `upstream_client`, `urls` and `mock` are its
//! I/O. `estimate` sizes a request for `limits` and `route`. `state` is the shared state (memory
//! or Redis; cooldowns and circuits included); `telemetry` traces; `metrics` the Prometheus
//! registry; `error` the one error type clients see; `server` and `background` run the process.

mod alerts;
pub mod background;
pub mod budget;
mod cache;
mod error;
mod estimate;
mod gateway;
pub mod limits;
pub mod metrics;
mod mock;
mod proxy;
pub mod reload;
pub mod route;
pub mod runtime;
pub mod server;
pub mod state;
pub mod telemetry;
mod tokens;
mod upstream_client;
mod urls;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;

pub use error::GatewayError;
pub use gateway::{Error, Gateway};
pub use metrics::Metrics;
pub use runtime::Runtime;

/// The HTTP routes.
pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(proxy::chat_completions))
        .route("/v1/completions", post(proxy::completions))
        .route("/v1/embeddings", post(proxy::embeddings))
        .route("/v1/responses", post(proxy::responses))
        .route("/v1/models", get(proxy::models))
        .route("/v1/messages", post(proxy::messages))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(proxy::readyz))
        .route("/metrics", get(proxy::metrics))
        .fallback(proxy::not_found)
        .with_state(gw)
}

/// How the server stops.
#[derive(Clone, Copy, Debug)]
pub struct Shutdown {
    /// After the signal, how long readiness reports false while new connections are still
    /// accepted, so load balancers stop sending before the listener closes.
    pub drain_delay: Duration,
    /// Then, how long requests and streams in flight get to finish.
    pub grace: Duration,
}

/// Serves until `signal` resolves, then drains (see [`Shutdown`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    gw: Arc<Gateway>,
    signal: impl std::future::Future<Output = ()> + Send + 'static,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let grace = shutdown.grace;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let drain_gw = gw.clone();
    let app = router(gw);
    let mut server = tokio::spawn(server::run(listener, app, async move {
        signal.await;
        drain_gw.drain();
        tokio::time::sleep(shutdown.drain_delay).await;
        let _ = tx.send(());
    }));
    tokio::select! {
        res = &mut server => return res.unwrap_or_else(|e| Err(std::io::Error::other(e))),
        _ = rx => {}
    }
    match tokio::time::timeout(grace, &mut server).await {
        Ok(res) => res.unwrap_or_else(|e| Err(std::io::Error::other(e))),
        Err(_) => {
            tracing::warn!(
                grace_secs = grace.as_secs(),
                "grace period over; closing remaining connections"
            );
            server.abort();
            Ok(())
        }
    }
}
