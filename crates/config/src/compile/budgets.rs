//! `Budget` resources: which compiled keys each covers. A Budget covers keys of its own
//! namespace only, so a Budget can neither cap nor read the spend of another tenant's keys.

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::ResourceExt;
use switchyard_api as api;

use super::{id_of, ns_of, selector_matches, Compiler, Fleet};
use crate::diagnostics::Diagnostic;
use crate::types::*;

/// Operators a label selector may use.
const OPERATORS: [&str; 4] = ["In", "NotIn", "Exists", "DoesNotExist"];

impl Compiler<'_> {
    /// The Budgets that cover at least one of `keys`, each with the names of the keys it covers.
    pub(super) fn budgets(&mut self, fleet: &Fleet<'_>, keys: &[Arc<KeyConfig>]) -> Vec<TeamBudgetConfig> {
        let m = self.m;
        // A key's labels as a selector sees them: `metadata.labels`, then `spec.labels` over them.
        let labels: BTreeMap<(String, String), BTreeMap<String, String>> = m
            .keys
            .iter()
            .map(|k| {
                let mut l = k.labels().clone();
                l.extend(k.spec.labels.iter().map(|(a, b)| (a.clone(), b.clone())));
                ((ns_of(k), k.name_any()), l)
            })
            .collect();
        let mut list: Vec<&api::TeamBudget> = m.budgets.iter().collect();
        list.sort_by_key(|b| (ns_of(*b), b.name_any()));
        let mut out = Vec::new();
        for b in list {
            let id = id_of(b);
            let ns = ns_of(b);
            let s = &b.spec;
            if let Some(sel) = &s.selector {
                let bad = sel.match_expressions.iter().flatten().enumerate().find(|(_, e)| {
                    let has_values = e.values.as_ref().is_some_and(|v| !v.is_empty());
                    !OPERATORS.contains(&e.operator.as_str())
                        || (matches!(e.operator.as_str(), "In" | "NotIn") != has_values)
                });
                if let Some((i, e)) = bad {
                    self.diags.push(Diagnostic::error(
                        &id,
                        &format!("spec.selector.matchExpressions[{i}]"),
                        "InvalidSelector",
                        format!(
                            "operator {:?} with {} value(s): use In or NotIn with values, Exists or DoesNotExist without",
                            e.operator,
                            e.values.as_ref().map_or(0, Vec::len)
                        ),
                    ));
                    continue;
                }
            }
            let covered: Vec<String> = keys
                .iter()
                .filter(|k| k.namespace == ns)
                .filter(|k| {
                    let empty = BTreeMap::new();
                    let l = labels.get(&(k.namespace.clone(), k.name.clone())).unwrap_or(&empty);
                    s.selector.as_ref().is_none_or(|sel| selector_matches(sel, l))
                })
                .map(|k| k.name.clone())
                .collect();
            if covered.is_empty() {
                if fleet.admits(m, |g| &g.keys, &ns) {
                    self.diags.push(Diagnostic::warning(
                        &id,
                        "spec.selector",
                        "NoKeys",
                        "selects no VirtualKey of its namespace that this gateway serves",
                    ));
                }
                continue;
            }
            let webhook = match &s.webhook {
                None => None,
                Some(w) => {
                    let signing_secret = match &w.signing_secret_ref {
                        None => Some(None),
                        Some(sr) => self
                            .secret_value(&id, "spec.webhook.signingSecretRef", &ns, sr, "secret")
                            .map(|v| Some(SecretString::new(v))),
                    };
                    // Without its signing secret the webhook is left out; the budget still holds.
                    signing_secret.map(|signing_secret| WebhookConfig {
                        url: w.url.clone(),
                        signing_secret,
                    })
                }
            };
            out.push(TeamBudgetConfig {
                namespace: ns,
                name: b.name_any(),
                budget: BudgetConfig {
                    max_spend: s.max_spend,
                    period: period(s.period),
                    action: action(s.action),
                    alert_thresholds: thresholds(&s.alert_thresholds),
                    webhook,
                },
                keys: covered,
            });
        }
        out
    }
}

/// Alert thresholds, sorted, default 50, 80 and 100 percent.
pub(super) fn thresholds(given: &[u32]) -> Vec<u32> {
    let mut t = if given.is_empty() {
        vec![50, 80, 100]
    } else {
        given.to_vec()
    };
    t.sort_unstable();
    t.dedup();
    t
}

pub(super) fn period(p: api::BudgetPeriod) -> BudgetPeriod {
    match p {
        api::BudgetPeriod::Daily => BudgetPeriod::Daily,
        api::BudgetPeriod::Weekly => BudgetPeriod::Weekly,
        api::BudgetPeriod::Monthly => BudgetPeriod::Monthly,
        api::BudgetPeriod::Total => BudgetPeriod::Total,
    }
}

pub(super) fn action(a: api::BudgetAction) -> BudgetAction {
    match a {
        api::BudgetAction::Block => BudgetAction::Block,
        api::BudgetAction::Alert => BudgetAction::Alert,
    }
}
