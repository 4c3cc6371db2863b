//! The leases live requests hold (a key's concurrency slot and budget reservations, a
//! Provider's `maxConcurrency` slot), kept alive while the request runs: one task per
//! [`Leases`] renews every hold older than a third of its lease. A request that ends in seconds
//! is never renewed; a gateway that dies stops renewing, and its holds lapse one lease later.

use rustc_hash::FxHashMap as HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use super::{Renew, Slot};

/// The live holds of one owner, and their renewer.
pub struct Leases {
    state: Arc<Slot>,
    /// Milliseconds since the epoch, from the owner's clock (Redis places expiries by its own).
    now: Box<dyn Fn() -> i64 + Send + Sync>,
    /// The lease given at each renewal, ms.
    ttl_ms: i64,
    open: Mutex<HashMap<u64, Open>>,
    next: AtomicU64,
    renewer: OnceLock<()>,
}

/// A live request's holds.
struct Open {
    renew: Renew,
    /// When they were taken or last renewed, ms.
    since_ms: i64,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases")
            .field("ttl_ms", &self.ttl_ms)
            .finish_non_exhaustive()
    }
}

impl Leases {
    /// Leases of `ttl_ms` in `state`, timed by `now`.
    pub fn new(state: Arc<Slot>, ttl_ms: i64, now: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        Self {
            state,
            now: Box::new(now),
            ttl_ms,
            open: Mutex::new(HashMap::default()),
            next: AtomicU64::new(1),
            renewer: OnceLock::new(),
        }
    }

    /// The state the holds are in.
    pub fn state(&self) -> &Arc<Slot> {
        &self.state
    }

    /// The lease, ms.
    pub fn ttl_ms(&self) -> i64 {
        self.ttl_ms
    }

    /// Keeps `renew`'s holds alive until [`Leases::close`] with the id returned; starts the
    /// renewer on first use (inside a Tokio runtime).
    pub fn hold(self: &Arc<Self>, renew: Renew) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let since_ms = renew.now_ms;
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, Open { renew, since_ms });
        if self.renewer.get().is_none() && tokio::runtime::Handle::try_current().is_ok() {
            self.renewer.get_or_init(|| {
                tokio::spawn(renewer(Arc::downgrade(self)));
            });
        }
        id
    }

    /// Stops renewing the holds of `id` (the request ended; its owner releases them).
    pub fn close(&self, id: u64) {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }
}

/// Every third of a lease, renews the holds that have lived that long: one task per owner, not
/// one per request. Ends when the owner is dropped.
async fn renewer(leases: Weak<Leases>) {
    loop {
        let every = match leases.upgrade() {
            Some(l) => Duration::from_millis(u64::try_from(l.ttl_ms / 3).unwrap_or(1).max(1)),
            None => return,
        };
        tokio::time::sleep(every).await;
        let Some(leases) = leases.upgrade() else { return };
        let now_ms = (leases.now)();
        let due: Vec<(u64, Renew)> = {
            let open = leases.open.lock().unwrap_or_else(|p| p.into_inner());
            open.iter()
                .filter(|(_, o)| now_ms - o.since_ms >= leases.ttl_ms / 3)
                .map(|(id, o)| (*id, o.renew.clone()))
                .collect()
        };
        for (id, mut renew) in due {
            renew.now_ms = now_ms;
            renew.lease_ttl_ms = leases.ttl_ms;
            match leases.state.get().renew(&renew).await {
                Ok(()) => {
                    if let Some(o) = leases.open.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&id) {
                        o.since_ms = now_ms;
                    }
                }
                Err(e) => tracing::debug!(error = %e, scope = %renew.scope, "renewing a lease failed; retried"),
            }
        }
    }
}
