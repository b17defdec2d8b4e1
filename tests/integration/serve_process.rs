//! `kubeecr serve` as a child process, the way an operator runs it: its webhook on HTTPS,
//! its admin port, its logs, signals.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kubeecr_testkit::cluster::TestCluster;
use kubeecr_testkit::tls::TestCa;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::common::*;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits up to `limit` for `check` to hold, polling every 100 ms; the last value otherwise.
pub async fn eventually<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A plain HTTP GET on 127.0.0.1: (status, body). `None` when nothing answers.
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// The value of a sample line `name{labels} value` (or `name value`) in a metrics text.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

/// The Secret once `check` holds, within `limit`.
pub async fn secret_when(
    cluster: &TestCluster,
    name: &str,
    limit: Duration,
    check: impl Fn(&Secret) -> bool,
) -> Option<Secret> {
    eventually(limit, || async {
        let api: Api<Secret> = Api::namespaced(cluster.client(), cluster.ns());
        let s = api.get_opt(name).await.ok().flatten()?;
        check(&s).then_some(s)
    })
    .await
}

/// A password for `host` is in the Secret.
pub fn has_password(s: &Secret, host: &str) -> bool {
    data_bytes(s, ".dockerconfigjson")
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|c| {
            c["auths"][host]["password"]
                .as_str()
                .is_some_and(|p| !p.is_empty())
        })
}

/// Where a `kubeecr serve` listens, and the certificate it serves, as the kubelet mounts it.
pub struct Ports {
    pub webhook: u16,
    pub admin: u16,
    pub ca: TestCa,
    pub mount: KubeletMount,
}

impl Ports {
    pub fn new() -> Self {
        Self::with_webhook(free_port())
    }

    /// A serving certificate valid for `names` too (a Service's DNS names).
    pub fn for_names(names: &[&str]) -> Self {
        let ca = TestCa::new("serve-ca");
        let mount = KubeletMount::new(&ca.serving_for("kubeecr-webhook", true, names));
        Self {
            webhook: free_port(),
            admin: free_port(),
            ca,
            mount,
        }
    }

    /// The webhook on `port`, e.g. one to which kube-apiserver presents a client certificate.
    pub fn with_webhook(port: u16) -> Self {
        let ca = TestCa::new("serve-ca");
        let mount = KubeletMount::new(&ca.serving("kubeecr-webhook", true));
        Self {
            webhook: port,
            admin: free_port(),
            ca,
            mount,
        }
    }
}

pub struct ServeProcess {
    child: tokio::process::Child,
    pub webhook_port: u16,
    pub admin_port: u16,
    pub ca: TestCa,
    logs: Arc<Mutex<String>>,
    /// Reads stderr into `logs`; ends at the end of the stream, once the process has exited.
    log_reader: Option<tokio::task::JoinHandle<()>>,
    _mount: KubeletMount,
}

impl ServeProcess {
    /// Starts `kubeecr serve` against the cluster and ECR at `ecr`, as replica `identity`,
    /// with its Lease in the test namespace and `extra` flags.
    pub async fn start(cluster: &TestCluster, ecr: &str, identity: &str, extra: &[&str]) -> Self {
        Self::start_on(Ports::new(), cluster, ecr, identity, extra).await
    }

    /// As `start`, listening on `ports`.
    pub async fn start_on(
        ports: Ports,
        cluster: &TestCluster,
        ecr: &str,
        identity: &str,
        extra: &[&str],
    ) -> Self {
        let cmd = Self::command(&ports, cluster, ecr, identity, extra);
        Self::launch(cmd, ports)
    }

    /// The command `start_on` runs, for a test to add to.
    pub fn command(
        ports: &Ports,
        cluster: &TestCluster,
        ecr: &str,
        identity: &str,
        extra: &[&str],
    ) -> tokio::process::Command {
        let mut cmd = kubeecr_command("serve");
        cmd.env("POD_NAME", identity)
            .env("POD_NAMESPACE", cluster.ns())
            .args(["--listen", &format!("127.0.0.1:{}", ports.webhook)])
            .args(["--admin-listen", &format!("127.0.0.1:{}", ports.admin)])
            .arg("--tls-cert-file")
            .arg(ports.mount.files().cert)
            .arg("--tls-key-file")
            .arg(ports.mount.files().key)
            .arg("--kubeconfig")
            .arg(cluster.kubeconfig())
            .args(["--ecr-endpoint", ecr, "--namespaces", cluster.ns()])
            .args(extra);
        cmd
    }

    /// Runs `cmd`, a `kubeecr serve` that listens on `ports` and reads its certificate from
    /// `ports.mount`.
    pub fn launch(mut cmd: tokio::process::Command, ports: Ports) -> Self {
        let mut child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("kubeecr serve starts");
        let logs = Arc::new(Mutex::new(String::new()));
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = Arc::clone(&logs);
        let log_reader = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let mut logs = sink.lock().unwrap();
                logs.push_str(&line);
                logs.push('\n');
            }
        });
        Self {
            child,
            webhook_port: ports.webhook,
            admin_port: ports.admin,
            ca: ports.ca,
            logs,
            log_reader: Some(log_reader),
            _mount: ports.mount,
        }
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    pub async fn readyz(&self) -> Option<u16> {
        http_get(self.admin_port, "/readyz").await.map(|(s, _)| s)
    }

    /// Waits until `/readyz` says 200.
    pub async fn wait_ready(&self) {
        let ready = eventually(Duration::from_secs(30), || async {
            (self.readyz().await == Some(200)).then_some(())
        })
        .await;
        assert!(
            ready.is_some(),
            "kubeecr serve became ready\n{}",
            self.logs()
        );
    }

    pub async fn metrics(&self) -> String {
        match http_get(self.admin_port, "/metrics").await {
            Some((200, body)) => body,
            other => panic!("/metrics answered {other:?}\n{}", self.logs()),
        }
    }

    pub async fn metric(&self, series: &str) -> Option<f64> {
        sample(&self.metrics().await, series)
    }

    pub async fn is_leader(&self) -> bool {
        self.metric("kubeecr_leader").await == Some(1.0)
    }

    /// Waits (up to `limit`) until this replica leads; whether it does.
    pub async fn leads_within(&self, limit: Duration) -> bool {
        eventually(limit, || async { self.is_leader().await.then_some(()) })
            .await
            .is_some()
    }

    pub fn pid(&self) -> i32 {
        self.child.id().expect("running") as i32
    }

    /// Sends `signal` (a `libc::SIG*` number) to the process.
    pub fn signal(&self, signal: i32) {
        use rustix::process::{Pid, Signal, kill_process};
        let pid = Pid::from_raw(self.pid()).expect("a positive pid");
        let signal = Signal::from_named_raw(signal).expect("a named signal");
        // Errors ignored, as before: the process may have exited already.
        let _ = kill_process(pid, signal);
    }

    /// Waits (bounded) for the process to exit, and for its log to be read to the end.
    pub async fn exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("kubeecr serve exits within {limit:?}\n{}", self.logs()))
            .unwrap();
        // Every line is in `logs` once the reader has met the end of stderr.
        if let Some(reader) = self.log_reader.take() {
            tokio::time::timeout(Duration::from_secs(10), reader)
                .await
                .expect("stderr ends once kubeecr serve has exited")
                .expect("the log reader ran");
        }
        status
    }
}
