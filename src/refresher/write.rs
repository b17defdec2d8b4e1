//! Refreshing one Secret: decide (`plan`), fetch its tokens, and write one merge patch
//! guarded by the resourceVersion of the object it decided on. On a 409 the Secret is read
//! again and decided again. Writes go through a client-side rate limit.
//!
//! Used by both `kubeecr refresh` and the watch-driven refresher of `kubeecr serve`.

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};

use crate::contract::annotation::{EXPIRES_AT_ANNOTATION, SecretRef};
use crate::contract::policy::Policy;
use crate::contract::secret_update::{self, DuePolicy, DueReason};
use crate::kube_api::{describe, status_code};
use crate::refresher::plan::{self, Plan};
use crate::telemetry::metrics::{Metrics, OutcomeLabels, RefreshOutcome};
use crate::tokens::cache::TokenCache;

/// The field manager kubeecr writes as.
pub const FIELD_MANAGER: &str = "kubeecr";

/// A client-side limit on writes to the API server.
#[derive(Debug, Clone, Copy)]
pub struct WriteRate {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

#[derive(Debug, Clone)]
pub struct WriteSettings {
    pub due: DuePolicy,
    /// Re-reads after a 409 before giving up on a Secret.
    pub conflict_retries: u32,
    /// `None`: no client-side limit.
    pub rate: Option<WriteRate>,
}

/// Why a refresh failed; the kind is a metric label and picks the Event's wording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    /// One line, naming the Secret; never a credential.
    pub message: String,
    /// The same, without the Secret's name, for an Event on that Secret.
    pub note: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// No ECR token.
    Ecr,
    /// The API server refused or did not answer.
    Api,
    /// Still conflicting after every retry.
    Conflict,
}

/// What happened to one Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Refreshed {
        reason: DueReason,
        expires_at: Timestamp,
        /// The Secret held no kubeecr token before.
        first_fill: bool,
    },
    /// kubeecr's leftovers were removed from a Secret that opted out.
    Released,
    /// Up to date; due again at `due_at`.
    Unchanged {
        due_at: Option<Timestamp>,
    },
    /// Not kubeecr's to write (bad annotation, wrong type, policy, deleted); says why.
    Skipped(String),
    Failed(Failure),
}

impl Outcome {
    pub fn label(&self) -> RefreshOutcome {
        match self {
            Self::Refreshed { .. } => RefreshOutcome::Refreshed,
            Self::Released => RefreshOutcome::Released,
            Self::Unchanged { .. } => RefreshOutcome::Unchanged,
            Self::Skipped(_) => RefreshOutcome::Skipped,
            Self::Failed(_) => RefreshOutcome::Failed,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refreshed {
                reason, expires_at, ..
            } => {
                write!(f, "refreshed ({reason}); expires {expires_at}")
            }
            Self::Released => f.write_str("opted out: kubeecr's annotations and label removed"),
            Self::Unchanged { .. } => f.write_str("up to date"),
            Self::Skipped(why) => write!(f, "skipped: {why}"),
            Self::Failed(failure) => write!(f, "failed: {}", failure.message),
        }
    }
}

pub struct Writer {
    client: kube::Client,
    tokens: Arc<TokenCache>,
    policy: Arc<Policy>,
    settings: WriteSettings,
    limiter: Option<DefaultDirectRateLimiter>,
    metrics: Arc<Metrics>,
}

impl Writer {
    pub fn new(
        client: kube::Client,
        tokens: Arc<TokenCache>,
        policy: Arc<Policy>,
        settings: WriteSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        let limiter = settings
            .rate
            .map(|r| RateLimiter::direct(Quota::per_second(r.per_second).allow_burst(r.burst)));
        Self {
            client,
            tokens,
            policy,
            settings,
            limiter,
            metrics,
        }
    }

    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    pub fn tokens(&self) -> &Arc<TokenCache> {
        &self.tokens
    }

    pub fn due_policy(&self) -> DuePolicy {
        self.settings.due
    }

    /// Refreshes one Secret, starting from `cached` when the caller holds a recent copy
    /// (no read then), else from a GET. Logs and counts the outcome.
    pub async fn refresh(&self, secret: &SecretRef, cached: Option<Arc<Secret>>) -> Outcome {
        let outcome = self.refresh_inner(secret, cached).await;
        self.metrics
            .refreshes
            .get_or_create(&OutcomeLabels {
                outcome: outcome.label(),
            })
            .inc();
        match &outcome {
            Outcome::Refreshed { .. } | Outcome::Released => {
                tracing::info!(%secret, "{outcome}")
            }
            Outcome::Unchanged { .. } => tracing::debug!(%secret, "{outcome}"),
            Outcome::Skipped(_) => tracing::warn!(%secret, "{outcome}"),
            Outcome::Failed(_) => tracing::error!(%secret, "{outcome}"),
        }
        outcome
    }

    async fn refresh_inner(&self, secret: &SecretRef, cached: Option<Arc<Secret>>) -> Outcome {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &secret.namespace);
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        let failed = |kind, note: String| {
            Outcome::Failed(Failure {
                kind,
                message: format!("{secret}: {note}"),
                note,
            })
        };
        let mut next = cached;
        for _ in 0..=self.settings.conflict_retries {
            let object = match next.take() {
                Some(object) => object,
                None => match api.get_opt(&secret.name).await {
                    Ok(Some(object)) => Arc::new(object),
                    Ok(None) => return Outcome::Skipped(format!("{secret}: deleted")),
                    Err(e) => {
                        return failed(FailureKind::Api, format!("reading it: {}", describe(&e)));
                    }
                },
            };
            let (patch, done) = match self.decide(secret, &object).await {
                Ok(write) => write,
                Err(outcome) => return outcome,
            };
            if let Some(limiter) = &self.limiter {
                limiter.until_ready().await;
            }
            match api
                .patch(&secret.name, &params, &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return done,
                Err(e) if status_code(&e) == Some(409) => {
                    tracing::debug!(%secret, "changed since it was read (409); reading it again");
                }
                Err(e) if status_code(&e) == Some(404) => {
                    return Outcome::Skipped(format!("{secret}: deleted"));
                }
                Err(e) => {
                    return failed(FailureKind::Api, format!("patching it: {}", describe(&e)));
                }
            }
        }
        failed(
            FailureKind::Conflict,
            format!(
                "still conflicting (409) after {} attempts; another writer keeps changing it",
                self.settings.conflict_retries + 1
            ),
        )
    }

    /// The patch to write and the outcome it stands for, or the outcome when nothing is
    /// written.
    async fn decide(
        &self,
        secret: &SecretRef,
        object: &Secret,
    ) -> Result<(serde_json::Value, Outcome), Outcome> {
        match plan::plan(
            secret,
            object,
            &self.policy,
            self.settings.due,
            Timestamp::now(),
        ) {
            Plan::UpToDate { due_at } => Err(Outcome::Unchanged { due_at }),
            Plan::Skip(why) => Err(Outcome::Skipped(why)),
            Plan::Release(leftovers) => {
                Ok((plan::release_patch(object, &leftovers), Outcome::Released))
            }
            Plan::Fill { binding, reason } => {
                let keys = secret_update::token_keys(&binding);
                let fetched = futures::future::try_join_all(keys.iter().map(|key| async move {
                    let cached = self.tokens.get(key).await?;
                    Ok::<_, crate::tokens::cache::FetchError>((key.clone(), cached.token))
                }))
                .await;
                let tokens: BTreeMap<_, _> = match fetched {
                    Ok(pairs) => pairs.into_iter().collect(),
                    Err(e) => {
                        return Err(Outcome::Failed(Failure {
                            kind: FailureKind::Ecr,
                            message: format!("{secret}: {e}"),
                            note: e.brief(),
                        }));
                    }
                };
                let filled =
                    match secret_update::fill(&binding, plan::dockerconfigjson(object), &tokens) {
                        Ok(filled) => filled,
                        Err(e) => return Err(Outcome::Skipped(format!("{secret}: {e}"))),
                    };
                match plan::fill_patch(object, &filled) {
                    None => Err(Outcome::Unchanged {
                        due_at: filled
                            .expires_at
                            .checked_sub(self.settings.due.refresh_before)
                            .ok(),
                    }),
                    Some(patch) => Ok((
                        patch,
                        Outcome::Refreshed {
                            reason,
                            expires_at: filled.expires_at,
                            first_fill: !object
                                .metadata
                                .annotations
                                .as_ref()
                                .is_some_and(|a| a.contains_key(EXPIRES_AT_ANNOTATION)),
                        },
                    )),
                }
            }
        }
    }
}
