//! The data plane: an axum server that authenticates virtual keys, routes a request to a
//! backend, translates it for the provider, forwards the response (streams chunk by chunk) and
//! accounts for usage.
//!
//! It reads only `GatewayConfig` (swapped atomically through `arc_swap`) and knows nothing of
//! Kubernetes. Wire formats live in `switchyard-providers`; this crate does the I/O.

mod account;
mod alerts;
pub mod background;
pub mod budget;
mod cache;
mod endpoints;
mod error;
mod ingress;
pub mod limits;
pub mod metrics;
mod mock;
mod pipeline;
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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::routing::get;
use axum::Router;
use switchyard_config::GatewayConfig;

pub use error::GatewayError;
pub use metrics::Metrics;
pub use runtime::Runtime;

/// Errors starting the gateway.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Client(#[from] reqwest::Error),
    /// The TLS settings of the upstream client could not be built.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// The OTLP trace exporter could not be built (a malformed endpoint, say).
    #[error("OTLP trace exporter: {0}")]
    Tracing(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// One gateway process.
pub struct Gateway {
    runtime: ArcSwap<Runtime>,
    /// Token endpoints, alert webhooks, and provider calls that go through a proxy.
    client: reqwest::Client,
    /// Provider calls.
    upstream: upstream_client::UpstreamClient,
    tokens: tokens::Tokens,
    /// Cooldowns and meters of backends, kept across config swaps.
    pub(crate) resilience: route::Resilience,
    /// Metrics.
    pub metrics: Metrics,
    loaded: AtomicBool,
    draining: AtomicBool,
    /// Limits, budgets, spend, marks and the response cache: memory or Redis, chosen once, from
    /// the first config (generation 0 is "no config yet").
    state: std::sync::OnceLock<Arc<dyn state::SharedState>>,
    clock: budget::Clock,
    alerts: alerts::Alerts,
    budgets: budget::BudgetGauges,
    settling: limits::Settling,
    cooldowns: Arc<state::SharedCooldowns>,
    /// Traces, when an OTLP endpoint is configured; set once at start-up.
    tracing: std::sync::OnceLock<telemetry::Tracing>,
}

impl Gateway {
    /// A gateway serving `config`.
    pub fn new(config: GatewayConfig, generation: u64) -> Result<Arc<Self>, Error> {
        let client = reqwest::Client::builder()
            // Never follow a redirect: reqwest keeps custom headers (x-api-key, api-key,
            // x-goog-api-key) on a cross-host redirect, which would hand a provider's key to
            // whatever host the upstream names. A 3xx is the upstream's answer, mapped like any error.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .tcp_nodelay(true)
            .build()?;
        let upstream = upstream_client::UpstreamClient::new(client.clone())?;
        let metrics = Metrics::new()?;
        metrics.config_generation.set(generation as i64);
        let state = std::sync::OnceLock::new();
        let cooldowns = state::SharedCooldowns::new();
        if generation > 0 {
            let (shared, redis) = state::from_settings(config.settings.redis.as_ref());
            if let Some(r) = redis {
                cooldowns.use_redis(r);
            }
            let _ = state.set(shared);
        }
        Ok(Arc::new(Self {
            runtime: ArcSwap::from_pointee(Runtime::new(config, generation)),
            client,
            upstream,
            tokens: tokens::Tokens::default(),
            // Cooldowns in memory, or in Redis once the shared state is chosen.
            resilience: route::Resilience {
                cooldowns: cooldowns.clone(),
                meters: route::Meters::default(),
            },
            metrics,
            loaded: AtomicBool::new(true),
            draining: AtomicBool::new(false),
            state,
            clock: budget::Clock::from_env(),
            alerts: alerts::Alerts::default(),
            budgets: budget::BudgetGauges::default(),
            settling: limits::Settling::default(),
            cooldowns,
            tracing: std::sync::OnceLock::new(),
        }))
    }

    /// The shared state (limits, budgets, spend, marks such as cooldowns, the cache).
    pub fn state(&self) -> &Arc<dyn state::SharedState> {
        self.state.get_or_init(|| Arc::new(state::Memory::new()))
    }

    /// Waits for spend still being settled and writes queued spend to the shared store, at
    /// most `limit`. Call after the server stopped, before the process exits.
    pub async fn flush(&self, limit: Duration) {
        self.settling.wait(limit).await;
        let _ = tokio::time::timeout(limit, self.state().flush()).await;
    }

    /// A gateway that has no config yet: `/readyz` answers 503 until the first [`Gateway::swap`]
    /// (Kubernetes mode, while the first complete config generation is awaited).
    pub fn waiting() -> Result<Arc<Self>, Error> {
        let gw = Self::new(
            GatewayConfig {
                version: switchyard_config::SCHEMA_VERSION,
                ..GatewayConfig::default()
            },
            0,
        )?;
        gw.loaded.store(false, Ordering::Release);
        Ok(gw)
    }

    /// Swaps in a new config. Requests in flight finish on the config they started with; the
    /// replaced one is returned, to be dropped off the request path ([`background::Retired`]).
    pub fn swap(&self, config: GatewayConfig, generation: u64) -> background::Retired {
        // Shared state is chosen once: by the first config, or kept with a warning.
        let redis = config.settings.redis.as_ref();
        if self.state.get().is_none() {
            let (shared, redis) = state::from_settings(redis);
            if let Some(r) = redis {
                self.cooldowns.use_redis(r);
            }
            let _ = self.state.set(shared);
        } else if redis != self.runtime().config.settings.redis.as_ref() {
            tracing::warn!("the fleet's Redis settings changed; they apply when the gateway restarts");
        }
        let old = self.runtime.swap(Arc::new(Runtime::new(config, generation)));
        self.metrics.config_generation.set(generation as i64);
        self.loaded.store(true, Ordering::Release);
        background::Retired(old)
    }

    /// Sends traces of every request from now on (once; later calls are ignored).
    pub fn enable_tracing(&self, tracing: telemetry::Tracing) {
        let _ = self.tracing.set(tracing);
    }

    /// Traces, when on.
    pub(crate) fn tracing(&self) -> Option<&telemetry::Tracing> {
        self.tracing.get()
    }

    /// Counts a refused reload.
    pub fn reload_failed(&self) {
        self.metrics.reload_failures.inc();
    }

    /// The running config.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Stops reporting ready (SIGTERM): load balancers stop sending, in-flight requests finish.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Release);
    }

    fn ready(&self) -> bool {
        self.loaded.load(Ordering::Acquire) && !self.draining.load(Ordering::Acquire)
    }
}

/// The HTTP routes. An LLM endpoint is an operation in a client format (`ingress`): a third
/// format is one codec and its route lines here.
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
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(endpoints::readyz))
        .route("/metrics", get(endpoints::metrics))
        .fallback(endpoints::not_found)
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use axum::routing::any;
    use axum::Router;

    use super::*;

    async fn listen(app: Router) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    /// A provider's key must never follow a redirect to another host.
    #[tokio::test]
    async fn the_upstream_client_follows_no_redirect() {
        let hits = Arc::new(AtomicUsize::new(0));
        let seen = hits.clone();
        let elsewhere = listen(Router::new().fallback(any(move || {
            seen.fetch_add(1, Ordering::Relaxed);
            async { "stolen" }
        })))
        .await;
        let upstream = listen(Router::new().fallback(any(move || async move {
            (
                http::StatusCode::TEMPORARY_REDIRECT,
                [(
                    http::header::LOCATION,
                    format!("http://{elsewhere}/v1/chat/completions"),
                )],
            )
        })))
        .await;
        let gw = Gateway::new(GatewayConfig::default(), 1).unwrap();
        let resp = gw
            .client
            .post(format!("http://{upstream}/v1/chat/completions"))
            .header("x-api-key", "sk-provider")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), http::StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(hits.load(Ordering::Relaxed), 0);
    }
}
