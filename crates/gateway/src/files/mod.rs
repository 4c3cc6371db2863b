//! OpenAI's Files and Batch APIs in front of OpenAI and Azure OpenAI backends: `/v1/files`
//! (upload, list, retrieve, content, delete) and `/v1/batches` (create, retrieve, list,
//! cancel).
//!
//! Every call goes through the virtual key (auth, expiry, `allowedRoutes`) and its limits
//! (rpm, maxParallel, budget), is counted in `switchyard_requests_total` and logged in the
//! access log with `operation=files` or `operation=batches`.
//!
//! Where an object lives: an upload (and a list) goes to the first OpenAI or Azure OpenAI
//! backend of the route named by the `x-switchyard-route` header, else of the first route the
//! key may use that has one. The ids handed back name that backend ([`id::Handle`]); every later
//! call decodes them, checks the signature, the key's namespace and that the key may still use
//! the route, and goes to the same provider. A batch is created on the provider of its input
//! file. Lists show only objects this namespace created (marks in the shared state).
//!
//! What a batch costs is counted when its output file's content is fetched in full: the
//! `usage` of every line's response, priced at the route's backend on that provider, is added to
//! the key's spend through the ordinary settle path, once per output file (a mark in the shared
//! state; fetching it again costs nothing).
//!
//! Uploads are streamed to the provider, never buffered, up to the gateway's `maxRequestBytes`.
//! A batch input file names routes in its lines' `body.model`, as every other request does; each
//! is rewritten on the way to the upstream model (OpenAI) or deployment (Azure) of that route's
//! backend on the file's provider, every other byte kept ([`batch_input`]).

mod batch_input;
mod id;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde_json::Value;
use switchyard_config::{BackendConfig, CredentialsConfig, ProviderConfig, ProviderKind};
use switchyard_providers::Usage;

use crate::account::{self, Account, InFlight, Labels};
use crate::error::GatewayError;
use crate::limits::{self, Admission};
use crate::pipeline::authenticate;
use crate::route::Outcome;
use crate::runtime::{Key, Route, Runtime};
use crate::Gateway;

pub(crate) use id::{Handle, Kind};

const FILES: &str = "files";
const BATCHES: &str = "batches";

/// How long the shared state remembers who owns an object and which output files were billed:
/// OpenAI keeps batch files for 30 days.
const REMEMBER: Duration = Duration::from_secs(30 * 24 * 3600);

/// The header that names the route an upload or a list goes through.
const ROUTE_HEADER: &str = "x-switchyard-route";

type Gw = State<Arc<Gateway>>;

/// The routes of the Files and Batch APIs.
pub(crate) fn routes() -> Router<Arc<Gateway>> {
    Router::new()
        .route("/v1/files", post(upload).get(list_files))
        .route("/v1/files/{id}", get(retrieve_file).delete(delete_file))
        .route("/v1/files/{id}/content", get(file_content))
        .route("/v1/batches", post(create_batch).get(list_batches))
        .route("/v1/batches/{id}", get(retrieve_batch))
        .route("/v1/batches/{id}/cancel", post(cancel_batch))
}

/// The backend an object lives on.
struct Target {
    route: Arc<Route>,
    backend: BackendConfig,
    provider: Arc<ProviderConfig>,
    secret: Vec<u8>,
}

impl Target {
    fn new(route: Arc<Route>, backend: BackendConfig, provider: Arc<ProviderConfig>) -> Self {
        let secret = id::secret(&provider);
        Self {
            route,
            backend,
            provider,
            secret,
        }
    }

    fn route_name(&self) -> String {
        format!("{}/{}", self.route.config.namespace, self.route.config.model)
    }

    /// The id a client gets for the provider's object `upstream`.
    fn handle(&self, kind: Kind, namespace: &str, upstream: &str) -> String {
        Handle {
            kind,
            namespace: namespace.to_owned(),
            route: self.route_name(),
            provider: self.provider.id.clone(),
            upstream: upstream.to_owned(),
        }
        .encode(&self.secret)
    }
}

/// Whether a provider serves the Files and Batch APIs here.
fn batches_served(kind: ProviderKind) -> bool {
    matches!(kind, ProviderKind::Openai | ProviderKind::AzureOpenai)
}

/// The first OpenAI or Azure OpenAI backend of `route`.
fn target_of(rt: &Runtime, route: Arc<Route>) -> Option<Target> {
    let (b, p) = route.config.backends.iter().find_map(|b| {
        let p = rt.provider(&b.provider)?;
        batches_served(p.kind).then(|| (b.clone(), p.clone()))
    })?;
    Some(Target::new(route, b, p))
}

/// One call, from its head to its response.
struct Turn {
    gw: Arc<Gateway>,
    rt: Arc<Runtime>,
    labels: Labels,
    start: Instant,
}

impl Turn {
    fn new(gw: &Arc<Gateway>, operation: &'static str, headers: &HeaderMap) -> Self {
        let request_id = headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
            .map_or_else(|| format!("{:032x}", rand::random::<u128>()), str::to_owned);
        let mut labels = Labels::new(request_id);
        labels.operation = Some(operation);
        Self {
            gw: gw.clone(),
            rt: gw.runtime(),
            labels,
            start: Instant::now(),
        }
    }

    fn key(&mut self, headers: &HeaderMap) -> Result<Arc<Key>, GatewayError> {
        let key = authenticate(&self.rt, headers)?;
        self.labels.team.clone_from(&key.team);
        self.labels.key = key.id.clone();
        Ok(key)
    }

    /// The backend of an upload or a list: see the module docs.
    fn chosen(&mut self, key: &Key, headers: &HeaderMap) -> Result<Target, GatewayError> {
        let named = headers.get(ROUTE_HEADER).and_then(|v| v.to_str().ok());
        let target = match named {
            Some(name) => {
                let route = self.rt.route_for(key, name)?;
                target_of(&self.rt, route).ok_or_else(|| {
                    GatewayError::bad_request(
                        format!("route `{name}` has no OpenAI or Azure OpenAI backend to hold files and batches"),
                        None,
                    )
                })?
            }
            None => self
                .rt
                .models_for(key)
                .iter()
                .filter_map(|m| self.rt.route_for(key, m).ok())
                .find_map(|r| target_of(&self.rt, r))
                .ok_or_else(|| {
                    GatewayError::bad_request(
                        "no route this key may use has an OpenAI or Azure OpenAI backend to hold files and batches",
                        None,
                    )
                })?,
        };
        self.served(&target);
        Ok(target)
    }

    /// The object a client's id names, if it is one this key may reach.
    fn open(&mut self, key: &Key, presented: &str, kinds: &[Kind]) -> Result<(Handle, Target), GatewayError> {
        let missing = || GatewayError::not_found(format!("No such object: {presented}"));
        let rt = &self.rt;
        let h = Handle::decode(presented, |p| rt.provider(p).map(|p| id::secret(p))).ok_or_else(missing)?;
        if h.namespace != key.config.namespace || !kinds.contains(&h.kind) {
            return Err(missing());
        }
        // The route as the key names it (wildcard routes made concrete, shared routes
        // qualified), asked as a request for that model would: `allowedRoutes` apply.
        let (ns, model) = h.route.split_once('/').ok_or_else(missing)?;
        let name = if ns == key.config.namespace {
            model
        } else {
            h.route.as_str()
        };
        let route = rt.route_for(key, name).map_err(|e| {
            if e.status == StatusCode::FORBIDDEN {
                GatewayError::forbidden(format!(
                    "This API key is not allowed to use model `{name}`, which holds {presented}."
                ))
            } else {
                missing()
            }
        })?;
        let provider = rt.provider(&h.provider).cloned().ok_or_else(missing)?;
        let backend = route
            .config
            .backends
            .iter()
            .find(|b| b.provider == h.provider)
            .cloned()
            .ok_or_else(missing)?;
        let target = Target::new(route, backend, provider);
        self.served(&target);
        Ok((h, target))
    }

    fn served(&mut self, t: &Target) {
        self.labels.name_route(t.route_name().into());
        self.labels.backend = t.backend.name.as_str().into();
        self.labels.provider = t.provider.kind.as_str();
        self.labels.attempts = 1;
    }

    /// The key's limits, taken for this call.
    async fn admit(&self, key: &Arc<Key>, t: &Target) -> Result<Admission, Response> {
        limits::admit(&self.gw.limits, key, &t.route, &serde_json::Map::new())
            .await
            .map_err(|refused| {
                let mut r = refused.error.into_response();
                refused.headers.apply(r.headers_mut());
                r
            })
    }

    /// The tail of every JSON call: the provider's answer (or the failure to reach it) relayed
    /// within `maxResponseBytes`, its ids rewritten by `rewrite` when it succeeded, and the
    /// key's admission released at no cost (a batch is billed when its output is read, see
    /// [`bill`]).
    async fn forward(
        &self,
        sent: Result<reqwest::Response, GatewayError>,
        admission: Admission,
        rewrite: impl AsyncFnOnce(&mut Value),
    ) -> Result<Response, Response> {
        let r = match sent {
            Ok(resp) => relay(resp, self.rt.config.settings.max_response_bytes, rewrite)
                .await
                .map_err(err),
            Err(e) => Err(err(e)),
        };
        admission.settle(0.0, None);
        r
    }

    /// Counts and logs the call; the response as the client gets it.
    fn end(self, result: Result<Response, Response>) -> Response {
        let mut response = result.unwrap_or_else(|r| r);
        let status = response.status().as_u16();
        if let Ok(v) = HeaderValue::from_str(&self.labels.request_id) {
            response.headers_mut().insert("x-request-id", v);
        }
        account::finish(&self.gw, &self.labels, status, self.start, None);
        response
    }
}

fn err(e: GatewayError) -> Response {
    e.into_response()
}

/// The HTTP client for these calls: like the upstream client, it never follows a redirect.
fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| crate::gateway::http_client().unwrap_or_default())
}

/// Sends one call to the target's provider: `tail` under its files and batches paths.
async fn send(
    t: &Target,
    method: Method,
    tail: &str,
    query: &[(&str, String)],
    headers: HeaderMap,
    body: Option<reqwest::Body>,
) -> Result<reqwest::Response, GatewayError> {
    let p = &t.provider;
    let base = p.base_url.trim_end_matches('/');
    let mut query = query.to_vec();
    let url = if p.kind == ProviderKind::AzureOpenai {
        query.push((
            "api-version",
            p.api_version.clone().unwrap_or_else(|| "2024-10-21".into()),
        ));
        format!("{base}/openai/{tail}")
    } else {
        format!("{base}/{tail}")
    };
    let mut req = client()
        .request(method, url)
        .query(&query)
        .headers(headers)
        .timeout(Duration::from_millis(p.timeouts.request_ms.max(1)));
    for (k, v) in &p.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    if let Some(CredentialsConfig::ApiKey { key }) = &p.credentials {
        req = match p.kind {
            ProviderKind::AzureOpenai => req.header("api-key", key.expose()),
            _ => req.bearer_auth(key.expose()),
        };
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    req.send().await.map_err(|e| {
        let kind = if e.is_timeout() {
            switchyard_providers::ErrorKind::Timeout
        } else {
            switchyard_providers::ErrorKind::Connect
        };
        GatewayError::upstream(
            &switchyard_providers::ProviderError::new(kind, format!("upstream request failed: {e}")),
            &t.backend.name,
        )
    })
}

/// An upstream JSON answer, its ids rewritten by `rewrite` when it succeeded; an error passes
/// through as the provider wrote it (OpenAI's error shape on both providers).
async fn relay(
    resp: reqwest::Response,
    limit: u64,
    rewrite: impl AsyncFnOnce(&mut Value),
) -> Result<Response, GatewayError> {
    let status = resp.status();
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| GatewayError::unavailable(format!("the upstream answer broke off: {e}")))?;
        body.extend_from_slice(&chunk);
        if body.len() as u64 > limit {
            return Err(GatewayError::unavailable(
                "the upstream answer is larger than maxResponseBytes",
            ));
        }
    }
    if !status.is_success() {
        let mut r = Response::new(Body::from(body));
        *r.status_mut() = status;
        r.headers_mut()
            .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return Ok(r);
    }
    let mut v: Value = serde_json::from_slice(&body)
        .map_err(|e| GatewayError::unavailable(format!("the upstream answered something that is not JSON: {e}")))?;
    rewrite(&mut v).await;
    Ok((StatusCode::OK, axum::Json(v)).into_response())
}

fn owner_mark(ns: &str, provider: &str, upstream: &str) -> String {
    format!("files-owner:{ns}:{provider}:{upstream}")
}

/// Remembers that namespace `ns` owns `upstream`, so that lists show it.
async fn own(gw: &Gateway, ns: &str, t: &Target, upstream: &str) {
    if let Err(e) = gw
        .state()
        .mark(&owner_mark(ns, &t.provider.id, upstream), REMEMBER)
        .await
    {
        tracing::warn!(error = %e, "could not record who owns {upstream}; lists will not show it");
    }
}

/// Rewrites a file object's id; `kind`: what the id names.
fn file_out(v: &mut Value, t: &Target, ns: &str, kind: Kind) {
    let kind = if v["purpose"] == "batch_output" {
        Kind::Output
    } else {
        kind
    };
    if let Some(up) = v["id"].as_str() {
        v["id"] = t.handle(kind, ns, up).into();
    }
}

/// Rewrites a batch object's ids, and remembers its files as the namespace's.
async fn batch_out(gw: &Gateway, v: &mut Value, t: &Target, ns: &str) {
    for (field, kind) in [
        ("id", Kind::Batch),
        ("input_file_id", Kind::File),
        ("output_file_id", Kind::Output),
        ("error_file_id", Kind::File),
    ] {
        if let Some(up) = v[field].as_str().map(str::to_owned) {
            if field != "id" {
                own(gw, ns, t, &up).await;
            }
            v[field] = t.handle(kind, ns, &up).into();
        }
    }
}

/// An upstream id as it may appear in a path.
fn path_safe(upstream: &str) -> Result<&str, GatewayError> {
    if !upstream.is_empty()
        && upstream
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        Ok(upstream)
    } else {
        Err(GatewayError::not_found("No such object"))
    }
}

// --- Files ------------------------------------------------------------------------------------

/// `POST /v1/files`: the multipart body streamed to the chosen backend.
async fn upload(State(gw): Gw, headers: HeaderMap, body: Body) -> Response {
    let _in_flight = InFlight::new(&gw.metrics.in_flight);
    let mut turn = Turn::new(&gw, FILES, &headers);
    let result = async {
        let key = turn.key(&headers).map_err(err)?;
        let t = turn.chosen(&key, &headers).map_err(err)?;
        let limit = turn.rt.config.settings.max_request_bytes;
        let length = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if length.is_some_and(|l| l > limit) {
            return Err(err(GatewayError::too_large(limit)));
        }
        let admission = turn.admit(&key, &t).await?;
        let mut up = HeaderMap::new();
        for h in [http::header::CONTENT_TYPE, http::header::CONTENT_LENGTH] {
            if let Some(v) = headers.get(&h) {
                up.insert(h, v.clone());
            }
        }
        let over = Arc::new(AtomicBool::new(false));
        let capped = capped(body, limit, over.clone());
        let boundary = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::audio::multipart::boundary);
        let refused = Arc::new(std::sync::Mutex::new(None));
        let body = match boundary {
            Some(boundary) => {
                // Lines change length as their models do.
                up.remove(http::header::CONTENT_LENGTH);
                let rewrite = batch_input::Rewrite::new(
                    boundary,
                    usize::try_from(limit).unwrap_or(usize::MAX),
                    upstream_models(&turn.rt, &key, &t),
                );
                reqwest::Body::wrap_stream(rewritten(capped, rewrite, refused.clone()))
            }
            None => reqwest::Body::wrap_stream(capped),
        };
        let sent = send(&t, Method::POST, "files", &[], up, Some(body)).await;
        if over.load(Ordering::Acquire) {
            admission.settle(0.0, None);
            return Err(err(GatewayError::too_large(limit)));
        }
        if let Some(e) = refused.lock().unwrap_or_else(|e| e.into_inner()).take() {
            admission.settle(0.0, None);
            return Err(err(e));
        }
        let ns = key.config.namespace.clone();
        turn.forward(sent, admission, async |v: &mut Value| {
            if let Some(up) = v["id"].as_str().map(str::to_owned) {
                own(&gw, &ns, &t, &up).await;
            }
            file_out(v, &t, &ns, Kind::File);
        })
        .await
    }
    .await;
    turn.end(result)
}

/// How a batch input line's model becomes the upstream one: a route the key may use, served on
/// the target's provider, by that backend's model; a name that is no route, as it is (the
/// provider's own model). A route served elsewhere, or one the key may not use, fails the upload.
fn upstream_models(
    rt: &Arc<Runtime>,
    key: &Arc<Key>,
    t: &Target,
) -> impl FnMut(usize, &str) -> Result<Option<String>, GatewayError> + Send + 'static {
    /// Distinct models remembered; more are looked up each time.
    const REMEMBERED: usize = 1024;
    let (rt, key) = (rt.clone(), key.clone());
    let provider = t.provider.id.clone();
    let via = t.route_name();
    let mut known = std::collections::HashMap::<String, Option<String>>::new();
    move |line, model| {
        if let Some(hit) = known.get(model) {
            return Ok(hit.clone());
        }
        let upstream = match rt.route_for(&key, model) {
            Ok(route) => match route.config.backends.iter().find(|b| b.provider == provider) {
                Some(b) => Some(b.model.clone()),
                None => {
                    return Err(GatewayError::bad_request(
                        format!(
                            "line {line} of the batch input file names route `{model}`, which has no backend on provider `{provider}`, where this file is uploaded (through route `{via}`)"
                        ),
                        Some("file"),
                    ))
                }
            },
            Err(e) if e.status == StatusCode::FORBIDDEN => {
                return Err(GatewayError::forbidden(format!(
                    "line {line} of the batch input file names route `{model}`, which this API key may not use"
                )))
            }
            Err(_) => None,
        };
        if known.len() < REMEMBERED {
            known.insert(model.to_owned(), upstream.clone());
        }
        Ok(upstream)
    }
}

/// The upload, its batch input lines rewritten; a line refused ends it, the reason in `refused`.
fn rewritten<F>(
    body: impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    mut rewrite: batch_input::Rewrite<F>,
    refused: Arc<std::sync::Mutex<Option<GatewayError>>>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static
where
    F: FnMut(usize, &str) -> Result<Option<String>, GatewayError> + Send + 'static,
{
    async_stream::stream! {
        let mut body = Box::pin(body);
        let mut out = Vec::new();
        let mut ended = false;
        while !ended {
            let step = match body.next().await {
                Some(Ok(chunk)) => rewrite.push(&chunk, &mut out),
                Some(Err(e)) => {
                    yield Err(e);
                    break;
                }
                None => {
                    ended = true;
                    rewrite.finish(&mut out)
                }
            };
            if let Err(e) = step {
                *refused.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                yield Err(std::io::Error::other("a batch input line was refused"));
                break;
            }
            for b in out.drain(..) {
                yield Ok(b);
            }
        }
    }
}

/// The client's body, refused past `limit` bytes (`over` says so).
fn capped(
    body: Body,
    limit: u64,
    over: Arc<AtomicBool>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let mut stream = body.into_data_stream();
    async_stream::stream! {
        let mut read = 0u64;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(b) => {
                    read += b.len() as u64;
                    if read > limit {
                        over.store(true, Ordering::Release);
                        yield Err(std::io::Error::other("the upload is larger than maxRequestBytes"));
                        break;
                    }
                    yield Ok(b);
                }
                Err(e) => {
                    yield Err(std::io::Error::other(e));
                    break;
                }
            }
        }
    }
}

/// The query of a list, `after` translated to the provider's id.
fn list_query(turn: &Turn, q: &std::collections::HashMap<String, String>) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for name in ["limit", "order", "purpose"] {
        if let Some(v) = q.get(name) {
            out.push((name, v.clone()));
        }
    }
    if let Some(after) = q.get("after") {
        let rt = &turn.rt;
        if let Some(h) = Handle::decode(after, |p| rt.provider(p).map(|p| id::secret(p))) {
            out.push(("after", h.upstream));
        }
    }
    out
}

/// Keeps the namespace's own objects of a list, with their ids rewritten.
async fn list_out(gw: &Gateway, v: &mut Value, t: &Target, ns: &str, batches: bool) {
    let mut kept = Vec::new();
    if let Some(data) = v["data"].as_array_mut() {
        for mut item in std::mem::take(data) {
            let Some(up) = item["id"].as_str().map(str::to_owned) else {
                continue;
            };
            if !gw
                .state()
                .marked(&owner_mark(ns, &t.provider.id, &up))
                .await
                .unwrap_or(false)
            {
                continue;
            }
            if batches {
                batch_out(gw, &mut item, t, ns).await;
            } else {
                file_out(&mut item, t, ns, Kind::File);
            }
            kept.push(item);
        }
    }
    let first = kept.first().map(|i| i["id"].clone()).unwrap_or(Value::Null);
    let last = kept.last().map(|i| i["id"].clone()).unwrap_or(Value::Null);
    v["data"] = Value::Array(kept);
    if v.get("first_id").is_some() {
        v["first_id"] = first;
    }
    if v.get("last_id").is_some() {
        v["last_id"] = last;
    }
}

async fn list(
    gw: Arc<Gateway>,
    op: &'static str,
    headers: HeaderMap,
    q: std::collections::HashMap<String, String>,
) -> Response {
    let _in_flight = InFlight::new(&gw.metrics.in_flight);
    let mut turn = Turn::new(&gw, op, &headers);
    let result = async {
        let key = turn.key(&headers).map_err(err)?;
        let t = turn.chosen(&key, &headers).map_err(err)?;
        let admission = turn.admit(&key, &t).await?;
        let query = list_query(&turn, &q);
        let ns = key.config.namespace.clone();
        let sent = send(&t, Method::GET, op, &query, HeaderMap::new(), None).await;
        turn.forward(sent, admission, async |v: &mut Value| {
            list_out(&gw, v, &t, &ns, op == BATCHES).await;
        })
        .await
    }
    .await;
    turn.end(result)
}

async fn list_files(
    State(gw): Gw,
    headers: HeaderMap,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    list(gw, FILES, headers, q).await
}

async fn list_batches(
    State(gw): Gw,
    headers: HeaderMap,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    list(gw, BATCHES, headers, q).await
}

/// A call on one object named by its id: `tail` after the provider's id, the answer's ids
/// rewritten.
async fn on_object(
    gw: Arc<Gateway>,
    op: &'static str,
    method: Method,
    headers: HeaderMap,
    presented: String,
    tail: &str,
) -> Response {
    let _in_flight = InFlight::new(&gw.metrics.in_flight);
    let mut turn = Turn::new(&gw, op, &headers);
    let result = async {
        let key = turn.key(&headers).map_err(err)?;
        let kinds: &[Kind] = if op == BATCHES {
            &[Kind::Batch]
        } else {
            &[Kind::File, Kind::Output]
        };
        let (h, t) = turn.open(&key, &presented, kinds).map_err(err)?;
        let up = path_safe(&h.upstream).map_err(err)?;
        let admission = turn.admit(&key, &t).await?;
        let ns = key.config.namespace.clone();
        let sent = send(&t, method, &format!("{op}/{up}{tail}"), &[], HeaderMap::new(), None).await;
        turn.forward(sent, admission, async |v: &mut Value| {
            if op == BATCHES {
                batch_out(&gw, v, &t, &ns).await;
            } else {
                file_out(v, &t, &ns, h.kind);
            }
        })
        .await
    }
    .await;
    turn.end(result)
}

async fn retrieve_file(State(gw): Gw, headers: HeaderMap, Path(id): Path<String>) -> Response {
    on_object(gw, FILES, Method::GET, headers, id, "").await
}

async fn delete_file(State(gw): Gw, headers: HeaderMap, Path(id): Path<String>) -> Response {
    on_object(gw, FILES, Method::DELETE, headers, id, "").await
}

async fn retrieve_batch(State(gw): Gw, headers: HeaderMap, Path(id): Path<String>) -> Response {
    on_object(gw, BATCHES, Method::GET, headers, id, "").await
}

async fn cancel_batch(State(gw): Gw, headers: HeaderMap, Path(id): Path<String>) -> Response {
    on_object(gw, BATCHES, Method::POST, headers, id, "/cancel").await
}

/// `GET /v1/files/{id}/content`: streamed from the provider. A batch's output file is billed
/// once it has been read to the end, the first time (see the module docs).
async fn file_content(State(gw): Gw, headers: HeaderMap, Path(presented): Path<String>) -> Response {
    let in_flight = InFlight::new(&gw.metrics.in_flight);
    let mut turn = Turn::new(&gw, FILES, &headers);
    let result = async {
        let key = turn.key(&headers).map_err(err)?;
        let (h, t) = turn.open(&key, &presented, &[Kind::File, Kind::Output]).map_err(err)?;
        let up = path_safe(&h.upstream).map_err(err)?;
        let admission = turn.admit(&key, &t).await?;
        let resp = match send(
            &t,
            Method::GET,
            &format!("files/{up}/content"),
            &[],
            HeaderMap::new(),
            None,
        )
        .await
        {
            Ok(r) => r,
            Err(e) => {
                admission.settle(0.0, None);
                return Err(err(e));
            }
        };
        if !resp.status().is_success() || h.kind != Kind::Output {
            admission.settle(0.0, None);
            return Ok(relay_raw(resp));
        }
        // Billed when the stream ends: its access log line is written then.
        turn.labels.accounted = true;
        let outcome = Outcome {
            route: t.route_name().into(),
            metrics: None,
            backend: t.backend.name.as_str().into(),
            provider: t.provider.clone(),
            price: t.backend.price,
            attempts: 1,
            fallback_depth: 0,
            upstream_elapsed: turn.start.elapsed(),
        };
        let account = Account::new(gw.clone(), turn.labels.clone(), &outcome, turn.start, admission, None);
        let billed = format!("batch-billed:{}:{}", t.provider.id, h.upstream);
        Ok(bill(gw.clone(), resp, account, billed))
    }
    .await;
    drop(in_flight);
    turn.end(result)
}

/// A provider's answer passed through as it streams.
fn relay_raw(resp: reqwest::Response) -> Response {
    let status = resp.status();
    let content_type = resp.headers().get(http::header::CONTENT_TYPE).cloned();
    let mut r = Response::new(Body::from_stream(resp.bytes_stream()));
    *r.status_mut() = status;
    if let Some(ct) = content_type {
        r.headers_mut().insert(http::header::CONTENT_TYPE, ct);
    }
    r
}

/// Streams a batch output file to the client, summing the usage of its lines; once the last
/// byte is through, the first fetch of the file (mark `billed`) records that usage.
fn bill(gw: Arc<Gateway>, resp: reqwest::Response, mut account: Account, billed: String) -> Response {
    let status = resp.status();
    let mut upstream = resp.bytes_stream();
    let body = async_stream::stream! {
        let mut usage = Usage::default();
        let mut line: Vec<u8> = Vec::new();
        let mut complete = false;
        loop {
            match upstream.next().await {
                Some(Ok(chunk)) => {
                    for part in chunk.split_inclusive(|b| *b == b'\n') {
                        line.extend_from_slice(part);
                        if line.ends_with(b"\n") {
                            add_line(&mut usage, &line);
                            line.clear();
                        }
                    }
                    yield Ok::<Bytes, std::io::Error>(chunk);
                }
                Some(Err(e)) => {
                    yield Err(std::io::Error::other(e));
                    break;
                }
                None => {
                    add_line(&mut usage, &line);
                    complete = true;
                    break;
                }
            }
        }
        if complete {
            let first = gw.state().mark(&billed, REMEMBER).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "could not check whether {billed} was billed; billing it");
                true
            });
            account.record(first.then_some(&usage));
        }
        // A fetch cut short bills nothing: the account drops with its admission given back.
    };
    let mut r = Response::new(Body::from_stream(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    r
}

/// Adds the usage of one batch output line (`response.body.usage`).
fn add_line(total: &mut Usage, line: &[u8]) {
    let Ok(v) = serde_json::from_slice::<Value>(line) else {
        return;
    };
    let u = &v["response"]["body"]["usage"];
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    total.prompt_tokens += n(&u["prompt_tokens"]);
    total.completion_tokens += n(&u["completion_tokens"]);
    total.cached_tokens += n(&u["prompt_tokens_details"]["cached_tokens"]);
    total.reasoning_tokens += n(&u["completion_tokens_details"]["reasoning_tokens"]);
}

// --- Batches ----------------------------------------------------------------------------------

/// `POST /v1/batches`: created on the provider of its input file.
async fn create_batch(State(gw): Gw, headers: HeaderMap, body: Body) -> Response {
    let _in_flight = InFlight::new(&gw.metrics.in_flight);
    let mut turn = Turn::new(&gw, BATCHES, &headers);
    let result = async {
        let key = turn.key(&headers).map_err(err)?;
        let limit = turn.rt.config.settings.max_request_bytes;
        let bytes = axum::body::to_bytes(body, usize::try_from(limit).unwrap_or(usize::MAX))
            .await
            .map_err(|_| err(GatewayError::too_large(limit)))?;
        crate::pipeline::values_within(&bytes, &turn.rt.config.settings).map_err(err)?;
        let mut req: serde_json::Map<String, Value> = serde_json::from_slice(&bytes).map_err(|e| {
            err(GatewayError::bad_request(
                format!("We could not parse the JSON body of your request ({e})."),
                None,
            ))
        })?;
        let input = req
            .get("input_file_id")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                err(GatewayError::bad_request(
                    "'input_file_id' is a required property",
                    Some("input_file_id"),
                ))
            })?
            .to_owned();
        let (h, t) = turn.open(&key, &input, &[Kind::File]).map_err(err)?;
        req.insert("input_file_id".into(), h.upstream.clone().into());
        let admission = turn.admit(&key, &t).await?;
        let mut up = HeaderMap::new();
        up.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let body = serde_json::to_vec(&req).unwrap_or_default();
        let ns = key.config.namespace.clone();
        let sent = send(&t, Method::POST, "batches", &[], up, Some(body.into())).await;
        turn.forward(sent, admission, async |v: &mut Value| {
            if let Some(up) = v["id"].as_str().map(str::to_owned) {
                own(&gw, &ns, &t, &up).await;
            }
            batch_out(&gw, v, &t, &ns).await;
        })
        .await
    }
    .await;
    turn.end(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_usage_of_every_output_line_is_summed() {
        let mut u = Usage::default();
        add_line(
            &mut u,
            br#"{"id":"r1","custom_id":"a","response":{"status_code":200,"body":{"usage":{"prompt_tokens":10,"completion_tokens":4,"prompt_tokens_details":{"cached_tokens":2}}}},"error":null}"#,
        );
        add_line(
            &mut u,
            br#"{"id":"r2","custom_id":"b","response":{"status_code":200,"body":{"usage":{"prompt_tokens":5,"completion_tokens":1,"completion_tokens_details":{"reasoning_tokens":1}}}},"error":null}"#,
        );
        // A failed request has no response body; an empty line is nothing.
        add_line(
            &mut u,
            br#"{"id":"r3","custom_id":"c","response":null,"error":{"code":"x"}}"#,
        );
        add_line(&mut u, b"");
        assert_eq!(
            (
                u.prompt_tokens,
                u.completion_tokens,
                u.cached_tokens,
                u.reasoning_tokens
            ),
            (15, 5, 2, 1)
        );
    }
}
