//! What the refresher knows of the opted-in Secrets, kept up to date from two kinds of watch
//! (the design of cert-manager's memory-management proposal):
//!
//! - **managed**: Secrets labelled `deft.com/kubeecr-managed=true`, kept as `KeptSecret`: what
//!   kubeecr reads and writes, without their tokens, so that a refresh needs no GET and memory
//!   does not grow with token sizes;
//! - **unmanaged**: every other Secret, as metadata only; only the opted-in ones are kept,
//!   and only their kubeecr annotations, so memory does not grow with unrelated Secrets.
//!
//! Each watch is one stream per namespace in scope (or one for all). A stream's list starts
//! with `Init`, gives every object as `InitApply` and ends with `InitDone`; objects the new
//! list did not give are gone. The index is synced once every stream finished a list.

use std::collections::{HashMap, HashSet};

use crate::contract::annotation::SecretRef;
use crate::contract::kept::KeptSecret;
use crate::contract::marks::Marks;
use crate::contract::partition::Regions;
use crate::k8s::Scope;
use crate::k8s::watch::Event;
use crate::refresher::wire::WireSecret;
use crate::telemetry::metrics::Watch;

/// Which watch a stream belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Managed,
    Unmanaged,
}

impl Source {
    /// The `watch` label of its metrics and logs.
    pub fn watch(self) -> Watch {
        match self {
            Self::Managed => Watch::Managed,
            Self::Unmanaged => Watch::Metadata,
        }
    }
}

/// One watch stream: a source, in one scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamId {
    pub source: Source,
    pub scope: Scope,
}

impl StreamId {
    fn covers(&self, secret: &SecretRef) -> bool {
        self.scope.covers(&secret.namespace)
    }
}

/// An opted-in Secret kubeecr does not manage yet, as kept from the metadata watch: its
/// version and kubeecr's annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptMeta {
    pub resource_version: Option<Box<str>>,
    pub marks: Marks,
}

/// What is known of one opted-in Secret. Boxed, so that the map's slots stay small for the
/// many Secrets that have only one of the two.
#[derive(Debug, Default, Clone)]
pub struct Entry {
    /// From the managed watch.
    pub managed: Option<Box<KeptSecret>>,
    /// From the unmanaged watch: an opted-in, unlabelled Secret.
    pub unmanaged: Option<Box<KeptMeta>>,
}

impl Entry {
    fn is_empty(&self) -> bool {
        self.managed.is_none() && self.unmanaged.is_none()
    }

    /// Whether `source`'s stream holds something of this Secret.
    fn holds(&self, source: Source) -> bool {
        match source {
            Source::Managed => self.managed.is_some(),
            Source::Unmanaged => self.unmanaged.is_some(),
        }
    }
}

/// A Secret as a watch hands it over: its key, and what is kept of it, made as soon as it
/// arrived.
#[derive(Debug, Clone)]
pub struct Seen<T> {
    pub key: SecretRef,
    pub kept: T,
}

impl Seen<Box<KeptSecret>> {
    /// From the managed watch: the Secret as kept.
    pub fn managed(secret: WireSecret, regions: &Regions) -> Self {
        Self {
            key: secret.key(),
            kept: Box::new(secret.kept(regions)),
        }
    }
}

impl Seen<Option<Box<KeptMeta>>> {
    /// From the metadata watch: kubeecr's marks, if the Secret opts in.
    pub fn unmanaged(secret: WireSecret) -> Self {
        let key = secret.key();
        let meta = secret.metadata;
        let kept = meta.marks.is_opted_in().then(|| {
            Box::new(KeptMeta {
                resource_version: meta.resource_version.map(Into::into),
                marks: meta.marks,
            })
        });
        Self { key, kept }
    }
}

/// A change seen by one stream.
pub enum Change {
    Managed(StreamId, Event<Seen<Box<KeptSecret>>>),
    Unmanaged(StreamId, Event<Seen<Option<Box<KeptMeta>>>>),
}

#[derive(Default)]
pub struct Index {
    entries: HashMap<SecretRef, Entry>,
    /// Keys given by the list in progress of each stream.
    listing: HashMap<StreamId, HashSet<SecretRef>>,
    synced: HashSet<StreamId>,
    streams: Vec<StreamId>,
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
            .map(|s| format!("{} watch of {}", s.source.watch().as_str(), s.scope))
            .collect()
    }

    /// Applies one change; returns the Secrets whose entry changed.
    pub fn apply(&mut self, change: Change) -> Vec<SecretRef> {
        match change {
            Change::Managed(stream, event) => self.apply_with(stream, event, |entry, kept| {
                let changed = entry.managed.as_ref().map(|m| m.resource_version())
                    != kept.as_ref().map(|m| m.resource_version());
                entry.managed = kept;
                changed
            }),
            Change::Unmanaged(stream, event) => self.apply_with(stream, event, |entry, meta| {
                let meta = meta.flatten();
                let changed = entry.unmanaged.as_ref().map(|m| &m.resource_version)
                    != meta.as_ref().map(|m| &m.resource_version);
                entry.unmanaged = meta;
                changed
            }),
        }
    }

    fn apply_with<T>(
        &mut self,
        stream: StreamId,
        event: Event<Seen<T>>,
        set: impl Fn(&mut Entry, Option<T>) -> bool,
    ) -> Vec<SecretRef> {
        let source = stream.source;
        let upsert = |entries: &mut HashMap<SecretRef, Entry>, key: SecretRef, kept: Option<T>| {
            let entry = entries.entry(key.clone()).or_default();
            let changed = set(entry, kept);
            if entry.is_empty() {
                entries.remove(&key);
            }
            changed.then_some(key)
        };
        match event {
            Event::Apply(seen) => upsert(&mut self.entries, seen.key, Some(seen.kept))
                .into_iter()
                .collect(),
            Event::Delete(seen) => upsert(&mut self.entries, seen.key, None)
                .into_iter()
                .collect(),
            Event::Init => {
                self.listing.insert(stream, HashSet::new());
                Vec::new()
            }
            Event::InitApply(seen) => {
                let key = seen.key;
                let changed = upsert(&mut self.entries, key.clone(), Some(seen.kept));
                // Only what is held can be gone at `InitDone`: the keys of Secrets kept
                // nothing of (most of a metadata list) are not remembered meanwhile.
                let held = self.entries.get(&key).is_some_and(|e| e.holds(source));
                if let Some(listed) = self.listing.get_mut(&stream).filter(|_| held) {
                    listed.insert(key);
                }
                changed.into_iter().collect()
            }
            Event::InitDone => {
                let seen = self.listing.remove(&stream).unwrap_or_default();
                let gone: Vec<SecretRef> = self
                    .entries
                    .iter()
                    .filter(|(key, entry)| {
                        entry.holds(source) && stream.covers(key) && !seen.contains(*key)
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
    use crate::contract::annotation::{MANAGED_LABEL, REGISTRIES_ANNOTATION};
    use crate::contract::kept::{KeptConfig, MAX_KEPT_CONFIG};

    fn managed(name: &str, rv: &str) -> Seen<Box<KeptSecret>> {
        Seen::managed(managed_wire(name, rv), &Regions::default())
    }

    fn managed_wire(name: &str, rv: &str) -> WireSecret {
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

    fn index() -> Index {
        Index::new(both())
    }

    fn meta(name: &str, rv: &str, opted_in: bool) -> Seen<Option<Box<KeptMeta>>> {
        Seen::unmanaged(meta_wire(name, rv, opted_in))
    }

    fn meta_wire(name: &str, rv: &str, opted_in: bool) -> WireSecret {
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
            scope: Scope::Cluster,
        }
    }

    fn both() -> Vec<StreamId> {
        vec![stream(Source::Managed), stream(Source::Unmanaged)]
    }

    fn r(name: &str) -> SecretRef {
        SecretRef::new("ns", name)
    }

    #[test]
    fn keeps_what_kubeecr_reads_and_no_token() {
        let mut index = index();
        let mut secret = managed_wire("a", "1");
        secret.dockerconfigjson =
            Some(br#"{"auths":{"123456789012.dkr.ecr.us-west-2.amazonaws.com":{"auth":"c2VjcmV0LXB3"}}}"#.to_vec());
        let secret = Seen::managed(secret, &Regions::default());
        index.apply(Change::Managed(
            stream(Source::Managed),
            Event::Apply(secret),
        ));
        let kept = index.get(&r("a")).unwrap().managed.clone().unwrap();
        assert!(kept.is_complete());
        assert_eq!(kept.resource_version(), Some("1"));
        assert!(kept.marks.is_labelled());
        let debug = format!("{kept:?}");
        assert!(!debug.contains("c2VjcmV0LXB3"), "{debug}");
        let KeptConfig::Kept { rest, .. } = &kept.config else {
            panic!("{:?}", kept.config)
        };
        assert!(!String::from_utf8_lossy(rest.as_deref().unwrap_or_default()).contains("c2VjcmV0"));
    }

    #[test]
    fn unmanaged_secrets_are_kept_only_while_opted_in() {
        let mut index = index();
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
        let mut index = index();
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
        let mut index = index();
        let in_ns = StreamId {
            source: Source::Managed,
            scope: Scope::Namespace("ns".into()),
        };
        let mut other = managed_wire("z", "1");
        other.metadata.namespace = "other".into();
        let other = Seen::managed(other, &Regions::default());
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
        let mut index = index();
        let mut big = managed_wire("big", "1");
        let mut padded = br#"{"x":""#.to_vec();
        padded.extend(vec![b' '; MAX_KEPT_CONFIG + 1]);
        padded.extend_from_slice(br#""}"#);
        big.dockerconfigjson = Some(padded);
        let big = Seen::managed(big, &Regions::default());
        index.apply(Change::Managed(stream(Source::Managed), Event::Apply(big)));
        let kept = index.get(&r("big")).unwrap().managed.clone().unwrap();
        assert!(!kept.is_complete());
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
        let mut index = index();
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
