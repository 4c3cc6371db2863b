//! `VirtualKey`: one client credential with its permissions, limits and budget.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Limits, NamespacedRef, SecretKeyRef, DURATION_PATTERN};

/// A VirtualKey is a credential a client sends as `Authorization: Bearer <key>` or
/// `x-api-key: <key>`. The key itself lives only in a Secret; gateways see its SHA-256 hash.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "switchyard.dev",
    version = "v1alpha1",
    kind = "VirtualKey",
    namespaced,
    status = "VirtualKeyStatus",
    shortname = "vk",
    category = "switchyard",
    cel,
    doc = "A client credential for the gateway, with allowed routes, limits and a budget.",
    printcolumn(name = "Secret", type_ = "string", json_path = ".status.secretName"),
    printcolumn(name = "Spend", type_ = "number", json_path = ".status.spend.amount"),
    printcolumn(name = "Budget", type_ = "number", json_path = ".spec.budget.maxSpend"),
    printcolumn(name = "Last-Used", type_ = "date", json_path = ".status.lastUsed"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct VirtualKeySpec {
    /// The Secret key holding the key value (default key `key`). When omitted, the operator
    /// generates a random key (`sk-swy-...`) into a Secret named `<name>-key` that this
    /// VirtualKey owns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// Routes (model names, or `<namespace>/<model>` for routes shared from another namespace)
    /// this key may use. Empty means every route its namespace may use. A wildcard route is
    /// named as it is written (`openai/*`), which allows every model it serves; a model it
    /// serves may also be named alone (`openai/gpt-4o`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub allowed_routes: Vec<String>,
    /// Providers of the key's own namespace this key may reach through
    /// `/passthrough/{provider}/...`: requests forwarded as they are, with the Provider's
    /// credentials, to APIs the gateway does not model. Empty (the default) means none:
    /// pass-through bypasses routes, their rules and model-level controls, so each Provider is
    /// named. The key's limits, expiry and budget still apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub allowed_passthrough: Vec<String>,
    /// Request, token and concurrency limits of this key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// Spend budget of this key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    /// The key stops working at this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// Refuse every request of this key (401) without deleting it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub blocked: bool,
    /// Labels of this key (team, tier, region...) that route rules match on and metrics group by
    /// (`team` only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Key rotation for operator-generated keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<Rotation>,
    /// The LLMGateways of other namespaces that may accept this key (its consent, as a route's
    /// `parentRefs`). When omitted, only gateways of the key's own namespace that admit its
    /// keys accept it; a gateway of another namespace never does unless named here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub parent_refs: Vec<NamespacedRef>,
}

/// A spend budget.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.maxSpend > 0.0").message("budget.maxSpend must be positive"))]
#[x_kube(validation = Rule::new("!has(self.alertThresholds) || self.alertThresholds.all(t, t >= 1 && t <= 1000)").message("budget.alertThresholds are percentages between 1 and 1000"))]
pub struct Budget {
    /// Largest spend in USD per period.
    pub max_spend: f64,
    /// The period spend is counted over; periods start at UTC boundaries (midnight, Monday,
    /// the 1st). Default `monthly`.
    #[serde(default)]
    pub period: BudgetPeriod,
    /// What happens when the budget is spent. Default `block` (429 until the period resets).
    #[serde(default)]
    pub action: BudgetAction,
    /// Percentages of `maxSpend` at which the webhook is called, once per period each.
    /// Default 50, 80, 100.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub alert_thresholds: Vec<u32>,
    /// Where spend alerts are POSTed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<Webhook>,
}

/// The period a budget is counted over.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum BudgetPeriod {
    /// From 00:00 UTC each day.
    Daily,
    /// From Monday 00:00 UTC.
    Weekly,
    /// From the 1st of the month 00:00 UTC.
    #[default]
    Monthly,
    /// Never resets.
    Total,
}

/// What a spent budget does.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum BudgetAction {
    /// Refuse requests (429) until the period resets.
    #[default]
    Block,
    /// Only send alerts.
    Alert,
}

/// A webhook that receives spend alerts.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    /// URL the alert is POSTed to.
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://"))]
    pub url: String,
    /// Secret key whose value signs each alert (HMAC-SHA256 in `x-switchyard-signature`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret_ref: Option<SecretKeyRef>,
}

/// Rotation of an operator-generated key.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Rotation {
    /// Change this number to issue a new key.
    pub generation: u32,
    /// How long the previous key keeps working after a rotation. Default `24h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    pub grace_period: Option<String>,
}

/// Observed state of a VirtualKey.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VirtualKeyStatus {
    /// `Accepted`, `ResolvedRefs` (the key Secret exists) and `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The Secret that holds the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// Spend in the current budget period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spend: Option<Spend>,
    /// When the key was last used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<Time>,
    /// The rotation generation the current key belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_generation: Option<u32>,
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Spend of a key in one period.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Spend {
    /// USD spent in the period.
    pub amount: f64,
    /// Start of the period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_start: Option<Time>,
}
