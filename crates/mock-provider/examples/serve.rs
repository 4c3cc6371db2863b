//! Serves the mock provider: `cargo run -p switchyard-mock-provider --example serve -- 127.0.0.1:8090`.
//! A stand-in for `switchyard mock-provider --listen ADDR` while that command is wired.

use std::net::SocketAddr;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".to_owned())
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    println!("switchyard mock provider listening on {addr}");
    switchyard_mock_provider::run(addr).await
}
