//! Finding opted-in Secrets by listing, page by page: the Secrets kubeecr manages (labelled)
//! in full, every other Secret as metadata only, so that memory does not grow with the data of
//! unrelated Secrets. `kubeecr refresh` writes what it finds; `kubeecr status` reports it.

use std::collections::VecDeque;

use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;

use crate::contract::annotation::{MANAGED_LABEL, SecretRef};
use crate::kube_api::{self, ListError, Pages};
use crate::refresher::plan::{is_opted_in, secret_ref};

/// Label selectors that split every Secret into kubeecr's and the rest.
pub fn managed_selector() -> String {
    format!("{MANAGED_LABEL}=true")
}

pub fn unmanaged_selector() -> String {
    format!("{MANAGED_LABEL}!=true")
}

/// One page of what a listing found.
pub enum Found {
    /// Secrets kubeecr manages, in full: every one of the page, since one that opted out
    /// still carries kubeecr's label and annotations to release.
    Managed(Vec<Secret>),
    /// Opted-in Secrets kubeecr does not manage yet, by name only: read them before use.
    Unmanaged(Vec<SecretRef>),
}

enum Listing {
    Managed(String, Pages<Secret>),
    Unmanaged(String, Pages<PartialObjectMeta<Secret>>),
}

/// Every scope's managed Secrets first, then every scope's unmanaged opted-in ones. A list
/// whose continue token expired starts again, so a Secret may be found twice.
pub struct OptedInSecrets {
    client: kube::Client,
    page_size: u32,
    /// The verbs the caller needs, named in a 403's message.
    needs: &'static str,
    pending: VecDeque<(bool, Option<String>)>,
    exclude: Vec<String>,
    current: Option<Listing>,
}

impl OptedInSecrets {
    pub fn new(
        client: kube::Client,
        namespaces: &[String],
        exclude: &[String],
        page_size: u32,
        needs: &'static str,
    ) -> Self {
        let scopes = kube_api::scopes(namespaces, exclude);
        let pending = [true, false]
            .into_iter()
            .flat_map(|managed| scopes.iter().map(move |ns| (managed, ns.clone())))
            .collect();
        Self {
            client,
            page_size,
            needs,
            pending,
            exclude: exclude.to_vec(),
            current: None,
        }
    }

    /// The next page, or `None` once every list is done.
    pub async fn next(&mut self) -> Result<Option<Found>, ListError> {
        loop {
            let needs = self.needs;
            match &mut self.current {
                None => {
                    let Some((managed, ns)) = self.pending.pop_front() else {
                        return Ok(None);
                    };
                    let (scope, ns) = (kube_api::scope_name(ns.as_deref()), ns.as_deref());
                    let (client, size) = (&self.client, self.page_size);
                    let fields = kube_api::field_selector(ns, &self.exclude);
                    self.current = Some(if managed {
                        let api = kube_api::scoped(client, ns);
                        Listing::Managed(scope, Pages::new(api, managed_selector(), fields, size))
                    } else {
                        let api = kube_api::scoped(client, ns);
                        let pages = Pages::new(api, unmanaged_selector(), fields, size);
                        Listing::Unmanaged(scope, pages)
                    });
                }
                Some(Listing::Managed(scope, pages)) => {
                    match pages
                        .next()
                        .await
                        .map_err(|e| ListError::new(scope, &e, needs))?
                    {
                        Some(page) => return Ok(Some(Found::Managed(page))),
                        None => self.current = None,
                    }
                }
                Some(Listing::Unmanaged(scope, pages)) => {
                    match pages
                        .next()
                        .await
                        .map_err(|e| ListError::new(scope, &e, needs))?
                    {
                        Some(page) => {
                            let opted_in = page
                                .iter()
                                .filter(|m| is_opted_in(&m.metadata))
                                .map(|m| secret_ref(&m.metadata))
                                .collect();
                            return Ok(Some(Found::Unmanaged(opted_in)));
                        }
                        None => self.current = None,
                    }
                }
            }
        }
    }
}
