//! `reconcile_fleet` against a mocked API server: the requests one reconcile of an LLMGateway
//! makes (config shards first, stale shards deleted, the fleet's objects, the Deployment last,
//! the event and status), then the status writer's writes of the objects it compiled, and how
//! a refused write is counted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use switchyard_api::{LLMGateway, LLMRoute, Provider, VirtualKey};
use tokio::sync::watch;

use super::{client, ApiHandle};
use crate::controller::{reconcile_fleet, Caches, Context, Pacing, SecretCache, StatusWriters};
use crate::metrics::Metrics;
use crate::spend::FleetRedis;
use crate::{
    ANNOTATION_CONFIG_HASH, ANNOTATION_CONFIG_PART, ANNOTATION_CONFIG_PARTS, ANNOTATION_PART_HASH, CONFIG_GENERATION,
    LABEL_FLEET, MANAGER,
};

/// One request the reconcile sent.
#[derive(Debug)]
struct Call {
    method: Method,
    path: String,
    query: String,
    content_type: String,
    body: Value,
}

impl Call {
    fn is(&self, method: &Method, path: &str) -> bool {
        self.method == *method && self.path == path
    }
}

fn object<K: DeserializeOwned>(value: Value) -> K {
    serde_json::from_value(value).expect("an object")
}

fn gateway(spec: Value) -> LLMGateway {
    object(json!({
        "apiVersion": "switchyard.dev/v1alpha1", "kind": "LLMGateway",
        "metadata": {"name": "edge", "namespace": "llm", "uid": "gw-uid", "generation": 3},
        "spec": spec,
    }))
}

fn provider() -> Provider {
    object(json!({
        "apiVersion": "switchyard.dev/v1alpha1", "kind": "Provider",
        "metadata": {"name": "mock", "namespace": "llm", "generation": 1},
        "spec": {"type": "mock"},
    }))
}

fn route() -> LLMRoute {
    object(json!({
        "apiVersion": "switchyard.dev/v1alpha1", "kind": "LLMRoute",
        "metadata": {"name": "chat", "namespace": "llm", "generation": 2},
        "spec": {"model": "chat", "backends": [{"providerRef": {"name": "mock"}, "model": "m"}]},
    }))
}

fn key() -> VirtualKey {
    object(json!({
        "apiVersion": "switchyard.dev/v1alpha1", "kind": "VirtualKey",
        "metadata": {"name": "team-a", "namespace": "llm", "generation": 1},
        "spec": {},
    }))
}

/// The generated Secret of [`key`].
fn key_secret() -> Secret {
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("team-a-key".into()),
            namespace: Some("llm".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "key".to_owned(),
            ByteString(b"sk-swy-0123456789abcdef0123456789abcdef0123456".to_vec()),
        )])),
        ..Secret::default()
    }
}

fn store<K>(objects: Vec<K>) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let (store, mut writer) = reflector::store();
    for o in objects {
        writer.apply_watcher_event(&watcher::Event::Apply(o));
    }
    store
}

/// A context whose caches hold `gw`, one Provider, one route and one generated key.
fn context(client: Client, gw: &LLMGateway) -> Arc<Context> {
    let (_, synced) = watch::channel(true);
    let (newly_served, _) = tokio::sync::mpsc::unbounded_channel();
    Arc::new(Context {
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: MANAGER.into(),
                instance: Some("test".into()),
            },
        ),
        client,
        metrics: Metrics::new().expect("metrics"),
        caches: Caches {
            gateways: store(vec![gw.clone()]),
            providers: store(vec![provider()]),
            routes: store(vec![route()]),
            keys: store(vec![key()]),
            budgets: store(vec![]),
            secrets: SecretCache::new(store(vec![key_secret()]), store(vec![]), None),
            namespaces: store(vec![]),
            pods: store(vec![]),
            own_shards: Default::default(),
            synced,
        },
        redis: Arc::new(FleetRedis::new(newly_served)),
        image: "switchyard:test".into(),
        pacing: Pacing::default(),
        memory: Default::default(),
        status_writers: StatusWriters::default(),
        cleanup_deadline: std::time::Duration::from_secs(60),
    })
}

/// Shard `index` of an earlier, three-shard configuration generation 7, in the byte-chunk
/// format of operators before the index (the upgrade case).
fn old_shard(index: usize) -> Value {
    json!({
        "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
        "metadata": {
            "name": format!("edge-config-{index}"), "namespace": "llm",
            "labels": {LABEL_FLEET: "edge", CONFIG_GENERATION: "7"},
            "annotations": {CONFIG_GENERATION: "7", "switchyard.dev/config-shards": "3", ANNOTATION_CONFIG_HASH: "old",
                            "switchyard.dev/config-shard": index.to_string()},
        },
    })
}

/// What a small API server answers, given what exists (`existing`, by path).
fn reply(call: &Call, existing: &BTreeMap<String, Value>) -> (u16, Value) {
    let status_of = |path: &str| {
        existing
            .get(path.trim_end_matches("/status"))
            .cloned()
            .unwrap_or(Value::Null)
    };
    match call.method {
        Method::GET => match existing.get(&call.path) {
            Some(v) => (200, v.clone()),
            None => (
                404,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
            ),
        },
        Method::PATCH if call.path.ends_with("/status") => (200, status_of(&call.path)),
        Method::PATCH if call.path.contains("/deployments/") => {
            let mut d = call.body.clone();
            d["status"] =
                json!({"replicas": 2, "readyReplicas": 2, "conditions": [{"type": "Available", "status": "True"}]});
            (200, d)
        }
        Method::DELETE => (
            200,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}}),
        ),
        _ => (200, call.body.clone()),
    }
}

/// Answers the next `n` requests; returns them in the order they came.
async fn answer(api: &mut ApiHandle, n: usize, existing: &BTreeMap<String, Value>) -> Vec<Call> {
    let mut calls = Vec::new();
    for _ in 0..n {
        let (req, send) = tokio::time::timeout(Duration::from_secs(10), api.next_request())
            .await
            .unwrap_or_else(|_| panic!("no request after {calls:#?}"))
            .expect("the mock client is gone");
        let call = read(req).await;
        let (status, body) = reply(&call, existing);
        send.send_response(
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&body).expect("reply")))
                .expect("response"),
        );
        calls.push(call);
    }
    calls
}

async fn read(req: Request<Body>) -> Call {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let content_type = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = req.into_body().collect_bytes().await.expect("request body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("a JSON body")
    };
    Call {
        method,
        path,
        query,
        content_type,
        body,
    }
}

/// What exists before the reconcile: the cached objects, and three shards of generation 7.
fn existing(gw: &LLMGateway) -> BTreeMap<String, Value> {
    let crd = "/apis/switchyard.dev/v1alpha1/namespaces/llm";
    BTreeMap::from([
        (
            "/api/v1/namespaces/llm/secrets".to_owned(),
            json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": {},
                   "items": [old_shard(0), old_shard(1), old_shard(2)]}),
        ),
        (format!("{crd}/llmgateways/edge"), json!(gw)),
        (format!("{crd}/llmroutes/chat"), json!(route())),
        (format!("{crd}/providers/mock"), json!(provider())),
        (format!("{crd}/virtualkeys/team-a"), json!(key())),
    ])
}

fn position(calls: &[Call], method: &Method, path: &str) -> usize {
    calls
        .iter()
        .position(|c| c.is(method, path))
        .unwrap_or_else(|| panic!("no {method} {path} in {calls:#?}"))
}

const APPLY: &str = "&force=true&fieldManager=switchyard-operator";

#[tokio::test]
async fn a_changed_config_is_published_before_the_fleet_is_applied_and_status_follows() {
    let (client, mut api) = client();
    let gw = gateway(json!({"autoscaling": {"minReplicas": 2, "maxReplicas": 5}}));
    let ctx = context(client, &gw);
    let existing = existing(&gw);
    let reconcile = tokio::spawn(reconcile_fleet(Arc::new(gw), ctx.clone()));

    let calls = answer(&mut api, 13, &existing).await;
    let action = reconcile.await.expect("join").expect("reconcile");
    assert_eq!(action, Action::await_change());

    // The fleet's existing shards, by their labels, metadata only.
    assert!(
        calls[0].is(&Method::GET, "/api/v1/namespaces/llm/secrets"),
        "{:?}",
        calls[0]
    );
    assert_eq!(
        calls[0].query,
        "&labelSelector=switchyard.dev%2Ffleet%3Dedge%2Cswitchyard.dev%2Fconfig-generation"
    );

    // The new configuration first, one generation above any seen: its one part (over the old
    // format's shard 1), then the index naming the part's hash.
    let part = &calls[1];
    assert!(
        part.is(&Method::PATCH, "/api/v1/namespaces/llm/secrets/edge-config-1"),
        "{part:?}"
    );
    let part: Secret = object(part.body.clone());
    let part_annotations = part.metadata.annotations.expect("annotations");
    assert_eq!(part_annotations[ANNOTATION_CONFIG_PART], "1");
    assert_eq!(part.metadata.labels.expect("labels")[LABEL_FLEET], "edge");
    let objects: Value = serde_json::from_slice(&part.data.expect("data")["config.json"].0).expect("part JSON");
    assert_eq!(objects["routes"][0]["name"], "chat");
    assert_eq!(objects["keys"][0]["name"], "team-a");
    let index = &calls[2];
    assert!(
        index.is(&Method::PATCH, "/api/v1/namespaces/llm/secrets/edge-config-0"),
        "{index:?}"
    );
    let index: Secret = object(index.body.clone());
    let annotations = index.metadata.annotations.expect("annotations");
    assert_eq!(annotations[CONFIG_GENERATION], "8");
    assert_eq!(
        annotations[ANNOTATION_CONFIG_PARTS],
        part_annotations[ANNOTATION_PART_HASH]
    );
    assert!(
        !annotations.contains_key("switchyard.dev/config-shards"),
        "an older gateway must not read the index as a byte chunk"
    );
    let head: Value = serde_json::from_slice(&index.data.expect("data")["config.json"].0).expect("head JSON");
    assert_eq!(head["fleet"], "llm/edge");

    // Then the older generation's third shard goes.
    assert!(
        calls[3].is(&Method::DELETE, "/api/v1/namespaces/llm/secrets/edge-config-2"),
        "{:?}",
        calls[3]
    );

    // The fleet's objects, each by server-side apply under the operator's field manager and
    // owned by the LLMGateway; the RoleBinding after its Role, the Deployment last.
    let objects = [
        "/api/v1/namespaces/llm/serviceaccounts/edge-gateway",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/llm/roles/edge-gateway",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/llm/rolebindings/edge-gateway",
        "/api/v1/namespaces/llm/services/edge",
        "/apis/policy/v1/namespaces/llm/poddisruptionbudgets/edge",
        "/apis/autoscaling/v2/namespaces/llm/horizontalpodautoscalers/edge",
        "/apis/apps/v1/namespaces/llm/deployments/edge",
    ];
    let mut at = Vec::new();
    for path in objects {
        let i = position(&calls, &Method::PATCH, path);
        let c = &calls[i];
        assert!(i > 3, "{path} before the config shards");
        assert_eq!(c.query, APPLY, "{path}");
        assert_eq!(c.content_type, "application/apply-patch+yaml", "{path}");
        assert_eq!(c.body["metadata"]["ownerReferences"][0]["uid"], "gw-uid", "{path}");
        at.push(i);
    }
    assert!(at[1] < at[2], "the RoleBinding before its Role");
    assert_eq!(at[6], 10, "the Deployment after every other object");
    assert_eq!(calls[9].path, objects[5], "the autoscaler after the concurrent four");
    assert_eq!(calls[1].query, APPLY);

    // A Normal event says a configuration was published.
    let event = &calls[11];
    assert!(
        event.is(&Method::POST, "/apis/events.k8s.io/v1/namespaces/llm/events"),
        "{event:?}"
    );
    assert_eq!(event.body["reason"], "ConfigPublished");
    assert_eq!(event.body["type"], "Normal");
    assert_eq!(event.body["regarding"]["name"], "edge");

    // The LLMGateway's status, with the generation published and the pods the Deployment has.
    let status = &calls[12];
    assert!(
        status.is(
            &Method::PATCH,
            "/apis/switchyard.dev/v1alpha1/namespaces/llm/llmgateways/edge/status"
        ),
        "{status:?}"
    );
    assert_eq!(status.query, APPLY);
    let s = &status.body["status"];
    assert_eq!(s["configGeneration"], 8);
    assert_eq!((s["routes"].clone(), s["keys"].clone()), (json!(1), json!(1)));
    assert_eq!(
        (s["replicas"].clone(), s["readyReplicas"].clone()),
        (json!(2), json!(2))
    );
    assert_eq!(s["observedGeneration"], 3);

    // After the reconcile returned, the fleet's status writer writes the objects it compiled.
    let mut writes = answer(&mut api, 3, &existing).await;
    writes.sort_by(|a, b| a.path.cmp(&b.path));
    let crd = "/apis/switchyard.dev/v1alpha1/namespaces/llm";
    let paths: Vec<&str> = writes.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            format!("{crd}/llmroutes/chat/status"),
            format!("{crd}/providers/mock/status"),
            format!("{crd}/virtualkeys/team-a/status"),
        ]
    );
    for w in &writes {
        assert_eq!((w.method.clone(), w.query.as_str()), (Method::PATCH, APPLY), "{w:?}");
    }
    let route = &writes[0].body["status"];
    assert_eq!(
        route["parents"][0]["parentRef"],
        json!({"name": "edge", "namespace": "llm"})
    );
    assert_eq!(route["observedGeneration"], 2);
    let key = &writes[2].body["status"];
    assert_eq!(key["secretName"], "team-a-key");
    let ready = key["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == "Ready")
        .expect("Ready");
    assert_eq!(ready["status"], "True");
    drop(api);
}

#[tokio::test]
async fn an_autoscaler_the_fleet_no_longer_asks_for_is_deleted() {
    let (client, mut api) = client();
    let gw = gateway(json!({}));
    let ctx = context(client, &gw);
    let mut existing = existing(&gw);
    let hpa = "/apis/autoscaling/v2/namespaces/llm/horizontalpodautoscalers/edge";
    existing.insert(
        hpa.to_owned(),
        json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
               "metadata": {"name": "edge", "namespace": "llm", "ownerReferences": [
                   {"apiVersion": "switchyard.dev/v1alpha1", "kind": "LLMGateway", "name": "edge", "uid": "gw-uid"}]},
               "spec": {"maxReplicas": 5, "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "edge"}}}),
    );
    let reconcile = tokio::spawn(reconcile_fleet(Arc::new(gw), ctx));
    // The same requests as with an autoscaler, plus the read of the existing one.
    let calls = answer(&mut api, 14, &existing).await;
    reconcile.await.expect("join").expect("reconcile");
    let read = position(&calls, &Method::GET, hpa);
    let deleted = position(&calls, &Method::DELETE, hpa);
    let deployment = position(&calls, &Method::PATCH, "/apis/apps/v1/namespaces/llm/deployments/edge");
    assert!(read < deleted && deleted < deployment, "{calls:#?}");
    assert!(!calls.iter().any(|c| c.is(&Method::PATCH, hpa)));
}

#[tokio::test]
async fn a_refused_write_fails_the_reconcile_and_is_counted_by_its_kind() {
    let (client, mut api) = client();
    let gw = Arc::new(gateway(json!({})));
    let ctx = context(client, &gw);
    let reconcile = tokio::spawn(reconcile_fleet(gw.clone(), ctx.clone()));
    let existing = existing(&gw);
    answer(&mut api, 1, &existing).await;
    // The shard write (the config's one part) is refused: the operator lacks a permission.
    let (req, send) = api.next_request().await.expect("the shard write");
    assert_eq!(req.uri().path(), "/api/v1/namespaces/llm/secrets/edge-config-1");
    send.send_response(
        Response::builder()
            .status(403)
            .header("content-type", "application/json")
            .body(Body::from(
                serde_json::to_vec(&json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "reason": "Forbidden", "code": 403, "message": "secrets \"edge-config-1\" is forbidden"}))
                .expect("reply"),
            ))
            .expect("response"),
    );
    let error = reconcile
        .await
        .expect("join")
        .expect_err("a refused write fails the reconcile");
    assert_eq!(error.reason(), "Forbidden");
    assert_eq!(
        crate::controller::fleet_error_policy(gw, &error, ctx.clone()),
        Action::requeue(Duration::from_secs(15))
    );
    let metrics = String::from_utf8(ctx.metrics.render().expect("render")).expect("utf-8");
    assert!(
        metrics.contains(r#"switchyard_operator_reconcile_errors_total{controller="llmgateway",reason="Forbidden"} 1"#),
        "{metrics}"
    );
}
