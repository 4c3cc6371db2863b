//! `/v1/rerank` (and `/v2/rerank`): Cohere's rerank request and response are the client's shape,
//! the de facto standard (LiteLLM, vLLM and Jina speak it too). This module turns the client's
//! request into each provider's and the answers back.
//!
//! The client's request: `model`, `query`, `documents` (strings, or objects: their `text`, else
//! the object as JSON text, as Cohere's v1 API took them), `top_n`, `max_tokens_per_doc`,
//! `return_documents`. The answer: `{"id", "results": [{"index", "relevance_score",
//! "document"?}], "meta": {"billed_units": ...}}`, results by relevance.
//!
//! Usage: Cohere bills rerank by search (a query over up to 100 documents) and reports
//! `meta.billed_units.search_units`; that count is reported as prompt tokens, so a rerank
//! backend's `pricing.input` on Cohere is the price of a million searches (the built-in table
//! lists Cohere's per-search prices that way: $2,000 for rerank-v3.5's $2 per 1,000). A Cohere
//! answer without search units is counted by its `billed_units.input_tokens`. Voyage bills
//! tokens (`usage.total_tokens`), which are prompt tokens as for embeddings, and so does Jina.
//! Bedrock's Rerank API reports no usage; Bedrock bills a query over up to 100 documents (more
//! count as one query per 100), so that count is reported as prompt tokens, priced like
//! Cohere's searches (the built-in table: $1,000 a million for amazon.rerank-v1:0).
//!
//! References: Cohere API reference v2 "Rerank" (`POST /v2/rerank`, `V2RerankResponse`); Voyage AI
//! API reference "Rerankers" (`POST /v1/rerank`: `query`, `documents`, `model`, `top_k`,
//! `return_documents`, `truncation`; answer `{"object": "list", "data": [{"relevance_score",
//! "index", "document"?}], "model", "usage": {"total_tokens"}}`); Jina AI "Reranker API"
//! (`POST /v1/rerank`: `model`, `query`, `documents`, `top_n`, `return_documents`; answer
//! `{"model", "usage": {"total_tokens"}, "results": [{"index", "document": {"text"}?,
//! "relevance_score"}]}`); Amazon Bedrock API reference "Rerank" (Agents for Amazon Bedrock
//! Runtime, `POST /rerank`: `queries` (exactly one `{"type": "TEXT", "textQuery": {"text"}}`),
//! `sources` (1 to 1,000 `{"type": "INLINE", "inlineDocumentSource": {"type": "TEXT"|"JSON",
//! "textDocument"|"jsonDocument"}}`), `rerankingConfiguration` (`{"type":
//! "BEDROCK_RERANKING_MODEL", "bedrockRerankingConfiguration": {"modelConfiguration":
//! {"modelArn"}, "numberOfResults"}}`); answer `{"results": [{"index", "relevanceScore",
//! "document"}], "nextToken"?}`) and the Bedrock pricing page (rerank queries).
//!
//! Bedrock's `nextToken` is followed: [`bedrock_next_token`] says there is a next page, the
//! adapter asks for it, and [`bedrock_join`] joins the pages' results before they are translated.

use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::wire::{bad_param, unreadable};
use crate::{Json, ProviderError, Target, Translated, Usage};

/// The documents as the strings every provider takes.
fn documents(request: &Json) -> Result<Vec<Value>, ProviderError> {
    let Some(Value::Array(docs)) = request.get("documents") else {
        return Err(bad_param("'documents' must be an array of strings", "documents"));
    };
    Ok(docs
        .iter()
        .map(|d| match d {
            Value::String(_) => d.clone(),
            Value::Object(o) => o
                .get("text")
                .filter(|t| t.is_string())
                .cloned()
                .unwrap_or_else(|| d.to_string().into()),
            other => other.to_string().into(),
        })
        .collect())
}

fn query(request: &Json) -> Result<Value, ProviderError> {
    match request.get("query") {
        Some(q @ Value::String(_)) => Ok(q.clone()),
        _ => Err(bad_param("'query' must be a string", "query")),
    }
}

/// Cohere's `/v2/rerank` body. v2 takes strings only and has no `return_documents` (the
/// documents come back by index); `priority` passes through.
pub fn cohere_request(request: &Json, target: &Target<'_>) -> Result<Value, ProviderError> {
    let mut body = json!({"model": target.model, "query": query(request)?, "documents": documents(request)?});
    for field in ["top_n", "max_tokens_per_doc", "priority"] {
        if let Some(v) = request.get(field) {
            body[field] = v.clone();
        }
    }
    Ok(body)
}

/// Cohere's answer is the client's shape already; only its billed search units are read.
pub fn cohere_response(body: &[u8]) -> Result<Translated, ProviderError> {
    let v: Value = serde_json::from_slice(body).map_err(unreadable)?;
    if !v["results"].is_array() {
        return Err(unreadable("a rerank response without `results`"));
    }
    // Per search where Cohere bills searches (rerank v3.5 and v4), else per input token.
    let billed = &v["meta"]["billed_units"];
    let searches = billed["search_units"]
        .as_f64()
        .or_else(|| billed["input_tokens"].as_f64());
    Ok(Translated {
        body: Bytes::copy_from_slice(body),
        usage: searches.map(|n| Usage {
            prompt_tokens: n.ceil() as u64,
            ..Usage::default()
        }),
    })
}

/// Voyage's `/v1/rerank` body.
pub fn voyage_request(request: &Json, target: &Target<'_>) -> Result<Value, ProviderError> {
    let mut body = json!({"model": target.model, "query": query(request)?, "documents": documents(request)?});
    if let Some(n) = request.get("top_n") {
        body["top_k"] = n.clone();
    }
    for field in ["return_documents", "truncation"] {
        if let Some(v) = request.get(field) {
            body[field] = v.clone();
        }
    }
    Ok(body)
}

/// Voyage's answer in Cohere's shape.
pub fn voyage_response(body: &[u8], id: &str) -> Result<Translated, ProviderError> {
    let v: Value = serde_json::from_slice(body).map_err(unreadable)?;
    let Some(data) = v["data"].as_array() else {
        return Err(unreadable("a rerank response without `data`"));
    };
    let results = data
        .iter()
        .map(|r| cohere_result(&r["index"], &r["relevance_score"], r["document"].as_str()))
        .collect();
    usage_in_tokens(id, results, v["usage"]["total_tokens"].as_u64())
}

/// One result in Cohere's shape: `index`, `relevance_score`, and the document's text if given.
fn cohere_result(index: &Value, score: &Value, text: Option<&str>) -> Value {
    let mut out = Map::new();
    out.insert("index".into(), index.clone());
    out.insert("relevance_score".into(), score.clone());
    if let Some(text) = text {
        out.insert("document".into(), json!({"text": text}));
    }
    Value::Object(out)
}

/// A rerank answer's id, for providers whose answers carry none.
pub fn response_id(target: &Target<'_>) -> String {
    format!(
        "rerank-{:x}",
        target
            .now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    )
}

/// Jina's `/v1/rerank` body: Cohere's names, documents as strings. Jina returns the documents
/// unless told not to, Cohere v2 never does: `return_documents` is false unless the client asks.
pub fn jina_request(request: &Json, target: &Target<'_>) -> Result<Value, ProviderError> {
    let mut body = json!({"model": target.model, "query": query(request)?, "documents": documents(request)?,
                          "return_documents": false});
    for field in ["top_n", "return_documents"] {
        if let Some(v) = request.get(field) {
            body[field] = v.clone();
        }
    }
    refuse_others(
        request,
        &["model", "query", "documents", "top_n", "return_documents"],
        "jina",
        target,
    )?;
    Ok(body)
}

/// Jina's answer in Cohere's shape (its results are Cohere's already; the id is ours).
pub fn jina_response(body: &[u8], id: &str) -> Result<Translated, ProviderError> {
    let v: Value = serde_json::from_slice(body).map_err(unreadable)?;
    let Some(results) = v["results"].as_array() else {
        return Err(unreadable("a rerank response without `results`"));
    };
    let results = results
        .iter()
        .map(|r| cohere_result(&r["index"], &r["relevance_score"], r["document"]["text"].as_str()))
        .collect();
    usage_in_tokens(id, results, v["usage"]["total_tokens"].as_u64())
}

fn usage_in_tokens(id: &str, results: Vec<Value>, tokens: Option<u64>) -> Result<Translated, ProviderError> {
    let out = json!({
        "id": id,
        "results": results,
        "meta": {"billed_units": {"input_tokens": tokens.unwrap_or(0)}},
    });
    Ok(Translated {
        body: Bytes::from(out.to_string()),
        usage: tokens.map(|n| Usage {
            prompt_tokens: n,
            ..Usage::default()
        }),
    })
}

/// Refuses the client's fields a provider has no equivalent for (Cohere's `max_tokens_per_doc`,
/// `priority`...), unless the route drops unsupported parameters.
fn refuse_others(request: &Json, known: &[&str], provider: &str, target: &Target<'_>) -> Result<(), ProviderError> {
    match request
        .iter()
        .find(|(k, v)| !v.is_null() && !known.contains(&k.as_str()))
    {
        Some((k, _)) if !target.drop_unsupported_params => Err(ProviderError::unsupported_param(provider, k)),
        _ => Ok(()),
    }
}

/// Documents a Bedrock Rerank query covers: billed per 100.
const BEDROCK_DOCUMENTS_PER_QUERY: usize = 100;

/// The Agents for Amazon Bedrock Runtime `Rerank` body. The model is named by its foundation
/// model ARN in the provider's region (an ARN given as the backend's model is kept). Documents
/// that are JSON objects without a `text` go as JSON documents, which Bedrock takes.
pub fn bedrock_request(request: &Json, target: &Target<'_>, region: &str) -> Result<Value, ProviderError> {
    refuse_others(
        request,
        &["model", "query", "documents", "top_n", "return_documents"],
        "bedrock",
        target,
    )?;
    let Some(Value::Array(raw)) = request.get("documents") else {
        return Err(bad_param("'documents' must be an array of strings", "documents"));
    };
    if raw.is_empty() || raw.len() > 1000 {
        return Err(bad_param("bedrock rerank takes 1 to 1000 documents", "documents"));
    }
    let sources: Vec<Value> = raw
        .iter()
        .zip(documents(request)?)
        .map(|(original, text)| {
            let document = match original {
                Value::Object(o) if !o.get("text").is_some_and(Value::is_string) => {
                    json!({"type": "JSON", "jsonDocument": original})
                }
                _ => json!({"type": "TEXT", "textDocument": {"text": text}}),
            };
            json!({"type": "INLINE", "inlineDocumentSource": document})
        })
        .collect();
    let arn = if target.model.starts_with("arn:") {
        target.model.to_owned()
    } else {
        format!("arn:aws:bedrock:{region}::foundation-model/{}", target.model)
    };
    let mut config = json!({"modelConfiguration": {"modelArn": arn}});
    if let Some(n) = request.get("top_n").filter(|n| !n.is_null()) {
        match n.as_u64() {
            Some(n) if n >= 1 => config["numberOfResults"] = n.into(),
            _ => return Err(bad_param("'top_n' must be a positive integer", "top_n")),
        }
    }
    Ok(json!({
        "queries": [{"type": "TEXT", "textQuery": {"text": query(request)?}}],
        "sources": sources,
        "rerankingConfiguration": {"type": "BEDROCK_RERANKING_MODEL", "bedrockRerankingConfiguration": config},
    }))
}

/// The `nextToken` of a Bedrock Rerank answer: more results are left.
pub fn bedrock_next_token(answer: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Page {
        #[serde(default, rename = "nextToken")]
        next_token: Option<String>,
    }
    serde_json::from_slice::<Page>(answer)
        .ok()?
        .next_token
        .filter(|t| !t.is_empty())
}

/// Two pages of a Bedrock Rerank answer as one: the results of both, in order, and the later
/// page's `nextToken` (if any).
pub fn bedrock_join(so_far: &[u8], next: &[u8]) -> Result<Bytes, ProviderError> {
    let mut joined: Value = serde_json::from_slice(so_far).map_err(unreadable)?;
    let mut page: Value = serde_json::from_slice(next).map_err(unreadable)?;
    let Some(more) = page
        .get_mut("results")
        .and_then(Value::as_array_mut)
        .map(std::mem::take)
    else {
        return Err(unreadable("a rerank page without `results`"));
    };
    let Some(results) = joined.get_mut("results").and_then(Value::as_array_mut) else {
        return Err(unreadable("a rerank response without `results`"));
    };
    results.extend(more);
    match page.get("nextToken") {
        Some(token) => joined["nextToken"] = token.clone(),
        None => {
            if let Some(o) = joined.as_object_mut() {
                o.remove("nextToken");
            }
        }
    }
    Ok(Bytes::from(joined.to_string()))
}

/// Bedrock's answer in Cohere's shape, its documents returned only when the client asked.
/// Usage: one query per 100 documents sent (`documents`), as Bedrock bills.
pub fn bedrock_response(
    body: &[u8],
    id: &str,
    documents: usize,
    with_documents: bool,
) -> Result<Translated, ProviderError> {
    let v: Value = serde_json::from_slice(body).map_err(unreadable)?;
    let Some(results) = v["results"].as_array() else {
        return Err(unreadable("a rerank response without `results`"));
    };
    let results: Vec<Value> = results
        .iter()
        .map(|r| {
            let d = &r["document"];
            let text = with_documents
                .then(|| {
                    d["textDocument"]["text"]
                        .as_str()
                        .map(str::to_owned)
                        .or_else(|| d.get("jsonDocument").map(Value::to_string))
                })
                .flatten();
            cohere_result(&r["index"], &r["relevanceScore"], text.as_deref())
        })
        .collect();
    let queries = documents.div_ceil(BEDROCK_DOCUMENTS_PER_QUERY).max(1) as u64;
    let out = json!({"id": id, "results": results, "meta": {"billed_units": {"search_units": queries}}});
    Ok(Translated {
        body: Bytes::from(out.to_string()),
        usage: Some(Usage {
            prompt_tokens: queries,
            ..Usage::default()
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_config::ProviderConfig;

    fn provider() -> ProviderConfig {
        serde_json::from_value(json!({
            "id": "default/p", "kind": "cohere", "baseUrl": "https://api.cohere.com",
            "timeouts": {"connectMs": 1, "requestMs": 1, "streamIdleMs": 1},
            "circuitBreaker": {"consecutiveFailures": 1, "cooldownMs": 1},
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn request() -> Json {
        serde_json::from_value(json!({
            "model": "route", "query": "What is the capital of the United States?", "top_n": 2,
            "documents": ["Carson City is the capital city of the American state of Nevada.",
                          {"text": "Washington, D.C. is the capital of the United States."},
                          {"title": "Saipan"}],
            "return_documents": true,
        }))
        .unwrap_or_default()
    }

    #[test]
    fn requests_take_each_providers_names() {
        let p = provider();
        let target = Target {
            provider: &p,
            model: "rerank-v3.5",
            drop_unsupported_params: false,
            now: std::time::SystemTime::UNIX_EPOCH,
            bearer: None,
        };
        let c = cohere_request(&request(), &target).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c["model"], "rerank-v3.5");
        assert_eq!(c["top_n"], 2);
        assert_eq!(
            c["documents"][1],
            "Washington, D.C. is the capital of the United States."
        );
        assert_eq!(c["documents"][2], r#"{"title":"Saipan"}"#);
        assert!(c.get("return_documents").is_none(), "v2 has no return_documents");
        let v = voyage_request(&request(), &target).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (v["top_k"].as_u64(), v["return_documents"].as_bool()),
            (Some(2), Some(true))
        );
        assert!(v.get("top_n").is_none());
        let mut no_query = request();
        no_query.remove("query");
        assert_eq!(
            cohere_request(&no_query, &target)
                .err()
                .and_then(|e| e.param)
                .as_deref(),
            Some("query")
        );
    }

    /// Cohere's example response (API reference v2 "Rerank") and Voyage's (API reference
    /// "Rerankers", with `return_documents: true`).
    #[test]
    fn responses_come_back_in_cohere_shape_with_their_usage() {
        let cohere = br#"{"results":[{"index":3,"relevance_score":0.999071},{"index":4,"relevance_score":0.7867867}],
            "id":"07734bd2-2473-4f07-94e1-0d9f0e6843cf","meta":{"api_version":{"version":"2","is_experimental":false},
            "billed_units":{"search_units":1}}}"#;
        let t = cohere_response(cohere).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.usage.map(|u| u.prompt_tokens), Some(1));
        assert_eq!(&t.body[..], &cohere[..]);

        let voyage = br#"{"object":"list","data":[{"relevance_score":0.4375,"index":0,"document":"The Mediterranean diet emphasizes fish."},
            {"relevance_score":0.421875,"index":1,"document":"Photosynthesis in plants."}],"model":"rerank-2","usage":{"total_tokens":26}}"#;
        let t = voyage_response(voyage, "rr-1").unwrap_or_else(|e| panic!("{e}"));
        let v: Value = serde_json::from_slice(&t.body).unwrap_or_default();
        assert_eq!(v["id"], "rr-1");
        assert_eq!(v["results"][0]["index"], 0);
        assert_eq!(v["results"][0]["relevance_score"], 0.4375);
        assert_eq!(v["results"][1]["document"]["text"], "Photosynthesis in plants.");
        assert_eq!(t.usage.map(|u| u.prompt_tokens), Some(26));
        assert!(voyage_response(b"{}", "x").is_err());
    }
}
