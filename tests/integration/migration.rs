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
/// secretGenerator (a hashed name) define them, in namespace `old`; its cluster-scoped names
/// get `suffix`, as a renamed install would have them (the guide finds them by subject).
fn kubeecr_script_objects(old: &str, suffix: &str) -> Vec<Value> {
    let cluster = format!("kubeecr{suffix}");
    let secret = "kubeecr-aws-secrets-5t7m2kb8hf";
    vec![
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "kubeecr", "namespace": old}}),
        json!({"kind": "ClusterRole", "apiVersion": "rbac.authorization.k8s.io/v1", "metadata": {"name": cluster},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["patch", "get", "list"]}]}),
        json!({"kind": "ClusterRoleBinding", "apiVersion": "rbac.authorization.k8s.io/v1", "metadata": {"name": cluster},
            "subjects": [{"kind": "ServiceAccount", "name": "kubeecr", "namespace": old}],
            "roleRef": {"kind": "ClusterRole", "name": cluster, "apiGroup": "rbac.authorization.k8s.io"}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret, "namespace": old},
            "stringData": {"AWS_ACCESS_KEY_ID": "AKIAKUBEECRCLI000001", "AWS_SECRET_ACCESS_KEY": CLI_SECRET_KEY}}),
        json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "kubeecr", "namespace": old},
            "spec": {"schedule": "0 */6 * * *", "jobTemplate": {"spec": {"template": {"spec": {
                "serviceAccountName": "kubeecr", "restartPolicy": "Never",
                "containers": [{"name": "kubeecr", "image": "ghcr.io/servercentral/kubeecr:latest", "env": [
                    {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": secret, "key": "AWS_ACCESS_KEY_ID"}}},
                    {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": secret, "key": "AWS_SECRET_ACCESS_KEY"}}},
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

/// The guide's line that starts with `prefix`, exactly as written there.
fn guide_line<'a>(guide: &'a str, prefix: &str) -> &'a str {
    let mut found = guide.lines().filter(|l| l.starts_with(prefix));
    let line = found
        .next()
        .unwrap_or_else(|| panic!("{GUIDE}: no line starts with {prefix:?}"));
    assert!(
        found.next().is_none(),
        "{GUIDE}: one line starts with {prefix:?}"
    );
    line
}

/// Runs `script` with bash, as a reader pasting the guide's lines would, with `OLD`, `NEW`,
/// `SECRET` and the admin kubeconfig set; its output, or the failure.
fn bash(script: &str, env: &[(&str, &str)], kubeconfig: &std::path::Path) -> String {
    let mut cmd = std::process::Command::new("bash");
    cmd.args(["-euo", "pipefail", "-c", script])
        .env("KUBECONFIG", kubeconfig);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script}\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
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
    let suffix = format!("-{}", &old[old.len() - 8..]);
    let mut created = ClusterScoped {
        kubeconfig: admin.clone(),
        objects: vec![
            format!("clusterrolebinding/kubeecr{suffix}"),
            format!("clusterrole/kubeecr{suffix}"),
        ],
    };

    // KubeECR, with its Secrets: v1's annotated one (filled by an earlier run), v2's labelled.
    let script = kubeecr_script_objects(&old, &suffix);
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
    let mut env = vec![("OLD", old.clone()), ("NEW", new.clone())];
    let vars = |env: &Vec<(&'static str, String)>| {
        env.iter().map(|(k, v)| (*k, v.clone())).collect::<Vec<_>>()
    };
    let run = |line: &str, env: &Vec<(&'static str, String)>| {
        let pairs = vars(env);
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        bash(line, &pairs, &admin)
    };

    // Finding it: the guide's listing shows this CronJob.
    let listed = run(guide_line(&guide, "kubectl get cronjob -A"), &env);
    assert!(
        listed.contains(&format!(
            "{old}/kubeecr ghcr.io/servercentral/kubeecr:latest"
        )),
        "{listed}"
    );

    // No clash: none of kubeecr's objects has the kind and name of one of KubeECR's, in its
    // default names (wherever each is installed, `kubeecr` namespace included: the
    // ServiceAccount and the Secret are meant to be shared there).
    let defaults = kubeecr_script_objects(&old, "");
    for ours in render(&repo().join("manifests"))
        .iter()
        .chain(render(&repo().join("manifests/cronjob")).iter())
    {
        for theirs in &defaults {
            let same = kind_of(ours) == kind_of(theirs)
                && ours["metadata"]["name"] == theirs["metadata"]["name"];
            assert!(
                !same || matches!(kind_of(theirs), "ServiceAccount"),
                "kubeecr installs a {} of its own",
                object_name(theirs)
            );
        }
    }

    // 1. Suspended.
    run(
        guide_line(
            &guide,
            "kubectl -n \"$OLD\" patch cronjob kubeecr -p '{\"spec\":{\"suspend\":true}}'",
        ),
        &env,
    );
    let suspended = kubectl(
        &admin,
        &[
            "-n",
            &old,
            "get",
            "cronjob",
            "kubeecr",
            "-o",
            "jsonpath={.spec.suspend}",
        ],
        "",
    )
    .unwrap();
    assert_eq!(suspended, "true");

    // 2. kubeecr's CronJob form, as its install names things, in its own namespace (the
    // cluster-scoped names get a suffix so that the shared cluster's other tests are left
    // alone, and the admission policy is left out: it is cluster-wide); then the keys copied.
    let mut install = crate::install_scenario::render_cronjob_for_test(&new);
    install.retain(|d| !kind_of(d).starts_with("ValidatingAdmissionPolicy"));
    for o in install
        .iter()
        .filter(|d| d["metadata"]["namespace"].is_null())
    {
        created.objects.push(object_name(o));
    }
    kubectl(
        &admin,
        &["apply", "-f", "-"],
        &list_of(&install.iter().collect::<Vec<_>>()),
    )
    .unwrap_or_else(|e| panic!("kubeecr installs beside KubeECR: {e}"));
    let secret_name = run(
        &format!("{}; echo \"$SECRET\"", guide_line(&guide, "SECRET=$(")),
        &env,
    );
    env.push(("SECRET", secret_name.trim().to_string()));
    assert_eq!(env[2].1, "kubeecr-aws-secrets-5t7m2kb8hf");
    run(
        guide_line(
            &guide,
            "kubectl -n \"$OLD\" get secret \"$SECRET\" -o go-template=",
        ),
        &env,
    );
    let copied = |key: &str| {
        let b64 = kubectl(
            &admin,
            &[
                "-n",
                &new,
                "get",
                "secret",
                "kubeecr-aws-secrets",
                "-o",
                &format!("jsonpath={{.data.{key}}}"),
            ],
            "",
        )
        .unwrap();
        String::from_utf8(
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64.trim()).unwrap(),
        )
        .unwrap()
    };
    let (id, secret_key) = (copied("AWS_ACCESS_KEY_ID"), copied("AWS_SECRET_ACCESS_KEY"));
    assert_eq!(
        (id.as_str(), secret_key.as_str()),
        ("AKIAKUBEECRCLI000001", CLI_SECRET_KEY)
    );

    let (before, code) = status(&admin, &old).await;
    println!("kubeecr status, before:\n{before}");
    assert_eq!(code, Some(1), "{before}");
    let legacy = row(&before, &format!("{old}/legacy-pull"));
    assert!(legacy.is_some_and(|r| r.contains(" due ")), "{before}");
    assert!(
        row(&before, &format!("{old}/pull")).is_none(),
        "v2's Secrets do not opt in yet\n{before}"
    );

    // 3. v2's Secrets opt in with the guide's command; here in the test's namespace, not -A,
    // since the cluster is shared.
    let annotate = guide_line(
        &guide,
        &format!("kubectl annotate secret -A -l {SELECTOR} "),
    );
    assert_eq!(
        annotate,
        format!("kubectl annotate secret -A -l {SELECTOR} deft.com/kubeecr={REGISTRY}")
    );
    run(&annotate.replace(" -A ", " -n \"$OLD\" "), &env);

    // A run of the CronJob: its args and env, as its ServiceAccount, with the copied keys.
    let cronjob = one(&install, "CronJob");
    let container = crate::install::container(cronjob);
    let dir = tempfile::tempdir().unwrap();
    let sa_kubeconfig = service_account_kubeconfig(&cluster, &new, "kubeecr", dir.path());
    let args = crate::install::args(cronjob);
    let mut pass = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubeecr"));
    pass.args(&args)
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
            pass.env(env["name"].as_str().unwrap(), value);
        }
    }
    let out = pass.output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("refreshed 3, unchanged 0, skipped 0, failed 0"),
        "{stdout}"
    );
    for denied in ["403", "forbidden", "Forbidden"] {
        assert!(
            !stdout.contains(denied) && !stderr.contains(denied),
            "{stdout}{stderr}"
        );
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

    // 5. KubeECR removed: its grant found by what it grants to, whatever its name.
    let grants = run(
        guide_line(&guide, "kubectl get clusterrolebinding -o jsonpath="),
        &env,
    );
    assert_eq!(
        grants.trim(),
        format!("kubeecr{suffix} kubeecr{suffix} {old}/kubeecr"),
        "KubeECR's binding, found by its subject"
    );
    run(
        guide_line(&guide, "kubectl -n \"$OLD\" delete cronjob kubeecr"),
        &env,
    );
    let binding = guide_line(&guide, "kubectl delete clusterrolebinding kubeecr");
    run(
        &binding.replace(
            "clusterrolebinding kubeecr",
            &format!("clusterrolebinding kubeecr{suffix}"),
        ),
        &env,
    );
    let role = guide_line(&guide, "kubectl delete clusterrole kubeecr");
    run(
        &role.replace(
            "clusterrole kubeecr",
            &format!("clusterrole kubeecr{suffix}"),
        ),
        &env,
    );
    run(
        guide_line(&guide, "kubectl -n \"$OLD\" delete serviceaccount kubeecr"),
        &env,
    );
    run(
        guide_line(
            &guide,
            "[ \"$OLD/$SECRET\" = \"$NEW/kubeecr-aws-secrets\" ] ||",
        ),
        &env,
    );
    let left = kubectl(
        &admin,
        &[
            "-n",
            &old,
            "get",
            "cronjob/kubeecr",
            "serviceaccount/kubeecr",
            "secret/kubeecr-aws-secrets-5t7m2kb8hf",
            "--ignore-not-found",
            "-o",
            "name",
        ],
        "",
    )
    .unwrap();
    assert_eq!(left.trim(), "", "KubeECR's objects are gone: {left}");
    let grants = run(
        guide_line(&guide, "kubectl get clusterrolebinding -o jsonpath=")
            .replace(" | grep", " | { grep")
            .replace("$\"", "$\" || true; }")
            .as_str(),
        &env,
    );
    assert_eq!(grants.trim(), "", "no grant is left");
    drop(created);
}
