//! The client's request, parsed once: the fields the gateway decides on, typed, and the body
//! itself kept whole as a JSON map (`raw`), in OpenAI's shape whatever format the client spoke
//! (its codec converted it, see `crate::ingress`).
//!
//! Only what every stage reads is lifted out here; everything else stays in `raw` untouched,
//! so nothing a client sends is dropped on its way to the provider. This module does no I/O
//! and knows nothing of routes or keys.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use bytes::Bytes;
use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::Value;
use switchyard_providers::{Json, Operation, Original};

use crate::error::GatewayError;
use crate::estimate::Prompt;

/// One client request.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// The endpoint it came in on.
    pub op: Operation,
    /// `model`, as the client sent it (a route name or alias, maybe `namespace/name`).
    pub model: String,
    /// `stream`, never for embeddings, moderations or rerank.
    pub stream: bool,
    /// `stream_options.include_usage`: the client wants the usage-only chunk of a stream.
    pub include_usage: bool,
    /// The completion bound the client set: `max_completion_tokens`, `max_tokens` or
    /// `max_output_tokens`, the first present.
    pub max_tokens: Option<u64>,
    /// The whole body (OpenAI-shaped), `model` and `stream` included.
    pub raw: Json,
    /// The client's bytes of `raw`, when it came in OpenAI's format with one `model` and no
    /// field twice: an OpenAI-format upstream gets them with the model replaced and fields it
    /// needs appended (`Adapter::build_from`). Dropped once the upstream answered.
    pub original: Option<Original>,
}

impl Request {
    /// An OpenAI-format body for `op`.
    pub fn parse(op: Operation, bytes: &[u8]) -> Result<Self, GatewayError> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let (raw, model) = (&mut de)
            .deserialize_map(Top { base: bytes })
            .and_then(|top| de.end().map(|()| top))
            .map_err(|e| {
                GatewayError::bad_request(
                    format!("We could not parse the JSON body of your request ({e}). The body must be a JSON object."),
                    None,
                )
            })?;
        let mut request = Self::from_json(op, raw)?;
        request.original = model.and_then(|m| Original::new(Bytes::copy_from_slice(bytes), m));
        Ok(request)
    }

    /// The typed view of an OpenAI-shaped body, once it has what `op` requires.
    pub fn from_json(op: Operation, raw: Json) -> Result<Self, GatewayError> {
        let model = match raw.get("model") {
            Some(Value::String(m)) if !m.is_empty() => m.clone(),
            _ => {
                return Err(GatewayError::bad_request(
                    "you must provide a model parameter",
                    Some("model"),
                ))
            }
        };
        require(op, &raw)?;
        let streams = matches!(op, Operation::Chat | Operation::Completions | Operation::Responses);
        let stream = streams && raw.get("stream").and_then(Value::as_bool).unwrap_or(false);
        let include_usage = raw
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let max_tokens = ["max_completion_tokens", "max_tokens", "max_output_tokens"]
            .iter()
            .find_map(|f| raw.get(*f).and_then(Value::as_u64));
        Ok(Self {
            op,
            model,
            stream,
            include_usage,
            max_tokens,
            raw,
            original: None,
        })
    }

    /// The prompt as JSON text (`messages`, `input` or `prompt`), for routes that log prompts.
    pub fn prompt(&self) -> String {
        self.raw
            .get("messages")
            .or_else(|| self.raw.get("input"))
            .or_else(|| self.raw.get("prompt"))
            .map(Value::to_string)
            .unwrap_or_default()
    }
}

/// A JSON object read into a [`Json`] map, with where its `model` value sits in `base` (the
/// bytes read): `None` when it has no `model`, or a field twice (the map keeps the last value of
/// a repeated field, which the bytes would not say).
struct Top<'a> {
    base: &'a [u8],
}

impl<'de> Visitor<'de> for Top<'de> {
    type Value = (Json, Option<Range<usize>>);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut raw = Json::new();
        let mut model = None;
        let mut fields = 0usize;
        while let Some(key) = map.next_key::<String>()? {
            fields += 1;
            if key == "model" {
                let text = map.next_value::<&RawValue>()?.get();
                let start = (text.as_ptr() as usize).wrapping_sub(self.base.as_ptr() as usize);
                model = Some(start..start + text.len());
                let value: Value = serde_json::from_str(text).map_err(serde::de::Error::custom)?;
                raw.insert(key, value);
            } else {
                let value: Value = map.next_value()?;
                raw.insert(key, value);
            }
        }
        let model = model.filter(|_| fields == raw.len());
        Ok((raw, model))
    }
}

/// An OpenAI-shaped body's outline: its `model` and how many prompt items it holds, read in one
/// pass that builds nothing. Enough to refuse a prompt no backend could take before the body
/// becomes a tree: 100,000 tiny messages are 3 MiB of JSON and ~80 MiB of `Value`s. Anything it
/// cannot read (not JSON, a duplicate field) is left to [`Request::parse`] to name.
#[derive(Deserialize)]
pub struct Outline<'a> {
    /// `model`, as the client sent it.
    #[serde(borrow)]
    pub model: Option<Cow<'a, str>>,
    #[serde(default)]
    messages: Items,
    #[serde(default)]
    input: Items,
    #[serde(default)]
    prompt: Items,
    #[serde(default)]
    system: Items,
    #[serde(default)]
    tools: Items,
    #[serde(default)]
    functions: Items,
    #[serde(default)]
    instructions: Items,
}

impl<'a> Outline<'a> {
    /// The outline of `body`, if it is a JSON object.
    pub fn read(body: &'a [u8]) -> Option<Self> {
        serde_json::from_slice(body).ok()
    }

    /// The prompt as far as the outline knows it: its items, counted as [`Prompt::measure`]
    /// counts them (so its [`Prompt::lower_bound`] holds for the parsed request).
    pub fn prompt(&self) -> Prompt {
        let items = [
            &self.messages,
            &self.input,
            &self.prompt,
            &self.system,
            &self.tools,
            &self.functions,
            &self.instructions,
        ];
        Prompt::of_items(items.iter().fold(0u64, |n, i| n.saturating_add(i.0)))
    }
}

/// A prompt field's items: an array's length, 1 for any other value, 0 when absent.
#[derive(Default)]
struct Items(u64);

impl<'de> Deserialize<'de> for Items {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ItemsVisitor)
    }
}

struct ItemsVisitor;

impl<'de> Visitor<'de> for ItemsVisitor {
    type Value = Items;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Items, A::Error> {
        let mut n = 0u64;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            n += 1;
        }
        Ok(Items(n))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Items, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Items(1))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Items, E> {
        Ok(Items(1))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Items, E> {
        Ok(Items(1))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Items, E> {
        Ok(Items(1))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Items, E> {
        Ok(Items(1))
    }

    fn visit_str<E>(self, _: &str) -> Result<Items, E> {
        Ok(Items(1))
    }

    fn visit_unit<E>(self) -> Result<Items, E> {
        Ok(Items(1))
    }
}

/// Whether a JSON body holds more than `cap` values (every string, number, boolean, null, array
/// and object counts one), read in one pass that builds nothing and stops at the first value
/// over. A parsed value takes 30-350 bytes, so the count bounds what a parse would build. A body
/// that is not JSON is not over (the parse names what is wrong with it).
pub fn values_over(body: &[u8], cap: u64) -> bool {
    let mut left = cap;
    let mut de = serde_json::Deserializer::from_slice(body);
    let counted = serde::de::DeserializeSeed::deserialize(Values(&mut left), &mut de);
    matches!(counted, Err(e) if e.to_string().starts_with(OVER))
}

/// The error that ends a count over its cap.
const OVER: &str = "more values than the cap";

/// Counts values down from what is left; errs when none is.
struct Values<'a>(&'a mut u64);

impl Values<'_> {
    fn take<E: serde::de::Error>(&mut self) -> Result<(), E> {
        match self.0.checked_sub(1) {
            Some(left) => {
                *self.0 = left;
                Ok(())
            }
            None => Err(E::custom(OVER)),
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Values<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Values<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        self.take()?;
        while seq.next_element_seed(Values(self.0))?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        self.take()?;
        while map.next_key::<IgnoredAny>()?.is_some() {
            map.next_value_seed(Values(self.0))?;
        }
        Ok(())
    }

    fn visit_bool<E: serde::de::Error>(mut self, _: bool) -> Result<(), E> {
        self.take()
    }

    fn visit_i64<E: serde::de::Error>(mut self, _: i64) -> Result<(), E> {
        self.take()
    }

    fn visit_u64<E: serde::de::Error>(mut self, _: u64) -> Result<(), E> {
        self.take()
    }

    fn visit_f64<E: serde::de::Error>(mut self, _: f64) -> Result<(), E> {
        self.take()
    }

    fn visit_str<E: serde::de::Error>(mut self, _: &str) -> Result<(), E> {
        self.take()
    }

    fn visit_unit<E: serde::de::Error>(mut self) -> Result<(), E> {
        self.take()
    }
}

/// The fields an endpoint cannot do without, with OpenAI's messages when one is missing.
fn require(op: Operation, raw: &Json) -> Result<(), GatewayError> {
    let field = match op {
        Operation::Chat => {
            return match raw.get("messages") {
                Some(Value::Array(m)) if !m.is_empty() => Ok(()),
                Some(Value::Array(_)) => Err(GatewayError::bad_request(
                    "'messages' must contain at least one message",
                    Some("messages"),
                )),
                _ => Err(GatewayError::bad_request(
                    "'messages' is a required property",
                    Some("messages"),
                )),
            }
        }
        Operation::Embeddings | Operation::Responses | Operation::Moderations | Operation::Speech => "input",
        // Multipart uploads: the `audio` module reads them, not this parser.
        Operation::Transcriptions | Operation::Translations => "file",
        Operation::Images if raw.get("stream").and_then(Value::as_bool) == Some(true) => {
            return Err(GatewayError::bad_request(
                "streamed image generation (`stream: true`) is not supported; ask for the whole response",
                Some("stream"),
            ))
        }
        Operation::Completions | Operation::Images => "prompt",
        Operation::Rerank => {
            return match (raw.get("query"), raw.get("documents")) {
                (Some(Value::String(_)), Some(Value::Array(_))) => Ok(()),
                (Some(Value::String(_)), _) => Err(GatewayError::bad_request(
                    "'documents' is a required property and must be an array",
                    Some("documents"),
                )),
                _ => Err(GatewayError::bad_request(
                    "'query' is a required property and must be a string",
                    Some("query"),
                )),
            }
        }
    };
    if raw.contains_key(field) {
        Ok(())
    } else {
        Err(GatewayError::bad_request(
            format!("'{field}' is a required property"),
            Some(field),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(op: Operation, body: &str) -> Result<Request, GatewayError> {
        Request::parse(op, body.as_bytes())
    }

    #[test]
    fn the_typed_view_holds_what_the_stages_decide_on() {
        let r = parse(
            Operation::Chat,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,
                "stream_options":{"include_usage":true},"max_tokens":9,"max_completion_tokens":7}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (r.model.as_str(), r.stream, r.include_usage, r.max_tokens),
            ("m", true, true, Some(7))
        );
        assert_eq!(r.raw.len(), 6, "the body is kept whole");
        assert_eq!(Some(r.prompt()), r.raw.get("messages").map(Value::to_string));
        // Embeddings never stream.
        let e = parse(Operation::Embeddings, r#"{"model":"m","input":"x","stream":true}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!e.stream && !e.include_usage && e.max_tokens.is_none());
    }

    #[test]
    fn an_outline_counts_prompt_items_as_the_measure_does() {
        let bodies = [
            r#"{"model":"m","messages":[{"role":"user","content":"hi"},{"role":"user","content":[1,2]}]}"#,
            r#"{"model":"m\u0021","input":["a","b",[1,2,3]],"instructions":"x","tools":null,"n":{"a":[1]}}"#,
            r#"{"prompt":{"a":1},"system":3,"functions":[]}"#,
        ];
        for body in bodies {
            let outline = Outline::read(body.as_bytes()).unwrap_or_else(|| panic!("{body}"));
            let raw: Json = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                outline.prompt().lower_bound(),
                Prompt::measure(&raw).lower_bound(),
                "{body}"
            );
            assert_eq!(outline.model.as_deref(), raw.get("model").and_then(Value::as_str));
        }
        assert!(Outline::read(b"[1]").is_none());
        assert!(Outline::read(br#"{"model":"m","model":"n"}"#).is_none());
    }

    #[test]
    fn values_are_counted_to_the_cap() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"n":1,"x":[[],{},null,true,1.5]}"#;
        // The object, model, messages, one message and its two strings, n, x and its five.
        assert!(!values_over(body, 13));
        assert!(values_over(body, 12));
        assert!(!values_over(b"[1,2", 10), "not JSON: left to the parse");
        // Deep nesting stops at serde_json's depth limit, not a stack overflow.
        let deep = "[".repeat(100_000);
        assert!(!values_over(deep.as_bytes(), u64::MAX));
        // A count stops at the first value over: what follows is not read (here, not JSON).
        let mut many = b"[".to_vec();
        many.extend(b"0,".repeat(1_000_000));
        many.extend(b"garbage");
        assert!(values_over(&many, 500_000));
        assert!(!values_over(&many, 2_000_000));
    }

    #[test]
    fn missing_fields_are_named() {
        let param = |op, body| parse(op, body).err().and_then(|e| e.param);
        assert_eq!(param(Operation::Chat, r#"{"messages":[]}"#).as_deref(), Some("model"));
        assert_eq!(
            param(Operation::Chat, r#"{"model":"m","messages":[]}"#).as_deref(),
            Some("messages")
        );
        assert_eq!(param(Operation::Chat, r#"{"model":"m"}"#).as_deref(), Some("messages"));
        assert_eq!(
            param(Operation::Completions, r#"{"model":"m"}"#).as_deref(),
            Some("prompt")
        );
        assert_eq!(
            param(Operation::Embeddings, r#"{"model":"m"}"#).as_deref(),
            Some("input")
        );
        assert_eq!(
            param(Operation::Responses, r#"{"model":"m"}"#).as_deref(),
            Some("input")
        );
        let not_json = parse(Operation::Chat, "[1]")
            .err()
            .map(|e| e.message)
            .unwrap_or_default();
        assert!(not_json.ends_with("The body must be a JSON object."), "{not_json}");
    }

    #[test]
    fn the_clients_bytes_are_kept_with_where_its_model_is() {
        let spliced = |body: &str| -> Option<Value> {
            let r = parse(Operation::Chat, body).unwrap_or_else(|e| panic!("{e:?}"));
            let bytes = r.original?.with("up\"stream", &[]);
            Some(serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}")))
        };
        let expect = |body: &str| -> Value {
            let mut v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}"));
            v["model"] = "up\"stream".into();
            v
        };
        // Spaces around the value, "model" in a string and a message before it, escapes in it.
        for body in [
            r#"{"model":"m","messages":[{}]}"#,
            "{ \"messages\":[{\"role\":\"user\",\"content\":\"\\\"model\\\":1\",\"model\":\"x\"}],\n  \"model\"\t:  \"m\\u00e9\"  ,\"n\":1}",
            r#"{"messages":[{}],"model":"a/b"}"#,
        ] {
            assert_eq!(spliced(body), Some(expect(body)), "{body}");
        }
        // A field twice: the map keeps the last one, which the bytes do not say; nothing kept.
        assert_eq!(spliced(r#"{"model":"m","messages":[{}],"model":"n"}"#), None);
        assert_eq!(spliced(r#"{"model":"m","messages":[{}],"messages":[{}]}"#), None);
        // What the map holds is what the bytes hold.
        let r =
            parse(Operation::Chat, r#"{"model":"m","messages":[{}],"model":"n"}"#).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(r.model, "n");
        // Not an object, trailing bytes, a model that is not a string: refused as before.
        for body in ["[1]", r#"{"model":"m","messages":[{}]} x"#, r#"{"model":"m""#] {
            let e = parse(Operation::Chat, body)
                .err()
                .map(|e| e.message)
                .unwrap_or_default();
            assert!(e.starts_with("We could not parse the JSON body"), "{body}: {e}");
        }
        let e = parse(Operation::Chat, r#"{"model":7,"messages":[{}]}"#)
            .err()
            .and_then(|e| e.param);
        assert_eq!(e.as_deref(), Some("model"));
    }
}
