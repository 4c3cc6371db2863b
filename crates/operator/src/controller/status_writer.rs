//! The status fan-out: one writer task per fleet writes the statuses of the routes, Providers
//! and keys its latest reconcile compiled (which ones, and what they say, is the pure
//! `status::object_statuses`), and the Warning events of errors that are new.
//!
//! The config is published without waiting for thousands of status writes, and a newer
//! outcome replaces one not yet started, so a burst of reconciles costs one pass.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, PoisonError};

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::NamespaceResourceScope;
use kube::runtime::reflector::ObjectRef;
use kube::Resource;
use serde::de::DeserializeOwned;
use serde::Serialize;
use switchyard_config::Diagnostic;
use tokio::sync::watch;

use super::{apply_status, Context, RETRY};
use crate::fleet::{fleet_id, FleetId};
use crate::status::{self, Cached, StatusUpdate, StatusWork};
use crate::Error;

/// Where a fleet's latest [`StatusWork`] goes.
type StatusSender = watch::Sender<Option<Arc<StatusWork>>>;

/// The per-fleet status writers: each writes the latest [`StatusWork`] of its fleet.
#[derive(Default)]
pub(crate) struct StatusWriters {
    inner: Mutex<Writers>,
}

#[derive(Default)]
struct Writers {
    next_id: u64,
    by_fleet: HashMap<FleetId, (u64, StatusSender)>,
}

/// Hands a fleet's object statuses to its writer task, which writes them after the reconcile
/// returned (starting the task when the fleet has none).
pub(super) fn queue(ctx: &Arc<Context>, work: StatusWork) {
    let fleet = fleet_id(&work.gw);
    let work = Some(Arc::new(work));
    let mut w = ctx.status_writers.inner.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, tx)) = w.by_fleet.get(&fleet) {
        if tx.send(work.clone()).is_ok() {
            return;
        }
    }
    let (tx, mut rx) = watch::channel(work);
    rx.mark_changed();
    w.next_id += 1;
    let id = w.next_id;
    w.by_fleet.insert(fleet.clone(), (id, tx));
    tokio::spawn(status_writer(ctx.clone(), fleet, id, rx));
}

/// Writes the latest status work of one fleet until the fleet is gone; retries a failed pass
/// after [`RETRY`] unless newer work arrives first.
async fn status_writer(ctx: Arc<Context>, fleet: FleetId, id: u64, mut rx: watch::Receiver<Option<Arc<StatusWork>>>) {
    while rx.changed().await.is_ok() {
        {
            let mut w = ctx.status_writers.inner.lock().unwrap_or_else(PoisonError::into_inner);
            if ctx
                .caches
                .gateways
                .get(&ObjectRef::new(&fleet.1).within(&fleet.0))
                .is_none()
            {
                if w.by_fleet.get(&fleet).is_some_and(|(i, _)| *i == id) {
                    w.by_fleet.remove(&fleet);
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
                ctx.metrics.failed("status", &error);
                tracing::warn!(namespace = %fleet.0, fleet = %fleet.1, %error, reason = error.reason(), "writing object statuses failed; retrying in {RETRY:?}");
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
    update: StatusUpdate<K, S>,
    work: &'a StatusWork,
) -> BoxFuture<'a, Result<(), Error>>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'a,
    S: Serialize + Send + Sync + 'a,
{
    async move {
        apply_status(&ctx.client, &*update.object, &update.status).await?;
        if let Some(id) = update.new_errors {
            let diags: &[Diagnostic] = work.diagnostics_of(&id);
            ctx.publish_errors(&update.object.object_ref(&()), &id, diags).await;
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
    let caches = &ctx.caches;
    let secret = |sns: &str, sname: &str| caches.secrets.get(sns, sname);
    let updates = status::object_statuses(
        work,
        &Cached {
            gateways: &caches.gateways.state(),
            routes: &caches.routes.state(),
            providers: &caches.providers.state(),
            keys: &caches.keys.state(),
            namespaces: &caches.namespaces,
            secret: &secret,
        },
        now,
    );
    let written = updates.len();
    let writes: Vec<BoxFuture<'_, Result<(), Error>>> = updates
        .routes
        .into_iter()
        .map(|u| write_status(ctx, u, work))
        .chain(updates.providers.into_iter().map(|u| write_status(ctx, u, work)))
        .chain(updates.keys.into_iter().map(|u| write_status(ctx, u, work)))
        .collect();
    futures::stream::iter(writes)
        .buffer_unordered(STATUS_WRITES)
        .try_collect::<()>()
        .await?;
    Ok(written)
}
