//! Response: Anthropic message -> OpenAI chat.completion.

use crate::{ErrorKind, Json, ProviderError, Translated, Usage};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Response: Anthropic message -> OpenAI chat.completion.

/// Anthropic's usage object, in a message, `message_start` or `message_delta` (where any field
/// may be absent or null).
#[derive(Deserialize, Default, Clone, Copy, Debug)]
pub struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    /// The cache writes split by how long they are kept (`cache_creation_input_tokens` is their
    /// sum); a 1-hour write costs 2x input, a 5-minute one 1.25x.
    #[serde(default)]
    cache_creation: Option<WireCacheCreation>,
}

/// Anthropic's `usage.cache_creation`.
#[derive(Deserialize, Default, Clone, Copy, Debug)]
pub struct WireCacheCreation {
    #[serde(default)]
    ephemeral_1h_input_tokens: Option<u64>,
}

/// Running token counts of one response.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Counts {
    input: u64,
    output: u64,
    cache_read: u64,
    cache_write: u64,
    cache_write_1h: u64,
}

impl Counts {
    /// Takes the fields a usage object carries; counts in `message_delta` are cumulative.
    pub(super) fn merge(&mut self, u: &WireUsage) {
        if let Some(v) = u.input_tokens {
            self.input = v;
        }
        if let Some(v) = u.output_tokens {
            self.output = v;
        }
        if let Some(v) = u.cache_read_input_tokens {
            self.cache_read = v;
        }
        if let Some(v) = u.cache_creation_input_tokens {
            self.cache_write = v;
        }
        if let Some(v) = u.cache_creation.and_then(|c| c.ephemeral_1h_input_tokens) {
            self.cache_write_1h = v;
        }
    }

    pub(super) fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self
                .input
                .saturating_add(self.cache_read)
                .saturating_add(self.cache_write),
            completion_tokens: self.output,
            cached_tokens: self.cache_read,
            cache_write_tokens: self.cache_write,
            cache_write_1h_tokens: self.cache_write_1h.min(self.cache_write),
            reasoning_tokens: 0,
        }
    }
}

/// OpenAI's usage object for a [`Usage`].
pub(crate) fn openai_usage(u: &Usage) -> Value {
    u.openai_json()
}

#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    content: Vec<WireBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireBlock {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    Thinking {
        #[serde(default)]
        thinking: String,
    },
    /// Redacted thinking, server tool blocks and blocks of later API versions.
    #[serde(other)]
    Other,
}

/// OpenAI's `finish_reason` for Anthropic's `stop_reason`.
pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, pause_turn.
        _ => "stop",
    }
}

pub(super) fn protocol(message: impl std::fmt::Display) -> ProviderError {
    ProviderError::new(
        ErrorKind::Protocol,
        format!("upstream sent an unreadable response: {message}"),
    )
}

/// Translates an Anthropic message into an OpenAI `chat.completion`.
pub fn response_to_openai(body: &[u8], created: u64) -> Result<Translated, ProviderError> {
    let msg: WireMessage = serde_json::from_slice(body).map_err(protocol)?;
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut tool_calls = Vec::new();
    for block in msg.content {
        match block {
            WireBlock::Text { text: t } => text.push_str(&t),
            WireBlock::Thinking { thinking } => reasoning.push_str(&thinking),
            WireBlock::ToolUse { id, name, input } => {
                let arguments = if input.is_null() {
                    "{}".to_owned()
                } else {
                    input.to_string()
                };
                tool_calls.push(json!({
                    "id": id,
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }));
            }
            WireBlock::Other => {}
        }
    }
    let mut message = Json::new();
    message.insert("role".into(), "assistant".into());
    message.insert(
        "content".into(),
        if text.is_empty() && !tool_calls.is_empty() {
            Value::Null
        } else {
            text.into()
        },
    );
    message.insert("refusal".into(), Value::Null);
    if !reasoning.is_empty() {
        message.insert("reasoning_content".into(), reasoning.into());
    }
    if !tool_calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(tool_calls));
    }
    let usage = msg.usage.map(|u| {
        let mut c = Counts::default();
        c.merge(&u);
        c.usage()
    });
    let mut out = json!({
        "id": msg.id,
        "object": "chat.completion",
        "created": created,
        "model": msg.model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": msg.stop_reason.as_deref().map(finish_reason),
        }],
    });
    if let (Some(u), Some(o)) = (&usage, out.as_object_mut()) {
        o.insert("usage".into(), openai_usage(u));
    }
    let body = serde_json::to_vec(&out).map_err(protocol)?;
    Ok(Translated {
        body: Bytes::from(body),
        usage,
    })
}
