//! Budgets over groups of keys, through `admit` and `settle` as the gateway runs them: in
//! memory, and on real `redis-server`s (a single node and a Redis Cluster) shared by two
//! replicas.

use std::sync::Mutex;

use switchyard_config::{BudgetConfig, FailMode, KeyConfig, KeyHash, LimitsConfig, TeamBudgetConfig};

use super::tests::{config, priced_route};
use super::*;
use crate::runtime::Runtime;
use crate::state::tests::{connect_real_clock, wait_up, RedisServer};
use crate::state::{Memory, SharedState};

fn limits_on(state: Arc<dyn SharedState>) -> Arc<Limits> {
    let clock = Clock::default();
    let metrics = Metrics::new().unwrap_or_else(|e| panic!("{e}"));
    let alerts = Arc::new(Alerts::new(
        reqwest::Client::new(),
        clock,
        Arc::new(crate::budget::BudgetGauges::default()),
        metrics.clone(),
    ));
    let slot = Arc::new(Slot::default());
    slot.choose(state);
    Arc::new(Limits::new(slot, clock, alerts, metrics))
}

fn budget(max_spend: f64) -> BudgetConfig {
    BudgetConfig {
        max_spend,
        period: BudgetPeriod::Monthly,
        action: BudgetAction::Block,
        alert_thresholds: vec![],
        webhook: None,
    }
}

/// Keys `a`, `b`, `c` of namespace `apps` (key `c` with limits and a budget of its own, so both
/// paths of `admit` run), one Budget `apps/team` of `team_max` over all three, a route `r`.
fn runtime(team_max: f64, own: &[(&str, Option<f64>, LimitsConfig)]) -> Runtime {
    let mut cfg = config(vec![priced_route("r", &[(1000.0, 1000.0, None)])]);
    for r in &mut cfg.routes {
        r.namespace = "apps".into();
    }
    cfg.keys = own
        .iter()
        .map(|(name, max, limits)| KeyConfig {
            namespace: "apps".into(),
            name: (*name).into(),
            hashes: vec![KeyHash {
                sha256: switchyard_config::hash_key(&format!("sk-{name}")),
                not_after: None,
            }],
            allowed_routes: vec![],
            allowed_passthrough: Vec::new(),
            limits: limits.clone(),
            budget: max.map(budget),
            expires_at: None,
            blocked: false,
            labels: Default::default(),
        })
        .map(std::sync::Arc::new)
        .collect();
    cfg.budgets = vec![TeamBudgetConfig {
        namespace: "apps".into(),
        name: "team".into(),
        budget: budget(team_max),
        keys: own.iter().map(|(n, _, _)| (*n).to_owned()).collect(),
    }];
    Runtime::new(cfg, 1)
}

fn key(rt: &Runtime, name: &str) -> Arc<Key> {
    rt.authenticate(&format!("sk-{name}"), 0)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn request() -> Json {
    serde_json::from_str(r#"{"model":"r","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}"#)
        .unwrap_or_default()
}

fn reserve(route: &Route) -> f64 {
    worst_cost(route, Prompt::measure(&request()).rough(), Some(100))
}

async fn spend_of(state: &Arc<dyn SharedState>, scope: &str) -> f64 {
    let period = Period::of(BudgetPeriod::Monthly, Clock::default().now_ms());
    state.spend(scope, &period.id).await.unwrap_or_else(|e| panic!("{e}"))
}

/// Two replicas, three keys, one Budget: waves of concurrent requests until the Budget refuses
/// them all. The fleet never spends more than the Budget plus one request's reservation, the
/// ledger (what was settled) is what the shared state counted, and the refusals are the key
/// budget's 429 naming the Budget.
async fn holds_across_replicas(one: Arc<dyn SharedState>, two: Arc<dyn SharedState>, tag: &str) {
    let unlimited = LimitsConfig::default();
    let rt = runtime(
        1.0,
        &[
            ("a", None, unlimited.clone()),
            ("b", None, unlimited),
            (
                "c",
                Some(1000.0),
                LimitsConfig {
                    rpm: Some(100_000),
                    ..LimitsConfig::default()
                },
            ),
        ],
    );
    let route = rt.route("apps", "r").cloned().unwrap_or_else(|| panic!("no route"));
    let r = reserve(&route);
    // Room for about ten worst-case requests.
    let max = r * 10.37;
    let rt = runtime(
        max,
        &[
            ("a", None, LimitsConfig::default()),
            ("b", None, LimitsConfig::default()),
            (
                "c",
                Some(1000.0),
                LimitsConfig {
                    rpm: Some(100_000),
                    ..LimitsConfig::default()
                },
            ),
        ],
    );
    let keys: Vec<Arc<Key>> = ["a", "b", "c"].iter().map(|n| key(&rt, n)).collect();
    assert!(keys.iter().all(|k| k.budgets.len() == 1), "{tag}");
    let replicas = [limits_on(one.clone()), limits_on(two)];
    let ledger = Arc::new(Mutex::new(0.0_f64));
    let mut refusals: Vec<GatewayError> = Vec::new();
    let mut granted = 0;
    for _wave in 0..200 {
        let calls = (0..12).map(|i| {
            let (limits, key, route, ledger) = (
                replicas[i % 2].clone(),
                keys[i % 3].clone(),
                route.clone(),
                ledger.clone(),
            );
            async move {
                let admission = admit(&limits, &key, &route, &request()).await;
                match admission {
                    Ok(a) => {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        // Between 60% and 100% of the worst case, as real requests land.
                        let cost = r * (0.6 + 0.4 * rand::random::<f64>());
                        *ledger.lock().unwrap_or_else(|p| p.into_inner()) += cost;
                        a.settle(cost, None);
                        None
                    }
                    Err(refused) => Some(refused.error),
                }
            }
        });
        let results = futures::future::join_all(calls).await;
        for l in &replicas {
            l.settled(Duration::from_secs(5)).await;
        }
        let before = granted;
        for res in results {
            match res {
                None => granted += 1,
                Some(e) => refusals.push(e),
            }
        }
        if granted == before {
            break;
        }
    }
    let ledger = *ledger.lock().unwrap_or_else(|p| p.into_inner());
    let counted = spend_of(&one, "t:apps/team").await;
    assert!(
        (counted - ledger).abs() < 1e-9,
        "{tag}: counted {counted}, settled {ledger}"
    );
    assert!(ledger >= max, "{tag}: stopped at {ledger} of {max}");
    assert!(
        ledger <= max + r,
        "{tag}: spent {ledger}, budget {max} + one reservation {r}"
    );
    assert!(granted >= 10, "{tag}: {granted}");
    // Every refusal is the Budget's (the keys' own limits have room), shaped as a key budget's.
    let last = refusals.last().unwrap_or_else(|| panic!("{tag}: never refused"));
    assert_eq!(last.code.as_deref(), Some("budget_exceeded"), "{tag}: {}", last.message);
    for e in &refusals {
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS, "{tag}: {}", e.message);
        assert_eq!(e.kind, "insufficient_quota", "{tag}");
        assert!(
            matches!(e.code.as_deref(), Some("budget_exceeded" | "budget_reserved")),
            "{tag}: {e:?}"
        );
        assert!(e.message.contains("Budget `apps/team`"), "{tag}: {}", e.message);
    }
    // The key with a budget of its own counted its share there too.
    let own = spend_of(&one, "k:apps/c").await;
    assert!(own > 0.0 && own < ledger, "{tag}: {own}");
}

#[tokio::test]
async fn team_budget_in_memory() {
    let state: Arc<dyn SharedState> = Arc::new(Memory::new());
    holds_across_replicas(state.clone(), state, "memory").await;
}

#[tokio::test]
async fn team_budget_across_replicas_on_redis() {
    let server = RedisServer::start(false).await;
    let one: Arc<dyn SharedState> = Arc::new(connect_real_clock(&server, FailMode::Closed));
    let two: Arc<dyn SharedState> = Arc::new(connect_real_clock(&server, FailMode::Closed));
    holds_across_replicas(one, two, "redis").await;
}

/// A key and its Budget live in different cluster slots: each is reserved in its own atomic
/// step, so Redis Cluster (which refuses scripts across slots) serves them.
#[tokio::test]
async fn team_budget_across_replicas_on_redis_cluster() {
    let server = RedisServer::start(true).await;
    let one: Arc<dyn SharedState> = Arc::new(connect_real_clock(&server, FailMode::Closed));
    let two: Arc<dyn SharedState> = Arc::new(connect_real_clock(&server, FailMode::Closed));
    // A cluster client connects in the background.
    wait_up(one.as_ref()).await;
    wait_up(two.as_ref()).await;
    holds_across_replicas(one, two, "cluster").await;
}

/// A request the key's own limits refuse holds nothing on the Budget: all or nothing.
async fn refused_requests_hold_nothing(state: Arc<dyn SharedState>, tag: &str) {
    let rt0 = runtime(1.0, &[("a", None, LimitsConfig::default())]);
    let route = rt0.route("apps", "r").cloned().unwrap_or_else(|| panic!("no route"));
    let r = reserve(&route);
    // The Budget has room for one reservation and a half; key `a`'s own budget is tiny.
    let rt = runtime(
        r * 1.5,
        &[
            ("a", Some(r * 0.1), LimitsConfig::default()),
            ("b", None, LimitsConfig::default()),
            ("c", None, LimitsConfig::default()),
        ],
    );
    let (a, b, c) = (key(&rt, "a"), key(&rt, "b"), key(&rt, "c"));
    let limits = limits_on(state.clone());
    let code = |res: &Result<Admission, Refused>| match res {
        Ok(_) => "granted".to_owned(),
        Err(e) => format!("{} {}", e.error.code.clone().unwrap_or_default(), e.error.message),
    };
    // Key `a` spends past its own budget (and a fifth of a reservation of the Budget's).
    let first = admit(&limits, &a, &route, &request()).await;
    assert_eq!(code(&first), "granted", "{tag}");
    if let Ok(first) = first {
        first.settle(r * 0.2, None);
    }
    limits.settled(Duration::from_secs(5)).await;
    // Its own budget refuses it after the Budget reserved for it: the reservation is given back.
    let refused = admit(&limits, &a, &route, &request()).await;
    let msg = code(&refused);
    assert!(
        msg.starts_with("budget_exceeded Budget exceeded for key `apps/a`"),
        "{tag}: {msg}"
    );
    drop(refused);
    limits.settled(Duration::from_secs(5)).await;
    // So `b` finds no reservation in the way (0.2 spent + 1 reserved fits in 1.5 either way, but a
    // leftover hold of `a`'s would have made it 2.2 with a hold in flight: refused).
    let held = admit(&limits, &b, &route, &request()).await;
    assert_eq!(code(&held), "granted", "{tag}");
    // While `b` holds the rest, `c` is told the Budget is reserved, and for how long.
    let waiting = admit(&limits, &c, &route, &request()).await;
    let msg = code(&waiting);
    assert!(
        msg.starts_with("budget_reserved The rest of Budget `apps/team`") && msg.contains("key `apps/c`"),
        "{tag}: {msg}"
    );
    if let Err(w) = &waiting {
        assert_eq!(w.error.retry_after, Some(Duration::from_secs(1)), "{tag}");
    }
    // `b` ends without usage: nothing is spent, the reservation is gone, `c` gets in.
    drop(held);
    limits.settled(Duration::from_secs(5)).await;
    let third = admit(&limits, &c, &route, &request()).await;
    assert_eq!(code(&third), "granted", "{tag}");
    drop(third);
    limits.settled(Duration::from_secs(5)).await;
    assert!((spend_of(&state, "t:apps/team").await - r * 0.2).abs() < 1e-9, "{tag}");
}

#[tokio::test]
async fn refused_requests_hold_nothing_in_memory() {
    refused_requests_hold_nothing(Arc::new(Memory::new()), "memory").await;
}

#[tokio::test]
async fn refused_requests_hold_nothing_on_redis() {
    let server = RedisServer::start(false).await;
    refused_requests_hold_nothing(Arc::new(connect_real_clock(&server, FailMode::Closed)), "redis").await;
}

/// With Redis down, a Budget follows the fleet's fail mode: `closed` refuses (503, as for a
/// key's limits), `open` counts in the process from the spend Redis last reported, and the
/// spend reaches Redis when it is back.
#[tokio::test]
async fn dead_redis_follows_the_fail_mode() {
    let mut server = RedisServer::start(false).await;
    let rt0 = runtime(1.0, &[("a", None, LimitsConfig::default())]);
    let route = rt0.route("apps", "r").cloned().unwrap_or_else(|| panic!("no route"));
    let r = reserve(&route);
    let rt = runtime(r * 2.5, &[("a", None, LimitsConfig::default())]);
    let a = key(&rt, "a");
    let closed: Arc<dyn SharedState> = Arc::new(connect_real_clock(&server, FailMode::Closed));
    let open: Arc<dyn SharedState> = Arc::new(connect_real_clock(&server, FailMode::Open));
    let (closed_l, open_l) = (limits_on(closed.clone()), limits_on(open.clone()));
    // Both see Redis first; the open one learns the Budget's spend.
    let first = admit(&open_l, &a, &route, &request())
        .await
        .map_err(|e| e.error.message);
    first.unwrap_or_else(|e| panic!("{e}")).settle(r, None);
    open_l.settled(Duration::from_secs(5)).await;
    let up = admit(&closed_l, &a, &route, &request())
        .await
        .map_err(|e| e.error.message);
    drop(up.unwrap_or_else(|e| panic!("{e}")));
    closed_l.settled(Duration::from_secs(5)).await;
    server.stop();
    let refused = admit(&closed_l, &a, &route, &request()).await;
    match refused {
        Ok(_) => panic!("fail closed admitted a request with Redis down"),
        Err(e) => {
            assert_eq!(e.error.status, StatusCode::SERVICE_UNAVAILABLE);
            assert!(e.error.message.contains("fail"), "{}", e.error.message);
        }
    }
    // Fail open: counted locally from the last known spend (r): one more fits, then refused.
    let local = admit(&open_l, &a, &route, &request())
        .await
        .map_err(|e| e.error.message);
    local.unwrap_or_else(|e| panic!("{e}")).settle(r, None);
    open_l.settled(Duration::from_secs(5)).await;
    let third = admit(&open_l, &a, &route, &request()).await;
    let _ = third.map(|t| t.settle(r, None));
    open_l.settled(Duration::from_secs(5)).await;
    let over = admit(&open_l, &a, &route, &request()).await;
    match over {
        Ok(_) => panic!("fail open forgot the Budget's spend"),
        Err(e) => assert_eq!(e.error.code.as_deref(), Some("budget_exceeded"), "{}", e.error.message),
    }
    // Back up: the spend counted while Redis was down is written there.
    server.restart().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let counted = open
            .spend(
                "t:apps/team",
                &Period::of(BudgetPeriod::Monthly, Clock::default().now_ms()).id,
            )
            .await;
        if counted.as_ref().is_ok_and(|c| (c - r * 3.0).abs() < 1e-9) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "spend not written back: {counted:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
