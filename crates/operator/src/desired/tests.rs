use super::*;
use serde_json::json;
use switchyard_config::source::{assemble_config, split_config, SplitConfig, PART_TARGET_BYTES, SHARD_BYTES};
use switchyard_config::{
    compile, hash_key, CompileOptions, Compiled, GatewayConfig, KeyConfig, KeyHash, Manifests, SCHEMA_VERSION,
};

use crate::{ANNOTATION_CONFIG_HASH, ANNOTATION_CONFIG_PART, ANNOTATION_CONFIG_PARTS, CONFIG_GENERATION, CONFIG_KEY};

fn gateway(spec: serde_json::Value) -> LLMGateway {
    serde_json::from_value(json!({
        "apiVersion": "switchyard.dev/v1alpha1",
        "kind": "LLMGateway",
        "metadata": {"name": "edge", "namespace": "llm", "uid": "gw-uid", "generation": 3},
        "spec": spec,
    }))
    .unwrap()
}

fn compiled_with_route(model: &str) -> Compiled {
    let mut m = Manifests::default();
    m.providers.push(
        serde_json::from_value(json!({
            "apiVersion": "switchyard.dev/v1alpha1", "kind": "Provider",
            "metadata": {"name": "mock", "namespace": "llm"},
            "spec": {"type": "mock"},
        }))
        .unwrap(),
    );
    m.routes.push(
        serde_json::from_value(json!({
            "apiVersion": "switchyard.dev/v1alpha1", "kind": "LLMRoute",
            "metadata": {"name": "r", "namespace": "llm"},
            "spec": {"model": model, "backends": [{"providerRef": {"name": "mock"}, "model": "m"}]},
        }))
        .unwrap(),
    );
    m.gateways.push(gateway(json!({})));
    let c = compile(
        &m,
        &CompileOptions {
            fleet: Some(("llm".into(), "edge".into())),
        },
    );
    assert!(!c.has_errors(), "{:?}", c.diagnostics);
    assert_eq!(c.config.routes.len(), 1);
    c
}

/// A configuration of about 1.4 MB: a few dozen parts.
fn big_config() -> Compiled {
    let keys = (0..7000)
        .map(|i| KeyConfig {
            namespace: "llm".into(),
            name: format!("key-{i:05}"),
            hashes: vec![KeyHash {
                sha256: hash_key(&format!("sk-swy-{i}")),
                not_after: None,
            }],
            allowed_routes: vec!["gpt-4o".into()],
            allowed_passthrough: Vec::new(),
            limits: Default::default(),
            budget: None,
            expires_at: None,
            blocked: false,
            labels: BTreeMap::from([("team".to_owned(), format!("team-{}", i % 17))]),
        })
        .map(std::sync::Arc::new)
        .collect();
    Compiled {
        config: GatewayConfig {
            version: SCHEMA_VERSION,
            fleet: Some("llm/edge".into()),
            keys,
            ..GatewayConfig::default()
        },
        diagnostics: vec![],
    }
}

fn split(c: &Compiled) -> SplitConfig {
    split_config(&c.config, None).unwrap()
}

fn serialized(d: &Desired) -> Vec<Vec<u8>> {
    let mut out = vec![
        serde_json::to_vec(&d.service_account).unwrap(),
        serde_json::to_vec(&d.role).unwrap(),
        serde_json::to_vec(&d.role_binding).unwrap(),
        serde_json::to_vec(&d.service).unwrap(),
        serde_json::to_vec(&d.disruption_budget).unwrap(),
        serde_json::to_vec(&d.autoscaler).unwrap(),
        serde_json::to_vec(&d.deployment).unwrap(),
    ];
    out.extend(d.config_shards.iter().map(|s| serde_json::to_vec(s).unwrap()));
    out
}

#[test]
fn same_inputs_give_identical_bytes() {
    let gw = gateway(json!({
        "autoscaling": {"minReplicas": 2, "maxReplicas": 6, "targetInFlightRequests": 50},
        "podMetadata": {"labels": {"team": "platform"}, "annotations": {"a": "b"}},
        "nodeSelector": {"pool": "gw"},
        "service": {"type": "LoadBalancer", "port": 9000, "annotations": {"x": "y"}},
    }));
    let a = desired_objects(
        &gw,
        &split(&compiled_with_route("gpt-4o")),
        7,
        "ghcr.io/switchyard/switchyard:1",
    );
    let b = desired_objects(
        &gw.clone(),
        &split(&compiled_with_route("gpt-4o")),
        7,
        "ghcr.io/switchyard/switchyard:1",
    );
    assert_eq!(serialized(&a), serialized(&b));
    let big_a = desired_objects(&gw, &split(&big_config()), 1, "img");
    let big_b = desired_objects(&gw, &split(&big_config()), 1, "img");
    assert_eq!(serialized(&big_a), serialized(&big_b));
}

#[test]
fn every_object_is_owned_and_labelled() {
    let gw = gateway(json!({"autoscaling": {"minReplicas": 2, "maxReplicas": 4}}));
    let d = desired_objects(&gw, &split(&compiled_with_route("gpt-4o")), 1, "img");
    let mut metas = vec![
        &d.service_account.metadata,
        &d.role.metadata,
        &d.role_binding.metadata,
        &d.service.metadata,
        &d.disruption_budget.metadata,
        &d.deployment.metadata,
    ];
    metas.extend(d.autoscaler.iter().map(|h| &h.metadata));
    metas.extend(d.config_shards.iter().map(|s| &s.metadata));
    assert_eq!(metas.len(), 9, "six objects, the autoscaler, the index and one part");
    for m in metas {
        assert_eq!(m.namespace.as_deref(), Some("llm"));
        let labels = m.labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_NAME], GATEWAY_APP);
        assert_eq!(labels[LABEL_FLEET], "edge");
        let owner = &m.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (
                owner.api_version.as_str(),
                owner.kind.as_str(),
                owner.name.as_str(),
                owner.uid.as_str()
            ),
            ("switchyard.dev/v1alpha1", "LLMGateway", "edge", "gw-uid")
        );
        assert_eq!(owner.controller, Some(true));
    }
}

#[test]
fn deployment_runs_the_fleet() {
    let gw = gateway(json!({"replicas": 3, "logLevel": "debug"}));
    let d = desired_objects(&gw, &split(&compiled_with_route("gpt-4o")), 1, "img:1");
    let spec = d.deployment.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(3));
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("edge-gateway"));
    let c = &pod.containers[0];
    assert_eq!(c.image.as_deref(), Some("img:1"));
    assert_eq!(
        c.args.as_deref().unwrap(),
        [
            "gateway",
            "--kubernetes",
            "--fleet",
            "edge",
            "--listen",
            "0.0.0.0:8080",
            "--metrics-addr",
            "0.0.0.0:9090"
        ]
    );
    let env: Vec<(&str, Option<&str>)> = c
        .env
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e.name.as_str(),
                e.value_from
                    .as_ref()
                    .and_then(|v| v.field_ref.as_ref())
                    .map(|f| f.field_path.as_str()),
            )
        })
        .collect();
    assert!(env.contains(&("POD_NAME", Some("metadata.name"))));
    assert!(env.contains(&("POD_NAMESPACE", Some("metadata.namespace"))));
    assert!(env.contains(&("SWITCHYARD_LOG", None)));
    let path = |p: &Option<Probe>| p.as_ref().unwrap().http_get.as_ref().unwrap().path.clone();
    assert_eq!(path(&c.readiness_probe).as_deref(), Some("/readyz"));
    assert_eq!(path(&c.liveness_probe).as_deref(), Some("/healthz"));
    assert!(d.autoscaler.is_none());
    assert_eq!(
        d.disruption_budget.spec.as_ref().unwrap().max_unavailable,
        Some(IntOrString::Int(1))
    );
    // The Role lets pods read their own config shards (by name, no other Secret) and annotate pods.
    let rules = d.role.rules.as_ref().unwrap();
    assert_eq!(rules[0].resources.as_deref().unwrap(), ["secrets"]);
    assert_eq!(rules[0].verbs, ["get", "list", "watch"]);
    assert_eq!(
        rules[0].resource_names.as_deref().unwrap(),
        ["edge-config-0", "edge-config-1"]
    );
    assert_eq!(rules[1].verbs, ["get", "patch"]);
    assert_eq!(d.role_binding.subjects.as_ref().unwrap()[0].name, "edge-gateway");
}

#[test]
fn autoscaling_hands_replicas_to_the_hpa() {
    let gw = gateway(json!({"autoscaling": {"minReplicas": 2, "maxReplicas": 9, "targetInFlightRequests": 40}}));
    let d = desired_objects(&gw, &split(&compiled_with_route("gpt-4o")), 1, "img");
    assert_eq!(d.deployment.spec.as_ref().unwrap().replicas, None);
    let hpa = d.autoscaler.unwrap().spec.unwrap();
    assert_eq!((hpa.min_replicas, hpa.max_replicas), (Some(2), 9));
    assert_eq!(hpa.scale_target_ref.name, "edge");
    let metrics = hpa.metrics.unwrap();
    assert_eq!(
        metrics[0].resource.as_ref().unwrap().target.average_utilization,
        Some(70)
    );
    assert_eq!(
        metrics[1].pods.as_ref().unwrap().target.average_value,
        Some(Quantity("40".into()))
    );
}

#[test]
fn a_config_change_never_changes_the_pod_template() {
    let gw = gateway(json!({}));
    let a = desired_objects(&gw, &split(&compiled_with_route("gpt-4o")), 1, "img");
    let b = desired_objects(&gw, &split(&compiled_with_route("claude")), 2, "img");
    assert_ne!(a.config_hash, b.config_hash);
    assert_ne!(a.config_shards, b.config_shards);
    assert_eq!(
        serde_json::to_vec(&a.deployment).unwrap(),
        serde_json::to_vec(&b.deployment).unwrap()
    );
    assert_eq!(a.service, b.service);
}

#[test]
fn shards_split_and_rejoin() {
    let gw = gateway(json!({}));
    let compiled = big_config();
    let split = split(&compiled);
    let parts = split.bytes().div_ceil(PART_TARGET_BYTES);
    assert!(parts > 10, "{parts}");
    let d = desired_objects(&gw, &split, 42, "img");
    assert_eq!(d.config_shards.len(), parts + 1);
    assert_eq!(d.config_hash, compiled.config.hash());
    // The Role grants exactly the shard names (the index and the parts), which the pods watch
    // one by one.
    let names: Vec<String> = (0..=parts).map(|i| format!("edge-config-{i}")).collect();
    assert_eq!(
        d.role.rules.as_ref().unwrap()[0].resource_names.as_deref().unwrap(),
        names
    );
    for (i, s) in d.config_shards.iter().enumerate() {
        assert_eq!(s.metadata.name.as_deref(), Some(names[i].as_str()));
        let a = s.metadata.annotations.as_ref().unwrap();
        assert_eq!(a[CONFIG_GENERATION], "42");
        assert_eq!(s.metadata.labels.as_ref().unwrap()[CONFIG_GENERATION], "42");
        assert!(s.data.as_ref().unwrap()[CONFIG_KEY].0.len() <= SHARD_BYTES);
        if i == 0 {
            assert_eq!(a[ANNOTATION_CONFIG_HASH], compiled.config.hash());
            assert_eq!(a[ANNOTATION_CONFIG_PARTS].split(',').count(), parts);
        } else {
            assert_eq!(a[ANNOTATION_CONFIG_PART], i.to_string());
        }
    }
    // Any order.
    let reversed: Vec<&Secret> = d.config_shards.iter().rev().collect();
    let a = assemble_config(reversed).unwrap().unwrap();
    assert_eq!(a.generation, 42);
    assert_eq!(a.hash, compiled.config.hash());
    assert_eq!(a.config, compiled.config);
    // A missing part: nothing complete.
    assert!(assemble_config(&d.config_shards[..parts]).unwrap().is_none());
}

#[test]
fn a_compiled_fleet_round_trips_through_its_shards() {
    // The compiler's order is the one assembly restores.
    let gw = gateway(json!({}));
    let compiled = compiled_with_route("gpt-4o");
    let d = desired_objects(&gw, &split(&compiled), 1, "img");
    assert_eq!(d.config_shards.len(), 2, "a small fleet: the index and one part");
    assert_eq!(
        assemble_config(&d.config_shards).unwrap().unwrap().config,
        compiled.config
    );
}

#[test]
fn operator_rules_cover_what_it_writes() {
    let rules = rbac_rules();
    let allows = |group: &str, resource: &str, verb: &str| {
        rules.iter().any(|r| {
            r.api_groups.as_deref().unwrap_or_default().iter().any(|g| g == group)
                && r.resources.as_deref().unwrap_or_default().iter().any(|x| x == resource)
                && r.verbs.iter().any(|v| v == verb)
        })
    };
    for (g, r, v) in [
        ("switchyard.dev", "llmgateways", "watch"),
        ("switchyard.dev", "llmroutes/status", "patch"),
        ("", "secrets", "patch"),
        ("", "secrets", "delete"),
        ("", "pods", "patch"),
        ("apps", "deployments", "patch"),
        ("autoscaling", "horizontalpodautoscalers", "delete"),
        ("policy", "poddisruptionbudgets", "patch"),
        ("rbac.authorization.k8s.io", "roles", "patch"),
        ("events.k8s.io", "events", "create"),
        ("coordination.k8s.io", "leases", "update"),
    ] {
        assert!(allows(g, r, v), "{g} {r} {v}");
    }
    // The operator may grant the gateway Role only what it holds itself.
    for rule in gateway_rules("edge", 3) {
        for resource in rule.resources.unwrap() {
            for verb in &rule.verbs {
                assert!(allows("", &resource, verb), "{resource} {verb}");
            }
        }
    }
    assert!(!allows("", "secrets", "deletecollection"));
    // Statuses are patched (server-side apply, merge patch), never replaced; children are
    // collected by their owner references, not deleted one by one.
    assert!(!allows("switchyard.dev", "virtualkeys/status", "update"));
    for (g, r) in [
        ("", "services"),
        ("", "serviceaccounts"),
        ("apps", "deployments"),
        ("policy", "poddisruptionbudgets"),
        ("rbac.authorization.k8s.io", "roles"),
        ("rbac.authorization.k8s.io", "rolebindings"),
    ] {
        assert!(
            !allows(g, r, "delete"),
            "{g} {r} delete: garbage collection deletes them"
        );
    }
    assert!(!rules.iter().any(|r| r.verbs.iter().any(|v| v == "*")));
}

#[test]
fn telemetry_reaches_the_pods_as_otel_environment() {
    fn env_of(d: &Desired) -> BTreeMap<String, String> {
        let pod = d.deployment.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        pod.containers[0]
            .env
            .iter()
            .flatten()
            .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
            .collect()
    }
    let off = desired_objects(&gateway(json!({})), &split(&compiled_with_route("m")), 1, "img");
    assert!(env_of(&off).keys().all(|k| !k.starts_with("OTEL_")));
    let gw = gateway(json!({"telemetry": {"otlpEndpoint": "http://otel.observability:4318", "samplingRatio": 0.25}}));
    let env = env_of(&desired_objects(&gw, &split(&compiled_with_route("m")), 1, "img"));
    assert_eq!(env["OTEL_EXPORTER_OTLP_ENDPOINT"], "http://otel.observability:4318");
    assert_eq!(env["OTEL_SERVICE_NAME"], "switchyard");
    assert_eq!(env["OTEL_TRACES_SAMPLER"], "parentbased_traceidratio");
    assert_eq!(env["OTEL_TRACES_SAMPLER_ARG"], "0.25");
    assert_eq!(
        env["OTEL_RESOURCE_ATTRIBUTES"],
        "k8s.namespace.name=$(POD_NAMESPACE),k8s.pod.name=$(POD_NAME),k8s.deployment.name=edge"
    );
}

/// Metrics name routes, teams, spend and budgets left: the pods serve them on a port of their
/// own, which Prometheus scrapes on the pods and the Service never exposes.
#[test]
fn the_metrics_port_is_on_the_pods_and_not_on_the_service() {
    let gw = gateway(json!({"service": {"type": "LoadBalancer", "port": 8443}}));
    let d = desired_objects(&gw, &split(&compiled_with_route("gpt-4o")), 1, "img");
    let pod = d.deployment.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let ports: Vec<(Option<&str>, i32)> = pod.containers[0]
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| (p.name.as_deref(), p.container_port))
        .collect();
    assert_eq!(ports, [(Some("http"), 8443), (Some("metrics"), METRICS_PORT)]);
    let args = pod.containers[0].args.as_ref().unwrap();
    let at = args.iter().position(|a| a == "--metrics-addr").unwrap();
    assert_eq!(args[at + 1], format!("0.0.0.0:{METRICS_PORT}"));

    let service_ports = d.service.spec.as_ref().unwrap().ports.as_ref().unwrap();
    assert_eq!(service_ports.len(), 1, "{service_ports:?}");
    assert_eq!(service_ports[0].port, 8443);
    assert_eq!(service_ports[0].target_port, Some(IntOrString::String("http".into())));
    assert!(service_ports
        .iter()
        .all(|p| p.port != METRICS_PORT && p.name.as_deref() != Some("metrics")));
    // Probes stay on the client port, where kubelet and load balancers look.
    let probe_port = |p: &Option<Probe>| p.as_ref().unwrap().http_get.as_ref().unwrap().port.clone();
    assert_eq!(
        probe_port(&pod.containers[0].readiness_probe),
        IntOrString::String("http".into())
    );
    assert_eq!(
        probe_port(&pod.containers[0].liveness_probe),
        IntOrString::String("http".into())
    );
}
