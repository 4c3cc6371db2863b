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
    let mut keys = KeySecrets::default();
    keys.insert(&generated);
    keys.insert(&own);
    let map = |s: Secret, gws: &[&LLMGateway], keys: &KeySecrets| names(fleets_for_secret(&s, gws, &[&p], keys, &ns));
    assert_eq!(map(secret("team-a", "openai-creds"), &gws, &keys), ["all", "sel"]);
    assert_eq!(
        map(secret("team-b", "openai-creds"), &gws, &keys),
        Vec::<String>::new(),
        "other namespace"
    );
    assert_eq!(map(secret("infra", "ci-key"), &gws, &keys), ["all", "same"]);
    assert_eq!(map(secret("team-b", "bob-secret"), &gws, &keys), ["all"]);
    assert_eq!(map(secret("team-b", "hook"), &gws, &keys), ["all"]);
    assert_eq!(map(secret("infra", "unrelated"), &gws, &keys), Vec::<String>::new());
    assert_eq!(map(secret("infra", "redis-url"), &gws_redis, &keys), ["same"]);
    assert_eq!(
        map(secret("team-b", "ci-key"), &gws, &keys),
        Vec::<String>::new(),
        "a key reads its own namespace's Secrets"
    );

    // A key that changes its Secret, or goes, no longer maps the old one; a Secret two keys
    // read maps until both are gone.
    let mut moved = own.clone();
    moved.spec.secret_ref.as_mut().unwrap().name = "bob-new".into();
    keys.insert(&moved);
    assert_eq!(map(secret("team-b", "bob-secret"), &gws, &keys), Vec::<String>::new());
    assert_eq!(map(secret("team-b", "bob-new"), &gws, &keys), ["all"]);
    assert_eq!(map(secret("team-b", "hook"), &gws, &keys), ["all"]);
    let mut twin = moved.clone();
    twin.metadata.name = Some("twin".into());
    keys.insert(&twin);
    keys.remove(&moved);
    assert_eq!(
        map(secret("team-b", "bob-new"), &gws, &keys),
        ["all"],
        "the twin still reads it"
    );
    keys.remove(&twin);
    keys.remove(&twin);
    assert_eq!(map(secret("team-b", "bob-new"), &gws, &keys), Vec::<String>::new());
    assert_eq!(map(secret("team-b", "hook"), &gws, &keys), Vec::<String>::new());
    keys.remove(&generated);
    assert_eq!(map(secret("infra", "ci-key"), &gws, &keys), Vec::<String>::new());
    assert_eq!(keys, KeySecrets::default(), "nothing is left behind");
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

/// The fleet of `tests/k8s/test_scale.py` as the caches hold it: 1,000 routes on one mock
/// Provider, 10,000 keys (odd ones read 100-key user Secrets, even ones generated Secrets), each
/// with the uid, resourceVersion and Ready condition the API server and the operator give it.
pub(crate) mod scale {
    use super::*;

    fn meta(ns: &str, name: &str, i: usize) -> serde_json::Value {
        json!({"name": name, "namespace": ns, "uid": format!("uid-{name}"), "resourceVersion": format!("{}", 1000 + i),
               "generation": 1, "creationTimestamp": "2026-12-03T18:00:00Z"})
    }

    /// The objects, as `Arc`s the way reflector stores hand them out.
    pub(crate) struct Fleet {
        pub gw: LLMGateway,
        pub providers: Vec<Arc<Provider>>,
        pub routes: Vec<Arc<LLMRoute>>,
        pub keys: Vec<Arc<VirtualKey>>,
        pub secrets: BTreeMap<(String, String), Arc<Secret>>,
    }

    pub(crate) fn route(ns: &str, i: usize, backend: &str) -> LLMRoute {
        let name = format!("route-{i:04}");
        serde_json::from_value(json!({
            "apiVersion": "switchyard.dev/v1alpha1", "kind": "LLMRoute", "metadata": meta(ns, &name, i),
            "spec": {"model": name, "backends": [{"providerRef": {"name": "mock"}, "model": backend}]},
        }))
        .unwrap()
    }

    pub(crate) fn fleet(routes: usize, keys: usize) -> Fleet {
        let ns = "scale";
        let gw: LLMGateway = serde_json::from_value(json!({
            "apiVersion": "switchyard.dev/v1alpha1", "kind": "LLMGateway", "metadata": meta(ns, "scale", 0),
            "spec": {"replicas": 1},
        }))
        .unwrap();
        let provider: Provider = serde_json::from_value(json!({
            "apiVersion": "switchyard.dev/v1alpha1", "kind": "Provider", "metadata": meta(ns, "mock", 0),
            "spec": {"type": "mock", "mock": {"timeToFirstToken": "1ms", "tokensPerSecond": 100000}},
        }))
        .unwrap();
        let mut secrets = BTreeMap::new();
        let mut out_keys = Vec::new();
        for i in 0..keys {
            let name = format!("key-{i:05}");
            let mut spec = json!({"labels": {"team": format!("team-{}", i % 50)}, "limits": {"rpm": 1_000_000}});
            let (sname, skey) = if i % 2 == 1 {
                let s = format!("user-keys-{:03}", i / 100);
                spec["secretRef"] = json!({"name": s, "key": name});
                (s, name.clone())
            } else {
                (format!("{name}-key"), "key".to_owned())
            };
            let secret = secrets.entry((ns.to_owned(), sname.clone())).or_insert_with(|| Secret {
                metadata: serde_json::from_value(meta(ns, &sname, i)).unwrap(),
                data: Some(BTreeMap::new()),
                ..Secret::default()
            });
            secret
                .data
                .get_or_insert_with(BTreeMap::new)
                .insert(skey, k8s_openapi::ByteString(format!("sk-scale-{i:05}").into_bytes()));
            out_keys.push(Arc::new(
                serde_json::from_value::<VirtualKey>(json!({
                    "apiVersion": "switchyard.dev/v1alpha1", "kind": "VirtualKey", "metadata": meta(ns, &name, i),
                    "spec": spec,
                    "status": {"secretName": sname, "conditions": [
                        {"type": "Ready", "status": "True", "reason": "Compiled", "message": "served by scale/scale",
                         "lastTransitionTime": "2026-12-03T18:00:00Z", "observedGeneration": 1}]},
                }))
                .unwrap(),
            ));
        }
        Fleet {
            gw,
            providers: vec![Arc::new(provider)],
            routes: (0..routes)
                .map(|i| Arc::new(route(ns, i, &format!("mock-{i:04}"))))
                .collect(),
            keys: out_keys,
            secrets: secrets.into_iter().map(|(k, v)| (k, Arc::new(v))).collect(),
        }
    }

    impl Fleet {
        pub(crate) fn manifests(&self) -> Manifests {
            let secret = |ns: &str, name: &str| self.secrets.get(&(ns.to_owned(), name.to_owned())).cloned();
            let ns: BTreeMap<String, BTreeMap<String, String>> =
                BTreeMap::from([("scale".to_owned(), BTreeMap::new())]);
            fleet_manifests(&self.gw, &self.providers, &self.routes, &self.keys, &secret, &ns)
        }
    }
}

/// Where one edit's reconcile spends its time at the scale of `tests/k8s/test_scale.py`
/// (`cargo test -p switchyard-operator scale_timing -- --ignored --nocapture`, with `--release`
/// for the shipped code generation).
#[test]
#[ignore = "a timing, not a test"]
fn scale_timing() {
    use std::time::Instant;
    let f = scale::fleet(1_000, 10_000);
    let opts = switchyard_config::CompileOptions {
        fleet: Some(("scale".into(), "scale".into())),
    };
    let mut memo = switchyard_config::CompileMemo::default();
    let mut last = switchyard_config::source::LastSplit::default();
    let mut f = f;
    for round in 0..4 {
        // Round 0 compiles from scratch; each later one after a single-route edit.
        if round > 0 {
            let mut edited = scale::route("scale", round * 97, &format!("edit-{round}"));
            edited.metadata.resource_version = Some(format!("{}", 100_000 + round));
            f.routes[round * 97] = Arc::new(edited);
        }
        let t = Instant::now();
        let m = f.manifests();
        let gather = t.elapsed();
        let t = Instant::now();
        let fresh = switchyard_config::compile(&m, &opts);
        let scratch = t.elapsed();
        let t = Instant::now();
        let compiled = switchyard_config::compile_with(&m, &opts, &mut memo);
        let compile = t.elapsed();
        let t = Instant::now();
        let hash = compiled.config.hash();
        let hash_t = t.elapsed();
        let t = Instant::now();
        let whole = switchyard_config::source::split_config(&compiled.config, Some(28)).unwrap();
        let split_scratch = t.elapsed();
        let t = Instant::now();
        let split = switchyard_config::source::split_config_after(&compiled.config, Some(28), &mut last).unwrap();
        let split_t = t.elapsed();
        assert_eq!(split, whole);
        assert_eq!(split.hash, hash);
        assert_eq!(compiled.config, fresh.config);
        assert_eq!(compiled.config.keys.len(), 10_000);
        eprintln!(
            "round {round}: gather {gather:?}; compile from scratch {scratch:?}, with the memo {compile:?}; \
             hash {hash_t:?}; split from scratch {split_scratch:?}, after the last {split_t:?}"
        );
    }
}
