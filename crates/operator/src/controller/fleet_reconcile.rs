//! The reconcile of one LLMGateway: compile what the fleet admits, publish the configuration as
//! sharded Secrets (only the parts that changed, then the index; paced), apply the fleet's
//! objects, write the LLMGateway's status, and hand the statuses of the objects it compiled to
//! the fleet's status writer.
//!
//! The decisions are pure functions (`fleet::fleet_manifests`, `compile`, `desired_objects`,
//! [`next_generation`], `status::gateway_status`); this file reads the caches and does the I/O.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use switchyard_api::LLMGateway;
use switchyard_config::source::{split_config_after, LastSplit};
use switchyard_config::{compile_with, CompileMemo, CompileOptions, ObjectId};

use super::{apply_status, status_writer, Context};
use crate::desired::{desired_objects, shard_name, workload_name, Desired};
use crate::fleet::{self, fleet_id, FleetId};
use crate::status::{self, ConfigState, PodsObserved, StatusWork};
use crate::{
    Error, ANNOTATION_CONFIG_HASH, ANNOTATION_CONFIG_PART, ANNOTATION_CONFIG_PARTS, ANNOTATION_PART_HASH,
    CONFIG_GENERATION, CONFIG_KEY, LABEL_FLEET, MANAGER,
};

/// Configuration bytes a fleet publishes per second at most, and the longest pause.
const PUBLISH_BYTES_PER_SECOND: u64 = 2 * 1024 * 1024;
pub(crate) const MAX_PUBLISH_PAUSE: Duration = Duration::from_secs(5);

/// The pause after writing `bytes` of configuration before the fleet publishes again. Only
/// the parts that changed are written, so one edit of a large fleet writes about a part and
/// the index and is barely held back; during a burst of thousands of changes, when most parts
/// change, the writes are megabytes through the API server, etcd and every gateway's watch, and
/// the changes that arrive meanwhile go out together: 2 KiB waits 1 ms, 2.5 MB 1.2 s.
pub(crate) fn publish_pause(bytes: usize) -> Duration {
    let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
    Duration::from_millis(bytes.saturating_mul(1000) / PUBLISH_BYTES_PER_SECOND).min(MAX_PUBLISH_PAUSE)
}

/// What each fleet's last reconcile compiled and serialised, so that the next compiles and
/// serialises only the objects that changed since ([`compile_with`], [`split_config_after`]).
/// A reconcile takes its fleet's memory out and puts it back when it is done; a failed
/// reconcile drops it, and the next compiles from scratch.
#[derive(Default)]
pub(crate) struct Memory {
    fleets: Mutex<HashMap<FleetId, FleetMemory>>,
}

#[derive(Default)]
struct FleetMemory {
    compiled: CompileMemo,
    split: LastSplit,
}

impl Memory {
    fn take(&self, fleet: &FleetId) -> FleetMemory {
        let mut fleets = self.fleets.lock().unwrap_or_else(PoisonError::into_inner);
        fleets.remove(fleet).unwrap_or_default()
    }

    fn put(&self, fleet: FleetId, memory: FleetMemory) {
        let mut fleets = self.fleets.lock().unwrap_or_else(PoisonError::into_inner);
        fleets.insert(fleet, memory);
    }

    /// Forgets a deleted fleet.
    fn forget(&self, fleet: &FleetId) {
        let mut fleets = self.fleets.lock().unwrap_or_else(PoisonError::into_inner);
        fleets.remove(fleet);
    }
}

/// When each fleet may publish its next configuration (see [`publish_pause`]).
#[derive(Default)]
pub(crate) struct Pacing {
    next: Mutex<HashMap<FleetId, Instant>>,
}

impl Pacing {
    /// How long the fleet must wait before it may publish again, if at all.
    fn wait(&self, fleet: &FleetId) -> Option<Duration> {
        let next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
        let wait = next.get(fleet)?.checked_duration_since(Instant::now())?;
        (!wait.is_zero()).then_some(wait)
    }

    /// Records that the fleet just wrote `written` of its `total` bytes of configuration in a
    /// reconcile that took `took`. A generation that rewrote most of the configuration (a burst
    /// of changes spread over every part) also waits as long as its reconcile took, so a burst
    /// spends at most about half its time compiling and publishing; an edit that wrote a part
    /// and the index waits only for its bytes, never for the fleet's compile time.
    fn published(&self, fleet: &FleetId, written: usize, total: usize, took: Duration) {
        let mut pause = publish_pause(written);
        if written.saturating_mul(2) >= total {
            pause = pause.max(took.min(MAX_PUBLISH_PAUSE));
        }
        let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
        next.insert(fleet.clone(), Instant::now() + pause);
    }
}

pub(crate) async fn reconcile_fleet(gw: Arc<LLMGateway>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.caches.synced().await?;
    let _timer = ctx.metrics.start("llmgateway");
    if gw.metadata.deletion_timestamp.is_some() {
        // Everything the fleet owns is garbage-collected through ownerReferences.
        ctx.redis.remove(&fleet_id(&gw));
        ctx.memory.forget(&fleet_id(&gw));
        return Ok(Action::await_change());
    }
    let fleet = fleet_id(&gw);
    let (ns, name) = fleet.clone();
    if ctx.caches.terminating(&ns) {
        // Its Deployment and config shards cannot be created again; the fleet goes next.
        return Ok(Action::await_change());
    }
    if let Some(wait) = ctx.pacing.wait(&fleet) {
        return Ok(Action::requeue(wait));
    }
    let started = Instant::now();

    let mut memory = ctx.memory.take(&fleet);
    let (compiled, manifests_ms) = {
        let m = manifests_with_secrets(&gw, &ctx).await?;
        let manifests_ms = started.elapsed().as_millis();
        let options = CompileOptions {
            fleet: Some(fleet.clone()),
        };
        (compile_with(&m, &options, &mut memory.compiled), manifests_ms)
    };
    ctx.redis.update(&fleet, &compiled.config);
    let compile_ms = started.elapsed().as_millis();

    let shard_api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let shard_list = shard_api
        .list_metadata(&ListParams::default().labels(&format!("{LABEL_FLEET}={name},{CONFIG_GENERATION}")))
        .await?;
    let shards = summarize_shards(&shard_list.items.iter().map(|m| &m.metadata).collect::<Vec<_>>());
    let split = split_config_after(&compiled.config, shards.part_count, &mut memory.split)?;
    ctx.memory.put(fleet.clone(), memory);
    let hash = split.hash.clone();
    let split_ms = started.elapsed().as_millis();
    let status_config = gw
        .status
        .as_ref()
        .and_then(|s| Some((u64::try_from(s.config_generation?).ok()?, s.config_hash.as_deref()?)));
    let (generation, write_shards) = next_generation(status_config, &shards, &hash);
    let desired = desired_objects(&gw, &split, generation, &ctx.image);
    let writes = if write_shards {
        shards_to_write(&desired.config_shards, &shards)
    } else {
        Vec::new()
    };

    let deployment = apply_fleet(&ctx, &gw, &desired, &writes, &shards).await?;
    let applied_ms = started.elapsed().as_millis();
    if write_shards {
        let bytes = writes
            .iter()
            .filter_map(|s| s.data.as_ref()?.get(CONFIG_KEY))
            .map(|b| b.0.len())
            .sum();
        ctx.pacing.published(&fleet, bytes, split.bytes(), started.elapsed());
        tracing::info!(namespace = %ns, fleet = %name, generation, %hash, "published config");
        ctx.publish(
            &gw.object_ref(&()),
            EventType::Normal,
            "ConfigPublished",
            // Repeats of an event only bump its count (the first note stays), so the note
            // names no generation: status.configGeneration has the current one.
            "published a new configuration generation (see status.configGeneration)".into(),
        )
        .await;
    }

    let pods = observe_pods(&deployment, &ctx.caches.pods.state(), &fleet, generation);
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
    status_writer::queue(&ctx, StatusWork::new(gw.clone(), &compiled, pods, generation));
    tracing::debug!(
        namespace = %ns, fleet = %name, generation, write_shards, shards_written = writes.len(),
        parts = split.parts.len(), routes = compiled.config.routes.len(), keys = compiled.config.keys.len(),
        manifests_ms, compile_ms, split_ms, applied_ms, total_ms = started.elapsed().as_millis(),
        "reconciled fleet"
    );
    Ok(Action::await_change())
}

/// The config shards to write for a new generation: the parts whose bytes differ from what is
/// published (by their hash annotation), then the index. Parts an edit did not touch keep their
/// bytes and the generation that wrote them; the index names their hashes.
pub(crate) fn shards_to_write<'a>(desired: &'a [Secret], published: &ShardSummary) -> Vec<&'a Secret> {
    let Some((index, parts)) = desired.split_first() else {
        return Vec::new();
    };
    let mut out: Vec<&Secret> = parts
        .iter()
        .filter(|p| {
            let a = p.metadata.annotations.as_ref();
            let number = a.and_then(|a| a.get(ANNOTATION_CONFIG_PART)?.parse::<usize>().ok());
            let hash = a.and_then(|a| a.get(ANNOTATION_PART_HASH));
            number.and_then(|n| published.parts.get(&n)) != hash
        })
        .collect();
    out.push(index);
    out
}

/// Applies the fleet's objects, of the config shards only `writes`; returns the Deployment as
/// the API server has it (with status).
async fn apply_fleet(
    ctx: &Context,
    gw: &LLMGateway,
    desired: &Desired,
    writes: &[&Secret],
    shards: &ShardSummary,
) -> Result<Deployment, Error> {
    let c = &ctx.client;
    let ns = fleet::ns(gw);
    // The config shards go first: they are what a change is waiting for (apply-to-served
    // latency); the other objects only change with the LLMGateway itself. Except the Role when
    // there will be more shards than now: it names each shard the pods may read, and the pods
    // start watching a new name as soon as the index announces it.
    let widen = !writes.is_empty() && desired.config_shards.len() > shards.names.len();
    if widen {
        apply(c, &ns, &desired.role).await?;
    }
    // The parts at once, then the index: a gateway assembles only when every part it holds
    // matches the index, so the order among the parts does not matter.
    if let Some((index, parts)) = writes.split_last() {
        for shard in writes {
            ctx.caches.own_shards.writing(shard);
        }
        futures::future::try_join_all(parts.iter().map(|p| apply(c, &ns, *p))).await?;
        apply(c, &ns, *index).await?;
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
        if !widen {
            apply(c, &ns, &desired.role).await?;
        }
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

/// What the existing shards of a fleet say, from their metadata.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ShardSummary {
    /// `(generation, hash)` of the index when every part it announces is present with the
    /// announced hash.
    pub complete: Option<(u64, String)>,
    /// Highest generation on any shard.
    pub highest: u64,
    /// Names of all shards.
    pub names: Vec<String>,
    /// How many parts the index announces; `None` without an index of this format (a new
    /// fleet, or shards an older operator wrote).
    pub part_count: Option<usize>,
    /// The hash annotation of each part present, by part number.
    pub parts: BTreeMap<usize, String>,
}

pub(crate) fn summarize_shards(metas: &[&ObjectMeta]) -> ShardSummary {
    let mut summary = ShardSummary::default();
    let mut index: Option<(u64, String, Vec<String>)> = None;
    for m in metas {
        summary.names.push(m.name.clone().unwrap_or_default());
        let Some(a) = m.annotations.as_ref() else { continue };
        let Some(g) = a.get(CONFIG_GENERATION).and_then(|v| v.parse::<u64>().ok()) else {
            continue;
        };
        summary.highest = summary.highest.max(g);
        if let (Some(hash), Some(parts)) = (a.get(ANNOTATION_CONFIG_HASH), a.get(ANNOTATION_CONFIG_PARTS)) {
            let parts = parts.split(',').filter(|h| !h.is_empty()).map(str::to_owned).collect();
            if index.as_ref().is_none_or(|(ig, _, _)| g > *ig) {
                index = Some((g, hash.clone(), parts));
            }
        } else if let (Some(n), Some(hash)) = (
            a.get(ANNOTATION_CONFIG_PART).and_then(|v| v.parse::<usize>().ok()),
            a.get(ANNOTATION_PART_HASH),
        ) {
            summary.parts.insert(n, hash.clone());
        }
    }
    if let Some((g, hash, parts)) = index {
        summary.part_count = Some(parts.len());
        let present = parts
            .iter()
            .enumerate()
            .all(|(i, h)| summary.parts.get(&(i + 1)) == Some(h));
        summary.complete = present.then_some((g, hash));
    }
    summary.names.sort();
    summary
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

/// The fleet's manifests, with the Secrets they name read first when their data is not cached
/// at their current version (`SecretCache` keeps only the data of named Secrets). A Secret
/// rewritten after the read is read again by the reconcile its change triggers.
async fn manifests_with_secrets(gw: &LLMGateway, ctx: &Context) -> Result<switchyard_config::Manifests, Error> {
    let (m, unread) = manifests_now(gw, ctx);
    if unread.is_empty() {
        return Ok(m);
    }
    ctx.caches.secrets.read(unread).await?;
    Ok(manifests_now(gw, ctx).0)
}

/// The fleet's manifests from the caches, and the Secrets they name whose data is not read.
fn manifests_now(gw: &LLMGateway, ctx: &Context) -> (switchyard_config::Manifests, Vec<(String, String)>) {
    let caches = &ctx.caches;
    let unread = std::cell::RefCell::new(Vec::new());
    let secret = |sns: &str, sname: &str| {
        if caches.secrets.unread(sns, sname) {
            unread.borrow_mut().push((sns.to_owned(), sname.to_owned()));
        }
        caches.secrets.get(sns, sname)
    };
    let mut m = fleet::fleet_manifests(
        gw,
        &caches.providers.state(),
        &caches.routes.state(),
        &caches.keys.state(),
        &secret,
        &caches.namespaces,
    );
    fleet::add_budgets(&mut m, &caches.budgets.state(), &secret);
    (m, unread.into_inner())
}

#[cfg(test)]
mod tests;
