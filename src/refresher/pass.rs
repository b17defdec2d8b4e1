//! One pass over every opted-in Secret: `kubeecr refresh`, as a CronJob or from a laptop.
//!
//! Secrets kubeecr already manages are found in full (`listing`): each is decided on from the
//! list and written with one PATCH, no GET. The opted-in ones among the rest are read in full
//! before their first write labels them.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use futures::StreamExt;

use crate::contract::annotation::SecretRef;
use crate::contract::kept::KeptSecret;
use crate::k8s::ListError;
use crate::refresher::listing::{Found, OptedInSecrets};
use crate::refresher::write::{Outcome, Writer};

#[derive(Debug, Clone, Copy)]
pub struct PassSettings {
    /// Secrets processed at once.
    pub concurrency: usize,
    /// Secrets per list page.
    pub page_size: u32,
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
    pub released: usize,
    pub skipped: usize,
    pub failed: usize,
    pub ecr_calls: u64,
    pub reports: Vec<Report>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "refreshed {}, unchanged {}",
            self.refreshed, self.unchanged
        )?;
        if self.released > 0 {
            write!(f, ", released {}", self.released)?;
        }
        write!(
            f,
            ", skipped {}, failed {}; ECR calls {}",
            self.skipped, self.failed, self.ecr_calls
        )
    }
}

/// The verbs a pass needs on Secrets.
const NEEDS: &str = "get, list and patch on secrets";

pub struct Refresher {
    client: kube::Client,
    writer: Arc<Writer>,
    settings: PassSettings,
}

impl Refresher {
    pub fn new(client: kube::Client, writer: Arc<Writer>, settings: PassSettings) -> Self {
        Self {
            client,
            writer,
            settings,
        }
    }

    /// One pass over every opted-in secret in scope.
    pub async fn run_once(&self) -> Result<Summary, ListError> {
        let calls_before = self.writer.tokens().fetch_count();
        let mut outcomes: BTreeMap<SecretRef, Outcome> = BTreeMap::new();
        let mut found = OptedInSecrets::new(
            self.client.clone(),
            &self.writer.policy().namespaces,
            &self.writer.policy().exclude_namespaces,
            self.settings.page_size,
            self.writer.policy().regions.clone(),
            NEEDS,
        );
        while let Some(page) = found.next().await? {
            let refreshed = match page {
                // Managed Secrets are decided on from the list page itself.
                Found::Managed(secrets) => {
                    let items = secrets
                        .into_iter()
                        .map(|(secret, kept)| (secret, Some(kept).filter(KeptSecret::is_complete)));
                    self.refresh_all(items).await
                }
                Found::Unmanaged(listed) => self.refresh_listed(listed).await,
            };
            for (secret, outcome) in refreshed {
                // Seen twice (a list started over, or the Secret moved between lists): a
                // write is what counts.
                let wrote =
                    |o: &Outcome| matches!(o, Outcome::Refreshed { .. } | Outcome::Released);
                if !outcomes.get(&secret).is_some_and(wrote) || wrote(&outcome) {
                    outcomes.insert(secret, outcome);
                }
            }
        }
        let mut summary = Summary {
            ecr_calls: self.writer.tokens().fetch_count() - calls_before,
            ..Summary::default()
        };
        for (secret, outcome) in outcomes {
            match outcome {
                Outcome::Refreshed { .. } => summary.refreshed += 1,
                Outcome::Unchanged { .. } => summary.unchanged += 1,
                Outcome::Released => summary.released += 1,
                Outcome::Skipped(_) => summary.skipped += 1,
                Outcome::Failed(_) => summary.failed += 1,
            }
            summary.reports.push(Report { secret, outcome });
        }
        Ok(summary)
    }

    /// Secrets known by their marks only: read (GET) only those the marks do not refuse.
    async fn refresh_listed(
        &self,
        listed: Vec<(SecretRef, crate::contract::marks::Marks)>,
    ) -> Vec<(SecretRef, Outcome)> {
        futures::stream::iter(listed)
            .map(|(secret, marks)| async move {
                let outcome = self.writer.refresh_listed(&secret, &marks).await;
                (secret, outcome)
            })
            .buffer_unordered(self.settings.concurrency.max(1))
            .collect()
            .await
    }

    async fn refresh_all(
        &self,
        items: impl IntoIterator<Item = (SecretRef, Option<KeptSecret>)>,
    ) -> Vec<(SecretRef, Outcome)> {
        futures::stream::iter(items)
            .map(|(secret, cached)| async move {
                let outcome = self.writer.refresh(&secret, cached.map(Arc::new)).await;
                (secret, outcome)
            })
            .buffer_unordered(self.settings.concurrency.max(1))
            .collect()
            .await
    }
}
