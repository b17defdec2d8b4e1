//! Finding opted-in Secrets by listing, page by page: the Secrets kubeecr manages (labelled)
//! decoded into what kubeecr keeps, every other Secret as metadata only. Each item is decoded
//! as it arrives and its other content skipped, so memory grows neither with unrelated
//! Secrets nor with what labelled ones hold besides kubeecr's config. `kubeecr refresh` writes
//! what it finds; `kubeecr status` reports it.

use std::collections::VecDeque;

use crate::contract::annotation::{MANAGED_LABEL, SecretRef};
use crate::contract::kept::KeptSecret;
use crate::contract::marks::Marks;
use crate::contract::partition::Regions;
use crate::k8s::list::{Keep, ListSpec, Pages};
use crate::k8s::{ListError, Scope};
use crate::refresher::wire::WireSecret;

/// Label selectors that split every Secret into kubeecr's and the rest.
pub fn managed_selector() -> String {
    format!("{MANAGED_LABEL}=true")
}

pub fn unmanaged_selector() -> String {
    format!("{MANAGED_LABEL}!=true")
}

/// One page of what a listing found.
pub enum Found {
    /// Secrets kubeecr manages, as kept: every one of the page, since one that opted out
    /// still carries kubeecr's label and annotations to release.
    Managed(Vec<(SecretRef, KeptSecret)>),
    /// Opted-in Secrets kubeecr does not manage yet, by name and marks: read them before
    /// use, once the marks show them worth reading.
    Unmanaged(Vec<(SecretRef, Marks)>),
}

/// An item of a page, kept as soon as it arrived.
enum Listed {
    Managed(SecretRef, KeptSecret),
    Unmanaged(Option<(SecretRef, Marks)>),
}

/// Which list, in which scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Managed,
    Unmanaged,
}

/// Every scope's managed Secrets first, then every scope's unmanaged opted-in ones. A list
/// whose continue token expired starts again, so a Secret may be found twice.
pub struct OptedInSecrets {
    client: kube::Client,
    page_size: u32,
    regions: Regions,
    /// The verbs the caller needs, named in a 403's message.
    needs: &'static str,
    pending: VecDeque<(Kind, Scope)>,
    exclude: Vec<String>,
    current: Option<(Kind, Scope, Pages<WireSecret, Listed>)>,
}

impl OptedInSecrets {
    pub fn new(
        client: kube::Client,
        namespaces: &[String],
        exclude: &[String],
        page_size: u32,
        regions: Regions,
        needs: &'static str,
    ) -> Self {
        let scopes = Scope::all(namespaces, exclude);
        let pending = [Kind::Managed, Kind::Unmanaged]
            .into_iter()
            .flat_map(|kind| scopes.iter().map(move |scope| (kind, scope.clone())))
            .collect();
        Self {
            client,
            page_size,
            regions,
            needs,
            pending,
            exclude: exclude.to_vec(),
            current: None,
        }
    }

    /// The next page, or `None` once every list is done.
    pub async fn next(&mut self) -> Result<Option<Found>, ListError> {
        loop {
            let Some((kind, scope, pages)) = &mut self.current else {
                let Some((kind, scope)) = self.pending.pop_front() else {
                    return Ok(None);
                };
                let spec = ListSpec {
                    path: scope.secrets_path(),
                    labels: match kind {
                        Kind::Managed => managed_selector(),
                        Kind::Unmanaged => unmanaged_selector(),
                    },
                    fields: scope.field_selector(&self.exclude),
                    page_size: self.page_size,
                    metadata_only: kind == Kind::Unmanaged,
                };
                let keep: Keep<WireSecret, Listed> = match kind {
                    Kind::Managed => {
                        let regions = self.regions.clone();
                        Box::new(move |s| Listed::Managed(s.key(), s.kept(&regions)))
                    }
                    Kind::Unmanaged => Box::new(|s| {
                        let opted_in = s.metadata.marks.is_opted_in();
                        Listed::Unmanaged(opted_in.then(|| (s.key(), s.metadata.marks)))
                    }),
                };
                let pages = Pages::new(self.client.clone(), spec, keep);
                self.current = Some((kind, scope, pages));
                continue;
            };
            let page = pages
                .next()
                .await
                .map_err(|e| ListError::new(scope, &e, self.needs))?;
            let Some(page) = page else {
                self.current = None;
                continue;
            };
            let managed = *kind == Kind::Managed;
            let (mut found_managed, mut found_unmanaged) = (Vec::new(), Vec::new());
            for item in page {
                match item {
                    Listed::Managed(secret, kept) => found_managed.push((secret, kept)),
                    Listed::Unmanaged(listed) => found_unmanaged.extend(listed),
                }
            }
            return Ok(Some(if managed {
                Found::Managed(found_managed)
            } else {
                Found::Unmanaged(found_unmanaged)
            }));
        }
    }
}
