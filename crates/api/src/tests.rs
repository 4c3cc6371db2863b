use super::*;
use kube::core::ObjectMeta;

fn crd_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crds")
}

/// `crds/` must hold exactly what the code generates: regenerate with
/// `cargo run -p switchyard -- crds --out crds`.
#[test]
fn crd_files_match_generated() {
    for (file, crd) in crds() {
        let want = crd_yaml(&crd).unwrap();
        let path = crd_dir().join(file);
        let have = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run `switchyard crds --out crds`", path.display()));
        assert!(
            have == want,
            "{} is out of date; run `cargo run -p switchyard -- crds --out crds`",
            path.display()
        );
    }
}

#[test]
fn every_field_has_a_description() {
    fn walk(path: &str, v: &serde_json::Value, missing: &mut Vec<String>) {
        if let Some(props) = v.get("properties").and_then(|p| p.as_object()) {
            for (name, schema) in props {
                let p = format!("{path}.{name}");
                if !matches!(name.as_str(), "apiVersion" | "kind" | "metadata") && schema.get("description").is_none() {
                    missing.push(p.clone());
                }
                walk(&p, schema, missing);
            }
        }
        if let Some(items) = v.get("items") {
            walk(&format!("{path}[]"), items, missing);
        }
    }
    let mut missing = Vec::new();
    for (file, crd) in crds() {
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
        let root = &schema["openAPIV3Schema"];
        for part in ["spec", "status"] {
            walk(&format!("{file}:{part}"), &root["properties"][part], &mut missing);
        }
    }
    assert!(missing.is_empty(), "fields without description: {missing:#?}");
}

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some("default".into()),
        ..Default::default()
    }
}

fn provider(yaml: &str) -> Provider {
    Provider {
        metadata: meta("p"),
        spec: serde_yaml::from_str(yaml).unwrap(),
        status: None,
    }
}

fn cel_messages(r: Result<(), kube::core::cel::ValidationErrors>) -> String {
    match r {
        Ok(()) => String::new(),
        Err(e) => format!("{e}"),
    }
}

#[test]
fn provider_cel_rules() {
    let ok = provider("type: openai\ncredentials: {secretRef: {name: k}}");
    assert_eq!(cel_messages(ok.validate_cel()), "");
    let no_creds = provider("type: anthropic");
    assert!(cel_messages(no_creds.validate_cel()).contains("credentials.secretRef is required"));
    let azure = provider("type: azure-openai\ncredentials: {secretRef: {name: k}}");
    assert!(cel_messages(azure.validate_cel()).contains("baseUrl is required"));
    let bedrock = provider("type: bedrock\ncredentials: {secretRef: {name: k}}");
    assert!(cel_messages(bedrock.validate_cel()).contains("region is required"));
    let mock = provider("type: mock\nmock: {response: hi}");
    assert_eq!(cel_messages(mock.validate_cel()), "");
    let wrong_mock = provider("type: vllm\nbaseUrl: http://x\nmock: {response: hi}");
    assert!(cel_messages(wrong_mock.validate_cel()).contains("only allowed on providers of type mock"));
}

fn route(yaml: &str) -> LLMRoute {
    LLMRoute {
        metadata: meta("r"),
        spec: serde_yaml::from_str(yaml).unwrap(),
        status: None,
    }
}

#[test]
fn route_cel_rules() {
    let ok = route("model: m\nbackends: [{providerRef: {name: p}, model: x}]");
    assert_eq!(cel_messages(ok.validate_cel()), "");
    let zero = route("model: m\nbackends: [{providerRef: {name: p}, model: x, weight: 0}]");
    assert!(cel_messages(zero.validate_cel()).contains("positive weight"));
    let dup = route(
        "model: m\nbackends: [{name: a, providerRef: {name: p}, model: x}, {name: a, providerRef: {name: q}, model: y}]",
    );
    assert!(cel_messages(dup.validate_cel()).contains("backend names must be unique"));
    let selfish = route("model: m\nbackends: [{providerRef: {name: p}, model: x}]\nfallbacks: [{route: m}]");
    assert!(cel_messages(selfish.validate_cel()).contains("cannot fall back to itself"));
    let hedge = route("model: m\nbackends: [{providerRef: {name: p}, model: x}]\nhedging: {enabled: true}");
    assert!(cel_messages(hedge.validate_cel()).contains("hedging.after is required"));
}

#[test]
fn pricing_cel_rules() {
    let priced = |pricing: &str| {
        route(&format!(
            "model: m\nbackends: [{{providerRef: {{name: p}}, model: x, pricing: {pricing}}}]"
        ))
    };
    let ok = priced(
        "{input: 3, output: 15, cachedInput: 0.3, cacheWrite: 3.75, cacheWrite1h: 6, reasoning: 15, \
         longContext: {aboveTokens: 200000, input: 6, output: 22.5, cachedInput: 0.6, cacheWrite: 7.5}}",
    );
    assert_eq!(cel_messages(ok.validate_cel()), "");
    let negative = priced("{cacheWrite: -1}");
    assert!(cel_messages(negative.validate_cel()).contains("pricing.cacheWrite must be between 0 and 1000000"));
    let huge = priced("{reasoning: 1e7}");
    assert!(cel_messages(huge.validate_cel()).contains("pricing.reasoning must be between 0 and 1000000"));
    let tier = priced("{longContext: {aboveTokens: 1, input: 1, output: -2}}");
    assert!(cel_messages(tier.validate_cel()).contains("longContext.output must be between 0 and 1000000"));
    let p = provider("type: openai\ncredentials: {secretRef: {name: k}}\npricing: [{model: m, cacheWrite1h: -1}]");
    assert!(cel_messages(p.validate_cel()).contains("pricing.cacheWrite1h must be between 0 and 1000000"));
}

#[test]
fn gateway_cel_rules() {
    let gw = LLMGateway {
        metadata: meta("g"),
        spec: serde_yaml::from_str("autoscaling: {minReplicas: 5, maxReplicas: 2}").unwrap(),
        status: None,
    };
    assert!(cel_messages(gw.validate_cel()).contains("minReplicas must not exceed"));
    let redis = LLMGateway {
        metadata: meta("g"),
        spec: serde_yaml::from_str("redis: {cluster: true}").unwrap(),
        status: None,
    };
    assert!(cel_messages(redis.validate_cel()).contains("exactly one of redis.url"));
    let spec = |yaml: &str| LLMGateway {
        metadata: meta("g"),
        spec: serde_yaml::from_str(yaml).unwrap(),
        status: None,
    };
    // 9090 is the pods' metrics port, which the Service must not expose.
    let metrics_port = spec("service: {port: 9090}");
    assert!(cel_messages(metrics_port.validate_cel()).contains("metrics port"));
    let ok = spec("{service: {port: 9000}, connections: {headerReadTimeout: 5s, idleTimeout: 2m, max: 500}}");
    assert_eq!(cel_messages(ok.validate_cel()), "");
}

#[test]
fn key_cel_rules() {
    let vk = VirtualKey {
        metadata: meta("k"),
        spec: serde_yaml::from_str("budget: {maxSpend: 0}").unwrap(),
        status: None,
    };
    assert!(cel_messages(vk.validate_cel()).contains("maxSpend must be positive"));
}

#[test]
fn durations_parse() {
    assert_eq!(parse_duration_ms("500ms"), Some(500));
    assert_eq!(parse_duration_ms("1h30m"), Some(5_400_000));
    assert_eq!(parse_duration_ms("30s"), Some(30_000));
    assert_eq!(parse_duration_ms("5"), None);
    assert_eq!(parse_duration_ms(""), None);
    assert_eq!(parse_duration_ms("3d"), None);
}
