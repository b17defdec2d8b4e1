//! Files generated from one source, checked current: docs/reference/cli.md from kubeecr's
//! clap definitions, and the kustomize monitoring components from the Helm chart
//! (scripts/generate.sh writes both).

use std::fmt::Write as _;
use std::process::Command;

use clap::CommandFactory;
use kubeecr::cmd::Cli;

use crate::install::repo;

const CLI_REFERENCE: &str = "docs/reference/cli.md";

/// One flag: its name(s), variable, default and help, as a table row.
fn row(arg: &clap::Arg) -> String {
    let mut name = match (arg.get_long(), arg.get_short()) {
        (Some(long), Some(short)) => format!("`-{short}`, `--{long}`"),
        (Some(long), None) => format!("`--{long}`"),
        (None, Some(short)) => format!("`-{short}`"),
        (None, None) => format!("`{}`", arg.get_id()),
    };
    let takes_value = arg.get_num_args().is_some_and(|n| n.takes_values())
        && !matches!(arg.get_action(), clap::ArgAction::SetTrue);
    if takes_value && arg.get_long().is_some() {
        let value = arg
            .get_value_names()
            .and_then(|v| v.first())
            .map_or_else(|| arg.get_id().as_str().to_uppercase(), ToString::to_string);
        name = format!("{name} `{value}`");
    }
    let env = arg.get_env().map_or_else(
        || "none".to_string(),
        |e| format!("`{}`", e.to_string_lossy()),
    );
    let default: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|d| d.to_string_lossy().into_owned())
        .collect();
    let default = if default.is_empty() {
        String::new()
    } else {
        format!("`{}`", default.join(","))
    };
    let mut help = arg
        .get_long_help()
        .or(arg.get_help())
        .map(ToString::to_string)
        .unwrap_or_default()
        .replace('\n', " ")
        .replace('|', "\\|");
    if !help.is_empty() && !help.ends_with('.') {
        help.push('.');
    }
    let values: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| format!("`{}`", v.get_name()))
        .collect();
    if !values.is_empty() && !matches!(arg.get_action(), clap::ArgAction::SetTrue) {
        let _ = write!(help, " One of {}.", values.join(", "));
    }
    if arg.is_required_set() {
        help = format!("Required. {help}");
    }
    format!("| {name} | {env} | {default} | {help} |\n")
}

fn table(args: Vec<&clap::Arg>) -> String {
    let mut out = String::from("| flag | variable | default | what |\n|---|---|---|---|\n");
    for arg in args {
        out.push_str(&row(arg));
    }
    out
}

fn visible(cmd: &clap::Command) -> Vec<&clap::Arg> {
    cmd.get_arguments()
        .filter(|a| !a.is_hide_set() && !a.is_positional())
        .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
        .collect()
}

/// The reference, from the definitions alone.
pub fn cli_reference() -> String {
    let mut root = Cli::command();
    root.build();
    let mut out = String::new();
    let _ = write!(
        out,
        "# kubeecr command-line reference\n\n\
         Generated from kubeecr's own definitions by `scripts/generate.sh`; \
         `tests/integration/generated.rs` fails when this file is stale. `kubeecr help \
         <command>` prints the same.\n\n\
         {}\n\n\
         Every flag that configures a running kubeecr also reads the variable named beside \
         it, which the manifests and the Helm chart use; a flag given on the command line \
         wins. \"none\": the flag reads no variable. Durations take `30s`, `5m`, `4h`.\n\n\
         ## Every command\n\n",
        root.get_about()
            .map(ToString::to_string)
            .unwrap_or_default()
    );
    let globals: Vec<&clap::Arg> = visible(&root)
        .into_iter()
        .filter(|a| a.is_global_set())
        .collect();
    out.push_str(&table(globals));
    for sub in root
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let mut about = sub
            .get_long_about()
            .or(sub.get_about())
            .map(ToString::to_string)
            .unwrap_or_default();
        if !about.ends_with('.') {
            about.push('.');
        }
        let _ = write!(out, "\n## `kubeecr {}`\n\n{about}\n\n", sub.get_name());
        let args: Vec<&clap::Arg> = visible(sub)
            .into_iter()
            .filter(|a| !a.is_global_set())
            .collect();
        out.push_str(&table(args));
        if let Some(after) = sub.get_after_help() {
            let _ = write!(out, "\n{after}\n");
        }
    }
    out
}

/// docs/reference/cli.md is what the definitions give today. With `KUBEECR_WRITE_GENERATED=1`
/// it is written instead (scripts/generate.sh).
#[test]
fn the_cli_reference_is_current() {
    let path = repo().join(CLI_REFERENCE);
    let generated = cli_reference();
    if std::env::var_os("KUBEECR_WRITE_GENERATED").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{CLI_REFERENCE} is stale: run scripts/generate.sh (or KUBEECR_WRITE_GENERATED=1 cargo test --test integration generated::)"
    );
}

/// Every flag of every command is in the reference, with its variable or "none", and no
/// flag claims a variable kubeecr does not read.
#[test]
fn every_flag_says_which_variable_it_reads() {
    let reference = cli_reference();
    let mut root = Cli::command();
    root.build();
    for sub in root.get_subcommands().filter(|s| s.get_name() != "help") {
        let heading = format!("## `kubeecr {}`", sub.get_name());
        let section = reference
            .split(&heading)
            .nth(1)
            .expect("a section per command");
        let section = section.split("\n## ").next().unwrap();
        for arg in visible(sub).into_iter().filter(|a| !a.is_global_set()) {
            let Some(long) = arg.get_long() else { continue };
            let line = section
                .lines()
                .find(|l| {
                    l.starts_with(&format!("| `--{long}`")) || l.contains(&format!(", `--{long}`"))
                })
                .unwrap_or_else(|| panic!("{} --{long} is in the reference", sub.get_name()));
            match arg.get_env() {
                Some(env) => assert!(
                    line.contains(&format!("| `{}` |", env.to_string_lossy())),
                    "{line}"
                ),
                None => assert!(line.contains("| none |"), "{line}"),
            }
        }
    }
    for needed in [
        "--aws-timeout",
        "--page-size",
        "--context",
        "--service",
        "--dry-run",
    ] {
        assert!(
            reference.contains(&format!("`{needed}`")),
            "{needed} is documented"
        );
    }
}

/// The monitoring components under examples/installation/ are what the chart renders.
#[test]
fn the_monitoring_components_are_the_charts() {
    let Some(helm) = crate::chart::helm() else {
        return;
    };
    let venv = helm.parent().unwrap().parent().unwrap();
    let out = Command::new(repo().join("scripts/generate.sh"))
        .arg("--check")
        .env("KUBEECR_VENV", venv)
        .env("KUBEECR_HELM", &helm)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
