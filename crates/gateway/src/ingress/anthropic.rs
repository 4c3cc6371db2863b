//! Anthropic's Messages API (`/v1/messages`), for clients that speak it: the body is
//! translated to an OpenAI chat request, routed like any other, and answered in Anthropic's
//! shape, errors and streams included. The translations themselves are pure and live in
//! `switchyard_providers::anthropic::ingress`; this file only plugs them in.

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::HeaderValue;
use switchyard_providers::anthropic::ingress;
use switchyard_providers::{ErrorKind, Json, Operation, ProviderError};

use super::{Codec, Egress};
use crate::error::GatewayError;
use crate::request::Request;

/// The Anthropic Messages codec.
pub(crate) static ANTHROPIC: Anthropic = Anthropic;

/// See the module docs.
pub(crate) struct Anthropic;

impl Codec for Anthropic {
    fn name(&self) -> &'static str {
        "anthropic"
    }

    fn parse(&self, op: Operation, body: &[u8]) -> Result<Request, GatewayError> {
        let native: Json = serde_json::from_slice(body).map_err(|e| {
            GatewayError::bad_request(format!("We could not parse the JSON body of your request ({e})."), None)
        })?;
        let converted = ingress::request_to_openai(&native)
            .map_err(|e| GatewayError::bad_request(e.message, e.param.as_deref()))?;
        Request::from_json(op, converted)
    }

    fn error(&self, e: GatewayError) -> Response {
        let kind = match e.status.as_u16() {
            401 => ErrorKind::Auth,
            403 => ErrorKind::PermissionDenied,
            404 => ErrorKind::NotFound,
            429 => ErrorKind::RateLimit,
            504 => ErrorKind::Timeout,
            s if s >= 500 => ErrorKind::Server,
            _ => ErrorKind::BadRequest,
        };
        let (_, body) = ingress::error_body(kind, &e.message);
        let mut r = Response::new(Body::from(body));
        *r.status_mut() = e.status;
        r.headers_mut()
            .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(ra) = e.retry_after {
            if let Ok(v) = HeaderValue::from_str(&ra.as_secs_f64().ceil().max(1.0).to_string()) {
                r.headers_mut().insert(http::header::RETRY_AFTER, v);
            }
        }
        r
    }

    fn body(&self, openai: Bytes, request: &Request) -> Result<Bytes, ProviderError> {
        ingress::response_from_openai(&openai, &request.model)
    }

    fn stream(&self, request: &Request) -> Egress {
        // The translator needs the usage chunk for its `message_delta`.
        Egress::Translate(Box::new(ingress::StreamFromOpenAi::new(request.model.clone())))
    }

    fn stream_error(&self, kind: ErrorKind, e: &GatewayError) -> Bytes {
        ingress::error_event(kind, &e.message)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn messages_become_an_openai_chat_request_and_errors_keep_anthropics_shape() {
        let body = br#"{"model":"claude","max_tokens":5,"system":"be brief","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
        let r = ANTHROPIC.parse(Operation::Chat, body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((r.model.as_str(), r.stream, r.max_tokens), ("claude", true, Some(5)));
        assert_eq!(
            r.raw["messages"].as_array().map(Vec::len),
            Some(2),
            "the system prompt is a message"
        );
        assert!(matches!(ANTHROPIC.stream(&r), Egress::Translate(_)));

        let refused = ANTHROPIC.error(GatewayError::rate_limited(
            "slow down",
            Some(Duration::from_millis(1500)),
        ));
        assert_eq!(refused.status(), 429);
        assert_eq!(refused.headers()["retry-after"], "2");
        let body = axum::body::to_bytes(refused.into_body(), 1 << 16)
            .await
            .unwrap_or_default();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], "rate_limit_error");
        assert_eq!(body["error"]["message"], "slow down");
    }
}
