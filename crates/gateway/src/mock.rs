//! The in-gateway `mock` provider: OpenAI-shaped responses generated in process, with the
//! configured latency, time to first token and streaming speed. No network, so the quickstart
//! runs anywhere.
//!
//! It serves chat completions (whole and streamed) and embeddings. Legacy completions and the
//! Responses API are refused with a 400 that says so, streamed or not: answering them with
//! chat-completion chunks would be a stream no client of those APIs can read.

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
        Operation::Completions
        | Operation::Responses
        | Operation::Images
        | Operation::Transcriptions
        | Operation::Translations
        | Operation::Speech => Err(unserved(op)),
    }
}

/// The refusal of an operation the mock does not serve.
fn unserved(op: Operation) -> ProviderError {
    let what = match op {
        Operation::Responses => "the Responses API (/v1/responses)",
        Operation::Images => "image generation (/v1/images/generations)",
        Operation::Transcriptions | Operation::Translations | Operation::Speech => "audio",
        _ => "legacy completions (/v1/completions)",
    };
    ProviderError::new(
        ErrorKind::BadRequest,
        format!(
            "The mock provider serves chat completions, embeddings, moderations and rerank, not {what}; use /v1/chat/completions."
        ),
    )
}

/// A streamed chat completion: OpenAI SSE bytes, paced as configured. Other operations are
/// refused before anything is sent.
pub fn stream(
    op: Operation,
    request: &Json,
    model: &str,
    cfg: &MockConfig,
) -> Result<BoxStream<'static, Result<Bytes, ProviderError>>, ProviderError> {
    if op != Operation::Chat {
        return Err(unserved(op));
    }
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
    Ok(stream::iter(events)
        .then(|(delay, bytes)| async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok(bytes)
        })
        .boxed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_of_other_apis_are_refused_not_answered_in_chat_chunks() {
        let request = Json::new();
        let cfg = MockConfig::default();
        for op in [Operation::Responses, Operation::Completions] {
            let Err(e) = stream(op, &request, "m", &cfg) else {
                panic!("{op:?} streamed");
            };
            assert_eq!(e.kind, ErrorKind::BadRequest);
            assert!(e.message.contains("chat completions"), "{}", e.message);
        }
        assert!(stream(Operation::Chat, &request, "m", &cfg).is_ok());
    }
}
