//! The one config loop, for both modes: a [`ConfigSource`] (a folder in standalone mode, the
//! fleet's shard Secrets in Kubernetes mode) says when the config may have changed; here it is
//! read, checked and swapped in.
//!
//! Reading, compiling, joining shards, indexing the new config and freeing the old one all run on
//! one config thread at a lower CPU priority ([`background::off_request_path`]), never on a
//! request worker. A refused config is counted (`switchyard_config_reload_failures_total`) and
//! logged, and the last good one keeps serving; a config identical to the serving one is not
//! swapped again.

use std::sync::Arc;

use switchyard_config::source::{ConfigSource, Update};

use crate::{background, Gateway};

/// What is serving: a new config is swapped in only when it differs from this.
#[derive(Clone, Debug, PartialEq)]
struct Serving {
    generation: u64,
    hash: String,
}

impl Serving {
    /// The generation `update` is served as, or `None` when it is what already serves: the same
    /// bytes (and, from a control plane, the same generation).
    fn next(&self, update: &Update) -> Option<u64> {
        match update.generation {
            Some(g) if (g, &update.hash) == (self.generation, &self.hash) => None,
            Some(g) => Some(g),
            None if update.hash == self.hash => None,
            None => Some(self.generation + 1),
        }
    }
}

/// Follows `source` for the life of the process: every complete, valid config it yields is
/// swapped into `gw`. Returns when the source ends.
pub async fn run<S: ConfigSource>(gw: Arc<Gateway>, mut source: S) {
    let mut serving = {
        let r = gw.runtime();
        Serving {
            generation: r.generation,
            hash: r.hash.clone(),
        }
    };
    while let Some(snapshot) = source.changed().await {
        let (config_gw, was) = (gw.clone(), serving.clone());
        let now = background::off_request_path("config-reload", move || reload::<S>(&config_gw, snapshot, &was))
            .await
            .flatten();
        if let Some(now) = now {
            source.served(now.generation).await;
            serving = now;
        }
    }
    tracing::warn!("the config source ended; the last config keeps serving");
}

/// On the config thread: reads `snapshot` and, when it is complete, valid and new, swaps it in
/// and frees the replaced config. Returns what serves now if that changed.
fn reload<S: ConfigSource>(gw: &Gateway, snapshot: S::Snapshot, serving: &Serving) -> Option<Serving> {
    let update = match S::load(snapshot) {
        Ok(Some(update)) => update,
        Ok(None) => {
            tracing::debug!("no complete config yet");
            return None;
        }
        Err(refused) => {
            gw.reload_failed();
            for problem in refused.problems() {
                tracing::error!(error = %problem, "config refused; the previous config keeps serving");
            }
            return None;
        }
    };
    let generation = serving.next(&update)?;
    tracing::info!(
        generation,
        hash = %update.hash.get(..12).unwrap_or(&update.hash),
        routes = update.config.routes.len(),
        keys = update.config.keys.len(),
        "config reloaded"
    );
    let retired = gw.swap_hashed(update.config, update.hash.clone(), generation);
    if !retired.wait(background::RETIRE_WAIT) {
        tracing::debug!("a long request still holds the previous config; it is freed when that ends");
    }
    Some(Serving {
        generation,
        hash: update.hash,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use switchyard_config::source::{Refused, ShardError};
    use switchyard_config::{GatewayConfig, SCHEMA_VERSION};
    use tokio::sync::mpsc;

    use super::*;

    /// A source fed by the test: each message is one change and what loading it gives.
    struct Scripted {
        changes: mpsc::UnboundedReceiver<Step>,
        served: Arc<Mutex<Vec<u64>>>,
    }

    // A test's script of changes: a few values, never copied in bulk.
    #[allow(clippy::large_enum_variant)]
    enum Step {
        Config(GatewayConfig, Option<u64>),
        Nothing,
        Corrupt,
    }

    impl ConfigSource for Scripted {
        type Snapshot = (Step, std::thread::ThreadId);

        async fn changed(&mut self) -> Option<Self::Snapshot> {
            Some((self.changes.recv().await?, std::thread::current().id()))
        }

        fn load((step, waiter): Self::Snapshot) -> Result<Option<Update>, Refused> {
            assert_ne!(std::thread::current().id(), waiter, "loaded off the async workers");
            match step {
                Step::Config(config, generation) => Ok(Some(Update {
                    hash: config.hash(),
                    config,
                    generation,
                })),
                Step::Nothing => Ok(None),
                Step::Corrupt => Err(Refused::Shards(ShardError::HashMismatch {
                    generation: 9,
                    expected: "a".into(),
                    found: "b".into(),
                })),
            }
        }

        async fn served(&self, generation: u64) {
            self.served.lock().unwrap().push(generation);
        }
    }

    /// A config told apart by its fleet name.
    fn config(name: &str) -> GatewayConfig {
        GatewayConfig {
            version: SCHEMA_VERSION,
            fleet: Some(name.into()),
            ..GatewayConfig::default()
        }
    }

    async fn settle(gw: &Gateway, metric: impl Fn(&Gateway) -> i64, want: i64) {
        for _ in 0..500 {
            if metric(gw) == want {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("never reached {want}");
    }

    /// The generations reported to the source, once there are `n`.
    async fn reported(served: &Mutex<Vec<u64>>, n: usize) -> Vec<u64> {
        for _ in 0..500 {
            let now = served.lock().unwrap().clone();
            if now.len() >= n {
                return now;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("fewer than {n} generations reported");
    }

    fn generation(gw: &Gateway) -> i64 {
        gw.metrics.config_generation.get()
    }

    fn failures(gw: &Gateway) -> i64 {
        gw.metrics.reload_failures.get() as i64
    }

    #[tokio::test]
    async fn a_folder_config_becomes_the_next_generation_once_it_changes() {
        let gw = Gateway::new(config("a"), 1).unwrap();
        let (tx, changes) = mpsc::unbounded_channel();
        let served = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn(run(
            gw.clone(),
            Scripted {
                changes,
                served: served.clone(),
            },
        ));

        // The same config again (an editor's save without a change): nothing to swap.
        tx.send(Step::Config(config("a"), None)).unwrap();
        tx.send(Step::Config(config("b"), None)).unwrap();
        settle(&gw, generation, 2).await;
        assert_eq!(gw.runtime().config.fleet.as_deref(), Some("b"));
        // The hash the source computed is the one served (`/readyz`), not hashed again.
        assert_eq!(gw.runtime().hash, config("b").hash());
        // An invalid folder is counted and the last good config keeps serving.
        tx.send(Step::Corrupt).unwrap();
        settle(&gw, failures, 1).await;
        tx.send(Step::Config(config("c"), None)).unwrap();
        settle(&gw, generation, 3).await;
        assert_eq!(reported(&served, 2).await, vec![2, 3]);
    }

    #[tokio::test]
    async fn a_waiting_gateway_turns_ready_with_the_first_complete_generation() {
        let gw = Gateway::waiting().unwrap();
        let (tx, changes) = mpsc::unbounded_channel();
        let served = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn(run(
            gw.clone(),
            Scripted {
                changes,
                served: served.clone(),
            },
        ));

        // A generation still being written: not ready, nothing refused.
        tx.send(Step::Nothing).unwrap();
        tx.send(Step::Config(config("a"), Some(4))).unwrap();
        settle(&gw, generation, 4).await;
        crate::estimate::warm();
        assert!(gw.ready());
        assert_eq!(failures(&gw), 0);
        // The same generation seen again (a re-list): not swapped or reported again.
        tx.send(Step::Config(config("a"), Some(4))).unwrap();
        // A newer generation with the same bytes is still reported, as the generation served.
        tx.send(Step::Config(config("a"), Some(5))).unwrap();
        settle(&gw, generation, 5).await;
        assert_eq!(reported(&served, 2).await, vec![4, 5]);
    }
}
