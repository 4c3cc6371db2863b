//! Counters, last requests, timing knobs, broken and abandoned streams.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchyard_mock_provider::Provider;

use crate::common::spawn;

fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "one two three four"}]})
}

#[tokio::test]
async fn counts_requests_and_streams_and_resets() {
    let mock = spawn().await;
    mock.post_bearer("/v1/chat/completions", &chat("gpt", false))
        .await
        .text()
        .await
        .unwrap();
    mock.post_bearer("/v1/chat/completions", &chat("gpt", true))
        .await
        .text()
        .await
        .unwrap();
    let stats = mock.wait_stats(|s| s.streams_completed == 1).await;
    assert_eq!(stats.requests["/v1/chat/completions"], 2);
    assert_eq!(stats.requests_total, 2);
    assert_eq!(stats.streams_started, 1);
    assert_eq!(stats.streams_cancelled, 0);

    let res = mock.http.post(mock.url("/mock/reset")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let stats = mock.stats().await;
    assert_eq!(stats.requests_total, 0);
    assert!(stats.requests.is_empty());
}

#[tokio::test]
async fn last_request_per_provider() {
    let mock = spawn().await;
    let res = mock
        .http
        .get(mock.url("/mock/last-request?provider=openai"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let res = mock
        .http
        .get(mock.url("/mock/last-request?provider=nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);

    let sent = chat("gpt", false);
    mock.post_bearer("/v1/chat/completions", &sent)
        .await
        .text()
        .await
        .unwrap();
    let res = mock
        .http
        .get(mock.url("/mock/last-request?provider=openai"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-mock-path"], "/v1/chat/completions");
    let got: Value = res.json().await.unwrap();
    assert_eq!(got, sent);
    assert!(mock.state.last_request(Provider::OpenAi).is_some());
    assert!(mock.state.last_request(Provider::Cohere).is_none());
}

#[tokio::test]
async fn cut_streams_break_the_connection() {
    let mock = spawn().await;
    let mut res = mock.post_bearer("/v1/chat/completions", &chat("mock-cut", true)).await;
    assert_eq!(res.status(), 200);
    let mut received = Vec::new();
    let err = loop {
        match res.chunk().await {
            Ok(Some(c)) => received.extend_from_slice(&c),
            Ok(None) => panic!("a cut stream must not end cleanly"),
            Err(e) => break e,
        }
    };
    let text = String::from_utf8(received).unwrap();
    assert!(!text.contains("[DONE]"), "no terminal event: {text}; {err}");
    assert_eq!(
        text.matches("\"content\":").count(),
        1 + 3,
        "role chunk and three tokens"
    );
    let stats = mock.wait_stats(|s| s.streams_cut == 1).await;
    assert_eq!(stats.streams_completed, 0);

    // Non-streaming: half a body, then the connection drops.
    let res = mock.post_bearer("/v1/chat/completions", &chat("mock-cut", false)).await;
    assert!(res.bytes().await.is_err());
}

#[tokio::test]
async fn abandoned_streams_count_as_cancelled() {
    let mock = spawn().await;
    let mut res = mock
        .http
        .post(mock.url("/v1/chat/completions"))
        .bearer_auth("k")
        .header("x-mock-tokens-per-second", "20")
        .json(&chat("gpt", true))
        .send()
        .await
        .unwrap();
    res.chunk().await.unwrap().unwrap();
    drop(res);
    let stats = mock.wait_stats(|s| s.streams_cancelled == 1).await;
    assert_eq!(stats.streams_completed, 0);
}

#[tokio::test]
async fn slow_first_token_delay_and_pacing() {
    let mock = spawn().await;
    // A first token a second away: headers that come "at once" come well inside it, even on a
    // loaded machine.
    let start = Instant::now();
    let mut res = mock
        .post_bearer("/v1/chat/completions", &chat("mock-slow-1s", true))
        .await;
    let headers = start.elapsed();
    assert!(
        headers < Duration::from_millis(700),
        "headers come at once: {headers:?}"
    );
    res.chunk().await.unwrap().unwrap();
    assert!(start.elapsed() >= Duration::from_secs(1));
    res.text().await.unwrap();

    let start = Instant::now();
    mock.post_bearer("/v1/chat/completions", &chat("mock-slow-200ms", false))
        .await
        .text()
        .await
        .unwrap();
    assert!(start.elapsed() >= Duration::from_millis(200));

    let start = Instant::now();
    let res = mock
        .http
        .post(mock.url("/v1/chat/completions"))
        .bearer_auth("k")
        .header("x-mock-delay-ms", "150")
        .json(&chat("gpt", false))
        .send()
        .await
        .unwrap();
    assert!(start.elapsed() >= Duration::from_millis(150));
    assert_eq!(res.status(), 200);

    // Seven tokens at 20/s: six gaps of 50 ms.
    let start = Instant::now();
    mock.http
        .post(mock.url("/v1/chat/completions"))
        .bearer_auth("k")
        .header("x-mock-tokens-per-second", "20")
        .json(&chat("gpt", true))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(start.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn unknown_paths_are_404() {
    let mock = spawn().await;
    let res = mock.http.post(mock.url("/v9/nothing")).send().await.unwrap();
    assert_eq!(res.status(), 404);
}
