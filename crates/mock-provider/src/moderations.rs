//! `POST /v1/moderations` in OpenAI's shape, and in Mistral's for models named
//! `mistral-moderation*` (Mistral serves the same path at its own base URL; the mock tells the
//! two apart by the model).
//!
//! OpenAI: API reference "Moderations" (`input` a string, an array of strings, or an array of
//! `text` / `image_url` parts; `model` optional, default `omni-moderation-latest`; one result
//! per input with `flagged`, `categories`, `category_scores` and, for omni models,
//! `category_applied_input_types`). Mistral: API reference "Moderations" (`model` and `input`
//! required; results carry `categories` and `category_scores` under Mistral's own category
//! names, no `flagged`; `usage` in tokens).
//!
//! Verdicts are deterministic: a text holding `hurt` is flagged for violence, `hate` for hate.
//! Fault models (`mock-429`...) behave as on the chat endpoints.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Response, StatusCode, Uri};
use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::openai::{bad_request, fault_response, received_openai, success_headers, Flavor};
use crate::scenario::{self, Act, Behaviour, Plan};
use crate::state::MockState;
use crate::wire;

/// OpenAI's moderation categories, in the reference's order.
const OPENAI_CATEGORIES: [&str; 13] = [
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
];

/// Mistral's moderation categories.
const MISTRAL_CATEGORIES: [&str; 9] = [
    "sexual",
    "hate_and_discrimination",
    "violence_and_threats",
    "dangerous_and_criminal_content",
    "selfharm",
    "health",
    "financial",
    "law",
    "pii",
];

pub async fn moderations(State(state): State<MockState>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response<Body> {
    if let Err(res) = received_openai(&state, &uri, &headers, &body) {
        return res;
    }
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad_request(&format!("We could not parse the JSON body of your request. ({e})")),
    };
    let mistral = req["model"]
        .as_str()
        .is_some_and(|m| m.starts_with("mistral-moderation"));
    let model = match req.get("model") {
        None if !mistral => "omni-moderation-latest",
        Some(Value::String(m)) if !m.is_empty() => m.as_str(),
        _ => return bad_request("'model' must be a non-empty string"),
    };
    let Some(texts) = inputs(&req["input"]) else {
        return bad_request("'input' must be a string, an array of strings, or an array of text and image_url parts");
    };
    let plan = Plan::decide(&state, Behaviour::from_model(model), model, &headers).await;
    let tokens: u32 = texts.iter().map(|t| scenario::count_words(t)).sum::<u32>().max(1);
    if let Act::Fail(fault) = plan.act {
        return fault_response(Flavor::OpenAi, fault, model, tokens);
    }
    let id = format!("modr-mock{:016x}", state.next_id());
    let body = if mistral {
        let results: Vec<Value> = texts.iter().map(|t| mistral_result(t)).collect();
        json!({"id": id, "model": model, "results": results,
               "usage": {"prompt_tokens": tokens, "completion_tokens": 0, "total_tokens": tokens}})
    } else {
        let results: Vec<Value> = texts.iter().map(|t| openai_result(t)).collect();
        json!({"id": id, "model": model, "results": results})
    };
    let res = wire::json(StatusCode::OK, &success_headers(&state, Flavor::OpenAi), &body);
    wire::finish(res, plan.first_token_delay, false).await
}

/// The texts to judge, one per result: a string, strings, or parts (all text parts of a parts
/// array are one input; an image part is judged as empty text).
fn inputs(input: &Value) -> Option<Vec<String>> {
    match input {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_string) => {
            Some(items.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        }
        Value::Array(parts) if !parts.is_empty() => {
            let mut text = String::new();
            for p in parts {
                match p["type"].as_str() {
                    Some("text") => text.push_str(p["text"].as_str()?),
                    Some("image_url") if p["image_url"]["url"].is_string() => {}
                    _ => return None,
                }
            }
            Some(vec![text])
        }
        _ => None,
    }
}

fn verdict(text: &str, category: &str) -> bool {
    let t = text.to_ascii_lowercase();
    match category {
        "violence" | "violence_and_threats" => t.contains("hurt"),
        "hate" | "hate_and_discrimination" => t.contains("hate"),
        _ => false,
    }
}

fn openai_result(text: &str) -> Value {
    let mut categories = Map::new();
    let mut scores = Map::new();
    let mut applied = Map::new();
    for c in OPENAI_CATEGORIES {
        let hit = verdict(text, c);
        categories.insert(c.into(), hit.into());
        scores.insert(c.into(), json!(if hit { 0.97 } else { 0.0001 }));
        applied.insert(c.into(), json!(["text"]));
    }
    json!({
        "flagged": categories.values().any(|v| v == &Value::Bool(true)),
        "categories": categories,
        "category_scores": scores,
        "category_applied_input_types": applied,
    })
}

fn mistral_result(text: &str) -> Value {
    let mut categories = Map::new();
    let mut scores = Map::new();
    for c in MISTRAL_CATEGORIES {
        let hit = verdict(text, c);
        categories.insert(c.into(), hit.into());
        scores.insert(c.into(), json!(if hit { 0.97 } else { 0.0001 }));
    }
    json!({"categories": categories, "category_scores": scores})
}
