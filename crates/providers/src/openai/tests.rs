//! Golden tests: fixtures from the OpenAI and Azure OpenAI API references (see `_source` in each
//! fixture), one snapshot per target.

use super::*;
use switchyard_config::{CircuitBreakerConfig, LimitsConfig, ProviderConfig, ProviderTimeoutsConfig, SecretString};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/testdata/openai/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn request() -> Json {
    let mut v: Json = serde_json::from_slice(&fixture("chat_request.json")).unwrap();
    v.remove("_source");
    v
}

fn provider(kind: ProviderKind, base: &str) -> ProviderConfig {
    ProviderConfig {
        id: "default/p".into(),
        kind,
        base_url: base.into(),
        credentials: Some(CredentialsConfig::ApiKey {
            key: SecretString::new("sk-test"),
        }),
        region: None,
        api_version: (kind == ProviderKind::AzureOpenai).then(|| "2024-10-21".into()),
        project: None,
        headers: Default::default(),
        quota: LimitsConfig::default(),
        timeouts: ProviderTimeoutsConfig::default(),
        circuit_breaker: CircuitBreakerConfig::default(),
        mock: None,
        http_version: Default::default(),
    }
}

fn snapshot(req: &UpstreamRequest) -> serde_json::Value {
    let headers: std::collections::BTreeMap<String, String> = req
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    serde_json::json!({
        "method": req.method.as_str(),
        "url": req.url,
        "headers": headers,
        "body": serde_json::from_slice::<serde_json::Value>(&req.body).unwrap(),
    })
}

#[test]
fn openai_chat_request() {
    let p = provider(ProviderKind::Openai, "https://api.openai.com/v1");
    let t = Target {
        provider: &p,
        model: "gpt-4o-2024-08-06",
        drop_unsupported_params: false,
        now: std::time::UNIX_EPOCH,
        bearer: None,
    };
    let req = OPENAI.build(Operation::Chat, &request(), &t, true).unwrap();
    insta::assert_json_snapshot!("openai_chat_stream_request", snapshot(&req));
}

#[test]
fn azure_chat_request() {
    let p = provider(ProviderKind::AzureOpenai, "https://contoso.openai.azure.com");
    let t = Target {
        provider: &p,
        model: "my-gpt4o-deployment",
        drop_unsupported_params: false,
        now: std::time::UNIX_EPOCH,
        bearer: None,
    };
    let req = AZURE.build(Operation::Chat, &request(), &t, false).unwrap();
    insta::assert_json_snapshot!("azure_chat_request", snapshot(&req));
}

#[test]
fn azure_developer_role_follows_the_api_version() {
    let role_sent = |version: &str| {
        let mut p = provider(ProviderKind::AzureOpenai, "https://contoso.openai.azure.com");
        p.api_version = Some(version.into());
        let t = Target {
            provider: &p,
            model: "my-o1-deployment",
            drop_unsupported_params: false,
            now: std::time::UNIX_EPOCH,
            bearer: None,
        };
        let req = AZURE.build(Operation::Chat, &request(), &t, false).unwrap();
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        body["messages"][0]["role"].as_str().unwrap().to_owned()
    };
    // Before 2024-12-01-preview Azure refuses `developer`: it goes as `system`.
    assert_eq!(role_sent("2024-10-21"), "system");
    assert_eq!(role_sent("2024-10-01-preview"), "system");
    assert_eq!(role_sent("2024-06-01"), "system");
    // From it on, and on the undated v1 versions, it goes as it came.
    assert_eq!(role_sent("2024-12-01-preview"), "developer");
    assert_eq!(role_sent("2025-04-01-preview"), "developer");
    assert_eq!(role_sent("preview"), "developer");
    // OpenAI itself takes it.
    let p = provider(ProviderKind::Openai, "https://api.openai.com/v1");
    let t = Target {
        provider: &p,
        model: "o1",
        drop_unsupported_params: false,
        now: std::time::UNIX_EPOCH,
        bearer: None,
    };
    let req = OPENAI.build(Operation::Chat, &request(), &t, false).unwrap();
    let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(body["messages"][0]["role"], "developer");
}

#[test]
fn claude_only_parameters_are_unsupported_where_the_api_refuses_unknown_fields() {
    let mut req = request();
    req.insert("top_k".into(), 40.into());
    req.insert(
        "thinking".into(),
        serde_json::json!({"type": "enabled", "budget_tokens": 1024}),
    );
    for (kind, preset, base) in [
        (ProviderKind::Openai, &OPENAI, "https://api.openai.com/v1"),
        (ProviderKind::AzureOpenai, &AZURE, "https://contoso.openai.azure.com"),
    ] {
        let p = provider(kind, base);
        let mut t = Target {
            provider: &p,
            model: "gpt-4o",
            drop_unsupported_params: false,
            now: std::time::UNIX_EPOCH,
            bearer: None,
        };
        let err = preset.build(Operation::Chat, &req, &t, false).unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadRequest);
        assert!(
            err.message.contains("`top_k`") || err.message.contains("`thinking`"),
            "{}",
            err.message
        );
        t.drop_unsupported_params = true;
        let body: serde_json::Value =
            serde_json::from_slice(&preset.build(Operation::Chat, &req, &t, false).unwrap().body).unwrap();
        assert!(body.get("top_k").is_none() && body.get("thinking").is_none());
    }
    // vLLM takes top_k: passed on.
    let p = provider(ProviderKind::Vllm, "http://vllm:8000/v1");
    let t = Target {
        provider: &p,
        model: "llama",
        drop_unsupported_params: false,
        now: std::time::UNIX_EPOCH,
        bearer: None,
    };
    let body: serde_json::Value =
        serde_json::from_slice(&VLLM.build(Operation::Chat, &req, &t, false).unwrap().body).unwrap();
    assert_eq!(body["top_k"], 40);
}

#[test]
fn response_usage_is_read_and_bytes_pass_through() {
    let p = provider(ProviderKind::Openai, "https://api.openai.com/v1");
    let t = Target {
        provider: &p,
        model: "gpt-4o",
        drop_unsupported_params: false,
        now: std::time::UNIX_EPOCH,
        bearer: None,
    };
    let body = fixture("chat_response.json");
    let out = OPENAI.parse(Operation::Chat, &body, &t).unwrap();
    assert_eq!(out.body.as_ref(), body.as_slice());
    assert_eq!(
        out.usage,
        Some(Usage {
            prompt_tokens: 19,
            completion_tokens: 10,
            cached_tokens: 0,
            cache_write_tokens: 0,
            cache_write_1h_tokens: 0,
            reasoning_tokens: 0
        })
    );
}

#[test]
fn stream_usage_and_done_are_observed() {
    let mut s = Passthrough::default();
    let mut out = Vec::new();
    let part1 = Bytes::from_static(b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,");
    let part2 = Bytes::from_static(b"\"completion_tokens\":1,\"total_tokens\":6}}\n\ndata: [DONE]\n\n");
    s.feed(part1.clone(), &mut out).unwrap();
    assert!(!s.complete());
    s.feed(part2.clone(), &mut out).unwrap();
    s.finish(&mut out).unwrap();
    assert_eq!(out, vec![part1, part2]);
    assert_eq!(s.usage().map(|u| u.total()), Some(6));
    assert!(s.complete());
}

#[test]
fn only_the_event_that_reports_usage_is_read_for_it() {
    // OpenAI's chunks when usage was asked for: `"usage":null` until the last (API reference,
    // "The chat completion chunk object").
    assert_eq!(
        reports_usage(br#"{"choices":[{"delta":{"content":"Hi"}}],"usage":null}"#),
        Some(false)
    );
    assert_eq!(
        reports_usage(br#"{"choices":[],"usage" : { "prompt_tokens":5}}"#),
        Some(true)
    );
    assert_eq!(reports_usage(br#"{"choices":[{"delta":{"content":"Hi"}}]}"#), None);
    // A nested `null` does not hide a top-level usage after it; a value that is not a key is read
    // as before.
    assert_eq!(
        reports_usage(br#"{"x":{"usage":null},"usage":{"prompt_tokens":1}}"#),
        Some(true)
    );
    assert_eq!(reports_usage(br#"{"type":"usage"}"#), Some(true));

    let mut s = Passthrough::default();
    let mut out = Vec::new();
    let chunks = Bytes::from_static(
        b"data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n\
          data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1,\"prompt_tokens_details\":{\"cached_tokens\":2}}}\n\n\
          data: [DONE]\n\n",
    );
    s.feed(chunks, &mut out).unwrap();
    s.finish(&mut out).unwrap();
    let u = s.usage().unwrap();
    assert_eq!((u.prompt_tokens, u.completion_tokens, u.cached_tokens), (5, 1, 2));
}

#[test]
fn cut_or_malformed_streams_are_errors() {
    let mut s = Passthrough::default();
    let mut out = Vec::new();
    s.feed(Bytes::from_static(b"data: {\"choices\":[]}\n\n"), &mut out)
        .unwrap();
    assert_eq!(s.finish(&mut out).unwrap_err().kind, ErrorKind::Protocol);
    let mut s = Passthrough::default();
    assert_eq!(
        s.feed(Bytes::from_static(b"data: {not json\n\n"), &mut out)
            .unwrap_err()
            .kind,
        ErrorKind::Protocol
    );
}

#[test]
fn nothing_is_released_before_the_first_whole_event() {
    // An upstream that answers a stream request with JSON, garbage or one endless line: the
    // client must get a 502, not a `200` stream of whatever came (the hostile-input matrix,
    // tests/gateway/test_hostile.py).
    let mut s = Passthrough::default();
    let mut out = Vec::new();
    s.feed(Bytes::from_static(b"{\"choices\": 5, \"usage\": \"many\"}"), &mut out)
        .unwrap();
    assert!(out.is_empty());
    assert_eq!(s.finish(&mut out).unwrap_err().kind, ErrorKind::Protocol);
    assert!(out.is_empty());

    let mut s = Passthrough::default();
    let line = Bytes::from(vec![b'a'; 64 * 1024]);
    s.feed(Bytes::from_static(b"data: "), &mut out).unwrap();
    let err = (0..64).find_map(|_| s.feed(line.clone(), &mut out).err()).unwrap();
    assert_eq!(err.kind, ErrorKind::Protocol);
    assert!(out.is_empty());

    // Comments alone are held too, and bounded.
    let mut s = Passthrough::default();
    let comments = Bytes::from(b": keep-alive\n\n".repeat(4096));
    let err = (0..64).find_map(|_| s.feed(comments.clone(), &mut out).err()).unwrap();
    assert_eq!(err.kind, ErrorKind::Protocol);
    assert!(out.is_empty());

    // The first event split across chunks: both are released, in order, once it is whole.
    let mut s = Passthrough::default();
    let (a, b) = (
        Bytes::from_static(b": hello\n\ndata: {\"choices\":"),
        Bytes::from_static(b"[]}\n\ndata: [DONE]\n\n"),
    );
    s.feed(a.clone(), &mut out).unwrap();
    assert!(out.is_empty());
    s.feed(b.clone(), &mut out).unwrap();
    s.finish(&mut out).unwrap();
    assert_eq!(out, vec![a, b]);
}

#[test]
fn errors_are_classified() {
    // Error bodies as documented in OpenAI's "Error codes" guide.
    let mut h = HeaderMap::new();
    h.insert("retry-after", HeaderValue::from_static("7"));
    let e = openai_error(429, &h, br#"{"error":{"message":"Rate limit reached for gpt-4o","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#);
    assert_eq!(
        (e.kind, e.retry_after),
        (ErrorKind::RateLimit, Some(std::time::Duration::from_secs(7)))
    );
    let e = openai_error(400, &HeaderMap::new(), br#"{"error":{"message":"This model's maximum context length is 128000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#);
    assert_eq!(e.kind, ErrorKind::ContextWindow);
    assert_eq!(e.param.as_deref(), Some("messages"));
    let e = openai_error(400, &HeaderMap::new(), br#"{"error":{"message":"Your request was rejected as a result of our safety system.","type":"invalid_request_error","param":null,"code":"content_policy_violation"}}"#);
    assert_eq!(e.kind, ErrorKind::ContentPolicy);
    let e = openai_error(503, &HeaderMap::new(), b"<html>bad gateway</html>");
    assert_eq!(
        (e.kind, e.message.as_str()),
        (ErrorKind::Server, "upstream answered HTTP 503")
    );
}

#[test]
fn usage_details_are_read_from_responses_and_streams() {
    // Usage shape from OpenAI's API reference, "The chat completion object" (`usage`,
    // `prompt_tokens_details.cached_tokens`, `completion_tokens_details.reasoning_tokens`), with
    // non-zero counts.
    let usage = r#"{"prompt_tokens":2006,"completion_tokens":300,"total_tokens":2306,"prompt_tokens_details":{"cached_tokens":1920,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":192,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}"#;
    let expected = Usage {
        prompt_tokens: 2006,
        completion_tokens: 300,
        cached_tokens: 1920,
        cache_write_tokens: 0,
        cache_write_1h_tokens: 0,
        reasoning_tokens: 192,
    };
    let p = provider(ProviderKind::Openai, "https://api.openai.com/v1");
    let t = Target {
        provider: &p,
        model: "o3",
        drop_unsupported_params: false,
        now: std::time::UNIX_EPOCH,
        bearer: None,
    };
    let body = format!(r#"{{"id":"c","object":"chat.completion","model":"o3","choices":[],"usage":{usage}}}"#);
    assert_eq!(
        OPENAI.parse(Operation::Chat, body.as_bytes(), &t).unwrap().usage,
        Some(expected)
    );
    let mut s = Passthrough::default();
    let mut out = Vec::new();
    let chunk = format!("data: {{\"id\":\"c\",\"choices\":[],\"usage\":{usage}}}\n\ndata: [DONE]\n\n");
    s.feed(Bytes::from(chunk), &mut out).unwrap();
    assert_eq!(s.usage(), Some(expected));
    // The gateway's own details round-trip: what it writes, it reads back.
    let written = Usage {
        cache_write_tokens: 7,
        ..expected
    };
    let body = format!(r#"{{"id":"c","choices":[],"usage":{}}}"#, written.openai_json());
    assert_eq!(
        OPENAI.parse(Operation::Chat, body.as_bytes(), &t).unwrap().usage,
        Some(written)
    );
}

/// A Responses API stream has no `[DONE]` and no top-level usage: it completes with
/// `response.completed`, whose `response.usage` is what it cost (issue 15 defect 2).
#[test]
fn responses_stream_completes_with_response_completed_and_its_usage() {
    let events = concat!(
        "event: response.created\n",
        "data: {\"type\":\"response.created\",\"response\":{\"id\":\"r\",\"status\":\"in_progress\",\"usage\":null}}\n\n",
        "event: response.output_text.delta\n",
        "data: {\"type\":\"response.output_text.delta\",\"item_id\":\"m\",\"delta\":\"Hi\"}\n\n",
        "event: response.completed\n",
        "data: {\"type\":\"response.completed\",\"response\":{\"id\":\"r\",\"status\":\"completed\",",
        "\"usage\":{\"input_tokens\":12,\"input_tokens_details\":{\"cached_tokens\":2},\"output_tokens\":5,",
        "\"output_tokens_details\":{\"reasoning_tokens\":1},\"total_tokens\":17}}}\n\n",
    );
    let p = provider(ProviderKind::Openai, "http://x");
    let t = Target {
        provider: &p,
        model: "gpt-5",
        drop_unsupported_params: false,
        now: std::time::UNIX_EPOCH,
        bearer: None,
    };
    let mut s = OPENAI.stream(Operation::Responses, &t);
    let mut out = Vec::new();
    // Split mid-event: the parser carries it over.
    let (a, b) = events.split_at(100);
    s.feed(Bytes::from(a), &mut out).unwrap();
    assert!(!s.complete());
    s.feed(Bytes::from(b), &mut out).unwrap();
    s.finish(&mut out).unwrap();
    assert!(s.complete());
    assert_eq!(out.concat(), events.as_bytes(), "forwarded unchanged");
    let u = s.usage().unwrap();
    assert_eq!(
        (
            u.prompt_tokens,
            u.completion_tokens,
            u.cached_tokens,
            u.reasoning_tokens
        ),
        (12, 5, 2, 1)
    );

    // Cut before response.completed: an error, no usage.
    let mut cut = Passthrough::responses();
    cut.feed(Bytes::from(a), &mut Vec::new()).unwrap();
    assert!(cut.finish(&mut Vec::new()).is_err());
    assert!(cut.usage().is_none() && !cut.complete());

    // A failed response fails the stream.
    let mut failed = Passthrough::responses();
    let ev = "data: {\"type\":\"response.failed\",\"response\":{\"error\":{\"code\":\"server_error\"}}}\n\n";
    assert!(failed.feed(Bytes::from(ev), &mut Vec::new()).is_err());
}

#[test]
fn the_upstream_body_is_the_clients_with_only_its_fields_changed() {
    let p = provider(ProviderKind::Openai, "https://api.openai.com/v1");
    let t = Target {
        provider: &p,
        model: "gpt-4o-2024-08-06",
        drop_unsupported_params: false,
        now: std::time::UNIX_EPOCH,
        bearer: None,
    };
    let sent = |req: &Json, stream: bool| -> String {
        String::from_utf8(OPENAI.build(Operation::Chat, req, &t, stream).unwrap().body.to_vec()).unwrap()
    };
    // Keys before, between and after the changed ones; the client's own stream_options kept.
    let req: Json = serde_json::from_str(
        r#"{"a":1,"messages":[{"role":"user","content":"hi"}],"model":"mine","n":2,
            "stream_options":{"x":true},"zz":null}"#,
    )
    .unwrap();
    assert_eq!(
        sent(&req, true),
        r#"{"a":1,"messages":[{"content":"hi","role":"user"}],"model":"gpt-4o-2024-08-06","n":2,"stream":true,"stream_options":{"include_usage":true,"x":true},"zz":null}"#
    );
    assert_eq!(
        sent(&req, false),
        r#"{"a":1,"messages":[{"content":"hi","role":"user"}],"model":"gpt-4o-2024-08-06","n":2,"stream_options":{"x":true},"zz":null}"#
    );
    // Fields added past the last key, and stream_options added when the client sent none.
    let req: Json = serde_json::from_str(r#"{"messages":[]}"#).unwrap();
    assert_eq!(
        sent(&req, true),
        r#"{"messages":[],"model":"gpt-4o-2024-08-06","stream":true,"stream_options":{"include_usage":true}}"#
    );
}

#[test]
fn the_clients_bytes_go_upstream_with_only_the_model_replaced() {
    let p = provider(ProviderKind::Openai, "https://api.openai.com/v1");
    let azure = provider(ProviderKind::AzureOpenai, "https://contoso.openai.azure.com");
    let target = |p, model| Target {
        provider: p,
        model,
        drop_unsupported_params: false,
        now: std::time::UNIX_EPOCH,
        bearer: None,
    };
    // The client's body as it wrote it: its order, spacing, escapes, a number's spelling, and
    // "model" inside a string and inside a message.
    let stream = br#"{ "stream":true, "model" :  "mine" ,"messages":[{"role":"user","content":"caf\u00e9 \"model\":\"x\"","model":"m"}],"temperature":0.50,"stream_options":{"include_usage":true}}"#;
    let start = stream.windows(6).position(|w| w == br#""mine""#).unwrap();
    let original = |bytes: &[u8]| Original::new(Bytes::copy_from_slice(bytes), start..start + 6).unwrap();
    let json = |bytes: &[u8]| -> serde_json::Value { serde_json::from_slice(bytes).unwrap() };
    let build = |adapter: &OpenAi, p, bytes: &[u8], stream: bool, spliced: bool| {
        let req: Json = serde_json::from_slice(bytes).unwrap();
        let o = original(bytes);
        let t = target(p, "gpt-4o-2024-08-06");
        adapter
            .build_from(Operation::Chat, &req, spliced.then_some(&o), &t, stream)
            .unwrap()
            .body
    };
    let replaced = |bytes: &[u8], with: &str| {
        let mut out = bytes[..start].to_vec();
        out.extend_from_slice(with.as_bytes());
        out.extend_from_slice(&bytes[start + 6..]);
        out
    };

    // Setting the model (and stream options to what they are) is the only change: the bytes go.
    let sent = build(&OPENAI, &p, stream, true, true);
    assert_eq!(sent.as_ref(), replaced(stream, r#""gpt-4o-2024-08-06""#));
    assert_eq!(json(&sent), json(&build(&OPENAI, &p, stream, true, false)));

    // A model name that needs escaping is written as JSON.
    let req: Json = serde_json::from_slice(stream).unwrap();
    let odd = target(&p, "a\"b\\c\u{1}");
    let sent = OPENAI
        .build_from(Operation::Chat, &req, Some(&original(stream)), &odd, true)
        .unwrap();
    assert_eq!(json(&sent.body)["model"], "a\"b\\c\u{1}");
    assert_eq!(json(&sent.body)["messages"], json(stream)["messages"]);

    // A field the body lacks (stream usage, asked for on every stream) is appended.
    let no_usage =
        b"{ \"stream\":true, \"model\" :  \"mine\" ,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}] }\n";
    let sent = build(&OPENAI, &p, no_usage, true, true);
    let mut expected = replaced(no_usage, r#""gpt-4o-2024-08-06""#);
    let close = expected.iter().rposition(|b| *b == b'}').unwrap();
    expected.splice(
        close..close,
        br#","stream_options":{"include_usage":true}"#.iter().copied(),
    );
    assert_eq!(String::from_utf8_lossy(&sent), String::from_utf8_lossy(&expected));
    assert_eq!(json(&sent), json(&build(&OPENAI, &p, no_usage, true, false)));

    // A field changed or removed: written out from the parsed body, as without the bytes.
    let other_options = br#"{ "stream":true, "model" :  "mine" ,"messages":[],"stream_options":{"x":1}}"#;
    let sent = build(&OPENAI, &p, other_options, true, true);
    assert_eq!(
        json(&sent)["stream_options"],
        serde_json::json!({"include_usage": true, "x": 1})
    );
    assert_eq!(sent, build(&OPENAI, &p, other_options, true, false));
    // A stream the client did not ask for (`stream` set to true).
    let whole = br#"{ "stream":false,"model" :  "mine" ,"messages":[{"role":"user","content":"hi"}]}"#;
    assert_eq!(
        build(&OPENAI, &p, whole, true, true),
        build(&OPENAI, &p, whole, true, false)
    );
    assert_eq!(json(&build(&OPENAI, &p, whole, true, true))["stream"], true);
    // Azure takes the model from the path: the body has none.
    let sent = build(&AZURE, &azure, stream, false, true);
    assert_eq!(sent, build(&AZURE, &azure, stream, false, false));
    assert!(json(&sent).get("model").is_none());
}

#[test]
fn an_original_is_refused_a_range_outside_its_bytes() {
    assert!(Original::new(Bytes::from_static(b"{}"), 1..3).is_none());
    let (start, end) = (2, 1);
    assert!(Original::new(Bytes::from_static(b"{}"), start..end).is_none());
    let o = Original::new(Bytes::from_static(br#"{"model":1}"#), 9..10).unwrap();
    assert_eq!(o.with("m", &[]), br#"{"model":"m"}"#);
    // The range must end inside the object; the object must close.
    assert!(Original::new(Bytes::from_static(br#"{"model":1}"#), 9..11).is_none());
    assert!(Original::new(Bytes::from_static(br#"{"model":1"#), 9..10).is_none());
    let o = Original::new(Bytes::from_static(b"{\"model\":1}\r\n "), 9..10).unwrap();
    let added = serde_json::json!({"a": [1]});
    assert_eq!(
        o.with("m", &[("k\"", &added)]),
        b"{\"model\":\"m\",\"k\\\"\":{\"a\":[1]}}\r\n "
    );
}
