//! The install as an operator uses it: every kustomization renders and matches the API
//! server's schemas, the Deployment and the CronJob pass only what kubeecr accepts, the pods
//! are locked down, the RBAC is least privilege, a namespace change moves every reference,
//! and `kubeecr serve` runs under exactly the manifests' RBAC with no 403, skipping its own
//! webhook.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use kubeecr::cli::Cli;
use kubeecr_testkit::cluster::TestCluster;
use kubeecr_testkit::moto::EcrProxy;
use kubeecr_testkit::yaml::yaml_documents;
use serde_json::{Value, json};

use crate::common::*;
use crate::on_both_backends;
use crate::serve_process::{Ports, ServeProcess, eventually, free_port, has_password, secret_when};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every directory with a kustomization, except `certs/`, which needs generated files, and
/// components, which render only inside another (scripts/check-manifests.sh enables each).
fn kustomizations() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let file = dir.join("kustomization.yaml");
        if std::fs::read_to_string(&file).is_ok_and(|k| !k.contains("\nkind: Component")) {
            out.push(dir.to_path_buf());
        }
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            }
        }
    }
    let mut out = Vec::new();
    for top in ["manifests", "webhook-config", "examples"] {
        walk(&repo().join(top), &mut out);
    }
    out.sort();
    out
}

/// Set by scripts/test.sh: a missing tool fails the test instead of skipping it.
const REQUIRE_TOOLS_ENV: &str = "KUBEECR_TEST_REQUIRE_TOOLS";

/// Whether a tool the test needs is there; without it the test is skipped, or fails under
/// scripts/test.sh.
fn tool_present(found: bool, what: &str) -> bool {
    if !found {
        assert!(
            std::env::var_os(REQUIRE_TOOLS_ENV).is_none(),
            "{what} is missing, and {REQUIRE_TOOLS_ENV} is set"
        );
        println!("SKIPPED: {what} is missing");
    }
    found
}

fn has_kubectl() -> bool {
    let found = std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    tool_present(found, "kubectl")
}

/// `kubectl kustomize DIR`, as JSON documents.
fn render(dir: &Path) -> Vec<Value> {
    let out = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("kubectl");
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    yaml_documents(&String::from_utf8(out.stdout).unwrap())
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(docs, kind);
    assert_eq!(found.len(), 1, "one {kind}, found {}", found.len());
    found[0]
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The pod template of a Deployment or a CronJob.
fn pod_spec(workload: &Value) -> &Value {
    match workload["kind"].as_str() {
        Some("CronJob") => &workload["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        _ => &workload["spec"]["template"]["spec"],
    }
}

fn container(workload: &Value) -> &Value {
    let containers = pod_spec(workload)["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    &containers[0]
}

fn args(workload: &Value) -> Vec<String> {
    strs(&container(workload)["args"])
        .into_iter()
        .map(str::to_string)
        .collect()
}

/// The environment variables `subcommand --help` documents: its flags' and the global ones,
/// and the AWS SDK's that its help names.
fn env_names(subcommand: &str) -> BTreeSet<String> {
    let root = Cli::command();
    let sub = root.find_subcommand(subcommand).expect("subcommand");
    let mut names: BTreeSet<String> = root
        .get_arguments()
        .chain(sub.get_arguments())
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect();
    let help = sub
        .get_after_help()
        .map(|h| h.to_string())
        .unwrap_or_default();
    names.extend(
        help.split(|c: char| !(c.is_ascii_uppercase() || c == '_'))
            .filter(|w| w.starts_with("AWS_"))
            .map(str::to_string),
    );
    names
}

/// `scripts/check-manifests.sh`: every kustomization (and component) renders, and every
/// object matches the OpenAPI schemas of kube-apiserver v1.36 and cert-manager's CRDs, with
/// unknown fields refused; the validator first proves it catches planted mistakes.
#[test]
fn every_kustomization_renders_and_matches_the_api_server_schemas() {
    if !has_kubectl() {
        return;
    }
    let venv = std::env::var("KUBEECR_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join(".venv"));
    let venv = if venv.is_absolute() {
        venv
    } else {
        repo().join(venv)
    };
    let what = format!(
        "the virtualenv with jsonschema at {} (scripts/test.sh makes it)",
        venv.display()
    );
    if !tool_present(venv.join("bin/python").exists(), &what) {
        return;
    }
    let out = std::process::Command::new(repo().join("scripts/check-manifests.sh"))
        .env("KUBEECR_VENV", &venv)
        .env("KUBEECR_BIN", env!("CARGO_BIN_EXE_kubeecr"))
        .output()
        .expect("scripts/check-manifests.sh");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("checks ok"), "{report}");
    println!("{}", report.lines().last().unwrap_or_default());
}

/// `certs/kustomization.yaml` in a scratch directory, beside files `kubeecr certs` wrote.
fn certs_overlay() -> PathBuf {
    let dir = scratch();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kubeecr"))
        .args(["certs", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kustomization = std::fs::read_to_string(repo().join("certs/kustomization.yaml"))
        .unwrap()
        .replace("../manifests", &format!("{FROM_SCRATCH}/manifests"));
    std::fs::write(dir.join("kustomization.yaml"), kustomization).unwrap();
    dir
}

/// The repository seen from a `scratch()` directory: kustomize refuses absolute paths.
const FROM_SCRATCH: &str = "../../..";

/// A new directory under target/kustomize-tests/.
fn scratch() -> PathBuf {
    let id = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let dir = repo().join("target/kustomize-tests").join(id);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn without_cert_manager_the_generated_ca_reaches_both_webhooks() {
    if !has_kubectl() {
        return;
    }
    let dir = certs_overlay();
    let docs = render(&dir);
    assert!(docs.iter().all(|d| d["apiVersion"] != "cert-manager.io/v1"));
    let ca = std::fs::read(dir.join("ca.crt")).unwrap();
    let bundle = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &ca);
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        let config = one(&docs, kind);
        assert!(config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].is_null());
        assert_eq!(
            config["webhooks"][0]["clientConfig"]["caBundle"],
            bundle.as_str()
        );
    }
    let tls = of_kind(&docs, "Secret");
    assert_eq!(tls.len(), 1, "only the serving pair: {tls:?}");
    assert_eq!(tls[0]["metadata"]["name"], "kubeecr-webhook-tls");
    assert_eq!(tls[0]["type"], "kubernetes.io/tls");
    assert!(
        of_kind(&docs, "ConfigMap").is_empty(),
        "the CA carrier stays local"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_deployment_and_the_cronjob_pass_only_what_kubeecr_accepts() {
    if !has_kubectl() {
        return;
    }
    let mut seen = BTreeSet::new();
    for dir in kustomizations() {
        for doc in render(&dir) {
            let expected = match doc["kind"].as_str() {
                Some("Deployment")
                    if container(&doc)["image"]
                        .as_str()
                        .unwrap()
                        .contains("kubeecr") =>
                {
                    "serve"
                }
                Some("CronJob") => "refresh",
                _ => continue,
            };
            let args = args(&doc);
            assert_eq!(
                args.first().map(String::as_str),
                Some(expected),
                "{}",
                dir.display()
            );
            let parsed =
                Cli::try_parse_from(std::iter::once("kubeecr".to_string()).chain(args.clone()));
            assert!(
                parsed.is_ok(),
                "{}: {args:?}: {}",
                dir.display(),
                parsed.unwrap_err()
            );
            let known = env_names(expected);
            for env in container(&doc)["env"].as_array().into_iter().flatten() {
                let name = env["name"].as_str().unwrap();
                assert!(
                    known.contains(name),
                    "{}: {name} is not read by kubeecr {expected}",
                    dir.display()
                );
            }
            seen.insert(expected);
        }
    }
    assert_eq!(seen, BTreeSet::from(["refresh", "serve"]));
    // The check itself fails on a flag kubeecr does not have.
    assert!(Cli::try_parse_from(["kubeecr", "serve", "--shutdown-dely=10s"]).is_err());
}

#[test]
fn pods_are_locked_down_and_sized() {
    if !has_kubectl() {
        return;
    }
    let serve = render(&repo().join("manifests"));
    let cron = render(&repo().join("manifests/cronjob"));
    for workload in [one(&serve, "Deployment"), one(&cron, "CronJob")] {
        let pod = pod_spec(workload);
        let c = container(workload);
        let kind = workload["kind"].as_str().unwrap();
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{kind}");
        assert!(
            pod["securityContext"]["runAsUser"].as_u64().unwrap() > 0,
            "{kind}"
        );
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{kind}"
        );
        assert_eq!(pod["serviceAccountName"], "kubeecr", "{kind}");
        let sc = &c["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{kind}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{kind}");
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{kind}");
        for bound in ["requests", "limits"] {
            assert!(
                c["resources"][bound]["memory"].is_string(),
                "{kind} {bound}"
            );
        }
        assert!(
            c["envFrom"].is_null(),
            "{kind}: no envFrom, which would let a Secret set any variable"
        );
        let from_secret: BTreeSet<&str> = c["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| !e["valueFrom"]["secretKeyRef"].is_null())
            .map(|e| {
                let key = &e["valueFrom"]["secretKeyRef"];
                assert_eq!(key["name"], "kubeecr-aws-secrets", "{kind}");
                assert_eq!(
                    key["optional"], true,
                    "{kind}: IRSA users have no such Secret"
                );
                e["name"].as_str().unwrap()
            })
            .collect();
        assert_eq!(
            from_secret,
            BTreeSet::from([
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
                "AWS_SESSION_TOKEN"
            ]),
            "{kind}"
        );
    }

    let deployment = one(&serve, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = pod_spec(deployment);
    assert!(!pod["affinity"]["podAntiAffinity"].is_null());
    let pdb = one(&serve, "PodDisruptionBudget");
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);

    // Probes on the admin port, which is where kubeecr serves them by default.
    let c = container(deployment);
    let port = |name: &str| {
        c["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("port {name}"))["containerPort"]
            .as_u64()
            .unwrap()
    };
    let defaults = Cli::try_parse_from(["kubeecr", "serve"]).unwrap();
    let kubeecr::cli::Command::Serve(defaults) = defaults.command else {
        unreachable!()
    };
    assert_eq!(
        port("admin"),
        u64::from(defaults.service.admin_listen.port())
    );
    assert_eq!(port("https"), u64::from(defaults.webhook.listen.port()));
    for (probe, path) in [("livenessProbe", "/livez"), ("readinessProbe", "/readyz")] {
        assert_eq!(c[probe]["httpGet"]["path"], path);
        assert_eq!(c[probe]["httpGet"]["port"], "admin");
    }
    // The serving certificate is mounted where kubeecr reads it, from cert-manager's Secret.
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "tls")
        .unwrap();
    assert_eq!(
        Path::new(mount["mountPath"].as_str().unwrap()),
        defaults.webhook.tls_cert_file.parent().unwrap()
    );
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "tls")
        .unwrap();
    let certificate = of_kind(&serve, "Certificate")
        .into_iter()
        .find(|c| c["spec"]["isCA"] != true)
        .unwrap();
    assert_eq!(
        volume["secret"]["secretName"],
        certificate["spec"]["secretName"]
    );
    // The pod is not killed before it has drained and released its Lease.
    let parsed =
        Cli::try_parse_from(std::iter::once("kubeecr".to_string()).chain(args(deployment)))
            .unwrap();
    let kubeecr::cli::Command::Serve(serve_args) = parsed.command else {
        unreachable!()
    };
    let delay = serve_args.service.shutdown_delay;
    assert!(
        delay >= Duration::from_secs(5),
        "endpoints need time to drop the pod"
    );
    let grace = Duration::from_secs(pod["terminationGracePeriodSeconds"].as_u64().unwrap());
    assert!(
        grace >= delay + kubeecr::service::serve::STOP_BOUND,
        "grace {grace:?} < delay {delay:?} + {:?}",
        kubeecr::service::serve::STOP_BOUND
    );
}

/// The rules of a (Cluster)Role, as (group, resource, verbs).
fn rules(role: &Value) -> Vec<(String, String, BTreeSet<String>)> {
    let mut out = Vec::new();
    for rule in role["rules"].as_array().unwrap() {
        for group in strs(&rule["apiGroups"]) {
            for resource in strs(&rule["resources"]) {
                out.push((
                    group.to_string(),
                    resource.to_string(),
                    strs(&rule["verbs"])
                        .into_iter()
                        .map(str::to_string)
                        .collect(),
                ));
            }
        }
    }
    out
}

fn verbs(docs: &[Value], group: &str, resource: &str) -> BTreeSet<String> {
    docs.iter()
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
        .flat_map(rules)
        .filter(|(g, r, _)| g == group && r == resource)
        .flat_map(|(_, _, v)| v)
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn rbac_is_least_privilege_in_both_forms() {
    if !has_kubectl() {
        return;
    }
    let serve = render(&repo().join("manifests"));
    assert_eq!(
        verbs(&serve, "", "secrets"),
        set(&["get", "list", "watch", "patch"])
    );
    assert_eq!(
        verbs(&serve, "events.k8s.io", "events"),
        set(&["create", "patch"])
    );
    assert_eq!(
        verbs(&serve, "coordination.k8s.io", "leases"),
        set(&["create", "get", "update"])
    );
    let role = one(&serve, "Role");
    assert_eq!(
        role["metadata"]["namespace"], "kubeecr",
        "Leases in kubeecr's namespace only"
    );
    let every: BTreeSet<_> = serve
        .iter()
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
        .flat_map(rules)
        .map(|(g, r, _)| format!("{g}/{r}"))
        .collect();
    assert_eq!(
        every,
        set(&[
            "/secrets",
            "events.k8s.io/events",
            "coordination.k8s.io/leases"
        ])
    );

    let cron = render(&repo().join("manifests/cronjob"));
    assert_eq!(
        verbs(&cron, "", "secrets"),
        set(&["get", "list", "patch"]),
        "a pass does not watch"
    );
    let kinds: BTreeSet<&str> = cron.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "ClusterRole",
            "ClusterRoleBinding",
            "CronJob",
            "Namespace",
            "ServiceAccount"
        ]),
        "the CronJob form has no webhook, Deployment, Service, Lease or cert-manager object"
    );
}

/// Where every namespace-dependent reference of a serve install points.
fn assert_consistent(docs: &[Value], namespace: &str) {
    let sa = one(docs, "ServiceAccount");
    assert_eq!(sa["metadata"]["namespace"], namespace);
    let sa_user = format!(
        "system:serviceaccount:{namespace}:{}",
        sa["metadata"]["name"].as_str().unwrap()
    );
    let service = one(docs, "Service");
    assert_eq!(service["metadata"]["namespace"], namespace);
    let svc_name = service["metadata"]["name"].as_str().unwrap();
    let serving = of_kind(docs, "Certificate")
        .into_iter()
        .find(|c| c["spec"]["isCA"] != true)
        .unwrap();
    assert_eq!(serving["metadata"]["namespace"], namespace);
    assert!(
        strs(&serving["spec"]["dnsNames"])
            .contains(&format!("{svc_name}.{namespace}.svc").as_str()),
        "{:#}",
        serving["spec"]["dnsNames"]
    );
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        let config = one(docs, kind);
        assert_eq!(
            config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            format!(
                "{namespace}/{}",
                serving["metadata"]["name"].as_str().unwrap()
            ),
            "{kind}"
        );
        for w in config["webhooks"].as_array().unwrap() {
            assert_eq!(
                w["clientConfig"]["service"]["namespace"], namespace,
                "{kind}"
            );
            assert_eq!(w["clientConfig"]["service"]["name"], svc_name, "{kind}");
            let skip = w["matchConditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == "not-kubeecr")
                .unwrap_or_else(|| panic!("{kind}: kubeecr's own writes skip the webhook"));
            assert_eq!(
                skip["expression"],
                format!("request.userInfo.username != '{sa_user}'"),
                "{kind}"
            );
            assert!(
                strs(&w["namespaceSelector"]["matchExpressions"][0]["values"]).contains(&namespace),
                "{kind}: the webhook leaves its own namespace out"
            );
        }
    }
    for binding in docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRoleBinding" || d["kind"] == "RoleBinding")
    {
        for subject in binding["subjects"].as_array().unwrap() {
            assert_eq!(
                subject["namespace"], namespace,
                "{}",
                binding["metadata"]["name"]
            );
            assert_eq!(subject["name"], sa["metadata"]["name"]);
        }
    }
    assert_eq!(one(docs, "Role")["metadata"]["namespace"], namespace);
    assert_eq!(one(docs, "Deployment")["metadata"]["namespace"], namespace);
}

/// `examples/installation/` copied with its namespace line changed, as an operator does.
fn example_in(namespace: &str) -> PathBuf {
    let example =
        std::fs::read_to_string(repo().join("examples/installation/kustomization.yaml")).unwrap();
    assert!(
        example.contains("\nnamespace: kubeecr\n"),
        "one namespace line to change"
    );
    let copy = example
        .replace(
            "\nnamespace: kubeecr\n",
            &format!("\nnamespace: {namespace}\n"),
        )
        .replace("../../manifests", &format!("{FROM_SCRATCH}/manifests"));
    let dir = scratch();
    std::fs::write(dir.join("kustomization.yaml"), copy).unwrap();
    dir
}

#[test]
fn a_namespace_change_moves_every_reference() {
    if !has_kubectl() {
        return;
    }
    assert_consistent(&render(&repo().join("manifests")), "kubeecr");
    assert_consistent(&render(&repo().join("examples/installation")), "kubeecr");
    let dir = example_in("platform-ecr");
    assert_consistent(&render(&dir), "platform-ecr");
    std::fs::remove_dir_all(dir).unwrap();
}

/// `kubectl` with `kubeconfig`, `stdin` piped in; stdout, or the failure.
fn kubectl(kubeconfig: &Path, args: &[&str], stdin: &str) -> Result<String, String> {
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

fn list_of(docs: &[&Value]) -> String {
    json!({"apiVersion": "v1", "kind": "List", "items": docs}).to_string()
}

/// Cluster-scoped objects a real-cluster test created, deleted when it ends, even on panic.
struct ClusterScoped {
    kubeconfig: PathBuf,
    objects: Vec<String>,
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

/// cert-manager's CRDs from tests/fixtures, when the cluster lacks them; removed afterwards.
fn ensure_cert_manager_crds(admin: &Path, created: &mut ClusterScoped) {
    if kubectl(admin, &["get", "crd", "certificates.cert-manager.io"], "").is_ok() {
        return;
    }
    let dir = repo().join("tests/fixtures/crds/cert-manager");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let crd = &yaml_documents(&std::fs::read_to_string(&path).unwrap())[0];
            created
                .objects
                .push(format!("crd/{}", crd["metadata"]["name"].as_str().unwrap()));
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
}

/// A kubeconfig for the manifests' ServiceAccount: a TokenRequest token on a real cluster,
/// impersonation on the double (which trusts every client and checks no RBAC).
fn service_account_kubeconfig(cluster: &TestCluster, sa: &str, dir: &Path) -> PathBuf {
    let ns = cluster.ns();
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

/// Installs what the manifests install that a bare API server can hold (the ServiceAccount
/// and its RBAC, cluster-scoped names made unique), checks the rest with a server-side dry
/// run, registers the webhooks at an address where nothing listens, then runs
/// `kubeecr serve` with the Deployment's own args and env as that ServiceAccount.
async fn installed_kubeecr_runs_under_its_rbac_and_skips_its_own_webhook(cluster: TestCluster) {
    let ns = cluster.ns().to_string();
    let admin = cluster.kubeconfig().to_path_buf();
    let client = cluster.client();
    let ecr = EcrProxy::start().await;
    let scratch_dir = example_in(&ns);
    let mut docs = render(&scratch_dir);
    std::fs::remove_dir_all(&scratch_dir).unwrap();
    assert_consistent(&docs, &ns);
    let mut created = ClusterScoped {
        kubeconfig: admin.clone(),
        objects: Vec::new(),
    };
    // Unique cluster-scoped names, so that a real cluster's own kubeecr is left alone.
    for doc in &mut docs {
        let kind = doc["kind"].as_str().unwrap().to_string();
        if matches!(
            kind.as_str(),
            "ClusterRole"
                | "ClusterRoleBinding"
                | "MutatingWebhookConfiguration"
                | "ValidatingWebhookConfiguration"
        ) {
            let name = format!("{}-{ns}", doc["metadata"]["name"].as_str().unwrap());
            doc["metadata"]["name"] = json!(name);
        }
        if kind == "ClusterRoleBinding" {
            let role = format!("{}-{ns}", doc["roleRef"]["name"].as_str().unwrap());
            doc["roleRef"]["name"] = json!(role);
        }
    }
    let sa = one(&docs, "ServiceAccount")["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let webhook_docs: Vec<Value> = docs
        .iter()
        .filter(|d| {
            d["kind"]
                .as_str()
                .unwrap()
                .ends_with("WebhookConfiguration")
        })
        .cloned()
        .collect();

    if cluster.is_real() {
        let rbac: Vec<&Value> = docs
            .iter()
            .filter(|d| {
                matches!(
                    d["kind"].as_str().unwrap(),
                    "ServiceAccount"
                        | "ClusterRole"
                        | "ClusterRoleBinding"
                        | "Role"
                        | "RoleBinding"
                )
            })
            .collect();
        for doc in &rbac {
            if doc["metadata"]["namespace"].is_null() {
                created.objects.push(format!(
                    "{}/{}",
                    doc["kind"].as_str().unwrap().to_lowercase(),
                    doc["metadata"]["name"].as_str().unwrap()
                ));
            }
        }
        kubectl(&admin, &["apply", "-f", "-"], &list_of(&rbac)).unwrap();
        // What RBAC grants the ServiceAccount, cluster-wide (the serve run below is limited to
        // this namespace, since the cluster is shared with other tests).
        let who = format!("system:serviceaccount:{ns}:{sa}");
        let can = |verb: &str, resource: &str, scope: &[&str]| {
            let out = std::process::Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(&admin)
                .args(["auth", "can-i", verb, resource, "--as", &who])
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
        for verb in ["get", "list", "watch", "patch"] {
            assert!(
                can(verb, "secrets", &["--all-namespaces"]),
                "{verb} secrets"
            );
        }
        for verb in ["create", "update", "delete", "deletecollection"] {
            assert!(
                !can(verb, "secrets", &["--all-namespaces"]),
                "{verb} secrets is not granted"
            );
        }
        assert!(can("create", "events.events.k8s.io", &["-n", "default"]));
        assert!(can("patch", "events.events.k8s.io", &["-n", "default"]));
        assert!(can("update", "leases/kubeecr", &["-n", &ns]));
        assert!(
            !can("update", "leases/other", &["-n", &ns]),
            "only its own Lease"
        );
        assert!(
            !can("create", "leases", &["-n", "default"]),
            "Leases in its namespace only"
        );
        // Everything else is accepted by the API server (with cert-manager's CRDs); a dry
        // run, since nothing here can run the pods or cert-manager.
        ensure_cert_manager_crds(&admin, &mut created);
        let rest: Vec<&Value> = docs
            .iter()
            .filter(|d| !rbac.contains(d) && d["kind"] != "Namespace")
            .collect();
        assert!(rest.len() >= 9, "{}", rest.len());
        let applied = kubectl(
            &admin,
            &["apply", "--dry-run=server", "-f", "-"],
            &list_of(&rest),
        )
        .unwrap();
        assert_eq!(applied.lines().count(), rest.len(), "{applied}");
    }

    // An opted-in Secret made before the webhooks are registered.
    create_opted_in(&client, &ns, "before", "123456789012/us-west-2").await;

    // The webhooks, registered where nothing answers: failurePolicy Fail refuses every
    // other opted-in write from now on.
    let dead = format!("https://127.0.0.1:{}", free_port());
    let ca = kubeecr_testkit::tls::TestCa::new("unreachable-webhook");
    let mut webhook_objects = Vec::new();
    match cluster.double_server() {
        Some(double) => {
            // The install leaves its own namespace out, and here that is the test's.
            let yaml: String = webhook_docs
                .iter()
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
        }
        None => {
            let bundle =
                base64::Engine::encode(&base64::engine::general_purpose::STANDARD, ca.pem());
            let mut registered = Vec::new();
            for mut config in webhook_docs.clone() {
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
                let object = format!(
                    "{}/{}",
                    config["kind"].as_str().unwrap().to_lowercase(),
                    config["metadata"]["name"].as_str().unwrap()
                );
                created.objects.push(object.clone());
                webhook_objects.push(object);
                registered.push(config);
            }
            let refs: Vec<&Value> = registered.iter().collect();
            kubectl(&admin, &["apply", "-f", "-"], &list_of(&refs)).unwrap();
            // The API server picks up new webhook configurations within a moment.
            let blocked = eventually(Duration::from_secs(20), || async {
                let probe = secret(
                    "probe",
                    DOCKER_CONFIG_JSON,
                    &[(ANNOTATION, "123456789012/us-west-2")],
                    EMPTY,
                );
                let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
                    kube::Api::namespaced(client.clone(), &ns);
                match api.create(&Default::default(), &probe).await {
                    Ok(_) => {
                        let _ = api.delete("probe", &Default::default()).await;
                        None
                    }
                    Err(e) => Some(e.to_string()),
                }
            })
            .await;
            assert!(blocked.is_some(), "the webhooks never took effect");
        }
    }
    let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client.clone(), &ns);
    let refused = api
        .create(
            &Default::default(),
            &secret(
                "refused",
                DOCKER_CONFIG_JSON,
                &[(ANNOTATION, "123456789012/us-west-2")],
                EMPTY,
            ),
        )
        .await
        .expect_err("an administrator's opted-in write goes through the (down) webhook");
    assert!(
        refused.to_string().contains("failed calling webhook"),
        "{refused}"
    );

    // kubeecr serve, as the Deployment runs it, as the ServiceAccount.
    let deployment = one(&docs, "Deployment");
    let dir = tempfile::tempdir().unwrap();
    let sa_kubeconfig = service_account_kubeconfig(&cluster, &sa, dir.path());
    let ports = Ports::new();
    let args = args(deployment);
    // What this test sets by environment must not be pinned by the Deployment's flags.
    for local in [
        "--listen",
        "--admin-listen",
        "--tls-cert-file",
        "--tls-key-file",
        "--kubeconfig",
        "--ecr-endpoint",
        "--namespaces",
    ] {
        assert!(
            !args.iter().any(|a| a.starts_with(local)),
            "{local} in {args:?}"
        );
    }
    let identity = format!("kubeecr-{}", &ns[ns.len() - 5..]);
    let mut cmd = kubeecr_command(&args[0]);
    cmd.args(&args[1..]);
    for env in container(deployment)["env"].as_array().unwrap() {
        if !env["valueFrom"]["secretKeyRef"].is_null() {
            // kubeecr-aws-secrets: the test's own static keys stand in for it.
            continue;
        }
        let value = match env["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            Some("metadata.name") => identity.clone(),
            Some("metadata.namespace") => ns.clone(),
            Some(other) => panic!("unexpected fieldRef {other}"),
            None => env["value"].as_str().unwrap().to_string(),
        };
        cmd.env(env["name"].as_str().unwrap(), value);
    }
    cmd.env("KUBEECR_KUBECONFIG", &sa_kubeconfig)
        .env("KUBEECR_LISTEN", format!("127.0.0.1:{}", ports.webhook))
        .env("KUBEECR_ADMIN_LISTEN", format!("127.0.0.1:{}", ports.admin))
        .env("KUBEECR_TLS_CERT_FILE", ports.mount.files().cert)
        .env("KUBEECR_TLS_KEY_FILE", ports.mount.files().key)
        .env("KUBEECR_ECR_ENDPOINT", ecr.url())
        // The cluster is shared with other tests: this namespace only.
        .env("KUBEECR_NAMESPACES", &ns);
    let mut serve = ServeProcess::launch(cmd, ports);
    serve.wait_ready().await;
    assert!(
        serve.leads_within(Duration::from_secs(30)).await,
        "{}",
        serve.logs()
    );
    let host = "123456789012.dkr.ecr.us-west-2.amazonaws.com";
    let filled = secret_when(&cluster, "before", Duration::from_secs(30), |s| {
        has_password(s, host)
    })
    .await;
    assert!(
        filled.is_some(),
        "serve filled the Secret as its ServiceAccount\n{}",
        serve.logs()
    );

    // Its Lease, and an Event, written under the manifests' RBAC.
    let lease: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(client.clone(), &ns);
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
    let refresh = |kubeconfig: PathBuf| {
        let ecr = ecr.url();
        let ns = ns.clone();
        async move {
            // A new expiry (to the second) makes the forced refresh a real write.
            tokio::time::sleep(Duration::from_millis(1100)).await;
            kubeecr_command("refresh")
                .arg("--kubeconfig")
                .arg(kubeconfig)
                .args(["--namespace", &ns, "--ecr-endpoint", &ecr, "--force"])
                .output()
                .await
                .unwrap()
        }
    };
    let before = rv(&get(&client, &ns, "before").await);
    let own = refresh(sa_kubeconfig.clone()).await;
    let stdout = String::from_utf8_lossy(&own.stdout);
    assert!(
        own.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&own.stderr)
    );
    assert!(stdout.contains("failed 0"), "{stdout}");
    assert_ne!(
        rv(&get(&client, &ns, "before").await),
        before,
        "written with the webhook down"
    );
    let other = refresh(admin.clone()).await;
    let stdout = String::from_utf8_lossy(&other.stdout);
    assert_eq!(other.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("failed calling webhook"), "{stdout}");

    // With the webhooks gone, a Secret created now is filled by the running serve.
    match cluster.double_server() {
        Some(double) => double.webhooks().clear(),
        None => {
            let mut args = vec!["delete", "--wait=true"];
            args.extend(webhook_objects.iter().map(String::as_str));
            kubectl(&admin, &args, "").unwrap();
        }
    }
    let created_after = eventually(Duration::from_secs(20), || async {
        let after = secret(
            "after",
            DOCKER_CONFIG_JSON,
            &[(ANNOTATION, "123456789012/us-west-2")],
            EMPTY,
        );
        api.create(&Default::default(), &after).await.ok()
    })
    .await;
    assert!(created_after.is_some(), "the webhooks were never removed");
    let filled = secret_when(&cluster, "after", Duration::from_secs(30), |s| {
        has_password(s, host)
    })
    .await;
    assert!(
        filled.is_some(),
        "serve fills a new Secret\n{}",
        serve.logs()
    );

    // It stops cleanly, releasing its Lease: no 403 anywhere.
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
    drop(created);
}
on_both_backends!(installed_kubeecr_runs_under_its_rbac_and_skips_its_own_webhook);
