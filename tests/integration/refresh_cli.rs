//! The `kubeecr refresh` binary as a user runs it: a kubeconfig, an ECR endpoint, env credentials.

use std::process::Output;

use kubeecr_testkit::cluster::TestCluster;
use kubeecr_testkit::moto::{EcrProxy, dead_endpoint};

use crate::common::*;
use crate::on_both_backends;

async fn kubeecr(cluster: &TestCluster, args: &[&str], env: &[(&str, &str)]) -> Output {
    kubeecr_with(cluster.kubeconfig(), args, env).await
}

/// Runs `kubeecr refresh` with env credentials; IMDS is off so that nothing leaves loopback.
async fn kubeecr_with(kubeconfig: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = kubeecr_command("refresh");
    cmd.arg("--kubeconfig").arg(kubeconfig).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().await.expect("run kubeecr")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn cli_fills_reports_and_keeps_secrets_out_of_logs(cluster: TestCluster) {
    let ecr = EcrProxy::start().await;
    let client = cluster.client();
    let ns = cluster.ns();
    create_opted_in(
        &client,
        ns,
        "good",
        "123456789012/us-west-2,210987654321/us-west-2",
    )
    .await;
    create(
        &client,
        ns,
        &secret(
            "bad",
            DOCKER_CONFIG_JSON,
            &[(ANNOTATION, "123456789/us-west-2")],
            &[(".dockerconfigjson", b"{}")],
        ),
    )
    .await;

    let out = kubeecr(
        &cluster,
        &[
            "--namespace",
            ns,
            "--ecr-endpoint",
            &ecr.url(),
            "--log-level",
            "debug",
        ],
        &[],
    )
    .await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stdout.contains("refreshed 1, unchanged 0, skipped 1, failed 0; ECR calls 1"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "{ns}/bad: deft.com/kubeecr \"123456789/us-west-2\": account id 123456789 has 9 digits; AWS account ids have 12, leading zeros included: if it lost them, write 000123456789/us-west-2"
        )),
        "{stdout}"
    );
    let config = dockerconfig(&get(&client, ns, "good").await);
    let password = password_of(&config, "123456789012.dkr.ecr.us-west-2.amazonaws.com");
    let auth = config["auths"]["123456789012.dkr.ecr.us-west-2.amazonaws.com"]["auth"]
        .as_str()
        .unwrap()
        .to_string();
    for secret in [password.as_str(), auth.as_str(), CLI_SECRET_KEY] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "a credential reached the output"
        );
    }

    // JSON logs, and nothing due on the second run.
    let out = kubeecr(
        &cluster,
        &[
            "--namespace",
            ns,
            "--ecr-endpoint",
            &ecr.url(),
            "--log-format",
            "json",
        ],
        &[],
    )
    .await;
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("refreshed 0, unchanged 1, skipped 1, failed 0; ECR calls 0"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).lines().all(|l| l.starts_with('{')),
        "{}",
        text(&out.stderr)
    );
}
on_both_backends!(cli_fills_reports_and_keeps_secrets_out_of_logs);

#[tokio::test]
async fn cli_honours_aws_endpoint_url_and_kubeecr_env() {
    let cluster = TestCluster::double().await;
    let ecr = EcrProxy::start().await;
    let client = cluster.client();
    let ns = cluster.ns();
    create_opted_in(&client, ns, "s", "123456789012/eu-west-1").await;
    let out = kubeecr(
        &cluster,
        &[],
        &[("AWS_ENDPOINT_URL", &ecr.url()), ("KUBEECR_NAMESPACES", ns)],
    )
    .await;
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(ecr.token_calls().len(), 1);
    assert!(text(&out.stdout).contains("refreshed 1,"));

    // The ECR-only variable, with --force so that the secret is written again.
    let ecr_only = EcrProxy::start().await;
    let out = kubeecr(
        &cluster,
        &["--force"],
        &[
            ("AWS_ENDPOINT_URL_ECR", &ecr_only.url()),
            ("KUBEECR_NAMESPACES", ns),
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(ecr_only.token_calls().len(), 1);
}

#[tokio::test]
async fn cli_exits_non_zero_when_ecr_is_down() {
    let cluster = TestCluster::double().await;
    let client = cluster.client();
    let ns = cluster.ns();
    create_opted_in(&client, ns, "s", "123456789012/us-west-2").await;
    let endpoint = dead_endpoint();
    let out = kubeecr(
        &cluster,
        &["--ecr-endpoint", &endpoint, "--aws-timeout", "5s"],
        &[],
    )
    .await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("failed 1"), "{stdout}");
    assert!(stdout.contains(&format!("FAILED    {ns}/s: ECR token for us-west-2 with the default credentials: GetAuthorizationToken failed (endpoint {endpoint})")), "{stdout}");
}

#[tokio::test]
async fn cli_explains_an_unreachable_api_server() {
    let cluster = TestCluster::double().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    let kc = std::fs::read_to_string(cluster.kubeconfig()).unwrap();
    std::fs::write(
        &path,
        kc.replace(&cluster.double_server().unwrap().url(), &dead_endpoint()),
    )
    .unwrap();
    let out = kubeecr_with(&path, &[], &[]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("kubeecr: listing Secrets in all namespaces: "),
        "{stderr}"
    );
    assert!(stderr.contains("Connection refused"), "{stderr}");
}

async fn dry_run_says_what_it_would_write_and_writes_nothing(cluster: TestCluster) {
    let ecr = EcrProxy::start().await;
    let client = cluster.client();
    let ns = cluster.ns();
    let before = create_opted_in(&client, ns, "pull", "123456789012/us-west-2").await;
    let args = ["--namespace", ns, "--ecr-endpoint", &ecr.url()];
    let out = kubeecr(&cluster, &[&args[..], &["--dry-run"]].concat(), &[]).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!("would refresh {ns}/pull (no credentials yet for 123456789012.dkr.ecr.us-west-2.amazonaws.com;")),
        "{stdout}"
    );
    assert!(
        stdout.contains("dry run, nothing written: refreshed 1, unchanged 0"),
        "{stdout}"
    );
    let after = get(&client, ns, "pull").await;
    assert_eq!(rv(&after), rv(&before), "a dry run wrote the Secret");
    assert_eq!(annotation(&after, EXPIRES_AT), None);

    // The same run without --dry-run writes what it said.
    let out = kubeecr(&cluster, &args, &[]).await;
    assert!(text(&out.stdout).contains(&format!("refreshed {ns}/pull")));
    assert!(annotation(&get(&client, ns, "pull").await, EXPIRES_AT).is_some());
}
on_both_backends!(dry_run_says_what_it_would_write_and_writes_nothing);

/// The finding: kube's client logs the whole body of an answer it cannot decode at WARN, and
/// that body can be a Secret. The API double answers the read of an opted-in Secret with one
/// whose data is not base64: kubeecr says the answer did not decode, and where, and no line
/// holds the body. (A real API server sends no such answer on demand.)
#[tokio::test]
async fn an_undecodable_answer_never_reaches_the_log() {
    let cluster = TestCluster::double().await;
    let ecr = EcrProxy::start().await;
    let ns = cluster.ns();
    create_opted_in(&cluster.client(), ns, "odd", "123456789012/us-west-2").await;
    let body = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "odd", "namespace": ns, "resourceVersion": "1"},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": "not base64: hunter2-in-the-body"},
    });
    cluster.double_server().unwrap().answer_next(
        http::Method::GET,
        "/secrets/odd",
        1,
        200,
        &body.to_string(),
    );
    let out = kubeecr(
        &cluster,
        &[
            "--namespace",
            ns,
            "--ecr-endpoint",
            &ecr.url(),
            "--log-level",
            "debug",
        ],
        &[],
    )
    .await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "FAILED    {ns}/odd: reading it: the API server's answer did not decode: it is not the object expected (line 1 column "
        )),
        "{stdout}"
    );
    for text in [&stdout, &stderr] {
        assert!(!text.contains("hunter2"), "{text}");
    }
}

/// As the image runs it: uid and gid 65532, no HOME and no other variable but the AWS keys,
/// in a directory it cannot write. A pass fills the Secret and leaves nothing behind.
#[tokio::test]
async fn runs_as_the_images_user_with_no_home_in_a_read_only_directory() {
    use std::os::unix::fs::PermissionsExt;
    let root = rustix::process::geteuid().is_root();
    let sudo = !root
        && std::process::Command::new("sudo")
            .args(["-n", "true"])
            .status()
            .is_ok_and(|s| s.success());
    if !crate::install::tool_present(
        root || sudo,
        "root or sudo, to run kubeecr as uid 65532 (the image's user)",
    ) {
        return;
    }

    let cluster = TestCluster::double().await;
    let ecr = EcrProxy::start().await;
    let ns = cluster.ns();
    create_opted_in(&cluster.client(), ns, "s", "123456789012/us-west-2").await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::copy(cluster.kubeconfig(), &kubeconfig).unwrap();
    std::fs::set_permissions(&kubeconfig, std::fs::Permissions::from_mode(0o444)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
    // A copy that uid 65532 can reach, whatever the checkout's permissions.
    let bin = tempfile::tempdir().unwrap();
    let kubeecr = bin.path().join("kubeecr");
    std::fs::copy(env!("CARGO_BIN_EXE_kubeecr"), &kubeecr).unwrap();
    std::fs::set_permissions(bin.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut setpriv = tokio::process::Command::new(if root { "setpriv" } else { "sudo" });
    if !root {
        setpriv.args(["-n", "setpriv"]);
    }
    // `env -i` and only these: sudo would drop them, and HOME must not be set.
    let out = setpriv
        .args([
            "--reuid=65532",
            "--regid=65532",
            "--clear-groups",
            "--",
            "env",
            "-i",
        ])
        .arg("AWS_ACCESS_KEY_ID=AKIAKUBEECRCLI000001")
        .arg(format!("AWS_SECRET_ACCESS_KEY={CLI_SECRET_KEY}"))
        .args(["AWS_REGION=us-east-1", "AWS_EC2_METADATA_DISABLED=true"])
        .arg(&kubeecr)
        .arg("refresh")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--namespace", ns, "--ecr-endpoint", &ecr.url()])
        .current_dir(dir.path())
        .output()
        .await
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("refreshed 1, unchanged 0, skipped 0, failed 0"),
        "{stdout}"
    );
    let secret = get(&cluster.client(), ns, "s").await;
    let host = "123456789012.dkr.ecr.us-west-2.amazonaws.com";
    assert_eq!(
        password_of(&dockerconfig(&secret), host),
        ecr.newest("us-west-2", None).unwrap().password,
        "filled with the token issued"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "nothing written beside the kubeconfig");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
}
