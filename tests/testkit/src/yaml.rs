//! Multi-document YAML, as kubectl and kustomize print it.

use serde_json::Value;

/// The documents of a multi-document YAML file, as JSON.
pub fn yaml_documents(yaml: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(yaml)
        .map(|doc| {
            let v = <serde_norway::Value as serde::Deserialize>::deserialize(doc).expect("YAML");
            serde_json::to_value(v).expect("YAML as JSON")
        })
        .filter(|v| !v.is_null())
        .collect()
}
