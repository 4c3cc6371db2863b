//! Upstream URLs, parsed once per worker thread. Adapters build each upstream URL as a string;
//! parsing it (IDNA host processing included) on every request showed up in `perf` and
//! callgrind under load (bench/results). The distinct URLs are bounded by the config (base URL ×
//! operation × model), so a small per-thread map, cleared when it outgrows its bound, is enough;
//! keyed by the full string, it needs no invalidation when the config changes. Parsed as a URL
//! first (what an adapter builds may need percent-encoding), then kept as the `http::Uri` the
//! client sends.

use std::cell::RefCell;
use std::collections::HashMap;

/// Largest number of URLs one thread keeps before it starts over.
const BOUND: usize = 1024;

thread_local! {
    static URLS: RefCell<HashMap<String, http::Uri>> = RefCell::new(HashMap::new());
}

/// `url` parsed, from this thread's cache when it was seen before.
pub fn parse(url: &str) -> Result<http::Uri, String> {
    URLS.with(|cell| {
        let mut map = cell.borrow_mut();
        if let Some(u) = map.get(url) {
            return Ok(u.clone());
        }
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("invalid upstream URL: {e}"))?;
        let parsed: http::Uri = parsed
            .as_str()
            .parse()
            .map_err(|e| format!("invalid upstream URL: {e}"))?;
        if map.len() >= BOUND {
            map.clear();
        }
        map.insert(url.to_owned(), parsed.clone());
        Ok(parsed)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_once_and_refuses_garbage() {
        let a = parse("http://127.0.0.1:9999/v1/chat/completions").unwrap();
        let b = parse("http://127.0.0.1:9999/v1/chat/completions").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.port_u16(), Some(9999));
        // What a URL parser would encode is encoded.
        let spaced = parse("http://127.0.0.1:9999/v1/models/my model:generate").unwrap();
        assert_eq!(spaced.path(), "/v1/models/my%20model:generate");
        assert!(parse("not a url").is_err());
    }
}
