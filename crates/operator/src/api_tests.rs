//! The operator's API calls against a mocked API server (tower-test): which requests a
//! reconcile sends, in which order, with which verbs, paths, field manager and bodies, and how
//! it takes the answers (404, 409) — without a cluster.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use k8s_openapi::api::core::v1::Secret;
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};
use switchyard_api::{Rotation, Spend, VirtualKey, VirtualKeyStatus};
use switchyard_config::{FailMode, GatewayConfig, RedisConfig, SecretString};
use tower_test::mock::{self, Handle};

use crate::keys;
use crate::spend::{FleetRedis, FINALIZER};

mod fleet;

type ApiHandle = Handle<Request<Body>, Response<Body>>;

/// How long a deleted key's counters are retried in these tests (the operator's default).
const DEADLINE: Duration = Duration::from_secs(60);

fn client() -> (Client, ApiHandle) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), handle)
}

/// One expected request: returns its method, path and query, and JSON body; answers `status`
/// with `reply`.
async fn expect(handle: &mut ApiHandle, status: u16, reply: Value) -> (Method, String, Value) {
    let (req, send) = handle.next_request().await.expect("the reconcile sent no request");
    let method = req.method().clone();
    let uri = req.uri().to_string();
    let content_type = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = req.into_body().collect_bytes().await.expect("request body");
    let mut body: Value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("a JSON body")
    };
    if !content_type.is_empty() {
        body = json!({"contentType": content_type, "body": body});
    }
    send.send_response(
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&reply).expect("reply")))
            .expect("response"),
    );
    (method, uri, body)
}

fn not_found(kind: &str, name: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
           "message": format!("{kind} \"{name}\" not found")})
}

fn vk(rotation: u32) -> VirtualKey {
    let mut k = keys::tests::vk((rotation > 0).then_some(Rotation {
        generation: rotation,
        grace_period: Some("1h".into()),
    }));
    k.metadata.resource_version = Some("41".into());
    k
}

fn redis_fleet(serving: &str) -> FleetRedis {
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let f = FleetRedis::new(tx);
    let mut cfg = GatewayConfig {
        keys: vec![serde_json::from_value(json!({"namespace": "apps", "name": serving, "hashes": []})).expect("key")],
        ..GatewayConfig::default()
    };
    cfg.settings.redis = Some(RedisConfig {
        url: SecretString::new("redis://127.0.0.1:1/"),
        cluster: false,
        fail_mode: FailMode::Open,
    });
    f.update(&("llm".into(), "gw".into()), &cfg);
    f
}

#[tokio::test]
async fn a_new_key_reads_its_secret_then_creates_it_once() {
    let (client, mut api) = client();
    let reconcile = tokio::spawn(keys::reconcile(Arc::new(vk(0)), client));

    let (m, uri, _) = expect(&mut api, 404, not_found("secrets", "team-a-key")).await;
    assert_eq!(
        (m, uri.as_str()),
        (Method::GET, "/api/v1/namespaces/apps/secrets/team-a-key")
    );

    let (m, uri, sent) = expect(&mut api, 201, json!({})).await;
    assert_eq!(m, Method::POST);
    assert_eq!(uri, "/api/v1/namespaces/apps/secrets?&fieldManager=switchyard-operator");
    let secret: Secret = serde_json::from_value(sent["body"].clone()).expect("a Secret");
    let key = String::from_utf8(secret.data.expect("data")["key"].0.clone()).expect("utf-8");
    assert!(key.starts_with("sk-swy-") && key.len() == 50, "{key}");
    let owner = &secret.metadata.owner_references.expect("owner")[0];
    assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("VirtualKey", "uid-1"));

    reconcile.await.expect("join").expect("reconcile");
}

#[tokio::test]
async fn a_key_created_meanwhile_stands() {
    let (client, mut api) = client();
    let reconcile = tokio::spawn(keys::reconcile(Arc::new(vk(0)), client));
    expect(&mut api, 404, not_found("secrets", "team-a-key")).await;
    let conflict = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists",
                          "code": 409, "message": "secrets \"team-a-key\" already exists"});
    let (m, _, _) = expect(&mut api, 409, conflict).await;
    assert_eq!(m, Method::POST);
    // No second key is made and the reconcile succeeds.
    reconcile.await.expect("join").expect("a 409 on create is success");
}

#[tokio::test]
async fn rotation_replaces_the_secret_guarded_by_its_resource_version() {
    let (client, mut api) = client();
    let reconcile = tokio::spawn(keys::reconcile(Arc::new(vk(1)), client));

    let mut current = keys::key_secret(&vk(0), "sk-swy-old", None);
    current.metadata.resource_version = Some("7".into());
    let (m, _, _) = expect(&mut api, 200, serde_json::to_value(&current).expect("secret")).await;
    assert_eq!(m, Method::GET);

    let (m, uri, sent) = expect(&mut api, 200, json!({})).await;
    assert_eq!(m, Method::PUT);
    assert_eq!(
        uri,
        "/api/v1/namespaces/apps/secrets/team-a-key?&fieldManager=switchyard-operator"
    );
    let secret: Secret = serde_json::from_value(sent["body"].clone()).expect("a Secret");
    assert_eq!(secret.metadata.resource_version.as_deref(), Some("7"));
    assert_eq!(keys::recorded_rotation(&secret), Some(1));
    let data = secret.data.expect("data");
    assert_eq!(data["previousKey"].0, b"sk-swy-old");
    assert_ne!(data["key"].0, b"sk-swy-old");
    let not_after: i64 = String::from_utf8(data["previousKeyNotAfter"].0.clone())
        .expect("utf-8")
        .parse()
        .expect("seconds");
    let expected = k8s_openapi::jiff::Timestamp::now().as_second() + 3600;
    assert!((not_after - expected).abs() < 60, "{not_after} vs {expected}");

    reconcile.await.expect("join").expect("reconcile");
}

#[tokio::test]
async fn a_key_served_with_redis_gets_the_finalizer_by_a_guarded_json_patch() {
    let (client, mut api) = client();
    let fleets = redis_fleet("team-a");
    let key = vk(0);
    let call = tokio::spawn(async move { keys::finalize(&key, &client, &fleets, DEADLINE).await });

    let (m, uri, sent) = expect(&mut api, 200, serde_json::to_value(vk(0)).expect("vk")).await;
    assert_eq!(m, Method::PATCH);
    assert_eq!(uri, "/apis/switchyard.dev/v1alpha1/namespaces/apps/virtualkeys/team-a?");
    assert_eq!(sent["contentType"], "application/json-patch+json");
    assert_eq!(
        sent["body"],
        json!([
            // Guarded by the (absent) list, not the resourceVersion that status writes change.
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
        ])
    );
    assert!(
        matches!(call.await.expect("join").expect("finalize"), keys::Finalize::Live),
        "a live key goes on to reconcile"
    );
}

#[tokio::test]
async fn keys_no_redis_fleet_serves_are_left_without_a_finalizer() {
    let (client, api) = client();
    let fleets = redis_fleet("someone-else");
    // A request would wait for an answer the mock never gives.
    let live = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        keys::finalize(&vk(0), &client, &fleets, DEADLINE),
    )
    .await
    .expect("finalize sent a request");
    assert!(matches!(live.expect("finalize"), keys::Finalize::Live));
    drop(api);
}

#[tokio::test]
async fn a_deleted_key_lets_go_of_its_finalizer_once_cleaned() {
    let (client, mut api) = client();
    // No fleet has Redis any more: nothing to clean, the finalizer goes.
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let fleets = FleetRedis::new(tx);
    let mut key = vk(0);
    key.metadata.finalizers = Some(vec!["example.com/other".into(), FINALIZER.into()]);
    key.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    let call = tokio::spawn(async move { keys::finalize(&key, &client, &fleets, DEADLINE).await });
    let (m, _, sent) = expect(&mut api, 200, serde_json::to_value(vk(0)).expect("vk")).await;
    assert_eq!(m, Method::PATCH);
    assert_eq!(
        sent["body"],
        json!([
            {"op": "test", "path": "/metadata/finalizers/1", "value": FINALIZER},
            {"op": "remove", "path": "/metadata/finalizers/1"},
        ])
    );
    assert!(
        matches!(call.await.expect("join").expect("finalize"), keys::Finalize::Deleted),
        "a deleted key is done"
    );
}

/// A key being deleted since `ago`, holding the cleanup finalizer.
fn deleted_key(ago: Duration) -> VirtualKey {
    let mut key = vk(0);
    key.metadata.finalizers = Some(vec![FINALIZER.into()]);
    let at = k8s_openapi::jiff::Timestamp::now()
        .checked_sub(k8s_openapi::jiff::SignedDuration::try_from(ago).expect("duration"))
        .expect("a time");
    key.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at));
    key
}

#[tokio::test]
async fn an_unreachable_redis_is_retried_without_touching_the_key_until_the_deadline() {
    let (client, api) = client();
    // Port 1 refuses connections: the fleet's Redis is down.
    let fleets = redis_fleet("team-a");
    // Deleted 10 s ago, 60 s allowed: retry later; no request (the mock would never answer one).
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        keys::finalize(&deleted_key(Duration::from_secs(10)), &client, &fleets, DEADLINE),
    )
    .await
    .expect("finalize sent a request or hung");
    match r.expect("finalize") {
        keys::Finalize::Retry(failures) => {
            assert_eq!(failures.len(), 1);
            assert_eq!(failures[0].fleets, vec![("llm".to_owned(), "gw".to_owned())]);
            let said = failures[0].to_string();
            assert!(said.starts_with("the Redis of LLMGateway llm/gw: redis: "), "{said}");
            assert!(!said.contains("127.0.0.1"), "never the URL: {said}");
        }
        other => panic!("expected a retry, got {other:?}"),
    }
    drop(api);
}

#[tokio::test]
async fn past_the_deadline_the_key_is_let_go_without_its_counters() {
    let (client, mut api) = client();
    let fleets = redis_fleet("team-a");
    let key = deleted_key(Duration::from_secs(61));
    let r = keys::finalize(&key, &client, &fleets, DEADLINE)
        .await
        .expect("finalize");
    let keys::Finalize::GiveUp(failures) = r else {
        panic!("expected to give up, got {r:?}");
    };
    assert_eq!(failures[0].fleets, vec![("llm".to_owned(), "gw".to_owned())]);
    // The caller (after its Warning event) removes the finalizer, guarded as always.
    let call = tokio::spawn(async move { keys::drop_finalizer(&key, &client).await });
    let (m, uri, sent) = expect(&mut api, 200, serde_json::to_value(vk(0)).expect("vk")).await;
    assert_eq!(m, Method::PATCH);
    assert_eq!(uri, "/apis/switchyard.dev/v1alpha1/namespaces/apps/virtualkeys/team-a?");
    assert_eq!(
        sent["body"],
        json!([
            {"op": "test", "path": "/metadata/finalizers/0", "value": FINALIZER},
            {"op": "remove", "path": "/metadata/finalizers/0"},
        ])
    );
    call.await.expect("join").expect("patch");
}

#[tokio::test]
async fn status_is_server_side_applied_under_the_operator_field_manager() {
    let (client, mut api) = client();
    let key = vk(0);
    let status = VirtualKeyStatus {
        spend: Some(Spend {
            amount: 0.25,
            period_start: None,
        }),
        ..VirtualKeyStatus::default()
    };
    let call = tokio::spawn(async move { crate::controller::apply_status(&client, &key, &status).await });
    let (m, uri, sent) = expect(&mut api, 200, serde_json::to_value(vk(0)).expect("vk")).await;
    assert_eq!(m, Method::PATCH);
    assert_eq!(
        uri,
        "/apis/switchyard.dev/v1alpha1/namespaces/apps/virtualkeys/team-a/status?&force=true&fieldManager=switchyard-operator"
    );
    assert_eq!(sent["contentType"], "application/apply-patch+yaml");
    assert_eq!(
        sent["body"],
        json!({"apiVersion": "switchyard.dev/v1alpha1", "kind": "VirtualKey", "status": {"spend": {"amount": 0.25}}})
    );
    call.await.expect("join").expect("apply");
}

#[tokio::test]
async fn spend_is_merge_patched_alone_so_conditions_are_never_dropped() {
    let (client, mut api) = client();
    let status = VirtualKeyStatus {
        spend: Some(Spend {
            amount: 0.5,
            period_start: None,
        }),
        secret_name: Some("team-a-key".into()),
        ..VirtualKeyStatus::default()
    };
    let call = tokio::spawn(async move { crate::spend::write_usage(&client, "apps", "team-a", &status).await });
    let (m, uri, sent) = expect(&mut api, 200, serde_json::to_value(vk(0)).expect("vk")).await;
    assert_eq!(m, Method::PATCH);
    assert_eq!(
        uri,
        "/apis/switchyard.dev/v1alpha1/namespaces/apps/virtualkeys/team-a/status?&fieldManager=switchyard-operator"
    );
    assert_eq!(sent["contentType"], "application/merge-patch+json");
    assert_eq!(
        sent["body"],
        json!({"status": {"spend": {"amount": 0.5}, "lastUsed": null}})
    );
    call.await.expect("join").expect("patch");
}

/// A reflector store holding `objects`.
fn store<K>(objects: Vec<K>) -> kube::runtime::reflector::Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let (store, mut writer) = kube::runtime::reflector::store();
    for o in objects {
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(o));
    }
    store
}

fn secret_meta(rv: &str) -> kube::core::PartialObjectMeta<Secret> {
    use kube::core::PartialObjectMetaExt;
    k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        name: Some("creds".into()),
        namespace: Some("apps".into()),
        resource_version: Some(rv.into()),
        ..Default::default()
    }
    .into_response_partial::<Secret>()
}

#[tokio::test]
async fn a_secret_is_read_by_name_only_when_named_and_again_once_it_changed() {
    use kube::runtime::watcher::Event;
    let (client, mut api) = client();
    let (others, mut others_w) = kube::runtime::reflector::store();
    others_w.apply_watcher_event(&Event::Apply(secret_meta("1")));
    let cache = crate::controller::SecretCache::new(store(vec![]), others, Some(client));
    // Known by its metadata only: no data until a fleet names it.
    assert!(cache.get("apps", "creds").is_none());
    assert!(cache.unread("apps", "creds"));
    assert!(
        !cache.unread("apps", "absent"),
        "a Secret that does not exist is not read"
    );

    let reader = cache.clone();
    let read = tokio::spawn(async move { reader.read(vec![("apps".into(), "creds".into())]).await });
    let secret = json!({"apiVersion": "v1", "kind": "Secret",
                        "metadata": {"name": "creds", "namespace": "apps", "resourceVersion": "1"},
                        "data": {"apiKey": "c2stMQ=="}});
    let (m, uri, _) = expect(&mut api, 200, secret).await;
    assert_eq!(
        (m, uri.as_str()),
        (Method::GET, "/api/v1/namespaces/apps/secrets/creds")
    );
    read.await.expect("join").expect("read");
    let got = cache.get("apps", "creds").expect("read");
    assert_eq!(got.data.as_ref().expect("data")["apiKey"].0, b"sk-1");
    assert!(!cache.unread("apps", "creds"));

    // A new version (seen by the metadata watch): what was read serves until it is read again.
    others_w.apply_watcher_event(&Event::Apply(secret_meta("2")));
    assert!(cache.unread("apps", "creds"));
    assert!(cache.get("apps", "creds").is_some());
    // Gone: nothing is served.
    others_w.apply_watcher_event(&Event::Delete(secret_meta("2")));
    assert!(cache.get("apps", "creds").is_none());
}
