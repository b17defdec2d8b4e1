//! Helpers shared by the integration tests.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aws_credential_types::Credentials;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kubeecr::contract::policy::Policy;
use kubeecr::contract::secret_update::DuePolicy;
use kubeecr::refresher::pass::{PassSettings, Refresher};
use kubeecr::refresher::write::{WriteSettings, Writer};
use kubeecr::servers::http::ServerSettings;
use kubeecr::telemetry::metrics::Metrics;
use kubeecr::tokens::cache::{CacheConfig, TokenCache};
use kubeecr::tokens::ecr::{EcrSettings, EcrTokenSource, config_loader};
use serde_json::{Value, json};

pub const ANNOTATION: &str = "deft.com/kubeecr";
pub const EXPIRES_AT: &str = "deft.com/kubeecr-expires-at";
pub const FINGERPRINTS: &str = "deft.com/kubeecr-fingerprints";
pub const MANAGED: &str = "deft.com/kubeecr-managed";
pub const DOCKER_CONFIG_JSON: &str = "kubernetes.io/dockerconfigjson";
/// The least a dockerconfigjson Secret must hold for the API server to accept it.
pub const EMPTY: &[(&str, &[u8])] = &[(".dockerconfigjson", br#"{"auths":{}}"#)];

/// Static credentials, passed in code so that no test mutates the process environment.
pub async fn token_source(endpoint: &str) -> EcrTokenSource {
    kubeecr::servers::tls::install_crypto_provider();
    let settings = EcrSettings {
        ecr_endpoint: Some(endpoint.to_string()),
        sts_endpoint: Some(endpoint.to_string()),
        call_timeout: Duration::from_secs(10),
    };
    let base = config_loader(&settings)
        .credentials_provider(Credentials::new(
            "AKIAKUBEECRTEST00001",
            "kubeecr-test-secret",
            None,
            None,
            "test",
        ))
        .region(aws_config::Region::from_static("us-east-1"))
        .load()
        .await;
    EcrTokenSource::new(base, settings)
}

pub fn cache_config() -> CacheConfig {
    CacheConfig::new(Duration::from_secs(5 * 3600), Duration::from_secs(60))
}

pub async fn token_cache(endpoint: &str) -> Arc<TokenCache> {
    TokenCache::new(
        Arc::new(token_source(endpoint).await),
        cache_config(),
        Arc::default(),
    )
}

pub fn write_settings(force: bool) -> WriteSettings {
    WriteSettings {
        deadline: kubeecr::refresher::write::REFRESH_DEADLINE,
        dry_run: false,
        due: DuePolicy {
            refresh_before: Duration::from_secs(4 * 3600),
            force,
        },
        conflict_retries: 5,
        rate: None,
    }
}

pub fn writer(
    client: kube::Client,
    tokens: Arc<TokenCache>,
    policy: Policy,
    settings: WriteSettings,
) -> Arc<Writer> {
    Arc::new(Writer::new(
        client,
        tokens,
        Arc::new(policy),
        settings,
        Arc::new(Metrics::new()),
    ))
}

/// A one-shot refresher with small pages, so that paging is exercised.
pub fn refresher_with(
    client: kube::Client,
    tokens: Arc<TokenCache>,
    policy: Policy,
    settings: WriteSettings,
) -> Refresher {
    let writer = writer(client.clone(), tokens, policy, settings);
    Refresher::new(
        client,
        writer,
        PassSettings {
            concurrency: 4,
            page_size: 3,
        },
    )
}

pub fn refresher(client: kube::Client, tokens: Arc<TokenCache>, policy: Policy) -> Refresher {
    refresher_with(client, tokens, policy, write_settings(false))
}

/// One refresh pass over `ns`, with a cold token cache in front of `ecr`.
pub async fn refresh_namespace(
    client: &kube::Client,
    ecr: &kubeecr_testkit::moto::EcrProxy,
    ns: &str,
) -> kubeecr::refresher::pass::Summary {
    refresher(
        client.clone(),
        token_cache(&ecr.url()).await,
        policy_for(&[ns]),
    )
    .run_once()
    .await
    .unwrap()
}

/// As `refresh_namespace`, forced: every opted-in Secret gets a new token.
pub async fn force_refresh_namespace(
    client: &kube::Client,
    ecr: &kubeecr_testkit::moto::EcrProxy,
    ns: &str,
) -> kubeecr::refresher::pass::Summary {
    refresher_with(
        client.clone(),
        token_cache(&ecr.url()).await,
        policy_for(&[ns]),
        write_settings(true),
    )
    .run_once()
    .await
    .unwrap()
}

pub fn policy_for(namespaces: &[&str]) -> Policy {
    Policy {
        namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
        ..Policy::default()
    }
}

/// Builds a Secret from JSON-ish parts; `data` values are raw bytes, encoded here.
pub fn secret(
    name: &str,
    type_: &str,
    annotations: &[(&str, &str)],
    data: &[(&str, &[u8])],
) -> Secret {
    let annotations: BTreeMap<&str, &str> = annotations.iter().copied().collect();
    let data: BTreeMap<&str, String> = data.iter().map(|(k, v)| (*k, STANDARD.encode(v))).collect();
    let mut v = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "labels": {"app": "pull", "team": "a"}},
        "type": type_,
    });
    if !annotations.is_empty() {
        v["metadata"]["annotations"] = json!(annotations);
    }
    if !data.is_empty() {
        v["data"] = json!(data);
    }
    serde_json::from_value(v).unwrap()
}

/// An immutable dockerconfigjson Secret holding `config`, opted in when `annotation` is given.
pub fn immutable_secret(name: &str, annotation: Option<&str>, config: &[u8]) -> Secret {
    let annotations: Vec<(&str, &str)> = annotation.map(|a| (ANNOTATION, a)).into_iter().collect();
    let mut s = secret(
        name,
        DOCKER_CONFIG_JSON,
        &annotations,
        &[(".dockerconfigjson", config)],
    );
    s.immutable = Some(true);
    s
}

/// An annotation value of `n` entries in regions no AWS partition has.
pub fn invented_regions(n: usize) -> String {
    (0..n)
        .map(|i| format!("123456789012/us-x{i}-1"))
        .collect::<Vec<_>>()
        .join(",")
}

pub async fn create(client: &kube::Client, ns: &str, s: &Secret) -> Secret {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), s)
        .await
        .expect("create secret")
}

/// An unrelated Secret as big as Helm release Secrets get, which kubeecr must never read.
pub const HELM_RELEASE: &str = "sh.helm.release.v1.app.v1";

pub async fn create_helm_release(client: &kube::Client, ns: &str) -> Secret {
    let release = vec![b'x'; 512 * 1024];
    let s = secret(
        HELM_RELEASE,
        "helm.sh/release.v1",
        &[],
        &[("release", &release)],
    );
    create(client, ns, &s).await
}

/// Creates an opted-in dockerconfigjson Secret holding only `{"auths":{}}`.
pub async fn create_opted_in(
    client: &kube::Client,
    ns: &str,
    name: &str,
    registries: &str,
) -> Secret {
    create(
        client,
        ns,
        &secret(name, DOCKER_CONFIG_JSON, &[(ANNOTATION, registries)], EMPTY),
    )
    .await
}

pub async fn get(client: &kube::Client, ns: &str, name: &str) -> Secret {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    api.get(name).await.expect("get secret")
}

pub fn data_bytes(s: &Secret, key: &str) -> Option<Vec<u8>> {
    s.data.as_ref()?.get(key).map(|b| b.0.clone())
}

pub fn dockerconfig(s: &Secret) -> Value {
    serde_json::from_slice(&data_bytes(s, ".dockerconfigjson").expect(".dockerconfigjson")).unwrap()
}

pub fn annotation(s: &Secret, key: &str) -> Option<String> {
    s.metadata.annotations.as_ref()?.get(key).cloned()
}

pub fn rv(s: &Secret) -> String {
    s.metadata.resource_version.clone().unwrap()
}

/// The password of `host`, checked for shape: `auth` is base64("AWS:" + password).
pub fn password_of(config: &Value, host: &str) -> String {
    let entry = &config["auths"][host];
    assert_eq!(entry["username"], "AWS", "{host}: {entry}");
    let password = entry["password"]
        .as_str()
        .unwrap_or_else(|| panic!("{host} has no password"));
    assert!(!password.is_empty());
    assert_eq!(
        entry["auth"].as_str().unwrap(),
        STANDARD.encode(format!("AWS:{password}"))
    );
    password.to_string()
}

/// Runs a scenario on the API double, and on the real cluster when one is configured. With
/// `on_double_as: name`, the double's run is the test `name::on_double` instead, named for
/// what the double can show of the scenario.
#[macro_export]
macro_rules! on_both_backends {
    ($scenario:ident, on_double_as: $double:ident) => {
        mod $scenario {
            #[tokio::test]
            async fn on_real_cluster() {
                if let Some(cluster) =
                    kubeecr_testkit::cluster::TestCluster::real(stringify!($scenario)).await
                {
                    super::$scenario(cluster).await;
                }
            }
        }

        mod $double {
            #[tokio::test]
            async fn on_double() {
                let cluster = kubeecr_testkit::cluster::TestCluster::double().await;
                super::$scenario(cluster).await;
            }
        }
    };
    ($scenario:ident) => {
        mod $scenario {
            #[tokio::test]
            async fn on_double() {
                let cluster = kubeecr_testkit::cluster::TestCluster::double().await;
                super::$scenario(cluster).await;
            }

            #[tokio::test]
            async fn on_real_cluster() {
                if let Some(cluster) =
                    kubeecr_testkit::cluster::TestCluster::real(stringify!($scenario)).await
                {
                    super::$scenario(cluster).await;
                }
            }
        }
    };
}

/// A kubelet-style mount of a TLS Secret: files behind a `..data` symlink that is swapped
/// atomically on update, as the kubelet's AtomicWriter does.
pub struct KubeletMount {
    pub dir: tempfile::TempDir,
    version: std::sync::atomic::AtomicUsize,
}

impl KubeletMount {
    pub fn new(cert: &kubeecr_testkit::tls::ServingCert) -> Self {
        let mount = Self {
            dir: tempfile::tempdir().unwrap(),
            version: Default::default(),
        };
        mount.write(&cert.cert_pem, &cert.key_pem);
        for name in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{name}"), mount.dir.path().join(name))
                .unwrap();
        }
        mount
    }

    /// Writes a new version and swaps `..data` to it in one rename.
    pub fn write(&self, cert_pem: &str, key_pem: &str) {
        let root = self.dir.path();
        let n = self
            .version
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let version = format!("..2026_11_29_00_00_00.{n}");
        std::fs::create_dir(root.join(&version)).unwrap();
        std::fs::write(root.join(&version).join("tls.crt"), cert_pem).unwrap();
        std::fs::write(root.join(&version).join("tls.key"), key_pem).unwrap();
        let _ = std::fs::remove_file(root.join("..data_tmp"));
        std::os::unix::fs::symlink(&version, root.join("..data_tmp")).unwrap();
        let old = std::fs::read_link(root.join("..data")).ok();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
        if let Some(old) = old {
            std::fs::remove_dir_all(root.join(old)).unwrap();
        }
    }

    pub fn files(&self) -> kubeecr::servers::tls::TlsFiles {
        kubeecr::servers::tls::TlsFiles {
            cert: self.dir.path().join("tls.crt"),
            key: self.dir.path().join("tls.key"),
            client_ca: None,
        }
    }
}

/// kubeecr's webhook, served over HTTPS on 127.0.0.1 exactly as `kubeecr serve` does.
pub struct RunningWebhook {
    pub url: String,
    pub ca: kubeecr_testkit::tls::TestCa,
    pub mount: KubeletMount,
    /// The webhook's metrics: what it answered, and what its server refused.
    pub metrics: Arc<Metrics>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    reloader: tokio::task::JoinHandle<()>,
}

impl RunningWebhook {
    pub async fn start(state: kubeecr::admission::webhook::WebhookState) -> Self {
        Self::start_on("127.0.0.1:0", &[], state).await
    }

    /// Listens on `addr`, with a certificate valid for 127.0.0.1, localhost and `names`.
    pub async fn start_on(
        addr: &str,
        names: &[&str],
        state: kubeecr::admission::webhook::WebhookState,
    ) -> Self {
        Self::start_with(addr, names, None, state).await
    }

    /// As `start_on`, requiring client certificates that chain to the CA in `client_ca`.
    pub async fn start_with(
        addr: &str,
        names: &[&str],
        client_ca: Option<std::path::PathBuf>,
        state: kubeecr::admission::webhook::WebhookState,
    ) -> Self {
        Self::start_full(addr, names, client_ca, state, ServerSettings::WEBHOOK).await
    }

    /// As `start`, within the bounds of `server` instead of `kubeecr serve`'s defaults.
    pub async fn start_bounded(
        state: kubeecr::admission::webhook::WebhookState,
        server: ServerSettings,
    ) -> Self {
        Self::start_full("127.0.0.1:0", &[], None, state, server).await
    }

    async fn start_full(
        addr: &str,
        names: &[&str],
        client_ca: Option<std::path::PathBuf>,
        state: kubeecr::admission::webhook::WebhookState,
        server: ServerSettings,
    ) -> Self {
        kubeecr::servers::tls::install_crypto_provider();
        let ca = kubeecr_testkit::tls::TestCa::new("kubeecr-test-ca");
        let mount = KubeletMount::new(&ca.serving_for("kubeecr-webhook-v1", true, names));
        let files = kubeecr::servers::tls::TlsFiles {
            client_ca,
            ..mount.files()
        };
        let reloader = kubeecr::servers::tls::CertReloader::load(files).unwrap();
        let tls = kubeecr::servers::tls::server_config(reloader.store(), reloader.clients());
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let metrics = Arc::clone(&state.metrics);
        let state_metrics = Arc::clone(&state.metrics);
        let app = kubeecr::admission::webhook::router(
            Arc::new(state),
            server.limits.max_request_bytes as usize,
        );
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(kubeecr::servers::http::serve(
            listener,
            Some(tls),
            app,
            server,
            metrics,
            async {
                let _ = rx.await;
            },
        ));
        let reloader = tokio::spawn(reloader.run(Duration::from_millis(50)));
        Self {
            url,
            ca,
            mount,
            metrics: Arc::clone(&state_metrics),
            shutdown: Some(tx),
            server: Some(server),
            reloader,
        }
    }

    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// Stops accepting and drains, as on SIGTERM.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
    }
}

impl Drop for RunningWebhook {
    fn drop(&mut self) {
        self.reloader.abort();
        if let Some(server) = &self.server {
            server.abort();
        }
    }
}

/// AdmissionReviews `webhook` (`mutate`, `validate`) answered for `operation` (`CREATE`,
/// `UPDATE`), whatever the result, as its metrics count them.
pub fn admissions(metrics: &Metrics, webhook: &str, operation: &str) -> u64 {
    let prefix = format!(
        "kubeecr_admission_requests_total{{webhook=\"{webhook}\",operation=\"{operation}\","
    );
    metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum()
}

pub fn webhook_state(
    tokens: Arc<TokenCache>,
    policy: Policy,
    require_token: bool,
) -> kubeecr::admission::webhook::WebhookState {
    kubeecr::admission::webhook::WebhookState {
        policy: Arc::new(policy),
        tokens,
        require_token,
        token_wait: Duration::from_secs(3),
        fill: true,
        clients_verified: false,
        metrics: Arc::new(Metrics::new()),
        events: kubeecr::telemetry::events::Events::disabled(),
    }
}

/// A fixture captured from kube-apiserver v1.36: (URL path, AdmissionReview).
pub fn fixture(name: &str) -> (String, Value) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/admission")
        .join(name);
    let v: Value = serde_json::from_slice(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap();
    (v["path"].as_str().unwrap().to_string(), v["review"].clone())
}

/// A captured AdmissionReview, moved to namespace `ns`.
pub fn fixture_in(name: &str, ns: &str) -> (String, Value) {
    let (path, mut review) = fixture(name);
    review["request"]["namespace"] = json!(ns);
    for which in ["object", "oldObject"] {
        if review["request"][which].is_object() {
            review["request"][which]["metadata"]["namespace"] = json!(ns);
        }
    }
    (path, review)
}

/// The AWS secret key the kubeecr processes of the tests run with; it must never be printed.
pub const CLI_SECRET_KEY: &str = "cli-secret-key-value";

/// The `kubeecr` binary with only static test credentials in its environment; IMDS is off so
/// that nothing leaves loopback.
pub fn kubeecr_command(subcommand: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubeecr"));
    cmd.arg(subcommand)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_ACCESS_KEY_ID", "AKIAKUBEECRCLI000001")
        .env("AWS_SECRET_ACCESS_KEY", CLI_SECRET_KEY)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
    cmd
}

/// Counts, per Secret of one namespace, how often kubeecr's write showed: its
/// `.dockerconfigjson` or its expiry annotation changed, as seen by a watch started now. Every
/// fetch gives a new password, as ECR's (and the test proxy's) do, so a second write of a
/// newly fetched token always counts; the same cached token written again changes nothing but
/// an expiry annotation edited since (on the double, count answered writes instead). Works on
/// both backends.
pub struct DataWrites {
    counts: Arc<std::sync::Mutex<BTreeMap<String, usize>>>,
    /// Every Secret the watch has seen so far, by name.
    seen: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
    client: kube::Client,
    ns: String,
    syncs: std::sync::atomic::AtomicUsize,
    task: tokio::task::JoinHandle<()>,
}

impl DataWrites {
    pub async fn start(client: &kube::Client, ns: &str) -> Self {
        use futures::StreamExt;
        use kube::api::{ListParams, WatchEvent, WatchParams};
        let api: Api<Secret> = Api::namespaced(client.clone(), ns);
        let list = api
            .list(&ListParams::default())
            .await
            .expect("list secrets");
        let mut seen: BTreeMap<String, _> = list
            .items
            .iter()
            .map(|s| (s.metadata.name.clone().unwrap(), written(s)))
            .collect();
        let mut version = list
            .metadata
            .resource_version
            .expect("list resourceVersion");
        let counts = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
        let counted = counts.clone();
        let names = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
        let named = names.clone();
        let task = tokio::spawn(async move {
            loop {
                let params = WatchParams::default().timeout(60);
                let mut stream = api.watch(&params, &version).await.expect("watch").boxed();
                while let Some(event) = stream.next().await {
                    let secret = match event {
                        Ok(WatchEvent::Added(s) | WatchEvent::Modified(s)) => s,
                        Ok(WatchEvent::Bookmark(b)) => {
                            version = b.metadata.resource_version;
                            continue;
                        }
                        Ok(WatchEvent::Deleted(s)) => {
                            seen.remove(s.metadata.name.as_deref().unwrap_or_default());
                            version = rv(&s);
                            continue;
                        }
                        Ok(WatchEvent::Error(e)) => panic!("watch of writes failed: {e:?}"),
                        Err(_) => break,
                    };
                    version = rv(&secret);
                    let name = secret.metadata.name.clone().unwrap();
                    named.lock().unwrap().insert(name.clone());
                    let now = written(&secret);
                    if let Some(before) = seen.insert(name.clone(), now.clone())
                        && before != now
                    {
                        *counted.lock().unwrap().entry(name).or_insert(0) += 1;
                    }
                }
            }
        });
        Self {
            counts,
            seen: names,
            client: client.clone(),
            ns: ns.to_string(),
            syncs: Default::default(),
            task,
        }
    }

    /// Secrets written, with how many times.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        assert!(!self.task.is_finished(), "the watch counting writes failed");
        self.counts.lock().unwrap().clone()
    }

    /// Returns once the watch has seen every write made before the call: it creates a plain
    /// Secret (no kubeecr annotation, so nothing else acts on it) and waits for the watch to
    /// deliver it, which it does after every earlier event of the namespace.
    pub async fn sync(&self) {
        let n = self.syncs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("datawrites-sync-{n}");
        create(
            &self.client,
            &self.ns,
            &secret(&name, "Opaque", &[], &[("n", b"0")]),
        )
        .await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !self.seen.lock().unwrap().contains(&name) {
            assert!(!self.task.is_finished(), "the watch counting writes failed");
            assert!(
                tokio::time::Instant::now() < deadline,
                "the watch counting writes did not deliver {name} within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// What a write by kubeecr changes: the config, and the expiry of the token it fetched.
fn written(s: &Secret) -> (Option<Vec<u8>>, Option<String>) {
    (
        data_bytes(s, ".dockerconfigjson"),
        annotation(s, EXPIRES_AT),
    )
}

impl Drop for DataWrites {
    fn drop(&mut self) {
        self.task.abort();
    }
}
