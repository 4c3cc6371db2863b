//! `switchyard`: the one binary. `gateway`, `operator`, `validate`, `compile`, `crds`,
//! `mock-provider`, `import-litellm`.

mod import_litellm;
mod kubernetes;
mod standalone;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use switchyard_config::source::{ConfigSource, RedisOverride};
use switchyard_config::{compile, CompileOptions, Manifests};
use switchyard_gateway::telemetry::Tracing;
use switchyard_gateway::{Gateway, Shutdown};

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "One OpenAI-compatible front door for every LLM provider, run as a Kubernetes-managed fleet."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the gateway: standalone on a folder of manifests (`--config DIR`).
    Gateway {
        /// Folder of manifests (Provider, LLMRoute, VirtualKey, Budget, LLMGateway, Secret); watched and
        /// reloaded on change.
        #[arg(long, value_name = "DIR", conflicts_with = "kubernetes")]
        config: Option<PathBuf>,
        /// Read the config of `--fleet` through the Kubernetes API (in-cluster config or KUBECONFIG).
        #[arg(long, requires = "fleet")]
        kubernetes: bool,
        /// The LLMGateway whose config to serve, with `--kubernetes`.
        #[arg(long)]
        fleet: Option<String>,
        /// Namespace of the fleet; defaults to POD_NAMESPACE, then the kubeconfig's namespace.
        #[arg(long)]
        namespace: Option<String>,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080", env = "SWITCHYARD_LISTEN")]
        listen: SocketAddr,
        /// Where /metrics (and /healthz, /readyz) are served: a port for Prometheus, not for
        /// clients. Port 0 picks a free one (logged at start-up).
        #[arg(long, default_value = "127.0.0.1:9090", env = "SWITCHYARD_METRICS_ADDR")]
        metrics_addr: SocketAddr,
        /// Seconds in-flight requests and streams get to finish after SIGTERM.
        #[arg(long, default_value_t = 30)]
        grace_period: u64,
        /// Milliseconds readiness reports false after SIGTERM before the listener closes.
        #[arg(long, default_value_t = 1000)]
        drain_delay_ms: u64,
        /// Redis for limits, budgets, spend and the cache shared by several gateways (standalone
        /// mode; overrides the LLMGateway's `spec.redis`). Without it, state is in memory.
        #[arg(long, value_name = "URL", env = "SWITCHYARD_REDIS_URL")]
        redis: Option<String>,
        /// While Redis is unreachable: `open` (limits per process) or `closed` (refuse with 503).
        #[arg(long, value_name = "MODE", value_parser = ["open", "closed"])]
        redis_fail_mode: Option<String>,
        /// OpenTelemetry collector for traces, OTLP over HTTP/protobuf (`http://collector:4318`;
        /// `/v1/traces` is appended). Traces are off unless this or
        /// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set; the other OTEL_* variables apply.
        #[arg(long, value_name = "URL", env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
        otlp_endpoint: Option<String>,
    },
    /// Run the operator: reconcile Providers, LLMRoutes, VirtualKeys and LLMGateways into
    /// gateway fleets (in-cluster config or KUBECONFIG).
    Operator {
        /// Where /healthz, /readyz and /metrics are served.
        #[arg(long, default_value = "0.0.0.0:8081")]
        metrics_addr: SocketAddr,
        /// Gateway image for fleets that name none.
        #[arg(
            long,
            env = "SWITCHYARD_GATEWAY_IMAGE",
            default_value = "ghcr.io/switchyard-dev/switchyard:0.1.0"
        )]
        gateway_image: String,
        /// Reconcile only while holding the leader Lease (for several replicas).
        #[arg(long)]
        leader_elect: bool,
        /// Namespace of the leader Lease; defaults to POD_NAMESPACE, then `default`.
        #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
        lease_namespace: String,
        /// Seconds between readings of VirtualKey spend and last use from the fleets' Redis.
        #[arg(long, default_value_t = 30.0)]
        spend_interval: f64,
        /// Seconds after a VirtualKey's deletion during which deleting its counters from an
        /// unreachable fleet Redis is retried; then the key goes without (a Warning event says
        /// what is left behind and when it expires).
        #[arg(long, default_value_t = 60.0)]
        key_cleanup_deadline: f64,
    },
    /// Print the RBAC rules the operator needs (the Helm chart's ClusterRole is generated from them).
    OperatorRbac,
    /// Check a folder of manifests; print `file:line: Kind/name: message` per problem.
    Validate {
        /// Folder of manifests.
        dir: PathBuf,
    },
    /// Print the GatewayConfig JSON compiled from a folder of manifests (it holds provider
    /// credentials: store it as a Secret).
    Compile {
        /// Folder of manifests.
        dir: PathBuf,
        /// `namespace/name` of the LLMGateway to compile for.
        #[arg(long)]
        fleet: Option<String>,
    },
    /// Serve every provider's wire format locally, with fault models chosen by model name
    /// (tests, benchmarks, demos).
    MockProvider {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9999")]
        listen: SocketAddr,
    },
    /// Load generator and benchmark scenarios (`bench/run.py` drives them).
    Bench(switchyard_bench::BenchArgs),
    /// Write Switchyard manifests from a LiteLLM proxy config.yaml; settings that cannot be
    /// carried over are listed on stderr with their line (docs/migrating-from-litellm.md).
    ImportLitellm {
        /// The LiteLLM config.yaml.
        config: PathBuf,
        /// Namespace of the manifests written.
        #[arg(long, default_value = "default")]
        namespace: String,
        /// Folder to write providers.yaml, routes.yaml, keys.yaml and secrets.yaml to.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Exit non-zero when any setting could not be carried over.
        #[arg(long)]
        check: bool,
    },
    /// Print every CRD, or write them to a folder (one file per kind).
    Crds {
        /// Folder to write to.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// jemalloc, with a background thread that returns freed memory to the kernel within a second
/// (`.cargo/config.toml`): fewer instructions per request than glibc's malloc, and what a
/// hostile upstream made the gateway allocate is given back (bench/results/profiling.md,
/// "Allocator").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Validate { dir } => validate(&dir),
        Command::Compile { dir, fleet } => compile_cmd(&dir, fleet.as_deref()),
        Command::Crds { out } => crds(out.as_deref()),
        Command::ImportLitellm {
            config,
            namespace,
            out,
            check,
        } => import_litellm::run(&config, &namespace, &out, check),
        Command::Bench(args) => run_async(switchyard_bench::run(args)),
        Command::MockProvider { listen } => run_async(async move {
            tracing::info!(%listen, "mock provider serving");
            switchyard_mock_provider::run(listen).await.map_err(anyhow::Error::from)
        }),
        Command::Gateway {
            config,
            kubernetes,
            fleet,
            namespace,
            listen,
            metrics_addr,
            grace_period,
            drain_delay_ms,
            redis,
            redis_fail_mode,
            otlp_endpoint,
        } => {
            // Before the async runtime: the exporter's HTTP client must not start inside it.
            let traces = match Tracing::from_env(otlp_endpoint.as_deref()) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("switchyard gateway: {e}");
                    return ExitCode::from(2);
                }
            };
            if traces.is_some() {
                tracing::info!("sending traces over OTLP/HTTP");
            }
            let redis = RedisOverride {
                url: redis,
                fail_mode: redis_fail_mode.map(|m| {
                    if m == "closed" {
                        switchyard_config::FailMode::Closed
                    } else {
                        switchyard_config::FailMode::Open
                    }
                }),
            };
            let shutdown = Shutdown {
                drain_delay: Duration::from_millis(drain_delay_ms),
                grace: Duration::from_secs(grace_period),
            };
            let code = match (config, kubernetes, fleet) {
                (Some(dir), false, _) => run_async(async {
                    serve_gateway(
                        standalone::start(dir, redis)?,
                        listen,
                        metrics_addr,
                        shutdown,
                        traces.clone(),
                    )
                    .await
                }),
                (None, true, Some(fleet)) => run_async(async {
                    serve_gateway(
                        kubernetes::start(fleet, namespace).await?,
                        listen,
                        metrics_addr,
                        shutdown,
                        traces.clone(),
                    )
                    .await
                }),
                _ => {
                    eprintln!("switchyard gateway: give --config DIR, or --kubernetes --fleet NAME");
                    ExitCode::from(2)
                }
            };
            // The server has stopped (SIGTERM, drained): export the spans still queued.
            if let Some(t) = &traces {
                t.shutdown(Duration::from_secs(5));
            }
            code
        }
        Command::Operator {
            metrics_addr,
            gateway_image,
            leader_elect,
            lease_namespace,
            spend_interval,
            key_cleanup_deadline,
        } => run_async(async move {
            let client = kube::Client::try_default().await?;
            let opts = switchyard_operator::Options {
                image: gateway_image,
                metrics_addr,
                leader_election: leader_elect,
                lease_namespace,
                spend_interval: std::time::Duration::from_secs_f64(spend_interval.clamp(0.1, 86_400.0)),
                key_cleanup_deadline: std::time::Duration::from_secs_f64(key_cleanup_deadline.clamp(0.0, 86_400.0)),
            };
            switchyard_operator::run(client, opts)
                .await
                .map_err(anyhow::Error::from)
        }),
        Command::OperatorRbac => match serde_yaml::to_string(&switchyard_operator::rbac_rules()) {
            Ok(y) => {
                print!("{y}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Serves `gw` on `listen` while the one config loop follows `source`, until SIGTERM; then
/// drains and writes the spend still queued.
async fn serve_gateway(
    (gw, source): (Arc<Gateway>, impl ConfigSource),
    listen: SocketAddr,
    metrics_addr: SocketAddr,
    shutdown: Shutdown,
    traces: Option<Tracing>,
) -> anyhow::Result<()> {
    if let Some(t) = traces {
        gw.enable_tracing(t);
    }
    tokio::spawn(switchyard_gateway::reload::run(gw.clone(), source));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let admin = bind_metrics(metrics_addr).await?;
    tracing::info!(%listen, "serving");
    switchyard_gateway::serve(listener, admin, gw.clone(), Box::pin(shutdown_signal()), shutdown).await?;
    // Spend still being settled, and spend queued while Redis was unreachable, is written now.
    gw.flush(Duration::from_secs(5)).await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutting down: readiness off, letting requests in flight finish");
}

/// The gateway's metrics listener; the address is logged, since port 0 picks one.
async fn bind_metrics(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    use anyhow::Context;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening for metrics on {addr} (--metrics-addr)"))?;
    let metrics_addr = listener.local_addr().unwrap_or(addr);
    tracing::info!(%metrics_addr, "serving /metrics");
    Ok(listener)
}

fn run_async(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SWITCHYARD_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("SWITCHYARD_LOG_FORMAT").is_ok_and(|f| f == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn validate(dir: &std::path::Path) -> ExitCode {
    let (manifests, load_errors) = Manifests::load_dir(dir, &env_var);
    for d in &load_errors {
        println!("{d}");
    }
    if !load_errors.is_empty() {
        println!("{} error(s): the folder would be refused", load_errors.len());
        return ExitCode::FAILURE;
    }
    let compiled = compile(&manifests, &CompileOptions::default());
    for d in &compiled.diagnostics {
        println!("{d}");
    }
    let errors = compiled.diagnostics.iter().filter(|d| d.is_error()).count();
    let c = &compiled.config;
    println!(
        "{} provider(s), {} route(s), {} key(s) compiled; {} error(s); config {}",
        c.providers.len(),
        c.routes.len(),
        c.keys.len(),
        errors,
        &c.hash()[..12]
    );
    if errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn compile_cmd(dir: &std::path::Path, fleet: Option<&str>) -> ExitCode {
    let (manifests, load_errors) = Manifests::load_dir(dir, &env_var);
    if !load_errors.is_empty() {
        for d in &load_errors {
            eprintln!("{d}");
        }
        return ExitCode::FAILURE;
    }
    let fleet = fleet.map(|f| match f.split_once('/') {
        Some((ns, name)) => (ns.to_owned(), name.to_owned()),
        None => ("default".to_owned(), f.to_owned()),
    });
    let compiled = compile(&manifests, &CompileOptions { fleet });
    for d in &compiled.diagnostics {
        eprintln!("{d}");
    }
    match serde_json::to_string_pretty(&compiled.config) {
        Ok(s) => {
            println!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn crds(out: Option<&std::path::Path>) -> ExitCode {
    for (file, crd) in switchyard_api::crds() {
        let yaml = match switchyard_api::crd_yaml(&crd) {
            Ok(y) => y,
            Err(e) => {
                eprintln!("{file}: {e}");
                return ExitCode::FAILURE;
            }
        };
        match out {
            Some(dir) => {
                if let Err(e) = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(dir.join(file), yaml)) {
                    eprintln!("{}: {e}", dir.join(file).display());
                    return ExitCode::FAILURE;
                }
            }
            None => print!("{yaml}"),
        }
    }
    ExitCode::SUCCESS
}
