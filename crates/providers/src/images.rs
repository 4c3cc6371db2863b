//! `/v1/images/generations` on providers whose image APIs are not OpenAI's: Vertex AI's Imagen
//! (`:predict`), Bedrock's Amazon image models (`InvokeModel` with a `TEXT_IMAGE` body) and
//! Bedrock's Stability models (`InvokeModel`, one image a request; SDXL 1.0 in its own older
//! body). The
//! client's request and answer are OpenAI's; this module turns one into each provider's and the
//! other back. OpenAI and Azure OpenAI pass through (see [`crate::openai`]).
//!
//! The client's request: `prompt` (required), `n`, `size` (`WxH` or `auto`), `response_format`,
//! `quality`, `output_format`, `output_compression`, `user`; `style`, `background` and
//! `moderation` have no equivalent and are refused unless the route drops unsupported
//! parameters (`auto` values mean nothing and are ignored). Neither provider hands out image
//! URLs: `response_format: "url"` is refused with a 400 before anything is sent; without it the
//! answer is `b64_json`, as for GPT Image models. The provider's own parameters pass through
//! where they live (Imagen's `negativePrompt`, `seed`, `personGeneration`, `safetySetting`,
//! `addWatermark`, `enhancePrompt`, `sampleImageSize` into `parameters`; Bedrock's `negativeText`
//! into `textToImageParams`, `cfgScale` and `seed` into `imageGenerationConfig`).
//!
//! `quality` picks Bedrock's `standard` or `premium`; Imagen has no such setting and ignores it.
//!
//! The answer: `{"created", "data": [{"b64_json", "revised_prompt"?}]}`, each image counted as one
//! completion token, as for DALL-E: a backend's `pricing.output` is the price of a
//! million images (the built-in table carries the per-image prices LiteLLM lists: Nova Canvas,
//! Titan Image, Imagen 3 as the Gemini API sells it).
//!
//! References: Vertex AI "Imagen API" (`instances[].prompt`, `parameters.sampleCount` 1 to 4,
//! `aspectRatio` `1:1`|`3:4`|`4:3`|`9:16`|`16:9`, `outputOptions.{mimeType, compressionQuality}`;
//! answer `predictions[].{bytesBase64Encoded, mimeType, prompt?}`, images the safety filters
//! block are left out); Amazon Bedrock user guide "Amazon Nova Canvas request and response
//! reference" and "Amazon Titan Image Generator G1 models" (`taskType: TEXT_IMAGE`,
//! `textToImageParams.{text, negativeText}`, `imageGenerationConfig.{numberOfImages 1 to 5, width,
//! height, quality standard|premium, cfgScale, seed}`; answer `{"images": [base64], "error"}`);
//! Bedrock user guide "Stable Image Ultra request and response", "Stable Image Core ...",
//! "Stable Diffusion 3.5 Large" (`prompt`, `mode: text-to-image`, `aspect_ratio` `16:9`|`1:1`|
//! `21:9`|`2:3`|`3:2`|`4:5`|`5:4`|`9:16`|`9:21`, `output_format` jpeg|png, `seed`,
//! `negative_prompt`; answer `{"seeds", "finish_reasons", "images"}`); Bedrock user guide
//! "Stability.ai Diffusion 1.0 text to image" (SDXL: `text_prompts[].{text, weight}` (a negative
//! weight is a negative prompt), `width`/`height` from its nine sizes, `cfg_scale` 0 to 35,
//! `samples`, `seed`, `steps` 10 to 50, `sampler`, `style_preset`, `clip_guidance_preset`; answer
//! `{"result", "artifacts": [{"seed", "base64", "finishReason"}]}`).

use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::wire::{bad_param, unreadable};
use crate::{ErrorKind, Json, ProviderError, Target, Translated, Usage};

/// The prompt.
fn prompt(request: &Json) -> Result<&str, ProviderError> {
    match request.get("prompt") {
        Some(Value::String(p)) if !p.is_empty() => Ok(p),
        _ => Err(bad_param("'prompt' must be a non-empty string", "prompt")),
    }
}

/// `n`, 1 when not given, within the provider's range.
fn count(request: &Json, provider: &str, max: u64) -> Result<u64, ProviderError> {
    match request.get("n") {
        None | Some(Value::Null) => Ok(1),
        Some(n) => match n.as_u64() {
            Some(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(bad_param(
                format!("'n' must be an integer from 1 to {max} for {provider} image models"),
                "n",
            )),
        },
    }
}

/// `size` as width and height; `None` for `auto` or none.
fn size(request: &Json) -> Result<Option<(u32, u32)>, ProviderError> {
    match request.get("size") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s == "auto" => Ok(None),
        Some(Value::String(s)) => s
            .split_once('x')
            .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
            .filter(|&(w, h): &(u32, u32)| w > 0 && h > 0)
            .map(Some)
            .ok_or_else(|| bad_param(format!("'size' must be WIDTHxHEIGHT or auto, not `{s}`"), "size")),
        Some(_) => Err(bad_param("'size' must be a string such as 1024x1024", "size")),
    }
}

/// Refuses `response_format: url` (neither provider hands out URLs) and the OpenAI parameters
/// without an equivalent; `user` is dropped.
fn check_common(request: &Json, provider: &str, target: &Target<'_>) -> Result<(), ProviderError> {
    match request.get("response_format").and_then(Value::as_str) {
        None | Some("b64_json") => {}
        Some("url") => {
            return Err(ProviderError {
                code: Some("unsupported_value".into()),
                ..bad_param(
                    format!(
                        "{provider} image models return image data, not URLs: ask for response_format `b64_json` (or leave it out)"
                    ),
                    "response_format",
                )
            })
        }
        Some(other) => {
            return Err(bad_param(
                format!("unknown response_format `{other}`"),
                "response_format",
            ))
        }
    }
    for param in ["style", "background", "moderation"] {
        match request.get(param) {
            None | Some(Value::Null) => {}
            Some(Value::String(v)) if v == "auto" => {}
            Some(_) if target.drop_unsupported_params => {}
            Some(_) => return Err(ProviderError::unsupported_param(provider, param)),
        }
    }
    Ok(())
}

/// Whether the client asked for `output_format` `jpeg` (else PNG); `webp` is refused.
fn jpeg(request: &Json, provider: &str) -> Result<bool, ProviderError> {
    match request.get("output_format").and_then(Value::as_str) {
        None | Some("png") => Ok(false),
        Some("jpeg") => Ok(true),
        Some(other) => Err(bad_param(
            format!("{provider} image models answer png or jpeg, not `{other}`"),
            "output_format",
        )),
    }
}

/// The aspect ratio of `ratios` nearest to `width` over `height` (by their logarithms, so 2:1
/// and 1:2 are as far from 1:1).
fn nearest(ratios: &[(&'static str, f64)], width: u32, height: u32) -> &'static str {
    let ratio = (f64::from(width) / f64::from(height)).ln();
    ratios
        .iter()
        .min_by(|a, b| (a.1.ln() - ratio).abs().total_cmp(&(b.1.ln() - ratio).abs()))
        .map_or("1:1", |r| r.0)
}

// ---------------------------------------------------------------------------------------------
// Vertex AI Imagen

/// Imagen's aspect ratios, as width over height.
const IMAGEN_RATIOS: [(&str, f64); 5] = [
    ("1:1", 1.0),
    ("3:4", 0.75),
    ("4:3", 4.0 / 3.0),
    ("9:16", 9.0 / 16.0),
    ("16:9", 16.0 / 9.0),
];

/// Imagen's own parameters a client may send beside OpenAI's.
const IMAGEN_PARAMETERS: [&str; 8] = [
    "negativePrompt",
    "seed",
    "personGeneration",
    "safetySetting",
    "addWatermark",
    "enhancePrompt",
    "sampleImageSize",
    "aspectRatio",
];

/// The `:predict` body of an Imagen model. `size` picks the nearest aspect ratio Imagen has
/// (DALL-E 3's 1792x1024 is 16:9, GPT Image's 1536x1024 is 4:3); Imagen picks the pixels.
pub fn imagen_request(request: &Json, target: &Target<'_>) -> Result<Value, ProviderError> {
    check_common(request, "vertex", target)?;
    let mut parameters = Map::new();
    parameters.insert("sampleCount".into(), count(request, "vertex", 4)?.into());
    if let Some((w, h)) = size(request)? {
        parameters.insert("aspectRatio".into(), nearest(&IMAGEN_RATIOS, w, h).into());
    }
    let mut output = Map::new();
    if jpeg(request, "vertex")? {
        output.insert("mimeType".into(), "image/jpeg".into());
        if let Some(q) = request.get("output_compression").filter(|q| !q.is_null()) {
            output.insert("compressionQuality".into(), q.clone());
        }
    } else {
        output.insert("mimeType".into(), "image/png".into());
    }
    parameters.insert("outputOptions".into(), Value::Object(output));
    for key in IMAGEN_PARAMETERS {
        if let Some(v) = request.get(key).filter(|v| !v.is_null()) {
            parameters.insert(key.into(), v.clone());
        }
    }
    Ok(json!({"instances": [{"prompt": prompt(request)?}], "parameters": parameters}))
}

/// Imagen's answer in OpenAI's shape. Images the safety filters blocked are missing from
/// `predictions`; when all are, the request was refused for its content.
pub fn imagen_response(body: &[u8], created: u64) -> Result<Translated, ProviderError> {
    let v: Value = serde_json::from_slice(body).map_err(unreadable)?;
    let predictions: Vec<&Value> = v["predictions"]
        .as_array()
        .map(|p| p.iter().filter(|p| p["bytesBase64Encoded"].is_string()).collect())
        .unwrap_or_default();
    if predictions.is_empty() {
        let reason = v["predictions"][0]["raiFilteredReason"]
            .as_str()
            .unwrap_or("Vertex AI's safety filters blocked every image of this prompt");
        return Err(ProviderError {
            code: Some("content_policy_violation".into()),
            ..ProviderError::new(ErrorKind::ContentPolicy, reason)
        });
    }
    let data = predictions
        .iter()
        .map(|p| {
            let mut image = json!({"b64_json": p["bytesBase64Encoded"]});
            if let Some(revised) = p["prompt"].as_str() {
                image["revised_prompt"] = revised.into();
            }
            image
        })
        .collect();
    Ok(answer(created, data))
}

// ---------------------------------------------------------------------------------------------
// Bedrock: Stability AI (Stable Diffusion 3 and 3.5 Large, Stable Image Core and Ultra)

/// Stability's aspect ratios on Bedrock, as width over height.
const STABILITY_RATIOS: [(&str, f64); 9] = [
    ("1:1", 1.0),
    ("16:9", 16.0 / 9.0),
    ("9:16", 9.0 / 16.0),
    ("21:9", 21.0 / 9.0),
    ("9:21", 9.0 / 21.0),
    ("3:2", 1.5),
    ("2:3", 2.0 / 3.0),
    ("5:4", 1.25),
    ("4:5", 0.8),
];

/// Whether a Bedrock model takes Stability's text-to-image body (not SDXL's older
/// `text_prompts` one: [`is_sdxl_model`]).
pub fn is_stability_image_model(model: &str) -> bool {
    model.contains("stability.sd3") || model.contains("stability.stable-image")
}

/// The `InvokeModel` body of a Stability model: one image a request (`n` above 1 is refused),
/// `size` as the nearest aspect ratio it has, `output_format` png or jpeg; `negative_prompt` and
/// `seed` pass through.
pub fn stability_request(request: &Json, target: &Target<'_>) -> Result<Value, ProviderError> {
    check_common(request, "bedrock", target)?;
    count(request, "bedrock stability", 1)?;
    let mut body = json!({"prompt": prompt(request)?, "mode": "text-to-image"});
    if let Some((w, h)) = size(request)? {
        body["aspect_ratio"] = nearest(&STABILITY_RATIOS, w, h).into();
    }
    body["output_format"] = if jpeg(request, "bedrock")? { "jpeg" } else { "png" }.into();
    for key in ["negative_prompt", "seed"] {
        if let Some(v) = request.get(key).filter(|v| !v.is_null()) {
            body[key] = v.clone();
        }
    }
    Ok(body)
}

/// A Stability answer in OpenAI's shape: a `finish_reasons` entry that is not null is a filter
/// (a content-policy refusal) or an inference error.
pub fn stability_response(body: &[u8], created: u64) -> Result<Translated, ProviderError> {
    let v: Value = serde_json::from_slice(body).map_err(unreadable)?;
    if let Some(reason) = v["finish_reasons"]
        .as_array()
        .and_then(|r| r.iter().find_map(Value::as_str))
    {
        let kind = if reason.starts_with("Filter reason") {
            ErrorKind::ContentPolicy
        } else {
            ErrorKind::Server
        };
        return Err(ProviderError::new(kind, reason));
    }
    let Some(images) = v["images"].as_array() else {
        return Err(unreadable("an image response without `images`"));
    };
    let data = images.iter().map(|b64| json!({"b64_json": b64})).collect();
    Ok(answer(created, data))
}

// ---------------------------------------------------------------------------------------------
// Bedrock: Stability's SDXL 1.0

/// Whether a Bedrock model is Stability's SDXL 1.0, which takes the older Stability body
/// (`text_prompts`, `cfg_scale`; answer `artifacts`).
pub fn is_sdxl_model(model: &str) -> bool {
    model.contains("stability.stable-diffusion-xl")
}

/// The sizes SDXL 1.0 generates, as width and height.
const SDXL_SIZES: [(u32, u32); 9] = [
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

/// SDXL's own parameters a client may send beside OpenAI's, passed through as they are.
const SDXL_PARAMETERS: [&str; 6] = [
    "cfg_scale",
    "seed",
    "steps",
    "sampler",
    "style_preset",
    "clip_guidance_preset",
];

/// The `InvokeModel` body of SDXL 1.0: the prompt as a `text_prompts` entry of weight 1 (a
/// `negative_prompt` as one of weight -1), one image a request (`samples: 1`; `n` above 1 is
/// refused), `size` as the SDXL size of the nearest aspect ratio, PNG only; `cfg_scale`, `seed`,
/// `steps`, `sampler`, `style_preset` and `clip_guidance_preset` pass through.
pub fn sdxl_request(request: &Json, target: &Target<'_>) -> Result<Value, ProviderError> {
    check_common(request, "bedrock", target)?;
    count(request, "bedrock stability", 1)?;
    if jpeg(request, "bedrock")? {
        return Err(bad_param(
            "stability.stable-diffusion-xl models answer png only",
            "output_format",
        ));
    }
    let mut prompts = vec![json!({"text": prompt(request)?, "weight": 1.0})];
    if let Some(negative) = request.get("negative_prompt").and_then(Value::as_str) {
        prompts.push(json!({"text": negative, "weight": -1.0}));
    }
    let mut body = json!({"text_prompts": prompts, "samples": 1});
    if let Some((w, h)) = size(request)? {
        let ratio = (f64::from(w) / f64::from(h)).ln();
        let (width, height) = SDXL_SIZES
            .iter()
            .copied()
            .min_by(|a, b| {
                let d = |(x, y): (u32, u32)| ((f64::from(x) / f64::from(y)).ln() - ratio).abs();
                d(*a).total_cmp(&d(*b))
            })
            .unwrap_or((1024, 1024));
        body["width"] = width.into();
        body["height"] = height.into();
    }
    for key in SDXL_PARAMETERS {
        if let Some(v) = request.get(key).filter(|v| !v.is_null()) {
            body[key] = v.clone();
        }
    }
    Ok(body)
}

/// An SDXL answer in OpenAI's shape: an artifact whose `finishReason` is `CONTENT_FILTERED` is a
/// content-policy refusal, `ERROR` a failure.
pub fn sdxl_response(body: &[u8], created: u64) -> Result<Translated, ProviderError> {
    let v: Value = serde_json::from_slice(body).map_err(unreadable)?;
    let Some(artifacts) = v["artifacts"].as_array() else {
        return Err(unreadable("an SDXL response without `artifacts`"));
    };
    let mut data = Vec::with_capacity(artifacts.len());
    for a in artifacts {
        match a["finishReason"].as_str() {
            Some("CONTENT_FILTERED") => {
                return Err(ProviderError {
                    code: Some("content_policy_violation".into()),
                    ..ProviderError::new(
                        ErrorKind::ContentPolicy,
                        "the image was filtered by Stability's content filter",
                    )
                })
            }
            Some("ERROR") => {
                return Err(ProviderError::new(
                    ErrorKind::Server,
                    "SDXL failed to generate the image",
                ))
            }
            _ => {}
        }
        let Some(b64) = a["base64"].as_str() else {
            return Err(unreadable("an SDXL artifact without `base64`"));
        };
        data.push(json!({"b64_json": b64}));
    }
    Ok(answer(created, data))
}

// ---------------------------------------------------------------------------------------------
// Bedrock: Amazon Nova Canvas and Titan Image Generator

/// Whether a Bedrock model takes the Amazon `TEXT_IMAGE` body.
pub fn is_amazon_image_model(model: &str) -> bool {
    model.contains("amazon.nova-canvas") || model.contains("amazon.titan-image-generator")
}

/// The `InvokeModel` body of a Nova Canvas or Titan Image Generator model. `quality` `hd` and
/// `high` ask for `premium`, any other for `standard`; `size` is sent as width and height
/// (1024x1024 when not given), which the model checks.
pub fn amazon_image_request(request: &Json, target: &Target<'_>) -> Result<Value, ProviderError> {
    check_common(request, "bedrock", target)?;
    if jpeg(request, "bedrock")? {
        return Err(bad_param("bedrock image models answer png only", "output_format"));
    }
    let (width, height) = size(request)?.unwrap_or((1024, 1024));
    let quality = match request.get("quality").and_then(Value::as_str) {
        Some("hd" | "high") => "premium",
        _ => "standard",
    };
    let mut text = json!({"text": prompt(request)?});
    if let Some(negative) = request.get("negativeText").filter(|v| !v.is_null()) {
        text["negativeText"] = negative.clone();
    }
    let mut config = json!({
        "numberOfImages": count(request, "bedrock", 5)?,
        "width": width,
        "height": height,
        "quality": quality,
    });
    for key in ["cfgScale", "seed"] {
        if let Some(v) = request.get(key).filter(|v| !v.is_null()) {
            config[key] = v.clone();
        }
    }
    Ok(json!({"taskType": "TEXT_IMAGE", "textToImageParams": text, "imageGenerationConfig": config}))
}

/// The answer of an Amazon image model in OpenAI's shape. `error` is set when the content
/// filters blocked the images.
pub fn amazon_image_response(body: &[u8], created: u64) -> Result<Translated, ProviderError> {
    let v: Value = serde_json::from_slice(body).map_err(unreadable)?;
    if let Some(error) = v["error"].as_str().filter(|e| !e.is_empty()) {
        return Err(ProviderError {
            code: Some("content_policy_violation".into()),
            ..ProviderError::new(ErrorKind::ContentPolicy, error)
        });
    }
    let Some(images) = v["images"].as_array() else {
        return Err(unreadable("an image response without `images`"));
    };
    let data = images.iter().map(|b64| json!({"b64_json": b64})).collect();
    Ok(answer(created, data))
}

/// OpenAI's images answer; each image counts as one completion token for pricing.
fn answer(created: u64, data: Vec<Value>) -> Translated {
    let images = data.len() as u64;
    let usage = Usage {
        completion_tokens: images,
        ..Usage::default()
    };
    // No `usage` in the body: OpenAI's counts tokens, and these are images.
    let out = json!({"created": created, "data": data});
    Translated {
        body: Bytes::from(out.to_string()),
        usage: Some(usage),
    }
}
