//! Backend cooldowns and circuit breakers shared by a fleet: the routing's [`CooldownStore`]
//! on Redis when the fleet has one, so a backend that fails (or answers 429) is skipped by every
//! replica, not only by the one that saw it. Redis is chosen with the rest of the shared state,
//! once; until then, and whenever Redis is unreachable, this process's own cooldowns apply
//! (cooldowns are advice, so they fail open whatever the fleet's fail mode).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;

use super::circuit::{Availability, BackendState, CooldownStore, MemoryCooldowns, Strike};
use super::Redis;

/// How long a claimed probe may stay unanswered (the routing's `PROBE_LEASE`).
const PROBE_LEASE: Duration = Duration::from_secs(60);

/// Cooldowns in Redis when set, in memory otherwise.
#[derive(Default)]
pub struct SharedCooldowns {
    redis: OnceLock<Redis>,
    local: MemoryCooldowns,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn left(until: i64, now: i64) -> Duration {
    Duration::from_millis(u64::try_from(until - now).unwrap_or(0))
}

/// The routing's availability rule (see `circuit`), on Redis times.
fn availability([open, probe, cool]: [Option<i64>; 3], now: i64) -> Availability {
    if let Some(c) = cool.filter(|c| *c > now) {
        return Availability::Cooling(left(c, now));
    }
    match open {
        None => Availability::Ready,
        Some(o) if now < o => Availability::Cooling(left(o, now)),
        Some(_) => match probe.filter(|p| *p > now) {
            Some(p) => Availability::Cooling(left(p, now)),
            None => Availability::Probe,
        },
    }
}

impl SharedCooldowns {
    /// In memory until [`SharedCooldowns::use_redis`].
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Shares cooldowns through Redis from now on (once; later calls are ignored).
    pub fn use_redis(&self, redis: Redis) {
        let _ = self.redis.set(redis);
    }

    fn redis(&self) -> Option<&Redis> {
        self.redis.get().filter(|r| r.reachable())
    }
}

impl CooldownStore for SharedCooldowns {
    fn availability<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Vec<Availability>> {
        Box::pin(async move {
            if let Some(r) = self.redis() {
                let now = now_ms();
                if let Ok(times) = r.cooldown_times(keys).await {
                    return times.into_iter().map(|t| availability(t, now)).collect();
                }
            }
            self.local.availability(keys).await
        })
    }

    fn claim_probe<'a>(&'a self, key: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            if let Some(r) = self.redis() {
                if let Ok(claimed) = r.cooldown_claim(key, now_ms(), ms(PROBE_LEASE)).await {
                    return claimed;
                }
            }
            self.local.claim_probe(key).await
        })
    }

    fn success<'a>(&'a self, key: &'a str) -> BoxFuture<'a, BackendState> {
        Box::pin(async move {
            if let Some(r) = self.redis() {
                if r.cooldown_success(key, now_ms()).await.is_ok() {
                    return BackendState::Healthy;
                }
            }
            self.local.success(key).await
        })
    }

    fn failure<'a>(&'a self, key: &'a str, strike: Strike) -> BoxFuture<'a, BackendState> {
        Box::pin(async move {
            if let Some(r) = self.redis() {
                let state = r
                    .cooldown_failure(
                        key,
                        now_ms(),
                        strike.counts,
                        strike.threshold,
                        ms(strike.open_for),
                        strike.cool_for.map(ms),
                    )
                    .await;
                match state {
                    Ok(2) => return BackendState::Open,
                    Ok(1) => return BackendState::Cooling,
                    Ok(_) => return BackendState::Healthy,
                    Err(_) => {}
                }
            }
            self.local.failure(key, strike).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::RedisServer;
    use switchyard_config::{FailMode, RedisConfig, SecretString};

    #[test]
    fn availability_follows_the_routing_rule() {
        let now = 1_000_000;
        assert_eq!(availability([None, None, None], now), Availability::Ready);
        assert_eq!(
            availability([None, None, Some(now + 1500)], now),
            Availability::Cooling(Duration::from_millis(1500))
        );
        assert_eq!(
            availability([Some(now + 10), None, None], now),
            Availability::Cooling(Duration::from_millis(10))
        );
        assert_eq!(availability([Some(now), None, None], now), Availability::Probe);
        assert_eq!(
            availability([Some(now - 5), Some(now + 7), None], now),
            Availability::Cooling(Duration::from_millis(7))
        );
    }

    #[tokio::test]
    async fn two_replicas_share_a_circuit_through_redis() {
        let server = RedisServer::start(false).await;
        let cfg = RedisConfig {
            url: SecretString::new(server.url()),
            cluster: false,
            fail_mode: FailMode::Open,
        };
        let replica = || {
            let c = SharedCooldowns::new();
            c.use_redis(Redis::start(&cfg).unwrap_or_else(|e| panic!("{e}")));
            c
        };
        let (a, b) = (replica(), replica());
        let key = "default/openai|gpt-4o".to_string();
        // Long enough that the checks right after opening run well inside it on a loaded
        // machine; the end of it is waited for, not slept past.
        let open_for = Duration::from_secs(2);
        let strike = Strike {
            counts: true,
            threshold: 2,
            open_for,
            cool_for: None,
        };
        assert_eq!(a.failure(&key, strike).await, BackendState::Healthy);
        // The second failure, seen by the other replica, opens the circuit for both.
        let opened = std::time::Instant::now();
        assert_eq!(b.failure(&key, strike).await, BackendState::Open);
        match a.availability(std::slice::from_ref(&key)).await[0] {
            Availability::Cooling(left) => assert!(left <= open_for, "{left:?}"),
            other => panic!("the other replica does not see the open circuit: {other:?}"),
        }
        // Once open_for has passed (and not before), each replica may probe.
        let deadline = opened + open_for + Duration::from_secs(10);
        loop {
            match b.availability(std::slice::from_ref(&key)).await[0] {
                Availability::Probe => break,
                Availability::Cooling(_) => {}
                other => panic!("neither cooling nor probing: {other:?}"),
            }
            assert!(
                std::time::Instant::now() < deadline,
                "still cooling {:?} after opening for {open_for:?}",
                opened.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Redis times are whole milliseconds: the window may end up to 1 ms early.
        assert!(
            opened.elapsed() + Duration::from_millis(1) >= open_for,
            "probing after {:?}, before the {open_for:?} window ended",
            opened.elapsed()
        );
        // One probe for the fleet.
        assert!(a.claim_probe(&key).await);
        assert!(!b.claim_probe(&key).await);
        assert_eq!(b.success(&key).await, BackendState::Healthy);
        assert_eq!(
            a.availability(std::slice::from_ref(&key)).await,
            vec![Availability::Ready]
        );
        // A 429's retry-after cools the backend for every replica.
        let limited = Strike {
            counts: false,
            threshold: 2,
            open_for: Duration::from_secs(1),
            cool_for: Some(Duration::from_secs(5)),
        };
        assert_eq!(a.failure(&key, limited).await, BackendState::Cooling);
        assert!(
            matches!(b.availability(std::slice::from_ref(&key)).await[0], Availability::Cooling(d) if d > Duration::from_secs(4))
        );
    }
}
