//! Status conditions computed from compile diagnostics and what the fleet observes. Pure: the
//! caller passes the time and the existing status, and writes the result only when it differs.
//!
//! Several fleets may compile the same Provider, route or key and disagree (a model name taken
//! in one fleet's view and not in another's). A condition's message names the fleet that wrote
//! it, and [`resolve_condition`] lets a `False` stand until the fleet that wrote it clears it,
//! so two fleets never overwrite each other forever.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use switchyard_api::{condition, LLMGatewayStatus, LLMRouteStatus, NamespacedRef, RouteParentStatus};
use switchyard_config::{Diagnostic, ObjectId, Severity};

use crate::fleet::FleetId;

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

/// The LLMGateway's status: `Accepted` (its own spec compiled), `Ready` (pods available),
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
    let accepted = object_conditions(object, diagnostics, generation, &fleet, now)
        .into_iter()
        .find(|c| c.type_ == condition::ACCEPTED);
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
    let mut computed: Vec<Condition> = accepted.into_iter().collect();
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
/// what made status traffic grow with fleet size.
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
                "{}/{} ready pods run config generation {config_generation}",
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

#[cfg(test)]
mod tests;
