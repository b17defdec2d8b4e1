//! Token cache: one fetch per (principal, region), shared by every secret and caller.
//!
//! Concurrent callers of the same key wait on one in-flight fetch. A fetch runs on its own
//! task, so a caller that gives up (an admission deadline) still leaves a warm cache behind.
//! A floor between fetches per key stops tight loops, whatever ECR answers. The cache is
//! bounded: at most `max_keys` keys (the least recently used goes first), keys unused for
//! `idle_evict` are dropped, and at most `max_concurrent_fetches` fetches run at once across
//! the process. An evicted key's SDK client goes with it (`TokenSource::forget`).

use std::collections::HashMap;
use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use jiff::Timestamp;

use crate::contract::token::{self, FetchError, FetchErrorKind, FetchedToken, Token, TokenKey};
use crate::telemetry::metrics::{EcrCallLabels, Metrics, TokenLabels};

/// Where tokens come from: ECR in production, a fake in unit tests.
pub trait TokenSource: Send + Sync + 'static {
    fn fetch<'a>(&'a self, key: &'a TokenKey) -> BoxFuture<'a, Result<FetchedToken, FetchError>>;

    /// The cache dropped `key`: release what was kept for it (an SDK client).
    fn forget(&self, _key: &TokenKey) {}
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
    /// Keys kept at most; the least recently used one is dropped for a new one.
    pub max_keys: usize,
    /// A key not asked for this long is dropped.
    pub idle_evict: Duration,
    /// GetAuthorizationToken calls in flight at most, across every key.
    pub max_concurrent_fetches: usize,
}

impl CacheConfig {
    pub const DEFAULT_MAX_KEYS: usize = 1024;
    pub const DEFAULT_IDLE_EVICT: Duration = Duration::from_secs(24 * 3600);
    pub const DEFAULT_MAX_CONCURRENT_FETCHES: usize = 8;

    /// The defaults for the bounds, with the given renewal timing.
    pub fn new(renew_before: Duration, min_fetch_interval: Duration) -> Self {
        Self {
            renew_before,
            min_fetch_interval,
            max_keys: Self::DEFAULT_MAX_KEYS,
            idle_evict: Self::DEFAULT_IDLE_EVICT,
            max_concurrent_fetches: Self::DEFAULT_MAX_CONCURRENT_FETCHES,
        }
    }
}

type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

#[derive(Default)]
struct Slot {
    token: Option<Arc<Token>>,
    last_attempt: Option<Timestamp>,
    last_error: Option<FetchError>,
    /// Asked for since the last fetch: worth renewing ahead of time.
    used: bool,
    /// Fetches failed in a row: each doubles the floor before the next.
    failures: u32,
}

/// The floor grows with failures in a row up to this many times `min_fetch_interval`, and
/// never past `MAX_FLOOR`, so that a region that keeps failing costs few calls, and one that
/// is back is used again within minutes, long before a served stale token expires.
const MAX_FLOOR_FACTOR: u32 = 5;
const MAX_FLOOR: Duration = Duration::from_secs(15 * 60);

impl Slot {
    /// How long after the last attempt the next may be made.
    fn floor(&self, min_fetch_interval: Duration) -> Duration {
        let doublings = self.failures.saturating_sub(1).min(8);
        let grown = (min_fetch_interval * (1 << doublings))
            .min(min_fetch_interval * MAX_FLOOR_FACTOR)
            .min(MAX_FLOOR);
        grown.max(min_fetch_interval)
    }
}

/// A key's slot, and what is readable without waiting on a fetch: when it was last asked
/// for, and the last token fetched.
struct Entry {
    last_used: AtomicI64,
    last_good: Mutex<Option<Arc<Token>>>,
    slot: tokio::sync::Mutex<Slot>,
}

pub struct TokenCache {
    source: Arc<dyn TokenSource>,
    config: CacheConfig,
    clock: Clock,
    slots: Mutex<HashMap<TokenKey, Arc<Entry>>>,
    warned_expiry: Mutex<HashSet<TokenKey>>,
    fetches: tokio::sync::Semaphore,
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
            fetches: tokio::sync::Semaphore::new(config.max_concurrent_fetches.max(1)),
            calls: AtomicU64::new(0),
            metrics,
        })
    }

    /// Renews, ahead of time, every token that is due for renewal and was asked for since it
    /// was fetched, and drops keys idle for `idle_evict`. Returns how many were renewed.
    /// Tokens nobody uses any more are left to expire.
    pub async fn renew_due(self: &Arc<Self>) -> usize {
        let now = (self.clock)();
        self.evict_idle(now);
        let slots: Vec<(TokenKey, Arc<Entry>)> = {
            let slots = self.slots.lock().expect("slots lock");
            slots
                .iter()
                .map(|(k, v)| (k.clone(), Arc::clone(v)))
                .collect()
        };
        let mut due = Vec::new();
        for (key, entry) in slots {
            let slot = entry.slot.lock().await;
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

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.slots.lock().expect("slots lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

    /// The last token fetched for `key` while it is unexpired, without waiting on a fetch in
    /// progress: for callers with a deadline, when a renewal takes longer than they can wait.
    pub fn last_good(&self, key: &TokenKey) -> Option<Arc<Token>> {
        let entry = Arc::clone(self.slots.lock().expect("slots lock").get(key)?);
        self.valid_last_good(&entry)
    }

    fn valid_last_good(&self, entry: &Entry) -> Option<Arc<Token>> {
        let now = (self.clock)();
        let token = entry.last_good.lock().expect("last good lock").clone()?;
        (token.expires_at > now).then_some(token)
    }

    /// As `get`, except that while another caller is renewing the key, its last good token
    /// comes at once instead of after the renewal, if it has at least half of `renew_before`
    /// left: admissions need not wait on a slow or failing ECR when they have a token to give.
    /// (The slot is also held for a moment by ordinary reads; the token given then is the same.)
    pub async fn get_unless_renewing(
        self: &Arc<Self>,
        key: &TokenKey,
    ) -> Result<CachedToken, FetchError> {
        let entry = self.slots.lock().expect("slots lock").get(key).cloned();
        let margin = self.config.renew_before / 2;
        if let Some(entry) = entry
            && entry.slot.try_lock().is_err()
            && let Some(token) = self.valid_last_good(&entry)
            && (self.clock)() + margin < token.expires_at
        {
            entry
                .last_used
                .store((self.clock)().as_second(), Ordering::Relaxed);
            return Ok(CachedToken {
                token,
                renewal_error: None,
            });
        }
        self.get(key).await
    }

    /// The key's entry, made room for when new.
    fn entry(&self, key: &TokenKey, now: Timestamp) -> Arc<Entry> {
        let mut slots = self.slots.lock().expect("slots lock");
        let entry = match slots.get(key) {
            Some(entry) => Arc::clone(entry),
            None => {
                if slots.len() >= self.config.max_keys {
                    self.evict_least_recent(&mut slots);
                }
                let entry = Arc::new(Entry {
                    last_used: AtomicI64::new(now.as_second()),
                    last_good: Mutex::default(),
                    slot: tokio::sync::Mutex::default(),
                });
                slots.insert(key.clone(), Arc::clone(&entry));
                self.metrics.token_cache_keys.set(slots.len() as i64);
                entry
            }
        };
        entry.last_used.store(now.as_second(), Ordering::Relaxed);
        entry
    }

    /// Drops the least recently used key that nobody is waiting on. When every key is in
    /// use, the map grows past `max_keys` until they are done; the callers are bounded.
    fn evict_least_recent(&self, slots: &mut HashMap<TokenKey, Arc<Entry>>) {
        let victim = slots
            .iter()
            .filter(|(_, e)| Arc::strong_count(e) == 1)
            .min_by_key(|(_, e)| e.last_used.load(Ordering::Relaxed))
            .map(|(k, _)| k.clone());
        if let Some(key) = victim {
            slots.remove(&key);
            self.forget(&key);
        }
        self.metrics.token_cache_keys.set(slots.len() as i64);
    }

    fn evict_idle(&self, now: Timestamp) {
        let cutoff = (now - self.config.idle_evict).as_second();
        let mut slots = self.slots.lock().expect("slots lock");
        let idle: Vec<TokenKey> = slots
            .iter()
            .filter(|(_, e)| {
                Arc::strong_count(e) == 1 && e.last_used.load(Ordering::Relaxed) < cutoff
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in idle {
            slots.remove(&key);
            self.forget(&key);
        }
        self.metrics.token_cache_keys.set(slots.len() as i64);
    }

    /// Releases everything kept for a dropped key: its client, its warning, its gauge.
    fn forget(&self, key: &TokenKey) {
        tracing::debug!(%key, "token cache dropped an unused key");
        self.source.forget(key);
        self.warned_expiry.lock().expect("warned lock").remove(key);
        self.metrics.token_expiry.remove(&token_labels(key));
    }

    async fn get_inner(&self, key: TokenKey) -> Result<CachedToken, FetchError> {
        let now = (self.clock)();
        let entry = self.entry(&key, now);
        let mut slot = entry.slot.lock().await;
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
            && now < last + slot.floor(self.config.min_fetch_interval)
        {
            let error = slot.last_error.clone();
            return usable(&slot, error.clone()).ok_or_else(|| {
                error.unwrap_or_else(|| {
                    FetchError::new(
                        &key,
                        FetchErrorKind::TooSoon,
                        format!(
                            "last fetch at {last} gave a token that cannot be used yet; next try after {}",
                            humantime::format_duration(self.config.min_fetch_interval)
                        ),
                    )
                })
            });
        }
        let result = {
            // Waiting here holds the key's slot, so its other callers wait on this fetch.
            let _permit = self.fetches.acquire().await.expect("never closed");
            let now = (self.clock)();
            slot.last_attempt = Some(now);
            slot.used = false;
            self.calls.fetch_add(1, Ordering::Relaxed);
            self.fetch(&key, now).await
        };
        self.record(&key, &result);
        match result {
            Ok(token) => {
                let token = Arc::new(token);
                slot.token = Some(Arc::clone(&token));
                *entry.last_good.lock().expect("last good lock") = Some(Arc::clone(&token));
                slot.last_error = None;
                slot.failures = 0;
                Ok(CachedToken {
                    token,
                    renewal_error: None,
                })
            }
            Err(error) => {
                // The whole story stays here; requesters get `brief`.
                slot.failures = slot.failures.saturating_add(1);
                tracing::warn!(%key, kind = error.kind.as_label(), failures_in_a_row = slot.failures, next_try_in = %humantime::format_duration(slot.floor(self.config.min_fetch_interval)), "ECR token fetch failed: {}", error.message);
                slot.last_error = Some(error.clone());
                match usable(&slot, Some(error.clone())) {
                    Some(stale) => {
                        tracing::warn!(%key, expires_at = %stale.token.expires_at, "serving the last good ECR token");
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
            self.metrics
                .token_expiry
                .get_or_create(&token_labels(key))
                .set(token.expires_at.as_second() as f64);
        }
    }
}

fn token_labels(key: &TokenKey) -> TokenLabels {
    TokenLabels {
        principal: key
            .role
            .as_ref()
            .map_or_else(|| "default".to_string(), ToString::to_string),
        region: key.region.clone(),
    }
}

#[cfg(test)]
mod tests {

    use base64::Engine;
    use secrecy::SecretString;

    use super::*;

    /// Answers with a token per call, or an error while `fail` is set; counts calls, the
    /// most in flight at once, and the keys it was told to forget.
    struct FakeSource {
        calls: AtomicU64,
        fail: std::sync::atomic::AtomicBool,
        delay: Duration,
        expires_in: Option<i64>,
        clock: Clock,
        forgotten: Mutex<Vec<String>>,
        in_flight: AtomicI64,
        most_in_flight: AtomicI64,
    }

    impl TokenSource for FakeSource {
        fn fetch<'a>(
            &'a self,
            key: &'a TokenKey,
        ) -> BoxFuture<'a, Result<FetchedToken, FetchError>> {
            Box::pin(async move {
                let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                self.most_in_flight.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(self.delay).await;
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
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

        fn forget(&self, key: &TokenKey) {
            self.forgotten.lock().unwrap().push(key.region.clone());
        }
    }

    struct Harness {
        cache: Arc<TokenCache>,
        source: Arc<FakeSource>,
        now: Arc<AtomicI64>,
    }

    fn harness(delay: Duration, expires_in: Option<i64>) -> Harness {
        let config = CacheConfig::new(Duration::from_secs(4 * 3600), Duration::from_secs(60));
        harness_with(delay, expires_in, config)
    }

    fn harness_with(delay: Duration, expires_in: Option<i64>, config: CacheConfig) -> Harness {
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
            forgotten: Mutex::default(),
            in_flight: AtomicI64::new(0),
            most_in_flight: AtomicI64::new(0),
        });
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

    /// While one caller renews a due key, others with a deadline get its last good token at
    /// once; an expired one is never given.
    #[tokio::test(start_paused = true)]
    async fn a_renewal_in_progress_holds_up_no_caller_with_a_valid_token() {
        let h = harness(Duration::from_secs(5), Some(12 * 3600));
        let k = key("r");
        assert!(h.cache.last_good(&k).is_none());
        h.cache.get(&k).await.unwrap();
        h.advance(9 * 3600); // due (4 h before expiry), valid for 3 h more
        let renewing = tokio::spawn({
            let (cache, k) = (Arc::clone(&h.cache), k.clone());
            async move { cache.get(&k).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let asked = tokio::time::Instant::now();
        let given = h.cache.get_unless_renewing(&k).await.unwrap();
        assert_eq!(given.token.password(), "pw-0");
        assert_eq!(asked.elapsed(), Duration::ZERO, "no wait on the renewal");
        assert_eq!(h.cache.last_good(&k).unwrap().password(), "pw-0");
        assert_eq!(renewing.await.unwrap().unwrap().token.password(), "pw-1");
        assert_eq!(h.cache.last_good(&k).unwrap().password(), "pw-1");
        // With nothing renewing, it is `get`: a fresh token, from the cache.
        let fresh = h.cache.get_unless_renewing(&k).await.unwrap();
        assert_eq!(fresh.token.password(), "pw-1");
        assert_eq!(h.source.calls.load(Ordering::SeqCst), 2);
        h.advance(12 * 3600 + 1);
        assert!(h.cache.last_good(&k).is_none(), "expired");
    }

    /// A token with less than half of `renew_before` left is not handed out at once: the
    /// caller waits for the renewal like any other.
    #[tokio::test(start_paused = true)]
    async fn a_token_near_its_end_waits_for_the_renewal() {
        let h = harness(Duration::from_secs(5), Some(12 * 3600));
        let k = key("r");
        h.cache.get(&k).await.unwrap();
        h.advance(11 * 3600); // 1 h left, under half of the 4 h margin
        let renewing = tokio::spawn({
            let (cache, k) = (Arc::clone(&h.cache), k.clone());
            async move { cache.get(&k).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let given = h.cache.get_unless_renewing(&k).await.unwrap();
        assert_eq!(given.token.password(), "pw-1", "the renewed token");
        assert_eq!(renewing.await.unwrap().unwrap().token.password(), "pw-1");
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
    async fn a_key_that_keeps_failing_is_tried_less_often() {
        let h = harness(Duration::ZERO, Some(12 * 3600));
        h.source.fail.store(true, Ordering::SeqCst);
        // Tried every second for 20 minutes: 1m, 2m, 4m, then every 5m.
        for _ in 0..1200 {
            let _ = h.cache.get(&key("r")).await;
            h.advance(1);
        }
        let calls = h.source.calls.load(Ordering::SeqCst);
        assert_eq!(
            calls, 6,
            "at 0, 1m, 3m, 7m, 12m and 17m; every second would be 1200"
        );
        // Back: used again at the next try, and the floor is 1m again.
        h.source.fail.store(false, Ordering::SeqCst);
        h.advance(300);
        assert!(h.cache.get(&key("r")).await.is_ok());
        h.source.fail.store(true, Ordering::SeqCst);
        h.advance(9 * 3600);
        let _ = h.cache.get(&key("r")).await;
        h.advance(61);
        let before = h.source.calls.load(Ordering::SeqCst);
        let _ = h.cache.get(&key("r")).await;
        assert_eq!(h.source.calls.load(Ordering::SeqCst), before + 1);
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
    fn briefs_say_what_failed_and_nothing_more() {
        let detail = "GetAuthorizationToken failed (endpoint https://vpce-0abc.ecr.internal): \
            AccessDeniedException: User: arn:aws:sts::123456789012:assumed-role/node/i-0abc is \
            not authorized to perform: ecr:GetAuthorizationToken";
        let e = FetchError::new(&key("us-west-2"), FetchErrorKind::Denied, detail.into())
            .with_code(Some("AccessDeniedException"));
        assert_eq!(e.brief(), "access denied for us-west-2");
        assert!(
            e.to_string().contains("assumed-role/node"),
            "the log keeps it"
        );
        let e = FetchError::new(&key("eu-west-1"), FetchErrorKind::Service, detail.into())
            .with_code(Some("ServerException"));
        assert_eq!(e.brief(), "ECR error ServerException for eu-west-1");
        let odd = FetchError::new(&key("r"), FetchErrorKind::Service, String::new())
            .with_code(Some("<script> arn:aws:iam::1:x"));
        assert_eq!(odd.brief(), "ECR error for r");
        for kind in [
            FetchErrorKind::Unreachable,
            FetchErrorKind::Throttled,
            FetchErrorKind::NoCredentials,
        ] {
            let e = FetchError::new(&key("r"), kind, detail.into());
            assert!(!e.brief().contains("arn:") && !e.brief().contains("vpce"));
        }
    }

    #[tokio::test]
    async fn the_least_recently_used_key_makes_room_and_its_client_goes() {
        let config = CacheConfig {
            max_keys: 3,
            ..CacheConfig::new(Duration::from_secs(4 * 3600), Duration::from_secs(60))
        };
        let h = harness_with(Duration::ZERO, Some(12 * 3600), config);
        let cache = &h.cache;
        for region in ["a", "b", "c"] {
            cache.get(&key(region)).await.unwrap();
            h.advance(1);
        }
        cache.get(&key("a")).await.unwrap();
        h.advance(1);
        cache.get(&key("d")).await.unwrap();
        assert_eq!(cache.len(), 3);
        assert_eq!(*h.source.forgotten.lock().unwrap(), ["b"]);
        // Bounded whatever comes: a thousand new keys keep three.
        for i in 0..1000 {
            cache.get(&key(&format!("x{i}"))).await.unwrap();
        }
        assert_eq!(cache.len(), 3);
        assert_eq!(h.source.forgotten.lock().unwrap().len(), 1001);
    }

    #[tokio::test]
    async fn keys_unused_for_a_day_are_dropped() {
        let h = harness(Duration::ZERO, Some(12 * 3600));
        h.cache.get(&key("idle")).await.unwrap();
        h.advance(23 * 3600);
        h.cache.get(&key("busy")).await.unwrap();
        h.cache.renew_due().await;
        assert_eq!(h.cache.len(), 2, "nothing idle for a day yet");
        h.advance(2 * 3600);
        h.cache.renew_due().await;
        assert_eq!(h.cache.len(), 1);
        assert_eq!(*h.source.forgotten.lock().unwrap(), ["idle"]);
    }

    #[tokio::test]
    async fn fetches_in_flight_are_bounded_across_keys() {
        let config = CacheConfig {
            max_concurrent_fetches: 3,
            ..CacheConfig::new(Duration::from_secs(4 * 3600), Duration::from_secs(60))
        };
        let h = harness_with(Duration::from_millis(30), Some(12 * 3600), config);
        let keys: Vec<TokenKey> = (0..20).map(|i| key(&format!("r{i}"))).collect();
        let all = futures::future::join_all(keys.iter().map(|k| h.cache.get(k))).await;
        assert!(all.iter().all(Result::is_ok));
        assert_eq!(h.source.calls.load(Ordering::SeqCst), 20);
        assert_eq!(h.source.most_in_flight.load(Ordering::SeqCst), 3);
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
