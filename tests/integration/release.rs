//! `scripts/release.sh`: what it writes says one version throughout, installs on the real
//! kube-apiserver (a server-side dry run, with cert-manager's CRDs), runs, is checksummed, and
//! is the same from the same inputs. The tests hand it their debug binary; `.ci/run` runs it
//! in full, release build included.

use std::path::{Path, PathBuf};
use std::process::Command;

use kubeecr_testkit::cluster::TestCluster;
use kubeecr_testkit::yaml::yaml_documents;
use serde_json::Value;

use crate::install::{container, has_kubectl, of_kind, one, repo, scratch, tool_present};
use crate::install_scenario::{ensure_cert_manager_crds, kubectl};

const IMAGE: &str = "ghcr.io/deft/kubeecr";

fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// Whether the release's tools are here (scripts/test.sh installs them).
fn release_tools() -> bool {
    let has = |sub: &str| {
        Command::new("cargo")
            .args([sub, "--version"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    tool_present(
        has("deny") && has("cyclonedx") && crate::chart::helm().is_some(),
        "cargo-deny and cargo-cyclonedx (scripts/test.sh installs them)",
    )
}

/// `scripts/release.sh ARGS --out DIR --binary <the tests' kubeecr>`; the output, or the
/// failure with what it printed.
fn release(out: &Path, args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new(repo().join("scripts/release.sh"));
    cmd.args(args)
        .arg("--out")
        .arg(out)
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_kubeecr"));
    if let Some(helm) = crate::chart::helm() {
        // The virtualenv the tests use, so that release.sh finds the same Helm.
        let venv = helm.parent().unwrap().parent().unwrap().to_path_buf();
        cmd.env("KUBEECR_VENV", venv);
    }
    let done = cmd.output().expect("scripts/release.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&done.stdout),
        String::from_utf8_lossy(&done.stderr)
    );
    if done.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

fn docs(path: &Path) -> Vec<Value> {
    yaml_documents(&std::fs::read_to_string(path).unwrap())
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

fn workload_image(doc: &Value) -> String {
    container(doc)["image"].as_str().unwrap().to_string()
}

/// Every file of the release says this version; the checksums hold; the binary runs and says
/// its version; the SBOM lists the binary's crates and not the tests'; the same inputs give
/// the same install.yaml and install-cronjob.yaml; a digest pins the image in both the
/// manifests and the chart.
#[test]
fn a_release_says_one_version_and_is_reproducible() {
    if !has_kubectl() || !release_tools() {
        return;
    }
    let v = version();
    let dir = scratch();
    let (first, second, pinned) = (dir.join("a"), dir.join("b"), dir.join("pinned"));
    release(&first, &[v]).unwrap();
    release(&second, &[v]).unwrap();
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => panic!("no release for {other}"),
    };
    let mut names: Vec<String> = std::fs::read_dir(&first)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let binary = format!("kubeecr-{v}-linux-{arch}");
    let mut expected = vec![
        "SHA256SUMS".to_string(),
        "install-cronjob.yaml".into(),
        "install.yaml".into(),
        binary.clone(),
        format!("kubeecr-{v}.cdx.json"),
        format!("kubeecr-{v}.tgz"),
    ];
    expected.sort();
    assert_eq!(names, expected);

    for file in ["install.yaml", "install-cronjob.yaml"] {
        let a = std::fs::read(first.join(file)).unwrap();
        assert_eq!(
            a,
            std::fs::read(second.join(file)).unwrap(),
            "{file}: reproducible"
        );
    }
    let checked = Command::new("sha256sum")
        .args(["--check", "--strict", "SHA256SUMS"])
        .current_dir(&first)
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stdout)
    );
    assert_eq!(
        String::from_utf8_lossy(&checked.stdout).lines().count(),
        expected.len() - 1,
        "every other file is summed"
    );

    let said = Command::new(first.join(&binary))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&said.stdout).trim(),
        format!("kubeecr {v}")
    );

    let install = docs(&first.join("install.yaml"));
    assert_eq!(
        workload_image(one(&install, "Deployment")),
        format!("{IMAGE}:{v}")
    );
    let cron = docs(&first.join("install-cronjob.yaml"));
    assert_eq!(
        workload_image(one(&cron, "CronJob")),
        format!("{IMAGE}:{v}")
    );
    assert!(of_kind(&cron, "MutatingWebhookConfiguration").is_empty());

    let helm = crate::chart::helm().unwrap();
    let chart = Command::new(&helm)
        .arg("show")
        .arg("chart")
        .arg(first.join(format!("kubeecr-{v}.tgz")))
        .output()
        .unwrap();
    let chart = String::from_utf8_lossy(&chart.stdout);
    assert!(chart.contains(&format!("\nversion: {v}\n")), "{chart}");
    assert!(chart.contains(&format!("\nappVersion: {v}\n")), "{chart}");

    let sbom: Value = serde_json::from_slice(
        &std::fs::read(first.join(format!("kubeecr-{v}.cdx.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(sbom["bomFormat"], "CycloneDX");
    let components: Vec<&str> = sbom["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for shipped in ["kube-client", "rustls", "aws-sdk-ecr", "hyper", "tokio"] {
        assert!(components.contains(&shipped), "{shipped} in the SBOM");
    }
    for test_only in ["proptest", "criterion", "kubeecr-testkit"] {
        assert!(
            !components.contains(&test_only),
            "{test_only} is not shipped"
        );
    }

    let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
    let other = dir.join(format!("kubeecr-{v}-linux-other"));
    std::fs::write(&other, b"another architecture's binary").unwrap();
    release(
        &pinned,
        &[v, "--digest", &digest, "--add", other.to_str().unwrap()],
    )
    .unwrap();
    let sums = std::fs::read_to_string(pinned.join("SHA256SUMS")).unwrap();
    assert!(
        sums.contains(&format!("  kubeecr-{v}-linux-other\n")),
        "an added file is summed\n{sums}"
    );
    let install = docs(&pinned.join("install.yaml"));
    assert_eq!(
        workload_image(one(&install, "Deployment")),
        format!("{IMAGE}:{v}@{digest}")
    );
    let values = Command::new(&helm)
        .arg("show")
        .arg("values")
        .arg(pinned.join(format!("kubeecr-{v}.tgz")))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&values.stdout).contains(&format!("digest: \"{digest}\"")),
        "the chart's image is pinned too"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// What release.sh refuses, before it writes anything, each with the fix.
#[test]
fn a_release_refuses_what_does_not_agree() {
    let dir = scratch();
    let out = dir.join("dist");
    let cases: &[(&[&str], &str)] = &[
        (&["v0.2.0"], "no leading v"),
        (&["9.9.9"], "set version = \"9.9.9\" in Cargo.toml"),
        (
            &[version(), "--digest", "sha256:abc"],
            "64 lowercase hex digits",
        ),
    ];
    for (args, fix) in cases {
        let error = release(&out, args).unwrap_err();
        assert!(error.contains(fix), "{args:?}: {fix:?} not in\n{error}");
        assert!(!out.exists(), "{args:?}: nothing written");
    }
    // A directory that holds something else is never emptied.
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("keep.txt"), b"mine").unwrap();
    let error = release(&out, &[version()]).unwrap_err();
    assert!(error.contains("give a new or empty directory"), "{error}");
    assert_eq!(std::fs::read(out.join("keep.txt")).unwrap(), b"mine");
    std::fs::remove_dir_all(dir).unwrap();
}

/// The API server accepts install.yaml and install-cronjob.yaml as released (a server-side
/// dry run, cert-manager's CRDs present; kubeecr's namespace made if missing, since a dry run
/// does not create it for the objects in it).
#[tokio::test]
async fn the_released_manifests_are_accepted_by_the_real_api_server() {
    if !has_kubectl() || !release_tools() {
        return;
    }
    let Some(cluster) =
        TestCluster::real("the_released_manifests_are_accepted_by_the_real_api_server").await
    else {
        return;
    };
    let admin: PathBuf = cluster.kubeconfig().to_path_buf();
    ensure_cert_manager_crds(&admin);
    let dir = scratch();
    let out = dir.join("dist");
    release(&out, &[version()]).unwrap();
    if kubectl(&admin, &["get", "namespace", "kubeecr"], "").is_err() {
        kubectl(&admin, &["create", "namespace", "kubeecr"], "").unwrap();
    }
    for file in ["install.yaml", "install-cronjob.yaml"] {
        let path = out.join(file);
        let applied = kubectl(
            &admin,
            &["apply", "--dry-run=server", "-f", path.to_str().unwrap()],
            "",
        )
        .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(
            applied.lines().count(),
            docs(&path).len(),
            "{file}: every object accepted\n{applied}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// Every place that names kubeecr's version names Cargo.toml's: the chart, the manifests'
/// images, the example overlays, the Dockerfile's build line.
#[test]
fn every_version_reference_agrees() {
    let v = version();
    let read = |path: &str| std::fs::read_to_string(repo().join(path)).unwrap();
    let chart = read("charts/kubeecr/Chart.yaml");
    assert!(
        chart.contains(&format!("\nversion: {v}\n")),
        "Chart.yaml version"
    );
    assert!(
        chart.contains(&format!("\nappVersion: \"{v}\"\n")),
        "Chart.yaml appVersion"
    );
    for manifest in [
        "manifests/deployment.yaml",
        "manifests/cronjob/cronjob.yaml",
    ] {
        assert!(
            read(manifest).contains(&format!("image: {IMAGE}:{v}\n")),
            "{manifest}"
        );
    }
    for overlay in [
        "examples/installation/kustomization.yaml",
        "examples/installation/cronjob/kustomization.yaml",
        "examples/installation/namespaced/kustomization.yaml",
    ] {
        assert!(
            read(overlay).contains(&format!("newTag: {v}\n")),
            "{overlay}"
        );
    }
    assert!(
        read("Dockerfile").contains(&format!("-t {IMAGE}:{v} .")),
        "Dockerfile"
    );
    let changelog = read("CHANGELOG.md");
    assert!(
        changelog.contains(&format!("\n## [{v}]")),
        "CHANGELOG.md has {v}"
    );
}

/// The workflows for the public repository, checked offline as far as the tools here allow:
/// their schema (check-jsonschema's copy of GitHub's), and that they run what is tested here
/// (.ci/run, scripts/release.sh) and sign keylessly.
#[test]
fn the_workflows_are_valid_and_run_what_is_tested_here() {
    let venv = std::env::var("KUBEECR_VENV").unwrap_or_else(|_| ".venv".into());
    let checker = repo().join(venv).join("bin/check-jsonschema");
    if !tool_present(
        checker.exists(),
        "check-jsonschema (scripts/test.sh installs it into .venv)",
    ) {
        return;
    }
    let workflows = repo().join(".github/workflows");
    let out = Command::new(&checker)
        .args(["--builtin-schema", "vendor.github-workflows"])
        .arg(workflows.join("ci.yml"))
        .arg(workflows.join("release.yml"))
        .arg(workflows.join("fuzz.yml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |f: &str| std::fs::read_to_string(workflows.join(f)).unwrap();
    let ci = read("ci.yml");
    assert!(ci.contains(".ci/run"), "ci.yml runs .ci/run");
    // Fuzzing: every target ten minutes, nightly and on release tags, what it finds uploaded.
    let fuzz_text = read("fuzz.yml");
    let fuzz: Value = serde_norway::from_str(&fuzz_text).unwrap();
    assert_eq!(fuzz["on"]["push"]["tags"][0], "v*");
    assert!(fuzz["on"]["schedule"][0]["cron"].is_string());
    let matrix: Vec<&str> = fuzz["jobs"]["fuzz"]["strategy"]["matrix"]["target"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let mut targets: Vec<String> = std::fs::read_dir(repo().join("fuzz/fuzz_targets"))
        .unwrap()
        .map(|e| {
            e.unwrap()
                .path()
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    targets.sort();
    let mut listed: Vec<String> = matrix.iter().map(|t| t.to_string()).collect();
    listed.sort();
    assert_eq!(listed, targets, "fuzz.yml runs every target");
    assert!(fuzz_text.contains("run: scripts/fuzz.sh 600 \"$TARGET\""));
    assert!(fuzz_text.contains("actions/upload-artifact@"));
    let text = read("release.yml");
    let release: Value = serde_norway::from_str(&text).unwrap();
    assert_eq!(release["on"]["push"]["tags"][0], "v*");
    for needed in [
        "scripts/release.sh \"${GITHUB_REF_NAME#v}\" --check",
        "scripts/release.sh \"$version\" --digest \"$DIGEST\"",
        "platforms: linux/amd64,linux/arm64",
        "provenance: mode=max",
        "cosign sign --yes --recursive \"$IMAGE@$DIGEST\"",
        "cosign sign-blob --yes",
        "cosign attest --yes --type cyclonedx",
        "cosign sign --yes \"ghcr.io/deft/charts/kubeecr@$chart_digest\"",
        "gh release create",
    ] {
        assert!(text.contains(needed), "release.yml: {needed}");
    }
    // Only the job that publishes may write or sign, and it runs only cosign, helm and gh.
    for (job, spec) in release["jobs"].as_object().unwrap() {
        let perms = &spec["permissions"];
        let signs = perms["id-token"] == "write" || perms["contents"] == "write";
        assert_eq!(signs, job == "publish", "{job}: {perms}");
    }
    assert_eq!(release["jobs"]["publish"]["environment"], "release");
    let publish = serde_norway::to_string(&release["jobs"]["publish"]["steps"]).unwrap();
    assert!(
        !publish.contains("release.sh") && !publish.contains("cargo"),
        "{publish}"
    );
    // Every action pinned by commit, every checkout without a stored token, and secrets only
    // through env: never pasted into a script.
    for (name, workflow) in [
        ("ci.yml", &ci),
        ("release.yml", &text),
        ("fuzz.yml", &fuzz_text),
    ] {
        for line in workflow.lines().filter(|l| {
            l.trim_start().starts_with("- uses:") || l.trim_start().starts_with("uses:")
        }) {
            let at = line.split('@').nth(1).unwrap_or_default();
            let pin = at.split_whitespace().next().unwrap_or_default();
            assert!(
                pin.len() == 40 && pin.bytes().all(|b| b.is_ascii_hexdigit()),
                "{name}: {line}"
            );
        }
        let checkouts = workflow.matches("actions/checkout@").count();
        assert_eq!(
            workflow.matches("persist-credentials: false").count(),
            checkouts,
            "{name}"
        );
        let value: Value = serde_norway::from_str(workflow).unwrap();
        for (job, spec) in value["jobs"].as_object().unwrap() {
            for step in spec["steps"].as_array().unwrap() {
                let run = step["run"].as_str().unwrap_or_default();
                assert!(
                    !run.contains("${{"),
                    "{name} {job}: an expression inside run:\n{run}"
                );
            }
        }
    }
}
