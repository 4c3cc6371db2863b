//! The response cache: exact match on a normalised request, per route.
//!
//! The key is SHA-256 over the route (`namespace/model`), the caller's namespace (the key's:
//! on a route other namespaces may use (`sharedWith`) one tenant must not be answered with what
//! another asked, unless the route's `cache.shared` says it may), the endpoint, the client's API shape, whether it streams, the headers and key labels the
//! route's rules match on (a rule may send them elsewhere), and the request's JSON with its
//! object keys sorted and the fields that do not change the output left out (`model`, which
//! the route replaces, `user`, `store`, `stream`, `service_tier`). Streamed responses are stored
//! as the exact chunks the client received and replayed as a stream; a stream cut short, an
//! error, or a body over the route's `maxBodyBytes` is never stored.
//!
//! Per request: `cache-control: no-cache` skips the lookup (the fresh answer is still
//! stored), `cache-control: no-store` does not store, `x-switchyard-cache-ttl: <seconds>`
//! shortens the entry's time to live (0 does not store; never longer than the route's `ttl`, so
//! a client cannot pin entries for a year). Hits cost nothing: the request's budget
//! reservation is released at zero and no tokens are counted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue};
use serde_json::Value;
use sha2::{Digest, Sha256};
use switchyard_config::RouteConfig;
use switchyard_providers::Operation;

use crate::request::Request;
use crate::state::SharedState;

/// Request fields that do not change the response.
const IGNORED: &[&str] = &["model", "user", "store", "stream", "service_tier"];
const MAGIC: &[u8; 4] = b"SWC1";

/// One request's cache policy and key.
pub(crate) struct Lookup {
    key: [u8; 32],
    read: bool,
    ttl: Option<Duration>,
    max_body: usize,
    stream: bool,
}

impl Lookup {
    /// The lookup for a request on a route with a cache; `None` when the route has none.
    /// `namespace` and `key_labels`: the calling key's.
    pub(crate) fn new(
        route: &RouteConfig,
        headers: &HeaderMap,
        namespace: &str,
        key_labels: &BTreeMap<String, String>,
        format: &'static str,
        request: &Request,
    ) -> Option<Self> {
        let cfg = route.cache.as_ref()?;
        let (mut read, mut store) = (true, true);
        for directive in headers
            .get_all(http::header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
        {
            match directive.trim().to_ascii_lowercase().as_str() {
                "no-cache" => read = false,
                "no-store" => store = false,
                _ => {}
            }
        }
        let route_ttl = Duration::from_millis(cfg.ttl_ms);
        let ttl = headers
            .get("x-switchyard-cache-ttl")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map_or(route_ttl, |secs| {
                Duration::from_secs_f64(secs.min(route_ttl.as_secs_f64()))
            });
        Some(Self {
            key: key(
                route,
                &Context {
                    format,
                    headers,
                    namespace: (!cfg.shared).then_some(namespace),
                    key_labels,
                },
                request,
            ),
            read,
            ttl: (store && !ttl.is_zero()).then_some(ttl),
            max_body: usize::try_from(cfg.max_body_bytes).unwrap_or(usize::MAX),
            stream: request.stream,
        })
    }

    /// The cached response, unless the client said `no-cache`.
    pub(crate) async fn get(&self, state: &dyn SharedState) -> Option<Entry> {
        if !self.read {
            return None;
        }
        let entry = decode(&state.cache_get(&self.key).await?)?;
        (entry.stream == self.stream).then_some(entry)
    }

    /// A collector for the response, unless it must not be stored.
    pub(crate) fn fill(&self) -> Option<Fill> {
        Some(Fill {
            key: self.key,
            ttl: self.ttl?,
            max: self.max_body,
            stream: self.stream,
            chunks: Vec::new(),
            size: 0,
            over: false,
        })
    }
}

/// What besides the request selects a response.
struct Context<'a> {
    /// The client's format (`Codec::name`).
    format: &'static str,
    headers: &'a HeaderMap,
    /// The caller's namespace, unless the route's cache is shared by every namespace.
    namespace: Option<&'a str>,
    key_labels: &'a BTreeMap<String, String>,
}

/// The cache key of a request.
fn key(route: &RouteConfig, cx: &Context<'_>, request: &Request) -> [u8; 32] {
    let mut h = Sha256::new();
    let endpoint = match request.op {
        Operation::Chat => "chat",
        Operation::Embeddings => "embeddings",
        Operation::Completions => "completions",
        Operation::Responses => "responses",
        Operation::Moderations => "moderations",
        Operation::Rerank => "rerank",
        Operation::Images => "images",
        Operation::Transcriptions => "transcriptions",
        Operation::Translations => "translations",
        Operation::Speech => "speech",
    };
    for part in [
        "switchyard-cache-v1",
        &route.namespace,
        &route.model,
        endpoint,
        cx.format,
        if request.stream { "stream" } else { "full" },
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    if let Some(ns) = cx.namespace {
        h.update(b"caller:");
        h.update(ns.as_bytes());
        h.update([0]);
    }
    // Rules choose backends or routes by header and key label: those values select the answer.
    for rule in &route.rules {
        for name in rule.headers.keys() {
            h.update(b"h:");
            h.update(name.as_bytes());
            h.update([0]);
            h.update(cx.headers.get(name.as_str()).map_or(&b""[..], |v| v.as_bytes()));
            h.update([0]);
        }
        for name in rule.key_labels.keys() {
            h.update(b"l:");
            h.update(name.as_bytes());
            h.update([0]);
            h.update(cx.key_labels.get(name).map_or("", String::as_str).as_bytes());
            h.update([0]);
        }
    }
    let mut kept: Vec<(&String, &Value)> = request
        .raw
        .iter()
        .filter(|(k, _)| !IGNORED.contains(&k.as_str()))
        .collect();
    kept.sort_by(|a, b| a.0.cmp(b.0));
    for (k, v) in kept {
        h.update(k.as_bytes());
        h.update([0]);
        canonical(v, &mut h);
        h.update([0]);
    }
    h.finalize().into()
}

/// JSON with object keys sorted, whatever order the client sent.
fn canonical(v: &Value, h: &mut Sha256) {
    match v {
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            h.update(b"{");
            for k in keys {
                h.update(serde_json::to_string(k).unwrap_or_default().as_bytes());
                h.update(b":");
                if let Some(x) = o.get(k) {
                    canonical(x, h);
                }
                h.update(b",");
            }
            h.update(b"}");
        }
        Value::Array(a) => {
            h.update(b"[");
            for x in a {
                canonical(x, h);
                h.update(b",");
            }
            h.update(b"]");
        }
        other => h.update(other.to_string().as_bytes()),
    }
}

/// The cached answer to a request, when its route has a cache that holds one.
pub(crate) async fn hit(lookup: Option<&Lookup>, state: &dyn SharedState) -> Option<Entry> {
    lookup?.get(state).await
}

/// Says whether the cache answered (`x-switchyard-cache: hit|miss`) and counts it.
pub(crate) fn annotate(metrics: &crate::Metrics, route: &str, headers: &mut HeaderMap, hit: bool) {
    let result = if hit { "hit" } else { "miss" };
    metrics.cache.with_label_values(&[route, result]).inc();
    headers.insert("x-switchyard-cache", HeaderValue::from_static(result));
}

/// A cached response.
#[derive(Debug, PartialEq)]
pub(crate) struct Entry {
    stream: bool,
    chunks: Vec<Bytes>,
}

impl Entry {
    /// The body, replayed chunk by chunk for streams (a hit streams when its request does).
    pub(crate) fn into_body(self) -> Body {
        if self.stream {
            let chunks = futures::stream::iter(self.chunks.into_iter().map(Ok::<Bytes, std::io::Error>));
            Body::from_stream(chunks)
        } else {
            Body::from(self.chunks.into_iter().next().unwrap_or_default())
        }
    }
}

/// Collects a response as the client receives it, for the cache.
pub(crate) struct Fill {
    key: [u8; 32],
    ttl: Duration,
    max: usize,
    stream: bool,
    chunks: Vec<Bytes>,
    size: usize,
    over: bool,
}

impl Fill {
    /// One chunk (or the whole body) sent to the client.
    pub(crate) fn push(&mut self, b: &Bytes) {
        if self.over {
            return;
        }
        self.size += b.len();
        if self.size > self.max {
            self.over = true;
            self.chunks = Vec::new();
        } else {
            self.chunks.push(b.clone());
        }
    }

    /// Stores what was collected: call only when the response completed.
    pub(crate) fn store(self, state: Arc<dyn SharedState>) {
        if self.over || self.chunks.is_empty() {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let bytes = encode(self.stream, &self.chunks);
        rt.spawn(async move { state.cache_put(&self.key, bytes, self.ttl).await });
    }
}

fn encode(stream: bool, chunks: &[Bytes]) -> Bytes {
    let size: usize = chunks.iter().map(|c| c.len() + 4).sum();
    let mut b = BytesMut::with_capacity(size + 9);
    b.put_slice(MAGIC);
    b.put_u8(u8::from(stream));
    b.put_u32(u32::try_from(chunks.len()).unwrap_or(u32::MAX));
    for c in chunks {
        b.put_u32(u32::try_from(c.len()).unwrap_or(u32::MAX));
        b.put_slice(c);
    }
    b.freeze()
}

fn decode(b: &Bytes) -> Option<Entry> {
    let rest = b.strip_prefix(MAGIC.as_slice())?;
    let (&flag, rest) = rest.split_first()?;
    let n = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let mut at = 4 + MAGIC.len() + 1;
    let mut chunks = Vec::with_capacity(n.min(4096));
    for _ in 0..n {
        let len = u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize;
        at += 4;
        if at + len > b.len() {
            return None;
        }
        chunks.push(b.slice(at..at + len));
        at += len;
    }
    Some(Entry {
        stream: flag == 1,
        chunks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_providers::Json;

    use crate::state::Memory;

    /// The entry `l` finds once the store in the background has run (fails after 5 s).
    async fn stored(l: &Lookup, state: &dyn SharedState) -> Entry {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(hit) = l.get(state).await {
                return hit;
            }
            assert!(std::time::Instant::now() < deadline, "never stored");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn route(ns: &str) -> RouteConfig {
        serde_json::from_value(serde_json::json!({
            "namespace": ns, "name": "r", "model": "chat", "mode": "chat", "strategy": "weighted",
            "retries": {"attempts": 0, "backoffMs": 1, "maxBackoffMs": 1, "on": []},
            "backends": [], "cache": {"ttlMs": 60000, "maxBodyBytes": 64}
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn kx(r: &RouteConfig, stream: bool, request: &Json) -> [u8; 32] {
        let headers = HeaderMap::new();
        let labels = BTreeMap::new();
        let cx = Context {
            format: "openai",
            headers: &headers,
            namespace: Some(r.namespace.as_str()),
            key_labels: &labels,
        };
        key(r, &cx, &chat(request, stream))
    }

    /// A chat request with this body, parsed or not.
    fn chat(raw: &Json, stream: bool) -> Request {
        Request {
            op: Operation::Chat,
            model: String::new(),
            stream,
            include_usage: false,
            max_tokens: None,
            raw: raw.clone(),
            original: None,
        }
    }

    fn req(s: &str) -> Json {
        serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn keys_ignore_order_model_and_user_but_not_tenant_or_params() {
        let r = route("team-a");
        let a = kx(
            &r,
            false,
            &req(r#"{"model":"chat","temperature":0,"messages":[{"role":"user","content":"hi"}],"user":"u1"}"#),
        );
        let b = kx(
            &r,
            false,
            &req(r#"{"messages":[{"content":"hi","role":"user"}],"temperature":0,"model":"team-a/chat"}"#),
        );
        assert_eq!(a, b);
        let c = kx(
            &r,
            false,
            &req(r#"{"messages":[{"content":"hi","role":"user"}],"temperature":1}"#),
        );
        assert_ne!(a, c);
        let other_tenant = kx(
            &route("team-b"),
            false,
            &req(r#"{"messages":[{"content":"hi","role":"user"}],"temperature":0}"#),
        );
        assert_ne!(a, other_tenant);
        let streamed = kx(
            &r,
            true,
            &req(r#"{"messages":[{"content":"hi","role":"user"}],"temperature":0}"#),
        );
        assert_ne!(a, streamed);
    }

    #[test]
    fn request_headers_control_reading_storing_and_ttl() {
        let r = route("default");
        let body = req(r#"{"messages":[]}"#);
        let mut h = HeaderMap::new();
        let l = Lookup::new(&r, &h, "default", &BTreeMap::new(), "openai", &chat(&body, false))
            .unwrap_or_else(|| panic!("cache on"));
        assert!(l.read && l.ttl == Some(Duration::from_secs(60)));
        h.insert("cache-control", HeaderValue::from_static("no-cache"));
        h.insert("x-switchyard-cache-ttl", HeaderValue::from_static("5"));
        let l = Lookup::new(&r, &h, "default", &BTreeMap::new(), "openai", &chat(&body, false))
            .unwrap_or_else(|| panic!("cache on"));
        assert!(!l.read && l.ttl == Some(Duration::from_secs(5)));
        // A client cannot keep an entry longer than the route does (a year asked: 60 s).
        h.insert("x-switchyard-cache-ttl", HeaderValue::from_static("31536000"));
        let l = Lookup::new(&r, &h, "default", &BTreeMap::new(), "openai", &chat(&body, false))
            .unwrap_or_else(|| panic!("cache on"));
        assert_eq!(l.ttl, Some(Duration::from_secs(60)));
        h.insert("x-switchyard-cache-ttl", HeaderValue::from_static("0"));
        let l = Lookup::new(&r, &h, "default", &BTreeMap::new(), "openai", &chat(&body, false))
            .unwrap_or_else(|| panic!("cache on"));
        assert!(l.fill().is_none());
        h.insert("cache-control", HeaderValue::from_static("no-store"));
        let l = Lookup::new(&r, &h, "default", &BTreeMap::new(), "openai", &chat(&body, false))
            .unwrap_or_else(|| panic!("cache on"));
        assert!(l.read && l.fill().is_none());
        let mut no_cache = r.clone();
        no_cache.cache = None;
        assert!(Lookup::new(
            &no_cache,
            &HeaderMap::new(),
            "default",
            &BTreeMap::new(),
            "openai",
            &chat(&body, false)
        )
        .is_none());
    }

    #[test]
    fn callers_in_other_namespaces_get_their_own_entries_unless_the_cache_is_shared() {
        let mut r = route("shared-models");
        let body = req(r#"{"messages":[{"role":"user","content":"what did the others ask?"}]}"#);
        let key_of = |r: &RouteConfig, ns: &str| {
            Lookup::new(
                r,
                &HeaderMap::new(),
                ns,
                &BTreeMap::new(),
                "openai",
                &chat(&body, false),
            )
            .unwrap_or_else(|| panic!("cache on"))
            .key
        };
        assert_ne!(key_of(&r, "team-a"), key_of(&r, "team-b"));
        assert_eq!(key_of(&r, "team-a"), key_of(&r, "team-a"));
        if let Some(c) = r.cache.as_mut() {
            c.shared = true;
        }
        assert_eq!(key_of(&r, "team-a"), key_of(&r, "team-b"));
    }

    #[tokio::test]
    async fn streams_round_trip_chunk_by_chunk_and_big_bodies_are_skipped() {
        let state: Arc<dyn SharedState> = Arc::new(Memory::new());
        let r = route("default");
        let body = req(r#"{"messages":[{"role":"user","content":"x"}]}"#);
        let l = Lookup::new(
            &r,
            &HeaderMap::new(),
            "default",
            &BTreeMap::new(),
            "openai",
            &chat(&body, true),
        )
        .unwrap_or_else(|| panic!("on"));
        assert!(l.get(state.as_ref()).await.is_none());
        let mut fill = l.fill().unwrap_or_else(|| panic!("store"));
        fill.push(&Bytes::from_static(b"data: {\"a\":1}\n\n"));
        fill.push(&Bytes::from_static(b"data: [DONE]\n\n"));
        fill.store(state.clone());
        let hit = stored(&l, state.as_ref()).await;
        assert_eq!(
            hit,
            Entry {
                stream: true,
                chunks: vec![
                    Bytes::from_static(b"data: {\"a\":1}\n\n"),
                    Bytes::from_static(b"data: [DONE]\n\n")
                ]
            }
        );
        // Over maxBodyBytes (64): not stored.
        let big = req(r#"{"messages":[{"role":"user","content":"big"}]}"#);
        let l = Lookup::new(
            &r,
            &HeaderMap::new(),
            "default",
            &BTreeMap::new(),
            "openai",
            &chat(&big, false),
        )
        .unwrap_or_else(|| panic!("on"));
        let mut fill = l.fill().unwrap_or_else(|| panic!("store"));
        fill.push(&Bytes::from(vec![b'x'; 65]));
        fill.store(state.clone());
        // A small entry stored after it is seen first: stores run in order on this test's
        // single-threaded runtime, so the big one's would have run by then.
        let marker = req(r#"{"messages":[{"role":"user","content":"after"}]}"#);
        let after = Lookup::new(
            &r,
            &HeaderMap::new(),
            "default",
            &BTreeMap::new(),
            "openai",
            &chat(&marker, false),
        )
        .unwrap_or_else(|| panic!("on"));
        let mut fill = after.fill().unwrap_or_else(|| panic!("store"));
        fill.push(&Bytes::from_static(b"{}"));
        fill.store(state.clone());
        stored(&after, state.as_ref()).await;
        assert!(l.get(state.as_ref()).await.is_none());
        assert_eq!(
            decode(&Bytes::from_static(b"SWC1\x01\x00\x00\x00\x02\x00\x00\x00\x05ab")),
            None
        );
    }
}
