//! What the refresher does with one Secret, decided without I/O: leave it, skip it, release
//! it, or fill it, and the merge patch for the write.
//!
//! Every patch carries the object's `resourceVersion`, so a concurrent writer is never
//! overwritten: the API server answers 409 and the refresher decides again.

use jiff::Timestamp;
use serde_json::{Map, Value, json};

use crate::contract::annotation::{EcrBinding, MANAGED_LABEL, SecretRef};
use crate::contract::kept::KeptSecret;
use crate::contract::policy::Policy;
use crate::contract::secret_update::{self, DuePolicy, DueReason, Filled};
use crate::contract::shape::Shape;
use crate::contract::standing::{Leftovers, NotFilled, Standing, Whole, standing};

/// The decision for one Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Nothing to write. Due again at `due_at` (`None`: only when the Secret changes).
    UpToDate { due_at: Option<Timestamp> },
    /// Not kubeecr's to write, and why.
    Skip(NotFilled),
    /// No longer opted in, but still carries kubeecr's annotations or label.
    Release(Leftovers),
    /// Needs a token for each key of the binding, then `fill_patch`.
    Fill {
        binding: Box<EcrBinding>,
        shape: Shape,
        reason: DueReason,
    },
}

/// Decides what to do with a Secret.
pub fn plan(
    secret: &SecretRef,
    object: &KeptSecret,
    policy: &Policy,
    due: DuePolicy,
    now: Timestamp,
) -> Plan {
    let (binding, shape) = match standing(secret, Whole::kept(object), policy) {
        Standing::OptedIn(binding, shape) => (binding, shape),
        Standing::NotOptedIn => return Plan::Skip(NotFilled::NotOptedIn),
        Standing::OptingOut(leftovers) => return Plan::Release(leftovers),
        Standing::Refused(e) => return Plan::Skip(e.into()),
        Standing::Immutable(_) => return Plan::Skip(NotFilled::Immutable),
    };
    let marks = &object.marks;
    match secret_update::due_reason(&binding, marks, object.config.view(), now, due) {
        Ok(Some(reason)) => Plan::Fill {
            binding: Box::new(binding),
            shape,
            reason,
        },
        Ok(None) => Plan::UpToDate {
            due_at: secret_update::due_at(marks, due.refresh_before),
        },
        Err(e) => Plan::Skip(NotFilled::Config(e)),
    }
}

/// A merge patch guarded by the object's resourceVersion.
fn guarded(object: &KeptSecret, mut metadata: Map<String, Value>) -> Map<String, Value> {
    metadata.insert("resourceVersion".into(), json!(object.resource_version()));
    metadata
}

/// The write for `filled`, or `None` when the Secret already holds exactly that. Also labels
/// the Secret as managed, so that kubeecr watches it in full from then on.
pub fn fill_patch(object: &KeptSecret, binding: &EcrBinding, filled: &Filled) -> Option<Value> {
    if object.marks.is_labelled() && filled.is_held_by(binding, object.config.view(), &object.marks)
    {
        return None;
    }
    let own: Map<String, Value> = filled
        .annotations()
        .into_iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let mut metadata = Map::new();
    metadata.insert("annotations".into(), Value::Object(own));
    metadata.insert("labels".into(), json!({ MANAGED_LABEL: "true" }));
    let data: Map<String, Value> = filled
        .data
        .iter()
        .map(|(k, v)| (k.to_string(), json!(k8s_openapi::ByteString(v.clone()))))
        .collect();
    Some(json!({
        "metadata": guarded(object, metadata),
        "data": data,
    }))
}

/// Removes kubeecr's leftovers from a Secret that opted out; leaves its data alone.
pub fn release_patch(object: &KeptSecret, leftovers: &Leftovers) -> Value {
    let mut metadata = Map::new();
    if !leftovers.annotations.is_empty() {
        let nulls: Map<String, Value> = leftovers
            .annotations
            .iter()
            .map(|k| (k.to_string(), Value::Null))
            .collect();
        metadata.insert("annotations".into(), Value::Object(nulls));
    }
    if leftovers.label {
        metadata.insert("labels".into(), json!({ MANAGED_LABEL: null }));
    }
    json!({ "metadata": guarded(object, metadata) })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use k8s_openapi::api::core::v1::Secret;

    use super::*;
    use crate::contract::annotation::{
        EXPIRES_AT_ANNOTATION, FINGERPRINTS_ANNOTATION, REGISTRIES_ANNOTATION,
    };
    use crate::contract::dockerconfig::DOCKER_CONFIG_JSON_KEY;
    use crate::contract::partition::Regions;
    use crate::contract::token::{FetchedToken, decode};

    const DUE: DuePolicy = DuePolicy {
        refresh_before: Duration::from_secs(4 * 3600),
        force: false,
    };

    fn secret(v: Value) -> Secret {
        serde_json::from_value(v).unwrap()
    }

    fn kept(s: &Secret) -> KeptSecret {
        KeptSecret::of_secret(s, &Regions::default())
    }

    fn now() -> Timestamp {
        "2026-11-29T08:00:00Z".parse().unwrap()
    }

    fn opted_in(annotations: Value, data: Option<&[u8]>) -> Secret {
        let mut v = json!({
            "metadata": {"name": "s", "namespace": "ns", "resourceVersion": "7", "annotations": annotations},
            "type": "kubernetes.io/dockerconfigjson",
        });
        if let Some(d) = data {
            v["data"] = json!({ DOCKER_CONFIG_JSON_KEY: k8s_openapi::ByteString(d.to_vec()) });
        }
        secret(v)
    }

    fn fill_with(object: &Secret, password: &str) -> (Box<EcrBinding>, Filled) {
        let object = kept(object);
        let Plan::Fill { binding, shape, .. } = plan(
            &SecretRef::new("ns", "s"),
            &object,
            &Policy::default(),
            DuePolicy { force: true, ..DUE },
            now(),
        ) else {
            panic!("forced fill")
        };
        let raw = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("AWS:{password}"),
        );
        let token = decode(
            &FetchedToken {
                authorization_token: secrecy::SecretString::from(raw),
                expires_at: None,
            },
            "2026-11-29T20:00:00Z".parse().unwrap(),
        )
        .unwrap();
        let tokens = secret_update::token_keys(&binding)
            .into_iter()
            .map(|k| (k, Arc::new(token.clone())))
            .collect();
        let filled =
            secret_update::fill(&binding, shape, object.config.view().merge_base(), &tokens)
                .unwrap();
        (binding, filled)
    }

    #[test]
    fn fill_patch_is_guarded_labels_and_keeps_to_its_own_keys() {
        let object = opted_in(
            json!({REGISTRIES_ANNOTATION: "123456789012/us-west-2", "team": "a"}),
            Some(br#"{"auths":{}}"#),
        );
        let (binding, filled) = fill_with(&object, "pw");
        let patch = fill_patch(&kept(&object), &binding, &filled).unwrap();
        assert_eq!(patch["metadata"]["resourceVersion"], "7");
        assert_eq!(patch["metadata"]["labels"][MANAGED_LABEL], "true");
        let annotations = patch["metadata"]["annotations"].as_object().unwrap();
        assert_eq!(
            annotations.keys().collect::<Vec<_>>(),
            [EXPIRES_AT_ANNOTATION, FINGERPRINTS_ANNOTATION]
        );
        assert_eq!(patch["data"].as_object().unwrap().len(), 1);
    }

    #[test]
    fn no_patch_when_the_labelled_secret_already_holds_it() {
        let object = opted_in(
            json!({REGISTRIES_ANNOTATION: "123456789012/us-west-2"}),
            None,
        );
        let (binding, filled) = fill_with(&object, "pw");
        let mut v = serde_json::to_value(&object).unwrap();
        v["metadata"]["labels"] = json!({ MANAGED_LABEL: "true" });
        for (k, val) in filled.annotations() {
            v["metadata"]["annotations"][k] = json!(val);
        }
        v["data"] = json!({ DOCKER_CONFIG_JSON_KEY: k8s_openapi::ByteString(filled.value(DOCKER_CONFIG_JSON_KEY).unwrap().to_vec()) });
        let held = kept(&secret(v.clone()));
        assert_eq!(fill_patch(&held, &binding, &filled), None);
        assert_eq!(
            plan(
                &SecretRef::new("ns", "s"),
                &held,
                &Policy::default(),
                DUE,
                now()
            ),
            Plan::UpToDate {
                due_at: Some("2026-11-29T16:00:00Z".parse().unwrap())
            }
        );
        // Unlabelled: written once more, for the label.
        v["metadata"]["labels"] = json!({});
        assert!(fill_patch(&kept(&secret(v)), &binding, &filled).is_some());
    }

    #[test]
    fn opted_out_secrets_are_released_or_skipped() {
        let s = SecretRef::new("ns", "s");
        let leftover = secret(json!({
            "metadata": {"name": "s", "resourceVersion": "9", "labels": {MANAGED_LABEL: "true", "app": "x"},
                         "annotations": {EXPIRES_AT_ANNOTATION: "2026-11-29T20:00:00Z", "keep": "me"}},
            "type": "kubernetes.io/dockerconfigjson",
        }));
        let leftover = kept(&leftover);
        let Plan::Release(leftovers) = plan(&s, &leftover, &Policy::default(), DUE, now()) else {
            panic!("released")
        };
        assert_eq!(
            release_patch(&leftover, &leftovers),
            json!({"metadata": {
                "annotations": {EXPIRES_AT_ANNOTATION: null},
                "labels": {MANAGED_LABEL: null},
                "resourceVersion": "9",
            }})
        );
        let plain = kept(&secret(json!({"metadata": {"name": "s"}})));
        assert!(matches!(
            plan(&s, &plain, &Policy::default(), DUE, now()),
            Plan::Skip(_)
        ));
    }

    #[test]
    fn bad_annotations_wrong_types_and_corrupt_data_are_skipped() {
        let s = SecretRef::new("ns", "s");
        let bad = opted_in(json!({REGISTRIES_ANNOTATION: "123/us-west-2"}), None);
        let Plan::Skip(msg) = plan(&s, &kept(&bad), &Policy::default(), DUE, now()) else {
            panic!()
        };
        let msg = msg.to_string();
        assert!(msg.contains("account id 123 has 3 digits"), "{msg}");
        let mut opaque = opted_in(
            json!({REGISTRIES_ANNOTATION: "123456789012/us-west-2"}),
            None,
        );
        opaque.type_ = Some("Opaque".into());
        assert!(
            matches!(plan(&s, &kept(&opaque), &Policy::default(), DUE, now()), Plan::Skip(m) if m.to_string().contains("type is \"Opaque\""))
        );
        let corrupt = opted_in(
            json!({REGISTRIES_ANNOTATION: "123456789012/us-west-2"}),
            Some(b"{not json"),
        );
        assert!(
            matches!(plan(&s, &kept(&corrupt), &Policy::default(), DUE, now()), Plan::Skip(m) if m.to_string().contains("not valid JSON"))
        );
        // Patching it would fail every time: skipped, said once, never retried.
        let mut frozen = opted_in(
            json!({REGISTRIES_ANNOTATION: "123456789012/us-west-2"}),
            None,
        );
        frozen.immutable = Some(true);
        assert!(
            matches!(plan(&s, &kept(&frozen), &Policy::default(), DUE, now()), Plan::Skip(m) if m.to_string().contains("immutable"))
        );
    }

    /// A Secret as kubeecr left it after `filled`, with `data` as given.
    fn as_filled(object: &Secret, filled: &Filled, data: &[(&str, &[u8])]) -> KeptSecret {
        let mut v = serde_json::to_value(object).unwrap();
        v["metadata"]["labels"] = json!({ MANAGED_LABEL: "true" });
        for (k, val) in filled.annotations() {
            v["metadata"]["annotations"][k] = json!(val);
        }
        let data: Map<String, Value> = data
            .iter()
            .map(|(k, b)| (k.to_string(), json!(k8s_openapi::ByteString(b.to_vec()))))
            .collect();
        v["data"] = Value::Object(data);
        kept(&secret(v))
    }

    #[test]
    fn a_basic_auth_secret_is_up_to_date_foreign_or_due_as_its_password_says() {
        let s = SecretRef::new("ns", "s");
        let basic = secret(json!({
            "metadata": {"name": "s", "namespace": "ns", "resourceVersion": "7",
                         "annotations": {REGISTRIES_ANNOTATION: "123456789012/us-west-2"}},
            "type": "kubernetes.io/basic-auth",
        }));
        let (binding, filled) = fill_with(&basic, "pw-1");
        assert_eq!(
            filled.data,
            [
                ("username", b"AWS".to_vec()),
                ("password", b"pw-1".to_vec())
            ]
        );
        let plan_of = |k: &KeptSecret| plan(&s, k, &Policy::default(), DUE, now());
        let held = as_filled(
            &basic,
            &filled,
            &[("username", b"AWS"), ("password", b"pw-1")],
        );
        assert!(matches!(plan_of(&held), Plan::UpToDate { due_at: Some(_) }));
        assert_eq!(fill_patch(&held, &binding, &filled), None);
        // Edited by hand: foreign, so replaced.
        let edited = as_filled(
            &basic,
            &filled,
            &[("username", b"AWS"), ("password", b"mine")],
        );
        assert!(
            matches!(
                plan_of(&edited),
                Plan::Fill {
                    reason: DueReason::NotWrittenByKubeecr(_),
                    ..
                }
            ),
            "{:?}",
            plan_of(&edited)
        );
        // The password gone: due.
        let gone = as_filled(&basic, &filled, &[("username", b"AWS")]);
        assert!(matches!(
            plan_of(&gone),
            Plan::Fill {
                reason: DueReason::MissingRegistries(_),
                ..
            }
        ));
        // Another host form for the same password: due for that host, not foreign.
        let mut fips = basic.clone();
        fips.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert("deft.com/kubeecr-hosts".into(), "fips".into());
        let moved = as_filled(
            &fips,
            &filled,
            &[("username", b"AWS"), ("password", b"pw-1")],
        );
        assert!(
            matches!(
                plan_of(&moved),
                Plan::Fill {
                    reason: DueReason::MissingRegistries(_),
                    ..
                }
            ),
            "{:?}",
            plan_of(&moved)
        );
        // The patch writes both keys, and no .dockerconfigjson.
        let patch = fill_patch(&gone, &binding, &filled).unwrap();
        assert_eq!(
            patch["data"]
                .as_object()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["username", "password"]
        );
    }
}
