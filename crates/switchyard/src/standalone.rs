//! Standalone mode: `switchyard gateway --config DIR`. Manifests from a folder, compiled in
//! process, reloaded when files change (`switchyard_config::source::Folder`).
//!
//! The folder must be valid to start. After that, a reload that fails to load (YAML errors,
//! unknown fields, CEL rules) is refused and the last good config keeps serving; resources with
//! reference errors are left out and logged, like the operator does. Requests in flight keep the
//! config they started with.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use switchyard_config::source::{Folder, RedisOverride};
use switchyard_gateway::Gateway;

/// A gateway serving the folder `dir`, and the folder, watched, to follow.
pub fn start(dir: PathBuf, redis: RedisOverride) -> anyhow::Result<(Arc<Gateway>, Folder)> {
    let mut folder = Folder::new(dir.clone(), redis);
    let first = folder.read().map_err(|refused| {
        let problems = refused.problems();
        for p in &problems {
            eprintln!("{p}");
        }
        anyhow::anyhow!("{} error(s) in {}", problems.len(), dir.display())
    })?;
    tracing::info!(
        routes = first.config.routes.len(),
        keys = first.config.keys.len(),
        hash = %&first.hash[..12],
        "config loaded"
    );
    let gw = Gateway::with_hash(first.config, first.hash, 1).context("starting the gateway")?;
    folder.watch().context("watching the config folder")?;
    Ok((gw, folder))
}
