//! The README's quick start, run line by line on a real kube-apiserver v1.36 of its own, with
//! the release's install.yaml: the webhooks are registered by Service as the install registers
//! them, and the API server reaches `kubeecr serve` through an egress proxy (a CONNECT tunnel
//! to 127.0.0.1), so the Secret the quick start creates is filled at admission, exactly as in
//! a cluster. What only a cluster has is stood in for, and said: cert-manager (the serving
//! Secret and the caBundle), the kubelet (kubeecr serve runs here, as the Deployment would).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kubeecr_testkit::moto::EcrProxy;
use kubeecr_testkit::yaml::yaml_documents;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;
use crate::install::{one, repo, scratch, tool_present};
use crate::install_scenario::{kubectl, serve_as_deployment_on};
use crate::serve_process::{Ports, eventually};

const START: &str = "../shared/kube-apiserver/start.sh";
const STOP: &str = "../shared/kube-apiserver/stop.sh";

/// The README's quick start: each shell command of its code blocks, continuation lines joined,
/// a here-document kept with its command.
pub fn quick_start_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let section = readme
        .split("\n## Quick start\n")
        .nth(1)
        .expect("a Quick start section")
        .split("\n## ")
        .next()
        .unwrap();
    let mut commands = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    let mut heredoc: Option<String> = None;
    for line in section.lines() {
        if line.starts_with("```") {
            in_block = line == "```sh";
            continue;
        }
        if !in_block {
            continue;
        }
        if let Some(end) = &heredoc {
            pending.push('\n');
            pending.push_str(line);
            if line == end {
                heredoc = None;
                commands.push(std::mem::take(&mut pending));
            }
            continue;
        }
        let code = line.split("   # ").next().unwrap().trim_end();
        if let Some(head) = code.strip_suffix('\\') {
            pending.push_str(head.trim_end());
            pending.push(' ');
            continue;
        }
        pending.push_str(code.trim());
        if let Some((_, tag)) = pending.split_once("<<'") {
            heredoc = Some(tag.trim_end_matches('\'').to_string());
            continue;
        }
        commands.push(std::mem::take(&mut pending));
    }
    commands
}

/// An HTTP CONNECT proxy on a unix socket that opens every tunnel to 127.0.0.1:`port`: the API
/// server's egress for webhooks registered by Service.
async fn egress_proxy(socket: PathBuf, port: u16) {
    let _ = std::fs::remove_file(&socket);
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut from, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if from.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                assert!(
                    head.starts_with(b"CONNECT "),
                    "{}",
                    String::from_utf8_lossy(&head)
                );
                let Ok(mut to) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
                    return;
                };
                if from
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .is_ok()
                {
                    let _ = tokio::io::copy_bidirectional(&mut from, &mut to).await;
                }
            });
        }
    });
}

/// A kube-apiserver of this test's own (its webhooks would reach every other test's
/// namespaces); stopped, with its etcd wiped, when dropped.
struct OwnApiServer {
    dir: PathBuf,
    kubeconfig: PathBuf,
}

impl OwnApiServer {
    fn start(dir: &Path, socket: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let _ = Command::new(repo().join(STOP))
            .arg(dir)
            .arg("--wipe")
            .output();
        let egress = format!(
            "apiVersion: apiserver.k8s.io/v1beta1\nkind: EgressSelectorConfiguration\n\
             egressSelections:\n- name: cluster\n  connection:\n    proxyProtocol: HTTPConnect\n    \
             transport: {{uds: {{udsName: {}}}}}\n",
            socket.display()
        );
        std::fs::write(dir.join("egress.yaml"), egress).unwrap();
        let out = Command::new(repo().join(START))
            .arg(dir)
            .env(
                "KUBE_APISERVER_ARGS",
                format!(
                    "--egress-selector-config-file {}",
                    dir.join("egress.yaml").display()
                ),
            )
            .output()
            .expect("start.sh");
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let kubeconfig = PathBuf::from(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .last()
                .unwrap()
                .trim(),
        );
        Self {
            dir: dir.to_path_buf(),
            kubeconfig,
        }
    }
}

impl Drop for OwnApiServer {
    fn drop(&mut self) {
        let _ = Command::new(repo().join(STOP))
            .arg(&self.dir)
            .arg("--wipe")
            .output();
    }
}

fn bash(script: &str, cwd: &Path, kubeconfig: &Path) -> String {
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(cwd)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{script}\n{text}");
    text
}

// Several threads: the proxy forwards the API server's webhook calls while this test waits,
// blocked, for kubectl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_quick_start_fills_a_secret_on_a_real_api_server() {
    let found = repo().join(START).exists() && crate::chart::helm().is_some();
    if !tool_present(found, "../shared/kube-apiserver and Helm (scripts/test.sh)") {
        return;
    }
    let commands = quick_start_commands();
    let mut done: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    let work = scratch();
    let cwd = work.join("cwd");
    std::fs::create_dir_all(&cwd).unwrap();

    // The release, as scripts/release.sh makes it.
    let dist = work.join("dist");
    let release = Command::new(repo().join("scripts/release.sh"))
        .args([env!("CARGO_PKG_VERSION"), "--out"])
        .arg(&dist)
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_kubeecr"))
        .output()
        .unwrap();
    assert!(
        release.status.success(),
        "{}",
        String::from_utf8_lossy(&release.stderr)
    );
    let install = dist.join("install.yaml");

    let ports = Ports::for_names(&["kubeecr-webhook.kubeecr.svc"]);
    // The proxy's socket in a directory of this test's alone (0700): it opens the webhook.
    let private = tempfile::tempdir().unwrap();
    let socket = private.path().join("egress.sock");
    let api = OwnApiServer::start(&repo().join("target/quick-start-kapi"), &socket);
    egress_proxy(socket, ports.webhook).await;
    let admin = api.kubeconfig.clone();
    for crd in std::fs::read_dir(repo().join("tests/fixtures/crds/cert-manager")).unwrap() {
        let crd = crd.unwrap().path();
        if crd.extension().is_some_and(|e| e == "yaml") {
            kubectl(
                &admin,
                &["apply", "--server-side", "-f", crd.to_str().unwrap()],
                "",
            )
            .unwrap();
        }
    }
    kubectl(
        &admin,
        &[
            "wait",
            "--for=condition=Established",
            "crd/certificates.cert-manager.io",
            "crd/issuers.cert-manager.io",
        ],
        "",
    )
    .unwrap();

    // The first block: the install, the AWS keys, the restart.
    let url = format!(
        "https://github.com/deft/kubeecr/releases/download/v{}/install.yaml",
        env!("CARGO_PKG_VERSION")
    );
    let apply = format!("kubectl apply -f {url}");
    assert!(commands.contains(&apply), "{commands:#?}");
    bash(
        &apply.replace(&url, install.to_str().unwrap()),
        &cwd,
        &admin,
    );
    done.insert(apply.clone());
    // What cert-manager would do: the serving Secret, and the CA in both webhooks.
    let tls = json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "kubeecr-webhook-tls", "namespace": "kubeecr"},
        "stringData": {"tls.crt": std::fs::read_to_string(ports.mount.files().cert).unwrap(),
                       "tls.key": std::fs::read_to_string(ports.mount.files().key).unwrap(),
                       "ca.crt": ports.ca.pem()}});
    kubectl(&admin, &["apply", "-f", "-"], &tls.to_string()).unwrap();
    let bundle = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, ports.ca.pem());
    for kind in [
        "mutatingwebhookconfiguration",
        "validatingwebhookconfiguration",
    ] {
        let patch =
            json!([{"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": bundle}]);
        kubectl(
            &admin,
            &[
                "patch",
                kind,
                "kubeecr",
                "--type=json",
                "-p",
                &patch.to_string(),
            ],
            "",
        )
        .unwrap();
    }

    std::fs::write(cwd.join("access-key-id"), "AKIAKUBEECRCLI000001").unwrap();
    std::fs::write(cwd.join("secret-access-key"), CLI_SECRET_KEY).unwrap();
    let create = commands
        .iter()
        .find(|c| c.starts_with("kubectl -n kubeecr create secret generic kubeecr-aws-secrets"))
        .expect("the AWS keys' Secret")
        .clone();
    bash(&create, &cwd, &admin);
    done.insert(create.clone());
    let stored = kubectl(
        &admin,
        &[
            "-n",
            "kubeecr",
            "get",
            "secret",
            "kubeecr-aws-secrets",
            "-o",
            "jsonpath={.data.AWS_SECRET_ACCESS_KEY}",
        ],
        "",
    )
    .unwrap();
    let decoded =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, stored.trim()).unwrap();
    assert_eq!(
        decoded,
        CLI_SECRET_KEY.as_bytes(),
        "read from the file, as written"
    );

    let restart = commands
        .iter()
        .find(|c| c.starts_with("kubectl -n kubeecr rollout restart deployment/kubeecr"))
        .expect("the restart")
        .clone();
    // No kubelet here, so `rollout status` would wait for good: the restart runs, and kubeecr
    // serve starts as the Deployment's pod would, with its args and env, as its ServiceAccount.
    let (restart_only, status) = restart.split_once(" && ").unwrap();
    assert!(
        status.starts_with("kubectl -n kubeecr rollout status deployment/kubeecr"),
        "{status}"
    );
    bash(restart_only, &cwd, &admin);
    done.insert(restart.clone());
    let docs: Vec<Value> = yaml_documents(&std::fs::read_to_string(&install).unwrap())
        .into_iter()
        .filter(|d| !d.is_null())
        .collect();
    let token = kubectl(
        &admin,
        &[
            "create",
            "token",
            "kubeecr",
            "-n",
            "kubeecr",
            "--duration=20m",
        ],
        "",
    )
    .unwrap();
    let view: Value = serde_json::from_str(
        &kubectl(
            &admin,
            &[
                "config",
                "view",
                "--raw",
                "--minify",
                "--flatten",
                "-o",
                "json",
            ],
            "",
        )
        .unwrap(),
    )
    .unwrap();
    let sa_kubeconfig = work.join("sa-kubeconfig");
    std::fs::write(
        &sa_kubeconfig,
        json!({"apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": view["clusters"][0]["cluster"]}],
        "users": [{"name": "sa", "user": {"token": token.trim()}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa"}}],
        "current-context": "sa"})
        .to_string(),
    )
    .unwrap();
    let ecr = EcrProxy::start().await;
    let serve = serve_as_deployment_on(
        ports,
        one(&docs, "Deployment"),
        &sa_kubeconfig,
        &ecr.url(),
        "kubeecr",
        None,
        "kubeecr-quick-start",
    );
    serve.wait_ready().await;

    // The second block: a namespace, an opted-in Secret with no data, filled at admission
    // through the Service-registered webhook, and its Event.
    let rest: Vec<String> = commands
        .iter()
        .filter(|c| !done.contains(*c))
        .cloned()
        .collect();
    for command in &rest {
        if command.starts_with("kubectl -n team-a events --for secret/ecr-pull") {
            continue;
        }
        bash(command, &cwd, &admin);
        done.insert(command.clone());
    }
    let describe = "kubectl -n team-a events --for secret/ecr-pull".to_string();
    let described = eventually(Duration::from_secs(30), || async {
        let out = bash(&describe, &cwd, &admin);
        out.contains("Filled").then_some(out)
    })
    .await;
    assert!(described.is_some(), "a Filled Event\n{}", serve.logs());
    done.insert(describe.clone());
    let skipped: Vec<&String> = commands.iter().filter(|c| !done.contains(*c)).collect();
    assert!(
        skipped.is_empty(),
        "quick start lines this test did not run: {skipped:?}"
    );

    let secret = kubectl(
        &admin,
        &["-n", "team-a", "get", "secret", "ecr-pull", "-o", "json"],
        "",
    )
    .unwrap();
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_str(&secret).unwrap();
    assert_eq!(
        password_of(
            &dockerconfig(&secret),
            "123456789012.dkr.ecr.us-west-2.amazonaws.com"
        ),
        ecr.newest("us-west-2", None).expect("a token").password,
        "filled at admission with the token issued"
    );
    assert!(
        serve
            .logs()
            .contains("admission response carries an ECR token"),
        "the API server called the webhook\n{}",
        serve.logs()
    );
    drop(api);
    std::fs::remove_dir_all(work).unwrap();
}
