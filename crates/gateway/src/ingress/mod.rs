//! Client formats: one [`Codec`] per API shape a client may speak. Everything past parsing
//! (routes, limits, cache, attempts, providers) works on OpenAI-shaped requests and responses;
//! a codec converts at the two edges: the client's body into a [`Request`], and the answer
//! (whole body, stream, or error) back into the client's shape.
//!
//! Adding a client format is adding a file here (a static codec) and a route line in
//! `crate::router`. Codecs do no I/O and know nothing of routing or accounting.

mod anthropic;
mod openai;

use axum::response::Response;
use bytes::{Bytes, BytesMut};
use switchyard_providers::{sse, ErrorKind, Operation, ProviderError, StreamTranslator};

pub(crate) use anthropic::ANTHROPIC;
pub(crate) use openai::OPENAI;

use crate::error::GatewayError;
use crate::request::{Outline, Request};

/// One client API shape.
pub(crate) trait Codec: Sync {
    /// The format's name (`openai`, `anthropic`): part of cache keys.
    fn name(&self) -> &'static str;

    /// The client's body for `op`, as an OpenAI-shaped request.
    fn parse(&self, op: Operation, body: &[u8]) -> Result<Request, GatewayError>;

    /// The body's outline (model and prompt items) read without parsing it into a tree, when
    /// the format is OpenAI's own (a converted body's items are not the client's).
    fn outline<'a>(&self, _body: &'a [u8]) -> Option<Outline<'a>> {
        None
    }

    /// A failure answered before any byte was sent, in the client's error shape.
    fn error(&self, e: GatewayError) -> Response;

    /// A whole OpenAI response body, in the client's shape.
    fn body(&self, openai: Bytes, request: &Request) -> Result<Bytes, ProviderError>;

    /// How a stream's OpenAI chunks reach the client.
    fn stream(&self, request: &Request) -> Egress;

    /// The event that ends a stream failing after its first byte (the status is already 200).
    fn stream_error(&self, kind: ErrorKind, e: &GatewayError) -> Bytes;
}

/// The client side of a stream: OpenAI chunks (as adapters produce them) in, the client's
/// bytes out.
pub(crate) enum Egress {
    /// The OpenAI chunks as they are. `usage`: the client asked for the usage-only chunk
    /// (`stream_options.include_usage`); the gateway always asks upstream for it, to count
    /// every stream, so it is dropped again for clients that did not.
    Passthrough { usage: bool },
    /// Re-encoded by a translator that sees every chunk, the usage-only one included.
    Translate(Box<dyn StreamTranslator>),
}

impl Egress {
    /// Moves the OpenAI chunks of `out` to `sent` in the client's shape; `end` also finishes
    /// a translated stream.
    pub(crate) fn pass(&mut self, out: &mut Vec<Bytes>, sent: &mut Vec<Bytes>, end: bool) -> Result<(), ProviderError> {
        match self {
            Egress::Passthrough { usage: true } => sent.append(out),
            Egress::Passthrough { usage: false } => sent.extend(out.drain(..).filter_map(drop_usage_only)),
            Egress::Translate(t) => {
                for b in out.drain(..) {
                    t.feed(b, sent)?;
                }
                if end {
                    t.finish(sent)?;
                }
            }
        }
        Ok(())
    }
}

/// The events of `b` but its usage-only ones (`"choices":[]` with `usage`); `None` when
/// nothing is left.
fn drop_usage_only(b: Bytes) -> Option<Bytes> {
    // Built once: `memmem::find` sets up its searcher on every call.
    static NO_CHOICES: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"choices\":[]"));
    // Every chunk names `"usage"` (as `null` until the last), so look for the empty choices.
    if NO_CHOICES.find(&b).is_none() {
        return Some(b);
    }
    let mut kept = BytesMut::with_capacity(b.len());
    for event in sse::split(&b) {
        let is_usage_only = NO_CHOICES.find(event).is_some() && memchr::memmem::find(event, b"\"usage\"").is_some();
        if !is_usage_only {
            kept.extend_from_slice(event);
        }
    }
    (!kept.is_empty()).then(|| kept.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `filter_usage(b, wants_usage)` as it was: the passthrough egress on one chunk.
    fn filter_usage(b: Bytes, wants_usage: bool) -> Option<Bytes> {
        let mut sent = Vec::new();
        let r = Egress::Passthrough { usage: wants_usage }.pass(&mut vec![b], &mut sent, false);
        assert!(r.is_ok() && sent.len() <= 1);
        sent.pop()
    }

    #[test]
    fn usage_only_chunks_are_dropped_unless_asked() {
        let b = Bytes::from_static(b"data: {\"choices\":[{\"delta\":{}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\n\ndata: [DONE]\n\n");
        assert_eq!(filter_usage(b.clone(), true), Some(b.clone()));
        assert_eq!(
            filter_usage(b, false),
            Some(Bytes::from_static(
                b"data: {\"choices\":[{\"delta\":{}}]}\n\ndata: [DONE]\n\n"
            ))
        );
        let only = Bytes::from_static(b"data: {\"choices\":[],\"usage\":{}}\n\n");
        assert_eq!(filter_usage(only, false), None);
        // Chunks with choices (and `"usage":null`, as OpenAI sends them) pass without a copy.
        let chunk = Bytes::from_static(b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\n");
        let kept = filter_usage(chunk.clone(), false).unwrap_or_default();
        assert_eq!((kept.as_ptr(), kept.len()), (chunk.as_ptr(), chunk.len()));
    }
}
