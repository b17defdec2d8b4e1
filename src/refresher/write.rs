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
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};

use crate::contract::annotation::SecretRef;
use crate::contract::kept::{KeptConfig, KeptSecret};
use crate::contract::marks::Marks;
use crate::contract::plan::{self, Plan};
use crate::contract::policy::Policy;
use crate::contract::secret_update::{self, DuePolicy, DueReason};
use crate::contract::standing::{Listing, NotFilled, listing};
use crate::contract::token::FetchError;
use crate::k8s::{self, describe, status_code};
use crate::refresher::wire::WireSecret;
use crate::telemetry::metrics::{Metrics, OutcomeLabels, RefreshOutcome};
use crate::tokens::cache::{CachedToken, TokenCache};

/// The field manager kubeecr writes as.
pub const FIELD_MANAGER: &str = "kubeecr";

/// Bound on refreshing one Secret, reads, token fetches and retries included: a request that
/// hangs must not hold a refresh slot for good, nor keep other tenants' Secrets waiting.
pub const REFRESH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

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
    /// Send every write with `dryRun=All`: the API server checks it (RBAC, validation,
    /// webhooks) and stores nothing.
    pub dry_run: bool,
    /// Bound on one Secret's refresh (`REFRESH_DEADLINE`).
    pub deadline: std::time::Duration,
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

impl Failure {
    /// A failure whose note says it all; the message names the Secret.
    fn new(secret: &SecretRef, kind: FailureKind, note: String) -> Self {
        Self {
            kind,
            message: format!("{secret}: {note}"),
            note,
        }
    }
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
    /// Not kubeecr's to write (bad annotation, wrong type, policy, deleted), and why.
    Skipped(NotFilled),
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

/// What `decide` found: a patch to send and what it stands for, or an outcome with nothing
/// to write.
#[derive(Debug)]
enum Decision {
    Write {
        patch: serde_json::Value,
        outcome: Outcome,
    },
    Done(Outcome),
}

pub struct Writer {
    client: kube::Client,
    tokens: Arc<TokenCache>,
    policy: Arc<Policy>,
    settings: WriteSettings,
    limiter: Option<DefaultDirectRateLimiter>,
    metrics: Arc<Metrics>,
    /// Bytes of whole configs being merged and written at once, one permit each.
    budget: Arc<tokio::sync::Semaphore>,
}

/// Memory for configs read whole and written back: a tenant's `.dockerconfigjson` may hold a
/// megabyte, and each is held several times over (the config, the merge, the patch, its
/// encoding) while it is written. Past this, such writes wait for each other.
const WRITE_BUDGET: usize = 32 * 1024 * 1024;

/// Copies of a whole config held while it is written.
const WRITE_COPIES: usize = 4;

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
            budget: Arc::new(tokio::sync::Semaphore::new(WRITE_BUDGET)),
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
    pub async fn refresh(&self, secret: &SecretRef, cached: Option<Arc<KeptSecret>>) -> Outcome {
        let deadline = self.settings.deadline;
        let outcome = tokio::time::timeout(deadline, self.refresh_inner(secret, cached))
            .await
            .unwrap_or_else(|_| {
                let note = format!(
                    "not done within {} (the API server or ECR is slow, or large writes ahead of it); retrying",
                    humantime::format_duration(deadline)
                );
                Outcome::Failed(Failure::new(secret, FailureKind::Api, note))
            });
        self.record(secret, &outcome);
        outcome
    }

    /// As `refresh`, for a Secret known by its marks only (a metadata list): one that its
    /// annotations or the policy refuse is skipped without being read.
    pub async fn refresh_listed(&self, secret: &SecretRef, marks: &Marks) -> Outcome {
        match listing(secret, marks, &self.policy) {
            Listing::Refused(e) => {
                let outcome = Outcome::Skipped(e.into());
                self.record(secret, &outcome);
                outcome
            }
            // Read in full and decided on the whole Secret (metadata shows no shape or
            // immutability); one that opted out may still have kubeecr's marks to release.
            Listing::Listed | Listing::NotOptedIn | Listing::OptingOut(_) => {
                self.refresh(secret, None).await
            }
        }
    }

    /// Counts and logs what happened to one Secret.
    fn record(&self, secret: &SecretRef, outcome: &Outcome) {
        self.metrics
            .refreshes
            .get_or_create(&OutcomeLabels {
                outcome: outcome.label(),
            })
            .inc();
        match outcome {
            Outcome::Refreshed { .. } | Outcome::Released if self.settings.dry_run => {
                tracing::info!(%secret, "dry run, not written: {outcome}")
            }
            Outcome::Refreshed { .. } | Outcome::Released => {
                tracing::info!(%secret, "{outcome}")
            }
            Outcome::Unchanged { .. } => tracing::debug!(%secret, "{outcome}"),
            Outcome::Skipped(_) => tracing::warn!(%secret, "{outcome}"),
            Outcome::Failed(_) => tracing::error!(%secret, "{outcome}"),
        }
    }

    async fn refresh_inner(&self, secret: &SecretRef, cached: Option<Arc<KeptSecret>>) -> Outcome {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &secret.namespace);
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            dry_run: self.settings.dry_run,
            ..PatchParams::default()
        };
        let failed = |kind, note| Outcome::Failed(Failure::new(secret, kind, note));
        let mut next = cached;
        let collection = Secret::url_path(&(), Some(&secret.namespace));
        for _ in 0..=self.settings.conflict_retries {
            let object = match next.take() {
                Some(object) => object,
                // Read whole, so that the write merges into all of the config; only kubeecr's
                // fields of it are decoded.
                None => match k8s::get::<WireSecret>(&self.client, &collection, &secret.name).await
                {
                    Ok(Some(object)) => Arc::new(object.read(&self.policy.regions)),
                    Ok(None) => return Outcome::Skipped(NotFilled::Deleted),
                    Err(e) => {
                        return failed(FailureKind::Api, format!("reading it: {}", describe(&e)));
                    }
                },
            };
            // A config read whole takes its share of the budget until it is written.
            let size = match &object.config {
                KeptConfig::Whole(config) => (config.len() * WRITE_COPIES).min(WRITE_BUDGET),
                _ => 0,
            };
            let _held = Arc::clone(&self.budget)
                .acquire_many_owned(u32::try_from(size).unwrap_or(u32::MAX))
                .await
                .expect("never closed");
            let (patch, done) = match self.decide(secret, &object).await {
                Decision::Write { patch, outcome } => (patch, outcome),
                Decision::Done(outcome) => return outcome,
            };
            if let Some(limiter) = &self.limiter {
                limiter.until_ready().await;
            }
            // The answer as metadata only: the Secret's data (its tokens) never comes back,
            // and no buffer grows with it.
            match api
                .patch_metadata(&secret.name, &params, &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return done,
                Err(e) if status_code(&e) == Some(409) => {
                    tracing::debug!(%secret, "changed since it was read (409); reading it again");
                }
                Err(e) if status_code(&e) == Some(404) => {
                    return Outcome::Skipped(NotFilled::Deleted);
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

    async fn decide(&self, secret: &SecretRef, object: &KeptSecret) -> Decision {
        match plan::plan(
            secret,
            object,
            &self.policy,
            self.settings.due,
            Timestamp::now(),
        ) {
            Plan::UpToDate { due_at } => Decision::Done(Outcome::Unchanged { due_at }),
            Plan::Skip(why) => Decision::Done(Outcome::Skipped(why)),
            Plan::Release(leftovers) => Decision::Write {
                patch: plan::release_patch(object, &leftovers),
                outcome: Outcome::Released,
            },
            Plan::Fill {
                binding,
                shape,
                reason,
            } => {
                let keys = secret_update::token_keys(&binding);
                let fetched = futures::future::try_join_all(
                    keys.iter()
                        .map(|key| async move { Ok((key.clone(), self.tokens.get(key).await?)) }),
                )
                .await;
                let ecr_failed = |e: &FetchError| {
                    Outcome::Failed(Failure {
                        kind: FailureKind::Ecr,
                        message: format!("{secret}: {e}"),
                        note: e.brief(),
                    })
                };
                let fetched: Vec<(_, CachedToken)> = match fetched {
                    Ok(pairs) => pairs,
                    Err(e) => return Decision::Done(ecr_failed(&e)),
                };
                // A token the cache could not renew: served while it lasts, but it may not
                // be new to this Secret.
                let renewal_error = fetched.iter().find_map(|(_, c)| c.renewal_error.clone());
                let tokens: BTreeMap<_, _> =
                    fetched.into_iter().map(|(k, c)| (k, c.token)).collect();
                let base = object.config.view().merge_base();
                let filled = match secret_update::fill(&binding, shape, base, &tokens) {
                    Ok(filled) => filled,
                    Err(e) => return Decision::Done(Outcome::Skipped(NotFilled::Config(e))),
                };
                match (plan::fill_patch(object, &binding, &filled), renewal_error) {
                    // Due, but the cache has nothing newer: ECR is failing. A failure, so that
                    // it backs off and says so, rather than a success due again at once.
                    (None, Some(e)) => Decision::Done(ecr_failed(&e)),
                    (None, None) => Decision::Done(Outcome::Unchanged {
                        due_at: filled
                            .expires_at
                            .checked_sub(self.settings.due.refresh_before)
                            .ok(),
                    }),
                    (Some(patch), _) => Decision::Write {
                        patch,
                        outcome: Outcome::Refreshed {
                            reason,
                            expires_at: filled.expires_at,
                            first_fill: secret_update::is_first_fill(&object.marks),
                        },
                    },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use base64::Engine;
    use futures::future::BoxFuture;
    use secrecy::SecretString;
    use serde_json::json;

    use super::*;
    use crate::contract::token::FetchErrorKind;
    use crate::contract::token::{FetchedToken, TokenKey};
    use crate::tokens::cache::{CacheConfig, TokenSource};

    /// One token, 12h from `issued`; then errors once `fail` is set.
    struct Source {
        issued: Timestamp,
        fail: AtomicBool,
    }

    impl TokenSource for Source {
        fn fetch<'a>(
            &'a self,
            key: &'a TokenKey,
        ) -> BoxFuture<'a, Result<FetchedToken, FetchError>> {
            Box::pin(async move {
                if self.fail.load(Ordering::SeqCst) {
                    return Err(FetchError::new(
                        key,
                        FetchErrorKind::Unreachable,
                        "connection refused".into(),
                    ));
                }
                Ok(FetchedToken {
                    authorization_token: SecretString::from(
                        base64::engine::general_purpose::STANDARD.encode("AWS:pw"),
                    ),
                    expires_at: Some(self.issued + Duration::from_secs(12 * 3600)),
                })
            })
        }
    }

    /// A writer due 4h before expiry, with the default policy.
    fn writer(client: kube::Client, tokens: Arc<TokenCache>, deadline: Duration) -> Writer {
        let settings = WriteSettings {
            dry_run: false,
            due: DuePolicy {
                refresh_before: Duration::from_secs(4 * 3600),
                force: false,
            },
            conflict_retries: 1,
            rate: None,
            deadline,
        };
        Writer::new(
            client,
            tokens,
            Arc::new(Policy::default()),
            settings,
            Arc::default(),
        )
    }

    /// A Secret whose reads hang is given up after the deadline, whatever else is slow.
    #[tokio::test]
    async fn a_hanging_refresh_is_given_up_at_its_deadline() {
        crate::servers::tls::install_crypto_provider();
        // Accepts connections and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _held = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                held.push(conn);
            }
        });
        let client =
            kube::Client::try_from(kube::Config::new(format!("http://{addr}").parse().unwrap()))
                .unwrap();
        let source = Arc::new(Source {
            issued: Timestamp::now(),
            fail: AtomicBool::new(false),
        });
        let tokens = TokenCache::new(
            source,
            CacheConfig::new(Duration::from_secs(5 * 3600), Duration::from_secs(60)),
            Arc::default(),
        );
        let writer = writer(client, tokens, Duration::from_millis(300));
        let outcome = tokio::time::timeout(
            Duration::from_secs(10),
            writer.refresh(&SecretRef::new("ns", "s"), None),
        )
        .await
        .expect("bounded by the deadline, not by the client's own timeouts");
        match outcome {
            Outcome::Failed(f) => assert!(f.note.contains("not done within 300ms"), "{}", f.note),
            other => panic!("{other:?}"),
        }
    }

    /// ECR has been failing for hours: the Secret is due, but the cache only has the token it
    /// already holds. That is a failure (backoff, Event), not "up to date" and due again at once.
    #[tokio::test]
    async fn a_due_secret_with_only_a_stale_token_to_give_fails() {
        crate::servers::tls::install_crypto_provider();
        let issued = Timestamp::now() - Duration::from_secs(9 * 3600);
        let source = Arc::new(Source {
            issued,
            fail: AtomicBool::new(false),
        });
        let clock_at = Arc::new(std::sync::Mutex::new(issued));
        let clock = {
            let at = Arc::clone(&clock_at);
            Arc::new(move || *at.lock().unwrap())
        };
        let tokens = TokenCache::with_clock(
            source.clone(),
            CacheConfig::new(Duration::from_secs(5 * 3600), Duration::from_secs(60)),
            Arc::default(),
            clock,
        );
        let client =
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap()))
                .unwrap();
        let writer = writer(client, tokens, REFRESH_DEADLINE);
        let secret = SecretRef::new("ns", "s");
        let empty_secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "s", "namespace": "ns", "resourceVersion": "1",
                         "annotations": {"deft.com/kubeecr": "123456789012/us-west-2"}},
            "type": "kubernetes.io/dockerconfigjson",
        }))
        .unwrap();
        let empty = KeptSecret::of_secret(&empty_secret, &Default::default());
        // Filled when the token was new.
        let Decision::Write { patch, .. } = writer.decide(&secret, &empty).await else {
            panic!("a new token is written")
        };
        let mut filled = serde_json::to_value(&empty_secret).unwrap();
        json_patch::merge(&mut filled, &patch);
        let filled: Secret = serde_json::from_value(filled).unwrap();
        let filled = KeptSecret::of_secret(&filled, &Default::default());

        // Nine hours on, the token is due for renewal and ECR fails.
        *clock_at.lock().unwrap() = Timestamp::now();
        source.fail.store(true, Ordering::SeqCst);
        match writer.decide(&secret, &filled).await {
            Decision::Done(Outcome::Failed(f)) => {
                assert_eq!(f.kind, FailureKind::Ecr);
                assert!(
                    f.note.starts_with("ECR unreachable for us-west-2"),
                    "{}",
                    f.note
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
