//! A Secret as kubeecr keeps it: what it reads and writes, in a size that does not depend on
//! the Secret's tokens or its other keys.
//!
//! Pure. Of `.dockerconfigjson` it keeps the fingerprint of each of its own hosts'
//! credentials, and the rest of the config without them (usually `{"auths":{"<host>":{}}}`),
//! into which a merge writes the same bytes as into the whole. So deciding and writing need no
//! read, and ten thousand Secrets with real 2,700-character tokens cost what ten thousand
//! with none cost.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::Secret;

use crate::contract::annotation::{EcrBinding, SecretRef, binding_of};
use crate::contract::dockerconfig::{self, Credentials, DockerConfigError};
use crate::contract::marks::Marks;
use crate::contract::partition::Regions;
use crate::contract::shape::{self, PASSWORD_KEY, Shape, URL_KEY, USERNAME_KEY, UrlTarget};

/// The largest rest-of-config kept: a few dozen foreign registries. A bigger one is read
/// (GET) before it is written, so what the refresher keeps of a Secret stays small whatever
/// a tenant puts in it.
pub const MAX_KEPT_CONFIG: usize = 8 * 1024;

/// What is kept of `.dockerconfigjson`.
#[derive(Clone, PartialEq, Eq)]
pub enum KeptConfig {
    /// The Secret has none.
    Absent,
    Kept {
        /// The credentials of the Secret's ECR hosts.
        hosts: KeptHosts,
        /// The config without those credentials; `None` when that is only the hosts' bare
        /// entries, into which a merge writes what it writes into no config at all.
        rest: Option<Box<[u8]>>,
    },
    /// Not a config kubeecr can merge into; why.
    Invalid(DockerConfigError),
    /// Not kept: too large, or the Secret is not one kubeecr fills. Read before use.
    NotKept,
    /// The whole config, as a read (GET) gave it, for the one decision and write at hand;
    /// never what the refresher keeps.
    Whole(Box<[u8]>),
}

/// The credentials of a Secret's ECR hosts, as fingerprints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeptHosts {
    /// Every host holds exactly what `deft.com/kubeecr-fingerprints` records: as kubeecr
    /// wrote them. The usual case, which then costs nothing beyond the annotation.
    AsRecorded,
    /// Each host that holds credentials, with their fingerprint.
    Listed(Box<[(Box<str>, Box<str>)]>),
}

impl fmt::Debug for KeptConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Absent => f.write_str("Absent"),
            Self::Kept { hosts, rest } => f
                .debug_struct("Kept")
                .field("hosts", hosts)
                .field(
                    "rest",
                    &format_args!("[{} bytes]", rest.as_ref().map_or(0, |r| r.len())),
                )
                .finish(),
            Self::Invalid(e) => f.debug_tuple("Invalid").field(e).finish(),
            Self::NotKept => f.write_str("NotKept"),
            Self::Whole(config) => write!(f, "Whole([{} bytes redacted])", config.len()),
        }
    }
}

impl KeptConfig {
    /// What to keep of `config`, for the `registries` of the Secret's binding and their
    /// hosts (`None`: the Secret is not one kubeecr fills, so nothing of it is needed), with
    /// the fingerprints it records.
    pub fn of(config: Option<&[u8]>, own: Option<&[(String, String)]>, marks: &Marks) -> Self {
        let Some(config) = config else {
            return Self::Absent;
        };
        let Some(own) = own else {
            return Self::NotKept;
        };
        let present = match dockerconfig::credentials(Some(config)) {
            Ok(present) => present,
            Err(e) => return Self::Invalid(e),
        };
        let hosts: Vec<&str> = own.iter().map(|(_, host)| host.as_str()).collect();
        let rest = match dockerconfig::strip(config, &hosts) {
            Ok(rest) => rest,
            Err(e) => return Self::Invalid(e),
        };
        if rest.len() > MAX_KEPT_CONFIG {
            return Self::NotKept;
        }
        let recorded = recorded_fingerprints(marks);
        let as_recorded = own.iter().all(|(registry, host)| {
            present.get(host).map(String::as_str) == recorded.get(registry.as_str()).copied()
        });
        let hosts = if as_recorded {
            KeptHosts::AsRecorded
        } else {
            KeptHosts::Listed(
                own.iter()
                    .filter_map(|(_, h)| Some((h.as_str().into(), present.get(h)?.as_str().into())))
                    .collect(),
            )
        };
        let bare = dockerconfig::bare_entries(&hosts_of(own));
        let rest = (rest != bare).then(|| rest.into_boxed_slice());
        Self::Kept { hosts, rest }
    }

    /// What to keep of a shape that holds one username and password: the fingerprint
    /// (`basic`) of what its one host holds.
    pub fn of_basic(basic: Option<&str>, own: &[(String, String)], marks: &Marks) -> Self {
        let Some(fingerprint) = basic else {
            return Self::Absent;
        };
        let recorded = recorded_fingerprints(marks);
        let as_recorded = own
            .iter()
            .all(|(key, _)| recorded.get(key.as_str()).copied() == Some(fingerprint));
        let hosts = if as_recorded {
            KeptHosts::AsRecorded
        } else {
            KeptHosts::Listed(
                own.iter()
                    .map(|(_, host)| (host.as_str().into(), fingerprint.into()))
                    .collect(),
            )
        };
        Self::Kept { hosts, rest: None }
    }

    /// As the contract reads it.
    pub fn view(&self) -> ConfigView<'_> {
        match self {
            Self::Whole(config) => ConfigView::Whole(Some(config)),
            kept => ConfigView::Kept(kept),
        }
    }
}

fn hosts_of(own: &[(String, String)]) -> Vec<&str> {
    own.iter().map(|(_, host)| host.as_str()).collect()
}

/// `deft.com/kubeecr-fingerprints` as `<account>/<region>` → fingerprint; malformed pairs
/// are left out, so they match nothing.
pub fn recorded_fingerprints(marks: &Marks) -> BTreeMap<&str, &str> {
    marks
        .fingerprints()
        .unwrap_or("")
        .split(',')
        .filter_map(|pair| pair.trim().split_once('='))
        .collect()
}

/// A Secret's `.dockerconfigjson` as the contract reads it: whole (the webhook's object, a
/// Secret read with GET) or as kept.
#[derive(Debug, Clone, Copy)]
pub enum ConfigView<'a> {
    Whole(Option<&'a [u8]>),
    Kept(&'a KeptConfig),
}

impl<'a> ConfigView<'a> {
    /// The credentials of each host (of the `binding`'s hosts, when kept), as
    /// `dockerconfig::credentials` gives them; `marks` are the Secret's own.
    pub fn credentials(
        &self,
        binding: &EcrBinding,
        marks: &Marks,
    ) -> Result<Credentials, DockerConfigError> {
        match self {
            Self::Whole(config) => dockerconfig::credentials(*config),
            Self::Kept(KeptConfig::Kept {
                hosts: KeptHosts::AsRecorded,
                ..
            }) => {
                let recorded = recorded_fingerprints(marks);
                Ok(binding
                    .targets()
                    .filter_map(|t| Some((t.host(), recorded.get(t.key().as_str())?.to_string())))
                    .collect())
            }
            Self::Kept(KeptConfig::Kept {
                hosts: KeptHosts::Listed(hosts),
                ..
            }) => Ok(hosts
                .iter()
                .map(|(h, fp)| (h.to_string(), fp.to_string()))
                .collect()),
            Self::Kept(KeptConfig::Invalid(e)) => Err(e.clone()),
            Self::Kept(KeptConfig::Whole(config)) => dockerconfig::credentials(Some(config)),
            // Absent has none; one not kept looks like none, so it is read before a write.
            Self::Kept(KeptConfig::Absent | KeptConfig::NotKept) => Ok(Credentials::new()),
        }
    }

    /// The bytes a merge writes into: the same result as the whole config.
    pub fn merge_base(self) -> Option<&'a [u8]> {
        match self {
            Self::Whole(config) => config,
            Self::Kept(KeptConfig::Kept { rest, .. }) => rest.as_deref(),
            Self::Kept(KeptConfig::Whole(config)) => Some(config),
            Self::Kept(_) => None,
        }
    }
}

/// A Secret as kubeecr keeps it. Its `Debug` holds no credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptSecret {
    pub resource_version: Option<Box<str>>,
    pub type_: Option<Box<str>>,
    pub immutable: bool,
    pub marks: Marks,
    pub config: KeptConfig,
    /// Where an Argo CD Secret's `url` points (kept for that shape only).
    pub url: Option<UrlTarget>,
}

/// What a Secret's data holds, as far as kubeecr reads it: `.dockerconfigjson`, the
/// fingerprint of `username` and `password` (never the password itself), and Argo CD's `url`.
/// Its `Debug` holds no credential.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Stored {
    pub dockerconfigjson: Option<Vec<u8>>,
    /// `shape::fingerprint` of `username` and `password`, when there is a password.
    pub basic: Option<String>,
    pub url: Option<UrlTarget>,
}

impl fmt::Debug for Stored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stored")
            .field(
                "dockerconfigjson",
                &self
                    .dockerconfigjson
                    .as_ref()
                    .map(|c| format!("[{} bytes redacted]", c.len())),
            )
            .field("basic", &self.basic)
            .field("url", &self.url)
            .finish()
    }
}

impl Stored {
    /// From a Secret's data keys, as the API server holds them.
    pub fn of(
        dockerconfigjson: Option<&[u8]>,
        username: Option<&[u8]>,
        password: Option<&[u8]>,
        url: Option<&[u8]>,
    ) -> Self {
        Self {
            dockerconfigjson: dockerconfigjson.map(<[u8]>::to_vec),
            basic: password.map(|p| shape::fingerprint(username.unwrap_or_default(), p)),
            url: url
                .and_then(|u| std::str::from_utf8(u).ok())
                .map(UrlTarget::of),
        }
    }

    pub fn of_secret(secret: &Secret) -> Self {
        let key = |k: &str| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(k))
                .map(|b| b.0.as_slice())
        };
        Self::of(
            dockerconfig::of_secret(secret),
            key(USERNAME_KEY),
            key(PASSWORD_KEY),
            key(URL_KEY),
        )
    }
}

/// The registries a Secret asks for, with their hosts, and its shape, when it is one kubeecr
/// fills: opted in, well-formed, of a shape kubeecr fills.
fn own_hosts(
    marks: &Marks,
    type_: Option<&str>,
    regions: &Regions,
) -> Option<(Shape, Vec<(String, String)>)> {
    let shape = Shape::of(type_, marks.argocd())?;
    let binding = binding_of(&SecretRef::new("", ""), marks, regions).ok()??;
    Some((
        shape,
        binding.targets().map(|t| (t.key(), t.host())).collect(),
    ))
}

impl KeptSecret {
    /// From its parts; `.dockerconfigjson` is dropped once kept.
    pub fn new(
        resource_version: Option<&str>,
        type_: Option<&str>,
        immutable: bool,
        marks: Marks,
        stored: Stored,
        regions: &Regions,
    ) -> Self {
        Self::of_parts(
            resource_version,
            type_,
            immutable,
            marks,
            stored,
            regions,
            false,
        )
    }

    /// A Secret just read (GET), for one decision and write: its config is taken whole,
    /// however large, so that a write merges into all of it.
    pub fn read(
        resource_version: Option<&str>,
        type_: Option<&str>,
        immutable: bool,
        marks: Marks,
        stored: Stored,
        regions: &Regions,
    ) -> Self {
        Self::of_parts(
            resource_version,
            type_,
            immutable,
            marks,
            stored,
            regions,
            true,
        )
    }

    /// `whole`: keep `.dockerconfigjson` as read, for one write; otherwise only its
    /// fingerprints and the rest of it. A shape of one username and password keeps only their
    /// fingerprint either way, and only an Argo CD Secret's url is read.
    fn of_parts(
        resource_version: Option<&str>,
        type_: Option<&str>,
        immutable: bool,
        marks: Marks,
        stored: Stored,
        regions: &Regions,
        whole: bool,
    ) -> Self {
        let own = own_hosts(&marks, type_, regions);
        let config = match &own {
            Some((shape, own)) if shape.holds_one_host() => {
                KeptConfig::of_basic(stored.basic.as_deref(), own, &marks)
            }
            _ if whole => stored
                .dockerconfigjson
                .map_or(KeptConfig::Absent, |c| KeptConfig::Whole(c.into())),
            own => KeptConfig::of(
                stored.dockerconfigjson.as_deref(),
                own.as_ref().map(|(_, own)| own.as_slice()),
                &marks,
            ),
        };
        let argo = matches!(own, Some((Shape::ArgoCd, _)));
        Self {
            resource_version: resource_version.map(Into::into),
            type_: type_.map(Into::into),
            immutable,
            config,
            marks,
            url: stored.url.filter(|_| argo),
        }
    }

    /// A whole Secret, as `read`.
    pub fn of_secret(secret: &Secret, regions: &Regions) -> Self {
        let meta = &secret.metadata;
        Self::read(
            meta.resource_version.as_deref(),
            secret.type_.as_deref(),
            secret.immutable == Some(true),
            Marks::of(meta.labels.as_ref(), meta.annotations.as_ref()),
            Stored::of_secret(secret),
            regions,
        )
    }

    pub fn resource_version(&self) -> Option<&str> {
        self.resource_version.as_deref()
    }

    /// Whether a write can start from what is kept, without reading the Secret first.
    pub fn is_complete(&self) -> bool {
        !matches!(self.config, KeptConfig::NotKept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::annotation::{
        EXPIRES_AT_ANNOTATION, FINGERPRINTS_ANNOTATION, REGISTRIES_ANNOTATION,
    };
    use crate::contract::shape::DOCKER_CONFIG_JSON_TYPE;

    const HOST: &str = "123456789012.dkr.ecr.us-west-2.amazonaws.com";
    const REGISTRY: &str = "123456789012/us-west-2";

    fn marks(fingerprints: Option<&str>) -> Marks {
        let mut a = BTreeMap::from([(REGISTRIES_ANNOTATION.to_string(), REGISTRY.to_string())]);
        if let Some(fp) = fingerprints {
            a.insert(FINGERPRINTS_ANNOTATION.to_string(), fp.to_string());
            a.insert(
                EXPIRES_AT_ANNOTATION.to_string(),
                "2026-12-06T00:00:00Z".to_string(),
            );
        }
        Marks::of_annotations(&a)
    }

    fn kept(config: &[u8], fingerprints: Option<&str>) -> KeptSecret {
        KeptSecret::new(
            Some("1"),
            Some(DOCKER_CONFIG_JSON_TYPE),
            false,
            marks(fingerprints),
            Stored::of(Some(config), None, None, None),
            &Regions::default(),
        )
    }

    fn binding() -> EcrBinding {
        binding_of(&SecretRef::new("", ""), &marks(None), &Regions::default())
            .unwrap()
            .unwrap()
    }

    /// A config as kubeecr writes it, into `existing`, and its fingerprint annotation.
    fn written(existing: Option<&[u8]>) -> (Vec<u8>, String) {
        let password = "p".repeat(2700);
        let config = dockerconfig::merge(
            existing,
            &[dockerconfig::RegistryCredential {
                host: HOST,
                username: "AWS",
                password: &password,
            }],
        )
        .unwrap();
        let fp = dockerconfig::credentials(Some(&config)).unwrap()[HOST].clone();
        (config, format!("{REGISTRY}={fp}"))
    }

    /// What the whole config says of the own host, and what is kept says.
    fn agree(secret: &KeptSecret, config: &[u8]) {
        let whole = ConfigView::Whole(Some(config))
            .credentials(&binding(), &secret.marks)
            .unwrap();
        let kept = secret
            .config
            .view()
            .credentials(&binding(), &secret.marks)
            .unwrap();
        assert_eq!(kept.get(HOST), whole.get(HOST));
        assert_eq!(kept.len(), usize::from(whole.contains_key(HOST)));
    }

    #[test]
    fn as_kubeecr_wrote_it_costs_nothing_beyond_the_annotations() {
        let (config, fingerprints) = written(None);
        let secret = kept(&config, Some(&fingerprints));
        assert_eq!(
            secret.config,
            KeptConfig::Kept {
                hosts: KeptHosts::AsRecorded,
                rest: None
            }
        );
        agree(&secret, &config);
        assert_eq!(secret.config.view().merge_base(), None);
        let debug = format!("{secret:?}");
        assert!(!debug.contains("ppppp"), "{debug}");
    }

    #[test]
    fn foreign_entries_are_kept_without_the_token() {
        let (config, fingerprints) = written(Some(br#"{"auths":{"quay.io":{"auth":"cTp4"}}}"#));
        let secret = kept(&config, Some(&fingerprints));
        let KeptConfig::Kept { hosts, rest } = &secret.config else {
            panic!("{:?}", secret.config)
        };
        assert_eq!(*hosts, KeptHosts::AsRecorded);
        assert_eq!(
            std::str::from_utf8(rest.as_deref().unwrap()).unwrap(),
            format!(r#"{{"auths":{{"quay.io":{{"auth":"cTp4"}},"{HOST}":{{}}}}}}"#)
        );
        agree(&secret, &config);
    }

    #[test]
    fn credentials_kubeecr_did_not_write_are_listed() {
        let (config, fingerprints) = written(None);
        let edited = String::from_utf8(config)
            .unwrap()
            .replace("\"AWS\"", "\"other\"");
        let secret = kept(edited.as_bytes(), Some(&fingerprints));
        let KeptConfig::Kept {
            hosts: KeptHosts::Listed(hosts),
            ..
        } = &secret.config
        else {
            panic!("{:?}", secret.config)
        };
        assert_eq!(hosts.len(), 1);
        agree(&secret, edited.as_bytes());
        // Never filled: nothing recorded, nothing present.
        let empty = kept(br#"{"auths":{}}"#, None);
        agree(&empty, br#"{"auths":{}}"#);
    }

    #[test]
    fn what_is_not_kept_and_why() {
        assert!(
            kept(b"{not json", None)
                .config
                .view()
                .credentials(&binding(), &marks(None))
                .is_err()
        );
        let not_ours = KeptSecret::new(
            None,
            Some("Opaque"),
            false,
            marks(None),
            Stored::of(Some(b"{}"), None, None, None),
            &Regions::default(),
        );
        assert_eq!(not_ours.config, KeptConfig::NotKept);
        assert!(!not_ours.is_complete());
        let padded = format!(r#"{{"x":"{}"}}"#, " ".repeat(MAX_KEPT_CONFIG));
        assert_eq!(kept(padded.as_bytes(), None).config, KeptConfig::NotKept);
    }
}
