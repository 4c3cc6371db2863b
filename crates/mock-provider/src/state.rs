//! The mock's shared state: request and stream counters, the per-model counts behind
//! `mock-flaky-N`, the last request body each provider received, and the ledger of what each
//! request was served (`GET /mock/ledger`).
//!
//! Everything here is cheap to touch on the hot path: atomics, and short critical sections on
//! plain mutexes that are never held across an `.await`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The provider families the mock speaks, used to file the last request received.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Provider {
    OpenAi,
    Azure,
    Anthropic,
    Bedrock,
    Gemini,
    Vertex,
    Cohere,
    Voyage,
    Jina,
}

impl Provider {
    pub const ALL: [Provider; 9] = [
        Provider::OpenAi,
        Provider::Azure,
        Provider::Anthropic,
        Provider::Bedrock,
        Provider::Gemini,
        Provider::Vertex,
        Provider::Cohere,
        Provider::Voyage,
        Provider::Jina,
    ];

    /// The name used by `GET /mock/last-request?provider=`.
    pub fn name(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Azure => "azure",
            Provider::Anthropic => "anthropic",
            Provider::Bedrock => "bedrock",
            Provider::Gemini => "gemini",
            Provider::Vertex => "vertex",
            Provider::Cohere => "cohere",
            Provider::Voyage => "voyage",
            Provider::Jina => "jina",
        }
    }

    pub fn from_name(name: &str) -> Option<Provider> {
        Provider::ALL.into_iter().find(|p| p.name() == name)
    }

    fn slot(self) -> usize {
        self as usize
    }
}

/// The last request one provider received: its path (with query) and its raw body.
#[derive(Clone, Debug)]
pub struct LastRequest {
    pub path: String,
    pub body: Bytes,
}

/// A snapshot of the counters, as served at `GET /mock/stats`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stats {
    /// Requests received per URI path (query excluded), control endpoints excluded.
    pub requests: BTreeMap<String, u64>,
    pub requests_total: u64,
    /// Streaming responses whose body began.
    pub streams_started: u64,
    /// Streams that sent their terminal event.
    pub streams_completed: u64,
    /// Streams whose client went away before the end (the response body was dropped early).
    pub streams_cancelled: u64,
    /// Streams the mock broke on purpose (`mock-cut`).
    pub streams_cut: u64,
    /// Requests that came over HTTP/2 (h2c with prior knowledge; TLS is not served), control
    /// endpoints included.
    #[serde(default)]
    pub http2_requests: u64,
}

/// How an answer the mock started ended.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Still being served (or the answer was never started: a slow reply still waiting).
    Pending,
    /// The whole answer was written (streams: the terminal event too).
    Completed,
    /// Broken on purpose (`mock-cut`): streams after some token frames, whole bodies halfway.
    Cut,
    /// The client went away before the end.
    Cancelled,
    /// Answered with an error status (429, 500, 503, 400...): nothing generated.
    Error,
}

/// One request as the mock served it: who asked (the request id), what it was asked for and
/// how many tokens it actually put on the wire.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Served {
    /// The request id: the `x-request-id` header, else the body's `user` field.
    pub id: Option<String>,
    pub path: String,
    pub model: String,
    pub stream: bool,
    pub status: u16,
    pub outcome: Outcome,
    /// When the request arrived (Unix milliseconds, this machine's clock): a gateway admitted
    /// it before then (the soak places rate windows with it).
    #[serde(default)]
    pub received_ms: u64,
    /// Prompt tokens of the request (the mock's count, as its usage reports it).
    pub prompt_tokens: u32,
    /// Completion tokens written: for a stream, the token frames sent before it ended, was cut
    /// or was abandoned; for a whole body, all of them once it was sent, none when it was cut.
    pub completion_tokens: u32,
    /// Completion tokens of the full answer the mock had planned.
    pub planned_completion_tokens: u32,
    /// The usage the mock reported reached the wire (a whole body, or a completed stream that
    /// was asked for usage).
    pub usage_sent: bool,
}

#[derive(Default)]
struct Ledger {
    /// Bumped by `reset`, so a tally of a request from before it writes nothing.
    generation: u64,
    entries: Vec<Served>,
}

#[derive(Default)]
struct Inner {
    requests: Mutex<HashMap<String, u64>>,
    requests_total: AtomicU64,
    streams_started: AtomicU64,
    streams_completed: AtomicU64,
    streams_cancelled: AtomicU64,
    streams_cut: AtomicU64,
    http2_requests: AtomicU64,
    flaky: Mutex<HashMap<String, u64>>,
    last: Mutex<[Option<LastRequest>; Provider::ALL.len()]>,
    ids: AtomicU64,
    ledger: Mutex<Ledger>,
}

/// Shared state of one mock server. Cheap to clone (an `Arc`).
#[derive(Clone, Default)]
pub struct MockState {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these short locks cannot leave the data half-written in a
    // way that matters for counters, so a poisoned lock is simply taken over.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl MockState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one provider request: the path counter and the provider's last request.
    pub(crate) fn record(&self, provider: Provider, path: &str, query: Option<&str>, body: &Bytes) {
        self.count(path);
        let full_path = match query {
            Some(q) => format!("{path}?{q}"),
            None => path.to_owned(),
        };
        lock(&self.inner.last)[provider.slot()] = Some(LastRequest {
            path: full_path,
            body: body.clone(),
        });
    }

    /// Counts one request to `path` (without recording it as a provider's last request).
    /// Counts a request that came over HTTP/2.
    pub(crate) fn count_http2(&self) {
        self.inner.http2_requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count(&self, path: &str) {
        self.inner.requests_total.fetch_add(1, Ordering::Relaxed);
        let mut requests = lock(&self.inner.requests);
        match requests.get_mut(path) {
            Some(n) => *n += 1,
            None => {
                requests.insert(path.to_owned(), 1);
            }
        }
    }

    /// Counts one more request for `model` and says whether it is still within the first `n`.
    pub(crate) fn flaky_should_fail(&self, model: &str, n: u64) -> bool {
        let mut flaky = lock(&self.inner.flaky);
        let count = if let Some(c) = flaky.get_mut(model) {
            *c += 1;
            *c
        } else {
            flaky.insert(model.to_owned(), 1);
            1
        };
        count <= n
    }

    /// A process-unique number for response ids.
    pub(crate) fn next_id(&self) -> u64 {
        self.inner.ids.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn stream_started(&self) {
        self.inner.streams_started.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stream_completed(&self) {
        self.inner.streams_completed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stream_cancelled(&self) {
        self.inner.streams_cancelled.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stream_cut(&self) {
        self.inner.streams_cut.fetch_add(1, Ordering::Relaxed);
    }

    /// Opens the ledger entry of one request (outcome `Pending`); the tally updates it.
    pub(crate) fn tally(&self, served: Served) -> Tally {
        let mut ledger = lock(&self.inner.ledger);
        ledger.entries.push(served);
        Tally {
            state: self.clone(),
            generation: ledger.generation,
            index: ledger.entries.len() - 1,
        }
    }

    /// Every request recorded since start or the last reset, in arrival order.
    pub fn ledger(&self) -> Vec<Served> {
        lock(&self.inner.ledger).entries.clone()
    }

    /// A consistent-enough snapshot of every counter.
    pub fn stats(&self) -> Stats {
        let requests = lock(&self.inner.requests)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        Stats {
            requests,
            requests_total: self.inner.requests_total.load(Ordering::Relaxed),
            streams_started: self.inner.streams_started.load(Ordering::Relaxed),
            streams_completed: self.inner.streams_completed.load(Ordering::Relaxed),
            streams_cancelled: self.inner.streams_cancelled.load(Ordering::Relaxed),
            streams_cut: self.inner.streams_cut.load(Ordering::Relaxed),
            http2_requests: self.inner.http2_requests.load(Ordering::Relaxed),
        }
    }

    /// The last request `provider` received, if any since start or the last reset.
    pub fn last_request(&self, provider: Provider) -> Option<LastRequest> {
        lock(&self.inner.last)[provider.slot()].clone()
    }

    /// Clears every counter, the flaky counts and the recorded requests.
    pub fn reset(&self) {
        lock(&self.inner.requests).clear();
        lock(&self.inner.flaky).clear();
        *lock(&self.inner.last) = Default::default();
        {
            let mut ledger = lock(&self.inner.ledger);
            ledger.generation += 1;
            ledger.entries.clear();
        }
        for counter in [
            &self.inner.requests_total,
            &self.inner.streams_started,
            &self.inner.streams_completed,
            &self.inner.streams_cancelled,
            &self.inner.streams_cut,
            &self.inner.http2_requests,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
    }
}

/// The handle on one request's ledger entry. Dropped while still pending, the entry becomes
/// `Cancelled` (the client went away before the answer was finished).
pub struct Tally {
    state: MockState,
    generation: u64,
    index: usize,
}

impl Tally {
    fn with(&self, f: impl FnOnce(&mut Served)) {
        let mut ledger = lock(&self.state.inner.ledger);
        if ledger.generation == self.generation {
            if let Some(entry) = ledger.entries.get_mut(self.index) {
                f(entry);
            }
        }
    }

    /// One more completion token frame is being written.
    pub(crate) fn token(&self) {
        self.with(|e| e.completion_tokens += 1);
    }

    /// The whole answer went out (`usage_sent`: with its usage).
    pub(crate) fn completed(&self, usage_sent: bool) {
        self.with(|e| {
            e.outcome = Outcome::Completed;
            e.usage_sent = usage_sent;
        });
    }

    /// A whole body was written in full (its usage with it).
    pub(crate) fn completed_whole(&self) {
        self.with(|e| {
            e.outcome = Outcome::Completed;
            e.completion_tokens = e.planned_completion_tokens;
            e.usage_sent = true;
        });
    }

    pub(crate) fn cut(&self) {
        self.with(|e| e.outcome = Outcome::Cut);
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        self.with(|e| {
            if e.outcome == Outcome::Pending {
                e.outcome = Outcome::Cancelled;
            }
        });
    }
}
