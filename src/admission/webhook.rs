//! The webhook's HTTP layer: `POST /mutate` and `POST /validate` taking AdmissionReview v1.
//!
//! Decisions are in `admission`; this module parses, fetches tokens under a deadline derived
//! from the API server's `?timeout=`, and answers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};

use crate::admission::decision::{self, MutationPlan};
use crate::admission::review;
use crate::contract::policy::Policy;
use crate::contract::token::{FetchError, FetchErrorKind};
use crate::contract::token::{Token, TokenKey};
use crate::telemetry::events::Events;
use crate::telemetry::metrics::{
    AdmissionLabels, AdmissionOperation, AdmissionResult, Client, Metrics, TokenResponseLabels,
    Webhook, WebhookLabels,
};
use crate::tokens::cache::TokenCache;

/// The API server's default webhook timeout, used when `?timeout=` is absent.
const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

pub struct WebhookState {
    pub policy: Arc<Policy>,
    pub tokens: Arc<TokenCache>,
    /// Deny instead of admitting without a token when ECR fails.
    pub require_token: bool,
    /// Longest wait for a cold token; also capped at half the API server's timeout.
    pub token_wait: Duration,
    /// Put tokens in mutation responses (`--admission-fill`); otherwise the refresher fills.
    pub fill: bool,
    /// Every connection presented a client certificate that `--client-ca-file` verified.
    pub clients_verified: bool,
    pub metrics: Arc<Metrics>,
    pub events: Events,
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

fn operation(op: &Operation) -> AdmissionOperation {
    match op {
        Operation::Create => AdmissionOperation::Create,
        Operation::Update => AdmissionOperation::Update,
        Operation::Delete => AdmissionOperation::Delete,
        Operation::Connect => AdmissionOperation::Connect,
    }
}

fn result_of(response: &AdmissionResponse) -> AdmissionResult {
    match (
        response.allowed,
        response.patch.is_some(),
        response.warnings.is_some(),
    ) {
        (false, _, _) => AdmissionResult::Denied,
        (true, _, true) => AdmissionResult::Warned,
        (true, true, false) => AdmissionResult::Patched,
        (true, false, false) => AdmissionResult::Allowed,
    }
}

/// Counts, times, logs and answers one review.
struct Answer<'a> {
    state: &'a WebhookState,
    webhook: Webhook,
    started: Instant,
}

impl<'a> Answer<'a> {
    fn start(state: &'a WebhookState, webhook: Webhook) -> Self {
        Self {
            state,
            webhook,
            started: Instant::now(),
        }
    }

    /// The review's request, or the 400/413 to answer instead.
    fn request(
        &self,
        body: Result<Bytes, BytesRejection>,
    ) -> Result<AdmissionRequest<DynamicObject>, Box<Response>> {
        let body = body.map_err(|r| Box::new(self.invalid(r.status(), r.body_text())))?;
        review::decode(&body)
            .map_err(|message| Box::new(self.invalid(StatusCode::BAD_REQUEST, message)))
    }

    fn count(&self, operation: AdmissionOperation, result: AdmissionResult) {
        let m = &self.state.metrics;
        m.admission_requests
            .get_or_create(&AdmissionLabels {
                webhook: self.webhook,
                operation,
                result,
            })
            .inc();
        m.admission_duration
            .get_or_create(&WebhookLabels {
                webhook: self.webhook,
            })
            .observe(self.started.elapsed().as_secs_f64());
    }

    fn invalid(&self, status: StatusCode, message: String) -> Response {
        self.count(AdmissionOperation::Unknown, AdmissionResult::Invalid);
        tracing::debug!(webhook = self.webhook.as_str(), %status, "refused a malformed request: {message}");
        (status, message).into_response()
    }

    fn review(
        &self,
        req: &AdmissionRequest<DynamicObject>,
        response: AdmissionResponse,
    ) -> Response {
        let result = result_of(&response);
        self.count(operation(&req.operation), result);
        // Debug formatting: names from a review cannot break the line or forge another.
        tracing::info!(
            webhook = self.webhook.as_str(),
            secret = ?format!("{}/{}", req.namespace.as_deref().unwrap_or(""), req.name),
            operation = operation(&req.operation).as_str(),
            dry_run = req.dry_run,
            outcome = result.as_str(),
            message = ?response.result.message,
            "admission"
        );
        (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            review::encode(&response),
        )
            .into_response()
    }
}

async fn validate(
    State(state): State<Arc<WebhookState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let answer = Answer::start(&state, Webhook::Validate);
    let req = match answer.request(body) {
        Ok(req) => req,
        Err(refused) => return *refused,
    };
    let response = decision::validate(&req, &state.policy);
    answer.review(&req, response)
}

/// How long a cold token fetch may take: well under the API server's own timeout, which a
/// webhook configuration sets between 1 and 30 s (anything else in `?timeout=` is clamped, so a
/// caller cannot ask for no wait at all).
fn token_deadline(query: Option<&str>, cap: Duration) -> Duration {
    let webhook_timeout = query
        .and_then(|t| humantime::parse_duration(t).ok())
        .unwrap_or(DEFAULT_WEBHOOK_TIMEOUT)
        .clamp(Duration::from_secs(1), Duration::from_secs(30));
    cap.min(webhook_timeout / 2)
}

async fn mutate(
    State(state): State<Arc<WebhookState>>,
    Query(query): Query<WebhookQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let answer = Answer::start(&state, Webhook::Mutate);
    let req = match answer.request(body) {
        Ok(req) => req,
        Err(refused) => return *refused,
    };
    let response = match decision::plan_mutation(&req, &state.policy) {
        MutationPlan::Respond(response) => *response,
        MutationPlan::Fill(pending) if !state.fill => pending.placeholder(),
        MutationPlan::Fill(pending) => {
            let deadline = token_deadline(query.timeout.as_deref(), state.token_wait);
            let tokens = fetch_all(&state.tokens, &pending.keys, deadline).await;
            let first_fill = pending.first_fill();
            let (secret, registries) = (pending.secret.clone(), pending.registries());
            let completion = pending.complete(tokens, state.require_token);
            if completion.carries_token {
                audit_token(&state, &req, &secret, &registries);
                // Whoever reaches the port can POST a review naming any Secret: unless the
                // API server proved itself (--client-ca-file), the Event waits until the
                // Secret is stored as reviewed.
                match (first_fill, &completion.expires_at) {
                    (Some(note), _) if state.clients_verified => {
                        state.events.filled(&secret, &note)
                    }
                    (Some(note), Some(expires_at)) => {
                        state.events.filled_once_stored(&secret, &note, expires_at)
                    }
                    _ => {}
                }
            }
            completion.response
        }
    };
    answer.review(&req, response)
}

/// Every response that hands out a token is logged and counted: who asked, for what, and
/// whether the client was authenticated. Never the token.
fn audit_token(
    state: &WebhookState,
    req: &AdmissionRequest<DynamicObject>,
    secret: &crate::contract::annotation::SecretRef,
    registries: &str,
) {
    let client = if state.clients_verified {
        Client::Verified
    } else {
        Client::Unverified
    };
    state
        .metrics
        .admission_tokens
        .get_or_create(&TokenResponseLabels { client })
        .inc();
    // Debug formatting: a forged review's names cannot break the line or forge another.
    tracing::info!(
        uid = ?req.uid,
        secret = ?secret.to_string(),
        user = ?req.user_info.username.as_deref().unwrap_or(""),
        registries,
        client = client.as_str(),
        dry_run = req.dry_run,
        "admission response carries an ECR token"
    );
}

async fn fetch_all(
    cache: &Arc<TokenCache>,
    keys: &[TokenKey],
    deadline: Duration,
) -> Result<BTreeMap<TokenKey, Arc<Token>>, FetchError> {
    let fetches = futures::future::try_join_all(keys.iter().map(|key| async move {
        cache
            .get_unless_renewing(key)
            .await
            .map(|cached| (key.clone(), cached.token))
    }));
    match tokio::time::timeout(deadline, fetches).await {
        Ok(result) => result.map(|pairs| pairs.into_iter().collect()),
        // The fetch goes on in the background and warms the cache for the refresher. Until
        // it ends, a token still valid is better than none.
        Err(_) => match last_good(cache, keys) {
            Some(tokens) => {
                // Callers that found the key being renewed got its token at once (`cache`);
                // this one waited for a renewal that outlasted the deadline.
                for (key, token) in &tokens {
                    tracing::warn!(%key, expires_at = %token.expires_at, deadline = %humantime::format_duration(deadline), "ECR did not answer within the webhook's deadline; admitted with the last good token");
                }
                Ok(tokens)
            }
            None => Err(FetchError::new(
                &keys[0],
                FetchErrorKind::Timeout,
                format!(
                    "ECR did not answer within {} (the webhook's deadline)",
                    humantime::format_duration(deadline)
                ),
            )),
        },
    }
}

/// The last good token of every key, if each has one still valid.
fn last_good(cache: &TokenCache, keys: &[TokenKey]) -> Option<BTreeMap<TokenKey, Arc<Token>>> {
    keys.iter()
        .map(|key| Some((key.clone(), cache.last_good(key)?)))
        .collect()
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
        // Outside the API server's 1–30 s: clamped, never zero.
        assert_eq!(token_deadline(Some("0s"), cap), Duration::from_millis(500));
        assert_eq!(token_deadline(Some("1ms"), cap), Duration::from_millis(500));
        assert_eq!(
            token_deadline(Some("1h"), Duration::from_secs(60)),
            Duration::from_secs(15)
        );
    }
}
