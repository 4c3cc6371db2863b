//! The built-in model table (`data/models.json`): prices, context windows and output limits.
//!
//! Lookup is by exact upstream model name, then with a Bedrock-style region prefix
//! (`us.`, `eu.`...) removed, then with a date or version suffix removed, so that
//! `claude-3-5-sonnet-latest` style names still find their family when listed.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;

/// One model's entry.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelInfo {
    /// USD per million prompt tokens.
    pub input: f64,
    /// USD per million completion tokens.
    pub output: f64,
    /// USD per million cached prompt tokens.
    pub cached_input: f64,
    /// Context window in tokens.
    pub context_window: u32,
    /// Largest completion in tokens.
    pub max_output: u32,
}

#[derive(Deserialize)]
struct Table {
    models: BTreeMap<String, ModelInfo>,
}

fn table() -> &'static BTreeMap<String, ModelInfo> {
    static TABLE: OnceLock<BTreeMap<String, ModelInfo>> = OnceLock::new();
    TABLE.get_or_init(|| {
        serde_json::from_str::<Table>(include_str!("../data/models.json"))
            .map(|t| t.models)
            .unwrap_or_default()
    })
}

/// The built-in entry for an upstream model name.
pub fn lookup(model: &str) -> Option<ModelInfo> {
    let t = table();
    if let Some(info) = t.get(model) {
        return Some(*info);
    }
    // Bedrock cross-region inference profiles: `us.anthropic.claude...`.
    if let Some((prefix, rest)) = model.split_once('.') {
        if prefix.len() == 2 {
            if let Some(info) = t.get(rest) {
                return Some(*info);
            }
        }
    }
    // Azure deployments and dated snapshots: the longest table name that prefixes the model.
    t.iter()
        .filter(|(name, _)| model.starts_with(name.as_str()))
        .max_by_key(|(name, _)| name.len())
        .map(|(_, info)| *info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_parses_and_finds_models() {
        assert!(table().len() > 30);
        assert_eq!(lookup("gpt-4o").map(|i| i.context_window), Some(128_000));
        assert_eq!(lookup("gpt-4o-2024-08-06").map(|i| i.input), Some(2.5));
        assert_eq!(
            lookup("us.anthropic.claude-3-haiku-20240307-v1:0").map(|i| i.output),
            Some(1.25)
        );
        assert_eq!(lookup("unknown-model"), None);
    }
}
