//! Where a Secret stands with kubeecr, as one function: the webhook, the refresher and
//! `kubeecr status` all ask it, so that one Secret gets one answer and one reason from each.
//!
//! The checks run in one order: the annotations, the shape (type, and what it holds), the
//! operator's policy, then immutability. A Secret known by its metadata alone (a metadata
//! list or watch) can only be `listing`-checked: annotations, then policy; the rest waits for
//! its read. Pure.

use k8s_openapi::api::core::v1::Secret;

use crate::contract::annotation::{
    self, ContractError, EcrBinding, OWN_ANNOTATIONS, Problem, REGISTRIES_ANNOTATION, SecretRef,
};
use crate::contract::dockerconfig::DockerConfigError;
use crate::contract::kept::KeptSecret;
use crate::contract::marks::Marks;
use crate::contract::policy::Policy;
use crate::contract::shape::{Shape, URL_KEY, UrlTarget};

/// A Secret read in full, as far as `standing` reads it.
#[derive(Debug, Clone)]
pub struct Whole<'a> {
    pub marks: &'a Marks,
    pub type_: Option<&'a str>,
    pub immutable: bool,
    /// Where its `url` (Argo CD) points, when that is text.
    pub url: Option<UrlTarget>,
}

impl<'a> Whole<'a> {
    pub fn secret(marks: &'a Marks, secret: &'a Secret) -> Self {
        Self {
            marks,
            type_: secret.type_.as_deref(),
            immutable: secret.immutable == Some(true),
            url: secret
                .data
                .as_ref()
                .and_then(|d| d.get(URL_KEY))
                .and_then(|u| std::str::from_utf8(&u.0).ok())
                .map(UrlTarget::of),
        }
    }

    /// A Secret as the refresher keeps it.
    pub fn kept(kept: &'a KeptSecret) -> Self {
        Self {
            marks: &kept.marks,
            type_: kept.type_.as_deref(),
            immutable: kept.immutable,
            url: kept.url.clone(),
        }
    }
}

/// What kubeecr left on a Secret that no longer opts in: its own annotations and label.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leftovers {
    pub annotations: Vec<&'static str>,
    pub label: bool,
}

impl Leftovers {
    pub fn of(marks: &Marks) -> Self {
        Self {
            annotations: OWN_ANNOTATIONS
                .into_iter()
                .filter(|k| marks.annotation(k).is_some())
                .collect(),
            label: marks.managed_label().is_some(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.annotations.is_empty() && !self.label
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// No `deft.com/kubeecr`, and nothing of kubeecr's left on it.
    NotOptedIn,
    /// No `deft.com/kubeecr`, but kubeecr's annotations or label are still there.
    OptingOut(Leftovers),
    /// Opted in, but its annotations, its shape or the policy refuse it.
    Refused(ContractError),
    /// Opted in and acceptable, but immutable: its token can never be refreshed in place.
    Immutable(EcrBinding),
    OptedIn(EcrBinding, Shape),
}

/// A Secret known by its metadata: as far as that shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listing {
    NotOptedIn,
    OptingOut(Leftovers),
    Refused(ContractError),
    /// Its annotations and the policy accept it: read it for the rest.
    Listed,
}

/// The annotations, read: `Err` holds the standing without a binding.
fn opted_in(secret: &SecretRef, marks: &Marks, policy: &Policy) -> Result<EcrBinding, Listing> {
    match annotation::binding_of(secret, marks, &policy.regions) {
        Ok(Some(binding)) => Ok(binding),
        Ok(None) => {
            let leftovers = Leftovers::of(marks);
            Err(if leftovers.is_empty() {
                Listing::NotOptedIn
            } else {
                Listing::OptingOut(leftovers)
            })
        }
        Err(e) => Err(Listing::Refused(e)),
    }
}

pub fn standing(secret: &SecretRef, whole: Whole<'_>, policy: &Policy) -> Standing {
    let binding = match opted_in(secret, whole.marks, policy) {
        Ok(binding) => binding,
        Err(Listing::NotOptedIn | Listing::Listed) => return Standing::NotOptedIn,
        Err(Listing::OptingOut(leftovers)) => return Standing::OptingOut(leftovers),
        Err(Listing::Refused(e)) => return Standing::Refused(e),
    };
    let shape = match shape_of(secret, &binding, &whole) {
        Ok(shape) => shape,
        Err(e) => return Standing::Refused(e),
    };
    if let Err(e) = policy.admit(secret, &binding) {
        return Standing::Refused(e);
    }
    if whole.immutable {
        return Standing::Immutable(binding);
    }
    Standing::OptedIn(binding, shape)
}

pub fn listing(secret: &SecretRef, marks: &Marks, policy: &Policy) -> Listing {
    let binding = match opted_in(secret, marks, policy) {
        Ok(binding) => binding,
        Err(listing) => return listing,
    };
    match policy.admit(secret, &binding) {
        Ok(()) => Listing::Listed,
        Err(e) => Listing::Refused(e),
    }
}

/// The shape of a Secret kubeecr fills, with what it must hold: one host for a shape with one
/// username and password, and for Argo CD a `url` that names that host.
fn shape_of(
    secret: &SecretRef,
    binding: &EcrBinding,
    whole: &Whole<'_>,
) -> Result<Shape, ContractError> {
    let refuse = |problem| ContractError::new(secret, problem);
    let shape = Shape::of(whole.type_, whole.marks.argocd()).ok_or_else(|| {
        refuse(Problem::WrongType {
            found: crate::contract::quote::quoted(whole.type_.unwrap_or("Opaque")),
        })
    })?;
    if !shape.holds_one_host() {
        return Ok(shape);
    }
    let hosts: Vec<String> = binding.targets().map(|t| t.host()).collect();
    let [host] = hosts.as_slice() else {
        return Err(refuse(Problem::OneHostOnly {
            shape,
            count: hosts.len(),
        }));
    };
    // A credential template (`repo-creds`) is a prefix of the urls it serves.
    let prefix = whole.marks.argocd() == Some("repo-creds");
    if shape == Shape::ArgoCd && !whole.url.as_ref().is_some_and(|u| u.names(host, prefix)) {
        return Err(refuse(Problem::ArgoUrl {
            url: whole
                .url
                .as_ref()
                .map_or_else(|| "none".to_string(), UrlTarget::shown),
            host: host.clone(),
        }));
    }
    Ok(shape)
}

/// Why kubeecr leaves a Secret unfilled. Printed without the Secret's name, which whoever
/// prints it for a person adds (a log line, `kubeecr refresh`); an Event or a status row is
/// about the Secret already.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotFilled {
    /// Its annotations, its type or the policy (the problem says which).
    #[error("{0}")]
    Contract(Box<Problem>),
    #[error(
        "immutable, so its token cannot be refreshed in place; recreate it without `immutable: true`"
    )]
    Immutable,
    #[error("no longer carries {REGISTRIES_ANNOTATION}")]
    NotOptedIn,
    /// Its `.dockerconfigjson` cannot be merged into.
    #[error("{0}")]
    Config(DockerConfigError),
    #[error("deleted")]
    Deleted,
}

impl From<ContractError> for NotFilled {
    fn from(e: ContractError) -> Self {
        Self::Contract(e.problem)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::contract::annotation::{DOCKER_CONFIG_JSON_TYPE, ROLE_ANNOTATION};
    use crate::contract::policy::{NamespaceRules, REGISTRY_FLAG};

    fn marks(pairs: &[(&str, &str)]) -> Marks {
        let annotations: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Marks::of(None, Some(&annotations))
    }

    fn secret() -> SecretRef {
        SecretRef::new("team-b", "pull")
    }

    fn team_a_only() -> Policy {
        Policy {
            allowed_registries: NamespaceRules::parse(REGISTRY_FLAG, ["team-a=111111111111/*"])
                .unwrap(),
            ..Policy::default()
        }
    }

    fn whole<'a>(marks: &'a Marks, type_: &'a str, immutable: bool) -> Whole<'a> {
        Whole {
            marks,
            type_: Some(type_),
            immutable,
            url: None,
        }
    }

    /// The problem `standing` refuses with.
    fn refusal(marks: &Marks, type_: &str, policy: &Policy) -> Problem {
        match standing(&secret(), whole(marks, type_, true), policy) {
            Standing::Refused(e) => *e.problem,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn one_order_for_every_caller_annotation_type_policy_immutable() {
        let foreign = marks(&[(REGISTRIES_ANNOTATION, "111111111111/us-west-2")]);
        // Wrong type and refused by policy: the type is named, by webhook and refresher alike.
        let problem = refusal(&foreign, "Opaque", &team_a_only());
        assert!(matches!(problem, Problem::WrongType { .. }), "{problem}");
        // Of the right type, the policy comes before immutability.
        let problem = refusal(&foreign, DOCKER_CONFIG_JSON_TYPE, &team_a_only());
        assert!(
            matches!(problem, Problem::RegistryNotAllowed { .. }),
            "{problem}"
        );
        assert!(matches!(
            standing(
                &secret(),
                whole(&foreign, DOCKER_CONFIG_JSON_TYPE, true),
                &Policy::default()
            ),
            Standing::Immutable(_)
        ));
        // A malformed annotation comes first of all.
        let bad = marks(&[(REGISTRIES_ANNOTATION, "123/us-west-2")]);
        let problem = refusal(&bad, "Opaque", &team_a_only());
        assert!(matches!(problem, Problem::ShortAccount { .. }), "{problem}");
    }

    #[test]
    fn metadata_alone_checks_what_it_can_and_leaves_the_rest_to_the_read() {
        let ok = marks(&[(REGISTRIES_ANNOTATION, "111111111111/us-west-2")]);
        assert_eq!(listing(&secret(), &ok, &Policy::default()), Listing::Listed);
        assert!(matches!(
            listing(&secret(), &ok, &team_a_only()),
            Listing::Refused(_)
        ));
        let role = marks(&[
            (REGISTRIES_ANNOTATION, "111111111111/us-west-2"),
            (ROLE_ANNOTATION, "not-an-arn"),
        ]);
        assert!(matches!(
            listing(&secret(), &role, &Policy::default()),
            Listing::Refused(_)
        ));
    }

    #[test]
    fn not_opted_in_or_opting_out() {
        assert_eq!(
            standing(
                &secret(),
                whole(&marks(&[]), DOCKER_CONFIG_JSON_TYPE, false),
                &Policy::default()
            ),
            Standing::NotOptedIn
        );
        let leftover = marks(&[(
            crate::contract::annotation::EXPIRES_AT_ANNOTATION,
            "2026-11-29T20:00:00Z",
        )]);
        assert!(matches!(
            listing(&secret(), &leftover, &Policy::default()),
            Listing::OptingOut(_)
        ));
    }

    #[test]
    fn leftovers_are_kubeecrs_own_keys_only() {
        let labels = BTreeMap::from([
            (
                crate::contract::annotation::MANAGED_LABEL.to_string(),
                "true".to_string(),
            ),
            ("app".into(), "x".into()),
        ]);
        let annotations = BTreeMap::from([
            (
                crate::contract::annotation::EXPIRES_AT_ANNOTATION.to_string(),
                "2026-11-29T19:00:00Z".to_string(),
            ),
            ("other".to_string(), "y".to_string()),
        ]);
        let l = Leftovers::of(&Marks::of(Some(&labels), Some(&annotations)));
        assert_eq!(
            l.annotations,
            [crate::contract::annotation::EXPIRES_AT_ANNOTATION]
        );
        assert!(l.label);
        assert!(Leftovers::of(&Marks::default()).is_empty());
    }

    #[test]
    fn a_refusal_prints_without_the_secrets_name() {
        let bad = marks(&[(REGISTRIES_ANNOTATION, "123/us-west-2")]);
        let Listing::Refused(e) = listing(&secret(), &bad, &Policy::default()) else {
            panic!("refused")
        };
        assert!(e.to_string().starts_with("team-b/pull: "), "{e}");
        let refusal = NotFilled::from(e);
        assert!(
            refusal.to_string().starts_with("deft.com/kubeecr "),
            "{refusal}"
        );
    }
}
