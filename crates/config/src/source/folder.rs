//! [`Folder`]: standalone mode's config source. Manifests in a folder (and its subfolders),
//! compiled in process, read again when a file changes.
//!
//! Objects that are themselves invalid (YAML errors, unknown fields, CEL rules) refuse the whole
//! folder; resources with reference errors are left out and logged, as the operator does.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::{ConfigSource, Refused, Update};
use crate::manifests::ParseCache;
use crate::{compile_with, CompileMemo, CompileOptions, FailMode, GatewayConfig, Manifests, RedisConfig, SecretString};

/// Editors write a file in several steps: after the first event, wait this long for the burst
/// to settle and read the folder once.
const DEBOUNCE: Duration = Duration::from_millis(150);

/// `--redis URL` and `--redis-fail-mode`: shared state named on the command line, over the
/// LLMGateway's `spec.redis`.
#[derive(Clone, Debug, Default)]
pub struct RedisOverride {
    /// Redis URL.
    pub url: Option<String>,
    /// What to do while Redis is unreachable.
    pub fail_mode: Option<FailMode>,
}

impl RedisOverride {
    fn apply(&self, config: &mut GatewayConfig) {
        if let Some(url) = &self.url {
            let fail_mode = config.settings.redis.as_ref().map(|r| r.fail_mode).unwrap_or_default();
            config.settings.redis = Some(RedisConfig {
                url: SecretString::new(url.clone()),
                cluster: false,
                fail_mode,
            });
        }
        if let (Some(mode), Some(r)) = (self.fail_mode, config.settings.redis.as_mut()) {
            r.fail_mode = mode;
        }
    }
}

/// What to read: the folder and the command-line overrides, and what the last read parsed and
/// compiled (a reload parses, and compiles keys from, only the documents that changed since).
pub struct Spec {
    dir: PathBuf,
    redis: RedisOverride,
    last: Mutex<(ParseCache, CompileMemo)>,
}

/// A folder of manifests. [`Folder::read`] reads it once; after [`Folder::watch`], every change
/// to a file in it is a [`ConfigSource::changed`].
pub struct Folder {
    spec: Arc<Spec>,
    events: Option<(notify::RecommendedWatcher, mpsc::UnboundedReceiver<()>)>,
}

impl Folder {
    /// The folder `dir`, with `redis` applied over what its LLMGateway names.
    pub fn new(dir: PathBuf, redis: RedisOverride) -> Self {
        Folder {
            spec: Arc::new(Spec {
                dir,
                redis,
                last: Mutex::new((ParseCache::default(), CompileMemo::default())),
            }),
            events: None,
        }
    }

    /// Reads and compiles the folder now (blocking).
    pub fn read(&self) -> Result<Update, Refused> {
        read(&self.spec)
    }

    /// Starts watching the folder for changes.
    pub fn watch(&mut self) -> Result<(), crate::Error> {
        let (tx, rx) = mpsc::unbounded_channel();
        let watch_error = |source| crate::Error::Watch {
            path: self.spec.dir.display().to_string(),
            source,
        };
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if res.is_ok_and(|e| !e.kind.is_access()) {
                let _ = tx.send(());
            }
        })
        .map_err(watch_error)?;
        watcher
            .watch(&self.spec.dir, RecursiveMode::Recursive)
            .map_err(watch_error)?;
        self.events = Some((watcher, rx));
        Ok(())
    }
}

impl ConfigSource for Folder {
    type Snapshot = Arc<Spec>;

    async fn changed(&mut self) -> Option<Arc<Spec>> {
        let (_, rx) = self.events.as_mut()?;
        rx.recv().await?;
        tokio::time::sleep(DEBOUNCE).await;
        while rx.try_recv().is_ok() {}
        Some(self.spec.clone())
    }

    fn load(spec: Arc<Spec>) -> Result<Option<Update>, Refused> {
        read(&spec).map(Some)
    }
}

fn read(spec: &Spec) -> Result<Update, Refused> {
    // One reload at a time holds it; a panic in a parse or a compile left it half-updated, never
    // wrong: a document is kept only with the text it was parsed from, a key's piece only with the
    // texts it was compiled from.
    let mut last = spec.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let (parsed, memo) = &mut *last;
    let (manifests, errors) = Manifests::load_dir_cached(&spec.dir, &|v| std::env::var(v).ok(), parsed);
    if !errors.is_empty() {
        return Err(Refused::Invalid(errors));
    }
    let compiled = compile_with(&manifests, &CompileOptions::default(), memo);
    drop(last);
    for d in &compiled.diagnostics {
        tracing::warn!(diagnostic = %d, "config problem");
    }
    let mut config = compiled.config;
    spec.redis.apply(&mut config);
    Ok(Update {
        hash: config.hash(),
        config,
        generation: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A copy of examples/quickstart.
    fn quickstart() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart");
        for file in ["gateway.yaml", "keys.yaml", "providers.yaml", "routes.yaml"] {
            std::fs::copy(example.join(file), dir.path().join(file)).unwrap();
        }
        dir
    }

    #[tokio::test]
    async fn a_burst_of_writes_is_one_change_and_an_invalid_folder_is_refused() {
        let dir = quickstart();
        let mut folder = Folder::new(
            dir.path().to_owned(),
            RedisOverride {
                url: Some("redis://127.0.0.1:1".into()),
                fail_mode: Some(FailMode::Closed),
            },
        );
        let first = folder.read().unwrap();
        assert!(!first.config.routes.is_empty());
        assert_eq!(first.hash, first.config.hash());
        assert_eq!(first.generation, None, "a folder has no generations");
        let redis = first.config.settings.redis.as_ref().unwrap();
        assert_eq!(redis.fail_mode, FailMode::Closed, "the command line wins");

        folder.watch().unwrap();
        let routes = std::fs::read_to_string(dir.path().join("routes.yaml")).unwrap();
        for i in 0..5 {
            std::fs::write(dir.path().join("routes.yaml"), format!("{routes}\n# edit {i}\n")).unwrap();
        }
        let spec = tokio::time::timeout(Duration::from_secs(5), folder.changed())
            .await
            .unwrap()
            .unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(300), folder.changed())
                .await
                .is_err(),
            "the burst was read once"
        );
        assert_eq!(Folder::load(spec.clone()).unwrap().unwrap().hash, first.hash);

        std::fs::write(
            dir.path().join("routes.yaml"),
            routes.replace("backends:", "wieght: 2\n  backends:"),
        )
        .unwrap();
        let refused = Folder::load(spec).unwrap_err();
        assert!(matches!(refused, Refused::Invalid(_)));
        assert!(!refused.problems().is_empty());
    }

    #[test]
    fn a_reload_compiles_what_a_fresh_read_of_the_folder_compiles() {
        // Keys whose documents carry a uid and resourceVersion (as `kubectl get -o yaml` writes
        // them) that an edit leaves as they were: only the text says what changed.
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        let providers = "apiVersion: switchyard.dev/v1alpha1\nkind: Provider\nmetadata:\n  name: p\nspec:\n  type: openai\n  baseUrl: http://127.0.0.1:9/v1\n  credentials:\n    secretRef: {name: p-key, key: apiKey}\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: p-key\nstringData:\n  apiKey: sk-up\n---\napiVersion: switchyard.dev/v1alpha1\nkind: LLMRoute\nmetadata:\n  name: r\nspec:\n  model: m\n  backends: [{providerRef: {name: p}, model: x}]\n";
        write("providers.yaml", providers);
        let key = |i: usize, rpm: usize| {
            format!("apiVersion: switchyard.dev/v1alpha1\nkind: VirtualKey\nmetadata:\n  name: k{i}\n  uid: u{i}\n  resourceVersion: \"7\"\nspec:\n  limits: {{rpm: {rpm}}}\n---\n")
        };
        let secret = |i: usize, value: &str| {
            format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: k{i}-key\n  resourceVersion: \"7\"\nstringData:\n  key: {value}\n---\n")
        };
        let keys = |rpm_of_1: usize| {
            (0..3)
                .map(|i| key(i, if i == 1 { rpm_of_1 } else { 10 }))
                .collect::<String>()
        };
        let secrets = |value_of_2: &str| {
            (0..3)
                .map(|i| {
                    secret(
                        i,
                        &if i == 2 {
                            value_of_2.to_owned()
                        } else {
                            format!("sk-{i}")
                        },
                    )
                })
                .collect::<String>()
        };
        write("keys.yaml", &keys(10));
        write("secrets.yaml", &secrets("sk-2"));
        let folder = Folder::new(dir.path().to_owned(), RedisOverride::default());
        let fresh = || {
            let (m, errors) = Manifests::load_dir(dir.path(), &|v| std::env::var(v).ok());
            assert!(errors.is_empty(), "{errors:?}");
            crate::compile(&m, &CompileOptions::default()).config
        };
        let check = || {
            let reloaded = folder.read().unwrap().config;
            assert_eq!(reloaded.hash(), fresh().hash());
            reloaded
        };
        let first = check();
        assert_eq!(first.keys.len(), 3);
        assert_eq!(
            folder.spec.last.lock().unwrap().1.keys(),
            3,
            "every key's piece is kept"
        );
        let rpm = |c: &GatewayConfig| c.keys.iter().map(|k| k.limits.rpm).collect::<Vec<_>>();
        let hashes = |c: &GatewayConfig| c.keys.iter().map(|k| k.hashes[0].sha256.clone()).collect::<Vec<_>>();
        check();
        // The key's limit changes; its resourceVersion does not.
        write("keys.yaml", &keys(99));
        assert_eq!(rpm(&check()), vec![Some(10), Some(99), Some(10)]);
        // Its Secret's value changes, resourceVersion and all else the same.
        write("secrets.yaml", &secrets("sk-two"));
        let rotated = check();
        assert_ne!(hashes(&rotated)[2], hashes(&first)[2]);
        assert_eq!(hashes(&rotated)[..2], hashes(&first)[..2]);
        // The Secret goes: the key is left out; it comes back: the key is in again.
        write(
            "secrets.yaml",
            &(0..2).map(|i| secret(i, &format!("sk-{i}"))).collect::<String>(),
        );
        assert_eq!(check().keys.len(), 2);
        write("secrets.yaml", &secrets("sk-2"));
        assert_eq!(hashes(&check()), hashes(&first));
        // Two keys with one value: the duplicate is refused as on a fresh read.
        write("secrets.yaml", &secrets("sk-0"));
        assert_eq!(check().keys.len(), 2);
    }

    #[tokio::test]
    async fn an_unwatched_folder_never_changes() {
        let mut folder = Folder::new(PathBuf::from("/nonexistent"), RedisOverride::default());
        assert!(folder.changed().await.is_none());
        assert!(folder.read().is_err());
    }
}
