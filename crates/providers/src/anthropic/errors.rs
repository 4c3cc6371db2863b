//! Anthropic errors (response bodies and `error` stream events) to [`ProviderError`].

use crate::{kind_for_status, retry_after, ErrorKind, ProviderError};
use http::HeaderMap;
use serde::Deserialize;

// ---------------------------------------------------------------------------------------------
// Errors.

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: WireError,
}

/// The `error` object of Anthropic's error body and `error` stream event.
#[derive(Deserialize)]
pub struct WireError {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    message: String,
}

/// The class of an Anthropic error type (`status` decides for types this code does not know).
fn error_kind(ty: &str, message: &str, status: u16) -> ErrorKind {
    match ty {
        "invalid_request_error" if is_context_overflow(message) => ErrorKind::ContextWindow,
        "invalid_request_error" | "request_too_large" => ErrorKind::BadRequest,
        "authentication_error" => ErrorKind::Auth,
        // The account cannot be used for this: a provider-side problem, like a 403.
        "permission_error" | "billing_error" => ErrorKind::PermissionDenied,
        "not_found_error" => ErrorKind::NotFound,
        "rate_limit_error" => ErrorKind::RateLimit,
        "timeout_error" => ErrorKind::Timeout,
        "api_error" | "overloaded_error" => ErrorKind::Server,
        _ => kind_for_status(status),
    }
}

/// "prompt is too long: 208310 tokens > 200000 maximum", "input length and `max_tokens` exceed
/// context limit: ...".
fn is_context_overflow(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("prompt is too long") || m.contains("exceed context limit") || m.contains("context window")
}

/// Maps an `error` event that arrived in a stream after the 200.
pub(super) fn stream_error(e: WireError) -> ProviderError {
    // The HTTP status each type has outside a stream (Anthropic's "Errors" reference).
    let status = match e.kind.as_str() {
        "invalid_request_error" => 400,
        "rate_limit_error" => 429,
        "overloaded_error" => 529,
        _ => 500,
    };
    ProviderError {
        kind: error_kind(&e.kind, &e.message, status),
        status: None,
        code: (!e.kind.is_empty()).then(|| e.kind.clone()),
        param: None,
        retry_after: None,
        message: e.message,
    }
}

/// Maps an Anthropic error response (`{"type":"error","error":{"type":..,"message":..}}`).
pub fn anthropic_error(status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError {
    let (kind, message, code) = match serde_json::from_slice::<ErrorEnvelope>(body) {
        Ok(ErrorEnvelope { error }) => (
            error_kind(&error.kind, &error.message, status),
            error.message,
            (!error.kind.is_empty()).then_some(error.kind),
        ),
        Err(_) => (
            kind_for_status(status),
            format!("upstream answered HTTP {status}"),
            None,
        ),
    };
    ProviderError {
        kind,
        status: Some(status),
        message,
        param: None,
        code,
        retry_after: retry_after(headers),
    }
}
