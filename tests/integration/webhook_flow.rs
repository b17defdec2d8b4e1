//! The webhook as the API server calls it: registered from `webhook-config/`, reached over
//! HTTPS with the caBundle. Runs on the API double; on a real cluster too when
//! `KUBEECR_TEST_KUBECONFIG` is set and `KUBEECR_TEST_WEBHOOK_HOST` names an address of this
//! machine that the cluster's API server can reach (e.g. 172.17.0.1 for kind on Docker): the
//! test then serves the webhook on 0.0.0.0 with a certificate for that address and registers
//! it by URL, scoped to its throwaway namespace.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kubeecr::contract::policy::Policy;
use kubeecr_testkit::cluster::{TestCluster, cannot_run_on_real_cluster};
use kubeecr_testkit::moto::{EcrProxy, dead_endpoint};
use serde_json::{Value, json};

use crate::common::*;
use crate::on_both_backends;

const WEBHOOK_HOST_ENV: &str = "KUBEECR_TEST_WEBHOOK_HOST";
const HOST: &str = "123456789012.dkr.ecr.us-west-2.amazonaws.com";

fn webhook_docs() -> Vec<Value> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("webhook-config");
    ["mutating.yaml", "validating.yaml"]
        .iter()
        .flat_map(|f| {
            kubeecr_testkit::yaml::yaml_documents(&std::fs::read_to_string(dir.join(f)).unwrap())
        })
        .collect()
}

/// `webhook-config/` as one YAML stream.
pub fn webhook_yaml() -> String {
    webhook_docs()
        .iter()
        .map(|d| format!("---\n{d}\n"))
        .collect()
}

/// Removes the webhook configurations registered on a real cluster.
pub struct Registration {
    config: Option<kube::Config>,
    name: String,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let Some(config) = self.config.take() else {
            return;
        };
        let name = self.name.clone();
        kubeecr_testkit::cluster::block_on_thread(
            move |client| async move {
                let _ = Api::<MutatingWebhookConfiguration>::all(client.clone())
                    .delete(&name, &DeleteParams::default())
                    .await;
                let _ = Api::<ValidatingWebhookConfiguration>::all(client)
                    .delete(&name, &DeleteParams::default())
                    .await;
            },
            config,
        );
    }
}

/// Serves kubeecr's webhook where the cluster can reach it and registers `webhook-config/`.
/// `None` (printed as skipped, or a failure under `KUBEECR_TEST_REQUIRE_CLUSTER`) on a real
/// cluster without `KUBEECR_TEST_WEBHOOK_HOST`.
async fn webhook_for(
    cluster: &TestCluster,
    state: kubeecr::admission::webhook::WebhookState,
    test: &str,
) -> Option<(RunningWebhook, Registration)> {
    if !cluster.is_real() {
        let webhook = RunningWebhook::start(state).await;
        let registration = register(cluster, &webhook.url, &webhook.ca_pem()).await;
        return Some((webhook, registration));
    }
    let Ok(host) = std::env::var(WEBHOOK_HOST_ENV) else {
        cannot_run_on_real_cluster(
            test,
            &format!(
                "set {WEBHOOK_HOST_ENV} to an address of this machine that the API server can reach"
            ),
        );
        return None;
    };
    let webhook = RunningWebhook::start_on("0.0.0.0:0", &[&host], state).await;
    let port = webhook.url.rsplit(':').next().unwrap().to_string();
    let registration = register(
        cluster,
        &format!("https://{host}:{port}"),
        &webhook.ca_pem(),
    )
    .await;
    Some((webhook, registration))
}

/// Whether a webhook listening on 127.0.0.1 can be reached by the cluster's API server: on
/// the double always, on a real cluster when `KUBEECR_TEST_WEBHOOK_HOST` is 127.0.0.1 (the
/// API server runs on this machine). Prints SKIPPED otherwise; without
/// `KUBEECR_TEST_WEBHOOK_HOST` that fails instead under `KUBEECR_TEST_REQUIRE_CLUSTER`.
pub fn loopback_reachable(cluster: &TestCluster, test: &str) -> bool {
    if !cluster.is_real() {
        return true;
    }
    match std::env::var(WEBHOOK_HOST_ENV) {
        Ok(host) if host == "127.0.0.1" => true,
        // A cluster that runs elsewhere (kind reaches the Docker gateway): the test cannot run
        // on it, whatever this run sets.
        Ok(_) => {
            println!(
                "SKIPPED {test} on a real cluster: its API server must reach 127.0.0.1 ({WEBHOOK_HOST_ENV}=127.0.0.1)"
            );
            false
        }
        Err(_) => {
            cannot_run_on_real_cluster(
                test,
                &format!("its API server must reach 127.0.0.1 ({WEBHOOK_HOST_ENV}=127.0.0.1)"),
            );
            false
        }
    }
}

/// Registers `webhook-config/` at `base_url` (`https://host:port`) trusting `ca_pem`: on the
/// double as it is; on a real cluster by URL, scoped to the test's namespace, removed when
/// the `Registration` is dropped.
pub async fn register(cluster: &TestCluster, base_url: &str, ca_pem: &str) -> Registration {
    if let Some(double) = cluster.double_server() {
        double
            .webhooks()
            .register_yaml(&webhook_yaml(), base_url, ca_pem.as_bytes());
        return Registration {
            config: None,
            name: String::new(),
        };
    }
    let name = format!("kubeecr-test-{}", cluster.ns());
    for mut doc in webhook_docs() {
        doc["metadata"] = json!({"name": name});
        for w in doc["webhooks"].as_array_mut().unwrap() {
            let path = w["clientConfig"]["service"]["path"]
                .as_str()
                .unwrap()
                .to_string();
            w["clientConfig"] =
                json!({"url": format!("{base_url}{path}"), "caBundle": STANDARD.encode(ca_pem)});
            w["namespaceSelector"] =
                json!({"matchLabels": {"kubernetes.io/metadata.name": cluster.ns()}});
        }
        let client = cluster.client();
        if doc["kind"] == "MutatingWebhookConfiguration" {
            let c: MutatingWebhookConfiguration = serde_json::from_value(doc).unwrap();
            Api::<MutatingWebhookConfiguration>::all(client)
                .create(&PostParams::default(), &c)
                .await
                .unwrap();
        } else {
            let c: ValidatingWebhookConfiguration = serde_json::from_value(doc).unwrap();
            Api::<ValidatingWebhookConfiguration>::all(client)
                .create(&PostParams::default(), &c)
                .await
                .unwrap();
        }
    }
    let registration = Registration {
        config: Some(cluster.config().clone()),
        name,
    };
    // The API server picks up new webhook configurations within a moment: once a dry-run
    // create of an opted-in Secret with a malformed annotation is denied by kubeecr, it calls
    // the webhook. (Denied: no token is fetched and nothing is stored.)
    let api: Api<Secret> = Api::namespaced(cluster.client(), cluster.ns());
    let probe = data_less("kubeecr-webhook-probe", "123456789/us-west-2");
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let called = async {
        loop {
            match api.create(&dry_run, &probe).await {
                Err(kube::Error::Api(s)) if s.message.contains("mutate.kubeecr.deft.com") => {
                    break;
                }
                _ => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), called)
        .await
        .expect("the API server calls the registered webhook within 30 s");
    registration
}

/// The issue's YAML: annotated, typed, no data at all.
pub fn data_less(name: &str, annotation: &str) -> Secret {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "annotations": {ANNOTATION: annotation}},
        "type": DOCKER_CONFIG_JSON,
    }))
    .unwrap()
}

pub fn api_message(e: kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message,
        other => panic!("expected an API error, got {other}"),
    }
}

/// A create, a server-side apply that creates, and a dry run are filled by the webhook; a
/// server-side re-apply of the YAML (without data, as GitOps applies it) goes through the
/// webhook and keeps the token. The real API server keeps it because the applier does not own
/// `.data`; the double, whose server-side apply is a JSON merge without field ownership, keeps
/// it whatever the webhook does, so its run is named for what it shows.
async fn apply_create_and_server_side_apply_are_filled(cluster: TestCluster) {
    let ecr = EcrProxy::start().await;
    let state = webhook_state(token_cache(&ecr.url()).await, Policy::default(), false);
    let Some((webhook, _registration)) = webhook_for(
        &cluster,
        state,
        "apply_create_and_server_side_apply_are_filled",
    )
    .await
    else {
        return;
    };
    let client = cluster.client();
    let api: Api<Secret> = Api::namespaced(client.clone(), cluster.ns());

    let calls = |operation| {
        (
            admissions(&webhook.metrics, "mutate", operation),
            admissions(&webhook.metrics, "validate", operation),
        )
    };
    let token = || ecr.newest("us-west-2", None).expect("a token").password;
    let creates = calls("CREATE");
    let created = api
        .create(
            &PostParams::default(),
            &data_less("ecr-pull", "123456789012/us-west-2"),
        )
        .await
        .expect("created");
    assert_eq!(calls("CREATE"), (creates.0 + 1, creates.1 + 1));
    assert_eq!(password_of(&dockerconfig(&created), HOST), token());
    let stored = api.get("ecr-pull").await.unwrap();
    assert_eq!(stored.data, created.data);
    assert!(annotation(&stored, EXPIRES_AT).is_some());

    // kubectl apply --server-side of the same YAML with a label, as GitOps does.
    let mut applied = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "ecr-pull", "labels": {"env": "prod"}, "annotations": {ANNOTATION: "123456789012/us-west-2"}},
        "type": DOCKER_CONFIG_JSON,
    });
    let updates = calls("UPDATE");
    let after = api
        .patch(
            "ecr-pull",
            &PatchParams::apply("gitops").force(),
            &Patch::Apply(&applied),
        )
        .await
        .expect("applied");
    assert_eq!(
        calls("UPDATE"),
        (updates.0 + 1, updates.1 + 1),
        "the re-apply went through both webhooks"
    );
    assert_eq!(after.metadata.labels.as_ref().unwrap()["env"], "prod");
    assert_eq!(
        password_of(&dockerconfig(&after), HOST),
        token(),
        "the token kept"
    );

    // A server-side apply that creates: filled by the webhook, as nothing else could.
    applied["metadata"]["name"] = json!("ssa-new");
    let creates = calls("CREATE");
    let fresh = api
        .patch(
            "ssa-new",
            &PatchParams::apply("gitops"),
            &Patch::Apply(&applied),
        )
        .await
        .expect("created by apply");
    assert_eq!(calls("CREATE"), (creates.0 + 1, creates.1 + 1));
    assert_eq!(password_of(&dockerconfig(&fresh), HOST), token());

    // --dry-run=server: answered filled, nothing stored.
    let dry = api
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &data_less("dry", "123456789012/us-west-2"),
        )
        .await
        .expect("dry run");
    password_of(&dockerconfig(&dry), HOST);
    assert!(api.get_opt("dry").await.unwrap().is_none());
    assert_eq!(
        ecr.token_calls().len(),
        1,
        "one token for every admission of the same (principal, region)"
    );
}
on_both_backends!(
    apply_create_and_server_side_apply_are_filled,
    on_double_as: apply_create_and_a_merged_reapply_go_through_the_webhook
);

async fn malformed_annotations_are_refused_with_their_message(cluster: TestCluster) {
    let ecr = EcrProxy::start().await;
    let state = webhook_state(token_cache(&ecr.url()).await, Policy::default(), false);
    let Some((_webhook, _registration)) = webhook_for(
        &cluster,
        state,
        "malformed_annotations_are_refused_with_their_message",
    )
    .await
    else {
        return;
    };
    let api: Api<Secret> = Api::namespaced(cluster.client(), cluster.ns());
    let ns = cluster.ns();

    let msg = api_message(
        api.create(
            &PostParams::default(),
            &data_less("bad", "123456789/us-west-2"),
        )
        .await
        .unwrap_err(),
    );
    assert!(
        msg.contains("admission webhook \"mutate.kubeecr.deft.com\" denied the request"),
        "{msg}"
    );
    assert!(msg.contains(&format!("{ns}/bad: deft.com/kubeecr \"123456789/us-west-2\": account id 123456789 has 9 digits; AWS account ids have 12, leading zeros included: if it lost them, write 000123456789/us-west-2")), "{msg}");
    assert!(
        !msg.contains("Required value"),
        "kubeecr's message, not the API server's generic one: {msg}"
    );

    let opaque: Secret = serde_json::from_value(json!({
        "metadata": {"name": "opaque", "annotations": {ANNOTATION: "123456789012/us-west-2"}},
        "type": "Opaque", "data": {"a": "Yg=="},
    }))
    .unwrap();
    let msg = api_message(
        api.create(&PostParams::default(), &opaque)
            .await
            .unwrap_err(),
    );
    assert!(msg.contains("type is \"Opaque\""), "{msg}");

    // Annotating an existing good secret with a bad value is refused too.
    api.create(
        &PostParams::default(),
        &data_less("good", "123456789012/us-west-2"),
    )
    .await
    .unwrap();
    let patch = json!({"metadata": {"annotations": {ANNOTATION: "123456789012/moon-1"}}});
    let msg = api_message(
        api.patch("good", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_err(),
    );
    assert!(msg.contains("\"moon-1\" is not an AWS region"), "{msg}");
    assert!(ecr.token_calls().len() <= 1);
}
on_both_backends!(malformed_annotations_are_refused_with_their_message);

async fn aws_down_admits_and_the_refresher_completes(cluster: TestCluster) {
    let state = webhook_state(
        token_cache(&dead_endpoint()).await,
        Policy::default(),
        false,
    );
    let Some((_webhook, _registration)) = webhook_for(
        &cluster,
        state,
        "aws_down_admits_and_the_refresher_completes",
    )
    .await
    else {
        return;
    };
    let client = cluster.client();
    let ns = cluster.ns();

    // A raw create, to read the Warning header the API server relays.
    let body = serde_json::to_vec(&data_less("ecr-pull", "123456789012/us-west-2")).unwrap();
    let req = http::Request::post(format!("/api/v1/namespaces/{ns}/secrets"))
        .header("content-type", "application/json")
        .body(kube::client::Body::from(body))
        .unwrap();
    let res = client.send(req).await.unwrap();
    assert_eq!(res.status(), 201);
    let warnings: Vec<String> = res
        .headers()
        .get_all("warning")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("stored with an empty {\\\"auths\\\":{}}")),
        "{warnings:?}"
    );

    let stored = get(&client, ns, "ecr-pull").await;
    assert_eq!(dockerconfig(&stored), json!({"auths": {}}));
    assert_eq!(annotation(&stored, EXPIRES_AT), None);

    // ECR is back: the refresher fills it.
    let ecr = EcrProxy::start().await;
    let summary = refresh_namespace(&client, &ecr, ns).await;
    assert_eq!(summary.refreshed, 1, "{summary:?}");
    password_of(&dockerconfig(&get(&client, ns, "ecr-pull").await), HOST);
}
on_both_backends!(aws_down_admits_and_the_refresher_completes);

/// With kubeecr down, only opted-in Secrets are affected (matchConditions), and those fail
/// closed (failurePolicy: Fail).
#[tokio::test]
async fn kubeecr_down_blocks_only_opted_in_secrets() {
    let cluster = TestCluster::double().await;
    let ecr = EcrProxy::start().await;
    let state = webhook_state(token_cache(&ecr.url()).await, Policy::default(), false);
    let (mut webhook, _registration) = webhook_for(&cluster, state, "kubeecr_down").await.unwrap();
    let client = cluster.client();
    let ns = cluster.ns();
    create(
        &client,
        ns,
        &secret("plain-before", "Opaque", &[], &[("a", b"b")]),
    )
    .await;
    let calls = cluster.double_server().unwrap().webhooks().calls();
    assert!(
        calls.is_empty(),
        "a plain Secret never reaches kubeecr: {calls:?}"
    );

    webhook.stop().await;
    create(
        &client,
        ns,
        &secret("plain-after", "Opaque", &[], &[("a", b"b")]),
    )
    .await;
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let msg = api_message(
        api.create(
            &PostParams::default(),
            &data_less("ecr-pull", "123456789012/us-west-2"),
        )
        .await
        .unwrap_err(),
    );
    assert!(
        msg.contains("failed calling webhook \"mutate.kubeecr.deft.com\""),
        "{msg}"
    );
}

/// Issue 9's checks on a real API server: thousands of invented regions are refused with a
/// short message and no ECR call; an immutable opted-in Secret is refused at create, cannot
/// be made immutable by an update, and one that is immutable already can still be labelled.
async fn invented_regions_and_immutable_secrets(cluster: TestCluster) {
    let ecr = EcrProxy::start().await;
    let api: Api<Secret> = Api::namespaced(cluster.client(), cluster.ns());
    let ns = cluster.ns();
    let foreign = br#"{"auths":{"quay.io":{"auth":"cTp4"}}}"#;
    let frozen = |name: &str, annotated: bool| {
        immutable_secret(name, annotated.then_some("123456789012/us-west-2"), foreign)
    };
    // Made before kubeecr's webhooks: an immutable opted-in Secret, and an immutable one.
    api.create(&PostParams::default(), &frozen("old", true))
        .await
        .unwrap();
    api.create(&PostParams::default(), &frozen("plain", false))
        .await
        .unwrap();
    let state = webhook_state(token_cache(&ecr.url()).await, Policy::default(), false);
    let Some((_webhook, _registration)) =
        webhook_for(&cluster, state, "invented_regions_and_immutable_secrets").await
    else {
        return;
    };

    let invented = invented_regions(5000);
    let msg = api_message(
        api.create(&PostParams::default(), &data_less("invented", &invented))
            .await
            .unwrap_err(),
    );
    assert!(
        msg.contains(&format!(
            "{ns}/invented: deft.com/kubeecr is longer than 2048 bytes, so it is not read"
        )),
        "{msg}"
    );
    assert!(msg.len() < 500, "{} bytes: {msg}", msg.len());
    let msg = api_message(
        api.create(
            &PostParams::default(),
            &data_less("moon", "123456789012/us-moon-1"),
        )
        .await
        .unwrap_err(),
    );
    assert!(
        msg.contains("\"us-moon-1\" is not an AWS region this kubeecr knows"),
        "{msg}"
    );

    let msg = api_message(
        api.create(&PostParams::default(), &frozen("frozen", true))
            .await
            .unwrap_err(),
    );
    assert!(
        msg.contains(&format!(
            "{ns}/frozen: `immutable: true` would keep kubeecr from refreshing"
        )),
        "{msg}"
    );

    // Made immutable by an update, or opted in while immutable: refused.
    api.create(
        &PostParams::default(),
        &data_less("thawed", "123456789012/us-west-2"),
    )
    .await
    .unwrap();
    let msg = api_message(
        api.patch(
            "thawed",
            &PatchParams::default(),
            &Patch::Merge(&json!({"immutable": true})),
        )
        .await
        .unwrap_err(),
    );
    assert!(msg.contains("making it immutable"), "{msg}");
    let opt_in = json!({"metadata": {"annotations": {ANNOTATION: "123456789012/us-west-2"}}});
    let msg = api_message(
        api.patch("plain", &PatchParams::default(), &Patch::Merge(&opt_in))
            .await
            .unwrap_err(),
    );
    assert!(
        msg.contains("immutable, so kubeecr could never fill it"),
        "{msg}"
    );

    // The immutable opted-in Secret from before: labels can still be edited, data untouched.
    let calls = ecr.token_calls().len();
    let label = json!({"metadata": {"labels": {"team": "b"}}});
    api.patch("old", &PatchParams::default(), &Patch::Merge(&label))
        .await
        .unwrap();
    let old = api.get("old").await.unwrap();
    assert_eq!(old.metadata.labels.unwrap()["team"], "b");
    assert_eq!(old.data.unwrap()[".dockerconfigjson"].0, foreign);
    assert_eq!(ecr.token_calls().len(), calls, "no token fetched for it");
}
on_both_backends!(invented_regions_and_immutable_secrets);

/// A basic-auth Secret, an Argo CD repository Secret and a dockerconfigjson Secret under every
/// host form: filled on create with the token of their registry's region (`username` `AWS`,
/// `password` the token), every other key kept, and renewed in place by the refresher.
async fn basic_auth_and_argo_cd_secrets_are_filled_and_refreshed(cluster: TestCluster) {
    let ecr = EcrProxy::start().await;
    let state = webhook_state(token_cache(&ecr.url()).await, Policy::default(), false);
    let Some((_webhook, _registration)) = webhook_for(
        &cluster,
        state,
        "basic_auth_and_argo_cd_secrets_are_filled_and_refreshed",
    )
    .await
    else {
        return;
    };
    let client = cluster.client();
    let ns = cluster.ns();
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let basic: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "basic", "annotations": {ANNOTATION: "123456789012/us-west-2"}},
        "type": "kubernetes.io/basic-auth",
    }))
    .unwrap();
    let argo_keys = [
        ("url", format!("oci://{HOST}/charts")),
        ("type", "helm".to_string()),
        ("name", "ecr-charts".to_string()),
        ("project", "default".to_string()),
        ("enableOCI", "true".to_string()),
    ];
    let argo: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {
            "name": "argo",
            "labels": {"argocd.argoproj.io/secret-type": "repository"},
            "annotations": {ANNOTATION: "123456789012/us-west-2"},
        },
        "type": "Opaque",
        // As the README writes it: the API server folds stringData into data before admission.
        "stringData": argo_keys.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
    }))
    .unwrap();
    for s in [&basic, &argo] {
        let created = api
            .create(&PostParams::default(), s)
            .await
            .expect("created");
        let token = ecr.newest("us-west-2", None).unwrap();
        assert_eq!(data_bytes(&created, "username").unwrap(), b"AWS");
        assert_eq!(
            data_bytes(&created, "password").unwrap(),
            token.password.as_bytes(),
            "{:?}",
            created.metadata.name
        );
        assert_eq!(annotation(&created, EXPIRES_AT).unwrap(), token.expires_at);
        assert!(
            created
                .data
                .as_ref()
                .unwrap()
                .get(".dockerconfigjson")
                .is_none()
        );
    }
    // And a dockerconfigjson Secret under every host form of the same registry.
    let mut forms = data_less("forms", "123456789012/us-west-2");
    forms.metadata.annotations.as_mut().unwrap().insert(
        "deft.com/kubeecr-hosts".into(),
        "standard,fips,dual-stack,dual-stack-fips".into(),
    );
    let created = api
        .create(&PostParams::default(), &forms)
        .await
        .expect("created");
    let token = ecr.newest("us-west-2", None).unwrap();
    for host in [
        HOST,
        "123456789012.dkr.ecr-fips.us-west-2.amazonaws.com",
        "123456789012.dkr-ecr.us-west-2.on.aws",
        "123456789012.dkr-ecr-fips.us-west-2.on.aws",
    ] {
        assert_eq!(
            password_of(&dockerconfig(&created), host),
            token.password,
            "{host}"
        );
    }
    assert_eq!(
        ecr.token_calls().len(),
        1,
        "one token for all three Secrets"
    );
    let stored = api.get("argo").await.unwrap();
    for (k, v) in &argo_keys {
        assert_eq!(
            data_bytes(&stored, k).unwrap(),
            v.as_bytes(),
            "{k} byte for byte"
        );
    }

    // Renewed in place: both hold the newest token; nothing else changes.
    let forced = force_refresh_namespace(&client, &ecr, ns).await;
    assert_eq!((forced.refreshed, forced.failed), (3, 0), "{forced:?}");
    let newest = ecr.newest("us-west-2", None).unwrap();
    for name in ["basic", "argo"] {
        let s = api.get(name).await.unwrap();
        assert_eq!(
            data_bytes(&s, "password").unwrap(),
            newest.password.as_bytes(),
            "{name}"
        );
        assert_eq!(
            annotation(&s, EXPIRES_AT).unwrap(),
            newest.expires_at,
            "{name}"
        );
    }
    let stored = api.get("argo").await.unwrap();
    for (k, v) in &argo_keys {
        assert_eq!(
            data_bytes(&stored, k).unwrap(),
            v.as_bytes(),
            "{k} byte for byte"
        );
    }
    let summary = refresh_namespace(&client, &ecr, ns).await;
    assert_eq!(
        (summary.unchanged, summary.ecr_calls),
        (3, 0),
        "{summary:?}"
    );
    let forms = api.get("forms").await.unwrap();
    assert_eq!(
        password_of(
            &dockerconfig(&forms),
            "123456789012.dkr-ecr-fips.us-west-2.on.aws"
        ),
        newest.password
    );

    // Opting out: kubeecr's annotations and label go, the credentials stay.
    let before = api.get("basic").await.unwrap();
    let opted_out = api
        .patch(
            "basic",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {ANNOTATION: null}}})),
        )
        .await
        .expect("opted out");
    assert_eq!(annotation(&opted_out, EXPIRES_AT), None);
    assert!(
        !opted_out
            .metadata
            .labels
            .unwrap_or_default()
            .contains_key(MANAGED)
    );
    assert_eq!(opted_out.data, before.data);
    // Immutable: refused at creation, whatever the shape.
    let mut frozen = basic.clone();
    frozen.metadata.name = Some("frozen".into());
    frozen.immutable = Some(true);
    let message = api_message(
        api.create(&PostParams::default(), &frozen)
            .await
            .unwrap_err(),
    );
    assert!(message.contains("immutable"), "{message}");

    // An Argo CD url of another registry, and a basic-auth Secret for two: refused, said why.
    let mut elsewhere = argo.clone();
    elsewhere.metadata.name = Some("elsewhere".into());
    elsewhere
        .string_data
        .as_mut()
        .unwrap()
        .insert("url".into(), "oci://quay.io/charts".into());
    let message = api_message(
        api.create(&PostParams::default(), &elsewhere)
            .await
            .unwrap_err(),
    );
    assert!(
        message.contains(&format!(
            "Argo CD url \"oci://quay.io/...\" does not name {HOST}, the registry of deft.com/kubeecr"
        )),
        "{message}"
    );
    let mut two = basic.clone();
    two.metadata.name = Some("two".into());
    two.metadata.annotations.as_mut().unwrap().insert(
        ANNOTATION.into(),
        "123456789012/us-west-2,210987654321/us-west-2".into(),
    );
    let message = api_message(api.create(&PostParams::default(), &two).await.unwrap_err());
    assert!(
        message.contains("a basic-auth Secret holds one username and password, but deft.com/kubeecr and deft.com/kubeecr-hosts name 2 hosts"),
        "{message}"
    );
}
on_both_backends!(basic_auth_and_argo_cd_secrets_are_filled_and_refreshed);
