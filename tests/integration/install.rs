//! The install as an operator uses it, checked offline: every kustomization renders and
//! matches the API server's schemas, the Deployment and the CronJob pass only what kubeecr
//! accepts, the pods are locked down, the RBAC is least privilege, and a namespace change
//! moves every reference. `install_scenario.rs` runs the install against an API server.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use kubeecr::cmd::Cli;
use kubeecr_testkit::yaml::yaml_documents;
use serde_json::{Value, json};

pub fn repo() -> PathBuf {
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
pub fn tool_present(found: bool, what: &str) -> bool {
    if !found {
        assert!(
            std::env::var_os(REQUIRE_TOOLS_ENV).is_none(),
            "{what} is missing, and {REQUIRE_TOOLS_ENV} is set"
        );
        println!("SKIPPED: {what} is missing");
    }
    found
}

pub fn has_kubectl() -> bool {
    let found = std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    tool_present(found, "kubectl")
}

/// `kubectl kustomize DIR`, as JSON documents.
pub fn render(dir: &Path) -> Vec<Value> {
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

pub fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

pub fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
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

pub fn container(workload: &Value) -> &Value {
    let containers = pod_spec(workload)["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    &containers[0]
}

pub fn args(workload: &Value) -> Vec<String> {
    strs(&container(workload)["args"])
        .into_iter()
        .map(str::to_string)
        .collect()
}

/// The container's args, then each `KUBEECR_*` variable it sets (by value, or from a ConfigMap
/// among `docs`) as the flag that reads it, unless the args give that flag: what `kubeecr`
/// runs with, as argv after the program name.
pub fn argv(docs: &[Value], workload: &Value) -> Vec<String> {
    let given = args(workload);
    let subcommand = given.first().expect("a subcommand").clone();
    let root = Cli::command();
    let sub = root.find_subcommand(&subcommand).expect("subcommand");
    let flags: Vec<(String, String)> = root
        .get_arguments()
        .chain(sub.get_arguments())
        .filter_map(|a| {
            let env = a.get_env()?.to_string_lossy().into_owned();
            Some((env, format!("--{}", a.get_long()?)))
        })
        .collect();
    let mut argv = given.clone();
    for var in container(workload)["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().unwrap();
        if !name.starts_with("KUBEECR_") {
            continue;
        }
        let value = match (&var["value"], &var["valueFrom"]["configMapKeyRef"]) {
            (Value::String(v), _) => v.clone(),
            (_, Value::Object(r)) => {
                let map = of_kind(docs, "ConfigMap")
                    .into_iter()
                    .find(|m| m["metadata"]["name"] == r["name"])
                    .unwrap_or_else(|| panic!("{name}: ConfigMap {} is rendered", r["name"]));
                map["data"][r["key"].as_str().unwrap()]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name}: the ConfigMap has key {}", r["key"]))
                    .to_string()
            }
            _ => panic!("{name}: a value or a ConfigMap key"),
        };
        let (_, flag) = flags
            .iter()
            .find(|(env, _)| env == name)
            .unwrap_or_else(|| panic!("{name} is read by kubeecr {subcommand}"));
        if !given
            .iter()
            .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
        {
            argv.push(format!("{flag}={value}"));
        }
    }
    argv
}

/// How `kubeecr` parses `argv` (after the program name) as `serve`.
pub fn parse_serve<S: Into<String>>(
    argv: impl IntoIterator<Item = S>,
) -> kubeecr::cmd::ServeCommand {
    let argv: Vec<String> = argv.into_iter().map(Into::into).collect();
    let parsed = Cli::try_parse_from(std::iter::once("kubeecr".to_string()).chain(argv.clone()))
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    match parsed.command {
        kubeecr::cmd::Command::Serve(serve) => *serve,
        _ => panic!("{argv:?} is not serve"),
    }
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
pub fn scratch() -> PathBuf {
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
    let defaults = parse_serve(["serve"]);
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
    let serve_args = parse_serve(args(deployment));
    let delay = serve_args.service.shutdown_delay;
    assert!(
        delay >= Duration::from_secs(5),
        "endpoints need time to drop the pod"
    );
    let grace = Duration::from_secs(pod["terminationGracePeriodSeconds"].as_u64().unwrap());
    assert!(
        grace >= delay + kubeecr::runtime::serve::STOP_BOUND,
        "grace {grace:?} < delay {delay:?} + {:?}",
        kubeecr::runtime::serve::STOP_BOUND
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
            "ServiceAccount",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding"
        ]),
        "the CronJob form has no webhook, Deployment, Service, Lease or cert-manager object"
    );
}

/// Where every namespace-dependent reference of a serve install points.
pub fn assert_consistent(docs: &[Value], namespace: &str) {
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
    assert_policy_exempts(docs, &sa_user);
}

/// The ValidatingAdmissionPolicy lets kubeecr's own ServiceAccount, and only it, write its
/// label and annotations anywhere.
pub fn assert_policy_exempts(docs: &[Value], sa_user: &str) {
    let policy = one(docs, "ValidatingAdmissionPolicy");
    let skip = policy["spec"]["matchConditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "not-kubeecr")
        .expect("kubeecr's own writes pass the policy");
    assert_eq!(
        skip["expression"],
        format!("request.userInfo.username != '{sa_user}'")
    );
    let binding = one(docs, "ValidatingAdmissionPolicyBinding");
    assert_eq!(binding["spec"]["policyName"], policy["metadata"]["name"]);
    assert_eq!(
        binding["spec"]["validationActions"],
        serde_json::json!(["Deny"])
    );
}

/// `examples/installation/` copied with its namespace line changed, as an operator does.
pub fn example_in(namespace: &str) -> PathBuf {
    example_with(namespace, &[])
}

/// As `example_in`, with these components of `examples/installation/` enabled.
pub fn example_with(namespace: &str, components: &[&str]) -> PathBuf {
    let mut example =
        std::fs::read_to_string(repo().join("examples/installation/kustomization.yaml")).unwrap();
    for component in components {
        let line = format!("\n  # - {component} ");
        assert!(
            example.contains(&line),
            "{component} is offered, commented out"
        );
        example = example.replace(
            &line,
            &format!("\n  - {FROM_SCRATCH}/examples/installation/{component} #"),
        );
    }
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
    // The CronJob form's one namespace line moves the policy's exemption too.
    let cron =
        std::fs::read_to_string(repo().join("examples/installation/cronjob/kustomization.yaml"))
            .unwrap()
            .replace("\nnamespace: kubeecr\n", "\nnamespace: platform-ecr\n")
            .replace("../../../manifests", &format!("{FROM_SCRATCH}/manifests"));
    let dir = scratch();
    std::fs::write(dir.join("kustomization.yaml"), cron).unwrap();
    let docs = render(&dir);
    assert_eq!(
        one(&docs, "CronJob")["metadata"]["namespace"],
        "platform-ecr"
    );
    assert_policy_exempts(&docs, "system:serviceaccount:platform-ecr:kubeecr");
    std::fs::remove_dir_all(dir).unwrap();
}

/// The NetworkPolicy component admits the webhook port from one CIDR and the admin port from
/// the monitoring namespace, on kubeecr's pods and their named ports.
#[test]
fn the_network_policy_fences_both_ports() {
    if !has_kubectl() {
        return;
    }
    let dir = example_with("kubeecr", &["network-policy"]);
    let docs = render(&dir);
    std::fs::remove_dir_all(dir).unwrap();
    let policy = one(&docs, "NetworkPolicy");
    let deployment = one(&docs, "Deployment");
    assert_eq!(policy["metadata"]["namespace"], "kubeecr");
    let pods = &deployment["spec"]["template"]["metadata"]["labels"];
    for (k, v) in policy["spec"]["podSelector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(&pods[k], v, "selects kubeecr's pods");
    }
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress"]));
    let rules = policy["spec"]["ingress"].as_array().unwrap();
    let named: Vec<&str> = container(deployment)["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    let port_of = |rule: &Value| rule["ports"][0]["port"].as_str().unwrap().to_string();
    let webhook = rules
        .iter()
        .find(|r| port_of(r) == "https")
        .expect("a rule for the webhook port");
    assert!(
        webhook["from"][0]["ipBlock"]["cidr"].is_string(),
        "from one CIDR"
    );
    assert_eq!(webhook["from"].as_array().unwrap().len(), 1);
    let admin = rules
        .iter()
        .find(|r| port_of(r) == "admin")
        .expect("a rule for the admin port");
    assert!(admin["from"][0]["namespaceSelector"]["matchLabels"].is_object());
    assert!(admin["from"][0]["ipBlock"].is_null());
    assert_eq!(rules.len(), 2, "nothing else gets in");
    for rule in rules {
        assert!(named.contains(&port_of(rule).as_str()), "{rule}");
    }
}

/// With the client-auth component, kubeecr requires a client certificate from the CA mounted
/// with its serving certificate, and cert-manager issues the API server one from that CA.
#[test]
fn client_auth_trusts_the_ca_that_issues_the_api_servers_certificate() {
    if !has_kubectl() {
        return;
    }
    let dir = example_with("kubeecr", &["apiserver-client-cert", "client-auth"]);
    let docs = render(&dir);
    std::fs::remove_dir_all(dir).unwrap();
    let deployment = one(&docs, "Deployment");
    let serve = parse_serve(args(deployment));
    let client_ca = serve.webhook.client_ca_file.expect("--client-ca-file");
    // The CA cert-manager puts beside the serving pair, in the mounted Secret.
    assert_eq!(client_ca.parent(), serve.webhook.tls_cert_file.parent());
    assert_eq!(client_ca.file_name().unwrap(), "ca.crt");
    let certificates = of_kind(&docs, "Certificate");
    let serving = certificates
        .iter()
        .find(|c| c["spec"]["dnsNames"].is_array())
        .unwrap();
    let client = certificates
        .iter()
        .find(|c| strs(&c["spec"]["usages"]).contains(&"client auth"))
        .expect("a client certificate for the API server");
    assert_eq!(client["spec"]["issuerRef"], serving["spec"]["issuerRef"]);
    // The serving certificate, from the same CA, cannot pass as a client certificate.
    assert_eq!(
        strs(&serving["spec"]["usages"]),
        ["server auth", "digital signature"]
    );
}

/// The namespaced install grants Secrets (and Events) only in the namespaces it serves, by
/// Roles, and serves exactly those.
#[test]
fn the_namespaced_install_reads_secrets_only_where_it_serves() {
    if !has_kubectl() {
        return;
    }
    let docs = render(&repo().join("examples/installation/namespaced"));
    assert!(
        of_kind(&docs, "ClusterRole").is_empty(),
        "no cluster-wide grant"
    );
    assert!(of_kind(&docs, "ClusterRoleBinding").is_empty());
    let serve = parse_serve(args(one(&docs, "Deployment")));
    let served: BTreeSet<String> = serve.refresher.policy.namespaces.iter().cloned().collect();
    assert!(!served.is_empty());
    let granted: BTreeSet<String> = of_kind(&docs, "Role")
        .into_iter()
        .filter(|r| rules(r).iter().any(|(_, res, _)| res == "secrets"))
        .map(|r| {
            assert_eq!(
                rules(r)
                    .into_iter()
                    .find(|(_, res, _)| res == "secrets")
                    .unwrap()
                    .2,
                set(&["get", "list", "watch", "patch"])
            );
            r["metadata"]["namespace"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        granted, served,
        "Secrets readable exactly where kubeecr serves"
    );
    for binding in of_kind(&docs, "RoleBinding") {
        assert_eq!(binding["subjects"][0]["name"], "kubeecr");
        assert_eq!(binding["subjects"][0]["namespace"], "kubeecr");
    }
}

/// The multi-tenant component's rules are accepted by kubeecr and say what its comments say:
/// each team its own role and registries, and kubeecr's own identity for no namespace; the
/// Deployment and the CronJob read the same rules.
#[test]
fn the_multi_tenant_component_keeps_teams_apart() {
    if !has_kubectl() {
        return;
    }
    let dir = example_with("kubeecr", &["multi-tenant"]);
    let docs = render(&dir);
    std::fs::remove_dir_all(dir).unwrap();
    let settings = parse_serve(argv(&docs, one(&docs, "Deployment")))
        .settings()
        .expect("the component's flags are valid");
    assert!(!settings.webhook.admission_fill);
    let serve_policy = settings.policy;

    let cron =
        std::fs::read_to_string(repo().join("examples/installation/cronjob/kustomization.yaml"))
            .unwrap();
    assert!(
        cron.contains("\n  # - ../multi-tenant\n"),
        "offered, commented out"
    );
    let cron = cron
        .replace(
            "\n  # - ../multi-tenant\n",
            &format!("\n  - {FROM_SCRATCH}/examples/installation/multi-tenant\n"),
        )
        .replace("../../../manifests", &format!("{FROM_SCRATCH}/manifests"));
    let dir = scratch();
    std::fs::write(dir.join("kustomization.yaml"), cron).unwrap();
    let docs = render(&dir);
    std::fs::remove_dir_all(dir).unwrap();
    let argv = argv(&docs, one(&docs, "CronJob"));
    let parsed = Cli::try_parse_from(std::iter::once("kubeecr".to_string()).chain(argv.clone()))
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    let kubeecr::cmd::Command::Refresh(refresh) = parsed.command else {
        panic!("{argv:?} is not refresh");
    };
    let refresh_policy = refresh
        .refresher
        .policy
        .policy()
        .expect("the component's flags are valid");

    let role_a = "arn:aws:iam::111111111111:role/kubeecr-team-a";
    for policy in [serve_policy, refresh_policy] {
        assert!(policy.allowed_role_arns.allows("team-a", role_a));
        assert!(!policy.allowed_role_arns.allows("team-b", role_a));
        let registries = &policy.allowed_registries;
        assert!(registries.allows("team-a", "111111111111/us-west-2"));
        assert!(!registries.allows("team-b", "111111111111/us-west-2"));
        assert!(!registries.allows("team-c", "111111111111/us-west-2"));
        assert!(!policy.own_identity.contains("team-a"));
        assert!(!policy.own_identity.contains("team-c"));
    }
}
