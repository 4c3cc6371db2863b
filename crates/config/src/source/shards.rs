//! The config shard format: how a `GatewayConfig` travels through the Kubernetes API as Secrets
//! `<fleet>-config-<n>`. The operator splits ([`split_config`], [`shard_secrets`]); gateway pods
//! assemble ([`assemble_config`]). Both sides read the names below, so the format lives once.
//!
//! The configuration is split by object, not by byte offset, so an edit costs what it changes:
//!
//! - Shard 0 is the **index**: the generation, the hash of the whole configuration, the head of
//!   the configuration (schema version, fleet, settings) and the SHA-256 of each part.
//! - Shards `1..=n` are the **parts**. Every provider, route, key and budget lives in the part
//!   chosen by a stable hash of its identity (kind, namespace, name), so editing one route
//!   changes the bytes of one part. The number of parts is sized from the configuration's bytes
//!   and kept across generations unless it is far off ([`part_count`]).
//!
//! A writer rewrites only the parts whose hash changed, then the index. A reader assembles once
//! every part it holds hashes to what the index announces: a part is the content of the index's
//! generation or it is not used, so a gateway never serves a mix of two generations.
//!
//! Names stay fixed by index (`<fleet>-config-0` the index, `-1..` the parts), so the fleet's
//! Role can grant exactly those names (`resourceNames`) and the pods watch each by name.
//!
//! Pure: no I/O, no clock. The object identity of each Secret (name, namespace, owner, fleet
//! labels) is the writer's; the format (generation label and annotations, hashes, data key) is
//! here.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{GatewayConfig, KeyConfig, ProviderConfig, RouteConfig, Settings, TeamBudgetConfig, SCHEMA_VERSION};

/// Label naming the fleet (the LLMGateway's name) an object belongs to.
pub const LABEL_FLEET: &str = "switchyard.dev/fleet";
/// Label and annotation with the configuration generation of a config shard (for a part, the
/// generation that last wrote it); on a gateway pod, the annotation is the generation the pod
/// runs.
pub const CONFIG_GENERATION: &str = "switchyard.dev/config-generation";
/// Annotation of the index (shard 0): SHA-256 (hex) of the whole configuration's canonical
/// bytes ([`GatewayConfig::hash`]).
pub const ANNOTATION_CONFIG_HASH: &str = "switchyard.dev/config-hash";
/// Annotation of the index (shard 0): the SHA-256 (hex) of each part's bytes, comma-separated,
/// part 1 first. Its length is the number of parts.
pub const ANNOTATION_CONFIG_PARTS: &str = "switchyard.dev/config-parts";
/// Annotation of a part: its number (1-based; the shard index).
pub const ANNOTATION_CONFIG_PART: &str = "switchyard.dev/config-part";
/// Annotation of a part: SHA-256 (hex) of its bytes, so the writer sees from metadata alone
/// which parts an edit changes. Readers match it to the index, then hash the bytes themselves.
pub const ANNOTATION_PART_HASH: &str = "switchyard.dev/config-part-hash";
/// Key of a shard's bytes in the Secret's data.
pub const CONFIG_KEY: &str = "config.json";
/// The field manager of the gateway pods' own writes (their generation annotation).
pub const GATEWAY_MANAGER: &str = "switchyard-gateway";

/// Bytes of configuration a part aims at. Small enough that an edit rewrites little (a part,
/// then the index), large enough that a fleet of 10,000 keys is a few dozen Secrets (each one
/// watch per gateway pod).
pub const PART_TARGET_BYTES: usize = 64 * 1024;
/// Largest part of more than one object. Secrets are limited to 1 MiB; base64 in the request
/// makes 512 KiB about 683 KiB on the wire. One object larger than this gets a part of its own.
pub const SHARD_BYTES: usize = 512 * 1024;
/// Most parts a configuration is split into.
pub const MAX_PARTS: usize = 256;

/// Name of config shard `index` of fleet `fleet` (0 is the index, `1..` the parts). Names are
/// fixed by index, so the fleet's Role can grant exactly its shards (`resourceNames`) and the
/// pods can watch each by name.
pub fn shard_name(fleet: &str, index: usize) -> String {
    format!("{fleet}-config-{index}")
}

/// How many shards (the index and its parts) the index `s` announces. The gateway reads it
/// from shard 0 to know which other shard names to watch. `None` when `s` is no index of this
/// format.
pub fn shard_count(s: &Secret) -> Option<usize> {
    let parts = s.metadata.annotations.as_ref()?.get(ANNOTATION_CONFIG_PARTS)?;
    Some(split_hashes(parts).len() + 1)
}

fn split_hashes(list: &str) -> Vec<&str> {
    list.split(',').filter(|h| !h.is_empty()).collect()
}

/// The label selector of fleet `fleet`'s config shards.
pub fn shard_selector(fleet: &str) -> String {
    format!("{LABEL_FLEET}={fleet},{CONFIG_GENERATION}")
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The head of a configuration: everything but its lists of objects.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HeadRef<'a> {
    version: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    fleet: &'a Option<String>,
    settings: &'a Settings,
}

#[derive(Deserialize)]
struct Version {
    version: u32,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Head {
    version: u32,
    #[serde(default)]
    fleet: Option<String>,
    settings: Settings,
}

/// A part as read: its share of each list, in any order.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Part {
    #[serde(default)]
    providers: Vec<ProviderConfig>,
    #[serde(default)]
    routes: Vec<RouteConfig>,
    #[serde(default)]
    keys: Vec<Arc<KeyConfig>>,
    #[serde(default)]
    budgets: Vec<TeamBudgetConfig>,
}

/// The lists of a part, in the order they are written.
const LISTS: [&str; 4] = ["providers", "routes", "keys", "budgets"];
/// The kind each list's objects are placed by ([`stable_hash`]).
const LIST_KINDS: [&str; 4] = ["provider", "route", "key", "budget"];

/// One part's bytes and their SHA-256 (hex).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitPart {
    /// The part's JSON.
    pub bytes: Vec<u8>,
    /// SHA-256 (hex) of `bytes`.
    pub hash: String,
}

/// A configuration split for publishing: what [`shard_secrets`] writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitConfig {
    /// SHA-256 (hex) of the whole configuration's canonical bytes ([`GatewayConfig::hash`]).
    pub hash: String,
    /// The head's JSON (schema version, fleet, settings), carried by the index.
    pub head: Vec<u8>,
    /// The parts, part 1 first.
    pub parts: Vec<SplitPart>,
}

impl SplitConfig {
    /// Bytes of configuration in the head and all parts.
    pub fn bytes(&self) -> usize {
        self.head.len() + self.parts.iter().map(|p| p.bytes.len()).sum::<usize>()
    }
}

/// How many parts a configuration of `total` bytes gets: about [`PART_TARGET_BYTES`] each, or
/// `previous` (the count published now) while that is within a factor of two, so that growing
/// by a few objects does not move every object to another part.
pub fn part_count(total: usize, previous: Option<usize>) -> usize {
    let ideal = total.div_ceil(PART_TARGET_BYTES).clamp(1, MAX_PARTS);
    match previous {
        Some(p) if (1..=MAX_PARTS).contains(&p) && ideal <= p.saturating_mul(2) && p <= ideal.saturating_mul(2) => p,
        _ => ideal,
    }
}

/// FNV-1a, 64 bits: the stable hash that places an object in a part. Never change it: every
/// object would move.
fn stable_hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// One object of the configuration, serialised, with the list it belongs to and where it goes.
struct Piece {
    list: usize,
    place: u64,
    bytes: Arc<[u8]>,
}

/// What the previous split of one fleet's configuration serialised: each object's value and
/// bytes, and each part's bytes and hash. Given to [`split_config_after`], an object equal to
/// the one split before keeps its bytes (it is not serialised again) and a part whose bytes did
/// not change keeps its hash, so one edit serialises the objects it changed and hashes the parts
/// it changed. The split is byte for byte what [`split_config`] gives.
#[derive(Debug, Default)]
pub struct LastSplit {
    providers: Serialised<ProviderConfig>,
    routes: Serialised<RouteConfig>,
    keys: Serialised<Arc<KeyConfig>>,
    budgets: Serialised<TeamBudgetConfig>,
    parts: Vec<SplitPart>,
}

/// Objects of one list by identity, with the bytes they serialise to.
type Serialised<T> = HashMap<(String, String), (T, Arc<[u8]>)>;

/// The pieces of `list` (number `list` of [`LISTS`]), reusing the bytes of objects equal to
/// those in `last`, which is left holding exactly `objects`.
fn list_pieces<T: Serialize + Clone + PartialEq>(
    list: usize,
    objects: &[T],
    identity: impl Fn(&T) -> (&str, &str),
    last: &mut Serialised<T>,
    out: &mut Vec<Piece>,
) -> Result<(), serde_json::Error> {
    let mut before = std::mem::take(last);
    last.reserve(objects.len());
    for o in objects {
        let (a, b) = identity(o);
        // A provider's identity is one string (its id); the others' are namespace and name.
        let place = match b {
            "" if list == 0 => stable_hash(&[LIST_KINDS[list], a]),
            _ => stable_hash(&[LIST_KINDS[list], a, b]),
        };
        let id = (a.to_owned(), b.to_owned());
        let (value, bytes) = match before.remove(&id) {
            Some((value, bytes)) if value == *o => (value, bytes),
            _ => (o.clone(), Arc::from(serde_json::to_vec(o)?)),
        };
        out.push(Piece {
            list,
            place,
            bytes: bytes.clone(),
        });
        last.insert(id, (value, bytes));
    }
    Ok(())
}

fn pieces(config: &GatewayConfig, last: &mut LastSplit) -> Result<Vec<Piece>, serde_json::Error> {
    let mut out =
        Vec::with_capacity(config.providers.len() + config.routes.len() + config.keys.len() + config.budgets.len());
    list_pieces(0, &config.providers, |p| (&p.id, ""), &mut last.providers, &mut out)?;
    list_pieces(
        1,
        &config.routes,
        |r| (&r.namespace, &r.name),
        &mut last.routes,
        &mut out,
    )?;
    list_pieces(2, &config.keys, |k| (&k.namespace, &k.name), &mut last.keys, &mut out)?;
    list_pieces(
        3,
        &config.budgets,
        |b| (&b.namespace, &b.name),
        &mut last.budgets,
        &mut out,
    )?;
    Ok(out)
}

/// Which pieces go to each of `n` parts (indexes into `pieces`, in config order).
fn place(pieces: &[Piece], n: usize) -> Vec<Vec<usize>> {
    let mut parts = vec![Vec::new(); n];
    let n64 = u64::try_from(n).unwrap_or(1).max(1);
    for (i, p) in pieces.iter().enumerate() {
        let at = usize::try_from(p.place % n64).unwrap_or(0);
        parts[at].push(i);
    }
    parts
}

/// A part's JSON from its pieces: `{"providers":[..],"routes":[..],"keys":[..],"budgets":[..]}`.
fn part_bytes(pieces: &[Piece], members: &[usize]) -> Vec<u8> {
    let size: usize = members.iter().map(|&i| pieces[i].bytes.len() + 1).sum();
    let mut out = Vec::with_capacity(size + 64);
    out.push(b'{');
    for (list, name) in LISTS.iter().enumerate() {
        if list > 0 {
            out.push(b',');
        }
        out.extend_from_slice(format!("\"{name}\":[").as_bytes());
        let mut first = true;
        for p in members.iter().map(|&i| &pieces[i]).filter(|p| p.list == list) {
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(&p.bytes);
        }
        out.push(b']');
    }
    out.push(b'}');
    out
}

/// [`GatewayConfig::hash`] from the head and the pieces, without serialising the configuration
/// again: its canonical bytes are the head's fields, then each list of pieces in order (budgets
/// only when there are any), fed to the hash as they go.
fn config_hash(head: &[u8], pieces: &[Piece]) -> String {
    let mut h = Sha256::new();
    // The head is `{"version":..,"fleet":..,"settings":{..}}`: everything but its closing brace.
    h.update(&head[..head.len().saturating_sub(1)]);
    for (list, name) in LISTS.iter().enumerate() {
        let mut members = pieces.iter().filter(|p| p.list == list).peekable();
        if list == 3 && members.peek().is_none() {
            break;
        }
        h.update(format!(",\"{name}\":[").as_bytes());
        for (i, p) in members.enumerate() {
            if i > 0 {
                h.update(b",");
            }
            h.update(&p.bytes);
        }
        h.update(b"]");
    }
    h.update(b"}");
    hex::encode(h.finalize())
}

/// Splits `config` into a head and parts; `previous` is the number of parts published now, if
/// any ([`part_count`]). A part stays under [`SHARD_BYTES`], or holds one larger object and at
/// most [`PART_TARGET_BYTES`] beside it: when one would not, the parts are doubled (up to
/// [`MAX_PARTS`]).
pub fn split_config(config: &GatewayConfig, previous: Option<usize>) -> Result<SplitConfig, serde_json::Error> {
    split_config_after(config, previous, &mut LastSplit::default())
}

/// [`split_config`], reusing what `last` (the split before, of the same fleet) serialised and
/// hashed, and leaving in `last` what this split did.
pub fn split_config_after(
    config: &GatewayConfig,
    previous: Option<usize>,
    last: &mut LastSplit,
) -> Result<SplitConfig, serde_json::Error> {
    // Every field, by name: a field added to `GatewayConfig` must be given a place here (the head
    // or a list of the parts) and in `assemble_config`, or it would not reach the gateways.
    let GatewayConfig {
        version,
        fleet,
        settings,
        providers: _,
        routes: _,
        keys: _,
        budgets: _,
    } = config;
    let head = serde_json::to_vec(&HeadRef {
        version: *version,
        fleet,
        settings,
    })?;
    let pieces = pieces(config, last)?;
    let total: usize = pieces.iter().map(|p| p.bytes.len() + 1).sum();
    let mut n = part_count(total, previous);
    let members = loop {
        let members = place(&pieces, n);
        let too_big = members.iter().any(|m| {
            let sizes = m.iter().map(|&i| pieces[i].bytes.len() + 1);
            let (size, largest) = sizes.fold((0, 0), |(s, l), b| (s + b, l.max(b)));
            size > SHARD_BYTES && size - largest > PART_TARGET_BYTES
        });
        if !too_big || n >= MAX_PARTS {
            break members;
        }
        n = (n * 2).min(MAX_PARTS);
    };
    let parts: Vec<SplitPart> = members
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let bytes = part_bytes(&pieces, m);
            let hash = match last.parts.get(i) {
                Some(before) if before.bytes == bytes => before.hash.clone(),
                _ => sha256_hex(&bytes),
            };
            SplitPart { hash, bytes }
        })
        .collect();
    last.parts.clone_from(&parts);
    Ok(SplitConfig {
        hash: config_hash(&head, &pieces),
        head,
        parts,
    })
}

/// The shard Secrets of `split` for generation `generation`: the index first, then the parts.
/// `meta(index)` gives shard `index` its identity; the generation label, the annotations and the
/// data are added here. A writer applies the parts whose [`ANNOTATION_PART_HASH`] changed, then
/// the index.
pub fn shard_secrets(split: &SplitConfig, generation: u64, meta: impl Fn(usize) -> ObjectMeta) -> Vec<Secret> {
    let secret = |index: usize, annotations: Vec<(&str, String)>, bytes: &[u8]| {
        let mut m = meta(index);
        let labels = m.labels.get_or_insert_with(BTreeMap::new);
        labels.insert(CONFIG_GENERATION.into(), generation.to_string());
        let mut a: BTreeMap<String, String> = annotations.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        a.insert(CONFIG_GENERATION.to_owned(), generation.to_string());
        m.annotations = Some(a);
        Secret {
            metadata: m,
            type_: Some("Opaque".into()),
            immutable: None,
            data: Some(BTreeMap::from([(CONFIG_KEY.to_owned(), ByteString(bytes.to_vec()))])),
            string_data: None,
        }
    };
    let hashes: Vec<&str> = split.parts.iter().map(|p| p.hash.as_str()).collect();
    let mut out = vec![secret(
        0,
        vec![
            (ANNOTATION_CONFIG_HASH, split.hash.clone()),
            (ANNOTATION_CONFIG_PARTS, hashes.join(",")),
        ],
        &split.head,
    )];
    out.extend(split.parts.iter().enumerate().map(|(i, p)| {
        secret(
            i + 1,
            vec![
                (ANNOTATION_CONFIG_PART, (i + 1).to_string()),
                (ANNOTATION_PART_HASH, p.hash.clone()),
            ],
            &p.bytes,
        )
    }));
    out
}

/// A configuration reassembled from its shards.
#[derive(Clone, Debug, PartialEq)]
pub struct AssembledConfig {
    /// The configuration.
    pub config: GatewayConfig,
    /// Its generation.
    pub generation: u64,
    /// SHA-256 (hex) of its canonical bytes, as the index announces it (every part is verified
    /// against the index).
    pub hash: String,
}

/// The parts of the last assembled generation, parsed, by the hash the index announced for
/// them: an edit rewrites the parts that hold what changed, and the next generation reuses the
/// others (their bytes compared with the bytes that were verified, not parsed or hashed again).
#[derive(Default)]
pub struct PartCache {
    parts: HashMap<String, (Vec<u8>, Arc<Part>)>,
    /// Parts parsed (not found in the cache) since it was made.
    parsed: usize,
}

impl PartCache {
    /// How many parts were parsed rather than reused.
    pub fn parsed(&self) -> usize {
        self.parsed
    }
}

/// Why the newest complete generation of shards could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// A part's bytes do not have the hash its annotation and the index announce.
    #[error("config generation {generation}: shards hash to {found}, expected {expected}")]
    HashMismatch {
        /// Generation.
        generation: u64,
        /// Announced hash.
        expected: String,
        /// Hash of the bytes.
        found: String,
    },
    /// The shards are not a configuration this gateway reads.
    #[error("config generation {generation}: {source}")]
    Invalid {
        /// Generation.
        generation: u64,
        /// Cause.
        source: crate::Error,
    },
}

/// What an index announces.
struct Index<'a> {
    generation: u64,
    hash: &'a str,
    parts: Vec<&'a str>,
    head: &'a [u8],
}

fn data(s: &Secret) -> &[u8] {
    s.data
        .as_ref()
        .and_then(|d| d.get(CONFIG_KEY))
        .map(|b| b.0.as_slice())
        .unwrap_or_default()
}

fn index(s: &Secret) -> Option<Index<'_>> {
    let a = s.metadata.annotations.as_ref()?;
    Some(Index {
        generation: a.get(CONFIG_GENERATION)?.parse().ok()?,
        hash: a.get(ANNOTATION_CONFIG_HASH)?,
        parts: split_hashes(a.get(ANNOTATION_CONFIG_PARTS)?),
        head: data(s),
    })
}

/// A part's number and what its annotation says it hashes to.
fn part(s: &Secret) -> Option<(usize, &str)> {
    let a = s.metadata.annotations.as_ref()?;
    Some((
        a.get(ANNOTATION_CONFIG_PART)?.parse().ok()?,
        a.get(ANNOTATION_PART_HASH)?,
    ))
}

/// The newest generation whose index and parts are all present (every part hashing to what the
/// index announces), joined and parsed. `Ok(None)` when no generation is complete yet (for
/// example while the operator is writing a new one, or when only shards of another format are
/// there).
pub fn assemble_config<'a>(
    secrets: impl IntoIterator<Item = &'a Secret>,
) -> Result<Option<AssembledConfig>, ShardError> {
    assemble_config_cached(secrets, &mut PartCache::default())
}

/// [`assemble_config`], reusing the parts of the last generation `cache` holds whose bytes have
/// not changed; `cache` is left holding the parts of the generation assembled (unchanged when
/// none is).
pub fn assemble_config_cached<'a>(
    secrets: impl IntoIterator<Item = &'a Secret>,
    cache: &mut PartCache,
) -> Result<Option<AssembledConfig>, ShardError> {
    let mut indexes = Vec::new();
    // Part number -> (annotated hash, bytes) of every candidate.
    let mut parts: BTreeMap<usize, Vec<(&str, &[u8])>> = BTreeMap::new();
    for s in secrets {
        if let Some(i) = index(s) {
            indexes.push(i);
        } else if let Some((n, annotated)) = part(s) {
            parts.entry(n).or_default().push((annotated, data(s)));
        }
    }
    indexes.sort_by_key(|i| std::cmp::Reverse(i.generation));
    'index: for ix in indexes {
        let generation = ix.generation;
        // By the annotations first, so a generation still being written costs no hashing.
        let mut chosen = Vec::with_capacity(ix.parts.len());
        for (n, want) in ix.parts.iter().enumerate() {
            let candidates = parts.get(&(n + 1)).map(Vec::as_slice).unwrap_or_default();
            match candidates.iter().find(|(annotated, _)| annotated == want) {
                Some((_, bytes)) => chosen.push((*want, *bytes)),
                None => continue 'index,
            }
        }
        // Then the bytes: a part that says it is this generation's but is not is corrupt. A part
        // whose bytes are those verified and parsed for the last generation is taken as it was.
        let mut known = Vec::with_capacity(chosen.len());
        for (want, bytes) in &chosen {
            let cached = cache.parts.get(*want).filter(|(seen, _)| seen.as_slice() == *bytes);
            if cached.is_none() {
                let found = sha256_hex(bytes);
                if found != *want {
                    return Err(ShardError::HashMismatch {
                        generation,
                        expected: (*want).to_owned(),
                        found,
                    });
                }
            }
            known.push(cached.map(|(_, part)| part.clone()));
        }
        let invalid = |source: crate::Error| ShardError::Invalid { generation, source };
        // The version first: another version's head may have fields this one does not know.
        let version: Version = serde_json::from_slice(ix.head).map_err(|e| invalid(e.into()))?;
        if version.version != SCHEMA_VERSION {
            return Err(invalid(crate::Error::Version {
                found: version.version,
                supported: SCHEMA_VERSION,
            }));
        }
        let head: Head = serde_json::from_slice(ix.head).map_err(|e| invalid(e.into()))?;
        let mut config = GatewayConfig {
            version: head.version,
            fleet: head.fleet,
            settings: head.settings,
            ..GatewayConfig::default()
        };
        let mut read = Vec::with_capacity(chosen.len());
        for ((want, bytes), known) in chosen.iter().zip(known) {
            let part = match known {
                Some(part) => part,
                None => {
                    let part: Part = serde_json::from_slice(bytes).map_err(|e| invalid(e.into()))?;
                    cache.parsed += 1;
                    Arc::new(part)
                }
            };
            read.push(((*want).to_owned(), bytes.to_vec(), part));
        }
        for (_, _, p) in &read {
            config.providers.extend(p.providers.iter().cloned());
            config.routes.extend(p.routes.iter().cloned());
            config.keys.extend(p.keys.iter().cloned());
            config.budgets.extend(p.budgets.iter().cloned());
        }
        cache.parts = read
            .into_iter()
            .map(|(hash, bytes, part)| (hash, (bytes, part)))
            .collect();
        // The order `GatewayConfig` documents, which the compiler gives.
        config.providers.sort_by(|a, b| a.id.cmp(&b.id));
        config
            .routes
            .sort_by(|a, b| (&a.namespace, &a.model).cmp(&(&b.namespace, &b.model)));
        config
            .keys
            .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        config
            .budgets
            .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        return Ok(Some(AssembledConfig {
            config,
            generation,
            hash: ix.hash.to_owned(),
        }));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{compile, CompileOptions, KeyHash, Manifests};

    fn key(i: usize) -> KeyConfig {
        KeyConfig {
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
        }
    }

    /// A compiled fleet of one provider and `routes` routes, with `keys` keys.
    fn config(routes: usize, keys: usize) -> GatewayConfig {
        let mut m = Manifests::default();
        m.providers.push(
            serde_json::from_value(serde_json::json!({
                "apiVersion": "switchyard.dev/v1alpha1", "kind": "Provider",
                "metadata": {"name": "mock", "namespace": "llm"},
                "spec": {"type": "mock"},
            }))
            .unwrap(),
        );
        for i in 0..routes {
            m.routes.push(
                serde_json::from_value(serde_json::json!({
                    "apiVersion": "switchyard.dev/v1alpha1", "kind": "LLMRoute",
                    "metadata": {"name": format!("route-{i:04}"), "namespace": "llm"},
                    "spec": {"model": format!("model-{i:04}"),
                             "backends": [{"providerRef": {"name": "mock"}, "model": format!("mock-{i:04}")}]},
                }))
                .unwrap(),
            );
        }
        let mut config = compile(&m, &CompileOptions::default()).config;
        assert_eq!(config.routes.len(), routes);
        config.keys = (0..keys).map(|i| Arc::new(key(i))).collect();
        config
    }

    fn shards(split: &SplitConfig, generation: u64) -> Vec<Secret> {
        shard_secrets(split, generation, |i| ObjectMeta {
            name: Some(shard_name("edge", i)),
            labels: Some(BTreeMap::from([(LABEL_FLEET.to_owned(), "edge".to_owned())])),
            ..ObjectMeta::default()
        })
    }

    fn split(config: &GatewayConfig, previous: Option<usize>) -> SplitConfig {
        split_config(config, previous).unwrap()
    }

    /// A small deterministic generator (xorshift), so a failing sequence of edits can be rerun.
    pub(crate) struct Dice(pub(crate) u64);

    impl Dice {
        pub(crate) fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            usize::try_from(self.0 % u64::try_from(n.max(1)).unwrap()).unwrap()
        }
    }

    #[test]
    fn a_split_reusing_the_last_one_is_a_split_from_scratch() {
        let mut dice = Dice(0x5eed);
        let mut config = config(40, 300);
        let mut last = LastSplit::default();
        for step in 0..60 {
            match dice.below(6) {
                0 => config.routes[dice.below(40)].backends[0].model = format!("edited-{step}"),
                1 => {
                    let n = dice.below(config.keys.len());
                    let k = Arc::make_mut(&mut config.keys[n]);
                    k.blocked = !k.blocked;
                }
                2 => {
                    let n = dice.below(config.keys.len());
                    config.keys.remove(n);
                }
                3 => {
                    let mut k = key(1000 + step);
                    k.labels.insert("team".into(), format!("t{step}"));
                    config.keys.push(Arc::new(k));
                    config
                        .keys
                        .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
                }
                4 => {
                    config.budgets = match config.budgets.is_empty() {
                        true => vec![TeamBudgetConfig {
                            namespace: "llm".into(),
                            name: "team".into(),
                            budget: serde_json::from_value(serde_json::json!({
                                "maxSpend": 10.0, "period": "monthly", "action": "block", "alertThresholds": [80]}))
                            .unwrap(),
                            keys: vec![config.keys[0].name.clone()],
                        }],
                        false => Vec::new(),
                    }
                }
                _ => config.fleet = config.fleet.is_none().then(|| format!("llm/fleet-{step}")),
            }
            let previous = (step % 7 == 3).then_some(1 + dice.below(4));
            let reused = split_config_after(&config, previous, &mut last).unwrap();
            assert_eq!(reused, split(&config, previous), "step {step}");
            assert_eq!(reused.hash, config.hash(), "step {step}");
        }
    }

    #[test]
    fn what_the_writer_splits_the_reader_assembles() {
        let big = config(300, 8_000);
        let s = split(&big, None);
        assert!(s.bytes() > 10 * PART_TARGET_BYTES);
        assert_eq!(s.parts.len(), s.bytes().div_ceil(PART_TARGET_BYTES));
        let written = shards(&s, 7);
        assert_eq!(written.len(), s.parts.len() + 1);
        for (i, w) in written.iter().enumerate() {
            assert_eq!(w.metadata.name.as_deref(), Some(shard_name("edge", i).as_str()));
            let labels = w.metadata.labels.as_ref().unwrap();
            assert_eq!(labels[LABEL_FLEET], "edge", "the writer's labels are kept");
            assert_eq!(labels[CONFIG_GENERATION], "7");
            assert!(w.data.as_ref().unwrap()[CONFIG_KEY].0.len() < SHARD_BYTES);
        }
        assert_eq!(shard_count(&written[0]), Some(written.len()));
        let a = assemble_config(written.iter().rev()).unwrap().unwrap();
        assert_eq!((a.generation, a.hash.as_str()), (7, big.hash().as_str()));
        assert_eq!(a.config, big, "the same objects in the same order");
        assert!(assemble_config(&written[1..]).unwrap().is_none(), "no index");
        assert!(
            assemble_config(&written[..written.len() - 1]).unwrap().is_none(),
            "a part is missing"
        );
        // The same configuration splits into the same bytes.
        assert_eq!(split(&big, Some(s.parts.len())), s);
    }

    #[test]
    fn an_edit_to_one_route_changes_exactly_one_part() {
        let before = config(1_000, 3_000);
        let old = split(&before, None);
        let mut after = before.clone();
        after.routes[417].backends[0].model = "mock-edited".into();
        let new = split(&after, Some(old.parts.len()));
        assert_eq!(new.parts.len(), old.parts.len());
        assert_eq!(new.head, old.head);
        let changed: Vec<usize> = (0..old.parts.len()).filter(|&i| old.parts[i] != new.parts[i]).collect();
        assert_eq!(changed.len(), 1, "{changed:?}");
        assert_ne!(new.hash, old.hash);
        // A new key lands in one part too, and the count holds.
        after.keys.push(Arc::new(key(999_999)));
        let added = split(&after, Some(new.parts.len()));
        assert_eq!(
            (0..new.parts.len()).filter(|&i| added.parts[i] != new.parts[i]).count(),
            1
        );
    }

    #[test]
    fn a_gateway_never_assembles_a_mix_of_generations() {
        let one = config(200, 2_000);
        let mut two = one.clone();
        two.routes[3].backends[0].model = "mock-edited".into();
        let (s1, s2) = (split(&one, None), split(&two, Some(split(&one, None).parts.len())));
        let (g1, g2) = (shards(&s1, 1), shards(&s2, 2));
        let edited = (1..g1.len()).find(|&i| g1[i].data != g2[i].data).unwrap();
        // The operator wrote the edited part of generation 2, not the index yet: generation 1's
        // index does not take generation 2's part.
        let mut held = g1.clone();
        held[edited] = g2[edited].clone();
        assert!(assemble_config(&held).unwrap().is_none());
        // The index of generation 2 arrived before its part: nothing complete either.
        let mut held = g1.clone();
        held[0] = g2[0].clone();
        assert!(assemble_config(&held).unwrap().is_none());
        // Generation 2's index and edited part; the other parts were written by generation 1
        // and are byte for byte generation 2's.
        held[edited] = g2[edited].clone();
        let a = assemble_config(&held).unwrap().unwrap();
        assert_eq!((a.generation, a.config), (2, two.clone()));
        // Two indexes (a test, not a watch): the newest complete one wins.
        let mut all = g1.clone();
        all.extend(g2.iter().take(1).cloned());
        assert_eq!(assemble_config(&all).unwrap().unwrap().generation, 1);
        all.push(g2[edited].clone());
        assert_eq!(assemble_config(&all).unwrap().unwrap().generation, 2);
    }

    #[test]
    fn a_part_whose_bytes_do_not_match_its_hash_is_refused() {
        let mut written = shards(&split(&config(3, 10), None), 1);
        let data = written[1].data.as_mut().unwrap();
        data.get_mut(CONFIG_KEY).unwrap().0.push(b' ');
        assert!(matches!(
            assemble_config(&written),
            Err(ShardError::HashMismatch { generation: 1, .. })
        ));
    }

    /// A gateway keeps the parts of the generation it serves, parsed: the next generation reads
    /// only the parts an edit rewrote, and assembles exactly what a fresh read would.
    #[test]
    fn the_next_generation_parses_only_the_parts_an_edit_rewrote() {
        let mut cache = PartCache::default();
        let mut config = config(300, 3_000);
        let mut s = split(&config, None);
        let parts = s.parts.len();
        let a = assemble_config_cached(&shards(&s, 1), &mut cache).unwrap().unwrap();
        assert_eq!((a.config, cache.parsed()), (config.clone(), parts));
        for generation in 2..8u64 {
            let n = generation as usize * 37;
            match generation % 3 {
                0 => config.routes[n].backends[0].model = format!("edited-{generation}"),
                1 => Arc::make_mut(&mut config.keys[n]).blocked = true,
                _ => {
                    config.keys.remove(n);
                }
            }
            let before = cache.parsed();
            s = split(&config, Some(s.parts.len()));
            let written = shards(&s, generation);
            let a = assemble_config_cached(&written, &mut cache).unwrap().unwrap();
            assert_eq!(
                a,
                assemble_config(&written).unwrap().unwrap(),
                "generation {generation}"
            );
            assert_eq!(a.config, config, "generation {generation}");
            assert_eq!(
                cache.parsed() - before,
                1,
                "generation {generation}: one part rewritten"
            );
        }
    }

    /// A part is reused only when its bytes are those verified before: a part that keeps the
    /// announced hash but whose bytes changed (a hand edit, a corrupt write) is refused as it
    /// would be without the cache, and nothing of the refused generation is kept.
    #[test]
    fn a_cached_part_whose_bytes_changed_is_verified_again() {
        let mut cache = PartCache::default();
        let s = split(&config(30, 300), None);
        let good = shards(&s, 1);
        assemble_config_cached(&good, &mut cache).unwrap().unwrap();
        let mut bad = shards(&s, 2);
        let data = bad[1].data.as_mut().unwrap();
        let bytes = &mut data.get_mut(CONFIG_KEY).unwrap().0;
        let at = bytes.iter().position(|b| *b == b'x').unwrap();
        bytes[at] = b'y';
        assert!(matches!(
            assemble_config_cached(&bad, &mut cache),
            Err(ShardError::HashMismatch { generation: 2, .. })
        ));
        // The good generation still reads from the cache as it was.
        let parsed = cache.parsed();
        assemble_config_cached(&good, &mut cache).unwrap().unwrap();
        assert_eq!(cache.parsed(), parsed);
    }

    #[test]
    fn a_config_of_another_schema_version_is_refused() {
        let mut newer = config(1, 1);
        newer.version = SCHEMA_VERSION + 1;
        assert!(matches!(
            assemble_config(&shards(&split(&newer, None), 3)),
            Err(ShardError::Invalid {
                generation: 3,
                source: crate::Error::Version { .. }
            })
        ));
    }

    #[test]
    fn shards_of_the_byte_chunk_format_are_not_read() {
        // What an operator before the index wrote: byte chunks, the count on every shard.
        let old = Secret {
            metadata: ObjectMeta {
                name: Some(shard_name("edge", 0)),
                annotations: Some(BTreeMap::from([
                    (CONFIG_GENERATION.to_owned(), "4".to_owned()),
                    ("switchyard.dev/config-shard".to_owned(), "0".to_owned()),
                    ("switchyard.dev/config-shards".to_owned(), "1".to_owned()),
                    (ANNOTATION_CONFIG_HASH.to_owned(), config(1, 1).hash()),
                ])),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([(
                CONFIG_KEY.to_owned(),
                ByteString(config(1, 1).to_bytes().unwrap()),
            )])),
            ..Secret::default()
        };
        assert_eq!(shard_count(&old), None);
        assert!(assemble_config([&old]).unwrap().is_none());
    }

    #[test]
    fn the_part_count_follows_the_size_and_sticks_near_it() {
        assert_eq!(part_count(0, None), 1);
        assert_eq!(part_count(10 * PART_TARGET_BYTES, None), 10);
        assert_eq!(part_count(10 * PART_TARGET_BYTES + 1, None), 11);
        assert_eq!(
            part_count(12 * PART_TARGET_BYTES, Some(10)),
            10,
            "a little growth keeps the parts"
        );
        assert_eq!(part_count(8 * PART_TARGET_BYTES, Some(10)), 10);
        assert_eq!(part_count(30 * PART_TARGET_BYTES, Some(10)), 30, "far off: resized");
        assert_eq!(part_count(PART_TARGET_BYTES, Some(10)), 1);
        assert_eq!(part_count(usize::MAX, None), MAX_PARTS);
        assert_eq!(part_count(PART_TARGET_BYTES, Some(MAX_PARTS + 1)), 1);
    }

    #[test]
    fn one_large_object_gets_a_part_without_splitting_the_rest_thin() {
        let mut c = config(10, 3_000);
        Arc::make_mut(&mut c.keys[5])
            .labels
            .insert("blob".into(), "x".repeat(700_000));
        let s = split(&c, None);
        let total = s.bytes();
        assert!(
            s.parts.len() <= 2 * total.div_ceil(PART_TARGET_BYTES),
            "{} parts",
            s.parts.len()
        );
        let largest = s.parts.iter().map(|p| p.bytes.len()).max().unwrap();
        assert!(largest > 700_000 && largest < 700_000 + PART_TARGET_BYTES, "{largest}");
        let a = assemble_config(&shards(&s, 1)).unwrap().unwrap();
        assert_eq!(a.config, c);
    }

    #[test]
    fn the_selector_names_the_fleet_and_the_generation_label() {
        assert_eq!(
            shard_selector("edge"),
            "switchyard.dev/fleet=edge,switchyard.dev/config-generation"
        );
    }
}
