//! Golden tests: fixtures from Anthropic's API reference and guides (see `_source` in each
//! fixture), and, for the ingress's OpenAI-side inputs, from OpenAI's.

use super::ingress::{self, StreamFromOpenAi};
use serde_json::{json, Value};

use super::*;
use crate::sse::{Event, Parser};
use crate::Usage;
use switchyard_config::{
    CircuitBreakerConfig, LimitsConfig, ProviderConfig, ProviderKind, ProviderTimeoutsConfig, SecretString,
};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/testdata/anthropic/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn json_fixture(name: &str) -> Json {
    let mut v: Json = serde_json::from_slice(&fixture(name)).unwrap();
    v.remove("_source");
    v
}

fn provider(base: &str) -> ProviderConfig {
    ProviderConfig {
        id: "default/claude".into(),
        kind: ProviderKind::Anthropic,
        base_url: base.into(),
        credentials: Some(CredentialsConfig::ApiKey {
            key: SecretString::new("sk-ant-test"),
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

/// 2023-11-14T22:13:20Z.
const NOW: u64 = 1_700_000_000;

fn target<'a>(p: &'a ProviderConfig, model: &'a str, drop: bool) -> Target<'a> {
    Target {
        provider: p,
        model,
        drop_unsupported_params: drop,
        now: std::time::UNIX_EPOCH + std::time::Duration::from_secs(NOW),
        bearer: None,
    }
}

fn snapshot(req: &UpstreamRequest) -> Value {
    let headers: std::collections::BTreeMap<String, String> = req
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

fn body_of(req: &Json, model: &str, drop: bool) -> Result<Value, ProviderError> {
    let p = provider("https://api.anthropic.com");
    let req = ANTHROPIC.build(Operation::Chat, req, &target(&p, model, drop), false)?;
    Ok(serde_json::from_slice(&req.body).unwrap())
}

/// Feeds `bytes` in pieces of `step` bytes (splitting events and UTF-8 sequences anywhere).
fn run(t: &mut dyn StreamTranslator, bytes: &[u8], step: usize) -> (Vec<u8>, Result<(), ProviderError>) {
    let mut out = Vec::new();
    for piece in bytes.chunks(step) {
        if let Err(e) = t.feed(Bytes::copy_from_slice(piece), &mut out) {
            return (out.concat(), Err(e));
        }
    }
    let r = t.finish(&mut out);
    (out.concat(), r)
}

fn events(bytes: &[u8]) -> Vec<Event> {
    let mut p = Parser::default();
    let evs = p.feed(bytes).unwrap();
    assert_eq!(p.pending(), 0, "output ends mid-event");
    evs
}

/// An event stream as JSON for snapshots: data parsed, `[DONE]` kept as a string.
fn events_json(bytes: &[u8]) -> Value {
    events(bytes)
        .into_iter()
        .map(|e| {
            let data = serde_json::from_str::<Value>(&e.data).unwrap_or(Value::String(e.data));
            if e.event.is_empty() {
                data
            } else {
                json!({"event": e.event, "data": data})
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Adapter: requests.

#[test]
fn chat_request_is_translated() {
    let p = provider("https://api.anthropic.com/");
    let req = ANTHROPIC
        .build(
            Operation::Chat,
            &json_fixture("chat_request.json"),
            &target(&p, "claude-sonnet-4-5-20250929", false),
            true,
        )
        .unwrap();
    assert!(req.headers.get("x-api-key").unwrap().is_sensitive());
    insta::assert_json_snapshot!("chat_request", snapshot(&req));
}

#[test]
fn max_tokens_defaults_to_the_models_output_limit() {
    let req: Json = serde_json::from_value(json!({"messages": [{"role": "user", "content": "Hello"}]})).unwrap();
    let body = body_of(&req, "claude-sonnet-4-20250514", false).unwrap();
    assert_eq!(body["max_tokens"], 64000);
    assert_eq!(body["messages"], json!([{"role": "user", "content": "Hello"}]));
    assert!(body.get("stream").is_none() && body.get("system").is_none() && body.get("tools").is_none());
    assert_eq!(body_of(&req, "claude-next-unknown", false).unwrap()["max_tokens"], 4096);

    let req: Json = serde_json::from_value(json!({
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 100, "max_completion_tokens": 200, "stop": "END", "top_k": 5,
        "n": 1, "logprobs": false, "presence_penalty": 0, "response_format": {"type": "text"},
    }))
    .unwrap();
    let body = body_of(&req, "claude-haiku-4-5", false).unwrap();
    assert_eq!(
        (
            body["max_tokens"].clone(),
            body["stop_sequences"].clone(),
            body["top_k"].clone()
        ),
        (json!(200), json!(["END"]), json!(5))
    );
}

#[test]
fn unsupported_parameters_fail_unless_dropped() {
    for (param, value) in [
        ("n", json!(2)),
        ("logprobs", json!(true)),
        ("top_logprobs", json!(3)),
        ("presence_penalty", json!(0.5)),
        ("frequency_penalty", json!(-1)),
        ("logit_bias", json!({"50256": -100})),
        ("seed", json!(42)),
        (
            "response_format",
            json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}),
        ),
        ("response_format", json!({"type": "json_object"})),
        ("audio", json!({"voice": "alloy", "format": "wav"})),
    ] {
        let mut req: Json = serde_json::from_value(json!({"messages": [{"role": "user", "content": "Hi"}]})).unwrap();
        req.insert(param.into(), value);
        let e = body_of(&req, "claude-haiku-4-5", false).unwrap_err();
        assert_eq!(
            (e.kind, e.param.as_deref(), e.code.as_deref()),
            (ErrorKind::BadRequest, Some(param), Some("unsupported_parameter")),
            "{param}"
        );
        let body = body_of(&req, "claude-haiku-4-5", true).unwrap();
        assert!(body.get(param).is_none(), "{param} should be dropped");
    }
    // Built-in OpenAI tools have no Claude counterpart either.
    let req: Json = serde_json::from_value(json!({
        "messages": [{"role": "user", "content": "Hi"}],
        "tools": [{"type": "web_search_preview"}],
    }))
    .unwrap();
    assert_eq!(
        body_of(&req, "claude-haiku-4-5", false).unwrap_err().param.as_deref(),
        Some("tools")
    );
    assert!(body_of(&req, "claude-haiku-4-5", true).unwrap().get("tools").is_none());
}

#[test]
fn tool_choices_and_parts_translate() {
    let tool = json!({"type": "function", "function": {"name": "f", "strict": true, "parameters": {"type": "object"}}, "cache_control": {"type": "ephemeral"}});
    for (choice, parallel, expected) in [
        (json!("auto"), true, json!({"type": "auto"})),
        (json!("none"), false, json!({"type": "none"})),
        (json!("required"), true, json!({"type": "any"})),
        (
            json!({"type": "function", "function": {"name": "f"}}),
            false,
            json!({"type": "tool", "name": "f", "disable_parallel_tool_use": true}),
        ),
        (
            Value::Null,
            false,
            json!({"type": "auto", "disable_parallel_tool_use": true}),
        ),
    ] {
        let req: Json = serde_json::from_value(json!({
            "messages": [{"role": "user", "content": "Hi"}],
            "tools": [tool], "tool_choice": choice, "parallel_tool_calls": parallel,
        }))
        .unwrap();
        let body = body_of(&req, "claude-haiku-4-5", false).unwrap();
        assert_eq!(body["tool_choice"], expected);
        assert_eq!(
            body["tools"],
            json!([{"name": "f", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}}])
        );
    }

    // Consecutive tool results share one user turn; cache_control and PDFs come through.
    let req: Json = serde_json::from_value(json!({"messages": [
        {"role": "system", "content": [{"type": "text", "text": "Long context", "cache_control": {"type": "ephemeral"}}]},
        {"role": "user", "content": [{"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"}}]},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "t1", "type": "function", "function": {"name": "f", "arguments": ""}},
            {"id": "t2", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}},
        ]},
        {"role": "tool", "tool_call_id": "t1", "content": [{"type": "text", "text": "one"}]},
        {"role": "tool", "tool_call_id": "t2", "content": "two"},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "thanks"},
    ]}))
    .unwrap();
    let body = body_of(&req, "claude-haiku-4-5", false).unwrap();
    assert_eq!(
        body["system"],
        json!([{"type": "text", "text": "Long context", "cache_control": {"type": "ephemeral"}}])
    );
    assert_eq!(
        body["messages"],
        json!([
            {"role": "user", "content": [{"type": "document", "title": "a.pdf", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "t1", "name": "f", "input": {}},
                {"type": "tool_use", "id": "t2", "name": "f", "input": {"a": 1}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "one"}]},
                {"type": "tool_result", "tool_use_id": "t2", "content": "two"},
                {"type": "text", "text": "thanks"},
            ]},
        ])
    );

    // What cannot be expressed is an error naming where it is.
    for (messages, param) in [
        (
            json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]),
            "messages[0].content[0]",
        ),
        (
            json!([{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}]),
            "messages[0].content[0]",
        ),
        (
            json!([{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-abc"}}]}]),
            "messages[0].content[0]",
        ),
        (
            json!([{"role": "assistant", "tool_calls": [{"id": "t", "function": {"name": "f", "arguments": "{oops"}}]}]),
            "messages[0].tool_calls[0].function.arguments",
        ),
        (json!([{"role": "tool", "content": "x"}]), "messages[0].tool_call_id"),
        (
            json!([{"role": "function", "name": "f", "content": "x"}]),
            "messages[0].role",
        ),
    ] {
        let req: Json = serde_json::from_value(json!({ "messages": messages })).unwrap();
        let e = body_of(&req, "claude-haiku-4-5", true).unwrap_err();
        assert_eq!(
            (e.kind, e.param.as_deref()),
            (ErrorKind::BadRequest, Some(param)),
            "{}",
            e.message
        );
    }
}

#[test]
fn only_chat_is_served() {
    let p = provider("https://api.anthropic.com/v1");
    let t = target(&p, "claude-haiku-4-5", false);
    let req: Json = serde_json::from_value(json!({"input": "hi"})).unwrap();
    let e = ANTHROPIC.build(Operation::Embeddings, &req, &t, false).unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadRequest);
    assert!(e.message.contains("/v1/embeddings"), "{}", e.message);
    assert!(ANTHROPIC.parse(Operation::Responses, b"{}", &t).is_err());
    assert_eq!(
        messages_url("https://api.anthropic.com/v1"),
        "https://api.anthropic.com/v1/messages"
    );
    assert_eq!(
        messages_url("https://gw.example/anthropic/"),
        "https://gw.example/anthropic/v1/messages"
    );
}

// ---------------------------------------------------------------------------------------------
// Adapter: responses.

fn parse(name: &str) -> Translated {
    let p = provider("https://api.anthropic.com");
    ANTHROPIC
        .parse(Operation::Chat, &fixture(name), &target(&p, "claude-sonnet-4-5", false))
        .unwrap()
}

#[test]
fn text_response_is_translated() {
    let out = parse("message_response.json");
    assert_eq!(
        out.usage,
        Some(Usage {
            prompt_tokens: 2095,
            completion_tokens: 503,
            cached_tokens: 0,
            cache_write_tokens: 0,
            cache_write_1h_tokens: 0,
            reasoning_tokens: 0
        })
    );
    insta::assert_json_snapshot!("text_response", serde_json::from_slice::<Value>(&out.body).unwrap());
}

#[test]
fn tool_use_response_is_translated() {
    let out = parse("tool_use_response.json");
    assert_eq!(out.usage, None);
    let body: Value = serde_json::from_slice(&out.body).unwrap();
    let args = body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
        .as_str()
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(args).unwrap(),
        json!({"location": "San Francisco, CA", "unit": "celsius"})
    );
    insta::assert_json_snapshot!("tool_use_response", body);
}

#[test]
fn cache_usage_counts_in_prompt_tokens() {
    let out = parse("cache_usage_response.json");
    assert_eq!(
        out.usage,
        Some(Usage {
            prompt_tokens: 21 + 188_086,
            completion_tokens: 393,
            cached_tokens: 188_086,
            cache_write_tokens: 0,
            cache_write_1h_tokens: 0,
            reasoning_tokens: 0
        })
    );
    let body: Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 188_107, "completion_tokens": 393, "total_tokens": 188_500, "prompt_tokens_details": {"cached_tokens": 188_086}})
    );
    // A cache write counts as prompt too.
    let written = response_to_openai(
        br#"{"id":"m","model":"c","content":[],"stop_reason":"max_tokens","usage":{"input_tokens":21,"cache_creation_input_tokens":188086,"cache_read_input_tokens":0,"output_tokens":393}}"#,
        0,
    )
    .unwrap();
    assert_eq!(
        written.usage.map(|u| (u.prompt_tokens, u.cache_write_tokens)),
        Some((188_107, 188_086))
    );
    let body: Value = serde_json::from_slice(&written.body).unwrap();
    assert_eq!(
        (
            body["choices"][0]["finish_reason"].clone(),
            body["choices"][0]["message"]["content"].clone()
        ),
        (json!("length"), json!(""))
    );
    assert_eq!(
        ANTHROPIC
            .parse(Operation::Chat, b"<html>", &target(&provider(""), "c", false))
            .unwrap_err()
            .kind,
        ErrorKind::Protocol
    );
}

#[test]
fn stop_reasons_map_to_finish_reasons() {
    for (stop, finish) in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
    ] {
        assert_eq!(finish_reason(stop), finish);
    }
}

// ---------------------------------------------------------------------------------------------
// Adapter: streams.

#[test]
fn text_stream_is_translated() {
    let mut s = StreamToOpenAi::new(NOW);
    let (out, r) = run(&mut s, &fixture("text_stream.sse"), 7);
    r.unwrap();
    assert!(s.complete());
    assert_eq!(
        s.usage(),
        Some(Usage {
            prompt_tokens: 25,
            completion_tokens: 15,
            cached_tokens: 0,
            cache_write_tokens: 0,
            cache_write_1h_tokens: 0,
            reasoning_tokens: 0
        })
    );
    // Chunking does not change the output.
    let (whole, _) = run(&mut StreamToOpenAi::new(NOW), &fixture("text_stream.sse"), usize::MAX);
    assert_eq!(out, whole);
    assert!(out.ends_with(b"data: [DONE]\n\n"));
    insta::assert_json_snapshot!("text_stream", events_json(&out));
}

#[test]
fn tool_use_stream_is_translated() {
    let mut s = StreamToOpenAi::new(NOW);
    let (out, r) = run(&mut s, &fixture("tool_use_stream.sse"), 5);
    r.unwrap();
    assert!(s.complete());
    assert_eq!(
        s.usage().map(|u| (u.prompt_tokens, u.completion_tokens)),
        Some((472, 89))
    );

    let chunks: Vec<Value> = events(&out)
        .into_iter()
        .filter(|e| e.data != "[DONE]")
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Okay, let's check the weather for San Francisco, CA:");

    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"].get("tool_calls"))
        .map(|t| &t[0])
        .collect();
    let (first, rest) = calls.split_first().unwrap();
    assert_eq!(
        **first,
        json!({"index": 0, "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "type": "function", "function": {"name": "get_weather", "arguments": ""}})
    );
    for c in rest {
        assert_eq!(c["index"], 0);
        assert!(c.get("id").is_none() && c["function"].get("name").is_none(), "{c}");
    }
    let args: String = calls
        .iter()
        .filter_map(|c| c["function"]["arguments"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"location": "San Francisco, CA", "unit": "fahrenheit"})
    );

    let finishes: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0].get("finish_reason"))
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finishes, vec![&json!("tool_calls")]);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["total_tokens"], 561);
    insta::assert_json_snapshot!("tool_use_stream", events_json(&out));
}

#[test]
fn error_event_ends_the_stream() {
    // The "Error events" example of Anthropic's streaming reference, after the first events.
    let text = String::from_utf8(fixture("text_stream.sse")).unwrap();
    let cut = text.find("event: content_block_delta").unwrap();
    let stream = format!(
        "{}event: error\ndata: {{\"type\": \"error\", \"error\": {{\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}}}\n\nevent: content_block_delta\ndata: {{\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {{\"type\": \"text_delta\", \"text\": \"late\"}}}}\n\n",
        &text[..cut]
    );
    let mut s = StreamToOpenAi::new(NOW);
    let mut out = Vec::new();
    let e = s.feed(Bytes::from(stream), &mut out).unwrap_err();
    assert_eq!(
        (e.kind, e.code.as_deref(), e.message.as_str()),
        (ErrorKind::Server, Some("overloaded_error"), "Overloaded")
    );
    assert!(!s.complete());
    assert!(!out.concat().windows(4).any(|w| w == b"late"));
    assert_eq!(events(&out.concat()).len(), 1, "only the role chunk went out");

    for (ty, kind) in [
        ("rate_limit_error", ErrorKind::RateLimit),
        ("api_error", ErrorKind::Server),
        ("invalid_request_error", ErrorKind::BadRequest),
    ] {
        let ev =
            format!("event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"{ty}\",\"message\":\"m\"}}}}\n\n");
        assert_eq!(
            StreamToOpenAi::new(0)
                .feed(Bytes::from(ev), &mut Vec::new())
                .unwrap_err()
                .kind,
            kind
        );
    }
}

#[test]
fn cut_or_malformed_streams_are_errors() {
    let text = fixture("text_stream.sse");
    let mut s = StreamToOpenAi::new(NOW);
    let (_, r) = run(&mut s, &text[..text.len() / 2], 64);
    assert_eq!(r.unwrap_err().kind, ErrorKind::Protocol);
    assert!(!s.complete());
    assert!(s.usage().is_some(), "usage seen so far is kept");
    let mut out = Vec::new();
    let e = StreamToOpenAi::new(0)
        .feed(
            Bytes::from_static(b"event: message_start\ndata: {not json\n\n"),
            &mut out,
        )
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Protocol);
    // Unknown event and block types of later API versions are skipped.
    let mut s = StreamToOpenAi::new(0);
    s.feed(
        Bytes::from_static(b"event: brand_new\ndata: {\"type\":\"brand_new\",\"x\":1}\n\n"),
        &mut out,
    )
    .unwrap();
    assert!(out.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Adapter: errors.

#[test]
fn errors_are_classified() {
    // Error types and statuses from Anthropic's "Errors" reference.
    let body = |ty: &str, msg: &str| {
        format!(
            r#"{{"type":"error","error":{{"type":"{ty}","message":"{msg}"}},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}}"#
        )
    };
    for (status, ty, msg, kind) in [
        (
            400,
            "invalid_request_error",
            "messages: roles must alternate",
            ErrorKind::BadRequest,
        ),
        (
            400,
            "invalid_request_error",
            "prompt is too long: 208310 tokens > 200000 maximum",
            ErrorKind::ContextWindow,
        ),
        (
            400,
            "invalid_request_error",
            "input length and `max_tokens` exceed context limit: 188240 + 21333 > 200000",
            ErrorKind::ContextWindow,
        ),
        (401, "authentication_error", "invalid x-api-key", ErrorKind::Auth),
        (
            402,
            "billing_error",
            "Your credit balance is too low",
            ErrorKind::PermissionDenied,
        ),
        (
            403,
            "permission_error",
            "Your API key does not have permission to use the specified resource.",
            ErrorKind::PermissionDenied,
        ),
        (
            404,
            "not_found_error",
            "The requested resource could not be found.",
            ErrorKind::NotFound,
        ),
        (
            413,
            "request_too_large",
            "Request exceeds the maximum allowed number of bytes.",
            ErrorKind::BadRequest,
        ),
        (
            429,
            "rate_limit_error",
            "Number of request tokens has exceeded your per-minute rate limit",
            ErrorKind::RateLimit,
        ),
        (500, "api_error", "Internal server error", ErrorKind::Server),
        (504, "timeout_error", "Request timed out", ErrorKind::Timeout),
        (529, "overloaded_error", "Overloaded", ErrorKind::Server),
        (418, "teapot_error", "new type", ErrorKind::Server),
    ] {
        let e = ANTHROPIC.error(status, &HeaderMap::new(), body(ty, msg).as_bytes());
        assert_eq!(
            (e.kind, e.status, e.code.as_deref(), e.message.as_str()),
            (kind, Some(status), Some(ty), msg),
            "{ty}"
        );
    }
    let mut h = HeaderMap::new();
    h.insert("retry-after", HeaderValue::from_static("12"));
    let e = ANTHROPIC.error(429, &h, body("rate_limit_error", "slow down").as_bytes());
    assert_eq!(e.retry_after, Some(std::time::Duration::from_secs(12)));
    let e = ANTHROPIC.error(502, &HeaderMap::new(), b"<html>Bad Gateway</html>");
    assert_eq!(
        (e.kind, e.message.as_str(), e.code),
        (ErrorKind::Server, "upstream answered HTTP 502", None)
    );
}

// ---------------------------------------------------------------------------------------------
// Ingress.

#[test]
fn ingress_request_is_translated() {
    let openai = ingress::request_to_openai(&json_fixture("ingress_request.json")).unwrap();
    insta::assert_json_snapshot!("ingress_request", openai);
}

#[test]
fn ingress_request_round_trips() {
    // Anthropic -> OpenAI -> Anthropic keeps system, messages, tools and the parameters.
    let original = json_fixture("ingress_request.json");
    let openai = ingress::request_to_openai(&original).unwrap();
    let back = request_body(&openai, "claude-sonnet-4-5", false, true).unwrap();
    assert_eq!(Value::Object(back), Value::Object(original));

    // So does the simplest request.
    let simple: Json = serde_json::from_value(json!({
        "model": "claude-haiku-4-5", "max_tokens": 256,
        "messages": [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi"}, {"role": "user", "content": "Bye"}],
    }))
    .unwrap();
    let back = request_body(
        &ingress::request_to_openai(&simple).unwrap(),
        "claude-haiku-4-5",
        false,
        false,
    )
    .unwrap();
    assert_eq!(back, simple);
}

#[test]
fn ingress_request_edges() {
    // cache_control is a hint OpenAI-format backends would refuse: dropped. Thinking and top_k
    // pass on for Anthropic backends.
    let req: Json = serde_json::from_value(json!({
        "model": "claude-sonnet-4-5", "max_tokens": 2048, "top_k": 40,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "system": [{"type": "text", "text": "A"}, {"type": "text", "text": "B", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Read", "cache_control": {"type": "ephemeral"}}, {"type": "document", "title": "a.pdf", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}}]},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "sig"}, {"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "ok"}], "is_error": true}]},
        ],
        "tool_choice": {"type": "tool", "name": "f"},
        "tools": [{"name": "f", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}}],
    }))
    .unwrap();
    let openai = Value::Object(ingress::request_to_openai(&req).unwrap());
    assert_eq!(
        openai,
        json!({
            "model": "claude-sonnet-4-5", "max_tokens": 2048, "top_k": 40,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": [
                {"role": "system", "content": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]},
                {"role": "user", "content": [{"type": "text", "text": "Read"}, {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "t", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "t", "content": [{"type": "text", "text": "ok"}]},
            ],
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        })
    );

    for (extra, param) in [
        (
            json!({"tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}]}),
            "tools[0]",
        ),
        (json!({"container": "c"}), "container"),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]}),
            "messages[0].content[0]",
        ),
        (
            json!({"messages": [{"role": "system", "content": "x"}]}),
            "messages[0].role",
        ),
        (json!({"model": null}), "model"),
        // Numbers of the wrong type (the hostile-input matrix, tests/gateway/test_hostile.py).
        (json!({"max_tokens": "many"}), "max_tokens"),
        (json!({"max_tokens": 0}), "max_tokens"),
        (json!({"max_tokens": -5}), "max_tokens"),
        (json!({"max_tokens": 1.5}), "max_tokens"),
        (json!({"temperature": "hot"}), "temperature"),
        (json!({"top_k": [1]}), "top_k"),
    ] {
        let mut req: Json = serde_json::from_value(json!({"model": "m", "max_tokens": 1, "messages": []})).unwrap();
        req.extend(extra.as_object().unwrap().clone());
        let e = ingress::request_to_openai(&req).unwrap_err();
        assert_eq!(
            (e.kind, e.param.as_deref()),
            (ErrorKind::BadRequest, Some(param)),
            "{}",
            e.message
        );
    }
}

#[test]
fn ingress_responses_are_translated() {
    let tool = ingress::response_from_openai(&fixture("openai_tool_response.json"), "claude-sonnet-4-5").unwrap();
    let tool: Value = serde_json::from_slice(&tool).unwrap();
    assert_eq!(tool["content"][0]["input"], json!({"location": "Boston, MA"}));
    insta::assert_json_snapshot!("ingress_tool_response", tool);

    let text = ingress::response_from_openai(&fixture("openai_text_response.json"), "claude-sonnet-4-5").unwrap();
    let text: Value = serde_json::from_slice(&text).unwrap();
    // OpenAI's prompt tokens include cache reads; Anthropic's input tokens do not.
    assert_eq!(
        text["usage"],
        json!({"input_tokens": 11, "cache_read_input_tokens": 8, "cache_creation_input_tokens": 0, "output_tokens": 10})
    );
    insta::assert_json_snapshot!("ingress_text_response", text);

    for (finish, stop) in [
        ("length", "max_tokens"),
        ("content_filter", "refusal"),
        ("stop", "end_turn"),
    ] {
        let body = format!(r#"{{"id":"x","choices":[{{"message":{{"content":"a"}},"finish_reason":"{finish}"}}]}}"#);
        let out: Value = serde_json::from_slice(&ingress::response_from_openai(body.as_bytes(), "m").unwrap()).unwrap();
        assert_eq!(out["stop_reason"], stop);
    }
    for body in [
        &br#"{"choices":[]}"#[..],
        b"nope",
        br#"{"choices":[{"message":{"tool_calls":[{"id":"c","function":{"name":"f","arguments":"[1"}}]}}]}"#,
    ] {
        assert_eq!(
            ingress::response_from_openai(body, "m").unwrap_err().kind,
            ErrorKind::Protocol
        );
    }
}

/// Anthropic's frames are exactly `event: <type>\ndata: <json>\n\n`, with `data.type == type`.
fn assert_anthropic_framing(bytes: &[u8]) {
    let text = std::str::from_utf8(bytes).unwrap();
    for frame in text.split_terminator("\n\n") {
        let (event, data) = frame.split_once('\n').unwrap();
        let name = event.strip_prefix("event: ").unwrap();
        let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(data["type"], name, "{frame}");
    }
}

#[test]
fn ingress_text_stream_is_translated() {
    let mut s = StreamFromOpenAi::new("claude-sonnet-4-5");
    let (out, r) = run(&mut s, &fixture("openai_text_stream.sse"), 9);
    r.unwrap();
    assert!(s.complete());
    assert_eq!(s.usage().map(|u| u.total()), Some(11));
    assert_anthropic_framing(&out);
    insta::assert_json_snapshot!("ingress_text_stream", events_json(&out));
}

#[test]
fn ingress_tool_stream_is_translated() {
    let mut s = StreamFromOpenAi::new("claude-sonnet-4-5");
    let (out, r) = run(&mut s, &fixture("openai_tool_stream.sse"), 11);
    r.unwrap();
    assert!(s.complete());
    assert_anthropic_framing(&out);
    let evs = events_json(&out);
    let args: String = evs
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["data"]["delta"]["partial_json"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"location": "Paris, France"})
    );
    insta::assert_json_snapshot!("ingress_tool_stream", evs);

    // Back through the adapter's translator: the same call comes out in OpenAI's shape.
    let mut back = StreamToOpenAi::new(NOW);
    let (openai, r) = run(&mut back, &out, 13);
    r.unwrap();
    let chunks: Vec<Value> = events(&openai)
        .into_iter()
        .filter(|e| e.data != "[DONE]")
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    let first = chunks
        .iter()
        .find_map(|c| c["choices"][0]["delta"].get("tool_calls"))
        .unwrap();
    assert_eq!(first[0]["id"], "call_DdmO9pD3xa9XTPNJ32zg2hcA");
    let again: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(again, args);
    assert_eq!(back.usage(), s.usage());
}

#[test]
fn ingress_stream_edges() {
    // No [DONE] after the finish reason: finished at the end of the body.
    let body = b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":\"length\"}]}\n\n";
    let mut s = StreamFromOpenAi::new("m");
    let (out, r) = run(&mut s, body, 4);
    r.unwrap();
    assert!(s.complete());
    let evs = events_json(&out);
    let names: Vec<&str> = evs
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(evs[4]["data"]["delta"]["stop_reason"], "max_tokens");

    // Cut before any finish: incomplete. An error chunk is the backend's error.
    let mut s = StreamFromOpenAi::new("m");
    let (_, r) = run(
        &mut s,
        b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n",
        100,
    );
    assert_eq!(r.unwrap_err().kind, ErrorKind::Protocol);
    let mut out = Vec::new();
    let e = StreamFromOpenAi::new("m")
        .feed(Bytes::from_static(b"data: {\"error\":{\"message\":\"Rate limit reached\",\"type\":\"requests\",\"code\":\"rate_limit_exceeded\"}}\n\n"), &mut out)
        .unwrap_err();
    assert_eq!(e.message, "Rate limit reached");
    assert!(out.is_empty());
}

#[test]
fn ingress_error_bodies() {
    for (kind, status, ty) in [
        (ErrorKind::BadRequest, 400, "invalid_request_error"),
        (ErrorKind::ContextWindow, 400, "invalid_request_error"),
        (ErrorKind::RateLimit, 429, "rate_limit_error"),
        (ErrorKind::Timeout, 504, "timeout_error"),
        (ErrorKind::Auth, 502, "api_error"),
        (ErrorKind::Server, 502, "api_error"),
    ] {
        let (s, body) = ingress::error_body(kind, "boom");
        assert_eq!(s, status);
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap(),
            json!({"type": "error", "error": {"type": ty, "message": "boom"}})
        );
    }
    let ev = ingress::error_event(ErrorKind::Server, "Overloaded");
    assert_eq!(
        &ev[..],
        &b"event: error\ndata: {\"error\":{\"message\":\"Overloaded\",\"type\":\"api_error\"},\"type\":\"error\"}\n\n"
            [..]
    );
}

#[test]
fn huge_usage_counts_saturate() {
    let max = u64::MAX;
    let body = format!(
        r#"{{"id":"m","model":"c","content":[],"stop_reason":"end_turn","usage":{{"input_tokens":{max},"cache_creation_input_tokens":{max},"cache_read_input_tokens":{max},"output_tokens":{max}}}}}"#
    );
    let out = response_to_openai(body.as_bytes(), 0).unwrap();
    let u = out.usage.unwrap();
    assert_eq!((u.prompt_tokens, u.completion_tokens, u.total()), (max, max, max));
    let v: Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(v["usage"]["total_tokens"], json!(max));
}

#[test]
fn cache_writes_and_reasoning_reach_both_client_formats() {
    // Anthropic usage shape from the API reference, "Messages" (`usage.input_tokens`,
    // `cache_creation_input_tokens`, `cache_read_input_tokens`, `output_tokens`): input_tokens
    // exclude the cache reads and writes.
    let out = response_to_openai(
        br#"{"id":"m","model":"c","content":[],"stop_reason":"end_turn","usage":{"input_tokens":50,"cache_creation_input_tokens":1000,"cache_read_input_tokens":2000,"output_tokens":30}}"#,
        0,
    )
    .unwrap();
    let u = out.usage.unwrap();
    assert_eq!(
        (
            u.prompt_tokens,
            u.cached_tokens,
            u.cache_write_tokens,
            u.completion_tokens
        ),
        (3050, 2000, 1000, 30)
    );
    let body: Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 3050, "completion_tokens": 30, "total_tokens": 3080, "prompt_tokens_details": {"cached_tokens": 2000, "cache_write_tokens": 1000}})
    );
    // Back to an Anthropic client (the ingress): input_tokens exclude the cache again, the write
    // is cache_creation_input_tokens.
    let openai = json!({
        "id": "c", "object": "chat.completion", "created": 0, "model": "gpt",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3050, "completion_tokens": 30, "total_tokens": 3080,
                  "prompt_tokens_details": {"cached_tokens": 2000, "cache_write_tokens": 1000},
                  "completion_tokens_details": {"reasoning_tokens": 12}},
    });
    let native: Value =
        serde_json::from_slice(&ingress::response_from_openai(openai.to_string().as_bytes(), "m").unwrap()).unwrap();
    assert_eq!(
        native["usage"],
        json!({"input_tokens": 50, "cache_creation_input_tokens": 1000, "cache_read_input_tokens": 2000, "output_tokens": 30,
               "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 0}})
    );
}

#[test]
fn one_hour_cache_writes_are_read_and_carried_to_both_client_formats() {
    let out = parse("cache_1h_usage_response.json");
    let u = out.usage.unwrap();
    assert_eq!(
        (
            u.prompt_tokens,
            u.cached_tokens,
            u.cache_write_tokens,
            u.cache_write_1h_tokens,
            u.completion_tokens
        ),
        (2048 + 1800 + 248, 1800, 248, 100, 503)
    );
    // Through the gateway's OpenAI-shaped body (its extension fields) and back to an Anthropic
    // client: the split survives.
    let body: Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(
        body["usage"]["prompt_tokens_details"],
        json!({"cached_tokens": 1800, "cache_write_tokens": 248, "cache_write_1h_tokens": 100})
    );
    let mut openai = json!({
        "id": "c", "object": "chat.completion", "created": 0, "model": "claude",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    });
    openai["usage"] = body["usage"].clone();
    let native: Value =
        serde_json::from_slice(&ingress::response_from_openai(openai.to_string().as_bytes(), "m").unwrap()).unwrap();
    assert_eq!(
        native["usage"],
        json!({"input_tokens": 2048, "cache_creation_input_tokens": 248, "cache_read_input_tokens": 1800, "output_tokens": 503,
               "cache_creation": {"ephemeral_5m_input_tokens": 148, "ephemeral_1h_input_tokens": 100}})
    );
}

#[test]
fn a_streams_one_hour_cache_writes_are_read_from_message_start() {
    let events = concat!(
        "event: message_start\n",
        r#"data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":2048,"cache_creation_input_tokens":248,"cache_read_input_tokens":1800,"cache_creation":{"ephemeral_5m_input_tokens":148,"ephemeral_1h_input_tokens":100},"output_tokens":1}}}"#,
        "\n\n",
        "event: message_delta\n",
        r#"data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":503}}"#,
        "\n\n",
        "event: message_stop\n",
        r#"data: {"type":"message_stop"}"#,
        "\n\n",
    );
    let mut s = StreamToOpenAi::new(NOW);
    let (_, r) = run(&mut s, events.as_bytes(), 5);
    r.unwrap();
    let u = s.usage().unwrap();
    assert_eq!(
        (
            u.prompt_tokens,
            u.cache_write_tokens,
            u.cache_write_1h_tokens,
            u.completion_tokens
        ),
        (4096, 248, 100, 503)
    );
}

#[test]
fn sampling_numbers_are_brought_into_claudes_range() {
    // OpenAI takes temperature up to 2; Claude refuses anything above 1.
    let req: Json = serde_json::from_value(json!({
        "model": "m", "temperature": 1.5, "top_p": 1, "messages": [{"role": "user", "content": "hi"}]
    }))
    .unwrap();
    let out = request_body(&req, "claude-sonnet-4-5", false, false).unwrap();
    assert_eq!(out["temperature"], json!(1.0));
    assert_eq!(out["top_p"], json!(1));
    let req: Json = serde_json::from_value(json!({
        "model": "m", "temperature": 0.3, "messages": [{"role": "user", "content": "hi"}]
    }))
    .unwrap();
    assert_eq!(
        request_body(&req, "claude-sonnet-4-5", false, false).unwrap()["temperature"],
        json!(0.3)
    );
}
