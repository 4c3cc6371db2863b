//! Incremental Server-Sent Events framing: split a byte stream into events as bytes arrive.
//!
//! Translators are pure and fed byte chunks by the gateway, so they need a push parser over
//! `&[u8]` rather than a parser wrapping an HTTP body; this one keeps at most one partial event.

use bytes::{Bytes, BytesMut};

/// One SSE event: its `event:` name (empty when absent) and its `data:` lines joined by `\n`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field.
    pub event: String,
    /// The `data:` field(s).
    pub data: String,
}

/// Push parser.
#[derive(Default, Debug)]
pub struct Parser {
    buf: BytesMut,
}

impl Parser {
    /// Feeds bytes; returns the events completed by them. Whole events are parsed in place
    /// (the usual case: a chunk holds whole events); only an unfinished tail is buffered.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Event> {
        if self.buf.is_empty() {
            return parse_events(chunk, &mut self.buf);
        }
        self.buf.extend_from_slice(chunk);
        let joined = self.buf.split();
        parse_events(&joined, &mut self.buf)
    }

    /// Bytes of an unfinished event still buffered.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// The events completed in `bytes`; what follows the last one goes to `tail`.
fn parse_events(bytes: &[u8], tail: &mut BytesMut) -> Vec<Event> {
    let mut events = Vec::new();
    let mut rest = bytes;
    while let Some((end, sep)) = find_boundary(rest) {
        if let Some(ev) = parse_event(&rest[..end]) {
            events.push(ev);
        }
        rest = &rest[end + sep..];
    }
    tail.extend_from_slice(rest);
    events
}

/// The first blank line: `(where it starts, its length)` for `\n\n` or `\r\n\r\n`.
fn find_boundary(buf: &[u8]) -> Option<(usize, usize)> {
    for i in memchr::memchr_iter(b'\n', buf) {
        match buf.get(i + 1) {
            Some(b'\n') => return Some((i, 2)),
            Some(b'\r') if i > 0 && buf[i - 1] == b'\r' && buf.get(i + 2) == Some(&b'\n') => return Some((i - 1, 4)),
            _ => {}
        }
    }
    None
}

fn parse_event(raw: &[u8]) -> Option<Event> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut ev = Event::default();
    let mut has_data = false;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => ev.event = value.to_owned(),
            "data" => {
                if has_data {
                    ev.data.push('\n');
                }
                ev.data.push_str(value);
                has_data = true;
            }
            _ => {}
        }
    }
    (has_data || !ev.event.is_empty()).then_some(ev)
}

/// The raw events of `bytes`, each with its blank line (a trailing unfinished one last), for
/// callers that filter events without re-encoding them.
pub fn split(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        let end = find_boundary(rest).map_or(rest.len(), |(at, sep)| at + sep);
        let (event, tail) = rest.split_at(end);
        rest = tail;
        (!event.is_empty()).then_some(event)
    })
}

/// Encodes one `data:` event.
pub fn data(json: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(json.len() + 8);
    b.extend_from_slice(b"data: ");
    b.extend_from_slice(json);
    b.extend_from_slice(b"\n\n");
    b.freeze()
}

/// The OpenAI stream terminator.
pub const DONE: &[u8] = b"data: [DONE]\n\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks() {
        let mut p = Parser::default();
        assert!(p.feed(b"event: a\ndata: {\"x\"").is_empty());
        let evs = p.feed(b":1}\n\ndata: two\r\n\r\n: comment\n\n");
        assert_eq!(
            evs,
            vec![
                Event {
                    event: "a".into(),
                    data: "{\"x\":1}".into()
                },
                Event {
                    event: String::new(),
                    data: "two".into()
                },
            ]
        );
        assert_eq!(p.pending(), 0);
    }

    #[test]
    fn split_keeps_each_event_whole() {
        let events: Vec<&[u8]> = split(b"data: 1\n\ndata: 2\r\n\r\ndata: 3").collect();
        assert_eq!(events, [&b"data: 1\n\n"[..], b"data: 2\r\n\r\n", b"data: 3"]);
        assert_eq!(split(b"").count(), 0);
    }

    #[test]
    fn a_boundary_split_between_chunks_is_found() {
        let mut p = Parser::default();
        assert!(p.feed(b"data: 1\n").is_empty());
        assert_eq!(p.feed(b"\ndata: 2\r\n\r").len(), 1);
        let evs = p.feed(b"\ndata: 3\n\ndata: 4");
        assert_eq!(evs.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(), ["2", "3"]);
        assert_eq!(p.pending(), 7);
        // LF inside a CRLF stream is not a blank line.
        let mut q = Parser::default();
        assert!(q.feed(b"data: a\r\ndata: b\r\n").is_empty());
        assert_eq!(q.feed(b"\r\n")[0].data, "a\nb");
    }
}
