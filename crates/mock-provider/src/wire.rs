//! Pieces every wire format shares: JSON responses, SSE frames, and the streaming body that
//! paces frames, breaks on purpose (`mock-cut`) and notices a client that went away.

use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{header, HeaderName, HeaderValue, Response, StatusCode};
use axum::response::IntoResponse;
use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

use crate::scenario::CUT_AFTER;
use crate::state::{MockState, Tally};

pub const JSON: HeaderValue = HeaderValue::from_static("application/json");
pub const EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream; charset=utf-8");

/// Serialises `value` (serde_json cannot fail on the `json!` values and plain structs used here;
/// if it ever did, the body says so rather than panicking).
pub fn to_vec(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|e| format!("{{\"mock_serialisation_error\":\"{e}\"}}").into_bytes())
}

/// A JSON response with extra headers.
pub fn json(status: StatusCode, headers: &[(HeaderName, HeaderValue)], value: &impl Serialize) -> Response<Body> {
    json_bytes(status, headers, to_vec(value))
}

pub fn json_bytes(status: StatusCode, headers: &[(HeaderName, HeaderValue)], body: Vec<u8>) -> Response<Body> {
    let mut res = Response::new(Body::from(body));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, JSON);
    for (name, value) in headers {
        h.insert(name.clone(), value.clone());
    }
    res
}

/// `data: <json>\n\n`
pub fn sse_data(value: &impl Serialize) -> Bytes {
    let mut buf = BytesMut::with_capacity(256);
    buf.put_slice(b"data: ");
    buf.put_slice(&to_vec(value));
    buf.put_slice(b"\n\n");
    buf.freeze()
}

/// `event: <name>\ndata: <json>\n\n`
pub fn sse_event(name: &str, value: &impl Serialize) -> Bytes {
    let mut buf = BytesMut::with_capacity(256);
    buf.put_slice(b"event: ");
    buf.put_slice(name.as_bytes());
    buf.put_slice(b"\ndata: ");
    buf.put_slice(&to_vec(value));
    buf.put_slice(b"\n\n");
    buf.freeze()
}

/// Unix time in milliseconds.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn hv(value: impl ToString) -> HeaderValue {
    HeaderValue::from_str(&value.to_string()).unwrap_or(HeaderValue::from_static("invalid"))
}

pub fn name(n: &'static str) -> HeaderName {
    HeaderName::from_static(n)
}

/// How long a cut stream waits so the bytes before the cut reach the client.
const CUT_FLUSH: Duration = Duration::from_millis(50);

/// One frame of a streamed body. Token frames carry model output: they are the ones paced by
/// `x-mock-tokens-per-second` and counted by `mock-cut`.
pub struct Frame {
    pub bytes: Bytes,
    pub token: bool,
}

impl Frame {
    pub fn token(bytes: Bytes) -> Frame {
        Frame { bytes, token: true }
    }

    pub fn meta(bytes: Bytes) -> Frame {
        Frame { bytes, token: false }
    }
}

/// How a stream is delivered.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pacing {
    /// Wait before the first frame (after the headers went out).
    pub first_delay: Duration,
    /// Wait before each token frame after the first.
    pub token_interval: Option<Duration>,
    /// Break the connection after this many token frames (`mock-cut`).
    pub cut: bool,
}

#[derive(PartialEq, Eq)]
enum Outcome {
    Running,
    Done,
}

/// Counts a stream as cancelled when its body is dropped before the end.
struct StreamGuard {
    state: MockState,
    outcome: Outcome,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if self.outcome == Outcome::Running {
            self.state.stream_cancelled();
        }
    }
}

/// Turns frames into a streaming response body with the given pacing, counting the stream in
/// `state`. A cut stream ends with a body error, so the server drops the connection without the
/// terminating chunk: the client sees a broken transfer, not a clean end.
pub fn stream_body(state: &MockState, frames: Vec<Frame>, pacing: Pacing) -> Body {
    stream_body_tallied(state, frames, pacing, None, false)
}

/// [`stream_body`] that also writes the request's ledger entry through `tally`: each token frame
/// as it is handed to the server, then how the stream ended (`usage`: the frames carry usage).
pub fn stream_body_tallied(
    state: &MockState,
    frames: Vec<Frame>,
    pacing: Pacing,
    tally: Option<Tally>,
    usage: bool,
) -> Body {
    state.stream_started();
    let total_tokens = frames.iter().filter(|f| f.token).count();
    // Cut after three tokens, or earlier when the reply is so short the third is the last.
    let cut_at = pacing.cut.then(|| CUT_AFTER.min(total_tokens.saturating_sub(1)).max(1));
    let mut guard = StreamGuard {
        state: state.clone(),
        outcome: Outcome::Running,
    };
    let stream = async_stream::stream! {
        if !pacing.first_delay.is_zero() {
            tokio::time::sleep(pacing.first_delay).await;
        }
        let mut tokens_sent = 0usize;
        for frame in frames {
            if frame.token {
                if Some(tokens_sent) == cut_at {
                    // Let the server flush what was sent before the connection is dropped.
                    tokio::time::sleep(CUT_FLUSH).await;
                    guard.outcome = Outcome::Done;
                    guard.state.stream_cut();
                    if let Some(t) = &tally {
                        t.cut();
                    }
                    yield Err(io::Error::new(io::ErrorKind::ConnectionAborted, "mock-cut: stream cut on purpose"));
                    return;
                }
                if tokens_sent > 0 {
                    if let Some(interval) = pacing.token_interval {
                        tokio::time::sleep(interval).await;
                    }
                }
                tokens_sent += 1;
                if let Some(t) = &tally {
                    t.token();
                }
            }
            yield Ok::<Bytes, io::Error>(frame.bytes);
        }
        guard.outcome = Outcome::Done;
        guard.state.stream_completed();
        if let Some(t) = &tally {
            t.completed(usage);
        }
    };
    Body::from_stream(stream)
}

/// A streaming response with the given content type and headers.
pub fn stream_response(content_type: HeaderValue, headers: &[(HeaderName, HeaderValue)], body: Body) -> Response<Body> {
    let mut res = Response::new(body);
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, content_type);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    for (name, value) in headers {
        h.insert(name.clone(), value.clone());
    }
    res
}

/// A non-streaming reply that honours `mock-slow` (wait before the body) and `mock-cut` (send half
/// the body, then break the connection).
pub async fn finish(res: Response<Body>, delay: Duration, cut: bool) -> Response<Body> {
    finish_tallied(res, delay, cut, None).await
}

/// [`finish`] that also writes the request's ledger entry: all its tokens once the body is
/// handed over, none for a cut body (its usage never arrives), cancelled when the client leaves
/// during the delay.
pub async fn finish_tallied(res: Response<Body>, delay: Duration, cut: bool, tally: Option<Tally>) -> Response<Body> {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(t) = &tally {
        if cut {
            t.cut();
        } else {
            t.completed_whole();
        }
    }
    if !cut {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    parts.headers.insert(header::CONTENT_LENGTH, hv(bytes.len()));
    let half = bytes.slice(..bytes.len() / 2);
    let stream = async_stream::stream! {
        yield Ok::<Bytes, io::Error>(half);
        tokio::time::sleep(CUT_FLUSH).await;
        yield Err(io::Error::new(io::ErrorKind::ConnectionAborted, "mock-cut: response cut on purpose"));
    };
    Response::from_parts(parts, Body::from_stream(stream))
}

/// The first value of `name` in a raw query string, percent-decoded (`+` as space).
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_pairs(query?).find(|(k, _)| k == name).map(|(_, v)| v)
}

/// `application/x-www-form-urlencoded` pairs, decoded.
pub fn form_pairs(raw: &str) -> impl Iterator<Item = (String, String)> + '_ {
    raw.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k, true), percent_decode(v, true))
    })
}

/// Percent-decodes `s`; with `plus_as_space`, `+` becomes a space (form encoding).
pub fn percent_decode(s: &str, plus_as_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex_val(bytes[i + 1]), hex_val(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_as_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The token of an `Authorization: Bearer <token>` header, if present and non-empty.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A header's value as text, if present, valid and non-empty.
pub fn header_str<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)?
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Keys starting with `invalid` are refused, so tests can exercise each provider's bad-key path.
pub fn is_rejected_key(key: &str) -> bool {
    key.starts_with("invalid")
}
