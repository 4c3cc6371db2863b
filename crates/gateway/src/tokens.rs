//! OAuth2 access tokens for providers that need one (Vertex AI service accounts): fetched with
//! a signed JWT assertion, cached per provider, refreshed five minutes before they expire.

use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use switchyard_config::{CredentialsConfig, ProviderConfig};
use switchyard_providers::gemini::vertex;
use switchyard_providers::{kind_for_status, ErrorKind, ProviderError};
use tokio::sync::Mutex;

/// Refresh this long before expiry.
const EARLY: Duration = Duration::from_secs(300);
/// The most of a token endpoint's answer read: its URL comes from the key file, which is a
/// tenant's, and a real answer is a few hundred bytes.
const TOKEN_BODY_BYTES: usize = 64 * 1024;

#[derive(Clone)]
struct Cached {
    token: Arc<str>,
    refresh_at: Instant,
}

/// Tokens by provider id. The per-provider lock makes concurrent requests wait for one fetch.
#[derive(Default)]
pub struct Tokens {
    slots: std::sync::Mutex<HashMap<String, Arc<Mutex<Option<Cached>>>>>,
}

impl Tokens {
    /// A valid access token for the provider, or `None` when it needs none.
    pub async fn get(&self, client: &reqwest::Client, p: &ProviderConfig) -> Result<Option<Arc<str>>, ProviderError> {
        let Some(CredentialsConfig::ServiceAccount { json }) = &p.credentials else {
            return Ok(None);
        };
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots.entry(p.id.clone()).or_default().clone()
        };
        let mut guard = slot.lock().await;
        if let Some(c) = guard.as_ref() {
            if Instant::now() < c.refresh_at {
                return Ok(Some(c.token.clone()));
            }
        }
        let req = vertex::token_request(json.expose(), SystemTime::now())?;
        let resp = client
            .request(req.method, &req.url)
            .headers(req.headers)
            .body(req.body)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| ProviderError::new(ErrorKind::Auth, format!("token request failed: {e}")))?;
        let status = resp.status().as_u16();
        let body = read_limited(resp, TOKEN_BODY_BYTES).await?;
        if !(200..300).contains(&status) {
            let kind = match kind_for_status(status) {
                ErrorKind::BadRequest | ErrorKind::Auth | ErrorKind::PermissionDenied => ErrorKind::Auth,
                other => other,
            };
            return Err(ProviderError::new(
                kind,
                format!("token endpoint answered HTTP {status}"),
            ));
        }
        let (token, ttl) = vertex::parse_token(&body)?;
        let token: Arc<str> = token.into();
        *guard = Some(Cached {
            token: token.clone(),
            refresh_at: Instant::now() + ttl.saturating_sub(EARLY),
        });
        Ok(Some(token))
    }
}

/// A response body, read chunk by chunk, at most `limit` bytes (more is an error).
async fn read_limited(mut resp: reqwest::Response, limit: usize) -> Result<bytes::Bytes, ProviderError> {
    let failed =
        |e: reqwest::Error| ProviderError::new(ErrorKind::Auth, format!("token request failed: {}", e.without_url()));
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = resp.chunk().await.map_err(failed)? {
        if buf.len() + chunk.len() > limit {
            return Err(ProviderError::new(
                ErrorKind::Auth,
                format!("the token endpoint's answer exceeded {limit} bytes"),
            ));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU64, Ordering};

    use switchyard_config::{CircuitBreakerConfig, LimitsConfig, ProviderKind, ProviderTimeoutsConfig, SecretString};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A key file's `token_uri` is the tenant's to write: an endpoint that answers without end
    /// gets an error once 64 KiB are in, not the gateway's memory.
    #[tokio::test]
    async fn an_endless_token_answer_is_cut_off() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let written = Arc::new(AtomicU64::new(0));
        let counter = written.clone();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 8192];
            let _ = tcp.read(&mut head).await;
            let _ = tcp
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
                .await;
            let chunk = format!("10000\r\n{}\r\n", " ".repeat(0x10000));
            while tcp.write_all(chunk.as_bytes()).await.is_ok() {
                counter.fetch_add(0x10000, Ordering::Relaxed);
            }
        });
        let file = format!(
            "{}/../providers/testdata/vertex/test-service-account.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let mut account: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        account["token_uri"] = format!("http://{addr}/token").into();
        let provider = ProviderConfig {
            id: "ns/vertex".into(),
            kind: ProviderKind::Vertex,
            base_url: String::new(),
            credentials: Some(CredentialsConfig::ServiceAccount {
                json: SecretString::new(account.to_string()),
            }),
            region: None,
            api_version: None,
            project: None,
            headers: BTreeMap::new(),
            quota: LimitsConfig::default(),
            timeouts: ProviderTimeoutsConfig::default(),
            circuit_breaker: CircuitBreakerConfig::default(),
            mock: None,
            http_version: Default::default(),
        };
        let got = tokio::time::timeout(
            Duration::from_secs(10),
            Tokens::default().get(&reqwest::Client::new(), &provider),
        )
        .await
        .unwrap();
        let e = got.map(|_| ()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Auth);
        assert!(e.message.contains("exceeded 65536 bytes"), "{}", e.message);
        let sent = written.load(Ordering::Relaxed);
        assert!(sent < 16 * 1024 * 1024, "{sent} bytes written");
    }
}
