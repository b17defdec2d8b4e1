//! Kubernetes Events (events.k8s.io/v1) on the Secrets kubeecr fills, so that
//! `kubectl events --for secret/NAME` says what happened.
//!
//! kube-runtime's `Recorder` aggregates repeats of the same (Secret, reason) within six
//! minutes into one Event with a `series`, as client-go does. Events are sent from a task of
//! their own through a bounded queue and a rate limit: they never slow a refresh or an
//! admission, and a storm of failures cannot turn into a storm of Event writes. Notes carry
//! kubeecr's messages, which never hold a credential.

use std::num::NonZeroU32;
use std::sync::Arc;

use std::time::Duration;

use governor::{Quota, RateLimiter};
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::contract::annotation::{EXPIRES_AT_ANNOTATION, SecretRef};
use crate::contract::standing::NotFilled;
use crate::telemetry::metrics::Metrics;

/// The reporting controller of kubeecr's Events.
pub const CONTROLLER: &str = "kubeecr.deft.com/kubeecr";
/// Events waiting to be sent; more are dropped (and counted).
const QUEUE: usize = 1024;
/// Longest note, well under the API server's 1 kB limit.
const MAX_NOTE: usize = 512;

struct Pending {
    secret: SecretRef,
    event: Event,
    /// Sent only if the Secret is stored holding this expiry, checked once at `after`.
    confirm: Option<(String, Instant)>,
}

/// How long sending one Event may take.
const PUBLISH_DEADLINE: Duration = Duration::from_secs(10);

/// How long after a fill at admission its Secret is looked for: the API server stores an
/// object as soon as its admission ends, well within this.
const CONFIRM_AFTER: Duration = Duration::from_secs(3);

/// Where kubeecr's Events go. Cloning is cheap; `disabled()` sends nothing.
#[derive(Clone)]
pub struct Events {
    tx: Option<mpsc::Sender<Pending>>,
    metrics: Arc<Metrics>,
}

impl Events {
    /// Starts the task that sends Events as `instance` (the pod), at most `per_second`.
    pub fn start(
        client: kube::Client,
        instance: String,
        per_second: NonZeroU32,
        metrics: Arc<Metrics>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let client_for_checks = client.clone();
        let recorder = Recorder::new(
            client,
            Reporter {
                controller: CONTROLLER.to_string(),
                instance: Some(instance),
            },
        );
        let task = tokio::spawn(send_all(
            recorder,
            client_for_checks,
            rx,
            per_second,
            Arc::clone(&metrics),
        ));
        (
            Self {
                tx: Some(tx),
                metrics,
            },
            task,
        )
    }

    pub fn disabled() -> Self {
        Self {
            tx: None,
            metrics: Arc::default(),
        }
    }

    fn emit(&self, secret: &SecretRef, type_: EventType, reason: &str, action: &str, note: &str) {
        self.emit_confirmed(secret, type_, reason, action, note, None);
    }

    fn emit_confirmed(
        &self,
        secret: &SecretRef,
        type_: EventType,
        reason: &str,
        action: &str,
        note: &str,
        confirm: Option<String>,
    ) {
        let Some(tx) = &self.tx else { return };
        if secret.name.is_empty() || secret.name.ends_with('*') {
            return; // generateName: no object to attach the Event to yet
        }
        let note = match note.char_indices().nth(MAX_NOTE) {
            Some((i, _)) => format!("{}...", &note[..i]),
            None => note.to_string(),
        };
        let pending = Pending {
            secret: secret.clone(),
            event: Event {
                type_,
                reason: reason.to_string(),
                note: Some(note),
                action: action.to_string(),
                secondary: None,
            },
            confirm: confirm.map(|expiry| (expiry, Instant::now() + CONFIRM_AFTER)),
        };
        if tx.try_send(pending).is_err() {
            self.metrics.events_dropped.inc();
        }
    }

    /// The Secret received its first token.
    pub fn filled(&self, secret: &SecretRef, note: &str) {
        self.emit(secret, EventType::Normal, "Filled", "Fill", note);
    }

    /// As `filled`, sent only once the Secret is stored with the token (the expiry) written
    /// for it: for a fill at admission whose review no client certificate vouches for.
    pub fn filled_once_stored(&self, secret: &SecretRef, note: &str, expires_at: &str) {
        let confirm = Some(expires_at.to_string());
        self.emit_confirmed(secret, EventType::Normal, "Filled", "Fill", note, confirm);
    }

    /// A refresh failed; repeats become one Event's series.
    pub fn refresh_failed(&self, secret: &SecretRef, note: &str) {
        self.emit(secret, EventType::Warning, "RefreshFailed", "Refresh", note);
    }

    /// The Secret opts in but kubeecr will not fill it.
    pub fn skipped(&self, secret: &SecretRef, why: &NotFilled) {
        let note = why.to_string();
        self.emit(secret, EventType::Warning, "NotFilled", "Refresh", &note);
    }
}

fn reference(secret: &SecretRef) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Secret".into()),
        namespace: Some(secret.namespace.clone()),
        name: Some(secret.name.clone()),
        ..ObjectReference::default()
    }
}

/// Whether the Secret is stored with kubeecr's expiry `expires_at`.
async fn is_stored(client: &kube::Client, secret: &SecretRef, expires_at: &str) -> bool {
    let api: Api<PartialObjectMeta<Secret>> = Api::namespaced(client.clone(), &secret.namespace);
    // Bounded: one read that hangs must not hold every Event behind it.
    let read = tokio::time::timeout(CONFIRM_AFTER, api.get_metadata_opt(&secret.name)).await;
    let Ok(read) = read else {
        tracing::debug!(%secret, "checking that a Secret was stored took too long");
        return false;
    };
    match read {
        Ok(Some(meta)) => meta
            .metadata
            .annotations
            .is_some_and(|a| a.get(EXPIRES_AT_ANNOTATION).map(String::as_str) == Some(expires_at)),
        Ok(None) => false,
        Err(e) => {
            tracing::debug!(%secret, "checking that a Secret was stored failed: {}", crate::k8s::describe(&e));
            false
        }
    }
}

async fn send_all(
    recorder: Recorder,
    client: kube::Client,
    mut rx: mpsc::Receiver<Pending>,
    per_second: NonZeroU32,
    metrics: Arc<Metrics>,
) {
    let limiter = RateLimiter::direct(Quota::per_second(per_second));
    let mut failures = 0u64;
    while let Some(p) = rx.recv().await {
        limiter.until_ready().await;
        if let Some((expires_at, after)) = &p.confirm {
            tokio::time::sleep_until(*after).await;
            if !is_stored(&client, &p.secret, expires_at).await {
                metrics.events_unconfirmed.inc();
                tracing::debug!(secret = %p.secret, "not stored as reviewed; no Filled Event");
                continue;
            }
        }
        // Bounded: one send that hangs must not hold every Event behind it.
        let sent = tokio::time::timeout(
            PUBLISH_DEADLINE,
            recorder.publish(&p.event, &reference(&p.secret)),
        )
        .await
        .unwrap_or_else(|_| {
            let timed_out = std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the API server did not answer within 10s",
            );
            Err(kube::Error::ReadEvents(timed_out))
        });
        if let Err(e) = sent {
            failures += 1;
            // The first failure says why (often RBAC); the rest are only counted in debug.
            if failures == 1 {
                tracing::warn!(secret = %p.secret, "sending an Event failed (further failures are logged at debug): {}", crate::k8s::describe(&e));
            } else {
                tracing::debug!(secret = %p.secret, "sending an Event failed: {}", crate::k8s::describe(&e));
            }
        }
    }
}
