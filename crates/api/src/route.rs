//! `LLMRoute`: one public model name and the backends that serve it.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Limits, LocalRef, NamespacedRef, Pricing, DURATION_PATTERN};

/// An LLMRoute is one model name that clients send as `model`, and how requests for it are
/// served: backends, balancing, retries, fallbacks, rules and caching.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "switchyard.dev",
    version = "v1alpha1",
    kind = "LLMRoute",
    namespaced,
    status = "LLMRouteStatus",
    shortname = "llmr",
    category = "switchyard",
    cel,
    doc = "A public model name served by one or more provider backends.",
    printcolumn(name = "Model", type_ = "string", json_path = ".spec.model"),
    printcolumn(name = "Strategy", type_ = "string", json_path = ".spec.strategy"),
    printcolumn(
        name = "Accepted",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Accepted\")].status"
    ),
    printcolumn(
        name = "Programmed",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Programmed\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.backends.exists(b, b.weight > 0)").message("at least one backend must have a positive weight"))]
#[x_kube(validation = Rule::new("self.backends.all(b, b.name == '' || self.backends.exists_one(c, c.name == b.name))").message("backend names must be unique within a route"))]
#[x_kube(validation = Rule::new("!has(self.fallbacks) || self.fallbacks.all(f, f.route != self.model && (!has(self.aliases) || !(f.route in self.aliases)))").message("a route cannot fall back to itself"))]
#[x_kube(validation = Rule::new("!has(self.aliases) || !(self.model in self.aliases)").message("aliases must differ from model"))]
pub struct LLMRouteSpec {
    /// The model name clients send (`model` in the request body). Unique among the routes a
    /// gateway serves in one namespace; clients of other namespaces it is shared with address it
    /// as `<namespace>/<model>`.
    ///
    /// A name ending in `*` (`openai/*`, `claude-*`) is a wildcard route: it serves every model
    /// name that starts with the part before the `*` and has more after it, and a backend whose
    /// `model` ends in `*` gets that rest in its place (`model: "*"` forwards it as is). An exact
    /// route wins over a wildcard, and the longest prefix wins among wildcards. `*` may appear
    /// only once, at the end; only a wildcard name may hold a `/`.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^([^/\s*]+|[^\s*]*\*)$"))]
    pub model: String,
    /// Other names clients may use for this route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub aliases: Vec<String>,
    /// The kind of requests this route serves. Default `chat`.
    #[serde(default)]
    pub mode: RouteMode,
    /// The provider backends that serve this route.
    #[schemars(length(min = 1, max = 32))]
    pub backends: Vec<Backend>,
    /// How a backend is picked among those available. Default `weighted`.
    #[serde(default)]
    pub strategy: Strategy,
    /// Retries on the same route before falling back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<RetryPolicy>,
    /// Timeouts for requests on this route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<RouteTimeouts>,
    /// Other routes (by model name, same namespace) tried in order when this route fails for one
    /// of the listed reasons. A fallback route's own fallbacks are followed too, at most 3 levels
    /// deep in all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 3))]
    pub fallbacks: Vec<Fallback>,
    /// Conditional rules evaluated in order; the first that matches applies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub rules: Vec<RouteRule>,
    /// Response cache policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CachePolicy>,
    /// Start a second backend when the first has not produced a token in time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hedging: Option<Hedging>,
    /// Drop request parameters a backend cannot honour instead of answering 400.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drop_unsupported_params: bool,
    /// Log prompts and completions of this route. Off by default: prompts often hold personal data.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub log_prompts: bool,
    /// Namespaces whose virtual keys may use this route as `<namespace>/<model>`, besides the
    /// route's own namespace. `*` shares with every namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub shared_with: Vec<String>,
    /// The LLMGateways that serve this route (each must also admit routes from this namespace).
    /// When omitted, the gateways of this namespace that admit its routes serve it. A gateway of
    /// another namespace serves the route only when named here, whatever its `spec.routes`
    /// says: naming it is the route owner's consent to hand it the route and its Providers'
    /// credentials.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub parent_refs: Vec<NamespacedRef>,
}

/// The kind of requests a route serves.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum RouteMode {
    /// Chat completions (`/v1/chat/completions`, `/v1/messages`, `/v1/responses`).
    #[default]
    Chat,
    /// Embeddings (`/v1/embeddings`).
    Embeddings,
    /// Legacy text completions (`/v1/completions`).
    Completions,
    /// Content moderation (`/v1/moderations`).
    Moderation,
    /// Reranking documents against a query (`/v1/rerank`, `/v2/rerank`, in Cohere's shape).
    Rerank,
    /// Image generation (`/v1/images/generations`).
    ImageGeneration,
    /// Speech to text (`/v1/audio/transcriptions`, `/v1/audio/translations`).
    AudioTranscription,
    /// Text to speech (`/v1/audio/speech`).
    AudioSpeech,
}

/// How a backend is chosen among the available ones of the best priority tier.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Smooth weighted round robin: a deterministic split by weight.
    #[default]
    Weighted,
    /// Weighted random.
    Shuffle,
    /// Fewest requests in flight.
    LeastBusy,
    /// Lowest moving average of latency (time to first token for streams), with
    /// power-of-two-choices so slower backends are still probed.
    Latency,
    /// Cheapest by price table and estimated tokens.
    Cheapest,
    /// Most remaining requests/tokens per minute against each Provider's quota.
    Usage,
}

/// One upstream that serves a route.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Backend {
    /// Name of this backend within the route (shown in metrics and response headers).
    /// Defaults to the provider's name.
    #[serde(default)]
    #[schemars(length(max = 63))]
    pub name: String,
    /// The Provider (same namespace) that serves this backend.
    pub provider_ref: LocalRef,
    /// The upstream model name (for Azure the deployment name, for Bedrock the model id). In a
    /// wildcard route, a trailing `*` stands for the rest of the model name the client sent.
    #[schemars(length(min = 1, max = 253))]
    pub model: String,
    /// Share of traffic relative to the other backends of the same priority tier. Default 1;
    /// 0 keeps the backend for rules and explicit selection only.
    #[serde(default = "default_weight")]
    #[schemars(range(max = 1000000))]
    pub weight: u32,
    /// Priority tier: lower is preferred. A tier is used only when every backend of the better
    /// tiers is unavailable. Default 0.
    #[serde(default)]
    #[schemars(range(max = 100))]
    pub priority: u32,
    /// Context window of the upstream model in tokens, overriding the built-in table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_window: Option<u32>,
    /// Largest completion the upstream model produces, overriding the built-in table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    /// Limits for this backend alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// Prices overriding the Provider's and the built-in ones for this backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<Pricing>,
    /// Labels of this backend, added to its Provider's labels, for rules to select by.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

fn default_weight() -> u32 {
    1
}

/// Retry policy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Retries after the first attempt. Default 2.
    #[serde(default = "default_retry_attempts")]
    #[schemars(range(max = 10))]
    pub attempts: u32,
    /// First backoff. Doubles on each retry, with jitter. Default `1s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    pub backoff: Option<String>,
    /// Longest backoff. Default `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    pub max_backoff: Option<String>,
    /// Which failures are retried. Default: rate-limit, server-error, timeout, connect-error.
    /// Client errors (400, 401, 403, 404) are never retried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub on: Vec<RetryOn>,
}

fn default_retry_attempts() -> u32 {
    2
}

/// A failure that may be retried.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum RetryOn {
    /// HTTP 429 from the upstream.
    RateLimit,
    /// HTTP 5xx from the upstream.
    ServerError,
    /// The upstream did not answer in time.
    Timeout,
    /// The connection to the upstream failed.
    ConnectError,
}

/// Timeouts of a route.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RouteTimeouts {
    /// Overall deadline for a request, retries and fallbacks included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    pub request: Option<String>,
    /// Deadline of one attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    pub per_try: Option<String>,
    /// Deadline for the first token of a stream (or the response headers otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    pub first_token: Option<String>,
}

/// A fallback to another route.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Fallback {
    /// Model name of the route to fall back to (same namespace).
    #[schemars(length(min = 1, max = 253))]
    pub route: String,
    /// Failures that trigger this fallback. Default: every trigger.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub on: Vec<FallbackTrigger>,
}

/// A failure that triggers a fallback.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum FallbackTrigger {
    /// Every backend is rate-limited.
    RateLimit,
    /// Upstream 5xx or connection errors.
    ServerError,
    /// Timeouts.
    Timeout,
    /// The prompt does not fit the model's context window.
    ContextWindow,
    /// The provider refused the content.
    ContentPolicy,
}

/// A conditional rule: when `match` holds, `action` applies.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.action.backendSelector) || has(self.action.weights) || has(self.action.priorities) || has(self.action.route)").message("a rule's action must set backendSelector, weights, priorities or route"))]
pub struct RouteRule {
    /// Name of the rule (shown in logs).
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Conditions, all of which must hold.
    #[serde(rename = "match", default)]
    pub matches: RuleMatch,
    /// What to do when the rule matches.
    pub action: RuleAction,
}

/// Conditions of a rule. Every listed label, header and metadata entry must be equal.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RuleMatch {
    /// Labels of the calling virtual key (for example `tier: premium`, `region: eu`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub key_labels: BTreeMap<String, String>,
    /// Request headers (names are case-insensitive).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Entries of the request body's `metadata` object.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// Effect of a matching rule.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RuleAction {
    /// Only backends whose labels (Provider labels, region, backend labels) include all of these
    /// may serve the request, whatever fails: a hard restriction, for data residency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_selector: Option<BTreeMap<String, String>>,
    /// Weights by backend name, replacing the backends' own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<BTreeMap<String, u32>>,
    /// Priority tiers by backend name, replacing the backends' own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priorities: Option<BTreeMap<String, u32>>,
    /// Send the request to another route (model name, same namespace) instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub route: Option<String>,
}

/// Response cache policy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CachePolicy {
    /// Cache responses of this route.
    #[serde(default)]
    pub enabled: bool,
    /// How long a cached response is served. Default `5m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    pub ttl: Option<String>,
    /// Largest response body cached, in bytes. Default 1 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// One cache for every namespace that uses the route (`sharedWith`): a tenant's identical
    /// request is then answered with what another tenant was told, which tells it what the other
    /// asked. Default false: entries are kept per caller namespace.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared: bool,
}

/// Hedged requests.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!self.enabled || has(self.after)").message("hedging.after is required when hedging is enabled"))]
pub struct Hedging {
    /// Turn hedging on.
    #[serde(default)]
    pub enabled: bool,
    /// Start the next backend when no first token arrived after this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    pub after: Option<String>,
}

/// Observed state of an LLMRoute.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LLMRouteStatus {
    /// `Accepted`, `ResolvedRefs` (every provider and fallback exists), `Programmed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Per gateway that serves this route, its conditions (Gateway API style).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parents: Vec<RouteParentStatus>,
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Status of a route as seen by one gateway fleet.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteParentStatus {
    /// The LLMGateway.
    pub parent_ref: NamespacedRef,
    /// Conditions for this route on that gateway.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
