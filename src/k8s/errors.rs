//! API errors on one line: the server's message and code, or the transport's causes; never
//! the content of an answer that did not decode, which may be a Secret's.

use crate::k8s::Scope;

/// The HTTP status of an API error.
pub fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// One line: the API server's message and code, or the transport error and its causes. An
/// answer that did not decode is told by where, never by what: serde's message can quote the
/// value, and that can be a Secret's.
pub fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::SerdeError(e) => {
            let what = match e.classify() {
                serde_json::error::Category::Io => "it could not be read",
                serde_json::error::Category::Syntax => "it is not JSON",
                serde_json::error::Category::Data => "it is not the object expected",
                serde_json::error::Category::Eof => "it ended early",
            };
            format!(
                "the API server's answer did not decode: {what} (line {} column {})",
                e.line(),
                e.column()
            )
        }
        kube::Error::Api(s) => {
            let reason = if s.reason.is_empty() {
                String::new()
            } else {
                format!(" {}", s.reason)
            };
            format!("{} (HTTP {}{reason})", one_line(&s.message), s.code)
        }
        other => causes(other),
    }
}

/// An error and its sources, `a: b: c`, skipping a source whose text its parent already holds.
pub fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = one_line(&e.to_string());
    let mut source = e.source();
    while let Some(s) = source {
        let text = one_line(&s.to_string());
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Longest message kept from the API server or a proxy in front of it (which may answer with a
/// whole HTML page).
const MAX_MESSAGE: usize = 512;

fn one_line(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(MAX_MESSAGE) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line,
    }
}

/// Listing failed, so nothing in that scope could be seen.
#[derive(Debug, thiserror::Error)]
#[error("listing Secrets in {scope}: {message}{hint}")]
pub struct ListError {
    scope: String,
    message: String,
    hint: String,
}

impl ListError {
    /// `needs`: the verbs the command needs, named when the answer was 403.
    pub fn new(scope: &Scope, e: &kube::Error, needs: &str) -> Self {
        let hint = match status_code(e) {
            Some(403) => format!(" (kubeecr needs {needs})"),
            _ => String::new(),
        };
        Self {
            scope: scope.to_string(),
            message: describe(e),
            hint,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_are_one_line_with_their_code() {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure",
            "message": "Operation cannot be fulfilled on secrets \"x\":\nthe object has been modified",
            "reason": "Conflict",
            "code": 409
        }))
        .unwrap();
        let e = kube::Error::Api(Box::new(status));
        assert_eq!(
            describe(&e),
            "Operation cannot be fulfilled on secrets \"x\": the object has been modified (HTTP 409 Conflict)"
        );
    }

    #[test]
    fn undecodable_answers_are_told_by_position_not_content() {
        let e = serde_json::from_str::<k8s_openapi::api::core::v1::Secret>(
            r#"{"data":{"x":7}, "type": {"hunter2": 1}}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("7") || e.to_string().contains("integer"));
        let told = describe(&kube::Error::SerdeError(e));
        assert_eq!(
            told,
            "the API server's answer did not decode: it is not the object expected (line 1 column 14)"
        );
        let e = serde_json::from_str::<serde_json::Value>(r#"{"password":"hunter2""#).unwrap_err();
        let told = describe(&kube::Error::SerdeError(e));
        assert!(
            !told.contains("hunter2") && told.contains("ended early"),
            "{told}"
        );
    }

    #[test]
    fn long_messages_are_cut() {
        let status = kube::core::Status::failure(&"<html>".repeat(1000), "x").with_code(502);
        let told = describe(&kube::Error::Api(Box::new(status)));
        assert!(told.len() < 600, "{}", told.len());
        assert!(told.ends_with("... (HTTP 502 x)"), "{told}");
    }

    #[test]
    fn causes_are_joined_without_repeats() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer: {0}")]
        struct Outer(#[source] Inner);
        #[derive(Debug, thiserror::Error)]
        #[error("connection refused")]
        struct Inner;
        assert_eq!(causes(&Outer(Inner)), "outer: connection refused");
    }
}
