//! A LiteLLM config read into a plain tree that remembers the line of every key and value, so
//! each setting the importer cannot carry over is reported at its line.
//!
//! The parser is `saphyr` (YAML 1.2, pure Rust, anchors and aliases resolved); its node types are
//! kept inside this file so the rest of the importer reads only [`Node`].

use saphyr::{LoadableYamlNode, MarkedYamlOwned, ScalarOwned, YamlDataOwned};

/// One YAML value and the line (1-based) where it starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub line: usize,
    pub value: Value,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

/// One key of a mapping, with the line of the key itself.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub key: String,
    pub line: usize,
    pub value: Node,
}

/// Parses one YAML document (the first, when there are several).
pub fn parse(text: &str) -> Result<Node, String> {
    let docs = MarkedYamlOwned::load_from_str(text).map_err(|e| e.to_string())?;
    Ok(docs.into_iter().next().map_or(
        Node {
            line: 1,
            value: Value::Null,
        },
        |d| convert(&d),
    ))
}

fn convert(n: &MarkedYamlOwned) -> Node {
    let line = n.span.start.line().max(1);
    let value = match &n.data {
        YamlDataOwned::Value(s) => scalar(s),
        YamlDataOwned::Representation(s, _, _) => Value::Str(s.clone()),
        YamlDataOwned::Sequence(items) => Value::Seq(items.iter().map(convert).collect()),
        YamlDataOwned::Mapping(map) => Value::Map(
            map.iter()
                .map(|(k, v)| Entry {
                    key: key_text(k),
                    line: k.span.start.line().max(1),
                    value: convert(v),
                })
                .collect(),
        ),
        YamlDataOwned::Tagged(_, inner) => return convert(inner),
        YamlDataOwned::Alias(_) | YamlDataOwned::BadValue => Value::Null,
    };
    Node { line, value }
}

fn scalar(s: &ScalarOwned) -> Value {
    match s {
        ScalarOwned::Null => Value::Null,
        ScalarOwned::Boolean(b) => Value::Bool(*b),
        ScalarOwned::Integer(i) => Value::Int(*i),
        ScalarOwned::FloatingPoint(f) => Value::Float(f.into_inner()),
        ScalarOwned::String(s) => Value::Str(s.clone()),
    }
}

fn key_text(k: &MarkedYamlOwned) -> String {
    match &k.data {
        YamlDataOwned::Value(ScalarOwned::String(s)) | YamlDataOwned::Representation(s, _, _) => s.clone(),
        YamlDataOwned::Value(ScalarOwned::Integer(i)) => i.to_string(),
        YamlDataOwned::Value(ScalarOwned::Boolean(b)) => b.to_string(),
        YamlDataOwned::Value(ScalarOwned::FloatingPoint(f)) => f.to_string(),
        _ => String::from("?"),
    }
}

impl Node {
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A scalar as text (numbers and booleans written out), for settings LiteLLM reads as
    /// strings.
    pub fn as_text(&self) -> Option<String> {
        match &self.value {
            Value::Str(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// A number, also when written as a string (`"100"`), as LiteLLM accepts both, or with
    /// YAML 1.1's digit separators (`20_000`), which LiteLLM's PyYAML reads as a number and
    /// YAML 1.2 as a string.
    pub fn as_f64(&self) -> Option<f64> {
        match &self.value {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            Value::Str(s) => s.trim().replace('_', "").parse().ok(),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match &self.value {
            Value::Bool(b) => Some(*b),
            Value::Str(s) if s.eq_ignore_ascii_case("true") => Some(true),
            Value::Str(s) if s.eq_ignore_ascii_case("false") => Some(false),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[Entry]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_keys_and_values() {
        let n = parse("a: 1\nb:\n  - x: true\n    y: 2.5\n").unwrap();
        let m = n.as_map().unwrap();
        assert_eq!((m[0].key.as_str(), m[0].line), ("a", 1));
        assert_eq!(m[0].value.value, Value::Int(1));
        assert_eq!((m[1].key.as_str(), m[1].line), ("b", 2));
        let item = &m[1].value.as_seq().unwrap()[0];
        let inner = item.as_map().unwrap();
        assert_eq!((inner[1].key.as_str(), inner[1].line), ("y", 4));
        assert_eq!(inner[1].value.as_f64(), Some(2.5));
        assert_eq!(inner[0].value.as_bool(), Some(true));
    }

    #[test]
    fn aliases_are_resolved() {
        let n = parse("base: &b {api_key: os.environ/K}\nuse: *b\n").unwrap();
        let m = n.as_map().unwrap();
        let used = m[1].value.as_map().unwrap();
        assert_eq!(used[0].value.as_str(), Some("os.environ/K"));
    }

    #[test]
    fn syntax_errors_are_reported() {
        assert!(parse("a: [1, 2\n").is_err());
    }
}
