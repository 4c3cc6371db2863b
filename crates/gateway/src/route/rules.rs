//! Conditional rules of a route: the first rule whose conditions all hold (key labels, request
//! headers, entries of the body's `metadata`) applies. Its action restricts backends by label,
//! replaces weights or priority tiers, or sends the request to another route.
//!
//! A backend selector is a hard restriction: once one applied, it holds for the rest of the
//! request, fallback routes included, whatever fails (data residency).

use std::collections::BTreeMap;
use std::sync::Arc;

use http::HeaderMap;
use serde_json::Value;
use switchyard_config::{RouteConfig, RuleConfig};
use switchyard_providers::Json;

use super::context::{label, Ctx};
use crate::runtime::serves;
use crate::runtime::Route;

/// Most rule redirections (`action.route`) a request follows.
const MAX_REDIRECTS: usize = 3;

/// What a request may know about itself for rules.
pub struct Facts<'a> {
    /// The virtual key's labels.
    pub key_labels: &'a BTreeMap<String, String>,
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// The request body.
    pub request: &'a Json,
}

/// The first rule of a route that matches.
pub fn first_match<'r>(route: &'r RouteConfig, facts: &Facts<'_>) -> Option<&'r RuleConfig> {
    route.rules.iter().find(|r| matches(r, facts))
}

fn matches(rule: &RuleConfig, facts: &Facts<'_>) -> bool {
    rule.key_labels.iter().all(|(k, v)| facts.key_labels.get(k) == Some(v))
        && rule.headers.iter().all(|(k, v)| {
            facts
                .headers
                .get_all(k.as_str())
                .iter()
                .any(|h| h.to_str().is_ok_and(|h| h == v))
        })
        && rule
            .metadata
            .iter()
            .all(|(k, v)| match facts.request.get("metadata").and_then(|m| m.get(k)) {
                Some(Value::String(s)) => s == v,
                Some(Value::Number(n)) => n.to_string() == *v,
                Some(Value::Bool(b)) => b.to_string() == *v,
                _ => false,
            })
}

/// Whether a backend's labels include every entry of a selector.
pub fn selected(labels: &BTreeMap<String, String>, selector: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Effective weights, tiers and eligibility of a route's backends for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Weight per backend (index as in the route).
    pub weights: Vec<u32>,
    /// Priority tier per backend.
    pub priorities: Vec<u32>,
    /// Whether every selector in force admits the backend.
    pub allowed: Vec<bool>,
    /// The rule that applied, for logs.
    pub rule: Option<String>,
}

impl Plan {
    /// The plan for a route under an optional rule and the selectors in force.
    pub fn new(route: &RouteConfig, rule: Option<&RuleConfig>, selectors: &[BTreeMap<String, String>]) -> Self {
        let weights = route
            .backends
            .iter()
            .map(|b| {
                rule.and_then(|r| r.weights.as_ref())
                    .and_then(|w| w.get(&b.name).copied())
                    .unwrap_or(b.weight)
            })
            .collect();
        let priorities = route
            .backends
            .iter()
            .map(|b| {
                rule.and_then(|r| r.priorities.as_ref())
                    .and_then(|p| p.get(&b.name).copied())
                    .unwrap_or(b.priority)
            })
            .collect();
        let allowed = route
            .backends
            .iter()
            .map(|b| selectors.iter().all(|s| selected(&b.labels, s)))
            .collect();
        Self {
            weights,
            priorities,
            allowed,
            rule: rule.map(|r| r.name.clone()),
        }
    }
}

impl Ctx<'_> {
    /// Applies the route's first matching rule: its selector for the rest of the request, and
    /// either a redirect to another route or its weights and tiers.
    pub(super) fn resolve(&self, mut route: Arc<Route>) -> (Arc<Route>, Plan) {
        self.visit(&route);
        let facts = Facts {
            key_labels: self.key_labels,
            headers: self.headers,
            request: self.request,
        };
        for _ in 0..=MAX_REDIRECTS {
            let Some(rule) = first_match(&route.config, &facts) else {
                break;
            };
            if let Some(sel) = &rule.backend_selector {
                self.selectors
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(sel.clone());
            }
            let target = rule
                .route
                .as_deref()
                .and_then(|t| self.rt.route(&route.config.namespace, t));
            match target {
                // A target the key may not use is ignored like a missing one: the request stays.
                Some(next)
                    if !self.was_visited(next)
                        && serves(next.config.mode, self.op)
                        && self.key.allows(&next.config) =>
                {
                    tracing::debug!(rule = %rule.name, to = %label(&next.config), "rule sends the request to another route");
                    let next = next.clone();
                    self.visit(&next);
                    route = next;
                }
                _ => {
                    let plan = {
                        let sel = self.selectors.lock().unwrap_or_else(|p| p.into_inner());
                        Plan::new(&route.config, Some(rule), &sel)
                    };
                    return (route, plan);
                }
            }
        }
        let plan = {
            let sel = self.selectors.lock().unwrap_or_else(|p| p.into_inner());
            Plan::new(&route.config, None, &sel)
        };
        (route, plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::testing::{backend, route_config};

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn rule(name: &str) -> RuleConfig {
        RuleConfig {
            name: name.into(),
            key_labels: BTreeMap::new(),
            headers: BTreeMap::new(),
            metadata: BTreeMap::new(),
            backend_selector: None,
            weights: None,
            priorities: None,
            route: None,
        }
    }

    #[test]
    fn first_matching_rule_applies() {
        let mut r = route_config("r", vec![backend("azure", "m", 1, 1), backend("bedrock", "m", 1, 0)]);
        r.rules = vec![
            RuleConfig {
                key_labels: labels(&[("tier", "premium")]),
                priorities: Some([("azure".to_owned(), 0), ("bedrock".to_owned(), 1)].into()),
                ..rule("premium")
            },
            RuleConfig {
                headers: labels(&[("x-team", "search")]),
                metadata: labels(&[("feature", "summary"), ("version", "2")]),
                weights: Some([("azure".to_owned(), 0)].into()),
                ..rule("search")
            },
        ];
        let headers = HeaderMap::new();
        let request = Json::new();
        let premium = labels(&[("tier", "premium"), ("team", "x")]);
        let facts = Facts {
            key_labels: &premium,
            headers: &headers,
            request: &request,
        };
        let m = first_match(&r, &facts);
        assert_eq!(m.map(|r| r.name.as_str()), Some("premium"));
        let plan = Plan::new(&r, m, &[]);
        assert_eq!(plan.priorities, vec![0, 1]);
        assert_eq!(plan.weights, vec![1, 1]);

        let none = BTreeMap::new();
        let mut headers = HeaderMap::new();
        headers.insert("x-team", http::HeaderValue::from_static("search"));
        let request: Json =
            serde_json::from_str(r#"{"metadata":{"feature":"summary","version":2}}"#).unwrap_or_default();
        let facts = Facts {
            key_labels: &none,
            headers: &headers,
            request: &request,
        };
        let m = first_match(&r, &facts);
        assert_eq!(m.map(|r| r.name.as_str()), Some("search"));
        assert_eq!(Plan::new(&r, m, &[]).weights, vec![0, 1]);

        let request = Json::new();
        let facts = Facts {
            key_labels: &none,
            headers: &headers,
            request: &request,
        };
        assert!(first_match(&r, &facts).is_none(), "metadata must match too");
    }

    #[test]
    fn selectors_restrict_backends() {
        let mut eu = backend("eu", "m", 1, 0);
        eu.labels = labels(&[("region", "eu-west-1"), ("residency", "eu")]);
        let us = backend("us", "m", 1, 0);
        let r = route_config("r", vec![eu, us]);
        let plan = Plan::new(&r, None, &[labels(&[("residency", "eu")])]);
        assert_eq!(plan.allowed, vec![true, false]);
        assert_eq!(Plan::new(&r, None, &[]).allowed, vec![true, true]);
    }
}

/// Rules across a whole request: targets, redirects and selectors through fallbacks.
#[cfg(test)]
mod scenarios {
    use crate::route::failure::ALL_TRIGGERS;
    use crate::route::testing::*;

    // Rules.

    #[tokio::test(start_paused = true)]
    async fn premium_keys_prefer_azure_and_others_bedrock() {
        let mut azure = backend("azure", "gpt-4o-azure", 1, 1);
        azure.provider = "default/azure".into();
        let mut bedrock = backend("bedrock", "claude-bedrock", 1, 0);
        bedrock.provider = "default/bedrock".into();
        let mut r = route_config("chat", vec![azure, bedrock]);
        r.rules = vec![RuleConfig {
            name: "premium-prefers-azure".into(),
            key_labels: labels(&[("tier", "premium")]),
            headers: BTreeMap::new(),
            metadata: BTreeMap::new(),
            backend_selector: None,
            weights: None,
            priorities: Some([("azure".to_owned(), 0), ("bedrock".to_owned(), 1)].into()),
            route: None,
        }];
        let h = Harness::new(vec![r]);
        let none = HeaderMap::new();
        let req = chat("chat", "hi");
        for _ in 0..5 {
            let (_, o) = h
                .call_as(&key(&[("tier", "premium")]), &none, &req, false)
                .await
                .unwrap_or_else(|e| unreachable!("{e}"));
            assert_eq!(&*o.backend, "azure");
            let (_, o) = h
                .call_as(&key(&[("tier", "standard")]), &none, &req, false)
                .await
                .unwrap_or_else(|e| unreachable!("{e}"));
            assert_eq!(&*o.backend, "bedrock");
        }
        // Azure down: premium keys still get an answer, from Bedrock.
        h.fake.script("gpt-4o-azure", fails(ErrorKind::Server));
        let (_, o) = h
            .call_as(&key(&[("tier", "premium")]), &none, &req, false)
            .await
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!((&*o.backend, o.attempts), ("bedrock", 2));
    }

    #[tokio::test(start_paused = true)]
    async fn headers_and_metadata_send_to_another_route() {
        let mut r = route_config("chat", vec![backend("a", "default-model", 1, 0)]);
        r.rules = vec![RuleConfig {
            name: "batch-to-cheap".into(),
            key_labels: BTreeMap::new(),
            headers: labels(&[("x-priority", "batch")]),
            metadata: labels(&[("team", "research")]),
            backend_selector: None,
            weights: None,
            priorities: None,
            route: Some("cheap".into()),
        }];
        let h = Harness::new(vec![r, route_config("cheap", vec![backend("c", "cheap-model", 1, 0)])]);
        let mut headers = HeaderMap::new();
        headers.insert("x-priority", http::HeaderValue::from_static("batch"));
        let mut req = chat("chat", "hi");
        req.insert("metadata".into(), serde_json::json!({"team": "research"}));
        let (_, o) = h
            .call_as(&key(&[]), &headers, &req, false)
            .await
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!((&*o.route, &*o.backend, o.fallback_depth), ("default/cheap", "c", 0));
        let (_, o) = h
            .call_as(&key(&[]), &HeaderMap::new(), &req, false)
            .await
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(&*o.route, "default/chat");
    }

    /// A rule that sends the request to a route the key may not use is ignored: the requested
    /// route serves.
    #[tokio::test(start_paused = true)]
    async fn rule_targets_respect_allowed_routes() {
        let mut r = route_config("chat", vec![backend("a", "default-model", 1, 0)]);
        r.rules = vec![RuleConfig {
            name: "to-premium".into(),
            key_labels: BTreeMap::new(),
            headers: BTreeMap::new(),
            metadata: BTreeMap::new(),
            backend_selector: None,
            weights: None,
            priorities: None,
            route: Some("premium".into()),
        }];
        let h = Harness::new(vec![
            r,
            route_config("premium", vec![backend("p", "premium-model", 1, 0)]),
        ]);
        let req = chat("chat", "hi");
        let mut k = key(&[]);
        let (_, o) = h
            .call_as(&k, &HeaderMap::new(), &req, false)
            .await
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(&*o.route, "default/premium");
        Arc::make_mut(&mut k.config).allowed_routes = vec!["chat".into()];
        let (_, o) = h
            .call_as(&k, &HeaderMap::new(), &req, false)
            .await
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!((&*o.route, &*o.backend), ("default/chat", "a"));
        assert_eq!(h.fake.calls(), vec!["premium-model", "default-model"]);
    }

    /// Whatever fails, a key labelled region=eu never reaches a backend outside the EU: random
    /// routes, backends, fallbacks, redirects and failures, 300 seeds.
    #[tokio::test(start_paused = true)]
    async fn an_eu_key_never_reaches_a_non_eu_backend() {
        let mut served_eu = 0;
        for seed in 0..300u64 {
            let dice = Dice::new(seed);
            let n_routes = 2 + dice.below(4) as usize;
            let mut routes = Vec::new();
            let mut region_of: HashMap<String, bool> = HashMap::new();
            let mut scripts: Vec<(String, Script)> = Vec::new();
            for ri in 0..n_routes {
                let n_backends = 1 + dice.below(4) as usize;
                let mut backends = Vec::new();
                for bi in 0..n_backends {
                    let model = format!("m{ri}-{bi}");
                    let eu = dice.below(2) == 0;
                    let mut b = backend(&format!("b{bi}"), &model, dice.below(3) as u32, dice.below(2) as u32);
                    b.provider = if eu { "default/eu".into() } else { "default/us".into() };
                    b.labels = labels(&[
                        ("region", if eu { "eu-west-1" } else { "us-east-1" }),
                        ("residency", if eu { "eu" } else { "us" }),
                    ]);
                    if dice.below(4) == 0 {
                        b.context_window = Some(1 + dice.below(20) as u32);
                    }
                    region_of.insert(model.clone(), eu);
                    let script = match dice.below(6) {
                        0 => Script::default(),
                        1 => fails(ErrorKind::Server),
                        2 => {
                            let mut e = error(ErrorKind::RateLimit);
                            e.retry_after = Some(Duration::from_millis(dice.below(3_000)));
                            Script {
                                always_fail: true,
                                error: Some(e),
                                ..Script::default()
                            }
                        }
                        3 => slow(Duration::from_secs(60)),
                        4 => Script {
                            fail_first: 1 + dice.below(3) as u32,
                            ..Script::default()
                        },
                        _ => fails(ErrorKind::ContextWindow),
                    };
                    scripts.push((model, script));
                    backends.push(b);
                }
                let mut r = route_config(&format!("r{ri}"), backends);
                r.strategy = [
                    Strategy::Weighted,
                    Strategy::Shuffle,
                    Strategy::LeastBusy,
                    Strategy::Latency,
                    Strategy::Cheapest,
                    Strategy::Usage,
                ][dice.below(6) as usize];
                r.retries = retries(dice.below(3) as u32, 10);
                r.timeouts.per_try_ms = Some(1_000);
                if dice.below(3) == 0 {
                    r.hedge_after_ms = Some(100);
                }
                // Fallbacks and redirects anywhere, loops included: the runtime must cope.
                for _ in 0..dice.below(3) {
                    r.fallbacks
                        .push(fallback(&format!("r{}", dice.below(n_routes as u64)), &ALL_TRIGGERS));
                }
                if ri > 0 && dice.below(3) == 0 {
                    r.rules.push(RuleConfig {
                        name: "redirect".into(),
                        key_labels: BTreeMap::new(),
                        headers: BTreeMap::new(),
                        metadata: BTreeMap::new(),
                        backend_selector: None,
                        weights: Some([("b0".to_owned(), 5)].into()),
                        priorities: None,
                        route: (dice.below(2) == 0).then(|| format!("r{}", dice.below(n_routes as u64))),
                    });
                }
                routes.push(r);
            }
            // Only the requested route carries the residency rule.
            routes[0].rules.insert(
                0,
                RuleConfig {
                    name: "eu-data-stays-in-eu".into(),
                    key_labels: labels(&[("region", "eu")]),
                    headers: BTreeMap::new(),
                    metadata: BTreeMap::new(),
                    backend_selector: Some(labels(&[("residency", "eu")])),
                    weights: None,
                    priorities: None,
                    route: None,
                },
            );
            let h = Harness::new(routes);
            for (m, s) in scripts {
                h.fake.script(&m, s);
            }
            let eu_key = key(&[("region", "eu"), ("team", "x")]);
            let words = "word ".repeat(dice.below(40) as usize + 1);
            for _ in 0..3 {
                let r = h
                    .call_as(&eu_key, &HeaderMap::new(), &chat("r0", &words), dice.below(2) == 0)
                    .await;
                if let Ok((up, o)) = r {
                    let _ = drain(up).await;
                    assert!(o.provider.id == "default/eu", "seed {seed}: served by {}", o.backend);
                    served_eu += 1;
                }
                tokio::time::advance(Duration::from_millis(dice.below(5_000))).await;
            }
            for m in h.fake.calls() {
                assert_eq!(region_of.get(&m), Some(&true), "seed {seed}: the EU key reached {m}");
            }
        }
        assert!(served_eu > 100, "{served_eu}");
    }
}
