//! Token cache: one fetch per (principal, region), shared by every secret and caller.
//!
//! Concurrent callers of the same key wait on one in-flight fetch. A fetch runs on its own
//! task, so a caller that gives up (an admission deadline) still leaves a warm cache behind.
//! A floor between fetches per key stops tight loops, whatever ECR answers.

use std::collections::HashMap;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use jiff::Timestamp;

use crate::token::{self, FetchedToken, Token, TokenKey};

/// Where tokens come from: ECR in production, a fake in unit tests.
pub trait TokenSource: Send + Sync + 'static {
    fn fetch<'a>(&'a self, key: &'a TokenKey) -> BoxFuture<'a, Result<FetchedToken, FetchError>>;
}

/// Why no token could be had. Never holds a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ECR token for {key}: {message}")]
pub struct FetchError {
    pub key: TokenKey,
    pub kind: FetchErrorKind,
    pub message: String,
}

/// Coarse cause, usable as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FetchErrorKind {
    /// ECR or STS answered with an error.
    Service,
    /// No answer: connection refused, DNS, timeout.
    Unreachable,
    /// The answer could not be used.
    Malformed,
    /// No token yet, and the last fetch was too recent to try again.
    Throttled,
}

impl FetchErrorKind {
    pub fn as_label(self) -> &'static str {
        match self {
            Self::Service => "service",
            Self::Unreachable => "unreachable",
            Self::Malformed => "malformed",
            Self::Throttled => "throttled",
        }
    }
}

/// A token, and the error of the last fetch when it could not be renewed.
#[derive(Debug, Clone)]
pub struct CachedToken {
    pub token: Arc<Token>,
    /// Set when the token is stale (due for renewal) because the last fetch failed.
    pub renewal_error: Option<FetchError>,
}

#[derive(Debug, Clone, Copy)]
pub struct CacheConfig {
    /// A token is renewed this long before it expires.
    pub renew_before: Duration,
    /// At most one fetch per key in this interval.
    pub min_fetch_interval: Duration,
}

type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

#[derive(Default)]
struct Slot {
    token: Option<Arc<Token>>,
    last_attempt: Option<Timestamp>,
    last_error: Option<FetchError>,
}

pub struct TokenCache {
    source: Arc<dyn TokenSource>,
    config: CacheConfig,
    clock: Clock,
    slots: Mutex<HashMap<TokenKey, Arc<tokio::sync::Mutex<Slot>>>>,
    warned_expiry: Mutex<HashSet<TokenKey>>,
    calls: AtomicU64,
}

impl TokenCache {
    pub fn new(source: Arc<dyn TokenSource>, config: CacheConfig) -> Arc<Self> {
        Self::with_clock(source, config, Arc::new(Timestamp::now))
    }

    pub fn with_clock(
        source: Arc<dyn TokenSource>,
        config: CacheConfig,
        clock: Clock,
    ) -> Arc<Self> {
        Arc::new(Self {
            source,
            config,
            clock,
            slots: Mutex::default(),
            warned_expiry: Mutex::default(),
            calls: AtomicU64::new(0),
        })
    }

    /// Fetches made so far (successful or not).
    pub fn fetch_count(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// A token for `key`: cached while fresh, else fetched once for all concurrent callers.
    /// On a failed fetch the last unexpired token is served with the error attached.
    pub async fn get(self: &Arc<Self>, key: &TokenKey) -> Result<CachedToken, FetchError> {
        let this = Arc::clone(self);
        let key = key.clone();
        // Detached so that a cancelled caller does not cancel the fetch others wait on.
        tokio::spawn(async move { this.get_inner(key).await })
            .await
            .expect("token fetch task panicked")
    }

    fn slot(&self, key: &TokenKey) -> Arc<tokio::sync::Mutex<Slot>> {
        let mut slots = self.slots.lock().expect("slots lock");
        Arc::clone(slots.entry(key.clone()).or_default())
    }

    async fn get_inner(&self, key: TokenKey) -> Result<CachedToken, FetchError> {
        let slot = self.slot(&key);
        let mut slot = slot.lock().await;
        let now = (self.clock)();
        let usable = |slot: &Slot, error: Option<FetchError>| {
            slot.token
                .as_ref()
                .filter(|t| t.expires_at > now)
                .map(|t| CachedToken {
                    token: Arc::clone(t),
                    renewal_error: error,
                })
        };
        if let Some(t) = &slot.token
            && now < t.expires_at - self.config.renew_before
        {
            return Ok(CachedToken {
                token: Arc::clone(t),
                renewal_error: None,
            });
        }
        if let Some(last) = slot.last_attempt
            && now < last + self.config.min_fetch_interval
        {
            let error = slot.last_error.clone();
            return usable(&slot, error.clone()).ok_or_else(|| {
                error.unwrap_or_else(|| FetchError {
                    key: key.clone(),
                    kind: FetchErrorKind::Throttled,
                    message: format!(
                        "last fetch at {last} gave a token that cannot be used yet; next try after {}",
                        humantime::format_duration(self.config.min_fetch_interval)
                    ),
                })
            });
        }
        slot.last_attempt = Some(now);
        self.calls.fetch_add(1, Ordering::Relaxed);
        match self.fetch(&key, now).await {
            Ok(token) => {
                let token = Arc::new(token);
                slot.token = Some(Arc::clone(&token));
                slot.last_error = None;
                Ok(CachedToken {
                    token,
                    renewal_error: None,
                })
            }
            Err(error) => {
                slot.last_error = Some(error.clone());
                match usable(&slot, Some(error.clone())) {
                    Some(stale) => {
                        tracing::warn!(%error, expires_at = %stale.token.expires_at, "serving the last good ECR token");
                        Ok(stale)
                    }
                    None => Err(error),
                }
            }
        }
    }

    async fn fetch(&self, key: &TokenKey, now: Timestamp) -> Result<Token, FetchError> {
        let fetched = self.source.fetch(key).await?;
        let (expires_at, anomaly) = token::effective_expiry(fetched.expires_at, now);
        if let Some(anomaly) = anomaly
            && self
                .warned_expiry
                .lock()
                .expect("warned lock")
                .insert(key.clone())
        {
            tracing::warn!(%key, %anomaly, %expires_at, "ECR reported an unusable token expiry; assuming 12h from the fetch (warned once per key)");
        }
        token::decode(&fetched, expires_at).map_err(|e| FetchError {
            key: key.clone(),
            kind: FetchErrorKind::Malformed,
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicI64;

    use base64::Engine;
    use secrecy::SecretString;

    use super::*;

    /// Answers with a token per call, or an error while `fail` is set.
    struct FakeSource {
        calls: AtomicU64,
        fail: std::sync::atomic::AtomicBool,
        delay: Duration,
        expires_in: Option<i64>,
        clock: Clock,
    }

    impl TokenSource for FakeSource {
        fn fetch<'a>(
            &'a self,
            key: &'a TokenKey,
        ) -> BoxFuture<'a, Result<FetchedToken, FetchError>> {
            Box::pin(async move {
                tokio::time::sleep(self.delay).await;
                let n = self.calls.fetch_add(1, Ordering::SeqCst);
                if self.fail.load(Ordering::SeqCst) {
                    return Err(FetchError {
                        key: key.clone(),
                        kind: FetchErrorKind::Unreachable,
                        message: "connection refused".into(),
                    });
                }
                let raw = base64::engine::general_purpose::STANDARD.encode(format!("AWS:pw-{n}"));
                Ok(FetchedToken {
                    authorization_token: SecretString::from(raw),
                    expires_at: self
                        .expires_in
                        .map(|s| (self.clock)() + jiff::SignedDuration::from_secs(s)),
                })
            })
        }
    }

    struct Harness {
        cache: Arc<TokenCache>,
        source: Arc<FakeSource>,
        now: Arc<AtomicI64>,
    }

    fn harness(delay: Duration, expires_in: Option<i64>) -> Harness {
        let now = Arc::new(AtomicI64::new(1_800_000_000));
        let n = Arc::clone(&now);
        let clock: Clock =
            Arc::new(move || Timestamp::from_second(n.load(Ordering::SeqCst)).unwrap());
        let source = Arc::new(FakeSource {
            calls: AtomicU64::new(0),
            fail: false.into(),
            delay,
            expires_in,
            clock: Arc::clone(&clock),
        });
        let config = CacheConfig {
            renew_before: Duration::from_secs(4 * 3600),
            min_fetch_interval: Duration::from_secs(60),
        };
        let cache = TokenCache::with_clock(source.clone(), config, clock);
        Harness { cache, source, now }
    }

    fn key(region: &str) -> TokenKey {
        TokenKey {
            role: None,
            region: region.into(),
        }
    }

    impl Harness {
        fn advance(&self, secs: i64) {
            self.now.fetch_add(secs, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_fetch() {
        let h = harness(Duration::from_millis(50), Some(12 * 3600));
        let k = key("us-west-2");
        let gets = (0..20).map(|_| h.cache.get(&k));
        let tokens = futures::future::join_all(gets).await;
        assert!(
            tokens
                .iter()
                .all(|t| t.as_ref().unwrap().token.password() == "pw-0")
        );
        assert_eq!(h.source.calls.load(Ordering::SeqCst), 1);
        assert_eq!(h.cache.fetch_count(), 1);
        h.cache.get(&key("eu-west-1")).await.unwrap();
        assert_eq!(h.cache.fetch_count(), 2);
    }

    #[tokio::test]
    async fn renews_before_expiry() {
        let h = harness(Duration::ZERO, Some(12 * 3600));
        assert_eq!(
            h.cache.get(&key("r")).await.unwrap().token.password(),
            "pw-0"
        );
        h.advance(7 * 3600);
        assert_eq!(
            h.cache.get(&key("r")).await.unwrap().token.password(),
            "pw-0"
        );
        h.advance(3600 + 1);
        assert_eq!(
            h.cache.get(&key("r")).await.unwrap().token.password(),
            "pw-1"
        );
    }

    #[tokio::test]
    async fn serves_the_last_good_token_when_ecr_fails() {
        let h = harness(Duration::ZERO, Some(12 * 3600));
        h.cache.get(&key("r")).await.unwrap();
        h.source.fail.store(true, Ordering::SeqCst);
        h.advance(9 * 3600);
        let stale = h.cache.get(&key("r")).await.unwrap();
        assert_eq!(stale.token.password(), "pw-0");
        assert!(
            stale
                .renewal_error
                .unwrap()
                .message
                .contains("connection refused")
        );
        // Once expired, the error itself comes back.
        h.advance(3 * 3600 + 1);
        let err = h.cache.get(&key("r")).await.unwrap_err();
        assert_eq!(err.kind, FetchErrorKind::Unreachable);
    }

    #[tokio::test]
    async fn absurd_expiry_never_loops() {
        // Expired on arrival, as moto's 2015 date is.
        let h = harness(Duration::ZERO, Some(-86400 * 365));
        let first = h.cache.get(&key("r")).await.unwrap();
        assert_eq!(
            first.token.expires_at.as_second(),
            1_800_000_000 + 12 * 3600
        );
        for _ in 0..50 {
            h.cache.get(&key("r")).await.unwrap();
        }
        assert_eq!(h.source.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn short_tokens_are_refetched_at_most_once_per_floor() {
        // A token that is always inside the renewal window.
        let h = harness(Duration::ZERO, Some(3600));
        for _ in 0..10 {
            h.cache.get(&key("r")).await.unwrap();
        }
        assert_eq!(h.source.calls.load(Ordering::SeqCst), 1);
        h.advance(61);
        h.cache.get(&key("r")).await.unwrap();
        assert_eq!(h.source.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn failures_are_not_retried_inside_the_floor() {
        let h = harness(Duration::ZERO, Some(12 * 3600));
        h.source.fail.store(true, Ordering::SeqCst);
        for _ in 0..5 {
            assert!(h.cache.get(&key("r")).await.is_err());
        }
        assert_eq!(h.source.calls.load(Ordering::SeqCst), 1);
        h.source.fail.store(false, Ordering::SeqCst);
        h.advance(61);
        assert!(h.cache.get(&key("r")).await.is_ok());
    }

    #[tokio::test]
    async fn a_cancelled_caller_still_warms_the_cache() {
        let h = harness(Duration::from_millis(100), Some(12 * 3600));
        let r = tokio::time::timeout(Duration::from_millis(10), h.cache.get(&key("r"))).await;
        assert!(r.is_err(), "the caller gave up");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            h.cache.get(&key("r")).await.unwrap().token.password(),
            "pw-0"
        );
        assert_eq!(h.source.calls.load(Ordering::SeqCst), 1);
    }
}
