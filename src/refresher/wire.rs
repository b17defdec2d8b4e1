//! Secrets as the API server sends them (lists, watch events, `PartialObjectMetadata`),
//! decoded into what kubeecr keeps and nothing else: every other label, annotation, data key
//! and field is skipped as it is read, never held, so that a Secret's other content costs no
//! memory beyond the bytes of the one object being read.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::contract::annotation::SecretRef;
use crate::contract::dockerconfig::DOCKER_CONFIG_JSON_KEY;
use crate::contract::kept::{KeptSecret, Stored};
use crate::contract::marks::Marks;
use crate::contract::partition::Regions;
use crate::contract::shape::{PASSWORD_KEY, URL_KEY, USERNAME_KEY};
use crate::k8s::watch::Versioned;

/// A Secret's metadata, as far as kubeecr reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WireMeta {
    pub name: String,
    pub namespace: String,
    pub resource_version: Option<String>,
    pub marks: Marks,
}

/// A Secret, or a `PartialObjectMetadata` of one, as far as kubeecr reads it. Its `Debug`
/// leaves `.dockerconfigjson` out: it holds passwords.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct WireSecret {
    pub metadata: WireMeta,
    pub type_: Option<String>,
    pub immutable: Option<bool>,
    pub dockerconfigjson: Option<Vec<u8>>,
    /// `username`, `password` and `url`: what the basic-auth and Argo CD shapes hold.
    pub basic: WireBasic,
}

/// A Secret's `username`, `password` and `url`, base64-decoded. Its `Debug` holds none of
/// them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct WireBasic {
    pub username: Option<Vec<u8>>,
    pub password: Option<Vec<u8>>,
    pub url: Option<Vec<u8>>,
}

impl fmt::Debug for WireBasic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WireBasic")
            .field("username", &self.username.as_ref().map(|_| "redacted"))
            .field("password", &self.password.as_ref().map(|_| "redacted"))
            .field("url", &self.url.as_ref().map(|_| "redacted"))
            .finish()
    }
}

impl fmt::Debug for WireSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WireSecret")
            .field("metadata", &self.metadata)
            .field("type_", &self.type_)
            .field("immutable", &self.immutable)
            .field(
                "dockerconfigjson",
                &self
                    .dockerconfigjson
                    .as_ref()
                    .map(|c| format!("[{} bytes redacted]", c.len())),
            )
            .field("basic", &self.basic)
            .finish()
    }
}

impl WireSecret {
    pub fn key(&self) -> SecretRef {
        SecretRef::new(&self.metadata.namespace, &self.metadata.name)
    }

    /// What its data holds, as the contract reads it: the password only as a fingerprint.
    fn stored(&self) -> Stored {
        Stored::of(
            self.dockerconfigjson.as_deref(),
            self.basic.username.as_deref(),
            self.basic.password.as_deref(),
            self.basic.url.as_deref(),
        )
    }

    /// As read (GET) for one decision and write: the config whole.
    pub fn read(self, regions: &Regions) -> KeptSecret {
        let stored = self.stored();
        KeptSecret::read(
            self.metadata.resource_version.as_deref(),
            self.type_.as_deref(),
            self.immutable == Some(true),
            self.metadata.marks,
            stored,
            regions,
        )
    }

    /// What kubeecr keeps of it; `.dockerconfigjson` is dropped once kept.
    pub fn kept(self, regions: &Regions) -> KeptSecret {
        let stored = self.stored();
        KeptSecret::new(
            self.metadata.resource_version.as_deref(),
            self.type_.as_deref(),
            self.immutable == Some(true),
            self.metadata.marks,
            stored,
            regions,
        )
    }
}

impl Versioned for WireSecret {
    fn resource_version(&self) -> Option<&str> {
        self.metadata.resource_version.as_deref()
    }
}

/// Which of a Secret's string maps is being read into its `Marks`.
#[derive(Clone, Copy)]
enum MarksOf {
    Labels,
    Annotations,
}

/// Reads `labels` or `annotations` (a map, or `null`) into `Marks`: kubeecr's own keys are
/// kept, every other value skipped unread.
struct MarksSeed<'a>(&'a mut Marks, MarksOf);

impl<'de> de::DeserializeSeed<'de> for MarksSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for MarksSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of strings, or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let MarksSeed(marks, of) = self;
        while let Some(key) = map.next_key::<String>()? {
            let wanted = match of {
                MarksOf::Labels => Marks::is_kept_label(&key),
                MarksOf::Annotations => Marks::is_kept_annotation(&key),
            };
            if !wanted {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let value: String = map.next_value()?;
            match of {
                MarksOf::Labels => marks.set_label(&key, &value),
                MarksOf::Annotations => marks.set_annotation(&key, &value),
            };
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for WireMeta {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Meta;
        impl<'de> Visitor<'de> for Meta {
            type Value = WireMeta;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("object metadata")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<WireMeta, A::Error> {
                let mut meta = WireMeta::default();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "name" => {
                            meta.name = map.next_value::<Option<String>>()?.unwrap_or_default()
                        }
                        "namespace" => {
                            meta.namespace = map.next_value::<Option<String>>()?.unwrap_or_default()
                        }
                        "resourceVersion" => meta.resource_version = map.next_value()?,
                        "labels" => {
                            map.next_value_seed(MarksSeed(&mut meta.marks, MarksOf::Labels))?
                        }
                        "annotations" => {
                            map.next_value_seed(MarksSeed(&mut meta.marks, MarksOf::Annotations))?
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(meta)
            }
        }
        deserializer.deserialize_map(Meta)
    }
}

/// `.dockerconfigjson`, `username`, `password` and `url` of a `data` map, base64-decoded;
/// every other key skipped unread.
struct DockerConfigOnly;

type WireData = (Option<Vec<u8>>, WireBasic);

impl<'de> Visitor<'de> for DockerConfigOnly {
    type Value = WireData;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of base64 strings")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(WireData::default())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut config, mut basic) = WireData::default();
        while let Some(key) = map.next_key::<String>()? {
            let slot = match key.as_str() {
                DOCKER_CONFIG_JSON_KEY => &mut config,
                USERNAME_KEY => &mut basic.username,
                PASSWORD_KEY => &mut basic.password,
                URL_KEY => &mut basic.url,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            *slot = Some(map.next_value::<k8s_openapi::ByteString>()?.0);
        }
        Ok((config, basic))
    }
}

struct DataSeed;

impl<'de> de::DeserializeSeed<'de> for DataSeed {
    type Value = WireData;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        struct OrNull;
        impl<'de> Visitor<'de> for OrNull {
            type Value = WireData;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of base64 strings or null")
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(WireData::default())
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(WireData::default())
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_map(DockerConfigOnly)
            }
        }
        deserializer.deserialize_option(OrNull)
    }
}

impl<'de> Deserialize<'de> for WireSecret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> Visitor<'de> for Object {
            type Value = WireSecret;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Secret")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<WireSecret, A::Error> {
                let mut secret = WireSecret::default();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "metadata" => secret.metadata = map.next_value()?,
                        "type" => secret.type_ = map.next_value()?,
                        "immutable" => secret.immutable = map.next_value()?,
                        "data" => {
                            (secret.dockerconfigjson, secret.basic) =
                                map.next_value_seed(DataSeed)?
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(secret)
            }
        }
        deserializer.deserialize_map(Object)
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Secret;
    use serde_json::json;

    use super::*;
    use crate::contract::annotation::{MANAGED_LABEL, REGISTRIES_ANNOTATION};

    fn full() -> serde_json::Value {
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {
                "name": "a", "namespace": "ns", "resourceVersion": "7", "uid": "u",
                "labels": {MANAGED_LABEL: "true", "app": "x"},
                "annotations": {REGISTRIES_ANNOTATION: "123456789012/us-west-2", "kubectl.kubernetes.io/last-applied-configuration": "{...}"},
                "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:data": {}}}],
            },
            "type": "kubernetes.io/dockerconfigjson",
            "immutable": false,
            "data": {"big": "QUFB", ".dockerconfigjson": "e30=", "other": "eA=="},
        })
    }

    #[test]
    fn reads_what_kubeecr_keeps_and_skips_the_rest() {
        let wire: WireSecret = serde_json::from_value(full()).unwrap();
        assert_eq!(wire.key(), SecretRef::new("ns", "a"));
        assert_eq!(wire.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(
            wire.metadata.marks.registries(),
            Some("123456789012/us-west-2")
        );
        assert!(wire.metadata.marks.is_labelled());
        assert_eq!(
            wire.type_.as_deref(),
            Some("kubernetes.io/dockerconfigjson")
        );
        assert_eq!(wire.dockerconfigjson.as_deref(), Some(&b"{}"[..]));
        // The same as from a whole Secret.
        let secret: Secret = serde_json::from_value(full()).unwrap();
        let regions = Regions::default();
        assert_eq!(
            wire.clone().read(&regions),
            KeptSecret::of_secret(&secret, &regions)
        );
        assert!(!format!("{wire:?}").contains("e30"));
    }

    #[test]
    fn metadata_only_nulls_and_missing_fields() {
        let meta: WireSecret = serde_json::from_value(json!({
            "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": {"name": "b", "namespace": "ns", "labels": null, "annotations": null},
        }))
        .unwrap();
        assert_eq!(meta.key(), SecretRef::new("ns", "b"));
        assert!(!meta.metadata.marks.is_opted_in());
        assert_eq!(meta.dockerconfigjson, None);
        let nulls: WireSecret =
            serde_json::from_value(json!({"metadata": {"name": null}, "data": null, "type": null}))
                .unwrap();
        assert_eq!(nulls, WireSecret::default());
        // Not a Secret at all.
        assert!(serde_json::from_value::<WireSecret>(json!([1])).is_err());
        assert!(
            serde_json::from_value::<WireSecret>(json!({"data": {".dockerconfigjson": "%%"}}))
                .is_err()
        );
    }
}
