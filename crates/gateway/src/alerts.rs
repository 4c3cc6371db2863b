//! Spend alerts: when a key's spend in a period reaches one of its budget's thresholds
//! (percent of `maxSpend`), its webhook gets one signed POST, retried until it answers 2xx. A
//! Budget over a group of keys alerts the same way, through its own thresholds and webhook.
//!
//! Once per threshold per period across the fleet: a replica claims the threshold with a
//! shared mark before sending, and gives the claim back if every retry failed, so a later
//! request tries again. Delivery runs off the request path.
//!
//! The body is JSON; `x-switchyard-signature: sha256=<hex>` is the HMAC-SHA256, keyed with
//! the webhook's signing secret, of `<x-switchyard-timestamp>.<body>`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use switchyard_config::{BudgetConfig, BudgetPeriod, WebhookConfig};

use crate::budget::{BudgetGauges, Clock, Period, TeamBudget};
use crate::metrics::Metrics;
use crate::runtime::Key;
use crate::state::SharedState;

/// Delivery attempts per alert.
const ATTEMPTS: u32 = 6;
/// First retry delay; doubles each time.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// One attempt's deadline.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Spend alerts of one process: the thresholds it knows are delivered (or being delivered), so
/// it asks the shared state once per threshold per period rather than on every request; the
/// HTTP client that delivers; the budget gauges that follow every settled spend.
pub(crate) struct Alerts {
    seen: Mutex<HashSet<String>>,
    client: reqwest::Client,
    clock: Clock,
    budgets: Arc<BudgetGauges>,
    metrics: Metrics,
}

impl Alerts {
    /// Alerts delivered with `client`; settled spend also updates `budgets`.
    pub(crate) fn new(client: reqwest::Client, clock: Clock, budgets: Arc<BudgetGauges>, metrics: Metrics) -> Self {
        Self {
            seen: Mutex::new(HashSet::new()),
            client,
            clock,
            budgets,
            metrics,
        }
    }

    fn first_time(&self, id: &str) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() > 100_000 {
            seen.clear();
        }
        seen.insert(id.to_owned())
    }

    fn forget(&self, id: &str) {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}

/// Thresholds (percent) reached at `spend`.
pub(crate) fn reached(budget: &BudgetConfig, spend: f64) -> impl Iterator<Item = u32> + '_ {
    budget
        .alert_thresholds
        .iter()
        .copied()
        .filter(move |t| budget.max_spend > 0.0 && spend >= budget.max_spend * f64::from(*t) / 100.0)
}

impl Alerts {
    /// Called after each settled request with the period's spend; sends what is due, claiming
    /// each threshold in `state`.
    pub(crate) fn check(self: &Arc<Self>, state: &Arc<dyn SharedState>, key: &Arc<Key>, period: &Period, spend: f64) {
        let Some(budget) = key.config.budget.as_ref() else {
            return;
        };
        self.budgets
            .observe(&key.scope, &key.team, budget.max_spend, period, spend);
        let body = {
            let (key, budget, period) = (key.clone(), budget.clone(), period.clone());
            move |threshold| alert_body(&key, &budget, &period, threshold, spend)
        };
        self.due(state, &key.scope, &key.id, budget, period, spend, body);
    }

    /// The same for a Budget over a group of keys, after a request of `key` (one it covers)
    /// settled: the Budget's own thresholds and webhook, once per threshold per period.
    pub(crate) fn check_team(
        self: &Arc<Self>,
        state: &Arc<dyn SharedState>,
        team: &Arc<TeamBudget>,
        key: &Key,
        period: &Period,
        spend: f64,
    ) {
        self.budgets.observe_team(team, period, spend);
        let body = {
            let (team, key_id, period) = (team.clone(), key.id.clone(), period.clone());
            move |threshold| team_alert_body(&team, &key_id, &period, threshold, spend)
        };
        self.due(state, &team.scope, &team.id, &team.config.budget, period, spend, body);
    }

    /// Claims and sends each threshold of `budget` (of shared-state scope `scope`) reached at
    /// `spend` that this process has not seen yet.
    #[allow(clippy::too_many_arguments)]
    fn due(
        self: &Arc<Self>,
        state: &Arc<dyn SharedState>,
        scope: &str,
        who: &str,
        budget: &BudgetConfig,
        period: &Period,
        spend: f64,
        body: impl Fn(u32) -> Vec<u8> + Clone + Send + 'static,
    ) {
        for threshold in reached(budget, spend) {
            let id = format!("alert:{scope}:{}:{threshold}", period.id);
            if !self.first_time(&id) {
                continue;
            }
            let (alerts, state, period, body) = (self.clone(), state.clone(), period.clone(), body.clone());
            let (hook, who) = (budget.webhook.clone(), who.to_owned());
            tokio::spawn(async move {
                let keep = Duration::from_millis(
                    u64::try_from(period.keep_ms(alerts.clock.now_ms()).unwrap_or(400 * 86_400_000)).unwrap_or(0),
                );
                match state.mark(&id, keep).await {
                    Ok(true) => {}
                    // Another replica has it (or had it): done here.
                    Ok(false) => return,
                    Err(e) => {
                        tracing::debug!(error = %e, "alert claim deferred");
                        alerts.forget(&id);
                        return;
                    }
                }
                let delivered = match &hook {
                    Some(hook) => alerts.deliver(hook, &id, &body(threshold)).await,
                    None => {
                        tracing::warn!(budget = %who, threshold, spend, "budget threshold reached (no webhook)");
                        true
                    }
                };
                alerts
                    .metrics
                    .alerts
                    .with_label_values(&[if delivered { "delivered" } else { "failed" }])
                    .inc();
                if !delivered {
                    let _ = state.unmark(&id).await;
                    alerts.forget(&id);
                }
            });
        }
    }

    async fn deliver(&self, hook: &WebhookConfig, id: &str, body: &[u8]) -> bool {
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            let ts = self.clock.now_ms() / 1000;
            let mut req = self
                .client
                .post(&hook.url)
                .timeout(ATTEMPT_TIMEOUT)
                .header("content-type", "application/json")
                .header("x-switchyard-alert-id", id)
                .header("x-switchyard-timestamp", ts.to_string())
                .body(body.to_vec());
            if let Some(sig) = hook
                .signing_secret
                .as_ref()
                .and_then(|s| signature(s.expose(), ts, body))
            {
                req = req.header("x-switchyard-signature", sig);
            }
            match req.send().await {
                Ok(r) if r.status().is_success() => {
                    tracing::info!(alert = id, attempt, "spend alert delivered");
                    return true;
                }
                Ok(r) => log_failure(id, attempt, &hook.url, Ok(r.status().as_u16())),
                Err(e) => log_failure(id, attempt, &hook.url, Err(e)),
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
        false
    }
}

fn alert_body(key: &Key, budget: &BudgetConfig, period: &Period, threshold: u32, spend: f64) -> Vec<u8> {
    let period_kind = period_kind(budget.period);
    json!({
        "type": "budget.threshold",
        "key": key.id,
        "namespace": key.config.namespace,
        "name": key.config.name,
        "labels": key.config.labels,
        "thresholdPercent": threshold,
        "spend": spend,
        "maxSpend": budget.max_spend,
        "period": period_kind,
        "periodId": period.id,
        "periodStart": period.start_rfc3339(),
        "action": match budget.action {
            switchyard_config::BudgetAction::Block => "block",
            switchyard_config::BudgetAction::Alert => "alert",
        },
    })
    .to_string()
    .into_bytes()
}

fn period_kind(p: BudgetPeriod) -> &'static str {
    match p {
        BudgetPeriod::Daily => "daily",
        BudgetPeriod::Weekly => "weekly",
        BudgetPeriod::Monthly => "monthly",
        BudgetPeriod::Total => "total",
    }
}

/// The alert of a Budget over a group of keys: `team_budget.threshold`, naming the Budget and
/// the key whose request crossed the threshold.
fn team_alert_body(team: &TeamBudget, key: &str, period: &Period, threshold: u32, spend: f64) -> Vec<u8> {
    let budget = &team.config.budget;
    json!({
        "type": "team_budget.threshold",
        "budget": team.id,
        "namespace": team.config.namespace,
        "name": team.config.name,
        "key": key,
        "thresholdPercent": threshold,
        "spend": spend,
        "maxSpend": budget.max_spend,
        "period": period_kind(budget.period),
        "periodId": period.id,
        "periodStart": period.start_rfc3339(),
        "action": match budget.action {
            switchyard_config::BudgetAction::Block => "block",
            switchyard_config::BudgetAction::Alert => "alert",
        },
    })
    .to_string()
    .into_bytes()
}

/// Logs a delivery attempt that failed. A webhook URL may carry a token (Slack's do): only its
/// origin is logged, and the error without its URL.
fn log_failure(id: &str, attempt: u32, url: &str, outcome: Result<u16, reqwest::Error>) {
    match outcome {
        Ok(status) => tracing::warn!(alert = id, attempt, webhook = %origin(url), status, "spend alert refused"),
        Err(e) => {
            tracing::warn!(alert = id, attempt, webhook = %origin(url), error = %e.without_url(), "spend alert not delivered")
        }
    }
}

/// A webhook's scheme, host and port, for the log: its path and query may hold a token.
fn origin(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => u.origin().ascii_serialization(),
        Err(_) => "(invalid URL)".to_owned(),
    }
}

/// The signature header value for `body` sent at `timestamp`.
pub(crate) fn signature(secret: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).ok()?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(format!("sha256={}", hex::encode(mac.finalize().into_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Reference value: python3 -c "import hmac,hashlib;
        //   print(hmac.new(b'whsec', b'1700000000.{}', hashlib.sha256).hexdigest())"
        assert_eq!(
            signature("whsec", 1_700_000_000, b"{}").as_deref(),
            Some("sha256=7d44587dddbaf4c7f70fef20f48cd594834ffea1641e3ac227b84408298738af")
        );
    }

    /// What the log says of a webhook that cannot be reached: its origin, the cause, never
    /// the token in its path, query or user info.
    #[tokio::test]
    async fn a_failed_webhook_is_logged_without_its_token() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let url = format!("http://user:pw-SECRET@127.0.0.1:{port}/services/T000/B000/hook-SECRET?token=q-SECRET");
        let e = reqwest::Client::new().post(&url).send().await.unwrap_err();
        assert!(e.to_string().contains("SECRET"), "reqwest names the URL: {e}");
        // What the log lines say, captured.
        let buf = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            log_failure("alert:1", 1, &url, Err(e));
            log_failure("alert:1", 2, &url, Ok(500));
            log_failure("alert:1", 3, "not a url with hook-SECRET", Ok(500));
        });
        let logged = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        assert_eq!(logged.lines().count(), 3, "{logged}");
        assert!(!logged.contains("SECRET"), "{logged}");
        assert!(
            logged.contains(&format!("webhook=http://127.0.0.1:{port} ")),
            "{logged}"
        );
        assert!(logged.contains("(invalid URL)"), "{logged}");
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn thresholds_reached_by_spend() {
        let b = BudgetConfig {
            max_spend: 2.0,
            period: BudgetPeriod::Daily,
            action: switchyard_config::BudgetAction::Block,
            alert_thresholds: vec![50, 80, 100],
            webhook: None,
        };
        assert_eq!(reached(&b, 0.99).collect::<Vec<_>>(), Vec::<u32>::new());
        assert_eq!(reached(&b, 1.0).collect::<Vec<_>>(), vec![50]);
        assert_eq!(reached(&b, 1.7).collect::<Vec<_>>(), vec![50, 80]);
        assert_eq!(reached(&b, 2.5).collect::<Vec<_>>(), vec![50, 80, 100]);
    }
}
