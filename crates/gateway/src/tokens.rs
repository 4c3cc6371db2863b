//! OAuth2 access tokens for providers that need one (Vertex AI service accounts): fetched with
//! a signed JWT assertion, cached per provider, refreshed five minutes before they expire.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use switchyard_config::{CredentialsConfig, ProviderConfig};
use switchyard_providers::gemini::vertex;
use switchyard_providers::{kind_for_status, ErrorKind, ProviderError};
use tokio::sync::Mutex;

/// Refresh this long before expiry.
const EARLY: Duration = Duration::from_secs(300);

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
        let body = resp.bytes().await.unwrap_or_default();
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
