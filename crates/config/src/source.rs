//! Config delivery: where a gateway's `GatewayConfig` comes from and how it is watched, with one
//! trait, [`ConfigSource`], and two implementations feeding the gateway's one swap loop
//! (`switchyard_gateway::reload`):
//!
//! - [`Folder`] (feature `folder`): manifests in a folder, compiled in process, re-read when a
//!   file changes (standalone mode);
//! - [`Secrets`] (feature `kubernetes`): the fleet's config shard Secrets, watched through the
//!   Kubernetes API and assembled once a generation is complete (Kubernetes mode).
//!
//! The shard format both ends of the API share (what the operator writes, what the gateway
//! reads) is in [`shards`]. Only this module does I/O in this crate, and only the sources behind
//! the features: the shard format and the trait are pure. A source never swaps anything itself;
//! it says when the config may have changed and how to read it.

use std::future::Future;

use crate::{Diagnostic, GatewayConfig};

#[cfg(feature = "folder")]
mod folder;
#[cfg(feature = "kubernetes")]
mod secrets;
pub mod shards;
#[cfg(feature = "kubernetes")]
pub mod watch_backoff;

#[cfg(feature = "folder")]
pub use folder::{Folder, RedisOverride};
#[cfg(feature = "kubernetes")]
pub use secrets::Secrets;
pub use shards::{
    assemble_config, assemble_config_cached, part_count, shard_count, shard_name, shard_secrets, split_config,
    split_config_after, AssembledConfig, LastSplit, PartCache, ShardError, SplitConfig, SplitPart,
    ANNOTATION_CONFIG_HASH, ANNOTATION_CONFIG_PART, ANNOTATION_CONFIG_PARTS, ANNOTATION_PART_HASH, CONFIG_GENERATION,
    CONFIG_KEY, GATEWAY_MANAGER, LABEL_FLEET, MAX_PARTS, PART_TARGET_BYTES, SHARD_BYTES,
};
#[cfg(feature = "kubernetes")]
pub use watch_backoff::WatchBackoff;

/// Where a gateway's config comes from. The swap loop waits on [`ConfigSource::changed`] (cheap:
/// file events, watch events), runs [`ConfigSource::load`] on its low-priority config thread
/// (the expensive part: reading, compiling, joining, parsing), swaps in what it returns if it
/// differs from what is serving, and tells the source with [`ConfigSource::served`].
pub trait ConfigSource: Send + 'static {
    /// What [`ConfigSource::load`] reads, taken when a change is seen.
    type Snapshot: Send + 'static;

    /// Waits until the config may have changed (a burst of changes counts once) and returns
    /// what to load. `None`: the source has ended; the last config keeps serving.
    fn changed(&mut self) -> impl Future<Output = Option<Self::Snapshot>> + Send;

    /// Reads the config of `snapshot`. Blocking. `Ok(None)`: nothing complete to serve yet (a
    /// generation still being written); `Err`: the config is refused and the last good one
    /// keeps serving.
    fn load(snapshot: Self::Snapshot) -> Result<Option<Update>, Refused>;

    /// Generation `generation` is now serving.
    fn served(&self, generation: u64) -> impl Future<Output = ()> + Send {
        let _ = generation;
        std::future::ready(())
    }
}

/// A complete, valid config read from a source.
#[derive(Clone, Debug, PartialEq)]
pub struct Update {
    /// The config.
    pub config: GatewayConfig,
    /// SHA-256 (hex) of its bytes ([`GatewayConfig::hash`]).
    pub hash: String,
    /// The generation the control plane gave it. `None` for a source without generations (a
    /// folder): it becomes the one after the serving config's.
    pub generation: Option<u64>,
}

/// Why a source's config is refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// Objects that are themselves invalid (YAML errors, unknown fields, wrong types, CEL
    /// rules): the whole folder is refused.
    #[error("{} invalid object(s)", .0.len())]
    Invalid(Vec<Diagnostic>),
    /// The newest complete shard generation is corrupt or of another schema version.
    #[error(transparent)]
    Shards(#[from] ShardError),
}

impl Refused {
    /// One line per problem, for the log.
    pub fn problems(&self) -> Vec<String> {
        match self {
            Refused::Invalid(diagnostics) => diagnostics.iter().map(ToString::to_string).collect(),
            Refused::Shards(e) => vec![e.to_string()],
        }
    }
}
