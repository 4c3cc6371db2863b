//! OpenAI's wire format (chat completions, legacy completions, embeddings, responses, models)
//! and Azure OpenAI's deployment flavour of the same bodies.
//!
//! Shapes follow the OpenAI API reference (chat completion object, chat completion chunk with
//! `stream_options.include_usage`, embeddings with `encoding_format`, the Responses API object
//! and its streaming events) and Azure OpenAI's REST reference (deployment paths, `api-key`,
//! `api-version`, content-filter annotations, its error bodies). This module must not grow
//! gateway logic: it only plays the provider.

use std::borrow::Cow;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, Uri};
use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::scenario::{
    self, Act, Answer, Behaviour, Counting, Fault, Plan, Prompt, Reply, TOOL_ARGUMENTS, TOOL_ARGUMENT_DELTAS, TOOL_NAME,
};
use crate::state::{MockState, Outcome, Provider, Served};
use crate::strict;
use crate::wire::{self, hv, name, Frame, Pacing};

/// Which flavour of the OpenAI API a request came through.
#[derive(Clone, Copy)]
pub(crate) enum Flavor<'a> {
    OpenAi,
    Azure { deployment: &'a str },
}

// ---------------------------------------------------------------------------------------------
// Handlers

pub async fn chat_completions(
    State(state): State<MockState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    if let Err(res) = received_openai(&state, &uri, &headers, &body) {
        return res;
    }
    if let Err(res) = validate(&body, &strict::OPENAI_CHAT) {
        return res;
    }
    chat(&state, Flavor::OpenAi, &headers, &body).await
}

pub async fn azure_chat_completions(
    State(state): State<MockState>,
    Path(deployment): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    if let Err(res) = received_azure(&state, &uri, &headers, &body) {
        return res;
    }
    if let Err(res) = validate(&body, &strict::AZURE_CHAT).and_then(|req| azure_refuses_developer(&req, uri.query())) {
        return res;
    }
    chat(
        &state,
        Flavor::Azure {
            deployment: &deployment,
        },
        &headers,
        &body,
    )
    .await
}

pub async fn completions(State(state): State<MockState>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response<Body> {
    if let Err(res) = received_openai(&state, &uri, &headers, &body) {
        return res;
    }
    if let Err(res) = validate(&body, &strict::OPENAI_COMPLETIONS) {
        return res;
    }
    legacy_completions(&state, Flavor::OpenAi, &headers, &body).await
}

pub async fn azure_completions(
    State(state): State<MockState>,
    Path(deployment): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    if let Err(res) = received_azure(&state, &uri, &headers, &body) {
        return res;
    }
    if let Err(res) = validate(&body, &strict::OPENAI_COMPLETIONS) {
        return res;
    }
    legacy_completions(
        &state,
        Flavor::Azure {
            deployment: &deployment,
        },
        &headers,
        &body,
    )
    .await
}

pub async fn embeddings(State(state): State<MockState>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response<Body> {
    if let Err(res) = received_openai(&state, &uri, &headers, &body) {
        return res;
    }
    if let Err(res) = validate(&body, &strict::OPENAI_EMBEDDINGS) {
        return res;
    }
    embed(&state, Flavor::OpenAi, &headers, &body).await
}

pub async fn azure_embeddings(
    State(state): State<MockState>,
    Path(deployment): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    if let Err(res) = received_azure(&state, &uri, &headers, &body) {
        return res;
    }
    if let Err(res) = validate(&body, &strict::AZURE_EMBEDDINGS) {
        return res;
    }
    embed(
        &state,
        Flavor::Azure {
            deployment: &deployment,
        },
        &headers,
        &body,
    )
    .await
}

pub async fn responses(State(state): State<MockState>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response<Body> {
    if let Err(res) = received_openai(&state, &uri, &headers, &body) {
        return res;
    }
    if let Err(res) = validate(&body, &strict::OPENAI_RESPONSES) {
        return res;
    }
    responses_api(&state, &headers, &body).await
}

/// `GET /v1/models`: every model name the mock gives a meaning to.
pub async fn list_models(headers: HeaderMap) -> Response<Body> {
    if let Err(res) = openai_auth(&headers) {
        return res;
    }
    let created = 1_700_000_000u64;
    let data: Vec<Value> = crate::MODEL_NAMES
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": created, "owned_by": "switchyard-mock"}))
        .collect();
    wire::json(StatusCode::OK, &[], &json!({"object": "list", "data": data}))
}

/// `GET /v1/models/{model}`: any name exists.
pub async fn retrieve_model(Path(model): Path<String>, headers: HeaderMap) -> Response<Body> {
    if let Err(res) = openai_auth(&headers) {
        return res;
    }
    wire::json(
        StatusCode::OK,
        &[],
        &json!({"id": model, "object": "model", "created": 1_700_000_000u64, "owned_by": "switchyard-mock"}),
    )
}

// ---------------------------------------------------------------------------------------------
// Auth and errors

/// Records an OpenAI request and checks its key: the start of every OpenAI endpoint.
pub(crate) fn received_openai(
    state: &MockState,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(), Response<Body>> {
    state.record(Provider::OpenAi, uri.path(), uri.query(), body);
    openai_auth(headers)
}

/// Records an Azure OpenAI request and checks its key: the start of every Azure endpoint.
pub(crate) fn received_azure(
    state: &MockState,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(), Response<Body>> {
    state.record(Provider::Azure, uri.path(), uri.query(), body);
    azure_auth(headers, uri.query())
}

pub(crate) fn openai_auth(headers: &HeaderMap) -> Result<(), Response<Body>> {
    match wire::bearer(headers) {
        None => Err(error_body(
            StatusCode::UNAUTHORIZED,
            &[],
            "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) if you're accessing the API from your browser and are prompted for a username. You can obtain an API key from https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            None,
            None,
        )),
        Some(key) if wire::is_rejected_key(key) => {
            let shown: String = key.chars().take(4).collect();
            Err(error_body(
                StatusCode::UNAUTHORIZED,
                &[],
                &format!("Incorrect API key provided: {shown}****. You can find your API key at https://platform.openai.com/account/api-keys."),
                "invalid_request_error",
                None,
                Some("invalid_api_key"),
            ))
        }
        Some(_) => Ok(()),
    }
}

pub(crate) fn azure_auth(headers: &HeaderMap, query: Option<&str>) -> Result<(), Response<Body>> {
    let key = wire::header_str(headers, "api-key").or_else(|| wire::bearer(headers));
    match key {
        Some(k) if !wire::is_rejected_key(k) => {}
        _ => {
            return Err(wire::json(
                StatusCode::UNAUTHORIZED,
                &[],
                &json!({"error": {"code": "401", "message": "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource."}}),
            ))
        }
    }
    if wire::query_param(query, "api-version").is_none_or(|v| v.is_empty()) {
        return Err(wire::json(
            StatusCode::NOT_FOUND,
            &[],
            &json!({"error": {"code": "404", "message": "Resource not found"}}),
        ));
    }
    Ok(())
}

fn error_body(
    status: StatusCode,
    headers: &[(HeaderName, HeaderValue)],
    message: &str,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Response<Body> {
    wire::json(
        status,
        headers,
        &json!({"error": {"message": message, "type": kind, "param": param, "code": code}}),
    )
}

fn request_id(state: &MockState) -> String {
    format!("req_mock{:016x}", state.next_id())
}

/// The error response for a fault, in the flavour's shape.
pub(crate) fn fault_response(flavor: Flavor<'_>, fault: Fault, model: &str, prompt_tokens: u32) -> Response<Body> {
    match (flavor, fault) {
        (Flavor::OpenAi, Fault::RateLimited) => error_body(
            StatusCode::TOO_MANY_REQUESTS,
            &[
                (name("retry-after"), HeaderValue::from_static("1")),
                (name("x-ratelimit-limit-requests"), HeaderValue::from_static("3")),
                (name("x-ratelimit-remaining-requests"), HeaderValue::from_static("0")),
                (name("x-ratelimit-reset-requests"), HeaderValue::from_static("1s")),
            ],
            &format!("Rate limit reached for {model} in organization org-mock on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 1s. Visit https://platform.openai.com/account/rate-limits to learn more."),
            "requests",
            None,
            Some("rate_limit_exceeded"),
        ),
        (Flavor::Azure { .. }, Fault::RateLimited) => wire::json(
            StatusCode::TOO_MANY_REQUESTS,
            &[
                (name("retry-after"), HeaderValue::from_static("1")),
                (name("retry-after-ms"), HeaderValue::from_static("1000")),
                (name("x-ratelimit-remaining-requests"), HeaderValue::from_static("0")),
            ],
            &json!({"error": {"code": "429", "message": "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded call rate limit of your current OpenAI S0 pricing tier. Please retry after 1 second. Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit."}}),
        ),
        (_, Fault::Internal) => error_body(
            StatusCode::INTERNAL_SERVER_ERROR,
            &[],
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            None,
            None,
        ),
        (_, Fault::Unavailable) => error_body(
            StatusCode::SERVICE_UNAVAILABLE,
            &[],
            "The server is overloaded or not ready yet.",
            "server_error",
            None,
            None,
        ),
        (_, Fault::ContextLength) => error_body(
            StatusCode::BAD_REQUEST,
            &[],
            &format!(
                "This model's maximum context length is 128000 tokens. However, your messages resulted in {} tokens. Please reduce the length of the messages.",
                128_000 + prompt_tokens
            ),
            "invalid_request_error",
            Some("messages"),
            Some("context_length_exceeded"),
        ),
    }
}

/// The content-policy refusal: OpenAI's 400 `content_policy_violation`, Azure's `content_filter`.
fn refusal_response(flavor: Flavor<'_>) -> Response<Body> {
    match flavor {
        Flavor::OpenAi => error_body(
            StatusCode::BAD_REQUEST,
            &[],
            "Your request was rejected as a result of our safety system. Your prompt may contain text that is not allowed by our safety system.",
            "invalid_request_error",
            None,
            Some("content_policy_violation"),
        ),
        Flavor::Azure { .. } => wire::json(
            StatusCode::BAD_REQUEST,
            &[],
            &json!({"error": {
                "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry. To learn more about our content filtering policies please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766",
                "type": null,
                "param": "prompt",
                "code": "content_filter",
                "status": 400,
                "innererror": {
                    "code": "ResponsibleAIPolicyViolation",
                    "content_filter_result": {
                        "hate": {"filtered": false, "severity": "safe"},
                        "jailbreak": {"filtered": false, "detected": false},
                        "self_harm": {"filtered": false, "severity": "safe"},
                        "sexual": {"filtered": false, "severity": "safe"},
                        "violence": {"filtered": true, "severity": "high"}
                    }
                }
            }}),
        ),
    }
}

pub(crate) fn bad_request(message: &str) -> Response<Body> {
    error_body(
        StatusCode::BAD_REQUEST,
        &[],
        message,
        "invalid_request_error",
        None,
        None,
    )
}

/// OpenAI's 400 for a request its schema refuses (Azure answers the same body).
pub(crate) fn refuse(v: &strict::Violation) -> Response<Body> {
    use strict::Violation as V;
    let path = v.path().brackets();
    let (message, param, code): (String, Option<&str>, Option<&str>) = match v {
        V::NotObject => (
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)".to_owned(),
            None,
            None,
        ),
        V::Missing(_) => (
            format!("Missing required parameter: '{path}'."),
            Some(&path),
            Some("missing_required_parameter"),
        ),
        V::Unknown(p) if p.0.len() == 1 => (format!("Unrecognized request argument supplied: {path}"), None, None),
        V::Unknown(_) => (format!("Unknown parameter: '{path}'."), Some(&path), Some("unknown_parameter")),
        V::Type { expected, got, .. } => (
            format!(
                "Invalid type for '{path}': expected {}, but got {} instead.",
                expected.word(),
                strict::type_word(got)
            ),
            Some(&path),
            Some("invalid_type"),
        ),
        V::Enum { got, allowed, .. } => (
            format!(
                "Invalid value: '{got}'. Supported values are: {}.",
                strict::quoted_list(allowed, "and", true)
            ),
            Some(&path),
            Some("invalid_value"),
        ),
        V::Below { min, got, .. } => (
            format!(
                "Invalid '{path}': {kind} below minimum value. Expected a value >= {}, but got {} instead.",
                strict::num(*min),
                strict::num(*got),
                kind = if got.fract() == 0.0 { "integer" } else { "decimal" }
            ),
            Some(&path),
            Some(if got.fract() == 0.0 { "integer_below_min_value" } else { "decimal_below_min_value" }),
        ),
        V::Above { max, got, .. } => (
            format!(
                "Invalid '{path}': {kind} above maximum value. Expected a value <= {}, but got {} instead.",
                strict::num(*max),
                strict::num(*got),
                kind = if got.fract() == 0.0 { "integer" } else { "decimal" }
            ),
            Some(&path),
            Some(if got.fract() == 0.0 { "integer_above_max_value" } else { "decimal_above_max_value" }),
        ),
        V::Empty(_) => (
            format!("Invalid '{path}': empty array. Expected an array with minimum length 1, but got an empty array instead."),
            Some(&path),
            Some("empty_array"),
        ),
    };
    error_body(
        StatusCode::BAD_REQUEST,
        &[],
        &message,
        "invalid_request_error",
        param,
        code,
    )
}

/// Checks a body against an OpenAI schema; the refusal is OpenAI's 400.
pub(crate) fn validate(body: &Bytes, schema: &strict::Schema) -> Result<Value, Response<Body>> {
    let req: Value = serde_json::from_slice(body)
        .map_err(|e| bad_request(&format!("We could not parse the JSON body of your request. ({e})")))?;
    strict::check(&req, schema).map_err(|v| refuse(&v))?;
    Ok(req)
}

/// Whether an Azure OpenAI `api-version` takes `developer` messages: they came with o1 in
/// `2024-12-01-preview`; every version dated before it (the `2024-10-21` GA among them) answers
/// `Invalid value: 'developer'`. Undated versions (`preview`, `latest` of the v1 API) are newer.
pub(crate) fn azure_takes_developer(api_version: &str) -> bool {
    match api_version.get(..10) {
        Some(date) if date.as_bytes().first().is_some_and(u8::is_ascii_digit) => date >= "2024-12-01",
        _ => true,
    }
}

/// Azure's refusal of a `developer` message on an `api-version` that predates it.
fn azure_refuses_developer(req: &Value, query: Option<&str>) -> Result<(), Response<Body>> {
    let version = wire::query_param(query, "api-version").unwrap_or_default();
    if azure_takes_developer(&version) {
        return Ok(());
    }
    let messages = req["messages"].as_array().map(Vec::as_slice).unwrap_or_default();
    match messages.iter().position(|m| m["role"] == "developer") {
        None => Ok(()),
        Some(i) => Err(error_body(
            StatusCode::BAD_REQUEST,
            &[],
            "Invalid value: 'developer'. Supported values are: 'system', 'assistant', 'user', 'function', and 'tool'.",
            "invalid_request_error",
            Some(&format!("messages[{i}].role")),
            Some("invalid_value"),
        )),
    }
}

/// Headers a successful OpenAI (or Azure) response carries.
pub(crate) fn success_headers(state: &MockState, flavor: Flavor<'_>) -> Vec<(HeaderName, HeaderValue)> {
    let id = request_id(state);
    match flavor {
        Flavor::OpenAi => vec![
            (name("x-request-id"), hv(id)),
            (name("openai-organization"), HeaderValue::from_static("org-mock")),
            (name("openai-processing-ms"), HeaderValue::from_static("1")),
            (name("openai-version"), HeaderValue::from_static("2020-10-01")),
            (name("x-ratelimit-limit-requests"), HeaderValue::from_static("10000")),
            (name("x-ratelimit-remaining-requests"), HeaderValue::from_static("9999")),
            (name("x-ratelimit-limit-tokens"), HeaderValue::from_static("30000000")),
            (
                name("x-ratelimit-remaining-tokens"),
                HeaderValue::from_static("29999000"),
            ),
            (name("x-ratelimit-reset-requests"), HeaderValue::from_static("6ms")),
            (name("x-ratelimit-reset-tokens"), HeaderValue::from_static("0s")),
        ],
        Flavor::Azure { deployment } => vec![
            (name("apim-request-id"), hv(&id)),
            (name("x-request-id"), hv(id)),
            (name("x-ms-region"), HeaderValue::from_static("Mock Region")),
            (name("x-ms-deployment-name"), hv(deployment)),
            (name("x-ratelimit-remaining-requests"), HeaderValue::from_static("9999")),
            (
                name("x-ratelimit-remaining-tokens"),
                HeaderValue::from_static("29999000"),
            ),
        ],
    }
}

fn content_filter_results() -> Value {
    json!({
        "hate": {"filtered": false, "severity": "safe"},
        "self_harm": {"filtered": false, "severity": "safe"},
        "sexual": {"filtered": false, "severity": "safe"},
        "violence": {"filtered": false, "severity": "safe"}
    })
}

fn prompt_filter_results() -> Value {
    json!([{"prompt_index": 0, "content_filter_results": {
        "hate": {"filtered": false, "severity": "safe"},
        "jailbreak": {"filtered": false, "detected": false},
        "self_harm": {"filtered": false, "severity": "safe"},
        "sexual": {"filtered": false, "severity": "safe"},
        "violence": {"filtered": false, "severity": "safe"}
    }}])
}

fn usage(answer: &Answer) -> Value {
    json!({
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.total_tokens(),
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0
        }
    })
}

fn pacing(plan: &Plan) -> Pacing {
    Pacing {
        first_delay: plan.first_token_delay,
        token_interval: plan.token_interval,
        cut: plan.act == Act::Cut,
    }
}

// ---------------------------------------------------------------------------------------------
// Chat completions

#[derive(Deserialize)]
struct ChatRequest<'a> {
    #[serde(borrow, default)]
    model: Cow<'a, str>,
    #[serde(borrow, default)]
    messages: Vec<ChatMessage<'a>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    /// OpenAI's end-user id; the ledger files a request under it when no `x-request-id` came.
    #[serde(borrow, default)]
    user: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ChatMessage<'a> {
    #[serde(borrow, default)]
    role: Cow<'a, str>,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

#[derive(Deserialize)]
struct TextPart {
    #[serde(default)]
    text: Option<String>,
}

/// The text of a message `content`: a string, or the `text` of each part of an array.
fn content_texts(raw: Option<&RawValue>) -> Vec<Cow<'_, str>> {
    let Some(raw) = raw else { return Vec::new() };
    let s = raw.get();
    match s.as_bytes().first() {
        Some(b'"') => match serde_json::from_str::<&str>(s) {
            Ok(t) => vec![Cow::Borrowed(t)],
            Err(_) => serde_json::from_str::<String>(s).map(Cow::Owned).into_iter().collect(),
        },
        Some(b'[') => serde_json::from_str::<Vec<TextPart>>(s)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| p.text.map(Cow::Owned))
            .collect(),
        _ => Vec::new(),
    }
}

async fn chat(state: &MockState, flavor: Flavor<'_>, headers: &HeaderMap, body: &Bytes) -> Response<Body> {
    let received_ms = wire::unix_ms();
    let req: ChatRequest<'_> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return bad_request(&format!("We could not parse the JSON body of your request. ({e})")),
    };
    let (behaviour, model_key) = match flavor {
        Flavor::OpenAi => (Behaviour::from_model(&req.model), &*req.model),
        Flavor::Azure { deployment } => (Behaviour::from_models(&[deployment, &req.model]), deployment),
    };
    let plan = Plan::decide(state, behaviour, model_key, headers).await;
    let mut prompt = Prompt::counted(Counting::from_model(model_key));
    for m in &req.messages {
        let texts = content_texts(m.content);
        prompt.add(m.role == "user", texts.iter().map(|t| &**t));
    }
    let response_model: &str = match flavor {
        Flavor::OpenAi => &req.model,
        Flavor::Azure { deployment } if req.model.is_empty() => deployment,
        Flavor::Azure { .. } => &req.model,
    };
    let stream = req.stream.unwrap_or(false);
    let served = |status: u16, outcome: Outcome, planned: u32| Served {
        id: wire::header_str(headers, "x-request-id")
            .map(str::to_owned)
            .or_else(|| req.user.as_deref().map(str::to_owned)),
        path: match flavor {
            Flavor::OpenAi => "/v1/chat/completions".to_owned(),
            Flavor::Azure { deployment } => format!("/openai/deployments/{deployment}/chat/completions"),
        },
        model: response_model.to_owned(),
        stream,
        status,
        outcome,
        received_ms,
        prompt_tokens: prompt.tokens(),
        completion_tokens: 0,
        planned_completion_tokens: planned,
        usage_sent: false,
    };
    match plan.act {
        Act::Fail(fault) => {
            let res = fault_response(flavor, fault, response_model, prompt.tokens());
            drop(state.tally(served(res.status().as_u16(), Outcome::Error, 0)));
            return res;
        }
        Act::Refuse => {
            let res = refusal_response(flavor);
            drop(state.tally(served(res.status().as_u16(), Outcome::Error, 0)));
            return res;
        }
        _ => {}
    }
    let answer = Answer::new(plan.act, &prompt, body);
    let tally = state.tally(served(200, Outcome::Pending, answer.completion_tokens));
    let id = format!("chatcmpl-mock{:016x}", state.next_id());
    let created = wire::unix_now();
    let headers = success_headers(state, flavor);
    let azure = matches!(flavor, Flavor::Azure { .. });

    if stream {
        let include_usage = req.stream_options.and_then(|o| o.include_usage).unwrap_or(false);
        let frames = chat_stream_frames(&id, created, response_model, &answer, include_usage, azure);
        let body = wire::stream_body_tallied(state, frames, pacing(&plan), Some(tally), include_usage);
        return wire::stream_response(wire::EVENT_STREAM, &headers, body);
    }

    let (message, finish_reason) = match &answer.reply {
        Reply::Tool => (
            json!({"role": "assistant", "content": null, "refusal": null, "annotations": [], "tool_calls": [{
                "id": format!("call_mock{id}", id = &id[13..]),
                "type": "function",
                "function": {"name": TOOL_NAME, "arguments": TOOL_ARGUMENTS}
            }]}),
            "tool_calls",
        ),
        _ => (
            json!({"role": "assistant", "content": answer.text(), "refusal": null, "annotations": []}),
            "stop",
        ),
    };
    let mut choice = json!({"index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason});
    let mut completion = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": response_model,
        "choices": [],
        "usage": usage(&answer),
        "service_tier": "default",
        "system_fingerprint": "fp_mock",
    });
    if azure {
        choice["content_filter_results"] = content_filter_results();
        completion["prompt_filter_results"] = prompt_filter_results();
    }
    completion["choices"] = json!([choice]);
    let res = wire::json(StatusCode::OK, &headers, &completion);
    wire::finish_tallied(res, plan.first_token_delay, plan.act == Act::Cut, Some(tally)).await
}

fn chat_stream_frames(
    id: &str,
    created: u64,
    model: &str,
    answer: &Answer,
    include_usage: bool,
    azure: bool,
) -> Vec<Frame> {
    let chunk = |delta: Value, finish_reason: Option<&str>| -> Bytes {
        let mut c = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": "fp_mock",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        });
        if include_usage {
            c["usage"] = Value::Null;
        }
        if azure {
            c["choices"][0]["content_filter_results"] = if finish_reason.is_some() {
                json!({})
            } else {
                content_filter_results()
            };
        }
        wire::sse_data(&c)
    };
    let mut frames = Vec::new();
    if azure {
        // Azure opens every stream with an empty-choices chunk carrying the prompt filter results.
        frames.push(Frame::meta(wire::sse_data(&json!({
            "choices": [], "created": 0, "id": "", "model": "", "object": "",
            "prompt_filter_results": prompt_filter_results()
        }))));
    }
    let finish_reason = match &answer.reply {
        Reply::Tool => {
            let call_id = format!("call_mock{}", &id[13..]);
            frames.push(Frame::meta(chunk(
                json!({"role": "assistant", "content": null, "refusal": null, "tool_calls": [{
                    "index": 0, "id": call_id, "type": "function",
                    "function": {"name": TOOL_NAME, "arguments": ""}
                }]}),
                None,
            )));
            for piece in TOOL_ARGUMENT_DELTAS {
                frames.push(Frame::token(chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
                    None,
                )));
            }
            "tool_calls"
        }
        _ => {
            frames.push(Frame::meta(chunk(
                json!({"role": "assistant", "content": "", "refusal": null}),
                None,
            )));
            for piece in answer.pieces() {
                frames.push(Frame::token(chunk(json!({"content": piece}), None)));
            }
            "stop"
        }
    };
    frames.push(Frame::meta(chunk(json!({}), Some(finish_reason))));
    if include_usage {
        frames.push(Frame::meta(wire::sse_data(&json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": "fp_mock",
            "choices": [],
            "usage": usage(answer),
        }))));
    }
    frames.push(Frame::meta(Bytes::from_static(b"data: [DONE]\n\n")));
    frames
}

// ---------------------------------------------------------------------------------------------
// Legacy completions

async fn legacy_completions(
    state: &MockState,
    flavor: Flavor<'_>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response<Body> {
    let req: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return bad_request(&format!("We could not parse the JSON body of your request. ({e})")),
    };
    let model = req["model"].as_str().unwrap_or("");
    let (behaviour, model_key) = match flavor {
        Flavor::OpenAi => (Behaviour::from_model(model), model),
        Flavor::Azure { deployment } => (Behaviour::from_models(&[deployment, model]), deployment),
    };
    let plan = Plan::decide(state, behaviour, model_key, headers).await;
    let mut prompt = Prompt::default();
    match &req["prompt"] {
        Value::String(s) => prompt.add(true, [s.as_str()]),
        Value::Array(items) => {
            for item in items {
                if let Some(s) = item.as_str() {
                    prompt.add(true, [s]);
                } else if let Some(tokens) = item.as_array() {
                    prompt.add_other(&"t ".repeat(tokens.len()));
                } else if item.is_number() {
                    prompt.add_other("t");
                }
            }
        }
        _ => {}
    }
    match plan.act {
        Act::Fail(fault) => return fault_response(flavor, fault, model, prompt.tokens()),
        Act::Refuse => return refusal_response(flavor),
        _ => {}
    }
    // The legacy API has no tools: mock-tool answers with text.
    let act = if plan.act == Act::Tool { Act::Reply } else { plan.act };
    let answer = Answer::new(act, &prompt, body);
    let id = format!("cmpl-mock{:016x}", state.next_id());
    let created = wire::unix_now();
    let headers = success_headers(state, flavor);
    if req["stream"].as_bool().unwrap_or(false) {
        let include_usage = req["stream_options"]["include_usage"].as_bool().unwrap_or(false);
        let chunk = |text: &str, finish_reason: Option<&str>| -> Bytes {
            let mut c = json!({
                "id": id, "object": "text_completion", "created": created, "model": model,
                "system_fingerprint": "fp_mock",
                "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish_reason}],
            });
            if include_usage {
                c["usage"] = Value::Null;
            }
            wire::sse_data(&c)
        };
        let mut frames: Vec<Frame> = scenario::pieces(answer.text())
            .into_iter()
            .map(|p| Frame::token(chunk(p, None)))
            .collect();
        frames.push(Frame::meta(chunk("", Some("stop"))));
        if include_usage {
            frames.push(Frame::meta(wire::sse_data(&json!({
                "id": id, "object": "text_completion", "created": created, "model": model,
                "system_fingerprint": "fp_mock", "choices": [], "usage": usage(&answer),
            }))));
        }
        frames.push(Frame::meta(Bytes::from_static(b"data: [DONE]\n\n")));
        let body = wire::stream_body(state, frames, pacing(&plan));
        return wire::stream_response(wire::EVENT_STREAM, &headers, body);
    }
    let res = wire::json(
        StatusCode::OK,
        &headers,
        &json!({
            "id": id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_mock",
            "choices": [{"text": answer.text(), "index": 0, "logprobs": null, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": answer.prompt_tokens,
                "completion_tokens": answer.completion_tokens,
                "total_tokens": answer.total_tokens()
            }
        }),
    );
    wire::finish(res, plan.first_token_delay, plan.act == Act::Cut).await
}

// ---------------------------------------------------------------------------------------------
// Embeddings

/// The inputs of an embeddings request as hashable strings, with their token counts.
fn embedding_inputs(input: &Value) -> Vec<(Cow<'_, str>, u32)> {
    match input {
        Value::String(s) => vec![(Cow::Borrowed(s.as_str()), scenario::count_words(s))],
        Value::Array(items) if items.iter().all(Value::is_number) => {
            vec![(
                Cow::Owned(input.to_string()),
                u32::try_from(items.len()).unwrap_or(u32::MAX),
            )]
        }
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => (Cow::Borrowed(s.as_str()), scenario::count_words(s)),
                Value::Array(tokens) => (
                    Cow::Owned(item.to_string()),
                    u32::try_from(tokens.len()).unwrap_or(u32::MAX),
                ),
                other => (Cow::Owned(other.to_string()), 1),
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Little-endian f32 bytes, base64: what `encoding_format: "base64"` returns.
pub fn f32_base64(v: &[f32]) -> String {
    let mut bytes = Vec::with_capacity(v.len() * 4);
    for x in v {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn embed(state: &MockState, flavor: Flavor<'_>, headers: &HeaderMap, body: &Bytes) -> Response<Body> {
    let req: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return bad_request(&format!("We could not parse the JSON body of your request. ({e})")),
    };
    let model = req["model"].as_str().unwrap_or("");
    let (behaviour, model_key) = match flavor {
        Flavor::OpenAi => (Behaviour::from_model(model), model),
        Flavor::Azure { deployment } => (Behaviour::from_models(&[deployment, model]), deployment),
    };
    let plan = Plan::decide(state, behaviour, model_key, headers).await;
    let inputs = embedding_inputs(&req["input"]);
    let prompt_tokens: u32 = inputs.iter().map(|(_, t)| *t).sum::<u32>().max(1);
    match plan.act {
        Act::Fail(fault) => return fault_response(flavor, fault, model, prompt_tokens),
        Act::Refuse => return refusal_response(flavor),
        _ => {}
    }
    if inputs.is_empty() {
        return error_body(
            StatusCode::BAD_REQUEST,
            &[],
            "'input' : input must be a string or an array of strings",
            "invalid_request_error",
            Some("input"),
            None,
        );
    }
    let dims = scenario::dimensions(req["dimensions"].as_u64());
    let base64 = req["encoding_format"].as_str() == Some("base64");
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, (text, _))| {
            let v = scenario::embedding(text, dims);
            let embedding = if base64 { json!(f32_base64(&v)) } else { json!(v) };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let response_model = match flavor {
        Flavor::Azure { deployment } if model.is_empty() => deployment,
        _ => model,
    };
    let res = wire::json(
        StatusCode::OK,
        &success_headers(state, flavor),
        &json!({
            "object": "list",
            "data": data,
            "model": response_model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
        }),
    );
    wire::finish(res, plan.first_token_delay, plan.act == Act::Cut).await
}

// ---------------------------------------------------------------------------------------------
// Responses API

fn add_response_item(prompt: &mut Prompt, item: &Value) {
    let role = item["role"].as_str();
    match &item["content"] {
        Value::String(s) => prompt.add(role == Some("user"), [s.as_str()]),
        Value::Array(parts) => {
            let texts = parts.iter().filter_map(|p| p["text"].as_str());
            prompt.add(role == Some("user"), texts);
        }
        _ => {
            if let Some(output) = item["output"].as_str() {
                prompt.add_other(output);
            } else if let Some(arguments) = item["arguments"].as_str() {
                prompt.add_other(arguments);
            }
        }
    }
}

fn response_usage(answer: &Answer) -> Value {
    json!({
        "input_tokens": answer.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": answer.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": answer.total_tokens()
    })
}

struct ResponseShape<'a> {
    id: &'a str,
    created: u64,
    model: &'a str,
    req: &'a Value,
}

impl ResponseShape<'_> {
    fn object(&self, status: &str, output: Vec<Value>, usage: Value) -> Value {
        let req = self.req;
        json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "background": false,
            "error": null,
            "incomplete_details": null,
            "instructions": req.get("instructions").cloned().unwrap_or(Value::Null),
            "max_output_tokens": req.get("max_output_tokens").cloned().unwrap_or(Value::Null),
            "model": self.model,
            "output": output,
            "parallel_tool_calls": req.get("parallel_tool_calls").cloned().unwrap_or(json!(true)),
            "previous_response_id": req.get("previous_response_id").cloned().unwrap_or(Value::Null),
            "reasoning": {"effort": null, "summary": null},
            "service_tier": "default",
            "store": req.get("store").cloned().unwrap_or(json!(true)),
            "temperature": req.get("temperature").cloned().unwrap_or(json!(1.0)),
            "text": {"format": {"type": "text"}},
            "tool_choice": req.get("tool_choice").cloned().unwrap_or(json!("auto")),
            "tools": req.get("tools").cloned().unwrap_or(json!([])),
            "top_p": req.get("top_p").cloned().unwrap_or(json!(1.0)),
            "truncation": "disabled",
            "usage": usage,
            "user": null,
            "metadata": req.get("metadata").cloned().unwrap_or(json!({}))
        })
    }
}

async fn responses_api(state: &MockState, headers: &HeaderMap, body: &Bytes) -> Response<Body> {
    let req: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return bad_request(&format!("We could not parse the JSON body of your request. ({e})")),
    };
    let model = req["model"].as_str().unwrap_or("");
    let plan = Plan::decide(state, Behaviour::from_model(model), model, headers).await;
    let mut prompt = Prompt::default();
    if let Some(instructions) = req["instructions"].as_str() {
        prompt.add_other(instructions);
    }
    match &req["input"] {
        Value::String(s) => prompt.add(true, [s.as_str()]),
        Value::Array(items) => items.iter().for_each(|item| add_response_item(&mut prompt, item)),
        _ => {}
    }
    match plan.act {
        Act::Fail(fault) => return fault_response(Flavor::OpenAi, fault, model, prompt.tokens()),
        Act::Refuse => return refusal_response(Flavor::OpenAi),
        _ => {}
    }
    let answer = Answer::new(plan.act, &prompt, body);
    let n = state.next_id();
    let id = format!("resp_mock{n:016x}");
    let item_id = match answer.reply {
        Reply::Tool => format!("fc_mock{n:016x}"),
        _ => format!("msg_mock{n:016x}"),
    };
    let call_id = format!("call_mock{n:016x}");
    let shape = ResponseShape {
        id: &id,
        created: wire::unix_now(),
        model,
        req: &req,
    };
    let done_item = match answer.reply {
        Reply::Tool => json!({
            "type": "function_call", "id": item_id, "call_id": call_id, "name": TOOL_NAME,
            "arguments": TOOL_ARGUMENTS, "status": "completed"
        }),
        _ => json!({
            "type": "message", "id": item_id, "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": answer.text(), "annotations": [], "logprobs": []}]
        }),
    };
    let headers = success_headers(state, Flavor::OpenAi);
    if !req["stream"].as_bool().unwrap_or(false) {
        let res = wire::json(
            StatusCode::OK,
            &headers,
            &shape.object("completed", vec![done_item], response_usage(&answer)),
        );
        return wire::finish(res, plan.first_token_delay, plan.act == Act::Cut).await;
    }

    let mut seq = 0u64;
    let mut event = |kind: &str, mut data: Value| -> Bytes {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(seq);
        seq += 1;
        wire::sse_event(kind, &data)
    };
    let mut frames = vec![
        Frame::meta(event(
            "response.created",
            json!({"response": shape.object("in_progress", vec![], Value::Null)}),
        )),
        Frame::meta(event(
            "response.in_progress",
            json!({"response": shape.object("in_progress", vec![], Value::Null)}),
        )),
    ];
    match answer.reply {
        Reply::Tool => {
            frames.push(Frame::meta(event(
                "response.output_item.added",
                json!({"output_index": 0, "item": {
                    "type": "function_call", "id": item_id, "call_id": call_id, "name": TOOL_NAME,
                    "arguments": "", "status": "in_progress"
                }}),
            )));
            for piece in TOOL_ARGUMENT_DELTAS {
                frames.push(Frame::token(event(
                    "response.function_call_arguments.delta",
                    json!({"item_id": item_id, "output_index": 0, "delta": piece}),
                )));
            }
            frames.push(Frame::meta(event(
                "response.function_call_arguments.done",
                json!({"item_id": item_id, "output_index": 0, "arguments": TOOL_ARGUMENTS}),
            )));
        }
        _ => {
            frames.push(Frame::meta(event(
                "response.output_item.added",
                json!({"output_index": 0, "item": {
                    "type": "message", "id": item_id, "status": "in_progress", "role": "assistant", "content": []
                }}),
            )));
            frames.push(Frame::meta(event(
                "response.content_part.added",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0,
                       "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}),
            )));
            for piece in scenario::pieces(answer.text()) {
                frames.push(Frame::token(event(
                    "response.output_text.delta",
                    json!({"item_id": item_id, "output_index": 0, "content_index": 0, "delta": piece, "logprobs": []}),
                )));
            }
            frames.push(Frame::meta(event(
                "response.output_text.done",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0, "text": answer.text(), "logprobs": []}),
            )));
            frames.push(Frame::meta(event(
                "response.content_part.done",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0,
                       "part": {"type": "output_text", "text": answer.text(), "annotations": [], "logprobs": []}}),
            )));
        }
    }
    frames.push(Frame::meta(event(
        "response.output_item.done",
        json!({"output_index": 0, "item": done_item.clone()}),
    )));
    frames.push(Frame::meta(event(
        "response.completed",
        json!({"response": shape.object("completed", vec![done_item], response_usage(&answer))}),
    )));
    let body = wire::stream_body(state, frames, pacing(&plan));
    wire::stream_response(wire::EVENT_STREAM, &headers, body)
}
