//! Where Kubernetes tests run: the in-repo API double always, and a real cluster when
//! `KUBEECR_TEST_KUBECONFIG` names one. Each test gets throwaway namespaces.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;

use crate::apiserver::FakeApiServer;

pub const REAL_CLUSTER_ENV: &str = "KUBEECR_TEST_KUBECONFIG";
/// Set to 1 by scripts/test.sh: a real-cluster test that cannot run fails instead of printing
/// SKIPPED. Unset (or 0), as in a quick local `cargo test`, it prints SKIPPED and passes.
pub const REQUIRE_CLUSTER_ENV: &str = "KUBEECR_TEST_REQUIRE_CLUSTER";

/// Whether `KUBEECR_TEST_REQUIRE_CLUSTER` asks for every real-cluster test to run.
pub fn cluster_required() -> bool {
    std::env::var(REQUIRE_CLUSTER_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// `test` cannot run on a real cluster, for the reason `why`: prints SKIPPED, or fails, saying
/// how to run it, when `KUBEECR_TEST_REQUIRE_CLUSTER` is set.
#[track_caller]
pub fn cannot_run_on_real_cluster(test: &str, why: &str) {
    assert!(
        !cluster_required(),
        "{test} cannot run on a real cluster: {why}. {REQUIRE_CLUSTER_ENV} is set, so this fails \
         instead of skipping: run scripts/test.sh, which starts ../shared/kube-apiserver, or set \
         {REAL_CLUSTER_ENV} (and KUBEECR_TEST_WEBHOOK_HOST=127.0.0.1 when its API server runs on \
         this machine); {REQUIRE_CLUSTER_ENV}=0 skips it knowingly"
    );
    println!("SKIPPED {test} on a real cluster: {why}");
}

pub enum Backend {
    Double(FakeApiServer),
    Real(PathBuf),
}

pub struct TestCluster {
    backend: Backend,
    config: kube::Config,
    namespaces: Vec<String>,
    _dir: tempfile_dir::TempDir,
    kubeconfig: PathBuf,
}

/// A small self-deleting directory (no extra crate needed).
mod tempfile_dir {
    pub struct TempDir(pub std::path::PathBuf);
    impl TempDir {
        pub fn new() -> Self {
            let p = std::env::temp_dir().join(format!("kubeecr-test-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

impl TestCluster {
    /// The in-repo API double, fresh for this test.
    pub async fn double() -> Self {
        let server = FakeApiServer::start().await;
        let dir = tempfile_dir::TempDir::new();
        let kubeconfig = dir.0.join("kubeconfig");
        server.write_kubeconfig(&kubeconfig);
        let config = server.config();
        let mut cluster = Self {
            backend: Backend::Double(server),
            config,
            namespaces: Vec::new(),
            _dir: dir,
            kubeconfig,
        };
        cluster.namespace("kubeecr-test").await;
        cluster
    }

    /// The real cluster of `KUBEECR_TEST_KUBECONFIG`, or `None` (printing that the test was
    /// skipped) when it is unset; a failure instead under `KUBEECR_TEST_REQUIRE_CLUSTER`.
    pub async fn real(test: &str) -> Option<Self> {
        let Ok(path) = std::env::var(REAL_CLUSTER_ENV) else {
            cannot_run_on_real_cluster(test, &format!("{REAL_CLUSTER_ENV} is not set"));
            return None;
        };
        let path = PathBuf::from(path);
        let kubeconfig = Kubeconfig::read_from(&path).expect("reading KUBEECR_TEST_KUBECONFIG");
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .expect("kubeconfig");
        let mut cluster = Self {
            backend: Backend::Real(path.clone()),
            config,
            namespaces: Vec::new(),
            _dir: tempfile_dir::TempDir::new(),
            kubeconfig: path,
        };
        cluster.namespace("kubeecr-test").await;
        Some(cluster)
    }

    pub fn is_real(&self) -> bool {
        matches!(self.backend, Backend::Real(_))
    }

    pub fn double_server(&self) -> Option<&FakeApiServer> {
        match &self.backend {
            Backend::Double(s) => Some(s),
            Backend::Real(_) => None,
        }
    }

    pub fn client(&self) -> kube::Client {
        kube::Client::try_from(self.config.clone()).expect("client")
    }

    /// The connection settings, for clients made elsewhere (cleanup threads, processes).
    pub fn config(&self) -> &kube::Config {
        &self.config
    }

    /// A client whose PATCHes of `name` meet `times` genuine 409 conflicts, and the count
    /// of conflicts forced.
    pub fn client_with_conflicts(
        &self,
        name: &str,
        times: usize,
    ) -> (kube::Client, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        let layer = crate::conflict::ConflictLayer::new(self.client(), self.ns(), name, times);
        let forced = layer.forced.clone();
        let client = kube::client::ClientBuilder::try_from(self.config.clone())
            .expect("builder")
            .with_layer(&layer)
            .build();
        (client, forced)
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The first (main) test namespace.
    pub fn ns(&self) -> &str {
        &self.namespaces[0]
    }

    /// Creates another throwaway namespace and returns its name.
    pub async fn namespace(&mut self, prefix: &str) -> String {
        let name = format!("{prefix}-{}", suffix());
        if self.is_real() {
            let api: Api<Namespace> = Api::all(self.client());
            let ns: Namespace = serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {"kubeecr.test/throwaway": "true"}}
            }))
            .unwrap();
            api.create(&PostParams::default(), &ns)
                .await
                .expect("create namespace");
        }
        self.namespaces.push(name.clone());
        name
    }
}

/// What a test may create in its namespaces, deleted at the end: a bare kube-apiserver runs
/// no namespace controller, so deleting the namespace alone would leave them behind.
const NAMESPACED: &[(&str, &str, &str)] = &[
    ("", "v1", "secrets"),
    ("", "v1", "events"),
    ("", "v1", "serviceaccounts"),
    ("events.k8s.io", "v1", "events"),
    ("coordination.k8s.io", "v1", "leases"),
    ("rbac.authorization.k8s.io", "v1", "rolebindings"),
    ("rbac.authorization.k8s.io", "v1", "roles"),
];

/// Bound on a test's cleanup, so that a slow or gone server cannot hang the suite.
const CLEANUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl Drop for TestCluster {
    fn drop(&mut self) {
        if !self.is_real() {
            return;
        }
        let config = self.config.clone();
        let namespaces = std::mem::take(&mut self.namespaces);
        block_on_thread(
            move |client| async move {
                for ns in &namespaces {
                    for (group, version, plural) in NAMESPACED {
                        let gvk = kube::core::GroupVersionKind::gvk(group, version, "");
                        let resource = kube::core::ApiResource::from_gvk_with_plural(&gvk, plural);
                        let api: Api<kube::core::DynamicObject> =
                            Api::namespaced_with(client.clone(), ns, &resource);
                        let _ = api
                            .delete_collection(&DeleteParams::background(), &Default::default())
                            .await;
                    }
                    // Gone at once on a full cluster; left Terminating, and empty, on a bare API server.
                    let _ = Api::<Namespace>::all(client.clone())
                        .delete(ns, &DeleteParams::background())
                        .await;
                }
            },
            config,
        );
    }
}

/// Runs async cleanup from a `Drop`, which is sync: on a thread with its own runtime and a
/// client of its own. A client made on the test's runtime must not be used there: its
/// connection task lives on the runtime that is blocked waiting for this thread.
pub fn block_on_thread<F, Fut>(cleanup: F, config: kube::Config)
where
    F: FnOnce(kube::Client) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let _ = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let Ok(client) = kube::Client::try_from(config) else {
                    return;
                };
                if tokio::time::timeout(CLEANUP_TIMEOUT, cleanup(client))
                    .await
                    .is_err()
                {
                    eprintln!("test cleanup did not finish within {CLEANUP_TIMEOUT:?}");
                }
            });
    })
    .join();
}
