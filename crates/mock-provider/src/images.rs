//! `POST /v1/images/generations` (OpenAI) and `/openai/deployments/{deployment}/images/generations`
//! (Azure OpenAI), from the OpenAI API reference "Images" (create image): `prompt` required;
//! `n` 1 to 10 (1 for `dall-e-3`); `size` from each model's list; `response_format` `url` or
//! `b64_json` for DALL-E models only (GPT Image models always answer `b64_json` and report token
//! `usage`); `quality`, `style`, `background`, `output_format`, `moderation`, `user` accepted.
//! Anything else is refused with OpenAI's 400, so a translation bug fails a test.
//!
//! The image is a fixed 1x1 PNG; `dall-e-3` adds a `revised_prompt`. Fault model names behave as
//! on the chat endpoints.
//!
//! Also the image models of two other APIs, called from their providers' modules:
//!
//! - Vertex AI Imagen (`:predict` on `publishers/google/models/imagen-*`; "Imagen API"
//!   reference): exactly one instance with a `prompt`; `parameters.sampleCount` 1 to 4,
//!   `aspectRatio` `1:1`|`3:4`|`4:3`|`9:16`|`16:9`, `outputOptions.mimeType`
//!   `image/png`|`image/jpeg` (`compressionQuality` 0 to 100), and `negativePrompt`, `seed`,
//!   `personGeneration`, `safetySetting`, `addWatermark`, `enhancePrompt`, `sampleImageSize`,
//!   `includeRaiReason`, `language`, `storageUri`; anything else is Google's 400
//!   `INVALID_ARGUMENT`. Answer: `{"predictions": [{"bytesBase64Encoded", "mimeType"}]}`; a
//!   prompt holding `blocked` has every image filtered (`raiFilteredReason` when asked for).
//! - Bedrock's Amazon Nova Canvas and Titan Image Generator (`InvokeModel`; user guide "Amazon
//!   Nova Canvas request and response reference", "Amazon Titan Image Generator G1 models"),
//!   `taskType: TEXT_IMAGE` only: `textToImageParams.text` (1 to 1,024 characters),
//!   `negativeText`; `imageGenerationConfig.numberOfImages` 1 to 5, `width` and `height` (Nova:
//!   320 to 4,096, multiples of 16, at most 4,194,304 pixels, sides within 1:4; Titan: its list
//!   of sizes), `quality` `standard`|`premium`, `cfgScale` 1.1 to 10, `seed`. Anything else is
//!   Bedrock's `ValidationException`. Answer: `{"images": [base64], "error": null}`; a prompt
//!   holding `blocked` gets `{"images": [], "error": "This request has been blocked by our content
//!   filters."}`.
//! - Bedrock's Stability models (`stability.sd3*`, `stability.stable-image*`): see [`stability`];
//!   SDXL 1.0 (`stability.stable-diffusion-xl*`), in its older body: see [`sdxl`].

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Response, StatusCode, Uri};
use bytes::Bytes;
use serde_json::{json, Value};

use crate::bedrock::no_extraneous_key;
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

/// Imagen's `parameters` fields.
const IMAGEN_PARAMETERS: [&str; 12] = [
    "sampleCount",
    "aspectRatio",
    "outputOptions",
    "negativePrompt",
    "seed",
    "personGeneration",
    "safetySetting",
    "addWatermark",
    "enhancePrompt",
    "sampleImageSize",
    "includeRaiReason",
    "language",
];

/// Vertex AI `:predict` on an Imagen model: the predictions, or the reason for Google's 400.
pub fn imagen(req: &Value) -> Result<Value, String> {
    let Some([instance]) = req["instances"].as_array().map(Vec::as_slice) else {
        return Err("Invalid JSON payload: 'instances' must hold exactly one instance.".into());
    };
    if let Some(k) = req
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| k)
        .find(|k| !["instances", "parameters"].contains(&k.as_str()))
    {
        return Err(format!(
            "Invalid JSON payload received. Unknown name \"{k}\": Cannot find field."
        ));
    }
    let Some(prompt) = instance["prompt"].as_str().filter(|p| !p.is_empty()) else {
        return Err("Invalid JSON payload: 'instances[0].prompt' is required.".into());
    };
    let params = req.get("parameters").cloned().unwrap_or_else(|| json!({}));
    let Some(params) = params.as_object() else {
        return Err("Invalid JSON payload: 'parameters' must be an object.".into());
    };
    if let Some(k) = params
        .keys()
        .find(|k| !IMAGEN_PARAMETERS.contains(&k.as_str()) && *k != "storageUri")
    {
        return Err(format!(
            "Invalid JSON payload received. Unknown name \"{k}\" at 'parameters': Cannot find field."
        ));
    }
    let n = match params.get("sampleCount") {
        None => 4,
        Some(n) => match n.as_u64() {
            Some(n @ 1..=4) => n,
            _ => return Err(format!("sampleCount must be between 1 and 4, got {n}.")),
        },
    };
    if let Some(ratio) = params.get("aspectRatio") {
        if !ratio
            .as_str()
            .is_some_and(|r| ["1:1", "3:4", "4:3", "9:16", "16:9"].contains(&r))
        {
            return Err(format!(
                "Unsupported aspect ratio {ratio}. Supported: 1:1, 3:4, 4:3, 9:16, 16:9."
            ));
        }
    }
    let mime = params.get("outputOptions").map_or(Some("image/png"), |o| {
        o.get("mimeType").map_or(Some("image/png"), Value::as_str)
    });
    if !mime.is_some_and(|m| ["image/png", "image/jpeg"].contains(&m)) {
        return Err("outputOptions.mimeType must be image/png or image/jpeg.".into());
    }
    if prompt.contains("blocked") {
        let reason = params.get("includeRaiReason").and_then(Value::as_bool) == Some(true);
        return Ok(if reason {
            json!({"predictions": [{"raiFilteredReason": "Your current safety filter threshold filtered out the generated images."}]})
        } else {
            json!({})
        });
    }
    let predictions: Vec<Value> = (0..n)
        .map(|_| json!({"bytesBase64Encoded": PNG_1X1, "mimeType": mime.unwrap_or("image/png")}))
        .collect();
    Ok(json!({"predictions": predictions}))
}

/// Titan Image Generator's sizes (width, height).
const TITAN_SIZES: [(u64, u64); 25] = [
    (1024, 1024),
    (768, 768),
    (512, 512),
    (768, 1152),
    (384, 576),
    (1152, 768),
    (576, 384),
    (768, 1280),
    (384, 640),
    (1280, 768),
    (640, 384),
    (896, 1152),
    (448, 576),
    (1152, 896),
    (576, 448),
    (768, 1408),
    (384, 704),
    (1408, 768),
    (704, 384),
    (640, 1408),
    (320, 704),
    (1408, 640),
    (704, 320),
    (1152, 640),
    (1173, 640),
];

/// Bedrock `InvokeModel` on Nova Canvas or Titan Image Generator (`TEXT_IMAGE`): the answer,
/// or the message of Bedrock's `ValidationException`.
pub fn amazon(model_id: &str, req: &Value) -> Result<Value, String> {
    no_extraneous_key(req, &["taskType", "textToImageParams", "imageGenerationConfig"])?;
    if req["taskType"] != "TEXT_IMAGE" {
        return Err(format!(
            "Malformed input request: #/taskType: {} is not a valid enum value (the mock serves TEXT_IMAGE only), please reformat your input and try again.",
            req["taskType"]
        ));
    }
    let text = &req["textToImageParams"];
    no_extraneous_key(text, &["text", "negativeText"])?;
    let Some(prompt) = text["text"]
        .as_str()
        .filter(|t| (1..=1024).contains(&t.chars().count()))
    else {
        return Err("Malformed input request: #/textToImageParams/text: expected a string of 1 to 1024 characters, please reformat your input and try again.".into());
    };
    let config = req.get("imageGenerationConfig").cloned().unwrap_or_else(|| json!({}));
    no_extraneous_key(
        &config,
        &["numberOfImages", "width", "height", "quality", "cfgScale", "seed"],
    )?;
    let n = config.get("numberOfImages").map_or(Some(1), Value::as_u64);
    let Some(n @ 1..=5) = n else {
        return Err("Malformed input request: #/imageGenerationConfig/numberOfImages: must be 1 to 5, please reformat your input and try again.".into());
    };
    let (w, h) = (
        config.get("width").map_or(Some(1024), Value::as_u64),
        config.get("height").map_or(Some(1024), Value::as_u64),
    );
    let (Some(w), Some(h)) = (w, h) else {
        return Err("Malformed input request: #/imageGenerationConfig: width and height must be integers, please reformat your input and try again.".into());
    };
    let size_ok = if model_id.contains("nova-canvas") {
        (320..=4096).contains(&w)
            && (320..=4096).contains(&h)
            && w % 16 == 0
            && h % 16 == 0
            && w * h <= 4_194_304
            && w <= 4 * h
            && h <= 4 * w
    } else {
        TITAN_SIZES.contains(&(w, h))
    };
    if !size_ok {
        return Err(format!(
            "The provided image size {w}x{h} is not supported by {model_id}."
        ));
    }
    if let Some(q) = config.get("quality") {
        if !q.as_str().is_some_and(|q| ["standard", "premium"].contains(&q)) {
            return Err(format!("Malformed input request: #/imageGenerationConfig/quality: {q} is not a valid enum value, please reformat your input and try again."));
        }
    }
    if prompt.contains("blocked") {
        return Ok(json!({"images": [], "error": "This request has been blocked by our content filters."}));
    }
    Ok(json!({"images": vec![PNG_1X1; n as usize], "error": null}))
}

/// Bedrock `InvokeModel` on a Stability model (Stable Diffusion 3 and 3.5 Large, Stable Image
/// Core and Ultra; user guide "Stable Image Ultra request and response"): `prompt` (at most
/// 10,000 characters), `mode` `text-to-image`, `aspect_ratio` from its nine, `output_format`
/// `jpeg`|`png`, `seed` 0 to 4,294,967,295, `negative_prompt`. One image; a prompt holding
/// `blocked` is filtered (`{"finish_reasons": ["Filter reason: prompt"]}`).
pub fn stability(req: &Value) -> Result<Value, String> {
    let allowed = [
        "prompt",
        "mode",
        "aspect_ratio",
        "output_format",
        "seed",
        "negative_prompt",
    ];
    no_extraneous_key(req, &allowed)?;
    let Some(prompt) = req["prompt"].as_str().filter(|p| p.chars().count() <= 10_000) else {
        return Err(
            "Malformed input request: #: required key [prompt] not found, please reformat your input and try again."
                .into(),
        );
    };
    let enums: [(&str, &[&str]); 3] = [
        ("mode", &["text-to-image"]),
        (
            "aspect_ratio",
            &["16:9", "1:1", "21:9", "2:3", "3:2", "4:5", "5:4", "9:16", "9:21"],
        ),
        ("output_format", &["jpeg", "png"]),
    ];
    for (key, values) in enums {
        if let Some(v) = req.get(key) {
            if !v.as_str().is_some_and(|v| values.contains(&v)) {
                return Err(format!(
                    "Malformed input request: #/{key}: {v} is not a valid enum value, please reformat your input and try again."
                ));
            }
        }
    }
    if let Some(seed) = req.get("seed") {
        if seed.as_u64().is_none_or(|s| s > 4_294_967_295) {
            return Err("Malformed input request: #/seed: must be an integer from 0 to 4294967295, please reformat your input and try again.".into());
        }
    }
    if prompt.contains("blocked") {
        return Ok(json!({"finish_reasons": ["Filter reason: prompt"]}));
    }
    Ok(
        json!({"seeds": [req.get("seed").and_then(Value::as_u64).unwrap_or(2_130_420_379)],
              "finish_reasons": [null], "images": [PNG_1X1]}),
    )
}

/// Bedrock `InvokeModel` on SDXL 1.0 (user guide "Stability.ai Diffusion 1.0 text to image"):
/// `text_prompts` (required, each `{text (at most 2,000 characters), weight?}`), `width` and
/// `height` together one of its nine sizes, `cfg_scale` 0 to 35, `samples` 1 (Bedrock's only),
/// `seed` 0 to 4,294,967,295, `steps` 10 to 50, `sampler`, `style_preset`, `clip_guidance_preset`,
/// `extras`. A positive prompt holding `blocked` has its artifact filtered
/// (`finishReason: CONTENT_FILTERED`).
pub fn sdxl(req: &Value) -> Result<Value, String> {
    const SIZES: [(u64, u64); 9] = [
        (1024, 1024),
        (1152, 896),
        (1216, 832),
        (1344, 768),
        (1536, 640),
        (640, 1536),
        (768, 1344),
        (832, 1216),
        (896, 1152),
    ];
    let allowed = [
        "text_prompts",
        "height",
        "width",
        "cfg_scale",
        "clip_guidance_preset",
        "sampler",
        "samples",
        "seed",
        "steps",
        "style_preset",
        "extras",
    ];
    let malformed =
        |what: String| format!("Malformed input request: {what}, please reformat your input and try again.");
    no_extraneous_key(req, &allowed)?;
    let Some(prompts) = req["text_prompts"].as_array().filter(|p| !p.is_empty()) else {
        return Err(malformed("#: required key [text_prompts] not found".into()));
    };
    let mut blocked = false;
    for (i, p) in prompts.iter().enumerate() {
        let Some(text) = p["text"].as_str().filter(|t| t.chars().count() <= 2000) else {
            return Err(malformed(format!("#/text_prompts/{i}: required key [text] not found")));
        };
        if p.get("weight").is_some_and(|w| !w.is_number()) {
            return Err(malformed(format!("#/text_prompts/{i}/weight: expected type: Number")));
        }
        let weight = p["weight"].as_f64().unwrap_or(1.0);
        blocked |= weight > 0.0 && text.contains("blocked");
    }
    let (w, h) = (req.get("width"), req.get("height"));
    if w.is_some() || h.is_some() {
        let size = (
            w.and_then(Value::as_u64).unwrap_or(1024),
            h.and_then(Value::as_u64).unwrap_or(1024),
        );
        if !SIZES.contains(&size) {
            return Err(malformed(format!(
                "#: height and width must be one of 1024x1024, 1152x896, 1216x832, 1344x768, 1536x640, 640x1536, 768x1344, 832x1216, 896x1152, got {}x{}",
                size.0, size.1
            )));
        }
    }
    let ranges: [(&str, f64, f64); 4] = [
        ("cfg_scale", 0.0, 35.0),
        ("samples", 1.0, 1.0),
        ("seed", 0.0, 4_294_967_295.0),
        ("steps", 10.0, 50.0),
    ];
    for (key, min, max) in ranges {
        if let Some(v) = req.get(key) {
            if v.as_f64().is_none_or(|n| n < min || n > max) {
                return Err(malformed(format!("#/{key}: {v} is not a value from {min} to {max}")));
            }
        }
    }
    let seed = req.get("seed").and_then(Value::as_u64).unwrap_or(1_229_191_277);
    let artifact = if blocked {
        json!({"seed": seed, "base64": "", "finishReason": "CONTENT_FILTERED"})
    } else {
        json!({"seed": seed, "base64": PNG_1X1, "finishReason": "SUCCESS"})
    };
    Ok(json!({"result": "success", "artifacts": [artifact]}))
}
