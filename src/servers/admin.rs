//! The admin port, plain HTTP: `/livez`, `/readyz` and `/metrics`.
//!
//! It serves no credential and takes no input beyond the path, so it can be reachable by the
//! kubelet and by Prometheus. `/readyz` is 200 once the serving certificate is loaded and the
//! Secret watches have listed once, and 503 from the moment shutdown starts, so that the
//! Service stops sending admission requests to a replica that is going away.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::sync::watch;

use crate::telemetry::metrics::Metrics;

/// What readiness depends on.
#[derive(Clone)]
pub struct Health {
    pub certificate_loaded: watch::Receiver<bool>,
    /// What the Secret watches still have to list; `None` once all have.
    pub watch_pending: watch::Receiver<Option<String>>,
    pub shutting_down: watch::Receiver<bool>,
}

impl Health {
    /// `Ok`, or what is not ready yet.
    pub fn readiness(&self) -> Result<(), String> {
        if *self.shutting_down.borrow() {
            return Err("shutting down".into());
        }
        if !*self.certificate_loaded.borrow() {
            return Err("the serving certificate is not loaded".into());
        }
        if let Some(pending) = self.watch_pending.borrow().as_ref() {
            return Err(pending.clone());
        }
        Ok(())
    }
}

struct AdminState {
    health: Health,
    metrics: Arc<Metrics>,
}

pub fn router(health: Health, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(Arc::new(AdminState { health, metrics }))
}

async fn readyz(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    match state.health.readiness() {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn metrics_text(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}
