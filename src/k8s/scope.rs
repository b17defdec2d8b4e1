//! Where kubeecr lists and watches: each namespace it serves, or the whole cluster less the
//! namespaces it excludes.

use std::fmt;

use k8s_openapi::api::core::v1::Secret;
use kube::Resource;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Every namespace but the excluded ones.
    Cluster,
    Namespace(String),
}

impl Scope {
    /// Each namespace given that is not excluded, or the whole cluster when none is given.
    pub fn all(namespaces: &[String], exclude: &[String]) -> Vec<Scope> {
        if namespaces.is_empty() {
            vec![Scope::Cluster]
        } else {
            namespaces
                .iter()
                .filter(|ns| !exclude.contains(ns))
                .map(|ns| Scope::Namespace(ns.clone()))
                .collect()
        }
    }

    pub fn namespace(&self) -> Option<&str> {
        match self {
            Scope::Cluster => None,
            Scope::Namespace(ns) => Some(ns),
        }
    }

    pub fn covers(&self, namespace: &str) -> bool {
        self.namespace().is_none_or(|ns| ns == namespace)
    }

    /// The collection of Secrets in this scope.
    pub fn secrets_path(&self) -> String {
        Secret::url_path(&(), self.namespace())
    }

    /// The field selector that keeps excluded namespaces out of a cluster-wide list or watch,
    /// so that their Secrets are never read, not even as metadata.
    pub fn field_selector(&self, exclude: &[String]) -> Option<String> {
        if *self != Scope::Cluster || exclude.is_empty() {
            return None;
        }
        let terms: Vec<String> = exclude
            .iter()
            .map(|ns| format!("metadata.namespace!={ns}"))
            .collect();
        Some(terms.join(","))
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Cluster => f.write_str("all namespaces"),
            Scope::Namespace(ns) => write!(f, "namespace {ns}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_less_the_excluded_or_the_cluster() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(Scope::all(&[], &names(&["kube-system"])), [Scope::Cluster]);
        assert_eq!(
            Scope::all(&names(&["a", "b"]), &names(&["b"])),
            [Scope::Namespace("a".into())]
        );
        assert_eq!(
            Scope::Cluster
                .field_selector(&names(&["x", "y"]))
                .as_deref(),
            Some("metadata.namespace!=x,metadata.namespace!=y")
        );
        assert_eq!(
            Scope::Namespace("a".into()).field_selector(&names(&["x"])),
            None
        );
        assert!(Scope::Cluster.covers("any") && !Scope::Namespace("a".into()).covers("b"));
        assert_eq!(Scope::Namespace("a".into()).to_string(), "namespace a");
    }
}
