//! `kubeecr refresh` flows, run against the API double and, when configured, a real cluster.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use kubeecr::contract::policy::{NamespaceRules, Policy, ROLE_FLAG};
use kubeecr::k8s;
use kubeecr::refresher::write::Outcome;
use kubeecr_testkit::cluster::TestCluster;
use kubeecr_testkit::moto::EcrProxy;
use serde_json::json;

use crate::common::*;
use crate::on_both_backends;

const US1: &str = "111111111111.dkr.ecr.us-west-2.amazonaws.com";
const US2: &str = "222222222222.dkr.ecr.us-west-2.amazonaws.com";
const EU1: &str = "111111111111.dkr.ecr.eu-central-1.amazonaws.com";
const US_HOST: &str = "123456789012.dkr.ecr.us-west-2.amazonaws.com";
const FOREIGN: &[u8] = br#"{"auths":{"https://index.docker.io/v1/":{"auth":"dXNlcjpodWI=","email":"ops@example.com"},"quay.io":{"auth":"cTpx"}},"credsStore":"desktop"}"#;

async fn multi_registry_fill_keeps_foreign_data(cluster: TestCluster) {
    let ecr = EcrProxy::start().await;
    let client = cluster.client();
    let ns = cluster.ns();
    let extra = b"\x00\x01binary\xff config";
    let created = create(
        &client,
        ns,
        &secret(
            "pull",
            DOCKER_CONFIG_JSON,
            &[
                (
                    ANNOTATION,
                    "111111111111/us-west-2, 222222222222/us-west-2,111111111111/eu-central-1",
                ),
                ("team.example/owner", "a"),
            ],
            &[(".dockerconfigjson", FOREIGN), ("extra.bin", extra)],
        ),
    )
    .await;

    let summary = refresh_namespace(&client, &ecr, ns).await;
    assert_eq!(
        (
            summary.refreshed,
            summary.unchanged,
            summary.skipped,
            summary.failed
        ),
        (1, 0, 0, 0),
        "{summary:?}"
    );
    // One call per (principal, region): two regions.
    let regions: BTreeSet<String> = ecr.token_calls().into_iter().map(|c| c.region).collect();
    assert_eq!(ecr.token_calls().len(), 2);
    assert_eq!(
        regions,
        BTreeSet::from(["eu-central-1".to_string(), "us-west-2".to_string()])
    );
    assert_eq!(summary.ecr_calls, 2);

    let after = get(&client, ns, "pull").await;
    let config = dockerconfig(&after);
    // Each host holds exactly the token ECR issued for its region (the default principal):
    // one token serves every account of a region.
    let us = ecr.newest("us-west-2", None).expect("issued for us-west-2");
    let eu = ecr
        .newest("eu-central-1", None)
        .expect("issued for eu-central-1");
    assert_eq!(password_of(&config, US1), us.password, "{US1}");
    assert_eq!(password_of(&config, US2), us.password, "{US2}");
    assert_eq!(password_of(&config, EU1), eu.password, "{EU1}");
    let before: serde_json::Value = serde_json::from_slice(FOREIGN).unwrap();
    assert_eq!(
        config["auths"]["https://index.docker.io/v1/"],
        before["auths"]["https://index.docker.io/v1/"]
    );
    assert_eq!(config["auths"]["quay.io"], before["auths"]["quay.io"]);
    assert_eq!(config["credsStore"], "desktop");
    assert_eq!(
        data_bytes(&after, "extra.bin").unwrap(),
        extra,
        "other keys byte for byte"
    );
    // In place: same object, same labels (and kubeecr's own), other annotations kept.
    assert_eq!(after.metadata.uid, created.metadata.uid);
    let mut labels = created.metadata.labels.clone().unwrap();
    labels.insert(MANAGED.to_string(), "true".to_string());
    assert_eq!(after.metadata.labels, Some(labels));
    assert_eq!(
        annotation(&after, "team.example/owner").as_deref(),
        Some("a")
    );
    // ECR's own expiry, end to end: the earlier of the two tokens' (they may straddle a
    // second).
    let earliest = [&us, &eu]
        .into_iter()
        .min_by_key(|i| i.expires_at.parse::<jiff::Timestamp>().unwrap())
        .unwrap();
    assert_eq!(
        annotation(&after, EXPIRES_AT).as_deref(),
        Some(earliest.expires_at.as_str()),
        "the expiry ECR gave"
    );

    // A second run, with a cold cache as a CronJob has: nothing is due, no ECR call, no write.
    let summary = refresh_namespace(&client, &ecr, ns).await;
    assert_eq!(
        (summary.refreshed, summary.unchanged),
        (0, 1),
        "{summary:?}"
    );
    assert_eq!(summary.ecr_calls, 0);
    assert_eq!(rv(&get(&client, ns, "pull").await), rv(&after));
}
on_both_backends!(multi_registry_fill_keeps_foreign_data);

/// On purpose with moto's own answer (`TokenStyle::Moto`), the one test of its kind end to
/// end: ECR never answers with an expiry in the past, but moto does (2015), and kubeecr then
/// records 12 hours from the fetch instead, and still writes the token.
async fn an_expiry_in_the_past_is_recorded_as_twelve_hours_from_the_fetch(cluster: TestCluster) {
    let ecr = EcrProxy::start().await;
    ecr.set_token_style(kubeecr_testkit::moto::TokenStyle::Moto);
    let client = cluster.client();
    let ns = cluster.ns();
    create_opted_in(&client, ns, "pull", "123456789012/us-west-2").await;
    let before = jiff::Timestamp::now();
    let summary = refresh_namespace(&client, &ecr, ns).await;
    let after_refresh = jiff::Timestamp::now();
    assert_eq!((summary.refreshed, summary.failed), (1, 0), "{summary:?}");
    assert!(
        ecr.issued().is_empty(),
        "moto's answer went through unchanged"
    );
    let after = get(&client, ns, "pull").await;
    assert_eq!(
        password_of(&dockerconfig(&after), US_HOST),
        "123456789012-auth-token",
        "moto's token"
    );
    let expires: jiff::Timestamp = annotation(&after, EXPIRES_AT).unwrap().parse().unwrap();
    let twelve = jiff::SignedDuration::from_hours(12);
    // Whole seconds: the fetch's second, plus 12 hours.
    let earliest = jiff::Timestamp::from_second(before.as_second()).unwrap() + twelve;
    assert!(
        (earliest..=after_refresh + twelve).contains(&expires),
        "moto's 2015 expiry is taken as 12h from the fetch: {expires}, fetched between {before} and {after_refresh}"
    );
}
on_both_backends!(an_expiry_in_the_past_is_recorded_as_twelve_hours_from_the_fetch);

async fn invalid_secrets_are_skipped_untouched(cluster: TestCluster) {
    let ecr = EcrProxy::start().await;
    let client = cluster.client();
    let ns = cluster.ns();
    let cases = [
        secret(
            "short-account",
            DOCKER_CONFIG_JSON,
            &[(ANNOTATION, "12345/us-west-2")],
            &[(".dockerconfigjson", FOREIGN)],
        ),
        secret(
            "bad-region",
            DOCKER_CONFIG_JSON,
            &[(ANNOTATION, "123456789012/moon-1")],
            &[(".dockerconfigjson", FOREIGN)],
        ),
        secret(
            "opaque",
            "Opaque",
            &[(ANNOTATION, "123456789012/us-west-2")],
            &[("a", b"b")],
        ),
        secret(
            "role-not-allowed",
            DOCKER_CONFIG_JSON,
            &[
                (ANNOTATION, "123456789012/us-west-2"),
                (
                    "deft.com/kubeecr-role",
                    "arn:aws:iam::123456789012:role/evil",
                ),
            ],
            &[(".dockerconfigjson", FOREIGN)],
        ),
        secret(
            "auths-not-object",
            DOCKER_CONFIG_JSON,
            &[(ANNOTATION, "123456789012/us-west-2")],
            &[(".dockerconfigjson", br#"{"auths":[]}"#)],
        ),
    ];
    let mut before = Vec::new();
    for s in &cases {
        before.push(create(&client, ns, s).await);
    }
    let summary = refresh_namespace(&client, &ecr, ns).await;
    assert_eq!(
        (summary.skipped, summary.refreshed, summary.failed),
        (5, 0, 0),
        "{summary:?}"
    );
    let message = |name: &str| {
        summary
            .reports
            .iter()
            .find(|r| r.secret.name == name)
            .map(|r| match &r.outcome {
                // As `kubeecr refresh` prints it: the Secret, then why.
                Outcome::Skipped(why) => format!("{}: {why}", r.secret),
                other => panic!("{name}: {other:?}"),
            })
            .unwrap()
    };
    assert_eq!(
        message("short-account"),
        format!(
            "{ns}/short-account: deft.com/kubeecr \"12345/us-west-2\": account id 12345 has 5 digits; AWS account ids have 12, leading zeros included: if it lost them, write 000000012345/us-west-2"
        )
    );
    assert!(message("bad-region").contains("\"moon-1\" is not an AWS region"));
    assert!(message("opaque").contains("type is \"Opaque\""));
    assert!(message("role-not-allowed").contains("not allowed in this namespace"));
    assert!(message("auths-not-object").contains("\"auths\" that is not an object"));
    for b in before {
        let now = get(&client, ns, b.metadata.name.as_deref().unwrap()).await;
        assert_eq!(rv(&now), rv(&b), "{:?} was modified", b.metadata.name);
        assert_eq!(now.data, b.data);
    }
    assert!(
        ecr.token_calls().is_empty(),
        "no token is fetched for a skipped secret"
    );
}
on_both_backends!(invalid_secrets_are_skipped_untouched);

async fn conflicts_are_retried_without_losing_the_other_write(cluster: TestCluster) {
    let ecr = EcrProxy::start().await;
    let ns = cluster.ns().to_string();
    let plain = cluster.client();
    create(
        &plain,
        &ns,
        &secret(
            "contended",
            DOCKER_CONFIG_JSON,
            &[(ANNOTATION, "123456789012/us-west-2")],
            &[(".dockerconfigjson", FOREIGN)],
        ),
    )
    .await;
    let (client, forced) = cluster.client_with_conflicts("contended", 2);
    let summary = refresh_namespace(&client, &ecr, &ns).await;
    assert_eq!(
        forced.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "two 409s were forced"
    );
    assert_eq!(summary.refreshed, 1, "{summary:?}");
    let after = get(&plain, &ns, "contended").await;
    password_of(
        &dockerconfig(&after),
        "123456789012.dkr.ecr.us-west-2.amazonaws.com",
    );
    let labels = after.metadata.labels.clone().unwrap();
    assert_eq!(
        labels.get("kubeecr.test/interfered").map(String::as_str),
        Some("2")
    );
    let config = dockerconfig(&after);
    for n in [1, 2] {
        let host = kubeecr_testkit::conflict::interfering_host(n);
        assert!(
            config["auths"].get(&host).is_some(),
            "the other writer's {host} survived: {config}"
        );
    }
    assert_eq!(ecr.token_calls().len(), 1, "retries reuse the cached token");
}
on_both_backends!(conflicts_are_retried_without_losing_the_other_write);

async fn unselected_namespaces_stay_untouched(mut cluster: TestCluster) {
    let ecr = EcrProxy::start().await;
    let other = cluster.namespace("kubeecr-other").await;
    let client = cluster.client();
    let ns = cluster.ns().to_string();
    let s = secret(
        "pull",
        DOCKER_CONFIG_JSON,
        &[(ANNOTATION, "123456789012/us-west-2")],
        &[(".dockerconfigjson", FOREIGN)],
    );
    create(&client, &ns, &s).await;
    let untouched = create(&client, &other, &s).await;
    let summary = refresh_namespace(&client, &ecr, &ns).await;
    assert_eq!(summary.refreshed, 1);
    assert!(summary.reports.iter().all(|r| r.secret.namespace == ns));
    let after = get(&client, &other, "pull").await;
    assert_eq!(rv(&after), rv(&untouched));
    assert_eq!(annotation(&after, EXPIRES_AT), None);
    assert!(annotation(&get(&client, &ns, "pull").await, EXPIRES_AT).is_some());
}
on_both_backends!(unselected_namespaces_stay_untouched);

async fn one_call_per_principal_and_region(cluster: TestCluster) {
    let ecr = EcrProxy::start().await;
    let client = cluster.client();
    let ns = cluster.ns();
    for i in 0..12 {
        let value = format!(
            "{:012}/us-west-2,{:012}/eu-west-1",
            100_000_000_000u64 + i,
            200_000_000_000u64 + i
        );
        create_opted_in(&client, ns, &format!("s{i}"), &value).await;
    }
    for (name, role) in [
        ("r1", "arn:aws:iam::123456789012:role/ecr-a"),
        ("r2", "arn:aws:iam::123456789012:role/ecr-b"),
        ("r3", "arn:aws:iam::123456789012:role/ecr-a"),
    ] {
        create(
            &client,
            ns,
            &secret(
                name,
                DOCKER_CONFIG_JSON,
                &[
                    (ANNOTATION, "123456789012/us-west-2"),
                    ("deft.com/kubeecr-role", role),
                ],
                &[(".dockerconfigjson", b"{}")],
            ),
        )
        .await;
    }
    // A big unrelated secret, as Helm release secrets are.
    create_helm_release(&client, ns).await;
    let policy = Policy {
        allowed_role_arns: NamespaceRules::new(
            ROLE_FLAG,
            ["*=arn:aws:iam::123456789012:role/ecr-*"],
        ),
        ..policy_for(&[ns])
    };
    if let Some(double) = cluster.double_server() {
        double.clear_requests();
    }
    let summary = refresher(client.clone(), token_cache(&ecr.url()).await, policy)
        .run_once()
        .await
        .unwrap();
    assert_eq!((summary.refreshed, summary.failed), (15, 0), "{summary:?}");
    // Default principal: us-west-2 and eu-west-1. Role a and role b: us-west-2 each.
    let calls = ecr.token_calls();
    assert_eq!(calls.len(), 4, "{calls:?}");
    assert_eq!(ecr.calls("AssumeRole").len(), 2);
    let principals: BTreeSet<(String, String)> = calls
        .iter()
        .map(|c| (c.access_key_id.clone(), c.region.clone()))
        .collect();
    assert_eq!(
        principals.len(),
        4,
        "each call is a distinct (principal, region)"
    );
    // Each Secret holds exactly the token issued for its (principal, region): the same role,
    // the same token.
    let newest = |region: &str, role: Option<&str>| {
        ecr.newest(region, role)
            .unwrap_or_else(|| panic!("issued for {region} {role:?}"))
            .password
    };
    let host = "123456789012.dkr.ecr.us-west-2.amazonaws.com";
    for (name, role) in [
        ("r1", "arn:aws:iam::123456789012:role/ecr-a"),
        ("r2", "arn:aws:iam::123456789012:role/ecr-b"),
        ("r3", "arn:aws:iam::123456789012:role/ecr-a"),
    ] {
        let config = dockerconfig(&get(&client, ns, name).await);
        assert_eq!(
            password_of(&config, host),
            newest("us-west-2", Some(role)),
            "{name}"
        );
    }
    for i in 0..12 {
        let config = dockerconfig(&get(&client, ns, &format!("s{i}")).await);
        let us = format!(
            "{:012}.dkr.ecr.us-west-2.amazonaws.com",
            100_000_000_000u64 + i
        );
        let eu = format!(
            "{:012}.dkr.ecr.eu-west-1.amazonaws.com",
            200_000_000_000u64 + i
        );
        assert_eq!(password_of(&config, &us), newest("us-west-2", None), "s{i}");
        assert_eq!(password_of(&config, &eu), newest("eu-west-1", None), "s{i}");
    }

    if let Some(double) = cluster.double_server() {
        let requests = double.requests();
        let lists: Vec<_> = requests
            .iter()
            .filter(|r| r.method == "GET" && r.path.ends_with("/secrets"))
            .collect();
        assert!(
            lists.len() >= 6,
            "16 secrets in pages of 3: {}",
            lists.len()
        );
        // Only kubeecr's own Secrets are ever listed in full; the rest as metadata.
        assert!(
            lists.iter().all(|r| r.is_metadata_only()
                || r.label_selector().as_deref() == Some("deft.com/kubeecr-managed=true")),
            "full lists select kubeecr's Secrets: {lists:?}"
        );
        assert!(lists.iter().any(|r| r.is_metadata_only()));
        assert!(
            !requests
                .iter()
                .any(|r| r.path.ends_with(&format!("/{HELM_RELEASE}"))),
            "the unrelated secret is never read"
        );
    }
}
on_both_backends!(one_call_per_principal_and_region);

/// The API server's continue token expires mid-list (410): the list starts again.
#[tokio::test]
async fn expired_continue_token_restarts_the_list() {
    let cluster = TestCluster::double().await;
    let ecr = EcrProxy::start().await;
    let client = cluster.client();
    let ns = cluster.ns();
    for i in 0..7 {
        create_opted_in(&client, ns, &format!("s{i}"), "123456789012/us-west-2").await;
    }
    let double = cluster.double_server().unwrap();
    double.fail_next(http::Method::GET, "continue=", 1, 410, "Expired");
    let summary = refresh_namespace(&client, &ecr, ns).await;
    assert_eq!(summary.refreshed, 7, "{summary:?}");
    let first_pages = double
        .requests()
        .iter()
        .filter(|r| {
            r.method == "GET"
                && r.path.ends_with("/secrets")
                && r.is_metadata_only()
                && !r.query.contains("continue")
        })
        .count();
    assert_eq!(first_pages, 2, "the list started over once");
}

/// A list page that fails (a 500, a dropped connection) is asked for again from where the
/// list was: the pass neither fails nor starts the list over.
#[tokio::test]
async fn a_failed_list_page_is_asked_for_again() {
    let cluster = TestCluster::double().await;
    let ecr = EcrProxy::start().await;
    let client = cluster.client();
    let ns = cluster.ns();
    for i in 0..7 {
        create_opted_in(&client, ns, &format!("s{i}"), "123456789012/us-west-2").await;
    }
    let double = cluster.double_server().unwrap();
    double.fail_next(http::Method::GET, "continue=", 1, 500, "InternalError");
    double.drop_next(http::Method::GET, "continue=", 1);
    let summary = refresh_namespace(&client, &ecr, ns).await;
    assert_eq!((summary.refreshed, summary.failed), (7, 0), "{summary:?}");
    let requests = double.requests();
    let list = |r: &&kubeecr_testkit::apiserver::Recorded| {
        r.method == "GET" && r.path.ends_with("/secrets") && r.is_metadata_only()
    };
    let first_pages = requests
        .iter()
        .filter(list)
        .filter(|r| !r.query.contains("continue"))
        .count();
    assert_eq!(first_pages, 1, "the list did not start over");
    let refused = requests
        .iter()
        .filter(list)
        .filter(|r| r.status() != Some(200))
        .count();
    assert_eq!(refused, 2, "both faults were met by the list");
}

/// A failing API server is reported per secret, and the run fails.
#[tokio::test]
async fn patch_errors_fail_the_secret_not_the_run() {
    let cluster = TestCluster::double().await;
    let ecr = EcrProxy::start().await;
    let client = cluster.client();
    let ns = cluster.ns();
    create_opted_in(&client, ns, "a", "123456789012/us-west-2").await;
    create_opted_in(&client, ns, "b", "123456789012/us-west-2").await;
    cluster.double_server().unwrap().fail_next(
        http::Method::PATCH,
        "/secrets/a",
        1,
        500,
        "InternalError",
    );
    let summary = refresh_namespace(&client, &ecr, ns).await;
    assert_eq!((summary.refreshed, summary.failed), (1, 1), "{summary:?}");
    let failed = summary
        .reports
        .iter()
        .find(|r| r.secret.name == "a")
        .unwrap();
    // One line: the Secret, what failed, the API server's message and code.
    let Outcome::Failed(failure) = &failed.outcome else {
        panic!("{failed:?}")
    };
    assert_eq!(
        failure.message,
        format!("{ns}/a: patching it: injected 500 InternalError (HTTP 500 InternalError)")
    );
}

/// Secrets whose data lacks an annotated registry are due even with a fresh expiry.
#[tokio::test]
async fn a_new_registry_in_the_annotation_is_filled_at_once() {
    let cluster = TestCluster::double().await;
    let ecr = EcrProxy::start().await;
    let client = cluster.client();
    let ns = cluster.ns();
    create_opted_in(&client, ns, "s", "123456789012/us-west-2").await;
    let cache = token_cache(&ecr.url()).await;
    refresher(client.clone(), cache.clone(), policy_for(&[ns]))
        .run_once()
        .await
        .unwrap();
    let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client.clone(), ns);
    let patch = json!({"metadata": {"annotations": {ANNOTATION: "123456789012/us-west-2,123456789012/eu-west-1"}}});
    api.patch("s", &Default::default(), &kube::api::Patch::Merge(&patch))
        .await
        .unwrap();
    let summary = refresher(client.clone(), cache, policy_for(&[ns]))
        .run_once()
        .await
        .unwrap();
    assert_eq!(summary.refreshed, 1);
    password_of(
        &dockerconfig(&get(&client, ns, "s").await),
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
    );
}

/// `--exclude-namespaces`: an excluded namespace is filtered out by the API server, so its
/// Secrets are never read, not even as metadata, and nothing is said about them. The real
/// server is asked the same field selector kubeecr sends.
async fn excluded_namespaces_are_never_read(cluster: TestCluster) {
    let ecr = EcrProxy::start().await;
    let client = cluster.client();
    let ns = cluster.ns();
    let marked = secret(
        "excluded",
        DOCKER_CONFIG_JSON,
        &[(ANNOTATION, "123456789012/us-west-2")],
        &[(".dockerconfigjson", b"{}")],
    );
    let mut marked = marked;
    marked.metadata.labels = Some([("kubeecr-test".to_string(), ns.to_string())].into());
    create(&client, ns, &marked).await;
    let all: Api<Secret> = Api::all(client.clone());
    let mine = ListParams::default().labels(&format!("kubeecr-test={ns}"));
    assert_eq!(all.list(&mine).await.unwrap().items.len(), 1);
    let fields = k8s::Scope::Cluster
        .field_selector(&[ns.to_string()])
        .unwrap();
    let excluded = all.list(&mine.clone().fields(&fields)).await.unwrap();
    assert!(excluded.items.is_empty(), "the server applies {fields}");

    // A cluster-wide pass is the double's alone: on a shared cluster it would touch others'.
    let Some(double) = cluster.double_server() else {
        return;
    };
    double.clear_requests();
    let policy = Policy {
        exclude_namespaces: vec![ns.to_string()],
        ..Policy::default()
    };
    let summary = refresher(client.clone(), token_cache(&ecr.url()).await, policy)
        .run_once()
        .await
        .unwrap();
    assert_eq!(
        (summary.refreshed, summary.skipped, summary.failed),
        (0, 0, 0),
        "{summary:?}"
    );
    for r in double.requests() {
        assert!(!r.path.contains(&format!("/namespaces/{ns}/")), "{r:?}");
        if r.path.ends_with("/secrets") {
            assert_eq!(
                r.field_selector().as_deref(),
                Some(fields.as_str()),
                "{r:?}"
            );
        }
    }
    assert!(ecr.token_calls().is_empty());
}
on_both_backends!(excluded_namespaces_are_never_read);

/// Foreign content survives a refresh byte for byte (whitespace, big numbers, number
/// spellings, duplicate keys, escapes), and the ECR host's own entry, written as
/// `https://<host>`, is updated in place with its other fields kept.
async fn foreign_bytes_survive_a_refresh(cluster: TestCluster) {
    let ecr = EcrProxy::start().await;
    let client = cluster.client();
    let ns = cluster.ns();
    let head = "{\n  \"auths\": {\n    \"quay.io\": {\"auth\":\"cTp4\", \"n\": 12345678901234567890123, \"f\": 1.0e2},\n    \"https://123456789012.dkr.ecr.us-west-2.amazonaws.com\": ";
    let own = r#"{"auth":"b2xkOm9sZA==","identitytoken":"tok-1","email":"a@b"}"#;
    let tail = "\n  },\n  \"x\": {\"a\": 1, \"a\": 2},\n  \"HttpHeaders\": {\"User-Agent\": \"\\u0041gent\"}\n}\n";
    let config = format!("{head}{own}{tail}");
    create(
        &client,
        ns,
        &secret(
            "odd",
            DOCKER_CONFIG_JSON,
            &[(ANNOTATION, "123456789012/us-west-2")],
            &[(".dockerconfigjson", config.as_bytes())],
        ),
    )
    .await;
    let summary = refresh_namespace(&client, &ecr, ns).await;
    assert_eq!((summary.refreshed, summary.failed), (1, 0), "{summary:?}");
    let after = data_bytes(&get(&client, ns, "odd").await, ".dockerconfigjson").unwrap();
    let after = String::from_utf8(after).unwrap();
    assert!(after.starts_with(head), "{after}");
    assert!(after.ends_with(tail), "{after}");
    // The https:// form updated in place, then the bare host after the last entry: the form
    // every client reads.
    let middle = &after[head.len()..after.len() - tail.len()];
    let bare = ",\"123456789012.dkr.ecr.us-west-2.amazonaws.com\":";
    let (in_place, added) = middle
        .split_once(bare)
        .expect("a bare entry after the last one");
    let entry: serde_json::Value = serde_json::from_str(in_place).unwrap();
    let issued = ecr.newest("us-west-2", None).expect("issued");
    assert_eq!(entry["identitytoken"], "tok-1");
    assert_eq!(entry["email"], "a@b");
    assert_eq!(entry["username"], "AWS");
    assert_eq!(
        entry["password"],
        issued.password.as_str(),
        "the fresh token"
    );
    let bare: serde_json::Value = serde_json::from_str(added).unwrap();
    assert_eq!(bare["password"], issued.password.as_str());
    assert_eq!(bare["auth"], entry["auth"]);
    assert_eq!(
        bare.as_object().unwrap().len(),
        3,
        "username, password and auth only: {bare}"
    );
}
on_both_backends!(foreign_bytes_survive_a_refresh);

/// The finding: `HTTPS://H`, an upper-case host and `H/team-a` were taken for kubeecr's own
/// `H`, so the path-scoped entry was overwritten, no bare `H` was added, and pulls of
/// `H/other` failed while `status` said filled. The kubelet files none of them under `H`:
/// they stay byte for byte, and the bare host gets the token.
async fn forms_the_kubelet_does_not_match_are_left_and_the_bare_host_written(cluster: TestCluster) {
    let ecr = EcrProxy::start().await;
    let client = cluster.client();
    let ns = cluster.ns();
    let host = "123456789012.dkr.ecr.us-west-2.amazonaws.com";
    let upper = host.to_uppercase();
    let foreign = format!(
        r#""HTTPS://{host}":{{"auth":"YTph"}},"{upper}":{{"auth":"Yjpi"}},"{host}/team-a":{{"auth":"Yzpj"}}"#
    );
    let config = format!(r#"{{"auths":{{{foreign}}}}}"#);
    create(
        &client,
        ns,
        &secret(
            "scoped",
            DOCKER_CONFIG_JSON,
            &[(ANNOTATION, "123456789012/us-west-2")],
            &[(".dockerconfigjson", config.as_bytes())],
        ),
    )
    .await;
    let summary = refresh_namespace(&client, &ecr, ns).await;
    assert_eq!((summary.refreshed, summary.failed), (1, 0), "{summary:?}");
    let after = String::from_utf8(
        data_bytes(&get(&client, ns, "scoped").await, ".dockerconfigjson").unwrap(),
    )
    .unwrap();
    let issued = ecr.newest("us-west-2", None).expect("issued");
    let expected_entry = serde_json::json!({
        "username": "AWS",
        "password": issued.password,
        "auth": base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("AWS:{}", issued.password)
        ),
    });
    assert_eq!(
        after,
        format!(r#"{{"auths":{{{foreign},"{host}":{expected_entry}}}}}"#)
    );
    // Nothing is due any more: a second pass leaves it alone.
    let summary = refresh_namespace(&client, &ecr, ns).await;
    assert_eq!(
        (summary.refreshed, summary.unchanged),
        (0, 1),
        "{summary:?}"
    );
}
on_both_backends!(forms_the_kubelet_does_not_match_are_left_and_the_bare_host_written);

/// Found by review: a config whose part beyond kubeecr's entries was too large to keep was
/// written as if empty, losing every other registry. It is read whole and merged into, whether
/// the Secret was found labelled (kept without its config) or not (read first).
async fn a_config_too_large_to_keep_keeps_every_other_registry(cluster: TestCluster) {
    let ecr = EcrProxy::start().await;
    let client = cluster.client();
    let ns = cluster.ns();
    let foreign: Vec<String> = (0..400)
        .map(|i| format!(r#""r{i}.example.com":{{"auth":"{}"}}"#, "QQ".repeat(50)))
        .collect();
    let config = format!(r#"{{"auths":{{{}}}}}"#, foreign.join(","));
    assert!(config.len() > 20_000);
    for (name, labelled) in [("labelled", true), ("unlabelled", false)] {
        let mut s = secret(
            name,
            DOCKER_CONFIG_JSON,
            &[(ANNOTATION, "123456789012/us-west-2")],
            &[(".dockerconfigjson", config.as_bytes())],
        );
        if labelled {
            s.metadata
                .labels
                .get_or_insert_default()
                .insert(MANAGED.into(), "true".into());
        }
        create(&client, ns, &s).await;
    }
    let summary = refresh_namespace(&client, &ecr, ns).await;
    assert_eq!((summary.refreshed, summary.failed), (2, 0), "{summary:?}");
    let issued = ecr.newest("us-west-2", None).unwrap();
    for name in ["labelled", "unlabelled"] {
        let after = String::from_utf8(
            data_bytes(&get(&client, ns, name).await, ".dockerconfigjson").unwrap(),
        )
        .unwrap();
        assert!(
            after.starts_with(&config[..config.len() - 2]),
            "{name}: every other registry kept"
        );
        let written: serde_json::Value = serde_json::from_str(&after).unwrap();
        assert_eq!(written["auths"].as_object().unwrap().len(), 401, "{name}");
        assert_eq!(
            password_of(&written, "123456789012.dkr.ecr.us-west-2.amazonaws.com"),
            issued.password
        );
    }
}
on_both_backends!(a_config_too_large_to_keep_keeps_every_other_registry);

/// Every host form of a registry holds the token of its region, first filled and then
/// renewed together; foreign entries stay.
async fn host_forms_are_filled_and_renewed_together(cluster: TestCluster) {
    let ecr = EcrProxy::start().await;
    let client = cluster.client();
    let ns = cluster.ns();
    create(
        &client,
        ns,
        &secret(
            "forms",
            DOCKER_CONFIG_JSON,
            &[
                (ANNOTATION, "111111111111/us-east-1"),
                ("deft.com/kubeecr-hosts", "standard,fips,dual-stack"),
            ],
            &[(".dockerconfigjson", FOREIGN)],
        ),
    )
    .await;
    let hosts = [
        "111111111111.dkr.ecr.us-east-1.amazonaws.com",
        "111111111111.dkr.ecr-fips.us-east-1.amazonaws.com",
        "111111111111.dkr-ecr.us-east-1.on.aws",
    ];
    let summary = refresh_namespace(&client, &ecr, ns).await;
    assert_eq!((summary.refreshed, summary.failed), (1, 0), "{summary:?}");
    assert_eq!(ecr.token_calls().len(), 1, "one ECR call for every form");
    let first = ecr.newest("us-east-1", None).unwrap();
    let config = dockerconfig(&get(&client, ns, "forms").await);
    for host in hosts {
        assert_eq!(password_of(&config, host), first.password, "{host}");
    }

    // Forced: a new token, written under every form.
    let forced = force_refresh_namespace(&client, &ecr, ns).await;
    assert_eq!(forced.refreshed, 1, "{forced:?}");
    let second = ecr.newest("us-east-1", None).unwrap();
    assert_ne!(second.password, first.password);
    let after = get(&client, ns, "forms").await;
    let config = dockerconfig(&after);
    for host in hosts {
        assert_eq!(password_of(&config, host), second.password, "{host}");
    }
    assert_eq!(annotation(&after, EXPIRES_AT).unwrap(), second.expires_at);
    let before: serde_json::Value = serde_json::from_slice(FOREIGN).unwrap();
    assert_eq!(config["auths"]["quay.io"], before["auths"]["quay.io"]);
    assert_eq!(config["credsStore"], "desktop");

    // Nothing due: no call, no write.
    let summary = refresh_namespace(&client, &ecr, ns).await;
    assert_eq!(
        (summary.unchanged, summary.ecr_calls),
        (1, 0),
        "{summary:?}"
    );
}
on_both_backends!(host_forms_are_filled_and_renewed_together);
