//! The ids the gateway hands out for files and batches. An uploaded file and the batches made
//! from it live on one provider account, so the id a client gets back carries where: the key's
//! namespace, the route the file was uploaded through, the provider and the provider's own id,
//! base64url-encoded behind a prefix (`file-sy-`, `batch_sy-`) and signed with HMAC-SHA256.
//!
//! The signing secret is derived from the provider's id and its API key: every replica of a
//! fleet reads the same config, so every replica accepts the ids any of them issued, and a
//! client that does not know the provider's key cannot point an id at another provider, route,
//! namespace or upstream object. Rotating the provider's key invalidates the ids issued before.
//! This module does no I/O; the namespace and route checks against the presenting key are
//! `super`'s.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use switchyard_config::{CredentialsConfig, ProviderConfig};

/// Bytes of the HMAC kept in an id.
const TAG: usize = 16;

/// What an id names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A file the client uploaded (or a batch's error file).
    File,
    /// A batch's output file: fetching its content bills the batch.
    Output,
    /// A batch.
    Batch,
}

impl Kind {
    fn code(self) -> char {
        match self {
            Kind::File => 'f',
            Kind::Output => 'o',
            Kind::Batch => 'b',
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Kind::File | Kind::Output => "file-sy-",
            Kind::Batch => "batch_sy-",
        }
    }
}

/// An object on one provider, as the gateway names it to a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Handle {
    pub(crate) kind: Kind,
    /// The namespace of the key it was issued to.
    pub(crate) namespace: String,
    /// The route (`namespace/model`) it was uploaded or created through: its backend on
    /// `provider` prices the batch.
    pub(crate) route: String,
    /// The provider's id (`namespace/name`).
    pub(crate) provider: String,
    /// The provider's own id of the object.
    pub(crate) upstream: String,
}

/// The signing secret of the ids of one provider.
pub(crate) fn secret(p: &ProviderConfig) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(b"switchyard file and batch ids\0");
    h.update(p.id.as_bytes());
    h.update([0]);
    if let Some(CredentialsConfig::ApiKey { key }) = &p.credentials {
        h.update(key.expose().as_bytes());
    }
    h.finalize().to_vec()
}

fn mac(secret: &[u8], prefix: &str, payload: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    m.update(prefix.as_bytes());
    m.update(payload);
    m
}

impl Handle {
    fn payload(&self) -> String {
        format!(
            "{}\n{}\n{}\n{}\n{}",
            self.kind.code(),
            self.namespace,
            self.route,
            self.provider,
            self.upstream
        )
    }

    /// The id to give the client, signed with `secret` (the provider's, [`secret`]).
    pub(crate) fn encode(&self, secret: &[u8]) -> String {
        let prefix = self.kind.prefix();
        let mut bytes = self.payload().into_bytes();
        let tag = mac(secret, prefix, &bytes).finalize().into_bytes();
        bytes.extend_from_slice(&tag[..TAG]);
        format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    /// The object `id` names, if the gateway issued it: `secret_of` gives the signing secret of
    /// the provider the id claims (`None`: no such provider). Anything altered is `None`.
    pub(crate) fn decode(id: &str, secret_of: impl FnOnce(&str) -> Option<Vec<u8>>) -> Option<Handle> {
        let (prefix, rest) = ["file-sy-", "batch_sy-"]
            .into_iter()
            .find_map(|p| id.strip_prefix(p).map(|r| (p, r)))?;
        let bytes = URL_SAFE_NO_PAD.decode(rest).ok()?;
        let split = bytes.len().checked_sub(TAG)?;
        let (payload, tag) = bytes.split_at(split);
        let text = std::str::from_utf8(payload).ok()?;
        let mut f = text.splitn(5, '\n');
        let kind = match f.next()? {
            "f" => Kind::File,
            "o" => Kind::Output,
            "b" => Kind::Batch,
            _ => return None,
        };
        let h = Handle {
            kind,
            namespace: f.next()?.to_owned(),
            route: f.next()?.to_owned(),
            provider: f.next()?.to_owned(),
            upstream: f.next()?.to_owned(),
        };
        if kind.prefix() != prefix {
            return None;
        }
        let secret = secret_of(&h.provider)?;
        mac(&secret, prefix, payload).verify_truncated_left(tag).ok()?;
        Some(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle() -> Handle {
        Handle {
            kind: Kind::File,
            namespace: "team-a".into(),
            route: "team-a/batch-chat".into(),
            provider: "team-a/openai".into(),
            upstream: "file-abc123".into(),
        }
    }

    fn secret_of(s: &'static [u8]) -> impl FnOnce(&str) -> Option<Vec<u8>> {
        move |_| Some(s.to_vec())
    }

    #[test]
    fn an_id_decodes_to_what_was_encoded() {
        let id = handle().encode(b"s1");
        assert!(id.starts_with("file-sy-"), "{id}");
        assert_eq!(Handle::decode(&id, secret_of(b"s1")), Some(handle()));
        let batch = Handle {
            kind: Kind::Batch,
            ..handle()
        };
        let id = batch.encode(b"s1");
        assert!(id.starts_with("batch_sy-"), "{id}");
        assert_eq!(Handle::decode(&id, secret_of(b"s1")), Some(batch));
    }

    #[test]
    fn a_tampered_id_is_refused() {
        let id = handle().encode(b"s1");
        let mut bytes = URL_SAFE_NO_PAD.decode(&id["file-sy-".len()..]).unwrap();
        // Every byte, payload and tag alike, is covered.
        for i in 0..bytes.len() {
            bytes[i] ^= 1;
            let forged = format!("file-sy-{}", URL_SAFE_NO_PAD.encode(&bytes));
            assert_eq!(Handle::decode(&forged, secret_of(b"s1")), None, "byte {i}");
            bytes[i] ^= 1;
        }
        // Signed with another provider's secret, or a file id presented as a batch id.
        assert_eq!(Handle::decode(&id, secret_of(b"s2")), None);
        let as_batch = id.replacen("file-sy-", "batch_sy-", 1);
        assert_eq!(Handle::decode(&as_batch, secret_of(b"s1")), None);
        assert_eq!(Handle::decode("file-abc123", secret_of(b"s1")), None);
        assert_eq!(Handle::decode("file-sy-", secret_of(b"s1")), None);
        assert_eq!(Handle::decode("file-sy-!!", secret_of(b"s1")), None);
    }

    #[test]
    fn another_namespace_cannot_be_written_into_an_id() {
        let mut h = handle();
        let genuine = h.encode(b"s1");
        // A client who rewrites the namespace (or the provider) keeps the old tag: refused.
        h.namespace = "team-b".into();
        let bytes = URL_SAFE_NO_PAD.decode(&genuine["file-sy-".len()..]).unwrap();
        let tag = &bytes[bytes.len() - TAG..];
        let mut forged = h.payload().into_bytes();
        forged.extend_from_slice(tag);
        let forged = format!("file-sy-{}", URL_SAFE_NO_PAD.encode(forged));
        assert_eq!(Handle::decode(&forged, secret_of(b"s1")), None);
        // An unknown provider has no secret.
        assert_eq!(Handle::decode(&genuine, |_| None), None);
    }
}
