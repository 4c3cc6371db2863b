//! The config shard format: how a `GatewayConfig` travels through the Kubernetes API as Secrets
//! `<fleet>-config-<n>`. The operator splits ([`shard_secrets`]); gateway pods assemble
//! ([`assemble_config`]). Both sides read the names below, so the format lives once.
//!
//! Pure: no I/O, no clock. The object identity of each Secret (name, namespace, owner, fleet
//! labels) is the writer's; the format (generation label and annotations, hash, data key) is here.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use sha2::{Digest, Sha256};

use crate::GatewayConfig;

/// Label naming the fleet (the LLMGateway's name) an object belongs to.
pub const LABEL_FLEET: &str = "switchyard.dev/fleet";
/// Label and annotation with the configuration generation of a config shard; on a gateway
/// pod, the annotation is the generation the pod runs.
pub const CONFIG_GENERATION: &str = "switchyard.dev/config-generation";
/// Annotation of a config shard: how many shards the generation has.
pub const ANNOTATION_CONFIG_SHARDS: &str = "switchyard.dev/config-shards";
/// Annotation of a config shard: its index (0-based).
pub const ANNOTATION_CONFIG_SHARD: &str = "switchyard.dev/config-shard";
/// Annotation of a config shard: SHA-256 (hex) of the whole configuration's bytes.
pub const ANNOTATION_CONFIG_HASH: &str = "switchyard.dev/config-hash";
/// Key of a config shard's bytes in the Secret's data.
pub const CONFIG_KEY: &str = "config.json";
/// The field manager of the gateway pods' own writes (their generation annotation).
pub const GATEWAY_MANAGER: &str = "switchyard-gateway";

/// Largest number of configuration bytes in one shard Secret. Secrets are limited to 1 MiB;
/// base64 in the request makes 512 KiB about 683 KiB on the wire.
pub const SHARD_BYTES: usize = 512 * 1024;

/// Name of config shard `index` of fleet `fleet`. Names are fixed by index, so the fleet's Role
/// can grant exactly its shards (`resourceNames`) and the pods can watch each by name.
pub fn shard_name(fleet: &str, index: usize) -> String {
    format!("{fleet}-config-{index}")
}

/// How many shards the generation of shard `s` has (its annotation). The gateway reads it from
/// shard 0 to know which other shard names to watch.
pub fn shard_count(s: &Secret) -> Option<usize> {
    s.metadata
        .annotations
        .as_ref()?
        .get(ANNOTATION_CONFIG_SHARDS)?
        .parse()
        .ok()
}

/// The label selector of fleet `fleet`'s config shards.
pub fn shard_selector(fleet: &str) -> String {
    format!("{LABEL_FLEET}={fleet},{CONFIG_GENERATION}")
}

/// Splits configuration bytes into shards of at most [`SHARD_BYTES`], in order. Always at
/// least one shard, so even an empty configuration is delivered.
pub fn split_config(bytes: &[u8]) -> Vec<&[u8]> {
    if bytes.is_empty() {
        return vec![bytes];
    }
    bytes.chunks(SHARD_BYTES).collect()
}

/// The shard Secrets of configuration `bytes` (SHA-256 `hash`, generation `generation`).
/// `meta(index)` gives shard `index` its identity; the generation label, the shard annotations
/// and the data are added here.
pub fn shard_secrets(bytes: &[u8], hash: &str, generation: u64, meta: impl Fn(usize) -> ObjectMeta) -> Vec<Secret> {
    let chunks = split_config(bytes);
    let count = chunks.len();
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| {
            let mut m = meta(i);
            let labels = m.labels.get_or_insert_with(BTreeMap::new);
            labels.insert(CONFIG_GENERATION.into(), generation.to_string());
            m.annotations = Some(BTreeMap::from([
                (ANNOTATION_CONFIG_HASH.to_owned(), hash.to_owned()),
                (ANNOTATION_CONFIG_SHARD.to_owned(), i.to_string()),
                (ANNOTATION_CONFIG_SHARDS.to_owned(), count.to_string()),
                (CONFIG_GENERATION.to_owned(), generation.to_string()),
            ]));
            Secret {
                metadata: m,
                type_: Some("Opaque".into()),
                immutable: None,
                data: Some(BTreeMap::from([(CONFIG_KEY.to_owned(), ByteString(chunk.to_vec()))])),
                string_data: None,
            }
        })
        .collect()
}

/// A configuration reassembled from its shards.
#[derive(Clone, Debug, PartialEq)]
pub struct AssembledConfig {
    /// The configuration.
    pub config: GatewayConfig,
    /// Its generation.
    pub generation: u64,
    /// SHA-256 (hex) of its bytes, verified.
    pub hash: String,
}

/// Why the newest complete generation of shards could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// The joined bytes do not have the announced hash.
    #[error("config generation {generation}: shards hash to {found}, expected {expected}")]
    HashMismatch {
        /// Generation.
        generation: u64,
        /// Announced hash.
        expected: String,
        /// Hash of the joined bytes.
        found: String,
    },
    /// The joined bytes are not a configuration this gateway reads.
    #[error("config generation {generation}: {source}")]
    Invalid {
        /// Generation.
        generation: u64,
        /// Cause.
        source: crate::Error,
    },
}

#[derive(Debug)]
struct ShardInfo<'a> {
    generation: u64,
    index: usize,
    count: usize,
    hash: &'a str,
    bytes: &'a [u8],
}

fn shard_info(s: &Secret) -> Option<ShardInfo<'_>> {
    let a = s.metadata.annotations.as_ref()?;
    let num = |k: &str| a.get(k).and_then(|v| v.parse::<u64>().ok());
    let bytes = s
        .data
        .as_ref()?
        .get(CONFIG_KEY)
        .map(|b| b.0.as_slice())
        .unwrap_or_default();
    Some(ShardInfo {
        generation: num(CONFIG_GENERATION)?,
        index: usize::try_from(num(ANNOTATION_CONFIG_SHARD)?).ok()?,
        count: usize::try_from(num(ANNOTATION_CONFIG_SHARDS)?).ok()?,
        hash: a.get(ANNOTATION_CONFIG_HASH)?,
        bytes,
    })
}

/// The newest generation for which every shard is present (same generation, same shard count,
/// same hash, indexes `0..count`), joined, hash-verified and parsed. `Ok(None)` when no
/// generation is complete yet (for example while the operator is writing a new one).
pub fn assemble_config<'a>(
    secrets: impl IntoIterator<Item = &'a Secret>,
) -> Result<Option<AssembledConfig>, ShardError> {
    let mut by_generation: BTreeMap<u64, Vec<ShardInfo<'a>>> = BTreeMap::new();
    for s in secrets {
        if let Some(info) = shard_info(s) {
            by_generation.entry(info.generation).or_default().push(info);
        }
    }
    for (generation, mut shards) in by_generation.into_iter().rev() {
        shards.sort_by_key(|s| s.index);
        let Some(first) = shards.first() else { continue };
        let (count, hash) = (first.count, first.hash);
        let complete = shards.len() == count
            && shards
                .iter()
                .enumerate()
                .all(|(i, s)| s.index == i && s.count == count && s.hash == hash);
        if !complete {
            continue;
        }
        let bytes: Vec<u8> = shards.iter().flat_map(|s| s.bytes.iter().copied()).collect();
        let found = hex::encode(Sha256::digest(&bytes));
        if found != hash {
            return Err(ShardError::HashMismatch {
                generation,
                expected: hash.to_owned(),
                found,
            });
        }
        let config = GatewayConfig::from_bytes(&bytes).map_err(|source| ShardError::Invalid { generation, source })?;
        return Ok(Some(AssembledConfig {
            config,
            generation,
            hash: found,
        }));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KeyConfig, KeyHash, SCHEMA_VERSION};

    fn config(keys: usize) -> GatewayConfig {
        GatewayConfig {
            version: SCHEMA_VERSION,
            keys: (0..keys)
                .map(|i| KeyConfig {
                    namespace: "llm".into(),
                    name: format!("key-{i:06}"),
                    hashes: vec![KeyHash {
                        sha256: crate::hash_key(&format!("sk-{i}")),
                        not_after: None,
                    }],
                    allowed_routes: Vec::new(),
                    allowed_passthrough: Vec::new(),
                    limits: crate::LimitsConfig::default(),
                    budget: None,
                    expires_at: None,
                    blocked: false,
                    labels: BTreeMap::new(),
                })
                .collect(),
            ..GatewayConfig::default()
        }
    }

    fn shards(config: &GatewayConfig, generation: u64) -> Vec<Secret> {
        let bytes = config.to_bytes().unwrap();
        shard_secrets(&bytes, &config.hash(), generation, |i| ObjectMeta {
            name: Some(shard_name("edge", i)),
            labels: Some(BTreeMap::from([(LABEL_FLEET.to_owned(), "edge".to_owned())])),
            ..ObjectMeta::default()
        })
    }

    #[test]
    fn what_the_writer_splits_the_reader_assembles() {
        let big = config(8_000);
        assert!(big.to_bytes().unwrap().len() > SHARD_BYTES);
        let written = shards(&big, 7);
        assert!(written.len() > 1);
        for s in &written {
            let labels = s.metadata.labels.as_ref().unwrap();
            assert_eq!(labels[LABEL_FLEET], "edge", "the writer's labels are kept");
            assert_eq!(labels[CONFIG_GENERATION], "7");
        }
        assert!(written.iter().all(|s| shard_count(s) == Some(written.len())));
        let a = assemble_config(written.iter().rev()).unwrap().unwrap();
        assert_eq!((a.generation, a.hash.as_str()), (7, big.hash().as_str()));
        assert_eq!(a.config, big);
        assert!(assemble_config(&written[1..]).unwrap().is_none(), "a shard is missing");
    }

    #[test]
    fn a_config_of_another_schema_version_is_refused() {
        let mut newer = config(1);
        newer.version = SCHEMA_VERSION + 1;
        assert!(matches!(
            assemble_config(&shards(&newer, 3)),
            Err(ShardError::Invalid { generation: 3, .. })
        ));
    }

    #[test]
    fn the_selector_names_the_fleet_and_the_generation_label() {
        assert_eq!(
            shard_selector("edge"),
            "switchyard.dev/fleet=edge,switchyard.dev/config-generation"
        );
    }
}
