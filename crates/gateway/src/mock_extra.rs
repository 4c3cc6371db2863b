//! The in-gateway `mock` provider's answers beyond chat and embeddings: moderations in OpenAI's
//! shape (nothing flagged unless the text says `hurt`) and rerank in Cohere's (documents scored
//! by how many of the query's words they hold, best first). Deterministic, no network.

use bytes::Bytes;
use serde_json::{json, Value};
use switchyard_providers::{Json, Operation, Translated, Usage};

/// The answer to `op` (moderations or rerank) for `request`.
pub fn answer(op: Operation, request: &Json, model: &str) -> Translated {
    let words = |v: &Value| match v {
        Value::String(s) => s.split_whitespace().count() as u64,
        other => other.to_string().split_whitespace().count() as u64,
    };
    let (body, prompt_tokens) = if op == Operation::Rerank {
        rerank(request)
    } else {
        let inputs: Vec<Value> = match request.get("input") {
            Some(Value::Array(a)) if a.iter().all(Value::is_string) => a.clone(),
            Some(other) => vec![other.clone()],
            None => Vec::new(),
        };
        let results: Vec<Value> = inputs
            .iter()
            .map(|i| {
                let hit = i.to_string().to_ascii_lowercase().contains("hurt");
                json!({"flagged": hit, "categories": {"violence": hit}, "category_scores": {"violence": if hit { 0.97 } else { 0.0001 }}})
            })
            .collect();
        let tokens = inputs.iter().map(words).sum();
        (
            json!({"id": format!("modr-swy{:016x}", rand::random::<u64>()), "model": model, "results": results}),
            tokens,
        )
    };
    Translated {
        body: Bytes::from(body.to_string()),
        usage: Some(Usage {
            prompt_tokens,
            ..Usage::default()
        }),
    }
}

fn rerank(request: &Json) -> (Value, u64) {
    let query: Vec<String> = request
        .get("query")
        .and_then(Value::as_str)
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_ascii_lowercase)
        .collect();
    let docs: Vec<String> = match request.get("documents") {
        Some(Value::Array(d)) => d
            .iter()
            .map(|d| d.as_str().map_or_else(|| d.to_string(), str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    let mut scored: Vec<(usize, f64)> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let d = d.to_ascii_lowercase();
            let hits = query.iter().filter(|w| d.contains(w.as_str())).count();
            (i, hits as f64 / query.len().max(1) as f64)
        })
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let top = request
        .get("top_n")
        .and_then(Value::as_u64)
        .map_or(scored.len(), |n| n as usize);
    let results: Vec<Value> = scored
        .into_iter()
        .take(top)
        .map(|(index, score)| json!({"index": index, "relevance_score": score}))
        .collect();
    let tokens = query.len() as u64 + docs.iter().map(|d| d.split_whitespace().count() as u64).sum::<u64>();
    (
        json!({"id": format!("rerank-swy{:016x}", rand::random::<u64>()), "results": results,
               "meta": {"billed_units": {"search_units": 1}}}),
        tokens,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rerank_puts_the_best_match_first_and_moderation_flags_hurt() {
        let req: Json = serde_json::from_value(json!({
            "model": "m", "query": "capital of france", "top_n": 2,
            "documents": ["bananas", "Paris is the capital of France", "the capital"],
        }))
        .unwrap_or_default();
        let t = answer(Operation::Rerank, &req, "m");
        let v: Value = serde_json::from_slice(&t.body).unwrap_or_default();
        let order: Vec<u64> = v["results"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["index"].as_u64())
            .collect();
        assert_eq!(order, [1, 2]);
        let req: Json =
            serde_json::from_value(json!({"model": "m", "input": ["fine", "I will hurt you"]})).unwrap_or_default();
        let v: Value = serde_json::from_slice(&answer(Operation::Moderations, &req, "m").body).unwrap_or_default();
        assert_eq!(
            (
                v["results"][0]["flagged"].as_bool(),
                v["results"][1]["flagged"].as_bool()
            ),
            (Some(false), Some(true))
        );
    }
}
