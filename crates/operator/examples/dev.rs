//! Runs the operator, or one gateway-side call, against `$KUBECONFIG`, for checks against a
//! local control plane (`tests/k8s`):
//!
//! ```sh
//! cargo run -p switchyard-operator --example dev -- operator [METRICS_ADDR] [--leader]
//! cargo run -p switchyard-operator --example dev -- watch NAMESPACE FLEET
//! cargo run -p switchyard-operator --example dev -- report NAMESPACE POD GENERATION
//! ```

use std::process::ExitCode;

use switchyard_config::source::{ConfigSource, Secrets};

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let client = match kube::Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kube client: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["operator", rest @ ..] => {
            let opts = switchyard_operator::Options {
                image: "switchyard:dev".into(),
                metrics_addr: rest
                    .first()
                    .filter(|a| !a.starts_with("--"))
                    .and_then(|a| a.parse().ok())
                    .unwrap_or_else(|| ([127, 0, 0, 1], 9090).into()),
                leader_election: rest.contains(&"--leader"),
                lease_namespace: "default".into(),
                spend_interval: std::time::Duration::from_secs(30),
                key_cleanup_deadline: std::time::Duration::from_secs(60),
            };
            switchyard_operator::run(client, opts).await
        }
        ["watch", ns, fleet] => {
            // What a gateway pod reads (`switchyard gateway --kubernetes` swaps these in).
            let mut source = Secrets::new(client, (*ns).into(), (*fleet).into(), None);
            while let Some(shards) = source.changed().await {
                match Secrets::load(shards) {
                    Ok(Some(u)) => println!(
                        "generation {}: {} routes, {} keys, hash {}",
                        u.generation.unwrap_or_default(),
                        u.config.routes.len(),
                        u.config.keys.len(),
                        u.hash
                    ),
                    Ok(None) => println!("no complete generation yet"),
                    Err(e) => println!("refused: {e}"),
                }
            }
            Ok(())
        }
        ["report", ns, pod, generation] => match generation.parse() {
            Ok(g) => Secrets::report(client, ns, pod, g).await.map_err(Into::into),
            Err(e) => {
                eprintln!("generation: {e}");
                return ExitCode::FAILURE;
            }
        },
        _ => {
            eprintln!("usage: dev operator [ADDR] [--leader] | watch NS FLEET | report NS POD GENERATION");
            return ExitCode::FAILURE;
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
