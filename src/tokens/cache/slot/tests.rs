//! The slot's decisions on their own, with times given: no clock, no fetch, no runtime.

use base64::Engine;
use secrecy::SecretString;

use super::*;
use crate::contract::token::{self, FetchedToken};

const MINUTE: Duration = Duration::from_secs(60);
const RENEW_BEFORE: Duration = Duration::from_secs(4 * 3600);

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + second).unwrap()
}

fn key() -> TokenKey {
    TokenKey {
        role: None,
        region: "r".into(),
    }
}

fn token(expires_at: Timestamp) -> Arc<Token> {
    let fetched = FetchedToken {
        authorization_token: SecretString::from(
            base64::engine::general_purpose::STANDARD.encode("AWS:pw"),
        ),
        expires_at: None,
    };
    Arc::new(token::decode(&fetched, expires_at).unwrap())
}

fn refused() -> FetchError {
    FetchError::new(
        &key(),
        FetchErrorKind::Unreachable,
        "connection refused".into(),
    )
}

#[test]
fn a_token_is_fresh_until_renew_before_its_expiry() {
    let mut slot = Slot::default();
    assert!(slot.fresh(at(0), RENEW_BEFORE).is_none(), "no token yet");
    slot.fetched(token(at(12 * 3600)));
    assert!(slot.fresh(at(8 * 3600 - 1), RENEW_BEFORE).is_some());
    assert!(slot.fresh(at(8 * 3600), RENEW_BEFORE).is_none());
}

#[test]
fn only_a_token_asked_for_since_its_fetch_is_renewed_ahead() {
    let mut slot = Slot::default();
    slot.asked();
    assert!(!slot.due_ahead(at(0), RENEW_BEFORE), "no token to renew");
    slot.attempted(at(0));
    slot.fetched(token(at(12 * 3600)));
    assert!(
        !slot.due_ahead(at(9 * 3600), RENEW_BEFORE),
        "not asked for since"
    );
    slot.asked();
    assert!(
        !slot.due_ahead(at(8 * 3600 - 1), RENEW_BEFORE),
        "not due yet"
    );
    assert!(slot.due_ahead(at(8 * 3600), RENEW_BEFORE));
}

#[test]
fn the_floor_doubles_with_failures_in_a_row_within_its_bounds() {
    let mut slot = Slot::default();
    let mut floors = Vec::new();
    for _ in 0..6 {
        floors.push(slot.floor(MINUTE).as_secs() / 60);
        slot.failed(refused());
    }
    assert_eq!(
        floors,
        [1, 1, 2, 4, 5, 5],
        "minutes, at most 5 times the interval"
    );
    assert_eq!(
        slot.floor(10 * MINUTE),
        15 * MINUTE,
        "never past 15 minutes"
    );
    assert_eq!(
        slot.floor(20 * MINUTE),
        20 * MINUTE,
        "never under the interval"
    );
    slot.fetched(token(at(12 * 3600)));
    assert_eq!(slot.failures(), 0);
    assert_eq!(slot.floor(MINUTE), MINUTE, "a fetch resets it");
}

#[test]
fn the_floor_holds_the_next_fetch_back_from_the_last_attempt() {
    let mut slot = Slot::default();
    assert_eq!(slot.held_back_since(at(0), MINUTE), None, "never tried");
    slot.attempted(at(100));
    assert_eq!(slot.held_back_since(at(159), MINUTE), Some(at(100)));
    assert_eq!(slot.held_back_since(at(160), MINUTE), None);
}

#[test]
fn after_a_failure_the_last_token_is_served_while_it_is_unexpired() {
    let mut slot = Slot::default();
    slot.attempted(at(0));
    slot.failed(refused());
    assert!(slot.last_answer(at(0)).is_none(), "nothing to serve");
    let error = slot.held_back_error(&key(), at(0), MINUTE);
    assert_eq!(error.kind, FetchErrorKind::Unreachable, "the last error");
    slot.fetched(token(at(12 * 3600)));
    let fresh = slot.last_answer(at(9 * 3600)).unwrap();
    assert!(fresh.renewal_error.is_none(), "a fetch clears the error");
    slot.failed(refused());
    let stale = slot.last_answer(at(9 * 3600)).unwrap();
    assert_eq!(stale.token.password(), "pw");
    assert_eq!(
        stale.renewal_error.map(|e| e.kind),
        Some(FetchErrorKind::Unreachable)
    );
    assert!(slot.last_answer(at(12 * 3600)).is_none(), "expired");
}

#[test]
fn held_back_with_no_error_to_give_is_too_soon() {
    let mut slot = Slot::default();
    slot.attempted(at(0));
    slot.fetched(token(at(0)));
    assert!(slot.last_answer(at(1)).is_none());
    let err = slot.held_back_error(&key(), at(0), MINUTE);
    assert_eq!(err.kind, FetchErrorKind::TooSoon);
    assert!(err.message.contains("next try after 1m"), "{}", err.message);
}
