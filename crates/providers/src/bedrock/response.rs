//! Bedrock answers: a Converse response and an InvokeModel embeddings response as OpenAI's.

use super::request::{embed_family, EmbedFamily};
use super::{epoch, fnv, protocol};
use crate::{ProviderError, Target, Translated, Usage};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Chat response

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ConverseResponse {
    #[serde(default)]
    output: Option<ConverseOutput>,
    #[serde(default)]
    stop_reason: String,
    #[serde(default)]
    usage: Option<TokenUsage>,
}

#[derive(Deserialize, Default)]
struct ConverseOutput {
    #[serde(default)]
    message: Option<OutputMessage>,
}

#[derive(Deserialize, Default)]
struct OutputMessage {
    #[serde(default)]
    content: Vec<OutputBlock>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct OutputBlock {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    tool_use: Option<ToolUse>,
    #[serde(default)]
    reasoning_content: Option<Reasoning>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolUse {
    tool_use_id: String,
    name: String,
    #[serde(default)]
    input: Value,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct Reasoning {
    #[serde(default)]
    reasoning_text: Option<ReasoningText>,
    /// The stream's spelling: `reasoningContent: {text}`.
    #[serde(default)]
    pub(super) text: Option<String>,
}

#[derive(Deserialize, Default)]
struct ReasoningText {
    #[serde(default)]
    text: String,
}

/// Bedrock's `TokenUsage`: `inputTokens` excludes the cache reads and writes reported beside it.
#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase")]
pub(super) struct TokenUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    cache_read_input_tokens: u64,
    #[serde(default)]
    cache_write_input_tokens: u64,
    /// The cache writes by how long they are kept (`ttl`: `5m` or `1h`).
    #[serde(default)]
    cache_details: Vec<CacheDetail>,
}

/// Bedrock's `CacheDetail`.
#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase")]
pub(super) struct CacheDetail {
    #[serde(default)]
    ttl: String,
    #[serde(default)]
    input_tokens: u64,
}

impl From<TokenUsage> for Usage {
    fn from(u: TokenUsage) -> Self {
        Usage {
            prompt_tokens: u
                .input_tokens
                .saturating_add(u.cache_read_input_tokens)
                .saturating_add(u.cache_write_input_tokens),
            completion_tokens: u.output_tokens,
            cached_tokens: u.cache_read_input_tokens,
            cache_write_tokens: u.cache_write_input_tokens,
            cache_write_1h_tokens: u
                .cache_details
                .iter()
                .filter(|d| d.ttl == "1h")
                .fold(0u64, |n, d| n.saturating_add(d.input_tokens))
                .min(u.cache_write_input_tokens),
            reasoning_tokens: 0,
        }
    }
}

pub(super) fn usage_json(u: &Usage) -> Value {
    u.openai_json()
}

/// OpenAI's `finish_reason` for a Converse `stopReason`.
pub(super) fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "guardrail_intervened" | "content_filtered" => "content_filter",
        // end_turn, stop_sequence, and anything newer.
        _ => "stop",
    }
}

pub(super) fn converse_response(body: &[u8], target: &Target<'_>) -> Result<Translated, ProviderError> {
    let parsed: ConverseResponse =
        serde_json::from_slice(body).map_err(|e| protocol(format!("upstream sent an unreadable response: {e}")))?;
    let (created, nanos) = epoch(target);
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut tool_calls = Vec::new();
    for block in parsed
        .output
        .and_then(|o| o.message)
        .map(|m| m.content)
        .unwrap_or_default()
    {
        if let Some(t) = block.text {
            text.push_str(&t);
        }
        if let Some(r) = block.reasoning_content {
            if let Some(t) = r.reasoning_text.map(|t| t.text).or(r.text) {
                reasoning.push_str(&t);
            }
        }
        if let Some(call) = block.tool_use {
            let arguments = if call.input.is_null() {
                "{}".to_owned()
            } else {
                call.input.to_string()
            };
            tool_calls.push(json!({
                "id": call.tool_use_id,
                "type": "function",
                "function": {"name": call.name, "arguments": arguments},
            }));
        }
    }
    let mut message = json!({"role": "assistant", "content": text, "refusal": null});
    if text.is_empty() && !tool_calls.is_empty() {
        message["content"] = Value::Null;
    }
    if !reasoning.is_empty() {
        message["reasoning_content"] = reasoning.into();
    }
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    let usage = parsed.usage.map(Usage::from);
    let mut out = json!({
        "id": format!("chatcmpl-{:016x}", fnv(nanos, body)),
        "object": "chat.completion",
        "created": created,
        "model": target.model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(&parsed.stop_reason),
        }],
    });
    if let Some(u) = &usage {
        out["usage"] = usage_json(u);
    }
    Ok(Translated {
        body: Bytes::from(out.to_string()),
        usage,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TitanEmbedding {
    embedding: Value,
    #[serde(default)]
    input_text_token_count: u64,
}

#[derive(Deserialize)]
struct CohereEmbeddings {
    /// `[[f32]]` (`embeddings_floats`) or `{"float": [[f32]], ...}` (`embeddings_by_type`).
    embeddings: Value,
    #[serde(default)]
    texts: Vec<String>,
    #[serde(default)]
    meta: Option<CohereMeta>,
}

#[derive(Deserialize)]
struct CohereMeta {
    #[serde(default)]
    billed_units: Option<CohereBilled>,
}

#[derive(Deserialize)]
struct CohereBilled {
    #[serde(default)]
    input_tokens: Option<u64>,
}

pub(super) fn embeddings_response(body: &[u8], target: &Target<'_>) -> Result<Translated, ProviderError> {
    let unreadable = |e: serde_json::Error| protocol(format!("upstream sent an unreadable embeddings response: {e}"));
    let (vectors, tokens) = match embed_family(target.model)? {
        EmbedFamily::Titan | EmbedFamily::TitanV2 => {
            let r: TitanEmbedding = serde_json::from_slice(body).map_err(unreadable)?;
            (vec![r.embedding], r.input_text_token_count)
        }
        EmbedFamily::Cohere => {
            let r: CohereEmbeddings = serde_json::from_slice(body).map_err(unreadable)?;
            let vectors = match r.embeddings {
                Value::Array(v) => v,
                Value::Object(mut by_type) => match by_type.remove("float") {
                    Some(Value::Array(v)) => v,
                    _ => return Err(protocol("upstream sent embeddings without float vectors")),
                },
                _ => return Err(protocol("upstream sent unreadable embeddings")),
            };
            // Bedrock reports Cohere's token count only in a header; estimate by words.
            let tokens = r
                .meta
                .and_then(|m| m.billed_units)
                .and_then(|b| b.input_tokens)
                .unwrap_or_else(|| {
                    r.texts
                        .iter()
                        .map(|t| (t.split_whitespace().count() as u64).max(1))
                        .sum()
                });
            (vectors, tokens)
        }
    };
    Ok(crate::embeddings_list(vectors, target.model, Some(tokens)))
}
