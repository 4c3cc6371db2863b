//! Amazon Bedrock Runtime: `Converse`, `ConverseStream` (binary `application/vnd.amazon.eventstream`
//! frames with prelude and message CRCs, encoded with aws-smithy-eventstream), `InvokeModel` for
//! Titan and Cohere embeddings and for Claude's Messages body, and
//! `InvokeModelWithResponseStream` for Claude, `InvokeModel` for Amazon's image models (see
//! `images`). Every request must carry a valid SigV4 signature
//! (service `bedrock`) made with the test credentials in [`crate::sigv4`].
//!
//! Shapes follow the Bedrock API reference (Converse, ConverseStream and its
//! `ConverseStreamOutput` members, InvokeModel, the Titan Text Embeddings and Cohere Embed
//! model parameters, the common errors carried in `x-amzn-ErrorType` with a `{"message"}` body).

use std::time::SystemTime;

use aws_smithy_types::event_stream::{Header, HeaderValue as EventHeaderValue, Message};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Uri};
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::anthropic;
use crate::scenario::{self, Act, Answer, Behaviour, Fault, Plan, Prompt, Reply, TOOL_ARGUMENT_DELTAS, TOOL_NAME};
use crate::sigv4::{self, SigError};
use crate::state::{MockState, Provider};
use crate::strict::{self, Violation};
use crate::wire::{self, hv, name, Frame, Pacing};

const EVENT_STREAM: HeaderValue = HeaderValue::from_static("application/vnd.amazon.eventstream");
const BEDROCK_FAULT_NS: &str = "http://internal.amazon.com/coral/com.amazon.bedrock/";
const CORAL_NS: &str = "http://internal.amazon.com/coral/com.amazon.coral.service/";

/// Bedrock's error: the type in `x-amzn-ErrorType`, the text in `{"message": ...}`.
fn error(
    status: StatusCode,
    kind: &str,
    namespace: &str,
    message: &str,
    extra: &[(HeaderName, HeaderValue)],
    state: &MockState,
) -> Response<Body> {
    let mut headers = vec![
        (name("x-amzn-errortype"), hv(format!("{kind}:{namespace}"))),
        (name("x-amzn-requestid"), hv(request_id(state))),
    ];
    headers.extend_from_slice(extra);
    wire::json(status, &headers, &json!({"message": message}))
}

fn request_id(state: &MockState) -> String {
    let n = state.next_id();
    format!("{:08x}-0000-4000-8000-{:012x}", n >> 16, n)
}

pub fn fault_response(fault: Fault, state: &MockState) -> Response<Body> {
    match fault {
        Fault::RateLimited => error(
            StatusCode::TOO_MANY_REQUESTS,
            "ThrottlingException",
            BEDROCK_FAULT_NS,
            "Too many requests, please wait before trying again.",
            &[(name("retry-after"), HeaderValue::from_static("1"))],
            state,
        ),
        Fault::Internal => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerException",
            BEDROCK_FAULT_NS,
            "The system encountered an unexpected error during processing. Try your request again.",
            &[],
            state,
        ),
        Fault::Unavailable => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailableException",
            BEDROCK_FAULT_NS,
            "Bedrock is unable to process your request.",
            &[],
            state,
        ),
        Fault::ContextLength => error(
            StatusCode::BAD_REQUEST,
            "ValidationException",
            BEDROCK_FAULT_NS,
            "Input is too long for requested model.",
            &[],
            state,
        ),
    }
}

fn validation(message: &str, state: &MockState) -> Response<Body> {
    error(
        StatusCode::BAD_REQUEST,
        "ValidationException",
        BEDROCK_FAULT_NS,
        message,
        &[],
        state,
    )
}

/// Bedrock's `ValidationException` for a Converse body its schema refuses, in the words of its
/// request validation (`1 validation error detected: Value 'system' at 'messages.1.member.role'
/// failed to satisfy constraint: ...`).
fn refuse(v: &Violation, state: &MockState) -> Response<Body> {
    let path = v.path().aws();
    let leaf = v.path().leaf().to_owned();
    let message = match v {
        Violation::NotObject => "Malformed input request, please reformat your input and try again.".to_owned(),
        Violation::Missing(_) => format!(
            "1 validation error detected: Value null at '{path}' failed to satisfy constraint: Member must not be null"
        ),
        Violation::Unknown(_) => format!(
            "Malformed input request: extraneous key [{leaf}] is not permitted, please reformat your input and try again."
        ),
        Violation::Type { expected, got, .. } => format!(
            "Malformed input request: #/{}: expected type: {}, found: {}, please reformat your input and try again.",
            path.replace('.', "/"),
            json_schema_type(*expected),
            json_schema_type_of(got)
        ),
        Violation::Enum { got, allowed, .. } => format!(
            "1 validation error detected: Value '{got}' at '{path}' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
            allowed.join(", ")
        ),
        Violation::Below { min, got, .. } => format!(
            "1 validation error detected: Value '{}' at '{path}' failed to satisfy constraint: Member must have value greater than or equal to {}",
            strict::num(*got),
            strict::num(*min)
        ),
        Violation::Above { max, got, .. } => format!(
            "1 validation error detected: Value '{}' at '{path}' failed to satisfy constraint: Member must have value less than or equal to {}",
            strict::num(*got),
            strict::num(*max)
        ),
        Violation::Empty(_) => format!(
            "1 validation error detected: Value '[]' at '{path}' failed to satisfy constraint: Member must have length greater than or equal to 1"
        ),
    };
    validation(&message, state)
}

/// Claude's Messages body on `InvokeModel` refused as Bedrock words it: its JSON-schema check
/// (`#: required key [max_tokens] not found`), else Anthropic's own message.
pub fn refuse_claude(v: &Violation, state: &MockState) -> Response<Body> {
    let leaf = v.path().leaf().to_owned();
    let message = match v {
        Violation::Missing(p) if p.0.len() == 1 => format!("Malformed input request: #: required key [{leaf}] not found, please reformat your input and try again."),
        Violation::Unknown(p) if p.0.len() == 1 => format!("Malformed input request: #: extraneous key [{leaf}] is not permitted, please reformat your input and try again."),
        _ => format!("{}: {}", v.path().dotted(), strict::pydantic_words(v)),
    };
    validation(&message, state)
}

fn json_schema_type(t: strict::Ty) -> &'static str {
    match t {
        strict::Ty::Str | strict::Ty::StrOrArr => "String",
        strict::Ty::Int => "Integer",
        strict::Ty::Num => "Number",
        strict::Ty::Bool => "Boolean",
        strict::Ty::Obj => "JSONObject",
        strict::Ty::Arr => "JSONArray",
        strict::Ty::Any => "Any",
    }
}

fn json_schema_type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "Null",
        Value::Bool(_) => "Boolean",
        Value::Number(n) if n.is_f64() => "BigDecimal",
        Value::Number(_) => "Integer",
        Value::String(_) => "String",
        Value::Array(_) => "JSONArray",
        Value::Object(_) => "JSONObject",
    }
}

/// Checks a Converse body: its schema, then that each content block sets one union member.
fn check_converse(req: &Value, state: &MockState) -> Result<(), Response<Body>> {
    strict::check(req, &strict::BEDROCK_CONVERSE).map_err(|v| refuse(&v, state))?;
    match strict::bedrock_bad_block(req) {
        None => Ok(()),
        Some((path, _)) => Err(validation(
            &format!(
                "1 validation error detected: Value at '{}' failed to satisfy constraint: Member must set exactly one of [{}]",
                path.aws(),
                strict::BEDROCK_BLOCK_MEMBERS.join(", ")
            ),
            state,
        )),
    }
}

/// Checks the SigV4 signature; a refusal is Bedrock's 403 in the matching error type.
fn authorize(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    state: &MockState,
) -> Result<(), Response<Body>> {
    let refusal = |kind: &str, message: &str| Err(error(StatusCode::FORBIDDEN, kind, CORAL_NS, message, &[], state));
    match sigv4::verify(method, uri, headers, body, "bedrock", SystemTime::now()) {
        Ok(()) => Ok(()),
        Err(SigError::Missing) => refusal("MissingAuthenticationTokenException", "Missing Authentication Token"),
        Err(SigError::UnknownKey) => refusal(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ),
        Err(SigError::Malformed(m)) => refusal("IncompleteSignatureException", &m),
        Err(SigError::WrongService(s)) => refusal(
            "InvalidSignatureException",
            &format!("Credential should be scoped to correct service: 'bedrock'. Got '{s}'."),
        ),
        Err(SigError::Expired(m)) => refusal("InvalidSignatureException", &m),
        Err(SigError::Mismatch) => refusal(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
        ),
    }
}

/// Word counts over Converse `system` and `messages` content blocks.
fn converse_prompt(req: &Value) -> Prompt {
    let mut prompt = Prompt::default();
    if let Some(system) = req["system"].as_array() {
        system
            .iter()
            .filter_map(|b| b["text"].as_str())
            .for_each(|t| prompt.add_other(t));
    }
    if let Some(messages) = req["messages"].as_array() {
        for m in messages {
            let is_user = m["role"].as_str() == Some("user");
            let mut texts: Vec<&str> = Vec::new();
            for block in m["content"].as_array().into_iter().flatten() {
                if let Some(t) = block["text"].as_str() {
                    texts.push(t);
                }
                for inner in block["toolResult"]["content"].as_array().into_iter().flatten() {
                    if let Some(t) = inner["text"].as_str() {
                        prompt.add_other(t);
                    }
                }
            }
            prompt.add(is_user, texts);
        }
    }
    prompt
}

fn converse_usage(answer: &Answer) -> Value {
    json!({
        "inputTokens": answer.prompt_tokens,
        "outputTokens": answer.completion_tokens,
        "totalTokens": answer.total_tokens()
    })
}

fn stop_reason(answer: &Answer) -> &'static str {
    match answer.reply {
        Reply::Text(_) => "end_turn",
        Reply::Tool => "tool_use",
        Reply::Refusal => "content_filtered",
    }
}

fn latency_ms(plan: &Plan) -> u64 {
    u64::try_from(plan.first_token_delay.as_millis()).unwrap_or(u64::MAX) + 1
}

/// Records the request, checks its signature and parses its body, or answers with the error.
fn begin(
    state: &MockState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Value, Response<Body>> {
    state.record(Provider::Bedrock, uri.path(), uri.query(), body);
    authorize(method, uri, headers, body, state)?;
    serde_json::from_slice(body).map_err(|e| validation(&format!("Malformed input request: {e}"), state))
}

pub async fn converse(
    State(state): State<MockState>,
    Path(model_id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let req = match begin(&state, &method, &uri, &headers, &body) {
        Ok(v) => v,
        Err(res) => return res,
    };
    if let Err(res) = check_converse(&req, &state) {
        return res;
    }
    let plan = Plan::decide(&state, Behaviour::from_model(&model_id), &model_id, &headers).await;
    if let Act::Fail(fault) = plan.act {
        return fault_response(fault, &state);
    }
    let answer = Answer::new(plan.act, &converse_prompt(&req), &body);
    let content = match &answer.reply {
        Reply::Text(t) => json!([{"text": t}]),
        Reply::Tool => json!([{"toolUse": {
            "toolUseId": format!("tooluse_mock{:016x}", state.next_id()),
            "name": TOOL_NAME,
            "input": {"city": "Paris"}
        }}]),
        Reply::Refusal => json!([]),
    };
    let res = wire::json(
        StatusCode::OK,
        &[(name("x-amzn-requestid"), hv(request_id(&state)))],
        &json!({
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": stop_reason(&answer),
            "usage": converse_usage(&answer),
            "metrics": {"latencyMs": latency_ms(&plan)}
        }),
    );
    wire::finish(res, plan.first_token_delay, plan.act == Act::Cut).await
}

/// Bedrock pads event payloads with a `p` field so their sizes do not leak the content.
fn padded(mut payload: Value, len: usize) -> Value {
    const PAD: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    if let Value::Object(map) = &mut payload {
        map.insert("p".into(), json!(&PAD[..len.min(PAD.len())]));
    }
    payload
}

/// One `event` message of an AWS event stream, with its prelude and message CRCs.
pub fn event_frame(event_type: &str, payload: &Value) -> Bytes {
    let message = Message::new(Bytes::from(wire::to_vec(payload)))
        .add_header(Header::new(
            ":event-type",
            EventHeaderValue::String(event_type.to_owned().into()),
        ))
        .add_header(Header::new(
            ":content-type",
            EventHeaderValue::String("application/json".into()),
        ))
        .add_header(Header::new(":message-type", EventHeaderValue::String("event".into())));
    let mut buf: Vec<u8> = Vec::with_capacity(128 + payload.to_string().len());
    if let Err(e) = aws_smithy_eventstream::frame::write_message_to(&message, &mut buf) {
        tracing::error!(error = %e, "could not encode an event-stream frame");
    }
    Bytes::from(buf)
}

pub async fn converse_stream(
    State(state): State<MockState>,
    Path(model_id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let req = match begin(&state, &method, &uri, &headers, &body) {
        Ok(v) => v,
        Err(res) => return res,
    };
    if let Err(res) = check_converse(&req, &state) {
        return res;
    }
    let plan = Plan::decide(&state, Behaviour::from_model(&model_id), &model_id, &headers).await;
    if let Act::Fail(fault) = plan.act {
        return fault_response(fault, &state);
    }
    let answer = Answer::new(plan.act, &converse_prompt(&req), &body);
    let mut frames = vec![Frame::meta(event_frame(
        "messageStart",
        &padded(json!({"role": "assistant"}), 2),
    ))];
    match &answer.reply {
        Reply::Text(text) => {
            for piece in scenario::pieces(text) {
                frames.push(Frame::token(event_frame(
                    "contentBlockDelta",
                    &padded(json!({"contentBlockIndex": 0, "delta": {"text": piece}}), 4),
                )));
            }
            frames.push(Frame::meta(event_frame(
                "contentBlockStop",
                &padded(json!({"contentBlockIndex": 0}), 6),
            )));
        }
        Reply::Tool => {
            frames.push(Frame::meta(event_frame(
                "contentBlockStart",
                &padded(
                    json!({"contentBlockIndex": 0, "start": {"toolUse": {
                        "toolUseId": format!("tooluse_mock{:016x}", state.next_id()),
                        "name": TOOL_NAME
                    }}}),
                    3,
                ),
            )));
            for piece in TOOL_ARGUMENT_DELTAS {
                frames.push(Frame::token(event_frame(
                    "contentBlockDelta",
                    &padded(
                        json!({"contentBlockIndex": 0, "delta": {"toolUse": {"input": piece}}}),
                        4,
                    ),
                )));
            }
            frames.push(Frame::meta(event_frame(
                "contentBlockStop",
                &padded(json!({"contentBlockIndex": 0}), 6),
            )));
        }
        Reply::Refusal => {}
    }
    frames.push(Frame::meta(event_frame(
        "messageStop",
        &padded(json!({"stopReason": stop_reason(&answer)}), 8),
    )));
    frames.push(Frame::meta(event_frame(
        "metadata",
        &padded(
            json!({"usage": converse_usage(&answer), "metrics": {"latencyMs": latency_ms(&plan)}}),
            10,
        ),
    )));
    let pacing = Pacing {
        first_delay: plan.first_token_delay,
        token_interval: plan.token_interval,
        cut: plan.act == Act::Cut,
    };
    let body = wire::stream_body(&state, frames, pacing);
    wire::stream_response(
        EVENT_STREAM,
        &[(name("x-amzn-requestid"), hv(request_id(&state)))],
        body,
    )
}

/// Headers `InvokeModel` returns beside the body: request id, latency and token counts.
pub fn invoke_headers(state: &MockState, answer: &Answer) -> Vec<(HeaderName, HeaderValue)> {
    vec![
        (name("x-amzn-requestid"), hv(request_id(state))),
        (name("x-amzn-bedrock-invocation-latency"), HeaderValue::from_static("1")),
        (name("x-amzn-bedrock-input-token-count"), hv(answer.prompt_tokens)),
        (name("x-amzn-bedrock-output-token-count"), hv(answer.completion_tokens)),
    ]
}

pub async fn invoke(
    State(state): State<MockState>,
    Path(model_id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let req = match begin(&state, &method, &uri, &headers, &body) {
        Ok(v) => v,
        Err(res) => return res,
    };
    let stability = model_id.contains("stability.sd3") || model_id.contains("stability.stable-image");
    let sdxl = model_id.contains("stability.stable-diffusion-xl");
    if stability || sdxl || model_id.contains("amazon.nova-canvas") || model_id.contains("amazon.titan-image-generator")
    {
        let plan = Plan::decide(&state, Behaviour::from_model(&model_id), &model_id, &headers).await;
        if let Act::Fail(fault) = plan.act {
            return fault_response(fault, &state);
        }
        let answer = if stability {
            crate::images::stability(&req)
        } else if sdxl {
            crate::images::sdxl(&req)
        } else {
            crate::images::amazon(&model_id, &req)
        };
        let res = match answer {
            Ok(out) => wire::json(
                StatusCode::OK,
                &[(name("x-amzn-requestid"), hv(request_id(&state)))],
                &out,
            ),
            Err(message) => validation(&message, &state),
        };
        return wire::finish(res, plan.first_token_delay, plan.act == Act::Cut).await;
    }
    if model_id.contains("embed") {
        let plan = Plan::decide(&state, Behaviour::from_model(&model_id), &model_id, &headers).await;
        if let Act::Fail(fault) = plan.act {
            return fault_response(fault, &state);
        }
        let res = if model_id.contains("cohere") {
            cohere_embed(&state, &req)
        } else {
            titan_embed(&state, &model_id, &req)
        };
        return wire::finish(res, plan.first_token_delay, plan.act == Act::Cut).await;
    }
    // Every other model speaks Claude's Messages body here.
    anthropic::respond(
        &state,
        anthropic::Flavor::Bedrock,
        &model_id,
        &headers,
        &req,
        &body,
        anthropic::Mode::Json,
    )
    .await
}

pub async fn invoke_with_response_stream(
    State(state): State<MockState>,
    Path(model_id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let req = match begin(&state, &method, &uri, &headers, &body) {
        Ok(v) => v,
        Err(res) => return res,
    };
    anthropic::respond(
        &state,
        anthropic::Flavor::Bedrock,
        &model_id,
        &headers,
        &req,
        &body,
        anthropic::Mode::BedrockEventStream,
    )
    .await
}

/// Claude's stream events wrapped as Bedrock `chunk` events (`{"bytes": base64(event)}`), with
/// Bedrock's invocation metrics added to `message_stop`.
pub fn invoke_stream_response(
    state: &MockState,
    events: Vec<(&'static str, Value, bool)>,
    answer: &Answer,
    pacing: Pacing,
) -> Response<Body> {
    let frames = events
        .into_iter()
        .map(|(event, mut data, token)| {
            if event == "message_stop" {
                data["amazon-bedrock-invocationMetrics"] = json!({
                    "inputTokenCount": answer.prompt_tokens,
                    "outputTokenCount": answer.completion_tokens,
                    "invocationLatency": 1,
                    "firstByteLatency": 1
                });
            }
            let bytes = base64::engine::general_purpose::STANDARD.encode(wire::to_vec(&data));
            Frame {
                bytes: event_frame("chunk", &padded(json!({"bytes": bytes}), 4)),
                token,
            }
        })
        .collect();
    let body = wire::stream_body(state, frames, pacing);
    wire::stream_response(EVENT_STREAM, &[(name("x-amzn-requestid"), hv(request_id(state)))], body)
}

/// Titan Text Embeddings (v1 and v2): `{"inputText"}` → `{"embedding", "inputTextTokenCount"}`.
fn titan_embed(state: &MockState, model_id: &str, req: &Value) -> Response<Body> {
    let Some(text) = req["inputText"].as_str() else {
        return validation(
            "Malformed input request: #: required key [inputText] not found, please reformat your input and try again.",
            state,
        );
    };
    let dims = scenario::dimensions(req["dimensions"].as_u64());
    let vector = scenario::embedding(text, dims);
    let tokens = scenario::count_words(text).max(1);
    let mut out = json!({"embedding": vector, "inputTextTokenCount": tokens});
    if model_id.contains("v2") {
        out["embeddingsByType"] = json!({"float": out["embedding"].clone()});
    }
    let headers = [
        (name("x-amzn-requestid"), hv(request_id(state))),
        (name("x-amzn-bedrock-invocation-latency"), HeaderValue::from_static("1")),
        (name("x-amzn-bedrock-input-token-count"), hv(tokens)),
    ];
    wire::json(StatusCode::OK, &headers, &out)
}

/// Cohere Embed on Bedrock: `{"texts", "input_type"}` → `{"embeddings", "id", "response_type", "texts"}`.
fn cohere_embed(state: &MockState, req: &Value) -> Response<Body> {
    let Some(texts) = req["texts"].as_array() else {
        return validation(
            "Malformed input request: #: required key [texts] not found, please reformat your input and try again.",
            state,
        );
    };
    let texts: Vec<&str> = texts.iter().filter_map(Value::as_str).collect();
    let vectors: Vec<Vec<f32>> = texts
        .iter()
        .map(|t| scenario::embedding(t, scenario::DEFAULT_DIMENSIONS))
        .collect();
    let tokens: u32 = texts.iter().map(|t| scenario::count_words(t)).sum::<u32>().max(1);
    let id = request_id(state);
    let out = match req["embedding_types"].as_array() {
        Some(types) => {
            let mut by_type = serde_json::Map::new();
            for t in types.iter().filter_map(Value::as_str) {
                by_type.insert(t.to_owned(), crate::cohere::embeddings_of_type(t, &vectors));
            }
            json!({"embeddings": by_type, "id": id, "response_type": "embeddings_by_type", "texts": texts})
        }
        None => {
            json!({"embeddings": vectors, "id": id, "response_type": "embeddings_floats", "texts": texts})
        }
    };
    let headers = [
        (name("x-amzn-requestid"), hv(request_id(state))),
        (name("x-amzn-bedrock-invocation-latency"), HeaderValue::from_static("1")),
        (name("x-amzn-bedrock-input-token-count"), hv(tokens)),
    ];
    wire::json(StatusCode::OK, &headers, &out)
}

/// Results in one page of a Rerank answer.
pub const RERANK_PAGE: usize = 100;

/// The Agents for Amazon Bedrock Runtime's `Rerank` (`POST /rerank`; API reference "Rerank",
/// "RerankQuery", "RerankSource", "RerankingConfiguration"): exactly one TEXT query, 1 to 1,000
/// INLINE sources (TEXT with `textDocument.text` or JSON with `jsonDocument`), a
/// `BEDROCK_RERANKING_MODEL` configuration naming a foundation model ARN, `numberOfResults` at
/// least 1. Answer: `{"results": [{"index", "relevanceScore", "document"}], "nextToken"?}`, best
/// first, at most [`RERANK_PAGE`] results a page: more are behind a `nextToken` (AWS documents no
/// page size; the mock pages so that paging is tested). The model is the ARN's last part (fault
/// names work there too).
pub async fn rerank(
    State(state): State<MockState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let req = match begin(&state, &method, &uri, &headers, &body) {
        Ok(v) => v,
        Err(res) => return res,
    };
    let (query, documents, model, top) = match check_rerank(&req) {
        Ok(parts) => parts,
        Err(message) => return validation(&message, &state),
    };
    let plan = Plan::decide(&state, Behaviour::from_model(&model), &model, &headers).await;
    if let Act::Fail(fault) = plan.act {
        return fault_response(fault, &state);
    }
    let texts: Vec<String> = documents
        .iter()
        .map(|d| {
            d["textDocument"]["text"]
                .as_str()
                .map_or_else(|| d["jsonDocument"].to_string(), str::to_owned)
        })
        .collect();
    // Pages of RERANK_PAGE results, the rest behind a `nextToken` that names where it starts.
    let from = match req.get("nextToken") {
        None | Some(Value::Null) => 0,
        Some(token) => match token
            .as_str()
            .and_then(|t| t.strip_prefix("mock-page:"))
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) => n,
            None => return validation("The nextToken provided is not valid.", &state),
        },
    };
    let all: Vec<(usize, f64)> = crate::rerank::scored(&query, &texts)
        .into_iter()
        .take(top.unwrap_or(texts.len()))
        .collect();
    let results: Vec<Value> = all
        .iter()
        .skip(from)
        .take(RERANK_PAGE)
        .map(|&(index, score)| json!({"index": index, "relevanceScore": score, "document": documents[index]}))
        .collect();
    let mut answer = json!({"results": results});
    if from + RERANK_PAGE < all.len() {
        answer["nextToken"] = format!("mock-page:{}", from + RERANK_PAGE).into();
    }
    let res = wire::json(
        StatusCode::OK,
        &[(name("x-amzn-requestid"), hv(request_id(&state)))],
        &answer,
    );
    wire::finish(res, plan.first_token_delay, plan.act == Act::Cut).await
}

/// The query, the sources' documents, the model id and `numberOfResults` of a Rerank body, or
/// Bedrock's validation message.
fn check_rerank(req: &Value) -> Result<(String, Vec<Value>, String, Option<usize>), String> {
    let null = |path: &str| {
        format!(
            "1 validation error detected: Value null at '{path}' failed to satisfy constraint: Member must not be null"
        )
    };
    if !req.is_object() {
        return Err("Malformed input request, please reformat your input and try again.".into());
    }
    no_extraneous_key(req, &["queries", "sources", "rerankingConfiguration", "nextToken"])?;
    let queries = req["queries"].as_array().ok_or_else(|| null("queries"))?;
    let [q] = queries.as_slice() else {
        return Err(format!(
            "1 validation error detected: Value at 'queries' failed to satisfy constraint: Member must have length less than or equal to 1 and greater than or equal to 1 (got {})",
            queries.len()
        ));
    };
    if q["type"] != "TEXT" {
        return Err("1 validation error detected: Value at 'queries.1.member.type' failed to satisfy constraint: Member must satisfy enum value set: [TEXT]".into());
    }
    let query = q["textQuery"]["text"]
        .as_str()
        .ok_or_else(|| null("queries.1.member.textQuery.text"))?
        .to_owned();
    let sources = req["sources"].as_array().ok_or_else(|| null("sources"))?;
    if sources.is_empty() || sources.len() > 1000 {
        return Err("1 validation error detected: Value at 'sources' failed to satisfy constraint: Member must have length less than or equal to 1000 and greater than or equal to 1".into());
    }
    let mut documents = Vec::with_capacity(sources.len());
    for (i, s) in sources.iter().enumerate() {
        let at = format!("sources.{}.member", i + 1);
        if s["type"] != "INLINE" {
            return Err(format!("1 validation error detected: Value at '{at}.type' failed to satisfy constraint: Member must satisfy enum value set: [INLINE]"));
        }
        let d = &s["inlineDocumentSource"];
        let ok = match d["type"].as_str() {
            Some("TEXT") => d["textDocument"]["text"].is_string(),
            Some("JSON") => d.get("jsonDocument").is_some_and(|j| !j.is_null()),
            _ => {
                return Err(format!("1 validation error detected: Value at '{at}.inlineDocumentSource.type' failed to satisfy constraint: Member must satisfy enum value set: [TEXT, JSON]"))
            }
        };
        if !ok {
            return Err(format!(
                "The {} document of source {} is missing.",
                d["type"].as_str().unwrap_or(""),
                i + 1
            ));
        }
        documents.push(d.clone());
    }
    let config = &req["rerankingConfiguration"];
    if config["type"] != "BEDROCK_RERANKING_MODEL" {
        return Err("1 validation error detected: Value at 'rerankingConfiguration.type' failed to satisfy constraint: Member must satisfy enum value set: [BEDROCK_RERANKING_MODEL]".into());
    }
    let bedrock = &config["bedrockRerankingConfiguration"];
    let arn = bedrock["modelConfiguration"]["modelArn"]
        .as_str()
        .ok_or_else(|| null("rerankingConfiguration.bedrockRerankingConfiguration.modelConfiguration.modelArn"))?;
    let model = arn
        .strip_prefix("arn:aws:bedrock:")
        .and_then(|rest| rest.split_once("::foundation-model/"))
        .map(|(_, model)| model.to_owned())
        .ok_or_else(|| format!("The provided model ARN {arn} is not a foundation model ARN."))?;
    let top = match bedrock.get("numberOfResults") {
        None | Some(Value::Null) => None,
        Some(n) => match n.as_u64() {
            Some(n) if n >= 1 => Some(n as usize),
            _ => return Err("1 validation error detected: Value at 'rerankingConfiguration.bedrockRerankingConfiguration.numberOfResults' failed to satisfy constraint: Member must have value greater than or equal to 1".into()),
        },
    };
    Ok((query, documents, model, top))
}

/// Bedrock's `ValidationException` message for a key of `v` (an object) that `allowed` does not
/// name; `Ok` when there is none (or `v` is no object).
pub(crate) fn no_extraneous_key(v: &Value, allowed: &[&str]) -> Result<(), String> {
    match v
        .as_object()
        .and_then(|o| o.keys().find(|k| !allowed.contains(&k.as_str())))
    {
        Some(k) => Err(format!(
            "Malformed input request: extraneous key [{k}] is not permitted, please reformat your input and try again."
        )),
        None => Ok(()),
    }
}
