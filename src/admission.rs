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
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::api::core::v1::Secret;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use serde_json::{Value, json};

use crate::annotation::{self, EXPIRES_AT_ANNOTATION, EcrBinding, SecretRef};
use crate::dockerconfig::DOCKER_CONFIG_JSON_KEY;
use crate::policy::Policy;
use crate::secret_update;
use crate::token::{Token, TokenKey};
use crate::token_cache::FetchError;

/// What the webhook does with a request that needs no token.
enum Inspection {
    /// Not an opted-in Secret write: allow unchanged.
    NotOurs,
    Deny(String),
    OptedIn(Box<OptedIn>),
}

struct OptedIn {
    secret: SecretRef,
    binding: EcrBinding,
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
            return Inspection::Deny(format!(
                "{}/{}: the object does not decode as a core/v1 Secret",
                req.namespace.as_deref().unwrap_or(""),
                req.name
            ));
        }
    };
    let secret = secret_ref(req, &object);
    let empty = BTreeMap::new();
    let annotations = object.metadata.annotations.as_ref().unwrap_or(&empty);
    let binding = match annotation::binding_of(&secret, annotations) {
        Ok(Some(binding)) => binding,
        Ok(None) => return Inspection::NotOurs,
        Err(e) => return Inspection::Deny(e.to_string()),
    };
    if let Err(e) = annotation::check_type(&secret, object.type_.as_deref()) {
        return Inspection::Deny(e.to_string());
    }
    if let Err(e) = policy.admit(&secret, &binding) {
        return Inspection::Deny(e.to_string());
    }
    Inspection::OptedIn(Box::new(OptedIn {
        secret,
        binding,
        object,
    }))
}

fn deny(req: &AdmissionRequest<DynamicObject>, message: String) -> AdmissionResponse {
    forbidden(AdmissionResponse::from(req), message)
}

/// A denial as kubectl shows it: `Error from server (Forbidden): admission webhook ... denied
/// the request: <message>`.
fn forbidden(response: AdmissionResponse, message: String) -> AdmissionResponse {
    let mut response = response.deny(message);
    response.result.code = 403;
    response.result.reason = "Forbidden".to_string();
    response
}

/// The validating webhook: denies malformed annotations, wrong types and what the policy
/// refuses; allows everything else.
pub fn validate(req: &AdmissionRequest<DynamicObject>, policy: &Policy) -> AdmissionResponse {
    match inspect(req, policy) {
        Inspection::Deny(message) => deny(req, message),
        Inspection::NotOurs | Inspection::OptedIn(_) => AdmissionResponse::from(req),
    }
}

/// The first step of mutation.
pub enum MutationPlan {
    /// Answer now: allowed unchanged, or denied.
    Respond(Box<AdmissionResponse>),
    /// Fetch tokens for `keys`, then call `complete`.
    Fill(Box<PendingFill>),
}

pub struct PendingFill {
    pub secret: SecretRef,
    pub keys: Vec<TokenKey>,
    response: AdmissionResponse,
    binding: EcrBinding,
    object: Secret,
}

/// Denies what validation would deny (the API server's own `.dockerconfigjson` check runs
/// before validating webhooks, so a data-less Secret would otherwise never see kubeecr's
/// message), allows what is not ours, and asks for tokens for the rest.
pub fn plan_mutation(req: &AdmissionRequest<DynamicObject>, policy: &Policy) -> MutationPlan {
    match inspect(req, policy) {
        Inspection::NotOurs => MutationPlan::Respond(Box::new(AdmissionResponse::from(req))),
        Inspection::Deny(message) => MutationPlan::Respond(Box::new(deny(req, message))),
        Inspection::OptedIn(opted_in) => {
            let OptedIn {
                secret,
                binding,
                object,
            } = *opted_in;
            MutationPlan::Fill(Box::new(PendingFill {
                keys: secret_update::token_keys(&binding),
                secret,
                response: AdmissionResponse::from(req),
                binding,
                object,
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

/// Warnings over 256 characters may be cut by clients.
fn short(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

impl PendingFill {
    fn existing(&self) -> Option<&[u8]> {
        self.object
            .data
            .as_ref()
            .and_then(|d| d.get(DOCKER_CONFIG_JSON_KEY))
            .map(|b| b.0.as_slice())
    }

    /// Patch ops that set `.dockerconfigjson` to `bytes`, creating `data` when missing.
    fn set_data(&self, bytes: &[u8]) -> Option<PatchOperation> {
        if self.existing() == Some(bytes) {
            return None;
        }
        let encoded = json!(STANDARD.encode(bytes));
        Some(match &self.object.data {
            Some(_) => add(pointer(&["data", DOCKER_CONFIG_JSON_KEY]), encoded),
            None => add(
                pointer(&["data"]),
                json!({ DOCKER_CONFIG_JSON_KEY: encoded }),
            ),
        })
    }

    fn set_expiry(&self, value: String) -> Option<PatchOperation> {
        let annotations = self.object.metadata.annotations.as_ref();
        if annotations.and_then(|a| a.get(EXPIRES_AT_ANNOTATION)) == Some(&value) {
            return None;
        }
        // Opted-in secrets always carry annotations, so the map exists.
        Some(add(
            pointer(&["metadata", "annotations", EXPIRES_AT_ANNOTATION]),
            json!(value),
        ))
    }

    fn with_ops(self, ops: Vec<PatchOperation>) -> AdmissionResponse {
        if ops.is_empty() {
            return self.response;
        }
        self.response
            .with_patch(Patch(ops))
            .expect("a JSON patch always serializes")
    }

    /// The second step: the patch for the fetched tokens, or what to do without them.
    pub fn complete(
        self,
        tokens: Result<BTreeMap<TokenKey, Arc<Token>>, FetchError>,
        require_token: bool,
    ) -> AdmissionResponse {
        let tokens = match tokens {
            Ok(tokens) => tokens,
            Err(e) => return self.without_token(&e, require_token),
        };
        let filled = match secret_update::fill(&self.binding, self.existing(), &tokens) {
            Ok(filled) => filled,
            Err(e) => return forbidden(self.response, format!("{}: {e}", self.secret)),
        };
        if self.holds_newer_token(&filled) {
            return self.response;
        }
        let ops = [
            self.set_data(&filled.dockerconfigjson),
            self.set_expiry(filled.expires_at_annotation()),
        ]
        .into_iter()
        .flatten()
        .collect();
        self.with_ops(ops)
    }

    /// The object already holds credentials for every registry, recorded to expire no earlier
    /// than the cached token: another writer (a refresher elsewhere, a CronJob) was fresher,
    /// so its token stays rather than being replaced by an older one.
    fn holds_newer_token(&self, filled: &secret_update::Filled) -> bool {
        let recorded = self
            .object
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(EXPIRES_AT_ANNOTATION))
            .and_then(|v| v.parse::<jiff::Timestamp>().ok());
        if recorded.is_none_or(|r| r < filled.expires_at) {
            return false;
        }
        secret_update::missing_hosts(&self.binding, self.existing())
            .is_ok_and(|missing| missing.is_empty())
    }

    /// AWS failed or was too slow. The write goes through (with `{"auths":{}}` when it has
    /// no `.dockerconfigjson`, so that the API server accepts it) and the refresher fills it
    /// later; with `--require-token` it is denied instead.
    fn without_token(self, error: &FetchError, require_token: bool) -> AdmissionResponse {
        if require_token {
            let message = format!(
                "{}: no ECR token could be fetched, and this kubeecr requires one (--require-token): {error}",
                self.secret
            );
            return forbidden(self.response, message);
        }
        let (op, outcome) = if self.existing().is_none() {
            (
                self.set_data(br#"{"auths":{}}"#),
                "stored with an empty {\"auths\":{}} (not usable yet)",
            )
        } else {
            (None, "stored without a new token")
        };
        // What happened first, then why: clients may cut warnings past 256 characters.
        let warning = short(
            &format!(
                "kubeecr: {} {outcome}; kubeecr fills it when ECR answers. Cause: {error}",
                self.secret
            ),
            250,
        );
        let mut response = self.with_ops(op.into_iter().collect());
        response.warnings = Some(vec![warning]);
        response
    }
}

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
