//! Cohere v2.

use serde_json::{json, Value};
use switchyard_mock_provider::TOOL_ARGUMENTS;

use crate::common::{parse_sse, spawn};

fn req(model: &str) -> Value {
    json!({"model": model, "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello there"}
    ]})
}

#[tokio::test]
async fn chat_and_stream() {
    let mock = spawn().await;
    let res = mock
        .http
        .post(mock.url("/v2/chat"))
        .json(&req("command-a"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    let body: Value = mock
        .post_bearer("/v2/chat", &req("command-a"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["message"]["content"][0]["text"], "Hello! You said: hello there");
    assert_eq!(body["finish_reason"], "COMPLETE");
    assert_eq!(body["usage"]["billed_units"]["input_tokens"], 4);
    assert_eq!(body["usage"]["tokens"]["output_tokens"], 5);

    let mut r = req("command-a");
    r["stream"] = json!(true);
    let events = parse_sse(&mock.post_bearer("/v2/chat", &r).await.text().await.unwrap());
    let kinds: Vec<String> = events
        .iter()
        .map(|e| e.json()["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds.first().map(String::as_str), Some("message-start"));
    assert_eq!(kinds.last().map(String::as_str), Some("message-end"));
    let text: String = events
        .iter()
        .filter_map(|e| {
            e.json()["delta"]["message"]["content"]["text"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, "Hello! You said: hello there");
    let end = events.last().unwrap().json();
    assert_eq!(end["delta"]["usage"]["billed_units"]["output_tokens"], 5);

    let mut r = req("mock-tool");
    r["stream"] = json!(true);
    let events = parse_sse(&mock.post_bearer("/v2/chat", &r).await.text().await.unwrap());
    let args: String = events
        .iter()
        .filter(|e| e.json()["type"] == "tool-call-delta")
        .map(|e| {
            e.json()["delta"]["message"]["tool_calls"]["function"]["arguments"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(args, TOOL_ARGUMENTS);
    assert_eq!(events.last().unwrap().json()["delta"]["finish_reason"], "TOOL_CALL");

    let res = mock.post_bearer("/v2/chat", &req("mock-429")).await;
    assert_eq!(res.status(), 429);
    let body: Value = res.json().await.unwrap();
    assert!(body["message"].is_string());
}

#[tokio::test]
async fn embed_by_type() {
    let mock = spawn().await;
    let body: Value = mock
        .post_bearer(
            "/v2/embed",
            &json!({"model": "embed-v4.0", "texts": ["a b", "c"], "input_type": "search_document",
                    "embedding_types": ["float", "int8"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["response_type"], "embeddings_by_type");
    assert_eq!(body["embeddings"]["float"].as_array().unwrap().len(), 2);
    assert_eq!(body["embeddings"]["int8"][0].as_array().unwrap().len(), 8);
    assert_eq!(body["meta"]["billed_units"]["input_tokens"], 3);
}
