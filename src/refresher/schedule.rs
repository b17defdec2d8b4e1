//! When each opted-in Secret is next refreshed: a delay queue with one entry per Secret,
//! jitter so that Secrets filled together do not all fall due in the same second, and
//! exponential backoff per Secret after a failure.

use std::collections::HashMap;
use std::task::{Context, Poll};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use jiff::Timestamp;
use tokio::time::Instant;
use tokio_util::time::{DelayQueue, delay_queue};

use crate::contract::annotation::SecretRef;

/// The longest jitter: a due time is moved earlier by up to this, or a tenth of the
/// refresh margin if that is less.
const MAX_JITTER: Duration = Duration::from_secs(600);

/// A due time moved earlier by a random part of `margin / 10` (at most ten minutes), never
/// before `now`.
pub fn jittered(due: Timestamp, now: Timestamp, margin: Duration) -> Timestamp {
    let spread = (margin / 10).min(MAX_JITTER);
    let early = spread.mul_f64(fastrand::f64());
    due.checked_sub(early).unwrap_or(due).max(now)
}

/// The longest wait the queue is given. Further due times are decided on again then (the
/// delay queue cannot hold deadlines more than about two years out, and none is real).
const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// The instant at which a wall-clock time arrives, at most `MAX_WAIT` from now.
fn instant_of(at: Timestamp, now: Timestamp) -> Instant {
    let wait = Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO);
    Instant::now() + wait.min(MAX_WAIT)
}

pub struct Schedule {
    queue: DelayQueue<SecretRef>,
    keys: HashMap<SecretRef, delay_queue::Key>,
    backoff: ExponentialBuilder,
    failing: HashMap<SecretRef, ExponentialBackoff>,
}

impl Schedule {
    /// Retries of a failing Secret start at `min_backoff` and double up to `max_backoff`.
    pub fn new(min_backoff: Duration, max_backoff: Duration) -> Self {
        Self {
            queue: DelayQueue::new(),
            keys: HashMap::new(),
            backoff: ExponentialBuilder::new()
                .with_min_delay(min_backoff)
                .with_max_delay(max_backoff)
                .without_max_times()
                .with_jitter(),
            failing: HashMap::new(),
        }
    }

    /// Schedules `secret` at `at` (wall clock), replacing any earlier entry.
    pub fn at(&mut self, secret: &SecretRef, at: Timestamp, now: Timestamp) {
        self.put(secret, instant_of(at, now));
    }

    fn put(&mut self, secret: &SecretRef, when: Instant) {
        match self.keys.get(secret) {
            Some(key) => self.queue.reset_at(key, when),
            None => {
                let key = self.queue.insert_at(secret.clone(), when);
                self.keys.insert(secret.clone(), key);
            }
        }
    }

    pub fn now(&mut self, secret: &SecretRef) {
        let now = Timestamp::now();
        self.at(secret, now, now);
    }

    pub fn remove(&mut self, secret: &SecretRef) {
        if let Some(key) = self.keys.remove(secret) {
            self.queue.remove(&key);
        }
    }

    /// Forgets `secret` altogether: its entry and its backoff.
    pub fn forget(&mut self, secret: &SecretRef) {
        self.remove(secret);
        self.failing.remove(secret);
    }

    /// Schedules the next retry of a Secret that failed; returns the delay.
    pub fn failed(&mut self, secret: &SecretRef) -> Duration {
        let backoff = &self.backoff;
        let delay = self
            .failing
            .entry(secret.clone())
            .or_insert_with(|| backoff.build())
            .next()
            .unwrap_or(Duration::from_secs(300));
        self.put(secret, Instant::now() + delay);
        delay
    }

    /// The Secret succeeded (or is no longer kubeecr's): its backoff starts over.
    pub fn succeeded(&mut self, secret: &SecretRef) {
        self.failing.remove(secret);
    }

    /// Every backoff starts over (another replica led meanwhile).
    pub fn forget_failures(&mut self) {
        self.failing.clear();
    }

    pub fn is_failing(&self, secret: &SecretRef) -> bool {
        self.failing.contains_key(secret)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The next Secret whose time has come; pending while none has.
    pub fn poll_due(&mut self, cx: &mut Context<'_>) -> Poll<SecretRef> {
        match self.queue.poll_expired(cx) {
            Poll::Ready(Some(expired)) => {
                let secret = expired.into_inner();
                self.keys.remove(&secret);
                Poll::Ready(secret)
            }
            // An empty queue wakes this task again on the next insert.
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }

    pub async fn next_due(&mut self) -> SecretRef {
        std::future::poll_fn(|cx| self.poll_due(cx)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn jitter_moves_earlier_by_at_most_a_tenth_of_the_margin() {
        let due = at("2026-11-29T16:00:00Z");
        let now = at("2026-11-29T08:00:00Z");
        let margin = Duration::from_secs(3600);
        for _ in 0..200 {
            let j = jittered(due, now, margin);
            assert!(j <= due && j >= due - Duration::from_secs(360), "{j}");
        }
        let late = at("2026-11-29T15:59:00Z");
        assert!(jittered(due, late, margin) >= late, "never in the past");
        let big = Duration::from_secs(10 * 3600);
        assert!(jittered(due, now, big) >= due - MAX_JITTER);
    }

    #[tokio::test(start_paused = true)]
    async fn secrets_come_due_in_order_and_once() {
        let mut s = Schedule::new(Duration::from_secs(1), Duration::from_secs(300));
        let now = Timestamp::now();
        let a = SecretRef::new("ns", "a");
        let b = SecretRef::new("ns", "b");
        s.at(&b, now + Duration::from_secs(20), now);
        s.at(&a, now + Duration::from_secs(10), now);
        // Rescheduling replaces the entry instead of adding one.
        s.at(&a, now + Duration::from_secs(5), now);
        assert_eq!(s.len(), 2);
        assert_eq!(s.next_due().await, a);
        assert_eq!(s.next_due().await, b);
        assert!(s.is_empty());
        let pending = tokio::time::timeout(Duration::from_secs(3600), s.next_due()).await;
        assert!(pending.is_err(), "nothing more comes due");
    }

    /// A recorded expiry far in the future (set by hand) must not break the queue.
    #[tokio::test(start_paused = true)]
    async fn far_future_due_times_wait_a_day_at_most() {
        let mut s = Schedule::new(Duration::from_secs(1), Duration::from_secs(300));
        let now = Timestamp::now();
        let a = SecretRef::new("ns", "a");
        s.at(&a, at("2999-01-01T00:00:00Z"), now);
        let due = tokio::time::timeout(MAX_WAIT + Duration::from_secs(1), s.next_due()).await;
        assert_eq!(due.unwrap(), a);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_exponentially_and_reset_on_success() {
        let mut s = Schedule::new(Duration::from_secs(1), Duration::from_secs(60));
        let a = SecretRef::new("ns", "a");
        let delays: Vec<Duration> = (0..8).map(|_| s.failed(&a)).collect();
        // Jitter adds up to 100%: each step is within [base, 2*base], base doubling to 60s.
        let bases = [1, 2, 4, 8, 16, 32, 60, 60];
        for (d, base) in delays.iter().zip(bases) {
            let base = Duration::from_secs(base);
            assert!(*d >= base && *d <= base * 2, "{d:?} for {base:?}");
        }
        assert_eq!(s.len(), 1, "one entry however many failures");
        s.succeeded(&a);
        assert!(s.failed(&a) <= Duration::from_secs(2));
        s.forget(&a);
        assert!(s.is_empty() && !s.is_failing(&a));
    }
}
