//! `model_list`: each deployment becomes a backend of the LLMRoute named by its `model_name`,
//! served by the Provider of its account (one Provider per distinct account: type, base URL,
//! API version, credentials, region, project, headers and timeouts).

use std::collections::BTreeMap;

use switchyard_api::{
    Backend, Credentials, LLMRoute, LLMRouteSpec, Limits, LocalRef, Pricing, Provider, ProviderSpec, ProviderTimeouts,
    ProviderType, RouteMode, SecretKeyRef, Strategy, VertexSettings,
};

use switchyard_config::wildcard_prefix;

use super::providers::{self, Mapping};
use super::settings::Resilience;
use super::yaml::{Entry, Node};
use super::{duration, env_name, env_ref, k8s_name, Context, Fields, ENV_SECRET};

/// One `model_name`: the future LLMRoute.
pub(crate) struct Group {
    /// The name LiteLLM clients send.
    pub model_name: String,
    /// The route's `model` (the same, unless it had to be renamed).
    pub model: String,
    pub line: usize,
    pub backends: Vec<Draft>,
    pub mode: Option<RouteMode>,
    pub aliases: Vec<String>,
    pub fallbacks: Vec<switchyard_api::Fallback>,
    /// For a route made of one `order` tier of another model_name: that group's index.
    pub tier_of: Option<usize>,
}

/// A backend before the group's weights are settled.
pub(crate) struct Draft {
    pub name: String,
    pub provider: String,
    pub model: String,
    pub weight: Option<f64>,
    pub rpm: Option<f64>,
    pub tpm: Option<f64>,
    pub order: Option<u32>,
    pub limits: Limits,
    pub context_window: Option<u32>,
    pub max_output_tokens: Option<u32>,
    pub pricing: Pricing,
}

pub(crate) fn model_list(cx: &mut Context<'_>, e: &Entry) {
    let Some(items) = e.value.as_seq() else {
        cx.not_carried(e.line, "model_list", "not a list: no route is written");
        return;
    };
    for (i, item) in items.iter().enumerate() {
        deployment(cx, &format!("model_list[{i}]"), item);
    }
}

fn deployment(cx: &mut Context<'_>, path: &str, item: &Node) {
    let mut f = Fields::new(path, item);
    let name_e = f.take("model_name");
    let params_e = f.take("litellm_params");
    let info_e = f.take("model_info");
    let top_rpm = f.take("rpm");
    let top_tpm = f.take("tpm");
    for e in f.rest() {
        cx.not_carried(e.line, &f.at(&e.key), "no Switchyard equivalent");
    }
    let Some(model_name) = name_e.and_then(|e| e.value.as_text()) else {
        cx.not_carried(item.line, path, "a deployment without model_name: not carried");
        return;
    };
    let Some(params_e) = params_e else {
        cx.not_carried(
            item.line,
            path,
            format!("{model_name:?} has no litellm_params (no upstream model): not carried"),
        );
        return;
    };
    let params_path = format!("{path}.litellm_params");
    let mut p = Fields::new(&params_path, &params_e.value);
    let Some(model_e) = p.take("model") else {
        cx.not_carried(
            params_e.line,
            &params_path,
            format!("{model_name:?} has no litellm_params.model: not carried"),
        );
        return;
    };
    let model = model_e.value.as_text().unwrap_or_default();
    let skip = |cx: &mut Context<'_>, why: String| cx.not_carried(model_e.line, &format!("{params_path}.model"), why);
    // Wildcards: `model_name: "openai/*"` with `model: "openai/*"` serves every model the client
    // names under the prefix, as a Switchyard wildcard route does (its backend's `*` gets the
    // rest of the client's name). A `*` only in the upstream model has no route to fill it.
    let name_wildcard = wildcard_prefix(&model_name).is_some();
    if (model_name.contains('*') && !name_wildcard)
        || (model.contains('*') && !(name_wildcard && wildcard_prefix(&model).is_some()))
    {
        skip(
            cx,
            format!("wildcard deployment {model_name:?} -> {model:?}: a Switchyard wildcard route is a model name ending in its only `*` (`openai/*`), its backends' models too when they take the client's name"),
        );
        return;
    }
    let (mapping, upstream) = match providers::split_model(&model) {
        Ok(m) => m,
        Err(prefix) => {
            skip(
                cx,
                format!("{model:?}: LiteLLM provider {prefix:?} has no Switchyard provider type; deployment of {model_name:?} not carried"),
            );
            return;
        }
    };

    // model_info first: its mode decides whether the deployment can be served at all.
    let mut info = Info::default();
    if let Some(ie) = info_e {
        if !model_info(cx, &format!("{path}.model_info"), &ie.value, &mut info) {
            return;
        }
    }
    let provider = account(cx, &mut p, mapping, &params_path, model_e.line);

    let mut d = Draft {
        name: info.id.clone().unwrap_or_else(|| provider.clone()),
        provider,
        model: upstream.clone(),
        weight: None,
        rpm: None,
        tpm: None,
        order: None,
        limits: Limits::default(),
        context_window: info.context_window,
        max_output_tokens: info.max_output_tokens,
        pricing: info.pricing,
    };
    for (key, e) in [("rpm", top_rpm), ("tpm", top_tpm)] {
        if let Some(e) = e {
            number_into(
                cx,
                e,
                &format!("{path}.{key}"),
                if key == "rpm" { &mut d.rpm } else { &mut d.tpm },
            );
        }
    }
    backend_params(cx, &mut p, &mut d);
    for e in p.rest() {
        let why = match e.key.as_str() {
            "max_retries" => "per-deployment SDK retries: Switchyard retries per route (router_settings.num_retries)",
            "temperature"
            | "max_tokens"
            | "top_p"
            | "stop"
            | "seed"
            | "frequency_penalty"
            | "presence_penalty"
            | "max_completion_tokens"
            | "reasoning_effort"
            | "response_format" => {
                "default request parameters: Switchyard forwards the client's parameters and adds none"
            }
            "tags" => "tag-based routing: use LLMRoute rules (match on key labels, headers or metadata)",
            "mock_response" => "mock responses: use a Provider of type mock",
            "litellm_credential_name" => "reusable credentials: the Provider names its own Secret",
            "region_name" => "region routing for end users: use LLMRoute rules with a backendSelector",
            "input_cost_per_second" | "output_cost_per_second" => "per-second prices: Switchyard prices tokens",
            _ => "no Switchyard equivalent",
        };
        cx.not_carried(e.line, &p.at(&e.key), why);
    }

    let mode = info.mode.or_else(|| {
        if mapping.completions {
            Some(RouteMode::Completions)
        } else if upstream.contains("embed") {
            Some(RouteMode::Embeddings)
        } else {
            None
        }
    });
    let group_model = route_model(cx, &model_name, name_e.map_or(item.line, |e| e.line), path);
    let line = name_e.map_or(item.line, |e| e.line);
    let idx = match cx.routes.iter().position(|g| g.model_name == model_name) {
        Some(i) => i,
        None => {
            cx.routes.push(Group {
                model_name: model_name.clone(),
                model: group_model,
                line,
                backends: Vec::new(),
                mode: None,
                aliases: Vec::new(),
                fallbacks: Vec::new(),
                tier_of: None,
            });
            cx.routes.len() - 1
        }
    };
    let group_mode = cx.routes[idx].mode;
    match (group_mode, mode) {
        (Some(a), Some(b)) if a != b => {
            cx.not_carried(
                line,
                path,
                format!(
                    "{model_name:?} mixes modes ({a:?} and {b:?}); a route serves one: this deployment is not carried"
                ),
            );
            return;
        }
        (None, Some(b)) => cx.routes[idx].mode = Some(b),
        _ => {}
    }
    cx.routes[idx].backends.push(d);
}

/// A route's `model` must have no `/` or whitespace (a `/` names another namespace's route).
fn route_model(cx: &mut Context<'_>, model_name: &str, line: usize, path: &str) -> String {
    let plain = !model_name.contains('/') || wildcard_prefix(model_name).is_some();
    if !model_name.is_empty() && plain && !model_name.chars().any(char::is_whitespace) {
        return model_name.to_owned();
    }
    let renamed: String = model_name
        .chars()
        .map(|c| if c == '/' || c.is_whitespace() { '-' } else { c })
        .collect();
    let renamed = if renamed.is_empty() {
        "model".to_owned()
    } else {
        renamed
    };
    // Only once per model name.
    if !cx.routes.iter().any(|g| g.model_name == model_name) {
        cx.not_carried(
            line,
            &format!("{path}.model_name"),
            format!("{model_name:?} cannot be a Switchyard model name (`/` addresses another namespace's route): the route is named {renamed:?}, so clients must send that"),
        );
    }
    renamed
}

#[derive(Default)]
struct Info {
    id: Option<String>,
    mode: Option<RouteMode>,
    context_window: Option<u32>,
    max_output_tokens: Option<u32>,
    pricing: Pricing,
}

/// Reads `model_info`; `false` when its mode is one Switchyard does not serve.
fn model_info(cx: &mut Context<'_>, path: &str, node: &Node, info: &mut Info) -> bool {
    let mut f = Fields::new(path, node);
    if let Some(e) = f.take("mode") {
        let mode = e.value.as_text().unwrap_or_default();
        info.mode = match mode.as_str() {
            "chat" | "responses" => Some(RouteMode::Chat),
            "embedding" => Some(RouteMode::Embeddings),
            "completion" => Some(RouteMode::Completions),
            "moderation" => Some(RouteMode::Moderation),
            "rerank" => Some(RouteMode::Rerank),
            "image_generation" => Some(RouteMode::ImageGeneration),
            "audio_transcription" => Some(RouteMode::AudioTranscription),
            "audio_speech" => Some(RouteMode::AudioSpeech),
            _ => {
                let why = match mode.as_str() {
                    "batch" => "batches are not a route: clients call /v1/files and /v1/batches on a chat route's backend".to_owned(),
                    "realtime" => "the Realtime API (WebSocket) is not served".to_owned(),
                    _ => format!(
                        "mode {mode:?}: Switchyard routes serve chat, embedding, completion, moderation, rerank, image_generation, audio_transcription and audio_speech"
                    ),
                };
                cx.not_carried(e.line, &f.at("mode"), format!("{why}; deployment not carried"));
                return false;
            }
        };
    }
    if let Some(e) = f.take("id") {
        info.id = e.value.as_text().map(|s| k8s_name(&s));
    }
    let max_input = f.take("max_input_tokens");
    let max_tokens = f.take("max_tokens");
    if let Some(e) = max_input.or(max_tokens) {
        info.context_window = count(cx, e, path);
    }
    if let Some(e) = f.take("max_output_tokens") {
        info.max_output_tokens = count(cx, e, path);
    }
    price(cx, &mut f, &mut info.pricing);
    for e in f.rest() {
        let why = match e.key.as_str() {
            "base_model" => {
                "LiteLLM's cost-map alias: Switchyard prices the upstream model; give prices in model_info to override"
            }
            k if k.starts_with("supports_") => "capability flags: Switchyard does not filter backends by capability",
            _ => "no Switchyard equivalent",
        };
        cx.not_carried(e.line, &f.at(&e.key), why);
    }
    true
}

/// Where one LiteLLM price lands in a [`Pricing`].
type PriceSlot = fn(&mut Pricing) -> &mut Option<f64>;

/// Per-token prices (USD per token in LiteLLM, per million in Switchyard).
fn price(cx: &mut Context<'_>, f: &mut Fields<'_>, pricing: &mut Pricing) {
    let fields: [(&str, PriceSlot); 4] = [
        ("input_cost_per_token", |p| &mut p.input),
        ("output_cost_per_token", |p| &mut p.output),
        ("cache_read_input_token_cost", |p| &mut p.cached_input),
        ("cache_creation_input_token_cost", |p| &mut p.cache_write),
    ];
    for (key, slot) in fields {
        if let Some(e) = f.take(key) {
            match e.value.as_f64() {
                Some(v) if (0.0..=1.0).contains(&v) => *slot(pricing) = Some((v * 1e6 * 1e6).round() / 1e6),
                _ => cx.not_carried(e.line, &f.at(key), "expected a price in USD per token"),
            }
        }
    }
}

fn count(cx: &mut Context<'_>, e: &Entry, path: &str) -> Option<u32> {
    match e.value.as_f64() {
        Some(v) if v >= 1.0 && v <= f64::from(u32::MAX) => Some(v as u32),
        _ => {
            cx.not_carried(e.line, &format!("{path}.{}", e.key), "expected a token count");
            None
        }
    }
}

fn number_into(cx: &mut Context<'_>, e: &Entry, path: &str, slot: &mut Option<f64>) {
    match e.value.as_f64() {
        Some(v) if v >= 0.0 => *slot = Some(v),
        _ => cx.not_carried(e.line, path, "expected a number"),
    }
}

/// `rpm`, `tpm`, `weight`, `order`, `max_parallel_requests` and prices of one deployment.
fn backend_params(cx: &mut Context<'_>, p: &mut Fields<'_>, d: &mut Draft) {
    if let Some(e) = p.take("rpm") {
        number_into(cx, e, &p.at("rpm"), &mut d.rpm);
    }
    if let Some(e) = p.take("tpm") {
        number_into(cx, e, &p.at("tpm"), &mut d.tpm);
    }
    if let Some(e) = p.take("weight") {
        number_into(cx, e, &p.at("weight"), &mut d.weight);
    }
    if let Some(e) = p.take("order") {
        match e.value.as_f64() {
            Some(v) if v >= 0.0 => {
                let order = v as u32;
                if order > 100 {
                    cx.not_carried(
                        e.line,
                        &p.at("order"),
                        "order above 100: Switchyard priority tiers go to 100; 100 is used",
                    );
                }
                d.order = Some(order.min(100));
            }
            _ => cx.not_carried(e.line, &p.at("order"), "expected a number"),
        }
    }
    if let Some(e) = p.take("max_parallel_requests") {
        d.limits.max_parallel = count(cx, e, &p.path);
    }
    d.limits.rpm = d.rpm.map(|v| v.round().min(f64::from(u32::MAX)) as u32);
    d.limits.tpm = d.tpm.map(|v| v.round() as u64);
    price(cx, p, &mut d.pricing);
}

/// The Provider for one deployment's account (created on first use); returns its name.
fn account(cx: &mut Context<'_>, p: &mut Fields<'_>, m: &Mapping, path: &str, model_line: usize) -> String {
    let mut spec = ProviderSpec {
        provider_type: m.provider_type,
        base_url: None,
        credentials: None,
        region: None,
        labels: BTreeMap::new(),
        api_version: None,
        vertex: None,
        headers: BTreeMap::new(),
        quota: None,
        pricing: Vec::new(),
        timeouts: None,
        circuit_breaker: None,
        mock: None,
        http_version: Default::default(),
    };
    let base_e = p.take("api_base");
    let base_e2 = p.take("base_url");
    let endpoint_e = p.take("aws_bedrock_runtime_endpoint");
    if let Some(e) = base_e.or(base_e2).or(endpoint_e) {
        spec.base_url = Some(match cx.literal(e, &p.at(&e.key)) {
            Ok(v) => providers::base_url(m, &v),
            Err(var) => placeholder_url(&var),
        });
    } else if let Some(b) = m.default_base {
        spec.base_url = Some(b.to_owned());
    } else if matches!(
        m.provider_type,
        ProviderType::AzureOpenai | ProviderType::Vllm | ProviderType::OpenaiCompatible
    ) {
        // LiteLLM reads `<PREFIX>_API_BASE` when no api_base is given (AZURE_API_BASE...).
        let var = format!("{}_API_BASE", env_name(m.prefix));
        spec.base_url = Some(match cx.env_default(&var) {
            Some(v) => {
                cx.note(
                    model_line,
                    path,
                    format!("no api_base: {var} read while importing ({v})"),
                );
                providers::base_url(m, &v)
            }
            None => {
                cx.not_carried(
                    model_line,
                    path,
                    format!("no api_base, and {var} was not set while importing: a placeholder baseUrl is written"),
                );
                placeholder_url(&var)
            }
        });
    }
    if let Some(e) = p.take("api_version") {
        if let Ok(v) = cx.literal(e, &p.at("api_version")) {
            spec.api_version = Some(v);
        }
    } else if m.provider_type == ProviderType::AzureOpenai {
        if let Some(v) = cx.env_default("AZURE_API_VERSION") {
            cx.note(
                model_line,
                path,
                format!("no api_version: AZURE_API_VERSION read while importing ({v})"),
            );
            spec.api_version = Some(v);
        }
    }
    if let Some(e) = p.take("organization") {
        if let Ok(v) = cx.literal(e, &p.at("organization")) {
            spec.headers.insert("OpenAI-Organization".into(), v);
        }
    }
    for key in ["extra_headers", "headers"] {
        if let Some(e) = p.take(key) {
            for h in Fields::new("", &e.value).rest() {
                let hp = format!("{}.{}", p.at(key), h.key);
                match h.value.as_text() {
                    Some(v) if env_ref(&v).is_none() => {
                        spec.headers.insert(h.key.clone(), v);
                    }
                    _ => cx.not_carried(
                        h.line,
                        &hp,
                        "Provider headers are literals and not secret: put credentials in the Provider's Secret",
                    ),
                }
            }
        }
    }
    let mut timeouts = ProviderTimeouts::default();
    if let Some(e) = p.take("timeout") {
        timeouts.request = seconds(cx, e, &p.at("timeout"));
    }
    if let Some(e) = p.take("stream_timeout") {
        timeouts.stream_idle = seconds(cx, e, &p.at("stream_timeout"));
    }
    if timeouts != ProviderTimeouts::default() {
        spec.timeouts = Some(timeouts);
    }
    match m.provider_type {
        ProviderType::Bedrock => bedrock(cx, p, &mut spec, path, model_line),
        ProviderType::Vertex => vertex(cx, p, &mut spec, path, model_line),
        _ => api_key(cx, p, m, &mut spec, path, model_line),
    }
    let key = serde_json::to_string(&spec).unwrap_or_default();
    if let Some((name, _)) = cx.providers.iter().find(|(k, _)| *k == key) {
        return provider_name_of(cx, name);
    }
    let base = spec.provider_type.as_str().to_owned();
    let mut name = base.clone();
    let mut n = 1;
    while cx
        .providers
        .iter()
        .any(|(_, p)| p.metadata.name.as_deref() == Some(name.as_str()))
    {
        n += 1;
        name = format!("{base}-{n}");
    }
    let provider = Provider {
        metadata: cx.meta(&name),
        spec,
        status: None,
    };
    cx.providers.push((key, provider));
    name
}

fn provider_name_of(cx: &Context<'_>, key: &str) -> String {
    cx.providers
        .iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, p)| p.metadata.name.clone())
        .unwrap_or_default()
}

fn placeholder_url(var: &str) -> String {
    let host = if var.is_empty() {
        "replace-me".to_owned()
    } else {
        k8s_name(var)
    };
    format!("https://{host}.invalid")
}

fn seconds(cx: &mut Context<'_>, e: &Entry, path: &str) -> Option<String> {
    let d = e.value.as_f64().and_then(duration);
    if d.is_none() {
        cx.not_carried(e.line, path, "expected seconds");
    }
    d
}

/// Where an API key comes from: `os.environ/X` -> `litellm-env` key `X`; an inline value -> a
/// placeholder variable (the value is never written); nothing -> the variable LiteLLM reads.
fn api_key(
    cx: &mut Context<'_>,
    p: &mut Fields<'_>,
    m: &Mapping,
    spec: &mut ProviderSpec,
    path: &str,
    model_line: usize,
) {
    let var = match p.take("api_key") {
        Some(e) => credential_var(cx, e, &p.at("api_key"), &format!("{}_API_KEY", env_name(m.prefix))),
        None => match m.default_key_env {
            Some(v) => Some(v.to_owned()),
            None => {
                if m.provider_type.needs_credentials() {
                    cx.not_carried(
                        model_line,
                        path,
                        "no api_key and no environment variable to read it from",
                    );
                }
                None
            }
        },
    };
    if let Some(var) = var {
        let key = cx.secret_env(ENV_SECRET, &var, &var);
        spec.credentials = Some(Credentials {
            secret_ref: SecretKeyRef {
                name: ENV_SECRET.into(),
                key: Some(key),
            },
        });
    }
}

/// The environment variable a credential setting is read from. An inline value is not copied:
/// it gets a placeholder variable named after `fallback` (numbered when several inline values
/// differ) and a note.
fn credential_var(cx: &mut Context<'_>, e: &Entry, path: &str, fallback: &str) -> Option<String> {
    let text = e.value.as_text()?;
    if let Some(var) = env_ref(&text) {
        return Some(var.to_owned());
    }
    let known = cx.inline.iter().find(|(v, _)| *v == text).map(|(_, var)| var.clone());
    let var = match known {
        Some(var) => var,
        None => {
            let base = format!("INLINE_{fallback}");
            let n = cx.inline.iter().filter(|(_, var)| var.starts_with(&base)).count();
            let var = if n == 0 { base } else { format!("{base}_{}", n + 1) };
            cx.inline.push((text, var.clone()));
            var
        }
    };
    cx.not_carried(
        e.line,
        path,
        format!("an inline credential is never copied into manifests: the Secret reads ${{{var}}}; set that variable (or edit the Secret) to the value"),
    );
    Some(var)
}

fn bedrock(cx: &mut Context<'_>, p: &mut Fields<'_>, spec: &mut ProviderSpec, path: &str, model_line: usize) {
    let region = match p.take("aws_region_name") {
        Some(e) => cx.literal(e, &p.at("aws_region_name")).ok(),
        None => {
            let found = ["AWS_REGION_NAME", "AWS_REGION", "AWS_DEFAULT_REGION"]
                .iter()
                .find_map(|v| cx.env_default(v).map(|r| (*v, r)));
            if let Some((var, r)) = &found {
                cx.note(
                    model_line,
                    path,
                    format!("no aws_region_name: {var} read while importing ({r})"),
                );
            }
            found.map(|(_, r)| r)
        }
    };
    spec.region = Some(region.unwrap_or_else(|| {
        cx.not_carried(
            model_line,
            path,
            "no AWS region: a placeholder region is written (Switchyard needs one per Bedrock Provider)",
        );
        "replace-me".into()
    }));
    let mut vars = Vec::new();
    let mut defaults = false;
    for (param, default, key) in [
        ("aws_access_key_id", Some("AWS_ACCESS_KEY_ID"), "accessKeyId"),
        (
            "aws_secret_access_key",
            Some("AWS_SECRET_ACCESS_KEY"),
            "secretAccessKey",
        ),
        ("aws_session_token", None, "sessionToken"),
    ] {
        let var = match p.take(param) {
            Some(e) => credential_var(cx, e, &p.at(param), &env_name(param)),
            None => {
                defaults |= default.is_some();
                default.map(str::to_owned)
            }
        };
        if let Some(v) = var {
            vars.push((key, v));
        }
    }
    if defaults {
        cx.note(
            model_line,
            path,
            "no AWS keys in the config: the Secret reads AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (LiteLLM's boto3 chain also knew profiles and instance roles; those do not carry over)",
        );
    }
    let name = cx.keyed_secret("litellm-aws", &vars);
    spec.credentials = Some(Credentials {
        secret_ref: SecretKeyRef { name, key: None },
    });
}

fn vertex(cx: &mut Context<'_>, p: &mut Fields<'_>, spec: &mut ProviderSpec, path: &str, model_line: usize) {
    let project = match p.take("vertex_project") {
        Some(e) => cx.literal(e, &p.at("vertex_project")).ok(),
        None => cx.env_default("VERTEXAI_PROJECT"),
    };
    spec.vertex = Some(VertexSettings {
        project: project.unwrap_or_else(|| {
            cx.not_carried(
                model_line,
                path,
                "no vertex_project (nor VERTEXAI_PROJECT while importing): a placeholder project is written",
            );
            "replace-me".into()
        }),
    });
    let location = match p.take("vertex_location") {
        Some(e) => cx.literal(e, &p.at("vertex_location")).ok(),
        None => cx.env_default("VERTEXAI_LOCATION"),
    };
    // LiteLLM's default location.
    spec.region = Some(location.unwrap_or_else(|| "us-central1".into()));
    let var = match p.take("vertex_credentials") {
        Some(e) => {
            let var = credential_var(cx, e, &p.at("vertex_credentials"), "VERTEX_SERVICE_ACCOUNT_JSON");
            if e.value.as_str().is_some_and(|s| env_ref(s).is_some()) {
                cx.note(
                    e.line,
                    &p.at("vertex_credentials"),
                    "the variable must hold the service-account JSON itself, not a file path",
                );
            }
            var
        }
        None => {
            cx.not_carried(
                model_line,
                path,
                "no vertex_credentials: LiteLLM used Google's application default credentials; Switchyard reads a service-account JSON from ${VERTEX_SERVICE_ACCOUNT_JSON}",
            );
            Some("VERTEX_SERVICE_ACCOUNT_JSON".into())
        }
    };
    let vars: Vec<(&str, String)> = var.into_iter().map(|v| ("serviceAccount.json", v)).collect();
    let name = cx.keyed_secret("litellm-vertex", &vars);
    spec.credentials = Some(Credentials {
        secret_ref: SecretKeyRef { name, key: None },
    });
}

/// Builds the LLMRoutes from the groups, with the route-wide settings.
pub(crate) fn routes(cx: &mut Context<'_>, r: &Resilience) -> Vec<LLMRoute> {
    let groups = std::mem::take(&mut cx.routes);
    let mut names: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for g in groups {
        if g.backends.is_empty() {
            continue;
        }
        let strategy = r.strategy.map_or(Strategy::Shuffle, |(s, _)| s);
        let weights = weights(&g.backends, strategy);
        if weights.iter().all(|w| *w == 0) {
            cx.note(
                g.line,
                &g.model_name,
                "every deployment had weight 0: all are given weight 1",
            );
        }
        let all_zero = weights.iter().all(|w| *w == 0);
        let mut backend_names: Vec<String> = Vec::new();
        let backends = g
            .backends
            .iter()
            .zip(&weights)
            .map(|(d, w)| {
                let mut name = d.name.clone();
                let mut n = 1;
                while backend_names.contains(&name) {
                    n += 1;
                    name = format!("{}-{n}", d.name);
                }
                backend_names.push(name.clone());
                Backend {
                    name,
                    provider_ref: LocalRef {
                        name: d.provider.clone(),
                    },
                    model: d.model.clone(),
                    weight: if all_zero { 1 } else { *w },
                    priority: if g.tier_of.is_some() || g.backends.iter().all(|b| b.order == d.order) {
                        0
                    } else {
                        d.order.unwrap_or(0)
                    },
                    context_window: d.context_window,
                    max_output_tokens: d.max_output_tokens,
                    limits: (d.limits != Limits::default()).then(|| d.limits.clone()),
                    pricing: (d.pricing != Pricing::default()).then(|| d.pricing.clone()),
                    labels: BTreeMap::new(),
                }
            })
            .collect();
        let base = match wildcard_prefix(&g.model) {
            Some("") => "wildcard".to_owned(),
            Some(prefix) => format!("{}-wildcard", k8s_name(prefix)),
            None => k8s_name(&g.model),
        };
        let mut name = base.clone();
        let mut n = 1;
        while names.contains(&name) {
            n += 1;
            name = format!("{base}-{n}");
        }
        names.push(name.clone());
        let spec = LLMRouteSpec {
            model: g.model.clone(),
            aliases: g.aliases.clone(),
            mode: g.mode.unwrap_or_default(),
            backends,
            strategy,
            retries: r.retries(),
            timeouts: r.timeouts(),
            fallbacks: g.fallbacks.clone(),
            rules: Vec::new(),
            cache: r.cache.clone(),
            hedging: None,
            drop_unsupported_params: r.drop_params,
            log_prompts: false,
            shared_with: Vec::new(),
            parent_refs: Vec::new(),
        };
        out.push(LLMRoute {
            metadata: cx.meta(&name),
            spec,
            status: None,
        });
    }
    out
}

/// LiteLLM's simple-shuffle picks by `weight`, else `rpm`, else `tpm` (a deployment without the
/// chosen one counts 0), else evenly. Other strategies ignore weights. Switchyard weights are
/// integers: fractional ones are scaled so the largest is 1000.
fn weights(backends: &[Draft], strategy: Strategy) -> Vec<u32> {
    if !matches!(strategy, Strategy::Shuffle | Strategy::Weighted) {
        return vec![1; backends.len()];
    }
    let pick: [fn(&Draft) -> Option<f64>; 3] = [|d| d.weight, |d| d.rpm, |d| d.tpm];
    for metric in pick {
        let ws: Vec<f64> = backends.iter().map(|d| metric(d).unwrap_or(0.0)).collect();
        let largest = ws.iter().copied().fold(0.0, f64::max);
        if largest <= 0.0 {
            continue;
        }
        let integral = ws.iter().all(|w| w.fract() == 0.0) && largest <= 1_000_000.0;
        return ws
            .iter()
            .map(|w| {
                if integral {
                    *w as u32
                } else {
                    (w / largest * 1000.0).round() as u32
                }
            })
            .collect();
    }
    vec![1; backends.len()]
}

/// LiteLLM tries a model_name's lowest `order` first, spends its retries there, and only then
/// moves to the next order (an "order-based fallback", before the configured fallbacks). A
/// Switchyard priority tier is tried as soon as the better one fails, so each further order
/// becomes a route of its own, `<model>-order-<n>`, that the first one falls back to.
/// Returns (group, its tier routes in order) for the groups that were split.
pub(crate) fn split_order_tiers(cx: &mut Context<'_>) -> Vec<(usize, Vec<usize>)> {
    let mut out = Vec::new();
    let count = cx.routes.len();
    for gi in 0..count {
        let mut orders: Vec<u32> = cx.routes[gi].backends.iter().filter_map(|b| b.order).collect();
        orders.sort_unstable();
        orders.dedup();
        if orders.len() < 2 && cx.routes[gi].backends.iter().all(|b| b.order.is_some()) {
            continue;
        }
        if orders.is_empty() {
            continue;
        }
        // Deployments without an order are LiteLLM's first pick, with the lowest order.
        let first = orders[0];
        let mut tiers = Vec::new();
        for o in orders.iter().copied().filter(|o| *o != first) {
            let (moved, kept): (Vec<Draft>, Vec<Draft>) = std::mem::take(&mut cx.routes[gi].backends)
                .into_iter()
                .partition(|b| b.order == Some(o));
            cx.routes[gi].backends = kept;
            let g = &cx.routes[gi];
            let tier = Group {
                model_name: format!("{}-order-{o}", g.model_name),
                model: format!("{}-order-{o}", g.model),
                line: g.line,
                backends: moved,
                mode: g.mode,
                aliases: Vec::new(),
                fallbacks: Vec::new(),
                tier_of: Some(gi),
            };
            let (line, name, model) = (g.line, g.model_name.clone(), tier.model.clone());
            cx.routes.push(tier);
            tiers.push(cx.routes.len() - 1);
            cx.note(
                line,
                &name,
                format!("order {o}: LiteLLM moves to it only after the retries of the better orders; written as route {model:?}, a fallback of {name:?}"),
            );
        }
        if !tiers.is_empty() {
            out.push((gi, tiers));
        }
    }
    out
}
