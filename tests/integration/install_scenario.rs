//! The install against an API server: `kubeecr serve` runs with the Deployment's own args
//! and env as the manifests' ServiceAccount, under exactly their RBAC, with no 403, and its
//! own writes skip its webhooks while an administrator's do not.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use kubeecr_testkit::cluster::TestCluster;
use kubeecr_testkit::moto::EcrProxy;
use kubeecr_testkit::yaml::yaml_documents;
use serde_json::{Value, json};

use crate::common::*;
use crate::install::{args, assert_consistent, container, example_in, one, render, repo};
use crate::on_both_backends;
use crate::serve_process::{Ports, ServeProcess, eventually, free_port, has_password, secret_when};

/// `kubectl` with `kubeconfig`, `stdin` piped in; stdout, or the failure.
pub fn kubectl(kubeconfig: &Path, args: &[&str], stdin: &str) -> Result<String, String> {
    use std::io::Write;
    let mut child = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

pub fn list_of(docs: &[&Value]) -> String {
    json!({"apiVersion": "v1", "kind": "List", "items": docs}).to_string()
}

/// Cluster-scoped objects a real-cluster test created, deleted when it ends, even on panic.
pub struct ClusterScoped {
    pub kubeconfig: PathBuf,
    pub objects: Vec<String>,
}

impl Drop for ClusterScoped {
    fn drop(&mut self) {
        for object in self.objects.iter().rev() {
            let _ = kubectl(
                &self.kubeconfig,
                &[
                    "delete",
                    object,
                    "--ignore-not-found",
                    "--wait=false",
                    "--request-timeout=20s",
                ],
                "",
            );
        }
    }
}

/// cert-manager's CRDs from tests/fixtures, when the cluster lacks them. Installed once per
/// run and left in place: tests running at once need them, and a CRD with no objects changes
/// nothing else.
pub fn ensure_cert_manager_crds(admin: &Path) {
    static INSTALLED: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    if *installed || kubectl(admin, &["get", "crd", "certificates.cert-manager.io"], "").is_ok() {
        *installed = true;
        return;
    }
    let dir = repo().join("tests/fixtures/crds/cert-manager");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            kubectl(
                admin,
                &["apply", "--server-side", "-f", path.to_str().unwrap()],
                "",
            )
            .unwrap();
        }
    }
    kubectl(
        admin,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/certificates.cert-manager.io",
            "crd/issuers.cert-manager.io",
        ],
        "",
    )
    .unwrap();
    *installed = true;
}

/// A kubeconfig for the manifests' ServiceAccount: a TokenRequest token on a real cluster,
/// impersonation on the double (which trusts every client, and holds an impersonated user to
/// the RBAC installed with `install_rbac_on_the_double`).
pub fn service_account_kubeconfig(
    cluster: &TestCluster,
    ns: &str,
    sa: &str,
    dir: &Path,
) -> PathBuf {
    let path = dir.join("sa-kubeconfig");
    let (server, user) = match cluster.double_server() {
        Some(double) => (
            json!({"server": double.url()}),
            json!({"token": "not-checked", "as": format!("system:serviceaccount:{ns}:{sa}")}),
        ),
        None => {
            let admin = cluster.kubeconfig();
            let token = kubectl(
                admin,
                &["create", "token", sa, "-n", ns, "--duration=20m"],
                "",
            )
            .unwrap();
            let view: Value = serde_json::from_str(
                &kubectl(
                    admin,
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
            (
                view["clusters"][0]["cluster"].clone(),
                json!({"token": token.trim()}),
            )
        }
    };
    let kubeconfig = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": server}],
        "users": [{"name": "sa", "user": user}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa", "namespace": ns}}],
        "current-context": "sa",
    });
    std::fs::write(&path, kubeconfig.to_string()).unwrap();
    path
}

/// The render, with cluster-scoped names made unique so that a real cluster's own kubeecr
/// is left alone.
pub fn render_for_test(ns: &str) -> Vec<Value> {
    let scratch_dir = example_in(ns);
    let docs = render(&scratch_dir);
    std::fs::remove_dir_all(&scratch_dir).unwrap();
    assert_consistent(&docs, ns);
    suffixed(docs, ns)
}

/// The CronJob form (examples/installation/cronjob/) in `ns`, named as `render_for_test` names.
pub fn render_cronjob_for_test(ns: &str) -> Vec<Value> {
    let overlay =
        std::fs::read_to_string(repo().join("examples/installation/cronjob/kustomization.yaml"))
            .unwrap()
            // target/kustomize-tests/<dir>/ is as deep as examples/installation/cronjob/.
            .replace("\nnamespace: kubeecr\n", &format!("\nnamespace: {ns}\n"));
    let dir = crate::install::scratch();
    std::fs::write(dir.join("kustomization.yaml"), overlay).unwrap();
    let docs = render(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    suffixed(docs, ns)
}

/// Cluster-scoped names (and what refers to them) with `-ns` appended.
fn suffixed(mut docs: Vec<Value>, ns: &str) -> Vec<Value> {
    for doc in &mut docs {
        let kind = doc["kind"].as_str().unwrap().to_string();
        if kind.starts_with("Cluster")
            || kind.ends_with("WebhookConfiguration")
            || kind.starts_with("ValidatingAdmissionPolicy")
        {
            let name = format!("{}-{ns}", doc["metadata"]["name"].as_str().unwrap());
            doc["metadata"]["name"] = json!(name);
        }
        if kind == "ValidatingAdmissionPolicyBinding" {
            let policy = format!("{}-{ns}", doc["spec"]["policyName"].as_str().unwrap());
            doc["spec"]["policyName"] = json!(policy);
        }
        if kind == "ClusterRoleBinding" {
            let role = format!("{}-{ns}", doc["roleRef"]["name"].as_str().unwrap());
            doc["roleRef"]["name"] = json!(role);
        }
    }
    docs
}

pub fn kind_of(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap()
}

/// `kind/name`, as kubectl names an object.
pub fn object_name(doc: &Value) -> String {
    format!(
        "{}/{}",
        kind_of(doc).to_lowercase(),
        doc["metadata"]["name"].as_str().unwrap()
    )
}

/// On a real cluster: applies the ServiceAccount and its RBAC, checks what that RBAC grants
/// cluster-wide, and has the API server accept the rest of the install in a dry run (with
/// cert-manager's CRDs), since nothing here runs pods or cert-manager.
fn install_rbac_and_dry_run_the_rest(
    admin: &Path,
    docs: &[Value],
    who: &str,
    ns: &str,
    created: &mut ClusterScoped,
) {
    let is_rbac = |d: &&Value| {
        matches!(
            kind_of(d),
            "ServiceAccount" | "ClusterRole" | "ClusterRoleBinding" | "Role" | "RoleBinding"
        )
    };
    let rbac: Vec<&Value> = docs.iter().filter(is_rbac).collect();
    created.objects.extend(
        rbac.iter()
            .filter(|d| d["metadata"]["namespace"].is_null())
            .map(|d| object_name(d)),
    );
    kubectl(admin, &["apply", "-f", "-"], &list_of(&rbac)).unwrap();

    // The serve run below is limited to this namespace (the cluster is shared with other
    // tests), so the cluster-wide grants are checked here.
    let can = |verb: &str, resource: &str, scope: &[&str]| {
        let out = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(admin)
            .args(["auth", "can-i", verb, resource, "--as", who])
            .args(scope)
            .output()
            .unwrap();
        // Exit 1 and "no" for a denial; the answer is on stdout either way.
        match String::from_utf8_lossy(&out.stdout).trim() {
            "yes" => true,
            "no" => false,
            other => panic!(
                "kubectl auth can-i: {other} {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    };
    let everywhere = ["--all-namespaces"];
    for verb in ["get", "list", "watch", "patch"] {
        assert!(can(verb, "secrets", &everywhere), "{verb} secrets");
    }
    for verb in ["create", "update", "delete", "deletecollection"] {
        assert!(
            !can(verb, "secrets", &everywhere),
            "{verb} secrets is not granted"
        );
    }
    for verb in ["create", "patch"] {
        assert!(
            can(verb, "events.events.k8s.io", &["-n", "default"]),
            "{verb} events"
        );
    }
    assert!(can("update", "leases/kubeecr", &["-n", ns]));
    assert!(
        !can("update", "leases/other", &["-n", ns]),
        "only its own Lease"
    );
    assert!(
        !can("create", "leases", &["-n", "default"]),
        "Leases in its namespace only"
    );

    ensure_cert_manager_crds(admin);
    let rest: Vec<&Value> = docs
        .iter()
        .filter(|d| !is_rbac(d) && kind_of(d) != "Namespace")
        .collect();
    assert!(rest.len() >= 9, "{}", rest.len());
    let applied = kubectl(
        admin,
        &["apply", "--dry-run=server", "-f", "-"],
        &list_of(&rest),
    )
    .unwrap();
    assert_eq!(applied.lines().count(), rest.len(), "{applied}");
}

/// On the double: installs the ServiceAccount's RBAC, which the double then enforces on every
/// request made as the ServiceAccount, and checks the grants checked on a real cluster.
fn install_rbac_on_the_double(
    double: &kubeecr_testkit::apiserver::FakeApiServer,
    docs: &[Value],
    who: &str,
    ns: &str,
) {
    let rbac: Vec<Value> = docs
        .iter()
        .filter(|d| {
            matches!(
                kind_of(d),
                "ClusterRole" | "ClusterRoleBinding" | "Role" | "RoleBinding"
            )
        })
        .cloned()
        .collect();
    assert!(rbac.len() >= 6, "{rbac:?}");
    double.rbac().install(&rbac);
    let can = |verb: &str, group: &str, resource: &str, scope: Option<&str>, name: Option<&str>| {
        double
            .rbac()
            .allows(&kubeecr_testkit::apiserver::rbac::Attributes {
                user: who.to_string(),
                verb: verb.to_string(),
                group: group.to_string(),
                resource: resource.to_string(),
                namespace: scope.map(str::to_string),
                name: name.map(str::to_string),
            })
    };
    for verb in ["get", "list", "watch", "patch"] {
        assert!(can(verb, "", "secrets", None, None), "{verb} secrets");
    }
    for verb in ["create", "update", "delete", "deletecollection"] {
        assert!(
            !can(verb, "", "secrets", None, None),
            "{verb} secrets is not granted"
        );
    }
    for verb in ["create", "patch"] {
        assert!(
            can(verb, "events.k8s.io", "events", Some("default"), None),
            "{verb} events"
        );
    }
    let leases = "coordination.k8s.io";
    assert!(can("update", leases, "leases", Some(ns), Some("kubeecr")));
    assert!(
        !can("update", leases, "leases", Some(ns), Some("other")),
        "only its own Lease"
    );
    assert!(
        !can("create", leases, "leases", Some("default"), None),
        "Leases in its namespace only"
    );
}

fn opted_in(name: &str) -> k8s_openapi::api::core::v1::Secret {
    secret(
        name,
        DOCKER_CONFIG_JSON,
        &[(ANNOTATION, "123456789012/us-west-2")],
        EMPTY,
    )
}

/// Registers the install's webhooks where nothing listens, for this namespace only; returns
/// the objects to delete on a real cluster. With failurePolicy Fail every opted-in write is
/// refused from then on, except those their matchConditions leave out.
async fn register_unreachable_webhooks(
    cluster: &TestCluster,
    docs: &[Value],
    created: &mut ClusterScoped,
) -> Vec<String> {
    let ns = cluster.ns();
    let dead = format!("https://127.0.0.1:{}", free_port());
    let ca = kubeecr_testkit::tls::TestCa::new("unreachable-webhook");
    let configs = docs
        .iter()
        .filter(|d| kind_of(d).ends_with("WebhookConfiguration"));
    if let Some(double) = cluster.double_server() {
        // The install leaves its own namespace out, and here that is the test's.
        let yaml: String = configs
            .map(|d| {
                let mut d = d.clone();
                for w in d["webhooks"].as_array_mut().unwrap() {
                    w["namespaceSelector"]["matchExpressions"][0]["values"] =
                        json!(["kube-system"]);
                }
                format!("---\n{d}\n")
            })
            .collect();
        double
            .webhooks()
            .register_yaml(&yaml, &dead, ca.pem().as_bytes());
        return Vec::new();
    }
    let bundle = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, ca.pem());
    let registered: Vec<Value> = configs
        .map(|config| {
            let mut config = config.clone();
            config["metadata"]["annotations"] = json!({});
            for w in config["webhooks"].as_array_mut().unwrap() {
                let path = w["clientConfig"]["service"]["path"]
                    .as_str()
                    .unwrap()
                    .to_string();
                w["clientConfig"] = json!({"url": format!("{dead}{path}"), "caBundle": bundle});
                // This namespace only: other tests share the cluster.
                w["namespaceSelector"] =
                    json!({"matchLabels": {"kubernetes.io/metadata.name": ns}});
            }
            config
        })
        .collect();
    let objects: Vec<String> = registered.iter().map(object_name).collect();
    created.objects.extend(objects.iter().cloned());
    kubectl(
        cluster.kubeconfig(),
        &["apply", "-f", "-"],
        &list_of(&registered.iter().collect::<Vec<_>>()),
    )
    .unwrap();
    objects
}

async fn unregister_webhooks(cluster: &TestCluster, objects: &[String]) {
    match cluster.double_server() {
        Some(double) => double.webhooks().clear(),
        None => {
            let mut args = vec!["delete", "--wait=true"];
            args.extend(objects.iter().map(String::as_str));
            kubectl(cluster.kubeconfig(), &args, "").unwrap();
        }
    }
}

/// `kubeecr serve` with the Deployment's own args and env, as replica `identity` in `ns`;
/// only what ties it to this test (kubeconfig, ports, certificate files, ECR, the
/// namespace it serves) is set by environment, which the Deployment's flags must not pin.
fn serve_as_deployment(
    deployment: &Value,
    kubeconfig: &Path,
    ecr: &str,
    ns: &str,
    served: &str,
    identity: &str,
) -> ServeProcess {
    serve_as_deployment_on(
        Ports::new(),
        deployment,
        kubeconfig,
        ecr,
        ns,
        Some(served),
        identity,
    )
}

/// As `serve_as_deployment`, on `ports`; `served: None` leaves the namespaces as the
/// Deployment has them (a cluster of the test's own).
pub fn serve_as_deployment_on(
    ports: Ports,
    deployment: &Value,
    kubeconfig: &Path,
    ecr: &str,
    ns: &str,
    served: Option<&str>,
    identity: &str,
) -> ServeProcess {
    let args = args(deployment);
    for local in [
        "--listen",
        "--admin-listen",
        "--tls-cert-file",
        "--tls-key-file",
        "--kubeconfig",
        "--ecr-endpoint",
    ] {
        assert!(
            !args.iter().any(|a| a.starts_with(local)),
            "{local} in {args:?}"
        );
    }
    // The install may name the namespaces it serves; then they must be the test's.
    if let (Some(given), Some(served)) =
        (args.iter().find(|a| a.starts_with("--namespaces")), served)
    {
        assert_eq!(given, &format!("--namespaces={served}"));
    }
    let mut cmd = kubeecr_command(&args[0]);
    cmd.args(&args[1..]);
    for env in container(deployment)["env"].as_array().unwrap() {
        if !env["valueFrom"]["secretKeyRef"].is_null() {
            // kubeecr-aws-secrets: the test's own static keys stand in for it.
            continue;
        }
        let value = match env["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            Some("metadata.name") => identity,
            Some("metadata.namespace") => ns,
            Some(other) => panic!("unexpected fieldRef {other}"),
            None => env["value"].as_str().unwrap(),
        };
        cmd.env(env["name"].as_str().unwrap(), value);
    }
    cmd.env("KUBEECR_KUBECONFIG", kubeconfig)
        .env("KUBEECR_LISTEN", format!("127.0.0.1:{}", ports.webhook))
        .env("KUBEECR_ADMIN_LISTEN", format!("127.0.0.1:{}", ports.admin))
        .env("KUBEECR_TLS_CERT_FILE", ports.mount.files().cert)
        .env("KUBEECR_TLS_KEY_FILE", ports.mount.files().key)
        .env("KUBEECR_ECR_ENDPOINT", ecr);
    // A cluster shared with other tests: the test's namespace only.
    if let Some(served) = served {
        cmd.env("KUBEECR_NAMESPACES", served);
    }
    ServeProcess::launch(cmd, ports)
}

/// Waits for `serve` to fill `name`.
async fn filled_by(serve: &ServeProcess, cluster: &TestCluster, name: &str, what: &str) {
    let host = "123456789012.dkr.ecr.us-west-2.amazonaws.com";
    let filled = secret_when(cluster, name, Duration::from_secs(30), |s| {
        has_password(s, host)
    })
    .await;
    assert!(filled.is_some(), "{what}\n{}", serve.logs());
}

/// `kubeecr refresh --force` in the test namespace with `kubeconfig`.
async fn forced_refresh(kubeconfig: &Path, ns: &str, ecr: &str) -> std::process::Output {
    kubeecr_command("refresh")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--namespace", ns, "--ecr-endpoint", ecr, "--force"])
        .output()
        .await
        .unwrap()
}

/// The install on an API server: RBAC applied (and enforced on the double too), the webhooks
/// registered where nothing listens, then `kubeecr serve` as the Deployment runs it, as the
/// ServiceAccount.
async fn installed_kubeecr_runs_under_its_rbac_and_skips_its_own_webhook(cluster: TestCluster) {
    let ns = cluster.ns().to_string();
    let admin = cluster.kubeconfig().to_path_buf();
    let client = cluster.client();
    let ecr = EcrProxy::start().await;
    let docs = render_for_test(&ns);
    let mut created = ClusterScoped {
        kubeconfig: admin.clone(),
        objects: Vec::new(),
    };
    let who = format!("system:serviceaccount:{ns}:kubeecr");
    match cluster.double_server() {
        Some(double) => install_rbac_on_the_double(double, &docs, &who, &ns),
        None => install_rbac_and_dry_run_the_rest(&admin, &docs, &who, &ns, &mut created),
    }

    // Made before the webhooks are registered; afterwards an administrator's opted-in write
    // is refused.
    create_opted_in(&client, &ns, "before", "123456789012/us-west-2").await;
    let webhooks = register_unreachable_webhooks(&cluster, &docs, &mut created).await;
    let serve = serves_under_its_rbac(&cluster, &docs, &ecr, &ns).await;

    // With the webhooks gone, a Secret created now is filled by the running serve.
    unregister_webhooks(&cluster, &webhooks).await;
    let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client.clone(), &ns);
    let created_after = eventually(Duration::from_secs(20), || async {
        api.create(&Default::default(), &opted_in("after"))
            .await
            .ok()
    })
    .await;
    assert!(created_after.is_some(), "the webhooks were never removed");
    filled_by(&serve, &cluster, "after", "serve fills a new Secret").await;
    stops_cleanly_with_no_403(serve).await;
    drop(created);
}
on_both_backends!(installed_kubeecr_runs_under_its_rbac_and_skips_its_own_webhook);

/// With the install's webhooks registered where nothing listens, for this namespace: an
/// administrator's opted-in write is refused, `kubeecr serve` runs as the install's
/// Deployment, as its ServiceAccount, fills the Secret `before`, holds its Lease and writes an
/// Event, and its own writes skip the webhooks while an administrator's do not.
async fn serves_under_its_rbac(
    cluster: &TestCluster,
    docs: &[Value],
    ecr: &EcrProxy,
    install_ns: &str,
) -> ServeProcess {
    let ns = cluster.ns().to_string();
    let admin = cluster.kubeconfig().to_path_buf();
    let client = cluster.client();
    let sa = one(docs, "ServiceAccount")["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client.clone(), &ns);
    // The API server picks up new webhook configurations within a moment.
    let refused = eventually(Duration::from_secs(20), || async {
        match api.create(&Default::default(), &opted_in("refused")).await {
            Ok(_) => {
                let _ = api.delete("refused", &Default::default()).await;
                None
            }
            Err(e) => Some(e.to_string()),
        }
    })
    .await
    .expect("an administrator's opted-in write goes through the (down) webhook");
    assert!(refused.contains("failed calling webhook"), "{refused}");

    // serve fills the Secret as its ServiceAccount, the webhook still down.
    let dir = tempfile::tempdir().unwrap();
    let sa_kubeconfig = service_account_kubeconfig(cluster, install_ns, &sa, dir.path());
    let identity = format!("kubeecr-{}", &ns[ns.len() - 5..]);
    let serve = serve_as_deployment(
        one(docs, "Deployment"),
        &sa_kubeconfig,
        &ecr.url(),
        install_ns,
        &ns,
        &identity,
    );
    serve.wait_ready().await;
    assert!(
        serve.leads_within(Duration::from_secs(30)).await,
        "{}",
        serve.logs()
    );
    filled_by(
        &serve,
        cluster,
        "before",
        "serve fills the Secret as its ServiceAccount",
    )
    .await;

    // Its Lease, and an Event, written under the install's RBAC.
    let lease: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(client.clone(), install_ns);
    let lease = lease.get("kubeecr").await.expect("the Lease");
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some(identity.as_str())
    );
    let events: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(client.clone(), &ns);
    let recorded = eventually(Duration::from_secs(20), || async {
        let list = events.list(&Default::default()).await.ok()?;
        list.items
            .into_iter()
            .find(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("before"))
    })
    .await;
    assert!(
        recorded.is_some(),
        "an Event for the fill\n{}",
        serve.logs()
    );

    // kubeecr's own writes skip its webhook; an administrator's do not.
    let before = rv(&get(&client, &ns, "before").await);
    let own = forced_refresh(&sa_kubeconfig, &ns, &ecr.url()).await;
    let stdout = String::from_utf8_lossy(&own.stdout);
    assert!(
        own.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&own.stderr)
    );
    assert!(stdout.contains("failed 0"), "{stdout}");
    // Every fetch is a new token, so the forced refresh is a real write: of the token the
    // refresh was just given.
    let written = get(&client, &ns, "before").await;
    assert_ne!(rv(&written), before, "written with the webhook down");
    let newest = ecr.newest("us-west-2", None).expect("issued");
    assert_eq!(
        password_of(
            &dockerconfig(&written),
            "123456789012.dkr.ecr.us-west-2.amazonaws.com"
        ),
        newest.password,
        "the newest token"
    );
    assert_eq!(
        annotation(&written, EXPIRES_AT).as_deref(),
        Some(newest.expires_at.as_str())
    );
    let other = forced_refresh(&admin, &ns, &ecr.url()).await;
    let stdout = String::from_utf8_lossy(&other.stdout);
    assert_eq!(other.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("failed calling webhook"), "{stdout}");
    // The token is read at start; the directory may go.
    drop(dir);
    serve
}

/// SIGTERM: it exits 0, releasing its Lease, and nothing it asked for was forbidden.
async fn stops_cleanly_with_no_403(mut serve: ServeProcess) {
    serve.signal(libc::SIGTERM);
    assert!(
        serve.exit(Duration::from_secs(60)).await.success(),
        "{}",
        serve.logs()
    );
    let logs = serve.logs();
    assert!(logs.contains("released the Lease"), "{logs}");
    for denied in ["HTTP 403", "forbidden", "Forbidden"] {
        assert!(!logs.contains(denied), "{denied} in:\n{logs}");
    }
}

/// A Helm release, uninstalled when dropped (a test that failed half way leaves nothing).
struct HelmRelease {
    helm: PathBuf,
    kubeconfig: PathBuf,
    name: String,
    namespace: String,
    installed: bool,
}

impl HelmRelease {
    fn run(&self, args: &[&str]) -> Result<String, String> {
        let out = std::process::Command::new(&self.helm)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--namespace", &self.namespace])
            .args(args)
            .output()
            .expect("helm");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "helm {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn uninstall(&mut self) -> Result<String, String> {
        self.installed = false;
        self.run(&["uninstall", &self.name.clone(), "--wait", "--timeout=60s"])
    }
}

impl Drop for HelmRelease {
    fn drop(&mut self) {
        if self.installed {
            let _ = self.uninstall();
        }
    }
}

/// The chart with real Helm v4 on the real kube-apiserver: `helm install` (cert-manager's
/// CRDs present; no controller runs here, so the serving certificate is never issued and the
/// webhooks, which the release scopes to this namespace, stay unreachable), then `kubeecr
/// serve` with the chart's own Deployment args and env, as the chart's ServiceAccount, fills a
/// Secret with no 403 (the same checks as the manifests' install above); `helm uninstall`
/// removes every object it made, cluster-scoped ones included.
#[tokio::test]
async fn the_helm_chart_installs_and_serves_on_a_real_cluster() {
    let Some(helm) = crate::chart::helm() else {
        return;
    };
    let Some(mut cluster) =
        TestCluster::real("the_helm_chart_installs_and_serves_on_a_real_cluster").await
    else {
        return;
    };
    let ns = cluster.ns().to_string();
    // The release in a namespace of its own, serving the test's: its webhooks, its policy and
    // its Roles then reach the test's namespace only, and the shared cluster's other tests
    // are left alone.
    let release_ns = cluster.namespace("kubeecr-helm").await;
    let admin = cluster.kubeconfig().to_path_buf();
    let client = cluster.client();
    let ecr = EcrProxy::start().await;
    ensure_cert_manager_crds(&admin);
    create_opted_in(&client, &ns, "before", "123456789012/us-west-2").await;

    // Cluster-scoped names start with the release's, so this one is the test's own.
    let mut release = HelmRelease {
        helm,
        kubeconfig: admin.clone(),
        name: format!("kubeecr-{}", &ns[ns.len() - 8..]),
        namespace: release_ns.clone(),
        installed: true,
    };
    release
        .run(&[
            "install",
            &release.name.clone(),
            crate::chart::chart().to_str().unwrap(),
            "--set",
            &format!("namespaces={{{ns}}}"),
        ])
        .unwrap();
    let manifest = release
        .run(&["get", "manifest", &release.name.clone()])
        .unwrap();
    let docs: Vec<Value> = yaml_documents(&manifest)
        .into_iter()
        .filter(|d| !d.is_null())
        .collect();
    let roles: Vec<String> = docs
        .iter()
        .filter(|d| kind_of(d) == "Role")
        .map(|d| {
            format!(
                "{}/{}",
                d["metadata"]["namespace"].as_str().unwrap(),
                d["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        roles,
        [
            format!("{ns}/kubeecr"),
            format!("{release_ns}/kubeecr-leader-election")
        ],
        "Secrets in the served namespace only, the Lease in its own"
    );
    let cluster_scoped = [
        format!("mutatingwebhookconfiguration/{}", release.name),
        format!("validatingwebhookconfiguration/{}", release.name),
        format!("validatingadmissionpolicy/{}-metadata", release.name),
        format!("validatingadmissionpolicybinding/{}-metadata", release.name),
    ];
    for object in &cluster_scoped {
        kubectl(&admin, &["get", object], "").unwrap();
    }
    for grant in ["secrets", "events"] {
        let object = format!("clusterrole/{}-{grant}", release.name);
        assert!(
            kubectl(&admin, &["get", &object], "").is_err(),
            "no cluster-wide grant: {object}"
        );
    }

    let serve = serves_under_its_rbac(&cluster, &docs, &ecr, &release_ns).await;
    stops_cleanly_with_no_403(serve).await;

    release.uninstall().unwrap();
    for object in &cluster_scoped {
        let gone = kubectl(&admin, &["get", object], "").unwrap_err();
        assert!(gone.contains("NotFound"), "{object}: {gone}");
    }
    for namespace in [&ns, &release_ns] {
        let left = kubectl(
            &admin,
            &[
                "get",
                "deployment,service,role,rolebinding,certificate",
                "-n",
                namespace,
                "-o",
                "name",
            ],
            "",
        )
        .unwrap();
        assert_eq!(
            left.trim(),
            "",
            "helm uninstall left in {namespace}: {left}"
        );
    }
}
