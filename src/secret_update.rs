//! What kubeecr writes into an opted-in Secret, and when a Secret is due for it.
//!
//! Pure: tokens come in, bytes and an expiry go out. Both the webhook and the refresher use it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use crate::annotation::{EXPIRES_AT_ANNOTATION, EcrBinding, Registry};
use crate::dockerconfig::{self, DockerConfigError, RegistryCredential};
use crate::token::{Token, TokenKey};

/// Why a secret needs a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DueReason {
    NeverFilled,
    UnreadableExpiry(String),
    ExpiresSoon(Timestamp),
    MissingRegistries(Vec<String>),
    Forced,
}

impl fmt::Display for DueReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NeverFilled => write!(f, "no {EXPIRES_AT_ANNOTATION} yet"),
            Self::UnreadableExpiry(v) => write!(f, "{EXPIRES_AT_ANNOTATION} {v:?} is not RFC 3339"),
            Self::ExpiresSoon(at) => write!(f, "token expires at {at}"),
            Self::MissingRegistries(hosts) => {
                write!(f, "no credentials yet for {}", hosts.join(", "))
            }
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
    annotations: &BTreeMap<String, String>,
    dockerconfigjson: Option<&[u8]>,
    now: Timestamp,
    policy: DuePolicy,
) -> Result<Option<DueReason>, DockerConfigError> {
    let missing = missing_hosts(binding, dockerconfigjson)?;
    if policy.force {
        return Ok(Some(DueReason::Forced));
    }
    if !missing.is_empty() {
        return Ok(Some(DueReason::MissingRegistries(missing)));
    }
    let Some(recorded) = annotations.get(EXPIRES_AT_ANNOTATION) else {
        return Ok(Some(DueReason::NeverFilled));
    };
    let Ok(expires_at) = recorded.parse::<Timestamp>() else {
        return Ok(Some(DueReason::UnreadableExpiry(recorded.clone())));
    };
    if expires_at <= now + policy.refresh_before {
        return Ok(Some(DueReason::ExpiresSoon(expires_at)));
    }
    Ok(None)
}

/// The registry hosts of the binding that hold no credentials yet.
pub fn missing_hosts(
    binding: &EcrBinding,
    dockerconfigjson: Option<&[u8]>,
) -> Result<Vec<String>, DockerConfigError> {
    let present = dockerconfig::hosts_with_credentials(dockerconfigjson)?;
    Ok(binding
        .registries
        .iter()
        .map(Registry::host)
        .filter(|h| !present.contains(h))
        .collect())
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

/// The new `.dockerconfigjson` and the expiry to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filled {
    pub dockerconfigjson: Vec<u8>,
    pub expires_at: Timestamp,
}

impl Filled {
    /// The value of `deft.com/kubeecr-expires-at`.
    pub fn expires_at_annotation(&self) -> String {
        format_expiry(self.expires_at)
    }
}

/// RFC 3339 in UTC, whole seconds.
pub fn format_expiry(at: Timestamp) -> String {
    Timestamp::from_second(at.as_second())
        .expect("a valid timestamp")
        .to_string()
}

/// Writes a token for every registry of the binding; keeps everything else.
///
/// Panics if a key of `token_keys(binding)` has no token: callers fetch them all first.
pub fn fill(
    binding: &EcrBinding,
    existing: Option<&[u8]>,
    tokens: &BTreeMap<TokenKey, Arc<Token>>,
) -> Result<Filled, DockerConfigError> {
    let hosts: Vec<(String, &Token)> = binding
        .registries
        .iter()
        .map(|r| {
            let token = tokens
                .get(&token_key(binding, r))
                .expect("a token for every key of the binding");
            (r.host(), token.as_ref())
        })
        .collect();
    let credentials: Vec<RegistryCredential<'_>> = hosts
        .iter()
        .map(|(host, token)| RegistryCredential {
            host,
            username: &token.username,
            password: token.password(),
        })
        .collect();
    let expires_at = hosts
        .iter()
        .map(|(_, t)| t.expires_at)
        .min()
        .expect("a binding has at least one registry");
    Ok(Filled {
        dockerconfigjson: dockerconfig::merge(existing, &credentials)?,
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use secrecy::SecretString;

    use super::*;
    use crate::annotation::{REGISTRIES_ANNOTATION, SecretRef, binding_of};
    use crate::token::{FetchedToken, decode};

    fn binding(value: &str) -> EcrBinding {
        let a = BTreeMap::from([(REGISTRIES_ANNOTATION.to_string(), value.to_string())]);
        binding_of(&SecretRef::new("ns", "s"), &a).unwrap().unwrap()
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

    const POLICY: DuePolicy = DuePolicy {
        refresh_before: Duration::from_secs(4 * 3600),
        force: false,
    };

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
            Some(br#"{"auths":{"quay.io":{"auth":"eA=="}}}"#),
            &tokens,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&filled.dockerconfigjson).unwrap();
        assert_eq!(
            v["auths"]["111111111111.dkr.ecr.us-west-2.amazonaws.com"]["password"],
            "us"
        );
        assert_eq!(
            v["auths"]["222222222222.dkr.ecr.eu-west-1.amazonaws.com"]["password"],
            "eu"
        );
        assert_eq!(v["auths"]["quay.io"]["auth"], "eA==");
        assert_eq!(filled.expires_at_annotation(), "2026-11-29T19:00:00Z");
    }

    #[test]
    fn due_when_never_filled_missing_registries_expiring_or_forced() {
        let b = binding("111111111111/us-west-2,222222222222/eu-west-1");
        let now = at("2026-11-29T08:00:00Z");
        let full = br#"{"auths":{"111111111111.dkr.ecr.us-west-2.amazonaws.com":{"auth":"a"},"222222222222.dkr.ecr.eu-west-1.amazonaws.com":{"auth":"b"}}}"#;
        let partial = br#"{"auths":{"111111111111.dkr.ecr.us-west-2.amazonaws.com":{"auth":"a"}}}"#;
        let with_expiry =
            |v: &str| BTreeMap::from([(EXPIRES_AT_ANNOTATION.to_string(), v.to_string())]);

        let fresh = with_expiry("2026-11-29T19:00:00Z");
        assert_eq!(
            due_reason(&b, &fresh, Some(full), now, POLICY).unwrap(),
            None
        );
        assert_eq!(
            due_reason(&b, &BTreeMap::new(), Some(full), now, POLICY).unwrap(),
            Some(DueReason::NeverFilled)
        );
        assert_eq!(
            due_reason(&b, &fresh, Some(partial), now, POLICY).unwrap(),
            Some(DueReason::MissingRegistries(vec![
                "222222222222.dkr.ecr.eu-west-1.amazonaws.com".into()
            ]))
        );
        assert_eq!(
            due_reason(
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
            due_reason(&b, &with_expiry("tomorrow"), Some(full), now, POLICY).unwrap(),
            Some(DueReason::UnreadableExpiry(_))
        ));
        let forced = DuePolicy {
            force: true,
            ..POLICY
        };
        assert_eq!(
            due_reason(&b, &fresh, Some(full), now, forced).unwrap(),
            Some(DueReason::Forced)
        );
        assert_eq!(
            due_reason(&b, &fresh, None, now, POLICY).unwrap(),
            Some(DueReason::MissingRegistries(vec![
                "111111111111.dkr.ecr.us-west-2.amazonaws.com".into(),
                "222222222222.dkr.ecr.eu-west-1.amazonaws.com".into(),
            ]))
        );
    }

    #[test]
    fn corrupt_config_is_reported_not_overwritten() {
        let b = binding("111111111111/us-west-2");
        assert!(
            due_reason(
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
        assert!(fill(&b, Some(b"nope"), &tokens).is_err());
    }
}
