//! Provider quotas (`rpm`, `tpm`, `maxConcurrency`), taken in the shared state when a backend is
//! chosen, in one atomic step (the same one a key's limits use, scope `p:<provider>`): exact
//! across a fleet sharing Redis, and race-free in one process. A backend whose provider is at
//! its quota is skipped like one cooling down. The hold is released when the attempt ends (a
//! stream's when the stream ends), its token estimate corrected by the completion tokens; its
//! `maxConcurrency` slot is renewed while the attempt runs ([`Leases`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::FutureExt;
use switchyard_config::LimitsConfig;

use crate::state::{Acquire, Backend, Leases, Release, Renew, Slot, StateError, Verdict};

/// How long a quota's slot outlives a gateway that died holding it (as a key's, `limits`). A
/// live attempt's slot is renewed every third of this.
const LEASE_TTL_MS: i64 = 15 * 60 * 1000;

/// Milliseconds since the epoch (Redis places windows by its own clock).
pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Where quotas are taken (`state`) and their slots renewed.
pub(crate) fn leases(state: Arc<Slot>) -> Arc<Leases> {
    Arc::new(Leases::new(state, LEASE_TTL_MS, now_ms))
}

/// The shared-state scope of a provider's quota.
pub(crate) fn scope(provider: &str) -> String {
    format!("p:{provider}")
}

/// A provider quota taken for one attempt; released on drop.
pub struct QuotaHold {
    leases: Arc<Leases>,
    /// Its entry among the holds kept alive (a `maxConcurrency` slot).
    open: Option<u64>,
    scope: String,
    lease: Option<String>,
    /// The token window bucket the estimate went to.
    bucket: Option<i64>,
    local: bool,
    /// Tokens learnt after sending (the completion), added to the window at release.
    extra: AtomicU64,
}

impl std::fmt::Debug for QuotaHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuotaHold").field("scope", &self.scope).finish()
    }
}

/// Takes `quota` for one request of `tokens` estimated tokens. `Ok(None)`: the provider has no
/// quota. `Err(Some(ms))`: at quota, free again in about `ms`; `Err(None)`: the state failed
/// (fail closed: the backend is skipped for a second).
pub(crate) async fn take(
    leases: &Arc<Leases>,
    provider: &str,
    quota: &LimitsConfig,
    tokens: u64,
) -> Result<Option<Arc<QuotaHold>>, Option<i64>> {
    if quota.is_unlimited() {
        return Ok(None);
    }
    let lease = format!("{:016x}", rand::random::<u64>());
    let req = Acquire {
        scope: scope(provider),
        now_ms: now_ms(),
        rpm: quota.rpm,
        tpm: quota.tpm,
        tokens,
        max_parallel: quota.max_parallel,
        lease: lease.clone(),
        lease_ttl_ms: leases.ttl_ms(),
        budget: None,
    };
    let verdict: Result<Verdict, StateError> = leases.state().get().acquire(&req).await;
    match verdict {
        Ok(Verdict::Granted { snapshot, local }) => Ok(Some(Arc::new(QuotaHold {
            leases: leases.clone(),
            open: quota.max_parallel.map(|_| {
                leases.hold(Renew {
                    scope: req.scope.clone(),
                    now_ms: req.now_ms,
                    lease: Some(lease.clone()),
                    hold: None,
                    lease_ttl_ms: leases.ttl_ms(),
                    local,
                })
            }),
            scope: req.scope,
            lease: quota.max_parallel.map(|_| lease),
            bucket: quota.tpm.map(|_| snapshot.at_ms.div_euclid(1000)),
            local,
            extra: AtomicU64::new(0),
        }))),
        Ok(Verdict::Refused { retry_after_ms, .. }) => Err(Some(retry_after_ms.unwrap_or(1000))),
        Err(e) => {
            tracing::debug!(error = %e, provider, "provider quota cannot be checked");
            Err(None)
        }
    }
}

impl QuotaHold {
    /// Adds tokens learnt after sending.
    pub fn tokens(&self, tokens: u64) {
        // Saturating: the count comes from the upstream's usage; a wrapped one would free quota.
        let _ = self
            .extra
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_add(tokens)));
    }
}

impl Drop for QuotaHold {
    fn drop(&mut self) {
        if let Some(id) = self.open.take() {
            self.leases.close(id);
        }
        if self.lease.is_none() && self.bucket.is_none() {
            return;
        }
        let extra = i64::try_from(self.extra.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
        let rel = Release {
            scope: std::mem::take(&mut self.scope),
            now_ms: now_ms(),
            lease: self.lease.take(),
            tokens: self.bucket.filter(|_| extra > 0).map(|b| (b, extra)),
            settle: None,
            local: self.local,
        };
        let state = self.leases.state().clone();
        if state.get().backend() == Backend::Memory {
            let _ = state.get().release(&rel).now_or_never();
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = state.get().release(&rel).await {
                    tracing::debug!(error = %e, scope = %rel.scope, "releasing a provider quota failed");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::route::testing::*;
    use crate::state::{Redis, Slot};
    use switchyard_config::{FailMode, LimitsConfig, RedisConfig, SecretString};

    fn quota_config(quota: LimitsConfig) -> GatewayConfig {
        let mut r = route_config("r", vec![backend("a", "m", 1, 0)]);
        r.retries = retries(0, 1);
        let mut cfg = config(vec![r]);
        cfg.providers[0].quota = quota;
        cfg
    }

    async fn served(h: &Harness, n: usize) -> (usize, Vec<u16>) {
        let calls = (0..n).map(|_| h.call("r", false));
        let mut ok = 0;
        let mut refused = Vec::new();
        for r in futures::future::join_all(calls).await {
            match r {
                Ok(_) => ok += 1,
                Err(e) => refused.push(e.status.as_u16()),
            }
        }
        (ok, refused)
    }

    /// Concurrent requests in one process never take more than the quota: the check and the
    /// increment are one step.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_requests_stay_within_a_provider_quota() {
        let h = Arc::new(Harness::with(quota_config(LimitsConfig {
            rpm: Some(5),
            ..LimitsConfig::default()
        })));
        let tasks: Vec<_> = (0..24)
            .map(|_| {
                let h = h.clone();
                tokio::spawn(async move { h.call("r", false).await.map(|_| ()).map_err(|e| e.status.as_u16()) })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap_or_else(|e| panic!("{e}")) {
                Ok(()) => ok += 1,
                // As for a backend cooling down: 503 with retry-after.
                Err(status) => assert_eq!(status, 503),
            }
        }
        assert_eq!(ok, 5);

        // maxConcurrency: slow answers hold their slots; the others are refused at once.
        let h = Harness::with(quota_config(LimitsConfig {
            max_parallel: Some(2),
            ..LimitsConfig::default()
        }));
        h.fake.script("m", slow(Duration::from_millis(300)));
        let (ok, refused) = served(&h, 10).await;
        assert_eq!((ok, refused.len()), (2, 8), "{refused:?}");
        assert!(refused.iter().all(|s| *s == 503));
        // Released when the attempts end.
        assert_eq!(served(&h, 2).await.0, 2);
    }

    /// An attempt that runs longer than a lease keeps its `maxConcurrency` slot (renewed while
    /// it runs, in memory and in Redis), and frees it when it ends.
    #[tokio::test]
    async fn a_long_attempt_keeps_its_provider_slot() {
        let server = crate::state::tests::RedisServer::start(false).await;
        let redis = Redis::start(&RedisConfig {
            url: SecretString::new(server.url()),
            cluster: false,
            fail_mode: FailMode::Closed,
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let in_redis = Arc::new(Slot::default());
        in_redis.choose(Arc::new(redis));
        for (state, what) in [(Arc::new(Slot::default()), "memory"), (in_redis, "redis")] {
            let cfg = quota_config(LimitsConfig {
                max_parallel: Some(1),
                ..LimitsConfig::default()
            });
            let mut h = Harness::with_state(cfg, state);
            // A 600 ms lease is renewed every 200 ms: a renewal may come up to 400 ms late (a
            // loaded CI machine) before the slot lapses.
            h.routing = h.routing.with_quota_lease_ttl(600);
            let h = Arc::new(h);
            h.fake.script("m", slow(Duration::from_millis(3200)));
            let first = tokio::spawn({
                let h = h.clone();
                async move { h.call("r", false).await.map(|_| ()).map_err(|e| e.to_string()) }
            });
            // Three leases later the first attempt still holds the one slot.
            tokio::time::sleep(Duration::from_millis(2000)).await;
            let second = h.call("r", false).await.map(|_| ()).map_err(|e| e.status.as_u16());
            assert_eq!(second, Err(503), "{what}: the slot lapsed while its attempt ran");
            assert_eq!(first.await.unwrap_or_else(|e| panic!("{e}")), Ok(()), "{what}");
            // Released when the attempt ended.
            h.fake.script("m", slow(Duration::from_millis(1)));
            let mut freed = false;
            for _ in 0..50 {
                if h.call("r", false).await.is_ok() {
                    freed = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(freed, "{what}: the slot was not freed when the attempt ended");
        }
    }

    /// Two gateways on one Redis admit a provider's rpm together, not each.
    #[tokio::test]
    async fn a_provider_quota_holds_across_gateways_sharing_redis() {
        let server = crate::state::tests::RedisServer::start(false).await;
        let gateway = || {
            let redis = Redis::start(&RedisConfig {
                url: SecretString::new(server.url()),
                cluster: false,
                fail_mode: FailMode::Closed,
            })
            .unwrap_or_else(|e| panic!("{e}"));
            let slot = Arc::new(Slot::default());
            slot.choose(Arc::new(redis));
            Harness::with_state(
                quota_config(LimitsConfig {
                    rpm: Some(3),
                    ..LimitsConfig::default()
                }),
                slot,
            )
        };
        let (a, b) = (gateway(), gateway());
        let mut ok = 0;
        for i in 0..8 {
            let h = if i % 2 == 0 { &a } else { &b };
            match h.call("r", false).await {
                Ok(_) => ok += 1,
                Err(e) => {
                    assert_eq!(e.status.as_u16(), 503, "{e}");
                    assert!(e.retry_after.is_some());
                }
            }
        }
        assert_eq!(ok, 3);
    }
}
