//! Tests of the LiteLLM importer: one per mapping, and golden snapshots of the manifests written
//! for whole configs (`snapshots/`).

use super::*;
use switchyard_api::{FallbackTrigger, ProviderType, RouteMode, Strategy};

fn no_env(_: &str) -> Option<String> {
    None
}

fn run(yaml: &str) -> Import {
    import(yaml, "default", &no_env).unwrap()
}

/// `LINE: path` of what was not carried.
fn missing(i: &Import) -> Vec<String> {
    i.notes
        .iter()
        .filter(|n| !n.carried)
        .map(|n| format!("{}: {}", n.line, n.path))
        .collect()
}

fn manifests(i: &Import) -> String {
    i.files("config.yaml")
        .unwrap()
        .into_iter()
        .map(|(name, body)| format!("### {name}\n{body}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn groups_by_model_name_and_one_provider_per_account() {
    let i = run(r#"
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: azure/gpt-4o-eu
      api_base: https://eu.openai.azure.com/
      api_key: os.environ/AZURE_EU_KEY
      api_version: "2024-10-21"
  - model_name: gpt-4o
    litellm_params:
      model: azure/gpt-4o-us
      api_base: https://us.openai.azure.com/
      api_key: os.environ/AZURE_US_KEY
      api_version: "2024-10-21"
  - model_name: gpt-4o-mini
    litellm_params:
      model: azure/gpt-4o-mini
      api_base: https://eu.openai.azure.com/
      api_key: os.environ/AZURE_EU_KEY
      api_version: "2024-10-21"
general_settings:
  master_key: os.environ/LITELLM_MASTER_KEY
"#);
    assert_eq!(missing(&i), Vec::<String>::new());
    assert_eq!(i.routes.len(), 2);
    assert_eq!(i.providers.len(), 2, "two Azure resources");
    let r = &i.routes[0].spec;
    assert_eq!(r.model, "gpt-4o");
    assert_eq!(r.backends.len(), 2);
    assert_eq!(r.backends[0].provider_ref.name, "azure-openai");
    assert_eq!(r.backends[1].provider_ref.name, "azure-openai-2");
    assert_eq!(r.backends[0].model, "gpt-4o-eu");
    assert_eq!(i.routes[1].spec.backends[0].provider_ref.name, "azure-openai");
    assert_eq!(
        i.providers[0].spec.base_url.as_deref(),
        Some("https://eu.openai.azure.com")
    );
    assert_eq!(i.providers[0].spec.provider_type, ProviderType::AzureOpenai);
}

#[test]
fn environment_references_become_secret_references() {
    let i = run("model_list:\n  - model_name: m\n    litellm_params:\n      model: anthropic/claude-3-haiku-20240307\n      api_key: os.environ/MY_ANTHROPIC\n");
    let cred = i.providers[0].spec.credentials.as_ref().unwrap();
    assert_eq!(cred.secret_ref.name, ENV_SECRET);
    assert_eq!(cred.secret_ref.key.as_deref(), Some("MY_ANTHROPIC"));
    let data = i.secrets[0].string_data.as_ref().unwrap();
    assert_eq!(data.get("MY_ANTHROPIC").map(String::as_str), Some("${MY_ANTHROPIC}"));
}

#[test]
fn inline_credentials_are_never_copied() {
    let text = "model_list:\n  - model_name: m\n    litellm_params:\n      model: openai/gpt-4o\n      api_key: sk-secret-value\ngeneral_settings:\n  master_key: sk-1234\n";
    let i = run(text);
    let all = manifests(&i);
    assert!(!all.contains("sk-secret-value") && !all.contains("sk-1234"), "{all}");
    assert!(all.contains("INLINE_OPENAI_API_KEY: ${INLINE_OPENAI_API_KEY}"), "{all}");
    assert!(all.contains("LITELLM_MASTER_KEY: ${LITELLM_MASTER_KEY}"), "{all}");
    assert_eq!(
        missing(&i),
        vec![
            "5: model_list[0].litellm_params.api_key",
            "7: general_settings.master_key"
        ]
    );
    assert!(!i.complete());
}

#[test]
fn missing_api_key_reads_the_providers_variable() {
    let i = run("model_list:\n  - model_name: m\n    litellm_params:\n      model: groq/llama3-8b-8192\n");
    let cred = i.providers[0].spec.credentials.as_ref().unwrap();
    assert_eq!(cred.secret_ref.key.as_deref(), Some("GROQ_API_KEY"));
}

#[test]
fn api_base_from_the_environment_is_read_while_importing() {
    let env = |k: &str| (k == "BASE").then(|| "http://127.0.0.1:9999/v1".to_string());
    let text =
        "model_list:\n  - model_name: m\n    litellm_params:\n      model: openai/x\n      api_base: os.environ/BASE\n";
    let i = import(text, "default", &env).unwrap();
    assert_eq!(
        i.providers[0].spec.base_url.as_deref(),
        Some("http://127.0.0.1:9999/v1")
    );
    assert!(i.notes.iter().any(|n| n.carried && n.line == 5));
    // Unset: a placeholder, not carried.
    let i = run(text);
    assert_eq!(i.providers[0].spec.base_url.as_deref(), Some("https://base.invalid"));
    assert!(missing(&i).contains(&"5: model_list[0].litellm_params.api_base".to_string()));
}

#[test]
fn bedrock_and_vertex_credentials() {
    let i = run(r#"
model_list:
  - model_name: claude
    litellm_params:
      model: bedrock/anthropic.claude-3-sonnet-20240229-v1:0
      aws_region_name: eu-central-1
      aws_access_key_id: os.environ/AWS_KEY
      aws_secret_access_key: os.environ/AWS_SECRET
  - model_name: gemini
    litellm_params:
      model: vertex_ai/gemini-1.5-pro
      vertex_project: my-project
      vertex_location: europe-west4
      vertex_credentials: os.environ/VERTEX_SA
"#);
    let bedrock = &i.providers[0].spec;
    assert_eq!(bedrock.region.as_deref(), Some("eu-central-1"));
    assert_eq!(bedrock.credentials.as_ref().unwrap().secret_ref.name, "litellm-aws");
    let vertex = &i.providers[1].spec;
    assert_eq!(vertex.vertex.as_ref().unwrap().project, "my-project");
    assert_eq!(vertex.region.as_deref(), Some("europe-west4"));
    let aws = i
        .secrets
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("litellm-aws"))
        .unwrap();
    let data = aws.string_data.as_ref().unwrap();
    assert_eq!(data.get("accessKeyId").map(String::as_str), Some("${AWS_KEY}"));
    assert_eq!(data.get("secretAccessKey").map(String::as_str), Some("${AWS_SECRET}"));
    let sa = i
        .secrets
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("litellm-vertex"))
        .unwrap();
    assert_eq!(
        sa.string_data
            .as_ref()
            .unwrap()
            .get("serviceAccount.json")
            .map(String::as_str),
        Some("${VERTEX_SA}")
    );
    assert_eq!(missing(&i), vec!["1: general_settings.master_key"]);
}

#[test]
fn weights_rpm_tpm_and_order() {
    let i = run(r#"
model_list:
  - model_name: a
    litellm_params: {model: openai/x, weight: 0.9, rpm: 10}
  - model_name: a
    litellm_params: {model: openai/y, weight: 0.1, tpm: 1000}
  - model_name: b
    litellm_params: {model: openai/x, rpm: 300}
  - model_name: b
    litellm_params: {model: openai/y, rpm: 100, order: 2}
  - model_name: c
    litellm_params: {model: openai/x}
    tpm: 20_000
"#);
    let a = &i.routes[0].spec;
    assert_eq!(a.strategy, Strategy::Shuffle);
    assert_eq!((a.backends[0].weight, a.backends[1].weight), (1000, 111));
    assert_eq!(a.backends[0].limits.as_ref().unwrap().rpm, Some(10));
    assert_eq!(a.backends[1].limits.as_ref().unwrap().tpm, Some(1000));
    let b = &i.routes[1].spec;
    assert_eq!((b.backends[0].weight, b.backends[1].weight), (300, 100));
    assert_eq!((b.backends[0].priority, b.backends[1].priority), (0, 2));
    // YAML 1.1's `20_000`, which LiteLLM (PyYAML) reads as a number.
    assert_eq!(i.routes[2].spec.backends[0].limits.as_ref().unwrap().tpm, Some(20000));
}

#[test]
fn model_info_windows_prices_and_modes() {
    let i = run(r#"
model_list:
  - model_name: chat
    litellm_params: {model: openai/gpt-4o, input_cost_per_token: 0.0000025}
    model_info: {max_input_tokens: 128000, max_output_tokens: 16384, output_cost_per_token: 0.00001, id: "GPT 4o / primary", base_model: azure/gpt-4o}
  - model_name: embed
    litellm_params: {model: openai/text-embedding-3-small}
  - model_name: images
    litellm_params: {model: openai/dall-e-3}
    model_info: {mode: image_generation}
  - model_name: whisper
    litellm_params: {model: groq/whisper-large-v3}
    model_info: {mode: audio_transcription}
  - model_name: tts
    litellm_params: {model: openai/tts-1}
    model_info: {mode: audio_speech}
  - model_name: rerank
    litellm_params: {model: cohere/rerank-v3.5}
    model_info: {mode: rerank}
  - model_name: moderation
    litellm_params: {model: openai/omni-moderation-latest}
    model_info: {mode: moderation}
  - model_name: batch
    litellm_params: {model: openai/gpt-4o}
    model_info: {mode: batch}
  - model_name: voyage-embed
    litellm_params: {model: voyage/voyage-3.5}
    model_info: {mode: embedding}
  - model_name: jina-rerank
    litellm_params: {model: jina_ai/jina-reranker-v2-base-multilingual}
    model_info: {mode: rerank}
"#);
    let b = &i.routes[0].spec.backends[0];
    assert_eq!(b.name, "gpt-4o-primary");
    assert_eq!(b.context_window, Some(128000));
    assert_eq!(b.max_output_tokens, Some(16384));
    let p = b.pricing.as_ref().unwrap();
    assert_eq!((p.input, p.output), (Some(2.5), Some(10.0)));
    assert_eq!(i.routes[1].spec.mode, RouteMode::Embeddings);
    let modes: Vec<_> = i.routes.iter().map(|r| (r.spec.model.as_str(), r.spec.mode)).collect();
    assert_eq!(
        modes,
        vec![
            ("chat", RouteMode::Chat),
            ("embed", RouteMode::Embeddings),
            ("images", RouteMode::ImageGeneration),
            ("whisper", RouteMode::AudioTranscription),
            ("tts", RouteMode::AudioSpeech),
            ("rerank", RouteMode::Rerank),
            ("moderation", RouteMode::Moderation),
            ("voyage-embed", RouteMode::Embeddings),
            ("jina-rerank", RouteMode::Rerank),
        ],
        "every mode Switchyard serves is carried; batch is not a route"
    );
    assert_eq!(i.routes[3].spec.backends[0].model, "whisper-large-v3");
    let types: Vec<_> = i.providers.iter().map(|p| p.spec.provider_type).collect();
    assert!(
        types.contains(&ProviderType::Voyage) && types.contains(&ProviderType::Jina),
        "{types:?}"
    );
    assert_eq!(
        missing(&i),
        vec![
            "5: model_list[0].model_info.base_model",
            "25: model_list[7].model_info.mode",
            "1: general_settings.master_key"
        ]
    );
}

#[test]
fn unsupported_providers_and_wildcards_are_reported() {
    let i = run(r#"
model_list:
  - model_name: "*"
    litellm_params: {model: "openai/*"}
  - model_name: starcoder
    litellm_params: {model: huggingface/bigcode/starcoder}
  - model_name: openai/gpt-4o
    litellm_params: {model: openai/gpt-4o}
  - model_name: "anthropic/*"
    litellm_params: {model: "anthropic/*"}
  - model_name: "gpt-*"
    litellm_params: {model: "openai/gpt-4o-mini"}
  - model_name: fixed
    litellm_params: {model: "openai/*"}
  - model_name: "a*b*"
    litellm_params: {model: "openai/*"}
"#);
    assert_eq!(
        missing(&i),
        vec![
            "6: model_list[1].litellm_params.model",
            "7: model_list[2].model_name",
            "14: model_list[5].litellm_params.model",
            "16: model_list[6].litellm_params.model",
            "1: general_settings.master_key"
        ]
    );
    // `*` -> `openai/*`: every model no other route names goes to OpenAI under its own name.
    let routes: Vec<_> = i
        .routes
        .iter()
        .map(|r| {
            (
                r.metadata.name.as_deref().unwrap(),
                r.spec.model.as_str(),
                r.spec.backends[0].model.as_str(),
            )
        })
        .collect();
    assert_eq!(
        routes,
        vec![
            ("wildcard", "*", "*"),
            ("openai-gpt-4o", "openai-gpt-4o", "gpt-4o"),
            ("anthropic-wildcard", "anthropic/*", "*"),
            ("gpt-wildcard", "gpt-*", "gpt-4o-mini"),
        ]
    );
}

#[test]
fn router_settings_become_route_resilience() {
    let i = run(r#"
model_list:
  - model_name: a
    litellm_params: {model: openai/a}
  - model_name: b
    litellm_params: {model: openai/b}
  - model_name: c
    litellm_params: {model: openai/c}
router_settings:
  routing_strategy: latency-based-routing
  num_retries: 4
  retry_after: 0.5
  timeout: 30
  stream_timeout: 10
  allowed_fails: 1
  cooldown_time: 60
  fallbacks: [{"a": ["b", "c"]}]
  context_window_fallbacks: [{"a": ["c"]}]
litellm_settings:
  num_retries: 1
  drop_params: true
"#);
    let a = &i.routes[0].spec;
    assert_eq!(a.strategy, Strategy::Latency);
    let retries = a.retries.as_ref().unwrap();
    assert_eq!((retries.attempts, retries.backoff.as_deref()), (4, Some("500ms")));
    assert_eq!(a.timeouts.as_ref().unwrap().per_try.as_deref(), Some("30s"));
    assert!(a.drop_unsupported_params);
    assert_eq!(a.fallbacks.len(), 2);
    assert_eq!(a.fallbacks[0].route, "b");
    // Context-window errors go to the dedicated list only; content policy (no list) to both.
    use FallbackTrigger::*;
    assert_eq!(a.fallbacks[0].on, vec![RateLimit, ServerError, Timeout, ContentPolicy]);
    assert_eq!(a.fallbacks[1].route, "c");
    assert!(a.fallbacks[1].on.is_empty(), "every trigger: {:?}", a.fallbacks[1].on);
    let p = &i.providers[0].spec;
    let cb = p.circuit_breaker.as_ref().unwrap();
    assert_eq!(
        (cb.consecutive_failures, cb.cooldown.as_deref()),
        (Some(2), Some("60s"))
    );
    assert_eq!(p.timeouts.as_ref().unwrap().stream_idle.as_deref(), Some("10s"));
}

#[test]
fn fallback_loops_and_unknown_targets_are_refused() {
    let i = run(r#"
model_list:
  - model_name: a
    litellm_params: {model: openai/a}
  - model_name: b
    litellm_params: {model: openai/b}
router_settings:
  fallbacks: [{"a": ["b"]}, {"b": ["a", "zzz"]}]
"#);
    assert_eq!(i.routes[0].spec.fallbacks.len(), 1);
    assert!(i.routes[1].spec.fallbacks.is_empty());
    assert_eq!(
        missing(&i),
        vec![
            "8: router_settings.fallbacks[1].b",
            "8: router_settings.fallbacks[1].b",
            "1: general_settings.master_key"
        ]
    );
}

#[test]
fn default_fallbacks_and_aliases() {
    let i = run(r#"
model_list:
  - model_name: a
    litellm_params: {model: openai/a}
  - model_name: backup
    litellm_params: {model: openai/b}
router_settings:
  default_fallbacks: ["backup"]
  model_group_alias: {"gpt-4": "a"}
"#);
    assert_eq!(i.routes[0].spec.fallbacks[0].route, "backup");
    assert!(i.routes[1].spec.fallbacks.is_empty(), "no fallback to itself");
    assert_eq!(i.routes[0].spec.aliases, vec!["gpt-4"]);
}

#[test]
fn cache_settings() {
    let i = run(r#"
model_list:
  - model_name: a
    litellm_params: {model: openai/a}
litellm_settings:
  cache: true
  cache_params: {type: redis, host: localhost, ttl: 600}
"#);
    let c = i.routes[0].spec.cache.as_ref().unwrap();
    assert!(c.enabled);
    assert_eq!(c.ttl.as_deref(), Some("600s"));
    assert_eq!(
        missing(&i),
        vec![
            "7: litellm_settings.cache_params.host",
            "1: general_settings.master_key"
        ]
    );
    let semantic = run("model_list: []\nlitellm_settings:\n  cache: true\n  cache_params: {type: redis-semantic}\n");
    assert!(semantic.routes.is_empty());
    assert!(missing(&semantic).contains(&"4: litellm_settings.cache_params.type".to_string()));
}

#[test]
fn unknown_settings_are_reported_with_their_line() {
    let i = run("model_list: []\nrouter_settings:\n  redis_host: x\nlitellm_settings:\n  success_callback: [\"langfuse\"]\n  callbacks: [\"prometheus\"]\nguardrails: []\nsomething_new: 1\n");
    assert_eq!(
        missing(&i),
        vec![
            "5: litellm_settings.success_callback",
            "3: router_settings.redis_host",
            "1: general_settings.master_key",
            "7: guardrails",
            "8: something_new"
        ]
    );
    // prometheus is carried, with a note.
    assert!(i.notes.iter().any(|n| n.carried && n.line == 6));
}

#[test]
fn syntax_errors_are_refused() {
    assert!(import("model_list: [\n", "default", &no_env).is_err());
    assert!(import("- a\n- b\n", "default", &no_env).is_err());
}

const FALLBACKS: &str = include_str!("../../../../tests/gateway/litellm_configs/fallbacks.yaml");
const ROUTING: &str = include_str!("../../../../tests/gateway/litellm_configs/routing.yaml");
const CACHING: &str = include_str!("../../../../tests/gateway/litellm_configs/caching.yaml");

#[test]
fn golden_routing() {
    let i = run(ROUTING);
    insta::assert_snapshot!(manifests(&i));
}

#[test]
fn golden_fallbacks() {
    let i = run(FALLBACKS);
    insta::assert_snapshot!(manifests(&i));
}

#[test]
fn golden_caching() {
    let i = run(CACHING);
    insta::assert_snapshot!(manifests(&i));
}

#[test]
fn notes_print_with_line_and_path() {
    let n = Note {
        line: 3,
        path: "router_settings.redis_host".into(),
        message: "why".into(),
        carried: false,
    };
    assert_eq!(n.to_string(), "3: router_settings.redis_host: not carried: why");
}

#[test]
fn azure_api_versions_are_quoted() {
    assert_eq!(
        quote_dates("spec:\n  apiVersion: 2024-10-21\napiVersion: switchyard.dev/v1alpha1\n"),
        "spec:\n  apiVersion: '2024-10-21'\napiVersion: switchyard.dev/v1alpha1\n"
    );
}

#[test]
fn order_tiers_become_fallback_routes() {
    let i = run(r#"
model_list:
  - model_name: m
    litellm_params: {model: openai/first, order: 1}
  - model_name: m
    litellm_params: {model: openai/second, order: 2}
  - model_name: m
    litellm_params: {model: openai/third, order: 3}
  - model_name: backup
    litellm_params: {model: openai/backup}
router_settings:
  fallbacks: [{"m": ["backup"]}]
"#);
    let names: Vec<&str> = i.routes.iter().map(|r| r.spec.model.as_str()).collect();
    assert_eq!(names, vec!["m", "backup", "m-order-2", "m-order-3"]);
    let m = &i.routes[0].spec;
    assert_eq!(m.backends.len(), 1);
    assert_eq!(m.backends[0].model, "first");
    let targets: Vec<&str> = m.fallbacks.iter().map(|f| f.route.as_str()).collect();
    assert_eq!(targets, vec!["m-order-2", "m-order-3", "backup"]);
    use FallbackTrigger::*;
    assert_eq!(m.fallbacks[0].on, vec![RateLimit, ServerError, Timeout]);
    assert!(i.routes[2].spec.fallbacks.is_empty());
    assert_eq!(i.routes[3].spec.backends[0].model, "third");
}
