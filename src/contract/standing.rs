//! Where a Secret stands with kubeecr, as one function: the webhook, the refresher and
//! `kubeecr status` all ask it, so that one Secret gets one answer and one reason from each.
//!
//! The checks run in one order: the annotations, the type, the operator's policy, then
//! immutability. Pure.

use k8s_openapi::api::core::v1::Secret;

use crate::contract::annotation::{
    self, ContractError, EcrBinding, OWN_ANNOTATIONS, Problem, REGISTRIES_ANNOTATION, SecretRef,
};
use crate::contract::dockerconfig::DockerConfigError;
use crate::contract::kept::KeptSecret;
use crate::contract::marks::Marks;
use crate::contract::policy::Policy;

/// What is known of a Secret: always its marks; its type and immutability once it is read in
/// full (a metadata-only list or watch has neither, and those checks wait for the read).
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    pub marks: &'a Marks,
    pub body: Option<Body<'a>>,
}

#[derive(Debug, Clone, Copy)]
pub struct Body<'a> {
    pub type_: Option<&'a str>,
    pub immutable: bool,
}

impl<'a> Seen<'a> {
    /// Metadata only.
    pub fn metadata(marks: &'a Marks) -> Self {
        Self { marks, body: None }
    }

    pub fn whole(marks: &'a Marks, type_: Option<&'a str>, immutable: bool) -> Self {
        Self {
            marks,
            body: Some(Body { type_, immutable }),
        }
    }

    pub fn secret(marks: &'a Marks, secret: &'a Secret) -> Self {
        Self::whole(
            marks,
            secret.type_.as_deref(),
            secret.immutable == Some(true),
        )
    }

    /// A Secret as the refresher keeps it, read in full.
    pub fn kept(kept: &'a KeptSecret) -> Self {
        Self::whole(&kept.marks, kept.type_.as_deref(), kept.immutable)
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
    /// Opted in, but its annotations, its type or the policy refuse it.
    Refused(ContractError),
    /// Opted in and acceptable, but immutable: its token can never be refreshed in place.
    Immutable(EcrBinding),
    OptedIn(EcrBinding),
}

pub fn standing(secret: &SecretRef, seen: Seen<'_>, policy: &Policy) -> Standing {
    let binding = match annotation::binding_of(secret, seen.marks, &policy.regions) {
        Ok(Some(binding)) => binding,
        Ok(None) => {
            let leftovers = Leftovers::of(seen.marks);
            return if leftovers.is_empty() {
                Standing::NotOptedIn
            } else {
                Standing::OptingOut(leftovers)
            };
        }
        Err(e) => return Standing::Refused(e),
    };
    if let Some(body) = seen.body
        && let Err(e) = annotation::check_type(secret, body.type_)
    {
        return Standing::Refused(e);
    }
    if let Err(e) = policy.admit(secret, &binding) {
        return Standing::Refused(e);
    }
    if seen.body.is_some_and(|b| b.immutable) {
        return Standing::Immutable(binding);
    }
    Standing::OptedIn(binding)
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

    /// The problem `standing` refuses with.
    fn refusal(marks: &Marks, type_: &str, policy: &Policy) -> Problem {
        match standing(&secret(), Seen::whole(marks, Some(type_), true), policy) {
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
                Seen::whole(&foreign, Some(DOCKER_CONFIG_JSON_TYPE), true),
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
        assert!(matches!(
            standing(&secret(), Seen::metadata(&ok), &Policy::default()),
            Standing::OptedIn(_)
        ));
        assert!(matches!(
            standing(&secret(), Seen::metadata(&ok), &team_a_only()),
            Standing::Refused(_)
        ));
        let role = marks(&[
            (REGISTRIES_ANNOTATION, "111111111111/us-west-2"),
            (ROLE_ANNOTATION, "not-an-arn"),
        ]);
        assert!(matches!(
            standing(&secret(), Seen::metadata(&role), &Policy::default()),
            Standing::Refused(_)
        ));
    }

    #[test]
    fn not_opted_in_or_opting_out() {
        assert_eq!(
            standing(&secret(), Seen::metadata(&marks(&[])), &Policy::default()),
            Standing::NotOptedIn
        );
        let leftover = marks(&[(
            crate::contract::annotation::EXPIRES_AT_ANNOTATION,
            "2026-11-29T20:00:00Z",
        )]);
        assert!(matches!(
            standing(&secret(), Seen::metadata(&leftover), &Policy::default()),
            Standing::OptingOut(_)
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
        let Standing::Refused(e) = standing(&secret(), Seen::metadata(&bad), &Policy::default())
        else {
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
