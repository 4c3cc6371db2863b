//! A `GatewayConfig` indexed for the hot path: keys by hash, routes by (namespace, model),
//! providers by id. Built once per config swap; requests hold an `Arc` to the one they started
//! with, so a reload never changes a request in flight.
//!
//! A pure index: it holds the config and lookups into it, no state of the requests it serves
//! (balancing state is the routing's, limits the shared state's), and it depends on no other
//! part of the gateway but its error type.

use std::collections::{HashMap, VecDeque};

use rustc_hash::FxHashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use switchyard_config::{GatewayConfig, KeyConfig, Price, ProviderConfig, RouteConfig, RouteMode, MAX_FALLBACK_DEPTH};
use switchyard_providers::Operation;

use crate::budget::TeamBudget;
use crate::error::GatewayError;
use crate::metrics::RouteMetrics;

/// Whether a route in `mode` serves `op`: chat routes serve chat, responses and completions;
/// completion routes completions; embedding routes embeddings; moderation routes moderations;
/// rerank routes rerank; image generation routes images; audio transcription routes
/// transcriptions and translations; audio speech routes speech.
pub fn serves(mode: RouteMode, op: Operation) -> bool {
    matches!(
        (op, mode),
        (Operation::Chat | Operation::Responses, RouteMode::Chat)
            | (Operation::Embeddings, RouteMode::Embeddings)
            | (Operation::Completions, RouteMode::Completions | RouteMode::Chat)
            | (Operation::Moderations, RouteMode::Moderation)
            | (Operation::Rerank, RouteMode::Rerank)
            | (Operation::Images, RouteMode::ImageGeneration)
            | (
                Operation::Transcriptions | Operation::Translations,
                RouteMode::AudioTranscription
            )
            | (Operation::Speech, RouteMode::AudioSpeech)
    )
}

/// A route of the config.
#[derive(Debug)]
pub struct Route {
    /// The route's config.
    pub config: RouteConfig,
    /// `namespace/model`: the route's name in metrics, logs and headers, written once.
    pub id: Arc<str>,
    /// Its position in the config's routes (state kept per route, such as balancing, is kept
    /// by this index).
    pub index: usize,
    /// Every priced backend a request to this route can reach: its own, its rules' target
    /// routes' and its fallbacks' (transitively, at most `MAX_FALLBACK_DEPTH` fallback levels),
    /// as (price, output limit), deduplicated. A budget reserves the dearest of them.
    pub reachable: Vec<(Price, Option<u32>)>,
    /// Its metric handles, made on first use.
    pub metrics: Arc<RouteMetrics>,
    /// Its backends' names, in the config's order: a request's labels share them.
    pub backend_names: Vec<Arc<str>>,
}

impl Route {
    /// A route of the config, at `index` in its routes.
    pub fn new(config: RouteConfig, index: usize, reachable: Vec<(Price, Option<u32>)>) -> Self {
        let id: Arc<str> = format!("{}/{}", config.namespace, config.model).into();
        Self {
            metrics: Arc::new(RouteMetrics::new(id.clone(), config.backends.len())),
            backend_names: config.backends.iter().map(|b| Arc::from(b.name.as_str())).collect(),
            id,
            config,
            index,
            reachable,
        }
    }
}

/// A key and the hashes that authenticate it.
#[derive(Debug)]
pub struct Key {
    /// The key's config, shared with the `GatewayConfig` it came from (its hashes are read
    /// when the key is made: see `digests`).
    pub config: Arc<KeyConfig>,
    /// Team label, for metrics.
    pub team: Arc<str>,
    /// `namespace/name`, for messages and alerts.
    pub id: Arc<str>,
    /// Its scope in the shared state (`k:namespace/name`): limits and spend follow the
    /// VirtualKey across key rotations and config reloads.
    pub scope: String,
    /// The Budgets over groups of keys that cover this key: a request is admitted only when
    /// each of them has room too (`limits::admit`).
    pub budgets: Vec<Arc<TeamBudget>>,
    /// Its hashes' SHA-256 digests with the time each is valid until, decoded once here (for
    /// the index and every request's constant-time compare) rather than on every request.
    digests: Vec<([u8; 32], Option<i64>)>,
}

impl Key {
    /// A key from its config.
    pub fn new(config: impl Into<Arc<KeyConfig>>) -> Self {
        let config = config.into();
        let id = format!("{}/{}", config.namespace, config.name);
        let digests = config
            .hashes
            .iter()
            .filter_map(|h| Some((digest(&h.sha256)?, h.not_after)))
            .collect();
        Self {
            team: config.labels.get("team").map_or("", String::as_str).into(),
            scope: switchyard_config::shared_state::key_scope(&config.namespace, &config.name),
            id: id.into(),
            config,
            budgets: Vec::new(),
            digests,
        }
    }

    /// Whether the key may use `route`: one it can see (of its own namespace, or shared with it)
    /// that its `allowedRoutes` name, by model name or alias (empty allows every route it can
    /// see). Checked for the requested route and again for every rule target and fallback the
    /// request is sent on to, so a shared route's fallback that is not shared is skipped.
    pub fn allows(&self, route: &RouteConfig) -> bool {
        let own = &self.config.namespace;
        let visible = route.namespace == *own || route.shared_with.iter().any(|s| s == own || s == "*");
        visible
            && (self.config.allowed_routes.is_empty()
                || self.config.allowed_routes.iter().any(|a| {
                    let (ans, aname) = a.split_once('/').unwrap_or((own.as_str(), a.as_str()));
                    (ans == route.namespace && (aname == route.model || route.aliases.iter().any(|x| x == aname)))
                        || names_wildcard(a, own, route)
                }))
    }
}

/// A stored key hash (hex SHA-256) as bytes; `None` when it is not one.
fn digest(sha256_hex: &str) -> Option<[u8; 32]> {
    let mut raw = [0u8; 32];
    hex::decode_to_slice(sha256_hex, &mut raw).ok().map(|_| raw)
}

/// Whether an allowed-routes entry names the wildcard route `route` of the key's namespace as
/// it is written (`openai/*` holds a `/` without naming a namespace).
fn names_wildcard(entry: &str, own: &str, route: &RouteConfig) -> bool {
    route.namespace == own && entry == route.model && route.wildcard_prefix().is_some()
}

/// The priced backends reachable from each route (see [`Route::reachable`]): rule targets cost
/// no fallback level, fallbacks one each, at most [`MAX_FALLBACK_DEPTH`].
fn reachable(routes: &[RouteConfig]) -> Vec<Vec<(Price, Option<u32>)>> {
    let mut by_name: HashMap<(&str, &str), usize> = HashMap::new();
    for (i, r) in routes.iter().enumerate() {
        for name in std::iter::once(&r.model).chain(r.aliases.iter()) {
            by_name.entry((r.namespace.as_str(), name.as_str())).or_insert(i);
        }
    }
    let target = |from: usize, name: &str| by_name.get(&(routes[from].namespace.as_str(), name)).copied();
    (0..routes.len())
        .map(|start| {
            // 0-1 breadth first: the fewest fallback levels each route is reached at.
            let mut depth = vec![usize::MAX; routes.len()];
            let mut queue = VecDeque::from([start]);
            depth[start] = 0;
            while let Some(i) = queue.pop_front() {
                let d = depth[i];
                for t in routes[i].rules.iter().filter_map(|r| r.route.as_deref()) {
                    if let Some(j) = target(i, t).filter(|j| depth[*j] > d) {
                        depth[j] = d;
                        queue.push_front(j);
                    }
                }
                if d >= MAX_FALLBACK_DEPTH {
                    continue;
                }
                for fb in &routes[i].fallbacks {
                    if let Some(j) = target(i, &fb.route).filter(|j| depth[*j] > d + 1) {
                        depth[j] = d + 1;
                        queue.push_back(j);
                    }
                }
            }
            let mut out: Vec<(Price, Option<u32>)> = Vec::new();
            for (_, r) in routes.iter().enumerate().filter(|(i, _)| depth[*i] != usize::MAX) {
                for b in &r.backends {
                    if let Some(p) = b.price {
                        if !out.contains(&(p, b.max_output_tokens)) {
                            out.push((p, b.max_output_tokens));
                        }
                    }
                }
            }
            out
        })
        .collect()
}

/// How many models' concrete routes a wildcard route keeps (the least used are dropped first).
const MADE_PER_WILDCARD: u64 = 1_000;

/// A wildcard route, and the concrete routes made of it for the models clients asked for.
struct Wildcard {
    route: Arc<Route>,
    /// By the model's suffix (after the wildcard's prefix): a model's route (its config copy,
    /// prices and metric handles) is made on its first request, not on every one. The names come
    /// from clients, so the cache is bounded and hashes with moka's keyed hasher; it lives and
    /// is dropped with this runtime, so a reload remakes each from the new config.
    made: moka::sync::Cache<String, Made>,
}

/// A wildcard route made concrete for one model.
#[derive(Clone)]
struct Made {
    route: Arc<Route>,
    /// The first backend that serves the model with no known price, if any: see [`concrete`].
    unpriced: Option<Arc<str>>,
}

/// Numbers runtimes in the order they are built.
static BUILT: AtomicU64 = AtomicU64::new(1);

/// The indexed config.
pub struct Runtime {
    /// Which index this is: unique in the process, larger for a runtime built later (state kept
    /// per config generation is kept by it).
    pub id: u64,
    /// The config.
    pub config: GatewayConfig,
    /// Its content hash.
    pub hash: String,
    /// The generation the control plane gave it.
    pub generation: u64,
    /// Routes by namespace, then model name or alias: looked up with the request's `&str`s,
    /// without building a key. These maps hash with FxHash (not keyed, but a third of SipHash's
    /// cost): what they hold comes from the config alone, so a client cannot fill them with keys
    /// that collide. Maps a client's text can add to (wildcard models in cooldowns, meters and
    /// URLs) keep the standard keyed hasher.
    routes: FxHashMap<String, FxHashMap<String, Arc<Route>>>,
    /// Wildcard routes (`openai/*`), longest prefix first: asked only when no route has the
    /// model's exact name.
    wildcards: Vec<Wildcard>,
    keys: FxHashMap<[u8; 32], (Arc<Key>, Option<i64>)>,
    providers: FxHashMap<String, Arc<ProviderConfig>>,
}

impl Runtime {
    /// Indexes a config.
    pub fn new(config: GatewayConfig, generation: u64) -> Self {
        let hash = config.hash();
        Self::with_hash(config, hash, generation)
    }

    /// Indexes a config whose [`GatewayConfig::hash`] is `hash`.
    pub fn with_hash(config: GatewayConfig, hash: String, generation: u64) -> Self {
        let mut routes: FxHashMap<String, FxHashMap<String, Arc<Route>>> = FxHashMap::default();
        let mut wildcards = Vec::new();
        let mut reach = reachable(&config.routes).into_iter();
        for (index, r) in config.routes.iter().enumerate() {
            let route = Arc::new(Route::new(r.clone(), index, reach.next().unwrap_or_default()));
            if r.wildcard_prefix().is_some() {
                wildcards.push(Wildcard {
                    route,
                    made: moka::sync::Cache::new(MADE_PER_WILDCARD),
                });
                continue;
            }
            for name in std::iter::once(&r.model).chain(r.aliases.iter()) {
                routes
                    .entry(r.namespace.clone())
                    .or_default()
                    .insert(name.clone(), route.clone());
            }
        }
        let mut covering: HashMap<(&str, &str), Vec<Arc<TeamBudget>>> = HashMap::new();
        for b in &config.budgets {
            let budget = Arc::new(TeamBudget::new(b.clone()));
            for k in &b.keys {
                covering
                    .entry((b.namespace.as_str(), k.as_str()))
                    .or_default()
                    .push(budget.clone());
            }
        }
        let mut keys = FxHashMap::default();
        for k in &config.keys {
            let key = Arc::new(Key {
                budgets: covering
                    .remove(&(k.namespace.as_str(), k.name.as_str()))
                    .unwrap_or_default(),
                ..Key::new(k.clone())
            });
            for &(raw, not_after) in &key.digests {
                keys.insert(raw, (key.clone(), not_after));
            }
        }
        wildcards.sort_by_key(|w: &Wildcard| std::cmp::Reverse(w.route.config.model.len()));
        let providers = config
            .providers
            .iter()
            .map(|p| (p.id.clone(), Arc::new(p.clone())))
            .collect();
        Self {
            id: BUILT.fetch_add(1, Ordering::Relaxed),
            config,
            hash,
            generation,
            routes,
            wildcards,
            keys,
            providers,
        }
    }

    /// Authenticates a presented key value.
    pub fn authenticate(&self, presented: &str, now_unix: i64) -> Result<Arc<Key>, GatewayError> {
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let Some((key, not_after)) = self.keys.get(&presented) else {
            return Err(GatewayError::unauthorized("Incorrect API key provided."));
        };
        // The map lookup found the candidate by hash; compare the full digest in constant time
        // so timing reveals nothing about how much of a hash matched.
        let stored = key
            .digests
            .iter()
            .fold(0u8, |acc, (raw, _)| acc | raw.ct_eq(&presented).unwrap_u8());
        if stored != 1 {
            return Err(GatewayError::unauthorized("Incorrect API key provided."));
        }
        if not_after.is_some_and(|t| now_unix > t) {
            return Err(GatewayError::unauthorized(
                "This API key was rotated and its grace period has ended.",
            ));
        }
        if key.config.blocked {
            return Err(GatewayError::unauthorized("This API key is blocked."));
        }
        if key.config.expires_at.is_some_and(|t| now_unix >= t) {
            return Err(GatewayError::unauthorized("This API key has expired."));
        }
        Ok(key.clone())
    }

    /// The route a key reaches with a `model` name: its own namespace's, or
    /// `namespace/model` when that namespace shares it.
    pub fn route_for(&self, key: &Key, model: &str) -> Result<Arc<Route>, GatewayError> {
        let own = &key.config.namespace;
        let (ns, name, qualified) = match model.split_once('/') {
            Some((ns, name)) if self.route(ns, name).is_some() => (ns, name, true),
            _ => (own.as_str(), model, false),
        };
        let Some(route) = self.route(ns, name) else {
            return self.wildcard_for(key, model);
        };
        if qualified && ns != own && !route.config.shared_with.iter().any(|s| s == own || s == "*") {
            return Err(GatewayError::model_not_found(model));
        }
        if !key.allows(&route.config) {
            return Err(GatewayError::forbidden(format!(
                "This API key is not allowed to use model `{model}`."
            )));
        }
        Ok(route.clone())
    }

    /// The wildcard route serving `model` (the key's namespace's, else a shared one addressed as
    /// `namespace/model`), made concrete for it: see [`concrete`].
    fn wildcard_for(&self, key: &Key, model: &str) -> Result<Arc<Route>, GatewayError> {
        let own = key.config.namespace.as_str();
        let mut asked = vec![(own, model, false)];
        if let Some((ns, name)) = model.split_once('/').filter(|(ns, _)| *ns != own) {
            asked.push((ns, name, true));
        }
        for (ns, name, qualified) in asked {
            let found = self.wildcards.iter().find_map(|w| {
                let prefix = w.route.config.wildcard_prefix()?;
                let suffix = name.strip_prefix(prefix)?;
                (w.route.config.namespace == ns && !suffix.is_empty() && !suffix.contains('*')).then_some((w, suffix))
            });
            let Some((Wildcard { route: wild, made }, suffix)) = found else {
                continue;
            };
            if qualified && !wild.config.shared_with.iter().any(|s| s == own || s == "*") {
                continue;
            }
            let named = key.config.allowed_routes.iter().any(|a| a == model);
            if !named && !key.allows(&wild.config) {
                return Err(GatewayError::forbidden(format!(
                    "This API key is not allowed to use model `{model}`."
                )));
            }
            // One lookup; concurrent first requests for a model make its route once.
            let made = made.get_with_by_ref(suffix, || concrete(self, wild, suffix));
            if let (Some(backend), Some(_)) = (&made.unpriced, &key.config.budget) {
                return Err(GatewayError::bad_request(
                    format!(
                        "model `{model}` has no known price, and this API key has a budget: the wildcard route `{}` \
                         serves it on backend `{backend}` only with a `pricing` for it",
                        wild.config.model
                    ),
                    Some("model"),
                ));
            }
            return Ok(made.route);
        }
        Err(GatewayError::model_not_found(model))
    }

    /// Routes a key may use, as clients name them.
    pub fn models_for(&self, key: &Key) -> Vec<String> {
        let own = &key.config.namespace;
        let mut out: Vec<String> = self
            .config
            .routes
            .iter()
            .filter_map(|r| {
                let name = if &r.namespace == own {
                    r.model.clone()
                } else if r.shared_with.iter().any(|s| s == own || s == "*") {
                    format!("{}/{}", r.namespace, r.model)
                } else {
                    return None;
                };
                let allowed = key.config.allowed_routes.is_empty()
                    || key.config.allowed_routes.iter().any(|a| {
                        let (ans, aname) = a.split_once('/').unwrap_or((own.as_str(), a.as_str()));
                        (ans == r.namespace && aname == r.model) || names_wildcard(a, own, r)
                    });
                allowed.then_some(name)
            })
            .collect();
        out.sort();
        out
    }

    /// A provider by id.
    pub fn provider(&self, id: &str) -> Option<&Arc<ProviderConfig>> {
        self.providers.get(id)
    }

    /// A route by namespace and model name (or alias), for fallbacks and rule targets.
    pub fn route(&self, namespace: &str, model: &str) -> Option<&Arc<Route>> {
        self.routes.get(namespace)?.get(model)
    }
}

/// A wildcard route made concrete for one model: each backend whose model ends in `*` gets the
/// client's `suffix` in its place, and the price, context window and output limit of that model
/// (the backend's own `pricing` first, else the built-in table by the provider's type), which
/// the budget reservation then counts among the route's reachable prices. Balancing, cooldowns
/// and quotas stay the wildcard route's (same index, same backend names). A model no price is
/// known for is refused to keys with a budget to keep (it could not be reserved nor charged):
/// the first backend serving it unpriced is noted for that.
fn concrete(rt: &Runtime, wild: &Route, suffix: &str) -> Made {
    let mut config = wild.config.clone();
    let mut reachable = wild.reachable.clone();
    let mut unpriced = None;
    for b in config.backends.iter_mut().filter(|b| b.model.ends_with('*')) {
        b.model = switchyard_config::fill_wildcard(&b.model, suffix);
        let info = rt
            .provider(&b.provider)
            .and_then(|p| switchyard_config::prices::lookup_for(p.kind, &b.model));
        b.price = b.price.or(info.map(|i| i.price));
        b.context_window = b.context_window.or(info.map(|i| i.context_window).filter(|c| *c > 0));
        b.max_output_tokens = b.max_output_tokens.or(info.map(|i| i.max_output).filter(|m| *m > 0));
        match b.price {
            Some(p) if !reachable.contains(&(p, b.max_output_tokens)) => reachable.push((p, b.max_output_tokens)),
            Some(_) => {}
            None => {
                unpriced.get_or_insert_with(|| Arc::from(b.name.as_str()));
            }
        }
    }
    Made {
        route: Arc::new(Route::new(config, wild.index, reachable)),
        unpriced,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_config::*;

    #[test]
    fn modes_serve_their_operations() {
        assert!(serves(RouteMode::Chat, Operation::Chat));
        assert!(serves(RouteMode::Chat, Operation::Responses));
        assert!(serves(RouteMode::Chat, Operation::Completions));
        assert!(!serves(RouteMode::Chat, Operation::Embeddings));
        assert!(serves(RouteMode::Completions, Operation::Completions));
        assert!(!serves(RouteMode::Completions, Operation::Chat));
        assert!(serves(RouteMode::Embeddings, Operation::Embeddings));
        assert!(!serves(RouteMode::Embeddings, Operation::Chat));
    }

    #[test]
    fn routes_are_found_by_model_and_alias() {
        let mut route = tenant_route("default", "chat", &[]);
        route.aliases = vec!["chat-alias".into()];
        let cfg = GatewayConfig {
            version: SCHEMA_VERSION,
            routes: vec![route],
            ..Default::default()
        };
        let rt = Runtime::new(cfg, 1);
        let by_model = rt.route("default", "chat").map(Arc::as_ptr);
        assert!(by_model.is_some());
        assert_eq!(rt.route("default", "chat-alias").map(Arc::as_ptr), by_model);
        assert!(rt.route("other", "chat").is_none());
    }

    #[test]
    fn keys_authenticate_by_hash() {
        let mut cfg = GatewayConfig {
            version: SCHEMA_VERSION,
            ..Default::default()
        };
        cfg.keys.push(Arc::new(KeyConfig {
            namespace: "default".into(),
            name: "k".into(),
            hashes: vec![KeyHash {
                sha256: hash_key("sk-good"),
                not_after: None,
            }],
            allowed_routes: vec![],
            allowed_passthrough: Vec::new(),
            limits: LimitsConfig::default(),
            budget: None,
            expires_at: Some(1_000),
            blocked: false,
            labels: Default::default(),
        }));
        let rt = Runtime::new(cfg, 1);
        assert!(rt.authenticate("sk-good", 999).is_ok());
        assert_eq!(rt.authenticate("sk-good", 1_000).unwrap_err().status, 401);
        assert_eq!(rt.authenticate("sk-bad", 0).unwrap_err().status, 401);
    }

    fn tenant_route(ns: &str, model: &str, shared_with: &[&str]) -> RouteConfig {
        serde_json::from_value(serde_json::json!({
            "namespace": ns, "name": model, "model": model, "mode": "chat", "strategy": "weighted",
            "retries": {"attempts": 0, "backoffMs": 1, "maxBackoffMs": 1, "on": []},
            "backends": [{"name": "b", "provider": format!("{ns}/p"), "model": "m", "weight": 1, "priority": 0}],
            "sharedWith": shared_with,
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn tenant_key(ns: &str, name: &str, allowed: &[&str]) -> KeyConfig {
        KeyConfig {
            namespace: ns.into(),
            name: name.into(),
            hashes: vec![KeyHash {
                sha256: hash_key(&format!("sk-{ns}-{name}")),
                not_after: None,
            }],
            allowed_routes: allowed.iter().map(|a| a.to_string()).collect(),
            allowed_passthrough: Vec::new(),
            limits: LimitsConfig::default(),
            budget: None,
            expires_at: None,
            blocked: false,
            labels: Default::default(),
        }
    }

    #[test]
    fn tenants_reach_their_own_routes_and_what_others_share() {
        let cfg = GatewayConfig {
            version: SCHEMA_VERSION,
            routes: vec![
                tenant_route("team-a", "gpt-4o", &[]),
                tenant_route("team-b", "gpt-4o", &[]),
                tenant_route("team-b", "shared", &["team-a"]),
                tenant_route("team-c", "public", &["*"]),
            ],
            keys: vec![
                tenant_key("team-a", "alice", &[]).into(),
                tenant_key("team-a", "narrow", &["gpt-4o"]).into(),
                tenant_key("team-b", "bob", &[]).into(),
            ],
            ..Default::default()
        };
        let rt = Runtime::new(cfg, 1);
        let alice = rt.authenticate("sk-team-a-alice", 0).unwrap_or_else(|e| panic!("{e}"));
        let bob = rt.authenticate("sk-team-b-bob", 0).unwrap_or_else(|e| panic!("{e}"));
        let ns =
            |r: Result<Arc<Route>, GatewayError>| r.map(|r| r.config.namespace.clone()).map_err(|e| e.status.as_u16());

        // The same model name is two routes: each key reaches its own namespace's.
        assert_eq!(ns(rt.route_for(&alice, "gpt-4o")), Ok("team-a".into()));
        assert_eq!(ns(rt.route_for(&bob, "gpt-4o")), Ok("team-b".into()));
        assert_eq!(ns(rt.route_for(&alice, "team-a/gpt-4o")), Ok("team-a".into()));
        // Another tenant's route only when shared, and only as `namespace/model`.
        assert_eq!(ns(rt.route_for(&alice, "team-b/gpt-4o")), Err(404));
        assert_eq!(ns(rt.route_for(&alice, "team-b/shared")), Ok("team-b".into()));
        assert_eq!(ns(rt.route_for(&alice, "shared")), Err(404));
        assert_eq!(ns(rt.route_for(&alice, "team-c/public")), Ok("team-c".into()));
        assert_eq!(ns(rt.route_for(&bob, "team-a/gpt-4o")), Err(404));
        assert_eq!(rt.models_for(&alice), vec!["gpt-4o", "team-b/shared", "team-c/public"]);
        assert_eq!(rt.models_for(&bob), vec!["gpt-4o", "shared", "team-c/public"]);

        // Allowed routes narrow further: others are 403 and absent from /v1/models.
        let narrow = rt.authenticate("sk-team-a-narrow", 0).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ns(rt.route_for(&narrow, "gpt-4o")), Ok("team-a".into()));
        assert_eq!(ns(rt.route_for(&narrow, "team-b/shared")), Err(403));
        assert_eq!(rt.models_for(&narrow), vec!["gpt-4o"]);
        assert_eq!((&*alice.id, alice.scope.as_str()), ("team-a/alice", "k:team-a/alice"));
    }

    /// `openai/*` serves any `openai/<model>` the exact routes do not; the suffix reaches the
    /// backend, priced from the table for the budget; keys allowed the pattern or the model
    /// pass, others are refused.
    #[test]
    fn wildcard_routes_serve_the_suffix_by_the_longest_prefix() {
        let provider: ProviderConfig = serde_json::from_value(serde_json::json!({
            "id": "default/p", "kind": "openai", "baseUrl": "http://x/v1",
            "timeouts": {"connectMs": 1, "requestMs": 1, "streamIdleMs": 1},
            "circuitBreaker": {"consecutiveFailures": 1, "cooldownMs": 1},
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let wild = |model: &str, backend: &str| {
            let mut r = tenant_route("default", model, &[]);
            r.backends[0].model = backend.into();
            r
        };
        let mut shared = wild("team/*", "*");
        shared.namespace = "team-b".into();
        shared.shared_with = vec!["default".into()];
        let mut budgeted = tenant_key("default", "budgeted", &[]);
        budgeted.budget = Some(
            serde_json::from_value(
                serde_json::json!({"maxSpend": 1.0, "period": "monthly", "action": "block", "alertThresholds": []}),
            )
            .unwrap_or_else(|e| panic!("{e}")),
        );
        let cfg = GatewayConfig {
            version: SCHEMA_VERSION,
            providers: vec![provider],
            routes: vec![
                wild("openai/*", "*"),
                wild("openai/gpt-4o-*", "fixed-*"),
                tenant_route("default", "openai/exact", &[]),
                shared,
            ],
            keys: vec![
                tenant_key("default", "all", &[]).into(),
                tenant_key("default", "pattern", &["openai/*"]).into(),
                tenant_key("default", "one", &["openai/gpt-4o"]).into(),
                tenant_key("default", "other", &["chat"]).into(),
                budgeted.into(),
            ],
            ..Default::default()
        };
        let rt = Runtime::new(cfg, 1);
        let key = |name: &str| {
            rt.authenticate(&format!("sk-default-{name}"), 0)
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let served = |k: &str, model: &str| {
            rt.route_for(&key(k), model)
                .map(|r| (r.config.model.clone(), r.config.backends[0].model.clone()))
                .map_err(|e| e.status.as_u16())
        };
        let all = "all";
        assert_eq!(served(all, "openai/gpt-4o"), Ok(("openai/*".into(), "gpt-4o".into())));
        // The longest prefix wins; an exact route wins over both.
        assert_eq!(
            served(all, "openai/gpt-4o-mini"),
            Ok(("openai/gpt-4o-*".into(), "fixed-mini".into()))
        );
        assert_eq!(served(all, "openai/exact"), Ok(("openai/exact".into(), "m".into())));
        // Nothing after the prefix, or another `*`, is no model.
        assert_eq!(served(all, "openai/"), Err(404));
        assert_eq!(served(all, "openai/*"), Err(404));
        assert_eq!(served(all, "anthropic/claude"), Err(404));
        // A shared wildcard is reached as `namespace/model`.
        assert_eq!(served(all, "team-b/team/x"), Ok(("team/*".into(), "x".into())));
        // Allowed routes: the pattern as written, or the model itself.
        assert_eq!(served("pattern", "openai/gpt-4o").map(|r| r.1), Ok("gpt-4o".into()));
        assert_eq!(served("one", "openai/gpt-4o").map(|r| r.1), Ok("gpt-4o".into()));
        assert_eq!(served("one", "openai/gpt-4.1"), Err(403));
        assert_eq!(served("other", "openai/gpt-4o"), Err(403));
        assert_eq!(rt.models_for(&key("pattern")), vec!["openai/*"]);
        // The concrete model is priced from the table, and the reservation counts that price.
        let route = rt
            .route_for(&key(all), "openai/gpt-4o")
            .unwrap_or_else(|e| panic!("{e}"));
        let price = route.config.backends[0]
            .price
            .unwrap_or_else(|| panic!("gpt-4o is priced"));
        assert_eq!((price.input, price.output), (2.5, 10.0));
        assert!(route.reachable.iter().any(|(p, _)| *p == price));
        assert_eq!(
            route.index, rt.wildcards[1].route.index,
            "state stays the wildcard route's"
        );
        // A key with a budget cannot use a model nobody priced.
        assert!(served(all, "openai/no-such-model-xyz").is_ok());
        assert_eq!(served("budgeted", "openai/no-such-model-xyz"), Err(400));
        assert!(served("budgeted", "openai/gpt-4o").is_ok());

        // A model's route is made once and then served from the wildcard's cache, whoever asks
        // (the budget check is the asking key's); a client naming ever new models (random
        // names, say) fills the cache no further than its bound, and each is still served.
        let made = |k: &str, model: &str| rt.route_for(&key(k), model).unwrap_or_else(|e| panic!("{e}"));
        let first = made(all, "openai/gpt-4o");
        assert!(Arc::ptr_eq(&first, &made("pattern", "openai/gpt-4o")));
        assert!(!Arc::ptr_eq(&first, &made(all, "openai/gpt-4.1")));
        for i in 0..3 * MADE_PER_WILDCARD {
            let model = format!("openai/random-{i}");
            assert_eq!(served(all, &model).map(|r| r.1), Ok(format!("random-{i}")));
        }
        let cache = &rt.wildcards[1].made;
        cache.run_pending_tasks();
        assert!(cache.entry_count() <= MADE_PER_WILDCARD, "{} kept", cache.entry_count());
        assert_eq!(served("budgeted", "openai/random-7"), Err(400));
        // A new runtime (a reload) makes its own.
        let reloaded = Runtime::new(rt.config.clone(), 2);
        let again = reloaded
            .route_for(
                &reloaded
                    .authenticate("sk-default-all", 0)
                    .unwrap_or_else(|e| panic!("{e}")),
                "openai/gpt-4o",
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!Arc::ptr_eq(&first, &again));
    }

    #[test]
    fn blocked_and_rotated_keys_are_refused() {
        let mut blocked = tenant_key("default", "blocked", &[]);
        blocked.blocked = true;
        let mut rotated = tenant_key("default", "rotated", &[]);
        rotated.hashes.push(KeyHash {
            sha256: hash_key("sk-old"),
            not_after: Some(100),
        });
        let rt = Runtime::new(
            GatewayConfig {
                version: SCHEMA_VERSION,
                keys: vec![blocked.into(), rotated.into()],
                ..Default::default()
            },
            1,
        );
        assert_eq!(
            rt.authenticate("sk-default-blocked", 0)
                .map(|_| ())
                .map_err(|e| e.status.as_u16()),
            Err(401)
        );
        assert!(rt.authenticate("sk-old", 100).is_ok());
        assert!(rt.authenticate("sk-default-rotated", 101).is_ok());
        assert_eq!(
            rt.authenticate("sk-old", 101)
                .map(|_| ())
                .map_err(|e| e.status.as_u16()),
            Err(401)
        );
    }
}
