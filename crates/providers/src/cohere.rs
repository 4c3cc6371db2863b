//! Cohere's v2 API: `POST /v2/chat` (JSON, or server-sent events with `stream: true`) and
//! `POST /v2/embed`, translated to and from OpenAI's chat completions and embeddings.
//!
//! Cohere's chat is close to OpenAI's (roles, `tools` and `tool_calls` have the same shape); the
//! differences are parameter names (`p`, `k`, `stop_sequences`), `tool_choice` values, the
//! assistant's `tool_plan` (surfaced as `content`, and sent back as `tool_plan`), the response's
//! content blocks and `finish_reason`s, and the typed stream events.
//!
//! Reference: Cohere API reference v2 ("Chat", "Chat with Streaming", "Embed", "Errors"), and the
//! guides "Streaming", "Tool use" and "Structured outputs".

use std::collections::HashMap;

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

/// The Cohere adapter.
#[derive(Clone, Copy, Debug)]
pub struct Cohere;

/// Cohere.
pub static COHERE: Cohere = Cohere;

const NAME: &str = "cohere";

use crate::wire::{bad, bad_param, encode, unreadable};

fn unsupported(target: &Target<'_>, param: &str) -> Result<(), ProviderError> {
    if target.drop_unsupported_params {
        Ok(())
    } else {
        Err(ProviderError::unsupported_param(NAME, param))
    }
}

fn url(target: &Target<'_>, tail: &str) -> String {
    let base = target.provider.base_url.trim_end_matches('/');
    let root = base.strip_suffix("/v1").unwrap_or(base);
    if root.ends_with("/v2") {
        format!("{root}/{tail}")
    } else {
        format!("{root}/v2/{tail}")
    }
}

fn headers(target: &Target<'_>) -> Result<HeaderMap, ProviderError> {
    let mut h = HeaderMap::with_capacity(2 + target.provider.headers.len());
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (k, v) in &target.provider.headers {
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) else {
            continue;
        };
        h.insert(name, value);
    }
    if let Some(CredentialsConfig::ApiKey { key }) = &target.provider.credentials {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
            .map_err(|_| ProviderError::new(ErrorKind::Auth, "the provider's API key is not a valid header value"))?;
        value.set_sensitive(true);
        h.insert(http::header::AUTHORIZATION, value);
    }
    Ok(h)
}

fn unix_seconds(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Adapter for Cohere {
    fn build(
        &self,
        op: Operation,
        request: &Json,
        target: &Target<'_>,
        stream: bool,
    ) -> Result<UpstreamRequest, ProviderError> {
        let (url, body) = match op {
            Operation::Chat => (url(target, "chat"), encode(&chat_request(request, target, stream)?)?),
            Operation::Embeddings => (url(target, "embed"), encode(&embed_request(request, target)?)?),
            Operation::Rerank => (
                url(target, "rerank"),
                encode(&crate::rerank::cohere_request(request, target)?)?,
            ),
            _ => {
                return Err(bad(
                    "cohere backends serve /v1/chat/completions, /v1/embeddings and /v1/rerank only",
                ))
            }
        };
        Ok(UpstreamRequest {
            method: Method::POST,
            url,
            headers: headers(target)?,
            body,
        })
    }

    fn parse(&self, op: Operation, body: &[u8], target: &Target<'_>) -> Result<Translated, ProviderError> {
        match op {
            Operation::Chat => chat_response(body, target),
            Operation::Embeddings => embed_response(body, target),
            Operation::Rerank => crate::rerank::cohere_response(body),
            _ => Err(bad(
                "cohere backends serve /v1/chat/completions, /v1/embeddings and /v1/rerank only",
            )),
        }
    }

    fn stream(&self, _op: Operation, target: &Target<'_>) -> Box<dyn StreamTranslator> {
        Box::new(CohereStream::new(target))
    }

    fn error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        cohere_error(status, headers, body)
    }

    fn credentials(&self, target: &Target<'_>) -> Result<HeaderMap, ProviderError> {
        headers(target)
    }
}

// ---------------------------------------------------------------------------------------------
// Chat request
// ---------------------------------------------------------------------------------------------

/// The text of an OpenAI `content` (a string or text parts).
fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").or_else(|| p.get("refusal")).and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

fn user_content(content: Option<&Value>, i: usize) -> Result<Value, ProviderError> {
    match content {
        Some(Value::String(s)) => Ok(Value::String(s.clone())),
        Some(Value::Array(parts)) => {
            let mut out = Vec::with_capacity(parts.len());
            for (j, p) in parts.iter().enumerate() {
                match p.get("type").and_then(Value::as_str).unwrap_or("") {
                    "text" => {
                        out.push(json!({"type": "text", "text": p.get("text").and_then(Value::as_str).unwrap_or("")}))
                    }
                    // Cohere's vision models take OpenAI's `image_url` part as is.
                    "image_url" => {
                        let url = p
                            .get("image_url")
                            .and_then(|u| u.get("url").or(Some(u)))
                            .and_then(Value::as_str)
                            .ok_or_else(|| bad_param("image_url needs a url", format!("messages[{i}].content[{j}]")))?;
                        let mut image = json!({ "url": url });
                        if let Some(d) = p
                            .get("image_url")
                            .and_then(|u| u.get("detail"))
                            .filter(|d| !d.is_null())
                        {
                            image["detail"] = d.clone();
                        }
                        out.push(json!({"type": "image_url", "image_url": image}));
                    }
                    other => {
                        return Err(bad_param(
                            format!("content part type `{other}` is not supported by Cohere"),
                            format!("messages[{i}].content[{j}]"),
                        ))
                    }
                }
            }
            Ok(Value::Array(out))
        }
        _ => Err(bad_param(
            "message content must be a string or an array of parts",
            format!("messages[{i}].content"),
        )),
    }
}

fn messages(request: &Json) -> Result<Vec<Value>, ProviderError> {
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| bad_param("`messages` must be an array", "messages"))?;
    let mut out = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let content = m.get("content");
        match m.get("role").and_then(Value::as_str).unwrap_or("") {
            "system" | "developer" => out.push(json!({"role": "system", "content": content_text(content)})),
            "user" => out.push(json!({"role": "user", "content": user_content(content, i)?})),
            "assistant" => {
                let text = content_text(content);
                let mut msg = json!({"role": "assistant"});
                let calls: Vec<Value> = m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|tc| {
                        json!({
                            "id": tc.get("id").cloned().unwrap_or(Value::Null),
                            "type": "function",
                            "function": {
                                "name": tc.pointer("/function/name").cloned().unwrap_or(Value::Null),
                                "arguments": tc.pointer("/function/arguments").cloned().unwrap_or_else(|| "{}".into()),
                            },
                        })
                    })
                    .collect();
                if calls.is_empty() {
                    if text.is_empty() {
                        continue;
                    }
                    msg["content"] = text.into();
                } else {
                    // Text beside tool calls is Cohere's tool plan.
                    if !text.is_empty() {
                        msg["tool_plan"] = text.into();
                    }
                    msg["tool_calls"] = Value::Array(calls);
                }
                out.push(msg);
            }
            "tool" => {
                let id = m.get("tool_call_id").and_then(Value::as_str).ok_or_else(|| {
                    bad_param(
                        "tool message needs a tool_call_id",
                        format!("messages[{i}].tool_call_id"),
                    )
                })?;
                out.push(json!({"role": "tool", "tool_call_id": id, "content": content_text(content)}));
            }
            other => {
                return Err(bad_param(
                    format!("message role `{other}` is not supported by Cohere"),
                    format!("messages[{i}].role"),
                ))
            }
        }
    }
    Ok(out)
}

fn chat_request(request: &Json, target: &Target<'_>, stream: bool) -> Result<Json, ProviderError> {
    let mut body = Json::new();
    body.insert("model".into(), target.model.into());
    body.insert("messages".into(), Value::Array(messages(request)?));
    if stream {
        body.insert("stream".into(), true.into());
    }
    let mut max_tokens = None;
    let mut only_tool: Option<&str> = None;
    for (key, value) in request {
        if value.is_null() {
            continue;
        }
        let mut set = |name: &str| {
            body.insert(name.into(), value.clone());
        };
        match key.as_str() {
            "model"
            | "messages"
            | "stream"
            | "stream_options"
            | "user"
            | "parallel_tool_calls"
            | "store"
            | "metadata"
            | "service_tier"
            | "tools" => {}
            "temperature" => set("temperature"),
            // Cohere's `p` is 0.01..=0.99: OpenAI's default `top_p: 1` would be refused.
            "top_p" | "p" => {
                let p = crate::wire::clamped(value, 0.01, 0.99).unwrap_or_else(|| value.clone());
                body.insert("p".into(), p);
            }
            "top_k" | "k" => set("k"),
            "seed" => set("seed"),
            // Cohere's penalties are 0..=1, OpenAI's -2..=2.
            "frequency_penalty" | "presence_penalty" => {
                let v = crate::wire::clamped(value, 0.0, 1.0).unwrap_or_else(|| value.clone());
                body.insert(key.clone(), v);
            }
            // Log probabilities are not translated back.
            "logprobs" if value == &Value::Bool(false) => {}
            // Cohere's own fields, passed through.
            "safety_mode" | "documents" | "citation_options" | "strict_tools" | "thinking" => set(key),
            "max_completion_tokens" => max_tokens = Some(value.clone()),
            "max_tokens" => {
                max_tokens.get_or_insert_with(|| value.clone());
            }
            "stop" => set_stop(value, &mut body),
            "n" if value.as_u64() == Some(1) => {}
            "modalities" if value == &json!(["text"]) => {}
            "response_format" => {
                if let Some(f) = response_format(value)? {
                    body.insert("response_format".into(), f);
                }
            }
            "tool_choice" => match value {
                Value::String(s) if s == "auto" => {}
                Value::String(s) if s == "none" => {
                    body.insert("tool_choice".into(), "NONE".into());
                }
                Value::String(s) if s == "required" => {
                    body.insert("tool_choice".into(), "REQUIRED".into());
                }
                Value::Object(o) => {
                    // One named function: offer only it, and require a call.
                    only_tool = o.get("function").and_then(|f| f.get("name")).and_then(Value::as_str);
                    if only_tool.is_none() {
                        return Err(bad_param("tool_choice must name a function", "tool_choice"));
                    }
                    body.insert("tool_choice".into(), "REQUIRED".into());
                }
                _ => {
                    return Err(bad_param(
                        "tool_choice must be auto, none, required or a function",
                        "tool_choice",
                    ))
                }
            },
            other => unsupported(target, other)?,
        }
    }
    if let Some(m) = max_tokens {
        body.insert("max_tokens".into(), m);
    }
    if let Some(tools) = request.get("tools").filter(|t| !t.is_null()) {
        let tools = tools
            .as_array()
            .ok_or_else(|| bad_param("`tools` must be an array", "tools"))?;
        let mut out = Vec::with_capacity(tools.len());
        for (i, t) in tools.iter().enumerate() {
            if t.get("type").and_then(Value::as_str).unwrap_or("function") != "function" {
                unsupported(target, &format!("tools[{i}].type"))?;
                continue;
            }
            let Some(f) = t.get("function") else {
                return Err(bad_param("tool without a function", format!("tools[{i}]")));
            };
            let name = f.get("name").and_then(Value::as_str);
            if only_tool.is_some() && name != only_tool {
                continue;
            }
            let mut function = Json::new();
            for k in ["name", "description", "parameters"] {
                if let Some(v) = f.get(k).filter(|v| !v.is_null()) {
                    function.insert(k.into(), v.clone());
                }
            }
            out.push(json!({"type": "function", "function": function}));
        }
        if !out.is_empty() {
            body.insert("tools".into(), Value::Array(out));
        }
    }
    Ok(body)
}

fn set_stop(value: &Value, body: &mut Json) {
    let stops = match value {
        Value::String(s) => json!([s]),
        other => other.clone(),
    };
    body.insert("stop_sequences".into(), stops);
}

fn response_format(value: &Value) -> Result<Option<Value>, ProviderError> {
    Ok(match value.get("type").and_then(Value::as_str) {
        Some("text") => None,
        Some("json_object") => Some(json!({"type": "json_object"})),
        Some("json_schema") => {
            let mut f = json!({"type": "json_object"});
            if let Some(schema) = value.get("json_schema").and_then(|s| s.get("schema")) {
                f["json_schema"] = schema.clone();
            }
            Some(f)
        }
        _ => {
            return Err(bad_param(
                "response_format.type must be text, json_object or json_schema",
                "response_format",
            ))
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Chat response
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct ChatResponse {
    #[serde(default)]
    id: String,
    #[serde(default)]
    finish_reason: Option<String>,
    message: Message,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Vec<ContentItem>,
    #[serde(default)]
    tool_plan: Option<String>,
    #[serde(default)]
    tool_calls: Vec<ToolCall>,
}

#[derive(Deserialize)]
struct ContentItem {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thinking: Option<String>,
}

#[derive(Deserialize)]
struct ToolCall {
    #[serde(default)]
    id: Option<String>,
    function: ToolFunction,
}

#[derive(Deserialize)]
struct ToolFunction {
    #[serde(default)]
    name: String,
    #[serde(default)]
    arguments: Option<String>,
}

/// `usage`: `billed_units` (what Cohere charges) and `tokens` (what the model saw, its prompt
/// template included). Counts are numbers that some answers write as floats.
#[derive(Deserialize, Default, Clone, Copy)]
struct WireUsage {
    #[serde(default)]
    billed_units: Option<Units>,
    #[serde(default)]
    tokens: Option<Units>,
    #[serde(default)]
    cached_tokens: Option<f64>,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct Units {
    #[serde(default)]
    input_tokens: Option<f64>,
    #[serde(default)]
    output_tokens: Option<f64>,
}

impl WireUsage {
    /// Billed units when present (what budgets should count), else the raw token counts.
    fn usage(&self) -> Usage {
        let count = |pick: fn(&Units) -> Option<f64>| -> u64 {
            self.billed_units
                .as_ref()
                .and_then(pick)
                .or_else(|| self.tokens.as_ref().and_then(pick))
                .map_or(0, |n| n.max(0.0) as u64)
        };
        Usage {
            prompt_tokens: count(|u| u.input_tokens),
            completion_tokens: count(|u| u.output_tokens),
            cached_tokens: self.cached_tokens.map_or(0, |n| n.max(0.0) as u64),
            cache_write_tokens: 0,
            cache_write_1h_tokens: 0,
            reasoning_tokens: 0,
        }
    }
}

fn usage_json(u: &Usage) -> Value {
    u.openai_json()
}

/// OpenAI's finish reason for Cohere's; `Err` when Cohere reports a failed generation.
fn finish_reason(reason: &str) -> Result<&'static str, ProviderError> {
    Ok(match reason {
        "MAX_TOKENS" | "ERROR_LIMIT" => "length",
        "TOOL_CALL" => "tool_calls",
        "ERROR_TOXIC" => "content_filter",
        "ERROR" => {
            return Err(ProviderError {
                code: Some("ERROR".into()),
                ..ProviderError::new(ErrorKind::Server, "Cohere ended the generation with an error")
            })
        }
        _ => "stop",
    })
}

fn chat_response(body: &[u8], target: &Target<'_>) -> Result<Translated, ProviderError> {
    let r: ChatResponse = serde_json::from_slice(body).map_err(unreadable)?;
    let finish = finish_reason(r.finish_reason.as_deref().unwrap_or("COMPLETE"))?;
    let mut text = String::new();
    let mut reasoning = String::new();
    for item in &r.message.content {
        if let Some(t) = &item.text {
            text.push_str(t);
        }
        if let Some(t) = &item.thinking {
            reasoning.push_str(t);
        }
    }
    if text.is_empty() {
        if let Some(plan) = &r.message.tool_plan {
            text.clone_from(plan);
        }
    }
    let mut message = Json::new();
    message.insert("role".into(), "assistant".into());
    let has_calls = !r.message.tool_calls.is_empty();
    message.insert(
        "content".into(),
        if text.is_empty() && has_calls {
            Value::Null
        } else {
            Value::String(text)
        },
    );
    if !reasoning.is_empty() {
        message.insert("reasoning_content".into(), reasoning.into());
    }
    if has_calls {
        let calls: Vec<Value> = r
            .message
            .tool_calls
            .iter()
            .enumerate()
            .map(|(i, tc)| {
                json!({
                    "id": tc.id.clone().unwrap_or_else(|| format!("call_{i}")),
                    "type": "function",
                    "function": {"name": tc.function.name, "arguments": tc.function.arguments.as_deref().unwrap_or("{}")},
                })
            })
            .collect();
        message.insert("tool_calls".into(), Value::Array(calls));
    }
    message.insert("refusal".into(), Value::Null);
    let usage = r.usage.map(|u| u.usage());
    let mut out = json!({
        "id": r.id,
        "object": "chat.completion",
        "created": unix_seconds(target.now),
        "model": target.model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
    });
    if let Some(u) = &usage {
        out["usage"] = usage_json(u);
    }
    Ok(Translated {
        body: encode(&out)?,
        usage,
    })
}

// ---------------------------------------------------------------------------------------------
// Stream
// ---------------------------------------------------------------------------------------------

/// Translates Cohere's v2 chat stream (`message-start`, `content-*`, `tool-plan-delta`,
/// `tool-call-*`, `citation-*`, `message-end`) into OpenAI chunks. `message-end` is the terminal
/// event and carries the finish reason and the usage.
pub struct CohereStream {
    parser: Parser,
    id: String,
    created: u64,
    model: String,
    /// Cohere's tool-call index → ours.
    tool_index: HashMap<u64, usize>,
    tools: usize,
    usage: Option<Usage>,
    ended: bool,
    done: bool,
}

impl CohereStream {
    /// A translator for one response.
    pub fn new(target: &Target<'_>) -> Self {
        Self {
            parser: Parser::default(),
            id: String::new(),
            created: unix_seconds(target.now),
            model: target.model.to_owned(),
            tool_index: HashMap::new(),
            tools: 0,
            usage: None,
            ended: false,
            done: false,
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Result<Bytes, ProviderError> {
        let c = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        Ok(sse::data(&serde_json::to_vec(&c).map_err(unreadable)?))
    }

    fn event(&mut self, name: &str, data: &str, out: &mut Vec<Bytes>) -> Result<(), ProviderError> {
        let v: Value = serde_json::from_str(data)
            .map_err(|_| ProviderError::new(ErrorKind::Protocol, "upstream sent a malformed stream event"))?;
        let kind = v.get("type").and_then(Value::as_str).unwrap_or(name);
        let message = v.pointer("/delta/message");
        let text_at = |path: &str| {
            message
                .and_then(|m| m.pointer(path))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        match kind {
            "message-start" => {
                if let Some(id) = v.get("id").and_then(Value::as_str) {
                    self.id = id.to_owned();
                }
                out.push(self.chunk(json!({"role": "assistant", "content": ""}), None)?);
            }
            "content-start" | "content-delta" => {
                if let Some(t) = text_at("/content/text") {
                    out.push(self.chunk(json!({ "content": t }), None)?);
                }
                if let Some(t) = text_at("/content/thinking") {
                    out.push(self.chunk(json!({ "reasoning_content": t }), None)?);
                }
            }
            "tool-plan-delta" => {
                if let Some(t) = text_at("/tool_plan") {
                    out.push(self.chunk(json!({ "content": t }), None)?);
                }
            }
            "tool-call-start" => {
                let call = message.and_then(|m| m.get("tool_calls"));
                let ours = self.tools;
                self.tools += 1;
                if let Some(i) = v.get("index").and_then(Value::as_u64) {
                    self.tool_index.insert(i, ours);
                }
                let field = |p: &str| call.and_then(|c| c.pointer(p)).cloned().unwrap_or_else(|| "".into());
                let delta = json!({"tool_calls": [{
                    "index": ours,
                    "id": field("/id"),
                    "type": "function",
                    "function": {"name": field("/function/name"), "arguments": field("/function/arguments")},
                }]});
                out.push(self.chunk(delta, None)?);
            }
            "tool-call-delta" => {
                if let Some(args) = text_at("/tool_calls/function/arguments") {
                    let ours = v
                        .get("index")
                        .and_then(Value::as_u64)
                        .and_then(|i| self.tool_index.get(&i).copied())
                        .unwrap_or(self.tools.saturating_sub(1));
                    let delta = json!({"tool_calls": [{"index": ours, "function": {"arguments": args}}]});
                    out.push(self.chunk(delta, None)?);
                }
            }
            "message-end" => {
                let delta = v.get("delta");
                if let Some(u) = delta.and_then(|d| d.get("usage")) {
                    let u: WireUsage = serde_json::from_value(u.clone()).map_err(unreadable)?;
                    self.usage = Some(u.usage());
                }
                let reason = delta
                    .and_then(|d| d.get("finish_reason"))
                    .and_then(Value::as_str)
                    .unwrap_or("COMPLETE");
                let finish = finish_reason(reason).map_err(|e| {
                    match delta.and_then(|d| d.get("error")).and_then(Value::as_str) {
                        Some(m) => ProviderError {
                            message: m.to_owned(),
                            ..e
                        },
                        None => e,
                    }
                })?;
                self.ended = true;
                out.push(self.chunk(json!({}), Some(finish))?);
            }
            // content-end, tool-call-end, citation-start/-end, debug: nothing to forward.
            _ => {}
        }
        Ok(())
    }
}

impl StreamTranslator for CohereStream {
    fn feed(&mut self, chunk: Bytes, out: &mut Vec<Bytes>) -> Result<(), ProviderError> {
        for ev in self.parser.feed(&chunk)? {
            if ev.data.is_empty() || ev.data == "[DONE]" {
                continue;
            }
            self.event(&ev.event, &ev.data, out)?;
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<Bytes>) -> Result<(), ProviderError> {
        if !self.ended {
            return Err(ProviderError::new(
                ErrorKind::Protocol,
                "upstream stream ended before message-end",
            ));
        }
        if !self.done {
            if let Some(u) = self.usage {
                let c = json!({
                    "id": self.id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.model,
                    "choices": [],
                    "usage": usage_json(&u),
                });
                out.push(sse::data(&serde_json::to_vec(&c).map_err(unreadable)?));
            }
            out.push(Bytes::from_static(sse::DONE));
            self.done = true;
        }
        Ok(())
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }

    fn complete(&self) -> bool {
        self.ended
    }
}

// ---------------------------------------------------------------------------------------------
// Embeddings
// ---------------------------------------------------------------------------------------------

fn embed_request(request: &Json, target: &Target<'_>) -> Result<Json, ProviderError> {
    let not_text = || {
        bad_param(
            "input must be a string or an array of strings (token arrays are not supported)",
            "input",
        )
    };
    let texts: Vec<Value> = match request.get("input") {
        Some(Value::String(s)) => vec![Value::String(s.clone())],
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|v| v.as_str().map(|s| Value::String(s.to_owned())).ok_or_else(not_text))
            .collect::<Result<_, _>>()?,
        _ => return Err(not_text()),
    };
    let mut body = Json::new();
    body.insert("model".into(), target.model.into());
    body.insert("texts".into(), Value::Array(texts));
    // Required by embed v3+; `search_document` unless the client names one.
    body.insert("input_type".into(), "search_document".into());
    body.insert("embedding_types".into(), json!(["float"]));
    for (key, value) in request {
        match key.as_str() {
            _ if value.is_null() => {}
            // Floats are returned whatever the encoding asked (the OpenAI SDKs accept both).
            "model" | "input" | "user" | "encoding_format" => {}
            "dimensions" => {
                body.insert("output_dimension".into(), value.clone());
            }
            "input_type" | "truncate" => {
                body.insert(key.clone(), value.clone());
            }
            other => unsupported(target, other)?,
        }
    }
    Ok(body)
}

#[derive(Deserialize)]
struct EmbedResponse {
    embeddings: Embeddings,
    #[serde(default)]
    meta: Option<Meta>,
}

/// `embeddings_by_type` (`{"float": [[...]]}`) or the older `embeddings_floats` (`[[...]]`).
#[derive(Deserialize)]
#[serde(untagged)]
enum Embeddings {
    ByType {
        #[serde(default)]
        float: Option<Vec<Value>>,
    },
    Floats(Vec<Value>),
}

#[derive(Deserialize)]
struct Meta {
    #[serde(default)]
    billed_units: Option<Units>,
}

fn embed_response(body: &[u8], target: &Target<'_>) -> Result<Translated, ProviderError> {
    let r: EmbedResponse = serde_json::from_slice(body).map_err(unreadable)?;
    let vectors = match r.embeddings {
        Embeddings::ByType { float: Some(v) } | Embeddings::Floats(v) => v,
        Embeddings::ByType { float: None } => return Err(unreadable("no float embeddings in the response")),
    };
    let tokens = r
        .meta
        .and_then(|m| m.billed_units)
        .and_then(|b| b.input_tokens)
        .map(|n| n.max(0.0) as u64);
    Ok(crate::embeddings_list(vectors, target.model, tokens))
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: Option<String>,
}

/// Maps Cohere's `{"id","message"}` error body by status (498 is Cohere's invalid-token status).
pub fn cohere_error(status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError {
    let message = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .and_then(|b| b.message)
        .filter(|m| !m.is_empty());
    let lower = message.as_deref().unwrap_or("").to_ascii_lowercase();
    let kind = match status {
        400 | 422 if lower.contains("too many tokens") || lower.contains("context length") => ErrorKind::ContextWindow,
        401 | 498 => ErrorKind::Auth,
        402 => ErrorKind::PermissionDenied,
        499 => ErrorKind::Server,
        s => kind_for_status(s),
    };
    ProviderError {
        kind,
        status: Some(status),
        message: message.unwrap_or_else(|| format!("upstream answered HTTP {status}")),
        param: None,
        code: None,
        retry_after: retry_after(headers),
    }
}

#[cfg(test)]
mod tests;
