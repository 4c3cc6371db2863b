//! Batch input files name routes, as every other request does: while an upload streams to the
//! provider, each JSONL line of its `file` part gets the upstream model of the route its
//! `body.model` names (the backend on the provider the file goes to). Every other byte is kept:
//! the model's JSON string is replaced where it stands, nothing is re-encoded.
//!
//! The body is read part by part and the file line by line, never whole: a line is held until
//! its newline, at most the gateway's `maxRequestBytes` (the bound of any request body it reads
//! whole; the upload as a whole has the same bound, so it is refused with 413 first). A file whose `purpose` part came first and is not
//! `batch` goes through untouched; one whose purpose comes after it is read as batch input (a
//! line without `body.model`, as in every other purpose's files, is kept as it is). A model that
//! names no route is the provider's own and is kept; a route with no backend on the file's
//! provider, or one the key may not use, fails the upload.
//!
//! It must not buffer a whole part or parse more of a line than `body.model`.

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::audio::multipart::{find, malformed, part_name};
use crate::error::GatewayError;

/// The most a part's headers, or the `purpose` value, may take.
const SMALL_BYTES: usize = 16 * 1024;

/// What the part being read is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    /// `purpose`: its value is kept to decide on the file.
    Purpose,
    /// The file, read line by line.
    Lines,
    /// Anything else, forwarded as it comes.
    Other,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// At a `--boundary` line (the body's first, or the one after a part).
    Delimiter,
    /// In a part's content.
    Content(Part),
    /// After the closing delimiter.
    Epilogue,
}

/// The rewriting of one upload; `models` maps a line's model to the upstream one (`None`:
/// keep it).
pub(super) struct Rewrite<F> {
    dash_boundary: Vec<u8>,
    /// `\r\n--boundary`: the end of a part's content.
    delimiter: Vec<u8>,
    state: State,
    buf: BytesMut,
    purpose: Option<String>,
    /// Lines of the file read so far, for messages.
    line: usize,
    /// The longest line held to read its model.
    line_limit: usize,
    /// How much of `buf`'s start is known to hold no start of a delimiter, and no newline: a
    /// long line arriving in small chunks is searched once, not once a chunk.
    clear_of_delimiter: usize,
    clear_of_newline: usize,
    models: F,
}

impl<F> Rewrite<F>
where
    F: FnMut(usize, &str) -> Result<Option<String>, GatewayError>,
{
    /// The rewriting of a `multipart/form-data` body with `boundary`, lines of at most
    /// `line_limit` bytes.
    pub(super) fn new(boundary: &str, line_limit: usize, models: F) -> Self {
        let dash_boundary = [b"--", boundary.as_bytes()].concat();
        let delimiter = [b"\r\n", dash_boundary.as_slice()].concat();
        Self {
            dash_boundary,
            delimiter,
            state: State::Delimiter,
            buf: BytesMut::new(),
            purpose: None,
            line: 0,
            line_limit,
            clear_of_delimiter: 0,
            clear_of_newline: 0,
            models,
        }
    }

    /// Reads `chunk`; what may be sent on is appended to `out`.
    pub(super) fn push(&mut self, chunk: &[u8], out: &mut Vec<Bytes>) -> Result<(), GatewayError> {
        self.buf.extend_from_slice(chunk);
        while self.step(out)? {}
        Ok(())
    }

    /// The body ended: what is left goes as it is (a body cut short is the provider's to refuse).
    pub(super) fn finish(&mut self, out: &mut Vec<Bytes>) -> Result<(), GatewayError> {
        if self.state == State::Content(Part::Lines) && !self.buf.is_empty() {
            return Err(malformed());
        }
        if !self.buf.is_empty() {
            out.push(self.buf.split().freeze());
        }
        Ok(())
    }

    /// One step; `false` when more of the body is needed.
    fn step(&mut self, out: &mut Vec<Bytes>) -> Result<bool, GatewayError> {
        match self.state {
            State::Epilogue => {
                if !self.buf.is_empty() {
                    out.push(self.buf.split().freeze());
                }
                Ok(false)
            }
            State::Delimiter => {
                let after = self.dash_boundary.len();
                if self.buf.len() < after + 2 {
                    return Ok(false);
                }
                if !self.buf.starts_with(&self.dash_boundary) {
                    return Err(malformed());
                }
                if &self.buf[after..after + 2] == b"--" {
                    self.state = State::Epilogue;
                    return Ok(true);
                }
                if &self.buf[after..after + 2] != b"\r\n" {
                    return Err(malformed());
                }
                let Some(end) = find(&self.buf[after + 2..], b"\r\n\r\n") else {
                    if self.buf.len() > SMALL_BYTES {
                        return Err(malformed());
                    }
                    return Ok(false);
                };
                let content = after + 2 + end + 4;
                let part = match part_name(&self.buf[after + 2..after + 2 + end]).as_deref() {
                    Some("purpose") => Part::Purpose,
                    Some("file") if self.purpose.as_deref().is_none_or(|p| p == "batch") => Part::Lines,
                    Some(_) => Part::Other,
                    None => return Err(malformed()),
                };
                out.push(self.buf.split_to(content).freeze());
                self.state = State::Content(part);
                Ok(true)
            }
            State::Content(part) => {
                let from = self.clear_of_delimiter;
                let end = find(&self.buf[from..], &self.delimiter).map(|at| from + at);
                let before = self.buf.len();
                match part {
                    Part::Other => {
                        let upto = end.unwrap_or_else(|| self.buf.len().saturating_sub(self.delimiter.len() - 1));
                        if upto > 0 {
                            out.push(self.buf.split_to(upto).freeze());
                        }
                    }
                    Part::Purpose => match end {
                        Some(at) => {
                            self.purpose = Some(String::from_utf8_lossy(&self.buf[..at]).trim().to_owned());
                            out.push(self.buf.split_to(at).freeze());
                        }
                        None if self.buf.len() > SMALL_BYTES => return Err(malformed()),
                        None => {}
                    },
                    Part::Lines => self.lines(end, out)?,
                }
                match end {
                    Some(_) => {
                        // The `\r\n` before the next `--boundary`.
                        out.push(self.buf.split_to(2).freeze());
                        self.state = State::Delimiter;
                        self.clear_of_delimiter = 0;
                        self.clear_of_newline = 0;
                        Ok(true)
                    }
                    None => {
                        // No delimiter starts before its length from the end, once the bytes
                        // sent on are taken off.
                        let sent = before - self.buf.len();
                        let searched = before.saturating_sub(self.delimiter.len() - 1);
                        self.clear_of_delimiter = searched.saturating_sub(sent);
                        Ok(false)
                    }
                }
            }
        }
    }

    /// The file's whole lines in the buffer, rewritten; with `end` (where the part ends), its
    /// last line too.
    fn lines(&mut self, end: Option<usize>, out: &mut Vec<Bytes>) -> Result<(), GatewayError> {
        // Without the part's end in sight, a newline within the last `delimiter` bytes may be
        // the delimiter's own: it waits for more.
        let whole = match end {
            Some(at) => at,
            None => self.buf.len().saturating_sub(self.delimiter.len()),
        };
        let mut done = 0;
        let mut from = self.clear_of_newline.min(whole);
        while let Some(nl) = memchr::memchr(b'\n', &self.buf[from..whole]) {
            let line = self.buf[done..from + nl + 1].to_vec();
            self.line += 1;
            out.push(self.rewritten(line)?);
            done = from + nl + 1;
            from = done;
        }
        let _ = self.buf.split_to(done);
        self.clear_of_newline = whole.max(done) - done;
        match end {
            Some(at) => {
                let last = at - done;
                if last > 0 {
                    let line = self.buf.split_to(last).to_vec();
                    self.line += 1;
                    out.push(self.rewritten(line)?);
                }
            }
            None if self.buf.len() > self.line_limit + self.delimiter.len() => {
                return Err(GatewayError::bad_request(
                    format!(
                        "line {} of the batch input file is longer than {} bytes",
                        self.line + 1,
                        self.line_limit
                    ),
                    Some("file"),
                ))
            }
            None => {}
        }
        Ok(())
    }

    fn rewritten(&mut self, line: Vec<u8>) -> Result<Bytes, GatewayError> {
        let Some((span, model)) = model_of(&line) else {
            return Ok(Bytes::from(line));
        };
        let Some(upstream) = (self.models)(self.line, &model)? else {
            return Ok(Bytes::from(line));
        };
        let quoted = serde_json::to_string(&upstream).unwrap_or_default();
        let mut out = Vec::with_capacity(line.len() + quoted.len());
        out.extend_from_slice(&line[..span.start]);
        out.extend_from_slice(quoted.as_bytes());
        out.extend_from_slice(&line[span.end..]);
        Ok(Bytes::from(out))
    }
}

/// Where a batch input line's `body.model` string stands in it (its quotes included), and its
/// value; `None` for a line without one (or not JSON: the provider's to refuse).
fn model_of(line: &[u8]) -> Option<(std::ops::Range<usize>, String)> {
    #[derive(Deserialize)]
    struct Line<'a> {
        #[serde(borrow)]
        body: Option<&'a RawValue>,
    }
    #[derive(Deserialize)]
    struct Body<'a> {
        #[serde(borrow)]
        model: Option<&'a RawValue>,
    }
    let text = std::str::from_utf8(line).ok()?;
    let body = serde_json::from_str::<Line<'_>>(text).ok()?.body?;
    let raw = serde_json::from_str::<Body<'_>>(body.get()).ok()?.model?.get();
    let model = serde_json::from_str::<String>(raw).ok()?;
    // `raw` borrows from `text`: its place is the distance between their starts.
    let start = (raw.as_ptr() as usize).checked_sub(text.as_ptr() as usize)?;
    Some((start..start + raw.len(), model))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(purpose_first: bool, purpose: &str, file: &[u8]) -> Vec<u8> {
        let purpose = format!("--XyZ\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n{purpose}\r\n");
        let file = [
            b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\nContent-Type: application/jsonl\r\n\r\n".as_slice(),
            file,
            b"\r\n",
        ]
        .concat();
        let parts = if purpose_first {
            [purpose.as_bytes(), &file]
        } else {
            [file.as_slice(), purpose.as_bytes()]
        };
        [parts[0], parts[1], b"--XyZ--\r\n"].concat()
    }

    /// `route-a` is served by `gpt-4o-mini`; `forbidden` fails; anything else is kept.
    fn models(_line: usize, m: &str) -> Result<Option<String>, GatewayError> {
        match m {
            "route-a" => Ok(Some("gpt-4o-mini".into())),
            "forbidden" => Err(GatewayError::forbidden("no")),
            _ => Ok(None),
        }
    }

    fn run(input: &[u8], chunk: usize) -> Result<Vec<u8>, GatewayError> {
        let mut r = Rewrite::new("XyZ", 1024, models);
        let mut out = Vec::new();
        for c in input.chunks(chunk.max(1)) {
            r.push(c, &mut out)?;
        }
        r.finish(&mut out)?;
        Ok(out.concat())
    }

    const FILE: &[u8] = b"{\"custom_id\":\"a\", \"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{\"messages\":[{\"role\":\"user\",\"content\":\"model \\\"route-a\\\"\\r\\n--XyZ\"}],  \"model\" : \"route-a\",\"max_tokens\":5}}\r\n\
{\"custom_id\":\"b\",\"body\":{\"model\":\"gpt-4.1\",\"messages\":[]}}\n\
\n\
not json\n\
{\"custom_id\":\"c\",\"body\":{\"model\":\"route-a\"}}";

    #[test]
    fn each_lines_model_is_the_routes_upstream_one_and_every_other_byte_is_kept() {
        let input = body(true, "batch", FILE);
        let expected = String::from_utf8(input.clone())
            .unwrap()
            .replace("\"model\" : \"route-a\"", "\"model\" : \"gpt-4o-mini\"")
            .replace("{\"model\":\"route-a\"}", "{\"model\":\"gpt-4o-mini\"}");
        // Whatever the chunking, byte by byte too.
        for chunk in [1, 2, 3, 7, 64, input.len()] {
            let out = run(&input, chunk).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), expected, "chunks of {chunk}");
        }
    }

    #[test]
    fn a_purpose_after_the_file_reads_it_as_batch_input_and_another_purpose_first_does_not() {
        let out = run(&body(false, "batch", FILE), 5).unwrap();
        assert!(String::from_utf8(out).unwrap().contains("\"model\" : \"gpt-4o-mini\""));
        let input = body(true, "fine-tune", FILE);
        assert_eq!(run(&input, 5).unwrap(), input);
    }

    #[test]
    fn a_refused_model_fails_the_upload_and_so_does_an_endless_line() {
        let file = b"{\"body\":{\"model\":\"route-a\"}}\n{\"body\":{\"model\":\"forbidden\"}}\n";
        let e = run(&body(true, "batch", file), 4).err().unwrap();
        assert_eq!(e.status, http::StatusCode::FORBIDDEN);
        let mut r = Rewrite::new("XyZ", 64 * 1024, models);
        let mut out = Vec::new();
        let head = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\n{\"body\":";
        r.push(head, &mut out).unwrap();
        let chunk = vec![b' '; 1024];
        let mut failed = None;
        for _ in 0..66 {
            if let Err(e) = r.push(&chunk, &mut out) {
                failed = Some(e);
                break;
            }
            out.clear();
        }
        let e = failed.expect("an endless line is refused");
        assert!(e.message.contains("line 1"), "{}", e.message);
        // What was held stays under the bound.
        assert!(r.buf.len() <= 66 * 1024 + head.len());
    }

    #[test]
    fn garbage_is_refused() {
        assert!(run(b"hello, this is not multipart at all", 4).is_err());
    }
}
