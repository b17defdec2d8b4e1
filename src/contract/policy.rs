//! The operator's policy: which roles, registries and namespaces this installation serves.
//!
//! Pure. The webhook denies what the policy refuses; the refresher skips it.

use globset::{GlobBuilder, GlobMatcher};

use crate::contract::annotation::{ContractError, EcrBinding, Problem, SecretRef};
use crate::contract::partition::Regions;
use crate::contract::quote::{prefix, quoted};

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

/// A Kubernetes namespace name: a DNS-1123 label.
pub fn is_namespace_name(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// What one `namespace=pattern` flag allows: `team-a=<pattern>` for one namespace, and
/// `*=<pattern>` for every namespace, written out so that a cluster-wide rule is a choice, not
/// an accident. A team cannot use what is allowed only to another team.
#[derive(Debug, Clone, Default)]
pub struct NamespaceRules {
    rules: Vec<(Option<String>, Pattern)>,
}

/// Which flag a set of rules came from, and what its patterns look like, for messages.
#[derive(Debug, Clone, Copy)]
pub struct RuleFlag {
    pub name: &'static str,
    /// A pattern to show in examples.
    pub example: &'static str,
    /// A pattern that must hold this (`/` for registries) or it could match nothing.
    pub needs: Option<(char, &'static str)>,
}

/// `--allowed-role-arns`: the roles a Secret may name in `deft.com/kubeecr-role`.
pub const ROLE_FLAG: RuleFlag = RuleFlag {
    name: "--allowed-role-arns",
    example: "arn:aws:iam::123456789012:role/ecr-*",
    needs: None,
};

/// `--allowed-registries`: the `account/region` patterns a Secret may name.
pub const REGISTRY_FLAG: RuleFlag = RuleFlag {
    name: "--allowed-registries",
    example: "123456789012/*",
    needs: Some((
        '/',
        "an account/region form, e.g. 123456789012/* or */us-west-2",
    )),
};

impl NamespaceRules {
    pub fn parse<S: AsRef<str>>(
        flag: RuleFlag,
        entries: impl IntoIterator<Item = S>,
    ) -> Result<Self, String> {
        let name = flag.name;
        let mut rules = Vec::new();
        for entry in entries {
            let entry = entry.as_ref().trim();
            if entry.is_empty() {
                continue;
            }
            // Namespace names never hold `=`; role names may, so the first one splits.
            let Some((namespace, pattern)) = entry.split_once('=') else {
                return Err(format!(
                    "{name} {entry:?}: name the namespace it is for, e.g. team-a={entry} (*={entry} would allow it in every namespace)"
                ));
            };
            let namespace = match namespace.trim() {
                "*" => None,
                ns if is_namespace_name(ns) => Some(ns.to_string()),
                ns => {
                    return Err(format!(
                        "{name} {entry:?}: {ns:?} is not a namespace name (lowercase letters, digits and -, at most 63) nor *"
                    ));
                }
            };
            let pattern =
                Pattern::parse(pattern.trim()).map_err(|e| format!("{name} {entry:?}: {e}"))?;
            if let Some((needed, what)) = flag.needs
                && !pattern.raw.contains(needed)
            {
                return Err(format!(
                    "{name} {entry:?}: {:?} would match nothing; write {what}",
                    pattern.raw
                ));
            }
            rules.push((namespace, pattern));
        }
        Ok(Self { rules })
    }

    /// For rules written in code; panics on an invalid one.
    pub fn new<S: AsRef<str>>(flag: RuleFlag, entries: impl IntoIterator<Item = S>) -> Self {
        Self::parse(flag, entries).expect("valid namespace rules")
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Some rule is for one namespace, not `*`.
    pub fn names_namespaces(&self) -> bool {
        self.rules.iter().any(|(ns, _)| ns.is_some())
    }

    fn for_namespace<'a>(&'a self, namespace: &'a str) -> impl Iterator<Item = &'a Pattern> {
        self.rules
            .iter()
            .filter(move |(ns, _)| ns.as_deref().is_none_or(|ns| ns == namespace))
            .map(|(_, p)| p)
    }

    pub fn allows(&self, namespace: &str, value: &str) -> bool {
        self.for_namespace(namespace).any(|p| p.matches(value))
    }

    /// The patterns that apply in `namespace`, for messages: the first few, so that a long
    /// list cannot crowd out the rest of the message.
    fn describe(&self, namespace: &str) -> String {
        let all: Vec<&str> = self
            .for_namespace(namespace)
            .map(|p| p.raw.as_str())
            .collect();
        listed(&all, ", ")
    }
}

/// The namespaces where something is allowed: all (`*`, the default), some, or none.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NamespaceSet {
    #[default]
    All,
    /// Only these; empty: none.
    Only(Vec<String>),
}

impl NamespaceSet {
    /// `*`, `none`, or namespace names; nothing given is `*`.
    pub fn parse<S: AsRef<str>>(
        flag: &str,
        values: impl IntoIterator<Item = S>,
    ) -> Result<Self, String> {
        let values: Vec<String> = values
            .into_iter()
            .map(|v| v.as_ref().trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        let keyword = |k: &str| values.iter().any(|v| v == k);
        if (keyword("*") || keyword("none")) && values.len() > 1 {
            return Err(format!(
                "{flag} {:?}: * and none stand alone; list namespace names instead, e.g. team-a,team-b",
                values.join(",")
            ));
        }
        match values.first().map(String::as_str) {
            None | Some("*") => Ok(Self::All),
            Some("none") => Ok(Self::Only(Vec::new())),
            _ => {
                if let Some(bad) = values.iter().find(|v| !is_namespace_name(v)) {
                    return Err(format!(
                        "{flag} {bad:?} is not a namespace name (lowercase letters, digits and -, at most 63), *, or none"
                    ));
                }
                Ok(Self::Only(values))
            }
        }
    }

    pub fn contains(&self, namespace: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(names) => names.iter().any(|n| n == namespace),
        }
    }

    /// As the flag takes it, for messages.
    fn describe(&self) -> String {
        match self {
            Self::All => "*".to_string(),
            Self::Only(names) => {
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                listed(&names, ",")
            }
        }
    }
}

/// Characters of the operator's patterns or names a message lists.
const MAX_LISTED: usize = 80;

/// `items` joined for a message, as many as fit in `MAX_LISTED` characters (at least one, cut
/// to a short prefix), then how many more; `none` when there are none.
fn listed(items: &[&str], separator: &str) -> String {
    let Some((first, rest)) = items.split_first() else {
        return "none".to_string();
    };
    let mut out = prefix(first);
    let mut shown = 1;
    for item in rest {
        if out.len() + separator.len() + item.len() > MAX_LISTED {
            break;
        }
        out.push_str(separator);
        out.push_str(item);
        shown += 1;
    }
    if shown < items.len() {
        out.push_str(&format!(" and {} more", items.len() - shown));
    }
    out
}

/// `--own-identity-namespaces`: where Secrets may be served with kubeecr's own AWS identity.
pub const OWN_IDENTITY_FLAG: &str = "--own-identity-namespaces";

/// What this installation serves.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Roles a secret may name in `deft.com/kubeecr-role`, per namespace. Empty: none.
    pub allowed_role_arns: NamespaceRules,
    /// `account/region` patterns a Secret may name, per namespace. Empty: every registry in
    /// every namespace; otherwise a namespace no rule names gets none.
    pub allowed_registries: NamespaceRules,
    /// Namespaces whose Secrets may be served with kubeecr's own AWS identity, without a
    /// role. Elsewhere a Secret must name an allowed role.
    pub own_identity: NamespaceSet,
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
            return Err("excluded by --exclude-namespaces".to_string());
        }
        if !self.namespaces.is_empty() && !self.namespaces.iter().any(|n| n == namespace) {
            let served: Vec<&str> = self.namespaces.iter().map(String::as_str).collect();
            return Err(format!("--namespaces {}", listed(&served, ",")));
        }
        Ok(())
    }

    /// Checks an opted-in secret against the policy: its namespace, then its registries, then
    /// who fetches its tokens (the role it names, or kubeecr's own identity).
    pub fn admit(&self, secret: &SecretRef, binding: &EcrBinding) -> Result<(), ContractError> {
        let refuse = |problem| ContractError::new(secret, problem);
        let namespace = &secret.namespace;
        if let Err(why) = self.check_namespace(namespace) {
            return Err(refuse(Problem::NamespaceNotServed {
                namespace: namespace.clone(),
                why,
            }));
        }
        if !self.allowed_registries.is_empty()
            && let Some(registry) = binding
                .registries
                .iter()
                .find(|r| !self.allowed_registries.allows(namespace, &r.to_string()))
        {
            return Err(refuse(Problem::RegistryNotAllowed {
                registry: registry.to_string(),
                namespace: namespace.clone(),
                allowed: self.allowed_registries.describe(namespace),
            }));
        }
        match &binding.role {
            Some(role) if !self.allowed_role_arns.allows(namespace, role.as_str()) => {
                Err(refuse(Problem::RoleNotAllowed {
                    value: quoted(role.as_str()),
                    namespace: namespace.clone(),
                    allowed: self.allowed_role_arns.describe(namespace),
                }))
            }
            None if !self.own_identity.contains(namespace) => {
                Err(refuse(Problem::OwnIdentityNotAllowed {
                    namespace: namespace.clone(),
                    registry: binding.registries[0].to_string(),
                    allowed: self.own_identity.describe(),
                    roles: self.allowed_role_arns.describe(namespace),
                }))
            }
            _ => Ok(()),
        }
    }

    /// What an operator should know of these settings before relying on them: registry rules
    /// that differ by namespace do not keep teams apart while kubeecr's own identity serves
    /// several of them, since its token opens whatever that identity may pull in a region.
    pub fn warnings(&self) -> Vec<String> {
        let per_namespace = self.allowed_registries.names_namespaces();
        let own_serves_several = match &self.own_identity {
            NamespaceSet::All => true,
            NamespaceSet::Only(names) => names.len() > 1,
        };
        if per_namespace && own_serves_several {
            return vec![format!(
                "--allowed-registries differ by namespace, but kubeecr's own AWS identity serves {} namespaces (--own-identity-namespaces {}): a token it fetches opens whatever that identity may pull in the region, whichever registry a Secret names; to keep teams apart, give each a role allowed only in its namespace (--allowed-role-arns) and set --own-identity-namespaces",
                if self.own_identity == NamespaceSet::All {
                    "all"
                } else {
                    "several"
                },
                self.own_identity.describe()
            )];
        }
        Vec::new()
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
        binding_of(
            &SecretRef::new("x", "y"),
            &crate::contract::marks::Marks::of_annotations(&a),
            &Regions::default(),
        )
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
        assert!(msg.contains("allows here (none)"), "{msg}");

        let policy = Policy {
            allowed_role_arns: NamespaceRules::new(
                ROLE_FLAG,
                ["team-a=arn:aws:iam::123456789012:role/ecr-*"],
            ),
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
        assert!(msg.contains("allows here (none)"), "{msg}");
        let nested = binding(
            "123456789012/us-west-2",
            Some("arn:aws:iam::123456789012:role/ecr-x/admin"),
        );
        assert!(policy.admit(&secret, &nested).is_err());
        // Every namespace only when written so.
        let everywhere = Policy {
            allowed_role_arns: NamespaceRules::new(
                ROLE_FLAG,
                ["*=arn:aws:iam::123456789012:role/ecr-*"],
            ),
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
        let plain =
            NamespaceRules::parse(ROLE_FLAG, ["arn:aws:iam::123456789012:role/ecr-*"]).unwrap_err();
        assert!(
            plain.contains("team-a=arn:aws:iam::123456789012:role/ecr-*"),
            "{plain}"
        );
        assert!(
            plain.contains("*=arn:aws:iam::123456789012:role/ecr-*"),
            "{plain}"
        );
        assert!(NamespaceRules::parse(ROLE_FLAG, ["=arn:aws:iam::1:role/x"]).is_err());
        assert!(
            NamespaceRules::parse(ROLE_FLAG, ["team-a=role/[x"]).is_err(),
            "an unclosed class"
        );
        // A role name may hold `=`: only the first one splits.
        let rules = NamespaceRules::new(ROLE_FLAG, ["team-a=arn:aws:iam::1:role/a=b"]);
        assert!(rules.allows("team-a", "arn:aws:iam::1:role/a=b"));
    }

    #[test]
    fn registries_and_namespaces_are_scoped() {
        let secret = SecretRef::new("team-a", "pull");
        let policy = Policy {
            allowed_registries: NamespaceRules::new(
                REGISTRY_FLAG,
                ["*=123456789012/*", "*=*/eu-central-1"],
            ),
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
        assert!(
            msg.starts_with("team-c/pull: this namespace is not served")
                && msg.contains("--namespaces team-a,team-b"),
            "{msg}"
        );
    }

    /// The finding: a Secret in team-b naming team A's registry, with no role, was filled
    /// with kubeecr's own identity. Per-namespace rules refuse it, and say where to change
    /// what.
    #[test]
    fn a_team_cannot_name_another_teams_registry() {
        let team_a = "111111111111/us-west-2";
        let policy = Policy {
            allowed_registries: NamespaceRules::new(
                REGISTRY_FLAG,
                ["team-a=111111111111/*", "team-b=222222222222/*"],
            ),
            ..Policy::default()
        };
        assert!(
            policy
                .admit(&SecretRef::new("team-a", "pull"), &binding(team_a, None))
                .is_ok()
        );
        let msg = policy
            .admit(&SecretRef::new("team-b", "pull"), &binding(team_a, None))
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            "team-b/pull: deft.com/kubeecr: registry 111111111111/us-west-2 is not allowed in this namespace; use one that --allowed-registries allows here (222222222222/*), or ask kubeecr's operator"
        );
        // Once a rule is set, a namespace no rule names gets nothing.
        let msg = policy
            .admit(&SecretRef::new("team-c", "pull"), &binding(team_a, None))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("in this namespace; use one that --allowed-registries allows here (none)"),
            "{msg}"
        );
        // A rule for every namespace is written `*=`.
        let everywhere = Policy {
            allowed_registries: NamespaceRules::new(REGISTRY_FLAG, ["*=111111111111/*"]),
            ..Policy::default()
        };
        assert!(
            everywhere
                .admit(&SecretRef::new("team-c", "pull"), &binding(team_a, None))
                .is_ok()
        );
        // No rule: every registry, as before.
        assert!(
            Policy::default()
                .admit(&SecretRef::new("team-c", "pull"), &binding(team_a, None))
                .is_ok()
        );
    }

    /// Where kubeecr's own identity is not allowed, a Secret must name a role the namespace
    /// may use; the registry rules still apply to it.
    #[test]
    fn own_identity_serves_only_the_namespaces_named() {
        let role = "arn:aws:iam::222222222222:role/ecr-team-b";
        let policy = Policy {
            own_identity: NamespaceSet::parse(OWN_IDENTITY_FLAG, ["platform"]).unwrap(),
            allowed_role_arns: NamespaceRules::new(ROLE_FLAG, [format!("team-b={role}")]),
            allowed_registries: NamespaceRules::new(
                REGISTRY_FLAG,
                ["team-b=222222222222/*", "platform=*/*"],
            ),
            ..Policy::default()
        };
        let team_b = SecretRef::new("team-b", "pull");
        let msg = policy
            .admit(&team_b, &binding("222222222222/us-west-2", None))
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            "team-b/pull: deft.com/kubeecr: 222222222222/us-west-2 needs a role, since kubeecr's own AWS identity does not serve this namespace (--own-identity-namespaces); name one in deft.com/kubeecr-role that --allowed-role-arns allows here (arn:aws:iam::222222222222:role/ecr-team-b)"
        );
        assert!(
            policy
                .admit(&team_b, &binding("222222222222/us-west-2", Some(role)))
                .is_ok()
        );
        let msg = policy
            .admit(&team_b, &binding("111111111111/us-west-2", Some(role)))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("registry 111111111111/us-west-2 is not allowed in this namespace"),
            "{msg}"
        );
        assert!(
            policy
                .admit(
                    &SecretRef::new("platform", "p"),
                    &binding("111111111111/us-west-2", None)
                )
                .is_ok()
        );
        let none = Policy {
            own_identity: NamespaceSet::parse(OWN_IDENTITY_FLAG, ["none"]).unwrap(),
            ..Policy::default()
        };
        let msg = none
            .admit(
                &SecretRef::new("platform", "p"),
                &binding("111111111111/us-west-2", None),
            )
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("does not serve this namespace (--own-identity-namespaces)"),
            "{msg}"
        );
    }

    #[test]
    fn namespace_sets_are_names_star_or_none() {
        assert_eq!(
            NamespaceSet::parse(OWN_IDENTITY_FLAG, Vec::<String>::new()).unwrap(),
            NamespaceSet::All
        );
        assert_eq!(
            NamespaceSet::parse(OWN_IDENTITY_FLAG, ["*"]).unwrap(),
            NamespaceSet::All
        );
        assert_eq!(
            NamespaceSet::parse(OWN_IDENTITY_FLAG, ["none"]).unwrap(),
            NamespaceSet::Only(vec![])
        );
        assert_eq!(
            NamespaceSet::parse(OWN_IDENTITY_FLAG, ["a", " b "]).unwrap(),
            NamespaceSet::Only(vec!["a".into(), "b".into()])
        );
        let e = NamespaceSet::parse(OWN_IDENTITY_FLAG, ["a", "*"]).unwrap_err();
        assert!(e.contains("stand alone"), "{e}");
        let e = NamespaceSet::parse(OWN_IDENTITY_FLAG, ["Team"]).unwrap_err();
        assert!(
            e.starts_with("--own-identity-namespaces \"Team\" is not a namespace name"),
            "{e}"
        );
    }

    /// Today's cluster-wide registry patterns are refused with the new form in the message.
    #[test]
    fn registry_rules_name_their_namespace_and_an_account_region() {
        let e = NamespaceRules::parse(REGISTRY_FLAG, ["123456789012/*"]).unwrap_err();
        assert_eq!(
            e,
            "--allowed-registries \"123456789012/*\": name the namespace it is for, e.g. team-a=123456789012/* (*=123456789012/* would allow it in every namespace)"
        );
        let e = NamespaceRules::parse(REGISTRY_FLAG, ["team-a=123456789012"]).unwrap_err();
        assert!(
            e.contains("would match nothing; write an account/region form"),
            "{e}"
        );
    }

    /// Registry rules per namespace do not keep teams apart while kubeecr's own identity
    /// serves several of them: said at start.
    #[test]
    fn registry_rules_without_per_team_identities_are_warned_of() {
        let per_team = NamespaceRules::new(
            REGISTRY_FLAG,
            ["team-a=111111111111/*", "team-b=222222222222/*"],
        );
        let warned = Policy {
            allowed_registries: per_team.clone(),
            ..Policy::default()
        };
        let w = warned.warnings();
        assert_eq!(w.len(), 1);
        assert!(
            w[0].contains("serves all namespaces (--own-identity-namespaces *)"),
            "{}",
            w[0]
        );
        let apart = Policy {
            allowed_registries: per_team,
            own_identity: NamespaceSet::parse(OWN_IDENTITY_FLAG, ["none"]).unwrap(),
            ..Policy::default()
        };
        assert!(apart.warnings().is_empty());
        let everywhere = Policy {
            allowed_registries: NamespaceRules::new(REGISTRY_FLAG, ["*=111111111111/*"]),
            ..Policy::default()
        };
        assert!(everywhere.warnings().is_empty());
    }

    #[test]
    fn long_rule_lists_are_cut_in_messages() {
        let rules =
            NamespaceRules::new(REGISTRY_FLAG, (1..=9).map(|i| format!("team-a={i:012}/*")));
        assert_eq!(
            rules.describe("team-a"),
            "000000000001/*, 000000000002/*, 000000000003/*, 000000000004/*, 000000000005/* and 4 more"
        );
    }
}
