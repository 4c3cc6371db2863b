//! The in-gateway `mock` provider: OpenAI-shaped responses generated in process, with the
//! configured latency, time to first token and streaming speed. No network, so the quickstart
//! runs anywhere.

use std::time::Duration;

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use switchyard_config::MockConfig;
use switchyard_providers::{mock, sse, ErrorKind, Json, Operation, ProviderError, Translated};

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn request_id() -> String {
    format!("chatcmpl-swy{:016x}", rand::random::<u64>())
}

/// A full (non-streaming) response.
pub async fn complete(
    op: Operation,
    request: &Json,
    model: &str,
    cfg: &MockConfig,
) -> Result<Translated, ProviderError> {
    if cfg.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(cfg.latency_ms)).await;
    }
    match op {
        Operation::Embeddings => {
            let (body, usage) = mock::embeddings(request, model, cfg)
                .ok_or_else(|| ProviderError::new(ErrorKind::BadRequest, "'input' is a required property"))?;
            Ok(Translated {
                body,
                usage: Some(usage),
            })
        }
        Operation::Chat => {
            let text = mock::reply(request, cfg);
            let usage = mock::usage(request, &text);
            Ok(Translated {
                body: mock::completion(&request_id(), model, now_secs(), &text, &usage),
                usage: Some(usage),
            })
        }
        Operation::Moderations | Operation::Rerank => Ok(crate::mock_extra::answer(op, request, model)),
        Operation::Completions | Operation::Responses | Operation::Images => Err(ProviderError::new(
            ErrorKind::BadRequest,
            "the mock provider serves chat completions, embeddings, moderations and rerank",
        )),
    }
}

/// A streamed response: OpenAI SSE bytes, paced as configured.
pub fn stream(request: &Json, model: &str, cfg: &MockConfig) -> BoxStream<'static, Result<Bytes, ProviderError>> {
    let text = mock::reply(request, cfg);
    let usage = mock::usage(request, &text);
    let include_usage = request
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    let id = request_id();
    let created = now_secs();
    let model = model.to_owned();
    let pieces = mock::stream_pieces(&text);
    let ttft = Duration::from_millis(cfg.time_to_first_token_ms);
    let per_token = cfg
        .tokens_per_second
        .map(|t| Duration::from_secs_f64(1.0 / f64::from(t)));
    let n = pieces.len();
    let mut events: Vec<(Duration, Bytes)> = Vec::with_capacity(n + 3);
    for (i, piece) in pieces.iter().enumerate() {
        let delay = if i == 0 { ttft } else { per_token.unwrap_or_default() };
        events.push((delay, mock::chunk(&id, &model, created, Some(piece), i == 0, false)));
    }
    events.push((Duration::ZERO, mock::chunk(&id, &model, created, None, false, true)));
    // The usage chunk is always produced so the gateway can count it; it is only forwarded to
    // clients that asked for it (see `proxy`), exactly like an OpenAI upstream with include_usage.
    let _ = include_usage;
    events.push((Duration::ZERO, mock::usage_chunk(&id, &model, created, &usage)));
    events.push((Duration::ZERO, Bytes::from_static(sse::DONE)));
    stream::iter(events)
        .then(|(delay, bytes)| async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok(bytes)
        })
        .boxed()
}
