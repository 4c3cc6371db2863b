//! `switchyard bench`: the load generator and the scenarios behind `bench/run.py`.
//!
//! - `load`: fixed concurrency (closed loop) or fixed rate (open loop, free of coordinated
//!   omission), streamed or not, OpenAI or Anthropic bodies; latency and time to first byte in
//!   HDR histograms; one JSON object out.
//! - `streams`: many streams held open at once, with the servers' resident memory from `/proc`.
//! - `config-scale`: a folder of 10,000 keys and 1,000 routes; load, compile and swap times in
//!   process; p99 latency while a running gateway reloads it.
//!
//! Targets are local (`http://127.0.0.1:...`): this tool benchmarks processes on this machine
//! and every run is bounded in time. It knows nothing of how the targets were started; the
//! driver (`bench/run.py`) starts them, interleaves the runs and writes the report.

pub mod load;
pub mod scale;
pub mod streams;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use http::{HeaderName, HeaderValue, Uri};

use crate::load::{Api, Load, Target};

/// `switchyard bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Drive one endpoint at a fixed concurrency or a fixed rate; print a JSON summary.
    Load {
        #[command(flatten)]
        target: TargetArgs,
        /// Connections, and so requests in flight at most.
        #[arg(short, long, default_value_t = 16)]
        concurrency: usize,
        /// Requests per second (open loop). Without it, each connection sends back to back.
        #[arg(long)]
        rate: Option<f64>,
        /// Measured seconds.
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        /// Seconds before measuring.
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
    },
    /// Hold many streams open at once and report the RSS of the server processes.
    Streams {
        #[command(flatten)]
        target: TargetArgs,
        /// Streams (one connection each).
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// Processes whose RSS (with their children's) is sampled.
        #[arg(long = "pid", required = true)]
        pids: Vec<u32>,
        /// Give up on streams still open after this many seconds.
        #[arg(long, default_value_t = 60.0)]
        limit: f64,
    },
    /// Generate a large config; time load, compile and swap; optionally measure a gateway
    /// serving it while it reloads.
    ConfigScale {
        /// Folder to write the manifests to (its YAML files are replaced).
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 10_000)]
        keys: usize,
        #[arg(long, default_value_t = 1_000)]
        routes: usize,
        /// `baseUrl` of the providers (the mock provider's OpenAI API).
        #[arg(long, default_value = "http://127.0.0.1:9999/v1")]
        upstream: String,
        /// Only write the folder.
        #[arg(long)]
        write_only: bool,
        /// Skip writing: time the folder as it is.
        #[arg(long)]
        no_write: bool,
        /// In-process rounds of load + compile + swap.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// A gateway serving `--dir`: measure latency while it reloads (base URL,
        /// `http://127.0.0.1:8080`).
        #[arg(long)]
        gateway: Option<Uri>,
        /// Requests per second offered to the gateway.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        /// Measured seconds against the gateway.
        #[arg(long, default_value_t = 12.0)]
        duration: f64,
        /// Reloads during the run.
        #[arg(long, default_value_t = 3)]
        swaps: usize,
    },
}

#[derive(Args, Debug, Clone)]
struct TargetArgs {
    /// Endpoint URL (`http://127.0.0.1:8080/v1/chat/completions`).
    #[arg(long)]
    url: Uri,
    /// Request shape.
    #[arg(long, value_enum, default_value_t = Api::Openai)]
    api: Api,
    /// API key sent.
    #[arg(long, default_value = "sk-bench")]
    key: String,
    /// `model` sent.
    #[arg(long)]
    model: String,
    /// Ask for a stream.
    #[arg(long)]
    stream: bool,
    /// Words in the prompt (the mock echoes them: one streamed chunk per word).
    #[arg(long, default_value_t = 8)]
    prompt_words: usize,
    /// Extra header, `name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
}

impl TargetArgs {
    fn target(&self) -> anyhow::Result<Target> {
        let mut headers = Vec::new();
        for h in &self.headers {
            let (k, v) = h.split_once(':').context("headers are `name: value`")?;
            headers.push((
                HeaderName::from_bytes(k.trim().as_bytes())?,
                HeaderValue::from_str(v.trim())?,
            ));
        }
        Ok(Target {
            url: self.url.clone(),
            api: self.api,
            key: self.key.clone(),
            model: self.model.clone(),
            stream: self.stream,
            prompt_words: self.prompt_words,
            headers,
        })
    }
}

/// Runs `switchyard bench ...`; results go to stdout as one JSON object.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let out = match args.command {
        BenchCommand::Load {
            target,
            concurrency,
            rate,
            duration,
            warmup,
        } => {
            let target = target.target()?;
            check(&target).await?;
            let summary = load::run(
                &target,
                &Load {
                    concurrency,
                    rate,
                    duration: secs(duration),
                    warmup: secs(warmup),
                    timeline: false,
                },
            )
            .await?;
            serde_json::to_value(summary)?
        }
        BenchCommand::Streams {
            target,
            count,
            pids,
            limit,
        } => {
            let target = target.target()?;
            serde_json::to_value(streams::hold(&target, count, &pids, secs(limit)).await?)?
        }
        BenchCommand::ConfigScale {
            dir,
            keys,
            routes,
            upstream,
            write_only,
            no_write,
            rounds,
            gateway,
            rate,
            duration,
            swaps,
        } => {
            let shape = scale::Shape { keys, routes, upstream };
            if !no_write {
                scale::generate(&dir, &shape)?;
            }
            if write_only {
                serde_json::json!({"written": dir})
            } else {
                let offline = scale::offline(&dir, &shape, rounds)?;
                let live = match gateway {
                    None => None,
                    Some(base) => {
                        let base = base.to_string();
                        let base = base.trim_end_matches('/');
                        let target = Target {
                            url: format!("{base}/v1/chat/completions").parse()?,
                            api: Api::Openai,
                            key: scale::key_value(keys.saturating_sub(1)),
                            model: "route-0".into(),
                            stream: false,
                            prompt_words: 8,
                            headers: Vec::new(),
                        };
                        check(&target).await?;
                        let readyz: Uri = format!("{base}/readyz").parse()?;
                        Some(scale::live(&dir, &target, &readyz, rate, secs(duration), swaps).await?)
                    }
                };
                serde_json::json!({"offline": offline, "live": live})
            }
        }
    };
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}

/// One request first, so a misconfigured target fails loudly instead of filling a histogram
/// with errors.
async fn check(target: &Target) -> anyhow::Result<()> {
    let o = load::probe(target).await?;
    if !(200..300).contains(&o.status) {
        let body = o
            .body
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        anyhow::bail!("{} answered HTTP {}: {}", target.url, o.status, body.trim());
    }
    Ok(())
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}
