//! The bare proxy: what a minimal Rust LLM proxy costs per request on this machine.
//!
//! `bare-proxy --listen 127.0.0.1:PORT --upstream http://127.0.0.1:UP [--key KEY]`
//!
//! Every POST is parsed as JSON (as any proxy that reads the model must), serialised again and
//! forwarded to the upstream at the same path with the upstream key; the whole reply is read and
//! returned with its status. One reqwest client (pooled keep-alive connections), tokio's
//! multi-threaded runtime, `TCP_NODELAY` on accepted connections, as Switchyard's gateway does.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use axum::Router;

#[derive(Clone)]
struct Upstream {
    client: reqwest::Client,
    base: Arc<str>,
    authorization: HeaderValue,
}

async fn forward(State(up): State<Upstream>, uri: Uri, body: Bytes) -> Response {
    let request: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let body = match serde_json::to_vec(&request) {
        Ok(b) => b,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    let sent = up
        .client
        .post(format!("{}{}", up.base, uri.path()))
        .header(header::AUTHORIZATION, up.authorization.clone())
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await;
    let reply = match sent {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = reply.status();
    let content_type = reply
        .headers()
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or(HeaderValue::from_static("application/json"));
    match reply.bytes().await {
        Ok(b) => (status, [(header::CONTENT_TYPE, content_type)], b).into_response(),
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(listen), Some(upstream)) = (arg(&args, "--listen"), arg(&args, "--upstream")) else {
        return Err("usage: bare-proxy --listen ADDR --upstream URL [--key KEY]".into());
    };
    let key = arg(&args, "--key").unwrap_or_else(|| "sk-upstream".to_owned());
    let up = Upstream {
        client: reqwest::Client::builder().build()?,
        base: upstream.trim_end_matches('/').into(),
        authorization: HeaderValue::from_str(&format!("Bearer {key}"))?,
    };
    let app = Router::new().fallback(post(forward)).with_state(up);
    let listener = tokio::net::TcpListener::bind(&listen)
        .await?
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
    // Stops on SIGTERM by returning from main, so that an instrumented build (bench/results/
    // profiling.md, "Profile-guided optimisation") writes its profile at exit.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            term.recv().await;
        })
        .await?;
    Ok(())
}
