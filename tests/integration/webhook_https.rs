//! The webhook over real HTTPS: ALPN, certificate checks, rotation through a kubelet-style
//! `..data` swap under load, and draining on shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Version;
use http_body_util::{BodyExt, Full};
use kubeecr::contract::policy::Policy;
use kubeecr_testkit::moto::EcrProxy;
use kubeecr_testkit::tls::{
    Alpn, HttpsClient, TestCa, client_config, https_client, https_client_as,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;

use crate::common::*;

fn review_body() -> Bytes {
    let (_, review) = fixture("01-create-annotated-nodata-apply-mutate-create.json");
    Bytes::from(serde_json::to_vec(&review).unwrap())
}

async fn post(client: &HttpsClient, url: &str, body: Bytes) -> Result<(Version, Value), String> {
    let req = http::Request::post(format!("{url}/mutate?timeout=5s"))
        .header("content-type", "application/json")
        .body(Full::new(body))
        .unwrap();
    let res = client.request(req).await.map_err(|e| format!("{e:?}"))?;
    let version = res.version();
    if res.status() != 200 {
        return Err(format!("status {}", res.status()));
    }
    let bytes = res
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    if v["response"]["allowed"] != true {
        return Err(format!("not allowed: {v}"));
    }
    Ok((version, v))
}

/// The leaf certificate a fresh TLS handshake is served.
async fn served_cert(url: &str, ca_pem: &str) -> Vec<u8> {
    let addr = url.trim_start_matches("https://");
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(ca_pem.as_bytes())));
    let tls = connector
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn leaf_der(pem: &str) -> Vec<u8> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn serves_http2_and_http11_over_verified_tls() {
    let ecr = EcrProxy::start().await;
    let webhook = RunningWebhook::start(webhook_state(
        token_cache(&ecr.url()).await,
        Policy::default(),
        false,
    ))
    .await;
    let ca = webhook.ca_pem();
    let (version, v) = post(
        &https_client(ca.as_bytes(), Alpn::Http2),
        &webhook.url,
        review_body(),
    )
    .await
    .unwrap();
    assert_eq!(version, Version::HTTP_2);
    assert!(v["response"]["patch"].is_array() || v["response"]["patch"].is_string());
    let (version, _) = post(
        &https_client(ca.as_bytes(), Alpn::Http1),
        &webhook.url,
        review_body(),
    )
    .await
    .unwrap();
    assert_eq!(version, Version::HTTP_11);

    // A client that trusts another CA refuses the server.
    let stranger = TestCa::new("other-ca").pem();
    let err = post(
        &https_client(stranger.as_bytes(), Alpn::Both),
        &webhook.url,
        review_body(),
    )
    .await
    .unwrap_err();
    assert!(
        err.contains("UnknownIssuer") || err.contains("certificate"),
        "{err}"
    );

    // TLS 1.2 only clients are served; plain HTTP is not.
    let tls12 = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .unwrap()
    .with_root_certificates({
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        roots
    })
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls12));
    let tcp = tokio::net::TcpStream::connect(webhook.url.trim_start_matches("https://"))
        .await
        .unwrap();
    let tls = connector
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let plain = reqwest_plain(&webhook.url.replace("https://", "http://")).await;
    assert!(plain.is_err(), "plain HTTP must not be served");
}

async fn reqwest_plain(url: &str) -> Result<(), String> {
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let req = http::Request::post(format!("{url}/mutate"))
        .body(Full::new(review_body()))
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(5), client.request(req)).await {
        Ok(Ok(res)) if res.status() == 200 => Ok(()),
        other => Err(format!("{other:?}")),
    }
}

/// What kubeecr logs in this test binary from the moment a test starts capturing, as plain
/// log lines. One global subscriber holds every line: a thread's own default subscriber
/// missed lines when other tests ran beside it.
struct CapturedLogs {
    from: usize,
}

static LINES: std::sync::OnceLock<Arc<std::sync::Mutex<Vec<u8>>>> = std::sync::OnceLock::new();

impl CapturedLogs {
    fn start() -> Self {
        let lines = LINES.get_or_init(|| {
            let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
            let sink = lines.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_ansi(false)
                .with_writer(move || Sink(sink.clone()))
                .finish();
            tracing::subscriber::set_global_default(subscriber).expect("the first subscriber");
            lines
        });
        Self {
            from: lines.lock().unwrap().len(),
        }
    }

    /// Lines holding `needle` and `marker` (this test's own path, say).
    fn count_with(&self, needle: &str, marker: &str) -> usize {
        let lines = LINES.get().unwrap().lock().unwrap();
        String::from_utf8_lossy(&lines[self.from..])
            .lines()
            .filter(|l| l.contains(needle) && l.contains(marker))
            .count()
    }

    /// Waits (bounded) until `needle` has been logged `times` times on lines with `marker`.
    async fn wait_for(&self, needle: &str, marker: &str, times: usize) {
        let logged = async {
            while self.count_with(needle, marker) < times {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), logged)
            .await
            .unwrap_or_else(|_| panic!("{needle:?} was not logged {times} times"));
    }
}

struct Sink(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Four clients keep the webhook busy across a certificate rotation, a broken pair and a
/// garbage pair: each has requests answered before the rotation and after the last swap, and
/// every request any of them sent was answered.
#[tokio::test]
async fn rotation_through_a_data_symlink_swap_fails_no_request() {
    let logs = CapturedLogs::start();
    let ecr = EcrProxy::start().await;
    let tokens = token_cache(&ecr.url()).await;
    let webhook = RunningWebhook::start(webhook_state(tokens, Policy::default(), false)).await;
    let ca = webhook.ca_pem();
    let url = webhook.url.clone();
    let old = served_cert(&url, &ca).await;

    let stop = Arc::new(AtomicBool::new(false));
    // Per client: requests sent, and answered.
    let counts: Vec<(Arc<AtomicUsize>, Arc<AtomicUsize>)> =
        (0..4).map(|_| Default::default()).collect();
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for (i, (sent, ok)) in counts.iter().cloned().enumerate() {
        // Two clients reuse keep-alive connections (h2 and HTTP/1.1); two open one per request.
        let client = match i {
            0 => https_client(ca.as_bytes(), Alpn::Http2),
            1 => https_client(ca.as_bytes(), Alpn::Http1),
            _ => {
                let connector = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(client_config(ca.as_bytes()))
                    .https_only()
                    .enable_all_versions()
                    .build();
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .pool_max_idle_per_host(0)
                    .build(connector)
            }
        };
        let (stop, failures, url) = (stop.clone(), failures.clone(), url.clone());
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                sent.fetch_add(1, Ordering::SeqCst);
                match post(&client, &url, review_body()).await {
                    Ok(_) => ok.fetch_add(1, Ordering::SeqCst),
                    Err(e) => {
                        failures.lock().unwrap().push(e);
                        0
                    }
                };
            }
        }));
    }
    // Every client answered `more` times from now on.
    let answered = |more: usize| {
        let targets: Vec<usize> = counts
            .iter()
            .map(|(_, ok)| ok.load(Ordering::SeqCst) + more)
            .collect();
        let counts = &counts;
        async move {
            let all = async {
                while counts
                    .iter()
                    .zip(&targets)
                    .any(|((_, ok), target)| ok.load(Ordering::SeqCst) < *target)
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            };
            tokio::time::timeout(Duration::from_secs(30), all)
                .await
                .expect("every client answered");
        }
    };
    answered(5).await;
    let new = webhook.ca.serving("kubeecr-webhook-v2", true);
    webhook.mount.write(&new.cert_pem, &new.key_pem);
    let mut rotated = false;
    for _ in 0..100 {
        if served_cert(&url, &ca).await == leaf_der(&new.cert_pem) {
            rotated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(rotated, "the new certificate is served without a restart");
    // The pair is swapped in before the line is logged: wait for it rather than race it.
    let ours = webhook.mount.dir.path().display().to_string();
    logs.wait_for("loaded new certificates", &ours, 1).await;

    // A broken pair (key of another certificate), then garbage: each is read and refused,
    // and the current pair stays.
    let refused = "keeping the current certificates";
    let other = webhook.ca.serving("kubeecr-webhook-v3", true);
    webhook.mount.write(&other.cert_pem, &new.key_pem);
    logs.wait_for(refused, &ours, 1).await;
    assert_eq!(served_cert(&url, &ca).await, leaf_der(&new.cert_pem));
    webhook.mount.write("not a certificate", "not a key");
    logs.wait_for(refused, &ours, 2).await;
    assert_eq!(served_cert(&url, &ca).await, leaf_der(&new.cert_pem));
    assert_eq!(logs.count_with("loaded new certificates", &ours), 1);
    answered(5).await;

    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed requests: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    for (i, (sent, ok)) in counts.iter().enumerate() {
        let (sent, ok) = (sent.load(Ordering::SeqCst), ok.load(Ordering::SeqCst));
        assert_eq!(ok, sent, "client {i}: every request answered");
    }
    assert_ne!(old, leaf_der(&new.cert_pem));
}

#[tokio::test]
async fn shutdown_drains_requests_in_flight() {
    let ecr = EcrProxy::start().await;
    ecr.set_delay(Duration::from_millis(800));
    let mut webhook = RunningWebhook::start(webhook_state(
        token_cache(&ecr.url()).await,
        Policy::default(),
        false,
    ))
    .await;
    let client = https_client(webhook.ca_pem().as_bytes(), Alpn::Http2);
    let url = webhook.url.clone();
    let in_flight = tokio::spawn(async move { post(&client, &url, review_body()).await });
    // In flight: the webhook has asked ECR for its token, and ECR has not answered.
    let asked = async {
        while ecr.token_calls().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), asked)
        .await
        .expect("the request reached the webhook");
    assert!(ecr.issued().is_empty(), "still in flight");
    webhook.stop().await;
    let (_, answer) = in_flight
        .await
        .unwrap()
        .expect("the request in flight completes");
    assert!(
        answer["response"]["warnings"].is_null(),
        "ECR answered in time: {answer}"
    );
    let after = post(
        &https_client(webhook.ca_pem().as_bytes(), Alpn::Http1),
        &webhook.url,
        review_body(),
    )
    .await;
    assert!(after.is_err(), "no new connections after shutdown");
}

/// With `--client-ca-file`, only clients presenting a certificate from that CA get an
/// answer; the others fail the handshake. A new CA file is picked up without a restart.
#[tokio::test]
async fn client_certificates_are_required_when_a_client_ca_is_set() {
    let ecr = EcrProxy::start().await;
    let api_server = TestCa::new("apiserver-client-ca");
    let other = TestCa::new("someone-else");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("client-ca.crt");
    std::fs::write(&ca_file, api_server.pem()).unwrap();
    let mut state = webhook_state(token_cache(&ecr.url()).await, Policy::default(), false);
    state.clients_verified = true;
    let webhook =
        RunningWebhook::start_with("127.0.0.1:0", &[], Some(ca_file.clone()), state).await;
    let ca = webhook.ca_pem();
    let as_api_server = api_server.client("kube-apiserver-webhook-client");
    let as_other = other.client("kube-apiserver-webhook-client");
    let client = |identity| https_client_as(ca.as_bytes(), Alpn::Both, identity);

    post(&client(Some(&as_api_server)), &webhook.url, review_body())
        .await
        .expect("the API server's certificate is accepted");
    // One client, a new connection per request, as a resuming client would make them.
    let resuming: HttpsClient =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(
                hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(kubeecr_testkit::tls::client_config_as(
                        ca.as_bytes(),
                        Some(&as_api_server),
                    ))
                    .https_only()
                    .enable_http1()
                    .build(),
            );
    post(&resuming, &webhook.url, review_body())
        .await
        .expect("accepted before the CA changes");
    // Refused in the handshake, by the server's TLS alert: nothing else will do.
    for (who, identity, alert) in [
        ("no certificate", None, "CertificateRequired"),
        ("another CA", Some(&as_other), "UnknownCA"),
    ] {
        let refused = post(&client(identity), &webhook.url, review_body()).await;
        assert_tls_alert(&refused, alert, who);
    }

    // A new CA in the file: the old client is refused from then on, the new one accepted.
    std::fs::write(&ca_file, other.pem()).unwrap();
    let swapped = tokio::time::timeout(Duration::from_secs(10), async {
        while post(&client(Some(&as_other)), &webhook.url, review_body())
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(swapped.is_ok(), "the new client CA was not loaded");
    let old_ca = post(&client(Some(&as_api_server)), &webhook.url, review_body()).await;
    assert_tls_alert(&old_ca, "UnknownCA", "the old CA's client");
    // No session resumption past the verifier: the client that connected before is refused.
    let resumed = post(&resuming, &webhook.url, review_body()).await;
    assert_tls_alert(&resumed, "UnknownCA", "a resumed session");
}

/// `result` is a handshake the server ended with the fatal TLS alert `alert` (rustls
/// describes it either way, depending on where the client met it).
fn assert_tls_alert(result: &Result<(Version, Value), String>, alert: &str, who: &str) {
    let err = match result {
        Ok((version, answer)) => panic!("{who}: answered over {version:?}: {answer}"),
        Err(err) => err,
    };
    assert!(
        err.contains(&format!("received fatal alert: {alert}\""))
            || err.contains(&format!("AlertReceived({alert})")),
        "{who}: refused in the handshake with {alert}, not: {err}"
    );
}
