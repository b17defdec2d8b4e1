//! The double answers as a real kube-apiserver v1.36 did (`tests/fixtures/apiserver/`):
//! replays each fixture's request through kube-rs's client and compares status codes,
//! reasons, messages, `details`, watch event types and the shapes of BOOKMARK and ERROR
//! events. Generated names, uids, timestamps, resourceVersions and managedFields differ.

use std::collections::BTreeSet;
use std::time::Duration;

use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kubeecr_testkit::apiserver::FakeApiServer;
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(20);

fn fixture(file: &str) -> Value {
    let dir = format!("{}/../fixtures/apiserver", env!("CARGO_MANIFEST_DIR"));
    let path = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with(file))
        .unwrap_or_else(|| panic!("no fixture {file} in {dir}"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    /// A watch's events, one per line.
    fn events(&self) -> Vec<Value> {
        String::from_utf8(self.body.clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

async fn send(
    server: &FakeApiServer,
    method: &str,
    path: &str,
    accept: Option<&str>,
    body: Option<&Value>,
) -> Answer {
    let content_type = if method == "PATCH" {
        "application/merge-patch+json"
    } else {
        "application/json"
    };
    let mut request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type);
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let body = body
        .map(|b| serde_json::to_vec(b).unwrap())
        .unwrap_or_default();
    let request = request.body(kube::client::Body::from(body)).unwrap();
    tokio::time::timeout(LIMIT, async {
        let response = server.client().send(request).await.expect("an answer");
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            body: body.to_vec(),
        }
    })
    .await
    .expect("answered in time")
}

/// The fixture's request as it was made, its path optionally rewritten.
async fn replay(server: &FakeApiServer, fx: &Value, path: Option<&str>) -> Answer {
    let r = &fx["request"];
    let path = path.unwrap_or_else(|| r["path"].as_str().unwrap());
    let body = r.get("body").filter(|b| !b.is_null());
    send(
        server,
        r["method"].as_str().unwrap(),
        path,
        r["accept"].as_str(),
        body,
    )
    .await
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// Metadata keys, but for managedFields, which the double does not keep.
fn meta_keys(obj: &Value) -> BTreeSet<String> {
    let mut k = keys(&obj["metadata"]);
    k.remove("managedFields");
    k
}

async fn seed(server: &FakeApiServer, name: &str) {
    let api: Api<Secret> = Api::namespaced(server.client(), "capture");
    let secret = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "demo"}, "annotations": {"deft.com/kubeecr": "123456789012/us-west-2"}},
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": {".dockerconfigjson": "{\"auths\":{}}"},
    }))
    .unwrap();
    api.create(&PostParams::default(), &secret).await.unwrap();
}

/// Waits until the double has `n` watch streams open.
async fn watches_open(server: &FakeApiServer, n: usize) {
    tokio::time::timeout(LIMIT, async {
        while server.open_watches() != n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("watch started");
}

#[tokio::test]
async fn paged_metadata_lists_match_01_to_03() {
    let server = FakeApiServer::start().await;
    for i in 0..4 {
        seed(&server, &format!("opted-in-{i}")).await;
    }
    let fx1 = fixture("01");
    let page1 = replay(&server, &fx1, None).await;
    assert_eq!(page1.status, fx1["status"]);
    let (got, want) = (page1.json(), &fx1["response"]);
    assert_eq!(
        (&got["kind"], &got["apiVersion"]),
        (&want["kind"], &want["apiVersion"])
    );
    assert_eq!(keys(&got["metadata"]), keys(&want["metadata"]));
    assert_eq!(
        got["metadata"]["remainingItemCount"],
        want["metadata"]["remainingItemCount"]
    );
    for (item, real) in got["items"]
        .as_array()
        .unwrap()
        .iter()
        .zip(want["items"].as_array().unwrap())
    {
        assert_eq!(
            (&item["kind"], &item["apiVersion"]),
            (&real["kind"], &real["apiVersion"])
        );
        assert_eq!(meta_keys(item), meta_keys(real));
        assert_eq!(item["metadata"]["name"], real["metadata"]["name"]);
    }

    let token = got["metadata"]["continue"].as_str().unwrap();
    let path = format!("/api/v1/namespaces/capture/secrets?limit=2&continue={token}");
    let fx2 = fixture("02");
    let page2 = replay(&server, &fx2, Some(&path)).await;
    assert_eq!(page2.status, fx2["status"]);
    let page2 = page2.json();
    assert_eq!(keys(&page2["metadata"]), keys(&fx2["response"]["metadata"]));
    assert_eq!(
        page2["metadata"]["resourceVersion"], got["metadata"]["resourceVersion"],
        "every page carries the first page's version"
    );
    assert_eq!(page2["items"].as_array().unwrap().len(), 2);

    server.store().expire_continue_tokens();
    let fx3 = fixture("03");
    let expired = replay(&server, &fx3, Some(&path)).await;
    assert_eq!(expired.status, fx3["status"]);
    let (got, want) = (expired.json(), &fx3["response"]);
    assert_eq!(keys(&got), keys(want));
    assert_eq!(keys(&got["metadata"]), keys(&want["metadata"]));
    for field in ["kind", "apiVersion", "status", "message", "reason", "code"] {
        assert_eq!(got[field], want[field], "{field}");
    }
    // The inconsistent continuation works.
    let token = got["metadata"]["continue"].as_str().unwrap();
    let rest = send(
        &server,
        "GET",
        &format!("/api/v1/namespaces/capture/secrets?limit=2&continue={token}"),
        None,
        None,
    )
    .await;
    assert_eq!(rest.status, 200);
}

#[tokio::test]
async fn metadata_watch_matches_04() {
    let server = FakeApiServer::start().await;
    // Only the bookmark before the timeout, as in the fixture's short watch.
    server.set_bookmark_interval(Duration::from_secs(60));
    seed(&server, "opted-in-0").await;
    seed(&server, "opted-in-2").await;
    let rv = server.store().resource_version();
    let fx = fixture("04");
    let path = format!(
        "/api/v1/namespaces/capture/secrets?watch=1&allowWatchBookmarks=true&resourceVersion={rv}&timeoutSeconds=2"
    );
    let watching = tokio::spawn({
        let server_url = server.url();
        let accept = fx["request"]["accept"].as_str().unwrap().to_string();
        async move {
            let client =
                kube::Client::try_from(kube::Config::new(server_url.parse().unwrap())).unwrap();
            let request = http::Request::get(path)
                .header("accept", accept)
                .body(kube::client::Body::from(Vec::new()))
                .unwrap();
            let response = client.send(request).await.unwrap();
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .expect("a clean end")
                .to_bytes();
            Answer {
                status,
                body: body.to_vec(),
            }
        }
    });
    watches_open(&server, 1).await;
    let api: Api<Secret> = Api::namespaced(server.client(), "capture");
    let expires = json!({"metadata": {"annotations": {"deft.com/kubeecr-expires-at": "2026-11-30T06:00:00Z"}}});
    api.patch(
        "opted-in-0",
        &PatchParams::default(),
        &Patch::Merge(&expires),
    )
    .await
    .unwrap();
    seed(&server, "opted-in-new").await;
    api.delete("opted-in-2", &DeleteParams::default())
        .await
        .unwrap();
    let answer = tokio::time::timeout(LIMIT, watching)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer.status, fx["status"]);
    let got = answer.events();
    let want = fx["events"].as_array().unwrap();
    let types = |events: &[Value]| events.iter().map(|e| e["type"].clone()).collect::<Vec<_>>();
    assert_eq!(types(&got), types(want));
    for (event, real) in got.iter().zip(want) {
        let (o, r) = (&event["object"], &real["object"]);
        assert_eq!(
            (&o["kind"], &o["apiVersion"]),
            (&r["kind"], &r["apiVersion"])
        );
        assert_eq!(meta_keys(o), meta_keys(r), "{}", event["type"]);
        assert_eq!(keys(o), keys(r));
    }
    let last_change = &got[2]["object"]["metadata"]["resourceVersion"];
    assert_eq!(
        &got[3]["object"]["metadata"]["resourceVersion"], last_change,
        "the bookmark is at the store's version"
    );
    assert_eq!(got[2]["object"]["metadata"]["name"], "opted-in-2");
}

#[tokio::test]
async fn watch_from_a_compacted_version_matches_05() {
    let server = FakeApiServer::start().await;
    seed(&server, "a").await;
    seed(&server, "b").await;
    server.store().compact();
    let fx = fixture("05");
    let answer = replay(&server, &fx, None).await;
    assert_eq!(answer.status, fx["status"]);
    let got = answer.events();
    let want = fx["events"].as_array().unwrap();
    assert_eq!(got.len(), want.len());
    let (o, r) = (&got[0]["object"], &want[0]["object"]);
    assert_eq!(got[0]["type"], "ERROR");
    assert_eq!(keys(o), keys(r), "no details, as the real Status");
    for field in ["kind", "apiVersion", "metadata", "status", "reason", "code"] {
        assert_eq!(o[field], r[field], "{field}");
    }
    let message = o["message"].as_str().unwrap();
    let oldest = message
        .strip_prefix("too old resource version: 2 (")
        .and_then(|m| m.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{message}"));
    assert!(oldest.parse::<u64>().unwrap() > 2);
}

#[tokio::test]
async fn streaming_lists_are_refused_as_06() {
    let server = FakeApiServer::start().await;
    let fx = fixture("06");
    let answer = replay(&server, &fx, None).await;
    assert_eq!(answer.status, fx["status"]);
    assert_eq!(&Value::from(answer.events()), &fx["events"]);
}

#[tokio::test]
async fn stale_patch_and_secret_validation_match_07_and_14() {
    let server = FakeApiServer::start().await;
    seed(&server, "opted-in-1").await;
    for file in ["07", "14"] {
        let fx = fixture(file);
        let answer = replay(&server, &fx, None).await;
        assert_eq!(answer.status, fx["status"], "{file}");
        assert_eq!(answer.json(), fx["response"], "{file}");
    }
}

#[tokio::test]
async fn lease_create_exists_and_stale_update_match_08_to_10() {
    let server = FakeApiServer::start().await;
    let fx = fixture("08");
    let created = replay(&server, &fx, None).await;
    assert_eq!(created.status, fx["status"]);
    let (got, want) = (created.json(), &fx["response"]);
    assert_eq!(keys(&got), keys(want));
    assert_eq!(meta_keys(&got), meta_keys(want));
    assert_eq!(got["spec"], want["spec"]);
    assert_eq!(
        (&got["kind"], &got["apiVersion"]),
        (&want["kind"], &want["apiVersion"])
    );
    for file in ["09", "10"] {
        let fx = fixture(file);
        let answer = replay(&server, &fx, None).await;
        assert_eq!(answer.status, fx["status"], "{file}");
        assert_eq!(answer.json(), fx["response"], "{file}");
    }
}

#[tokio::test]
async fn events_match_11_12_16_17() {
    let server = FakeApiServer::start().await;
    let fx = fixture("11");
    let created = replay(&server, &fx, None).await;
    assert_eq!(created.status, fx["status"]);
    let (got, want) = (created.json(), &fx["response"]);
    let name = got["metadata"]["name"].as_str().unwrap().to_string();
    let suffix = name.strip_prefix("opted-in-1-").unwrap();
    assert_eq!(suffix.len(), 5, "{name}");
    assert!(
        suffix
            .bytes()
            .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)),
        "{name}"
    );
    assert_eq!(
        got["metadata"]["generateName"],
        want["metadata"]["generateName"]
    );
    for field in [
        "kind",
        "apiVersion",
        "eventTime",
        "reportingController",
        "reportingInstance",
        "action",
        "reason",
        "regarding",
        "note",
        "type",
    ] {
        assert_eq!(got[field], want[field], "{field}");
    }

    // 16: the same Event again, as a series.
    let fx = fixture("16");
    let mut body = fx["request"]["body"].clone();
    body["metadata"]["name"] = json!(name);
    body["metadata"]["resourceVersion"] = got["metadata"]["resourceVersion"].clone();
    let path = format!("/apis/events.k8s.io/v1/namespaces/capture/events/{name}");
    let updated = send(&server, "PUT", &path, None, Some(&body)).await;
    assert_eq!(updated.status, fx["status"]);
    let updated = updated.json();
    assert_eq!(updated["series"], fx["response"]["series"]);
    assert_eq!(updated["metadata"]["uid"], got["metadata"]["uid"]);

    // 12: without reportingInstance, and a generateName that cannot prefix a name.
    let fx = fixture("12");
    let refused = replay(&server, &fx, None).await;
    assert_eq!(refused.status, fx["status"]);
    let (got, want) = (refused.json(), &fx["response"]);
    assert_eq!(keys(&got), keys(want));
    for field in ["kind", "apiVersion", "status", "reason", "code"] {
        assert_eq!(got[field], want[field], "{field}");
    }
    assert_eq!(
        keys(&got["details"]),
        keys(&want["details"]),
        "no group: validated as a core Event"
    );
    assert_eq!(got["details"]["kind"], want["details"]["kind"]);
    assert_eq!(got["details"]["causes"], want["details"]["causes"]);
    let generated = got["details"]["name"].as_str().unwrap();
    assert!(generated.starts_with("opted-in-1.") && generated.len() == "opted-in-1.xnldh".len());
    let real_message = want["message"]
        .as_str()
        .unwrap()
        .replace("opted-in-1.xnldh", generated);
    assert_eq!(got["message"], json!(real_message));

    let fx = fixture("17");
    let core = replay(&server, &fx, None).await;
    assert_eq!(
        core.status,
        fx["status"],
        "{}",
        String::from_utf8_lossy(&core.body)
    );
    let core = core.json();
    assert!(
        core["metadata"]["name"]
            .as_str()
            .unwrap()
            .starts_with("opted-in-1-")
    );
    for field in [
        "kind",
        "apiVersion",
        "involvedObject",
        "reason",
        "message",
        "source",
        "count",
        "type",
    ] {
        assert_eq!(core[field], fx["response"][field], "{field}");
    }
}
