//! Jina AI: embeddings (`POST {base}/embeddings`) and rerank (`POST {base}/rerank`), base
//! `https://api.jina.ai/v1`, `Authorization: Bearer`. No chat.
//!
//! Embeddings are OpenAI's shape but for the names: Jina calls the encoding `embedding_type`
//! (`float`, `base64` — the same little-endian float32 bytes as OpenAI's —, `binary`,
//! `ubinary`; OpenAI: `encoding_format`) and has no `user`; `dimensions` is the same, and its own
//! fields (`task`, `late_chunking`, `truncate`, `normalized`) pass through. The answer is
//! OpenAI's list with `usage.{total_tokens, prompt_tokens}`. Rerank is translated by
//! [`crate::rerank`].
//!
//! Reference: Jina AI "Embedding API" and "Reranker API" (jina.ai/embeddings, jina.ai/reranker);
//! errors are `{"detail": "..."}` with the HTTP status.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use serde_json::{json, Value};
use switchyard_config::CredentialsConfig;

use crate::wire::{bad, encode, unreadable};
use crate::{
    kind_for_status, openai, rerank, retry_after, Adapter, ErrorKind, Json, Operation, ProviderError, StreamTranslator,
    Target, Translated, UpstreamRequest, Usage,
};

/// The Jina adapter.
#[derive(Clone, Copy, Debug)]
pub struct Jina;

/// Jina AI.
pub static JINA: Jina = Jina;

fn headers(target: &Target<'_>) -> Result<HeaderMap, ProviderError> {
    let mut h = HeaderMap::with_capacity(3);
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(http::header::ACCEPT, HeaderValue::from_static("application/json"));
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
    if let Some(format) = body.remove("encoding_format") {
        if format.as_str() == Some("base64") {
            body.insert("embedding_type".into(), format);
        }
    }
    Value::Object(body)
}

fn embeddings_response(body: &[u8]) -> Result<Translated, ProviderError> {
    let mut v: Value = serde_json::from_slice(body).map_err(unreadable)?;
    if !v["data"].is_array() {
        return Err(unreadable("an embeddings response without `data`"));
    }
    let tokens = v["usage"]["prompt_tokens"]
        .as_u64()
        .or_else(|| v["usage"]["total_tokens"].as_u64());
    v["usage"] = json!({"prompt_tokens": tokens.unwrap_or(0), "total_tokens": tokens.unwrap_or(0)});
    Ok(Translated {
        body: Bytes::from(v.to_string()),
        usage: tokens.map(|n| Usage {
            prompt_tokens: n,
            ..Usage::default()
        }),
    })
}

impl Adapter for Jina {
    fn build(
        &self,
        op: Operation,
        request: &Json,
        target: &Target<'_>,
        _stream: bool,
    ) -> Result<UpstreamRequest, ProviderError> {
        let (tail, body) = match op {
            Operation::Embeddings => ("embeddings", embeddings_request(request, target)),
            Operation::Rerank => ("rerank", rerank::jina_request(request, target)?),
            other => {
                return Err(bad(format!(
                    "jina backends serve /v1/embeddings and /v1/rerank only, not {}",
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
            Operation::Rerank => rerank::jina_response(body, &rerank::response_id(target)),
            other => Err(bad(format!("jina backends do not serve {}", other.path()))),
        }
    }

    fn stream(&self, _op: Operation, _target: &Target<'_>) -> Box<dyn StreamTranslator> {
        // Nothing Jina serves streams; `build` never asks for a stream.
        Box::new(openai::Passthrough::default())
    }

    fn credentials(&self, target: &Target<'_>) -> Result<HeaderMap, ProviderError> {
        headers(target)
    }

    fn error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        // `detail` is a string, or FastAPI's list of `{"loc", "msg"}` for a body it refuses.
        let message = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| match &v["detail"] {
                Value::String(s) if !s.is_empty() => Some(s.clone()),
                Value::Array(items) => items.first().and_then(|i| i["msg"].as_str()).map(str::to_owned),
                _ => None,
            });
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

    fn provider() -> ProviderConfig {
        serde_json::from_value(json!({
            "id": "default/j", "kind": "jina", "baseUrl": "https://api.jina.ai/v1",
            "credentials": {"type": "apiKey", "key": "jina_test"},
            "timeouts": {"connectMs": 1, "requestMs": 1, "streamIdleMs": 1},
            "circuitBreaker": {"consecutiveFailures": 1, "cooldownMs": 1},
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn target<'a>(p: &'a ProviderConfig, model: &'static str) -> Target<'a> {
        Target {
            provider: p,
            model,
            drop_unsupported_params: false,
            now: std::time::SystemTime::UNIX_EPOCH,
            bearer: None,
        }
    }

    #[test]
    fn embeddings_take_jina_names_and_give_openai_usage() {
        let p = provider();
        let target = target(&p, "jina-embeddings-v3");
        let req: Json = serde_json::from_value(json!({
            "model": "route", "input": ["a", "b"], "dimensions": 256, "encoding_format": "base64",
            "user": "u1", "task": "retrieval.passage",
        }))
        .unwrap_or_default();
        let up = JINA
            .build(Operation::Embeddings, &req, &target, false)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(up.url, "https://api.jina.ai/v1/embeddings");
        assert_eq!(up.headers["authorization"], "Bearer jina_test");
        insta::assert_json_snapshot!(
            "embeddings_request",
            serde_json::from_slice::<Value>(&up.body).unwrap_or_default()
        );
        // Jina's example answer (Embedding API), shortened.
        let answer = br#"{"model":"jina-embeddings-v3","object":"list","usage":{"total_tokens":6,"prompt_tokens":6},
            "data":[{"object":"embedding","index":0,"embedding":[-0.0125,0.0411]}]}"#;
        let t = JINA
            .parse(Operation::Embeddings, answer, &target)
            .unwrap_or_else(|e| panic!("{e}"));
        let v: Value = serde_json::from_slice(&t.body).unwrap_or_default();
        assert_eq!(v["usage"], json!({"prompt_tokens": 6, "total_tokens": 6}));
        assert_eq!(t.usage.map(|u| u.prompt_tokens), Some(6));
        let chat = JINA.build(Operation::Chat, &req, &target, false);
        assert!(chat.is_err_and(|e| e.message.contains("/v1/chat/completions")));
        let e = JINA.error(
            422,
            &HeaderMap::new(),
            br#"{"detail":[{"loc":["body","query"],"msg":"field required","type":"value_error.missing"}]}"#,
        );
        assert_eq!((e.kind, e.message.as_str()), (ErrorKind::BadRequest, "field required"));
    }

    #[test]
    fn rerank_speaks_cohere_names_and_refuses_what_jina_lacks() {
        let p = provider();
        let target = target(&p, "jina-reranker-v2-base-multilingual");
        let req: Json = serde_json::from_value(json!({
            "model": "route", "query": "Organic skincare products for sensitive skin", "top_n": 2,
            "documents": ["Organic skincare for sensitive skin with aloe vera and chamomile.",
                          {"text": "New makeup trends focus on bold colors."}],
        }))
        .unwrap_or_default();
        let up = JINA
            .build(Operation::Rerank, &req, &target, false)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(up.url, "https://api.jina.ai/v1/rerank");
        insta::assert_json_snapshot!(
            "rerank_request",
            serde_json::from_slice::<Value>(&up.body).unwrap_or_default()
        );
        let mut cohere_only = req.clone();
        cohere_only.insert("max_tokens_per_doc".into(), 512.into());
        let e = JINA.build(Operation::Rerank, &cohere_only, &target, false).err();
        assert_eq!(e.and_then(|e| e.param).as_deref(), Some("max_tokens_per_doc"));
        // Jina's example answer (Reranker API).
        let answer = br#"{"model":"jina-reranker-v2-base-multilingual","usage":{"total_tokens":815},
            "results":[{"index":0,"document":{"text":"Organic skincare for sensitive skin with aloe vera and chamomile."},"relevance_score":0.8783142566680908},
                       {"index":1,"relevance_score":0.1}]}"#;
        let t = JINA
            .parse(Operation::Rerank, answer, &target)
            .unwrap_or_else(|e| panic!("{e}"));
        insta::assert_json_snapshot!(
            "rerank_response",
            serde_json::from_slice::<Value>(&t.body).unwrap_or_default()
        );
        assert_eq!(t.usage.map(|u| u.prompt_tokens), Some(815));
    }
}
