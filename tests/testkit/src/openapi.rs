//! Offline validation of manifests against the OpenAPI v3 documents kube-apiserver serves
//! (copied into tests/fixtures/openapi): unknown fields, required fields, types and enums.

use serde_json::Value;

pub struct Schemas {
    doc: Value,
}

impl Schemas {
    pub fn load(path: &std::path::Path) -> Self {
        let doc = serde_json::from_slice(
            &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        )
        .unwrap();
        Self { doc }
    }

    fn schemas(&self) -> &serde_json::Map<String, Value> {
        self.doc["components"]["schemas"]
            .as_object()
            .expect("components.schemas")
    }

    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            let name = r.trim_start_matches("#/components/schemas/");
            return self.resolve(&self.schemas()[name]);
        }
        if let Some([only]) = schema
            .get("allOf")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
        {
            return self.resolve(only);
        }
        schema
    }

    /// The schema of `apiVersion`/`kind`, from `x-kubernetes-group-version-kind`.
    fn for_kind(&self, api_version: &str, kind: &str) -> Option<&Value> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        self.schemas().values().find(|s| {
            s["x-kubernetes-group-version-kind"]
                .as_array()
                .is_some_and(|gvks| {
                    gvks.iter().any(|g| {
                        g["group"] == group && g["version"] == version && g["kind"] == kind
                    })
                })
        })
    }

    /// Every problem of `object`, as `path: problem`. Empty: valid.
    pub fn validate(&self, object: &Value) -> Vec<String> {
        let api_version = object["apiVersion"].as_str().unwrap_or("");
        let kind = object["kind"].as_str().unwrap_or("");
        let mut problems = Vec::new();
        match self.for_kind(api_version, kind) {
            Some(schema) => self.check(schema, object, kind.to_string(), &mut problems),
            None => problems.push(format!("{api_version} {kind}: no schema")),
        }
        problems
    }

    fn check(&self, schema: &Value, value: &Value, path: String, problems: &mut Vec<String>) {
        let schema = self.resolve(schema);
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            problems.push(format!("{path}: {value} is not one of {allowed:?}"));
        }
        let type_ok = match schema.get("type").and_then(Value::as_str) {
            Some("string") => value.is_string(),
            Some("integer") => value.is_i64() || value.is_u64(),
            Some("number") => value.is_number(),
            Some("boolean") => value.is_boolean(),
            Some("array") => value.is_array(),
            Some("object") => value.is_object(),
            _ => true,
        };
        if !type_ok {
            problems.push(format!("{path}: {value} is not of type {}", schema["type"]));
            return;
        }
        if let Some(obj) = value.as_object() {
            let properties = schema.get("properties").and_then(Value::as_object);
            for required in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let name = required.as_str().unwrap_or("");
                if !obj.contains_key(name) {
                    problems.push(format!("{path}.{name}: required"));
                }
            }
            for (k, v) in obj {
                let child = format!("{path}.{k}");
                match (
                    properties.and_then(|p| p.get(k)),
                    schema.get("additionalProperties"),
                ) {
                    (Some(s), _) => self.check(s, v, child, problems),
                    (None, Some(additional)) if additional.is_object() => {
                        self.check(additional, v, child, problems)
                    }
                    (None, _) if properties.is_some() => {
                        problems.push(format!("{child}: unknown field"))
                    }
                    _ => {}
                }
            }
        }
        if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
            for (i, v) in array.iter().enumerate() {
                self.check(items, v, format!("{path}[{i}]"), problems);
            }
        }
    }
}

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
