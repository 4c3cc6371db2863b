//! Request: OpenAI chat -> Anthropic Messages.

use super::{bad, DEFAULT_MAX_TOKENS, NAME};
use crate::{Json, ProviderError};
use serde_json::{json, Value};

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
            // Claude takes both in 0..=1 (OpenAI's temperature goes to 2).
            "temperature" | "top_p" => {
                if !value.is_null() {
                    let v = crate::wire::clamped(value, 0.0, 1.0)
                        .ok_or_else(|| bad(format!("`{key}` must be a number"), key))?;
                    out.insert(key.clone(), v);
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

pub(super) fn stop_sequences(value: &Value) -> Result<Option<Value>, ProviderError> {
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
pub(super) fn collapse(blocks: Vec<Value>) -> Value {
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

pub(super) fn tool_result(msg: &Json, i: usize) -> Result<Value, ProviderError> {
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
