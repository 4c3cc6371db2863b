//! Google's two front doors to Gemini: the Gemini API (`/v1beta/models/{model}:{method}`, API key
//! in `x-goog-api-key` or `?key=`) and Vertex AI (`/v1/projects/{p}/locations/{l}/publishers/
//! {publisher}/models/{model}:{method}`, OAuth bearer token), plus a fake OAuth token endpoint
//! (`POST /token`) that grants tokens for service-account JWT assertions.
//!
//! Shapes follow the Gemini API and Vertex AI references: `generateContent` responses with
//! `candidates`, `finishReason` and `usageMetadata`; `streamGenerateContent` as SSE
//! (`?alt=sse`, `data: ...\r\n\r\n`) or as one JSON array written progressively; `embedContent`,
//! `batchEmbedContents` and Vertex `predict` embeddings; errors as
//! `{"error":{"code","message","status"}}`. Vertex's Anthropic publisher (`:rawPredict`,
//! `:streamRawPredict`) is answered in Anthropic's format by [`crate::anthropic`].

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, Uri};
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{json, Value};

use crate::anthropic;
use crate::scenario::{self, Act, Answer, Behaviour, Fault, Plan, Prompt, Reply, TOOL_NAME};
use crate::state::{MockState, Provider};
use crate::strict::{self, Step, Violation};
use crate::wire::{self, name, Frame, Pacing};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Flavor {
    Gemini,
    Vertex,
}

/// `{"error":{"code","message","status"[,"details"]}}`, wrapped in an array for a JSON-array stream.
fn error(
    status: StatusCode,
    status_text: &str,
    message: &str,
    details: Option<Value>,
    extra: &[(HeaderName, HeaderValue)],
    in_array: bool,
) -> Response<Body> {
    let mut err = json!({"code": status.as_u16(), "message": message, "status": status_text});
    if let Some(details) = details {
        err["details"] = details;
    }
    let body = json!({"error": err});
    if in_array {
        wire::json(status, extra, &json!([body]))
    } else {
        wire::json(status, extra, &body)
    }
}

fn fault_response(fault: Fault, prompt_tokens: u32, in_array: bool) -> Response<Body> {
    match fault {
        Fault::RateLimited => error(
            StatusCode::TOO_MANY_REQUESTS,
            "RESOURCE_EXHAUSTED",
            "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.",
            Some(json!([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}])),
            &[(name("retry-after"), HeaderValue::from_static("1"))],
            in_array,
        ),
        Fault::Internal => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
            None,
            &[],
            in_array,
        ),
        Fault::Unavailable => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "The model is overloaded. Please try again later.",
            None,
            &[],
            in_array,
        ),
        Fault::ContextLength => error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            &format!(
                "The input token count ({}) exceeds the maximum number of tokens allowed (1048576).",
                1_048_576 + prompt_tokens
            ),
            None,
            &[],
            in_array,
        ),
    }
}

fn not_found(method: &str) -> Response<Body> {
    error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        &format!("Method '{method}' is not supported by the mock."),
        None,
        &[],
        false,
    )
}

fn gemini_auth(headers: &HeaderMap, query: Option<&str>) -> Result<(), Response<Body>> {
    let key = wire::header_str(headers, "x-goog-api-key")
        .map(str::to_owned)
        .or_else(|| wire::query_param(query, "key").filter(|k| !k.is_empty()));
    match key {
        None => Err(error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
            None,
            &[],
            false,
        )),
        Some(k) if wire::is_rejected_key(&k) => Err(error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "API key not valid. Please pass a valid API key.",
            Some(json!([{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"}
            }])),
            &[],
            false,
        )),
        Some(_) => Ok(()),
    }
}

fn vertex_auth(headers: &HeaderMap) -> Result<(), Response<Body>> {
    match wire::bearer(headers) {
        Some(t) if !wire::is_rejected_key(t) => Ok(()),
        _ => Err(error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
            None,
            &[(name("www-authenticate"), HeaderValue::from_static("Bearer realm=\"https://accounts.google.com/\""))],
            false,
        )),
    }
}

/// `POST /v1beta/models/{model}:{method}` and `POST /v1/models/{model}:{method}`.
pub async fn gemini(
    State(state): State<MockState>,
    Path(model_method): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    state.record(Provider::Gemini, uri.path(), uri.query(), &body);
    if let Err(res) = gemini_auth(&headers, uri.query()) {
        return res;
    }
    let Some((model, method)) = model_method.rsplit_once(':') else {
        return not_found(&model_method);
    };
    dispatch(&state, Flavor::Gemini, model, method, &uri, &headers, &body).await
}

/// `POST /v1[beta1]/projects/{p}/locations/{l}/publishers/{publisher}/models/{model}:{method}`.
pub async fn vertex(
    State(state): State<MockState>,
    Path((_project, _location, publisher, model_method)): Path<(String, String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    state.record(Provider::Vertex, uri.path(), uri.query(), &body);
    if let Err(res) = vertex_auth(&headers) {
        return res;
    }
    let Some((model, method)) = model_method.rsplit_once(':') else {
        return not_found(&model_method);
    };
    if publisher == "anthropic" {
        let mode = match method {
            "rawPredict" => anthropic::Mode::Json,
            "streamRawPredict" => anthropic::Mode::Sse,
            other => return not_found(other),
        };
        let req: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return anthropic::error(
                    StatusCode::BAD_REQUEST,
                    &[],
                    "invalid_request_error",
                    &format!("invalid JSON: {e}"),
                    &state,
                )
            }
        };
        return anthropic::respond(&state, anthropic::Flavor::Vertex, model, &headers, &req, &body, mode).await;
    }
    dispatch(&state, Flavor::Vertex, model, method, &uri, &headers, &body).await
}

async fn dispatch(
    state: &MockState,
    flavor: Flavor,
    model: &str,
    method: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response<Body> {
    let req: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                &format!("Invalid JSON payload received. {e}"),
                None,
                &[],
                false,
            )
        }
    };
    if matches!(method, "generateContent" | "streamGenerateContent") {
        if let Err(v) = strict::check(&req, &strict::GEMINI_GENERATE) {
            return refuse(
                &v,
                method == "streamGenerateContent" && wire::query_param(uri.query(), "alt").as_deref() != Some("sse"),
            );
        }
    }
    match method {
        "generateContent" => generate(state, flavor, model, headers, &req, body, None).await,
        "streamGenerateContent" => {
            let sse = wire::query_param(uri.query(), "alt").as_deref() == Some("sse");
            generate(state, flavor, model, headers, &req, body, Some(sse)).await
        }
        "countTokens" => {
            let tokens = content_prompt(&req).tokens();
            wire::json(
                StatusCode::OK,
                &[],
                &json!({"totalTokens": tokens, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": tokens}]}),
            )
        }
        "predict" if flavor == Flavor::Vertex && model.starts_with("imagen") => {
            let plan = Plan::decide(state, Behaviour::from_model(model), model, headers).await;
            if let Act::Fail(fault) = plan.act {
                return fault_response(fault, 1, false);
            }
            match crate::images::imagen(&req) {
                Ok(out) => {
                    wire::finish(
                        wire::json(StatusCode::OK, &[], &out),
                        plan.first_token_delay,
                        plan.act == Act::Cut,
                    )
                    .await
                }
                Err(message) => error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", &message, None, &[], false),
            }
        }
        "embedContent" | "batchEmbedContents" | "predict" => embed(state, model, method, headers, &req).await,
        other => not_found(other),
    }
}

/// `generationConfig.maxOutputTokens` → `generation_config.max_output_tokens`, with `[i]` indices:
/// how Google's errors name a field.
fn proto_path(path: &strict::Path) -> String {
    let mut out = String::new();
    for step in &path.0 {
        match step {
            Step::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                for c in k.chars() {
                    if c.is_ascii_uppercase() {
                        out.push('_');
                        out.push(c.to_ascii_lowercase());
                    } else {
                        out.push(c);
                    }
                }
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Google's 400 `INVALID_ARGUMENT` for a `GenerateContentRequest` its schema refuses, with the
/// `BadRequest` field violation in `details`.
fn refuse(v: &Violation, in_array: bool) -> Response<Body> {
    let path = v.path();
    let field = proto_path(&path);
    let parent = proto_path(&strict::Path(path.0[..path.0.len().saturating_sub(1)].to_vec()));
    let message = match v {
        Violation::NotObject => "Invalid JSON payload received. Expected an object.".to_owned(),
        Violation::Unknown(_) if parent.is_empty() => {
            format!(
                "Invalid JSON payload received. Unknown name \"{}\": Cannot find field.",
                path.leaf()
            )
        }
        Violation::Unknown(_) => format!(
            "Invalid JSON payload received. Unknown name \"{}\" at '{parent}': Cannot find field.",
            path.leaf()
        ),
        Violation::Missing(_) | Violation::Empty(_) if field == "contents" => {
            "* GenerateContentRequest.contents: contents is not specified\n".to_owned()
        }
        Violation::Missing(_) | Violation::Empty(_) => {
            format!("* GenerateContentRequest.{field}: {} must not be empty\n", path.leaf())
        }
        Violation::Type { expected, got, .. } => format!(
            "Invalid value at '{field}' ({}), {got}",
            match expected {
                strict::Ty::Str | strict::Ty::StrOrArr => "TYPE_STRING",
                strict::Ty::Int => "TYPE_INT32",
                strict::Ty::Num => "TYPE_FLOAT",
                strict::Ty::Bool => "TYPE_BOOL",
                strict::Ty::Obj | strict::Ty::Arr | strict::Ty::Any => "TYPE_MESSAGE",
            }
        ),
        Violation::Enum { path, allowed, .. } if path.leaf() == "role" => {
            format!("Please use a valid role: {}.", allowed[..2].join(", "))
        }
        Violation::Enum { got, .. } => format!("Invalid value at '{field}', \"{got}\""),
        Violation::Below { min, got, .. } => format!(
            "* GenerateContentRequest.{field}: {} must be at least {} (got {})\n",
            path.leaf(),
            strict::num(*min),
            strict::num(*got)
        ),
        Violation::Above { max, got, .. } => format!(
            "* GenerateContentRequest.{field}: {} must be at most {} (got {})\n",
            path.leaf(),
            strict::num(*max),
            strict::num(*got)
        ),
    };
    let details = json!([{
        "@type": "type.googleapis.com/google.rpc.BadRequest",
        "fieldViolations": [{"field": field, "description": message}]
    }]);
    error(
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        &message,
        Some(details),
        &[],
        in_array,
    )
}

/// Word counts over `systemInstruction` and `contents`; a content without a role is the user's.
fn content_prompt(req: &Value) -> Prompt {
    let mut prompt = Prompt::default();
    let system = if req["systemInstruction"].is_null() {
        &req["system_instruction"]
    } else {
        &req["systemInstruction"]
    };
    for part in system["parts"].as_array().into_iter().flatten() {
        if let Some(t) = part["text"].as_str() {
            prompt.add_other(t);
        }
    }
    let contents: Vec<&Value> = match &req["contents"] {
        Value::Array(items) => items.iter().collect(),
        v @ Value::Object(_) => vec![v],
        _ => Vec::new(),
    };
    for content in contents {
        let is_user = matches!(content["role"].as_str(), None | Some("user"));
        let texts: Vec<&str> = content["parts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["text"].as_str())
            .collect();
        prompt.add(is_user, texts);
    }
    prompt
}

fn prompt_details(tokens: u32) -> Value {
    json!([{"modality": "TEXT", "tokenCount": tokens}])
}

fn full_usage(answer: &Answer) -> Value {
    json!({
        "promptTokenCount": answer.prompt_tokens,
        "candidatesTokenCount": answer.completion_tokens,
        "totalTokenCount": answer.total_tokens(),
        "promptTokensDetails": prompt_details(answer.prompt_tokens)
    })
}

fn prompt_usage(answer: &Answer) -> Value {
    json!({
        "promptTokenCount": answer.prompt_tokens,
        "totalTokenCount": answer.prompt_tokens,
        "promptTokensDetails": prompt_details(answer.prompt_tokens)
    })
}

fn safety_ratings(blocked: bool) -> Value {
    json!([
        {"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "NEGLIGIBLE"},
        {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": if blocked { "HIGH" } else { "NEGLIGIBLE" }, "blocked": blocked},
        {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
        {"category": "HARM_CATEGORY_SEXUALLY_EXPLICIT", "probability": "NEGLIGIBLE"}
    ])
}

struct Envelope<'a> {
    flavor: Flavor,
    model: &'a str,
    response_id: &'a str,
    create_time: &'a str,
}

impl Envelope<'_> {
    fn wrap(&self, candidate: Value, usage: Value) -> Value {
        let mut out = json!({
            "candidates": [candidate],
            "usageMetadata": usage,
            "modelVersion": self.model,
            "responseId": self.response_id,
        });
        if self.flavor == Flavor::Vertex {
            out["createTime"] = json!(self.create_time);
        }
        out
    }
}

fn text_candidate(text: &str, finish: bool) -> Value {
    let mut c = json!({"content": {"parts": [{"text": text}], "role": "model"}, "index": 0});
    if finish {
        c["finishReason"] = json!("STOP");
    }
    c
}

fn tool_candidate() -> Value {
    json!({
        "content": {"parts": [{"functionCall": {"name": TOOL_NAME, "args": {"city": "Paris"}}}], "role": "model"},
        "finishReason": "STOP",
        "index": 0
    })
}

fn safety_candidate() -> Value {
    json!({"finishReason": "SAFETY", "index": 0, "safetyRatings": safety_ratings(true)})
}

/// `generateContent` (`stream: None`) or `streamGenerateContent` (`Some(sse)`).
async fn generate(
    state: &MockState,
    flavor: Flavor,
    model: &str,
    headers: &HeaderMap,
    req: &Value,
    body: &Bytes,
    stream: Option<bool>,
) -> Response<Body> {
    let plan = Plan::decide(state, Behaviour::from_model(model), model, headers).await;
    let prompt = content_prompt(req);
    if let Act::Fail(fault) = plan.act {
        return fault_response(fault, prompt.tokens(), stream == Some(false));
    }
    let answer = Answer::new(plan.act, &prompt, body);
    let response_id = format!("mock{:016x}", state.next_id());
    let create_time = jiff::Timestamp::now().to_string();
    let env = Envelope {
        flavor,
        model,
        response_id: &response_id,
        create_time: &create_time,
    };

    let Some(sse) = stream else {
        let out = match &answer.reply {
            Reply::Text(t) => env.wrap(text_candidate(t, true), full_usage(&answer)),
            Reply::Tool => env.wrap(tool_candidate(), full_usage(&answer)),
            Reply::Refusal => env.wrap(safety_candidate(), prompt_usage(&answer)),
        };
        let res = wire::json(StatusCode::OK, &[], &out);
        return wire::finish(res, plan.first_token_delay, plan.act == Act::Cut).await;
    };

    // Each chunk is a full GenerateContentResponse; the last carries finishReason and the usage.
    let mut chunks: Vec<(Value, bool)> = Vec::new();
    match &answer.reply {
        Reply::Text(t) => {
            let pieces = scenario::pieces(t);
            let last = pieces.len().saturating_sub(1);
            for (i, piece) in pieces.iter().enumerate() {
                let done = i == last;
                let usage = if done {
                    full_usage(&answer)
                } else {
                    prompt_usage(&answer)
                };
                chunks.push((env.wrap(text_candidate(piece, done), usage), true));
            }
            if pieces.is_empty() {
                chunks.push((env.wrap(text_candidate("", true), full_usage(&answer)), false));
            }
        }
        // Gemini delivers a function call whole, in one chunk.
        Reply::Tool => chunks.push((env.wrap(tool_candidate(), full_usage(&answer)), true)),
        Reply::Refusal => chunks.push((env.wrap(safety_candidate(), prompt_usage(&answer)), false)),
    }
    let count = chunks.len();
    let mut frames: Vec<Frame> = Vec::with_capacity(count + 1);
    for (i, (chunk, token)) in chunks.into_iter().enumerate() {
        let mut buf = BytesMut::with_capacity(512);
        if sse {
            buf.put_slice(b"data: ");
            buf.put_slice(&wire::to_vec(&chunk));
            buf.put_slice(b"\r\n\r\n");
        } else {
            buf.put_slice(if i == 0 { b"[" } else { b",\r\n" });
            buf.put_slice(&wire::to_vec(&chunk));
        }
        frames.push(Frame {
            bytes: buf.freeze(),
            token,
        });
    }
    if !sse {
        frames.push(Frame::meta(Bytes::from_static(b"]")));
    }
    let pacing = Pacing {
        first_delay: plan.first_token_delay,
        token_interval: plan.token_interval,
        cut: plan.act == Act::Cut,
    };
    let body = wire::stream_body(state, frames, pacing);
    let content_type = if sse { wire::EVENT_STREAM } else { wire::JSON };
    wire::stream_response(content_type, &[], body)
}

/// `embedContent`, `batchEmbedContents` (Gemini API) and `predict` (Vertex text embeddings).
async fn embed(state: &MockState, model: &str, method: &str, headers: &HeaderMap, req: &Value) -> Response<Body> {
    let plan = Plan::decide(state, Behaviour::from_model(model), model, headers).await;
    let dims_of = |v: &Value| -> usize {
        scenario::dimensions(
            v["outputDimensionality"]
                .as_u64()
                .or_else(|| v["output_dimensionality"].as_u64())
                .or_else(|| v["embedContentConfig"]["outputDimensionality"].as_u64()),
        )
    };
    let text_of = |content: &Value| -> String {
        content["parts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(" ")
    };
    // (text, dimensions) per input.
    let inputs: Vec<(String, usize)> = match method {
        "embedContent" => vec![(text_of(&req["content"]), dims_of(req))],
        "batchEmbedContents" => req["requests"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| (text_of(&r["content"]), dims_of(r)))
            .collect(),
        _ => {
            let dims = dims_of(&req["parameters"]);
            req["instances"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|i| (i["content"].as_str().unwrap_or("").to_owned(), dims))
                .collect()
        }
    };
    let tokens: u32 = inputs.iter().map(|(t, _)| scenario::count_words(t)).sum::<u32>().max(1);
    if let Act::Fail(fault) = plan.act {
        return fault_response(fault, tokens, false);
    }
    let out = match method {
        "embedContent" => {
            let (text, dims) = inputs.first().cloned().unwrap_or_default();
            json!({"embedding": {"values": scenario::embedding(&text, dims)}})
        }
        "batchEmbedContents" => json!({
            "embeddings": inputs.iter().map(|(t, d)| json!({"values": scenario::embedding(t, *d)})).collect::<Vec<_>>()
        }),
        _ => json!({
            "predictions": inputs.iter().map(|(t, d)| json!({"embeddings": {
                "values": scenario::embedding(t, *d),
                "statistics": {"token_count": scenario::count_words(t), "truncated": false}
            }})).collect::<Vec<_>>(),
            "metadata": {"billableCharacterCount": inputs.iter().map(|(t, _)| t.chars().filter(|c| !c.is_whitespace()).count()).sum::<usize>()}
        }),
    };
    let res = wire::json(StatusCode::OK, &[], &out);
    wire::finish(res, plan.first_token_delay, plan.act == Act::Cut).await
}

/// `POST /token`: Google's OAuth 2.0 token endpoint for the JWT-bearer grant that service
/// accounts use (and the refresh-token grant of user credentials). Any well-formed assertion
/// is accepted.
pub async fn token(State(state): State<MockState>, uri: Uri, body: Bytes) -> Response<Body> {
    state.count(uri.path());
    let raw = String::from_utf8_lossy(&body);
    let mut grant_type = None;
    let mut assertion = None;
    let mut refresh_token = None;
    for (k, v) in wire::form_pairs(&raw) {
        match k.as_str() {
            "grant_type" => grant_type = Some(v),
            "assertion" => assertion = Some(v),
            "refresh_token" => refresh_token = Some(v),
            _ => {}
        }
    }
    let oauth_error = |error: &str, description: &str| {
        wire::json(
            StatusCode::BAD_REQUEST,
            &[],
            &json!({"error": error, "error_description": description}),
        )
    };
    match grant_type.as_deref() {
        Some("urn:ietf:params:oauth:grant-type:jwt-bearer") => {
            let well_formed = assertion
                .as_deref()
                .is_some_and(|a| a.split('.').count() == 3 && a.split('.').all(|p| !p.is_empty()));
            if !well_formed {
                return oauth_error("invalid_grant", "Invalid JWT Signature.");
            }
        }
        Some("refresh_token") if refresh_token.as_deref().is_some_and(|t| !t.is_empty()) => {}
        Some("refresh_token") => return oauth_error("invalid_request", "Missing required parameter: refresh_token"),
        Some(other) => return oauth_error("unsupported_grant_type", &format!("Invalid grant_type: {other}")),
        None => return oauth_error("unsupported_grant_type", "Invalid grant_type: "),
    }
    wire::json(
        StatusCode::OK,
        &[(
            name("cache-control"),
            HeaderValue::from_static("no-cache, no-store, max-age=0, must-revalidate"),
        )],
        &json!({
            "access_token": format!("ya29.mock-{:016x}", state.next_id()),
            "expires_in": 3599,
            "token_type": "Bearer"
        }),
    )
}
