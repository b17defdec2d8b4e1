//! `kubeecr serve` flags as an operator uses them.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use kubeecr_testkit::cluster::TestCluster;
use kubeecr_testkit::moto::EcrProxy;

use crate::common::*;
use crate::serve_process::{ServeProcess, eventually};

/// `--leader-elect=false`: one instance refreshes without any Lease; `--log-format json`
/// gives one JSON object per line.
#[tokio::test]
async fn a_single_instance_needs_no_lease_and_logs_json() {
    let cluster = TestCluster::double().await;
    let ecr = EcrProxy::start().await;
    let client = cluster.client();
    let ns = cluster.ns();
    create_opted_in(&client, ns, "existing", "123456789012/us-west-2").await;
    let mut serve = ServeProcess::start(
        &cluster,
        &ecr.url(),
        "solo",
        &["--leader-elect=false", "--log-format", "json"],
    )
    .await;
    serve.wait_ready().await;
    let filled = eventually(Duration::from_secs(10), || async {
        let s = get(&client, ns, "existing").await;
        annotation(&s, EXPIRES_AT).map(|_| s)
    })
    .await;
    let filled = filled.unwrap_or_else(|| panic!("filled\n{}", serve.logs()));
    // Filled with exactly the token ECR issued, and its expiry.
    let issued = ecr.newest("us-west-2", None).expect("issued");
    assert_eq!(
        password_of(
            &dockerconfig(&filled),
            "123456789012.dkr.ecr.us-west-2.amazonaws.com"
        ),
        issued.password,
        "the issued token"
    );
    assert_eq!(
        annotation(&filled, EXPIRES_AT).as_deref(),
        Some(issued.expires_at.as_str())
    );
    assert!(serve.is_leader().await);
    let leases = Api::<Lease>::namespaced(client.clone(), ns);
    assert!(leases.get_opt("kubeecr").await.unwrap().is_none());

    serve.signal(libc::SIGTERM);
    assert!(serve.exit(Duration::from_secs(30)).await.success());
    let logs = serve.logs();
    assert!(logs.lines().count() > 3);
    for line in logs.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
    }
}

#[tokio::test]
async fn serve_refuses_to_start_without_its_certificate() {
    let out = kubeecr_command("serve")
        .args([
            "--tls-cert-file",
            "/nonexistent/tls.crt",
            "--tls-key-file",
            "/nonexistent/tls.key",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("reading /nonexistent/tls.crt"), "{stderr}");
    assert!(stderr.contains("mount the cert-manager Secret"), "{stderr}");
}

#[tokio::test]
async fn inconsistent_lease_timings_are_refused_with_an_example() {
    let out = kubeecr_command("serve")
        .args(["--lease-duration", "5s", "--lease-renew-deadline", "10s"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("must hold, e.g. 2s < 10s < 15s"),
        "{stderr}"
    );
}
