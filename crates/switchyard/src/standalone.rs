//! Standalone mode: manifests from a folder, compiled in process, reloaded when files change.
//!
//! A reload that fails to load (YAML errors, unknown fields, CEL rules) is refused and the last
//! good config keeps serving; resources with reference errors are left out and logged, like the
//! operator does. Requests in flight keep the config they started with.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use notify::{RecursiveMode, Watcher};
use switchyard_config::{compile, CompileOptions, FailMode, GatewayConfig, Manifests, RedisConfig, SecretString};
use switchyard_gateway::telemetry::Tracing;
use switchyard_gateway::{Gateway, Shutdown};

/// `--redis URL` and `--redis-fail-mode`: shared state named on the command line, over the
/// LLMGateway's `spec.redis`.
#[derive(Clone, Debug, Default)]
pub struct RedisFlags {
    pub url: Option<String>,
    pub fail_mode: Option<FailMode>,
}

impl RedisFlags {
    fn apply(&self, config: &mut GatewayConfig) {
        if let Some(url) = &self.url {
            let fail_mode = config.settings.redis.as_ref().map(|r| r.fail_mode).unwrap_or_default();
            config.settings.redis = Some(RedisConfig {
                url: SecretString::new(url.clone()),
                cluster: false,
                fail_mode,
            });
        }
        if let (Some(mode), Some(r)) = (self.fail_mode, config.settings.redis.as_mut()) {
            r.fail_mode = mode;
        }
    }
}

/// Loads and compiles; `Err` carries the load errors that make the folder invalid.
fn load(dir: &Path, redis: &RedisFlags) -> Result<GatewayConfig, Vec<String>> {
    let (manifests, errors) = Manifests::load_dir(dir, &|v| std::env::var(v).ok());
    if !errors.is_empty() {
        return Err(errors.iter().map(ToString::to_string).collect());
    }
    let compiled = compile(&manifests, &CompileOptions::default());
    for d in &compiled.diagnostics {
        tracing::warn!(diagnostic = %d, "config problem");
    }
    let mut config = compiled.config;
    redis.apply(&mut config);
    Ok(config)
}

pub async fn run(
    dir: PathBuf,
    listen: SocketAddr,
    metrics_addr: SocketAddr,
    shutdown: Shutdown,
    redis: RedisFlags,
    traces: Option<Tracing>,
) -> anyhow::Result<()> {
    let config = load(&dir, &redis).map_err(|errors| {
        for e in &errors {
            eprintln!("{e}");
        }
        anyhow::anyhow!("{} error(s) in {}", errors.len(), dir.display())
    })?;
    tracing::info!(
        routes = config.routes.len(),
        keys = config.keys.len(),
        hash = %&config.hash()[..12],
        "config loaded"
    );
    let gw = Gateway::new(config, 1).context("starting the gateway")?;
    if let Some(t) = traces {
        gw.enable_tracing(t);
    }

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok_and(|e| !e.kind.is_access()) {
            let _ = tx.send(());
        }
    })
    .context("watching the config folder")?;
    watcher
        .watch(&dir, RecursiveMode::Recursive)
        .with_context(|| format!("watching {}", dir.display()))?;
    let reload_gw = gw.clone();
    let reload_dir = dir.clone();
    tokio::spawn(async move {
        let _watcher = watcher;
        let mut generation = 1u64;
        while rx.recv().await.is_some() {
            // Editors write in several steps: wait for the burst to settle.
            tokio::time::sleep(Duration::from_millis(150)).await;
            while rx.try_recv().is_ok() {}
            // Reading and compiling a large folder takes a second or more (10,000 keys: ~0.9 s):
            // on a request worker it stalled every request for that long, and at the same
            // priority it still took CPU from them (bench/results).
            let (gw, dir, flags) = (reload_gw.clone(), reload_dir.clone(), redis.clone());
            let mut next = generation;
            generation = switchyard_gateway::background::off_request_path("config-reload", move || {
                reload(&gw, &dir, &flags, &mut next);
                next
            })
            .await
            .unwrap_or(generation);
        }
    });

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let admin = crate::bind_metrics(metrics_addr).await?;
    tracing::info!(%listen, "serving");
    switchyard_gateway::serve(listener, admin, gw.clone(), shutdown_signal(), shutdown).await?;
    // Spend still being settled, and spend queued while Redis was unreachable, is written now.
    gw.flush(Duration::from_secs(5)).await;
    tracing::info!("stopped");
    Ok(())
}

fn reload(gw: &Arc<Gateway>, dir: &Path, redis: &RedisFlags, generation: &mut u64) {
    match load(dir, redis) {
        Ok(config) => {
            let hash = config.hash();
            if hash == gw.runtime().hash {
                return;
            }
            *generation += 1;
            tracing::info!(generation = *generation, hash = %&hash[..12], routes = config.routes.len(), "config reloaded");
            let retired = gw.swap(config, *generation);
            if !retired.wait(switchyard_gateway::background::RETIRE_WAIT) {
                tracing::debug!("a long request still holds the previous config; it is freed when that ends");
            }
        }
        Err(errors) => {
            gw.reload_failed();
            for e in &errors {
                tracing::error!(error = %e, "config refused; the previous config keeps serving");
            }
        }
    }
}

pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutting down: readiness off, letting requests in flight finish");
}
