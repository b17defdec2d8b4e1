//! `kubeecr status`: every opted-in Secret, its registries, expiry and state, read the way
//! the refresher reads them (managed Secrets in full, the rest as metadata) and never written.

pub mod state;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::core::PartialObjectMeta;

use crate::contract::policy::Policy;
use crate::kube_api::{self, ListError, describe};
use crate::refresher::pass::{managed_selector, unmanaged_selector};
use crate::refresher::plan::{is_opted_in, secret_ref};
use state::{Row, State, classify};

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
    let namespaces = &settings.policy.namespaces;
    let judge = |object: &Secret| classify(object, &settings.policy, settings.refresh_before, now);
    let mut rows: BTreeMap<(String, String), Row> = BTreeMap::new();
    let mut keep = |row: Row| {
        rows.insert((row.namespace.clone(), row.name.clone()), row);
    };
    let managed = managed_selector();
    for (scope, api) in kube_api::scoped_apis::<Secret>(client, namespaces) {
        let mut pages = kube_api::Pages::new(&api, &managed, settings.page_size);
        while let Some(page) = pages
            .next()
            .await
            .map_err(|e| ListError::new(&scope, &e, NEEDS))?
        {
            page.iter()
                .filter(|s| is_opted_in(&s.metadata))
                .for_each(|s| keep(judge(s)));
        }
    }
    let unmanaged = unmanaged_selector();
    for (scope, api) in kube_api::scoped_apis::<PartialObjectMeta<Secret>>(client, namespaces) {
        let mut pages = kube_api::Pages::new(&api, &unmanaged, settings.page_size);
        while let Some(page) = pages
            .next()
            .await
            .map_err(|e| ListError::new(&scope, &e, NEEDS))?
        {
            let opted_in: Vec<_> = page
                .iter()
                .filter(|m| is_opted_in(&m.metadata))
                .map(|m| secret_ref(&m.metadata))
                .collect();
            let read: Vec<Row> = futures::stream::iter(opted_in)
                .map(|secret| async move {
                    let api: Api<Secret> = Api::namespaced(client.clone(), &secret.namespace);
                    match api.get_opt(&secret.name).await {
                        Ok(Some(object)) => Some(judge(&object)),
                        Ok(None) => None,
                        Err(e) => Some(Row {
                            namespace: secret.namespace.clone(),
                            name: secret.name.clone(),
                            registries: String::new(),
                            expires_at: None,
                            seconds_left: None,
                            state: State::Invalid,
                            reason: Some(format!("reading it: {}", describe(&e))),
                        }),
                    }
                })
                .buffer_unordered(READS_AT_ONCE)
                .filter_map(|row| async move { row })
                .collect()
                .await;
            read.into_iter().for_each(&mut keep);
        }
    }
    Ok(rows.into_values().collect())
}
