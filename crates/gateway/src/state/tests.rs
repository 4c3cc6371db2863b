//! The same checks against [`Memory`] and against real `redis-server` processes (a single
//! node and a one-node Redis Cluster, which refuses scripts whose keys span slots). Redis tests
//! fail, saying so, when `redis-server` is not installed: a skipped test would pass unseen.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_config::{FailMode, RedisConfig, SecretString};

use super::*;

/// A `redis-server` on a free 127.0.0.1 port, killed on drop.
pub(crate) struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    cluster: bool,
}

impl RedisServer {
    /// Fails the test when `redis-server` cannot be run: the Redis tests are part of the suite
    /// (scripts/test.sh installs it), not optional.
    fn require() {
        let ran = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match ran {
            Ok(s) if s.success() => {}
            Ok(s) => panic!("`redis-server --version` failed ({s}): this test needs a working redis-server"),
            Err(e) => panic!(
                "redis-server is required by this test but could not be run ({e}); install it \
                 (Debian: apt-get install redis-server; scripts/test.sh does) and make sure it is on PATH"
            ),
        }
    }

    /// Starts one; fails the test if `redis-server` is missing.
    pub(crate) async fn start(cluster: bool) -> Self {
        Self::require();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("free port: {e}"));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let mut s = Self {
            child: None,
            port,
            dir,
            cluster,
        };
        s.restart().await;
        s
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub(crate) fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts (again) on the same port; data is kept in an append-only file.
    pub(crate) async fn restart(&mut self) {
        self.stop();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.cluster {
            cmd.args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]);
        }
        self.child = Some(cmd.spawn().unwrap_or_else(|e| panic!("redis-server: {e}")));
        let client = ::redis::Client::open(self.url()).unwrap_or_else(|e| panic!("{e}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                if self.cluster {
                    let _: Result<String, _> = ::redis::cmd("CLUSTER")
                        .arg("ADDSLOTSRANGE")
                        .arg(0)
                        .arg(16383)
                        .query_async(&mut c)
                        .await;
                    let info: String = ::redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query_async(&mut c)
                        .await
                        .unwrap_or_default();
                    if info.contains("cluster_state:ok") {
                        return;
                    }
                } else if ::redis::cmd("PING").query_async::<String>(&mut c).await.is_ok() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Redis state that places windows by the callers' `now_ms`, so the tests can move time.
fn connect(server: &RedisServer, fail_mode: FailMode) -> Arc<dyn SharedState> {
    let r = connect_real_clock(server, fail_mode);
    r.use_caller_clock();
    Arc::new(r)
}

/// A Redis state as the gateway runs it: windows placed by Redis' `TIME`.
pub(crate) fn connect_real_clock(server: &RedisServer, fail_mode: FailMode) -> Redis {
    let cfg = RedisConfig {
        url: SecretString::new(server.url()),
        cluster: server.cluster,
        fail_mode,
    };
    Redis::start(&cfg).unwrap_or_else(|e| panic!("{e}"))
}

/// Two replicas whose clocks are a minute and a half apart place requests in the same windows
/// (Redis' clock): together they admit a key's rpm, not twice it, and a token correction lands
/// in the bucket the estimate went to.
#[tokio::test]
async fn skewed_replicas_agree_on_windows() {
    let server = RedisServer::start(false).await;
    let a = connect_real_clock(&server, FailMode::Closed);
    let b = connect_real_clock(&server, FailMode::Closed);
    let now = crate::budget::Clock::default().now_ms();
    let (slow, fast) = (now - 45_000, now + 45_000);
    let rpm = |now_ms| Acquire {
        rpm: Some(2),
        tpm: Some(100),
        tokens: 10,
        ..acq("k:skew/rpm", now_ms)
    };
    let mut at = Vec::new();
    for (state, now_ms) in [(&a, slow), (&b, fast)] {
        match get(state, &rpm(now_ms)).await {
            Verdict::Granted { snapshot, .. } => at.push(snapshot.at_ms),
            other => panic!("{other:?}"),
        }
    }
    // Both decided by one clock: within a second of each other, whatever the replicas think.
    assert!((at[0] - at[1]).abs() < 1000, "{at:?}");
    assert!((at[0] - now).abs() < 5000, "{at:?} vs {now}");
    for (state, now_ms) in [(&a, slow), (&b, fast), (&a, fast + 90_000)] {
        assert_eq!(reason(&get(state, &rpm(now_ms)).await), Some(Reason::Requests));
    }
    // A release corrects the window by Redis' clock too: 80 more real tokens fill the window
    // for both.
    let rel = Release {
        scope: "k:skew/rpm".into(),
        now_ms: fast,
        tokens: Some((at[0].div_euclid(1000), 80)),
        ..Release::default()
    };
    b.release(&rel).await.unwrap_or_else(|e| panic!("{e}"));
    let tpm = |now_ms| Acquire {
        tpm: Some(100),
        tokens: 10,
        ..acq("k:skew/rpm", now_ms)
    };
    assert_eq!(reason(&get(&a, &tpm(slow)).await), Some(Reason::Tokens));
    assert_eq!(reason(&get(&b, &tpm(fast)).await), Some(Reason::Tokens));
}

pub(crate) async fn wait_up(state: &dyn SharedState) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !state.up() {
        assert!(Instant::now() < deadline, "redis did not come back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const T0: i64 = 1_795_614_310_000;

fn acq(scope: &str, now_ms: i64) -> Acquire {
    Acquire {
        scope: scope.into(),
        now_ms,
        lease: format!("{:016x}", rand::random::<u64>()),
        lease_ttl_ms: 60_000,
        ..Acquire::default()
    }
}

fn granted(v: &Verdict) -> bool {
    matches!(v, Verdict::Granted { .. })
}

fn reason(v: &Verdict) -> Option<Reason> {
    match v {
        Verdict::Refused { reason, .. } => Some(*reason),
        Verdict::Granted { .. } => None,
    }
}

async fn get(state: &dyn SharedState, req: &Acquire) -> Verdict {
    state.acquire(req).await.unwrap_or_else(|e| panic!("{e}"))
}

/// Every behaviour the limits rely on.
async fn suite(state: Arc<dyn SharedState>, tag: &str) {
    let s = state.as_ref();
    let scope = |name: &str| format!("k:{tag}/{name}");

    // Requests per minute: exactly the limit, then a retry-after until the oldest leaves.
    let rpm = |now| Acquire {
        rpm: Some(3),
        ..acq(&scope("rpm"), now)
    };
    for i in 0..3 {
        let v = get(s, &rpm(T0 + i * 1000)).await;
        assert!(granted(&v), "{v:?}");
        if let Verdict::Granted { snapshot, .. } = v {
            assert_eq!(snapshot.requests_remaining, 2 - i as u64);
        }
    }
    let v = get(s, &rpm(T0 + 2500)).await;
    match v {
        Verdict::Refused {
            reason: Reason::Requests,
            retry_after_ms: Some(ms),
            snapshot,
        } => {
            // The first request (second T0) leaves the window at T0 + 60 s.
            assert_eq!(ms, 60_000 - 2500 + (T0 % 1000));
            assert_eq!(snapshot.requests_remaining, 0);
        }
        other => panic!("{other:?}"),
    }
    assert!(granted(&get(s, &rpm(T0 + 60_000)).await));
    assert_eq!(reason(&get(s, &rpm(T0 + 60_100)).await), Some(Reason::Requests));

    // Tokens per minute, corrected by real usage at release.
    let tpm = |now, tokens| Acquire {
        tpm: Some(100),
        tokens,
        ..acq(&scope("tpm"), now)
    };
    assert!(granted(&get(s, &tpm(T0, 60)).await));
    assert_eq!(reason(&get(s, &tpm(T0 + 10, 60)).await), Some(Reason::Tokens));
    let rel = Release {
        scope: scope("tpm"),
        now_ms: T0 + 20,
        tokens: Some((T0 / 1000, 10 - 60)),
        ..Release::default()
    };
    s.release(&rel).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(granted(&get(s, &tpm(T0 + 30, 60)).await));
    // Larger than the whole limit: refused, retry after a full window.
    assert_eq!(reason(&get(s, &tpm(T0 + 40, 101)).await), Some(Reason::Tokens));

    // Slots in flight.
    let par = |now| Acquire {
        max_parallel: Some(2),
        ..acq(&scope("par"), now)
    };
    let (a, b, c) = (par(T0), par(T0), par(T0));
    assert!(granted(&get(s, &a).await));
    assert!(granted(&get(s, &b).await));
    assert_eq!(reason(&get(s, &c).await), Some(Reason::Parallel));
    let free_a = Release {
        scope: scope("par"),
        now_ms: T0,
        lease: Some(a.lease.clone()),
        ..Release::default()
    };
    s.release(&free_a).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(granted(&get(s, &c).await));
    // A slot whose gateway died expires with its lease.
    assert!(granted(&get(s, &par(T0 + 61_000)).await));

    // Budget: reservations, the one request allowed past the edge, then blocked until reset.
    let budget = |now, reserve| Acquire {
        budget: Some(Hold {
            period: "d2026-11-25".into(),
            max_spend: 1.0,
            reserve,
            enforce: true,
            resets_in_ms: Some(5_000),
        }),
        ..acq(&scope("budget"), now)
    };
    let settle = |req: &Acquire, cost: f64| Release {
        scope: req.scope.clone(),
        now_ms: req.now_ms,
        settle: req.budget.as_ref().map(|b| Settle {
            period: b.period.clone(),
            member: Some(b.member(&req.lease)),
            cost,
            keep_ms: Some(86_400_000),
        }),
        ..Release::default()
    };
    let (a, b, c) = (budget(T0, 0.4), budget(T0, 0.4), budget(T0, 0.4));
    assert!(granted(&get(s, &a).await));
    assert!(granted(&get(s, &b).await));
    assert_eq!(reason(&get(s, &c).await), Some(Reason::BudgetHeld));
    assert_eq!(s.release(&settle(&a, 0.5)).await.ok().flatten(), Some(0.5));
    assert_eq!(reason(&get(s, &c).await), Some(Reason::BudgetHeld));
    let spend = s.release(&settle(&b, 0.45)).await.ok().flatten().unwrap_or_default();
    assert!((spend - 0.95).abs() < 1e-9, "{spend}");
    // Nothing in flight: one request may use what is left, even if it costs more.
    assert!(granted(&get(s, &c).await));
    assert_eq!(reason(&get(s, &budget(T0, 0.01)).await), Some(Reason::BudgetHeld));
    s.release(&settle(&c, 0.4)).await.unwrap_or_else(|e| panic!("{e}"));
    let spent = s.spend(&scope("budget"), "d2026-11-25").await.unwrap_or_default();
    assert!((spent - 1.35).abs() < 1e-9, "{spent}");
    match get(s, &budget(T0, 0.01)).await {
        Verdict::Refused {
            reason: Reason::Budget,
            retry_after_ms: Some(5_000),
            snapshot,
        } => assert!((snapshot.spend - 1.35).abs() < 1e-9),
        other => panic!("{other:?}"),
    }
    // A new period starts from zero.
    let mut next = budget(T0, 0.4);
    if let Some(b) = next.budget.as_mut() {
        b.period = "d2026-11-26".into();
    }
    assert!(granted(&get(s, &next).await));

    // Everything or nothing: a refusal by the budget takes no request from the window.
    let both = |now| Acquire {
        rpm: Some(1),
        budget: Some(Hold {
            period: "d2026-11-25".into(),
            max_spend: 1.0,
            reserve: 0.1,
            enforce: true,
            resets_in_ms: None,
        }),
        ..acq(&scope("budget"), now)
    };
    assert_eq!(reason(&get(s, &both(T0)).await), Some(Reason::Budget));
    let mut fresh = both(T0);
    fresh.scope = scope("fresh");
    assert!(granted(&get(s, &fresh).await));

    // Concurrent acquires are exact.
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let state = state.clone();
        let scope = scope("concurrent");
        tasks.push(tokio::spawn(async move {
            let req = Acquire {
                rpm: Some(17),
                ..acq(&scope, T0)
            };
            granted(&state.acquire(&req).await.unwrap_or_else(|e| panic!("{e}")))
        }));
    }
    let mut n = 0;
    for t in tasks {
        n += usize::from(t.await.unwrap_or(false));
    }
    assert_eq!(n, 17);

    // Marks are set once.
    let mark = format!("{tag}:alert:80");
    assert!(s.mark(&mark, Duration::from_secs(60)).await.unwrap_or(false));
    assert!(!s.mark(&mark, Duration::from_secs(60)).await.unwrap_or(true));
    assert!(s.marked(&mark).await.unwrap_or(false));
    s.unmark(&mark).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(s.mark(&mark, Duration::from_secs(60)).await.unwrap_or(false));

    // Cache.
    let key = [7u8; 32];
    assert_eq!(s.cache_get(&key).await, None);
    s.cache_put(&key, Bytes::from_static(b"body"), Duration::from_secs(60))
        .await;
    assert_eq!(s.cache_get(&key).await, Some(Bytes::from_static(b"body")));

    // Renewal: a live request's slot and reservation outlast their first lease.
    let hold = Hold {
        period: "total".into(),
        max_spend: 1.0,
        reserve: 0.6,
        enforce: true,
        resets_in_ms: None,
    };
    let long = |now| Acquire {
        max_parallel: Some(1),
        budget: Some(hold.clone()),
        ..acq(&scope("renew"), now)
    };
    let first = long(T0);
    assert!(granted(&get(s, &first).await));
    let renew = Renew {
        scope: scope("renew"),
        now_ms: T0 + 50_000,
        lease: Some(first.lease.clone()),
        hold: Some(("total".into(), hold.member(&first.lease))),
        lease_ttl_ms: 60_000,
        local: false,
    };
    s.renew(&renew).await.unwrap_or_else(|e| panic!("{e}"));
    // Past the first lease (T0 + 60 s), within the renewed one.
    assert_eq!(reason(&get(s, &long(T0 + 70_000)).await), Some(Reason::Parallel));
    let budget_only = Acquire {
        budget: Some(hold.clone()),
        ..acq(&scope("renew"), T0 + 70_000)
    };
    assert_eq!(reason(&get(s, &budget_only).await), Some(Reason::BudgetHeld));
    // Past the renewed lease: a gateway that died holding them frees them.
    assert!(granted(&get(s, &long(T0 + 111_000)).await));
}

#[tokio::test]
async fn memory_state() {
    suite(Arc::new(Memory::new()), "memory").await;
}

#[tokio::test]
async fn redis_state() {
    let server = RedisServer::start(false).await;
    suite(connect(&server, FailMode::Closed), "redis").await;
}

#[tokio::test]
async fn redis_cluster_state() {
    let server = RedisServer::start(true).await;
    let state = connect(&server, FailMode::Closed);
    wait_up(state.as_ref()).await;
    suite(state, "cluster").await;
}

#[tokio::test]
async fn redis_fail_open_counts_locally_and_writes_spend_back() {
    let mut server = RedisServer::start(false).await;
    let state = connect(&server, FailMode::Open);
    let s = state.as_ref();
    let hold = Hold {
        period: "m2026-11".into(),
        max_spend: 10.0,
        reserve: 0.0,
        enforce: true,
        resets_in_ms: Some(1),
    };
    let settle = |cost| Release {
        scope: "k:open/a".into(),
        now_ms: T0,
        settle: Some(Settle {
            period: "m2026-11".into(),
            member: None,
            cost,
            keep_ms: None,
        }),
        ..Release::default()
    };
    s.release(&settle(1.5)).await.unwrap_or_else(|e| panic!("{e}"));
    // Seen from Redis: the local fallback starts from it.
    let req = Acquire {
        rpm: Some(2),
        budget: Some(hold.clone()),
        ..acq("k:open/a", T0)
    };
    assert!(granted(&get(s, &req).await));

    server.stop();
    // The first call notices; then every call is local, with local limits.
    let mut local = 0;
    let mut refused = 0;
    for i in 0..4 {
        match get(s, &acq_rpm("k:open/a", T0 + 1000 + i, &hold)).await {
            Verdict::Granted { local: true, snapshot } => {
                local += 1;
                assert!((snapshot.spend - 1.5).abs() < 1e-9, "{snapshot:?}");
            }
            Verdict::Refused {
                reason: Reason::Requests,
                ..
            } => refused += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(!s.up());
    assert_eq!((local, refused), (2, 2));
    // Spend settled while Redis is down is kept and written back when it returns.
    s.release(&settle(0.25)).await.unwrap_or_else(|e| panic!("{e}"));
    server.restart().await;
    wait_up(s).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let spend = s.spend("k:open/a", "m2026-11").await.unwrap_or_default();
        if (spend - 1.75).abs() < 1e-9 {
            break;
        }
        assert!(Instant::now() < deadline, "queued spend not written: {spend}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn acq_rpm(scope: &str, now: i64, hold: &Hold) -> Acquire {
    Acquire {
        rpm: Some(2),
        budget: Some(hold.clone()),
        ..acq(scope, now)
    }
}

#[tokio::test]
async fn redis_fail_closed_refuses_then_recovers() {
    let mut server = RedisServer::start(false).await;
    let state = connect(&server, FailMode::Closed);
    let s = state.as_ref();
    let req = Acquire {
        rpm: Some(100),
        max_parallel: Some(1),
        ..acq("k:closed/a", T0)
    };
    assert!(granted(&get(s, &req).await));
    server.stop();
    assert!(s.acquire(&req).await.is_err());
    assert!(s.acquire(&req).await.is_err());
    assert_eq!(s.cache_get(&[1; 32]).await, None);
    // The request ends during the outage: its slot is given back when Redis returns, not when
    // the lease expires.
    let end = Release {
        scope: req.scope.clone(),
        now_ms: T0,
        lease: Some(req.lease.clone()),
        ..Release::default()
    };
    assert!(s.release(&end).await.is_ok());
    server.restart().await;
    wait_up(s).await;
    let next = Acquire {
        max_parallel: Some(1),
        ..acq("k:closed/a", T0 + 1)
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !granted(&get(s, &next).await) {
        assert!(Instant::now() < deadline, "the orphaned slot was not released");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn windows_slide_by_second() {
    let mut b = BTreeMap::new();
    let w = check_window(&mut b, T0, 2, 1);
    assert!(w.fits && w.remaining == 1);
    b.insert(T0 / 1000, 2);
    let w = check_window(&mut b, T0 + 59_000, 2, 1);
    assert!(!w.fits);
    assert_eq!(w.retry_ms, 1000 - T0 % 1000);
    let w = check_window(&mut b, T0 - T0 % 1000 + 60_000, 2, 1);
    assert!(w.fits && b.is_empty());
    assert_eq!(fmt_usd(0.000_001_5), "0.0000015");
    assert_eq!(fmt_usd(2.0), "2");
}
