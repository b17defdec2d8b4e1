//! `metav1.Status` failures, shaped as kube-apiserver sends them.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::kinds::ResourceKind;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// The object concerned, for `details` (boxed: errors travel in every `Result`).
    pub object: Option<Box<(ResourceKind, String)>>,
    pub causes: Vec<Value>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            object: None,
            causes: Vec::new(),
        }
    }

    pub fn of(mut self, kind: &ResourceKind, name: &str) -> Self {
        self.object = Some(Box::new((*kind, name.to_string())));
        self
    }

    pub fn not_found(kind: &ResourceKind, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(kind)),
        )
        .of(kind, name)
    }

    pub fn already_exists(kind: &ResourceKind, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified(kind)),
        )
        .of(kind, name)
    }

    pub fn conflict(kind: &ResourceKind, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                qualified(kind)
            ),
        )
        .of(kind, name)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 422, with one `field: message` cause per problem, as the API server's validation gives.
    /// 422, with one `field: message` cause per problem, as the API server's validation gives.
    pub fn invalid(kind: &ResourceKind, name: &str, problems: &[(String, String)]) -> Self {
        let detail = problems
            .iter()
            .map(|(field, msg)| format!("{field}: {msg}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut e = Self::new(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: {detail}", kind.kind),
        )
        .of(kind, name);
        e.causes = problems
            .iter()
            .map(|(field, msg)| json!({"reason": "FieldValueInvalid", "message": msg, "field": field}))
            .collect();
        e
    }

    pub fn to_json(&self) -> Value {
        let mut details = json!({});
        if let Some(object) = &self.object {
            let (kind, name) = object.as_ref();
            details = json!({"name": name, "group": kind.group, "kind": kind.resource});
        }
        if !self.causes.is_empty() {
            details["causes"] = json!(self.causes);
        }
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": details,
            "code": self.code,
        })
    }
}

/// `secrets`, or `leases.coordination.k8s.io`, as in the API server's messages.
fn qualified(kind: &ResourceKind) -> String {
    if kind.group.is_empty() {
        kind.resource.to_string()
    } else {
        format!("{}.{}", kind.resource, kind.group)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (code, axum::Json(self.to_json())).into_response()
    }
}
