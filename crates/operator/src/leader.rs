//! Leader election on a `coordination.k8s.io` Lease: one replica reconciles, the others wait.
//!
//! The approach of client-go's `leaderelection`, which never compares clocks of two machines:
//!
//! - A candidate records when *it* observed the Lease record (holder, renew time, ...) change,
//!   on its own monotonic clock, and takes the Lease only when [`LEASE_DURATION`] has passed
//!   since it last saw a change. The holder's `renewTime` is never compared with the local
//!   clock (another machine's clock may be minutes off).
//! - The leader renews every [`RETRY_PERIOD`], each attempt bounded in time, and stops writing
//!   once [`RENEW_DEADLINE`] has passed since the start of its last successful renewal, which
//!   is before any candidate can take over ([`LEASE_DURATION`] after it saw that renewal). The
//!   controllers' client goes through [`gated`], which refuses every write past that deadline,
//!   so a leader frozen (SIGSTOP, a VM pause, a long GC of the host) and resumed after another
//!   replica took over cannot write even before its renewal loop notices; the loop then ends
//!   the controllers and the process exits (and restarts as a candidate).
//!
//! Every write of the Lease carries the resourceVersion read, so two candidates cannot both win
//! a race. What remains, as in client-go: a write that passed the gate just before a freeze is
//! sent when the process resumes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::client::Body;
use tokio::time::Instant;

use crate::{Error, MANAGER};

/// Name of the Lease.
pub const LEASE_NAME: &str = "switchyard-operator";
/// How long a candidate waits, after it last saw the Lease change, before it takes it.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How long after the start of its last successful renewal the leader keeps writing.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often the leader renews and a candidate retries.
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// Who may hold a Lease now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseDecision {
    /// We hold it: renew.
    Ours,
    /// Nobody holds it, or the holder stopped renewing: take it.
    Free,
    /// Someone else holds it and renewed recently: wait.
    Held,
}

/// Decides from a Lease's spec, our identity, and how long ago (on our own clock) we last saw
/// the Lease record change. Clock times written in the Lease are not read.
pub fn lease_decision(spec: Option<&LeaseSpec>, me: &str, unchanged_for: Duration) -> LeaseDecision {
    let Some(spec) = spec else { return LeaseDecision::Free };
    match spec.holder_identity.as_deref() {
        None | Some("") => LeaseDecision::Free,
        Some(h) if h == me => LeaseDecision::Ours,
        Some(_) => {
            let lease = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(LEASE_DURATION, Duration::from_secs);
            if unchanged_for < lease {
                LeaseDecision::Held
            } else {
                LeaseDecision::Free
            }
        }
    }
}

/// Whether this replica may write: it leads and its last renewal started less than
/// [`RENEW_DEADLINE`] ago (monotonic clock).
#[derive(Debug, Default)]
pub struct Leadership {
    renewed: Mutex<Option<Instant>>,
}

impl Leadership {
    /// Whether writes are allowed now.
    pub fn valid(&self) -> bool {
        self.renewed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| t.elapsed() < RENEW_DEADLINE)
    }

    /// Time left before writes stop.
    fn remaining(&self) -> Duration {
        self.renewed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map_or(Duration::ZERO, |t| RENEW_DEADLINE.saturating_sub(t.elapsed()))
    }

    fn renewed_at(&self, at: Instant) {
        *self.renewed.lock().unwrap_or_else(|p| p.into_inner()) = Some(at);
    }

    fn lost(&self) {
        *self.renewed.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// A Lease record and when this replica saw it first.
struct Observed {
    spec: Option<LeaseSpec>,
    at: Instant,
}

/// This replica's side of the Lease.
pub struct Elector {
    api: Api<Lease>,
    identity: String,
    observed: Mutex<Option<Observed>>,
    leadership: Arc<Leadership>,
}

impl Elector {
    /// An elector for the Lease in `namespace`, identified by `identity` (the pod name).
    pub fn new(client: kube::Client, namespace: &str, identity: String) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            identity,
            observed: Mutex::new(None),
            leadership: Arc::new(Leadership::default()),
        }
    }

    /// Whether this replica may write, for [`gated`].
    pub fn leadership(&self) -> Arc<Leadership> {
        self.leadership.clone()
    }

    fn pp() -> PostParams {
        PostParams {
            dry_run: false,
            field_manager: Some(MANAGER.to_owned()),
        }
    }

    /// How long the record `spec` has been what this replica sees (zero when it just changed).
    fn observe(&self, spec: Option<&LeaseSpec>) -> Duration {
        let mut observed = self.observed.lock().unwrap_or_else(|p| p.into_inner());
        match observed.as_ref() {
            Some(o) if o.spec.as_ref() == spec => o.at.elapsed(),
            _ => {
                *observed = Some(Observed {
                    spec: spec.cloned(),
                    at: Instant::now(),
                });
                Duration::ZERO
            }
        }
    }

    /// One attempt to take or renew the Lease, each request bounded by `limit`. `Ok(true)`
    /// when we hold it afterwards.
    pub async fn try_hold(&self, limit: Duration) -> Result<bool, Error> {
        let started = Instant::now();
        let current = bounded(limit, self.api.get_opt(LEASE_NAME)).await?;
        let old_spec = current.as_ref().and_then(|l| l.spec.as_ref());
        let unchanged_for = self.observe(old_spec);
        let decision = lease_decision(old_spec, &self.identity, unchanged_for);
        if decision == LeaseDecision::Held {
            return Ok(false);
        }
        let old = old_spec.cloned().unwrap_or_default();
        // Times written for people and other tools; no replica of ours reads them.
        let now = Timestamp::now();
        let spec = LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(i32::try_from(LEASE_DURATION.as_secs()).unwrap_or(15)),
            acquire_time: match decision {
                LeaseDecision::Ours => old.acquire_time.clone(),
                _ => Some(MicroTime(now)),
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(match decision {
                LeaseDecision::Ours => old.lease_transitions.unwrap_or(0),
                _ => old.lease_transitions.map_or(0, |t| t.saturating_add(1)),
            }),
            ..LeaseSpec::default()
        };
        let result = match current {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(LEASE_NAME.into()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(spec.clone()),
                };
                bounded(limit, self.api.create(&Self::pp(), &lease)).await
            }
            Some(mut lease) => {
                lease.spec = Some(spec.clone());
                bounded(limit, self.api.replace(LEASE_NAME, &Self::pp(), &lease)).await
            }
        };
        match result {
            Ok(_) => {
                self.observe(Some(&spec));
                // From the start of the attempt: the candidates' clocks start later than this.
                self.leadership.renewed_at(started);
                Ok(true)
            }
            // Someone else wrote first.
            Err(Error::Kube(kube::Error::Api(e))) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquire(&self) -> Result<(), Error> {
        loop {
            match self.try_hold(RENEW_DEADLINE).await {
                Ok(true) => {
                    tracing::info!(identity = %self.identity, "became leader");
                    return Ok(());
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election"),
            }
            tokio::time::sleep(RETRY_PERIOD).await;
        }
    }

    /// Renews the Lease until it is lost or [`RENEW_DEADLINE`] passed without a renewal;
    /// returns [`Error::LeaseLost`] then (writes through [`gated`] already stopped).
    pub async fn keep(&self) -> Result<(), Error> {
        loop {
            tokio::time::sleep(RETRY_PERIOD).await;
            // Checked first: after a freeze the deadline may be long gone.
            let remaining = self.leadership.remaining();
            if remaining.is_zero() {
                break;
            }
            match self.try_hold(remaining).await {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => tracing::warn!(error = %e, "renewing the leader lease"),
            }
            if !self.leadership.valid() {
                break;
            }
        }
        self.leadership.lost();
        tracing::warn!(identity = %self.identity, "lost the leader lease; stopping");
        Err(Error::LeaseLost(LEASE_NAME.into()))
    }

    /// Gives the Lease up on shutdown so another replica takes over at once (only while it is
    /// still ours and within the renewal deadline).
    pub async fn release(&self) {
        if !self.leadership.valid() {
            return;
        }
        let Ok(Ok(Some(mut lease))) = tokio::time::timeout(RETRY_PERIOD, self.api.get_opt(LEASE_NAME)).await else {
            return;
        };
        let ours = lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some(self.identity.as_str());
        if !ours {
            return;
        }
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.renew_time = None;
        }
        match tokio::time::timeout(RETRY_PERIOD, self.api.replace(LEASE_NAME, &Self::pp(), &lease)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "releasing the leader lease"),
            Err(_) => tracing::warn!("releasing the leader lease timed out"),
        }
        self.leadership.lost();
    }
}

/// One API call bounded by `limit`.
async fn bounded<T>(limit: Duration, call: impl std::future::Future<Output = kube::Result<T>>) -> Result<T, Error> {
    match tokio::time::timeout(limit, call).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(Error::LeaseTimeout(limit)),
    }
}

/// A client whose writes (every method but GET, HEAD and OPTIONS) are refused, without
/// reaching the API server, while `leadership` is not valid. Reads and watches pass.
pub fn gated(client: kube::Client, leadership: Arc<Leadership>) -> kube::Client {
    let namespace = client.default_namespace().to_owned();
    kube::Client::new(
        Gate {
            inner: client,
            leadership,
        },
        namespace,
    )
}

#[derive(Clone)]
struct Gate {
    inner: kube::Client,
    leadership: Arc<Leadership>,
}

/// A write refused because this replica no longer leads.
#[derive(Debug, thiserror::Error)]
#[error("not the leader (the lease was not renewed within {RENEW_DEADLINE:?}): {0} refused")]
pub struct NotLeading(String);

impl tower::Service<http::Request<Body>> for Gate {
    type Response = http::Response<Body>;
    type Error = tower::BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let read = matches!(
            *req.method(),
            http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
        );
        if !read && !self.leadership.valid() {
            let what = format!("{} {}", req.method(), req.uri().path());
            tracing::warn!(request = %what, "write refused: not the leader");
            return Box::pin(std::future::ready(Err(NotLeading(what).into())));
        }
        let client = self.inner.clone();
        Box::pin(async move { client.send(req).await.map_err(Into::into) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            // A renew time far in the future (a holder whose clock runs ahead) changes nothing:
            // only how long the record stayed the same, on our clock, counts.
            renew_time: Some(MicroTime(Timestamp::from_second(4_000_000_000).unwrap())),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn lease_decisions_use_the_time_we_saw_no_change() {
        let s = Duration::from_secs;
        assert_eq!(lease_decision(None, "me", s(0)), LeaseDecision::Free);
        assert_eq!(lease_decision(Some(&spec("me")), "me", s(100)), LeaseDecision::Ours);
        assert_eq!(lease_decision(Some(&spec("other")), "me", s(0)), LeaseDecision::Held);
        assert_eq!(lease_decision(Some(&spec("other")), "me", s(14)), LeaseDecision::Held);
        assert_eq!(lease_decision(Some(&spec("other")), "me", s(15)), LeaseDecision::Free);
        let mut short = spec("other");
        short.lease_duration_seconds = Some(5);
        assert_eq!(lease_decision(Some(&short), "me", s(6)), LeaseDecision::Free);
        assert_eq!(lease_decision(Some(&spec("")), "me", s(0)), LeaseDecision::Free);
        assert_eq!(
            lease_decision(Some(&LeaseSpec::default()), "me", s(0)),
            LeaseDecision::Free
        );
    }

    #[test]
    fn the_leader_stops_writing_before_a_candidate_may_take_over() {
        assert!(RENEW_DEADLINE + RETRY_PERIOD < LEASE_DURATION);
    }

    #[tokio::test(start_paused = true)]
    async fn leadership_lapses_at_the_renew_deadline() {
        let l = Leadership::default();
        assert!(!l.valid(), "not leading before a renewal");
        l.renewed_at(Instant::now());
        tokio::time::advance(RENEW_DEADLINE - Duration::from_millis(1)).await;
        assert!(l.valid());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!l.valid());
        assert_eq!(l.remaining(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_candidate_counts_from_the_last_change_it_saw() {
        let (client, _handle) = {
            let (svc, h) = tower_test::mock::pair::<http::Request<Body>, http::Response<Body>>();
            (kube::Client::new(svc, "default"), h)
        };
        let e = Elector::new(client, "default", "me".into());
        let a = spec("other");
        assert_eq!(e.observe(Some(&a)), Duration::ZERO);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(e.observe(Some(&a)), Duration::from_secs(10));
        // The holder renewed: the count starts again.
        let mut renewed = a.clone();
        renewed.renew_time = Some(MicroTime(Timestamp::from_second(1).unwrap()));
        assert_eq!(e.observe(Some(&renewed)), Duration::ZERO);
        tokio::time::advance(Duration::from_secs(14)).await;
        assert_eq!(
            lease_decision(Some(&renewed), "me", e.observe(Some(&renewed))),
            LeaseDecision::Held
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            lease_decision(Some(&renewed), "me", e.observe(Some(&renewed))),
            LeaseDecision::Free
        );
    }
}
