//! The operator's policy: which roles, registries and namespaces this installation serves.
//!
//! Pure. The webhook denies what the policy refuses; the refresher skips it.

use globset::{GlobBuilder, GlobMatcher};

use crate::contract::annotation::{ContractError, EcrBinding, Problem, SecretRef};
use crate::contract::partition::Regions;
use crate::contract::quote::quoted;

/// One glob: `*` and `?` never match `/`, so `role/ecr-*` does not allow `role/ecr-x/admin`
/// and `123456789012/*` means every region of that account.
#[derive(Debug, Clone)]
struct Pattern {
    raw: String,
    matcher: GlobMatcher,
}

impl Pattern {
    fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() {
            return Err("an empty pattern matches nothing".into());
        }
        // Only `*` and `?` are special; `**` would cross `/`, and the rest has no use here.
        if raw.contains("**") || raw.contains(['[', ']', '{', '}', '\\']) {
            return Err(format!(
                "{raw:?}: only * and ? are wildcards (no **, [], {{}} or \\)"
            ));
        }
        let glob = GlobBuilder::new(raw)
            .literal_separator(true)
            .build()
            .map_err(|e| format!("{raw:?} is not a valid pattern: {}", e.kind()))?;
        Ok(Self {
            raw: raw.to_string(),
            matcher: glob.compile_matcher(),
        })
    }

    fn matches(&self, value: &str) -> bool {
        self.matcher.is_match(value)
    }
}

/// Glob patterns (`*`, `?`) as the operator wrote them.
#[derive(Debug, Clone, Default)]
pub struct Patterns {
    patterns: Vec<Pattern>,
}

impl Patterns {
    pub fn parse<S: AsRef<str>>(patterns: impl IntoIterator<Item = S>) -> Result<Self, String> {
        let patterns = patterns
            .into_iter()
            .map(|p| p.as_ref().trim().to_string())
            .filter(|p| !p.is_empty())
            .map(|p| Pattern::parse(&p))
            .collect::<Result<_, _>>()?;
        Ok(Self { patterns })
    }

    /// `account/region` patterns: each must have the `/`, since `*` alone never crosses it
    /// and would match no registry.
    pub fn registries<S: AsRef<str>>(
        patterns: impl IntoIterator<Item = S>,
    ) -> Result<Self, String> {
        let parsed = Self::parse(patterns)?;
        if let Some(p) = parsed.patterns.iter().find(|p| !p.raw.contains('/')) {
            return Err(format!(
                "{:?} has no account/region form and would match nothing; write e.g. 123456789012/* or */us-west-2",
                p.raw
            ));
        }
        Ok(parsed)
    }

    /// For patterns written in code; panics on an invalid one.
    pub fn new<S: AsRef<str>>(patterns: impl IntoIterator<Item = S>) -> Self {
        Self::parse(patterns).expect("valid patterns")
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    pub fn matches(&self, value: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(value))
    }

    fn describe(&self) -> String {
        describe(self.patterns.iter())
    }
}

fn describe<'a>(patterns: impl Iterator<Item = &'a Pattern>) -> String {
    let raw: Vec<&str> = patterns.map(|p| p.raw.as_str()).collect();
    if raw.is_empty() {
        "none".to_string()
    } else {
        raw.join(", ")
    }
}

/// A Kubernetes namespace name: a DNS-1123 label.
pub fn is_namespace_name(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Which roles a Secret may name, per namespace: `team-a=arn:aws:iam::111122223333:role/ecr-*`
/// for one namespace, and `*=…` for every namespace, written out so that a cluster-wide role
/// is a choice, not an accident. A team cannot name a role allowed only to another team.
#[derive(Debug, Clone, Default)]
pub struct RoleRules {
    rules: Vec<(Option<String>, Pattern)>,
}

impl RoleRules {
    pub fn parse<S: AsRef<str>>(entries: impl IntoIterator<Item = S>) -> Result<Self, String> {
        let mut rules = Vec::new();
        for entry in entries {
            let entry = entry.as_ref().trim();
            if entry.is_empty() {
                continue;
            }
            // Namespace names never hold `=`; role names may, so the first one splits.
            let Some((namespace, pattern)) = entry.split_once('=') else {
                return Err(format!(
                    "--allowed-role-arns {entry:?}: name the namespace it is for, e.g. team-a={entry}, or write *={entry} to allow it in every namespace"
                ));
            };
            let namespace = match namespace.trim() {
                "*" => None,
                ns if is_namespace_name(ns) => Some(ns.to_string()),
                ns => {
                    return Err(format!(
                        "--allowed-role-arns {entry:?}: {ns:?} is not a namespace name (lowercase letters, digits and -, at most 63) nor *"
                    ));
                }
            };
            let pattern = Pattern::parse(pattern.trim())
                .map_err(|e| format!("--allowed-role-arns {entry:?}: {e}"))?;
            rules.push((namespace, pattern));
        }
        Ok(Self { rules })
    }

    /// For rules written in code; panics on an invalid one.
    pub fn new<S: AsRef<str>>(entries: impl IntoIterator<Item = S>) -> Self {
        Self::parse(entries).expect("valid role rules")
    }

    fn for_namespace<'a>(&'a self, namespace: &'a str) -> impl Iterator<Item = &'a Pattern> {
        self.rules
            .iter()
            .filter(move |(ns, _)| ns.as_deref().is_none_or(|ns| ns == namespace))
            .map(|(_, p)| p)
    }

    pub fn allows(&self, namespace: &str, role: &str) -> bool {
        self.for_namespace(namespace).any(|p| p.matches(role))
    }

    /// The patterns that apply in `namespace`, for messages.
    fn describe(&self, namespace: &str) -> String {
        describe(self.for_namespace(namespace))
    }
}

/// What this installation serves.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Roles a secret may name in `deft.com/kubeecr-role`, per namespace. Empty: none.
    pub allowed_role_arns: RoleRules,
    /// `account/region` patterns. Empty: every registry.
    pub allowed_registries: Patterns,
    /// Namespaces served. Empty: all.
    pub namespaces: Vec<String>,
    /// Namespaces never served, even when listed in `namespaces`.
    pub exclude_namespaces: Vec<String>,
    /// Regions Secrets may name: the SDK's, and `--extra-regions`.
    pub regions: Regions,
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
            && !self
                .allowed_role_arns
                .allows(&secret.namespace, role.as_str())
        {
            return Err(refuse(Problem::RoleNotAllowed {
                value: quoted(role.as_str()),
                allowed: self.allowed_role_arns.describe(&secret.namespace),
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
        binding_of(&SecretRef::new("x", "y"), &a, &Regions::default())
            .unwrap()
            .unwrap()
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
            allowed_role_arns: RoleRules::new(["team-a=arn:aws:iam::123456789012:role/ecr-*"]),
            ..Policy::default()
        };
        assert!(policy.admit(&secret, &b).is_ok());
        let other = binding(
            "123456789012/us-west-2",
            Some("arn:aws:iam::999999999999:role/ecr-pull"),
        );
        assert!(policy.admit(&secret, &other).is_err());
        // Team B cannot name team A's role; `*` does not cross a path separator.
        let msg = policy
            .admit(&SecretRef::new("team-b", "pull"), &b)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("allowed: none"), "{msg}");
        let nested = binding(
            "123456789012/us-west-2",
            Some("arn:aws:iam::123456789012:role/ecr-x/admin"),
        );
        assert!(policy.admit(&secret, &nested).is_err());
        // Every namespace only when written so.
        let everywhere = Policy {
            allowed_role_arns: RoleRules::new(["*=arn:aws:iam::123456789012:role/ecr-*"]),
            ..Policy::default()
        };
        assert!(
            everywhere
                .admit(&SecretRef::new("team-b", "pull"), &b)
                .is_ok()
        );
    }

    #[test]
    fn role_rules_must_name_their_namespace() {
        let plain = RoleRules::parse(["arn:aws:iam::123456789012:role/ecr-*"]).unwrap_err();
        assert!(
            plain.contains("team-a=arn:aws:iam::123456789012:role/ecr-*"),
            "{plain}"
        );
        assert!(
            plain.contains("*=arn:aws:iam::123456789012:role/ecr-*"),
            "{plain}"
        );
        assert!(RoleRules::parse(["=arn:aws:iam::1:role/x"]).is_err());
        assert!(
            RoleRules::parse(["team-a=role/[x"]).is_err(),
            "an unclosed class"
        );
        // A role name may hold `=`: only the first one splits.
        let rules = RoleRules::new(["team-a=arn:aws:iam::1:role/a=b"]);
        assert!(rules.allows("team-a", "arn:aws:iam::1:role/a=b"));
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
