//! Shared pieces of the fuzz targets: fixed provider accounts and targets, and chunking a stream
//! at positions taken from the input.
//!
//! Input layout of the stream targets: byte 0 picks the chunking (0: one chunk; otherwise chunk
//! lengths from a small generator seeded by it), the rest is the stream. `scripts/fuzz.sh` seeds
//! every corpus with files from `crates/*/testdata` behind such header bytes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use switchyard_config::{
    CircuitBreakerConfig, CredentialsConfig, LimitsConfig, ProviderConfig, ProviderKind, ProviderTimeoutsConfig,
    SecretString,
};
use switchyard_providers::{Operation, StreamTranslator, Target, Usage};

/// 2025-01-01T00:00:00Z: every target signs and stamps with this time, so outputs are repeatable.
pub fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_735_689_600)
}

/// A provider account of `kind` with credentials of the shape its adapter expects.
pub fn provider(kind: ProviderKind) -> ProviderConfig {
    let (base_url, credentials, region, project) = match kind {
        ProviderKind::Bedrock => (
            "https://bedrock-runtime.us-east-1.amazonaws.com",
            CredentialsConfig::Aws {
                access_key_id: SecretString::new("AKIDSWITCHYARDFUZZ"),
                secret_access_key: SecretString::new("switchyard-fuzz-secret"),
                session_token: Some(SecretString::new("session")),
            },
            Some("us-east-1".to_owned()),
            None,
        ),
        ProviderKind::Vertex => (
            "https://us-east5-aiplatform.googleapis.com",
            CredentialsConfig::ApiKey {
                key: SecretString::new("unused: the bearer is given"),
            },
            Some("us-east5".to_owned()),
            Some("fuzz-project".to_owned()),
        ),
        ProviderKind::Gemini => (
            "https://generativelanguage.googleapis.com",
            CredentialsConfig::ApiKey {
                key: SecretString::new("AIza-fuzz"),
            },
            None,
            None,
        ),
        ProviderKind::Anthropic => (
            "https://api.anthropic.com",
            CredentialsConfig::ApiKey {
                key: SecretString::new("sk-ant-fuzz"),
            },
            None,
            None,
        ),
        ProviderKind::Cohere => (
            "https://api.cohere.com",
            CredentialsConfig::ApiKey {
                key: SecretString::new("co-fuzz"),
            },
            None,
            None,
        ),
        ProviderKind::AzureOpenai => (
            "https://fuzz.openai.azure.com",
            CredentialsConfig::ApiKey {
                key: SecretString::new("azure-fuzz"),
            },
            None,
            None,
        ),
        _ => (
            "https://api.openai.com/v1",
            CredentialsConfig::ApiKey {
                key: SecretString::new("sk-fuzz"),
            },
            None,
            None,
        ),
    };
    ProviderConfig {
        id: format!("default/{kind:?}").to_lowercase(),
        kind,
        base_url: base_url.into(),
        credentials: Some(credentials),
        region,
        api_version: (kind == ProviderKind::AzureOpenai).then(|| "2024-10-21".to_owned()),
        project,
        headers: Default::default(),
        quota: LimitsConfig::default(),
        timeouts: ProviderTimeoutsConfig::default(),
        circuit_breaker: CircuitBreakerConfig::default(),
        mock: None,
        http_version: Default::default(),
    }
}

/// Upstream models worth telling apart per provider kind (they pick different wire formats).
pub fn models(kind: ProviderKind) -> &'static [&'static str] {
    match kind {
        ProviderKind::Bedrock => &[
            "us.anthropic.claude-3-5-sonnet-20241022-v2:0",
            "amazon.titan-embed-text-v2:0",
            "cohere.embed-english-v3",
        ],
        ProviderKind::Vertex => &[
            "gemini-2.0-flash",
            "claude-3-5-sonnet-v2@20241022",
            "text-embedding-005",
        ],
        ProviderKind::Gemini => &["gemini-2.0-flash", "text-embedding-004"],
        ProviderKind::Cohere => &["command-r-plus", "embed-english-v3.0"],
        ProviderKind::Anthropic => &["claude-3-5-sonnet-20241022"],
        _ => &["gpt-4o-mini"],
    }
}

/// A target for `provider` and `model` at [`now`].
pub fn target<'a>(provider: &'a ProviderConfig, model: &'a str, drop_unsupported_params: bool) -> Target<'a> {
    Target {
        provider,
        model,
        drop_unsupported_params,
        now: now(),
        bearer: Some("ya29.fuzz-token"),
    }
}

/// The operation a selector byte names.
pub fn operation(selector: u8) -> Operation {
    match selector % 4 {
        0 => Operation::Chat,
        1 => Operation::Embeddings,
        2 => Operation::Completions,
        _ => Operation::Responses,
    }
}

/// Splits `data` into chunks: one chunk when `seed` is 0, otherwise lengths of 1 to 64 bytes
/// from an xorshift generator seeded by `seed` (so a seed reproduces its split).
pub fn chunks(seed: u8, data: &[u8]) -> Vec<&[u8]> {
    if seed == 0 {
        return vec![data];
    }
    let mut state = u32::from(seed).wrapping_mul(0x9E37_79B9) | 1;
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let len = (state % 64) as usize + 1;
        let (head, tail) = rest.split_at(len.min(rest.len()));
        out.push(head);
        rest = tail;
    }
    out
}

/// What a stream translator produced: the bytes for the client, usage, completeness, and whether
/// every call succeeded.
#[derive(Debug, PartialEq, Eq)]
pub struct StreamRun {
    /// Concatenated output.
    pub out: Vec<u8>,
    /// Usage at the end.
    pub usage: Option<Usage>,
    /// Whether the terminal event was seen.
    pub complete: bool,
    /// Whether `feed` and `finish` all returned `Ok`.
    pub ok: bool,
}

/// Feeds `parts` to `t`, then finishes it (stopping at the first error, as the gateway does).
pub fn run_stream(mut t: Box<dyn StreamTranslator>, parts: &[&[u8]]) -> StreamRun {
    let mut out = Vec::new();
    let mut ok = true;
    for part in parts {
        if t.feed(Bytes::copy_from_slice(part), &mut out).is_err() {
            ok = false;
            break;
        }
    }
    if ok && t.finish(&mut out).is_err() {
        ok = false;
    }
    StreamRun {
        out: out.concat(),
        usage: t.usage(),
        complete: t.complete(),
        ok,
    }
}

/// Runs the stream whole and chunked as `seed` says; when both runs succeed they must agree:
/// a translator's output may not depend on where the network split its input.
pub fn check_stream(make: &dyn Fn() -> Box<dyn StreamTranslator>, seed: u8, data: &[u8]) {
    let chunked = run_stream(make(), &chunks(seed, data));
    if seed == 0 {
        return;
    }
    let whole = run_stream(make(), &[data]);
    if whole.ok && chunked.ok {
        assert_eq!(whole, chunked, "output differs between a whole and a chunked feed");
    }
}

/// The OpenAI adapter and its Azure preset.
pub const OPENAI_KINDS: &[ProviderKind] = &[ProviderKind::Openai, ProviderKind::AzureOpenai];
/// Anthropic Messages.
pub const ANTHROPIC_KINDS: &[ProviderKind] = &[ProviderKind::Anthropic];
/// Bedrock Converse and its embedding families.
pub const BEDROCK_KINDS: &[ProviderKind] = &[ProviderKind::Bedrock];
/// Gemini and Vertex (Gemini and Claude models).
pub const GOOGLE_KINDS: &[ProviderKind] = &[ProviderKind::Gemini, ProviderKind::Vertex];
/// Cohere v2.
pub const COHERE_KINDS: &[ProviderKind] = &[ProviderKind::Cohere];

/// The operation and the model byte 0 names for `kind`.
fn op_and_model(kind: ProviderKind, selector: u8) -> (Operation, &'static str) {
    let models = models(kind);
    (operation(selector), models[usize::from(selector / 4) % models.len()])
}

/// Input `[selector, status, body...]`: `Adapter::parse` on the body for the operation and model
/// the selector names, and `Adapter::error` on it with a status from 400 to 655.
pub fn check_response(kind: ProviderKind, input: &[u8]) {
    let [selector, status, body @ ..] = input else { return };
    let p = provider(kind);
    let (op, model) = op_and_model(kind, *selector);
    let t = target(&p, model, false);
    let adapter = switchyard_providers::adapter(kind);
    if let Ok(translated) = adapter.parse(op, body, &t) {
        // What a translating adapter hands back to the client is JSON. (A passthrough adapter
        // forwards the upstream's bytes as they came; it reads only `usage`, and serde_json skips
        // the strings it ignores without checking their UTF-8.)
        assert!(
            adapter.passthrough() || serde_json::from_slice::<serde_json::Value>(&translated.body).is_ok(),
            "translated body is not JSON"
        );
    }
    let headers = http_headers(body);
    let _ = adapter.error(400 + u16::from(*status), &headers, body);
}

/// A `retry-after` header from the start of the body, so the error mappers parse one too.
fn http_headers(body: &[u8]) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    let value = &body[..body.len().min(12)];
    if let Ok(v) = http::HeaderValue::from_bytes(value) {
        headers.insert("retry-after", v);
    }
    headers
}

/// Input `[selector, chunking, stream...]`: the adapter's stream translator for the operation and
/// model the selector names, checked with [`check_stream`].
pub fn check_adapter_stream(kind: ProviderKind, input: &[u8]) {
    let [selector, seed, data @ ..] = input else { return };
    let p = provider(kind);
    let (op, model) = op_and_model(kind, *selector);
    let t = target(&p, model, false);
    let adapter = switchyard_providers::adapter(kind);
    check_stream(&|| adapter.stream(op, &t), *seed, data);
}
