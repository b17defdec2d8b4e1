//! The cache against a fake source and a clock of its own: shared fetches, renewal, the
//! floor, fallback to the last good token, and the bounds.

use std::sync::atomic::AtomicI64;
use std::time::Duration;

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
    fn fetch<'a>(&'a self, key: &'a TokenKey) -> BoxFuture<'a, Result<FetchedToken, FetchError>> {
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
    let clock: Clock = Arc::new(move || Timestamp::from_second(n.load(Ordering::SeqCst)).unwrap());
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
