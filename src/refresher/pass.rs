//! One pass over every opted-in Secret: `kubeecr refresh`, as a CronJob or from a laptop.
//!
//! Secrets kubeecr already manages (labelled) are listed in full, page by page, with a label
//! selector: each is decided on from the list and written with one PATCH, no GET. Every
//! other Secret is listed as metadata only, so memory does not grow with the data of
//! unrelated Secrets; only the opted-in ones among them are read in full before their first
//! write labels them.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use serde::de::DeserializeOwned;

use crate::contract::annotation::{MANAGED_LABEL, SecretRef};
use crate::kube_api::{self, ListError};
use crate::refresher::plan::{is_opted_in, secret_ref};
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

/// Label selectors that split every Secret into kubeecr's and the rest.
pub fn managed_selector() -> String {
    format!("{MANAGED_LABEL}=true")
}

pub fn unmanaged_selector() -> String {
    format!("{MANAGED_LABEL}!=true")
}

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
        for (scope, api) in
            kube_api::scoped_apis::<Secret>(&self.client, &self.writer.policy().namespaces)
        {
            // Managed Secrets are decided on from the list page itself.
            self.each_page(
                &scope,
                &api,
                &managed_selector(),
                |page: Vec<Secret>| async move {
                    let items = page
                        .into_iter()
                        .map(|s| (secret_ref(&s.metadata), Some(Arc::new(s))));
                    self.refresh_all(items).await
                },
                &mut outcomes,
            )
            .await?;
        }
        for (scope, api) in kube_api::scoped_apis::<PartialObjectMeta<Secret>>(
            &self.client,
            &self.writer.policy().namespaces,
        ) {
            self.each_page(
                &scope,
                &api,
                &unmanaged_selector(),
                |page: Vec<PartialObjectMeta<Secret>>| async move {
                    let items = page
                        .iter()
                        .filter(|m| is_opted_in(&m.metadata))
                        .map(|m| (secret_ref(&m.metadata), None))
                        .collect::<Vec<_>>();
                    self.refresh_all(items).await
                },
                &mut outcomes,
            )
            .await?;
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

    async fn refresh_all(
        &self,
        items: impl IntoIterator<Item = (SecretRef, Option<Arc<Secret>>)>,
    ) -> Vec<(SecretRef, Outcome)> {
        futures::stream::iter(items)
            .map(|(secret, cached)| async move {
                let outcome = self.writer.refresh(&secret, cached).await;
                (secret, outcome)
            })
            .buffer_unordered(self.settings.concurrency.max(1))
            .collect()
            .await
    }

    /// Lists `api` with `selector` page by page and hands each page to `process`. Secrets
    /// seen twice (a list that started over) are decided twice, and the second time finds
    /// them up to date.
    async fn each_page<K, F, Fut>(
        &self,
        scope: &str,
        api: &Api<K>,
        selector: &str,
        process: F,
        outcomes: &mut BTreeMap<SecretRef, Outcome>,
    ) -> Result<(), ListError>
    where
        K: Clone + DeserializeOwned + fmt::Debug,
        F: Fn(Vec<K>) -> Fut,
        Fut: Future<Output = Vec<(SecretRef, Outcome)>>,
    {
        let mut pages = kube_api::Pages::new(api, selector, self.settings.page_size);
        while let Some(page) = pages
            .next()
            .await
            .map_err(|e| ListError::new(scope, &e, NEEDS))?
        {
            for (secret, outcome) in process(page).await {
                // Seen twice (a list started over, or the Secret moved between lists): a
                // write is what counts.
                let wrote =
                    |o: &Outcome| matches!(o, Outcome::Refreshed { .. } | Outcome::Released);
                if !outcomes.get(&secret).is_some_and(wrote) || wrote(&outcome) {
                    outcomes.insert(secret, outcome);
                }
            }
        }
        Ok(())
    }
}
