//! The shapes of Secret kubeecr fills, and where each keeps its credentials:
//! - `kubernetes.io/dockerconfigjson`: an `auths` entry per host in `.dockerconfigjson`, for
//!   the kubelet and every Docker-config reader;
//! - `kubernetes.io/basic-auth`: `username` and `password`, for Kargo, Tekton and others;
//! - an Argo CD repository or credential template (`Opaque`, label
//!   `argocd.argoproj.io/secret-type: repository` or `repo-creds`): `username` and `password`
//!   beside its `url`, `type`, `name`, `project` and `enableOCI`, which stay as they are.
//!
//! The last two hold one username and one password, so they serve one host. Pure.

use std::fmt;

pub const DOCKER_CONFIG_JSON_TYPE: &str = "kubernetes.io/dockerconfigjson";
pub const BASIC_AUTH_TYPE: &str = "kubernetes.io/basic-auth";
/// Argo CD's label for the Secrets it reads repositories from.
pub const ARGOCD_LABEL: &str = "argocd.argoproj.io/secret-type";
pub const USERNAME_KEY: &str = "username";
pub const PASSWORD_KEY: &str = "password";
/// An Argo CD repository's location.
pub const URL_KEY: &str = "url";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    DockerConfig,
    BasicAuth,
    ArgoCd,
}

impl Shape {
    /// The shape of a Secret of this type and Argo CD label; `None`: one kubeecr does not fill.
    /// The API server defaults a missing type to `Opaque`.
    pub fn of(type_: Option<&str>, argocd: Option<&str>) -> Option<Self> {
        match type_.unwrap_or("Opaque") {
            DOCKER_CONFIG_JSON_TYPE => Some(Self::DockerConfig),
            BASIC_AUTH_TYPE => Some(Self::BasicAuth),
            "Opaque" if matches!(argocd, Some("repository" | "repo-creds")) => Some(Self::ArgoCd),
            _ => None,
        }
    }

    /// It holds one username and password, so it serves one host.
    pub fn holds_one_host(self) -> bool {
        self != Self::DockerConfig
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::DockerConfig => "a dockerconfigjson Secret",
            Self::BasicAuth => "a basic-auth Secret",
            Self::ArgoCd => "an Argo CD repository Secret",
        })
    }
}

/// Whether an Argo CD `url` names `host`: the host itself, or a repository under it, with or
/// without `oci://` (Argo CD takes OCI Helm repositories either way).
pub fn url_names(url: &str, host: &str) -> bool {
    let url = url.trim();
    let rest = url.strip_prefix("oci://").unwrap_or(url);
    match rest.strip_prefix(host) {
        Some(path) => path.is_empty() || path.starts_with('/'),
        None => false,
    }
}

/// The fingerprint of a username and password, as `dockerconfig::fingerprint` is of a config
/// entry (whose `auth` they have not): it says whether they are what kubeecr wrote, without
/// keeping them.
pub fn fingerprint(username: &[u8], password: &[u8]) -> String {
    crate::contract::dockerconfig::fingerprint_of(&[
        username.to_vec(),
        password.to_vec(),
        Vec::new(),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shape_follows_the_type_and_argo_cds_label() {
        assert_eq!(
            Shape::of(Some(DOCKER_CONFIG_JSON_TYPE), None),
            Some(Shape::DockerConfig)
        );
        assert_eq!(
            Shape::of(Some(BASIC_AUTH_TYPE), Some("repository")),
            Some(Shape::BasicAuth)
        );
        assert_eq!(Shape::of(None, Some("repo-creds")), Some(Shape::ArgoCd));
        assert_eq!(
            Shape::of(Some("Opaque"), Some("repository")),
            Some(Shape::ArgoCd)
        );
        assert_eq!(Shape::of(Some("Opaque"), Some("cluster")), None);
        assert_eq!(Shape::of(Some("Opaque"), None), None);
        assert_eq!(
            Shape::of(Some("kubernetes.io/tls"), Some("repository")),
            None
        );
    }

    #[test]
    fn an_argo_url_names_the_host_or_a_repository_under_it() {
        let host = "123456789012.dkr.ecr.us-west-2.amazonaws.com";
        for url in [
            host.to_string(),
            format!("oci://{host}"),
            format!("{host}/charts/app"),
            format!(" oci://{host}/charts "),
        ] {
            assert!(url_names(&url, host), "{url}");
        }
        for url in [
            format!("{host}.evil.example"),
            format!("https://{host}"),
            "quay.io/charts".to_string(),
            format!("oci://210987654321.dkr.ecr.us-west-2.amazonaws.com/{host}"),
        ] {
            assert!(!url_names(&url, host), "{url}");
        }
    }

    #[test]
    fn fingerprints_tell_credentials_apart() {
        assert_eq!(fingerprint(b"AWS", b"a"), fingerprint(b"AWS", b"a"));
        assert_ne!(fingerprint(b"AWS", b"a"), fingerprint(b"AWS", b"b"));
        assert_ne!(fingerprint(b"AW", b"Sa"), fingerprint(b"AWS", b"a"));
    }
}
