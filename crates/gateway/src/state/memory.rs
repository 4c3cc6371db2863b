//! In-process state: exact for one gateway, lost when it stops. Also the local fallback of
//! [`super::Redis`] while Redis is unreachable (fail open).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use rustc_hash::FxHashMap as HashMap;

use super::{
    check_window, Acquire, Backend, Reason, Release, Renew, SharedState, Snapshot, StateError, Verdict, WINDOW_MS,
};

/// Largest in-memory response cache, bytes.
const CACHE_BYTES: u64 = 256 * 1024 * 1024;

#[derive(Default)]
struct Scope {
    rpm: BTreeMap<i64, i64>,
    tpm: BTreeMap<i64, i64>,
    /// Concurrency slots: lease -> expiry (ms).
    leases: HashMap<String, i64>,
    /// Spend by period.
    spend: HashMap<String, f64>,
    /// Reservations by period: member -> (USD, expiry ms).
    holds: HashMap<String, HashMap<String, (f64, i64)>>,
}

/// `f` of `map`'s entry for `name`, made when missing: the name is copied only then (once per
/// scope or period, not on every request as `entry(name.to_owned())` would).
fn with_entry<V: Default, T>(map: &mut HashMap<String, V>, name: &str, f: impl FnOnce(&mut V) -> T) -> T {
    match map.get_mut(name) {
        Some(v) => f(v),
        None => f(map.entry(name.to_owned()).or_default()),
    }
}

#[derive(Clone)]
struct Cached {
    body: Bytes,
    ttl: Duration,
}

struct PerEntryTtl;

impl moka::Expiry<[u8; 32], Cached> for PerEntryTtl {
    fn expire_after_create(&self, _: &[u8; 32], value: &Cached, _: Instant) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// The in-memory state.
pub struct Memory {
    scopes: Mutex<HashMap<String, Scope>>,
    /// Names from outside the config (files' upstream ids, alerts): the standard keyed hasher.
    marks: Mutex<std::collections::HashMap<String, Instant>>,
    cache: moka::future::Cache<[u8; 32], Cached>,
}

impl Default for Memory {
    fn default() -> Self {
        Self::new()
    }
}

impl Memory {
    /// Empty state.
    pub fn new() -> Self {
        Self {
            scopes: Mutex::new(HashMap::default()),
            marks: Mutex::new(std::collections::HashMap::new()),
            cache: moka::future::Cache::builder()
                .max_capacity(CACHE_BYTES)
                .weigher(|_, v: &Cached| u32::try_from(v.body.len()).unwrap_or(u32::MAX))
                .expire_after(PerEntryTtl)
                .build(),
        }
    }

    /// Sets a period's spend to what the shared store reported, so a fallback to local limits
    /// starts from the fleet's spend rather than from zero.
    pub fn seed_spend(&self, scope: &str, period: &str, spend: f64) {
        let mut scopes = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
        let s = scopes.entry(scope.to_owned()).or_default();
        if !s.spend.contains_key(period) {
            // A new period: forget older ones (memory stays bounded by keys, not time).
            s.spend.clear();
            s.holds.retain(|p, _| p == period);
        }
        s.spend.insert(period.to_owned(), spend);
    }

    pub(crate) fn acquire_now(&self, req: &Acquire) -> Verdict {
        let mut scopes = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
        with_entry(&mut scopes, &req.scope, |scope| decide(scope, req))
    }

    pub(crate) fn release_now(&self, rel: &Release) -> Option<f64> {
        let mut scopes = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
        with_entry(&mut scopes, &rel.scope, |scope| release(scope, rel))
    }

    pub(crate) fn renew_now(&self, r: &Renew) {
        let mut scopes = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
        let Some(scope) = scopes.get_mut(&r.scope) else { return };
        let until = r.now_ms + r.lease_ttl_ms;
        if let Some(exp) = r.lease.as_ref().and_then(|l| scope.leases.get_mut(l)) {
            *exp = (*exp).max(until);
        }
        if let Some((period, member)) = &r.hold {
            if let Some((_, exp)) = scope.holds.get_mut(period).and_then(|h| h.get_mut(member)) {
                *exp = (*exp).max(until);
            }
        }
    }

    fn mark_now(&self, name: &str, ttl: Duration) -> bool {
        let now = Instant::now();
        let mut marks = self.marks.lock().unwrap_or_else(|p| p.into_inner());
        if marks.len() > 4096 {
            marks.retain(|_, until| *until > now);
        }
        match marks.get(name) {
            Some(until) if *until > now => false,
            _ => {
                marks.insert(name.to_owned(), now + ttl);
                true
            }
        }
    }
}

/// What a release does to its scope: frees the slot, corrects the token window, drops the
/// reservation and adds the spend (the period's total after it, when it settles one).
fn release(scope: &mut Scope, rel: &Release) -> Option<f64> {
    if let Some(lease) = &rel.lease {
        scope.leases.remove(lease);
    }
    if let Some((bucket, delta)) = rel.tokens {
        let sec = rel.now_ms.div_euclid(1000);
        // Saturating: `delta` follows the upstream's reported usage, any number it likes.
        let at = if bucket > sec - WINDOW_MS / 1000 {
            Some(bucket)
        } else {
            (delta > 0).then_some(sec)
        };
        if let Some(at) = at {
            let n = scope.tpm.entry(at).or_default();
            *n = n.saturating_add(delta);
        }
    }
    let settle = rel.settle.as_ref()?;
    if let Some(member) = &settle.member {
        if let Some(h) = scope.holds.get_mut(&settle.period) {
            h.remove(member);
        }
    }
    if !scope.spend.contains_key(&settle.period) {
        scope.spend.clear();
        scope.holds.retain(|p, _| p == &settle.period);
    }
    Some(with_entry(&mut scope.spend, &settle.period, |spend| {
        *spend += settle.cost.max(0.0);
        *spend
    }))
}

/// The whole decision for one scope; Redis runs the same steps in `ACQUIRE` (Lua).
fn decide(scope: &mut Scope, req: &Acquire) -> Verdict {
    let now = req.now_ms;
    let mut snapshot = Snapshot {
        at_ms: now,
        ..Snapshot::default()
    };
    let refuse = |reason: Reason, retry_after_ms: Option<i64>, snapshot: Snapshot| Verdict::Refused {
        reason,
        retry_after_ms,
        snapshot,
    };
    let spend = req
        .budget
        .as_ref()
        .map(|b| scope.spend.get(&b.period).copied().unwrap_or(0.0))
        .unwrap_or(0.0);
    snapshot.spend = spend;
    if let Some(b) = &req.budget {
        if b.enforce && spend >= b.max_spend {
            return refuse(Reason::Budget, b.resets_in_ms, snapshot);
        }
    }
    let mut rpm_ok = None;
    if let Some(limit) = req.rpm {
        let w = check_window(&mut scope.rpm, now, u64::from(limit), 1);
        snapshot.requests_remaining = w.remaining;
        snapshot.requests_reset_ms = w.reset_ms;
        if !w.fits {
            return refuse(Reason::Requests, Some(w.retry_ms), snapshot);
        }
        rpm_ok = Some(());
    }
    if let Some(limit) = req.tpm {
        let w = check_window(&mut scope.tpm, now, limit, req.tokens);
        snapshot.tokens_remaining = w.remaining;
        snapshot.tokens_reset_ms = w.reset_ms;
        if !w.fits {
            if rpm_ok.is_some() {
                // The request check above counted this request as if it were taken.
                snapshot.requests_remaining += 1;
            }
            return refuse(Reason::Tokens, Some(w.retry_ms), snapshot);
        }
    }
    if let Some(limit) = req.max_parallel {
        scope.leases.retain(|_, exp| *exp > now);
        if scope.leases.len() >= limit as usize {
            return refuse(Reason::Parallel, Some(1000), snapshot);
        }
    }
    if let Some(b) = req.budget.as_ref().filter(|b| b.enforce) {
        let (reserved, held) = with_entry(&mut scope.holds, &b.period, |holds| {
            holds.retain(|_, (_, exp)| *exp > now);
            (holds.values().map(|(v, _)| *v).sum::<f64>(), !holds.is_empty())
        });
        // Past this point only one request at a time may use what is left: it can overshoot the
        // budget by at most its own cost.
        if spend + reserved + b.reserve > b.max_spend && held {
            return refuse(Reason::BudgetHeld, Some(1000), snapshot);
        }
    }
    // Everything fits: take it all.
    let sec = now.div_euclid(1000);
    if req.rpm.is_some() {
        *scope.rpm.entry(sec).or_default() += 1;
    }
    if req.tpm.is_some() {
        let n = scope.tpm.entry(sec).or_default();
        *n = n.saturating_add(i64::try_from(req.tokens).unwrap_or(i64::MAX));
    }
    if req.max_parallel.is_some() {
        scope.leases.insert(req.lease.clone(), now + req.lease_ttl_ms);
    }
    if let Some(b) = req.budget.as_ref().filter(|b| b.enforce) {
        let held = (b.reserve, now + req.lease_ttl_ms);
        with_entry(&mut scope.holds, &b.period, |holds| {
            holds.insert(b.member(&req.lease), held)
        });
    }
    Verdict::Granted { snapshot, local: true }
}

impl SharedState for Memory {
    fn acquire<'a>(&'a self, req: &'a Acquire) -> BoxFuture<'a, Result<Verdict, StateError>> {
        Box::pin(async move {
            Ok(match self.acquire_now(req) {
                Verdict::Granted { snapshot, .. } => Verdict::Granted { snapshot, local: false },
                v => v,
            })
        })
    }

    fn release<'a>(&'a self, rel: &'a Release) -> BoxFuture<'a, Result<Option<f64>, StateError>> {
        Box::pin(async move { Ok(self.release_now(rel)) })
    }

    fn renew<'a>(&'a self, r: &'a Renew) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            self.renew_now(r);
            Ok(())
        })
    }

    fn spend<'a>(&'a self, scope: &'a str, period: &'a str) -> BoxFuture<'a, Result<f64, StateError>> {
        Box::pin(async move {
            let scopes = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
            Ok(scopes
                .get(scope)
                .and_then(|s| s.spend.get(period))
                .copied()
                .unwrap_or(0.0))
        })
    }

    fn mark<'a>(&'a self, name: &'a str, ttl: Duration) -> BoxFuture<'a, Result<bool, StateError>> {
        Box::pin(async move { Ok(self.mark_now(name, ttl)) })
    }

    fn unmark<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            self.marks.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
            Ok(())
        })
    }

    fn marked<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool, StateError>> {
        Box::pin(async move {
            let marks = self.marks.lock().unwrap_or_else(|p| p.into_inner());
            Ok(marks.get(name).is_some_and(|until| *until > Instant::now()))
        })
    }

    fn cache_get<'a>(&'a self, key: &'a [u8; 32]) -> BoxFuture<'a, Option<Bytes>> {
        Box::pin(async move { self.cache.get(key).await.map(|c| c.body) })
    }

    fn cache_put<'a>(&'a self, key: &'a [u8; 32], value: Bytes, ttl: Duration) -> BoxFuture<'a, ()> {
        Box::pin(async move { self.cache.insert(*key, Cached { body: value, ttl }).await })
    }

    fn backend(&self) -> Backend {
        Backend::Memory
    }

    fn up(&self) -> bool {
        true
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}
