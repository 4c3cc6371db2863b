//! Vertex AI credentials: Google's OAuth 2.0 JWT-bearer grant for service accounts (RFC 7523).
//!
//! [`token_request`] signs an RS256 assertion (`iss` = the account's email, `scope` =
//! cloud-platform, `aud` = its `token_uri`, one hour from `iat`) and builds the form POST to the
//! account's `token_uri`; [`parse_token`] reads the access token and its lifetime from the answer.
//! Pure: the gateway sends the request, caches the token until shortly before it expires, and
//! passes it to the adapter in [`crate::Target::bearer`].
//!
//! Reference: Google Identity, "Using OAuth 2.0 for Server to Server Applications" (preparing
//! and signing the JWT, the access-token request and response); IAM, service-account key files.

use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use serde::Deserialize;
use serde_json::json;

use crate::{ErrorKind, ProviderError, UpstreamRequest};

/// The scope Vertex AI needs.
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Google's token endpoint, for key files that do not name one.
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// Lifetime asked for the assertion (Google's maximum).
const ASSERTION_LIFETIME: u64 = 3600;
/// The longest `expires_in` believed (a day; Google's tokens live an hour), so the gateway's
/// `Instant::now() + ttl` cannot overflow on a bogus answer.
const MAX_TOKEN_LIFETIME: u64 = 24 * 3600;
const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// The fields of a service-account key file we use. No `Debug`: it holds the private key.
#[derive(Deserialize)]
struct ServiceAccount {
    client_email: String,
    private_key: String,
    #[serde(default)]
    private_key_id: Option<String>,
    #[serde(default)]
    token_uri: Option<String>,
}

fn auth(message: impl Into<String>) -> ProviderError {
    ProviderError::new(ErrorKind::Auth, message)
}

fn parse_account(json: &str) -> Result<ServiceAccount, ProviderError> {
    // serde's message could quote the document, key included: keep only the position.
    serde_json::from_str(json).map_err(|e| {
        auth(format!(
            "the Vertex AI credentials are not a service-account key file (line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}

/// The `project_id` of a service-account key file.
pub fn project_id(service_account_json: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Project {
        project_id: Option<String>,
    }
    serde_json::from_str::<Project>(service_account_json)
        .ok()?
        .project_id
        .filter(|p| !p.is_empty())
}

/// The DER of a PKCS#8 `PRIVATE KEY` PEM block.
fn pkcs8_der(pem: &str) -> Result<Vec<u8>, ProviderError> {
    const BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
    const END: &str = "-----END PRIVATE KEY-----";
    let body = pem
        .split_once(BEGIN)
        .and_then(|(_, rest)| rest.split_once(END))
        .map(|(body, _)| body)
        .ok_or_else(|| auth("the service account's private_key is not a PKCS#8 PEM key"))?;
    let b64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    STANDARD
        .decode(b64)
        .map_err(|_| auth("the service account's private_key is not valid base64"))
}

/// Signs `message` with RSASSA-PKCS1-v1_5 over SHA-256 (JWS `RS256`) using a PKCS#8 RSA key.
fn sign_rs256(pkcs8_der: &[u8], message: &[u8]) -> Result<Vec<u8>, ProviderError> {
    use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
    let key = RsaKeyPair::from_pkcs8(pkcs8_der).map_err(|e| {
        auth(format!(
            "the service account's private_key is not a usable RSA key: {e}"
        ))
    })?;
    let mut signature = vec![0; key.public().modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        message,
        &mut signature,
    )
    .map_err(|_| auth("signing the service-account assertion failed"))?;
    Ok(signature)
}

/// The signed JWT assertion; `sign` receives the PKCS#8 key and the signing input.
fn assertion(
    sa: &ServiceAccount,
    token_uri: &str,
    now: u64,
    sign: impl FnOnce(&[u8], &[u8]) -> Result<Vec<u8>, ProviderError>,
) -> Result<String, ProviderError> {
    let mut header = json!({"alg": "RS256", "typ": "JWT"});
    if let Some(kid) = sa.private_key_id.as_deref().filter(|k| !k.is_empty()) {
        header["kid"] = kid.into();
    }
    let claims = json!({
        "iss": sa.client_email,
        "scope": SCOPE,
        "aud": token_uri,
        "iat": now,
        "exp": now.saturating_add(ASSERTION_LIFETIME),
    });
    let mut jwt = URL_SAFE_NO_PAD.encode(header.to_string());
    jwt.push('.');
    jwt.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
    let signature = sign(&pkcs8_der(&sa.private_key)?, jwt.as_bytes())?;
    jwt.push('.');
    jwt.push_str(&URL_SAFE_NO_PAD.encode(signature));
    Ok(jwt)
}

fn request_with(
    service_account_json: &str,
    now: SystemTime,
    sign: impl FnOnce(&[u8], &[u8]) -> Result<Vec<u8>, ProviderError>,
) -> Result<UpstreamRequest, ProviderError> {
    let sa = parse_account(service_account_json)?;
    let token_uri = sa
        .token_uri
        .as_deref()
        .filter(|u| !u.is_empty())
        .unwrap_or(DEFAULT_TOKEN_URI)
        .to_owned();
    let now = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let jwt = assertion(&sa, &token_uri, now, sign)?;
    // The assertion is base64url and dots: nothing to percent-encode.
    let body = format!("grant_type={}&assertion={jwt}", GRANT_TYPE.replace(':', "%3A"));
    let mut headers = HeaderMap::with_capacity(1);
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    Ok(UpstreamRequest {
        method: Method::POST,
        url: token_uri,
        headers,
        body: Bytes::from(body),
    })
}

/// The token request of a service account: a form POST of a signed JWT assertion to its
/// `token_uri`, issued at `now`.
pub fn token_request(service_account_json: &str, now: SystemTime) -> Result<UpstreamRequest, ProviderError> {
    request_with(service_account_json, now, sign_rs256)
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

/// Reads `{"access_token","expires_in","token_type"}`; an OAuth error body
/// (`{"error","error_description"}`) is an [`ErrorKind::Auth`] error.
pub fn parse_token(body: &[u8]) -> Result<(String, Duration), ProviderError> {
    let r: TokenResponse = serde_json::from_slice(body)
        .map_err(|_| ProviderError::new(ErrorKind::Protocol, "the token endpoint sent an unreadable answer"))?;
    match r {
        TokenResponse {
            access_token: Some(token),
            expires_in,
            ..
        } if !token.is_empty() => {
            let ttl = expires_in.unwrap_or(ASSERTION_LIFETIME).min(MAX_TOKEN_LIFETIME);
            Ok((token, Duration::from_secs(ttl)))
        }
        TokenResponse {
            error,
            error_description,
            ..
        } => {
            let code = error.unwrap_or_else(|| "no_access_token".into());
            let message = match error_description {
                Some(d) if !d.is_empty() => format!("Google refused the service account's token request: {code}: {d}"),
                _ => format!("Google refused the service account's token request: {code}"),
            };
            Err(ProviderError {
                code: Some(code),
                ..auth(message)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> String {
        std::fs::read_to_string(format!(
            "{}/testdata/vertex/test-service-account.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    fn decode(part: &str) -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    /// 2025-01-01T00:00:00Z.
    const NOW: u64 = 1_735_689_600;

    #[test]
    fn token_request_carries_a_jwt_bearer_assertion() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(NOW);
        let mut signed = None;
        let req = request_with(&account(), now, |der, input| {
            signed = Some((der.len(), input.to_vec()));
            Ok(b"signature".to_vec())
        })
        .unwrap();
        assert_eq!(req.method, Method::POST);
        assert_eq!(req.url, "https://oauth2.googleapis.com/token");
        assert_eq!(
            req.headers[http::header::CONTENT_TYPE],
            "application/x-www-form-urlencoded"
        );
        let body = std::str::from_utf8(&req.body).unwrap();
        let jwt = body
            .strip_prefix("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=")
            .unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(
            decode(parts[0]),
            json!({"alg": "RS256", "typ": "JWT", "kid": "0123456789abcdef0123456789abcdef01234567"})
        );
        assert_eq!(
            decode(parts[1]),
            json!({
                "iss": "gateway@switchyard-test.iam.gserviceaccount.com",
                "scope": "https://www.googleapis.com/auth/cloud-platform",
                "aud": "https://oauth2.googleapis.com/token",
                "iat": NOW,
                "exp": NOW + 3600,
            })
        );
        assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).unwrap(), b"signature");
        // The signer saw the PKCS#8 DER of the key and exactly `header.claims`.
        let (der_len, input) = signed.unwrap();
        assert!(der_len > 1000, "a 2048-bit PKCS#8 key, got {der_len} bytes");
        assert_eq!(input, format!("{}.{}", parts[0], parts[1]).into_bytes());
    }

    #[test]
    fn token_request_is_signed_with_the_accounts_key() {
        let req = token_request(&account(), SystemTime::UNIX_EPOCH + Duration::from_secs(NOW)).unwrap();
        let body = std::str::from_utf8(&req.body).unwrap();
        let jwt = body.rsplit_once("assertion=").unwrap().1;
        let (input, signature) = jwt.rsplit_once('.').unwrap();
        let public = std::fs::read_to_string(format!(
            "{}/testdata/vertex/test-key.rsa-public.pem",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let b64: String = public.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = STANDARD.decode(b64).unwrap();
        ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, der)
            .verify(input.as_bytes(), &URL_SAFE_NO_PAD.decode(signature).unwrap())
            .unwrap();
    }

    #[test]
    fn bad_key_files_are_auth_errors_that_do_not_echo_the_key() {
        let err = request_with(
            "{\"private_key\": \"-----BEGIN PRIVATE KEY-----secret",
            SystemTime::UNIX_EPOCH,
            |_, _| Ok(vec![]),
        )
        .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Auth);
        assert!(!err.message.contains("secret"), "{}", err.message);
        let not_pem = r#"{"client_email":"a@b","private_key":"not a key"}"#;
        let err = request_with(not_pem, SystemTime::UNIX_EPOCH, |_, _| Ok(vec![])).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Auth);
        assert!(!err.message.contains("not a key"));
    }

    #[test]
    fn project_id_is_read_from_the_key_file() {
        assert_eq!(project_id(&account()).as_deref(), Some("switchyard-test"));
        assert_eq!(project_id("{}"), None);
    }

    #[test]
    fn token_answers_are_parsed() {
        // Response body as shown in "Using OAuth 2.0 for Server to Server Applications".
        let (token, ttl) =
            parse_token(br#"{"access_token":"1/8xbJqaOZXSUZbHLl5EOtu1pxz3fmmetKx9W8CV4t79M","scope":"https://www.googleapis.com/auth/prediction","token_type":"Bearer","expires_in":3600}"#)
                .unwrap();
        assert_eq!(token, "1/8xbJqaOZXSUZbHLl5EOtu1pxz3fmmetKx9W8CV4t79M");
        assert_eq!(ttl, Duration::from_secs(3600));
        // A bogus lifetime is capped, so `Instant::now() + ttl` cannot overflow.
        let (_, ttl) = parse_token(format!(r#"{{"access_token":"t","expires_in":{}}}"#, u64::MAX).as_bytes()).unwrap();
        assert_eq!(ttl, Duration::from_secs(MAX_TOKEN_LIFETIME));
        let err =
            parse_token(br#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Auth);
        assert_eq!(err.code.as_deref(), Some("invalid_grant"));
        assert!(err.message.contains("Invalid JWT Signature."));
        assert_eq!(parse_token(b"<html>").unwrap_err().kind, ErrorKind::Protocol);
    }
}
