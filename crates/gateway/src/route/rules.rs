//! Conditional rules of a route: the first rule whose conditions all hold (key labels, request
//! headers, entries of the body's `metadata`) applies. Its action restricts backends by label,
//! replaces weights or priority tiers, or sends the request to another route.
//!
//! A backend selector is a hard restriction: once one applied, it holds for the rest of the
//! request, fallback routes included, whatever fails (data residency).

use std::collections::BTreeMap;

use http::HeaderMap;
use serde_json::Value;
use switchyard_config::{RouteConfig, RuleConfig};
use switchyard_providers::Json;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::tests::{backend, route_config};

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
