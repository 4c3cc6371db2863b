//! Anthropic Messages (`POST /v1/messages`): serves OpenAI-shaped chat requests from Claude, and
//! ([`ingress`]) translates the gateway's own Anthropic-format `/v1/messages` endpoint to and from
//! the OpenAI shape the rest of the gateway speaks.
//!
//! Request: system and developer messages are lifted to `system`; consecutive turns of one role
//! are merged (tool results are user turns, as Anthropic wants them); `max_tokens` is required
//! upstream, so it defaults to the model's output limit from the built-in table (4096 when the
//! model is unknown); tools, tool choice, tool calls, tool results, images (`data:` URLs as
//! base64, http(s) URLs as url sources) and PDF `file` parts are translated; `cache_control` on
//! content parts and tools is forwarded so prompt caching works through the OpenAI shape;
//! Anthropic's own `top_k` and `thinking` pass through. Parameters Claude cannot honour (`n` > 1,
//! `logprobs`, `top_logprobs`, penalties, `logit_bias`, `seed`, a JSON `response_format`: Claude
//! has no JSON mode or schema-constrained decoding on this API version) fail with
//! [`ProviderError::unsupported_param`] unless the route drops them. `strict` on a tool is a
//! request for a guarantee Claude does not give here; it is dropped, as OpenAI's own non-strict
//! behaviour is what the client then gets.
//!
//! Response and stream: text blocks become `content`, `tool_use` blocks `tool_calls`, thinking
//! becomes `reasoning_content`; `stop_reason` maps to `finish_reason`; prompt tokens are
//! `input_tokens` plus both cache counters, as Anthropic's `input_tokens` excludes them.
//!
//! This module does no I/O and keeps no state across requests.
//!
//! Reference: Anthropic API reference "Messages", "Streaming Messages" and "Errors"; the guides
//! "Tool use", "Vision" and "Prompt caching".

pub mod ingress;

mod errors;
mod request;
mod response;
mod stream;

use crate::{
    Adapter, ErrorKind, Json, Operation, ProviderError, StreamTranslator, Target, Translated, UpstreamRequest,
};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use switchyard_config::CredentialsConfig;

pub use errors::{anthropic_error, WireError};
pub use request::request_body;
pub use response::{finish_reason, response_to_openai, WireUsage};
pub use stream::StreamToOpenAi;

/// The `anthropic-version` header sent upstream.
pub const API_VERSION: &str = "2023-06-01";

/// `max_tokens` when the request sets none and the model is not in the built-in table.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

const NAME: &str = "anthropic";

/// The Anthropic adapter.
#[derive(Clone, Copy, Debug, Default)]
pub struct Anthropic;

/// The Anthropic adapter, as registered in [`crate::adapter`].
pub static ANTHROPIC: Anthropic = Anthropic;

impl Adapter for Anthropic {
    fn build(
        &self,
        op: Operation,
        request: &Json,
        target: &Target<'_>,
        stream: bool,
    ) -> Result<UpstreamRequest, ProviderError> {
        chat_only(op)?;
        let body = request_body(request, target.model, target.drop_unsupported_params, stream)?;
        let bytes = serde_json::to_vec(&body)
            .map_err(|e| ProviderError::new(ErrorKind::BadRequest, format!("cannot encode request: {e}")))?;
        Ok(UpstreamRequest {
            method: Method::POST,
            url: messages_url(&target.provider.base_url),
            headers: headers(target)?,
            body: Bytes::from(bytes),
        })
    }

    fn parse(&self, op: Operation, body: &[u8], target: &Target<'_>) -> Result<Translated, ProviderError> {
        chat_only(op)?;
        response_to_openai(body, unix_seconds(target.now))
    }

    fn stream(&self, _op: Operation, target: &Target<'_>) -> Box<dyn StreamTranslator> {
        // `build` has already refused anything but chat.
        Box::new(StreamToOpenAi::new(unix_seconds(target.now)))
    }

    fn error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        anthropic_error(status, headers, body)
    }

    fn credentials(&self, target: &Target<'_>) -> Result<HeaderMap, ProviderError> {
        headers(target)
    }
}

fn chat_only(op: Operation) -> Result<(), ProviderError> {
    if op == Operation::Chat {
        return Ok(());
    }
    Err(ProviderError::new(
        ErrorKind::BadRequest,
        format!("anthropic backends serve only /v1/chat/completions, not {}", op.path()),
    ))
}

/// `{base}/v1/messages`, accepting a base URL given with or without its `/v1`.
pub fn messages_url(base_url: &str) -> String {
    let base = base_url.trim_end_matches('/');
    if base.ends_with("/v1") {
        format!("{base}/messages")
    } else {
        format!("{base}/v1/messages")
    }
}

fn headers(target: &Target<'_>) -> Result<HeaderMap, ProviderError> {
    let mut h = HeaderMap::with_capacity(4 + target.provider.headers.len());
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(
        HeaderName::from_static("anthropic-version"),
        HeaderValue::from_static(API_VERSION),
    );
    // Provider headers come after the version so a Provider can pin another version or add
    // `anthropic-beta`.
    for (k, v) in &target.provider.headers {
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) else {
            continue;
        };
        h.insert(name, value);
    }
    if let Some(CredentialsConfig::ApiKey { key }) = &target.provider.credentials {
        let mut value = HeaderValue::from_str(key.expose())
            .map_err(|_| ProviderError::new(ErrorKind::Auth, "the provider's API key is not a valid header value"))?;
        value.set_sensitive(true);
        h.insert(HeaderName::from_static("x-api-key"), value);
    }
    Ok(h)
}

fn unix_seconds(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn bad(message: impl Into<String>, param: impl Into<String>) -> ProviderError {
    ProviderError {
        param: Some(param.into()),
        ..ProviderError::new(ErrorKind::BadRequest, message)
    }
}

#[cfg(test)]
mod tests;
