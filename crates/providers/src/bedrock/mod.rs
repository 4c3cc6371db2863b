//! Amazon Bedrock Runtime: chat through `Converse` and `ConverseStream`, embeddings through
//! `InvokeModel` (Amazon Titan Text Embeddings and Cohere Embed), image generation through
//! `InvokeModel` (Amazon Nova Canvas, Titan Image Generator, Stability, SDXL; see [`crate::images`]), rerank through the Agents for
//! Amazon Bedrock Runtime's `Rerank` (amazon.rerank-v1:0, cohere.rerank-v3-5:0; host
//! `bedrock-agent-runtime.{region}`, see [`crate::rerank`]), every request signed with SigV4
//! (service `bedrock`, the agent runtime's too).
//!
//! `build` turns an OpenAI chat request into a Converse body (system blocks, alternating
//! user/assistant turns, `toolUse`/`toolResult` blocks, `inferenceConfig`, `toolConfig`) and signs
//! the exact bytes it sends; `parse` and [`ConverseStream`] turn the answers back into
//! `chat.completion` and `chat.completion.chunk` SSE. ConverseStream answers in AWS's binary event
//! stream (`application/vnd.amazon.eventstream`): frames are decoded as they arrive, with both
//! CRCs checked. Pure: no I/O and no clock (the signing time is [`Target::now`]); it must not
//! resolve credentials itself, they arrive resolved in the provider's config.
//!
//! Reference: Amazon Bedrock API reference ("Converse", "ConverseStream",
//! "ConverseStreamOutput", "InvokeModel", "TokenUsage", common errors), Bedrock user guide ("Call
//! a tool with the Converse API", "Amazon Titan Embeddings", "Cohere Embed models"), AWS
//! Signature Version 4, and the AWS event stream encoding.

mod errors;
mod request;
mod response;
mod stream;

use crate::{
    images, Adapter, ErrorKind, Forwarded, Json, Operation, ProviderError, StreamTranslator, Target, Translated,
    UpstreamRequest,
};
use bytes::Bytes;
use http::{HeaderMap, Method};
use std::time::UNIX_EPOCH;

pub use errors::bedrock_error;
use request::{converse_request, embeddings_request, encode_segment, signed_headers};
use response::{converse_response, embeddings_response};
pub use stream::ConverseStream;

/// Provider name in messages.
const NAME: &str = "bedrock";
/// SigV4 service name of the Bedrock Runtime endpoints.
const SERVICE: &str = "bedrock";
/// The region when the provider names none (the one `compile` puts in the default base URL).
const DEFAULT_REGION: &str = "us-east-1";
/// Largest event-stream message AWS sends (16 MiB); a larger prelude is corruption.
const MAX_FRAME: usize = 16 * 1024 * 1024;
/// Prelude (total length, headers length, prelude CRC) plus message CRC.
const FRAME_OVERHEAD: usize = 16;

/// The Bedrock adapter.
#[derive(Clone, Copy, Debug, Default)]
pub struct Bedrock;

/// The Bedrock adapter, registered for [`switchyard_config::ProviderKind::Bedrock`].
pub static BEDROCK: Bedrock = Bedrock;

impl Adapter for Bedrock {
    fn build(
        &self,
        op: Operation,
        request: &Json,
        target: &Target<'_>,
        stream: bool,
    ) -> Result<UpstreamRequest, ProviderError> {
        if op == Operation::Rerank {
            let region = target.provider.region.as_deref().unwrap_or(DEFAULT_REGION);
            let body = crate::rerank::bedrock_request(request, target, region)?;
            let body = crate::wire::encode(&body)?;
            let url = format!("{}/rerank", agent_runtime_base(&target.provider.base_url));
            let headers = signed_headers(&url, &body, target)?;
            return Ok(UpstreamRequest {
                method: Method::POST,
                url,
                headers,
                body,
            });
        }
        let (action, body) = match op {
            Operation::Chat => (
                if stream { "converse-stream" } else { "converse" },
                converse_request(request, target)?,
            ),
            Operation::Embeddings => ("invoke", embeddings_request(request, target)?),
            Operation::Images if images::is_amazon_image_model(target.model) => {
                ("invoke", images::amazon_image_request(request, target)?)
            }
            Operation::Images if images::is_stability_image_model(target.model) => {
                ("invoke", images::stability_request(request, target)?)
            }
            Operation::Images if images::is_sdxl_model(target.model) => {
                ("invoke", images::sdxl_request(request, target)?)
            }
            Operation::Images => {
                return Err(request::bad(
                    format!(
                        "bedrock image generation supports amazon.nova-canvas-*, amazon.titan-image-generator-*, stability.sd3-*, stability.stable-image-* and stability.stable-diffusion-xl-* models, not `{}`",
                        target.model
                    ),
                    "model",
                ))
            }
            _ => {
                return Err(ProviderError::new(
                    ErrorKind::BadRequest,
                    "bedrock backends serve /v1/chat/completions, /v1/embeddings, /v1/rerank and /v1/images/generations only",
                ))
            }
        };
        let body = serde_json::to_vec(&body)
            .map_err(|e| ProviderError::new(ErrorKind::BadRequest, format!("cannot encode request: {e}")))?;
        let url = format!(
            "{}/model/{}/{action}",
            target.provider.base_url.trim_end_matches('/'),
            encode_segment(target.model)
        );
        let headers = signed_headers(&url, &body, target)?;
        Ok(UpstreamRequest {
            method: Method::POST,
            url,
            headers,
            body: Bytes::from(body),
        })
    }

    fn parse(&self, op: Operation, body: &[u8], target: &Target<'_>) -> Result<Translated, ProviderError> {
        match op {
            Operation::Embeddings => embeddings_response(body, target),
            Operation::Images if images::is_stability_image_model(target.model) => {
                images::stability_response(body, epoch(target).0)
            }
            Operation::Images if images::is_sdxl_model(target.model) => images::sdxl_response(body, epoch(target).0),
            Operation::Images => images::amazon_image_response(body, epoch(target).0),
            // Without the request: one query billed, documents as Bedrock returns them.
            Operation::Rerank => self.parse_for(op, &Json::new(), body, target),
            _ => converse_response(body, target),
        }
    }

    fn parse_for(
        &self,
        op: Operation,
        request: &Json,
        body: &[u8],
        target: &Target<'_>,
    ) -> Result<Translated, ProviderError> {
        if op != Operation::Rerank {
            return self.parse(op, body, target);
        }
        let documents = request
            .get("documents")
            .and_then(serde_json::Value::as_array)
            .map_or(0, Vec::len);
        let with_documents = request
            .get("return_documents")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
        crate::rerank::bedrock_response(body, &crate::rerank::response_id(target), documents, with_documents)
    }

    fn next_page(
        &self,
        op: Operation,
        request: &Json,
        answer: &[u8],
        target: &Target<'_>,
    ) -> Result<Option<UpstreamRequest>, ProviderError> {
        if op != Operation::Rerank {
            return Ok(None);
        }
        let Some(token) = crate::rerank::bedrock_next_token(answer) else {
            return Ok(None);
        };
        let region = target.provider.region.as_deref().unwrap_or(DEFAULT_REGION);
        let mut body = crate::rerank::bedrock_request(request, target, region)?;
        body["nextToken"] = token.into();
        let body = crate::wire::encode(&body)?;
        let url = format!("{}/rerank", agent_runtime_base(&target.provider.base_url));
        let headers = signed_headers(&url, &body, target)?;
        Ok(Some(UpstreamRequest {
            method: Method::POST,
            url,
            headers,
            body,
        }))
    }

    fn join_pages(&self, op: Operation, so_far: &[u8], next: &[u8]) -> Result<Bytes, ProviderError> {
        if op != Operation::Rerank {
            return Ok(Bytes::copy_from_slice(so_far));
        }
        crate::rerank::bedrock_join(so_far, next)
    }

    fn stream(&self, _op: Operation, target: &Target<'_>) -> Box<dyn StreamTranslator> {
        Box::new(ConverseStream::new(target))
    }

    fn error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        bedrock_error(status, headers, body)
    }

    fn signs_body(&self) -> bool {
        true
    }

    fn credentials_for(&self, request: &Forwarded<'_>, target: &Target<'_>) -> Result<HeaderMap, ProviderError> {
        request::sign_request(
            request.method.as_str(),
            request.url,
            request.content_type,
            request.body,
            target,
        )
    }
}

/// The Agents for Amazon Bedrock Runtime's base URL beside a Bedrock Runtime one
/// (`https://bedrock-runtime.{region}.amazonaws.com` → `https://bedrock-agent-runtime.{region}...`,
/// FIPS endpoints alike). Any other base URL (a proxy, a VPC endpoint, the mock provider) is
/// taken to serve both APIs.
fn agent_runtime_base(base_url: &str) -> String {
    let base = base_url.trim_end_matches('/');
    match base.split_once("://bedrock-runtime") {
        Some((scheme, rest)) => format!("{scheme}://bedrock-agent-runtime{rest}"),
        None => base.to_owned(),
    }
}

fn protocol(message: impl Into<String>) -> ProviderError {
    ProviderError::new(ErrorKind::Protocol, message)
}

/// FNV-1a, for response ids that are stable in tests and distinct across requests.
fn fnv(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = seed ^ 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn epoch(target: &Target<'_>) -> (u64, u64) {
    let d = target.now.duration_since(UNIX_EPOCH).unwrap_or_default();
    (d.as_secs(), d.as_nanos() as u64)
}

#[cfg(test)]
mod tests;
