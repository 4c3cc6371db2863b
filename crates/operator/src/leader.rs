//! Leader election on a `coordination.k8s.io` Lease: one replica reconciles, the others wait.
//!
//! The holder renews every [`RENEW_EVERY`]; a Lease not renewed for its duration is free.
//! Every write carries the resourceVersion read, so two replicas cannot both win a race. A
//! leader that fails to renew before its Lease could expire stops (the process exits and
//! restarts as a follower) rather than risk two leaders.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

use crate::{Error, MANAGER};

/// Name of the Lease.
pub const LEASE_NAME: &str = "switchyard-operator";
/// How long a Lease is valid without renewal.
pub const LEASE_SECONDS: i32 = 15;
/// How often the holder renews.
pub const RENEW_EVERY: Duration = Duration::from_secs(5);
/// How often a follower retries.
const RETRY_EVERY: Duration = Duration::from_secs(3);

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

/// Decides from a Lease's spec, our identity and the time.
pub fn lease_decision(spec: Option<&LeaseSpec>, me: &str, now: Timestamp) -> LeaseDecision {
    let Some(spec) = spec else { return LeaseDecision::Free };
    match spec.holder_identity.as_deref() {
        None | Some("") => LeaseDecision::Free,
        Some(h) if h == me => LeaseDecision::Ours,
        Some(_) => {
            let seconds = i64::from(spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS));
            let fresh = spec
                .renew_time
                .as_ref()
                .or(spec.acquire_time.as_ref())
                .is_some_and(|t| t.0.as_second().saturating_add(seconds) > now.as_second());
            if fresh {
                LeaseDecision::Held
            } else {
                LeaseDecision::Free
            }
        }
    }
}

/// This replica's side of the Lease.
pub struct Elector {
    api: Api<Lease>,
    identity: String,
}

impl Elector {
    /// An elector for the Lease in `namespace`, identified by `identity` (the pod name).
    pub fn new(client: kube::Client, namespace: &str, identity: String) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            identity,
        }
    }

    fn pp() -> PostParams {
        PostParams {
            dry_run: false,
            field_manager: Some(MANAGER.to_owned()),
        }
    }

    /// One attempt to take or renew the Lease. `Ok(true)` when we hold it afterwards.
    pub async fn try_hold(&self) -> Result<bool, Error> {
        let now = Timestamp::now();
        let current = self.api.get_opt(LEASE_NAME).await?;
        let decision = lease_decision(current.as_ref().and_then(|l| l.spec.as_ref()), &self.identity, now);
        if decision == LeaseDecision::Held {
            return Ok(false);
        }
        let old = current.as_ref().and_then(|l| l.spec.clone()).unwrap_or_default();
        let spec = LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(LEASE_SECONDS),
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
                    spec: Some(spec),
                };
                self.api.create(&Self::pp(), &lease).await
            }
            Some(mut lease) => {
                lease.spec = Some(spec);
                self.api.replace(LEASE_NAME, &Self::pp(), &lease).await
            }
        };
        match result {
            Ok(_) => Ok(true),
            // Someone else wrote first.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquire(&self) -> Result<(), Error> {
        loop {
            match self.try_hold().await {
                Ok(true) => {
                    tracing::info!(identity = %self.identity, "became leader");
                    return Ok(());
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election"),
            }
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }

    /// Renews the Lease until it is lost; returns [`Error::LeaseLost`] then.
    pub async fn keep(&self) -> Result<(), Error> {
        let mut last_renewed = tokio::time::Instant::now();
        let deadline = Duration::from_secs(u64::try_from(LEASE_SECONDS).unwrap_or(15)) - RENEW_EVERY;
        loop {
            tokio::time::sleep(RENEW_EVERY).await;
            match self.try_hold().await {
                Ok(true) => last_renewed = tokio::time::Instant::now(),
                Ok(false) => return Err(Error::LeaseLost(LEASE_NAME.into())),
                Err(e) => {
                    tracing::warn!(error = %e, "renewing the leader lease");
                    if last_renewed.elapsed() > deadline {
                        return Err(Error::LeaseLost(LEASE_NAME.into()));
                    }
                }
            }
        }
    }

    /// Gives the Lease up on shutdown so another replica takes over at once.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(LEASE_NAME).await else {
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
        if let Err(e) = self.api.replace(LEASE_NAME, &Self::pp(), &lease).await {
            tracing::warn!(error = %e, "releasing the leader lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renewed: Timestamp) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(renewed)),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn lease_decisions() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let recent = Timestamp::from_second(1_699_999_995).unwrap();
        let stale = Timestamp::from_second(1_699_999_980).unwrap();
        assert_eq!(lease_decision(None, "me", now), LeaseDecision::Free);
        assert_eq!(lease_decision(Some(&spec("me", stale)), "me", now), LeaseDecision::Ours);
        assert_eq!(
            lease_decision(Some(&spec("other", recent)), "me", now),
            LeaseDecision::Held
        );
        assert_eq!(
            lease_decision(Some(&spec("other", stale)), "me", now),
            LeaseDecision::Free
        );
        assert_eq!(lease_decision(Some(&spec("", recent)), "me", now), LeaseDecision::Free);
        assert_eq!(
            lease_decision(Some(&LeaseSpec::default()), "me", now),
            LeaseDecision::Free
        );
    }
}
