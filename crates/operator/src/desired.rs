//! What a fleet should look like: pure functions from an `LLMGateway` and its compiled
//! configuration to the Kubernetes objects the operator applies. The config shard format, shared
//! with the gateway pods that assemble the shards, is `switchyard_config::source::shards`.
//!
//! Nothing here performs I/O or reads the clock, so the same inputs always give the same bytes.
//! The pod template depends only on the LLMGateway's spec and the image, never on the
//! configuration: a config change is delivered through the shards, without a rollout.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricIdentifier, MetricSpec,
    MetricTarget, PodsMetricSource, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, Secret, SecurityContext,
    Service, ServiceAccount, ServicePort, ServiceSpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use switchyard_api::{LLMGateway, ServiceType};
use switchyard_config::source::{shard_secrets, SplitConfig};

use crate::{GATEWAY_APP, LABEL_FLEET, LABEL_NAME, MANAGER};

/// The objects of one fleet, in the order they are applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    /// The gateway pods' identity.
    pub service_account: ServiceAccount,
    /// What the gateway pods may do: read their own config shards (by name, as many as
    /// [`Desired::config_shards`]), annotate pods.
    pub role: Role,
    /// Binds [`Desired::role`] to [`Desired::service_account`].
    pub role_binding: RoleBinding,
    /// The configuration as Secrets `<gw>-config-<n>`: the index (0), then the parts.
    pub config_shards: Vec<Secret>,
    /// SHA-256 (hex) of the configuration's canonical bytes.
    pub config_hash: String,
    /// The fleet's Service.
    pub service: Service,
    /// At most one pod down for voluntary disruptions.
    pub disruption_budget: PodDisruptionBudget,
    /// Present only when the LLMGateway asks for autoscaling.
    pub autoscaler: Option<HorizontalPodAutoscaler>,
    /// The gateway pods.
    pub deployment: Deployment,
}

/// Port of the gateway pods' `/metrics` (container port `metrics`). Prometheus scrapes the pods
/// on it; the fleet's Service never exposes it, so clients cannot read spend and budgets.
pub const METRICS_PORT: i32 = 9090;

/// Name of the Deployment, Service, HPA and PDB of a fleet.
pub fn workload_name(gw: &LLMGateway) -> String {
    gw.name_any()
}

/// Name of the ServiceAccount, Role and RoleBinding of a fleet's pods.
pub fn identity_name(gw: &LLMGateway) -> String {
    format!("{}-gateway", gw.name_any())
}

pub use switchyard_config::source::shard_name;

/// Labels every object of the fleet carries.
pub fn fleet_labels(gw: &LLMGateway) -> BTreeMap<String, String> {
    let mut labels = selector_labels(gw);
    labels.insert("app.kubernetes.io/instance".into(), gw.name_any());
    labels.insert("app.kubernetes.io/managed-by".into(), MANAGER.into());
    labels
}

/// Labels that select the fleet's pods (immutable in a Deployment: never add to these).
pub fn selector_labels(gw: &LLMGateway) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_owned(), GATEWAY_APP.to_owned()),
        (LABEL_FLEET.to_owned(), gw.name_any()),
    ])
}

fn owner_reference(gw: &LLMGateway) -> OwnerReference {
    OwnerReference {
        api_version: LLMGateway::api_version(&()).into_owned(),
        kind: LLMGateway::kind(&()).into_owned(),
        name: gw.name_any(),
        uid: gw.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn meta(gw: &LLMGateway, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: gw.metadata.namespace.clone(),
        labels: Some(fleet_labels(gw)),
        owner_references: Some(vec![owner_reference(gw)]),
        ..ObjectMeta::default()
    }
}

/// The objects of a fleet, for configuration `config` (split by
/// `switchyard_config::source::split_config`) as generation `generation`. `image` is used when
/// the LLMGateway names none.
pub fn desired_objects(gw: &LLMGateway, config: &SplitConfig, generation: u64, image: &str) -> Desired {
    let config_shards = shard_secrets(config, generation, |i| meta(gw, shard_name(&gw.name_any(), i)));
    let config_hash = config.hash.clone();
    Desired {
        service_account: ServiceAccount {
            metadata: meta(gw, identity_name(gw)),
            ..ServiceAccount::default()
        },
        role: Role {
            metadata: meta(gw, identity_name(gw)),
            rules: Some(gateway_rules(&gw.name_any(), config_shards.len())),
        },
        role_binding: RoleBinding {
            metadata: meta(gw, identity_name(gw)),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "Role".into(),
                name: identity_name(gw),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: identity_name(gw),
                namespace: gw.metadata.namespace.clone(),
                api_group: None,
            }]),
        },
        config_shards,
        config_hash,
        service: service(gw),
        disruption_budget: PodDisruptionBudget {
            metadata: meta(gw, workload_name(gw)),
            spec: Some(PodDisruptionBudgetSpec {
                max_unavailable: Some(IntOrString::Int(1)),
                selector: Some(LabelSelector {
                    match_labels: Some(selector_labels(gw)),
                    match_expressions: None,
                }),
                ..PodDisruptionBudgetSpec::default()
            }),
            status: None,
        },
        autoscaler: autoscaler(gw),
        deployment: deployment(gw, image),
    }
}

/// What the gateway pods of fleet `fleet` may do in their namespace: read its `shards` config
/// shards and nothing else among Secrets. `resourceNames` restricts `list` and `watch` too, to
/// requests that select one of the names (`fieldSelector=metadata.name=<name>`), which is how
/// the pods watch their shards; a `get` or `list` of any other Secret is refused.
pub(crate) fn gateway_rules(fleet: &str, shards: usize) -> Vec<PolicyRule> {
    let mut secrets = rule("", &["secrets"], &["get", "list", "watch"]);
    secrets.resource_names = Some((0..shards.max(1)).map(|i| shard_name(fleet, i)).collect());
    vec![secrets, rule("", &["pods"], &["get", "patch"])]
}

fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_owned()]),
        resources: Some(resources.iter().map(|r| (*r).to_owned()).collect()),
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        ..PolicyRule::default()
    }
}

/// The cluster-wide permissions of the operator: the least it needs. The Helm chart renders
/// exactly these.
///
/// The operator holds the gateway pods' own permissions (read Secrets, patch pods) because
/// Kubernetes only lets it grant in a Role what it holds itself.
pub fn rbac_rules() -> Vec<PolicyRule> {
    vec![
        rule(
            "switchyard.dev",
            &["providers", "llmroutes", "llmgateways"],
            &["get", "list", "watch"],
        ),
        // `patch`: the finalizer that deletes a key's Redis counters before the key goes.
        rule("switchyard.dev", &["virtualkeys"], &["get", "list", "watch", "patch"]),
        rule("switchyard.dev", &["budgets"], &["get", "list", "watch"]),
        rule(
            "switchyard.dev",
            &[
                "providers/status",
                "llmroutes/status",
                "virtualkeys/status",
                "budgets/status",
                "llmgateways/status",
            ],
            // Server-side apply and merge patches only: no `update`.
            &["get", "patch"],
        ),
        // Provider credentials and key Secrets are read; config shards and generated keys written.
        rule(
            "",
            &["secrets"],
            &["get", "list", "watch", "create", "update", "patch", "delete"],
        ),
        rule("", &["namespaces"], &["get", "list", "watch"]),
        // Pods: `Programmed` reads their generation annotation; `patch` is granted onward.
        rule("", &["pods"], &["get", "list", "watch", "patch"]),
        rule("", &["services", "serviceaccounts"], &["get", "create", "patch"]),
        rule("apps", &["deployments"], &["get", "list", "watch", "create", "patch"]),
        rule(
            "autoscaling",
            &["horizontalpodautoscalers"],
            &["get", "create", "patch", "delete"],
        ),
        rule("policy", &["poddisruptionbudgets"], &["get", "create", "patch"]),
        rule(
            "rbac.authorization.k8s.io",
            &["roles", "rolebindings"],
            &["get", "create", "patch"],
        ),
        rule("events.k8s.io", &["events"], &["create", "patch"]),
        rule("coordination.k8s.io", &["leases"], &["get", "create", "update"]),
    ]
}

fn service(gw: &LLMGateway) -> Service {
    let settings = &gw.spec.service;
    let mut metadata = meta(gw, workload_name(gw));
    if !settings.annotations.is_empty() {
        metadata.annotations = Some(settings.annotations.clone());
    }
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(
                match settings.service_type {
                    ServiceType::ClusterIP => "ClusterIP",
                    ServiceType::NodePort => "NodePort",
                    ServiceType::LoadBalancer => "LoadBalancer",
                }
                .into(),
            ),
            selector: Some(selector_labels(gw)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: port(gw),
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

fn port(gw: &LLMGateway) -> i32 {
    i32::try_from(gw.spec.service.port).unwrap_or(8080)
}

fn autoscaler(gw: &LLMGateway) -> Option<HorizontalPodAutoscaler> {
    let a = gw.spec.autoscaling.as_ref()?;
    let mut metrics = vec![MetricSpec {
        type_: "Resource".into(),
        resource: Some(ResourceMetricSource {
            name: "cpu".into(),
            target: MetricTarget {
                type_: "Utilization".into(),
                average_utilization: Some(i32::try_from(a.target_cpu_utilization.unwrap_or(70)).unwrap_or(70)),
                ..MetricTarget::default()
            },
        }),
        ..MetricSpec::default()
    }];
    if let Some(in_flight) = a.target_in_flight_requests {
        metrics.push(MetricSpec {
            type_: "Pods".into(),
            pods: Some(PodsMetricSource {
                metric: MetricIdentifier {
                    name: "switchyard_requests_in_flight".into(),
                    selector: None,
                },
                target: MetricTarget {
                    type_: "AverageValue".into(),
                    average_value: Some(Quantity(in_flight.to_string())),
                    ..MetricTarget::default()
                },
            }),
            ..MetricSpec::default()
        });
    }
    Some(HorizontalPodAutoscaler {
        metadata: meta(gw, workload_name(gw)),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: workload_name(gw),
            },
            min_replicas: Some(i32::try_from(a.min_replicas).unwrap_or(1)),
            max_replicas: i32::try_from(a.max_replicas).unwrap_or(i32::MAX),
            metrics: Some(metrics),
            behavior: None,
        }),
        status: None,
    })
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: Some("v1".into()),
                field_path: path.into(),
            }),
            ..EnvVarSource::default()
        }),
    }
}

fn probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity("100m".into())),
            ("memory".to_owned(), Quantity("64Mi".into())),
        ])),
        limits: Some(BTreeMap::from([("memory".to_owned(), Quantity("512Mi".into()))])),
        ..ResourceRequirements::default()
    }
}

fn deployment(gw: &LLMGateway, image: &str) -> Deployment {
    let name = gw.name_any();
    let spec = &gw.spec;
    let mut pod_labels = spec.pod_metadata.as_ref().map(|m| m.labels.clone()).unwrap_or_default();
    // The selector labels win over user labels of the same name.
    pod_labels.extend(selector_labels(gw));
    let pod_annotations = spec
        .pod_metadata
        .as_ref()
        .map(|m| m.annotations.clone())
        .filter(|a| !a.is_empty());
    let mut env = vec![
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
    ];
    let value_env = |name: &str, value: String| EnvVar {
        name: name.into(),
        value: Some(value),
        value_from: None,
    };
    if let Some(level) = &spec.log_level {
        env.push(value_env("SWITCHYARD_LOG", level.clone()));
    }
    if let Some(t) = &spec.telemetry {
        env.push(value_env("OTEL_EXPORTER_OTLP_ENDPOINT", t.otlp_endpoint.clone()));
        env.push(value_env(
            "OTEL_SERVICE_NAME",
            t.service_name.clone().unwrap_or_else(|| "switchyard".into()),
        ));
        // Kubernetes expands $(VAR) from the variables above.
        env.push(value_env(
            "OTEL_RESOURCE_ATTRIBUTES",
            format!(
                "k8s.namespace.name=$(POD_NAMESPACE),k8s.pod.name=$(POD_NAME),k8s.deployment.name={}",
                workload_name(gw)
            ),
        ));
        if let Some(ratio) = t.sampling_ratio {
            env.push(value_env("OTEL_TRACES_SAMPLER", "parentbased_traceidratio".into()));
            env.push(value_env("OTEL_TRACES_SAMPLER_ARG", ratio.to_string()));
        }
    }
    let container = Container {
        name: "gateway".into(),
        image: Some(spec.image.clone().unwrap_or_else(|| image.to_owned())),
        args: Some(vec![
            "gateway".into(),
            "--kubernetes".into(),
            "--fleet".into(),
            name,
            "--listen".into(),
            format!("0.0.0.0:{}", port(gw)),
            "--metrics-addr".into(),
            format!("0.0.0.0:{METRICS_PORT}"),
        ]),
        env: Some(env),
        ports: Some(vec![
            ContainerPort {
                name: Some("http".into()),
                container_port: port(gw),
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("metrics".into()),
                container_port: METRICS_PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
        ]),
        readiness_probe: Some(probe("/readyz", 5, 2)),
        liveness_probe: Some(probe("/healthz", 10, 3)),
        resources: Some(spec.resources.clone().unwrap_or_else(default_resources)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };
    Deployment {
        metadata: meta(gw, workload_name(gw)),
        spec: Some(DeploymentSpec {
            // With autoscaling the HPA owns the replica count; applying one would fight it.
            replicas: match spec.autoscaling {
                Some(_) => None,
                None => Some(i32::try_from(spec.replicas).unwrap_or(i32::MAX)),
            },
            selector: LabelSelector {
                match_labels: Some(selector_labels(gw)),
                match_expressions: None,
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: pod_annotations,
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(identity_name(gw)),
                    automount_service_account_token: Some(true),
                    containers: vec![container],
                    node_selector: (!spec.node_selector.is_empty()).then(|| spec.node_selector.clone()),
                    termination_grace_period_seconds: Some(30),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65532),
                        run_as_group: Some(65532),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            localhost_profile: None,
                        }),
                        ..PodSecurityContext::default()
                    }),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests;
