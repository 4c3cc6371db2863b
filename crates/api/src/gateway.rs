//! `LLMGateway`: one fleet of gateway pods and what it admits.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{SecretKeyRef, DURATION_PATTERN};

/// An LLMGateway is a fleet of gateway pods: its size, its Service, its shared state, and which
/// routes and keys it serves.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "switchyard.dev",
    version = "v1alpha1",
    kind = "LLMGateway",
    namespaced,
    status = "LLMGatewayStatus",
    shortname = "llmgw",
    category = "switchyard",
    cel,
    doc = "A fleet of Switchyard gateway pods and the routes and keys it admits.",
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".status.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Config", type_ = "integer", json_path = ".status.configGeneration"),
    printcolumn(
        name = "Programmed",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Programmed\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct LLMGatewaySpec {
    /// Pod count when autoscaling is off. Default 2.
    #[serde(default = "default_replicas")]
    #[schemars(range(max = 1000))]
    pub replicas: u32,
    /// Horizontal autoscaling of the fleet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
    /// Container image of the gateway pods. Defaults to the operator's own image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
    /// CPU and memory of each gateway container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// The Service in front of the fleet.
    #[serde(default)]
    pub service: ServiceSettings,
    /// Redis for state shared across the fleet (rate windows, budgets, cooldowns, cache). Without
    /// it each pod counts alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisSettings>,
    /// Which namespaces' LLMRoutes this fleet may serve. Default: routes in the gateway's
    /// namespace. A route of another namespace is served only when it also names this gateway
    /// in its `parentRefs`: admitting a namespace is not enough (status condition
    /// `ResolvedRefs=False`, reason `RefNotPermitted`, counts the routes left out).
    #[serde(default)]
    pub routes: Admission,
    /// Which namespaces' VirtualKeys this fleet may accept. Default: keys in the gateway's
    /// namespace. A key of another namespace is accepted only when it names this gateway in its
    /// `parentRefs`.
    #[serde(default)]
    pub keys: Admission,
    /// Requests larger than this many bytes are refused with 413. Default 10 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024, max = 1073741824))]
    pub max_request_bytes: Option<u64>,
    /// Requests whose JSON holds more than this many values (every string, number, array and
    /// object counts one) are refused with 413 before a tree is built of them. A parsed value
    /// takes 30-350 bytes, so a 10 MiB body of tiny values would otherwise take ~820 MiB.
    /// Checked on bodies of 256 KiB or more. Default 500,000 (OpenAI's largest documented
    /// request, 300,000 tokens of embeddings as token arrays, fits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1000, max = 100000000))]
    pub max_request_values: Option<u64>,
    /// The largest whole (not streamed) response body the gateway reads from a provider, in
    /// bytes; a larger one is cut off and answered 502 ("upstream response exceeded N bytes").
    /// Provider `baseUrl`s are chosen by each namespace, so this bounds the memory one upstream
    /// can take from a fleet that serves others. Error bodies are read up to 64 KiB and stream
    /// events up to 1 MiB whatever this says. Default 32 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024, max = 1073741824))]
    pub max_response_bytes: Option<u64>,
    /// Limits on client connections: how long a client may take to send a request, how long an
    /// idle connection is kept, and how many connections each pod serves at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<ConnectionLimits>,
    /// Log level of the gateway pods (`info`, `debug`, or a tracing filter). Default `info`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub log_level: Option<String>,
    /// Extra labels and annotations for the gateway pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_metadata: Option<PodMetadata>,
    /// Node selector of the gateway pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// OpenTelemetry traces of the gateway pods (OTLP over HTTP). Off when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<Telemetry>,
}

/// Where and how the gateway pods send traces.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Telemetry {
    /// OTLP/HTTP endpoint of the collector, e.g. `http://otel-collector.observability:4318`
    /// (`/v1/traces` is appended).
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://"))]
    pub otlp_endpoint: String,
    /// `service.name` of the spans. Default `switchyard`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub service_name: Option<String>,
    /// Fraction of new traces sampled (0 to 1); requests that arrive with a sampled
    /// `traceparent` follow the caller's decision. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub sampling_ratio: Option<f64>,
}

/// How long clients may take, and how many may connect, per gateway pod. Slow or idle clients
/// hold a socket and a file descriptor each; these bound what they can hold.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionLimits {
    /// Time a client gets to send a request's head (request line and headers), counted from a
    /// new connection or from the first byte of the next request on a kept-alive one; then the
    /// connection is closed. Default `10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    pub header_read_timeout: Option<String>,
    /// How long a connection with no request in flight is kept open. Default `90s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    pub idle_timeout: Option<String>,
    /// Time a client gets to send a request's body, counted from the end of its head; then the
    /// request is answered 408 and the connection closed. Default `60s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    pub body_read_timeout: Option<String>,
    /// Connections each pod serves at once; a connection beyond it is refused at once (a 503
    /// and a close) while the open ones keep being served. Default: half the pod's open file
    /// limit, at most 10000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub max: Option<u32>,
}

fn default_replicas() -> u32 {
    2
}

/// Autoscaling bounds and targets.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("autoscaling.minReplicas must not exceed autoscaling.maxReplicas"))]
pub struct Autoscaling {
    /// Fewest pods. Default 2.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: u32,
    /// Most pods.
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: u32,
    /// Target average CPU utilisation in percent. Default 70.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization: Option<u32>,
    /// Target average in-flight requests per pod (the gateway's `switchyard_requests_in_flight`
    /// metric, served through a metrics adapter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub target_in_flight_requests: Option<u32>,
}

fn default_min_replicas() -> u32 {
    2
}

/// The fleet's Service.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.port != 9090").message("service.port 9090 is the gateway pods' metrics port; choose another"))]
pub struct ServiceSettings {
    /// Service type. Default `ClusterIP`.
    #[serde(default = "default_service_type", rename = "type")]
    pub service_type: ServiceType,
    /// Service port, also the port the gateway containers listen on (not 9090: that is their
    /// metrics port, which the Service does not expose). Default 8080.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u32,
    /// Annotations of the Service (for example for a cloud load balancer).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Default for ServiceSettings {
    fn default() -> Self {
        Self {
            service_type: ServiceType::ClusterIP,
            port: default_port(),
            annotations: BTreeMap::new(),
        }
    }
}

fn default_service_type() -> ServiceType {
    ServiceType::ClusterIP
}

fn default_port() -> u32 {
    8080
}

/// Kubernetes Service type.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceType {
    /// Reachable inside the cluster.
    ClusterIP,
    /// Exposed on every node's port.
    NodePort,
    /// Exposed through a cloud load balancer.
    LoadBalancer,
}

/// Redis connection for shared state.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.url) != has(self.urlSecretRef)").message("set exactly one of redis.url and redis.urlSecretRef"))]
pub struct RedisSettings {
    /// Redis URL (`redis://host:6379/0`, `rediss://...`), without a password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^rediss?://"))]
    pub url: Option<String>,
    /// A Secret key holding the Redis URL, for URLs that carry a password (default key `url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_secret_ref: Option<SecretKeyRef>,
    /// Connect in Redis Cluster mode.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cluster: bool,
    /// What requests do while Redis is unreachable: `open` (enforce limits per pod) or
    /// `closed` (refuse with 503). Default `open`.
    #[serde(default)]
    pub fail_mode: FailMode,
}

/// Behaviour while shared state is unreachable.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum FailMode {
    /// Keep serving with per-pod limits.
    #[default]
    Open,
    /// Refuse requests with 503.
    Closed,
}

/// Which namespaces' resources a fleet admits (Gateway API `allowedRoutes` style). Objects of
/// another namespace must also name the fleet in their `parentRefs`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.from != 'Selector' || has(self.selector)").message("selector is required when from is Selector"))]
pub struct Admission {
    /// `Same` (the gateway's namespace), `All`, or `Selector` (namespaces matching `selector`).
    /// Default `Same`.
    #[serde(default)]
    pub from: FromNamespaces,
    /// Namespace label selector, with `from: Selector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// Namespaces admitted.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum FromNamespaces {
    /// The gateway's own namespace.
    #[default]
    Same,
    /// Every namespace.
    All,
    /// Namespaces whose labels match the selector.
    Selector,
}

/// Extra pod metadata.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PodMetadata {
    /// Extra pod labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra pod annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Observed state of an LLMGateway.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LLMGatewayStatus {
    /// `Accepted`, `Ready` (pods ready) and `Programmed` (every ready pod runs the latest config).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Pods of the Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Ready pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Generation of the latest compiled configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_generation: Option<i64>,
    /// Content hash of the latest compiled configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// Pods that report running the latest configuration generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub programmed_replicas: Option<i32>,
    /// Routes in the latest configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<i32>,
    /// Virtual keys in the latest configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<i32>,
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
