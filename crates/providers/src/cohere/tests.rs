//! Golden tests: OpenAI-shaped requests translated for Cohere's v2 API, and Cohere responses,
//! streams, embeddings and errors translated back. Fixtures live in `testdata/cohere/`, each
//! naming its source in `_source`.

use std::collections::BTreeMap;

use super::*;
use switchyard_config::{
    CircuitBreakerConfig, LimitsConfig, ProviderConfig, ProviderKind, ProviderTimeoutsConfig, SecretString,
};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/testdata/cohere/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn request(name: &str) -> Json {
    let mut v: Json = serde_json::from_slice(&fixture(name)).unwrap();
    v.remove("_source");
    v
}

fn provider() -> ProviderConfig {
    ProviderConfig {
        id: "default/cohere".into(),
        kind: ProviderKind::Cohere,
        base_url: "https://api.cohere.com".into(),
        credentials: Some(CredentialsConfig::ApiKey {
            key: SecretString::new("co-test"),
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

fn target<'a>(p: &'a ProviderConfig, model: &'a str) -> Target<'a> {
    Target {
        provider: p,
        model,
        drop_unsupported_params: false,
        // 2025-01-01T00:00:00Z.
        now: std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_735_689_600),
        bearer: None,
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

fn translate(t: &Target<'_>, pieces: &[&[u8]]) -> (Vec<Bytes>, Option<Usage>) {
    let mut s = COHERE.stream(Operation::Chat, t);
    let mut out = Vec::new();
    for p in pieces {
        s.feed(Bytes::copy_from_slice(p), &mut out).unwrap();
    }
    assert!(s.complete());
    s.finish(&mut out).unwrap();
    (out, s.usage())
}

/// The stream translated whole, and identically when cut at every byte boundary and when fed one
/// byte at a time.
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
fn chat_request() {
    let p = provider();
    let req = COHERE
        .build(
            Operation::Chat,
            &request("chat_request.json"),
            &target(&p, "command-a-vision-07-2025"),
            false,
        )
        .unwrap();
    insta::assert_json_snapshot!("cohere_chat_request", snapshot(&req));
}

#[test]
fn tool_turn_stream_request() {
    let p = provider();
    let req = COHERE
        .build(
            Operation::Chat,
            &request("chat_request_tool_turn.json"),
            &target(&p, "command-a-03-2025"),
            true,
        )
        .unwrap();
    insta::assert_json_snapshot!("cohere_tool_turn_stream_request", snapshot(&req));
}

#[test]
fn base_urls_with_a_version_are_accepted() {
    let mut p = provider();
    for base in [
        "https://api.cohere.com/",
        "https://api.cohere.com/v1",
        "https://api.cohere.com/v2",
    ] {
        p.base_url = base.into();
        let req = COHERE
            .build(
                Operation::Chat,
                &request("chat_request.json"),
                &target(&p, "command-a-03-2025"),
                false,
            )
            .unwrap();
        assert_eq!(req.url, "https://api.cohere.com/v2/chat", "{base}");
    }
}

#[test]
fn unsupported_parameters_fail_unless_dropped() {
    let p = provider();
    let mut r = request("chat_request.json");
    r.insert("n".into(), json!(3));
    let err = COHERE
        .build(Operation::Chat, &r, &target(&p, "command-a-03-2025"), false)
        .unwrap_err();
    assert_eq!((err.kind, err.param.as_deref()), (ErrorKind::BadRequest, Some("n")));
    let t = Target {
        drop_unsupported_params: true,
        ..target(&p, "command-a-03-2025")
    };
    let req = COHERE.build(Operation::Chat, &r, &t, false).unwrap();
    assert!(!serde_json::from_slice::<Value>(&req.body)
        .unwrap()
        .as_object()
        .unwrap()
        .contains_key("n"));
    // Cohere's own fields pass through.
    r.insert("safety_mode".into(), json!("STRICT"));
    let req = COHERE.build(Operation::Chat, &r, &t, false).unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&req.body).unwrap()["safety_mode"],
        "STRICT"
    );
}

#[test]
fn legacy_completions_are_refused() {
    let p = provider();
    let err = COHERE
        .build(
            Operation::Responses,
            &Json::new(),
            &target(&p, "command-a-03-2025"),
            false,
        )
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::BadRequest);
}

// --- Responses ------------------------------------------------------------------------------

#[test]
fn text_response() {
    let p = provider();
    let out = COHERE
        .parse(
            Operation::Chat,
            &fixture("chat_response_text.json"),
            &target(&p, "command-a-03-2025"),
        )
        .unwrap();
    assert_eq!(
        out.usage,
        Some(Usage {
            prompt_tokens: 5,
            completion_tokens: 24,
            cached_tokens: 0,
            cache_write_tokens: 0,
            cache_write_1h_tokens: 0,
            reasoning_tokens: 0
        })
    );
    insta::assert_json_snapshot!("cohere_text_response", body(&out));
}

#[test]
fn tool_call_response() {
    let p = provider();
    let out = COHERE
        .parse(
            Operation::Chat,
            &fixture("chat_response_tool_call.json"),
            &target(&p, "command-a-03-2025"),
        )
        .unwrap();
    assert_eq!(out.usage.map(|u| (u.prompt_tokens, u.cached_tokens)), Some((37, 768)));
    insta::assert_json_snapshot!("cohere_tool_call_response", body(&out));
}

#[test]
fn finish_reasons() {
    let p = provider();
    let t = target(&p, "command-a-03-2025");
    let with = |reason: &str| {
        let mut v: Value = serde_json::from_slice(&fixture("chat_response_text.json")).unwrap();
        v["finish_reason"] = reason.into();
        COHERE
            .parse(Operation::Chat, v.to_string().as_bytes(), &t)
            .map(|o| body(&o)["choices"][0]["finish_reason"].clone())
    };
    assert_eq!(with("MAX_TOKENS").unwrap(), "length");
    assert_eq!(with("STOP_SEQUENCE").unwrap(), "stop");
    assert_eq!(with("ERROR").unwrap_err().kind, ErrorKind::Server);
}

/// Found by `scripts/fuzz.sh` (target `response_cohere`): token counts beyond u64 (here a
/// 74-digit `input_tokens`, with `billed_units` misspelt so the raw count is used) saturate
/// instead of overflowing the total (a panic in debug builds, a wrapped total in release).
#[test]
fn huge_token_counts_saturate() {
    let p = provider();
    let t = target(&p, "command-a-03-2025");
    let mut v: Value = serde_json::from_slice(&fixture("chat_response_text.json")).unwrap();
    v["usage"] = serde_json::from_str(
        r#"{"billed_units": {"input_tgkens": 0, "output_tokens": 24},
            "tokens": {"input_tokens": 75555555555555555555555555555555555555555555555555555555555555555555555551, "output_tokens": 24}}"#,
    )
    .unwrap();
    let out = COHERE.parse(Operation::Chat, v.to_string().as_bytes(), &t).unwrap();
    let usage = out.usage.unwrap();
    assert_eq!(usage.prompt_tokens, u64::MAX);
    assert_eq!(usage.total(), u64::MAX);
    assert_eq!(body(&out)["usage"]["total_tokens"], u64::MAX);
}

// --- Streams --------------------------------------------------------------------------------

#[test]
fn text_stream() {
    let p = provider();
    let (events, usage) = translate_every_split(&target(&p, "command-a-03-2025"), &fixture("stream_text.sse"));
    assert_eq!(
        usage,
        Some(Usage {
            prompt_tokens: 5,
            completion_tokens: 9,
            cached_tokens: 0,
            cache_write_tokens: 0,
            cache_write_1h_tokens: 0,
            reasoning_tokens: 0
        })
    );
    insta::assert_json_snapshot!("cohere_text_stream", events);
}

#[test]
fn tool_call_stream() {
    let p = provider();
    let (events, usage) = translate_every_split(&target(&p, "command-a-03-2025"), &fixture("stream_tool_call.sse"));
    assert_eq!(usage.map(|u| u.total()), Some(65));
    insta::assert_json_snapshot!("cohere_tool_call_stream", events);
}

#[test]
fn a_stream_cut_before_message_end_is_incomplete() {
    let p = provider();
    let sse = fixture("stream_text.sse");
    let cut = sse.len() - 40;
    let mut s = COHERE.stream(Operation::Chat, &target(&p, "command-a-03-2025"));
    let mut out = Vec::new();
    s.feed(Bytes::copy_from_slice(&sse[..cut]), &mut out).unwrap();
    assert!(!s.complete());
    assert_eq!(s.finish(&mut out).unwrap_err().kind, ErrorKind::Protocol);
    let mut s = COHERE.stream(Operation::Chat, &target(&p, "command-a-03-2025"));
    assert_eq!(
        s.feed(Bytes::from_static(b"event: content-delta\ndata: {nope\n\n"), &mut out)
            .unwrap_err()
            .kind,
        ErrorKind::Protocol
    );
}

// --- Embeddings -----------------------------------------------------------------------------

#[test]
fn embeddings() {
    let p = provider();
    let t = target(&p, "embed-v4.0");
    let r: Json = serde_json::from_value(json!({"model": "text-embedding-3-small", "input": ["hello", "goodbye"], "dimensions": 256, "encoding_format": "base64"})).unwrap();
    let req = COHERE.build(Operation::Embeddings, &r, &t, false).unwrap();
    insta::assert_json_snapshot!("cohere_embed_request", snapshot(&req));
    let out = COHERE
        .parse(Operation::Embeddings, &fixture("embed_response.json"), &t)
        .unwrap();
    assert_eq!(out.usage.map(|u| u.prompt_tokens), Some(2));
    insta::assert_json_snapshot!("cohere_embed_response", body(&out));
    let one: Json = serde_json::from_value(json!({"input": "hello", "input_type": "search_query"})).unwrap();
    let req = COHERE.build(Operation::Embeddings, &one, &t, false).unwrap();
    let b: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(
        (b["texts"].clone(), b["input_type"].clone()),
        (json!(["hello"]), json!("search_query"))
    );
}

// --- Errors ---------------------------------------------------------------------------------

#[test]
fn errors_are_classified() {
    // Bodies as in Cohere's "Errors" reference.
    let mut h = HeaderMap::new();
    h.insert("retry-after", HeaderValue::from_static("1"));
    let e = cohere_error(429, &h, br#"{"id":"2b6a7f1e-2b7e-4d8a-9f0e-5a0c0a7b9c11","message":"You are using a Trial key, which is limited to 10 API calls / minute."}"#);
    assert_eq!(
        (e.kind, e.retry_after),
        (ErrorKind::RateLimit, Some(std::time::Duration::from_secs(1)))
    );
    let e = cohere_error(400, &HeaderMap::new(), br#"{"id":"a","message":"too many tokens: total number of tokens in the prompt cannot exceed 256000 - received 256112. Try using a shorter prompt, or enabling prompt truncating."}"#);
    assert_eq!(e.kind, ErrorKind::ContextWindow);
    let e = cohere_error(400, &HeaderMap::new(), br#"{"id":"a","message":"invalid request: message must be at least 1 token long or tool results must be specified."}"#);
    assert_eq!(e.kind, ErrorKind::BadRequest);
    assert_eq!(
        cohere_error(401, &HeaderMap::new(), br#"{"message":"invalid api token"}"#).kind,
        ErrorKind::Auth
    );
    assert_eq!(
        cohere_error(498, &HeaderMap::new(), br#"{"message":"invalid api token"}"#).kind,
        ErrorKind::Auth
    );
    assert_eq!(
        cohere_error(404, &HeaderMap::new(), br#"{"message":"model 'command-z' not found"}"#).kind,
        ErrorKind::NotFound
    );
    let e = cohere_error(
        500,
        &HeaderMap::new(),
        br#"{"message":"internal server error, this has been reported to our developers"}"#,
    );
    assert_eq!(
        (e.kind, e.message.as_str()),
        (
            ErrorKind::Server,
            "internal server error, this has been reported to our developers"
        )
    );
    let e = cohere_error(503, &HeaderMap::new(), b"upstream connect error");
    assert_eq!(
        (e.kind, e.message.as_str()),
        (ErrorKind::Server, "upstream answered HTTP 503")
    );
}

#[test]
fn sampling_numbers_are_brought_into_cohere_ranges() {
    // Cohere's `p` is 0.01..=0.99: OpenAI's default `top_p: 1` would be refused.
    let p = provider();
    let req: Json = serde_json::from_value(serde_json::json!({
        "model": "m", "top_p": 1, "temperature": 1.5, "frequency_penalty": -0.5, "presence_penalty": 1.5,
        "messages": [{"role": "user", "content": "hi"}]
    }))
    .unwrap();
    let out = COHERE
        .build(Operation::Chat, &req, &target(&p, "command-a-03-2025"), false)
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(body["p"], serde_json::json!(0.99));
    assert_eq!(body["temperature"], serde_json::json!(1.5));
    // Its penalties are 0..=1, OpenAI's -2..=2.
    assert_eq!(body["frequency_penalty"], serde_json::json!(0.0));
    assert_eq!(body["presence_penalty"], serde_json::json!(1.0));
}
