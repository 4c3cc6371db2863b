//! The gateway's own endpoints: the models a key may use, readiness, metrics, and the answer to
//! an unknown path. The LLM endpoints are `crate::pipeline`'s.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use serde_json::Value;

use crate::error::GatewayError;
use crate::pipeline::authenticate;
use crate::Gateway;

type Gw = State<Arc<Gateway>>;

pub(crate) async fn models(State(gw): Gw, headers: HeaderMap) -> Response {
    let rt = gw.runtime();
    let key = match authenticate(&rt, &headers) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    let data: Vec<Value> = rt
        .models_for(&key)
        .into_iter()
        .map(|id| serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": "switchyard"}))
        .collect();
    axum::Json(serde_json::json!({"object": "list", "data": data})).into_response()
}

pub(crate) async fn readyz(State(gw): Gw) -> Response {
    if gw.ready() {
        let rt = gw.runtime();
        (
            StatusCode::OK,
            format!("ready generation={} hash={}\n", rt.generation, rt.hash),
        )
            .into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

pub(crate) async fn metrics(State(gw): Gw) -> Response {
    gw.budgets.publish(&gw.metrics, gw.clock.now_ms());
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        gw.metrics.render(),
    )
        .into_response()
}

/// `/health`: the process is up, as `/healthz` says, in a JSON body like LiteLLM's liveness
/// answer so its users' probes and dashboards read it.
pub(crate) async fn health() -> Response {
    axum::Json(serde_json::json!({"status": "healthy"})).into_response()
}

pub(crate) async fn not_found() -> Response {
    GatewayError::not_found(
        "Unknown path. Switchyard serves /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/responses, \
         /v1/moderations, /v1/rerank (and /v2/rerank), /v1/images/generations, /v1/audio/transcriptions, /v1/audio/translations, /v1/audio/speech, /v1/messages and /v1/models (and the same without the /v1 \
         prefix, as LiteLLM does), /v1/files and /v1/batches, and /passthrough/{provider}/{path} for keys allowed to use it.",
    )
    .into_response()
}
