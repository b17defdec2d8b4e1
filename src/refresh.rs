//! The refresher: finds opted-in Secrets and re-fills the ones that are due, in place.
//!
//! Secrets are listed as metadata only, page by page, so memory does not grow with the data
//! of unrelated Secrets. Only the opted-in ones are read in full and patched, with their
//! resourceVersion as a precondition so that a concurrent writer is never overwritten.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use crate::annotation::{self, EXPIRES_AT_ANNOTATION, REGISTRIES_ANNOTATION, SecretRef};
use crate::dockerconfig::DOCKER_CONFIG_JSON_KEY;
use crate::policy::Policy;
use crate::secret_update::{self, DuePolicy, DueReason};
use crate::token_cache::TokenCache;

/// The field manager kubeecr writes as.
pub const FIELD_MANAGER: &str = "kubeecr";

#[derive(Debug, Clone)]
pub struct RefreshOptions {
    pub due: DuePolicy,
    /// Secrets processed at once.
    pub concurrency: usize,
    /// Secrets per list page.
    pub page_size: u32,
    /// Re-reads after a 409 before giving up on a secret.
    pub conflict_retries: u32,
}

/// What happened to one secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Refreshed {
        reason: DueReason,
        expires_at: Timestamp,
    },
    Unchanged,
    /// Not kubeecr's to write (bad annotation, wrong type, policy); the message says why.
    Skipped(String),
    Failed(String),
}

#[derive(Debug, Clone)]
pub struct Report {
    pub secret: SecretRef,
    pub outcome: Outcome,
}

/// The result of one pass.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub refreshed: usize,
    pub unchanged: usize,
    pub skipped: usize,
    pub failed: usize,
    pub ecr_calls: u64,
    pub reports: Vec<Report>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "refreshed {}, unchanged {}, skipped {}, failed {}; ECR calls {}",
            self.refreshed, self.unchanged, self.skipped, self.failed, self.ecr_calls
        )
    }
}

/// Listing the Secrets failed, so nothing could be refreshed.
#[derive(Debug, thiserror::Error)]
#[error("listing Secrets in {scope}{hint}")]
pub struct ListError {
    scope: String,
    hint: &'static str,
    #[source]
    source: kube::Error,
}

pub struct Refresher {
    client: kube::Client,
    tokens: Arc<TokenCache>,
    policy: Arc<Policy>,
    options: RefreshOptions,
}

enum Step {
    Done(Outcome),
    Write {
        patch: serde_json::Value,
        reason: DueReason,
        expires_at: Timestamp,
    },
}

fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

impl Refresher {
    pub fn new(
        client: kube::Client,
        tokens: Arc<TokenCache>,
        policy: Arc<Policy>,
        options: RefreshOptions,
    ) -> Self {
        Self {
            client,
            tokens,
            policy,
            options,
        }
    }

    /// One pass over every opted-in secret in scope.
    pub async fn run_once(&self) -> Result<Summary, ListError> {
        let calls_before = self.tokens.fetch_count();
        let secrets = self.list_opted_in().await?;
        let reports: Vec<Report> = futures::stream::iter(secrets)
            .map(|secret| async move {
                let outcome = self.refresh_secret(&secret).await;
                log_outcome(&secret, &outcome);
                Report { secret, outcome }
            })
            .buffer_unordered(self.options.concurrency.max(1))
            .collect()
            .await;
        let mut summary = Summary {
            ecr_calls: self.tokens.fetch_count() - calls_before,
            ..Summary::default()
        };
        for r in &reports {
            match r.outcome {
                Outcome::Refreshed { .. } => summary.refreshed += 1,
                Outcome::Unchanged => summary.unchanged += 1,
                Outcome::Skipped(_) => summary.skipped += 1,
                Outcome::Failed(_) => summary.failed += 1,
            }
        }
        summary.reports = reports;
        summary.reports.sort_by(|a, b| a.secret.cmp(&b.secret));
        Ok(summary)
    }

    fn scopes(&self) -> Vec<(String, Api<Secret>)> {
        if self.policy.namespaces.is_empty() {
            vec![("all namespaces".to_string(), Api::all(self.client.clone()))]
        } else {
            self.policy
                .namespaces
                .iter()
                .map(|ns| {
                    (
                        format!("namespace {ns}"),
                        Api::namespaced(self.client.clone(), ns),
                    )
                })
                .collect()
        }
    }

    /// Names of the opted-in secrets, from a metadata-only paged list.
    pub async fn list_opted_in(&self) -> Result<Vec<SecretRef>, ListError> {
        const MAX_RESTARTS: u32 = 3;
        let mut found = Vec::new();
        for (scope, api) in self.scopes() {
            let mut restarts = 0;
            let mut page: Vec<SecretRef> = Vec::new();
            let mut continue_token: Option<String> = None;
            loop {
                let mut params = ListParams::default().limit(self.options.page_size);
                if let Some(token) = &continue_token {
                    params = params.continue_token(token);
                }
                let list = match api.list_metadata(&params).await {
                    Ok(list) => list,
                    // The continue token expired (410 Gone): start this scope again.
                    Err(e) if status_code(&e) == Some(410) && restarts < MAX_RESTARTS => {
                        restarts += 1;
                        tracing::info!(%scope, restarts, "list continue token expired; listing again");
                        page.clear();
                        continue_token = None;
                        continue;
                    }
                    Err(source) => {
                        let hint = match status_code(&source) {
                            Some(403) => " (kubeecr needs get, list and patch on secrets)",
                            _ => "",
                        };
                        return Err(ListError {
                            scope,
                            hint,
                            source,
                        });
                    }
                };
                page.extend(list.items.iter().filter_map(|item| {
                    let meta = &item.metadata;
                    let opted_in = meta
                        .annotations
                        .as_ref()
                        .is_some_and(|a| a.contains_key(REGISTRIES_ANNOTATION));
                    opted_in.then(|| {
                        SecretRef::new(
                            meta.namespace.clone().unwrap_or_default(),
                            meta.name.clone().unwrap_or_default(),
                        )
                    })
                }));
                continue_token = list.metadata.continue_.filter(|t| !t.is_empty());
                if continue_token.is_none() {
                    break;
                }
            }
            found.append(&mut page);
        }
        found.sort();
        found.dedup();
        Ok(found)
    }

    /// Reads, decides and patches one secret; re-reads on a 409.
    pub async fn refresh_secret(&self, secret: &SecretRef) -> Outcome {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &secret.namespace);
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        for attempt in 0..=self.options.conflict_retries {
            let object = match api.get_opt(&secret.name).await {
                Ok(Some(object)) => object,
                Ok(None) => {
                    return Outcome::Skipped(format!("{secret}: deleted before it could be read"));
                }
                Err(e) => return Outcome::Failed(format!("{secret}: reading the secret: {e}")),
            };
            let (patch, reason, expires_at) = match self.plan(secret, &object).await {
                Step::Done(outcome) => return outcome,
                Step::Write {
                    patch,
                    reason,
                    expires_at,
                } => (patch, reason, expires_at),
            };
            match api
                .patch(&secret.name, &params, &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Outcome::Refreshed { reason, expires_at },
                Err(e) if status_code(&e) == Some(409) => {
                    tracing::debug!(%secret, attempt, "secret changed since it was read (409); reading it again");
                }
                Err(e) if status_code(&e) == Some(404) => {
                    return Outcome::Skipped(format!(
                        "{secret}: deleted before it could be written"
                    ));
                }
                Err(e) => return Outcome::Failed(format!("{secret}: patching the secret: {e}")),
            }
        }
        Outcome::Failed(format!(
            "{secret}: still conflicting (409) after {} attempts; another writer keeps changing it",
            self.options.conflict_retries + 1
        ))
    }

    async fn plan(&self, secret: &SecretRef, object: &Secret) -> Step {
        let skip = |msg: String| Step::Done(Outcome::Skipped(msg));
        let empty = BTreeMap::new();
        let annotations = object.metadata.annotations.as_ref().unwrap_or(&empty);
        let binding = match annotation::binding_of(secret, annotations) {
            Ok(Some(binding)) => binding,
            Ok(None) => {
                return skip(format!(
                    "{secret}: no longer carries {REGISTRIES_ANNOTATION}"
                ));
            }
            Err(e) => return skip(e.to_string()),
        };
        if let Err(e) = annotation::check_type(secret, object.type_.as_deref()) {
            return skip(e.to_string());
        }
        if let Err(e) = self.policy.admit(secret, &binding) {
            return skip(e.to_string());
        }
        let existing = object
            .data
            .as_ref()
            .and_then(|d| d.get(DOCKER_CONFIG_JSON_KEY))
            .map(|b| b.0.as_slice());
        let reason = match secret_update::due_reason(
            &binding,
            annotations,
            existing,
            Timestamp::now(),
            self.options.due,
        ) {
            Ok(Some(reason)) => reason,
            Ok(None) => return Step::Done(Outcome::Unchanged),
            Err(e) => return skip(format!("{secret}: {e}")),
        };
        let mut tokens = BTreeMap::new();
        for key in secret_update::token_keys(&binding) {
            match self.tokens.get(&key).await {
                Ok(cached) => {
                    tokens.insert(key, cached.token);
                }
                Err(e) => return Step::Done(Outcome::Failed(format!("{secret}: {e}"))),
            }
        }
        let filled = match secret_update::fill(&binding, existing, &tokens) {
            Ok(filled) => filled,
            Err(e) => return skip(format!("{secret}: {e}")),
        };
        let expires_at = filled.expires_at_annotation();
        if existing == Some(filled.dockerconfigjson.as_slice())
            && annotations.get(EXPIRES_AT_ANNOTATION) == Some(&expires_at)
        {
            return Step::Done(Outcome::Unchanged);
        }
        let data = k8s_openapi::ByteString(filled.dockerconfigjson);
        Step::Write {
            patch: json!({
                "metadata": {
                    "resourceVersion": object.metadata.resource_version,
                    "annotations": { EXPIRES_AT_ANNOTATION: expires_at },
                },
                "data": { DOCKER_CONFIG_JSON_KEY: data },
            }),
            reason,
            expires_at: filled.expires_at,
        }
    }
}

fn log_outcome(secret: &SecretRef, outcome: &Outcome) {
    match outcome {
        Outcome::Refreshed { reason, expires_at } => {
            tracing::info!(%secret, %reason, %expires_at, "refreshed secret");
        }
        Outcome::Unchanged => tracing::debug!(%secret, "secret is up to date"),
        Outcome::Skipped(why) => tracing::warn!(%secret, "skipped: {why}"),
        Outcome::Failed(why) => tracing::error!(%secret, "failed: {why}"),
    }
}
