//! Google Gemini, through its two front doors: the Gemini API (`generativelanguage.googleapis.com`,
//! API key in `x-goog-api-key`) and Vertex AI (`{region}-aiplatform.googleapis.com`, OAuth 2.0
//! bearer token). Both speak `generateContent`; they differ in URL layout, auth and embeddings
//! (`embedContent`/`batchEmbedContents` on the Gemini API, `predict` on Vertex).
//!
//! Translates OpenAI chat requests into `contents`/`parts`, `systemInstruction`,
//! `generationConfig`, `tools.functionDeclarations` and `toolConfig`, and `GenerateContentResponse`
//! (whole or as `?alt=sse` events) back into `chat.completion` / `chat.completion.chunk`.
//! Gemini's function calls carry no ids, so tool calls get `call_<n>`; a call's `thoughtSignature`
//! (which Gemini 3 requires back on the next turn) rides in the id after [`SIGNATURE_SEPARATOR`].
//! Claude models on Vertex (`claude-*`) go to Anthropic's publisher (`rawPredict`,
//! `streamRawPredict`) with the Messages body of [`crate::anthropic`], the model in the URL and
//! `anthropic_version` in the body.
//!
//! Must not do I/O: the gateway obtains Vertex access tokens with [`vertex::token_request`] and
//! [`vertex::parse_token`], caches them, and passes them in [`Target::bearer`].
//!
//! Reference: Gemini API reference ("Generating content", "Embeddings", "Caching", error
//! codes), Vertex AI reference (`projects.locations.publishers.models.generateContent`,
//! `predict` for text embeddings, Claude on Vertex `rawPredict`), Google AIP-193 errors.

pub mod vertex;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde::Deserialize;
use serde_json::{json, Value};
use switchyard_config::CredentialsConfig;

use crate::anthropic;
use crate::sse::{self, Parser};
use crate::{
    kind_for_status, retry_after, Adapter, ErrorKind, Json, Operation, ProviderError, StreamTranslator, Target,
    Translated, UpstreamRequest, Usage,
};

/// Separates the generated tool-call id from Gemini's `thoughtSignature` in the ids we hand out.
pub const SIGNATURE_SEPARATOR: &str = "__thought__";

/// Which door to Gemini.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Front {
    /// The Gemini API (Google AI Studio keys).
    GeminiApi,
    /// Vertex AI.
    Vertex,
}

/// A Google adapter.
#[derive(Clone, Copy, Debug)]
pub struct Google {
    /// Provider name in messages.
    pub name: &'static str,
    /// Which door.
    pub front: Front,
}

/// The Gemini API.
pub static GEMINI: Google = Google {
    name: "gemini",
    front: Front::GeminiApi,
};

/// Vertex AI.
pub static VERTEX: Google = Google {
    name: "vertex",
    front: Front::Vertex,
};

use crate::wire::{bad, bad_param, encode, unreadable};

fn unix_seconds(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Whether a Vertex model is served by Anthropic's publisher (`rawPredict`, Messages API body).
fn is_claude(model: &str) -> bool {
    model.starts_with("claude")
}

/// `anthropic_version` in the body of Claude requests on Vertex AI.
pub const VERTEX_ANTHROPIC_VERSION: &str = "vertex-2023-10-16";

/// The Anthropic Messages body for Claude on Vertex: the model is in the URL, the version in the
/// body.
fn claude_request(request: &Json, target: &Target<'_>, stream: bool) -> Result<Json, ProviderError> {
    // Vertex names versions `claude-sonnet-4@20250514`; the model table knows the bare name.
    let model = target.model.split('@').next().unwrap_or(target.model);
    let mut body = anthropic::request_body(request, model, target.drop_unsupported_params, stream)?;
    body.remove("model");
    body.insert("anthropic_version".into(), VERTEX_ANTHROPIC_VERSION.into());
    Ok(body)
}

fn is_anthropic_error(body: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Shape {
        #[serde(rename = "type")]
        kind: Option<String>,
    }
    serde_json::from_slice::<Shape>(body).is_ok_and(|s| s.kind.as_deref() == Some("error"))
}

impl Google {
    fn url(&self, target: &Target<'_>, publisher: &str, method: &str, sse: bool) -> Result<String, ProviderError> {
        let base = target.provider.base_url.trim_end_matches('/');
        let model = target.model.strip_prefix("models/").unwrap_or(target.model);
        let query = if sse { "?alt=sse" } else { "" };
        match self.front {
            Front::GeminiApi => {
                let root = if base.ends_with("/v1beta") || base.ends_with("/v1") {
                    base.to_owned()
                } else {
                    format!("{base}/v1beta")
                };
                Ok(format!("{root}/models/{model}:{method}{query}"))
            }
            Front::Vertex => {
                let project = vertex_project(target)?;
                let location = vertex_location(target);
                let root = if base.ends_with("/v1") || base.ends_with("/v1beta1") {
                    base.to_owned()
                } else {
                    format!("{base}/v1")
                };
                Ok(format!(
                    "{root}/projects/{project}/locations/{location}/publishers/{publisher}/models/{model}:{method}{query}"
                ))
            }
        }
    }

    fn headers(&self, target: &Target<'_>) -> Result<HeaderMap, ProviderError> {
        let mut h = HeaderMap::with_capacity(2 + target.provider.headers.len());
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (k, v) in &target.provider.headers {
            let (Ok(name), Ok(value)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) else {
                continue;
            };
            h.insert(name, value);
        }
        let (name, value) = match self.front {
            Front::GeminiApi => match &target.provider.credentials {
                Some(CredentialsConfig::ApiKey { key }) => {
                    (HeaderName::from_static("x-goog-api-key"), key.expose().to_owned())
                }
                _ => return Ok(h),
            },
            Front::Vertex => match target.bearer {
                Some(token) => (http::header::AUTHORIZATION, format!("Bearer {token}")),
                None => {
                    return Err(ProviderError::new(
                        ErrorKind::Auth,
                        "no access token for the Vertex AI provider",
                    ))
                }
            },
        };
        let mut value = HeaderValue::from_str(&value).map_err(|_| {
            ProviderError::new(ErrorKind::Auth, "the provider's credential is not a valid header value")
        })?;
        value.set_sensitive(true);
        h.insert(name, value);
        Ok(h)
    }

    fn unsupported(&self, target: &Target<'_>, param: &str) -> Result<(), ProviderError> {
        if target.drop_unsupported_params {
            Ok(())
        } else {
            Err(ProviderError::unsupported_param(self.name, param))
        }
    }
}

/// The Vertex project: the provider's, else the service account's.
fn vertex_project(target: &Target<'_>) -> Result<String, ProviderError> {
    if let Some(p) = target.provider.project.as_deref().filter(|p| !p.is_empty()) {
        return Ok(p.to_owned());
    }
    if let Some(CredentialsConfig::ServiceAccount { json }) = &target.provider.credentials {
        if let Some(p) = vertex::project_id(json.expose()) {
            return Ok(p);
        }
    }
    Err(bad("the Vertex AI provider names no project (set spec.vertex.project)"))
}

/// The Vertex location: the provider's region, else the one in the regional host, else `global`
/// for the global host.
fn vertex_location(target: &Target<'_>) -> String {
    if let Some(r) = target.provider.region.as_deref().filter(|r| !r.is_empty()) {
        return r.to_owned();
    }
    let host = target
        .provider
        .base_url
        .split("://")
        .nth(1)
        .unwrap_or("")
        .split('/')
        .next()
        .unwrap_or("");
    match host.strip_suffix("-aiplatform.googleapis.com") {
        Some(region) if !region.is_empty() => region.to_owned(),
        _ if host == "aiplatform.googleapis.com" => "global".to_owned(),
        _ => "us-central1".to_owned(),
    }
}

impl Adapter for Google {
    fn build(
        &self,
        op: Operation,
        request: &Json,
        target: &Target<'_>,
        stream: bool,
    ) -> Result<UpstreamRequest, ProviderError> {
        let (url, body) = match op {
            Operation::Chat => {
                if self.front == Front::Vertex && is_claude(target.model) {
                    let method = if stream { "streamRawPredict" } else { "rawPredict" };
                    let body = claude_request(request, target, stream)?;
                    return Ok(UpstreamRequest {
                        method: Method::POST,
                        url: self.url(target, "anthropic", method, false)?,
                        headers: self.headers(target)?,
                        body: encode(&body)?,
                    });
                }
                let body = chat_request(self, request, target)?;
                let method = if stream {
                    "streamGenerateContent"
                } else {
                    "generateContent"
                };
                (self.url(target, "google", method, stream)?, encode(&body)?)
            }
            Operation::Embeddings => {
                let (method, body) = embed_request(self, request, target)?;
                (self.url(target, "google", method, false)?, encode(&body)?)
            }
            Operation::Completions | Operation::Responses => {
                return Err(bad(format!(
                    "{} backends serve /v1/chat/completions and /v1/embeddings only",
                    self.name
                )))
            }
        };
        Ok(UpstreamRequest {
            method: Method::POST,
            url,
            headers: self.headers(target)?,
            body,
        })
    }

    fn parse(&self, op: Operation, body: &[u8], target: &Target<'_>) -> Result<Translated, ProviderError> {
        match op {
            Operation::Chat if self.front == Front::Vertex && is_claude(target.model) => {
                anthropic::response_to_openai(body, unix_seconds(target.now))
            }
            Operation::Chat => chat_response(body, target),
            Operation::Embeddings => embed_response(body, target),
            Operation::Completions | Operation::Responses => Err(bad(format!(
                "{} backends serve /v1/chat/completions and /v1/embeddings only",
                self.name
            ))),
        }
    }

    fn stream(&self, _op: Operation, target: &Target<'_>) -> Box<dyn StreamTranslator> {
        if self.front == Front::Vertex && is_claude(target.model) {
            return Box::new(anthropic::StreamToOpenAi::new(unix_seconds(target.now)));
        }
        Box::new(GeminiStream::new(target))
    }

    fn error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        // Claude on Vertex answers in Anthropic's error shape once the request reaches the model;
        // Vertex's own front (auth, quota) answers in Google's.
        if self.front == Front::Vertex && is_anthropic_error(body) {
            return anthropic::anthropic_error(status, headers, body);
        }
        google_error(status, headers, body)
    }
}

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

fn chat_request(g: &Google, request: &Json, target: &Target<'_>) -> Result<Json, ProviderError> {
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

fn response_format(value: &Value, generation: &mut Json) -> Result<(), ProviderError> {
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
fn reasoning_effort(value: &Value, model: &str, generation: &mut Json) {
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
// Chat response
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct GenerateResponse {
    #[serde(default)]
    candidates: Vec<Candidate>,
    #[serde(default)]
    prompt_feedback: Option<PromptFeedback>,
    #[serde(default)]
    usage_metadata: Option<UsageMetadata>,
    #[serde(default)]
    model_version: Option<String>,
    #[serde(default)]
    response_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    index: Option<u32>,
}

#[derive(Deserialize)]
struct Content {
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
struct PromptFeedback {
    #[serde(default)]
    block_reason: Option<String>,
    #[serde(default)]
    block_reason_message: Option<String>,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
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
    fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_token_count + self.tool_use_prompt_token_count,
            completion_tokens: self.candidates_token_count + self.thoughts_token_count,
            cached_tokens: self.cached_content_token_count,
            cache_creation_tokens: 0,
        }
    }

    fn json(&self) -> Value {
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

fn blocked(feedback: &PromptFeedback) -> Option<ProviderError> {
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

fn finish_reason(reason: &str, tool_calls: bool) -> &'static str {
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
struct Turn {
    text: String,
    reasoning: String,
    tool_calls: Vec<Value>,
}

/// Translates parts; `next_call` numbers tool calls across the response.
fn turn(content: Option<&Content>, next_call: &mut usize) -> Turn {
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

fn chat_id(response_id: Option<&str>, created: u64) -> String {
    match response_id {
        Some(id) if !id.is_empty() => format!("chatcmpl-{id}"),
        _ => format!("chatcmpl-gemini-{created}"),
    }
}

fn chat_response(body: &[u8], target: &Target<'_>) -> Result<Translated, ProviderError> {
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

// ---------------------------------------------------------------------------------------------
// Stream
// ---------------------------------------------------------------------------------------------

/// Translates `streamGenerateContent?alt=sse`: each event is a whole `GenerateContentResponse`
/// holding the next slice of each candidate; usage is cumulative; a candidate ends with its
/// `finishReason`. There is no terminator event, so the stream is complete once every candidate
/// seen has finished.
pub struct GeminiStream {
    parser: Parser,
    id: Option<String>,
    created: u64,
    model: String,
    next_call: usize,
    /// Per choice: whether its role was sent, and how many tool calls it made.
    choices: BTreeMap<u32, (bool, usize)>,
    finished: BTreeSet<u32>,
    usage: Option<UsageMetadata>,
    done: bool,
}

impl GeminiStream {
    /// A translator for one response.
    pub fn new(target: &Target<'_>) -> Self {
        Self {
            parser: Parser::default(),
            id: None,
            created: unix_seconds(target.now),
            model: target.model.to_owned(),
            next_call: 0,
            choices: BTreeMap::new(),
            finished: BTreeSet::new(),
            usage: None,
            done: false,
        }
    }

    fn chunk(&self, choices: Value, usage: Option<Value>) -> Result<Bytes, ProviderError> {
        let mut c = json!({
            "id": self.id.as_deref().unwrap_or(""),
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        });
        if let Some(u) = usage {
            c["usage"] = u;
        }
        Ok(sse::data(&serde_json::to_vec(&c).map_err(unreadable)?))
    }

    fn event(&mut self, data: &str, out: &mut Vec<Bytes>) -> Result<(), ProviderError> {
        let value: Value = serde_json::from_str(data)
            .map_err(|_| ProviderError::new(ErrorKind::Protocol, "upstream sent a malformed stream event"))?;
        if value.get("error").is_some() {
            let status = value["error"]["code"]
                .as_u64()
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(500);
            return Err(google_error(status, &HeaderMap::new(), data.as_bytes()));
        }
        let r: GenerateResponse = serde_json::from_value(value).map_err(unreadable)?;
        if self.id.is_none() {
            self.id = Some(chat_id(r.response_id.as_deref(), self.created));
            if let Some(m) = &r.model_version {
                self.model.clone_from(m);
            }
        }
        if let Some(u) = r.usage_metadata {
            self.usage = Some(u);
        }
        if r.candidates.is_empty() {
            if let Some(e) = r.prompt_feedback.as_ref().and_then(blocked) {
                return Err(e);
            }
        }
        for (i, c) in r.candidates.iter().enumerate() {
            let index = c.index.unwrap_or(i as u32);
            let t = turn(c.content.as_ref(), &mut self.next_call);
            let (role_sent, calls) = self.choices.entry(index).or_insert((false, 0));
            let mut delta = Json::new();
            if !*role_sent {
                delta.insert("role".into(), "assistant".into());
                *role_sent = true;
            }
            if !t.text.is_empty() {
                delta.insert("content".into(), t.text.into());
            }
            if !t.reasoning.is_empty() {
                delta.insert("reasoning_content".into(), t.reasoning.into());
            }
            if !t.tool_calls.is_empty() {
                let indexed: Vec<Value> = t
                    .tool_calls
                    .into_iter()
                    .map(|mut tc| {
                        tc["index"] = (*calls).into();
                        *calls += 1;
                        tc
                    })
                    .collect();
                delta.insert("tool_calls".into(), Value::Array(indexed));
            }
            let finish = c.finish_reason.as_deref().map(|f| finish_reason(f, *calls > 0));
            if delta.is_empty() && finish.is_none() {
                continue;
            }
            if finish.is_some() {
                self.finished.insert(index);
            }
            let choice = json!([{"index": index, "delta": delta, "logprobs": null, "finish_reason": finish}]);
            out.push(self.chunk(choice, None)?);
        }
        Ok(())
    }
}

impl StreamTranslator for GeminiStream {
    fn feed(&mut self, chunk: Bytes, out: &mut Vec<Bytes>) -> Result<(), ProviderError> {
        for ev in self.parser.feed(&chunk) {
            if ev.data.is_empty() {
                continue;
            }
            self.event(&ev.data, out)?;
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<Bytes>) -> Result<(), ProviderError> {
        if !self.complete() {
            return Err(ProviderError::new(
                ErrorKind::Protocol,
                "upstream stream ended before every candidate finished",
            ));
        }
        if !self.done {
            if let Some(u) = self.usage {
                out.push(self.chunk(json!([]), Some(u.json()))?);
            }
            out.push(Bytes::from_static(sse::DONE));
            self.done = true;
        }
        Ok(())
    }

    fn usage(&self) -> Option<Usage> {
        self.usage.map(|u| u.usage())
    }

    fn complete(&self) -> bool {
        !self.finished.is_empty() && self.choices.keys().all(|i| self.finished.contains(i))
    }
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

fn embed_request(g: &Google, request: &Json, target: &Target<'_>) -> Result<(&'static str, Value), ProviderError> {
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

fn embed_response(body: &[u8], target: &Target<'_>) -> Result<Translated, ProviderError> {
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
                n += p.embeddings.statistics.map_or(0, |s| s.token_count as u64);
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

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: GoogleError,
}

#[derive(Deserialize)]
struct GoogleError {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    details: Vec<Value>,
}

/// `google.rpc.RetryInfo.retryDelay` (`"1s"`, `"30.5s"`).
fn retry_delay(details: &[Value]) -> Option<std::time::Duration> {
    details
        .iter()
        .filter(|d| {
            d.get("@type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.ends_with("google.rpc.RetryInfo"))
        })
        .find_map(|d| d.get("retryDelay").and_then(Value::as_str))
        .and_then(|s| s.strip_suffix('s'))
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(std::time::Duration::from_secs_f64)
}

fn error_reason(details: &[Value]) -> Option<&str> {
    details.iter().find_map(|d| d.get("reason").and_then(Value::as_str))
}

/// Whether an `INVALID_ARGUMENT` message says the prompt is too long.
fn is_context_window(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    (m.contains("token") && (m.contains("exceeds") || m.contains("too long") || m.contains("maximum number")))
        || m.contains("context window")
        || m.contains("context length")
}

/// Maps Google's `{"error":{"code","message","status","details"}}` (also wrapped in an array, as
/// JSON-array streams send it).
pub fn google_error(status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError {
    // Look at the first byte: serde would also read a struct from an array, positionally.
    let parsed = if body.trim_ascii_start().starts_with(b"[") {
        serde_json::from_slice::<Vec<ErrorEnvelope>>(body)
            .ok()
            .and_then(|v| v.into_iter().next())
    } else {
        serde_json::from_slice::<ErrorEnvelope>(body).ok()
    }
    .map(|e| e.error);
    let Some(e) = parsed else {
        return ProviderError {
            status: Some(status),
            retry_after: retry_after(headers),
            ..ProviderError::new(kind_for_status(status), format!("upstream answered HTTP {status}"))
        };
    };
    let reason = error_reason(&e.details);
    let kind = match e.status.as_deref() {
        _ if matches!(reason, Some("API_KEY_INVALID" | "API_KEY_SERVICE_BLOCKED")) => ErrorKind::Auth,
        Some("RESOURCE_EXHAUSTED") => ErrorKind::RateLimit,
        Some("INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE") if is_context_window(&e.message) => {
            ErrorKind::ContextWindow
        }
        Some("INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE") => ErrorKind::BadRequest,
        Some("UNAUTHENTICATED") => ErrorKind::Auth,
        Some("PERMISSION_DENIED") => ErrorKind::PermissionDenied,
        Some("NOT_FOUND") => ErrorKind::NotFound,
        Some("UNAVAILABLE" | "INTERNAL" | "UNKNOWN" | "DATA_LOSS" | "ABORTED") => ErrorKind::Server,
        Some("DEADLINE_EXCEEDED") => ErrorKind::Timeout,
        _ => kind_for_status(status),
    };
    ProviderError {
        kind,
        status: Some(status),
        message: if e.message.is_empty() {
            format!("upstream answered HTTP {status}")
        } else {
            e.message
        },
        param: None,
        code: e.status,
        retry_after: retry_after(headers).or_else(|| retry_delay(&e.details)),
    }
}

#[cfg(test)]
mod tests;
