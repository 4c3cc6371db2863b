//! OpenAI's API shape (`/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`,
//! `/v1/responses`): the gateway's own, so nothing is converted. Errors take OpenAI's error
//! shape (`GatewayError`'s `IntoResponse`); a stream's OpenAI chunks go out byte for byte.

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use switchyard_providers::{sse, ErrorKind, Operation, ProviderError};

use super::{Codec, Egress};
use crate::error::GatewayError;
use crate::request::{Outline, Request};

/// The OpenAI codec.
pub(crate) static OPENAI: OpenAi = OpenAi;

/// See the module docs.
pub(crate) struct OpenAi;

impl Codec for OpenAi {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn parse(&self, op: Operation, body: &[u8]) -> Result<Request, GatewayError> {
        Request::parse(op, body)
    }

    fn outline<'a>(&self, body: &'a [u8]) -> Option<Outline<'a>> {
        Outline::read(body)
    }

    fn error(&self, e: GatewayError) -> Response {
        e.into_response()
    }

    fn body(&self, openai: Bytes, _: &Request) -> Result<Bytes, ProviderError> {
        Ok(openai)
    }

    fn stream(&self, request: &Request) -> Egress {
        Egress::Passthrough {
            usage: request.include_usage,
        }
    }

    fn stream_error(&self, _: ErrorKind, e: &GatewayError) -> Bytes {
        sse::data(e.body().to_string().as_bytes())
    }
}
