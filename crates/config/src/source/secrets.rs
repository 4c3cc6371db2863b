//! [`Secrets`]: Kubernetes mode's config source. The fleet's config shard Secrets, watched
//! through the API with the pod's ServiceAccount (not a mounted volume, so a new generation is
//! served within a watch round trip), assembled once a generation is complete; the pod reports
//! the generation it serves by annotating itself.
//!
//! A plain watch of Secrets by label, not a controller: nothing here reconciles anything.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::ResourceExt;

use super::shards::{assemble_config, shard_selector, CONFIG_GENERATION, GATEWAY_MANAGER};
use super::{ConfigSource, Refused, Update};

/// The config shards of one fleet.
pub struct Secrets {
    client: kube::Client,
    namespace: String,
    fleet: String,
    /// This pod, to annotate with the generation it serves (`None` outside a pod).
    pod: Option<String>,
    events: BoxStream<'static, Result<Event<Secret>, watcher::Error>>,
    /// Shards by name.
    shards: BTreeMap<String, Arc<Secret>>,
    /// During a re-list, the shards listed so far; the previous view is kept until it is done.
    relist: Option<BTreeMap<String, Arc<Secret>>>,
}

impl Secrets {
    /// The shards of fleet `fleet` in `namespace`. The watch reconnects with backoff when the
    /// API server goes away.
    pub fn new(client: kube::Client, namespace: String, fleet: String, pod: Option<String>) -> Self {
        let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
        let events = watcher::watcher(api, watcher::Config::default().labels(&shard_selector(&fleet)))
            .default_backoff()
            .fuse()
            .boxed();
        Secrets {
            client,
            namespace,
            fleet,
            pod,
            events,
            shards: BTreeMap::new(),
            relist: None,
        }
    }

    /// Annotates pod `pod` with the configuration generation it runs, for the operator's
    /// `Programmed` condition.
    pub async fn report(client: kube::Client, namespace: &str, pod: &str, generation: u64) -> Result<(), kube::Error> {
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

    /// Applies one watch event; true when the view of the shards changed.
    fn apply(&mut self, event: Result<Event<Secret>, watcher::Error>) -> bool {
        match event {
            Err(e) => {
                tracing::warn!(error = %e, namespace = %self.namespace, fleet = %self.fleet, "watching config shards (retrying)");
                false
            }
            Ok(Event::Init) => {
                self.relist = Some(BTreeMap::new());
                false
            }
            Ok(Event::InitApply(s)) => {
                self.relist
                    .get_or_insert_with(BTreeMap::new)
                    .insert(s.name_any(), Arc::new(s));
                false
            }
            Ok(Event::InitDone) => {
                if let Some(fresh) = self.relist.take() {
                    self.shards = fresh;
                }
                true
            }
            Ok(Event::Apply(s)) => {
                self.shards.insert(s.name_any(), Arc::new(s));
                true
            }
            Ok(Event::Delete(s)) => {
                self.shards.remove(&s.name_any());
                true
            }
        }
    }
}

impl ConfigSource for Secrets {
    type Snapshot = Vec<Arc<Secret>>;

    async fn changed(&mut self) -> Option<Vec<Arc<Secret>>> {
        loop {
            let event = self.events.next().await?;
            if self.apply(event) {
                break;
            }
        }
        // Events already here (the rest of a generation being written): one read for all.
        while let Some(Some(event)) = self.events.next().now_or_never() {
            self.apply(event);
        }
        tracing::debug!(shards = self.shards.len(), "config shards changed");
        Some(self.shards.values().cloned().collect())
    }

    fn load(shards: Vec<Arc<Secret>>) -> Result<Option<Update>, Refused> {
        let assembled = assemble_config(shards.iter().map(|s| &**s))?;
        Ok(assembled.map(|a| Update {
            config: a.config,
            hash: a.hash,
            generation: Some(a.generation),
        }))
    }

    fn served(&self, generation: u64) -> impl std::future::Future<Output = ()> + Send {
        // Not borrowing `self`: its watch stream is not `Sync`.
        let (client, namespace, pod) = (self.client.clone(), self.namespace.clone(), self.pod.clone());
        async move {
            if let Some(pod) = pod {
                if let Err(e) = Self::report(client, &namespace, &pod, generation).await {
                    tracing::warn!(error = %e, "could not report the running generation on the pod");
                }
            }
        }
    }
}
