//! The gateway's Anthropic-format ingress (`POST /v1/messages`): pure translations between the
//! client's Anthropic Messages shapes and the OpenAI chat shapes every route and adapter speaks.
//!
//! The gateway calls [`request_to_openai`] on the client's body, routes the result like any chat
//! completion, and answers with [`response_from_openai`] or [`StreamFromOpenAi`] (fed the
//! OpenAI-shaped bytes the chosen adapter produced), or with [`error_body`] / [`error_event`].
//! When the chosen backend is Anthropic itself the gateway may forward the client's bytes
//! untouched instead; that fast path belongs to the gateway, not here.
//!
//! What does not survive the OpenAI shape: `cache_control` (a cost hint OpenAI-format backends
//! would refuse; the pass-through fast path keeps it), `is_error` on tool results, thinking
//! blocks in the history, and server tools (web search, code execution...), which are refused.
//!
//! This module does no I/O.

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::openai::openai_error;
use crate::sse::Parser;
use crate::{ErrorKind, Json, ProviderError, StreamTranslator, Usage};

fn bad(message: impl Into<String>, param: impl Into<String>) -> ProviderError {
    super::bad(message, param)
}

// ---------------------------------------------------------------------------------------------
// Request: Anthropic Messages -> OpenAI chat.

/// Translates an Anthropic Messages request into an OpenAI chat completion request.
pub fn request_to_openai(body: &Json) -> Result<Json, ProviderError> {
    let mut out = Json::new();
    let mut messages = Vec::new();
    if let Some(system) = body.get("system") {
        messages.extend(system_message(system)?);
    }
    for (key, value) in body {
        match key.as_str() {
            "system" | "messages" => {}
            "model" => {
                out.insert(key.clone(), value.clone());
            }
            // Numbers the limits and the backends read: of the type Anthropic documents, else
            // the 400 Anthropic would answer (not a default the client never asked for).
            "max_tokens" => {
                if value.as_u64().is_none_or(|n| n == 0) {
                    return Err(bad("`max_tokens` must be a positive integer", "max_tokens"));
                }
                out.insert(key.clone(), value.clone());
            }
            "temperature" | "top_p" | "top_k" => {
                if !value.is_number() && !value.is_null() {
                    return Err(bad(format!("`{key}` must be a number"), key.as_str()));
                }
                out.insert(key.clone(), value.clone());
            }
            // Anthropic's extended thinking; Anthropic backends take it as is.
            "thinking" => {
                if value.get("type").and_then(Value::as_str) != Some("disabled") {
                    out.insert(key.clone(), value.clone());
                }
            }
            "stop_sequences" => {
                if !value.is_null() {
                    out.insert("stop".into(), value.clone());
                }
            }
            "stream" => {
                if value.as_bool() == Some(true) {
                    out.insert("stream".into(), true.into());
                    // Anthropic streams report usage; ask the backend for it.
                    out.insert("stream_options".into(), json!({"include_usage": true}));
                }
            }
            "tools" => {
                if let Some(tools) = tools(value)? {
                    out.insert("tools".into(), tools);
                }
            }
            "tool_choice" => {
                let (choice, parallel) = tool_choice(value)?;
                if let Some(choice) = choice {
                    out.insert("tool_choice".into(), choice);
                }
                if let Some(parallel) = parallel {
                    out.insert("parallel_tool_calls".into(), parallel.into());
                }
            }
            "metadata" => {
                if let Some(user) = value.get("user_id").and_then(Value::as_str) {
                    out.insert("user".into(), user.into());
                }
            }
            // A billing preference, not part of the answer.
            "service_tier" => {}
            other => {
                return Err(bad(
                    format!("parameter `{other}` is not supported by this gateway's /v1/messages"),
                    other,
                ))
            }
        }
    }
    if !out.get("model").is_some_and(Value::is_string) {
        return Err(bad("`model` is required", "model"));
    }
    let Some(Value::Array(turns)) = body.get("messages") else {
        return Err(bad("`messages` must be a list", "messages"));
    };
    for (i, turn) in turns.iter().enumerate() {
        turn_messages(turn, i, &mut messages)?;
    }
    out.insert("messages".into(), Value::Array(messages));
    Ok(out)
}

fn system_message(system: &Value) -> Result<Option<Value>, ProviderError> {
    let content = match system {
        Value::Null => return Ok(None),
        Value::String(s) if s.is_empty() => return Ok(None),
        Value::String(s) => Value::String(s.clone()),
        Value::Array(blocks) => {
            let mut parts = Vec::with_capacity(blocks.len());
            for (j, block) in blocks.iter().enumerate() {
                match block_type(block) {
                    "text" => parts.push(text_part(block)),
                    _ => return Err(bad(format!("system[{j}] must be a text block"), "system")),
                }
            }
            collapse(parts)
        }
        _ => return Err(bad("`system` must be a string or a list of text blocks", "system")),
    };
    Ok(Some(json!({"role": "system", "content": content})))
}

fn block_type(block: &Value) -> &str {
    block.get("type").and_then(Value::as_str).unwrap_or_default()
}

fn text_part(block: &Value) -> Value {
    json!({"type": "text", "text": block.get("text").and_then(Value::as_str).unwrap_or_default()})
}

/// One text part is sent as a string, the shape most clients send.
fn collapse(parts: Vec<Value>) -> Value {
    match parts.as_slice() {
        [only] if block_type(only) == "text" => only.get("text").cloned().unwrap_or_default(),
        _ => Value::Array(parts),
    }
}

/// One Anthropic turn as OpenAI messages: a user turn's tool results become `tool` messages, in
/// order around the rest of its content.
fn turn_messages(turn: &Value, i: usize, out: &mut Vec<Value>) -> Result<(), ProviderError> {
    let role = turn.get("role").and_then(Value::as_str).unwrap_or_default();
    let content = turn.get("content");
    match (role, content) {
        ("user" | "assistant", Some(Value::String(s))) => {
            out.push(json!({"role": role, "content": s}));
            Ok(())
        }
        ("user", Some(Value::Array(blocks))) => {
            let mut parts = Vec::new();
            for (j, block) in blocks.iter().enumerate() {
                if block_type(block) == "tool_result" {
                    if !parts.is_empty() {
                        out.push(json!({"role": "user", "content": collapse(std::mem::take(&mut parts))}));
                    }
                    out.push(tool_message(block, i, j)?);
                } else {
                    parts.push(content_part(block, &format!("messages[{i}].content[{j}]"))?);
                }
            }
            if !parts.is_empty() {
                out.push(json!({"role": "user", "content": collapse(parts)}));
            }
            Ok(())
        }
        ("assistant", Some(Value::Array(blocks))) => {
            let mut texts = Vec::new();
            let mut calls = Vec::new();
            for (j, block) in blocks.iter().enumerate() {
                match block_type(block) {
                    "text" => texts.push(text_part(block)),
                    "tool_use" => {
                        let id = block.get("id").and_then(Value::as_str);
                        let name = block.get("name").and_then(Value::as_str);
                        let (Some(id), Some(name)) = (id, name) else {
                            let param = format!("messages[{i}].content[{j}]");
                            return Err(bad(format!("{param}: tool_use needs an id and a name"), param));
                        };
                        let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                        calls.push(json!({
                            "id": id,
                            "type": "function",
                            "function": {"name": name, "arguments": input.to_string()},
                        }));
                    }
                    // Reasoning of an earlier turn: only an Anthropic backend could check its
                    // signature, and that path does not come through here.
                    "thinking" | "redacted_thinking" => {}
                    other => {
                        let param = format!("messages[{i}].content[{j}]");
                        return Err(bad(format!("{param}: `{other}` blocks are not supported here"), param));
                    }
                }
            }
            let mut msg = Json::new();
            msg.insert("role".into(), "assistant".into());
            msg.insert(
                "content".into(),
                if texts.is_empty() { Value::Null } else { collapse(texts) },
            );
            if !calls.is_empty() {
                msg.insert("tool_calls".into(), Value::Array(calls));
            }
            out.push(Value::Object(msg));
            Ok(())
        }
        ("user" | "assistant", _) => Err(bad(
            format!("messages[{i}].content must be a string or a list of blocks"),
            format!("messages[{i}].content"),
        )),
        _ => Err(bad(
            format!("messages[{i}].role must be user or assistant"),
            format!("messages[{i}].role"),
        )),
    }
}

/// A text, image or document block as an OpenAI user content part.
fn content_part(block: &Value, param: &str) -> Result<Value, ProviderError> {
    let source = block.get("source");
    let source_type = source.and_then(|s| s.get("type")).and_then(Value::as_str);
    let field = |name: &str| {
        source
            .and_then(|s| s.get(name))
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    match (block_type(block), source_type) {
        ("text", _) => Ok(text_part(block)),
        ("image", Some("base64")) => Ok(json!({
            "type": "image_url",
            "image_url": {"url": format!("data:{};base64,{}", field("media_type"), field("data"))},
        })),
        ("image", Some("url")) => Ok(json!({"type": "image_url", "image_url": {"url": field("url")}})),
        ("document", Some("base64")) => {
            let mut file = Json::new();
            if let Some(title) = block.get("title").filter(|t| t.is_string()) {
                file.insert("filename".into(), title.clone());
            }
            file.insert(
                "file_data".into(),
                format!("data:{};base64,{}", field("media_type"), field("data")).into(),
            );
            Ok(json!({"type": "file", "file": file}))
        }
        (ty, source) => Err(bad(
            format!(
                "{param}: `{ty}` blocks{} are not supported here",
                source.map(|s| format!(" with a `{s}` source")).unwrap_or_default()
            ),
            param,
        )),
    }
}

fn tool_message(block: &Value, i: usize, j: usize) -> Result<Value, ProviderError> {
    let param = format!("messages[{i}].content[{j}]");
    let id = block
        .get("tool_use_id")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("{param}.tool_use_id is required"), param.clone()))?;
    let content = match block.get("content") {
        None | Some(Value::Null) => Value::String(String::new()),
        Some(Value::String(s)) => Value::String(s.clone()),
        Some(Value::Array(blocks)) => {
            // OpenAI tool messages carry text only.
            let mut parts = Vec::with_capacity(blocks.len());
            for block in blocks {
                if block_type(block) != "text" {
                    return Err(bad(format!("{param}: tool results may only contain text here"), param));
                }
                parts.push(text_part(block));
            }
            Value::Array(parts)
        }
        Some(_) => return Err(bad(format!("{param}.content must be a string or a list"), param)),
    };
    Ok(json!({"role": "tool", "tool_call_id": id, "content": content}))
}

fn tools(value: &Value) -> Result<Option<Value>, ProviderError> {
    let items = match value {
        Value::Null => return Ok(None),
        Value::Array(items) if items.is_empty() => return Ok(None),
        Value::Array(items) => items,
        _ => return Err(bad("`tools` must be a list", "tools")),
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, tool) in items.iter().enumerate() {
        // Client tools have no type (or `custom`); typed ones are Anthropic's server tools.
        let ty = tool.get("type").and_then(Value::as_str);
        let name = tool.get("name").and_then(Value::as_str);
        let (None | Some("custom"), Some(name)) = (ty, name) else {
            return Err(bad(
                format!("tools[{i}]: only client tools (name, description, input_schema) are supported here"),
                format!("tools[{i}]"),
            ));
        };
        let mut function = Json::new();
        function.insert("name".into(), name.into());
        if let Some(d) = tool.get("description").filter(|d| d.is_string()) {
            function.insert("description".into(), d.clone());
        }
        function.insert(
            "parameters".into(),
            tool.get("input_schema")
                .cloned()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        );
        out.push(json!({"type": "function", "function": function}));
    }
    Ok(Some(Value::Array(out)))
}

/// OpenAI's `tool_choice` and `parallel_tool_calls` for Anthropic's `tool_choice`.
fn tool_choice(value: &Value) -> Result<(Option<Value>, Option<bool>), ProviderError> {
    if value.is_null() {
        return Ok((None, None));
    }
    let choice = match value.get("type").and_then(Value::as_str) {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => {
            let name = value
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("tool_choice.name is required", "tool_choice"))?;
            json!({"type": "function", "function": {"name": name}})
        }
        _ => return Err(bad("tool_choice.type must be auto, any, tool or none", "tool_choice")),
    };
    let parallel = value
        .get("disable_parallel_tool_use")
        .and_then(Value::as_bool)
        .filter(|d| *d)
        .map(|_| false);
    Ok((Some(choice), parallel))
}

// ---------------------------------------------------------------------------------------------
// Response: OpenAI chat.completion -> Anthropic message.

#[derive(Deserialize)]
struct Completion {
    #[serde(default)]
    id: String,
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    message: ChoiceMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct ChoiceMessage {
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCall>>,
}

#[derive(Deserialize)]
struct ToolCall {
    #[serde(default)]
    id: String,
    #[serde(default)]
    function: Function,
}

#[derive(Deserialize, Default)]
struct Function {
    #[serde(default)]
    name: String,
    #[serde(default)]
    arguments: String,
}

/// OpenAI's usage object.
#[derive(Deserialize, Default, Clone, Copy)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: u64,
    /// The gateway's own extension (see [`Usage::openai_json`]): cache writes of an Anthropic or
    /// Bedrock backend, and the part of them kept an hour.
    #[serde(default)]
    cache_write_tokens: u64,
    #[serde(default)]
    cache_write_1h_tokens: u64,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct CompletionDetails {
    #[serde(default)]
    reasoning_tokens: u64,
}

impl From<WireUsage> for Usage {
    fn from(u: WireUsage) -> Self {
        Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            cached_tokens: u.prompt_tokens_details.map_or(0, |d| d.cached_tokens),
            cache_write_tokens: u.prompt_tokens_details.map_or(0, |d| d.cache_write_tokens),
            cache_write_1h_tokens: u.prompt_tokens_details.map_or(0, |d| d.cache_write_1h_tokens),
            reasoning_tokens: u.completion_tokens_details.map_or(0, |d| d.reasoning_tokens),
        }
    }
}

/// Anthropic's usage object: its `input_tokens` exclude cache reads, OpenAI's include them. Cache
/// writes are split by duration (`cache_creation`) when there are any.
fn anthropic_usage(u: &Usage) -> Value {
    let mut v = json!({
        "input_tokens": u.prompt_tokens.saturating_sub(u.cached_tokens.saturating_add(u.cache_write_tokens)),
        "cache_creation_input_tokens": u.cache_write_tokens,
        "cache_read_input_tokens": u.cached_tokens,
        "output_tokens": u.completion_tokens,
    });
    if u.cache_write_tokens > 0 {
        let hour = u.cache_write_1h_tokens.min(u.cache_write_tokens);
        v["cache_creation"] = json!({
            "ephemeral_5m_input_tokens": u.cache_write_tokens - hour,
            "ephemeral_1h_input_tokens": hour,
        });
    }
    v
}

/// Anthropic's `stop_reason` for OpenAI's `finish_reason`.
fn stop_reason(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

fn protocol(message: impl std::fmt::Display) -> ProviderError {
    ProviderError::new(
        ErrorKind::Protocol,
        format!("backend sent an unreadable response: {message}"),
    )
}

/// Translates an OpenAI `chat.completion` into an Anthropic message naming `requested_model`.
pub fn response_from_openai(openai_body: &[u8], requested_model: &str) -> Result<Bytes, ProviderError> {
    let completion: Completion = serde_json::from_slice(openai_body).map_err(protocol)?;
    let Some(choice) = completion.choices.into_iter().next() else {
        return Err(protocol("no choices"));
    };
    let mut content = Vec::new();
    let text = match &choice.message.content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<String>(),
        _ => String::new(),
    };
    if !text.is_empty() {
        content.push(json!({"type": "text", "text": text}));
    }
    let refused = choice.message.refusal.as_deref().is_some_and(|r| !r.is_empty());
    if let Some(refusal) = choice.message.refusal.filter(|r| !r.is_empty()) {
        content.push(json!({"type": "text", "text": refusal}));
    }
    let calls = choice.message.tool_calls.unwrap_or_default();
    let called = !calls.is_empty();
    for call in calls {
        let input = if call.function.arguments.trim().is_empty() {
            json!({})
        } else {
            match serde_json::from_str::<Value>(&call.function.arguments) {
                Ok(v @ Value::Object(_)) => v,
                _ => {
                    return Err(protocol(format!(
                        "tool call {} has arguments that are not a JSON object",
                        call.id
                    )))
                }
            }
        };
        content.push(json!({"type": "tool_use", "id": call.id, "name": call.function.name, "input": input}));
    }
    let stop = if refused {
        "refusal"
    } else if called {
        // Some OpenAI-compatible servers say `stop` after a tool call.
        "tool_use"
    } else {
        choice.finish_reason.as_deref().map_or("end_turn", stop_reason)
    };
    let usage = completion.usage.map(Usage::from).unwrap_or_default();
    let message = json!({
        "id": completion.id,
        "type": "message",
        "role": "assistant",
        "model": requested_model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": null,
        "usage": anthropic_usage(&usage),
    });
    serde_json::to_vec(&message).map(Bytes::from).map_err(protocol)
}

// ---------------------------------------------------------------------------------------------
// Stream: OpenAI chunks -> Anthropic events.

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    id: String,
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    delta: ChunkDelta,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct ChunkDelta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallDelta>>,
}

#[derive(Deserialize)]
struct ToolCallDelta {
    #[serde(default)]
    index: usize,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionDelta>,
}

#[derive(Deserialize, Default)]
struct FunctionDelta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

/// The content block being streamed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    Text(u64),
    Tool(u64),
}

/// Translates an OpenAI `chat.completion.chunk` stream into Anthropic's events, framed as
/// Anthropic frames them (`event: <type>\ndata: <json>\n\n`): `message_start`, a
/// `content_block_start` / `content_block_delta`... / `content_block_stop` run per text or
/// `tool_use` block (tool input as `input_json_delta`), `message_delta` with the stop reason and
/// usage, `message_stop`.
pub struct StreamFromOpenAi {
    parser: Parser,
    model: String,
    started: bool,
    open: Option<Open>,
    next_block: u64,
    /// OpenAI tool call index -> content block index.
    tools: Vec<(usize, u64)>,
    stop_reason: Option<&'static str>,
    usage: Option<Usage>,
    done: bool,
}

impl StreamFromOpenAi {
    /// A translator whose events name `requested_model`, the model the client asked for.
    pub fn new(requested_model: impl Into<String>) -> Self {
        Self {
            parser: Parser::default(),
            model: requested_model.into(),
            started: false,
            open: None,
            next_block: 0,
            tools: Vec::new(),
            stop_reason: None,
            usage: None,
            done: false,
        }
    }

    fn start(&mut self, id: &str, out: &mut Vec<Bytes>) {
        if self.started {
            return;
        }
        self.started = true;
        let message = json!({
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            // OpenAI reports usage at the end; `message_delta` carries it.
            "usage": {"input_tokens": 0, "output_tokens": 0},
        });
        out.push(event(
            "message_start",
            &json!({"type": "message_start", "message": message}),
        ));
    }

    fn close(&mut self, out: &mut Vec<Bytes>) {
        if let Some(Open::Text(index) | Open::Tool(index)) = self.open.take() {
            out.push(event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            ));
        }
    }

    fn open_block(&mut self, block: Value, out: &mut Vec<Bytes>) -> u64 {
        self.close(out);
        let index = self.next_block;
        self.next_block += 1;
        out.push(event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        ));
        index
    }

    fn text(&mut self, text: &str, out: &mut Vec<Bytes>) {
        if text.is_empty() {
            return;
        }
        let index = match self.open {
            Some(Open::Text(index)) => index,
            _ => {
                let index = self.open_block(json!({"type": "text", "text": ""}), out);
                self.open = Some(Open::Text(index));
                index
            }
        };
        out.push(delta(index, json!({"type": "text_delta", "text": text})));
    }

    fn tool_call(&mut self, call: ToolCallDelta, out: &mut Vec<Bytes>) {
        let function = call.function.unwrap_or_default();
        let index = match self.tools.iter().find(|(c, _)| *c == call.index) {
            Some(&(_, index)) => index,
            None => {
                let id = call.id.unwrap_or_else(|| format!("toolu_{}", call.index));
                let name = function.name.unwrap_or_default();
                let index = self.open_block(json!({"type": "tool_use", "id": id, "name": name, "input": {}}), out);
                self.open = Some(Open::Tool(index));
                self.tools.push((call.index, index));
                index
            }
        };
        if let Some(arguments) = function.arguments.filter(|a| !a.is_empty()) {
            out.push(delta(
                index,
                json!({"type": "input_json_delta", "partial_json": arguments}),
            ));
        }
    }

    fn end(&mut self, out: &mut Vec<Bytes>) {
        self.start("", out);
        self.close(out);
        let usage = self.usage.unwrap_or_default();
        out.push(event(
            "message_delta",
            &json!({
                "type": "message_delta",
                "delta": {"stop_reason": self.stop_reason.unwrap_or("end_turn"), "stop_sequence": null},
                "usage": anthropic_usage(&usage),
            }),
        ));
        out.push(event("message_stop", &json!({"type": "message_stop"})));
        self.done = true;
    }
}

/// One Anthropic SSE frame.
fn event(name: &str, data: &Value) -> Bytes {
    let json = serde_json::to_vec(data).unwrap_or_default();
    let mut b = BytesMut::with_capacity(json.len() + name.len() + 16);
    b.put_slice(b"event: ");
    b.put_slice(name.as_bytes());
    b.put_slice(b"\ndata: ");
    b.put_slice(&json);
    b.put_slice(b"\n\n");
    b.freeze()
}

fn delta(index: u64, delta: Value) -> Bytes {
    event(
        "content_block_delta",
        &json!({"type": "content_block_delta", "index": index, "delta": delta}),
    )
}

impl StreamTranslator for StreamFromOpenAi {
    fn feed(&mut self, chunk: Bytes, out: &mut Vec<Bytes>) -> Result<(), ProviderError> {
        for ev in self.parser.feed(&chunk)? {
            if self.done {
                break;
            }
            if ev.data == "[DONE]" {
                self.end(out);
                continue;
            }
            if ev.data.starts_with("{\"error\"") {
                return Err(openai_error(500, &http::HeaderMap::new(), ev.data.as_bytes()));
            }
            let chunk: Chunk = serde_json::from_str(&ev.data).map_err(|e| {
                ProviderError::new(
                    ErrorKind::Protocol,
                    format!("backend sent a malformed stream chunk: {e}"),
                )
            })?;
            self.start(&chunk.id, out);
            for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
                let d = choice.delta;
                self.text(d.content.as_deref().unwrap_or_default(), out);
                if let Some(refusal) = d.refusal.as_deref().filter(|r| !r.is_empty()) {
                    self.text(refusal, out);
                    self.stop_reason = Some("refusal");
                }
                for call in d.tool_calls.unwrap_or_default() {
                    self.tool_call(call, out);
                }
                if let Some(reason) = choice.finish_reason.as_deref() {
                    self.close(out);
                    if self.stop_reason.is_none() {
                        self.stop_reason = Some(if self.tools.is_empty() {
                            stop_reason(reason)
                        } else {
                            "tool_use"
                        });
                    }
                }
            }
            if let Some(u) = chunk.usage {
                self.usage = Some(u.into());
            }
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<Bytes>) -> Result<(), ProviderError> {
        if self.done {
            return Ok(());
        }
        // Some OpenAI-compatible servers end after the finish reason without `[DONE]`.
        if self.stop_reason.is_some() {
            self.end(out);
            return Ok(());
        }
        Err(ProviderError::new(
            ErrorKind::Protocol,
            "backend stream ended before it finished",
        ))
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }

    fn complete(&self) -> bool {
        self.done
    }
}

// ---------------------------------------------------------------------------------------------
// Errors.

/// Anthropic's error type and the status the ingress answers with, matching how the gateway's
/// OpenAI endpoints classify the same failure (provider-side faults are the gateway's 502).
fn error_type(kind: ErrorKind) -> (u16, &'static str) {
    match kind {
        ErrorKind::BadRequest | ErrorKind::ContextWindow | ErrorKind::ContentPolicy => (400, "invalid_request_error"),
        ErrorKind::RateLimit => (429, "rate_limit_error"),
        ErrorKind::Timeout => (504, "timeout_error"),
        ErrorKind::Auth
        | ErrorKind::PermissionDenied
        | ErrorKind::NotFound
        | ErrorKind::Server
        | ErrorKind::Connect
        | ErrorKind::Protocol => (502, "api_error"),
    }
}

fn error_json(ty: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": ty, "message": message}})
}

/// The status and Anthropic-shaped body (`{"type":"error","error":{"type","message"}}`) of a
/// failure answered on the ingress.
pub fn error_body(kind: ErrorKind, message: &str) -> (u16, Bytes) {
    let (status, ty) = error_type(kind);
    let body = serde_json::to_vec(&error_json(ty, message)).unwrap_or_default();
    (status, Bytes::from(body))
}

/// The `event: error` frame for a failure after the stream began (the status is already 200).
pub fn error_event(kind: ErrorKind, message: &str) -> Bytes {
    let (_, ty) = error_type(kind);
    event("error", &error_json(ty, message))
}
