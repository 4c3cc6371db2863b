//! Bedrock errors: response status, `x-amzn-errortype` and stream exceptions to [`ProviderError`].

use crate::{kind_for_status, retry_after, ErrorKind, ProviderError};
use http::HeaderMap;
use serde::Deserialize;

// ---------------------------------------------------------------------------------------------
// Errors

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default, alias = "Message")]
    message: Option<String>,
    #[serde(default, rename = "__type")]
    kind: Option<String>,
}

/// Whether a ValidationException says the prompt does not fit the model.
fn is_context_overflow(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "too long",
        "max tokens",
        "too many input tokens",
        "max input tokens",
        "maximum context",
        "context length",
        "context window",
    ]
    .iter()
    .any(|needle| m.contains(needle))
}

/// The kind of a Bedrock error type (`ThrottlingException`, or the stream's
/// `throttlingException`), `None` when unknown.
fn kind_of_type(error_type: &str, message: &str) -> Option<ErrorKind> {
    Some(match error_type.to_ascii_lowercase().as_str() {
        "throttlingexception" | "servicequotaexceededexception" | "toomanyrequestsexception" => ErrorKind::RateLimit,
        "validationexception" if is_context_overflow(message) => ErrorKind::ContextWindow,
        "validationexception" | "conflictexception" | "serializationexception" => ErrorKind::BadRequest,
        "accessdeniedexception" => ErrorKind::PermissionDenied,
        "resourcenotfoundexception" => ErrorKind::NotFound,
        "serviceunavailableexception"
        | "modelnotreadyexception"
        | "internalserverexception"
        | "internalfailure"
        | "modelerrorexception"
        | "modelstreamerrorexception" => ErrorKind::Server,
        "modeltimeoutexception" => ErrorKind::Timeout,
        "unrecognizedclientexception"
        | "invalidsignatureexception"
        | "incompletesignatureexception"
        | "missingauthenticationtokenexception"
        | "expiredtokenexception"
        | "invalidclienttokenid"
        | "signaturedoesnotmatch" => ErrorKind::Auth,
        _ => return None,
    })
}

/// An error from a Bedrock error type and message (stream exceptions have no status).
pub(super) fn error_of_type(error_type: &str, message: String, status: Option<u16>) -> ProviderError {
    let kind = kind_of_type(error_type, &message).unwrap_or_else(|| status.map_or(ErrorKind::Server, kind_for_status));
    ProviderError {
        status,
        code: Some(error_type.to_owned()),
        ..ProviderError::new(kind, message)
    }
}

/// Maps a non-2xx Bedrock response: the type in `x-amzn-errortype` (`Type:namespace`), the text
/// in `{"message": ...}`.
pub fn bedrock_error(status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError {
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let error_type = headers
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(':').next().unwrap_or(v).trim().to_owned())
        .or_else(|| {
            parsed
                .kind
                .as_deref()
                .map(|k| k.rsplit('#').next().unwrap_or(k).to_owned())
        })
        .filter(|t| !t.is_empty());
    let message = parsed
        .message
        .unwrap_or_else(|| format!("upstream answered HTTP {status}"));
    let mut err = match error_type {
        Some(t) => error_of_type(&t, message, Some(status)),
        None => ProviderError {
            status: Some(status),
            ..ProviderError::new(kind_for_status(status), message)
        },
    };
    err.retry_after = retry_after(headers);
    err
}
