//! The control plane: kube-runtime controllers that compile each `LLMGateway`'s resources into a
//! `GatewayConfig`, deliver it as sharded Secrets, run the gateway fleet (Deployment, Service,
//! HPA, PDB, RBAC), write status and events, and generate virtual keys.
//!
//! The logic lives in pure functions (`desired_objects`, the `fleet` mapping, `status`
//! computation, key generation) tested without a cluster; the reconcilers read stores, call them,
//! and apply the results with server-side apply under one field manager, [`MANAGER`]. The config
//! shards it writes are read by the gateway pods through `switchyard_config::source`, which owns
//! their format.
//!
//! It must not contain provider logic or compile rules: those belong to `switchyard-config`.

#[cfg(test)]
mod api_tests;
mod budgets;
mod controller;
mod desired;
pub mod fleet;
mod keys;
mod leader;
mod metrics;
mod spend;
mod status;

use std::net::SocketAddr;

pub use desired::{desired_objects, rbac_rules, Desired};
pub use keys::{generate_key, KEY_PREFIX};
pub use leader::{lease_decision, LeaseDecision};
pub use status::{object_conditions, resolve_condition};

/// The one field manager of every server-side apply the operator makes.
pub const MANAGER: &str = "switchyard-operator";

/// `app.kubernetes.io/name` of every object of a gateway fleet.
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
/// Value of [`LABEL_NAME`] on fleet objects.
pub const GATEWAY_APP: &str = "switchyard-gateway";
/// The config shard format, shared with the gateway pods.
pub use switchyard_config::source::{
    ANNOTATION_CONFIG_HASH, ANNOTATION_CONFIG_PART, ANNOTATION_CONFIG_PARTS, ANNOTATION_PART_HASH, CONFIG_GENERATION,
    CONFIG_KEY, GATEWAY_MANAGER, LABEL_FLEET,
};
/// Label of a Secret generated for a VirtualKey: the VirtualKey's name.
pub const LABEL_VIRTUAL_KEY: &str = "switchyard.dev/virtual-key";
/// Annotation of a generated key Secret: the rotation generation of its current key.
pub const ANNOTATION_ROTATION_GENERATION: &str = "switchyard.dev/rotation-generation";

/// How the operator runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Gateway image for fleets that do not name one (normally the operator's own image).
    pub image: String,
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub metrics_addr: SocketAddr,
    /// Run controllers only while holding the `switchyard-operator` Lease.
    pub leader_election: bool,
    /// Namespace of the Lease.
    pub lease_namespace: String,
    /// How often VirtualKey spend and last use are read from the fleets' Redis.
    pub spend_interval: std::time::Duration,
    /// How long after a VirtualKey's deletion its Redis counters are retried when a fleet's
    /// Redis cannot be reached; then the key goes without (a Warning event says so).
    pub key_cleanup_deadline: std::time::Duration,
}

/// Errors of the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// An object could not be serialised.
    #[error("serialising: {0}")]
    Json(#[from] serde_json::Error),
    /// A fleet's Redis could not be read or written.
    #[error("redis: {0}")]
    Redis(String),
    /// The metrics registry refused a metric.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The metrics server could not start.
    #[error("metrics server on {addr}: {source}")]
    Serve {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// Another replica took the leader Lease; this one must stop reconciling.
    #[error("lost the leader election lease {0}")]
    LeaseLost(String),
    /// A request about the leader Lease took longer than allowed.
    #[error("leader election request timed out after {0:?}")]
    LeaseTimeout(std::time::Duration),
    /// A watched object lacks a field the API server always sets.
    #[error("{0} has no {1}")]
    Incomplete(String, &'static str),
    /// A reflector's writer went away (the watch stream ended).
    #[error("the {0} cache stopped")]
    StoreStopped(&'static str),
}

impl Error {
    /// What kind of failure this is, for the `reason` label of
    /// `switchyard_operator_reconcile_errors_total`: a fixed word, never a message (the label
    /// must not grow a series per object). API refusals use the Kubernetes status reasons.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(s)) => match s.code {
                400 => "BadRequest",
                401 => "Unauthorized",
                403 => "Forbidden",
                404 => "NotFound",
                409 => "Conflict",
                410 => "Expired",
                422 => "Invalid",
                429 => "TooManyRequests",
                500 => "InternalError",
                503 => "ServiceUnavailable",
                504 => "Timeout",
                _ => "ApiError",
            },
            Error::Kube(kube::Error::SerdeError(_)) => "Decode",
            Error::Kube(_) => "Connection",
            Error::Json(_) => "Encode",
            Error::Redis(_) => "Redis",
            Error::Metrics(_) => "Metrics",
            Error::Serve { .. } => "Serve",
            Error::LeaseLost(_) => "LeaseLost",
            Error::LeaseTimeout(_) => "LeaseTimeout",
            Error::Incomplete(..) => "IncompleteObject",
            Error::StoreStopped(_) => "CacheStopped",
        }
    }

    /// The API server refused a write because the namespace is being deleted, or is gone (a
    /// 404 for the namespace itself: its objects linger in the operator's caches until their
    /// deletions arrive). Nothing to retry: everything in the namespace is going away, and
    /// retrying every object of a large namespace would flood the API server while it deletes
    /// them, and hold back every other namespace's reconciles behind them.
    pub fn namespace_terminating(&self) -> bool {
        let Error::Kube(kube::Error::Api(s)) = self else {
            return false;
        };
        let details = s.details.as_ref();
        (s.code == 403 && details.is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating")))
            || (s.code == 404 && details.is_some_and(|d| d.kind == "namespaces"))
    }
}

/// Runs the operator until ctrl-c or SIGTERM: the LLMGateway and VirtualKey controllers (behind
/// the leader Lease when enabled) and the health and metrics server.
pub async fn run(client: kube::Client, opts: Options) -> Result<(), Error> {
    controller::run(client, opts).await
}

#[cfg(test)]
mod error_tests {
    use super::Error;

    fn api_error(body: serde_json::Value) -> Error {
        Error::Kube(kube::Error::Api(Box::new(
            serde_json::from_value(body).expect("a Status"),
        )))
    }

    #[test]
    fn a_write_into_a_terminating_namespace_is_recognised() {
        // The body kube-apiserver returns for a create in a namespace being deleted.
        let terminating = api_error(serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "secrets \"k-key\" is forbidden: unable to create new content in namespace t because it is being terminated",
            "reason": "Forbidden",
            "details": {"name": "k-key", "kind": "secrets",
                        "causes": [{"reason": "NamespaceTerminating", "message": "namespace t is being terminated", "field": "metadata.namespace"}]},
            "code": 403
        }));
        assert!(terminating.namespace_terminating());
        // RBAC refusals are 403 too, and must stay errors.
        let rbac = api_error(serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "secrets is forbidden: User \"x\" cannot create resource \"secrets\"",
            "reason": "Forbidden", "details": {"kind": "secrets"}, "code": 403
        }));
        assert!(!rbac.namespace_terminating());
        assert!(!Error::Incomplete("x".into(), "namespace").namespace_terminating());
    }

    #[test]
    fn a_write_into_a_namespace_that_is_gone_is_recognised_and_a_missing_object_is_not() {
        // The body kube-apiserver returns for a write into a namespace deleted meanwhile: 10,000
        // keys of a deleted namespace, still in the caches, each retried every 15 s, held a
        // deletion in another namespace back for over a minute (tests/k8s/test_spend.py).
        let gone = api_error(serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "namespaces \"t-0d2582a93c\" not found", "reason": "NotFound",
            "details": {"name": "t-0d2582a93c", "kind": "namespaces"}, "code": 404
        }));
        assert!(gone.namespace_terminating());
        // Any other object not found is an error of its own (a Secret a key names, say).
        let secret = api_error(serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "secrets \"k-key\" not found", "reason": "NotFound",
            "details": {"name": "k-key", "kind": "secrets"}, "code": 404
        }));
        assert!(!secret.namespace_terminating());
    }
}
