//! What a request asks the mock to do, decided by the model name alone, and the
//! provider-neutral answer (text or tool call, token counts) every wire format renders.
//!
//! Nothing here knows a wire format; the provider modules turn a [`Plan`] and an [`Answer`]
//! into their own bodies, headers and errors.

use std::time::Duration;

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::state::MockState;

/// The tool `mock-tool` calls.
pub const TOOL_NAME: &str = "get_weather";
/// Its arguments, as the JSON text providers put on the wire.
pub const TOOL_ARGUMENTS: &str = r#"{"city":"Paris"}"#;
/// The same arguments cut the way streaming APIs deliver them: partial JSON deltas.
pub const TOOL_ARGUMENT_DELTAS: [&str; 5] = ["{\"", "city", "\":\"", "Paris", "\"}"];
/// Completion tokens reported for the tool call (the name and the arguments).
pub const TOOL_TOKENS: u32 = 2;
/// The text providers that answer a refusal with a message use.
pub const REFUSAL_TEXT: &str = "I'm sorry, but I can't help with that request.";
/// Default delay before the first token for `mock-slow`.
pub const DEFAULT_SLOW: Duration = Duration::from_secs(2);
/// Token frames `mock-cut` sends before breaking the connection.
pub const CUT_AFTER: usize = 3;
/// Default embedding dimension.
pub const DEFAULT_DIMENSIONS: usize = 8;

/// A failure the mock answers with instead of a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `mock-429`: 429 with `retry-after: 1`.
    RateLimited,
    /// `mock-500` and the first N requests of `mock-flaky-N`.
    Internal,
    /// `mock-503`.
    Unavailable,
    /// `mock-context-length`: 400 in the provider's context-window shape.
    ContextLength,
}

/// What the mock does for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// Reply "Hello! You said: <last user text>".
    Reply,
    /// Call the tool `get_weather` with `{"city":"Paris"}`.
    Tool,
    /// Reply with the JSON of the received request body.
    Echo,
    /// The provider's content-filter refusal.
    Refuse,
    /// Reply, but break the connection after three token frames.
    Cut,
    /// Fail before answering.
    Fail(Fault),
}

/// The behaviour a model name selects, before per-request state (flaky counts) is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    Normal,
    RateLimited,
    ServerError,
    Unavailable,
    ContextLength,
    ContentPolicy,
    Slow(Duration),
    Cut,
    Tool,
    Flaky(u64),
    EchoParams,
}

impl Behaviour {
    /// Reads the behaviour from a model name. Names are matched anywhere in the string, so
    /// `gpt-4o-mock-429`, `us.mock-tool-v1:0` and `publishers/x/models/mock-cut` all work.
    pub fn from_model(model: &str) -> Behaviour {
        let Some(start) = model.find("mock-") else {
            return Behaviour::Normal;
        };
        let name = &model[start..];
        if name.starts_with("mock-429") {
            Behaviour::RateLimited
        } else if name.starts_with("mock-500") {
            Behaviour::ServerError
        } else if name.starts_with("mock-503") {
            Behaviour::Unavailable
        } else if name.starts_with("mock-context-length") {
            Behaviour::ContextLength
        } else if name.starts_with("mock-content-policy") {
            Behaviour::ContentPolicy
        } else if let Some(rest) = name.strip_prefix("mock-slow") {
            Behaviour::Slow(parse_slow_suffix(rest).unwrap_or(DEFAULT_SLOW))
        } else if name.starts_with("mock-cut") {
            Behaviour::Cut
        } else if name.starts_with("mock-tool") {
            Behaviour::Tool
        } else if let Some(rest) = name.strip_prefix("mock-flaky-") {
            let digits: &str = &rest[..rest.bytes().take_while(u8::is_ascii_digit).count()];
            digits.parse().map_or(Behaviour::Normal, Behaviour::Flaky)
        } else if name.starts_with("mock-echo-params") {
            Behaviour::EchoParams
        } else {
            // Another "mock-" further on may still name a behaviour.
            Behaviour::from_model(&name[5..])
        }
    }

    /// The first behaviour named by any of `names` (Azure looks at the deployment, then the
    /// body's model).
    pub fn from_models(names: &[&str]) -> Behaviour {
        names
            .iter()
            .map(|n| Behaviour::from_model(n))
            .find(|b| *b != Behaviour::Normal)
            .unwrap_or(Behaviour::Normal)
    }
}

/// `-500ms`, `-2s` or `-1500` (milliseconds) after `mock-slow`.
fn parse_slow_suffix(rest: &str) -> Option<Duration> {
    let rest = rest.strip_prefix('-')?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let value: u64 = rest[..digits].parse().ok()?;
    let unit = &rest[digits..];
    if unit.starts_with("ms") || unit.is_empty() || !unit.starts_with('s') {
        Some(Duration::from_millis(value))
    } else {
        Some(Duration::from_secs(value))
    }
}

/// Everything timing- and fault-related decided for one request.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub act: Act,
    /// Wait before the first token (`mock-slow`): before the body for non-streaming replies,
    /// before the first frame for streams.
    pub first_token_delay: Duration,
    /// Pause between token frames (`x-mock-tokens-per-second`).
    pub token_interval: Option<Duration>,
}

impl Plan {
    /// Decides the plan for one request: applies `x-mock-delay-ms` (sleeping here), counts
    /// `mock-flaky-N`, and reads `x-mock-tokens-per-second`.
    pub async fn decide(state: &MockState, behaviour: Behaviour, flaky_key: &str, headers: &HeaderMap) -> Plan {
        if let Some(ms) = header_u64(headers, "x-mock-delay-ms") {
            if ms > 0 {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        }
        let token_interval = header_f64(headers, "x-mock-tokens-per-second")
            .or_else(|| name_tokens_per_second(flaky_key))
            .filter(|tps| *tps > 0.0 && tps.is_finite())
            .map(|tps| Duration::from_secs_f64(1.0 / tps));
        let mut first_token_delay = Duration::ZERO;
        let act = match behaviour {
            Behaviour::Normal => Act::Reply,
            Behaviour::RateLimited => Act::Fail(Fault::RateLimited),
            Behaviour::ServerError => Act::Fail(Fault::Internal),
            Behaviour::Unavailable => Act::Fail(Fault::Unavailable),
            Behaviour::ContextLength => Act::Fail(Fault::ContextLength),
            Behaviour::ContentPolicy => Act::Refuse,
            Behaviour::Slow(d) => {
                first_token_delay = d;
                Act::Reply
            }
            Behaviour::Cut => Act::Cut,
            Behaviour::Tool => Act::Tool,
            Behaviour::Flaky(n) => {
                if state.flaky_should_fail(flaky_key, n) {
                    Act::Fail(Fault::Internal)
                } else {
                    Act::Reply
                }
            }
            Behaviour::EchoParams => Act::Echo,
        };
        Plan {
            act,
            first_token_delay,
            token_interval,
        }
    }
}

/// `tps-N` in a model name: N token frames a second, as `x-mock-tokens-per-second: N` (which
/// wins when both are given). For clients that cannot set the mock's headers (behind a gateway).
pub(crate) fn name_tokens_per_second(model: &str) -> Option<f64> {
    let start = model.find("tps-")? + 4;
    let rest = &model[start..];
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    rest[..digits].parse::<u32>().ok().map(f64::from)
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

fn header_f64(headers: &HeaderMap, name: &str) -> Option<f64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// Tokens OpenAI counts for each chat message besides its text, and for priming the reply
/// (gpt-4o and later: OpenAI's cookbook "How to count tokens with tiktoken").
const O200K_PER_MESSAGE: u32 = 3;
const O200K_REPLY_PRIMING: u32 = 3;

/// How the mock counts the tokens its usage reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Counting {
    /// A token a word, one stream chunk a word: numbers a test predicts by eye.
    #[default]
    Words,
    /// As OpenAI counts gpt-4o's: tiktoken's `o200k_base` over the text, 3 tokens a message and
    /// 3 priming the reply; one stream chunk a token. `o200k` in the model name (OpenAI chat
    /// completions), for checks that compare a gateway's own token counts with the provider's.
    O200k,
}

impl Counting {
    pub fn from_model(model: &str) -> Counting {
        if model.contains("o200k") {
            Counting::O200k
        } else {
            Counting::Words
        }
    }

    /// Tokens of a piece of text.
    pub fn count(self, text: &str) -> u32 {
        match self {
            Counting::Words => count_words(text),
            Counting::O200k => {
                u32::try_from(tiktoken_rs::o200k_base_singleton().count_ordinary(text)).unwrap_or(u32::MAX)
            }
        }
    }

    /// `text` cut into one stream chunk per token; the pieces concatenate back to `text`.
    pub fn pieces(self, text: &str) -> Vec<String> {
        match self {
            Counting::Words => pieces(text).into_iter().map(str::to_owned).collect(),
            Counting::O200k => tiktoken_rs::o200k_base_singleton()
                .split_by_token_ordinary(text)
                .unwrap_or_else(|_| vec![text.to_owned()]),
        }
    }
}

/// The input side of a request, reduced to what the mock needs.
#[derive(Debug, Default)]
pub struct Prompt {
    counting: Counting,
    /// Tokens of the text of every input message, as `counting` counts them.
    text_tokens: u32,
    /// Messages added (`add`).
    messages: u32,
    /// Text of the last user message (its text parts joined with a space).
    pub last_user: String,
}

impl Prompt {
    /// An empty prompt whose tokens are counted by `counting`.
    pub fn counted(counting: Counting) -> Self {
        Prompt {
            counting,
            ..Prompt::default()
        }
    }

    /// Adds one message's text parts.
    pub fn add<'a>(&mut self, is_user: bool, texts: impl IntoIterator<Item = &'a str>) {
        self.messages += 1;
        if is_user {
            self.last_user.clear();
        }
        for (i, text) in texts.into_iter().enumerate() {
            self.text_tokens += self.counting.count(text);
            if is_user {
                if i > 0 {
                    self.last_user.push(' ');
                }
                self.last_user.push_str(text);
            }
        }
    }

    /// Adds text that counts toward usage but is not a user message (system prompts).
    pub fn add_other(&mut self, text: &str) {
        self.text_tokens += self.counting.count(text);
    }

    /// Prompt tokens: the word count, at least 1; with `o200k`, the text's tokens and each
    /// message's and the reply's overhead.
    pub fn tokens(&self) -> u32 {
        match self.counting {
            Counting::Words => self.text_tokens.max(1),
            Counting::O200k => self.text_tokens + O200K_PER_MESSAGE * self.messages + O200K_REPLY_PRIMING,
        }
    }
}

pub fn count_words(text: &str) -> u32 {
    u32::try_from(text.split_whitespace().count()).unwrap_or(u32::MAX)
}

/// What the assistant says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Text(String),
    Tool,
    Refusal,
}

/// The provider-neutral answer: what to say and the usage to report.
#[derive(Debug, Clone)]
pub struct Answer {
    pub reply: Reply,
    counting: Counting,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

impl Answer {
    /// Builds the answer for a non-failing act. `body` is the raw request (for `mock-echo-params`).
    pub fn new(act: Act, prompt: &Prompt, body: &[u8]) -> Answer {
        let reply = match act {
            Act::Tool => Reply::Tool,
            Act::Refuse => Reply::Refusal,
            Act::Echo => Reply::Text(String::from_utf8_lossy(body).into_owned()),
            Act::Reply | Act::Cut | Act::Fail(_) => {
                let mut text = String::with_capacity(17 + prompt.last_user.len());
                text.push_str("Hello! You said: ");
                text.push_str(&prompt.last_user);
                Reply::Text(text)
            }
        };
        let counting = prompt.counting;
        let completion_tokens = match &reply {
            Reply::Text(t) => counting.count(t),
            Reply::Tool => TOOL_TOKENS,
            Reply::Refusal => counting.count(REFUSAL_TEXT),
        };
        Answer {
            reply,
            counting,
            prompt_tokens: prompt.tokens(),
            completion_tokens,
        }
    }

    pub fn total_tokens(&self) -> u32 {
        self.prompt_tokens + self.completion_tokens
    }

    /// The reply text cut into stream chunks, one a completion token.
    pub fn pieces(&self) -> Vec<String> {
        self.counting.pieces(self.text())
    }

    /// The reply text ("" for a tool call; the refusal text for a refusal).
    pub fn text(&self) -> &str {
        match &self.reply {
            Reply::Text(t) => t,
            Reply::Tool => "",
            Reply::Refusal => REFUSAL_TEXT,
        }
    }
}

/// Splits text into one piece per word, each word keeping the whitespace that follows it, so
/// the pieces concatenate back to exactly `text` (leading whitespace stays with the first).
pub fn pieces(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut prev_ws = false;
    let mut seen_word = false;
    for (i, c) in text.char_indices() {
        let ws = c.is_whitespace();
        if !ws && prev_ws && seen_word {
            out.push(&text[start..i]);
            start = i;
        }
        seen_word |= !ws;
        prev_ws = ws;
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// A deterministic unit vector of `dims` components derived from a hash of `input`.
pub fn embedding(input: &str, dims: usize) -> Vec<f32> {
    let digest = Sha256::digest(input.as_bytes());
    let mut seed_bytes = [0u8; 8];
    seed_bytes.copy_from_slice(&digest[..8]);
    let mut seed = u64::from_le_bytes(seed_bytes);
    let mut v: Vec<f32> = (0..dims)
        .map(|_| {
            seed = splitmix64(seed);
            // 24 random bits mapped onto [-1, 1).
            ((seed >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in &mut v {
            *x /= norm;
        }
    }
    v
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Clamps a requested embedding dimension to something sane.
pub fn dimensions(requested: Option<u64>) -> usize {
    match requested {
        Some(d) if (1..=16_384).contains(&d) => d as usize,
        _ => DEFAULT_DIMENSIONS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_select_behaviours() {
        assert_eq!(Behaviour::from_model("gpt-4o"), Behaviour::Normal);
        assert_eq!(Behaviour::from_model("mock-429"), Behaviour::RateLimited);
        assert_eq!(Behaviour::from_model("us.mock-500-v1:0"), Behaviour::ServerError);
        assert_eq!(Behaviour::from_model("mock-503"), Behaviour::Unavailable);
        assert_eq!(Behaviour::from_model("mock-context-length"), Behaviour::ContextLength);
        assert_eq!(Behaviour::from_model("mock-content-policy"), Behaviour::ContentPolicy);
        assert_eq!(Behaviour::from_model("mock-slow"), Behaviour::Slow(DEFAULT_SLOW));
        assert_eq!(
            Behaviour::from_model("mock-slow-500ms"),
            Behaviour::Slow(Duration::from_millis(500))
        );
        assert_eq!(
            Behaviour::from_model("mock-slow-3s"),
            Behaviour::Slow(Duration::from_secs(3))
        );
        assert_eq!(Behaviour::from_model("mock-cut"), Behaviour::Cut);
        assert_eq!(Behaviour::from_model("models/mock-tool"), Behaviour::Tool);
        assert_eq!(Behaviour::from_model("mock-flaky-3"), Behaviour::Flaky(3));
        assert_eq!(Behaviour::from_model("mock-flaky-x"), Behaviour::Normal);
        assert_eq!(Behaviour::from_model("mock-echo-params"), Behaviour::EchoParams);
        assert_eq!(Behaviour::from_model("mock-embed"), Behaviour::Normal);
        assert_eq!(Behaviour::from_model("mock-gpt mock-429"), Behaviour::RateLimited);
    }

    #[test]
    fn tokens_per_second_from_the_model_name() {
        assert_eq!(name_tokens_per_second("soak-gpt-tps-50"), Some(50.0));
        assert_eq!(name_tokens_per_second("mock-cut-tps-20-x"), Some(20.0));
        assert_eq!(name_tokens_per_second("gpt-4o"), None);
        assert_eq!(name_tokens_per_second("tps-"), None);
    }

    #[test]
    fn pieces_concatenate_back() {
        for text in ["Hello! You said: hi there", "  lead", "trail  ", "", "one", "a\nb\tc"] {
            let p = pieces(text);
            assert_eq!(p.concat(), text);
            assert_eq!(p.len() as u32, count_words(text));
        }
        assert_eq!(pieces("Hello! You said: hi"), vec!["Hello! ", "You ", "said: ", "hi"]);
    }

    #[test]
    fn embeddings_are_deterministic_unit_vectors() {
        let a = embedding("hello", 8);
        assert_eq!(a, embedding("hello", 8));
        assert_ne!(a, embedding("world", 8));
        let norm: f32 = a.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-4);
        assert_eq!(embedding("x", 3).len(), 3);
    }

    #[test]
    fn prompt_counts_words_and_keeps_last_user() {
        let mut p = Prompt::default();
        p.add_other("be brief");
        p.add(true, ["hello there"]);
        p.add(false, ["hi"]);
        p.add(true, ["what", "is up"]);
        assert_eq!(p.tokens(), 8);
        assert_eq!(p.last_user, "what is up");
        assert_eq!(Prompt::default().tokens(), 1);
    }

    #[test]
    fn o200k_counts_as_openai_does_and_streams_a_chunk_a_token() {
        assert_eq!(Counting::from_model("soak-gpt-a-o200k-tps-40"), Counting::O200k);
        assert_eq!(Counting::from_model("mock-gpt"), Counting::Words);
        let mut p = Prompt::counted(Counting::O200k);
        p.add(false, ["You are terse."]);
        p.add(true, ["hello world, how are you today?"]);
        // "You are terse." = 4 tokens, the question = 8; 2 messages x 3, 3 priming the reply.
        assert_eq!(p.tokens(), 4 + 8 + 6 + 3);
        let answer = Answer::new(Act::Reply, &p, b"");
        assert_eq!(answer.text(), "Hello! You said: hello world, how are you today?");
        let pieces = answer.pieces();
        assert_eq!(pieces.concat(), answer.text());
        assert_eq!(pieces.len() as u32, answer.completion_tokens);
        assert_eq!(&pieces[..3], ["Hello", "!", " You"]);
    }
}
