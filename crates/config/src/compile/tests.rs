use super::*;
use crate::manifests::Manifests;

const PROVIDERS: &str = r#"
apiVersion: switchyard.dev/v1alpha1
kind: Provider
metadata: {name: mock}
spec:
  type: mock
---
apiVersion: switchyard.dev/v1alpha1
kind: Provider
metadata: {name: openai}
spec:
  type: openai
  baseUrl: http://127.0.0.1:9999/v1
  credentials: {secretRef: {name: openai}}
  region: us
---
apiVersion: v1
kind: Secret
metadata: {name: openai}
stringData: {apiKey: sk-upstream}
"#;

const ROUTES: &str = r#"
apiVersion: switchyard.dev/v1alpha1
kind: LLMRoute
metadata: {name: good}
spec:
  model: good
  backends:
    - providerRef: {name: mock}
      model: mock-model
    - providerRef: {name: openai}
      model: gpt-4o
      weight: 3
---
apiVersion: switchyard.dev/v1alpha1
kind: LLMRoute
metadata: {name: broken}
spec:
  model: broken
  backends:
    - providerRef: {name: nope}
      model: x
"#;

fn load(files: &[(&str, &str)]) -> Manifests {
    let mut m = Manifests::default();
    for (name, text) in files {
        let d = m.add_yaml(name, text, &|_| None);
        assert!(d.is_empty(), "{d:?}");
    }
    m
}

fn messages(c: &Compiled) -> Vec<String> {
    c.diagnostics.iter().map(|d| d.to_string()).collect()
}

#[test]
fn missing_provider_leaves_only_that_route_out() {
    let m = load(&[("providers.yaml", PROVIDERS), ("routes.yaml", ROUTES)]);
    let c = compile(&m, &CompileOptions::default());
    assert_eq!(
        messages(&c),
        vec![
            r#"routes.yaml:20: LLMRoute/broken: spec.backends[0].providerRef.name: Provider "nope" not found in namespace "default"; the route is left out"#
        ]
    );
    assert_eq!(c.config.routes.len(), 1);
    let good = &c.config.routes[0];
    assert_eq!(good.model, "good");
    assert_eq!(good.backends[1].weight, 3);
    assert_eq!(good.backends[1].provider, "default/openai");
    assert_eq!(good.backends[1].labels.get("region").map(String::as_str), Some("us"));
    // The built-in price table fills prices and context windows.
    assert_eq!(good.backends[1].price.map(|p| p.input), Some(2.5));
    assert_eq!(good.backends[1].context_window, Some(128_000));
    assert_eq!(c.config.providers.len(), 2);
}

#[test]
fn deterministic_and_independent_of_file_order() {
    let a = compile(
        &load(&[("providers.yaml", PROVIDERS), ("routes.yaml", ROUTES)]),
        &CompileOptions::default(),
    );
    let b = compile(
        &load(&[("routes.yaml", ROUTES), ("providers.yaml", PROVIDERS)]),
        &CompileOptions::default(),
    );
    let c = compile(
        &load(&[("providers.yaml", PROVIDERS), ("routes.yaml", ROUTES)]),
        &CompileOptions::default(),
    );
    assert_eq!(a.config.to_bytes().unwrap(), b.config.to_bytes().unwrap());
    assert_eq!(a.config.to_bytes().unwrap(), c.config.to_bytes().unwrap());
    assert_eq!(a.config.hash(), b.config.hash());
    assert_eq!(a.config.hash().len(), 64);
}

#[test]
fn missing_secret_key_is_named() {
    let m = load(&[(
        "p.yaml",
        r#"
apiVersion: switchyard.dev/v1alpha1
kind: Provider
metadata: {name: anthropic}
spec:
  type: anthropic
  credentials: {secretRef: {name: creds, key: token}}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {apiKey: x}
---
apiVersion: switchyard.dev/v1alpha1
kind: LLMRoute
metadata: {name: claude}
spec:
  model: claude
  backends: [{providerRef: {name: anthropic}, model: claude-sonnet-4-5}]
"#,
    )]);
    let c = compile(&m, &CompileOptions::default());
    let msgs = messages(&c);
    assert!(msgs.iter().any(|m| m.contains(r#"Provider/anthropic: spec.credentials.secretRef: Secret "creds" has no key "token""#)), "{msgs:?}");
    assert!(
        msgs.iter()
            .any(|m| m.contains("LLMRoute/claude") && m.contains("cannot be used")),
        "{msgs:?}"
    );
    assert!(c.config.routes.is_empty());
    assert!(c.config.providers.is_empty());
}

fn route(name: &str, fallbacks: &[&str]) -> String {
    let fb: Vec<String> = fallbacks.iter().map(|f| format!("{{route: {f}}}")).collect();
    format!(
        "---\napiVersion: switchyard.dev/v1alpha1\nkind: LLMRoute\nmetadata: {{name: {name}}}\nspec:\n  model: {name}\n  backends: [{{providerRef: {{name: mock}}, model: m}}]\n  fallbacks: [{}]\n",
        fb.join(", ")
    )
}

#[test]
fn fallback_loops_and_depth_are_refused() {
    let text = [
        route("a", &["b"]),
        route("b", &["a"]),
        route("c", &["d"]),
        route("d", &["e"]),
        route("e", &["f"]),
        route("f", &["g"]),
        route("g", &[]),
        route("h", &["missing"]),
    ]
    .concat();
    let m = load(&[("providers.yaml", PROVIDERS), ("routes.yaml", &text)]);
    let c = compile(&m, &CompileOptions::default());
    let msgs = messages(&c);
    assert!(
        msgs.iter()
            .any(|m| m.contains("LLMRoute/a: spec.fallbacks: fallbacks form a loop (a -> b -> a)")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.contains("LLMRoute/b: spec.fallbacks: fallbacks form a loop")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.contains("LLMRoute/c: spec.fallbacks: fallbacks go 4 levels deep")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.contains(r#"LLMRoute/h: spec.fallbacks[0].route: no route serves model "missing""#)),
        "{msgs:?}"
    );
    let served: Vec<&str> = c.config.routes.iter().map(|r| r.model.as_str()).collect();
    assert_eq!(served, vec!["d", "e", "f", "g"]);
}

#[test]
fn duplicate_model_name_keeps_the_first() {
    let text = format!(
        "{}{}",
        route("x", &[]),
        "---\napiVersion: switchyard.dev/v1alpha1\nkind: LLMRoute\nmetadata: {name: y}\nspec:\n  model: x\n  backends: [{providerRef: {name: mock}, model: m}]\n"
    );
    let m = load(&[("providers.yaml", PROVIDERS), ("routes.yaml", &text)]);
    let c = compile(&m, &CompileOptions::default());
    let msgs = messages(&c);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert!(
        msgs[0].contains(r#"LLMRoute/y: spec.model: model name "x" is already served by LLMRoute/x"#),
        "{msgs:?}"
    );
    assert_eq!(c.config.routes.len(), 1);
    assert_eq!(c.config.routes[0].name, "x");
}

#[test]
fn keys_are_hashed_and_never_plain() {
    let text = r#"
apiVersion: switchyard.dev/v1alpha1
kind: VirtualKey
metadata: {name: demo, namespace: team-a}
spec:
  secretRef: {name: demo-secret}
  labels: {team: a}
  budget: {maxSpend: 10, period: daily}
---
apiVersion: v1
kind: Secret
metadata: {name: demo-secret, namespace: team-a}
stringData: {key: sk-plain-value}
---
apiVersion: switchyard.dev/v1alpha1
kind: VirtualKey
metadata: {name: nokey, namespace: team-a}
spec: {}
"#;
    let m = load(&[("providers.yaml", PROVIDERS), ("keys.yaml", text)]);
    let c = compile(&m, &CompileOptions::default());
    let bytes = String::from_utf8(c.config.to_bytes().unwrap()).unwrap();
    assert!(!bytes.contains("sk-plain-value"));
    assert_eq!(c.config.keys.len(), 1);
    assert_eq!(c.config.keys[0].hashes[0].sha256, hash_key("sk-plain-value"));
    assert_eq!(
        c.config.keys[0].budget.as_ref().unwrap().alert_thresholds,
        vec![50, 80, 100]
    );
    let msgs = messages(&c);
    assert!(
        msgs.iter()
            .any(|m| m
                .contains(r#"VirtualKey/nokey: metadata.name: Secret "nokey-key" not found in namespace "team-a""#)),
        "{msgs:?}"
    );
}

#[test]
fn fleet_admission_by_namespace() {
    let text = r#"
apiVersion: switchyard.dev/v1alpha1
kind: LLMGateway
metadata: {name: gw, namespace: default}
spec: {}
---
apiVersion: switchyard.dev/v1alpha1
kind: Provider
metadata: {name: mock, namespace: other}
spec: {type: mock}
---
apiVersion: switchyard.dev/v1alpha1
kind: LLMRoute
metadata: {name: elsewhere, namespace: other}
spec:
  model: elsewhere
  backends: [{providerRef: {name: mock}, model: m}]
"#;
    let m = load(&[
        ("providers.yaml", PROVIDERS),
        ("routes.yaml", ROUTES),
        ("gw.yaml", text),
    ]);
    let c = compile(&m, &CompileOptions::default());
    assert_eq!(c.config.fleet.as_deref(), Some("default/gw"));
    let models: Vec<&str> = c.config.routes.iter().map(|r| r.model.as_str()).collect();
    assert_eq!(models, vec!["good"]);
    let c = compile(
        &m,
        &CompileOptions {
            fleet: Some(("default".into(), "missing".into())),
        },
    );
    assert!(c.config.routes.is_empty() && c.has_errors());
}

#[test]
fn secrets_never_appear_in_debug_output() {
    let m = load(&[("providers.yaml", PROVIDERS), ("routes.yaml", ROUTES)]);
    let c = compile(&m, &CompileOptions::default());
    assert!(!format!("{:?}", c.config).contains("sk-upstream"));
    assert!(String::from_utf8(c.config.to_bytes().unwrap())
        .unwrap()
        .contains("sk-upstream"));
}

#[test]
fn connection_limits_come_from_the_gateway_and_default_when_unset() {
    let gw = |spec: &str| {
        format!("apiVersion: switchyard.dev/v1alpha1\nkind: LLMGateway\nmetadata: {{name: gw, namespace: default}}\nspec: {spec}\n")
    };
    let c = compile(&load(&[("gw.yaml", &gw("{}"))]), &CompileOptions::default());
    assert_eq!(c.config.settings.connections, ConnectionsConfig::default());
    // The defaults are not serialised: configs that set nothing keep their bytes and hash.
    assert!(!String::from_utf8(c.config.to_bytes().unwrap())
        .unwrap()
        .contains("connections"));

    let spec = "{connections: {headerReadTimeout: 2s, idleTimeout: 2m, bodyReadTimeout: 1500ms, max: 300}}";
    let c = compile(&load(&[("gw.yaml", &gw(spec))]), &CompileOptions::default());
    assert!(c.diagnostics.is_empty(), "{:?}", messages(&c));
    assert_eq!(
        c.config.settings.connections,
        ConnectionsConfig {
            header_read_timeout_ms: 2_000,
            idle_timeout_ms: 120_000,
            body_read_timeout_ms: 1_500,
            max: Some(300),
        }
    );
    let back = GatewayConfig::from_bytes(&c.config.to_bytes().unwrap()).unwrap();
    assert_eq!(back.settings.connections, c.config.settings.connections);

    // A zero timeout would close every connection: refused, and the default kept.
    let c = compile(
        &load(&[("gw.yaml", &gw("{connections: {idleTimeout: 0s}}"))]),
        &CompileOptions::default(),
    );
    assert_eq!(c.config.settings.connections.idle_timeout_ms, 90_000);
    assert!(
        messages(&c).iter().any(|m| m.contains("spec.connections.idleTimeout")),
        "{:?}",
        messages(&c)
    );
}

#[test]
fn label_selectors_follow_kubernetes_operators() {
    let sel: LabelSelector = serde_json::from_value(serde_json::json!({
        "matchLabels": {"llm": "on"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["gold", "silver"]},
            {"key": "env", "operator": "NotIn", "values": ["dev"]},
            {"key": "team", "operator": "Exists"},
            {"key": "frozen", "operator": "DoesNotExist"},
        ],
    }))
    .unwrap();
    let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    };
    let base = [("llm", "on"), ("tier", "gold"), ("team", "a")];
    assert!(selector_matches(&sel, &labels(&base)));
    assert!(selector_matches(
        &sel,
        &labels(&[("env", "prod"), ("llm", "on"), ("tier", "silver"), ("team", "a")])
    ));
    assert!(!selector_matches(
        &sel,
        &labels(&[("llm", "off"), ("tier", "gold"), ("team", "a")])
    ));
    assert!(!selector_matches(
        &sel,
        &labels(&[("llm", "on"), ("tier", "bronze"), ("team", "a")])
    ));
    assert!(!selector_matches(
        &sel,
        &labels(&[("env", "dev"), ("llm", "on"), ("tier", "gold"), ("team", "a")])
    ));
    assert!(!selector_matches(&sel, &labels(&[("llm", "on"), ("tier", "gold")])));
    assert!(!selector_matches(
        &sel,
        &labels(&[("frozen", ""), ("llm", "on"), ("tier", "gold"), ("team", "a")])
    ));
    let unknown: LabelSelector = serde_json::from_value(serde_json::json!({
        "matchExpressions": [{"key": "llm", "operator": "Gt", "values": ["1"]}],
    }))
    .unwrap();
    assert!(
        !selector_matches(&unknown, &labels(&base)),
        "an unknown operator matches nothing"
    );
    assert!(
        selector_matches(&LabelSelector::default(), &BTreeMap::new()),
        "an empty selector matches everything"
    );
}

#[test]
fn namespace_admission_and_parent_refs() {
    let gw: api::LLMGateway = serde_json::from_value(serde_json::json!({
        "apiVersion": "switchyard.dev/v1alpha1", "kind": "LLMGateway",
        "metadata": {"name": "gw", "namespace": "infra"},
        "spec": {"routes": {"from": "Selector", "selector": {"matchLabels": {"llm": "on"}}}},
    }))
    .unwrap();
    let on = BTreeMap::from([("llm".to_owned(), "on".to_owned())]);
    // Routes by label; keys from the gateway's own namespace only (the default).
    assert!(admits_namespace(&gw, &gw.spec.routes, "team-a", |_| Some(&on)));
    assert!(!admits_namespace(&gw, &gw.spec.routes, "team-a", |_| None::<
        &BTreeMap<String, String>,
    >));
    assert!(admits_namespace(
        &gw,
        &gw.spec.keys,
        "infra",
        |_| -> Option<&BTreeMap<String, String>> { unreachable!("labels are read only for a selector") }
    ));
    assert!(!admits_namespace(&gw, &gw.spec.keys, "team-a", |_| Some(&on)));

    let route = |parents: serde_json::Value| -> api::LLMRoute {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "switchyard.dev/v1alpha1", "kind": "LLMRoute",
            "metadata": {"name": "r", "namespace": "team-a"},
            "spec": {"model": "r", "backends": [{"providerRef": {"name": "p"}, "model": "m"}], "parentRefs": parents},
        }))
        .unwrap()
    };
    // A route of another namespace consents only by naming the gateway.
    assert!(!route_attaches_to(&route(serde_json::json!([])), &gw));
    let mut same_ns = route(serde_json::json!([]));
    same_ns.metadata.namespace = Some("infra".into());
    assert!(route_attaches_to(&same_ns, &gw));
    let named = route(serde_json::json!([{"name": "gw", "namespace": "infra"}]));
    assert!(route_names_gateway(&named, &gw) && route_attaches_to(&named, &gw));
    // A parentRef without a namespace is in the route's own namespace.
    let own_ns = route(serde_json::json!([{"name": "gw"}]));
    assert!(!route_names_gateway(&own_ns, &gw) && !route_attaches_to(&own_ns, &gw));
}

/// Namespace `ns`: a Provider with a credential `secret`, a route `m-<ns>` on it (with
/// `parentRefs` when given) and a VirtualKey with a Secret value (and `parentRefs`).
fn tenant(ns: &str, secret: &str, parents: &str) -> String {
    format!(
        r#"
apiVersion: switchyard.dev/v1alpha1
kind: Provider
metadata: {{name: p, namespace: {ns}}}
spec:
  type: openai
  baseUrl: http://127.0.0.1:9999/v1
  credentials: {{secretRef: {{name: creds}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: creds, namespace: {ns}}}
stringData: {{apiKey: {secret}}}
---
apiVersion: switchyard.dev/v1alpha1
kind: LLMRoute
metadata: {{name: r, namespace: {ns}}}
spec:
  model: m-{ns}
  parentRefs: {parents}
  backends:
    - providerRef: {{name: p}}
      model: gpt-4o
---
apiVersion: switchyard.dev/v1alpha1
kind: VirtualKey
metadata: {{name: k, namespace: {ns}}}
spec:
  secretRef: {{name: k}}
  parentRefs: {parents}
---
apiVersion: v1
kind: Secret
metadata: {{name: k, namespace: {ns}}}
stringData: {{key: sk-client-{ns}}}
"#
    )
}

const HOSTILE: &str = r#"
apiVersion: switchyard.dev/v1alpha1
kind: LLMGateway
metadata: {name: grab, namespace: hostile}
spec:
  routes: {from: All}
  keys: {from: All}
"#;

#[test]
fn a_fleet_admitting_all_namespaces_gets_nothing_they_did_not_name_it_in() {
    let a = tenant("team-a", "sk-secret-of-a", "[]");
    let b = tenant("team-b", "sk-secret-of-b", "[{name: other, namespace: team-b}]");
    let m = load(&[("gw.yaml", HOSTILE), ("a.yaml", &a), ("b.yaml", &b)]);
    let c = compile(&m, &CompileOptions::default());
    assert!(c.config.routes.is_empty(), "{:?}", c.config.routes);
    assert!(c.config.keys.is_empty(), "{:?}", c.config.keys);
    assert!(c.config.providers.is_empty(), "{:?}", c.config.providers);
    let text = serde_json::to_string(&c.config).unwrap();
    assert!(
        !text.contains("sk-secret-of") && !text.contains("team-a") && !text.contains("team-b"),
        "{text}"
    );
    // The fleet is told why, by counts: team-a's route and key name no parent (team-b's name
    // another fleet, which is not this fleet's business), and no other namespace is named.
    let refused: Vec<&Diagnostic> = c.diagnostics.iter().filter(|d| d.reason == REF_NOT_PERMITTED).collect();
    assert_eq!(refused.len(), 1, "{:?}", messages(&c));
    let d = refused[0];
    assert_eq!(d.object, Some(ObjectId::new("LLMGateway", "hostile", "grab")));
    assert!(d.message.starts_with("1 route(s) and 1 key(s)"), "{}", d.message);
    assert!(!d.message.contains("team-"), "{}", d.message);
    assert!(!c.has_errors(), "{:?}", messages(&c));
}

#[test]
fn routes_and_keys_that_name_the_fleet_are_served_across_namespaces() {
    let a = tenant("team-a", "sk-secret-of-a", "[{name: grab, namespace: hostile}]");
    let b = tenant("team-b", "sk-secret-of-b", "[]");
    let m = load(&[("gw.yaml", HOSTILE), ("a.yaml", &a), ("b.yaml", &b)]);
    let c = compile(&m, &CompileOptions::default());
    let routes: Vec<(&str, &str)> = c
        .config
        .routes
        .iter()
        .map(|r| (r.namespace.as_str(), r.model.as_str()))
        .collect();
    assert_eq!(routes, [("team-a", "m-team-a")]);
    let keys: Vec<&str> = c.config.keys.iter().map(|k| k.namespace.as_str()).collect();
    assert_eq!(keys, ["team-a"]);
    let providers: Vec<&str> = c.config.providers.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(providers, ["team-a/p"]);
    let text = serde_json::to_string(&c.config).unwrap();
    assert!(text.contains("sk-secret-of-a") && !text.contains("sk-secret-of-b"));
    let refused: Vec<String> = c
        .diagnostics
        .iter()
        .filter(|d| d.reason == REF_NOT_PERMITTED)
        .map(|d| d.message.clone())
        .collect();
    assert_eq!(refused.len(), 1);
    assert!(refused[0].starts_with("1 route(s) and 1 key(s)"), "{refused:?}");

    // A fleet of the route's own namespace still serves routes that name no parent.
    let own = HOSTILE.replace("namespace: hostile", "namespace: team-b");
    let c = compile(&load(&[("gw.yaml", &own), ("b.yaml", &b)]), &CompileOptions::default());
    assert_eq!(c.config.routes.len(), 1);
    assert_eq!(c.config.keys.len(), 1);
    assert!(c.diagnostics.iter().all(|d| d.reason != REF_NOT_PERMITTED));
}

/// A VirtualKey `name` of `ns` with a Secret, `metadata.labels` and `spec.labels` as given.
fn team_key(ns: &str, name: &str, meta_labels: &str, spec_labels: &str) -> String {
    format!(
        r#"
apiVersion: switchyard.dev/v1alpha1
kind: VirtualKey
metadata: {{name: {name}, namespace: {ns}, labels: {meta_labels}}}
spec:
  secretRef: {{name: {name}}}
  labels: {spec_labels}
---
apiVersion: v1
kind: Secret
metadata: {{name: {name}, namespace: {ns}}}
stringData: {{key: sk-{ns}-{name}}}
"#
    )
}

const TEAM_BUDGETS: &str = r#"
apiVersion: switchyard.dev/v1alpha1
kind: Budget
metadata: {name: search, namespace: apps}
spec:
  selector: {matchLabels: {team: search}}
  maxSpend: 50
  period: daily
  alertThresholds: [90, 50]
  webhook: {url: "http://127.0.0.1:1/hook", signingSecretRef: {name: hook}}
---
apiVersion: v1
kind: Secret
metadata: {name: hook, namespace: apps}
stringData: {secret: whsec-team}
---
apiVersion: switchyard.dev/v1alpha1
kind: Budget
metadata: {name: everyone, namespace: apps}
spec:
  maxSpend: 200
---
apiVersion: switchyard.dev/v1alpha1
kind: Budget
metadata: {name: not-ads, namespace: apps}
spec:
  selector:
    matchExpressions: [{key: team, operator: NotIn, values: [ads]}, {key: tier, operator: Exists}]
  maxSpend: 5
  action: alert
"#;

fn team_fixture() -> Manifests {
    let keys = [
        team_key("apps", "alice", "{}", "{team: search, tier: gold}"),
        // Selected by its metadata label.
        team_key("apps", "bob", "{team: search}", "{}"),
        // spec.labels win over metadata.labels.
        team_key("apps", "carol", "{team: search}", "{team: ads, tier: gold}"),
        // The same label in another namespace: never selected by a Budget of `apps`.
        team_key("other", "mallory", "{team: search}", "{team: search, tier: gold}"),
    ]
    .join("---\n");
    load(&[("keys.yaml", &keys), ("budgets.yaml", TEAM_BUDGETS)])
}

#[test]
fn budgets_select_keys_of_their_own_namespace_by_label() {
    let c = compile(&team_fixture(), &CompileOptions::default());
    assert!(!c.has_errors(), "{:?}", messages(&c));
    let covered: Vec<(String, Vec<&str>)> = c
        .config
        .budgets
        .iter()
        .map(|b| (b.id(), b.keys.iter().map(String::as_str).collect()))
        .collect();
    assert_eq!(
        covered,
        vec![
            // An empty selector covers every key of the namespace, and only of it.
            ("apps/everyone".to_owned(), vec!["alice", "bob", "carol"]),
            ("apps/not-ads".to_owned(), vec!["alice"]),
            ("apps/search".to_owned(), vec!["alice", "bob"]),
        ]
    );
    let search = &c.config.budgets[2].budget;
    assert_eq!(search.max_spend, 50.0);
    assert_eq!(search.period, BudgetPeriod::Daily);
    assert_eq!(search.action, BudgetAction::Block);
    assert_eq!(search.alert_thresholds, vec![50, 90]);
    let hook = search.webhook.as_ref().unwrap();
    assert_eq!(hook.signing_secret.as_ref().map(|s| s.expose()), Some("whsec-team"));
    let not_ads = &c.config.budgets[1].budget;
    assert_eq!(not_ads.action, BudgetAction::Alert);
    assert_eq!(c.config.budgets[0].budget.alert_thresholds, vec![50, 80, 100]);
    assert_eq!(c.config.budgets[0].budget.period, BudgetPeriod::Monthly);
    // The signing secret is in the config (gateways sign with it) but never in its Debug output.
    assert!(!format!("{:?}", c.config).contains("whsec-team"));
}

#[test]
fn a_budget_cannot_reach_keys_of_another_namespace() {
    // A Budget in `other` with an empty selector covers mallory only; one in a namespace with no
    // key covers nothing and is not compiled (and says so).
    let extra = r#"
apiVersion: switchyard.dev/v1alpha1
kind: Budget
metadata: {name: grab-all, namespace: other}
spec: {maxSpend: 1}
---
apiVersion: switchyard.dev/v1alpha1
kind: Budget
metadata: {name: grab-all, namespace: empty}
spec: {maxSpend: 1}
"#;
    let mut m = team_fixture();
    assert!(m.add_yaml("extra.yaml", extra, &|_| None).is_empty());
    let c = compile(&m, &CompileOptions::default());
    let other: Vec<&TeamBudgetConfig> = c.config.budgets.iter().filter(|b| b.namespace == "other").collect();
    assert_eq!(other.len(), 1);
    assert_eq!(other[0].keys, vec!["mallory"]);
    assert!(c.config.budgets.iter().all(|b| b.namespace != "empty"));
    for b in &c.config.budgets {
        for k in &b.keys {
            assert!(
                c.config
                    .keys
                    .iter()
                    .any(|key| key.namespace == b.namespace && &key.name == k),
                "{} covers {k}, which is not a key of its namespace",
                b.id()
            );
        }
    }
    let msgs = messages(&c);
    assert!(
        msgs.iter().any(|m| m
            == "extra.yaml:7: warning: Budget/grab-all: spec.selector: selects no VirtualKey of its namespace that this gateway serves"),
        "{msgs:?}"
    );
    // A fleet serves only the Budgets of the keys it serves: a gateway of `apps` gets none of
    // `other`'s (nor its webhook secrets).
    let gw = "apiVersion: switchyard.dev/v1alpha1\nkind: LLMGateway\nmetadata: {name: gw, namespace: apps}\nspec: {}\n";
    assert!(m.add_yaml("gw.yaml", gw, &|_| None).is_empty());
    let c = compile(&m, &CompileOptions::default());
    let ids: Vec<String> = c.config.budgets.iter().map(TeamBudgetConfig::id).collect();
    assert_eq!(ids, vec!["apps/everyone", "apps/not-ads", "apps/search"]);
    // No warning for Budgets of namespaces this fleet does not admit.
    assert!(
        !messages(&c).iter().any(|m| m.contains("grab-all")),
        "{:?}",
        messages(&c)
    );
}

#[test]
fn budget_errors_name_file_line_and_field() {
    let bad = r#"
apiVersion: switchyard.dev/v1alpha1
kind: Budget
metadata: {name: odd, namespace: apps}
spec:
  selector:
    matchExpressions:
      - {key: team, operator: In}
  maxSpend: 5
---
apiVersion: switchyard.dev/v1alpha1
kind: Budget
metadata: {name: nosecret, namespace: apps}
spec:
  maxSpend: 5
  webhook: {url: "http://127.0.0.1:1/hook", signingSecretRef: {name: missing}}
"#;
    let mut m = team_fixture();
    assert!(m.add_yaml("bad.yaml", bad, &|_| None).is_empty());
    let c = compile(&m, &CompileOptions::default());
    let msgs = messages(&c);
    assert!(
        msgs.iter().any(|m| m
            .starts_with("bad.yaml:8: Budget/odd: spec.selector.matchExpressions[0]: operator \"In\" with 0 value(s)")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter().any(|m| m
            .starts_with("bad.yaml:16: Budget/nosecret: spec.webhook.signingSecretRef: Secret \"missing\" not found")),
        "{msgs:?}"
    );
    // A bad selector leaves the Budget out; a missing signing secret leaves out only its webhook.
    assert!(c.config.budgets.iter().all(|b| b.name != "odd"));
    let nosecret = c.config.budgets.iter().find(|b| b.name == "nosecret").unwrap();
    assert!(nosecret.budget.webhook.is_none());
    assert_eq!(nosecret.keys, vec!["alice", "bob", "carol"]);
    // What the API server refuses, loading refuses, with the line of the field.
    let mut m = Manifests::default();
    let d = m.add_yaml(
        "cel.yaml",
        "apiVersion: switchyard.dev/v1alpha1\nkind: Budget\nmetadata: {name: zero}\nspec:\n  maxSpend: 0\n  alertThresholds: [0]\n",
        &|_| None,
    );
    let d: Vec<String> = d.iter().map(ToString::to_string).collect();
    assert!(
        d.iter()
            .any(|m| m.contains("Budget/zero") && m.contains("maxSpend must be positive")),
        "{d:?}"
    );
    let d = m.add_yaml(
        "typo.yaml",
        "apiVersion: switchyard.dev/v1alpha1\nkind: Budget\nmetadata: {name: typo}\nspec:\n  maxSpend: 1\n  limit: 3\n",
        &|_| None,
    );
    let d: Vec<String> = d.iter().map(ToString::to_string).collect();
    assert_eq!(
        d,
        vec!["typo.yaml:6: Budget/typo: spec.limit: unknown field".to_owned()]
    );
}

/// `openai/*` is a wildcard route: accepted with its backends' `*` models unpriced (the gateway
/// prices each request's model); a `*` anywhere else is refused with the file and line.
#[test]
fn wildcard_routes_are_accepted_and_misplaced_stars_refused() {
    let routes = r#"
apiVersion: switchyard.dev/v1alpha1
kind: LLMRoute
metadata: {name: openai-any}
spec:
  model: openai/*
  backends:
    - providerRef: {name: openai}
      model: "*"
    - providerRef: {name: openai}
      model: gpt-4o
      name: fixed
---
apiVersion: switchyard.dev/v1alpha1
kind: LLMRoute
metadata: {name: middle}
spec:
  model: "gpt-*-mini"
  backends:
    - providerRef: {name: openai}
      model: gpt-4o
---
apiVersion: switchyard.dev/v1alpha1
kind: LLMRoute
metadata: {name: exact-star}
spec:
  model: exact
  backends:
    - providerRef: {name: openai}
      model: "*"
---
apiVersion: switchyard.dev/v1alpha1
kind: LLMRoute
metadata: {name: to-wildcard}
spec:
  model: to-wildcard
  backends:
    - providerRef: {name: openai}
      model: gpt-4o
  fallbacks:
    - route: openai/*
---
apiVersion: switchyard.dev/v1alpha1
kind: LLMRoute
metadata: {name: slash}
spec:
  model: team/model
  backends:
    - providerRef: {name: openai}
      model: gpt-4o
"#;
    // Keys name a wildcard route as written, or a model it serves: no "no route serves" warning.
    let keys = r#"
apiVersion: switchyard.dev/v1alpha1
kind: VirtualKey
metadata: {name: wild}
spec:
  secretRef: {name: wild-key}
  allowedRoutes: ["openai/*", "openai/gpt-4.1", "anthropic/claude"]
---
apiVersion: v1
kind: Secret
metadata: {name: wild-key}
stringData: {key: sk-wild}
"#;
    let m = load(&[
        ("providers.yaml", PROVIDERS),
        ("routes.yaml", routes),
        ("keys.yaml", keys),
    ]);
    let c = compile(&m, &CompileOptions::default());
    assert_eq!(
        messages(&c),
        vec![
            r#"keys.yaml:7: warning: VirtualKey/wild: spec.allowedRoutes[2]: no route serves "anthropic/claude" (yet)"#,
            r#"routes.yaml:18: LLMRoute/middle: spec.model: model "gpt-*-mini" has a `*` before its end; a wildcard route's model ends in its only `*` (`openai/*`); the route is left out"#,
            r#"routes.yaml:30: LLMRoute/exact-star: spec.backends[0].model: backend model "*": only a wildcard route's backends may end in `*`; the route is left out"#,
            r#"routes.yaml:41: LLMRoute/to-wildcard: spec.fallbacks[0].route: "openai/*" is a wildcard; fallbacks and rules must name an exact route; the route is left out"#,
            r#"routes.yaml:47: LLMRoute/slash: spec.model: model "team/model" holds a `/`, which only a wildcard model (ending in `*`) may; clients address shared routes as `<namespace>/<model>`; the route is left out"#,
        ]
    );
    assert_eq!(c.config.routes.len(), 1);
    let wild = &c.config.routes[0];
    assert_eq!(
        (wild.model.as_str(), wild.wildcard_prefix()),
        ("openai/*", Some("openai/"))
    );
    assert_eq!(wild.backends[0].model, "*");
    assert_eq!(
        wild.backends[0].price, None,
        "priced per request, by the model it serves"
    );
    assert_eq!(wild.backends[1].price.map(|p| p.input), Some(2.5));
    assert_eq!(fill_wildcard("*", "gpt-4o"), "gpt-4o");
    assert_eq!(fill_wildcard("accounts/x/models/*", "m"), "accounts/x/models/m");
    assert_eq!(fill_wildcard("gpt-4o", "m"), "gpt-4o");
    assert_eq!(wildcard_prefix("*"), Some(""));
    assert_eq!(wildcard_prefix("a*b*"), None);
}

/// A Provider no route uses is served when a key may pass through to it; an entry naming no
/// Provider of the key's namespace is a warning, and never reaches another namespace's.
#[test]
fn pass_through_keeps_the_providers_keys_name() {
    let other = r#"
apiVersion: switchyard.dev/v1alpha1
kind: Provider
metadata: {name: elsewhere, namespace: team-b}
spec:
  type: openai
  baseUrl: http://127.0.0.1:9999/v1
  credentials: {secretRef: {name: openai}}
---
apiVersion: v1
kind: Secret
metadata: {name: openai, namespace: team-b}
stringData: {apiKey: sk-team-b}
"#;
    let keys = r#"
apiVersion: switchyard.dev/v1alpha1
kind: VirtualKey
metadata: {name: batch}
spec:
  secretRef: {name: batch-key}
  allowedPassthrough: [openai, elsewhere, openai]
---
apiVersion: v1
kind: Secret
metadata: {name: batch-key}
stringData: {key: sk-batch}
"#;
    let m = load(&[
        ("providers.yaml", PROVIDERS),
        ("other.yaml", other),
        ("keys.yaml", keys),
    ]);
    let c = compile(&m, &CompileOptions::default());
    assert_eq!(
        messages(&c),
        vec![
            r#"keys.yaml:7: warning: VirtualKey/batch: spec.allowedPassthrough[1]: no Provider "elsewhere" in namespace "default" (yet); pass-through reaches only Providers of the key's namespace"#
        ]
    );
    let ids: Vec<&str> = c.config.providers.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["default/openai"], "no route uses it; the key's pass-through does");
    assert_eq!(c.config.keys[0].allowed_passthrough, ["elsewhere", "openai"]);
}

/// The cluster as the operator's caches see it for the memo test: objects with uids and
/// resourceVersions, bumped on every edit as the API server does.
struct Cluster {
    version: u64,
    m: Manifests,
}

impl Cluster {
    fn bump(&mut self) -> String {
        self.version += 1;
        self.version.to_string()
    }

    fn key(&mut self, i: usize, spec: serde_json::Value) -> api::VirtualKey {
        let version = self.bump();
        serde_json::from_value(serde_json::json!({
            "apiVersion": "switchyard.dev/v1alpha1", "kind": "VirtualKey",
            "metadata": {"name": format!("key-{i}"), "namespace": "llm", "uid": format!("uid-{i}-{version}"),
                         "resourceVersion": version},
            "spec": spec,
        }))
        .unwrap()
    }

    fn secret(&mut self, name: &str, values: &[(&str, String)]) {
        let version = self.bump();
        let s: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": "llm", "resourceVersion": version},
            "stringData": values.iter().cloned().collect::<BTreeMap<&str, String>>(),
        }))
        .unwrap();
        self.m.add_secret(&s);
    }
}

/// Whatever the order of edits, compiling with the memo of the compiles before gives what a
/// compile from scratch gives: the same configuration and the same diagnostics.
#[test]
fn a_compile_with_the_memo_of_earlier_compiles_is_a_compile_from_scratch() {
    let mut c = Cluster {
        version: 100,
        m: Manifests::default(),
    };
    c.m.add_yaml(
        "routes.yaml",
        "apiVersion: switchyard.dev/v1alpha1\nkind: Provider\nmetadata: {name: mock, namespace: llm}\nspec: {type: mock}\n---\n\
         apiVersion: switchyard.dev/v1alpha1\nkind: LLMRoute\nmetadata: {name: a, namespace: llm}\nspec:\n  model: a\n  backends: [{providerRef: {name: mock}, model: m}]\n",
        &|_| None,
    );
    let mut dice = 0x2545_f491_4f6c_dd1d_u64;
    let mut roll = |n: usize| {
        dice ^= dice << 13;
        dice ^= dice >> 7;
        dice ^= dice << 17;
        usize::try_from(dice % u64::try_from(n).unwrap()).unwrap()
    };
    let spec = |roll: &mut dyn FnMut(usize) -> usize, i: usize| {
        let mut spec = serde_json::json!({"labels": {"team": format!("t{}", roll(3))}});
        match roll(6) {
            0 => spec["secretRef"] = serde_json::json!({"name": "shared", "key": format!("k{}", roll(8))}),
            1 => spec["allowedRoutes"] = serde_json::json!(["a", format!("r{}", roll(3))]),
            2 => spec["allowedPassthrough"] = serde_json::json!(["mock", "other"]),
            3 => {
                spec["budget"] = serde_json::json!({"maxSpend": 5.0, "period": "daily",
                    "webhook": {"url": "http://hook", "signingSecretRef": {"name": format!("sign-{}", roll(2))}}})
            }
            4 => spec["blocked"] = serde_json::json!(true),
            _ => {}
        }
        let _ = i;
        spec
    };
    for i in 0..30 {
        let s = spec(&mut roll, i);
        let k = c.key(i, s);
        c.m.keys.push(k);
        let value = format!("sk-{}", roll(40));
        c.secret(&format!("key-{i}-key"), &[("key", value)]);
    }
    let shared: Vec<(String, String)> = (0..8).map(|j| (format!("k{j}"), format!("sk-{}", 100 + j))).collect();
    let shared_ref: Vec<(&str, String)> = shared.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    c.secret("shared", &shared_ref);
    c.secret("sign-0", &[("secret", "s3cret".into())]);

    let opts = CompileOptions::default();
    let mut memo = CompileMemo::default();
    for step in 0..200 {
        match roll(9) {
            // A key's spec changes.
            0 | 1 => {
                let n = roll(c.m.keys.len());
                let i: usize = c.m.keys[n].metadata.name.as_ref().unwrap()[4..].parse().unwrap();
                let s = spec(&mut roll, i);
                let mut k = c.key(i, s);
                k.metadata.uid = c.m.keys[n].metadata.uid.clone();
                c.m.keys[n] = k;
            }
            // A key's own Secret gets a new value (sometimes another key's), or a rotation.
            2 | 3 => {
                let i = roll(40);
                let value = format!("sk-{}", roll(40));
                match roll(3) {
                    0 => c.secret(
                        &format!("key-{i}-key"),
                        &[
                            ("key", value),
                            ("previousKey", "sk-old".into()),
                            ("previousKeyNotAfter", "99".into()),
                        ],
                    ),
                    _ => c.secret(&format!("key-{i}-key"), &[("key", value)]),
                }
            }
            // A Secret goes, or comes back.
            4 => {
                let name = match roll(3) {
                    0 => "sign-0".to_owned(),
                    1 => "sign-1".to_owned(),
                    _ => format!("key-{}-key", roll(40)),
                };
                if c.m.secrets.remove(&("llm".to_owned(), name.clone())).is_none() {
                    c.secret(&name, &[("secret", "s".into()), ("key", format!("sk-{step}"))]);
                }
            }
            // A key is deleted, or created (again, under a new uid).
            5 => {
                let n = roll(c.m.keys.len());
                c.m.keys.remove(n);
            }
            6 => {
                let i = roll(40);
                c.m.keys
                    .retain(|k| k.metadata.name.as_deref() != Some(&format!("key-{i}")));
                let s = spec(&mut roll, i);
                let k = c.key(i, s);
                c.m.keys.push(k);
            }
            // The shared Secret changes, or a route a key names comes or goes.
            7 => {
                let j = roll(8);
                let mut values = shared_ref.clone();
                values[j].1 = format!("sk-{}", roll(40));
                c.secret("shared", &values);
            }
            _ => {
                let r = format!("r{}", roll(3));
                let before = c.m.routes.len();
                c.m.routes.retain(|x| x.metadata.name.as_deref() != Some(&r));
                if c.m.routes.len() == before {
                    let yaml = format!(
                        "apiVersion: switchyard.dev/v1alpha1\nkind: LLMRoute\nmetadata: {{name: {r}, namespace: llm}}\nspec:\n  model: {r}\n  backends: [{{providerRef: {{name: mock}}, model: m}}]\n"
                    );
                    let mut extra = Manifests::default();
                    assert!(extra.add_yaml("r.yaml", &yaml, &|_| None).is_empty());
                    c.m.routes.extend(extra.routes);
                }
            }
        }
        let fresh = compile(&c.m, &opts);
        let memoised = compile_with(&c.m, &opts, &mut memo);
        assert_eq!(memoised.config, fresh.config, "step {step}");
        assert_eq!(memoised.diagnostics, fresh.diagnostics, "step {step}");
        assert_eq!(memo.keys(), c.m.keys.len(), "step {step}: a piece per key");
    }
}
