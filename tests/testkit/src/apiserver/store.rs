//! Objects in memory, with kube-apiserver's rules: resourceVersion, preconditions, no-op
//! writes that keep the version, built-in Secret validation, and a watch history.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use super::kinds::{CORE_EVENTS, EVENTS, ResourceKind};
use super::status::ApiError;
use super::validation::{Problem, invalid, name_errors, validate_event};

/// (resource, namespace, name).
pub type Key = (ResourceKind, String, String);

/// One change. Objects are shared (`Arc`) between the store, the history and every watch,
/// so that large Secrets are not copied per watcher.
#[derive(Debug, Clone)]
pub struct Event {
    pub rv: u64,
    pub resource: ResourceKind,
    pub kind: &'static str,
    pub object: Arc<Value>,
    /// The object before the change (MODIFIED, DELETED): a label-selected watch needs it to
    /// tell an object leaving its selection from one entering it.
    pub prev: Option<Arc<Value>>,
}

struct Inner {
    rv: u64,
    objects: BTreeMap<Key, Arc<Value>>,
    history: VecDeque<Event>,
    history_limit: usize,
    /// Watches from before this version get 410 Gone, as after an etcd compaction.
    compacted: u64,
    /// List continue tokens issued before this version get 410 Gone.
    continue_floor: u64,
}

pub struct Store {
    inner: Mutex<Inner>,
    events: broadcast::Sender<Event>,
}

pub fn rv_of(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
}

pub fn name_of(obj: &Value) -> &str {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

impl Default for Store {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                rv: 1000,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                history_limit: 10_000,
                compacted: 0,
                continue_floor: 0,
            }),
            events: broadcast::channel(4096).0,
        }
    }
}

impl Store {
    pub fn resource_version(&self) -> u64 {
        self.inner.lock().unwrap().rv
    }

    pub fn get(&self, key: &Key) -> Option<Value> {
        self.get_shared(key).map(Arc::unwrap_or_clone)
    }

    /// The stored object itself, without copying it.
    pub fn get_shared(&self, key: &Key) -> Option<Arc<Value>> {
        self.inner.lock().unwrap().objects.get(key).cloned()
    }

    /// Objects of a resource in a namespace (or all), in key order, after `after`
    /// (namespace, name), up to `limit`. Returns the current version and whether more remain.
    pub fn list(
        &self,
        kind: ResourceKind,
        namespace: Option<&str>,
        after: Option<&(String, String)>,
        limit: Option<usize>,
    ) -> (u64, Vec<Value>, bool) {
        let (rv, items, remaining) = self.list_matching(kind, namespace, &|_| true, after, limit);
        let items = items.into_iter().map(Arc::unwrap_or_clone).collect();
        (rv, items, remaining > 0)
    }

    /// As `list`, over the objects `selected` keeps, with how many selected ones remain
    /// after the page: `limit` counts selected objects, as the real server pages a filtered
    /// list.
    pub fn list_matching(
        &self,
        kind: ResourceKind,
        namespace: Option<&str>,
        selected: &dyn Fn(&Value) -> bool,
        after: Option<&(String, String)>,
        limit: Option<usize>,
    ) -> (u64, Vec<Arc<Value>>, usize) {
        let inner = self.inner.lock().unwrap();
        let mut items = inner
            .objects
            .iter()
            .filter(|((k, ns, _), _)| *k == kind && namespace.is_none_or(|n| n == ns))
            .filter(|((_, ns, name), _)| {
                after.is_none_or(|(a_ns, a_name)| (ns, name) > (a_ns, a_name))
            })
            .filter(|(_, v)| selected(v))
            .map(|(_, v)| v.clone());
        let page: Vec<Arc<Value>> = match limit {
            Some(n) => items.by_ref().take(n).collect(),
            None => items.by_ref().collect(),
        };
        let remaining = items.count();
        (inner.rv, page, remaining)
    }

    /// How many events the watch history keeps (10,000 by default). Watches from before
    /// the oldest kept event get 410 Gone, as from beyond the real watch cache's window.
    pub fn set_history_limit(&self, limit: usize) {
        let mut inner = self.inner.lock().unwrap();
        inner.history_limit = limit;
        while inner.history.len() > limit {
            inner.history.pop_front();
        }
    }

    pub fn continue_floor(&self) -> u64 {
        self.inner.lock().unwrap().continue_floor
    }

    /// Makes every continue token issued so far expire (410), as etcd compaction does.
    pub fn expire_continue_tokens(&self) {
        let mut inner = self.inner.lock().unwrap();
        inner.continue_floor = inner.rv + 1;
    }

    /// Makes watches from any version before the current one fail with 410 Gone, as after
    /// an etcd compaction. A watch from the current version (what a new list returns) still
    /// works, so that clients re-listing after the 410 can watch again.
    pub fn compact(&self) {
        let mut inner = self.inner.lock().unwrap();
        inner.compacted = inner.rv;
        inner.history.clear();
    }

    /// Events after `rv`, a receiver for later ones, and the current version (every event up
    /// to it is in the first two); 410 when compacted.
    #[allow(clippy::type_complexity)]
    pub fn watch_from(
        &self,
        rv: u64,
    ) -> Result<(Vec<Event>, broadcast::Receiver<Event>, u64), ApiError> {
        let inner = self.inner.lock().unwrap();
        let oldest = inner.history.front().map(|e| e.rv).unwrap_or(inner.rv);
        if rv < inner.compacted || (rv + 1 < oldest && rv < inner.rv) {
            return Err(ApiError::gone(format!(
                "too old resource version: {rv} ({})",
                inner.compacted.max(oldest)
            )));
        }
        let past = inner
            .history
            .iter()
            .filter(|e| e.rv > rv)
            .cloned()
            .collect();
        Ok((past, self.events.subscribe(), inner.rv))
    }

    /// Stores `obj` if the object at `key` still has version `expected` (`None`: absent).
    /// Keeps the old version when nothing changed, as kube-apiserver does.
    pub fn commit(
        &self,
        key: &Key,
        expected: Option<&str>,
        mut obj: Value,
    ) -> Result<Value, ApiError> {
        let mut inner = self.inner.lock().unwrap();
        let current = inner.objects.get(key).cloned();
        if current.as_deref().and_then(rv_of) != expected {
            return Err(match (&current, expected) {
                (Some(_), None) => ApiError::already_exists(&key.0, &key.2),
                (None, Some(_)) => ApiError::not_found(&key.0, &key.2),
                _ => ApiError::conflict(&key.0, &key.2),
            });
        }
        if let Some(current) = &current
            && same_content(current, &obj)
        {
            return Ok(Value::clone(current));
        }
        inner.rv += 1;
        let rv = inner.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let kind = if current.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        let shared = Arc::new(obj);
        inner.objects.insert(key.clone(), shared.clone());
        self.record(
            &mut inner,
            Event {
                rv,
                resource: key.0,
                kind,
                object: shared.clone(),
                prev: current,
            },
        );
        Ok(Arc::unwrap_or_clone(shared))
    }

    pub fn delete(&self, key: &Key, expected: Option<&str>) -> Result<Value, ApiError> {
        let mut inner = self.inner.lock().unwrap();
        let current = inner
            .objects
            .get(key)
            .ok_or_else(|| ApiError::not_found(&key.0, &key.2))?;
        if expected.is_some_and(|e| Some(e) != rv_of(current)) {
            return Err(ApiError::conflict(&key.0, &key.2));
        }
        let prev = inner.objects.remove(key).expect("present");
        inner.rv += 1;
        let rv = inner.rv;
        // The last state with the deletion's version, as the real server sends it.
        let mut obj = Value::clone(&prev);
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let shared = Arc::new(obj);
        self.record(
            &mut inner,
            Event {
                rv,
                resource: key.0,
                kind: "DELETED",
                object: shared.clone(),
                prev: Some(prev),
            },
        );
        Ok(Arc::unwrap_or_clone(shared))
    }

    fn record(&self, inner: &mut Inner, event: Event) {
        inner.history.push_back(event.clone());
        while inner.history.len() > inner.history_limit {
            inner.history.pop_front();
        }
        let _ = self.events.send(event);
    }
}

/// Equal but for the fields the server owns.
fn same_content(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
            m.remove("managedFields");
        }
        v
    };
    strip(a) == strip(b)
}

/// Applies what the API server does to every object written: apiVersion and kind, the
/// namespace, server-owned metadata, and for Secrets `stringData` folded into `data` and
/// the `Opaque` default.
pub fn normalize(
    kind: &ResourceKind,
    obj: &mut Value,
    namespace: &str,
    existing: Option<&Value>,
) -> Result<(), ApiError> {
    let name = name_of(obj).to_string();
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request was not a JSON object",
        ));
    }
    obj["apiVersion"] = json!(kind.api_version());
    obj["kind"] = json!(kind.kind);
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    match obj["metadata"].get("namespace").and_then(Value::as_str) {
        Some(ns) if ns != namespace => {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        _ => obj["metadata"]["namespace"] = json!(namespace),
    }
    if kind.is_secret() {
        fold_string_data(obj)?;
    }
    let meta = obj["metadata"]
        .as_object_mut()
        .expect("metadata is an object");

    match existing {
        Some(old) => {
            for field in ["uid", "creationTimestamp"] {
                meta.insert(field.into(), old["metadata"][field].clone());
            }
        }
        None => {
            meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            meta.insert(
                "creationTimestamp".into(),
                json!(
                    jiff::Timestamp::now()
                        .strftime("%Y-%m-%dT%H:%M:%SZ")
                        .to_string()
                ),
            );
        }
    }
    let generate_name = obj["metadata"]["generateName"].as_str().unwrap_or("");
    if name.is_empty() && generate_name.is_empty() {
        return Err(ApiError::invalid(
            kind,
            "",
            &[(
                "metadata.name".into(),
                "Required value: name or generateName is required".into(),
            )],
        ));
    }
    Ok(())
}

/// Characters of the name the real server generates from `generateName`
/// (`utilrand.String`: no vowels, no look-alike characters).
const GENERATED_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Gives a create with an empty name and a `generateName` its name, as the API server does
/// after mutating admission and before validation: the prefix (cut to 58 characters) and 5
/// random characters.
pub fn generate_name(obj: &mut Value) -> bool {
    let prefix = match obj
        .pointer("/metadata/generateName")
        .and_then(Value::as_str)
    {
        Some(p) if !p.is_empty() && name_of(obj).is_empty() => p,
        _ => return false,
    };
    let prefix: String = prefix.chars().take(58).collect();
    let random = uuid::Uuid::new_v4();
    let suffix: String = random.as_bytes()[..5]
        .iter()
        .map(|b| GENERATED_ALPHABET[*b as usize % GENERATED_ALPHABET.len()] as char)
        .collect();
    obj["metadata"]["name"] = json!(format!("{prefix}{suffix}"));
    true
}

/// `ValidateObjectMeta`'s name checks: generateName as a prefix, then the name.
fn validate_names(obj: &Value, dns_names: bool, problems: &mut Vec<Problem>) {
    let name = name_of(obj);
    let generate_name = obj["metadata"]["generateName"].as_str().unwrap_or("");
    if !generate_name.is_empty() && dns_names {
        for m in name_errors(generate_name, true) {
            problems.push(invalid("metadata.generateName", generate_name, &m));
        }
    }
    if dns_names {
        for m in name_errors(name, false) {
            problems.push(invalid("metadata.name", name, &m));
        }
    } else if name == "." || name == ".." || name.contains('/') || name.contains('%') {
        // Core Events' names need only be a path segment.
        problems.push(invalid(
            "metadata.name",
            name,
            "may not be '.' or '..' and may not contain '/' or '%'",
        ));
    }
}

fn fold_string_data(obj: &mut Value) -> Result<(), ApiError> {
    if let Some(string_data) = obj.as_object_mut().and_then(|o| o.remove("stringData")) {
        let Value::Object(string_data) = string_data else {
            return Err(ApiError::bad_request("stringData must be a map of strings"));
        };
        if !obj.get("data").is_some_and(Value::is_object) {
            obj["data"] = json!({});
        }
        for (k, v) in string_data {
            let s = v
                .as_str()
                .ok_or_else(|| ApiError::bad_request("stringData values must be strings"))?;
            obj["data"][k] = json!(STANDARD.encode(s));
        }
    }
    if obj.get("type").is_none_or(Value::is_null) {
        obj["type"] = json!("Opaque");
    }
    Ok(())
}

/// kube-apiserver's validation: object metadata for every kind, and for Secrets
/// `ValidateSecret` and `ValidateSecretUpdate`.
pub fn validate(kind: &ResourceKind, obj: &Value, old: Option<&Value>) -> Result<(), ApiError> {
    let name = name_of(obj).to_string();
    let metadata = |problems: &mut Vec<Problem>| {
        validate_names(obj, *kind != CORE_EVENTS, problems);
        for field in ["labels", "annotations"] {
            if let Some(m) = obj["metadata"].get(field).filter(|v| !v.is_null())
                && !m
                    .as_object()
                    .is_some_and(|m| m.values().all(Value::is_string))
            {
                problems.push((
                    format!("metadata.{field}"),
                    "Invalid value: must be a map of strings".into(),
                ));
            }
        }
    };
    let mut problems: Vec<Problem> = Vec::new();
    if *kind == EVENTS || *kind == CORE_EVENTS {
        // events.k8s.io validation places the metadata checks itself (fixture 12's order);
        // core Events get the generic metadata checks once their own have passed.
        problems = validate_event(kind, obj, old, metadata);
        if *kind == CORE_EVENTS && problems.is_empty() {
            metadata(&mut problems);
        }
    } else {
        metadata(&mut problems);
    }
    if kind.is_secret() {
        validate_secret(obj, old, &mut problems)?;
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(kind, &name, &problems))
    }
}

fn validate_secret(
    obj: &Value,
    old: Option<&Value>,
    problems: &mut Vec<(String, String)>,
) -> Result<(), ApiError> {
    let empty = Map::new();
    let data = match obj.get("data") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(m)) => m,
        Some(_) => {
            return Err(ApiError::bad_request(
                "data must be a map of base64 strings",
            ));
        }
    };
    let mut decoded: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
    let mut total = 0usize;
    for (k, v) in data {
        if k.is_empty()
            || !k
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        {
            problems.push((format!("data[{k}]"), "Invalid value: a valid config key must consist of alphanumeric characters, '-', '_' or '.'".into()));
        }
        let bytes = v
            .as_str()
            .and_then(|s| STANDARD.decode(s).ok())
            .ok_or_else(|| ApiError::bad_request(format!("data[{k}]: illegal base64 data")))?;
        total += bytes.len();
        decoded.insert(k.as_str(), bytes);
    }
    if total > 1024 * 1024 {
        problems.push((
            "data".into(),
            "Too long: must have at most 1048576 bytes".into(),
        ));
    }
    let type_ = obj["type"].as_str().unwrap_or("Opaque");
    match type_ {
        "kubernetes.io/dockerconfigjson" => match decoded.get(".dockerconfigjson") {
            None => problems.push(("data[.dockerconfigjson]".into(), "Required value".into())),
            Some(bytes) => {
                if let Err(e) = serde_json::from_slice::<Value>(bytes) {
                    problems.push((
                        "data[.dockerconfigjson]".into(),
                        format!("Invalid value: \"<secret contents redacted>\": {e}"),
                    ));
                }
            }
        },
        "kubernetes.io/dockercfg" if !decoded.contains_key(".dockercfg") => {
            problems.push(("data[.dockercfg]".into(), "Required value".into()));
        }
        _ => {}
    }
    if let Some(old) = old {
        let old_type = old["type"].as_str().unwrap_or("Opaque");
        if old_type != type_ {
            problems.push(("type".into(), "Invalid value: field is immutable".into()));
        }
        if old.get("immutable") == Some(&json!(true)) && old.get("data") != obj.get("data") {
            problems.push((
                "data".into(),
                "Forbidden: field is immutable when `immutable` is set".into(),
            ));
        }
    }
    Ok(())
}
