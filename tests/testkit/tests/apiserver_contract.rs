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

// What kube-runtime's watcher, a Lease loop and the events Recorder rely on, and the faults
// tests inject.

use std::time::Duration;

use kube::core::PartialObjectMeta;
use kube::runtime::watcher;

const LIMIT: Duration = Duration::from_secs(20);

fn labelled(name: &str, labels: serde_json::Value) -> Secret {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": labels}, "stringData": {"k": "v"}}),
    )
    .unwrap()
}

/// The next item, in bounded time.
async fn next<S: futures::Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    tokio::time::timeout(LIMIT, stream.next())
        .await
        .expect("an event in time")
}

fn names<K: kube::Resource>(items: &[K]) -> Vec<String> {
    let mut n: Vec<String> = items
        .iter()
        .map(|o| o.meta().name.clone().unwrap())
        .collect();
    n.sort();
    n
}

#[tokio::test]
async fn label_selected_lists_page_over_the_matching_objects() {
    let server = FakeApiServer::start().await;
    let api: Api<Secret> = Api::namespaced(server.client(), "ns");
    for i in 0..9 {
        let labels = match i % 3 {
            0 => json!({"app": "demo"}),
            1 => json!({"app": "other", "tier": "web"}),
            _ => json!({}),
        };
        api.create(&PostParams::default(), &labelled(&format!("s{i}"), labels))
            .await
            .unwrap();
    }
    let all = |selector: &'static str| {
        let api = api.clone();
        async move {
            let mut found = Vec::new();
            let mut lp = ListParams::default().labels(selector).limit(2);
            loop {
                let page = api.list_metadata(&lp).await.unwrap();
                assert!(page.items.len() <= 2);
                found.extend(page.items);
                match page.metadata.continue_ {
                    Some(token) if !token.is_empty() => lp = lp.continue_token(&token),
                    _ => break,
                }
            }
            names(&found)
        }
    };
    assert_eq!(all("app=demo").await, ["s0", "s3", "s6"]);
    assert_eq!(all("app==demo").await, ["s0", "s3", "s6"]);
    // `!=` and `notin` keep objects without the key, as in Kubernetes.
    assert_eq!(all("app!=demo").await, ["s1", "s2", "s4", "s5", "s7", "s8"]);
    assert_eq!(
        all("app notin (other)").await,
        ["s0", "s2", "s3", "s5", "s6", "s8"]
    );
    assert_eq!(all("app in (demo, other)").await.len(), 6);
    assert_eq!(all("app").await.len(), 6);
    assert_eq!(all("!app").await, ["s2", "s5", "s8"]);
    assert_eq!(all("app=other,tier=web").await, ["s1", "s4", "s7"]);
    assert_eq!(all("app=other,!tier").await, Vec::<String>::new());

    let e = api
        .list(&ListParams::default().labels("app in demo"))
        .await
        .unwrap_err();
    match e {
        kube::Error::Api(s) => {
            assert_eq!((s.code, s.reason.as_str()), (400, "BadRequest"));
            assert!(
                s.message.starts_with("unable to parse requirement: "),
                "{}",
                s.message
            );
        }
        other => panic!("{other}"),
    }
    // Watches take the same selectors, and refuse the same.
    let e = api
        .watch(&WatchParams::default().labels("app=de mo"), "0")
        .await
        .err()
        .expect("400");
    assert_eq!(code(e), 400);
}

#[tokio::test]
async fn a_label_selected_watch_sees_objects_leave_and_enter() {
    let server = FakeApiServer::start().await;
    let api: Api<Secret> = Api::namespaced(server.client(), "ns");
    let start = api
        .create(
            &PostParams::default(),
            &labelled("s", json!({"app": "demo"})),
        )
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    api.create(&PostParams::default(), &labelled("other", json!({})))
        .await
        .unwrap();
    let wp = WatchParams::default()
        .labels("app=demo")
        .disable_bookmarks();
    let mut live = api.watch(&wp, &start).await.unwrap().boxed();

    let set_labels = |labels: serde_json::Value| {
        let api = api.clone();
        async move {
            let p = json!({"metadata": {"labels": labels}});
            api.patch("s", &PatchParams::default(), &Patch::Merge(&p))
                .await
                .unwrap()
                .metadata
                .resource_version
                .unwrap()
        }
    };
    let left = set_labels(json!({"app": null})).await;
    let _ = api
        .patch(
            "other",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"annotations": {"a": "b"}}})),
        )
        .await
        .unwrap();
    let entered = set_labels(json!({"app": "demo"})).await;
    let modified = set_labels(json!({"app": "demo", "more": "x"})).await;

    let check = |events: Vec<WatchEvent<Secret>>| {
        match &events[0] {
            // The previous content, at the new version.
            WatchEvent::Deleted(s) => {
                assert_eq!(s.metadata.labels.as_ref().unwrap()["app"], "demo");
                assert_eq!(s.metadata.resource_version.as_deref(), Some(left.as_str()));
            }
            other => panic!("{other:?}"),
        }
        match &events[1] {
            WatchEvent::Added(s) => {
                assert_eq!(
                    s.metadata.resource_version.as_deref(),
                    Some(entered.as_str())
                )
            }
            other => panic!("{other:?}"),
        }
        match &events[2] {
            WatchEvent::Modified(s) => {
                assert_eq!(
                    s.metadata.resource_version.as_deref(),
                    Some(modified.as_str())
                )
            }
            other => panic!("{other:?}"),
        }
    };
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(next(&mut live).await.unwrap().unwrap());
    }
    check(seen);
    // The same from the history, for a watch that starts at the old version.
    let mut replay = api.watch(&wp, &start).await.unwrap().boxed();
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(next(&mut replay).await.unwrap().unwrap());
    }
    check(seen);
    // Leaving by deletion.
    api.delete("s", &Default::default()).await.unwrap();
    assert!(matches!(
        next(&mut live).await,
        Some(Ok(WatchEvent::Deleted(_)))
    ));
}

#[tokio::test]
async fn bookmarks_arrive_and_timeout_seconds_ends_the_watch() {
    let server = FakeApiServer::start().await;
    server.set_bookmark_interval(Duration::from_millis(200));
    let api: Api<Secret> = Api::namespaced(server.client(), "ns");
    api.create(&PostParams::default(), &secret("a"))
        .await
        .unwrap();
    let meta: Api<PartialObjectMeta<Secret>> = Api::namespaced(server.client(), "ns");
    let started = std::time::Instant::now();
    let stream = meta
        .watch_metadata(&WatchParams::default().timeout(2), "0")
        .await
        .unwrap();
    let events: Vec<_> = tokio::time::timeout(LIMIT, stream.try_collect::<Vec<_>>())
        .await
        .expect("ended by timeoutSeconds")
        .unwrap();
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(
        matches!(events[0], WatchEvent::Added(_)),
        "the current object first"
    );
    let bookmarks: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            WatchEvent::Bookmark(b) => Some(b),
            _ => None,
        })
        .collect();
    assert!(bookmarks.len() >= 3, "{}", bookmarks.len());
    assert!(
        matches!(events.last(), Some(WatchEvent::Bookmark(_))),
        "a bookmark before the end"
    );
    let current = server.store().resource_version().to_string();
    assert!(
        bookmarks
            .iter()
            .all(|b| b.metadata.resource_version == current)
    );
    assert_eq!(bookmarks[0].types.kind, "PartialObjectMetadata");

    // Without bookmarks asked for, none come.
    let quiet = api
        .watch(&WatchParams::default().timeout(1).disable_bookmarks(), "0")
        .await
        .unwrap();
    let events: Vec<_> = tokio::time::timeout(LIMIT, quiet.try_collect::<Vec<_>>())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(events.len(), 1, "only the ADDED");
}

#[tokio::test]
async fn without_timeout_seconds_a_watch_stays_open() {
    let server = FakeApiServer::start().await;
    let request = http::Request::get("/api/v1/namespaces/ns/secrets?watch=1")
        .body(kube::client::Body::from(Vec::new()))
        .unwrap();
    let response = server.client().send(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    use http_body_util::BodyExt;
    let waited = tokio::time::timeout(Duration::from_secs(2), body.frame()).await;
    assert!(waited.is_err(), "still open");
}

#[tokio::test]
async fn streaming_lists_are_refused_like_a_server_without_watch_progress() {
    let server = FakeApiServer::start().await;
    let api: Api<Secret> = Api::namespaced(server.client(), "ns");
    let mut stream = api
        .watch(&WatchParams::default().initial_events(), "0")
        .await
        .unwrap()
        .boxed();
    match next(&mut stream).await.unwrap().unwrap() {
        WatchEvent::Error(e) => {
            assert_eq!((e.code, e.reason.as_str()), (500, "InternalError"));
            assert!(e.message.contains("RequestWatchProgress is disabled"));
        }
        other => panic!("{other:?}"),
    }
    assert!(next(&mut stream).await.is_none(), "then the stream ends");
}

type MetaEvents = futures::stream::BoxStream<
    'static,
    Result<watcher::Event<PartialObjectMeta<Secret>>, watcher::Error>,
>;

/// The watcher's next event; errors are yielded, and it recovers on the next poll.
async fn next_event(events: &mut MetaEvents) -> watcher::Event<PartialObjectMeta<Secret>> {
    loop {
        if let Ok(e) = next(events).await.expect("the watcher runs on") {
            return e;
        }
    }
}

/// The names listed after an `Init`, up to `InitDone`.
async fn init(events: &mut MetaEvents) -> Vec<String> {
    let mut listed = Vec::new();
    loop {
        match next_event(events).await {
            watcher::Event::InitApply(o) => listed.push(o),
            watcher::Event::InitDone => return names(&listed),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn kube_runtime_watcher_lists_watches_and_relists_after_410() {
    use kube::runtime::watcher::Event;
    let server = FakeApiServer::start().await;
    let api: Api<Secret> = Api::namespaced(server.client(), "w");
    for name in ["a", "b", "c"] {
        api.create(
            &PostParams::default(),
            &labelled(name, json!({"app": "demo"})),
        )
        .await
        .unwrap();
    }
    api.create(&PostParams::default(), &labelled("plain", json!({})))
        .await
        .unwrap();
    let meta = Api::<PartialObjectMeta<Secret>>::all(server.client());
    let config = watcher::Config::default().labels("app=demo").page_size(2);
    let mut events: MetaEvents = watcher(meta, config).boxed();
    assert!(matches!(next_event(&mut events).await, Event::Init));
    assert_eq!(init(&mut events).await, ["a", "b", "c"]);
    let lists = |server: &FakeApiServer| {
        server
            .requests()
            .iter()
            .filter(|r| !r.is_watch() && r.path == "/api/v1/secrets")
            .inspect(|r| {
                assert!(r.is_metadata_only());
                assert_eq!(r.label_selector().as_deref(), Some("app=demo"));
            })
            .count()
    };
    assert_eq!(lists(&server), 2, "two pages");

    api.create(
        &PostParams::default(),
        &labelled("d", json!({"app": "demo"})),
    )
    .await
    .unwrap();
    assert!(
        matches!(next_event(&mut events).await, Event::Apply(o) if o.metadata.name.as_deref() == Some("d"))
    );
    // Losing the label is a deletion for this watcher.
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"labels": null}})),
    )
    .await
    .unwrap();
    assert!(
        matches!(next_event(&mut events).await, Event::Delete(o) if o.metadata.name.as_deref() == Some("a"))
    );
    api.delete("b", &Default::default()).await.unwrap();
    assert!(
        matches!(next_event(&mut events).await, Event::Delete(o) if o.metadata.name.as_deref() == Some("b"))
    );
    let watch = server
        .requests()
        .into_iter()
        .rfind(|r| r.is_watch())
        .unwrap();
    assert_eq!(watch.param("allowWatchBookmarks").as_deref(), Some("true"));
    assert_eq!(watch.param("timeoutSeconds").as_deref(), Some("290"));

    // Cut off while changes happen and the history is compacted: its version is gone, so
    // the watcher gets 410 and lists again.
    server.pause_watches(true);
    api.create(
        &PostParams::default(),
        &labelled("e", json!({"app": "demo"})),
    )
    .await
    .unwrap();
    server.store().compact();
    server.break_watches();
    server.pause_watches(false);
    let mut gone = false;
    let relisted = loop {
        match next(&mut events).await.expect("the watcher runs on") {
            Ok(Event::Init) => break init(&mut events).await,
            Err(watcher::Error::WatchError(s)) if s.code == 410 => gone = true,
            // The cut itself, and events of the cut stream if any reached the client.
            Err(_) | Ok(Event::Apply(_) | Event::Delete(_)) => continue,
            Ok(other) => panic!("{other:?}"),
        }
    };
    assert!(gone, "re-listed because of the 410");
    assert_eq!(relisted, ["c", "d", "e"]);
    assert!(lists(&server) >= 4);
}

#[tokio::test]
async fn dropped_requests_are_connection_errors() {
    let server = FakeApiServer::start().await;
    let api: Api<Secret> = Api::namespaced(server.client(), "ns");
    api.create(&PostParams::default(), &secret("x"))
        .await
        .unwrap();
    server.drop_next(http::Method::GET, "/secrets/x", 1);
    let e = tokio::time::timeout(LIMIT, api.get("x"))
        .await
        .unwrap()
        .unwrap_err();
    assert!(!matches!(e, kube::Error::Api(_)), "no HTTP answer: {e:?}");
    api.get("x").await.expect("only the next one");

    // A watch cut mid-stream ends without the chunked body's end: an error, not a clean end.
    let request = http::Request::get("/api/v1/namespaces/ns/secrets?watch=1")
        .body(kube::client::Body::from(Vec::new()))
        .unwrap();
    let response = server.client().send(request).await.unwrap();
    while server.open_watches() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.break_watches();
    use http_body_util::BodyExt;
    let read = tokio::time::timeout(LIMIT, response.into_body().collect())
        .await
        .unwrap();
    assert!(read.is_err(), "cut, not ended");
    assert_eq!(server.open_watches(), 0);
}

#[tokio::test]
async fn delayed_requests_wait_and_500s_are_internal_errors() {
    let server = FakeApiServer::start().await;
    let api: Api<Secret> = Api::namespaced(server.client(), "ns");
    server.delay_next(http::Method::GET, "/secrets", 1, Duration::from_millis(600));
    let started = std::time::Instant::now();
    api.list(&ListParams::default()).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(600));

    server.fail_next(http::Method::GET, "watch=", 1, 500, "InternalError");
    let e = api
        .watch(&WatchParams::default(), "0")
        .await
        .err()
        .expect("500");
    match e {
        kube::Error::Api(s) => {
            assert_eq!((s.code, s.reason.as_str()), (500, "InternalError"));
            assert_eq!(s.message, "injected 500 InternalError");
        }
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn generate_name_gives_five_random_characters() {
    let server = FakeApiServer::start().await;
    let api: Api<Secret> = Api::namespaced(server.client(), "ns");
    let s: Secret = serde_json::from_value(json!({"metadata": {"generateName": "gen-"}})).unwrap();
    let a = api.create(&PostParams::default(), &s).await.unwrap();
    let b = api.create(&PostParams::default(), &s).await.unwrap();
    let (a, b) = (a.metadata.name.unwrap(), b.metadata.name.unwrap());
    assert_ne!(a, b);
    for name in [&a, &b] {
        let suffix = name.strip_prefix("gen-").unwrap();
        assert_eq!(suffix.len(), 5);
        assert!(
            suffix
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
    }
    let nameless: Secret = serde_json::from_value(json!({"metadata": {}})).unwrap();
    let e = api
        .create(&PostParams::default(), &nameless)
        .await
        .unwrap_err();
    assert_eq!(code(e), 422);
}

#[tokio::test]
async fn events_need_their_reporting_fields_and_the_recorder_works() {
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::api::events::v1::Event;
    use kube::runtime::events::{Event as Note, EventType, Recorder, Reporter};
    let server = FakeApiServer::start().await;
    let events: Api<Event> = Api::namespaced(server.client(), "team-a");
    let without: Event = serde_json::from_value(json!({
        "metadata": {"name": "ecr-pull.1"}, "eventTime": "2026-11-29T08:00:00.000000Z",
        "reason": "Refreshed", "type": "Normal", "action": "Refresh",
        "reportingController": "deft.com/kubeecr",
        "regarding": {"kind": "Secret", "namespace": "team-a", "name": "ecr-pull"},
    }))
    .unwrap();
    match events
        .create(&PostParams::default(), &without)
        .await
        .unwrap_err()
    {
        kube::Error::Api(s) => {
            assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
            assert!(
                s.message.contains("reportingInstance: Required value"),
                "{}",
                s.message
            );
        }
        other => panic!("{other}"),
    }
    let mut no_time = serde_json::to_value(&without).unwrap();
    no_time["eventTime"] = serde_json::Value::Null;
    no_time["reportingInstance"] = json!("pod-a");
    let no_time: Event = serde_json::from_value(no_time).unwrap();
    let e = events
        .create(&PostParams::default(), &no_time)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("eventTime: Required value"), "{e}");

    let recorder = Recorder::new(
        server.client(),
        Reporter {
            controller: "kubeecr".into(),
            instance: Some("pod-a".into()),
        },
    );
    let about = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Secret".into()),
        name: Some("ecr-pull".into()),
        namespace: Some("team-a".into()),
        ..Default::default()
    };
    let note = Note {
        type_: EventType::Normal,
        reason: "Refreshed".into(),
        note: Some("token refreshed".into()),
        action: "Refresh".into(),
        secondary: None,
    };
    recorder.publish(&note, &about).await.unwrap();
    recorder.publish(&note, &about).await.unwrap();
    let listed = events.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        listed.items.len(),
        1,
        "the repeat is a series on the same Event"
    );
    assert_eq!(listed.items[0].series.as_ref().unwrap().count, 2);
    let patches = server
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.starts_with("/apis/events.k8s.io/v1/"))
        .count();
    assert_eq!(patches, 1);
}

#[tokio::test]
async fn lease_create_conflicts_and_stale_updates() {
    use k8s_openapi::api::coordination::v1::Lease;
    let server = FakeApiServer::start().await;
    let leases: Api<Lease> = Api::namespaced(server.client(), "kubeecr");
    let lease: Lease = serde_json::from_value(json!({"metadata": {"name": "kubeecr"}, "spec": {"holderIdentity": "pod-a", "leaseDurationSeconds": 15}})).unwrap();
    let created = leases.create(&PostParams::default(), &lease).await.unwrap();
    match leases
        .create(&PostParams::default(), &lease)
        .await
        .unwrap_err()
    {
        kube::Error::Api(s) => assert_eq!((s.code, s.reason.as_str()), (409, "AlreadyExists")),
        other => panic!("{other}"),
    }
    let mut renewed = created.clone();
    renewed.spec.as_mut().unwrap().holder_identity = Some("pod-b".into());
    leases
        .replace("kubeecr", &PostParams::default(), &renewed)
        .await
        .unwrap();
    // pod-c still holds the version pod-b replaced.
    renewed.spec.as_mut().unwrap().holder_identity = Some("pod-c".into());
    match leases
        .replace("kubeecr", &PostParams::default(), &renewed)
        .await
        .unwrap_err()
    {
        kube::Error::Api(s) => {
            assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
            assert_eq!(
                s.message,
                "Operation cannot be fulfilled on leases.coordination.k8s.io \"kubeecr\": the object has been modified; please apply your changes to the latest version and try again"
            );
        }
        other => panic!("{other}"),
    }
}
