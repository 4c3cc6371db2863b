//! Wire formats of every provider, pure: no I/O, no HTTP server, no routing.
//!
//! Each provider is one module implementing [`Adapter`]: build the upstream request from an
//! OpenAI-shaped request, translate the response and the stream back to OpenAI's shape, and map
//! the provider's errors. The gateway does the I/O. OpenAI-compatible providers are presets of
//! [`openai::OpenAi`], not copies.

pub mod anthropic;
pub mod audio;
pub mod bedrock;
pub mod cohere;
pub mod embed_rerank;
pub mod gemini;
pub mod images;
pub mod jina;
pub mod mock;
pub mod moderations;
pub mod openai;
pub mod rerank;
pub mod scan;
pub mod sse;
pub mod voyage;

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method};
use serde::{Deserialize, Serialize};
use switchyard_config::{ProviderConfig, ProviderKind};

/// An OpenAI-shaped JSON object (a request body).
pub type Json = serde_json::Map<String, serde_json::Value>;

/// What the client asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/embeddings`.
    Embeddings,
    /// `/v1/completions`.
    Completions,
    /// `/v1/responses`.
    Responses,
    /// `/v1/moderations`.
    Moderations,
    /// `/v1/rerank` and `/v2/rerank`, in Cohere's shape.
    Rerank,
    /// `/v1/images/generations`.
    Images,
    /// `/v1/audio/transcriptions` (multipart upload; the gateway's `audio` module does the I/O).
    Transcriptions,
    /// `/v1/audio/translations` (multipart upload, like transcriptions).
    Translations,
    /// `/v1/audio/speech`: JSON in, audio bytes out.
    Speech,
}

impl Operation {
    /// The endpoint's path, for messages.
    pub fn path(self) -> &'static str {
        match self {
            Self::Chat => "/v1/chat/completions",
            Self::Embeddings => "/v1/embeddings",
            Self::Completions => "/v1/completions",
            Self::Responses => "/v1/responses",
            Self::Moderations => "/v1/moderations",
            Self::Rerank => "/v1/rerank",
            Self::Images => "/v1/images/generations",
            Self::Transcriptions => "/v1/audio/transcriptions",
            Self::Translations => "/v1/audio/translations",
            Self::Speech => "/v1/audio/speech",
        }
    }
}

/// Whether a provider type's API has an endpoint for `op`, for the endpoints some APIs lack
/// entirely (moderations, rerank); the gateway refuses a request before any attempt when a
/// route's backend cannot serve it. Chat, completions, embeddings and responses answer `true`:
/// their adapters refuse what they cannot translate themselves.
pub fn serves(kind: ProviderKind, op: Operation) -> bool {
    use ProviderKind as K;
    match op {
        Operation::Chat | Operation::Embeddings | Operation::Completions | Operation::Responses => true,
        // OpenAI's /v1/moderations, and Mistral's of the same request shape; Azure OpenAI
        // filters content inside its chat API and has no moderation endpoint.
        Operation::Moderations => matches!(kind, K::Openai | K::Mistral | K::OpenaiCompatible | K::Mock),
        // Cohere's /v2/rerank, Voyage's and Jina's /v1/rerank, vLLM's Cohere-compatible
        // /v1/rerank, Bedrock's Rerank (Agents for Amazon Bedrock Runtime).
        Operation::Rerank => matches!(
            kind,
            K::Cohere | K::Voyage | K::Jina | K::Bedrock | K::Vllm | K::OpenaiCompatible | K::Mock
        ),
        // OpenAI's and Azure OpenAI's image generation (DALL-E, GPT Image), Vertex AI's Imagen,
        // Bedrock's Amazon image models (Nova Canvas, Titan Image Generator).
        Operation::Images => matches!(
            kind,
            K::Openai | K::AzureOpenai | K::OpenaiCompatible | K::Vertex | K::Bedrock
        ),
        // Whisper and GPT-4o transcription at OpenAI and Azure OpenAI, Whisper at Groq.
        Operation::Transcriptions | Operation::Translations => {
            matches!(kind, K::Openai | K::AzureOpenai | K::Groq | K::OpenaiCompatible)
        }
        // OpenAI's and Azure OpenAI's text to speech (tts-1, gpt-4o-mini-tts).
        Operation::Speech => matches!(kind, K::Openai | K::AzureOpenai | K::OpenaiCompatible),
    }
}

/// Who the request goes to.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    /// The provider account.
    pub provider: &'a ProviderConfig,
    /// The upstream model (Azure deployment, Bedrock model id...).
    pub model: &'a str,
    /// Drop parameters the provider cannot honour instead of failing.
    pub drop_unsupported_params: bool,
    /// The time to sign with (SigV4, JWT assertions); the gateway passes the current time,
    /// tests a fixed one.
    pub now: std::time::SystemTime,
    /// A bearer token the gateway obtained for this provider (Vertex OAuth2 access token).
    pub bearer: Option<&'a str>,
}

/// A request ready to send.
#[derive(Clone, Debug)]
pub struct UpstreamRequest {
    /// Method.
    pub method: Method,
    /// Full URL.
    pub url: String,
    /// Headers, credentials included.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

/// Token usage reported by a provider, in OpenAI's convention whatever the provider's:
/// `prompt_tokens` counts every prompt token, the ones read from the cache (`cached_tokens`) and
/// the ones written to it (`cache_write_tokens`) included; `completion_tokens` counts every
/// generated token, reasoning ones (`reasoning_tokens`) included. So uncached prompt tokens are
/// `prompt_tokens - cached_tokens - cache_write_tokens`, and Anthropic's and Bedrock's
/// `input_tokens`, which exclude cache reads and writes, are converted on the way in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens, cache reads and writes included.
    pub prompt_tokens: u64,
    /// Completion tokens, reasoning included.
    pub completion_tokens: u64,
    /// Prompt tokens read from the provider's cache.
    pub cached_tokens: u64,
    /// Prompt tokens written to the provider's cache (Anthropic's `cache_creation_input_tokens`,
    /// Bedrock's `cacheWriteInputTokens`).
    #[serde(default, alias = "cache_creation_tokens")]
    pub cache_write_tokens: u64,
    /// The part of `cache_write_tokens` kept an hour rather than five minutes (Anthropic's
    /// `cache_creation.ephemeral_1h_input_tokens`, Bedrock's `cacheDetails` with `ttl: 1h`),
    /// billed at its own price.
    #[serde(default)]
    pub cache_write_1h_tokens: u64,
    /// Completion tokens spent on reasoning (OpenAI's `reasoning_tokens`, Gemini's
    /// `thoughtsTokenCount`).
    #[serde(default)]
    pub reasoning_tokens: u64,
}

impl Usage {
    /// Prompt plus completion (saturating: the counts come from upstream JSON).
    pub fn total(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }

    /// OpenAI's `usage` object: `prompt_tokens_details.cached_tokens` always, and the details
    /// OpenAI's shape has no field for or that are zero only when there are some:
    /// `prompt_tokens_details.cache_write_tokens` (a gateway extension, as OpenAI reports no cache
    /// writes; `cache_write_1h_tokens` the part of them kept an hour) and
    /// `completion_tokens_details.reasoning_tokens`.
    pub fn openai_json(&self) -> serde_json::Value {
        let mut prompt = serde_json::json!({"cached_tokens": self.cached_tokens});
        if self.cache_write_tokens > 0 {
            prompt["cache_write_tokens"] = self.cache_write_tokens.into();
        }
        if self.cache_write_1h_tokens > 0 {
            prompt["cache_write_1h_tokens"] = self.cache_write_1h_tokens.into();
        }
        let mut v = serde_json::json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total(),
            "prompt_tokens_details": prompt,
        });
        if self.reasoning_tokens > 0 {
            v["completion_tokens_details"] = serde_json::json!({"reasoning_tokens": self.reasoning_tokens});
        }
        v
    }
}

/// A translated non-streaming response.
#[derive(Clone, Debug)]
pub struct Translated {
    /// OpenAI-shaped JSON body.
    pub body: Bytes,
    /// Usage, when the provider reported it.
    pub usage: Option<Usage>,
}

/// Classes of failure; they decide the status the client sees, retries and fallbacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// 400: the request is wrong.
    BadRequest,
    /// 400: the prompt does not fit the model's context window.
    ContextWindow,
    /// 400: the provider refused the content.
    ContentPolicy,
    /// 401 upstream: the provider's credentials are wrong (the client sees 502).
    Auth,
    /// 403 upstream.
    PermissionDenied,
    /// 404 upstream: model or deployment not found.
    NotFound,
    /// 429.
    RateLimit,
    /// 5xx upstream.
    Server,
    /// No answer in time.
    Timeout,
    /// Connection failed.
    Connect,
    /// The provider answered something unreadable.
    Protocol,
}

/// A provider error, mapped.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct ProviderError {
    /// Class.
    pub kind: ErrorKind,
    /// Upstream HTTP status, when there was one.
    pub status: Option<u16>,
    /// Message for the client (never a credential).
    pub message: String,
    /// The request parameter at fault.
    pub param: Option<String>,
    /// Provider's error code.
    pub code: Option<String>,
    /// How long the provider asked us to wait.
    pub retry_after: Option<Duration>,
}

impl ProviderError {
    /// A new error of a kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            status: None,
            message: message.into(),
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// A 400 naming an unsupported parameter.
    pub fn unsupported_param(provider: &str, param: &str) -> Self {
        Self {
            param: Some(param.to_owned()),
            code: Some("unsupported_parameter".into()),
            ..Self::new(
                ErrorKind::BadRequest,
                format!("parameter `{param}` is not supported by {provider} backends (set dropUnsupportedParams on the route to drop it)"),
            )
        }
    }
}

/// The client's own bytes of an OpenAI-format request body (a JSON object), where its `model`
/// value sits in them and where the object closes. An adapter that passes OpenAI's format
/// through sends these bytes with the model name replaced and any fields it adds appended, when
/// that is all it would change ([`Adapter::build_from`]), instead of writing the parsed body out
/// again: the write was most of building such a request.
#[derive(Clone, Debug, PartialEq)]
pub struct Original {
    bytes: Bytes,
    model: std::ops::Range<usize>,
    /// The object's closing `}`: the last byte but whitespace.
    close: usize,
}

impl Original {
    /// `bytes` (a JSON object: the body the request was parsed from) with its `model` value (the
    /// JSON value, quotes included) at `model`; `None` if the range is not inside the object.
    pub fn new(bytes: Bytes, model: std::ops::Range<usize>) -> Option<Self> {
        let close = bytes.iter().rposition(|b| !b.is_ascii_whitespace())?;
        (bytes[close] == b'}' && model.start <= model.end && model.end <= close).then_some(Self { bytes, model, close })
    }

    /// The body with `model` (written as a JSON string) in place of the client's model value,
    /// and `added` (fields the client's body does not have) appended to the object.
    pub fn with(&self, model: &str, added: &[(&str, &serde_json::Value)]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes.len() + model.len() + 2 + 48 * added.len());
        out.extend_from_slice(&self.bytes[..self.model.start]);
        // Strings and values always serialise.
        let _ = serde_json::to_writer(&mut out, model);
        out.extend_from_slice(&self.bytes[self.model.end..self.close]);
        for (key, value) in added {
            // The object has a field (the model), so each addition follows a comma.
            out.push(b',');
            let _ = serde_json::to_writer(&mut out, key);
            out.push(b':');
            let _ = serde_json::to_writer(&mut out, value);
        }
        out.extend_from_slice(&self.bytes[self.close..]);
        out
    }
}

/// Translates one upstream stream into OpenAI `chat.completion.chunk` SSE events.
pub trait StreamTranslator: Send {
    /// Feeds bytes as they arrive; appends the bytes to send to the client to `out`.
    fn feed(&mut self, chunk: Bytes, out: &mut Vec<Bytes>) -> Result<(), ProviderError>;
    /// The upstream ended; appends anything left (such as `data: [DONE]`).
    fn finish(&mut self, out: &mut Vec<Bytes>) -> Result<(), ProviderError>;
    /// Usage seen so far.
    fn usage(&self) -> Option<Usage>;
    /// Whether the upstream's terminal event was seen (a stream cut before it is incomplete).
    fn complete(&self) -> bool;
}

/// One provider's wire format.
pub trait Adapter: Send + Sync {
    /// Builds the upstream request. `stream` asks for a streamed response.
    fn build(
        &self,
        op: Operation,
        request: &Json,
        target: &Target<'_>,
        stream: bool,
    ) -> Result<UpstreamRequest, ProviderError>;

    /// [`Adapter::build`], given also the client's own bytes when the request came in OpenAI's
    /// format (`original`, of this same `request`): an adapter that passes OpenAI's format
    /// through may send them with the model replaced and fields it adds appended. The gateway
    /// calls this one.
    fn build_from(
        &self,
        op: Operation,
        request: &Json,
        original: Option<&Original>,
        target: &Target<'_>,
        stream: bool,
    ) -> Result<UpstreamRequest, ProviderError> {
        let _ = original;
        self.build(op, request, target, stream)
    }

    /// Translates a successful (2xx) non-streaming response body.
    fn parse(&self, op: Operation, body: &[u8], target: &Target<'_>) -> Result<Translated, ProviderError>;

    /// [`Adapter::parse`] for adapters whose translation needs the client's request too (Bedrock
    /// rerank: its answer names neither how many documents were billed nor whether the client
    /// wanted them back). The gateway calls this one.
    fn parse_for(
        &self,
        op: Operation,
        _request: &Json,
        body: &[u8],
        target: &Target<'_>,
    ) -> Result<Translated, ProviderError> {
        self.parse(op, body, target)
    }

    /// The request for the next page of a whole answer that says more is left (Bedrock Rerank's
    /// `nextToken`), made from the client's `request` as [`Adapter::build`] makes it; `None`
    /// when `answer` is the last page (every API but Bedrock Rerank answers in one).
    fn next_page(
        &self,
        _op: Operation,
        _request: &Json,
        _answer: &[u8],
        _target: &Target<'_>,
    ) -> Result<Option<UpstreamRequest>, ProviderError> {
        Ok(None)
    }

    /// Two pages of one answer as one, in the provider's format (the pages so far, the next):
    /// what [`Adapter::parse_for`] then reads.
    fn join_pages(&self, _op: Operation, so_far: &[u8], _next: &[u8]) -> Result<Bytes, ProviderError> {
        Ok(Bytes::copy_from_slice(so_far))
    }

    /// A translator for a streamed response.
    fn stream(&self, op: Operation, target: &Target<'_>) -> Box<dyn StreamTranslator>;

    /// Maps a non-2xx response.
    fn error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError;

    /// Whether this adapter passes OpenAI bytes through unchanged (no translation).
    fn passthrough(&self) -> bool {
        false
    }

    /// The headers every request to the provider carries, set as [`Adapter::build`] sets them:
    /// its credentials and the Provider's extra headers (a `content-type` among them is the
    /// caller's to keep or drop). For the gateway's pass-through, which forwards requests it
    /// does not translate. Vertex AI's bearer token comes in [`Target::bearer`]; providers whose
    /// requests are signed over their body (Bedrock's SigV4) refuse here and sign in
    /// [`Adapter::credentials_for`].
    fn credentials(&self, target: &Target<'_>) -> Result<HeaderMap, ProviderError> {
        Err(wire::bad(format!(
            "pass-through does not serve providers of type {}: their requests are signed per request",
            target.provider.kind.as_str()
        )))
    }

    /// Whether [`Adapter::credentials_for`] needs the request's whole body (a signature over
    /// it): pass-through then reads the body before it sends anything.
    fn signs_body(&self) -> bool {
        false
    }

    /// The credential headers of one forwarded request: [`Adapter::credentials`], or, for an
    /// adapter that [`Adapter::signs_body`], its signature over `request`, made by the same
    /// signer as [`Adapter::build`]'s requests.
    fn credentials_for(&self, _request: &Forwarded<'_>, target: &Target<'_>) -> Result<HeaderMap, ProviderError> {
        self.credentials(target)
    }
}

/// A request the gateway forwards untranslated (pass-through), as a signer sees it.
#[derive(Clone, Copy, Debug)]
pub struct Forwarded<'a> {
    /// Method.
    pub method: &'a Method,
    /// The full upstream URL, exactly as it is sent.
    pub url: &'a str,
    /// The body's `content-type`, as it is sent.
    pub content_type: Option<&'a str>,
    /// The whole body (empty for none).
    pub body: &'a [u8],
}

/// The adapter for a provider kind.
pub fn adapter(kind: ProviderKind) -> &'static dyn Adapter {
    match kind {
        ProviderKind::AzureOpenai => &openai::AZURE,
        ProviderKind::Anthropic => &anthropic::ANTHROPIC,
        ProviderKind::Bedrock => &bedrock::BEDROCK,
        ProviderKind::Gemini => &gemini::GEMINI,
        ProviderKind::Vertex => &gemini::VERTEX,
        ProviderKind::Cohere => &cohere::COHERE,
        ProviderKind::Voyage => &voyage::VOYAGE,
        ProviderKind::Jina => &jina::JINA,
        // Native adapters of the other providers register here as they are added; until then
        // they speak their OpenAI-compatible endpoints.
        _ => openai::preset(kind),
    }
}

/// Small constructors the adapters share.
pub(crate) mod wire {
    use bytes::Bytes;

    use crate::{ErrorKind, ProviderError};

    /// A 400 about the request.
    pub fn bad(message: impl Into<String>) -> ProviderError {
        ProviderError::new(ErrorKind::BadRequest, message)
    }

    /// A 400 naming the parameter at fault.
    pub fn bad_param(message: impl Into<String>, param: impl Into<String>) -> ProviderError {
        ProviderError {
            param: Some(param.into()),
            ..bad(message)
        }
    }

    /// The upstream's answer could not be read.
    pub fn unreadable(e: impl std::fmt::Display) -> ProviderError {
        ProviderError::new(
            ErrorKind::Protocol,
            format!("upstream sent an unreadable response: {e}"),
        )
    }

    /// A sampling number brought into the provider's range. OpenAI takes `temperature` up to 2
    /// and `top_p` up to 1 inclusive; Claude, Bedrock Converse and Cohere's `p` take less, and
    /// refuse the request outright. The nearest value they take means what the client asked
    /// (as random as the provider allows), so a fallback from an OpenAI backend does not fail
    /// on a number it took. Not a number: `None`, for the caller's own error.
    pub fn clamped(value: &serde_json::Value, min: f64, max: f64) -> Option<serde_json::Value> {
        let n = value.as_f64()?;
        if (min..=max).contains(&n) {
            return Some(value.clone());
        }
        Some(serde_json::Value::from(n.clamp(min, max)))
    }

    /// JSON bytes of a request body.
    pub fn encode(v: &impl serde::Serialize) -> Result<Bytes, ProviderError> {
        serde_json::to_vec(v)
            .map(Bytes::from)
            .map_err(|e| bad(format!("cannot encode request: {e}")))
    }
}

/// An OpenAI embeddings list (`{"object":"list","data":[{"object":"embedding",...}],...}`) from
/// one vector per input, in input order, with the provider's prompt token count when it gave one.
pub fn embeddings_list<V: Serialize>(vectors: Vec<V>, model: &str, prompt_tokens: Option<u64>) -> Translated {
    let data: Vec<serde_json::Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| serde_json::json!({"object": "embedding", "index": i, "embedding": v}))
        .collect();
    let n = prompt_tokens.unwrap_or(0);
    let out = serde_json::json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": n, "total_tokens": n},
    });
    Translated {
        body: Bytes::from(out.to_string()),
        usage: prompt_tokens.map(|n| Usage {
            prompt_tokens: n,
            ..Usage::default()
        }),
    }
}

/// The longest wait an upstream may ask for: larger values (`1e20`, `inf`) are taken as this, so
/// the gateway's `Instant::now() + retry_after` cannot overflow.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// A wait of `secs` seconds from upstream, capped at [`MAX_RETRY_AFTER`]; negative values count
/// as zero, NaN as no wait asked for.
pub fn retry_after_secs(secs: f64) -> Option<Duration> {
    if secs.is_nan() {
        return None;
    }
    let capped = secs.clamp(0.0, MAX_RETRY_AFTER.as_secs_f64());
    Some(Duration::try_from_secs_f64(capped).map_or(MAX_RETRY_AFTER, |d| d.min(MAX_RETRY_AFTER)))
}

/// Parses `retry-after` (seconds or HTTP date is not supported: seconds only) and
/// `retry-after-ms`, capped at [`MAX_RETRY_AFTER`].
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
    {
        return retry_after_secs(ms / 1000.0);
    }
    headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .and_then(retry_after_secs)
}

/// The error kind a bare HTTP status implies.
pub fn kind_for_status(status: u16) -> ErrorKind {
    match status {
        400 | 409 | 413 | 415 | 422 => ErrorKind::BadRequest,
        401 => ErrorKind::Auth,
        403 => ErrorKind::PermissionDenied,
        404 => ErrorKind::NotFound,
        408 | 504 => ErrorKind::Timeout,
        429 => ErrorKind::RateLimit,
        _ => ErrorKind::Server,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: &'static str, value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, http::HeaderValue::from_static(value));
        h
    }

    #[test]
    fn retry_after_is_capped_and_never_panics() {
        assert_eq!(retry_after(&headers("retry-after", "2")), Some(Duration::from_secs(2)));
        assert_eq!(
            retry_after(&headers("retry-after-ms", "1500")),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(retry_after(&headers("retry-after", "1e20")), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after(&headers("retry-after", "inf")), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after(&headers("retry-after-ms", "1e300")), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after(&headers("retry-after", "-5")), Some(Duration::ZERO));
        assert_eq!(retry_after(&headers("retry-after", "NaN")), None);
        assert_eq!(retry_after(&headers("retry-after", "soon")), None);
    }

    #[test]
    fn usage_total_saturates() {
        let u = Usage {
            prompt_tokens: u64::MAX,
            completion_tokens: 7,
            ..Usage::default()
        };
        assert_eq!(u.total(), u64::MAX);
    }
}
