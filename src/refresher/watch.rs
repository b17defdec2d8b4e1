//! The Secret watches behind the index: one managed and one metadata-only stream per
//! namespace in scope, or one each for the whole cluster, each a list then watch
//! (`kube_api::watch`) that decodes nothing of a Secret but what kubeecr keeps.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::Resource;

use crate::kube_api;
use crate::kube_api::watch::{Event, WatchSpec, list_watch};
use crate::refresher::index::{Change, Source, StreamId};
use crate::refresher::listing::{managed_selector, unmanaged_selector};
use crate::refresher::wire::WireSecret;
use crate::telemetry::metrics::{Metrics, WatchLabels};

/// Every stream to watch: managed and unmanaged, per namespace or for all.
pub fn stream_ids(namespaces: &[String], exclude: &[String]) -> Vec<StreamId> {
    let scopes = kube_api::scopes(namespaces, exclude);
    [Source::Managed, Source::Unmanaged]
        .into_iter()
        .flat_map(|source| {
            scopes.iter().map(move |namespace| StreamId {
                source,
                namespace: namespace.clone(),
            })
        })
        .collect()
}

/// Logs and counts a watch error; the stream retries on its own, with backoff.
fn report(
    stream: &StreamId,
    metrics: &Metrics,
    item: Result<Event<WireSecret>, kube::Error>,
) -> Option<Event<WireSecret>> {
    match item {
        Ok(item) => Some(item),
        Err(e) => {
            metrics
                .watch_errors
                .get_or_create(&WatchLabels {
                    watch: stream.source.label(),
                })
                .inc();
            let scope = stream.namespace.as_deref().unwrap_or("all namespaces");
            tracing::warn!(watch = stream.source.label(), %scope, "watching Secrets failed; retrying with backoff: {}", kube_api::describe(&e));
            None
        }
    }
}

/// All watch streams, merged into one stream of changes.
pub fn changes(
    client: &kube::Client,
    streams: &[StreamId],
    exclude: &[String],
    page_size: u32,
    metrics: &Arc<Metrics>,
) -> impl Stream<Item = Change> + Send + 'static {
    let all = streams.iter().map(|id| {
        let ns = id.namespace.as_deref();
        let managed = id.source == Source::Managed;
        let spec = WatchSpec {
            path: Secret::url_path(&(), ns),
            labels: if managed {
                managed_selector()
            } else {
                unmanaged_selector()
            },
            fields: kube_api::field_selector(ns, exclude),
            page_size,
            metadata_only: !managed,
        };
        let (id, metrics) = (id.clone(), Arc::clone(metrics));
        let change = if managed {
            Change::Managed
        } else {
            Change::Unmanaged
        };
        list_watch::<WireSecret>(client.clone(), spec)
            .filter_map(move |item| {
                let event = report(&id, &metrics, item).map(|e| change(id.clone(), e));
                futures::future::ready(event)
            })
            .boxed()
    });
    futures::stream::select_all(all)
}
