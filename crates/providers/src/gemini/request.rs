//! Gemini requests: `contents`, `generationConfig` and tools from an OpenAI chat request, and
//! the embeddings request of each front door.

use super::{Front, Google, SIGNATURE_SEPARATOR};
use crate::wire::bad_param;
use crate::{Json, ProviderError, Target};
use serde_json::{json, Value};
use std::collections::HashMap;

// ---------------------------------------------------------------------------------------------
// Chat request
// ---------------------------------------------------------------------------------------------

fn is_function_response_turn(content: &Value) -> bool {
    content
        .get("parts")
        .and_then(Value::as_array)
        .is_some_and(|parts| parts.iter().all(|p| p.get("functionResponse").is_some()))
}

/// Appends parts to the conversation, merging consecutive turns of one role: the responses to one
/// model turn's calls go back together, in one turn of their own (a user's text after them opens
/// a new turn, as Google's function-calling examples do).
fn push_turn(contents: &mut Vec<Value>, role: &str, parts: Vec<Value>) {
    if parts.is_empty() {
        return;
    }
    let responses = parts.iter().all(|p| p.get("functionResponse").is_some());
    if let Some(last) = contents.last_mut() {
        if last.get("role").and_then(Value::as_str) == Some(role) && is_function_response_turn(last) == responses {
            if let Some(existing) = last.get_mut("parts").and_then(Value::as_array_mut) {
                existing.extend(parts);
                return;
            }
        }
    }
    contents.push(json!({"role": role, "parts": parts}));
}

/// The text of an OpenAI `content` (a string or text/refusal parts).
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

/// Splits `data:<mime>;base64,<data>`.
fn data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let mime = meta.strip_suffix(";base64")?;
    Some((
        if mime.is_empty() {
            "application/octet-stream"
        } else {
            mime
        },
        data,
    ))
}

/// A MIME type from a URL's extension, for `fileData` (Vertex requires one).
fn mime_from_url(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase())?;
    Some(match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        "mp3" => "audio/mp3",
        "wav" => "audio/wav",
        "flac" => "audio/flac",
        "mp4" => "video/mp4",
        "mov" => "video/mov",
        "webm" => "video/webm",
        "txt" => "text/plain",
        _ => return None,
    })
}

/// `inlineData` for a data URL, `fileData` for anything else (https, gs://, Files API URIs).
fn media_part(url: &str, default_mime: Option<&str>) -> Value {
    match data_url(url) {
        Some((mime, data)) => json!({"inlineData": {"mimeType": mime, "data": data}}),
        None => {
            let mut file = Json::new();
            if let Some(mime) = mime_from_url(url).or(default_mime) {
                file.insert("mimeType".into(), mime.into());
            }
            file.insert("fileUri".into(), url.into());
            json!({ "fileData": file })
        }
    }
}

fn user_parts(content: Option<&Value>, i: usize) -> Result<Vec<Value>, ProviderError> {
    let parts = match content {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => return Ok(vec![json!({ "text": s })]),
        Some(Value::Array(parts)) => parts,
        Some(_) => {
            return Err(bad_param(
                "message content must be a string or an array of parts",
                format!("messages[{i}].content"),
            ))
        }
    };
    let mut out = Vec::with_capacity(parts.len());
    for (j, p) in parts.iter().enumerate() {
        let param = || format!("messages[{i}].content[{j}]");
        match p.get("type").and_then(Value::as_str).unwrap_or("") {
            "text" => out.push(json!({"text": p.get("text").and_then(Value::as_str).unwrap_or("")})),
            "image_url" => {
                let url = p
                    .get("image_url")
                    .and_then(|u| u.get("url").or(Some(u)))
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad_param("image_url needs a url", param()))?;
                out.push(media_part(url, Some("image/jpeg")));
            }
            "input_audio" => {
                let audio = p
                    .get("input_audio")
                    .ok_or_else(|| bad_param("input_audio needs data", param()))?;
                let data = audio.get("data").and_then(Value::as_str).unwrap_or("");
                let format = audio.get("format").and_then(Value::as_str).unwrap_or("wav");
                out.push(json!({"inlineData": {"mimeType": format!("audio/{format}"), "data": data}}));
            }
            "file" => {
                let file = p
                    .get("file")
                    .ok_or_else(|| bad_param("file part needs a file", param()))?;
                if let Some(d) = file.get("file_data").and_then(Value::as_str) {
                    out.push(media_part(d, None));
                } else if let Some(id) = file.get("file_id").and_then(Value::as_str) {
                    out.push(media_part(id, None));
                } else {
                    return Err(bad_param("file part needs file_data or file_id", param()));
                }
            }
            other => {
                return Err(bad_param(
                    format!("content part type `{other}` is not supported by Gemini"),
                    param(),
                ))
            }
        }
    }
    Ok(out)
}

/// A tool call's arguments as the object Gemini wants (`""` is no arguments).
fn call_args(arguments: Option<&Value>, param: impl Fn() -> String) -> Result<Value, ProviderError> {
    match arguments {
        None | Some(Value::Null) => Ok(json!({})),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(json!({})),
        Some(Value::String(s)) => serde_json::from_str::<Value>(s)
            .ok()
            .filter(Value::is_object)
            .ok_or_else(|| bad_param("tool call arguments must be a JSON object", param())),
        Some(v @ Value::Object(_)) => Ok(v.clone()),
        Some(_) => Err(bad_param("tool call arguments must be a JSON object", param())),
    }
}

/// A tool result as the object `functionResponse.response` must be.
fn tool_result(content: Option<&Value>) -> Value {
    let text = content_text(content);
    match serde_json::from_str::<Value>(&text) {
        Ok(v @ Value::Object(_)) => v,
        Ok(v) => json!({ "content": v }),
        Err(_) => json!({ "content": text }),
    }
}

pub(super) fn chat_request(g: &Google, request: &Json, target: &Target<'_>) -> Result<Json, ProviderError> {
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| bad_param("`messages` must be an array", "messages"))?;

    let mut system: Vec<Value> = Vec::new();
    let mut contents: Vec<Value> = Vec::new();
    let mut call_names: HashMap<&str, &str> = HashMap::new();
    for (i, m) in messages.iter().enumerate() {
        let content = m.get("content");
        match m.get("role").and_then(Value::as_str).unwrap_or("") {
            "system" | "developer" => {
                let text = content_text(content);
                if !text.is_empty() {
                    system.push(json!({ "text": text }));
                }
            }
            "user" => push_turn(&mut contents, "user", user_parts(content, i)?),
            "assistant" => {
                let mut parts = Vec::new();
                let text = content_text(content);
                if !text.is_empty() {
                    parts.push(json!({ "text": text }));
                }
                for (j, tc) in m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    let param = || format!("messages[{i}].tool_calls[{j}]");
                    let function = tc
                        .get("function")
                        .ok_or_else(|| bad_param("tool call without a function", param()))?;
                    let name = function
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| bad_param("tool call without a name", param()))?;
                    let args = call_args(function.get("arguments"), param)?;
                    let id = tc.get("id").and_then(Value::as_str).unwrap_or("");
                    call_names.insert(id, name);
                    let mut part = json!({"functionCall": {"name": name, "args": args}});
                    if let Some((_, signature)) = id.split_once(SIGNATURE_SEPARATOR) {
                        part["thoughtSignature"] = signature.into();
                    }
                    parts.push(part);
                }
                push_turn(&mut contents, "model", parts);
            }
            "tool" => {
                let id = m.get("tool_call_id").and_then(Value::as_str).unwrap_or("");
                let name = call_names
                    .get(id)
                    .copied()
                    .or_else(|| m.get("name").and_then(Value::as_str))
                    .ok_or_else(|| {
                        bad_param(
                            format!("tool message answers unknown tool call `{id}`"),
                            format!("messages[{i}].tool_call_id"),
                        )
                    })?;
                let part = json!({"functionResponse": {"name": name, "response": tool_result(content)}});
                push_turn(&mut contents, "user", vec![part]);
            }
            "function" => {
                let name = m
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad_param("function message needs a name", format!("messages[{i}].name")))?;
                let part = json!({"functionResponse": {"name": name, "response": tool_result(content)}});
                push_turn(&mut contents, "user", vec![part]);
            }
            other => {
                return Err(bad_param(
                    format!("unknown message role `{other}`"),
                    format!("messages[{i}].role"),
                ))
            }
        }
    }

    let mut body = Json::new();
    body.insert("contents".into(), Value::Array(contents));
    if !system.is_empty() {
        body.insert("systemInstruction".into(), json!({ "parts": system }));
    }

    // Gemini-native generation settings are the base; the OpenAI parameters override them.
    let mut generation = Json::new();
    for key in ["generationConfig", "generation_config"] {
        if let Some(Value::Object(native)) = request.get(key) {
            generation.extend(native.clone());
        }
    }
    let mut max_tokens = None;
    for (key, value) in request {
        if value.is_null() {
            continue;
        }
        let mut set = |name: &str| {
            generation.insert(name.into(), value.clone());
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
            | "tools"
            | "tool_choice"
            | "generationConfig"
            | "generation_config" => {}
            "temperature" => set("temperature"),
            "top_p" => set("topP"),
            "top_k" => set("topK"),
            "n" => set("candidateCount"),
            "presence_penalty" => set("presencePenalty"),
            "frequency_penalty" => set("frequencyPenalty"),
            "seed" => set("seed"),
            "max_completion_tokens" => max_tokens = Some(value.clone()),
            "max_tokens" => {
                max_tokens.get_or_insert_with(|| value.clone());
            }
            "stop" => {
                let stops = match value {
                    Value::String(s) => json!([s]),
                    other => other.clone(),
                };
                generation.insert("stopSequences".into(), stops);
            }
            "response_format" => response_format(value, &mut generation)?,
            "reasoning_effort" => reasoning_effort(value, target.model, &mut generation),
            "logprobs" if value == &Value::Bool(false) => {}
            "modalities" if value == &json!(["text"]) => {}
            "safetySettings" | "safety_settings" => {
                body.insert("safetySettings".into(), value.clone());
            }
            "cachedContent" | "cached_content" => {
                body.insert("cachedContent".into(), value.clone());
            }
            "labels" if g.front == Front::Vertex => {
                body.insert("labels".into(), value.clone());
            }
            other => g.unsupported(target, other)?,
        }
    }
    if let Some(m) = max_tokens {
        generation.insert("maxOutputTokens".into(), m);
    }
    if !generation.is_empty() {
        body.insert("generationConfig".into(), Value::Object(generation));
    }

    if let Some(tools) = request.get("tools").filter(|t| !t.is_null()) {
        let declarations = function_declarations(g, tools, target)?;
        if !declarations.is_empty() {
            body.insert("tools".into(), json!([{ "functionDeclarations": declarations }]));
        }
    }
    if let Some(choice) = request.get("tool_choice").filter(|t| !t.is_null()) {
        body.insert(
            "toolConfig".into(),
            json!({ "functionCallingConfig": function_calling_config(choice)? }),
        );
    }
    Ok(body)
}

pub(super) fn response_format(value: &Value, generation: &mut Json) -> Result<(), ProviderError> {
    match value.get("type").and_then(Value::as_str) {
        Some("text") => {}
        Some("json_object") => {
            generation.insert("responseMimeType".into(), "application/json".into());
        }
        Some("json_schema") => {
            generation.insert("responseMimeType".into(), "application/json".into());
            if let Some(schema) = value.get("json_schema").and_then(|s| s.get("schema")) {
                generation.insert("responseJsonSchema".into(), schema.clone());
            }
        }
        _ => {
            return Err(bad_param(
                "response_format.type must be text, json_object or json_schema",
                "response_format",
            ))
        }
    }
    Ok(())
}

/// `reasoning_effort` as Gemini thinking: a level on Gemini 3, a token budget before it (the
/// budgets Google's OpenAI-compatible endpoint uses).
pub(super) fn reasoning_effort(value: &Value, model: &str, generation: &mut Json) {
    let effort = value.as_str().unwrap_or("medium");
    let thinking = if model.contains("gemini-3") {
        let level = match effort {
            "none" | "minimal" | "low" => "low",
            _ => "high",
        };
        json!({ "thinkingLevel": level })
    } else {
        let budget = match effort {
            "none" => 0,
            "minimal" | "low" => 1024,
            "medium" => 8192,
            _ => 24576,
        };
        json!({ "thinkingBudget": budget })
    };
    generation.insert("thinkingConfig".into(), thinking);
}

fn function_declarations(g: &Google, tools: &Value, target: &Target<'_>) -> Result<Vec<Value>, ProviderError> {
    let tools = tools
        .as_array()
        .ok_or_else(|| bad_param("`tools` must be an array", "tools"))?;
    let mut out = Vec::with_capacity(tools.len());
    for (i, t) in tools.iter().enumerate() {
        if t.get("type").and_then(Value::as_str).unwrap_or("function") != "function" {
            g.unsupported(target, &format!("tools[{i}].type"))?;
            continue;
        }
        let f = t
            .get("function")
            .ok_or_else(|| bad_param("tool without a function", format!("tools[{i}]")))?;
        let name = f
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| bad_param("function without a name", format!("tools[{i}].function.name")))?;
        let mut decl = Json::new();
        decl.insert("name".into(), name.into());
        if let Some(d) = f.get("description").filter(|d| !d.is_null()) {
            decl.insert("description".into(), d.clone());
        }
        // Full JSON Schema, as OpenAI clients write it (the OpenAPI-subset `parameters` rejects
        // `additionalProperties`, `$defs`...).
        if let Some(p) = f.get("parameters").filter(|p| !p.is_null()) {
            decl.insert("parametersJsonSchema".into(), p.clone());
        }
        out.push(Value::Object(decl));
    }
    Ok(out)
}

fn function_calling_config(choice: &Value) -> Result<Value, ProviderError> {
    Ok(match choice {
        Value::String(s) => match s.as_str() {
            "auto" => json!({"mode": "AUTO"}),
            "none" => json!({"mode": "NONE"}),
            "required" => json!({"mode": "ANY"}),
            other => return Err(bad_param(format!("unknown tool_choice `{other}`"), "tool_choice")),
        },
        Value::Object(o) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| bad_param("tool_choice must name a function", "tool_choice"))?;
            json!({"mode": "ANY", "allowedFunctionNames": [name]})
        }
        _ => return Err(bad_param("tool_choice must be a string or an object", "tool_choice")),
    })
}

// ---------------------------------------------------------------------------------------------
// Embeddings
// ---------------------------------------------------------------------------------------------

fn embed_inputs(request: &Json) -> Result<Vec<&str>, ProviderError> {
    let not_text = || {
        bad_param(
            "input must be a string or an array of strings (token arrays are not supported)",
            "input",
        )
    };
    match request.get("input") {
        Some(Value::String(s)) => Ok(vec![s.as_str()]),
        Some(Value::Array(items)) if !items.is_empty() => {
            items.iter().map(|v| v.as_str().ok_or_else(not_text)).collect()
        }
        _ => Err(not_text()),
    }
}

pub(super) fn embed_request(
    g: &Google,
    request: &Json,
    target: &Target<'_>,
) -> Result<(&'static str, Value), ProviderError> {
    let inputs = embed_inputs(request)?;
    let mut dimensions = None;
    let mut task_type = None;
    for (key, value) in request {
        match key.as_str() {
            _ if value.is_null() => {}
            // Floats are returned whatever the encoding asked (the OpenAI SDKs accept both).
            "model" | "input" | "user" | "encoding_format" => {}
            "dimensions" => dimensions = Some(value.clone()),
            "task_type" | "taskType" => task_type = Some(value.clone()),
            other => g.unsupported(target, other)?,
        }
    }
    let model = target.model.strip_prefix("models/").unwrap_or(target.model);
    Ok(match g.front {
        Front::GeminiApi => {
            let request_for = |text: &str| {
                let mut r = Json::new();
                r.insert("model".into(), format!("models/{model}").into());
                r.insert("content".into(), json!({"parts": [{"text": text}]}));
                if let Some(t) = &task_type {
                    r.insert("taskType".into(), t.clone());
                }
                if let Some(d) = &dimensions {
                    r.insert("outputDimensionality".into(), d.clone());
                }
                Value::Object(r)
            };
            match inputs.as_slice() {
                [one] => ("embedContent", request_for(one)),
                many => (
                    "batchEmbedContents",
                    json!({"requests": many.iter().map(|t| request_for(t)).collect::<Vec<_>>()}),
                ),
            }
        }
        Front::Vertex => {
            let instances: Vec<Value> = inputs
                .iter()
                .map(|t| match &task_type {
                    Some(tt) => json!({"content": t, "task_type": tt}),
                    None => json!({ "content": t }),
                })
                .collect();
            let mut body = json!({ "instances": instances });
            if let Some(d) = dimensions {
                body["parameters"] = json!({ "outputDimensionality": d });
            }
            ("predict", body)
        }
    })
}
