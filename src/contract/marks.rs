//! kubeecr's annotations and label on a Secret: all that kubeecr reads of its metadata.
//!
//! Pure. The webhook takes them from the object under review, the refresher from lists and
//! watches that decode nothing else of the metadata, so that what it keeps of a Secret does
//! not grow with the Secret's other labels and annotations.

use std::collections::BTreeMap;

/// Opts a Secret in: `<account>/<region>[, <account>/<region> ...]`.
pub const REGISTRIES_ANNOTATION: &str = "deft.com/kubeecr";
/// Optional IAM role assumed to fetch this secret's tokens.
pub const ROLE_ANNOTATION: &str = "deft.com/kubeecr-role";
/// Written by kubeecr: when the token in the secret expires (RFC 3339).
pub const EXPIRES_AT_ANNOTATION: &str = "deft.com/kubeecr-expires-at";
/// Written by kubeecr: a short SHA-256 fingerprint of each registry's credentials as it wrote
/// them, `<account>/<region>=<hex>` comma-separated. The recorded expiry is trusted only while
/// the credentials still match.
pub const FINGERPRINTS_ANNOTATION: &str = "deft.com/kubeecr-fingerprints";
pub use crate::contract::hosts::HOSTS_ANNOTATION;
use crate::contract::shape::ARGOCD_LABEL;
/// Set by kubeecr on the Secrets it manages, so that it can watch only those in full.
pub const MANAGED_LABEL: &str = "deft.com/kubeecr-managed";
/// Annotations kubeecr writes itself, removed when a Secret opts out.
pub const OWN_ANNOTATIONS: [&str; 2] = [EXPIRES_AT_ANNOTATION, FINGERPRINTS_ANNOTATION];

/// Longest value kept of one of kubeecr's annotations: one byte past the 2048 at which
/// `deft.com/kubeecr` and `deft.com/kubeecr-role` are refused, so that a longer value is
/// refused all the same when cut here. kubeecr's own are far shorter.
pub const MAX_KEPT_VALUE: usize = 2049;

/// kubeecr's annotations and label, as written on the Secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Marks {
    registries: Option<Box<str>>,
    role: Option<Box<str>>,
    hosts: Option<Box<str>>,
    expires_at: Option<Box<str>>,
    fingerprints: Option<Box<str>>,
    managed_label: Option<Box<str>>,
    /// Argo CD's `argocd.argoproj.io/secret-type`, which makes an Opaque Secret one kubeecr
    /// fills.
    argocd: Option<Box<str>>,
}

/// `value`, or its first `MAX_KEPT_VALUE` bytes and the rest of the character there: never
/// fewer, so that a cut value is as long as a refused one, whatever characters it holds.
fn kept(value: &str) -> Box<str> {
    if value.len() <= MAX_KEPT_VALUE {
        return value.into();
    }
    let mut end = MAX_KEPT_VALUE;
    while !value.is_char_boundary(end) {
        end += 1;
    }
    value[..end].into()
}

impl Marks {
    /// From a Secret's labels and annotations.
    pub fn of(
        labels: Option<&BTreeMap<String, String>>,
        annotations: Option<&BTreeMap<String, String>>,
    ) -> Self {
        let mut marks = Self::default();
        for (k, v) in annotations.into_iter().flatten() {
            marks.set_annotation(k, v);
        }
        for (k, v) in labels.into_iter().flatten() {
            marks.set_label(k, v);
        }
        marks
    }

    /// From annotations alone.
    pub fn of_annotations(annotations: &BTreeMap<String, String>) -> Self {
        Self::of(None, Some(annotations))
    }

    fn slot(&mut self, annotation: &str) -> Option<&mut Option<Box<str>>> {
        Some(match annotation {
            REGISTRIES_ANNOTATION => &mut self.registries,
            ROLE_ANNOTATION => &mut self.role,
            HOSTS_ANNOTATION => &mut self.hosts,
            EXPIRES_AT_ANNOTATION => &mut self.expires_at,
            FINGERPRINTS_ANNOTATION => &mut self.fingerprints,
            _ => return None,
        })
    }

    /// Keeps an annotation if it is one of kubeecr's; says whether it was.
    pub fn set_annotation(&mut self, key: &str, value: &str) -> bool {
        match self.slot(key) {
            Some(slot) => {
                *slot = Some(kept(value));
                true
            }
            None => false,
        }
    }

    /// Keeps a label if it is one kubeecr reads; says whether it was.
    pub fn set_label(&mut self, key: &str, value: &str) -> bool {
        let slot = match key {
            MANAGED_LABEL => &mut self.managed_label,
            ARGOCD_LABEL => &mut self.argocd,
            _ => return false,
        };
        *slot = Some(kept(value));
        true
    }

    /// Whether `key` is one of the labels kept here.
    pub fn is_kept_label(key: &str) -> bool {
        [MANAGED_LABEL, ARGOCD_LABEL].contains(&key)
    }

    /// Argo CD's secret type label, as written.
    pub fn argocd(&self) -> Option<&str> {
        self.argocd.as_deref()
    }

    /// Whether `key` is one of the annotations kept here.
    pub fn is_kept_annotation(key: &str) -> bool {
        [
            REGISTRIES_ANNOTATION,
            ROLE_ANNOTATION,
            HOSTS_ANNOTATION,
            EXPIRES_AT_ANNOTATION,
            FINGERPRINTS_ANNOTATION,
        ]
        .contains(&key)
    }

    /// One of kubeecr's annotations, as written.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        match key {
            REGISTRIES_ANNOTATION => self.registries.as_deref(),
            ROLE_ANNOTATION => self.role.as_deref(),
            HOSTS_ANNOTATION => self.hosts.as_deref(),
            EXPIRES_AT_ANNOTATION => self.expires_at.as_deref(),
            FINGERPRINTS_ANNOTATION => self.fingerprints.as_deref(),
            _ => None,
        }
    }

    pub fn registries(&self) -> Option<&str> {
        self.registries.as_deref()
    }

    pub fn role(&self) -> Option<&str> {
        self.role.as_deref()
    }

    pub fn hosts(&self) -> Option<&str> {
        self.hosts.as_deref()
    }

    pub fn expires_at(&self) -> Option<&str> {
        self.expires_at.as_deref()
    }

    pub fn fingerprints(&self) -> Option<&str> {
        self.fingerprints.as_deref()
    }

    /// The managed label's value, as written.
    pub fn managed_label(&self) -> Option<&str> {
        self.managed_label.as_deref()
    }

    /// The Secret carries `deft.com/kubeecr` (well-formed or not).
    pub fn is_opted_in(&self) -> bool {
        self.registries.is_some()
    }

    /// The Secret carries kubeecr's label, so that the managed watch sees it.
    pub fn is_labelled(&self) -> bool {
        self.managed_label.as_deref() == Some("true")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_kubeecrs_and_cuts_long_values() {
        let annotations = BTreeMap::from([
            (
                REGISTRIES_ANNOTATION.to_string(),
                "123456789012/us-west-2".to_string(),
            ),
            ("other".to_string(), "x".to_string()),
            (FINGERPRINTS_ANNOTATION.to_string(), "é".repeat(1500)),
        ]);
        let labels = BTreeMap::from([
            (MANAGED_LABEL.to_string(), "true".to_string()),
            ("app".to_string(), "y".to_string()),
        ]);
        let marks = Marks::of(Some(&labels), Some(&annotations));
        assert_eq!(marks.registries(), Some("123456789012/us-west-2"));
        assert!(marks.is_opted_in() && marks.is_labelled());
        assert_eq!(marks.annotation("other"), None);
        let fp = marks.fingerprints().unwrap();
        assert!(
            fp.len() >= MAX_KEPT_VALUE && fp.len() < MAX_KEPT_VALUE + 2,
            "{}",
            fp.len()
        );
        assert!(!Marks::default().is_opted_in());
    }

    /// A value refused for its length is refused all the same once cut, whatever its
    /// characters: wide ones, or whitespace that trimming would drop.
    #[test]
    fn a_cut_value_is_refused_as_the_whole_one_is() {
        use crate::contract::annotation::{parse_registries, parse_role};
        use crate::contract::partition::Regions;
        let regions = Regions::default();
        let registry = "123456789012/us-west-2";
        let role = "arn:aws:iam::123456789012:role/r";
        for tail in [
            "\u{3000}".repeat(700),
            " ".repeat(2100),
            format!("{} x", " ".repeat(2100)),
        ] {
            let value = format!("{registry}{tail}");
            let whole = parse_registries(&value, &regions);
            let marks = Marks::of_annotations(&BTreeMap::from([
                (REGISTRIES_ANNOTATION.to_string(), value.clone()),
                (ROLE_ANNOTATION.to_string(), format!("{role}{tail}")),
            ]));
            let cut = parse_registries(marks.registries().unwrap(), &regions);
            assert!(whole.is_err() && cut.is_err(), "{:?} / {:?}", whole, cut);
            let registries = parse_registries(registry, &regions).unwrap();
            assert!(parse_role(&format!("{role}{tail}"), &registries).is_err());
            assert!(parse_role(marks.role().unwrap(), &registries).is_err());
        }
    }
}
