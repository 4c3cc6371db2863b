//! A local HTTP server that speaks every supported provider's wire format on its native paths,
//! for tests, benchmarks and demos (`switchyard mock-provider --listen ADDR`).
//!
//! It plays the provider faithfully (status codes, headers, error bodies, SSE and AWS
//! event-stream framing, usage) so that each provider's official SDK, pointed at it, parses what
//! it sends. It must not grow gateway logic and it depends on no other Switchyard crate.
//!
//! It is as strict as the real APIs: each request body is checked against its API's table in
//! `strict.rs` (required fields, types, enums, ranges, unknown fields) and refused in that
//! provider's error shape, so a translation the real provider would refuse fails a test.
//!
//! # Paths
//!
//! | Provider | Paths | Auth |
//! |---|---|---|
//! | OpenAI | `POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `/v1/responses`, `/v1/moderations` (Mistral's shape for `mistral-moderation*` models), `/v1/images/generations`; `GET /v1/models`, `/v1/models/{model}` | `Authorization: Bearer` |
//! | vLLM | `POST /v1/rerank` (Cohere/Jina-compatible) | none |
//! | Azure OpenAI | `POST /openai/deployments/{deployment}/chat/completions`, `/completions`, `/embeddings`, `/images/generations` with `?api-version=` | `api-key` (or Bearer) |
//! | Anthropic | `POST /v1/messages` | `x-api-key` (or Bearer, as newer SDKs send it) + `anthropic-version` |
//! | Bedrock | `POST /model/{modelId}/converse`, `/converse-stream`, `/invoke` (Claude, embeddings, Amazon image models), `/invoke-with-response-stream`; the Agents for Amazon Bedrock Runtime's `POST /rerank` | SigV4, service `bedrock`, key `AKIDSWITCHYARDTEST` / `switchyard-test-secret` |
//! | Gemini | `POST /v1beta/models/{model}:generateContent`, `:streamGenerateContent[?alt=sse]`, `:embedContent`, `:batchEmbedContents`, `:countTokens` (also under `/v1/models/`) | `x-goog-api-key` or `?key=` |
//! | Vertex AI | `POST /v1/projects/{p}/locations/{l}/publishers/google/models/{model}:generateContent`, `:streamGenerateContent`, `:predict` (embeddings; Imagen images), `:embedContent`; `.../publishers/anthropic/models/{model}:rawPredict`, `:streamRawPredict` (also under `/v1beta1/`) | `Authorization: Bearer` |
//! | Google OAuth | `POST /token` (JWT-bearer grant) → `{"access_token","expires_in":3599,"token_type":"Bearer"}` | — |
//! | Cohere | `POST /v2/chat` (stream and not), `POST /v2/embed`, `POST /v2/rerank` | `Authorization: Bearer` |
//! | Voyage AI | `POST /voyage/v1/embeddings`, `/voyage/v1/rerank` (Voyage's `/v1` paths under `/voyage`: base URL `http://HOST/voyage/v1`) | `Authorization: Bearer` |
//! | Jina AI | `POST /jina/v1/embeddings`, `/jina/v1/rerank` (Jina's `/v1` paths under `/jina`: base URL `http://HOST/jina/v1`) | `Authorization: Bearer` |
//! | Files and batches | OpenAI's `/v1/files`, `/v1/files/{id}`, `/v1/files/{id}/content`, `/v1/batches`, `/v1/batches/{id}`, `/v1/batches/{id}/cancel`; Azure's the same under `/openai/` (see `files`) | `Authorization: Bearer` or `api-key` |
//! | Control | `GET /mock/stats`, `GET /mock/ledger`, `POST /mock/reset`, `GET /mock/last-request?provider=openai\|azure\|anthropic\|bedrock\|gemini\|vertex\|cohere\|voyage\|jina`, `GET /healthz` | — |
//!
//! A missing key gets the provider's own authentication error; so does any key starting with
//! `invalid` (Bedrock instead checks the signature for real).
//!
//! # Model names
//!
//! Behaviour is chosen by the model name (Bedrock and Vertex: the model in the path; Azure: the
//! deployment, else the body's `model`). A name *contains* one of these, so `gpt-4o-mock-429` or
//! `us.mock-tool-v1:0` work too:
//!
//! | Name | Behaviour |
//! |---|---|
//! | anything else | reply `Hello! You said: <last user message text>` |
//! | `mock-429` | 429 with `retry-after: 1` and the provider's rate-limit error body |
//! | `mock-500` | 500 with the provider's internal-error body |
//! | `mock-503` | 503 with the provider's unavailable/overloaded body |
//! | `mock-context-length` | 400 in the provider's context-window shape (OpenAI `context_length_exceeded`) |
//! | `mock-content-policy` | the provider's content-filter refusal: OpenAI 400 `content_policy_violation`, Azure 400 `content_filter`, Anthropic `stop_reason: "refusal"`, Bedrock `stopReason: "content_filtered"`, Gemini `finishReason: "SAFETY"`, Cohere a declining reply |
//! | `mock-slow`, `mock-slow-500ms`, `mock-slow-3s` | first token after 2 s (or the suffix) |
//! | `mock-cut` | stream broken after 3 token chunks (no terminal event, connection dropped); non-streaming: half the body, then dropped |
//! | `mock-tool` | calls `get_weather` with `{"city":"Paris"}` in the provider's tool-call format (partial argument deltas when streaming, except Gemini, which sends calls whole) |
//! | `mock-flaky-N` | 500 for the first N requests (counted per model name), then succeeds |
//! | `mock-echo-params` | reply text is the received request body |
//!
//! Embedding endpoints return deterministic unit vectors (dimension 8, or the request's
//! `dimensions` / `outputDimensionality` / `output_dimension`) derived from a SHA-256 of each
//! input; Bedrock `invoke` answers in Titan's or Cohere's embedding format when the model id
//! contains `embed` (Cohere's when it also contains `cohere`), and in Claude's Messages format
//! otherwise.
//!
//! Usage: prompt tokens = whitespace-separated words across all input text (at least 1),
//! completion tokens = words in the reply (2 for a tool call). Streams send one chunk per word.
//! A chat completion (OpenAI, Azure) for a model whose name contains `o200k` counts as OpenAI
//! counts gpt-4o's instead: tiktoken's `o200k_base` over the text, plus 3 tokens a message and 3
//! priming the reply, and streams one chunk per token (the soak compares the gateway's own
//! counts with these).
//!
//! `GET /mock/ledger` lists every chat completion request (OpenAI and Azure) in arrival order:
//! its id (`x-request-id`, else the body's `user`), model, whether it streamed, status, outcome
//! (`pending`, `completed`, `cut`, `cancelled`, `error`), when it arrived (`received_ms`, Unix
//! milliseconds), prompt tokens, the completion tokens
//! actually written (a cut or abandoned stream: the token frames sent before it ended; a cut whole
//! body: none), the planned completion tokens, and whether the usage reached the wire. The soak
//! (`tests/soak`) prices it to check the gateway's spend ledger.
//!
//! Per-request knobs: `x-mock-delay-ms` adds latency before the response; `x-mock-tokens-per-second`
//! paces token chunks, and so does `tps-N` anywhere in the model name (N chunks a second; the
//! header wins), for requests that come through a gateway which does not forward those headers.

// Refusals travel as `Err(Response)`: a ready answer on a cold path, not worth boxing.
#![allow(clippy::result_large_err)]

mod anthropic;
mod audio;
mod bedrock;
mod cohere;
mod files;
mod google;
mod images;
mod moderations;
mod openai;
mod rerank;
mod scenario;
pub mod sigv4;
mod state;
mod strict;
mod wire;

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, Response, StatusCode, Uri};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::Router;
use serde::Deserialize;
use serde_json::json;

pub use scenario::{Behaviour, TOOL_ARGUMENTS, TOOL_NAME};
pub use sigv4::{TEST_ACCESS_KEY, TEST_SECRET_KEY};
pub use state::{LastRequest, MockState, Outcome, Provider, Served, Stats};

/// Every model name the mock gives a meaning to (served by `GET /v1/models`).
pub const MODEL_NAMES: &[&str] = &[
    "mock-gpt",
    "mock-embed",
    "mock-429",
    "mock-500",
    "mock-503",
    "mock-context-length",
    "mock-content-policy",
    "mock-slow",
    "mock-cut",
    "mock-tool",
    "mock-flaky-1",
    "mock-echo-params",
];

/// Largest request body accepted (context-length tests send big prompts).
const BODY_LIMIT: usize = 64 * 1024 * 1024;

/// Serves the mock on `listen` until the process ends.
pub async fn run(listen: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let local = listener.local_addr()?;
    tracing::info!(%local, "mock provider listening");
    // Small SSE writes must not wait for Nagle's algorithm.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    axum::serve(listener, router(MockState::default())).await
}

/// The whole mock as a router over `state`, for in-process tests.
pub fn router(state: MockState) -> Router {
    let vertex = post(google::vertex);
    Router::new()
        // OpenAI
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/responses", post(openai::responses))
        .route("/v1/moderations", post(moderations::moderations))
        .route("/v1/images/generations", post(images::openai))
        // vLLM's Cohere-compatible rerank (OpenAI itself has none).
        .route("/v1/rerank", post(rerank::vllm))
        .route("/v1/models", get(openai::list_models))
        // `GET` is OpenAI's model lookup; `POST` is the Gemini API's v1 `{model}:{method}`.
        .route("/v1/models/{model}", get(openai::retrieve_model).post(google::gemini))
        // Azure OpenAI
        .route(
            "/openai/deployments/{deployment}/chat/completions",
            post(openai::azure_chat_completions),
        )
        .route(
            "/openai/deployments/{deployment}/completions",
            post(openai::azure_completions),
        )
        .route(
            "/openai/deployments/{deployment}/embeddings",
            post(openai::azure_embeddings),
        )
        .route(
            "/openai/deployments/{deployment}/images/generations",
            post(images::azure),
        )
        // Anthropic
        .route("/v1/messages", post(anthropic::messages))
        // Bedrock
        .route("/model/{model_id}/converse", post(bedrock::converse))
        .route("/model/{model_id}/converse-stream", post(bedrock::converse_stream))
        .route("/model/{model_id}/invoke", post(bedrock::invoke))
        .route(
            "/model/{model_id}/invoke-with-response-stream",
            post(bedrock::invoke_with_response_stream),
        )
        // Gemini and Vertex
        .route("/v1beta/models/{model}", post(google::gemini))
        .route(
            "/v1/projects/{project}/locations/{location}/publishers/{publisher}/models/{model}",
            vertex.clone(),
        )
        .route(
            "/v1beta1/projects/{project}/locations/{location}/publishers/{publisher}/models/{model}",
            vertex,
        )
        .route("/token", post(google::token))
        // Cohere
        .route("/v2/chat", post(cohere::chat))
        .route("/v2/embed", post(cohere::embed))
        .route("/v2/rerank", post(rerank::cohere))
        // Voyage AI: its /v1 paths, under /voyage since OpenAI's share them.
        .route("/voyage/v1/embeddings", post(rerank::voyage_embeddings))
        .route("/voyage/v1/rerank", post(rerank::voyage_rerank))
        // Jina AI: its /v1 paths, under /jina likewise.
        .route("/jina/v1/embeddings", post(rerank::jina_embeddings))
        .route("/jina/v1/rerank", post(rerank::jina_rerank))
        // Agents for Amazon Bedrock Runtime (its own host in AWS; one server here).
        .route("/rerank", post(bedrock::rerank))
        .merge(files::router())
        // Control
        .route("/mock/stats", get(stats))
        .route("/mock/reset", post(reset))
        .route("/mock/ledger", get(ledger))
        .route("/mock/last-request", get(last_request))
        .merge(audio::routes())
        .route("/healthz", get(|| async { "ok" }))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(state.clone(), count_http2))
        .with_state(state)
}

/// Counts requests that came over HTTP/2 (`http2_requests` in `/mock/stats`): how a test sees
/// that a Provider's `httpVersion: http2` was honoured.
async fn count_http2(
    State(state): State<MockState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if req.version() == axum::http::Version::HTTP_2 {
        state.count_http2();
    }
    next.run(req).await
}

async fn stats(State(state): State<MockState>) -> Response<Body> {
    wire::json(StatusCode::OK, &[], &state.stats())
}

/// What each chat completion request was served, per request id (see [`Served`]).
async fn ledger(State(state): State<MockState>) -> Response<Body> {
    wire::json(StatusCode::OK, &[], &state.ledger())
}

async fn reset(State(state): State<MockState>) -> Response<Body> {
    state.reset();
    wire::json(StatusCode::OK, &[], &json!({"reset": true}))
}

#[derive(Deserialize)]
struct LastRequestQuery {
    provider: Option<String>,
}

/// The last request body a provider received, verbatim, with its path in `x-mock-path`.
async fn last_request(State(state): State<MockState>, Query(q): Query<LastRequestQuery>) -> Response<Body> {
    let names: Vec<&str> = Provider::ALL.iter().map(|p| p.name()).collect();
    let Some(provider) = q.provider.as_deref().and_then(Provider::from_name) else {
        return wire::json(
            StatusCode::BAD_REQUEST,
            &[],
            &json!({"error": format!("provider must be one of {}", names.join(", "))}),
        );
    };
    match state.last_request(provider) {
        Some(last) => {
            let content_type = if serde_json::from_slice::<serde::de::IgnoredAny>(&last.body).is_ok() {
                wire::JSON
            } else {
                header::HeaderValue::from_static("application/octet-stream")
            };
            let mut res = Response::new(Body::from(last.body));
            res.headers_mut().insert(header::CONTENT_TYPE, content_type);
            res.headers_mut().insert(wire::name("x-mock-path"), wire::hv(last.path));
            res
        }
        None => wire::json(
            StatusCode::NOT_FOUND,
            &[],
            &json!({"error": format!("no request recorded for provider {}", provider.name())}),
        ),
    }
}

async fn not_found(uri: Uri) -> Response<Body> {
    wire::json(
        StatusCode::NOT_FOUND,
        &[],
        &json!({"error": {
            "message": format!("Invalid URL ({}): the mock provider serves no such path", uri.path()),
            "type": "invalid_request_error",
            "param": null,
            "code": null
        }}),
    )
}
