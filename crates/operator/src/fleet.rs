//! Which fleets a resource concerns: admission (same namespace, all, namespace selector, route
//! parentRefs, by the rules of `switchyard_config`, which `compile` applies), the mapping from a
//! changed object to the LLMGateways to re-reconcile, and the `Manifests` one fleet compiles.
//! Pure: stores are read through plain slices and lookups.
//!
//! Mappings over-approximate on purpose: a route is mapped to every fleet that admits its
//! namespace (whatever its parentRefs say now), so a fleet a route just left still recompiles
//! without it.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use switchyard_api::{Admission, FromNamespaces, LLMGateway, LLMRoute, Provider, VirtualKey};
use switchyard_config::Manifests;

use crate::{CONFIG_GENERATION, LABEL_FLEET};

/// Labels of namespaces, by name.
pub trait NamespaceLabels: Sync {
    /// The labels of a namespace; `None` when it is not known.
    fn labels_of(&self, namespace: &str) -> Option<BTreeMap<String, String>>;
}

impl NamespaceLabels for BTreeMap<String, BTreeMap<String, String>> {
    fn labels_of(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        self.get(namespace).cloned()
    }
}

impl NamespaceLabels for Store<Namespace> {
    fn labels_of(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        self.get(&ObjectRef::new(namespace)).map(|n| n.labels().clone())
    }
}

/// `(namespace, name)` of a fleet.
pub type FleetId = (String, String);

/// The namespace of an object (the API server always sets one on namespaced objects).
pub fn ns<K: Resource>(o: &K) -> String {
    o.meta().namespace.clone().unwrap_or_default()
}

/// The fleet id of an LLMGateway.
pub fn fleet_id(gw: &LLMGateway) -> FleetId {
    (ns(gw), gw.name_any())
}

fn admitted(gw: &LLMGateway, a: &Admission, namespace: &str, namespaces: &dyn NamespaceLabels) -> bool {
    switchyard_config::admits_namespace(gw, a, namespace, |n| namespaces.labels_of(n))
}

/// Whether the fleet admits routes (and so their Providers) from a namespace.
pub fn admits_routes_from(gw: &LLMGateway, namespace: &str, namespaces: &dyn NamespaceLabels) -> bool {
    admitted(gw, &gw.spec.routes, namespace, namespaces)
}

/// Whether the fleet admits virtual keys from a namespace.
pub fn admits_keys_from(gw: &LLMGateway, namespace: &str, namespaces: &dyn NamespaceLabels) -> bool {
    admitted(gw, &gw.spec.keys, namespace, namespaces)
}

/// Whether a route names the fleet in its parentRefs.
pub fn names_fleet(route: &LLMRoute, gw: &LLMGateway) -> bool {
    switchyard_config::route_names_gateway(route, gw)
}

/// Whether the fleet serves a route: it admits the route's namespace and the route names this
/// fleet, or names no parents and is in the fleet's namespace (the rules `compile` applies).
/// A route of another namespace that does not name the fleet is never served, its status never
/// written by this fleet.
pub fn considers_route(gw: &LLMGateway, route: &LLMRoute, namespaces: &dyn NamespaceLabels) -> bool {
    admits_routes_from(gw, &ns(route), namespaces) && switchyard_config::route_attaches_to(route, gw)
}

/// Whether a Provider may concern the fleet: it admits routes from the Provider's namespace.
/// Over-approximates (for mapping events); [`serves_provider`] decides what is compiled.
pub fn considers_provider(gw: &LLMGateway, p: &Provider, namespaces: &dyn NamespaceLabels) -> bool {
    admits_routes_from(gw, &ns(p), namespaces)
}

/// Whether the fleet compiles a Provider (and reads its credentials): the Provider is in the
/// fleet's namespace, or a route of the Provider's namespace attaches to the fleet (names it).
/// Another namespace's credentials never reach a fleet that namespace did not name.
pub fn serves_provider(
    gw: &LLMGateway,
    p: &Provider,
    routes: &[Arc<LLMRoute>],
    namespaces: &dyn NamespaceLabels,
) -> bool {
    let pns = ns(p);
    considers_provider(gw, p, namespaces)
        && (pns == ns(gw)
            || routes
                .iter()
                .any(|r| ns(&**r) == pns && considers_route(gw, r, namespaces)))
}

/// Whether the fleet compiles a VirtualKey: it admits the key's namespace and the key names
/// this fleet, or names no parents and is in the fleet's namespace.
pub fn considers_key(gw: &LLMGateway, k: &VirtualKey, namespaces: &dyn NamespaceLabels) -> bool {
    admits_keys_from(gw, &ns(k), namespaces) && switchyard_config::key_attaches_to(k, gw)
}

fn refs<'a>(
    gateways: impl IntoIterator<Item = &'a LLMGateway>,
    keep: impl Fn(&LLMGateway) -> bool,
) -> Vec<ObjectRef<LLMGateway>> {
    let mut out: Vec<ObjectRef<LLMGateway>> = gateways
        .into_iter()
        .filter(|g| keep(g))
        .map(ObjectRef::from_obj)
        .collect();
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    out.dedup();
    out
}

/// Fleets to re-reconcile when a route changes: those that admit its namespace, and those it
/// names as parents (which report it as not allowed when they do not admit it).
pub fn fleets_for_route<'a>(
    route: &LLMRoute,
    gateways: impl IntoIterator<Item = &'a LLMGateway>,
    namespaces: &dyn NamespaceLabels,
) -> Vec<ObjectRef<LLMGateway>> {
    refs(gateways, |g| {
        admits_routes_from(g, &ns(route), namespaces) || names_fleet(route, g)
    })
}

/// Fleets to re-reconcile when a Provider changes.
pub fn fleets_for_provider<'a>(
    p: &Provider,
    gateways: impl IntoIterator<Item = &'a LLMGateway>,
    namespaces: &dyn NamespaceLabels,
) -> Vec<ObjectRef<LLMGateway>> {
    refs(gateways, |g| considers_provider(g, p, namespaces))
}

/// Fleets to re-reconcile when a VirtualKey changes: those that admit its namespace (so a fleet
/// the key just left recompiles without it).
pub fn fleets_for_key<'a>(
    k: &VirtualKey,
    gateways: impl IntoIterator<Item = &'a LLMGateway>,
    namespaces: &dyn NamespaceLabels,
) -> Vec<ObjectRef<LLMGateway>> {
    refs(gateways, |g| admits_keys_from(g, &ns(k), namespaces))
}

/// Fleets to re-reconcile when a namespace's labels change: those that select namespaces by
/// label (the old labels are unknown, so every selecting fleet).
pub fn fleets_for_namespace<'a>(gateways: impl IntoIterator<Item = &'a LLMGateway>) -> Vec<ObjectRef<LLMGateway>> {
    refs(gateways, |g| {
        g.spec.routes.from == FromNamespaces::Selector || g.spec.keys.from == FromNamespaces::Selector
    })
}

/// The Secret names (in the key's namespace) a VirtualKey reads.
pub fn key_secret_names(k: &VirtualKey) -> Vec<String> {
    let mut names = vec![match &k.spec.secret_ref {
        Some(sr) => sr.name.clone(),
        None => format!("{}-key", k.name_any()),
    }];
    if let Some(sr) = k
        .spec
        .budget
        .as_ref()
        .and_then(|b| b.webhook.as_ref())
        .and_then(|w| w.signing_secret_ref.as_ref())
    {
        names.push(sr.name.clone());
    }
    names
}

/// The Secret name (in the Provider's namespace) a Provider reads.
pub fn provider_secret_name(p: &Provider) -> Option<&str> {
    p.spec.credentials.as_ref().map(|c| c.secret_ref.name.as_str())
}

/// The Secret name (in the gateway's namespace) an LLMGateway reads.
pub fn gateway_secret_name(gw: &LLMGateway) -> Option<&str> {
    gw.spec
        .redis
        .as_ref()
        .and_then(|r| r.url_secret_ref.as_ref())
        .map(|s| s.name.as_str())
}

/// Fleets to re-reconcile when a Secret changes: the fleets of every Provider, VirtualKey and
/// LLMGateway that reads it. Secrets nobody reads map to nothing. The keys that read it are
/// looked up in `keys` ([`KeySecrets`]), not scanned.
pub fn fleets_for_secret<S: Resource>(
    secret: &S,
    gateways: &[&LLMGateway],
    providers: &[&Provider],
    keys: &KeySecrets,
    namespaces: &dyn NamespaceLabels,
) -> Vec<ObjectRef<LLMGateway>> {
    let (sns, sname) = (ns(secret), secret.meta().name.as_deref().unwrap_or_default());
    let readers_p: Vec<&&Provider> = providers
        .iter()
        .filter(|p| ns(**p) == sns && provider_secret_name(p) == Some(sname))
        .collect();
    // Keys read only Secrets of their own namespace: a fleet that admits keys from it is
    // concerned.
    let keys_read_it = keys.read(&sns, sname);
    refs(gateways.iter().copied(), |g| {
        (ns(g) == sns && gateway_secret_name(g) == Some(sname))
            || readers_p.iter().any(|p| considers_provider(g, p, namespaces))
            || (keys_read_it && admits_keys_from(g, &sns, namespaces))
    })
}

/// Which Secrets the VirtualKeys read: per namespace and Secret name, how many keys read it,
/// and per key the names it reads (to take them back when the key changes or goes). A Secret
/// event finds its readers here instead of scanning every key: when a namespace of 10,000 keys
/// was deleted, its 10,000 Secret events each scanning 10,000 keys held the fleet controller
/// (every fleet's reconciles) up for over a minute.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct KeySecrets {
    by_key: HashMap<(String, String), Vec<String>>,
    readers: HashMap<String, HashMap<String, usize>>,
}

impl KeySecrets {
    /// Records the Secrets `k` reads now (replacing what it read before).
    pub fn insert(&mut self, k: &VirtualKey) {
        self.remove(k);
        let (namespace, names) = (ns(k), key_secret_names(k));
        let counts = self.readers.entry(namespace.clone()).or_default();
        for name in &names {
            *counts.entry(name.clone()).or_default() += 1;
        }
        self.by_key.insert((namespace, k.name_any()), names);
    }

    /// Forgets the Secrets `k` read.
    pub fn remove(&mut self, k: &VirtualKey) {
        let namespace = ns(k);
        let Some(names) = self.by_key.remove(&(namespace.clone(), k.name_any())) else {
            return;
        };
        if let Some(counts) = self.readers.get_mut(&namespace) {
            for name in names {
                if let Entry::Occupied(mut n) = counts.entry(name) {
                    *n.get_mut() -= 1;
                    if *n.get() == 0 {
                        n.remove();
                    }
                }
            }
            if counts.is_empty() {
                self.readers.remove(&namespace);
            }
        }
    }

    /// Whether a key reads Secret `name` of `namespace`.
    pub fn read(&self, namespace: &str, name: &str) -> bool {
        self.readers.get(namespace).is_some_and(|n| n.contains_key(name))
    }
}

/// The fleet an object labelled with [`LABEL_FLEET`] belongs to (pods, config shards).
pub fn fleet_of_labelled<K: Resource>(o: &K) -> Option<ObjectRef<LLMGateway>> {
    let fleet = o.meta().labels.as_ref()?.get(LABEL_FLEET)?;
    Some(ObjectRef::new(fleet).within(o.meta().namespace.as_deref()?))
}

/// Whether a Secret is a config shard (the general Secret cache leaves them out).
pub fn is_config_shard(s: &Secret) -> bool {
    s.labels().contains_key(CONFIG_GENERATION)
}

/// Everything one fleet compiles from: the gateway itself, Providers and routes of the
/// namespaces it admits routes from, keys of the namespaces it admits keys from, the Secrets
/// those read, and the labels of those namespaces.
pub fn fleet_manifests(
    gw: &LLMGateway,
    providers: &[Arc<Provider>],
    routes: &[Arc<LLMRoute>],
    keys: &[Arc<VirtualKey>],
    secret: &dyn Fn(&str, &str) -> Option<Arc<Secret>>,
    namespaces: &dyn NamespaceLabels,
) -> Manifests {
    let mut m = Manifests::default();
    let mut wanted: BTreeSet<(String, String)> = BTreeSet::new();
    let mut seen_ns: BTreeSet<String> = BTreeSet::from([ns(gw)]);
    if let Some(name) = gateway_secret_name(gw) {
        wanted.insert((ns(gw), name.to_owned()));
    }
    for p in providers.iter().filter(|p| serves_provider(gw, p, routes, namespaces)) {
        if let Some(name) = provider_secret_name(p) {
            wanted.insert((ns(&**p), name.to_owned()));
        }
        seen_ns.insert(ns(&**p));
        m.providers.push((**p).clone());
    }
    // Admitted routes and keys that name no parent go in even from other namespaces, without
    // their Secrets: `compile` leaves them out and counts them for the fleet's status.
    for r in routes.iter().filter(|r| {
        considers_route(gw, r, namespaces)
            || (r.spec.parent_refs.is_empty() && admits_routes_from(gw, &ns(&***r), namespaces))
    }) {
        seen_ns.insert(ns(&**r));
        m.routes.push((**r).clone());
    }
    for k in keys.iter().filter(|k| {
        considers_key(gw, k, namespaces)
            || (k.spec.parent_refs.is_empty() && admits_keys_from(gw, &ns(&***k), namespaces))
    }) {
        if considers_key(gw, k, namespaces) {
            for name in key_secret_names(k) {
                wanted.insert((ns(&**k), name));
            }
        }
        seen_ns.insert(ns(&**k));
        // Without the status, which compile never reads: at 10,000 keys, copying it was a
        // good part of gathering a fleet.
        m.keys.push(VirtualKey {
            metadata: k.metadata.clone(),
            spec: k.spec.clone(),
            status: None,
        });
    }
    for (sns, name) in &wanted {
        if let Some(s) = secret(sns, name) {
            m.add_secret(&s);
        }
    }
    for n in seen_ns {
        if let Some(labels) = namespaces.labels_of(&n) {
            m.namespaces.insert(n, labels);
        }
    }
    m.gateways.push(gw.clone());
    m
}

/// Adds the Budgets of the namespaces whose keys `m` holds, with their webhook signing Secrets
/// (`compile` keeps only the Budgets that cover a key the fleet serves).
pub fn add_budgets(
    m: &mut Manifests,
    budgets: &[Arc<switchyard_api::TeamBudget>],
    secret: &dyn Fn(&str, &str) -> Option<Arc<Secret>>,
) {
    let namespaces: BTreeSet<String> = m.keys.iter().map(ns).collect();
    for b in budgets.iter().filter(|b| namespaces.contains(&ns(&***b))) {
        let sref = b.spec.webhook.as_ref().and_then(|w| w.signing_secret_ref.as_ref());
        if let Some(s) = sref.and_then(|r| secret(&ns(&**b), &r.name)) {
            m.add_secret(&s);
        }
        m.budgets.push((**b).clone());
    }
}

#[cfg(test)]
mod tests;
