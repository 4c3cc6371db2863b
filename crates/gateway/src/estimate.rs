//! Request size before sending, the one estimate every part of the gateway uses: key limits
//! and budget reservations (`limits`), Provider quotas and the `cheapest` strategy (`route`).
//!
//! [`Prompt::measure`] is one walk over the JSON, no allocation: the prompt's text bytes, its
//! token ids and items; [`Prompt::rough`] reads it as about three bytes a token, which
//! over-counts English slightly so that reservations err on the safe side. A real token count
//! ([`count`], tiktoken's `o200k_base`) is taken only when a prompt might not fit a backend's
//! context window: tokens are never more than bytes (every token stands for at least one byte),
//! so a prompt whose bytes fit the smallest window is never tokenized.
//!
//! A stream that ends before its usage event (the client left, the upstream cut or went silent)
//! is billed from what it consumed: its prompt counted with `o200k_base` ([`StreamPrompt`], kept
//! for that and counted only then) and the completion text of every chunk the client was sent
//! ([`Delivered`], tokenized the same way).
//!
//! Completions have two defaults, because they answer two questions: what a request will
//! probably cost ([`DEFAULT_COMPLETION`], for ranking backends by price) and what it can cost
//! at most ([`WORST_COMPLETION`], for a budget reservation). Both go through
//! [`Prompt::completion_or`].

use serde_json::Value;
use switchyard_providers::{Json, Operation};

use crate::o200k::O200k;

/// Tokens a prompt item (a chat message, an input string) costs besides its text.
const PER_ITEM: u64 = 4;
/// Tokens that prime the reply.
const REPLY_PRIMING: u64 = 3;
/// Bytes an inline image or audio clip (a `data:` URL over 1 KiB) counts for: it is priced per
/// item, not per byte of base64.
const MEDIA_BYTES: u64 = 3 * 1000;
/// Prompts larger than this are tokenized off the async workers.
const BLOCKING_BYTES: u64 = 64 * 1024;
/// The request fields a model reads as its prompt, whatever the operation.
const PROMPT_FIELDS: [&str; 7] = [
    "messages",
    "input",
    "prompt",
    "system",
    "tools",
    "functions",
    "instructions",
];
/// The request fields that bound the completion.
const COMPLETION_FIELDS: [&str; 3] = ["max_completion_tokens", "max_tokens", "max_output_tokens"];

/// Completion tokens a request is expected to produce when it sets no maximum: for ranking
/// backends by price (the `cheapest` strategy).
pub const DEFAULT_COMPLETION: u64 = 256;
/// Completion tokens a request may produce when neither the request (`max_tokens`) nor the
/// backend (`maxOutputTokens`) bounds them: for a budget reservation, which must not fall short.
pub const WORST_COMPLETION: u64 = 4096;

/// The size of a request's prompt.
#[derive(Debug, Default, Clone)]
pub struct Prompt {
    bytes: u64,
    /// Prompt items: messages, or one per field that is not a list.
    items: u64,
    /// Pre-tokenized input (arrays of token ids), counted as is.
    ids: u64,
    /// Requested completion maximum.
    pub max_completion: Option<u64>,
}

impl Prompt {
    /// Measures a request (one pass, no allocation).
    pub fn measure(request: &Json) -> Self {
        let mut p = Prompt::default();
        for field in PROMPT_FIELDS {
            if let Some(v) = request.get(field) {
                p.items = p.items.saturating_add(v.as_array().map_or(1, |a| a.len() as u64));
                walk(v, &mut p.bytes, &mut p.ids);
            }
        }
        p.max_completion = completion_cap(request);
        p
    }

    /// The prompt's tokens, estimated (about three bytes a token, plus a few per item): for
    /// limits, reservations, quotas and prices.
    pub fn rough(&self) -> u64 {
        self.bytes
            .div_ceil(3)
            .saturating_add(self.ids)
            .saturating_add(self.overhead())
    }

    /// A count the real one never exceeds.
    pub fn upper_bound(&self) -> u64 {
        self.bytes.saturating_add(self.ids).saturating_add(self.overhead())
    }

    /// A count the real one is never below: the tokens every item costs besides its text
    /// ([`count`] adds them to whatever the text counts).
    pub fn lower_bound(&self) -> u64 {
        self.overhead()
    }

    /// The prompt of a request with `items` prompt items, known before it is parsed (see
    /// [`crate::request::Outline`]): enough for [`Prompt::lower_bound`].
    pub fn of_items(items: u64) -> Self {
        Prompt {
            items,
            ..Prompt::default()
        }
    }

    /// Completion tokens to expect ([`DEFAULT_COMPLETION`] when the request sets no maximum).
    pub fn completion(&self) -> u64 {
        self.completion_or(DEFAULT_COMPLETION)
    }

    /// Completion tokens: the request's maximum, else `default` (see the module docs).
    pub fn completion_or(&self, default: u64) -> u64 {
        self.max_completion.unwrap_or(default)
    }

    fn overhead(&self) -> u64 {
        PER_ITEM.saturating_mul(self.items).saturating_add(REPLY_PRIMING)
    }
}

/// The completion bound the client set, if any.
pub fn completion_cap(request: &Json) -> Option<u64> {
    COMPLETION_FIELDS
        .iter()
        .find_map(|f| request.get(*f).and_then(Value::as_u64))
}

/// Adds the bytes of every string of a value (an inline image or audio clip as
/// [`MEDIA_BYTES`]) and counts integer token ids.
fn walk(v: &Value, bytes: &mut u64, ids: &mut u64) {
    match v {
        Value::String(s) if s.starts_with("data:") && s.len() > 1024 => *bytes = bytes.saturating_add(MEDIA_BYTES),
        Value::String(s) => *bytes = bytes.saturating_add(s.len() as u64),
        Value::Number(_) => *ids = ids.saturating_add(1),
        Value::Array(a) => a.iter().for_each(|x| walk(x, bytes, ids)),
        Value::Object(o) => o.values().for_each(|x| walk(x, bytes, ids)),
        Value::Bool(_) | Value::Null => {}
    }
}

/// A streamed request's prompt, for a stream that ends without the provider's prompt count: the
/// prompt fields are moved out of the request (not copied) when the stream starts, and counted
/// with `o200k_base` ([`count`]'s count) only if the stream ends without usage. A prompt over
/// [`BLOCKING_BYTES`] is not kept (not tokenized on an async worker, and not held for the life of
/// a stream): it is billed its rough estimate, which errs high.
#[derive(Debug)]
pub struct StreamPrompt {
    op: Operation,
    fields: Option<Json>,
    measured: Prompt,
}

impl StreamPrompt {
    /// Takes the prompt fields of `raw`, which is not read again.
    pub fn take(op: Operation, raw: &mut Json) -> Self {
        let measured = Prompt::measure(raw);
        let fields = (measured.bytes <= BLOCKING_BYTES)
            .then(|| PROMPT_FIELDS.iter().filter_map(|f| raw.remove_entry(*f)).collect());
        StreamPrompt { op, fields, measured }
    }

    /// The prompt's tokens: counted with `o200k_base` (as [`count`]), or the rough estimate of a
    /// prompt too large to keep.
    pub fn tokens(&self) -> u64 {
        match &self.fields {
            Some(fields) => count_now(self.op, fields, &self.measured),
            None => self.measured.rough(),
        }
    }
}

/// Whether the key that ends just before a `":` is one whose string value is completion text:
/// in a chat or completion chunk, a delta's `content`, `reasoning_content`, `refusal` and
/// tool-call `arguments`, a completion's `text`; in a Responses API stream, every text and
/// argument delta is a `delta` string (its `done` and `completed` events repeat the whole text,
/// which must not count twice). `key` runs up to the key's closing quote, excluded. Literal
/// needles, so that each comparison is a few loads rather than a call.
fn is_text_key(key: &[u8], responses: bool) -> bool {
    if responses {
        return key.ends_with(b"\"delta");
    }
    match key.last() {
        Some(b't') => key.ends_with(b"\"content") || key.ends_with(b"\"reasoning_content") || key.ends_with(b"\"text"),
        Some(b'l') => key.ends_with(b"\"refusal"),
        Some(b's') => key.ends_with(b"\"arguments"),
        _ => false,
    }
}

/// Completion tokens a stream delivered, counted from the chunks the client was sent (in
/// OpenAI's format, before the client's egress): the text of each chunk's completion fields,
/// found with a byte scan (no JSON parse) and tokenized with `o200k_base`. What a stream is
/// billed when it ended without the provider's usage.
///
/// The text is gathered and tokenized [`PENDING_BYTES`] at a time, and the rest only when the
/// count is asked for: most streams end with the provider's usage, and then their text is never
/// tokenized (tokenizing each chunk's word or two was a quarter of a stream's instructions).
#[derive(Debug, Default, Clone)]
pub struct Delivered {
    tokens: u64,
    /// Text not tokenized yet (whole UTF-8 pieces, escapes left in).
    pending: String,
    /// Counts a Responses API stream (`delta` strings) rather than chat or completion chunks.
    responses: bool,
}

/// The most completion text a stream holds untokenized.
const PENDING_BYTES: usize = 1024;

impl Delivered {
    /// Counts the chunks of a stream of `op`.
    pub fn new(op: Operation) -> Self {
        Self {
            tokens: 0,
            pending: String::new(),
            responses: op == Operation::Responses,
        }
    }

    /// Adds the completion text of one or more SSE events: one scan for the `":` that ends a
    /// key, the key before it compared with the text fields.
    pub fn add(&mut self, chunk: &[u8]) {
        for colon in memchr::memchr_iter(b':', chunk) {
            let Some(key) = chunk.get(..colon).and_then(|b| b.strip_suffix(b"\"")) else {
                continue;
            };
            if !is_text_key(key, self.responses) {
                continue;
            }
            if let Some(text) = string_at(chunk, colon + 1) {
                match std::str::from_utf8(text) {
                    Ok(text) => self.pending.push_str(text),
                    // Cut inside a character: bytes read as the rough estimate does.
                    Err(_) => self.tokens = self.tokens.saturating_add((text.len() as u64).div_ceil(3)),
                }
            }
        }
        if self.pending.len() >= PENDING_BYTES {
            self.tokens = self.tokens.saturating_add(text_tokens(&self.pending));
            self.pending.clear();
        }
    }

    /// Completion tokens delivered so far.
    pub fn tokens(&self) -> u64 {
        self.tokens.saturating_add(text_tokens(&self.pending))
    }
}

/// The JSON string (still escaped) that starts at `from` after optional whitespace, if a string
/// starts there.
fn string_at(b: &[u8], from: usize) -> Option<&[u8]> {
    let rest = b.get(from..)?;
    let start = rest.iter().position(|c| !c.is_ascii_whitespace())?;
    let rest = rest.get(start..)?.strip_prefix(b"\"")?;
    let mut i = 0;
    loop {
        i += memchr::memchr2(b'"', b'\\', rest.get(i..)?)?;
        if rest[i] == b'"' {
            return rest.get(..i);
        }
        i += 2;
    }
}

/// Tokens of a piece of completion text (escapes left in: an escaped quote or newline counts as
/// the two bytes it is on the wire, close enough for an estimate).
fn text_tokens(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    O200k::get().count(text) as u64
}

/// Whether the tokenizer is loaded ([`warm`] returned).
static WARM: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Loads the `o200k_base` tokenizer (once per process; later calls return at once).
pub fn warm() {
    let _ = O200k::get();
    WARM.store(true, std::sync::atomic::Ordering::Release);
}

/// Whether the tokenizer is loaded: until then a request that counts tokens waits for it.
pub fn warmed() -> bool {
    WARM.load(std::sync::atomic::Ordering::Acquire)
}

/// Counts a request's prompt tokens with `o200k_base`. Large prompts are counted with the
/// worker marked as blocking (its other tasks move to another thread meanwhile), from the
/// request where it is: a copy of a large request is what a hostile client would want.
pub async fn count(op: Operation, request: &Json, prompt: &Prompt) -> u64 {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if prompt.bytes <= BLOCKING_BYTES || !multi_thread {
        return count_now(op, request, prompt);
    }
    tokio::task::block_in_place(|| count_now(op, request, prompt))
}

fn count_now(op: Operation, request: &Json, prompt: &Prompt) -> u64 {
    let bpe = O200k::get();
    let mut tokens = 0u64;
    let mut ids = 0u64;
    let mut add = |s: &str| tokens += bpe.count(s) as u64;
    let keys: &[&str] = match op {
        Operation::Chat => &["messages", "tools"],
        Operation::Completions | Operation::Images => &["prompt"],
        Operation::Embeddings | Operation::Responses => &["input", "instructions"],
        Operation::Moderations => &["input"],
        Operation::Rerank => &["query", "documents"],
        Operation::Speech => &["input"],
        Operation::Transcriptions | Operation::Translations => &["prompt"],
    };
    for k in keys {
        if let Some(v) = request.get(*k) {
            visit(v, &mut add, &mut ids);
        }
    }
    tokens + ids + prompt.overhead()
}

/// Calls `text` on every string of a value that the model reads as text, and counts integer
/// token ids; skips media payloads and structural fields (the exact count's walk).
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

    #[test]
    fn a_stream_prompt_is_counted_with_the_tokenizer_unless_it_is_too_large() {
        let body = serde_json::json!({
            "model": "x",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "hello world, how are you today?"}
            ]
        });
        let mut raw = json(body.clone());
        let p = StreamPrompt::take(Operation::Chat, &mut raw);
        assert!(raw.get("messages").is_none(), "moved, not copied");
        assert_eq!(p.tokens(), 4 + 8 + 11);
        assert!(p.tokens() < Prompt::measure(&json(body)).rough());

        let big = "word ".repeat(BLOCKING_BYTES as usize / 5 + 1);
        let mut raw = json(serde_json::json!({"messages": [{"role": "user", "content": big}]}));
        let rough = Prompt::measure(&raw).rough();
        let p = StreamPrompt::take(Operation::Chat, &mut raw);
        assert!(raw.get("messages").is_some(), "a large prompt is left where it is");
        assert_eq!(p.tokens(), rough);
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
        let p = Prompt::measure(&req);
        let exact = count(Operation::Chat, &req, &p).await;
        // "You are terse." = 4 tokens, the question = 8; 2 messages x 4 + 3.
        assert_eq!(exact, 4 + 8 + 11);
        assert!(exact <= p.upper_bound());
        assert!(p.rough() <= p.upper_bound());
        assert_eq!(p.completion(), 50);
    }

    #[test]
    fn delivered_counts_the_completion_text_of_chunks() {
        let mut d = Delivered::new(Operation::Chat);
        d.add(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n");
        assert_eq!(d.tokens(), 0);
        // Two events in one chunk; an escaped quote does not end the string; no filter results.
        d.add(
            b"data: {\"choices\":[{\"delta\":{\"content\":\"Hello world\"},\"content_filter_results\":{}}]}\n\n\
              data: {\"choices\":[{\"delta\":{\"content\": \"say \\\"hi\\\"\"}}]}\n\n",
        );
        let first = d.tokens();
        assert!((4..=8).contains(&first), "{first}");
        d.add(b"data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"function\":{\"arguments\":\"{\\\"city\\\":\"}}]}}]}\n\n");
        assert!(d.tokens() > first);
        // Usage, finish reasons and `null` contents count nothing.
        let before = d.tokens();
        d.add(b"data: {\"choices\":[{\"delta\":{\"content\":null},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":9}}\n\n");
        assert_eq!(d.tokens(), before);
        // A string cut at the chunk's end counts what arrived, nothing past it.
        let mut cut = Delivered::new(Operation::Chat);
        cut.add(b"data: {\"choices\":[{\"delta\":{\"content\":\"never clo");
        assert_eq!(cut.tokens(), 0);

        let mut r = Delivered::new(Operation::Responses);
        r.add(b"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hello world\"}\n\n");
        r.add(b"event: response.output_text.done\ndata: {\"type\":\"response.output_text.done\",\"text\":\"Hello world\"}\n\n");
        assert_eq!(r.tokens(), 2);
    }

    #[tokio::test]
    async fn large_prompts_are_counted_off_thread() {
        let text = "lorem ipsum dolor sit amet ".repeat(5000);
        let req = json(serde_json::json!({"input": [text, [1, 2, 3]]}));
        let p = Prompt::measure(&req);
        let n = count(Operation::Embeddings, &req, &p).await;
        assert!(n > 20_000 && n < 40_000, "{n}");
        assert!(n <= p.upper_bound());
        assert_eq!(p.completion(), DEFAULT_COMPLETION);
    }
}
