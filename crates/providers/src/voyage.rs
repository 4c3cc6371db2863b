//! Voyage AI: embeddings (`POST {base}/embeddings`) and rerank (`POST {base}/rerank`), base
//! `https://api.voyageai.com/v1`. No chat.
//!
//! Embeddings are close to OpenAI's: the same `input` and `model`, the same list of
//! `{"object": "embedding", "embedding", "index"}`; Voyage names the size `output_dimension`
//! (OpenAI: `dimensions`), takes `encoding_format` only as `base64` (the same little-endian
//! float32 bytes as OpenAI's; the default is floats), has no `user`, and reports only
//! `usage.total_tokens`. Its own parameters (`input_type`, `truncation`, `output_dtype`) pass
//! through. Rerank is translated by [`crate::rerank`].
//!
//! Reference: Voyage AI API reference "Text embedding models" and "Rerankers"; errors are
//! `{"detail": "..."}` with the HTTP status.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use serde_json::{json, Value};
use switchyard_config::CredentialsConfig;

use crate::wire::{bad, encode, unreadable};
use crate::{
    kind_for_status, openai, rerank, retry_after, Adapter, ErrorKind, Json, Operation, ProviderError, StreamTranslator,
    Target, Translated, UpstreamRequest, Usage,
};

/// The Voyage adapter.
#[derive(Clone, Copy, Debug)]
pub struct Voyage;

/// Voyage AI.
pub static VOYAGE: Voyage = Voyage;

fn headers(target: &Target<'_>) -> Result<HeaderMap, ProviderError> {
    let mut h = HeaderMap::with_capacity(2);
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(CredentialsConfig::ApiKey { key }) = &target.provider.credentials {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
            .map_err(|_| ProviderError::new(ErrorKind::Auth, "the provider's API key is not a valid header value"))?;
        value.set_sensitive(true);
        h.insert(http::header::AUTHORIZATION, value);
    }
    Ok(h)
}

fn embeddings_request(request: &Json, target: &Target<'_>) -> Value {
    let mut body = request.clone();
    body.insert("model".into(), target.model.into());
    body.remove("user");
    if let Some(d) = body.remove("dimensions") {
        body.insert("output_dimension".into(), d);
    }
    if body.get("encoding_format").and_then(Value::as_str) != Some("base64") {
        body.remove("encoding_format");
    }
    Value::Object(body)
}

fn embeddings_response(body: &[u8]) -> Result<Translated, ProviderError> {
    let mut v: Value = serde_json::from_slice(body).map_err(unreadable)?;
    if !v["data"].is_array() {
        return Err(unreadable("an embeddings response without `data`"));
    }
    let tokens = v["usage"]["total_tokens"].as_u64();
    v["usage"] = json!({"prompt_tokens": tokens.unwrap_or(0), "total_tokens": tokens.unwrap_or(0)});
    Ok(Translated {
        body: Bytes::from(v.to_string()),
        usage: tokens.map(|n| Usage {
            prompt_tokens: n,
            ..Usage::default()
        }),
    })
}

impl Adapter for Voyage {
    fn build(
        &self,
        op: Operation,
        request: &Json,
        target: &Target<'_>,
        _stream: bool,
    ) -> Result<UpstreamRequest, ProviderError> {
        let (tail, body) = match op {
            Operation::Embeddings => ("embeddings", embeddings_request(request, target)),
            Operation::Rerank => ("rerank", rerank::voyage_request(request, target)?),
            other => {
                return Err(bad(format!(
                    "voyage backends serve /v1/embeddings and /v1/rerank only, not {}",
                    other.path()
                )))
            }
        };
        Ok(UpstreamRequest {
            method: Method::POST,
            url: format!("{}/{tail}", target.provider.base_url.trim_end_matches('/')),
            headers: headers(target)?,
            body: encode(&body)?,
        })
    }

    fn parse(&self, op: Operation, body: &[u8], target: &Target<'_>) -> Result<Translated, ProviderError> {
        match op {
            Operation::Embeddings => embeddings_response(body),
            Operation::Rerank => rerank::voyage_response(body, &rerank::response_id(target)),
            other => Err(bad(format!("voyage backends do not serve {}", other.path()))),
        }
    }

    fn stream(&self, _op: Operation, _target: &Target<'_>) -> Box<dyn StreamTranslator> {
        // Nothing Voyage serves streams; `build` never asks for a stream.
        Box::new(openai::Passthrough::default())
    }

    fn credentials(&self, target: &Target<'_>) -> Result<HeaderMap, ProviderError> {
        headers(target)
    }

    fn error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        let message = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v["detail"].as_str().map(str::to_owned))
            .filter(|m| !m.is_empty());
        ProviderError {
            kind: kind_for_status(status),
            status: Some(status),
            message: message.unwrap_or_else(|| format!("upstream answered HTTP {status}")),
            param: None,
            code: None,
            retry_after: retry_after(headers),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_config::ProviderConfig;

    #[test]
    fn embeddings_take_voyage_names_and_give_openai_usage() {
        let p: ProviderConfig = serde_json::from_value(json!({
            "id": "default/v", "kind": "voyage", "baseUrl": "https://api.voyageai.com/v1",
            "credentials": {"type": "apiKey", "key": "pa-test"},
            "timeouts": {"connectMs": 1, "requestMs": 1, "streamIdleMs": 1},
            "circuitBreaker": {"consecutiveFailures": 1, "cooldownMs": 1},
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let target = Target {
            provider: &p,
            model: "voyage-3.5",
            drop_unsupported_params: false,
            now: std::time::SystemTime::UNIX_EPOCH,
            bearer: None,
        };
        let req: Json = serde_json::from_value(json!({
            "model": "route", "input": ["a", "b"], "dimensions": 256, "encoding_format": "float",
            "user": "u1", "input_type": "document",
        }))
        .unwrap_or_default();
        let up = VOYAGE
            .build(Operation::Embeddings, &req, &target, false)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(up.url, "https://api.voyageai.com/v1/embeddings");
        assert_eq!(up.headers["authorization"], "Bearer pa-test");
        let body: Value = serde_json::from_slice(&up.body).unwrap_or_default();
        assert_eq!(
            body,
            json!({"model": "voyage-3.5", "input": ["a", "b"], "output_dimension": 256, "input_type": "document"})
        );
        // Voyage's example response (API reference "Text embedding models").
        let answer = br#"{"object":"list","data":[{"object":"embedding","embedding":[-0.0135,0.0295],"index":0}],
            "model":"voyage-3.5","usage":{"total_tokens":10}}"#;
        let t = VOYAGE
            .parse(Operation::Embeddings, answer, &target)
            .unwrap_or_else(|e| panic!("{e}"));
        let v: Value = serde_json::from_slice(&t.body).unwrap_or_default();
        assert_eq!(v["usage"], json!({"prompt_tokens": 10, "total_tokens": 10}));
        assert_eq!(v["data"][0]["embedding"][1], 0.0295);
        assert_eq!(t.usage.map(|u| u.prompt_tokens), Some(10));
        let chat = VOYAGE.build(Operation::Chat, &req, &target, false);
        assert!(chat.is_err_and(|e| e.message.contains("/v1/chat/completions")));
        let e = VOYAGE.error(429, &HeaderMap::new(), br#"{"detail":"Rate limit exceeded"}"#);
        assert_eq!(
            (e.kind, e.message.as_str()),
            (ErrorKind::RateLimit, "Rate limit exceeded")
        );
    }
}
