use super::*;
use crate::types::Tokens;

/// Entries of litellm's price list, copied verbatim by `scripts/gen-prices.py`.
const EXCERPT: &str = include_str!("../../testdata/litellm-excerpt.json");

/// litellm key, the provider type and model id Switchyard looks it up by.
const CASES: [(&str, ProviderKind, &str); 16] = [
    ("gpt-4o", ProviderKind::Openai, "gpt-4o"),
    ("text-embedding-3-small", ProviderKind::Openai, "text-embedding-3-small"),
    ("gpt-5.4", ProviderKind::Openai, "gpt-5.4"),
    ("claude-sonnet-4-5", ProviderKind::Anthropic, "claude-sonnet-4-5"),
    ("gemini/gemini-2.5-pro", ProviderKind::Gemini, "gemini-2.5-pro"),
    ("gemini-2.5-pro", ProviderKind::Vertex, "gemini-2.5-pro"),
    (
        "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        ProviderKind::Bedrock,
        "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
    ),
    (
        "vertex_ai/claude-sonnet-4-5@20250929",
        ProviderKind::Vertex,
        "claude-sonnet-4-5@20250929",
    ),
    ("azure/gpt-4o", ProviderKind::AzureOpenai, "gpt-4o"),
    ("deepseek-chat", ProviderKind::Deepseek, "deepseek-chat"),
    (
        "mistral/mistral-large-latest",
        ProviderKind::Mistral,
        "mistral-large-latest",
    ),
    ("groq/openai/gpt-oss-120b", ProviderKind::Groq, "openai/gpt-oss-120b"),
    ("command-a-03-2025", ProviderKind::Cohere, "command-a-03-2025"),
    (
        "together_ai/openai/gpt-oss-20b",
        ProviderKind::Together,
        "openai/gpt-oss-20b",
    ),
    (
        "fireworks_ai/accounts/fireworks/models/qwen3-4b-instruct-2507",
        ProviderKind::Fireworks,
        "accounts/fireworks/models/qwen3-4b-instruct-2507",
    ),
    ("xai/grok-4.3", ProviderKind::Xai, "grok-4.3"),
];

/// USD per token in the source, per million in the table.
fn per_million(entry: &serde_json::Value, key: &str) -> Option<f64> {
    entry.get(key).and_then(serde_json::Value::as_f64).map(|v| v * 1e6)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

fn assert_price(what: &str, table: Option<f64>, source: Option<f64>) {
    match (table, source) {
        (Some(t), Some(s)) => assert!(close(t, s), "{what}: table {t}, source {s}"),
        (t, s) => assert_eq!(t, s, "{what}"),
    }
}

fn info(kind: ProviderKind, model: &str) -> ModelInfo {
    lookup_for(kind, model).unwrap_or_else(|| panic!("{} {model} not in the table", kind.as_str()))
}

#[test]
fn rows_match_the_source_they_were_generated_from() {
    let source: serde_json::Value = serde_json::from_str(EXCERPT).unwrap();
    let mut tiered = 0;
    let mut cache_writes = 0;
    for (key, kind, model) in CASES {
        let e = &source[key];
        assert!(
            e.is_object(),
            "{key} missing from the excerpt: rerun scripts/gen-prices.py"
        );
        let i = info(kind, model);
        assert_eq!(i.provider, kind, "{key}");
        let p = i.price;
        let what = |k: &str| format!("{key} {k}");
        assert_price(&what("input"), Some(p.input), per_million(e, "input_cost_per_token"));
        assert_price(
            &what("output"),
            Some(p.output),
            per_million(e, "output_cost_per_token").or(Some(0.0)),
        );
        assert_price(
            &what("cached"),
            Some(p.cached_input),
            per_million(e, "cache_read_input_token_cost").or(Some(p.input)),
        );
        assert_price(
            &what("cache write"),
            p.cache_write,
            per_million(e, "cache_creation_input_token_cost"),
        );
        assert_price(
            &what("cache write 1h"),
            p.cache_write_1h,
            per_million(e, "cache_creation_input_token_cost_above_1hr"),
        );
        let tokens = |k: &str| e.get(k).and_then(serde_json::Value::as_u64);
        assert_eq!(
            u64::from(i.context_window),
            tokens("max_input_tokens").unwrap_or(0),
            "{key}"
        );
        assert_eq!(
            u64::from(i.max_output),
            tokens("max_output_tokens").unwrap_or(0),
            "{key}"
        );
        let above = ["200k", "272k"]
            .into_iter()
            .find(|k| e.get(format!("input_cost_per_token_above_{k}_tokens")).is_some());
        match (above, p.long_context) {
            (None, None) => {}
            (Some(k), Some(t)) => {
                tiered += 1;
                let field = |f: &str| format!("{f}_above_{k}_tokens");
                assert_eq!(t.above_tokens, k.trim_end_matches('k').parse::<u64>().unwrap() * 1000);
                assert_price(
                    &what("tier input"),
                    Some(t.input),
                    per_million(e, &field("input_cost_per_token")),
                );
                assert_price(
                    &what("tier output"),
                    Some(t.output),
                    per_million(e, &field("output_cost_per_token")),
                );
                assert_price(
                    &what("tier cached"),
                    t.cached_input,
                    per_million(e, &field("cache_read_input_token_cost")),
                );
                assert_price(
                    &what("tier cache write"),
                    t.cache_write,
                    per_million(e, &field("cache_creation_input_token_cost")),
                );
            }
            (a, t) => panic!("{key}: source tier {a:?}, table tier {t:?}"),
        }
        if p.cache_write.is_some() {
            cache_writes += 1;
        }
    }
    // The cases cover what they are meant to.
    assert!(tiered >= 4, "{tiered}");
    assert!(cache_writes >= 3, "{cache_writes}");
}

#[test]
fn known_prices() {
    let gpt = info(ProviderKind::Openai, "gpt-4o").price;
    assert_eq!((gpt.input, gpt.output, gpt.cached_input), (2.5, 10.0, 1.25));
    assert_eq!(gpt.cache_write, None);
    let claude = info(ProviderKind::Anthropic, "claude-sonnet-4-5").price;
    assert_eq!((claude.input, claude.output, claude.cached_input), (3.0, 15.0, 0.3));
    // Anthropic bills cache writes at 1.25x input (five minutes) and 2x (one hour).
    assert_eq!(claude.cache_write, Some(3.75));
    assert_eq!(claude.cache_write_1h, Some(6.0));
    let gemini = info(ProviderKind::Gemini, "gemini-2.5-pro").price;
    let tier = gemini.long_context.unwrap();
    assert_eq!((tier.above_tokens, tier.input, tier.output), (200_000, 2.5, 15.0));
}

#[test]
fn audio_prices_are_in_the_units_the_gateway_counts() {
    // whisper-1: $0.006 a minute, i.e. $100 per million seconds.
    assert_eq!(info(ProviderKind::Openai, "whisper-1").price.input, 100.0);
    assert_eq!(info(ProviderKind::Groq, "whisper-large-v3").price.input, 30.83);
    // GPT-4o transcribe reports tokens: its audio input and text output token prices.
    let t = info(ProviderKind::AzureOpenai, "gpt-4o-transcribe").price;
    assert_eq!((t.input, t.output), (6.0, 10.0));
    // tts-1: $15 per million characters.
    assert_eq!(info(ProviderKind::Openai, "tts-1").price.input, 15.0);
}

#[test]
fn the_table_is_large_sane_and_says_where_it_came_from() {
    let t = table();
    let data_lines = TEXT
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with("provider\t"))
        .count();
    // Every line parsed (a bad line would have left the table empty).
    assert_eq!(t.rows.len(), data_lines);
    assert!(t.rows.len() >= 500, "{} rows", t.rows.len());
    let finite = |p: f64| p.is_finite() && p >= 0.0;
    for r in &t.rows {
        let p = r.price;
        let mut all = vec![p.input, p.output, p.cached_input];
        all.extend(p.cache_write);
        all.extend(p.cache_write_1h);
        all.extend(p.reasoning);
        if let Some(l) = p.long_context {
            all.extend([l.input, l.output]);
            all.extend(l.cached_input);
            all.extend(l.cache_write);
            all.extend(l.cache_write_1h);
        }
        assert!(all.into_iter().all(finite), "{r:?}");
    }
    // Every provider type with a public price list has rows.
    for kind in [
        ProviderKind::Openai,
        ProviderKind::AzureOpenai,
        ProviderKind::Anthropic,
        ProviderKind::Bedrock,
        ProviderKind::Vertex,
        ProviderKind::Gemini,
        ProviderKind::Mistral,
        ProviderKind::Groq,
        ProviderKind::Xai,
        ProviderKind::Deepseek,
        ProviderKind::Cohere,
        ProviderKind::Together,
        ProviderKind::Fireworks,
    ] {
        assert!(t.by_kind.get(&kind).is_some_and(|m| !m.is_empty()), "{kind:?}");
    }
    // The Anthropic adapter sends the table's max_output as max_tokens: it must be known.
    for (model, i) in &t.any {
        if model.starts_with("claude") {
            assert!(t.rows[*i].max_output > 0, "{model}");
        }
    }
    let header: Vec<&str> = source().collect();
    assert!(
        header.iter().any(|l| l.starts_with("source: PyPI package litellm==")),
        "{header:?}"
    );
    assert!(header.iter().any(|l| l.starts_with("generated: 20")), "{header:?}");
}

#[test]
fn lookup_falls_back_sensibly() {
    // Dated snapshots and Azure deployment names find their family.
    assert_eq!(info(ProviderKind::Openai, "gpt-4o-2024-08-06").price.input, 2.5);
    assert_eq!(info(ProviderKind::AzureOpenai, "gpt-4o-prod-eastus").price.input, 2.5);
    // A separator bounds the prefix: `gpt-4o-mini-custom` is a gpt-4o-mini, not a gpt-4o.
    assert_eq!(
        info(ProviderKind::Openai, "gpt-4o-mini-custom").price,
        info(ProviderKind::Openai, "gpt-4o-mini").price
    );
    // Vertex versions.
    assert_eq!(
        info(ProviderKind::Vertex, "claude-sonnet-4-5@20990101").price.input,
        info(ProviderKind::Vertex, "claude-sonnet-4-5").price.input
    );
    // The same model is priced by the provider that serves it: Bedrock's US profile costs 10% more.
    let direct = info(ProviderKind::Bedrock, "anthropic.claude-sonnet-4-5-20250929-v1:0").price;
    let us = info(ProviderKind::Bedrock, "us.anthropic.claude-sonnet-4-5-20250929-v1:0").price;
    assert!(close(us.input, direct.input * 1.1), "{us:?} {direct:?}");
    // Provider types without a price list use the maker's price.
    let openai = info(ProviderKind::Openai, "gpt-4o");
    assert_eq!(info(ProviderKind::Mock, "gpt-4o"), openai);
    assert_eq!(info(ProviderKind::OpenaiCompatible, "gpt-4o"), openai);
    assert_eq!(info(ProviderKind::Openrouter, "openai/gpt-4o"), openai);
    assert_eq!(lookup("gpt-4o"), Some(openai));
    assert_eq!(
        lookup("claude-sonnet-4-5").map(|i| i.provider),
        Some(ProviderKind::Anthropic)
    );
    // Ollama's free local rows never price another provider's model.
    assert!(t_any_has_no(ProviderKind::Ollama));
    assert_eq!(lookup_for(ProviderKind::Openai, "unknown-model"), None);
    assert_eq!(lookup("unknown-model"), None);
}

fn t_any_has_no(kind: ProviderKind) -> bool {
    let t = table();
    t.any.values().all(|i| t.rows[*i].provider != kind)
}

fn price() -> Price {
    Price {
        input: 3.0,
        output: 15.0,
        cached_input: 0.3,
        cache_write: Some(3.75),
        cache_write_1h: Some(6.0),
        reasoning: Some(20.0),
        long_context: Some(LongContextPrice {
            above_tokens: 200_000,
            input: 6.0,
            output: 22.5,
            cached_input: Some(0.6),
            cache_write: Some(7.5),
            cache_write_1h: None,
        }),
    }
}

#[test]
fn each_kind_of_token_at_its_price() {
    let p = price();
    // A million tokens of each kind alone (the prompt counts cached and cache writes, the
    // completion counts reasoning), and the price they are billed at.
    let m = 1_000_000;
    let cases = [
        (
            Tokens {
                prompt: m,
                ..Tokens::default()
            },
            3.0,
        ),
        (
            Tokens {
                completion: m,
                ..Tokens::default()
            },
            15.0,
        ),
        (
            Tokens {
                prompt: m,
                cached: m,
                ..Tokens::default()
            },
            0.3,
        ),
        (
            Tokens {
                prompt: m,
                cache_write: m,
                ..Tokens::default()
            },
            3.75,
        ),
        (
            Tokens {
                prompt: m,
                cache_write: m,
                cache_write_1h: m,
                ..Tokens::default()
            },
            6.0,
        ),
        (
            Tokens {
                completion: m,
                reasoning: m,
                ..Tokens::default()
            },
            20.0,
        ),
    ];
    // Scaled down to 100k tokens, below the tier: a tenth of the price.
    for (t, usd_per_million) in cases {
        let small = Tokens {
            prompt: t.prompt / 10,
            completion: t.completion / 10,
            cached: t.cached / 10,
            cache_write: t.cache_write / 10,
            cache_write_1h: t.cache_write_1h / 10,
            reasoning: t.reasoning / 10,
        };
        assert!(
            close(p.cost_of(&small), usd_per_million / 10.0),
            "{small:?}: {}",
            p.cost_of(&small)
        );
    }
    // A mixed request: 10k prompt of which 4k cached, 3k written (1k of them for an hour), 2k
    // completion of which 500 reasoning.
    let t = Tokens {
        prompt: 10_000,
        completion: 2_000,
        cached: 4_000,
        cache_write: 3_000,
        cache_write_1h: 1_000,
        reasoning: 500,
    };
    let want = (3_000.0 * 3.0 + 4_000.0 * 0.3 + 2_000.0 * 3.75 + 1_000.0 * 6.0 + 1_500.0 * 15.0 + 500.0 * 20.0) / 1e6;
    assert!(close(p.cost_of(&t), want), "{} {want}", p.cost_of(&t));
}

#[test]
fn long_prompts_use_the_tier_for_the_whole_request() {
    let p = price();
    let at = Tokens {
        prompt: 200_000,
        completion: 1_000,
        ..Tokens::default()
    };
    assert!(close(p.cost_of(&at), (200_000.0 * 3.0 + 1_000.0 * 15.0) / 1e6));
    let above = Tokens {
        prompt: 200_001,
        completion: 1_000,
        cached: 100_000,
        cache_write: 50_000,
        cache_write_1h: 10_000,
        reasoning: 0,
    };
    // Tier input, output, cache reads and writes; one-hour writes have no tier price and keep the
    // base one.
    let want = (50_001.0 * 6.0 + 100_000.0 * 0.6 + 40_000.0 * 7.5 + 10_000.0 * 6.0 + 1_000.0 * 22.5) / 1e6;
    assert!(close(p.cost_of(&above), want), "{} {want}", p.cost_of(&above));
    // Cached and cache-write tokens count toward the threshold: the prompt includes them.
    let cached_only = Tokens {
        prompt: 300_000,
        cached: 300_000,
        ..Tokens::default()
    };
    assert!(close(p.cost_of(&cached_only), 300_000.0 * 0.6 / 1e6));
}

#[test]
fn unset_prices_default_to_their_plain_kind() {
    let p = Price {
        input: 2.0,
        output: 8.0,
        cached_input: 0.5,
        ..Price::default()
    };
    let t = Tokens {
        prompt: 1_000,
        completion: 1_000,
        cached: 100,
        cache_write: 200,
        cache_write_1h: 50,
        reasoning: 300,
    };
    // Cache writes at input, reasoning at output.
    assert!(close(p.cost_of(&t), (900.0 * 2.0 + 100.0 * 0.5 + 1_000.0 * 8.0) / 1e6));
    // The three-argument form is the same with no writes or reasoning.
    assert_eq!(
        p.cost(1_000, 1_000, 100),
        p.cost_of(&Tokens {
            prompt: 1_000,
            completion: 1_000,
            cached: 100,
            ..Tokens::default()
        })
    );
    assert!(close(
        p.cost(1_000, 1_000, 100),
        (900.0 * 2.0 + 100.0 * 0.5 + 1_000.0 * 8.0) / 1e6
    ));
    // Above a tier without its own cache prices: the base cache read, the tier's input for writes.
    let tiered = Price {
        long_context: Some(LongContextPrice {
            above_tokens: 500,
            input: 4.0,
            output: 16.0,
            ..LongContextPrice::default()
        }),
        ..p
    };
    assert!(close(
        tiered.cost_of(&t),
        (700.0 * 4.0 + 100.0 * 0.5 + 200.0 * 4.0 + 1_000.0 * 16.0) / 1e6
    ));
}

#[test]
fn costs_are_finite_and_never_negative() {
    let p = price();
    let huge = Tokens {
        prompt: u64::MAX,
        completion: u64::MAX,
        cached: u64::MAX,
        cache_write: u64::MAX,
        cache_write_1h: u64::MAX,
        reasoning: u64::MAX,
    };
    let c = p.cost_of(&huge);
    assert!(c.is_finite() && c > 0.0, "{c}");
    // Parts larger than their whole are clamped, not subtracted into an underflow.
    let odd = Tokens {
        prompt: 10,
        completion: 5,
        cached: 50,
        cache_write: 50,
        cache_write_1h: 90,
        reasoning: 40,
    };
    assert!(close(p.cost_of(&odd), (10.0 * 0.3 + 5.0 * 20.0) / 1e6));
    // Prices that validation refuses count as zero rather than poisoning spend with NaN.
    let bad = Price {
        input: f64::NAN,
        output: f64::INFINITY,
        cached_input: -1.0,
        ..Price::default()
    };
    let c = bad.cost_of(&Tokens {
        prompt: 10,
        completion: 10,
        cached: 5,
        ..Tokens::default()
    });
    assert_eq!(c, 0.0);
    assert_eq!(Price::default().cost(0, 0, 0), 0.0);
}

const MANIFESTS: &str = r#"
apiVersion: switchyard.dev/v1alpha1
kind: Provider
metadata: {name: anthropic}
spec:
  type: anthropic
  credentials: {secretRef: {name: keys}}
  pricing:
    - model: claude-sonnet-4-5
      cacheWrite: 4
---
apiVersion: switchyard.dev/v1alpha1
kind: Provider
metadata: {name: openai}
spec:
  type: openai
  credentials: {secretRef: {name: keys}}
---
apiVersion: switchyard.dev/v1alpha1
kind: Provider
metadata: {name: gemini}
spec:
  type: gemini
  credentials: {secretRef: {name: keys}}
---
apiVersion: switchyard.dev/v1alpha1
kind: Provider
metadata: {name: mock}
spec:
  type: mock
---
apiVersion: v1
kind: Secret
metadata: {name: keys}
stringData: {apiKey: sk-upstream}
---
apiVersion: switchyard.dev/v1alpha1
kind: LLMRoute
metadata: {name: chat}
spec:
  model: chat
  backends:
    - name: table-and-provider
      providerRef: {name: anthropic}
      model: claude-sonnet-4-5
    - name: backend-wins
      providerRef: {name: anthropic}
      model: claude-sonnet-4-5
      pricing:
        input: 2
        cacheWrite1h: 5
        reasoning: 30
        longContext: {aboveTokens: 100000, input: 4, output: 20}
    - name: negotiated
      providerRef: {name: openai}
      model: gpt-4o
      pricing: {input: 1000, output: 1000}
    - name: unlisted
      providerRef: {name: mock}
      model: in-house-model
      pricing: {input: 1000, output: 1000}
    - name: tiered
      providerRef: {name: gemini}
      model: gemini-2.5-pro
    - name: unpriced
      providerRef: {name: mock}
      model: in-house-model
"#;

fn compiled_prices() -> Vec<(String, Option<Price>)> {
    let mut m = crate::Manifests::default();
    let d = m.add_yaml("prices.yaml", MANIFESTS, &|_| None);
    assert!(d.is_empty(), "{d:?}");
    let c = crate::compile(&m, &crate::CompileOptions::default());
    assert!(c.diagnostics.is_empty(), "{:?}", c.diagnostics);
    c.config.routes[0]
        .backends
        .iter()
        .map(|b| (b.name.clone(), b.price))
        .collect()
}

#[test]
fn overrides_win_over_the_table_one_price_at_a_time() {
    let prices = compiled_prices();
    let get = |name: &str| {
        prices
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, p)| *p)
            .unwrap_or_else(|| panic!("{name} has no price: {prices:?}"))
    };
    let table = info(ProviderKind::Anthropic, "claude-sonnet-4-5").price;

    // The Provider's entry replaces the table's cache-write price and nothing else.
    let p = get("table-and-provider");
    assert_eq!(
        p,
        Price {
            cache_write: Some(4.0),
            ..table
        }
    );

    // The backend's prices replace both, kind by kind; the rest still comes from the Provider
    // and the table.
    let p = get("backend-wins");
    assert_eq!(p.input, 2.0);
    assert_eq!(p.output, table.output);
    assert_eq!(p.cached_input, table.cached_input);
    assert_eq!(p.cache_write, Some(4.0));
    assert_eq!(p.cache_write_1h, Some(5.0));
    assert_eq!(p.reasoning, Some(30.0));
    assert_eq!(
        p.long_context,
        Some(LongContextPrice {
            above_tokens: 100_000,
            input: 4.0,
            output: 20.0,
            ..LongContextPrice::default()
        })
    );
    let t = Tokens {
        prompt: 1_000,
        completion: 1_000,
        cached: 100,
        cache_write: 300,
        cache_write_1h: 100,
        reasoning: 400,
    };
    let want =
        (600.0 * 2.0 + 100.0 * table.cached_input + 200.0 * 4.0 + 100.0 * 5.0 + 600.0 * 15.0 + 400.0 * 30.0) / 1e6;
    assert!(close(p.cost_of(&t), want), "{} {want}", p.cost_of(&t));
    let long = Tokens {
        prompt: 100_001,
        completion: 10,
        reasoning: 4,
        ..Tokens::default()
    };
    // Reasoning has a price of its own, which the tier does not replace.
    assert!(close(
        p.cost_of(&long),
        (100_001.0 * 4.0 + 6.0 * 20.0 + 4.0 * 30.0) / 1e6
    ));

    // An overridden input keeps the table's cache discount, which is a price of its own...
    let p = get("negotiated");
    assert_eq!((p.input, p.output, p.cached_input), (1000.0, 1000.0, 1.25));
    // ...and a model the table does not know bills cache reads at its input price.
    let p = get("unlisted");
    assert_eq!(
        p,
        Price {
            input: 1000.0,
            output: 1000.0,
            cached_input: 1000.0,
            ..Price::default()
        }
    );

    // The table's long-context tier reaches the gateway.
    let p = get("tiered");
    assert_eq!(p.long_context.map(|t| t.above_tokens), Some(200_000));
    assert_eq!(p, info(ProviderKind::Gemini, "gemini-2.5-pro").price);

    assert_eq!(
        prices.iter().find(|(n, _)| n == "unpriced").map(|(_, p)| *p),
        Some(None)
    );
}

#[test]
fn out_of_range_prices_are_refused() {
    let route = |pricing: &str| {
        let yaml = format!(
            "apiVersion: switchyard.dev/v1alpha1\nkind: LLMRoute\nmetadata: {{name: r}}\nspec:\n  model: r\n  backends:\n    - providerRef: {{name: p}}\n      model: m\n      pricing: {pricing}\n"
        );
        crate::Manifests::default().add_yaml("r.yaml", &yaml, &|_| None)
    };
    for (field, bad) in [
        ("input", "-1"),
        ("cacheWrite", "-0.5"),
        ("reasoning", "1e7"),
        ("cachedInput", "2000000"),
    ] {
        let d = route(&format!("{{{field}: {bad}}}"));
        let text = format!("{d:?}");
        assert!(
            text.contains(&format!("pricing.{field} must be between 0 and 1000000")),
            "{field}: {bad}: {text}"
        );
    }
    let d = route("{longContext: {aboveTokens: 10, input: -1, output: 1}}");
    assert!(
        format!("{d:?}").contains("longContext.input must be between 0 and 1000000"),
        "{d:?}"
    );
    // Infinity and NaN are no numbers to CEL: refused too, with the evaluator's words.
    for bad in [
        "{cacheWrite1h: .inf}",
        "{input: .nan}",
        "{longContext: {aboveTokens: 1, input: .inf, output: 1}}",
    ] {
        let d = route(bad);
        assert!(
            d.iter()
                .any(|d| d.severity == crate::Severity::Error && d.field.contains("pricing")),
            "{bad}: {d:?}"
        );
    }
    assert!(route("{input: 3, cacheWrite: 3.75}").is_empty());
}

/// Models their maker's list dropped but a cloud still resells keep a price and an output limit
/// (the Anthropic adapter sends `max_tokens` from it).
#[test]
fn models_only_clouds_list_answer_by_their_bare_name() {
    let m = lookup("claude-sonnet-4-20250514").unwrap_or_else(|| panic!("no row"));
    assert_eq!(m.max_output, 64000);
    assert_eq!((m.price.input, m.price.output), (3.0, 15.0));
    assert_eq!(
        super::cloud_bare_name("us.anthropic.claude-sonnet-4-20250514-v1:0"),
        Some("claude-sonnet-4-20250514")
    );
    assert_eq!(super::cloud_bare_name("claude-opus-4@20250514"), Some("claude-opus-4"));
    assert_eq!(super::cloud_bare_name("gpt-4o"), None);
    // A listed name still wins over a cloud's alias.
    assert_eq!(
        lookup("claude-sonnet-4-5").map(|m| m.provider),
        Some(ProviderKind::Anthropic)
    );
}
