//! `kubeecr status` as an operator runs it: states, the summary, JSON, and the exit code.

use std::process::Output;

use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kubeecr_testkit::cluster::TestCluster;
use kubeecr_testkit::moto::EcrProxy;
use serde_json::{Value, json};

use crate::common::*;
use crate::on_both_backends;

async fn run(cluster: &TestCluster, subcommand: &str, args: &[&str]) -> Output {
    kubeecr_command(subcommand)
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig())
        .args(["--namespace", cluster.ns()])
        .args(args)
        .output()
        .await
        .expect("run kubeecr")
}

/// The JSON status, and the exit code.
async fn status(cluster: &TestCluster) -> (Value, Option<i32>) {
    let out = run(cluster, "status", &["-o", "json"]).await;
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (json, out.status.code())
}

fn state_of<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("{name} not listed: {status:#}"))
}

async fn status_shows_each_secret_and_fails_until_all_are_filled(cluster: TestCluster) {
    let ecr = EcrProxy::start().await;
    let client = cluster.client();
    let ns = cluster.ns();
    create_opted_in(&client, ns, "fresh", "123456789012/us-west-2").await;
    create_opted_in(&client, ns, "edited", "123456789012/us-west-2").await;
    create(
        &client,
        ns,
        &secret(
            "typo",
            DOCKER_CONFIG_JSON,
            &[(ANNOTATION, "12345/us-west-2")],
            EMPTY,
        ),
    )
    .await;
    create_helm_release(&client, ns).await;

    let (before, code) = status(&cluster).await;
    assert_eq!(code, Some(1), "{before:#}");
    assert_eq!(before["summary"]["total"], 3, "{before:#}");
    assert_eq!(state_of(&before, "fresh")["state"], "due");
    let typo = state_of(&before, "typo");
    assert_eq!(typo["state"], "invalid");
    assert!(
        typo["reason"]
            .as_str()
            .unwrap()
            .contains("account id 12345 has 5 digits; AWS account ids have 12"),
        "{typo}"
    );

    let out = run(&cluster, "refresh", &["--ecr-endpoint", &ecr.url()]).await;
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A token pasted by hand over kubeecr's.
    let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), ns);
    let host = "123456789012.dkr.ecr.us-west-2.amazonaws.com";
    let hand = json!({"auths": {host: {"auth": "QVdTOmJ5LWhhbmQ="}}}).to_string();
    api.patch(
        "edited",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"data": {".dockerconfigjson": k8s_openapi::ByteString(hand.into_bytes())}}),
        ),
    )
    .await
    .unwrap();

    let (after, code) = status(&cluster).await;
    assert_eq!(code, Some(1));
    let fresh = state_of(&after, "fresh");
    assert_eq!(fresh["state"], "filled", "{after:#}");
    assert_eq!(fresh["registries"], "123456789012/us-west-2");
    let left = fresh["secondsLeft"].as_i64().unwrap();
    assert!(
        (3600..=12 * 3600).contains(&left),
        "a fresh token has hours left: {left}"
    );
    assert_eq!(state_of(&after, "edited")["state"], "foreign");
    assert_eq!(after["summary"]["filled"], 1);
    assert_eq!(after["summary"]["foreign"], 1);
    assert_eq!(after["summary"]["invalid"], 1);

    // Fixed: exit 0, and the table ends with the summary.
    for name in ["typo", "edited"] {
        api.delete(name, &DeleteParams::default()).await.unwrap();
    }
    let out = run(&cluster, "status", &[]).await;
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{table}");
    assert!(table.starts_with("SECRET "), "{table}");
    assert!(table.contains(&format!("{ns}/fresh ")), "{table}");
    assert!(
        table.ends_with("1 opted-in Secret: 1 filled, 0 due, 0 invalid, 0 foreign\n"),
        "{table}"
    );
    assert!(!table.contains("QVdT"), "status printed a credential");
}
on_both_backends!(status_shows_each_secret_and_fails_until_all_are_filled);

#[tokio::test]
async fn status_exits_2_when_it_cannot_list() {
    let cluster = TestCluster::double().await;
    cluster
        .double_server()
        .unwrap()
        .fail_next(http::Method::GET, "/secrets", 2, 403, "Forbidden");
    let out = run(&cluster, "status", &[]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("(kubeecr needs get and list on secrets)"),
        "{stderr}"
    );
}
