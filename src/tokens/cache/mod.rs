//! Token cache: one fetch per (principal, region), shared by every secret and caller.
//!
//! Concurrent callers of the same key wait on one in-flight fetch. A fetch runs on its own
//! task, so a caller that gives up (an admission deadline) still leaves a warm cache behind.
//! A floor between fetches per key stops tight loops, whatever ECR answers. The cache is
//! bounded: at most `max_keys` keys (the least recently used goes first), keys unused for
//! `idle_evict` are dropped, and at most `max_concurrent_fetches` fetches run at once across
//! the process. An evicted key's SDK client goes with it (`TokenSource::forget`).
//!
//! Here the key map, its bounds and the fetch; each key's state and the decisions made from
//! it are in `slot`, the settings in `config`.

mod config;
mod slot;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use jiff::Timestamp;

pub use self::config::CacheConfig;
use self::slot::{Entry, Slot};
use crate::contract::token::{self, FetchError, FetchErrorKind, FetchedToken, Token, TokenKey};
use crate::telemetry::metrics::{EcrCallLabels, EcrResult, Metrics, TokenLabels};

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

type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

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
            if slot.due_ahead(now, self.config.renew_before) {
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
                let entry = Arc::new(Entry::new(now));
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

    /// `get`, step by step: a fresh token as it is; inside the fetch floor what the last
    /// attempt left; else a fetch, whose token is kept or, when it fails, the last one served.
    async fn get_inner(&self, key: TokenKey) -> Result<CachedToken, FetchError> {
        let entry = self.entry(&key, (self.clock)());
        let mut slot = entry.slot.lock().await;
        slot.asked();
        let now = (self.clock)();
        if let Some(fresh) = slot.fresh(now, self.config.renew_before) {
            return Ok(fresh);
        }
        if let Some(last) = slot.held_back_since(now, self.config.min_fetch_interval) {
            return slot
                .last_answer(now)
                .ok_or_else(|| slot.held_back_error(&key, last, self.config.min_fetch_interval));
        }
        let result = self.attempt(&key, &mut slot).await;
        self.record(&key, &result);
        match result {
            Ok(token) => Ok(entry.keep(&mut slot, token)),
            Err(error) => {
                slot.failed(error.clone());
                let stale = slot.last_answer(now);
                self.log_failure(&key, &slot, &error, stale.as_ref());
                stale.ok_or(error)
            }
        }
    }

    /// One fetch, once a process-wide permit is free. Waiting here holds the key's slot, so
    /// its other callers wait on this fetch.
    async fn attempt(&self, key: &TokenKey, slot: &mut Slot) -> Result<Token, FetchError> {
        let _permit = self.fetches.acquire().await.expect("never closed");
        let now = (self.clock)();
        slot.attempted(now);
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.fetch(key, now).await
    }

    /// The whole story of a failed fetch stays in the log; requesters get `brief`.
    fn log_failure(
        &self,
        key: &TokenKey,
        slot: &Slot,
        error: &FetchError,
        stale: Option<&CachedToken>,
    ) {
        tracing::warn!(%key, kind = EcrResult::from(error.kind).as_str(), failures_in_a_row = slot.failures(), next_try_in = %humantime::format_duration(slot.floor(self.config.min_fetch_interval)), "ECR token fetch failed: {}", error.message);
        if let Some(stale) = stale {
            tracing::warn!(%key, expires_at = %stale.token.expires_at, "serving the last good ECR token");
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
            Ok(_) => EcrResult::Ok,
            Err(e) => EcrResult::from(e.kind),
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
