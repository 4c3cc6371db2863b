//! `Provider`: one upstream account (an OpenAI organisation, an Azure resource, a Bedrock region...).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Pricing, SecretKeyRef, DURATION_PATTERN};

/// The wire format and conventions a provider speaks.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderType {
    /// OpenAI (api.openai.com).
    Openai,
    /// Azure OpenAI Service (deployment paths, `api-key` header).
    AzureOpenai,
    /// Anthropic Messages API.
    Anthropic,
    /// AWS Bedrock Converse API, signed with SigV4.
    Bedrock,
    /// Google Vertex AI (service-account credentials).
    Vertex,
    /// Google Gemini API (API key).
    Gemini,
    /// Mistral (OpenAI-compatible).
    Mistral,
    /// Groq (OpenAI-compatible).
    Groq,
    /// xAI (OpenAI-compatible).
    Xai,
    /// DeepSeek (OpenAI-compatible).
    Deepseek,
    /// Cohere chat v2, embed and rerank.
    Cohere,
    /// Voyage AI embeddings and rerank (api.voyageai.com).
    Voyage,
    /// Jina AI embeddings and rerank (api.jina.ai).
    Jina,
    /// Together AI (OpenAI-compatible).
    Together,
    /// Fireworks AI (OpenAI-compatible).
    Fireworks,
    /// OpenRouter (OpenAI-compatible).
    Openrouter,
    /// Ollama's OpenAI-compatible API.
    Ollama,
    /// vLLM's OpenAI-compatible server.
    Vllm,
    /// Any other OpenAI-compatible server (`baseUrl` required).
    OpenaiCompatible,
    /// A deterministic provider that runs inside the gateway; for demos and tests, no network.
    Mock,
}

impl ProviderType {
    /// Every provider type, in declaration order.
    pub const ALL: [ProviderType; 20] = [
        Self::Openai,
        Self::AzureOpenai,
        Self::Anthropic,
        Self::Bedrock,
        Self::Vertex,
        Self::Gemini,
        Self::Mistral,
        Self::Groq,
        Self::Xai,
        Self::Deepseek,
        Self::Cohere,
        Self::Voyage,
        Self::Jina,
        Self::Together,
        Self::Fireworks,
        Self::Openrouter,
        Self::Ollama,
        Self::Vllm,
        Self::OpenaiCompatible,
        Self::Mock,
    ];

    /// The name used in manifests (`azure-openai`, `openai-compatible`...).
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

    /// Whether a provider of this type needs credentials from a Secret.
    pub fn needs_credentials(self) -> bool {
        !matches!(self, Self::Mock | Self::Ollama | Self::Vllm | Self::OpenaiCompatible)
    }
}

impl std::fmt::Display for ProviderType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Provider is one upstream account: its type, where it is, how to authenticate, and how much
/// of it may be used.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "switchyard.dev",
    version = "v1alpha1",
    kind = "Provider",
    namespaced,
    status = "ProviderStatus",
    shortname = "llmprovider",
    shortname = "llmp",
    category = "switchyard",
    cel,
    doc = "An upstream LLM provider account that LLMRoute backends send requests to.",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Region", type_ = "string", json_path = ".spec.region"),
    printcolumn(
        name = "Accepted",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Accepted\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(self.type in ['openai', 'azure-openai', 'anthropic', 'bedrock', 'vertex', 'gemini', 'mistral', 'groq', 'xai', 'deepseek', 'cohere', 'together', 'fireworks', 'openrouter']) || has(self.credentials)").message("credentials.secretRef is required for this provider type"))]
#[x_kube(validation = Rule::new("!(self.type in ['azure-openai', 'openai-compatible']) || has(self.baseUrl)").message("baseUrl is required for azure-openai and openai-compatible providers"))]
#[x_kube(validation = Rule::new("self.type != 'bedrock' || has(self.region)").message("region is required for bedrock providers"))]
#[x_kube(validation = Rule::new("self.type != 'vertex' || (has(self.vertex) && has(self.region))").message("vertex.project and region are required for vertex providers"))]
#[x_kube(validation = Rule::new("!has(self.mock) || self.type == 'mock'").message("mock settings are only allowed on providers of type mock"))]
pub struct ProviderSpec {
    /// The provider's wire format and conventions.
    #[serde(rename = "type")]
    pub provider_type: ProviderType,
    /// Base URL of the provider's API. Defaults to the provider's public endpoint; required for
    /// azure-openai (`https://<resource>.openai.azure.com`) and openai-compatible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://"))]
    pub base_url: Option<String>,
    /// Where the credentials live. The Secret must be in the Provider's namespace. Key names:
    /// `apiKey` for API-key providers (override with `secretRef.key`); `accessKeyId`,
    /// `secretAccessKey` and optional `sessionToken` for bedrock; `serviceAccount.json` for vertex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Credentials>,
    /// Region of the provider's endpoint (`us-east-1`, `europe-west4`, `eu`...). Required for bedrock
    /// and vertex. Also exposed to route rules as the backend label `region`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub region: Option<String>,
    /// Labels that route rules select backends by (for example `residency: eu`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Azure OpenAI `api-version` query parameter. Defaults to a current GA version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub api_version: Option<String>,
    /// Vertex AI settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vertex: Option<VertexSettings>,
    /// Extra headers sent on every upstream request (for example an organisation id). Values are
    /// not secret: put secrets in `credentials`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The provider account's own quota; the gateway keeps traffic under it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quota>,
    /// Prices overriding the built-in price table for this provider's models.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    #[x_kube(validation = Rule::new("self.all(p, has(p.model))").message("every pricing entry of a Provider names its model"))]
    pub pricing: Vec<Pricing>,
    /// Timeouts for requests to this provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<ProviderTimeouts>,
    /// When to stop sending traffic to a failing backend of this provider, and for how long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreaker>,
    /// Behaviour of a `mock` provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mock: Option<MockSettings>,
    /// The HTTP version the gateway speaks to the provider. `auto` (default): HTTP/2 where the
    /// provider offers it over TLS, else HTTP/1.1 (plain `http://` base URLs get HTTP/1.1).
    /// `http1`: always HTTP/1.1, for a provider whose HTTP/2 misbehaves. `http2`: always HTTP/2;
    /// over plain `http://` that is h2c with prior knowledge, for a local server that speaks it,
    /// so that many streams share a few connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_version: Option<HttpVersion>,
}

/// The HTTP version spoken to a provider.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum HttpVersion {
    /// HTTP/2 where offered over TLS (ALPN), else HTTP/1.1.
    #[default]
    Auto,
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 only (h2c over plain `http://`).
    Http2,
}

/// Credentials of a provider, read from a Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    /// The Secret holding the credentials.
    pub secret_ref: SecretKeyRef,
}

/// Vertex AI project settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VertexSettings {
    /// Google Cloud project id.
    #[schemars(length(min = 1, max = 128))]
    pub project: String,
}

/// A provider account's quota.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Quota {
    /// Requests per minute the account allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u32>,
    /// Tokens per minute the account allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    /// Requests in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
}

/// Timeouts for upstream requests.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ProviderTimeouts {
    /// Time to establish a connection. Default `5s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    pub connect: Option<String>,
    /// Time for a whole non-streaming request. Default `600s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    pub request: Option<String>,
    /// Longest silence between two stream chunks before the stream is cut. Default `60s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    pub stream_idle: Option<String>,
}

/// Circuit breaker settings for each backend of a provider.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.consecutiveFailures) || self.consecutiveFailures >= 1").message("circuitBreaker.consecutiveFailures must be at least 1"))]
pub struct CircuitBreaker {
    /// Consecutive failures (5xx, timeouts, connection errors) that open the circuit. Default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
    /// How long an open circuit skips the backend before one probe request is let through.
    /// Default `5m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    pub cooldown: Option<String>,
}

/// Behaviour of the in-gateway mock provider.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.tokensPerSecond) || self.tokensPerSecond > 0").message("mock.tokensPerSecond must be positive"))]
pub struct MockSettings {
    /// Fixed reply text. When omitted the mock echoes the last user message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub response: Option<String>,
    /// Time before a non-streaming response is returned. Default `0ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    pub latency: Option<String>,
    /// Time before the first stream chunk. Default `0ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    pub time_to_first_token: Option<String>,
    /// Streaming speed in tokens (words) per second. Omitted means as fast as possible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_second: Option<u32>,
    /// Dimensions of mock embedding vectors. Default 8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4096))]
    pub embedding_dimensions: Option<u32>,
}

/// Observed state of a Provider.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProviderStatus {
    /// `Accepted` (the spec is valid) and `ResolvedRefs` (its credentials Secret exists).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
