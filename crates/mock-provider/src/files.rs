//! OpenAI's Files and Batch APIs (`/v1/files`, `/v1/batches`) and Azure OpenAI's
//! (`/openai/files`, `/openai/batches`, with `?api-version=`), kept in memory per router.
//!
//! A batch completes the moment it is created: its output file holds one line per input line in
//! OpenAI's batch output format, each a chat completion answered as `/v1/chat/completions`
//! answers (`Hello! You said: ...`, words counted as tokens), with its usage.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Response, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use crate::wire;

/// Files and batches, by id.
#[derive(Clone, Default)]
pub(crate) struct Store(Arc<Mutex<Inner>>);

#[derive(Default)]
struct Inner {
    next: u64,
    files: BTreeMap<String, (Value, Bytes)>,
    batches: BTreeMap<String, Value>,
}

impl Store {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The routes, OpenAI's and Azure's, over a store of their own.
pub(crate) fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut r = Router::new();
    for base in ["/v1", "/openai"] {
        r = r
            .route(&format!("{base}/files"), post(upload).get(list_files))
            .route(&format!("{base}/files/{{id}}"), get(retrieve_file).delete(delete_file))
            .route(&format!("{base}/files/{{id}}/content"), get(content))
            .route(&format!("{base}/batches"), post(create_batch).get(list_batches))
            .route(&format!("{base}/batches/{{id}}"), get(retrieve_batch))
            .route(&format!("{base}/batches/{{id}}/cancel"), post(cancel_batch));
    }
    r.with_state(Store::default())
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    wire::json(
        status,
        &[],
        &json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}}),
    )
}

/// OpenAI's `Authorization: Bearer`, or Azure's `api-key`.
fn authorized(h: &HeaderMap) -> Result<(), Response<Body>> {
    let bearer = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let key = bearer.or_else(|| h.get("api-key").and_then(|v| v.to_str().ok()));
    match key {
        Some(k) if !k.is_empty() && !k.starts_with("invalid") => Ok(()),
        _ => Err(error(StatusCode::UNAUTHORIZED, "Incorrect API key provided.")),
    }
}

fn not_found(what: &str, id: &str) -> Response<Body> {
    error(StatusCode::NOT_FOUND, &format!("No such {what} object: {id}"))
}

/// The parts of a `multipart/form-data` body: (name, filename, bytes).
fn parts(content_type: &str, body: &[u8]) -> Vec<(String, Option<String>, Vec<u8>)> {
    let Some(boundary) = content_type.split("boundary=").nth(1) else {
        return Vec::new();
    };
    let boundary = format!("--{}", boundary.trim_matches('"'));
    let mut out = Vec::new();
    let text = body;
    let mut at = 0;
    let find = |hay: &[u8], from: usize, needle: &[u8]| {
        hay.get(from..)
            .and_then(|h| h.windows(needle.len()).position(|w| w == needle))
            .map(|p| p + from)
    };
    while let Some(start) = find(text, at, boundary.as_bytes()) {
        let head_start = start + boundary.len() + 2;
        let Some(head_end) = find(text, head_start, b"\r\n\r\n") else {
            break;
        };
        let Some(next) = find(text, head_end, format!("\r\n{boundary}").as_bytes()) else {
            break;
        };
        let head = String::from_utf8_lossy(&text[head_start..head_end]).to_string();
        let attr = |n: &str| {
            head.split(';').find_map(|p| {
                p.trim().strip_prefix(&format!("{n}=\"")).map(|v| {
                    v.trim_end_matches(['"', '\r', '\n'])
                        .split('"')
                        .next()
                        .unwrap_or("")
                        .to_owned()
                })
            })
        };
        if let Some(name) = attr("name") {
            out.push((name, attr("filename"), text[head_end + 4..next].to_vec()));
        }
        at = next + 2;
    }
    out
}

async fn upload(State(store): State<Store>, headers: HeaderMap, body: Bytes) -> Response<Body> {
    if let Err(r) = authorized(&headers) {
        return r;
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let parts = parts(ct, &body);
    let field = |n: &str| parts.iter().find(|p| p.0 == n);
    let (Some(file), Some(purpose)) = (field("file"), field("purpose")) else {
        return error(
            StatusCode::BAD_REQUEST,
            "a multipart body with `file` and `purpose` is required",
        );
    };
    let purpose = String::from_utf8_lossy(&purpose.2).to_string();
    let mut s = store.lock();
    s.next += 1;
    let id = format!("file-mock{:06}", s.next);
    let meta = json!({"id": id, "object": "file", "bytes": file.2.len(), "created_at": now(),
        "filename": file.1.clone().unwrap_or_else(|| "upload".into()), "purpose": purpose,
        "status": "processed", "expires_at": null, "status_details": null});
    s.files.insert(id, (meta.clone(), Bytes::from(file.2.clone())));
    wire::json(StatusCode::OK, &[], &meta)
}

async fn list_files(State(store): State<Store>, headers: HeaderMap) -> Response<Body> {
    if let Err(r) = authorized(&headers) {
        return r;
    }
    let data: Vec<Value> = store.lock().files.values().map(|f| f.0.clone()).collect();
    wire::json(
        StatusCode::OK,
        &[],
        &json!({"object": "list", "data": data, "has_more": false}),
    )
}

async fn retrieve_file(State(store): State<Store>, headers: HeaderMap, Path(id): Path<String>) -> Response<Body> {
    if let Err(r) = authorized(&headers) {
        return r;
    }
    match store.lock().files.get(&id) {
        Some(f) => wire::json(StatusCode::OK, &[], &f.0),
        None => not_found("File", &id),
    }
}

async fn delete_file(State(store): State<Store>, headers: HeaderMap, Path(id): Path<String>) -> Response<Body> {
    if let Err(r) = authorized(&headers) {
        return r;
    }
    match store.lock().files.remove(&id) {
        Some(_) => wire::json(
            StatusCode::OK,
            &[],
            &json!({"id": id, "object": "file", "deleted": true}),
        ),
        None => not_found("File", &id),
    }
}

async fn content(State(store): State<Store>, headers: HeaderMap, Path(id): Path<String>) -> Response<Body> {
    if let Err(r) = authorized(&headers) {
        return r;
    }
    match store.lock().files.get(&id) {
        Some(f) => {
            let mut r = Response::new(Body::from(f.1.clone()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/octet-stream"),
            );
            r
        }
        None => not_found("File", &id),
    }
}

/// The answer to one batch line: OpenAI's batch output line around a chat completion.
fn answer(line: &Value, n: usize) -> Value {
    let body = &line["body"];
    let texts: Vec<&str> = body["messages"]
        .as_array()
        .map(|m| m.iter().filter_map(|m| m["content"].as_str()).collect())
        .unwrap_or_default();
    let last = texts.last().copied().unwrap_or("");
    let reply = format!("Hello! You said: {last}");
    let prompt = texts.iter().map(|t| t.split_whitespace().count()).sum::<usize>().max(1);
    let completion = reply.split_whitespace().count();
    json!({
        "id": format!("batch_req_{n}"),
        "custom_id": line["custom_id"],
        "response": {"status_code": 200, "request_id": format!("req_{n}"), "body": {
            "id": format!("chatcmpl-batch{n}"), "object": "chat.completion", "created": now(),
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        }},
        "error": null,
    })
}

async fn create_batch(State(store): State<Store>, headers: HeaderMap, body: Bytes) -> Response<Body> {
    if let Err(r) = authorized(&headers) {
        return r;
    }
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "the body must be JSON");
    };
    let input = req["input_file_id"].as_str().unwrap_or("").to_owned();
    let mut s = store.lock();
    let Some((_, lines)) = s.files.get(&input).cloned() else {
        return not_found("File", &input);
    };
    let out: Vec<String> = String::from_utf8_lossy(&lines)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(n, l)| answer(&serde_json::from_str(l).unwrap_or(Value::Null), n).to_string())
        .collect();
    let total = out.len();
    s.next += 1;
    let output_id = format!("file-mock{:06}", s.next);
    let output = Bytes::from(out.join("\n") + "\n");
    let t = now();
    s.files.insert(
        output_id.clone(),
        (
            json!({"id": output_id, "object": "file", "bytes": output.len(), "created_at": t,
                "filename": "batch_output.jsonl", "purpose": "batch_output", "status": "processed",
                "expires_at": null, "status_details": null}),
            output,
        ),
    );
    let id = format!("batch_mock{:06}", s.next);
    let batch = json!({"id": id, "object": "batch", "endpoint": req["endpoint"], "errors": null,
        "input_file_id": input, "completion_window": req["completion_window"], "status": "completed",
        "output_file_id": output_id, "error_file_id": null, "created_at": t, "in_progress_at": t,
        "expires_at": t + 86400, "finalizing_at": t, "completed_at": t, "failed_at": null,
        "expired_at": null, "cancelling_at": null, "cancelled_at": null,
        "request_counts": {"total": total, "completed": total, "failed": 0},
        "metadata": req.get("metadata").cloned().unwrap_or(Value::Null)});
    s.batches.insert(id, batch.clone());
    wire::json(StatusCode::OK, &[], &batch)
}

async fn list_batches(State(store): State<Store>, headers: HeaderMap) -> Response<Body> {
    if let Err(r) = authorized(&headers) {
        return r;
    }
    let data: Vec<Value> = store.lock().batches.values().cloned().collect();
    wire::json(
        StatusCode::OK,
        &[],
        &json!({"object": "list", "data": data, "has_more": false}),
    )
}

async fn retrieve_batch(State(store): State<Store>, headers: HeaderMap, Path(id): Path<String>) -> Response<Body> {
    if let Err(r) = authorized(&headers) {
        return r;
    }
    match store.lock().batches.get(&id) {
        Some(b) => wire::json(StatusCode::OK, &[], b),
        None => not_found("Batch", &id),
    }
}

/// A finished batch stays as it is (OpenAI answers the same for a batch past cancelling).
async fn cancel_batch(State(store): State<Store>, headers: HeaderMap, Path(id): Path<String>) -> Response<Body> {
    retrieve_batch(State(store), headers, Path(id)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_parts_are_read() {
        let body = b"--xyz\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\nContent-Type: application/jsonl\r\n\r\n{\"a\":1}\n\r\n--xyz--\r\n";
        let p = parts("multipart/form-data; boundary=xyz", body);
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].0.as_str(), p[0].2.as_slice()), ("purpose", &b"batch"[..]));
        assert_eq!(p[1].1.as_deref(), Some("in.jsonl"));
        assert_eq!(p[1].2, b"{\"a\":1}\n");
    }
}
