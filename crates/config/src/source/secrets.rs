//! [`Secrets`]: Kubernetes mode's config source. The fleet's config shard Secrets, watched
//! through the API with the pod's ServiceAccount (not a mounted volume, so a new generation is
//! served within a watch round trip), assembled once a generation is complete; the pod reports
//! the generation it serves by annotating itself.
//!
//! Each shard is watched by name (a `metadata.name` field selector), never by label: the
//! fleet's Role grants `get`/`list`/`watch` on its own shard names only (`resourceNames`), so a
//! namespace-wide list would be refused, and the pods cannot read other Secrets. Shard 0, the
//! index, is always watched; the parts it announces say which other names (`<fleet>-config-1..`)
//! to watch. The operator widens the Role before it writes a generation with more shards. An
//! edit rewrites one part and the index: two watch events, one reload.
//!
//! Plain watches, not a controller: nothing here reconciles anything.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;

use super::shards::{assemble_config_cached, shard_count, shard_name, PartCache, CONFIG_GENERATION, GATEWAY_MANAGER};
use super::{ConfigSource, Refused, Update, WatchBackoff};

/// One event of a shard watch.
type WatchEvent = Result<Event<Secret>, watcher::Error>;
type Events = BoxStream<'static, WatchEvent>;

/// The watch of one shard name.
struct Watch {
    events: Events,
    /// The shard, when it exists.
    shard: Option<Arc<Secret>>,
    /// During a re-list, what it found so far; the previous view is kept until it is done.
    relist: Option<Option<Arc<Secret>>>,
}

impl Watch {
    /// Applies one event; true when the view of the shard changed.
    fn apply(&mut self, event: WatchEvent, name: &str) -> bool {
        match event {
            Err(e) => {
                tracing::warn!(error = %e, shard = %name, "watching config shard (retrying)");
                false
            }
            Ok(Event::Init) => {
                self.relist = Some(None);
                false
            }
            Ok(Event::InitApply(s)) => {
                self.relist = Some(Some(Arc::new(s)));
                false
            }
            Ok(Event::InitDone) => {
                if let Some(fresh) = self.relist.take() {
                    self.shard = fresh;
                }
                true
            }
            Ok(Event::Apply(s)) => {
                self.shard = Some(Arc::new(s));
                true
            }
            Ok(Event::Delete(_)) => {
                self.shard = None;
                true
            }
        }
    }
}

/// The config shards of one fleet.
pub struct Secrets {
    client: kube::Client,
    namespace: String,
    fleet: String,
    /// This pod, to annotate with the generation it serves (`None` outside a pod).
    pod: Option<String>,
    /// One watch per shard index: 0 (the index), and `1..count` for the parts it announces.
    watches: BTreeMap<usize, Watch>,
    /// The parts of the last generation read, parsed: the next reads only the parts that changed.
    parts: Arc<Mutex<PartCache>>,
}

impl Secrets {
    /// The shards of fleet `fleet` in `namespace`. The watches reconnect with a backoff capped
    /// at a second ([`WatchBackoff`]) when the API server goes away.
    pub fn new(client: kube::Client, namespace: String, fleet: String, pod: Option<String>) -> Self {
        let mut secrets = Secrets {
            client,
            namespace,
            fleet,
            pod,
            watches: BTreeMap::new(),
            parts: Arc::default(),
        };
        secrets.watch(0);
        secrets
    }

    fn watch(&mut self, index: usize) {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let name = shard_name(&self.fleet, index);
        let events = watcher::watcher(api, watcher::Config::default().fields(&format!("metadata.name={name}")))
            .backoff(WatchBackoff::default())
            .fuse()
            .boxed();
        self.watches.insert(
            index,
            Watch {
                events,
                shard: None,
                relist: None,
            },
        );
    }

    /// Watches exactly the shard names the index announces; true when a watched shard was dropped.
    fn fit_watches(&mut self) -> bool {
        let count = self
            .watches
            .get(&0)
            .and_then(|w| w.shard.as_deref())
            .and_then(shard_count)
            .unwrap_or(1)
            .max(1);
        let dropped = self.watches.split_off(&count);
        for index in 1..count {
            if !self.watches.contains_key(&index) {
                self.watch(index);
            }
        }
        dropped.values().any(|w| w.shard.is_some())
    }

    /// The next event of any watch, with the shard index it is for.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<(usize, WatchEvent)>> {
        let mut open = false;
        for (index, w) in &mut self.watches {
            match w.events.poll_next_unpin(cx) {
                Poll::Ready(Some(event)) => return Poll::Ready(Some((*index, event))),
                Poll::Ready(None) => {}
                Poll::Pending => open = true,
            }
        }
        if open {
            Poll::Pending
        } else {
            Poll::Ready(None)
        }
    }

    /// Applies one watch event; true when the view of the shards changed.
    fn apply(&mut self, index: usize, event: WatchEvent) -> bool {
        let name = shard_name(&self.fleet, index);
        let changed = self.watches.get_mut(&index).is_some_and(|w| w.apply(event, &name));
        // A new index may announce another count: watch the names it needs.
        let dropped = index == 0 && changed && self.fit_watches();
        changed || dropped
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
}

impl ConfigSource for Secrets {
    type Snapshot = (Vec<Arc<Secret>>, Arc<Mutex<PartCache>>);

    async fn changed(&mut self) -> Option<Self::Snapshot> {
        loop {
            let (index, event) = futures::future::poll_fn(|cx| self.poll_next(cx)).await?;
            if self.apply(index, event) {
                break;
            }
        }
        // Events already here (the rest of a generation being written): one read for all.
        while let Some(Some((index, event))) = futures::future::poll_fn(|cx| self.poll_next(cx)).now_or_never() {
            self.apply(index, event);
        }
        let shards: Vec<Arc<Secret>> = self.watches.values().filter_map(|w| w.shard.clone()).collect();
        tracing::debug!(shards = shards.len(), "config shards changed");
        Some((shards, self.parts.clone()))
    }

    fn load((shards, parts): Self::Snapshot) -> Result<Option<Update>, Refused> {
        let mut parts = parts.lock().unwrap_or_else(|p| p.into_inner());
        let assembled = assemble_config_cached(shards.iter().map(|s| &**s), &mut parts)?;
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
