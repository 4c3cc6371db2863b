//! Rerank in three providers' shapes, and Voyage AI's embeddings.
//!
//! - Cohere `POST /v2/rerank` (API reference v2 "Rerank"): `model`, `query` and `documents`
//!   (strings) required, `top_n`, `max_tokens_per_doc`; v2 refuses `return_documents`. Answer:
//!   `{"id", "results": [{"index", "relevance_score"}], "meta": {"api_version", "billed_units":
//!   {"search_units": 1}}}`.
//! - Voyage `POST /voyage/v1/rerank` and `/voyage/v1/embeddings`: Voyage's `/v1` paths, served
//!   under `/voyage` because OpenAI's share them (point a `voyage` Provider's `baseUrl` at
//!   `http://HOST/voyage/v1`). API reference "Rerankers" (`query`, `documents`, `model`
//!   required; `top_k`, `return_documents`, `truncation`) and "Text embedding models" (`input`,
//!   `model` required; `input_type` `query`|`document`|null, `output_dimension`,
//!   `encoding_format` null|`base64`, `truncation`, `output_dtype`); any other field is refused
//!   with 400 `{"detail": ...}`, as Voyage does, so a request in OpenAI's names fails here.
//! - Jina `POST /jina/v1/rerank` and `/jina/v1/embeddings` (Jina's `/v1` paths under `/jina`,
//!   base URL `http://HOST/jina/v1`). "Reranker API": `model`, `query`, `documents` required;
//!   `top_n`, `return_documents` (default true). Answer `{"model", "usage": {"total_tokens"},
//!   "results": [{"index", "document": {"text"}?, "relevance_score"}]}`. "Embedding API":
//!   `model`, `input` required; `embedding_type` `float`|`base64`|`binary`|`ubinary`, `task`
//!   (`retrieval.query`, `retrieval.passage`, `separation`, `classification`, `text-matching`),
//!   `dimensions`, `late_chunking`, `truncate`, `normalized`. Fields it does not take (OpenAI's
//!   `encoding_format`, `user`; Cohere's `max_tokens_per_doc`) are refused with a FastAPI 422
//!   `{"detail": [{"loc", "msg", "type"}]}`, as its server validates.
//! - vLLM `POST /v1/rerank` (its Cohere/Jina-compatible server): `{"id", "model", "usage":
//!   {"total_tokens"}, "results": [{"index", "document": {"text"}, "relevance_score"}]}`.
//!
//! Scores: the share of the query's words a document holds, best first, ties by index.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Response, StatusCode, Uri};
use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::scenario::{self, Act, Behaviour, Plan};
use crate::state::{MockState, Provider};
use crate::wire;

fn voyage_error(status: StatusCode, detail: &str) -> Response<Body> {
    wire::json(status, &[], &json!({"detail": detail}))
}

fn voyage_auth(headers: &HeaderMap) -> Result<(), Response<Body>> {
    match wire::bearer(headers) {
        Some(k) if !wire::is_rejected_key(k) => Ok(()),
        _ => Err(voyage_error(
            StatusCode::UNAUTHORIZED,
            "Provided API key is invalid. Please check your API key and try again.",
        )),
    }
}

fn voyage_fault(act: Act) -> Option<Response<Body>> {
    match act {
        Act::Fail(scenario::Fault::RateLimited) => Some(wire::json(
            StatusCode::TOO_MANY_REQUESTS,
            &[(wire::name("retry-after"), wire::hv(1))],
            &json!({"detail": "You have exceeded your rate limit (TPM or RPM) for this model."}),
        )),
        Act::Fail(_) => Some(voyage_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")),
        _ => None,
    }
}

/// The request's fields, or Voyage's 400 naming the first it does not take.
fn voyage_body(body: &Bytes, allowed: &[&str], required: &[&str]) -> Result<Map<String, Value>, Response<Body>> {
    let req: Map<String, Value> = serde_json::from_slice(body)
        .map_err(|e| voyage_error(StatusCode::BAD_REQUEST, &format!("Invalid JSON body: {e}")))?;
    if let Some(k) = req.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(voyage_error(
            StatusCode::BAD_REQUEST,
            &format!("Request body has an unexpected argument: {k}"),
        ));
    }
    if let Some(k) = required.iter().find(|k| !req.contains_key(**k)) {
        return Err(voyage_error(StatusCode::BAD_REQUEST, &format!("Field required: {k}")));
    }
    Ok(req)
}

pub(crate) fn scored(query: &str, docs: &[String]) -> Vec<(usize, f64)> {
    let words: Vec<String> = query.split_whitespace().map(str::to_ascii_lowercase).collect();
    let mut out: Vec<(usize, f64)> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let d = d.to_ascii_lowercase();
            let hits = words.iter().filter(|w| d.contains(w.as_str())).count();
            (i, hits as f64 / words.len().max(1) as f64)
        })
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    out
}

fn strings(v: &Value) -> Option<Vec<String>> {
    v.as_array()?.iter().map(|d| d.as_str().map(str::to_owned)).collect()
}

fn tokens(query: &str, docs: &[String]) -> u32 {
    scenario::count_words(query) + docs.iter().map(|d| scenario::count_words(d)).sum::<u32>()
}

pub async fn cohere(State(state): State<MockState>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response<Body> {
    state.record(Provider::Cohere, uri.path(), uri.query(), &body);
    let err = |status, message: &str| wire::json(status, &[], &json!({"id": "mock-error", "message": message}));
    if wire::bearer(&headers).is_none_or(wire::is_rejected_key) {
        return err(StatusCode::UNAUTHORIZED, "invalid api token");
    }
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return err(StatusCode::BAD_REQUEST, &format!("invalid request: {e}")),
    };
    if req.get("return_documents").is_some() {
        return err(
            StatusCode::BAD_REQUEST,
            "invalid request: return_documents is not a valid field for v2 rerank",
        );
    }
    let (Some(model), Some(query), Some(docs)) =
        (req["model"].as_str(), req["query"].as_str(), strings(&req["documents"]))
    else {
        return err(
            StatusCode::BAD_REQUEST,
            "invalid request: model, query and documents (strings) are required",
        );
    };
    let plan = Plan::decide(&state, Behaviour::from_model(model), model, &headers).await;
    if let Act::Fail(fault) = plan.act {
        let status = if fault == scenario::Fault::RateLimited {
            StatusCode::TOO_MANY_REQUESTS
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        return err(status, "mock fault");
    }
    let top = req["top_n"].as_u64().map_or(docs.len(), |n| n as usize);
    let results: Vec<Value> = scored(query, &docs)
        .into_iter()
        .take(top)
        .map(|(index, score)| json!({"index": index, "relevance_score": score}))
        .collect();
    let id = format!("mock-rerank-{:016x}", state.next_id());
    wire::json(
        StatusCode::OK,
        &[(wire::name("x-request-id"), wire::hv(&id))],
        &json!({"id": id, "results": results,
                "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}}}),
    )
}

pub async fn vllm(State(state): State<MockState>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response<Body> {
    state.record(Provider::OpenAi, uri.path(), uri.query(), &body);
    let req: Value = serde_json::from_slice(&body).unwrap_or_default();
    let (Some(model), Some(query), Some(docs)) =
        (req["model"].as_str(), req["query"].as_str(), strings(&req["documents"]))
    else {
        return wire::json(
            StatusCode::BAD_REQUEST,
            &[],
            &json!({"object": "error", "message": "model, query and documents are required", "type": "BadRequestError", "code": 400}),
        );
    };
    let _ = headers;
    let top = req["top_n"].as_u64().map_or(docs.len(), |n| n as usize);
    let results: Vec<Value> = scored(query, &docs)
        .into_iter()
        .take(top)
        .map(|(index, score)| json!({"index": index, "document": {"text": docs[index]}, "relevance_score": score}))
        .collect();
    wire::json(
        StatusCode::OK,
        &[],
        &json!({"id": format!("rerank-{:016x}", state.next_id()), "model": model,
                "usage": {"total_tokens": tokens(query, &docs)}, "results": results}),
    )
}

pub async fn voyage_rerank(
    State(state): State<MockState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    state.record(Provider::Voyage, uri.path(), uri.query(), &body);
    if let Err(r) = voyage_auth(&headers) {
        return r;
    }
    let req = match voyage_body(
        &body,
        &["query", "documents", "model", "top_k", "return_documents", "truncation"],
        &["query", "documents", "model"],
    ) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let model = req["model"].as_str().unwrap_or("");
    let plan = Plan::decide(&state, Behaviour::from_model(model), model, &headers).await;
    if let Some(r) = voyage_fault(plan.act) {
        return r;
    }
    let (Some(query), Some(docs)) = (req["query"].as_str(), strings(&req["documents"])) else {
        return voyage_error(
            StatusCode::BAD_REQUEST,
            "query must be a string and documents a list of strings",
        );
    };
    let with_docs = req.get("return_documents").and_then(Value::as_bool).unwrap_or(false);
    let top = req
        .get("top_k")
        .and_then(Value::as_u64)
        .map_or(docs.len(), |n| n as usize);
    let data: Vec<Value> = scored(query, &docs)
        .into_iter()
        .take(top)
        .map(|(index, score)| {
            let mut r = json!({"relevance_score": score, "index": index});
            if with_docs {
                r["document"] = docs[index].clone().into();
            }
            r
        })
        .collect();
    wire::json(
        StatusCode::OK,
        &[],
        &json!({"object": "list", "data": data, "model": model, "usage": {"total_tokens": tokens(query, &docs)}}),
    )
}

pub async fn voyage_embeddings(
    State(state): State<MockState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    state.record(Provider::Voyage, uri.path(), uri.query(), &body);
    if let Err(r) = voyage_auth(&headers) {
        return r;
    }
    let req = match voyage_body(
        &body,
        &[
            "input",
            "model",
            "input_type",
            "truncation",
            "output_dimension",
            "output_dtype",
            "encoding_format",
        ],
        &["input", "model"],
    ) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let model = req["model"].as_str().unwrap_or("");
    let plan = Plan::decide(&state, Behaviour::from_model(model), model, &headers).await;
    if let Some(r) = voyage_fault(plan.act) {
        return r;
    }
    let inputs: Vec<String> = match &req["input"] {
        Value::String(s) => vec![s.clone()],
        other => match strings(other) {
            Some(v) if !v.is_empty() => v,
            _ => {
                return voyage_error(
                    StatusCode::BAD_REQUEST,
                    "input must be a string or a non-empty list of strings",
                )
            }
        },
    };
    let base64 = match req.get("encoding_format") {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) if s == "base64" => true,
        Some(other) => {
            return voyage_error(
                StatusCode::BAD_REQUEST,
                &format!("encoding_format must be null or 'base64', not {other}"),
            )
        }
    };
    let dims = scenario::dimensions(req.get("output_dimension").and_then(Value::as_u64));
    let (data, total) = embedding_list(&inputs, dims, if base64 { "base64" } else { "float" });
    wire::json(
        StatusCode::OK,
        &[],
        &json!({"object": "list", "data": data, "model": model, "usage": {"total_tokens": total}}),
    )
}

fn jina_error(status: StatusCode, detail: Value) -> Response<Body> {
    wire::json(status, &[], &json!({"detail": detail}))
}

fn jina_invalid(field: &str, msg: &str, kind: &str) -> Response<Body> {
    jina_error(
        StatusCode::UNPROCESSABLE_ENTITY,
        json!([{"loc": ["body", field], "msg": msg, "type": kind}]),
    )
}

/// Auth, the body's fields (Jina's 422 for one it does not take or a missing one), faults.
async fn jina_begin(
    state: &MockState,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
    allowed: &[&str],
    required: &[&str],
) -> Result<Map<String, Value>, Response<Body>> {
    state.record(Provider::Jina, uri.path(), uri.query(), body);
    if wire::bearer(headers).is_none_or(wire::is_rejected_key) {
        return Err(jina_error(
            StatusCode::UNAUTHORIZED,
            json!("Unauthorized: the API key is invalid or missing"),
        ));
    }
    let req: Map<String, Value> = serde_json::from_slice(body)
        .map_err(|e| jina_invalid("body", &format!("Invalid JSON: {e}"), "value_error.jsondecode"))?;
    if let Some(k) = req.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(jina_invalid(k, "extra fields not permitted", "value_error.extra"));
    }
    if let Some(k) = required.iter().find(|k| !req.contains_key(**k)) {
        return Err(jina_invalid(k, "field required", "value_error.missing"));
    }
    let model = req["model"].as_str().unwrap_or("");
    let plan = Plan::decide(state, Behaviour::from_model(model), model, headers).await;
    match plan.act {
        Act::Fail(scenario::Fault::RateLimited) => Err(wire::json(
            StatusCode::TOO_MANY_REQUESTS,
            &[(wire::name("retry-after"), wire::hv(1))],
            &json!({"detail": "Rate limit exceeded"}),
        )),
        Act::Fail(_) => Err(jina_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!("Internal Server Error"),
        )),
        _ => Ok(req),
    }
}

pub async fn jina_rerank(State(state): State<MockState>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response<Body> {
    let req = match jina_begin(
        &state,
        &uri,
        &headers,
        &body,
        &["model", "query", "documents", "top_n", "return_documents"],
        &["model", "query", "documents"],
    )
    .await
    {
        Ok(r) => r,
        Err(r) => return r,
    };
    let Some(query) = req["query"].as_str() else {
        return jina_invalid("query", "str type expected", "type_error.str");
    };
    let Some(docs) = strings(&req["documents"]) else {
        return jina_invalid("documents", "value is not a valid list of strings", "type_error.list");
    };
    let with_docs = match req.get("return_documents") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return jina_invalid(
                "return_documents",
                "value could not be parsed to a boolean",
                "type_error.bool",
            )
        }
    };
    let top = match req.get("top_n") {
        None => docs.len(),
        Some(n) => match n.as_u64() {
            Some(n) if n >= 1 => n as usize,
            _ => {
                return jina_invalid(
                    "top_n",
                    "ensure this value is greater than or equal to 1",
                    "value_error.number",
                )
            }
        },
    };
    let results: Vec<Value> = scored(query, &docs)
        .into_iter()
        .take(top)
        .map(|(index, score)| {
            let mut r = json!({"index": index, "relevance_score": score});
            if with_docs {
                r["document"] = json!({"text": docs[index]});
            }
            r
        })
        .collect();
    wire::json(
        StatusCode::OK,
        &[],
        &json!({"model": req["model"], "usage": {"total_tokens": tokens(query, &docs)}, "results": results}),
    )
}

pub async fn jina_embeddings(
    State(state): State<MockState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let req = match jina_begin(
        &state,
        &uri,
        &headers,
        &body,
        &[
            "model",
            "input",
            "embedding_type",
            "task",
            "dimensions",
            "late_chunking",
            "truncate",
            "normalized",
        ],
        &["model", "input"],
    )
    .await
    {
        Ok(r) => r,
        Err(r) => return r,
    };
    let inputs: Vec<String> = match &req["input"] {
        Value::String(s) => vec![s.clone()],
        other => match strings(other) {
            Some(v) if !v.is_empty() => v,
            _ => {
                return jina_invalid(
                    "input",
                    "input must be a string or a non-empty list of strings",
                    "type_error",
                )
            }
        },
    };
    // `binary` and `ubinary` pack each dimension's sign into a bit, eight to a byte, as
    // Cohere's packings do (`binary` the same bytes less 128, as int8).
    let kind = match req.get("embedding_type") {
        None => "float",
        Some(Value::String(t)) if ["float", "base64", "binary", "ubinary"].contains(&t.as_str()) => t.as_str(),
        _ => {
            return jina_invalid(
                "embedding_type",
                "value is not a valid enumeration member; permitted: 'float', 'base64', 'binary', 'ubinary'",
                "type_error.enum",
            )
        }
    };
    if let Some(task) = req.get("task") {
        let tasks = [
            "retrieval.query",
            "retrieval.passage",
            "separation",
            "classification",
            "text-matching",
        ];
        if !task.as_str().is_some_and(|t| tasks.contains(&t)) {
            return jina_invalid("task", "value is not a valid enumeration member", "type_error.enum");
        }
    }
    let dims = scenario::dimensions(req.get("dimensions").and_then(Value::as_u64));
    let (data, total) = embedding_list(&inputs, dims, kind);
    wire::json(
        StatusCode::OK,
        &[],
        &json!({"model": req["model"], "object": "list", "usage": {"total_tokens": total, "prompt_tokens": total}, "data": data}),
    )
}

/// OpenAI-shaped embedding objects of `inputs` in one of Cohere's embedding types (floats,
/// base64 little-endian f32, packed `binary` or `ubinary` bits; see
/// [`crate::cohere::embeddings_of_type`]), and the tokens they count (words, at least 1).
fn embedding_list<S: AsRef<str>>(inputs: &[S], dims: usize, kind: &str) -> (Vec<Value>, u32) {
    let data = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let v = scenario::embedding(text.as_ref(), dims);
            let embedding = match crate::cohere::embeddings_of_type(kind, &[v]) {
                Value::Array(mut one) if one.len() == 1 => one.remove(0),
                other => other,
            };
            json!({"object": "embedding", "embedding": embedding, "index": index})
        })
        .collect();
    let total = inputs
        .iter()
        .map(|t| scenario::count_words(t.as_ref()))
        .sum::<u32>()
        .max(1);
    (data, total)
}
