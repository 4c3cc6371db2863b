//! The load generator: keep-alive HTTP/1.1 connections (one per unit of concurrency), OpenAI or
//! Anthropic request bodies, streamed or not, latencies and time to first byte into HDR
//! histograms.
//!
//! Two modes:
//! - **closed loop** (`rate: None`): each connection sends its next request when the previous
//!   one ends; measures throughput at a fixed concurrency.
//! - **open loop** (`rate: Some(r)`): request `i` is due at `start + i / r`, whoever is free
//!   sends it. When every connection is busy past a due time, the wait counts as latency (the
//!   request was late because the server was slow), which avoids coordinated omission. When a
//!   connection is idle and wakes up late, that timer slop is the tool's own and does not count.
//!
//! It must not grow scenario logic: scenarios ([`crate::streams`], [`crate::scale`]) and the
//! driver (`bench/run.py`) call [`run`] and compose.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{HeaderName, HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;

/// The request shape a target speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// `POST /v1/chat/completions`, `Authorization: Bearer`.
    Openai,
    /// `POST /v1/messages`, `x-api-key` and `anthropic-version`.
    Anthropic,
}

/// Where to send and what.
#[derive(Clone, Debug)]
pub struct Target {
    /// Full URL of the endpoint, `http://127.0.0.1:PORT/v1/chat/completions`.
    pub url: Uri,
    /// Request shape.
    pub api: Api,
    /// Credential sent as the API key.
    pub key: String,
    /// The `model` field.
    pub model: String,
    /// Ask for a stream.
    pub stream: bool,
    /// Words in the user message (the mock echoes them, one streamed chunk per word).
    pub prompt_words: usize,
    /// Extra request headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Target {
    /// The request body.
    pub fn body(&self) -> Bytes {
        let words: Vec<String> = (0..self.prompt_words.max(1)).map(|i| format!("word{i}")).collect();
        let content = words.join(" ");
        let v = match self.api {
            Api::Openai => serde_json::json!({
                "model": self.model,
                "messages": [{"role": "user", "content": content}],
                "max_tokens": 64,
                "stream": self.stream,
            }),
            Api::Anthropic => serde_json::json!({
                "model": self.model,
                "messages": [{"role": "user", "content": content}],
                "max_tokens": 64,
                "stream": self.stream,
            }),
        };
        Bytes::from(v.to_string())
    }

    pub(crate) fn request(&self, authority: &HeaderValue, body: Bytes) -> anyhow::Result<Request<Full<Bytes>>> {
        let mut b = Request::post(self.url.clone())
            .header(http::header::HOST, authority.clone())
            .header(http::header::CONTENT_TYPE, "application/json");
        b = match self.api {
            Api::Openai => b.header(http::header::AUTHORIZATION, format!("Bearer {}", self.key)),
            Api::Anthropic => b
                .header("x-api-key", self.key.as_str())
                .header("anthropic-version", "2023-06-01"),
        };
        let mut req = b.body(Full::new(body))?;
        for (k, v) in &self.headers {
            req.headers_mut().insert(k.clone(), v.clone());
        }
        // hyper's client writes the request line from the URI as given: send the path only.
        *req.uri_mut() = self
            .url
            .path_and_query()
            .map_or_else(|| Uri::from_static("/"), |p| Uri::from(p.clone()));
        Ok(req)
    }

    fn addr(&self) -> anyhow::Result<(String, HeaderValue)> {
        let host = self.url.host().context("the URL has no host")?;
        let port = self.url.port_u16().unwrap_or(80);
        if self.url.scheme_str() != Some("http") {
            bail!("only http:// targets are supported (local benchmarks)");
        }
        Ok((
            format!("{host}:{port}"),
            HeaderValue::from_str(&format!("{host}:{port}"))?,
        ))
    }
}

/// How to drive the target.
#[derive(Clone, Debug)]
pub struct Load {
    /// Connections (and so requests in flight at most).
    pub concurrency: usize,
    /// Requests per second (open loop); `None` for closed loop.
    pub rate: Option<f64>,
    /// Measured time, after the warm-up.
    pub duration: Duration,
    /// Time before measuring starts (connections opened, caches warm).
    pub warmup: Duration,
    /// Keep every (completion time, latency) sample, for windowed percentiles.
    pub timeline: bool,
}

/// Percentiles of one histogram, in microseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Percentiles {
    /// Summarises `h` (microseconds).
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// The result of one run.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Successful requests in the measured window.
    pub ok: u64,
    /// Non-2xx answers in the measured window.
    pub http_errors: u64,
    /// Connection or protocol failures in the measured window.
    pub transport_errors: u64,
    /// First error seen, for the report.
    pub first_error: Option<String>,
    /// Measured seconds.
    pub seconds: f64,
    /// Successful requests per second.
    pub rps: f64,
    /// Whole request, send to last body byte (µs).
    pub latency_us: Percentiles,
    /// Send to first body byte (µs); streams only.
    pub ttft_us: Option<Percentiles>,
    /// `x-switchyard-overhead-us` as reported by the gateway, when present.
    pub reported_overhead_us: Option<Percentiles>,
    /// `(ms since measuring started, latency µs)` per completed request, when asked for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<(u32, u32)>,
    /// When measuring started (the timeline's zero).
    #[serde(skip)]
    pub measured_from: Option<Instant>,
}

struct Recorder {
    latency: Histogram<u64>,
    ttft: Histogram<u64>,
    overhead: Histogram<u64>,
    ok: u64,
    http_errors: u64,
    transport_errors: u64,
    first_error: Option<String>,
    timeline: Vec<(u32, u32)>,
}

impl Recorder {
    fn new() -> anyhow::Result<Self> {
        // 1 µs to 10 min, 3 significant digits.
        let h = || Histogram::<u64>::new_with_bounds(1, 600_000_000, 3);
        Ok(Self {
            latency: h()?,
            ttft: h()?,
            overhead: h()?,
            ok: 0,
            http_errors: 0,
            transport_errors: 0,
            first_error: None,
            timeline: Vec::new(),
        })
    }

    fn error(&mut self, http: bool, msg: String) {
        if http {
            self.http_errors += 1;
        } else {
            self.transport_errors += 1;
        }
        if self.first_error.is_none() {
            self.first_error = Some(msg);
        }
    }

    fn merge(&mut self, other: Recorder) -> anyhow::Result<()> {
        self.latency.add(&other.latency)?;
        self.ttft.add(&other.ttft)?;
        self.overhead.add(&other.overhead)?;
        self.ok += other.ok;
        self.http_errors += other.http_errors;
        self.transport_errors += other.transport_errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.timeline.extend(other.timeline);
        Ok(())
    }
}

/// What one request observed.
pub struct Observed {
    /// HTTP status.
    pub status: u16,
    /// Time to the first non-empty body frame.
    pub first_byte: Option<Instant>,
    /// `x-switchyard-overhead-us`.
    pub overhead_us: Option<u64>,
    /// Body bytes received.
    pub bytes: usize,
    /// The body, when asked to keep it (errors).
    pub body: Option<Bytes>,
}

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
}

impl Conn {
    /// Connects to the target's host.
    pub async fn open(addr: &str) -> anyhow::Result<Self> {
        let tcp = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        tcp.set_nodelay(true)?;
        let (sender, conn) = http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self { sender })
    }

    /// Whether the server closed the connection.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Sends one request and returns once the response headers arrived.
    pub async fn send_head(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> anyhow::Result<http::Response<hyper::body::Incoming>> {
        self.sender.ready().await?;
        Ok(self.sender.send_request(req).await?)
    }

    /// Sends one request and reads the whole response.
    pub async fn send(&mut self, req: Request<Full<Bytes>>, keep_body: bool) -> anyhow::Result<Observed> {
        let resp = self.send_head(req).await?;
        let status = resp.status().as_u16();
        let overhead_us = resp
            .headers()
            .get("x-switchyard-overhead-us")
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse().ok());
        let mut body = resp.into_body();
        let mut first_byte = None;
        let mut bytes = 0;
        let mut kept = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame?;
            if let Some(data) = frame.data_ref() {
                if !data.is_empty() {
                    if first_byte.is_none() {
                        first_byte = Some(Instant::now());
                    }
                    bytes += data.len();
                    if keep_body || status >= 300 {
                        kept.extend_from_slice(data);
                    }
                }
            }
        }
        Ok(Observed {
            status,
            first_byte,
            overhead_us,
            bytes,
            body: (keep_body || status >= 300).then(|| Bytes::from(kept)),
        })
    }
}

/// Sends one request on a fresh connection: a smoke check before a run.
pub async fn probe(target: &Target) -> anyhow::Result<Observed> {
    let (addr, authority) = target.addr()?;
    let mut conn = Conn::open(&addr).await?;
    let req = target.request(&authority, target.body())?;
    conn.send(req, true).await
}

/// Runs `load` against `target`.
pub async fn run(target: &Target, load: &Load) -> anyhow::Result<Summary> {
    if load.concurrency == 0 {
        bail!("concurrency must be at least 1");
    }
    let (addr, authority) = target.addr()?;
    let body = target.body();
    // Open every connection before the clock starts.
    let mut conns = Vec::with_capacity(load.concurrency);
    for _ in 0..load.concurrency {
        conns.push(Conn::open(&addr).await?);
    }
    let start = Instant::now() + Duration::from_millis(20);
    let measure_from = start + load.warmup;
    let end = measure_from + load.duration;
    let next = Arc::new(AtomicU64::new(0));
    let interval = load.rate.map(|r| Duration::from_secs_f64(1.0 / r.max(0.001)));

    let mut tasks = Vec::with_capacity(conns.len());
    for conn in conns {
        let target = target.clone();
        let authority = authority.clone();
        let body = body.clone();
        let next = next.clone();
        let addr = addr.clone();
        let timeline = load.timeline;
        tasks.push(tokio::spawn(async move {
            worker(
                conn,
                &addr,
                &target,
                &authority,
                body,
                Schedule {
                    start,
                    measure_from,
                    end,
                    interval,
                    next,
                },
                timeline,
            )
            .await
        }));
    }
    let mut total = Recorder::new()?;
    for t in tasks {
        total.merge(t.await??)?;
    }
    let seconds = load.duration.as_secs_f64();
    total.timeline.sort_unstable();
    Ok(Summary {
        ok: total.ok,
        http_errors: total.http_errors,
        transport_errors: total.transport_errors,
        first_error: total.first_error,
        seconds,
        rps: total.ok as f64 / seconds,
        latency_us: Percentiles::of(&total.latency),
        ttft_us: target.stream.then(|| Percentiles::of(&total.ttft)),
        reported_overhead_us: (!total.overhead.is_empty()).then(|| Percentiles::of(&total.overhead)),
        timeline: total.timeline,
        measured_from: Some(measure_from),
    })
}

/// How long an open-loop run waits for its last requests.
const DRAIN: Duration = Duration::from_secs(10);

struct Schedule {
    start: Instant,
    measure_from: Instant,
    end: Instant,
    interval: Option<Duration>,
    next: Arc<AtomicU64>,
}

async fn worker(
    mut conn: Conn,
    addr: &str,
    target: &Target,
    authority: &HeaderValue,
    body: Bytes,
    s: Schedule,
    timeline: bool,
) -> anyhow::Result<Recorder> {
    let mut rec = Recorder::new()?;
    tokio::time::sleep_until(s.start.into()).await;
    loop {
        // When this request counts from.
        let sent = match s.interval {
            None => Instant::now(),
            Some(iv) => {
                let i = s.next.fetch_add(1, Ordering::Relaxed);
                let due = s.start + iv.saturating_mul(u32::try_from(i).unwrap_or(u32::MAX));
                if due >= s.end {
                    break;
                }
                let now = Instant::now();
                if due > now {
                    tokio::time::sleep_until(due.into()).await;
                    // Idle and woken late: the lateness is the timer's, not the server's.
                    Instant::now()
                } else {
                    // Busy past the due time: the server made this request wait.
                    due
                }
            }
        };
        if sent >= s.end {
            break;
        }
        if conn.is_closed() {
            conn = reopen(addr, s.end).await?;
        }
        let req = target.request(authority, body.clone())?;
        // Closed loop counts what completes inside the window (as wrk does) and abandons what
        // is still in flight at its end. Open loop counts every request due inside the window
        // and waits for each, up to `DRAIN` after the end.
        let open_loop = s.interval.is_some();
        let deadline = if open_loop { s.end + DRAIN } else { s.end };
        let result = match tokio::time::timeout_at(deadline.into(), conn.send(req, false)).await {
            Ok(r) => r,
            Err(_) if !open_loop => break,
            Err(_) => Err(anyhow::anyhow!("no answer {} s after the run ended", DRAIN.as_secs())),
        };
        let done = Instant::now();
        let measured = if open_loop {
            sent >= s.measure_from
        } else {
            done >= s.measure_from && done <= s.end
        };
        if !measured {
            if result.is_err() {
                conn = reopen(addr, s.end).await?;
            }
            continue;
        }
        match result {
            Ok(o) if (200..300).contains(&o.status) => {
                rec.ok += 1;
                let lat = micros(done - sent);
                rec.latency.saturating_record(lat);
                if let Some(fb) = o.first_byte {
                    rec.ttft.saturating_record(micros(fb.saturating_duration_since(sent)));
                }
                if let Some(ov) = o.overhead_us {
                    rec.overhead.saturating_record(ov.max(1));
                }
                if timeline {
                    let at =
                        u32::try_from(done.saturating_duration_since(s.measure_from).as_millis()).unwrap_or(u32::MAX);
                    rec.timeline.push((at, u32::try_from(lat).unwrap_or(u32::MAX)));
                }
            }
            Ok(o) => {
                let text = o
                    .body
                    .map(|b| String::from_utf8_lossy(&b[..b.len().min(300)]).into_owned());
                rec.error(true, format!("HTTP {}: {}", o.status, text.unwrap_or_default()));
            }
            Err(e) => {
                rec.error(false, format!("{e:#}"));
                conn = reopen(addr, s.end).await?;
            }
        }
    }
    Ok(rec)
}

/// Reconnects after a failure, retrying until `until` (the server may be restarting a worker).
async fn reopen(addr: &str, until: Instant) -> anyhow::Result<Conn> {
    loop {
        match Conn::open(addr).await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() >= until => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}
