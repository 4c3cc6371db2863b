//! Cohere's v2 API: `POST /v2/chat` (JSON, or server-sent events with `stream: true`) and
//! `POST /v2/embed`.
//!
//! Shapes follow Cohere's API reference (Chat, Chat with Streaming, Embed, Errors): the
//! `message` / `finish_reason` / `usage.{billed_units,tokens}` response, the `message-start`,
//! `content-start`/`-delta`/`-end`, `tool-plan-delta`, `tool-call-start`/`-delta`/`-end` and
//! `message-end` events, embeddings by type, and the `{"id","message"}` error body.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, Uri};
use bytes::Bytes;
use serde_json::{json, Value};

use crate::scenario::{
    self, Act, Answer, Behaviour, Fault, Plan, Prompt, Reply, REFUSAL_TEXT, TOOL_ARGUMENTS, TOOL_ARGUMENT_DELTAS,
    TOOL_NAME,
};
use crate::state::{MockState, Provider};
use crate::strict::{self, Violation};
use crate::wire::{self, hv, name, Frame, Pacing};

const TOOL_PLAN: &str = "I will look up the weather in Paris.";

fn id(state: &MockState) -> String {
    let n = state.next_id();
    format!("{:08x}-0000-4000-8000-{:012x}", n >> 16, n)
}

fn error(status: StatusCode, message: &str, extra: &[(HeaderName, HeaderValue)], state: &MockState) -> Response<Body> {
    wire::json(status, extra, &json!({"id": id(state), "message": message}))
}

/// Cohere's 400 `invalid request: ...` for a chat body its schema refuses.
fn refuse(v: &Violation, state: &MockState) -> Response<Body> {
    let path = v.path().dotted();
    let what = match v {
        Violation::NotObject => "the request body must be a JSON object".to_owned(),
        Violation::Missing(_) if path == "messages" => "messages must not be empty".to_owned(),
        Violation::Missing(_) => format!("{path} is required"),
        Violation::Unknown(_) => format!("unknown field: parameter {path} is not a valid field"),
        Violation::Type { expected, .. } => format!("{path} must be {}", expected.word()),
        Violation::Enum { path, got, allowed } if path.leaf() == "role" => {
            format!(
                "invalid role '{got}' in {}: must be one of {}",
                path.dotted(),
                allowed.join(", ")
            )
        }
        Violation::Enum { got, allowed, .. } => format!(
            "invalid value '{got}' for {path}: must be one of {}",
            allowed.join(", ")
        ),
        Violation::Below { min, .. } => format!("{path} must be at least {}", strict::num(*min)),
        Violation::Above { max, .. } => format!("{path} must be at most {}", strict::num(*max)),
        Violation::Empty(_) => format!("{path} must not be empty"),
    };
    error(StatusCode::BAD_REQUEST, &format!("invalid request: {what}"), &[], state)
}

fn authorize(headers: &HeaderMap, state: &MockState) -> Result<(), Response<Body>> {
    match wire::bearer(headers) {
        None => Err(error(StatusCode::UNAUTHORIZED, "no api key supplied", &[], state)),
        Some(k) if wire::is_rejected_key(k) => Err(error(StatusCode::UNAUTHORIZED, "invalid api token", &[], state)),
        Some(_) => Ok(()),
    }
}

fn fault_response(fault: Fault, prompt_tokens: u32, state: &MockState) -> Response<Body> {
    match fault {
        Fault::RateLimited => error(
            StatusCode::TOO_MANY_REQUESTS,
            "You are using a Trial key, which is limited to 10 API calls / minute. You can continue to use the Trial key for free or upgrade to a Production key with higher rate limits at 'https://dashboard.cohere.com/api-keys'. Contact us on 'https://discord.gg/XW44jPfYJu' or email us at support@cohere.com with any questions",
            &[(name("retry-after"), HeaderValue::from_static("1"))],
            state,
        ),
        Fault::Internal => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal server error, this has been reported to our developers",
            &[],
            state,
        ),
        Fault::Unavailable => error(StatusCode::SERVICE_UNAVAILABLE, "service unavailable", &[], state),
        Fault::ContextLength => error(
            StatusCode::BAD_REQUEST,
            &format!(
                "too many tokens: total number of tokens in the prompt cannot exceed 256000 - received {}. Try using a shorter prompt, or enabling prompt truncating. See https://docs.cohere.com/reference/chat for more info.",
                256_000 + prompt_tokens
            ),
            &[],
            state,
        ),
    }
}

fn usage(answer: &Answer) -> Value {
    json!({
        "billed_units": {"input_tokens": answer.prompt_tokens, "output_tokens": answer.completion_tokens},
        "tokens": {"input_tokens": answer.prompt_tokens, "output_tokens": answer.completion_tokens}
    })
}

fn chat_prompt(req: &Value) -> Prompt {
    let mut prompt = Prompt::default();
    for m in req["messages"].as_array().into_iter().flatten() {
        let role = m["role"].as_str();
        let mut texts: Vec<&str> = Vec::new();
        match &m["content"] {
            Value::String(s) => texts.push(s),
            Value::Array(parts) => texts.extend(parts.iter().filter_map(|p| p["text"].as_str())),
            _ => {}
        }
        if role == Some("user") {
            prompt.add(true, texts);
        } else {
            texts.iter().for_each(|t| prompt.add_other(t));
        }
    }
    prompt
}

pub async fn chat(State(state): State<MockState>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response<Body> {
    state.record(Provider::Cohere, uri.path(), uri.query(), &body);
    if let Err(res) = authorize(&headers, &state) {
        return res;
    }
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("invalid request: {e}"), &[], &state),
    };
    if let Err(v) = strict::check(&req, &strict::COHERE_CHAT) {
        return refuse(&v, &state);
    }
    let model = req["model"].as_str().unwrap_or("");
    let plan = Plan::decide(&state, Behaviour::from_model(model), model, &headers).await;
    let prompt = chat_prompt(&req);
    if let Act::Fail(fault) = plan.act {
        return fault_response(fault, prompt.tokens(), &state);
    }
    // Cohere's safety modes make the model decline in words: a refusal is an ordinary reply.
    let mut answer = Answer::new(plan.act, &prompt, &body);
    if answer.reply == Reply::Refusal {
        answer.reply = Reply::Text(REFUSAL_TEXT.to_owned());
    }
    let id = id(&state);
    let finish_reason = if answer.reply == Reply::Tool {
        "TOOL_CALL"
    } else {
        "COMPLETE"
    };
    let tool_call_id = format!("{TOOL_NAME}_mock{:012x}", state.next_id());

    if req["stream"].as_bool().unwrap_or(false) {
        let event = |data: Value| -> Bytes {
            let kind = data["type"].as_str().unwrap_or("").to_owned();
            wire::sse_event(&kind, &data)
        };
        let mut frames = vec![Frame::meta(event(json!({
            "id": id, "type": "message-start",
            "delta": {"message": {"role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}}
        })))];
        match &answer.reply {
            Reply::Tool => {
                for piece in scenario::pieces(TOOL_PLAN) {
                    frames.push(Frame::meta(event(json!({
                        "type": "tool-plan-delta", "delta": {"message": {"tool_plan": piece}}
                    }))));
                }
                frames.push(Frame::meta(event(json!({
                    "type": "tool-call-start", "index": 0,
                    "delta": {"message": {"tool_calls": {
                        "id": tool_call_id, "type": "function",
                        "function": {"name": TOOL_NAME, "arguments": ""}
                    }}}
                }))));
                for piece in TOOL_ARGUMENT_DELTAS {
                    frames.push(Frame::token(event(json!({
                        "type": "tool-call-delta", "index": 0,
                        "delta": {"message": {"tool_calls": {"function": {"arguments": piece}}}}
                    }))));
                }
                frames.push(Frame::meta(event(json!({"type": "tool-call-end", "index": 0}))));
            }
            _ => {
                frames.push(Frame::meta(event(json!({
                    "type": "content-start", "index": 0,
                    "delta": {"message": {"content": {"type": "text", "text": ""}}}
                }))));
                for piece in scenario::pieces(answer.text()) {
                    frames.push(Frame::token(event(json!({
                        "type": "content-delta", "index": 0,
                        "delta": {"message": {"content": {"text": piece}}}
                    }))));
                }
                frames.push(Frame::meta(event(json!({"type": "content-end", "index": 0}))));
            }
        }
        frames.push(Frame::meta(event(json!({
            "type": "message-end",
            "delta": {"finish_reason": finish_reason, "usage": usage(&answer)}
        }))));
        let pacing = Pacing {
            first_delay: plan.first_token_delay,
            token_interval: plan.token_interval,
            cut: plan.act == Act::Cut,
        };
        let body = wire::stream_body(&state, frames, pacing);
        return wire::stream_response(wire::EVENT_STREAM, &[(name("x-request-id"), hv(&id))], body);
    }

    let message = match &answer.reply {
        Reply::Tool => json!({
            "role": "assistant",
            "tool_plan": TOOL_PLAN,
            "tool_calls": [{
                "id": tool_call_id, "type": "function",
                "function": {"name": TOOL_NAME, "arguments": TOOL_ARGUMENTS}
            }]
        }),
        _ => json!({"role": "assistant", "content": [{"type": "text", "text": answer.text()}]}),
    };
    let res = wire::json(
        StatusCode::OK,
        &[(name("x-request-id"), hv(&id))],
        &json!({"id": id, "message": message, "finish_reason": finish_reason, "usage": usage(&answer)}),
    );
    wire::finish(res, plan.first_token_delay, plan.act == Act::Cut).await
}

/// Renders vectors as one of Cohere's embedding types.
pub fn embeddings_of_type(kind: &str, vectors: &[Vec<f32>]) -> Value {
    let scaled = |f: &dyn Fn(f32) -> i64| -> Value {
        json!(vectors
            .iter()
            .map(|v| v.iter().map(|x| f(*x)).collect::<Vec<_>>())
            .collect::<Vec<_>>())
    };
    let packed = |signed: bool| -> Value {
        json!(vectors
            .iter()
            .map(|v| v
                .chunks(8)
                .map(|bits| {
                    let byte = bits
                        .iter()
                        .enumerate()
                        .fold(0u8, |acc, (i, x)| if *x > 0.0 { acc | (0x80 >> i) } else { acc });
                    if signed {
                        i64::from(byte) - 128
                    } else {
                        i64::from(byte)
                    }
                })
                .collect::<Vec<_>>())
            .collect::<Vec<_>>())
    };
    match kind {
        "int8" => scaled(&|x| (x * 127.0).round() as i64),
        "uint8" => scaled(&|x| ((x + 1.0) * 127.5).round() as i64),
        "binary" => packed(true),
        "ubinary" => packed(false),
        "base64" => json!(vectors.iter().map(|v| crate::openai::f32_base64(v)).collect::<Vec<_>>()),
        _ => json!(vectors),
    }
}

pub async fn embed(State(state): State<MockState>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response<Body> {
    state.record(Provider::Cohere, uri.path(), uri.query(), &body);
    if let Err(res) = authorize(&headers, &state) {
        return res;
    }
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("invalid request: {e}"), &[], &state),
    };
    let model = req["model"].as_str().unwrap_or("");
    let plan = Plan::decide(&state, Behaviour::from_model(model), model, &headers).await;
    let mut texts: Vec<&str> = req["texts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    for input in req["inputs"].as_array().into_iter().flatten() {
        for item in input["content"].as_array().into_iter().flatten() {
            if let Some(t) = item["text"].as_str() {
                texts.push(t);
            }
        }
    }
    let tokens: u32 = texts.iter().map(|t| scenario::count_words(t)).sum::<u32>().max(1);
    if let Act::Fail(fault) = plan.act {
        return fault_response(fault, tokens, &state);
    }
    if texts.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid request: texts or inputs must be provided",
            &[],
            &state,
        );
    }
    let dims = scenario::dimensions(req["output_dimension"].as_u64());
    let vectors: Vec<Vec<f32>> = texts.iter().map(|t| scenario::embedding(t, dims)).collect();
    let mut by_type = serde_json::Map::new();
    match req["embedding_types"].as_array() {
        Some(types) if !types.is_empty() => {
            for t in types.iter().filter_map(Value::as_str) {
                by_type.insert(t.to_owned(), embeddings_of_type(t, &vectors));
            }
        }
        _ => {
            by_type.insert("float".to_owned(), embeddings_of_type("float", &vectors));
        }
    }
    let id = id(&state);
    let res = wire::json(
        StatusCode::OK,
        &[(name("x-request-id"), hv(&id))],
        &json!({
            "id": id,
            "embeddings": by_type,
            "texts": texts,
            "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": tokens}},
            "response_type": "embeddings_by_type"
        }),
    );
    wire::finish(res, plan.first_token_delay, plan.act == Act::Cut).await
}
