//! Incremental Server-Sent Events framing: split a byte stream into events as bytes arrive.
//!
//! Translators are pure and fed byte chunks by the gateway, so they need a push parser over
//! `&[u8]` rather than a parser wrapping an HTTP body; this one keeps at most one partial event, of bounded size.

use std::borrow::Cow;

use bytes::{Buf, Bytes, BytesMut};

use crate::{ErrorKind, ProviderError};

/// One SSE event: its `event:` name (empty when absent) and its `data:` lines joined by `\n`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field.
    pub event: String,
    /// The `data:` field(s).
    pub data: String,
}

/// One event read in place: its fields borrow the bytes fed, except `data` when it has several
/// `data:` lines (they are joined by `\n`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRef<'a> {
    /// The `event:` field (empty when absent).
    pub event: &'a str,
    /// The `data:` field(s).
    pub data: Cow<'a, str>,
}

impl EventRef<'_> {
    /// The event as an owned [`Event`].
    pub fn into_owned(self) -> Event {
        Event {
            event: self.event.to_owned(),
            data: self.data.into_owned(),
        }
    }
}

/// The largest event [`Parser`] accepts by default (1 MiB): no provider sends events near it,
/// and an upstream that never ends its event must not grow the gateway's memory without bound.
pub const DEFAULT_MAX_EVENT: usize = 1024 * 1024;

/// The `code` of the error for an event over the limit (and for a Bedrock event-stream frame
/// over its limit), so the gateway can count them.
pub const EVENT_TOO_LARGE: &str = "upstream_event_too_large";

/// Push parser. Linear in the bytes fed: an unfinished event is scanned once, the next chunk's
/// scan resumes where the last one stopped; an event longer than its limit is an error.
#[derive(Debug)]
pub struct Parser {
    buf: BytesMut,
    /// Where the scan of `buf` for a blank line resumes.
    resume: usize,
    max_event: usize,
    scanned: u64,
}

impl Default for Parser {
    fn default() -> Self {
        Self::with_max_event(DEFAULT_MAX_EVENT)
    }
}

impl Parser {
    /// A parser that refuses events longer than `max_event` bytes.
    pub fn with_max_event(max_event: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            resume: 0,
            max_event,
            scanned: 0,
        }
    }

    /// Feeds bytes; returns the events completed by them. Whole events are parsed in place
    /// (the usual case: a chunk holds whole events); only an unfinished tail is buffered. An
    /// event (finished or not) longer than the limit is a [`ErrorKind::Protocol`] error.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Event>, ProviderError> {
        let mut events = Vec::new();
        self.feed_each(chunk, |ev| events.push(ev.into_owned()))?;
        Ok(events)
    }

    /// Feeds bytes and hands each event completed by them to `each`, in order, read in place:
    /// no copy of an event whose `data` is one line. On an error (an event over the limit)
    /// the events already handed over are to be disregarded, as [`Parser::feed`] drops them.
    pub fn feed_each(&mut self, chunk: &[u8], mut each: impl FnMut(EventRef<'_>)) -> Result<(), ProviderError> {
        if self.buf.is_empty() {
            let consumed = self.parse_events(chunk, 0, &mut each)?;
            self.buf.extend_from_slice(&chunk[consumed..]);
        } else {
            self.buf.extend_from_slice(chunk);
            let buf = std::mem::take(&mut self.buf);
            let consumed = self.parse_events(&buf, self.resume, &mut each);
            self.buf = buf;
            self.buf.advance(consumed?);
        }
        // A blank line is found from its first `\n` with up to two bytes after it: the last
        // three bytes are looked at again when more arrive.
        self.resume = self.buf.len().saturating_sub(3);
        Ok(())
    }

    /// Bytes of an unfinished event still buffered.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Bytes examined so far (linearity: about the bytes fed, never their square).
    pub fn scanned(&self) -> u64 {
        self.scanned
    }

    /// Parses the events completed in `bytes`, searching for blank lines from `from`; returns
    /// how many bytes they took.
    fn parse_events(
        &mut self,
        bytes: &[u8],
        from: usize,
        each: &mut impl FnMut(EventRef<'_>),
    ) -> Result<usize, ProviderError> {
        let mut start = 0;
        let mut from = from;
        while let Some((end, sep)) = find_boundary(bytes, from) {
            self.scanned += (end + sep - from) as u64;
            self.check(end - start)?;
            if let Some(ev) = parse_event(&bytes[start..end]) {
                each(ev);
            }
            start = end + sep;
            from = start;
        }
        self.scanned += bytes.len().saturating_sub(from) as u64;
        self.check(bytes.len() - start)?;
        Ok(start)
    }

    fn check(&self, event_len: usize) -> Result<(), ProviderError> {
        if event_len > self.max_event {
            let mut e = ProviderError::new(
                ErrorKind::Protocol,
                format!("upstream stream event exceeds {} bytes", self.max_event),
            );
            e.code = Some(EVENT_TOO_LARGE.to_owned());
            return Err(e);
        }
        Ok(())
    }
}

/// The first blank line at or after `from`: `(where it starts, its length)` for `\n\n` or
/// `\r\n\r\n`.
fn find_boundary(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    for i in memchr::memchr_iter(b'\n', buf.get(from..)?).map(|i| i + from) {
        match buf.get(i + 1) {
            Some(b'\n') => return Some((i, 2)),
            Some(b'\r') if i > 0 && buf[i - 1] == b'\r' && buf.get(i + 2) == Some(&b'\n') => return Some((i - 1, 4)),
            _ => {}
        }
    }
    None
}

fn parse_event(raw: &[u8]) -> Option<EventRef<'_>> {
    let text = std::str::from_utf8(raw).ok()?;
    // The usual event, one `data:` line, read without the line and field search below (which
    // reads it the same way).
    if let Some(value) = text.strip_prefix("data:") {
        if memchr::memchr2(b'\n', b'\r', value.as_bytes()).is_none() {
            return Some(EventRef {
                event: "",
                data: Cow::Borrowed(value.strip_prefix(' ').unwrap_or(value)),
            });
        }
    }
    let mut event = "";
    let mut data: Option<Cow<'_, str>> = None;
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
            "event" => event = value,
            "data" => match &mut data {
                None => data = Some(Cow::Borrowed(value)),
                Some(d) => {
                    let d = d.to_mut();
                    d.push('\n');
                    d.push_str(value);
                }
            },
            _ => {}
        }
    }
    (data.is_some() || !event.is_empty()).then(|| EventRef {
        event,
        data: data.unwrap_or_default(),
    })
}

/// The raw events of `bytes`, each with its blank line (a trailing unfinished one last), for
/// callers that filter events without re-encoding them.
pub fn split(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        let end = find_boundary(rest, 0).map_or(rest.len(), |(at, sep)| at + sep);
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
        assert!(p.feed(b"event: a\ndata: {\"x\"").unwrap().is_empty());
        let evs = p.feed(b":1}\n\ndata: two\r\n\r\n: comment\n\n").unwrap();
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
    fn events_are_read_in_place_unless_their_data_has_several_lines() {
        let mut p = Parser::default();
        let mut seen = Vec::new();
        p.feed_each(
            b"event: a\r\ndata: {\"x\":1}\r\n\r\ndata: 1\ndata: 2\n\n: c\n\ndata",
            |ev| {
                seen.push((
                    ev.event.to_owned(),
                    matches!(ev.data, Cow::Borrowed(_)),
                    ev.into_owned().data,
                ));
            },
        )
        .unwrap();
        assert_eq!(
            seen,
            [
                ("a".to_owned(), true, "{\"x\":1}".to_owned()),
                (String::new(), false, "1\n2".to_owned()),
            ]
        );
        assert_eq!(p.pending(), 4);
        let mut rest = Vec::new();
        p.feed_each(b": 3\n\n", |ev| rest.push(ev.into_owned())).unwrap();
        assert_eq!(
            rest,
            [Event {
                event: String::new(),
                data: "3".into()
            }]
        );
    }

    #[test]
    fn a_one_line_data_event_reads_as_any_other() {
        let raws = [
            "data: {\"x\":1}",
            "data:{}",
            "data:",
            "data:  two spaces",
            "data: a\rb",
            "data: x\r",
            "data: a\ndata: b",
            "data",
        ];
        for raw in raws {
            let mut p = Parser::default();
            let evs = p.feed(format!("{raw}\n\n").as_bytes()).unwrap();
            let data: Vec<&str> = evs.iter().map(|e| e.data.as_str()).collect();
            let expected: &[&str] = match raw {
                "data: {\"x\":1}" => &["{\"x\":1}"],
                "data:{}" => &["{}"],
                "data:" | "data" => &[""],
                "data:  two spaces" => &[" two spaces"],
                "data: a\rb" => &["a\rb"],
                "data: x\r" => &["x"],
                _ => &["a\nb"],
            };
            assert_eq!(data, expected, "{raw:?}");
        }
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
        assert!(p.feed(b"data: 1\n").unwrap().is_empty());
        assert_eq!(p.feed(b"\ndata: 2\r\n\r").unwrap().len(), 1);
        let evs = p.feed(b"\ndata: 3\n\ndata: 4").unwrap();
        assert_eq!(evs.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(), ["2", "3"]);
        assert_eq!(p.pending(), 7);
        // LF inside a CRLF stream is not a blank line.
        let mut q = Parser::default();
        assert!(q.feed(b"data: a\r\ndata: b\r\n").unwrap().is_empty());
        assert_eq!(q.feed(b"\r\n").unwrap()[0].data, "a\nb");
    }

    #[test]
    fn an_endless_event_is_refused() {
        let mut p = Parser::default();
        let mut err = None;
        let piece = vec![b'x'; 64 * 1024];
        assert!(p.feed(b"data: ").unwrap().is_empty());
        for _ in 0..32 {
            if let Err(e) = p.feed(&piece) {
                err = Some(e);
                break;
            }
        }
        let err = err.expect("a 2 MiB event without a blank line is refused");
        assert_eq!(err.kind, ErrorKind::Protocol);
        assert_eq!(err.message, "upstream stream event exceeds 1048576 bytes");
        assert_eq!(
            err.code.as_deref(),
            Some(EVENT_TOO_LARGE),
            "the gateway counts these by code"
        );
        // In one piece too, and with a limit of one's own.
        let mut q = Parser::with_max_event(10);
        assert!(q.feed(b"data: 12345678901\n\n").is_err());
        let mut r = Parser::with_max_event(10);
        assert_eq!(r.feed(b"data: 1234\n\n").unwrap()[0].data, "1234");
    }

    #[test]
    fn one_byte_chunks_are_scanned_once() {
        // 10 MiB of events fed one byte at a time: every byte is scanned a bounded number of
        // times (the old parser rescanned the whole unfinished event on every chunk).
        let event = format!("data: {}\n\n", "y".repeat(512 * 1024));
        let stream = event.repeat(20);
        let mut p = Parser::default();
        let mut n = 0;
        for b in stream.as_bytes() {
            n += p.feed(std::slice::from_ref(b)).unwrap().len();
        }
        assert_eq!(n, 20);
        assert_eq!(p.pending(), 0);
        assert!(
            p.scanned() <= 5 * stream.len() as u64,
            "{} bytes scanned for {}",
            p.scanned(),
            stream.len()
        );
    }
}
