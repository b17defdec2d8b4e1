//! RBAC as kube-apiserver's authorizer applies it, for the double: Roles, ClusterRoles and
//! their bindings installed with `Rbac::install`, each request of an impersonated user
//! (a kubeconfig's `as:`) allowed only when a rule bound to that user, one of its groups or
//! its ServiceAccount grants the verb on the API group, resource and, where the rule names
//! them, the object's name. A RoleBinding grants in its own namespace only.
//!
//! Until a test installs RBAC, and for requests that impersonate no one (the tests' own
//! administrator), every request is allowed: the double trusts its clients. Non-resource
//! paths (discovery, `/version`) are always allowed, as `system:discovery` allows them.

use std::sync::RwLock;

use serde_json::Value;

/// What a request asks to do, in RBAC's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    pub user: String,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: String,
    /// The API group: empty for the core group.
    pub group: String,
    pub resource: String,
    /// None for a cluster-wide request.
    pub namespace: Option<String>,
    /// The object named in the path, if any.
    pub name: Option<String>,
}

impl Attributes {
    /// The attributes of a request to the API (`/api/v1/...`, `/apis/g/v/...`) made as `user`;
    /// `None` for any other path.
    pub fn of_request(user: &str, method: &http::Method, path: &str, query: &str) -> Option<Self> {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, rest) = match parts.as_slice() {
            ["api", _version, rest @ ..] => ("", rest),
            ["apis", group, _version, rest @ ..] => (*group, rest),
            _ => return None,
        };
        let (namespace, resource, name) = match rest {
            ["namespaces", ns, resource] => (Some(*ns), *resource, None),
            ["namespaces", ns, resource, name] => (Some(*ns), *resource, Some(*name)),
            [resource] => (None, *resource, None),
            [resource, name] => (None, *resource, Some(*name)),
            _ => return None,
        };
        let watch = query
            .split('&')
            .any(|kv| kv == "watch=true" || kv == "watch=1");
        let verb = match (method.as_str(), name.is_some()) {
            ("GET", true) => "get",
            ("GET", false) if watch => "watch",
            ("GET", false) => "list",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", true) => "delete",
            ("DELETE", false) => "deletecollection",
            _ => return None,
        };
        Some(Self {
            user: user.to_string(),
            verb: verb.to_string(),
            group: group.to_string(),
            resource: resource.to_string(),
            namespace: namespace.map(str::to_string),
            name: name.map(str::to_string),
        })
    }

    /// kube-apiserver's message for a request it forbids.
    pub fn forbidden_message(&self) -> String {
        let object = match &self.name {
            Some(name) => format!("{} \"{name}\"", self.qualified()),
            None => self.qualified(),
        };
        let scope = match &self.namespace {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".to_string(),
        };
        format!(
            "{object} is forbidden: User \"{}\" cannot {} resource \"{}\" in API group \"{}\" {scope}",
            self.user, self.verb, self.resource, self.group
        )
    }

    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    /// The groups kube-apiserver puts a user in: a ServiceAccount's, and everyone's.
    fn groups(&self) -> Vec<String> {
        let mut groups = vec!["system:authenticated".to_string()];
        if let Some(rest) = self.user.strip_prefix("system:serviceaccount:")
            && let Some((ns, _)) = rest.split_once(':')
        {
            groups.push("system:serviceaccounts".to_string());
            groups.push(format!("system:serviceaccounts:{ns}"));
        }
        groups
    }
}

#[derive(Debug, Clone)]
struct Rule {
    api_groups: Vec<String>,
    resources: Vec<String>,
    verbs: Vec<String>,
    resource_names: Vec<String>,
}

impl Rule {
    fn grants(&self, a: &Attributes) -> bool {
        let any = |list: &[String], value: &str| list.iter().any(|v| v == "*" || v == value);
        any(&self.api_groups, &a.group)
            && any(&self.resources, &a.resource)
            && any(&self.verbs, &a.verb)
            // A rule naming objects grants nothing on a request that names none (list,
            // watch, create).
            && (self.resource_names.is_empty()
                || a.name.as_ref().is_some_and(|n| self.resource_names.contains(n)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Subject {
    User(String),
    Group(String),
    ServiceAccount { namespace: String, name: String },
}

impl Subject {
    fn matches(&self, a: &Attributes) -> bool {
        match self {
            Self::User(name) => *name == a.user,
            Self::Group(group) => a.groups().contains(group),
            Self::ServiceAccount { namespace, name } => {
                a.user == format!("system:serviceaccount:{namespace}:{name}")
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Binding {
    /// The RoleBinding's namespace; `None` for a ClusterRoleBinding.
    namespace: Option<String>,
    /// `Role` (in the binding's namespace) or `ClusterRole`.
    role_kind: String,
    role_name: String,
    subjects: Vec<Subject>,
}

#[derive(Debug, Clone)]
struct Role {
    /// `None` for a ClusterRole.
    namespace: Option<String>,
    name: String,
    rules: Vec<Rule>,
}

#[derive(Default)]
struct State {
    roles: Vec<Role>,
    bindings: Vec<Binding>,
}

#[derive(Default)]
pub struct Rbac {
    state: RwLock<Option<State>>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

impl Rbac {
    /// Installs the Roles, ClusterRoles, RoleBindings and ClusterRoleBindings among `docs`
    /// (objects as JSON; other kinds are left out) and enforces RBAC from then on.
    pub fn install(&self, docs: &[Value]) {
        let mut guard = self.state.write().unwrap();
        let state = guard.get_or_insert_with(State::default);
        for doc in docs {
            let namespace = doc["metadata"]["namespace"].as_str().map(str::to_string);
            let name = text(&doc["metadata"]["name"]);
            match doc["kind"].as_str().unwrap_or_default() {
                kind @ ("Role" | "ClusterRole") => {
                    let rules = doc["rules"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|r| Rule {
                            api_groups: strings(&r["apiGroups"]),
                            resources: strings(&r["resources"]),
                            verbs: strings(&r["verbs"]),
                            resource_names: strings(&r["resourceNames"]),
                        })
                        .collect();
                    let namespace = (kind == "Role").then(|| namespace.unwrap_or_default());
                    state.roles.push(Role {
                        namespace,
                        name,
                        rules,
                    });
                }
                kind @ ("RoleBinding" | "ClusterRoleBinding") => {
                    let subjects = doc["subjects"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|s| {
                            let name = text(&s["name"]);
                            match s["kind"].as_str()? {
                                "User" => Some(Subject::User(name)),
                                "Group" => Some(Subject::Group(name)),
                                "ServiceAccount" => Some(Subject::ServiceAccount {
                                    namespace: text(&s["namespace"]),
                                    name,
                                }),
                                _ => None,
                            }
                        })
                        .collect();
                    let namespace = (kind == "RoleBinding").then(|| namespace.unwrap_or_default());
                    state.bindings.push(Binding {
                        namespace,
                        role_kind: text(&doc["roleRef"]["kind"]),
                        role_name: text(&doc["roleRef"]["name"]),
                        subjects,
                    });
                }
                _ => {}
            }
        }
    }

    /// Whether RBAC has been installed, and so is enforced.
    pub fn is_enforced(&self) -> bool {
        self.state.read().unwrap().is_some()
    }

    /// Whether the installed RBAC lets `a.user` do what `a` asks (`kubectl auth can-i`).
    pub fn allows(&self, a: &Attributes) -> bool {
        let guard = self.state.read().unwrap();
        let Some(state) = guard.as_ref() else {
            return true;
        };
        state.bindings.iter().any(|b| {
            // A RoleBinding grants in its namespace only.
            let in_scope = match &b.namespace {
                None => true,
                Some(ns) => a.namespace.as_ref() == Some(ns),
            };
            in_scope
                && b.subjects.iter().any(|s| s.matches(a))
                && state.roles.iter().any(|r| {
                    let same_role = r.name == b.role_name
                        && match (b.role_kind.as_str(), &r.namespace) {
                            ("ClusterRole", None) => true,
                            ("Role", Some(ns)) => b.namespace.as_ref() == Some(ns),
                            _ => false,
                        };
                    same_role && r.rules.iter().any(|rule| rule.grants(a))
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn install() -> Rbac {
        let rbac = Rbac::default();
        rbac.install(&[
            json!({"kind": "ClusterRole", "metadata": {"name": "secrets"},
                "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch", "patch"]}]}),
            json!({"kind": "ClusterRoleBinding", "metadata": {"name": "secrets"},
                "roleRef": {"kind": "ClusterRole", "name": "secrets"},
                "subjects": [{"kind": "ServiceAccount", "name": "sa", "namespace": "home"}]}),
            json!({"kind": "Role", "metadata": {"name": "lease", "namespace": "home"},
                "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
                          {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["mine"], "verbs": ["get", "update"]}]}),
            json!({"kind": "RoleBinding", "metadata": {"name": "lease", "namespace": "home"},
                "roleRef": {"kind": "Role", "name": "lease"},
                "subjects": [{"kind": "ServiceAccount", "name": "sa", "namespace": "home"}]}),
        ]);
        rbac
    }

    fn can(rbac: &Rbac, user: &str, method: &str, path: &str, query: &str) -> bool {
        let method = http::Method::from_bytes(method.as_bytes()).unwrap();
        rbac.allows(&Attributes::of_request(user, &method, path, query).unwrap())
    }

    #[test]
    fn rules_bindings_scopes_and_names() {
        let rbac = install();
        let sa = "system:serviceaccount:home:sa";
        assert!(can(&rbac, sa, "GET", "/api/v1/secrets", "watch=true"));
        assert!(can(
            &rbac,
            sa,
            "PATCH",
            "/api/v1/namespaces/x/secrets/s",
            ""
        ));
        assert!(!can(&rbac, sa, "POST", "/api/v1/namespaces/x/secrets", ""));
        assert!(!can(
            &rbac,
            sa,
            "DELETE",
            "/api/v1/namespaces/x/secrets/s",
            ""
        ));
        assert!(!can(&rbac, "someone", "GET", "/api/v1/secrets", ""));
        let leases = "/apis/coordination.k8s.io/v1/namespaces";
        assert!(can(&rbac, sa, "POST", &format!("{leases}/home/leases"), ""));
        assert!(can(
            &rbac,
            sa,
            "PUT",
            &format!("{leases}/home/leases/mine"),
            ""
        ));
        assert!(!can(
            &rbac,
            sa,
            "PUT",
            &format!("{leases}/home/leases/other"),
            ""
        ));
        assert!(
            !can(&rbac, sa, "POST", &format!("{leases}/away/leases"), ""),
            "a RoleBinding's namespace only"
        );
        assert!(
            !can(&rbac, sa, "GET", &format!("{leases}/home/leases"), ""),
            "list names no object"
        );
    }

    #[test]
    fn the_message_is_kube_apiservers() {
        let a = Attributes::of_request(
            "system:serviceaccount:home:sa",
            &http::Method::PATCH,
            "/apis/events.k8s.io/v1/namespaces/x/events/e",
            "",
        )
        .unwrap();
        assert_eq!(
            a.forbidden_message(),
            "events.events.k8s.io \"e\" is forbidden: User \"system:serviceaccount:home:sa\" cannot patch resource \"events\" in API group \"events.k8s.io\" in the namespace \"x\""
        );
        assert!(Attributes::of_request("u", &http::Method::GET, "/version", "").is_none());
        assert!(Rbac::default().allows(&a), "not enforced until installed");
    }
}
