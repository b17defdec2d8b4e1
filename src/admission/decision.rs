//! Admission decisions for Secrets: pure functions from an AdmissionRequest (and, for
//! mutation, the tokens fetched for it) to an AdmissionResponse.
//!
//! Mutation runs in two steps so that the only I/O, the token fetch, stays outside:
//! `plan_mutation` says which tokens are needed, `PendingFill::complete` builds the patch.

use std::collections::BTreeMap;

use json_patch::PatchOperation;
use k8s_openapi::api::core::v1::Secret;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use serde_json::Value;

use super::answer::{MAX_WARNING, forbidden, pointer, remove, short, with_ops};
pub use super::fill::{Completion, PendingFill};
use crate::contract::annotation::{self, ContractError, EcrBinding, MANAGED_LABEL, SecretRef};
use crate::contract::hosts::HOSTS_ANNOTATION;
use crate::contract::marks::Marks;
use crate::contract::policy::Policy;
use crate::contract::secret_update;
use crate::contract::shape::{ARGOCD_LABEL, Shape, URL_KEY};
use crate::contract::standing::{Leftovers, Standing, Whole, standing};

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
