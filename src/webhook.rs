//! The webhook's HTTP layer: `POST /mutate` and `POST /validate` taking AdmissionReview v1.
//!
//! Decisions are in `admission`; this module parses, fetches tokens under a deadline derived
//! from the API server's `?timeout=`, and answers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};

use crate::admission::{self, MutationPlan};
use crate::policy::Policy;
use crate::token_cache::{FetchError, FetchErrorKind, TokenCache};

/// The API server's default webhook timeout, used when `?timeout=` is absent.
const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

pub struct WebhookState {
    pub policy: Arc<Policy>,
    pub tokens: Arc<TokenCache>,
    /// Deny instead of admitting without a token when ECR fails.
    pub require_token: bool,
    /// Longest wait for a cold token; also capped at half the API server's timeout.
    pub token_wait: Duration,
}

#[derive(serde::Deserialize)]
struct WebhookQuery {
    timeout: Option<String>,
}

pub fn router(state: Arc<WebhookState>, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/validate", post(validate))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, message).into_response()
}

fn parse(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>, String> {
    let review: AdmissionReview<DynamicObject> = serde_json::from_slice(body)
        .map_err(|e| format!("body is not an admission.k8s.io/v1 AdmissionReview: {e}"))?;
    review
        .try_into()
        .map_err(|e| format!("AdmissionReview has no usable request: {e}"))
}

fn answer(response: AdmissionResponse) -> Response {
    axum::Json(response.into_review()).into_response()
}

fn log_decision(kind: &str, req: &AdmissionRequest<DynamicObject>, response: &AdmissionResponse) {
    let outcome = match (
        response.allowed,
        response.patch.is_some(),
        response.warnings.is_some(),
    ) {
        (false, _, _) => "denied",
        (true, true, _) => "patched",
        (true, false, true) => "allowed with warning",
        (true, false, false) => "allowed",
    };
    tracing::info!(
        webhook = kind,
        secret = %format!("{}/{}", req.namespace.as_deref().unwrap_or(""), req.name),
        operation = ?req.operation,
        dry_run = req.dry_run,
        outcome,
        message = %response.result.message,
        "admission"
    );
}

async fn validate(State(state): State<Arc<WebhookState>>, body: Bytes) -> Response {
    let req = match parse(&body) {
        Ok(req) => req,
        Err(message) => return bad_request(message),
    };
    let response = admission::validate(&req, &state.policy);
    log_decision("validate", &req, &response);
    answer(response)
}

/// How long a cold token fetch may take: well under the API server's own timeout.
fn token_deadline(query: Option<&str>, cap: Duration) -> Duration {
    let webhook_timeout = query
        .and_then(|t| humantime::parse_duration(t).ok())
        .unwrap_or(DEFAULT_WEBHOOK_TIMEOUT);
    cap.min(webhook_timeout / 2)
}

async fn mutate(
    State(state): State<Arc<WebhookState>>,
    Query(query): Query<WebhookQuery>,
    body: Bytes,
) -> Response {
    let req = match parse(&body) {
        Ok(req) => req,
        Err(message) => return bad_request(message),
    };
    let response = match admission::plan_mutation(&req, &state.policy) {
        MutationPlan::Respond(response) => *response,
        MutationPlan::Fill(pending) => {
            let deadline = token_deadline(query.timeout.as_deref(), state.token_wait);
            let tokens = fetch_all(&state.tokens, &pending.keys, deadline).await;
            pending.complete(tokens, state.require_token)
        }
    };
    log_decision("mutate", &req, &response);
    answer(response)
}

async fn fetch_all(
    cache: &Arc<TokenCache>,
    keys: &[crate::token::TokenKey],
    deadline: Duration,
) -> Result<BTreeMap<crate::token::TokenKey, Arc<crate::token::Token>>, FetchError> {
    let fetches = futures::future::try_join_all(keys.iter().map(|key| async move {
        cache
            .get(key)
            .await
            .map(|cached| (key.clone(), cached.token))
    }));
    match tokio::time::timeout(deadline, fetches).await {
        Ok(result) => result.map(|pairs| pairs.into_iter().collect()),
        // The fetch goes on in the background and warms the cache for the refresher.
        Err(_) => Err(FetchError {
            key: keys[0].clone(),
            kind: FetchErrorKind::Unreachable,
            message: format!(
                "ECR did not answer within {} (the webhook's deadline)",
                humantime::format_duration(deadline)
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_is_half_the_api_server_timeout_at_most() {
        let cap = Duration::from_secs(3);
        assert_eq!(token_deadline(Some("5s"), cap), Duration::from_millis(2500));
        assert_eq!(token_deadline(Some("30s"), cap), cap);
        assert_eq!(token_deadline(Some("2s"), cap), Duration::from_secs(1));
        assert_eq!(token_deadline(None, cap), cap);
        assert_eq!(token_deadline(Some("garbage"), cap), cap);
    }
}
