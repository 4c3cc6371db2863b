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

use serde_json::Value;

use crate::embed_rerank::EmbedRerank;
use crate::{rerank, Json, Target};

/// Jina AI.
pub static JINA: EmbedRerank = EmbedRerank {
    name: "jina",
    accept_json: true,
    embeddings_request,
    embeddings_tokens,
    rerank_request: rerank::jina_request,
    rerank_response: rerank::jina_response,
};

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

fn embeddings_tokens(v: &Value) -> Option<u64> {
    v["usage"]["prompt_tokens"]
        .as_u64()
        .or_else(|| v["usage"]["total_tokens"].as_u64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Adapter, ErrorKind, Operation};
    use http::HeaderMap;
    use serde_json::json;
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
