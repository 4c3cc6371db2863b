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

/// Prices in USD per million tokens, overriding the built-in price table one price at a time: a
/// price left out comes from the Provider's entry for the model, then from the table.
///
/// Token kinds follow OpenAI's usage convention: the prompt counts cache reads and cache writes,
/// the completion counts reasoning tokens; each is billed at its own price when one is known.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.input) || (self.input >= 0.0 && self.input <= 1000000.0)").message("pricing.input must be between 0 and 1000000"))]
#[x_kube(validation = Rule::new("!has(self.output) || (self.output >= 0.0 && self.output <= 1000000.0)").message("pricing.output must be between 0 and 1000000"))]
#[x_kube(validation = Rule::new("!has(self.cachedInput) || (self.cachedInput >= 0.0 && self.cachedInput <= 1000000.0)").message("pricing.cachedInput must be between 0 and 1000000"))]
#[x_kube(validation = Rule::new("!has(self.cacheWrite) || (self.cacheWrite >= 0.0 && self.cacheWrite <= 1000000.0)").message("pricing.cacheWrite must be between 0 and 1000000"))]
#[x_kube(validation = Rule::new("!has(self.cacheWrite1h) || (self.cacheWrite1h >= 0.0 && self.cacheWrite1h <= 1000000.0)").message("pricing.cacheWrite1h must be between 0 and 1000000"))]
#[x_kube(validation = Rule::new("!has(self.reasoning) || (self.reasoning >= 0.0 && self.reasoning <= 1000000.0)").message("pricing.reasoning must be between 0 and 1000000"))]
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
    /// USD per million cached prompt tokens (cache reads). Without one here or in the table, cache
    /// reads cost `input`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<f64>,
    /// USD per million prompt tokens written to the provider's prompt cache (Anthropic bills the
    /// five-minute cache at 1.25x input). Without one here or in the table, cache writes cost `input`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<f64>,
    /// USD per million prompt tokens written to the cache for one hour (Anthropic: 2x input).
    /// Without one here or in the table, they cost `cacheWrite`.
    #[serde(default, rename = "cacheWrite1h", skip_serializing_if = "Option::is_none")]
    pub cache_write_1h: Option<f64>,
    /// USD per million reasoning (thinking) tokens. Without one here or in the table, they cost
    /// `output`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<f64>,
    /// Long-context prices: once a request's prompt has more than `aboveTokens` tokens, every
    /// token of that request is billed at these prices (as Anthropic and Gemini bill prompts over
    /// 200k tokens). Replaces the table's tier as a whole; left out, the table's tier (if any)
    /// applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_context: Option<LongContextPricing>,
}

/// The prices of requests with a long prompt, in USD per million tokens.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.input) || (self.input >= 0.0 && self.input <= 1000000.0)").message("longContext.input must be between 0 and 1000000"))]
#[x_kube(validation = Rule::new("!has(self.output) || (self.output >= 0.0 && self.output <= 1000000.0)").message("longContext.output must be between 0 and 1000000"))]
#[x_kube(validation = Rule::new("!has(self.cachedInput) || (self.cachedInput >= 0.0 && self.cachedInput <= 1000000.0)").message("longContext.cachedInput must be between 0 and 1000000"))]
#[x_kube(validation = Rule::new("!has(self.cacheWrite) || (self.cacheWrite >= 0.0 && self.cacheWrite <= 1000000.0)").message("longContext.cacheWrite must be between 0 and 1000000"))]
#[x_kube(validation = Rule::new("!has(self.cacheWrite1h) || (self.cacheWrite1h >= 0.0 && self.cacheWrite1h <= 1000000.0)").message("longContext.cacheWrite1h must be between 0 and 1000000"))]
pub struct LongContextPricing {
    /// Prompt tokens (cache reads and writes included) above which these prices apply.
    #[schemars(range(min = 1))]
    pub above_tokens: u64,
    /// USD per million prompt tokens.
    pub input: f64,
    /// USD per million completion tokens (reasoning included, unless `reasoning` is priced).
    pub output: f64,
    /// USD per million cache reads. Left out: the base cache-read price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<f64>,
    /// USD per million cache writes. Left out: the base cache-write price, else this tier's input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<f64>,
    /// USD per million one-hour cache writes. Left out: the base one-hour price, else this tier's
    /// cache writes.
    #[serde(default, rename = "cacheWrite1h", skip_serializing_if = "Option::is_none")]
    pub cache_write_1h: Option<f64>,
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
