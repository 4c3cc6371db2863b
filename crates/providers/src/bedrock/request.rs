//! Bedrock requests: SigV4 signing, the Converse body of an OpenAI chat request, and the
//! InvokeModel body of an embeddings request.

use super::{DEFAULT_REGION, NAME, SERVICE};
use crate::{ErrorKind, Json, ProviderError, Target};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{json, Value};
use switchyard_config::CredentialsConfig;

// ---------------------------------------------------------------------------------------------
// Signing

/// Percent-encodes one path segment (everything but RFC 3986 unreserved characters), so model
/// ids with `:` and ARNs with `/` stay one segment. SigV4 then encodes the path once more.
pub(super) fn encode_segment(s: &str) -> String {
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

/// `content-type` plus the SigV4 headers for `POST url` with a JSON `body`, signed at `target.now`.
pub(super) fn signed_headers(url: &str, body: &[u8], target: &Target<'_>) -> Result<HeaderMap, ProviderError> {
    sign_request("POST", url, Some("application/json"), body, target)
}

/// The SigV4 headers (and `content-type`, when there is one: it is signed too) for `method url`
/// with `body`, signed at `target.now`, plus the Provider's extra headers (unsigned). The one
/// signer of every Bedrock request, the adapter's and pass-through's.
pub(super) fn sign_request(
    method: &str,
    url: &str,
    content_type: Option<&str>,
    body: &[u8],
    target: &Target<'_>,
) -> Result<HeaderMap, ProviderError> {
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
        method,
        url,
        content_type.map(|t| ("content-type", t)).into_iter(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| auth_error(format!("cannot sign the bedrock request: {e}")))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| auth_error(format!("cannot sign the bedrock request: {e}")))?
        .into_parts();

    let mut headers = HeaderMap::with_capacity(6 + target.provider.headers.len());
    if let Some(t) = content_type {
        let t = HeaderValue::from_str(t).map_err(|_| auth_error("the content type is not a valid header value"))?;
        headers.insert(http::header::CONTENT_TYPE, t);
    }
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

pub(super) fn bad(message: impl Into<String>, param: impl Into<String>) -> ProviderError {
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

fn unit_interval(key: &str, value: &Value) -> Result<Value, ProviderError> {
    crate::wire::clamped(value, 0.0, 1.0).ok_or_else(|| bad(format!("`{key}` must be a number"), key))
}

/// The Converse body of an OpenAI chat request.
pub(super) fn converse_request(request: &Json, target: &Target<'_>) -> Result<Value, ProviderError> {
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
            // Converse takes both in 0..=1 (OpenAI's temperature goes to 2).
            "temperature" => {
                inference.insert("temperature".into(), unit_interval(key, value)?);
            }
            "top_p" => {
                inference.insert("topP".into(), unit_interval(key, value)?);
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
// Embeddings

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum EmbedFamily {
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

pub(super) fn embed_family(model: &str) -> Result<EmbedFamily, ProviderError> {
    EmbedFamily::of(model).ok_or_else(|| {
        bad(
            format!("bedrock embeddings support amazon.titan-embed-* and cohere.embed-* models, not `{model}`"),
            "model",
        )
    })
}

pub(super) fn embeddings_request(request: &Json, target: &Target<'_>) -> Result<Value, ProviderError> {
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
