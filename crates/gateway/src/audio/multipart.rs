//! Just enough of `multipart/form-data` to route an upload: find the `model` part in a body
//! that arrives in pieces (clients send parts in any order: the openai SDK sends its fields
//! before the file, `curl -F file=@a.wav -F model=whisper-1` the file first), and where the
//! `file` part's content starts (for the WAV header). Parts are never decoded or copied.

use std::ops::Range;

use crate::error::GatewayError;

/// The most a part's headers may take.
const MAX_PART_HEADERS: usize = 16 * 1024;

/// The boundary of a `multipart/form-data` content type.
pub(crate) fn boundary(content_type: &str) -> Option<&str> {
    let (mime, params) = content_type.split_once(';')?;
    if !mime.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"'))
            .filter(|b| !b.is_empty())
    })
}

/// A scan of a growing multipart body: call [`Scan::advance`] with the whole body read so far
/// each time more arrives; it resumes where it stopped, so a large part is searched once.
pub(crate) struct Scan {
    /// `--boundary`.
    dash_boundary: Vec<u8>,
    /// `\r\n--boundary`: the end of a part's content.
    delimiter: Vec<u8>,
    /// Where the next delimiter line starts (its `--boundary`), while between parts.
    next: usize,
    /// The part being read: its name and where its content starts.
    part: Option<(String, usize)>,
    /// Where to resume searching for the current part's end.
    search: usize,
    /// The `model` part's content, once whole.
    pub(crate) model: Option<Range<usize>>,
    /// Where the `file` part's content starts, once its headers are read.
    pub(crate) file: Option<usize>,
    /// The closing delimiter was read.
    pub(crate) ended: bool,
}

impl Scan {
    pub(crate) fn new(boundary: &str) -> Self {
        let dash_boundary = [b"--", boundary.as_bytes()].concat();
        let delimiter = [b"\r\n", dash_boundary.as_slice()].concat();
        Self {
            dash_boundary,
            delimiter,
            next: 0,
            part: None,
            search: 0,
            model: None,
            file: None,
            ended: false,
        }
    }

    /// Scans `body` (everything read so far) until the `model` part is whole, the body ends
    /// or more is needed. Returns whether the model part is found.
    pub(crate) fn advance(&mut self, body: &[u8]) -> Result<bool, GatewayError> {
        while self.model.is_none() && !self.ended {
            match &self.part {
                None => {
                    let at = self.next;
                    let after = at + self.dash_boundary.len();
                    if body.len() < after + 2 {
                        return Ok(false);
                    }
                    if !body[at..].starts_with(&self.dash_boundary) {
                        return Err(malformed());
                    }
                    if &body[after..after + 2] == b"--" {
                        self.ended = true;
                        break;
                    }
                    if &body[after..after + 2] != b"\r\n" {
                        return Err(malformed());
                    }
                    let headers = after + 2;
                    let Some(end) = find(&body[headers..], b"\r\n\r\n") else {
                        if body.len() - headers > MAX_PART_HEADERS {
                            return Err(malformed());
                        }
                        return Ok(false);
                    };
                    let name = part_name(&body[headers..headers + end]).ok_or_else(malformed)?;
                    let content = headers + end + 4;
                    if name == "file" && self.file.is_none() {
                        self.file = Some(content);
                    }
                    self.part = Some((name, content));
                    self.search = content;
                }
                Some((name, content)) => {
                    let Some(end) = find(&body[self.search..], &self.delimiter) else {
                        // The delimiter may straddle what has arrived: resume just before the end.
                        self.search = body.len().saturating_sub(self.delimiter.len() - 1).max(self.search);
                        return Ok(false);
                    };
                    let end = self.search + end;
                    if name == "model" {
                        self.model = Some(*content..end);
                    }
                    self.next = end + 2;
                    self.part = None;
                }
            }
        }
        Ok(self.model.is_some())
    }
}

/// Where the `file` part's content starts in the first bytes of a body, if they show it.
pub(crate) fn file_start(boundary: &str, head: &[u8]) -> Option<usize> {
    let mut scan = Scan::new(boundary);
    // Scanning stops at the model part; the file part, if it comes first, is marked by then.
    let _ = scan.advance(head);
    if scan.file.is_none() {
        if let Some(m) = scan.model.clone() {
            let mut rest = Scan::new(boundary);
            rest.next = m.end + 2;
            let _ = rest.advance(head);
            return rest.file;
        }
    }
    scan.file
}

pub(crate) fn malformed() -> GatewayError {
    GatewayError::bad_request("the multipart/form-data body is malformed", None)
}

/// `name` of a part's `Content-Disposition: form-data; name="..."`.
pub(crate) fn part_name(headers: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(headers).ok()?;
    let disposition = text
        .split("\r\n")
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.trim().eq_ignore_ascii_case("content-disposition"))
        })?
        .1;
    disposition.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("name")
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(parts: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = Vec::new();
        for (name, value) in parts {
            b.extend_from_slice(b"--XyZ\r\n");
            if *name == "file" {
                b.extend_from_slice(b"Content-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\n");
            } else {
                b.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes());
            }
            b.extend_from_slice(value);
            b.extend_from_slice(b"\r\n");
        }
        b.extend_from_slice(b"--XyZ--\r\n");
        b
    }

    #[test]
    fn the_boundary_comes_from_the_content_type() {
        assert_eq!(boundary("multipart/form-data; boundary=XyZ"), Some("XyZ"));
        assert_eq!(
            boundary("Multipart/Form-Data; charset=utf-8; boundary=\"a b\""),
            Some("a b")
        );
        assert_eq!(boundary("application/json"), None);
        assert_eq!(boundary("multipart/form-data"), None);
    }

    #[test]
    fn the_model_is_found_after_the_file_in_a_body_read_byte_by_byte() {
        let audio = b"RIFF....WAVE\r\n--Xy not the boundary".repeat(50);
        let b = body(&[("file", &audio), ("model", b"whisper"), ("language", b"en")]);
        let mut scan = Scan::new("XyZ");
        let mut found_at = None;
        for n in 0..=b.len() {
            if scan.advance(&b[..n]).unwrap() {
                found_at = Some(n);
                break;
            }
        }
        let m = scan.model.clone().unwrap();
        assert_eq!(&b[m], b"whisper");
        // Found once the delimiter after the value arrived, before the rest of the body.
        assert!(found_at.unwrap() < b.len());
        assert_eq!(&b[scan.file.unwrap()..scan.file.unwrap() + 4], b"RIFF");
    }

    #[test]
    fn the_model_first_and_the_file_after_it() {
        let b = body(&[("model", b"whisper"), ("file", b"RIFFxxxxWAVE")]);
        let mut scan = Scan::new("XyZ");
        assert!(scan.advance(&b).unwrap());
        assert_eq!(scan.file, None, "the scan stops at the model");
        let at = file_start("XyZ", &b).unwrap();
        assert_eq!(&b[at..at + 4], b"RIFF");
    }

    #[test]
    fn a_body_without_a_model_ends_and_garbage_is_refused() {
        let b = body(&[("file", b"abc")]);
        let mut scan = Scan::new("XyZ");
        assert!(!scan.advance(&b).unwrap());
        assert!(scan.ended);
        assert!(Scan::new("XyZ").advance(b"hello world, no multipart here").is_err());
    }
}
