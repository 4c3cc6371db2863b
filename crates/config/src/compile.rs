//! `compile()`: manifests in, `GatewayConfig` and diagnostics out. Pure and deterministic.
//!
//! A resource with an error is left out and the rest is compiled: one broken route never takes
//! down the others. Order of input does not matter: everything is sorted before it is read.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{Resource, ResourceExt};
use switchyard_api as api;

use crate::diagnostics::{Diagnostic, ObjectId};
use crate::manifests::{Manifests, DEFAULT_NAMESPACE};
use crate::prices;
use crate::types::*;

mod budgets;

/// Which fleet to compile for.
#[derive(Clone, Debug, Default)]
pub struct CompileOptions {
    /// `(namespace, name)` of the LLMGateway. When `None`: the only LLMGateway in the manifests,
    /// or, when there is none or several, every route and key.
    pub fleet: Option<(String, String)>,
}

/// The result of a compile.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// What the gateways run: every resource that compiled.
    pub config: GatewayConfig,
    /// Everything found wrong, sorted. Errors name resources that were left out.
    pub diagnostics: Vec<Diagnostic>,
}

impl Compiled {
    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Most fallback levels a request may go through: compile refuses deeper chains, and the
/// gateway stops at this depth whatever config it is given.
pub const MAX_FALLBACK_DEPTH: usize = 3;

/// Compiles manifests into a gateway configuration.
pub fn compile(m: &Manifests, opts: &CompileOptions) -> Compiled {
    compile_with(m, opts, &mut CompileMemo::default())
}

/// [`compile`], taking from `memo` what the last compile of the same fleet compiled each
/// object to when the object and what it reads are at the same versions, and leaving in `memo`
/// what this compile did. The result is what [`compile`] gives.
pub fn compile_with(m: &Manifests, opts: &CompileOptions, memo: &mut CompileMemo) -> Compiled {
    let mut c = Compiler {
        m,
        diags: Vec::new(),
        not_permitted: (0, 0),
    };
    let config = c.run(opts, memo);
    let mut diagnostics = c.diags;
    for d in &mut diagnostics {
        if d.location.is_none() {
            if let Some(obj) = &d.object {
                d.location = m.locate(obj, &d.field, None);
            }
        }
    }
    diagnostics.sort();
    diagnostics.dedup();
    Compiled { config, diagnostics }
}

struct Compiler<'a> {
    m: &'a Manifests,
    diags: Vec<Diagnostic>,
    /// Routes and keys of other namespaces left out for naming no parent.
    not_permitted: (usize, usize),
}

fn ns_of<K: kube::Resource>(o: &K) -> String {
    o.meta()
        .namespace
        .clone()
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned())
}

fn id_of<K: kube::Resource<DynamicType = ()>>(o: &K) -> ObjectId {
    ObjectId::new(&K::kind(&()), &ns_of(o), &o.name_any())
}

fn duration(
    diags: &mut Vec<Diagnostic>,
    id: &ObjectId,
    field: &str,
    value: Option<&String>,
    default_ms: u64,
) -> Option<u64> {
    match value {
        None => Some(default_ms),
        Some(s) => match api::parse_duration_ms(s) {
            Some(ms) => Some(ms),
            None => {
                diags.push(Diagnostic::error(
                    id,
                    field,
                    "InvalidDuration",
                    format!("{s:?} is not a duration (use forms like 500ms, 30s, 5m, 1h30m)"),
                ));
                None
            }
        },
    }
}

/// Admission of a fleet: which namespaces' routes and keys it serves.
struct Fleet<'a> {
    gateway: Option<&'a api::LLMGateway>,
    /// The requested gateway does not exist: nothing is admitted.
    missing: bool,
}

impl Fleet<'_> {
    fn admits(&self, m: &Manifests, admission: impl Fn(&api::LLMGatewaySpec) -> &api::Admission, ns: &str) -> bool {
        let Some(gw) = self.gateway else { return !self.missing };
        admits_namespace(gw, admission(&gw.spec), ns, |n| m.namespaces.get(n))
    }

    fn serves_route(&self, route: &api::LLMRoute) -> bool {
        self.gateway.is_none_or(|gw| route_attaches_to(route, gw))
    }

    fn serves_key(&self, key: &api::VirtualKey) -> bool {
        self.gateway.is_none_or(|gw| key_attaches_to(key, gw))
    }

    /// Whether an admitted object of another namespace was left out only because it names no
    /// parent: before consent was required, it would have been served.
    fn lacks_consent(&self, namespace: &str, parent_refs: &[api::NamespacedRef]) -> bool {
        self.gateway
            .is_some_and(|gw| parent_refs.is_empty() && namespace != gateway_namespace(gw))
    }
}

fn gateway_namespace(gateway: &api::LLMGateway) -> &str {
    gateway.meta().namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
}

/// Reason of the LLMGateway diagnostic that counts routes and keys of admitted namespaces left
/// out because they do not name the gateway (the operator reports it as `ResolvedRefs=False`).
pub const REF_NOT_PERMITTED: &str = "RefNotPermitted";

/// Whether one admission of `gateway` (its `spec.routes` or `spec.keys`) admits resources from
/// `namespace`. `labels` gives a namespace's labels (`None`: unknown, so none) and is asked only
/// when the admission selects by label.
///
/// The one rule of namespace admission: `compile` applies it, and the operator maps watch
/// events and writes statuses with it.
pub fn admits_namespace<L: Borrow<BTreeMap<String, String>>>(
    gateway: &api::LLMGateway,
    admission: &api::Admission,
    namespace: &str,
    labels: impl FnOnce(&str) -> Option<L>,
) -> bool {
    match admission.from {
        api::FromNamespaces::Same => namespace == gateway.meta().namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE),
        api::FromNamespaces::All => true,
        api::FromNamespaces::Selector => admission.selector.as_ref().is_some_and(|s| {
            let labels = labels(namespace);
            selector_matches(s, labels.as_ref().map_or(&BTreeMap::new(), Borrow::borrow))
        }),
    }
}

/// Whether `parent_refs` of an object in `namespace` name `gateway` (a parentRef without a
/// namespace means the object's own).
fn refs_name_gateway(parent_refs: &[api::NamespacedRef], namespace: &str, gateway: &api::LLMGateway) -> bool {
    let gateway_name = gateway.name_any();
    parent_refs
        .iter()
        .any(|p| p.name == gateway_name && p.namespace.as_deref().unwrap_or(namespace) == gateway_namespace(gateway))
}

/// Whether an object with `parent_refs` in `namespace` consents to `gateway`: it names it, or
/// it names no parent and lives in the gateway's own namespace. An object of another namespace
/// must name the gateway (as in Gateway API): a gateway's admission policy alone never takes
/// another namespace's routes, Providers, Secrets or keys.
fn attaches(parent_refs: &[api::NamespacedRef], namespace: &str, gateway: &api::LLMGateway) -> bool {
    if namespace == gateway_namespace(gateway) && parent_refs.is_empty() {
        return true;
    }
    refs_name_gateway(parent_refs, namespace, gateway)
}

/// Whether a route names `gateway` in its parentRefs (a parentRef without a namespace means
/// the route's own).
pub fn route_names_gateway(route: &api::LLMRoute, gateway: &api::LLMGateway) -> bool {
    let route_ns = route.meta().namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
    refs_name_gateway(&route.spec.parent_refs, route_ns, gateway)
}

/// Whether a route attaches to `gateway` when the gateway admits its namespace: it names this
/// gateway, or it names no parents and is in the gateway's namespace. Both sides consent: the
/// gateway by admitting the namespace, a route of another namespace by naming the gateway.
pub fn route_attaches_to(route: &api::LLMRoute, gateway: &api::LLMGateway) -> bool {
    let route_ns = route.meta().namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
    attaches(&route.spec.parent_refs, route_ns, gateway)
}

/// Whether a VirtualKey attaches to `gateway` when the gateway admits its namespace (the rule
/// of [`route_attaches_to`]).
pub fn key_attaches_to(key: &api::VirtualKey, gateway: &api::LLMGateway) -> bool {
    let key_ns = key.meta().namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
    attaches(&key.spec.parent_refs, key_ns, gateway)
}

/// Whether labels match a Kubernetes label selector.
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = sel.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = sel.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

impl<'a> Compiler<'a> {
    fn run(&mut self, opts: &CompileOptions, memo: &mut CompileMemo) -> GatewayConfig {
        let gateway = self.pick_gateway(opts);
        let fleet = Fleet {
            gateway,
            missing: opts.fleet.is_some() && gateway.is_none(),
        };
        let providers = self.providers();
        let routes = self.routes(&fleet, &providers);
        let keys = self.keys(&fleet, &routes, memo);
        let budgets = self.budgets(&fleet, &keys);
        if let (Some(gw), (routes_out, keys_out)) = (gateway, self.not_permitted) {
            if routes_out + keys_out > 0 {
                // Counts only: the names belong to other namespaces.
                self.diags.push(Diagnostic::warning(
                    &id_of(gw),
                    "",
                    REF_NOT_PERMITTED,
                    format!(
                        "{routes_out} route(s) and {keys_out} key(s) of other namespaces admitted by spec.routes / spec.keys \
                         are not served: an object of another namespace must name this LLMGateway in its spec.parentRefs"
                    ),
                ));
            }
        }
        // The Providers routes use, and those keys may reach through pass-through.
        let mut used: BTreeSet<String> = routes
            .iter()
            .flat_map(|r| r.backends.iter().map(|b| b.provider.clone()))
            .collect();
        used.extend(
            keys.iter()
                .flat_map(|k| k.allowed_passthrough.iter().map(|p| format!("{}/{p}", k.namespace))),
        );
        let providers = providers
            .into_iter()
            .filter_map(|(id, p)| p.ok().filter(|_| used.contains(id.as_str())))
            .collect();
        GatewayConfig {
            version: SCHEMA_VERSION,
            fleet: gateway.map(|g| format!("{}/{}", ns_of(g), g.name_any())),
            settings: self.settings(gateway),
            providers,
            routes,
            keys,
            budgets,
        }
    }

    fn pick_gateway(&mut self, opts: &CompileOptions) -> Option<&'a api::LLMGateway> {
        let m = self.m;
        match &opts.fleet {
            Some((ns, name)) => {
                let gw = m.gateways.iter().find(|g| &ns_of(*g) == ns && &g.name_any() == name);
                if gw.is_none() {
                    self.diags.push(Diagnostic::error(
                        &ObjectId::new("LLMGateway", ns, name),
                        "",
                        "GatewayNotFound",
                        "LLMGateway not found; nothing is admitted",
                    ));
                }
                gw
            }
            None => match m.gateways.as_slice() {
                [one] => Some(one),
                _ => None,
            },
        }
    }

    fn settings(&mut self, gw: Option<&api::LLMGateway>) -> Settings {
        let Some(gw) = gw else { return Settings::default() };
        let id = id_of(gw);
        let redis = gw.spec.redis.as_ref().and_then(|r| {
            let url = match (&r.url, &r.url_secret_ref) {
                (Some(u), _) => Some(u.clone()),
                (None, Some(sr)) => self.secret_value(&id, "spec.redis.urlSecretRef", &ns_of(gw), sr, "url"),
                (None, None) => None,
            }?;
            Some(RedisConfig {
                url: SecretString::new(url),
                cluster: r.cluster,
                fail_mode: match r.fail_mode {
                    api::FailMode::Open => FailMode::Open,
                    api::FailMode::Closed => FailMode::Closed,
                },
            })
        });
        let connections = self.connections(&id, gw.spec.connections.as_ref());
        Settings {
            max_request_bytes: gw.spec.max_request_bytes.unwrap_or(DEFAULT_MAX_REQUEST_BYTES),
            redis,
            connections,
            max_response_bytes: gw.spec.max_response_bytes.unwrap_or(DEFAULT_MAX_RESPONSE_BYTES),
            max_request_values: gw.spec.max_request_values.unwrap_or(DEFAULT_MAX_REQUEST_VALUES),
        }
    }

    /// `spec.connections`; a field that is not a duration, or is zero, keeps its default.
    fn connections(&mut self, id: &ObjectId, c: Option<&api::ConnectionLimits>) -> ConnectionsConfig {
        let defaults = ConnectionsConfig::default();
        let Some(c) = c else { return defaults };
        let mut timeout = |field: &str, value: Option<&String>, default_ms: u64| match duration(
            &mut self.diags,
            id,
            field,
            value,
            default_ms,
        ) {
            Some(0) => {
                self.diags.push(Diagnostic::error(
                    id,
                    field,
                    "InvalidDuration",
                    "must be longer than 0; the default applies",
                ));
                default_ms
            }
            Some(ms) => ms,
            None => default_ms,
        };
        ConnectionsConfig {
            header_read_timeout_ms: timeout(
                "spec.connections.headerReadTimeout",
                c.header_read_timeout.as_ref(),
                defaults.header_read_timeout_ms,
            ),
            idle_timeout_ms: timeout(
                "spec.connections.idleTimeout",
                c.idle_timeout.as_ref(),
                defaults.idle_timeout_ms,
            ),
            body_read_timeout_ms: timeout(
                "spec.connections.bodyReadTimeout",
                c.body_read_timeout.as_ref(),
                defaults.body_read_timeout_ms,
            ),
            max: c.max,
        }
    }

    /// A value from a Secret, or a diagnostic saying why not.
    fn secret_value(
        &mut self,
        id: &ObjectId,
        field: &str,
        ns: &str,
        sr: &api::SecretKeyRef,
        default_key: &str,
    ) -> Option<String> {
        let key = sr.key.as_deref().unwrap_or(default_key);
        self.secret_key(id, field, ns, &sr.name, key)
    }

    fn secret_key(&mut self, id: &ObjectId, field: &str, ns: &str, name: &str, key: &str) -> Option<String> {
        let Some(data) = self.m.secrets.get(&(ns.to_owned(), name.to_owned())) else {
            self.diags.push(Diagnostic::error(
                id,
                field,
                "SecretNotFound",
                format!("Secret {name:?} not found in namespace {ns:?}"),
            ));
            return None;
        };
        if let Some(var) = data.missing_env.get(key) {
            self.diags.push(Diagnostic::error(
                id,
                field,
                "SecretKeyMissing",
                format!("Secret {name:?} key {key:?} refers to environment variable {var}, which is not set"),
            ));
            return None;
        }
        match data.values.get(key) {
            Some(v) if !v.is_empty() => Some(v.clone()),
            _ => {
                self.diags.push(Diagnostic::error(
                    id,
                    field,
                    "SecretKeyMissing",
                    format!("Secret {name:?} has no key {key:?}"),
                ));
                None
            }
        }
    }

    /// Every provider by id, compiled or with the reason it could not be.
    fn providers(&mut self) -> BTreeMap<String, Result<ProviderConfig, String>> {
        let mut out = BTreeMap::new();
        let mut list: Vec<&api::Provider> = self.m.providers.iter().collect();
        list.sort_by_key(|p| (ns_of(*p), p.name_any()));
        for p in list {
            let id = id_of(p);
            let key = format!("{}/{}", id.namespace, id.name);
            let before = self.diags.len();
            let compiled = self.provider(p, &id, &key);
            let result = compiled.ok_or_else(|| {
                self.diags[before..]
                    .first()
                    .map(|d| d.message.clone())
                    .unwrap_or_else(|| "invalid".into())
            });
            out.insert(key, result);
        }
        out
    }

    fn provider(&mut self, p: &api::Provider, id: &ObjectId, key: &str) -> Option<ProviderConfig> {
        let s = &p.spec;
        let ns = ns_of(p);
        let kind = provider_kind(s.provider_type);
        let credentials = match &s.credentials {
            None => None,
            Some(c) => {
                let field = "spec.credentials.secretRef";
                let sr = &c.secret_ref;
                Some(match kind {
                    ProviderKind::Bedrock => {
                        let access = self.secret_key(id, field, &ns, &sr.name, "accessKeyId");
                        let secret = self.secret_key(id, field, &ns, &sr.name, "secretAccessKey");
                        let token = self
                            .m
                            .secrets
                            .get(&(ns.clone(), sr.name.clone()))
                            .and_then(|d| d.values.get("sessionToken").cloned());
                        CredentialsConfig::Aws {
                            access_key_id: SecretString::new(access?),
                            secret_access_key: SecretString::new(secret?),
                            session_token: token.map(SecretString::new),
                        }
                    }
                    ProviderKind::Vertex => CredentialsConfig::ServiceAccount {
                        json: SecretString::new(self.secret_value(id, field, &ns, sr, "serviceAccount.json")?),
                    },
                    _ => CredentialsConfig::ApiKey {
                        key: SecretString::new(self.secret_value(id, field, &ns, sr, "apiKey")?),
                    },
                })
            }
        };
        let base_url = match (&s.base_url, kind.default_base_url()) {
            (Some(u), _) => u.trim_end_matches('/').to_owned(),
            (None, Some(d)) => d.to_owned(),
            (None, None) => match kind {
                ProviderKind::Bedrock => format!(
                    "https://bedrock-runtime.{}.amazonaws.com",
                    s.region.as_deref().unwrap_or("us-east-1")
                ),
                ProviderKind::Vertex => {
                    let region = s.region.as_deref().unwrap_or("us-central1");
                    if region == "global" {
                        "https://aiplatform.googleapis.com".to_owned()
                    } else {
                        format!("https://{region}-aiplatform.googleapis.com")
                    }
                }
                _ => String::new(),
            },
        };
        let timeouts = s.timeouts.clone().unwrap_or_default();
        let defaults = ProviderTimeoutsConfig::default();
        let t = ProviderTimeoutsConfig {
            connect_ms: duration(
                &mut self.diags,
                id,
                "spec.timeouts.connect",
                timeouts.connect.as_ref(),
                defaults.connect_ms,
            )?,
            request_ms: duration(
                &mut self.diags,
                id,
                "spec.timeouts.request",
                timeouts.request.as_ref(),
                defaults.request_ms,
            )?,
            stream_idle_ms: duration(
                &mut self.diags,
                id,
                "spec.timeouts.streamIdle",
                timeouts.stream_idle.as_ref(),
                defaults.stream_idle_ms,
            )?,
        };
        let cb = s.circuit_breaker.clone().unwrap_or_default();
        let cb_defaults = CircuitBreakerConfig::default();
        let circuit_breaker = CircuitBreakerConfig {
            consecutive_failures: cb
                .consecutive_failures
                .unwrap_or(cb_defaults.consecutive_failures)
                .max(1),
            cooldown_ms: duration(
                &mut self.diags,
                id,
                "spec.circuitBreaker.cooldown",
                cb.cooldown.as_ref(),
                cb_defaults.cooldown_ms,
            )?,
        };
        let mock = match (&s.mock, kind) {
            (m, ProviderKind::Mock) => {
                let m = m.clone().unwrap_or_default();
                Some(MockConfig {
                    response: m.response.clone(),
                    latency_ms: duration(&mut self.diags, id, "spec.mock.latency", m.latency.as_ref(), 0)?,
                    time_to_first_token_ms: duration(
                        &mut self.diags,
                        id,
                        "spec.mock.timeToFirstToken",
                        m.time_to_first_token.as_ref(),
                        0,
                    )?,
                    tokens_per_second: m.tokens_per_second.filter(|t| *t > 0),
                    embedding_dimensions: m.embedding_dimensions.unwrap_or(8),
                })
            }
            _ => None,
        };
        for name in s.headers.keys() {
            let lower = name.to_ascii_lowercase();
            if matches!(
                lower.as_str(),
                "authorization" | "api-key" | "x-api-key" | "x-goog-api-key"
            ) {
                self.diags.push(Diagnostic::error(
                    id,
                    &format!("spec.headers.{name}"),
                    "SecretInHeaders",
                    "credential headers belong in credentials.secretRef, not in plain-text headers",
                ));
                return None;
            }
        }
        Some(ProviderConfig {
            id: key.to_owned(),
            kind,
            base_url,
            credentials,
            region: s.region.clone(),
            api_version: s
                .api_version
                .clone()
                .or_else(|| (kind == ProviderKind::AzureOpenai).then(|| "2024-10-21".to_owned())),
            project: s.vertex.as_ref().map(|v| v.project.clone()),
            headers: s.headers.clone(),
            quota: s
                .quota
                .as_ref()
                .map(|q| LimitsConfig {
                    rpm: q.rpm,
                    tpm: q.tpm,
                    max_parallel: q.max_concurrency,
                })
                .unwrap_or_default(),
            timeouts: t,
            circuit_breaker,
            mock,
            http_version: match s.http_version.unwrap_or_default() {
                api::HttpVersion::Auto => HttpVersion::Auto,
                api::HttpVersion::Http1 => HttpVersion::Http1,
                api::HttpVersion::Http2 => HttpVersion::Http2,
            },
        })
    }

    fn routes(
        &mut self,
        fleet: &Fleet<'_>,
        providers: &BTreeMap<String, Result<ProviderConfig, String>>,
    ) -> Vec<RouteConfig> {
        let m = self.m;
        // Oldest first, then by name: the first route to claim a model name keeps it.
        let admitted = m.routes.iter().filter(|r| fleet.admits(m, |s| &s.routes, &ns_of(*r)));
        let (mut list, refused): (Vec<&api::LLMRoute>, Vec<&api::LLMRoute>) =
            admitted.partition(|r| fleet.serves_route(r));
        self.not_permitted.0 = refused
            .iter()
            .filter(|r| fleet.lacks_consent(&ns_of(**r), &r.spec.parent_refs))
            .count();
        list.sort_by_key(|r| {
            (
                ns_of(*r),
                r.metadata.creation_timestamp.clone().map(|t| t.0),
                r.name_any(),
            )
        });

        let mut compiled: Vec<(ObjectId, RouteConfig)> = Vec::new();
        let mut claimed: BTreeMap<(String, String), ObjectId> = BTreeMap::new();
        for r in list {
            let id = id_of(r);
            let Some(rc) = self.route(r, &id, providers) else {
                continue;
            };
            let names: Vec<&String> = std::iter::once(&rc.model).chain(rc.aliases.iter()).collect();
            let clash = names.iter().find_map(|n| {
                claimed
                    .get(&(rc.namespace.clone(), (*n).clone()))
                    .map(|o| ((*n).clone(), o.clone()))
            });
            if let Some((name, owner)) = clash {
                self.diags.push(Diagnostic::error(
                    &id,
                    "spec.model",
                    "DuplicateModel",
                    format!(
                        "model name {name:?} is already served by {owner} in namespace {:?}; the route is left out",
                        rc.namespace
                    ),
                ));
                continue;
            }
            for n in names {
                claimed.insert((rc.namespace.clone(), n.clone()), id.clone());
            }
            compiled.push((id, rc));
        }

        // Fallbacks and rule targets must name routes that compiled; removing a route can break
        // another's, so repeat until nothing changes.
        loop {
            let known: BTreeSet<(String, String)> = compiled
                .iter()
                .flat_map(|(_, r)| {
                    std::iter::once(r.model.clone())
                        .chain(r.aliases.iter().cloned())
                        .map(|n| (r.namespace.clone(), n))
                })
                .collect();
            let before = compiled.len();
            let mut kept = Vec::new();
            for (id, r) in compiled {
                let missing = r
                    .fallbacks
                    .iter()
                    .enumerate()
                    .map(|(i, f)| (format!("spec.fallbacks[{i}].route"), &f.route))
                    .chain(r.rules.iter().enumerate().filter_map(|(i, rule)| {
                        rule.route
                            .as_ref()
                            .map(|t| (format!("spec.rules[{i}].action.route"), t))
                    }))
                    .find(|(_, target)| !known.contains(&(r.namespace.clone(), (*target).clone())));
                if let Some((field, target)) = missing {
                    self.diags.push(Diagnostic::error(
                        &id,
                        &field,
                        "RouteNotFound",
                        format!(
                            "no route serves model {target:?} in namespace {:?}; the route is left out",
                            r.namespace
                        ),
                    ));
                } else {
                    kept.push((id, r));
                }
            }
            compiled = kept;
            if compiled.len() == before {
                break;
            }
        }

        // Fallback chains: no loops, at most MAX_FALLBACK_DEPTH levels.
        let by_name: BTreeMap<(String, String), usize> = compiled
            .iter()
            .enumerate()
            .flat_map(|(i, (_, r))| {
                std::iter::once(&r.model)
                    .chain(r.aliases.iter())
                    .map(move |n| ((r.namespace.clone(), n.clone()), i))
            })
            .collect();
        let mut bad = BTreeMap::new();
        for (i, (id, _)) in compiled.iter().enumerate() {
            match fallback_depth(i, &compiled, &by_name, &mut Vec::new()) {
                Err(cycle) => {
                    bad.insert(
                        i,
                        Diagnostic::error(
                            id,
                            "spec.fallbacks",
                            "FallbackLoop",
                            format!("fallbacks form a loop ({}); the route is left out", cycle.join(" -> ")),
                        ),
                    );
                }
                Ok(depth) if depth > MAX_FALLBACK_DEPTH => {
                    bad.insert(i, Diagnostic::error(
                        id,
                        "spec.fallbacks",
                        "FallbackTooDeep",
                        format!("fallbacks go {depth} levels deep; at most {MAX_FALLBACK_DEPTH} are allowed; the route is left out"),
                    ));
                }
                Ok(_) => {}
            }
        }
        let mut out = Vec::new();
        for (i, (_, r)) in compiled.into_iter().enumerate() {
            match bad.remove(&i) {
                Some(d) => self.diags.push(d),
                None => out.push(r),
            }
        }
        out.sort_by(|a, b| (&a.namespace, &a.model).cmp(&(&b.namespace, &b.model)));
        out
    }

    /// Wildcards (`openai/*`): in a route's model only, once and at its end (only then may
    /// the name hold a `/`); in a backend model only at its end, and only in a wildcard route;
    /// never in an alias, nor in a fallback or rule target (a wildcard route serves the name
    /// a client sent, and a fallback has no name of its own to send).
    fn check_wildcards(&mut self, r: &api::LLMRoute, id: &ObjectId) -> bool {
        let s = &r.spec;
        let mut bad = Vec::new();
        let wildcard = wildcard_prefix(&s.model).is_some();
        if s.model.contains('*') && !wildcard {
            bad.push((
                "spec.model".to_owned(),
                format!(
                    "model {:?} has a `*` before its end; a wildcard route's model ends in its only `*` (`openai/*`)",
                    s.model
                ),
            ));
        } else if s.model.contains('/') && !wildcard {
            bad.push(("spec.model".to_owned(), format!("model {:?} holds a `/`, which only a wildcard model (ending in `*`) may; clients address shared routes as `<namespace>/<model>`", s.model)));
        }
        for (i, a) in s.aliases.iter().enumerate() {
            if a.contains('*') {
                bad.push((
                    format!("spec.aliases[{i}]"),
                    format!("alias {a:?} holds a `*`; only the model of a route may be a wildcard"),
                ));
            }
        }
        for (i, b) in s.backends.iter().enumerate() {
            let trailing = wildcard_prefix(&b.model).is_some();
            if b.model.contains('*') && !(trailing && wildcard) {
                let why = if trailing {
                    "only a wildcard route's backends may end in `*`"
                } else {
                    "a `*` may only end it"
                };
                bad.push((
                    format!("spec.backends[{i}].model"),
                    format!("backend model {:?}: {why}", b.model),
                ));
            }
        }
        let targets = s
            .fallbacks
            .iter()
            .enumerate()
            .map(|(i, f)| (format!("spec.fallbacks[{i}].route"), &f.route));
        let rules = s.rules.iter().enumerate().filter_map(|(i, rule)| {
            rule.action
                .route
                .as_ref()
                .map(|t| (format!("spec.rules[{i}].action.route"), t))
        });
        for (field, t) in targets.chain(rules) {
            if t.contains('*') {
                bad.push((
                    field,
                    format!("{t:?} is a wildcard; fallbacks and rules must name an exact route"),
                ));
            }
        }
        let ok = bad.is_empty();
        for (field, message) in bad {
            self.diags.push(Diagnostic::error(
                id,
                &field,
                "InvalidWildcard",
                format!("{message}; the route is left out"),
            ));
        }
        ok
    }

    fn route(
        &mut self,
        r: &api::LLMRoute,
        id: &ObjectId,
        providers: &BTreeMap<String, Result<ProviderConfig, String>>,
    ) -> Option<RouteConfig> {
        let s = &r.spec;
        let ns = ns_of(r);
        let mut backends = Vec::new();
        let mut ok = self.check_wildcards(r, id);
        let wildcard = wildcard_prefix(&s.model).is_some();
        let mut names = BTreeSet::new();
        for (i, b) in s.backends.iter().enumerate() {
            let field = format!("spec.backends[{i}].providerRef.name");
            let pid = format!("{ns}/{}", b.provider_ref.name);
            let provider = match providers.get(&pid) {
                None => {
                    self.diags.push(Diagnostic::error(
                        id,
                        &field,
                        "ProviderNotFound",
                        format!(
                            "Provider {:?} not found in namespace {ns:?}; the route is left out",
                            b.provider_ref.name
                        ),
                    ));
                    ok = false;
                    continue;
                }
                Some(Err(why)) => {
                    self.diags.push(Diagnostic::error(
                        id,
                        &field,
                        "ProviderNotReady",
                        format!(
                            "Provider {:?} cannot be used ({why}); the route is left out",
                            b.provider_ref.name
                        ),
                    ));
                    ok = false;
                    continue;
                }
                Some(Ok(p)) => p,
            };
            let mut name = if b.name.is_empty() {
                b.provider_ref.name.clone()
            } else {
                b.name.clone()
            };
            if names.contains(&name) {
                name = format!("{name}-{i}");
            }
            names.insert(name.clone());
            // A wildcard backend's model is known per request; the gateway prices it then.
            let info = if wildcard && b.model.ends_with('*') {
                None
            } else {
                prices::lookup_for(provider.kind, &b.model)
            };
            let provider_price = self
                .m
                .providers
                .iter()
                .find(|p| ns_of(*p) == ns && p.name_any() == b.provider_ref.name)
                .and_then(|p| {
                    p.spec
                        .pricing
                        .iter()
                        .find(|pr| pr.model.as_deref() == Some(b.model.as_str()))
                });
            let price = resolve_price(b.pricing.as_ref(), provider_price, info.map(|i| i.price));
            let mut labels = BTreeMap::new();
            if let Some(api_p) = self
                .m
                .providers
                .iter()
                .find(|p| ns_of(*p) == ns && p.name_any() == b.provider_ref.name)
            {
                labels.extend(api_p.spec.labels.clone());
            }
            if let Some(region) = &provider.region {
                labels.insert("region".to_owned(), region.clone());
            }
            labels.extend(b.labels.clone());
            if s.mode == api::RouteMode::Embeddings && matches!(provider.kind, ProviderKind::Anthropic) {
                self.diags.push(Diagnostic::error(
                    id,
                    &format!("spec.backends[{i}]"),
                    "UnsupportedMode",
                    "anthropic providers have no embeddings API; the route is left out",
                ));
                ok = false;
            }
            backends.push(BackendConfig {
                name,
                provider: pid,
                model: b.model.clone(),
                weight: b.weight,
                priority: b.priority,
                labels,
                context_window: b.context_window.or(info.map(|i| i.context_window).filter(|c| *c > 0)),
                max_output_tokens: b.max_output_tokens.or(info.map(|i| i.max_output).filter(|m| *m > 0)),
                limits: limits_of(b.limits.as_ref()),
                price,
            });
        }
        let retries = match &s.retries {
            None => Some(RetryConfig::default()),
            Some(rp) => {
                let d = RetryConfig::default();
                let backoff_ms = duration(
                    &mut self.diags,
                    id,
                    "spec.retries.backoff",
                    rp.backoff.as_ref(),
                    d.backoff_ms,
                );
                let max_backoff_ms = duration(
                    &mut self.diags,
                    id,
                    "spec.retries.maxBackoff",
                    rp.max_backoff.as_ref(),
                    d.max_backoff_ms,
                );
                match (backoff_ms, max_backoff_ms) {
                    (Some(backoff_ms), Some(max_backoff_ms)) => Some(RetryConfig {
                        attempts: rp.attempts,
                        backoff_ms,
                        max_backoff_ms,
                        on: if rp.on.is_empty() {
                            d.on
                        } else {
                            let mut on: Vec<RetryOn> = rp.on.iter().map(|o| retry_on(*o)).collect();
                            on.sort();
                            on.dedup();
                            on
                        },
                    }),
                    _ => None,
                }
            }
        };
        let t = s.timeouts.clone().unwrap_or_default();
        let timeouts = RouteTimeoutsConfig {
            request_ms: optional_duration(
                &mut self.diags,
                id,
                "spec.timeouts.request",
                t.request.as_ref(),
                &mut ok,
            ),
            per_try_ms: optional_duration(&mut self.diags, id, "spec.timeouts.perTry", t.per_try.as_ref(), &mut ok),
            first_token_ms: optional_duration(
                &mut self.diags,
                id,
                "spec.timeouts.firstToken",
                t.first_token.as_ref(),
                &mut ok,
            ),
        };
        let cache = match &s.cache {
            Some(c) if c.enabled => {
                duration(&mut self.diags, id, "spec.cache.ttl", c.ttl.as_ref(), 300_000).map(|ttl_ms| {
                    Some(CacheConfig {
                        ttl_ms,
                        max_body_bytes: c.max_body_bytes.unwrap_or(1024 * 1024),
                        shared: c.shared,
                    })
                })
            }
            _ => Some(None),
        };
        let hedge_after_ms = match &s.hedging {
            Some(h) if h.enabled => {
                optional_duration(&mut self.diags, id, "spec.hedging.after", h.after.as_ref(), &mut ok)
            }
            _ => None,
        };
        let backend_names: BTreeSet<&str> = backends.iter().map(|b| b.name.as_str()).collect();
        let mut rules = Vec::new();
        for (i, rule) in s.rules.iter().enumerate() {
            let a = &rule.action;
            let unknown = a
                .weights
                .iter()
                .flat_map(|w| w.keys())
                .chain(a.priorities.iter().flat_map(|p| p.keys()))
                .find(|n| !backend_names.contains(n.as_str()));
            if let Some(n) = unknown {
                self.diags.push(Diagnostic::error(
                    id,
                    &format!("spec.rules[{i}].action"),
                    "BackendNotFound",
                    format!(
                        "rule {:?} names backend {n:?}, which this route does not have; the route is left out",
                        rule.name
                    ),
                ));
                ok = false;
            }
            rules.push(RuleConfig {
                name: rule.name.clone(),
                key_labels: rule.matches.key_labels.clone(),
                headers: rule
                    .matches
                    .headers
                    .iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                    .collect(),
                metadata: rule.matches.metadata.clone(),
                backend_selector: a.backend_selector.clone(),
                weights: a.weights.clone(),
                priorities: a.priorities.clone(),
                route: a.route.clone(),
            });
        }
        let fallbacks = s
            .fallbacks
            .iter()
            .map(|f| FallbackConfig {
                route: f.route.clone(),
                on: if f.on.is_empty() {
                    vec![
                        FallbackTrigger::RateLimit,
                        FallbackTrigger::ServerError,
                        FallbackTrigger::Timeout,
                        FallbackTrigger::ContextWindow,
                        FallbackTrigger::ContentPolicy,
                    ]
                } else {
                    let mut on: Vec<FallbackTrigger> = f.on.iter().map(|t| trigger(*t)).collect();
                    on.sort();
                    on.dedup();
                    on
                },
            })
            .collect();
        let mut shared_with = s.shared_with.clone();
        shared_with.sort();
        shared_with.dedup();
        if !ok {
            return None;
        }
        Some(RouteConfig {
            namespace: ns,
            name: r.name_any(),
            model: s.model.clone(),
            aliases: s.aliases.clone(),
            mode: match s.mode {
                api::RouteMode::Chat => RouteMode::Chat,
                api::RouteMode::Embeddings => RouteMode::Embeddings,
                api::RouteMode::Completions => RouteMode::Completions,
                api::RouteMode::Moderation => RouteMode::Moderation,
                api::RouteMode::Rerank => RouteMode::Rerank,
                api::RouteMode::ImageGeneration => RouteMode::ImageGeneration,
                api::RouteMode::AudioTranscription => RouteMode::AudioTranscription,
                api::RouteMode::AudioSpeech => RouteMode::AudioSpeech,
            },
            backends,
            strategy: strategy(s.strategy),
            retries: retries?,
            timeouts,
            fallbacks,
            rules,
            cache: cache?,
            hedge_after_ms,
            drop_unsupported_params: s.drop_unsupported_params,
            log_prompts: s.log_prompts,
            shared_with,
        })
    }

    fn keys(&mut self, fleet: &Fleet<'_>, routes: &[RouteConfig], memo: &mut CompileMemo) -> Vec<Arc<KeyConfig>> {
        let m = self.m;
        let admitted = m.keys.iter().filter(|k| fleet.admits(m, |s| &s.keys, &ns_of(*k)));
        let (list, refused): (Vec<&api::VirtualKey>, Vec<&api::VirtualKey>) =
            admitted.partition(|k| fleet.serves_key(k));
        self.not_permitted.1 = refused
            .iter()
            .filter(|k| fleet.lacks_consent(&ns_of(**k), &k.spec.parent_refs))
            .count();
        let mut list: Vec<(String, &api::VirtualKey)> = list.into_iter().map(|k| (ns_of(k), k)).collect();
        list.sort_by(|(a_ns, a), (b_ns, b)| (a_ns, &a.metadata.name).cmp(&(b_ns, &b.metadata.name)));
        let mut last = std::mem::take(&mut memo.keys);
        let mut out = Vec::new();
        let mut seen_hashes: HashMap<String, ObjectId> = HashMap::with_capacity(list.len());
        for (ns, k) in list {
            let id = ObjectId::new("VirtualKey", &ns, &k.name_any());
            // A key compiles from itself and the Secrets it reads, nothing else: at the same
            // versions of those, the last compile's piece is this one.
            let stamp = key_stamp(m, k, &id);
            let piece = match (stamp, last.remove(&id)) {
                (Some(stamp), Some(piece)) if piece.stamp.as_ref() == Some(&stamp) => piece,
                (stamp, _) => self.key(k, &id, &ns, stamp),
            };
            self.diags.extend(piece.read_diags.iter().cloned());
            let Some(first_hash) = piece.config.as_ref().map(|c| c.hashes[0].sha256.clone()) else {
                memo.keep(id, piece);
                continue;
            };
            let field = key_field(k);
            if let Some(other) = seen_hashes.get(&first_hash) {
                // The diagnostic goes to this key's status: another namespace's key is not named.
                let whose = if other.namespace == id.namespace {
                    other.to_string()
                } else {
                    "a key of another namespace".to_owned()
                };
                self.diags.push(Diagnostic::error(
                    &id,
                    field,
                    "DuplicateKey",
                    format!("uses the same key value as {whose}; the key is left out"),
                ));
                memo.keep(id, piece);
                continue;
            }
            seen_hashes.insert(first_hash, id.clone());
            self.key_references(k, &id, &ns, routes);
            self.diags.extend(piece.budget_diags.iter().cloned());
            if piece.budget_diags.iter().all(|d| !d.is_error()) {
                out.extend(piece.config.iter().cloned());
            }
            memo.keep(id, piece);
        }
        out
    }

    /// What one key compiles to from itself and the Secrets it reads ([`KeyPiece`]).
    fn key(&mut self, k: &api::VirtualKey, id: &ObjectId, ns: &str, stamp: Option<KeyStamp>) -> KeyPiece {
        let m = self.m;
        let s = &k.spec;
        let mut piece = KeyPiece {
            stamp,
            config: None,
            read_diags: Vec::new(),
            budget_diags: Vec::new(),
        };
        let (secret_name, secret_key) = match &s.secret_ref {
            Some(sr) => (sr.name.clone(), sr.key.clone().unwrap_or_else(|| "key".to_owned())),
            None => (format!("{}-key", k.name_any()), "key".to_owned()),
        };
        let before = self.diags.len();
        let value = self.secret_key(id, key_field(k), ns, &secret_name, &secret_key);
        piece.read_diags = self.diags.split_off(before);
        let Some(value) = value else { return piece };
        let mut hashes = vec![KeyHash {
            sha256: hash_key(&value),
            not_after: None,
        }];
        // A rotated key stays valid until its grace period ends (written by the operator).
        if let Some(data) = m.secrets.get(&(ns.to_owned(), secret_name.clone())) {
            if let (Some(prev), Some(until)) = (data.values.get("previousKey"), data.values.get("previousKeyNotAfter"))
            {
                if let Ok(until) = until.parse::<i64>() {
                    hashes.push(KeyHash {
                        sha256: hash_key(prev),
                        not_after: Some(until),
                    });
                }
            }
        }
        let before = self.diags.len();
        let budget = match &s.budget {
            None => Some(None),
            Some(b) => {
                let webhook = match &b.webhook {
                    None => Some(None),
                    Some(w) => {
                        let signing_secret = match &w.signing_secret_ref {
                            None => Some(None),
                            Some(sr) => self
                                .secret_value(id, "spec.budget.webhook.signingSecretRef", ns, sr, "secret")
                                .map(|v| Some(SecretString::new(v))),
                        };
                        signing_secret.map(|signing_secret| {
                            Some(WebhookConfig {
                                url: w.url.clone(),
                                signing_secret,
                            })
                        })
                    }
                };
                webhook.map(|webhook| {
                    Some(BudgetConfig {
                        max_spend: b.max_spend,
                        period: budgets::period(b.period),
                        action: budgets::action(b.action),
                        alert_thresholds: budgets::thresholds(&b.alert_thresholds),
                        webhook,
                    })
                })
            }
        };
        piece.budget_diags = self.diags.split_off(before);
        let mut allowed_routes = s.allowed_routes.clone();
        allowed_routes.sort();
        allowed_routes.dedup();
        let mut allowed_passthrough = s.allowed_passthrough.clone();
        allowed_passthrough.sort();
        allowed_passthrough.dedup();
        piece.config = Some(Arc::new(KeyConfig {
            namespace: ns.to_owned(),
            name: k.name_any(),
            hashes,
            allowed_routes,
            allowed_passthrough,
            limits: limits_of(s.limits.as_ref()),
            // Left out below when the budget's signing Secret could not be read.
            budget: budget.flatten(),
            expires_at: s.expires_at.as_ref().map(|t| t.0.as_second()),
            blocked: s.blocked,
            labels: s.labels.clone(),
        }));
        piece
    }

    /// Warnings about the routes and Providers a served key names that do not exist: these
    /// depend on the other objects, so they are not part of a key's [`KeyPiece`].
    fn key_references(&mut self, k: &api::VirtualKey, id: &ObjectId, ns: &str, routes: &[RouteConfig]) {
        let m = self.m;
        let s = &k.spec;
        for (i, allowed) in s.allowed_routes.iter().enumerate() {
            let (rns, model) = allowed.split_once('/').unwrap_or((ns, allowed.as_str()));
            // A route of another namespace that is not shared with this one is reported like
            // a missing one: the key cannot use it, and its namespace's route names are not
            // this namespace's to learn. A wildcard route is named as written (`openai/*`),
            // or by a model it serves.
            let wildcard = |r: &RouteConfig| {
                r.namespace == ns
                    && (r.model == *allowed
                        || r.wildcard_prefix()
                            .is_some_and(|p| allowed.len() > p.len() && allowed.starts_with(p)))
            };
            let exists = routes.iter().any(|r| {
                (r.namespace == rns
                    && (r.model == model || r.aliases.iter().any(|a| a == model))
                    && (rns == ns || r.shared_with.iter().any(|s| *s == ns || s == "*")))
                    || wildcard(r)
            });
            if !exists {
                self.diags.push(Diagnostic::warning(
                    id,
                    &format!("spec.allowedRoutes[{i}]"),
                    "RouteNotFound",
                    format!("no route serves {allowed:?} (yet)"),
                ));
            }
        }
        for (i, name) in s.allowed_passthrough.iter().enumerate() {
            // Own namespace only: pass-through never reaches another namespace's Provider.
            if !m.providers.iter().any(|p| ns_of(p) == ns && p.name_any() == *name) {
                self.diags.push(Diagnostic::warning(
                    id,
                    &format!("spec.allowedPassthrough[{i}]"),
                    "ProviderNotFound",
                    format!("no Provider {name:?} in namespace {ns:?} (yet); pass-through reaches only Providers of the key's namespace"),
                ));
            }
        }
    }
}

/// The field a key's value is read from, for its diagnostics.
fn key_field(k: &api::VirtualKey) -> &'static str {
    if k.spec.secret_ref.is_some() {
        "spec.secretRef"
    } else {
        "metadata.name"
    }
}

/// What one VirtualKey compiled to on its own, before the checks across keys and routes
/// (duplicate values, names of routes and Providers).
#[derive(Debug)]
struct KeyPiece {
    /// The versions it was compiled from; `None` when they are not known (objects from files).
    stamp: Option<KeyStamp>,
    /// The key, or `None` when its value could not be read: shared with the configs compiled
    /// from it.
    config: Option<Arc<KeyConfig>>,
    /// Diagnostics of reading its value.
    read_diags: Vec<Diagnostic>,
    /// Diagnostics of its budget; an error leaves the key out.
    budget_diags: Vec<Diagnostic>,
}

/// The versions a key's piece depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
enum KeyStamp {
    /// From the API server: the key's uid and resourceVersion, and the resourceVersion of each
    /// Secret it reads (`None`: the Secret does not exist).
    Api {
        uid: String,
        version: String,
        secrets: Vec<Option<String>>,
    },
    /// From files (standalone mode's folder): the text of the key's document and of each Secret's
    /// it reads (`None`: the Secret does not exist). A `resourceVersion` written in a file says
    /// nothing about the rest of the file, so only the text counts; Secret values read from the
    /// environment are the process's, the same for every compile of one memo.
    Files {
        text: Arc<str>,
        secrets: Vec<Option<Arc<str>>>,
    },
}

/// The stamp of key `k` (whose id is `id`), or `None` when a version is not known.
fn key_stamp(m: &Manifests, k: &api::VirtualKey, id: &ObjectId) -> Option<KeyStamp> {
    let ns = id.namespace.as_str();
    let key_secret = match &k.spec.secret_ref {
        Some(sr) => sr.name.clone(),
        None => format!("{}-key", k.name_any()),
    };
    let signing = k
        .spec
        .budget
        .as_ref()
        .and_then(|b| b.webhook.as_ref())
        .and_then(|w| w.signing_secret_ref.as_ref())
        .map(|sr| sr.name.clone());
    let names: Vec<String> = std::iter::once(key_secret).chain(signing).collect();
    if let Some(src) = m.sources.get(id) {
        // A Secret that did not come from a file has no text to go by.
        let secrets = secret_versions(m, ns, &names, |name, _| {
            Some(m.sources.get(&ObjectId::new("Secret", ns, name))?.text.clone())
        })?;
        return Some(KeyStamp::Files {
            text: src.text.clone(),
            secrets,
        });
    }
    let meta = &k.metadata;
    Some(KeyStamp::Api {
        uid: meta.uid.clone()?,
        version: meta.resource_version.clone()?,
        secrets: secret_versions(m, ns, &names, |_, data| data.version.clone())?,
    })
}

/// `version` of each named Secret of namespace `ns` (`None` in the list: the Secret does not
/// exist), or `None` when a Secret that exists has no version.
fn secret_versions<T>(
    m: &Manifests,
    ns: &str,
    names: &[String],
    version: impl Fn(&str, &crate::manifests::SecretData) -> Option<T>,
) -> Option<Vec<Option<T>>> {
    names
        .iter()
        .map(|name| match m.secrets.get(&(ns.to_owned(), name.clone())) {
            None => Some(None),
            Some(data) => version(name, data).map(Some),
        })
        .collect()
}

/// What the last compile of a fleet compiled each VirtualKey to, by the versions of the key and
/// the Secrets it reads ([`compile_with`]): their resourceVersions from the API server, their
/// documents' text from files.
#[derive(Debug, Default)]
pub struct CompileMemo {
    keys: HashMap<ObjectId, KeyPiece>,
}

impl CompileMemo {
    /// Keeps a piece whose versions are known, for the next compile.
    fn keep(&mut self, id: ObjectId, piece: KeyPiece) {
        if piece.stamp.is_some() {
            self.keys.insert(id, piece);
        }
    }

    /// How many keys' pieces are kept.
    pub fn keys(&self) -> usize {
        self.keys.len()
    }
}

/// Depth of the longest fallback chain from route `i`, or the loop found.
fn fallback_depth(
    i: usize,
    routes: &[(ObjectId, RouteConfig)],
    by_name: &BTreeMap<(String, String), usize>,
    path: &mut Vec<usize>,
) -> Result<usize, Vec<String>> {
    if let Some(pos) = path.iter().position(|p| *p == i) {
        let mut cycle: Vec<String> = path[pos..].iter().map(|p| routes[*p].1.model.clone()).collect();
        cycle.push(routes[i].1.model.clone());
        return Err(cycle);
    }
    path.push(i);
    let r = &routes[i].1;
    let mut deepest = 0;
    for f in &r.fallbacks {
        if let Some(&j) = by_name.get(&(r.namespace.clone(), f.route.clone())) {
            deepest = deepest.max(1 + fallback_depth(j, routes, by_name, path)?);
        }
    }
    path.pop();
    Ok(deepest)
}

fn optional_duration(
    diags: &mut Vec<Diagnostic>,
    id: &ObjectId,
    field: &str,
    value: Option<&String>,
    ok: &mut bool,
) -> Option<u64> {
    let v = value?;
    let parsed = duration(diags, id, field, Some(v), 0);
    if parsed.is_none() {
        *ok = false;
    }
    parsed
}

/// A backend's prices: each price from the backend's `pricing`, else the Provider's entry for the
/// model, else the built-in table. No price at all when none of them knows input or output.
fn resolve_price(
    backend: Option<&api::Pricing>,
    provider: Option<&api::Pricing>,
    builtin: Option<Price>,
) -> Option<Price> {
    let pick = |f: fn(&api::Pricing) -> Option<f64>, b: Option<f64>| {
        backend.and_then(f).or_else(|| provider.and_then(f)).or(b)
    };
    let input = pick(|p| p.input, builtin.map(|i| i.input));
    let output = pick(|p| p.output, builtin.map(|i| i.output));
    if input.is_none() && output.is_none() {
        return None;
    }
    let input = input.unwrap_or(0.0);
    // A table row without a cache discount lists its input price as the cache-read price; that
    // must follow an overridden input rather than keep the table's.
    let table_cached = builtin.filter(|i| i.cached_input != i.input).map(|i| i.cached_input);
    let long_context = backend
        .and_then(|p| p.long_context.as_ref())
        .or_else(|| provider.and_then(|p| p.long_context.as_ref()))
        .map(|t| LongContextPrice {
            above_tokens: t.above_tokens,
            input: t.input,
            output: t.output,
            cached_input: t.cached_input,
            cache_write: t.cache_write,
            cache_write_1h: t.cache_write_1h,
        })
        .or(builtin.and_then(|i| i.long_context));
    Some(Price {
        input,
        output: output.unwrap_or(0.0),
        cached_input: pick(|p| p.cached_input, table_cached).unwrap_or(input),
        cache_write: pick(|p| p.cache_write, builtin.and_then(|i| i.cache_write)),
        cache_write_1h: pick(|p| p.cache_write_1h, builtin.and_then(|i| i.cache_write_1h)),
        reasoning: pick(|p| p.reasoning, builtin.and_then(|i| i.reasoning)),
        long_context,
    })
}

/// Maps the API's provider type to the config's.
pub fn provider_kind(t: api::ProviderType) -> ProviderKind {
    use api::ProviderType as T;
    match t {
        T::Openai => ProviderKind::Openai,
        T::AzureOpenai => ProviderKind::AzureOpenai,
        T::Anthropic => ProviderKind::Anthropic,
        T::Bedrock => ProviderKind::Bedrock,
        T::Vertex => ProviderKind::Vertex,
        T::Gemini => ProviderKind::Gemini,
        T::Mistral => ProviderKind::Mistral,
        T::Groq => ProviderKind::Groq,
        T::Xai => ProviderKind::Xai,
        T::Deepseek => ProviderKind::Deepseek,
        T::Cohere => ProviderKind::Cohere,
        T::Voyage => ProviderKind::Voyage,
        T::Jina => ProviderKind::Jina,
        T::Together => ProviderKind::Together,
        T::Fireworks => ProviderKind::Fireworks,
        T::Openrouter => ProviderKind::Openrouter,
        T::Ollama => ProviderKind::Ollama,
        T::Vllm => ProviderKind::Vllm,
        T::OpenaiCompatible => ProviderKind::OpenaiCompatible,
        T::Mock => ProviderKind::Mock,
    }
}

fn strategy(s: api::Strategy) -> Strategy {
    match s {
        api::Strategy::Weighted => Strategy::Weighted,
        api::Strategy::Shuffle => Strategy::Shuffle,
        api::Strategy::LeastBusy => Strategy::LeastBusy,
        api::Strategy::Latency => Strategy::Latency,
        api::Strategy::Cheapest => Strategy::Cheapest,
        api::Strategy::Usage => Strategy::Usage,
    }
}

fn retry_on(r: api::RetryOn) -> RetryOn {
    match r {
        api::RetryOn::RateLimit => RetryOn::RateLimit,
        api::RetryOn::ServerError => RetryOn::ServerError,
        api::RetryOn::Timeout => RetryOn::Timeout,
        api::RetryOn::ConnectError => RetryOn::ConnectError,
    }
}

fn trigger(t: api::FallbackTrigger) -> FallbackTrigger {
    match t {
        api::FallbackTrigger::RateLimit => FallbackTrigger::RateLimit,
        api::FallbackTrigger::ServerError => FallbackTrigger::ServerError,
        api::FallbackTrigger::Timeout => FallbackTrigger::Timeout,
        api::FallbackTrigger::ContextWindow => FallbackTrigger::ContextWindow,
        api::FallbackTrigger::ContentPolicy => FallbackTrigger::ContentPolicy,
    }
}

/// A key's or a backend's `limits` as the gateway counts them (none: unlimited).
fn limits_of(l: Option<&api::Limits>) -> LimitsConfig {
    l.map(|l| LimitsConfig {
        rpm: l.rpm,
        tpm: l.tpm,
        max_parallel: l.max_parallel,
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests;
