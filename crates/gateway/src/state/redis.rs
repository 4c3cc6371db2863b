//! Redis-backed state for a fleet. Each scope's keys share one hash tag (`swy:{k:ns/name}:...`)
//! so one Lua script can check and take all of a scope's limits atomically, on a single Redis
//! or a Redis Cluster.
//!
//! While Redis is unreachable the configured fail mode applies: `open` serves with this
//! process's own limits ([`Memory`], seeded with the last spend Redis reported), `closed`
//! refuses. Spend is never dropped: what cannot be written is queued and written when Redis
//! answers again. A background task probes Redis and switches back when it does.
//!
//! Spend is never counted twice either: a call that timed out may still have run in Redis, so a
//! release that adds spend carries a token the script marks as applied ([`SETTLED_TTL_MS`]), and
//! the queued retry of a release that ran is a no-op.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use futures::future::BoxFuture;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, Pipeline, RedisFuture, Script, Value};
use switchyard_config::{FailMode, RedisConfig};

use super::{fmt_usd, Acquire, Backend, Memory, Reason, Release, Renew, SharedState, Snapshot, StateError, Verdict};

/// Longest wait for one Redis call on the request path.
const OP_TIMEOUT: Duration = Duration::from_millis(500);
/// How often an unreachable Redis is probed.
const PROBE_EVERY: Duration = Duration::from_millis(250);

/// Checks and takes a scope's budget, windows and slot (see `Memory`'s `decide`, the same steps).
/// Windows and lease expiries are placed by Redis' clock (`TIME`), not the caller's, so replicas
/// with skewed clocks agree (ARGV[13] = '1' takes the caller's `now` instead: tests that move time).
const ACQUIRE: &str = r"
local now = tonumber(ARGV[1])
if ARGV[13] ~= '1' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local sec = math.floor(now / 1000)
local span = 60
local function until_empty(b) return (b + span) * 1000 - now end
local function window(key, limit, cost)
  local h = redis.call('HGETALL', key)
  local used, live, old = 0, {}, {}
  for i = 1, #h, 2 do
    local b, v = tonumber(h[i]), tonumber(h[i + 1])
    if b <= sec - span then old[#old + 1] = h[i] else used = used + v; live[#live + 1] = {b, v} end
  end
  if #old > 0 then redis.call('HDEL', key, unpack(old)) end
  if used < 0 then used = 0 end
  if used + cost <= limit then
    local reset = 0
    if used + cost > 0 then reset = until_empty(sec) end
    return true, limit - used - cost, reset, 0
  end
  table.sort(live, function(a, b) return a[1] < b[1] end)
  local need, freed, retry = used + cost - limit, 0, span * 1000
  if cost <= limit then
    for _, e in ipairs(live) do
      freed = freed + e[2]
      if freed >= need then retry = until_empty(e[1]); break end
    end
  end
  local newest = sec
  if #live > 0 then newest = live[#live][1] end
  if retry < 1 then retry = 1 end
  local rem = limit - used
  if rem < 0 then rem = 0 end
  return false, rem, until_empty(newest), retry
end
local bflag = tonumber(ARGV[8])
local maxs = tonumber(ARGV[9])
local spend = 0
if bflag > 0 then spend = tonumber(redis.call('GET', KEYS[4]) or '0') end
local rr, rreset, tr, treset = 0, 0, 0, 0
local function out(code, retry)
  return {code, retry, rr, rreset, tr, treset, string.format('%.12f', spend), now}
end
if bflag == 1 and spend >= maxs then return out(1, tonumber(ARGV[12])) end
local rpm = tonumber(ARGV[2])
if rpm >= 0 then
  local ok, rem, reset, retry = window(KEYS[1], rpm, 1)
  rr, rreset = rem, reset
  if not ok then return out(2, retry) end
end
local tpm, tokens = tonumber(ARGV[3]), tonumber(ARGV[4])
if tpm >= 0 then
  local ok, rem, reset, retry = window(KEYS[2], tpm, tokens)
  tr, treset = rem, reset
  if not ok then
    if rpm >= 0 then rr = rr + 1 end
    return out(3, retry)
  end
end
local par = tonumber(ARGV[5])
if par >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('ZCARD', KEYS[3]) >= par then return out(4, 1000) end
end
if bflag == 1 then
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
  local held = redis.call('ZRANGE', KEYS[5], 0, -1)
  local reserved = 0
  for _, m in ipairs(held) do reserved = reserved + (tonumber(string.match(m, ':([^:]*)$')) or 0) end
  if spend + reserved + tonumber(ARGV[10]) > maxs and #held > 0 then return out(5, 1000) end
end
local ttl = tonumber(ARGV[7])
if rpm >= 0 then
  redis.call('HINCRBY', KEYS[1], sec, 1)
  redis.call('PEXPIRE', KEYS[1], span * 1000 + 1000)
end
if tpm >= 0 then
  redis.call('HINCRBY', KEYS[2], sec, tokens)
  redis.call('PEXPIRE', KEYS[2], span * 1000 + 1000)
end
if par >= 0 then
  redis.call('ZADD', KEYS[3], now + ttl, ARGV[6])
  redis.call('PEXPIRE', KEYS[3], ttl)
end
if bflag == 1 then
  redis.call('ZADD', KEYS[5], now + ttl, ARGV[11])
  redis.call('PEXPIRE', KEYS[5], ttl)
end
return out(0, 0)
";

/// What ACQUIRE returns: code, retry-after ms, requests remaining and reset, tokens remaining
/// and reset, the period's spend, and Redis' time.
type AcquireAnswer = (i64, i64, i64, i64, i64, i64, String, i64);

/// How long a release's token stays marked as applied: longer than any retry of a timed-out
/// release waits for Redis to answer, short enough not to fill it (one key per priced request).
const SETTLED_TTL_MS: u64 = 10 * 60 * 1000;

/// Frees a slot, corrects the token window, drops a reservation, adds spend and records when the
/// key was last used (kept 35 days, for the operator). With a token (ARGV[9]), does nothing if a
/// release with that token already ran (KEYS[6] marks it), so a retry cannot add spend twice.
const RELEASE: &str = r"
if ARGV[9] ~= '' and not redis.call('SET', KEYS[6], '1', 'NX', 'PX', ARGV[10]) then
  if ARGV[6] == '' then return false end
  return redis.call('GET', KEYS[3]) or '0'
end
local now = tonumber(ARGV[1])
if ARGV[8] ~= '1' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local sec = math.floor(now / 1000)
if ARGV[2] ~= '' then redis.call('ZREM', KEYS[2], ARGV[2]) end
local b = tonumber(ARGV[3])
if b >= 0 then
  local d = tonumber(ARGV[4])
  if b > sec - 60 then
    redis.call('HINCRBY', KEYS[1], b, d)
  elseif d > 0 then
    redis.call('HINCRBY', KEYS[1], sec, d)
  end
  redis.call('PEXPIRE', KEYS[1], 61000)
end
if ARGV[5] ~= '' then redis.call('ZREM', KEYS[4], ARGV[5]) end
if ARGV[6] == '' then return false end
local spend
if tonumber(ARGV[6]) > 0 then
  spend = redis.call('INCRBYFLOAT', KEYS[3], ARGV[6])
else
  spend = redis.call('GET', KEYS[3]) or '0'
end
local keep = tonumber(ARGV[7])
if keep > 0 then redis.call('PEXPIRE', KEYS[3], keep) end
redis.call('SET', KEYS[5], now, 'PX', 3024000000)
return spend
";

/// Pushes back a live request's slot and reservation (only members still there: `XX`), by
/// Redis' clock unless ARGV[4] = '1'.
const RENEW: &str = r"
local now = tonumber(ARGV[1])
if ARGV[4] ~= '1' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local ttl = tonumber(ARGV[2])
if ARGV[3] ~= '' and redis.call('ZADD', KEYS[1], 'XX', 'CH', now + ttl, ARGV[3]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
if ARGV[5] ~= '' and redis.call('ZADD', KEYS[2], 'XX', 'CH', now + ttl, ARGV[5]) > 0 then
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return 0
";

/// Redis key names. The `{...}` hash tag keeps one scope's keys in one cluster slot; the names
/// the operator also reads are in `switchyard_config::shared_state`.
pub(crate) mod keys {
    pub use switchyard_config::shared_state::redis_keys::{holds, last_used, scoped, spend};

    /// A once-only mark.
    pub fn mark(name: &str) -> String {
        format!("swy:mark:{{{name}}}")
    }
    /// A cached response.
    pub fn cache(key: &[u8; 32]) -> String {
        format!("swy:cache:{}", hex::encode(key))
    }
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

enum Connector {
    Single,
    Cluster(Box<redis::cluster::ClusterClient>),
}

/// Spend not yet written: (scope, period, token of the release that failed, "" for local
/// grants) -> (USD, keep ms).
type Pending = HashMap<(String, String, String), (f64, Option<i64>)>;

struct Inner {
    conn: ArcSwapOption<Conn>,
    connector: Connector,
    up: AtomicBool,
    fail_mode: FailMode,
    /// Place windows by the caller's `now_ms` rather than Redis' `TIME` (tests that move time).
    caller_clock: AtomicBool,
    local: Memory,
    pending: Mutex<Pending>,
    /// Slots and reservations taken in Redis whose release failed: dropped when it answers,
    /// rather than holding budget until their leases expire.
    orphans: Mutex<Vec<Release>>,
    acquire: Script,
    release: Script,
    renew: Script,
    cd_claim: Script,
    cd_success: Script,
    cd_failure: Script,
}

/// The Redis state.
#[derive(Clone)]
pub struct Redis {
    inner: Arc<Inner>,
}

impl Redis {
    /// Connects (lazily) and starts the health task. Needs a Tokio runtime.
    pub fn start(cfg: &RedisConfig) -> Result<Self, redis::RedisError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "no async runtime to run the Redis connection on",
            )));
        }
        let url = cfg.url.expose();
        let (conn, connector, up) = if cfg.cluster {
            let client = redis::cluster::ClusterClient::builder(vec![url])
                .connection_timeout(OP_TIMEOUT)
                .response_timeout(OP_TIMEOUT)
                .build()?;
            (None, Connector::Cluster(Box::new(client)), false)
        } else {
            let client = redis::Client::open(url)?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(OP_TIMEOUT))
                .set_response_timeout(Some(OP_TIMEOUT))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(200));
            let manager = ConnectionManager::new_lazy_with_config(client, config)?;
            (Some(Arc::new(Conn::Single(manager))), Connector::Single, true)
        };
        let inner = Arc::new(Inner {
            conn: ArcSwapOption::new(conn),
            connector,
            up: AtomicBool::new(up),
            fail_mode: cfg.fail_mode,
            caller_clock: AtomicBool::new(false),
            local: Memory::new(),
            pending: Mutex::new(HashMap::new()),
            orphans: Mutex::new(Vec::new()),
            acquire: Script::new(ACQUIRE),
            release: Script::new(RELEASE),
            renew: Script::new(RENEW),
            cd_claim: Script::new(CD_CLAIM),
            cd_success: Script::new(CD_SUCCESS),
            cd_failure: Script::new(CD_FAILURE),
        });
        tokio::spawn(health(Arc::downgrade(&inner)));
        tracing::info!(cluster = cfg.cluster, fail_mode = ?cfg.fail_mode, "shared state in redis");
        Ok(Redis { inner })
    }

    /// Places windows by the callers' `now_ms` instead of Redis' clock, so a test can move time.
    #[cfg(test)]
    pub(crate) fn use_caller_clock(&self) {
        self.inner.caller_clock.store(true, Ordering::Relaxed);
    }
}

impl Inner {
    fn clock_flag(&self) -> &'static str {
        if self.caller_clock.load(Ordering::Relaxed) {
            "1"
        } else {
            "0"
        }
    }

    fn conn(&self) -> Result<Conn, StateError> {
        if !self.up.load(Ordering::Acquire) {
            return Err(StateError("redis is unreachable".into()));
        }
        self.conn
            .load_full()
            .map(|c| (*c).clone())
            .ok_or_else(|| StateError("redis is not connected".into()))
    }

    /// Runs one call with a deadline; a failure marks Redis down until the probe succeeds.
    async fn call<T, F>(&self, fut: F) -> Result<T, StateError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        match tokio::time::timeout(OP_TIMEOUT, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.down(&e.to_string());
                Err(StateError(e.to_string()))
            }
            Err(_) => {
                self.down("timed out");
                Err(StateError("redis timed out".into()))
            }
        }
    }

    fn down(&self, why: &str) {
        if self.up.swap(false, Ordering::AcqRel) {
            tracing::warn!(error = why, fail_mode = ?self.fail_mode, "redis unreachable; shared limits degraded");
        }
    }

    async fn acquire_redis(&self, req: &Acquire) -> Result<Verdict, StateError> {
        let mut conn = self.conn()?;
        let opt = |v: Option<u64>| v.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX));
        let (bflag, max_spend, reserve, member, resets) = match &req.budget {
            None => (0, String::from("0"), String::from("0"), String::new(), -1),
            Some(b) => (
                if b.enforce { 1 } else { 2 },
                fmt_usd(b.max_spend),
                fmt_usd(b.reserve),
                b.member(&req.lease),
                b.resets_in_ms.unwrap_or(-1),
            ),
        };
        let period = req.budget.as_ref().map_or("", |b| b.period.as_str());
        let mut inv = self.acquire.prepare_invoke();
        inv.key(keys::scoped(&req.scope, "rpm"))
            .key(keys::scoped(&req.scope, "tpm"))
            .key(keys::scoped(&req.scope, "par"))
            .key(keys::spend(&req.scope, period))
            .key(keys::holds(&req.scope, period))
            .arg(req.now_ms)
            .arg(opt(req.rpm.map(u64::from)))
            .arg(opt(req.tpm))
            .arg(req.tokens)
            .arg(opt(req.max_parallel.map(u64::from)))
            .arg(&req.lease)
            .arg(req.lease_ttl_ms)
            .arg(bflag)
            .arg(max_spend)
            .arg(reserve)
            .arg(member)
            .arg(resets)
            .arg(self.clock_flag());
        let answer: Result<AcquireAnswer, _> = self.call(inv.invoke_async(&mut conn)).await;
        let (code, retry, rr, rreset, tr, treset, spend, at_ms) = match answer {
            Ok(a) => a,
            Err(e) => {
                // Sent but not answered (a timeout, a connection cut): Redis may still run it
                // and take a slot and a reservation that nobody would give back for a lease's
                // 15 minutes. Their removal is queued like a failed release's: by name, so it
                // is harmless when the call never ran, and sent on the same connection once
                // Redis answers again, so it runs after the call if the call runs at all.
                self.orphan(&Release {
                    scope: req.scope.clone(),
                    now_ms: req.now_ms,
                    lease: req.max_parallel.is_some().then(|| req.lease.clone()),
                    tokens: None,
                    settle: req.budget.as_ref().filter(|b| b.enforce).map(|b| super::Settle {
                        period: b.period.clone(),
                        member: Some(b.member(&req.lease)),
                        cost: 0.0,
                        keep_ms: None,
                    }),
                    local: false,
                });
                return Err(e);
            }
        };
        let spend: f64 = spend.parse().unwrap_or(0.0);
        if let Some(b) = &req.budget {
            self.local.seed_spend(&req.scope, &b.period, spend);
        }
        let snapshot = Snapshot {
            requests_remaining: u64::try_from(rr).unwrap_or(0),
            requests_reset_ms: rreset,
            tokens_remaining: u64::try_from(tr).unwrap_or(0),
            tokens_reset_ms: treset,
            spend,
            at_ms,
        };
        Ok(match Reason::from_code(code) {
            None => Verdict::Granted { snapshot, local: false },
            Some(reason) => Verdict::Refused {
                reason,
                retry_after_ms: (retry >= 0).then_some(retry),
                snapshot,
            },
        })
    }

    /// Runs a release; `token` (non-empty) makes it apply once however often it is sent.
    async fn release_redis(&self, rel: &Release, token: &str) -> Result<Option<f64>, StateError> {
        let mut conn = self.conn()?;
        let settle = rel.settle.as_ref();
        let period = settle.map_or("", |s| s.period.as_str());
        let (bucket, delta) = rel.tokens.unwrap_or((-1, 0));
        let mut inv = self.release.prepare_invoke();
        inv.key(keys::scoped(&rel.scope, "tpm"))
            .key(keys::scoped(&rel.scope, "par"))
            .key(keys::spend(&rel.scope, period))
            .key(keys::holds(&rel.scope, period))
            .key(keys::last_used(&rel.scope))
            .key(keys::scoped(&rel.scope, &format!("settled:{token}")))
            .arg(rel.now_ms)
            .arg(rel.lease.as_deref().unwrap_or(""))
            .arg(bucket)
            .arg(delta)
            .arg(settle.and_then(|s| s.member.as_deref()).unwrap_or(""))
            .arg(settle.map_or(String::new(), |s| fmt_usd(s.cost)))
            .arg(settle.and_then(|s| s.keep_ms).unwrap_or(-1))
            .arg(self.clock_flag())
            .arg(token)
            .arg(SETTLED_TTL_MS);
        let spend: Option<String> = self.call(inv.invoke_async(&mut conn)).await?;
        let spend = spend.and_then(|s| s.parse::<f64>().ok());
        if let (Some(s), Some(v)) = (settle, spend) {
            self.local.seed_spend(&rel.scope, &s.period, v);
        }
        Ok(spend)
    }

    /// Queues a release's spend; `token`: the one its failed Redis call carried ("" if none).
    fn queue(&self, rel: &Release, token: &str) {
        let Some(s) = &rel.settle else { return };
        if s.cost <= 0.0 {
            return;
        }
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let e = pending
            .entry((rel.scope.clone(), s.period.clone(), token.to_owned()))
            .or_insert((0.0, s.keep_ms));
        e.0 += s.cost;
        e.1 = s.keep_ms;
    }

    /// Remembers what a failed release of a Redis grant still holds (without its spend, which is
    /// queued separately).
    fn orphan(&self, rel: &Release) {
        let member = rel.settle.as_ref().and_then(|s| s.member.clone());
        if rel.lease.is_none() && member.is_none() {
            return;
        }
        let mut orphans = self.orphans.lock().unwrap_or_else(|p| p.into_inner());
        if orphans.len() < 100_000 {
            orphans.push(Release {
                scope: rel.scope.clone(),
                now_ms: rel.now_ms,
                lease: rel.lease.clone(),
                tokens: None,
                settle: rel.settle.as_ref().map(|s| super::Settle {
                    member,
                    cost: 0.0,
                    ..s.clone()
                }),
                local: false,
            });
        }
    }

    /// Writes queued spend and drops orphaned slots and reservations; what fails stays queued.
    async fn flush_pending(&self) -> Result<(), StateError> {
        let orphans: Vec<Release> = std::mem::take(&mut *self.orphans.lock().unwrap_or_else(|p| p.into_inner()));
        for (i, rel) in orphans.iter().enumerate() {
            if let Err(e) = self.release_redis(rel, "").await {
                let mut left = self.orphans.lock().unwrap_or_else(|p| p.into_inner());
                left.extend(orphans[i..].iter().cloned());
                return Err(e);
            }
        }
        let batch: Vec<_> = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending.drain().collect()
        };
        let mut result = Ok(());
        for ((scope, period, token), (cost, keep_ms)) in batch {
            let rel = Release {
                scope,
                settle: Some(super::Settle {
                    period,
                    member: None,
                    cost,
                    keep_ms,
                }),
                ..Release::default()
            };
            if result.is_ok() {
                match self.release_redis(&rel, &token).await {
                    Ok(_) => {
                        tracing::info!(scope = %rel.scope, usd = cost, "queued spend written to redis");
                        continue;
                    }
                    Err(e) => result = Err(e),
                }
            }
            self.queue(&rel, &token);
        }
        result
    }

    async fn probe(&self) -> bool {
        let mut conn = match (&self.connector, self.conn.load_full()) {
            (_, Some(c)) => (*c).clone(),
            (Connector::Cluster(client), None) => {
                match tokio::time::timeout(OP_TIMEOUT * 4, client.get_async_connection()).await {
                    Ok(Ok(c)) => {
                        let c = Conn::Cluster(c);
                        self.conn.store(Some(Arc::new(c.clone())));
                        c
                    }
                    _ => return false,
                }
            }
            (Connector::Single, None) => return false,
        };
        let ping = redis::cmd("PING");
        matches!(
            tokio::time::timeout(OP_TIMEOUT, ping.query_async::<String>(&mut conn)).await,
            Ok(Ok(_))
        )
    }
}

/// Probes Redis while it is down; writes queued spend and switches back when it answers.
async fn health(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.up.load(Ordering::Acquire) {
            // Spend of local grants settled after Redis came back is queued too.
            let queued = !inner.pending.lock().map(|p| p.is_empty()).unwrap_or(true)
                || !inner.orphans.lock().map(|o| o.is_empty()).unwrap_or(true);
            if queued {
                let _ = inner.flush_pending().await;
            }
            continue;
        }
        if !inner.probe().await {
            continue;
        }
        inner.up.store(true, Ordering::Release);
        match inner.flush_pending().await {
            Ok(()) => tracing::info!("redis reachable again; shared limits restored"),
            Err(e) => tracing::warn!(error = %e, "redis answered the probe but failed again"),
        }
    }
}

/// Claims the probe of a half-open backend (hash fields: f failures, o open until, p probe
/// until, c cool until; times in ms).
const CD_CLAIM: &str = r"
local now, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
local h = redis.call('HMGET', KEYS[1], 'o', 'p', 'c')
local o, p, c = tonumber(h[1]), tonumber(h[2]), tonumber(h[3])
if c and c > now then return 0 end
if not o or now < o then return 0 end
if p and p > now then return 0 end
redis.call('HSET', KEYS[1], 'p', now + lease)
return 1
";

/// A success closes the circuit; a rate limit's cooldown set by another request stays.
const CD_SUCCESS: &str = r"
local c = tonumber(redis.call('HGET', KEYS[1], 'c'))
if c and c > tonumber(ARGV[1]) then
  redis.call('HDEL', KEYS[1], 'o', 'p')
  redis.call('HSET', KEYS[1], 'f', 0)
else
  redis.call('DEL', KEYS[1])
end
return 0
";

/// A failure: cool for a while, count it, open the circuit at the threshold. Returns the state
/// (0 healthy, 1 cooling, 2 open).
const CD_FAILURE: &str = r"
local now, counts, threshold = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local open_for, cool, keep = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local h = redis.call('HMGET', KEYS[1], 'f', 'o', 'c')
local f, o, c = tonumber(h[1]) or 0, tonumber(h[2]), tonumber(h[3])
if cool >= 0 and (not c or now + cool > c) then
  c = now + cool
  redis.call('HSET', KEYS[1], 'c', c)
end
if counts == 1 then
  f = f + 1
  redis.call('HSET', KEYS[1], 'f', f)
  if o or f >= math.max(threshold, 1) then
    o = now + open_for
    redis.call('HSET', KEYS[1], 'o', o)
    redis.call('HDEL', KEYS[1], 'p')
  end
end
redis.call('PEXPIRE', KEYS[1], keep)
if o then return 2 elseif c and c > now then return 1 else return 0 end
";

/// The cooldown hash of a backend.
fn cooldown_key(backend: &str) -> String {
    format!("swy:{{cd:{backend}}}")
}

/// Backend cooldowns in Redis, for [`super::SharedCooldowns`]. Times are wall-clock ms.
impl Redis {
    pub(crate) fn reachable(&self) -> bool {
        self.inner.up.load(Ordering::Acquire)
    }

    /// Each backend's (open until, probe until, cool until).
    pub(crate) async fn cooldown_times(&self, keys: &[String]) -> Result<Vec<[Option<i64>; 3]>, StateError> {
        let inner = &self.inner;
        let conn = inner.conn()?;
        let calls = keys.iter().map(|k| {
            let mut conn = conn.clone();
            async move {
                let v: (Option<i64>, Option<i64>, Option<i64>) = inner
                    .call(
                        redis::cmd("HMGET")
                            .arg(cooldown_key(k))
                            .arg("o")
                            .arg("p")
                            .arg("c")
                            .query_async(&mut conn),
                    )
                    .await?;
                Ok::<_, StateError>([v.0, v.1, v.2])
            }
        });
        futures::future::try_join_all(calls).await
    }

    pub(crate) async fn cooldown_claim(&self, key: &str, now_ms: i64, lease_ms: i64) -> Result<bool, StateError> {
        let inner = &self.inner;
        let mut conn = inner.conn()?;
        let mut inv = inner.cd_claim.prepare_invoke();
        inv.key(cooldown_key(key)).arg(now_ms).arg(lease_ms);
        let n: i64 = inner.call(inv.invoke_async(&mut conn)).await?;
        Ok(n == 1)
    }

    pub(crate) async fn cooldown_success(&self, key: &str, now_ms: i64) -> Result<(), StateError> {
        let inner = &self.inner;
        let mut conn = inner.conn()?;
        let mut inv = inner.cd_success.prepare_invoke();
        inv.key(cooldown_key(key)).arg(now_ms);
        let _: i64 = inner.call(inv.invoke_async(&mut conn)).await?;
        Ok(())
    }

    /// Returns 0 healthy, 1 cooling, 2 open.
    pub(crate) async fn cooldown_failure(
        &self,
        key: &str,
        now_ms: i64,
        counts: bool,
        threshold: u32,
        open_for_ms: i64,
        cool_for_ms: Option<i64>,
    ) -> Result<i64, StateError> {
        let inner = &self.inner;
        let mut conn = inner.conn()?;
        let keep = open_for_ms.max(cool_for_ms.unwrap_or(0)) + 3_600_000;
        let mut inv = inner.cd_failure.prepare_invoke();
        inv.key(cooldown_key(key))
            .arg(now_ms)
            .arg(i64::from(counts))
            .arg(threshold)
            .arg(open_for_ms)
            .arg(cool_for_ms.unwrap_or(-1))
            .arg(keep);
        inner.call(inv.invoke_async(&mut conn)).await
    }
}

impl SharedState for Redis {
    fn acquire<'a>(&'a self, req: &'a Acquire) -> BoxFuture<'a, Result<Verdict, StateError>> {
        Box::pin(async move {
            let inner = &self.inner;
            match inner.acquire_redis(req).await {
                Ok(v) => Ok(v),
                Err(e) => match inner.fail_mode {
                    FailMode::Open => Ok(inner.local.acquire_now(req)),
                    FailMode::Closed => Err(e),
                },
            }
        })
    }

    fn release<'a>(&'a self, rel: &'a Release) -> BoxFuture<'a, Result<Option<f64>, StateError>> {
        Box::pin(async move {
            let inner = &self.inner;
            // Only spend is not idempotent (slots and reservations are removed by name; a
            // queued retry carries no token-window correction).
            let token = match &rel.settle {
                Some(s) if s.cost > 0.0 && !rel.local => format!("{:032x}", rand::random::<u128>()),
                _ => String::new(),
            };
            if !rel.local {
                if let Ok(spend) = inner.release_redis(rel, &token).await {
                    return Ok(spend);
                }
            }
            // Local grant, or Redis failed: settle locally (so fail-open budgets keep counting)
            // and queue the spend for Redis.
            let local = if rel.local {
                rel.clone()
            } else {
                Release {
                    scope: rel.scope.clone(),
                    now_ms: rel.now_ms,
                    settle: rel.settle.as_ref().map(|s| super::Settle {
                        member: None,
                        ..s.clone()
                    }),
                    ..Release::default()
                }
            };
            let spend = inner.local.release_now(&local);
            inner.queue(rel, &token);
            if !rel.local {
                inner.orphan(rel);
            }
            Ok(spend)
        })
    }

    fn renew<'a>(&'a self, r: &'a Renew) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            let inner = &self.inner;
            if r.local {
                inner.local.renew_now(r);
                return Ok(());
            }
            let mut conn = inner.conn()?;
            let (period, member) = r.hold.clone().unwrap_or_default();
            let mut inv = inner.renew.prepare_invoke();
            inv.key(keys::scoped(&r.scope, "par"))
                .key(keys::holds(&r.scope, &period))
                .arg(r.now_ms)
                .arg(r.lease_ttl_ms)
                .arg(r.lease.as_deref().unwrap_or(""))
                .arg(inner.clock_flag())
                .arg(member);
            let _: i64 = inner.call(inv.invoke_async(&mut conn)).await?;
            Ok(())
        })
    }

    fn spend<'a>(&'a self, scope: &'a str, period: &'a str) -> BoxFuture<'a, Result<f64, StateError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let mut conn = inner.conn()?;
            let key = keys::spend(scope, period);
            let v: Option<String> = inner.call(redis::cmd("GET").arg(&key).query_async(&mut conn)).await?;
            Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0.0))
        })
    }

    fn mark<'a>(&'a self, name: &'a str, ttl: Duration) -> BoxFuture<'a, Result<bool, StateError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let mut conn = inner.conn()?;
            let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
            let set: Option<String> = inner
                .call(
                    redis::cmd("SET")
                        .arg(keys::mark(name))
                        .arg(1)
                        .arg("NX")
                        .arg("PX")
                        .arg(ms)
                        .query_async(&mut conn),
                )
                .await?;
            Ok(set.is_some())
        })
    }

    fn unmark<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let mut conn = inner.conn()?;
            let _: i64 = inner
                .call(redis::cmd("DEL").arg(keys::mark(name)).query_async(&mut conn))
                .await?;
            Ok(())
        })
    }

    fn marked<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool, StateError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let mut conn = inner.conn()?;
            let n: i64 = inner
                .call(redis::cmd("EXISTS").arg(keys::mark(name)).query_async(&mut conn))
                .await?;
            Ok(n > 0)
        })
    }

    fn cache_get<'a>(&'a self, key: &'a [u8; 32]) -> BoxFuture<'a, Option<Bytes>> {
        Box::pin(async move {
            let inner = &self.inner;
            let mut conn = inner.conn().ok()?;
            let v: Option<Vec<u8>> = inner
                .call(redis::cmd("GET").arg(keys::cache(key)).query_async(&mut conn))
                .await
                .ok()?;
            v.map(Bytes::from)
        })
    }

    fn cache_put<'a>(&'a self, key: &'a [u8; 32], value: Bytes, ttl: Duration) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let inner = &self.inner;
            let Ok(mut conn) = inner.conn() else { return };
            let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
            let _: Result<(), _> = inner
                .call(
                    redis::cmd("SET")
                        .arg(keys::cache(key))
                        .arg(value.as_ref())
                        .arg("PX")
                        .arg(ms)
                        .query_async(&mut conn),
                )
                .await;
        })
    }

    fn backend(&self) -> Backend {
        Backend::Redis
    }

    fn up(&self) -> bool {
        self.inner.up.load(Ordering::Acquire)
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Err(e) = self.inner.flush_pending().await {
                let left = self.inner.pending.lock().map(|p| p.len()).unwrap_or(0);
                tracing::error!(error = %e, scopes = left, "spend could not be written to redis at shutdown");
            }
        })
    }
}

#[cfg(test)]
mod idempotence {
    use switchyard_config::SecretString;

    use super::*;
    use crate::state::tests::RedisServer;
    use crate::state::Settle;

    /// A release whose call timed out on the gateway's side but ran in Redis is queued and sent
    /// again when Redis answers: its spend must count once (a loaded machine made the soak count
    /// such a request twice).
    #[tokio::test]
    async fn a_release_retried_from_the_queue_adds_its_spend_once() {
        for cluster in [false, true] {
            let server = RedisServer::start(cluster).await;
            let cfg = RedisConfig {
                url: SecretString::new(server.url()),
                cluster,
                fail_mode: FailMode::Open,
            };
            let r = Redis::start(&cfg).unwrap_or_else(|e| panic!("{e}"));
            let rel = Release {
                scope: "k:default/x".into(),
                settle: Some(Settle {
                    period: "total".into(),
                    member: None,
                    cost: 0.25,
                    keep_ms: None,
                }),
                ..Release::default()
            };
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            let first = loop {
                match r.inner.release_redis(&rel, "t1").await {
                    Ok(v) => break v,
                    // A cluster is connected by the health probe, a moment after start.
                    Err(e) => assert!(std::time::Instant::now() < deadline, "{e}"),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            assert_eq!(first, Some(0.25));
            // The gateway saw a timeout: the same release, token and all, is queued and flushed.
            r.inner.queue(&rel, "t1");
            r.inner.flush_pending().await.unwrap_or_else(|e| panic!("{e}"));
            assert!(r.inner.pending.lock().unwrap_or_else(|p| p.into_inner()).is_empty());
            // Another request's release (another token) still counts.
            assert_eq!(
                r.inner
                    .release_redis(&rel, "t2")
                    .await
                    .unwrap_or_else(|e| panic!("{e}")),
                Some(0.5)
            );
            // Without a token (local grants' queued spend) every write counts.
            assert_eq!(
                r.inner.release_redis(&rel, "").await.unwrap_or_else(|e| panic!("{e}")),
                Some(0.75)
            );
        }
    }
}
