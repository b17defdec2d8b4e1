//! The operator's policy: which roles, registries and namespaces this installation serves.
//!
//! Pure. The webhook denies what the policy refuses; the refresher skips it.

use wildmatch::WildMatch;

use crate::contract::annotation::{ContractError, EcrBinding, Problem, SecretRef};

/// Glob patterns (`*`, `?`) as the operator wrote them.
#[derive(Debug, Clone, Default)]
pub struct Patterns {
    raw: Vec<String>,
    compiled: Vec<WildMatch>,
}

impl Patterns {
    pub fn new<S: AsRef<str>>(patterns: impl IntoIterator<Item = S>) -> Self {
        let raw: Vec<String> = patterns
            .into_iter()
            .map(|p| p.as_ref().trim().to_string())
            .filter(|p| !p.is_empty())
            .collect();
        let compiled = raw.iter().map(|p| WildMatch::new(p)).collect();
        Self { raw, compiled }
    }

    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    pub fn matches(&self, value: &str) -> bool {
        self.compiled.iter().any(|p| p.matches(value))
    }

    fn describe(&self) -> String {
        if self.raw.is_empty() {
            "none".to_string()
        } else {
            self.raw.join(", ")
        }
    }
}

/// What this installation serves.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Roles a secret may name in `deft.com/kubeecr-role`. Empty: none.
    pub allowed_role_arns: Patterns,
    /// `account/region` patterns. Empty: every registry.
    pub allowed_registries: Patterns,
    /// Namespaces served. Empty: all.
    pub namespaces: Vec<String>,
    /// Namespaces never served, even when listed in `namespaces`.
    pub exclude_namespaces: Vec<String>,
}

impl Policy {
    /// Whether the namespace is served; `Err` explains why not.
    pub fn check_namespace(&self, namespace: &str) -> Result<(), String> {
        if self.exclude_namespaces.iter().any(|n| n == namespace) {
            return Err(format!(
                "excluded by --exclude-namespaces {}",
                self.exclude_namespaces.join(",")
            ));
        }
        if !self.namespaces.is_empty() && !self.namespaces.iter().any(|n| n == namespace) {
            return Err(format!("served namespaces: {}", self.namespaces.join(",")));
        }
        Ok(())
    }

    /// Checks an opted-in secret against the policy.
    pub fn admit(&self, secret: &SecretRef, binding: &EcrBinding) -> Result<(), ContractError> {
        let refuse = |problem| ContractError::new(secret, problem);
        if let Err(why) = self.check_namespace(&secret.namespace) {
            return Err(refuse(Problem::NamespaceNotServed {
                namespace: secret.namespace.clone(),
                why,
            }));
        }
        if let Some(role) = &binding.role
            && !self.allowed_role_arns.matches(role.as_str())
        {
            return Err(refuse(Problem::RoleNotAllowed {
                value: role.to_string(),
                allowed: self.allowed_role_arns.describe(),
            }));
        }
        if !self.allowed_registries.is_empty()
            && let Some(registry) = binding
                .registries
                .iter()
                .find(|r| !self.allowed_registries.matches(&r.to_string()))
        {
            return Err(refuse(Problem::RegistryNotAllowed {
                registry: registry.to_string(),
                allowed: self.allowed_registries.describe(),
            }));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::contract::annotation::{REGISTRIES_ANNOTATION, ROLE_ANNOTATION, binding_of};

    fn binding(registries: &str, role: Option<&str>) -> EcrBinding {
        let mut a = BTreeMap::from([(REGISTRIES_ANNOTATION.to_string(), registries.to_string())]);
        if let Some(role) = role {
            a.insert(ROLE_ANNOTATION.to_string(), role.to_string());
        }
        binding_of(&SecretRef::new("x", "y"), &a).unwrap().unwrap()
    }

    #[test]
    fn roles_are_refused_unless_allowed() {
        let secret = SecretRef::new("team-a", "pull");
        let b = binding(
            "123456789012/us-west-2",
            Some("arn:aws:iam::123456789012:role/ecr-pull"),
        );
        let msg = Policy::default()
            .admit(&secret, &b)
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with(
                "team-a/pull: deft.com/kubeecr-role \"arn:aws:iam::123456789012:role/ecr-pull\""
            ),
            "{msg}"
        );
        assert!(msg.contains("allowed: none"), "{msg}");

        let policy = Policy {
            allowed_role_arns: Patterns::new(["arn:aws:iam::123456789012:role/ecr-*"]),
            ..Policy::default()
        };
        assert!(policy.admit(&secret, &b).is_ok());
        let other = binding(
            "123456789012/us-west-2",
            Some("arn:aws:iam::999999999999:role/ecr-pull"),
        );
        assert!(policy.admit(&secret, &other).is_err());
    }

    #[test]
    fn registries_and_namespaces_are_scoped() {
        let secret = SecretRef::new("team-a", "pull");
        let policy = Policy {
            allowed_registries: Patterns::new(["123456789012/*", "*/eu-central-1"]),
            namespaces: vec!["team-a".into(), "team-b".into()],
            exclude_namespaces: vec!["team-b".into()],
            ..Policy::default()
        };
        assert!(
            policy
                .admit(
                    &secret,
                    &binding("123456789012/us-west-2,210987654321/eu-central-1", None)
                )
                .is_ok()
        );
        let msg = policy
            .admit(&secret, &binding("210987654321/us-west-2", None))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("registry 210987654321/us-west-2 is not allowed"),
            "{msg}"
        );
        let msg = policy
            .admit(
                &SecretRef::new("team-b", "pull"),
                &binding("123456789012/us-west-2", None),
            )
            .unwrap_err()
            .to_string();
        assert!(msg.contains("excluded by --exclude-namespaces"), "{msg}");
        let msg = policy
            .admit(
                &SecretRef::new("team-c", "pull"),
                &binding("123456789012/us-west-2", None),
            )
            .unwrap_err()
            .to_string();
        assert!(msg.contains("namespace \"team-c\" is not served"), "{msg}");
    }
}
