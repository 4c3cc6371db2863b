//! One call to one backend ([`Dispatch`]; over HTTP in [`HttpDispatch`]), and the wait for a
//! stream's first token ([`prime`]) so that a stream that fails before it can still be retried:
//! nothing has reached the client until the primed response is returned.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt};
use switchyard_config::{BackendConfig, HttpVersion, ProviderConfig, ProviderKind};
use switchyard_providers::{
    self as providers, ErrorKind, Json, Operation, Original, ProviderError, StreamTranslator, Target,
};
use tokio::time::Instant;

use super::meters::InFlight;
use crate::mock;
use crate::tokens::Tokens;
use crate::upstream_client::{UpstreamBody, UpstreamClient};

/// An upstream answer.
pub enum Upstream {
    /// A whole response, translated.
    Full(providers::Translated),
    /// A stream and its translator.
    Stream(
        BoxStream<'static, Result<Bytes, ProviderError>>,
        Box<dyn StreamTranslator>,
    ),
}

/// One call.
#[derive(Clone, Copy)]
pub struct Call<'a> {
    /// Operation.
    pub op: Operation,
    /// The client's request (OpenAI shape).
    pub request: &'a Json,
    /// The client's bytes of it, when it came in OpenAI's format (see `Request::original`).
    pub original: Option<&'a Original>,
    /// Provider of the backend.
    pub provider: &'a Arc<ProviderConfig>,
    /// The backend.
    pub backend: &'a BackendConfig,
    /// Drop parameters the provider cannot honour.
    pub drop_unsupported_params: bool,
    /// Stream the response.
    pub stream: bool,
    /// Deadline for the response headers.
    pub headers_timeout: Duration,
    /// `traceparent` (and `tracestate`) of the attempt's span; empty when traces are off.
    pub trace: &'a [(&'static str, String)],
    /// The largest whole response body read (the fleet's `maxResponseBytes`).
    pub max_response_bytes: u64,
}

/// How much of an upstream error body is read: enough for any provider's error JSON; the rest
/// is not read (the connection is dropped).
pub const ERROR_BODY_BYTES: usize = 64 * 1024;

/// Sends one call to one backend.
pub trait Dispatch: Send + Sync {
    /// The response (for streams: once the headers arrived).
    fn send<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<Upstream, ProviderError>>;
}

/// Calls providers over HTTP (or the in-process `mock` provider).
pub struct HttpDispatch {
    /// Token endpoints and provider calls that go through a proxy.
    client: reqwest::Client,
    /// Provider calls (shared with pass-through).
    upstream: Arc<UpstreamClient>,
    /// OAuth tokens of providers that need them (shared with pass-through).
    tokens: Arc<Tokens>,
}

impl HttpDispatch {
    /// Calls through `upstream`; OAuth tokens are fetched with `client`.
    pub fn new(client: reqwest::Client, upstream: Arc<UpstreamClient>, tokens: Arc<Tokens>) -> Self {
        Self {
            client,
            upstream,
            tokens,
        }
    }
}

impl Dispatch for HttpDispatch {
    fn send<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<Upstream, ProviderError>> {
        Box::pin(self.attempt(call))
    }
}

impl HttpDispatch {
    /// One attempt against one backend.
    async fn attempt(&self, call: Call<'_>) -> Result<Upstream, ProviderError> {
        let Call {
            op,
            request,
            original,
            provider,
            backend,
            drop_unsupported_params,
            stream,
            headers_timeout,
            trace,
            max_response_bytes,
        } = call;
        let model = backend.model.as_str();
        if provider.kind == ProviderKind::Mock {
            let cfg = provider.mock.clone().unwrap_or_default();
            return Ok(if stream {
                Upstream::Stream(
                    mock::stream(op, request, model, &cfg)?,
                    Box::new(providers::openai::Passthrough::default()),
                )
            } else {
                Upstream::Full(mock::complete(op, request, model, &cfg).await?)
            });
        }
        let adapter = providers::adapter(provider.kind);
        let bearer = self.tokens.get(&self.client, provider).await?;
        let target = Target {
            provider,
            model,
            drop_unsupported_params,
            now: SystemTime::now(),
            bearer: bearer.as_deref(),
        };
        let up = adapter.build_from(op, request, original, &target, stream)?;
        let uri = crate::urls::parse(&up.url).map_err(|e| ProviderError::new(ErrorKind::Server, e))?;
        let mut headers = up.headers;
        for (name, value) in trace {
            if let Ok(v) = http::HeaderValue::from_str(value) {
                headers.insert(*name, v);
            }
        }
        let request_timeout = Duration::from_millis(provider.timeouts.request_ms);
        // A whole response must be in by then; a stream only has to start (`prime` then waits for
        // its first token).
        let now = Instant::now();
        let deadline = now + request_timeout;
        let head_by = now + headers_timeout.min(request_timeout);
        let sent = self
            .upstream
            .send(provider.http_version, up.method, uri, headers, up.body);
        let body = answered(adapter, sent, head_by, deadline).await?;
        if stream {
            let chunks = http_body_util::BodyDataStream::new(body).boxed();
            Ok(Upstream::Stream(chunks, adapter.stream(op, &target)))
        } else {
            let cap = usize::try_from(max_response_bytes).unwrap_or(usize::MAX);
            let mut body = match read_capped(body, cap, deadline).await? {
                Read::Whole(body) => body,
                Read::Cut(_) => return Err(too_large(max_response_bytes)),
            };
            // An answer in pages (Bedrock Rerank's `nextToken`): the rest, within the same
            // deadline and response cap, joined before it is translated.
            let mut pages = 1;
            while let Some(next) = adapter.next_page(op, request, &body, &target)? {
                if pages == MAX_PAGES {
                    return Err(ProviderError::new(
                        ErrorKind::Protocol,
                        format!("the upstream answered in more than {MAX_PAGES} pages"),
                    ));
                }
                pages += 1;
                let page = self
                    .page(
                        adapter,
                        provider.http_version,
                        next,
                        cap - body.len(),
                        max_response_bytes,
                        deadline,
                    )
                    .await?;
                body = adapter.join_pages(op, &body, &page)?;
                if body.len() > cap {
                    return Err(too_large(max_response_bytes));
                }
            }
            Ok(Upstream::Full(adapter.parse_for(op, request, &body, &target)?))
        }
    }

    /// One more page of a whole answer, by `deadline`, at most `cap` bytes (what is left of the
    /// fleet's `max_response_bytes`).
    async fn page(
        &self,
        adapter: &dyn providers::Adapter,
        version: HttpVersion,
        up: providers::UpstreamRequest,
        cap: usize,
        max_response_bytes: u64,
        deadline: Instant,
    ) -> Result<Bytes, ProviderError> {
        let uri = crate::urls::parse(&up.url).map_err(|e| ProviderError::new(ErrorKind::Server, e))?;
        let sent = self.upstream.send(version, up.method, uri, up.headers, up.body);
        let body = answered(adapter, sent, deadline, deadline).await?;
        match read_capped(body, cap, deadline).await? {
            Read::Whole(b) => Ok(b),
            Read::Cut(_) => Err(too_large(max_response_bytes)),
        }
    }
}

/// The body of a 2xx answer to `sent`, whose head must come by `head_by`. Any other status is
/// the adapter's error, classified from the first [`ERROR_BODY_BYTES`] of its body (read by
/// `deadline`), never forwarded whole.
async fn answered(
    adapter: &dyn providers::Adapter,
    sent: impl std::future::Future<Output = Result<http::Response<UpstreamBody>, ProviderError>>,
    head_by: Instant,
    deadline: Instant,
) -> Result<UpstreamBody, ProviderError> {
    let resp = match tokio::time::timeout_at(head_by, sent).await {
        Err(_) => {
            return Err(ProviderError::new(
                ErrorKind::Timeout,
                "the upstream did not answer in time",
            ))
        }
        Ok(r) => r?,
    };
    let (parts, body) = resp.into_parts();
    let status = parts.status.as_u16();
    if !(200..300).contains(&status) {
        let body = match read_capped(body, ERROR_BODY_BYTES, deadline).await {
            Ok(Read::Whole(b) | Read::Cut(b)) => b,
            Err(_) => Bytes::new(),
        };
        return Err(adapter.error(status, &parts.headers, &body));
    }
    Ok(body)
}

/// The most pages of one answer followed: the upstream drives the loop, the gateway bounds it.
const MAX_PAGES: usize = 20;

/// A body read up to a limit.
#[derive(Debug)]
enum Read {
    /// All of it.
    Whole(Bytes),
    /// Its first `limit` bytes: it was longer (or said it would be); the rest was not read.
    Cut(Bytes),
}

/// The failure for a whole response over `limit` bytes.
fn too_large(limit: u64) -> ProviderError {
    let mut e = ProviderError::new(
        ErrorKind::Protocol,
        format!("upstream response exceeded {limit} bytes (the fleet's maxResponseBytes)"),
    );
    e.code = Some(crate::error::UPSTREAM_TOO_LARGE.to_owned());
    e
}

/// Reads a body frame by frame by `deadline`, at most `limit` bytes: memory stays bounded
/// whatever the upstream sends, and a body that announces more than `limit` is not read at all.
async fn read_capped(body: UpstreamBody, limit: usize, deadline: Instant) -> Result<Read, ProviderError> {
    use http_body::Body as _;
    use http_body_util::BodyExt;
    let announced = body.size_hint().lower();
    if !usize::try_from(announced).is_ok_and(|n| n <= limit) {
        return Ok(Read::Cut(Bytes::new()));
    }
    let read = async move {
        let mut body = body;
        let mut buf = bytes::BytesMut::new();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue; // trailers
            };
            if buf.len() + data.len() > limit {
                let room = limit - buf.len();
                buf.extend_from_slice(&data[..room]);
                return Ok(Read::Cut(buf.freeze()));
            }
            buf.extend_from_slice(&data);
        }
        Ok(Read::Whole(buf.freeze()))
    };
    match tokio::time::timeout_at(deadline, read).await {
        Ok(read) => read,
        Err(_) => Err(ProviderError::new(
            ErrorKind::Timeout,
            "the upstream did not finish its answer in time",
        )),
    }
}

/// Reads a stream until its translator produces the first bytes for the client (or `deadline`
/// passes), and returns a stream that replays them first. A failure before that point is an
/// ordinary failed attempt; after it, the stream is the client's.
pub async fn prime(
    mut chunks: BoxStream<'static, Result<Bytes, ProviderError>>,
    mut translator: Box<dyn StreamTranslator>,
    deadline: Instant,
) -> Result<(BoxStream<'static, Result<Bytes, ProviderError>>, Primed), ProviderError> {
    let mut out: Vec<Bytes> = Vec::with_capacity(2);
    let mut finished = false;
    loop {
        let next = match tokio::time::timeout_at(deadline, chunks.next()).await {
            Ok(next) => next,
            Err(_) => {
                return Err(ProviderError::new(
                    ErrorKind::Timeout,
                    "the upstream sent no first token in time",
                ))
            }
        };
        match next {
            Some(Ok(chunk)) => translator.feed(chunk, &mut out)?,
            Some(Err(e)) => return Err(e),
            None => {
                translator.finish(&mut out)?;
                finished = true;
            }
        }
        out.retain(|b| !b.is_empty());
        if !out.is_empty() || finished {
            break;
        }
    }
    if out.is_empty() {
        return Err(ProviderError::new(
            ErrorKind::Protocol,
            "the upstream stream ended before its first token",
        ));
    }
    // An empty first chunk makes the forwarder call the translator at once, which releases the
    // primed bytes; the rest of the stream follows unchanged.
    let replay = stream::once(async { Ok(Bytes::new()) }).chain(chunks).boxed();
    Ok((
        replay,
        Primed {
            pending: out,
            inner: translator,
            finished,
            in_flight: None,
        },
    ))
}

/// A stream translator that first releases what priming read, and counts the stream in flight
/// on its backend (and its completion tokens) until the stream is dropped.
pub struct Primed {
    pending: Vec<Bytes>,
    inner: Box<dyn StreamTranslator>,
    finished: bool,
    in_flight: Option<InFlight>,
}

impl Primed {
    /// Keeps the backend's in-flight count until the stream ends.
    pub fn hold(mut self, in_flight: InFlight) -> Self {
        self.in_flight = Some(in_flight);
        self
    }
}

impl StreamTranslator for Primed {
    fn feed(&mut self, chunk: Bytes, out: &mut Vec<Bytes>) -> Result<(), ProviderError> {
        out.append(&mut self.pending);
        if chunk.is_empty() {
            return Ok(());
        }
        self.inner.feed(chunk, out)
    }

    fn finish(&mut self, out: &mut Vec<Bytes>) -> Result<(), ProviderError> {
        out.append(&mut self.pending);
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        self.inner.finish(out)
    }

    fn usage(&self) -> Option<providers::Usage> {
        self.inner.usage()
    }

    fn complete(&self) -> bool {
        self.inner.complete()
    }
}

impl Drop for Primed {
    fn drop(&mut self) {
        if let (Some(g), Some(u)) = (&self.in_flight, self.inner.usage()) {
            g.tokens(u.completion_tokens);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(items: Vec<Result<&'static str, ProviderError>>) -> BoxStream<'static, Result<Bytes, ProviderError>> {
        stream::iter(items.into_iter().map(|r| r.map(|s| Bytes::from_static(s.as_bytes())))).boxed()
    }

    async fn drain(
        mut s: BoxStream<'static, Result<Bytes, ProviderError>>,
        mut t: Primed,
    ) -> Result<String, ProviderError> {
        let mut out = Vec::new();
        while let Some(c) = s.next().await {
            t.feed(c?, &mut out)?;
        }
        t.finish(&mut out)?;
        Ok(out.iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect())
    }

    #[tokio::test]
    async fn primed_streams_replay_their_first_token() {
        let s = chunks(vec![Ok("data: {\"a\":1}\n\n"), Ok("data: [DONE]\n\n")]);
        let far = Instant::now() + Duration::from_secs(5);
        let (rest, primed) = prime(s, Box::new(providers::openai::Passthrough::default()), far)
            .await
            .map_err(|e| e.message)
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(
            drain(rest, primed).await.map_err(|e| e.message),
            Ok("data: {\"a\":1}\n\ndata: [DONE]\n\n".to_owned())
        );
    }

    #[tokio::test]
    async fn failures_before_the_first_token_are_errors() {
        let far = Instant::now() + Duration::from_secs(5);
        let err = ProviderError::new(ErrorKind::Server, "boom");
        let r = prime(
            chunks(vec![Err(err)]),
            Box::new(providers::openai::Passthrough::default()),
            far,
        )
        .await;
        assert!(matches!(r, Err(e) if e.kind == ErrorKind::Server));
        let r = prime(
            chunks(vec![Ok("data: {\"error\":{\"message\":\"overloaded\"}}\n\n")]),
            Box::new(providers::openai::Passthrough::default()),
            far,
        )
        .await;
        assert!(r.is_err());
        let r = prime(chunks(vec![]), Box::new(providers::openai::Passthrough::default()), far).await;
        assert!(matches!(r, Err(e) if e.kind == ErrorKind::Protocol));
    }

    #[tokio::test(start_paused = true)]
    async fn no_first_token_in_time_is_a_timeout() {
        let slow = stream::once(async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok(Bytes::from_static(b"data: {}\n\n"))
        })
        .boxed();
        let r = prime(
            slow,
            Box::new(providers::openai::Passthrough::default()),
            Instant::now() + Duration::from_secs(1),
        )
        .await;
        assert!(matches!(r, Err(e) if e.kind == ErrorKind::Timeout));
    }
}
