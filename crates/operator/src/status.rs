//! Status conditions computed from compile diagnostics and what the fleet observes, and which
//! objects a fleet writes the status of. Pure: the caller passes the time, the existing status
//! and the cached objects, and writes the results (only those that differ).
//!
//! Several fleets may compile the same Provider, route or key and disagree (a model name taken
//! in one fleet's view and not in another's). A condition's message names the fleet that wrote
//! it, and [`resolve_condition`] lets a `False` stand until the fleet that wrote it clears it,
//! so two fleets never overwrite each other forever.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use switchyard_api::{
    condition, LLMGateway, LLMGatewayStatus, LLMRoute, LLMRouteStatus, NamespacedRef, Provider, ProviderStatus,
    RouteParentStatus, VirtualKey, VirtualKeyStatus,
};
use switchyard_config::{Compiled, Diagnostic, ObjectId, Severity, REF_NOT_PERMITTED};

use crate::fleet::{self, fleet_id, FleetId, NamespaceLabels};
use crate::keys;

/// Reasons that mean something named does not exist or cannot be used (`ResolvedRefs=False`).
const REF_REASONS: &[&str] = &[
    "ProviderNotFound",
    "ProviderNotReady",
    "RouteNotFound",
    "SecretNotFound",
    "SecretKeyMissing",
    "GatewayNotFound",
];

/// Longest condition message written (Kubernetes allows 32 KiB; people read the first lines).
const MAX_MESSAGE: usize = 1024;

/// `True` or `False`.
fn status_str(ok: bool) -> String {
    if ok { "True" } else { "False" }.to_owned()
}

/// A condition, written by `fleet`.
pub fn fleet_condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    fleet: &FleetId,
    now: &Time,
) -> Condition {
    let mut message = message.to_owned();
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    Condition {
        type_: type_.to_owned(),
        status: status_str(ok),
        reason: reason.to_owned(),
        message: format!("{message} (LLMGateway {}/{})", fleet.0, fleet.1),
        observed_generation: generation,
        last_transition_time: now.clone(),
    }
}

/// The fleet that wrote a condition, from its message.
pub fn writer_of(c: &Condition) -> Option<FleetId> {
    let (_, tail) = c.message.rsplit_once(" (LLMGateway ")?;
    let (ns, name) = tail.strip_suffix(')')?.split_once('/')?;
    Some((ns.to_owned(), name.to_owned()))
}

fn describe(diags: &[&Diagnostic]) -> String {
    let mut text = diags
        .first()
        .map(|d| match d.field.as_str() {
            "" => d.message.clone(),
            f => format!("{f}: {}", d.message),
        })
        .unwrap_or_default();
    if diags.len() > 1 {
        text.push_str(&format!(" (and {} more)", diags.len() - 1));
    }
    text
}

/// `Accepted` and `ResolvedRefs` of one object, from the diagnostics of one fleet's compile.
/// Any error leaves the object out of the configuration, so any error makes `Accepted=False`
/// with the first error's reason; `ResolvedRefs=False` when an error is about something named.
pub fn object_conditions(
    object: &ObjectId,
    diagnostics: &[Diagnostic],
    generation: Option<i64>,
    fleet: &FleetId,
    now: &Time,
) -> Vec<Condition> {
    let mine: Vec<&Diagnostic> = diagnostics
        .iter()
        .filter(|d| d.object.as_ref() == Some(object))
        .collect();
    let errors: Vec<&Diagnostic> = mine.iter().copied().filter(|d| d.severity == Severity::Error).collect();
    let warnings: Vec<&Diagnostic> = mine
        .iter()
        .copied()
        .filter(|d| d.severity == Severity::Warning)
        .collect();
    let ref_errors: Vec<&Diagnostic> = errors
        .iter()
        .copied()
        .filter(|d| REF_REASONS.contains(&d.reason.as_str()))
        .collect();
    let accepted = match errors.first() {
        Some(first) => fleet_condition(
            condition::ACCEPTED,
            false,
            &first.reason,
            &describe(&errors),
            generation,
            fleet,
            now,
        ),
        None if !warnings.is_empty() => fleet_condition(
            condition::ACCEPTED,
            true,
            "Accepted",
            &format!("accepted with warnings: {}", describe(&warnings)),
            generation,
            fleet,
            now,
        ),
        None => fleet_condition(
            condition::ACCEPTED,
            true,
            "Accepted",
            "accepted",
            generation,
            fleet,
            now,
        ),
    };
    let resolved = match ref_errors.first() {
        Some(first) => fleet_condition(
            condition::RESOLVED_REFS,
            false,
            &first.reason,
            &describe(&ref_errors),
            generation,
            fleet,
            now,
        ),
        None => fleet_condition(
            condition::RESOLVED_REFS,
            true,
            "ResolvedRefs",
            "every reference resolved",
            generation,
            fleet,
            now,
        ),
    };
    vec![accepted, resolved]
}

fn same_meaning(a: &Condition, b: &Condition) -> bool {
    a.type_ == b.type_
        && a.status == b.status
        && a.reason == b.reason
        && a.message == b.message
        && a.observed_generation == b.observed_generation
}

/// Keeps the existing transition time when the status did not change.
fn keep_time(existing: Option<&Condition>, mut c: Condition) -> Condition {
    if let Some(e) = existing {
        if e.status == c.status {
            c.last_transition_time = e.last_transition_time.clone();
        }
    }
    c
}

/// The condition to write, given the existing one and the one this fleet computed.
///
/// A `False` (or a `True` when this fleet also computes `True`) written by another fleet that still compiles the object
/// (`responsible`) for the same generation is kept: that fleet clears it. Otherwise the
/// computed condition is written, keeping the transition time when the status is unchanged.
pub fn resolve_condition(
    existing: Option<&Condition>,
    computed: Condition,
    fleet: &FleetId,
    responsible: &dyn Fn(&FleetId) -> bool,
) -> Condition {
    let Some(e) = existing else { return computed };
    let by_other = writer_of(e).is_some_and(|w| &w != fleet && responsible(&w));
    if by_other
        && e.observed_generation == computed.observed_generation
        && (e.status == "False" || e.status == computed.status)
    {
        return e.clone();
    }
    if same_meaning(e, &computed) {
        return e.clone();
    }
    keep_time(Some(e), computed)
}

/// Sets this fleet's computed conditions over existing ones (see [`resolve_condition`]);
/// conditions of other types are kept.
pub fn merge_conditions(
    existing: &[Condition],
    computed: Vec<Condition>,
    fleet: &FleetId,
    responsible: &dyn Fn(&FleetId) -> bool,
) -> Vec<Condition> {
    let types: Vec<String> = computed.iter().map(|c| c.type_.clone()).collect();
    let mut out: Vec<Condition> = computed
        .into_iter()
        .map(|c| {
            let e = existing.iter().find(|e| e.type_ == c.type_);
            resolve_condition(e, c, fleet, responsible)
        })
        .collect();
    out.extend(existing.iter().filter(|e| !types.contains(&e.type_)).cloned());
    out
}

/// Merges conditions that only this fleet writes (its own status, its parent entry of a route).
pub fn merge_own_conditions(existing: &[Condition], computed: Vec<Condition>) -> Vec<Condition> {
    computed
        .into_iter()
        .map(|c| {
            let e = existing.iter().find(|e| e.type_ == c.type_);
            match e {
                Some(e) if same_meaning(e, &c) => e.clone(),
                _ => keep_time(e, c),
            }
        })
        .collect()
}

/// What the operator observes of a fleet's pods.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodsObserved {
    /// `status.replicas` of the Deployment.
    pub replicas: Option<i32>,
    /// `status.readyReplicas` of the Deployment.
    pub ready_replicas: Option<i32>,
    /// The Deployment's `Available` condition is `True`.
    pub available: bool,
    /// Ready pods of the fleet.
    pub ready_pods: i32,
    /// Ready pods whose `switchyard.dev/config-generation` annotation is the current generation.
    pub programmed_pods: i32,
}

impl PodsObserved {
    /// Every ready pod runs the current generation (and there is at least one).
    pub fn programmed(&self) -> bool {
        self.ready_pods > 0 && self.programmed_pods == self.ready_pods
    }
}

/// The configuration a fleet runs, as status reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigState {
    /// Generation.
    pub generation: u64,
    /// SHA-256 (hex) of its bytes.
    pub hash: String,
    /// Routes in it.
    pub routes: usize,
    /// Keys in it.
    pub keys: usize,
}

/// The LLMGateway's status: `Accepted` (its own spec compiled), `ResolvedRefs` (`False` with
/// reason `RefNotPermitted` while routes or keys of admitted namespaces are left out for not
/// naming the fleet; counts only, never other namespaces' names), `Ready` (pods available),
/// `Programmed` (every ready pod runs the current configuration generation).
pub fn gateway_status(
    existing: Option<&LLMGatewayStatus>,
    object: &ObjectId,
    generation: Option<i64>,
    diagnostics: &[Diagnostic],
    config: &ConfigState,
    pods: &PodsObserved,
    now: &Time,
) -> LLMGatewayStatus {
    let fleet: FleetId = (object.namespace.clone(), object.name.clone());
    let (refused, own): (Vec<Diagnostic>, Vec<Diagnostic>) = diagnostics
        .iter()
        .cloned()
        .partition(|d| d.reason == REF_NOT_PERMITTED && d.object.as_ref() == Some(object));
    let mut conditions = object_conditions(object, &own, generation, &fleet, now);
    if let Some(d) = refused.first() {
        conditions.retain(|c| c.type_ != condition::RESOLVED_REFS);
        conditions.push(fleet_condition(
            condition::RESOLVED_REFS,
            false,
            REF_NOT_PERMITTED,
            &d.message,
            generation,
            &fleet,
            now,
        ));
    }
    let ready_msg = format!(
        "{}/{} pods ready",
        pods.ready_replicas.unwrap_or(0),
        pods.replicas.unwrap_or(0)
    );
    let ready = if pods.available && pods.ready_replicas.unwrap_or(0) > 0 {
        fleet_condition(condition::READY, true, "Available", &ready_msg, generation, &fleet, now)
    } else {
        fleet_condition(
            condition::READY,
            false,
            "Unavailable",
            &ready_msg,
            generation,
            &fleet,
            now,
        )
    };
    let programmed = if pods.programmed() {
        fleet_condition(
            condition::PROGRAMMED,
            true,
            "Programmed",
            &format!(
                "all {} ready pods run config generation {}",
                pods.ready_pods, config.generation
            ),
            generation,
            &fleet,
            now,
        )
    } else {
        fleet_condition(
            condition::PROGRAMMED,
            false,
            "Pending",
            &format!(
                "{}/{} ready pods run config generation {}",
                pods.programmed_pods, pods.ready_pods, config.generation
            ),
            generation,
            &fleet,
            now,
        )
    };
    let mut computed: Vec<Condition> = conditions;
    computed.push(ready);
    computed.push(programmed);
    let old = existing.map(|s| s.conditions.as_slice()).unwrap_or_default();
    LLMGatewayStatus {
        conditions: merge_own_conditions(old, computed),
        replicas: pods.replicas,
        ready_replicas: pods.ready_replicas,
        config_generation: i64::try_from(config.generation).ok(),
        config_hash: Some(config.hash.clone()),
        programmed_replicas: Some(pods.programmed_pods),
        routes: i32::try_from(config.routes).ok(),
        keys: i32::try_from(config.keys).ok(),
        observed_generation: generation,
    }
}

/// `Programmed` of an object the fleet compiled: `True` once it is in the configuration and
/// every ready pod runs that configuration. Once `True` for the object's current generation it
/// stays as it is (`previous`) while the object stays in the configuration: later generations
/// still serve it unchanged, and rewriting every route's status on every new configuration is
/// what made status traffic grow with fleet size. For the same reason a `Pending` message names
/// no configuration generation (the LLMGateway's status has it): while no pod is ready, a new
/// generation would otherwise rewrite every route's status.
pub fn programmed_condition(
    in_config: bool,
    pods: &PodsObserved,
    config_generation: u64,
    generation: Option<i64>,
    fleet: &FleetId,
    now: &Time,
    previous: Option<&Condition>,
) -> Condition {
    if let Some(p) = previous.filter(|p| in_config && p.status == "True" && p.observed_generation == generation) {
        return p.clone();
    }
    if !in_config {
        fleet_condition(
            condition::PROGRAMMED,
            false,
            "NotAccepted",
            "left out of the configuration (see Accepted)",
            generation,
            fleet,
            now,
        )
    } else if pods.programmed() {
        fleet_condition(
            condition::PROGRAMMED,
            true,
            "Programmed",
            &format!("served from config generation {config_generation}"),
            generation,
            fleet,
            now,
        )
    } else {
        fleet_condition(
            condition::PROGRAMMED,
            false,
            "Pending",
            &format!(
                "{}/{} ready pods run the current configuration (status.configGeneration)",
                pods.programmed_pods, pods.ready_pods
            ),
            generation,
            fleet,
            now,
        )
    }
}

/// A route names a fleet that does not admit routes from the route's namespace.
pub fn not_allowed_conditions(
    route_namespace: &str,
    generation: Option<i64>,
    fleet: &FleetId,
    now: &Time,
) -> Vec<Condition> {
    vec![fleet_condition(
        condition::ACCEPTED,
        false,
        "NotAllowedByGateway",
        &format!("this LLMGateway does not admit routes from namespace {route_namespace:?}"),
        generation,
        fleet,
        now,
    )]
}

/// A route's status with this fleet's view set: its entry in `parents` (replaced, or removed
/// when `parent` is `None`), entries of fleets that no longer exist dropped, and the top-level
/// conditions merged when this fleet compiled the route.
#[allow(clippy::too_many_arguments)]
pub fn route_status(
    existing: Option<&LLMRouteStatus>,
    generation: Option<i64>,
    fleet: &FleetId,
    parent: Option<Vec<Condition>>,
    top: Option<Vec<Condition>>,
    gateway_exists: &dyn Fn(&FleetId) -> bool,
    responsible: &dyn Fn(&FleetId) -> bool,
) -> LLMRouteStatus {
    let old = existing.cloned().unwrap_or_default();
    let key = |p: &RouteParentStatus| {
        (
            p.parent_ref.namespace.clone().unwrap_or_default(),
            p.parent_ref.name.clone(),
        )
    };
    let mine_before = old.parents.iter().find(|p| key(p) == *fleet);
    let mut parents: Vec<RouteParentStatus> = old
        .parents
        .iter()
        .filter(|p| key(p) != *fleet && gateway_exists(&key(p)))
        .cloned()
        .collect();
    if let Some(conditions) = parent {
        let before = mine_before.map(|p| p.conditions.as_slice()).unwrap_or_default();
        parents.push(RouteParentStatus {
            parent_ref: NamespacedRef {
                name: fleet.1.clone(),
                namespace: Some(fleet.0.clone()),
            },
            conditions: merge_own_conditions(before, conditions),
        });
    }
    parents.sort_by_key(key);
    let (conditions, observed_generation) = match top {
        Some(top) => (merge_conditions(&old.conditions, top, fleet, responsible), generation),
        None => (old.conditions.clone(), old.observed_generation),
    };
    LLMRouteStatus {
        conditions,
        parents,
        observed_generation,
    }
}

fn find<'a>(cs: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    cs.iter().find(|c| c.type_ == type_)
}

/// Whether this fleet's view of `Accepted` is new (so its errors deserve events).
pub fn accepted_changed(before: &[Condition], computed: &[Condition]) -> bool {
    match (find(before, condition::ACCEPTED), find(computed, condition::ACCEPTED)) {
        (_, None) => false,
        (None, Some(c)) => c.status == "False",
        (Some(b), Some(c)) => {
            c.status == "False"
                && (b.status != c.status || b.reason != c.reason || b.observed_generation != c.observed_generation)
        }
    }
}

/// What one reconcile concluded about a fleet, for the statuses of the objects it compiled.
pub struct StatusWork {
    /// The fleet.
    pub gw: Arc<LLMGateway>,
    /// Diagnostics by the object they name.
    diagnostics: HashMap<ObjectId, Vec<Diagnostic>>,
    /// `(namespace, name)` of the routes in the configuration.
    routes: HashSet<(String, String)>,
    /// `(namespace, name)` of the keys in the configuration.
    keys: HashSet<(String, String)>,
    pods: PodsObserved,
    generation: u64,
}

impl StatusWork {
    /// The outcome of compiling `gw` into configuration generation `generation`.
    pub fn new(gw: Arc<LLMGateway>, compiled: &Compiled, pods: PodsObserved, generation: u64) -> Self {
        let mut diagnostics: HashMap<ObjectId, Vec<Diagnostic>> = HashMap::new();
        for d in &compiled.diagnostics {
            if let Some(o) = &d.object {
                diagnostics.entry(o.clone()).or_default().push(d.clone());
            }
        }
        let id = |namespace: &str, name: &str| (namespace.to_owned(), name.to_owned());
        Self {
            gw,
            diagnostics,
            routes: compiled
                .config
                .routes
                .iter()
                .map(|r| id(&r.namespace, &r.name))
                .collect(),
            keys: compiled.config.keys.iter().map(|k| id(&k.namespace, &k.name)).collect(),
            pods,
            generation,
        }
    }

    /// The diagnostics about one object (what `object_conditions` and events read).
    pub fn diagnostics_of(&self, id: &ObjectId) -> &[Diagnostic] {
        self.diagnostics.get(id).map(Vec::as_slice).unwrap_or_default()
    }
}

/// What the object statuses of a fleet are computed from: the caches, as plain slices.
pub struct Cached<'a> {
    /// Every LLMGateway (other fleets' views are kept while they are responsible).
    pub gateways: &'a [Arc<LLMGateway>],
    /// Every LLMRoute.
    pub routes: &'a [Arc<LLMRoute>],
    /// Every Provider.
    pub providers: &'a [Arc<Provider>],
    /// Every VirtualKey.
    pub keys: &'a [Arc<VirtualKey>],
    /// Labels of namespaces.
    pub namespaces: &'a dyn NamespaceLabels,
    /// A Secret by namespace and name (a generated key's rotation).
    pub secret: &'a dyn Fn(&str, &str) -> Option<Arc<Secret>>,
}

/// One status to write.
pub struct StatusUpdate<K, S> {
    /// The object as cached.
    pub object: Arc<K>,
    /// Its new status.
    pub status: S,
    /// Set when this fleet's `Accepted` of the object just turned (or stays, for a new
    /// generation) `False`: the object whose error diagnostics deserve events.
    pub new_errors: Option<ObjectId>,
}

/// The statuses one fleet writes.
#[derive(Default)]
pub struct StatusUpdates {
    /// Routes.
    pub routes: Vec<StatusUpdate<LLMRoute, LLMRouteStatus>>,
    /// Providers.
    pub providers: Vec<StatusUpdate<Provider, ProviderStatus>>,
    /// VirtualKeys.
    pub keys: Vec<StatusUpdate<VirtualKey, VirtualKeyStatus>>,
}

impl StatusUpdates {
    /// How many statuses are to be written.
    pub fn len(&self) -> usize {
        self.routes.len() + self.providers.len() + self.keys.len()
    }
}

/// Which objects this fleet considers, and the statuses that changed among them: every route
/// it serves (or that names it without being admitted, or still lists it as a parent), every
/// Provider and VirtualKey it compiles.
pub fn object_statuses(work: &StatusWork, cached: &Cached<'_>, now: &Time) -> StatusUpdates {
    let gw = &*work.gw;
    let (pods, generation) = (&work.pods, work.generation);
    let fleet = fleet_id(gw);
    let ns_labels = cached.namespaces;
    let gateway = |f: &FleetId| cached.gateways.iter().find(|g| fleet_id(g) == *f).cloned();
    let exists = |f: &FleetId| gateway(f).is_some();
    let mut out = StatusUpdates::default();

    for r in cached.routes {
        let id = ObjectId::new("LLMRoute", &fleet::ns(&**r), &r.name_any());
        let diags = work.diagnostics_of(&id);
        let considered = fleet::considers_route(gw, r, ns_labels);
        let named = fleet::names_fleet(r, gw);
        let g = r.metadata.generation;
        let in_config = work.routes.contains(&(id.namespace.clone(), id.name.clone()));
        let (parent, top) = if considered {
            let mut cs = object_conditions(&id, diags, g, &fleet, now);
            let previous = r
                .status
                .as_ref()
                .and_then(|s| {
                    s.parents
                        .iter()
                        .find(|p| p.parent_ref.name == fleet.1 && p.parent_ref.namespace.as_deref() == Some(&fleet.0))
                })
                .and_then(|p| find(&p.conditions, condition::PROGRAMMED));
            cs.push(programmed_condition(
                in_config, pods, generation, g, &fleet, now, previous,
            ));
            (Some(cs.clone()), Some(cs))
        } else if named {
            (Some(not_allowed_conditions(&id.namespace, g, &fleet, now)), None)
        } else {
            (None, None)
        };
        let listed = r.status.as_ref().is_some_and(|s| {
            s.parents
                .iter()
                .any(|p| p.parent_ref.name == fleet.1 && p.parent_ref.namespace.as_deref() == Some(&fleet.0))
        });
        if parent.is_none() && !listed {
            continue;
        }
        let responsible = |f: &FleetId| gateway(f).is_some_and(|g| fleet::considers_route(&g, r, ns_labels));
        let before: &[Condition] = r.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
        let changed = top.as_ref().is_some_and(|t| accepted_changed(before, t));
        let new = route_status(r.status.as_ref(), g, &fleet, parent, top, &exists, &responsible);
        if r.status.as_ref() != Some(&new) {
            out.routes.push(StatusUpdate {
                object: r.clone(),
                status: new,
                new_errors: changed.then_some(id),
            });
        }
    }

    for p in cached.providers {
        if !fleet::serves_provider(gw, p, cached.routes, ns_labels) {
            continue;
        }
        let id = ObjectId::new("Provider", &fleet::ns(&**p), &p.name_any());
        let diags = work.diagnostics_of(&id);
        let g = p.metadata.generation;
        let computed = object_conditions(&id, diags, g, &fleet, now);
        let responsible =
            |f: &FleetId| gateway(f).is_some_and(|g| fleet::serves_provider(&g, p, cached.routes, ns_labels));
        let old = p.status.clone().unwrap_or_default();
        let changed = accepted_changed(&old.conditions, &computed);
        let new = ProviderStatus {
            conditions: merge_conditions(&old.conditions, computed, &fleet, &responsible),
            observed_generation: g,
        };
        if p.status.as_ref() != Some(&new) {
            out.providers.push(StatusUpdate {
                object: p.clone(),
                status: new,
                new_errors: changed.then_some(id),
            });
        }
    }

    for k in cached.keys {
        if !fleet::considers_key(gw, k, ns_labels) {
            continue;
        }
        let kns = fleet::ns(&**k);
        let id = ObjectId::new("VirtualKey", &kns, &k.name_any());
        let diags = work.diagnostics_of(&id);
        let g = k.metadata.generation;
        let in_config = work.keys.contains(&(id.namespace.clone(), id.name.clone()));
        let mut computed = object_conditions(&id, diags, g, &fleet, now);
        let accepted = find(&computed, condition::ACCEPTED).cloned();
        computed.push(match (in_config, accepted) {
            (true, _) => fleet_condition(condition::READY, true, "Ready", "the key is served", g, &fleet, now),
            (false, Some(a)) if a.status == "False" => Condition {
                type_: condition::READY.into(),
                ..a
            },
            (false, _) => fleet_condition(
                condition::READY,
                false,
                "NotServed",
                "the key is not served",
                g,
                &fleet,
                now,
            ),
        });
        let responsible = |f: &FleetId| gateway(f).is_some_and(|g| fleet::considers_key(&g, k, ns_labels));
        let old = k.status.clone().unwrap_or_default();
        let changed = accepted_changed(&old.conditions, &computed);
        let secret_name = match &k.spec.secret_ref {
            Some(sr) => sr.name.clone(),
            None => keys::key_secret_name(k),
        };
        let rotation = match &k.spec.secret_ref {
            Some(_) => None,
            None => (cached.secret)(&kns, &secret_name).and_then(|s| keys::recorded_rotation(&s)),
        };
        let new = VirtualKeyStatus {
            conditions: merge_conditions(&old.conditions, computed, &fleet, &responsible),
            secret_name: Some(secret_name),
            rotation_generation: rotation,
            observed_generation: g,
            ..old
        };
        if k.status.as_ref() != Some(&new) {
            out.keys.push(StatusUpdate {
                object: k.clone(),
                status: new,
                new_errors: changed.then_some(id),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests;
