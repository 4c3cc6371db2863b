//! The `GatewayConfig` types.
//!
//! The few methods a request calls are `#[inline]`, so that they are compiled into the gateway's
//! code: the `release` profile builds this crate unoptimised (see the workspace's Cargo.toml).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Version of the `GatewayConfig` schema. Bumped on any incompatible change; a gateway refuses a
/// config of another version rather than guessing.
pub const SCHEMA_VERSION: u32 = 1;

/// Everything a gateway fleet runs: providers, routes and keys, fully resolved.
///
/// Serialisation is stable (sorted maps, sorted lists), so the same input gives the same bytes
/// and the same [`GatewayConfig::hash`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayConfig {
    /// Schema version, [`SCHEMA_VERSION`].
    pub version: u32,
    /// The fleet (`namespace/name`) this config was compiled for, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<String>,
    /// Fleet-wide settings.
    #[serde(default)]
    pub settings: Settings,
    /// Upstream provider accounts, sorted by id.
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    /// Routes, sorted by namespace then model.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Virtual keys, sorted by namespace then name. Shared (`Arc`): a reload's compile keeps
    /// the keys that did not change, and the gateway's index holds the same ones, instead of
    /// copying 10,000 keys at each step.
    #[serde(default)]
    pub keys: Vec<Arc<KeyConfig>>,
    /// Budgets over groups of keys (`Budget` resources), sorted by namespace then name; only
    /// those that cover at least one of `keys`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub budgets: Vec<TeamBudgetConfig>,
}

impl GatewayConfig {
    /// The canonical bytes of this config (stable JSON).
    pub fn to_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// Parses and checks the schema version.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, crate::Error> {
        let config: GatewayConfig = serde_json::from_slice(bytes)?;
        if config.version != SCHEMA_VERSION {
            return Err(crate::Error::Version {
                found: config.version,
                supported: SCHEMA_VERSION,
            });
        }
        Ok(config)
    }

    /// SHA-256 of the canonical bytes, hex encoded.
    pub fn hash(&self) -> String {
        let bytes = self.to_bytes().unwrap_or_default();
        hex::encode(Sha256::digest(&bytes))
    }
}

/// Fleet-wide settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Settings {
    /// Requests larger than this are refused with 413.
    pub max_request_bytes: u64,
    /// Shared state for the fleet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisConfig>,
    /// Limits on client connections (slow or idle clients, how many at once).
    #[serde(default, skip_serializing_if = "ConnectionsConfig::is_default")]
    pub connections: ConnectionsConfig,
    /// The largest whole (not streamed) upstream response body read, in bytes; a larger one is
    /// answered 502. A Provider's `baseUrl` is its namespace's to choose, so this bounds what
    /// one upstream can make every tenant's gateway hold.
    #[serde(
        default = "default_max_response_bytes",
        skip_serializing_if = "is_default_max_response_bytes"
    )]
    pub max_response_bytes: u64,
    /// Requests (of 256 KiB or more) whose JSON holds more values than this are refused with
    /// 413 before they are parsed into a tree.
    #[serde(
        default = "default_max_request_values",
        skip_serializing_if = "is_default_max_request_values"
    )]
    pub max_request_values: u64,
}

/// Default limit on the JSON values of one request: 500,000 (a parsed value takes 30-350
/// bytes; OpenAI's largest documented request, 300,000 tokens as token arrays, fits).
pub const DEFAULT_MAX_REQUEST_VALUES: u64 = 500_000;

fn default_max_request_values() -> u64 {
    DEFAULT_MAX_REQUEST_VALUES
}

fn is_default_max_request_values(v: &u64) -> bool {
    *v == DEFAULT_MAX_REQUEST_VALUES
}

/// Default request size limit: 10 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 10 * 1024 * 1024;

/// Default limit on a whole upstream response body: 32 MiB (the largest answers, embeddings of
/// a full batch, are a few MiB).
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 32 * 1024 * 1024;

fn default_max_response_bytes() -> u64 {
    DEFAULT_MAX_RESPONSE_BYTES
}

fn is_default_max_response_bytes(v: &u64) -> bool {
    *v == DEFAULT_MAX_RESPONSE_BYTES
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            redis: None,
            connections: ConnectionsConfig::default(),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            max_request_values: DEFAULT_MAX_REQUEST_VALUES,
        }
    }
}

/// Limits on client connections: how long a client may take to send a request, how long an
/// idle keep-alive connection is kept, and how many connections are served at once.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionsConfig {
    /// Time from a new connection, or from the first byte of the next request on a kept-alive
    /// one, to the end of the request head; then the connection is closed.
    pub header_read_timeout_ms: u64,
    /// Time a connection with no request in flight is kept open.
    pub idle_timeout_ms: u64,
    /// Time from the request head to the end of its body; then 408.
    pub body_read_timeout_ms: u64,
    /// Connections served at once; more are refused at once. `None`: half the process's open
    /// file limit, at most [`DEFAULT_MAX_CONNECTIONS`] (the other half is for upstream calls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
}

/// Default connection cap, when the open file limit allows it.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10_000;

impl Default for ConnectionsConfig {
    fn default() -> Self {
        Self {
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 90_000,
            body_read_timeout_ms: 60_000,
            max: None,
        }
    }
}

impl ConnectionsConfig {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// Redis connection.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedisConfig {
    /// Connection URL (may carry a password).
    pub url: SecretString,
    /// Redis Cluster mode.
    #[serde(default)]
    pub cluster: bool,
    /// Behaviour while Redis is unreachable.
    pub fail_mode: FailMode,
}

/// Behaviour while shared state is unreachable.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FailMode {
    /// Enforce limits per process.
    #[default]
    Open,
    /// Refuse with 503.
    Closed,
}

/// A secret value. Serialised as is (configs are delivered in Secrets), never printed by `Debug`.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Default)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret value. Call only where it is sent upstream.
    #[inline]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// The wire format and conventions a provider speaks.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKind {
    /// OpenAI.
    Openai,
    /// Azure OpenAI.
    AzureOpenai,
    /// Anthropic Messages.
    Anthropic,
    /// AWS Bedrock Converse.
    Bedrock,
    /// Google Vertex AI.
    Vertex,
    /// Google Gemini API.
    Gemini,
    /// Mistral.
    Mistral,
    /// Groq.
    Groq,
    /// xAI.
    Xai,
    /// DeepSeek.
    Deepseek,
    /// Cohere.
    Cohere,
    /// Voyage AI (embeddings and rerank).
    Voyage,
    /// Jina AI (embeddings and rerank).
    Jina,
    /// Together AI.
    Together,
    /// Fireworks AI.
    Fireworks,
    /// OpenRouter.
    Openrouter,
    /// Ollama.
    Ollama,
    /// vLLM.
    Vllm,
    /// Any OpenAI-compatible server.
    OpenaiCompatible,
    /// In-gateway mock.
    Mock,
}

impl ProviderKind {
    /// The name used in manifests and metrics.
    #[inline]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Openai => "openai",
            Self::AzureOpenai => "azure-openai",
            Self::Anthropic => "anthropic",
            Self::Bedrock => "bedrock",
            Self::Vertex => "vertex",
            Self::Gemini => "gemini",
            Self::Mistral => "mistral",
            Self::Groq => "groq",
            Self::Xai => "xai",
            Self::Deepseek => "deepseek",
            Self::Cohere => "cohere",
            Self::Voyage => "voyage",
            Self::Jina => "jina",
            Self::Together => "together",
            Self::Fireworks => "fireworks",
            Self::Openrouter => "openrouter",
            Self::Ollama => "ollama",
            Self::Vllm => "vllm",
            Self::OpenaiCompatible => "openai-compatible",
            Self::Mock => "mock",
        }
    }

    /// The provider's public API base URL, used when a Provider sets none.
    #[inline]
    pub fn default_base_url(self) -> Option<&'static str> {
        Some(match self {
            Self::Openai => "https://api.openai.com/v1",
            Self::Anthropic => "https://api.anthropic.com",
            Self::Gemini => "https://generativelanguage.googleapis.com",
            Self::Mistral => "https://api.mistral.ai/v1",
            Self::Groq => "https://api.groq.com/openai/v1",
            Self::Xai => "https://api.x.ai/v1",
            Self::Deepseek => "https://api.deepseek.com/v1",
            Self::Cohere => "https://api.cohere.com",
            Self::Voyage => "https://api.voyageai.com/v1",
            Self::Jina => "https://api.jina.ai/v1",
            Self::Together => "https://api.together.xyz/v1",
            Self::Fireworks => "https://api.fireworks.ai/inference/v1",
            Self::Openrouter => "https://openrouter.ai/api/v1",
            Self::Ollama => "http://127.0.0.1:11434/v1",
            Self::Vllm => "http://127.0.0.1:8000/v1",
            Self::AzureOpenai | Self::OpenaiCompatible | Self::Bedrock | Self::Vertex | Self::Mock => return None,
        })
    }
}

/// Resolved credentials of a provider.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", tag = "type", deny_unknown_fields)]
pub enum CredentialsConfig {
    /// An API key or bearer token.
    ApiKey {
        /// The key.
        key: SecretString,
    },
    /// AWS access keys (SigV4).
    Aws {
        /// Access key id.
        access_key_id: SecretString,
        /// Secret access key.
        secret_access_key: SecretString,
        /// Session token of temporary credentials.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session_token: Option<SecretString>,
    },
    /// A Google service-account JSON document.
    ServiceAccount {
        /// The JSON document.
        json: SecretString,
    },
}

/// One upstream provider account.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderConfig {
    /// `namespace/name`, unique.
    pub id: String,
    /// Wire format.
    pub kind: ProviderKind,
    /// API base URL, without a trailing slash. Empty for `mock`.
    pub base_url: String,
    /// Credentials, resolved from their Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialsConfig>,
    /// Region of the endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Azure `api-version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Vertex project id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Extra headers on every request.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The account's quota.
    #[serde(default)]
    pub quota: LimitsConfig,
    /// Timeouts.
    pub timeouts: ProviderTimeoutsConfig,
    /// Circuit breaker.
    pub circuit_breaker: CircuitBreakerConfig,
    /// Mock behaviour, for `mock` providers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mock: Option<MockConfig>,
    /// The HTTP version spoken to the provider.
    #[serde(default, skip_serializing_if = "HttpVersion::is_auto")]
    pub http_version: HttpVersion,
}

/// The HTTP version spoken to a provider.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum HttpVersion {
    /// HTTP/2 where the provider offers it over TLS (ALPN), else HTTP/1.1.
    #[default]
    Auto,
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 only: h2c with prior knowledge over plain `http://`.
    Http2,
}

impl HttpVersion {
    /// Whether it is the default.
    #[inline]
    pub fn is_auto(&self) -> bool {
        *self == Self::Auto
    }
}

/// Request and token limits; `None` is unlimited.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitsConfig {
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u32>,
    /// Tokens per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    /// Requests in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<u32>,
}

impl LimitsConfig {
    /// Whether no limit is set.
    #[inline]
    pub fn is_unlimited(&self) -> bool {
        self.rpm.is_none() && self.tpm.is_none() && self.max_parallel.is_none()
    }
}

/// Upstream timeouts in milliseconds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderTimeoutsConfig {
    /// Connect timeout.
    pub connect_ms: u64,
    /// Whole non-streaming request.
    pub request_ms: u64,
    /// Longest gap between stream chunks.
    pub stream_idle_ms: u64,
}

impl Default for ProviderTimeoutsConfig {
    fn default() -> Self {
        Self {
            connect_ms: 5_000,
            request_ms: 600_000,
            stream_idle_ms: 60_000,
        }
    }
}

/// Circuit breaker settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// Consecutive failures that open the circuit.
    pub consecutive_failures: u32,
    /// How long the circuit stays open before a probe.
    pub cooldown_ms: u64,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            cooldown_ms: 300_000,
        }
    }
}

/// Behaviour of the in-gateway mock provider.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MockConfig {
    /// Fixed reply; `None` echoes the last user message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    /// Delay of a non-streaming response.
    #[serde(default)]
    pub latency_ms: u64,
    /// Delay of the first stream chunk.
    #[serde(default)]
    pub time_to_first_token_ms: u64,
    /// Stream speed; `None` is as fast as possible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_second: Option<u32>,
    /// Embedding vector size.
    pub embedding_dimensions: u32,
}

/// The kind of requests a route serves.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RouteMode {
    /// Chat.
    #[default]
    Chat,
    /// Embeddings.
    Embeddings,
    /// Text completions.
    Completions,
    /// Moderations.
    Moderation,
    /// Rerank.
    Rerank,
    /// Image generation.
    ImageGeneration,
    /// Audio transcription and translation.
    AudioTranscription,
    /// Text to speech.
    AudioSpeech,
}

/// Backend selection strategy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Smooth weighted round robin.
    #[default]
    Weighted,
    /// Weighted random.
    Shuffle,
    /// Fewest in flight.
    LeastBusy,
    /// Lowest latency EWMA, power of two choices.
    Latency,
    /// Cheapest.
    Cheapest,
    /// Most quota headroom.
    Usage,
}

/// One public model name and how it is served.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteConfig {
    /// Namespace (tenant) of the route.
    pub namespace: String,
    /// Name of the LLMRoute resource.
    pub name: String,
    /// Model name clients send.
    pub model: String,
    /// Other names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Kind of requests.
    pub mode: RouteMode,
    /// Backends.
    pub backends: Vec<BackendConfig>,
    /// Balancing.
    pub strategy: Strategy,
    /// Retries.
    pub retries: RetryConfig,
    /// Timeouts.
    #[serde(default)]
    pub timeouts: RouteTimeoutsConfig,
    /// Fallback routes (model names in the same namespace), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<FallbackConfig>,
    /// Conditional rules, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleConfig>,
    /// Response cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheConfig>,
    /// Hedging delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hedge_after_ms: Option<u64>,
    /// Drop parameters a backend cannot honour.
    #[serde(default)]
    pub drop_unsupported_params: bool,
    /// Log prompts and completions.
    #[serde(default)]
    pub log_prompts: bool,
    /// Other namespaces that may use this route as `namespace/model` (`*` for all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared_with: Vec<String>,
}

impl RouteConfig {
    /// The prefix a wildcard route serves (`openai/` for `openai/*`); `None` for an exact route.
    #[inline]
    pub fn wildcard_prefix(&self) -> Option<&str> {
        wildcard_prefix(&self.model)
    }
}

/// The prefix of a wildcard model name: the part before a `*` that ends it and is its only `*`
/// (`openai/*` -> `openai/`, `*` -> ``); `None` for any other name.
#[inline]
pub fn wildcard_prefix(model: &str) -> Option<&str> {
    model.strip_suffix('*').filter(|p| !p.contains('*'))
}

/// A backend model of a wildcard route with the client's model suffix in place of its trailing
/// `*` (`*` + `gpt-4o` -> `gpt-4o`); a model without one is sent as it is.
pub fn fill_wildcard(backend_model: &str, suffix: &str) -> String {
    match backend_model.strip_suffix('*') {
        Some(head) => format!("{head}{suffix}"),
        None => backend_model.to_owned(),
    }
}

/// One upstream of a route.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendConfig {
    /// Name within the route.
    pub name: String,
    /// Provider id (`namespace/name`).
    pub provider: String,
    /// Upstream model.
    pub model: String,
    /// Weight.
    pub weight: u32,
    /// Priority tier (lower preferred).
    pub priority: u32,
    /// Labels: the provider's, `region`, and the backend's own.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Context window in tokens, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_window: Option<u32>,
    /// Largest completion in tokens, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    /// Limits of this backend alone.
    #[serde(default, skip_serializing_if = "LimitsConfig::is_unlimited")]
    pub limits: LimitsConfig,
    /// Prices, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<Price>,
}

/// What one request costs, in USD per million tokens of each kind.
///
/// Token counts follow OpenAI's convention (see [`Tokens`]): the prompt includes cache reads and
/// cache writes, the completion includes reasoning. Unset optional prices bill those tokens like
/// their plain kind, which is how providers without a separate price bill them.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Price {
    /// Prompt tokens read from neither the cache nor written to it.
    pub input: f64,
    /// Completion tokens, reasoning included unless `reasoning` is set.
    pub output: f64,
    /// Prompt tokens read from the provider's prompt cache.
    pub cached_input: f64,
    /// Prompt tokens written to the provider's prompt cache (Anthropic: 1.25x input for the
    /// five-minute cache). Unset: billed as input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<f64>,
    /// Prompt tokens written to the cache for an hour (Anthropic: 2x input). Unset: billed as
    /// `cache_write`.
    #[serde(default, rename = "cacheWrite1h", skip_serializing_if = "Option::is_none")]
    pub cache_write_1h: Option<f64>,
    /// Reasoning (thinking) tokens. Unset: billed as output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<f64>,
    /// Prices of the whole request once its prompt is long (Anthropic's and Gemini's 200k tier).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_context: Option<LongContextPrice>,
}

/// The prices of a request whose prompt has more than `above_tokens` tokens: they replace the base
/// prices for every token of that request.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LongContextPrice {
    /// Prompt tokens (cache reads and writes included) above which the tier applies.
    pub above_tokens: u64,
    /// Prompt tokens.
    pub input: f64,
    /// Completion tokens (and reasoning tokens, unless the base price sets `reasoning`).
    pub output: f64,
    /// Cache reads. Unset: the base `cached_input`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<f64>,
    /// Cache writes. Unset: the base `cache_write`, else this tier's input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<f64>,
    /// One-hour cache writes. Unset: the base `cache_write_1h`, else this tier's cache writes.
    #[serde(default, rename = "cacheWrite1h", skip_serializing_if = "Option::is_none")]
    pub cache_write_1h: Option<f64>,
}

/// The tokens of one request, by kind, as providers report them in OpenAI's convention: `prompt`
/// counts every prompt token, `cached` and `cache_write` included, and `completion` counts every
/// completion token, `reasoning` included. Counts larger than their whole are clamped to it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tokens {
    /// All prompt tokens.
    pub prompt: u64,
    /// All completion tokens.
    pub completion: u64,
    /// Prompt tokens read from the prompt cache.
    pub cached: u64,
    /// Prompt tokens written to the prompt cache, for any duration.
    pub cache_write: u64,
    /// The part of `cache_write` written for an hour.
    pub cache_write_1h: u64,
    /// Completion tokens spent on reasoning.
    pub reasoning: u64,
}

/// The per-kind prices one request is billed at, tier chosen and defaults applied.
struct Rates {
    input: f64,
    output: f64,
    cached: f64,
    write: f64,
    write_1h: f64,
    reasoning: f64,
}

impl Price {
    /// Cost in USD of a request's usage: `prompt` includes `cached`. Same as [`Price::cost_of`]
    /// without cache writes or reasoning tokens.
    #[inline]
    pub fn cost(&self, prompt_tokens: u64, completion_tokens: u64, cached_tokens: u64) -> f64 {
        self.cost_of(&Tokens {
            prompt: prompt_tokens,
            completion: completion_tokens,
            cached: cached_tokens,
            ..Tokens::default()
        })
    }

    /// Cost in USD of a request's usage, each kind of token at its own price. Always finite and
    /// non-negative: a price that is not (which validation refuses) counts as zero.
    #[inline]
    pub fn cost_of(&self, t: &Tokens) -> f64 {
        let r = self.rates(t.prompt);
        let cached = t.cached.min(t.prompt);
        let write = t.cache_write.min(t.prompt - cached);
        let write_1h = t.cache_write_1h.min(write);
        let plain = t.prompt - cached - write;
        let reasoning = t.reasoning.min(t.completion);
        let answer = t.completion - reasoning;
        let usd = (plain as f64 * r.input
            + cached as f64 * r.cached
            + (write - write_1h) as f64 * r.write
            + write_1h as f64 * r.write_1h
            + answer as f64 * r.output
            + reasoning as f64 * r.reasoning)
            / 1_000_000.0;
        if usd.is_finite() {
            usd
        } else {
            0.0
        }
    }

    /// The prices for a request with `prompt` tokens: the long-context tier's above its threshold.
    #[inline]
    fn rates(&self, prompt: u64) -> Rates {
        let write = self.cache_write.unwrap_or(self.input);
        let base = Rates {
            input: self.input,
            output: self.output,
            cached: self.cached_input,
            write,
            write_1h: self.cache_write_1h.unwrap_or(write),
            reasoning: self.reasoning.unwrap_or(self.output),
        };
        let r = match &self.long_context {
            Some(t) if prompt > t.above_tokens => {
                let write = t.cache_write.or(self.cache_write).unwrap_or(t.input);
                Rates {
                    input: t.input,
                    output: t.output,
                    cached: t.cached_input.unwrap_or(self.cached_input),
                    write,
                    write_1h: t.cache_write_1h.or(self.cache_write_1h).unwrap_or(write),
                    reasoning: self.reasoning.unwrap_or(t.output),
                }
            }
            _ => base,
        };
        let sane = |p: f64| if p.is_finite() && p > 0.0 { p } else { 0.0 };
        Rates {
            input: sane(r.input),
            output: sane(r.output),
            cached: sane(r.cached),
            write: sane(r.write),
            write_1h: sane(r.write_1h),
            reasoning: sane(r.reasoning),
        }
    }
}

/// A retryable failure.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum RetryOn {
    /// 429.
    RateLimit,
    /// 5xx.
    ServerError,
    /// Timeout.
    Timeout,
    /// Connection failure.
    ConnectError,
}

/// Retry policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryConfig {
    /// Retries after the first attempt.
    pub attempts: u32,
    /// First backoff.
    pub backoff_ms: u64,
    /// Longest backoff.
    pub max_backoff_ms: u64,
    /// What is retried.
    pub on: Vec<RetryOn>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            attempts: 2,
            backoff_ms: 1_000,
            max_backoff_ms: 30_000,
            on: vec![
                RetryOn::RateLimit,
                RetryOn::ServerError,
                RetryOn::Timeout,
                RetryOn::ConnectError,
            ],
        }
    }
}

/// Route timeouts in milliseconds; `None` means the provider's own.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteTimeoutsConfig {
    /// Overall deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_ms: Option<u64>,
    /// One attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_ms: Option<u64>,
    /// First token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_token_ms: Option<u64>,
}

/// A fallback trigger.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum FallbackTrigger {
    /// Rate limited.
    RateLimit,
    /// Server error.
    ServerError,
    /// Timeout.
    Timeout,
    /// Context window exceeded.
    ContextWindow,
    /// Content policy.
    ContentPolicy,
}

/// A fallback.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FallbackConfig {
    /// Model name of the fallback route, same namespace.
    pub route: String,
    /// Triggers.
    pub on: Vec<FallbackTrigger>,
}

/// A conditional rule.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleConfig {
    /// Name.
    pub name: String,
    /// Key labels that must be equal.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub key_labels: BTreeMap<String, String>,
    /// Headers (lower-case names) that must be equal.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Request metadata entries that must be equal.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Backend labels required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_selector: Option<BTreeMap<String, String>>,
    /// Weights by backend name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<BTreeMap<String, u32>>,
    /// Priorities by backend name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priorities: Option<BTreeMap<String, u32>>,
    /// Another route (model name, same namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
}

/// Response cache settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CacheConfig {
    /// Time to live.
    pub ttl_ms: u64,
    /// Largest cached body.
    pub max_body_bytes: u64,
    /// Entries are shared by every namespace that uses the route; else kept per caller
    /// namespace.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared: bool,
}

/// One virtual key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyConfig {
    /// Namespace (tenant).
    pub namespace: String,
    /// Name of the VirtualKey resource.
    pub name: String,
    /// SHA-256 hashes (hex) of the valid key values: the current one, then any still in their
    /// rotation grace period.
    pub hashes: Vec<KeyHash>,
    /// Allowed routes; empty means all the namespace may use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_routes: Vec<String>,
    /// Names of the Providers of its namespace the key may reach through pass-through; empty
    /// means none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_passthrough: Vec<String>,
    /// Limits.
    #[serde(default, skip_serializing_if = "LimitsConfig::is_unlimited")]
    pub limits: LimitsConfig,
    /// Budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetConfig>,
    /// Expiry, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// Refuse every request.
    #[serde(default)]
    pub blocked: bool,
    /// Labels for rules and metrics.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A valid key hash.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyHash {
    /// SHA-256 of the key value, hex.
    pub sha256: String,
    /// The hash stops being accepted at this time (seconds since the epoch); for rotated keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<i64>,
}

/// The hex SHA-256 of a key value, as stored in [`KeyHash::sha256`].
pub fn hash_key(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}

/// Budget period.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum BudgetPeriod {
    /// Daily.
    Daily,
    /// Weekly.
    Weekly,
    /// Monthly.
    Monthly,
    /// Never resets.
    Total,
}

/// Budget action.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum BudgetAction {
    /// Refuse.
    Block,
    /// Alert only.
    Alert,
}

/// A key's budget.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BudgetConfig {
    /// USD per period.
    pub max_spend: f64,
    /// Period.
    pub period: BudgetPeriod,
    /// Action.
    pub action: BudgetAction,
    /// Alert thresholds, percent.
    pub alert_thresholds: Vec<u32>,
    /// Alert webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookConfig>,
}

/// A budget shared by a group of keys of one namespace (a `Budget` resource): a request of any
/// of its keys is admitted only when this budget, too, has room.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TeamBudgetConfig {
    /// Namespace; only keys of this namespace are covered.
    pub namespace: String,
    /// Name of the Budget resource.
    pub name: String,
    /// Limit, period, action, alert thresholds and webhook.
    pub budget: BudgetConfig,
    /// Names of the covered VirtualKeys (of `namespace`), sorted.
    pub keys: Vec<String>,
}

impl TeamBudgetConfig {
    /// `namespace/name`, for messages, alerts and metrics.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Spend alert webhook.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookConfig {
    /// URL.
    pub url: String,
    /// HMAC-SHA256 signing secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<SecretString>,
}
