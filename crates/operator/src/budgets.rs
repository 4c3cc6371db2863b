//! `Budget` status: how many keys each Budget covers and its spend in the current period, read
//! from the fleets' Redis on the same tick as VirtualKey spend (`spend::report`) and written
//! into `status` (`keys`, `spend`, `remaining`, a `Ready` condition).
//!
//! The fleet reconcile records what each fleet compiled (`FleetRedis::update` keeps the
//! Budgets of fleets with Redis); this module reads Redis and shapes the status. Fleets
//! without Redis count spend in each pod's memory, which the operator does not read: their
//! Budgets get no status here.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use switchyard_api::{Spend, TeamBudget, TeamBudgetStatus};
use switchyard_config::shared_state::Period;

use crate::Error;

/// One Budget's figures, summed over the Redis servers of the fleets that serve it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct BudgetUsage {
    /// Keys it covers (the most any fleet serves).
    pub keys: u32,
    pub max_spend: f64,
    pub period: Period,
    pub amount: f64,
}

/// Sums readings of the same Budget from several Redis servers.
pub(crate) fn fold(readings: Vec<((String, String), BudgetUsage)>) -> BTreeMap<(String, String), BudgetUsage> {
    let mut out: BTreeMap<(String, String), BudgetUsage> = BTreeMap::new();
    for (id, u) in readings {
        match out.get_mut(&id) {
            Some(e) => {
                e.amount += u.amount;
                e.keys = e.keys.max(u.keys);
            }
            None => {
                out.insert(id, u);
            }
        }
    }
    out
}

fn time_of(ms: i64) -> Option<Time> {
    Timestamp::from_millisecond(ms).ok().map(Time)
}

/// The status a Budget should have, or `None` when it has it already (only changes are
/// written). `now` dates a condition that changes.
pub(crate) fn updated_status(b: &TeamBudget, usage: Option<&BudgetUsage>, now: &Time) -> Option<TeamBudgetStatus> {
    let old = b.status.clone().unwrap_or_default();
    let (status, reason, message) = match usage {
        Some(u) => (
            "True",
            "Counted",
            format!("covers {} key(s); spend read from the fleet's Redis", u.keys),
        ),
        None => (
            "False",
            "NotServed",
            "no fleet with Redis serves a key this Budget selects".to_owned(),
        ),
    };
    let previous = old.conditions.iter().find(|c| c.type_ == "Ready");
    let generation = b.metadata.generation;
    let ready = Condition {
        type_: "Ready".into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: match previous {
            Some(p) if p.status == status => p.last_transition_time.clone(),
            _ => now.clone(),
        },
    };
    let new = TeamBudgetStatus {
        conditions: vec![ready],
        keys: usage.map(|u| u.keys),
        spend: usage.map(|u| Spend {
            amount: u.amount,
            period_start: time_of(u.period.start_ms),
        }),
        remaining: usage.map(|u| (u.max_spend - u.amount).max(0.0)),
        observed_generation: generation,
    };
    (new != old).then_some(new)
}

/// Writes a Budget's status (the operator is its only writer).
pub(crate) async fn write(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    status: &TeamBudgetStatus,
) -> Result<(), Error> {
    let api: kube::Api<TeamBudget> = kube::Api::namespaced(client.clone(), namespace);
    let body = serde_json::json!({"status": status});
    let pp = kube::api::PatchParams {
        field_manager: Some(crate::MANAGER.to_owned()),
        ..kube::api::PatchParams::default()
    };
    api.patch_status(name, &pp, &kube::api::Patch::Merge(&body)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_api::TeamBudgetSpec;
    use switchyard_config::BudgetPeriod;

    // 2026-11-25T13:45:10Z.
    const NOW: i64 = 1_795_614_310_000;

    fn budget(status: Option<TeamBudgetStatus>) -> TeamBudget {
        let mut b = TeamBudget::new(
            "search",
            serde_json::from_value::<TeamBudgetSpec>(serde_json::json!({"maxSpend": 10.0})).unwrap(),
        );
        b.metadata.namespace = Some("apps".into());
        b.metadata.generation = Some(3);
        b.status = status;
        b
    }

    fn usage(amount: f64, keys: u32) -> BudgetUsage {
        BudgetUsage {
            keys,
            max_spend: 10.0,
            period: Period::of(BudgetPeriod::Monthly, NOW),
            amount,
        }
    }

    #[test]
    fn spend_is_summed_over_servers_and_remaining_never_negative() {
        let id = ("apps".to_owned(), "search".to_owned());
        let folded = fold(vec![(id.clone(), usage(4.0, 3)), (id.clone(), usage(7.5, 2))]);
        let u = &folded[&id];
        assert_eq!((u.amount, u.keys), (11.5, 3));
        let now = time_of(NOW).unwrap();
        let s = updated_status(&budget(None), Some(u), &now).unwrap();
        assert_eq!(s.spend.as_ref().map(|s| s.amount), Some(11.5));
        assert_eq!(s.remaining, Some(0.0));
        assert_eq!(s.keys, Some(3));
        assert_eq!(
            s.spend.and_then(|s| s.period_start).map(|t| t.0.to_string()).as_deref(),
            Some("2026-11-01T00:00:00Z")
        );
        assert_eq!(s.conditions[0].status, "True");
        assert_eq!(s.observed_generation, Some(3));
    }

    /// A fleet's manifests get the Budgets of the namespaces whose keys they hold, with their
    /// signing Secrets, and nothing of other namespaces.
    #[test]
    fn a_fleet_reads_the_budgets_of_its_keys_namespaces_only() {
        use k8s_openapi::api::core::v1::Secret;
        use std::sync::Arc;
        let key: switchyard_api::VirtualKey = serde_json::from_value(serde_json::json!({
            "apiVersion": "switchyard.dev/v1alpha1", "kind": "VirtualKey",
            "metadata": {"name": "alice", "namespace": "apps"}, "spec": {}
        }))
        .unwrap();
        let with_hook = |ns: &str| {
            let mut b = budget(None);
            b.metadata.namespace = Some(ns.into());
            b.spec.webhook = serde_json::from_value(serde_json::json!(
                {"url": "http://127.0.0.1:1/h", "signingSecretRef": {"name": "hook"}}
            ))
            .unwrap();
            Arc::new(b)
        };
        let secret = |ns: &str, name: &str| {
            Some(Arc::new(Secret {
                metadata: kube::core::ObjectMeta {
                    name: Some(name.into()),
                    namespace: Some(ns.into()),
                    ..Default::default()
                },
                string_data: Some([("secret".to_owned(), format!("whsec-{ns}"))].into()),
                ..Default::default()
            }))
        };
        let mut m = switchyard_config::Manifests::default();
        m.keys.push(key);
        crate::fleet::add_budgets(&mut m, &[with_hook("apps"), with_hook("other")], &secret);
        let namespaces: Vec<_> = m
            .budgets
            .iter()
            .map(|b| b.metadata.namespace.clone().unwrap())
            .collect();
        assert_eq!(namespaces, vec!["apps"]);
        let secrets: Vec<_> = m.secrets.keys().cloned().collect();
        assert_eq!(secrets, vec![("apps".to_owned(), "hook".to_owned())]);
    }

    #[test]
    fn status_is_written_only_when_it_changes() {
        let now = time_of(NOW).unwrap();
        let first = updated_status(&budget(None), Some(&usage(2.0, 1)), &now).unwrap();
        assert_eq!(first.remaining, Some(8.0));
        let later = time_of(NOW + 60_000).unwrap();
        assert_eq!(
            updated_status(&budget(Some(first.clone())), Some(&usage(2.0, 1)), &later),
            None
        );
        let moved = updated_status(&budget(Some(first.clone())), Some(&usage(2.5, 1)), &later).unwrap();
        // The condition did not change: its transition time stays.
        assert_eq!(
            moved.conditions[0].last_transition_time,
            first.conditions[0].last_transition_time
        );
        let gone = updated_status(&budget(Some(moved)), None, &later).unwrap();
        assert_eq!((gone.conditions[0].status.as_str(), gone.spend), ("False", None));
        assert_eq!(gone.conditions[0].last_transition_time, later);
    }
}
