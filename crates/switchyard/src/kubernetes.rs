//! Kubernetes mode of the gateway: `switchyard gateway --kubernetes --fleet NAME`.
//!
//! The config is read through the API (the fleet's config Secrets, with the pod's ServiceAccount),
//! not through a mounted volume, so a new generation is served within a watch round trip. The
//! last good config keeps serving when the API server is away; the pod reports the generation it
//! runs by annotating itself (POD_NAME / POD_NAMESPACE from the downward API).

use std::net::SocketAddr;

use anyhow::Context;
use switchyard_gateway::telemetry::Tracing;
use switchyard_gateway::{Gateway, Shutdown};

pub async fn run(
    fleet: String,
    namespace: Option<String>,
    listen: SocketAddr,
    metrics_addr: SocketAddr,
    shutdown: Shutdown,
    traces: Option<Tracing>,
) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster config or KUBECONFIG)")?;
    let namespace = namespace
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let pod = std::env::var("POD_NAME").ok();
    let gw = Gateway::waiting().context("starting the gateway")?;
    if let Some(t) = traces {
        gw.enable_tracing(t);
    }

    let (tx, mut rx) = tokio::sync::watch::channel(None);
    let watch_client = client.clone();
    let (watch_ns, watch_fleet) = (namespace.clone(), fleet.clone());
    tokio::spawn(async move {
        if let Err(e) = switchyard_operator::watch_fleet_config(watch_client, watch_ns, watch_fleet, tx).await {
            tracing::error!(error = %e, "config watch ended");
        }
    });
    let swap_gw = gw.clone();
    tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let Some((config, generation)) = rx.borrow_and_update().clone() else {
                continue;
            };
            tracing::info!(
                generation,
                routes = config.routes.len(),
                keys = config.keys.len(),
                "config generation loaded"
            );
            // Indexing a large config and freeing the old one: off the request workers.
            let gw = swap_gw.clone();
            switchyard_gateway::background::off_request_path("config-swap", move || {
                gw.swap(config, generation)
                    .wait(switchyard_gateway::background::RETIRE_WAIT)
            })
            .await;
            if let Some(pod) = &pod {
                if let Err(e) =
                    switchyard_operator::report_generation(client.clone(), &namespace, pod, generation).await
                {
                    tracing::warn!(error = %e, "could not report the running generation on the pod");
                }
            }
        }
    });

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let admin = crate::bind_metrics(metrics_addr).await?;
    tracing::info!(%listen, %fleet, "serving; waiting for the fleet's config");
    switchyard_gateway::serve(listener, admin, gw, crate::standalone::shutdown_signal(), shutdown).await?;
    Ok(())
}
