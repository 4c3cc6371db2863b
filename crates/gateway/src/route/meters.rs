//! What the strategies measure: requests in flight, a sliding one-minute window of requests and
//! tokens (for backend limits and the `usage` strategy), and moving averages of
//! latency and time to first token (for the `latency` strategy).
//!
//! Meters are kept by the gateway, not by a config generation, so a reload does not forget them;
//! a deployment (`provider|model`) has one meter shared by every route, a provider another for its
//! account-wide usage. They are per process: Provider quotas are taken in the shared state
//! (`route::quota`), not here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchyard_config::LimitsConfig;
use tokio::time::Instant;

use super::quota::QuotaHold;

/// Time constant of the latency averages: a sample's weight fades over about this long, and an
/// idle backend's average decays toward zero at this rate, so a slow backend is tried again once
/// in a while and can win traffic back.
pub const DECAY: Duration = Duration::from_secs(10);

const MINUTE: Duration = Duration::from_secs(60);

/// One deployment's or provider's meter.
#[derive(Debug)]
pub struct Meter {
    in_flight: AtomicU32,
    window: Mutex<Window>,
    latency: Mutex<Ewma>,
    ttft: Mutex<Ewma>,
}

impl Default for Meter {
    fn default() -> Self {
        Self {
            in_flight: AtomicU32::new(0),
            window: Mutex::new(Window::new(Instant::now())),
            latency: Mutex::new(Ewma::default()),
            ttft: Mutex::new(Ewma::default()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Meter {
    /// Requests in flight.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request sent with an estimated token count.
    pub fn sent(&self, tokens: u64) {
        lock(&self.window).add(Instant::now(), 1, tokens);
    }

    /// Adds tokens learnt later (the completion).
    pub fn tokens(&self, tokens: u64) {
        if tokens > 0 {
            lock(&self.window).add(Instant::now(), 0, tokens);
        }
    }

    /// Requests and tokens in the last minute (sliding estimate).
    pub fn used(&self) -> (f64, f64) {
        lock(&self.window).used(Instant::now())
    }

    /// Records a latency sample: time to first token for streams, the whole response otherwise.
    pub fn observe(&self, stream: bool, sample: Duration) {
        let m = if stream { &self.ttft } else { &self.latency };
        lock(m).observe(sample.as_secs_f64(), Instant::now());
    }

    /// The decayed average latency in seconds; `None` before the first sample.
    pub fn latency(&self, stream: bool) -> Option<f64> {
        let m = if stream { &self.ttft } else { &self.latency };
        lock(m).read(Instant::now())
    }

    /// Fraction of the limits still free, from 0 (at or over a limit) to 1 (unlimited or idle),
    /// and how long until a used-up limit frees.
    pub fn headroom(&self, limits: &LimitsConfig) -> (f64, Duration) {
        let mut free: f64 = 1.0;
        let mut wait = Duration::ZERO;
        if let Some(max) = limits.max_parallel.filter(|m| *m > 0) {
            let f = 1.0 - f64::from(self.in_flight()) / f64::from(max);
            if f <= 0.0 {
                wait = wait.max(Duration::from_millis(100));
            }
            free = free.min(f);
        }
        if limits.rpm.is_some() || limits.tpm.is_some() {
            let w = lock(&self.window);
            let now = Instant::now();
            let (req, tok) = w.used(now);
            for (used, max) in [(req, limits.rpm.map(f64::from)), (tok, limits.tpm.map(|t| t as f64))] {
                if let Some(max) = max.filter(|m| *m > 0.0) {
                    let f = 1.0 - used / max;
                    if f <= 0.0 {
                        wait = wait.max(w.until_rollover(now));
                    }
                    free = free.min(f);
                }
            }
        }
        (free.max(0.0), wait)
    }
}

/// Counts a request in flight on a deployment and its provider for as long as it lives: in a
/// stream's translator until the stream ends, or until the attempt returns.
#[derive(Debug)]
pub struct InFlight(Vec<Arc<Meter>>, Option<Arc<QuotaHold>>);

impl InFlight {
    /// Starts counting on each meter.
    pub fn start(meters: &[&Arc<Meter>]) -> Self {
        for m in meters {
            m.in_flight.fetch_add(1, Ordering::Relaxed);
        }
        Self(meters.iter().map(|m| Arc::clone(m)).collect(), None)
    }

    /// Also holds a Provider quota until the request ends.
    pub fn with_quota(mut self, quota: Option<Arc<QuotaHold>>) -> Self {
        self.1 = quota;
        self
    }

    /// Adds tokens to every meter (and to the quota's window).
    pub fn tokens(&self, tokens: u64) {
        for m in &self.0 {
            m.tokens(tokens);
        }
        if let Some(q) = &self.1 {
            q.tokens(tokens);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        for m in &self.0 {
            m.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A fixed one-minute window with the previous one, read as a sliding window (the previous
/// minute weighted by how much of it still overlaps the last 60 s).
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    requests: u64,
    tokens: u64,
    prev_requests: u64,
    prev_tokens: u64,
}

impl Window {
    fn new(now: Instant) -> Self {
        Self {
            start: now,
            requests: 0,
            tokens: 0,
            prev_requests: 0,
            prev_tokens: 0,
        }
    }

    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.start);
        if elapsed < MINUTE {
            return;
        }
        if elapsed < 2 * MINUTE {
            self.prev_requests = self.requests;
            self.prev_tokens = self.tokens;
        } else {
            self.prev_requests = 0;
            self.prev_tokens = 0;
        }
        self.requests = 0;
        self.tokens = 0;
        let whole = elapsed.as_secs() / 60;
        self.start += Duration::from_secs(whole * 60);
    }

    fn add(&mut self, now: Instant, requests: u64, tokens: u64) {
        self.roll(now);
        // Saturating: completion tokens come from the upstream's usage, any number it likes.
        self.requests = self.requests.saturating_add(requests);
        self.tokens = self.tokens.saturating_add(tokens);
    }

    fn used(&self, now: Instant) -> (f64, f64) {
        let mut w = *self;
        w.roll(now);
        let into = now.saturating_duration_since(w.start).as_secs_f64() / 60.0;
        let prev = (1.0 - into).clamp(0.0, 1.0);
        (
            w.prev_requests as f64 * prev + w.requests as f64,
            w.prev_tokens as f64 * prev + w.tokens as f64,
        )
    }

    fn until_rollover(&self, now: Instant) -> Duration {
        let into = now.saturating_duration_since(self.start);
        let rem = Duration::from_secs(60).saturating_sub(Duration::from_secs(into.as_secs() % 60));
        rem.max(Duration::from_secs(1))
    }
}

/// A time-weighted moving average that decays toward zero while no sample comes (as tower's
/// peak-EWMA balancer does), so an untried backend is eventually probed again.
#[derive(Debug, Default, Clone, Copy)]
struct Ewma {
    value: f64,
    at: Option<Instant>,
}

impl Ewma {
    fn decay(elapsed: Duration) -> f64 {
        (-elapsed.as_secs_f64() / DECAY.as_secs_f64()).exp()
    }

    fn observe(&mut self, sample: f64, now: Instant) {
        self.value = match self.at {
            None => sample,
            Some(at) => {
                let d = Self::decay(now.saturating_duration_since(at));
                // At least a small weight per sample, so a burst of samples within the same
                // instant still moves the average.
                let d = d.min(0.9);
                self.value * d + sample * (1.0 - d)
            }
        };
        self.at = Some(now);
    }

    fn read(&self, now: Instant) -> Option<f64> {
        let at = self.at?;
        Some(self.value * Self::decay(now.saturating_duration_since(at)))
    }
}

/// Every meter of the gateway, by key.
#[derive(Debug, Default)]
pub struct Meters {
    map: Mutex<HashMap<String, Arc<Meter>>>,
}

impl Meters {
    /// The meter of a key, created on first use.
    pub fn get(&self, key: &str) -> Arc<Meter> {
        let mut map = lock(&self.map);
        if let Some(m) = map.get(key) {
            return m.clone();
        }
        let m = Arc::new(Meter::default());
        map.insert(key.to_owned(), m.clone());
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn window_slides() {
        let m = Meter::default();
        for _ in 0..60 {
            m.sent(10);
        }
        let limits = LimitsConfig {
            rpm: Some(100),
            tpm: None,
            max_parallel: None,
        };
        assert!((m.headroom(&limits).0 - 0.4).abs() < 1e-9);
        tokio::time::advance(Duration::from_secs(90)).await;
        // Half of the previous minute still overlaps the last 60 s.
        let (req, tok) = m.used();
        assert!((req - 30.0).abs() < 1e-6, "{req}");
        assert!((tok - 300.0).abs() < 1e-6, "{tok}");
        for _ in 0..80 {
            m.sent(0);
        }
        let (free, wait) = m.headroom(&limits);
        assert_eq!(free, 0.0);
        assert_eq!(wait, Duration::from_secs(30));
        tokio::time::advance(Duration::from_secs(120)).await;
        assert_eq!(m.used(), (0.0, 0.0));
    }

    #[tokio::test(start_paused = true)]
    async fn average_follows_samples_and_decays_when_idle() {
        let m = Meter::default();
        assert_eq!(m.latency(false), None);
        m.observe(false, Duration::from_millis(1000));
        assert!((m.latency(false).unwrap_or(0.0) - 1.0).abs() < 1e-9);
        tokio::time::advance(DECAY).await;
        let decayed = m.latency(false).unwrap_or(0.0);
        assert!((decayed - (-1.0f64).exp()).abs() < 1e-6, "{decayed}");
        m.observe(true, Duration::from_millis(50));
        assert!(m.latency(true).unwrap_or(1.0) < 0.06);
    }

    #[test]
    fn in_flight_counts_until_dropped() {
        let a = Arc::new(Meter::default());
        let b = Arc::new(Meter::default());
        {
            let _g = InFlight::start(&[&a, &b]);
            let _h = InFlight::start(&[&a]);
            assert_eq!((a.in_flight(), b.in_flight()), (2, 1));
            let limits = LimitsConfig {
                max_parallel: Some(2),
                ..Default::default()
            };
            assert_eq!(a.headroom(&limits).0, 0.0);
        }
        assert_eq!((a.in_flight(), b.in_flight()), (0, 0));
    }
}
