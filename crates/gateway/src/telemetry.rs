//! OpenTelemetry traces over OTLP/HTTP (protobuf): one SERVER span per request and one CLIENT
//! span per upstream attempt (retries, fallbacks and hedges each get their own), with the GenAI
//! semantic-convention attributes (`gen_ai.*`).
//!
//! Off unless an OTLP endpoint is configured; then the gateway holds no [`Tracing`] and every
//! hook here is a branch on an empty `Option`. Spans carry names, counts, statuses and timings:
//! never a prompt, a completion or a key (the key's team, not the key).
//!
//! It uses the OpenTelemetry API directly, not `tracing` spans bridged by `tracing-opentelemetry`:
//! the log subscriber does no per-request span work, and what is exported is decided here.

use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, InstrumentationScope, Key, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use serde_json::Value;
use switchyard_config::{BackendConfig, ProviderConfig, ProviderKind, RouteConfig};
use switchyard_providers::{ErrorKind, Json, Operation, ProviderError, StreamTranslator, Translated, Usage};

/// The OTLP trace exporter could not be built (a malformed endpoint, say).
#[derive(Debug, thiserror::Error)]
#[error("OTLP trace exporter: {0}")]
pub struct Error(#[from] opentelemetry_otlp::ExporterBuildError);

/// The exporter and tracer, when traces are on. Cheap to clone.
#[derive(Clone)]
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl Tracing {
    /// Traces from the standard variables: on when `endpoint` (`--otlp-endpoint`, or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`) or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set, off when
    /// neither is or `OTEL_SDK_DISABLED=true`. The SDK reads the rest: `OTEL_SERVICE_NAME`
    /// (default `switchyard` here), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER[_ARG]`,
    /// `OTEL_BSP_*`, `OTEL_EXPORTER_OTLP_[TRACES_]HEADERS` and `_TIMEOUT`.
    ///
    /// Call it outside the async runtime: the exporter's blocking HTTP client runs on the batch
    /// processor's own thread.
    pub fn from_env(endpoint: Option<&str>) -> Result<Option<Self>, Error> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let traces_endpoint = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        let endpoint = endpoint
            .filter(|e| !e.trim().is_empty())
            .map(str::to_owned)
            .or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"));
        if traces_endpoint.is_none() && endpoint.is_none() {
            return Ok(None);
        }
        let protocol = var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"));
        if protocol.as_deref().is_some_and(|p| p != "http/protobuf") {
            tracing::warn!(
                protocol = protocol.as_deref().unwrap_or_default(),
                "traces are sent as OTLP http/protobuf only (the collector's port 4318, not gRPC's 4317)"
            );
        }
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary);
        // The per-signal variable wins over the base endpoint (the SDK reads it when none is given).
        if let (None, Some(base)) = (&traces_endpoint, &endpoint) {
            exporter = exporter.with_endpoint(traces_url(base));
        }
        let exporter = exporter.build()?;

        let detected = Resource::builder().build();
        let mut resource = Resource::builder();
        let named = detected
            .get(&Key::from_static_str("service.name"))
            .is_some_and(|v| !v.as_str().starts_with("unknown_service"));
        if !named {
            resource = resource.with_service_name("switchyard");
        }
        if detected.get(&Key::from_static_str("service.version")).is_none() {
            resource = resource.with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        let scope = InstrumentationScope::builder("switchyard")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let tracer = provider.tracer_with_scope(scope);
        Ok(Some(Self { provider, tracer }))
    }

    /// Exports the spans still queued and stops the exporter, waiting at most `limit`. Blocking:
    /// call it after the server stopped (and outside the async runtime).
    pub fn shutdown(&self, limit: Duration) {
        if let Err(e) = self.provider.shutdown_with_timeout(limit) {
            tracing::warn!(error = %e, "could not export the last traces");
        }
    }
}

/// `{base}/v1/traces`, as the OTLP spec builds it from `OTEL_EXPORTER_OTLP_ENDPOINT`.
fn traces_url(base: &str) -> String {
    format!("{}/v1/traces", base.trim().trim_end_matches('/'))
}

/// `gen_ai.operation.name` (also the `operation` label of `switchyard_requests_total`).
pub(crate) fn operation_name(op: Operation) -> &'static str {
    match op {
        Operation::Chat | Operation::Responses => "chat",
        Operation::Completions => "text_completion",
        Operation::Embeddings => "embeddings",
        Operation::Moderations => "moderation",
        Operation::Rerank => "rerank",
        Operation::Images => "image_generation",
        Operation::Transcriptions => "transcription",
        Operation::Translations => "translation",
        Operation::Speech => "speech",
    }
}

/// `gen_ai.provider.name`: the semantic conventions' well-known values, else our provider type.
fn provider_name(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Openai => "openai",
        ProviderKind::AzureOpenai => "azure.ai.openai",
        ProviderKind::Anthropic => "anthropic",
        ProviderKind::Bedrock => "aws.bedrock",
        ProviderKind::Vertex => "gcp.vertex_ai",
        ProviderKind::Gemini => "gcp.gemini",
        ProviderKind::Mistral => "mistral_ai",
        ProviderKind::Groq => "groq",
        ProviderKind::Xai => "x_ai",
        ProviderKind::Deepseek => "deepseek",
        ProviderKind::Cohere => "cohere",
        other => other.as_str(),
    }
}

/// `error.type` of an upstream failure: a small fixed set.
fn error_type(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::BadRequest => "bad_request",
        ErrorKind::Auth => "auth",
        ErrorKind::PermissionDenied => "permission_denied",
        ErrorKind::NotFound => "not_found",
        ErrorKind::RateLimit => "rate_limit",
        ErrorKind::ContextWindow => "context_window",
        ErrorKind::ContentPolicy => "content_policy",
        ErrorKind::Timeout => "timeout",
        ErrorKind::Server => "server_error",
        ErrorKind::Connect => "connect_error",
        ErrorKind::Protocol => "protocol_error",
    }
}

/// The most characters of a client's model string a span keeps.
pub(crate) const MODEL_CHARS: usize = 256;

/// `model`, at most [`MODEL_CHARS`] characters of it.
fn truncated(model: &str) -> String {
    match model.char_indices().nth(MODEL_CHARS) {
        Some((at, _)) => format!("{}...", &model[..at]),
        None => model.to_owned(),
    }
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The `model` of an OpenAI-shaped response body or of the first event of a stream.
fn response_model(b: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Model {
        model: Option<String>,
    }
    let json = match memchr::memmem::find(b, b"data: ") {
        Some(at) => {
            let rest = &b[at + 6..];
            &rest[..memchr::memchr(b'\n', rest).unwrap_or(rest.len())]
        }
        None => b,
    };
    serde_json::from_slice::<Model>(json)
        .ok()?
        .model
        .filter(|m| !m.is_empty())
        .map(|m| truncated(&m))
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// `traceparent` (and `tracestate`) for an upstream request.
pub type TraceHeaders = Vec<(&'static str, String)>;

struct HeaderInjector<'a>(&'a mut TraceHeaders);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        let key = match key {
            "traceparent" => "traceparent",
            "tracestate" => "tracestate",
            _ => return,
        };
        self.0.push((key, value));
    }
}

/// A request span's context: what attempts start from.
pub struct Parent {
    tracer: SdkTracer,
    cx: Context,
}

/// The SERVER span of one request; empty when traces are off. Ends when dropped: at the end of
/// `handle`, or for a stream when the stream ends (the forwarder owns it then).
#[derive(Default)]
pub(crate) struct RequestSpan(Option<Box<Parent>>);

impl RequestSpan {
    /// Starts the span, as a child of the client's `traceparent` when it sent one.
    pub(crate) fn start(tracing: Option<&Tracing>, op: Operation, anthropic: bool, headers: &HeaderMap) -> Self {
        let Some(t) = tracing else {
            return Self(None);
        };
        let route = match (anthropic, op) {
            (true, _) => "/v1/messages",
            (false, op) => op.path(),
        };
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        let name = operation_name(op);
        let span = t
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("gen_ai.operation.name", name),
                KeyValue::new("http.request.method", "POST"),
                KeyValue::new("http.route", route),
            ])
            .start_with_context(&t.tracer, &parent);
        Self(Some(Box::new(Parent {
            tracer: t.tracer.clone(),
            cx: parent.with_span(span),
        })))
    }

    /// The trace id (32 hex digits), when traces are on.
    pub(crate) fn trace_id(&self) -> Option<String> {
        self.0
            .as_ref()
            .map(|p| p.cx.span().span_context().trace_id().to_string())
    }

    /// What attempts start from.
    pub(crate) fn parent(&self) -> Option<&Parent> {
        self.0.as_deref()
    }

    fn with(&self, f: impl FnOnce(opentelemetry::trace::SpanRef<'_>)) {
        if let Some(p) = &self.0 {
            f(p.cx.span());
        }
    }

    /// The parsed request: the request's parameters (never its content). The model is the
    /// client's string, of any length: an attribute, cut to [`MODEL_CHARS`]; the span keeps its
    /// fixed name until [`RequestSpan::routed`].
    pub(crate) fn request(&self, model: &str, request: &Json, stream: bool) {
        self.with(|s| {
            s.set_attribute(KeyValue::new("gen_ai.request.model", truncated(model)));
            let max_tokens = ["max_tokens", "max_completion_tokens", "max_output_tokens"]
                .iter()
                .find_map(|k| request.get(*k).and_then(Value::as_u64));
            if let Some(n) = max_tokens {
                s.set_attribute(KeyValue::new("gen_ai.request.max_tokens", int(n)));
            }
            if let Some(t) = request.get("temperature").and_then(Value::as_f64) {
                s.set_attribute(KeyValue::new("gen_ai.request.temperature", t));
            }
            if let Some(p) = request.get("top_p").and_then(Value::as_f64) {
                s.set_attribute(KeyValue::new("gen_ai.request.top_p", p));
            }
            s.set_attribute(KeyValue::new("switchyard.stream", stream));
        });
    }

    /// The request found its route: the span is named `{operation} {model}` (the GenAI
    /// convention) now that `model` is known to name one of the config's routes, a bounded set.
    pub(crate) fn routed(&self, op: Operation, model: &str) {
        self.with(|s| s.update_name(format!("{} {}", operation_name(op), truncated(model))));
    }

    /// The client's key: its team only, never the key.
    pub(crate) fn key(&self, team: &str, request_id: &str) {
        self.with(|s| {
            s.set_attribute(KeyValue::new("switchyard.key.team", team.to_owned()));
            s.set_attribute(KeyValue::new("switchyard.request_id", request_id.to_owned()));
        });
    }

    /// Who served: the route (after rules and fallbacks), the backend (`cache` for a hit).
    pub(crate) fn served(&self, route: &str, backend: &str, attempts: u32, fallback_depth: u32) {
        self.with(|s| {
            if route != "-" {
                s.set_attribute(KeyValue::new("switchyard.route", route.to_owned()));
            }
            if backend != "-" {
                s.set_attribute(KeyValue::new("switchyard.backend", backend.to_owned()));
                s.set_attribute(KeyValue::new("switchyard.attempts", i64::from(attempts)));
                s.set_attribute(KeyValue::new("switchyard.fallback_depth", i64::from(fallback_depth)));
            }
        });
    }

    /// A whole response: its model and usage.
    pub(crate) fn response(&self, body: &Bytes, usage: Option<&Usage>) {
        self.with(|s| {
            if let Some(m) = response_model(body) {
                s.set_attribute(KeyValue::new("gen_ai.response.model", m));
            }
        });
        self.usage(usage);
    }

    pub(crate) fn usage(&self, usage: Option<&Usage>) {
        let Some(u) = usage else {
            return;
        };
        self.with(|s| {
            s.set_attribute(KeyValue::new("gen_ai.usage.input_tokens", int(u.prompt_tokens)));
            s.set_attribute(KeyValue::new("gen_ai.usage.output_tokens", int(u.completion_tokens)));
        });
    }

    /// A stream's first bytes reached the client, `ttft` after the request arrived.
    pub(crate) fn first_token(&self, ttft: Duration, first: &Bytes) {
        self.with(|s| {
            let ms = ttft.as_secs_f64() * 1000.0;
            s.set_attribute(KeyValue::new("switchyard.ttft_ms", ms));
            s.add_event("gen_ai.first_token", vec![KeyValue::new("switchyard.ttft_ms", ms)]);
            if let Some(m) = response_model(first) {
                s.set_attribute(KeyValue::new("gen_ai.response.model", m));
            }
        });
    }

    /// The response failed after its status was sent (a stream cut short).
    pub(crate) fn failed(&self, kind: ErrorKind) {
        self.with(|s| {
            s.set_attribute(KeyValue::new("error.type", error_type(kind)));
            s.set_status(Status::error(error_type(kind)));
        });
    }

    /// The status sent to the client; `error_type` for a refused or failed request (a 5xx marks
    /// the span as an error; a 4xx is the client's and does not).
    pub(crate) fn status(&self, status: u16, error_type: Option<&'static str>) {
        self.with(|s| {
            s.set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
            if status >= 400 {
                let t = error_type.map_or_else(|| status.to_string(), str::to_owned);
                if status >= 500 {
                    s.set_status(Status::error(t.clone()));
                }
                s.set_attribute(KeyValue::new("error.type", t));
            }
        });
    }
}

impl Drop for RequestSpan {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            p.cx.span().end();
        }
    }
}

/// The CLIENT span of one upstream attempt; empty when traces are off (boxed, so that an empty
/// one adds a word to the attempt's future). An attempt dropped before it finished (the losing
/// hedge) ends as `cancelled`.
pub(crate) struct AttemptSpan(Option<Box<Attempt>>);

struct Attempt {
    span: opentelemetry_sdk::trace::Span,
    headers: TraceHeaders,
}

impl AttemptSpan {
    /// Starts attempt number `n` (1-based, across retries, fallbacks and hedges).
    pub(crate) fn start(
        parent: Option<&Parent>,
        op: Operation,
        n: u32,
        route: &RouteConfig,
        backend: &BackendConfig,
        provider: &ProviderConfig,
    ) -> Self {
        let Some(p) = parent else {
            return Self(None);
        };
        let system = provider_name(provider.kind);
        let mut attributes = vec![
            KeyValue::new("gen_ai.operation.name", operation_name(op)),
            KeyValue::new("gen_ai.provider.name", system),
            KeyValue::new("gen_ai.system", system),
            KeyValue::new("gen_ai.request.model", backend.model.clone()),
            KeyValue::new("switchyard.attempt", i64::from(n)),
            KeyValue::new("switchyard.route", format!("{}/{}", route.namespace, route.model)),
            KeyValue::new("switchyard.backend", backend.name.clone()),
        ];
        if let Ok(uri) = provider.base_url.parse::<http::Uri>() {
            if let Some(host) = uri.host() {
                attributes.push(KeyValue::new("server.address", host.to_owned()));
                let port = uri
                    .port_u16()
                    .unwrap_or(if uri.scheme_str() == Some("http") { 80 } else { 443 });
                attributes.push(KeyValue::new("server.port", i64::from(port)));
            }
        }
        let span = p
            .tracer
            .span_builder(format!("{} {}", operation_name(op), backend.model))
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(&p.tracer, &p.cx);
        let mut headers = Vec::with_capacity(2);
        let cx = Context::new().with_remote_span_context(span.span_context().clone());
        TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(&mut headers));
        Self(Some(Box::new(Attempt { span, headers })))
    }

    /// `traceparent` (and `tracestate`) naming this attempt, for the upstream request.
    pub(crate) fn headers(&self) -> &[(&'static str, String)] {
        self.0.as_ref().map_or(&[], |a| a.headers.as_slice())
    }

    /// The attempt succeeded with a whole response: the span ends.
    pub(crate) fn answered(mut self, full: &Translated) {
        let Some(attempt) = self.0.take() else {
            return;
        };
        let mut span = attempt.span;
        span.set_attribute(KeyValue::new("http.response.status_code", 200i64));
        if let Some(m) = response_model(&full.body) {
            span.set_attribute(KeyValue::new("gen_ai.response.model", m));
        }
        if let Some(u) = &full.usage {
            span.set_attribute(KeyValue::new("gen_ai.usage.input_tokens", int(u.prompt_tokens)));
            span.set_attribute(KeyValue::new("gen_ai.usage.output_tokens", int(u.completion_tokens)));
        }
        span.end();
    }

    /// The attempt succeeded with a stream: the span stays open until the stream ends (the
    /// returned translator owns it then).
    pub(crate) fn streaming(mut self, inner: Box<dyn StreamTranslator>) -> Box<dyn StreamTranslator> {
        let Some(attempt) = self.0.take() else {
            return inner;
        };
        let mut span = attempt.span;
        span.set_attribute(KeyValue::new("http.response.status_code", 200i64));
        Box::new(TracedStream { inner, span })
    }

    /// The attempt failed.
    pub(crate) fn failed(mut self, error: &ProviderError) {
        if let Some(Attempt { mut span, .. }) = self.0.take().map(|a| *a) {
            if let Some(status) = error.status {
                span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
            }
            span.set_attribute(KeyValue::new("error.type", error_type(error.kind)));
            span.set_status(Status::error(error_type(error.kind)));
            span.end();
        }
    }
}

impl Drop for AttemptSpan {
    fn drop(&mut self) {
        if let Some(Attempt { mut span, .. }) = self.0.take().map(|a| *a) {
            span.set_attribute(KeyValue::new("error.type", "cancelled"));
            span.end();
        }
    }
}

/// A stream translator that keeps its attempt's span open until the stream ends, then records
/// the usage it saw.
struct TracedStream {
    inner: Box<dyn StreamTranslator>,
    span: opentelemetry_sdk::trace::Span,
}

impl TracedStream {
    fn check(&mut self, r: Result<(), ProviderError>) -> Result<(), ProviderError> {
        if let Err(e) = &r {
            self.span.set_attribute(KeyValue::new("error.type", error_type(e.kind)));
            self.span.set_status(Status::error(error_type(e.kind)));
        }
        r
    }
}

impl StreamTranslator for TracedStream {
    fn feed(&mut self, chunk: Bytes, out: &mut Vec<Bytes>) -> Result<(), ProviderError> {
        let r = self.inner.feed(chunk, out);
        self.check(r)
    }

    fn finish(&mut self, out: &mut Vec<Bytes>) -> Result<(), ProviderError> {
        let r = self.inner.finish(out);
        self.check(r)
    }

    fn usage(&self) -> Option<Usage> {
        self.inner.usage()
    }

    fn complete(&self) -> bool {
        self.inner.complete()
    }
}

impl Drop for TracedStream {
    fn drop(&mut self) {
        if let Some(u) = self.inner.usage() {
            self.span
                .set_attribute(KeyValue::new("gen_ai.usage.input_tokens", int(u.prompt_tokens)));
            self.span
                .set_attribute(KeyValue::new("gen_ai.usage.output_tokens", int(u.completion_tokens)));
        }
        self.span.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_url_appends_the_signal_path() {
        assert_eq!(traces_url("http://collector:4318"), "http://collector:4318/v1/traces");
        assert_eq!(traces_url("http://collector:4318/"), "http://collector:4318/v1/traces");
    }

    #[test]
    fn response_model_reads_bodies_and_first_events() {
        assert_eq!(
            response_model(br#"{"choices":[],"model":"gpt-4o-2024-08-06"}"#).as_deref(),
            Some("gpt-4o-2024-08-06")
        );
        assert_eq!(
            response_model(b"data: {\"id\":\"x\",\"model\":\"m\",\"choices\":[]}\n\ndata: [DONE]\n\n").as_deref(),
            Some("m")
        );
        assert_eq!(response_model(b"event: ping\n\n"), None);
    }

    /// Spans the tracer ended, kept in memory.
    #[derive(Clone, Debug, Default)]
    struct Kept(std::sync::Arc<std::sync::Mutex<Vec<opentelemetry_sdk::trace::SpanData>>>);

    impl opentelemetry_sdk::trace::SpanExporter for Kept {
        async fn export(
            &self,
            batch: Vec<opentelemetry_sdk::trace::SpanData>,
        ) -> opentelemetry_sdk::error::OTelSdkResult {
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    fn kept_tracing() -> (Tracing, Kept) {
        let kept = Kept::default();
        let provider = SdkTracerProvider::builder().with_simple_exporter(kept.clone()).build();
        let tracer = provider.tracer("test");
        (Tracing { provider, tracer }, kept)
    }

    /// A client's model string is anything up to the request size limit: it never names a span
    /// (span names are what trace backends index), and its attribute is cut; once it is known to
    /// name a route, it names the span as the GenAI conventions say.
    #[test]
    fn a_clients_model_string_never_names_a_span_unbounded() {
        let (t, kept) = kept_tracing();
        let long = "m".repeat(100_000);
        let request: Json = serde_json::from_value(serde_json::json!({"model": long, "max_tokens": 5})).unwrap();
        let span = RequestSpan::start(Some(&t), Operation::Chat, false, &HeaderMap::new());
        span.request(&long, &request, false);
        drop(span);
        let span = RequestSpan::start(Some(&t), Operation::Chat, false, &HeaderMap::new());
        span.request("demo", &request, false);
        span.routed(Operation::Chat, "demo");
        drop(span);
        let spans = kept.0.lock().unwrap().clone();
        assert_eq!(spans.len(), 2);
        let model = |s: &opentelemetry_sdk::trace::SpanData| {
            s.attributes
                .iter()
                .find(|kv| kv.key.as_str() == "gen_ai.request.model")
                .map(|kv| kv.value.as_str().into_owned())
                .unwrap_or_default()
        };
        assert_eq!(spans[0].name, "chat", "unrouted: the fixed name");
        assert_eq!(model(&spans[0]), format!("{}...", "m".repeat(MODEL_CHARS)));
        assert_eq!(spans[1].name, "chat demo");
        assert_eq!(model(&spans[1]), "demo");
        // Cut on a character boundary.
        assert_eq!(truncated(&"é".repeat(300)), format!("{}...", "é".repeat(MODEL_CHARS)));
        let upstream = format!(r#"{{"choices":[],"model":"{}"}}"#, "x".repeat(10_000));
        assert_eq!(
            response_model(upstream.as_bytes()).map(|m| m.len()),
            Some(MODEL_CHARS + 3)
        );
    }

    #[test]
    fn off_is_inert() {
        let span = RequestSpan::start(None, Operation::Chat, false, &HeaderMap::new());
        assert!(span.parent().is_none());
        span.status(500, Some("server_error"));
        span.usage(None);
        // Empty spans are a word each in the request's futures.
        assert_eq!(std::mem::size_of::<RequestSpan>(), std::mem::size_of::<usize>());
        assert_eq!(std::mem::size_of::<AttemptSpan>(), std::mem::size_of::<usize>());
    }
}
