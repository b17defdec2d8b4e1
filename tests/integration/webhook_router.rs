//! The webhook's routes, fed the AdmissionReviews that kube-apiserver v1.36 sent
//! (tests/fixtures/admission), with tokens from moto.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use kubeecr::contract::policy::{NamespaceRules, Policy, REGISTRY_FLAG, ROLE_FLAG};
use kubeecr::tokens::cache::TokenCache;
use kubeecr_testkit::moto::{EcrProxy, dead_endpoint};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::common::*;

struct Answer {
    status: StatusCode,
    body: Value,
    text: String,
}

impl Answer {
    fn response(&self) -> &Value {
        &self.body["response"]
    }

    fn allowed(&self) -> bool {
        self.response()["allowed"] == json!(true)
    }

    fn message(&self) -> &str {
        self.response()["status"]["message"].as_str().unwrap_or("")
    }

    fn patch(&self) -> Option<json_patch::Patch> {
        let bytes = kubeecr_testkit::apiserver::admission::patch_bytes(&self.response()["patch"])?;
        assert_eq!(self.response()["patchType"], "JSONPatch");
        Some(serde_json::from_slice(&bytes).unwrap())
    }

    fn warnings(&self) -> Vec<String> {
        self.response()["warnings"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|w| w.as_str().unwrap().to_string())
            .collect()
    }
}

async fn call(
    tokens: Arc<TokenCache>,
    policy: Policy,
    require_token: bool,
    path: &str,
    body: Vec<u8>,
) -> Answer {
    call_with(
        Arc::new(webhook_state(tokens, policy, require_token)),
        path,
        body,
    )
    .await
}

/// `review` through the default policy, admitting without a token when ECR fails.
async fn call_review(tokens: Arc<TokenCache>, path: &str, review: &Value) -> Answer {
    call(
        tokens,
        Policy::default(),
        false,
        path,
        serde_json::to_vec(review).unwrap(),
    )
    .await
}

async fn call_with(
    state: Arc<kubeecr::admission::webhook::WebhookState>,
    path: &str,
    body: Vec<u8>,
) -> Answer {
    let app = kubeecr::admission::webhook::router(state, 3 * 1024 * 1024);
    let req = Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let res = app.oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Answer {
        status,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        text,
    }
}

async fn call_fixture(tokens: Arc<TokenCache>, policy: Policy, name: &str) -> (Answer, Value) {
    let (path, review) = fixture(name);
    let answer = call(
        tokens,
        policy,
        false,
        &path,
        serde_json::to_vec(&review).unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{name}: {}", answer.text);
    assert_eq!(
        answer.response()["uid"],
        review["request"]["uid"],
        "{name}: uid echoed"
    );
    assert_eq!(answer.body["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer.body["kind"], "AdmissionReview");
    (answer, review)
}

/// Applies the answer's patch to the request's object, as the API server does.
fn patched(answer: &Answer, review: &Value) -> Value {
    let mut object = review["request"]["object"].clone();
    if let Some(patch) = answer.patch() {
        json_patch::patch(&mut object, &patch).unwrap();
    }
    object
}

fn config_of(object: &Value) -> Value {
    let b64 = object["data"][".dockerconfigjson"]
        .as_str()
        .expect(".dockerconfigjson");
    serde_json::from_slice(&STANDARD.decode(b64).unwrap()).unwrap()
}

const US: &str = "123456789012.dkr.ecr.us-west-2.amazonaws.com";

#[tokio::test]
async fn data_less_create_is_filled_and_the_patch_is_idempotent() {
    let ecr = EcrProxy::start().await;
    let tokens = token_cache(&ecr.url()).await;
    let (answer, review) = call_fixture(
        tokens.clone(),
        Policy::default(),
        "01-create-annotated-nodata-apply-mutate-create.json",
    )
    .await;
    assert!(answer.allowed());
    let ops = serde_json::to_value(answer.patch().expect("a patch")).unwrap();
    assert_eq!(ops[0]["op"], "add");
    assert_eq!(ops[0]["path"], "/data", "the missing data map is created");
    assert_eq!(
        ops[1]["path"],
        "/metadata/annotations/deft.com~1kubeecr-expires-at"
    );
    let object = patched(&answer, &review);
    password_of(&config_of(&object), US);
    assert!(
        object["metadata"]["annotations"][EXPIRES_AT]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert_eq!(
        object["metadata"]["annotations"][ANNOTATION],
        "123456789012/us-west-2"
    );
    // The fingerprint of what kubeecr wrote, and the label that puts it in the managed watch.
    let fingerprint = object["metadata"]["annotations"][FINGERPRINTS]
        .as_str()
        .unwrap();
    let entry = &config_of(&object)["auths"][US];
    assert_eq!(
        fingerprint,
        format!(
            "123456789012/us-west-2={}",
            kubeecr::contract::dockerconfig::fingerprint(&serde_json::to_vec(entry).unwrap())
        )
    );
    assert_eq!(object["metadata"]["labels"][MANAGED], "true");

    // Re-invoked on its own result: nothing more to do.
    let mut again = review.clone();
    again["request"]["object"] = object;
    let answer = call(
        tokens,
        Policy::default(),
        false,
        "/mutate?timeout=5s",
        serde_json::to_vec(&again).unwrap(),
    )
    .await;
    assert!(
        answer.allowed() && answer.patch().is_none(),
        "{}",
        answer.text
    );
    assert_eq!(ecr.token_calls().len(), 1);
}

#[tokio::test]
async fn annotating_an_existing_secret_keeps_its_foreign_auth() {
    let ecr = EcrProxy::start().await;
    let tokens = token_cache(&ecr.url()).await;
    let (answer, review) = call_fixture(
        tokens,
        Policy::default(),
        "07-annotate-existing-mutate-update.json",
    )
    .await;
    let before = config_of(&review["request"]["object"]);
    let after = config_of(&patched(&answer, &review));
    for (host, entry) in before["auths"].as_object().unwrap() {
        assert_eq!(&after["auths"][host], entry, "foreign auth {host} kept");
    }
    password_of(&after, US);
    password_of(&after, "210987654321.dkr.ecr.eu-central-1.amazonaws.com");
    let ops = serde_json::to_value(answer.patch().unwrap()).unwrap();
    assert_eq!(
        ops[0]["path"], "/data/.dockerconfigjson",
        "existing data map: only the key is written"
    );
    assert_eq!(ecr.token_calls().len(), 2, "two regions");
}

#[tokio::test]
async fn updates_and_dry_runs_are_filled_too() {
    let ecr = EcrProxy::start().await;
    let tokens = token_cache(&ecr.url()).await;
    let (answer, review) = call_fixture(
        tokens.clone(),
        Policy::default(),
        "03-reapply-annotated-apply-mutate-update.json",
    )
    .await;
    password_of(&config_of(&patched(&answer, &review)), US);
    let (answer, review) = call_fixture(
        tokens,
        Policy::default(),
        "15-create-dryrun-server-mutate-create.json",
    )
    .await;
    assert_eq!(review["request"]["dryRun"], true);
    let config = config_of(&patched(&answer, &review));
    let host = config["auths"]
        .as_object()
        .unwrap()
        .keys()
        .find(|h| h.ends_with(".amazonaws.com.cn"))
        .expect("a China host")
        .clone();
    password_of(&config, &host);
}

#[tokio::test]
async fn malformed_annotations_are_denied_by_both_webhooks_with_the_same_message() {
    let tokens = token_cache(&dead_endpoint()).await;
    let expected = "team-a/bad: deft.com/kubeecr \"123456789/us-west-2\": account id 123456789 has 9 digits; AWS account ids have 12, leading zeros included: if it lost them, write 000123456789/us-west-2";
    for name in [
        "09-create-malformed-annotation-mutate-create.json",
        "10-create-malformed-annotation-validate-create.json",
    ] {
        let (answer, review) = call_fixture(tokens.clone(), Policy::default(), name).await;
        assert_eq!(review["request"]["name"], "bad", "fixture shape");
        assert!(!answer.allowed(), "{name}");
        assert_eq!(answer.message(), expected, "{name}");
        assert_eq!(answer.response()["status"]["code"], 403);
        assert!(answer.patch().is_none());
    }
    for name in [
        "13-annotate-opaque-mutate-update.json",
        "14-annotate-opaque-validate-update.json",
    ] {
        let (answer, _) = call_fixture(tokens.clone(), Policy::default(), name).await;
        assert!(!answer.allowed());
        assert!(answer.message().contains("type is \"Opaque\", but kubeecr only fills secrets of type kubernetes.io/dockerconfigjson"), "{}", answer.message());
    }
    assert_eq!(tokens.fetch_count(), 0, "denials need no token");
}

#[tokio::test]
async fn other_secrets_and_deletes_are_allowed_unchanged() {
    let tokens = token_cache(&dead_endpoint()).await;
    for name in [
        "02-create-annotated-nodata-apply-validate-create.json",
        "05-create-docker-registry-plain-mutate-create.json",
        "06-create-docker-registry-plain-validate-create.json",
        "11-create-opaque-annotated-mutate-create.json",
        "12-create-opaque-annotated-validate-create.json",
        "21-delete-mutate-delete.json",
        "22-delete-validate-delete.json",
    ] {
        let (answer, review) = call_fixture(tokens.clone(), Policy::default(), name).await;
        assert!(answer.allowed(), "{name}: {}", answer.message());
        assert!(answer.patch().is_none(), "{name}");
        assert!(answer.warnings().is_empty(), "{name}");
        if name.starts_with("21") {
            assert!(review["request"]["object"].is_null());
        }
    }
    assert_eq!(tokens.fetch_count(), 0);
}

#[tokio::test]
async fn roles_follow_the_operator_policy() {
    let ecr = EcrProxy::start().await;
    let tokens = token_cache(&ecr.url()).await;
    let (answer, _) = call_fixture(
        tokens.clone(),
        Policy::default(),
        "17-ssa-create-mutate-create.json",
    )
    .await;
    assert!(!answer.allowed());
    assert!(
        answer.message().contains(
            "not allowed in this namespace; name a role that --allowed-role-arns allows here (none)"
        ),
        "{}",
        answer.message()
    );
    let (answer, _) = call_fixture(
        tokens.clone(),
        Policy::default(),
        "18-ssa-create-validate-create.json",
    )
    .await;
    assert!(!answer.allowed());

    let allowed = Policy {
        allowed_role_arns: NamespaceRules::new(
            ROLE_FLAG,
            ["*=arn:aws-us-gov:iam::123456789012:role/*"],
        ),
        ..Policy::default()
    };
    let (answer, review) = call_fixture(
        tokens.clone(),
        allowed.clone(),
        "17-ssa-create-mutate-create.json",
    )
    .await;
    assert!(answer.allowed(), "{}", answer.message());
    password_of(
        &config_of(&patched(&answer, &review)),
        "123456789012.dkr.ecr.us-gov-west-1.amazonaws.com",
    );
    assert_eq!(ecr.calls("AssumeRole").len(), 1);
    let (answer, _) = call_fixture(tokens, allowed, "20-ssa-reapply-validate-update.json").await;
    assert!(answer.allowed());
}

#[tokio::test]
async fn registries_and_namespaces_outside_the_policy_are_denied() {
    let tokens = token_cache(&dead_endpoint()).await;
    let policy = Policy {
        allowed_registries: NamespaceRules::new(REGISTRY_FLAG, ["*=999999999999/*"]),
        ..Policy::default()
    };
    let (answer, _) = call_fixture(
        tokens.clone(),
        policy,
        "02-create-annotated-nodata-apply-validate-create.json",
    )
    .await;
    assert!(
        answer
            .message()
            .contains("registry 123456789012/us-west-2 is not allowed"),
        "{}",
        answer.message()
    );
    let policy = Policy {
        exclude_namespaces: vec!["team-a".into()],
        ..Policy::default()
    };
    let (answer, _) = call_fixture(
        tokens,
        policy,
        "02-create-annotated-nodata-apply-validate-create.json",
    )
    .await;
    assert!(
        answer
            .message()
            .contains("this namespace is not served by this kubeecr installation (excluded by --exclude-namespaces)"),
        "{}",
        answer.message()
    );
}

#[tokio::test]
async fn aws_down_admits_with_a_warning_and_empty_auths() {
    let tokens = token_cache(&dead_endpoint()).await;
    let (answer, review) = call_fixture(
        tokens.clone(),
        Policy::default(),
        "01-create-annotated-nodata-apply-mutate-create.json",
    )
    .await;
    assert!(answer.allowed());
    let warnings = answer.warnings();
    assert_eq!(warnings.len(), 1);
    // The cause first, then what happened, well under the API server's 256 characters.
    // A short, stable reason: the SDK's chain and the endpoint go to kubeecr's log only.
    // Refused at once, or (on a loaded machine) still retrying at the webhook's deadline.
    let reasons = ["ECR unreachable", "ECR did not answer in time"];
    assert!(
        reasons
            .iter()
            .any(|r| warnings[0].starts_with(&format!("kubeecr: {r} for us-west-2; "))),
        "{}",
        warnings[0]
    );
    assert!(
        !warnings[0].contains("127.0.0.1") && !warnings[0].contains("os error"),
        "{}",
        warnings[0]
    );
    assert!(
        warnings[0].contains(
            "; the Secret is stored with an empty {\"auths\":{}} (not usable yet), filled when ECR answers"
        ),
        "{}",
        warnings[0]
    );
    assert!(warnings[0].chars().count() <= 200, "{}", warnings[0].len());
    let object = patched(&answer, &review);
    assert_eq!(config_of(&object), json!({"auths": {}}));
    assert!(
        object["metadata"]["annotations"].get(EXPIRES_AT).is_none(),
        "due for the refresher"
    );
    assert_eq!(object["metadata"]["labels"][MANAGED], "true");

    // An update of a secret that has data: admitted unchanged, with a warning.
    let (answer, _) = call_fixture(
        tokens.clone(),
        Policy::default(),
        "07-annotate-existing-mutate-update.json",
    )
    .await;
    // Admitted with its data as it was; only labelled, so that the refresher watches it.
    assert!(answer.allowed());
    assert_eq!(
        serde_json::to_value(answer.patch().unwrap()).unwrap(),
        json!([{"op": "add", "path": "/metadata/labels", "value": {MANAGED: "true"}}])
    );
    assert!(answer.warnings()[0].contains("stored without a new token"));

    // --require-token: denied, with the AWS error.
    let (path, review) = fixture("01-create-annotated-nodata-apply-mutate-create.json");
    let answer = call(
        tokens,
        Policy::default(),
        true,
        &path,
        serde_json::to_vec(&review).unwrap(),
    )
    .await;
    assert!(!answer.allowed());
    assert!(
        answer.message().contains("--require-token"),
        "{}",
        answer.message()
    );
    assert!(
        reasons.iter().any(|r| answer
            .message()
            .ends_with(&format!("(--require-token): {r} for us-west-2"))),
        "{}",
        answer.message()
    );
}

#[tokio::test]
async fn aws_slow_answers_before_the_api_server_gives_up_and_warms_the_cache() {
    let ecr = EcrProxy::start().await;
    ecr.set_delay(Duration::from_millis(1500));
    let metrics = Arc::new(kubeecr::telemetry::metrics::Metrics::new());
    let source = Arc::new(token_source(&ecr.url()).await);
    let tokens = TokenCache::new(source, cache_config(), metrics.clone());
    let (_, review) = fixture("01-create-annotated-nodata-apply-mutate-create.json");
    let body = serde_json::to_vec(&review).unwrap();
    // The API server would give up at 2s; kubeecr waits for ECR 1s at most.
    let answer = call(
        tokens.clone(),
        Policy::default(),
        false,
        "/mutate?timeout=2s",
        body.clone(),
    )
    .await;
    // Answered before ECR did: ECR had been asked, had issued nothing yet, and the answer
    // says it did not answer in time.
    assert_eq!(ecr.token_calls().len(), 1, "ECR was asked");
    assert!(ecr.issued().is_empty(), "answered before ECR did");
    assert!(answer.allowed());
    assert!(
        answer.warnings()[0].starts_with("kubeecr: ECR did not answer in time for us-west-2; "),
        "{:?}",
        answer.warnings()
    );
    assert_eq!(config_of(&patched(&answer, &review)), json!({"auths": {}}));
    // The fetch went on in the background: once its token is in the cache, the next
    // admission is filled with it, without a new call.
    let landed = async {
        while crate::serve_process::sample(
            &metrics.encode(),
            "kubeecr_ecr_calls_total{region=\"us-west-2\",result=\"ok\"}",
        ) != Some(1.0)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), landed)
        .await
        .expect("the fetch given up on completed in the background");
    ecr.set_delay(Duration::ZERO);
    let answer = call(tokens, Policy::default(), false, "/mutate?timeout=2s", body).await;
    assert!(answer.warnings().is_empty(), "{:?}", answer.warnings());
    let issued = ecr
        .newest("us-west-2", None)
        .expect("the background fetch's token");
    assert_eq!(
        password_of(&config_of(&patched(&answer, &review)), US),
        issued.password
    );
    assert_eq!(ecr.token_calls().len(), 1);
}

#[tokio::test]
async fn malformed_requests_get_400_and_oversized_get_413() {
    let tokens = token_cache(&dead_endpoint()).await;
    let answer = call(
        tokens.clone(),
        Policy::default(),
        false,
        "/validate",
        b"{not json".to_vec(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(
        answer
            .text
            .contains("not an admission.k8s.io/v1 AdmissionReview"),
        "{}",
        answer.text
    );
    let no_request = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"});
    let answer = call(
        tokens.clone(),
        Policy::default(),
        false,
        "/mutate",
        serde_json::to_vec(&no_request).unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.text.contains("no usable request"), "{}", answer.text);
    // serde would quote the bad value; kubeecr says where, never what.
    let (_, mut review) = fixture("02-create-annotated-nodata-apply-validate-create.json");
    review["request"]["operation"] = json!(format!("SECRET-{}", "x".repeat(100_000)));
    let answer = call_review(tokens.clone(), "/validate", &review).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(
        answer
            .text
            .contains("JSON of the wrong shape at line 1 column"),
        "{}",
        answer.text
    );
    assert!(
        !answer.text.contains("SECRET-") && answer.text.len() < 200,
        "{}",
        answer.text
    );
    let huge = vec![b' '; 4 * 1024 * 1024];
    let answer = call(tokens, Policy::default(), false, "/mutate", huge).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn a_fresher_token_written_by_another_refresher_is_kept() {
    let ecr = EcrProxy::start().await;
    let tokens = token_cache(&ecr.url()).await;
    let (answer, review) = call_fixture(
        tokens.clone(),
        Policy::default(),
        "01-create-annotated-nodata-apply-mutate-create.json",
    )
    .await;
    let mut object = patched(&answer, &review);
    // Another kubeecr (the CronJob) put a token that outlives ours, with its fingerprint.
    let entry =
        json!({"username": "AWS", "password": "newer", "auth": STANDARD.encode("AWS:newer")});
    let fresher = json!({"auths": {US: entry}});
    object["data"][".dockerconfigjson"] =
        json!(STANDARD.encode(serde_json::to_vec(&fresher).unwrap()));
    object["metadata"]["annotations"][FINGERPRINTS] = json!(format!(
        "123456789012/us-west-2={}",
        kubeecr::contract::dockerconfig::fingerprint(&serde_json::to_vec(&entry).unwrap())
    ));
    let later = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(13)).to_string();
    object["metadata"]["annotations"][EXPIRES_AT] = json!(later);
    let mut update = review.clone();
    update["request"]["operation"] = json!("UPDATE");
    update["request"]["oldObject"] = object.clone();
    update["request"]["object"] = object.clone();
    let answer = call(
        tokens.clone(),
        Policy::default(),
        false,
        "/mutate",
        serde_json::to_vec(&update).unwrap(),
    )
    .await;
    assert!(
        answer.allowed() && answer.patch().is_none(),
        "{}",
        answer.text
    );

    // An older recorded expiry is replaced.
    object["metadata"]["annotations"][EXPIRES_AT] = json!("2026-01-01T00:00:00Z");
    update["request"]["object"] = object;
    let answer = call(
        tokens,
        Policy::default(),
        false,
        "/mutate",
        serde_json::to_vec(&update).unwrap(),
    )
    .await;
    let after = config_of(&patched(&answer, &update));
    let issued = ecr.newest("us-west-2", None).expect("issued");
    assert_eq!(password_of(&after, US), issued.password, "our token");
}

/// fixtures 25/26: `kubectl patch` put a hand-written password `garbage` into a filled
/// Secret and left the annotations alone. Its recorded expiry is in the future, but the
/// fingerprint does not match, so the webhook writes a fresh token.
#[tokio::test]
async fn a_hand_edited_token_is_replaced_whatever_its_recorded_expiry() {
    let ecr = EcrProxy::start().await;
    let tokens = token_cache(&ecr.url()).await;
    let (path, mut review) = fixture("25-data-patch-by-hand-mutate-update.json");
    // Recorded to outlive any token ECR hands out (12 hours).
    let later = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(13)).to_string();
    review["request"]["object"]["metadata"]["annotations"][EXPIRES_AT] = json!(later);
    assert_eq!(
        password_of(&config_of(&review["request"]["object"]), US),
        "garbage"
    );
    let answer = call_review(tokens.clone(), &path, &review).await;
    assert!(answer.allowed(), "{}", answer.text);
    let object = patched(&answer, &review);
    let issued = ecr.newest("us-west-2", None).expect("issued");
    assert_eq!(
        password_of(&config_of(&object), US),
        issued.password,
        "the token ECR issued"
    );
    let entry = json!({
        "username": "AWS",
        "password": issued.password,
        "auth": STANDARD.encode(format!("AWS:{}", issued.password)),
    });
    assert_eq!(
        object["metadata"]["annotations"][FINGERPRINTS],
        format!(
            "123456789012/us-west-2={}",
            kubeecr::contract::dockerconfig::fingerprint(&serde_json::to_vec(&entry).unwrap())
        ),
        "the fingerprint of the token written"
    );
    assert_eq!(
        object["metadata"]["annotations"][EXPIRES_AT],
        issued.expires_at.as_str(),
        "the expiry ECR gave"
    );
    // What kubeecr wrote is then kept as it is.
    let mut again = review.clone();
    again["request"]["object"] = object;
    let answer = call(
        tokens,
        Policy::default(),
        false,
        &path,
        serde_json::to_vec(&again).unwrap(),
    )
    .await;
    assert!(answer.patch().is_none(), "{}", answer.text);
    // The validating webhook lets the hand edit through: it is the mutating one that mends it.
    let (_, validate) = fixture("26-data-patch-by-hand-validate-update.json");
    assert_eq!(validate["request"]["operation"], "UPDATE");
}

/// fixtures 23/24: `kubectl annotate secret ecr-pull deft.com/kubeecr-`. kubeecr's own
/// annotations and label go; the credentials stay.
#[tokio::test]
async fn opting_out_removes_kubeecrs_annotations_and_keeps_the_credentials() {
    let tokens = token_cache(&dead_endpoint()).await;
    let (answer, review) = call_fixture(
        tokens.clone(),
        Policy::default(),
        "23-optout-remove-annotation-mutate-update.json",
    )
    .await;
    assert!(answer.allowed());
    let ops = serde_json::to_value(answer.patch().expect("a patch")).unwrap();
    assert_eq!(
        ops,
        json!([{"op": "remove", "path": "/metadata/annotations/deft.com~1kubeecr-expires-at"}])
    );
    let object = patched(&answer, &review);
    assert_eq!(object["data"], review["request"]["object"]["data"]);
    assert!(
        object["metadata"]["annotations"]
            .as_object()
            .unwrap()
            .is_empty()
    );

    // Labelled by kubeecr, with fingerprints too: all of it goes.
    let mut labelled = review.clone();
    let meta = &mut labelled["request"]["object"]["metadata"];
    meta["labels"] = json!({MANAGED: "true", "app": "x"});
    meta["annotations"][FINGERPRINTS] = json!("123456789012/us-west-2=0123456789ab");
    let answer = call(
        tokens.clone(),
        Policy::default(),
        false,
        "/mutate",
        serde_json::to_vec(&labelled).unwrap(),
    )
    .await;
    let object = patched(&answer, &labelled);
    assert_eq!(object["metadata"]["labels"], json!({"app": "x"}));
    assert!(
        object["metadata"]["annotations"]
            .as_object()
            .unwrap()
            .is_empty()
    );

    let (answer, _) = call_fixture(
        tokens,
        Policy::default(),
        "24-optout-remove-annotation-validate-update.json",
    )
    .await;
    assert!(answer.allowed() && answer.patch().is_none());
}

/// The attack of issue 8: anyone who reaches the port POSTs a hand-made review naming any
/// namespace and user. With `--admission-fill=false` the answer holds no token, and no ECR
/// call is made; with the default it does, and each such answer is counted.
#[tokio::test]
async fn without_admission_fill_a_forged_review_gets_no_token() {
    let ecr = EcrProxy::start().await;
    let (path, mut review) = fixture("01-create-annotated-nodata-apply-mutate-create.json");
    review["request"]["namespace"] = json!("any-namespace");
    review["request"]["object"]["metadata"]["namespace"] = json!("any-namespace");
    review["request"]["userInfo"] = json!({"username": "system:anonymous"});
    review["request"]["object"]["metadata"]["annotations"][ANNOTATION] =
        json!("999999999999/eu-west-1");
    let body = serde_json::to_vec(&review).unwrap();

    let mut state = webhook_state(token_cache(&ecr.url()).await, Policy::default(), false);
    state.fill = false;
    let state = Arc::new(state);
    let answer = call_with(Arc::clone(&state), &path, body.clone()).await;
    assert!(answer.allowed(), "{}", answer.text);
    let object = patched(&answer, &review);
    assert_eq!(
        config_of(&object),
        json!({"auths": {}}),
        "the placeholder only"
    );
    assert_eq!(
        object["metadata"]["labels"][MANAGED], "true",
        "so the refresher watches it"
    );
    assert!(object["metadata"]["annotations"][EXPIRES_AT].is_null());
    assert_eq!(ecr.token_calls().len(), 0, "no token was even fetched");
    let counted = "kubeecr_admission_token_responses_total";
    let encoded = state.metrics.encode();
    let samples: Vec<&str> = encoded.lines().filter(|l| l.starts_with(counted)).collect();
    assert_eq!(samples.len(), 2, "verified and unverified\n{encoded}");
    assert!(
        samples.iter().all(|l| l.ends_with(" 0")),
        "none carried a token\n{encoded}"
    );
    // Invalid annotations are still refused.
    let mut bad = review.clone();
    bad["request"]["object"]["metadata"]["annotations"][ANNOTATION] = json!("99/eu-west-1");
    let answer = call_with(Arc::clone(&state), &path, serde_json::to_vec(&bad).unwrap()).await;
    assert!(!answer.allowed());
    assert!(
        answer.message().contains("account id 99 has 2 digits"),
        "{}",
        answer.text
    );

    // The default hands the token out, and counts it as going to an unverified client.
    let state = Arc::new(webhook_state(
        token_cache(&ecr.url()).await,
        Policy::default(),
        false,
    ));
    let answer = call_with(Arc::clone(&state), &path, body).await;
    password_of(
        &config_of(&patched(&answer, &review)),
        "999999999999.dkr.ecr.eu-west-1.amazonaws.com",
    );
    assert!(
        state
            .metrics
            .encode()
            .contains(&format!("{counted}{{client=\"unverified\"}} 1")),
        "{}",
        state.metrics.encode()
    );
}

/// With `--admission-fill=false`, no answer to any review the real API server sent carries
/// token bytes, and none makes an ECR call; an immutable Secret, which could never be filled
/// afterwards, is refused.
#[tokio::test]
async fn without_admission_fill_no_fixture_gets_token_bytes() {
    let ecr = EcrProxy::start().await;
    let mut state = webhook_state(token_cache(&ecr.url()).await, Policy::default(), false);
    state.fill = false;
    let state = Arc::new(state);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    assert!(names.len() >= 30, "{names:?}");
    for name in &names {
        let (path, review) = fixture(name);
        let answer = call_with(
            Arc::clone(&state),
            &path,
            serde_json::to_vec(&review).unwrap(),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{name}: {}", answer.text);
        let patch = answer
            .patch()
            .map(|p| serde_json::to_string(&p).unwrap())
            .unwrap_or_default();
        // Patches carry data base64-encoded: every string, and what it decodes to.
        fn strings(v: &Value, out: &mut String) {
            match v {
                Value::String(s) => {
                    out.push_str(s);
                    out.push_str(&String::from_utf8_lossy(
                        &STANDARD.decode(s).unwrap_or_default(),
                    ));
                }
                Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
                Value::Object(o) => o.values().for_each(|v| strings(v, out)),
                _ => {}
            }
        }
        let mut decoded = String::new();
        if !patch.is_empty() {
            strings(&serde_json::from_str(&patch).unwrap(), &mut decoded);
        }
        for needle in ["tok-", "password", "\"auth\""] {
            assert!(
                !decoded.contains(needle) && !patch.contains(needle),
                "{name}: {needle} in {patch}"
            );
        }
        if name.starts_with("27-create-immutable-mutate") {
            assert!(!answer.allowed(), "{name}");
            assert!(
                answer.message().contains("immutable"),
                "{}",
                answer.message()
            );
        }
    }
    assert_eq!(ecr.token_calls().len(), 0);
}

/// Fixtures 27–30, as the real server sends them: an immutable opted-in Secret is refused at
/// CREATE (it could never be refreshed), and a label edit of one that exists goes through with
/// no data patch (the API server would refuse any data change). No ECR call either way.
#[tokio::test]
async fn immutable_secrets_are_refused_at_create_and_left_alone_after() {
    let ecr = EcrProxy::start().await;
    let tokens = token_cache(&ecr.url()).await;
    for name in [
        "27-create-immutable-mutate-create.json",
        "28-create-immutable-validate-create.json",
    ] {
        let (answer, _) = call_fixture(tokens.clone(), Policy::default(), name).await;
        assert!(!answer.allowed(), "{name}");
        assert_eq!(answer.response()["status"]["code"], 403, "{name}");
        let msg = answer.message();
        assert!(
            msg.contains("team-b/frozen: `immutable: true`")
                && msg.contains("could never be refreshed"),
            "{name}: {msg}"
        );
    }
    for name in [
        "29-label-immutable-mutate-update.json",
        "30-label-immutable-validate-update.json",
    ] {
        let (answer, _) = call_fixture(tokens.clone(), Policy::default(), name).await;
        assert!(answer.allowed(), "{name}: {}", answer.message());
        assert!(
            answer.patch().is_none(),
            "{name}: no patch on an immutable Secret"
        );
        assert!(answer.warnings().is_empty(), "{name}");
    }
    // An UPDATE that makes an opted-in Secret immutable is refused by both webhooks.
    for name in [
        "29-label-immutable-mutate-update.json",
        "30-label-immutable-validate-update.json",
    ] {
        let (path, mut review) = fixture(name);
        review["request"]["oldObject"]
            .as_object_mut()
            .unwrap()
            .remove("immutable");
        let answer = call_review(tokens.clone(), &path, &review).await;
        assert!(!answer.allowed(), "{name}");
        assert!(
            answer
                .message()
                .contains("making it immutable would keep kubeecr from refreshing"),
            "{name}: {}",
            answer.message()
        );
    }
    assert_eq!(ecr.token_calls().len(), 0);
}

/// Thousands of invented regions: refused by both webhooks with a short message, at no ECR
/// call, whatever the number of requests.
#[tokio::test]
async fn invented_regions_cost_no_ecr_call() {
    let ecr = EcrProxy::start().await;
    let tokens = token_cache(&ecr.url()).await;
    let invented = invented_regions(5000);
    let few = "123456789012/us-moon-1,123456789012/us-west-2";
    for value in [invented.as_str(), few] {
        for name in [
            "01-create-annotated-nodata-apply-mutate-create.json",
            "02-create-annotated-nodata-apply-validate-create.json",
        ] {
            let (path, mut review) = fixture(name);
            review["request"]["object"]["metadata"]["annotations"][ANNOTATION] = json!(value);
            for _ in 0..3 {
                let answer = call_review(tokens.clone(), &path, &review).await;
                assert!(!answer.allowed(), "{name}");
                let msg = answer.message();
                assert!(msg.len() < 400, "{name}: {} bytes: {msg}", msg.len());
                assert!(
                    msg.contains("is longer than 2048 bytes")
                        || msg.contains("\"us-moon-1\" is not an AWS region this kubeecr knows"),
                    "{name}: {msg}"
                );
            }
        }
    }
    assert_eq!(ecr.token_calls().len(), 0);
    assert_eq!(tokens.len(), 0, "no cache entry either");
}

/// After an upgrade (or a narrowed policy), a Secret whose unchanged annotation kubeecr now
/// refuses can still be labelled and have its finalizers removed: admitted untouched, with
/// the reason as a warning. Changing the annotation to something refused is still denied,
/// and opting in a Secret that is immutable already is refused.
#[tokio::test]
async fn edits_that_leave_a_refused_annotation_as_it_was_go_through() {
    let tokens = token_cache(&dead_endpoint()).await;
    let invented = "123456789012/us-moon-1";
    for name in [
        "29-label-immutable-mutate-update.json",
        "30-label-immutable-validate-update.json",
    ] {
        let (path, mut review) = fixture(name);
        for which in ["object", "oldObject"] {
            review["request"][which]["metadata"]["annotations"][ANNOTATION] = json!(invented);
        }
        let answer = call_review(tokens.clone(), &path, &review).await;
        assert!(answer.allowed(), "{name}: {}", answer.message());
        assert!(answer.patch().is_none(), "{name}");
        let warnings = answer.warnings();
        assert!(
            warnings.len() == 1
                // About the object being written: what is wrong first, no name to crowd it out.
                && warnings[0].starts_with("kubeecr leaves this Secret alone: deft.com/kubeecr: ")
                && warnings[0].contains("us-moon-1"),
            "{name}: {warnings:?}"
        );
        // The annotation changed to a refused value: denied.
        review["request"]["oldObject"]["metadata"]["annotations"][ANNOTATION] =
            json!("123456789012/us-west-2");
        assert!(
            !call_review(tokens.clone(), &path, &review).await.allowed(),
            "{name}"
        );
        // Opting in a Secret that is immutable already: denied.
        let (_, mut opt_in) = fixture(name);
        opt_in["request"]["oldObject"]["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("annotations");
        let answer = call_review(tokens.clone(), &path, &opt_in).await;
        assert!(!answer.allowed(), "{name}");
        assert!(
            answer
                .message()
                .contains("immutable, so kubeecr could never fill it"),
            "{name}: {}",
            answer.message()
        );
    }
}

/// A cold-cache stampede (issue 10): 500 admission requests at once for one (principal,
/// region), with an empty cache and a slow ECR, cost exactly one GetAuthorizationToken call,
/// and every one of them is filled with that token.
#[tokio::test]
async fn a_cold_cache_stampede_makes_one_ecr_call() {
    let ecr = EcrProxy::start().await;
    ecr.set_delay(Duration::from_millis(300));
    let tokens = token_cache(&ecr.url()).await;
    let state = Arc::new(webhook_state(tokens, Policy::default(), false));
    let (path, review) = fixture("01-create-annotated-nodata-apply-mutate-create.json");
    let body = serde_json::to_vec(&review).unwrap();
    let url = format!("{path}?timeout=10s");
    let answers = futures::future::join_all(
        (0..500).map(|_| call_with(Arc::clone(&state), &url, body.clone())),
    )
    .await;
    assert_eq!(ecr.token_calls().len(), 1, "one call for all 500");
    let passwords: std::collections::BTreeSet<String> = answers
        .iter()
        .map(|answer| {
            assert!(answer.warnings().is_empty(), "{:?}", answer.warnings());
            password_of(&config_of(&patched(answer, &review)), US)
        })
        .collect();
    assert_eq!(passwords.len(), 1, "the same token for every request");
}

/// ECR fails, slowly then at once, while a token is in hand and due for renewal: every
/// admission still gets that last good token, with no warning and within the API server's
/// deadline (while ECR is slow each fetch outlasts the deadline, so this is the deadline's
/// fallback, and the answers given while a renewal is under way); ECR is asked once per
/// backoff step, not once per admission (once it fails at once, the floor between fetches is
/// all that spaces them); once ECR is back, the token is renewed. The outage runs on tokio's
/// paused clock: time moves only when every task waits on a timer, so each answer's wait and
/// each fetch's start are known exactly, however busy the machine.
#[tokio::test]
async fn an_ecr_outage_is_bridged_by_the_last_good_token() {
    use kubeecr::tokens::cache::CacheConfig;
    use kubeecr_testkit::moto::EcrFault;

    let ecr = EcrProxy::start().await;
    // Renewed 12 h before expiry: every token is due at once, so each admission wants a fetch.
    let config = CacheConfig::new(Duration::from_secs(12 * 3600), Duration::from_secs(1));
    let source = Arc::new(token_source(&ecr.url()).await);
    let metrics = Arc::new(kubeecr::telemetry::metrics::Metrics::new());
    // The cache's clock follows tokio's, so that pausing it below pauses the cache's too.
    let origin = (jiff::Timestamp::now(), tokio::time::Instant::now());
    let clock = Arc::new(move || origin.0 + origin.1.elapsed());
    let tokens = TokenCache::with_clock(source, config, metrics.clone(), clock);
    let ok = || {
        let text = metrics.encode();
        crate::serve_process::sample(
            &text,
            "kubeecr_ecr_calls_total{region=\"us-west-2\",result=\"ok\"}",
        )
    };
    let (_, review) = fixture("01-create-annotated-nodata-apply-mutate-create.json");
    // The first token comes from moto, on the running clock.
    let first = call_review(tokens.clone(), "/mutate?timeout=2s", &review).await;
    let good = password_of(&config_of(&patched(&first, &review)), US);

    // ECR throttles, each answer after 3 s of the paused clock, then at once.
    tokio::time::pause();
    ecr.set_fault(Some(EcrFault::Throttling));
    let before = ecr.token_fetches().len();
    // The webhook's deadline: half the API server's 2 s; tokio's timers fire on the
    // millisecond after theirs.
    let deadline = Duration::from_secs(1) + Duration::from_millis(1);
    const ADMISSIONS: usize = 600;
    for n in 0..ADMISSIONS {
        let slow = n < ADMISSIONS / 2;
        ecr.set_delay(Duration::from_secs(if slow { 3 } else { 0 }));
        let started = tokio::time::Instant::now();
        let answer = call_review(tokens.clone(), "/mutate?timeout=2s", &review).await;
        let waited = started.elapsed();
        assert!(
            waited <= deadline,
            "admission {n} waited {waited:?}, past the deadline"
        );
        assert!(answer.warnings().is_empty(), "{:?}", answer.warnings());
        assert_eq!(
            password_of(&config_of(&patched(&answer, &review)), US),
            good,
            "admission {n}"
        );
        // One admission every 100 ms, a minute of them.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fetches = ecr.token_fetches().split_off(before);
    let calls: usize = fetches.iter().map(Vec::len).sum();
    println!(
        "{ADMISSIONS} admissions in a minute of throttling, slow then fast: {} fetches, {calls} GetAuthorizationToken calls",
        fetches.len()
    );
    assert!(!fetches.is_empty(), "the token was due: ECR was asked");
    for fetch in &fetches {
        assert!(fetch.len() <= 3, "{} attempts in one fetch", fetch.len());
    }
    // Fetches one at a time, each no sooner than the floor after the one before: 1 s after
    // one failure, doubling to at most 5 s.
    let floors = [1, 2, 4, 5].map(Duration::from_secs);
    for (k, pair) in fetches.windows(2).enumerate() {
        let (last, next) = (pair[0].last().unwrap().at, pair[1][0].at);
        assert!(next >= last, "fetch {} overlapped the one before", k + 2);
        let gap = next.duration_since(pair[0][0].at);
        let floor = floors[k.min(floors.len() - 1)];
        assert!(
            gap >= floor,
            "fetch {} came {gap:?} after the one before",
            k + 2
        );
    }

    tokio::time::resume();
    ecr.set_fault(None);
    ecr.set_delay(Duration::ZERO);
    let oks = ok();
    assert_eq!(oks, Some(1.0), "only the first fetch succeeded so far");
    let renewed = async {
        while ok() == oks {
            call_review(tokens.clone(), "/mutate?timeout=2s", &review).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), renewed)
        .await
        .expect("renewed within a backoff step (5 s at most) and a fetch of ECR's return");
}

/// `review` with `deft.com/kubeecr` and `deft.com/kubeecr-hosts` set as given.
fn with_hosts(review: &Value, registries: &str, hosts: &str) -> Value {
    let mut review = review.clone();
    let annotations = &mut review["request"]["object"]["metadata"]["annotations"];
    annotations[ANNOTATION] = json!(registries);
    annotations["deft.com/kubeecr-hosts"] = json!(hosts);
    review
}

#[tokio::test]
async fn every_host_form_is_filled_with_the_one_token_of_its_region() {
    let ecr = EcrProxy::start().await;
    let tokens = token_cache(&ecr.url()).await;
    let (path, review) = fixture("01-create-annotated-nodata-apply-mutate-create.json");
    let review = with_hosts(
        &review,
        "123456789012/us-west-2",
        "standard, fips, dual-stack, dual-stack-fips",
    );
    let answer = call_review(tokens, &path, &review).await;
    assert!(answer.allowed(), "{}", answer.text);
    let object = patched(&answer, &review);
    let config = config_of(&object);
    let issued = ecr.newest("us-west-2", None).expect("a token was issued");
    let hosts = [
        "123456789012.dkr.ecr.us-west-2.amazonaws.com",
        "123456789012.dkr.ecr-fips.us-west-2.amazonaws.com",
        "123456789012.dkr-ecr.us-west-2.on.aws",
        "123456789012.dkr-ecr-fips.us-west-2.on.aws",
    ];
    for host in hosts {
        assert_eq!(password_of(&config, host), issued.password, "{host}");
    }
    assert_eq!(config["auths"].as_object().unwrap().len(), hosts.len());
    assert_eq!(ecr.token_calls().len(), 1, "one ECR call for every form");
    assert_eq!(
        object["metadata"]["annotations"][EXPIRES_AT],
        issued.expires_at
    );
    let fingerprints = object["metadata"]["annotations"][FINGERPRINTS]
        .as_str()
        .unwrap();
    let keys: Vec<&str> = fingerprints
        .split(',')
        .map(|pair| pair.split_once('=').unwrap().0)
        .collect();
    assert_eq!(
        keys,
        [
            "123456789012/us-west-2",
            "123456789012/us-west-2@fips",
            "123456789012/us-west-2@dual-stack",
            "123456789012/us-west-2@dual-stack-fips",
        ]
    );
}

#[tokio::test]
async fn host_forms_ecr_does_not_have_are_denied_by_both_webhooks() {
    let tokens = token_cache(&dead_endpoint()).await;
    let cases = [
        (
            "123456789012/eu-central-1",
            "standard,fips",
            "team-a/ecr-pull: deft.com/kubeecr-hosts: ECR has no fips host for 123456789012/eu-central-1; fips hosts exist in us-east-1, us-east-2, us-west-1, us-west-2, us-gov-east-1, us-gov-west-1; remove fips, or name a registry there",
        ),
        (
            "123456789012/us-west-2",
            "ipv6",
            "team-a/ecr-pull: deft.com/kubeecr-hosts: \"ipv6\" is not a host form; list standard, fips, dual-stack or dual-stack-fips, comma-separated, e.g. standard,fips",
        ),
    ];
    for (registries, hosts, expected) in cases {
        for name in [
            "01-create-annotated-nodata-apply-mutate-create.json",
            "02-create-annotated-nodata-apply-validate-create.json",
        ] {
            let (path, review) = fixture(name);
            let review = with_hosts(&review, registries, hosts);
            let answer = call_review(tokens.clone(), &path, &review).await;
            assert!(!answer.allowed(), "{name} {hosts}");
            assert_eq!(answer.message(), expected, "{name}");
            assert!(answer.message().len() <= 512);
        }
    }
    assert_eq!(tokens.fetch_count(), 0, "denials need no token");
}

/// Every refusal of host forms and shapes, through `/mutate`: the message names the value and
/// the fix, within the API server's bounds.
#[tokio::test]
async fn host_form_and_shape_refusals_name_the_value_and_the_fix() {
    let tokens = token_cache(&dead_endpoint()).await;
    let (path, base) = fixture("01-create-annotated-nodata-apply-mutate-create.json");
    let ten: Vec<String> = (0..10)
        .map(|i| format!("12345678901{i}/us-east-1"))
        .collect();
    let ten = ten.join(",");
    type Edit = fn(&mut Value);
    let basic: Edit = |o| o["type"] = json!("kubernetes.io/basic-auth");
    let argo_elsewhere: Edit = |o| {
        o["type"] = json!("Opaque");
        o["metadata"]["labels"] = json!({"argocd.argoproj.io/secret-type": "repo-creds"});
        o["data"] = json!({"url": STANDARD.encode("oci://quay.io/x")});
    };
    let argo_no_url: Edit = |o| {
        o["type"] = json!("Opaque");
        o["metadata"]["labels"] = json!({"argocd.argoproj.io/secret-type": "repository"});
    };
    let creds_bare_host: Edit = |o| {
        o["type"] = json!("Opaque");
        o["metadata"]["labels"] = json!({"argocd.argoproj.io/secret-type": "repo-creds"});
        o["data"] = json!({"url": STANDARD.encode("oci://me:hunter2@123456789012.dkr.ecr.us-west-2.amazonaws.com")});
    };
    let basic_argo_elsewhere: Edit = |o| {
        o["type"] = json!("kubernetes.io/basic-auth");
        o["metadata"]["labels"] = json!({"argocd.argoproj.io/secret-type": "repository"});
        o["data"] = json!({"url": STANDARD.encode("https://git.example/x")});
    };
    let tls: Edit = |o| o["type"] = json!("kubernetes.io/tls");
    let none: Edit = |_| {};
    let cases: [(&str, &str, Edit, &str); 10] = [
        (
            "123456789012/us-west-2",
            "fips,fips",
            none,
            "lists fips more than once; list each form once",
        ),
        (
            "123456789012/us-west-2",
            "standard,ipv6",
            none,
            "\"ipv6\" is not a host form; list standard, fips, dual-stack or dual-stack-fips",
        ),
        (
            "123456789012/ca-central-1",
            "fips",
            none,
            "ECR has no fips host for 123456789012/ca-central-1; fips hosts exist in us-east-1",
        ),
        (
            &ten,
            "standard,fips,dual-stack",
            none,
            "10 registries in 3 host forms make 30 hosts; write at most 20 hosts per Secret",
        ),
        (
            "123456789012/us-west-2",
            "standard,fips",
            basic,
            "a basic-auth Secret holds one username and password, but deft.com/kubeecr and deft.com/kubeecr-hosts name 2 hosts; name one registry in one host form",
        ),
        (
            "123456789012/us-west-2",
            "standard",
            argo_elsewhere,
            "Argo CD url \"oci://quay.io/...\" does not name 123456789012.dkr.ecr.us-west-2.amazonaws.com, the registry of deft.com/kubeecr; set url to",
        ),
        (
            "123456789012/us-west-2",
            "standard",
            argo_no_url,
            "Argo CD url none does not name 123456789012.dkr.ecr.us-west-2.amazonaws.com",
        ),
        (
            "123456789012/us-west-2",
            "standard",
            creds_bare_host,
            "Argo CD url \"oci://123456789012.dkr.ecr.us-west-2.amazonaws.com\" does not name 123456789012.dkr.ecr.us-west-2.amazonaws.com",
        ),
        (
            "123456789012/us-west-2",
            "standard",
            basic_argo_elsewhere,
            "Argo CD url \"https://git.example/...\" does not name",
        ),
        (
            "123456789012/us-west-2",
            "standard",
            tls,
            "type is \"kubernetes.io/tls\", but kubeecr only fills secrets of type kubernetes.io/dockerconfigjson or kubernetes.io/basic-auth, and Opaque ones labelled argocd.argoproj.io/secret-type: repository or repo-creds",
        ),
    ];
    for (registries, hosts, edit, expected) in cases {
        let mut review = with_hosts(&base, registries, hosts);
        edit(&mut review["request"]["object"]);
        let answer = call_review(tokens.clone(), &path, &review).await;
        assert!(!answer.allowed(), "{hosts}: {}", answer.text);
        let message = answer.message();
        assert!(message.starts_with("team-a/ecr-pull: "), "{message}");
        assert!(message.contains(expected), "{message}\nwanted: {expected}");
        assert!(message.len() <= 512, "{}: {message}", message.len());
        assert!(!message.contains("hunter2"), "{message}");
    }
    assert_eq!(tokens.fetch_count(), 0, "refusals need no token");
}

/// Moving a filled Argo CD Secret's `url` elsewhere is judged as a new request: denied, not let
/// through on a warning with kubeecr's password still in it.
#[tokio::test]
async fn an_argo_cd_url_moved_elsewhere_is_denied() {
    let tokens = token_cache(&dead_endpoint()).await;
    let (path, mut review) = fixture("01-create-annotated-nodata-apply-mutate-create.json");
    let host = "123456789012.dkr.ecr.us-west-2.amazonaws.com";
    let object = &mut review["request"]["object"];
    object["type"] = json!("Opaque");
    object["metadata"]["labels"] = json!({"argocd.argoproj.io/secret-type": "repository"});
    object["data"] =
        json!({"url": STANDARD.encode(host), "password": STANDARD.encode("kubeecr's")});
    let old = object.clone();
    object["data"]["url"] = json!(STANDARD.encode("oci://quay.io/charts"));
    review["request"]["operation"] = json!("UPDATE");
    review["request"]["oldObject"] = old;
    let answer = call_review(tokens.clone(), &path, &review).await;
    assert!(!answer.allowed(), "{}", answer.text);
    assert!(
        answer.message().contains("does not name"),
        "{}",
        answer.message()
    );
    // An edit of something else on a Secret refused already (its url moved by a bypass) goes
    // through, with why kubeecr leaves it alone.
    let mut label_only = review.clone();
    label_only["request"]["oldObject"]["data"]["url"] =
        json!(STANDARD.encode("oci://quay.io/charts"));
    label_only["request"]["object"]["metadata"]["labels"]["team"] = json!("a");
    let answer = call_review(tokens, &path, &label_only).await;
    assert!(answer.allowed(), "{}", answer.text);
    assert!(!answer.warnings().is_empty(), "let through with a warning");
}

/// With `--admission-fill=false`, a basic-auth Secret with neither key gets `username: AWS`,
/// what the API server requires of its type, and no password.
#[tokio::test]
async fn without_admission_fill_a_basic_auth_secret_gets_only_its_username() {
    let ecr = EcrProxy::start().await;
    let mut state = webhook_state(token_cache(&ecr.url()).await, Policy::default(), false);
    state.fill = false;
    let (path, mut review) = fixture("01-create-annotated-nodata-apply-mutate-create.json");
    review["request"]["object"]["type"] = json!("kubernetes.io/basic-auth");
    let answer = call_with(Arc::new(state), &path, serde_json::to_vec(&review).unwrap()).await;
    assert!(answer.allowed(), "{}", answer.text);
    let object = patched(&answer, &review);
    assert_eq!(object["data"], json!({"username": STANDARD.encode("AWS")}));
    assert_eq!(object["metadata"]["labels"][MANAGED], "true");
    assert!(ecr.token_calls().is_empty());
}
