//! ECR authorization tokens: what they are keyed by, how they decode, when they expire.
//!
//! Pure. Passwords live in `SecretString` so that no `Debug` or log line can print them.

use std::fmt;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jiff::Timestamp;
use secrecy::{ExposeSecret, SecretString};

use crate::contract::annotation::RoleArn;

/// How long ECR tokens live; used when ECR reports no usable expiry.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// A reported expiry further out than this is not believed.
pub const MAX_BELIEVABLE_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// One GetAuthorizationToken call serves every registry of a (principal, region).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenKey {
    /// `None`: the workload's own credentials.
    pub role: Option<RoleArn>,
    pub region: String,
}

impl fmt::Display for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.role {
            Some(role) => write!(f, "{} as {role}", self.region),
            None => write!(f, "{} with the default credentials", self.region),
        }
    }
}

/// What GetAuthorizationToken returned, undecoded.
pub struct FetchedToken {
    /// base64 of `<username>:<password>`.
    pub authorization_token: SecretString,
    pub expires_at: Option<Timestamp>,
}

/// A decoded token, ready to write.
#[derive(Clone)]
pub struct Token {
    pub username: String,
    password: SecretString,
    pub expires_at: Timestamp,
}

impl Token {
    pub fn password(&self) -> &str {
        self.password.expose_secret()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// ECR's expiry could not be believed; the token is taken to live `TOKEN_LIFETIME`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryAnomaly {
    Missing,
    Past(Timestamp),
    TooFar(Timestamp),
}

impl fmt::Display for ExpiryAnomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => f.write_str("no expiresAt"),
            Self::Past(at) => write!(f, "expiresAt {at} is not in the future"),
            Self::TooFar(at) => write!(f, "expiresAt {at} is more than 24h away"),
        }
    }
}

/// The token does not decode. The message never includes the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ECR returned an authorization token that is not base64 of <user>:<password>")]
pub struct MalformedToken;

/// The expiry to trust: ECR's when believable, else `TOKEN_LIFETIME` from the fetch.
pub fn effective_expiry(
    reported: Option<Timestamp>,
    fetched_at: Timestamp,
) -> (Timestamp, Option<ExpiryAnomaly>) {
    let fallback = fetched_at + TOKEN_LIFETIME;
    match reported {
        None => (fallback, Some(ExpiryAnomaly::Missing)),
        Some(at) if at <= fetched_at => (fallback, Some(ExpiryAnomaly::Past(at))),
        Some(at) if at > fetched_at + MAX_BELIEVABLE_LIFETIME => {
            (fallback, Some(ExpiryAnomaly::TooFar(at)))
        }
        Some(at) => (at, None),
    }
}

/// Decodes a fetched token; the expiry is already sanitized by `effective_expiry`.
pub fn decode(fetched: &FetchedToken, expires_at: Timestamp) -> Result<Token, MalformedToken> {
    let raw = STANDARD
        .decode(fetched.authorization_token.expose_secret().trim())
        .map_err(|_| MalformedToken)?;
    let raw = String::from_utf8(raw).map_err(|_| MalformedToken)?;
    let (username, password) = raw.split_once(':').ok_or(MalformedToken)?;
    if username.is_empty() || password.is_empty() {
        return Err(MalformedToken);
    }
    Ok(Token {
        username: username.to_string(),
        password: SecretString::from(password.to_string()),
        expires_at: Timestamp::from_second(expires_at.as_second()).expect("a valid timestamp"),
    })
}

/// Why no token could be had. Never holds a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ECR token for {key}: {message}")]
pub struct FetchError {
    pub key: TokenKey,
    pub kind: FetchErrorKind,
    /// The whole story, for kubeecr's own log: endpoints, principals, the SDK's error chain.
    pub message: String,
    /// The AWS error code, when AWS answered with one (`ServerException`).
    pub code: Option<String>,
}

/// Longest AWS error code quoted to a requester.
const MAX_CODE: usize = 64;

impl FetchError {
    pub fn new(key: &TokenKey, kind: FetchErrorKind, message: String) -> Self {
        Self {
            key: key.clone(),
            kind,
            message,
            code: None,
        }
    }

    /// Keeps AWS's error code, if it looks like one, for `brief`.
    pub fn with_code(mut self, code: Option<&str>) -> Self {
        self.code = code
            .filter(|c| {
                !c.is_empty()
                    && c.len() <= MAX_CODE
                    && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.')
            })
            .map(str::to_string);
        self
    }

    /// A short, stable reason for requesters (admission warnings and denials, Events):
    /// `access denied for us-west-2`. Never the SDK's chain, endpoints or principals: those
    /// go to kubeecr's own log from `message`.
    pub fn brief(&self) -> String {
        let what = match (self.kind, &self.code) {
            (FetchErrorKind::Service, Some(code)) => format!("ECR error {code}"),
            (kind, _) => kind.reason().to_string(),
        };
        // The role is the requester's own annotation, but may be 2 kB long.
        let who = match &self.key.role {
            Some(role) => format!(" as {}", crate::contract::quote::prefix(role.as_str())),
            None => String::new(),
        };
        format!("{what} for {}{who}", self.key.region)
    }
}

/// Coarse cause, usable as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FetchErrorKind {
    /// AWS refused kubeecr's principal (IAM, STS AssumeRole, expired or unknown keys).
    Denied,
    /// No AWS credentials were found.
    NoCredentials,
    /// AWS asked kubeecr to slow down.
    Throttled,
    /// ECR or STS answered with another error.
    Service,
    /// No answer: connection refused, DNS.
    Unreachable,
    /// No answer in time (the SDK's timeout, or the webhook's deadline).
    Timeout,
    /// The answer could not be used.
    Malformed,
    /// No token yet, and the last fetch was too recent to try again.
    TooSoon,
}

impl FetchErrorKind {
    /// What a requester is told.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Denied => "access denied",
            Self::NoCredentials => "kubeecr has no AWS credentials",
            Self::Throttled => "throttled by ECR",
            Self::Service => "ECR error",
            Self::Unreachable => "ECR unreachable",
            Self::Timeout => "ECR did not answer in time",
            Self::Malformed => "ECR answer unusable",
            Self::TooSoon => "no ECR token yet",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetched(raw: &str) -> FetchedToken {
        FetchedToken {
            authorization_token: SecretString::from(STANDARD.encode(raw)),
            expires_at: None,
        }
    }

    #[test]
    fn decodes_user_and_password() {
        let at: Timestamp = "2026-11-29T12:00:00.5Z".parse().unwrap();
        let t = decode(&fetched("AWS:abc:def"), at).unwrap();
        assert_eq!(t.username, "AWS");
        assert_eq!(t.password(), "abc:def");
        assert_eq!(t.expires_at.to_string(), "2026-11-29T12:00:00Z");
    }

    #[test]
    fn debug_never_shows_the_password() {
        let t = decode(&fetched("AWS:hunter2"), Timestamp::UNIX_EPOCH).unwrap();
        assert!(!format!("{t:?}").contains("hunter2"));
    }

    #[test]
    fn malformed_tokens_are_refused_without_echo() {
        for raw in ["nocolon", ":pw", "AWS:"] {
            assert_eq!(
                decode(&fetched(raw), Timestamp::UNIX_EPOCH).unwrap_err(),
                MalformedToken
            );
        }
        let not_b64 = FetchedToken {
            authorization_token: SecretString::from("!!!".to_string()),
            expires_at: None,
        };
        assert!(decode(&not_b64, Timestamp::UNIX_EPOCH).is_err());
    }

    #[test]
    fn unbelievable_expiries_fall_back_to_twelve_hours() {
        let now: Timestamp = "2026-11-29T00:00:00Z".parse().unwrap();
        let twelve = now + TOKEN_LIFETIME;
        // moto answers with a date in 2015.
        let moto: Timestamp = "2015-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(
            effective_expiry(Some(moto), now),
            (twelve, Some(ExpiryAnomaly::Past(moto)))
        );
        assert_eq!(
            effective_expiry(None, now),
            (twelve, Some(ExpiryAnomaly::Missing))
        );
        let far: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(
            effective_expiry(Some(far), now),
            (twelve, Some(ExpiryAnomaly::TooFar(far)))
        );
        let fine = now + Duration::from_secs(3600);
        assert_eq!(effective_expiry(Some(fine), now), (fine, None));
    }
}
