//! Types shared by several resources: references, conditions, durations.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Pattern of a duration string: one or more `<number><unit>` with units ms, s, m, h
/// (for example `500ms`, `30s`, `5m`, `1h30m`).
pub const DURATION_PATTERN: &str = r"^([0-9]+(ms|s|m|h))+$";

/// A duration written as a string such as `500ms`, `30s`, `5m` or `1h30m`.
pub type DurationString = String;

/// Parses a duration string (`500ms`, `30s`, `5m`, `1h30m`) into milliseconds.
pub fn parse_duration_ms(s: &str) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (mult, unit_len) = if rest.starts_with("ms") {
            (1, 2)
        } else if rest.starts_with('s') {
            (1_000, 1)
        } else if rest.starts_with('m') {
            (60_000, 1)
        } else if rest.starts_with('h') {
            (3_600_000, 1)
        } else {
            return None;
        };
        total = total.checked_add(n.checked_mul(mult)?)?;
        rest = &rest[unit_len..];
    }
    Some(total)
}

/// A key within a Secret in the same namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret, in the same namespace as the resource that refers to it.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret's data. When omitted, the resource's documented default key is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub key: Option<String>,
}

/// A reference to another resource by name, in the same namespace unless `namespace` is set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct NamespacedRef {
    /// Name of the referenced resource.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of the referenced resource; defaults to the referring resource's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
}

/// A reference to a resource in the same namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LocalRef {
    /// Name of the referenced resource, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Request and token limits.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Requests per minute. Omitted means unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u32>,
    /// Tokens (prompt and completion) per minute. Omitted means unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    /// Requests in flight at once. Omitted means unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<u32>,
}

/// Prices in USD per million tokens, overriding the built-in price table.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.input) || self.input >= 0.0").message("pricing.input must not be negative"))]
#[x_kube(validation = Rule::new("!has(self.output) || self.output >= 0.0").message("pricing.output must not be negative"))]
#[x_kube(validation = Rule::new("!has(self.cachedInput) || self.cachedInput >= 0.0").message("pricing.cachedInput must not be negative"))]
pub struct Pricing {
    /// Upstream model these prices apply to. Omitted inside a backend (the backend's model is meant);
    /// required in a Provider's list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub model: Option<String>,
    /// USD per million prompt (input) tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<f64>,
    /// USD per million completion (output) tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<f64>,
    /// USD per million cached prompt tokens (cache reads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<f64>,
}

/// Common status conditions and the generation they describe.
pub type Conditions = Vec<Condition>;

/// Condition types used on every resource.
pub mod condition {
    /// The spec is valid and the resource is taken into account.
    pub const ACCEPTED: &str = "Accepted";
    /// Everything the resource refers to exists.
    pub const RESOLVED_REFS: &str = "ResolvedRefs";
    /// The gateway pods run a configuration generation that contains this resource.
    pub const PROGRAMMED: &str = "Programmed";
    /// The resource is ready for use.
    pub const READY: &str = "Ready";
}
