//! One key's slot: its token, last attempt and error, and the decisions made from them. Is
//! the token fresh, does the fetch floor hold the next fetch back, and what is served when a
//! fetch fails. Pure: the clock, the fetch and the logs are the cache's.

use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;

use crate::contract::token::{FetchError, FetchErrorKind, Token, TokenKey};

use super::CachedToken;

/// The floor grows with failures in a row up to this many times `min_fetch_interval`, and
/// never past `MAX_FLOOR`, so that a region that keeps failing costs few calls, and one that
/// is back is used again within minutes, long before a served stale token expires.
const MAX_FLOOR_FACTOR: u32 = 5;
const MAX_FLOOR: Duration = Duration::from_secs(15 * 60);

/// A key's state between fetches; held locked while a fetch for the key runs.
#[derive(Default)]
pub(super) struct Slot {
    token: Option<Arc<Token>>,
    last_attempt: Option<Timestamp>,
    last_error: Option<FetchError>,
    /// Asked for since the last fetch: worth renewing ahead of time.
    used: bool,
    /// Fetches failed in a row: each doubles the floor before the next.
    failures: u32,
}

impl Slot {
    /// A caller asks for the token.
    pub(super) fn asked(&mut self) {
        self.used = true;
    }

    /// The token while no renewal is due.
    pub(super) fn fresh(&self, now: Timestamp, renew_before: Duration) -> Option<CachedToken> {
        self.token
            .as_ref()
            .filter(|t| now < t.expires_at - renew_before)
            .map(|t| CachedToken {
                token: Arc::clone(t),
                renewal_error: None,
            })
    }

    /// Due for renewal and asked for since its fetch: worth renewing ahead of time. Tokens
    /// nobody uses any more are left to expire.
    pub(super) fn due_ahead(&self, now: Timestamp, renew_before: Duration) -> bool {
        let stale = self
            .token
            .as_ref()
            .is_some_and(|t| now >= t.expires_at - renew_before);
        stale && self.used
    }

    /// The last attempt, while the floor after it holds the next fetch back.
    pub(super) fn held_back_since(
        &self,
        now: Timestamp,
        min_fetch_interval: Duration,
    ) -> Option<Timestamp> {
        self.last_attempt
            .filter(|&last| now < last + self.floor(min_fetch_interval))
    }

    /// What the last attempt left to serve: the token while unexpired, with the last error.
    pub(super) fn last_answer(&self, now: Timestamp) -> Option<CachedToken> {
        self.token
            .as_ref()
            .filter(|t| t.expires_at > now)
            .map(|t| CachedToken {
                token: Arc::clone(t),
                renewal_error: self.last_error.clone(),
            })
    }

    /// The error for a caller held back since `last` with nothing to serve: the last one,
    /// or `TooSoon` when the last fetch gave no usable token.
    pub(super) fn held_back_error(
        &self,
        key: &TokenKey,
        last: Timestamp,
        min_fetch_interval: Duration,
    ) -> FetchError {
        self.last_error.clone().unwrap_or_else(|| {
            FetchError::new(
                key,
                FetchErrorKind::TooSoon,
                format!(
                    "last fetch at {last} gave a token that cannot be used yet; next try after {}",
                    humantime::format_duration(min_fetch_interval)
                ),
            )
        })
    }

    /// How long after the last attempt the next may be made.
    pub(super) fn floor(&self, min_fetch_interval: Duration) -> Duration {
        let doublings = self.failures.saturating_sub(1).min(8);
        let grown = (min_fetch_interval * (1 << doublings))
            .min(min_fetch_interval * MAX_FLOOR_FACTOR)
            .min(MAX_FLOOR);
        grown.max(min_fetch_interval)
    }

    /// A fetch starts at `now`: the floor counts from here, and asks from here on are for the
    /// token it brings.
    pub(super) fn attempted(&mut self, now: Timestamp) {
        self.last_attempt = Some(now);
        self.used = false;
    }

    /// A fetch brought `token`: served from now on, and the failures are over.
    pub(super) fn fetched(&mut self, token: Arc<Token>) {
        self.token = Some(token);
        self.last_error = None;
        self.failures = 0;
    }

    /// A fetch failed with `error`: counted (the floor grows) and kept to answer with until
    /// the next.
    pub(super) fn failed(&mut self, error: FetchError) {
        self.failures = self.failures.saturating_add(1);
        self.last_error = Some(error);
    }

    /// Fetches failed in a row.
    pub(super) fn failures(&self) -> u32 {
        self.failures
    }
}

/// A key's slot, and what is readable without waiting on a fetch: when it was last asked
/// for, and the last token fetched.
pub(super) struct Entry {
    pub(super) last_used: AtomicI64,
    pub(super) last_good: Mutex<Option<Arc<Token>>>,
    pub(super) slot: tokio::sync::Mutex<Slot>,
}

impl Entry {
    pub(super) fn new(now: Timestamp) -> Self {
        Self {
            last_used: AtomicI64::new(now.as_second()),
            last_good: Mutex::default(),
            slot: tokio::sync::Mutex::default(),
        }
    }

    /// A fetched token: the slot's from now on, and the key's last good one.
    pub(super) fn keep(&self, slot: &mut Slot, token: Token) -> CachedToken {
        let token = Arc::new(token);
        slot.fetched(Arc::clone(&token));
        *self.last_good.lock().expect("last good lock") = Some(Arc::clone(&token));
        CachedToken {
            token,
            renewal_error: None,
        }
    }
}

#[cfg(test)]
mod tests;
