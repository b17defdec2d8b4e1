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

use crate::contract::token::{self, FetchedToken, Token, TokenKey};
use crate::telemetry::metrics::{EcrCallLabels, Metrics, TokenLabels};

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
    /// The whole story, for logs.
    pub message: String,
    /// The innermost cause, short, for warnings and Events.
    pub cause: String,
}

/// Longest cause quoted in a brief.
const MAX_CAUSE: usize = 100;

impl FetchError {
    pub fn new(key: &TokenKey, kind: FetchErrorKind, message: String) -> Self {
        Self::with_cause(key, kind, message.clone(), &message)
    }

    pub fn with_cause(key: &TokenKey, kind: FetchErrorKind, message: String, cause: &str) -> Self {
        let cause = match cause.char_indices().nth(MAX_CAUSE) {
            Some((i, _)) => format!("{}...", &cause[..i]),
            None => cause.to_string(),
        };
        Self {
            key: key.clone(),
            kind,
            message,
            cause,
        }
    }

    /// Cause first, in a few words: `ECR unreachable for us-west-2: connection refused`.
    pub fn brief(&self) -> String {
        let what = match self.kind {
            FetchErrorKind::Service => "ECR refused the token request",
            FetchErrorKind::Unreachable => "ECR unreachable",
            FetchErrorKind::Malformed => "ECR answer unusable",
            FetchErrorKind::Throttled => "no ECR token yet",
        };
        let who = match &self.key.role {
            Some(role) => format!(" as {role}"),
            None => String::new(),
        };
        format!("{what} for {}{who}: {}", self.key.region, self.cause)
    }
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
    /// Asked for since the last fetch: worth renewing ahead of time.
    used: bool,
}

pub struct TokenCache {
    source: Arc<dyn TokenSource>,
    config: CacheConfig,
    clock: Clock,
    slots: Mutex<HashMap<TokenKey, Arc<tokio::sync::Mutex<Slot>>>>,
    warned_expiry: Mutex<HashSet<TokenKey>>,
    calls: AtomicU64,
    metrics: Arc<Metrics>,
}

impl TokenCache {
    pub fn new(
        source: Arc<dyn TokenSource>,
        config: CacheConfig,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Self::with_clock(source, config, metrics, Arc::new(Timestamp::now))
    }

    pub fn with_clock(
        source: Arc<dyn TokenSource>,
        config: CacheConfig,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> Arc<Self> {
        Arc::new(Self {
            source,
            config,
            clock,
            slots: Mutex::default(),
            warned_expiry: Mutex::default(),
            calls: AtomicU64::new(0),
            metrics,
        })
    }

    /// Renews, ahead of time, every token that is due for renewal and was asked for since it
    /// was fetched. Returns how many were renewed. Tokens nobody uses any more are left to
    /// expire.
    pub async fn renew_due(self: &Arc<Self>) -> usize {
        let slots: Vec<(TokenKey, Arc<tokio::sync::Mutex<Slot>>)> = {
            let slots = self.slots.lock().expect("slots lock");
            slots
                .iter()
                .map(|(k, v)| (k.clone(), Arc::clone(v)))
                .collect()
        };
        let now = (self.clock)();
        let mut due = Vec::new();
        for (key, slot) in slots {
            let slot = slot.lock().await;
            let stale = slot
                .token
                .as_ref()
                .is_some_and(|t| now >= t.expires_at - self.config.renew_before);
            if stale && slot.used {
                due.push(key);
            }
        }
        let renewed = futures::future::join_all(due.iter().map(|key| self.get(key))).await;
        renewed.iter().filter(|r| r.is_ok()).count()
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
        slot.used = true;
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
                error.unwrap_or_else(|| {
                    FetchError::new(
                        &key,
                        FetchErrorKind::Throttled,
                        format!(
                            "last fetch at {last} gave a token that cannot be used yet; next try after {}",
                            humantime::format_duration(self.config.min_fetch_interval)
                        ),
                    )
                })
            });
        }
        slot.last_attempt = Some(now);
        slot.used = false;
        self.calls.fetch_add(1, Ordering::Relaxed);
        let result = self.fetch(&key, now).await;
        self.record(&key, &result);
        match result {
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
        token::decode(&fetched, expires_at)
            .map_err(|e| FetchError::new(key, FetchErrorKind::Malformed, e.to_string()))
    }

    fn record(&self, key: &TokenKey, result: &Result<Token, FetchError>) {
        let result_label = match result {
            Ok(_) => "ok",
            Err(e) => e.kind.as_label(),
        };
        self.metrics
            .ecr_calls
            .get_or_create(&EcrCallLabels {
                region: key.region.clone(),
                result: result_label,
            })
            .inc();
        if let Ok(token) = result {
            let principal = key
                .role
                .as_ref()
                .map_or_else(|| "default".to_string(), ToString::to_string);
            self.metrics
                .token_expiry
                .get_or_create(&TokenLabels {
                    principal,
                    region: key.region.clone(),
                })
                .set(token.expires_at.as_second() as f64);
        }
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
                    return Err(FetchError::new(
                        key,
                        FetchErrorKind::Unreachable,
                        "connection refused".into(),
                    ));
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
        let cache = TokenCache::with_clock(source.clone(), config, Arc::default(), clock);
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
    async fn renews_ahead_of_time_only_what_is_used() {
        let h = harness(Duration::ZERO, Some(12 * 3600));
        h.cache.get(&key("used")).await.unwrap();
        h.cache.get(&key("idle")).await.unwrap();
        h.advance(3600);
        h.cache.get(&key("used")).await.unwrap();
        assert_eq!(h.cache.renew_due().await, 0, "nothing is due yet");
        h.advance(7 * 3600 + 1);
        assert_eq!(
            h.cache.renew_due().await,
            1,
            "only the key asked for since its fetch"
        );
        assert_eq!(h.source.calls.load(Ordering::SeqCst), 3);
        assert_eq!(
            h.cache.get(&key("used")).await.unwrap().token.password(),
            "pw-2"
        );
        assert_eq!(
            h.source.calls.load(Ordering::SeqCst),
            3,
            "served from the renewal"
        );
    }

    #[test]
    fn briefs_put_the_cause_first_and_stay_short() {
        let e = FetchError::with_cause(
            &key("us-west-2"),
            FetchErrorKind::Unreachable,
            "GetAuthorizationToken failed (endpoint http://127.0.0.1:5999): dispatch failure: ..."
                .into(),
            &"Connection refused (os error 111) ".repeat(10),
        );
        let brief = e.brief();
        assert!(
            brief.starts_with("ECR unreachable for us-west-2: Connection refused"),
            "{brief}"
        );
        assert!(brief.len() < 150, "{brief}");
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
