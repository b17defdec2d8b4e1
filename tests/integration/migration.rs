//! `docs/migrating-from-kubeecr.md`, followed on the real kube-apiserver: KubeECR's objects as
//! its manifests define them, Secrets in both of its forms (v1's annotation, v2's label), then
//! the guide's steps, with kubeecr in the CronJob form run as its own ServiceAccount. Every
//! Secret ends up filled by kubeecr, and no name clashes.

use k8s_openapi::api::core::v1::Secret;
use kubeecr_testkit::cluster::TestCluster;
use kubeecr_testkit::moto::EcrProxy;
use serde_json::{Value, json};

use crate::common::*;
use crate::install::{one, render, repo};
use crate::install_scenario::{
    ClusterScoped, kind_of, kubectl, list_of, object_name, service_account_kubeconfig,
};

const GUIDE: &str = "docs/migrating-from-kubeecr.md";
const SELECTOR: &str = "kubeecr=aws-prod";
const REGISTRY: &str = "123456789012/us-east-1";
const HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

/// KubeECR's objects, as its manifests/ (cronjob.yaml, rbac.yaml) and its example overlay's
/// Secret define them, in namespace `old`.
fn kubeecr_script_objects(old: &str) -> Vec<Value> {
    vec![
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "kubeecr", "namespace": old}}),
        json!({"kind": "ClusterRole", "apiVersion": "rbac.authorization.k8s.io/v1", "metadata": {"name": "kubeecr"},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["patch", "get", "list"]}]}),
        json!({"kind": "ClusterRoleBinding", "apiVersion": "rbac.authorization.k8s.io/v1", "metadata": {"name": "kubeecr"},
            "subjects": [{"kind": "ServiceAccount", "name": "kubeecr", "namespace": old}],
            "roleRef": {"kind": "ClusterRole", "name": "kubeecr", "apiGroup": "rbac.authorization.k8s.io"}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "kubeecr-aws-secrets", "namespace": old},
            "stringData": {"AWS_ACCESS_KEY_ID": "AKIAKUBEECRCLI000001", "AWS_SECRET_ACCESS_KEY": CLI_SECRET_KEY}}),
        json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "kubeecr", "namespace": old},
            "spec": {"schedule": "0 */6 * * *", "jobTemplate": {"spec": {"template": {"spec": {
                "serviceAccountName": "kubeecr", "restartPolicy": "Never",
                "containers": [{"name": "kubeecr", "image": "ghcr.io/servercentral/kubeecr:latest", "env": [
                    {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "kubeecr-aws-secrets", "key": "AWS_ACCESS_KEY_ID"}}},
                    {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "kubeecr-aws-secrets", "key": "AWS_SECRET_ACCESS_KEY"}}},
                    {"name": "AWS_REGION", "value": "us-east-1"},
                    {"name": "AWS_ACCOUNT", "value": "123456789012"},
                    {"name": "KUBEECR_SELECTOR", "value": SELECTOR},
                    {"name": "KUBEECR_NAMESPACE", "value": old}]}]}}}}}}),
    ]
}

/// A Secret as KubeECR leaves it: `.dockerconfigjson` holding only its registry's `auth`
/// (`filled`), or the `{}` of its example before a first run.
fn script_secret(
    name: &str,
    labels: &[(&str, &str)],
    annotations: &[(&str, &str)],
    filled: bool,
) -> Secret {
    let config = if filled {
        json!({"auths": {HOST: {"auth": "QVdTOmt1YmVlY3Itc2NyaXB0LXRva2Vu"}}}).to_string()
    } else {
        "{}".to_string()
    };
    let mut s = secret(
        name,
        DOCKER_CONFIG_JSON,
        annotations,
        &[(".dockerconfigjson", config.as_bytes())],
    );
    s.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    s
}

/// `kubeecr status` in `ns` with `kubeconfig`: the table, and the exit code.
async fn status(kubeconfig: &std::path::Path, ns: &str) -> (String, Option<i32>) {
    let out = kubeecr_command("status")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--namespace", ns])
        .output()
        .await
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.code(),
    )
}

fn row<'a>(table: &'a str, secret: &str) -> Option<&'a str> {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(secret))
}

#[tokio::test]
async fn moving_from_kubeecr_fills_every_secret_with_no_name_clash() {
    let Some(mut cluster) =
        TestCluster::real("moving_from_kubeecr_fills_every_secret_with_no_name_clash").await
    else {
        return;
    };
    let guide = std::fs::read_to_string(repo().join(GUIDE)).unwrap();
    let old = cluster.ns().to_string();
    let new = cluster.namespace("kubeecr-new").await;
    let admin = cluster.kubeconfig().to_path_buf();
    let client = cluster.client();
    let ecr = EcrProxy::start().await;
    let mut created = ClusterScoped {
        kubeconfig: admin.clone(),
        objects: vec![
            "clusterrolebinding/kubeecr".into(),
            "clusterrole/kubeecr".into(),
        ],
    };

    // KubeECR, with its Secrets: v1's annotated one (filled by an earlier run), v2's labelled.
    let script = kubeecr_script_objects(&old);
    kubectl(
        &admin,
        &["apply", "-f", "-"],
        &list_of(&script.iter().collect::<Vec<_>>()),
    )
    .unwrap();
    let label = [("kubeecr", "aws-prod")];
    create(
        &client,
        &old,
        &script_secret("legacy-pull", &[], &[(ANNOTATION, REGISTRY)], true),
    )
    .await;
    create(&client, &old, &script_secret("pull", &label, &[], true)).await;
    create(&client, &old, &script_secret("pull-b", &label, &[], false)).await;

    // kubeecr's CronJob form, as its install names things, in its own namespace; the
    // cluster-scoped names get the namespace as suffix so that the shared cluster's other
    // tests are left alone, and the admission policy is left out (it is cluster-wide).
    let mut install = crate::install_scenario::render_cronjob_for_test(&new);
    install.retain(|d| !kind_of(d).starts_with("ValidatingAdmissionPolicy"));
    // No clash: none of kubeecr's objects has the kind and name of one of KubeECR's, wherever
    // each is installed (KubeECR's could be in any namespace, `kubeecr` included).
    let unsuffixed = render(&repo().join("manifests/cronjob"));
    for theirs in &script {
        let clash = unsuffixed
            .iter()
            .chain(render(&repo().join("manifests")).iter())
            .any(|ours| {
                kind_of(ours) == kind_of(theirs)
                    && ours["metadata"]["name"] == theirs["metadata"]["name"]
                    && !matches!(kind_of(theirs), "ServiceAccount" | "Secret")
            });
        assert!(
            !clash,
            "kubeecr installs a {} of its own",
            object_name(theirs)
        );
    }

    let (before, code) = status(&admin, &old).await;
    println!("kubeecr status, before:\n{before}");
    assert_eq!(code, Some(1), "{before}");
    assert!(
        row(&before, &format!("{old}/legacy-pull")).is_some_and(|r| r.contains(" due ")),
        "{before}"
    );
    assert!(
        row(&before, &format!("{old}/pull")).is_none(),
        "v2's Secrets do not opt in yet\n{before}"
    );

    // 1. Stop KubeECR, and remove what it was granted: the guide's commands.
    for command in [
        "kubectl -n $OLD delete cronjob kubeecr",
        "kubectl delete clusterrolebinding kubeecr",
        "kubectl delete clusterrole kubeecr",
        "kubectl -n $OLD delete serviceaccount kubeecr",
    ] {
        assert!(guide.contains(command), "{GUIDE}: {command}");
        let args: Vec<String> = command
            .split_whitespace()
            .skip(1)
            .map(|a| a.replace("$OLD", &old))
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        kubectl(&admin, &args, "").unwrap();
    }

    // 2. kubeecr installed beside what is left, with the keys KubeECR used.
    for o in install
        .iter()
        .filter(|d| d["metadata"]["namespace"].is_null())
    {
        created.objects.push(object_name(o));
    }
    let applied = kubectl(
        &admin,
        &["apply", "-f", "-"],
        &list_of(&install.iter().collect::<Vec<_>>()),
    );
    applied.unwrap_or_else(|e| panic!("kubeecr installs beside KubeECR's leftovers: {e}"));
    let copy = "kubectl -n kubeecr create secret generic kubeecr-aws-secrets";
    assert!(guide.contains(copy), "{GUIDE}: {copy}");
    let key = |k: &str| {
        let b64 = kubectl(
            &admin,
            &[
                "-n",
                &old,
                "get",
                "secret",
                "kubeecr-aws-secrets",
                "-o",
                &format!("jsonpath={{.data.{k}}}"),
            ],
            "",
        )
        .unwrap();
        String::from_utf8(
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64.trim()).unwrap(),
        )
        .unwrap()
    };
    let (id, secret_key) = (key("AWS_ACCESS_KEY_ID"), key("AWS_SECRET_ACCESS_KEY"));
    kubectl(
        &admin,
        &[
            "-n",
            &new,
            "create",
            "secret",
            "generic",
            "kubeecr-aws-secrets",
            &format!("--from-literal=AWS_ACCESS_KEY_ID={id}"),
            &format!("--from-literal=AWS_SECRET_ACCESS_KEY={secret_key}"),
        ],
        "",
    )
    .unwrap();

    // 3. v2's Secrets opt in with one command (here in the test's namespace, not -A).
    let annotate = format!("kubectl annotate secret -A -l {SELECTOR} deft.com/kubeecr={REGISTRY}");
    assert!(guide.contains(&annotate), "{GUIDE}: {annotate}");
    kubectl(
        &admin,
        &[
            "annotate",
            "secret",
            "-n",
            &old,
            "-l",
            SELECTOR,
            &format!("deft.com/kubeecr={REGISTRY}"),
        ],
        "",
    )
    .unwrap();

    // A run of the CronJob: its args and env, as its ServiceAccount, with the copied keys.
    let cronjob = one(&install, "CronJob");
    let container = crate::install::container(cronjob);
    let dir = tempfile::tempdir().unwrap();
    let sa_kubeconfig = service_account_kubeconfig(&cluster, &new, "kubeecr", dir.path());
    let args = crate::install::args(cronjob);
    let mut run = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubeecr"));
    run.args(&args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_ACCESS_KEY_ID", &id)
        .env("AWS_SECRET_ACCESS_KEY", &secret_key)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("KUBEECR_KUBECONFIG", &sa_kubeconfig)
        .env("KUBEECR_ECR_ENDPOINT", ecr.url())
        // The cluster is shared with other tests: KubeECR's namespace only.
        .env("KUBEECR_NAMESPACES", &old);
    for env in container["env"].as_array().unwrap() {
        if let Some(value) = env["value"].as_str() {
            run.env(env["name"].as_str().unwrap(), value);
        }
    }
    let out = run.output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("refreshed 3, unchanged 0, skipped 0, failed 0"),
        "{stdout}"
    );
    for denied in ["403", "forbidden", "Forbidden"] {
        assert!(!stdout.contains(denied) && !String::from_utf8_lossy(&out.stderr).contains(denied));
    }

    // 4. Every Secret holds kubeecr's token; KubeECR's `auth` is gone.
    let token = ecr.newest("us-east-1", None).expect("a token").password;
    for name in ["legacy-pull", "pull", "pull-b"] {
        let s = get(&client, &old, name).await;
        assert_eq!(password_of(&dockerconfig(&s), HOST), token, "{name}");
    }
    let (after, code) = status(&admin, &old).await;
    println!("kubeecr status, after:\n{after}");
    assert_eq!(code, Some(0), "{after}");
    for name in ["legacy-pull", "pull", "pull-b"] {
        let line =
            row(&after, &format!("{old}/{name}")).unwrap_or_else(|| panic!("{name}\n{after}"));
        assert!(line.contains(" filled"), "{line}");
    }
    drop(created);
}
