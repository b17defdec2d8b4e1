//! The docs hold together: every relative link (and its #anchor) resolves, every alert's
//! runbook is a heading of docs/operations.md, and the README stays short. The quick start's
//! commands are run by quick_start.rs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::install::repo;

/// The markdown files people read.
fn documents() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = [
        "README.md",
        "CONTRIBUTING.md",
        "CHANGELOG.md",
        "SECURITY.md",
        "BENCHMARKS.md",
        "charts/kubeecr/README.md",
        "certs/README.md",
    ]
    .iter()
    .map(|f| repo().join(f))
    .collect();
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    walk(&repo().join("docs"), &mut files);
    files
}

/// GitHub's anchor for a heading: lower case, spaces to `-`, and only letters, digits, `-`
/// and `_` kept.
pub fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut in_code = false;
    let mut out = BTreeSet::new();
    for line in markdown.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        }
        if !in_code && line.starts_with('#') {
            out.insert(slug(line.trim_start_matches('#')));
        }
    }
    out
}

/// The `[text](target)` links of `markdown`, outside code blocks.
fn links(markdown: &str) -> Vec<String> {
    let mut in_code = false;
    let mut out = Vec::new();
    for line in markdown.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let tail = &rest[at + 2..];
            let Some(end) = tail.find(')') else { break };
            out.push(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_resolves() {
    let mut checked = 0;
    for file in documents() {
        let text = std::fs::read_to_string(&file).unwrap();
        for link in links(&text) {
            if link.starts_with("http://")
                || link.starts_with("https://")
                || link.starts_with("mailto:")
            {
                continue;
            }
            let (path, anchor) = match link.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (link.as_str(), None),
            };
            let target = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            assert!(
                target.exists(),
                "{}: the link {link} names a missing file",
                file.display()
            );
            if let Some(anchor) = anchor {
                let body = std::fs::read_to_string(&target).unwrap();
                assert!(
                    anchors(&body).contains(anchor),
                    "{}: the link {link} names no heading of {}",
                    file.display(),
                    target.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 40, "{checked} links");
}

#[test]
fn every_alert_has_a_runbook_heading() {
    let operations = std::fs::read_to_string(repo().join("docs/operations.md")).unwrap();
    let headings = anchors(&operations);
    for rules in ["alerts.yaml", "alerts-cronjob.yaml"] {
        let path = repo().join("charts/kubeecr/files").join(rules);
        let text = std::fs::read_to_string(&path).unwrap();
        for alert in crate::monitoring::alert_names(&path) {
            let url = format!(
                "https://github.com/deft/kubeecr/blob/main/docs/operations.md#{}",
                alert.to_lowercase()
            );
            assert!(text.contains(&url), "{alert}: its runbook_url is {url}");
            assert!(
                headings.contains(&alert.to_lowercase()),
                "docs/operations.md has a runbook for {alert}"
            );
        }
    }
}

/// The README stays an entry point: what kubeecr is, the two commands, a quick start, the
/// annotation and links; the rest lives in docs/.
#[test]
fn the_readme_is_short_and_starts_with_what_kubeecr_is() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(lines <= 160, "README.md has {lines} lines");
    assert!(readme.starts_with("# kubeecr\n\nkubeecr keeps AWS ECR pull credentials fresh"));
    let two = readme
        .split("```sh\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    assert!(
        two.contains("scripts/local-run.sh") && two.contains("scripts/test.sh"),
        "{two}"
    );
    for section in ["## Quick start", "## The annotation", "## Documentation"] {
        assert!(readme.contains(&format!("\n{section}\n")), "{section}");
    }
    let ci = std::fs::read_to_string(repo().join(".ci/run")).unwrap();
    assert!(
        ci.contains("\nscripts/test.sh\n"),
        ".ci/run calls the README's test command"
    );
}
