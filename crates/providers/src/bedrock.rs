//! Amazon Bedrock Runtime: chat through `Converse` and `ConverseStream`, embeddings through
//! `InvokeModel` (Amazon Titan Text Embeddings and Cohere Embed), every request signed with
//! SigV4 (service `bedrock`).
//!
//! `build` turns an OpenAI chat request into a Converse body (system blocks, alternating
//! user/assistant turns, `toolUse`/`toolResult` blocks, `inferenceConfig`, `toolConfig`) and signs
//! the exact bytes it sends; `parse` and [`ConverseStream`] turn the answers back into
//! `chat.completion` and `chat.completion.chunk` SSE. ConverseStream answers in AWS's binary event
//! stream (`application/vnd.amazon.eventstream`): frames are decoded as they arrive, with both
//! CRCs checked. Pure: no I/O and no clock (the signing time is [`Target::now`]); it must not
//! resolve credentials itself, they arrive resolved in the provider's config.
//!
//! Reference: Amazon Bedrock API reference ("Converse", "ConverseStream",
//! "ConverseStreamOutput", "InvokeModel", "TokenUsage", common errors), Bedrock user guide ("Call
//! a tool with the Converse API", "Amazon Titan Embeddings", "Cohere Embed models"), AWS
//! Signature Version 4, and the AWS event stream encoding.

use std::collections::BTreeMap;
use std::time::UNIX_EPOCH;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use aws_smithy_types::event_stream::Message;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde::Deserialize;
use serde_json::{json, Value};
use switchyard_config::CredentialsConfig;

use crate::{
    kind_for_status, retry_after, Adapter, ErrorKind, Json, Operation, ProviderError, StreamTranslator, Target,
    Translated, UpstreamRequest, Usage,
};

/// Provider name in messages.
const NAME: &str = "bedrock";
/// SigV4 service name of the Bedrock Runtime endpoints.
const SERVICE: &str = "bedrock";
/// The region when the provider names none (the one `compile` puts in the default base URL).
const DEFAULT_REGION: &str = "us-east-1";
/// Largest event-stream message AWS sends (16 MiB); a larger prelude is corruption.
const MAX_FRAME: usize = 16 * 1024 * 1024;
/// Prelude (total length, headers length, prelude CRC) plus message CRC.
const FRAME_OVERHEAD: usize = 16;

/// The Bedrock adapter.
#[derive(Clone, Copy, Debug, Default)]
pub struct Bedrock;

/// The Bedrock adapter, registered for [`switchyard_config::ProviderKind::Bedrock`].
pub static BEDROCK: Bedrock = Bedrock;

impl Adapter for Bedrock {
    fn build(
        &self,
        op: Operation,
        request: &Json,
        target: &Target<'_>,
        stream: bool,
    ) -> Result<UpstreamRequest, ProviderError> {
        let (action, body) = match op {
            Operation::Chat => (
                if stream { "converse-stream" } else { "converse" },
                converse_request(request, target)?,
            ),
            Operation::Embeddings => ("invoke", embeddings_request(request, target)?),
            Operation::Completions | Operation::Responses => {
                return Err(ProviderError::new(
                    ErrorKind::BadRequest,
                    "bedrock backends serve /v1/chat/completions and /v1/embeddings only",
                ))
            }
        };
        let body = serde_json::to_vec(&body)
            .map_err(|e| ProviderError::new(ErrorKind::BadRequest, format!("cannot encode request: {e}")))?;
        let url = format!(
            "{}/model/{}/{action}",
            target.provider.base_url.trim_end_matches('/'),
            encode_segment(target.model)
        );
        let headers = signed_headers(&url, &body, target)?;
        Ok(UpstreamRequest {
            method: Method::POST,
            url,
            headers,
            body: Bytes::from(body),
        })
    }

    fn parse(&self, op: Operation, body: &[u8], target: &Target<'_>) -> Result<Translated, ProviderError> {
        match op {
            Operation::Embeddings => embeddings_response(body, target),
            _ => converse_response(body, target),
        }
    }

    fn stream(&self, _op: Operation, target: &Target<'_>) -> Box<dyn StreamTranslator> {
        Box::new(ConverseStream::new(target))
    }

    fn error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        bedrock_error(status, headers, body)
    }
}

// ---------------------------------------------------------------------------------------------
// Signing

/// Percent-encodes one path segment (everything but RFC 3986 unreserved characters), so model
/// ids with `:` and ARNs with `/` stay one segment. SigV4 then encodes the path once more.
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(char::from(b)),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn auth_error(message: impl Into<String>) -> ProviderError {
    ProviderError::new(ErrorKind::Auth, message)
}

/// `content-type` plus the SigV4 headers for `POST url` with `body`, signed at `target.now`.
fn signed_headers(url: &str, body: &[u8], target: &Target<'_>) -> Result<HeaderMap, ProviderError> {
    let Some(CredentialsConfig::Aws {
        access_key_id,
        secret_access_key,
        session_token,
    }) = &target.provider.credentials
    else {
        return Err(auth_error(
            "bedrock providers need AWS credentials (an access key id and a secret access key)",
        ));
    };
    // aws-sigv4 takes the host from the URL and insists on one.
    let has_host = url.parse::<http::Uri>().ok().is_some_and(|u| u.host().is_some());
    if !has_host {
        return Err(ProviderError::new(
            ErrorKind::Connect,
            format!(
                "the bedrock base URL `{}` is not an absolute URL",
                target.provider.base_url
            ),
        ));
    }
    let region = target.provider.region.as_deref().unwrap_or(DEFAULT_REGION);
    let identity = Credentials::new(
        access_key_id.expose(),
        secret_access_key.expose(),
        session_token.as_ref().map(|t| t.expose().to_owned()),
        None,
        "switchyard",
    )
    .into();
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SERVICE)
        .time(target.now)
        .settings(settings)
        .build()
        .map_err(|e| auth_error(format!("cannot sign the bedrock request: {e}")))?
        .into();
    let signable = SignableRequest::new(
        "POST",
        url,
        [("content-type", "application/json")].into_iter(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| auth_error(format!("cannot sign the bedrock request: {e}")))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| auth_error(format!("cannot sign the bedrock request: {e}")))?
        .into_parts();

    let mut headers = HeaderMap::with_capacity(6 + target.provider.headers.len());
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for header in instructions.into_parts().0 {
        let name = HeaderName::from_bytes(header.name().as_bytes())
            .map_err(|_| auth_error("the SigV4 signer produced an invalid header name"))?;
        let mut value = HeaderValue::from_str(header.value())
            .map_err(|_| auth_error("the AWS credentials are not valid header values"))?;
        value
            .set_sensitive(header.sensitive() || name == http::header::AUTHORIZATION || name == "x-amz-security-token");
        headers.insert(name, value);
    }
    // Extra provider headers travel unsigned; they must not replace the signed ones.
    for (k, v) in &target.provider.headers {
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) else {
            continue;
        };
        if headers.contains_key(&name) || name == http::header::HOST || name.as_str().starts_with("x-amz-") {
            continue;
        }
        headers.insert(name, value);
    }
    Ok(headers)
}

// ---------------------------------------------------------------------------------------------
// Chat request

fn bad(message: impl Into<String>, param: impl Into<String>) -> ProviderError {
    ProviderError {
        param: Some(param.into()),
        ..ProviderError::new(ErrorKind::BadRequest, message)
    }
}

fn unsupported_content(message: impl Into<String>, param: impl Into<String>) -> ProviderError {
    ProviderError {
        code: Some("unsupported_content".into()),
        ..bad(message, param)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    User,
    Assistant,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// Converse messages under construction: consecutive same-role messages merge, since Bedrock
/// wants user and assistant to alternate (tool results are user turns).
#[derive(Default)]
struct Turns {
    turns: Vec<(Role, Vec<Value>)>,
    /// Tool names used in the history, for a `toolConfig` when the request has no tools.
    tool_names: Vec<String>,
    has_tool_blocks: bool,
}

impl Turns {
    fn push(&mut self, role: Role, blocks: Vec<Value>) {
        if blocks.is_empty() {
            return;
        }
        match self.turns.last_mut() {
            Some((last, content)) if *last == role => content.extend(blocks),
            _ => self.turns.push((role, blocks)),
        }
    }

    fn into_json(self) -> Value {
        Value::Array(
            self.turns
                .into_iter()
                .map(|(role, content)| json!({"role": role.as_str(), "content": content}))
                .collect(),
        )
    }
}

fn number(key: &str, value: &Value) -> Result<Value, ProviderError> {
    if value.is_number() {
        Ok(value.clone())
    } else {
        Err(bad(format!("`{key}` must be a number"), key))
    }
}

/// The Converse body of an OpenAI chat request.
fn converse_request(request: &Json, target: &Target<'_>) -> Result<Value, ProviderError> {
    let mut body = Json::new();
    let mut inference = Json::new();
    let mut additional = Json::new();
    for (key, value) in request {
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            // Handled below, or meaningless upstream (`stream` is the operation's choice).
            "model" | "messages" | "tools" | "tool_choice" | "stream" | "stream_options" | "user" | "store"
            | "metadata" | "service_tier" => {}
            "max_tokens" | "max_completion_tokens" => {
                let n = value
                    .as_u64()
                    .ok_or_else(|| bad(format!("`{key}` must be a positive integer"), key.as_str()))?;
                inference.insert("maxTokens".into(), n.into());
            }
            "temperature" => {
                inference.insert("temperature".into(), number(key, value)?);
            }
            "top_p" => {
                inference.insert("topP".into(), number(key, value)?);
            }
            "stop" => {
                let stops = match value {
                    Value::String(s) => vec![Value::String(s.clone())],
                    Value::Array(items) if items.iter().all(Value::is_string) => items.clone(),
                    _ => return Err(bad("`stop` must be a string or an array of strings", "stop")),
                };
                if !stops.is_empty() {
                    inference.insert("stopSequences".into(), Value::Array(stops));
                }
            }
            // Anthropic, Mistral and Llama models on Bedrock take top_k as a model field.
            "top_k" => {
                additional.insert("top_k".into(), number(key, value)?);
            }
            // Defaults are no request at all.
            "n" if value.as_u64() == Some(1) => {}
            "logprobs" if value == &Value::Bool(false) => {}
            "parallel_tool_calls" if value == &Value::Bool(true) => {}
            "frequency_penalty" | "presence_penalty" if value.as_f64() == Some(0.0) => {}
            "response_format" if value.get("type").and_then(Value::as_str) == Some("text") => {}
            // Bedrock's own fields, for clients that know they talk to Bedrock.
            "additionalModelRequestFields" => {
                let Some(fields) = value.as_object() else {
                    return Err(bad("`additionalModelRequestFields` must be an object", key.as_str()));
                };
                additional.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            "guardrailConfig"
            | "additionalModelResponseFieldPaths"
            | "performanceConfig"
            | "requestMetadata"
            | "promptVariables" => {
                body.insert(key.clone(), value.clone());
            }
            _ if target.drop_unsupported_params => {}
            _ => return Err(ProviderError::unsupported_param(NAME, key)),
        }
    }

    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("`messages` must be an array", "messages"))?;
    let mut system = Vec::new();
    let mut turns = Turns::default();
    for (i, m) in messages.iter().enumerate() {
        let content = m.get("content").unwrap_or(&Value::Null);
        match m.get("role").and_then(Value::as_str).unwrap_or("") {
            "system" | "developer" => system.extend(text_blocks(content, &format!("messages[{i}].content"))?),
            "user" => turns.push(Role::User, user_blocks(content, &format!("messages[{i}].content"))?),
            "assistant" => {
                let blocks = assistant_blocks(m, i, &mut turns)?;
                turns.push(Role::Assistant, blocks);
            }
            "tool" => {
                let block = tool_result(m, i)?;
                turns.has_tool_blocks = true;
                turns.push(Role::User, vec![block]);
            }
            other => {
                return Err(bad(
                    format!("messages[{i}]: role `{other}` is not supported by bedrock backends"),
                    format!("messages[{i}].role"),
                ))
            }
        }
    }

    if let Some(tool_config) = tool_config(request, &turns, target)? {
        body.insert("toolConfig".into(), tool_config);
    }
    body.insert("messages".into(), turns.into_json());
    if !system.is_empty() {
        body.insert("system".into(), Value::Array(system));
    }
    if !inference.is_empty() {
        body.insert("inferenceConfig".into(), Value::Object(inference));
    }
    if !additional.is_empty() {
        body.insert("additionalModelRequestFields".into(), Value::Object(additional));
    }
    Ok(Value::Object(body))
}

/// `{text}` blocks of a string or text-parts content; blank text is skipped (Bedrock refuses it).
fn text_blocks(content: &Value, param: &str) -> Result<Vec<Value>, ProviderError> {
    match content {
        Value::Null => Ok(Vec::new()),
        Value::String(s) if s.is_empty() => Ok(Vec::new()),
        Value::String(s) => Ok(vec![json!({"text": s})]),
        Value::Array(parts) => {
            let mut blocks = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                match (
                    part.get("type").and_then(Value::as_str),
                    part.get("text").and_then(Value::as_str),
                ) {
                    (Some("text") | None, Some(text)) => {
                        if !text.is_empty() {
                            blocks.push(json!({"text": text}));
                        }
                    }
                    (ty, _) => {
                        return Err(unsupported_content(
                            format!(
                                "{param}[{j}]: only text parts are accepted here, got `{}`",
                                ty.unwrap_or("?")
                            ),
                            format!("{param}[{j}]"),
                        ))
                    }
                }
            }
            Ok(blocks)
        }
        _ => Err(bad("content must be a string or an array of parts", param)),
    }
}

fn user_blocks(content: &Value, param: &str) -> Result<Vec<Value>, ProviderError> {
    let Value::Array(parts) = content else {
        return text_blocks(content, param);
    };
    let mut blocks = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        match part.get("type").and_then(Value::as_str).unwrap_or("") {
            "text" => {
                if let Some(text) = part.get("text").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                    blocks.push(json!({"text": text}));
                }
            }
            "image_url" => {
                let url = match part.get("image_url") {
                    Some(Value::String(u)) => Some(u.as_str()),
                    Some(v) => v.get("url").and_then(Value::as_str),
                    None => None,
                };
                let Some(url) = url else {
                    return Err(bad("an image_url part needs a url", format!("{param}[{j}].image_url")));
                };
                blocks.push(image_block(url, &format!("{param}[{j}].image_url.url"))?);
            }
            other => {
                return Err(unsupported_content(
                    format!("content parts of type `{other}` are not supported by bedrock backends"),
                    format!("{param}[{j}]"),
                ))
            }
        }
    }
    Ok(blocks)
}

/// A Converse image block from a base64 `data:` URL. Bedrock does not fetch URLs.
fn image_block(url: &str, param: &str) -> Result<Value, ProviderError> {
    let Some(rest) = url.strip_prefix("data:") else {
        return Err(unsupported_content(
            "bedrock backends accept images only inline, as base64 `data:` URLs; image links are not fetched",
            param,
        ));
    };
    let Some((meta, data)) = rest.split_once(',') else {
        return Err(bad("malformed data: URL", param));
    };
    let Some(mime) = meta.strip_suffix(";base64") else {
        return Err(bad("image data: URLs must be base64-encoded", param));
    };
    let format = match mime.to_ascii_lowercase().as_str() {
        "image/png" => "png",
        "image/jpeg" | "image/jpg" => "jpeg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        other => {
            let message = format!("image type `{other}` is not supported by bedrock backends (png, jpeg, gif, webp)");
            return Err(unsupported_content(message, param));
        }
    };
    Ok(json!({"image": {"format": format, "source": {"bytes": data}}}))
}

fn assistant_blocks(m: &Value, i: usize, turns: &mut Turns) -> Result<Vec<Value>, ProviderError> {
    let content = m.get("content").unwrap_or(&Value::Null);
    let mut blocks = text_blocks(content, &format!("messages[{i}].content"))?;
    let calls = match m.get("tool_calls") {
        None | Some(Value::Null) => return Ok(blocks),
        Some(Value::Array(calls)) => calls,
        Some(_) => {
            return Err(bad(
                "`tool_calls` must be an array",
                format!("messages[{i}].tool_calls"),
            ))
        }
    };
    for (j, call) in calls.iter().enumerate() {
        let param = format!("messages[{i}].tool_calls[{j}]");
        let id = call.get("id").and_then(Value::as_str);
        let function = call.get("function");
        let name = function.and_then(|f| f.get("name")).and_then(Value::as_str);
        let (Some(id), Some(name)) = (id, name) else {
            return Err(bad("a tool call needs an id and a function name", param));
        };
        let input = match function.and_then(|f| f.get("arguments")) {
            None | Some(Value::Null) => json!({}),
            Some(Value::String(s)) if s.trim().is_empty() => json!({}),
            Some(Value::String(s)) => serde_json::from_str::<Value>(s).map_err(|_| {
                bad(
                    "tool call arguments must be JSON",
                    format!("{param}.function.arguments"),
                )
            })?,
            Some(other) => other.clone(),
        };
        turns.has_tool_blocks = true;
        if !turns.tool_names.iter().any(|n| n == name) {
            turns.tool_names.push(name.to_owned());
        }
        blocks.push(json!({"toolUse": {"toolUseId": id, "name": name, "input": input}}));
    }
    Ok(blocks)
}

fn tool_result(m: &Value, i: usize) -> Result<Value, ProviderError> {
    let Some(id) = m.get("tool_call_id").and_then(Value::as_str) else {
        return Err(bad(
            "a tool message needs a tool_call_id",
            format!("messages[{i}].tool_call_id"),
        ));
    };
    let content = text_blocks(
        m.get("content").unwrap_or(&Value::Null),
        &format!("messages[{i}].content"),
    )?;
    // A tool that returned nothing still answers the call.
    let content = if content.is_empty() {
        vec![json!({"text": "(empty)"})]
    } else {
        content
    };
    Ok(json!({"toolResult": {"toolUseId": id, "content": content}}))
}

/// `toolConfig` from `tools` and `tool_choice`. Bedrock requires one whenever the history holds
/// tool blocks, so a request without tools but with tool history gets specs of the tools used.
fn tool_config(request: &Json, turns: &Turns, target: &Target<'_>) -> Result<Option<Value>, ProviderError> {
    let tools = match request.get("tools") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(t)) => t.as_slice(),
        Some(_) => return Err(bad("`tools` must be an array", "tools")),
    };
    let mut specs = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        let ty = tool.get("type").and_then(Value::as_str).unwrap_or("function");
        if ty != "function" {
            return Err(unsupported_content(
                format!("tools of type `{ty}` are not supported by bedrock backends"),
                format!("tools[{i}].type"),
            ));
        }
        let function = tool.get("function").unwrap_or(&Value::Null);
        let Some(name) = function.get("name").and_then(Value::as_str) else {
            return Err(bad("a tool needs a function name", format!("tools[{i}].function.name")));
        };
        let schema = match function.get("parameters") {
            None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
            Some(p) => p.clone(),
        };
        let mut spec = json!({"name": name, "inputSchema": {"json": schema}});
        if let Some(d) = function
            .get("description")
            .and_then(Value::as_str)
            .filter(|d| !d.is_empty())
        {
            spec["description"] = d.into();
        }
        specs.push(json!({"toolSpec": spec}));
    }

    let choice = match request.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Some(json!({"auto": {}})),
            "required" => Some(json!({"any": {}})),
            "none" => {
                if !turns.has_tool_blocks {
                    // Without tools the model cannot call one: exactly "none".
                    return Ok(None);
                }
                if !target.drop_unsupported_params {
                    return Err(ProviderError {
                        message: "tool_choice `none` cannot be honoured by bedrock backends once the conversation holds tool calls (set dropUnsupportedParams on the route to let the model choose)".into(),
                        ..ProviderError::unsupported_param(NAME, "tool_choice")
                    });
                }
                None
            }
            other => return Err(bad(format!("unknown tool_choice `{other}`"), "tool_choice")),
        },
        Some(v) => match v.get("function").and_then(|f| f.get("name")).and_then(Value::as_str) {
            Some(name) => Some(json!({"tool": {"name": name}})),
            None => return Err(bad("tool_choice must name a function", "tool_choice")),
        },
    };

    if specs.is_empty() {
        if !turns.has_tool_blocks {
            return Ok(None);
        }
        specs = turns
            .tool_names
            .iter()
            .map(|name| {
                json!({"toolSpec": {
                    "name": name,
                    "description": "A tool called earlier in this conversation.",
                    "inputSchema": {"json": {"type": "object", "properties": {}}}
                }})
            })
            .collect();
        if specs.is_empty() {
            return Ok(None);
        }
        return Ok(Some(json!({"tools": specs})));
    }
    let mut config = json!({"tools": specs});
    if let Some(choice) = choice {
        config["toolChoice"] = choice;
    }
    Ok(Some(config))
}

// ---------------------------------------------------------------------------------------------
// Chat response

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ConverseResponse {
    #[serde(default)]
    output: Option<ConverseOutput>,
    #[serde(default)]
    stop_reason: String,
    #[serde(default)]
    usage: Option<TokenUsage>,
}

#[derive(Deserialize, Default)]
struct ConverseOutput {
    #[serde(default)]
    message: Option<OutputMessage>,
}

#[derive(Deserialize, Default)]
struct OutputMessage {
    #[serde(default)]
    content: Vec<OutputBlock>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct OutputBlock {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    tool_use: Option<ToolUse>,
    #[serde(default)]
    reasoning_content: Option<Reasoning>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolUse {
    tool_use_id: String,
    name: String,
    #[serde(default)]
    input: Value,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Reasoning {
    #[serde(default)]
    reasoning_text: Option<ReasoningText>,
    /// The stream's spelling: `reasoningContent: {text}`.
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize, Default)]
struct ReasoningText {
    #[serde(default)]
    text: String,
}

/// Bedrock's `TokenUsage`: `inputTokens` excludes the cache reads and writes reported beside it.
#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "camelCase")]
struct TokenUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    cache_read_input_tokens: u64,
    #[serde(default)]
    cache_write_input_tokens: u64,
}

impl From<TokenUsage> for Usage {
    fn from(u: TokenUsage) -> Self {
        Usage {
            prompt_tokens: u.input_tokens + u.cache_read_input_tokens + u.cache_write_input_tokens,
            completion_tokens: u.output_tokens,
            cached_tokens: u.cache_read_input_tokens,
            cache_creation_tokens: u.cache_write_input_tokens,
        }
    }
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total(),
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    })
}

/// OpenAI's `finish_reason` for a Converse `stopReason`.
fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "guardrail_intervened" | "content_filtered" => "content_filter",
        // end_turn, stop_sequence, and anything newer.
        _ => "stop",
    }
}

fn protocol(message: impl Into<String>) -> ProviderError {
    ProviderError::new(ErrorKind::Protocol, message)
}

/// FNV-1a, for response ids that are stable in tests and distinct across requests.
fn fnv(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = seed ^ 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn epoch(target: &Target<'_>) -> (u64, u64) {
    let d = target.now.duration_since(UNIX_EPOCH).unwrap_or_default();
    (d.as_secs(), d.as_nanos() as u64)
}

fn converse_response(body: &[u8], target: &Target<'_>) -> Result<Translated, ProviderError> {
    let parsed: ConverseResponse =
        serde_json::from_slice(body).map_err(|e| protocol(format!("upstream sent an unreadable response: {e}")))?;
    let (created, nanos) = epoch(target);
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut tool_calls = Vec::new();
    for block in parsed
        .output
        .and_then(|o| o.message)
        .map(|m| m.content)
        .unwrap_or_default()
    {
        if let Some(t) = block.text {
            text.push_str(&t);
        }
        if let Some(r) = block.reasoning_content {
            if let Some(t) = r.reasoning_text.map(|t| t.text).or(r.text) {
                reasoning.push_str(&t);
            }
        }
        if let Some(call) = block.tool_use {
            let arguments = if call.input.is_null() {
                "{}".to_owned()
            } else {
                call.input.to_string()
            };
            tool_calls.push(json!({
                "id": call.tool_use_id,
                "type": "function",
                "function": {"name": call.name, "arguments": arguments},
            }));
        }
    }
    let mut message = json!({"role": "assistant", "content": text, "refusal": null});
    if text.is_empty() && !tool_calls.is_empty() {
        message["content"] = Value::Null;
    }
    if !reasoning.is_empty() {
        message["reasoning_content"] = reasoning.into();
    }
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    let usage = parsed.usage.map(Usage::from);
    let mut out = json!({
        "id": format!("chatcmpl-{:016x}", fnv(nanos, body)),
        "object": "chat.completion",
        "created": created,
        "model": target.model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(&parsed.stop_reason),
        }],
    });
    if let Some(u) = &usage {
        out["usage"] = usage_json(u);
    }
    Ok(Translated {
        body: Bytes::from(out.to_string()),
        usage,
    })
}

// ---------------------------------------------------------------------------------------------
// Chat stream

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct BlockStart {
    #[serde(default)]
    content_block_index: u64,
    #[serde(default)]
    start: Option<StartBody>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct StartBody {
    #[serde(default)]
    tool_use: Option<ToolUseStart>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolUseStart {
    tool_use_id: String,
    name: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct BlockDelta {
    #[serde(default)]
    content_block_index: u64,
    #[serde(default)]
    delta: DeltaBody,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DeltaBody {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    tool_use: Option<ToolUseDelta>,
    #[serde(default)]
    reasoning_content: Option<Reasoning>,
}

#[derive(Deserialize, Default)]
struct ToolUseDelta {
    #[serde(default)]
    input: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct MessageStop {
    #[serde(default)]
    stop_reason: String,
}

#[derive(Deserialize, Default)]
struct Metadata {
    #[serde(default)]
    usage: Option<TokenUsage>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ExceptionBody {
    #[serde(default, alias = "Message")]
    message: Option<String>,
    #[serde(default)]
    original_message: Option<String>,
}

/// Translates a ConverseStream event stream into OpenAI `chat.completion.chunk` SSE.
pub struct ConverseStream {
    decoder: MessageFrameDecoder,
    buf: BytesMut,
    /// Whether the next bytes start a frame (the decoder has not taken its prelude yet).
    at_frame_start: bool,
    id: String,
    model: String,
    created: u64,
    /// Converse content block index → OpenAI tool call index.
    tools: BTreeMap<u64, usize>,
    role_sent: bool,
    stopped: bool,
    done: bool,
    failed: bool,
    usage: Option<Usage>,
}

impl ConverseStream {
    /// A translator for one stream to `target`.
    pub fn new(target: &Target<'_>) -> Self {
        let (created, nanos) = epoch(target);
        Self {
            decoder: MessageFrameDecoder::new(),
            buf: BytesMut::new(),
            at_frame_start: true,
            id: format!("chatcmpl-{:016x}", fnv(nanos, target.model.as_bytes())),
            model: target.model.to_owned(),
            created,
            tools: BTreeMap::new(),
            role_sent: false,
            stopped: false,
            done: false,
            failed: false,
            usage: None,
        }
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Bytes {
        let body = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": 0,
                "delta": delta,
                "logprobs": null,
                "finish_reason": finish_reason,
            }],
        });
        crate::sse::data(body.to_string().as_bytes())
    }

    fn ensure_role(&mut self, out: &mut Vec<Bytes>) {
        if !self.role_sent {
            self.role_sent = true;
            out.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
        }
    }

    fn tool_index(&mut self, block: u64) -> usize {
        let next = self.tools.len();
        *self.tools.entry(block).or_insert(next)
    }

    fn fail(&mut self, e: ProviderError) -> ProviderError {
        self.failed = true;
        e
    }

    fn on_message(&mut self, message: &Message, out: &mut Vec<Bytes>) -> Result<(), ProviderError> {
        let header = |name: &str| {
            message
                .headers()
                .iter()
                .find(|h| h.name().as_str() == name)
                .and_then(|h| h.value().as_string().ok())
                .map(|s| s.as_str().to_owned())
        };
        match header(":message-type").as_deref().unwrap_or("event") {
            "event" => {
                let Some(event) = header(":event-type") else {
                    return Err(protocol("upstream sent an event-stream event without :event-type"));
                };
                self.on_event(&event, message.payload(), out)
            }
            "exception" => {
                let ty = header(":exception-type").unwrap_or_else(|| "exception".into());
                let body: ExceptionBody = serde_json::from_slice(message.payload()).unwrap_or_default();
                let mut text = body.message.unwrap_or_else(|| format!("upstream stream failed: {ty}"));
                if let Some(original) = body.original_message {
                    text = format!("{text} ({original})");
                }
                Err(error_of_type(&ty, text, None))
            }
            "error" => {
                let code = header(":error-code").unwrap_or_else(|| "error".into());
                let text = header(":error-message").unwrap_or_else(|| format!("upstream stream failed: {code}"));
                Err(error_of_type(&code, text, None))
            }
            other => Err(protocol(format!(
                "upstream sent an event-stream message of type `{other}`"
            ))),
        }
    }

    fn on_event(&mut self, event: &str, payload: &[u8], out: &mut Vec<Bytes>) -> Result<(), ProviderError> {
        fn read<'a, T: Deserialize<'a>>(event: &str, payload: &'a [u8]) -> Result<T, ProviderError> {
            serde_json::from_slice(payload)
                .map_err(|e| protocol(format!("upstream sent an unreadable {event} event: {e}")))
        }
        match event {
            "messageStart" => self.ensure_role(out),
            "contentBlockStart" => {
                let start: BlockStart = read(event, payload)?;
                if let Some(tool) = start.start.and_then(|s| s.tool_use) {
                    self.ensure_role(out);
                    let index = self.tool_index(start.content_block_index);
                    out.push(self.chunk(
                        json!({"tool_calls": [{
                            "index": index,
                            "id": tool.tool_use_id,
                            "type": "function",
                            "function": {"name": tool.name, "arguments": ""},
                        }]}),
                        None,
                    ));
                }
            }
            "contentBlockDelta" => {
                let delta: BlockDelta = read(event, payload)?;
                self.ensure_role(out);
                if let Some(text) = delta.delta.text.filter(|t| !t.is_empty()) {
                    out.push(self.chunk(json!({"content": text}), None));
                }
                if let Some(tool) = delta.delta.tool_use.filter(|t| !t.input.is_empty()) {
                    let index = self.tool_index(delta.content_block_index);
                    out.push(self.chunk(
                        json!({"tool_calls": [{"index": index, "function": {"arguments": tool.input}}]}),
                        None,
                    ));
                }
                if let Some(text) = delta
                    .delta
                    .reasoning_content
                    .and_then(|r| r.text)
                    .filter(|t| !t.is_empty())
                {
                    out.push(self.chunk(json!({"reasoning_content": text}), None));
                }
            }
            "messageStop" => {
                let stop: MessageStop = read(event, payload)?;
                self.ensure_role(out);
                out.push(self.chunk(json!({}), Some(finish_reason(&stop.stop_reason))));
                self.stopped = true;
            }
            "metadata" => {
                let meta: Metadata = read(event, payload)?;
                if let Some(u) = meta.usage {
                    let usage = Usage::from(u);
                    self.usage = Some(usage);
                    let body = json!({
                        "id": self.id,
                        "object": "chat.completion.chunk",
                        "created": self.created,
                        "model": self.model,
                        "choices": [],
                        "usage": usage_json(&usage),
                    });
                    out.push(crate::sse::data(body.to_string().as_bytes()));
                }
                if !self.done {
                    self.done = true;
                    out.push(Bytes::from_static(crate::sse::DONE));
                }
            }
            // contentBlockStop carries nothing to send; newer events are ignored.
            _ => {}
        }
        Ok(())
    }
}

impl StreamTranslator for ConverseStream {
    fn feed(&mut self, chunk: Bytes, out: &mut Vec<Bytes>) -> Result<(), ProviderError> {
        if self.failed {
            return Err(protocol("the upstream stream already failed"));
        }
        self.buf.extend_from_slice(&chunk);
        loop {
            // The decoder trusts the prelude's length until the whole frame is in; refuse a
            // corrupt one now rather than buffer up to 4 GiB waiting for it.
            if self.at_frame_start && self.buf.len() >= 12 {
                let total = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
                if !(FRAME_OVERHEAD..=MAX_FRAME).contains(&total) {
                    let e = protocol(format!("upstream sent a corrupt event-stream frame (length {total})"));
                    return Err(self.fail(e));
                }
                self.at_frame_start = false;
            }
            match self.decoder.decode_frame(&mut self.buf) {
                Ok(DecodedFrame::Complete(message)) => {
                    self.at_frame_start = true;
                    if let Err(e) = self.on_message(&message, out) {
                        return Err(self.fail(e));
                    }
                }
                Ok(DecodedFrame::Incomplete) => return Ok(()),
                Err(e) => {
                    let e = protocol(format!("upstream sent a corrupt event-stream frame: {e}"));
                    return Err(self.fail(e));
                }
            }
        }
    }

    fn finish(&mut self, out: &mut Vec<Bytes>) -> Result<(), ProviderError> {
        if self.failed {
            return Ok(());
        }
        if !self.buf.is_empty() || !self.at_frame_start {
            return Err(protocol("upstream stream ended inside an event-stream frame"));
        }
        if !self.stopped && !self.done {
            return Err(protocol("upstream stream ended before messageStop"));
        }
        if !self.done {
            self.done = true;
            out.push(Bytes::from_static(crate::sse::DONE));
        }
        Ok(())
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }

    fn complete(&self) -> bool {
        self.stopped || self.done
    }
}

// ---------------------------------------------------------------------------------------------
// Embeddings

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum EmbedFamily {
    /// `amazon.titan-embed-text-v2*`: one text, `dimensions`, `normalize`.
    TitanV2,
    /// Older Titan embedding models: `inputText` only.
    Titan,
    /// `cohere.embed-*`: a batch of `texts`.
    Cohere,
}

impl EmbedFamily {
    fn of(model: &str) -> Option<Self> {
        if model.contains("amazon.titan-embed-text-v2") {
            Some(Self::TitanV2)
        } else if model.contains("amazon.titan-embed") {
            Some(Self::Titan)
        } else if model.contains("cohere.embed") {
            Some(Self::Cohere)
        } else {
            None
        }
    }
}

fn embed_family(model: &str) -> Result<EmbedFamily, ProviderError> {
    EmbedFamily::of(model).ok_or_else(|| {
        bad(
            format!("bedrock embeddings support amazon.titan-embed-* and cohere.embed-* models, not `{model}`"),
            "model",
        )
    })
}

fn embeddings_request(request: &Json, target: &Target<'_>) -> Result<Value, ProviderError> {
    let family = embed_family(target.model)?;
    let inputs: Vec<&str> = match request.get("input") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) => items
            .iter()
            .map(Value::as_str)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                bad(
                    "bedrock embeddings take text input (a string or an array of strings), not tokens",
                    "input",
                )
            })?,
        _ => return Err(bad("`input` must be a string or an array of strings", "input")),
    };
    if inputs.is_empty() {
        return Err(bad("`input` must not be empty", "input"));
    }
    let mut dimensions = None;
    let mut cohere_fields = Json::new();
    for (key, value) in request {
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            "model" | "input" | "user" => {}
            // Vectors come back as floats; the OpenAI SDKs that ask for base64 by default
            // accept floats too.
            "encoding_format" => {}
            "dimensions" if family == EmbedFamily::TitanV2 => {
                dimensions = Some(
                    value
                        .as_u64()
                        .ok_or_else(|| bad("`dimensions` must be a positive integer", "dimensions"))?,
                );
            }
            // Cohere's own fields, for clients that know the model.
            "input_type" | "truncate" if family == EmbedFamily::Cohere => {
                cohere_fields.insert(key.clone(), value.clone());
            }
            _ if target.drop_unsupported_params => {}
            _ => return Err(ProviderError::unsupported_param(NAME, key)),
        }
    }
    Ok(match family {
        EmbedFamily::Titan | EmbedFamily::TitanV2 => {
            let [text] = inputs.as_slice() else {
                return Err(bad(
                    format!(
                        "Titan embedding models embed one input per request; this request has {} (send one request per input, or use a cohere.embed-* model for batches)",
                        inputs.len()
                    ),
                    "input",
                ));
            };
            let mut body = json!({"inputText": text});
            if family == EmbedFamily::TitanV2 {
                body["normalize"] = true.into();
                if let Some(d) = dimensions {
                    body["dimensions"] = d.into();
                }
            }
            body
        }
        EmbedFamily::Cohere => {
            let mut body = json!({"texts": inputs, "input_type": "search_document"});
            for (k, v) in cohere_fields {
                body[k] = v;
            }
            body
        }
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TitanEmbedding {
    embedding: Value,
    #[serde(default)]
    input_text_token_count: u64,
}

#[derive(Deserialize)]
struct CohereEmbeddings {
    /// `[[f32]]` (`embeddings_floats`) or `{"float": [[f32]], ...}` (`embeddings_by_type`).
    embeddings: Value,
    #[serde(default)]
    texts: Vec<String>,
    #[serde(default)]
    meta: Option<CohereMeta>,
}

#[derive(Deserialize)]
struct CohereMeta {
    #[serde(default)]
    billed_units: Option<CohereBilled>,
}

#[derive(Deserialize)]
struct CohereBilled {
    #[serde(default)]
    input_tokens: Option<u64>,
}

fn embeddings_response(body: &[u8], target: &Target<'_>) -> Result<Translated, ProviderError> {
    let unreadable = |e: serde_json::Error| protocol(format!("upstream sent an unreadable embeddings response: {e}"));
    let (vectors, tokens) = match embed_family(target.model)? {
        EmbedFamily::Titan | EmbedFamily::TitanV2 => {
            let r: TitanEmbedding = serde_json::from_slice(body).map_err(unreadable)?;
            (vec![r.embedding], r.input_text_token_count)
        }
        EmbedFamily::Cohere => {
            let r: CohereEmbeddings = serde_json::from_slice(body).map_err(unreadable)?;
            let vectors = match r.embeddings {
                Value::Array(v) => v,
                Value::Object(mut by_type) => match by_type.remove("float") {
                    Some(Value::Array(v)) => v,
                    _ => return Err(protocol("upstream sent embeddings without float vectors")),
                },
                _ => return Err(protocol("upstream sent unreadable embeddings")),
            };
            // Bedrock reports Cohere's token count only in a header; estimate by words.
            let tokens = r
                .meta
                .and_then(|m| m.billed_units)
                .and_then(|b| b.input_tokens)
                .unwrap_or_else(|| {
                    r.texts
                        .iter()
                        .map(|t| (t.split_whitespace().count() as u64).max(1))
                        .sum()
                });
            (vectors, tokens)
        }
    };
    Ok(crate::embeddings_list(vectors, target.model, Some(tokens)))
}

// ---------------------------------------------------------------------------------------------
// Errors

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default, alias = "Message")]
    message: Option<String>,
    #[serde(default, rename = "__type")]
    kind: Option<String>,
}

/// Whether a ValidationException says the prompt does not fit the model.
fn is_context_overflow(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "too long",
        "max tokens",
        "too many input tokens",
        "max input tokens",
        "maximum context",
        "context length",
        "context window",
    ]
    .iter()
    .any(|needle| m.contains(needle))
}

/// The kind of a Bedrock error type (`ThrottlingException`, or the stream's
/// `throttlingException`), `None` when unknown.
fn kind_of_type(error_type: &str, message: &str) -> Option<ErrorKind> {
    Some(match error_type.to_ascii_lowercase().as_str() {
        "throttlingexception" | "servicequotaexceededexception" | "toomanyrequestsexception" => ErrorKind::RateLimit,
        "validationexception" if is_context_overflow(message) => ErrorKind::ContextWindow,
        "validationexception" | "conflictexception" | "serializationexception" => ErrorKind::BadRequest,
        "accessdeniedexception" => ErrorKind::PermissionDenied,
        "resourcenotfoundexception" => ErrorKind::NotFound,
        "serviceunavailableexception"
        | "modelnotreadyexception"
        | "internalserverexception"
        | "internalfailure"
        | "modelerrorexception"
        | "modelstreamerrorexception" => ErrorKind::Server,
        "modeltimeoutexception" => ErrorKind::Timeout,
        "unrecognizedclientexception"
        | "invalidsignatureexception"
        | "incompletesignatureexception"
        | "missingauthenticationtokenexception"
        | "expiredtokenexception"
        | "invalidclienttokenid"
        | "signaturedoesnotmatch" => ErrorKind::Auth,
        _ => return None,
    })
}

/// An error from a Bedrock error type and message (stream exceptions have no status).
fn error_of_type(error_type: &str, message: String, status: Option<u16>) -> ProviderError {
    let kind = kind_of_type(error_type, &message).unwrap_or_else(|| status.map_or(ErrorKind::Server, kind_for_status));
    ProviderError {
        status,
        code: Some(error_type.to_owned()),
        ..ProviderError::new(kind, message)
    }
}

/// Maps a non-2xx Bedrock response: the type in `x-amzn-errortype` (`Type:namespace`), the text
/// in `{"message": ...}`.
pub fn bedrock_error(status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError {
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let error_type = headers
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(':').next().unwrap_or(v).trim().to_owned())
        .or_else(|| {
            parsed
                .kind
                .as_deref()
                .map(|k| k.rsplit('#').next().unwrap_or(k).to_owned())
        })
        .filter(|t| !t.is_empty());
    let message = parsed
        .message
        .unwrap_or_else(|| format!("upstream answered HTTP {status}"));
    let mut err = match error_type {
        Some(t) => error_of_type(&t, message, Some(status)),
        None => ProviderError {
            status: Some(status),
            ..ProviderError::new(kind_for_status(status), message)
        },
    };
    err.retry_after = retry_after(headers);
    err
}

#[cfg(test)]
mod tests;
