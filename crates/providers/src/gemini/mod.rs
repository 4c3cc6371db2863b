//! Google Gemini, through its two front doors: the Gemini API (`generativelanguage.googleapis.com`,
//! API key in `x-goog-api-key`) and Vertex AI (`{region}-aiplatform.googleapis.com`, OAuth 2.0
//! bearer token). Both speak `generateContent`; they differ in URL layout, auth and embeddings
//! (`embedContent`/`batchEmbedContents` on the Gemini API, `predict` on Vertex).
//!
//! Translates OpenAI chat requests into `contents`/`parts`, `systemInstruction`,
//! `generationConfig`, `tools.functionDeclarations` and `toolConfig`, and `GenerateContentResponse`
//! (whole or as `?alt=sse` events) back into `chat.completion` / `chat.completion.chunk`.
//! Gemini's function calls carry no ids, so tool calls get `call_<n>`; a call's `thoughtSignature`
//! (which Gemini 3 requires back on the next turn) rides in the id after [`SIGNATURE_SEPARATOR`].
//! Claude models on Vertex (`claude-*`) go to Anthropic's publisher (`rawPredict`,
//! `streamRawPredict`) with the Messages body of [`crate::anthropic`], the model in the URL and
//! `anthropic_version` in the body.
//!
//! Must not do I/O: the gateway obtains Vertex access tokens with [`vertex::token_request`] and
//! [`vertex::parse_token`], caches them, and passes them in [`Target::bearer`].
//!
//! Reference: Gemini API reference ("Generating content", "Embeddings", "Caching", error
//! codes), Vertex AI reference (`projects.locations.publishers.models.generateContent`,
//! `predict` for text embeddings, Claude on Vertex `rawPredict`), Google AIP-193 errors. Imagen
//! on Vertex (`predict` on `publishers/google/models/imagen-*`) is translated by
//! [`crate::images`].

pub mod vertex;

mod errors;
mod request;
mod response;
mod stream;

use crate::wire::{bad, encode};
use crate::{
    anthropic, Adapter, ErrorKind, Json, Operation, ProviderError, StreamTranslator, Target, Translated,
    UpstreamRequest,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde::Deserialize;
use switchyard_config::CredentialsConfig;

pub use errors::google_error;
use request::{chat_request, embed_request};
use response::{chat_response, embed_response};
pub use stream::GeminiStream;

/// Separates the generated tool-call id from Gemini's `thoughtSignature` in the ids we hand out.
pub const SIGNATURE_SEPARATOR: &str = "__thought__";

/// Which door to Gemini.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Front {
    /// The Gemini API (Google AI Studio keys).
    GeminiApi,
    /// Vertex AI.
    Vertex,
}

/// A Google adapter.
#[derive(Clone, Copy, Debug)]
pub struct Google {
    /// Provider name in messages.
    pub name: &'static str,
    /// Which door.
    pub front: Front,
}

/// The Gemini API.
pub static GEMINI: Google = Google {
    name: "gemini",
    front: Front::GeminiApi,
};

/// Vertex AI.
pub static VERTEX: Google = Google {
    name: "vertex",
    front: Front::Vertex,
};

fn unix_seconds(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Whether a Vertex model is served by Anthropic's publisher (`rawPredict`, Messages API body).
fn is_claude(model: &str) -> bool {
    model.starts_with("claude")
}

/// `anthropic_version` in the body of Claude requests on Vertex AI.
pub const VERTEX_ANTHROPIC_VERSION: &str = "vertex-2023-10-16";

/// The Anthropic Messages body for Claude on Vertex: the model is in the URL, the version in the
/// body.
fn claude_request(request: &Json, target: &Target<'_>, stream: bool) -> Result<Json, ProviderError> {
    // Vertex names versions `claude-sonnet-4@20250514`; the model table knows the bare name.
    let model = target.model.split('@').next().unwrap_or(target.model);
    let mut body = anthropic::request_body(request, model, target.drop_unsupported_params, stream)?;
    body.remove("model");
    body.insert("anthropic_version".into(), VERTEX_ANTHROPIC_VERSION.into());
    Ok(body)
}

fn is_anthropic_error(body: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Shape {
        #[serde(rename = "type")]
        kind: Option<String>,
    }
    serde_json::from_slice::<Shape>(body).is_ok_and(|s| s.kind.as_deref() == Some("error"))
}

impl Google {
    fn url(&self, target: &Target<'_>, publisher: &str, method: &str, sse: bool) -> Result<String, ProviderError> {
        let base = target.provider.base_url.trim_end_matches('/');
        let model = target.model.strip_prefix("models/").unwrap_or(target.model);
        let query = if sse { "?alt=sse" } else { "" };
        match self.front {
            Front::GeminiApi => {
                let root = if base.ends_with("/v1beta") || base.ends_with("/v1") {
                    base.to_owned()
                } else {
                    format!("{base}/v1beta")
                };
                Ok(format!("{root}/models/{model}:{method}{query}"))
            }
            Front::Vertex => {
                let project = vertex_project(target)?;
                let location = vertex_location(target);
                let root = if base.ends_with("/v1") || base.ends_with("/v1beta1") {
                    base.to_owned()
                } else {
                    format!("{base}/v1")
                };
                Ok(format!(
                    "{root}/projects/{project}/locations/{location}/publishers/{publisher}/models/{model}:{method}{query}"
                ))
            }
        }
    }

    fn headers(&self, target: &Target<'_>) -> Result<HeaderMap, ProviderError> {
        let mut h = HeaderMap::with_capacity(2 + target.provider.headers.len());
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (k, v) in &target.provider.headers {
            let (Ok(name), Ok(value)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) else {
                continue;
            };
            h.insert(name, value);
        }
        let (name, value) = match self.front {
            Front::GeminiApi => match &target.provider.credentials {
                Some(CredentialsConfig::ApiKey { key }) => {
                    (HeaderName::from_static("x-goog-api-key"), key.expose().to_owned())
                }
                _ => return Ok(h),
            },
            Front::Vertex => match target.bearer {
                Some(token) => (http::header::AUTHORIZATION, format!("Bearer {token}")),
                None => {
                    return Err(ProviderError::new(
                        ErrorKind::Auth,
                        "no access token for the Vertex AI provider",
                    ))
                }
            },
        };
        let mut value = HeaderValue::from_str(&value).map_err(|_| {
            ProviderError::new(ErrorKind::Auth, "the provider's credential is not a valid header value")
        })?;
        value.set_sensitive(true);
        h.insert(name, value);
        Ok(h)
    }

    /// The endpoints this door serves, for refusals.
    fn operations(&self) -> &'static str {
        match self.front {
            Front::GeminiApi => "/v1/chat/completions and /v1/embeddings",
            Front::Vertex => "/v1/chat/completions, /v1/embeddings and /v1/images/generations (Imagen)",
        }
    }

    fn unsupported(&self, target: &Target<'_>, param: &str) -> Result<(), ProviderError> {
        if target.drop_unsupported_params {
            Ok(())
        } else {
            Err(ProviderError::unsupported_param(self.name, param))
        }
    }
}

/// The Vertex project: the provider's, else the service account's.
fn vertex_project(target: &Target<'_>) -> Result<String, ProviderError> {
    if let Some(p) = target.provider.project.as_deref().filter(|p| !p.is_empty()) {
        return Ok(p.to_owned());
    }
    if let Some(CredentialsConfig::ServiceAccount { json }) = &target.provider.credentials {
        if let Some(p) = vertex::project_id(json.expose()) {
            return Ok(p);
        }
    }
    Err(bad("the Vertex AI provider names no project (set spec.vertex.project)"))
}

/// The Vertex location: the provider's region, else the one in the regional host, else `global`
/// for the global host.
fn vertex_location(target: &Target<'_>) -> String {
    if let Some(r) = target.provider.region.as_deref().filter(|r| !r.is_empty()) {
        return r.to_owned();
    }
    let host = target
        .provider
        .base_url
        .split("://")
        .nth(1)
        .unwrap_or("")
        .split('/')
        .next()
        .unwrap_or("");
    match host.strip_suffix("-aiplatform.googleapis.com") {
        Some(region) if !region.is_empty() => region.to_owned(),
        _ if host == "aiplatform.googleapis.com" => "global".to_owned(),
        _ => "us-central1".to_owned(),
    }
}

impl Adapter for Google {
    fn build(
        &self,
        op: Operation,
        request: &Json,
        target: &Target<'_>,
        stream: bool,
    ) -> Result<UpstreamRequest, ProviderError> {
        let (url, body) = match op {
            Operation::Chat => {
                if self.front == Front::Vertex && is_claude(target.model) {
                    let method = if stream { "streamRawPredict" } else { "rawPredict" };
                    let body = claude_request(request, target, stream)?;
                    return Ok(UpstreamRequest {
                        method: Method::POST,
                        url: self.url(target, "anthropic", method, false)?,
                        headers: self.headers(target)?,
                        body: encode(&body)?,
                    });
                }
                let body = chat_request(self, request, target)?;
                let method = if stream {
                    "streamGenerateContent"
                } else {
                    "generateContent"
                };
                (self.url(target, "google", method, stream)?, encode(&body)?)
            }
            Operation::Embeddings => {
                let (method, body) = embed_request(self, request, target)?;
                (self.url(target, "google", method, false)?, encode(&body)?)
            }
            Operation::Images if self.front == Front::Vertex => {
                if !target.model.starts_with("imagen") {
                    return Err(crate::wire::bad_param(
                        format!(
                            "vertex image generation supports Imagen models (imagen-*), not `{}`",
                            target.model
                        ),
                        "model",
                    ));
                }
                let body = crate::images::imagen_request(request, target)?;
                (self.url(target, "google", "predict", false)?, encode(&body)?)
            }
            _ => return Err(bad(format!("{} backends serve {} only", self.name, self.operations()))),
        };
        Ok(UpstreamRequest {
            method: Method::POST,
            url,
            headers: self.headers(target)?,
            body,
        })
    }

    fn parse(&self, op: Operation, body: &[u8], target: &Target<'_>) -> Result<Translated, ProviderError> {
        match op {
            Operation::Chat if self.front == Front::Vertex && is_claude(target.model) => {
                anthropic::response_to_openai(body, unix_seconds(target.now))
            }
            Operation::Chat => chat_response(body, target),
            Operation::Embeddings => embed_response(body, target),
            Operation::Images if self.front == Front::Vertex => {
                crate::images::imagen_response(body, unix_seconds(target.now))
            }
            _ => Err(bad(format!("{} backends serve {} only", self.name, self.operations()))),
        }
    }

    fn stream(&self, _op: Operation, target: &Target<'_>) -> Box<dyn StreamTranslator> {
        if self.front == Front::Vertex && is_claude(target.model) {
            return Box::new(anthropic::StreamToOpenAi::new(unix_seconds(target.now)));
        }
        Box::new(GeminiStream::new(target))
    }

    fn credentials(&self, target: &Target<'_>) -> Result<HeaderMap, ProviderError> {
        // Vertex AI's OAuth access token comes in `target.bearer`, from the gateway's token cache.
        self.headers(target)
    }

    fn error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        // Claude on Vertex answers in Anthropic's error shape once the request reaches the model;
        // Vertex's own front (auth, quota) answers in Google's.
        if self.front == Front::Vertex && is_anthropic_error(body) {
            return anthropic::anthropic_error(status, headers, body);
        }
        google_error(status, headers, body)
    }
}

#[cfg(test)]
mod tests;
