//! `router_settings`, `litellm_settings` and `general_settings`: route-wide resilience
//! (strategy, retries, timeouts, fallbacks, cooldowns), the cache, and the master key.

use switchyard_api::{
    CachePolicy, CircuitBreaker, Fallback, FallbackTrigger, RetryPolicy, RouteTimeouts, SecretKeyRef, Strategy,
    VirtualKey, VirtualKeySpec,
};

use super::yaml::{Entry, Node};
use super::{duration, env_ref, Context, Fields, ENV_SECRET};

/// What the settings sections say about every route and provider.
#[derive(Default)]
pub(crate) struct Resilience {
    pub strategy: Option<(Strategy, usize)>,
    pub num_retries: Option<u32>,
    pub retry_after: Option<String>,
    pub per_try: Option<String>,
    /// Router-wide `stream_timeout`: every Provider's stream idle timeout, unless its
    /// deployments set their own.
    pub stream_idle: Option<String>,
    pub cache: Option<CachePolicy>,
    pub drop_params: bool,
    pub circuit_breaker: Option<CircuitBreaker>,
    pub fallbacks: Vec<FallbackRule>,
    /// `model_group_alias`: (alias, model_name, line, path).
    pub aliases: Vec<(String, String, usize, String)>,
}

impl Resilience {
    pub(crate) fn retries(&self) -> Option<RetryPolicy> {
        if self.num_retries.is_none() && self.retry_after.is_none() {
            return None;
        }
        Some(RetryPolicy {
            // LiteLLM's default is also 2 (openai.DEFAULT_MAX_RETRIES).
            attempts: self.num_retries.unwrap_or(2),
            backoff: self.retry_after.clone(),
            max_backoff: None,
            on: Vec::new(),
        })
    }

    pub(crate) fn timeouts(&self) -> Option<RouteTimeouts> {
        self.per_try.as_ref().map(|t| RouteTimeouts {
            per_try: Some(t.clone()),
            ..RouteTimeouts::default()
        })
    }
}

/// Which errors a LiteLLM fallback list is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FallbackKind {
    Generic,
    ContextWindow,
    ContentPolicy,
}

/// One `{model_name: [targets]}` entry (`*` for every model).
pub(crate) struct FallbackRule {
    pub kind: FallbackKind,
    pub from: String,
    pub targets: Vec<(String, usize)>,
    pub line: usize,
    pub path: String,
}

pub(crate) fn litellm_settings(cx: &mut Context<'_>, e: &Entry, r: &mut Resilience) {
    let mut f = Fields::new("litellm_settings", &e.value);
    if let Some(e) = f.take("num_retries") {
        r.num_retries = retries(cx, e, &f.at("num_retries"));
    }
    if let Some(e) = f.take("request_timeout") {
        r.per_try = seconds(cx, e, &f.at("request_timeout"));
    }
    if let Some(e) = f.take("drop_params") {
        r.drop_params = e.value.as_bool().unwrap_or(false);
    }
    fallback_lists(cx, &mut f, r);
    let cache_params = f.take("cache_params");
    if let Some(e) = f.take("cache") {
        if e.value.as_bool() == Some(true) {
            cache(cx, e, cache_params, r);
        } else if let Some(p) = cache_params {
            cx.note(p.line, &f.at("cache_params"), "cache is off: cache_params unused");
        }
    } else if let Some(p) = cache_params {
        cx.note(p.line, &f.at("cache_params"), "cache is off: cache_params unused");
    }
    for key in ["callbacks", "success_callback", "failure_callback", "service_callback"] {
        if let Some(e) = f.take(key) {
            callbacks(cx, e, &f.at(key));
        }
    }
    if let Some(e) = f.take("telemetry") {
        // Switchyard sends no telemetry anywhere: `telemetry: false` is what it does already.
        if e.value.as_bool() != Some(false) {
            cx.note(e.line, &f.at("telemetry"), "Switchyard sends no usage telemetry");
        }
    }
    for e in f.rest() {
        let why = match e.key.as_str() {
            "set_verbose" | "json_logs" => {
                "logging: set SWITCHYARD_LOG (level) and SWITCHYARD_LOG_FORMAT=json in the gateway's environment"
            }
            "max_budget" | "budget_duration" => "a proxy-wide budget: give the VirtualKeys budgets (spec.budget)",
            "default_team_settings" => "teams: give VirtualKeys a `team` label",
            "turn_off_message_logging" | "redact_messages_in_exceptions" => {
                "Switchyard never logs prompts or completions unless a route sets logPrompts"
            }
            _ => "no Switchyard equivalent",
        };
        cx.not_carried(e.line, &f.at(&e.key), why);
    }
}

pub(crate) fn router_settings(cx: &mut Context<'_>, e: &Entry, r: &mut Resilience) {
    let mut f = Fields::new("router_settings", &e.value);
    if let Some(e) = f.take("routing_strategy") {
        let s = e.value.as_text().unwrap_or_default();
        let strategy = match s.as_str() {
            "simple-shuffle" => Some(Strategy::Shuffle),
            "least-busy" => Some(Strategy::LeastBusy),
            "latency-based-routing" => Some(Strategy::Latency),
            "usage-based-routing" | "usage-based-routing-v2" => Some(Strategy::Usage),
            "cost-based-routing" => Some(Strategy::Cheapest),
            _ => None,
        };
        match strategy {
            Some(st) => r.strategy = Some((st, e.line)),
            None => cx.not_carried(
                e.line,
                &f.at("routing_strategy"),
                format!("{s:?} has no Switchyard strategy: routes balance with `shuffle` (LiteLLM's simple-shuffle)"),
            ),
        }
    }
    if let Some(e) = f.take("num_retries") {
        r.num_retries = retries(cx, e, &f.at("num_retries"));
    }
    if let Some(e) = f.take("retry_after") {
        r.retry_after = seconds(cx, e, &f.at("retry_after"));
    }
    let allowed_fails = f.take("allowed_fails");
    let cooldown_time = f.take("cooldown_time");
    if allowed_fails.is_some() || cooldown_time.is_some() {
        let mut cb = CircuitBreaker::default();
        if let Some(e) = allowed_fails {
            match e.value.as_f64() {
                // LiteLLM cools a deployment down once it fails more than allowed_fails times.
                Some(n) if n >= 0.0 => cb.consecutive_failures = Some((n as u32).saturating_add(1)),
                _ => cx.not_carried(e.line, &f.at("allowed_fails"), "expected a number"),
            }
            cx.note(
                e.line,
                &f.at("allowed_fails"),
                "LiteLLM counts failures per minute; Switchyard's circuit breaker counts consecutive failures",
            );
        }
        if let Some(e) = cooldown_time {
            cb.cooldown = seconds(cx, e, &f.at("cooldown_time"));
        }
        r.circuit_breaker = Some(cb);
    }
    if let Some(e) = f.take("timeout") {
        r.per_try = seconds(cx, e, &f.at("timeout"));
    }
    if let Some(e) = f.take("stream_timeout") {
        r.stream_idle = seconds(cx, e, &f.at("stream_timeout"));
    }
    fallback_lists(cx, &mut f, r);
    if let Some(e) = f.take("model_group_alias") {
        for a in Fields::new("", &e.value).rest() {
            let path = format!("{}.{}", f.at("model_group_alias"), a.key);
            let target = match &a.value.value {
                super::yaml::Value::Map(_) => {
                    let mut m = Fields::new(&path, &a.value);
                    let t = m.take("model").and_then(|t| t.value.as_text());
                    if let Some(h) = m.take("hidden") {
                        if h.value.as_bool() == Some(true) {
                            cx.note(
                                h.line,
                                &m.at("hidden"),
                                "Switchyard lists aliases in /v1/models like any name",
                            );
                        }
                    }
                    for rest in m.rest() {
                        cx.not_carried(rest.line, &m.at(&rest.key), "no Switchyard equivalent");
                    }
                    t
                }
                _ => a.value.as_text(),
            };
            match target {
                Some(t) => r.aliases.push((a.key.clone(), t, a.line, path)),
                None => cx.not_carried(a.line, &path, "expected a model_name"),
            }
        }
    }
    if let Some(e) = f.take("enable_pre_call_checks") {
        if e.value.as_bool() == Some(true) {
            cx.note(
                e.line,
                &f.at("enable_pre_call_checks"),
                "Switchyard always skips backends whose known context window the prompt exceeds",
            );
        }
    }
    for e in f.rest() {
        let why = match e.key.as_str() {
            "redis_host" | "redis_port" | "redis_password" | "redis_url" | "cache_responses" => {
                "shared state: name Redis in the LLMGateway (spec.redis) or start the gateway with --redis"
            }
            "retry_policy" => "per-error retry counts: Switchyard has one count per route (retries.attempts) and a list of retried errors (retries.on)",
            "allowed_fails_policy" => "per-error cooldown thresholds: Switchyard's circuit breaker counts every failure alike",
            "enable_tag_filtering" | "tag_filtering_match_any" => "tag-based routing: use LLMRoute rules",
            "routing_strategy_args" => "strategy tuning: Switchyard's strategies take no arguments",
            "max_fallbacks" => "Switchyard follows fallbacks at most 3 levels deep",
            "provider_budget_config" => "provider budgets: give VirtualKeys budgets, or Providers a quota",
            _ => "no Switchyard equivalent",
        };
        cx.not_carried(e.line, &f.at(&e.key), why);
    }
}

fn retries(cx: &mut Context<'_>, e: &Entry, path: &str) -> Option<u32> {
    match e.value.as_f64() {
        Some(n) if n >= 0.0 => {
            let n = n as u32;
            if n > 10 {
                cx.not_carried(
                    e.line,
                    path,
                    format!("{n} retries: Switchyard allows at most 10; 10 are written"),
                );
            }
            Some(n.min(10))
        }
        _ => {
            cx.not_carried(e.line, path, "expected a number");
            None
        }
    }
}

fn seconds(cx: &mut Context<'_>, e: &Entry, path: &str) -> Option<String> {
    let d = e.value.as_f64().and_then(duration);
    if d.is_none() {
        cx.not_carried(e.line, path, "expected seconds");
    }
    d
}

fn fallback_lists(cx: &mut Context<'_>, f: &mut Fields<'_>, r: &mut Resilience) {
    for (key, kind) in [
        ("fallbacks", FallbackKind::Generic),
        ("context_window_fallbacks", FallbackKind::ContextWindow),
        ("content_policy_fallbacks", FallbackKind::ContentPolicy),
    ] {
        if let Some(e) = f.take(key) {
            let path = f.at(key);
            // Settings given in both sections: router_settings (read last) wins, as in LiteLLM.
            r.fallbacks.retain(|rule| rule.kind != kind);
            rules(cx, &e.value, &path, kind, r);
        }
    }
    if let Some(e) = f.take("default_fallbacks") {
        let targets = targets(cx, &e.value, &f.at("default_fallbacks"));
        r.fallbacks
            .retain(|rule| !(rule.kind == FallbackKind::Generic && rule.from == "*"));
        r.fallbacks.push(FallbackRule {
            kind: FallbackKind::Generic,
            from: "*".into(),
            targets,
            line: e.line,
            path: f.at("default_fallbacks"),
        });
    }
}

/// `[{model: [targets]}, ...]` (or one mapping of them).
fn rules(cx: &mut Context<'_>, node: &Node, path: &str, kind: FallbackKind, r: &mut Resilience) {
    let items: Vec<&Node> = match (node.as_seq(), node.as_map()) {
        (Some(seq), _) => seq.iter().collect(),
        (None, Some(_)) => vec![node],
        _ => {
            if !node.is_null() {
                cx.not_carried(node.line, path, "expected a list of {model_name: [fallbacks]}");
            }
            return;
        }
    };
    for (i, item) in items.iter().enumerate() {
        let item_path = format!("{path}[{i}]");
        let Some(map) = item.as_map() else {
            cx.not_carried(item.line, &item_path, "expected {model_name: [fallbacks]}");
            continue;
        };
        for e in map {
            let p = format!("{item_path}.{}", e.key);
            r.fallbacks.push(FallbackRule {
                kind,
                from: e.key.clone(),
                targets: targets(cx, &e.value, &p),
                line: e.line,
                path: p,
            });
        }
    }
}

fn targets(cx: &mut Context<'_>, node: &Node, path: &str) -> Vec<(String, usize)> {
    match node.as_seq() {
        Some(seq) => seq
            .iter()
            .filter_map(|t| {
                let s = t.as_text();
                if s.is_none() {
                    cx.not_carried(t.line, path, "expected a model_name");
                }
                s.map(|s| (s, t.line))
            })
            .collect(),
        None => node.as_text().map(|s| vec![(s, node.line)]).unwrap_or_default(),
    }
}

fn cache(cx: &mut Context<'_>, e: &Entry, params: Option<&Entry>, r: &mut Resilience) {
    let mut policy = CachePolicy {
        enabled: true,
        ttl: None,
        max_body_bytes: None,
        // Every route imported is of one namespace: its callers are that namespace's keys.
        shared: false,
    };
    let Some(params) = params else {
        cx.note(
            e.line,
            "litellm_settings.cache",
            "LiteLLM's default cache is in memory with its own TTL; Switchyard's exact-match cache keeps responses 5m unless cache_params.ttl says otherwise",
        );
        r.cache = Some(policy);
        return;
    };
    let mut f = Fields::new("litellm_settings.cache_params", &params.value);
    if let Some(t) = f.take("type") {
        let ty = t.value.as_text().unwrap_or_default();
        match ty.as_str() {
            "local" | "redis" => {}
            _ => {
                cx.not_carried(
                    t.line,
                    &f.at("type"),
                    format!("cache type {ty:?}: Switchyard's cache is exact-match, in memory or in the gateway's Redis; the cache is left off"),
                );
                for rest in f.rest() {
                    cx.not_carried(rest.line, &f.at(&rest.key), "cache left off");
                }
                return;
            }
        }
    }
    if let Some(t) = f.take("ttl") {
        policy.ttl = seconds(cx, t, &f.at("ttl"));
    }
    if let Some(m) = f.take("mode") {
        if m.value.as_text().as_deref() == Some("default_off") {
            cx.not_carried(
                m.line,
                &f.at("mode"),
                "opt-in caching per request: a Switchyard route caches every request or none; the cache is left off",
            );
            return;
        }
    }
    if let Some(t) = f.take("supported_call_types") {
        cx.note(
            t.line,
            &f.at("supported_call_types"),
            "Switchyard caches every request of a route whose cache is on",
        );
    }
    for rest in f.rest() {
        let why = match rest.key.as_str() {
            "host" | "port" | "password" | "url" | "namespace" | "redis_startup_nodes" | "service_name" => {
                "the cache's Redis is the gateway's: name it in the LLMGateway (spec.redis) or start the gateway with --redis"
            }
            _ => "no Switchyard equivalent",
        };
        cx.not_carried(rest.line, &f.at(&rest.key), why);
    }
    r.cache = Some(policy);
}

fn callbacks(cx: &mut Context<'_>, e: &Entry, path: &str) {
    let names: Vec<(String, usize)> = match e.value.as_seq() {
        Some(seq) => seq.iter().filter_map(|n| n.as_text().map(|s| (s, n.line))).collect(),
        None => e.value.as_text().map(|s| vec![(s, e.line)]).unwrap_or_default(),
    };
    for (name, line) in names {
        match name.as_str() {
            "prometheus" => cx.note(line, path, "prometheus: Switchyard always serves /metrics, on the metrics port (--metrics-addr)"),
            "otel" => cx.not_carried(line, path, "otel: traces are a gateway flag, not a manifest: start it with --otlp-endpoint (or OTEL_EXPORTER_OTLP_ENDPOINT)"),
            other => cx.not_carried(line, path, format!("callback {other:?} has no Switchyard equivalent (metrics, access logs and OTLP traces are built in)")),
        }
    }
}

/// Resolves the fallback lists and aliases onto the routes: each route gets the targets of its
/// own entry (else of `*`), with the triggers LiteLLM uses them for.
pub(crate) fn apply_fallbacks(cx: &mut Context<'_>, r: &Resilience) {
    for (alias, target, line, path) in &r.aliases {
        let clash = cx.routes.iter().any(|g| g.model_name == *alias || g.model == *alias);
        match cx.routes.iter_mut().find(|g| g.model_name == *target) {
            Some(_) if clash => {
                cx.not_carried(*line, path, format!("{alias:?} is already a model_name of this config"))
            }
            Some(_) if alias.contains('/') || alias.chars().any(char::is_whitespace) => {
                cx.not_carried(*line, path, "an alias cannot hold `/` or whitespace in Switchyard")
            }
            Some(g) if g.aliases.len() < 16 => g.aliases.push(alias.clone()),
            Some(_) => cx.not_carried(*line, path, "a route has at most 16 aliases"),
            None => cx.not_carried(*line, path, format!("{target:?} is not a model_name of this config")),
        }
    }
    let cw_configured = r.fallbacks.iter().any(|f| f.kind == FallbackKind::ContextWindow);
    let cp_configured = r.fallbacks.iter().any(|f| f.kind == FallbackKind::ContentPolicy);
    // Generic fallbacks serve every error LiteLLM has no dedicated list for.
    let mut generic_on = vec![
        FallbackTrigger::RateLimit,
        FallbackTrigger::ServerError,
        FallbackTrigger::Timeout,
    ];
    if !cw_configured {
        generic_on.push(FallbackTrigger::ContextWindow);
    }
    if !cp_configured {
        generic_on.push(FallbackTrigger::ContentPolicy);
    }
    let tiers = super::model_list::split_order_tiers(cx);
    let tier_routes: Vec<bool> = cx.routes.iter().map(|g| g.tier_of.is_some()).collect();
    let names: Vec<(String, String)> = cx
        .routes
        .iter()
        .map(|g| (g.model_name.clone(), g.model.clone()))
        .collect();
    // Every rule must name a model of this config.
    for rule in &r.fallbacks {
        if rule.from != "*" && !names.iter().any(|(n, _)| *n == rule.from) {
            cx.not_carried(
                rule.line,
                &rule.path,
                format!("{:?} is not a model_name of this config", rule.from),
            );
        }
        for (t, line) in &rule.targets {
            if !names.iter().any(|(n, _)| n == t) {
                cx.not_carried(
                    *line,
                    &rule.path,
                    format!("fallback {t:?} is not a model_name of this config"),
                );
            }
        }
    }
    // Edges in the order LiteLLM would try them, per route: its order tiers first (on every
    // error but context-window and content-policy ones), then the configured fallbacks.
    let mut edges: Vec<(usize, usize, FallbackTrigger, usize, String)> = Vec::new();
    for (gi, (model_name, _)) in names.iter().enumerate() {
        if tier_routes[gi] {
            continue;
        }
        if let Some((_, ts)) = tiers.iter().find(|(g, _)| *g == gi) {
            for t in ts {
                for trig in [
                    FallbackTrigger::RateLimit,
                    FallbackTrigger::ServerError,
                    FallbackTrigger::Timeout,
                ] {
                    edges.push((gi, *t, trig, cx.routes[gi].line, model_name.clone()));
                }
            }
        }
        for kind in [
            FallbackKind::Generic,
            FallbackKind::ContextWindow,
            FallbackKind::ContentPolicy,
        ] {
            let own: Vec<&FallbackRule> = r
                .fallbacks
                .iter()
                .filter(|f| f.kind == kind && f.from == *model_name)
                .collect();
            let rules = if own.is_empty() {
                r.fallbacks.iter().filter(|f| f.kind == kind && f.from == "*").collect()
            } else {
                own
            };
            let triggers: Vec<FallbackTrigger> = match kind {
                FallbackKind::Generic => generic_on.clone(),
                FallbackKind::ContextWindow => vec![FallbackTrigger::ContextWindow],
                FallbackKind::ContentPolicy => vec![FallbackTrigger::ContentPolicy],
            };
            for rule in rules {
                for (t, line) in &rule.targets {
                    let Some(ti) = names.iter().position(|(n, _)| n == t) else {
                        continue;
                    };
                    if ti == gi {
                        continue;
                    }
                    for trig in &triggers {
                        edges.push((gi, ti, *trig, *line, rule.path.clone()));
                    }
                }
            }
        }
    }
    // Add edges one by one, refusing those that would make a loop or a chain deeper than 3
    // (Switchyard refuses such routes; LiteLLM stops at max_fallbacks).
    let mut graph: Vec<Vec<Fallback>> = vec![Vec::new(); names.len()];
    let mut refused: Vec<(usize, usize)> = Vec::new();
    for (from, to, trig, line, path) in edges {
        if refused.contains(&(from, to)) {
            continue;
        }
        let to_model = names[to].1.clone();
        if let Some(f) = graph[from].iter_mut().find(|f| f.route == to_model) {
            if !f.on.contains(&trig) {
                f.on.push(trig);
            }
            continue;
        }
        if graph[from].len() >= 3 {
            refused.push((from, to));
            cx.not_carried(
                line,
                &path,
                format!(
                    "{:?}: a route has at most 3 fallbacks; {:?} is left out",
                    names[from].0, names[to].0
                ),
            );
            continue;
        }
        graph[from].push(Fallback {
            route: to_model,
            on: vec![trig],
        });
        if !acyclic_within(&graph, &names, 3) {
            graph[from].pop();
            refused.push((from, to));
            cx.not_carried(
                line,
                &path,
                format!(
                    "{:?} -> {:?} would make a fallback loop or a chain deeper than 3 levels, which Switchyard refuses; left out",
                    names[from].0, names[to].0
                ),
            );
        }
    }
    for (g, mut fallbacks) in cx.routes.iter_mut().zip(graph) {
        for f in &mut fallbacks {
            f.on.sort();
            // Every trigger: write none (the default).
            if f.on.len() == 5 {
                f.on.clear();
            }
        }
        g.fallbacks = fallbacks;
    }
}

/// No loops, and no chain longer than `max` fallbacks.
fn acyclic_within(graph: &[Vec<Fallback>], names: &[(String, String)], max: usize) -> bool {
    fn depth(i: usize, graph: &[Vec<Fallback>], names: &[(String, String)], path: &mut Vec<usize>) -> Option<usize> {
        if path.contains(&i) {
            return None;
        }
        path.push(i);
        let mut deepest = 0;
        for f in &graph[i] {
            if let Some(j) = names.iter().position(|(_, m)| *m == f.route) {
                deepest = deepest.max(1 + depth(j, graph, names, path)?);
            }
        }
        path.pop();
        Some(deepest)
    }
    (0..graph.len()).all(|i| depth(i, graph, names, &mut Vec::new()).is_some_and(|d| d <= max))
}

pub(crate) fn general_settings(cx: &mut Context<'_>, e: &Entry) {
    let mut f = Fields::new("general_settings", &e.value);
    match f.take("master_key") {
        Some(k) => master_key(cx, k),
        None => no_master_key(cx, e.line),
    }
    for e in f.rest() {
        let why = match e.key.as_str() {
            "database_url" | "store_model_in_db" | "disable_prisma_schema_update" => {
                "Switchyard keeps no database: keys and budgets are VirtualKey resources, spend is counted in the gateway (and Redis)"
            }
            "alerting" | "alerting_threshold" | "alert_types" => "alerts: VirtualKey budget webhooks, and Prometheus alerts on /metrics",
            "background_health_checks" | "health_check_interval" => {
                "Switchyard runs no background health checks: its circuit breaker takes failing backends out"
            }
            "otel" => "traces are a gateway flag, not a manifest: start it with --otlp-endpoint",
            "custom_auth" => "Switchyard authenticates VirtualKeys only",
            "pass_through_endpoints" => "pass-through endpoints are not served",
            "coordination_redis" | "use_redis_transaction_buffer" => {
                "shared state: name Redis in the LLMGateway (spec.redis) or start the gateway with --redis"
            }
            _ => "no Switchyard equivalent",
        };
        cx.not_carried(e.line, &f.at(&e.key), why);
    }
}

/// `general_settings.master_key` -> VirtualKey `litellm-master-key` reading the key from the
/// environment: `os.environ/X` -> `${X}`; an inline key is not copied (`${LITELLM_MASTER_KEY}`).
fn master_key(cx: &mut Context<'_>, e: &Entry) {
    let path = "general_settings.master_key";
    let Some(text) = e.value.as_text() else {
        cx.not_carried(e.line, path, "expected a key");
        return;
    };
    let var = match env_ref(&text) {
        Some(v) => v.to_owned(),
        None => {
            cx.not_carried(
                e.line,
                path,
                "an inline master key is never copied into manifests: the VirtualKey's Secret reads ${LITELLM_MASTER_KEY}; set it to the key",
            );
            "LITELLM_MASTER_KEY".to_owned()
        }
    };
    let key = cx.secret_env(ENV_SECRET, &var, &var);
    cx.note(
        e.line,
        path,
        "the master key becomes VirtualKey litellm-master-key for every route; LiteLLM's admin API (key generation, /key/*) has no equivalent: other keys are VirtualKey resources",
    );
    let vk = VirtualKey {
        metadata: cx.meta("litellm-master-key"),
        spec: VirtualKeySpec {
            secret_ref: Some(SecretKeyRef {
                name: ENV_SECRET.into(),
                key: Some(key),
            }),
            allowed_routes: Vec::new(),
            allowed_passthrough: Vec::new(),
            limits: None,
            budget: None,
            expires_at: None,
            blocked: false,
            labels: Default::default(),
            rotation: None,
            parent_refs: Vec::new(),
        },
        status: None,
    };
    cx.keys.push(vk);
}

pub(crate) fn no_master_key(cx: &mut Context<'_>, line: usize) {
    cx.not_carried(
        line,
        "general_settings.master_key",
        "no master key: LiteLLM served without authentication, Switchyard serves VirtualKeys only; no key is written: add a VirtualKey",
    );
}
