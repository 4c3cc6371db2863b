//! The adapter of APIs that serve only embeddings (`POST {base}/embeddings`, OpenAI's list
//! shape) and rerank (`POST {base}/rerank`), with `Authorization: Bearer` and FastAPI-style
//! errors (`{"detail": "..."}`, or a list of `{"loc", "msg"}` for a refused body): Voyage AI
//! ([`crate::voyage`]) and Jina AI ([`crate::jina`]). Each names what differs: its embeddings
//! request fields, where its usage is, and its rerank translation ([`crate::rerank`]).

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use serde_json::{json, Value};
use switchyard_config::CredentialsConfig;

use crate::wire::{bad, encode, unreadable};
use crate::{
    kind_for_status, openai, rerank, retry_after, Adapter, ErrorKind, Json, Operation, ProviderError, StreamTranslator,
    Target, Translated, UpstreamRequest, Usage,
};

/// One embeddings-and-rerank API.
#[derive(Debug)]
pub struct EmbedRerank {
    /// The provider type, in messages (`voyage backends serve ...`).
    pub(crate) name: &'static str,
    /// Whether requests say `Accept: application/json`.
    pub(crate) accept_json: bool,
    /// The upstream embeddings body from the client's OpenAI request.
    pub(crate) embeddings_request: fn(&Json, &Target<'_>) -> Value,
    /// The prompt tokens an embeddings answer reports.
    pub(crate) embeddings_tokens: fn(&Value) -> Option<u64>,
    /// The upstream rerank body from the client's Cohere-shaped request.
    pub(crate) rerank_request: fn(&Json, &Target<'_>) -> Result<Value, ProviderError>,
    /// The client's Cohere-shaped rerank answer (with this id).
    pub(crate) rerank_response: fn(&[u8], &str) -> Result<Translated, ProviderError>,
}

impl EmbedRerank {
    fn headers(&self, target: &Target<'_>) -> Result<HeaderMap, ProviderError> {
        let mut h = HeaderMap::with_capacity(3);
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if self.accept_json {
            h.insert(http::header::ACCEPT, HeaderValue::from_static("application/json"));
        }
        if let Some(CredentialsConfig::ApiKey { key }) = &target.provider.credentials {
            let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose())).map_err(|_| {
                ProviderError::new(ErrorKind::Auth, "the provider's API key is not a valid header value")
            })?;
            value.set_sensitive(true);
            h.insert(http::header::AUTHORIZATION, value);
        }
        Ok(h)
    }

    /// OpenAI's embeddings answer: the provider's list as it is, with OpenAI's `usage`.
    fn embeddings_response(&self, body: &[u8]) -> Result<Translated, ProviderError> {
        let mut v: Value = serde_json::from_slice(body).map_err(unreadable)?;
        if !v["data"].is_array() {
            return Err(unreadable("an embeddings response without `data`"));
        }
        let tokens = (self.embeddings_tokens)(&v);
        v["usage"] = json!({"prompt_tokens": tokens.unwrap_or(0), "total_tokens": tokens.unwrap_or(0)});
        Ok(Translated {
            body: Bytes::from(v.to_string()),
            usage: tokens.map(|n| Usage {
                prompt_tokens: n,
                ..Usage::default()
            }),
        })
    }
}

impl Adapter for EmbedRerank {
    fn build(
        &self,
        op: Operation,
        request: &Json,
        target: &Target<'_>,
        _stream: bool,
    ) -> Result<UpstreamRequest, ProviderError> {
        let (tail, body) = match op {
            Operation::Embeddings => ("embeddings", (self.embeddings_request)(request, target)),
            Operation::Rerank => ("rerank", (self.rerank_request)(request, target)?),
            other => {
                return Err(bad(format!(
                    "{} backends serve /v1/embeddings and /v1/rerank only, not {}",
                    self.name,
                    other.path()
                )))
            }
        };
        Ok(UpstreamRequest {
            method: Method::POST,
            url: format!("{}/{tail}", target.provider.base_url.trim_end_matches('/')),
            headers: self.headers(target)?,
            body: encode(&body)?,
        })
    }

    fn parse(&self, op: Operation, body: &[u8], target: &Target<'_>) -> Result<Translated, ProviderError> {
        match op {
            Operation::Embeddings => self.embeddings_response(body),
            Operation::Rerank => (self.rerank_response)(body, &rerank::response_id(target)),
            other => Err(bad(format!("{} backends do not serve {}", self.name, other.path()))),
        }
    }

    fn stream(&self, _op: Operation, _target: &Target<'_>) -> Box<dyn StreamTranslator> {
        // Nothing these APIs serve streams; `build` never asks for a stream.
        Box::new(openai::Passthrough::default())
    }

    fn credentials(&self, target: &Target<'_>) -> Result<HeaderMap, ProviderError> {
        self.headers(target)
    }

    fn error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        // `detail` is a string, or FastAPI's list of `{"loc", "msg"}` for a body it refuses.
        let message = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| match &v["detail"] {
                Value::String(s) if !s.is_empty() => Some(s.clone()),
                Value::Array(items) => items.first().and_then(|i| i["msg"].as_str()).map(str::to_owned),
                _ => None,
            });
        ProviderError {
            kind: kind_for_status(status),
            status: Some(status),
            message: message.unwrap_or_else(|| format!("upstream answered HTTP {status}")),
            param: None,
            code: None,
            retry_after: retry_after(headers),
        }
    }
}
