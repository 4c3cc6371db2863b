//! VirtualKey spend and last use, folded from the fleets' Redis into VirtualKey status, and the
//! cleanup of a deleted key's Redis counters (behind the finalizer [`FINALIZER`]).
//!
//! Gateways of a fleet with `spec.redis` write each key's spend per budget period and its last
//! use to Redis (names in `switchyard_config::shared_state`). Every `--spend-interval` the
//! leader reads them for the keys each fleet serves, pipelined, and writes `status.spend` and
//! `status.lastUsed` of the VirtualKeys whose figures changed. A key served by fleets with
//! different Redis servers reports the sum of their spend and the latest use. Fleets without
//! Redis keep spend in each pod's memory, which the operator does not read.
//!
//! Fleets are isolated from each other: every Redis server is read (and cleaned) on its own,
//! all at once, each call bounded by [`TIMEOUT`], so an unreachable Redis costs its own fleets
//! their spend reporting and nothing more.
//!
//! The fleet reconcile records what it compiled ([`FleetRedis::update`]); this module does not
//! compile, list or watch anything itself.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;
use redis::aio::MultiplexedConnection;
use switchyard_api::{LLMGateway, Spend, VirtualKey, VirtualKeyStatus};
use switchyard_config::shared_state::{budget_scope, key_scope, redis_keys, Period};
use switchyard_config::{BudgetPeriod, GatewayConfig, RedisConfig};
use tokio::sync::{mpsc, watch};

use crate::fleet::FleetId;
use crate::Error;

/// Finalizer on VirtualKeys served by a fleet with Redis: their counters are deleted first.
pub const FINALIZER: &str = "switchyard.dev/shared-state-cleanup";

/// Keys read per pipeline.
const BATCH: usize = 500;
/// Deadline of one Redis call.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Keys (namespace, name) and the period their spend is counted in.
type KeyPeriods = BTreeMap<(String, String), BudgetPeriod>;

/// Budgets over groups of keys (namespace, name): their period, `maxSpend` and how many keys
/// they cover in the fleet.
type BudgetPeriods = BTreeMap<(String, String), (BudgetPeriod, f64, u32)>;

/// What the operator knows of one fleet's shared state.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FleetState {
    pub redis: RedisConfig,
    pub keys: KeyPeriods,
    pub budgets: BudgetPeriods,
}

impl FleetState {
    /// From a fleet's compiled config; `None` without Redis.
    pub fn of(config: &GatewayConfig) -> Option<Self> {
        let redis = config.settings.redis.clone()?;
        let keys = config
            .keys
            .iter()
            .map(|k| {
                // The gateway counts keys without a budget by month (see its `limits::admit`).
                let period = k.budget.as_ref().map_or(BudgetPeriod::Monthly, |b| b.period);
                ((k.namespace.clone(), k.name.clone()), period)
            })
            .collect();
        let budgets = config
            .budgets
            .iter()
            .map(|b| {
                let keys = u32::try_from(b.keys.len()).unwrap_or(u32::MAX);
                (
                    (b.namespace.clone(), b.name.clone()),
                    (b.budget.period, b.budget.max_spend, keys),
                )
            })
            .collect();
        Some(Self { redis, keys, budgets })
    }
}

#[derive(Clone)]
enum Conn {
    Single(MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Conn {
    async fn open(cfg: &RedisConfig) -> redis::RedisResult<Self> {
        let url = cfg.url.expose();
        if cfg.cluster {
            let client = redis::cluster::ClusterClient::builder(vec![url])
                .connection_timeout(TIMEOUT)
                .response_timeout(TIMEOUT)
                .build()?;
            Ok(Conn::Cluster(client.get_async_connection().await?))
        } else {
            let client = redis::Client::open(url)?;
            // redis-rs gives up on an answer after 500 ms by default: under load that failed
            // whole spend passes. The operator's own deadline is [`TIMEOUT`].
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(TIMEOUT))
                .set_response_timeout(Some(TIMEOUT));
            Ok(Conn::Single(
                client.get_multiplexed_async_connection_with_config(&config).await?,
            ))
        }
    }

    async fn query<T: redis::FromRedisValue>(&mut self, pipe: &redis::Pipeline) -> redis::RedisResult<T> {
        match self {
            Conn::Single(c) => pipe.query_async(c).await,
            Conn::Cluster(c) => pipe.query_async(c).await,
        }
    }
}

/// The fleets with Redis, from their last reconcile, and connections to their servers.
#[derive(Default)]
pub(crate) struct FleetRedis {
    fleets: Mutex<BTreeMap<FleetId, Arc<FleetState>>>,
    conns: tokio::sync::Mutex<HashMap<String, Conn>>,
    /// Keys a fleet with Redis started serving, so they get the finalizer.
    newly_served: Option<mpsc::UnboundedSender<ObjectRef<VirtualKey>>>,
}

impl FleetRedis {
    /// A registry that sends the keys a fleet with Redis starts serving to `newly_served`.
    pub fn new(newly_served: mpsc::UnboundedSender<ObjectRef<VirtualKey>>) -> Self {
        Self {
            newly_served: Some(newly_served),
            ..Self::default()
        }
    }

    /// Records what a fleet serves now.
    pub fn update(&self, fleet: &FleetId, config: &GatewayConfig) {
        let state = FleetState::of(config);
        let mut fleets = self.fleets.lock().unwrap_or_else(|p| p.into_inner());
        if let (Some(tx), Some(s)) = (&self.newly_served, &state) {
            let before = fleets.get(fleet).map(|f| &f.keys);
            for (ns, name) in s.keys.keys() {
                if !before.is_some_and(|b| b.contains_key(&(ns.clone(), name.clone()))) {
                    let _ = tx.send(ObjectRef::new(name).within(ns));
                }
            }
        }
        match state {
            Some(s) => {
                fleets.insert(fleet.clone(), Arc::new(s));
            }
            None => {
                fleets.remove(fleet);
            }
        }
    }

    /// Forgets fleets that no longer exist.
    pub fn retain(&self, live: &[FleetId]) {
        let gone: Vec<FleetId> = {
            let fleets = self.fleets.lock().unwrap_or_else(|p| p.into_inner());
            fleets.keys().filter(|f| !live.contains(f)).cloned().collect()
        };
        for f in gone {
            self.remove(&f);
        }
    }

    /// Forgets a deleted fleet.
    pub fn remove(&self, fleet: &FleetId) {
        self.fleets.lock().unwrap_or_else(|p| p.into_inner()).remove(fleet);
    }

    fn snapshot(&self) -> Vec<Arc<FleetState>> {
        self.fleets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Whether a fleet with Redis serves the key (it then carries [`FINALIZER`]).
    pub fn serves_with_redis(&self, namespace: &str, name: &str) -> bool {
        let key = (namespace.to_owned(), name.to_owned());
        self.snapshot().iter().any(|f| f.keys.contains_key(&key))
    }

    /// The distinct Redis servers of all fleets, each with the fleets that name it and the keys
    /// they serve.
    fn servers(&self) -> Vec<Server> {
        let mut by_url: BTreeMap<String, Server> = BTreeMap::new();
        let fleets = self.fleets.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for (id, f) in fleets {
            let s = by_url.entry(f.redis.url.expose().to_owned()).or_insert_with(|| Server {
                redis: f.redis.clone(),
                fleets: Vec::new(),
                keys: BTreeMap::new(),
            });
            s.fleets.push(id);
            s.keys.extend(f.keys.iter().map(|(k, p)| (k.clone(), *p)));
        }
        by_url.into_values().collect()
    }

    async fn conn(&self, cfg: &RedisConfig) -> Result<Conn, Error> {
        let url = cfg.url.expose();
        if let Some(c) = self.conns.lock().await.get(url) {
            return Ok(c.clone());
        }
        let c = tokio::time::timeout(TIMEOUT, Conn::open(cfg))
            .await
            .map_err(|_| Error::Redis("connecting timed out".into()))?
            .map_err(redis_error)?;
        self.conns.lock().await.insert(url.to_owned(), c.clone());
        Ok(c)
    }

    async fn run<T: redis::FromRedisValue>(&self, cfg: &RedisConfig, pipe: &redis::Pipeline) -> Result<T, Error> {
        let mut conn = self.conn(cfg).await?;
        match tokio::time::timeout(TIMEOUT, conn.query(pipe)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.conns.lock().await.remove(cfg.url.expose());
                Err(redis_error(e))
            }
            Err(_) => {
                self.conns.lock().await.remove(cfg.url.expose());
                Err(Error::Redis("timed out".into()))
            }
        }
    }

    /// Reads spend and last use of every key every fleet serves, summed per VirtualKey. The
    /// servers are read at once, each call bounded by [`TIMEOUT`]; a server that fails is
    /// reported in [`SpendReading::failures`] and the keys it serves are left out (their status
    /// keeps its last figures rather than a partial sum), while every other fleet's keys are
    /// reported as usual.
    pub async fn read(&self, now_ms: i64) -> SpendReading {
        let servers = self.servers();
        let results = futures::future::join_all(servers.iter().map(|s| self.read_server(s, now_ms))).await;
        let mut readings = Vec::new();
        let mut unknown = BTreeSet::new();
        let mut failures = Vec::new();
        for (server, result) in servers.into_iter().zip(results) {
            match result {
                Ok(r) => readings.extend(r),
                Err(error) => {
                    unknown.extend(server.keys.into_keys());
                    failures.push(ServerFailure {
                        fleets: server.fleets,
                        error,
                    });
                }
            }
        }
        let mut usage = fold(readings);
        usage.retain(|k, _| !unknown.contains(k));
        SpendReading { usage, failures }
    }

    /// Reads the spend of every Budget every fleet serves, summed per Budget over servers. The
    /// servers are read at once, each call bounded by [`TIMEOUT`]; the Budgets a failing server
    /// counts are left out (their status keeps its last figures, like keys' do), and every other
    /// Budget is reported as usual.
    pub async fn read_budgets(&self, now_ms: i64) -> BTreeMap<(String, String), crate::budgets::BudgetUsage> {
        let mut by_server: BTreeMap<String, (RedisConfig, BudgetPeriods)> = BTreeMap::new();
        for f in self.snapshot() {
            let e = by_server
                .entry(f.redis.url.expose().to_owned())
                .or_insert_with(|| (f.redis.clone(), BTreeMap::new()));
            for (id, (period, max, keys)) in &f.budgets {
                let entry = e.1.entry(id.clone()).or_insert((*period, *max, 0));
                entry.2 = entry.2.max(*keys);
            }
        }
        let servers: Vec<_> = by_server.into_values().collect();
        let results = futures::future::join_all(
            servers
                .iter()
                .map(|(cfg, budgets)| self.read_server_budgets(cfg, budgets, now_ms)),
        )
        .await;
        let mut readings = Vec::new();
        let mut unknown = BTreeSet::new();
        for ((_, budgets), result) in servers.into_iter().zip(results) {
            match result {
                Ok(r) => readings.extend(r),
                Err(e) => {
                    tracing::debug!(error = %e, "reading Budget spend from a fleet's Redis failed");
                    unknown.extend(budgets.into_keys());
                }
            }
        }
        let mut usage = crate::budgets::fold(readings);
        usage.retain(|k, _| !unknown.contains(k));
        usage
    }

    /// The Budget readings of one server; its first failure ends it.
    async fn read_server_budgets(
        &self,
        cfg: &RedisConfig,
        budgets: &BudgetPeriods,
        now_ms: i64,
    ) -> Result<Vec<((String, String), crate::budgets::BudgetUsage)>, Error> {
        let budgets: Vec<_> = budgets.iter().collect();
        let mut readings = Vec::with_capacity(budgets.len());
        for chunk in budgets.chunks(BATCH) {
            let mut pipe = redis::pipe();
            for ((ns, name), (period, _, _)) in chunk {
                let p = Period::of(*period, now_ms);
                pipe.get(redis_keys::spend(&budget_scope(ns, name), &p.id));
            }
            let values: Vec<Option<String>> = self.run(cfg, &pipe).await?;
            for (i, (id, (period, max_spend, keys))) in chunk.iter().enumerate() {
                let amount = values.get(i).cloned().flatten().and_then(|s| s.parse().ok());
                readings.push((
                    (*id).clone(),
                    crate::budgets::BudgetUsage {
                        keys: *keys,
                        max_spend: *max_spend,
                        period: Period::of(*period, now_ms),
                        amount: amount.unwrap_or(0.0),
                    },
                ));
            }
        }
        Ok(readings)
    }

    /// The readings of one server; its first failure ends it.
    async fn read_server(&self, server: &Server, now_ms: i64) -> Result<Vec<Reading>, Error> {
        let keys: Vec<_> = server.keys.iter().collect();
        let mut readings = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(BATCH) {
            let mut pipe = redis::pipe();
            for ((ns, name), period) in chunk {
                let scope = key_scope(ns, name);
                let p = Period::of(**period, now_ms);
                pipe.get(redis_keys::spend(&scope, &p.id))
                    .get(redis_keys::last_used(&scope));
            }
            let values: Vec<Option<String>> = self.run(&server.redis, &pipe).await?;
            for (i, ((ns, name), period)) in chunk.iter().enumerate() {
                let spend = values.get(2 * i).cloned().flatten();
                let last = values.get(2 * i + 1).cloned().flatten();
                readings.push(Reading {
                    namespace: ns.clone(),
                    name: name.clone(),
                    period: Period::of(**period, now_ms),
                    spend: spend.and_then(|s| s.parse().ok()),
                    last_used_ms: last.and_then(|s| s.parse().ok()),
                });
            }
        }
        Ok(readings)
    }

    /// Deletes a key's counters from every fleet's Redis, all servers at once, each call
    /// bounded by [`TIMEOUT`]. Returns the failures of the servers whose fleets serve the key
    /// (none: done). A server whose fleets do not serve the key is cleaned too (they may have
    /// served it before) but its failure is only logged: what it may hold expires like what
    /// an abandoned cleanup leaves, and a broken fleet must not hold up the deletion of keys
    /// it has nothing to do with.
    pub async fn clean_up(&self, namespace: &str, name: &str, now_ms: i64) -> Vec<ServerFailure> {
        let id = (namespace.to_owned(), name.to_owned());
        let scope = key_scope(namespace, name);
        let keys = redis_keys::all(&scope, now_ms);
        let servers = self.servers();
        let results = futures::future::join_all(servers.iter().map(|s| {
            let mut pipe = redis::pipe();
            // One slot (the keys share a hash tag), so one DEL works in Redis Cluster too.
            pipe.del(&keys).ignore();
            async move { self.run::<()>(&s.redis, &pipe).await }
        }))
        .await;
        let mut failures = Vec::new();
        for (s, r) in servers.into_iter().zip(results) {
            let Err(error) = r else { continue };
            let failure = ServerFailure {
                fleets: s.fleets,
                error,
            };
            if s.keys.contains_key(&id) {
                failures.push(failure);
            } else {
                tracing::debug!(namespace, virtual_key = name, %failure, "not cleaned where the key is not served");
            }
        }
        failures
    }
}

/// One Redis server: the fleets that name it and the keys they serve.
struct Server {
    redis: RedisConfig,
    fleets: Vec<FleetId>,
    keys: KeyPeriods,
}

/// A Redis server that could not be read or written, and the fleets that use it.
#[derive(Debug)]
pub(crate) struct ServerFailure {
    pub fleets: Vec<FleetId>,
    pub error: Error,
}

impl std::fmt::Display for ServerFailure {
    /// The fleets (never the URL: it may carry a password) and the error.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fleets: Vec<String> = self.fleets.iter().map(|(ns, n)| format!("{ns}/{n}")).collect();
        write!(f, "the Redis of LLMGateway {}: {}", fleets.join(", "), self.error)
    }
}

/// What one round of reading spend found.
#[derive(Debug, Default)]
pub(crate) struct SpendReading {
    /// Per VirtualKey, from every server that serves it; keys a failed server serves are left out.
    pub usage: BTreeMap<(String, String), Usage>,
    /// The servers that failed.
    pub failures: Vec<ServerFailure>,
}

fn redis_error(e: redis::RedisError) -> Error {
    // Never the URL: it may carry a password. An I/O error has no detail: its cause is named.
    let detail = match (e.detail(), e.kind()) {
        (Some(d), _) => d.to_owned(),
        (None, _) if e.is_timeout() => "timed out".to_owned(),
        (None, _) if e.is_connection_refusal() => "connection refused".to_owned(),
        (None, _) if e.is_connection_dropped() => "connection dropped".to_owned(),
        (None, _) => String::new(),
    };
    Error::Redis(format!("{:?}: {detail}", e.kind()))
}

/// One key's figures in one Redis.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Reading {
    pub namespace: String,
    pub name: String,
    pub period: Period,
    pub spend: Option<f64>,
    pub last_used_ms: Option<i64>,
}

/// A VirtualKey's spend in its current period and its last use, over all fleets.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Usage {
    pub amount: f64,
    pub period_start_ms: i64,
    pub last_used_ms: Option<i64>,
    /// Whether any Redis has spend recorded for the period.
    pub recorded: bool,
}

/// Sums spend and keeps the latest use per key.
pub(crate) fn fold(readings: Vec<Reading>) -> BTreeMap<(String, String), Usage> {
    let mut out: BTreeMap<(String, String), Usage> = BTreeMap::new();
    for r in readings {
        let u = out.entry((r.namespace, r.name)).or_insert(Usage {
            amount: 0.0,
            period_start_ms: r.period.start_ms,
            last_used_ms: None,
            recorded: false,
        });
        if let Some(s) = r.spend {
            u.amount += s;
            u.recorded = true;
        }
        u.last_used_ms = u.last_used_ms.max(r.last_used_ms);
    }
    out
}

fn time_of(ms: i64) -> Option<Time> {
    Timestamp::from_millisecond(ms).ok().map(Time)
}

/// The status to write for a key, or `None` when it already says this. A key never used has
/// no `spend`; one whose period rolled over reports zero for the new period.
pub(crate) fn updated_status(old: Option<&VirtualKeyStatus>, usage: Option<&Usage>) -> Option<VirtualKeyStatus> {
    let old_status = old.cloned().unwrap_or_default();
    let usage = usage?;
    let spend = (usage.recorded || old_status.spend.is_some()).then(|| Spend {
        // Micro-dollars: float noise must not rewrite the status.
        amount: (usage.amount * 1e6).round() / 1e6,
        period_start: time_of(usage.period_start_ms),
    });
    let last_used = usage.last_used_ms.and_then(time_of).or(old_status.last_used.clone());
    if spend == old_status.spend && last_used == old_status.last_used {
        return None;
    }
    Some(VirtualKeyStatus {
        spend,
        last_used,
        ..old_status
    })
}

/// Writes `status.spend` and `status.lastUsed` alone, as a merge patch under the operator's
/// field manager: an apply of the whole status here could drop conditions the fleet reconcile
/// wrote after this replica's cache was read.
pub(crate) async fn write_usage(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    status: &VirtualKeyStatus,
) -> Result<(), Error> {
    let api: kube::Api<VirtualKey> = kube::Api::namespaced(client.clone(), namespace);
    let body = serde_json::json!({"status": {"spend": status.spend, "lastUsed": status.last_used}});
    let pp = kube::api::PatchParams {
        field_manager: Some(crate::MANAGER.to_owned()),
        ..kube::api::PatchParams::default()
    };
    api.patch_status(name, &pp, &kube::api::Patch::Merge(&body)).await?;
    Ok(())
}

/// Reports spend every `interval` until `stop`.
pub(crate) async fn report(
    client: kube::Client,
    gateways: Store<LLMGateway>,
    keys: Store<VirtualKey>,
    budgets: Store<switchyard_api::TeamBudget>,
    fleets: Arc<FleetRedis>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut failing: BTreeSet<FleetId> = BTreeSet::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        // A fleet deleted without a last reconcile is forgotten here.
        let live: Vec<FleetId> = gateways.state().iter().map(|g| crate::fleet::fleet_id(g)).collect();
        fleets.retain(&live);
        let now_ms = Timestamp::now().as_millisecond();
        let SpendReading { usage, failures } = fleets.read(now_ms).await;
        // Other fleets are reported as usual; a failing one's keys keep their last figures.
        // Said when a fleet's Redis starts failing and when it recovers, not every interval.
        let now_failing: BTreeSet<FleetId> = failures.iter().flat_map(|f| f.fleets.iter().cloned()).collect();
        for f in &failures {
            if f.fleets.iter().any(|id| !failing.contains(id)) {
                tracing::warn!(fleets = ?f.fleets, error = %f.error, "reading spend from a fleet's Redis failed; its keys' spend is not updated until it answers");
            }
        }
        for id in failing.difference(&now_failing) {
            tracing::info!(fleet = ?id, "reading spend from the fleet's Redis works again");
        }
        failing = now_failing;
        let mut written = 0usize;
        for k in keys.state() {
            let id = (crate::fleet::ns(&*k), k.name_any());
            let Some(new) = updated_status(k.status.as_ref(), usage.get(&id)) else {
                continue;
            };
            match write_usage(&client, &id.0, &id.1, &new).await {
                Ok(()) => written += 1,
                Err(e) => tracing::warn!(namespace = %id.0, virtual_key = %id.1, error = %e, "writing spend failed"),
            }
        }
        if written > 0 {
            tracing::debug!(written, "VirtualKey spend updated");
        }
        report_budgets(&client, &budgets, &fleets, now_ms).await;
    }
}

/// Writes the status of every Budget whose figures changed.
async fn report_budgets(
    client: &kube::Client,
    budgets: &Store<switchyard_api::TeamBudget>,
    fleets: &FleetRedis,
    now_ms: i64,
) {
    // A failing fleet's Budgets keep their last figures (its failure is logged with its keys').
    let usage = fleets.read_budgets(now_ms).await;
    let now = Time(Timestamp::from_millisecond(now_ms).unwrap_or_else(|_| Timestamp::now()));
    for b in budgets.state() {
        let id = (crate::fleet::ns(&*b), b.name_any());
        let Some(new) = crate::budgets::updated_status(&b, usage.get(&id), &now) else {
            continue;
        };
        if let Err(e) = crate::budgets::write(client, &id.0, &id.1, &new).await {
            tracing::warn!(namespace = %id.0, budget = %id.1, error = %e, "writing Budget status failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-11-25T13:45:10Z.
    const NOW: i64 = 1_795_614_310_000;

    fn reading(name: &str, spend: Option<f64>, last: Option<i64>) -> Reading {
        Reading {
            namespace: "apps".into(),
            name: name.into(),
            period: Period::of(BudgetPeriod::Daily, NOW),
            spend,
            last_used_ms: last,
        }
    }

    #[test]
    fn spend_is_summed_over_servers_and_the_latest_use_kept() {
        let u = fold(vec![
            reading("a", Some(0.25), Some(NOW - 5000)),
            reading("a", Some(0.5), Some(NOW - 1000)),
            reading("b", None, None),
        ]);
        let a = &u[&("apps".to_owned(), "a".to_owned())];
        assert!((a.amount - 0.75).abs() < 1e-12);
        assert_eq!(a.last_used_ms, Some(NOW - 1000));
        assert!(a.recorded);
        let b = &u[&("apps".to_owned(), "b".to_owned())];
        assert!(!b.recorded);
    }

    #[test]
    fn status_changes_only_when_the_figures_do() {
        let u = fold(vec![reading("a", Some(0.1234567), Some(NOW))]);
        let usage = u.values().next();
        let new = updated_status(None, usage).unwrap();
        let spend = new.spend.clone().unwrap();
        assert!((spend.amount - 0.123457).abs() < 1e-12);
        assert_eq!(
            spend.period_start.map(|t| t.0.to_string()).as_deref(),
            Some("2026-11-25T00:00:00Z")
        );
        assert_eq!(new.last_used.as_ref().map(|t| t.0.as_millisecond()), Some(NOW));
        // Written once; the same reading again writes nothing.
        assert_eq!(updated_status(Some(&new), usage), None);
        // Conditions and other fields are kept.
        let mut with_conditions = new.clone();
        with_conditions.secret_name = Some("a-key".into());
        let u2 = fold(vec![reading("a", Some(0.2), Some(NOW + 1000))]);
        let next = updated_status(Some(&with_conditions), u2.values().next()).unwrap();
        assert_eq!(next.secret_name.as_deref(), Some("a-key"));
        assert!((next.spend.unwrap().amount - 0.2).abs() < 1e-12);
    }

    #[test]
    fn unused_keys_get_no_spend_and_a_new_period_resets_it() {
        let never = fold(vec![reading("a", None, None)]);
        assert_eq!(updated_status(None, never.values().next()), None);
        // Spent yesterday, nothing yet today: the status says zero for today.
        let yesterday = VirtualKeyStatus {
            spend: Some(Spend {
                amount: 0.4,
                period_start: time_of(NOW - 86_400_000),
            }),
            ..VirtualKeyStatus::default()
        };
        let today = updated_status(Some(&yesterday), never.values().next()).unwrap();
        let s = today.spend.unwrap();
        assert_eq!(s.amount, 0.0);
        assert_eq!(s.period_start, time_of(Period::of(BudgetPeriod::Daily, NOW).start_ms));
        // A key no fleet with Redis serves is left alone.
        assert_eq!(updated_status(Some(&yesterday), None), None);
    }

    #[test]
    fn only_fleets_with_redis_are_tracked_and_new_keys_announced() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let f = FleetRedis::new(tx);
        let fleet: FleetId = ("llm".into(), "gw".into());
        let key = |name: &str| {
            serde_json::from_value::<switchyard_config::KeyConfig>(
                serde_json::json!({"namespace": "apps", "name": name, "hashes": []}),
            )
            .expect("key")
        };
        let mut cfg = GatewayConfig {
            keys: vec![key("a").into()],
            ..GatewayConfig::default()
        };
        f.update(&fleet, &cfg);
        assert!(!f.serves_with_redis("apps", "a"));
        assert!(rx.try_recv().is_err(), "no Redis, no finalizer");
        cfg.settings.redis = Some(RedisConfig {
            url: switchyard_config::SecretString::new("redis://127.0.0.1:1/"),
            cluster: false,
            fail_mode: switchyard_config::FailMode::Open,
        });
        f.update(&fleet, &cfg);
        assert!(f.serves_with_redis("apps", "a"));
        assert!(!f.serves_with_redis("apps", "b"));
        assert_eq!(rx.try_recv().ok(), Some(ObjectRef::new("a").within("apps")));
        f.update(&fleet, &cfg);
        assert!(rx.try_recv().is_err(), "no change, no trigger");
        cfg.keys.push(key("b").into());
        f.update(&fleet, &cfg);
        assert_eq!(rx.try_recv().ok(), Some(ObjectRef::new("b").within("apps")));
        assert!(rx.try_recv().is_err());
        f.remove(&fleet);
        assert!(!f.serves_with_redis("apps", "a"));
    }

    /// A `redis-server` on a free port without persistence, killed on drop. Fails the test
    /// when it cannot run: the Redis tests are part of the suite.
    struct RedisServer(std::process::Child, u16);

    impl RedisServer {
        async fn start() -> Self {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free port");
            // Killed and waited for on drop, whatever happens next.
            let server = Self(
                std::process::Command::new("redis-server")
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
                    .args(["--appendonly", "no"])
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .expect("this test needs redis-server on PATH (Debian: apt-get install redis-server)"),
                port,
            );
            for _ in 0..100 {
                if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                    return server;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("redis-server did not start on {port}");
        }
    }

    impl Drop for RedisServer {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn fleet_config(url: &str, keys: &[&str]) -> GatewayConfig {
        let mut cfg = GatewayConfig {
            keys: keys
                .iter()
                .map(|k| {
                    serde_json::from_value(serde_json::json!({"namespace": "apps", "name": k, "hashes": []}))
                        .expect("key")
                })
                .collect(),
            ..GatewayConfig::default()
        };
        cfg.settings.redis = Some(RedisConfig {
            url: switchyard_config::SecretString::new(url),
            cluster: false,
            fail_mode: switchyard_config::FailMode::Open,
        });
        cfg
    }

    /// A healthy fleet and two broken ones (a refused port, and a server that accepts and never
    /// answers): the healthy fleet's spend is read and its key cleaned, within one call
    /// timeout, and the broken ones are reported each with their fleet.
    #[tokio::test]
    async fn one_broken_redis_does_not_stop_the_other_fleets() {
        let healthy = RedisServer::start().await;
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let silent_port = silent.local_addr().expect("addr").port();
        // Accepts connections and holds them without a byte.
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((c, _)) = silent.accept().await {
                held.push(c);
            }
        });
        let (tx, _rx) = mpsc::unbounded_channel();
        let f = FleetRedis::new(tx);
        let good: FleetId = ("team-a".into(), "good".into());
        let refused: FleetId = ("team-b".into(), "refused".into());
        let hung: FleetId = ("team-c".into(), "hung".into());
        f.update(
            &good,
            &fleet_config(&format!("redis://127.0.0.1:{}/", healthy.1), &["a", "shared"]),
        );
        f.update(&refused, &fleet_config("redis://127.0.0.1:1/", &["b", "shared"]));
        f.update(
            &hung,
            &fleet_config(&format!("redis://127.0.0.1:{silent_port}/"), &["c"]),
        );

        let now = Timestamp::now().as_millisecond();
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/", healthy.1)).expect("client");
        let mut conn = client.get_multiplexed_async_connection().await.expect("connect");
        let period = Period::of(BudgetPeriod::Monthly, now);
        for (k, v) in [("a", "0.25"), ("shared", "1.5")] {
            let _: () = redis::cmd("SET")
                .arg(redis_keys::spend(&key_scope("apps", k), &period.id))
                .arg(v)
                .query_async(&mut conn)
                .await
                .expect("set");
        }

        let started = std::time::Instant::now();
        let reading = f.read(now).await;
        assert!(
            started.elapsed() < TIMEOUT + Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        let a = &reading.usage[&("apps".to_owned(), "a".to_owned())];
        assert!((a.amount - 0.25).abs() < 1e-12);
        // A key a broken fleet also serves is left out rather than reported short.
        assert!(!reading.usage.contains_key(&("apps".to_owned(), "shared".to_owned())));
        assert!(!reading.usage.contains_key(&("apps".to_owned(), "b".to_owned())));
        assert!(!reading.usage.contains_key(&("apps".to_owned(), "c".to_owned())));
        let mut failed: Vec<FleetId> = reading.failures.iter().flat_map(|x| x.fleets.clone()).collect();
        failed.sort();
        assert_eq!(failed, vec![refused.clone(), hung.clone()]);

        // A key only the healthy fleet serves: cleaned, whatever the other servers answer.
        let started = std::time::Instant::now();
        assert!(f.clean_up("apps", "a", now).await.is_empty());
        assert!(
            started.elapsed() < TIMEOUT + Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        // A key a broken fleet serves too: cleaned where possible, the broken fleet reported.
        let failures = f.clean_up("apps", "shared", now).await;
        let failed: Vec<FleetId> = failures.iter().flat_map(|x| x.fleets.clone()).collect();
        assert_eq!(failed, vec![refused]);
        for k in ["a", "shared"] {
            let left: Option<String> = redis::cmd("GET")
                .arg(redis_keys::spend(&key_scope("apps", k), &period.id))
                .query_async(&mut conn)
                .await
                .expect("get");
            assert_eq!(left, None, "the healthy fleet's Redis was cleaned of {k}");
        }
        let left: Option<String> = redis::cmd("GET")
            .arg(redis_keys::spend(&key_scope("apps", "a"), &period.id))
            .query_async(&mut conn)
            .await
            .expect("get");
        assert_eq!(left, None, "the healthy fleet's Redis was cleaned");
        hold.abort();
    }
}
