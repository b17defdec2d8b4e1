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
    /// `details`: (group, kind, name); the kind is a resource (`secrets`) or, for 422, a Kind.
    /// Boxed: errors travel in every `Result`.
    pub object: Option<Box<(&'static str, &'static str, String)>>,
    pub causes: Vec<Value>,
    /// `metadata.continue` of the Status, as a 410 for an expired continue token carries.
    pub continue_token: Option<String>,
    /// Seconds in `Retry-After` and `details.retryAfterSeconds`, as a 429 carries.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            object: None,
            causes: Vec::new(),
            continue_token: None,
            retry_after: None,
        }
    }

    /// 429 as API Priority and Fairness rejects a request: `Retry-After` in the header and
    /// `details.retryAfterSeconds` in the Status.
    pub fn too_many_requests(retry_after: u64) -> Self {
        let mut e = Self::new(
            429,
            "TooManyRequests",
            "Too many requests, please try again later.",
        );
        e.retry_after = Some(retry_after);
        e
    }

    pub fn of(mut self, kind: &ResourceKind, name: &str) -> Self {
        self.object = Some(Box::new((kind.group, kind.resource, name.to_string())));
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

    /// 422 as `NewInvalid`: one `field: message` cause per problem, `details.kind` the Kind.
    pub fn invalid(kind: &ResourceKind, name: &str, problems: &[(String, String)]) -> Self {
        // events.k8s.io Events are stored and validated as core Events (fixture 12).
        let group = if kind.resource == "events" {
            ""
        } else {
            kind.group
        };
        let qualified = if group.is_empty() {
            kind.kind.to_string()
        } else {
            format!("{}.{group}", kind.kind)
        };
        let rendered: Vec<String> = problems
            .iter()
            .map(|(field, msg)| format!("{field}: {msg}"))
            .collect();
        // An aggregate of one error prints bare, of several in brackets.
        let detail = match rendered.as_slice() {
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        let mut e = Self::new(
            422,
            "Invalid",
            format!("{qualified} \"{name}\" is invalid: {detail}"),
        );
        e.object = Some(Box::new((group, kind.kind, name.to_string())));
        e.causes = problems
            .iter()
            .map(
                |(field, msg)| json!({"reason": cause_reason(msg), "message": msg, "field": field}),
            )
            .collect();
        e
    }

    pub fn to_json(&self) -> Value {
        let mut details = serde_json::Map::new();
        if let Some(object) = &self.object {
            let (group, kind, name) = object.as_ref();
            if !name.is_empty() {
                details.insert("name".into(), json!(name));
            }
            if !group.is_empty() {
                details.insert("group".into(), json!(group));
            }
            details.insert("kind".into(), json!(kind));
        }
        if !self.causes.is_empty() {
            details.insert("causes".into(), json!(self.causes));
        }
        if let Some(seconds) = self.retry_after {
            details.insert("retryAfterSeconds".into(), json!(seconds));
        }
        let mut metadata = json!({});
        if let Some(token) = &self.continue_token {
            metadata["continue"] = json!(token);
        }
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": metadata,
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        });
        // `details` is omitted when empty, as in fixtures 05 and 06.
        if !details.is_empty() {
            status["details"] = Value::Object(details);
        }
        status["code"] = json!(self.code);
        status
    }
}

/// The `metav1.CauseType` of a `field.Error`, from how its message starts.
fn cause_reason(message: &str) -> &'static str {
    [
        ("Required value", "FieldValueRequired"),
        ("Forbidden", "FieldValueForbidden"),
        ("Too long", "FieldValueTooLong"),
        ("Too many", "FieldValueTooMany"),
        ("Duplicate value", "FieldValueDuplicate"),
        ("Unsupported value", "FieldValueNotSupported"),
        ("Not found", "FieldValueNotFound"),
    ]
    .iter()
    .find(|(prefix, _)| message.starts_with(prefix))
    .map_or("FieldValueInvalid", |(_, reason)| reason)
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
        let mut response = (code, axum::Json(self.to_json())).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert("retry-after", seconds.to_string().parse().expect("digits"));
        }
        response
    }
}
