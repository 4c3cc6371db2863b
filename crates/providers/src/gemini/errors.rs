//! Google errors (AIP-193 `{"error":{...}}`) to [`ProviderError`].

use crate::{kind_for_status, retry_after, ErrorKind, ProviderError};
use http::HeaderMap;
use serde::Deserialize;
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: GoogleError,
}

#[derive(Deserialize)]
struct GoogleError {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    details: Vec<Value>,
}

/// `google.rpc.RetryInfo.retryDelay` (`"1s"`, `"30.5s"`), capped at [`crate::MAX_RETRY_AFTER`];
/// a negative or unreadable delay is none.
fn retry_delay(details: &[Value]) -> Option<std::time::Duration> {
    details
        .iter()
        .filter(|d| {
            d.get("@type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.ends_with("google.rpc.RetryInfo"))
        })
        .find_map(|d| d.get("retryDelay").and_then(Value::as_str))
        .and_then(|s| s.strip_suffix('s'))
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s >= 0.0)
        .and_then(crate::retry_after_secs)
}

fn error_reason(details: &[Value]) -> Option<&str> {
    details.iter().find_map(|d| d.get("reason").and_then(Value::as_str))
}

/// Whether an `INVALID_ARGUMENT` message says the prompt is too long.
fn is_context_window(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    (m.contains("token") && (m.contains("exceeds") || m.contains("too long") || m.contains("maximum number")))
        || m.contains("context window")
        || m.contains("context length")
}

/// Maps Google's `{"error":{"code","message","status","details"}}` (also wrapped in an array, as
/// JSON-array streams send it).
pub fn google_error(status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError {
    // Look at the first byte: serde would also read a struct from an array, positionally.
    let parsed = if body.trim_ascii_start().starts_with(b"[") {
        serde_json::from_slice::<Vec<ErrorEnvelope>>(body)
            .ok()
            .and_then(|v| v.into_iter().next())
    } else {
        serde_json::from_slice::<ErrorEnvelope>(body).ok()
    }
    .map(|e| e.error);
    let Some(e) = parsed else {
        return ProviderError {
            status: Some(status),
            retry_after: retry_after(headers),
            ..ProviderError::new(kind_for_status(status), format!("upstream answered HTTP {status}"))
        };
    };
    let reason = error_reason(&e.details);
    let kind = match e.status.as_deref() {
        _ if matches!(reason, Some("API_KEY_INVALID" | "API_KEY_SERVICE_BLOCKED")) => ErrorKind::Auth,
        Some("RESOURCE_EXHAUSTED") => ErrorKind::RateLimit,
        Some("INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE") if is_context_window(&e.message) => {
            ErrorKind::ContextWindow
        }
        Some("INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE") => ErrorKind::BadRequest,
        Some("UNAUTHENTICATED") => ErrorKind::Auth,
        Some("PERMISSION_DENIED") => ErrorKind::PermissionDenied,
        Some("NOT_FOUND") => ErrorKind::NotFound,
        Some("UNAVAILABLE" | "INTERNAL" | "UNKNOWN" | "DATA_LOSS" | "ABORTED") => ErrorKind::Server,
        Some("DEADLINE_EXCEEDED") => ErrorKind::Timeout,
        _ => kind_for_status(status),
    };
    ProviderError {
        kind,
        status: Some(status),
        message: if e.message.is_empty() {
            format!("upstream answered HTTP {status}")
        } else {
            e.message
        },
        param: None,
        code: e.status,
        retry_after: retry_after(headers).or_else(|| retry_delay(&e.details)),
    }
}
