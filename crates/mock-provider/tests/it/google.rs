//! Gemini API, Vertex AI and the OAuth token endpoint.

use serde_json::{json, Value};

use crate::common::{parse_sse, spawn, Mock};

fn req() -> Value {
    json!({
        "systemInstruction": {"parts": [{"text": "be brief"}]},
        "contents": [{"role": "user", "parts": [{"text": "hello there"}]}]
    })
}

async fn gemini(mock: &Mock, path: &str, body: &Value) -> reqwest::Response {
    mock.http
        .post(mock.url(path))
        .header("x-goog-api-key", "test")
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn generate_content_and_auth() {
    let mock = spawn().await;
    let body: Value = gemini(&mock, "/v1beta/models/gemini-2.5-flash:generateContent", &req())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["candidates"][0]["content"]["parts"][0]["text"],
        "Hello! You said: hello there"
    );
    assert_eq!(body["candidates"][0]["finishReason"], "STOP");
    assert_eq!(body["usageMetadata"]["promptTokenCount"], 4);
    assert_eq!(body["usageMetadata"]["candidatesTokenCount"], 5);
    assert_eq!(body["usageMetadata"]["totalTokenCount"], 9);

    // The key may come in the query instead.
    let res = mock
        .http
        .post(mock.url("/v1beta/models/gemini-2.5-flash:generateContent?key=abc"))
        .json(&req())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    let res = mock
        .http
        .post(mock.url("/v1beta/models/gemini-2.5-flash:generateContent"))
        .json(&req())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["status"], "PERMISSION_DENIED");

    let res = mock
        .http
        .post(mock.url("/v1beta/models/gemini-2.5-flash:generateContent?key=invalid"))
        .json(&req())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["details"][0]["reason"], "API_KEY_INVALID");
}

#[tokio::test]
async fn streams_as_sse_or_json_array() {
    let mock = spawn().await;
    let res = gemini(
        &mock,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        &req(),
    )
    .await;
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = res.text().await.unwrap();
    assert!(text.contains("\r\n\r\n"));
    let chunks: Vec<Value> = parse_sse(&text).iter().map(|e| e.json()).collect();
    assert_eq!(chunks.len(), 5);
    let joined: String = chunks
        .iter()
        .filter_map(|c| c["candidates"][0]["content"]["parts"][0]["text"].as_str())
        .collect();
    assert_eq!(joined, "Hello! You said: hello there");
    let last = chunks.last().unwrap();
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert_eq!(last["usageMetadata"]["candidatesTokenCount"], 5);

    let res = gemini(&mock, "/v1beta/models/gemini-2.5-flash:streamGenerateContent", &req()).await;
    let array: Vec<Value> = res.json().await.unwrap();
    assert_eq!(array.len(), 5);

    // Errors of a JSON-array stream come wrapped in an array too.
    let res = gemini(&mock, "/v1beta/models/mock-429:streamGenerateContent", &req()).await;
    assert_eq!(res.status(), 429);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body[0]["error"]["status"], "RESOURCE_EXHAUSTED");
}

#[tokio::test]
async fn tool_calls_safety_and_faults() {
    let mock = spawn().await;
    let body: Value = gemini(&mock, "/v1beta/models/mock-tool:generateContent", &req())
        .await
        .json()
        .await
        .unwrap();
    let call = &body["candidates"][0]["content"]["parts"][0]["functionCall"];
    assert_eq!(call["name"], "get_weather");
    assert_eq!(call["args"], json!({"city": "Paris"}));

    let body: Value = gemini(&mock, "/v1beta/models/mock-content-policy:generateContent", &req())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["candidates"][0]["finishReason"], "SAFETY");

    for (model, status, text) in [
        ("mock-429", 429, "RESOURCE_EXHAUSTED"),
        ("mock-500", 500, "INTERNAL"),
        ("mock-503", 503, "UNAVAILABLE"),
        ("mock-context-length", 400, "INVALID_ARGUMENT"),
    ] {
        let res = gemini(&mock, &format!("/v1beta/models/{model}:generateContent"), &req()).await;
        assert_eq!(res.status(), status);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["status"], text);
        assert_eq!(body["error"]["code"], status);
    }
}

#[tokio::test]
async fn embeddings_single_and_batch() {
    let mock = spawn().await;
    let body: Value = gemini(
        &mock,
        "/v1beta/models/gemini-embedding-001:embedContent",
        &json!({"content": {"parts": [{"text": "hi"}]}, "outputDimensionality": 4}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(body["embedding"]["values"].as_array().unwrap().len(), 4);

    let body: Value = gemini(
        &mock,
        "/v1beta/models/gemini-embedding-001:batchEmbedContents",
        &json!({"requests": [
            {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "hi"}]}},
            {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "there"}]}}
        ]}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(body["embeddings"].as_array().unwrap().len(), 2);
    assert_eq!(body["embeddings"][0]["values"].as_array().unwrap().len(), 8);
}

#[tokio::test]
async fn vertex_needs_a_bearer_and_serves_both_publishers() {
    let mock = spawn().await;
    let path = "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent";
    let res = mock.http.post(mock.url(path)).json(&req()).send().await.unwrap();
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["status"], "UNAUTHENTICATED");

    let res = mock.post_bearer(path, &req()).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert!(body["createTime"].is_string());
    assert_eq!(
        body["candidates"][0]["content"]["parts"][0]["text"],
        "Hello! You said: hello there"
    );

    let claude = json!({"anthropic_version": "vertex-2023-10-16", "max_tokens": 50,
                        "messages": [{"role": "user", "content": "hi"}]});
    let res = mock
        .post_bearer(
            "/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-sonnet-4:rawPredict",
            &claude,
        )
        .await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["type"], "message");
    assert_eq!(body["content"][0]["text"], "Hello! You said: hi");

    let res = mock
        .post_bearer(
            "/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-sonnet-4:streamRawPredict",
            &claude,
        )
        .await;
    let events = parse_sse(&res.text().await.unwrap());
    assert_eq!(events.last().unwrap().event.as_deref(), Some("message_stop"));

    let body: Value = mock
        .post_bearer(
            "/v1/projects/p/locations/us-central1/publishers/google/models/text-embedding-005:predict",
            &json!({"instances": [{"content": "a b"}], "parameters": {"outputDimensionality": 5}}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["predictions"][0]["embeddings"]["values"].as_array().unwrap().len(),
        5
    );
    assert_eq!(body["predictions"][0]["embeddings"]["statistics"]["token_count"], 2);
}

#[tokio::test]
async fn oauth_token_endpoint() {
    let mock = spawn().await;
    let res = mock
        .http
        .post(mock.url("/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=aaa.bbb.ccc")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["expires_in"], 3599);
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["access_token"].as_str().unwrap().starts_with("ya29."));

    let res = mock
        .http
        .post(mock.url("/token"))
        .body("grant_type=password&username=x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "unsupported_grant_type");
}
