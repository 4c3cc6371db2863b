//! Anthropic's Messages API: `POST /v1/messages` (and its stream of server-sent events), which
//! Vertex AI serves as `:rawPredict` / `:streamRawPredict` and Bedrock as `InvokeModel` for
//! Claude models.
//!
//! Shapes follow Anthropic's API reference (Messages, Streaming Messages, Errors): the message
//! object, `message_start` / `content_block_*` / `message_delta` / `message_stop` events with
//! `text_delta` and `input_json_delta`, usage in `message_start` and `message_delta`, the
//! `{"type":"error","error":{...}}` error body. Content refusals use `stop_reason: "refusal"`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, Uri};
use bytes::Bytes;
use serde_json::{json, Value};

use crate::scenario::{self, Act, Answer, Behaviour, Fault, Plan, Prompt, Reply, TOOL_ARGUMENT_DELTAS, TOOL_NAME};
use crate::state::{MockState, Provider};
use crate::strict;
use crate::wire::{self, hv, name, Frame, Pacing};

/// Where a Messages request came from; decides auth and where the model name lives.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `POST /v1/messages`: model in the body, `x-api-key` and `anthropic-version` headers.
    Direct,
    /// Vertex `:rawPredict` / `:streamRawPredict`: model in the path, `anthropic_version` in the body.
    Vertex,
    /// Bedrock `InvokeModel` for Claude: model in the path, `anthropic_version` in the body.
    Bedrock,
}

pub async fn messages(State(state): State<MockState>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response<Body> {
    state.record(Provider::Anthropic, uri.path(), uri.query(), &body);
    // Newer SDKs send the API key as `Authorization: Bearer`; the API accepts both.
    match wire::header_str(&headers, "x-api-key").or_else(|| wire::bearer(&headers)) {
        None => {
            return error(
                StatusCode::UNAUTHORIZED,
                &[],
                "authentication_error",
                "x-api-key header is required",
                &state,
            )
        }
        Some(key) if wire::is_rejected_key(key) => {
            return error(
                StatusCode::UNAUTHORIZED,
                &[],
                "authentication_error",
                "invalid x-api-key",
                &state,
            )
        }
        Some(_) => {}
    }
    if wire::header_str(&headers, "anthropic-version").is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            &[],
            "invalid_request_error",
            "anthropic-version: header is required",
            &state,
        );
    }
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &[],
                "invalid_request_error",
                &format!("invalid JSON: {e}"),
                &state,
            )
        }
    };
    if let Err(v) = strict::check(&req, &strict::ANTHROPIC_MESSAGES) {
        return refuse(&v, &state);
    }
    let model = req["model"].as_str().unwrap_or("").to_owned();
    let stream = req["stream"].as_bool().unwrap_or(false);
    let mode = if stream { Mode::Sse } else { Mode::Json };
    respond(&state, Flavor::Direct, &model, &headers, &req, &body, mode).await
}

/// How the answer goes back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One message object.
    Json,
    /// Server-sent events.
    Sse,
    /// Bedrock `InvokeModelWithResponseStream`: each event base64'd into a `chunk` frame.
    BedrockEventStream,
}

/// Answers a parsed Messages request. Shared by the direct API, Vertex and Bedrock.
pub async fn respond(
    state: &MockState,
    flavor: Flavor,
    model: &str,
    headers: &HeaderMap,
    req: &Value,
    body: &Bytes,
    mode: Mode,
) -> Response<Body> {
    if flavor != Flavor::Direct {
        if let Err(v) = strict::check(req, &strict::ANTHROPIC_HOSTED) {
            return match flavor {
                Flavor::Bedrock => crate::bedrock::refuse_claude(&v, state),
                _ => refuse(&v, state),
            };
        }
    }
    let plan = Plan::decide(state, Behaviour::from_model(model), model, headers).await;
    let prompt = prompt(req);
    if let Act::Fail(fault) = plan.act {
        return match flavor {
            Flavor::Bedrock => crate::bedrock::fault_response(fault, state),
            _ => fault_response(fault, prompt.tokens(), state),
        };
    }
    let answer = Answer::new(plan.act, &prompt, body);
    let id = format!("msg_mock{:016x}", state.next_id());
    let mut res_headers = vec![
        (name("request-id"), hv(format!("req_mock{:016x}", state.next_id()))),
        (
            name("anthropic-ratelimit-requests-limit"),
            HeaderValue::from_static("4000"),
        ),
        (
            name("anthropic-ratelimit-requests-remaining"),
            HeaderValue::from_static("3999"),
        ),
        (
            name("anthropic-ratelimit-input-tokens-limit"),
            HeaderValue::from_static("2000000"),
        ),
        (
            name("anthropic-ratelimit-input-tokens-remaining"),
            HeaderValue::from_static("1999000"),
        ),
        (
            name("anthropic-ratelimit-output-tokens-limit"),
            HeaderValue::from_static("400000"),
        ),
        (
            name("anthropic-ratelimit-output-tokens-remaining"),
            HeaderValue::from_static("399000"),
        ),
    ];
    let pacing = Pacing {
        first_delay: plan.first_token_delay,
        token_interval: plan.token_interval,
        cut: plan.act == Act::Cut,
    };
    match mode {
        Mode::Json => {
            if flavor == Flavor::Bedrock {
                res_headers = crate::bedrock::invoke_headers(state, &answer);
            }
            let res = wire::json(StatusCode::OK, &res_headers, &message(&id, model, &answer));
            wire::finish(res, plan.first_token_delay, plan.act == Act::Cut).await
        }
        Mode::Sse => {
            let frames = stream_events(&id, model, &answer)
                .into_iter()
                .map(|(event, data, token)| Frame {
                    bytes: wire::sse_event(event, &data),
                    token,
                })
                .collect();
            let body = wire::stream_body(state, frames, pacing);
            wire::stream_response(wire::EVENT_STREAM, &res_headers, body)
        }
        Mode::BedrockEventStream => {
            crate::bedrock::invoke_stream_response(state, stream_events(&id, model, &answer), &answer, pacing)
        }
    }
}

/// Counts the words of `system` and every message, remembering the last user message.
pub fn prompt(req: &Value) -> Prompt {
    let mut prompt = Prompt::default();
    match &req["system"] {
        Value::String(s) => prompt.add_other(s),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b["text"].as_str())
            .for_each(|t| prompt.add_other(t)),
        _ => {}
    }
    if let Some(messages) = req["messages"].as_array() {
        for m in messages {
            let is_user = m["role"].as_str() == Some("user");
            let mut texts: Vec<&str> = Vec::new();
            match &m["content"] {
                Value::String(s) => texts.push(s),
                Value::Array(blocks) => {
                    for b in blocks {
                        if let Some(t) = b["text"].as_str() {
                            texts.push(t);
                        }
                        match &b["content"] {
                            Value::String(s) => prompt.add_other(s),
                            Value::Array(inner) => inner
                                .iter()
                                .filter_map(|i| i["text"].as_str())
                                .for_each(|t| prompt.add_other(t)),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
            prompt.add(is_user, texts);
        }
    }
    prompt
}

fn usage(answer: &Answer, output_tokens: u32) -> Value {
    json!({
        "input_tokens": answer.prompt_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
        "service_tier": "standard"
    })
}

fn tool_use_id(id: &str) -> String {
    format!("toolu_mock{}", &id[8..])
}

fn stop_reason(answer: &Answer) -> &'static str {
    match answer.reply {
        Reply::Text(_) => "end_turn",
        Reply::Tool => "tool_use",
        Reply::Refusal => "refusal",
    }
}

/// The non-streaming message object.
pub fn message(id: &str, model: &str, answer: &Answer) -> Value {
    let content = match &answer.reply {
        Reply::Text(t) => json!([{"type": "text", "text": t}]),
        Reply::Tool => {
            json!([{"type": "tool_use", "id": tool_use_id(id), "name": TOOL_NAME, "input": {"city": "Paris"}}])
        }
        Reply::Refusal => json!([]),
    };
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(answer),
        "stop_sequence": null,
        "usage": usage(answer, answer.completion_tokens)
    })
}

/// The streamed events: (event name, data, is a token frame).
pub fn stream_events(id: &str, model: &str, answer: &Answer) -> Vec<(&'static str, Value, bool)> {
    let mut events = vec![(
        "message_start",
        json!({"type": "message_start", "message": {
            "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": null, "stop_sequence": null, "usage": usage(answer, 1)
        }}),
        false,
    )];
    match &answer.reply {
        Reply::Text(text) => {
            events.push((
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
                false,
            ));
            events.push(("ping", json!({"type": "ping"}), false));
            for piece in scenario::pieces(text) {
                events.push((
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}),
                    true,
                ));
            }
            events.push((
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
                false,
            ));
        }
        Reply::Tool => {
            events.push((
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {
                    "type": "tool_use", "id": tool_use_id(id), "name": TOOL_NAME, "input": {}
                }}),
                false,
            ));
            events.push(("ping", json!({"type": "ping"}), false));
            for piece in TOOL_ARGUMENT_DELTAS {
                events.push((
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": piece}}),
                    true,
                ));
            }
            events.push((
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
                false,
            ));
        }
        Reply::Refusal => {}
    }
    events.push((
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop_reason(answer), "stop_sequence": null},
               "usage": {"output_tokens": answer.completion_tokens}}),
        false,
    ));
    events.push(("message_stop", json!({"type": "message_stop"}), false));
    events
}

/// Anthropic's 400 for a body its schema refuses: `messages.0.role: Input should be 'user' or
/// 'assistant'`.
pub fn refuse(v: &strict::Violation, state: &MockState) -> Response<Body> {
    let path = v.path().dotted();
    let message = if path.is_empty() {
        strict::pydantic_words(v)
    } else {
        format!("{path}: {}", strict::pydantic_words(v))
    };
    error(StatusCode::BAD_REQUEST, &[], "invalid_request_error", &message, state)
}

/// `{"type":"error","error":{"type":..,"message":..},"request_id":..}`
pub fn error(
    status: StatusCode,
    headers: &[(HeaderName, HeaderValue)],
    kind: &str,
    message: &str,
    state: &MockState,
) -> Response<Body> {
    let request_id = format!("req_mock{:016x}", state.next_id());
    let mut all = headers.to_vec();
    all.push((name("request-id"), hv(&request_id)));
    wire::json(
        status,
        &all,
        &json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}),
    )
}

pub fn fault_response(fault: Fault, prompt_tokens: u32, state: &MockState) -> Response<Body> {
    match fault {
        Fault::RateLimited => error(
            StatusCode::TOO_MANY_REQUESTS,
            &[
                (name("retry-after"), HeaderValue::from_static("1")),
                (name("anthropic-ratelimit-requests-limit"), HeaderValue::from_static("50")),
                (name("anthropic-ratelimit-requests-remaining"), HeaderValue::from_static("0")),
            ],
            "rate_limit_error",
            "This request would exceed the rate limit for your organization of 50 requests per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits. You can see the response headers for current usage. Please reduce the prompt length or the maximum tokens requested, or try again later.",
            state,
        ),
        Fault::Internal => error(StatusCode::INTERNAL_SERVER_ERROR, &[], "api_error", "Internal server error", state),
        Fault::Unavailable => error(StatusCode::SERVICE_UNAVAILABLE, &[], "api_error", "Service unavailable", state),
        Fault::ContextLength => error(
            StatusCode::BAD_REQUEST,
            &[],
            "invalid_request_error",
            &format!("prompt is too long: {} tokens > 200000 maximum", 200_000 + prompt_tokens),
            state,
        ),
    }
}
