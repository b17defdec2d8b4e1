//! What the refresher knows of the opted-in Secrets, kept up to date from two kinds of watch
//! (the design of cert-manager's memory-management proposal):
//!
//! - **managed**: Secrets labelled `deft.com/kubeecr-managed=true`, in full, trimmed to what
//!   kubeecr reads and writes, so that a refresh needs no GET;
//! - **unmanaged**: every other Secret, as metadata only; only the opted-in ones are kept,
//!   and only their kubeecr annotations, so memory does not grow with unrelated Secrets.
//!
//! Each watch is one stream per namespace in scope (or one for all). A stream's list starts
//! with `Init`, gives every object as `InitApply` and ends with `InitDone`; objects the new
//! list did not give are gone. The index is synced once every stream finished a list.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::Event;

use crate::contract::annotation::{
    DOCKER_CONFIG_JSON_TYPE, EXPIRES_AT_ANNOTATION, FINGERPRINTS_ANNOTATION, MANAGED_LABEL,
    REGISTRIES_ANNOTATION, ROLE_ANNOTATION, SecretRef,
};
use crate::contract::dockerconfig::DOCKER_CONFIG_JSON_KEY;
use crate::refresher::plan::{is_opted_in, secret_ref};

/// Which watch a stream belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Managed,
    Unmanaged,
}

impl Source {
    pub fn label(self) -> &'static str {
        match self {
            Self::Managed => "managed",
            Self::Unmanaged => "metadata",
        }
    }
}

/// One watch stream: a source, in one namespace or all (`None`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamId {
    pub source: Source,
    pub namespace: Option<String>,
}

impl StreamId {
    fn covers(&self, secret: &SecretRef) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| ns == secret.namespace)
    }
}

/// A managed Secret as kept: only what kubeecr reads and writes, compactly. A `Secret` with
/// its `ObjectMeta` and three maps costs several times as much, and there may be tens of
/// thousands. Its `Debug` leaves `.dockerconfigjson` out: it holds passwords.
#[derive(Clone, PartialEq, Eq)]
pub struct Managed {
    resource_version: Option<Box<str>>,
    type_: Option<Box<str>>,
    immutable: Option<bool>,
    managed_label: Option<Box<str>>,
    /// kubeecr's own annotations (`KEPT_ANNOTATIONS`), by index.
    annotations: [Option<Box<str>>; 4],
    config: Option<Box<[u8]>>,
    /// Whether `.dockerconfigjson` is kept. Larger than `MAX_KEPT_CONFIG`, it is not, and the
    /// Secret is read (GET) before it is written.
    pub complete: bool,
}

impl fmt::Debug for Managed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Managed")
            .field("resource_version", &self.resource_version)
            .field("type_", &self.type_)
            .field("immutable", &self.immutable)
            .field("managed_label", &self.managed_label)
            .field("annotations", &self.annotations)
            .field(
                "config",
                &self
                    .config
                    .as_ref()
                    .map(|c| format!("[{} bytes redacted]", c.len())),
            )
            .field("complete", &self.complete)
            .finish()
    }
}

impl Managed {
    pub fn resource_version(&self) -> Option<&str> {
        self.resource_version.as_deref()
    }

    /// The Secret as far as kubeecr knows it, for deciding and writing.
    pub fn to_secret(&self, secret: &SecretRef) -> Secret {
        let map =
            |pairs: Vec<(String, String)>| (!pairs.is_empty()).then(|| pairs.into_iter().collect());
        let annotations = KEPT_ANNOTATIONS
            .iter()
            .zip(&self.annotations)
            .filter_map(|(k, v)| Some((k.to_string(), v.as_deref()?.to_string())))
            .collect();
        let labels = self
            .managed_label
            .iter()
            .map(|v| (MANAGED_LABEL.to_string(), v.to_string()))
            .collect();
        Secret {
            metadata: ObjectMeta {
                name: Some(secret.name.clone()),
                namespace: Some(secret.namespace.clone()),
                resource_version: self.resource_version.as_deref().map(str::to_string),
                labels: map(labels),
                annotations: map(annotations),
                ..ObjectMeta::default()
            },
            type_: self.type_.as_deref().map(str::to_string),
            immutable: self.immutable,
            data: self.config.as_ref().map(|c| {
                BTreeMap::from([(DOCKER_CONFIG_JSON_KEY.to_string(), ByteString(c.to_vec()))])
            }),
            ..Secret::default()
        }
    }
}

/// The largest `.dockerconfigjson` kept in memory; a real one with a few registries is a
/// few kB, so only a padded one is bigger.
pub const MAX_KEPT_CONFIG: usize = 64 * 1024;

/// What is known of one opted-in Secret.
#[derive(Debug, Default, Clone)]
pub struct Entry {
    /// From the managed watch.
    pub managed: Option<Managed>,
    /// From the unmanaged watch: the trimmed metadata of an opted-in, unlabelled Secret.
    pub unmanaged: Option<Arc<ObjectMeta>>,
}

impl Entry {
    fn is_empty(&self) -> bool {
        self.managed.is_none() && self.unmanaged.is_none()
    }
}

/// A change seen by one stream.
pub enum Change {
    Managed(StreamId, Event<Secret>),
    Unmanaged(StreamId, Event<PartialObjectMeta<Secret>>),
}

#[derive(Default)]
pub struct Index {
    entries: HashMap<SecretRef, Entry>,
    /// Keys given by the list in progress of each stream.
    listing: HashMap<StreamId, HashSet<SecretRef>>,
    synced: HashSet<StreamId>,
    streams: Vec<StreamId>,
}

const KEPT_ANNOTATIONS: [&str; 4] = [
    REGISTRIES_ANNOTATION,
    ROLE_ANNOTATION,
    EXPIRES_AT_ANNOTATION,
    FINGERPRINTS_ANNOTATION,
];

/// The metadata kubeecr reads of an unmanaged Secret: name, namespace, version, and its own
/// annotations.
fn trim_meta(meta: &ObjectMeta) -> ObjectMeta {
    let annotations: BTreeMap<String, String> = meta
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| KEPT_ANNOTATIONS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    ObjectMeta {
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        resource_version: meta.resource_version.clone(),
        annotations: (!annotations.is_empty()).then_some(annotations),
        ..ObjectMeta::default()
    }
}

/// A managed Secret as kept: its type, its `.dockerconfigjson` (unless oversized), and the
/// metadata kubeecr reads. Every patch kubeecr writes touches only those fields.
pub fn trim_secret(secret: Secret) -> Managed {
    let meta = secret.metadata;
    let config = secret
        .data
        .and_then(|mut d| d.remove(DOCKER_CONFIG_JSON_KEY));
    // Kept only where kubeecr may write it: an opted-in dockerconfigjson Secret. Anything
    // else carrying the label is released or skipped, without its data.
    let fillable = is_opted_in(&meta) && secret.type_.as_deref() == Some(DOCKER_CONFIG_JSON_TYPE);
    let complete = config.as_ref().is_none_or(|c| c.0.len() <= MAX_KEPT_CONFIG)
        && (fillable || config.is_none());
    let annotation = |k: &str| {
        meta.annotations
            .as_ref()
            .and_then(|a| a.get(k))
            .map(|v| v.as_str().into())
    };
    Managed {
        resource_version: meta.resource_version.as_deref().map(Into::into),
        type_: secret.type_.as_deref().map(Into::into),
        immutable: secret.immutable,
        managed_label: meta
            .labels
            .as_ref()
            .and_then(|l| l.get(MANAGED_LABEL))
            .map(|v| v.as_str().into()),
        annotations: KEPT_ANNOTATIONS.map(annotation),
        config: config.filter(|_| complete).map(|c| c.0.into_boxed_slice()),
        complete,
    }
}

impl Index {
    pub fn new(streams: Vec<StreamId>) -> Self {
        Self {
            streams,
            ..Self::default()
        }
    }

    pub fn get(&self, secret: &SecretRef) -> Option<&Entry> {
        self.entries.get(secret)
    }

    pub fn keys(&self) -> impl Iterator<Item = &SecretRef> {
        self.entries.keys()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every stream has finished at least one list.
    pub fn is_synced(&self) -> bool {
        self.synced.len() >= self.streams.len()
    }

    /// The streams that have not finished a list yet, for `/readyz`.
    pub fn unsynced(&self) -> Vec<String> {
        self.streams
            .iter()
            .filter(|s| !self.synced.contains(*s))
            .map(|s| {
                let scope = s.namespace.as_deref().unwrap_or("all namespaces");
                format!("{} watch of {scope}", s.source.label())
            })
            .collect()
    }

    /// Applies one change; returns the Secrets whose entry changed.
    pub fn apply(&mut self, change: Change) -> Vec<SecretRef> {
        match change {
            Change::Managed(stream, event) => self.apply_with(stream, event, |entry, object| {
                let managed = object.map(trim_secret);
                let changed = entry.managed.as_ref().map(Managed::resource_version)
                    != managed.as_ref().map(Managed::resource_version);
                entry.managed = managed;
                changed
            }),
            Change::Unmanaged(stream, event) => self.apply_with(stream, event, |entry, object| {
                let meta = object
                    .filter(|m| is_opted_in(&m.metadata))
                    .map(|m| Arc::new(trim_meta(&m.metadata)));
                let changed = entry.unmanaged.as_ref().map(|m| &m.resource_version)
                    != meta.as_ref().map(|m| &m.resource_version);
                entry.unmanaged = meta;
                changed
            }),
        }
    }

    fn apply_with<K: kube::Resource>(
        &mut self,
        stream: StreamId,
        event: Event<K>,
        set: impl Fn(&mut Entry, Option<K>) -> bool,
    ) -> Vec<SecretRef> {
        let source = stream.source;
        let upsert =
            |entries: &mut HashMap<SecretRef, Entry>, key: SecretRef, object: Option<K>| {
                let entry = entries.entry(key.clone()).or_default();
                let changed = set(entry, object);
                if entry.is_empty() {
                    entries.remove(&key);
                }
                changed.then_some(key)
            };
        match event {
            Event::Apply(object) => {
                let key = secret_ref(object.meta());
                upsert(&mut self.entries, key, Some(object))
                    .into_iter()
                    .collect()
            }
            Event::Delete(object) => {
                let key = secret_ref(object.meta());
                upsert(&mut self.entries, key, None).into_iter().collect()
            }
            Event::Init => {
                self.listing.insert(stream, HashSet::new());
                Vec::new()
            }
            Event::InitApply(object) => {
                let key = secret_ref(object.meta());
                if let Some(seen) = self.listing.get_mut(&stream) {
                    seen.insert(key.clone());
                }
                upsert(&mut self.entries, key, Some(object))
                    .into_iter()
                    .collect()
            }
            Event::InitDone => {
                let seen = self.listing.remove(&stream).unwrap_or_default();
                let gone: Vec<SecretRef> = self
                    .entries
                    .iter()
                    .filter(|(key, entry)| {
                        let held = match source {
                            Source::Managed => entry.managed.is_some(),
                            Source::Unmanaged => entry.unmanaged.is_some(),
                        };
                        held && stream.covers(key) && !seen.contains(*key)
                    })
                    .map(|(key, _)| key.clone())
                    .collect();
                self.synced.insert(stream);
                gone.into_iter()
                    .filter_map(|key| upsert(&mut self.entries, key, None))
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn managed(name: &str, rv: &str) -> Secret {
        serde_json::from_value(json!({
            "metadata": {
                "name": name, "namespace": "ns", "resourceVersion": rv,
                "labels": {MANAGED_LABEL: "true", "app": "x"},
                "annotations": {REGISTRIES_ANNOTATION: "123456789012/us-west-2", "kubectl.kubernetes.io/last-applied-configuration": "{...}"},
                "managedFields": [{"manager": "kubectl"}],
            },
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": "e30=", "other": "eA=="},
        }))
        .unwrap()
    }

    fn meta(name: &str, rv: &str, opted_in: bool) -> PartialObjectMeta<Secret> {
        let annotations = if opted_in {
            json!({REGISTRIES_ANNOTATION: "123456789012/us-west-2"})
        } else {
            json!({})
        };
        serde_json::from_value(json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv, "annotations": annotations},
        }))
        .unwrap()
    }

    fn stream(source: Source) -> StreamId {
        StreamId {
            source,
            namespace: None,
        }
    }

    fn both() -> Vec<StreamId> {
        vec![stream(Source::Managed), stream(Source::Unmanaged)]
    }

    fn r(name: &str) -> SecretRef {
        SecretRef::new("ns", name)
    }

    #[test]
    fn debug_output_holds_no_credentials() {
        let mut secret = managed("a", "1");
        secret.data.as_mut().unwrap().insert(
            DOCKER_CONFIG_JSON_KEY.to_string(),
            ByteString(br#"{"auths":{"h":{"auth":"c2VjcmV0LXB3"}}}"#.to_vec()),
        );
        let debug = format!("{:?}", trim_secret(secret));
        assert!(!debug.contains("c2VjcmV0LXB3"), "{debug}");
        assert!(debug.contains("bytes redacted"), "{debug}");
    }

    #[test]
    fn keeps_only_what_kubeecr_reads() {
        let mut index = Index::new(both());
        index.apply(Change::Managed(
            stream(Source::Managed),
            Event::Apply(managed("a", "1")),
        ));
        let kept = index.get(&r("a")).unwrap().managed.clone().unwrap();
        assert!(kept.complete);
        let kept = kept.to_secret(&r("a"));
        assert!(kept.metadata.managed_fields.is_none());
        assert_eq!(kept.metadata.labels.as_ref().unwrap().len(), 1);
        assert_eq!(kept.metadata.annotations.as_ref().unwrap().len(), 1);
        assert_eq!(kept.data.as_ref().unwrap().len(), 1);
        assert_eq!(kept.metadata.resource_version.as_deref(), Some("1"));
    }

    #[test]
    fn unmanaged_secrets_are_kept_only_while_opted_in() {
        let mut index = Index::new(both());
        let s = stream(Source::Unmanaged);
        assert!(
            index
                .apply(Change::Unmanaged(
                    s.clone(),
                    Event::Apply(meta("plain", "1", false))
                ))
                .is_empty()
        );
        assert!(index.is_empty());
        assert_eq!(
            index.apply(Change::Unmanaged(
                s.clone(),
                Event::Apply(meta("a", "2", true))
            )),
            [r("a")]
        );
        assert_eq!(
            index.apply(Change::Unmanaged(s, Event::Apply(meta("a", "3", false)))),
            [r("a")]
        );
        assert!(index.is_empty());
    }

    #[test]
    fn a_relist_drops_what_it_no_longer_gives_and_syncs() {
        let mut index = Index::new(both());
        let m = stream(Source::Managed);
        let u = stream(Source::Unmanaged);
        for (name, rv) in [("a", "1"), ("b", "1")] {
            index.apply(Change::Managed(m.clone(), Event::Apply(managed(name, rv))));
        }
        index.apply(Change::Unmanaged(
            u.clone(),
            Event::Apply(meta("c", "1", true)),
        ));
        assert!(!index.is_synced());
        // The managed watch lists again (after a 410): b is gone, a unchanged.
        index.apply(Change::Managed(m.clone(), Event::Init));
        assert!(
            index
                .apply(Change::Managed(
                    m.clone(),
                    Event::InitApply(managed("a", "1"))
                ))
                .is_empty()
        );
        assert_eq!(index.apply(Change::Managed(m, Event::InitDone)), [r("b")]);
        assert!(index.get(&r("b")).is_none());
        assert!(index.get(&r("c")).is_some(), "another watch's entries stay");
        assert!(!index.is_synced());
        index.apply(Change::Unmanaged(u.clone(), Event::Init));
        index.apply(Change::Unmanaged(u, Event::InitDone));
        assert!(index.is_synced());
        assert!(index.get(&r("c")).is_none());
    }

    #[test]
    fn a_namespaced_relist_leaves_other_namespaces_alone() {
        let mut index = Index::new(both());
        let in_ns = StreamId {
            source: Source::Managed,
            namespace: Some("ns".into()),
        };
        let mut other = managed("z", "1");
        other.metadata.namespace = Some("other".into());
        index.apply(Change::Managed(
            stream(Source::Managed),
            Event::Apply(other),
        ));
        index.apply(Change::Managed(in_ns.clone(), Event::Init));
        index.apply(Change::Managed(in_ns, Event::InitDone));
        assert!(index.get(&SecretRef::new("other", "z")).is_some());
    }

    #[test]
    fn an_oversized_config_is_not_kept_and_unsynced_streams_are_named() {
        let mut index = Index::new(both());
        let mut big = managed("big", "1");
        big.data.as_mut().unwrap().insert(
            DOCKER_CONFIG_JSON_KEY.into(),
            ByteString(vec![b' '; MAX_KEPT_CONFIG + 1]),
        );
        index.apply(Change::Managed(stream(Source::Managed), Event::Apply(big)));
        let kept = index.get(&r("big")).unwrap().managed.clone().unwrap();
        assert!(!kept.complete);
        assert!(kept.to_secret(&r("big")).data.is_none());
        assert_eq!(
            index.unsynced(),
            [
                "managed watch of all namespaces",
                "metadata watch of all namespaces"
            ]
        );
        index.apply(Change::Managed(stream(Source::Managed), Event::Init));
        index.apply(Change::Managed(stream(Source::Managed), Event::InitDone));
        assert_eq!(index.unsynced(), ["metadata watch of all namespaces"]);
    }

    #[test]
    fn the_same_version_again_is_no_change() {
        let mut index = Index::new(both());
        let m = stream(Source::Managed);
        assert_eq!(
            index.apply(Change::Managed(m.clone(), Event::Apply(managed("a", "1")))),
            [r("a")]
        );
        assert!(
            index
                .apply(Change::Managed(m.clone(), Event::Apply(managed("a", "1"))))
                .is_empty()
        );
        assert_eq!(
            index.apply(Change::Managed(m.clone(), Event::Apply(managed("a", "2")))),
            [r("a")]
        );
        assert_eq!(
            index.apply(Change::Managed(m, Event::Delete(managed("a", "3")))),
            [r("a")]
        );
        assert!(index.is_empty());
    }
}
