//! Audio, from the OpenAI API reference "Audio": `POST /v1/audio/transcriptions` and
//! `/v1/audio/translations` (multipart: `file` and `model` required; `language`, `prompt`,
//! `response_format` of `json`, `text`, `srt`, `verbose_json` or `vtt`, `temperature`,
//! `timestamp_granularities[]`, `include[]`, `chunking_strategy`, `stream` accepted) and
//! `POST /v1/audio/speech` (JSON: `model`, `input`, `voice` required); Azure OpenAI's
//! `/openai/deployments/{deployment}/audio/...` with `?api-version=`, and Groq's
//! `/openai/v1/audio/...`. Anything else is refused with OpenAI's 400.
//!
//! Transcriptions answer a fixed text. The duration is the upload's, read from its WAV header
//! (0 for anything else): verbose_json's `duration`, and `usage` of type `duration` (Whisper
//! models) or `tokens` (models named `gpt-4o*`: 1 token per 100 ms of audio, 10 output
//! tokens). Speech answers a WAV (`response_format: wav`) or MP3-looking bytes, 400 bytes per
//! input character, streamed in 1 KiB chunks. Speech honours the fault models of the model (or
//! Azure deployment) name (`mock-429`, `mock-500`, `mock-503`, `mock-flaky-N`) in OpenAI's or
//! Azure's error shape, and `tps-N` in the name paces the chunks at N a second. A transcription
//! with `stream=true` (GPT-4o models only, as at OpenAI) answers one `transcript.text.delta`
//! event a word, then `transcript.text.done` with the text and usage (paced by `tps-N` too).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Response, StatusCode, Uri};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::openai::{azure_auth, bad_request, fault_response, openai_auth, Flavor};
use crate::scenario::{Act, Behaviour, Plan};
use crate::state::{MockState, Provider};
use crate::wire;

/// The transcript of every upload.
pub const TRANSCRIPT: &str = "The quick brown fox jumps over the lazy dog.";

const UPLOAD_FIELDS: [&str; 11] = [
    "file",
    "model",
    "language",
    "prompt",
    "response_format",
    "temperature",
    "timestamp_granularities[]",
    "include[]",
    "chunking_strategy",
    "stream",
    "known_speaker_names[]",
];

const SPEECH_FIELDS: [&str; 7] = [
    "model",
    "input",
    "voice",
    "instructions",
    "response_format",
    "speed",
    "stream_format",
];

/// The audio routes, OpenAI's, Groq's and Azure's.
pub fn routes() -> Router<MockState> {
    let mut r = Router::new();
    for prefix in ["/v1", "/openai/v1"] {
        r = r
            .route(&format!("{prefix}/audio/transcriptions"), post(openai_transcriptions))
            .route(&format!("{prefix}/audio/translations"), post(openai_translations))
            .route(&format!("{prefix}/audio/speech"), post(openai_speech));
    }
    r.route("/openai/deployments/{deployment}/audio/{what}", post(azure))
}

async fn openai_transcriptions(
    State(s): State<MockState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    openai_upload(&s, &uri, &headers, &body, false)
}

async fn openai_translations(State(s): State<MockState>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response<Body> {
    openai_upload(&s, &uri, &headers, &body, true)
}

fn openai_upload(s: &MockState, uri: &Uri, headers: &HeaderMap, body: &Bytes, translate: bool) -> Response<Body> {
    s.record(Provider::OpenAi, uri.path(), uri.query(), body);
    if let Err(res) = openai_auth(headers) {
        return res;
    }
    transcribe(headers, body, None, translate)
}

async fn openai_speech(State(s): State<MockState>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response<Body> {
    s.record(Provider::OpenAi, uri.path(), uri.query(), &body);
    if let Err(res) = openai_auth(&headers) {
        return res;
    }
    speak(&s, &headers, &body, None).await
}

async fn azure(
    State(s): State<MockState>,
    Path((deployment, what)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    s.record(Provider::Azure, uri.path(), uri.query(), &body);
    if let Err(res) = azure_auth(&headers, uri.query()) {
        return res;
    }
    match what.as_str() {
        "transcriptions" => transcribe(&headers, &body, Some(&deployment), false),
        "translations" => transcribe(&headers, &body, Some(&deployment), true),
        "speech" => speak(&s, &headers, &body, Some(&deployment)).await,
        _ => wire::json(
            StatusCode::NOT_FOUND,
            &[],
            &json!({"error": {"code": "404", "message": "Resource not found"}}),
        ),
    }
}

fn transcribe(headers: &HeaderMap, body: &[u8], deployment: Option<&str>, translate: bool) -> Response<Body> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(parts) = parts(content_type, body) else {
        return bad_request("Invalid multipart/form-data body.");
    };
    if let Some((k, _)) = parts.iter().find(|(k, _)| !UPLOAD_FIELDS.contains(&k.as_str())) {
        return bad_request(&format!("Unrecognized request argument supplied: {k}"));
    }
    let field = |name: &str| parts.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
    let Some(file) = field("file") else {
        return bad_request("you must provide a file parameter");
    };
    let model = match (deployment, field("model")) {
        (Some(d), _) => d.to_owned(),
        (None, Some(m)) => String::from_utf8_lossy(m).into_owned(),
        (None, None) => return bad_request("you must provide a model parameter"),
    };
    let seconds = wav_seconds(file).unwrap_or(0.0);
    let format = field("response_format").map_or("json".into(), |v| String::from_utf8_lossy(v).into_owned());
    let usage = if model.starts_with("gpt-4o") {
        let input = (seconds * 10.0).ceil() as u64;
        json!({"type": "tokens", "input_tokens": input, "output_tokens": 10, "total_tokens": input + 10})
    } else {
        json!({"type": "duration", "seconds": seconds.ceil()})
    };
    let text = |ct: &'static str, body: String| {
        let mut r = Response::new(Body::from(body));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        r
    };
    if field("stream").is_some_and(|v| v == b"true") {
        if !model.starts_with("gpt-4o") {
            return bad_request(&format!("Streaming is not supported for the {model} model."));
        }
        // One `transcript.text.delta` a word, then `transcript.text.done` with the whole text
        // and the usage; no `[DONE]`.
        let mut events: Vec<Bytes> = TRANSCRIPT
            .split_inclusive(' ')
            .map(|w| sse(&json!({"type": "transcript.text.delta", "delta": w})))
            .collect();
        events.push(sse(
            &json!({"type": "transcript.text.done", "text": TRANSCRIPT, "usage": usage}),
        ));
        let pause = crate::scenario::name_tokens_per_second(&model)
            .filter(|tps| *tps > 0.0)
            .map(|tps| std::time::Duration::from_secs_f64(1.0 / tps));
        let mut r = Response::new(Body::from_stream(async_stream::stream! {
            for e in events {
                yield Ok::<Bytes, std::io::Error>(e);
                if let Some(p) = pause {
                    tokio::time::sleep(p).await;
                }
            }
        }));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        return r;
    }
    match format.as_str() {
        "json" => wire::json(StatusCode::OK, &[], &json!({"text": TRANSCRIPT, "usage": usage})),
        "verbose_json" => wire::json(
            StatusCode::OK,
            &[],
            &json!({
                "task": if translate { "translate" } else { "transcribe" },
                "language": "english",
                "duration": seconds,
                "text": TRANSCRIPT,
                "segments": [{"id": 0, "seek": 0, "start": 0.0, "end": seconds, "text": TRANSCRIPT,
                              "tokens": [50364, 440, 1702], "temperature": 0.0, "avg_logprob": -0.2,
                              "compression_ratio": 1.0, "no_speech_prob": 0.01}],
                "usage": usage,
            }),
        ),
        "text" => text("text/plain; charset=utf-8", format!("{TRANSCRIPT}\n")),
        "srt" => text(
            "text/plain; charset=utf-8",
            format!(
                "1\n00:00:00,000 --> 00:00:{:02},000\n{TRANSCRIPT}\n\n",
                seconds.ceil() as u64
            ),
        ),
        "vtt" => text(
            "text/plain; charset=utf-8",
            format!(
                "WEBVTT\n\n00:00:00.000 --> 00:00:{:02}.000\n{TRANSCRIPT}\n\n",
                seconds.ceil() as u64
            ),
        ),
        other => bad_request(&format!("Invalid value for response_format: {other}")),
    }
}

/// One server-sent event of `value`.
fn sse(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

async fn speak(state: &MockState, headers: &HeaderMap, body: &[u8], deployment: Option<&str>) -> Response<Body> {
    let req: serde_json::Map<String, Value> = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return bad_request(&format!("We could not parse the JSON body of your request. ({e})")),
    };
    if let Some(k) = req.keys().find(|k| !SPEECH_FIELDS.contains(&k.as_str())) {
        return bad_request(&format!("Unrecognized request argument supplied: {k}"));
    }
    if deployment.is_none() && req.get("model").and_then(Value::as_str).is_none() {
        return bad_request("you must provide a model parameter");
    }
    let (Some(input), Some(_)) = (req.get("input").and_then(Value::as_str), req.get("voice")) else {
        return bad_request("'input' and 'voice' are required properties");
    };
    let model = deployment
        .or_else(|| req.get("model").and_then(Value::as_str))
        .unwrap_or_default();
    let plan = Plan::decide(state, Behaviour::from_model(model), model, headers).await;
    if let Act::Fail(fault) = plan.act {
        let flavor = deployment.map_or(Flavor::OpenAi, |deployment| Flavor::Azure { deployment });
        return fault_response(flavor, fault, model, 0);
    }
    let pause = plan.token_interval;
    let format = req.get("response_format").and_then(Value::as_str).unwrap_or("mp3");
    let samples = input.chars().count() * 400;
    let (ct, audio) = if format == "wav" {
        ("audio/wav", wav(samples))
    } else {
        let mut b = b"ID3\x04\0\0\0\0\0\0".to_vec();
        b.resize(10 + samples, 0xFF);
        ("audio/mpeg", b)
    };
    let audio = Bytes::from(audio);
    let chunks = async_stream::stream! {
        for start in (0..audio.len()).step_by(1024) {
            yield Ok::<Bytes, std::io::Error>(audio.slice(start..audio.len().min(start + 1024)));
            match pause {
                Some(p) => tokio::time::sleep(p).await,
                None => tokio::task::yield_now().await,
            }
        }
    };
    let mut r = Response::new(Body::from_stream(chunks));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    r
}

/// An 8 kHz mono 8-bit WAV of `samples` samples of silence.
fn wav(samples: usize) -> Vec<u8> {
    let data = u32::try_from(samples).unwrap_or(u32::MAX);
    let mut v = Vec::with_capacity(44 + samples);
    v.extend_from_slice(b"RIFF");
    v.extend_from_slice(&(36 + data).to_le_bytes());
    v.extend_from_slice(b"WAVEfmt ");
    for n in [16u32, 0x0001_0001, 8000, 8000, 0x0008_0001] {
        v.extend_from_slice(&n.to_le_bytes());
    }
    v.extend_from_slice(b"data");
    v.extend_from_slice(&data.to_le_bytes());
    v.resize(44 + samples, 0x80);
    v
}

/// Seconds of a WAV file: the `data` chunk's size over the `fmt ` chunk's byte rate.
fn wav_seconds(file: &[u8]) -> Option<f64> {
    if file.len() < 12 || &file[..4] != b"RIFF" || &file[8..12] != b"WAVE" {
        return None;
    }
    let (mut at, mut rate) = (12, 0u32);
    while at + 8 <= file.len() {
        let size = u32::from_le_bytes(file[at + 4..at + 8].try_into().ok()?) as usize;
        match &file[at..at + 4] {
            b"fmt " => rate = u32::from_le_bytes(file.get(at + 16..at + 20)?.try_into().ok()?),
            b"data" if rate > 0 => return Some(size as f64 / f64::from(rate)),
            _ => {}
        }
        at += 8 + size + (size & 1);
    }
    None
}

/// The parts of a whole `multipart/form-data` body: (name, content), in order.
fn parts<'a>(content_type: &str, body: &'a [u8]) -> Option<Vec<(String, &'a [u8])>> {
    let boundary = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))?
        .trim_matches('"');
    let delimiter = format!("--{boundary}");
    let mut out = Vec::new();
    let mut rest = body.strip_prefix(delimiter.as_bytes())?;
    let end = format!("\r\n--{boundary}");
    while let Some(after) = rest.strip_prefix(b"\r\n") {
        let head_end = find(after, b"\r\n\r\n")?;
        let head = std::str::from_utf8(&after[..head_end]).ok()?;
        let name = head.split(';').find_map(|p| p.trim().strip_prefix("name="))?;
        let name = name.split("\r\n").next()?.trim_matches('"').to_owned();
        let content = &after[head_end + 4..];
        let len = find(content, end.as_bytes())?;
        out.push((name, &content[..len]));
        rest = &content[len + end.len()..];
    }
    rest.starts_with(b"--").then_some(out)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
