//! Runs the operator, or one gateway-side call, against `$KUBECONFIG`, for checks against a
//! local control plane (`tests/k8s`):
//!
//! ```sh
//! cargo run -p switchyard-operator --example dev -- operator [METRICS_ADDR] [--leader]
//! cargo run -p switchyard-operator --example dev -- watch NAMESPACE FLEET
//! cargo run -p switchyard-operator --example dev -- report NAMESPACE POD GENERATION
//! ```

use std::process::ExitCode;

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
            };
            switchyard_operator::run(client, opts).await
        }
        ["watch", ns, fleet] => {
            let (tx, mut rx) = tokio::sync::watch::channel::<Option<(switchyard_config::GatewayConfig, u64)>>(None);
            tokio::spawn(async move {
                while rx.changed().await.is_ok() {
                    if let Some((config, generation)) = rx.borrow_and_update().as_ref() {
                        println!(
                            "generation {generation}: {} routes, {} keys, hash {}",
                            config.routes.len(),
                            config.keys.len(),
                            config.hash()
                        );
                    }
                }
            });
            switchyard_operator::watch_fleet_config(client, (*ns).into(), (*fleet).into(), tx).await
        }
        ["report", ns, pod, generation] => match generation.parse() {
            Ok(g) => switchyard_operator::report_generation(client, ns, pod, g).await,
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
