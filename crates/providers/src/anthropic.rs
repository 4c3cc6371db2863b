//! Anthropic Messages (`POST /v1/messages`): serves OpenAI-shaped chat requests from Claude, and
//! ([`ingress`]) translates the gateway's own Anthropic-format `/v1/messages` endpoint to and from
//! the OpenAI shape the rest of the gateway speaks.
//!
//! Request: system and developer messages are lifted to `system`; consecutive turns of one role
//! are merged (tool results are user turns, as Anthropic wants them); `max_tokens` is required
//! upstream, so it defaults to the model's output limit from the built-in table (4096 when the
//! model is unknown); tools, tool choice, tool calls, tool results, images (`data:` URLs as
//! base64, http(s) URLs as url sources) and PDF `file` parts are translated; `cache_control` on
//! content parts and tools is forwarded so prompt caching works through the OpenAI shape;
//! Anthropic's own `top_k` and `thinking` pass through. Parameters Claude cannot honour (`n` > 1,
//! `logprobs`, `top_logprobs`, penalties, `logit_bias`, `seed`, a JSON `response_format`: Claude
//! has no JSON mode or schema-constrained decoding on this API version) fail with
//! [`ProviderError::unsupported_param`] unless the route drops them. `strict` on a tool is a
//! request for a guarantee Claude does not give here; it is dropped, as OpenAI's own non-strict
//! behaviour is what the client then gets.
//!
//! Response and stream: text blocks become `content`, `tool_use` blocks `tool_calls`, thinking
//! becomes `reasoning_content`; `stop_reason` maps to `finish_reason`; prompt tokens are
//! `input_tokens` plus both cache counters, as Anthropic's `input_tokens` excludes them.
//!
//! This module does no I/O and keeps no state across requests.
//!
//! Reference: Anthropic API reference "Messages", "Streaming Messages" and "Errors"; the guides
//! "Tool use", "Vision" and "Prompt caching".

pub mod ingress;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde::Deserialize;
use serde_json::{json, Value};
use switchyard_config::CredentialsConfig;

use crate::sse::{self, Parser};
use crate::{
    kind_for_status, retry_after, Adapter, ErrorKind, Json, Operation, ProviderError, StreamTranslator, Target,
    Translated, UpstreamRequest, Usage,
};

/// The `anthropic-version` header sent upstream.
pub const API_VERSION: &str = "2023-06-01";

/// `max_tokens` when the request sets none and the model is not in the built-in table.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

const NAME: &str = "anthropic";

/// The Anthropic adapter.
#[derive(Clone, Copy, Debug, Default)]
pub struct Anthropic;

/// The Anthropic adapter, as registered in [`crate::adapter`].
pub static ANTHROPIC: Anthropic = Anthropic;

impl Adapter for Anthropic {
    fn build(
        &self,
        op: Operation,
        request: &Json,
        target: &Target<'_>,
        stream: bool,
    ) -> Result<UpstreamRequest, ProviderError> {
        chat_only(op)?;
        let body = request_body(request, target.model, target.drop_unsupported_params, stream)?;
        let bytes = serde_json::to_vec(&body)
            .map_err(|e| ProviderError::new(ErrorKind::BadRequest, format!("cannot encode request: {e}")))?;
        Ok(UpstreamRequest {
            method: Method::POST,
            url: messages_url(&target.provider.base_url),
            headers: headers(target)?,
            body: Bytes::from(bytes),
        })
    }

    fn parse(&self, op: Operation, body: &[u8], target: &Target<'_>) -> Result<Translated, ProviderError> {
        chat_only(op)?;
        response_to_openai(body, unix_seconds(target.now))
    }

    fn stream(&self, _op: Operation, target: &Target<'_>) -> Box<dyn StreamTranslator> {
        // `build` has already refused anything but chat.
        Box::new(StreamToOpenAi::new(unix_seconds(target.now)))
    }

    fn error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        anthropic_error(status, headers, body)
    }
}

fn chat_only(op: Operation) -> Result<(), ProviderError> {
    let path = match op {
        Operation::Chat => return Ok(()),
        Operation::Embeddings => "/v1/embeddings",
        Operation::Completions => "/v1/completions",
        Operation::Responses => "/v1/responses",
    };
    Err(ProviderError::new(
        ErrorKind::BadRequest,
        format!("anthropic backends serve only /v1/chat/completions, not {path}"),
    ))
}

/// `{base}/v1/messages`, accepting a base URL given with or without its `/v1`.
pub fn messages_url(base_url: &str) -> String {
    let base = base_url.trim_end_matches('/');
    if base.ends_with("/v1") {
        format!("{base}/messages")
    } else {
        format!("{base}/v1/messages")
    }
}

fn headers(target: &Target<'_>) -> Result<HeaderMap, ProviderError> {
    let mut h = HeaderMap::with_capacity(4 + target.provider.headers.len());
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(
        HeaderName::from_static("anthropic-version"),
        HeaderValue::from_static(API_VERSION),
    );
    // Provider headers come after the version so a Provider can pin another version or add
    // `anthropic-beta`.
    for (k, v) in &target.provider.headers {
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) else {
            continue;
        };
        h.insert(name, value);
    }
    if let Some(CredentialsConfig::ApiKey { key }) = &target.provider.credentials {
        let mut value = HeaderValue::from_str(key.expose())
            .map_err(|_| ProviderError::new(ErrorKind::Auth, "the provider's API key is not a valid header value"))?;
        value.set_sensitive(true);
        h.insert(HeaderName::from_static("x-api-key"), value);
    }
    Ok(h)
}

fn unix_seconds(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn bad(message: impl Into<String>, param: impl Into<String>) -> ProviderError {
    ProviderError {
        param: Some(param.into()),
        ..ProviderError::new(ErrorKind::BadRequest, message)
    }
}

// ---------------------------------------------------------------------------------------------
// Request: OpenAI chat -> Anthropic Messages.

/// The Anthropic Messages body for an OpenAI chat request (without `anthropic_version`, which
/// Bedrock and Vertex put in the body and the direct API takes as a header).
pub fn request_body(request: &Json, model: &str, drop_unsupported: bool, stream: bool) -> Result<Json, ProviderError> {
    let unsupported = |param: &str| -> Result<(), ProviderError> {
        if drop_unsupported {
            Ok(())
        } else {
            Err(ProviderError::unsupported_param(NAME, param))
        }
    };

    let mut out = Json::new();
    let mut max_tokens = None;
    let mut max_completion_tokens = None;
    let mut stop = None;
    let mut tools: Option<Vec<Value>> = None;
    let mut tool_choice = None;
    let mut parallel_tool_calls = true;
    let mut user = None;
    let mut safety_identifier = None;

    for (key, value) in request {
        match key.as_str() {
            // The target names the model; `stream` is the gateway's decision.
            "model" | "messages" | "stream" | "stream_options" => {}
            "max_tokens" => max_tokens = opt_u64(value, key)?,
            "max_completion_tokens" => max_completion_tokens = opt_u64(value, key)?,
            "temperature" | "top_p" => {
                if !value.is_null() {
                    if !value.is_number() {
                        return Err(bad(format!("`{key}` must be a number"), key));
                    }
                    out.insert(key.clone(), value.clone());
                }
            }
            "stop" => stop = stop_sequences(value)?,
            "tools" => tools = translate_tools(value, &unsupported)?,
            "tool_choice" => tool_choice = translate_tool_choice(value, &unsupported)?,
            "parallel_tool_calls" => parallel_tool_calls = value.as_bool() != Some(false),
            "user" => user = value.as_str(),
            "safety_identifier" => safety_identifier = value.as_str(),
            // Anthropic's own sampling and extended-thinking parameters.
            "top_k" | "thinking" => {
                if !value.is_null() {
                    out.insert(key.clone(), value.clone());
                }
            }
            // OpenAI platform bookkeeping (stored completions, billing tier, cache routing):
            // no effect on the answer.
            "store" | "metadata" | "service_tier" | "prompt_cache_key" => {}
            // Defaults are harmless; anything else asks for what Claude cannot do.
            "n" if value.is_null() || value.as_u64() == Some(1) => {}
            "logprobs" if value.is_null() || value.as_bool() == Some(false) => {}
            "presence_penalty" | "frequency_penalty" if value.is_null() || value.as_f64() == Some(0.0) => {}
            "logit_bias" if value.is_null() || value.as_object().is_some_and(|m| m.is_empty()) => {}
            "top_logprobs" | "seed" if value.is_null() => {}
            "response_format" if value.is_null() || value.get("type").and_then(Value::as_str) == Some("text") => {}
            other => unsupported(other)?,
        }
    }

    let (system, messages) = translate_messages(request.get("messages"))?;

    out.insert("model".into(), model.into());
    let max_tokens = max_completion_tokens.or(max_tokens).unwrap_or_else(|| {
        switchyard_config::prices::lookup(model).map_or(DEFAULT_MAX_TOKENS, |m| u64::from(m.max_output))
    });
    out.insert("max_tokens".into(), max_tokens.into());
    if let Some(system) = system {
        out.insert("system".into(), system);
    }
    out.insert("messages".into(), Value::Array(messages));
    if let Some(stop) = stop {
        out.insert("stop_sequences".into(), stop);
    }
    if let Some(tools) = tools.filter(|t| !t.is_empty()) {
        // A tool choice without tools is meaningless to Anthropic (and an error); so is
        // `parallel_tool_calls`.
        let mut choice = tool_choice.unwrap_or_else(|| json!({"type": "auto"}));
        if !parallel_tool_calls && choice.get("type").and_then(Value::as_str) != Some("none") {
            if let Some(c) = choice.as_object_mut() {
                c.insert("disable_parallel_tool_use".into(), true.into());
            }
        }
        out.insert("tools".into(), Value::Array(tools));
        out.insert("tool_choice".into(), choice);
    }
    if let Some(user) = user.or(safety_identifier) {
        out.insert("metadata".into(), json!({ "user_id": user }));
    }
    if stream {
        out.insert("stream".into(), true.into());
    }
    Ok(out)
}

fn opt_u64(value: &Value, key: &str) -> Result<Option<u64>, ProviderError> {
    if value.is_null() {
        return Ok(None);
    }
    value
        .as_u64()
        .map(Some)
        .ok_or_else(|| bad(format!("`{key}` must be a positive integer"), key))
}

fn stop_sequences(value: &Value) -> Result<Option<Value>, ProviderError> {
    let list: Vec<Value> = match value {
        Value::Null => return Ok(None),
        Value::String(s) => vec![Value::String(s.clone())],
        Value::Array(items) => {
            if !items.iter().all(Value::is_string) {
                return Err(bad("`stop` must be a string or a list of strings", "stop"));
            }
            items.clone()
        }
        _ => return Err(bad("`stop` must be a string or a list of strings", "stop")),
    };
    // Anthropic refuses empty stop sequences; OpenAI ignores them.
    let list: Vec<Value> = list
        .into_iter()
        .filter(|s| s.as_str().is_some_and(|s| !s.is_empty()))
        .collect();
    Ok((!list.is_empty()).then_some(Value::Array(list)))
}

fn translate_tools(
    value: &Value,
    unsupported: &dyn Fn(&str) -> Result<(), ProviderError>,
) -> Result<Option<Vec<Value>>, ProviderError> {
    let items = match value {
        Value::Null => return Ok(None),
        Value::Array(items) => items,
        _ => return Err(bad("`tools` must be a list", "tools")),
    };
    let mut tools = Vec::with_capacity(items.len());
    for (i, tool) in items.iter().enumerate() {
        if tool.get("type").and_then(Value::as_str) != Some("function") {
            // Built-in OpenAI tools (web search, file search...) have no Claude counterpart.
            unsupported("tools")?;
            continue;
        }
        let function = tool.get("function").and_then(Value::as_object);
        let Some(name) = function.and_then(|f| f.get("name")).and_then(Value::as_str) else {
            return Err(bad(
                format!("tools[{i}].function.name is required"),
                format!("tools[{i}].function.name"),
            ));
        };
        let mut t = Json::new();
        t.insert("name".into(), name.into());
        if let Some(d) = function.and_then(|f| f.get("description")).filter(|d| d.is_string()) {
            t.insert("description".into(), d.clone());
        }
        let schema = function
            .and_then(|f| f.get("parameters"))
            .filter(|p| p.is_object())
            .cloned()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        t.insert("input_schema".into(), schema);
        if let Some(cc) = tool.get("cache_control") {
            t.insert("cache_control".into(), cc.clone());
        }
        tools.push(Value::Object(t));
    }
    Ok(Some(tools))
}

fn translate_tool_choice(
    value: &Value,
    unsupported: &dyn Fn(&str) -> Result<(), ProviderError>,
) -> Result<Option<Value>, ProviderError> {
    Ok(match value {
        Value::Null => None,
        Value::String(s) => match s.as_str() {
            "auto" => Some(json!({"type": "auto"})),
            "none" => Some(json!({"type": "none"})),
            "required" => Some(json!({"type": "any"})),
            other => {
                return Err(bad(format!("unknown tool_choice `{other}`"), "tool_choice"));
            }
        },
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| bad("tool_choice.function.name is required", "tool_choice"))?;
            Some(json!({"type": "tool", "name": name}))
        }
        _ => {
            // `allowed_tools` and custom-tool choices.
            unsupported("tool_choice")?;
            None
        }
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    User,
    Assistant,
}

struct Turn {
    role: Role,
    blocks: Vec<Value>,
}

/// Splits OpenAI messages into Anthropic's `system` and alternating `messages`.
fn translate_messages(messages: Option<&Value>) -> Result<(Option<Value>, Vec<Value>), ProviderError> {
    let Some(Value::Array(messages)) = messages else {
        return Err(bad("`messages` must be a list", "messages"));
    };
    let mut system = Vec::new();
    let mut turns: Vec<Turn> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let Some(msg) = m.as_object() else {
            return Err(bad(
                format!("messages[{i}] must be an object"),
                format!("messages[{i}]"),
            ));
        };
        let content = msg.get("content");
        match msg.get("role").and_then(Value::as_str).unwrap_or_default() {
            "system" | "developer" => system.extend(text_blocks(content, i)?),
            "user" => push_turn(&mut turns, Role::User, user_blocks(content, i)?),
            "assistant" => push_turn(&mut turns, Role::Assistant, assistant_blocks(msg, i)?),
            "tool" => push_turn(&mut turns, Role::User, vec![tool_result(msg, i)?]),
            other => {
                return Err(bad(
                    format!("messages[{i}].role `{other}` is not supported by anthropic backends"),
                    format!("messages[{i}].role"),
                ))
            }
        }
    }
    let system = match system.as_slice() {
        [] => None,
        [only] => Some(plain_text(only).map_or_else(|| Value::Array(system.clone()), |t| t.into())),
        _ => Some(Value::Array(system)),
    };
    let messages = turns
        .into_iter()
        .map(|t| {
            let role = match t.role {
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            json!({"role": role, "content": collapse(t.blocks)})
        })
        .collect();
    Ok((system, messages))
}

/// Merges consecutive turns of one role: Anthropic wants strict alternation.
fn push_turn(turns: &mut Vec<Turn>, role: Role, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some(last) if last.role == role => last.blocks.extend(blocks),
        _ => turns.push(Turn { role, blocks }),
    }
}

/// The text of a block that is nothing but text (no `cache_control`, no citations).
fn plain_text(block: &Value) -> Option<&str> {
    let o = block.as_object()?;
    (o.len() == 2 && o.get("type").and_then(Value::as_str) == Some("text"))
        .then(|| o.get("text").and_then(Value::as_str))
        .flatten()
}

/// One plain text block is sent as a string, the shape most requests have.
fn collapse(blocks: Vec<Value>) -> Value {
    match blocks.as_slice() {
        [only] => match plain_text(only) {
            Some(text) => text.into(),
            None => Value::Array(blocks),
        },
        _ => Value::Array(blocks),
    }
}

fn text_block(text: &str, part: Option<&Json>) -> Option<Value> {
    // Anthropic refuses empty text blocks.
    if text.is_empty() {
        return None;
    }
    let mut b = Json::new();
    b.insert("type".into(), "text".into());
    b.insert("text".into(), text.into());
    if let Some(cc) = part.and_then(|p| p.get("cache_control")) {
        b.insert("cache_control".into(), cc.clone());
    }
    Some(Value::Object(b))
}

/// Text-only content (system and developer messages).
fn text_blocks(content: Option<&Value>, i: usize) -> Result<Vec<Value>, ProviderError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(text_block(s, None).into_iter().collect()),
        Some(Value::Array(parts)) => {
            let mut blocks = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                let p = part.as_object();
                match (p.and_then(|p| p.get("type")).and_then(Value::as_str), p) {
                    (Some("text"), Some(p)) => {
                        let text = p.get("text").and_then(Value::as_str).unwrap_or_default();
                        blocks.extend(text_block(text, Some(p)));
                    }
                    _ => {
                        return Err(bad(
                            format!("messages[{i}].content[{j}]: only text parts are allowed here"),
                            format!("messages[{i}].content"),
                        ))
                    }
                }
            }
            Ok(blocks)
        }
        Some(_) => Err(bad(
            format!("messages[{i}].content must be a string or a list"),
            format!("messages[{i}].content"),
        )),
    }
}

/// User (and tool result) content: text, images and PDF files.
fn user_blocks(content: Option<&Value>, i: usize) -> Result<Vec<Value>, ProviderError> {
    let parts = match content {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => return Ok(text_block(s, None).into_iter().collect()),
        Some(Value::Array(parts)) => parts,
        Some(_) => {
            return Err(bad(
                format!("messages[{i}].content must be a string or a list"),
                format!("messages[{i}].content"),
            ))
        }
    };
    let mut blocks = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        let param = format!("messages[{i}].content[{j}]");
        let Some(p) = part.as_object() else {
            return Err(bad(format!("{param} must be an object"), param));
        };
        match p.get("type").and_then(Value::as_str).unwrap_or_default() {
            "text" => {
                let text = p.get("text").and_then(Value::as_str).unwrap_or_default();
                blocks.extend(text_block(text, Some(p)));
            }
            "image_url" => blocks.push(image_block(p, &param)?),
            "file" => blocks.push(document_block(p, &param)?),
            other => {
                return Err(bad(
                    format!("{param}: content parts of type `{other}` are not supported by anthropic backends"),
                    param,
                ))
            }
        }
    }
    Ok(blocks)
}

/// Splits a `data:<media type>;base64,<data>` URL.
fn data_url(url: &str) -> Option<(&str, &str)> {
    let (meta, data) = url.strip_prefix("data:")?.split_once(',')?;
    Some((meta.strip_suffix(";base64")?, data))
}

fn image_block(part: &Json, param: &str) -> Result<Value, ProviderError> {
    let image = part.get("image_url");
    let url = image
        .and_then(|i| i.get("url"))
        .or(image)
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("{param}.image_url.url is required"), param))?;
    let source = if let Some((media_type, data)) = data_url(url) {
        json!({"type": "base64", "media_type": media_type, "data": data})
    } else if url.starts_with("https://") || url.starts_with("http://") {
        json!({"type": "url", "url": url})
    } else {
        return Err(bad(
            format!("{param}: images must be http(s) URLs or base64 data: URLs"),
            param,
        ));
    };
    let mut b = Json::new();
    b.insert("type".into(), "image".into());
    b.insert("source".into(), source);
    if let Some(cc) = part.get("cache_control") {
        b.insert("cache_control".into(), cc.clone());
    }
    Ok(Value::Object(b))
}

fn document_block(part: &Json, param: &str) -> Result<Value, ProviderError> {
    let file = part.get("file");
    let Some((media_type, data)) = file
        .and_then(|f| f.get("file_data"))
        .and_then(Value::as_str)
        .and_then(data_url)
    else {
        // A `file_id` names a file in OpenAI's Files API, which Anthropic cannot read.
        return Err(bad(
            format!("{param}: files must be sent inline as base64 `file_data`"),
            param,
        ));
    };
    let mut b = Json::new();
    b.insert("type".into(), "document".into());
    b.insert(
        "source".into(),
        json!({"type": "base64", "media_type": media_type, "data": data}),
    );
    if let Some(name) = file.and_then(|f| f.get("filename")).filter(|n| n.is_string()) {
        b.insert("title".into(), name.clone());
    }
    if let Some(cc) = part.get("cache_control") {
        b.insert("cache_control".into(), cc.clone());
    }
    Ok(Value::Object(b))
}

fn assistant_blocks(msg: &Json, i: usize) -> Result<Vec<Value>, ProviderError> {
    let mut blocks = Vec::new();
    match msg.get("content") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => blocks.extend(text_block(s, None)),
        Some(Value::Array(parts)) => {
            for part in parts {
                let Some(p) = part.as_object() else { continue };
                let text = match p.get("type").and_then(Value::as_str) {
                    Some("text") => p.get("text"),
                    Some("refusal") => p.get("refusal"),
                    _ => {
                        return Err(bad(
                            format!("messages[{i}].content: assistant content must be text"),
                            format!("messages[{i}].content"),
                        ))
                    }
                };
                blocks.extend(text_block(text.and_then(Value::as_str).unwrap_or_default(), Some(p)));
            }
        }
        Some(_) => {
            return Err(bad(
                format!("messages[{i}].content must be a string or a list"),
                format!("messages[{i}].content"),
            ))
        }
    }
    if msg.get("function_call").is_some_and(|f| !f.is_null()) {
        return Err(bad(
            format!("messages[{i}].function_call is deprecated; send tool_calls"),
            format!("messages[{i}].function_call"),
        ));
    }
    if let Some(Value::Array(calls)) = msg.get("tool_calls") {
        for (j, call) in calls.iter().enumerate() {
            let param = format!("messages[{i}].tool_calls[{j}]");
            let id = call.get("id").and_then(Value::as_str);
            let function = call.get("function");
            let name = function.and_then(|f| f.get("name")).and_then(Value::as_str);
            let (Some(id), Some(name)) = (id, name) else {
                return Err(bad(format!("{param} needs an id and a function name"), param));
            };
            let arguments = function
                .and_then(|f| f.get("arguments"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            let input = if arguments.trim().is_empty() {
                json!({})
            } else {
                match serde_json::from_str::<Value>(arguments) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => {
                        return Err(bad(
                            format!("{param}.function.arguments must be a JSON object"),
                            format!("{param}.function.arguments"),
                        ))
                    }
                }
            };
            blocks.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
        }
    }
    Ok(blocks)
}

fn tool_result(msg: &Json, i: usize) -> Result<Value, ProviderError> {
    let id = msg.get("tool_call_id").and_then(Value::as_str).ok_or_else(|| {
        bad(
            format!("messages[{i}].tool_call_id is required"),
            format!("messages[{i}].tool_call_id"),
        )
    })?;
    let mut b = Json::new();
    b.insert("type".into(), "tool_result".into());
    b.insert("tool_use_id".into(), id.into());
    match msg.get("content") {
        Some(Value::String(s)) if !s.is_empty() => {
            b.insert("content".into(), s.as_str().into());
        }
        Some(content @ Value::Array(_)) => {
            let blocks = user_blocks(Some(content), i)?;
            if !blocks.is_empty() {
                b.insert("content".into(), Value::Array(blocks));
            }
        }
        _ => {}
    }
    Ok(Value::Object(b))
}

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
}

/// Running token counts of one response.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    input: u64,
    output: u64,
    cache_read: u64,
    cache_write: u64,
}

impl Counts {
    /// Takes the fields a usage object carries; counts in `message_delta` are cumulative.
    fn merge(&mut self, u: &WireUsage) {
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
    }

    fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.input + self.cache_read + self.cache_write,
            completion_tokens: self.output,
            cached_tokens: self.cache_read,
            cache_creation_tokens: self.cache_write,
        }
    }
}

/// OpenAI's usage object for a [`Usage`].
pub(crate) fn openai_usage(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total(),
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    })
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

fn protocol(message: impl std::fmt::Display) -> ProviderError {
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

// ---------------------------------------------------------------------------------------------
// Stream: Anthropic events -> OpenAI chat.completion.chunk events.

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StreamEvent {
    MessageStart {
        message: StartMessage,
    },
    ContentBlockStart {
        index: u64,
        content_block: StartBlock,
    },
    ContentBlockDelta {
        index: u64,
        delta: BlockDelta,
    },
    MessageDelta {
        #[serde(default)]
        delta: MessageDeltaBody,
        #[serde(default)]
        usage: Option<WireUsage>,
    },
    MessageStop,
    Error {
        error: WireError,
    },
    /// `ping`, `content_block_stop`, and event types of later API versions.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct StartMessage {
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StartBlock {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    ThinkingDelta {
        thinking: String,
    },
    /// `signature_delta`, `citations_delta` and later kinds.
    #[serde(other)]
    Other,
}

#[derive(Deserialize, Default)]
struct MessageDeltaBody {
    #[serde(default)]
    stop_reason: Option<String>,
}

/// Translates an Anthropic event stream into OpenAI `chat.completion.chunk` events: a role
/// chunk, content and tool-call deltas (index, id and name on a call's first delta, argument
/// fragments after), a `finish_reason` chunk, a usage chunk with no choices, `data: [DONE]`.
pub struct StreamToOpenAi {
    parser: Parser,
    created: u64,
    id: String,
    model: String,
    counts: Option<Counts>,
    /// Anthropic content block index -> OpenAI tool call index.
    tools: Vec<(u64, usize)>,
    done: bool,
}

impl StreamToOpenAi {
    /// A translator stamping chunks with `created` (Unix seconds).
    pub fn new(created: u64) -> Self {
        Self {
            parser: Parser::default(),
            created,
            id: String::new(),
            model: String::new(),
            counts: None,
            tools: Vec::new(),
            done: false,
        }
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Bytes {
        let v = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        });
        sse::data(&serde_json::to_vec(&v).unwrap_or_default())
    }

    fn event(&mut self, ev: StreamEvent, out: &mut Vec<Bytes>) -> Result<(), ProviderError> {
        match ev {
            StreamEvent::MessageStart { message } => {
                self.id = message.id;
                self.model = message.model;
                let mut counts = Counts::default();
                if let Some(u) = &message.usage {
                    counts.merge(u);
                }
                self.counts = Some(counts);
                out.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
            }
            StreamEvent::ContentBlockStart { index, content_block } => match content_block {
                StartBlock::Text { text } if !text.is_empty() => {
                    out.push(self.chunk(json!({ "content": text }), None));
                }
                StartBlock::ToolUse { id, name } => {
                    let call = self.tools.len();
                    self.tools.push((index, call));
                    out.push(self.chunk(
                        json!({"tool_calls": [{
                            "index": call,
                            "id": id,
                            "type": "function",
                            "function": {"name": name, "arguments": ""},
                        }]}),
                        None,
                    ));
                }
                _ => {}
            },
            StreamEvent::ContentBlockDelta { index, delta } => match delta {
                BlockDelta::TextDelta { text } if !text.is_empty() => {
                    out.push(self.chunk(json!({ "content": text }), None));
                }
                BlockDelta::InputJsonDelta { partial_json } if !partial_json.is_empty() => {
                    // Server tool blocks (web search...) stream input too; they are not the
                    // client's to call.
                    if let Some(&(_, call)) = self.tools.iter().find(|(block, _)| *block == index) {
                        out.push(self.chunk(
                            json!({"tool_calls": [{"index": call, "function": {"arguments": partial_json}}]}),
                            None,
                        ));
                    }
                }
                BlockDelta::ThinkingDelta { thinking } if !thinking.is_empty() => {
                    out.push(self.chunk(json!({ "reasoning_content": thinking }), None));
                }
                _ => {}
            },
            StreamEvent::MessageDelta { delta, usage } => {
                if let Some(u) = &usage {
                    self.counts.get_or_insert_with(Counts::default).merge(u);
                }
                if let Some(reason) = delta.stop_reason.as_deref() {
                    out.push(self.chunk(json!({}), Some(finish_reason(reason))));
                }
            }
            StreamEvent::MessageStop => {
                self.done = true;
                let usage = self.counts.unwrap_or_default().usage();
                let v = json!({
                    "id": self.id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.model,
                    "choices": [],
                    "usage": openai_usage(&usage),
                });
                out.push(sse::data(&serde_json::to_vec(&v).unwrap_or_default()));
                out.push(Bytes::from_static(sse::DONE));
            }
            StreamEvent::Error { error } => return Err(stream_error(error)),
            StreamEvent::Other => {}
        }
        Ok(())
    }
}

impl StreamTranslator for StreamToOpenAi {
    fn feed(&mut self, chunk: Bytes, out: &mut Vec<Bytes>) -> Result<(), ProviderError> {
        for ev in self.parser.feed(&chunk) {
            if self.done {
                break;
            }
            let event: StreamEvent = serde_json::from_str(&ev.data).map_err(|e| {
                ProviderError::new(
                    ErrorKind::Protocol,
                    format!("upstream sent a malformed stream event: {e}"),
                )
            })?;
            self.event(event, out)?;
        }
        Ok(())
    }

    fn finish(&mut self, _out: &mut Vec<Bytes>) -> Result<(), ProviderError> {
        if self.done {
            Ok(())
        } else {
            Err(ProviderError::new(
                ErrorKind::Protocol,
                "upstream stream ended before message_stop",
            ))
        }
    }

    fn usage(&self) -> Option<Usage> {
        self.counts.map(|c| c.usage())
    }

    fn complete(&self) -> bool {
        self.done
    }
}

// ---------------------------------------------------------------------------------------------
// Errors.

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: WireError,
}

/// The `error` object of Anthropic's error body and `error` stream event.
#[derive(Deserialize)]
pub struct WireError {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    message: String,
}

/// The class of an Anthropic error type (`status` decides for types this code does not know).
fn error_kind(ty: &str, message: &str, status: u16) -> ErrorKind {
    match ty {
        "invalid_request_error" if is_context_overflow(message) => ErrorKind::ContextWindow,
        "invalid_request_error" | "request_too_large" => ErrorKind::BadRequest,
        "authentication_error" => ErrorKind::Auth,
        // The account cannot be used for this: a provider-side problem, like a 403.
        "permission_error" | "billing_error" => ErrorKind::PermissionDenied,
        "not_found_error" => ErrorKind::NotFound,
        "rate_limit_error" => ErrorKind::RateLimit,
        "timeout_error" => ErrorKind::Timeout,
        "api_error" | "overloaded_error" => ErrorKind::Server,
        _ => kind_for_status(status),
    }
}

/// "prompt is too long: 208310 tokens > 200000 maximum", "input length and `max_tokens` exceed
/// context limit: ...".
fn is_context_overflow(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("prompt is too long") || m.contains("exceed context limit") || m.contains("context window")
}

/// Maps an `error` event that arrived in a stream after the 200.
fn stream_error(e: WireError) -> ProviderError {
    // The HTTP status each type has outside a stream (Anthropic's "Errors" reference).
    let status = match e.kind.as_str() {
        "invalid_request_error" => 400,
        "rate_limit_error" => 429,
        "overloaded_error" => 529,
        _ => 500,
    };
    ProviderError {
        kind: error_kind(&e.kind, &e.message, status),
        status: None,
        code: (!e.kind.is_empty()).then(|| e.kind.clone()),
        param: None,
        retry_after: None,
        message: e.message,
    }
}

/// Maps an Anthropic error response (`{"type":"error","error":{"type":..,"message":..}}`).
pub fn anthropic_error(status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError {
    let (kind, message, code) = match serde_json::from_slice::<ErrorEnvelope>(body) {
        Ok(ErrorEnvelope { error }) => (
            error_kind(&error.kind, &error.message, status),
            error.message,
            (!error.kind.is_empty()).then_some(error.kind),
        ),
        Err(_) => (
            kind_for_status(status),
            format!("upstream answered HTTP {status}"),
            None,
        ),
    };
    ProviderError {
        kind,
        status: Some(status),
        message,
        param: None,
        code,
        retry_after: retry_after(headers),
    }
}

#[cfg(test)]
mod tests;
