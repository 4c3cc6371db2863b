//! Bedrock: SigV4 verification, Converse, the event-stream framing, InvokeModel.

use aws_smithy_eventstream::frame::read_message_from;
use aws_smithy_types::event_stream::Message;
use base64::Engine as _;
use bytes::Buf;
use serde_json::{json, Value};
use switchyard_mock_provider::{TEST_ACCESS_KEY, TEST_SECRET_KEY, TOOL_ARGUMENTS};

use crate::common::{sign_bedrock, spawn};

fn converse_req() -> Value {
    json!({
        "system": [{"text": "be brief"}],
        "messages": [{"role": "user", "content": [{"text": "hello there"}]}],
        "inferenceConfig": {"maxTokens": 100}
    })
}

fn header<'a>(m: &'a Message, name: &str) -> &'a str {
    m.headers()
        .iter()
        .find(|h| h.name().as_str() == name)
        .map(|h| h.value().as_string().unwrap().as_str())
        .unwrap()
}

/// Decodes every frame, checking both CRCs (read_message_from fails on a bad one).
fn decode_frames(mut bytes: &[u8]) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    while bytes.has_remaining() {
        let m = read_message_from(&mut bytes).unwrap();
        assert_eq!(header(&m, ":message-type"), "event");
        assert_eq!(header(&m, ":content-type"), "application/json");
        out.push((
            header(&m, ":event-type").to_owned(),
            serde_json::from_slice(m.payload()).unwrap(),
        ));
    }
    out
}

#[tokio::test]
async fn converse_with_a_valid_signature() {
    let mock = spawn().await;
    let res = mock
        .bedrock_ok(
            "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse",
            &converse_req(),
        )
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["output"]["message"]["content"][0]["text"],
        "Hello! You said: hello there"
    );
    assert_eq!(body["stopReason"], "end_turn");
    assert_eq!(
        body["usage"],
        json!({"inputTokens": 4, "outputTokens": 5, "totalTokens": 9})
    );
}

#[tokio::test]
async fn bad_signatures_get_bedrock_403s() {
    let mock = spawn().await;
    let path = "/model/amazon.nova-lite-v1%3A0/converse";
    let body = serde_json::to_vec(&converse_req()).unwrap();

    let res = mock.bedrock(path, &body, TEST_ACCESS_KEY, "wrong-secret").await;
    assert_eq!(res.status(), 403);
    assert!(res.headers()["x-amzn-errortype"]
        .to_str()
        .unwrap()
        .starts_with("InvalidSignatureException"));
    let err: Value = res.json().await.unwrap();
    assert!(err["message"]
        .as_str()
        .unwrap()
        .contains("signature we calculated does not match"));

    // Signed correctly, then the body is changed on the way.
    let signed = sign_bedrock(&mock.url(path), &body, TEST_ACCESS_KEY, TEST_SECRET_KEY, None);
    let mut tampered = body.clone();
    tampered[20] ^= 1;
    let res = mock
        .http
        .post(mock.url(path))
        .headers(signed.headers().clone())
        .body(tampered)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert!(res.headers()["x-amzn-errortype"]
        .to_str()
        .unwrap()
        .starts_with("InvalidSignatureException"));

    // Signed for one path, sent to another.
    let res = mock
        .http
        .post(mock.url("/model/amazon.nova-pro-v1%3A0/converse"))
        .headers(signed.headers().clone())
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);

    let res = mock.bedrock(path, &body, "AKIDUNKNOWN", TEST_SECRET_KEY).await;
    assert_eq!(res.status(), 403);
    assert!(res.headers()["x-amzn-errortype"]
        .to_str()
        .unwrap()
        .starts_with("UnrecognizedClientException"));

    let res = mock.http.post(mock.url(path)).body(body.clone()).send().await.unwrap();
    assert_eq!(res.status(), 403);
    assert!(res.headers()["x-amzn-errortype"]
        .to_str()
        .unwrap()
        .starts_with("MissingAuthenticationTokenException"));

    // A session token is accepted (and signed over).
    let signed = sign_bedrock(
        &mock.url(path),
        &body,
        TEST_ACCESS_KEY,
        TEST_SECRET_KEY,
        Some("session-token"),
    );
    assert!(signed.headers().contains_key("x-amz-security-token"));
    let res = mock
        .http
        .post(mock.url(path))
        .headers(signed.headers().clone())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn converse_stream_frames_carry_valid_crcs() {
    let mock = spawn().await;
    let res = mock
        .bedrock_ok("/model/mock-model/converse-stream", &converse_req())
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/vnd.amazon.eventstream");
    let bytes = res.bytes().await.unwrap();

    // A flipped payload byte breaks the message CRC.
    let mut corrupt = bytes.to_vec();
    corrupt[40] ^= 0xff;
    assert!(read_message_from(&mut &corrupt[..]).is_err());

    let frames = decode_frames(&bytes);
    let kinds: Vec<&str> = frames.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"messageStart"));
    assert_eq!(
        &kinds[kinds.len() - 3..],
        ["contentBlockStop", "messageStop", "metadata"]
    );
    let text: String = frames.iter().filter_map(|(_, v)| v["delta"]["text"].as_str()).collect();
    assert_eq!(text, "Hello! You said: hello there");
    let (_, metadata) = frames.last().unwrap();
    assert_eq!(metadata["usage"]["inputTokens"], 4);
    assert_eq!(metadata["usage"]["outputTokens"], 5);

    let res = mock
        .bedrock_ok("/model/mock-tool/converse-stream", &converse_req())
        .await;
    let frames = decode_frames(&res.bytes().await.unwrap());
    let start = frames.iter().find(|(k, _)| k == "contentBlockStart").unwrap();
    assert_eq!(start.1["start"]["toolUse"]["name"], "get_weather");
    let args: String = frames
        .iter()
        .filter_map(|(_, v)| v["delta"]["toolUse"]["input"].as_str())
        .collect();
    assert_eq!(args, TOOL_ARGUMENTS);
    let stop = frames.iter().find(|(k, _)| k == "messageStop").unwrap();
    assert_eq!(stop.1["stopReason"], "tool_use");
}

#[tokio::test]
async fn faults_use_bedrock_error_types() {
    let mock = spawn().await;
    for (model, status, kind) in [
        ("mock-429", 429, "ThrottlingException"),
        ("mock-500", 500, "InternalServerException"),
        ("mock-503", 503, "ServiceUnavailableException"),
        ("mock-context-length", 400, "ValidationException"),
    ] {
        let res = mock
            .bedrock_ok(&format!("/model/{model}/converse"), &converse_req())
            .await;
        assert_eq!(res.status(), status);
        assert!(res.headers()["x-amzn-errortype"].to_str().unwrap().starts_with(kind));
        let body: Value = res.json().await.unwrap();
        assert!(body["message"].is_string());
    }
    let body: Value = mock
        .bedrock_ok("/model/mock-content-policy/converse", &converse_req())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["stopReason"], "content_filtered");
}

#[tokio::test]
async fn invoke_model_for_embeddings_and_claude() {
    let mock = spawn().await;
    let res = mock
        .bedrock_ok(
            "/model/amazon.titan-embed-text-v2%3A0/invoke",
            &json!({"inputText": "hello world", "dimensions": 256}),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-amzn-bedrock-input-token-count"], "2");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["embedding"].as_array().unwrap().len(), 256);
    assert_eq!(body["inputTextTokenCount"], 2);

    let body: Value = mock
        .bedrock_ok(
            "/model/cohere.embed-english-v3/invoke",
            &json!({"texts": ["a", "b c"], "input_type": "search_document"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["response_type"], "embeddings_floats");
    assert_eq!(body["embeddings"].as_array().unwrap().len(), 2);

    let claude = json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 50,
                        "messages": [{"role": "user", "content": "hi"}]});
    let res = mock
        .bedrock_ok("/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke", &claude)
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-amzn-bedrock-output-token-count"], "4");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["content"][0]["text"], "Hello! You said: hi");

    let res = mock
        .bedrock_ok(
            "/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke-with-response-stream",
            &claude,
        )
        .await;
    let frames = decode_frames(&res.bytes().await.unwrap());
    assert!(frames.iter().all(|(k, _)| k == "chunk"));
    let events: Vec<Value> = frames
        .iter()
        .map(|(_, v)| {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(v["bytes"].as_str().unwrap())
                .unwrap();
            serde_json::from_slice(&raw).unwrap()
        })
        .collect();
    assert_eq!(events[0]["type"], "message_start");
    let last = events.last().unwrap();
    assert_eq!(last["type"], "message_stop");
    assert_eq!(last["amazon-bedrock-invocationMetrics"]["outputTokenCount"], 4);
}
