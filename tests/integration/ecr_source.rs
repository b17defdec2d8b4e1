//! The ECR token source against moto, and against an endpoint that is down.

use kubeecr::contract::annotation::{
    REGISTRIES_ANNOTATION, ROLE_ANNOTATION, SecretRef, binding_of,
};
use kubeecr::contract::token::TokenKey;
use kubeecr::tokens::cache::FetchErrorKind;
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
    let binding = binding_of(&SecretRef::new("t", "t"), &a, &Default::default())
        .unwrap()
        .unwrap();
    TokenKey {
        role: binding.role,
        region: region.to_string(),
    }
}

#[tokio::test]
async fn tokens_for_regions_and_roles_come_from_moto() {
    let ecr = EcrProxy::start().await;
    let cache = token_cache(&ecr.url()).await;
    let plain = cache.get(&key("us-west-2", None)).await.unwrap();
    assert_eq!(plain.token.username, "AWS");
    assert!(plain.token.password().len() > 8);
    assert!(plain.renewal_error.is_none());
    cache.get(&key("cn-north-1", None)).await.unwrap();
    let role = "arn:aws:iam::123456789012:role/ecr-pull";
    cache.get(&key("us-west-2", Some(role))).await.unwrap();
    // Cached: a second round makes no calls.
    cache.get(&key("us-west-2", None)).await.unwrap();
    cache.get(&key("us-west-2", Some(role))).await.unwrap();
    let calls = ecr.token_calls();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert_eq!(ecr.calls("AssumeRole").len(), 1);
    let role_call = calls
        .iter()
        .find(|c| c.access_key_id != "AKIAKUBEECRTEST00001")
        .expect("a call with assumed credentials");
    assert_eq!(role_call.region, "us-west-2");
    assert!(calls.iter().any(|c| c.region == "cn-north-1"));
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
