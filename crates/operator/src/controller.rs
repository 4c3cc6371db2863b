//! The controllers: one reconcile per LLMGateway (compile, apply, status) and one per
//! VirtualKey (generated keys), fed by one watcher per kind whose reflector store the
//! reconcile reads and whose changes are mapped to the fleets they concern (`fleet`).
//!
//! Reconcile is thin: read stores, call the pure functions, apply with server-side apply under
//! [`MANAGER`], write status only when it changed. Nothing is resynced periodically.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PartialObjectMeta, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use switchyard_api::{condition, LLMGateway, LLMRoute, Provider, ProviderStatus, VirtualKey, VirtualKeyStatus};
use switchyard_config::{compile, CompileOptions, Compiled, Diagnostic, ObjectId};
use tokio::sync::watch;

use crate::desired::{desired_objects, shard_name, workload_name, Desired};
use crate::fleet::{self, fleet_id, FleetId, NamespaceLabels};
use crate::keys;
use crate::leader::Elector;
use crate::metrics::{self, Metrics};
use crate::spend::FleetRedis;
use crate::status::{self, ConfigState, PodsObserved};
use crate::{
    Error, Options, ANNOTATION_CONFIG_HASH, ANNOTATION_CONFIG_SHARDS, CONFIG_GENERATION, GATEWAY_APP, LABEL_FLEET,
    LABEL_NAME, LABEL_VIRTUAL_KEY, MANAGER,
};

/// Retry delay after a failed reconcile.
const RETRY: Duration = Duration::from_secs(15);

/// Configuration bytes a fleet publishes per second at most, and the longest pause.
const PUBLISH_BYTES_PER_SECOND: u64 = 2 * 1024 * 1024;
const MAX_PUBLISH_PAUSE: Duration = Duration::from_secs(5);

/// The pause after publishing `bytes` of configuration before the fleet publishes again.
/// During a burst of thousands of changes a large configuration is not rewritten after each
/// (every rewrite is megabytes through the API server, etcd and every gateway's watch); the
/// changes that arrive meanwhile go out together. A small configuration is never held back:
/// 2 KiB waits 1 ms, 2.5 MB 1.2 s.
pub(crate) fn publish_pause(bytes: usize) -> Duration {
    let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
    Duration::from_millis(bytes.saturating_mul(1000) / PUBLISH_BYTES_PER_SECOND).min(MAX_PUBLISH_PAUSE)
}

struct Context {
    client: kube::Client,
    image: String,
    metrics: Metrics,
    recorder: Recorder,
    gateways: Store<LLMGateway>,
    providers: Store<Provider>,
    routes: Store<LLMRoute>,
    keys: Store<VirtualKey>,
    secrets: Store<Secret>,
    namespaces: Store<Namespace>,
    pods: Store<Pod>,
    /// Fleets with Redis and the keys they serve (spend reporting, key cleanup).
    redis: Arc<FleetRedis>,
    /// `true` once every store has listed once.
    synced: watch::Receiver<bool>,
    status_writers: Mutex<StatusWriters>,
    /// When each fleet may publish its next configuration (see [`publish_pause`]).
    next_publish: Mutex<HashMap<FleetId, std::time::Instant>>,
}

impl Context {
    /// How long the fleet must wait before it may publish again, if at all.
    fn publish_wait(&self, fleet: &FleetId) -> Option<Duration> {
        let next = self.next_publish.lock().unwrap_or_else(PoisonError::into_inner);
        let wait = next.get(fleet)?.checked_duration_since(std::time::Instant::now())?;
        (!wait.is_zero()).then_some(wait)
    }

    /// Records that the fleet just published `bytes` of configuration in a reconcile that took
    /// `took`: the next publish waits at least as long again, so a fleet spends at most about
    /// half its time publishing (each generation also rewrites the routes' `Programmed`).
    fn published(&self, fleet: &FleetId, bytes: usize, took: Duration) {
        let pause = publish_pause(bytes).max(took.min(MAX_PUBLISH_PAUSE));
        let mut next = self.next_publish.lock().unwrap_or_else(PoisonError::into_inner);
        next.insert(fleet.clone(), std::time::Instant::now() + pause);
    }

    /// Whether `namespace` is being deleted (as far as the cache knows). Nothing may be created
    /// in it any more, and everything in it is going away.
    fn terminating(&self, namespace: &str) -> bool {
        self.namespaces
            .get(&ObjectRef::new(namespace))
            .is_some_and(|n| n.metadata.deletion_timestamp.is_some())
    }

    /// Waits until every cache has listed once: compiling from a half-filled cache would
    /// publish a configuration missing routes.
    async fn synced(&self) -> Result<(), Error> {
        let mut rx = self.synced.clone();
        rx.wait_for(|synced| *synced)
            .await
            .map(|_| ())
            .map_err(|_| Error::StoreStopped("reflector"))
    }
}

/// Waits for every store once and announces it on `tx`. This is the only waiter of these
/// stores: `Store::wait_until_ready` (kube 5) wakes only the last of concurrent waiters, so
/// reconciles must not each wait on them (one would never wake). The LLMGateway store is left
/// out for the same reason: the controller itself waits on it before any reconcile runs.
#[allow(clippy::too_many_arguments)]
async fn announce_synced(
    tx: watch::Sender<bool>,
    providers: Store<Provider>,
    routes: Store<LLMRoute>,
    keys: Store<VirtualKey>,
    secrets: Store<Secret>,
    namespaces: Store<Namespace>,
    pods: Store<Pod>,
    metrics: Metrics,
) {
    let all = async {
        wait_store("Provider", &providers).await?;
        wait_store("LLMRoute", &routes).await?;
        wait_store("VirtualKey", &keys).await?;
        wait_store("Secret", &secrets).await?;
        wait_store("Namespace", &namespaces).await?;
        wait_store("Pod", &pods).await
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

pub(crate) async fn run(client: kube::Client, opts: Options) -> Result<(), Error> {
    let metrics = Metrics::new()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });
    tokio::select! {
        r = metrics::serve(opts.metrics_addr, metrics.clone()) => r,
        r = lead(client, opts, metrics, stop_rx) => r,
    }
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
}

/// Resolves once shutdown was asked for.
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

fn identity() -> String {
    std::env::var("POD_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| format!("switchyard-operator-{}", hex::encode(rand::random::<[u8; 4]>())))
}

/// Takes the leader Lease (when enabled), then runs the controllers while holding it.
async fn lead(client: kube::Client, opts: Options, metrics: Metrics, stop: watch::Receiver<bool>) -> Result<(), Error> {
    let elector = opts
        .leader_election
        .then(|| Elector::new(client.clone(), &opts.lease_namespace, identity()));
    if let Some(e) = &elector {
        // A follower is ready: it stands by.
        metrics.set_ready(true);
        tokio::select! {
            r = e.acquire() => r?,
            () = stopped(stop.clone()) => return Ok(()),
        }
    }
    metrics.leader.set(1);
    let controllers = controllers(client, &opts, metrics.clone(), stop);
    let result = match &elector {
        Some(e) => tokio::select! {
            r = controllers => r,
            r = e.keep() => r,
        },
        None => controllers.await,
    };
    metrics.leader.set(0);
    if let Some(e) = &elector {
        e.release().await;
    }
    result
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

async fn controllers(
    client: kube::Client,
    opts: &Options,
    metrics: Metrics,
    stop: watch::Receiver<bool>,
) -> Result<(), Error> {
    let cfg = watcher::Config::default;
    let fleet_selector = format!("{LABEL_NAME}={GATEWAY_APP},{LABEL_FLEET}");

    // A fleet's own status write must not trigger its next reconcile (a full recompile).
    let (gateways, gateways_w) = reflector::store::<LLMGateway>();
    let gateway_events = spec_changes(
        watcher(Api::<LLMGateway>::all(client.clone()), cfg())
            .default_backoff()
            .modify(slim)
            .reflect(gateways_w),
    );
    let controller = Controller::for_stream(gateway_events, gateways.clone());

    let (providers, providers_w) = reflector::store::<Provider>();
    let (routes, routes_w) = reflector::store::<LLMRoute>();
    let (keys, keys_w) = reflector::store::<VirtualKey>();
    let (secrets, secrets_w) = reflector::store::<Secret>();
    let (namespaces, namespaces_w) = reflector::store::<Namespace>();
    let (pods, pods_w) = reflector::store::<Pod>();

    let provider_events = spec_changes(
        watcher(Api::<Provider>::all(client.clone()), cfg())
            .default_backoff()
            .modify(slim)
            .reflect(providers_w),
    );
    let route_events = spec_changes(
        watcher(Api::<LLMRoute>::all(client.clone()), cfg())
            .default_backoff()
            .modify(slim)
            .reflect(routes_w),
    );
    let key_events = spec_changes(
        watcher(Api::<VirtualKey>::all(client.clone()), cfg())
            .default_backoff()
            .modify(slim)
            .reflect(keys_w),
    );
    // Config shards, Helm releases and service account tokens are never read from here.
    let secret_events = watcher(
        Api::<Secret>::all(client.clone()),
        cfg()
            .labels(&format!("!{CONFIG_GENERATION}"))
            .fields("type!=helm.sh/release.v1,type!=kubernetes.io/service-account-token"),
    )
    .default_backoff()
    .modify(slim)
    .reflect(secrets_w)
    .touched_objects();
    let namespace_events = watcher(Api::<Namespace>::all(client.clone()), cfg())
        .default_backoff()
        .modify(|n: &mut Namespace| {
            slim(n);
            n.spec = None;
            n.status = None;
        })
        .reflect(namespaces_w)
        .touched_objects();
    let pod_events = watcher(Api::<Pod>::all(client.clone()), cfg().labels(&fleet_selector))
        .default_backoff()
        .modify(|p: &mut Pod| {
            slim(p);
            p.spec = None;
        })
        .reflect(pods_w)
        .touched_objects();
    let shard_events = watcher(
        Api::<PartialObjectMeta<Secret>>::all(client.clone()),
        cfg().labels(&format!("{LABEL_FLEET},{CONFIG_GENERATION}")),
    )
    .default_backoff()
    .touched_objects();

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
        let (p_for_secrets, k_for_secrets) = (providers.clone(), keys.clone());
        controller
            .owns(
                Api::<Deployment>::all(client.clone()),
                cfg().labels(&format!("{LABEL_NAME}={GATEWAY_APP}")),
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
            .watches_stream(secret_events, move |s: Secret| {
                // Only the readers of this Secret: with 10,000 keys, cloning and scanning every
                // key for each of their 10,000 Secrets was the operator's largest CPU cost.
                // Compared in place: this runs for every key of a namespace when it is deleted.
                let (sns, sname) = (
                    s.metadata.namespace.as_deref(),
                    s.metadata.name.as_deref().unwrap_or_default(),
                );
                let gws = g4.state();
                let ps = p_for_secrets.state_filter(|p| p.metadata.namespace.as_deref() == sns);
                let ks = k_for_secrets
                    .state_filter(|k| k.metadata.namespace.as_deref() == sns && fleet::key_reads_secret(k, sname));
                fleet::fleets_for_secret(
                    &s,
                    &gws.iter().map(|g| &**g).collect::<Vec<_>>(),
                    &ps.iter().map(|p| &**p).collect::<Vec<_>>(),
                    &ks.iter().map(|k| &**k).collect::<Vec<_>>(),
                    &n4,
                )
            })
            .watches_stream(namespace_events, move |_: Namespace| {
                fleet::fleets_for_namespace(g5.state().iter().map(|g| &**g))
            })
            .watches_stream(pod_events, |p: Pod| fleet::fleet_of_labelled(&p))
            .watches_stream(shard_events, |s| fleet::fleet_of_labelled(&s))
            // Each watch backs off on its own; one failing watch must not pause all triggers.
            .trigger_backoff(BriefPause)
            .graceful_shutdown_on(stopped(stop.clone()))
    };

    let (synced_tx, synced) = watch::channel(false);
    let (newly_served_tx, newly_served) = tokio::sync::mpsc::unbounded_channel();
    let ctx = Arc::new(Context {
        redis: Arc::new(FleetRedis::new(newly_served_tx)),
        synced,
        status_writers: Mutex::default(),
        next_publish: Mutex::default(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: MANAGER.into(),
                instance: Some(identity()),
            },
        ),
        client: client.clone(),
        image: opts.image.clone(),
        metrics: metrics.clone(),
        gateways,
        providers,
        routes,
        keys,
        secrets,
        namespaces,
        pods,
    });
    tokio::spawn(announce_synced(
        synced_tx,
        ctx.providers.clone(),
        ctx.routes.clone(),
        ctx.keys.clone(),
        ctx.secrets.clone(),
        ctx.namespaces.clone(),
        ctx.pods.clone(),
        metrics.clone(),
    ));

    let fleets = controller
        .run(reconcile_fleet, fleet_error_policy, ctx.clone())
        .for_each(|r| async move { log_outcome("llmgateway", r) });
    let spend = crate::spend::report(
        client.clone(),
        ctx.gateways.clone(),
        ctx.keys.clone(),
        ctx.redis.clone(),
        opts.spend_interval,
        stop.clone(),
    );
    // Keys get the cleanup finalizer when a fleet with Redis starts serving them.
    let newly_served = futures::stream::unfold(newly_served, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
    // Generated keys depend on the spec only (secretRef, rotation): the fleets' status writes to
    // every VirtualKey must not each cost a key reconcile (and a GET of its Secret).
    let (vk_store, vk_writer) = reflector::store::<VirtualKey>();
    let vk_specs = watcher(Api::<VirtualKey>::all(client.clone()), cfg())
        .default_backoff()
        .modify(slim)
        .reflect(vk_writer)
        .applied_objects()
        .predicate_filter(
            |k: &VirtualKey| Some(fingerprint(k)),
            kube::runtime::PredicateConfig::default(),
        );
    let generated_keys = Controller::for_stream(vk_specs, vk_store)
        .owns(Api::<Secret>::all(client.clone()), cfg().labels(LABEL_VIRTUAL_KEY))
        .reconcile_on(newly_served)
        .trigger_backoff(BriefPause)
        .graceful_shutdown_on(stopped(stop))
        .run(reconcile_key, key_error_policy, ctx)
        .for_each(|r| async move { log_outcome("virtualkey", r) });
    // Separate tasks, so the worker threads share them: polled together in one task, the
    // fleet controller's mapping of a burst of events (a namespace of 10,000 keys deleted) held
    // back the key controller for tens of seconds. Dropping the set (a lost lease) aborts them.
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(fleets);
    tasks.spawn(generated_keys);
    tasks.spawn(spend);
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            tracing::error!(error = %e, "a controller task failed");
        }
    }
    Ok(())
}

/// The controller-wide pause after a trigger stream error: short and constant, since every
/// watch has its own exponential backoff.
struct BriefPause;

impl Iterator for BriefPause {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        Some(Duration::from_millis(250))
    }
}

impl kube::runtime::utils::Backoff for BriefPause {
    fn reset(&mut self) {}
}

/// Logs what the controller loop reports besides reconcile failures (which the error policy
/// logs): watch errors (RBAC, API server gone) are retried with backoff but must be visible.
fn log_outcome<T>(controller: &str, r: Result<T, kube::runtime::controller::Error<Error, watcher::Error>>) {
    use kube::runtime::controller::Error as E;
    match r {
        Ok(_) | Err(E::ReconcilerFailed(..)) => {}
        Err(E::ObjectNotFound(obj)) => tracing::debug!(controller, %obj, "object gone before its reconcile"),
        Err(e) => tracing::warn!(controller, error = %e, "controller"),
    }
}

fn fleet_error_policy(gw: Arc<LLMGateway>, error: &Error, ctx: Arc<Context>) -> Action {
    retry_after(&ctx, "llmgateway", &*gw, error)
}

fn key_error_policy(vk: Arc<VirtualKey>, error: &Error, ctx: Arc<Context>) -> Action {
    retry_after(&ctx, "virtualkey", &*vk, error)
}

/// What a failed reconcile of `controller` does next: retried after [`RETRY`], unless the
/// namespace is being deleted (nothing to retry there).
fn retry_after<K: Resource>(ctx: &Context, controller: &'static str, obj: &K, error: &Error) -> Action {
    let (namespace, name) = (obj.meta().namespace.as_deref(), obj.meta().name.as_deref());
    if error.namespace_terminating() {
        tracing::debug!(
            controller,
            ?namespace,
            ?name,
            "namespace is being deleted; not retrying"
        );
        return Action::await_change();
    }
    ctx.metrics.failed(controller);
    tracing::warn!(controller, ?namespace, ?name, %error, "reconcile failed; retrying in {RETRY:?}");
    Action::requeue(RETRY)
}

async fn reconcile_key(vk: Arc<VirtualKey>, ctx: Arc<Context>) -> Result<Action, Error> {
    // The Namespace cache must have listed: at startup, keys of a namespace being deleted would
    // otherwise each cost two refused API calls. (Waiting is not reconcile time.)
    ctx.synced().await?;
    let _timer = ctx.metrics.start("virtualkey");
    if vk.metadata.deletion_timestamp.is_none()
        && vk.metadata.namespace.as_deref().is_some_and(|ns| ctx.terminating(ns))
    {
        // Its generated Secret may be gone already (the namespace's content is deleted in no
        // particular order) and cannot be created again; the key itself goes next, and its
        // deletion (finalizer included) is handled then.
        return Ok(Action::await_change());
    }
    if !keys::finalize(&vk, &ctx.client, &ctx.redis).await? {
        return Ok(Action::await_change());
    }
    keys::reconcile(vk, ctx.client.clone()).await
}

/// What the existing shards of a fleet say, from their metadata.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ShardSummary {
    /// `(generation, hash)` when every shard of one generation is present.
    pub complete: Option<(u64, String)>,
    /// Highest generation on any shard.
    pub highest: u64,
    /// Names of all shards.
    pub names: Vec<String>,
}

pub(crate) fn summarize_shards(metas: &[&ObjectMeta]) -> ShardSummary {
    let mut by_gen: BTreeMap<u64, Vec<(usize, String)>> = BTreeMap::new();
    let mut names = Vec::new();
    for m in metas {
        names.push(m.name.clone().unwrap_or_default());
        let Some(a) = m.annotations.as_ref() else { continue };
        let (Some(g), Some(count), Some(hash)) = (
            a.get(CONFIG_GENERATION).and_then(|v| v.parse::<u64>().ok()),
            a.get(ANNOTATION_CONFIG_SHARDS).and_then(|v| v.parse::<usize>().ok()),
            a.get(ANNOTATION_CONFIG_HASH),
        ) else {
            continue;
        };
        by_gen.entry(g).or_default().push((count, hash.clone()));
    }
    let highest = by_gen.keys().next_back().copied().unwrap_or(0);
    let complete = by_gen.iter().next_back().and_then(|(g, shards)| {
        let (count, hash) = shards.first()?;
        let consistent = shards.len() == *count && shards.iter().all(|(c, h)| c == count && h == hash);
        consistent.then(|| (*g, hash.clone()))
    });
    names.sort();
    ShardSummary {
        complete,
        highest,
        names,
    }
}

/// The generation to publish `hash` under, and whether the shards must be written.
/// Unchanged configuration keeps its generation (a reconcile is then a no-op); a change takes
/// one above any generation seen, so gateways never mistake it for an older one.
pub(crate) fn next_generation(status: Option<(u64, &str)>, shards: &ShardSummary, hash: &str) -> (u64, bool) {
    if let Some((g, h)) = &shards.complete {
        if h == hash {
            return (*g, false);
        }
    }
    if let Some((g, h)) = status {
        if h == hash && g >= shards.highest && g > 0 {
            return (g, true);
        }
    }
    let previous = status.map_or(0, |(g, _)| g).max(shards.highest);
    (previous.saturating_add(1), true)
}

async fn apply<K>(client: &kube::Client, namespace: &str, obj: &K) -> Result<K, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let name = obj
        .meta()
        .name
        .clone()
        .ok_or_else(|| Error::Incomplete(K::kind(&()).into_owned(), "name"))?;
    Ok(api
        .patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(obj))
        .await?)
}

pub(crate) async fn apply_status<K>(client: &kube::Client, obj: &K, status: &impl Serialize) -> Result<(), Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), &fleet::ns(obj));
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

async fn reconcile_fleet(gw: Arc<LLMGateway>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.synced().await?;
    let _timer = ctx.metrics.start("llmgateway");
    if gw.metadata.deletion_timestamp.is_some() {
        // Everything the fleet owns is garbage-collected through ownerReferences.
        ctx.redis.remove(&fleet_id(&gw));
        return Ok(Action::await_change());
    }
    let fleet = fleet_id(&gw);
    let (ns, name) = fleet.clone();
    if ctx.terminating(&ns) {
        // Its Deployment and config shards cannot be created again; the fleet goes next.
        return Ok(Action::await_change());
    }
    if let Some(wait) = ctx.publish_wait(&fleet) {
        return Ok(Action::requeue(wait));
    }
    let started = std::time::Instant::now();

    let compiled = {
        let secret = |sns: &str, sname: &str| ctx.secrets.get(&ObjectRef::new(sname).within(sns));
        let m = fleet::fleet_manifests(
            &gw,
            &ctx.providers.state(),
            &ctx.routes.state(),
            &ctx.keys.state(),
            &secret,
            &ctx.namespaces,
        );
        compile(
            &m,
            &CompileOptions {
                fleet: Some(fleet.clone()),
            },
        )
    };
    let hash = compiled.config.hash();
    ctx.redis.update(&fleet, &compiled.config);
    let compile_ms = started.elapsed().as_millis();

    let shard_api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let shard_list = shard_api
        .list_metadata(&ListParams::default().labels(&format!("{LABEL_FLEET}={name},{CONFIG_GENERATION}")))
        .await?;
    let shards = summarize_shards(&shard_list.items.iter().map(|m| &m.metadata).collect::<Vec<_>>());
    let status_config = gw
        .status
        .as_ref()
        .and_then(|s| Some((u64::try_from(s.config_generation?).ok()?, s.config_hash.as_deref()?)));
    let (generation, write_shards) = next_generation(status_config, &shards, &hash);
    let desired = desired_objects(&gw, &compiled, generation, &ctx.image);

    let deployment = apply_fleet(&ctx, &gw, &desired, write_shards, &shards).await?;
    let applied_ms = started.elapsed().as_millis();
    if write_shards {
        let bytes = desired
            .config_shards
            .iter()
            .flat_map(|s| s.data.iter().flat_map(|d| d.values()))
            .map(|b| b.0.len())
            .sum();
        ctx.published(&fleet, bytes, started.elapsed());
        tracing::info!(namespace = %ns, fleet = %name, generation, %hash, "published config");
        publish(
            &ctx,
            &gw.object_ref(&()),
            EventType::Normal,
            "ConfigPublished",
            // Repeats of an event only bump its count (the first note stays), so the note
            // names no generation: status.configGeneration has the current one.
            "published a new configuration generation (see status.configGeneration)".into(),
        )
        .await;
    }

    let pods = observe_pods(&deployment, &ctx.pods.state(), &fleet, generation);
    let config = ConfigState {
        generation,
        hash,
        routes: compiled.config.routes.len(),
        keys: compiled.config.keys.len(),
    };
    let now = Time(Timestamp::now());
    let gw_status = status::gateway_status(
        gw.status.as_ref(),
        &ObjectId::new("LLMGateway", &ns, &name),
        gw.metadata.generation,
        &compiled.diagnostics,
        &config,
        &pods,
        &now,
    );
    if gw.status.as_ref() != Some(&gw_status) {
        apply_status(&ctx.client, &*gw, &gw_status).await?;
    }
    queue_statuses(&ctx, StatusWork::new(gw.clone(), &compiled, pods, generation));
    tracing::debug!(
        namespace = %ns, fleet = %name, generation, write_shards,
        routes = compiled.config.routes.len(), keys = compiled.config.keys.len(),
        compile_ms, applied_ms, total_ms = started.elapsed().as_millis(),
        "reconciled fleet"
    );
    Ok(Action::await_change())
}

/// Applies the fleet's objects; returns the Deployment as the API server has it (with status).
async fn apply_fleet(
    ctx: &Context,
    gw: &LLMGateway,
    desired: &Desired,
    write_shards: bool,
    shards: &ShardSummary,
) -> Result<Deployment, Error> {
    let c = &ctx.client;
    let ns = fleet::ns(gw);
    // The config shards go first: they are what a change is waiting for (apply-to-served
    // latency); the other objects only change with the LLMGateway itself.
    if write_shards {
        for shard in &desired.config_shards {
            apply(c, &ns, shard).await?;
        }
    }
    // Shards past the current count belong to an older, larger configuration.
    let count = desired.config_shards.len();
    let current: Vec<String> = (0..count).map(|i| shard_name(&gw.name_any(), i)).collect();
    let secrets: Api<Secret> = Api::namespaced(c.clone(), &ns);
    for stale in shards.names.iter().filter(|n| !current.contains(n)) {
        delete_ignoring_absent(&secrets, stale).await?;
    }
    // The RoleBinding after its Role: binding a Role that does not exist yet fails the API
    // server's escalation check.
    let rbac = async {
        apply(c, &ns, &desired.role).await?;
        apply(c, &ns, &desired.role_binding).await
    };
    futures::try_join!(
        apply(c, &ns, &desired.service_account),
        rbac,
        apply(c, &ns, &desired.service),
        apply(c, &ns, &desired.disruption_budget),
    )?;
    match &desired.autoscaler {
        Some(hpa) => {
            apply(c, &ns, hpa).await?;
        }
        None => {
            let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(c.clone(), &ns);
            if let Some(existing) = hpas.get_opt(&workload_name(gw)).await? {
                if existing
                    .owner_references()
                    .iter()
                    .any(|o| Some(&o.uid) == gw.metadata.uid.as_ref())
                {
                    delete_ignoring_absent(&hpas, &workload_name(gw)).await?;
                }
            }
        }
    }
    apply(c, &ns, &desired.deployment).await
}

async fn delete_ignoring_absent<K>(api: &Api<K>, name: &str) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Counts the fleet's ready pods and those that report running `generation`.
pub(crate) fn observe_pods(
    deployment: &Deployment,
    pods: &[Arc<Pod>],
    fleet: &FleetId,
    generation: u64,
) -> PodsObserved {
    let st = deployment.status.as_ref();
    let want = generation.to_string();
    let ready: Vec<&Pod> = pods
        .iter()
        .map(|p| &**p)
        .filter(|p| fleet::ns(*p) == fleet.0 && p.labels().get(LABEL_FLEET) == Some(&fleet.1))
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .collect();
    let programmed = ready
        .iter()
        .filter(|p| p.annotations().get(CONFIG_GENERATION) == Some(&want))
        .count();
    PodsObserved {
        replicas: st.and_then(|s| s.replicas),
        ready_replicas: st.and_then(|s| s.ready_replicas),
        available: st
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Available" && c.status == "True")),
        ready_pods: i32::try_from(ready.len()).unwrap_or(i32::MAX),
        programmed_pods: i32::try_from(programmed).unwrap_or(i32::MAX),
    }
}

async fn publish(
    ctx: &Context,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    type_: EventType,
    reason: &str,
    note: String,
) {
    if reference.namespace.as_deref().is_some_and(|ns| ctx.terminating(ns)) {
        // Refused (403 NamespaceTerminating), and nobody is left to read it.
        return;
    }
    let ev = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: "Compile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, reference).await {
        tracing::warn!(error = %e, "publishing an event");
    }
}

/// One Warning event per error diagnostic of an object whose condition just changed.
async fn publish_errors(
    ctx: &Context,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    id: &ObjectId,
    diags: &[Diagnostic],
) {
    for d in diags.iter().filter(|d| d.is_error() && d.object.as_ref() == Some(id)) {
        let note = if d.field.is_empty() {
            d.message.clone()
        } else {
            format!("{}: {}", d.field, d.message)
        };
        publish(ctx, reference, EventType::Warning, &d.reason, note).await;
    }
}

fn find<'a>(cs: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    cs.iter().find(|c| c.type_ == type_)
}

/// Whether this fleet's view of `Accepted` is new (so its errors deserve events).
fn accepted_changed(before: &[Condition], computed: &[Condition]) -> bool {
    match (find(before, condition::ACCEPTED), find(computed, condition::ACCEPTED)) {
        (_, None) => false,
        (None, Some(c)) => c.status == "False",
        (Some(b), Some(c)) => {
            c.status == "False"
                && (b.status != c.status || b.reason != c.reason || b.observed_generation != c.observed_generation)
        }
    }
}

/// What one reconcile concluded about a fleet, for the statuses of the objects it compiled.
pub(crate) struct StatusWork {
    gw: Arc<LLMGateway>,
    /// Diagnostics by the object they name.
    diagnostics: HashMap<ObjectId, Vec<Diagnostic>>,
    /// `(namespace, name)` of the routes in the configuration.
    routes: HashSet<(String, String)>,
    /// `(namespace, name)` of the keys in the configuration.
    keys: HashSet<(String, String)>,
    pods: PodsObserved,
    generation: u64,
}

impl StatusWork {
    fn new(gw: Arc<LLMGateway>, compiled: &Compiled, pods: PodsObserved, generation: u64) -> Self {
        let mut diagnostics: HashMap<ObjectId, Vec<Diagnostic>> = HashMap::new();
        for d in &compiled.diagnostics {
            if let Some(o) = &d.object {
                diagnostics.entry(o.clone()).or_default().push(d.clone());
            }
        }
        let id = |namespace: &str, name: &str| (namespace.to_owned(), name.to_owned());
        Self {
            gw,
            diagnostics,
            routes: compiled
                .config
                .routes
                .iter()
                .map(|r| id(&r.namespace, &r.name))
                .collect(),
            keys: compiled.config.keys.iter().map(|k| id(&k.namespace, &k.name)).collect(),
            pods,
            generation,
        }
    }

    /// The diagnostics about one object (what `object_conditions` and events read).
    fn diagnostics_of(&self, id: &ObjectId) -> &[Diagnostic] {
        self.diagnostics.get(id).map(Vec::as_slice).unwrap_or_default()
    }
}

/// Where a fleet's latest [`StatusWork`] goes.
type StatusSender = watch::Sender<Option<Arc<StatusWork>>>;

/// The per-fleet status writers: each writes the latest [`StatusWork`] of its fleet.
#[derive(Default)]
pub(crate) struct StatusWriters {
    next_id: u64,
    writers: HashMap<FleetId, (u64, StatusSender)>,
}

/// Hands a fleet's object statuses to its writer task, which writes them after the reconcile
/// returned. The config is published without waiting for thousands of status writes, and a
/// newer outcome replaces one not yet started, so a burst of reconciles costs one pass.
fn queue_statuses(ctx: &Arc<Context>, work: StatusWork) {
    let fleet = fleet_id(&work.gw);
    let work = Some(Arc::new(work));
    let mut w = ctx.status_writers.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, tx)) = w.writers.get(&fleet) {
        if tx.send(work.clone()).is_ok() {
            return;
        }
    }
    let (tx, mut rx) = watch::channel(work);
    rx.mark_changed();
    w.next_id += 1;
    let id = w.next_id;
    w.writers.insert(fleet.clone(), (id, tx));
    tokio::spawn(status_writer(ctx.clone(), fleet, id, rx));
}

/// Writes the latest status work of one fleet until the fleet is gone; retries a failed pass
/// after [`RETRY`] unless newer work arrives first.
async fn status_writer(ctx: Arc<Context>, fleet: FleetId, id: u64, mut rx: watch::Receiver<Option<Arc<StatusWork>>>) {
    while rx.changed().await.is_ok() {
        {
            let mut w = ctx.status_writers.lock().unwrap_or_else(PoisonError::into_inner);
            if ctx.gateways.get(&ObjectRef::new(&fleet.1).within(&fleet.0)).is_none() {
                if w.writers.get(&fleet).is_some_and(|(i, _)| *i == id) {
                    w.writers.remove(&fleet);
                }
                return;
            }
        }
        let Some(work) = rx.borrow_and_update().clone() else {
            continue;
        };
        let started = std::time::Instant::now();
        let now = Time(Timestamp::now());
        match write_object_statuses(&ctx, &work, &now).await {
            Ok(written) => tracing::debug!(
                namespace = %fleet.0, fleet = %fleet.1, written, ms = started.elapsed().as_millis(), "object statuses"
            ),
            Err(error) => {
                ctx.metrics.failed("status");
                tracing::warn!(namespace = %fleet.0, fleet = %fleet.1, %error, "writing object statuses failed; retrying in {RETRY:?}");
                tokio::select! {
                    () = tokio::time::sleep(RETRY) => {}
                    r = rx.changed() => if r.is_err() { return },
                }
                rx.mark_changed();
            }
        }
    }
}

/// Writes one object's status, then the events of its errors when its `Accepted` changed.
fn write_status<'a, K, S>(
    ctx: &'a Context,
    obj: Arc<K>,
    status: S,
    errors: Option<ObjectId>,
    diags: &'a [Diagnostic],
) -> BoxFuture<'a, Result<(), Error>>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'a,
    S: Serialize + Send + Sync + 'a,
{
    async move {
        apply_status(&ctx.client, &*obj, &status).await?;
        if let Some(id) = errors {
            publish_errors(ctx, &obj.object_ref(&()), &id, diags).await;
        }
        Ok(())
    }
    .boxed()
}

/// Status writes in flight at once: enough to hide round trips, few enough not to crowd out
/// the config writes on the same API server.
const STATUS_WRITES: usize = 8;

/// Writes the statuses of the routes, Providers and keys a fleet compiled that changed;
/// returns how many were written.
async fn write_object_statuses(ctx: &Context, work: &StatusWork, now: &Time) -> Result<usize, Error> {
    let gw = &*work.gw;
    let (pods, generation) = (&work.pods, work.generation);
    let fleet = fleet_id(gw);
    let mut writes: Vec<BoxFuture<'_, Result<(), Error>>> = Vec::new();
    let gateways = ctx.gateways.state();
    let gateway = |f: &FleetId| gateways.iter().find(|g| fleet_id(g) == *f).cloned();
    let exists = |f: &FleetId| gateway(f).is_some();
    let ns_labels: &dyn NamespaceLabels = &ctx.namespaces;

    for r in ctx.routes.state() {
        let id = ObjectId::new("LLMRoute", &fleet::ns(&*r), &r.name_any());
        let diags = work.diagnostics_of(&id);
        let considered = fleet::considers_route(gw, &r, ns_labels);
        let named = fleet::names_fleet(&r, gw);
        let g = r.metadata.generation;
        let in_config = work.routes.contains(&(id.namespace.clone(), id.name.clone()));
        let (parent, top) = if considered {
            let mut cs = status::object_conditions(&id, diags, g, &fleet, now);
            let previous = r
                .status
                .as_ref()
                .and_then(|s| {
                    s.parents
                        .iter()
                        .find(|p| p.parent_ref.name == fleet.1 && p.parent_ref.namespace.as_deref() == Some(&fleet.0))
                })
                .and_then(|p| find(&p.conditions, condition::PROGRAMMED));
            cs.push(status::programmed_condition(
                in_config, pods, generation, g, &fleet, now, previous,
            ));
            (Some(cs.clone()), Some(cs))
        } else if named {
            (
                Some(status::not_allowed_conditions(&id.namespace, g, &fleet, now)),
                None,
            )
        } else {
            (None, None)
        };
        let listed = r.status.as_ref().is_some_and(|s| {
            s.parents
                .iter()
                .any(|p| p.parent_ref.name == fleet.1 && p.parent_ref.namespace.as_deref() == Some(&fleet.0))
        });
        if parent.is_none() && !listed {
            continue;
        }
        let responsible = |f: &FleetId| gateway(f).is_some_and(|g| fleet::considers_route(&g, &r, ns_labels));
        let before: &[Condition] = r.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
        let changed = top.as_ref().is_some_and(|t| accepted_changed(before, t));
        let new = status::route_status(r.status.as_ref(), g, &fleet, parent, top, &exists, &responsible);
        if r.status.as_ref() != Some(&new) {
            writes.push(write_status(ctx, r.clone(), new, changed.then_some(id), diags));
        }
    }

    for p in ctx.providers.state() {
        if !fleet::considers_provider(gw, &p, ns_labels) {
            continue;
        }
        let id = ObjectId::new("Provider", &fleet::ns(&*p), &p.name_any());
        let diags = work.diagnostics_of(&id);
        let g = p.metadata.generation;
        let computed = status::object_conditions(&id, diags, g, &fleet, now);
        let responsible = |f: &FleetId| gateway(f).is_some_and(|g| fleet::considers_provider(&g, &p, ns_labels));
        let old = p.status.clone().unwrap_or_default();
        let changed = accepted_changed(&old.conditions, &computed);
        let new = ProviderStatus {
            conditions: status::merge_conditions(&old.conditions, computed, &fleet, &responsible),
            observed_generation: g,
        };
        if p.status.as_ref() != Some(&new) {
            writes.push(write_status(ctx, p.clone(), new, changed.then_some(id), diags));
        }
    }

    for k in ctx.keys.state() {
        if !fleet::considers_key(gw, &k, ns_labels) {
            continue;
        }
        let kns = fleet::ns(&*k);
        let id = ObjectId::new("VirtualKey", &kns, &k.name_any());
        let diags = work.diagnostics_of(&id);
        let g = k.metadata.generation;
        let in_config = work.keys.contains(&(id.namespace.clone(), id.name.clone()));
        let mut computed = status::object_conditions(&id, diags, g, &fleet, now);
        let accepted = find(&computed, condition::ACCEPTED).cloned();
        computed.push(match (in_config, accepted) {
            (true, _) => status::fleet_condition(condition::READY, true, "Ready", "the key is served", g, &fleet, now),
            (false, Some(a)) if a.status == "False" => Condition {
                type_: condition::READY.into(),
                ..a
            },
            (false, _) => status::fleet_condition(
                condition::READY,
                false,
                "NotServed",
                "the key is not served",
                g,
                &fleet,
                now,
            ),
        });
        let responsible = |f: &FleetId| gateway(f).is_some_and(|g| fleet::considers_key(&g, &k, ns_labels));
        let old = k.status.clone().unwrap_or_default();
        let changed = accepted_changed(&old.conditions, &computed);
        let secret_name = match &k.spec.secret_ref {
            Some(sr) => sr.name.clone(),
            None => keys::key_secret_name(&k),
        };
        let rotation = match &k.spec.secret_ref {
            Some(_) => None,
            None => ctx
                .secrets
                .get(&ObjectRef::new(&secret_name).within(&kns))
                .and_then(|s| keys::recorded_rotation(&s)),
        };
        let new = VirtualKeyStatus {
            conditions: status::merge_conditions(&old.conditions, computed, &fleet, &responsible),
            secret_name: Some(secret_name),
            rotation_generation: rotation,
            observed_generation: g,
            ..old
        };
        if k.status.as_ref() != Some(&new) {
            writes.push(write_status(ctx, k.clone(), new, changed.then_some(id), diags));
        }
    }
    let written = writes.len();
    futures::stream::iter(writes)
        .buffer_unordered(STATUS_WRITES)
        .try_collect::<()>()
        .await?;
    Ok(written)
}

#[cfg(test)]
mod tests;
