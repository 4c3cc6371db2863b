//! One top-level field of a JSON object, found without parsing the rest.
//!
//! An OpenAI-compatible answer goes to the client as the upstream wrote it; the gateway reads
//! only its `usage`. Parsing the whole body for it (serde_json validating every string and
//! number of `choices`) was a tenth of a request's instructions (bench/results/profiling.md). This
//! scan walks the object's structure instead, jumping over strings with `memchr`, and hands the
//! one field's bytes to serde_json.
//!
//! What it checks of the rest is the structure: one object, brackets that match, strings that
//! close, nothing after the object but whitespace, and outside strings only bytes JSON has there
//! (digits, `true`, `false`, `null`, punctuation, whitespace). It does not check the grammar of
//! the scalars between them (`tru` passes where a parser would stop). Whatever it cannot vouch
//! for (a body that fails those checks, a field named twice, a key written with escapes, nesting
//! deeper than [`MAX_DEPTH`]) is [`Unsure`], and the caller parses the whole body as before.

/// Deepest nesting the scan follows.
pub const MAX_DEPTH: u32 = 64;

/// The scan could not vouch for the body: parse it whole.
#[derive(Debug, PartialEq, Eq)]
pub struct Unsure;

/// Bytes JSON may have outside strings, structural characters aside.
static SCALAR: [bool; 256] = {
    let mut t = [false; 256];
    let allowed = b" \t\r\n0123456789+-.eE:truefalsn";
    let mut i = 0;
    while i < allowed.len() {
        t[allowed[i] as usize] = true;
        i += 1;
    }
    t
};

/// The value of `body`'s top-level field `key`, read by `read` from the bytes where it starts
/// (to the end of the body): `read` returns the value and how many bytes it took, or `None`
/// (then the scan is [`Unsure`]); the scan goes on after them. `Ok(None)` when the object has no
/// such field.
pub fn field<T>(
    body: &[u8],
    key: &[u8],
    mut read: impl FnMut(&[u8]) -> Option<(T, usize)>,
) -> Result<Option<T>, Unsure> {
    let mut i = skip_space(body, 0);
    if body.get(i) != Some(&b'{') {
        return Err(Unsure);
    }
    i += 1;
    // Open containers; bit `d` of `arrays` is set when the one at depth `d` (0: the object) is
    // an array.
    let mut depth: u32 = 1;
    let mut arrays: u64 = 0;
    // At depth 1, whether the next string is a key.
    let mut key_next = true;
    let mut found: Option<T> = None;
    while let Some(&b) = body.get(i) {
        match b {
            b'"' => {
                let end = string_end(body, i + 1).ok_or(Unsure)?;
                if depth == 1 && key_next {
                    key_next = false;
                    let name = body.get(i + 1..end).ok_or(Unsure)?;
                    if name.contains(&b'\\') {
                        return Err(Unsure);
                    }
                    if name == key {
                        if found.is_some() {
                            return Err(Unsure);
                        }
                        let colon = skip_space(body, end + 1);
                        if body.get(colon) != Some(&b':') {
                            return Err(Unsure);
                        }
                        let start = skip_space(body, colon + 1);
                        let (value, len) = read(body.get(start..).ok_or(Unsure)?).ok_or(Unsure)?;
                        found = Some(value);
                        i = start + len.max(1);
                        continue;
                    }
                }
                i = end + 1;
            }
            b'{' | b'[' => {
                if depth >= MAX_DEPTH {
                    return Err(Unsure);
                }
                if b == b'[' {
                    arrays |= 1 << depth;
                } else {
                    arrays &= !(1 << depth);
                }
                depth += 1;
                i += 1;
            }
            b'}' | b']' => {
                depth -= 1;
                if (arrays & (1 << depth) != 0) != (b == b']') {
                    return Err(Unsure);
                }
                if depth == 0 {
                    return if skip_space(body, i + 1) == body.len() {
                        Ok(found)
                    } else {
                        Err(Unsure)
                    };
                }
                i += 1;
            }
            b',' => {
                if depth == 1 {
                    key_next = true;
                }
                i += 1;
            }
            _ if SCALAR[usize::from(b)] => i += 1,
            _ => return Err(Unsure),
        }
    }
    // The object never closed.
    Err(Unsure)
}

/// The index of the quote that closes the string whose content starts at `from`.
fn string_end(body: &[u8], mut from: usize) -> Option<usize> {
    loop {
        let at = from + memchr::memchr2(b'"', b'\\', body.get(from..)?)?;
        if body[at] == b'"' {
            return Some(at);
        }
        // An escape: the next byte is taken with it (`\"` does not close the string).
        from = at + 2;
    }
}

/// A [`field`] reader: one JSON value as `T`, and the bytes it took.
pub fn json<T: serde::de::DeserializeOwned>(at: &[u8]) -> Option<(T, usize)> {
    let mut values = serde_json::Deserializer::from_slice(at).into_iter::<T>();
    let value = values.next()?.ok()?;
    Some((value, values.byte_offset()))
}

fn skip_space(body: &[u8], from: usize) -> usize {
    let rest = body.get(from..).unwrap_or_default();
    from + rest.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(rest.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// What the scan says the field is, parsed; `Err` when it is unsure.
    fn scanned(body: &[u8]) -> Result<Option<Value>, Unsure> {
        field(body, b"usage", json::<Value>)
    }

    #[test]
    fn finds_the_top_level_field_whatever_surrounds_it() {
        let usage = json!({"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21});
        let cases = [
            json!({"id": "x", "choices": [{"message": {"content": "hi"}}], "usage": usage}),
            json!({"usage": usage, "choices": []}),
            // "usage" inside strings, as a string value and as a nested key before the real one.
            json!({
                "a": {"usage": {"prompt_tokens": 1}},
                "b": [{"usage": 2}, "usage", "\"usage\": {}", "\\\"usage\\\":{"],
                "c": "usage",
                "usage": usage,
                "d": {"usage": null}
            }),
            // Brackets and quotes inside strings do not count.
            json!({"s": "}]}{[\"", "usage": usage, "t": "\\"}),
            json!({"usage": null}),
            json!({"usage": "many"}),
        ];
        for case in cases {
            for body in [
                serde_json::to_vec(&case).unwrap(),
                serde_json::to_vec_pretty(&case).unwrap(),
            ] {
                assert_eq!(
                    scanned(&body),
                    Ok(case.get("usage").cloned()),
                    "{}",
                    String::from_utf8_lossy(&body)
                );
            }
        }
        // Escapes at every offset, in strings of every length.
        for n in 0..40 {
            for tail in ["\"", "\\", "\\\"", "usage\":{"] {
                let text = format!("{}{tail}{}", "a".repeat(n), "b".repeat(n % 7));
                let case = json!({"s": text, "usage": usage, "t": [text]});
                assert_eq!(
                    scanned(&serde_json::to_vec(&case).unwrap()),
                    Ok(Some(usage.clone())),
                    "{n} {tail}"
                );
            }
        }
        let without = json!({"choices": [{"usage": usage}], "x": {"usage": 1}});
        assert_eq!(scanned(&serde_json::to_vec(&without).unwrap()), Ok(None));
        assert_eq!(scanned(b" {} \n"), Ok(None));
        assert_eq!(
            scanned(b"{\"usage\" : {\"prompt_tokens\":3} }"),
            Ok(Some(json!({"prompt_tokens": 3})))
        );
    }

    #[test]
    fn what_it_cannot_vouch_for_is_unsure() {
        let deep = format!("{{\"a\":{}1{},\"usage\":null}}", "[".repeat(70), "]".repeat(70));
        for body in [
            &b"this is not json {{{"[..],
            b"<html><body>502 Bad Gateway</body></html>",
            b"",
            b"[1, 2]",
            b"\"usage\"",
            // Truncated, unbalanced, mismatched, unclosed.
            b"{\"usage\": {\"prompt_tokens\": 3}",
            b"{\"usage\": {\"prompt_tokens\": 3]}",
            b"{\"a\": [1, 2}, \"usage\": null}",
            b"{\"a\": \"never closed}",
            b"{\"a\": \"ends in an escape\\",
            // Trailing bytes, a second object.
            b"{\"usage\": null} x",
            b"{\"usage\": null}{}",
            // Bytes JSON has only inside strings.
            b"{\"a\": <b>, \"usage\": null}",
            b"{\"a\": 'x', \"usage\": null}",
            b"{\"a\": x, \"usage\": null}",
            // The field twice (serde refuses it), a key with escapes (it might spell the field).
            b"{\"usage\": null, \"usage\": {\"prompt_tokens\": 1}}",
            b"{\"usag\\u0065\": {\"prompt_tokens\": 1}}",
            // A key with no colon after it.
            b"{\"usage\" {\"prompt_tokens\": 1}}",
            deep.as_bytes(),
        ] {
            assert_eq!(scanned(body), Err(Unsure), "{}", String::from_utf8_lossy(body));
        }
        // Depth up to the bound is followed.
        let nested = format!("{{\"a\":{}1{},\"usage\":null}}", "[".repeat(62), "]".repeat(62));
        assert_eq!(scanned(nested.as_bytes()), Ok(Some(Value::Null)));
    }

    /// A small deterministic generator (no dependency): xorshift.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn string(rng: &mut Rng) -> String {
        const PIECES: [&str; 12] = ["usage", "\"", "\\", "{", "}", "[", "]", ":", ",", "é", "\u{1}", "a b"];
        (0..rng.below(5)).map(|_| PIECES[rng.below(12) as usize]).collect()
    }

    /// Mostly plain keys, the field's name and its near misses among them; now and then one that
    /// needs escapes.
    fn key(rng: &mut Rng) -> String {
        const KEYS: [&str; 7] = ["usage", "usage", "id", "choices", "usage_", "Usage", "é"];
        match rng.below(10) {
            0 => string(rng),
            n => KEYS[(n % 7) as usize].to_owned(),
        }
    }

    fn value(rng: &mut Rng, depth: u32) -> Value {
        match rng.below(if depth > 4 { 5 } else { 7 }) {
            0 => Value::Null,
            1 => Value::Bool(rng.below(2) == 0),
            2 => json!(rng.next() as i64 / 1000),
            3 => json!(rng.below(10_000) as f64 / 7.0),
            4 => Value::String(string(rng)),
            5 => Value::Array((0..rng.below(4)).map(|_| value(rng, depth + 1)).collect()),
            _ => Value::Object((0..rng.below(4)).map(|_| (key(rng), value(rng, depth + 1))).collect()),
        }
    }

    #[test]
    fn agrees_with_serde_json_on_generated_bodies_and_their_mutations() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut sure, mut mutated_sure) = (0, 0);
        for _ in 0..20_000 {
            let mut top = serde_json::Map::new();
            for _ in 0..rng.below(6) {
                top.insert(key(&mut rng), value(&mut rng, 1));
            }
            if rng.below(2) == 0 {
                top.insert("usage".to_owned(), value(&mut rng, 2));
            }
            let doc = Value::Object(top);
            let body = if rng.below(2) == 0 {
                serde_json::to_vec(&doc).unwrap()
            } else {
                serde_json::to_vec_pretty(&doc).unwrap()
            };
            // A valid body: the scan is sure (no escaped keys here but those with `\`), and right.
            match scanned(&body) {
                Ok(got) => {
                    sure += 1;
                    // Compared with serde_json's own reading (its float parsing is not exact).
                    let parsed: Value = serde_json::from_slice(&body).unwrap();
                    assert_eq!(got, parsed.get("usage").cloned(), "{}", String::from_utf8_lossy(&body));
                }
                Err(Unsure) => assert!(
                    doc.as_object()
                        .unwrap()
                        .keys()
                        .any(|k| k.contains(['\\', '"', '\u{1}'])),
                    "unsure of a valid body without escaped keys: {}",
                    String::from_utf8_lossy(&body)
                ),
            }
            // The same body damaged: whenever the scan is sure of a body serde_json reads, they agree.
            let mut bad = body.clone();
            for _ in 0..=rng.below(3) {
                let at = rng.below(bad.len() as u64 + 1) as usize;
                match rng.below(3) {
                    0 => bad.truncate(at),
                    1 if at < bad.len() => bad[at] = b"{}[]\",:\\ax0"[rng.below(11) as usize],
                    _ => bad.insert(at.min(bad.len()), b"{}[]\",:\\"[rng.below(8) as usize]),
                }
            }
            if let (Ok(got), Ok(parsed)) = (scanned(&bad), serde_json::from_slice::<Value>(&bad)) {
                mutated_sure += 1;
                assert!(parsed.is_object(), "{}", String::from_utf8_lossy(&bad));
                assert_eq!(got, parsed.get("usage").cloned(), "{}", String::from_utf8_lossy(&bad));
            }
        }
        assert!(sure > 15_000, "sure of only {sure} valid bodies");
        assert!(
            mutated_sure > 100,
            "only {mutated_sure} damaged bodies were both readable and scanned"
        );
    }
}
