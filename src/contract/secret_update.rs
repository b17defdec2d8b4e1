//! What kubeecr writes into an opted-in Secret, and when a Secret is due for it.
//!
//! Pure: tokens come in, bytes and an expiry go out. Both the webhook and the refresher use it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use crate::contract::annotation::{
    EXPIRES_AT_ANNOTATION, EcrBinding, FINGERPRINTS_ANNOTATION, Registry,
};
use crate::contract::dockerconfig::{
    self, Credentials, DOCKER_CONFIG_JSON_KEY, DockerConfigError, RegistryCredential,
};
use crate::contract::kept::{ConfigView, recorded_fingerprints};
use crate::contract::marks::Marks;
use crate::contract::quote::quoted;
use crate::contract::shape::{self, PASSWORD_KEY, Shape, USERNAME_KEY};
use crate::contract::token::{MAX_BELIEVABLE_LIFETIME, Token, TokenKey};

/// Why a secret needs a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DueReason {
    NeverFilled,
    UnreadableExpiry(String),
    /// Recorded further out than any ECR token lives: not written by kubeecr.
    UnbelievableExpiry(Timestamp),
    ExpiresSoon(Timestamp),
    MissingRegistries(Vec<String>),
    /// These registries hold credentials that kubeecr did not write (edited by hand, or
    /// written before fingerprints were recorded), so the recorded expiry says nothing.
    NotWrittenByKubeecr(Vec<String>),
    Forced,
}

impl fmt::Display for DueReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NeverFilled => write!(f, "no {EXPIRES_AT_ANNOTATION} yet"),
            Self::UnreadableExpiry(v) => {
                write!(f, "{EXPIRES_AT_ANNOTATION} {} is not RFC 3339", quoted(v))
            }
            Self::UnbelievableExpiry(at) => write!(
                f,
                "{EXPIRES_AT_ANNOTATION} {at} is further out than any ECR token lives"
            ),
            Self::ExpiresSoon(at) => write!(f, "token expires at {at}"),
            Self::MissingRegistries(hosts) => {
                write!(f, "no credentials yet for {}", hosts.join(", "))
            }
            Self::NotWrittenByKubeecr(registries) => write!(
                f,
                "credentials for {} are not the ones kubeecr wrote",
                registries.join(", ")
            ),
            Self::Forced => f.write_str("forced"),
        }
    }
}

/// When to refresh.
#[derive(Debug, Clone, Copy)]
pub struct DuePolicy {
    pub refresh_before: Duration,
    pub force: bool,
}

/// Whether the secret needs a write now. `None`: it is fine as it is.
pub fn due_reason(
    binding: &EcrBinding,
    marks: &Marks,
    config: ConfigView<'_>,
    now: Timestamp,
    policy: DuePolicy,
) -> Result<Option<DueReason>, DockerConfigError> {
    let present = config.credentials(binding, marks)?;
    let missing = missing_hosts(binding, marks, &present);
    if policy.force {
        return Ok(Some(DueReason::Forced));
    }
    if !missing.is_empty() {
        return Ok(Some(DueReason::MissingRegistries(missing)));
    }
    let Some(recorded) = marks.expires_at() else {
        return Ok(Some(DueReason::NeverFilled));
    };
    let foreign = foreign_registries(binding, marks, &present);
    if !foreign.is_empty() {
        return Ok(Some(DueReason::NotWrittenByKubeecr(foreign)));
    }
    let Ok(expires_at) = recorded.parse::<Timestamp>() else {
        return Ok(Some(DueReason::UnreadableExpiry(recorded.to_string())));
    };
    if !is_believable(expires_at, now) {
        return Ok(Some(DueReason::UnbelievableExpiry(expires_at)));
    }
    if expires_at <= now + policy.refresh_before {
        return Ok(Some(DueReason::ExpiresSoon(expires_at)));
    }
    Ok(None)
}

/// Whether a recorded expiry could be an ECR token's: no later than the longest lifetime
/// kubeecr believes from now.
pub fn is_believable(expires_at: Timestamp, now: Timestamp) -> bool {
    expires_at <= now + MAX_BELIEVABLE_LIFETIME
}

/// A write now would give the Secret its first token from kubeecr: none was recorded yet.
pub fn is_first_fill(marks: &Marks) -> bool {
    marks.expires_at().is_none()
}

/// When a secret that is not due now becomes due: its recorded expiry less `refresh_before`.
pub fn due_at(marks: &Marks, refresh_before: Duration) -> Option<Timestamp> {
    let expires_at: Timestamp = marks.expires_at()?.parse().ok()?;
    expires_at.checked_sub(refresh_before).ok()
}

/// The hosts of the binding that hold no credentials yet, or none kubeecr recorded while it
/// recorded others': a host the annotations have just added (a new registry or host form), so
/// it is due, not foreign.
fn missing_hosts(binding: &EcrBinding, marks: &Marks, present: &Credentials) -> Vec<String> {
    let recorded = recorded_fingerprints(marks);
    binding
        .targets()
        .filter(|t| {
            !present.contains_key(&t.host())
                || (!recorded.is_empty() && !recorded.contains_key(t.key().as_str()))
        })
        .map(|t| t.host())
        .collect()
}

/// The hosts (by their fingerprint key) whose credentials do not match the fingerprint
/// kubeecr recorded.
fn foreign_registries(binding: &EcrBinding, marks: &Marks, present: &Credentials) -> Vec<String> {
    let recorded = recorded_fingerprints(marks);
    binding
        .targets()
        .map(|t| (t.key(), t.host()))
        .filter(|(key, host)| {
            recorded.get(key.as_str()).copied() != present.get(host).map(String::as_str)
        })
        .map(|(key, _)| key)
        .collect()
}

/// The object holds credentials for every registry, all as kubeecr wrote them.
pub fn holds_own_credentials(binding: &EcrBinding, marks: &Marks, config: ConfigView<'_>) -> bool {
    config.credentials(binding, marks).is_ok_and(|present| {
        missing_hosts(binding, marks, &present).is_empty()
            && foreign_registries(binding, marks, &present).is_empty()
    })
}

/// `<key>=<fingerprint>` for every host (`Target::key`), as recorded in
/// `deft.com/kubeecr-fingerprints`; `None` when a host holds no credentials.
fn fingerprints_of(binding: &EcrBinding, present: &Credentials) -> Option<String> {
    let pairs: Option<Vec<String>> = binding
        .targets()
        .map(|t| Some(format!("{}={}", t.key(), present.get(&t.host())?)))
        .collect();
    Some(pairs?.join(","))
}

/// The token that serves `registry`: its region, with the binding's role.
fn token_key(binding: &EcrBinding, registry: &Registry) -> TokenKey {
    TokenKey {
        role: binding.role.clone(),
        region: registry.region().to_string(),
    }
}

/// The tokens one secret needs: one per (role, region), not one per registry.
pub fn token_keys(binding: &EcrBinding) -> Vec<TokenKey> {
    let mut keys: Vec<TokenKey> = binding
        .registries
        .iter()
        .map(|r| token_key(binding, r))
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// The new `.dockerconfigjson`, and the annotations that describe it. Its `Debug` leaves the
/// content out: it holds passwords.
#[derive(Clone, PartialEq, Eq)]
pub struct Filled {
    /// The data keys to write, with their bytes.
    pub data: Vec<(&'static str, Vec<u8>)>,
    pub expires_at: Timestamp,
    /// The value of `deft.com/kubeecr-fingerprints`.
    pub fingerprints: String,
}

impl fmt::Debug for Filled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<&str> = self.data.iter().map(|(k, _)| *k).collect();
        f.debug_struct("Filled")
            .field("data", &format_args!("{keys:?}, values redacted"))
            .field("expires_at", &self.expires_at)
            .field("fingerprints", &self.fingerprints)
            .finish()
    }
}

impl Filled {
    /// The bytes written to `key`.
    pub fn value(&self, key: &str) -> Option<&[u8]> {
        self.data
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// kubeecr's annotations for this content, as (key, value).
    pub fn annotations(&self) -> [(&'static str, String); 2] {
        [
            (EXPIRES_AT_ANNOTATION, format_expiry(self.expires_at)),
            (FINGERPRINTS_ANNOTATION, self.fingerprints.clone()),
        ]
    }

    /// Whether a Secret with this config and these marks already holds exactly this: every
    /// form of every host the same credentials (by fingerprint, so the tokens themselves need
    /// not be kept), and the same annotations.
    pub fn is_held_by(&self, binding: &EcrBinding, config: ConfigView<'_>, marks: &Marks) -> bool {
        let held = config
            .credentials(binding, marks)
            .ok()
            .and_then(|present| fingerprints_of(binding, &present));
        held.as_deref() == Some(self.fingerprints.as_str())
            && self
                .annotations()
                .iter()
                .all(|(k, v)| marks.annotation(k) == Some(v.as_str()))
    }
}

/// RFC 3339 in UTC, whole seconds.
pub fn format_expiry(at: Timestamp) -> String {
    Timestamp::from_second(at.as_second())
        .expect("a valid timestamp")
        .to_string()
}

/// Writes a token for every host of the binding, as the Secret's shape holds it; keeps
/// everything else.
///
/// Panics if a key of `token_keys(binding)` has no token: callers fetch them all first.
pub fn fill(
    binding: &EcrBinding,
    shape: Shape,
    existing: Option<&[u8]>,
    tokens: &BTreeMap<TokenKey, Arc<Token>>,
) -> Result<Filled, DockerConfigError> {
    let hosts: Vec<(String, &Token)> = binding
        .targets()
        .map(|t| {
            let token = tokens
                .get(&token_key(binding, t.registry))
                .expect("a token for every key of the binding");
            (t.host(), token.as_ref())
        })
        .collect();
    let expires_at = hosts
        .iter()
        .map(|(_, t)| t.expires_at)
        .min()
        .expect("a binding has at least one registry");
    if shape.holds_one_host() {
        // One host: `standing` refuses the rest.
        let (_, token) = hosts[0];
        let (username, password) = (token.username.as_bytes(), token.password().as_bytes());
        let target = binding.targets().next().expect("one host");
        return Ok(Filled {
            fingerprints: format!(
                "{}={}",
                target.key(),
                shape::fingerprint(username, password)
            ),
            data: vec![
                (USERNAME_KEY, username.to_vec()),
                (PASSWORD_KEY, password.to_vec()),
            ],
            expires_at,
        });
    }
    let credentials: Vec<RegistryCredential<'_>> = hosts
        .iter()
        .map(|(host, token)| RegistryCredential {
            host,
            username: &token.username,
            password: token.password(),
        })
        .collect();
    let dockerconfigjson = dockerconfig::merge(existing, &credentials)?;
    let written = dockerconfig::credentials(Some(&dockerconfigjson))?;
    let fingerprints =
        fingerprints_of(binding, &written).expect("the merge writes every registry's host");
    Ok(Filled {
        data: vec![(DOCKER_CONFIG_JSON_KEY, dockerconfigjson)],
        expires_at,
        fingerprints,
    })
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use secrecy::SecretString;

    use super::*;
    use crate::contract::annotation::{REGISTRIES_ANNOTATION, SecretRef, binding_of};
    use crate::contract::token::{FetchedToken, decode};

    fn binding(value: &str) -> EcrBinding {
        let a = BTreeMap::from([(REGISTRIES_ANNOTATION.to_string(), value.to_string())]);
        binding_of(
            &SecretRef::new("ns", "s"),
            &Marks::of_annotations(&a),
            &Default::default(),
        )
        .unwrap()
        .unwrap()
    }

    fn token(password: &str, expires_at: Timestamp) -> Arc<Token> {
        let raw = base64::engine::general_purpose::STANDARD.encode(format!("AWS:{password}"));
        let fetched = FetchedToken {
            authorization_token: SecretString::from(raw),
            expires_at: None,
        };
        Arc::new(decode(&fetched, expires_at).unwrap())
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// `due_reason` over a whole config and a map of annotations, as a Secret holds them.
    fn due_reason_of(
        b: &EcrBinding,
        annotations: &BTreeMap<String, String>,
        config: Option<&[u8]>,
        now: Timestamp,
        policy: DuePolicy,
    ) -> Result<Option<DueReason>, DockerConfigError> {
        due_reason(
            b,
            &Marks::of_annotations(annotations),
            ConfigView::Whole(config),
            now,
            policy,
        )
    }

    fn holds_of(
        b: &EcrBinding,
        annotations: &BTreeMap<String, String>,
        config: Option<&[u8]>,
    ) -> bool {
        holds_own_credentials(
            b,
            &Marks::of_annotations(annotations),
            ConfigView::Whole(config),
        )
    }

    const POLICY: DuePolicy = DuePolicy {
        refresh_before: Duration::from_secs(4 * 3600),
        force: false,
    };

    #[test]
    fn every_host_form_gets_the_one_token_and_its_own_fingerprint() {
        let mut a = BTreeMap::from([
            (
                REGISTRIES_ANNOTATION.to_string(),
                "123456789012/us-east-1".to_string(),
            ),
            (
                crate::contract::hosts::HOSTS_ANNOTATION.to_string(),
                "standard,fips".to_string(),
            ),
        ]);
        let b = binding_of(
            &SecretRef::new("ns", "s"),
            &Marks::of_annotations(&a),
            &Default::default(),
        )
        .unwrap()
        .unwrap();
        let keys = token_keys(&b);
        assert_eq!(keys.len(), 1, "one ECR call serves every form");
        let expires = at("2030-01-01T00:00:00Z");
        let tokens = BTreeMap::from([(keys[0].clone(), token("pw-1", expires))]);
        let filled = fill(&b, Shape::DockerConfig, None, &tokens).unwrap();
        let written =
            dockerconfig::credentials(Some(filled.value(DOCKER_CONFIG_JSON_KEY).unwrap())).unwrap();
        let standard = written["123456789012.dkr.ecr.us-east-1.amazonaws.com"].clone();
        assert_eq!(
            written["123456789012.dkr.ecr-fips.us-east-1.amazonaws.com"],
            standard
        );
        assert_eq!(
            filled.fingerprints,
            format!("123456789012/us-east-1={standard},123456789012/us-east-1@fips={standard}")
        );
        for (k, v) in filled.annotations() {
            a.insert(k.to_string(), v);
        }
        let config = filled.value(DOCKER_CONFIG_JSON_KEY);
        assert!(holds_of(&b, &a, config));
        // The FIPS entry removed by hand: due again, for that host.
        let without_fips = dockerconfig::strip(
            filled.value(DOCKER_CONFIG_JSON_KEY).unwrap(),
            &["123456789012.dkr.ecr-fips.us-east-1.amazonaws.com"],
        )
        .unwrap();
        assert_eq!(
            due_reason_of(
                &b,
                &a,
                Some(&without_fips),
                at("2029-12-31T00:00:00Z"),
                POLICY
            ),
            Ok(Some(DueReason::MissingRegistries(vec![
                "123456789012.dkr.ecr-fips.us-east-1.amazonaws.com".to_string()
            ])))
        );
    }

    #[test]
    fn debug_output_holds_no_password() {
        let b = binding("123456789012/us-west-2");
        let key = token_keys(&b).remove(0);
        let tokens = BTreeMap::from([(key, token("hunter2-pw", at("2030-01-01T00:00:00Z")))]);
        let filled = fill(&b, Shape::DockerConfig, None, &tokens).unwrap();
        let debug = format!("{filled:?}");
        let auth = base64::engine::general_purpose::STANDARD.encode("AWS:hunter2-pw");
        assert!(
            !debug.contains("hunter2") && !debug.contains(&auth),
            "{debug}"
        );
        assert!(debug.contains("values redacted"), "{debug}");
    }

    #[test]
    fn one_key_per_region_for_many_accounts() {
        let b = binding("111111111111/us-west-2,222222222222/us-west-2,333333333333/eu-west-1");
        let regions: Vec<String> = token_keys(&b).into_iter().map(|k| k.region).collect();
        assert_eq!(regions, ["eu-west-1", "us-west-2"]);
    }

    #[test]
    fn fills_every_registry_and_records_the_earliest_expiry() {
        let b = binding("111111111111/us-west-2,222222222222/eu-west-1");
        let tokens = BTreeMap::from([
            (
                token_keys(&b)[0].clone(),
                token("eu", at("2026-11-29T20:00:00Z")),
            ),
            (
                token_keys(&b)[1].clone(),
                token("us", at("2026-11-29T19:00:00Z")),
            ),
        ]);
        let filled = fill(
            &b,
            Shape::DockerConfig,
            Some(br#"{"auths":{"quay.io":{"auth":"eA=="}}}"#),
            &tokens,
        )
        .unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(filled.value(DOCKER_CONFIG_JSON_KEY).unwrap()).unwrap();
        assert_eq!(
            v["auths"]["111111111111.dkr.ecr.us-west-2.amazonaws.com"]["password"],
            "us"
        );
        assert_eq!(
            v["auths"]["222222222222.dkr.ecr.eu-west-1.amazonaws.com"]["password"],
            "eu"
        );
        assert_eq!(v["auths"]["quay.io"]["auth"], "eA==");
        assert_eq!(format_expiry(filled.expires_at), "2026-11-29T19:00:00Z");
    }

    /// A secret as kubeecr fills it: data and annotations.
    fn filled(b: &EcrBinding, expires_at: &str) -> (Vec<u8>, BTreeMap<String, String>) {
        let tokens = token_keys(b)
            .into_iter()
            .map(|k| (k, token("pw", at(expires_at))))
            .collect();
        let f = fill(b, Shape::DockerConfig, None, &tokens).unwrap();
        let annotations = f
            .annotations()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        (
            f.value(DOCKER_CONFIG_JSON_KEY).unwrap().to_vec(),
            annotations,
        )
    }

    #[test]
    fn due_when_never_filled_missing_registries_expiring_or_forced() {
        let b = binding("111111111111/us-west-2,222222222222/eu-west-1");
        let now = at("2026-11-29T08:00:00Z");
        let (full, fresh) = filled(&b, "2026-11-29T19:00:00Z");
        let full = full.as_slice();
        let partial = br#"{"auths":{"111111111111.dkr.ecr.us-west-2.amazonaws.com":{"auth":"a"}}}"#;
        let with_expiry = |v: &str| {
            let mut a = fresh.clone();
            a.insert(EXPIRES_AT_ANNOTATION.to_string(), v.to_string());
            a
        };

        assert_eq!(
            due_reason_of(&b, &fresh, Some(full), now, POLICY).unwrap(),
            None
        );
        assert_eq!(
            due_reason_of(&b, &BTreeMap::new(), Some(full), now, POLICY).unwrap(),
            Some(DueReason::NeverFilled)
        );
        assert_eq!(
            due_reason_of(&b, &fresh, Some(partial), now, POLICY).unwrap(),
            Some(DueReason::MissingRegistries(vec![
                "222222222222.dkr.ecr.eu-west-1.amazonaws.com".into()
            ]))
        );
        assert_eq!(
            due_reason_of(
                &b,
                &with_expiry("2026-11-29T11:59:59Z"),
                Some(full),
                now,
                POLICY
            )
            .unwrap(),
            Some(DueReason::ExpiresSoon(at("2026-11-29T11:59:59Z")))
        );
        assert!(matches!(
            due_reason_of(&b, &with_expiry("tomorrow"), Some(full), now, POLICY).unwrap(),
            Some(DueReason::UnreadableExpiry(_))
        ));
        // Set by hand far out: no ECR token lives that long, so it is not kubeecr's.
        assert_eq!(
            due_reason_of(
                &b,
                &with_expiry("2999-01-01T00:00:00Z"),
                Some(full),
                now,
                POLICY
            )
            .unwrap(),
            Some(DueReason::UnbelievableExpiry(at("2999-01-01T00:00:00Z")))
        );
        let forced = DuePolicy {
            force: true,
            ..POLICY
        };
        assert_eq!(
            due_reason_of(&b, &fresh, Some(full), now, forced).unwrap(),
            Some(DueReason::Forced)
        );
        assert_eq!(
            due_reason_of(&b, &fresh, None, now, POLICY).unwrap(),
            Some(DueReason::MissingRegistries(vec![
                "111111111111.dkr.ecr.us-west-2.amazonaws.com".into(),
                "222222222222.dkr.ecr.eu-west-1.amazonaws.com".into(),
            ]))
        );
        assert_eq!(
            due_at(&Marks::of_annotations(&fresh), POLICY.refresh_before),
            Some(at("2026-11-29T15:00:00Z"))
        );
        assert_eq!(due_at(&Marks::default(), POLICY.refresh_before), None);
    }

    #[test]
    fn credentials_kubeecr_did_not_write_are_due_whatever_the_expiry() {
        let b = binding("111111111111/us-west-2,222222222222/eu-west-1");
        let now = at("2026-11-29T08:00:00Z");
        let (full, annotations) = filled(&b, "2026-11-29T19:00:00Z");
        assert!(holds_of(&b, &annotations, Some(&full)));

        // A hand-edited password, as `kubectl patch` writes it.
        let mut edited: serde_json::Value = serde_json::from_slice(&full).unwrap();
        edited["auths"]["222222222222.dkr.ecr.eu-west-1.amazonaws.com"]["password"] =
            "garbage".into();
        let edited = serde_json::to_vec(&edited).unwrap();
        assert_eq!(
            due_reason_of(&b, &annotations, Some(&edited), now, POLICY).unwrap(),
            Some(DueReason::NotWrittenByKubeecr(vec![
                "222222222222/eu-west-1".into()
            ]))
        );
        assert!(!holds_of(&b, &annotations, Some(&edited)));

        // Written before fingerprints were recorded: due once.
        let mut old = annotations.clone();
        old.remove(FINGERPRINTS_ANNOTATION);
        assert!(matches!(
            due_reason_of(&b, &old, Some(&full), now, POLICY).unwrap(),
            Some(DueReason::NotWrittenByKubeecr(r)) if r.len() == 2
        ));
        // A mangled annotation is no fingerprint at all.
        old.insert(FINGERPRINTS_ANNOTATION.into(), "nonsense".into());
        assert!(matches!(
            due_reason_of(&b, &old, Some(&full), now, POLICY).unwrap(),
            Some(DueReason::NotWrittenByKubeecr(_))
        ));
    }

    #[test]
    fn fingerprints_name_registries_and_change_with_the_token() {
        let b = binding("111111111111/us-west-2,222222222222/us-west-2");
        let (_, a1) = filled(&b, "2026-11-29T19:00:00Z");
        let v = &a1[FINGERPRINTS_ANNOTATION];
        let entries: Vec<&str> = v.split(',').collect();
        assert_eq!(entries.len(), 2);
        assert!(entries[0].starts_with("111111111111/us-west-2="), "{v}");
        assert!(entries[1].starts_with("222222222222/us-west-2="), "{v}");
        let other = fill(
            &b,
            Shape::DockerConfig,
            None,
            &BTreeMap::from([(
                token_keys(&b)[0].clone(),
                token("other", at("2026-11-29T19:00:00Z")),
            )]),
        )
        .unwrap();
        assert_ne!(&other.fingerprints, v);
        assert!(!v.contains("pw"));
    }

    #[test]
    fn corrupt_config_is_reported_not_overwritten() {
        let b = binding("111111111111/us-west-2");
        assert!(
            due_reason_of(
                &b,
                &BTreeMap::new(),
                Some(b"nope"),
                Timestamp::UNIX_EPOCH,
                POLICY
            )
            .is_err()
        );
        let tokens =
            BTreeMap::from([(token_keys(&b)[0].clone(), token("p", Timestamp::UNIX_EPOCH))]);
        assert!(fill(&b, Shape::DockerConfig, Some(b"nope"), &tokens).is_err());
    }
}
