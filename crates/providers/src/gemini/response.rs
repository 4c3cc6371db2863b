//! Gemini answers: `GenerateContentResponse` and embeddings responses in OpenAI's shape.

use super::{unix_seconds, SIGNATURE_SEPARATOR};
use crate::wire::{encode, unreadable};
use crate::{ErrorKind, Json, ProviderError, Target, Translated, Usage};
use serde::Deserialize;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Chat response
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct GenerateResponse {
    #[serde(default)]
    pub(super) candidates: Vec<Candidate>,
    #[serde(default)]
    pub(super) prompt_feedback: Option<PromptFeedback>,
    #[serde(default)]
    pub(super) usage_metadata: Option<UsageMetadata>,
    #[serde(default)]
    pub(super) model_version: Option<String>,
    #[serde(default)]
    pub(super) response_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Candidate {
    #[serde(default)]
    pub(super) content: Option<Content>,
    #[serde(default)]
    pub(super) finish_reason: Option<String>,
    #[serde(default)]
    pub(super) index: Option<u32>,
}

#[derive(Deserialize)]
pub(super) struct Content {
    #[serde(default)]
    parts: Vec<Part>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Part {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thought: Option<bool>,
    #[serde(default)]
    thought_signature: Option<String>,
    #[serde(default)]
    function_call: Option<FunctionCall>,
}

#[derive(Deserialize)]
struct FunctionCall {
    name: String,
    #[serde(default)]
    args: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PromptFeedback {
    #[serde(default)]
    pub(super) block_reason: Option<String>,
    #[serde(default)]
    pub(super) block_reason_message: Option<String>,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "camelCase")]
pub(super) struct UsageMetadata {
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    candidates_token_count: u64,
    #[serde(default)]
    cached_content_token_count: u64,
    #[serde(default)]
    thoughts_token_count: u64,
    #[serde(default)]
    tool_use_prompt_token_count: u64,
}

impl UsageMetadata {
    /// Thinking tokens are billed as output, as OpenAI counts reasoning tokens in completions.
    pub(super) fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_token_count.saturating_add(self.tool_use_prompt_token_count),
            completion_tokens: self.candidates_token_count.saturating_add(self.thoughts_token_count),
            cached_tokens: self.cached_content_token_count,
            cache_write_tokens: 0,
            cache_write_1h_tokens: 0,
            reasoning_tokens: self.thoughts_token_count,
        }
    }

    pub(super) fn json(&self) -> Value {
        let u = self.usage();
        json!({
            "prompt_tokens": u.prompt_tokens,
            "completion_tokens": u.completion_tokens,
            "total_tokens": u.total(),
            "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": self.thoughts_token_count},
        })
    }
}

pub(super) fn blocked(feedback: &PromptFeedback) -> Option<ProviderError> {
    let reason = feedback.block_reason.as_deref()?;
    let mut message = format!("Gemini blocked the prompt ({reason})");
    if let Some(m) = feedback.block_reason_message.as_deref().filter(|m| !m.is_empty()) {
        message.push_str(": ");
        message.push_str(m);
    }
    Some(ProviderError {
        code: Some(reason.to_owned()),
        ..ProviderError::new(ErrorKind::ContentPolicy, message)
    })
}

pub(super) fn finish_reason(reason: &str, tool_calls: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION" => "content_filter",
        _ if tool_calls => "tool_calls",
        _ => "stop",
    }
}

/// One candidate's content in OpenAI terms.
#[derive(Default)]
pub(super) struct Turn {
    pub(super) text: String,
    pub(super) reasoning: String,
    pub(super) tool_calls: Vec<Value>,
}

/// Translates parts; `next_call` numbers tool calls across the response.
pub(super) fn turn(content: Option<&Content>, next_call: &mut usize) -> Turn {
    let mut t = Turn::default();
    for part in content.map(|c| c.parts.as_slice()).unwrap_or_default() {
        if let Some(call) = &part.function_call {
            let mut id = format!("call_{next_call}");
            *next_call += 1;
            if let Some(sig) = part.thought_signature.as_deref().filter(|s| !s.is_empty()) {
                id.push_str(SIGNATURE_SEPARATOR);
                id.push_str(sig);
            }
            let args = call.args.clone().unwrap_or_else(|| json!({}));
            t.tool_calls.push(json!({
                "id": id,
                "type": "function",
                "function": {"name": call.name, "arguments": args.to_string()},
            }));
        } else if let Some(text) = &part.text {
            if part.thought == Some(true) {
                t.reasoning.push_str(text);
            } else {
                t.text.push_str(text);
            }
        }
    }
    t
}

pub(super) fn chat_id(response_id: Option<&str>, created: u64) -> String {
    match response_id {
        Some(id) if !id.is_empty() => format!("chatcmpl-{id}"),
        _ => format!("chatcmpl-gemini-{created}"),
    }
}

pub(super) fn chat_response(body: &[u8], target: &Target<'_>) -> Result<Translated, ProviderError> {
    let r: GenerateResponse = serde_json::from_slice(body).map_err(unreadable)?;
    if r.candidates.is_empty() {
        if let Some(e) = r.prompt_feedback.as_ref().and_then(blocked) {
            return Err(e);
        }
    }
    let created = unix_seconds(target.now);
    let mut next_call = 0;
    let mut choices = Vec::with_capacity(r.candidates.len());
    for (i, c) in r.candidates.iter().enumerate() {
        let t = turn(c.content.as_ref(), &mut next_call);
        let mut message = Json::new();
        message.insert("role".into(), "assistant".into());
        let content = if t.text.is_empty() && (!t.tool_calls.is_empty() || c.content.is_none()) {
            Value::Null
        } else {
            Value::String(t.text)
        };
        message.insert("content".into(), content);
        if !t.reasoning.is_empty() {
            message.insert("reasoning_content".into(), t.reasoning.into());
        }
        let has_calls = !t.tool_calls.is_empty();
        if has_calls {
            message.insert("tool_calls".into(), Value::Array(t.tool_calls));
        }
        message.insert("refusal".into(), Value::Null);
        choices.push(json!({
            "index": c.index.unwrap_or(i as u32),
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(c.finish_reason.as_deref().unwrap_or("STOP"), has_calls),
        }));
    }
    let usage = r.usage_metadata;
    let mut out = json!({
        "id": chat_id(r.response_id.as_deref(), created),
        "object": "chat.completion",
        "created": created,
        "model": r.model_version.as_deref().unwrap_or(target.model),
        "choices": choices,
    });
    if let Some(u) = &usage {
        out["usage"] = u.json();
    }
    Ok(Translated {
        body: encode(&out)?,
        usage: usage.map(|u| u.usage()),
    })
}

#[derive(Deserialize)]
struct Values {
    #[serde(default)]
    values: Vec<Value>,
}

#[derive(Deserialize)]
struct EmbedResponse {
    /// `embedContent`.
    #[serde(default)]
    embedding: Option<Values>,
    /// `batchEmbedContents`.
    #[serde(default)]
    embeddings: Option<Vec<Values>>,
    /// Vertex `predict`.
    #[serde(default)]
    predictions: Option<Vec<Prediction>>,
}

#[derive(Deserialize)]
struct Prediction {
    embeddings: PredictionEmbedding,
}

#[derive(Deserialize)]
struct PredictionEmbedding {
    #[serde(default)]
    values: Vec<Value>,
    #[serde(default)]
    statistics: Option<Statistics>,
}

#[derive(Deserialize)]
struct Statistics {
    #[serde(default)]
    token_count: f64,
}

pub(super) fn embed_response(body: &[u8], target: &Target<'_>) -> Result<Translated, ProviderError> {
    let r: EmbedResponse = serde_json::from_slice(body).map_err(unreadable)?;
    let mut tokens = None;
    let vectors: Vec<Vec<Value>> = if let Some(one) = r.embedding {
        vec![one.values]
    } else if let Some(many) = r.embeddings {
        many.into_iter().map(|e| e.values).collect()
    } else if let Some(predictions) = r.predictions {
        let mut n = 0u64;
        let v = predictions
            .into_iter()
            .map(|p| {
                n = n.saturating_add(p.embeddings.statistics.map_or(0, |s| s.token_count as u64));
                p.embeddings.values
            })
            .collect();
        tokens = Some(n);
        v
    } else {
        return Err(unreadable("no embeddings in the response"));
    };
    Ok(crate::embeddings_list(vectors, target.model, tokens))
}
