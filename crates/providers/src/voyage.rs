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

use serde_json::Value;

use crate::embed_rerank::EmbedRerank;
use crate::{rerank, Json, Target};

/// Voyage AI.
pub static VOYAGE: EmbedRerank = EmbedRerank {
    name: "voyage",
    accept_json: false,
    embeddings_request,
    embeddings_tokens,
    rerank_request: rerank::voyage_request,
    rerank_response: rerank::voyage_response,
};

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

fn embeddings_tokens(v: &Value) -> Option<u64> {
    v["usage"]["total_tokens"].as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Adapter, ErrorKind, Operation};
    use http::HeaderMap;
    use serde_json::json;
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
