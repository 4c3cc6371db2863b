use std::collections::BTreeMap;

use super::*;
use k8s_openapi::jiff::Timestamp;
use serde_json::json;
use switchyard_config::{compile, CompileOptions, Manifests};

use crate::status;

fn t(s: i64) -> Time {
    Time(Timestamp::from_second(s).unwrap())
}

fn fid(name: &str) -> FleetId {
    ("infra".to_owned(), name.to_owned())
}

fn cond(c: &[Condition], type_: &str) -> Condition {
    c.iter().find(|c| c.type_ == type_).cloned().unwrap()
}

/// Diagnostics of a compile where route `broken` names a Provider that does not exist.
fn diagnostics() -> Vec<Diagnostic> {
    let mut m = Manifests::default();
    for (name, provider) in [("ok", "mock"), ("broken", "missing")] {
        m.routes.push(
            serde_json::from_value(json!({
                "apiVersion": "switchyard.dev/v1alpha1", "kind": "LLMRoute",
                "metadata": {"name": name, "namespace": "infra"},
                "spec": {"model": name, "backends": [{"providerRef": {"name": provider}, "model": "m"}]},
            }))
            .unwrap(),
        );
    }
    m.providers.push(
        serde_json::from_value(json!({
            "apiVersion": "switchyard.dev/v1alpha1", "kind": "Provider",
            "metadata": {"name": "mock", "namespace": "infra"},
            "spec": {"type": "mock"},
        }))
        .unwrap(),
    );
    compile(&m, &CompileOptions::default()).diagnostics
}

#[test]
fn a_missing_provider_is_not_accepted_and_not_resolved() {
    let diags = diagnostics();
    let id = ObjectId::new("LLMRoute", "infra", "broken");
    let cs = object_conditions(&id, &diags, Some(4), &fid("edge"), &t(100));
    let accepted = cond(&cs, condition::ACCEPTED);
    assert_eq!(
        (accepted.status.as_str(), accepted.reason.as_str()),
        ("False", "ProviderNotFound")
    );
    assert!(
        accepted
            .message
            .starts_with("spec.backends[0].providerRef.name: Provider \"missing\" not found"),
        "{}",
        accepted.message
    );
    assert!(
        accepted.message.ends_with(" (LLMGateway infra/edge)"),
        "{}",
        accepted.message
    );
    assert_eq!(accepted.observed_generation, Some(4));
    let resolved = cond(&cs, condition::RESOLVED_REFS);
    assert_eq!(
        (resolved.status.as_str(), resolved.reason.as_str()),
        ("False", "ProviderNotFound")
    );
    assert_eq!(writer_of(&resolved), Some(fid("edge")));

    let ok = object_conditions(
        &ObjectId::new("LLMRoute", "infra", "ok"),
        &diags,
        Some(1),
        &fid("edge"),
        &t(100),
    );
    assert_eq!(cond(&ok, condition::ACCEPTED).status, "True");
    assert_eq!(cond(&ok, condition::RESOLVED_REFS).reason, "ResolvedRefs");
}

#[test]
fn other_errors_are_not_reference_errors() {
    let id = ObjectId::new("LLMRoute", "infra", "r");
    let diags = vec![
        Diagnostic::error(&id, "spec.fallbacks", "FallbackLoop", "loop"),
        Diagnostic::warning(&id, "", "Something", "odd"),
    ];
    let cs = object_conditions(&id, &diags, Some(1), &fid("edge"), &t(1));
    assert_eq!(cond(&cs, condition::ACCEPTED).reason, "FallbackLoop");
    assert_eq!(cond(&cs, condition::RESOLVED_REFS).status, "True");
    let warn_only = object_conditions(&id, &diags[1..], Some(1), &fid("edge"), &t(1));
    let a = cond(&warn_only, condition::ACCEPTED);
    assert_eq!(a.status, "True");
    assert!(a.message.starts_with("accepted with warnings: odd"), "{}", a.message);
}

#[test]
fn transition_time_is_kept_while_the_status_holds() {
    let id = ObjectId::new("LLMRoute", "infra", "r");
    let first = object_conditions(&id, &[], Some(1), &fid("edge"), &t(100));
    let merged = merge_own_conditions(&[], first.clone());
    let again = merge_own_conditions(&merged, object_conditions(&id, &[], Some(2), &fid("edge"), &t(200)));
    assert_eq!(again[0].observed_generation, Some(2));
    assert_eq!(again[0].last_transition_time, t(100));
    let diags = vec![Diagnostic::error(&id, "", "Invalid", "bad")];
    let failed = merge_own_conditions(&again, object_conditions(&id, &diags, Some(3), &fid("edge"), &t(300)));
    assert_eq!(failed[0].status, "False");
    assert_eq!(failed[0].last_transition_time, t(300));
}

/// Applies fleets' views in turn, as their reconciles would, until nothing changes.
fn settle(views: &[(FleetId, Vec<Condition>)], responsible: &dyn Fn(&FleetId) -> bool) -> (Vec<Condition>, usize) {
    let mut current: Vec<Condition> = Vec::new();
    for round in 0..10 {
        let mut changed = false;
        for (fleet, computed) in views {
            let next = merge_conditions(&current, computed.clone(), fleet, responsible);
            if next != current {
                current = next;
                changed = true;
            }
        }
        if !changed {
            return (current, round);
        }
    }
    panic!("fleets keep overwriting each other: {current:?}");
}

#[test]
fn disagreeing_fleets_settle_with_the_failure_shown() {
    let id = ObjectId::new("VirtualKey", "team-a", "k");
    let bad = vec![Diagnostic::error(
        &id,
        "metadata.name",
        "DuplicateKey",
        "uses the same key value as VirtualKey/j",
    )];
    let a = (fid("a"), object_conditions(&id, &bad, Some(1), &fid("a"), &t(1)));
    let b = (fid("b"), object_conditions(&id, &[], Some(1), &fid("b"), &t(2)));
    let everyone = |_: &FleetId| true;
    for order in [vec![a.clone(), b.clone()], vec![b.clone(), a.clone()]] {
        let (settled, rounds) = settle(&order, &everyone);
        assert!(rounds <= 2);
        let accepted = cond(&settled, condition::ACCEPTED);
        assert_eq!(
            (accepted.status.as_str(), accepted.reason.as_str()),
            ("False", "DuplicateKey")
        );
        assert_eq!(writer_of(&accepted), Some(fid("a")));
    }
    // Both fail differently: the first writer's failure stands, no flapping.
    let c = (
        fid("c"),
        object_conditions(
            &id,
            &[Diagnostic::error(&id, "", "Invalid", "x")],
            Some(1),
            &fid("c"),
            &t(3),
        ),
    );
    let (settled, _) = settle(&[a.clone(), c], &everyone);
    assert_eq!(cond(&settled, condition::ACCEPTED).reason, "DuplicateKey");
    // Both agree on True: settles immediately.
    let b2 = (fid("b2"), object_conditions(&id, &[], Some(1), &fid("b2"), &t(4)));
    let (settled, _) = settle(&[b.clone(), b2], &everyone);
    assert_eq!(cond(&settled, condition::ACCEPTED).status, "True");
}

#[test]
fn the_failing_fleet_clears_its_own_failure() {
    let id = ObjectId::new("VirtualKey", "team-a", "k");
    let bad = vec![Diagnostic::error(&id, "", "DuplicateKey", "dup")];
    let everyone = |_: &FleetId| true;
    let failed = merge_conditions(
        &[],
        object_conditions(&id, &bad, Some(1), &fid("a"), &t(1)),
        &fid("a"),
        &everyone,
    );
    // Fleet b computes True: the failure of a stands.
    let by_b = merge_conditions(
        &failed,
        object_conditions(&id, &[], Some(1), &fid("b"), &t(2)),
        &fid("b"),
        &everyone,
    );
    assert_eq!(by_b, failed);
    // Fleet a is fixed: it clears it.
    let fixed = merge_conditions(
        &failed,
        object_conditions(&id, &[], Some(1), &fid("a"), &t(3)),
        &fid("a"),
        &everyone,
    );
    assert_eq!(cond(&fixed, condition::ACCEPTED).status, "True");
    assert_eq!(cond(&fixed, condition::ACCEPTED).last_transition_time, t(3));
    // Fleet a no longer compiles the key: b may overwrite.
    let only_b = |f: &FleetId| f == &fid("b");
    let taken = merge_conditions(
        &failed,
        object_conditions(&id, &[], Some(1), &fid("b"), &t(4)),
        &fid("b"),
        &only_b,
    );
    assert_eq!(cond(&taken, condition::ACCEPTED).status, "True");
    // A new generation is judged afresh by whoever reconciles first.
    let newer = merge_conditions(
        &failed,
        object_conditions(&id, &[], Some(2), &fid("b"), &t(5)),
        &fid("b"),
        &everyone,
    );
    assert_eq!(cond(&newer, condition::ACCEPTED).status, "True");
}

fn pods(ready: i32, programmed: i32) -> PodsObserved {
    PodsObserved {
        replicas: Some(ready),
        ready_replicas: Some(ready),
        available: ready > 0,
        ready_pods: ready,
        programmed_pods: programmed,
    }
}

#[test]
fn gateway_is_programmed_when_every_ready_pod_runs_the_generation() {
    let id = ObjectId::new("LLMGateway", "infra", "edge");
    let config = ConfigState {
        generation: 7,
        hash: "abc".into(),
        routes: 2,
        keys: 5,
    };
    let pending = gateway_status(None, &id, Some(3), &[], &config, &pods(3, 2), &t(10));
    assert_eq!(cond(&pending.conditions, condition::ACCEPTED).status, "True");
    assert_eq!(cond(&pending.conditions, condition::READY).status, "True");
    let p = cond(&pending.conditions, condition::PROGRAMMED);
    assert_eq!((p.status.as_str(), p.reason.as_str()), ("False", "Pending"));
    assert!(
        p.message.starts_with("2/3 ready pods run config generation 7"),
        "{}",
        p.message
    );
    assert_eq!(pending.config_generation, Some(7));
    assert_eq!(pending.config_hash.as_deref(), Some("abc"));
    assert_eq!(
        (pending.routes, pending.keys, pending.observed_generation),
        (Some(2), Some(5), Some(3))
    );
    let done = gateway_status(Some(&pending), &id, Some(3), &[], &config, &pods(3, 3), &t(20));
    assert_eq!(cond(&done.conditions, condition::PROGRAMMED).status, "True");
    assert_eq!(
        cond(&done.conditions, condition::PROGRAMMED).last_transition_time,
        t(20)
    );
    assert_eq!(cond(&done.conditions, condition::READY).last_transition_time, t(10));
    // Recomputing with nothing changed gives an equal status: no write.
    assert_eq!(
        gateway_status(Some(&done), &id, Some(3), &[], &config, &pods(3, 3), &t(30)),
        done
    );
    // No ready pod: neither ready nor programmed.
    let down = gateway_status(Some(&done), &id, Some(3), &[], &config, &pods(0, 0), &t(40));
    assert_eq!(cond(&down.conditions, condition::READY).status, "False");
    assert_eq!(cond(&down.conditions, condition::PROGRAMMED).status, "False");
}

#[test]
fn route_parents_hold_one_entry_per_live_fleet() {
    let parent = |name: &str| RouteParentStatus {
        parent_ref: NamespacedRef {
            name: name.into(),
            namespace: Some("infra".into()),
        },
        conditions: vec![],
    };
    let existing = LLMRouteStatus {
        conditions: vec![],
        parents: vec![parent("zeta"), parent("gone"), parent("edge")],
        observed_generation: Some(1),
    };
    let live = |f: &FleetId| f.1 != "gone";
    let everyone = |_: &FleetId| true;
    let id = ObjectId::new("LLMRoute", "team-a", "r");
    let mine = object_conditions(&id, &[], Some(2), &fid("edge"), &t(5));
    let s = route_status(
        Some(&existing),
        Some(2),
        &fid("edge"),
        Some(mine.clone()),
        Some(mine),
        &live,
        &everyone,
    );
    let names: Vec<&str> = s.parents.iter().map(|p| p.parent_ref.name.as_str()).collect();
    assert_eq!(names, ["edge", "zeta"]);
    assert_eq!(s.parents[0].conditions.len(), 2);
    assert_eq!(s.observed_generation, Some(2));
    assert_eq!(cond(&s.conditions, condition::ACCEPTED).status, "True");
    // The fleet no longer serves the route: its entry goes, the top-level conditions stay.
    let s2 = route_status(Some(&s), Some(2), &fid("edge"), None, None, &live, &everyone);
    let names: Vec<&str> = s2.parents.iter().map(|p| p.parent_ref.name.as_str()).collect();
    assert_eq!(names, ["zeta"]);
    assert_eq!(s2.conditions, s.conditions);
    // Not admitted but named: Accepted=False NotAllowedByGateway in its entry.
    let na = not_allowed_conditions("team-a", Some(2), &fid("edge"), &t(6));
    let s3 = route_status(Some(&s2), Some(2), &fid("edge"), Some(na), None, &live, &everyone);
    assert_eq!(s3.parents[0].conditions[0].reason, "NotAllowedByGateway");
}

#[test]
fn programmed_follows_config_and_pods() {
    let f = fid("edge");
    assert_eq!(
        programmed_condition(false, &pods(2, 2), 3, Some(1), &f, &t(1), None).reason,
        "NotAccepted"
    );
    assert_eq!(
        programmed_condition(true, &pods(2, 1), 3, Some(1), &f, &t(1), None).reason,
        "Pending"
    );
    assert_eq!(
        programmed_condition(true, &pods(2, 2), 3, Some(1), &f, &t(1), None).status,
        "True"
    );
}

#[test]
fn programmed_stays_put_across_later_configurations() {
    let f = fid("edge");
    let served = programmed_condition(true, &pods(2, 2), 3, Some(1), &f, &t(1), None);
    assert_eq!(
        served.message,
        "served from config generation 3 (LLMGateway infra/edge)"
    );
    // Generation 4 rolls out (one pod still on 3): the unchanged route is still served.
    let during = programmed_condition(true, &pods(2, 1), 4, Some(1), &f, &t(2), Some(&served));
    assert_eq!(during, served);
    let after = programmed_condition(true, &pods(2, 2), 5, Some(1), &f, &t(3), Some(&served));
    assert_eq!(after, served, "no status write for a route that did not change");
    // The route is edited (generation 2): it is Pending until the pods run the new config.
    let edited = programmed_condition(true, &pods(2, 1), 6, Some(2), &f, &t(4), Some(&served));
    assert_eq!((edited.status.as_str(), edited.reason.as_str()), ("False", "Pending"));
    // Still pending when generation 7 comes: the same meaning, so no status write for it.
    let later = programmed_condition(true, &pods(2, 1), 7, Some(2), &f, &t(5), Some(&edited));
    assert!(same_meaning(&later, &edited), "{later:?}");
    // Left out of the config: no longer Programmed, whatever it was.
    let dropped = programmed_condition(false, &pods(2, 2), 7, Some(1), &f, &t(5), Some(&served));
    assert_eq!(dropped.reason, "NotAccepted");
}

#[test]
fn long_messages_are_cut_on_a_character_boundary() {
    let c = fleet_condition(
        "Accepted",
        false,
        "Invalid",
        &"é".repeat(2000),
        None,
        &fid("edge"),
        &t(1),
    );
    assert!(c.message.len() < 1100);
    assert_eq!(writer_of(&c), Some(fid("edge")));
}

#[test]
fn events_follow_new_failures_only() {
    let f: FleetId = ("llm".into(), "edge".into());
    let now = Time(Timestamp::now());
    let id = ObjectId::new("LLMRoute", "llm", "r");
    let bad = [Diagnostic::error(&id, "", "ProviderNotFound", "x")];
    let failing = status::object_conditions(&id, &bad, Some(1), &f, &now);
    let fine = status::object_conditions(&id, &[], Some(1), &f, &now);
    assert!(accepted_changed(&[], &failing));
    assert!(accepted_changed(&fine, &failing));
    assert!(!accepted_changed(&failing, &failing));
    assert!(!accepted_changed(&failing, &fine));
    let next_gen = status::object_conditions(&id, &bad, Some(2), &f, &now);
    assert!(accepted_changed(&failing, &next_gen));
}

fn route_in(ns: &str, name: &str, parents: serde_json::Value) -> Arc<LLMRoute> {
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "switchyard.dev/v1alpha1", "kind": "LLMRoute",
            "metadata": {"name": name, "namespace": ns, "generation": 1},
            "spec": {"model": name, "backends": [{"providerRef": {"name": "mock"}, "model": "m"}], "parentRefs": parents},
        }))
        .unwrap(),
    )
}

#[test]
fn a_fleet_writes_the_routes_it_serves_or_refuses_and_only_what_changed() {
    let gw: Arc<LLMGateway> = Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "switchyard.dev/v1alpha1", "kind": "LLMGateway",
            "metadata": {"name": "edge", "namespace": "llm"}, "spec": {},
        }))
        .unwrap(),
    );
    let mut routes = vec![
        // Served: same namespace, no parents.
        route_in("llm", "chat", json!([])),
        // Names the fleet from a namespace it does not admit.
        route_in("team-b", "stray", json!([{"name": "edge", "namespace": "llm"}])),
        // Neither: left alone.
        route_in("team-b", "other", json!([])),
    ];
    let mut m = Manifests::default();
    m.gateways.push((*gw).clone());
    m.routes.extend(routes.iter().map(|r| (**r).clone()));
    let compiled = compile(
        &m,
        &CompileOptions {
            fleet: Some(("llm".into(), "edge".into())),
        },
    );
    let work = StatusWork::new(gw.clone(), &compiled, PodsObserved::default(), 1);
    let namespaces: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let none = |_: &str, _: &str| None;
    let gateways = [gw.clone()];
    let statuses = |routes: &[Arc<LLMRoute>]| {
        object_statuses(
            &work,
            &Cached {
                gateways: &gateways,
                routes,
                providers: &[],
                keys: &[],
                namespaces: &namespaces,
                secret: &none,
            },
            &t(100),
        )
    };

    let updates = statuses(&routes);
    let names: Vec<&str> = updates
        .routes
        .iter()
        .map(|u| u.object.metadata.name.as_deref().unwrap())
        .collect();
    assert_eq!(names, ["chat", "stray"]);
    let chat = &updates.routes[0];
    assert_eq!(chat.status.parents.len(), 1);
    assert!(
        !chat.status.conditions.is_empty(),
        "a served route gets top-level conditions"
    );
    // `chat` names the missing Provider: its errors deserve events.
    assert_eq!(chat.new_errors, Some(ObjectId::new("LLMRoute", "llm", "chat")));
    let stray = &updates.routes[1];
    assert_eq!(
        cond(&stray.status.parents[0].conditions, condition::ACCEPTED).reason,
        "NotAllowedByGateway"
    );
    assert!(
        stray.status.conditions.is_empty(),
        "a refusing fleet sets no top-level conditions"
    );
    assert_eq!(stray.new_errors, None);

    // Written back, the same outcome writes nothing.
    for (r, u) in routes.iter_mut().zip(&updates.routes) {
        Arc::make_mut(r).status = Some(u.status.clone());
    }
    assert_eq!(statuses(&routes).len(), 0);
}

#[test]
fn a_fleet_admitting_every_namespace_writes_nothing_on_routes_that_did_not_name_it() {
    let gw: Arc<LLMGateway> = Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "switchyard.dev/v1alpha1", "kind": "LLMGateway",
            "metadata": {"name": "grab", "namespace": "hostile"},
            "spec": {"routes": {"from": "All"}, "keys": {"from": "All"}},
        }))
        .unwrap(),
    );
    let own: Arc<LLMGateway> = Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "switchyard.dev/v1alpha1", "kind": "LLMGateway",
            "metadata": {"name": "own", "namespace": "team-a"}, "spec": {},
        }))
        .unwrap(),
    );
    // team-a's route is served by its own fleet (its status says so); team-b's names no parent;
    // team-c's names the hostile fleet.
    let mut victim = route_in("team-a", "chat", json!([]));
    let own_view = vec![fleet_condition(
        condition::PROGRAMMED,
        true,
        "Programmed",
        "served from config generation 1",
        Some(1),
        &("team-a".to_owned(), "own".to_owned()),
        &t(1),
    )];
    Arc::make_mut(&mut victim).status = Some(LLMRouteStatus {
        conditions: own_view.clone(),
        parents: vec![RouteParentStatus {
            parent_ref: NamespacedRef {
                name: "own".into(),
                namespace: Some("team-a".into()),
            },
            conditions: own_view,
        }],
        observed_generation: Some(1),
    });
    let routes = vec![
        victim,
        route_in("team-b", "chat", json!([])),
        route_in("team-c", "chat", json!([{"name": "grab", "namespace": "hostile"}])),
    ];
    let providers: Vec<Arc<Provider>> = ["team-a", "team-b", "team-c"]
        .into_iter()
        .map(|ns| {
            Arc::new(
                serde_json::from_value(json!({
                    "apiVersion": "switchyard.dev/v1alpha1", "kind": "Provider",
                    "metadata": {"name": "mock", "namespace": ns, "generation": 1},
                    "spec": {"type": "mock"},
                }))
                .unwrap(),
            )
        })
        .collect();
    let namespaces: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let none = |_: &str, _: &str| None;
    let m = fleet::fleet_manifests(&gw, &providers, &routes, &[], &none, &namespaces);
    let compiled = compile(
        &m,
        &CompileOptions {
            fleet: Some(("hostile".into(), "grab".into())),
        },
    );
    let work = StatusWork::new(gw.clone(), &compiled, PodsObserved::default(), 1);
    let gateways = [gw.clone(), own];
    let updates = object_statuses(
        &work,
        &Cached {
            gateways: &gateways,
            routes: &routes,
            providers: &providers,
            keys: &[],
            namespaces: &namespaces,
            secret: &none,
        },
        &t(100),
    );
    let written: Vec<String> = updates
        .routes
        .iter()
        .map(|u| fleet::ns(&*u.object))
        .chain(updates.providers.iter().map(|u| fleet::ns(&*u.object)))
        .collect();
    assert_eq!(written, ["team-c", "team-c"], "only the namespace that named the fleet");

    // The fleet's own status says why, by counts only.
    let id = ObjectId::new("LLMGateway", "hostile", "grab");
    let config = ConfigState {
        generation: 1,
        hash: "h".into(),
        routes: compiled.config.routes.len(),
        keys: 0,
    };
    let st = gateway_status(None, &id, Some(1), &compiled.diagnostics, &config, &pods(1, 1), &t(100));
    assert_eq!(st.routes, Some(1));
    let r = cond(&st.conditions, condition::RESOLVED_REFS);
    assert_eq!((r.status.as_str(), r.reason.as_str()), ("False", "RefNotPermitted"));
    assert!(r.message.starts_with("2 route(s) and 0 key(s)"), "{}", r.message);
    assert!(!r.message.contains("team-"), "{}", r.message);
    assert_eq!(cond(&st.conditions, condition::ACCEPTED).status, "True");
}
