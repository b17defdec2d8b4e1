//! The double keeps kube-apiserver's contract where kubeecr relies on it; checked through
//! kube-rs, as kubeecr talks to it.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kubeecr_testkit::apiserver::FakeApiServer;
use serde_json::json;

fn secret(name: &str) -> Secret {
    serde_json::from_value(json!({"metadata": {"name": name}, "stringData": {"k": "v"}})).unwrap()
}

fn code(e: kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn resource_versions_conflicts_and_no_op_writes() {
    let server = FakeApiServer::start().await;
    let api: Api<Secret> = Api::namespaced(server.client(), "ns");
    let created = api
        .create(&PostParams::default(), &secret("a"))
        .await
        .unwrap();
    assert_eq!(created.type_.as_deref(), Some("Opaque"));
    assert_eq!(
        created.data.unwrap()["k"].0,
        b"v",
        "stringData folded into data"
    );
    assert_eq!(
        code(
            api.create(&PostParams::default(), &secret("a"))
                .await
                .unwrap_err()
        ),
        409
    );
    let rv = created.metadata.resource_version.unwrap();

    let stale = json!({"metadata": {"resourceVersion": "1", "labels": {"x": "y"}}});
    assert_eq!(
        code(
            api.patch("a", &PatchParams::default(), &Patch::Merge(&stale))
                .await
                .unwrap_err()
        ),
        409
    );
    let fresh = json!({"metadata": {"resourceVersion": rv, "labels": {"x": "y"}}});
    let patched = api
        .patch("a", &PatchParams::default(), &Patch::Merge(&fresh))
        .await
        .unwrap();
    let rv2 = patched.metadata.resource_version.clone().unwrap();
    assert_ne!(rv2, rv);
    // The same patch again changes nothing, and keeps the version.
    let same = json!({"metadata": {"labels": {"x": "y"}}});
    let again = api
        .patch("a", &PatchParams::default(), &Patch::Merge(&same))
        .await
        .unwrap();
    assert_eq!(again.metadata.resource_version.unwrap(), rv2);

    let ops: json_patch::Patch = serde_json::from_value(
        json!([{"op": "add", "path": "/metadata/annotations", "value": {"a/b": "c"}}]),
    )
    .unwrap();
    let patched = api
        .patch("a", &PatchParams::default(), &Patch::Json::<()>(ops))
        .await
        .unwrap();
    assert_eq!(patched.metadata.annotations.unwrap()["a/b"], "c");
    assert_eq!(code(api.get("missing").await.unwrap_err()), 404);
}

#[tokio::test]
async fn secret_validation_matches_the_api_server() {
    let server = FakeApiServer::start().await;
    let api: Api<Secret> = Api::namespaced(server.client(), "ns");
    let no_data: Secret = serde_json::from_value(
        json!({"metadata": {"name": "d"}, "type": "kubernetes.io/dockerconfigjson"}),
    )
    .unwrap();
    let e = api
        .create(&PostParams::default(), &no_data)
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("data[.dockerconfigjson]: Required value"),
        "{e}"
    );
    let bad_json: Secret = serde_json::from_value(json!({"metadata": {"name": "d"}, "type": "kubernetes.io/dockerconfigjson", "stringData": {".dockerconfigjson": "{"}})).unwrap();
    assert_eq!(
        code(
            api.create(&PostParams::default(), &bad_json)
                .await
                .unwrap_err()
        ),
        422
    );
    api.create(&PostParams::default(), &secret("o"))
        .await
        .unwrap();
    let retype = json!({"type": "kubernetes.io/tls"});
    let e = api
        .patch("o", &PatchParams::default(), &Patch::Merge(&retype))
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("type: Invalid value: field is immutable"),
        "{e}"
    );
}

#[tokio::test]
async fn paged_lists_and_expired_continue_tokens() {
    let server = FakeApiServer::start().await;
    let api: Api<Secret> = Api::namespaced(server.client(), "ns");
    for i in 0..5 {
        api.create(&PostParams::default(), &secret(&format!("s{i}")))
            .await
            .unwrap();
    }
    let page = api
        .list_metadata(&ListParams::default().limit(2))
        .await
        .unwrap();
    assert_eq!(page.items.len(), 2);
    let token = page.metadata.continue_.unwrap();
    let next = api
        .list_metadata(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(next.items[0].metadata.name.as_deref(), Some("s2"));
    server.store().expire_continue_tokens();
    assert_eq!(
        code(
            api.list_metadata(&ListParams::default().limit(2).continue_token(&token))
                .await
                .unwrap_err()
        ),
        410
    );
}

#[tokio::test]
async fn watch_streams_changes_and_answers_410_after_compaction() {
    let server = FakeApiServer::start().await;
    let api: Api<Secret> = Api::namespaced(server.client(), "ns");
    let created = api
        .create(&PostParams::default(), &secret("w"))
        .await
        .unwrap();
    let rv = created.metadata.resource_version.unwrap();
    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"labels": {"a": "b"}}})),
    )
    .await
    .unwrap();
    match stream.try_next().await.unwrap().unwrap() {
        WatchEvent::Modified(s) => assert_eq!(s.metadata.labels.unwrap()["a"], "b"),
        other => panic!("{other:?}"),
    }
    server.store().compact();
    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match stream.try_next().await.unwrap().unwrap() {
        WatchEvent::Error(e) => assert_eq!(e.code, 410),
        other => panic!("expected 410 Gone, got {other:?}"),
    }
}

#[tokio::test]
async fn leases_and_events_share_the_store_and_its_rules() {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::events::v1::Event;
    let server = FakeApiServer::start().await;
    let leases: Api<Lease> = Api::namespaced(server.client(), "kubeecr");
    let lease: Lease = serde_json::from_value(json!({"metadata": {"name": "kubeecr"}, "spec": {"holderIdentity": "pod-a", "leaseDurationSeconds": 15}})).unwrap();
    let created = leases.create(&PostParams::default(), &lease).await.unwrap();
    assert_eq!(
        created.spec.as_ref().unwrap().holder_identity.as_deref(),
        Some("pod-a")
    );
    let rv = created.metadata.resource_version.clone().unwrap();
    // Two replicas race to take the lease: the second, with the old version, gets 409.
    let take = |holder: &str, rv: &str| json!({"metadata": {"resourceVersion": rv}, "spec": {"holderIdentity": holder}});
    leases
        .patch(
            "kubeecr",
            &PatchParams::default(),
            &Patch::Merge(&take("pod-b", &rv)),
        )
        .await
        .unwrap();
    let e = leases
        .patch(
            "kubeecr",
            &PatchParams::default(),
            &Patch::Merge(&take("pod-c", &rv)),
        )
        .await
        .unwrap_err();
    assert_eq!(code(e), 409);
    assert_eq!(
        leases
            .get("kubeecr")
            .await
            .unwrap()
            .spec
            .unwrap()
            .holder_identity
            .as_deref(),
        Some("pod-b")
    );
    // Leases and Secrets of the same name do not collide.
    let secrets: Api<Secret> = Api::namespaced(server.client(), "kubeecr");
    secrets
        .create(&PostParams::default(), &secret("kubeecr"))
        .await
        .unwrap();
    assert_eq!(
        leases
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    let events: Api<Event> = Api::namespaced(server.client(), "team-a");
    let event: Event = serde_json::from_value(json!({
        "metadata": {"name": "ecr-pull.1"}, "eventTime": "2026-11-29T08:00:00.000000Z",
        "reason": "Refreshed", "note": "token refreshed", "type": "Normal", "action": "Refresh",
        "reportingController": "deft.com/kubeecr", "reportingInstance": "pod-a",
        "regarding": {"kind": "Secret", "namespace": "team-a", "name": "ecr-pull"},
    }))
    .unwrap();
    events.create(&PostParams::default(), &event).await.unwrap();
    let listed = events.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items[0].reason.as_deref(), Some("Refreshed"));
}
