//! The data plane: an axum server that authenticates virtual keys, routes a request to a
//! backend, translates it for the provider, forwards the response (streams chunk by chunk) and
//! accounts for usage.
//!
//! It reads only `GatewayConfig` (swapped atomically through `arc_swap`) and knows nothing of
//! Kubernetes. Wire formats live in `switchyard-providers`; this crate does the I/O.
//!
//! Module map, in the order of a request; imports point down this list, never back up
//! (`scripts/module-cycles.sh` checks it). `pipeline` (with `ingress` codecs, `request`, `respond`,
//! `account` and `endpoints`; `passthrough` beside it for what the gateway does not model) runs the request path and is the only part that sees the whole [`Gateway`] (`gateway`: the process, which builds the
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
//! `audio` runs the audio endpoints' path beside `pipeline`, with the same stages and its own
//! I/O (multipart uploads and audio streamed through).
//! `files` serves OpenAI's Files and Batch APIs beside the pipeline, with its limits and accounts.

mod account;
mod alerts;
mod audio;
pub mod background;
pub mod budget;
mod cache;
#[cfg(test)]
mod edge_tests;
mod endpoints;
mod error;
mod estimate;
mod files;
mod gateway;
mod ingress;
pub mod limits;
pub mod metrics;
mod mock;
mod mock_extra;
mod o200k;
mod o200k_index;
mod passthrough;
mod pipeline;
pub mod reload;
pub mod request;
mod respond;
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

use axum::routing::get;
use axum::Router;

pub use error::GatewayError;
pub use gateway::{Error, Gateway};
pub use metrics::Metrics;
pub use runtime::Runtime;

/// The HTTP routes.
pub fn router(gw: Arc<Gateway>) -> Router {
    use ingress::{ANTHROPIC, OPENAI};
    use pipeline::endpoint;
    use switchyard_providers::Operation;
    Router::new()
        .route("/v1/chat/completions", endpoint(Operation::Chat, &OPENAI))
        .route("/v1/completions", endpoint(Operation::Completions, &OPENAI))
        .route("/v1/embeddings", endpoint(Operation::Embeddings, &OPENAI))
        .route("/v1/responses", endpoint(Operation::Responses, &OPENAI))
        .route("/v1/models", get(endpoints::models))
        .route("/v1/messages", endpoint(Operation::Chat, &ANTHROPIC))
        .route("/v1/moderations", endpoint(Operation::Moderations, &OPENAI))
        // Rerank in Cohere's shape: Cohere's SDKs call /v1/rerank (v1 client) or /v2/rerank.
        .route("/v1/rerank", endpoint(Operation::Rerank, &OPENAI))
        .route("/v2/rerank", endpoint(Operation::Rerank, &OPENAI))
        .route("/v1/images/generations", endpoint(Operation::Images, &OPENAI))
        .route("/v1/audio/transcriptions", audio::endpoint(Operation::Transcriptions))
        .route("/v1/audio/translations", audio::endpoint(Operation::Translations))
        .route("/v1/audio/speech", audio::endpoint(Operation::Speech))
        // LiteLLM serves the OpenAI endpoints without the `/v1` prefix too; clients moved over
        // from it keep their base URL.
        .route("/chat/completions", endpoint(Operation::Chat, &OPENAI))
        .route("/completions", endpoint(Operation::Completions, &OPENAI))
        .route("/embeddings", endpoint(Operation::Embeddings, &OPENAI))
        .route("/responses", endpoint(Operation::Responses, &OPENAI))
        .route("/moderations", endpoint(Operation::Moderations, &OPENAI))
        .route("/rerank", endpoint(Operation::Rerank, &OPENAI))
        .route("/images/generations", endpoint(Operation::Images, &OPENAI))
        .route("/audio/transcriptions", audio::endpoint(Operation::Transcriptions))
        .route("/audio/translations", audio::endpoint(Operation::Translations))
        .route("/audio/speech", audio::endpoint(Operation::Speech))
        .route("/models", get(endpoints::models))
        // What the gateway does not model, forwarded to a Provider as it is (docs/passthrough.md).
        .route("/passthrough/{*path}", passthrough::endpoint())
        // OpenAI's Files and Batch APIs, on OpenAI and Azure OpenAI backends.
        .merge(files::routes())
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(endpoints::readyz))
        .merge(litellm_health())
        .fallback(endpoints::not_found)
        .with_state(gw)
}

/// The operational routes, for a port clients do not reach: `/metrics` (route names, teams,
/// spend and budgets left are nobody's business on the client port), and `/healthz` and
/// `/readyz` as on the client port.
pub fn admin_router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/metrics", get(endpoints::metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(endpoints::readyz))
        .merge(litellm_health())
        .with_state(gw)
}

/// The health paths LiteLLM's users point their probes at: `/health` and
/// `/health/liveliness` (its spelling; `/health/liveness` too) answer like `/healthz`,
/// `/health/readiness` like `/readyz`. Unlike LiteLLM's `/health`, none of them calls an
/// upstream: a probe must not spend money or trip a provider's rate limit.
fn litellm_health() -> Router<Arc<Gateway>> {
    Router::new()
        .route("/health", get(endpoints::health))
        .route("/health/liveliness", get(endpoints::health))
        .route("/health/liveness", get(endpoints::health))
        .route("/health/readiness", get(endpoints::readyz))
}

/// What tells [`serve`] to stop: SIGTERM in the binary, a channel in tests.
pub type Signal = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// How the server stops.
#[derive(Clone, Copy, Debug)]
pub struct Shutdown {
    /// After the signal, how long readiness reports false while new connections are still
    /// accepted, so load balancers stop sending before the listener closes.
    pub drain_delay: Duration,
    /// Then, how long requests and streams in flight get to finish.
    pub grace: Duration,
}

/// Serves clients on `listener` and the [`admin_router`] on `admin` until `signal` resolves,
/// then drains (see [`Shutdown`]). The admin port keeps answering until the client port has
/// drained, so the last scrape sees the last requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    admin: tokio::net::TcpListener,
    gw: Arc<Gateway>,
    signal: Signal,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    spawn_server(listener, admin, gw, signal, shutdown)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

/// The server runs in a task spawned here, not in the caller's future: a future is compiled
/// where it is polled, so the server (the accept loop, hyper's connections, everything a request
/// runs) is compiled in this crate, with its optimisation, rather than in the binary's crate,
/// which the `release` profile optimises less (Cargo.toml). Not inlined into the caller for the
/// same reason.
#[inline(never)]
fn spawn_server(
    listener: tokio::net::TcpListener,
    admin: tokio::net::TcpListener,
    gw: Arc<Gateway>,
    signal: Signal,
    shutdown: Shutdown,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    tokio::spawn(async move {
        let admin = tokio::spawn(std::future::IntoFuture::into_future(axum::serve(
            admin,
            admin_router(gw.clone()),
        )));
        let served = serve_clients(listener, gw, signal, shutdown).await;
        admin.abort();
        served
    })
}

async fn serve_clients(
    listener: tokio::net::TcpListener,
    gw: Arc<Gateway>,
    signal: Signal,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let grace = shutdown.grace;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let drain_gw = gw.clone();
    let limits_gw = gw.clone();
    let limits = move || server::Limits::from_config(&limits_gw.runtime().config.settings.connections);
    let metrics = gw.metrics.clone();
    let app = router(gw);
    let mut server = tokio::spawn(server::run(listener, app, limits, metrics, async move {
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

#[cfg(test)]
mod tests {
    use switchyard_config::GatewayConfig;

    use super::*;

    /// Route names, teams, spend and budgets are for the operators' port only.
    #[tokio::test]
    async fn metrics_are_served_on_the_admin_port_and_not_to_clients() {
        let client = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (client_addr, admin_addr) = (client.local_addr().unwrap(), admin.local_addr().unwrap());
        let gw = Gateway::new(GatewayConfig::default(), 1).unwrap();
        // Ready once the tokenizer is loaded, as the binary does before it serves (other tests
        // in this process may or may not have loaded it already).
        crate::estimate::warm();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown = Shutdown {
            drain_delay: Duration::ZERO,
            grace: Duration::from_secs(5),
        };
        let server = tokio::spawn(serve(
            client,
            admin,
            gw,
            Box::pin(async move {
                let _ = stopped.await;
            }),
            shutdown,
        ));
        let http = reqwest::Client::new();

        let r = http.get(format!("http://{client_addr}/metrics")).send().await.unwrap();
        assert_eq!(r.status(), http::StatusCode::NOT_FOUND);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found", "{body}");
        for path in ["/healthz", "/readyz"] {
            let r = http.get(format!("http://{client_addr}{path}")).send().await.unwrap();
            assert_eq!(r.status(), http::StatusCode::OK, "{path} on the client port");
        }

        let r = http.get(format!("http://{admin_addr}/metrics")).send().await.unwrap();
        assert_eq!(r.status(), http::StatusCode::OK);
        let text = r.text().await.unwrap();
        assert!(text.contains("switchyard_config_generation 1"), "{text}");
        assert!(text.contains("switchyard_connections_open"), "{text}");
        for path in ["/healthz", "/readyz"] {
            let r = http.get(format!("http://{admin_addr}{path}")).send().await.unwrap();
            assert_eq!(r.status(), http::StatusCode::OK, "{path} on the admin port");
        }
        let r = http
            .post(format!("http://{admin_addr}/v1/chat/completions"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            http::StatusCode::NOT_FOUND,
            "the admin port serves no requests"
        );

        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
