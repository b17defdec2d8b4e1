//! `kubeecr serve` as a process: webhook over HTTPS, background refresher, SIGTERM.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use kubeecr_testkit::cluster::TestCluster;
use kubeecr_testkit::moto::EcrProxy;
use kubeecr_testkit::tls::{Alpn, TestCa, https_client};

use crate::common::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn serve_fills_on_admission_refreshes_in_background_and_stops_on_sigterm() {
    let cluster = TestCluster::double().await;
    let ecr = EcrProxy::start().await;
    let client = cluster.client();
    let ns = cluster.ns();
    create_opted_in(&client, ns, "existing", "123456789012/us-west-2").await;

    let ca = TestCa::new("serve-ca");
    let mount = KubeletMount::new(&ca.serving("kubeecr-webhook", true));
    let port = free_port();
    let mut child = kubeecr_command("serve")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--tls-cert-file")
        .arg(mount.files().cert)
        .arg("--tls-key-file")
        .arg(mount.files().key)
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig())
        .args([
            "--ecr-endpoint",
            &ecr.url(),
            "--refresh-interval",
            "1s",
            "--log-format",
            "json",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let https = https_client(ca.pem().as_bytes(), Alpn::Both);
    let (_, review) = fixture("01-create-annotated-nodata-apply-mutate-create.json");
    let body = Bytes::from(serde_json::to_vec(&review).unwrap());
    let mut answer = None;
    for _ in 0..100 {
        let req = http::Request::post(format!("https://127.0.0.1:{port}/mutate?timeout=5s"))
            .header("content-type", "application/json")
            .body(Full::new(body.clone()))
            .unwrap();
        if let Ok(res) = https.request(req).await {
            let bytes = res.into_body().collect().await.unwrap().to_bytes();
            answer = Some(serde_json::from_slice::<serde_json::Value>(&bytes).unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = answer.expect("kubeecr serve answered");
    assert_eq!(answer["response"]["allowed"], true);
    assert!(!answer["response"]["patch"].is_null(), "{answer}");

    // The background refresher fills the secret that was there before.
    let mut filled = false;
    for _ in 0..50 {
        if annotation(&get(&client, ns, "existing").await, EXPIRES_AT).is_some() {
            filled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(filled, "the refresher filled the existing secret");
    password_of(
        &dockerconfig(&get(&client, ns, "existing").await),
        "123456789012.dkr.ecr.us-west-2.amazonaws.com",
    );

    let pid = child.id().unwrap() as i32;
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr)
        .await
        .unwrap();
    assert!(status.success(), "{status:?}\n{stderr}");
    assert!(stderr.contains("shutting down"), "{stderr}");
    assert!(!stderr.contains(CLI_SECRET_KEY));
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
