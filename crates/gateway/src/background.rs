//! Config work kept off the request path. Reading, compiling and indexing a large config
//! (10,000 keys: a few hundred milliseconds of CPU) runs on a thread of its own at a lower CPU
//! priority, so that on a busy machine the request workers preempt it instead of sharing a core
//! with it; and the replaced config is freed there too, not on whichever request worker lets go
//! of it last. The one config loop ([`crate::reload`]) runs each reload here.
//!
//! Not `SCHED_IDLE`: a thread in that class runs only on a core nothing else wants, so a gateway
//! kept busy by its clients would never apply a new config (a revoked key would keep working);
//! at nice +10 it still gets about a tenth of a core (bench/results/profiling.md).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::route::Balances;
use crate::runtime::Runtime;

/// How much lower than the process the config threads run (nice value; the kernel gives a nice
/// 10 thread about a tenth of a core that nice 0 threads also want).
pub const NICE: i32 = 10;

/// How long a swap waits for requests still holding the replaced config before leaving its drop
/// to them (streams can hold it for minutes; ordinary requests let go within milliseconds).
pub const RETIRE_WAIT: Duration = Duration::from_secs(2);

/// Runs `f` on a new thread at [`NICE`] and returns its result (`None` if it panicked). Falls back
/// to tokio's blocking pool if no thread can be started.
pub async fn off_request_path<T, F>(name: &str, f: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let f = Arc::new(std::sync::Mutex::new(Some(f)));
    let job = f.clone();
    // The caller's runtime stays reachable there: the first swap opens the Redis connection,
    // whose driver task needs one.
    let runtime = tokio::runtime::Handle::current();
    let started = std::thread::Builder::new().name(name.to_owned()).spawn(move || {
        let _runtime = runtime.enter();
        lower_priority();
        if let Some(f) = job.lock().ok().and_then(|mut f| f.take()) {
            let _ = tx.send(f());
        }
    });
    if let Err(e) = started {
        tracing::warn!(error = %e, "could not start a config thread; using the blocking pool");
        let f = f.lock().ok().and_then(|mut f| f.take());
        if let Some(f) = f {
            return tokio::task::spawn_blocking(f).await.ok();
        }
    }
    rx.await.ok()
}

/// Raises this thread's nice value by [`NICE`] (Linux: the nice value is per thread).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{getpriority_process, setpriority_process};
        let me = Some(rustix::thread::gettid());
        let now = getpriority_process(me).unwrap_or(0);
        if let Err(e) = setpriority_process(me, (now + NICE).min(19)) {
            tracing::debug!(error = %e, "could not lower the config thread's priority");
        }
    }
}

/// This thread's nice value (tests).
#[cfg(all(test, target_os = "linux"))]
fn nice() -> i32 {
    rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap_or(0)
}

/// A config replaced by [`crate::Gateway::swap`], and the balancing state routing no longer
/// keeps (that of the config before the replaced one).
#[must_use = "drop it with `wait` on the config thread, or it is freed by whichever request ends last"]
pub struct Retired(pub(crate) Arc<Runtime>, pub(crate) Option<Arc<Balances>>);

impl Retired {
    /// Waits up to `max` for requests still on the old config to finish, then frees it here.
    /// Returns whether it was freed here (false: a request still holds it and frees it later).
    pub fn wait(self, max: Duration) -> bool {
        let deadline = Instant::now() + max;
        let Retired(runtime, balances) = self;
        let freed = balances.is_none_or(|b| free_by(b, deadline));
        free_by(runtime, deadline) && freed
    }

    /// The replaced config's generation.
    pub fn generation(&self) -> u64 {
        self.0.generation
    }
}

/// Frees `old` on this thread once nothing else holds it, waiting until `deadline` at most;
/// returns whether it did.
fn free_by<T>(mut old: Arc<T>, deadline: Instant) -> bool {
    loop {
        match Arc::try_unwrap(old) {
            Ok(value) => {
                drop(value);
                return true;
            }
            Err(still) => old = still,
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn config_work_runs_on_its_own_thread_at_a_lower_priority() {
        let caller = std::thread::current().id();
        let (thread, name, nice_there) = off_request_path("config-test", move || {
            let t = std::thread::current();
            (t.id(), t.name().map(str::to_owned), nice())
        })
        .await
        .unwrap();
        assert_ne!(thread, caller);
        // Tasks can be spawned from there (the first swap starts the Redis connection's driver).
        let spawned = off_request_path("config-test", || tokio::spawn(async { 7 }))
            .await
            .unwrap();
        assert_eq!(spawned.await.unwrap(), 7);
        assert_eq!(name.as_deref(), Some("config-test"));
        assert_eq!(
            nice_there,
            (nice() + NICE).min(19),
            "the config thread runs at a higher nice value"
        );
        // The caller's own priority is unchanged.
        assert!(nice() < nice_there);
        // A panic there is reported, not propagated.
        assert_eq!(
            off_request_path("config-test", || -> u8 { panic!("bad config") }).await,
            None
        );
    }

    #[test]
    fn a_retired_config_is_freed_once_the_last_request_lets_go() {
        let runtime = Arc::new(Runtime::new(switchyard_config::GatewayConfig::default(), 3));
        let held = runtime.clone();
        let request = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            let let_go = Instant::now();
            drop(held);
            let_go
        });
        let retired = Retired(runtime, None);
        assert_eq!(retired.generation(), 3);
        assert!(retired.wait(Duration::from_secs(5)), "freed by the waiting thread");
        let freed = Instant::now();
        let let_go = request.join().unwrap();
        assert!(freed >= let_go, "it waited for the request");

        let runtime = Arc::new(Runtime::new(switchyard_config::GatewayConfig::default(), 4));
        let _stream = runtime.clone();
        let t = Instant::now();
        assert!(
            !Retired(runtime, None).wait(Duration::from_millis(30)),
            "a long stream keeps it"
        );
        // It waited the whole 30 ms, and not much longer.
        assert!(t.elapsed() >= Duration::from_millis(30));
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
