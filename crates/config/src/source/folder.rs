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
use crate::{compile, CompileOptions, FailMode, GatewayConfig, Manifests, RedisConfig, SecretString};

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

/// What to read: the folder and the command-line overrides, and the documents of the last read
/// (a reload parses only what changed since).
pub struct Spec {
    dir: PathBuf,
    redis: RedisOverride,
    parsed: Mutex<ParseCache>,
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
                parsed: Mutex::new(ParseCache::default()),
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
    let (manifests, errors) = {
        // One reload at a time holds it; a panic in a parse left it half-updated, never wrong:
        // a document is kept in it only with the text it was parsed from.
        let mut parsed = spec.parsed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Manifests::load_dir_cached(&spec.dir, &|v| std::env::var(v).ok(), &mut parsed)
    };
    if !errors.is_empty() {
        return Err(Refused::Invalid(errors));
    }
    let compiled = compile(&manifests, &CompileOptions::default());
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

    #[tokio::test]
    async fn an_unwatched_folder_never_changes() {
        let mut folder = Folder::new(PathBuf::from("/nonexistent"), RedisOverride::default());
        assert!(folder.changed().await.is_none());
        assert!(folder.read().is_err());
    }
}
