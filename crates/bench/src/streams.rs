//! Many open streams at once: opens `count` streaming requests (one connection each) against an
//! upstream that holds them open (the mock's `mock-slow-*` models send headers at once and the
//! first token later), and samples the resident memory of the server processes from `/proc`
//! while they are open.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use serde::Serialize;

use crate::load::{Conn, Target};

/// What holding the streams cost.
#[derive(Clone, Debug, Serialize)]
pub struct Held {
    /// Streams asked for.
    pub count: usize,
    /// Streams whose response headers arrived.
    pub opened: u64,
    /// Streams that ended normally.
    pub completed: u64,
    /// Streams that failed (connect, status, body).
    pub failed: u64,
    /// First failure.
    pub first_error: Option<String>,
    /// Seconds until every stream had its headers.
    pub open_seconds: f64,
    /// RSS (KiB) of the watched processes before the first stream.
    pub rss_before_kib: u64,
    /// Highest RSS (KiB) seen while streams were open.
    pub rss_peak_kib: u64,
    /// RSS (KiB) when every stream was open.
    pub rss_all_open_kib: u64,
}

/// Opens `count` streams and waits for them to end (bounded by `limit`), sampling the RSS of
/// `pids` and their children every 50 ms.
pub async fn hold(target: &Target, count: usize, pids: &[u32], limit: Duration) -> anyhow::Result<Held> {
    let url = target.url.clone();
    let host = url.host().unwrap_or("127.0.0.1").to_owned();
    let port = url.port_u16().unwrap_or(80);
    let addr = format!("{host}:{port}");
    let authority = http::HeaderValue::from_str(&addr)?;
    let body = target.body();
    let opened = Arc::new(AtomicU64::new(0));
    let completed = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let rss_before = rss_kib(pids);
    let started = Instant::now();
    let deadline = started + limit;

    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        // Open in bursts of 100, as a fleet of clients would: the listen backlog is finite.
        if i % 100 == 0 && i > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (target, addr, authority, body) = (target.clone(), addr.clone(), authority.clone(), body.clone());
        let (opened, completed, failed, first_error) =
            (opened.clone(), completed.clone(), failed.clone(), first_error.clone());
        tasks.push(tokio::spawn(async move {
            let r = tokio::time::timeout_at(deadline.into(), async {
                let mut conn = Conn::open(&addr).await?;
                let req = target.request(&authority, body)?;
                let resp = conn.send_head(req).await?;
                if !resp.status().is_success() {
                    anyhow::bail!("HTTP {}", resp.status());
                }
                opened.fetch_add(1, Ordering::Relaxed);
                let mut b = resp.into_body();
                while let Some(f) = b.frame().await {
                    f?;
                }
                anyhow::Ok(())
            })
            .await;
            match r {
                Ok(Ok(())) => {
                    completed.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Err(e)) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    first_error
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert(format!("{e:#}"));
                }
                Err(_) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    first_error
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert("did not finish in time".into());
                }
            }
        }));
    }

    let mut peak = rss_before;
    let mut all_open_at = None;
    let mut rss_all_open = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    while Instant::now() < deadline + Duration::from_secs(1) {
        tick.tick().await;
        let rss = rss_kib(pids);
        peak = peak.max(rss);
        let o = opened.load(Ordering::Relaxed);
        let done = completed.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed);
        if all_open_at.is_none() && o as usize >= count {
            all_open_at = Some(started.elapsed());
            rss_all_open = rss;
        }
        if done as usize >= count {
            break;
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    let first_error = first_error.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(Held {
        count,
        opened: opened.load(Ordering::Relaxed),
        completed: completed.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        first_error,
        open_seconds: all_open_at.unwrap_or_else(|| started.elapsed()).as_secs_f64(),
        rss_before_kib: rss_before,
        rss_peak_kib: peak,
        rss_all_open_kib: rss_all_open,
    })
}

/// Resident memory (KiB) of `pids` and all their descendants, from `/proc`.
pub fn rss_kib(pids: &[u32]) -> u64 {
    let mut all: Vec<u32> = pids.to_vec();
    // Children (LiteLLM may run its server in a child process).
    if let Ok(dir) = std::fs::read_dir("/proc") {
        let mut parents: Vec<(u32, u32)> = Vec::new();
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
                if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
                    if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
                        parents.push((pid, ppid));
                    }
                }
            }
        }
        let mut i = 0;
        while i < all.len() {
            let p = all[i];
            for &(c, pp) in &parents {
                if pp == p && !all.contains(&c) {
                    all.push(c);
                }
            }
            i += 1;
        }
    }
    all.iter().map(|&p| vm_rss(p)).sum()
}

fn vm_rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}
