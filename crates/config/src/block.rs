//! A reader of the plainest block YAML, the shape nearly every manifest is written in, that
//! deserialises a document into its resource exactly as serde_yaml does, without libyaml.
//!
//! Loading 10,000 keys spent half its instructions in libyaml (its scanner reads a plain scalar
//! at ~160 instructions a character, and it allocates buffers and events per document:
//! bench/results/profiling.md, seventh pass). This reader takes a document only when every line
//! is one of: a comment, `key: value`, `key:` with a block below, `- value`, `- key: value`, `-`;
//! indentation by spaces only, printable ASCII only; keys plain words or quoted words; values a
//! plain word, a plain decimal number, `true` or `false`, or a quoted scalar on one line without
//! escapes. For those scalars serde_yaml's reading has no corner to differ in: a word is a
//! string, `12` is the integer 12 or the string "12" (as the field asks), and so on. Anything
//! else, a key twice in one mapping included, and [`read`] answers `None`; a value the
//! [`Node`] cannot give as serde_yaml would (a null for a string field, say) is a deserialisation
//! error. Either way the caller parses the document with serde_yaml instead, so this reader never
//! decides what a document means when it is unsure, and never produces a diagnostic.
//!
//! It must not grow into a YAML parser: a form it does not take costs time, not correctness.

use serde::de::{self, DeserializeSeed, Visitor};

/// A document read by [`read`]: a mapping, a sequence, a scalar, or nothing (`key:` with no block
/// below, `-` alone).
#[derive(Debug, PartialEq)]
pub(crate) enum Node<'a> {
    Map(Vec<(Scalar<'a>, Node<'a>)>),
    Seq(Vec<Node<'a>>),
    Scalar(Scalar<'a>),
    Null,
}

impl<'a> Node<'a> {
    /// The string at `key` of a mapping, as serde_yaml reads it (`None` when it is not a string).
    pub(crate) fn string_at(&self, key: &str) -> Option<&'a str> {
        let Node::Map(entries) = self else {
            return None;
        };
        match entries.iter().find(|(k, _)| k.text == key)?.1 {
            Node::Scalar(Scalar {
                text,
                kind: Kind::Word | Kind::Quoted,
            }) => Some(text),
            _ => None,
        }
    }
}

/// A scalar as written (`text`, without its quotes) and what serde_yaml resolves it to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Scalar<'a> {
    text: &'a str,
    kind: Kind,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// Quoted: a string whatever it holds.
    Quoted,
    /// A plain word that no YAML schema reads as anything but a string.
    Word,
    /// A plain decimal integer, `0` or without a leading zero: serde_yaml's `u64`.
    Unsigned(u64),
    /// A plain negative decimal integer: serde_yaml's `i64`.
    Negative(i64),
    /// A plain `digits.digits`.
    Float(f64),
    /// Plain `true` or `false` (lower case).
    Bool(bool),
}

/// One line that holds something: its indentation and the rest, trailing spaces removed.
#[derive(Clone, Copy)]
struct Line<'a> {
    indent: usize,
    text: &'a str,
}

/// The document `doc`, when it is in the form this module takes; `None` otherwise.
pub(crate) fn read(doc: &str) -> Option<Node<'_>> {
    let mut lines = Vec::with_capacity(doc.len() / 16);
    for raw in doc.lines() {
        // No tab, no carriage return or other line break, no byte-order mark, no non-ASCII.
        if !raw.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return None;
        }
        let text = raw.trim_start_matches(' ');
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        if text.starts_with(['%', '?', '&', '*', '!', '|', '>', '{', '[', '@', '`'])
            || text.starts_with("---")
            || text.starts_with("...")
        {
            return None;
        }
        lines.push(Line {
            indent: raw.len() - text.len(),
            text: text.trim_end_matches(' '),
        });
    }
    let first = lines.first()?.indent;
    let mut reader = Reader { lines, pos: 0 };
    let node = reader.block(first)?;
    (reader.pos == reader.lines.len()).then_some(node)
}

struct Reader<'a> {
    lines: Vec<Line<'a>>,
    pos: usize,
}

impl<'a> Reader<'a> {
    /// The block whose first line is the current one, at `indent`.
    fn block(&mut self, indent: usize) -> Option<Node<'a>> {
        if is_item(self.lines.get(self.pos)?.text) {
            self.seq(indent)
        } else {
            self.map(indent)
        }
    }

    /// What a `key:` or a `-` with nothing after it holds: the block below it, a sequence at the
    /// key's own column (`in_map`), or nothing.
    fn child(&mut self, indent: usize, in_map: bool) -> Option<Node<'a>> {
        match self.lines.get(self.pos) {
            Some(l) if l.indent > indent => self.block(l.indent),
            Some(l) if in_map && l.indent == indent && is_item(l.text) => self.seq(indent),
            _ => Some(Node::Null),
        }
    }

    /// After a scalar at `indent`: a more indented line would continue it (or be an error).
    fn ends_scalar(&self, indent: usize) -> Option<()> {
        match self.lines.get(self.pos) {
            Some(l) if l.indent > indent => None,
            _ => Some(()),
        }
    }

    fn seq(&mut self, indent: usize) -> Option<Node<'a>> {
        let mut items = Vec::new();
        while let Some(&line) = self.lines.get(self.pos) {
            // A line left of the items, or a key at their column (the sequence was a key's value
            // written at the key's column), ends them; what it belongs to is for the caller.
            if line.indent < indent || line.indent == indent && !is_item(line.text) {
                break;
            }
            if line.indent > indent {
                return None;
            }
            let after = line.text[1..].trim_start_matches(' ');
            if after.is_empty() {
                self.pos += 1;
                items.push(self.child(indent, false)?);
                continue;
            }
            if is_item(after) {
                return None;
            }
            let column = indent + line.text.len() - after.len();
            if entry(after)?.is_some() {
                // `- key: value`: a mapping at the column after the dash.
                self.lines[self.pos] = Line {
                    indent: column,
                    text: after,
                };
                items.push(self.map(column)?);
            } else {
                self.pos += 1;
                items.push(Node::Scalar(scalar(after)?));
                self.ends_scalar(indent)?;
            }
        }
        Some(Node::Seq(items))
    }

    fn map(&mut self, indent: usize) -> Option<Node<'a>> {
        let mut entries: Vec<(Scalar<'a>, Node<'a>)> = Vec::new();
        while let Some(&line) = self.lines.get(self.pos) {
            if line.indent < indent {
                break;
            }
            if line.indent > indent {
                return None;
            }
            let (key, value) = entry(line.text)??;
            if entries.iter().any(|(k, _)| k.text == key.text) {
                return None;
            }
            self.pos += 1;
            let node = if value.is_empty() || value.starts_with('#') {
                self.child(indent, true)?
            } else {
                let s = scalar(value)?;
                self.ends_scalar(indent)?;
                Node::Scalar(s)
            };
            entries.push((key, node));
        }
        Some(Node::Map(entries))
    }
}

fn is_item(text: &str) -> bool {
    text == "-" || text.starts_with("- ")
}

/// `Some(Some((key, rest)))` for a `key: rest` line (`rest` may be empty or a comment),
/// `Some(None)` for a line that is no mapping entry, `None` when the key is not one this module
/// takes.
fn entry(text: &str) -> Option<Option<(Scalar<'_>, &str)>> {
    let (key, after) = match text.as_bytes().first() {
        Some(q @ (b'"' | b'\'')) => {
            let end = text[1..].find(char::from(*q))? + 1;
            let after = &text[end + 1..];
            if !after.starts_with(':') {
                // A quoted scalar; `scalar` decides whether it is all the line holds.
                return Some(None);
            }
            (scalar(&text[..=end])?, after)
        }
        _ => {
            let Some(i) = text
                .find(':')
                .filter(|&i| text[i + 1..].is_empty() || text[i + 1..].starts_with(' '))
            else {
                return if text.contains(": ") { None } else { Some(None) };
            };
            let key = scalar(&text[..i])?;
            if key.kind != Kind::Word
                || !key
                    .text
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_./-".contains(&b))
            {
                return None;
            }
            (key, &text[i..])
        }
    };
    let rest = &after[1..];
    if !rest.is_empty() && !rest.starts_with(' ') {
        return None;
    }
    if !matches!(key.kind, Kind::Word | Kind::Quoted) {
        return None;
    }
    Some(Some((key, rest.trim_start_matches(' '))))
}

/// Words every YAML schema (1.1 and 1.2) gives a meaning of its own; compared ignoring case.
const RESERVED: [&str; 12] = [
    "true", "false", "null", "yes", "no", "on", "off", "y", "n", "inf", "infinity", "nan",
];

/// A value as written after `key: ` or `- `, with a trailing comment; `None` for a form this
/// module does not take.
fn scalar(text: &str) -> Option<Scalar<'_>> {
    let first = *text.as_bytes().first()?;
    if first == b'"' || first == b'\'' {
        let end = text[1..].find(char::from(first))? + 1;
        let inner = &text[1..end];
        if first == b'"' && inner.contains('\\') {
            return None;
        }
        // Nothing after the closing quote but a comment.
        let rest = &text[end + 1..];
        let comment = rest.trim_start_matches(' ');
        if !(comment.is_empty() || comment.starts_with('#') && rest.starts_with(' ')) {
            return None;
        }
        return Some(Scalar {
            text: inner,
            kind: Kind::Quoted,
        });
    }
    // One pass: the comment (` #`) ends the scalar; a `: ` or a `:` at its end would make it a
    // key, a `#` after anything but a space is left to serde_yaml.
    let bytes = text.as_bytes();
    let mut end = bytes.len();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'#' if i > 0 && bytes[i - 1] == b' ' => {
                end = i;
                break;
            }
            b'#' => return None,
            b':' if bytes.get(i + 1).is_none_or(|&next| next == b' ') => return None,
            _ => {}
        }
    }
    let text = text[..end].trim_end_matches(' ');
    if text.is_empty() {
        return None;
    }
    let kind = if let Some(digits) = text.strip_prefix('-') {
        if !decimal(digits) || digits == "0" || digits.len() > 18 {
            return None;
        }
        Kind::Negative(text.parse().ok()?)
    } else if decimal(text) {
        if text.len() > 19 {
            return None;
        }
        Kind::Unsigned(text.parse().ok()?)
    } else if let Some((int, frac)) = text
        .split_once('.')
        .filter(|(i, f)| decimal(i) && !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
    {
        if int.len() + frac.len() > 15 {
            return None;
        }
        Kind::Float(text.parse().ok()?)
    } else if first.is_ascii_alphabetic() || first == b'_' || first == b'/' {
        match text {
            "true" | "false" => Kind::Bool(text == "true"),
            _ if RESERVED.iter().any(|w| text.eq_ignore_ascii_case(w)) => return None,
            _ => Kind::Word,
        }
    } else if first.is_ascii_digit() && digits_then_word(text) {
        Kind::Word
    } else {
        return None;
    };
    Some(Scalar { text, kind })
}

/// `0`, or ASCII digits without a leading zero.
fn decimal(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'))
}

/// A scalar that starts with a digit but that no YAML schema reads as a number: it holds a
/// letter no number has (not a hex digit, not `x`, `o`, `b`, `e`, nor any of `inf`/`nan`), or a
/// `:`, `/` or `@`, or two dots (`30s`, `1h`, `10.0.0.1`).
fn digits_then_word(s: &str) -> bool {
    s.bytes().filter(|&b| b == b'.').count() >= 2
        || s.bytes().any(|b| {
            b.is_ascii_alphabetic() && !b"abcdefxobinABCDEFXOBIN".contains(&b) || b == b':' || b == b'/' || b == b'@'
        })
}

/// Why a [`Node`] did not deserialise; never shown (the caller then asks serde_yaml).
#[derive(Debug)]
pub(crate) struct Refused;

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not read by the block reader")
    }
}

impl std::error::Error for Refused {}

impl de::Error for Refused {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Refused
    }
}

/// Each method does what serde_yaml's does with the same events (`de.rs`,
/// `DeserializerFromEvents`), for the scalars a [`Node`] holds; where serde_yaml would read a
/// null as a string or an empty map, this refuses instead.
impl<'de> de::Deserializer<'de> for &Node<'de> {
    type Error = Refused;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        match self {
            Node::Map(entries) => visit_map(entries, visitor),
            Node::Seq(items) => visit_seq(items, visitor),
            Node::Null => visitor.visit_unit(),
            Node::Scalar(s) => match s.kind {
                Kind::Quoted | Kind::Word => visitor.visit_borrowed_str(s.text),
                Kind::Unsigned(u) => visitor.visit_u64(u),
                Kind::Negative(i) => visitor.visit_i64(i),
                Kind::Float(f) => visitor.visit_f64(f),
                Kind::Bool(b) => visitor.visit_bool(b),
            },
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        match self {
            Node::Scalar(Scalar {
                kind: Kind::Bool(b), ..
            }) => visitor.visit_bool(*b),
            _ => Err(Refused),
        }
    }

    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        self.deserialize_i64(visitor)
    }

    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        self.deserialize_i64(visitor)
    }

    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        self.deserialize_i64(visitor)
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        match self {
            Node::Scalar(Scalar {
                kind: Kind::Unsigned(_) | Kind::Negative(_),
                text,
            }) => visitor.visit_i64(text.parse().map_err(|_| Refused)?),
            _ => Err(Refused),
        }
    }

    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        self.deserialize_u64(visitor)
    }

    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        self.deserialize_u64(visitor)
    }

    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        self.deserialize_u64(visitor)
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        match self {
            Node::Scalar(Scalar {
                kind: Kind::Unsigned(u),
                ..
            }) => visitor.visit_u64(*u),
            _ => Err(Refused),
        }
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        match self {
            Node::Scalar(Scalar {
                kind: Kind::Unsigned(_) | Kind::Negative(_) | Kind::Float(_),
                text,
            }) => visitor.visit_f64(text.parse().map_err(|_| Refused)?),
            _ => Err(Refused),
        }
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        match self {
            Node::Scalar(s) => visitor.visit_borrowed_str(s.text),
            _ => Err(Refused),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Refused> {
        Err(Refused)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Refused> {
        Err(Refused)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        match self {
            Node::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        match self {
            Node::Null => visitor.visit_unit(),
            _ => Err(Refused),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, Refused> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, Refused> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        match self {
            Node::Seq(items) => visit_seq(items, visitor),
            _ => Err(Refused),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Refused> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Refused> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        match self {
            Node::Map(entries) => visit_map(entries, visitor),
            _ => Err(Refused),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Refused> {
        self.deserialize_map(visitor)
    }

    /// serde_yaml reads an untagged scalar as a unit variant, and refuses a mapping or sequence
    /// without a tag.
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Refused> {
        match self {
            Node::Scalar(s) if !s.text.is_empty() => visitor.visit_enum(UnitVariant(self)),
            _ => Err(Refused),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        visitor.visit_unit()
    }
}

/// Entries handed out one by one; all of them must be taken, as serde_yaml requires.
fn visit_map<'de, V: Visitor<'de>>(entries: &[(Scalar<'de>, Node<'de>)], visitor: V) -> Result<V::Value, Refused> {
    let mut access = MapAccess {
        entries: entries.iter(),
        value: None,
    };
    let value = visitor.visit_map(&mut access)?;
    if access.entries.len() > 0 || access.value.is_some() {
        return Err(Refused);
    }
    Ok(value)
}

fn visit_seq<'de, V: Visitor<'de>>(items: &[Node<'de>], visitor: V) -> Result<V::Value, Refused> {
    let mut access = SeqAccess(items.iter());
    let value = visitor.visit_seq(&mut access)?;
    if access.0.len() > 0 {
        return Err(Refused);
    }
    Ok(value)
}

struct MapAccess<'a, 'de> {
    entries: std::slice::Iter<'a, (Scalar<'de>, Node<'de>)>,
    value: Option<&'a Node<'de>>,
}

impl<'de> de::MapAccess<'de> for MapAccess<'_, 'de> {
    type Error = Refused;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Refused> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some(value);
        seed.deserialize(&Node::Scalar(*key)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Refused> {
        seed.deserialize(self.value.take().ok_or(Refused)?)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

struct SeqAccess<'a, 'de>(std::slice::Iter<'a, Node<'de>>);

impl<'de> de::SeqAccess<'de> for SeqAccess<'_, 'de> {
    type Error = Refused;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Refused> {
        self.0.next().map(|item| seed.deserialize(item)).transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

/// A scalar read as an enum's unit variant.
struct UnitVariant<'a, 'de>(&'a Node<'de>);

impl<'de> de::EnumAccess<'de> for UnitVariant<'_, 'de> {
    type Error = Refused;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), Refused> {
        Ok((seed.deserialize(self.0)?, self))
    }
}

impl<'de> de::VariantAccess<'de> for UnitVariant<'_, 'de> {
    type Error = Refused;

    fn unit_variant(self) -> Result<(), Refused> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, _seed: T) -> Result<T::Value, Refused> {
        Err(Refused)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, _visitor: V) -> Result<V::Value, Refused> {
        Err(Refused)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Refused> {
        Err(Refused)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::de::DeserializeOwned;

    use super::*;

    /// What the reader makes of `doc` as a `T`, when it takes it.
    fn ours<T: DeserializeOwned>(doc: &str) -> Option<T> {
        T::deserialize(&read(doc)?).ok()
    }

    /// Asserts that whatever the reader gives for `doc`, serde_yaml gives too; returns whether
    /// the reader took it.
    fn same<T: DeserializeOwned + PartialEq + std::fmt::Debug>(doc: &str) -> bool {
        let Some(ours) = ours::<T>(doc) else {
            return false;
        };
        let theirs: Result<T, _> = serde_yaml::from_str(doc);
        match theirs {
            Ok(theirs) => assert_eq!(ours, theirs, "{doc:?} as {}", std::any::type_name::<T>()),
            Err(e) => panic!(
                "{doc:?} as {}: serde_yaml refuses it ({e}), the reader gives {ours:?}",
                std::any::type_name::<T>()
            ),
        }
        true
    }

    /// Values as written after `key: `, the tricky ones first.
    const VALUES: &[&str] = &[
        "a",
        "0",
        "12",
        "-3",
        "0.5",
        "1.0",
        "-2.25",
        "007",
        "0x1f",
        "0o17",
        "0b101",
        "1e3",
        "1E3",
        ".5",
        "5.",
        "+1",
        "-0",
        "1_000",
        "true",
        "false",
        "True",
        "TRUE",
        "yes",
        "No",
        "on",
        "OFF",
        "y",
        "n",
        "~",
        "null",
        "Null",
        "NULL",
        "",
        "inf",
        ".inf",
        "-.inf",
        "nan",
        ".NaN",
        "Infinity",
        "\"q\"",
        "'s'",
        "\"a # b\"",
        "'a: b'",
        "a # c",
        "a#b",
        "http://x:1/y",
        "10.0.0.1",
        "30s",
        "2d",
        "1h30m",
        "-",
        "- x",
        "a: b",
        "a:",
        "'it''s'",
        "\"esc\\n\"",
        "\"\"",
        "''",
        "a b  c",
        "[a]",
        "{a: 1}",
        "&a x",
        "*a",
        "!t x",
        "|",
        ">",
        "@x",
        "`x",
        "%x",
        "_",
        "/p",
        "a, b",
        "it's",
        "12345678901234567890",
        "1234567890123456789",
        "-9223372036854775808",
        "-9223372036854775809",
        "\"x\" y",
        "\"x\"#y",
        "\"x\" #y",
        "a:b",
        "sk-bench-scale-000001",
        "mock-gpt",
        "team 1",
        "1.2.3",
        "0.",
        "00",
        "0.0",
        "3.14159265358979323846",
        "-1.5e3",
        "?",
        "? x",
        ",",
        "x,",
        "<<",
        "=",
        "a\"b",
        "#",
        "'a' 'b'",
    ];

    #[test]
    fn every_scalar_reads_as_serde_yaml_reads_it() {
        #[derive(serde::Deserialize, PartialEq, Debug)]
        struct Field<T> {
            k: T,
        }
        #[derive(serde::Deserialize, PartialEq, Debug)]
        #[serde(rename_all = "lowercase")]
        enum Unit {
            A,
            Openai,
            True,
        }
        let mut taken = 0;
        for v in VALUES {
            for doc in [
                format!("k: {v}\n"),
                format!("k:   {v}   # note\n"),
                format!("k:\n  - {v}\n  - {v}\n"),
                format!("k:\n- {v}\n"),
                format!("k:\n  a: {v}\n  b:\n    c: {v}\n"),
                format!("k:\n  - a: {v}\n    b: {v}\n  -   c: {v}\n      d:\n      - {v}\n"),
                format!("\"k\": {v}\r\nz: {v}\r\n"),
            ] {
                let mut took = false;
                took |= same::<serde_json::Value>(&doc);
                took |= same::<Field<String>>(&doc);
                took |= same::<Field<u64>>(&doc);
                took |= same::<Field<u8>>(&doc);
                took |= same::<Field<i64>>(&doc);
                took |= same::<Field<i32>>(&doc);
                took |= same::<Field<f64>>(&doc);
                took |= same::<Field<bool>>(&doc);
                took |= same::<Field<Option<String>>>(&doc);
                took |= same::<Field<Option<u64>>>(&doc);
                took |= same::<Field<Option<bool>>>(&doc);
                took |= same::<Field<Unit>>(&doc);
                took |= same::<Field<Vec<String>>>(&doc);
                took |= same::<Field<Vec<Option<i64>>>>(&doc);
                took |= same::<Field<BTreeMap<String, String>>>(&doc);
                took |= same::<Field<BTreeMap<String, serde_json::Value>>>(&doc);
                took |= same::<Field<Vec<BTreeMap<String, serde_json::Value>>>>(&doc);
                taken += usize::from(took);
            }
        }
        // The common forms are taken (else this test would prove nothing).
        assert!(taken > 200, "only {taken} documents were taken");
        for doc in [
            "k: a\n",
            "k: 12\n",
            "k: -3\n",
            "k: 0.5\n",
            "k: true\n",
            "k: \"q\"\n",
            "k: 'a: b'\n",
            "k: 30s\n",
        ] {
            assert!(same::<serde_json::Value>(doc), "{doc:?} was not taken");
            assert!(same::<Field<String>>(doc), "{doc:?} was not taken as a string");
        }
        assert!(same::<Field<u64>>("k: 12 # twelve\n"));
        assert!(same::<Field<f64>>("k: 12\n"));
        assert!(same::<Field<Option<String>>>("k:\n"));
        assert!(same::<Field<Unit>>("k: openai\n"));
    }

    #[test]
    fn what_it_does_not_take() {
        let left = [
            // A key twice, plain and quoted, at the top, nested, in a list item.
            "a: 1\na: 2\n",
            "a: 1\n\"a\": 2\n",
            "m:\n  a: 1\n  b: 2\n  a: 3\n",
            "l:\n- a: 1\n  a: 2\n",
            // Booleans and nulls of either YAML version, numbers in other bases, specials.
            "k: yes\n",
            "k: True\n",
            "k: ~\n",
            "k: null\n",
            "k: 0x1f\n",
            "k: 1e3\n",
            "k: 007\n",
            "k: .inf\n",
            "k: nan\n",
            // Scalars over several lines, block scalars, escapes.
            "k: a\n  b\n",
            "l:\n- a\n  b\n",
            "k: |\n  a\n",
            "k: >-\n  a\n",
            "k: \"a\\nb\"\n",
            "k: 'it''s'\n",
            "k: \"a\n  b\"\n",
            // Flow collections, anchors, aliases, tags, complex keys, directives, markers.
            "k: {a: 1}\n",
            "k: [a]\n",
            "k: &x a\nj: *x\n",
            "k: !!str 1\n",
            "? k\n: v\n",
            "%YAML 1.2\nk: v\n",
            "k: v\n...\n",
            "k: v\n---\nj: w\n",
            // Tabs, a byte-order mark, a lone carriage return, non-ASCII.
            "k:\tv\n",
            "m:\n\ta: 1\n",
            "\u{feff}k: v\n",
            "k: v\rj: w\n",
            "k: caf\u{e9}\n",
            // Odd indentation: a key more indented than its siblings, items out of line.
            "m:\n    a: 1\n  b: 2\n",
            "m:\n  a: 1\n   b: 2\n",
            "l:\n  - a\n - b\n",
            "l:\n- a: 1\n  - b\n",
            " k: v\nj: w\n",
            // A value that is a mapping in YAML's eyes, or not a key at all.
            "k: a: b\n",
            "k: a:\n",
            "- - a\n",
            "just a scalar\n",
            "k v\n",
            "1: a\n",
            "true: a\n",
            "\"k\"x: a\n",
        ];
        for doc in left {
            assert!(read(doc).is_none(), "{doc:?} was taken: {:?}", read(doc));
        }
    }

    #[test]
    fn comments_line_endings_and_items() {
        let doc = "# head\r\nk: a   # tail\r\n\r\n  # indented comment\r\nl:\r\n- x\r\n-\r\n  z: 1\r\n- 'q # not a comment'\r\nm:\r\n  o: \"#\"\r\n";
        let node = read(doc);
        assert!(node.is_some());
        assert!(same::<serde_json::Value>(doc));
        let v: serde_json::Value = serde_yaml::from_str(doc).unwrap_or_default();
        assert_eq!(
            v,
            serde_json::json!({"k": "a", "l": ["x", {"z": 1}, "q # not a comment"], "m": {"o": "#"}})
        );
        // `-` alone, then the next item: a null item.
        assert!(same::<serde_json::Value>("l:\n-\n- a\n"));
        // A key with nothing below, then a sibling.
        assert!(same::<serde_json::Value>("a:\nb: 1\n"));
        // Keys YAML 1.1 reads as booleans are left, though serde_yaml reads them as strings.
        assert!(read("m:\n  n: 1\n").is_none());
        // A whole document indented.
        assert!(same::<serde_json::Value>("  a: 1\n  b:\n    c: 2\n"));
    }
}
