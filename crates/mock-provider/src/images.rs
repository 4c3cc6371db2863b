//! `POST /v1/images/generations` (OpenAI) and `/openai/deployments/{deployment}/images/generations`
//! (Azure OpenAI), from the OpenAI API reference "Images" (create image): `prompt` required;
//! `n` 1 to 10 (1 for `dall-e-3`); `size` from each model's list; `response_format` `url` or
//! `b64_json` for DALL-E models only (GPT Image models always answer `b64_json` and report token
//! `usage`); `quality`, `style`, `background`, `output_format`, `moderation`, `user` accepted.
//! Anything else is refused with OpenAI's 400, so a translation bug fails a test.
//!
//! The image is a fixed 1x1 PNG; `dall-e-3` adds a `revised_prompt`. Fault model names behave as
//! on the chat endpoints.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Response, StatusCode, Uri};
use bytes::Bytes;
use serde_json::{json, Value};

use crate::openai::{bad_request, fault_response, received_azure, received_openai, success_headers, Flavor};
use crate::scenario::{self, Act, Behaviour, Plan};
use crate::state::MockState;
use crate::wire;

/// A transparent 1x1 PNG.
const PNG_1X1: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=";

const FIELDS: [&str; 12] = [
    "prompt",
    "model",
    "n",
    "size",
    "quality",
    "style",
    "response_format",
    "user",
    "background",
    "output_format",
    "moderation",
    "output_compression",
];

pub async fn openai(State(state): State<MockState>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response<Body> {
    if let Err(res) = received_openai(&state, &uri, &headers, &body) {
        return res;
    }
    generate(&state, Flavor::OpenAi, &headers, &body).await
}

pub async fn azure(
    State(state): State<MockState>,
    Path(deployment): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    if let Err(res) = received_azure(&state, &uri, &headers, &body) {
        return res;
    }
    generate(
        &state,
        Flavor::Azure {
            deployment: &deployment,
        },
        &headers,
        &body,
    )
    .await
}

async fn generate(state: &MockState, flavor: Flavor<'_>, headers: &HeaderMap, body: &Bytes) -> Response<Body> {
    let req: serde_json::Map<String, Value> = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return bad_request(&format!("We could not parse the JSON body of your request. ({e})")),
    };
    if let Some(k) = req.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return bad_request(&format!("Unrecognized request argument supplied: {k}"));
    }
    let model = match flavor {
        Flavor::Azure { deployment } => deployment,
        Flavor::OpenAi => req.get("model").and_then(Value::as_str).unwrap_or("dall-e-2"),
    };
    let Some(prompt) = req.get("prompt").and_then(Value::as_str).filter(|p| !p.is_empty()) else {
        return bad_request("'prompt' is a required property");
    };
    let gpt_image = model.contains("gpt-image");
    let dalle3 = model.contains("dall-e-3");
    let n = req.get("n").map_or(Some(1), Value::as_u64);
    match n {
        Some(1..=10) if !(dalle3 && n != Some(1)) => {}
        _ => return bad_request("Invalid 'n': must be between 1 and 10 (1 for dall-e-3)."),
    }
    let sizes: &[&str] = if gpt_image {
        &["1024x1024", "1536x1024", "1024x1536", "auto"]
    } else if dalle3 {
        &["1024x1024", "1792x1024", "1024x1792"]
    } else {
        &["256x256", "512x512", "1024x1024"]
    };
    if let Some(size) = req.get("size") {
        if !size.as_str().is_some_and(|s| sizes.contains(&s)) {
            return bad_request(&format!(
                "Invalid value for 'size': {size}. Supported values are: {sizes:?}."
            ));
        }
    }
    let b64 = match req.get("response_format").and_then(Value::as_str) {
        Some(_) if gpt_image => return bad_request("Unknown parameter: 'response_format'."),
        None => gpt_image,
        Some("b64_json") => true,
        Some("url") => false,
        Some(other) => return bad_request(&format!("Invalid value for 'response_format': '{other}'.")),
    };
    let plan = Plan::decide(state, Behaviour::from_model(model), model, headers).await;
    let tokens = scenario::count_words(prompt).max(1);
    if let Act::Fail(fault) = plan.act {
        return fault_response(flavor, fault, model, tokens);
    }
    let data: Vec<Value> = (0..n.unwrap_or(1))
        .map(|i| {
            let mut image = if b64 {
                json!({"b64_json": PNG_1X1})
            } else {
                json!({"url": format!("https://mock.invalid/images/{}-{i}.png", state.next_id())})
            };
            if dalle3 {
                image["revised_prompt"] = format!("A picture of: {prompt}").into();
            }
            image
        })
        .collect();
    let mut out = json!({"created": wire::unix_now(), "data": data});
    if gpt_image {
        let images = n.unwrap_or(1) as u32 * 272;
        out["usage"] = json!({"input_tokens": tokens, "output_tokens": images, "total_tokens": tokens + images,
                              "input_tokens_details": {"text_tokens": tokens, "image_tokens": 0}});
    }
    let res = wire::json(StatusCode::OK, &success_headers(state, flavor), &out);
    wire::finish(res, plan.first_token_delay, false).await
}
