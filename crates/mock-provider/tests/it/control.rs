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

/// The ledger: one entry per chat request, filed under `x-request-id` (else the body's `user`),
/// with the completion tokens actually written before the end, a cut or the client leaving.
#[tokio::test]
async fn ledger_records_tokens_written_per_request_id() {
    use switchyard_mock_provider::{Outcome, Served};

    let mock = spawn().await;
    let ledger = || async {
        mock.http
            .get(mock.url("/mock/ledger"))
            .send()
            .await
            .unwrap()
            .json::<Vec<Served>>()
            .await
            .unwrap()
    };
    // Whole and streamed, completed: "Hello! You said: one two three four" is 7 tokens.
    let mut body = chat("gpt", false);
    body["user"] = json!("by-user-field");
    mock.post_bearer("/v1/chat/completions", &body)
        .await
        .text()
        .await
        .unwrap();
    let mut body = chat("gpt", true);
    body["stream_options"] = json!({"include_usage": true});
    mock.http
        .post(mock.url("/v1/chat/completions"))
        .bearer_auth("test")
        .header("x-request-id", "by-header")
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Cut after three token frames; whole body cut halfway; an error.
    let mut body = chat("mock-cut", true);
    body["user"] = json!("cut-stream");
    let _ = mock.post_bearer("/v1/chat/completions", &body).await.text().await;
    let mut body = chat("mock-cut", false);
    body["user"] = json!("cut-whole");
    let _ = mock.post_bearer("/v1/chat/completions", &body).await.text().await;
    let mut body = chat("mock-503", false);
    body["user"] = json!("failed");
    mock.post_bearer("/v1/chat/completions", &body)
        .await
        .text()
        .await
        .unwrap();
    // Abandoned after the first chunk of a paced stream (10 tokens a second).
    let mut body = chat("gpt", true);
    body["user"] = json!("abandoned");
    let mut res = mock
        .http
        .post(mock.url("/v1/chat/completions"))
        .bearer_auth("test")
        .header("x-mock-tokens-per-second", "10")
        .json(&body)
        .send()
        .await
        .unwrap();
    let first = res.chunk().await.unwrap().unwrap();
    assert!(!first.is_empty());
    drop(res);

    let mut entries = Vec::new();
    for _ in 0..100 {
        entries = ledger().await;
        if entries.len() == 6 && entries.iter().all(|e| e.outcome != Outcome::Pending) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let by_id = |id: &str| {
        entries
            .iter()
            .find(|e| e.id.as_deref() == Some(id))
            .unwrap_or_else(|| panic!("no entry {id} in {entries:?}"))
            .clone()
    };
    let whole = by_id("by-user-field");
    assert_eq!(
        (
            whole.outcome,
            whole.prompt_tokens,
            whole.completion_tokens,
            whole.usage_sent,
            whole.stream
        ),
        (Outcome::Completed, 4, 7, true, false)
    );
    let streamed = by_id("by-header");
    assert_eq!(
        (
            streamed.outcome,
            streamed.completion_tokens,
            streamed.usage_sent,
            streamed.stream
        ),
        (Outcome::Completed, 7, true, true)
    );
    let cut = by_id("cut-stream");
    assert_eq!(
        (cut.outcome, cut.completion_tokens, cut.planned_completion_tokens),
        (Outcome::Cut, 3, 7)
    );
    let cut = by_id("cut-whole");
    assert_eq!(
        (cut.outcome, cut.completion_tokens, cut.usage_sent),
        (Outcome::Cut, 0, false)
    );
    let failed = by_id("failed");
    assert_eq!(
        (failed.outcome, failed.status, failed.completion_tokens),
        (Outcome::Error, 503, 0)
    );
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(entries
        .iter()
        .all(|e| now_ms - 60_000 < e.received_ms && e.received_ms <= now_ms));
    let abandoned = by_id("abandoned");
    assert_eq!(abandoned.outcome, Outcome::Cancelled, "{abandoned:?}");
    assert!(
        (1..7).contains(&abandoned.completion_tokens),
        "abandoned after the first chunk: {abandoned:?}"
    );
    assert!(!abandoned.usage_sent);

    mock.http.post(mock.url("/mock/reset")).send().await.unwrap();
    assert!(ledger().await.is_empty());
}

/// A model named `o200k` counts as OpenAI counts gpt-4o's and streams a chunk per token: the
/// usage, the chunks and the ledger agree.
#[tokio::test]
async fn o200k_models_count_tokenizer_tokens_and_stream_one_a_chunk() {
    use switchyard_mock_provider::Served;

    let mock = spawn().await;
    let mut body = chat("soak-gpt-o200k", true);
    body["stream_options"] = json!({"include_usage": true});
    body["user"] = json!("tok");
    let text = mock
        .post_bearer("/v1/chat/completions", &body)
        .await
        .text()
        .await
        .unwrap();
    let mut contents = Vec::new();
    let mut usage = Value::Null;
    for line in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if line == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(line).unwrap();
        if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
            if !c.is_empty() {
                contents.push(c.to_owned());
            }
        }
        if !v["usage"].is_null() {
            usage = v["usage"].clone();
        }
    }
    // "one two three four": 4 tokens, one message (3) and the reply's priming (3).
    assert_eq!(usage["prompt_tokens"], 10, "{usage}");
    // "Hello" "!" " You" " said" ":" " one" " two" " three" " four".
    assert_eq!(contents.concat(), "Hello! You said: one two three four");
    assert_eq!(contents.len(), 9);
    assert_eq!(usage["completion_tokens"], 9, "{usage}");
    let entries = mock
        .http
        .get(mock.url("/mock/ledger"))
        .send()
        .await
        .unwrap()
        .json::<Vec<Served>>()
        .await
        .unwrap();
    let e = entries.iter().find(|e| e.id.as_deref() == Some("tok")).unwrap();
    assert_eq!((e.prompt_tokens, e.completion_tokens), (10, 9));
}
