//! The watch wiring: one watcher per kind feeds both a reflector store ([`Caches`], what the
//! reconciles read) and the triggers, mapped to the fleets they concern by the pure functions
//! of `fleet`. A reconcile never sees a store older than the change that triggered it.
//!
//! Only what a fleet compiles triggers it: status-only updates (the operator's own writes) are
//! dropped, and the caches keep no field the reconciles never read.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::Resource;
use switchyard_api::{LLMGateway, LLMRoute, Provider, TeamBudget, VirtualKey};
use switchyard_config::source::WatchBackoff;
use tokio::sync::{mpsc, watch};

use super::stopped;
use crate::fleet;
use crate::metrics::Metrics;
use crate::{Error, CONFIG_GENERATION, GATEWAY_APP, LABEL_FLEET, LABEL_NAME, LABEL_VIRTUAL_KEY};

/// What the reconciles read, each kept by one watch.
#[derive(Clone)]
pub(crate) struct Caches {
    pub(crate) gateways: Store<LLMGateway>,
    pub(crate) providers: Store<Provider>,
    pub(crate) routes: Store<LLMRoute>,
    pub(crate) keys: Store<VirtualKey>,
    /// Budgets over groups of keys.
    pub(crate) budgets: Store<TeamBudget>,
    /// Secrets that Providers, keys and LLMGateways read (no config shards).
    pub(crate) secrets: SecretCache,
    pub(crate) namespaces: Store<Namespace>,
    /// The fleets' pods.
    pub(crate) pods: Store<Pod>,
    /// The config shards as the operator last wrote them, so its own writes do not trigger
    /// another reconcile.
    pub(crate) own_shards: OwnShards,
    /// `true` once every store has listed once.
    pub(crate) synced: watch::Receiver<bool>,
}

impl Caches {
    /// Whether `namespace` is being deleted (as far as the cache knows). Nothing may be created
    /// in it any more, and everything in it is going away.
    pub(crate) fn terminating(&self, namespace: &str) -> bool {
        self.namespaces
            .get(&ObjectRef::new(namespace))
            .is_some_and(|n| n.metadata.deletion_timestamp.is_some())
    }

    /// Waits until every cache has listed once: compiling from a half-filled cache would
    /// publish a configuration missing routes.
    pub(crate) async fn synced(&self) -> Result<(), Error> {
        let mut rx = self.synced.clone();
        rx.wait_for(|synced| *synced)
            .await
            .map(|_| ())
            .map_err(|_| Error::StoreStopped("reflector"))
    }
}

/// Secrets read one by one, by (namespace, name).
type ReadSecrets = HashMap<(String, String), Arc<Secret>>;

/// The Secrets the fleets read, without caching the rest of the cluster's: the generated key
/// Secrets (label `switchyard.dev/virtual-key`, the operator's own) are watched whole; every
/// other Secret (but config shards, Helm releases and ServiceAccount tokens) is watched by its
/// metadata only, and the data of one is read from the API server (a targeted GET) only when a
/// Provider, VirtualKey or LLMGateway that a fleet compiles names it, read again when its
/// resourceVersion changes, and dropped when it goes. Credentials nobody names never enter the
/// operator's memory.
#[derive(Clone)]
pub(crate) struct SecretCache {
    pub(crate) generated: Store<Secret>,
    pub(crate) others: Store<PartialObjectMeta<Secret>>,
    /// Secrets read, by (namespace, name), as of the resourceVersion they carry.
    read: Arc<Mutex<ReadSecrets>>,
    client: Option<kube::Client>,
}

impl SecretCache {
    /// A cache over these stores, reading data with `client` (`None`: never reads).
    pub(crate) fn new(
        generated: Store<Secret>,
        others: Store<PartialObjectMeta<Secret>>,
        client: Option<kube::Client>,
    ) -> Self {
        Self {
            generated,
            others,
            read: Arc::default(),
            client,
        }
    }

    /// The Secret with its data, when it exists and its data was read (perhaps at an older
    /// version: [`SecretCache::unread`] says when to read it again).
    pub(crate) fn get(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        if let Some(s) = self.generated.get(&ObjectRef::new(name).within(namespace)) {
            return Some(s);
        }
        self.others.get(&ObjectRef::new(name).within(namespace))?;
        self.read
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Whether the Secret exists but its data was not read at its current version.
    pub(crate) fn unread(&self, namespace: &str, name: &str) -> bool {
        let Some(meta) = self.others.get(&ObjectRef::new(name).within(namespace)) else {
            return false;
        };
        self.read
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(namespace.to_owned(), name.to_owned()))
            .is_none_or(|s| s.metadata.resource_version != meta.metadata.resource_version)
    }

    /// Reads these Secrets from the API server, a few at once.
    pub(crate) async fn read(&self, names: Vec<(String, String)>) -> Result<(), Error> {
        let Some(client) = &self.client else {
            return Ok(());
        };
        let mut results = futures::stream::iter(names)
            .map(|(ns, name)| {
                let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
                async move { (api.get_opt(&name).await, ns, name) }
            })
            .buffer_unordered(8);
        while let Some((result, ns, name)) = results.next().await {
            let mut read = self.read.lock().unwrap_or_else(PoisonError::into_inner);
            match result? {
                Some(mut s) => {
                    slim(&mut s);
                    read.insert((ns, name), Arc::new(s));
                }
                None => {
                    read.remove(&(ns, name));
                }
            }
        }
        Ok(())
    }

    /// Forgets the data of a Secret that was deleted.
    fn forget(&self, meta: &PartialObjectMeta<Secret>) {
        let key = (
            meta.metadata.namespace.clone().unwrap_or_default(),
            meta.metadata.name.clone().unwrap_or_default(),
        );
        self.read.lock().unwrap_or_else(PoisonError::into_inner).remove(&key);
    }
}

/// Waits for every store once and announces it on `tx`. This is the only waiter of these
/// stores: `Store::wait_until_ready` (kube 5) wakes only the last of concurrent waiters, so
/// reconciles must not each wait on them (one would never wake). The LLMGateway store is left
/// out for the same reason: the controller itself waits on it before any reconcile runs.
async fn announce_synced(tx: watch::Sender<bool>, caches: Caches, metrics: Metrics) {
    let all = async {
        wait_store("Provider", &caches.providers).await?;
        wait_store("LLMRoute", &caches.routes).await?;
        wait_store("VirtualKey", &caches.keys).await?;
        wait_store("Budget", &caches.budgets).await?;
        wait_store("Secret", &caches.secrets.generated).await?;
        wait_store("Secret metadata", &caches.secrets.others).await?;
        wait_store("Namespace", &caches.namespaces).await?;
        wait_store("Pod", &caches.pods).await
    };
    match all.await {
        Ok(()) => {
            tracing::info!("caches synced");
            metrics.set_ready(true);
            let _ = tx.send(true);
        }
        Err(e) => tracing::warn!(error = %e, "caches never synced"),
    }
}

/// Waits for one store, saying which one is late (missing CRDs or RBAC show up here).
async fn wait_store<K>(kind: &'static str, store: &Store<K>) -> Result<(), Error>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let mut ready = std::pin::pin!(store.wait_until_ready());
    loop {
        match tokio::time::timeout(Duration::from_secs(30), &mut ready).await {
            Ok(r) => return r.map_err(|_| Error::StoreStopped(kind)),
            Err(_) => tracing::warn!(
                "still waiting for the {kind} cache (is the CRD installed, is the operator allowed to list it?)"
            ),
        }
    }
}

/// What a fleet reads of an object besides its spec: a change of any of these (or of the
/// generation, which tracks the spec) is a reason to recompile; a status-only update is not.
fn fingerprint<K: Resource>(o: &K) -> u64 {
    use std::hash::{Hash, Hasher};
    let m = o.meta();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (
        &m.uid,
        m.generation,
        &m.labels,
        &m.annotations,
        m.deletion_timestamp.is_some(),
    )
        .hash(&mut h);
    h.finish()
}

/// The objects of a reflected watch that changed in a way a fleet compiles, and every
/// deleted one. Status-only updates are dropped: the operator's own status writes would
/// otherwise each trigger a full recompile of the fleet (thousands at scale).
fn spec_changes<K, S>(events: S) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send
where
    K: Resource + Send + 'static,
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
{
    let mut seen: HashMap<(Option<String>, Option<String>), u64> = HashMap::new();
    events.filter_map(move |event| {
        let key = |o: &K| (o.meta().namespace.clone(), o.meta().name.clone());
        let out = match event {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                let print = fingerprint(&o);
                (seen.insert(key(&o), print) != Some(print)).then_some(Ok(o))
            }
            Ok(watcher::Event::Delete(o)) => {
                seen.remove(&key(&o));
                Some(Ok(o))
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
            Err(e) => Some(Err(e)),
        };
        futures::future::ready(out)
    })
}

/// Drops what the caches never read (managedFields, `kubectl apply`'s copy of the object).
fn slim<K: Resource>(o: &mut K) {
    o.meta_mut().managed_fields = None;
    if let Some(a) = o.meta_mut().annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// The annotations of each config shard (namespace, name) as the operator last wrote it, recorded
/// before the write (its watch event may come before the write returns). A shard event with
/// those annotations is the operator's own write and must not trigger a reconcile: at 10,000
/// keys that is a full recompile, and the next edit would queue behind it. A deletion or a write
/// that changed the annotations does trigger, and the reconcile puts the shard back. (A reconcile
/// judges the shards by their annotations alone, so a write that kept them would change nothing.)
#[derive(Clone, Default)]
pub(crate) struct OwnShards(Arc<Mutex<HashMap<ShardId, Annotations>>>);

/// A config shard: (namespace, name).
type ShardId = (String, String);
type Annotations = BTreeMap<String, String>;

impl OwnShards {
    /// Records that the operator is about to write `shard`.
    pub(crate) fn writing(&self, shard: &Secret) {
        let m = &shard.metadata;
        if let (Some(ns), Some(name)) = (&m.namespace, &m.name) {
            let mut own = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            own.insert((ns.clone(), name.clone()), m.annotations.clone().unwrap_or_default());
        }
    }

    /// Whether `meta` is a shard as the operator last wrote it.
    fn is_own(&self, meta: &kube::api::ObjectMeta) -> bool {
        let (Some(ns), Some(name)) = (&meta.namespace, &meta.name) else {
            return false;
        };
        let own = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        own.get(&(ns.clone(), name.clone()))
            .is_some_and(|a| Some(a) == meta.annotations.as_ref())
    }
}

/// The LLMGateway controller with every watch that triggers it, and the caches those watches
/// fill. Announces (and marks the operator ready) once every cache has listed.
pub(super) fn fleet_controller(
    client: &kube::Client,
    metrics: &Metrics,
    stop: watch::Receiver<bool>,
) -> (Controller<LLMGateway>, Caches) {
    let cfg = watcher::Config::default;
    let fleet_selector = format!("{LABEL_NAME}={GATEWAY_APP},{LABEL_FLEET}");

    // A fleet's own status write must not trigger its next reconcile (a full recompile).
    let (gateways, gateways_w) = reflector::store::<LLMGateway>();
    let gateway_events = spec_changes(
        watcher(Api::<LLMGateway>::all(client.clone()), cfg())
            .backoff(WatchBackoff::default())
            .modify(slim)
            .reflect(gateways_w),
    );
    let controller = Controller::for_stream(gateway_events, gateways.clone());

    let (providers, providers_w) = reflector::store::<Provider>();
    let (routes, routes_w) = reflector::store::<LLMRoute>();
    let (keys, keys_w) = reflector::store::<VirtualKey>();
    let (budgets, budgets_w) = reflector::store::<TeamBudget>();
    let (generated, generated_w) = reflector::store::<Secret>();
    let (others, others_w) = reflector::store::<PartialObjectMeta<Secret>>();
    let (namespaces, namespaces_w) = reflector::store::<Namespace>();
    let (pods, pods_w) = reflector::store::<Pod>();

    let provider_events = spec_changes(
        watcher(Api::<Provider>::all(client.clone()), cfg())
            .backoff(WatchBackoff::default())
            .modify(slim)
            .reflect(providers_w),
    );
    let route_events = spec_changes(
        watcher(Api::<LLMRoute>::all(client.clone()), cfg())
            .backoff(WatchBackoff::default())
            .modify(slim)
            .reflect(routes_w),
    );
    let key_secrets = KeySecretsCache::default();
    let keep = key_secrets.clone();
    let key_events = spec_changes(
        watcher(Api::<VirtualKey>::all(client.clone()), cfg())
            .backoff(WatchBackoff::default())
            .modify(slim)
            .reflect(keys_w)
            .inspect_ok(move |event| keep.apply(event)),
    );
    let budget_events = spec_changes(
        watcher(Api::<TeamBudget>::all(client.clone()), cfg())
            .backoff(WatchBackoff::default())
            .modify(slim)
            .reflect(budgets_w),
    );
    // The generated key Secrets, whole; every other Secret by its metadata (config shards,
    // Helm releases and service account tokens left out), its data read only when named.
    let generated_events = watcher(Api::<Secret>::all(client.clone()), cfg().labels(LABEL_VIRTUAL_KEY))
        .backoff(WatchBackoff::default())
        .modify(slim)
        .reflect(generated_w)
        .touched_objects();
    let secrets = SecretCache::new(generated, others, Some(client.clone()));
    let forget = secrets.clone();
    let other_secret_events = watcher(
        Api::<PartialObjectMeta<Secret>>::all(client.clone()),
        cfg()
            .labels(&format!("!{CONFIG_GENERATION},!{LABEL_VIRTUAL_KEY}"))
            .fields("type!=helm.sh/release.v1,type!=kubernetes.io/service-account-token"),
    )
    .backoff(WatchBackoff::default())
    .modify(slim)
    .reflect(others_w)
    .inspect_ok(move |event| {
        if let watcher::Event::Delete(m) = event {
            forget.forget(m);
        }
    })
    .touched_objects();
    let namespace_events = watcher(Api::<Namespace>::all(client.clone()), cfg())
        .backoff(WatchBackoff::default())
        .modify(|n: &mut Namespace| {
            slim(n);
            n.spec = None;
            n.status = None;
        })
        .reflect(namespaces_w)
        .touched_objects();
    let pod_events = watcher(Api::<Pod>::all(client.clone()), cfg().labels(&fleet_selector))
        .backoff(WatchBackoff::default())
        .modify(|p: &mut Pod| {
            slim(p);
            p.spec = None;
        })
        .reflect(pods_w)
        .touched_objects();
    let own_shards = OwnShards::default();
    let own = own_shards.clone();
    let shard_events = watcher(
        Api::<PartialObjectMeta<Secret>>::all(client.clone()),
        cfg().labels(&format!("{LABEL_FLEET},{CONFIG_GENERATION}")),
    )
    .backoff(WatchBackoff::default())
    .filter_map(move |event| {
        std::future::ready(match event {
            Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) if own.is_own(&s.metadata) => None,
            Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s) | watcher::Event::Delete(s)) => Some(Ok(s)),
            Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
            Err(e) => Some(Err(e)),
        })
    });

    let controller = {
        let (g1, g2, g3, g4, g5) = (
            gateways.clone(),
            gateways.clone(),
            gateways.clone(),
            gateways.clone(),
            gateways.clone(),
        );
        let (n1, n2, n3, n4) = (
            namespaces.clone(),
            namespaces.clone(),
            namespaces.clone(),
            namespaces.clone(),
        );
        let (p_for_secrets, k_for_secrets) = (providers.clone(), key_secrets.clone());
        let (p_for_others, k_for_others) = (providers.clone(), key_secrets);
        let (g6, n6) = (gateways.clone(), namespaces.clone());
        let g7 = gateways.clone();
        controller
            .owns_stream(
                watcher(
                    Api::<PartialObjectMeta<Deployment>>::all(client.clone()),
                    cfg().labels(&format!("{LABEL_NAME}={GATEWAY_APP}")),
                )
                .backoff(WatchBackoff::default())
                .touched_objects(),
            )
            .watches_stream(provider_events, move |p: Provider| {
                fleet::fleets_for_provider(&p, g1.state().iter().map(|g| &**g), &n1)
            })
            .watches_stream(route_events, move |r: LLMRoute| {
                fleet::fleets_for_route(&r, g2.state().iter().map(|g| &**g), &n2)
            })
            .watches_stream(key_events, move |k: VirtualKey| {
                fleet::fleets_for_key(&k, g3.state().iter().map(|g| &**g), &n3)
            })
            .watches_stream(generated_events, move |s: Secret| {
                fleets_for_secret(&s, &g4, &p_for_secrets, &k_for_secrets, &n4)
            })
            .watches_stream(other_secret_events, move |s: PartialObjectMeta<Secret>| {
                fleets_for_secret(&s, &g6, &p_for_others, &k_for_others, &n6)
            })
            // Budgets are few and change rarely: every fleet recompiles (a fleet serving none of
            // the Budget's keys compiles the same config and writes nothing).
            .watches_stream(budget_events, move |_: TeamBudget| {
                fleet::fleets_for_namespace(g7.state().iter().map(|g| &**g))
            })
            .watches_stream(namespace_events, move |_: Namespace| {
                fleet::fleets_for_namespace(g5.state().iter().map(|g| &**g))
            })
            .watches_stream(pod_events, |p: Pod| fleet::fleet_of_labelled(&p))
            .watches_stream(shard_events, |s| fleet::fleet_of_labelled(&s))
            // Each watch backs off on its own; one failing watch must not pause all triggers.
            .trigger_backoff(NoPause)
            .graceful_shutdown_on(stopped(stop))
    };

    let (synced_tx, synced) = watch::channel(false);
    let caches = Caches {
        gateways,
        providers,
        routes,
        keys,
        budgets,
        secrets,
        namespaces,
        pods,
        own_shards,
        synced,
    };
    tokio::spawn(announce_synced(synced_tx, caches.clone(), metrics.clone()));
    (controller, caches)
}

/// The fleets that read Secret `s`: its key readers are looked up ([`fleet::KeySecrets`]), and
/// only the Providers of its namespace looked at. This runs for every Secret of a namespace
/// when it is deleted, and for every Secret when the operator starts.
fn fleets_for_secret<S: Resource>(
    s: &S,
    gateways: &Store<LLMGateway>,
    providers: &Store<Provider>,
    keys: &KeySecretsCache,
    namespaces: &Store<Namespace>,
) -> Vec<ObjectRef<LLMGateway>> {
    let sns = s.meta().namespace.as_deref();
    let gws = gateways.state();
    let ps = providers.state_filter(|p| p.metadata.namespace.as_deref() == sns);
    let keys = keys.0.lock().unwrap_or_else(PoisonError::into_inner);
    fleet::fleets_for_secret(
        s,
        &gws.iter().map(|g| &**g).collect::<Vec<_>>(),
        &ps.iter().map(|p| &**p).collect::<Vec<_>>(),
        &keys.live,
        namespaces,
    )
}

/// [`fleet::KeySecrets`] kept by the key watch, beside its store and as current as it: a relist
/// is gathered on the side and replaces the index when it is complete, as the store does.
#[derive(Clone, Default)]
struct KeySecretsCache(Arc<Mutex<KeySecretsState>>);

#[derive(Default)]
struct KeySecretsState {
    live: fleet::KeySecrets,
    relisting: Option<fleet::KeySecrets>,
}

impl KeySecretsCache {
    fn apply(&self, event: &watcher::Event<VirtualKey>) {
        let mut state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match event {
            watcher::Event::Init => state.relisting = Some(fleet::KeySecrets::default()),
            watcher::Event::InitApply(k) => match state.relisting.as_mut() {
                Some(relisting) => relisting.insert(k),
                None => state.live.insert(k),
            },
            watcher::Event::InitDone => {
                if let Some(listed) = state.relisting.take() {
                    state.live = listed;
                }
            }
            watcher::Event::Apply(k) => state.live.insert(k),
            watcher::Event::Delete(k) => state.live.remove(k),
        }
    }
}

/// The VirtualKey controller (generated keys), triggered by spec changes, by its Secrets, and
/// by keys a fleet with Redis starts serving (`newly_served`: they get the cleanup finalizer).
pub(super) fn key_controller(
    client: &kube::Client,
    newly_served: mpsc::UnboundedReceiver<ObjectRef<VirtualKey>>,
    stop: watch::Receiver<bool>,
) -> Controller<VirtualKey> {
    let cfg = watcher::Config::default;
    let newly_served = futures::stream::unfold(newly_served, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
    // Generated keys depend on the spec only (secretRef, rotation): the fleets' status writes to
    // every VirtualKey must not each cost a key reconcile (and a GET of its Secret).
    let (vk_store, vk_writer) = reflector::store::<VirtualKey>();
    let vk_specs = watcher(Api::<VirtualKey>::all(client.clone()), cfg())
        .backoff(WatchBackoff::default())
        .modify(slim)
        .reflect(vk_writer)
        .applied_objects()
        .predicate_filter(
            |k: &VirtualKey| Some(fingerprint(k)),
            kube::runtime::PredicateConfig::default(),
        );
    Controller::for_stream(vk_specs, vk_store)
        .owns_stream(
            watcher(
                Api::<PartialObjectMeta<Secret>>::all(client.clone()),
                cfg().labels(LABEL_VIRTUAL_KEY),
            )
            .backoff(WatchBackoff::default())
            .touched_objects(),
        )
        .reconcile_on(newly_served)
        .trigger_backoff(NoPause)
        .graceful_shutdown_on(stopped(stop))
}

/// The controller-wide pause after a trigger stream error: none, since every watch has its
/// own backoff ([`WatchBackoff`]). A pause here stops every trigger: after an API server
/// restart each of the nine watches reports `410 Gone` once, and a 250 ms pause per error
/// delayed the first reconcile by two seconds (measured).
struct NoPause;

impl Iterator for NoPause {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        Some(Duration::ZERO)
    }
}

impl kube::runtime::utils::Backoff for NoPause {
    fn reset(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, secret: &str) -> VirtualKey {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "switchyard.dev/v1alpha1",
            "kind": "VirtualKey",
            "metadata": {"name": name, "namespace": "team"},
            "spec": {"secretRef": {"name": secret}},
        }))
        .unwrap()
    }

    fn reads(cache: &KeySecretsCache, secret: &str) -> bool {
        cache.0.lock().unwrap().live.read("team", secret)
    }

    #[test]
    fn the_key_secret_index_follows_the_watch_and_a_relist_replaces_it_when_complete() {
        let cache = KeySecretsCache::default();
        cache.apply(&watcher::Event::Init);
        cache.apply(&watcher::Event::InitApply(key("a", "sa")));
        cache.apply(&watcher::Event::InitApply(key("b", "sb")));
        assert!(
            !reads(&cache, "sa"),
            "a first list is used once complete, as the store is"
        );
        cache.apply(&watcher::Event::InitDone);
        assert!(reads(&cache, "sa") && reads(&cache, "sb"));
        cache.apply(&watcher::Event::Apply(key("a", "sa2")));
        assert!(!reads(&cache, "sa") && reads(&cache, "sa2"));
        // A relist after a watch gap: `b` went meanwhile (no Delete event), `c` came.
        cache.apply(&watcher::Event::Init);
        cache.apply(&watcher::Event::InitApply(key("a", "sa2")));
        assert!(reads(&cache, "sb"), "the old index serves until the relist is complete");
        cache.apply(&watcher::Event::InitApply(key("c", "sc")));
        cache.apply(&watcher::Event::InitDone);
        assert!(!reads(&cache, "sb") && reads(&cache, "sc") && reads(&cache, "sa2"));
        cache.apply(&watcher::Event::Delete(key("a", "sa2")));
        assert!(!reads(&cache, "sa2"));
    }
}
