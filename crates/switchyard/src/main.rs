//! `switchyard`: the one binary. `gateway`, `operator`, `validate`, `compile`, `crds`,
//! `mock-provider`.

mod standalone;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use switchyard_config::{compile, CompileOptions, Manifests};

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
        /// Folder of manifests (Provider, LLMRoute, VirtualKey, LLMGateway, Secret); watched and
        /// reloaded on change.
        #[arg(long, value_name = "DIR")]
        config: Option<PathBuf>,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080", env = "SWITCHYARD_LISTEN")]
        listen: SocketAddr,
        /// Seconds in-flight requests and streams get to finish after SIGTERM.
        #[arg(long, default_value_t = 30)]
        grace_period: u64,
        /// Milliseconds readiness reports false after SIGTERM before the listener closes.
        #[arg(long, default_value_t = 1000)]
        drain_delay_ms: u64,
    },
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
    /// Print every CRD, or write them to a folder (one file per kind).
    Crds {
        /// Folder to write to.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Validate { dir } => validate(&dir),
        Command::Compile { dir, fleet } => compile_cmd(&dir, fleet.as_deref()),
        Command::Crds { out } => crds(out.as_deref()),
        Command::MockProvider { listen } => run_async(async move {
            tracing::info!(%listen, "mock provider serving");
            switchyard_mock_provider::run(listen).await.map_err(anyhow::Error::from)
        }),
        Command::Gateway {
            config,
            listen,
            grace_period,
            drain_delay_ms,
        } => {
            let Some(dir) = config else {
                eprintln!("switchyard gateway: --config DIR is required");
                return ExitCode::from(2);
            };
            let shutdown = switchyard_gateway::Shutdown {
                drain_delay: Duration::from_millis(drain_delay_ms),
                grace: Duration::from_secs(grace_period),
            };
            run_async(standalone::run(dir, listen, shutdown))
        }
    }
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
