//! `Budget`: one spend budget over a group of VirtualKeys of its namespace (a team, a product,
//! the whole namespace), chosen by label.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::key::{BudgetAction, BudgetPeriod, Spend, Webhook};

/// A Budget caps the spend, in USD per period, of every VirtualKey of its namespace that its
/// selector matches, counted together. A request is admitted only when its key's own budget
/// and every Budget the key falls under have room; the reservation is the same as a key's.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "switchyard.dev",
    version = "v1alpha1",
    kind = "Budget",
    root = "TeamBudget",
    namespaced,
    status = "TeamBudgetStatus",
    category = "switchyard",
    cel,
    doc = "A spend budget shared by the VirtualKeys of its namespace that its selector matches.",
    printcolumn(name = "Spend", type_ = "number", json_path = ".status.spend.amount"),
    printcolumn(name = "Max", type_ = "number", json_path = ".spec.maxSpend"),
    printcolumn(name = "Period", type_ = "string", json_path = ".spec.period"),
    printcolumn(name = "Keys", type_ = "integer", json_path = ".status.keys"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.maxSpend > 0.0").message("maxSpend must be positive"))]
#[x_kube(validation = Rule::new("!has(self.alertThresholds) || self.alertThresholds.all(t, t >= 1 && t <= 1000)").message("alertThresholds are percentages between 1 and 1000"))]
pub struct TeamBudgetSpec {
    /// Which VirtualKeys of this namespace the budget covers, matched against each key's labels
    /// (`metadata.labels` and `spec.labels` together; `spec.labels` win when both set a label).
    /// Omitted or empty: every VirtualKey of the namespace. Keys of other namespaces are never
    /// selected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// Largest spend in USD per period, of all the selected keys together.
    pub max_spend: f64,
    /// The period spend is counted over; periods start at UTC boundaries (midnight, Monday,
    /// the 1st). Default `monthly`.
    #[serde(default)]
    pub period: BudgetPeriod,
    /// What happens when the budget is spent. Default `block` (429 for every selected key until
    /// the period resets).
    #[serde(default)]
    pub action: BudgetAction,
    /// Percentages of `maxSpend` at which the webhook is called, once per period each.
    /// Default 50, 80, 100.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub alert_thresholds: Vec<u32>,
    /// Where spend alerts are POSTed (the same body and signature as a key's alerts, with
    /// `"budget"` naming this Budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<Webhook>,
}

/// Observed state of a Budget.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TeamBudgetStatus {
    /// `Accepted` (the Budget compiled) and `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// How many VirtualKeys the selector matches (among the keys a gateway serves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<u32>,
    /// Spend of all the selected keys in the current period (fleets with Redis only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spend: Option<Spend>,
    /// `maxSpend` minus the spend, never below 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<f64>,
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
