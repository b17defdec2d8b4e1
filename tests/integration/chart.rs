//! The Helm chart (`charts/kubeecr/`), with real Helm v4 (scripts/test.sh unpacks it into the
//! virtualenv): with default values it renders what `manifests/` installs, object by object;
//! every variant matches the v1.36 schemas; each value means what `values.yaml` says; bad values
//! are refused with the fix. `install_scenario.rs` installs it on the real kube-apiserver.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;
use kubeecr::cmd::Cli;
use kubeecr_testkit::yaml::yaml_documents;
use serde_json::{Value, json};

use crate::install::{
    argv, container, has_kubectl, of_kind, one, parse_serve, render, repo, scratch, tool_present,
};

/// Helm: `KUBEECR_HELM`, else the virtualenv's; `None` (or a failure under scripts/test.sh)
/// when missing.
pub fn helm() -> Option<PathBuf> {
    let path = match std::env::var_os("KUBEECR_HELM") {
        Some(path) => PathBuf::from(path),
        None => {
            let venv = std::env::var("KUBEECR_VENV").unwrap_or_else(|_| ".venv".into());
            let venv = PathBuf::from(venv);
            let venv = if venv.is_absolute() {
                venv
            } else {
                repo().join(venv)
            };
            venv.join("bin/helm")
        }
    };
    let found = Command::new(&path)
        .args(["version", "--short"])
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.starts_with(b"v4."));
    tool_present(found, "helm v4 (scripts/test.sh unpacks it into .venv)").then_some(path)
}

pub fn chart() -> PathBuf {
    repo().join("charts/kubeecr")
}

/// `helm template RELEASE charts/kubeecr -n NS ARGS`: the objects, or Helm's message.
pub fn template(helm: &Path, release: &str, ns: &str, args: &[&str]) -> Result<Vec<Value>, String> {
    let out = Command::new(helm)
        .arg("template")
        .arg(release)
        .arg(chart())
        .args(["--namespace", ns])
        .args(args)
        .output()
        .expect("helm");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(yaml_documents(&String::from_utf8_lossy(&out.stdout))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect())
}

/// Kinds without a namespace: kustomize's namespace transformer sets one on the admission
/// policy kinds all the same (it does not know them), which the API server ignores.
const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
];

type Key = (String, String, String);

fn by_key(docs: &[Value]) -> BTreeMap<Key, Value> {
    docs.iter()
        .map(|d| {
            let kind = d["kind"].as_str().unwrap().to_string();
            let mut d = d.clone();
            if CLUSTER_SCOPED.contains(&kind.as_str()) {
                d["metadata"].as_object_mut().unwrap().remove("namespace");
            }
            let ns = d["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let name = d["metadata"]["name"].as_str().unwrap().to_string();
            ((kind, ns, name), d)
        })
        .collect()
}

/// The chart with `args` and `kubectl kustomize DIR` give the same objects, the Namespace
/// aside (Helm creates it: `--create-namespace`).
fn assert_same_objects(helm: &Path, dir: &Path, args: &[&str]) {
    let kustomized = by_key(&render(dir));
    let charted = by_key(&template(helm, "kubeecr", "kubeecr", args).unwrap());
    let namespace: Key = ("Namespace".into(), String::new(), "kubeecr".into());
    assert!(kustomized.contains_key(&namespace));
    let expected: Vec<&Key> = kustomized.keys().filter(|k| **k != namespace).collect();
    assert_eq!(
        charted.keys().collect::<Vec<_>>(),
        expected,
        "{}: the same objects",
        dir.display()
    );
    for (key, object) in &charted {
        assert_eq!(
            object,
            &kustomized[key],
            "{key:?} differs from {}",
            dir.display()
        );
    }
}

/// With default values the chart installs exactly what `manifests/` does, and with
/// `mode=cronjob` what `manifests/cronjob/` does: compared object by object, so that the two
/// cannot drift.
#[test]
fn the_chart_renders_what_the_manifests_install() {
    let Some(helm) = helm() else { return };
    if !has_kubectl() {
        return;
    }
    assert_same_objects(&helm, &repo().join("manifests"), &[]);
    assert_same_objects(
        &helm,
        &repo().join("manifests/cronjob"),
        &["--set", "mode=cronjob"],
    );
}

/// A CA certificate's PEM, base64 as `tls.caBundle` takes it.
fn ca_bundle() -> String {
    let pem = kubeecr_testkit::tls::TestCa::new("chart-test").pem();
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, pem)
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Values that change what is rendered, each variant checked below.
fn variants() -> Vec<(&'static str, Vec<String>)> {
    let bundle = format!("tls.caBundle={}", ca_bundle());
    let list: Vec<(&'static str, Vec<&str>)> = vec![
        ("defaults", vec![]),
        ("cronjob", vec!["--set", "mode=cronjob"]),
        (
            "teams",
            vec![
                "--set",
                "namespaces={team-a,team-b}",
                "--set",
                "rules.allowedRoleArns={team-a=arn:aws:iam::111111111111:role/kubeecr-team-a}",
                "--set",
                "rules.allowedRegistries={team-a=111111111111/*,team-b=222222222222/*}",
                "--set",
                "rules.ownIdentityNamespaces={none}",
                "--set",
                "admissionFill=false",
            ],
        ),
        (
            "cronjob for teams",
            vec![
                "--set",
                "mode=cronjob",
                "--set",
                "namespaces={team-a}",
                "--set",
                "rules.allowedRegistries={team-a=111111111111/*}",
            ],
        ),
        (
            "locked down",
            vec![
                "--set",
                "apiServerAuth.issueClientCertificate=true",
                "--set",
                "apiServerAuth.requireClientCertificate=true",
                "--set",
                "networkPolicy.enabled=true",
                "--set",
                "networkPolicy.apiServerCIDRs={10.0.0.0/16,fd00::/64}",
                "--set",
                "aws.irsaRoleArn=arn:aws:iam::111122223333:role/kubeecr",
                "--set",
                "image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "--set",
                "replicas=3",
            ],
        ),
        (
            "monitoring",
            vec![
                "--set",
                "monitoring.serviceMonitor.enabled=true",
                "--set",
                "monitoring.serviceMonitor.labels.release=prometheus",
                "--set",
                "monitoring.prometheusRule.enabled=true",
                "--set",
                "monitoring.grafanaDashboard.enabled=true",
            ],
        ),
        (
            "podmonitor",
            vec!["--set", "monitoring.podMonitor.enabled=true"],
        ),
        (
            "cronjob alerts",
            vec![
                "--set",
                "mode=cronjob",
                "--set",
                "monitoring.prometheusRule.enabled=true",
            ],
        ),
        (
            "without cert-manager",
            vec!["--set", "tls.certManager=false", "--set", &bundle],
        ),
    ];
    list.into_iter()
        .map(|(name, args)| (name, args.into_iter().map(String::from).collect()))
        .collect()
}

/// `helm lint --strict` passes, and every variant renders objects that match kube-apiserver
/// v1.36's schemas and cert-manager's CRDs, strictly (the manifests' own validator).
#[test]
fn every_chart_variant_lints_and_matches_the_api_server_schemas() {
    let Some(helm) = helm() else { return };
    let lint = Command::new(&helm)
        .args(["lint", "--strict"])
        .arg(chart())
        .output()
        .unwrap();
    assert!(
        lint.status.success(),
        "{}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    let venv = std::env::var("KUBEECR_VENV").unwrap_or_else(|_| ".venv".into());
    let python = repo().join(venv).join("bin/python");
    if !tool_present(
        python.exists(),
        "the virtualenv's python (scripts/test.sh makes it)",
    ) {
        return;
    }
    let dir = scratch();
    for (name, args) in variants() {
        let docs = template(&helm, "kubeecr", "kubeecr", &strs(&args))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let file = dir.join("rendered.json");
        let list = json!({"apiVersion": "v1", "kind": "List", "items": docs});
        std::fs::write(&file, list.to_string()).unwrap();
        let out = Command::new(&python)
            .arg(repo().join("scripts/lib/validate_manifests.py"))
            .arg(&file)
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}:\n{report}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            report.lines().filter(|l| l.starts_with("ok ")).count(),
            docs.len(),
            "{name}: every object checked\n{report}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

fn parse_refresh(argv: Vec<String>) -> kubeecr::cmd::RefreshCommand {
    let parsed = Cli::try_parse_from(std::iter::once("kubeecr".to_string()).chain(argv.clone()))
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    match parsed.command {
        kubeecr::cmd::Command::Refresh(refresh) => *refresh,
        _ => panic!("{argv:?} is not refresh"),
    }
}

fn names(docs: &[Value], kind: &str) -> Vec<String> {
    of_kind(docs, kind)
        .iter()
        .map(|d| {
            let ns = d["metadata"]["namespace"].as_str().unwrap_or("");
            format!("{ns}/{}", d["metadata"]["name"].as_str().unwrap())
        })
        .collect()
}

/// Each value means what values.yaml says, read back the way kubeecr and the API server read
/// the objects: the flags by kubeecr's own CLI, the RBAC, the image, the certificates.
#[test]
fn chart_values_mean_what_they_say() {
    let Some(helm) = helm() else { return };
    let render = |args: &[String]| template(&helm, "kubeecr", "kubeecr", &strs(args)).unwrap();
    let all: BTreeMap<&str, Vec<String>> = variants().into_iter().collect();

    // Teams: Roles in the served namespaces instead of ClusterRoles, and the rules as flags.
    let docs = render(&all["teams"]);
    assert!(
        of_kind(&docs, "ClusterRole").is_empty(),
        "no cluster-wide grant"
    );
    assert_eq!(names(&docs, "Role").len(), 3, "{:?}", names(&docs, "Role"));
    for ns in ["team-a", "team-b"] {
        let role = of_kind(&docs, "Role")
            .into_iter()
            .find(|r| r["metadata"]["namespace"] == ns)
            .expect("a Role in each served namespace");
        assert_eq!(
            role["rules"][0]["verbs"],
            json!(["get", "list", "watch", "patch"])
        );
        assert_eq!(role["rules"][1]["resources"], json!(["events"]));
    }
    // The webhooks and the label policy reach the served namespaces only.
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        let selector = &one(&docs, kind)["webhooks"][0]["namespaceSelector"]["matchExpressions"];
        assert_eq!(selector[0]["operator"], "NotIn");
        assert_eq!(selector[0]["values"], json!(["kube-system", "kubeecr"]));
        let served = json!({"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a", "team-b"]});
        assert_eq!(selector[1], served);
    }
    let binding = one(&docs, "ValidatingAdmissionPolicyBinding");
    assert_eq!(
        binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"][0]["values"],
        json!(["team-a", "team-b"])
    );
    let settings = parse_serve(argv(&docs, one(&docs, "Deployment")))
        .settings()
        .expect("the chart's flags are valid");
    assert!(!settings.webhook.admission_fill);
    let policy = settings.policy;
    assert_eq!(policy.namespaces, ["team-a", "team-b"]);
    let role_a = "arn:aws:iam::111111111111:role/kubeecr-team-a";
    assert!(policy.allowed_role_arns.allows("team-a", role_a));
    assert!(!policy.allowed_role_arns.allows("team-b", role_a));
    assert!(
        policy
            .allowed_registries
            .allows("team-b", "222222222222/eu-west-1")
    );
    assert!(
        !policy
            .allowed_registries
            .allows("team-b", "111111111111/eu-west-1")
    );
    assert!(!policy.own_identity.contains("team-a"));

    // The CronJob form reads the same rules, with Roles for a pass (no watch).
    let docs = render(&all["cronjob for teams"]);
    assert!(
        of_kind(&docs, "Deployment").is_empty()
            && of_kind(&docs, "MutatingWebhookConfiguration").is_empty()
    );
    let refresh = parse_refresh(argv(&docs, one(&docs, "CronJob")));
    let policy = refresh.refresher.policy.policy().expect("valid");
    assert_eq!(policy.namespaces, ["team-a"]);
    assert!(
        !policy
            .allowed_registries
            .allows("team-a", "222222222222/eu-west-1")
    );
    let role = one(&docs, "Role");
    assert_eq!(role["metadata"]["namespace"], "team-a");
    assert_eq!(role["rules"][0]["verbs"], json!(["get", "list", "patch"]));
    let env = &container(one(&docs, "CronJob"))["env"];
    assert_eq!(
        env[0],
        json!({"name": "KUBEECR_REFRESH_BEFORE", "value": "9h"})
    );

    // Locked down: the API server's client certificate, required; the ports fenced; IRSA;
    // the image pinned by digest.
    let docs = render(&all["locked down"]);
    let deployment = one(&docs, "Deployment");
    let settings = parse_serve(argv(&docs, deployment)).settings().unwrap();
    let ca = settings.webhook.tls.client_ca.expect("--client-ca-file");
    assert_eq!(ca, Path::new("/etc/kubeecr/tls/ca.crt"));
    assert_eq!(deployment["spec"]["replicas"], 3);
    let client = of_kind(&docs, "Certificate")
        .into_iter()
        .find(|c| c["metadata"]["name"] == "kubeecr-apiserver-client")
        .expect("a client certificate for the API server");
    assert_eq!(
        client["spec"]["usages"],
        json!(["client auth", "digital signature"])
    );
    assert_eq!(client["spec"]["issuerRef"]["name"], "kubeecr-ca");
    let policy = one(&docs, "NetworkPolicy");
    assert_eq!(
        policy["spec"]["ingress"][0]["from"],
        json!([{"ipBlock": {"cidr": "10.0.0.0/16"}}, {"ipBlock": {"cidr": "fd00::/64"}}])
    );
    assert_eq!(
        one(&docs, "ServiceAccount")["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::111122223333:role/kubeecr"
    );
    assert_eq!(
        container(deployment)["image"],
        "ghcr.io/deft/kubeecr:0.2.0@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    );

    // Without cert-manager: no Issuer or Certificate, and the given CA in both webhooks.
    let docs = render(&all["without cert-manager"]);
    let bundle = all["without cert-manager"][3]
        .strip_prefix("tls.caBundle=")
        .unwrap();
    assert!(of_kind(&docs, "Certificate").is_empty() && of_kind(&docs, "Issuer").is_empty());
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        let config = one(&docs, kind);
        assert!(
            config["metadata"]["annotations"].is_null(),
            "no cainjector annotation"
        );
        assert_eq!(config["webhooks"][0]["clientConfig"]["caBundle"], bundle);
    }

    // An excluded namespace gets no Role and no webhook; another tag drops the chart's digest;
    // one replica gets no PodDisruptionBudget that would let its only pod be drained.
    let set = |v: &[&str]| render(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    let docs = set(&[
        "--set",
        "namespaces={team-a,team-b}",
        "--set",
        "excludeNamespaces={team-b}",
    ]);
    assert_eq!(
        names(&docs, "Role"),
        ["team-a/kubeecr", "kubeecr/kubeecr-leader-election"]
    );
    let digest =
        "image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let docs = set(&["--set", digest, "--set", "image.tag=0.9.9"]);
    assert_eq!(
        container(one(&docs, "Deployment"))["image"],
        "ghcr.io/deft/kubeecr:0.9.9"
    );
    let docs = set(&["--set", "replicas=1"]);
    assert!(of_kind(&docs, "PodDisruptionBudget").is_empty());
    assert_eq!(one(&docs, "Deployment")["spec"]["replicas"], 1);

    // Another namespace moves every reference, as the kustomize overlay does.
    let docs = template(&helm, "kubeecr", "platform-ecr", &[]).unwrap();
    crate::install::assert_consistent(&docs, "platform-ecr");
}

/// Bad values are refused before anything is installed, each message naming the value and,
/// where the schema cannot, the fix.
#[test]
fn bad_values_are_refused_with_a_clear_message() {
    let Some(helm) = helm() else { return };
    let cases: &[(&[&str], &[&str])] = &[
        (&["--set", "replicas=0"], &["/replicas", "minimum"]),
        (
            &["--set", "mode=deployment"],
            &["/mode", "serve", "cronjob"],
        ),
        (
            &["--set", "image.digest=sha256:abc"],
            &["/image/digest", "sha256:abc"],
        ),
        (&["--set", "resplicas=2"], &["resplicas", "not allowed"]),
        (
            &["--set", "aws.irsaRoleArn=kubeecr"],
            &["/aws/irsaRoleArn", "kubeecr"],
        ),
        (
            &["--set", "rules.allowedRegistries={111111111111/*}"],
            &[
                "rules.allowedRegistries[0]",
                "\"111111111111/*\"",
                "team-a=111111111111/*",
            ],
        ),
        (
            &["--set", "rules.allowedRoleArns={team-a}"],
            &[
                "rules.allowedRoleArns[0]",
                "\"team-a\"",
                "team-a=arn:aws:iam::",
            ],
        ),
        (
            &["--set", "rules.ownIdentityNamespaces={none,team-a}"],
            &["rules.ownIdentityNamespaces", "none stands alone"],
        ),
        (
            &["--set", "tls.certManager=false"],
            &["tls.caBundle", "kubeecr certs"],
        ),
        (
            &[
                "--set",
                "monitoring.serviceMonitor.enabled=true",
                "--set",
                "monitoring.podMonitor.enabled=true",
            ],
            &["serviceMonitor or podMonitor, not both"],
        ),
        (
            &[
                "--set",
                "tls.certManager=false",
                "--set",
                "tls.caBundle=Q0EK",
            ],
            &["tls.caBundle", "PEM CA certificate"],
        ),
        (
            &["--set", "apiServerAuth.requireClientCertificate=true"],
            &["issueClientCertificate=true", "docs/security.md"],
        ),
        (
            &[
                "--set",
                "namespaces={team-a}",
                "--set",
                "excludeNamespaces={team-a}",
            ],
            &["namespaces", "serve none"],
        ),
        (
            &["--set-json", "priorityClassName=\"x\\nhostNetwork: true\""],
            &["/priorityClassName"],
        ),
        (
            &[
                "--set-json",
                "rules.ownIdentityNamespaces=[\"a\\n- --allowed-registries=*=*/*\"]",
            ],
            &["/rules/ownIdentityNamespaces/0"],
        ),
        (
            &[
                "--set-json",
                "extraArgs=[\"--log-level=debug\\n- --admission-fill=false\"]",
            ],
            &["/extraArgs/0"],
        ),
        (
            &["--set", "networkPolicy.enabled=true"],
            &[
                "networkPolicy.apiServerCIDRs",
                "kubectl get endpoints kubernetes",
            ],
        ),
        (
            &[
                "--set",
                "mode=cronjob",
                "--set",
                "networkPolicy.enabled=true",
                "--set",
                "networkPolicy.apiServerCIDRs={10.0.0.0/8}",
            ],
            &["mode=cronjob", "turn them off"],
        ),
    ];
    for (args, expected) in cases {
        let error = template(&helm, "kubeecr", "kubeecr", args)
            .err()
            .unwrap_or_else(|| panic!("{args:?} was accepted"));
        for part in *expected {
            assert!(error.contains(part), "{args:?}: {part:?} not in\n{error}");
        }
        let first = error.lines().filter(|l| !l.trim().is_empty()).count();
        assert!(first <= 4, "{args:?}: a short message\n{error}");
    }
}
