//! Anthropic Messages.

use serde_json::{json, Value};
use switchyard_mock_provider::TOOL_ARGUMENTS;

use crate::common::{parse_sse, spawn, Mock};

async fn post(mock: &Mock, body: &Value) -> reqwest::Response {
    mock.http
        .post(mock.url("/v1/messages"))
        .header("x-api-key", "test")
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .unwrap()
}

fn req(model: &str) -> Value {
    json!({"model": model, "max_tokens": 100, "system": "be brief",
           "messages": [{"role": "user", "content": [{"type": "text", "text": "hello there"}]}]})
}

#[tokio::test]
async fn requires_key_and_version() {
    let mock = spawn().await;
    let res = mock
        .http
        .post(mock.url("/v1/messages"))
        .json(&req("claude"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "authentication_error");
    let res = mock
        .http
        .post(mock.url("/v1/messages"))
        .header("x-api-key", "k")
        .json(&req("claude"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}

#[tokio::test]
async fn message_and_stream() {
    let mock = spawn().await;
    let body: Value = post(&mock, &req("claude-sonnet")).await.json().await.unwrap();
    assert_eq!(body["type"], "message");
    assert_eq!(body["content"][0]["text"], "Hello! You said: hello there");
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(body["usage"]["input_tokens"], 4);
    assert_eq!(body["usage"]["output_tokens"], 5);

    let mut r = req("claude-sonnet");
    r["stream"] = json!(true);
    let events = parse_sse(&post(&mock, &r).await.text().await.unwrap());
    let kinds: Vec<&str> = events.iter().map(|e| e.event.as_deref().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"message_start"));
    assert_eq!(kinds.last(), Some(&"message_stop"));
    for e in &events {
        assert_eq!(e.json()["type"], e.event.as_deref().unwrap());
    }
    let text: String = events
        .iter()
        .filter_map(|e| e.json()["delta"]["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, "Hello! You said: hello there");
    let delta = events
        .iter()
        .find(|e| e.event.as_deref() == Some("message_delta"))
        .unwrap()
        .json();
    assert_eq!(delta["usage"]["output_tokens"], 5);
    assert_eq!(events[0].json()["message"]["usage"]["input_tokens"], 4);
}

#[tokio::test]
async fn tool_use_and_refusal_and_faults() {
    let mock = spawn().await;
    let body: Value = post(&mock, &req("mock-tool")).await.json().await.unwrap();
    assert_eq!(body["stop_reason"], "tool_use");
    assert_eq!(body["content"][0]["type"], "tool_use");
    assert_eq!(body["content"][0]["input"], json!({"city": "Paris"}));

    let mut r = req("mock-tool");
    r["stream"] = json!(true);
    let events = parse_sse(&post(&mock, &r).await.text().await.unwrap());
    let json: String = events
        .iter()
        .filter_map(|e| e.json()["delta"]["partial_json"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(json, TOOL_ARGUMENTS);

    let body: Value = post(&mock, &req("mock-content-policy")).await.json().await.unwrap();
    assert_eq!(body["stop_reason"], "refusal");

    let res = post(&mock, &req("mock-429")).await;
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "1");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");

    let res = post(&mock, &req("mock-context-length")).await;
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("prompt is too long"));
}
