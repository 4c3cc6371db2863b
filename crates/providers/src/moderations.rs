//! `/v1/moderations`: OpenAI's request and response shape, which clients send and get back.
//!
//! OpenAI and OpenAI-compatible servers take the request as it is (the OpenAI adapter passes it
//! through). Mistral's `/v1/moderations` takes the same `model` and `input` and answers with its
//! own category names and no `flagged`: [`mistral_response`] adds `flagged` (any category true)
//! and the OpenAI name beside each Mistral category that has one, keeping Mistral's own names
//! too, so nothing it said is lost. Other providers have no moderation API.
//!
//! References: OpenAI API reference "Moderations" (create moderation, the moderation object);
//! Mistral API reference "Moderations" (`POST /v1/moderations`, `ModerationObject`).

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::wire::unreadable;
use crate::{ProviderError, Translated, Usage};

/// Mistral's categories that mean the same as one of OpenAI's.
const MISTRAL_TO_OPENAI: [(&str, &str); 5] = [
    ("sexual", "sexual"),
    ("hate_and_discrimination", "hate"),
    ("violence_and_threats", "violence"),
    ("selfharm", "self-harm"),
    ("dangerous_and_criminal_content", "illicit"),
];

/// A Mistral moderation response in OpenAI's shape.
pub fn mistral_response(body: &[u8]) -> Result<Translated, ProviderError> {
    let mut v: Map<String, Value> = serde_json::from_slice(body).map_err(unreadable)?;
    let usage = v.get("usage").map(|u| Usage {
        prompt_tokens: u["prompt_tokens"].as_u64().unwrap_or(0),
        ..Usage::default()
    });
    let Some(Value::Array(results)) = v.get_mut("results") else {
        return Err(unreadable("a moderation response without `results`"));
    };
    for r in results.iter_mut().filter_map(Value::as_object_mut) {
        for field in ["categories", "category_scores"] {
            if let Some(Value::Object(m)) = r.get_mut(field) {
                for (theirs, ours) in MISTRAL_TO_OPENAI {
                    if let Some(x) = m.get(theirs).cloned() {
                        m.entry(ours).or_insert(x);
                    }
                }
            }
        }
        let flagged = r
            .get("categories")
            .and_then(Value::as_object)
            .is_some_and(|m| m.values().any(|x| x == &Value::Bool(true)));
        r.insert("flagged".into(), flagged.into());
    }
    Ok(Translated {
        body: Bytes::from(Value::Object(v).to_string()),
        usage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mistral's example response (API reference, "Moderations"), one category set true.
    #[test]
    fn mistral_results_get_flagged_and_openai_names() {
        let body = br#"{"id":"mod-e5cc70bb28c444948073e77776eb30ef","model":"mistral-moderation-latest",
            "results":[{"categories":{"sexual":false,"hate_and_discrimination":false,"violence_and_threats":true,
            "dangerous_and_criminal_content":false,"selfharm":false,"health":false,"financial":false,"law":false,"pii":false},
            "category_scores":{"sexual":0.0001,"hate_and_discrimination":0.0002,"violence_and_threats":0.97,
            "dangerous_and_criminal_content":0.001,"selfharm":0.0001,"health":0.0,"financial":0.0,"law":0.0,"pii":0.0}},
            {"categories":{"sexual":false,"pii":false},"category_scores":{"sexual":0.01,"pii":0.0}}],
            "usage":{"prompt_tokens":12,"total_tokens":12,"completion_tokens":0}}"#;
        let t = mistral_response(body).unwrap_or_else(|e| panic!("{e}"));
        let v: Value = serde_json::from_slice(&t.body).unwrap_or_default();
        let r = &v["results"];
        assert_eq!(
            (r[0]["flagged"].as_bool(), r[1]["flagged"].as_bool()),
            (Some(true), Some(false))
        );
        assert_eq!(r[0]["categories"]["violence"], true);
        assert_eq!(r[0]["categories"]["violence_and_threats"], true, "Mistral's names stay");
        assert_eq!(r[0]["category_scores"]["violence"], 0.97);
        assert_eq!(r[0]["categories"]["pii"], false);
        assert_eq!(v["model"], "mistral-moderation-latest");
        assert_eq!(t.usage.map(|u| u.prompt_tokens), Some(12));
        assert!(mistral_response(b"{}").is_err());
    }
}
