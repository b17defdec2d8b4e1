//! Admission webhooks, called the way kube-apiserver calls them: over HTTPS verified with the
//! caBundle, `?timeout=` on the URL, mutating webhooks first (JSONPatch applied), then the
//! built-in Secret validation, then validating webhooks; `failurePolicy`, `timeoutSeconds`,
//! `rules`, a `kubernetes.io/metadata.name` namespaceSelector and `matchConditions`.
//!
//! matchConditions are not CEL in general: only the shapes "object or oldObject carries
//! annotation K" and "request.userInfo.username != 'U'" are recognised (all must hold, as
//! in the API server), and any other expression panics so that the double and
//! `webhook-config/` cannot drift apart silently.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

use super::kinds::ResourceKind;
use super::status::ApiError;
use super::store::{generate_name, validate};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "CREATE",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
        }
    }

    fn options_kind(self) -> &'static str {
        match self {
            Self::Create => "CreateOptions",
            Self::Update => "UpdateOptions",
            Self::Delete => "DeleteOptions",
        }
    }
}

use crate::tls::{Alpn, HttpsClient, https_client_as};

/// One write under admission.
#[derive(Clone, Copy)]
pub struct Write<'a> {
    pub kind: ResourceKind,
    pub op: Operation,
    pub namespace: &'a str,
    pub name: &'a str,
    pub old: Option<&'a Value>,
    pub dry_run: bool,
    /// `userInfo.username` of the request.
    pub user: &'a str,
}

pub struct Webhook {
    pub name: String,
    pub mutating: bool,
    pub url: String,
    pub operations: Vec<String>,
    /// (apiGroup, resource) pairs of the rules; `*` matches any.
    pub resources: Vec<(String, String)>,
    pub fail_closed: bool,
    pub timeout: Duration,
    /// From matchConditions: call only when the object or old object carries this annotation.
    pub match_annotation: Option<String>,
    /// From matchConditions: never called for writes by these users.
    pub skip_users: Vec<String>,
    pub excluded_namespaces: Vec<String>,
    client: HttpsClient,
}

/// One webhook call, for assertions.
#[derive(Debug, Clone)]
pub struct Call {
    pub webhook: String,
    pub operation: Operation,
    pub namespace: String,
    pub name: String,
    /// `allowed`, `denied`, `patched`, or `error: ...`.
    pub outcome: String,
}

#[derive(Default)]
pub struct Webhooks {
    hooks: RwLock<Vec<Arc<Webhook>>>,
    calls: Mutex<Vec<Call>>,
}

/// What one matchCondition asks for.
enum Condition {
    Annotation(String),
    NotUser(String),
}

fn condition(expression: &str) -> Condition {
    let not_user = "request.userInfo.username != '";
    if let Some(rest) = expression.trim().strip_prefix(not_user) {
        let user = rest
            .strip_suffix('\'')
            .filter(|u| !u.contains('\''))
            .unwrap_or_else(|| panic!("unsupported matchCondition: {expression}"));
        return Condition::NotUser(user.to_string());
    }
    Condition::Annotation(annotation_of_condition(expression))
}

fn annotation_of_condition(expression: &str) -> String {
    let re = "' in object.metadata.annotations";
    let end = expression
        .find(re)
        .unwrap_or_else(|| panic!("unsupported matchCondition: {expression}"));
    let start = expression[..end]
        .rfind('\'')
        .expect("quoted annotation key");
    let key = &expression[start + 1..end];
    assert!(
        expression.contains(&format!("'{key}' in oldObject.metadata.annotations")),
        "matchCondition must also match the old object: {expression}"
    );
    key.to_string()
}

fn excluded_namespaces(selector: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if selector.is_null() {
        return out;
    }
    if selector
        .get("matchLabels")
        .is_some_and(|m| m.as_object().is_some_and(|m| !m.is_empty()))
    {
        panic!("unsupported namespaceSelector: {selector}");
    }
    for expr in selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        assert_eq!(
            expr["key"], "kubernetes.io/metadata.name",
            "unsupported namespaceSelector: {selector}"
        );
        assert_eq!(
            expr["operator"], "NotIn",
            "unsupported namespaceSelector: {selector}"
        );
        out.extend(
            expr["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_string),
        );
    }
    out
}

fn has_annotation(obj: Option<&Value>, key: &str) -> bool {
    obj.and_then(|o| o.pointer("/metadata/annotations"))
        .and_then(Value::as_object)
        .is_some_and(|a| a.contains_key(key))
}

impl Webhooks {
    /// Registers every webhook of the (Mutating|Validating)WebhookConfiguration documents in
    /// `yaml`, calling `base_url` + the service path instead of the in-cluster Service.
    pub fn register_yaml(&self, yaml: &str, base_url: &str, ca_pem: &[u8]) {
        self.register_yaml_as(yaml, base_url, ca_pem, None);
    }

    /// As `register_yaml`, presenting `identity` as the client certificate on every call, as
    /// kube-apiserver does with an AdmissionConfiguration kubeconfig.
    pub fn register_yaml_as(
        &self,
        yaml: &str,
        base_url: &str,
        ca_pem: &[u8],
        identity: Option<&crate::tls::ServingCert>,
    ) {
        for doc in crate::yaml::yaml_documents(yaml) {
            let mutating = match doc["kind"].as_str() {
                Some("MutatingWebhookConfiguration") => true,
                Some("ValidatingWebhookConfiguration") => false,
                _ => continue,
            };
            for w in doc["webhooks"].as_array().expect("webhooks") {
                assert_eq!(
                    w["admissionReviewVersions"],
                    json!(["v1"]),
                    "admissionReviewVersions"
                );
                assert_eq!(w["sideEffects"], "None", "sideEffects");
                let path = w["clientConfig"]["service"]["path"]
                    .as_str()
                    .expect("service path");
                let rules = w["rules"].as_array().expect("rules");
                let resources = rules
                    .iter()
                    .flat_map(|r| {
                        let groups = r["apiGroups"].as_array().cloned().unwrap_or_default();
                        let resources = r["resources"].as_array().cloned().unwrap_or_default();
                        groups.into_iter().flat_map(move |g| {
                            resources.clone().into_iter().map(move |res| {
                                (
                                    g.as_str().unwrap().to_string(),
                                    res.as_str().unwrap().to_string(),
                                )
                            })
                        })
                    })
                    .collect();
                let conditions: Vec<Condition> = w["matchConditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| condition(c["expression"].as_str().expect("expression")))
                    .collect();
                let annotations: Vec<String> = conditions
                    .iter()
                    .filter_map(|c| match c {
                        Condition::Annotation(a) => Some(a.clone()),
                        Condition::NotUser(_) => None,
                    })
                    .collect();
                assert!(annotations.len() <= 1, "one annotation condition at most");
                self.register(Webhook {
                    name: w["name"].as_str().expect("name").to_string(),
                    mutating,
                    url: format!("{base_url}{path}"),
                    operations: rules
                        .iter()
                        .flat_map(|r| {
                            r["operations"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|o| o.as_str().unwrap().to_string())
                        })
                        .collect(),
                    resources,
                    fail_closed: w["failurePolicy"].as_str().unwrap_or("Fail") == "Fail",
                    timeout: Duration::from_secs(w["timeoutSeconds"].as_u64().unwrap_or(10)),
                    match_annotation: annotations.into_iter().next(),
                    skip_users: conditions
                        .iter()
                        .filter_map(|c| match c {
                            Condition::NotUser(u) => Some(u.clone()),
                            Condition::Annotation(_) => None,
                        })
                        .collect(),
                    excluded_namespaces: excluded_namespaces(&w["namespaceSelector"]),
                    client: https_client_as(ca_pem, Alpn::Both, identity),
                });
            }
        }
    }

    pub fn register(&self, webhook: Webhook) {
        self.hooks.write().unwrap().push(Arc::new(webhook));
    }

    pub fn clear(&self) {
        self.hooks.write().unwrap().clear();
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// Runs admission for one write. Returns the (possibly mutated) object and the warnings
    /// for the client.
    pub async fn admit(
        &self,
        write: &Write<'_>,
        object: Option<&Value>,
    ) -> Result<(Option<Value>, Vec<String>), ApiError> {
        let Write {
            kind,
            op,
            namespace,
            old,
            user,
            ..
        } = *write;
        let hooks: Vec<Arc<Webhook>> = self.hooks.read().unwrap().clone();
        let mut object = object.cloned();
        let mut warnings = Vec::new();
        let applies = |w: &Webhook, object: Option<&Value>| {
            w.operations.iter().any(|o| o == op.as_str() || o == "*")
                && w.resources
                    .iter()
                    .any(|(g, r)| (g == kind.group || g == "*") && (r == kind.resource || r == "*"))
                && !w.excluded_namespaces.iter().any(|n| n == namespace)
                && !w.skip_users.iter().any(|u| u == user)
                && w.match_annotation
                    .as_ref()
                    .is_none_or(|k| has_annotation(object, k) || has_annotation(old, k))
        };
        for hook in hooks.iter().filter(|w| w.mutating) {
            if !applies(hook, object.as_ref()) {
                continue;
            }
            let response = self
                .call(hook, write, object.as_ref(), &mut warnings)
                .await?;
            if let Some(patch) = response.as_ref().and_then(|r| patch_bytes(&r["patch"])) {
                if !is_json_patch(response.as_ref()) {
                    return Err(internal(hook, "patchType must be JSONPatch"));
                }
                let ops: json_patch::Patch = serde_json::from_slice(&patch)
                    .map_err(|e| internal(hook, &format!("invalid JSONPatch: {e}")))?;
                let doc = object.as_mut().expect("mutating a deleted object");
                json_patch::patch(doc, &ops)
                    .map_err(|e| internal(hook, &format!("JSONPatch does not apply: {e}")))?;
            }
        }
        if let Some(obj) = &mut object {
            // As the API server: a generated name is chosen after mutating admission (webhooks
            // see the empty name) and before validation.
            if op == Operation::Create {
                generate_name(obj);
            }
            validate(&kind, obj, old)?;
        }
        for hook in hooks.iter().filter(|w| !w.mutating) {
            if applies(hook, object.as_ref()) {
                self.call(hook, write, object.as_ref(), &mut warnings)
                    .await?;
            }
        }
        Ok((object, warnings))
    }

    /// One call. `Ok(None)`: failed open. `Err`: denied, or failed closed.
    async fn call(
        &self,
        hook: &Webhook,
        write: &Write<'_>,
        object: Option<&Value>,
        warnings: &mut Vec<String>,
    ) -> Result<Option<Value>, ApiError> {
        let Write {
            kind,
            op,
            namespace,
            name,
            old,
            dry_run,
            user,
        } = *write;
        let uid = uuid::Uuid::new_v4().to_string();
        let gvk = json!({"group": kind.group, "version": kind.version, "kind": kind.kind});
        let gvr = json!({"group": kind.group, "version": kind.version, "resource": kind.resource});
        let review = json!({
            "kind": "AdmissionReview",
            "apiVersion": "admission.k8s.io/v1",
            "request": {
                "uid": uid,
                "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
                "name": name, "namespace": namespace, "operation": op.as_str(),
                "userInfo": {"username": user, "groups": ["system:authenticated"]},
                "object": object, "oldObject": old, "dryRun": dry_run,
                "options": {"kind": op.options_kind(), "apiVersion": "meta.k8s.io/v1"},
            }
        });
        let url = format!("{}?timeout={}s", hook.url, hook.timeout.as_secs());
        let record = |outcome: String| {
            self.calls.lock().unwrap().push(Call {
                webhook: hook.name.clone(),
                operation: op,
                namespace: namespace.to_string(),
                name: name.to_string(),
                outcome,
            });
        };
        let response =
            match tokio::time::timeout(hook.timeout, post(&hook.client, &url, &review)).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => json!({"__error": e}),
                Err(_) => json!({"__error": "context deadline exceeded"}),
            };
        let failure = if let Some(e) = response.get("__error") {
            Some(e.as_str().unwrap_or("").to_string())
        } else if response["response"]["uid"] != json!(uid) {
            Some(format!(
                "expected response.uid={uid:?}, got {}",
                response["response"]["uid"]
            ))
        } else {
            None
        };
        if let Some(e) = failure {
            record(format!("error: {e}"));
            if hook.fail_closed {
                return Err(internal(
                    hook,
                    &format!("failed to call webhook: Post {url:?}: {e}"),
                ));
            }
            return Ok(None);
        }
        let r = &response["response"];
        for w in r["warnings"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            warnings.push(w.to_string());
        }
        if r["allowed"] != json!(true) {
            record("denied".into());
            let status = &r["status"];
            let code = status["code"].as_u64().unwrap_or(0).max(400) as u16;
            let message = match status["message"].as_str() {
                Some(m) if !m.is_empty() => {
                    format!("admission webhook {:?} denied the request: {m}", hook.name)
                }
                _ => format!(
                    "admission webhook {:?} denied the request without explanation",
                    hook.name
                ),
            };
            let mut e = ApiError::new(code, "Forbidden", message);
            if code == 400 {
                e.reason = "BadRequest";
            }
            return Err(e);
        }
        record(
            if r.get("patch").is_some_and(|p| !p.is_null()) {
                "patched"
            } else {
                "allowed"
            }
            .into(),
        );
        Ok(Some(r.clone()))
    }
}

/// `response.patch` is a Go `[]byte`: encoding/json accepts a base64 string or an array of
/// byte values, and so does the double.
pub fn patch_bytes(patch: &Value) -> Option<Vec<u8>> {
    match patch {
        Value::String(s) => Some(STANDARD.decode(s).expect("patch is base64")),
        Value::Array(items) => Some(
            items
                .iter()
                .map(|b| {
                    b.as_u64()
                        .and_then(|b| u8::try_from(b).ok())
                        .expect("patch bytes")
                })
                .collect(),
        ),
        _ => None,
    }
}

fn is_json_patch(response: Option<&Value>) -> bool {
    response.is_some_and(|r| r["patchType"] == "JSONPatch")
}

fn internal(hook: &Webhook, message: &str) -> ApiError {
    ApiError::new(
        500,
        "InternalError",
        format!(
            "Internal error occurred: failed calling webhook {:?}: {message}",
            hook.name
        ),
    )
}

async fn post(client: &HttpsClient, url: &str, review: &Value) -> Result<Value, String> {
    let request = http::Request::post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(review).unwrap())))
        .map_err(|e| e.to_string())?;
    let response = client
        .request(request)
        .await
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if !status.is_success() {
        return Err(format!(
            "expected webhook response of 200, got {}",
            status.as_u16()
        ));
    }
    serde_json::from_slice(&body).map_err(|e| format!("decoding the AdmissionReview: {e}"))
}
