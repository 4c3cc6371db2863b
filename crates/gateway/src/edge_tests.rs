//! The edge against hostile upstreams and curious tenants, through the whole request path
//! ([`crate::router`]) with real upstreams on 127.0.0.1: bodies cut off at the fleet's limit,
//! provider credential errors kept from clients, token counts that cannot wrap, and diagnostics
//! that show a key only the routes it may use. docs/security.md names each of these tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{Request, StatusCode};
use serde_json::{json, Value};
use switchyard_config::{compile, CompileOptions, Diagnostic, Manifests};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

use crate::Gateway;

/// Long enough for anything that should happen; an answer that takes this long has failed.
const PATIENCE: Duration = Duration::from_secs(10);

/// What the test upstream does, by the first segment of the path the gateway calls.
async fn upstream_answer(tcp: &mut TcpStream, path: &str, written: &AtomicU64) {
    let ok_body = |usage: &str| {
        format!(
            r#"{{"id":"c","object":"chat.completion","created":0,"model":"m","choices":[{{"index":0,"message":{{"role":"assistant","content":"hi"}},"finish_reason":"stop"}}],"usage":{usage}}}"#
        )
    };
    let scenario = path.trim_start_matches('/').split('/').next().unwrap_or_default();
    let head_and_body = |status: &str, body: &str| {
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let endless = |status: &str| {
        format!("HTTP/1.1 {status}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
    };
    let reply = match scenario {
        "endless" => endless("200 OK"),
        "endless-error" => endless("500 Internal Server Error"),
        "announced" => {
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1073741824\r\n\r\n{".to_owned()
        }
        "unauthorized" => head_and_body(
            "401 Unauthorized",
            r#"{"error":{"message":"Incorrect API key provided: sk-proj-abc1*****************wxyz. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#,
        ),
        "forbidden" => head_and_body(
            "403 Forbidden",
            r#"{"error":{"message":"Project proj_AbCdEf0123456789XyZaBcDe does not have access to model for key sk-ant-api03-Zyxw****","type":"invalid_request_error","code":"model_not_found"}}"#,
        ),
        "server-error" => head_and_body(
            "500 Internal Server Error",
            r#"{"error":{"message":"boom","type":"server_error"}}"#,
        ),
        "usage-max" => head_and_body(
            "200 OK",
            &ok_body(
                r#"{"prompt_tokens":18446744073709551615,"completion_tokens":18446744073709551615,"total_tokens":18446744073709551615}"#,
            ),
        ),
        _ => head_and_body(
            "200 OK",
            &ok_body(r#"{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}"#),
        ),
    };
    if tcp.write_all(reply.as_bytes()).await.is_err() {
        return;
    }
    if scenario.starts_with("endless") {
        // 64 KiB chunks of JSON-ish bytes until the gateway hangs up.
        let chunk = format!("10000\r\n{}\r\n", "x".repeat(0x10000));
        while tcp.write_all(chunk.as_bytes()).await.is_ok() {
            written.fetch_add(0x10000, Ordering::Relaxed);
        }
    } else if scenario == "announced" {
        // Never sends the gigabyte it announced; the gateway must not wait for it.
        let mut sink = [0u8; 1024];
        let _ = tcp.read(&mut sink).await;
    }
}

/// An HTTP/1.1 upstream on 127.0.0.1 (one request per connection) and the bytes of endless
/// bodies it managed to write.
async fn upstream() -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let written = Arc::new(AtomicU64::new(0));
    let counter = written.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let written = counter.clone();
            tokio::spawn(async move {
                // The request head and its content-length body.
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let path = loop {
                    let Ok(n) = tcp.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    let Some(end) = text.find("\r\n\r\n") else { continue };
                    let length: usize = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + length {
                        break text.split(' ').nth(1).unwrap_or_default().to_owned();
                    }
                };
                upstream_answer(&mut tcp, &path, &written).await;
            });
        }
    });
    (format!("http://{addr}"), written)
}

/// A gateway compiled from `yaml`; the manifests must compile without errors.
fn gateway(yaml: &str) -> Arc<Gateway> {
    let mut m = Manifests::default();
    let load = m.add_yaml("test.yaml", yaml, &|_| None);
    assert!(load.is_empty(), "{load:?}");
    let compiled = compile(&m, &CompileOptions::default());
    assert!(!compiled.has_errors(), "{:?}", compiled.diagnostics);
    Gateway::new(compiled.config, 1).unwrap()
}

/// Diagnostics of `yaml`.
fn diagnostics(yaml: &str) -> Vec<Diagnostic> {
    let mut m = Manifests::default();
    let load = m.add_yaml("test.yaml", yaml, &|_| None);
    assert!(load.is_empty(), "{load:?}");
    compile(&m, &CompileOptions::default()).diagnostics
}

/// `body` sent to `path` with `key`; the status and the JSON answer.
async fn call(gw: &Arc<Gateway>, path: &str, key: &str, body: Value) -> (StatusCode, Value) {
    let req = Request::post(path)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = tokio::time::timeout(PATIENCE, crate::router(gw.clone()).oneshot(req))
        .await
        .unwrap_or_else(|_| panic!("no answer from {path} within {PATIENCE:?}"))
        .unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn get(gw: &Arc<Gateway>, path: &str, key: &str) -> (StatusCode, Value) {
    let req = Request::get(path)
        .header("authorization", format!("Bearer {key}"))
        .body(Body::empty())
        .unwrap();
    let resp = crate::router(gw.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello"}]})
}

/// One namespace, a provider per upstream behaviour (its path says which), a route per
/// provider, one key; `gateway` goes first (an LLMGateway, or nothing).
fn manifests(base: &str, gateway: &str, key_limits: &str) -> String {
    let mut out = format!(
        "{gateway}
---
apiVersion: v1
kind: Secret
metadata: {{name: keys, namespace: default}}
stringData: {{key: sk-tenant-a, upstream: sk-provider-secret}}
---
apiVersion: switchyard.dev/v1alpha1
kind: VirtualKey
metadata: {{name: a, namespace: default}}
spec:
  secretRef: {{name: keys, key: key}}
  {key_limits}
"
    );
    for scenario in [
        "endless",
        "endless-error",
        "announced",
        "unauthorized",
        "forbidden",
        "usage-max",
        "fine",
    ] {
        out.push_str(&format!(
            "---
apiVersion: switchyard.dev/v1alpha1
kind: Provider
metadata: {{name: {scenario}, namespace: default}}
spec:
  type: openai-compatible
  baseUrl: {base}/{scenario}/v1
  credentials: {{secretRef: {{name: keys, key: upstream}}}}
  timeouts: {{request: 60s}}
---
apiVersion: switchyard.dev/v1alpha1
kind: LLMRoute
metadata: {{name: {scenario}, namespace: default}}
spec:
  model: {scenario}
  retries: {{attempts: 0}}
  backends: [{{providerRef: {{name: {scenario}}}, model: m}}]
"
        ));
    }
    out
}

const SMALL_FLEET: &str = "apiVersion: switchyard.dev/v1alpha1
kind: LLMGateway
metadata: {name: edge, namespace: default}
spec:
  maxResponseBytes: 1048576";

/// A Provider's `baseUrl` is its namespace's to choose: an upstream that answers an endless
/// body (or announces a gigabyte) gets read up to the fleet's `maxResponseBytes` and no
/// further; the client gets a 502 in its own API's shape at once, and it is counted.
#[tokio::test]
async fn an_upstream_body_over_the_limit_is_cut_off_and_answered_502() {
    let (base, written) = upstream().await;
    let gw = gateway(&manifests(&base, SMALL_FLEET, ""));
    assert_eq!(gw.runtime().config.settings.max_response_bytes, 1024 * 1024);

    let (status, body) = call(&gw, "/v1/chat/completions", "sk-tenant-a", chat("endless")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["error"]["code"], "upstream_response_too_large", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("upstream response exceeded 1048576 bytes"),
        "{message}"
    );
    // What the upstream got to write: the limit plus what the sockets buffer, not more.
    let sent = written.load(Ordering::Relaxed);
    assert!(sent < 16 * 1024 * 1024, "the gateway read on: {sent} bytes written");

    // The Anthropic ingress answers in its own shape.
    let messages = json!({"model": "endless", "max_tokens": 5, "messages": [{"role": "user", "content": "hello"}]});
    let (status, body) = call(&gw, "/v1/messages", "sk-tenant-a", messages).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["type"], "error", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("upstream response exceeded 1048576 bytes"),
        "{message}"
    );

    // A body announced larger than the limit is not waited for.
    let (status, body) = call(&gw, "/v1/chat/completions", "sk-tenant-a", chat("announced")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["error"]["code"], "upstream_response_too_large", "{body}");

    let counted = gw
        .metrics
        .upstream_too_large
        .with_label_values(&["default/endless", "body"])
        .get();
    assert_eq!(counted, 2);
    assert_eq!(
        gw.metrics
            .upstream_too_large
            .with_label_values(&["default/announced", "body"])
            .get(),
        1
    );
    // An answer under the limit is served as ever.
    let (status, body) = call(&gw, "/v1/chat/completions", "sk-tenant-a", chat("fine")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Without an LLMGateway (or without the field) the default limit applies: 32 MiB.
#[test]
fn the_response_limit_defaults_to_32_mib() {
    let gw = gateway(&manifests("http://127.0.0.1:9", "", ""));
    assert_eq!(gw.runtime().config.settings.max_response_bytes, 32 * 1024 * 1024);
}

/// A large body of many tiny values is refused with 413 before it becomes a tree (whose values
/// take 30-350 bytes each), in the client's API shape; one under the fleet's limit is served,
/// and the limit is the fleet's `maxRequestValues` (default 500,000).
#[tokio::test]
async fn a_body_over_the_value_limit_is_refused_before_it_is_parsed() {
    let (base, _) = upstream().await;
    let fleet = "apiVersion: switchyard.dev/v1alpha1
kind: LLMGateway
metadata: {name: edge, namespace: default}
spec:
  maxRequestValues: 100000";
    let gw = gateway(&manifests(&base, fleet, ""));
    assert_eq!(gw.runtime().config.settings.max_request_values, 100_000);
    let with_values = |n: usize| {
        let mut body = chat("fine");
        body["metadata_list"] = Value::Array(vec![json!([]); n]);
        body
    };
    let (status, body) = call(&gw, "/v1/chat/completions", "sk-tenant-a", with_values(150_000)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"]["code"], "request_too_large", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("100000 JSON values (maxRequestValues)"), "{message}");
    let mut messages = with_values(150_000);
    messages["max_tokens"] = json!(5);
    let (status, body) = call(&gw, "/v1/messages", "sk-tenant-a", messages).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["type"], "error", "{body}");
    // Under the limit (and over the 256 KiB from which bodies are counted): served.
    let (status, body) = call(&gw, "/v1/chat/completions", "sk-tenant-a", with_values(90_000)).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let gw = gateway(&manifests(&base, "", ""));
    assert_eq!(gw.runtime().config.settings.max_request_values, 500_000);
}

/// An error body is only classified: its first 64 KiB are read, the rest never is, so an
/// upstream that answers 500 and then streams forever gets its 502 at once, not after the
/// provider's request timeout.
#[tokio::test]
async fn an_endless_error_body_is_read_only_to_its_head() {
    let (base, written) = upstream().await;
    let gw = gateway(&manifests(&base, SMALL_FLEET, ""));
    let start = std::time::Instant::now();
    let (status, body) = call(&gw, "/v1/chat/completions", "sk-tenant-a", chat("endless-error")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["error"]["code"], "upstream_error", "{body}");
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
    let sent = written.load(Ordering::Relaxed);
    assert!(sent < 16 * 1024 * 1024, "the gateway read on: {sent} bytes written");
}

/// A provider's 401 or 403 answer often echoes the key it was sent, masked or not: the client
/// gets a message of the gateway's own naming the provider, never the provider's text.
#[tokio::test]
async fn provider_credential_errors_never_reach_clients() {
    let (base, _) = upstream().await;
    let gw = gateway(&manifests(&base, "", ""));
    for (model, status) in [("unauthorized", 401), ("forbidden", 403)] {
        let (code, body) = call(&gw, "/v1/chat/completions", "sk-tenant-a", chat(model)).await;
        assert_eq!(code, StatusCode::BAD_GATEWAY, "{body}");
        let text = body.to_string();
        for leak in [
            "sk-proj",
            "sk-ant",
            "wxyz",
            "Zyxw",
            "proj_AbCdEf",
            "Incorrect API key",
            "does not have access",
        ] {
            assert!(!text.contains(leak), "{leak} reached the client: {text}");
        }
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!(
                "upstream rejected the gateway's credentials for provider \"default/{model}\" (HTTP {status})"
            )),
            "{message}"
        );
        assert!(body["error"]["param"].is_null(), "{body}");
        // Anthropic's shape, the same message.
        let messages = json!({"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "hello"}]});
        let (_, body) = call(&gw, "/v1/messages", "sk-tenant-a", messages).await;
        let text = body.to_string();
        assert!(
            !text.contains("sk-") && text.contains("rejected the gateway's credentials"),
            "{text}"
        );
    }
}

/// `max_tokens` is the client's number: `prompt + max_tokens` saturates, so a huge one is
/// refused by the key's TPM limit (429), never wrapped into a small estimate and admitted.
#[tokio::test]
async fn a_huge_max_tokens_is_refused_not_wrapped() {
    let (base, _) = upstream().await;
    let gw = gateway(&manifests(&base, "", "limits: {tpm: 100000}"));
    for max in [u64::MAX, u64::MAX - 5, u64::MAX / 2 + 1] {
        let mut body = chat("fine");
        body["max_tokens"] = json!(max);
        let (status, answer) = call(&gw, "/v1/chat/completions", "sk-tenant-a", body).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "max_tokens {max}: {answer}");
        assert_eq!(answer["error"]["code"], "rate_limit_exceeded", "{answer}");
    }
    // An ordinary request still fits.
    let mut body = chat("fine");
    body["max_tokens"] = json!(100);
    assert_eq!(
        call(&gw, "/v1/chat/completions", "sk-tenant-a", body).await.0,
        StatusCode::OK
    );
}

/// An upstream may report any usage: counts of `u64::MAX` leave the backend's meters, the
/// key's TPM window and the provider's quota saturated, not wrapped (each of them added the
/// count to an estimate already there, which overflowed).
#[tokio::test]
async fn usage_of_u64_max_saturates_every_count() {
    let (base, _) = upstream().await;
    let mut yaml = manifests(&base, "", "limits: {tpm: 1000000000}");
    yaml = yaml.replace("baseUrl: http", "quota: {tpm: 1000000000}\n  baseUrl: http");
    let gw = gateway(&yaml);
    let (status, body) = call(&gw, "/v1/chat/completions", "sk-tenant-a", chat("usage-max")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["usage"]["completion_tokens"], json!(u64::MAX), "{body}");
    // The key's window is full: the next request is refused, not admitted by a wrapped count.
    let (status, body) = call(&gw, "/v1/chat/completions", "sk-tenant-a", chat("fine")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
}

/// Two tenants: `a` shares one of its routes with `b`; each has a key.
const TENANTS: &str = "apiVersion: v1
kind: Secret
metadata: {name: keys, namespace: a}
stringData: {key: sk-tenant-a}
---
apiVersion: v1
kind: Secret
metadata: {name: keys, namespace: b}
stringData: {key: sk-tenant-b}
---
apiVersion: switchyard.dev/v1alpha1
kind: VirtualKey
metadata: {name: a-key, namespace: a}
spec: {secretRef: {name: keys, key: key}}
---
apiVersion: switchyard.dev/v1alpha1
kind: VirtualKey
metadata: {name: b-key, namespace: b}
spec: {secretRef: {name: keys, key: key}, allowedRoutes: [a/a-secret-plan, a/a-shared, b-own]}
---
apiVersion: switchyard.dev/v1alpha1
kind: Provider
metadata: {name: mock, namespace: a}
spec: {type: mock}
---
apiVersion: switchyard.dev/v1alpha1
kind: Provider
metadata: {name: mock, namespace: b}
spec: {type: mock}
---
apiVersion: switchyard.dev/v1alpha1
kind: LLMRoute
metadata: {name: a-secret-plan, namespace: a}
spec:
  model: a-secret-plan
  backends: [{providerRef: {name: mock}, model: m}]
---
apiVersion: switchyard.dev/v1alpha1
kind: LLMRoute
metadata: {name: a-shared, namespace: a}
spec:
  model: a-shared
  sharedWith: [b]
  backends: [{providerRef: {name: mock}, model: m}]
---
apiVersion: switchyard.dev/v1alpha1
kind: LLMRoute
metadata: {name: b-own, namespace: b}
spec:
  model: b-own
  backends: [{providerRef: {name: mock}, model: m}]
";

/// What a key can learn of other namespaces through the gateway: only the routes it may use.
/// `/v1/models` lists them; a route of another namespace that is not shared with it answers
/// exactly like one that does not exist; no error lists what else there is.
#[tokio::test]
async fn a_key_sees_only_the_routes_it_may_use() {
    let gw = gateway(TENANTS);
    let (status, models) = get(&gw, "/v1/models", "sk-tenant-b").await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, ["a/a-shared", "b-own"]);
    let (status, models) = get(&gw, "/v1/models", "sk-tenant-a").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!models.to_string().contains("b-own"), "{models}");

    let (hidden_status, hidden) = call(&gw, "/v1/chat/completions", "sk-tenant-b", chat("a/a-secret-plan")).await;
    let (missing_status, missing) = call(&gw, "/v1/chat/completions", "sk-tenant-b", chat("a/no-such-plan")).await;
    assert_eq!(
        (hidden_status, missing_status),
        (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND)
    );
    assert_eq!(
        hidden.to_string().replace("a-secret-plan", "X"),
        missing.to_string().replace("no-such-plan", "X"),
        "a hidden route answers like a missing one"
    );
    // Unknown models name nothing but the model asked for.
    let (_, unknown) = call(&gw, "/v1/chat/completions", "sk-tenant-b", chat("nope")).await;
    let text = unknown.to_string();
    for other in ["a-secret-plan", "a-shared", "b-own", "a-key", "b-key"] {
        assert!(!text.contains(other), "{other} in {text}");
    }
    let (status, _) = call(&gw, "/v1/chat/completions", "sk-tenant-b", chat("a/a-shared")).await;
    assert_eq!(status, StatusCode::OK);
}

/// Compile diagnostics land in the status of the object they are about, which its namespace can
/// read: a key's diagnostics never name another namespace's keys, and say the same of a route
/// of another namespace that exists but is not shared as of one that does not exist.
#[test]
fn diagnostics_never_name_other_namespaces_objects() {
    let of_b = |yaml: &str| -> Vec<Diagnostic> {
        diagnostics(yaml)
            .into_iter()
            .filter(|d| d.object.as_ref().is_some_and(|o| o.namespace == "b"))
            .collect()
    };
    // b's key lists a route of a's that is not shared with b, and one that does not exist.
    let listed = TENANTS.replace(
        "[a/a-secret-plan, a/a-shared, b-own]",
        "[a/a-secret-plan, a/no-such-plan, b-own]",
    );
    let diags = of_b(&listed);
    let routes: Vec<&str> = diags
        .iter()
        .filter(|d| d.reason == "RouteNotFound")
        .map(|d| d.message.as_str())
        .collect();
    assert_eq!(routes.len(), 2, "{diags:?}");
    assert_eq!(
        routes[0].replace("a-secret-plan", "X"),
        routes[1].replace("no-such-plan", "X"),
        "a hidden route is reported like a missing one"
    );

    // b reuses a's key value (as if it had learnt it): keys compile in namespace order, so b's
    // is the one left out, and it is told so without naming a's key.
    let reused = TENANTS.replace("stringData: {key: sk-tenant-b}", "stringData: {key: sk-tenant-a}");
    let diags = of_b(&reused);
    let text = format!("{diags:?}");
    assert!(!text.contains("a-key"), "{text}");
    let duplicate = diags
        .iter()
        .find(|d| d.reason == "DuplicateKey")
        .unwrap_or_else(|| panic!("no DuplicateKey: {text}"));
    assert!(
        duplicate.message.contains("a key of another namespace"),
        "{}",
        duplicate.message
    );
}

/// A route shared with another namespace may fall back to a route that is not: for the other
/// namespace's keys that fallback does not exist (it is skipped, as one its `allowedRoutes`
/// leave out), so its name never reaches them in a header or an error.
#[tokio::test]
async fn a_fallback_the_key_cannot_see_is_skipped_and_never_named() {
    let (base, _) = upstream().await;
    let mut yaml = String::new();
    for (ns, value) in [("a", "sk-tenant-a"), ("b", "sk-tenant-b")] {
        yaml.push_str(&format!(
            "apiVersion: v1
kind: Secret
metadata: {{name: keys, namespace: {ns}}}
stringData: {{key: {value}, upstream: sk-provider}}
---
apiVersion: switchyard.dev/v1alpha1
kind: VirtualKey
metadata: {{name: {ns}-key, namespace: {ns}}}
spec: {{secretRef: {{name: keys, key: key}}}}
---
"
        ));
    }
    for scenario in ["server-error", "fine"] {
        yaml.push_str(&format!(
            "apiVersion: switchyard.dev/v1alpha1
kind: Provider
metadata: {{name: {scenario}, namespace: a}}
spec:
  type: openai-compatible
  baseUrl: {base}/{scenario}/v1
  credentials: {{secretRef: {{name: keys, key: upstream}}}}
---
"
        ));
    }
    yaml.push_str(
        "apiVersion: switchyard.dev/v1alpha1
kind: LLMRoute
metadata: {name: shared, namespace: a}
spec:
  model: shared
  sharedWith: [b]
  retries: {attempts: 0}
  fallbacks: [{route: a-private-fallback}]
  backends: [{providerRef: {name: server-error}, model: m}]
---
apiVersion: switchyard.dev/v1alpha1
kind: LLMRoute
metadata: {name: a-private-fallback, namespace: a}
spec:
  model: a-private-fallback
  backends: [{providerRef: {name: fine}, model: m}]
",
    );
    let gw = gateway(&yaml);
    let ask = |key: &'static str, model: &'static str| {
        let gw = gw.clone();
        async move {
            let req = Request::post("/v1/chat/completions")
                .header("authorization", format!("Bearer {key}"))
                .header("content-type", "application/json")
                .body(Body::from(chat(model).to_string()))
                .unwrap();
            let resp = crate::router(gw).oneshot(req).await.unwrap();
            let (parts, body) = resp.into_parts();
            let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
            (
                parts.status,
                format!("{:?} {}", parts.headers, String::from_utf8_lossy(&body)),
            )
        }
    };
    // The route's own namespace gets its fallback.
    let (status, text) = ask("sk-tenant-a", "shared").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(text.contains("a/a-private-fallback"), "{text}");
    // The namespace it is shared with does not, and never hears of it.
    let (status, text) = ask("sk-tenant-b", "a/shared").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{text}");
    assert!(!text.contains("private"), "{text}");
}
