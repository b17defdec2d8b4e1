//! A test double of kube-apiserver, served over HTTP on 127.0.0.1: Secrets (kubeecr's
//! objects), and Leases and Events for what is built on them.
//!
//! It keeps kube-apiserver's contract where kubeecr depends on it: resourceVersion and 409 on
//! a stale one, create/get/list (paged, with 410 for expired continue tokens), label
//! selectors, generateName, metadata-only lists (`as=PartialObjectMetadataList`), merge,
//! strategic-merge (map-only, as for Secrets), JSON and apply patches, watch (label-selected
//! as the watch cache does it, bookmarks, timeoutSeconds, 410 Gone, streaming lists refused
//! as by a server without RequestWatchProgress), dry-run, built-in Secret and Event
//! validation, and admission webhooks called over HTTPS (see `admission`). Server-side apply
//! is approximated as a merge of the applied object (no field ownership). Field selectors
//! support `metadata.name` and `metadata.namespace` with `=`, `==` and `!=`.
//!
//! Clients are trusted (any token will do), but once a test installs RBAC (`rbac`), a request
//! that impersonates a user (kubeconfig `as:`) gets only what that RBAC grants the user.
//!
//! `tests/fixtures/apiserver/` holds what a real kube-apiserver answered; the contract tests
//! compare the double with it.
//!
//! For tests it also fails, throttles, drops, delays requests and cuts watches on demand
//! (`fail_next`, `throttle_next`, `drop_next`, `lose_next_answer`, `delay_next`,
//! `break_watches`, `pause_watches`), which is why
//! it serves connections itself: a dropped request closes its TCP connection.

pub mod admission;
pub mod kinds;
pub mod rbac;
pub mod selector;
pub mod status;
pub mod store;
pub mod validation;

use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, watch};
use tower::ServiceExt;

use admission::{Operation, Webhooks, Write};
use kinds::ResourceKind;
use selector::{FieldSelector, LabelSelector};
use status::ApiError;
use store::{Event, Key, Store, generate_name, name_of, normalize, rv_of};

/// One request as the double saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub accept: String,
    pub content_type: String,
    /// When the double received it.
    pub at: std::time::Instant,
    /// The status it was answered with (0 until then, and for a dropped request); for a lost
    /// answer, the status of what was carried out.
    status: Arc<std::sync::atomic::AtomicU16>,
}

impl Recorded {
    /// The status the request was served with, if it was.
    pub fn status(&self) -> Option<u16> {
        Some(self.status.load(Ordering::SeqCst)).filter(|s| *s != 0)
    }

    pub fn is_metadata_only(&self) -> bool {
        self.accept.contains("as=PartialObjectMetadata")
    }

    /// A query parameter, decoded.
    pub fn param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k) == name).then(|| percent_decode(v))
        })
    }

    pub fn label_selector(&self) -> Option<String> {
        self.param("labelSelector")
    }

    pub fn field_selector(&self) -> Option<String> {
        self.param("fieldSelector")
    }

    pub fn is_watch(&self) -> bool {
        matches!(self.param("watch").as_deref(), Some("1" | "true"))
    }
}

impl Recorded {
    /// (resource, verb) as kube-apiserver's metrics name them: LIST, WATCH, GET, PATCH, ...
    pub fn resource_and_verb(&self) -> Option<(String, &'static str)> {
        let parts: Vec<&str> = self.path.trim_matches('/').split('/').collect();
        let rest = match parts.as_slice() {
            ["api", _, rest @ ..] => rest,
            ["apis", _, _, rest @ ..] => rest,
            _ => return None,
        };
        let (resource, named) = match rest {
            ["namespaces", _, resource] | [resource] => (*resource, false),
            ["namespaces", _, resource, _] => (*resource, true),
            _ => return None,
        };
        let verb = match self.method {
            Method::GET if self.is_watch() => "WATCH",
            Method::GET if named => "GET",
            Method::GET => "LIST",
            Method::PATCH => "PATCH",
            Method::PUT => "PUT",
            Method::POST => "POST",
            Method::DELETE => "DELETE",
            _ => return None,
        };
        Some((resource.to_string(), verb))
    }
}

async fn request_counts(State(shared): State<Arc<Shared>>) -> axum::Json<Value> {
    let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
    for r in shared.requests.lock().unwrap().iter() {
        if let Some((resource, verb)) = r.resource_and_verb() {
            *counts.entry(format!("{resource} {verb}")).or_default() += 1;
        }
    }
    axum::Json(json!(counts))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 3 <= bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What to do to the next matching requests.
#[derive(Debug, Clone)]
enum FaultAction {
    Fail(ApiError),
    /// Answered with this status and body, whatever the request.
    Answer(u16, String),
    Drop,
    /// Served, then the connection closed before the answer was sent.
    LoseAnswer,
    Delay(Duration),
}

#[derive(Debug, Clone)]
struct Fault {
    method: Method,
    path_contains: String,
    remaining: usize,
    action: FaultAction,
}

/// One client connection; killing it closes the socket with no further bytes.
#[derive(Debug)]
struct Conn {
    kill: watch::Sender<bool>,
}

impl Conn {
    fn kill(&self) {
        self.kill.send_replace(true);
    }
}

pub struct Shared {
    pub store: Store,
    pub webhooks: Webhooks,
    pub rbac: rbac::Rbac,
    requests: Mutex<Vec<Recorded>>,
    faults: Mutex<Vec<Fault>>,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    /// Open watch streams, by id, with their connection (for `break_watches`).
    watches: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    paused: watch::Sender<bool>,
    bookmark_interval: Mutex<Duration>,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            store: Store::default(),
            webhooks: Webhooks::default(),
            rbac: rbac::Rbac::default(),
            requests: Mutex::default(),
            faults: Mutex::default(),
            conns: Mutex::default(),
            watches: Mutex::default(),
            next_id: AtomicU64::new(1),
            paused: watch::Sender::new(false),
            bookmark_interval: Mutex::new(Duration::from_secs(1)),
        }
    }
}

pub struct FakeApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
        // Connections are served by tasks of their own; end them too.
        for conn in self.shared.conns.lock().unwrap().values() {
            conn.kill();
        }
    }
}

#[derive(serde::Deserialize, Default)]
struct ListQuery {
    limit: Option<usize>,
    #[serde(rename = "continue")]
    continue_: Option<String>,
    watch: Option<String>,
    #[serde(rename = "resourceVersion")]
    resource_version: Option<String>,
    #[serde(rename = "labelSelector")]
    label_selector: Option<String>,
    #[serde(rename = "fieldSelector")]
    field_selector: Option<String>,
    #[serde(rename = "allowWatchBookmarks")]
    allow_watch_bookmarks: Option<String>,
    #[serde(rename = "timeoutSeconds")]
    timeout_seconds: Option<u64>,
    #[serde(rename = "sendInitialEvents")]
    send_initial_events: Option<String>,
    #[serde(rename = "dryRun")]
    dry_run: Option<String>,
    #[serde(rename = "fieldManager")]
    field_manager: Option<String>,
}

fn is_true(flag: &Option<String>) -> bool {
    matches!(flag.as_deref(), Some("true" | "1"))
}

impl FakeApiServer {
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0").await
    }

    pub async fn start_on(addr: &str) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/api/v1/{resource}", get(list))
            .route("/api/v1/namespaces/{ns}/{resource}", get(list).post(create))
            .route(
                "/api/v1/namespaces/{ns}/{resource}/{name}",
                get(get_one).put(replace).patch(patch).delete(delete),
            )
            .route("/apis/{group}/{version}/{resource}", get(list))
            .route("/apis/{group}/{version}/namespaces/{ns}/{resource}", get(list).post(create))
            .route(
                "/apis/{group}/{version}/namespaces/{ns}/{resource}/{name}",
                get(get_one).put(replace).patch(patch).delete(delete),
            )
            .route("/version", get(|| async { axum::Json(json!({"major": "1", "minor": "36", "gitVersion": "v1.36.2-kubeecr-double"})) }))
            // Legacy discovery, enough for kubectl.
            .route("/api", get(|| async { axum::Json(json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})) }))
            .route("/apis", get(|| async { axum::Json(discovery_groups()) }))
            .route("/api/v1", get(|| async { axum::Json(discovery_resources("", "v1")) }))
            .route(
                "/apis/{group}/{version}",
                get(|Path((group, version)): Path<(String, String)>| async move {
                    axum::Json(discovery_resources(&group, &version))
                }),
            )
            // Not the API: requests so far, counted as kube-apiserver's apiserver_request_total
            // counts them, for the bench scripts.
            .route("/testkit/requests", get(request_counts))
            .fallback(|uri: Uri| async move {
                ApiError::new(404, "NotFound", format!("the server could not find the requested resource ({uri})"))
            })
            .layer(axum::middleware::from_fn_with_state(shared.clone(), record))
            .with_state(shared.clone());
        let task = tokio::spawn(accept(listener, app, shared.clone()));
        Self { addr, shared, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    pub fn webhooks(&self) -> &Webhooks {
        &self.shared.webhooks
    }

    /// RBAC for impersonated users, enforced once installed (see `rbac`).
    pub fn rbac(&self) -> &rbac::Rbac {
        &self.shared.rbac
    }

    pub fn config(&self) -> kube::Config {
        let mut config = kube::Config::new(self.url().parse().expect("url"));
        config.default_namespace = "default".into();
        config.read_timeout = Some(Duration::from_secs(30));
        config
    }

    pub fn client(&self) -> kube::Client {
        kube::Client::try_from(self.config()).expect("client")
    }

    /// A kubeconfig file pointing at the double, for the CLI and kubectl.
    pub fn write_kubeconfig(&self, path: &std::path::Path) {
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: double\n  cluster:\n    server: {}\ncontexts:\n- name: double\n  context:\n    cluster: double\n    user: double\ncurrent-context: double\nusers:\n- name: double\n  user:\n    token: not-checked\n",
            self.url()
        );
        std::fs::write(path, kubeconfig).expect("write kubeconfig");
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    pub fn clear_requests(&self) {
        self.shared.requests.lock().unwrap().clear();
    }

    fn add_fault(&self, method: Method, path_contains: &str, times: usize, action: FaultAction) {
        self.shared.faults.lock().unwrap().push(Fault {
            method,
            path_contains: path_contains.to_string(),
            remaining: times,
            action,
        });
    }

    /// The next `times` requests of `method` whose `path?query` contains `path_contains` fail with
    /// `code` and `reason`, message `injected {code} {reason}`. A 500 `InternalError` also
    /// carries its cause in `details.causes`, as the real server's; the real message would
    /// start `Internal error occurred: `, kept out because tests match the message. On a
    /// watch, the failure is the HTTP answer, as when the real server cannot start the watch.
    pub fn fail_next(
        &self,
        method: Method,
        path_contains: &str,
        times: usize,
        code: u16,
        reason: &'static str,
    ) {
        let message = format!("injected {code} {reason}");
        let mut error = ApiError::new(code, reason, message.clone());
        if code == 500 {
            error.causes = vec![json!({"message": message})];
        }
        self.add_fault(method, path_contains, times, FaultAction::Fail(error));
    }

    /// The next `times` matching requests are refused with 429 `TooManyRequests` and
    /// `Retry-After: {seconds}`, as API Priority and Fairness refuses them.
    pub fn throttle_next(&self, method: Method, path_contains: &str, times: usize, seconds: u64) {
        let error = ApiError::too_many_requests(seconds);
        self.add_fault(method, path_contains, times, FaultAction::Fail(error));
    }

    /// The next `times` matching requests get their TCP connection closed without any HTTP
    /// response: the client sees a connection error. Faults apply in the order added, one
    /// per request.
    pub fn drop_next(&self, method: Method, path_contains: &str, times: usize) {
        self.add_fault(method, path_contains, times, FaultAction::Drop);
    }

    /// The next `times` matching requests are carried out, then their connection is closed
    /// before the answer is sent: a write that landed, whose client saw a connection error.
    pub fn lose_next_answer(&self, method: Method, path_contains: &str, times: usize) {
        self.add_fault(method, path_contains, times, FaultAction::LoseAnswer);
    }

    /// The next `times` matching requests are answered with `status` and `body` as given
    /// (JSON), e.g. an object that does not decode.
    pub fn answer_next(
        &self,
        method: Method,
        path_contains: &str,
        times: usize,
        status: u16,
        body: &str,
    ) {
        self.add_fault(
            method,
            path_contains,
            times,
            FaultAction::Answer(status, body.to_string()),
        );
    }

    /// The next `times` matching requests are served only after `delay`.
    pub fn delay_next(&self, method: Method, path_contains: &str, times: usize, delay: Duration) {
        self.add_fault(method, path_contains, times, FaultAction::Delay(delay));
    }

    /// Cuts every open watch now: its connection closes mid-stream (no clean end of the
    /// chunked body), so clients see an error and must watch again.
    pub fn break_watches(&self) {
        let cut: Vec<Arc<Conn>> = self
            .shared
            .watches
            .lock()
            .unwrap()
            .drain()
            .map(|(_, conn)| conn)
            .collect();
        for conn in cut {
            conn.kill();
        }
    }

    /// While paused, open watches send nothing (events wait; a watch that falls more than the
    /// event buffer behind is closed, as the real server closes watchers that are too slow).
    pub fn pause_watches(&self, paused: bool) {
        self.shared.paused.send_replace(paused);
    }

    /// How often watches with `allowWatchBookmarks=true` get a BOOKMARK (default 1 s; the
    /// real server's is about a minute). Applies to watches started afterwards.
    pub fn set_bookmark_interval(&self, every: Duration) {
        *self.shared.bookmark_interval.lock().unwrap() = every;
    }

    /// How many watch streams are open.
    pub fn open_watches(&self) -> usize {
        self.shared.watches.lock().unwrap().len()
    }
}

/// Serves each connection on a task of its own, so that a connection can be closed at once
/// (`drop_next`, `break_watches`).
async fn accept(listener: tokio::net::TcpListener, app: Router, shared: Arc<Shared>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of file descriptors and the like: wait, as axum::serve does.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            kill: watch::Sender::new(false),
        });
        shared.conns.lock().unwrap().insert(id, conn.clone());
        let (app, shared) = (app.clone(), shared.clone());
        tokio::spawn(async move {
            let mut killed = conn.kill.subscribe();
            let for_requests = conn.clone();
            let service =
                hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(for_requests.clone());
                    app.clone().oneshot(req)
                });
            let serving = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::select! {
                _ = serving => {}
                _ = killed.wait_for(|k| *k) => {}
            }
            shared.conns.lock().unwrap().remove(&id);
        });
    }
}

async fn record(
    State(shared): State<Arc<Shared>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let recorded = {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        Recorded {
            method: req.method().clone(),
            path: req.uri().path().to_string(),
            query: req.uri().query().unwrap_or("").to_string(),
            accept: header("accept"),
            content_type: header("content-type"),
            at: std::time::Instant::now(),
            status: Arc::default(),
        }
    };
    shared.requests.lock().unwrap().push(recorded.clone());
    let served = |response: Response| {
        recorded
            .status
            .store(response.status().as_u16(), Ordering::SeqCst);
        response
    };
    // Authorization comes before everything else the server does, as in kube-apiserver.
    let impersonated = req
        .headers()
        .get("impersonate-user")
        .and_then(|v| v.to_str().ok());
    if let Some(user) = impersonated
        && let Some(attributes) =
            rbac::Attributes::of_request(user, &recorded.method, &recorded.path, &recorded.query)
        && !shared.rbac.allows(&attributes)
    {
        let message = attributes.forbidden_message();
        return served(ApiError::new(403, "Forbidden", message).into_response());
    }
    let injected = {
        let mut faults = shared.faults.lock().unwrap();
        let target = format!("{}?{}", recorded.path, recorded.query);
        let hit = faults.iter_mut().find(|f| {
            f.method == recorded.method && target.contains(&f.path_contains) && f.remaining > 0
        });
        hit.map(|f| {
            f.remaining -= 1;
            f.action.clone()
        })
    };
    match injected {
        Some(FaultAction::Fail(error)) => served(error.into_response()),
        Some(FaultAction::Answer(status, body)) => served(
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body))
                .unwrap(),
        ),
        Some(FaultAction::Drop) => {
            if let Some(conn) = req.extensions().get::<Arc<Conn>>() {
                conn.kill();
            }
            // The connection's task drops this request with the socket.
            futures::future::pending().await
        }
        Some(FaultAction::LoseAnswer) => {
            let conn = req.extensions().get::<Arc<Conn>>().cloned();
            let response = served(next.run(req).await);
            match conn {
                Some(conn) => {
                    conn.kill();
                    futures::future::pending().await
                }
                // Not served by `accept` (no connection to cut): answer, loudly wrong.
                None => response,
            }
        }
        Some(FaultAction::Delay(delay)) => {
            tokio::time::sleep(delay).await;
            served(next.run(req).await)
        }
        None => served(next.run(req).await),
    }
}

fn wants_metadata(headers: &HeaderMap) -> bool {
    headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=PartialObjectMetadata"))
}

/// Writes `obj`, or its `PartialObjectMetadata` form, without copying it.
fn write_object(buf: &mut Vec<u8>, obj: &Value, metadata: bool) {
    if metadata {
        buf.extend_from_slice(
            br#"{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":"#,
        );
        serde_json::to_writer(&mut *buf, &obj["metadata"]).expect("JSON");
        buf.push(b'}');
    } else {
        serde_json::to_writer(&mut *buf, obj).expect("JSON");
    }
}

fn json_response(code: StatusCode, body: Vec<u8>) -> Response {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap()
}

/// The object a request addresses: core (`/api/v1/...`) or grouped (`/apis/g/v/...`).
#[derive(serde::Deserialize)]
struct Target {
    group: Option<String>,
    version: Option<String>,
    resource: String,
    ns: Option<String>,
    name: Option<String>,
}

impl Target {
    fn kind(&self) -> Result<ResourceKind, ApiError> {
        let group = self.group.as_deref().unwrap_or("");
        let version = self.version.as_deref().unwrap_or("v1");
        ResourceKind::find(group, version, &self.resource).ok_or_else(|| {
            ApiError::new(
                404,
                "NotFound",
                format!(
                    "the server could not find the requested resource ({group}/{version} {})",
                    self.resource
                ),
            )
        })
    }

    fn ns(&self) -> &str {
        self.ns.as_deref().unwrap_or("")
    }

    fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }

    fn key(&self, kind: ResourceKind) -> Key {
        (kind, self.ns().to_string(), self.name().to_string())
    }
}

fn discovery_groups() -> Value {
    let mut groups: Vec<Value> = Vec::new();
    for kind in kinds::ALL.iter().filter(|k| !k.group.is_empty()) {
        if groups.iter().any(|g| g["name"] == kind.group) {
            continue;
        }
        let gv = json!({"groupVersion": kind.api_version(), "version": kind.version});
        groups.push(json!({"name": kind.group, "versions": [gv], "preferredVersion": gv}));
    }
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn discovery_resources(group: &str, version: &str) -> Value {
    let resources: Vec<Value> = kinds::ALL
        .iter()
        .filter(|k| k.group == group && k.version == version)
        .map(|k| {
            json!({
                "name": k.resource, "singularName": k.singular, "namespaced": true, "kind": k.kind,
                "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
            })
        })
        .collect();
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "groupVersion": group_version, "resources": resources})
}

fn encode_continue(rv: u64, last: &(String, String)) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&json!([rv, last.0, last.1])).unwrap())
}

fn decode_continue(token: &str) -> Option<(u64, (String, String))> {
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    let (rv, ns, name): (u64, String, String) = serde_json::from_slice(&bytes).ok()?;
    Some((rv, (ns, name)))
}

/// The objects a list or watch is about: a resource, in a namespace or all, with labels.
struct Selection {
    kind: ResourceKind,
    ns: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Selection {
    fn matches(&self, obj: &Value) -> bool {
        self.ns
            .as_deref()
            .is_none_or(|n| obj["metadata"]["namespace"] == n)
            && self.selects(obj)
    }

    /// The label and field selectors, whatever the namespace.
    fn selects(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }
}

async fn list(
    State(s): State<Arc<Shared>>,
    Extension(conn): Extension<Arc<Conn>>,
    Path(target): Path<Target>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> Response {
    let kind = match target.kind() {
        Ok(kind) => kind,
        Err(e) => return e.into_response(),
    };
    let labels = match LabelSelector::parse(q.label_selector.as_deref().unwrap_or("")) {
        Ok(labels) => labels,
        Err(e) => return e.into_response(),
    };
    let fields = match FieldSelector::parse(q.field_selector.as_deref().unwrap_or("")) {
        Ok(fields) => fields,
        Err(e) => return e.into_response(),
    };
    let selection = Selection {
        kind,
        ns: target.ns.clone(),
        labels,
        fields,
    };
    let metadata = wants_metadata(&headers);
    if is_true(&q.watch) {
        return start_watch(s, conn, selection, &q, metadata);
    }
    let continued = match q.continue_.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(token) => match decode_continue(token) {
            None => return ApiError::bad_request("continue key is not valid").into_response(),
            // 0: an inconsistent continuation, served at the latest version.
            Some((rv, key)) if rv != 0 && rv < s.store.continue_floor() => {
                // As fixture 03: 410, with a token for an inconsistent continuation.
                let mut e = ApiError::gone(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                );
                e.continue_token = Some(encode_continue(0, &key));
                return e.into_response();
            }
            Some(found) => Some(found),
        },
    };
    let (current_rv, items, remaining) = s.store.list_matching(
        kind,
        selection.ns.as_deref(),
        &|o| selection.selects(o),
        continued.as_ref().map(|(_, key)| key),
        q.limit.filter(|l| *l > 0),
    );
    // Every page carries the first page's version, as the real server's (fixture 02); the
    // double's later pages show the current objects, not a snapshot.
    let rv = match &continued {
        Some((rv, _)) if *rv != 0 => *rv,
        _ => current_rv,
    };
    let mut list_meta = json!({"resourceVersion": rv.to_string()});
    if remaining > 0
        && let Some(last) = items.last()
    {
        let key = (
            last["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            name_of(last).to_string(),
        );
        list_meta["continue"] = json!(encode_continue(rv, &key));
        // The real server leaves the count out when a selector filters the list.
        if selection.labels.is_empty() && selection.fields.is_empty() {
            list_meta["remainingItemCount"] = json!(remaining);
        }
    }
    let (list_kind, api_version) = if metadata {
        (
            "PartialObjectMetadataList".to_string(),
            "meta.k8s.io/v1".to_string(),
        )
    } else {
        (format!("{}List", kind.kind), kind.api_version())
    };
    let mut body = Vec::new();
    write!(
        body,
        r#"{{"kind":{},"apiVersion":{},"metadata":{list_meta},"items":["#,
        json!(list_kind),
        json!(api_version)
    )
    .expect("write");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        write_object(&mut body, item, metadata);
    }
    body.extend_from_slice(b"]}");
    json_response(StatusCode::OK, body)
}

/// A watch's options and how it renders events.
struct WatchSpec {
    selection: Selection,
    metadata: bool,
    bookmarks: bool,
    timeout: Option<Duration>,
}

impl WatchSpec {
    fn line(&self, kind: &str, obj: &Value) -> Bytes {
        let mut l = Vec::new();
        write!(l, r#"{{"type":"{kind}","object":"#).expect("write");
        write_object(&mut l, obj, self.metadata);
        l.extend_from_slice(b"}\n");
        Bytes::from(l)
    }

    /// What this watcher sees of a change, as the watch cache decides it: the current and the
    /// previous object are each tested against the selection. Leaving the selection is a
    /// DELETED of the previous content at the new version; entering it, an ADDED.
    fn event_line(&self, e: &Event) -> Option<Bytes> {
        if e.resource != self.selection.kind {
            return None;
        }
        let now = e.kind != "DELETED" && self.selection.matches(&e.object);
        let before = e.prev.as_deref().is_some_and(|p| self.selection.matches(p));
        match (now, before) {
            (true, false) => Some(self.line("ADDED", &e.object)),
            (true, true) => Some(self.line("MODIFIED", &e.object)),
            // A DELETED event already carries the last content at the new version.
            (false, true) if e.kind == "DELETED" => Some(self.line("DELETED", &e.object)),
            (false, true) => {
                let mut gone = Value::clone(e.prev.as_deref().expect("matched"));
                gone["metadata"]["resourceVersion"] = json!(e.rv.to_string());
                Some(self.line("DELETED", &gone))
            }
            (false, false) => None,
        }
    }

    /// A BOOKMARK: only kind, apiVersion and the version (fixture 04).
    fn bookmark(&self, rv: u64) -> Bytes {
        let kind = self.selection.kind;
        let (k, api_version) = if self.metadata {
            (
                "PartialObjectMetadata".to_string(),
                "meta.k8s.io/v1".to_string(),
            )
        } else {
            (kind.kind.to_string(), kind.api_version())
        };
        let object = json!({"kind": k, "apiVersion": api_version, "metadata": {"resourceVersion": rv.to_string()}});
        let mut l = serde_json::to_vec(&json!({"type": "BOOKMARK", "object": object})).unwrap();
        l.push(b'\n');
        Bytes::from(l)
    }
}

/// A watch answered 200 with one ERROR event carrying `error`'s Status, then ended.
fn watch_error(error: &ApiError) -> Response {
    let mut l = serde_json::to_vec(&json!({"type": "ERROR", "object": error.to_json()})).unwrap();
    l.push(b'\n');
    json_response(StatusCode::OK, l)
}

fn start_watch(
    s: Arc<Shared>,
    conn: Arc<Conn>,
    selection: Selection,
    q: &ListQuery,
    metadata: bool,
) -> Response {
    if is_true(&q.send_initial_events) {
        // As a server whose etcd lacks RequestWatchProgress (fixture 06). Other checks the
        // real server makes of these options are not modelled.
        return watch_error(&ApiError::new(
            500,
            "InternalError",
            "a watch stream was requested by the client but the required storage feature RequestWatchProgress is disabled",
        ));
    }
    let from = match q
        .resource_version
        .as_deref()
        .filter(|v| !v.is_empty() && *v != "0")
    {
        None => None,
        Some(v) => match v.parse::<u64>() {
            Ok(rv) => Some(rv),
            // The real server refuses it too; its exact message is not checked.
            Err(_) => {
                return ApiError::bad_request(format!("invalid resource version: {v}"))
                    .into_response();
            }
        },
    };
    let spec = WatchSpec {
        selection,
        metadata,
        bookmarks: is_true(&q.allow_watch_bookmarks),
        // 0 is "the server's default", which the double makes "no timeout".
        timeout: q
            .timeout_seconds
            .filter(|t| *t > 0)
            .map(Duration::from_secs),
    };
    let mut initial = Vec::new();
    let watched = match from {
        // No version: the current objects as ADDED, then changes.
        None => {
            let (rv, items, _) = s.store.list_matching(
                spec.selection.kind,
                spec.selection.ns.as_deref(),
                &|o| spec.selection.selects(o),
                None,
                None,
            );
            initial.extend(items.iter().map(|o| spec.line("ADDED", o)));
            s.store.watch_from(rv)
        }
        Some(rv) => s.store.watch_from(rv),
    };
    let (past, rx, current) = match watched {
        Ok(w) => w,
        // As kube-apiserver: 200, then one ERROR event carrying the 410 Status (fixture 05).
        Err(gone) => return watch_error(&gone),
    };
    initial.extend(past.iter().filter_map(|e| spec.event_line(e)));
    let id = s.next_id.fetch_add(1, Ordering::Relaxed);
    s.watches.lock().unwrap().insert(id, conn);
    let (tx, body) = mpsc::channel(64);
    tokio::spawn(stream_watch(s, id, spec, initial, rx, current, tx));
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(
            tokio_stream::wrappers::ReceiverStream::new(body),
        ))
        .unwrap()
}

type Line = Result<Bytes, std::io::Error>;

/// Feeds one watch stream until the client goes, the timeout ends it, or it falls too far
/// behind the store's event buffer.
async fn stream_watch(
    s: Arc<Shared>,
    id: u64,
    spec: WatchSpec,
    initial: Vec<Bytes>,
    mut rx: broadcast::Receiver<Event>,
    mut seen: u64,
    tx: mpsc::Sender<Line>,
) {
    struct Registered(Arc<Shared>, u64);
    impl Drop for Registered {
        fn drop(&mut self) {
            self.0.watches.lock().unwrap().remove(&self.1);
        }
    }
    let _registered = Registered(s.clone(), id);
    let deadline = async {
        match spec.timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => futures::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut paused = s.paused.subscribe();
    let every = *s.bookmark_interval.lock().unwrap();
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut initial = Some(initial);

    // Sends what is pending, then a bookmark at a version no event still queued precedes.
    async fn bookmark(
        s: &Shared,
        spec: &WatchSpec,
        rx: &mut broadcast::Receiver<Event>,
        seen: &mut u64,
        tx: &mpsc::Sender<Line>,
    ) -> bool {
        // Every event up to `current` is already in `rx` (the store sends under its lock).
        let current = s.store.resource_version();
        loop {
            match rx.try_recv() {
                Ok(e) => {
                    *seen = e.rv;
                    if let Some(line) = spec.event_line(&e)
                        && tx.send(Ok(line)).await.is_err()
                    {
                        return false;
                    }
                }
                Err(broadcast::error::TryRecvError::Empty) => break,
                Err(_) => return false,
            }
        }
        tx.send(Ok(spec.bookmark(current.max(*seen)))).await.is_ok()
    }

    loop {
        if *paused.borrow_and_update() {
            tokio::select! {
                _ = tx.closed() => return,
                _ = &mut deadline => return,
                _ = paused.changed() => continue,
            }
        }
        if let Some(lines) = initial.take() {
            for line in lines {
                if tx.send(Ok(line)).await.is_err() {
                    return;
                }
            }
        }
        tokio::select! {
            biased;
            _ = tx.closed() => return,
            _ = &mut deadline => {
                // One last bookmark, then a clean end, as fixture 04.
                if spec.bookmarks {
                    bookmark(&s, &spec, &mut rx, &mut seen, &tx).await;
                }
                return;
            }
            _ = paused.changed() => {}
            received = rx.recv() => match received {
                Ok(e) => {
                    seen = e.rv;
                    if let Some(line) = spec.event_line(&e)
                        && tx.send(Ok(line)).await.is_err()
                    {
                        return;
                    }
                }
                // Too far behind (or the store is gone): end the watch; the client watches
                // again from the last version it saw, as with the real server.
                Err(_) => return,
            },
            _ = ticker.tick(), if spec.bookmarks => {
                if !bookmark(&s, &spec, &mut rx, &mut seen, &tx).await {
                    return;
                }
            }
        }
    }
}

async fn get_one(
    State(s): State<Arc<Shared>>,
    Path(target): Path<Target>,
    headers: HeaderMap,
) -> Response {
    let kind = match target.kind() {
        Ok(kind) => kind,
        Err(e) => return e.into_response(),
    };
    match s.store.get_shared(&target.key(kind)) {
        Some(obj) => {
            let mut body = Vec::new();
            write_object(&mut body, &obj, wants_metadata(&headers));
            json_response(StatusCode::OK, body)
        }
        None => ApiError::not_found(&kind, target.name()).into_response(),
    }
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("couldn't decode the body: {e}")))
}

/// Wraps a write result: the object (as `PartialObjectMetadata` when the client asked for
/// that, as the real server answers any verb) with warning headers, or the Status.
fn respond(
    result: Result<(Value, Vec<String>), ApiError>,
    created: bool,
    headers: &HeaderMap,
) -> Response {
    match result {
        Ok((obj, warnings)) => {
            let code = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let mut body = Vec::new();
            write_object(&mut body, &obj, wants_metadata(headers));
            let mut response = json_response(code, body);
            for w in warnings {
                let value = format!("299 - {}", serde_json::to_string(&w).unwrap());
                if let Ok(v) = HeaderValue::from_str(&value) {
                    response.headers_mut().append("warning", v);
                }
            }
            response
        }
        Err(e) => e.into_response(),
    }
}

fn is_dry_run(q: &ListQuery) -> bool {
    q.dry_run.as_deref() == Some("All")
}

async fn create(
    State(s): State<Arc<Shared>>,
    Path(target): Path<Target>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let user = user_of(&headers);
    let result = async {
        let kind = target.kind()?;
        let obj = parse_json(&body)?;
        let name = name_of(&obj).to_string();
        let write_to = WriteTo {
            kind,
            ns: target.ns(),
            name: &name,
            op: Operation::Create,
            dry_run: is_dry_run(&q),
            user: &user,
        };
        write(&s, write_to, None, |_| Ok(obj.clone())).await
    }
    .await;
    respond(result, true, &headers)
}

async fn replace(
    State(s): State<Arc<Shared>>,
    Path(target): Path<Target>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let user = user_of(&headers);
    let result = async {
        let kind = target.kind()?;
        let obj = parse_json(&body)?;
        if name_of(&obj) != target.name() {
            return Err(ApiError::bad_request(
                "the name of the object does not match the name on the URL",
            ));
        }
        let precondition = rv_of(&obj).map(str::to_string);
        let write_to = WriteTo {
            kind,
            ns: target.ns(),
            name: target.name(),
            op: Operation::Update,
            dry_run: is_dry_run(&q),
            user: &user,
        };
        write(&s, write_to, precondition, |_| Ok(obj.clone())).await
    }
    .await;
    respond(result, false, &headers)
}

async fn patch(
    State(s): State<Arc<Shared>>,
    Path(target): Path<Target>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let user = user_of(&headers);
    let result = async {
        let kind = target.kind()?;
        let patch_body = parse_json(&body)?;
        let apply = content_type.starts_with("application/apply-patch");
        if apply && q.field_manager.as_deref().is_none_or(str::is_empty) {
            return Err(ApiError::bad_request("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"));
        }
        let mut write_to = WriteTo { kind, ns: target.ns(), name: target.name(), op: Operation::Update, dry_run: is_dry_run(&q), user: &user };
        if apply && s.store.get(&target.key(kind)).is_none() {
            write_to.op = Operation::Create;
            return write(&s, write_to, None, |_| Ok(patch_body.clone())).await;
        }
        // A resourceVersion in the patch is a precondition.
        let precondition = rv_of(&patch_body).map(str::to_string);
        let apply_patch = |current: &Value| -> Result<Value, ApiError> {
            let mut doc = current.clone();
            match content_type.split(';').next().unwrap_or("") {
                "application/merge-patch+json" | "application/strategic-merge-patch+json" | "application/apply-patch+yaml" => {
                    json_patch::merge(&mut doc, &patch_body);
                }
                "application/json-patch+json" => {
                    let ops: json_patch::Patch = serde_json::from_value(patch_body.clone())
                        .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
                    json_patch::patch(&mut doc, &ops).map_err(|e| ApiError::new(422, "Invalid", format!("the server rejected our request due to an error in our request: {e}")))?;
                }
                other => {
                    return Err(ApiError::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {other:?})")));
                }
            }
            Ok(doc)
        };
        write(&s, write_to, precondition, apply_patch).await
    }
    .await;
    respond(result, false, &headers)
}

async fn delete(
    State(s): State<Arc<Shared>>,
    Path(target): Path<Target>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> Response {
    let user = user_of(&headers);
    let result = async {
        let kind = target.kind()?;
        let key = target.key(kind);
        let old = s
            .store
            .get(&key)
            .ok_or_else(|| ApiError::not_found(&kind, target.name()))?;
        let admission = Write {
            kind,
            op: Operation::Delete,
            namespace: target.ns(),
            name: target.name(),
            old: Some(&old),
            dry_run: is_dry_run(&q),
            user: &user,
        };
        let warnings = s.webhooks.admit(&admission, None).await?.1;
        if is_dry_run(&q) {
            return Ok((old, warnings));
        }
        Ok((s.store.delete(&key, None)?, warnings))
    }
    .await;
    respond(result, false, &headers)
}

/// Which object a write goes to, and how.
#[derive(Clone, Copy)]
struct WriteTo<'a> {
    kind: ResourceKind,
    ns: &'a str,
    name: &'a str,
    op: Operation,
    dry_run: bool,
    user: &'a str,
}

/// The user a request acts as: the double trusts every client, so this is the one it
/// impersonates (kubeconfig `as:`), else an administrator. RBAC, once installed, has already
/// judged what an impersonated user may do (`record`).
fn user_of(headers: &HeaderMap) -> String {
    headers
        .get("impersonate-user")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("double-admin")
        .to_string()
}

/// The write path of kube-apiserver: build the new object from the current one, mutating
/// admission, built-in validation, validating admission, then a compare-and-swap commit.
/// Like the real server it retries internally when it raced another writer, unless the
/// client gave a resourceVersion precondition.
async fn write(
    s: &Shared,
    to: WriteTo<'_>,
    precondition: Option<String>,
    build: impl Fn(&Value) -> Result<Value, ApiError>,
) -> Result<(Value, Vec<String>), ApiError> {
    let WriteTo {
        kind,
        ns,
        name,
        op,
        dry_run,
        user,
    } = to;
    let key = (kind, ns.to_string(), name.to_string());
    for _ in 0..10 {
        let current = s.store.get(&key);
        let (expected, base) = match (op, &current) {
            (Operation::Create, Some(_)) => return Err(ApiError::already_exists(&kind, name)),
            (Operation::Create, None) => (None, Value::Null),
            (_, None) => return Err(ApiError::not_found(&kind, name)),
            (_, Some(c)) => (rv_of(c).map(str::to_string), c.clone()),
        };
        if let Some(p) = &precondition
            && Some(p) != expected.as_ref()
        {
            return Err(ApiError::conflict(&kind, name));
        }
        let mut obj = build(&base)?;
        normalize(&kind, &mut obj, ns, current.as_ref())?;
        if let Some(old) = &current {
            obj["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        }
        let admission = Write {
            kind,
            op,
            namespace: ns,
            name,
            old: current.as_ref(),
            dry_run,
            user,
        };
        let (admitted, warnings) = s.webhooks.admit(&admission, Some(&obj)).await?;
        let mut obj = admitted.expect("writes keep an object");
        normalize(&kind, &mut obj, ns, current.as_ref())?;
        if dry_run {
            return Ok((obj, warnings));
        }
        // A create may have had its name generated during admission.
        let generated = op == Operation::Create && name.is_empty();
        let mut key = (kind, ns.to_string(), name_of(&obj).to_string());
        // The real server retries a generated name that is taken (RetryGenerateName); the
        // number of attempts here is the double's choice.
        for _ in 0..8 {
            // Kept for another attempt only when the name may change.
            let attempt = if generated {
                obj.clone()
            } else {
                std::mem::take(&mut obj)
            };
            match s.store.commit(&key, expected.as_deref(), attempt) {
                Err(e) if generated && e.reason == "AlreadyExists" => {
                    obj["metadata"]["name"] = json!("");
                    generate_name(&mut obj);
                    key.2 = name_of(&obj).to_string();
                }
                Err(e) if e.code == 409 && precondition.is_none() && op != Operation::Create => {
                    break;
                }
                other => return other.map(|o| (o, warnings)),
            }
        }
        if op == Operation::Create {
            return Err(ApiError::already_exists(&kind, &key.2));
        }
    }
    Err(ApiError::conflict(&kind, name))
}
