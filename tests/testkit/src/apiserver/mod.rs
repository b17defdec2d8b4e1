//! A test double of kube-apiserver, served over HTTP on 127.0.0.1: Secrets (kubeecr's
//! objects), and Leases and Events for what is built on them.
//!
//! It keeps kube-apiserver's contract where kubeecr depends on it: resourceVersion and 409 on
//! a stale one, create/get/list (paged, with 410 for expired continue tokens), metadata-only
//! lists (`as=PartialObjectMetadataList`), merge, strategic-merge (map-only, as for Secrets),
//! JSON and apply patches, watch with 410 Gone, dry-run, built-in Secret validation, and
//! admission webhooks called over HTTPS (see `admission`). Server-side apply is approximated
//! as a merge of the applied object (no field ownership).

pub mod admission;
pub mod kinds;
pub mod status;
pub mod store;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::StreamExt;
use serde_json::{Value, json};

use admission::{Operation, Webhooks, Write};
use kinds::ResourceKind;
use status::ApiError;
use store::{Key, Store, name_of, normalize, rv_of};

/// One request as the double saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub accept: String,
    pub content_type: String,
}

impl Recorded {
    pub fn is_metadata_only(&self) -> bool {
        self.accept.contains("as=PartialObjectMetadata")
    }
}

/// A failure to inject into the next matching requests.
#[derive(Debug, Clone)]
struct Fault {
    method: Method,
    path_contains: String,
    remaining: usize,
    error: ApiError,
}

#[derive(Default)]
pub struct Shared {
    pub store: Store,
    pub webhooks: Webhooks,
    requests: Mutex<Vec<Recorded>>,
    faults: Mutex<Vec<Fault>>,
}

pub struct FakeApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
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
    #[serde(rename = "dryRun")]
    dry_run: Option<String>,
    #[serde(rename = "fieldManager")]
    field_manager: Option<String>,
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
            .fallback(|uri: Uri| async move {
                ApiError::new(404, "NotFound", format!("the server could not find the requested resource ({uri})"))
            })
            .layer(axum::middleware::from_fn_with_state(shared.clone(), record))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("fake apiserver");
        });
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

    /// The next `times` requests of `method` whose `path?query` contains `path_contains` fail with
    /// `code` and `reason`.
    pub fn fail_next(
        &self,
        method: Method,
        path_contains: &str,
        times: usize,
        code: u16,
        reason: &'static str,
    ) {
        self.shared.faults.lock().unwrap().push(Fault {
            method,
            path_contains: path_contains.to_string(),
            remaining: times,
            error: ApiError::new(code, reason, format!("injected {code} {reason}")),
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
        }
    };
    shared.requests.lock().unwrap().push(recorded.clone());
    let injected = {
        let mut faults = shared.faults.lock().unwrap();
        let hit = faults.iter_mut().find(|f| {
            let target = format!("{}?{}", recorded.path, recorded.query);
            f.method == recorded.method && target.contains(&f.path_contains) && f.remaining > 0
        });
        hit.map(|f| {
            f.remaining -= 1;
            f.error.clone()
        })
    };
    match injected {
        Some(error) => error.into_response(),
        None => next.run(req).await,
    }
}

fn wants_metadata(headers: &HeaderMap) -> bool {
    headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=PartialObjectMetadata"))
}

fn as_metadata(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]})
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

async fn list(
    State(s): State<Arc<Shared>>,
    Path(target): Path<Target>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> Response {
    let kind = match target.kind() {
        Ok(kind) => kind,
        Err(e) => return e.into_response(),
    };
    let ns = target.ns.clone();
    let metadata = wants_metadata(&headers);
    if q.watch.as_deref().is_some_and(|w| w == "true" || w == "1") {
        return watch(s, kind, ns, q, metadata);
    }
    let after = match q.continue_.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(token) => match decode_continue(token) {
            None => return ApiError::bad_request("continue key is not valid").into_response(),
            Some((rv, _)) if rv < s.store.continue_floor() => {
                return ApiError::gone(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                )
                .into_response();
            }
            Some((_, key)) => Some(key),
        },
    };
    let (rv, items, more) = s.store.list(
        kind,
        ns.as_deref(),
        after.as_ref(),
        q.limit.filter(|l| *l > 0),
    );
    let mut list_meta = json!({"resourceVersion": rv.to_string()});
    if more && let Some(last) = items.last() {
        let key = (
            last["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            name_of(last).to_string(),
        );
        list_meta["continue"] = json!(encode_continue(rv, &key));
    }
    let body = if metadata {
        json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta, "items": items.iter().map(as_metadata).collect::<Vec<_>>()})
    } else {
        json!({"kind": format!("{}List", kind.kind), "apiVersion": kind.api_version(), "metadata": list_meta, "items": items})
    };
    axum::Json(body).into_response()
}

fn watch(
    s: Arc<Shared>,
    kind: ResourceKind,
    ns: Option<String>,
    q: ListQuery,
    metadata: bool,
) -> Response {
    let from = q
        .resource_version
        .as_deref()
        .filter(|v| !v.is_empty() && *v != "0")
        .and_then(|v| v.parse::<u64>().ok());
    let line = move |event: &str, obj: &Value| {
        let object = if metadata {
            as_metadata(obj)
        } else {
            obj.clone()
        };
        let mut l = serde_json::to_vec(&json!({"type": event, "object": object})).unwrap();
        l.push(b'\n');
        Ok::<_, std::io::Error>(Bytes::from(l))
    };
    let matches = move |resource: ResourceKind, obj: &Value| {
        resource == kind
            && ns
                .as_deref()
                .is_none_or(|n| obj["metadata"]["namespace"] == n)
    };
    let (past, rx) = match from {
        // No version: synthetic ADDED events for the current state, then changes.
        None => {
            let (rv, items, _) = s.store.list(kind, None, None, None);
            let (_, rx) = s
                .store
                .watch_from(rv)
                .expect("current version is never compacted");
            (
                items
                    .into_iter()
                    .map(|o| ("ADDED", kind, o))
                    .collect::<Vec<_>>(),
                rx,
            )
        }
        Some(rv) => match s.store.watch_from(rv) {
            Ok((past, rx)) => (
                past.into_iter()
                    .map(|e| (e.kind, e.resource, e.object))
                    .collect(),
                rx,
            ),
            Err(gone) => {
                // As kube-apiserver: 200, then one ERROR event carrying the 410 Status.
                let body = line("ERROR", &gone.to_json());
                return Response::builder()
                    .header("content-type", "application/json")
                    .body(Body::from_stream(futures::stream::iter([body])))
                    .unwrap();
            }
        },
    };
    let past: Vec<_> = past
        .into_iter()
        .filter(|(_, r, o)| matches(*r, o))
        .map(|(k, _, o)| line(k, &o))
        .collect();
    let live = tokio_stream::wrappers::BroadcastStream::new(rx).filter_map(move |e| {
        let out = match e {
            Ok(e) if matches(e.resource, &e.object) => Some(line(e.kind, &e.object)),
            _ => None,
        };
        futures::future::ready(out)
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(futures::stream::iter(past).chain(live)))
        .unwrap()
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
    match s.store.get(&target.key(kind)) {
        Some(obj) if wants_metadata(&headers) => axum::Json(as_metadata(&obj)).into_response(),
        Some(obj) => axum::Json(obj).into_response(),
        None => ApiError::not_found(&kind, target.name()).into_response(),
    }
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("couldn't decode the body: {e}")))
}

/// Wraps a write result: the object with warning headers, or the Status.
fn respond(result: Result<(Value, Vec<String>), ApiError>, created: bool) -> Response {
    match result {
        Ok((obj, warnings)) => {
            let code = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let mut response = (code, axum::Json(obj)).into_response();
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
    body: Bytes,
) -> Response {
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
        };
        write(&s, write_to, None, |_| Ok(obj.clone())).await
    }
    .await;
    respond(result, true)
}

async fn replace(
    State(s): State<Arc<Shared>>,
    Path(target): Path<Target>,
    Query(q): Query<ListQuery>,
    body: Bytes,
) -> Response {
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
        };
        write(&s, write_to, precondition, |_| Ok(obj.clone())).await
    }
    .await;
    respond(result, false)
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
    let result = async {
        let kind = target.kind()?;
        let patch_body = parse_json(&body)?;
        let apply = content_type.starts_with("application/apply-patch");
        if apply && q.field_manager.as_deref().is_none_or(str::is_empty) {
            return Err(ApiError::bad_request("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"));
        }
        let mut write_to = WriteTo { kind, ns: target.ns(), name: target.name(), op: Operation::Update, dry_run: is_dry_run(&q) };
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
    respond(result, false)
}

async fn delete(
    State(s): State<Arc<Shared>>,
    Path(target): Path<Target>,
    Query(q): Query<ListQuery>,
) -> Response {
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
        };
        let warnings = s.webhooks.admit(&admission, None).await?.1;
        if is_dry_run(&q) {
            return Ok((old, warnings));
        }
        Ok((s.store.delete(&key, None)?, warnings))
    }
    .await;
    respond(result, false)
}

/// Which object a write goes to, and how.
#[derive(Clone, Copy)]
struct WriteTo<'a> {
    kind: ResourceKind,
    ns: &'a str,
    name: &'a str,
    op: Operation,
    dry_run: bool,
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
        };
        let (admitted, warnings) = s.webhooks.admit(&admission, Some(&obj)).await?;
        let mut obj = admitted.expect("writes keep an object");
        normalize(&kind, &mut obj, ns, current.as_ref())?;
        if dry_run {
            return Ok((obj, warnings));
        }
        match s.store.commit(&key, expected.as_deref(), obj) {
            Err(e) if e.code == 409 && precondition.is_none() && op != Operation::Create => {
                continue;
            }
            other => return other.map(|o| (o, warnings)),
        }
    }
    Err(ApiError::conflict(&kind, name))
}
