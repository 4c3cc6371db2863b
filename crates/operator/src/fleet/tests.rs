use super::*;
use serde_json::json;

fn obj<K: serde::de::DeserializeOwned>(kind: &str, ns: &str, name: &str, spec: serde_json::Value) -> K {
    serde_json::from_value(json!({
        "apiVersion": if kind == "Secret" { "v1" } else { "switchyard.dev/v1alpha1" },
        "kind": kind,
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }))
    .unwrap()
}

fn gw(ns: &str, name: &str, spec: serde_json::Value) -> LLMGateway {
    obj("LLMGateway", ns, name, spec)
}

fn route(ns: &str, name: &str, parents: serde_json::Value) -> LLMRoute {
    obj(
        "LLMRoute",
        ns,
        name,
        json!({"model": name, "backends": [{"providerRef": {"name": "p"}, "model": "m"}], "parentRefs": parents}),
    )
}

fn secret(ns: &str, name: &str) -> Secret {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": ns},
        "stringData": {"apiKey": "x", "key": "sk-swy-1"},
    }))
    .unwrap()
}

fn namespaces() -> BTreeMap<String, BTreeMap<String, String>> {
    BTreeMap::from([
        (
            "team-a".to_owned(),
            BTreeMap::from([("llm".to_owned(), "on".to_owned())]),
        ),
        ("team-b".to_owned(), BTreeMap::new()),
        ("infra".to_owned(), BTreeMap::new()),
    ])
}

/// `same` admits its own namespace, `all` every namespace, `sel` namespaces labelled llm=on.
fn fleets() -> Vec<LLMGateway> {
    vec![
        gw("infra", "same", json!({})),
        gw(
            "infra",
            "all",
            json!({"routes": {"from": "All"}, "keys": {"from": "All"}}),
        ),
        gw(
            "infra",
            "sel",
            json!({"routes": {"from": "Selector", "selector": {"matchLabels": {"llm": "on"}}},
                   "keys": {"from": "Selector", "selector": {"matchExpressions": [{"key": "llm", "operator": "In", "values": ["on"]}]}}}),
        ),
    ]
}

fn names(refs: Vec<ObjectRef<LLMGateway>>) -> Vec<String> {
    refs.into_iter().map(|r| r.name).collect()
}

#[test]
fn routes_map_to_the_fleets_that_admit_their_namespace() {
    let f = fleets();
    let ns = namespaces();
    assert_eq!(
        names(fleets_for_route(&route("infra", "r", json!([])), &f, &ns)),
        ["all", "same"]
    );
    assert_eq!(
        names(fleets_for_route(&route("team-a", "r", json!([])), &f, &ns)),
        ["all", "sel"]
    );
    assert_eq!(
        names(fleets_for_route(&route("team-b", "r", json!([])), &f, &ns)),
        ["all"]
    );
    // An unknown namespace has no labels: only `All` admits it.
    assert_eq!(names(fleets_for_route(&route("new", "r", json!([])), &f, &ns)), ["all"]);
}

#[test]
fn parent_refs_choose_among_admitting_fleets_and_still_reach_the_named_one() {
    let f = fleets();
    let ns = namespaces();
    // Names `same`, which does not admit team-b: `same` is still told (to report NotAllowed).
    let r = route("team-b", "r", json!([{"name": "same", "namespace": "infra"}]));
    assert_eq!(names(fleets_for_route(&r, &f, &ns)), ["all", "same"]);
    assert!(!considers_route(&f[0], &r, &ns));
    assert!(
        !considers_route(&f[1], &r, &ns),
        "all admits team-b but the route names only `same`"
    );
    // Names `all` (namespace defaults to the route's own: team-b, so this names nothing).
    let r = route("team-b", "r", json!([{"name": "all"}]));
    assert!(!names_fleet(&r, &f[1]));
    let r = route("infra", "r", json!([{"name": "all"}]));
    assert!(names_fleet(&r, &f[1]));
    assert!(considers_route(&f[1], &r, &ns));
    assert!(!considers_route(&f[0], &r, &ns));
    // The route left `same`: `same` admits infra, so it is re-reconciled and drops it.
    assert_eq!(names(fleets_for_route(&r, &f, &ns)), ["all", "same"]);
}

#[test]
fn providers_and_keys_follow_their_admission() {
    let f = fleets();
    let ns = namespaces();
    let p: Provider = obj("Provider", "team-a", "p", json!({"type": "mock"}));
    assert_eq!(names(fleets_for_provider(&p, &f, &ns)), ["all", "sel"]);
    let k: VirtualKey = obj("VirtualKey", "team-a", "k", json!({}));
    assert_eq!(names(fleets_for_key(&k, &f, &ns)), ["all", "sel"]);
    let k: VirtualKey = obj("VirtualKey", "infra", "k", json!({}));
    assert_eq!(names(fleets_for_key(&k, &f, &ns)), ["all", "same"]);
}

#[test]
fn namespace_label_changes_reach_selecting_fleets() {
    assert_eq!(names(fleets_for_namespace(&fleets())), ["sel"]);
}

#[test]
fn secrets_map_through_their_readers_only() {
    let f = fleets();
    let ns = namespaces();
    let gws: Vec<&LLMGateway> = f.iter().collect();
    let p: Provider = obj(
        "Provider",
        "team-a",
        "openai",
        json!({"type": "openai", "credentials": {"secretRef": {"name": "openai-creds"}}}),
    );
    let generated: VirtualKey = obj("VirtualKey", "infra", "ci", json!({}));
    let own: VirtualKey = obj(
        "VirtualKey",
        "team-b",
        "bob",
        json!({"secretRef": {"name": "bob-secret"}, "budget": {"maxSpend": 5.0, "webhook": {"url": "https://h", "signingSecretRef": {"name": "hook"}}}}),
    );
    let redis = gw(
        "infra",
        "same",
        json!({"redis": {"urlSecretRef": {"name": "redis-url"}}}),
    );
    let gws_redis: Vec<&LLMGateway> = vec![&redis, &f[1], &f[2]];
    let map = |s: Secret, gws: &[&LLMGateway]| names(fleets_for_secret(&s, gws, &[&p], &[&generated, &own], &ns));
    assert_eq!(map(secret("team-a", "openai-creds"), &gws), ["all", "sel"]);
    assert_eq!(
        map(secret("team-b", "openai-creds"), &gws),
        Vec::<String>::new(),
        "other namespace"
    );
    assert_eq!(map(secret("infra", "ci-key"), &gws), ["all", "same"]);
    assert_eq!(map(secret("team-b", "bob-secret"), &gws), ["all"]);
    assert_eq!(map(secret("team-b", "hook"), &gws), ["all"]);
    assert_eq!(map(secret("infra", "unrelated"), &gws), Vec::<String>::new());
    assert_eq!(map(secret("infra", "redis-url"), &gws_redis), ["same"]);
    // The allocation-free check agrees with the names a key reads.
    for k in [&generated, &own] {
        for name in ["ci-key", "ci", "bob-secret", "bob-key", "hook", "unrelated"] {
            assert_eq!(
                key_reads_secret(k, name),
                key_secret_names(k).iter().any(|n| n == name),
                "{name}"
            );
        }
    }
}

#[test]
fn labelled_objects_map_to_their_fleet() {
    let mut s = secret("infra", "edge-config-0");
    assert!(fleet_of_labelled(&s).is_none());
    s.metadata.labels = Some(BTreeMap::from([
        (LABEL_FLEET.to_owned(), "edge".to_owned()),
        (CONFIG_GENERATION.to_owned(), "3".to_owned()),
    ]));
    let r = fleet_of_labelled(&s).unwrap();
    assert_eq!((r.name.as_str(), r.namespace.as_deref()), ("edge", Some("infra")));
    assert!(is_config_shard(&s));
}

#[test]
fn manifests_hold_only_what_the_fleet_admits() {
    let labels = namespaces();
    let sel = &fleets()[2];
    let providers: Vec<Arc<Provider>> = vec![
        Arc::new(obj(
            "Provider",
            "team-a",
            "p",
            json!({"type": "openai", "credentials": {"secretRef": {"name": "creds"}}}),
        )),
        Arc::new(obj("Provider", "team-b", "p", json!({"type": "mock"}))),
    ];
    // team-a grants `sel` its route `a` and key `k` by name; team-b names nobody.
    let routes: Vec<Arc<LLMRoute>> = vec![
        Arc::new(route("team-a", "a", json!([{"name": "sel", "namespace": "infra"}]))),
        Arc::new(route("team-b", "b", json!([]))),
        Arc::new(route(
            "team-a",
            "elsewhere",
            json!([{"name": "all", "namespace": "infra"}]),
        )),
    ];
    let keys: Vec<Arc<VirtualKey>> = vec![
        Arc::new(obj(
            "VirtualKey",
            "team-a",
            "k",
            json!({"parentRefs": [{"name": "sel", "namespace": "infra"}]}),
        )),
        Arc::new(obj("VirtualKey", "team-b", "k", json!({}))),
    ];
    let secrets: BTreeMap<(String, String), Arc<Secret>> = [
        secret("team-a", "creds"),
        secret("team-a", "k-key"),
        secret("team-a", "unrelated"),
        secret("team-b", "k-key"),
    ]
    .into_iter()
    .map(|s| ((ns_of_secret(&s), s.name_any()), Arc::new(s)))
    .collect();
    let lookup = |n: &str, name: &str| secrets.get(&(n.to_owned(), name.to_owned())).cloned();
    let m = fleet_manifests(sel, &providers, &routes, &keys, &lookup, &labels);
    let ids = |v: Vec<(String, String)>| v;
    assert_eq!(
        ids(m.providers.iter().map(|p| (ns(p), p.name_any())).collect()),
        [("team-a".to_owned(), "p".to_owned())]
    );
    assert_eq!(
        ids(m.routes.iter().map(|r| (ns(r), r.name_any())).collect()),
        [("team-a".to_owned(), "a".to_owned())]
    );
    assert_eq!(
        ids(m.keys.iter().map(|k| (ns(k), k.name_any())).collect()),
        [("team-a".to_owned(), "k".to_owned())]
    );
    assert_eq!(
        m.secrets.keys().cloned().collect::<Vec<_>>(),
        [
            ("team-a".to_owned(), "creds".to_owned()),
            ("team-a".to_owned(), "k-key".to_owned())
        ]
    );
    assert_eq!(m.gateways.len(), 1);
    assert!(m.namespaces.contains_key("team-a"));
    // The compile of those manifests serves the route and the key.
    let c = switchyard_config::compile(
        &m,
        &switchyard_config::CompileOptions {
            fleet: Some(fleet_id(sel)),
        },
    );
    assert_eq!(c.config.keys.len(), 1);
    assert_eq!(c.config.routes.len(), 1, "{:?}", c.diagnostics);
}

fn ns_of_secret(s: &Secret) -> String {
    s.metadata.namespace.clone().unwrap_or_default()
}

#[test]
fn a_fleet_admitting_every_namespace_reads_no_secret_of_a_namespace_that_did_not_name_it() {
    let labels = namespaces();
    let all = &fleets()[1];
    let providers: Vec<Arc<Provider>> = vec![
        Arc::new(obj(
            "Provider",
            "team-a",
            "p",
            json!({"type": "openai", "credentials": {"secretRef": {"name": "creds"}}}),
        )),
        Arc::new(obj(
            "Provider",
            "team-b",
            "p",
            json!({"type": "openai", "credentials": {"secretRef": {"name": "creds"}}}),
        )),
    ];
    let routes: Vec<Arc<LLMRoute>> = vec![
        Arc::new(route("team-a", "a", json!([]))),
        Arc::new(route("team-b", "b", json!([{"name": "all", "namespace": "infra"}]))),
    ];
    let keys: Vec<Arc<VirtualKey>> = vec![Arc::new(obj("VirtualKey", "team-a", "k", json!({})))];
    let secrets: BTreeMap<(String, String), Arc<Secret>> = [
        secret("team-a", "creds"),
        secret("team-a", "k-key"),
        secret("team-b", "creds"),
    ]
    .into_iter()
    .map(|s| ((ns_of_secret(&s), s.name_any()), Arc::new(s)))
    .collect();
    let lookup = |n: &str, name: &str| secrets.get(&(n.to_owned(), name.to_owned())).cloned();
    let m = fleet_manifests(all, &providers, &routes, &keys, &lookup, &labels);
    // team-b named the fleet: its Provider and credentials come in; team-a's never do.
    assert_eq!(
        m.secrets.keys().cloned().collect::<Vec<_>>(),
        [("team-b".to_owned(), "creds".to_owned())]
    );
    assert!(!serves_provider(all, &providers[0], &routes, &labels));
    assert!(serves_provider(all, &providers[1], &routes, &labels));
    assert!(!considers_route(all, &routes[0], &labels));
    assert!(!considers_key(all, &keys[0], &labels));
    let c = switchyard_config::compile(
        &m,
        &switchyard_config::CompileOptions {
            fleet: Some(fleet_id(all)),
        },
    );
    let served: Vec<&str> = c.config.routes.iter().map(|r| r.namespace.as_str()).collect();
    assert_eq!(served, ["team-b"], "{:?}", c.diagnostics);
    assert!(c.config.keys.is_empty());
    // team-a's route and key are counted (not named) on the fleet.
    let d = c
        .diagnostics
        .iter()
        .find(|d| d.reason == switchyard_config::REF_NOT_PERMITTED)
        .expect("RefNotPermitted");
    assert!(d.message.starts_with("1 route(s) and 1 key(s)"), "{}", d.message);
    assert!(!d.message.contains("team-a"));
}
