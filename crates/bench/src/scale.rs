//! Config scale: a folder of manifests with many keys and routes, the time to load, compile and
//! swap it in process, and, against a gateway serving that folder, the latency of requests while
//! the gateway reloads it.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use http_body_util::{BodyExt, Full};
use serde::Serialize;
use switchyard_config::{compile, CompileOptions, Manifests};

use crate::load::{self, Conn, Load, Percentiles, Target};

/// The shape of the generated config.
#[derive(Clone, Debug)]
pub struct Shape {
    /// VirtualKeys (each with its Secret).
    pub keys: usize,
    /// LLMRoutes (each with two backends).
    pub routes: usize,
    /// `baseUrl` of the two OpenAI-type providers (the mock).
    pub upstream: String,
}

/// The key value of generated key `i`.
pub fn key_value(i: usize) -> String {
    format!("sk-bench-scale-{i:06}")
}

/// Writes the manifests into `dir` (replacing earlier ones) and `bump.yaml` for generation 1.
pub fn generate(dir: &Path, shape: &Shape) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut providers = String::new();
    for p in ["up-a", "up-b"] {
        let _ = write!(
            providers,
            "apiVersion: switchyard.dev/v1alpha1\nkind: Provider\nmetadata:\n  name: {p}\n  namespace: default\nspec:\n  type: openai\n  baseUrl: {}\n  credentials:\n    secretRef:\n      name: upstream-key\n      key: apiKey\n---\n",
            shape.upstream
        );
    }
    providers.push_str("apiVersion: v1\nkind: Secret\nmetadata:\n  name: upstream-key\n  namespace: default\nstringData:\n  apiKey: sk-upstream\n");
    std::fs::write(dir.join("providers.yaml"), providers)?;

    let mut routes = String::with_capacity(shape.routes * 300);
    for i in 0..shape.routes {
        let _ = write!(
            routes,
            "apiVersion: switchyard.dev/v1alpha1\nkind: LLMRoute\nmetadata:\n  name: route-{i}\n  namespace: default\nspec:\n  model: route-{i}\n  backends:\n  - providerRef:\n      name: up-a\n    model: mock-gpt\n  - providerRef:\n      name: up-b\n    model: mock-gpt\n---\n"
        );
    }
    std::fs::write(dir.join("routes.yaml"), routes)?;

    let mut keys = String::with_capacity(shape.keys * 400);
    for i in 0..shape.keys {
        let team = i % 50;
        let _ = write!(
            keys,
            "apiVersion: switchyard.dev/v1alpha1\nkind: VirtualKey\nmetadata:\n  name: key-{i}\n  namespace: default\nspec:\n  secretRef:\n    name: key-{i}\n  labels:\n    team: team-{team}\n  limits:\n    rpm: 1000000\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: key-{i}\n  namespace: default\nstringData:\n  key: {}\n---\n",
            key_value(i)
        );
    }
    std::fs::write(dir.join("keys.yaml"), keys)?;
    bump(dir, 1)
}

/// Rewrites the one small file whose change makes the gateway reload the whole folder.
pub fn bump(dir: &Path, generation: u64) -> anyhow::Result<()> {
    let text = format!(
        "# Changed by `switchyard bench config-scale` to trigger a reload.\napiVersion: switchyard.dev/v1alpha1\nkind: VirtualKey\nmetadata:\n  name: bump\n  namespace: default\nspec:\n  secretRef:\n    name: bump-key\n  labels:\n    team: bump\n    generation: \"{generation}\"\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: bump-key\n  namespace: default\nstringData:\n  key: sk-bench-scale-bump\n"
    );
    // Write then rename, so the watcher never sees a half-written file.
    let tmp = dir.join(".bump.yaml.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, dir.join("bump.yaml"))?;
    Ok(())
}

/// In-process timings, milliseconds (median and worst of `rounds`).
#[derive(Clone, Debug, Serialize)]
pub struct Offline {
    pub keys: usize,
    pub routes: usize,
    pub rounds: usize,
    /// Bytes of YAML read.
    pub yaml_bytes: u64,
    /// Bytes of the compiled `GatewayConfig` JSON.
    pub config_bytes: usize,
    /// Reading and parsing the folder (`Manifests::load_dir`).
    pub load_ms: Stat,
    /// Reading and parsing the folder again after one small file changed, as a running gateway
    /// does (`Manifests::load_dir_cached`: only the changed documents are parsed).
    pub reload_load_ms: Stat,
    /// Compiling it then, as a running gateway does (`compile_with` the last compile's memo:
    /// keys whose documents did not change are not compiled again).
    pub reload_compile_ms: Stat,
    /// `compile()`.
    pub compile_ms: Stat,
    /// `Gateway::swap()`: indexing the new config (hash included) and dropping the old one.
    pub swap_ms: Stat,
    /// Compile diagnostics that were errors (should be 0).
    pub errors: usize,
}

/// Median and worst.
#[derive(Clone, Debug, Serialize)]
pub struct Stat {
    pub median: f64,
    pub max: f64,
}

impl Stat {
    fn of(mut v: Vec<f64>) -> Self {
        v.sort_by(f64::total_cmp);
        Self {
            median: v.get(v.len() / 2).copied().unwrap_or(0.0),
            max: v.last().copied().unwrap_or(0.0),
        }
    }
}

/// Times load, compile and swap of the folder in this process.
pub fn offline(dir: &Path, shape: &Shape, rounds: usize) -> anyhow::Result<Offline> {
    let env = |_: &str| None;
    let mut load_ms = Vec::new();
    let mut compile_ms = Vec::new();
    let mut swap_ms = Vec::new();
    let mut errors = 0;
    let mut config_bytes = 0;
    let mut gateway = None;
    for round in 0..rounds.max(1) {
        let t = Instant::now();
        let (manifests, load_errors) = Manifests::load_dir(dir, &env);
        load_ms.push(ms(t.elapsed()));
        if let Some(e) = load_errors.first() {
            anyhow::bail!("the generated folder does not load: {e}");
        }
        let t = Instant::now();
        let compiled = compile(&manifests, &CompileOptions::default());
        compile_ms.push(ms(t.elapsed()));
        errors = compiled.diagnostics.iter().filter(|d| d.is_error()).count();
        config_bytes = compiled.config.to_bytes().map(|b| b.len()).unwrap_or(0);
        match &gateway {
            None => gateway = Some(switchyard_gateway::Gateway::new(compiled.config, 1)?),
            Some(gw) => {
                let t = Instant::now();
                // Nothing else holds the old config here: it is freed at once, inside the timing.
                let freed = gw
                    .swap(compiled.config, round as u64 + 1)
                    .wait(std::time::Duration::ZERO);
                debug_assert!(freed);
                swap_ms.push(ms(t.elapsed()));
            }
        }
    }
    // A reload as a running gateway does it: the folder read through the cache its previous read
    // filled, after one small file changed. On a copy, so that a gateway watching `dir` does not
    // reload.
    let copy = std::env::temp_dir().join(format!("switchyard-config-scale-reload-{}", std::process::id()));
    std::fs::create_dir_all(&copy)?;
    for entry in std::fs::read_dir(dir)?.flatten() {
        if entry.path().is_file() {
            std::fs::copy(entry.path(), copy.join(entry.file_name()))?;
        }
    }
    let mut cache = switchyard_config::manifests::ParseCache::default();
    let mut memo = switchyard_config::CompileMemo::default();
    let (manifests, _) = Manifests::load_dir_cached(&copy, &env, &mut cache);
    let keys = switchyard_config::compile_with(&manifests, &CompileOptions::default(), &mut memo)
        .config
        .keys
        .len();
    let mut reload_load_ms = Vec::new();
    let mut reload_compile_ms = Vec::new();
    for round in 0..rounds.max(1) {
        bump(&copy, round as u64 + 2)?;
        let t = Instant::now();
        let (manifests, load_errors) = Manifests::load_dir_cached(&copy, &env, &mut cache);
        reload_load_ms.push(ms(t.elapsed()));
        if let Some(e) = load_errors.first() {
            anyhow::bail!("the changed folder does not load: {e}");
        }
        let used = cache.last();
        anyhow::ensure!(
            used.parsed <= 2,
            "a one-file change parsed {} documents again",
            used.parsed
        );
        let t = Instant::now();
        let compiled = switchyard_config::compile_with(&manifests, &CompileOptions::default(), &mut memo);
        reload_compile_ms.push(ms(t.elapsed()));
        anyhow::ensure!(
            compiled.config.keys.len() == keys,
            "the reload compiled {} keys, not {keys}",
            compiled.config.keys.len()
        );
    }
    let _ = std::fs::remove_dir_all(&copy);
    let yaml_bytes = std::fs::read_dir(dir)?
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    Ok(Offline {
        keys: shape.keys,
        routes: shape.routes,
        rounds,
        yaml_bytes,
        config_bytes,
        load_ms: Stat::of(load_ms),
        reload_load_ms: Stat::of(reload_load_ms),
        reload_compile_ms: Stat::of(reload_compile_ms),
        compile_ms: Stat::of(compile_ms),
        swap_ms: Stat::of(swap_ms),
        errors,
    })
}

/// Latency while a running gateway reloads the folder.
#[derive(Clone, Debug, Serialize)]
pub struct Live {
    /// Requests per second offered (open loop).
    pub rate: f64,
    /// The run as a whole.
    pub overall: load::Summary,
    /// Requests that completed away from any reload.
    pub steady_us: Percentiles,
    /// Requests that completed between a file write and 250 ms after the new generation served.
    pub during_reload_us: Percentiles,
    /// Per reload: ms from the file write until `/readyz` reported the new generation (this
    /// includes the gateway's 150 ms debounce of file events).
    pub apply_to_served_ms: Vec<f64>,
    /// 250 ms windows: `(start ms, p99 µs, requests)`, for plots.
    pub windows: Vec<(u32, u64, u64)>,
    /// Reload windows, ms since measuring started.
    pub reloads: Vec<(u32, u32)>,
}

/// Drives `target` at `rate` for `duration` and makes the gateway at `readyz` reload `dir`
/// `swaps` times, evenly spread.
pub async fn live(
    dir: &Path,
    target: &Target,
    readyz: &http::Uri,
    rate: f64,
    duration: Duration,
    swaps: usize,
) -> anyhow::Result<Live> {
    let warmup = Duration::from_secs(1);
    let spec = Load {
        concurrency: 64,
        rate: Some(rate),
        duration,
        warmup,
        timeline: true,
    };
    let first_gen = generation(readyz).await?;
    let t0 = Instant::now() + Duration::from_millis(20) + warmup;
    let dir = dir.to_path_buf();
    let readyz = readyz.clone();
    let swapper = async move {
        let mut out = Vec::new();
        let mut gen = first_gen;
        for s in 0..swaps {
            let at = t0 + duration.mul_f64((s as f64 + 1.0) / (swaps as f64 + 1.0));
            tokio::time::sleep_until(at.into()).await;
            let written = Instant::now();
            bump(&dir, gen + 100 + s as u64)?;
            // Bounded wait for the new generation.
            let limit = written + Duration::from_secs(20);
            let served = loop {
                let g = generation(&readyz).await.unwrap_or(gen);
                if g != gen {
                    gen = g;
                    break Instant::now();
                }
                if Instant::now() > limit {
                    anyhow::bail!("the gateway did not reload within 20 s");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            out.push((written, served));
        }
        anyhow::Ok(out)
    };
    let (summary, swaps_seen) = tokio::join!(load::run(target, &spec), swapper);
    let summary = summary?;
    let swaps_seen = swaps_seen?;
    let t0 = summary.measured_from.unwrap_or(t0);
    let rel = |i: Instant| u32::try_from(i.saturating_duration_since(t0).as_millis()).unwrap_or(u32::MAX);
    let reloads: Vec<(u32, u32)> = swaps_seen
        .iter()
        .map(|&(w, s)| (rel(w), rel(s).saturating_add(250)))
        .collect();
    let mut steady = hist()?;
    let mut during = hist()?;
    let mut windows: Vec<(u32, hdrhistogram::Histogram<u64>)> = Vec::new();
    for &(at, lat) in &summary.timeline {
        let in_reload = reloads.iter().any(|&(a, b)| at >= a && at <= b);
        if in_reload {
            during.saturating_record(u64::from(lat));
        } else {
            steady.saturating_record(u64::from(lat));
        }
        let w = at / 250 * 250;
        if windows.last().is_none_or(|(s, _)| *s != w) {
            windows.push((w, hist()?));
        }
        if let Some((_, h)) = windows.last_mut() {
            h.saturating_record(u64::from(lat));
        }
    }
    let apply_to_served_ms = swaps_seen.iter().map(|&(w, s)| ms(s - w)).collect();
    let mut overall = summary;
    overall.timeline.clear();
    Ok(Live {
        rate,
        overall,
        steady_us: Percentiles::of(&steady),
        during_reload_us: Percentiles::of(&during),
        apply_to_served_ms,
        windows: windows
            .iter()
            .map(|(s, h)| (*s, h.value_at_quantile(0.99), h.len()))
            .collect(),
        reloads,
    })
}

fn hist() -> anyhow::Result<hdrhistogram::Histogram<u64>> {
    Ok(hdrhistogram::Histogram::new_with_bounds(1, 600_000_000, 3)?)
}

/// The generation `/readyz` reports (`ready generation=N hash=...`).
async fn generation(readyz: &http::Uri) -> anyhow::Result<u64> {
    let host = readyz.host().unwrap_or("127.0.0.1");
    let port = readyz.port_u16().unwrap_or(80);
    let addr = format!("{host}:{port}");
    let mut conn = Conn::open(&addr).await?;
    let req = http::Request::get(readyz.path())
        .header(http::header::HOST, addr.as_str())
        .body(Full::new(bytes::Bytes::new()))?;
    let resp = conn.send_head(req).await?;
    let body = resp.into_body().collect().await?.to_bytes();
    let text = String::from_utf8_lossy(&body);
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("generation="))
        .and_then(|g| g.parse().ok())
        .context("no generation in /readyz")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
