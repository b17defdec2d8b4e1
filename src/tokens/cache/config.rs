//! The cache's settings: when a token is renewed, how often a key may be fetched, and the
//! bounds on keys and fetches.

use std::time::Duration;

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
