//! The gateway's one error type, and the one place it becomes an HTTP response: OpenAI's error
//! shape (`{"error":{"message","type","param","code"}}`) with the status official SDKs map to
//! their exception classes.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode};
use serde_json::json;
use switchyard_providers::{ErrorKind, ProviderError};

/// The `code` of the failure when a whole upstream response is larger than the fleet's
/// `maxResponseBytes`.
pub(crate) const UPSTREAM_TOO_LARGE: &str = "upstream_response_too_large";

/// A request that failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status}: {message}")]
pub struct GatewayError {
    /// HTTP status for the client.
    pub status: StatusCode,
    /// Human-readable message (never a credential).
    pub message: String,
    /// OpenAI error `type`.
    pub kind: &'static str,
    /// OpenAI error `code`.
    pub code: Option<String>,
    /// The parameter at fault.
    pub param: Option<String>,
    /// `retry-after`, for 429 and 503.
    pub retry_after: Option<Duration>,
}

impl GatewayError {
    fn new(status: StatusCode, kind: &'static str, code: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            code: code.map(str::to_owned),
            param: None,
            retry_after: None,
        }
    }

    /// 400 with the parameter at fault.
    pub fn bad_request(message: impl Into<String>, param: Option<&str>) -> Self {
        Self {
            param: param.map(str::to_owned),
            ..Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", None, message)
        }
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            Some("invalid_api_key"),
            message,
        )
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            Some("model_not_allowed"),
            message,
        )
    }

    /// 404 for an unknown model.
    pub fn model_not_found(model: &str) -> Self {
        Self {
            param: Some("model".into()),
            ..Self::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                Some("model_not_found"),
                format!(
                    "The model `{}` does not exist or you do not have access to it.",
                    shortened(model)
                ),
            )
        }
    }

    /// 404 for an unknown path.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("not_found"),
            message,
        )
    }

    /// 413.
    pub fn too_large(limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            Some("request_too_large"),
            format!("request body is larger than the gateway's limit of {limit} bytes"),
        )
    }

    /// 413: a body of more JSON values than the gateway parses.
    pub fn too_many_values(limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            Some("request_too_large"),
            format!(
                "request body holds more than the gateway's limit of {limit} JSON values (maxRequestValues); send fewer, larger items or split the request"
            ),
        )
    }

    /// 429.
    pub fn rate_limited(message: impl Into<String>, retry_after: Option<Duration>) -> Self {
        Self {
            retry_after,
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                Some("rate_limit_exceeded"),
                message,
            )
        }
    }

    /// 503.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            Some("service_unavailable"),
            message,
        )
    }

    /// Maps an upstream failure. Client-side faults keep their 4xx; the provider's own
    /// authentication or availability problems are the gateway's (502/504), never the client's.
    pub fn upstream(e: &ProviderError, backend: &str) -> Self {
        let (status, kind, code) = match e.kind {
            ErrorKind::BadRequest => (StatusCode::BAD_REQUEST, "invalid_request_error", e.code.as_deref()),
            ErrorKind::ContextWindow => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("context_length_exceeded"),
            ),
            ErrorKind::ContentPolicy => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("content_policy_violation"),
            ),
            ErrorKind::RateLimit => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                Some("rate_limit_exceeded"),
            ),
            ErrorKind::Timeout => (StatusCode::GATEWAY_TIMEOUT, "timeout_error", Some("upstream_timeout")),
            ErrorKind::Auth => (StatusCode::BAD_GATEWAY, "upstream_error", Some("upstream_auth_failed")),
            ErrorKind::PermissionDenied | ErrorKind::NotFound => (
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                Some("upstream_misconfigured"),
            ),
            ErrorKind::Server | ErrorKind::Connect | ErrorKind::Protocol => {
                (StatusCode::BAD_GATEWAY, "upstream_error", Some("upstream_error"))
            }
        };
        // The gateway's own verdict on an oversized answer keeps its code.
        let code = match e.code.as_deref() {
            Some(c @ (UPSTREAM_TOO_LARGE | switchyard_providers::sse::EVENT_TOO_LARGE)) => Some(c),
            _ => code,
        };
        let message = match e.kind {
            ErrorKind::BadRequest | ErrorKind::ContextWindow | ErrorKind::ContentPolicy | ErrorKind::RateLimit => {
                e.message.clone()
            }
            _ => format!("backend {backend:?} failed: {}", e.message),
        };
        Self {
            status,
            message,
            kind,
            code: code.map(str::to_owned),
            param: e.param.clone(),
            retry_after: e.retry_after,
        }
    }

    /// The OpenAI error JSON.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

/// How much of a client's model name an error repeats: more than any real name, and a request
/// that names a 5 MiB model gets a short answer (and leaves a short log line).
const MODEL_IN_ERRORS: usize = 256;

fn shortened(model: &str) -> std::borrow::Cow<'_, str> {
    if model.len() <= MODEL_IN_ERRORS {
        return model.into();
    }
    let mut end = MODEL_IN_ERRORS;
    while !model.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &model[..end], model.len()).into()
}

/// `text` with every word that looks like a credential replaced by `[redacted]`: a masked key
/// (`sk-abc***xyz`), a word with a known key prefix (`sk-`, `AKIA`, `AIza`, ...), or a long
/// random-looking word (24 characters or more mixing upper case, lower case and digits). For
/// provider answers that reach the log; the client never gets them.
pub(crate) fn redact(text: &str) -> String {
    const PREFIXES: [&str; 11] = [
        "sk-", "sk_", "pk-", "rk-", "key-", "AKIA", "ASIA", "AIza", "xai-", "gsk_", "ya29.",
    ];
    let keyish = |c: char| c.is_ascii_alphanumeric() || "-_.*+/=~".contains(c);
    let secret = |w: &str| {
        let masked = w.contains('*') && w.len() >= 8;
        let prefixed = w.len() >= 12 && PREFIXES.iter().any(|p| w.starts_with(p));
        let random = w.len() >= 24
            && w.chars().any(|c| c.is_ascii_digit())
            && w.chars().any(|c| c.is_ascii_uppercase())
            && w.chars().any(|c| c.is_ascii_lowercase());
        masked || prefixed || random
    };
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(keyish) {
        out.push_str(&rest[..start]);
        let word = &rest[start..];
        let end = word.find(|c: char| !keyish(c)).unwrap_or(word.len());
        // A sentence's full stop is not part of the word (a run of dots alone is kept as is).
        let w = match word[..end].trim_end_matches('.') {
            "" => &word[..end],
            w => w,
        };
        out.push_str(if secret(w) { "[redacted]" } else { w });
        rest = &word[w.len()..];
    }
    out.push_str(rest);
    out
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        if let Some(ra) = self.retry_after {
            let secs = ra.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(http::header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_in_provider_answers_are_redacted() {
        for (text, want) in [
            (
                "Incorrect API key provided: sk-proj-abc1*********************wxyz. You can find your API key at https://platform.openai.com/account/api-keys.",
                "Incorrect API key provided: [redacted]. You can find your API key at https://platform.openai.com/account/api-keys.",
            ),
            ("invalid x-api-key sk-ant-api03-Abcdefghijkl", "invalid x-api-key [redacted]"),
            (
                "The security token included in the request is invalid. (AKIAIOSFODNN7EXAMPLE)",
                "The security token included in the request is invalid. ([redacted])",
            ),
            ("key wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY rejected", "key [redacted] rejected"),
            ("API key not valid. Please pass a valid API key.", "API key not valid. Please pass a valid API key."),
            ("request req_0123456789abcdef0123 failed", "request req_0123456789abcdef0123 failed"),
            ("", ""),
            ("... . ..x.. sk-proj-abcdefgh...", "... . ..x.. [redacted]..."),
            ("ünïcode ✓ sk-ünicode", "ünïcode ✓ sk-ünicode"),
        ] {
            assert_eq!(redact(text), want, "{text}");
        }
    }
}
