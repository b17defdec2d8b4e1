//! Shared clusters: one team cannot get a token for another team's registry, or use kubeecr's
//! own AWS identity where the operator did not allow it. Refused at admission, skipped by the
//! refresher with an Event, and shown by `kubeecr status`, each naming the namespace, the
//! registry and the flag to change.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kubeecr_testkit::cluster::TestCluster;
use kubeecr_testkit::moto::EcrProxy;
use serde_json::json;

use crate::common::*;
use crate::on_both_backends;
use crate::serve_process::{ServeProcess, eventually, secret_when};
use crate::serve_scenarios::events_for;
use crate::webhook_flow::{api_message, loopback_reachable, register};

const TEAM_A: &str = "111111111111/us-west-2";
const TEAM_A_HOST: &str = "111111111111.dkr.ecr.us-west-2.amazonaws.com";
const TEAM_B: &str = "222222222222/us-west-2";
const TEAM_B_HOST: &str = "222222222222.dkr.ecr.us-west-2.amazonaws.com";
const TEAM_B_ROLE: &str = "arn:aws:iam::222222222222:role/ecr-team-b";

fn opted_in(name: &str, registries: &str, role: Option<&str>) -> Secret {
    let mut annotations = vec![(ANNOTATION, registries)];
    if let Some(role) = role {
        annotations.push(("deft.com/kubeecr-role", role));
    }
    secret(name, DOCKER_CONFIG_JSON, &annotations, EMPTY)
}

/// The test's namespace plays team B. kubeecr's own identity serves no namespace, team B may
/// use its role and its account's registries, team A another account's.
async fn a_team_cannot_take_another_teams_registry(cluster: TestCluster) {
    if !loopback_reachable(&cluster, "a_team_cannot_take_another_teams_registry") {
        return;
    }
    let ecr = EcrProxy::start().await;
    let client = cluster.client();
    let ns = cluster.ns();
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let registries = format!("--allowed-registries=team-a=111111111111/*,{ns}=222222222222/*");
    let roles = format!("--allowed-role-arns={ns}={TEAM_B_ROLE}");
    let sts = format!("--sts-endpoint={}", ecr.url());
    let flags = [
        registries.as_str(),
        roles.as_str(),
        "--own-identity-namespaces=none",
    ];
    // Made behind the webhook's back (before it was installed): only the refresher sees them.
    let early = [
        ("early-registry", TEAM_A, Some(TEAM_B_ROLE)),
        ("early-identity", TEAM_B, None),
    ];
    for (name, registries, role) in early {
        create(&client, ns, &opted_in(name, registries, role)).await;
    }
    let serve_flags: Vec<&str> = flags.iter().copied().chain([sts.as_str()]).collect();
    let serve = ServeProcess::start(&cluster, &ecr.url(), "replica-a", &serve_flags).await;
    serve.wait_ready().await;
    let webhook = format!("https://127.0.0.1:{}", serve.webhook_port);
    let _registration = register(&cluster, &webhook, &serve.ca.pem()).await;

    let registry_refusal = format!(
        "deft.com/kubeecr: registry {TEAM_A} is not allowed in namespace {ns} (allowed: 222222222222/*); use an allowed registry, or kubeecr's operator can add it with --allowed-registries {ns}={TEAM_A}"
    );
    let identity_refusal = format!(
        "deft.com/kubeecr: kubeecr's own AWS identity does not serve namespace {ns} (--own-identity-namespaces none), so {TEAM_B} needs a role: name one in deft.com/kubeecr-role that --allowed-role-arns allows for {ns}"
    );
    // At admission: refused, with the namespace, the registry and the flag.
    for (name, registries, role, refusal) in [
        ("stolen", TEAM_A, Some(TEAM_B_ROLE), &registry_refusal),
        ("no-role", TEAM_B, None, &identity_refusal),
    ] {
        let err = api
            .create(&PostParams::default(), &opted_in(name, registries, role))
            .await
            .expect_err("refused");
        assert_eq!(
            api_message(err),
            format!(
                "admission webhook \"mutate.kubeecr.deft.com\" denied the request: {ns}/{name}: {refusal}"
            )
        );
    }
    // Team B's own registry, with its role: filled with the token ECR issued to that role.
    create(&client, ns, &opted_in("own", TEAM_B, Some(TEAM_B_ROLE))).await;
    let own = get(&client, ns, "own").await;
    let issued = ecr
        .newest("us-west-2", Some(TEAM_B_ROLE))
        .expect("a token for the role");
    assert_eq!(
        password_of(&dockerconfig(&own), TEAM_B_HOST),
        issued.password
    );

    // The refresher: one NotFilled Event each, with the same reason; nothing written.
    for (name, refusal) in [
        ("early-registry", &registry_refusal),
        ("early-identity", &identity_refusal),
    ] {
        let note = eventually(Duration::from_secs(15), || async {
            events_for(&cluster, name)
                .await
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("NotFilled"))
                .and_then(|e| e.note)
        })
        .await;
        let note = note.unwrap_or_else(|| panic!("a NotFilled Event for {name}\n{}", serve.logs()));
        assert_eq!(&note, refusal, "{name}");
        let held = get(&client, ns, name).await;
        assert_eq!(
            data_bytes(&held, ".dockerconfigjson").unwrap(),
            br#"{"auths":{}}"#
        );
    }
    // `kubeecr status` with the same flags: invalid, for the same reason.
    let out = kubeecr_command("status")
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig())
        .args(["--namespace", ns, "-o", "json"])
        .args(flags)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = |name: &str| {
        status["secrets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} not listed: {status:#}"))
    };
    assert_eq!(row("early-registry")["state"], "invalid");
    assert_eq!(row("early-registry")["reason"], json!(registry_refusal));
    assert_eq!(row("early-identity")["reason"], json!(identity_refusal));
    assert_eq!(row("own")["state"], "filled");
    // The only tokens fetched were team B's, as its role; none reached team A's host.
    assert!(
        ecr.issued()
            .iter()
            .all(|i| i.role.as_deref() == Some(TEAM_B_ROLE))
    );
    for name in ["early-registry", "early-identity", "own"] {
        let s = get(&client, ns, name).await;
        assert!(
            dockerconfig(&s)["auths"].get(TEAM_A_HOST).is_none(),
            "{name}"
        );
    }
    let filled = secret_when(&cluster, "own", Duration::from_secs(1), |s| {
        annotation(s, FINGERPRINTS).is_some()
    })
    .await;
    assert!(filled.is_some());
}
on_both_backends!(a_team_cannot_take_another_teams_registry);
