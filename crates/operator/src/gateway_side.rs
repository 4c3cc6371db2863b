//! What a gateway pod does with the Kubernetes API: watch its fleet's config shards and report
//! the generation it runs. Kept here so the gateway crate never links kube-runtime.

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::ResourceExt;
use switchyard_config::GatewayConfig;
use tokio::sync::watch;

use crate::desired::assemble_config;
use crate::{Error, CONFIG_GENERATION, GATEWAY_MANAGER, LABEL_FLEET};

/// Watches the config shards of fleet `fleet` in `namespace` and sends `(config, generation)`
/// each time a newer complete, hash-verified generation is present. A partial, corrupt or
/// invalid generation is logged and skipped: the last good one stays. The watch reconnects with
/// backoff when the API server goes away. Returns when every receiver is gone.
pub async fn watch_fleet_config(
    client: kube::Client,
    namespace: String,
    fleet: String,
    tx: watch::Sender<Option<(GatewayConfig, u64)>>,
) -> Result<(), Error> {
    let api: Api<Secret> = Api::namespaced(client, &namespace);
    let selector = format!("{LABEL_FLEET}={fleet},{CONFIG_GENERATION}");
    let stream = watcher::watcher(api, watcher::Config::default().labels(&selector)).default_backoff();
    let mut stream = std::pin::pin!(stream);
    // Shards by name. During a re-list the previous view is kept until the list is complete.
    let mut shards: BTreeMap<String, Secret> = BTreeMap::new();
    let mut relist: Option<BTreeMap<String, Secret>> = None;
    let mut served: Option<(u64, String)> = None;
    while let Some(event) = stream.next().await {
        match event {
            Err(e) => {
                tracing::warn!(error = %e, %namespace, %fleet, "watching config shards (retrying)");
                continue;
            }
            Ok(Event::Init) => {
                relist = Some(BTreeMap::new());
                continue;
            }
            Ok(Event::InitApply(s)) => {
                relist.get_or_insert_with(BTreeMap::new).insert(s.name_any(), s);
                continue;
            }
            Ok(Event::InitDone) => {
                if let Some(fresh) = relist.take() {
                    shards = fresh;
                }
            }
            Ok(Event::Apply(s)) => {
                shards.insert(s.name_any(), s);
            }
            Ok(Event::Delete(s)) => {
                shards.remove(&s.name_any());
            }
        }
        if tx.is_closed() {
            return Ok(());
        }
        match assemble_config(shards.values()) {
            Ok(Some(a)) => {
                if served.as_ref() != Some(&(a.generation, a.hash.clone())) {
                    tracing::info!(generation = a.generation, hash = %a.hash, "config generation complete");
                    served = Some((a.generation, a.hash));
                    if tx.send(Some((a.config, a.generation))).is_err() {
                        return Ok(());
                    }
                }
            }
            Ok(None) => tracing::debug!(shards = shards.len(), "no complete config generation yet"),
            Err(e) => tracing::error!(error = %e, "refusing config; keeping the last good one"),
        }
    }
    Ok(())
}

/// Annotates the pod `pod` with the configuration generation it runs, for the operator's
/// `Programmed` condition.
pub async fn report_generation(client: kube::Client, namespace: &str, pod: &str, generation: u64) -> Result<(), Error> {
    let api: Api<Pod> = Api::namespaced(client, namespace);
    let patch = serde_json::json!({
        "metadata": { "annotations": { CONFIG_GENERATION: generation.to_string() } }
    });
    let pp = PatchParams {
        field_manager: Some(GATEWAY_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    api.patch(pod, &pp, &Patch::Merge(&patch)).await?;
    Ok(())
}
