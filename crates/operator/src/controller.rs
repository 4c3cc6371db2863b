//! The controllers: one reconcile per LLMGateway (compile, apply, status) and one per
//! VirtualKey (generated keys), fed by one watcher per kind whose reflector store the
//! reconcile reads and whose changes are mapped to the fleets they concern (`fleet`).
//!
//! Each concern has its room: `watches` (the watchers, caches and triggers), `fleet_reconcile`
//! (compile, publish the configuration, apply the fleet's objects, the LLMGateway's status) and
//! `status_writer` (the statuses of the routes, Providers and keys a fleet compiled, written
//! after its reconcile returned). This file holds what they share: the [`Context`], the error
//! policy, events, and the key reconcile.
//!
//! Reconcile is thin: read caches, call the pure functions, apply with server-side apply under
//! [`MANAGER`], write status only when it changed. Nothing is resynced periodically.

mod fleet_reconcile;
mod status_writer;
mod watches;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use switchyard_api::{LLMGateway, VirtualKey};
use switchyard_config::{Diagnostic, ObjectId};
use tokio::sync::watch;

use crate::fleet;
use crate::keys;
use crate::leader::Elector;
use crate::metrics::{self, Metrics};
use crate::spend::FleetRedis;
use crate::{Error, Options, MANAGER};

#[cfg(test)]
pub(crate) use fleet_reconcile::reconcile_fleet;
pub(crate) use fleet_reconcile::{Memory, Pacing};
pub(crate) use status_writer::StatusWriters;
pub(crate) use watches::Caches;
#[cfg(test)]
pub(crate) use watches::SecretCache;

/// Retry delay after a failed reconcile.
const RETRY: Duration = Duration::from_secs(15);
/// Retry delay of a deleted key whose counters some fleet's Redis could not delete (until
/// [`Options::key_cleanup_deadline`](crate::Options)).
const CLEANUP_RETRY: Duration = Duration::from_secs(5);

/// What every reconcile shares.
pub(crate) struct Context {
    pub(crate) client: kube::Client,
    pub(crate) metrics: Metrics,
    /// What the reconciles read, each fed by one watch.
    pub(crate) caches: Caches,
    /// Events about the LLMGateways and the objects they compile.
    pub(crate) recorder: Recorder,
    /// Fleets with Redis and the keys they serve (spend reporting, key cleanup).
    pub(crate) redis: Arc<FleetRedis>,
    /// Gateway image for fleets that name none.
    pub(crate) image: String,
    /// When each fleet may publish its next configuration.
    pub(crate) pacing: Pacing,
    /// What each fleet's last reconcile compiled and serialised.
    pub(crate) memory: Memory,
    /// The per-fleet writers of object statuses.
    pub(crate) status_writers: StatusWriters,
    /// How long a deleted key's counters are retried before it is let go without them.
    pub(crate) cleanup_deadline: Duration,
}

impl Context {
    /// Publishes an event about `reference` from a compile, unless its namespace is being deleted.
    async fn publish(&self, reference: &ObjectReference, type_: EventType, reason: &str, note: String) {
        self.publish_action(reference, type_, reason, "Compile", note).await;
    }

    /// Publishes an event about `reference` from `action`, unless its namespace is being deleted.
    async fn publish_action(
        &self,
        reference: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        if reference
            .namespace
            .as_deref()
            .is_some_and(|ns| self.caches.terminating(ns))
        {
            // Refused (403 NamespaceTerminating), and nobody is left to read it.
            return;
        }
        let ev = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, reference).await {
            tracing::warn!(error = %e, "publishing an event");
        }
    }

    /// One Warning event per error diagnostic of an object whose condition just changed.
    async fn publish_errors(&self, reference: &ObjectReference, id: &ObjectId, diags: &[Diagnostic]) {
        for d in diags.iter().filter(|d| d.is_error() && d.object.as_ref() == Some(id)) {
            let note = if d.field.is_empty() {
                d.message.clone()
            } else {
                format!("{}: {}", d.field, d.message)
            };
            self.publish(reference, EventType::Warning, &d.reason, note).await;
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
    // Behind the Lease, every write of the controllers passes the leadership gate.
    let client = match &elector {
        Some(e) => crate::leader::gated(client, e.leadership()),
        None => client,
    };
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

/// Runs the fleet and key controllers and the spend reporter until shutdown.
async fn controllers(
    client: kube::Client,
    opts: &Options,
    metrics: Metrics,
    stop: watch::Receiver<bool>,
) -> Result<(), Error> {
    let (fleet_controller, caches) = watches::fleet_controller(&client, &metrics, stop.clone());
    let (newly_served_tx, newly_served) = tokio::sync::mpsc::unbounded_channel();
    let ctx = Arc::new(Context {
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: MANAGER.into(),
                instance: Some(identity()),
            },
        ),
        client: client.clone(),
        metrics,
        caches,
        redis: Arc::new(FleetRedis::new(newly_served_tx)),
        image: opts.image.clone(),
        pacing: Pacing::default(),
        memory: Memory::default(),
        status_writers: StatusWriters::default(),
        cleanup_deadline: opts.key_cleanup_deadline,
    });

    let fleets = fleet_controller
        .run(fleet_reconcile::reconcile_fleet, fleet_error_policy, ctx.clone())
        .for_each(|r| async move { log_outcome("llmgateway", r) });
    let spend = crate::spend::report(
        client.clone(),
        ctx.caches.gateways.clone(),
        ctx.caches.keys.clone(),
        ctx.caches.budgets.clone(),
        ctx.redis.clone(),
        opts.spend_interval,
        stop.clone(),
    );
    let generated_keys = watches::key_controller(&client, newly_served, stop)
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

pub(crate) fn fleet_error_policy(gw: Arc<LLMGateway>, error: &Error, ctx: Arc<Context>) -> Action {
    retry_after(&ctx, "llmgateway", &*gw, error)
}

fn key_error_policy(vk: Arc<VirtualKey>, error: &Error, ctx: Arc<Context>) -> Action {
    retry_after(&ctx, "virtualkey", &*vk, error)
}

/// What a failed reconcile of `controller` does next: retried after [`RETRY`], unless the
/// namespace is being deleted (nothing to retry there). Failures are counted by their kind.
fn retry_after<K: Resource>(ctx: &Context, controller: &'static str, obj: &K, error: &Error) -> Action {
    let (namespace, name) = (obj.meta().namespace.as_deref(), obj.meta().name.as_deref());
    if error.namespace_terminating() {
        tracing::debug!(
            controller,
            ?namespace,
            ?name,
            "namespace is being deleted or gone; not retrying"
        );
        return Action::await_change();
    }
    ctx.metrics.failed(controller, error);
    tracing::warn!(controller, ?namespace, ?name, %error, reason = error.reason(), "reconcile failed; retrying in {RETRY:?}");
    Action::requeue(RETRY)
}

async fn reconcile_key(vk: Arc<VirtualKey>, ctx: Arc<Context>) -> Result<Action, Error> {
    // The Namespace cache must have listed: at startup, keys of a namespace being deleted would
    // otherwise each cost two refused API calls. (Waiting is not reconcile time.)
    ctx.caches.synced().await?;
    let _timer = ctx.metrics.start("virtualkey");
    if vk.metadata.deletion_timestamp.is_none()
        && vk
            .metadata
            .namespace
            .as_deref()
            .is_some_and(|ns| ctx.caches.terminating(ns))
    {
        // Its generated Secret may be gone already (the namespace's content is deleted in no
        // particular order) and cannot be created again; the key itself goes next, and its
        // deletion (finalizer included) is handled then.
        return Ok(Action::await_change());
    }
    match keys::finalize(&vk, &ctx.client, &ctx.redis, ctx.cleanup_deadline).await? {
        keys::Finalize::Live => {}
        keys::Finalize::Deleted => return Ok(Action::await_change()),
        keys::Finalize::Retry(failures) => {
            for f in &failures {
                tracing::warn!(namespace = ?vk.metadata.namespace, virtual_key = %vk.name_any(), %f,
                    "deleting a deleted key's counters failed; retrying in {CLEANUP_RETRY:?}");
            }
            return Ok(Action::requeue(CLEANUP_RETRY));
        }
        keys::Finalize::GiveUp(failures) => {
            give_up_cleanup(&vk, &failures, &ctx).await;
            keys::drop_finalizer(&vk, &ctx.client).await?;
            return Ok(Action::await_change());
        }
    }
    keys::reconcile(vk, ctx.client.clone()).await
}

/// Says that a deleted key goes without its counters deleted from some fleets' Redis: a
/// Warning event on the key (unless its namespace is being deleted, which refuses events) and
/// one on each fleet whose Redis failed (naming no key: a fleet may not serve it).
async fn give_up_cleanup(vk: &VirtualKey, failures: &[crate::spend::ServerFailure], ctx: &Context) {
    let what: Vec<String> = failures.iter().map(ToString::to_string).collect();
    tracing::warn!(namespace = ?vk.metadata.namespace, virtual_key = %vk.name_any(), failures = ?what,
        "giving up deleting the key's counters after {:?}; the key is let go", ctx.cleanup_deadline);
    let note = format!(
        "Deleting the key's counters failed for {:?} ({}); the key is deleted without it: {}.",
        ctx.cleanup_deadline,
        what.join("; "),
        keys::ABANDONED_COUNTERS
    );
    ctx.publish_action(
        &vk.object_ref(&()),
        EventType::Warning,
        "RedisCleanupAbandoned",
        "Cleanup",
        note,
    )
    .await;
    for f in failures {
        for (ns, name) in &f.fleets {
            let Some(gw) = ctx
                .caches
                .gateways
                .get(&kube::runtime::reflector::ObjectRef::new(name).within(ns))
            else {
                continue;
            };
            let note = format!(
                "A deleted VirtualKey's counters could not be deleted from this fleet's Redis for {:?} ({}); they are left to expire.",
                ctx.cleanup_deadline, f.error
            );
            ctx.publish_action(
                &gw.object_ref(&()),
                EventType::Warning,
                "RedisCleanupAbandoned",
                "Cleanup",
                note,
            )
            .await;
        }
    }
}

/// Writes an object's status with server-side apply under [`MANAGER`].
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
