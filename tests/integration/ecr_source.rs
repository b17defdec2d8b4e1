//! The ECR token source against moto, and against an endpoint that is down.

use kubeecr::contract::annotation::{
    REGISTRIES_ANNOTATION, ROLE_ANNOTATION, SecretRef, binding_of,
};
use kubeecr::contract::token::FetchErrorKind;
use kubeecr::contract::token::TokenKey;
use kubeecr_testkit::moto::{EcrProxy, dead_endpoint};

use crate::common::*;

fn key(region: &str, role: Option<&str>) -> TokenKey {
    let mut a = std::collections::BTreeMap::from([(
        REGISTRIES_ANNOTATION.to_string(),
        format!("123456789012/{region}"),
    )]);
    if let Some(role) = role {
        a.insert(ROLE_ANNOTATION.to_string(), role.to_string());
    }
    let binding = binding_of(
        &SecretRef::new("t", "t"),
        &kubeecr::contract::marks::Marks::of_annotations(&a),
        &Default::default(),
    )
    .unwrap()
    .unwrap();
    TokenKey {
        role: binding.role,
        region: region.to_string(),
    }
}

#[tokio::test]
async fn tokens_for_regions_and_roles_come_from_ecr() {
    let ecr = EcrProxy::start().await;
    let cache = token_cache(&ecr.url()).await;
    let plain = cache.get(&key("us-west-2", None)).await.unwrap();
    assert!(plain.renewal_error.is_none());
    let china = cache.get(&key("cn-north-1", None)).await.unwrap();
    let role = "arn:aws:iam::123456789012:role/ecr-pull";
    let as_role = cache.get(&key("us-west-2", Some(role))).await.unwrap();
    // Each key holds exactly the token ECR issued for its (principal, region), with ECR's
    // own expiry, decoded from base64("AWS:" + password).
    for (got, region, principal) in [
        (&plain, "us-west-2", None),
        (&china, "cn-north-1", None),
        (&as_role, "us-west-2", Some(role)),
    ] {
        let issued = ecr.newest(region, principal).expect("issued");
        assert_eq!(got.token.username, "AWS");
        assert_eq!(
            got.token.password(),
            issued.password,
            "{region} {principal:?}"
        );
        assert_eq!(got.token.expires_at.to_string(), issued.expires_at);
        assert!(
            kubeecr_testkit::moto::PASSWORD_LENGTHS.contains(&issued.password.len()),
            "{}",
            issued.password.len()
        );
    }
    assert_ne!(plain.token.password(), as_role.token.password());
    // Cached: a second round makes no calls.
    cache.get(&key("us-west-2", None)).await.unwrap();
    cache.get(&key("us-west-2", Some(role))).await.unwrap();
    let calls = ecr.token_calls();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert_eq!(ecr.issued().len(), 3);
    assert_eq!(ecr.calls("AssumeRole").len(), 1);
    let role_call = calls
        .iter()
        .find(|c| c.access_key_id != "AKIAKUBEECRTEST00001")
        .expect("a call with assumed credentials");
    assert_eq!(role_call.region, "us-west-2");
    assert!(calls.iter().any(|c| c.region == "cn-north-1"));
}

/// moto's own answer expires in 2015: an expiry in the past is taken as 12 hours from the
/// fetch, and the token is still used.
#[tokio::test]
async fn an_expiry_in_the_past_is_taken_as_twelve_hours() {
    let ecr = EcrProxy::start().await;
    ecr.set_token_style(kubeecr_testkit::moto::TokenStyle::Moto);
    let cache = token_cache(&ecr.url()).await;
    let before = jiff::Timestamp::now();
    let got = cache.get(&key("us-west-2", None)).await.unwrap();
    // moto's account for any caller.
    assert_eq!(got.token.password(), "123456789012-auth-token");
    assert!(
        ecr.issued().is_empty(),
        "moto's answer went through unchanged"
    );
    let twelve = jiff::SignedDuration::from_hours(12);
    // Whole seconds: the fetch's second, plus 12 hours.
    let earliest = jiff::Timestamp::from_second(before.as_second()).unwrap() + twelve;
    assert!(got.token.expires_at >= earliest, "{}", got.token.expires_at);
    assert!(got.token.expires_at <= jiff::Timestamp::now() + twelve);
}

#[tokio::test]
async fn an_endpoint_that_is_down_gives_a_clear_error() {
    let endpoint = dead_endpoint();
    let cache = token_cache(&endpoint).await;
    let err = cache.get(&key("us-west-2", None)).await.unwrap_err();
    assert_eq!(err.kind, FetchErrorKind::Unreachable);
    let msg = err.to_string();
    assert!(
        msg.starts_with(
            "ECR token for us-west-2 with the default credentials: GetAuthorizationToken failed"
        ),
        "{msg}"
    );
    assert!(msg.contains(&endpoint), "names the endpoint: {msg}");
    assert!(
        msg.to_lowercase().contains("connect") || msg.to_lowercase().contains("refused"),
        "says why: {msg}"
    );
    assert!(!msg.contains("kubeecr-test-secret"), "{msg}");
    // The floor: a second request inside it makes no new attempt.
    let again = cache.get(&key("us-west-2", None)).await.unwrap_err();
    assert_eq!(again, err);
    assert_eq!(cache.fetch_count(), 1);
}
