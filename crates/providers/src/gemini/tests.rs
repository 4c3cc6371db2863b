//! Golden tests: OpenAI-shaped requests translated for the Gemini API and Vertex AI, and
//! Gemini responses, streams, embeddings and errors translated back. Fixtures live in
//! `testdata/gemini/` and `testdata/vertex/`, each naming its source in `_source`.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{json, Value};

use super::*;
use crate::Usage;
use switchyard_config::{
    CircuitBreakerConfig, LimitsConfig, ProviderConfig, ProviderKind, ProviderTimeoutsConfig, SecretString,
};

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(format!("{}/testdata/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn request(path: &str) -> Json {
    let mut v: Json = serde_json::from_slice(&fixture(path)).unwrap();
    v.remove("_source");
    v
}

fn gemini_provider() -> ProviderConfig {
    ProviderConfig {
        id: "default/gemini".into(),
        kind: ProviderKind::Gemini,
        base_url: "https://generativelanguage.googleapis.com".into(),
        credentials: Some(CredentialsConfig::ApiKey {
            key: SecretString::new("AIza-test"),
        }),
        region: None,
        api_version: None,
        project: None,
        headers: Default::default(),
        quota: LimitsConfig::default(),
        timeouts: ProviderTimeoutsConfig::default(),
        circuit_breaker: CircuitBreakerConfig::default(),
        mock: None,
        http_version: Default::default(),
    }
}

fn vertex_provider() -> ProviderConfig {
    let sa = String::from_utf8(fixture("vertex/test-service-account.json")).unwrap();
    ProviderConfig {
        id: "default/vertex".into(),
        kind: ProviderKind::Vertex,
        base_url: "https://us-east5-aiplatform.googleapis.com".into(),
        credentials: Some(CredentialsConfig::ServiceAccount {
            json: SecretString::new(sa),
        }),
        region: Some("us-east5".into()),
        project: Some("my-project".into()),
        ..gemini_provider()
    }
}

/// 2025-01-01T00:00:00Z.
fn now() -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_735_689_600)
}

fn target<'a>(p: &'a ProviderConfig, model: &'a str) -> Target<'a> {
    Target {
        provider: p,
        model,
        drop_unsupported_params: false,
        now: now(),
        bearer: Some("ya29.test-token"),
    }
}

fn snapshot(req: &UpstreamRequest) -> Value {
    let headers: BTreeMap<String, String> = req
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    json!({
        "method": req.method.as_str(),
        "url": req.url,
        "headers": headers,
        "body": serde_json::from_slice::<Value>(&req.body).unwrap(),
    })
}

fn body(t: &Translated) -> Value {
    serde_json::from_slice(&t.body).unwrap()
}

/// The SSE events a translator wrote, as JSON (`"[DONE]"` for the terminator).
fn events(out: &[Bytes]) -> Vec<Value> {
    let text: String = out.iter().map(|b| std::str::from_utf8(b).unwrap()).collect();
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let data = e.strip_prefix("data: ").unwrap();
            serde_json::from_str(data).unwrap_or_else(|_| Value::String(data.to_owned()))
        })
        .collect()
}

/// Runs a recorded stream through a fresh translator in the given pieces.
fn translate(t: &Target<'_>, pieces: &[&[u8]]) -> (Vec<Bytes>, Option<Usage>) {
    let mut s = GEMINI.stream(Operation::Chat, t);
    let mut out = Vec::new();
    for p in pieces {
        s.feed(Bytes::copy_from_slice(p), &mut out).unwrap();
    }
    assert!(s.complete());
    s.finish(&mut out).unwrap();
    (out, s.usage())
}

/// The stream translated whole, and identically when cut at every byte boundary (mid-CRLF and
/// mid-UTF-8 included) and when fed one byte at a time.
fn translate_every_split(t: &Target<'_>, sse: &[u8]) -> (Vec<Value>, Option<Usage>) {
    let (whole, usage) = translate(t, &[sse]);
    let expected = events(&whole);
    for cut in 1..sse.len() {
        let (out, u) = translate(t, &[&sse[..cut], &sse[cut..]]);
        assert_eq!(events(&out), expected, "split at byte {cut}");
        assert_eq!(u, usage);
    }
    let bytes: Vec<&[u8]> = sse.chunks(1).collect();
    assert_eq!(events(&translate(t, &bytes).0), expected);
    (expected, usage)
}

// --- Requests -------------------------------------------------------------------------------

#[test]
fn gemini_chat_request() {
    let p = gemini_provider();
    let req = GEMINI
        .build(
            Operation::Chat,
            &request("gemini/chat_request.json"),
            &target(&p, "gemini-2.5-flash"),
            false,
        )
        .unwrap();
    insta::assert_json_snapshot!("gemini_chat_request", snapshot(&req));
}

#[test]
fn gemini_tool_turn_stream_request() {
    let p = gemini_provider();
    let t = target(&p, "models/gemini-3-pro-preview");
    let req = GEMINI
        .build(
            Operation::Chat,
            &request("gemini/chat_request_tool_turn.json"),
            &t,
            true,
        )
        .unwrap();
    insta::assert_json_snapshot!("gemini_tool_turn_stream_request", snapshot(&req));
}

#[test]
fn vertex_chat_request() {
    let p = vertex_provider();
    let req = VERTEX
        .build(
            Operation::Chat,
            &request("gemini/chat_request_tool_turn.json"),
            &target(&p, "gemini-2.5-pro"),
            false,
        )
        .unwrap();
    insta::assert_json_snapshot!("vertex_chat_request", snapshot(&req));
}

#[test]
fn vertex_urls_fall_back_to_the_key_files_project_and_the_hosts_region() {
    let mut p = vertex_provider();
    p.project = None;
    p.region = None;
    let req = VERTEX
        .build(
            Operation::Chat,
            &request("gemini/chat_request_tool_turn.json"),
            &target(&p, "gemini-2.5-pro"),
            true,
        )
        .unwrap();
    assert_eq!(
        req.url,
        "https://us-east5-aiplatform.googleapis.com/v1/projects/switchyard-test/locations/us-east5/publishers/google/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
    );
    p.base_url = "https://aiplatform.googleapis.com".into();
    let req = VERTEX
        .build(
            Operation::Chat,
            &request("gemini/chat_request_tool_turn.json"),
            &target(&p, "gemini-2.5-pro"),
            false,
        )
        .unwrap();
    assert_eq!(
        req.url,
        "https://aiplatform.googleapis.com/v1/projects/switchyard-test/locations/global/publishers/google/models/gemini-2.5-pro:generateContent"
    );
}

#[test]
fn vertex_without_an_access_token_is_an_auth_error() {
    let p = vertex_provider();
    let t = Target {
        bearer: None,
        ..target(&p, "gemini-2.5-pro")
    };
    let err = VERTEX
        .build(Operation::Chat, &request("gemini/chat_request.json"), &t, false)
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Auth);
    assert!(err.message.contains("no access token"), "{}", err.message);
}

#[test]
fn vertex_claude_uses_anthropic_messages_over_raw_predict() {
    let p = vertex_provider();
    let t = target(&p, "claude-sonnet-4@20250514");
    let mut r = request("gemini/chat_request_tool_turn.json");
    r.remove("reasoning_effort");
    // The tool-turn fixture asks for a JSON schema, which Claude cannot honour.
    let err = VERTEX.build(Operation::Chat, &r, &t, true).unwrap_err();
    assert_eq!(err.param.as_deref(), Some("response_format"));
    r.remove("response_format");
    let req = VERTEX.build(Operation::Chat, &r, &t, true).unwrap();
    insta::assert_json_snapshot!("vertex_claude_stream_request", snapshot(&req));
    let req = VERTEX.build(Operation::Chat, &r, &t, false).unwrap();
    assert!(
        req.url
            .ends_with("/publishers/anthropic/models/claude-sonnet-4@20250514:rawPredict"),
        "{}",
        req.url
    );

    // Anthropic API reference, Messages: example response.
    let answer = br#"{"id":"msg_vrtx_013Zva2CMHLNnXjNJJKqJ2EF","type":"message","role":"assistant","model":"claude-sonnet-4-20250514","content":[{"type":"text","text":"Bogota is warmer."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":25,"output_tokens":6}}"#;
    let out = VERTEX.parse(Operation::Chat, answer, &t).unwrap();
    assert_eq!(body(&out)["choices"][0]["message"]["content"], "Bogota is warmer.");
    assert_eq!(out.usage.map(|u| u.total()), Some(31));

    // Anthropic API reference, Streaming Messages: the event flow of a short answer.
    let mut s = VERTEX.stream(Operation::Chat, &t);
    let mut out = Vec::new();
    s.feed(Bytes::from_static(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_vrtx_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-20250514\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Bogota.\"}}\n\nevent: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":3}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"), &mut out).unwrap();
    assert!(s.complete());
    s.finish(&mut out).unwrap();
    assert_eq!(out.last().map(|b| b.as_ref()), Some(crate::sse::DONE));
    assert!(String::from_utf8_lossy(&out.concat()).contains("Bogota."));

    // Errors: Anthropic's shape from the model, Google's from Vertex's front.
    let e = VERTEX.error(
        529,
        &HeaderMap::new(),
        br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
    );
    assert_eq!(
        (e.kind, e.code.as_deref()),
        (ErrorKind::Server, Some("overloaded_error"))
    );
    let e = VERTEX.error(429, &HeaderMap::new(), br#"{"error":{"code":429,"message":"Quota exceeded for aiplatform.googleapis.com/online_prediction_requests_per_base_model.","status":"RESOURCE_EXHAUSTED"}}"#);
    assert_eq!(e.kind, ErrorKind::RateLimit);
}

#[test]
fn unsupported_parameters_fail_unless_dropped() {
    let p = gemini_provider();
    let mut r = request("gemini/chat_request.json");
    r.insert("logit_bias".into(), json!({"50256": -100}));
    let err = GEMINI
        .build(Operation::Chat, &r, &target(&p, "gemini-2.5-flash"), false)
        .unwrap_err();
    assert_eq!(
        (err.kind, err.param.as_deref()),
        (ErrorKind::BadRequest, Some("logit_bias"))
    );
    assert_eq!(err.code.as_deref(), Some("unsupported_parameter"));
    let t = Target {
        drop_unsupported_params: true,
        ..target(&p, "gemini-2.5-flash")
    };
    let req = GEMINI.build(Operation::Chat, &r, &t, false).unwrap();
    assert!(!String::from_utf8_lossy(&req.body).contains("50256"));
    // Gemini-native fields pass through.
    r.insert(
        "safetySettings".into(),
        json!([{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}]),
    );
    r.insert("generationConfig".into(), json!({"topK": 40, "temperature": 1.0}));
    let req = GEMINI.build(Operation::Chat, &r, &t, false).unwrap();
    let b: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(b["safetySettings"][0]["threshold"], "BLOCK_ONLY_HIGH");
    assert_eq!(b["generationConfig"]["topK"], 40);
    assert_eq!(
        b["generationConfig"]["temperature"], 0.2,
        "OpenAI parameters override native ones"
    );
}

#[test]
fn a_tool_result_for_an_unknown_call_is_a_bad_request() {
    let p = gemini_provider();
    let r: Json = serde_json::from_value(json!({"messages": [
        {"role": "user", "content": "hi"},
        {"role": "tool", "tool_call_id": "call_9", "content": "42"}
    ]}))
    .unwrap();
    let err = GEMINI
        .build(Operation::Chat, &r, &target(&p, "gemini-2.5-flash"), false)
        .unwrap_err();
    assert_eq!(err.param.as_deref(), Some("messages[1].tool_call_id"));
}

#[test]
fn legacy_completions_are_refused() {
    let p = gemini_provider();
    let err = GEMINI
        .build(
            Operation::Completions,
            &Json::new(),
            &target(&p, "gemini-2.5-flash"),
            false,
        )
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::BadRequest);
}

// --- Responses ------------------------------------------------------------------------------

#[test]
fn text_response() {
    let p = gemini_provider();
    let out = GEMINI
        .parse(
            Operation::Chat,
            &fixture("gemini/response_text.json"),
            &target(&p, "gemini-2.5-flash"),
        )
        .unwrap();
    assert_eq!(
        out.usage,
        Some(Usage {
            prompt_tokens: 1043,
            completion_tokens: 83,
            cached_tokens: 1024,
            cache_write_tokens: 0,
            cache_write_1h_tokens: 0,
            reasoning_tokens: 52
        })
    );
    insta::assert_json_snapshot!("gemini_text_response", body(&out));
}

#[test]
fn function_call_response() {
    let p = gemini_provider();
    let out = GEMINI
        .parse(
            Operation::Chat,
            &fixture("gemini/response_function_call.json"),
            &target(&p, "gemini-3-pro-preview"),
        )
        .unwrap();
    insta::assert_json_snapshot!("gemini_function_call_response", body(&out));
}

#[test]
fn a_tool_call_id_round_trips_its_thought_signature() {
    let p = gemini_provider();
    let t = target(&p, "gemini-3-pro-preview");
    let out = GEMINI
        .parse(Operation::Chat, &fixture("gemini/response_function_call.json"), &t)
        .unwrap();
    let message = body(&out)["choices"][0]["message"].clone();
    let r: Json = serde_json::from_value(json!({"messages": [
        {"role": "user", "content": "weather?"},
        message,
        {"role": "tool", "tool_call_id": "call_0__thought__CpwCAdHtim8S", "content": "14C"},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
    ]}))
    .unwrap();
    let req = GEMINI.build(Operation::Chat, &r, &t, false).unwrap();
    let b: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(b["contents"][1]["parts"][0]["thoughtSignature"], "CpwCAdHtim8S");
    assert!(b["contents"][1]["parts"][1].get("thoughtSignature").is_none());
    assert_eq!(
        b["contents"][2]["parts"][1]["functionResponse"],
        json!({"name": "get_weather", "response": {"content": "18C"}})
    );
}

#[test]
fn a_blocked_prompt_is_a_content_policy_error() {
    let p = gemini_provider();
    let err = GEMINI
        .parse(
            Operation::Chat,
            &fixture("gemini/response_prompt_blocked.json"),
            &target(&p, "gemini-2.0-flash"),
        )
        .unwrap_err();
    assert_eq!(
        (err.kind, err.code.as_deref()),
        (ErrorKind::ContentPolicy, Some("SAFETY"))
    );
}

#[test]
fn a_safety_stop_is_a_content_filter_finish() {
    let p = gemini_provider();
    let out = GEMINI
        .parse(
            Operation::Chat,
            &fixture("gemini/response_safety_finish.json"),
            &target(&p, "gemini-2.0-flash"),
        )
        .unwrap();
    let b = body(&out);
    assert_eq!(b["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(b["choices"][0]["message"]["content"], Value::Null);
    assert_eq!(out.usage.map(|u| (u.prompt_tokens, u.completion_tokens)), Some((9, 0)));
}

// --- Streams --------------------------------------------------------------------------------

#[test]
fn text_stream() {
    let p = gemini_provider();
    let (events, usage) = translate_every_split(&target(&p, "gemini-2.0-flash"), &fixture("gemini/stream_text.sse"));
    assert_eq!(
        usage,
        Some(Usage {
            prompt_tokens: 11,
            completion_tokens: 7,
            cached_tokens: 0,
            cache_write_tokens: 0,
            cache_write_1h_tokens: 0,
            reasoning_tokens: 0
        })
    );
    insta::assert_json_snapshot!("gemini_text_stream", events);
}

#[test]
fn function_call_stream() {
    let p = gemini_provider();
    let (events, usage) = translate_every_split(
        &target(&p, "gemini-2.5-flash"),
        &fixture("gemini/stream_function_call.sse"),
    );
    assert_eq!(usage.map(|u| u.completion_tokens), Some(56));
    insta::assert_json_snapshot!("gemini_function_call_stream", events);
}

#[test]
fn a_stream_cut_before_the_finish_is_incomplete() {
    let p = gemini_provider();
    let sse = fixture("gemini/stream_text.sse");
    let cut = sse.len() - 300;
    let mut s = GEMINI.stream(Operation::Chat, &target(&p, "gemini-2.0-flash"));
    let mut out = Vec::new();
    s.feed(Bytes::copy_from_slice(&sse[..cut]), &mut out).unwrap();
    assert!(!s.complete());
    assert_eq!(s.finish(&mut out).unwrap_err().kind, ErrorKind::Protocol);
    assert!(!events(&out).contains(&json!("[DONE]")));
}

#[test]
fn stream_errors_and_blocks_are_mapped() {
    let p = gemini_provider();
    let t = target(&p, "gemini-2.0-flash");
    let mut out = Vec::new();
    let mut s = GEMINI.stream(Operation::Chat, &t);
    let err = s
        .feed(
            Bytes::from_static(b"data: {\"error\":{\"code\":503,\"message\":\"The model is overloaded. Please try again later.\",\"status\":\"UNAVAILABLE\"}}\r\n\r\n"),
            &mut out,
        )
        .unwrap_err();
    assert_eq!((err.kind, err.status), (ErrorKind::Server, Some(503)));
    let mut s = GEMINI.stream(Operation::Chat, &t);
    let blocked = format!(
        "data: {}\r\n\r\n",
        String::from_utf8(fixture("gemini/response_prompt_blocked.json"))
            .unwrap()
            .replace('\n', "")
    );
    assert_eq!(
        s.feed(Bytes::from(blocked), &mut out).unwrap_err().kind,
        ErrorKind::ContentPolicy
    );
    let mut s = GEMINI.stream(Operation::Chat, &t);
    assert_eq!(
        s.feed(Bytes::from_static(b"data: {oops\r\n\r\n"), &mut out)
            .unwrap_err()
            .kind,
        ErrorKind::Protocol
    );
}

// --- Embeddings -----------------------------------------------------------------------------

fn embed(input: Value) -> Json {
    serde_json::from_value(
        json!({"model": "text-embedding-3-small", "input": input, "dimensions": 768, "encoding_format": "float"}),
    )
    .unwrap()
}

#[test]
fn embedding_requests() {
    let p = gemini_provider();
    let t = target(&p, "gemini-embedding-001");
    let one = GEMINI
        .build(
            Operation::Embeddings,
            &embed(json!("What is the meaning of life?")),
            &t,
            false,
        )
        .unwrap();
    insta::assert_json_snapshot!("gemini_embed_content_request", snapshot(&one));
    let many = GEMINI
        .build(
            Operation::Embeddings,
            &embed(json!(["What is the meaning of life?", "How does the brain work?"])),
            &t,
            false,
        )
        .unwrap();
    insta::assert_json_snapshot!("gemini_batch_embed_contents_request", snapshot(&many));
    let v = vertex_provider();
    let vt = target(&v, "text-embedding-005");
    let predict = VERTEX
        .build(
            Operation::Embeddings,
            &embed(json!(["What is the meaning of life?", "How does the brain work?"])),
            &vt,
            false,
        )
        .unwrap();
    insta::assert_json_snapshot!("vertex_predict_embeddings_request", snapshot(&predict));
    let tokens = GEMINI
        .build(Operation::Embeddings, &embed(json!([[1, 2, 3]])), &t, false)
        .unwrap_err();
    assert_eq!(tokens.param.as_deref(), Some("input"));
}

#[test]
fn embedding_responses() {
    let p = gemini_provider();
    let t = target(&p, "gemini-embedding-001");
    let one = GEMINI
        .parse(
            Operation::Embeddings,
            &fixture("gemini/embed_content_response.json"),
            &t,
        )
        .unwrap();
    assert_eq!(one.usage, None);
    insta::assert_json_snapshot!("gemini_embed_content_response", body(&one));
    let many = GEMINI
        .parse(
            Operation::Embeddings,
            &fixture("gemini/batch_embed_contents_response.json"),
            &t,
        )
        .unwrap();
    assert_eq!(body(&many)["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(body(&many)["data"][1]["index"], 1);
    let v = vertex_provider();
    let predicted = VERTEX
        .parse(
            Operation::Embeddings,
            &fixture("vertex/predict_embeddings_response.json"),
            &target(&v, "text-embedding-005"),
        )
        .unwrap();
    assert_eq!(predicted.usage.map(|u| u.prompt_tokens), Some(15));
    insta::assert_json_snapshot!("vertex_predict_embeddings_response", body(&predicted));
}

// --- Errors ---------------------------------------------------------------------------------

#[test]
fn errors_are_classified() {
    // Bodies as documented in the Gemini API troubleshooting guide and Google's AIP-193.
    let h = HeaderMap::new();
    let e = google_error(429, &h, br#"{"error":{"code":429,"message":"You exceeded your current quota, please check your plan and billing details.","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaMetric":"generativelanguage.googleapis.com/generate_content_free_tier_requests","quotaId":"GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"34s"}]}}"#);
    assert_eq!(
        (e.kind, e.retry_after),
        (ErrorKind::RateLimit, Some(std::time::Duration::from_secs(34)))
    );
    assert_eq!(e.code.as_deref(), Some("RESOURCE_EXHAUSTED"));
    let mut with_header = HeaderMap::new();
    with_header.insert("retry-after", HeaderValue::from_static("2"));
    let e = google_error(429, &with_header, br#"{"error":{"code":429,"message":"Resource exhausted.","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"34s"}]}}"#);
    assert_eq!(
        e.retry_after,
        Some(std::time::Duration::from_secs(2)),
        "the header wins"
    );

    let e = google_error(400, &h, br#"{"error":{"code":400,"message":"The input token count (1048577) exceeds the maximum number of tokens allowed (1048576).","status":"INVALID_ARGUMENT"}}"#);
    assert_eq!(e.kind, ErrorKind::ContextWindow);
    let e = google_error(400, &h, br#"{"error":{"code":400,"message":"* GenerateContentRequest.contents: contents is not specified\n","status":"INVALID_ARGUMENT"}}"#);
    assert_eq!(e.kind, ErrorKind::BadRequest);
    let e = google_error(400, &h, br#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com","metadata":{"service":"generativelanguage.googleapis.com"}}]}}"#);
    assert_eq!(e.kind, ErrorKind::Auth);
    let e = google_error(401, &h, br#"{"error":{"code":401,"message":"Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.","status":"UNAUTHENTICATED"}}"#);
    assert_eq!(e.kind, ErrorKind::Auth);
    let e = google_error(403, &h, br#"{"error":{"code":403,"message":"Permission 'aiplatform.endpoints.predict' denied on resource.","status":"PERMISSION_DENIED"}}"#);
    assert_eq!(e.kind, ErrorKind::PermissionDenied);
    let e = google_error(404, &h, br#"{"error":{"code":404,"message":"models/gemini-9 is not found for API version v1beta, or is not supported for generateContent.","status":"NOT_FOUND"}}"#);
    assert_eq!(e.kind, ErrorKind::NotFound);
    let e = google_error(
        500,
        &h,
        br#"{"error":{"code":500,"message":"An internal error has occurred.","status":"INTERNAL"}}"#,
    );
    assert_eq!(e.kind, ErrorKind::Server);
    let e = google_error(503, &h, br#"[{"error":{"code":503,"message":"The model is overloaded. Please try again later.","status":"UNAVAILABLE"}}]"#);
    assert_eq!(
        (e.kind, e.message.as_str()),
        (ErrorKind::Server, "The model is overloaded. Please try again later.")
    );
    let e = google_error(504, &h, br#"{"error":{"code":504,"message":"Deadline expired before operation could complete.","status":"DEADLINE_EXCEEDED"}}"#);
    assert_eq!(e.kind, ErrorKind::Timeout);
    let e = google_error(502, &h, b"<html><body>Bad Gateway</body></html>");
    assert_eq!(
        (e.kind, e.message.as_str()),
        (ErrorKind::Server, "upstream answered HTTP 502")
    );
}

#[test]
fn absurd_retry_delays_neither_panic_nor_overflow() {
    let h = HeaderMap::new();
    let delay = |d: &str| {
        let body = format!(
            r#"{{"error":{{"code":429,"message":"Resource exhausted.","status":"RESOURCE_EXHAUSTED","details":[{{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"{d}"}}]}}}}"#
        );
        google_error(429, &h, body.as_bytes()).retry_after
    };
    assert_eq!(delay("1e20s"), Some(crate::MAX_RETRY_AFTER));
    assert_eq!(delay("infs"), Some(crate::MAX_RETRY_AFTER));
    assert_eq!(delay("NaN s"), None);
    assert_eq!(delay("NaNs"), None);
    assert_eq!(delay("-5s"), None);
    assert_eq!(delay("1.5s"), Some(std::time::Duration::from_millis(1500)));
}

#[test]
fn huge_usage_counts_saturate() {
    let max = u64::MAX;
    let body = format!(
        r#"{{"candidates":[{{"content":{{"role":"model","parts":[{{"text":"hi"}}]}},"finishReason":"STOP","index":0}}],"usageMetadata":{{"promptTokenCount":{max},"toolUsePromptTokenCount":{max},"candidatesTokenCount":{max},"thoughtsTokenCount":5,"totalTokenCount":{max}}}}}"#
    );
    let p = gemini_provider();
    let t = target(&p, "gemini-2.5-flash");
    let out = GEMINI.parse(Operation::Chat, body.as_bytes(), &t).unwrap();
    let u = out.usage.unwrap();
    assert_eq!((u.prompt_tokens, u.completion_tokens, u.total()), (max, max, max));
}

#[test]
fn thoughts_are_reasoning_tokens() {
    // UsageMetadata from the Gemini API reference, "Generating content" (`thoughtsTokenCount`
    // is not part of `candidatesTokenCount`; OpenAI's completion tokens include reasoning).
    let body = br#"{"candidates":[{"content":{"role":"model","parts":[{"text":"hi"}]},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":10,"candidatesTokenCount":4,"thoughtsTokenCount":20,"cachedContentTokenCount":6,"totalTokenCount":34}}"#;
    let p = gemini_provider();
    let out = GEMINI
        .parse(Operation::Chat, body, &target(&p, "gemini-2.5-flash"))
        .unwrap();
    assert_eq!(
        out.usage,
        Some(Usage {
            prompt_tokens: 10,
            completion_tokens: 24,
            cached_tokens: 6,
            cache_write_tokens: 0,
            cache_write_1h_tokens: 0,
            reasoning_tokens: 20
        })
    );
}

// --- Images (Imagen on Vertex AI) ------------------------------------------------------------

#[test]
fn imagen_request_goes_to_predict_with_the_nearest_aspect_ratio() {
    let p = vertex_provider();
    let r = request("images/request.json");
    let req = VERTEX
        .build(Operation::Images, &r, &target(&p, "imagen-3.0-generate-002"), false)
        .unwrap();
    insta::assert_json_snapshot!("vertex_imagen_request", snapshot(&req));
    let mut gpt_image = r.clone();
    gpt_image.insert("size".into(), json!("1536x1024"));
    gpt_image.insert("output_format".into(), json!("jpeg"));
    gpt_image.insert("output_compression".into(), json!(80));
    gpt_image.insert("negativePrompt".into(), json!("people"));
    let req = VERTEX
        .build(
            Operation::Images,
            &gpt_image,
            &target(&p, "imagen-4.0-generate-001"),
            false,
        )
        .unwrap();
    let sent: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(
        sent["parameters"],
        json!({"sampleCount": 2, "aspectRatio": "4:3", "negativePrompt": "people",
               "outputOptions": {"mimeType": "image/jpeg", "compressionQuality": 80}})
    );
}

#[test]
fn imagen_refuses_urls_styles_and_other_models() {
    let p = vertex_provider();
    let t = target(&p, "imagen-3.0-generate-002");
    let mut r = request("images/request.json");
    r.insert("response_format".into(), json!("url"));
    let e = VERTEX.build(Operation::Images, &r, &t, false).unwrap_err();
    assert_eq!(e.param.as_deref(), Some("response_format"));
    assert!(e.message.contains("b64_json"), "{}", e.message);
    let mut r = request("images/request.json");
    r.insert("style".into(), json!("vivid"));
    assert_eq!(
        VERTEX
            .build(Operation::Images, &r, &t, false)
            .unwrap_err()
            .param
            .as_deref(),
        Some("style")
    );
    r.insert("n".into(), json!(5));
    let mut dropping = t;
    dropping.drop_unsupported_params = true;
    assert_eq!(
        VERTEX
            .build(Operation::Images, &r, &dropping, false)
            .unwrap_err()
            .param
            .as_deref(),
        Some("n")
    );
    let e = VERTEX
        .build(
            Operation::Images,
            &request("images/request.json"),
            &target(&p, "gemini-2.5-pro"),
            false,
        )
        .unwrap_err();
    assert!(e.message.contains("imagen"), "{}", e.message);
    let gemini = gemini_provider();
    let e = GEMINI
        .build(
            Operation::Images,
            &request("images/request.json"),
            &target(&gemini, "imagen-3.0-generate-002"),
            false,
        )
        .unwrap_err();
    assert!(
        e.message.contains("/v1/chat/completions and /v1/embeddings only"),
        "{}",
        e.message
    );
}

#[test]
fn imagen_response_is_openai_shaped_and_counts_images() {
    let p = vertex_provider();
    let t = target(&p, "imagen-3.0-generate-002");
    let out = VERTEX
        .parse(Operation::Images, &fixture("vertex/imagen_predict_response.json"), &t)
        .unwrap();
    assert_eq!(out.usage.map(|u| u.completion_tokens), Some(2));
    insta::assert_json_snapshot!("vertex_imagen_response", body(&out));
    // Every image blocked: a content-policy refusal.
    let e = VERTEX
        .parse(
            Operation::Images,
            br#"{"predictions":[{"raiFilteredReason":"blocked: child safety"}]}"#,
            &t,
        )
        .unwrap_err();
    assert_eq!(
        (e.kind, e.message.as_str()),
        (ErrorKind::ContentPolicy, "blocked: child safety")
    );
    assert_eq!(
        VERTEX.parse(Operation::Images, b"{}", &t).unwrap_err().kind,
        ErrorKind::ContentPolicy
    );
}
