//! A `GatewayConfig` indexed for the hot path: keys by hash, routes by (namespace, model),
//! providers by id. Built once per config swap; requests hold an `Arc` to the one they started
//! with, so a reload never changes a request in flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use switchyard_config::{BackendConfig, GatewayConfig, KeyConfig, ProviderConfig, RouteConfig};

use crate::error::GatewayError;

/// A route and its balancing state.
pub struct Route {
    /// The route's config.
    pub config: RouteConfig,
    /// Smooth weighted round-robin state, one slot per backend.
    wrr: Mutex<Vec<i64>>,
}

/// A key and the hashes that authenticate it.
#[derive(Debug)]
pub struct Key {
    /// The key's config.
    pub config: KeyConfig,
    /// Team label, for metrics.
    pub team: String,
}

/// The indexed config.
pub struct Runtime {
    /// The config.
    pub config: GatewayConfig,
    /// Its content hash.
    pub hash: String,
    /// The generation the control plane gave it.
    pub generation: u64,
    routes: HashMap<(String, String), Arc<Route>>,
    keys: HashMap<[u8; 32], (Arc<Key>, Option<i64>)>,
    providers: HashMap<String, Arc<ProviderConfig>>,
}

impl Runtime {
    /// Indexes a config.
    pub fn new(config: GatewayConfig, generation: u64) -> Self {
        let hash = config.hash();
        let mut routes = HashMap::new();
        for r in &config.routes {
            let route = Arc::new(Route {
                wrr: Mutex::new(vec![0; r.backends.len()]),
                config: r.clone(),
            });
            for name in std::iter::once(&r.model).chain(r.aliases.iter()) {
                routes.insert((r.namespace.clone(), name.clone()), route.clone());
            }
        }
        let mut keys = HashMap::new();
        for k in &config.keys {
            let key = Arc::new(Key {
                team: k.labels.get("team").cloned().unwrap_or_default(),
                config: k.clone(),
            });
            for h in &k.hashes {
                let mut raw = [0u8; 32];
                if hex::decode_to_slice(&h.sha256, &mut raw).is_ok() {
                    keys.insert(raw, (key.clone(), h.not_after));
                }
            }
        }
        let providers = config
            .providers
            .iter()
            .map(|p| (p.id.clone(), Arc::new(p.clone())))
            .collect();
        Self {
            config,
            hash,
            generation,
            routes,
            keys,
            providers,
        }
    }

    /// Authenticates a presented key value.
    pub fn authenticate(&self, presented: &str, now_unix: i64) -> Result<Arc<Key>, GatewayError> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let Some((key, not_after)) = self.keys.get(&digest) else {
            return Err(GatewayError::unauthorized("Incorrect API key provided."));
        };
        // The map lookup found the candidate by hash; compare the full digest in constant time
        // so timing reveals nothing about how much of a hash matched.
        let stored = key
            .config
            .hashes
            .iter()
            .filter_map(|h| {
                let mut raw = [0u8; 32];
                hex::decode_to_slice(&h.sha256, &mut raw).ok().map(|_| raw)
            })
            .fold(0u8, |acc, raw| acc | raw.ct_eq(&digest).unwrap_u8());
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
            Some((ns, name)) if self.routes.contains_key(&(ns.to_owned(), name.to_owned())) => (ns, name, true),
            _ => (own.as_str(), model, false),
        };
        let Some(route) = self.routes.get(&(ns.to_owned(), name.to_owned())) else {
            return Err(GatewayError::model_not_found(model));
        };
        if qualified && ns != own && !route.config.shared_with.iter().any(|s| s == own || s == "*") {
            return Err(GatewayError::model_not_found(model));
        }
        if !key.config.allowed_routes.is_empty() {
            let allowed = key.config.allowed_routes.iter().any(|a| {
                let (ans, aname) = a.split_once('/').unwrap_or((own.as_str(), a.as_str()));
                ans == route.config.namespace
                    && (aname == route.config.model || route.config.aliases.iter().any(|x| x == aname))
            });
            if !allowed {
                return Err(GatewayError::forbidden(format!(
                    "This API key is not allowed to use model `{model}`."
                )));
            }
        }
        Ok(route.clone())
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
                        ans == r.namespace && aname == r.model
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
}

impl Route {
    /// Picks a backend: the best priority tier with weight, then smooth weighted round robin
    /// within it (deterministic split by weight).
    pub fn pick(&self) -> Option<(usize, &BackendConfig)> {
        let backends = &self.config.backends;
        let tier = backends.iter().filter(|b| b.weight > 0).map(|b| b.priority).min()?;
        let mut current = self.wrr.lock().unwrap_or_else(|p| p.into_inner());
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for (i, b) in backends.iter().enumerate() {
            if b.priority != tier || b.weight == 0 {
                continue;
            }
            let w = i64::from(b.weight);
            current[i] += w;
            total += w;
            if best.is_none_or(|j| current[i] > current[j]) {
                best = Some(i);
            }
        }
        let i = best?;
        current[i] -= total;
        Some((i, &backends[i]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_config::*;

    fn backend(name: &str, weight: u32, priority: u32) -> BackendConfig {
        BackendConfig {
            name: name.into(),
            provider: "default/p".into(),
            model: "m".into(),
            weight,
            priority,
            labels: Default::default(),
            context_window: None,
            max_output_tokens: None,
            limits: LimitsConfig::default(),
            price: None,
        }
    }

    fn route(backends: Vec<BackendConfig>) -> Route {
        Route {
            wrr: Mutex::new(vec![0; backends.len()]),
            config: RouteConfig {
                namespace: "default".into(),
                name: "r".into(),
                model: "r".into(),
                aliases: vec![],
                mode: RouteMode::Chat,
                backends,
                strategy: Strategy::Weighted,
                retries: RetryConfig::default(),
                timeouts: RouteTimeoutsConfig::default(),
                fallbacks: vec![],
                rules: vec![],
                cache: None,
                hedge_after_ms: None,
                drop_unsupported_params: false,
                log_prompts: false,
                shared_with: vec![],
            },
        }
    }

    #[test]
    fn weighted_split_is_exact_and_smooth() {
        let r = route(vec![backend("a", 3, 0), backend("b", 1, 0), backend("standby", 5, 1)]);
        let picks: Vec<&str> = (0..8).map(|_| r.pick().unwrap().1.name.as_str()).collect();
        assert_eq!(picks, vec!["a", "a", "b", "a", "a", "a", "b", "a"]);
    }

    #[test]
    fn keys_authenticate_by_hash() {
        let mut cfg = GatewayConfig {
            version: SCHEMA_VERSION,
            ..Default::default()
        };
        cfg.keys.push(KeyConfig {
            namespace: "default".into(),
            name: "k".into(),
            hashes: vec![KeyHash {
                sha256: hash_key("sk-good"),
                not_after: None,
            }],
            allowed_routes: vec![],
            limits: LimitsConfig::default(),
            budget: None,
            expires_at: Some(1_000),
            blocked: false,
            labels: Default::default(),
        });
        let rt = Runtime::new(cfg, 1);
        assert!(rt.authenticate("sk-good", 999).is_ok());
        assert_eq!(rt.authenticate("sk-good", 1_000).unwrap_err().status, 401);
        assert_eq!(rt.authenticate("sk-bad", 0).unwrap_err().status, 401);
    }
}
