//! AWS Signature Version 4 verification, as Bedrock's front door does it: rebuild the canonical
//! request from what arrived, derive the signing key from the test secret and the credential
//! scope, and compare signatures.
//!
//! Follows the AWS SigV4 reference ("Create a canonical request", "Create a string to sign",
//! "Calculate the signature"): URI paths double-encoded (every service but S3), query parameters
//! sorted and strictly encoded, header values trimmed with inner spaces collapsed, the payload
//! hash taken from `x-amz-content-sha256` when sent. Only the access key below is known.

use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, Method, Uri};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The only access key the mock knows.
pub const TEST_ACCESS_KEY: &str = "AKIDSWITCHYARDTEST";
/// Its secret.
pub const TEST_SECRET_KEY: &str = "switchyard-test-secret";
/// How far the request time may be from ours (AWS allows 5 minutes; a little more is kinder
/// to slow test machines and does not weaken the check that matters: the signature).
const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

/// Why a request was refused; each maps to one Bedrock error.
#[derive(Debug, PartialEq, Eq)]
pub enum SigError {
    /// No `Authorization` header: `MissingAuthenticationTokenException`.
    Missing,
    /// An access key the mock does not know: `UnrecognizedClientException`.
    UnknownKey,
    /// A header that is not SigV4 or is incomplete: `IncompleteSignatureException`.
    Malformed(String),
    /// The scope names another service.
    WrongService(String),
    /// The request time is too far from now: `InvalidSignatureException` ("Signature expired").
    Expired(String),
    /// The signature does not match: `InvalidSignatureException`.
    Mismatch,
}

struct Authorization<'a> {
    access_key: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: &'a str,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Result<Authorization<'_>, SigError> {
    let rest = value.strip_prefix("AWS4-HMAC-SHA256").ok_or_else(|| {
        SigError::Malformed(format!(
            "Authorization header requires 'AWS4-HMAC-SHA256' algorithm, got '{value}'"
        ))
    })?;
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed_headers = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let (Some(credential), Some(signed_headers), Some(signature)) = (credential, signed_headers, signature) else {
        return Err(SigError::Malformed(
            "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters.".into(),
        ));
    };
    let mut scope = credential.splitn(5, '/');
    let (Some(access_key), Some(date), Some(region), Some(service), Some("aws4_request")) =
        (scope.next(), scope.next(), scope.next(), scope.next(), scope.next())
    else {
        return Err(SigError::Malformed(format!(
            "Credential should be scoped to a valid region and terminated with 'aws4_request', got '{credential}'."
        )));
    };
    Ok(Authorization {
        access_key,
        date,
        region,
        service,
        signed_headers,
        signature,
    })
}

/// Verifies the SigV4 signature of a request for `expected_service` at time `now`.
pub fn verify(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    expected_service: &str,
    now: SystemTime,
) -> Result<(), SigError> {
    let Some(value) = headers.get("authorization") else {
        return Err(SigError::Missing);
    };
    let value = value
        .to_str()
        .map_err(|_| SigError::Malformed("Authorization header is not valid text".into()))?;
    let auth = parse_authorization(value)?;
    if auth.access_key != TEST_ACCESS_KEY {
        return Err(SigError::UnknownKey);
    }
    if auth.service != expected_service {
        return Err(SigError::WrongService(auth.service.to_owned()));
    }
    let amz_date = headers.get("x-amz-date").and_then(|v| v.to_str().ok()).ok_or_else(|| {
        SigError::Malformed(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.".into(),
        )
    })?;
    if !amz_date.starts_with(auth.date) || auth.date.len() != 8 {
        return Err(SigError::Malformed(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}'",
            auth.date,
            amz_date.get(..8).unwrap_or(amz_date)
        )));
    }
    check_skew(amz_date, now)?;

    let canonical = canonical_request(method, uri, headers, body, auth.signed_headers)?;
    let scope = format!("{}/{}/{}/aws4_request", auth.date, auth.region, auth.service);
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let k_date = hmac(format!("AWS4{TEST_SECRET_KEY}").as_bytes(), auth.date.as_bytes());
    let k_region = hmac(&k_date, auth.region.as_bytes());
    let k_service = hmac(&k_region, auth.service.as_bytes());
    let k_signing = hmac(&k_service, b"aws4_request");
    let expected = hex::encode(hmac(&k_signing, string_to_sign.as_bytes()));
    if constant_time_eq(expected.as_bytes(), auth.signature.as_bytes()) {
        Ok(())
    } else {
        Err(SigError::Mismatch)
    }
}

fn check_skew(amz_date: &str, now: SystemTime) -> Result<(), SigError> {
    let parsed = jiff::fmt::strtime::parse("%Y%m%dT%H%M%SZ", amz_date)
        .and_then(|t| t.to_datetime())
        .and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC))
        .map_err(|_| {
            SigError::Malformed(format!(
                "X-Amz-Date must be in the ISO8601 Long Format, got '{amz_date}'"
            ))
        })?;
    let request_time = SystemTime::from(parsed.timestamp());
    let skew = match now.duration_since(request_time) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    if skew > MAX_SKEW {
        return Err(SigError::Expired(format!(
            "Signature expired: {amz_date} is now earlier or later than the allowed 15 minute window."
        )));
    }
    Ok(())
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Percent-encodes everything but the unreserved characters (and `/` when `keep_slash`).
fn uri_encode(input: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(input.len() * 3 / 2);
    for &b in input.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Removes `.` and `..` segments, as the SDKs do before signing.
fn normalize_path(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let joined = segments.join("/");
    if joined.is_empty() {
        "/".to_owned()
    } else if joined.starts_with('/') {
        joined
    } else {
        format!("/{joined}")
    }
}

fn canonical_request(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    signed_headers: &str,
) -> Result<String, SigError> {
    // The path arrives already percent-encoded once; signing encodes it again.
    let path = uri_encode(&normalize_path(uri.path()), true);

    let mut query: Vec<(String, String)> = uri
        .query()
        .map(|q| {
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    (
                        uri_encode(&crate::wire::percent_decode(k, false), false),
                        uri_encode(&crate::wire::percent_decode(v, false), false),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    query.sort();
    let query = query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");

    let mut canonical_headers = String::new();
    for name in signed_headers.split(';') {
        let values: Vec<String> = if name == "host" && headers.get("host").is_none() {
            // HTTP/2 carries the host in :authority.
            uri.authority().map(|a| vec![a.as_str().to_owned()]).unwrap_or_default()
        } else {
            headers
                .get_all(name)
                .iter()
                .map(|v| {
                    String::from_utf8_lossy(v.as_bytes())
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect()
        };
        if values.is_empty() {
            return Err(SigError::Malformed(format!(
                "Signed header '{name}' is missing from the request"
            )));
        }
        canonical_headers.push_str(name);
        canonical_headers.push(':');
        canonical_headers.push_str(&values.join(","));
        canonical_headers.push('\n');
    }

    let payload_hash = match headers.get("x-amz-content-sha256").and_then(|v| v.to_str().ok()) {
        Some(h) => h.to_owned(),
        None => hex::encode(Sha256::digest(body)),
    };
    Ok(format!(
        "{method}\n{path}\n{query}\n{canonical_headers}\n{signed_headers}\n{payload_hash}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_paths_twice() {
        let uri: Uri = "/model/us.anthropic.claude-3-5-sonnet-20241022-v2%3A0/converse"
            .parse()
            .unwrap();
        assert_eq!(
            uri_encode(&normalize_path(uri.path()), true),
            "/model/us.anthropic.claude-3-5-sonnet-20241022-v2%253A0/converse"
        );
        assert_eq!(normalize_path("/a/./b/../c"), "/a/c");
    }

    #[test]
    fn missing_and_unknown_keys() {
        let uri: Uri = "/model/x/converse".parse().unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(
            verify(&Method::POST, &uri, &headers, b"", "bedrock", SystemTime::now()),
            Err(SigError::Missing)
        );
        headers.insert(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDOTHER/20240101/us-east-1/bedrock/aws4_request, SignedHeaders=host, Signature=00"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            verify(&Method::POST, &uri, &headers, b"", "bedrock", SystemTime::now()),
            Err(SigError::UnknownKey)
        );
    }
}
