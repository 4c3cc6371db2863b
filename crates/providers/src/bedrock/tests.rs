//! Golden tests: fixtures from the Amazon Bedrock and OpenAI API references and user guides (see
//! `_source` in each fixture), one snapshot per translation. Stream frames are encoded here with
//! aws-smithy-eventstream, as Bedrock encodes them.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use aws_smithy_types::event_stream::{Header, HeaderValue as EventValue, Message};
use http::HeaderValue;
use serde_json::{json, Value};
use switchyard_config::{
    CircuitBreakerConfig, CredentialsConfig, LimitsConfig, ProviderConfig, ProviderKind, ProviderTimeoutsConfig,
    SecretString,
};

use super::response::finish_reason;
use super::*;
use crate::Usage;

/// 2024-10-22T12:00:00Z: the signing time of every snapshot.
const NOW: u64 = 1_729_598_400;
const CLAUDE: &str = "us.anthropic.claude-3-5-sonnet-20241022-v2:0";

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/testdata/bedrock/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn json_fixture(name: &str) -> Json {
    let mut v: Json = serde_json::from_slice(&fixture(name)).unwrap();
    v.remove("_source");
    v
}

fn provider(session_token: Option<&str>) -> ProviderConfig {
    ProviderConfig {
        id: "default/bedrock".into(),
        kind: ProviderKind::Bedrock,
        base_url: "https://bedrock-runtime.us-east-1.amazonaws.com".into(),
        credentials: Some(CredentialsConfig::Aws {
            access_key_id: SecretString::new("AKIDSWITCHYARDTEST"),
            secret_access_key: SecretString::new("switchyard-test-secret"),
            session_token: session_token.map(SecretString::new),
        }),
        region: Some("us-east-1".into()),
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
        now: now(),
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

fn body_of(req: &UpstreamRequest) -> Value {
    serde_json::from_slice(&req.body).unwrap()
}

fn chat(messages: Value) -> Json {
    json!({"model": "m", "messages": messages})
        .as_object()
        .cloned()
        .unwrap()
}

// --- Requests --------------------------------------------------------------------------------

#[test]
fn chat_request_is_translated_and_signed() {
    let p = provider(None);
    let req = BEDROCK
        .build(
            Operation::Chat,
            &json_fixture("chat_request.json"),
            &target(&p, CLAUDE),
            false,
        )
        .unwrap();
    assert!(req.headers["authorization"].is_sensitive());
    assert!(!req.headers.contains_key("x-amz-security-token"));
    insta::assert_json_snapshot!("chat_request", snapshot(&req));
}

#[test]
fn stream_request_goes_to_converse_stream_with_the_session_token() {
    let p = provider(Some("switchyard-test-session-token"));
    let req = BEDROCK
        .build(
            Operation::Chat,
            &json_fixture("chat_request.json"),
            &target(&p, CLAUDE),
            true,
        )
        .unwrap();
    assert!(req
        .url
        .ends_with("/model/us.anthropic.claude-3-5-sonnet-20241022-v2%3A0/converse-stream"));
    assert!(req.headers["x-amz-security-token"].is_sensitive());
    let auth = req.headers["authorization"].to_str().unwrap();
    assert!(auth.contains("SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-amz-security-token"));
    insta::assert_json_snapshot!("chat_stream_request", snapshot(&req));
}

#[test]
fn the_signature_covers_body_and_time() {
    let p = provider(None);
    let request = json_fixture("chat_request.json");
    let sig = |t: &Target<'_>, r: &Json| {
        let req = BEDROCK.build(Operation::Chat, r, t, false).unwrap();
        req.headers["authorization"].to_str().unwrap().to_owned()
    };
    let base = sig(&target(&p, CLAUDE), &request);
    assert_eq!(base, sig(&target(&p, CLAUDE), &request));
    let later = Target {
        now: now() + Duration::from_secs(1),
        ..target(&p, CLAUDE)
    };
    assert_ne!(base, sig(&later, &request));
    let mut other = request.clone();
    other.insert("temperature".into(), json!(0.6));
    assert_ne!(base, sig(&target(&p, CLAUDE), &other));
}

#[test]
fn pass_through_requests_are_signed_by_the_adapters_own_signer() {
    let p = provider(Some("switchyard-test-session-token"));
    let t = target(&p, "");
    assert!(BEDROCK.signs_body());
    // Bedrock's own requests have no credentials without their body.
    assert!(BEDROCK.credentials(&t).is_err());
    // The same request signed as `build` signs it: the same headers, byte for byte.
    let built = BEDROCK
        .build(
            Operation::Chat,
            &json_fixture("chat_request.json"),
            &target(&p, CLAUDE),
            false,
        )
        .unwrap();
    let forwarded = Forwarded {
        method: &Method::POST,
        url: &built.url,
        content_type: Some("application/json"),
        body: &built.body,
    };
    let mut signed = BEDROCK.credentials_for(&forwarded, &t).unwrap();
    assert_eq!(signed, built.headers);
    // Any method and content type; a different body is a different signature.
    let get = Forwarded {
        method: &Method::GET,
        url: "https://bedrock-runtime.us-east-1.amazonaws.com/async-invoke?maxResults=1",
        content_type: None,
        body: b"",
    };
    let h = BEDROCK.credentials_for(&get, &t).unwrap();
    assert!(!h.contains_key("content-type"));
    let auth = h["authorization"].to_str().unwrap();
    assert!(
        auth.contains("SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token"),
        "{auth}"
    );
    let other = Forwarded {
        body: b"{}",
        ..forwarded
    };
    signed.remove("x-amz-content-sha256");
    let h = BEDROCK.credentials_for(&other, &t).unwrap();
    assert_ne!(h["authorization"], signed["authorization"]);
}

#[test]
fn unsupported_params_fail_unless_dropped() {
    let p = provider(None);
    let base = chat(json!([{"role": "user", "content": "hi"}]));
    for (key, value) in [
        ("n", json!(2)),
        ("logprobs", json!(true)),
        ("top_logprobs", json!(3)),
        ("frequency_penalty", json!(0.5)),
        ("presence_penalty", json!(-1)),
        ("seed", json!(7)),
        ("logit_bias", json!({"50256": -100})),
        ("response_format", json!({"type": "json_object"})),
    ] {
        let mut r = base.clone();
        r.insert(key.into(), value);
        let e = BEDROCK
            .build(Operation::Chat, &r, &target(&p, CLAUDE), false)
            .unwrap_err();
        assert_eq!(
            (e.kind, e.param.as_deref(), e.code.as_deref()),
            (ErrorKind::BadRequest, Some(key), Some("unsupported_parameter"))
        );
        let dropping = Target {
            drop_unsupported_params: true,
            ..target(&p, CLAUDE)
        };
        let body = body_of(&BEDROCK.build(Operation::Chat, &r, &dropping, false).unwrap());
        assert_eq!(
            body,
            json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}]}),
            "{key}"
        );
    }
    // Defaults and nulls are no request at all.
    let mut r = base.clone();
    for (k, v) in [
        ("n", json!(1)),
        ("seed", Value::Null),
        ("logprobs", json!(false)),
        ("presence_penalty", json!(0)),
    ] {
        r.insert(k.into(), v);
    }
    BEDROCK.build(Operation::Chat, &r, &target(&p, CLAUDE), false).unwrap();
}

#[test]
fn image_links_are_refused_and_data_urls_checked() {
    let p = provider(None);
    let with_image = |url: &str| {
        chat(json!([{"role": "user", "content": [
            {"type": "text", "text": "What is in this image?"},
            {"type": "image_url", "image_url": {"url": url}}
        ]}]))
    };
    let e = BEDROCK
        .build(
            Operation::Chat,
            &with_image("https://example.com/cat.png"),
            &target(&p, CLAUDE),
            false,
        )
        .unwrap_err();
    assert_eq!(
        (e.kind, e.param.as_deref()),
        (ErrorKind::BadRequest, Some("messages[0].content[1].image_url.url"))
    );
    assert!(e.message.contains("data:"), "{}", e.message);
    let e = BEDROCK
        .build(
            Operation::Chat,
            &with_image("data:image/tiff;base64,AAAA"),
            &target(&p, CLAUDE),
            false,
        )
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadRequest);
    let req = BEDROCK
        .build(
            Operation::Chat,
            &with_image("data:image/jpeg;base64,/9j/4AAQ"),
            &target(&p, CLAUDE),
            false,
        )
        .unwrap();
    assert_eq!(
        body_of(&req)["messages"][0]["content"][1],
        json!({"image": {"format": "jpeg", "source": {"bytes": "/9j/4AAQ"}}})
    );
}

#[test]
fn tool_choice_variants() {
    let p = provider(None);
    let tools = json!([{"type": "function", "function": {"name": "top_song", "parameters": {"type": "object"}}}]);
    let build = |choice: Value, messages: Value, drop: bool| {
        let mut r = chat(messages);
        r.insert("tools".into(), tools.clone());
        r.insert("tool_choice".into(), choice);
        let t = Target {
            drop_unsupported_params: drop,
            ..target(&p, CLAUDE)
        };
        BEDROCK.build(Operation::Chat, &r, &t, false).map(|req| body_of(&req))
    };
    let user = json!([{"role": "user", "content": "hi"}]);
    assert_eq!(
        build(json!("required"), user.clone(), false).unwrap()["toolConfig"]["toolChoice"],
        json!({"any": {}})
    );
    assert_eq!(
        build(
            json!({"type": "function", "function": {"name": "top_song"}}),
            user.clone(),
            false
        )
        .unwrap()["toolConfig"]["toolChoice"],
        json!({"tool": {"name": "top_song"}})
    );
    assert_eq!(
        build(json!("auto"), user.clone(), false).unwrap()["toolConfig"]["tools"][0]["toolSpec"],
        json!({"name": "top_song", "inputSchema": {"json": {"type": "object"}}})
    );
    // "none" without tool history: no tools at all.
    assert!(build(json!("none"), user, false).unwrap().get("toolConfig").is_none());
    // "none" once tools were called cannot be honoured: Bedrock needs the toolConfig then.
    let history = json!([
        {"role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "top_song", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "t1", "content": "Elemental Hotel"}
    ]);
    let e = build(json!("none"), history.clone(), false).unwrap_err();
    assert_eq!(e.param.as_deref(), Some("tool_choice"));
    let body = build(json!("none"), history, true).unwrap();
    assert!(body["toolConfig"].get("toolChoice").is_none());
}

#[test]
fn tool_history_without_tools_gets_a_tool_config() {
    let p = provider(None);
    let r = chat(json!([
        {"role": "user", "content": "What is the most popular song on WZPZ?"},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "top_song", "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "t1", "content": [{"type": "text", "text": "Elemental Hotel"}]},
        {"role": "user", "content": "Thanks"}
    ]));
    let body = body_of(&BEDROCK.build(Operation::Chat, &r, &target(&p, CLAUDE), false).unwrap());
    assert_eq!(body["toolConfig"]["tools"][0]["toolSpec"]["name"], "top_song");
    assert_eq!(
        body["messages"],
        json!([
            {"role": "user", "content": [{"text": "What is the most popular song on WZPZ?"}]},
            {"role": "assistant", "content": [
                {"text": "Let me check."},
                {"toolUse": {"toolUseId": "t1", "name": "top_song", "input": {}}}
            ]},
            {"role": "user", "content": [
                {"toolResult": {"toolUseId": "t1", "content": [{"text": "Elemental Hotel"}]}},
                {"text": "Thanks"}
            ]}
        ])
    );
}

#[test]
fn other_operations_and_missing_credentials_are_refused() {
    let mut p = provider(None);
    let r = chat(json!([{"role": "user", "content": "hi"}]));
    let e = BEDROCK
        .build(Operation::Completions, &r, &target(&p, CLAUDE), false)
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadRequest);
    p.credentials = Some(CredentialsConfig::ApiKey {
        key: SecretString::new("k"),
    });
    let e = BEDROCK
        .build(Operation::Chat, &r, &target(&p, CLAUDE), false)
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth);
}

// --- Responses -------------------------------------------------------------------------------

fn parsed(op: Operation, model: &str, name: &str) -> (Value, Option<Usage>) {
    let p = provider(None);
    let out = BEDROCK.parse(op, &fixture(name), &target(&p, model)).unwrap();
    (serde_json::from_slice(&out.body).unwrap(), out.usage)
}

#[test]
fn text_response_is_translated() {
    let (body, usage) = parsed(Operation::Chat, CLAUDE, "converse_response_text.json");
    assert_eq!(
        usage,
        Some(Usage {
            prompt_tokens: 125,
            completion_tokens: 16,
            cached_tokens: 100,
            cache_write_tokens: 0,
            cache_write_1h_tokens: 0,
            reasoning_tokens: 0
        })
    );
    insta::assert_json_snapshot!("chat_response_text", body);
}

#[test]
fn tool_use_response_is_translated() {
    let (body, usage) = parsed(Operation::Chat, CLAUDE, "converse_response_tool_use.json");
    assert_eq!(usage.map(|u| u.total()), Some(431));
    let args = body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
        .as_str()
        .unwrap();
    assert_eq!(serde_json::from_str::<Value>(args).unwrap(), json!({"sign": "WZPZ"}));
    insta::assert_json_snapshot!("chat_response_tool_use", body);
}

#[test]
fn stop_reasons_map_to_finish_reasons() {
    for (stop, finish) in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("guardrail_intervened", "content_filter"),
        ("content_filtered", "content_filter"),
    ] {
        assert_eq!(finish_reason(stop), finish);
    }
}

// --- Streams ---------------------------------------------------------------------------------

fn encode(message: &Message) -> Vec<u8> {
    let mut buf = Vec::new();
    aws_smithy_eventstream::frame::write_message_to(message, &mut buf).unwrap();
    buf
}

fn string_header(name: &'static str, value: &str) -> Header {
    Header::new(name, EventValue::String(value.to_owned().into()))
}

fn event_frame(event: &str, payload: &Value) -> Vec<u8> {
    encode(
        &Message::new(Bytes::from(payload.to_string()))
            .add_header(string_header(":event-type", event))
            .add_header(string_header(":content-type", "application/json"))
            .add_header(string_header(":message-type", "event")),
    )
}

fn exception_frame(exception: &str, payload: &Value) -> Vec<u8> {
    encode(
        &Message::new(Bytes::from(payload.to_string()))
            .add_header(string_header(":exception-type", exception))
            .add_header(string_header(":content-type", "application/json"))
            .add_header(string_header(":message-type", "exception")),
    )
}

/// The fixture's events as frames.
fn stream_frames() -> Vec<Vec<u8>> {
    let events = json_fixture("converse_stream_events.json");
    events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| event_frame(pair[0].as_str().unwrap(), &pair[1]))
        .collect()
}

fn translator() -> ConverseStream {
    let p = provider(None);
    ConverseStream::new(&target(&p, CLAUDE))
}

/// Feeds `chunks`, finishes, and returns the SSE text.
fn run(s: &mut ConverseStream, chunks: &[&[u8]]) -> Result<String, ProviderError> {
    let mut out = Vec::new();
    for c in chunks {
        s.feed(Bytes::copy_from_slice(c), &mut out)?;
    }
    s.finish(&mut out)?;
    Ok(out.iter().map(|b| String::from_utf8(b.to_vec()).unwrap()).collect())
}

#[test]
fn stream_is_translated_whatever_the_chunking() {
    let frames = stream_frames();
    let bytes: Vec<u8> = frames.concat();
    let mut s = translator();
    let whole = run(&mut s, &[&bytes]).unwrap();
    assert!(s.complete());
    assert_eq!(
        s.usage(),
        Some(Usage {
            prompt_tokens: 375,
            completion_tokens: 56,
            ..Usage::default()
        })
    );
    assert!(whole.ends_with("data: [DONE]\n\n"));
    insta::assert_snapshot!("chat_stream", whole);

    // Fixed sizes, including splits inside the 12-byte prelude and the trailing CRC.
    for size in [1, 2, 3, 5, 7, 11, 12, 13, 17, 64, 101, 1000] {
        let chunks: Vec<&[u8]> = bytes.chunks(size).collect();
        assert_eq!(run(&mut translator(), &chunks).unwrap(), whole, "chunks of {size}");
    }
    // Around every frame boundary: one byte short, exactly, one byte over.
    let mut boundary = 0;
    for f in &frames[..frames.len() - 1] {
        boundary += f.len();
        for cut in [boundary - 1, boundary, boundary + 1] {
            let (a, b) = bytes.split_at(cut);
            assert_eq!(run(&mut translator(), &[a, b]).unwrap(), whole, "split at {cut}");
        }
    }
}

#[test]
fn a_flipped_byte_fails_the_crc() {
    let frame = event_frame(
        "contentBlockDelta",
        &json!({"contentBlockIndex": 0, "delta": {"text": "Hello"}}),
    );
    // In the payload, in a header, in the message CRC, in the prelude CRC.
    for at in [frame.len() - 8, 20, frame.len() - 1, 9] {
        let mut bad = frame.clone();
        bad[at] ^= 0x01;
        let mut s = translator();
        let e = s.feed(Bytes::from(bad), &mut Vec::new()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Protocol, "byte {at}: {}", e.message);
    }
    // A corrupt length is refused before it is waited for, or at the end of the stream.
    for (at, flip) in [(0, 0x40), (3, 0x01)] {
        let mut bad = frame.clone();
        bad[at] ^= flip;
        let mut s = translator();
        let mut out = Vec::new();
        let e = s
            .feed(Bytes::from(bad), &mut out)
            .and_then(|()| s.finish(&mut out))
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Protocol, "length byte {at}");
        assert!(!s.complete());
    }
}

/// A frame's prelude announces its length; one over AWS's 16 MiB maximum is refused from its
/// first 12 bytes, before anything of it is buffered, so an upstream cannot make the gateway
/// wait for (and hold) up to 4 GiB.
#[test]
fn a_frame_over_the_cap_is_refused_from_its_prelude() {
    let frame = event_frame("messageStart", &json!({"role": "assistant"}));
    for total in [MAX_FRAME as u32 + 1, u32::MAX] {
        let mut prelude = total.to_be_bytes().to_vec();
        prelude.extend_from_slice(&frame[4..12]);
        let mut s = translator();
        let mut out = Vec::new();
        s.feed(Bytes::copy_from_slice(&frame), &mut out).unwrap();
        // The 12 bytes of the prelude are enough to refuse it.
        let e = s.feed(Bytes::from(prelude), &mut out).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Protocol, "{}", e.message);
        assert_eq!(e.code.as_deref(), Some(crate::sse::EVENT_TOO_LARGE), "{}", e.message);
        assert!(e.message.contains("exceeds 16777216 bytes"), "{}", e.message);
    }
    // A frame of exactly the cap is waited for (and a real one that size would be decoded).
    let mut prelude = (MAX_FRAME as u32).to_be_bytes().to_vec();
    prelude.extend_from_slice(&[0; 8]);
    let mut s = translator();
    assert!(s.feed(Bytes::from(prelude), &mut Vec::new()).is_ok());
}

#[test]
fn stream_exceptions_map_to_error_kinds() {
    let start = event_frame("messageStart", &json!({"role": "assistant"}));
    for (exception, payload, kind) in [
        (
            "throttlingException",
            json!({"message": "Too many requests, please wait before trying again."}),
            ErrorKind::RateLimit,
        ),
        (
            "validationException",
            json!({"message": "Input is too long for requested model."}),
            ErrorKind::ContextWindow,
        ),
        (
            "validationException",
            json!({"message": "Malformed input request"}),
            ErrorKind::BadRequest,
        ),
        (
            "modelStreamErrorException",
            json!({"message": "Model stream error", "originalStatusCode": 500, "originalMessage": "upstream model failed"}),
            ErrorKind::Server,
        ),
        (
            "internalServerException",
            json!({"message": "Internal error"}),
            ErrorKind::Server,
        ),
        (
            "serviceUnavailableException",
            json!({"message": "Bedrock is unable to process your request."}),
            ErrorKind::Server,
        ),
    ] {
        let mut s = translator();
        let mut out = Vec::new();
        s.feed(Bytes::from(start.clone()), &mut out).unwrap();
        let e = s
            .feed(Bytes::from(exception_frame(exception, &payload)), &mut out)
            .unwrap_err();
        assert_eq!((e.kind, e.code.as_deref()), (kind, Some(exception)), "{exception}");
        assert_eq!(out.len(), 1, "the role chunk went out before the failure");
        assert!(!s.complete());
    }
    let error = encode(
        &Message::new(Bytes::new())
            .add_header(string_header(":message-type", "error"))
            .add_header(string_header(":error-code", "InternalFailure"))
            .add_header(string_header(":error-message", "We encountered an internal error.")),
    );
    let e = translator().feed(Bytes::from(error), &mut Vec::new()).unwrap_err();
    assert_eq!(
        (e.kind, e.message.as_str()),
        (ErrorKind::Server, "We encountered an internal error.")
    );
}

#[test]
fn cut_streams_are_incomplete() {
    let start = event_frame("messageStart", &json!({"role": "assistant"}));
    let delta = event_frame(
        "contentBlockDelta",
        &json!({"contentBlockIndex": 0, "delta": {"text": "Hi"}}),
    );
    let mut s = translator();
    let e = run(&mut s, &[&start, &delta]).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Protocol);
    assert!(!s.complete());
    // Cut inside a frame.
    let mut s = translator();
    assert_eq!(
        run(&mut s, &[&start, &delta[..10]]).unwrap_err().kind,
        ErrorKind::Protocol
    );
    // messageStop without metadata is complete; [DONE] comes at the end.
    let stop = event_frame("messageStop", &json!({"stopReason": "max_tokens"}));
    let mut s = translator();
    let text = run(&mut s, &[&start, &delta, &stop]).unwrap();
    assert!(s.complete());
    assert_eq!(s.usage(), None);
    assert!(text.contains("\"finish_reason\":\"length\""));
    assert!(text.ends_with("data: [DONE]\n\n"));
}

// --- Embeddings ------------------------------------------------------------------------------

#[test]
fn titan_embeddings() {
    let p = provider(None);
    let model = "amazon.titan-embed-text-v2:0";
    let mut r = json_fixture("embeddings_request.json");
    r.insert("dimensions".into(), json!(256));
    let req = BEDROCK
        .build(Operation::Embeddings, &r, &target(&p, model), false)
        .unwrap();
    insta::assert_json_snapshot!("titan_embeddings_request", snapshot(&req));
    let (body, usage) = parsed(Operation::Embeddings, model, "titan_embed_response.json");
    assert_eq!(usage.map(|u| u.prompt_tokens), Some(10));
    insta::assert_json_snapshot!("titan_embeddings_response", body);
}

#[test]
fn titan_takes_one_input_per_request() {
    let p = provider(None);
    let mut r = json_fixture("embeddings_request.json");
    r.insert("input".into(), json!(["one", "two"]));
    let e = BEDROCK
        .build(
            Operation::Embeddings,
            &r,
            &target(&p, "amazon.titan-embed-text-v2:0"),
            false,
        )
        .unwrap_err();
    assert_eq!((e.kind, e.param.as_deref()), (ErrorKind::BadRequest, Some("input")));
    assert!(e.message.contains("one input per request"), "{}", e.message);
    // One element in an array is one input; v1 takes no dimensions.
    r.insert("input".into(), json!(["one"]));
    r.insert("encoding_format".into(), json!("base64"));
    let body = body_of(
        &BEDROCK
            .build(
                Operation::Embeddings,
                &r,
                &target(&p, "amazon.titan-embed-text-v1"),
                false,
            )
            .unwrap(),
    );
    assert_eq!(body, json!({"inputText": "one"}));
    r.insert("dimensions".into(), json!(256));
    let e = BEDROCK
        .build(
            Operation::Embeddings,
            &r,
            &target(&p, "amazon.titan-embed-text-v1"),
            false,
        )
        .unwrap_err();
    assert_eq!(e.param.as_deref(), Some("dimensions"));
}

#[test]
fn cohere_embeddings() {
    let p = provider(None);
    let model = "cohere.embed-english-v3";
    let mut r = json_fixture("embeddings_request.json");
    r.insert(
        "input".into(),
        json!(["The food was delicious and the waiter...", "Service was slow"]),
    );
    let req = BEDROCK
        .build(Operation::Embeddings, &r, &target(&p, model), false)
        .unwrap();
    insta::assert_json_snapshot!("cohere_embeddings_request", snapshot(&req));
    // No token count in the body: estimated by words (7 + 3).
    let (body, usage) = parsed(Operation::Embeddings, model, "cohere_embed_response.json");
    assert_eq!(usage.map(|u| u.prompt_tokens), Some(10));
    insta::assert_json_snapshot!("cohere_embeddings_response", body);
    // embeddings_by_type, with billed units.
    let by_type =
        json!({"embeddings": {"float": [[0.5, 0.5]]}, "texts": ["x"], "meta": {"billed_units": {"input_tokens": 4}}});
    let out = BEDROCK
        .parse(
            Operation::Embeddings,
            by_type.to_string().as_bytes(),
            &target(&p, model),
        )
        .unwrap();
    assert_eq!(out.usage.map(|u| u.prompt_tokens), Some(4));
    let v: Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(v["data"][0]["embedding"], json!([0.5, 0.5]));
}

#[test]
fn unknown_embedding_models_and_token_inputs_are_refused() {
    let p = provider(None);
    let r = json_fixture("embeddings_request.json");
    let e = BEDROCK
        .build(
            Operation::Embeddings,
            &r,
            &target(&p, "meta.llama3-8b-instruct-v1:0"),
            false,
        )
        .unwrap_err();
    assert_eq!((e.kind, e.param.as_deref()), (ErrorKind::BadRequest, Some("model")));
    let mut r = r;
    r.insert("input".into(), json!([[1, 2, 3]]));
    let e = BEDROCK
        .build(Operation::Embeddings, &r, &target(&p, "cohere.embed-english-v3"), false)
        .unwrap_err();
    assert_eq!(e.param.as_deref(), Some("input"));
}

// --- Errors ----------------------------------------------------------------------------------

#[test]
fn errors_are_classified() {
    // Bedrock's error types with the messages its API reference and troubleshooting guide give.
    let cases = [
        (
            429,
            "ThrottlingException",
            "Too many requests, please wait before trying again.",
            ErrorKind::RateLimit,
        ),
        (
            400,
            "ValidationException",
            "Input is too long for requested model.",
            ErrorKind::ContextWindow,
        ),
        (
            400,
            "ValidationException",
            "The model returned the following errors: prompt is too long: 210000 tokens > 200000 maximum",
            ErrorKind::ContextWindow,
        ),
        (
            400,
            "ValidationException",
            "Malformed input request: #: extraneous key [foo] is not permitted",
            ErrorKind::BadRequest,
        ),
        (
            403,
            "AccessDeniedException",
            "You don't have access to the model with the specified model ID.",
            ErrorKind::PermissionDenied,
        ),
        (
            404,
            "ResourceNotFoundException",
            "Could not resolve the foundation model from the provided model identifier.",
            ErrorKind::NotFound,
        ),
        (
            503,
            "ServiceUnavailableException",
            "Bedrock is unable to process your request.",
            ErrorKind::Server,
        ),
        (
            429,
            "ModelNotReadyException",
            "Model is not ready to serve inference requests.",
            ErrorKind::Server,
        ),
        (
            408,
            "ModelTimeoutException",
            "Model has timed out in processing the request.",
            ErrorKind::Timeout,
        ),
        (
            403,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
            ErrorKind::Auth,
        ),
        (
            403,
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided.",
            ErrorKind::Auth,
        ),
        (
            500,
            "InternalServerException",
            "The system encountered an unexpected error during processing.",
            ErrorKind::Server,
        ),
    ];
    for (status, ty, message, kind) in cases {
        let mut h = HeaderMap::new();
        h.insert(
            "x-amzn-errortype",
            HeaderValue::from_str(&format!("{ty}:http://internal.amazon.com/coral/com.amazon.bedrock/")).unwrap(),
        );
        let body = json!({"message": message}).to_string();
        let e = BEDROCK.error(status, &h, body.as_bytes());
        assert_eq!(
            (e.kind, e.status, e.code.as_deref(), e.message.as_str()),
            (kind, Some(status), Some(ty), message),
            "{ty}"
        );
    }
    let mut h = HeaderMap::new();
    h.insert("x-amzn-errortype", HeaderValue::from_static("ThrottlingException"));
    h.insert("retry-after", HeaderValue::from_static("2"));
    let e = BEDROCK.error(429, &h, br#"{"message":"Too many requests"}"#);
    assert_eq!(e.retry_after, Some(Duration::from_secs(2)));
    // Without the header: `__type` in the body, then the status.
    let e = BEDROCK.error(
        400,
        &HeaderMap::new(),
        br#"{"__type":"com.amazon.coral.service#AccessDeniedException","Message":"denied"}"#,
    );
    assert_eq!((e.kind, e.message.as_str()), (ErrorKind::PermissionDenied, "denied"));
    let e = BEDROCK.error(502, &HeaderMap::new(), b"<html>bad gateway</html>");
    assert_eq!(
        (e.kind, e.message.as_str()),
        (ErrorKind::Server, "upstream answered HTTP 502")
    );
}

#[test]
fn huge_usage_counts_saturate() {
    let max = u64::MAX;
    let body = format!(
        r#"{{"output":{{"message":{{"role":"assistant","content":[{{"text":"hi"}}]}}}},"stopReason":"end_turn","usage":{{"inputTokens":{max},"outputTokens":{max},"totalTokens":{max},"cacheReadInputTokens":{max},"cacheWriteInputTokens":{max}}},"metrics":{{"latencyMs":1}}}}"#
    );
    let p = provider(None);
    let out = BEDROCK
        .parse(Operation::Chat, body.as_bytes(), &target(&p, CLAUDE))
        .unwrap();
    let u = out.usage.unwrap();
    assert_eq!((u.prompt_tokens, u.completion_tokens, u.total()), (max, max, max));
}

#[test]
fn cache_writes_are_read() {
    // TokenUsage shape from the Amazon Bedrock API reference, "TokenUsage" (`inputTokens`
    // excludes `cacheReadInputTokens` and `cacheWriteInputTokens`).
    let body = br#"{"output":{"message":{"role":"assistant","content":[{"text":"hi"}]}},"stopReason":"end_turn","usage":{"inputTokens":10,"outputTokens":5,"totalTokens":1515,"cacheReadInputTokens":500,"cacheWriteInputTokens":1000},"metrics":{"latencyMs":1}}"#;
    let p = provider(None);
    let out = BEDROCK.parse(Operation::Chat, body, &target(&p, CLAUDE)).unwrap();
    assert_eq!(
        out.usage,
        Some(Usage {
            prompt_tokens: 1510,
            completion_tokens: 5,
            cached_tokens: 500,
            cache_write_tokens: 1000,
            cache_write_1h_tokens: 0,
            reasoning_tokens: 0
        })
    );
    let v: Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(
        v["usage"]["prompt_tokens_details"],
        json!({"cached_tokens": 500, "cache_write_tokens": 1000})
    );
    // The stream's metadata event carries the same object.
    let mut s = translator();
    let frames = [
        event_frame("messageStart", &json!({"role": "assistant"})),
        event_frame("messageStop", &json!({"stopReason": "end_turn"})),
        event_frame(
            "metadata",
            &json!({"usage": {"inputTokens": 10, "outputTokens": 5, "totalTokens": 1515, "cacheReadInputTokens": 500, "cacheWriteInputTokens": 1000}, "metrics": {"latencyMs": 1}}),
        ),
    ];
    let chunks: Vec<&[u8]> = frames.iter().map(|f| f.as_slice()).collect();
    let text = run(&mut s, &chunks).unwrap();
    assert!(text.contains("\"cache_write_tokens\":1000"), "{text}");
    assert_eq!(s.usage().map(|u| u.cache_write_tokens), Some(1000));
}

#[test]
fn one_hour_cache_writes_are_read_from_cache_details() {
    // TokenUsage.cacheDetails from the Amazon Bedrock API reference, "TokenUsage" and
    // "CacheDetail" (`ttl`: `5m` | `1h`, `inputTokens`; sorted 1h before 5m).
    let usage = json!({"inputTokens": 10, "outputTokens": 5, "totalTokens": 1515, "cacheReadInputTokens": 500,
                       "cacheWriteInputTokens": 1000,
                       "cacheDetails": [{"ttl": "1h", "inputTokens": 400}, {"ttl": "5m", "inputTokens": 600}]});
    let body = json!({"output": {"message": {"role": "assistant", "content": [{"text": "hi"}]}},
                      "stopReason": "end_turn", "usage": usage, "metrics": {"latencyMs": 1}});
    let p = provider(None);
    let out = BEDROCK
        .parse(Operation::Chat, body.to_string().as_bytes(), &target(&p, CLAUDE))
        .unwrap();
    let u = out.usage.unwrap();
    assert_eq!((u.cache_write_tokens, u.cache_write_1h_tokens), (1000, 400));
    let v: Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(
        v["usage"]["prompt_tokens_details"],
        json!({"cached_tokens": 500, "cache_write_tokens": 1000, "cache_write_1h_tokens": 400})
    );
    let mut s = translator();
    let frames = [
        event_frame("messageStart", &json!({"role": "assistant"})),
        event_frame("messageStop", &json!({"stopReason": "end_turn"})),
        event_frame("metadata", &json!({"usage": usage, "metrics": {"latencyMs": 1}})),
    ];
    let chunks: Vec<&[u8]> = frames.iter().map(|f| f.as_slice()).collect();
    run(&mut s, &chunks).unwrap();
    assert_eq!(s.usage().map(|u| u.cache_write_1h_tokens), Some(400));
}

#[test]
fn sampling_numbers_are_brought_into_converses_range() {
    // Converse takes temperature and topP in 0..=1; OpenAI's temperature goes to 2.
    let p = provider(None);
    let mut req = chat(json!([{"role": "user", "content": "hi"}]));
    req.insert("temperature".into(), json!(1.5));
    req.insert("top_p".into(), json!(0.5));
    let body = body_of(
        &BEDROCK
            .build(Operation::Chat, &req, &target(&p, CLAUDE), false)
            .unwrap(),
    );
    assert_eq!(body["inferenceConfig"]["temperature"], json!(1.0));
    assert_eq!(body["inferenceConfig"]["topP"], json!(0.5));
}

// --- Rerank ----------------------------------------------------------------------------------

#[test]
fn rerank_goes_to_the_agent_runtime_signed() {
    let p = provider(None);
    let r = json_fixture("rerank_request.json");
    let req = BEDROCK
        .build(Operation::Rerank, &r, &target(&p, "amazon.rerank-v1:0"), false)
        .unwrap();
    assert_eq!(req.url, "https://bedrock-agent-runtime.us-east-1.amazonaws.com/rerank");
    insta::assert_json_snapshot!("rerank_request", snapshot(&req));
    // Cohere's model by its ARN; a base URL that is not Bedrock Runtime's serves both APIs.
    let mut proxy = provider(None);
    proxy.base_url = "http://127.0.0.1:9999/".into();
    let req = BEDROCK
        .build(Operation::Rerank, &r, &target(&proxy, "cohere.rerank-v3-5:0"), false)
        .unwrap();
    assert_eq!(req.url, "http://127.0.0.1:9999/rerank");
    assert_eq!(
        body_of(&req)["rerankingConfiguration"]["bedrockRerankingConfiguration"]["modelConfiguration"]["modelArn"],
        "arn:aws:bedrock:us-east-1::foundation-model/cohere.rerank-v3-5:0"
    );
}

#[test]
fn rerank_pages_are_asked_for_by_next_token_and_joined() {
    let p = provider(None);
    let r = json_fixture("rerank_request.json");
    let t = target(&p, "amazon.rerank-v1:0");
    let first = br#"{"results":[{"index":1,"relevanceScore":0.9}],"nextToken":"tok-2"}"#;
    let last = br#"{"results":[{"index":0,"relevanceScore":0.1}]}"#;
    // The same request, with the answer's token, signed again.
    let next = BEDROCK.next_page(Operation::Rerank, &r, first, &t).unwrap().unwrap();
    let built = BEDROCK.build(Operation::Rerank, &r, &t, false).unwrap();
    let mut expected = body_of(&built);
    expected["nextToken"] = json!("tok-2");
    assert_eq!((next.url.as_str(), body_of(&next)), (built.url.as_str(), expected));
    assert_ne!(next.headers["authorization"], built.headers["authorization"]);
    assert!(BEDROCK.next_page(Operation::Rerank, &r, last, &t).unwrap().is_none());
    assert!(BEDROCK.next_page(Operation::Chat, &r, first, &t).unwrap().is_none());
    // Joined, the pages read as one answer, without a token left.
    let joined = BEDROCK.join_pages(Operation::Rerank, first, last).unwrap();
    let v: Value = serde_json::from_slice(&joined).unwrap();
    assert_eq!(
        v,
        json!({"results": [{"index": 1, "relevanceScore": 0.9}, {"index": 0, "relevanceScore": 0.1}]})
    );
    let out = BEDROCK.parse_for(Operation::Rerank, &r, &joined, &t).unwrap();
    let body: Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(body["results"].as_array().map(Vec::len), Some(2));
}

#[test]
fn rerank_refuses_what_bedrock_has_no_field_for() {
    let p = provider(None);
    let mut r = json_fixture("rerank_request.json");
    r.insert("max_tokens_per_doc".into(), json!(512));
    let e = BEDROCK
        .build(Operation::Rerank, &r, &target(&p, "amazon.rerank-v1:0"), false)
        .unwrap_err();
    assert_eq!(e.param.as_deref(), Some("max_tokens_per_doc"));
    let mut dropping = target(&p, "amazon.rerank-v1:0");
    dropping.drop_unsupported_params = true;
    assert!(BEDROCK.build(Operation::Rerank, &r, &dropping, false).is_ok());
    r.insert("documents".into(), json!([]));
    let e = BEDROCK.build(Operation::Rerank, &r, &dropping, false).unwrap_err();
    assert_eq!(e.param.as_deref(), Some("documents"));
}

#[test]
fn rerank_response_is_cohere_shaped_and_billed_per_hundred_documents() {
    let p = provider(None);
    let t = target(&p, "amazon.rerank-v1:0");
    let r = json_fixture("rerank_request.json");
    let out = BEDROCK
        .parse_for(Operation::Rerank, &r, &fixture("rerank_response.json"), &t)
        .unwrap();
    assert_eq!(out.usage.map(|u| u.prompt_tokens), Some(1));
    insta::assert_json_snapshot!("rerank_response", serde_json::from_slice::<Value>(&out.body).unwrap());
    // 250 documents are three queries; without return_documents none come back.
    let mut many = r.clone();
    many.insert("documents".into(), json!(vec!["d"; 250]));
    many.remove("return_documents");
    let out = BEDROCK
        .parse_for(Operation::Rerank, &many, &fixture("rerank_response.json"), &t)
        .unwrap();
    assert_eq!(out.usage.map(|u| u.prompt_tokens), Some(3));
    let body: Value = serde_json::from_slice(&out.body).unwrap();
    assert!(body["results"][0].get("document").is_none());
    assert_eq!(body["results"][0]["relevance_score"], 0.9893);
}

// --- Images ----------------------------------------------------------------------------------

fn images_request() -> Json {
    let mut v: Json = serde_json::from_slice(
        &std::fs::read(format!("{}/testdata/images/request.json", env!("CARGO_MANIFEST_DIR"))).unwrap(),
    )
    .unwrap();
    v.remove("_source");
    v
}

#[test]
fn nova_canvas_request_is_a_signed_text_image_invoke() {
    let p = provider(None);
    let req = BEDROCK
        .build(
            Operation::Images,
            &images_request(),
            &target(&p, "amazon.nova-canvas-v1:0"),
            false,
        )
        .unwrap();
    insta::assert_json_snapshot!("nova_canvas_request", snapshot(&req));
    let mut r = images_request();
    r.remove("size");
    r.insert("quality".into(), json!("hd"));
    r.insert("seed".into(), json!(7));
    let req = BEDROCK
        .build(
            Operation::Images,
            &r,
            &target(&p, "amazon.titan-image-generator-v2:0"),
            false,
        )
        .unwrap();
    assert_eq!(
        body_of(&req)["imageGenerationConfig"],
        json!({"numberOfImages": 2, "width": 1024, "height": 1024, "quality": "premium", "seed": 7})
    );
}

#[test]
fn bedrock_images_refuse_urls_and_other_models() {
    let p = provider(None);
    let mut r = images_request();
    r.insert("response_format".into(), json!("url"));
    let e = BEDROCK
        .build(Operation::Images, &r, &target(&p, "amazon.nova-canvas-v1:0"), false)
        .unwrap_err();
    assert_eq!(
        (e.kind, e.param.as_deref()),
        (ErrorKind::BadRequest, Some("response_format"))
    );
    let e = BEDROCK
        .build(
            Operation::Images,
            &images_request(),
            &target(&p, "stability.stable-diffusion-v0"),
            false,
        )
        .unwrap_err();
    assert!(e.message.contains("amazon.nova-canvas"), "{}", e.message);
    r.insert("response_format".into(), json!("b64_json"));
    r.insert("n".into(), json!(6));
    let e = BEDROCK
        .build(Operation::Images, &r, &target(&p, "amazon.nova-canvas-v1:0"), false)
        .unwrap_err();
    assert_eq!(e.param.as_deref(), Some("n"));
}

#[test]
fn nova_canvas_response_is_openai_shaped() {
    let p = provider(None);
    let t = target(&p, "amazon.nova-canvas-v1:0");
    let out = BEDROCK
        .parse(Operation::Images, &fixture("nova_canvas_response.json"), &t)
        .unwrap();
    assert_eq!(out.usage.map(|u| u.completion_tokens), Some(1));
    insta::assert_json_snapshot!(
        "nova_canvas_response",
        serde_json::from_slice::<Value>(&out.body).unwrap()
    );
    let blocked = br#"{"images":[],"error":"This request has been blocked by our content filters."}"#;
    let e = BEDROCK.parse(Operation::Images, blocked, &t).unwrap_err();
    assert_eq!(e.kind, ErrorKind::ContentPolicy);
}

#[test]
fn stability_makes_one_image_a_request() {
    let p = provider(None);
    let t = target(&p, "stability.sd3-5-large-v1:0");
    let e = BEDROCK
        .build(Operation::Images, &images_request(), &t, false)
        .unwrap_err();
    assert_eq!(e.param.as_deref(), Some("n"));
    let mut r = images_request();
    r.insert("n".into(), json!(1));
    r.insert("negative_prompt".into(), json!("blur"));
    let req = BEDROCK.build(Operation::Images, &r, &t, false).unwrap();
    insta::assert_json_snapshot!("stability_request", body_of(&req));
    // Bedrock user guide, "Stable Image Ultra request and response": the answer and a filtered one.
    let out = BEDROCK
        .parse(
            Operation::Images,
            br#"{"seeds":[2130420379],"finish_reasons":[null],"images":["iVBORw0KGgo="]}"#,
            &t,
        )
        .unwrap();
    assert_eq!(out.usage.map(|u| u.completion_tokens), Some(1));
    let body: Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(body["data"], json!([{"b64_json": "iVBORw0KGgo="}]));
    let e = BEDROCK
        .parse(
            Operation::Images,
            br#"{"finish_reasons":["Filter reason: prompt"]}"#,
            &t,
        )
        .unwrap_err();
    assert_eq!(
        (e.kind, e.message.as_str()),
        (ErrorKind::ContentPolicy, "Filter reason: prompt")
    );
}

#[test]
fn sdxl_takes_its_own_older_body() {
    let p = provider(None);
    let t = target(&p, "stability.stable-diffusion-xl-v1");
    let mut r = images_request();
    r.insert("n".into(), json!(1));
    r.insert("size".into(), json!("1792x1024"));
    r.insert("negative_prompt".into(), json!("blur"));
    r.insert("cfg_scale".into(), json!(9));
    r.insert("steps".into(), json!(40));
    r.remove("output_format");
    let req = BEDROCK.build(Operation::Images, &r, &t, false).unwrap();
    assert!(
        req.url.ends_with("/model/stability.stable-diffusion-xl-v1/invoke"),
        "{}",
        req.url
    );
    let body = body_of(&req);
    // 1792x1024 is 7:4; SDXL's nearest size is 1344x768.
    assert_eq!(
        body,
        json!({
            "text_prompts": [{"text": r["prompt"], "weight": 1.0}, {"text": "blur", "weight": -1.0}],
            "samples": 1, "width": 1344, "height": 768, "cfg_scale": 9, "steps": 40
        })
    );
    r.insert("output_format".into(), json!("jpeg"));
    let e = BEDROCK.build(Operation::Images, &r, &t, false).unwrap_err();
    assert_eq!(e.param.as_deref(), Some("output_format"));
    // Bedrock user guide, "Stability.ai Diffusion 1.0 text to image": the answer and a filtered one.
    let out = BEDROCK
        .parse(
            Operation::Images,
            br#"{"result":"success","artifacts":[{"seed":123,"base64":"iVBORw0KGgo=","finishReason":"SUCCESS"}]}"#,
            &t,
        )
        .unwrap();
    assert_eq!(out.usage.map(|u| u.completion_tokens), Some(1));
    let body: Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(body["data"], json!([{"b64_json": "iVBORw0KGgo="}]));
    let filtered = br#"{"result":"success","artifacts":[{"seed":1,"base64":"","finishReason":"CONTENT_FILTERED"}]}"#;
    let e = BEDROCK.parse(Operation::Images, filtered, &t).unwrap_err();
    assert_eq!(e.kind, ErrorKind::ContentPolicy);
}
