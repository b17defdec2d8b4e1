//! Connecting to the Kubernetes API, and describing its errors on one line.

pub mod items;
pub mod list;
pub mod watch;

use std::path::PathBuf;

use kube::Client;
use kube::config::{Config, KubeConfigOptions, Kubeconfig};

/// Where the API server is: a kubeconfig and context, or the in-cluster service account.
#[derive(Debug, Clone, Default)]
pub struct KubeSettings {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
}

pub async fn connect(settings: &KubeSettings) -> anyhow::Result<Client> {
    let options = KubeConfigOptions {
        context: settings.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match &settings.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|e| anyhow::anyhow!("reading kubeconfig {}: {e}", path.display()))?;
            Config::from_custom_kubeconfig(kubeconfig, &options).await?
        }
        None if settings.context.is_some() => Config::from_kubeconfig(&options).await?,
        None => Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}

/// What to read: each namespace given that is not excluded, or the whole cluster (`None`)
/// when none is given.
pub fn scopes(namespaces: &[String], exclude: &[String]) -> Vec<Option<String>> {
    if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces
            .iter()
            .filter(|ns| !exclude.contains(ns))
            .cloned()
            .map(Some)
            .collect()
    }
}

/// The field selector that keeps excluded namespaces out of a cluster-wide list or watch, so
/// that their Secrets are never read, not even as metadata.
pub fn field_selector(namespace: Option<&str>, exclude: &[String]) -> Option<String> {
    if namespace.is_some() || exclude.is_empty() {
        return None;
    }
    let terms: Vec<String> = exclude
        .iter()
        .map(|ns| format!("metadata.namespace!={ns}"))
        .collect();
    Some(terms.join(","))
}

/// A scope of `scopes`, for messages.
pub fn scope_name(namespace: Option<&str>) -> String {
    namespace.map_or_else(
        || "all namespaces".to_string(),
        |ns| format!("namespace {ns}"),
    )
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
    pub fn new(scope: &str, e: &kube::Error, needs: &str) -> Self {
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

/// One object by name, decoded into `T` (which may keep only part of it); `None` when it
/// does not exist.
pub async fn get<T: serde::de::DeserializeOwned>(
    client: &Client,
    collection: &str,
    name: &str,
) -> Result<Option<T>, kube::Error> {
    let request = kube::core::Request::new(collection)
        .get(name, &kube::api::GetParams::default())
        .map_err(kube::Error::BuildRequest)?;
    match client.request::<T>(request).await {
        Ok(object) => Ok(Some(object)),
        Err(e) if status_code(&e) == Some(404) => Ok(None),
        Err(e) => Err(e),
    }
}

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
