//! Kubernetes mode of the gateway: `switchyard gateway --kubernetes --fleet NAME`.
//!
//! The config is read through the API (the fleet's config Secrets, with the pod's ServiceAccount:
//! `switchyard_config::source::Secrets`), not through a mounted volume, so a new generation is
//! served within a watch round trip. `/readyz` answers 503 until the first complete generation is
//! in. The last good config keeps serving when the API server is away; the pod reports the
//! generation it runs by annotating itself (POD_NAME / POD_NAMESPACE from the downward API).

use std::sync::Arc;

use anyhow::Context;
use switchyard_config::source::Secrets;
use switchyard_gateway::Gateway;

/// A gateway waiting for fleet `fleet`'s config, and the fleet's shards to follow.
pub async fn start(fleet: String, namespace: Option<String>) -> anyhow::Result<(Arc<Gateway>, Secrets)> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster config or KUBECONFIG)")?;
    let namespace = namespace
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let pod = std::env::var("POD_NAME").ok();
    let gw = Gateway::waiting().context("starting the gateway")?;
    tracing::info!(%fleet, %namespace, "waiting for the fleet's config");
    Ok((gw, Secrets::new(client, namespace, fleet, pod)))
}
