//! `webhook-config/` says what docs/architecture.md says (tests/integration/install.rs checks it
//! against kube-apiserver v1.36's schemas, with the rest of the install).

use std::path::Path;

use kubeecr_testkit::yaml::yaml_documents;

fn docs() -> Vec<serde_json::Value> {
    let out = std::process::Command::new("kubectl")
        .args(["kustomize", "webhook-config"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    // kubectl is on every machine that runs the suite; fall back to the files if not.
    match out {
        Ok(out) if out.status.success() => yaml_documents(&String::from_utf8(out.stdout).unwrap()),
        _ => ["mutating.yaml", "validating.yaml"]
            .iter()
            .flat_map(|f| {
                yaml_documents(
                    &std::fs::read_to_string(
                        Path::new(env!("CARGO_MANIFEST_DIR"))
                            .join("webhook-config")
                            .join(f),
                    )
                    .unwrap(),
                )
            })
            .collect(),
    }
}

#[test]
fn webhook_configurations_keep_their_promises() {
    for doc in docs() {
        assert_eq!(
            doc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            "kubeecr/kubeecr-webhook"
        );
        for w in doc["webhooks"].as_array().unwrap() {
            assert_eq!(w["admissionReviewVersions"], serde_json::json!(["v1"]));
            assert_eq!(w["sideEffects"], "None");
            assert!(w["timeoutSeconds"].as_u64().unwrap() <= 10);
            assert_eq!(w["failurePolicy"], "Fail");
            let excluded = &w["namespaceSelector"]["matchExpressions"][0];
            assert_eq!(excluded["operator"], "NotIn");
            assert!(
                excluded["values"]
                    .as_array()
                    .unwrap()
                    .contains(&"kube-system".into())
            );
            assert!(
                excluded["values"]
                    .as_array()
                    .unwrap()
                    .contains(&"kubeecr".into())
            );
            let condition = w["matchConditions"][0]["expression"].as_str().unwrap();
            assert!(condition.contains("'deft.com/kubeecr' in object.metadata.annotations"));
            assert!(condition.contains("'deft.com/kubeecr' in oldObject.metadata.annotations"));
        }
    }
}
