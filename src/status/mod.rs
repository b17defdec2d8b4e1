//! `kubeecr status`: every opted-in Secret, its registries, expiry and state, read the way
//! the refresher reads them (managed Secrets in full, the rest as metadata) and never written.

pub mod state;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::Resource;

use crate::contract::kept::KeptSecret;
use crate::contract::plan::Plan;
use crate::contract::policy::Policy;
use crate::contract::standing::{Listing, listing};
use crate::k8s::{self, ListError, describe};
use crate::refresher::listing::{Found, OptedInSecrets};
use crate::refresher::wire::WireSecret;
use state::{Row, classify};

#[derive(Debug, Clone)]
pub struct StatusSettings {
    pub policy: Arc<Policy>,
    pub refresh_before: Duration,
    pub page_size: u32,
}

/// The verbs status needs on Secrets.
const NEEDS: &str = "get and list on secrets";
/// Secrets read at once when a metadata list found them opted in.
const READS_AT_ONCE: usize = 16;

/// Every opted-in Secret in scope, sorted by namespace and name.
pub async fn collect(
    client: &kube::Client,
    settings: &StatusSettings,
) -> Result<Vec<Row>, ListError> {
    let now = Timestamp::now();
    let judge = |secret: &crate::contract::annotation::SecretRef, object: &KeptSecret| {
        classify(
            secret,
            object,
            &settings.policy,
            settings.refresh_before,
            now,
        )
    };
    let regions = &settings.policy.regions;
    let mut rows: BTreeMap<(String, String), Row> = BTreeMap::new();
    let mut found = OptedInSecrets::new(
        client.clone(),
        &settings.policy.namespaces,
        &settings.policy.exclude_namespaces,
        settings.page_size,
        regions.clone(),
        NEEDS,
    );
    while let Some(page) = found.next().await? {
        let judged: Vec<Row> = match page {
            Found::Managed(secrets) => secrets
                .iter()
                .filter(|(_, kept)| kept.marks.is_opted_in())
                .map(|(secret, kept)| judge(secret, kept))
                .collect(),
            Found::Unmanaged(listed) => {
                futures::stream::iter(listed)
                    .map(|(secret, marks)| async move {
                        // What the marks refuse needs no read: judged as the refresher would.
                        if let Listing::Refused(e) = listing(&secret, &marks, &settings.policy) {
                            return Some(state::row(&secret, &marks, Plan::Skip(e.into()), now));
                        }
                        let collection = Secret::url_path(&(), Some(&secret.namespace));
                        match k8s::get::<WireSecret>(client, &collection, &secret.name).await {
                            Ok(Some(object)) => Some(judge(&secret, &object.read(regions))),
                            Ok(None) => None,
                            Err(e) => Some(Row::unreadable(&secret, &describe(&e))),
                        }
                    })
                    .buffer_unordered(READS_AT_ONCE)
                    .filter_map(|row| async move { row })
                    .collect()
                    .await
            }
        };
        for row in judged {
            rows.insert((row.namespace.clone(), row.name.clone()), row);
        }
    }
    Ok(rows.into_values().collect())
}
