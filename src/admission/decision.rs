//! Admission decisions for Secrets: pure functions from an AdmissionRequest (and, for
//! mutation, the tokens fetched for it) to an AdmissionResponse.
//!
//! Mutation runs in two steps so that the only I/O, the token fetch, stays outside:
//! `plan_mutation` says which tokens are needed, `PendingFill::complete` builds the patch.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation};
use k8s_openapi::api::core::v1::Secret;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use serde_json::{Value, json};

use crate::contract::annotation::{self, ContractError, EcrBinding, MANAGED_LABEL, SecretRef};
use crate::contract::dockerconfig::{self, DOCKER_CONFIG_JSON_KEY};
use crate::contract::hosts::HOSTS_ANNOTATION;
use crate::contract::kept::{KeptConfig, Stored};
use crate::contract::marks::Marks;
use crate::contract::policy::Policy;
use crate::contract::secret_update;
use crate::contract::shape::{ARGOCD_LABEL, PASSWORD_KEY, Shape, URL_KEY, USERNAME_KEY};
use crate::contract::standing::{Leftovers, Standing, Whole, standing};
use crate::contract::token::FetchError;
use crate::contract::token::{Token, TokenKey};

/// What the webhook does with a request that needs no token.
enum Inspection {
    /// Not an opted-in Secret write: allow unchanged.
    NotOurs,
    Deny(String),
    /// The write removes `deft.com/kubeecr`: kubeecr's own annotations and label go too.
    OptOut(Leftovers),
    /// An opted-in Secret that was immutable already: its data cannot change, so any other
    /// edit (labels, finalizers) goes through untouched.
    Frozen,
    /// An UPDATE that leaves kubeecr's annotations as they were, on a Secret kubeecr refuses
    /// (an annotation a newer kubeecr no longer accepts, a narrowed policy): admitted untouched
    /// with a warning, so that labels and finalizers can still be edited and it can be deleted.
    Tolerated(String),
    OptedIn(Box<OptedIn>),
}

struct OptedIn {
    secret: SecretRef,
    binding: EcrBinding,
    shape: Shape,
    marks: Marks,
    object: Secret,
}

fn is_secret(req: &AdmissionRequest<DynamicObject>) -> bool {
    req.kind.group.is_empty() && req.kind.kind == "Secret"
}

fn secret_ref(req: &AdmissionRequest<DynamicObject>, object: &Secret) -> SecretRef {
    let namespace = req
        .namespace
        .clone()
        .or_else(|| object.metadata.namespace.clone())
        .unwrap_or_default();
    let name = match (&object.metadata.name, &object.metadata.generate_name) {
        _ if !req.name.is_empty() => req.name.clone(),
        (Some(name), _) => name.clone(),
        (None, Some(prefix)) => format!("{prefix}*"),
        (None, None) => String::new(),
    };
    SecretRef::new(namespace, name)
}

fn inspect(req: &AdmissionRequest<DynamicObject>, policy: &Policy) -> Inspection {
    if !matches!(req.operation, Operation::Create | Operation::Update) || !is_secret(req) {
        return Inspection::NotOurs;
    }
    let Some(object) = &req.object else {
        return Inspection::NotOurs;
    };
    let object: Secret = match serde_json::to_value(object).and_then(serde_json::from_value) {
        Ok(secret) => secret,
        // serde's message could quote a value of the Secret, so it is not passed on.
        Err(_) => {
            let secret = SecretRef::new(req.namespace.as_deref().unwrap_or(""), &*req.name);
            return Inspection::Deny(format!(
                "{}: the object does not decode as a core/v1 Secret",
                secret.short()
            ));
        }
    };
    let secret = secret_ref(req, &object);
    let empty = BTreeMap::new();
    let annotations = object.metadata.annotations.as_ref().unwrap_or(&empty);
    let marks = Marks::of(object.metadata.labels.as_ref(), Some(annotations));
    let (binding, shape) = match standing(&secret, Whole::secret(&marks, &object), policy) {
        Standing::OptedIn(binding, shape) => (binding, shape),
        Standing::NotOptedIn => return Inspection::NotOurs,
        Standing::OptingOut(leftovers) => return Inspection::OptOut(leftovers),
        Standing::Refused(e) => return refuse(req, &e),
        Standing::Immutable(_) => return immutable(req, &secret),
    };
    Inspection::OptedIn(Box::new(OptedIn {
        secret,
        binding,
        shape,
        marks,
        object,
    }))
}

/// An opted-in Secret that is or becomes immutable: an edit of one that already was goes
/// through; making one immutable, or creating one so, is denied with what to do instead.
fn immutable(req: &AdmissionRequest<DynamicObject>, secret: &SecretRef) -> Inspection {
    match req.operation {
        _ if was_immutable(req) && opted_in_before(req) => Inspection::Frozen,
        Operation::Update if was_immutable(req) => Inspection::Deny(format!(
            "{}: immutable, so kubeecr could never fill it; recreate it without `immutable: true`, or leave out the {} annotation",
            secret.short(),
            annotation::REGISTRIES_ANNOTATION
        )),
        Operation::Create => Inspection::Deny(format!(
            "{}: `immutable: true` would keep kubeecr from refreshing its ECR token in place (tokens expire after 12h), so it could never be refreshed; create it without `immutable: true`, or without the {} annotation",
            secret.short(),
            annotation::REGISTRIES_ANNOTATION
        )),
        _ => Inspection::Deny(format!(
            "{}: making it immutable would keep kubeecr from refreshing its ECR token in place (tokens expire after 12h), so it could never be refreshed; leave `immutable` unset, or remove the {} annotation first",
            secret.short(),
            annotation::REGISTRIES_ANNOTATION
        )),
    }
}

/// Denies what kubeecr refuses, unless the write is an UPDATE that leaves kubeecr's
/// annotations as they were: then it is let through with the reason as a warning.
fn refuse(req: &AdmissionRequest<DynamicObject>, e: &ContractError) -> Inspection {
    // All that a refusal reads: kubeecr's annotations, the type, Argo CD's label and `url`.
    // An edit of any of them is judged as a new request, so that, say, moving an Argo CD
    // `url` elsewhere cannot go through on a warning with the password still in place.
    fn read(o: &DynamicObject) -> [Option<&Value>; 2] {
        [
            o.data.get("type"),
            o.data.get("data").and_then(|d| d.get(URL_KEY)),
        ]
    }
    fn marks(o: &DynamicObject) -> [Option<&String>; 4] {
        let annotation = |k: &str| o.metadata.annotations.as_ref().and_then(|a| a.get(k));
        [
            annotation(annotation::REGISTRIES_ANNOTATION),
            annotation(annotation::ROLE_ANNOTATION),
            annotation(HOSTS_ANNOTATION),
            o.metadata.labels.as_ref().and_then(|l| l.get(ARGOCD_LABEL)),
        ]
    }
    let unchanged = req.operation == Operation::Update
        && match (&req.old_object, &req.object) {
            (Some(old), Some(new)) => read(old) == read(new) && marks(old) == marks(new),
            _ => false,
        };
    // A warning is about the object being written, so it names no Secret, and the API
    // server cuts it at 256 characters: what is wrong comes first.
    if unchanged {
        Inspection::Tolerated(e.problem.to_string())
    } else {
        Inspection::Deny(e.to_string())
    }
}

/// The object before an UPDATE carried `deft.com/kubeecr`.
fn opted_in_before(req: &AdmissionRequest<DynamicObject>) -> bool {
    req.old_object
        .as_ref()
        .and_then(|o| o.metadata.annotations.as_ref())
        .is_some_and(|a| a.contains_key(annotation::REGISTRIES_ANNOTATION))
}

/// The object before an UPDATE was an immutable Secret.
fn was_immutable(req: &AdmissionRequest<DynamicObject>) -> bool {
    req.old_object
        .as_ref()
        .is_some_and(|old| old.data.get("immutable") == Some(&Value::Bool(true)))
}

/// Admitted untouched, with why kubeecr leaves the Secret alone.
fn tolerated(req: &AdmissionRequest<DynamicObject>, message: &str) -> AdmissionResponse {
    let mut response = AdmissionResponse::from(req);
    response.warnings = Some(vec![short(
        &format!("kubeecr leaves this Secret alone: {message}"),
        MAX_WARNING,
    )]);
    response
}

fn deny(req: &AdmissionRequest<DynamicObject>, message: String) -> AdmissionResponse {
    forbidden(AdmissionResponse::from(req), message)
}

/// A denial as kubectl shows it: `Error from server (Forbidden): admission webhook ... denied
/// the request: <message>`.
fn forbidden(response: AdmissionResponse, message: String) -> AdmissionResponse {
    // Every refusal is built within this; the cut is a last guard.
    let mut response = response.deny(short(&message, MAX_REFUSAL));
    response.result.code = 403;
    response.result.reason = "Forbidden".to_string();
    response
}

/// The validating webhook: denies malformed annotations, wrong types and what the policy
/// refuses; allows everything else.
pub fn validate(req: &AdmissionRequest<DynamicObject>, policy: &Policy) -> AdmissionResponse {
    match inspect(req, policy) {
        Inspection::Deny(message) => deny(req, message),
        Inspection::Tolerated(message) => tolerated(req, &message),
        Inspection::NotOurs
        | Inspection::OptOut(_)
        | Inspection::Frozen
        | Inspection::OptedIn(_) => AdmissionResponse::from(req),
    }
}

/// The first step of mutation.
pub enum MutationPlan {
    /// Answer now: allowed unchanged, or denied.
    Respond(Box<AdmissionResponse>),
    /// Fetch tokens for `keys`, then call `complete`.
    Fill(Box<PendingFill>),
}

/// What the API server requires of a `kubernetes.io/dockerconfigjson` Secret, and no more.
const EMPTY_CONFIG: &[u8] = br#"{"auths":{}}"#;

/// The answer to a fill, and whether it hands out a token (for the audit log).
pub struct Completion {
    pub response: AdmissionResponse,
    /// The patch writes `.dockerconfigjson` with ECR credentials in it.
    pub carries_token: bool,
    /// The `deft.com/kubeecr-expires-at` the patch writes, when it carries a token.
    pub expires_at: Option<String>,
}

pub struct PendingFill {
    pub secret: SecretRef,
    pub keys: Vec<TokenKey>,
    response: AdmissionResponse,
    binding: EcrBinding,
    shape: Shape,
    marks: Marks,
    object: Secret,
    dry_run: bool,
}

/// Denies what validation would deny (the API server's own `.dockerconfigjson` check runs
/// before validating webhooks, so a data-less Secret would otherwise never see kubeecr's
/// message), allows what is not ours, and asks for tokens for the rest.
pub fn plan_mutation(req: &AdmissionRequest<DynamicObject>, policy: &Policy) -> MutationPlan {
    match inspect(req, policy) {
        Inspection::NotOurs | Inspection::Frozen => {
            MutationPlan::Respond(Box::new(AdmissionResponse::from(req)))
        }
        Inspection::Tolerated(message) => MutationPlan::Respond(Box::new(tolerated(req, &message))),
        Inspection::Deny(message) => MutationPlan::Respond(Box::new(deny(req, message))),
        Inspection::OptOut(leftovers) => MutationPlan::Respond(Box::new(with_ops(
            AdmissionResponse::from(req),
            opt_out_ops(&leftovers),
        ))),
        Inspection::OptedIn(opted_in) => {
            let OptedIn {
                secret,
                binding,
                shape,
                marks,
                object,
            } = *opted_in;
            MutationPlan::Fill(Box::new(PendingFill {
                keys: secret_update::token_keys(&binding),
                secret,
                response: AdmissionResponse::from(req),
                binding,
                shape,
                marks,
                object,
                dry_run: req.dry_run,
            }))
        }
    }
}

fn pointer(tokens: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(tokens.iter().copied())
}

fn add(path: PointerBuf, value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation { path, value })
}

fn remove(path: PointerBuf) -> PatchOperation {
    PatchOperation::Remove(RemoveOperation { path })
}

fn with_ops(response: AdmissionResponse, ops: Vec<PatchOperation>) -> AdmissionResponse {
    if ops.is_empty() {
        return response;
    }
    response
        .with_patch(Patch(ops))
        .expect("a JSON patch always serializes")
}

/// Removes kubeecr's annotations and label; the credentials stay where they are.
fn opt_out_ops(leftovers: &Leftovers) -> Vec<PatchOperation> {
    let mut ops: Vec<PatchOperation> = leftovers
        .annotations
        .iter()
        .map(|k| remove(pointer(&["metadata", "annotations", k])))
        .collect();
    if leftovers.label {
        ops.push(remove(pointer(&["metadata", "labels", MANAGED_LABEL])));
    }
    ops
}

/// Warnings over 256 characters may be cut by clients.
fn short(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

impl PendingFill {
    /// For a write that would give the Secret its first token (no recorded expiry yet, not a
    /// dry run): a note that says so, for an Event.
    pub fn first_fill(&self) -> Option<String> {
        if self.dry_run || !secret_update::is_first_fill(&self.marks) {
            return None;
        }
        Some(format!(
            "filled at admission with ECR tokens for {}",
            self.registries()
        ))
    }

    /// The registries of the annotation, `account/region, ...`.
    pub fn registries(&self) -> String {
        let registries: Vec<String> = self
            .binding
            .registries
            .iter()
            .map(ToString::to_string)
            .collect();
        registries.join(", ")
    }

    /// With `--admission-fill=false`: only what the API server needs, never a token (see
    /// `required_data`), and the managed label, so that the refresher, which watches labelled
    /// Secrets in full, fills it within moments.
    pub fn placeholder(self) -> AdmissionResponse {
        let ops = self
            .required_data()
            .into_iter()
            .chain(self.set_label())
            .collect();
        with_ops(self.response, ops)
    }

    /// What the API server requires of the Secret's type, when it is missing: `{"auths":{}}`
    /// for a dockerconfigjson Secret, `username: AWS` for a basic-auth one with neither key.
    fn required_data(&self) -> Vec<PatchOperation> {
        let has = |key: &str| self.value(key).is_some();
        match self.shape {
            Shape::DockerConfig if !has(DOCKER_CONFIG_JSON_KEY) => {
                self.set_data(&[(DOCKER_CONFIG_JSON_KEY, EMPTY_CONFIG)])
            }
            Shape::BasicAuth if !has(USERNAME_KEY) && !has(PASSWORD_KEY) => {
                self.set_data(&[(USERNAME_KEY, b"AWS")])
            }
            _ => Vec::new(),
        }
    }

    fn value(&self, key: &str) -> Option<&[u8]> {
        self.object
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| b.0.as_slice())
    }

    fn existing(&self) -> Option<&[u8]> {
        dockerconfig::of_secret(&self.object)
    }

    /// What the Secret holds of kubeecr's credentials, as the refresher would keep it.
    fn held(&self) -> KeptConfig {
        let stored = Stored::of_secret(&self.object);
        if self.shape.holds_one_host() {
            let own: Vec<(String, String)> = self
                .binding
                .targets()
                .map(|t| (t.key(), t.host()))
                .collect();
            return KeptConfig::of_basic(stored.basic.as_deref(), &own, &self.marks);
        }
        stored
            .dockerconfigjson
            .map_or(KeptConfig::Absent, |c| KeptConfig::Whole(c.into()))
    }

    /// Patch ops that set each key to its bytes, creating `data` when missing.
    fn set_data(&self, values: &[(&str, &[u8])]) -> Vec<PatchOperation> {
        let changed: Vec<(&str, Value)> = values
            .iter()
            .filter(|(k, v)| self.value(k) != Some(*v))
            .map(|(k, v)| (*k, json!(STANDARD.encode(v))))
            .collect();
        match &self.object.data {
            _ if changed.is_empty() => Vec::new(),
            Some(_) => changed
                .into_iter()
                .map(|(k, v)| add(pointer(&["data", k]), v))
                .collect(),
            None => {
                let data: serde_json::Map<String, Value> = changed
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect();
                vec![add(pointer(&["data"]), Value::Object(data))]
            }
        }
    }

    /// Sets kubeecr's annotations to `values` (opted-in Secrets always carry annotations).
    fn set_annotations(&self, values: &[(&'static str, String)]) -> Vec<PatchOperation> {
        let annotations = self.object.metadata.annotations.as_ref();
        values
            .iter()
            .filter(|(k, v)| annotations.and_then(|a| a.get(*k)) != Some(v))
            .map(|(k, v)| add(pointer(&["metadata", "annotations", k]), json!(v)))
            .collect()
    }

    /// Labels the Secret as managed, so that the refresher watches it in full.
    fn set_label(&self) -> Option<PatchOperation> {
        if self.marks.is_labelled() {
            return None;
        }
        Some(match &self.object.metadata.labels {
            Some(_) => add(
                pointer(&["metadata", "labels", MANAGED_LABEL]),
                json!("true"),
            ),
            None => add(
                pointer(&["metadata", "labels"]),
                json!({ MANAGED_LABEL: "true" }),
            ),
        })
    }

    /// The second step: the patch for the fetched tokens, or what to do without them.
    pub fn complete(
        self,
        tokens: Result<BTreeMap<TokenKey, Arc<Token>>, FetchError>,
        require_token: bool,
    ) -> Completion {
        let no_token = |response| Completion {
            response,
            carries_token: false,
            expires_at: None,
        };
        let tokens = match tokens {
            Ok(tokens) => tokens,
            Err(e) => return no_token(self.without_token(&e, require_token)),
        };
        let filled = match secret_update::fill(&self.binding, self.shape, self.existing(), &tokens)
        {
            Ok(filled) => filled,
            Err(e) => {
                return no_token(forbidden(
                    self.response,
                    format!("{}: {e}", self.secret.short()),
                ));
            }
        };
        if self.holds_newer_token(&filled) {
            let ops = self.set_label().into_iter().collect();
            return no_token(with_ops(self.response, ops));
        }
        let values: Vec<(&str, &[u8])> = filled
            .data
            .iter()
            .map(|(k, v)| (*k, v.as_slice()))
            .collect();
        let mut ops = self.set_data(&values);
        let carries_token = !ops.is_empty();
        ops.extend(self.set_annotations(&filled.annotations()));
        ops.extend(self.set_label());
        Completion {
            response: with_ops(self.response, ops),
            carries_token,
            expires_at: carries_token.then(|| secret_update::format_expiry(filled.expires_at)),
        }
    }

    /// The object already holds kubeecr's credentials for every registry (fingerprints match),
    /// recorded to expire no earlier than the cached token: another writer (a refresher
    /// elsewhere, a CronJob) was fresher, so its token stays rather than being replaced by an
    /// older one. Credentials edited by hand never match, so they are replaced.
    fn holds_newer_token(&self, filled: &secret_update::Filled) -> bool {
        let recorded = self
            .marks
            .expires_at()
            .and_then(|v| v.parse::<jiff::Timestamp>().ok());
        let believable =
            recorded.is_some_and(|r| secret_update::is_believable(r, jiff::Timestamp::now()));
        if !believable || recorded.is_none_or(|r| r < filled.expires_at) {
            return false;
        }
        secret_update::holds_own_credentials(&self.binding, &self.marks, self.held().view())
    }

    /// AWS failed or was too slow. The write goes through (with `{"auths":{}}` when it has
    /// no `.dockerconfigjson`, so that the API server accepts it) and the refresher fills it
    /// later; with `--require-token` it is denied instead.
    fn without_token(self, error: &FetchError, require_token: bool) -> AdmissionResponse {
        if require_token {
            let message = format!(
                "{}: no ECR token could be fetched, and this kubeecr requires one (--require-token): {}",
                self.secret.short(),
                error.brief()
            );
            return forbidden(self.response, message);
        }
        let data = self.required_data();
        let outcome = match self.shape {
            _ if data.is_empty() => "the Secret is stored without a new token",
            Shape::DockerConfig => {
                "the Secret is stored with an empty {\"auths\":{}} (not usable yet)"
            }
            _ => "the Secret is stored without a password (not usable yet)",
        };
        // The cause first: the API server cuts warnings at 256 characters.
        let warning = short(
            &format!(
                "kubeecr: {}; {outcome}, filled when ECR answers",
                error.brief()
            ),
            MAX_WARNING,
        );
        let ops = data.into_iter().chain(self.set_label()).collect();
        let mut response = with_ops(self.response, ops);
        response.warnings = Some(vec![warning]);
        response
    }
}

/// With the cut mark, the 256 characters at which the API server cuts a warning.
const MAX_WARNING: usize = 253;
/// With the cut mark, the longest refusal.
const MAX_REFUSAL: usize = 509;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_escape_slash_and_tilde() {
        assert_eq!(
            pointer(&["metadata", "annotations", "deft.com/kubeecr-expires-at"]).to_string(),
            "/metadata/annotations/deft.com~1kubeecr-expires-at"
        );
        assert_eq!(pointer(&["a~b"]).to_string(), "/a~0b");
    }

    #[test]
    fn warnings_are_kept_short() {
        assert_eq!(short("abc", 5), "abc");
        assert_eq!(short("abcdef", 3), "abc...");
    }
}
