//! The gateway's clock for limits and budgets, the budgets over groups of keys
//! ([`TeamBudget`]), and the budget gauges by key team and by Budget. Budget periods are part of
//! the shared-state contract with the operator, in `switchyard_config::shared_state`.
//!
//! The clock can be offset for tests (`SWITCHYARD_CLOCK_OFFSET_SECS`) so a period boundary
//! can be reached in seconds; it moves budget periods and in-memory rate windows (Redis places
//! windows by its own clock), never key expiry.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use switchyard_config::TeamBudgetConfig;

use crate::metrics::Metrics;

pub use switchyard_config::shared_state::{rfc3339, Period};

/// Environment variable that offsets the limits clock, in seconds (tests only).
pub const CLOCK_OFFSET_ENV: &str = "SWITCHYARD_CLOCK_OFFSET_SECS";

/// Wall-clock time for limits and budgets.
#[derive(Clone, Copy, Debug, Default)]
pub struct Clock {
    offset_ms: i64,
}

impl Clock {
    /// The system clock, offset by [`CLOCK_OFFSET_ENV`] when set.
    pub fn from_env() -> Self {
        let offset_ms = std::env::var(CLOCK_OFFSET_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(0, |s| (s * 1000.0) as i64);
        if offset_ms != 0 {
            tracing::warn!(offset_ms, "limits clock offset (tests only)");
        }
        Self { offset_ms }
    }

    /// A clock offset by `offset_ms`.
    pub fn with_offset(offset_ms: i64) -> Self {
        Self { offset_ms }
    }

    /// Milliseconds since the epoch.
    pub fn now_ms(&self) -> i64 {
        let real = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        real.saturating_add(self.offset_ms)
    }
}

/// A `Budget` over a group of keys, as the gateway runs it: every key it covers holds an `Arc`
/// of it (`Key::budgets`).
#[derive(Debug)]
pub struct TeamBudget {
    /// Its config.
    pub config: TeamBudgetConfig,
    /// `namespace/name`, for messages, alerts and metrics.
    pub id: String,
    /// Its scope in the shared state (`t:namespace/name`): a spend counter and a reservation set
    /// per period, as a key's budget has.
    pub scope: String,
}

impl TeamBudget {
    /// A Budget from its config.
    pub fn new(config: TeamBudgetConfig) -> Self {
        Self {
            id: config.id(),
            scope: switchyard_config::shared_state::budget_scope(&config.namespace, &config.name),
            config,
        }
    }

    /// Whether it refuses requests when spent (`action: block`).
    pub fn enforces(&self) -> bool {
        self.config.budget.action == switchyard_config::BudgetAction::Block
    }
}

/// The latest known spend of every key with a budget that this replica settled a request for,
/// summed into the `switchyard_budget_*` gauges by key team when metrics are scraped. The spend
/// is the fleet's (it comes back from the shared state), so any replica's figure is current;
/// a key whose period ended counts as unspent until it is used again.
#[derive(Default)]
pub(crate) struct BudgetGauges {
    keys: Mutex<HashMap<String, Tracked>>,
    /// The same for Budgets over groups of keys, by (namespace, name).
    teams: Mutex<HashMap<(String, String), Tracked>>,
}

struct Tracked {
    team: String,
    max_spend: f64,
    spend: f64,
    period_end_ms: Option<i64>,
}

impl BudgetGauges {
    /// Records the spend of key `scope` (of team `team`, with a budget of `max_spend`) in its
    /// current period.
    pub(crate) fn observe(&self, scope: &str, team: &str, max_spend: f64, period: &Period, spend: f64) {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        match keys.get_mut(scope) {
            Some(t) => {
                t.max_spend = max_spend;
                t.spend = spend;
                t.period_end_ms = period.end_ms;
                if t.team != team {
                    team.clone_into(&mut t.team);
                }
            }
            None => {
                keys.insert(
                    scope.to_owned(),
                    Tracked {
                        team: team.to_owned(),
                        max_spend,
                        spend,
                        period_end_ms: period.end_ms,
                    },
                );
            }
        }
    }

    /// Records a Budget's spend in its current period. Settlements finish in any order, and
    /// spend only grows within a period: an older, smaller figure never replaces a newer one.
    pub(crate) fn observe_team(&self, budget: &TeamBudget, period: &Period, spend: f64) {
        let mut teams = self.teams.lock().unwrap_or_else(|p| p.into_inner());
        let id = (budget.config.namespace.clone(), budget.config.name.clone());
        let spend = match teams.get(&id) {
            Some(t) if t.period_end_ms == period.end_ms => t.spend.max(spend),
            _ => spend,
        };
        teams.insert(
            id,
            Tracked {
                team: String::new(),
                max_spend: budget.config.budget.max_spend,
                spend,
                period_end_ms: period.end_ms,
            },
        );
    }

    /// Sets the gauges: remaining USD summed over a team's keys, and the highest fraction of a
    /// budget any of its keys has used; and each Budget's spend and maximum.
    pub(crate) fn publish(&self, metrics: &Metrics, now_ms: i64) {
        {
            let mut teams = self.teams.lock().unwrap_or_else(|p| p.into_inner());
            teams.retain(|_, t| t.period_end_ms.is_none_or(|end| end > now_ms));
            metrics.team_budget_spend.reset();
            metrics.team_budget_max.reset();
            for ((ns, name), t) in teams.iter() {
                let labels = [ns.as_str(), name.as_str()];
                metrics.team_budget_spend.with_label_values(&labels).set(t.spend);
                metrics.team_budget_max.with_label_values(&labels).set(t.max_spend);
            }
        }
        let mut by_team: HashMap<&str, (f64, f64)> = HashMap::new();
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.retain(|_, t| t.period_end_ms.is_none_or(|end| end > now_ms));
        for t in keys.values() {
            let e = by_team.entry(t.team.as_str()).or_default();
            e.0 += (t.max_spend - t.spend).max(0.0);
            let used = if t.max_spend > 0.0 { t.spend / t.max_spend } else { 1.0 };
            e.1 = e.1.max(used);
        }
        metrics.budget_remaining.reset();
        metrics.budget_used.reset();
        for (team, (remaining, used)) in by_team {
            metrics.budget_remaining.with_label_values(&[team]).set(remaining);
            metrics.budget_used.with_label_values(&[team]).set(used);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observe_key(g: &BudgetGauges, k: &crate::runtime::Key, period: &Period, spend: f64) {
        let max = k.config.budget.as_ref().map_or(0.0, |b| b.max_spend);
        g.observe(&k.scope, &k.team, max, period, spend);
    }

    fn key(name: &str, team: &str, max_spend: f64) -> crate::runtime::Key {
        let cfg: switchyard_config::KeyConfig = serde_json::from_value(serde_json::json!({
            "namespace": "apps", "name": name, "hashes": [],
            "budget": {"maxSpend": max_spend, "period": "daily", "action": "block", "alertThresholds": []},
            "labels": {"team": team},
        }))
        .unwrap();
        crate::runtime::Key::new(cfg)
    }

    #[test]
    fn budget_gauges_sum_remaining_and_keep_the_highest_use_per_team() {
        let metrics = Metrics::new().unwrap();
        let g = BudgetGauges::default();
        let now = 1_795_614_310_000;
        let today = Period::of(switchyard_config::BudgetPeriod::Daily, now);
        observe_key(&g, &key("a", "search", 10.0), &today, 9.0);
        observe_key(&g, &key("b", "search", 5.0), &today, 1.0);
        observe_key(&g, &key("c", "ads", 2.0), &today, 2.5);
        g.publish(&metrics, now);
        let get = |m: &prometheus::GaugeVec, team: &str| m.with_label_values(&[team]).get();
        assert!((get(&metrics.budget_remaining, "search") - 5.0).abs() < 1e-9);
        assert!((get(&metrics.budget_used, "search") - 0.9).abs() < 1e-9);
        // Overspent (alert-only budgets can be): nothing remains, more than all of it used.
        assert!(get(&metrics.budget_remaining, "ads").abs() < 1e-9);
        assert!((get(&metrics.budget_used, "ads") - 1.25).abs() < 1e-9);
        // A later settlement replaces the key's figure.
        observe_key(&g, &key("a", "search", 10.0), &today, 9.5);
        g.publish(&metrics, now);
        assert!((get(&metrics.budget_used, "search") - 0.95).abs() < 1e-9);
        // The next day the period is over: the series go until the keys spend again.
        g.publish(&metrics, today.end_ms.unwrap());
        assert!(!metrics.render().contains("switchyard_budget_used_ratio{"));
    }

    #[test]
    fn a_budget_gauge_never_goes_back_within_a_period() {
        let metrics = Metrics::new().unwrap();
        let g = BudgetGauges::default();
        let now = 1_795_614_310_000;
        let today = Period::of(switchyard_config::BudgetPeriod::Daily, now);
        let team = TeamBudget::new(
            serde_json::from_value(serde_json::json!({
                "namespace": "apps", "name": "search", "keys": ["a"],
                "budget": {"maxSpend": 10.0, "period": "daily", "action": "block", "alertThresholds": []},
            }))
            .unwrap(),
        );
        let get = |m: &prometheus::GaugeVec| m.with_label_values(&["apps", "search"]).get();
        // Two settlements finish out of order: the later figure stays.
        g.observe_team(&team, &today, 4.0);
        g.observe_team(&team, &today, 3.5);
        g.publish(&metrics, now);
        assert!((get(&metrics.team_budget_spend) - 4.0).abs() < 1e-9);
        assert!((get(&metrics.team_budget_max) - 10.0).abs() < 1e-9);
        // A new period starts from its own figure; the old one goes when its period ends.
        let tomorrow = Period::of(switchyard_config::BudgetPeriod::Daily, today.end_ms.unwrap());
        g.observe_team(&team, &tomorrow, 0.5);
        g.publish(&metrics, today.end_ms.unwrap());
        assert!((get(&metrics.team_budget_spend) - 0.5).abs() < 1e-9);
        g.publish(&metrics, tomorrow.end_ms.unwrap());
        assert!(!metrics.render().contains("switchyard_team_budget_spend_usd{"));
    }

    #[test]
    fn the_clock_offset_moves_now() {
        let c = Clock::with_offset(3_600_000);
        let d = c.now_ms() - Clock::default().now_ms();
        assert!((3_599_000..=3_601_000).contains(&d), "{d}");
    }
}
