//! Who gets a token from the webhook: with `--admission-fill=false` nobody (the refresher
//! fills new Secrets by watch), and with `--client-ca-file` only a client presenting a
//! certificate from that CA, as the real kube-apiserver does with its AdmissionConfiguration.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kubeecr_testkit::cluster::{REAL_CLUSTER_ENV, TestCluster, cannot_run_on_real_cluster};
use kubeecr_testkit::moto::EcrProxy;
use kubeecr_testkit::tls::{Alpn, https_client};
use serde_json::json;

use crate::common::*;
use crate::on_both_backends;
use crate::serve_process::{Ports, ServeProcess, has_password, secret_when};
use crate::webhook_flow::{loopback_reachable, register, webhook_yaml};

const HOST: &str = "123456789012.dkr.ecr.us-west-2.amazonaws.com";

/// A data-less Secret opted in to the registry of `HOST`.
fn data_less(name: &str) -> Secret {
    crate::webhook_flow::data_less(name, "123456789012/us-west-2")
}

/// `kubeecr serve` with `extra` flags, leading, and `webhook-config/` registered to it.
async fn serve_behind_its_webhooks(
    cluster: &TestCluster,
    ecr: &EcrProxy,
    identity: &str,
    extra: &[&str],
) -> (ServeProcess, crate::webhook_flow::Registration) {
    let serve = ServeProcess::start(cluster, &ecr.url(), identity, extra).await;
    serve.wait_ready().await;
    assert!(
        serve.leads_within(Duration::from_secs(20)).await,
        "{}",
        serve.logs()
    );
    let registration = register(
        cluster,
        &format!("https://127.0.0.1:{}", serve.webhook_port),
        &serve.ca.pem(),
    )
    .await;
    (serve, registration)
}

const AUDIT: &str = "admission response carries an ECR token";
const TOKEN_RESPONSES: &str = "kubeecr_admission_token_responses_total";

async fn admission_fill_off_fills_by_watch_and_hands_out_no_token(cluster: TestCluster) {
    if !loopback_reachable(
        &cluster,
        "admission_fill_off_fills_by_watch_and_hands_out_no_token",
    ) {
        return;
    }
    let ecr = EcrProxy::start().await;
    let (serve, _registration) =
        serve_behind_its_webhooks(&cluster, &ecr, "fill-by-watch", &["--admission-fill=false"])
            .await;

    let api: Api<Secret> = Api::namespaced(cluster.client(), cluster.ns());
    let started = Instant::now();
    let created = api
        .create(&PostParams::default(), &data_less("pull"))
        .await
        .expect("created");
    // What the API server stored from the webhook's answer: the placeholder, no token.
    assert_eq!(dockerconfig(&created), json!({"auths": {}}));
    assert_eq!(created.metadata.labels.as_ref().unwrap()[MANAGED], "true");
    assert_eq!(annotation(&created, EXPIRES_AT), None);
    let filled = secret_when(&cluster, "pull", Duration::from_secs(15), |s| {
        has_password(s, HOST)
    })
    .await;
    assert!(
        filled.is_some(),
        "the refresher fills it by watch\n{}",
        serve.logs()
    );
    println!("filled {:?} after the create", started.elapsed());

    // A malformed annotation is still refused at admission.
    let mut bad = data_less("typo");
    bad.metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert(ANNOTATION.into(), "12345/us-west-2".into());
    let refused = api
        .create(&PostParams::default(), &bad)
        .await
        .expect_err("refused");
    assert!(
        refused
            .to_string()
            .contains("account id 12345 has 5 digits"),
        "{refused}"
    );

    assert!(!serve.logs().contains(AUDIT), "{}", serve.logs());
    let metrics = serve.metrics().await;
    let samples: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with(TOKEN_RESPONSES))
        .collect();
    assert!(
        !samples.is_empty() && samples.iter().all(|l| l.ends_with(" 0")),
        "no admission answer carried a token\n{metrics}"
    );
}
on_both_backends!(admission_fill_off_fills_by_watch_and_hands_out_no_token);

/// `../shared/kube-apiserver` keeps its PKI beside its kubeconfig and presents a client
/// certificate (CN kube-apiserver-webhook-client) to webhooks on 127.0.0.1:18400-18499.
fn api_server_client_ca() -> Option<PathBuf> {
    let kubeconfig = PathBuf::from(std::env::var("KUBEECR_TEST_KUBECONFIG").ok()?);
    let dir = kubeconfig.parent()?;
    let ca = dir.join("pki/ca.crt");
    (ca.exists() && dir.join("webhook-client.kubeconfig").exists()).then_some(ca)
}

/// A free port among those the API server presents its client certificate to.
fn client_cert_port() -> u16 {
    (18400..18500)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port in 18400-18499")
}

#[tokio::test]
async fn the_api_server_authenticates_with_its_client_certificate() {
    let test = "the_api_server_authenticates_with_its_client_certificate";
    let Some(client_ca) = api_server_client_ca() else {
        if std::env::var_os(REAL_CLUSTER_ENV).is_none() {
            cannot_run_on_real_cluster(test, &format!("{REAL_CLUSTER_ENV} is not set"));
        } else {
            // A cluster of another kind cannot run it, whatever this run sets.
            println!(
                "SKIPPED {test}: no ../shared/kube-apiserver (its AdmissionConfiguration presents the client certificate)"
            );
        }
        return;
    };
    let Some(cluster) = TestCluster::real(test).await else {
        return;
    };
    let ecr = EcrProxy::start().await;
    let ports = Ports::with_webhook(client_cert_port());
    let ca_flag = format!("--client-ca-file={}", client_ca.display());
    let serve = ServeProcess::start_on(ports, &cluster, &ecr.url(), "mtls", &[&ca_flag]).await;
    serve.wait_ready().await;
    let base = format!("https://127.0.0.1:{}", serve.webhook_port);
    let _registration = register(&cluster, &base, &serve.ca.pem()).await;

    // The API server's own request: admitted, and filled at admission.
    let api: Api<Secret> = Api::namespaced(cluster.client(), cluster.ns());
    let created = api
        .create(&PostParams::default(), &data_less("pull"))
        .await
        .expect("created");
    assert!(
        has_password(&created, HOST),
        "filled at admission, through mTLS\n{}",
        serve.logs()
    );
    let metrics = serve.metrics().await;
    assert!(
        metrics.contains(&format!("{TOKEN_RESPONSES}{{client=\"verified\"}} 1")),
        "{metrics}"
    );
    let logs = serve.logs();
    let audit = logs
        .lines()
        .find(|l| l.contains(AUDIT))
        .unwrap_or_else(|| panic!("{logs}"));
    for field in [
        &format!("{}/pull", cluster.ns()),
        "client=\"verified\"",
        "registries=\"123456789012/us-west-2\"",
        "user=",
    ] {
        assert!(audit.contains(field), "{field} in {audit}");
    }
    let password = crate::common::password_of(&dockerconfig(&created), HOST);
    assert!(!logs.contains(&password), "the audit line carries no token");

    // Anyone else who reaches the port, without the API server's certificate: no answer.
    let (_, review) = fixture("01-create-annotated-nodata-apply-mutate-create.json");
    let req = http::Request::post(format!("{base}/mutate"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            serde_json::to_vec(&review).unwrap(),
        )))
        .unwrap();
    let forged = https_client(serve.ca.pem().as_bytes(), Alpn::Both)
        .request(req)
        .await;
    assert!(
        forged.is_err(),
        "a client without a certificate got {forged:?}"
    );
}

/// The API double, presenting a client certificate from the CA of `--client-ca-file` as the
/// API server would, gets Secrets filled at admission; presenting none, its write is refused
/// (failurePolicy: Fail), since the handshake fails.
#[tokio::test]
async fn the_double_presenting_the_api_servers_certificate_gets_secrets_filled() {
    let ecr = EcrProxy::start().await;
    let api_server_ca = kubeecr_testkit::tls::TestCa::new("apiserver-client-ca");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("client-ca.crt");
    std::fs::write(&ca_file, api_server_ca.pem()).unwrap();
    let mut state = webhook_state(
        token_cache(&ecr.url()).await,
        kubeecr::contract::policy::Policy::default(),
        false,
    );
    state.clients_verified = true;
    let webhook = RunningWebhook::start_with("127.0.0.1:0", &[], Some(ca_file), state).await;

    let cluster = TestCluster::double().await;
    let identity = api_server_ca.client("kube-apiserver-webhook-client");
    cluster
        .double_server()
        .unwrap()
        .webhooks()
        .register_yaml_as(
            &webhook_yaml(),
            &webhook.url,
            webhook.ca_pem().as_bytes(),
            Some(&identity),
        );
    let api: Api<Secret> = Api::namespaced(cluster.client(), cluster.ns());
    let created = api
        .create(&PostParams::default(), &data_less("pull"))
        .await
        .expect("created");
    assert!(has_password(&created, HOST), "filled at admission");

    let without = TestCluster::double().await;
    without.double_server().unwrap().webhooks().register_yaml(
        &webhook_yaml(),
        &webhook.url,
        webhook.ca_pem().as_bytes(),
    );
    let api: Api<Secret> = Api::namespaced(without.client(), without.ns());
    let refused = api
        .create(&PostParams::default(), &data_less("pull"))
        .await
        .expect_err("refused");
    assert!(
        refused.to_string().contains("failed calling webhook"),
        "{refused}"
    );
}

/// With fill at admission (the default), each answer that hands out a token is logged once,
/// with who asked and for what, and without the token.
async fn each_token_handed_out_at_admission_is_audited(cluster: TestCluster) {
    if !loopback_reachable(&cluster, "each_token_handed_out_at_admission_is_audited") {
        return;
    }
    let ecr = EcrProxy::start().await;
    let (serve, _registration) = serve_behind_its_webhooks(&cluster, &ecr, "audited", &[]).await;
    let api: Api<Secret> = Api::namespaced(cluster.client(), cluster.ns());
    let created = api
        .create(&PostParams::default(), &data_less("pull"))
        .await
        .expect("created");
    let password = password_of(&dockerconfig(&created), HOST);
    let logs = crate::serve_process::eventually(Duration::from_secs(5), || async {
        let logs = serve.logs();
        logs.contains(AUDIT).then_some(logs)
    })
    .await
    .unwrap_or_else(|| panic!("no audit line:\n{}", serve.logs()));
    let audit: Vec<&str> = logs.lines().filter(|l| l.contains(AUDIT)).collect();
    assert_eq!(audit.len(), 1, "{audit:?}");
    for field in [
        format!("secret=\"{}/pull\"", cluster.ns()),
        "client=\"unverified\"".to_string(),
        "registries=\"123456789012/us-west-2\"".to_string(),
        "user=\"".to_string(),
        "uid=\"".to_string(),
    ] {
        assert!(audit[0].contains(&field), "{field} in {}", audit[0]);
    }
    assert!(!logs.contains(&password), "the audit line carries no token");
    assert!(
        serve
            .metrics()
            .await
            .contains(&format!("{TOKEN_RESPONSES}{{client=\"unverified\"}} 1"))
    );
}
on_both_backends!(each_token_handed_out_at_admission_is_audited);
