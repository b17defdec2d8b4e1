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
    /// The API server defaults a missing type to `Opaque`. Argo CD finds its Secrets by label
    /// whatever their type, so a labelled basic-auth Secret is an Argo CD one, `url` and all.
    pub fn of(type_: Option<&str>, argocd: Option<&str>) -> Option<Self> {
        let argo = matches!(argocd, Some("repository" | "repo-creds"));
        match type_.unwrap_or("Opaque") {
            DOCKER_CONFIG_JSON_TYPE => Some(Self::DockerConfig),
            BASIC_AUTH_TYPE | "Opaque" if argo => Some(Self::ArgoCd),
            BASIC_AUTH_TYPE => Some(Self::BasicAuth),
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

/// Where an Argo CD `url` points, as far as kubeecr checks it: never its userinfo, which may
/// hold a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlTarget {
    /// `oci`, `https`, ...; `None` when the url has none (Argo CD's Helm OCI form).
    pub scheme: Option<Box<str>>,
    /// `user@` or `user:password@` came before the host.
    pub userinfo: bool,
    /// Cut at `MAX_HOST` characters.
    pub host: Box<str>,
    /// A path follows the host.
    pub path: bool,
}

/// Longer than any registry host: a longer one names none.
const MAX_HOST: usize = 256;

impl UrlTarget {
    pub fn of(url: &str) -> Self {
        let url = url.trim();
        let (scheme, rest) = match url.split_once("://") {
            Some((scheme, rest)) => (Some(scheme.chars().take(16).collect()), rest),
            None => (None, url),
        };
        let (authority, path) = match rest.split_once('/') {
            Some((authority, path)) => (authority, !path.is_empty()),
            None => (rest, false),
        };
        let (userinfo, host) = match authority.rsplit_once('@') {
            Some((_, host)) => (true, host),
            None => (false, authority),
        };
        Self {
            scheme,
            userinfo,
            host: host.chars().take(MAX_HOST).collect(),
            path,
        }
    }

    /// The url as a refusal may show it: scheme, host and whether a path follows, never the
    /// userinfo.
    pub fn shown(&self) -> String {
        let scheme = self
            .scheme
            .as_deref()
            .map_or(String::new(), |s| format!("{s}://"));
        let path = if self.path { "/..." } else { "" };
        crate::contract::quote::quoted(&format!("{scheme}{}{path}", self.host))
    }

    /// Whether Argo CD sends this Secret's credentials to `host` and nowhere else: the url is
    /// `host`, or a repository under it, with no scheme or `oci://`. A `repo-creds` url is a
    /// prefix of the repository urls it serves, so it must name a path: `HOST` alone would
    /// also be a prefix of `HOST.elsewhere.example`.
    pub fn names(&self, host: &str, prefix: bool) -> bool {
        matches!(self.scheme.as_deref(), None | Some("oci"))
            && !self.userinfo
            && *self.host == *host
            && (self.path || !prefix)
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
            Shape::of(Some(BASIC_AUTH_TYPE), None),
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
        let names = |url: &str, prefix| UrlTarget::of(url).names(host, prefix);
        for url in [
            host.to_string(),
            format!("oci://{host}"),
            format!("{host}/charts/app"),
            format!(" oci://{host}/charts "),
        ] {
            assert!(names(&url, false), "{url}");
        }
        for url in [
            format!("{host}.evil.example"),
            format!("{host}:443"),
            format!("{host}@evil.example/x"),
            format!("https://{host}"),
            format!("oci://user:secret@{host}/x"),
            format!("oci://oci://{host}"),
            "quay.io/charts".to_string(),
            format!("oci://210987654321.dkr.ecr.us-west-2.amazonaws.com/{host}"),
            format!("{}/x", host.to_uppercase()),
        ] {
            assert!(!names(&url, false), "{url}");
        }
        // A credential template is a prefix: only with a path can it name one host alone.
        assert!(!names(host, true));
        assert!(!names(&format!("oci://{host}/"), true));
        assert!(names(&format!("{host}/charts"), true));
        // The userinfo is never kept.
        let target = UrlTarget::of(&format!("oci://me:hunter2@{host}/x"));
        assert!(!format!("{target:?}").contains("hunter2"));
    }

    #[test]
    fn a_labelled_basic_auth_secret_is_an_argo_cd_one() {
        assert_eq!(
            Shape::of(Some(BASIC_AUTH_TYPE), Some("repo-creds")),
            Some(Shape::ArgoCd)
        );
        assert_eq!(
            Shape::of(Some(BASIC_AUTH_TYPE), Some("cluster")),
            Some(Shape::BasicAuth)
        );
    }

    #[test]
    fn fingerprints_tell_credentials_apart() {
        assert_eq!(fingerprint(b"AWS", b"a"), fingerprint(b"AWS", b"a"));
        assert_ne!(fingerprint(b"AWS", b"a"), fingerprint(b"AWS", b"b"));
        assert_ne!(fingerprint(b"AW", b"Sa"), fingerprint(b"AWS", b"a"));
    }
}
