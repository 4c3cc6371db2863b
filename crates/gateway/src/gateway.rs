//! One gateway process: the running config, swapped atomically, and the handles the request
//! path uses: routing (upstream client, OAuth tokens, cooldowns, meters), limits (the shared
//! state, the clock, alerts), metrics and traces.
//!
//! It builds those handles and hands each part of the pipeline the one it needs; no part of the
//! pipeline reads the whole gateway except the HTTP handlers (`proxy`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use switchyard_config::GatewayConfig;

use crate::alerts::Alerts;
use crate::budget::{BudgetGauges, Clock};
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::route::{HttpDispatch, Routing};
use crate::runtime::Runtime;
use crate::state::{self, SharedCooldowns, SharedState, Slot};
use crate::{background, telemetry, tokens, upstream_client};

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
}

/// One gateway process.
pub struct Gateway {
    runtime: ArcSwap<Runtime>,
    /// Backend choice, attempts and upstream calls.
    pub(crate) routing: Routing,
    /// Key limits and budgets.
    pub(crate) limits: Arc<Limits>,
    /// Provider calls, for pass-through (routing calls through the same client).
    pub(crate) upstream: Arc<upstream_client::UpstreamClient>,
    /// Metrics.
    pub metrics: Metrics,
    loaded: AtomicBool,
    draining: AtomicBool,
    /// Limits, budgets, spend, marks and the response cache: memory or Redis, chosen once, from
    /// the first config (generation 0 is "no config yet").
    state: Arc<Slot>,
    /// Cooldowns in memory, or in Redis once the shared state is chosen.
    cooldowns: Arc<SharedCooldowns>,
    pub(crate) clock: Clock,
    pub(crate) budgets: Arc<BudgetGauges>,
    /// Traces, when an OTLP endpoint is configured; set once at start-up.
    tracing: std::sync::OnceLock<telemetry::Tracing>,
    /// Audio calls (`crate::audio`), whose bodies stream both ways; OAuth token requests.
    pub(crate) audio_client: reqwest::Client,
    /// OAuth access tokens (Vertex AI), one cache for routing and pass-through.
    pub(crate) tokens: Arc<tokens::Tokens>,
}

/// The HTTP client for token endpoints, alert webhooks, and provider calls that go through a
/// proxy.
pub(crate) fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        // Never follow a redirect: reqwest keeps custom headers (x-api-key, api-key,
        // x-goog-api-key) on a cross-host redirect, which would hand a provider's key to
        // whatever host the upstream names. A 3xx is the upstream's answer, mapped like any error.
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .build()
}

impl Gateway {
    /// A gateway serving `config`.
    pub fn new(config: GatewayConfig, generation: u64) -> Result<Arc<Self>, Error> {
        let hash = config.hash();
        Self::with_hash(config, hash, generation)
    }

    /// [`Gateway::new`] serving a config whose [`GatewayConfig::hash`] is known (the config
    /// source's first update carries it).
    pub fn with_hash(config: GatewayConfig, hash: String, generation: u64) -> Result<Arc<Self>, Error> {
        let client = http_client()?;
        let upstream = Arc::new(upstream_client::UpstreamClient::new(client.clone())?);
        let metrics = Metrics::new()?;
        metrics.config_generation.set(generation as i64);
        let state = Arc::new(Slot::default());
        let cooldowns = SharedCooldowns::new();
        if generation > 0 {
            choose_state(&state, &cooldowns, &config);
        }
        let clock = Clock::from_env();
        let budgets = Arc::new(BudgetGauges::default());
        let alerts = Arc::new(Alerts::new(client.clone(), clock, budgets.clone(), metrics.clone()));
        let audio_client = client.clone();
        let tokens = Arc::new(tokens::Tokens::default());
        let dispatch = HttpDispatch::new(client, upstream.clone(), tokens.clone());
        let runtime = Runtime::with_hash(config, hash, generation);
        let routing = Routing::new(Arc::new(dispatch), cooldowns.clone(), metrics.clone()).with_state(state.clone());
        let _none = routing.prepare(&runtime);
        Ok(Arc::new(Self {
            runtime: ArcSwap::from_pointee(runtime),
            routing,
            limits: Arc::new(Limits::new(state.clone(), clock, alerts, metrics.clone())),
            upstream,
            metrics,
            loaded: AtomicBool::new(true),
            draining: AtomicBool::new(false),
            state,
            cooldowns,
            clock,
            budgets,
            tracing: std::sync::OnceLock::new(),
            audio_client,
            tokens,
        }))
    }

    /// The shared state (limits, budgets, spend, marks such as cooldowns, the cache).
    pub fn state(&self) -> &Arc<dyn SharedState> {
        self.state.get()
    }

    /// Waits for spend still being settled and writes queued spend to the shared store, at
    /// most `limit`. Call after the server stopped, before the process exits.
    pub async fn flush(&self, limit: Duration) {
        self.limits.settled(limit).await;
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
        let hash = config.hash();
        self.swap_hashed(config, hash, generation)
    }

    /// [`Gateway::swap`] of a config whose [`GatewayConfig::hash`] is known (a config source's
    /// update carries it): hashing 10,000 keys again is a second serialisation of the config.
    pub fn swap_hashed(&self, config: GatewayConfig, hash: String, generation: u64) -> background::Retired {
        // Shared state is chosen once: by the first config, or kept with a warning.
        if !self.state.is_chosen() {
            choose_state(&self.state, &self.cooldowns, &config);
        } else if config.settings.redis.as_ref() != self.runtime().config.settings.redis.as_ref() {
            tracing::warn!("the fleet's Redis settings changed; they apply when the gateway restarts");
        }
        let new = Arc::new(Runtime::with_hash(config, hash, generation));
        // The new config's balancing state is built before any request can see that config:
        // built after, a request on it would build it itself or wait, on a request worker, for
        // this (lower priority) thread to finish it, a step in latency at every reload. Until
        // the swap, requests keep finding the old config's state as the previous one.
        let balances = self.routing.prepare(&new);
        let old = self.runtime.swap(new);
        self.metrics.config_generation.set(generation as i64);
        self.loaded.store(true, Ordering::Release);
        background::Retired(old, balances)
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

    /// Whether the gateway has a config and is not draining.
    /// Ready: a config loaded, the tokenizer loaded (else the first requests would wait a second
    /// for it) and not draining.
    pub(crate) fn ready(&self) -> bool {
        self.loaded.load(Ordering::Acquire) && crate::estimate::warmed() && !self.draining.load(Ordering::Acquire)
    }
}

/// Chooses the shared state for a fleet's settings; backend cooldowns follow it into Redis.
fn choose_state(slot: &Slot, cooldowns: &SharedCooldowns, config: &GatewayConfig) {
    let (shared, redis) = state::from_settings(config.settings.redis.as_ref());
    if let Some(r) = redis {
        cooldowns.use_redis(r);
    }
    slot.choose(shared);
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

    /// A swap builds the new config's balancing state on the swapping thread (the config
    /// thread), so no request worker builds it; requests still on the replaced config keep its
    /// state, and the state before that is handed back to be freed there.
    #[tokio::test]
    async fn a_swap_builds_the_balancing_state_off_the_request_path() {
        let config = |n: u32| GatewayConfig {
            version: switchyard_config::SCHEMA_VERSION,
            settings: switchyard_config::Settings {
                max_request_bytes: 1_000_000 + u64::from(n),
                ..Default::default()
            },
            ..GatewayConfig::default()
        };
        let gw = Gateway::new(config(1), 1).unwrap();
        let first = gw.runtime().id;
        assert_eq!(gw.routing.built_for(), (first, 0), "built with the first config");
        let retired = gw.swap(config(2), 2);
        let second = gw.runtime().id;
        assert_eq!(
            gw.routing.built_for(),
            (second, first),
            "built at the swap, the first kept"
        );
        assert!(
            retired.1.as_ref().is_some_and(|b| b.runtime() == 0),
            "the empty start state handed back"
        );
        assert!(retired.wait(std::time::Duration::from_secs(1)));
        let retired = gw.swap(config(3), 3);
        assert!(
            retired.1.as_ref().is_some_and(|b| b.runtime() == first),
            "the first config's state handed back"
        );
        assert!(retired.wait(std::time::Duration::from_secs(1)));
    }

    /// No request sees a config before its balancing state is built: built after the swap, a
    /// request arriving meanwhile built it on a request worker or waited for the config thread,
    /// a latency step at every reload. A reader races the swaps of a 1,000-route config.
    #[test]
    fn a_config_is_visible_only_once_its_balancing_state_is_built() {
        use crate::route::testing::{backend, config, route_config};
        let big = |n: u32| {
            let mut c = config(
                (0..1_000)
                    .map(|i| route_config(&format!("m{i}"), vec![backend("a", "x", 1, 0), backend("b", "x", 1, 0)]))
                    .collect(),
            );
            c.settings.max_request_bytes = 1_000_000 + u64::from(n);
            c
        };
        let gw = Arc::new(Gateway::new(big(0), 1).unwrap());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (gw, stop) = (gw.clone(), stop.clone());
            std::thread::spawn(move || {
                let (mut seen, mut early) = (0u32, 0u32);
                while !stop.load(Ordering::Relaxed) {
                    let rt = gw.runtime();
                    seen += 1;
                    if gw.routing.built_for().0 < rt.id {
                        early += 1;
                    }
                }
                (seen, early)
            })
        };
        for n in 1..=20 {
            let retired = gw.swap(big(n), u64::from(n) + 1);
            assert!(retired.wait(std::time::Duration::from_secs(5)));
        }
        stop.store(true, Ordering::Relaxed);
        let (seen, early) = reader.join().unwrap();
        assert!(seen > 0);
        assert_eq!(
            early, 0,
            "requests saw a config whose balancing state was not built yet"
        );
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
        let client = http_client().unwrap();
        let resp = client
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
