//! OpenAI and the OpenAI-compatible family (Azure OpenAI, Mistral, Groq, xAI, DeepSeek,
//! Together, Fireworks, OpenRouter, Ollama, vLLM, any compatible server).
//!
//! Requests and responses are OpenAI's own shape, so this adapter passes bytes through: it only
//! sets the upstream model, asks for stream usage, adds credentials, and reads usage from the
//! response as it goes by. Presets differ in path layout, auth header and parameter quirks.
//!
//! Reference: OpenAI API reference, "Chat", "Embeddings", "Responses" and "Error codes";
//! Azure OpenAI REST reference ("Chat completions", `api-key` header, `api-version`).

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde::Deserialize;
use switchyard_config::{CredentialsConfig, ProviderKind};

use crate::sse::{EventRef, Parser, DEFAULT_MAX_EVENT};
use crate::{
    kind_for_status, retry_after, Adapter, ErrorKind, Json, Operation, Original, ProviderError, StreamTranslator,
    Target, Translated, UpstreamRequest, Usage,
};

/// How a preset authenticates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Bearer <key>`.
    Bearer,
    /// `api-key: <key>` (Azure).
    ApiKeyHeader,
}

/// An OpenAI-compatible provider preset.
#[derive(Clone, Copy, Debug)]
pub struct OpenAi {
    /// Provider name in messages.
    pub name: &'static str,
    /// The provider type it speaks for.
    pub kind: ProviderKind,
    /// Auth style.
    pub auth: Auth,
    /// Azure-style deployment paths (`/openai/deployments/{model}/...?api-version=`).
    pub azure_paths: bool,
    /// Accepts `stream_options.include_usage`.
    pub stream_usage_option: bool,
    /// Serves `/v1/responses`.
    pub responses_api: bool,
}

macro_rules! preset {
    ($ident:ident, $kind:ident, $name:expr, stream_usage = $su:expr, responses = $resp:expr) => {
        #[doc = concat!("The `", $name, "` preset.")]
        pub static $ident: OpenAi = OpenAi {
            name: $name,
            kind: ProviderKind::$kind,
            auth: Auth::Bearer,
            azure_paths: false,
            stream_usage_option: $su,
            responses_api: $resp,
        };
    };
}

preset!(OPENAI, Openai, "openai", stream_usage = true, responses = true);
preset!(MISTRAL, Mistral, "mistral", stream_usage = false, responses = false);
preset!(GROQ, Groq, "groq", stream_usage = true, responses = true);
preset!(XAI, Xai, "xai", stream_usage = true, responses = true);
preset!(DEEPSEEK, Deepseek, "deepseek", stream_usage = true, responses = false);
preset!(TOGETHER, Together, "together", stream_usage = true, responses = false);
preset!(
    FIREWORKS,
    Fireworks,
    "fireworks",
    stream_usage = true,
    responses = false
);
preset!(
    OPENROUTER,
    Openrouter,
    "openrouter",
    stream_usage = true,
    responses = false
);
preset!(OLLAMA, Ollama, "ollama", stream_usage = true, responses = false);
preset!(VLLM, Vllm, "vllm", stream_usage = true, responses = true);
preset!(
    COMPATIBLE,
    OpenaiCompatible,
    "openai-compatible",
    stream_usage = true,
    responses = true
);

/// Azure OpenAI.
pub static AZURE: OpenAi = OpenAi {
    name: "azure-openai",
    kind: ProviderKind::AzureOpenai,
    auth: Auth::ApiKeyHeader,
    azure_paths: true,
    stream_usage_option: true,
    responses_api: false,
};

/// The preset of an OpenAI-compatible kind (others fall back to the generic preset).
pub fn preset(kind: ProviderKind) -> &'static OpenAi {
    match kind {
        ProviderKind::Openai => &OPENAI,
        ProviderKind::AzureOpenai => &AZURE,
        ProviderKind::Mistral => &MISTRAL,
        ProviderKind::Groq => &GROQ,
        ProviderKind::Xai => &XAI,
        ProviderKind::Deepseek => &DEEPSEEK,
        ProviderKind::Together => &TOGETHER,
        ProviderKind::Fireworks => &FIREWORKS,
        ProviderKind::Openrouter => &OPENROUTER,
        ProviderKind::Ollama => &OLLAMA,
        ProviderKind::Vllm => &VLLM,
        _ => &COMPATIBLE,
    }
}

impl OpenAi {
    fn url(&self, op: Operation, target: &Target<'_>) -> Result<String, ProviderError> {
        let base = target.provider.base_url.trim_end_matches('/');
        let tail = match op {
            Operation::Chat => "chat/completions",
            Operation::Embeddings => "embeddings",
            Operation::Completions => "completions",
            Operation::Responses => {
                if !self.responses_api {
                    return Err(ProviderError::new(
                        ErrorKind::BadRequest,
                        format!("{} backends do not serve /v1/responses", self.name),
                    ));
                }
                "responses"
            }
            Operation::Moderations
            | Operation::Rerank
            | Operation::Images
            | Operation::Transcriptions
            | Operation::Translations
            | Operation::Speech => {
                if !crate::serves(self.kind, op) {
                    return Err(ProviderError::new(
                        ErrorKind::BadRequest,
                        format!("{} backends do not serve {}", self.name, op.path()),
                    ));
                }
                match op {
                    Operation::Moderations => "moderations",
                    Operation::Rerank => "rerank",
                    Operation::Transcriptions => "audio/transcriptions",
                    Operation::Translations => "audio/translations",
                    Operation::Speech => "audio/speech",
                    _ => "images/generations",
                }
            }
        };
        Ok(if self.azure_paths {
            let version = azure_api_version(target);
            format!(
                "{base}/openai/deployments/{}/{tail}?api-version={version}",
                target.model
            )
        } else {
            // Not `format!`: this runs for every upstream call.
            let mut url = String::with_capacity(base.len() + 1 + tail.len());
            url.push_str(base);
            url.push('/');
            url.push_str(tail);
            url
        })
    }

    /// Whether the API refuses request fields it does not know (OpenAI answers `Unrecognized
    /// request argument supplied`, Azure the same, Mistral 422 `Extra inputs are not permitted`,
    /// Groq and xAI 400). The others (vLLM, Together, Fireworks, OpenRouter, Ollama, DeepSeek,
    /// any compatible server) take or ignore extra sampling fields such as `top_k`.
    fn refuses_unknown_params(&self) -> bool {
        matches!(
            self.kind,
            ProviderKind::Openai
                | ProviderKind::AzureOpenai
                | ProviderKind::Mistral
                | ProviderKind::Groq
                | ProviderKind::Xai
        )
    }

    fn headers(&self, target: &Target<'_>) -> Result<HeaderMap, ProviderError> {
        let mut h = HeaderMap::with_capacity(4 + target.provider.headers.len());
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (k, v) in &target.provider.headers {
            let (Ok(name), Ok(value)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) else {
                continue;
            };
            h.insert(name, value);
        }
        if let Some(CredentialsConfig::ApiKey { key }) = &target.provider.credentials {
            // Built without `format!` and a second copy: this runs for every upstream call.
            let key = key.expose().as_bytes();
            let (name, value) = match self.auth {
                Auth::Bearer => {
                    let mut v = Vec::with_capacity(7 + key.len());
                    v.extend_from_slice(b"Bearer ");
                    v.extend_from_slice(key);
                    (http::header::AUTHORIZATION, v)
                }
                Auth::ApiKeyHeader => (HeaderName::from_static("api-key"), key.to_vec()),
            };
            let mut value = HeaderValue::from_maybe_shared(Bytes::from(value)).map_err(|_| {
                ProviderError::new(ErrorKind::Auth, "the provider's API key is not a valid header value")
            })?;
            value.set_sensitive(true);
            h.insert(name, value);
        }
        Ok(h)
    }
}

/// Parameters of Anthropic's Messages API that the Anthropic ingress keeps in the OpenAI-shaped
/// request (see `anthropic::ingress`) and OpenAI's chat completions API does not have.
const CLAUDE_ONLY_PARAMS: &[&str] = &["top_k", "thinking"];

/// The Azure OpenAI `api-version` a target is called with.
fn azure_api_version<'a>(target: &'a Target<'_>) -> &'a str {
    target.provider.api_version.as_deref().unwrap_or("2024-10-21")
}

/// Whether an Azure OpenAI `api-version` takes `developer` messages. They came with o1 in
/// `2024-12-01-preview` (Azure OpenAI reasoning models, "API & feature support"); versions dated
/// before it, the `2024-10-21` GA among them, answer 400 `Invalid value: 'developer'`. Undated
/// versions (the v1 API's `preview`, `latest`) are newer.
pub fn azure_takes_developer(api_version: &str) -> bool {
    match api_version.get(..10) {
        Some(date) if date.as_bytes().first().is_some_and(u8::is_ascii_digit) => date >= "2024-12-01",
        _ => true,
    }
}

/// The messages with `developer` ones sent as `system` ones, which is what they replace (`None`
/// when there is nothing to change).
fn developer_as_system(body: &Json) -> Option<serde_json::Value> {
    let messages = body.get("messages")?.as_array()?;
    if !messages.iter().any(|m| m.get("role").is_some_and(|r| r == "developer")) {
        return None;
    }
    let mut messages = messages.clone();
    for m in &mut messages {
        if let Some(role) = m.get_mut("role").filter(|r| *r == "developer") {
            *role = "system".into();
        }
    }
    Some(serde_json::Value::Array(messages))
}

/// A request body with a few top-level fields set or removed, serialised from the client's
/// without copying it: the body is most of a request's bytes, and a deep copy of a large one
/// costs as much as its parse. Keys come out sorted, as `Json` (a `BTreeMap`) writes them.
struct Patched<'a> {
    base: &'a Json,
    /// Fields set (`Some`) or removed (`None`), in no order until serialised.
    changes: Vec<(&'static str, Option<serde_json::Value>)>,
}

impl<'a> Patched<'a> {
    fn new(base: &'a Json) -> Self {
        Self {
            base,
            changes: Vec::with_capacity(4),
        }
    }

    fn set(&mut self, key: &'static str, value: serde_json::Value) {
        self.change(key, Some(value));
    }

    fn remove(&mut self, key: &'static str) {
        self.change(key, None);
    }

    fn change(&mut self, key: &'static str, value: Option<serde_json::Value>) {
        match self.changes.iter_mut().find(|(k, _)| *k == key) {
            Some(c) => c.1 = value,
            None => self.changes.push((key, value)),
        }
    }
}

impl Patched<'_> {
    /// The client's bytes with the new model spliced in and fields the body lacks appended, when
    /// that is all that changes (fields set to the value they have change nothing); `None` when
    /// a field is removed or another changed.
    fn spliced(&self, original: &Original) -> Option<Vec<u8>> {
        let mut model = None;
        let mut added: [(&str, &serde_json::Value); 4] = [("", &serde_json::Value::Null); 4];
        let mut n = 0;
        for (k, v) in &self.changes {
            match (*k, v, self.base.get(*k)) {
                ("model", Some(serde_json::Value::String(m)), _) => model = Some(m.as_str()),
                (_, Some(v), Some(was)) if was == v => {}
                (k, Some(v), None) if n < added.len() => {
                    added[n] = (k, v);
                    n += 1;
                }
                _ => return None,
            }
        }
        model.map(|m| original.with(m, &added[..n]))
    }
}

impl serde::Serialize for Patched<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut changes: Vec<_> = self.changes.iter().collect();
        changes.sort_unstable_by_key(|(k, _)| *k);
        let mut changes = changes.into_iter().peekable();
        let mut map = s.serialize_map(None)?;
        for (k, v) in self.base {
            while let Some((ck, cv)) = changes.next_if(|(ck, _)| *ck < k.as_str()) {
                if let Some(cv) = cv {
                    map.serialize_entry(ck, cv)?;
                }
            }
            match changes.next_if(|(ck, _)| *ck == k.as_str()) {
                Some((ck, Some(cv))) => map.serialize_entry(ck, cv)?,
                Some((_, None)) => {}
                None => map.serialize_entry(k, v)?,
            }
        }
        for (ck, cv) in changes {
            if let Some(cv) = cv {
                map.serialize_entry(ck, cv)?;
            }
        }
        map.end()
    }
}

impl OpenAi {
    /// The URL and headers of an audio call (`op` one of the audio operations) whose body the
    /// gateway streams itself: a multipart upload (`content_type` with its boundary) or speech
    /// JSON. Refused for a provider type without the endpoint.
    pub fn audio_head(
        &self,
        op: Operation,
        target: &Target<'_>,
        content_type: &str,
    ) -> Result<(String, HeaderMap), ProviderError> {
        let url = self.url(op, target)?;
        let mut headers = self.headers(target)?;
        let value = HeaderValue::from_str(content_type).map_err(|_| {
            ProviderError::new(
                ErrorKind::BadRequest,
                "the request's content-type is not a valid header",
            )
        })?;
        headers.insert(http::header::CONTENT_TYPE, value);
        Ok((url, headers))
    }
}

impl Adapter for OpenAi {
    fn build(
        &self,
        op: Operation,
        request: &Json,
        target: &Target<'_>,
        stream: bool,
    ) -> Result<UpstreamRequest, ProviderError> {
        self.build_from(op, request, None, target, stream)
    }

    fn build_from(
        &self,
        op: Operation,
        request: &Json,
        original: Option<&Original>,
        target: &Target<'_>,
        stream: bool,
    ) -> Result<UpstreamRequest, ProviderError> {
        let mut body = Patched::new(request);
        if op == Operation::Chat && self.refuses_unknown_params() {
            // Claude's own parameters, which an Anthropic-format request carries on for Claude
            // backends: refused here like any parameter a translating adapter cannot send,
            // rather than by the provider.
            for param in CLAUDE_ONLY_PARAMS {
                if request.contains_key(*param) {
                    if !target.drop_unsupported_params {
                        return Err(ProviderError::unsupported_param(self.name, param));
                    }
                    body.remove(param);
                }
            }
        }
        if self.azure_paths {
            // Azure takes the deployment from the path.
            body.remove("model");
            if op == Operation::Chat && !azure_takes_developer(azure_api_version(target)) {
                if let Some(messages) = developer_as_system(request) {
                    body.set("messages", messages);
                }
            }
        } else {
            body.set("model", target.model.into());
        }
        if stream {
            body.set("stream", true.into());
            if self.stream_usage_option && matches!(op, Operation::Chat | Operation::Completions) {
                match request.get("stream_options") {
                    None => body.set("stream_options", serde_json::json!({"include_usage": true})),
                    Some(serde_json::Value::Object(o)) => {
                        let mut o = o.clone();
                        o.insert("include_usage".into(), true.into());
                        body.set("stream_options", serde_json::Value::Object(o));
                    }
                    // Not an object: sent as the client wrote it, for the provider to refuse.
                    Some(_) => {}
                }
            } else {
                body.remove("stream_options");
            }
        }
        let bytes = match original.and_then(|o| body.spliced(o)) {
            Some(bytes) => bytes,
            None => serde_json::to_vec(&body)
                .map_err(|e| ProviderError::new(ErrorKind::BadRequest, format!("cannot encode request: {e}")))?,
        };
        Ok(UpstreamRequest {
            method: Method::POST,
            url: self.url(op, target)?,
            headers: self.headers(target)?,
            body: Bytes::from(bytes),
        })
    }

    fn parse(&self, op: Operation, body: &[u8], _target: &Target<'_>) -> Result<Translated, ProviderError> {
        if op == Operation::Moderations && self.name == MISTRAL.name {
            return crate::moderations::mistral_response(body);
        }
        if op == Operation::Images {
            return images_response(body);
        }
        let usage = parse_usage(op, body)?;
        Ok(Translated {
            body: Bytes::copy_from_slice(body),
            usage,
        })
    }

    fn stream(&self, op: Operation, _target: &Target<'_>) -> Box<dyn StreamTranslator> {
        if op == Operation::Responses {
            Box::new(Passthrough::responses())
        } else {
            Box::new(Passthrough::default())
        }
    }

    fn error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        openai_error(status, headers, body)
    }

    fn passthrough(&self) -> bool {
        true
    }

    fn credentials(&self, target: &Target<'_>) -> Result<HeaderMap, ProviderError> {
        self.headers(target)
    }
}

#[derive(Deserialize)]
struct UsageOnly {
    #[serde(default)]
    usage: Option<WireUsage>,
}

/// OpenAI's usage object (chat, completions, embeddings and responses spellings).
#[derive(Deserialize, Default)]
pub struct WireUsage {
    #[serde(default, alias = "input_tokens")]
    prompt_tokens: u64,
    #[serde(default, alias = "output_tokens")]
    completion_tokens: u64,
    #[serde(default, alias = "input_tokens_details")]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(default, alias = "output_tokens_details")]
    completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Deserialize, Default)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: u64,
    /// Not OpenAI's: the gateway's own responses carry them (see [`Usage::openai_json`]).
    #[serde(default)]
    cache_write_tokens: u64,
    #[serde(default)]
    cache_write_1h_tokens: u64,
}

#[derive(Deserialize, Default)]
struct CompletionDetails {
    #[serde(default)]
    reasoning_tokens: u64,
}

impl From<WireUsage> for Usage {
    fn from(u: WireUsage) -> Self {
        Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            cached_tokens: u.prompt_tokens_details.as_ref().map_or(0, |d| d.cached_tokens),
            cache_write_tokens: u.prompt_tokens_details.as_ref().map_or(0, |d| d.cache_write_tokens),
            cache_write_1h_tokens: u.prompt_tokens_details.as_ref().map_or(0, |d| d.cache_write_1h_tokens),
            reasoning_tokens: u.completion_tokens_details.map_or(0, |d| d.reasoning_tokens),
        }
    }
}

/// An image generation answer, passed through. GPT Image models report token usage; DALL-E
/// models bill per image and report none, so each image is counted as one completion token: a
/// DALL-E backend's `pricing.output` is the price of a million images.
fn images_response(body: &[u8]) -> Result<Translated, ProviderError> {
    #[derive(Deserialize)]
    struct Images {
        #[serde(default)]
        data: Vec<serde::de::IgnoredAny>,
        #[serde(default)]
        usage: Option<WireUsage>,
    }
    let parsed: Images = serde_json::from_slice(body).map_err(crate::wire::unreadable)?;
    let usage = match parsed.usage {
        Some(u) => Usage::from(u),
        None => Usage {
            completion_tokens: parsed.data.len() as u64,
            ..Usage::default()
        },
    };
    Ok(Translated {
        body: Bytes::copy_from_slice(body),
        usage: Some(usage),
    })
}

/// The usage an answer reports. Its `usage` field is found by [`crate::scan::field`] and only that
/// field parsed; a body the scan cannot vouch for, or whose field does not parse, is parsed whole,
/// which refuses it with serde_json's error (a `502`), or reads it as before.
fn parse_usage(op: Operation, body: &[u8]) -> Result<Option<Usage>, ProviderError> {
    if let Some(usage) = scanned_usage(body) {
        return Ok(usage);
    }
    let parsed: UsageOnly = serde_json::from_slice(body).map_err(|e| {
        ProviderError::new(
            ErrorKind::Protocol,
            format!("upstream sent an unreadable response: {e}"),
        )
    })?;
    let _ = op;
    Ok(parsed.usage.map(Usage::from))
}

/// The usage of a body the scan vouches for, its field parsed; `None` when it does not, or the
/// field does not parse.
fn scanned_usage(body: &[u8]) -> Option<Option<Usage>> {
    let usage = crate::scan::field(body, b"usage", crate::scan::json::<Option<WireUsage>>).ok()?;
    Some(usage.flatten().map(Usage::from))
}

/// Forwards OpenAI SSE bytes unchanged, reading usage and the terminator on the way.
///
/// Nothing is released before the first whole event: until then the upstream has not shown that
/// it streams SSE at all (a JSON or HTML body, garbage, or one endless line would otherwise reach
/// the client as a `200` stream), and a failure before the first release is an ordinary failed
/// attempt (a 502 in the client's shape). What is held is bounded like an event.
#[derive(Default)]
pub struct Passthrough {
    parser: Parser,
    usage: Option<Usage>,
    done: bool,
    /// A Responses API stream: typed events, no `[DONE]`, usage inside `response.completed`.
    responses: bool,
    /// Whether a whole event has been seen (and so bytes released).
    started: bool,
    /// Bytes received before the first whole event.
    held: Vec<Bytes>,
}

/// A Responses API event's `response`, for its usage.
#[derive(Deserialize)]
struct ResponseEvent {
    #[serde(default)]
    response: Option<UsageOnly>,
}

impl Passthrough {
    /// For a `/v1/responses` stream: it ends with `response.completed` (or `response.incomplete`,
    /// cut at `max_output_tokens`), whose `response.usage` is the stream's usage; `error` and
    /// `response.failed` events fail it.
    pub fn responses() -> Self {
        Self {
            responses: true,
            ..Self::default()
        }
    }
}

/// What a chunk's events told so far: committed to the [`Passthrough`] only when the whole chunk
/// was framed without error, as when its events were read after framing it.
struct Reading {
    responses: bool,
    usage: Option<Usage>,
    done: bool,
    /// The first event that failed the stream, and whether the chunk is released before the
    /// error (an upstream error event reaches the client; a malformed chunk does not).
    failed: Option<(ProviderError, bool)>,
}

impl Reading {
    fn event(&mut self, ev: &EventRef<'_>) {
        if self.failed.is_some() {
            return;
        }
        let read = if self.responses {
            self.responses_event(ev)
        } else {
            self.chat_event(ev)
        };
        if let Err(failed) = read {
            self.failed = Some(failed);
        }
    }

    fn chat_event(&mut self, ev: &EventRef<'_>) -> Result<(), (ProviderError, bool)> {
        if ev.data == "[DONE]" {
            self.done = true;
        } else if let Some(reported) = reports_usage(ev.data.as_bytes()) {
            // OpenAI names `"usage":null` in every chunk of a stream that asked for usage:
            // only the one that carries it is parsed. An event naming usage was never
            // refused (a parse failure reads as no usage), so it is not validated either.
            if reported {
                let data = ev.data.as_bytes();
                let usage = scanned_usage(data).or_else(|| {
                    let parsed = serde_json::from_slice::<UsageOnly>(data).ok()?;
                    Some(parsed.usage.map(Usage::from))
                });
                if let Some(u) = usage.flatten() {
                    self.usage = Some(u);
                }
            }
        } else if ev.data.starts_with("{\"error\"") {
            return Err((openai_error(500, &HeaderMap::new(), ev.data.as_bytes()), true));
        } else if serde_json::from_str::<serde::de::IgnoredAny>(&ev.data).is_err() {
            return Err((
                ProviderError::new(ErrorKind::Protocol, "upstream sent a malformed stream chunk"),
                false,
            ));
        }
        Ok(())
    }

    fn responses_event(&mut self, ev: &EventRef<'_>) -> Result<(), (ProviderError, bool)> {
        let kind = if ev.event.is_empty() {
            event_type(&ev.data)
        } else {
            ev.event
        };
        match kind {
            "response.completed" | "response.incomplete" => {
                self.done = true;
                let parsed: ResponseEvent = serde_json::from_str(&ev.data).map_err(|_| {
                    (
                        ProviderError::new(ErrorKind::Protocol, "upstream sent a malformed stream event"),
                        true,
                    )
                })?;
                if let Some(u) = parsed.response.and_then(|r| r.usage) {
                    self.usage = Some(u.into());
                }
                Ok(())
            }
            "response.failed" | "error" => Err((
                ProviderError::new(ErrorKind::Server, format!("upstream stream failed: {}", ev.data)),
                true,
            )),
            _ => {
                if serde_json::from_str::<serde::de::IgnoredAny>(&ev.data).is_err() {
                    return Err((
                        ProviderError::new(ErrorKind::Protocol, "upstream sent a malformed stream chunk"),
                        true,
                    ));
                }
                Ok(())
            }
        }
    }
}

/// The top-level `type` of a Responses API event (the first `"type"` key: OpenAI writes it first).
fn event_type(data: &str) -> &str {
    let Some(at) = data.find("\"type\":\"") else {
        return "";
    };
    let rest = &data[at + 8..];
    rest.find('"').map_or("", |end| &rest[..end])
}

/// Whether an event names `"usage"` (`None` when it does not) and, if it does, whether it may
/// carry one: `false` when every `"usage"` in it is a key whose value is `null`. A byte scan, so
/// that the chunks of a stream are not each parsed to find the one that reports usage.
fn reports_usage(data: &[u8]) -> Option<bool> {
    static USAGE: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"usage\""));
    let mut named = false;
    for at in USAGE.find_iter(data) {
        named = true;
        let after = skip_space(&data[at + USAGE.needle().len()..]);
        let Some(value) = after.strip_prefix(b":") else {
            // A string value, not the key: parsed, as before this scan.
            return Some(true);
        };
        if !skip_space(value).starts_with(b"null") {
            return Some(true);
        }
    }
    named.then_some(false)
}

fn skip_space(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(b.len());
    &b[start..]
}

impl StreamTranslator for Passthrough {
    fn feed(&mut self, chunk: Bytes, out: &mut Vec<Bytes>) -> Result<(), ProviderError> {
        let mut events = 0;
        let mut reading = Reading {
            responses: self.responses,
            usage: self.usage,
            done: self.done,
            failed: None,
        };
        self.parser.feed_each(&chunk, |ev| {
            events += 1;
            reading.event(&ev);
        })?;
        if !self.started && events == 0 {
            self.held.push(chunk);
            if self.held.iter().map(Bytes::len).sum::<usize>() > DEFAULT_MAX_EVENT {
                return Err(ProviderError::new(
                    ErrorKind::Protocol,
                    format!("upstream sent no stream event in its first {} bytes", DEFAULT_MAX_EVENT),
                ));
            }
            return Ok(());
        }
        self.started = true;
        self.usage = reading.usage;
        self.done = reading.done;
        let mut release = std::mem::take(&mut self.held);
        release.push(chunk);
        match reading.failed {
            None => {
                out.append(&mut release);
                Ok(())
            }
            Some((e, released)) => {
                if released {
                    out.append(&mut release);
                }
                Err(e)
            }
        }
    }

    fn finish(&mut self, _out: &mut Vec<Bytes>) -> Result<(), ProviderError> {
        if self.done {
            Ok(())
        } else {
            Err(ProviderError::new(
                ErrorKind::Protocol,
                if self.responses {
                    "upstream stream ended before response.completed"
                } else {
                    "upstream stream ended before [DONE]"
                },
            ))
        }
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }

    fn complete(&self) -> bool {
        self.done
    }
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: String,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    param: Option<String>,
    #[serde(default)]
    code: Option<serde_json::Value>,
}

/// Maps an OpenAI-shaped error response.
pub fn openai_error(status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError {
    let parsed: Option<ErrorBody> = serde_json::from_slice::<ErrorEnvelope>(body).ok().map(|e| e.error);
    let mut kind = kind_for_status(status);
    let (message, param, code) = match parsed {
        Some(b) => {
            let code = b.code.map(|c| match c {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            });
            let ty = b.kind.unwrap_or_default();
            let c = code.as_deref().unwrap_or("");
            if c == "context_length_exceeded" || b.message.contains("maximum context length") {
                kind = ErrorKind::ContextWindow;
            } else if c == "content_policy_violation" || c == "content_filter" || ty == "content_filter" {
                kind = ErrorKind::ContentPolicy;
            }
            (b.message, b.param, code)
        }
        None => (format!("upstream answered HTTP {status}"), None, None),
    };
    ProviderError {
        kind,
        status: Some(status),
        message,
        param,
        code,
        retry_after: retry_after(headers),
    }
}

#[cfg(test)]
mod tests;
