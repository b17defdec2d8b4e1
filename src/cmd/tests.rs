//! The command line as a person types it: parsing, bounds, and the settings it becomes.

use std::time::Duration;

use clap::CommandFactory;

use super::*;
use crate::contract::policy::NamespaceSet;
use crate::runtime::serve::ServeSettings;
use crate::servers::http::ServerSettings;
use crate::servers::limits::ServerLimits;
use crate::servers::limits::ServerTimeouts;

#[test]
fn cli_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn durations_are_checked_when_parsed() {
    for (flag, bad, expected) in [
        (
            "--tls-reload-interval",
            "0s",
            "out of range; use from 1s to 1h",
        ),
        ("--min-fetch-interval", "20000years", "out of range"),
        ("--resync-interval", "10years", "out of range"),
        ("--shutdown-delay", "1y", "too long; use at most 10m"),
        ("--token-wait", "soon", "use e.g. 30s"),
    ] {
        let err = Cli::try_parse_from(["kubeecr", "serve", flag, bad]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(flag) && msg.contains(expected),
            "{flag} {bad}: {msg}"
        );
    }
    assert!(serve(&["--tls-reload-interval", "1s", "--shutdown-delay", "0s"]).is_ok());
    let err = Cli::try_parse_from([
        "kubeecr",
        "certs",
        "--out",
        "x",
        "--valid-for",
        "20000years",
    ])
    .unwrap_err();
    assert!(err.to_string().contains("out of range"), "{err}");
}

#[test]
fn namespaces_must_be_namespace_names() {
    let e = serve(&["--exclude-namespaces", "kube-system,a=b"])
        .err()
        .unwrap();
    assert!(
        e.starts_with("--exclude-namespaces \"a=b\" is not a namespace name"),
        "{e}"
    );
    let e = serve(&["--namespaces", "Team"]).err().unwrap();
    assert!(e.starts_with("--namespaces \"Team\""), "{e}");
    let e = serve(&["--namespaces", "a", "--exclude-namespaces", "a"])
        .err()
        .unwrap();
    assert!(e.contains("so nothing would be served"), "{e}");
    assert!(serve(&["--namespaces", "a,b", "--exclude-namespaces", "a"]).is_ok());
}

#[test]
fn lists_are_comma_separated() {
    let cli = Cli::try_parse_from([
        "kubeecr",
        "refresh",
        "--namespace",
        "a,b",
        "--allowed-role-arns",
        "*=arn:aws:iam::123456789012:role/x*,team-a=arn:aws:iam::123456789012:role/y",
    ])
    .unwrap();
    let Command::Refresh(cmd) = cli.command else {
        panic!("parsed as refresh")
    };
    let policy = cmd.refresher.policy.policy().unwrap();
    assert_eq!(policy.namespaces, ["a", "b"]);
    assert!(
        policy
            .allowed_role_arns
            .allows("b", "arn:aws:iam::123456789012:role/xyz")
    );
    assert!(
        policy
            .allowed_role_arns
            .allows("team-a", "arn:aws:iam::123456789012:role/y")
    );
    assert!(
        !policy
            .allowed_role_arns
            .allows("b", "arn:aws:iam::123456789012:role/y")
    );
}

fn serve(args: &[&str]) -> Result<ServeSettings, String> {
    let cli = Cli::try_parse_from(["kubeecr", "serve"].iter().chain(args)).unwrap();
    let Command::Serve(cmd) = cli.command else {
        panic!("parsed as serve")
    };
    cmd.settings()
}

#[test]
fn leader_election_is_on_unless_turned_off() {
    assert!(serve(&[]).unwrap().election.is_some());
    assert!(serve(&["--leader-elect=false"]).unwrap().election.is_none());
    let e = serve(&["--lease-duration", "5s"]).err().unwrap();
    assert!(e.contains("must hold"), "{e}");
}

#[test]
fn zero_write_qps_lifts_the_limit() {
    assert!(serve(&["--write-qps", "0"]).unwrap().write.rate.is_none());
    let rate = serve(&["--write-qps", "5", "--write-burst", "7"])
        .unwrap()
        .write
        .rate
        .unwrap();
    assert_eq!((rate.per_second.get(), rate.burst.get()), (5, 7));
}

#[test]
fn a_role_pattern_must_name_its_namespace() {
    let e = serve(&[
        "--allowed-role-arns",
        "arn:aws:iam::123456789012:role/ecr-*",
    ])
    .err()
    .unwrap();
    assert!(
        e.contains("team-a=arn:aws:iam::123456789012:role/ecr-*"),
        "{e}"
    );
    assert!(serve(&["--allowed-role-arns", "*=arn:aws:iam::1:role/x"]).is_ok());
    let e = serve(&["--allowed-registries", "team-a=12[/x"])
        .err()
        .unwrap();
    assert!(
        e.starts_with("--allowed-registries \"team-a=12[/x\""),
        "{e}"
    );
    let e = serve(&["--allowed-registries", "123456789012/*"])
        .err()
        .unwrap();
    assert!(
        e.contains("(*=123456789012/* would allow it in every namespace)"),
        "{e}"
    );
    let policy = serve(&[
        "--allowed-registries",
        "team-a=111111111111/*,*=*/eu-west-1",
        "--own-identity-namespaces",
        "team-a",
    ])
    .unwrap()
    .policy;
    assert!(
        policy
            .allowed_registries
            .allows("team-a", "111111111111/us-west-2")
    );
    assert!(
        !policy
            .allowed_registries
            .allows("team-b", "111111111111/us-west-2")
    );
    assert!(
        policy
            .allowed_registries
            .allows("team-b", "111111111111/eu-west-1")
    );
    assert_eq!(
        policy.own_identity,
        NamespaceSet::Only(vec!["team-a".into()])
    );
    assert_eq!(serve(&[]).unwrap().policy.own_identity, NamespaceSet::All);
    // Given but empty would mean the most permissive default: refused.
    for empty in [
        "--allowed-registries=",
        "--own-identity-namespaces= ,",
        "--allowed-role-arns=",
    ] {
        let e = serve(&[empty]).err().unwrap();
        assert!(e.contains("is given but empty"), "{empty}: {e}");
    }
}

#[test]
fn server_bounds_default_to_the_webhook_constants() {
    assert_eq!(serve(&[]).unwrap().webhook.server, ServerSettings::WEBHOOK);
    let server = serve(&[
        "--max-connections=4",
        "--max-concurrent-requests=3",
        "--max-request-bytes=1000",
        "--max-buffered-request-bytes=5000",
        "--http2-max-concurrent-streams=2",
        "--max-header-bytes=9000",
        "--request-body-timeout=2s",
        "--request-timeout=5s",
    ])
    .unwrap()
    .webhook
    .server;
    assert_eq!(
        server.limits,
        ServerLimits {
            max_connections: 4,
            max_connections_per_ip: 32,
            max_concurrent_requests: 3,
            max_request_bytes: 1000,
            max_buffered_request_bytes: 5000,
            http2_max_concurrent_streams: 2,
            max_header_bytes: 9000,
        }
    );
    assert_eq!(
        (server.timeouts.body, server.timeouts.request),
        (Duration::from_secs(2), Duration::from_secs(5))
    );
    assert_eq!(server.timeouts.idle, ServerTimeouts::WEBHOOK.idle);
}

#[test]
fn server_bounds_are_checked_when_parsed() {
    for zero in [
        "--max-connections=0",
        "--max-concurrent-requests=0",
        "--max-request-bytes=0",
        "--max-buffered-request-bytes=0",
        "--http2-max-concurrent-streams=0",
        "--max-header-bytes=100",
        "--request-body-timeout=0s",
        "--request-timeout=0s",
    ] {
        assert!(
            Cli::try_parse_from(["kubeecr", "serve", zero]).is_err(),
            "{zero}"
        );
    }
    let e = serve(&["--request-body-timeout=40s"]).err().unwrap();
    assert!(e.contains("must not exceed --request-timeout"), "{e}");
    let e = serve(&["--max-buffered-request-bytes=1024"]).err().unwrap();
    assert!(e.contains("at least --max-request-bytes"), "{e}");
}

#[test]
fn admission_fill_and_client_ca_are_settings() {
    let settings = serve(&["--admission-fill=false", "--client-ca-file", "/ca.crt"]).unwrap();
    assert!(!settings.webhook.admission_fill);
    assert_eq!(
        settings.webhook.tls.client_ca.as_deref(),
        Some(std::path::Path::new("/ca.crt"))
    );
    let defaults = serve(&[]).unwrap();
    assert!(
        defaults.webhook.admission_fill,
        "the design fills at admission by default"
    );
    assert!(defaults.webhook.tls.client_ca.is_none());
}

#[test]
fn per_namespace_rules_with_tokens_at_admission_are_warned_of() {
    let rules = "--allowed-registries=team-a=111111111111/*";
    let warning = serve(&[rules])
        .unwrap()
        .admission_warning()
        .expect("warned");
    assert!(warning.contains("--admission-fill=false"), "{warning}");
    assert!(warning.len() <= 256, "{}", warning.len());
    for safe in [
        vec![rules, "--admission-fill=false"],
        vec![rules, "--client-ca-file", "/ca.crt"],
        vec!["--allowed-registries=*=111111111111/*"],
        vec![],
    ] {
        assert_eq!(serve(&safe).unwrap().admission_warning(), None, "{safe:?}");
    }
}
