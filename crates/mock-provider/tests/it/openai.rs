//! OpenAI and Azure OpenAI.

use base64::Engine as _;
use serde_json::{json, Value};
use switchyard_mock_provider::TOOL_ARGUMENTS;

use crate::common::{parse_sse, spawn};

fn chat(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": text}]}
    ]})
}

#[tokio::test]
async fn chat_completion_replies_with_usage() {
    let mock = spawn().await;
    let res = mock
        .post_bearer("/v1/chat/completions", &chat("gpt-4o", "hello there"))
        .await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("x-request-id"));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gpt-4o");
    assert_eq!(body["choices"][0]["message"]["content"], "Hello! You said: hello there");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 4);
    assert_eq!(body["usage"]["completion_tokens"], 5);
    assert_eq!(body["usage"]["total_tokens"], 9);
}

#[tokio::test]
async fn chat_stream_reports_usage_only_when_asked() {
    let mock = spawn().await;
    let mut req = chat("gpt-4o", "one two three");
    req["stream"] = json!(true);
    let res = mock.post_bearer("/v1/chat/completions", &req).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let events = parse_sse(&res.text().await.unwrap());
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| e.json()).collect();
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello! You said: one two three");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    // One chunk per word, plus the role chunk and the finish chunk.
    assert_eq!(chunks.len(), 6 + 2);
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "stop");

    req["stream_options"] = json!({"include_usage": true});
    let res = mock.post_bearer("/v1/chat/completions", &req).await;
    let events = parse_sse(&res.text().await.unwrap());
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| e.json()).collect();
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["prompt_tokens"], 5);
    assert_eq!(last["usage"]["completion_tokens"], 6);
    assert!(chunks[..chunks.len() - 1].iter().all(|c| c["usage"].is_null()));
}

#[tokio::test]
async fn tool_calls_whole_and_streamed() {
    let mock = spawn().await;
    let res = mock
        .post_bearer("/v1/chat/completions", &chat("mock-tool", "weather?"))
        .await;
    let body: Value = res.json().await.unwrap();
    let call = &body["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], TOOL_ARGUMENTS);
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");

    let mut req = chat("mock-tool", "weather?");
    req["stream"] = json!(true);
    let events = parse_sse(
        &mock
            .post_bearer("/v1/chat/completions", &req)
            .await
            .text()
            .await
            .unwrap(),
    );
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| e.json()).collect();
    let args: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(args, TOOL_ARGUMENTS);
    assert_eq!(
        chunks[0]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    assert!(chunks.len() > 3, "arguments arrive in several deltas");
}

#[tokio::test]
async fn faults_use_openai_error_shapes() {
    let mock = spawn().await;
    let res = mock.post_bearer("/v1/chat/completions", &chat("mock-429", "x")).await;
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "1");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");

    for (model, status) in [("mock-500", 500), ("mock-503", 503)] {
        let res = mock.post_bearer("/v1/chat/completions", &chat(model, "x")).await;
        assert_eq!(res.status(), status);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["type"], "server_error");
    }

    let res = mock
        .post_bearer("/v1/chat/completions", &chat("mock-context-length", "x"))
        .await;
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "context_length_exceeded");
    assert_eq!(body["error"]["type"], "invalid_request_error");

    let res = mock
        .post_bearer("/v1/chat/completions", &chat("mock-content-policy", "x"))
        .await;
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "content_policy_violation");

    let res = mock
        .http
        .post(mock.url("/v1/chat/completions"))
        .json(&chat("gpt-4o", "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = mock
        .http
        .post(mock.url("/v1/chat/completions"))
        .bearer_auth("invalid-key")
        .json(&chat("gpt-4o", "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key");
}

#[tokio::test]
async fn flaky_fails_n_times_per_model() {
    let mock = spawn().await;
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(
                mock.post_bearer("/v1/chat/completions", &chat("mock-flaky-2", "x"))
                    .await
                    .status()
                    .as_u16(),
            );
        }
        v
    };
    assert_eq!(statuses, [500, 500, 200, 200]);
    // Another name has its own count.
    let res = mock
        .post_bearer("/v1/chat/completions", &chat("b-mock-flaky-1", "x"))
        .await;
    assert_eq!(res.status(), 500);
}

#[tokio::test]
async fn echo_params_returns_the_request_body() {
    let mock = spawn().await;
    let req =
        json!({"model": "mock-echo-params", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.25});
    let body: Value = mock
        .post_bearer("/v1/chat/completions", &req)
        .await
        .json()
        .await
        .unwrap();
    let echoed: Value = serde_json::from_str(body["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(echoed, req);
}

#[tokio::test]
async fn embeddings_are_deterministic_floats_or_base64() {
    let mock = spawn().await;
    let req = json!({"model": "text-embed-mock", "input": ["alpha beta", "gamma"]});
    let body: Value = mock.post_bearer("/v1/embeddings", &req).await.json().await.unwrap();
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    let first: Vec<f32> = serde_json::from_value(body["data"][0]["embedding"].clone()).unwrap();
    assert_eq!(first.len(), 8);
    assert_eq!(body["usage"]["prompt_tokens"], 3);

    let again: Value = mock.post_bearer("/v1/embeddings", &req).await.json().await.unwrap();
    assert_eq!(again["data"], body["data"]);

    let req = json!({"model": "text-embed-mock", "input": "alpha beta", "encoding_format": "base64", "dimensions": 16});
    let body: Value = mock.post_bearer("/v1/embeddings", &req).await.json().await.unwrap();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(body["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    assert_eq!(raw.len(), 16 * 4);
    let decoded: Vec<f32> = raw
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let req = json!({"model": "text-embed-mock", "input": "alpha beta", "dimensions": 16});
    let floats: Value = mock.post_bearer("/v1/embeddings", &req).await.json().await.unwrap();
    let floats: Vec<f32> = serde_json::from_value(floats["data"][0]["embedding"].clone()).unwrap();
    assert_eq!(decoded, floats);
}

#[tokio::test]
async fn legacy_completions_and_models() {
    let mock = spawn().await;
    let body: Value = mock
        .post_bearer(
            "/v1/completions",
            &json!({"model": "gpt-3.5-turbo-instruct", "prompt": "say hi"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["choices"][0]["text"], "Hello! You said: say hi");

    let res = mock
        .http
        .get(mock.url("/v1/models"))
        .bearer_auth("k")
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    assert!(body["data"].as_array().unwrap().iter().any(|m| m["id"] == "mock-tool"));
}

#[tokio::test]
async fn responses_api_plain_and_streamed() {
    let mock = spawn().await;
    let req = json!({"model": "gpt-4.1", "instructions": "be kind", "input": "tell me"});
    let body: Value = mock.post_bearer("/v1/responses", &req).await.json().await.unwrap();
    assert_eq!(body["object"], "response");
    assert_eq!(body["status"], "completed");
    assert_eq!(body["output"][0]["content"][0]["text"], "Hello! You said: tell me");
    assert_eq!(body["usage"]["input_tokens"], 4);
    assert_eq!(body["usage"]["output_tokens"], 5);

    let req = json!({"model": "gpt-4.1", "input": [{"role": "user", "content": [{"type": "input_text", "text": "tell me"}]}], "stream": true});
    let events = parse_sse(&mock.post_bearer("/v1/responses", &req).await.text().await.unwrap());
    let kinds: Vec<&str> = events.iter().map(|e| e.event.as_deref().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"response.created"));
    assert_eq!(kinds.last(), Some(&"response.completed"));
    let text: String = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("response.output_text.delta"))
        .map(|e| e.json()["delta"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(text, "Hello! You said: tell me");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.json()["sequence_number"], i);
    }

    let req = json!({"model": "mock-tool", "input": "weather", "stream": true});
    let events = parse_sse(&mock.post_bearer("/v1/responses", &req).await.text().await.unwrap());
    let args: String = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("response.function_call_arguments.delta"))
        .map(|e| e.json()["delta"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(args, TOOL_ARGUMENTS);
}

#[tokio::test]
async fn azure_deployments_need_key_and_api_version() {
    let mock = spawn().await;
    let path = "/openai/deployments/my-gpt/chat/completions";
    let res = mock
        .http
        .post(mock.url(&format!("{path}?api-version=2024-10-21")))
        .json(&chat("", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = mock
        .http
        .post(mock.url(path))
        .header("api-key", "k")
        .json(&chat("", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);

    let res = mock
        .http
        .post(mock.url(&format!("{path}?api-version=2024-10-21")))
        .header("api-key", "k")
        .json(&json!({"messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["model"], "my-gpt");
    assert!(body["prompt_filter_results"].is_array());
    assert_eq!(body["choices"][0]["message"]["content"], "Hello! You said: hi");

    // The deployment name selects the behaviour.
    let res = mock
        .http
        .post(mock.url("/openai/deployments/mock-429/chat/completions?api-version=2024-10-21"))
        .header("api-key", "k")
        .json(&json!({"messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "1");

    let res = mock
        .http
        .post(mock.url("/openai/deployments/emb/embeddings?api-version=2024-10-21"))
        .header("api-key", "k")
        .json(&json!({"input": "hi"}))
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["data"][0]["embedding"].as_array().unwrap().len(), 8);
}
