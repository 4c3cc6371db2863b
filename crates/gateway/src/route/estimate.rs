//! Prompt size before sending: a cheap byte count on every request (for quotas and the
//! `cheapest` strategy), and a real token count with tiktoken's `o200k_base` only when a prompt
//! might not fit a backend's context window.
//!
//! Tokens are never more than bytes (every token stands for at least one byte), so a prompt whose
//! bytes fit the smallest window is never tokenized: the hot path stays a walk over the JSON.
//! Image, audio and file payloads are skipped: their base64 is not text tokens.

use serde_json::Value;
use switchyard_providers::{Json, Operation};

/// Tokens a chat message costs besides its text (role, separators), as OpenAI counts them.
const PER_MESSAGE: u64 = 4;
/// Tokens that prime the reply.
const REPLY_PRIMING: u64 = 3;
/// Prompts larger than this are tokenized off the async workers.
const BLOCKING_BYTES: usize = 64 * 1024;

/// Completion tokens assumed when a request sets no maximum (for cost and quota estimates).
pub const DEFAULT_COMPLETION: u64 = 256;

/// The text of a request's prompt, as the tokenizer would see it.
#[derive(Debug, Default, Clone)]
pub struct Prompt {
    bytes: usize,
    messages: u64,
    /// Pre-tokenized input (arrays of token ids), counted as is.
    ids: u64,
    /// Requested completion maximum.
    pub max_completion: Option<u64>,
}

impl Prompt {
    /// Measures a request (one pass, no allocation).
    pub fn measure(op: Operation, request: &Json) -> Self {
        let mut p = Prompt::default();
        match op {
            Operation::Chat => {
                if let Some(Value::Array(messages)) = request.get("messages") {
                    p.messages = messages.len() as u64;
                    for m in messages {
                        visit(m, &mut |s| p.bytes += s.len(), &mut p.ids);
                    }
                }
                if let Some(tools) = request.get("tools") {
                    visit(tools, &mut |s| p.bytes += s.len(), &mut p.ids);
                }
            }
            Operation::Completions => {
                if let Some(v) = request.get("prompt") {
                    visit(v, &mut |s| p.bytes += s.len(), &mut p.ids);
                }
            }
            Operation::Embeddings | Operation::Responses => {
                for k in ["input", "instructions"] {
                    if let Some(v) = request.get(k) {
                        visit(v, &mut |s| p.bytes += s.len(), &mut p.ids);
                    }
                }
            }
        }
        p.max_completion = ["max_completion_tokens", "max_tokens", "max_output_tokens"]
            .iter()
            .find_map(|k| request.get(*k).and_then(Value::as_u64));
        p
    }

    /// A rough count (four bytes a token), for quotas and prices.
    pub fn rough(&self) -> u64 {
        (self.bytes as u64).div_ceil(4) + self.ids + self.overhead()
    }

    /// A count the real one never exceeds.
    pub fn upper_bound(&self) -> u64 {
        self.bytes as u64 + self.ids + self.overhead()
    }

    /// Completion tokens to expect.
    pub fn completion(&self) -> u64 {
        self.max_completion.unwrap_or(DEFAULT_COMPLETION)
    }

    fn overhead(&self) -> u64 {
        if self.messages > 0 {
            self.messages * PER_MESSAGE + REPLY_PRIMING
        } else {
            0
        }
    }
}

/// Counts a request's prompt tokens with `o200k_base`. Large prompts are counted on a blocking
/// thread.
pub async fn count(op: Operation, request: &Json, prompt: &Prompt) -> u64 {
    if prompt.bytes <= BLOCKING_BYTES {
        return count_now(op, request, prompt);
    }
    let bound = prompt.upper_bound();
    let (request, prompt) = (request.clone(), prompt.clone());
    tokio::task::spawn_blocking(move || count_now(op, &request, &prompt))
        .await
        .unwrap_or(bound)
}

fn count_now(op: Operation, request: &Json, prompt: &Prompt) -> u64 {
    let bpe = tiktoken_rs::o200k_base_singleton();
    let mut tokens = 0u64;
    let mut ids = 0u64;
    let mut add = |s: &str| tokens += bpe.count_ordinary(s) as u64;
    let keys: &[&str] = match op {
        Operation::Chat => &["messages", "tools"],
        Operation::Completions => &["prompt"],
        Operation::Embeddings | Operation::Responses => &["input", "instructions"],
    };
    for k in keys {
        if let Some(v) = request.get(*k) {
            visit(v, &mut add, &mut ids);
        }
    }
    tokens + ids + prompt.overhead()
}

/// Calls `text` on every string of a value that the model reads as text, and counts integer
/// token ids; skips media payloads and structural fields.
fn visit(v: &Value, text: &mut impl FnMut(&str), ids: &mut u64) {
    match v {
        Value::String(s) => text(s),
        Value::Number(_) => *ids += 1,
        Value::Array(items) => {
            for i in items {
                visit(i, text, ids);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                match k.as_str() {
                    // Media and file payloads, and fields that are not model input.
                    "image_url" | "input_audio" | "file" | "file_data" | "image" | "audio" | "video" | "source"
                    | "cache_control" | "id" | "tool_call_id" | "type" | "role" => {}
                    _ => visit(v, text, ids),
                }
            }
        }
        Value::Bool(_) | Value::Null => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(v: serde_json::Value) -> Json {
        match v {
            Value::Object(m) => m,
            _ => Json::new(),
        }
    }

    #[tokio::test]
    async fn counts_text_and_bounds_it() {
        let req = json(serde_json::json!({
            "model": "x",
            "max_tokens": 50,
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": [
                    {"type": "text", "text": "hello world, how are you today?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAAAAAAAAAAAAAAAAAAAAAAAAAA"}}
                ]}
            ]
        }));
        let p = Prompt::measure(Operation::Chat, &req);
        let exact = count(Operation::Chat, &req, &p).await;
        // "You are terse." = 4 tokens, the question = 8; 2 messages x 4 + 3.
        assert_eq!(exact, 4 + 8 + 11);
        assert!(exact <= p.upper_bound());
        assert!(p.rough() <= p.upper_bound());
        assert_eq!(p.completion(), 50);
    }

    #[tokio::test]
    async fn large_prompts_are_counted_off_thread() {
        let text = "lorem ipsum dolor sit amet ".repeat(5000);
        let req = json(serde_json::json!({"input": [text, [1, 2, 3]]}));
        let p = Prompt::measure(Operation::Embeddings, &req);
        let n = count(Operation::Embeddings, &req, &p).await;
        assert!(n > 20_000 && n < 40_000, "{n}");
        assert!(n <= p.upper_bound());
        assert_eq!(p.completion(), DEFAULT_COMPLETION);
    }
}
