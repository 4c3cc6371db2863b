//! `GatewayConfig`: the one typed contract between the control plane and the data plane, and
//! `compile()`, the pure function that turns manifests into it.
//!
//! The operator and standalone mode both call [`compile`]; the gateway reads only
//! [`GatewayConfig`]. `GatewayConfig` holds no CRD types: secrets are resolved into values, key
//! Secrets into hashes, durations into milliseconds and prices into numbers, so the gateway never
//! needs to know how they were declared.
//!
//! The contract also owns its delivery ([`source`]): the config shard format the operator writes
//! and the gateway reads, and the two places a gateway reads its config from (a folder, the
//! fleet's shard Secrets), behind the `folder` and `kubernetes` features. Nothing outside those
//! two features performs I/O beyond reading manifest files.

mod block;
mod compile;
mod diagnostics;
pub mod manifests;
pub mod prices;
pub mod shared_state;
pub mod source;
mod types;

pub use compile::{
    admits_namespace, compile, compile_with, key_attaches_to, route_attaches_to, route_names_gateway, selector_matches,
    CompileMemo, CompileOptions, Compiled, MAX_FALLBACK_DEPTH, REF_NOT_PERMITTED,
};
pub use diagnostics::{Diagnostic, Location, ObjectId, Severity};
pub use manifests::Manifests;
pub use types::*;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The configuration is not valid JSON of the expected shape.
    #[error("invalid gateway config: {0}")]
    Json(#[from] serde_json::Error),
    /// The configuration was written by a newer or older, incompatible control plane.
    #[error("gateway config schema version {found} is not supported (this gateway reads version {supported})")]
    Version {
        /// Version found.
        found: u32,
        /// Version supported.
        supported: u32,
    },
    /// A folder of manifests could not be watched.
    #[cfg(feature = "folder")]
    #[error("watching {path}: {source}")]
    Watch {
        /// The folder.
        path: String,
        /// The cause.
        source: notify::Error,
    },
}
