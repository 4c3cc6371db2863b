//! The in-gateway `mock` provider's content: deterministic replies, OpenAI-shaped bodies and
//! stream chunks, and real usage numbers (one token per whitespace-separated word). Pure: the
//! gateway applies the configured latency and pacing.

use bytes::Bytes;
use serde_json::{json, Value};
use switchyard_config::MockConfig;

use crate::{Json, Usage};

/// Words of the text content of a message `content` (string or parts).
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

/// Prompt tokens of a chat request: words of every message (at least 1).
pub fn prompt_tokens(request: &Json) -> u64 {
    let n: u64 = request
        .get("messages")
        .and_then(Value::as_array)
        .map(|msgs| {
            msgs.iter()
                .map(|m| words(&content_text(m.get("content").unwrap_or(&Value::Null))))
                .sum()
        })
        .unwrap_or(0);
    n.max(1)
}

/// The reply: the configured text, or an echo of the last user message.
pub fn reply(request: &Json, config: &MockConfig) -> String {
    if let Some(r) = &config.response {
        return r.clone();
    }
    let last_user = request
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|msgs| {
            msgs.iter()
                .rev()
                .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        })
        .map(|m| content_text(m.get("content").unwrap_or(&Value::Null)))
        .unwrap_or_default();
    format!("Hello! You said: {last_user}")
}

/// Usage of a reply.
pub fn usage(request: &Json, reply: &str) -> Usage {
    Usage {
        prompt_tokens: prompt_tokens(request),
        completion_tokens: words(reply).max(1),
        cached_tokens: 0,
        cache_write_tokens: 0,
        cache_write_1h_tokens: 0,
        reasoning_tokens: 0,
    }
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total(),
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    })
}

/// A `chat.completion` body.
pub fn completion(id: &str, model: &str, created: u64, text: &str, usage: &Usage) -> Bytes {
    let body = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": null},
            "logprobs": null,
            "finish_reason": "stop",
        }],
        "usage": usage_json(usage),
        "system_fingerprint": "switchyard-mock",
    });
    Bytes::from(body.to_string())
}

/// The pieces a streamed reply is sent in: one word each, spacing kept.
pub fn stream_pieces(text: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut current = String::new();
    for (i, w) in text.split(' ').enumerate() {
        if i > 0 {
            current.push(' ');
        }
        current.push_str(w);
        pieces.push(std::mem::take(&mut current));
    }
    pieces
}

/// One `chat.completion.chunk` SSE event. `delta` is the content piece; `first` adds the role;
/// `finish` sets the finish reason (with an empty delta).
pub fn chunk(id: &str, model: &str, created: u64, delta: Option<&str>, first: bool, finish: bool) -> Bytes {
    let mut d = serde_json::Map::new();
    if first {
        d.insert("role".into(), "assistant".into());
    }
    if let Some(text) = delta {
        d.insert("content".into(), text.into());
    }
    let body = json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": "switchyard-mock",
        "choices": [{
            "index": 0,
            "delta": d,
            "logprobs": null,
            "finish_reason": if finish { Value::from("stop") } else { Value::Null },
        }],
    });
    crate::sse::data(body.to_string().as_bytes())
}

/// The final usage chunk (`choices: []`), as OpenAI sends with `include_usage`.
pub fn usage_chunk(id: &str, model: &str, created: u64, usage: &Usage) -> Bytes {
    let body = json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": "switchyard-mock",
        "choices": [],
        "usage": usage_json(usage),
    });
    crate::sse::data(body.to_string().as_bytes())
}

/// Inputs of an embeddings request as strings.
fn embedding_inputs(request: &Json) -> Vec<String> {
    match request.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// A deterministic unit vector derived from the text.
fn vector(text: &str, dims: usize) -> Vec<f32> {
    // FNV-1a seeded xorshift: stable across platforms and releases.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut v: Vec<f32> = (0..dims)
        .map(|_| {
            h ^= h << 13;
            h ^= h >> 7;
            h ^= h << 17;
            ((h % 2000) as f32 / 1000.0) - 1.0
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::EPSILON);
    for x in &mut v {
        *x /= norm;
    }
    v
}

/// An embeddings response and its usage; `None` when `input` is missing or empty.
pub fn embeddings(request: &Json, model: &str, config: &MockConfig) -> Option<(Bytes, Usage)> {
    let inputs = embedding_inputs(request);
    if inputs.is_empty() {
        return None;
    }
    let dims = request
        .get("dimensions")
        .and_then(Value::as_u64)
        .map_or(config.embedding_dimensions as usize, |d| d as usize)
        .clamp(1, 4096);
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| json!({"object": "embedding", "index": i, "embedding": vector(text, dims)}))
        .collect();
    let prompt: u64 = inputs.iter().map(|t| words(t).max(1)).sum();
    let usage = Usage {
        prompt_tokens: prompt,
        ..Usage::default()
    };
    let body = json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
    });
    Some((Bytes::from(body.to_string()), usage))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: Value) -> Json {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn echoes_and_counts_words() {
        let r = req(
            json!({"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}]}),
        );
        let text = reply(&r, &MockConfig::default());
        assert_eq!(text, "Hello! You said: hi there");
        let u = usage(&r, &text);
        assert_eq!((u.prompt_tokens, u.completion_tokens), (4, 5));
        assert_eq!(stream_pieces(&text).concat(), text);
        assert_eq!(stream_pieces(&text).len(), 5);
    }

    #[test]
    fn embeddings_are_deterministic_unit_vectors() {
        let r = req(json!({"input": ["a b", "c"]}));
        let cfg = MockConfig {
            embedding_dimensions: 8,
            ..Default::default()
        };
        let (a, usage) = embeddings(&r, "m", &cfg).unwrap();
        let (b, _) = embeddings(&r, "m", &cfg).unwrap();
        assert_eq!(a, b);
        assert_eq!(usage.prompt_tokens, 3);
        let v: Value = serde_json::from_slice(&a).unwrap();
        let first: Vec<f64> = v["data"][0]["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(first.len(), 8);
        let norm: f64 = first.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3);
    }
}
